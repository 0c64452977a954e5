//! The peering policy: discovery (mDNS, Kademlia, bootstrap addresses)
//! proposes peers, this decides which are admitted to the overlay, and the
//! admission handshake agrees the keys of the pair's datagram plane.
//!
//! The handshake runs once per pair of processes over `/baton/hello/2`,
//! inside a libp2p connection (so both peer ids are authenticated by Noise
//! and the bytes are private), four frames long:
//!
//! ```text
//! I -> R  Challenge { overlay, nonce_i, index_i, boot_i, datagram }
//! R -> I  Response  { overlay, proof_r, nonce_r, index_r, boot_r, datagram }   (or Refused)
//! I -> R  Confirm   { proof_i }                                                (or Refused)
//! R -> I  Done                                                                 (or Refused)
//! ```
//!
//! `proof_r = HMAC-SHA256(network key, PROTOCOL | "r" | nonce_i | R | I)` and
//! `proof_i` likewise over `nonce_r` with the roles swapped: each side proves
//! it holds the overlay's key (when it has one) for this pair and this
//! handshake only. Each side then applies the allowlist and the member
//! limit; a refusal is sent with its reason, so that both sides can say why.
//! Both nonces feed [`crate::datagram::derive`]: a fresh key pair per
//! handshake, so per process lifetime.

use std::collections::BTreeSet;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::NodeId;

/// The stream protocol of the admission handshake.
pub const PROTOCOL: &str = "/baton/hello/2";

/// The largest hello message accepted, in bytes.
pub const MAX_HELLO_BYTES: usize = 1024;

/// The longest overlay name, in bytes.
pub const MAX_OVERLAY_LEN: usize = 128;

/// The longest refusal reason sent or kept, in bytes.
pub const MAX_REASON_LEN: usize = 200;

/// Most twin boot numbers a hello carries.
pub const MAX_TWINS: usize = 4;

/// Bytes of a hello nonce.
pub const NONCE_LEN: usize = crate::datagram::NONCE_LEN;

/// The first message: the initiator's offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The initiator's overlay name.
    #[serde(rename = "o")]
    pub overlay: String,
    /// Fresh random bytes, [`NONCE_LEN`] of them.
    #[serde(rename = "c", with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The key index under which the initiator receives datagrams.
    #[serde(rename = "i")]
    pub index: u32,
    /// A random number the initiator's process drew at start: a peer that
    /// sees another one knows the process restarted (or was copied).
    #[serde(rename = "b")]
    pub boot: u64,
    /// The initiator's datagram socket (`ip:port`; an unspecified ip means
    /// "the address this connection comes from").
    #[serde(rename = "d", default)]
    pub datagram: String,
}

/// The second message: the responder's offer and proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The responder's overlay name.
    #[serde(rename = "o")]
    pub overlay: String,
    /// The proof of the network key over the initiator's nonce (empty when
    /// the responder has no key).
    #[serde(rename = "p", with = "serde_bytes", default)]
    pub proof: Vec<u8>,
    /// Fresh random bytes, [`NONCE_LEN`] of them.
    #[serde(rename = "c", with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The key index under which the responder receives datagrams.
    #[serde(rename = "i")]
    pub index: u32,
    /// The responder's boot number.
    #[serde(rename = "b")]
    pub boot: u64,
    /// The responder's datagram socket.
    #[serde(rename = "d", default)]
    pub datagram: String,
    /// Boot numbers of other live processes the responder saw announce the
    /// initiator's peer id (a copied identity; see `Peer::note_boot`).
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<u64>,
}

