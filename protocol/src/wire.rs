//! The SWIM messages Baton nodes exchange, and their compact binary codec.
//!
//! A probe and its ack cross the network about twenty times a second per
//! node, in one UDP datagram each, so every byte counts: messages are a kind
//! byte, a few varints, and members named by 8-byte short refs
//! ([`NodeId::short`]) instead of 38-byte peer ids (only `Alive` updates,
//! which introduce a member, carry the full id). The layout is specified in
//! `docs/protocol.md`. Decoding checks every length against the input and the
//! limits below before allocating, and never panics.

use std::fmt;

use crate::NodeId;
use crate::coords::{Coordinate, MAX_DIMENSIONALITY};

/// The largest encoded message accepted, in bytes (a message sent on a
/// stream; datagrams are far smaller). Larger inputs are rejected before any
/// decoding.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// The most membership updates a single message may carry.
pub const MAX_UPDATES: usize = 512;

/// The largest member metadata accepted, in bytes.
pub const MAX_META_BYTES: usize = 1024;

/// The most application payloads (session-map deltas) one message carries.
pub const MAX_APP_PAYLOADS: usize = 64;

/// A SWIM message.
///
/// New kinds or fields need a new datagram-plane version (negotiated at
/// admission, `peering::PROTOCOL`): the codec has no room for unknown fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A direct probe: "are you alive?".
    Ping(Ping),
    /// Asks the receiver to probe `target` on the sender's behalf.
    PingReq(PingReq),
    /// Answers a [`Ping`], directly or relayed for a [`PingReq`].
    Ack(Ack),
    /// A relay's answer to a [`PingReq`] when the target did not answer it in
    /// time (Lifeguard): it tells the requester that its own links work.
    Nack(Nack),
    /// Membership updates pushed without a probe: the eager push of fresh
    /// news, and refutations sent straight back to whoever carried a rumour.
    Gossip(Gossip),
    /// Anti-entropy: a digest of the sender's membership table, optionally
    /// with (a chunk of) the table itself.
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
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    /// Sequence number chosen by the sender, echoed in the [`Ack`].
    pub seq: u16,
    /// Whether the prober wants the target's Vivaldi coordinate in the ack
    /// (it asks now and then, not on every probe: 44 bytes a time).
    pub want_coord: bool,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// A request for an indirect probe.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReq {
    /// Sequence number of the requester's probe, echoed in the relayed
    /// [`Ack`] or the [`Nack`].
    pub seq: u16,
    /// The member to probe.
    pub target: NodeId,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// The answer to a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The sequence number of the [`Ping`] or [`PingReq`] answered.
    pub seq: u16,
    /// The acking node's Vivaldi coordinate, when the ping asked for it;
    /// never on relayed acks, whose round trip says nothing about the
    /// distance between the two ends.
    pub coord: Option<Coordinate>,
    /// Piggybacked membership updates.
    pub updates: Vec<Update>,
}

/// A relay could not reach the target of a [`PingReq`] in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    /// The sequence number of the [`PingReq`].
    pub seq: u16,
}

/// Membership updates without a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Gossip {
    /// The updates.
    pub updates: Vec<Update>,
}

/// Anti-entropy between two members.
#[derive(Debug, Clone, PartialEq)]
pub struct Sync {
    /// Digest of the sender's whole membership table (`Swim::digest`).
    pub digest: u64,
    /// A chunk of the sender's membership table; empty when only the digest
    /// is offered.
    pub updates: Vec<Update>,
    /// Whether the receiver should answer with its own table when the digests
    /// differ.
    pub reply: bool,
}

