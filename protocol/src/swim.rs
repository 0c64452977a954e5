//! SWIM failure detection and membership, with the Lifeguard refinements.
//!
//! A sans-IO state machine (like foca and quinn-proto): feed it messages with
//! [`Swim::handle_message`] and the passing of time with [`Swim::handle_timeout`],
//! then drain [`Swim::poll_transmit`] and [`Swim::poll_event`] and sleep until
//! [`Swim::poll_timeout`]. It implements SWIM (Das, Gupta, Motivala 2002) with
//! Lifeguard (Dadgar et al. 2018) and three additions that Baton's detection
//! targets need, all explained in `docs/protocol.md`: adaptive probe timeouts
//! from measured RTTs, expedited probes of a fresh suspect by a few random
//! members (fast independent confirmations), and eager push of fresh updates.

use std::cmp::{Ordering, Reverse};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::SliceRandom;

use crate::NodeId;
use crate::coords::{self, Coordinate};
use crate::wire::{Ack, Gossip, Message, Nack, Ping, PingReq, Sync, Update};

/// Timing and fan-out parameters. Start from [`Config::lan`] or [`Config::wan`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between two probe rounds (SWIM's protocol period `T'`), before
    /// the local health multiplier scales it.
    pub probe_interval: Duration,
    /// Direct-probe timeout used until a member's RTT has been measured.
    pub probe_timeout: Duration,
    /// Lower bound of the adaptive direct-probe timeout.
    pub min_probe_timeout: Duration,
    /// Upper bound of the adaptive direct-probe timeout.
    pub max_probe_timeout: Duration,
    /// The indirect stage of a probe lasts this many direct timeouts.
    pub indirect_timeout_factor: u32,
    /// Members asked to probe indirectly after a direct probe failed (`k`).
    pub indirect_probes: usize,
    /// Lifeguard's `α`: the minimum suspicion timeout is
    /// `α · max(1, log10 n) · probe_interval`.
    pub suspicion_min_mult: f64,
    /// Lifeguard's `β`: the maximum suspicion timeout is `β` times the minimum.
    pub suspicion_max_mult: f64,
    /// Lifeguard's `K`: independent confirmations that bring the suspicion
    /// timeout down to its minimum.
    pub suspicion_confirmations: u32,
    /// Highest value of the local health multiplier (Lifeguard's `S`).
    pub max_local_health: u32,
    /// An update is piggybacked `retransmit_mult · ceil(log10(n + 1))` times.
    pub retransmit_mult: u32,
    /// An application payload (a session-map delta) is piggybacked
    /// `app_retransmit_mult · ceil(log10(n + 1))` times. Apart from
    /// `retransmit_mult` so that it can be tuned: every node that learns a
    /// payload also pushes it on, and the map's anti-entropy repairs what
    /// gossip missed, but fewer retransmissions lengthen the tail of a
    /// takeover's spread (docs/protocol.md section 8 has the measurements).
    pub app_retransmit_mult: u32,
    /// Members a fresh update is pushed to at once, and members a leaving
    /// node tells (twice as many).
    pub gossip_fanout: usize,
    /// The most updates piggybacked on one probe message.
    pub max_piggyback: usize,
    /// Time between two anti-entropy exchanges with a random member.
    pub sync_interval: Duration,
    /// How long dead and departed members are remembered. Dead ones (not
    /// departed ones) are occasionally offered anti-entropy meanwhile, so
    /// that the two sides of a healed partition merge again.
    pub dead_reclaim: Duration,
    /// Vivaldi parameters.
    pub coords: coords::Config,
    /// A probe asks its target for its coordinate (44 bytes in the ack)
    /// when it has none of the target, or when it asked nobody for this
    /// long: coordinates change slowly, and asking on every probe would
    /// cost more bytes than the probes themselves.
    pub coord_interval: Duration,
    /// At most this many acks a second carry this node's coordinate
    /// unasked, on average (bursts of [`COORD_RESEND_BURST`]): the resend
    /// of a coordinate that moved ([`COORD_RESEND_FRACTION`]) fires more
    /// often as N grows (a prober comes back every N probe periods, the
    /// coordinate has walked further by then), so without a budget its
    /// cost would grow with N. Acks asked for a coordinate are not counted.
    pub coord_resend_per_s: f64,
    /// The largest encoded message (updates and application payloads
    /// included) this node builds for the datagram plane; piggybacking
    /// stops there. Tables and other larger messages are sent as they are
    /// and the caller routes them over a stream.
    pub max_message_bytes: usize,
    /// A node with two members or more that got no answer to any of its
    /// probes (ack or nack, direct or relayed) for this long, its local
    /// health at the maximum, is isolated: it is the one at fault (its
    /// links are cut, one way or both), so it declares nobody dead on its
    /// own evidence and its caller stops serving (`Swim::is_isolated`).
    pub isolation_after: Duration,
    /// A probe whose ping could not leave yet (its caller is agreeing keys
    /// with the target: [`Swim::probe_held`]) is timed from when it does
    /// leave ([`Swim::probe_released`]); held longer than this, it runs
    /// its course as if sent, so that a target nobody can handshake with
    /// is still found dead.
    pub max_probe_hold: Duration,
    /// Probe on the overlay's shared schedule once a wall clock is given
    /// ([`Swim::set_wall_clock`]): protocol periods are numbered from the
    /// Unix epoch, members are ordered by id, and in period `r` the member
    /// at place `i` probes the one at `i + 1 + r mod (n - 1)`, so that
    /// every member is probed by exactly one other in every period (when
    /// views agree and every node's local health is 0) and a dead member's
    /// first probe comes within two periods (7/12 of one on average). Off,
    /// or without a wall clock, or while this node's local health is
    /// raised and `LHM + 1` and `n - 1` have a common divisor (its rounds
    /// would then meet only some of the schedule's steps), it walks its
    /// own random permutation (SWIM 4.3): every
    /// member is still probed once per `n - 1` rounds by each node, but the
    /// wait for the first probe of a dead member is about exponential
    /// (mean one period, p99.9 about seven). docs/protocol.md 10 (10) has
    /// the measurements.
    pub shared_probe_schedule: bool,
}

impl Config {
    /// Parameters for a LAN or a single data centre (RTTs below ~5 ms).
    pub fn lan() -> Self {
        Config {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(50),
            min_probe_timeout: Duration::from_millis(25),
            max_probe_timeout: Duration::from_millis(500),
            indirect_timeout_factor: 2,
            indirect_probes: 5,
            suspicion_min_mult: 2.0,
            suspicion_max_mult: 3.0,
            suspicion_confirmations: 3,
            max_local_health: 8,
            retransmit_mult: 4,
            app_retransmit_mult: 4,
            gossip_fanout: 3,
            max_piggyback: 16,
            sync_interval: Duration::from_secs(5),
            dead_reclaim: Duration::from_secs(120),
            coords: coords::Config::default(),
            coord_interval: Duration::from_secs(2),
            coord_resend_per_s: 1.0,
            max_message_bytes: crate::datagram::MAX_PLAINTEXT,
            isolation_after: Duration::from_secs(1),
            max_probe_hold: Duration::from_secs(2),
            shared_probe_schedule: true,
        }
    }

    /// Parameters for the wide area (RTTs of 20-300 ms): the same protocol
    /// period, longer timeout bounds.
    pub fn wan() -> Self {
        Config {
            probe_timeout: Duration::from_millis(400),
            min_probe_timeout: Duration::from_millis(60),
            max_probe_timeout: Duration::from_millis(1000),
            ..Config::lan()
        }
    }

    /// The suspicion timeout bounds `(min, max)` for a group of `n` members.
    pub fn suspicion_bounds(&self, n: usize) -> (Duration, Duration) {
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min = self.probe_interval.mul_f64(self.suspicion_min_mult * scale);
        (min, min.mul_f64(self.suspicion_max_mult))
    }

    /// How many times an update is piggybacked in a group of `n` members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.retransmit_mult * scale
    }

    /// How many times an application payload is piggybacked in a group of
    /// `n` members.
    pub fn app_retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.app_retransmit_mult.max(1) * scale
    }
}

/// A member's state, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Answering probes.
    Alive,
    /// Failed a probe; declared dead unless it refutes in time.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left gracefully.
    Left,
}

impl State {
    /// The name used by the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
            State::Left => "left",
        }
    }

    /// Whether members in this state are probed and gossiped to.
    pub fn is_active(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

/// A member of the group as this node knows it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its identity.
    pub id: NodeId,
    /// Its state.
    pub state: State,
    /// The incarnation the state is about.
    pub incarnation: u32,
    /// The metadata of its latest alive announcement.
    pub meta: Vec<u8>,
    /// When it entered its current state.
    pub since: Instant,
    /// Who suspected or declared it dead, when it is suspect or dead.
    pub by: Option<NodeId>,
    /// Smoothed RTT of direct probes (RFC 6298), once measured.
    pub srtt: Option<Duration>,
    /// RTT variation of direct probes (RFC 6298).
    pub rttvar: Duration,
    /// Its Vivaldi coordinate, from the latest ack that carried one.
    pub coord: Option<Coordinate>,
    /// When that coordinate arrived.
    pub coord_at: Option<Instant>,
    /// This node's own coordinate as last sent to the member in an ack:
    /// an ack carries the coordinate unasked once it moved away from that
    /// by more than [`COORD_RESEND_FRACTION`] of the distance between them
    /// (see [`coord_moved`]).
    coord_sent: Option<Coordinate>,
    /// The newest incarnation this node heard from the member itself (or
    /// held when it learnt of it): rumours relayed by others may lead it by
    /// at most [`PLAUSIBLE_LEAD`]. Judged against what this node holds
    /// instead, lies a little ahead each would add up, one relay at a time.
    pub vouched: u32,
    /// What this member adds to [`Swim::digest`] as of its last change (0
    /// when it is not active).
    digest_part: u64,
}

impl Member {
    fn new(id: NodeId, incarnation: u32, meta: Vec<u8>, now: Instant) -> Self {
        Member {
            id,
            state: State::Alive,
            incarnation,
            meta,
            since: now,
            by: None,
            srtt: None,
            rttvar: Duration::ZERO,
            coord: None,
            coord_at: None,
            coord_sent: None,
            vouched: incarnation,
            digest_part: 0,
        }
    }

    /// The update that states what this node believes of the member.
    pub fn to_update(&self) -> Update {
        let id = self.id.clone();
        let incarnation = self.incarnation;
        let by = || self.by.clone().unwrap_or_else(|| id.clone());
        match self.state {
            State::Alive => Update::Alive {
                id: id.clone(),
                incarnation,
                meta: self.meta.clone(),
            },
            State::Suspect => Update::Suspect {
                id: id.clone(),
                incarnation,
                from: by(),
            },
            State::Dead => Update::Dead {
                id: id.clone(),
                incarnation,
                from: by(),
            },
            State::Left => Update::Left { id, incarnation },
        }
    }

