//! The messages Baton nodes exchange, and their CBOR codec.
//!
//! Every message travels in an [`Envelope`] that carries the protocol version.
//! Field and variant names are one letter long because a SWIM probe and its ack
//! are sent several times a second to every member: names are spelled out in
//! `docs/protocol.md`. Decoding reads through a hard size cap and never panics.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::coords::Coordinate;

/// The protocol version this build speaks. A peer using another one is
/// rejected with [`DecodeError::UnsupportedVersion`].
pub const VERSION: u8 = 1;

/// The largest encoded envelope accepted, in bytes. Larger inputs are rejected
/// before any decoding, so a hostile peer can make us allocate at most this
/// much (plus the structures decoded from it).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The most membership updates a single message may carry.
pub const MAX_UPDATES: usize = 512;

/// The largest member metadata accepted, in bytes.
pub const MAX_META_BYTES: usize = 1024;

/// The most application payloads (session-map deltas) one message carries.
pub const MAX_APP_PAYLOADS: usize = 64;

/// The outermost structure of every message on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version, [`VERSION`].
    #[serde(rename = "v")]
    pub version: u8,
    /// The message itself.
    #[serde(rename = "m")]
    pub message: Message,
    /// Application payloads riding on the message (session-map deltas),
    /// opaque to SWIM.
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    pub app: Vec<serde_bytes::ByteBuf>,
}

impl Envelope {
    /// Wraps a message in an envelope of the current version.
    pub fn new(message: Message) -> Self {
        Envelope {
            version: VERSION,
            message,
            app: Vec::new(),
        }
    }
}

/// A SWIM message.
///
/// New optional fields may be added to a message within a version (older nodes
/// ignore fields they do not know); a new message type or a change of meaning
/// requires a new [`VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A direct probe: "are you alive?".
    #[serde(rename = "p")]
    Ping(Ping),
    /// Asks the receiver to probe `target` on the sender's behalf.
    #[serde(rename = "r")]
    PingReq(PingReq),
    /// Answers a [`Ping`], directly or relayed for a [`PingReq`].
    #[serde(rename = "a")]
    Ack(Ack),
    /// A relay's answer to a [`PingReq`] when the target did not answer it in
    /// time (Lifeguard): it tells the requester that its own links work.
    #[serde(rename = "n")]
    Nack(Nack),
    /// Membership updates pushed without a probe: the eager push of fresh
    /// news, and refutations sent straight back to whoever carried a rumour.
    #[serde(rename = "g")]
    Gossip(Gossip),
    /// Anti-entropy: a digest of the sender's membership table, optionally
    /// with (a chunk of) the table itself.
    #[serde(rename = "s")]
    Sync(Sync),
}

impl Message {
    /// The membership updates piggybacked on this message.
    pub fn updates(&self) -> &[Update] {
        match self {
            Message::Ping(m) => &m.updates,
            Message::PingReq(m) => &m.updates,
            Message::Ack(m) => &m.updates,
            Message::Nack(_) => &[],
            Message::Gossip(m) => &m.updates,
            Message::Sync(m) => &m.updates,
        }
    }

    /// The membership updates piggybacked on this message, to filter them.
    pub fn updates_mut(&mut self) -> Option<&mut Vec<Update>> {
        match self {
            Message::Ping(m) => Some(&mut m.updates),
            Message::PingReq(m) => Some(&mut m.updates),
            Message::Ack(m) => Some(&mut m.updates),
            Message::Nack(_) => None,
            Message::Gossip(m) => Some(&mut m.updates),
            Message::Sync(m) => Some(&mut m.updates),
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping(_) => "ping",
            Message::PingReq(_) => "ping-req",
            Message::Ack(_) => "ack",
            Message::Nack(_) => "nack",
            Message::Gossip(_) => "gossip",
            Message::Sync(_) => "sync",
        }
    }
}

/// A direct probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// Sequence number chosen by the sender, echoed in the [`Ack`].
    #[serde(rename = "s")]
    pub seq: u32,
    /// Piggybacked membership updates.
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Update>,
}

