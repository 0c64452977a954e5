//! One Baton node as a sans-IO state machine: SWIM, the session engine and
//! its map, admission and the datagram plane's keys, and the stream
//! exchanges (admission handshake, large SWIM messages, map anti-entropy).
//!
//! Like quinn-proto's `Connection`, a [`Node`] holds no socket and reads no
//! clock. The driver feeds it what arrives — datagrams
//! ([`handle_datagram`](Node::handle_datagram)), stream frames
//! ([`handle_frame`](Node::handle_frame)), connections and discoveries,
//! API commands, client reports, service events, the passing of time — and
//! executes what it asks: [`poll_transmit`](Node::poll_transmit) (datagrams
//! to send, streams to open and write), [`poll_action`](Node::poll_action)
//! (services to start or stop, peers to dial), [`poll_event`](Node::poll_event)
//! (what changed, for views, logs and metrics), and it sleeps until
//! [`poll_timeout`](Node::poll_timeout). Given the same inputs and the same
//! RNG seed, the outputs are the same, byte for byte: the simulator runs
//! thousands of these in virtual time.

mod peers;
mod seen;
mod streams;
#[cfg(test)]
mod tests;
mod warm;

use std::cmp::Ordering;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::NodeId;
use crate::datagram;
use crate::meta::NodeMeta;
use crate::peering::Policy;
use crate::policy::location_key;
use crate::session::{Record, Signer};
use crate::sessions::{self, AppMessage, Engine, OpenError, OpenRequest, Report};
use crate::swim::{self, State, Swim};
use crate::wire::{self, Message};

pub use peers::PeerInfo;
pub use streams::{Protocol, StreamId};
pub use warm::{warm_maps, warm_start, warm_tables};

use peers::{Peer, Pending};
use streams::Stream;

/// Timing of the node's own work (SWIM's and the engine's are in their
/// configs).
#[derive(Debug, Clone)]
pub struct Timing {
    /// An admission handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Any other stream exchange must finish within this.
    pub stream_timeout: Duration,
    /// A refused peer is left alone this long.
    pub refusal_memory: Duration,
    /// A refused peer's connection is closed this long after the refusal,
    /// so that it can finish the handshake and learn why.
    pub refusal_linger: Duration,
    /// First wait before a failed handshake is tried again (doubling).
    pub handshake_backoff: Duration,
    /// Longest wait between handshake attempts.
    pub max_handshake_backoff: Duration,
    /// Handshakes this node runs at once as initiator.
    pub max_handshakes: usize,
    /// A peer that connected to this node and did not start the handshake
    /// within this is challenged by this node instead.
    pub inbound_grace: Duration,
    /// Discovery walks (bootstrap redials, DHT walks) while this node knows
    /// no member.
    pub alone_walk: Duration,
    /// Discovery walks while in a group: they find providers SWIM cannot
    /// know of (another partition, forgotten members), so rarely is enough.
    /// A duty of the group, not of each member: a group of `m` members
    /// walks about `group_walkers` times per `group_walk` in all, each
    /// member every `group_walk * max(1, m / group_walkers)`.
    pub group_walk: Duration,
    /// Walks a group makes per `group_walk`, whatever its size (at least 1).
    pub group_walkers: u32,
    /// Map sync exchanges this node runs at once as initiator.
    pub max_syncs: usize,
    /// SWIM messages held per peer while its handshake runs.
    pub pending_per_peer: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            handshake_timeout: Duration::from_secs(5),
            stream_timeout: Duration::from_secs(30),
            refusal_memory: Duration::from_secs(60),
            refusal_linger: Duration::from_secs(1),
            handshake_backoff: Duration::from_millis(500),
            max_handshake_backoff: Duration::from_secs(30),
            max_handshakes: 16,
            inbound_grace: Duration::from_secs(2),
            alone_walk: Duration::from_secs(10),
            group_walk: Duration::from_secs(600),
            group_walkers: 1,
            max_syncs: 2,
            pending_per_peer: 8,
        }
    }
}

/// What a node is made of.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's (cluster's) name.
    pub name: String,
    /// Who may join, the overlay's name and key.
    pub policy: Policy,
    /// Sessions this node will host.
    pub capacity: u32,
    /// SWIM parameters.
    pub swim: swim::Config,
    /// Session engine parameters.
    pub sessions: sessions::Config,
    /// This node's datagram socket as announced to peers (an unspecified ip
    /// means "the address my connections come from").
    pub datagram: Option<SocketAddr>,
    /// Bootstrap addresses (multiaddrs, opaque here), dialled while alone.
    pub bootstrap: Vec<String>,
    /// The node's own timing.
    pub timing: Timing,
    /// Which clients sessions may stream to.
    pub clients: ClientPolicy,
    /// A digest of the service configuration ([`NodeMeta::services`]), 0
    /// when not known.
    pub services: u64,
    /// The operator's tags, announced in the metadata (within the caps of
    /// [`crate::meta::check_tags`]; others are left out).
    pub tags: crate::meta::Tags,
}

/// What may change while a node runs ([`Node::handle_reconfigure`]): the
/// rest of [`Config`] is fixed at start (the overlay, its key, the node's
/// name and capacity, SWIM's timing, the map's parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct Reconfigure {
    /// Peers admitted; `None` admits any.
    pub allowlist: Option<std::collections::BTreeSet<NodeId>>,
    /// Most members admitted.
    pub max_members: usize,
    /// Which clients sessions may stream to (new sessions; running ones
    /// keep their client).
    pub clients: ClientPolicy,
    /// Placement and transfer thresholds.
    pub placement: crate::policy::Config,
    /// How sessions' first backups stand by (new placements).
    pub standby: sessions::Standby,
    /// Sessions older than this are closed.
    pub max_lifetime: Option<Duration>,
    /// The tags to announce (checked as [`Node::set_tags`] does: tags
    /// beyond the caps leave the announced ones as they are).
    pub tags: crate::meta::Tags,
    /// The digest of the service configuration
    /// ([`Node::handle_services_changed`]).
    pub services: u64,
}

/// Which client addresses a session may stream to: a stream is sent where a
/// caller says, so the node refuses addresses where it would hurt others
/// (reflection, amplification) or cannot be a client at all.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPolicy {
    /// When not empty, clients must be in one of these networks (address,
    /// prefix length).
    pub allowed: Vec<(IpAddr, u8)>,
    /// Active sessions one client IP address may have.
    pub max_per_ip: usize,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            allowed: Vec::new(),
            max_per_ip: 16,
        }
    }
}

impl ClientPolicy {
    /// Checks a client address; the error says why it is refused.
    pub fn check(&self, addr: &SocketAddr) -> Result<(), String> {
        let ip = addr.ip();
        if addr.port() == 0 {
            return Err(format!("client {addr}: port 0 is no client's port"));
        }
        if let Some(kind) = unfit(ip) {
            return Err(format!(
                "client {addr} is {kind}: a session streams to one client's unicast address"
            ));
        }
        if !self.allowed.is_empty()
            && !self
                .allowed
                .iter()
                .any(|(net, prefix)| sessions::in_network(ip, *net, *prefix))
        {
            return Err(format!(
                "client {addr} is outside the networks this node serves ([services] allowed_clients)"
            ));
        }
        Ok(())
    }
}

/// Why an IP address cannot be a session's client, if it cannot.
fn unfit(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_multicast() {
                Some("a multicast address")
            } else if v4.is_broadcast() || o[3] == 255 {
                Some("a broadcast address")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 0 || o[0] >= 240 {
                Some("a reserved address")
            } else if v4.is_documentation() {
                Some("a documentation address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("a documentation address")
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                unfit(IpAddr::V4(v4))
            } else {
                None
            }
        }
    }
}