    fn record_rtt(&mut self, rtt: Duration) {
        // RFC 6298, section 2.
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The recipient.
    pub to: NodeId,
    /// What to send.
    pub message: Message,
    /// Application payloads riding on it (see [`Swim::broadcast_app`]);
    /// encode both with [`crate::wire::encode`].
    pub app: Vec<Vec<u8>>,
}

/// Something the caller may want to know or act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A member appeared or changed state.
    MemberState {
        /// The member.
        id: NodeId,
        /// Its new state.
        state: State,
        /// Its state before, `None` when it is new to this node.
        previous: Option<State>,
        /// The incarnation of the new state.
        incarnation: u32,
    },
    /// A member announced new metadata (also sent when a member appears).
    MemberMeta {
        /// The member.
        id: NodeId,
        /// Its metadata.
        meta: Vec<u8>,
        /// The incarnation it announced the metadata at: a member
        /// re-announces at a new incarnation, and the state may not change.
        incarnation: u32,
    },
    /// A direct probe was answered after `rtt`.
    ProbeRtt {
        /// The member probed.
        id: NodeId,
        /// The round-trip time.
        rtt: Duration,
    },
    /// This node refuted a suspicion or a death notice about itself.
    Refuted {
        /// Its new incarnation.
        incarnation: u32,
    },
    /// A dead or departed member was forgotten after `dead_reclaim`.
    Removed {
        /// The member.
        id: NodeId,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Probes started (direct pings sent by a probe).
    pub probes: u64,
    /// Probes that needed the indirect stage.
    pub indirect_probes: u64,
    /// Probes that failed altogether.
    pub failed_probes: u64,
    /// Probes started early because another member suspected the target.
    pub expedited_probes: u64,
    /// Suspicions this node started (including confirmations it added).
    pub suspicions: u64,
    /// Members this node declared dead.
    pub declared_dead: u64,
    /// Refutations of suspicions or death notices about this node.
    pub refutations: u64,
    /// Rumours ignored because their incarnation was further ahead of what
    /// this node knows than an honest member could put it (a lying member).
    pub implausible: u64,
    /// Acks that carried this node's coordinate because the prober asked.
    pub coords_asked: u64,
    /// Acks that carried it unasked, because it moved since that prober
    /// last got it ([`coord_moved`]).
    pub coords_unasked: u64,
    /// Messages handled.
    pub messages_in: u64,
    /// Messages queued for sending.
    pub messages_out: u64,
}

/// Timers are data: each carries what makes it stale, so a timer that fires
/// after its reason has gone is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    ProbeRound,
    DirectTimeout(u16),
    IndirectTimeout(u16),
    RelayTimeout(u16),
    Suspicion { id: NodeId, incarnation: u32 },
    Sync,
    Reclaim,
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
    // Reversed, so that the BinaryHeap pops the earliest timer first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

#[derive(Debug)]
struct Probe {
    target: NodeId,
    /// The incarnation probed: a failure blames that one only.
    incarnation: u32,
    sent: Instant,
    timeout: Duration,
    relays: Vec<NodeId>,
    nackers: Vec<NodeId>,
    /// Since when its ping waits in the caller for keys with the target.
    held: Option<Instant>,
    /// When the direct phase times out; `None` once the indirect one began
    /// (timers that fire before it, or after, are stale).
    direct_due: Option<Instant>,
}

/// Relay entries kept at most: a ping-req beyond them is not relayed.
/// Honest traffic keeps a handful (about `k` per failed direct probe
/// anywhere, each for about two timeouts).
const MAX_RELAYS: usize = 1024;

/// An indirect probe draws this many times `indirect_probes` members at
/// random and asks those on the shortest paths to the target
/// ([`Swim::choose_relays`]).
const RELAY_DRAW: usize = 3;

#[derive(Debug)]
struct Relay {
    requester: NodeId,
    seq: u16,
    target: NodeId,
    /// When the nack goes (if no ack came).
    nack_at: Instant,
    /// When the entry goes, the nack sent: until then a late ack is still
    /// forwarded.
    expire_at: Instant,
    /// Whether the nack has gone.
    nacked: bool,
}

/// Lifeguard's dynamic suspicion (memberlist's `suspicion.go`): the timeout
/// starts at `max` and falls towards `min` as independent members confirm.
#[derive(Debug)]
struct Suspicion {
    /// Whether a late timer already granted it a second minimum timeout.
    extended: bool,
    start: Instant,
    confirmers: BTreeSet<NodeId>,
    confirmations: u32,
    wanted: u32,
    min: Duration,
    max: Duration,
}

impl Suspicion {
    fn deadline(&self) -> Instant {
        // An extension (a late timer) grants the minimum timeout once more,
        // whatever the confirmations.
        if self.wanted == 0 || self.extended {
            return self.start + self.min;
        }
        let frac = f64::from(self.confirmations + 1).ln() / f64::from(self.wanted + 1).ln();
        let span = self.max.saturating_sub(self.min);
        let timeout = self.max.saturating_sub(span.mul_f64(frac.min(1.0)));
        self.start + timeout.max(self.min)
    }
}

/// Bytes of a message that piggybacking leaves for its own head and body
/// and the list headers: the largest is an ack with a coordinate.
const MESSAGE_RESERVE: usize = 64;

/// Application payloads waiting to be piggybacked, in two orders that take
/// turns filling a message's slots:
///
/// - **fewest sends, newest first** (memberlist's transmit-limited queue):
///   a fresh claim rides on the very next messages of every node that holds
///   it instead of waiting behind every payload queued before it;
/// - **longest waiting first** (a rotation): every queued payload gets a
///   turn within a bounded number of messages however many fresh ones keep
///   arriving, which the first order alone does not give (a stream of new
///   deltas after a healed partition starved older ones).
///
/// A newer payload under the same key supersedes the queued one in
/// O(log n).
#[derive(Debug, Default)]
struct AppQueue {
    /// Key to the generation of its queued payload.
    latest: BTreeMap<Vec<u8>, u64>,
    /// Generation to the queued payload. A generation names one queued
    /// payload for as long as it is queued (a newer payload under the same
    /// key gets a new one), so the two orders below and a message's
    /// choices compare integers, not keys.
    queued: BTreeMap<u64, AppQueued>,
    /// `(transmits, newest first)`: the generations by fewest sends.
    by_sends: BTreeSet<(u32, Reverse<u64>)>,
    /// `(turn last sent or queued, generation)`: the generations by wait.
    by_wait: BTreeSet<(u64, u64)>,
    next_gen: u64,
    /// Counts payload sends; stamps `by_wait`.
    turn: u64,
    /// Which order fills the first slot of the next message: they
    /// alternate, so a message with room for one payload still serves both.
    rotation_first: bool,
}

#[derive(Debug)]
struct AppQueued {
    key: Vec<u8>,
    transmits: u32,
    waiting_since: u64,
    /// The payload's encoded length in a message.
    len: usize,
    payload: Vec<u8>,
}

impl AppQueue {
    /// Queues `payload` under `key`, counted as sent `transmits` times.
    fn push(&mut self, key: Vec<u8>, payload: Vec<u8>, transmits: u32) {
        self.next_gen += 1;
        let generation = self.next_gen;
        if let Some(old) = self.latest.insert(key.clone(), generation)
            && let Some(q) = self.queued.remove(&old)
        {
            self.unindex(old, &q);
        }
        let queued = AppQueued {
            key,
            transmits,
            waiting_since: self.turn,
            len: crate::wire::app_len(&payload),
            payload,
        };
        self.index(generation, &queued);
        self.queued.insert(generation, queued);
    }

    fn index(&mut self, generation: u64, q: &AppQueued) {
        self.by_sends.insert((q.transmits, Reverse(generation)));
        self.by_wait.insert((q.waiting_since, generation));
    }

