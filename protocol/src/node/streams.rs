//! The node's stream exchanges over libp2p: which protocols exist, how a
//! stream is accepted (admission first, frame caps chosen before a byte is
//! read), SWIM messages too large for a datagram, and the map's
//! anti-entropy exchange as a state machine.
//!
//! Map sync (`/baton/sync/2`), started by the node that noticed a
//! difference (a peer's map root, carried on membership anti-entropy, is
//! not its own), the initiator I and the responder R:
//!
//! ```text
//! I -> R  Digest (256 bucket sums)
//! R -> I  Versions of the buckets that differ (16 bytes a session) | finish when none
//! I -> R  Records R lacks or holds older ..., WantIds (what I lacks), finish
//! R -> I  Records I asked for ..., finish
//! ```
//!
//! Two round trips; only sessions that differ travel.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::peers::Session;
use super::{Class, Event, Node, Timer, Transmit};
use crate::NodeId;
use crate::map::{self, SyncMessage};
use crate::peering::{self, Challenge};
use crate::session::Signer;
use crate::swim::State;
use crate::wire;

/// A stream, as the node names it (the driver maps it to a libp2p stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// The stream protocols a node speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// The admission handshake, [`peering::PROTOCOL`].
    Hello,
    /// SWIM messages too large for a datagram (membership tables), one per
    /// frame, one way.
    Swim,
    /// Map anti-entropy.
    Sync,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Hello, Protocol::Swim, Protocol::Sync];

    /// Its libp2p protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Hello => peering::PROTOCOL,
            Protocol::Swim => "/baton/swim/2",
            Protocol::Sync => "/baton/sync/2",
        }
    }
}

/// The largest first frame of a map sync a responder reads: a digest.
const DIGEST_FRAME: usize = map::BUCKETS * 8 + 16;

/// Streams open at once, every kind and peer together.
const MAX_STREAMS: usize = 256;

/// What a stream is doing.
#[derive(Debug)]
pub(super) enum Kind {
    /// A handshake this node started: waiting for the response, then (with
    /// the keys derived, the boot and datagram socket the peer announced)
    /// for `Done`.
    HelloOut {
        nonce: Vec<u8>,
        index: u32,
        keys: Option<(Session, u64, String)>,
    },
    /// A handshake a peer started: waiting for its challenge, then (with
    /// the challenge, this node's nonce and index) for its confirmation.
    HelloIn {
        offer: Option<Box<(Challenge, Vec<u8>, u32)>>,
    },
    /// Large SWIM messages this node sent.
    SwimOut,
    /// Large SWIM messages a peer sends.
    SwimIn,
    /// A map sync this node started; `versions` once the responder's
    /// versions came and this node answered them.
    SyncOut { answered: bool },
    /// A map sync a peer started; `digest` once its digest came.
    SyncIn { digested: bool },
    /// This node finished its part; the peer's end is awaited.
    Done(Class),
}

#[derive(Debug)]
pub(super) struct Stream {
    pub(super) peer: NodeId,
    pub(super) kind: Kind,
    /// A map sync's records of the last session its latest frame named,
    /// held back until the next frame or the end: a session's chain (its
    /// creation, epoch openers and current version) may span two frames,
    /// and the engine must not act on its older half alone.
    pub(super) held: Vec<map::Delta>,
}

/// The most records of one session a sync holds back (see
/// [`Stream::held`]); a longer chain is applied in parts.
const MAX_HELD: usize = 4 * map::MAX_RECORDS_PER_MESSAGE;

impl<S: Signer, R: Rng + SeedableRng> Node<S, R> {
    /// Names a new stream, opens it and arms its deadline.
    pub(super) fn open_stream(
        &mut self,
        now: Instant,
        peer: &NodeId,
        protocol: Protocol,
        addrs: Vec<String>,
        kind: Kind,
    ) -> StreamId {
        let stream = self.new_stream(now, peer, protocol, kind);
        let max_frame = match protocol {
            Protocol::Hello => peering::MAX_HELLO_BYTES,
            Protocol::Swim => 0,
            Protocol::Sync => map::MAX_SYNC_BYTES,
        };
        self.transmits.push_back(Transmit::Open {
            stream,
            peer: peer.clone(),
            protocol,
            addrs,
            max_frame,
        });
        stream
    }