/// A request for an indirect probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReq {
    /// Sequence number of the requester's probe, echoed in the relayed
    /// [`Ack`] or the [`Nack`].
    #[serde(rename = "s")]
    pub seq: u32,
    /// The member to probe.
    #[serde(rename = "t")]
    pub target: NodeId,
    /// Piggybacked membership updates.
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Update>,
}

/// The answer to a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The sequence number of the [`Ping`] or [`PingReq`] answered.
    #[serde(rename = "s")]
    pub seq: u32,
    /// The acking node's Vivaldi coordinate; absent on relayed acks, whose
    /// round trip says nothing about the distance between the two ends.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub coord: Option<Coordinate>,
    /// Piggybacked membership updates.
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Update>,
}

/// A relay could not reach the target of a [`PingReq`] in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nack {
    /// The sequence number of the [`PingReq`].
    #[serde(rename = "s")]
    pub seq: u32,
}

/// Membership updates without a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gossip {
    /// The updates.
    #[serde(rename = "u")]
    pub updates: Vec<Update>,
}

/// Anti-entropy between two members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sync {
    /// Digest of the sender's whole membership table
    /// (see `swim::table_digest`).
    #[serde(rename = "d")]
    pub digest: u64,
    /// A chunk of the sender's membership table; empty when only the digest
    /// is offered.
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Update>,
    /// Whether the receiver should answer with its own table when the digests
    /// differ.
    #[serde(rename = "r", default)]
    pub reply: bool,
}

/// What a node claims about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// The member is alive at this incarnation, with this metadata.
    #[serde(rename = "a")]
    Alive {
        /// The member.
        #[serde(rename = "i")]
        id: NodeId,
        /// Its incarnation; only the member itself raises it.
        #[serde(rename = "n")]
        incarnation: u32,
        /// Opaque metadata the node layer attaches (name, addresses,
        /// capacity), at most [`MAX_META_BYTES`].
        #[serde(rename = "m", with = "serde_bytes", default)]
        meta: Vec<u8>,
    },
    /// `from` suspects the member at this incarnation.
    #[serde(rename = "s")]
    Suspect {
        /// The member.
        #[serde(rename = "i")]
        id: NodeId,
        /// The incarnation suspected.
        #[serde(rename = "n")]
        incarnation: u32,
        /// Who suspects it: distinct suspecters are Lifeguard's independent
        /// confirmations.
        #[serde(rename = "f")]
        from: NodeId,
    },
    /// `from` declared the member dead at this incarnation.
    #[serde(rename = "d")]
    Dead {
        /// The member.
        #[serde(rename = "i")]
        id: NodeId,
        /// The incarnation declared dead.
        #[serde(rename = "n")]
        incarnation: u32,
        /// Who declared it.
        #[serde(rename = "f")]
        from: NodeId,
    },
    /// The member left gracefully at this incarnation.
    #[serde(rename = "l")]
    Left {
        /// The member.
        #[serde(rename = "i")]
        id: NodeId,
        /// Its incarnation when it left.
        #[serde(rename = "n")]
        incarnation: u32,
    },
}

impl Update {
    /// The member this update is about.
    pub fn id(&self) -> &NodeId {
        match self {
            Update::Alive { id, .. }
            | Update::Suspect { id, .. }
            | Update::Dead { id, .. }
            | Update::Left { id, .. } => id,
        }
    }

    /// The incarnation this update is about.
    pub fn incarnation(&self) -> u32 {
        match self {
            Update::Alive { incarnation, .. }
            | Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. }
            | Update::Left { incarnation, .. } => *incarnation,
        }
    }
}