    fn unindex(&mut self, generation: u64, q: &AppQueued) {
        self.by_sends.remove(&(q.transmits, Reverse(generation)));
        self.by_wait.remove(&(q.waiting_since, generation));
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Takes payloads of at most `room` encoded bytes in all and `max` in
    /// number, counting a transmission for each; one sent `limit` times
    /// leaves the queue.
    fn take(&mut self, mut room: usize, max: usize, limit: u32) -> Vec<Vec<u8>> {
        // Payloads that do not fit the room left are passed over, but only
        // a few: walking the whole queue for each message costs O(queue)
        // per datagram once thousands of deltas wait (a crash at N=1000).
        // Every payload fits an otherwise empty message, so none waits for
        // ever.
        let mut chosen: Vec<u64> = Vec::new();
        let mut misfits: Vec<u64> = Vec::new();
        let mut rotation = self.rotation_first;
        self.rotation_first = !self.rotation_first;
        // `first_fit` stops once MAX_PICK_MISFITS were passed over.
        while chosen.len() < max {
            let picked = self
                .pick(rotation, room, &chosen, &mut misfits)
                .or_else(|| self.pick(!rotation, room, &chosen, &mut misfits));
            let Some((generation, len)) = picked else {
                break;
            };
            room -= len;
            chosen.push(generation);
            rotation = !rotation;
        }
        let mut out = Vec::with_capacity(chosen.len());
        for generation in chosen {
            let Some(mut q) = self.queued.remove(&generation) else {
                continue;
            };
            self.unindex(generation, &q);
            self.turn += 1;
            q.transmits += 1;
            q.waiting_since = self.turn;
            if q.transmits < limit {
                out.push(q.payload.clone());
                self.index(generation, &q);
                self.queued.insert(generation, q);
            } else {
                self.latest.remove(&q.key);
                out.push(q.payload);
            }
        }
        out
    }

    /// The first payload in one order that is not `chosen` yet and fits
    /// `room`: its generation and encoded length. Payloads too large for
    /// `room` are noted in `misfits`, each once.
    fn pick(
        &self,
        rotation: bool,
        room: usize,
        chosen: &[u64],
        misfits: &mut Vec<u64>,
    ) -> Option<(u64, usize)> {
        if rotation {
            self.first_fit(self.by_wait.iter().map(|(_, g)| *g), room, chosen, misfits)
        } else {
            self.first_fit(
                self.by_sends.iter().map(|(_, g)| g.0),
                room,
                chosen,
                misfits,
            )
        }
    }

    fn first_fit(
        &self,
        generations: impl Iterator<Item = u64>,
        room: usize,
        chosen: &[u64],
        misfits: &mut Vec<u64>,
    ) -> Option<(u64, usize)> {
        for generation in generations {
            if misfits.len() >= MAX_PICK_MISFITS {
                return None;
            }
            if chosen.contains(&generation) || misfits.contains(&generation) {
                continue;
            }
            let len = self.queued.get(&generation).map_or(usize::MAX, |q| q.len);
            if len > room {
                misfits.push(generation);
                continue;
            }
            return Some((generation, len));
        }
        None
    }
}

/// How many payloads too large for the room left one message's filling
/// passes over (each counted once) before it stops looking.
const MAX_PICK_MISFITS: usize = 8;

/// An ack carries this node's coordinate unasked once it moved, since it
/// was last sent to the prober, by more than this fraction of the
/// estimated distance between the two (or [`COORD_RESEND_FLOOR`], if that
/// is more): what the prober holds then never misplaces this node by much
/// more than that, at any N. Asking alone (`coord_interval`, one probe in
/// every 2 s) leaves each coordinate a member holds about N x 2 s old:
/// 128 s at N = 64, so that members still place each other where they
/// stood before their coordinates settled. Measured in the simulator
/// (`testnet sim --nodes 64 --scenario loss --loss 0 --wan
/// testnet/data/wan-rtt.csv --duration 60s --warmup 30s`): median error
/// 14.7% without resending; 6.1 / 6.8 / 8.4 / 9.4% at fractions 0.05 / 0.1
/// / 0.2 / 0.3, for 217 / 98 / 48 / 28 more bytes per node per second
/// (RTT jitter keeps coordinates moving by a few percent), with a 1 ms
/// floor; with the 5 ms floor, 6.8% at 0.1 (+86 B/s) and 8.3% at 0.2
/// (+43 B/s). On the testnet's WAN at N = 64, 0.1 measured 5.7% at 1525 B/s
/// per node, past the 1.5 KB/s budget; 0.2 measured 5.5% at 1468 B/s. On
/// the simulated LAN the floor keeps it from firing.
pub const COORD_RESEND_FRACTION: f64 = 0.2;

/// The least movement that sends a coordinate unasked. RTT noise moves a
/// coordinate in a random walk, and the walk since a member last got it
/// grows with the time between its probes of this node (N probe periods):
/// with a floor of 1 ms, 64 nodes on one busy machine's testnet LAN sent
/// a coordinate on most acks (1534 B/s per node against 1378 at N=32).
pub const COORD_RESEND_FLOOR: Duration = Duration::from_millis(5);

/// Unasked coordinates an ack may carry back to back after a quiet spell
/// (the bucket of [`Config::coord_resend_per_s`]).
pub const COORD_RESEND_BURST: f64 = 3.0;

/// A token bucket: at most `rate` a second on average, `burst` at once.
/// Starts full. Deterministic: it reads only the `now` it is given.
#[derive(Debug, Clone)]
struct Budget {
    tokens: f64,
    at: Option<Instant>,
}

impl Budget {
    fn full() -> Self {
        Budget {
            tokens: COORD_RESEND_BURST,
            at: None,
        }
    }

    /// Takes one token if there is one (refilled at `rate` a second up to
    /// `burst` since the last call).
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate.max(0.0)).min(burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether `own` moved far enough from what `m` was last sent to send it
/// again unasked (see [`COORD_RESEND_FRACTION`]). Never sent by this
/// process: yes, once, for the member may hold one from before this node
/// restarted and then it does not ask (45 bytes per member, once). A sent
/// coordinate whose ack was lost counts as sent: the member's own asking
/// (once every 2 s) is the fallback. Whether it then goes is up to the
/// budget ([`Config::coord_resend_per_s`]): a member refused one now is
/// still owed it, and gets it on a later ack once there is budget.
fn coord_moved(own: &Coordinate, m: &Member) -> bool {
    let Some(sent) = &m.coord_sent else {
        return true;
    };
    let distance = m
        .coord
        .as_ref()
        .map_or(0.0, |c| own.distance_to(c).as_secs_f64());
    let bound = (distance * COORD_RESEND_FRACTION).max(COORD_RESEND_FLOOR.as_secs_f64());
    own.moved_since(sent) > bound
}

/// Updates waiting to be piggybacked, least transmitted first. A newer
/// update about a member supersedes the queued one in O(1): queue entries
/// carry a generation and stale ones are dropped when they reach the front.
#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<Queued>,
    latest: BTreeMap<NodeId, (u64, Update)>,
    next_gen: u64,
}

#[derive(Debug)]
struct Queued {
    id: NodeId,
    generation: u64,
    transmits: u32,
}

impl Queue {
    fn push(&mut self, update: Update) {
        self.next_gen += 1;
        let id = update.id().clone();
        self.latest.insert(id.clone(), (self.next_gen, update));
        self.entries.push_front(Queued {
            id,
            generation: self.next_gen,
            transmits: 0,
        });
    }

    fn remove(&mut self, id: &NodeId) {
        self.latest.remove(id);
    }

    fn about(&self, id: &NodeId) -> Option<&Update> {
        self.latest.get(id).map(|(_, u)| u)
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    #[cfg(test)]
    fn clear(&mut self) {
        self.entries.clear();
        self.latest.clear();
    }

    /// Takes up to `max` updates of at most `bytes` encoded bytes in all
    /// (skipping the one about `skip`), counting a transmission for each; an
    /// update sent `limit` times leaves the queue.
    fn take(&mut self, max: usize, mut bytes: usize, limit: u32, skip: &NodeId) -> Vec<Update> {
        let mut out = Vec::new();
        let mut kept = Vec::new();
        // Every entry is looked at once at most: the loop ends when the
        // queue has been gone through, full or not.
        let mut budget = self.entries.len();
        while out.len() < max && budget > 0 {
            budget -= 1;
            let Some(mut q) = self.entries.pop_front() else {
                break;
            };
            let Some((generation, update)) = self.latest.get(&q.id) else {
                continue;
            };
            if *generation != q.generation {
                continue;
            }
            let len = update.encoded_len();
            if q.id == *skip || len > bytes {
                kept.push(q);
                continue;
            }
            bytes -= len;
            out.push(update.clone());
            q.transmits += 1;
            if q.transmits < limit {
                kept.push(q);
            } else {
                self.latest.remove(&q.id);
            }
        }
        // Sent entries go to the back: the front keeps the least sent.
        self.entries.extend(kept);
        out
    }
}

/// The SWIM + Lifeguard state machine of one node.
#[derive(Debug)]
pub struct Swim<R> {
    id: NodeId,
    incarnation: u32,
    meta: Vec<u8>,
    config: Config,
    rng: R,
    members: BTreeMap<NodeId, Member>,
    /// Alive and suspect members, for O(1) random choice.
    active: Vec<NodeId>,
    active_index: BTreeMap<NodeId, usize>,
    probe_order: Vec<NodeId>,
    probe_next: usize,
    /// The active members in id order: the shared probe schedule's ring
    /// (this node takes its own place in it).
    ring: Vec<NodeId>,
    /// When `now` was `.0`, the wall clock said `.1` (since the Unix
    /// epoch): numbers the protocol periods of the shared probe schedule.
    wall: Option<(Instant, Duration)>,
    /// Where in each protocol period this node probes, as a fraction of it
    /// (random, so that the nodes of a group do not probe in lockstep).
    probe_phase: f64,
    probes: BTreeMap<u16, Probe>,
    relays: BTreeMap<u16, Relay>,
    next_seq: u16,
    suspicions: BTreeMap<NodeId, Suspicion>,
    broadcasts: Queue,
    /// The sum of every member's [`Member::digest_part`]: [`Swim::digest`]
    /// adds this node's own entry, so that the digest costs O(1) however
    /// large the table and however often it changes.
    members_digest: u64,
    app_broadcasts: AppQueue,
    timers: BinaryHeap<Scheduled>,
    timer_order: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    health: u32,
    leaving: bool,
    vivaldi: coords::Client,
    /// When a probe last asked for a coordinate.
    coord_asked: Option<Instant>,
    /// What is left of [`Config::coord_resend_per_s`].
    coord_budget: Budget,
    /// When an answer to one of this node's probes last came (or when it
    /// started).
    heard: Instant,
    stats: Stats,
}

/// What handling one input produced that needs spreading.
#[derive(Debug, Default)]
struct Fresh {
    updates: Vec<Update>,
    refuted: bool,
    stale_rumour: bool,
    accusers: Vec<NodeId>,
}

impl<R: Rng> Swim<R> {
    /// Creates the state machine of node `id`, alone in its group until it
    /// [joins](Self::join) one or another node contacts it.
    ///
    /// `meta` must fit in [`MAX_META_BYTES`](crate::wire::MAX_META_BYTES)
    /// (peers would reject every announcement carrying more); longer
    /// metadata is replaced by none.
    pub fn new(id: NodeId, meta: Vec<u8>, config: Config, rng: R, now: Instant) -> Self {
        let meta = if meta.len() <= crate::wire::MAX_META_BYTES {
            meta
        } else {
            Vec::new()
        };
        let vivaldi = coords::Client::new(config.coords.clone());
        let mut swim = Swim {
            id,
            incarnation: 0,
            meta,
            config,
            rng,
            members: BTreeMap::new(),
            active: Vec::new(),
            active_index: BTreeMap::new(),
            probe_order: Vec::new(),
            probe_next: 0,
            ring: Vec::new(),
            wall: None,
            probe_phase: 0.0,
            probes: BTreeMap::new(),
            relays: BTreeMap::new(),
            next_seq: 0,
            suspicions: BTreeMap::new(),
            broadcasts: Queue::default(),
            members_digest: 0,
            app_broadcasts: AppQueue::default(),
            timers: BinaryHeap::new(),
            timer_order: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            health: 0,
            leaving: false,
            vivaldi,
            coord_asked: None,
            coord_budget: Budget::full(),
            heard: now,
            stats: Stats::default(),
        };
        // Random phases keep the nodes of a group from probing in lockstep.
        swim.probe_phase = swim.rng.random::<f64>();
        let phase = swim.config.probe_interval.mul_f64(swim.probe_phase);
        swim.schedule(now + phase, Timer::ProbeRound);
        let sync = swim.jittered(swim.config.sync_interval);
        swim.schedule(now + sync, Timer::Sync);
        swim.schedule(now + swim.config.dead_reclaim / 4, Timer::Reclaim);
        let own = swim.own_alive();
        swim.enqueue_broadcast(own);
        swim
    }

    /// This node's id.
    pub fn local_id(&self) -> &NodeId {
        &self.id
    }