    fn new_stream(
        &mut self,
        now: Instant,
        peer: &NodeId,
        protocol: Protocol,
        kind: Kind,
    ) -> StreamId {
        self.next_stream += 1;
        let stream = StreamId(self.next_stream);
        self.streams.insert(
            stream,
            Stream {
                peer: peer.clone(),
                kind,
                held: Vec::new(),
            },
        );
        let timeout = match protocol {
            Protocol::Hello => self.config.timing.handshake_timeout,
            Protocol::Swim | Protocol::Sync => self.config.timing.stream_timeout,
        };
        self.schedule(now + timeout, Timer::Stream(stream));
        stream
    }

    /// Queues a frame, counting it in the stream's class.
    pub(super) fn send_frame(&mut self, stream: StreamId, bytes: Vec<u8>) {
        if let Some(s) = self.streams.get(&stream) {
            let class = s.kind.class();
            self.stats.sent.entry(class).or_default().add(bytes.len());
        }
        self.transmits.push_back(Transmit::Frame { stream, bytes });
    }

    /// This node's part of a stream is done; the state waits for the
    /// peer's end (or the deadline).
    pub(super) fn finish(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.kind = Kind::Done(s.kind.class());
        }
        self.transmits.push_back(Transmit::Finish { stream });
    }

    /// Aborts a stream and forgets it.
    pub(super) fn reset(&mut self, stream: StreamId) {
        if self.streams.remove(&stream).is_some() {
            self.transmits.push_back(Transmit::Reset { stream });
        }
    }

    fn admitted(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.has_session())
    }

    pub(super) fn accept_stream(
        &mut self,
        now: Instant,
        peer: NodeId,
        protocol: Protocol,
    ) -> Option<(StreamId, usize, usize)> {
        if peer == self.me || self.is_refused(now, &peer) || self.streams.len() >= MAX_STREAMS {
            return None;
        }
        // Admission comes before any frame is read: a stranger may only
        // handshake, and its frames are capped at a hello's size.
        let (kind, first, rest) = match protocol {
            Protocol::Hello => {
                if !self.room_for(now, &peer) {
                    return None;
                }
                self.peers.entry(peer.clone()).or_default().seen = Some(now);
                let cap = peering::MAX_HELLO_BYTES;
                (Kind::HelloIn { offer: None }, cap, cap)
            }
            Protocol::Swim if self.admitted(&peer) => (
                Kind::SwimIn,
                wire::MAX_MESSAGE_BYTES,
                wire::MAX_MESSAGE_BYTES,
            ),
            Protocol::Sync if self.admitted(&peer) => (
                Kind::SyncIn { digested: false },
                DIGEST_FRAME,
                map::MAX_SYNC_BYTES,
            ),
            Protocol::Swim | Protocol::Sync => return None,
        };
        let stream = self.new_stream(now, &peer, protocol, kind);
        Some((stream, first, rest))
    }

    pub(super) fn on_frame(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        let class = s.kind.class();
        self.stats
            .received
            .entry(class)
            .or_default()
            .add(bytes.len());
        match &s.kind {
            Kind::HelloOut { .. } => self.hello_out_frame(now, stream, bytes),
            Kind::HelloIn { .. } => self.hello_in_frame(now, stream, bytes),
            Kind::SwimIn => {
                let peer = s.peer.clone();
                let shorts = &self.shorts;
                match wire::decode(bytes, &|short| shorts.get(&short).cloned()) {
                    Ok(decoded) => self.deliver(now, peer, decoded),
                    Err(_) => {
                        self.stats.drops.undecodable += 1;
                        self.reset(stream);
                    }
                }
            }
            Kind::SyncOut { .. } | Kind::SyncIn { .. } => self.sync_frame(now, stream, bytes),
            // Nothing more is expected on these.
            Kind::SwimOut | Kind::Done(_) => {}
        }
    }

    pub(super) fn on_stream_closed(
        &mut self,
        now: Instant,
        stream: StreamId,
        error: Option<String>,
    ) {
        self.end_sync(now, stream);
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        let peer = s.peer.clone();
        match &s.kind {
            Kind::HelloOut { .. } => {
                let why = error.unwrap_or_else(|| "the peer ended the handshake".into());
                self.handshake_failed(now, stream, &peer, why);
            }
            Kind::SyncOut { answered: true } if error.is_none() => {
                // The responder finished after sending what was asked.
                self.stats.syncs += 1;
                self.streams.remove(&stream);
            }
            Kind::Done(Class::MapSync) if error.is_none() => {
                self.stats.syncs += 1;
                self.streams.remove(&stream);
            }
            _ => {
                self.streams.remove(&stream);
            }
        }
    }

    pub(super) fn stream_deadline(&mut self, now: Instant, stream: StreamId) {
        self.end_sync(now, stream);
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        match &s.kind {
            Kind::HelloOut { .. } => {
                let peer = s.peer.clone();
                self.handshake_failed(now, stream, &peer, "the handshake timed out".into());
            }
            Kind::HelloIn { .. } => {
                let peer = s.peer.clone();
                self.reset(stream);
                self.stats.handshakes_failed += 1;
                self.events.push_back(Event::HandshakeFailed {
                    peer,
                    why: "the peer's handshake timed out".into(),
                });
            }
            _ => self.reset(stream),
        }
    }

    /// Sends one SWIM message too large for a datagram on a stream of its
    /// own (membership tables, rare).
    pub(super) fn send_bulk(&mut self, now: Instant, to: &NodeId, plain: Vec<u8>) {
        if !self.admitted(to) || plain.len() > wire::MAX_MESSAGE_BYTES {
            self.stats.drops.no_session += 1;
            return;
        }
        let addrs = self
            .peers
            .get(to)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        let stream = self.open_stream(now, to, Protocol::Swim, addrs, Kind::SwimOut);
        self.send_frame(stream, plain);
        self.finish(stream);
    }

    /// Starts a map sync with `peer`, unless one runs with it, too many run,
    /// or it is not admitted. Returns whether a sync with `peer` runs now
    /// (started here or already running).
    pub(super) fn start_sync(&mut self, now: Instant, peer: &NodeId) -> bool {
        self.open_sync(now, peer, true)
    }

    /// [`start_sync`](Self::start_sync); `capped` false for the engine's
    /// comparisons, which a restarted node's sessions wait for.
    pub(super) fn open_sync(&mut self, now: Instant, peer: &NodeId, capped: bool) -> bool {
        if self.leaving || !self.admitted(peer) {
            return false;
        }
        let mut running = 0;
        for s in self.streams.values() {
            let sync = matches!(
                s.kind,
                Kind::SyncOut { .. } | Kind::SyncIn { .. } | Kind::Done(Class::MapSync)
            );
            if sync && s.peer == *peer {
                return true;
            }
            if matches!(s.kind, Kind::SyncOut { .. }) {
                running += 1;
            }
        }
        if capped && running >= self.config.timing.max_syncs {
            return false;
        }
        let addrs = self
            .peers
            .get(peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        let stream = self.open_stream(
            now,
            peer,
            Protocol::Sync,
            addrs,
            Kind::SyncOut { answered: false },
        );
        let digest = SyncMessage::Digest(self.engine.map().digest()).encode();
        self.send_frame(stream, digest);
        true
    }

    /// Syncs the map with a few random live members now: a write too large
    /// for a datagram spreads this way.
    pub(super) fn push_sync(&mut self, now: Instant) {
        let mut alive = self.sync_candidates();
        alive.shuffle(&mut self.rng);
        for peer in alive.into_iter().take(self.config.swim.gossip_fanout) {
            let _ = self.start_sync(now, &peer);
        }
    }

    /// The members a map sync may go to (alive and admitted), in a fixed
    /// order, so that a seeded pick among them replays.
    pub(super) fn sync_candidates(&self) -> Vec<NodeId> {
        let mut alive: Vec<NodeId> = self
            .swim
            .members()
            .filter(|m| m.state == State::Alive)
            .map(|m| m.id.clone())
            .filter(|id| self.admitted(id))
            .collect();
        alive.sort_unstable();
        alive
    }

    fn sync_frame(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        // (initiator, past the first round trip)
        let phase = match self.streams.get(&stream).map(|s| &s.kind) {
            Some(Kind::SyncOut { answered }) => (true, *answered),
            Some(Kind::SyncIn { digested }) => (false, *digested),
            _ => return,
        };
        let Ok(message) = SyncMessage::decode(bytes) else {
            self.stats.drops.undecodable += 1;
            self.end_sync(now, stream);
            self.reset(stream);
            return;
        };
        match (phase, message) {
            ((false, false), SyncMessage::Digest(remote)) => {
                let map = self.engine.map();
                let buckets = map.diff(&remote);
                if buckets.is_empty() {
                    self.finish(stream);
                    return;
                }
                let versions = SyncMessage::Versions(map.versions_in(&buckets)).encode();
                self.set_kind(stream, Kind::SyncIn { digested: true });
                self.send_frame(stream, versions);
            }
            ((true, false), SyncMessage::Versions(versions)) => {
                self.set_kind(stream, Kind::SyncOut { answered: true });
                let (send, want) = self.engine.map().reconcile(&versions);
                for message in SyncMessage::records(send) {
                    self.send_frame(stream, message.encode());
                }
                self.send_frame(stream, SyncMessage::WantIds(want).encode());
                self.transmits.push_back(Transmit::Finish { stream });
            }
            ((_, true), SyncMessage::Records(deltas)) => self.on_records(now, stream, deltas),
            ((false, true), SyncMessage::WantIds(ids)) => {
                // The initiator's records have all come.
                self.release_held(now, stream);
                let records = self.engine.map().records_named(&ids);
                for message in SyncMessage::records(records) {
                    self.send_frame(stream, message.encode());
                }
                self.finish(stream);
            }
            _ => {
                self.stats.drops.undecodable += 1;
                self.end_sync(now, stream);
                self.reset(stream);
            }
        }
    }

    /// A frame of a sync's records: what it completes goes to the engine,
    /// in one import; the records of the session it ends on wait for the
    /// next frame, which may continue that session's chain. Found in the
    /// simulator (100 nodes, seed 1, one crash at a time, three backups): a
    /// restarted primary whose first sync brought its session's creation in
    /// one frame and the backup's claim in the next resumed the session in
    /// between, and two nodes started it.
    fn on_records(&mut self, now: Instant, stream: StreamId, deltas: Vec<map::Delta>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.held.extend(deltas);
        let last = s.held.last().map(|d| d.id().to_string());
        let split = match last {
            Some(last) => s
                .held
                .iter()
                .rposition(|d| d.id() != last)
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let tail = s.held.len() - split;
        let ready: Vec<map::Delta> = if tail > MAX_HELD {
            std::mem::take(&mut s.held)
        } else {
            s.held.drain(..split).collect()
        };
        if !ready.is_empty() {
            let now_ms = self.unix_ms(now);
            self.engine.handle_deltas(now, now_ms, ready);
        }
    }

    /// Map comparisons the engine asked for ([`crate::sessions::Action::Compare`]):
    /// a sync with each member (beyond `max_syncs`: sessions wait for
    /// them); one not admitted yet is synced once it is; one this node
    /// cannot reach is reported compared at once.
    pub(super) fn compare_with(&mut self, now: Instant, peers: Vec<NodeId>) {
        for peer in peers {
            if self.open_sync(now, &peer, false) {
                continue;
            }
            let active = self.swim.member(&peer).is_some_and(|m| m.state.is_active());
            let reachable = active && !self.leaving && !self.is_refused(now, &peer);
            if reachable && !self.admitted(&peer) {
                self.compare_wanted.insert(peer.clone());
                self.ensure_session(now, &peer);
            } else {
                self.engine.handle_compared(now, &peer);
            }
        }
    }

    /// A stream ends (closed, reset, timed out): a sync's held records go
    /// to the engine, and the engine learns that the comparison with its
    /// peer is over.
    fn end_sync(&mut self, now: Instant, stream: StreamId) {
        self.release_held(now, stream);
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        if matches!(
            s.kind,
            Kind::SyncOut { .. } | Kind::SyncIn { .. } | Kind::Done(Class::MapSync)
        ) {
            let peer = s.peer.clone();
            self.engine.handle_compared(now, &peer);
        }
    }

    /// Gives the engine what a sync held back (its stream ends).
    fn release_held(&mut self, now: Instant, stream: StreamId) {
        let held = match self.streams.get_mut(&stream) {
            Some(s) if !s.held.is_empty() => std::mem::take(&mut s.held),
            _ => return,
        };
        let now_ms = self.unix_ms(now);
        self.engine.handle_deltas(now, now_ms, held);
    }

    fn set_kind(&mut self, stream: StreamId, kind: Kind) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.kind = kind;
        }
    }
}