/// What a node claims about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The member is alive at this incarnation, with this metadata.
    Alive {
        /// The member.
        id: NodeId,
        /// Its incarnation; only the member itself raises it.
        incarnation: u32,
        /// Opaque metadata the node layer attaches (name, addresses,
        /// capacity), at most [`MAX_META_BYTES`].
        meta: Vec<u8>,
    },
    /// `from` suspects the member at this incarnation.
    Suspect {
        /// The member.
        id: NodeId,
        /// The incarnation suspected.
        incarnation: u32,
        /// Who suspects it: distinct suspecters are Lifeguard's independent
        /// confirmations.
        from: NodeId,
    },
    /// `from` declared the member dead at this incarnation.
    Dead {
        /// The member.
        id: NodeId,
        /// The incarnation declared dead.
        incarnation: u32,
        /// Who declared it.
        from: NodeId,
    },
    /// The member left gracefully at this incarnation.
    Left {
        /// The member.
        id: NodeId,
        /// Its incarnation when it left.
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

    /// Its encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Update::Alive {
                id,
                incarnation,
                meta,
            } => {
                1 + id.as_bytes().len()
                    + varint_len(u64::from(*incarnation))
                    + varint_len(meta.len() as u64)
                    + meta.len()
            }
            Update::Suspect { incarnation, .. } | Update::Dead { incarnation, .. } => {
                16 + varint_len(u64::from(*incarnation))
            }
            Update::Left { incarnation, .. } => 8 + varint_len(u64::from(*incarnation)),
        }
    }
}

/// A decoded message and the application payloads that rode on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// Application payloads (session-map deltas, performance summaries),
    /// opaque to SWIM.
    pub app: Vec<Vec<u8>>,
}