/// Something the driver must send or open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A sealed datagram for a peer's datagram socket.
    Datagram {
        /// The peer's socket.
        to: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
        /// The peer answered within [`CONFIRM_WINDOW`]: the driver may tell
        /// the link layer that it is reachable (Linux `MSG_CONFIRM`), which
        /// spares an ARP or neighbour probe per peer every half minute on a
        /// flat LAN, where every member is a neighbour.
        confirm: bool,
    },
    /// Open a stream of `protocol` to `peer` (dialling it at `addrs` if it
    /// is not connected). Frames from it are read through `max_frame` and
    /// handed to [`Node::handle_frame`]; its end or failure to
    /// [`Node::handle_stream_closed`].
    Open {
        /// The stream, as the node names it.
        stream: StreamId,
        /// The peer.
        peer: NodeId,
        /// Its protocol.
        protocol: Protocol,
        /// Where the peer may be dialled, if it is not connected.
        addrs: Vec<String>,
        /// The largest frame to read from it.
        max_frame: usize,
    },
    /// Write one length-prefixed frame on a stream.
    Frame {
        /// The stream.
        stream: StreamId,
        /// The frame's bytes.
        bytes: Vec<u8>,
    },
    /// Close the writing half of a stream after its last frame.
    Finish {
        /// The stream.
        stream: StreamId,
    },
    /// Abort a stream (reading and writing).
    Reset {
        /// The stream.
        stream: StreamId,
    },
}

/// Something the driver must do that is not a transmission.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start hosting this session: this node is its primary now (promoting
    /// its warm instance if it has one).
    Start(Box<Record>),
    /// Start the session's service in warm standby: running, sending
    /// nothing, until a `Start` promotes it or a `Stop` ends it.
    Warm(Box<Record>),
    /// Stop hosting the session `id`.
    Stop {
        /// The session.
        id: String,
        /// Why (moved, closed, lost a concurrent claim).
        reason: String,
    },
    /// Stop sending the session's stream for now (its client gave no
    /// consent), keeping the instance.
    Pause {
        /// The session.
        id: String,
    },
    /// Send the session's stream again.
    Resume {
        /// The session.
        id: String,
    },
    /// Make a libp2p connection to a discovered peer (`peer` is `None` for
    /// a bootstrap address without a peer id).
    Dial {
        /// The peer, if known.
        peer: Option<NodeId>,
        /// Where.
        addrs: Vec<String>,
    },
    /// Close every connection to `peer`.
    Disconnect {
        /// The peer.
        peer: NodeId,
    },
    /// Walk the DHT for providers of the overlay (and refresh the routing
    /// table).
    Walk,
}

/// What changed, for views, logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A membership event from SWIM.
    Member(swim::Event),
    /// A peer was admitted (its datagram keys are in place).
    Admitted {
        /// The peer.
        peer: NodeId,
    },
    /// This node refused a peer.
    Refused {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// A peer refused this node, and said why.
    RefusedBy {
        /// The peer.
        peer: NodeId,
        /// Its reason.
        reason: String,
    },
    /// A handshake with a peer failed (timeout, broken stream, nonsense).
    HandshakeFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        why: String,
    },
    /// A session's record changed in the map (new, newer version, closed).
    SessionChanged {
        /// The session.
        id: String,
    },
    /// This node started hosting a session.
    SessionStarted {
        /// The session.
        id: String,
        /// Its epoch.
        epoch: u64,
        /// Why it is here (`open`, `takeover: ...`, `transfer: ...`).
        reason: String,
    },
    /// A member announces a service configuration other than this node's
    /// (see [`NodeMeta::services`]): told once when it is first seen so, and
    /// again when its configuration changes.
    ServicesDiffer {
        /// The member.
        peer: NodeId,
        /// This node's digest.
        ours: u64,
        /// The member's.
        theirs: u64,
    },
    /// Two live processes claim one peer id (a copied identity): `peer` is
    /// this node itself or another. Both processes take sessions and answer
    /// probes, so clients may get two senders: an operator must stop one.
    DuplicateIdentity {
        /// The peer id claimed twice.
        peer: NodeId,
        /// What gave it away.
        detail: String,
    },
    /// This node hears nothing from the overlay (`fenced`: it stopped
    /// serving and writes nothing), or hears it again.
    Fenced {
        /// Whether it is fenced now.
        fenced: bool,
    },
    /// A session's service failed on this node.
    SessionFailed {
        /// The session.
        id: String,
        /// Why.
        why: String,
        /// The node it was handed to, if any (else it was closed, or it was
        /// only a warm standby).
        moved_to: Option<NodeId>,
    },
    /// A hosted session's stream paused for want of the client's consent.
    SessionPaused {
        /// The session.
        id: String,
        /// Why.
        reason: String,
    },
    /// A paused stream goes on: the client consented again.
    SessionResumed {
        /// The session.
        id: String,
    },
    /// This node stopped hosting a session.
    SessionStopped {
        /// The session.
        id: String,
        /// Its epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
}

/// What a close did.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// This node is the primary and closed it (or it was closed already):
    /// the tombstone.
    Here(Box<Record>),
    /// Another node is the primary: the request went to it.
    Forwarded {
        /// The primary.
        primary: NodeId,
    },
}

/// Why a command of the API failed; the driver maps it to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The request is malformed (400).
    Invalid(String),
    /// No such session here (404).
    NotFound(String),
    /// The session is hosted elsewhere: ask its primary (409).
    NotPrimary {
        /// The session.
        id: String,
        /// Its primary.
        primary: NodeId,
    },
    /// The request conflicts with the session's state (409).
    Conflict(String),
    /// No node can host it now (503).
    Unavailable(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Invalid(why)
            | CommandError::NotFound(why)
            | CommandError::Conflict(why)
            | CommandError::Unavailable(why) => f.write_str(why),
            CommandError::NotPrimary { id, primary } => write!(
                f,
                "this node is not the primary of session {id}: its primary is {primary}"
            ),
        }
    }
}

impl std::error::Error for CommandError {}

/// Traffic of one class, in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Datagrams or frames.
    pub packets: u64,
    /// Their bytes (sealed datagrams; frame payloads).
    pub bytes: u64,
}

impl Flow {
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// The classes traffic is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// SWIM probes and their answers (ping, ping-req, ack, nack).
    Probe,
    /// Membership gossip and anti-entropy offers on datagrams.
    Gossip,
    /// Session-map deltas and performance summaries on datagrams.
    Deltas,
    /// Admission handshakes (`/baton/hello/2`).
    Admission,
    /// SWIM messages too large for a datagram (`/baton/swim/2`).
    SwimBulk,
    /// Map anti-entropy (`/baton/sync/2`).
    MapSync,
}

impl Class {
    /// Every class, in order.
    pub const ALL: [Class; 6] = [
        Class::Probe,
        Class::Gossip,
        Class::Deltas,
        Class::Admission,
        Class::SwimBulk,
        Class::MapSync,
    ];

    /// Its name in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Probe => "probe",
            Class::Gossip => "gossip",
            Class::Deltas => "deltas",
            Class::Admission => "admission",
            Class::SwimBulk => "swim_bulk",
            Class::MapSync => "map_sync",
        }
    }
}

/// Why datagrams were dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Too short or too long to be a datagram.
    pub bad_size: u64,
    /// Addressed to a key index this node does not hold (a stranger, or a
    /// key of a previous process).
    pub unknown_key: u64,
    /// Replayed, or too old for the window.
    pub replayed: u64,
    /// The tag did not verify.
    pub bad_tag: u64,
    /// Authentic, but not a message this version reads.
    pub undecodable: u64,
    /// Messages for a peer without keys that could not wait.
    pub no_session: u64,
}

/// Counters of a node, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sent, by class.
    pub sent: BTreeMap<Class, Flow>,
    /// Received, by class.
    pub received: BTreeMap<Class, Flow>,
    /// Dropped datagrams.
    pub drops: Drops,
    /// Handshakes that ended with keys.
    pub handshakes: u64,
    /// Handshakes that failed (not refusals).
    pub handshakes_failed: u64,
    /// Peers this node refused.
    pub refusals: u64,
    /// Times a peer refused this node.
    pub refused_by: u64,
    /// Map sync exchanges completed.
    pub syncs: u64,
    /// Map syncs started because a down member's sessions still named it
    /// primary here a while after it went down (claims gossip missed).
    pub claim_pulls: u64,
    /// Map syncs started because a peer's delta cited history this node
    /// lacks (see [`UNLINKED_PULL_EVERY`]).
    pub unlinked_pulls: u64,
    /// Application payloads that could not be decoded.
    pub bad_payloads: u64,
    /// Copies of session-map deltas dropped unread: their bytes were taken
    /// in before (see `seen.rs`).
    pub duplicate_deltas: u64,
    /// Discovery walks this node asked for (`Action::Walk`).
    pub walks: u64,
}