    /// Tells the state machine that at `now` the wall clock says `since_epoch`
    /// (since the Unix epoch), which turns on the shared probe schedule
    /// ([`Config::shared_probe_schedule`]). Its nodes' clocks should agree
    /// to within a fraction of a protocol period (NTP keeps them within
    /// milliseconds); clocks further apart make the schedule's periods
    /// disagree, and the wait for a dead member's first probe returns to
    /// about the random permutation's (measured: docs/protocol.md 10
    /// (10)); correctness never depends on it. Call again to follow the
    /// wall clock's corrections.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        self.wall = Some((now, since_epoch));
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Lifeguard's local health multiplier: 0 when healthy.
    pub fn local_health(&self) -> u32 {
        self.health
    }

    /// Whether this node hears nothing from the overlay: it has two
    /// members or more, its local health is at the maximum, and none of its
    /// probes was answered for [`Config::isolation_after`]. Lifeguard's
    /// premise taken to its end: a node whose every probe fails suspects
    /// itself first. (With one member, hearing nothing and that member's
    /// death look alike: no isolation is concluded.)
    pub fn is_isolated(&self, now: Instant) -> bool {
        self.active.len() >= 2
            && self.health >= self.config.max_local_health
            && now.saturating_duration_since(self.heard) >= self.config.isolation_after
    }

    /// This node's Vivaldi coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        self.vivaldi.coordinate()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every member known, in no particular order (this node excluded).
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Alive and suspect members, this node excluded.
    pub fn num_active(&self) -> usize {
        self.active.len()
    }

    /// Membership updates waiting to be piggybacked (memberlist exports
    /// the same queue depth as a metric): a group whose queues are nearly
    /// empty has finished spreading its news, a join wave included.
    pub fn queued_updates(&self) -> usize {
        self.broadcasts.latest.len()
    }

    /// Whether [`leave`](Self::leave) was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Contacts `seeds` to join their group: each is sent this node's
    /// announcement and asked for its membership table.
    pub fn join(&mut self, now: Instant, seeds: impl IntoIterator<Item = NodeId>) {
        let _ = now;
        let own = self.own_alive();
        for seed in seeds {
            if seed == self.id {
                continue;
            }
            let digest = self.digest();
            self.send(
                seed,
                Message::Sync(Sync {
                    digest,
                    updates: vec![own.clone()],
                    reply: true,
                }),
            );
        }
    }

    /// Replaces this node's metadata and announces it (with a new
    /// incarnation, so that it overrides the old one everywhere).
    /// Metadata longer than [`MAX_META_BYTES`](crate::wire::MAX_META_BYTES)
    /// is refused: the call changes nothing and returns `false`.
    pub fn set_meta(&mut self, now: Instant, meta: Vec<u8>) -> bool {
        let _ = now;
        if meta.len() > crate::wire::MAX_META_BYTES {
            return false;
        }
        self.meta = meta;
        self.incarnation = self.incarnation.wrapping_add(1);
        let own = self.own_alive();
        self.enqueue_broadcast(own.clone());
        self.push(vec![own], None);
        true
    }

    /// Leaves the group gracefully: tells a few members at once, stops
    /// probing and refuting. Keep driving the state machine for a moment so
    /// that the news goes out, then drop it.
    pub fn leave(&mut self, now: Instant) {
        let _ = now;
        if self.leaving {
            return;
        }
        self.leaving = true;
        let left = Update::Left {
            id: self.id.clone(),
            incarnation: self.incarnation,
        };
        self.enqueue_broadcast(left.clone());
        let targets = self.random_active(self.config.gossip_fanout * 2, &[]);
        for to in targets {
            self.send(
                to,
                Message::Gossip(Gossip {
                    updates: vec![left.clone()],
                }),
            );
        }
    }

    /// Handles a message `from` a peer. Call the `poll_*` methods afterwards.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, message: Message) {
        if from == self.id {
            return;
        }
        self.stats.messages_in += 1;
        let quiet_sync = matches!(message, Message::Sync(_));
        let mut fresh = Fresh::default();
        for update in message.updates() {
            // Anti-entropy tables are not news: only the sender's own entry is.
            let quiet = quiet_sync && *update.id() != from;
            self.apply(now, update, quiet, Some(&from), &mut fresh);
        }
        match message {
            Message::Ping(ping) => {
                let own = self.vivaldi.coordinate();
                let member = self.members.get_mut(&from);
                let moved = !ping.want_coord
                    && member.as_ref().is_some_and(|m| coord_moved(own, m))
                    && self.coord_budget.take(
                        now,
                        self.config.coord_resend_per_s,
                        COORD_RESEND_BURST,
                    );
                let coord = (ping.want_coord || moved).then(|| own.clone());
                if let (Some(m), Some(c)) = (member, &coord) {
                    m.coord_sent = Some(c.clone());
                }
                if ping.want_coord {
                    self.stats.coords_asked += 1;
                } else if coord.is_some() {
                    self.stats.coords_unasked += 1;
                }
                let updates = self.piggyback(&from);
                self.send(
                    from.clone(),
                    Message::Ack(Ack {
                        seq: ping.seq,
                        coord,
                        updates,
                    }),
                );
            }
            Message::PingReq(req) => self.start_relay(now, &from, req),
            Message::Ack(ack) => self.handle_ack(now, &from, ack),
            Message::Nack(nack) => {
                if let Some(probe) = self.probes.get_mut(&nack.seq)
                    && probe.relays.contains(&from)
                    && !probe.nackers.contains(&from)
                {
                    probe.nackers.push(from.clone());
                    self.heard = self.heard.max(now);
                }
            }
            Message::Gossip(_) => {}
            Message::Sync(sync) => {
                if sync.reply && sync.digest != self.digest() {
                    // A peer that pushed its table need not hear ours twice.
                    self.send_table(&from, sync.updates.is_empty());
                }
            }
        }
        if fresh.stale_rumour && !fresh.refuted {
            let own = self.own_alive();
            self.send(from.clone(), Message::Gossip(Gossip { updates: vec![own] }));
        }
        if fresh.refuted {
            // Whoever carried the rumour hears the refutation first, then
            // whoever started it.
            let own = self.own_alive();
            self.send(
                from.clone(),
                Message::Gossip(Gossip {
                    updates: vec![own.clone()],
                }),
            );
            for accuser in std::mem::take(&mut fresh.accusers) {
                if accuser != from {
                    self.send(
                        accuser,
                        Message::Gossip(Gossip {
                            updates: vec![own.clone()],
                        }),
                    );
                }
            }
        }
        self.push(fresh.updates, Some(&from));
    }

    /// Handles the passing of time. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Lifeguard's self-awareness, applied to stalls: the earliest due
        // timer says how long this node was not running. Coming back, its
        // links may be broken (peers that declared it dead closed them) and
        // its probes fail for reasons of its own, so it waits longer before
        // blaming anyone: one step of local health per period missed.
        if let Some(first) = self.timers.peek() {
            let missed = now.saturating_duration_since(first.at);
            if missed > self.config.probe_interval {
                let periods = missed.as_nanos() / self.config.probe_interval.as_nanos().max(1);
                let periods = u32::try_from(periods).unwrap_or(u32::MAX);
                self.health = self
                    .health
                    .saturating_add(periods)
                    .min(self.config.max_local_health);
            }
        }
        while let Some(next) = self.timers.peek() {
            if next.at > now {
                break;
            }
            let Some(Scheduled { at, timer, .. }) = self.timers.pop() else {
                break;
            };
            // A timer that fires more than a protocol period late means this
            // node was not running (starved, paused, swapped out): what it
            // would conclude from silence meanwhile is not evidence.
            let late = now.saturating_duration_since(at) > self.config.probe_interval;
            self.fire(now, timer, late);
        }
    }

    /// The next message to send. Call after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
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
        self.timers.peek().map(|s| s.at)
    }

    /// Order-independent digest of the live part of this node's view
    /// (itself, alive and suspect members), compared by anti-entropy.
    /// Kept as a running sum (O(1)); debug builds check it against the table.
    pub fn digest(&self) -> u64 {
        let own = entry_hash(&self.id, self.incarnation, State::Alive, &self.meta);
        let digest = own.wrapping_add(self.members_digest);
        // Every test (and the in-crate multi-node runs) checks the running
        // sum against the table itself: a change that skipped it shows here.
        debug_assert_eq!(
            digest,
            self.members
                .values()
                .filter(|m| m.state.is_active())
                .fold(own, |acc, m| {
                    acc.wrapping_add(entry_hash(&m.id, m.incarnation, m.state, &m.meta))
                }),
            "the running membership digest drifted from the table"
        );
        digest
    }

    fn fire(&mut self, now: Instant, timer: Timer, late: bool) {
        match timer {
            Timer::ProbeRound => {
                let period = self.period(now);
                // A node whose local health is raised probes every
                // `LHM + 1` periods, always at the same remainder: the
                // schedule's steps then cover every member only when
                // `LHM + 1` and `n - 1` are coprime; otherwise it walks its
                // permutation until it is healthy again.
                let others = self.ring.len() as u64;
                let covers = self.health == 0 || gcd(u64::from(self.health) + 1, others) == 1;
                let scheduled = period.filter(|_| covers).map(|(r, _)| r);
                if !self.leaving
                    && let Some(target) = self.next_probe_target(scheduled)
                {
                    self.start_probe(now, target);
                }
                let next = match period {
                    // The shared schedule's period `LHM + 1` on, at this
                    // node's phase: a timer that fired late or early (the
                    // first one) falls back into step.
                    Some((_, next)) => next + self.config.probe_interval * self.health,
                    None => self.config.probe_interval * (self.health + 1),
                };
                self.schedule(now + next, Timer::ProbeRound);
            }
            Timer::DirectTimeout(seq) => self.direct_timeout(now, seq),
            Timer::IndirectTimeout(seq) if late => {
                // Inconclusive: the acks may be the messages we did not read.
                if self.probes.remove(&seq).is_some() {
                    self.health = (self.health + 1).min(self.config.max_local_health);
                }
            }
            Timer::IndirectTimeout(seq) => self.indirect_timeout(now, seq),
            Timer::RelayTimeout(seq) => {
                // The nack says "I am here, the target did not answer me
                // yet"; an ack that comes after it is forwarded all the
                // same until the entry expires (see `start_relay`).
                // Each step checks its own time: a timer left by an entry
                // that ended early must not act on a newer one that took
                // its sequence number.
                let Some(relay) = self.relays.get_mut(&seq) else {
                    return;
                };
                if relay.nacked {
                    if now >= relay.expire_at {
                        self.relays.remove(&seq);
                    }
                    return;
                }
                if now < relay.nack_at {
                    return;
                }
                relay.nacked = true;
                let (to, nack, expire) = (relay.requester.clone(), relay.seq, relay.expire_at);
                self.send(to, Message::Nack(Nack { seq: nack }));
                self.schedule(expire, Timer::RelayTimeout(seq));
            }
            Timer::Suspicion { id, incarnation } => {
                self.suspicion_timeout(now, id, incarnation, late)
            }
            Timer::Sync => {
                if !self.leaving {
                    self.start_sync();
                }
                let next = self.jittered(self.config.sync_interval);
                self.schedule(now + next, Timer::Sync);
            }
            Timer::Reclaim => {
                self.reclaim(now);
                self.schedule(now + self.config.dead_reclaim / 4, Timer::Reclaim);
            }
        }
    }