/// Why bytes could not be decoded into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is larger than [`MAX_MESSAGE_BYTES`].
    TooLarge {
        /// Its size in bytes.
        len: usize,
    },
    /// The bytes are not a well-formed message.
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
            DecodeError::Malformed(why) => write!(f, "malformed message: {why}"),
            DecodeError::Limit(why) => write!(f, "message breaks a limit: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The kind of a ping, in the low 4 bits of a message's first byte.
pub const KIND_PING: u8 = 1;
/// The kind of a ping-req.
pub const KIND_PING_REQ: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_NACK: u8 = 4;
const KIND_GOSSIP: u8 = 5;
const KIND_SYNC: u8 = 6;
const KIND_MASK: u8 = 0x0f;
/// Membership updates follow the body.
const F_UPDATES: u8 = 0x10;
/// Application payloads follow the updates.
const F_APPS: u8 = 0x20;
/// The kind's own flag: a ping wants a coordinate, an ack carries one, a
/// sync asks for a reply.
const F_X: u8 = 0x40;
/// Set by no version yet: a decoder refuses it rather than misread a newer
/// layout.
const F_RESERVED: u8 = 0x80;

const TAG_ALIVE: u8 = 0;
const TAG_SUSPECT: u8 = 1;
const TAG_DEAD: u8 = 2;
const TAG_LEFT: u8 = 3;

/// The size of a message's head and body, without updates and payloads:
/// what a piggybacking sender subtracts from its byte budget.
pub fn base_len(message: &Message) -> usize {
    1 + match message {
        Message::Ping(_) => 2,
        Message::PingReq(_) => 2 + 8,
        Message::Ack(m) => 2 + m.coord.as_ref().map_or(0, coord_len),
        Message::Nack(_) => 2,
        Message::Gossip(_) => 0,
        Message::Sync(_) => 8,
    }
}

/// The bytes an application payload adds to a message (one more when it is
/// the first).
pub fn app_len(payload: &[u8]) -> usize {
    varint_len(payload.len() as u64) + payload.len()
}

/// The size of a message's update list and payload list headers, at most.
pub const LIST_HEADERS_LEN: usize = 4;

/// Encodes a message with application payloads riding on it.
pub fn encode(message: &Message, app: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    let updates = message.updates();
    let (kind, x) = match message {
        Message::Ping(m) => (KIND_PING, m.want_coord),
        Message::PingReq(_) => (KIND_PING_REQ, false),
        Message::Ack(m) => (KIND_ACK, m.coord.is_some()),
        Message::Nack(_) => (KIND_NACK, false),
        Message::Gossip(_) => (KIND_GOSSIP, false),
        Message::Sync(m) => (KIND_SYNC, m.reply),
    };
    let mut head = kind;
    if !updates.is_empty() {
        head |= F_UPDATES;
    }
    if !app.is_empty() {
        head |= F_APPS;
    }
    if x {
        head |= F_X;
    }
    out.push(head);
    match message {
        Message::Ping(m) => out.extend_from_slice(&m.seq.to_be_bytes()),
        Message::PingReq(m) => {
            out.extend_from_slice(&m.seq.to_be_bytes());
            out.extend_from_slice(&m.target.short().to_be_bytes());
        }
        Message::Ack(m) => {
            out.extend_from_slice(&m.seq.to_be_bytes());
            if let Some(c) = &m.coord {
                put_coord(&mut out, c);
            }
        }
        Message::Nack(m) => out.extend_from_slice(&m.seq.to_be_bytes()),
        Message::Gossip(_) => {}
        Message::Sync(m) => out.extend_from_slice(&m.digest.to_be_bytes()),
    }
    if !updates.is_empty() {
        put_varint(&mut out, updates.len() as u64);
        for u in updates {
            put_update(&mut out, u);
        }
    }
    if !app.is_empty() {
        put_varint(&mut out, app.len() as u64);
        for a in app {
            put_varint(&mut out, a.len() as u64);
            out.extend_from_slice(a);
        }
    }
    out
}

/// Encodes a message without payloads.
pub fn encode_message(message: &Message) -> Vec<u8> {
    encode(message, &[])
}

/// Decodes a message, enforcing the size cap and the limits. Members named
/// by short ref are looked up with `resolve`; one it does not know becomes a
/// [`NodeId::unresolved`] stand-in.
pub fn decode(
    bytes: &[u8],
    resolve: &dyn Fn(u64) -> Option<NodeId>,
) -> Result<Decoded, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { len: bytes.len() });
    }
    let mut r = Reader { bytes, at: 0 };
    let head = r.u8()?;
    if head & F_RESERVED != 0 {
        return Err(DecodeError::Malformed(
            "reserved flag set: the peer speaks a newer protocol".into(),
        ));
    }
    let x = head & F_X != 0;
    let name = |short: u64| resolve(short).unwrap_or_else(|| NodeId::unresolved(short));
    let mut message = match head & KIND_MASK {
        KIND_PING => Message::Ping(Ping {
            seq: r.seq()?,
            want_coord: x,
            updates: Vec::new(),
        }),
        KIND_PING_REQ => {
            let seq = r.seq()?;
            let target = name(r.u64()?);
            Message::PingReq(PingReq {
                seq,
                target,
                updates: Vec::new(),
            })
        }
        KIND_ACK => {
            let seq = r.seq()?;
            let coord = if x { Some(r.coord()?) } else { None };
            Message::Ack(Ack {
                seq,
                coord,
                updates: Vec::new(),
            })
        }
        KIND_NACK => Message::Nack(Nack { seq: r.seq()? }),
        KIND_GOSSIP => Message::Gossip(Gossip {
            updates: Vec::new(),
        }),
        KIND_SYNC => Message::Sync(Sync {
            digest: r.u64()?,
            updates: Vec::new(),
            reply: x,
        }),
        other => {
            return Err(DecodeError::Malformed(format!(
                "unknown message kind {other}"
            )));
        }
    };
    if head & F_X != 0
        && matches!(
            message,
            Message::PingReq(_) | Message::Nack(_) | Message::Gossip(_)
        )
    {
        return Err(DecodeError::Malformed(format!(
            "flag 0x40 means nothing for a {}",
            message.kind()
        )));
    }
    if head & F_UPDATES != 0 {
        let count = r.count(MAX_UPDATES, "updates")?;
        if matches!(message, Message::Nack(_)) {
            return Err(DecodeError::Malformed("a nack carries no updates".into()));
        }
        let mut updates = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            updates.push(r.update(&name)?);
        }
        if let Some(list) = message.updates_mut() {
            *list = updates;
        }
    }
    let mut app = Vec::new();
    if head & F_APPS != 0 {
        let count = r.count(MAX_APP_PAYLOADS, "application payloads")?;
        for _ in 0..count {
            let len = r.len_prefix(MAX_MESSAGE_BYTES, "application payload")?;
            app.push(r.take(len)?.to_vec());
        }
    }
    if r.at != bytes.len() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the end of the message",
            bytes.len() - r.at
        )));
    }
    Ok(Decoded { message, app })
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn coord_len(c: &Coordinate) -> usize {
    1 + 4 * (c.vec.len().min(MAX_DIMENSIONALITY) + 3)
}

