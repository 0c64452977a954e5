//! Node identities as they appear on the wire.
//!
//! A node is named by the bytes of its libp2p peer id (38 bytes for an ed25519
//! key). The protocol core treats them as opaque, ordered byte strings, capped
//! so that a hostile peer cannot make us store arbitrarily large names. On the
//! datagram plane a member is referred to by its 8-byte [`NodeId::short`] ref
//! (the first bytes of the SHA-256 of its id), which the receiver resolves
//! against its own member table.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The longest node id accepted from the wire, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// The first byte of an [unresolved](NodeId::unresolved) id: no multihash
/// (and so no libp2p peer id) starts with it.
const UNRESOLVED_TAG: u8 = 0xfe;

/// An opaque, cheaply clonable node identity (the bytes of a libp2p peer id).
/// Equality, order and hash are those of the bytes.
///
/// Every member table is keyed by `NodeId`, so comparing two of them is the
/// hottest operation of a node at scale (a BTreeMap lookup is about ten
/// comparisons). `key` holds the id's first 16 bytes, zero-padded, beside
/// the short ref: comparing keys orders exactly as comparing the bytes does
/// (a zero pad sorts a proper prefix first), and only equal keys read the
/// bytes behind a second pointer. libp2p ed25519 peer ids share their first
/// 6 bytes, so the 10 after them settle nearly every comparison. The key
/// lives behind the `Arc` (one per distinct id), not in every copy: a
/// `NodeId` stays one pointer wide in the records and tables that hold
/// millions of them in the simulator. ([`NodeId::synthetic`] ids share
/// their first 34 bytes, so they gain nothing; the simulator uses real
/// ed25519 peer ids.)
#[derive(Clone)]
pub struct NodeId {
    inner: Arc<Inner>,
}

struct Inner {
    key: u128,
    short: u64,
    bytes: Box<[u8]>,
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.key == other.inner.key && self.inner.bytes == other.inner.bytes)
    }
}
impl Eq for NodeId {}
impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for NodeId {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.inner
            .key
            .cmp(&other.inner.key)
            .then_with(|| self.inner.bytes.cmp(&other.inner.bytes))
    }
}
impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.bytes.hash(state);
    }
}

/// Why bytes are not a valid [`NodeId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The id was empty.
    Empty,
    /// The id was longer than [`MAX_ID_LEN`].
    TooLong(usize),
    /// The id starts with the byte reserved for stand-ins.
    Reserved,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "node id is empty"),
            IdError::TooLong(n) => {
                write!(f, "node id is {n} bytes long, the limit is {MAX_ID_LEN}")
            }
            IdError::Reserved => write!(f, "node id starts with the reserved byte 0xfe"),
        }
    }
}

impl std::error::Error for IdError {}