/// Timers are data: each names what it is about, and one whose reason is
/// gone does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    /// A stream's exchange must have ended.
    Stream(StreamId),
    /// Time for a discovery walk.
    Walk,
    /// Close the connections of a refused peer.
    Disconnect(NodeId),
    /// A peer connected and did not start the handshake: start one.
    InboundGrace(NodeId),
    /// A handshake may be tried again.
    Retry(NodeId),
    /// Look for members whose keys may be void (see [`REKEY_AFTER`]).
    Rekey,
    /// A member this node holds dead or departed led sessions when it went:
    /// if the map still names it, the claim has not reached this node yet
    /// (the `n`th look; see [`CLAIM_CHECK`]).
    ClaimCheck(NodeId, u8, u32),
    /// A delta of session `1` from peer `0` cited history this node lacks:
    /// if it still waits, pull the map from that peer (see
    /// [`HISTORY_CHECK`]).
    HistoryCheck(NodeId, String),
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    order: u64,
    timer: Timer,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: the heap pops the earliest, first-scheduled timer.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Debug, Clone)]
struct Refused {
    until: Instant,
    reason: String,
}

/// A live member this node has keys with, that answered none of its last
/// [`REKEY_UNANSWERED`] probes and nothing else for this long, gets a new
/// handshake: its process may hold other keys (it restarted and the news
/// has not come, or another process took its identity). A dead one does
/// not; one that merely was not probed lately (members are probed once per
/// round of N) does not either.
pub const REKEY_AFTER: Duration = Duration::from_secs(5);

/// Probes unanswered in a row before keys are suspected void.
pub const REKEY_UNANSWERED: u32 = 3;

/// A peer heard from this recently is known reachable (see
/// [`Transmit::Datagram::confirm`]).
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(5);

/// At most this many refused peers are remembered (the oldest go first),
/// each for `refusal_memory`.
pub const MAX_REFUSED: usize = 1024;
/// At most this many peers that are not members are tracked (discovered,
/// connected, handshaking).
pub const MAX_STRANGERS: usize = 1024;
/// A stranger not admitted this long after it was last named (by
/// discovery, a connection or a stream) gives its place to a new one when
/// the table is full: names that never answered, and connections under
/// fresh ids that never complete a handshake, do not keep real peers out.
pub const STRANGER_TTL: Duration = Duration::from_secs(30);

/// The map behind `Node`'s `indices` field (see there why a hash map).
type Indices = HashMap<u32, NodeId, BuildHasherDefault<DefaultHasher>>;

/// One Baton node. `S` signs session records; `R` is the node's seeded RNG
/// (SWIM's is derived from it).
#[derive(Debug)]
pub struct Node<S, R> {
    me: NodeId,
    config: Config,
    boot: u64,
    rng: R,
    swim: Swim<R>,
    engine: Engine<S>,
    meta: NodeMeta,
    /// When `now` was `base.0`, the wall clock said `base.1` (Unix ms):
    /// record timestamps derive from `now` and this anchor.
    base: (Instant, u64),
    peers: BTreeMap<NodeId, Peer>,
    /// This node's receive key indices, to the peer each belongs to: the
    /// lookup of every datagram received. A hash map with a fixed hasher
    /// (SipHash with zero keys), looked up and never iterated, so its order
    /// decides nothing; the indices are this node's own random draws, so
    /// no peer chooses what collides. (A `BTreeMap` here cost 6% of the
    /// simulator's time at N = 1000 in cache misses.)
    indices: Indices,
    refused: BTreeMap<NodeId, Refused>,
    /// Peers whose probes went unanswered [`REKEY_UNANSWERED`] times in a
    /// row since they were last heard: a superset of those the rekey check
    /// must look at (entries are dropped there once heard again), so that
    /// the check costs what is stale, not one look at every peer a second.
    unanswered: BTreeSet<NodeId>,
    /// Short refs of every member known, for decoding compact messages.
    shorts: BTreeMap<u64, NodeId>,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: u64,
    timers: BinaryHeap<Scheduled>,
    timer_order: u64,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    leaving: bool,
    /// A foreign process announcing this node's id: its boot number and the
    /// highest incarnation it announced.
    impostor: Option<(u64, u32)>,
    /// Carriers of deltas citing unknown history with a look scheduled.
    history_checks: BTreeSet<NodeId>,
    /// When each carrier was last pulled from for such a delta (entries
    /// older than [`UNLINKED_PULL_EVERY`] are pruned).
    history_pulls: BTreeMap<NodeId, Instant>,
    /// Members the engine asked to compare maps with
    /// ([`sessions::Action::Compare`]) that are not admitted yet: synced
    /// once they are.
    compare_wanted: BTreeSet<NodeId>,
    stats: Stats,
    /// Deltas taken in, so that their copies are dropped unread.
    seen_deltas: seen::Seen,
}

impl<S: Signer, R: Rng + SeedableRng> Node<S, R> {
    /// A node alone in its overlay. `now` and `unix_ms` are the same
    /// moment on the monotonic and the wall clock.
    pub fn new(config: Config, signer: S, mut rng: R, now: Instant, unix_ms: u64) -> Self {
        let me = signer.id().clone();
        let boot = rng.random::<u64>();
        let meta = NodeMeta {
            name: config.name.clone(),
            overlay: config.policy.overlay.clone(),
            addrs: Vec::new(),
            capacity: config.capacity,
            load: 0,
            datagram: config.datagram.map(|a| a.to_string()).unwrap_or_default(),
            boot,
            services: config.services,
            tags: checked_tags(&config.tags),
        };
        let swim_rng = R::from_rng(&mut rng);
        let mut swim = Swim::new(
            me.clone(),
            meta.encode(),
            config.swim.clone(),
            swim_rng,
            now,
        );
        swim.set_wall_clock(now, Duration::from_millis(unix_ms));
        let mut engine = Engine::new(
            signer,
            config.capacity,
            config.sessions.clone(),
            now,
            unix_ms,
        );
        engine.set_tags(meta.tags.clone());
        let mut shorts = BTreeMap::new();
        shorts.insert(me.short(), me.clone());
        let mut node = Node {
            me,
            config,
            boot,
            rng,
            swim,
            engine,
            meta,
            base: (now, unix_ms),
            peers: BTreeMap::new(),
            indices: Indices::default(),
            refused: BTreeMap::new(),
            unanswered: BTreeSet::new(),
            shorts,
            streams: BTreeMap::new(),
            next_stream: 0,
            timers: BinaryHeap::new(),
            timer_order: 0,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            leaving: false,
            impostor: None,
            history_checks: BTreeSet::new(),
            history_pulls: BTreeMap::new(),
            compare_wanted: BTreeSet::new(),
            stats: Stats::default(),
            seen_deltas: seen::Seen::default(),
        };
        node.schedule(now, Timer::Walk);
        node.schedule(now + REKEY_AFTER, Timer::Rekey);
        node
    }