fn put_coord(out: &mut Vec<u8>, c: &Coordinate) {
    // f32 is ample: Vivaldi's own error is percents, and 44 bytes beat 88.
    let dims = c.vec.len().min(MAX_DIMENSIONALITY);
    out.push(dims as u8);
    for x in c.vec.iter().take(dims) {
        out.extend_from_slice(&(*x as f32).to_be_bytes());
    }
    for x in [c.error, c.adjustment, c.height] {
        out.extend_from_slice(&(x as f32).to_be_bytes());
    }
}

fn put_update(out: &mut Vec<u8>, u: &Update) {
    match u {
        Update::Alive {
            id,
            incarnation,
            meta,
        } => {
            out.push(TAG_ALIVE);
            let bytes = id.as_bytes();
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
            put_varint(out, u64::from(*incarnation));
            put_varint(out, meta.len() as u64);
            out.extend_from_slice(meta);
        }
        Update::Suspect {
            id,
            incarnation,
            from,
        }
        | Update::Dead {
            id,
            incarnation,
            from,
        } => {
            out.push(if matches!(u, Update::Suspect { .. }) {
                TAG_SUSPECT
            } else {
                TAG_DEAD
            });
            out.extend_from_slice(&id.short().to_be_bytes());
            put_varint(out, u64::from(*incarnation));
            out.extend_from_slice(&from.short().to_be_bytes());
        }
        Update::Left { id, incarnation } => {
            out.push(TAG_LEFT);
            out.extend_from_slice(&id.short().to_be_bytes());
            put_varint(out, u64::from(*incarnation));
        }
    }
}