/// A hello message on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// See [`Challenge`].
    #[serde(rename = "c")]
    Challenge(Challenge),
    /// See [`Response`].
    #[serde(rename = "r")]
    Response(Response),
    /// The initiator's proof over the responder's nonce.
    #[serde(rename = "f")]
    Confirm {
        /// The proof (empty without a network key).
        #[serde(rename = "p", with = "serde_bytes", default)]
        proof: Vec<u8>,
        /// Boot numbers of other live processes the initiator saw announce
        /// the responder's peer id.
        #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
        twins: Vec<u64>,
    },
    /// The responder admitted the initiator: the keys are in use.
    #[serde(rename = "d")]
    Done,
    /// The sender refuses the other side, and says why.
    #[serde(rename = "x")]
    Refused {
        /// Why, for the other side's log.
        #[serde(rename = "r")]
        reason: String,
    },
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It belongs to another overlay.
    OverlayMismatch {
        /// Ours.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The overlay has a network key and the peer proved none.
    MissingProof,
    /// The peer's proof does not match our network key.
    BadProof,
    /// The allowlist does not name the peer.
    NotAllowed,
    /// The overlay already has its maximum number of members.
    Full {
        /// The configured maximum.
        max: usize,
    },
    /// The handshake message was unreadable or out of order.
    Malformed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OverlayMismatch { ours, theirs } => {
                write!(
                    f,
                    "peer belongs to overlay {theirs:?}, this node to {ours:?}: \
                     set the same --overlay on both"
                )
            }
            Refusal::MissingProof => write!(
                f,
                "peer has no network key, this overlay requires one: \
                 give it the overlay's --network-key-file"
            ),
            Refusal::BadProof => write!(
                f,
                "peer's network key differs from ours: both need the same --network-key-file"
            ),
            Refusal::NotAllowed => write!(f, "peer id is not on the allowlist (--allow)"),
            Refusal::Full { max } => {
                write!(f, "overlay is full ({max} members): raise --max-members")
            }
            Refusal::Malformed(why) => write!(f, "unreadable handshake: {why}"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Who may join.
#[derive(Clone, Default)]
pub struct Policy {
    /// Overlay name; peers of other overlays are refused.
    pub overlay: String,
    /// Pre-shared network key; when set, peers must prove they hold it.
    pub network_key: Option<Vec<u8>>,
    /// Peers admitted; `None` admits any.
    pub allowlist: Option<BTreeSet<NodeId>>,
    /// Most members (this node excluded) the node will admit.
    pub max_members: usize,
}

impl fmt::Debug for Policy {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("overlay", &self.overlay)
            .field("network_key", &self.network_key.as_ref().map(|_| "<set>"))
            .field("allowlist", &self.allowlist.as_ref().map(BTreeSet::len))
            .field("max_members", &self.max_members)
            .finish()
    }
}

/// Which side of the handshake made a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the challenge.
    Initiator,
    /// The side that answered it.
    Responder,
}

impl Policy {
    /// This node's proof, in `role`, over the other side's `nonce`: empty
    /// without a network key.
    pub fn prove(&self, role: Role, nonce: &[u8], me: &NodeId, peer: &NodeId) -> Vec<u8> {
        match &self.network_key {
            Some(key) => proof(key, role, nonce, me, peer),
            None => Vec::new(),
        }
    }

    /// Checks the other side's overlay name.
    pub fn check_overlay(&self, theirs: &str) -> Result<(), Refusal> {
        if theirs != self.overlay {
            return Err(Refusal::OverlayMismatch {
                ours: self.overlay.clone(),
                theirs: theirs.chars().take(MAX_OVERLAY_LEN).collect(),
            });
        }
        Ok(())
    }

    /// Checks the proof `peer` made in `role` over the nonce this node sent.
    pub fn check_proof(
        &self,
        role: Role,
        sent_nonce: &[u8],
        me: &NodeId,
        peer: &NodeId,
        presented: &[u8],
    ) -> Result<(), Refusal> {
        let Some(key) = &self.network_key else {
            return Ok(());
        };
        if presented.is_empty() {
            return Err(Refusal::MissingProof);
        }
        let mut mac = keyed(key);
        feed(&mut mac, role, sent_nonce, peer, me);
        mac.verify_slice(presented).map_err(|_| Refusal::BadProof)
    }

    /// The allowlist and the member limit; `members` is how many members
    /// this node has now, the peer excluded.
    pub fn check_admission(&self, peer: &NodeId, members: usize) -> Result<(), Refusal> {
        if let Some(allowed) = &self.allowlist
            && !allowed.contains(peer)
        {
            return Err(Refusal::NotAllowed);
        }
        if members >= self.max_members {
            return Err(Refusal::Full {
                max: self.max_members,
            });
        }
        Ok(())
    }
}