/// Why bytes could not be decoded into an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is larger than [`MAX_MESSAGE_BYTES`].
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// The peer speaks a protocol version this build does not.
    UnsupportedVersion {
        /// The version the peer sent.
        got: u64,
    },
    /// The bytes are not a well-formed message of this version.
    Malformed(String),
    /// The message is well-formed but breaks a limit (too many updates,
    /// oversized metadata).
    Limit(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len } => write!(
                f,
                "message of {len} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes"
            ),
            DecodeError::UnsupportedVersion { got } => write!(
                f,
                "peer speaks protocol version {got}, this node speaks version {VERSION}: \
                 upgrade the older node"
            ),
            DecodeError::Malformed(why) => write!(f, "malformed message: {why}"),
            DecodeError::Limit(why) => write!(f, "message breaks a limit: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Encodes an envelope to CBOR.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail, and every type here serializes.
    ciborium::into_writer(envelope, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// Encodes a message in an envelope of the current version.
pub fn encode_message(message: &Message) -> Vec<u8> {
    encode_with_app(message, &[])
}

/// Encodes a message with application payloads riding on it.
pub fn encode_with_app(message: &Message, app: &[Vec<u8>]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        v: u8,
        m: &'a Message,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        x: &'a [serde_bytes::ByteBuf],
    }
    let app: Vec<serde_bytes::ByteBuf> = app
        .iter()
        .map(|a| serde_bytes::ByteBuf::from(a.clone()))
        .collect();
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(
        &Borrowed {
            v: VERSION,
            m: message,
            x: &app,
        },
        &mut out,
    )
    .expect("CBOR encoding into a Vec cannot fail");
    out
}

/// Decodes an envelope, enforcing the size cap, the version and the limits.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { len: bytes.len() });
    }
    // Read the version alone first, so that a message of another version is
    // reported as such rather than as garbage.
    #[derive(Deserialize)]
    struct Header {
        v: u64,
    }
    let header: Header = ciborium::from_reader(bytes)
        .map_err(|e| DecodeError::Malformed(format!("no readable envelope: {e}")))?;
    if header.v != u64::from(VERSION) {
        return Err(DecodeError::UnsupportedVersion { got: header.v });
    }
    let mut reader = bytes;
    let envelope: Envelope =
        ciborium::from_reader(&mut reader).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the end of the message",
            reader.len()
        )));
    }
    check_limits(&envelope.message)?;
    if envelope.app.len() > MAX_APP_PAYLOADS {
        return Err(DecodeError::Limit(format!(
            "{} application payloads, at most {MAX_APP_PAYLOADS} allowed",
            envelope.app.len()
        )));
    }
    Ok(envelope)
}

