//! Session records: what the replicated map holds for each session (its
//! service, client, primary and ordered backups, epoch) and their signatures.
//! See `map` for the merge and authority rules, `policy` for who hosts what.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Whether a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionState {
    /// Hosted by its primary.
    #[serde(rename = "a")]
    Active,
    /// Closed: kept as a tombstone for a while so that the close wins
    /// everywhere, then collected.
    #[serde(rename = "c")]
    Closed,
}

/// One version of a session's assignment, signed by the node that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Session id: 1 to 64 characters of `[A-Za-z0-9_-]`.
    #[serde(rename = "i")]
    pub id: String,
    /// Service name, such as `rtp-audio` or `exec`.
    #[serde(rename = "s")]
    pub service: String,
    /// Service parameters.
    #[serde(rename = "p", default)]
    pub params: BTreeMap<String, String>,
    /// Where the client is: for RTP, its UDP address `ip:port`.
    #[serde(rename = "c")]
    pub client: String,
    /// The client's location key: its /24 for IPv4, its /48 for IPv6.
    #[serde(rename = "l")]
    pub location: String,
    /// The node hosting the session.
    #[serde(rename = "h")]
    pub primary: NodeId,
    /// Nodes that take over, in order.
    #[serde(rename = "b", default)]
    pub backups: Vec<NodeId>,
    /// Raised by every change of primary; starts at 1.
    #[serde(rename = "e")]
    pub epoch: u64,
    /// Raised by every other write within an epoch; 0 when an epoch starts.
    /// The merge order of versions is `map::precedence`.
    #[serde(rename = "v", default)]
    pub version: u64,
    /// Active or closed.
    #[serde(rename = "t")]
    pub state: SessionState,
    /// When the session started (Unix ms): services derive their stream
    /// from it, so that a node taking over continues the same stream.
    #[serde(rename = "o")]
    pub started_ms: u64,
    /// When this version was written (Unix ms, writer's clock).
    #[serde(rename = "u")]
    pub updated_ms: u64,
    /// Why this version was written (`open`, `takeover: ...`, `transfer: ...`,
    /// `handover`, `close`, `backups`).
    #[serde(rename = "r", default)]
    pub reason: String,
    /// The node that wrote and signed this version.
    #[serde(rename = "w")]
    pub writer: NodeId,
    /// Ed25519 signature by `writer` over [`Record::signing_bytes`].
    #[serde(rename = "g", with = "serde_bytes", default)]
    pub signature: Vec<u8>,
}

/// Signs bytes with the local node's key (libp2p's ed25519 keypair in the
/// node; a fixed test key in tests and the simulator).
pub trait Signer {
    /// The signing node.
    fn id(&self) -> &NodeId;
    /// An ed25519 signature of `bytes`.
    fn sign(&self, bytes: &[u8]) -> Vec<u8>;
}

impl Record {
    /// The canonical bytes a signature covers: the CBOR encoding of the
    /// record with an empty signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = Vec::new();
        let mut out = Vec::new();
        ciborium::into_writer(&unsigned, &mut out).expect("CBOR encoding into a Vec cannot fail");
        out
    }

    /// Sets `writer` and signs.
    pub fn sign(&mut self, signer: &dyn Signer) {
        self.writer = signer.id().clone();
        self.signature = signer.sign(&self.signing_bytes());
    }
}
