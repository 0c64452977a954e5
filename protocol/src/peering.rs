//! The peering policy: discovery (mDNS, Kademlia, bootstrap addresses)
//! proposes peers, this decides which are admitted to the overlay.
//!
//! Admission runs a challenge-response over `/baton/hello/1` in each
//! direction: the challenger sends its overlay name and a fresh nonce, the
//! responder answers with its overlay name and, when the overlay has a network
//! key, `HMAC-SHA256(key, "/baton/hello/1" | nonce | responder id | challenger id)`.
//! Binding both peer ids (which libp2p's Noise handshake authenticates) makes
//! a proof useless to anyone else and for any other pair.

use std::collections::HashSet;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The stream protocol of the admission handshake.
pub const PROTOCOL: &str = "/baton/hello/1";

/// The largest hello message accepted, in bytes.
pub const MAX_HELLO_BYTES: usize = 1024;

/// The longest overlay name, in bytes.
pub const MAX_OVERLAY_LEN: usize = 128;

/// Sent by the side that wants to admit the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The challenger's overlay name.
    #[serde(rename = "o")]
    pub overlay: String,
    /// A fresh random nonce.
    #[serde(rename = "c", with = "serde_bytes")]
    pub nonce: Vec<u8>,
}

/// The answer to a [`Challenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The responder's overlay name.
    #[serde(rename = "o")]
    pub overlay: String,
    /// The proof of the network key, when the responder has one.
    #[serde(rename = "p", with = "serde_bytes", default)]
    pub proof: Vec<u8>,
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
    /// The handshake message was unreadable.
    Malformed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OverlayMismatch { ours, theirs } => {
                write!(
                    f,
                    "peer belongs to overlay {theirs:?}, this node to {ours:?}"
                )
            }
            Refusal::MissingProof => {
                write!(f, "peer has no network key, this overlay requires one")
            }
            Refusal::BadProof => write!(f, "peer's network key differs from ours"),
            Refusal::NotAllowed => write!(f, "peer id is not on the allowlist"),
            Refusal::Full { max } => write!(f, "overlay is full ({max} members)"),
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
    /// Peer ids (bytes) admitted; `None` admits any.
    pub allowlist: Option<HashSet<Vec<u8>>>,
    /// Most members (this node excluded) the node will admit.
    pub max_members: usize,
}

impl fmt::Debug for Policy {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("overlay", &self.overlay)
            .field("network_key", &self.network_key.as_ref().map(|_| "<set>"))
            .field("allowlist", &self.allowlist.as_ref().map(HashSet::len))
            .field("max_members", &self.max_members)
            .finish()
    }
}

impl Policy {
    /// A challenge carrying `nonce` (at least 16 random bytes from the caller).
    pub fn challenge(&self, nonce: Vec<u8>) -> Challenge {
        Challenge {
            overlay: self.overlay.clone(),
            nonce,
        }
    }

    /// Answers a challenge from `challenger`; `me` is this node's peer id.
    pub fn respond(&self, challenge: &Challenge, me: &[u8], challenger: &[u8]) -> Response {
        let proof = match &self.network_key {
            Some(key) => proof(key, &challenge.nonce, me, challenger),
            None => Vec::new(),
        };
        Response {
            overlay: self.overlay.clone(),
            proof,
        }
    }

    /// Decides on `peer` from the challenge we sent and its response;
    /// `members` is how many members this node has now.
    pub fn admit(
        &self,
        me: &[u8],
        peer: &[u8],
        sent: &Challenge,
        response: &Response,
        members: usize,
    ) -> Result<(), Refusal> {
        if response.overlay != self.overlay {
            return Err(Refusal::OverlayMismatch {
                ours: self.overlay.clone(),
                theirs: response.overlay.clone(),
            });
        }
        if let Some(key) = &self.network_key {
            if response.proof.is_empty() {
                return Err(Refusal::MissingProof);
            }
            let mut mac = keyed(key);
            feed(&mut mac, &sent.nonce, peer, me);
            mac.verify_slice(&response.proof)
                .map_err(|_| Refusal::BadProof)?;
        }
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

/// A hello message on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// See [`Challenge`].
    #[serde(rename = "c")]
    Challenge(Challenge),
    /// See [`Response`].
    #[serde(rename = "r")]
    Response(Response),
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
    let hello: Hello =
        ciborium::from_reader(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let overlay = match &hello {
        Hello::Challenge(c) => &c.overlay,
        Hello::Response(r) => &r.overlay,
    };
    if overlay.len() > MAX_OVERLAY_LEN {
        return Err(Refusal::Malformed("overlay name too long".into()));
    }
    Ok(hello)
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn feed(mac: &mut Hmac<Sha256>, nonce: &[u8], responder: &[u8], challenger: &[u8]) {
    mac.update(PROTOCOL.as_bytes());
    for part in [nonce, responder, challenger] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
}

fn proof(key: &[u8], nonce: &[u8], responder: &[u8], challenger: &[u8]) -> Vec<u8> {
    let mut mac = keyed(key);
    feed(&mut mac, nonce, responder, challenger);
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

    fn handshake(a: &Policy, b: &Policy) -> Result<(), Refusal> {
        let (ida, idb) = (b"peer-a".as_slice(), b"peer-b".as_slice());
        let challenge = a.challenge(vec![7; 32]);
        let response = b.respond(&challenge, idb, ida);
        a.admit(ida, idb, &challenge, &response, 0)
    }

    #[test]
    fn same_overlay_and_key_is_admitted() {
        assert_eq!(
            handshake(&policy("x", Some(b"k")), &policy("x", Some(b"k"))),
            Ok(())
        );
        assert_eq!(handshake(&policy("x", None), &policy("x", None)), Ok(()));
    }

    #[test]
    fn other_overlay_is_refused() {
        assert!(matches!(
            handshake(&policy("x", None), &policy("y", None)),
            Err(Refusal::OverlayMismatch { .. })
        ));
    }

    #[test]
    fn wrong_or_missing_key_is_refused() {
        assert_eq!(
            handshake(&policy("x", Some(b"k")), &policy("x", Some(b"other"))),
            Err(Refusal::BadProof)
        );
        assert_eq!(
            handshake(&policy("x", Some(b"k")), &policy("x", None)),
            Err(Refusal::MissingProof)
        );
    }

    #[test]
    fn a_proof_is_bound_to_the_pair_of_peers() {
        let a = policy("x", Some(b"k"));
        let challenge = a.challenge(vec![1; 32]);
        let response = a.respond(&challenge, b"peer-b", b"peer-a");
        // Replayed by peer-c, the same proof fails.
        assert_eq!(
            a.admit(b"peer-a", b"peer-c", &challenge, &response, 0),
            Err(Refusal::BadProof)
        );
    }

    #[test]
    fn allowlist_and_member_limit_apply() {
        let mut a = policy("x", None);
        a.allowlist = Some(HashSet::from([b"peer-z".to_vec()]));
        assert_eq!(handshake(&a, &policy("x", None)), Err(Refusal::NotAllowed));
        let mut a = policy("x", None);
        a.max_members = 0;
        assert_eq!(
            handshake(&a, &policy("x", None)),
            Err(Refusal::Full { max: 0 })
        );
    }

    #[test]
    fn hello_round_trips_and_garbage_is_refused() {
        let hello = Hello::Challenge(Challenge {
            overlay: "x".into(),
            nonce: vec![1; 32],
        });
        assert_eq!(decode(&encode(&hello)).unwrap(), hello);
        assert!(decode(&[0xff; 3]).is_err());
        assert!(decode(&vec![0; MAX_HELLO_BYTES + 1]).is_err());
    }
}