    // ---- queries ----

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.me
    }

    /// The random number this process drew at start.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// The membership state machine.
    pub fn swim(&self) -> &Swim<R> {
        &self.swim
    }

    /// The session engine (and its map).
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// This node's metadata as announced.
    pub fn meta(&self) -> &NodeMeta {
        &self.meta
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this node knows of a peer's admission and keys.
    pub fn peer(&self, id: &NodeId) -> Option<PeerInfo> {
        let refused = self.refused.get(id).map(|r| r.reason.clone());
        match self.peers.get(id) {
            Some(p) => Some(p.info(refused)),
            None => refused.map(PeerInfo::refused),
        }
    }

    /// Every peer this node tracks (members, strangers, refused), by id.
    pub fn peers(&self) -> Vec<(NodeId, PeerInfo)> {
        let mut ids: Vec<&NodeId> = self.peers.keys().chain(self.refused.keys()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| Some((id.clone(), self.peer(id)?)))
            .collect()
    }

    /// Whether `leave` was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Re-reads the wall clock: at `now` it says `unix_ms`. Numbers the
    /// shared probe schedule's periods (so that a clock stepped by NTP is
    /// followed); record timestamps keep the anchor given at start, which
    /// keeps them monotonic.
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.swim
            .set_wall_clock(now, Duration::from_millis(unix_ms));
    }

    /// Wall-clock time (Unix ms) at `now`, from the anchor given at start.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let (base, base_ms) = self.base;
        let since = now.saturating_duration_since(base).as_millis();
        base_ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    // ---- outputs ----

    /// The next thing to send. Call after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next action. Call after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event. Call after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    /// Changes after every `handle_*` call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.swim.poll_timeout(),
            self.engine.poll_timeout(),
            self.timers.peek().map(|s| s.at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- inputs ----

    /// Time has passed. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.swim.handle_timeout(now);
        let now_ms = self.unix_ms(now);
        self.engine.handle_timeout(now, now_ms);
        while let Some(next) = self.timers.peek() {
            if next.at > now {
                break;
            }
            let Some(Scheduled { timer, .. }) = self.timers.pop() else {
                break;
            };
            self.fire(now, timer);
        }
        self.pump(now);
    }

    /// The libp2p addresses this node listens on changed: they go into its
    /// metadata (announced with a new incarnation).
    pub fn set_listen_addrs(&mut self, now: Instant, addrs: Vec<String>) {
        if addrs == self.meta.addrs {
            return;
        }
        self.meta.addrs = addrs;
        self.announce(now);
        self.pump(now);
    }

    /// Replaces this node's tags: they go into its metadata (announced with
    /// a new incarnation) and placement. Tags beyond the caps of
    /// [`crate::meta::check_tags`] are refused with the reason, and nothing
    /// changes.
    pub fn set_tags(&mut self, now: Instant, tags: crate::meta::Tags) -> Result<(), String> {
        crate::meta::check_tags(&tags)?;
        if tags == self.meta.tags {
            return Ok(());
        }
        self.engine.set_tags(tags.clone());
        self.meta.tags = tags;
        self.announce(now);
        self.pump(now);
        Ok(())
    }

    /// Leaves the overlay gracefully: SWIM tells a few members; keep driving
    /// the node for a moment so that the news goes out.
    pub fn leave(&mut self, now: Instant) {
        self.leaving = true;
        self.swim.leave(now);
        self.pump(now);
    }

    /// A datagram arrived on this node's datagram socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(plain) = self.open_datagram(now, from, bytes) else {
            return;
        };
        let (peer, plain) = plain;
        let shorts = &self.shorts;
        let decoded = match wire::decode(&plain, &|s| shorts.get(&s).cloned()) {
            Ok(d) => d,
            Err(_) => {
                self.stats.drops.undecodable += 1;
                return;
            }
        };
        let class = classify(&decoded.message, !decoded.app.is_empty());
        self.stats
            .received
            .entry(class)
            .or_default()
            .add(bytes.len());
        self.deliver(now, peer, decoded);
        self.pump(now);
    }

    /// Discovery (mDNS, the DHT) proposes a peer at `addrs`: it is dialled
    /// unless it is this node, refused, or already reachable by datagram.
    pub fn handle_discovered(&mut self, now: Instant, peer: NodeId, addrs: Vec<String>) {
        if peer == self.me || self.is_refused(now, &peer) || self.leaving {
            return;
        }
        if self.peers.get(&peer).is_some_and(Peer::has_session) {
            return;
        }
        if !self.room_for(now, &peer) {
            return;
        }
        let p = self.peers.entry(peer.clone()).or_default();
        p.seen = Some(now);
        for a in &addrs {
            if !p.addrs.contains(a) && p.addrs.len() < 8 {
                p.addrs.push(a.clone());
            }
        }
        if p.handshake.is_some() || p.connected {
            return;
        }
        self.actions.push_back(Action::Dial {
            peer: Some(peer),
            addrs,
        });
    }

    /// A libp2p connection to `peer` is up; `remote` is its IP address,
    /// `outbound` whether this node dialled it. The dialler starts the
    /// handshake; the other side waits a moment, then starts one itself.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        peer: NodeId,
        remote: Option<IpAddr>,
        outbound: bool,
    ) {
        if peer == self.me {
            return;
        }
        if self.is_refused(now, &peer) {
            self.actions.push_back(Action::Disconnect { peer });
            return;
        }
        if !self.room_for(now, &peer) {
            self.actions.push_back(Action::Disconnect { peer });
            return;
        }
        let p = self.peers.entry(peer.clone()).or_default();
        p.seen = Some(now);
        p.connected = true;
        if remote.is_some() {
            p.remote_ip = remote;
        }
        if p.has_session() || p.handshake.is_some() {
            return;
        }
        if outbound {
            self.start_handshake(now, &peer);
        } else {
            let at = now + self.config.timing.inbound_grace;
            self.schedule(at, Timer::InboundGrace(peer));
        }
        self.pump(now);
    }

    /// Every libp2p connection to `peer` is closed.
    pub fn handle_disconnected(&mut self, now: Instant, peer: NodeId) {
        let _ = now;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connected = false;
        }
        self.prune_stranger(&peer);
    }

    /// A peer opened a stream of `protocol`. Returns the stream's id and the
    /// largest first frame and later frames to read, or `None`: reset the
    /// stream without reading (refused or unknown peers, too many streams).
    pub fn handle_stream_accepted(
        &mut self,
        now: Instant,
        peer: NodeId,
        protocol: Protocol,
    ) -> Option<(StreamId, usize, usize)> {
        self.accept_stream(now, peer, protocol)
    }

    /// A frame arrived on a stream.
    pub fn handle_frame(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        self.on_frame(now, stream, bytes);
        self.pump(now);
    }

    /// A stream ended: the peer finished it, it broke, or it could not be
    /// opened (`error` says why).
    pub fn handle_stream_closed(&mut self, now: Instant, stream: StreamId, error: Option<String>) {
        self.on_stream_closed(now, stream, error);
        self.pump(now);
    }

    /// Opens a session for `client` (an `ip:port` UDP address); the policy
    /// picks its primary among the live members and this node. Returns the
    /// record as written.
    pub fn open(
        &mut self,
        now: Instant,
        service: String,
        client: String,
        params: BTreeMap<String, String>,
    ) -> Result<Record, CommandError> {
        let addr: SocketAddr = client.parse().map_err(|_| {
            CommandError::Invalid(format!(
                "client {client:?} is not an address such as 127.0.0.1:5004"
            ))
        })?;
        self.config
            .clients
            .check(&addr)
            .map_err(CommandError::Invalid)?;
        let same_ip = self
            .engine
            .map()
            .active()
            .filter(|r| {
                r.client
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| a.ip() == addr.ip())
            })
            .count();
        if same_ip >= self.config.clients.max_per_ip {
            return Err(CommandError::Unavailable(format!(
                "client {} has {same_ip} sessions already, the most one address may have \
                 ([services] max_sessions_per_client)",
                addr.ip()
            )));
        }
        if self.leaving {
            return Err(CommandError::Unavailable(
                "this node is leaving the overlay: open the session on another node".into(),
            ));
        }
        if self.engine.is_fenced() {
            return Err(CommandError::Unavailable(
                "this node hears nothing from the overlay (its links may be cut): \
                 open the session on another node"
                    .into(),
            ));
        }
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let request = OpenRequest {
            id,
            service,
            params,
            client,
            location: location_key(&addr),
        };
        let now_ms = self.unix_ms(now);
        let record = self
            .engine
            .open(now, now_ms, request)
            .map_err(|e| match e {
                OpenError::NoCapacity => CommandError::Unavailable(e.to_string()),
                OpenError::Write(w) => CommandError::Invalid(w.to_string()),
            })?;
        self.pump(now);
        Ok(record)
    }

    /// Closes a session this node is primary of.
    pub fn close(&mut self, now: Instant, id: &str) -> Result<Closed, CommandError> {
        let record =
            self.engine.map().get(id).ok_or_else(|| {
                CommandError::NotFound(format!("no session {id:?} is known here"))
            })?;
        if record.state == crate::session::SessionState::Closed {
            return Ok(Closed::Here(Box::new(record.clone())));
        }
        if record.primary != self.me {
            // Any node takes the request; the primary carries it out.
            let primary = record.primary.clone();
            self.unicast(now, &primary, AppMessage::Close { id: id.to_string() });
            self.pump(now);
            return Ok(Closed::Forwarded { primary });
        }
        let now_ms = self.unix_ms(now);
        let record = self
            .engine
            .close(now, now_ms, id)
            .map_err(|e| CommandError::Conflict(e.to_string()))?;
        self.pump(now);
        Ok(Closed::Here(Box::new(record)))
    }

    /// A client's report on a session (from RTCP, or from the API).
    /// Answers where the report went: `None` when this node hosts the
    /// session, else the primary it was forwarded to.
    pub fn report(
        &mut self,
        now: Instant,
        id: &str,
        report: Report,
    ) -> Result<Option<NodeId>, CommandError> {
        let Some(record) = self.engine.map().get(id) else {
            return Err(CommandError::NotFound(format!(
                "no session {id:?} is known here"
            )));
        };
        if record.state == crate::session::SessionState::Closed {
            return Err(CommandError::Conflict(format!("session {id} is closed")));
        }
        let primary = record.primary.clone();
        if primary == self.me {
            self.engine.report(now, id, report);
            self.pump(now);
            return Ok(None);
        }
        self.unicast(now, &primary, AppMessage::report(id, &report));
        self.pump(now);
        Ok(Some(primary))
    }

    /// Sends one application message to one member, on a datagram.
    fn unicast(&mut self, now: Instant, to: &NodeId, message: AppMessage) {
        let gossip = Message::Gossip(wire::Gossip {
            updates: Vec::new(),
        });
        let plain = wire::encode(&gossip, &[message.encode()]);
        if plain.len() > datagram::MAX_PLAINTEXT {
            return;
        }
        self.send_datagram(now, to, plain, Class::Deltas, None);
    }

    /// The service instance of session `id` started here has sent its
    /// first packet. A handover to this node is confirmed then, not at the
    /// [`Action::Start`], so that the old primary keeps sending until the
    /// client hears this one (make-before-break); unsignalled, it is
    /// confirmed after half the handover timeout.
    pub fn handle_service_started(&mut self, now: Instant, id: &str) {
        let now_ms = self.unix_ms(now);
        self.engine.handle_started(now_ms, id);
        self.pump(now);
    }

    /// The service instance of session `id` failed here (it would not
    /// start, or gave up after quick restarts): the session moves to its
    /// next live backup, or is closed when none is left.
    pub fn handle_service_failed(&mut self, now: Instant, id: &str, why: &str) {
        let now_ms = self.unix_ms(now);
        let moved = self.engine.service_failed(now, now_ms, id, why);
        self.events.push_back(Event::SessionFailed {
            id: id.to_string(),
            why: why.to_string(),
            moved_to: moved,
        });
        self.pump(now);
    }

    /// The operator changed the configuration of the running node (a
    /// reload): who may join, which clients sessions serve, and the session
    /// policy values that are safe to change, all at once. Peers the new
    /// allowlist leaves out are refused as at a handshake (their keys
    /// dropped, their connections closed, [`Event::Refused`]), so they
    /// stop being members; peers refused earlier for not being on the
    /// allowlist and now on it are forgotten, so that their next connection
    /// is admitted. A lower `max_members` applies to admissions from now on.
    /// Returns the peers refused.
    pub fn handle_reconfigure(&mut self, now: Instant, update: Reconfigure) -> Vec<NodeId> {
        let Reconfigure {
            allowlist,
            max_members,
            clients,
            placement,
            standby,
            max_lifetime,
            tags,
            services,
        } = update;
        self.config.policy.allowlist = allowlist;
        self.config.policy.max_members = max_members;
        self.config.clients = clients;
        self.config.sessions.policy = placement.clone();
        self.config.sessions.standby = standby;
        self.config.sessions.max_lifetime = max_lifetime;
        self.engine.reconfigure(placement, standby, max_lifetime);
        let refused = self.apply_allowlist(now);
        // Tags the daemon checked already; a library caller's bad ones keep
        // what is announced.
        let _ = self.set_tags(now, tags);
        self.handle_services_changed(now, services);
        self.pump(now);
        refused
    }

    // ---- internals ----

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timer_order += 1;
        self.timers.push(Scheduled {
            at,
            order: self.timer_order,
            timer,
        });
    }

    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Stream(stream) => self.stream_deadline(now, stream),
            Timer::Walk => {
                // The timer comes every `alone_walk` (jittered); in a group
                // it walks with the chance that makes its rate one per
                // `walk_interval`, decided afresh each time, so a group that
                // shrinks (a partition, the others dead) walks more at once.
                let active = self.swim.num_active();
                let timing = &self.config.timing;
                let chance = timing.alone_walk.as_secs_f64()
                    / walk_interval(timing, active).as_secs_f64().max(1e-9);
                let walk = chance >= 1.0 || self.rng.random_bool(chance);
                if !self.leaving && walk {
                    if active == 0 {
                        for addr in self.config.bootstrap.clone() {
                            self.actions.push_back(Action::Dial {
                                peer: None,
                                addrs: vec![addr],
                            });
                        }
                    }
                    self.actions.push_back(Action::Walk);
                    self.stats.walks += 1;
                }
                // Floored: a zero alone_walk must not make the timer spin.
                let every = self
                    .config
                    .timing
                    .alone_walk
                    .max(Duration::from_millis(100));
                let at = now + every.mul_f64(self.rng.random_range(0.75..1.25));
                self.schedule(at, Timer::Walk);
            }
            Timer::Disconnect(peer) => {
                if self.refused.contains_key(&peer) {
                    self.actions.push_back(Action::Disconnect { peer });
                }
            }
            Timer::ClaimCheck(down, n, vouched) => {
                // Whether or not `down` looks alive again here: a death
                // about an older incarnation gives way to a newer `Alive`
                // rumour that this node had missed (the crashed member is
                // a zombie in its view until someone declares the newer
                // incarnation dead), yet the backups that saw the death
                // claimed. Simulator, 1000 nodes, seed 3: ten nodes whose
                // checks stopped on that learnt the claim 0.7-1.6 s late,
                // by gossip.
                // A member heard from itself at a newer incarnation since
                // (a refuted false death) is no zombie: its backups may
                // not have claimed, and nothing is to be pulled.
                let refuted = self
                    .swim
                    .member(&down)
                    .is_some_and(|m| m.state.is_active() && swim::newer(m.vouched, vouched));
                if self.engine.sessions_led_by(&down) > 0 && !refuted {
                    // Pull what the backups wrote from one random member,
                    // rather than wait for the next periodic anti-entropy.
                    let alive = self.sync_candidates();
                    if let Some(peer) = alive.choose(&mut self.rng).cloned() {
                        self.stats.claim_pulls += 1;
                        self.start_sync(now, &peer);
                    }
                    if n < CLAIM_CHECKS {
                        self.schedule(now + CLAIM_CHECK, Timer::ClaimCheck(down, n + 1, vouched));
                    }
                }
            }
            Timer::HistoryCheck(from, id) => self.pull_history(now, &from, &id),
            Timer::InboundGrace(peer) => {
                let waiting = self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.connected && !p.has_session() && p.handshake.is_none());
                if waiting && !self.is_refused(now, &peer) {
                    self.start_handshake(now, &peer);
                }
            }
            Timer::Rekey => {
                self.schedule(now + Duration::from_secs(1), Timer::Rekey);
                // Refusals are remembered for `refusal_memory`: forgotten
                // here (within a second of it) whether or not the peer comes
                // back, so that a refused peer leaves `peers()` too.
                self.refused.retain(|_, r| r.until > now);
                let peers = &self.peers;
                self.unanswered.retain(|id| {
                    peers
                        .get(id)
                        .is_some_and(|p| p.unanswered >= REKEY_UNANSWERED)
                });
                let stale: Vec<NodeId> = self
                    .unanswered
                    .iter()
                    .filter(|id| {
                        self.peers.get(*id).is_some_and(|p| {
                            p.has_session()
                                && p.handshake.is_none()
                                && p.heard.is_some_and(|h| {
                                    now.saturating_duration_since(h) >= REKEY_AFTER
                                })
                                && p.retry_at.is_none_or(|at| at <= now)
                        })
                    })
                    .filter(|id| self.swim.member(id).is_some_and(|m| m.state.is_active()))
                    .cloned()
                    .collect();
                for peer in stale {
                    if !self.leaving && !self.is_refused(now, &peer) {
                        self.start_handshake(now, &peer);
                    }
                }
            }
            Timer::Retry(peer) => {
                let member = self.swim.member(&peer).is_some_and(|m| m.state.is_active());
                let wants = self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| (member || !p.pending.is_empty()) && !p.has_session());
                if wants {
                    self.ensure_session(now, &peer);
                }
            }
        }
    }

    fn is_refused(&mut self, now: Instant, peer: &NodeId) -> bool {
        match self.refused.get(peer) {
            Some(r) if r.until > now => true,
            Some(_) => {
                self.refused.remove(peer);
                false
            }
            None => false,
        }
    }

    fn strangers(&self) -> usize {
        self.peers
            .iter()
            .filter(|(id, p)| !p.has_session() && self.swim.member(id).is_none())
            .count()
    }

    /// Whether `peer` is tracked already or may be: below the cap of
    /// strangers, or once the longest-idle stranger past
    /// [`STRANGER_TTL`] gave its place.
    pub(super) fn room_for(&mut self, now: Instant, peer: &NodeId) -> bool {
        if self.peers.contains_key(peer) || self.strangers() < MAX_STRANGERS {
            return true;
        }
        // Not admitted after STRANGER_TTL, whatever it does: a handshake
        // takes seconds, so this one only holds a place (an attacker's
        // connections under fresh ids, or names that never answered).
        let stale = self
            .peers
            .iter()
            .filter(|(id, p)| {
                !p.has_session()
                    && self.swim.member(id).is_none()
                    && p.seen
                        .is_none_or(|t| now.saturating_duration_since(t) >= STRANGER_TTL)
            })
            .min_by_key(|(id, p)| (p.seen, (*id).clone()))
            .map(|(id, p)| (id.clone(), p.connected));
        match stale {
            Some((id, connected)) => {
                self.peers.remove(&id);
                if connected {
                    self.actions.push_back(Action::Disconnect { peer: id });
                }
                true
            }
            None => false,
        }
    }

    /// How many peers this node tracks (members, strangers); for tests of
    /// its bounds.
    pub fn tracked_peers(&self) -> usize {
        self.peers.len()
    }

    /// Forgets a peer that is neither a member nor doing anything.
    fn prune_stranger(&mut self, peer: &NodeId) {
        let idle = self.peers.get(peer).is_some_and(|p| {
            !p.connected && !p.has_session() && p.handshake.is_none() && p.pending.is_empty()
        });
        if idle && self.swim.member(peer).is_none() {
            self.peers.remove(peer);
        }
    }

    /// Announces this node's metadata with a new incarnation.
    /// The service configuration changed (a reload): the new digest is
    /// announced, and members whose configuration differs from it are told
    /// again.
    pub fn handle_services_changed(&mut self, now: Instant, digest: u64) {
        if digest == self.meta.services {
            return;
        }
        self.meta.services = digest;
        for (id, p) in &self.peers {
            if p.services != 0 && digest != 0 && p.services != digest {
                self.events.push_back(Event::ServicesDiffer {
                    peer: id.clone(),
                    ours: digest,
                    theirs: p.services,
                });
            }
        }
        self.announce(now);
        self.pump(now);
    }

    fn announce(&mut self, now: Instant) {
        self.swim.set_meta(now, self.meta.encode());
    }

    /// Delivers a decoded message from an admitted peer: payloads to the
    /// node and the engine, the message to SWIM.
    fn deliver(&mut self, now: Instant, from: NodeId, decoded: wire::Decoded) {
        let wire::Decoded { mut message, app } = decoded;
        for payload in app {
            let name = seen::name(&payload);
            if self.seen_deltas.contains(&name) {
                self.stats.duplicate_deltas += 1;
                continue;
            }
            match AppMessage::decode(&payload) {
                Ok(AppMessage::Root(root)) => self.on_root(now, &from, root),
                Ok(AppMessage::Delta(delta)) => {
                    let now_ms = self.unix_ms(now);
                    match self.engine.handle_delta(now, now_ms, *delta) {
                        Ok(true) => {
                            self.seen_deltas.insert(name);
                        }
                        Err(crate::map::Rejection::Unlinked { id, .. }) => {
                            self.check_history(now, &from, id);
                        }
                        _ => {}
                    }
                }
                Ok(m) => {
                    let now_ms = self.unix_ms(now);
                    self.engine.handle_app_message(now, now_ms, m, &payload);
                }
                Err(_) => {
                    self.stats.bad_payloads += 1;
                    self.engine.note_rejected();
                }
            }
        }
        self.watch_for_impostor(&message);
        // News about refused peers is not taken from anyone.
        if !self.refused.is_empty()
            && let Some(updates) = message.updates_mut()
        {
            let refused = &self.refused;
            updates.retain(|u| !refused.contains_key(u.id()));
        }
        self.swim.handle_message(now, from, message);
    }

    /// An announcement of this node's id from another process (another boot
    /// number) is normal once after a restart: the old process's last word,
    /// which SWIM refutes. The same foreign process announcing a higher
    /// incarnation again means it is alive and refuting back: two processes
    /// hold this identity.
    fn watch_for_impostor(&mut self, message: &Message) {
        for update in message.updates() {
            let wire::Update::Alive {
                id,
                incarnation,
                meta,
            } = update
            else {
                continue;
            };
            if *id != self.me {
                continue;
            }
            let Ok(meta) = NodeMeta::decode(meta) else {
                continue;
            };
            if meta.boot == self.boot {
                continue;
            }
            match self.impostor {
                Some((boot, seen))
                    if boot == meta.boot && crate::swim::newer(*incarnation, seen) =>
                {
                    self.impostor = Some((boot, *incarnation));
                    self.events.push_back(Event::DuplicateIdentity {
                        peer: self.me.clone(),
                        detail: format!(
                            "another live process announces this node's peer id (its boot {:016x}, \
                             incarnation {incarnation}, addresses {:?}): two nodes run with one \
                             identity; stop one, or give it a data directory of its own",
                            meta.boot, meta.addrs
                        ),
                    });
                }
                Some((boot, _)) if boot == meta.boot => {}
                _ => self.impostor = Some((meta.boot, *incarnation)),
            }
        }
    }

    /// A delta of session `id` from `from` cited a version this node cannot
    /// vouch for: it missed history (an epoch opened, and changed since, on
    /// the other side of a partition, say), which gossip carries only once
    /// and the anti-entropy of the whole chain brings. Honest deltas also
    /// overtake their predecessors, so the node looks again
    /// [`HISTORY_CHECK`] later ([`Node::pull_history`]). Waiting for the
    /// periodic sync instead left two nodes serving one session 10 s after
    /// a partition healed (simulator, 16 nodes, seed 22): after a heal the
    /// membership tables differ for a while, and the map's root rides only
    /// on digest-only membership syncs.
    fn check_history(&mut self, now: Instant, from: &NodeId, id: String) {
        if self.history_checks.insert(from.clone()) {
            self.schedule(now + HISTORY_CHECK, Timer::HistoryCheck(from.clone(), id));
        }
    }

    /// The look [`Node::check_history`] scheduled: if the delta of `id`
    /// still waits for its history, pull the map from `from`, which holds
    /// the chain if it is honest (a node forwards only versions it
    /// adopted). At most once per [`UNLINKED_PULL_EVERY`] per carrier, so a
    /// hostile member citing made-up history makes this node sync with it
    /// at that rate at most, and does not hold back pulls from the others.
    fn pull_history(&mut self, now: Instant, from: &NodeId, id: &str) {
        self.history_checks.remove(from);
        if self.engine.map().pending_of(id).next().is_none() {
            return;
        }
        self.history_pulls
            .retain(|_, at| now.saturating_duration_since(*at) < UNLINKED_PULL_EVERY);
        if self.history_pulls.contains_key(from) {
            return;
        }
        if self.start_sync(now, from) {
            self.history_pulls.insert(from.clone(), now);
            self.stats.unlinked_pulls += 1;
        }
    }

    /// A peer's map root: a different one starts a sync with it.
    fn on_root(&mut self, now: Instant, from: &NodeId, root: u64) {
        if root != self.engine.map().digest().root() {
            self.start_sync(now, from);
        }
    }

    /// Runs every state machine's output through the others until nothing
    /// moves: SWIM's events feed the engine, the engine's broadcasts become
    /// SWIM transmits, transmits become datagrams or streams.
    fn pump(&mut self, now: Instant) {
        // Lifeguard's self-awareness, to its end: a node whose every probe
        // fails fences itself before the others finish taking its sessions.
        let isolated = self.swim.is_isolated(now);
        if isolated != self.engine.is_fenced() {
            let now_ms = self.unix_ms(now);
            self.engine.set_fenced(now, now_ms, isolated);
            self.events.push_back(Event::Fenced { fenced: isolated });
            if !isolated {
                // What it missed meanwhile comes by anti-entropy, now.
                self.push_sync(now);
            }
        }
        loop {
            let mut moved = false;
            while let Some(event) = self.swim.poll_event() {
                moved = true;
                self.on_swim_event(now, event);
            }
            while let Some(action) = self.engine.poll_action() {
                moved = true;
                self.on_engine_action(now, action);
            }
            let load = self.engine.load();
            if load != self.meta.load {
                self.meta.load = load;
                self.announce(now);
                moved = true;
            }
            while let Some(t) = self.swim.poll_transmit() {
                moved = true;
                self.route(now, t);
            }
            if !moved {
                break;
            }
        }
    }

    fn on_swim_event(&mut self, now: Instant, event: swim::Event) {
        match &event {
            swim::Event::MemberState { id, state, .. } => {
                self.shorts.insert(id.short(), id.clone());
                self.feed_engine(now, id, true);
                if *state == State::Alive {
                    self.ensure_session(now, id);
                }
                if matches!(state, State::Dead | State::Left) && self.engine.sessions_led_by(id) > 0
                {
                    let vouched = self.swim.member(id).map_or(0, |m| m.vouched);
                    self.schedule(now + CLAIM_CHECK, Timer::ClaimCheck(id.clone(), 1, vouched));
                }
            }
            swim::Event::MemberMeta { id, meta, .. } => {
                if let Ok(meta) = NodeMeta::decode(meta) {
                    self.on_member_meta(now, id, &meta);
                }
                self.feed_engine(now, id, true);
            }
            swim::Event::ProbeRtt { id, .. } => self.feed_engine(now, id, false),
            swim::Event::Refuted { .. } => {}
            swim::Event::Removed { id } => {
                self.shorts.remove(&id.short());
                self.engine.forget(id);
                self.compare_wanted.remove(id);
                if let Some(p) = self.peers.remove(id) {
                    for index in p.indices() {
                        self.indices.remove(&index);
                    }
                }
            }
        }
        self.events.push_back(Event::Member(event));
    }

    fn on_member_meta(&mut self, now: Instant, id: &NodeId, meta: &NodeMeta) {
        let p = self.peers.entry(id.clone()).or_default();
        p.addrs = meta.addrs.iter().take(8).cloned().collect();
        if p.endpoint.is_none()
            && let Some(addr) = resolve_datagram(&meta.datagram, p.remote_ip)
        {
            p.endpoint = Some(addr);
        }
        if let Some(detail) = p.note_boot(meta.boot) {
            self.events.push_back(Event::DuplicateIdentity {
                peer: id.clone(),
                detail,
            });
        }
        let theirs = meta.services;
        if std::mem::replace(&mut p.services, theirs) != theirs
            && theirs != 0
            && self.meta.services != 0
            && theirs != self.meta.services
        {
            self.events.push_back(Event::ServicesDiffer {
                peer: id.clone(),
                ours: self.meta.services,
                theirs,
            });
        }
        let p = self.peers.get_mut(id).expect("inserted above");
        // Keys agreed with a previous process of this member are void: its
        // new process does not hold them. New ones are agreed at a random
        // moment within a window that grows with the overlay (2 ms per
        // member, at most 5 s), or sooner if this node has something for
        // it: every member learns of a restart within a few gossip rounds,
        // and N handshakes at once overran the restarted node's stream
        // limit (at N = 1000, 6747 refused streams in 60 s, each failing
        // the probes queued behind it).
        if p.boot.is_some_and(|b| b != meta.boot) && p.has_session() {
            for index in p.drop_sessions() {
                self.indices.remove(&index);
            }
            let window = (REHANDSHAKE_PER_MEMBER * self.swim.num_active() as u32)
                .min(MAX_REHANDSHAKE_SPREAD);
            let at = now + window.mul_f64(self.rng.random_range(0.0..1.0));
            self.schedule(at, Timer::Retry(id.clone()));
        }
    }

    /// Feeds SWIM's view of a member to the session engine; `with_meta` is
    /// false on the hot path (every probe RTT), where only the distance
    /// changed.
    fn feed_engine(&mut self, now: Instant, id: &NodeId, with_meta: bool) {
        let Some(member) = self.swim.member(id) else {
            return;
        };
        let meta = with_meta
            .then(|| NodeMeta::decode(&member.meta).ok())
            .flatten();
        let distance = member
            .coord
            .as_ref()
            .map(|c| self.swim.coordinate().distance_to(c));
        let state = member.state;
        self.engine
            .handle_member(now, id.clone(), state, meta.as_ref(), distance);
    }

    fn on_engine_action(&mut self, now: Instant, action: sessions::Action) {
        match action {
            sessions::Action::Broadcast { key, payload } => {
                if let Ok(AppMessage::Delta(d)) = AppMessage::decode(&payload) {
                    self.events.push_back(Event::SessionChanged {
                        id: d.id().to_string(),
                    });
                }
                if !self.swim.broadcast_app(key, payload) {
                    // Too large for a datagram: anti-entropy carries it, now.
                    self.push_sync(now);
                }
            }
            sessions::Action::Compare { peers } => self.compare_with(now, peers),
            sessions::Action::Vouch { id, to, age_ms } => {
                self.unicast(now, &to, AppMessage::Vouch { id, age_ms });
            }
            sessions::Action::Start(record) => {
                self.events.push_back(Event::SessionStarted {
                    id: record.id.clone(),
                    epoch: record.epoch,
                    reason: record.reason.clone(),
                });
                self.events.push_back(Event::SessionChanged {
                    id: record.id.clone(),
                });
                self.actions.push_back(Action::Start(record));
            }
            sessions::Action::Warm(record) => {
                self.events.push_back(Event::SessionChanged {
                    id: record.id.clone(),
                });
                self.actions.push_back(Action::Warm(record));
            }
            sessions::Action::Pause { id, reason } => {
                self.events.push_back(Event::SessionPaused {
                    id: id.clone(),
                    reason,
                });
                self.actions.push_back(Action::Pause { id });
            }
            sessions::Action::Resume { id } => {
                self.events
                    .push_back(Event::SessionResumed { id: id.clone() });
                self.actions.push_back(Action::Resume { id });
            }
            sessions::Action::Stop { id, reason } => {
                let epoch = self.engine.map().get(&id).map_or(0, |r| r.epoch);
                self.events.push_back(Event::SessionStopped {
                    id: id.clone(),
                    epoch,
                    reason: reason.clone(),
                });
                self.events
                    .push_back(Event::SessionChanged { id: id.clone() });
                self.actions.push_back(Action::Stop { id, reason });
            }
        }
    }

    /// Sends a SWIM message: as one sealed datagram when it fits and the
    /// peer's keys are in place, held for the keys otherwise, and over a
    /// stream when it is too large for a datagram.
    fn route(&mut self, now: Instant, t: swim::Transmit) {
        let mut app = t.app;
        if let Message::Sync(sync) = &t.message
            && sync.reply
            && (sync.updates.is_empty() || is_join(sync, &self.me))
        {
            // The map's root rides on membership anti-entropy: one periodic
            // datagram checks both. And on a join (the joiner's own entry
            // alone): the member joined through sees the joiner's root
            // differ and syncs maps with it at once, so a node restarted
            // empty learns the sessions now, not at its first periodic sync
            // 4-6 s later (simulator, ten crashes at once with one backup:
            // a primary and its backup restarted together held no map six
            // seconds later, and the session waited for one of them). Not
            // on a table that asks back: the digest-only sync it answers
            // carried a root already, and a second would start a second
            // map sync the other way.
            app.push(AppMessage::Root(self.engine.map().digest().root()).encode());
        }
        let class = classify(&t.message, !app.is_empty());
        let plain = wire::encode(&t.message, &app);
        if plain.len() > datagram::MAX_PLAINTEXT {
            self.send_bulk(now, &t.to, plain);
            return;
        }
        let probe = match &t.message {
            Message::Ping(ping) => Some(ping.seq),
            _ => None,
        };
        self.send_datagram(now, &t.to, plain, class, probe);
    }

    /// Seals and sends `plain` to `to`, or queues it until keys are agreed
    /// (telling SWIM when it holds the ping of probe `probe`).
    fn send_datagram(
        &mut self,
        now: Instant,
        to: &NodeId,
        plain: Vec<u8>,
        class: Class,
        probe: Option<u16>,
    ) {
        // A ping or a ping-req is answered (by an ack or a nack).
        let expects_answer = matches!(
            plain.first().map(|h| h & 0x0f),
            Some(wire::KIND_PING | wire::KIND_PING_REQ)
        );
        if self.is_refused(now, to) || to.is_unresolved() {
            self.stats.drops.no_session += 1;
            return;
        }
        let pending_cap = self.config.timing.pending_per_peer;
        let p = self.peers.entry(to.clone()).or_default();
        if p.has_session() {
            match p.seal(&plain) {
                Some(bytes) => {
                    let to_addr = p.endpoint.expect("seal needs an endpoint");
                    let confirm = p
                        .heard
                        .is_some_and(|h| now.saturating_duration_since(h) < CONFIRM_WINDOW);
                    if expects_answer {
                        p.unanswered = p.unanswered.saturating_add(1);
                        if p.unanswered == REKEY_UNANSWERED {
                            self.unanswered.insert(to.clone());
                        }
                    }
                    self.stats.sent.entry(class).or_default().add(bytes.len());
                    self.transmits.push_back(Transmit::Datagram {
                        to: to_addr,
                        bytes,
                        confirm,
                    });
                }
                None => {
                    self.stats.drops.no_session += 1;
                    if p.endpoint.is_some() {
                        // The counter ran out: the pair agrees new keys.
                        for index in p.drop_sessions() {
                            self.indices.remove(&index);
                        }
                        self.ensure_session(now, to);
                    }
                }
            }
            return;
        }
        if p.pending.len() >= pending_cap {
            p.pending.pop_front();
            self.stats.drops.no_session += 1;
        }
        p.pending.push_back(Pending {
            plain,
            class,
            probe,
        });
        if let Some(seq) = probe {
            self.swim.probe_held(now, seq);
        }
        self.ensure_session(now, to);
    }

    /// Starts a handshake with a member this node has no keys with, unless
    /// one runs, failed recently, or too many run.
    fn ensure_session(&mut self, now: Instant, peer: &NodeId) {
        if *peer == self.me || self.leaving || self.is_refused(now, peer) {
            return;
        }
        let Some(p) = self.peers.get(peer) else {
            self.peers.insert(peer.clone(), Peer::default());
            return self.ensure_session(now, peer);
        };
        if p.has_session() || p.handshake.is_some() {
            return;
        }
        if let Some(at) = p.retry_at
            && at > now
        {
            return;
        }
        self.start_handshake(now, peer);
    }
}