    // ---- membership updates ----

    /// Applies one update under SWIM's precedence rules. Updates that changed
    /// this node's view are queued for piggybacking and, unless `quiet`,
    /// collected in `fresh` for an eager push.
    fn apply(
        &mut self,
        now: Instant,
        update: &Update,
        quiet: bool,
        carrier: Option<&NodeId>,
        fresh: &mut Fresh,
    ) {
        if *update.id() == self.id {
            self.apply_about_self(update, fresh);
            return;
        }
        // Only a member issues its own incarnations, and an honest carrier
        // only relays numbers the member announced: news from a third party
        // far ahead of what this node holds is a lie (a hostile member's, or
        // corruption). Believing it would make the member's true refutations
        // look stale here; the member itself is always believed first-hand.
        // A relayed alive this far ahead may be true (this node missed many
        // announcements), so the member is asked to say so itself.
        if carrier == Some(update.id())
            && let Some(member) = self.members.get_mut(update.id())
            && newer(update.incarnation(), member.vouched)
        {
            member.vouched = update.incarnation();
        }
        if carrier.is_some_and(|c| c != update.id())
            && let Some(member) = self.members.get(update.id())
            && implausible(update.incarnation(), member.incarnation, member.vouched)
        {
            self.stats.implausible += 1;
            if matches!(update, Update::Alive { .. }) {
                let notice = member.to_update();
                self.send(
                    update.id().clone(),
                    Message::Gossip(Gossip {
                        updates: vec![notice],
                    }),
                );
            }
            return;
        }
        // A death notice found in a peer's anti-entropy table is only a
        // suspicion here (as memberlist's mergeState does): after a partition
        // each side's table declares the other dead, and the members concerned
        // deserve the chance to refute before anyone acts on it.
        let demoted;
        let update = match update {
            Update::Dead {
                id,
                incarnation,
                from,
            } if quiet => {
                demoted = Update::Suspect {
                    id: id.clone(),
                    incarnation: *incarnation,
                    from: from.clone(),
                };
                &demoted
            }
            other => other,
        };
        let changed = match update {
            Update::Alive {
                id,
                incarnation,
                meta,
            } => self.apply_alive(now, id, *incarnation, meta, quiet, carrier),
            Update::Suspect {
                id,
                incarnation,
                from,
            } => self.apply_suspect(now, id, *incarnation, from),
            Update::Dead {
                id,
                incarnation,
                from,
            } => self.apply_down(now, id, *incarnation, State::Dead, Some(from)),
            Update::Left { id, incarnation } => {
                self.apply_down(now, id, *incarnation, State::Left, None)
            }
        };
        // Entries of an anti-entropy table are repairs, not news: they are
        // neither piggybacked nor pushed further.
        if changed && let Some(member) = self.members.get_mut(update.id()) {
            let part = if member.state.is_active() {
                entry_hash(&member.id, member.incarnation, member.state, &member.meta)
            } else {
                0
            };
            self.members_digest = self
                .members_digest
                .wrapping_sub(member.digest_part)
                .wrapping_add(part);
            member.digest_part = part;
        }
        if changed && !quiet {
            self.enqueue_broadcast(update.clone());
            fresh.updates.push(update.clone());
        }
    }