impl NodeId {
    /// Wraps the given bytes, checking the length limits. Bytes that
    /// start like an [unresolved](NodeId::unresolved) stand-in are refused:
    /// a peer must not pick the short ref its id is known by.
    pub fn new(bytes: &[u8]) -> Result<Self, IdError> {
        if bytes.is_empty() {
            return Err(IdError::Empty);
        }
        if bytes[0] == UNRESOLVED_TAG {
            return Err(IdError::Reserved);
        }
        if bytes.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(bytes.len()));
        }
        Ok(Self::wrap(bytes))
    }

    fn wrap(bytes: &[u8]) -> Self {
        let short = if bytes.len() == 9 && bytes[0] == UNRESOLVED_TAG {
            u64::from_be_bytes(bytes[1..].try_into().expect("8 bytes"))
        } else {
            let hash = Sha256::digest(bytes);
            u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
        };
        let mut head = [0u8; 16];
        let n = bytes.len().min(16);
        head[..n].copy_from_slice(&bytes[..n]);
        NodeId {
            inner: Arc::new(Inner {
                key: u128::from_be_bytes(head),
                short,
                bytes: bytes.into(),
            }),
        }
    }

    /// The 8-byte reference by which compact messages name this node: the
    /// first 8 bytes of the SHA-256 of its id, big-endian.
    pub fn short(&self) -> u64 {
        self.inner.short
    }

    /// A stand-in for a node known only by its short ref (a compact message
    /// named a member the receiver does not know): distinct per ref, equal to
    /// no real id, and its [`short`](Self::short) is `short`.
    pub fn unresolved(short: u64) -> Self {
        let mut bytes = [0u8; 9];
        bytes[0] = UNRESOLVED_TAG;
        bytes[1..].copy_from_slice(&short.to_be_bytes());
        Self::wrap(&bytes)
    }

    /// Whether this is a stand-in made by [`unresolved`](Self::unresolved).
    pub fn is_unresolved(&self) -> bool {
        self.inner.bytes.len() == 9 && self.inner.bytes[0] == UNRESOLVED_TAG
    }

    /// A deterministic 38-byte id for simulations and tests, the size of a
    /// real ed25519 peer id so that byte counts are realistic.
    pub fn synthetic(index: u32) -> Self {
        let mut bytes = [0u8; 38];
        // The multihash prefix of an identity-hashed ed25519 key, the index last.
        bytes[..6].copy_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        bytes[34..].copy_from_slice(&index.to_be_bytes());
        Self::wrap(&bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.inner.bytes
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
        let bytes = self.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(6)..];
        for b in tail {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
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

    /// Only a nine-byte id that starts with the stand-in tag is one: nine
    /// other bytes are an id like any other.
    #[test]
    fn nine_bytes_without_the_tag_are_not_a_stand_in() {
        assert!(!NodeId::new(&[7; 9]).unwrap().is_unresolved());
        assert!(!NodeId::synthetic(1).is_unresolved());
        assert!(NodeId::unresolved(5).is_unresolved());
    }

    #[test]
    fn rejects_empty_and_oversized_ids() {
        assert_eq!(NodeId::new(&[]), Err(IdError::Empty));
        assert_eq!(NodeId::new(&[7; 65]), Err(IdError::TooLong(65)));
        assert!(NodeId::new(&[7; 64]).is_ok());
        assert_eq!(NodeId::new(&[0xfe; 9]), Err(IdError::Reserved));
    }

    #[test]
    fn short_refs_are_stable_and_unresolved_ids_keep_theirs() {
        let a = NodeId::synthetic(1);
        assert_eq!(a.short(), NodeId::new(a.as_bytes()).unwrap().short());
        assert_ne!(a.short(), NodeId::synthetic(2).short());
        let u = NodeId::unresolved(a.short());
        assert_eq!(u.short(), a.short());
        assert!(u.is_unresolved() && !a.is_unresolved());
        assert_ne!(u, a);
    }

    #[test]
    fn synthetic_ids_are_distinct_and_peer_id_sized() {
        let a = NodeId::synthetic(1);
        let b = NodeId::synthetic(2);
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 38);
    }

    /// The inline key must never change what the bytes decide: maps keyed
    /// by `NodeId` iterate in byte order, and the simulator's replays rely
    /// on it. Ids differing only past the key, proper prefixes, and zero
    /// bytes where the key pads with zeros.
    #[test]
    fn order_and_equality_are_those_of_the_bytes() {
        let mut ids: Vec<Vec<u8>> = vec![
            vec![1],
            vec![1, 0],
            vec![1, 0, 0],
            vec![0],
            vec![0, 0],
            vec![2; 16],
            vec![2; 17],
            [vec![2; 16], vec![0]].concat(),
            [vec![2; 16], vec![1]].concat(),
            [vec![2; 15], vec![3]].concat(),
            vec![0xff; 64],
            [vec![0xff; 63], vec![0]].concat(),
        ];
        for n in 0..200u32 {
            ids.push(NodeId::synthetic(n).as_bytes().to_vec());
        }
        // Real peer ids share their first bytes; these differ past 16.
        for tail in 0..8u8 {
            let mut b = NodeId::synthetic(7).as_bytes().to_vec();
            b[30] = tail;
            ids.push(b);
        }
        for a in &ids {
            for b in &ids {
                let (x, y) = (NodeId::new(a).unwrap(), NodeId::new(b).unwrap());
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(x == y, a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