/// Time to the next discovery walk (before jitter) of a node that knows
/// `active` other members: often while alone; in a group the walk is the
/// group's duty, shared so that the group walks about `group_walkers`
/// times per `group_walk` however large it is. Each walk dials peers of
/// its own (a libp2p connection each, closed when idle), so a walk per
/// member per period would grow the group's discovery traffic with N.
fn walk_interval(timing: &Timing, active: usize) -> Duration {
    if active == 0 {
        return timing.alone_walk;
    }
    let members = active as f64 + 1.0;
    let share = (members / f64::from(timing.group_walkers.max(1))).max(1.0);
    timing.group_walk.mul_f64(share)
}

/// Whether `sync` (asking for a reply) is a join as [`swim::Swim::join`]
/// sends it: the sender's own entry alone.
fn is_join(sync: &wire::Sync, me: &NodeId) -> bool {
    matches!(sync.updates.as_slice(), [own] if own.id() == me)
}

/// How long after a member leading sessions goes down this node expects
/// their claims by its backups to have reached it (a claim spreads to 1000
/// nodes in about 130 ms at the 99th percentile); if they have not, it
/// pulls the map from a random member. Gossip alone left a few nodes
/// without a claim until the next anti-entropy, up to 5 s later: takeover
/// p99 6.2 s at N = 1000 with 2000 sessions. At 400 ms, the one node in
/// a hundred that the eager push and the piggybacks missed still learnt
/// the claim only from this pull, 400 ms after it was written, which set
/// the takeover tail (p99 1.5-1.65 s, `testnet sim --nodes 1000 --scenario
/// crash --sessions 2000`); 200 ms is about when the claim has been written
/// (the backups declare the death within a dissemination of this node). A
/// node that holds every claim pulls nothing, so the cost stays with the
/// few that missed one.
const CLAIM_CHECK: Duration = Duration::from_millis(200);
/// Looks at most, a [`CLAIM_CHECK`] apart (a backup may claim late, after
/// its stagger): the same 2 s as five looks 400 ms apart.
const CLAIM_CHECKS: u8 = 10;