/// A cursor over untrusted bytes: every read checks the length first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                DecodeError::Malformed(format!(
                    "truncated: wanted {n} more bytes at offset {}",
                    self.at
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::Malformed("varint overflows 64 bits".into()));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed("varint longer than 10 bytes".into()))
    }

    fn u32_varint(&mut self, what: &str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?)
            .map_err(|_| DecodeError::Malformed(format!("{what} does not fit 32 bits")))
    }

    fn seq(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    /// A list length between 1 and `max`, which must also fit in what is
    /// left of the input (every element is at least one byte).
    fn count(&mut self, max: usize, what: &str) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n == 0 {
            return Err(DecodeError::Malformed(format!(
                "empty list of {what} (its flag says there are some)"
            )));
        }
        if n > max as u64 {
            return Err(DecodeError::Limit(format!(
                "{n} {what}, at most {max} allowed"
            )));
        }
        let n = n as usize;
        if n > self.bytes.len() - self.at {
            return Err(DecodeError::Malformed(format!(
                "{n} {what} cannot fit in {} bytes",
                self.bytes.len() - self.at
            )));
        }
        Ok(n)
    }

    fn len_prefix(&mut self, max: usize, what: &str) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(DecodeError::Limit(format!(
                "{what} of {n} bytes, at most {max} allowed"
            )));
        }
        Ok(n as usize)
    }

    fn coord(&mut self) -> Result<Coordinate, DecodeError> {
        let dims = usize::from(self.u8()?);
        if dims == 0 || dims > MAX_DIMENSIONALITY {
            return Err(DecodeError::Limit(format!(
                "coordinate of {dims} dimensions, 1 to {MAX_DIMENSIONALITY} allowed"
            )));
        }
        // Finite, within 10 000 s, error and height not negative: what
        // Vivaldi can digest, so a hostile coordinate cannot poison it.
        let bad = |e: crate::coords::WireError| DecodeError::Malformed(e.to_string());
        let mut vec = Vec::with_capacity(dims);
        for _ in 0..dims {
            vec.push(crate::coords::checked(self.f32()?, "vector").map_err(bad)?);
        }
        Ok(Coordinate {
            vec,
            error: crate::coords::checked_non_negative(self.f32()?, "error").map_err(bad)?,
            adjustment: crate::coords::checked(self.f32()?, "adjustment").map_err(bad)?,
            height: crate::coords::checked_non_negative(self.f32()?, "height").map_err(bad)?,
        })
    }

    fn update(&mut self, name: &dyn Fn(u64) -> NodeId) -> Result<Update, DecodeError> {
        let tag = self.u8()?;
        Ok(match tag {
            TAG_ALIVE => {
                let len = usize::from(self.u8()?);
                let id = NodeId::new(self.take(len)?)
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                let incarnation = self.u32_varint("incarnation")?;
                let meta_len = self.len_prefix(MAX_META_BYTES, "member metadata")?;
                let meta = self.take(meta_len)?.to_vec();
                Update::Alive {
                    id,
                    incarnation,
                    meta,
                }
            }
            TAG_SUSPECT | TAG_DEAD => {
                let id = name(self.u64()?);
                let incarnation = self.u32_varint("incarnation")?;
                let from = name(self.u64()?);
                if tag == TAG_SUSPECT {
                    Update::Suspect {
                        id,
                        incarnation,
                        from,
                    }
                } else {
                    Update::Dead {
                        id,
                        incarnation,
                        from,
                    }
                }
            }
            TAG_LEFT => Update::Left {
                id: name(self.u64()?),
                incarnation: self.u32_varint("incarnation")?,
            },
            other => {
                return Err(DecodeError::Malformed(format!(
                    "unknown update tag {other}"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u32) -> NodeId {
        NodeId::synthetic(n)
    }

    /// Resolves the short refs of the first 64 synthetic ids.
    fn known(short: u64) -> Option<NodeId> {
        (0..64).map(id).find(|i| i.short() == short)
    }

    fn round_trip(message: &Message, app: &[Vec<u8>]) -> Decoded {
        let bytes = encode(message, app);
        decode(&bytes, &known).unwrap()
    }

    /// A list's count is checked against what is left after the reader's
    /// position, not against the whole input.
    #[test]
    fn a_list_longer_than_the_bytes_left_is_refused_before_reading_it() {
        let bytes = [0xaa, 0xbb, 3, 1, 2];
        let mut r = Reader {
            bytes: &bytes,
            at: 2,
        };
        match r.count(10, "things") {
            Err(DecodeError::Malformed(why)) => {
                assert_eq!(why, "3 things cannot fit in 2 bytes");
            }
            other => panic!("{other:?}"),
        }
        let fits = [0xaa, 0xbb, 2, 1, 2];
        let mut r = Reader {
            bytes: &fits,
            at: 2,
        };
        assert_eq!(r.count(10, "things").unwrap(), 2);
    }

    #[test]
    fn a_bare_ping_and_ack_are_a_few_bytes() {
        let ping = Message::Ping(Ping {
            seq: 60_000,
            want_coord: false,
            updates: vec![],
        });
        let bytes = encode_message(&ping);
        assert_eq!(bytes.len(), 3, "{bytes:?}");
        assert_eq!(bytes.len(), base_len(&ping));
        assert_eq!(round_trip(&ping, &[]).message, ping);
        let ack = Message::Ack(Ack {
            seq: 5,
            coord: None,
            updates: vec![],
        });
        assert_eq!(encode_message(&ack), vec![KIND_ACK, 0, 5]);
    }

    #[test]
    fn updates_name_members_by_short_ref_and_resolve_them() {
        let suspect = Update::Suspect {
            id: id(3),
            incarnation: 2,
            from: id(4),
        };
        let gossip = Message::Gossip(Gossip {
            updates: vec![suspect.clone()],
        });
        let bytes = encode_message(&gossip);
        assert_eq!(bytes.len(), 1 + 1 + suspect.encoded_len());
        assert_eq!(suspect.encoded_len(), 18);
        assert_eq!(decode(&bytes, &known).unwrap().message, gossip);
        // A receiver that knows neither keeps stand-ins with the same refs.
        let blind = decode(&bytes, &|_| None).unwrap();
        let Message::Gossip(g) = blind.message else {
            panic!()
        };
        assert!(g.updates[0].id().is_unresolved());
        assert_eq!(g.updates[0].id().short(), id(3).short());
    }

    #[test]
    fn alive_carries_the_full_id_and_meta() {
        let alive = Update::Alive {
            id: id(9),
            incarnation: 300,
            meta: vec![1, 2, 3],
        };
        let m = Message::Sync(Sync {
            digest: 42,
            updates: vec![alive.clone()],
            reply: true,
        });
        let bytes = encode_message(&m);
        assert_eq!(bytes.len(), base_len(&m) + 1 + alive.encoded_len());
        assert_eq!(decode(&bytes, &|_| None).unwrap().message, m);
    }

    #[test]
    fn coordinates_travel_as_f32() {
        let coord = Coordinate {
            vec: vec![0.001, -0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.125],
            error: 1.5,
            adjustment: -0.0625,
            height: 0.0001,
        };
        let ack = Message::Ack(Ack {
            seq: 1,
            coord: Some(coord.clone()),
            updates: vec![],
        });
        let bytes = encode_message(&ack);
        assert_eq!(bytes.len(), base_len(&ack));
        assert_eq!(bytes.len(), 3 + 1 + 44);
        let Message::Ack(back) = round_trip(&ack, &[]).message else {
            panic!()
        };
        let back = back.coord.unwrap();
        for (a, b) in back.vec.iter().zip(&coord.vec) {
            assert!((a - b).abs() < 1e-7);
        }
    }

    /// 1 to MAX_DIMENSIONALITY dimensions are read; none or one more are
    /// refused as over the limit.
    #[test]
    fn coordinates_of_one_to_the_most_dimensions_are_read() {
        let ack = |dims: usize| {
            encode_message(&Message::Ack(Ack {
                seq: 1,
                coord: Some(Coordinate {
                    vec: vec![0.25; dims],
                    error: 1.0,
                    adjustment: 0.0,
                    height: 0.0,
                }),
                updates: vec![],
            }))
        };
        for dims in [1, crate::coords::MAX_DIMENSIONALITY] {
            let Message::Ack(back) = decode(&ack(dims), &known).unwrap().message else {
                panic!()
            };
            assert_eq!(back.coord.unwrap().vec.len(), dims);
        }
        // The encoder never writes more (it caps); a peer's bytes may.
        let max = crate::coords::MAX_DIMENSIONALITY;
        let most = ack(max);
        assert_eq!(
            usize::from(most[3]),
            max,
            "the dimension count follows the seq"
        );
        let mut over = most.clone();
        over[3] = max as u8 + 1;
        over.splice(4..4, 0.25f32.to_be_bytes());
        let mut none = most;
        none[3] = 0;
        none.drain(4..4 + 4 * max);
        for (bytes, dims) in [(over, max + 1), (none, 0)] {
            assert!(
                matches!(decode(&bytes, &known), Err(DecodeError::Limit(_))),
                "{dims} dimensions"
            );
        }
    }

    #[test]
    fn coordinates_vivaldi_cannot_digest_are_refused() {
        let ack = |error: f64, x: f64| {
            encode_message(&Message::Ack(Ack {
                seq: 1,
                coord: Some(Coordinate {
                    vec: vec![x; 8],
                    error,
                    adjustment: 0.0,
                    height: 0.0,
                }),
                updates: vec![],
            }))
        };
        assert!(decode(&ack(1.0, 0.5), &known).is_ok());
        for (error, x) in [
            (-1.0, 0.5),
            (1.0, 1e9),
            (1.0, f64::NAN),
            (f64::INFINITY, 0.5),
        ] {
            assert!(
                matches!(
                    decode(&ack(error, x), &known),
                    Err(DecodeError::Malformed(_))
                ),
                "error {error} component {x}"
            );
        }
    }

    #[test]
    fn application_payloads_ride_along() {
        let m = Message::Nack(Nack { seq: 1 });
        let d = round_trip(&m, &[vec![1, 2, 3], vec![]]);
        assert_eq!(d.app, vec![vec![1, 2, 3], vec![]]);
        let too_many: Vec<Vec<u8>> = (0..=MAX_APP_PAYLOADS).map(|_| vec![0]).collect();
        assert!(matches!(
            decode(&encode(&m, &too_many), &known),
            Err(DecodeError::Limit(_))
        ));
    }

    #[test]
    fn trailing_bytes_unknown_kinds_and_reserved_flags_are_rejected() {
        let mut bytes = encode_message(&Message::Nack(Nack { seq: 3 }));
        bytes.push(0);
        assert!(matches!(
            decode(&bytes, &known),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[0x0f, 1], &known),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[0x81, 1], &known),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[KIND_NACK | F_X, 1], &known),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&[], &known),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_input_is_rejected_before_decoding() {
        let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode(&bytes, &known),
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
        assert!(matches!(decode(&bytes, &known), Err(DecodeError::Limit(_))));
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
        assert!(matches!(decode(&bytes, &known), Err(DecodeError::Limit(_))));
    }

    #[test]
    fn hostile_lengths_fail_without_allocating_them() {
        // 2^60 updates claimed in a 12-byte message; a payload of 2^40 bytes.
        let mut huge_list = vec![KIND_GOSSIP | F_UPDATES];
        put_varint(&mut huge_list, 1 << 60);
        assert!(decode(&huge_list, &known).is_err());
        let mut huge_app = vec![KIND_GOSSIP | F_APPS, 1];
        put_varint(&mut huge_app, 1 << 40);
        assert!(decode(&huge_app, &known).is_err());
        // A varint that never ends.
        assert!(
            decode(
                &[
                    KIND_PING, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ],
                &known
            )
            .is_err()
        );
    }

    fn arb_id() -> impl Strategy<Value = NodeId> {
        (0u32..64).prop_map(id)
    }

    fn arb_update() -> impl Strategy<Value = Update> {
        prop_oneof![
            (
                proptest::collection::vec(any::<u8>(), 1..=64)
                    .prop_filter("not a stand-in", |b| b[0] != 0xfe),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(id, incarnation, meta)| Update::Alive {
                    id: NodeId::new(&id).unwrap(),
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
            (any::<u16>(), any::<bool>(), updates()).prop_map(|(seq, want_coord, updates)| {
                Message::Ping(Ping {
                    seq,
                    want_coord,
                    updates,
                })
            }),
            (any::<u16>(), arb_id(), updates()).prop_map(|(seq, target, updates)| {
                Message::PingReq(PingReq {
                    seq,
                    target,
                    updates,
                })
            }),
            (any::<u16>(), updates()).prop_map(|(seq, updates)| Message::Ack(Ack {
                seq,
                coord: None,
                updates
            })),
            any::<u16>().prop_map(|seq| Message::Nack(Nack { seq })),
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
        fn every_message_round_trips_at_its_computed_size(
            message in arb_message(),
            app in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
        ) {
            let bytes = encode(&message, &app);
            let mut expected = base_len(&message);
            if !message.updates().is_empty() {
                expected += varint_len(message.updates().len() as u64)
                    + message.updates().iter().map(Update::encoded_len).sum::<usize>();
            }
            if !app.is_empty() {
                expected += varint_len(app.len() as u64) + app.iter().map(|a| app_len(a)).sum::<usize>();
            }
            prop_assert_eq!(bytes.len(), expected);
            let back = decode(&bytes, &known).unwrap();
            prop_assert_eq!(back.message, message);
            prop_assert_eq!(back.app, app);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &known);
        }

        #[test]
        fn mutated_messages_never_panic(message in arb_message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = encode_message(&message);
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            let _ = decode(&bytes, &known);
        }
    }
}