    fn apply_about_self(&mut self, update: &Update, fresh: &mut Fresh) {
        if self.leaving {
            return;
        }
        // No honest history puts a rumour about this node 2^30 incarnations
        // ahead of it (that many announcements, forgotten in a restart): a
        // larger lead is a lie, and jumping to it would leave the members
        // that never believed it holding this node's true announcements as
        // "older" (serial arithmetic looks only 2^31 ahead).
        if ahead(update.incarnation(), self.incarnation) >= MAX_REFUTATION_JUMP {
            self.stats.implausible += 1;
            fresh.stale_rumour = true;
            return;
        }
        let refute = match update {
            // Someone holds a newer announcement of ours than we do, which
            // happens when we restarted and forgot our incarnation.
            Update::Alive {
                incarnation, meta, ..
            } => {
                newer(*incarnation, self.incarnation)
                    || (*incarnation == self.incarnation && *meta != self.meta)
            }
            Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. }
            | Update::Left { incarnation, .. } => !newer(self.incarnation, *incarnation),
        };
        // A departure notice older than this node's incarnation is as stale
        // as a death notice: a node that holds it never probes this one, so
        // nothing else would ever tell it otherwise (a liar's relayed `Left`
        // at the plausible limit left two honest members each holding the
        // other as gone for good).
        let stale_rumour = matches!(
            update,
            Update::Suspect { .. } | Update::Dead { .. } | Update::Left { .. }
        ) && newer(self.incarnation, update.incarnation());
        if stale_rumour {
            // A rumour this node already refuted: its carrier missed the
            // refutation, so it gets it again (no new incarnation needed).
            fresh.stale_rumour = true;
        }
        if refute {
            // Past whatever the rumour claims, modulo 2^32: a liar who
            // announces u32::MAX only makes this node wrap to 0, which is
            // newer than u32::MAX under serial-number comparison.
            let held = if newer(update.incarnation(), self.incarnation) {
                update.incarnation()
            } else {
                self.incarnation
            };
            self.incarnation = held.wrapping_add(1);
            self.health = (self.health + 1).min(self.config.max_local_health);
            self.stats.refutations += 1;
            self.events.push_back(Event::Refuted {
                incarnation: self.incarnation,
            });
            let own = self.own_alive();
            self.enqueue_broadcast(own.clone());
            fresh.updates.push(own);
            fresh.refuted = true;
            // The accuser's own timer is the likeliest to run out first: it
            // hears the refutation directly, not by chance of gossip.
            if let Update::Suspect { from, .. } | Update::Dead { from, .. } = update
                && *from != self.id
                && !fresh.accusers.contains(from)
            {
                fresh.accusers.push(from.clone());
            }
        }
    }

    fn apply_alive(
        &mut self,
        now: Instant,
        id: &NodeId,
        incarnation: u32,
        meta: &[u8],
        quiet: bool,
        carrier: Option<&NodeId>,
    ) -> bool {
        let Some(member) = self.members.get_mut(id) else {
            self.members.insert(
                id.clone(),
                Member::new(id.clone(), incarnation, meta.to_vec(), now),
            );
            self.activate(id);
            self.events.push_back(Event::MemberState {
                id: id.clone(),
                state: State::Alive,
                previous: None,
                incarnation,
            });
            self.events.push_back(Event::MemberMeta {
                id: id.clone(),
                meta: meta.to_vec(),
                incarnation,
            });
            return true;
        };
        if !newer(incarnation, member.incarnation) {
            // A peer's table says alive where we hold a death notice of the
            // same incarnation: the member may be alive on the other side of
            // a healed partition. Tell it, so that it refutes if it can.
            if quiet
                && member.state == State::Dead
                && carrier != Some(id)
                && incarnation == member.incarnation
            {
                let notice = member.to_update();
                self.send(
                    id.clone(),
                    Message::Gossip(Gossip {
                        updates: vec![notice],
                    }),
                );
            }
            return false;
        }
        let previous = member.state;
        let meta_changed = member.meta != meta;
        member.incarnation = incarnation;
        member.state = State::Alive;
        member.by = None;
        member.meta = meta.to_vec();
        if previous != State::Alive {
            member.since = now;
        }
        self.suspicions.remove(id);
        if previous != State::Alive {
            self.activate(id);
            self.events.push_back(Event::MemberState {
                id: id.clone(),
                state: State::Alive,
                previous: Some(previous),
                incarnation,
            });
        }
        if meta_changed {
            self.events.push_back(Event::MemberMeta {
                id: id.clone(),
                meta: meta.to_vec(),
                incarnation,
            });
        }
        true
    }

    fn apply_suspect(
        &mut self,
        now: Instant,
        id: &NodeId,
        incarnation: u32,
        from: &NodeId,
    ) -> bool {
        let n = self.group_size();
        let Some(member) = self.members.get_mut(id) else {
            return false;
        };
        if newer(member.incarnation, incarnation) || !member.state.is_active() {
            return false;
        }
        if member.state == State::Suspect && incarnation == member.incarnation {
            // An independent confirmation (Lifeguard): shortens the timeout.
            let Some(suspicion) = self.suspicions.get_mut(id) else {
                return false;
            };
            // Confirmations beyond the K wanted change nothing, and are not
            // spread further: that bounds the gossip one failure causes.
            if suspicion.confirmations >= suspicion.wanted
                || !suspicion.confirmers.insert(from.clone())
            {
                return false;
            }
            suspicion.confirmations += 1;
            // A confirmation may bring the deadline into the past: the timer
            // is then due now, which is not lateness of this node.
            let deadline = suspicion.deadline().max(now);
            self.schedule(
                deadline,
                Timer::Suspicion {
                    id: id.clone(),
                    incarnation,
                },
            );
            return true;
        }
        let previous = member.state;
        member.state = State::Suspect;
        member.incarnation = incarnation;
        member.by = Some(from.clone());
        member.since = now;
        let (min, max) = self.config.suspicion_bounds(n);
        let wanted = self
            .config
            .suspicion_confirmations
            .min(n.saturating_sub(2) as u32);
        let suspicion = Suspicion {
            extended: false,
            start: now,
            confirmers: BTreeSet::from([from.clone()]),
            confirmations: 0,
            wanted,
            min,
            max,
        };
        self.schedule(
            suspicion.deadline(),
            Timer::Suspicion {
                id: id.clone(),
                incarnation,
            },
        );
        self.suspicions.insert(id.clone(), suspicion);
        self.events.push_back(Event::MemberState {
            id: id.clone(),
            state: State::Suspect,
            previous: Some(previous),
            incarnation,
        });
        // Expedited probing: about 2K random members check a fresh suspect at
        // once instead of waiting for their round-robin to reach it, so that
        // the K confirmations Lifeguard wants arrive within one probe.
        if *from != self.id && !self.leaving {
            let p = (2.0 * f64::from(self.config.suspicion_confirmations))
                / (n.saturating_sub(2).max(1) as f64);
            if self.rng.random::<f64>() < p && !self.probes.values().any(|p| p.target == *id) {
                self.stats.expedited_probes += 1;
                self.start_probe(now, id.clone());
            }
        }
        true
    }

    /// Applies a `Dead` or `Left` notice.
    fn apply_down(
        &mut self,
        now: Instant,
        id: &NodeId,
        incarnation: u32,
        state: State,
        by: Option<&NodeId>,
    ) -> bool {
        let Some(member) = self.members.get_mut(id) else {
            return false;
        };
        let stale = match (member.state, state) {
            (State::Left, _) => true,
            // A death notice of a newer incarnation still updates the record,
            // so that a stale alive cannot revive what was declared later.
            (State::Dead, State::Dead) => !newer(incarnation, member.incarnation),
            _ => newer(member.incarnation, incarnation),
        };
        if stale {
            return false;
        }
        let previous = member.state;
        member.state = state;
        member.incarnation = incarnation;
        member.by = by.cloned();
        member.since = now;
        self.suspicions.remove(id);
        self.deactivate(id);
        self.events.push_back(Event::MemberState {
            id: id.clone(),
            state,
            previous: Some(previous),
            incarnation,
        });
        true
    }

    fn suspicion_timeout(&mut self, now: Instant, id: NodeId, incarnation: u32, late: bool) {
        let Some(suspicion) = self.suspicions.get_mut(&id) else {
            return;
        };
        let due = suspicion.deadline();
        let current = self
            .members
            .get(&id)
            .is_some_and(|m| m.state == State::Suspect && m.incarnation == incarnation);
        if !current || now < due {
            return;
        }
        if late && !suspicion.extended {
            // Lifeguard's spirit: a node that was not running may have missed
            // the refutation. Give it the minimum timeout again, once, and ask
            // the suspect directly (a stale rumour is answered with its alive).
            suspicion.extended = true;
            suspicion.start = now;
            let deadline = suspicion.deadline();
            self.health = (self.health + 1).min(self.config.max_local_health);
            self.schedule(
                deadline,
                Timer::Suspicion {
                    id: id.clone(),
                    incarnation,
                },
            );
            if !self.probes.values().any(|p| p.target == id) {
                self.start_probe(now, id);
            }
            return;
        }
        // On this node's evidence alone, and it heard nothing from anyone
        // since: its own links may be what failed. It declares once it hears
        // the overlay again, or once others confirm (a late timer's
        // extension is no one's evidence: it only shortens the timeout).
        let own_evidence_only = suspicion.confirmers.iter().all(|c| *c == self.id);
        if own_evidence_only && self.heard < suspicion.start && self.active.len() >= 2 {
            let again = now + suspicion.min;
            self.schedule(again, Timer::Suspicion { id, incarnation });
            return;
        }
        self.stats.declared_dead += 1;
        let dead = Update::Dead {
            id,
            incarnation,
            from: self.id.clone(),
        };
        let mut fresh = Fresh::default();
        self.apply(now, &dead, false, None, &mut fresh);
        self.push(fresh.updates, None);
    }

    fn reclaim(&mut self, now: Instant) {
        let expired: Vec<NodeId> = self
            .members
            .values()
            .filter(|m| {
                !m.state.is_active()
                    && now.saturating_duration_since(m.since) >= self.config.dead_reclaim
            })
            .map(|m| m.id.clone())
            .collect();
        // BTreeMap order differs between processes: sort, so that a seed
        // replays a simulation exactly.
        let mut expired = expired;
        expired.sort_unstable();
        for id in expired {
            if let Some(member) = self.members.remove(&id) {
                self.members_digest = self.members_digest.wrapping_sub(member.digest_part);
            }
            self.vivaldi.forget(&id);
            self.broadcasts.remove(&id);
            self.events.push_back(Event::Removed { id });
        }
    }

    // ---- probing ----

    /// The shared schedule's period whose phase point (this node's phase
    /// in it) is nearest `now`, and the time from `now` to the next
    /// period's phase point; `None` without a wall clock or with the
    /// schedule off. Rounding to the nearest phase point, not the period
    /// `now` falls in, keeps a round due at the end of a period and fired
    /// a little late in its own period (else it would take the next
    /// period's target and skip one).
    fn period(&self, now: Instant) -> Option<(u64, Duration)> {
        if !self.config.shared_probe_schedule {
            return None;
        }
        let (at, since_epoch) = self.wall?;
        let wall = if now >= at {
            since_epoch.saturating_add(now - at)
        } else {
            since_epoch.saturating_sub(at - now)
        };
        let interval = self.config.probe_interval.as_nanos().max(1);
        let phase = self
            .config
            .probe_interval
            .mul_f64(self.probe_phase)
            .as_nanos();
        let wall = wall.as_nanos();
        let period = (wall.saturating_sub(phase) + interval / 2) / interval;
        // `wall` is within half a period of `period`'s phase point, so the
        // next one is between half a period and one and a half away.
        let next = ((period + 1) * interval + phase).saturating_sub(wall);
        Some((
            u64::try_from(period).ok()?,
            Duration::from_nanos(u64::try_from(next).ok()?),
        ))
    }

    /// The member this node probes in period `r` of the shared schedule:
    /// in the ring of the `n` live members (itself included) in id order,
    /// the one `1 + r mod (n - 1)` places on. Over `n - 1` periods that is
    /// every member once, and in each period each member is the target of
    /// exactly one other.
    fn scheduled_target(&self, r: u64) -> Option<&NodeId> {
        let others = self.ring.len();
        if others == 0 {
            return None;
        }
        let n = others + 1;
        let step = 1 + usize::try_from(r % others as u64).unwrap_or(0);
        let me = self.ring.partition_point(|m| *m < self.id);
        let place = (me + step) % n;
        // `place` is never `me` (0 < step < n); the ring skips this node.
        Some(if place < me {
            &self.ring[place]
        } else {
            &self.ring[place - 1]
        })
    }

    fn next_probe_target(&mut self, period: Option<u64>) -> Option<NodeId> {
        if let Some(r) = period
            && let Some(target) = self.scheduled_target(r)
            && !self.probes.values().any(|p| p.target == *target)
        {
            return Some(target.clone());
        }
        for _ in 0..2 {
            while self.probe_next < self.probe_order.len() {
                let candidate = self.probe_order[self.probe_next].clone();
                self.probe_next += 1;
                let probeable = self.active_index.contains_key(&candidate)
                    && !self.probes.values().any(|p| p.target == candidate);
                if probeable {
                    return Some(candidate);
                }
            }
            // SWIM 4.3: round-robin over a fresh random permutation, so that
            // every member is probed within a bounded number of rounds.
            self.probe_order = self.active.clone();
            self.probe_order.shuffle(&mut self.rng);
            self.probe_next = 0;
        }
        None
    }

    fn probe_timeout_for(&self, target: &NodeId) -> Duration {
        let base = match self
            .members
            .get(target)
            .and_then(|m| m.srtt.map(|s| (s, m.rttvar)))
        {
            Some((srtt, rttvar)) => (srtt + rttvar * 4)
                .clamp(self.config.min_probe_timeout, self.config.max_probe_timeout),
            None => self.config.probe_timeout,
        };
        // Lifeguard: a node that misses acks waits longer before blaming others.
        base * (self.health + 1)
    }

    fn start_probe(&mut self, now: Instant, target: NodeId) {
        let seq = self.take_seq();
        let timeout = self.probe_timeout_for(&target);
        self.stats.probes += 1;
        let updates = self.piggyback(&target);
        let (incarnation, has_coord) = self
            .members
            .get(&target)
            .map_or((0, false), |m| (m.incarnation, m.coord.is_some()));
        let want_coord = !has_coord
            || self
                .coord_asked
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.coord_interval);
        if want_coord {
            self.coord_asked = Some(now);
        }
        self.send(
            target.clone(),
            Message::Ping(Ping {
                seq,
                want_coord,
                updates,
            }),
        );
        self.probes.insert(
            seq,
            Probe {
                target,
                incarnation,
                sent: now,
                timeout,
                relays: Vec::new(),
                nackers: Vec::new(),
                held: None,
                direct_due: Some(now + timeout),
            },
        );
        self.schedule(now + timeout, Timer::DirectTimeout(seq));
    }

    /// The ping of probe `seq` could not be sent: the caller has no keys
    /// with its target yet and queued it behind a handshake. The probe is
    /// timed from [`probe_released`](Self::probe_released) instead, up to
    /// [`Config::max_probe_hold`]: a ping that never left says nothing
    /// about its target. (A node just restarted has keys with nobody; its
    /// first probes used to fail on the handshake's time and it suspected
    /// healthy members: 26 times in 60 s at N = 1000.)
    pub fn probe_held(&mut self, now: Instant, seq: u16) {
        if let Some(probe) = self.probes.get_mut(&seq)
            && probe.held.is_none()
            && probe.direct_due.is_some()
        {
            probe.held = Some(now);
        }
    }

    /// The held ping of probe `seq` has just been sent: its timeout and
    /// its round-trip time count from now.
    pub fn probe_released(&mut self, now: Instant, seq: u16) {
        let Some(probe) = self.probes.get_mut(&seq) else {
            return;
        };
        if probe.held.take().is_none() || probe.direct_due.is_none() {
            return;
        }
        probe.sent = now;
        let at = now + probe.timeout;
        probe.direct_due = Some(at);
        self.schedule(at, Timer::DirectTimeout(seq));
    }

    fn direct_timeout(&mut self, now: Instant, seq: u16) {
        let Some(probe) = self.probes.get_mut(&seq) else {
            return;
        };
        match probe.direct_due {
            Some(due) if now >= due => {}
            // Stale: the timer of a ping before its release, or one that
            // fires after the indirect phase began.
            _ => return,
        }
        if let Some(held) = probe.held {
            if now.saturating_duration_since(held) < self.config.max_probe_hold {
                // Still waiting for keys: look again a timeout later.
                let at = now + probe.timeout;
                probe.direct_due = Some(at);
                self.schedule(at, Timer::DirectTimeout(seq));
                return;
            }
            // Held too long: the target is probed indirectly, as if its
            // ping had left a timeout ago and been lost.
            probe.held = None;
            probe.sent = now.checked_sub(probe.timeout).unwrap_or(now);
        }
        probe.direct_due = None;
        let probe = &self.probes[&seq];
        let target = probe.target.clone();
        let (sent, timeout) = (probe.sent, probe.timeout);
        let (relays, paths): (Vec<NodeId>, Vec<Option<Duration>>) =
            self.choose_relays(&target).into_iter().unzip();
        let deadline = self.indirect_deadline(now, sent, timeout, &paths);
        self.stats.indirect_probes += 1;
        for relay in &relays {
            let updates = self.piggyback(relay);
            self.send(
                relay.clone(),
                Message::PingReq(PingReq {
                    seq,
                    target: target.clone(),
                    updates,
                }),
            );
        }
        if let Some(probe) = self.probes.get_mut(&seq) {
            probe.relays = relays;
        }
        self.schedule(deadline.max(now), Timer::IndirectTimeout(seq));
    }

    /// The relays for an indirect probe of `target`: of `RELAY_DRAW` x
    /// `indirect_probes` members drawn at random, the `indirect_probes`
    /// with the shortest estimated path through them (`relay_path`);
    /// members without an estimate come last, in their random order. On
    /// the wide area a relay drawn blindly sits across an ocean from a near
    /// target as often as not, and the indirect stage must wait for it
    /// (`indirect_deadline`); drawing among a few more and keeping the
    /// nearer ones keeps the relays varied and their answers quick
    /// (simulator, 32 nodes on the WAN matrix: detection p50 ~1500 ->
    /// ~1100 ms; protocol.md section 10 (8)). On a LAN every path is about
    /// as short, and the choice stays about as random as the draw.
    /// Answers each relay with its estimated path, shortest first.
    fn choose_relays(&mut self, target: &NodeId) -> Vec<(NodeId, Option<Duration>)> {
        let want = self.config.indirect_probes;
        let drawn = self.random_active(want * RELAY_DRAW, std::slice::from_ref(target));
        let mut keyed: Vec<(bool, NodeId, Option<Duration>)> = drawn
            .into_iter()
            .map(|r| {
                let path = self.relay_path(&r, target);
                let suspect = self
                    .members
                    .get(&r)
                    .is_some_and(|m| m.state == State::Suspect);
                (suspect, r, path)
            })
            .collect();
        // Stable: ties keep the draw's random order; suspects, then unknown
        // paths, last.
        keyed.sort_by_key(|(suspect, _, path)| (*suspect, path.unwrap_or(Duration::MAX)));
        keyed.truncate(want);
        keyed.into_iter().map(|(_, r, path)| (r, path)).collect()
    }

    /// The estimated round trip of a probe through `relay`: the measured
    /// RTT to the relay (or the coordinates' distance) plus the
    /// coordinates' distance from the relay to `target`. `None` while
    /// either has no coordinate.
    fn relay_path(&self, relay: &NodeId, target: &NodeId) -> Option<Duration> {
        let target_coord = self.members.get(target)?.coord.as_ref()?;
        let relay = self.members.get(relay)?;
        let coord = relay.coord.as_ref()?;
        let to_relay = relay
            .srtt
            .unwrap_or_else(|| self.vivaldi.distance_to(coord));
        Some(to_relay + coords::distance(coord, target_coord))
    }

    /// When the indirect stage of a probe sent at `sent` with direct
    /// timeout `timeout` gives up: `indirect_timeout_factor` timeouts after
    /// the direct one, or later when the relays' round trips (to a relay,
    /// then to the target and back) are estimated longer, so that the
    /// relays can answer, or nack, in time. The target's timeout fits the
    /// target's distance only; on the wide area a relay across an ocean
    /// from a near target answered after the deadline, and under 5% loss
    /// its late answers made healthy members suspects (with the relay's
    /// dropped late acks, see `start_relay`: on the real testnet, `testnet
    /// run loss --nodes 16 --wan`, 15 244 suspicions in 300 s and two
    /// healthy members declared dead; protocol.md section 10 (8)).
    ///
    /// The wait is for the second quickest relay (`relay_path`, with half
    /// again for jitter and a minimum timeout for the relay's own work),
    /// not the slowest: one ack clears the target, and two paths survive
    /// the loss of either. Waiting for the slowest of five cost ~400 ms of
    /// detection on the WAN (kill-wan p99 1262 -> 1719 ms) for ~10 fewer
    /// refutations in 300 s. Capped at the longest a direct probe may
    /// wait, times the factor.
    fn indirect_deadline(
        &self,
        now: Instant,
        sent: Instant,
        timeout: Duration,
        paths: &[Option<Duration>],
    ) -> Instant {
        let factor = self.config.indirect_timeout_factor;
        let floor = sent + timeout * (1 + factor);
        // The relays' estimated paths in preference order (`choose_relays`:
        // alive relays shortest first, then suspects): the second is the
        // second alive relay's when two were asked, as a suspect relay is
        // the least likely to answer.
        let known: Vec<Duration> = paths.iter().flatten().copied().collect();
        let Some(&relayed) = known.get(1).or(known.first()) else {
            return floor;
        };
        let cap = self.config.max_probe_timeout * factor * (self.health + 1);
        let need = (relayed + relayed / 2 + self.config.min_probe_timeout).min(cap);
        floor.max(now + need)
    }

    fn indirect_timeout(&mut self, now: Instant, seq: u16) {
        let Some(probe) = self.probes.remove(&seq) else {
            return;
        };
        self.stats.failed_probes += 1;
        // Lifeguard: relays that did not even nack point at our own links,
        // one step of local health per silent relay. But one relay's nack
        // shows that this node's links and its processing work: the silent
        // ones are then the relays' own fault (cut off with the target, in
        // a partition), and blaming ourselves for them only slows this
        // node down when it should be declaring them. Found in the
        // simulator (16 nodes, 7 cut away, `testnet sim --scenario
        // partition --minority 0.44`): the majority's local health climbed
        // to 7-8 within a second, its probe rounds and timeouts stretched
        // 8-9 times, and the whole minority took 1.7-2.1 s (p50) to be
        // declared dead, against 0.5 s for a single crash (protocol.md
        // section 10 (9)).
        let penalty = if probe.relays.is_empty() {
            1
        } else if probe.nackers.is_empty() {
            probe.relays.len() as u32
        } else {
            0
        };
        self.health = (self.health + penalty).min(self.config.max_local_health);
        if self.is_isolated(now) {
            // Every probe fails: the fault is likelier ours than theirs.
            return;
        }
        let Some(member) = self.members.get(&probe.target) else {
            return;
        };
        // Blame the incarnation that was probed: a member that announced a
        // newer one since (it refuted, or restarted) is not concerned.
        if !member.state.is_active() || self.leaving || member.incarnation != probe.incarnation {
            return;
        }
        self.stats.suspicions += 1;
        let suspect = Update::Suspect {
            id: probe.target,
            incarnation: probe.incarnation,
            from: self.id.clone(),
        };
        let mut fresh = Fresh::default();
        self.apply(now, &suspect, false, None, &mut fresh);
        self.push(fresh.updates, None);
    }

    fn handle_ack(&mut self, now: Instant, from: &NodeId, ack: Ack) {
        if let Some(relay) = self.relays.get(&ack.seq)
            && relay.target == *from
        {
            let Some(relay) = self.relays.remove(&ack.seq) else {
                return;
            };
            // The target's coordinate, sent unasked to this relay, is the
            // target's all the same: kept, or the target would not send it
            // again until it moved (the relayed round trip says nothing of
            // the distance, so it moves nothing here).
            if let Some(coord) = ack.coord
                && coord.is_valid()
                && coord.is_compatible_with(self.vivaldi.coordinate())
                && let Some(member) = self.members.get_mut(from)
            {
                member.coord = Some(coord);
                member.coord_at = Some(now);
            }
            let updates = self.piggyback(&relay.requester);
            self.send(
                relay.requester,
                Message::Ack(Ack {
                    seq: relay.seq,
                    coord: None,
                    updates,
                }),
            );
            return;
        }
        let Entry::Occupied(entry) = self.probes.entry(ack.seq) else {
            return;
        };
        let probe = entry.get();
        if probe.target == *from || probe.relays.contains(from) {
            self.heard = self.heard.max(now);
        }
        if probe.target == *from {
            let probe = entry.remove();
            let rtt = now.saturating_duration_since(probe.sent);
            self.health = self.health.saturating_sub(1);
            if let Some(member) = self.members.get_mut(from) {
                member.record_rtt(rtt);
                // Without a fresh coordinate, the last one the member sent
                // still places it: coordinates drift slowly.
                let fresh = ack.coord.is_some();
                if let Some(coord) = ack.coord.or_else(|| member.coord.clone()) {
                    // A coordinate that Vivaldi rejects is not kept either.
                    if self
                        .vivaldi
                        .update(from, &coord, rtt, &mut self.rng)
                        .is_ok()
                        && fresh
                    {
                        member.coord = Some(coord);
                        member.coord_at = Some(now);
                    }
                }
            }
            self.events.push_back(Event::ProbeRtt {
                id: from.clone(),
                rtt,
            });
        } else if probe.relays.contains(from) {
            entry.remove();
        }
    }

    fn start_relay(&mut self, now: Instant, from: &NodeId, req: PingReq) {
        if req.target == self.id {
            let updates = self.piggyback(from);
            self.send(
                from.clone(),
                Message::Ack(Ack {
                    seq: req.seq,
                    coord: None,
                    updates,
                }),
            );
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            // A flood of ping-reqs (hostile, or a requester gone wrong):
            // the requester counts this relay silent, as if it were lost.
            return;
        }
        let seq = self.take_seq();
        // Lifeguard: nack a little before the requester gives up on us, and
        // still forward an ack that comes later: a timeout of srtt + 4
        // rttvar is barely above the round trip when the path is steady,
        // and 0.8 of it below, so a relay far from its target nacked before
        // the target's ack could come and dropped the ack (simulator, 16
        // nodes on the WAN matrix, 5% loss, 300 s: 1114 suspicions of
        // healthy members before, 516 with the late ack forwarded, 0 with
        // `indirect_deadline` too).
        let full = self.probe_timeout_for(&req.target);
        let timeout = full.mul_f64(0.8);
        let updates = self.piggyback(&req.target);
        self.send(
            req.target.clone(),
            Message::Ping(Ping {
                seq,
                want_coord: false,
                updates,
            }),
        );
        self.relays.insert(
            seq,
            Relay {
                requester: from.clone(),
                seq: req.seq,
                target: req.target,
                nack_at: now + timeout,
                expire_at: now + timeout + full + full / 2,
                nacked: false,
            },
        );
        self.schedule(now + timeout, Timer::RelayTimeout(seq));
    }

    // ---- dissemination ----

    fn enqueue_broadcast(&mut self, update: Update) {
        self.broadcasts.push(update);
    }

    /// Updates to piggyback on a message to `to`: first what concerns `to`
    /// itself (Lifeguard's buddy system: a suspect hears of its suspicion
    /// from the very next probe), then the least transmitted.
    fn piggyback(&mut self, to: &NodeId) -> Vec<Update> {
        let mut out = Vec::new();
        if let Some(update) = self.broadcasts.about(to) {
            out.push(update.clone());
        } else if let Some(m) = self.members.get(to)
            && matches!(m.state, State::Suspect | State::Dead)
        {
            out.push(m.to_update());
        }
        if self.broadcasts.is_empty() {
            return out;
        }
        let limit = self.config.retransmit_limit(self.group_size());
        let room = self.config.max_piggyback.saturating_sub(out.len());
        let used: usize = out.iter().map(Update::encoded_len).sum();
        let bytes = self
            .config
            .max_message_bytes
            .saturating_sub(MESSAGE_RESERVE + used);
        out.extend(self.broadcasts.take(room, bytes, limit, to));
        out
    }

    /// Eager push: sends fresh updates at once to `gossip_fanout` random
    /// members, instead of waiting for them to ride on the next probes.
    fn push(&mut self, updates: Vec<Update>, except: Option<&NodeId>) {
        if updates.is_empty() {
            return;
        }
        let exclude: Vec<NodeId> = except.into_iter().cloned().collect();
        let targets = self.random_active(self.config.gossip_fanout, &exclude);
        for to in targets {
            self.send(
                to,
                Message::Gossip(Gossip {
                    updates: updates.clone(),
                }),
            );
        }
    }

    fn start_sync(&mut self) {
        // Dead members are candidates too: that is how the two sides of a
        // healed partition find each other again.
        let candidates: Vec<NodeId> = self
            .members
            .values()
            .filter(|m| m.state != State::Left)
            .map(|m| m.id.clone())
            .collect();
        let mut candidates = candidates;
        candidates.sort_unstable();
        if candidates.is_empty() {
            return;
        }
        let to = candidates[self.rng.random_range(0..candidates.len())].clone();
        let digest = self.digest();
        self.send(
            to,
            Message::Sync(Sync {
                digest,
                updates: Vec::new(),
                reply: true,
            }),
        );
    }

    fn send_table(&mut self, to: &NodeId, ask_back: bool) {
        // Chunks stay far below the decoder's size cap.
        const CHUNK_BYTES: usize = 32 * 1024;
        let digest = self.digest();
        let mut chunks: Vec<Vec<Update>> = vec![vec![self.own_alive()]];
        let mut size = 64 + self.meta.len();
        let mut sorted: Vec<&Member> = self.members.values().collect();
        sorted.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        for member in sorted {
            let cost = 96 + member.meta.len();
            if size + cost > CHUNK_BYTES || chunks.last().is_some_and(|c| c.len() >= 256) {
                chunks.push(Vec::new());
                size = 0;
            }
            size += cost;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(member.to_update());
            }
        }
        for (i, updates) in chunks.into_iter().enumerate() {
            self.send(
                to.clone(),
                Message::Sync(Sync {
                    digest,
                    updates,
                    reply: ask_back && i == 0,
                }),
            );
        }
    }

    // ---- helpers ----

    fn own_alive(&self) -> Update {
        Update::Alive {
            id: self.id.clone(),
            incarnation: self.incarnation,
            meta: self.meta.clone(),
        }
    }

    fn group_size(&self) -> usize {
        self.active.len() + 1
    }

    fn activate(&mut self, id: &NodeId) {
        if self.active_index.contains_key(id) {
            return;
        }
        self.active_index.insert(id.clone(), self.active.len());
        self.active.push(id.clone());
        if let Err(at) = self.ring.binary_search(id) {
            self.ring.insert(at, id.clone());
        }
        debug_assert_eq!(
            self.ring.len(),
            self.active.len(),
            "the ring is the active set"
        );
        // SWIM 4.3: a new member goes to a random place in the probe order.
        let at = self
            .rng
            .random_range(self.probe_next..=self.probe_order.len());
        self.probe_order.insert(at, id.clone());
    }

    fn deactivate(&mut self, id: &NodeId) {
        let Some(index) = self.active_index.remove(id) else {
            return;
        };
        self.active.swap_remove(index);
        if let Ok(at) = self.ring.binary_search(id) {
            self.ring.remove(at);
        }
        debug_assert_eq!(
            self.ring.len(),
            self.active.len(),
            "the ring is the active set"
        );
        if let Some(moved) = self.active.get(index) {
            self.active_index.insert(moved.clone(), index);
        }
    }

    /// Up to `k` distinct random active members, none of them in `exclude`.
    fn random_active(&mut self, k: usize, exclude: &[NodeId]) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::with_capacity(k);
        let eligible = self.active.len()
            - exclude
                .iter()
                .filter(|e| self.active_index.contains_key(*e))
                .count();
        let want = k.min(eligible);
        if want == 0 {
            return out;
        }
        if want * 4 >= self.active.len() {
            let mut pool: Vec<NodeId> = self
                .active
                .iter()
                .filter(|id| !exclude.contains(id))
                .cloned()
                .collect();
            pool.shuffle(&mut self.rng);
            pool.truncate(want);
            return pool;
        }
        while out.len() < want {
            let candidate = &self.active[self.rng.random_range(0..self.active.len())];
            if !exclude.contains(candidate) && !out.contains(candidate) {
                out.push(candidate.clone());
            }
        }
        out
    }

    /// Sequence numbers are 16 bits on the wire: far more than the probes
    /// and relays outstanding at once, and two bytes less per datagram than
    /// a counter that only grows.
    /// The next sequence number that no open probe or relay holds (a relay
    /// entry lingers after its nack, so the counter could come round to
    /// one; `MAX_RELAYS` and the probes in flight leave plenty free).
    fn take_seq(&mut self) -> u16 {
        loop {
            self.next_seq = self.next_seq.wrapping_add(1);
            let seq = self.next_seq;
            if !self.probes.contains_key(&seq) && !self.relays.contains_key(&seq) {
                return seq;
            }
        }
    }

    fn jittered(&mut self, base: Duration) -> Duration {
        base.mul_f64(self.rng.random_range(0.75..1.25))
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timer_order += 1;
        self.timers.push(Scheduled {
            at,
            order: self.timer_order,
            timer,
        });
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.stats.messages_out += 1;
        let app = if matches!(message, Message::Sync(_) | Message::Nack(_)) {
            Vec::new()
        } else {
            let used = crate::wire::base_len(&message)
                + message
                    .updates()
                    .iter()
                    .map(Update::encoded_len)
                    .sum::<usize>()
                + crate::wire::LIST_HEADERS_LEN;
            self.app_piggyback(self.config.max_message_bytes.saturating_sub(used))
        };
        self.transmits.push_back(Transmit { to, message, app });
    }

    /// Application payloads to piggyback: the least transmitted first,
    /// within `room` encoded bytes.
    fn app_piggyback(&mut self, room: usize) -> Vec<Vec<u8>> {
        if self.app_broadcasts.is_empty() {
            return Vec::new();
        }
        let limit = self.config.app_retransmit_limit(self.group_size());
        self.app_broadcasts
            .take(room, crate::wire::MAX_APP_PAYLOADS / 2, limit)
    }

    /// The largest application payload [`broadcast_app`](Self::broadcast_app)
    /// accepts: what fits one message beside its head.
    pub fn max_app_payload(&self) -> usize {
        self.config
            .max_message_bytes
            .saturating_sub(MESSAGE_RESERVE)
    }

    /// Disseminates an application payload (a session-map delta) the way
    /// membership updates are: pushed at once to `gossip_fanout` members,
    /// then piggybacked on probes up to the retransmit limit. A payload with
    /// the same `key` as a queued one replaces it. Receivers find payloads
    /// beside the message ([`crate::wire::Decoded::app`]); SWIM does not
    /// look at them. Returns `false`, and spreads nothing, when the payload
    /// is larger than [`max_app_payload`](Self::max_app_payload): the caller
    /// must carry it another way (anti-entropy).
    pub fn broadcast_app(&mut self, key: Vec<u8>, payload: Vec<u8>) -> bool {
        if payload.len() + 3 > self.max_app_payload() {
            return false;
        }
        let targets = self.random_active(self.config.gossip_fanout, &[]);
        for to in targets {
            self.stats.messages_out += 1;
            self.transmits.push_back(Transmit {
                to,
                message: Message::Gossip(Gossip {
                    updates: Vec::new(),
                }),
                app: vec![payload.clone()],
            });
        }
        self.app_broadcasts.push(key, payload, 1);
        true
    }
}

