//! The metadata every node announces in its SWIM `Alive` updates: its name,
//! overlay, the addresses to reach it and its session capacity and load.
//! Carried as opaque bytes by SWIM; encoded here as CBOR within the cap.

use serde::{Deserialize, Serialize};

use crate::wire::MAX_META_BYTES;

/// What a node tells the group about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Human name of the node (its cluster).
    #[serde(rename = "n")]
    pub name: String,
    /// Overlay the node belongs to.
    #[serde(rename = "o")]
    pub overlay: String,
    /// Addresses (multiaddrs) where the node listens.
    #[serde(rename = "a", default)]
    pub addrs: Vec<String>,
    /// Sessions the node will host.
    #[serde(rename = "c", default)]
    pub capacity: u32,
    /// Sessions the node hosts now.
    #[serde(rename = "l", default)]
    pub load: u32,
    /// Its datagram socket (`ip:port`; an unspecified ip means "the address
    /// its libp2p connections come from").
    #[serde(rename = "d", default, skip_serializing_if = "String::is_empty")]
    pub datagram: String,
    /// A random number its process drew at start: another one means the
    /// process restarted, and the keys agreed with the old one are void.
    #[serde(rename = "b", default)]
    pub boot: u64,
    /// A digest of the node's service configuration (its `exec` templates
    /// and their rules), 0 when unknown: members whose digests differ may
    /// run another command for a session they take over, or refuse it.
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    pub services: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Why metadata bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// Not CBOR of the expected shape.
    Malformed(String),
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::Malformed(why) => write!(f, "malformed node metadata: {why}"),
        }
    }
}

impl std::error::Error for MetaError {}

impl NodeMeta {
    /// Encodes the metadata, dropping addresses from the end (and then
    /// shortening the name) until it fits in [`MAX_META_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut meta = self.clone();
        loop {
            let mut out = Vec::new();
            ciborium::into_writer(&meta, &mut out).expect("CBOR encoding into a Vec cannot fail");
            if out.len() <= MAX_META_BYTES {
                return out;
            }
            if meta.addrs.pop().is_none() {
                let keep = meta.name.chars().count() / 2;
                meta.name = meta.name.chars().take(keep).collect();
            }
        }
    }

    /// Decodes metadata received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        if bytes.len() > MAX_META_BYTES {
            return Err(MetaError::Malformed(format!("{} bytes", bytes.len())));
        }
        ciborium::from_reader(bytes).map_err(|e| MetaError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let meta = NodeMeta {
            name: "berkeley".into(),
            overlay: "demo".into(),
            addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            capacity: 100,
            load: 3,
            datagram: "0.0.0.0:7702".into(),
            boot: 42,
            services: 0x5eed,
        };
        assert_eq!(NodeMeta::decode(&meta.encode()).unwrap(), meta);
        // An unknown digest costs no bytes.
        let unknown = NodeMeta {
            services: 0,
            ..meta.clone()
        };
        assert!(unknown.encode().len() < meta.encode().len());
        assert_eq!(NodeMeta::decode(&unknown.encode()).unwrap(), unknown);
    }

    #[test]
    fn oversized_metadata_is_trimmed_to_fit() {
        let meta = NodeMeta {
            name: "x".repeat(5000),
            overlay: "demo".into(),
            addrs: (0..100)
                .map(|i| format!("/ip4/198.18.0.{i}/tcp/4001"))
                .collect(),
            capacity: 1,
            load: 0,
            ..NodeMeta::default()
        };
        let bytes = meta.encode();
        assert!(bytes.len() <= MAX_META_BYTES);
        let back = NodeMeta::decode(&bytes).unwrap();
        assert_eq!(back.overlay, "demo");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(NodeMeta::decode(&[0xff, 0x00, 0x13]).is_err());
    }
}