/// How long after a delta citing unknown history arrived this node looks
/// whether it still waits: an honest predecessor overtaken on the way
/// arrives within a dissemination (about 130 ms to 1000 nodes at the 99th
/// percentile), history from the other side of a healed partition never
/// does by gossip.
const HISTORY_CHECK: Duration = Duration::from_millis(200);

/// The least time between two map pulls from one carrier for deltas citing
/// unknown history: a forged or orphaned delta, copied by gossip many times
/// over, makes a node pull from its carrier at most this often.
const UNLINKED_PULL_EVERY: Duration = Duration::from_secs(1);

/// Per member, the window over which members spread their handshakes with
/// a member that restarted.
const REHANDSHAKE_PER_MEMBER: Duration = Duration::from_millis(2);
/// The longest such window.
const MAX_REHANDSHAKE_SPREAD: Duration = Duration::from_secs(5);

/// The traffic class of a datagram message.
fn classify(message: &Message, payloads: bool) -> Class {
    match message {
        Message::Ping(_) | Message::PingReq(_) | Message::Ack(_) | Message::Nack(_) => Class::Probe,
        Message::Gossip(g) if payloads && g.updates.is_empty() => Class::Deltas,
        Message::Gossip(_) | Message::Sync(_) => Class::Gossip,
    }
}

/// `tags` if they are within the caps, else none (the daemon checks them
/// at start and refuses bad ones; a library caller gets a node that
/// announces none rather than one whose metadata peers refuse).
fn checked_tags(tags: &crate::meta::Tags) -> crate::meta::Tags {
    match crate::meta::check_tags(tags) {
        Ok(()) => tags.clone(),
        Err(_) => crate::meta::Tags::new(),
    }
}

/// A datagram address as announced (`ip:port`), with an unspecified ip
/// replaced by the address the peer's connection comes from.
fn resolve_datagram(announced: &str, remote: Option<IpAddr>) -> Option<SocketAddr> {
    let addr: SocketAddr = announced.parse().ok()?;
    if addr.port() == 0 {
        return None;
    }
    if addr.ip().is_unspecified() {
        return Some(SocketAddr::new(remote?, addr.port()));
    }
    Some(addr)
}