fn check_limits(message: &Message) -> Result<(), DecodeError> {
    let updates = message.updates();
    if updates.len() > MAX_UPDATES {
        return Err(DecodeError::Limit(format!(
            "{} updates, at most {MAX_UPDATES} allowed",
            updates.len()
        )));
    }
    for update in updates {
        if let Update::Alive { meta, .. } = update
            && meta.len() > MAX_META_BYTES
        {
            return Err(DecodeError::Limit(format!(
                "member metadata of {} bytes, at most {MAX_META_BYTES} allowed",
                meta.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> NodeId {
        NodeId::synthetic(n)
    }

    #[test]
    fn ping_round_trips_and_is_small() {
        let env = Envelope::new(Message::Ping(Ping {
            seq: 70_000,
            updates: vec![],
        }));
        let bytes = encode(&env);
        assert!(bytes.len() <= 17, "an empty ping is {} bytes", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), env);
        assert_eq!(encode_message(&env.message), bytes);
    }

    #[test]
    fn unknown_version_is_rejected_by_name() {
        let mut env = Envelope::new(Message::Nack(Nack { seq: 1 }));
        env.version = 9;
        let err = decode(&encode(&env)).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion { got: 9 });
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn application_payloads_ride_along() {
        let bytes = encode_with_app(&Message::Nack(Nack { seq: 1 }), &[vec![1, 2, 3], vec![]]);
        let env = decode(&bytes).unwrap();
        assert_eq!(env.app.len(), 2);
        assert_eq!(env.app[0].as_ref(), &[1, 2, 3]);
        let too_many: Vec<Vec<u8>> = (0..=MAX_APP_PAYLOADS).map(|_| vec![0]).collect();
        let bytes = encode_with_app(&Message::Nack(Nack { seq: 1 }), &too_many);
        assert!(matches!(decode(&bytes), Err(DecodeError::Limit(_))));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode_message(&Message::Nack(Nack { seq: 3 }));
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn oversized_input_is_rejected_before_decoding() {
        let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::TooLarge {
                len: MAX_MESSAGE_BYTES + 1
            })
        );
    }

    #[test]
    fn too_many_updates_break_the_limit() {
        let updates = (0..MAX_UPDATES as u32 + 1)
            .map(|n| Update::Left {
                id: id(n),
                incarnation: 0,
            })
            .collect();
        let bytes = encode_message(&Message::Gossip(Gossip { updates }));
        assert!(matches!(decode(&bytes), Err(DecodeError::Limit(_))));
    }

    #[test]
    fn oversized_meta_breaks_the_limit() {
        let bytes = encode_message(&Message::Gossip(Gossip {
            updates: vec![Update::Alive {
                id: id(1),
                incarnation: 1,
                meta: vec![1; MAX_META_BYTES + 1],
            }],
        }));
        assert!(matches!(decode(&bytes), Err(DecodeError::Limit(_))));
    }

    #[test]
    fn hostile_length_prefixes_fail_without_allocating_them() {
        // A map whose one value claims to be a 2^63-byte string, then an
        // array claiming 2^32 elements: both must fail cleanly on short input.
        let huge_bytes = [
            0xa2, 0x61, b'v', 0x01, 0x61, b'm', 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff,
        ];
        assert!(matches!(
            decode(&huge_bytes),
            Err(DecodeError::Malformed(_))
        ));
        let huge_array = [
            0xa2, 0x61, b'v', 0x01, 0x61, b'm', 0xa1, 0x61, b'g', 0xa1, 0x61, b'u', 0x9a, 0xff,
            0xff, 0xff, 0xff,
        ];
        assert!(matches!(
            decode(&huge_array),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut bytes = vec![0xa2, 0x61, b'v', 0x01, 0x61, b'm'];
        bytes.extend(std::iter::repeat_n(0x81, 100_000));
        bytes.push(0x00);
        assert!(decode(&bytes).is_err());
    }

    fn arb_id() -> impl Strategy<Value = NodeId> {
        proptest::collection::vec(any::<u8>(), 1..=64).prop_map(|b| NodeId::new(&b).unwrap())
    }

    fn arb_update() -> impl Strategy<Value = Update> {
        prop_oneof![
            (
                arb_id(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(id, incarnation, meta)| Update::Alive {
                    id,
                    incarnation,
                    meta
                }),
            (arb_id(), any::<u32>(), arb_id()).prop_map(|(id, incarnation, from)| {
                Update::Suspect {
                    id,
                    incarnation,
                    from,
                }
            }),
            (arb_id(), any::<u32>(), arb_id()).prop_map(|(id, incarnation, from)| Update::Dead {
                id,
                incarnation,
                from
            }),
            (arb_id(), any::<u32>()).prop_map(|(id, incarnation)| Update::Left { id, incarnation }),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let updates = || proptest::collection::vec(arb_update(), 0..8);
        prop_oneof![
            (any::<u32>(), updates())
                .prop_map(|(seq, updates)| Message::Ping(Ping { seq, updates })),
            (any::<u32>(), arb_id(), updates()).prop_map(
                |(seq, target, updates)| Message::PingReq(PingReq {
                    seq,
                    target,
                    updates
                })
            ),
            (any::<u32>(), updates()).prop_map(|(seq, updates)| Message::Ack(Ack {
                seq,
                coord: None,
                updates
            })),
            any::<u32>().prop_map(|seq| Message::Nack(Nack { seq })),
            updates().prop_map(|updates| Message::Gossip(Gossip { updates })),
            (any::<u64>(), updates(), any::<bool>()).prop_map(|(digest, updates, reply)| {
                Message::Sync(Sync {
                    digest,
                    updates,
                    reply,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(message in arb_message()) {
            let env = Envelope::new(message);
            prop_assert_eq!(decode(&encode(&env)).unwrap(), env);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(message in arb_message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = encode_message(&message);
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            let _ = decode(&bytes);
        }
    }
}
