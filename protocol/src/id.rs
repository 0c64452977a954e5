//! Node identities as they appear on the wire.
//!
//! A node is named by the bytes of its libp2p peer id (38 bytes for an ed25519
//! key). The protocol core treats them as opaque, ordered byte strings, capped
//! so that a hostile peer cannot make us store arbitrarily large names.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest node id accepted from the wire, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// An opaque, cheaply clonable node identity (the bytes of a libp2p peer id).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<[u8]>);

/// Why bytes are not a valid [`NodeId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The id was empty.
    Empty,
    /// The id was longer than [`MAX_ID_LEN`].
    TooLong(usize),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "node id is empty"),
            IdError::TooLong(n) => {
                write!(f, "node id is {n} bytes long, the limit is {MAX_ID_LEN}")
            }
        }
    }
}

impl std::error::Error for IdError {}

impl NodeId {
    /// Wraps the given bytes, checking the length limits.
    pub fn new(bytes: &[u8]) -> Result<Self, IdError> {
        if bytes.is_empty() {
            return Err(IdError::Empty);
        }
        if bytes.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(bytes.len()));
        }
        Ok(NodeId(Arc::from(bytes)))
    }

    /// A deterministic 38-byte id for simulations and tests, the size of a
    /// real ed25519 peer id so that byte counts are realistic.
    pub fn synthetic(index: u32) -> Self {
        let mut bytes = [0u8; 38];
        // The multihash prefix of an identity-hashed ed25519 key, the index last.
        bytes[..6].copy_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        bytes[34..].copy_from_slice(&index.to_be_bytes());
        NodeId(Arc::from(&bytes[..]))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shows the last 6 bytes in hex: enough to tell nodes apart in logs, since
/// peer ids share their multihash prefix.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = &self.0[self.0.len().saturating_sub(6)..];
        for b in tail {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte string of 1 to {MAX_ID_LEN} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<NodeId, E> {
                NodeId::new(v).map_err(E::custom)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<NodeId, E> {
                NodeId::new(&v).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_and_oversized_ids() {
        assert_eq!(NodeId::new(&[]), Err(IdError::Empty));
        assert_eq!(NodeId::new(&[7; 65]), Err(IdError::TooLong(65)));
        assert!(NodeId::new(&[7; 64]).is_ok());
    }

    #[test]
    fn synthetic_ids_are_distinct_and_peer_id_sized() {
        let a = NodeId::synthetic(1);
        let b = NodeId::synthetic(2);
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 38);
    }
}