/// FNV-1a over one member entry: stable across builds and platforms, unlike
/// std's hasher, because digests are compared between nodes.
/// How far ahead of the incarnation a member announced a rumour about it
/// may be. Honest suspicions carry an incarnation the accuser heard from
/// the member, so they lead what this node holds only by announcements it
/// missed; a handful is plenty.
pub(crate) const PLAUSIBLE_LEAD: u32 = 64;

/// The largest lead of a rumour about this node that it refutes by jumping
/// past it; see `apply_about_self`.
const MAX_REFUTATION_JUMP: u32 = 1 << 30;

/// Whether incarnation `a` is newer than `b`. Incarnations compare as serial
/// numbers (RFC 1982) modulo 2^32: `a` is newer when it is less than 2^31
/// ahead of `b`. A member can therefore never be stuck at `u32::MAX`: its
/// next announcement wraps to 0, which is newer.
pub fn newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// Whether a relayed rumour's incarnation `a` is further ahead of what the
/// member itself announced (`vouched`) than any honest accuser could be
/// (see [`PLAUSIBLE_LEAD`]), given that this node holds `held`. A rumour
/// older than `held` is stale, not a lie: it changes nothing here. Any
/// other is measured forward from `vouched` modulo 2^32, never as "behind":
/// serial arithmetic alone would let a lie 2^31 or more past `vouched`
/// count as old there while it is not older than `held`, which lies a few
/// announcements past `vouched`; exactly 2^31 from `held` is neither newer
/// nor older, and the precedence rules would adopt it.
///
/// `held` lags `vouched` only when the member itself announced something
/// this node did not adopt (a newer departure notice of a member held as
/// left): relayed rumours between the two then count as implausible, which
/// costs nothing, since the member is gone and answers a notice first-hand.
fn implausible(a: u32, held: u32, vouched: u32) -> bool {
    !newer(held, a) && a.wrapping_sub(vouched) > PLAUSIBLE_LEAD
}

/// How far incarnation `a` is ahead of `b`, 0 when it is not ahead. Exactly
/// 2^31 ahead counts as ahead: it is neither newer nor older under serial
/// arithmetic, and only a liar produces it.
fn ahead(a: u32, b: u32) -> u32 {
    let lead = a.wrapping_sub(b);
    if lead <= 1 << 31 { lead } else { 0 }
}

fn entry_hash(id: &NodeId, incarnation: u32, state: State, meta: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    eat(&(id.as_bytes().len() as u32).to_be_bytes());
    eat(id.as_bytes());
    eat(&incarnation.to_be_bytes());
    eat(&[state as u8]);
    eat(meta);
    hash
}

/// Greatest common divisor.
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests;