/// Encodes a hello message.
pub fn encode(hello: &Hello) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(hello, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// Decodes a hello message through the size cap.
pub fn decode(bytes: &[u8]) -> Result<Hello, Refusal> {
    if bytes.len() > MAX_HELLO_BYTES {
        return Err(Refusal::Malformed(format!(
            "{} bytes, at most {MAX_HELLO_BYTES}",
            bytes.len()
        )));
    }
    let mut reader = bytes;
    let hello: Hello =
        ciborium::from_reader(&mut reader).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(Refusal::Malformed("bytes after the message".into()));
    }
    let twins = match &hello {
        Hello::Response(r) => r.twins.len(),
        Hello::Confirm { twins, .. } => twins.len(),
        _ => 0,
    };
    if twins > MAX_TWINS {
        return Err(Refusal::Malformed(format!("{twins} twin boot numbers")));
    }
    let (overlay, nonce) = match &hello {
        Hello::Challenge(c) => (c.overlay.as_str(), c.nonce.as_slice()),
        Hello::Response(r) => (r.overlay.as_str(), r.nonce.as_slice()),
        Hello::Refused { reason } if reason.len() > MAX_REASON_LEN => {
            return Err(Refusal::Malformed("refusal reason too long".into()));
        }
        _ => return Ok(hello),
    };
    if overlay.len() > MAX_OVERLAY_LEN {
        return Err(Refusal::Malformed("overlay name too long".into()));
    }
    let index = match &hello {
        Hello::Challenge(c) => c.index,
        Hello::Response(r) => r.index,
        _ => 0,
    };
    if index >= crate::datagram::INDEX_LIMIT {
        return Err(Refusal::Malformed(format!(
            "key index {index} is not 24 bits"
        )));
    }
    if nonce.len() != NONCE_LEN {
        return Err(Refusal::Malformed(format!(
            "nonce of {} bytes, {NONCE_LEN} expected",
            nonce.len()
        )));
    }
    Ok(hello)
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn feed(mac: &mut Hmac<Sha256>, role: Role, nonce: &[u8], prover: &NodeId, verifier: &NodeId) {
    mac.update(PROTOCOL.as_bytes());
    mac.update(match role {
        Role::Initiator => b"i",
        Role::Responder => b"r",
    });
    for part in [nonce, prover.as_bytes(), verifier.as_bytes()] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
}

fn proof(key: &[u8], role: Role, nonce: &[u8], prover: &NodeId, verifier: &NodeId) -> Vec<u8> {
    let mut mac = keyed(key);
    feed(&mut mac, role, nonce, prover, verifier);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(overlay: &str, key: Option<&[u8]>) -> Policy {
        Policy {
            overlay: overlay.into(),
            network_key: key.map(<[u8]>::to_vec),
            allowlist: None,
            max_members: 100,
        }
    }

    fn id(n: u32) -> NodeId {
        NodeId::synthetic(n)
    }

    /// A proves to B in `role` over B's nonce; B checks.
    fn prove(a: &Policy, b: &Policy, role: Role) -> Result<(), Refusal> {
        let nonce = [7u8; NONCE_LEN];
        let proof = a.prove(role, &nonce, &id(1), &id(2));
        b.check_proof(role, &nonce, &id(2), &id(1), &proof)
    }

    #[test]
    fn same_key_proves_in_both_roles() {
        for role in [Role::Initiator, Role::Responder] {
            assert_eq!(
                prove(&policy("x", Some(b"k")), &policy("x", Some(b"k")), role),
                Ok(())
            );
            assert_eq!(prove(&policy("x", None), &policy("x", None), role), Ok(()));
        }
    }

    #[test]
    fn other_overlay_is_refused_and_named() {
        let err = policy("x", None).check_overlay("y").unwrap_err();
        assert!(matches!(err, Refusal::OverlayMismatch { .. }));
        assert!(err.to_string().contains("--overlay"));
    }

    #[test]
    fn wrong_or_missing_key_is_refused() {
        assert_eq!(
            prove(
                &policy("x", Some(b"other")),
                &policy("x", Some(b"k")),
                Role::Initiator
            ),
            Err(Refusal::BadProof)
        );
        assert_eq!(
            prove(
                &policy("x", None),
                &policy("x", Some(b"k")),
                Role::Responder
            ),
            Err(Refusal::MissingProof)
        );
    }

    #[test]
    fn a_proof_is_bound_to_the_pair_and_the_role() {
        let a = policy("x", Some(b"k"));
        let nonce = [1u8; NONCE_LEN];
        let proof = a.prove(Role::Responder, &nonce, &id(2), &id(1));
        assert_eq!(
            a.check_proof(Role::Responder, &nonce, &id(1), &id(2), &proof),
            Ok(())
        );
        // Replayed by node 3, or presented in the other role, it fails.
        assert_eq!(
            a.check_proof(Role::Responder, &nonce, &id(1), &id(3), &proof),
            Err(Refusal::BadProof)
        );
        assert_eq!(
            a.check_proof(Role::Initiator, &nonce, &id(1), &id(2), &proof),
            Err(Refusal::BadProof)
        );
    }

    #[test]
    fn allowlist_and_member_limit_apply() {
        let mut a = policy("x", None);
        a.allowlist = Some(BTreeSet::from([id(9)]));
        assert_eq!(a.check_admission(&id(2), 0), Err(Refusal::NotAllowed));
        assert_eq!(a.check_admission(&id(9), 0), Ok(()));
        let mut a = policy("x", None);
        a.max_members = 0;
        assert_eq!(a.check_admission(&id(2), 0), Err(Refusal::Full { max: 0 }));
    }

    /// The cap is inclusive: a hello of exactly MAX_HELLO_BYTES is read, one
    /// byte more is refused for its size before any decoding.
    #[test]
    fn a_hello_of_exactly_the_cap_is_read_and_one_byte_more_is_not() {
        let confirm = |n: usize| Hello::Confirm {
            proof: vec![1; n],
            twins: vec![],
        };
        // Past 255 bytes a CBOR byte string's head is 3 bytes: the size
        // grows one for one with the proof.
        let fixed = encode(&confirm(300)).len() - 300;
        let exact = confirm(MAX_HELLO_BYTES - fixed);
        let bytes = encode(&exact);
        assert_eq!(bytes.len(), MAX_HELLO_BYTES);
        assert_eq!(decode(&bytes).unwrap(), exact);
        let over = encode(&confirm(MAX_HELLO_BYTES - fixed + 1));
        match decode(&over) {
            Err(Refusal::Malformed(why)) => assert!(why.contains("at most"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_response_or_confirm_with_more_than_max_twins_is_malformed() {
        let response = |twins: usize| {
            Hello::Response(Response {
                overlay: "x".into(),
                proof: vec![1; 32],
                nonce: vec![1; NONCE_LEN],
                index: 7,
                boot: 9,
                datagram: String::new(),
                twins: (1..=twins as u64).collect(),
            })
        };
        let confirm = |twins: usize| Hello::Confirm {
            proof: vec![1; 32],
            twins: (1..=twins as u64).collect(),
        };
        for make in [&response as &dyn Fn(usize) -> Hello, &confirm] {
            let most = make(MAX_TWINS);
            assert_eq!(decode(&encode(&most)).unwrap(), most);
            match decode(&encode(&make(MAX_TWINS + 1))) {
                Err(Refusal::Malformed(why)) => assert!(why.contains("twin"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn hello_round_trips_and_garbage_is_refused() {
        let hello = Hello::Challenge(Challenge {
            overlay: "x".into(),
            nonce: vec![1; NONCE_LEN],
            index: 7,
            boot: 9,
            datagram: "0.0.0.0:7702".into(),
        });
        assert_eq!(decode(&encode(&hello)).unwrap(), hello);
        for h in [
            Hello::Done,
            Hello::Confirm {
                proof: vec![1; 32],
                twins: vec![7],
            },
            Hello::Refused {
                reason: "no".into(),
            },
        ] {
            assert_eq!(decode(&encode(&h)).unwrap(), h);
        }
        assert!(decode(&[0xff; 3]).is_err());
        assert!(decode(&vec![0; MAX_HELLO_BYTES + 1]).is_err());
        let short_nonce = Hello::Challenge(Challenge {
            overlay: "x".into(),
            nonce: vec![1; 8],
            index: 7,
            boot: 9,
            datagram: String::new(),
        });
        assert!(decode(&encode(&short_nonce)).is_err());
        let long_reason = Hello::Refused {
            reason: "x".repeat(MAX_REASON_LEN + 1),
        };
        assert!(decode(&encode(&long_reason)).is_err());
        // A reason of exactly the cap is read.
        let longest_reason = Hello::Refused {
            reason: "x".repeat(MAX_REASON_LEN),
        };
        assert_eq!(decode(&encode(&longest_reason)).unwrap(), longest_reason);
    }

    #[test]
    fn a_challenge_or_response_whose_key_index_is_not_24_bits_is_malformed() {
        // The index is the datagram header's 24-bit key id.
        let challenge = |index| {
            Hello::Challenge(Challenge {
                overlay: "x".into(),
                nonce: vec![1; NONCE_LEN],
                index,
                boot: 9,
                datagram: String::new(),
            })
        };
        let response = |index| {
            Hello::Response(Response {
                overlay: "x".into(),
                proof: vec![1; 32],
                nonce: vec![1; NONCE_LEN],
                index,
                boot: 9,
                datagram: String::new(),
                twins: vec![],
            })
        };
        let limit = crate::datagram::INDEX_LIMIT;
        for make in [&challenge as &dyn Fn(u32) -> Hello, &response] {
            let largest = make(limit - 1);
            assert_eq!(decode(&encode(&largest)).unwrap(), largest);
            match decode(&encode(&make(limit))) {
                Err(Refusal::Malformed(why)) => assert!(why.contains("24 bits"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
