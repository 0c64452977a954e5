//! The simulator: `n` real [`baton_protocol::node::Node`]s over a simulated
//! network, in virtual time, driven exactly as the node's driver drives
//! one: every `handle_*` call is followed by draining `poll_transmit`,
//! `poll_action` and `poll_event`, and the node sleeps until `poll_timeout`.
//!
//! One event queue, ordered by (virtual time, insertion order), holds
//! datagram deliveries, stream and connection deliveries
//! ([`super::transport`]), timer wake-ups and scheduled fault actions, so a
//! run is a pure function of its configuration and seed. Datagrams are
//! sealed by the sender and opened by the receiver, as on the wire. The
//! invariants are checked on the events that could break them, and the
//! session ones every [`CHECK_EVERY`].

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use baton_protocol::NodeId;
use baton_protocol::map::LocalKey;
use baton_protocol::meta::NodeMeta;
use baton_protocol::node::{self, Action, ClientPolicy, Config, Event, Node, Timing, Transmit};
use baton_protocol::peering::Policy;
use baton_protocol::session::{Record, SessionState};
use baton_protocol::sessions;
use baton_protocol::swim::{self, State};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::cut_detection::CutDetection;
use super::dissemination::Dissemination;
use super::health::Health;
use super::identity;
use super::invariants::crashed_declared_dead::{Completeness, Detected};
use super::invariants::healthy_not_dead::{self, Verdict};
use super::invariants::not_doubly_owned::DoubleOwnership;
use super::invariants::not_lost::Lost;
use super::invariants::restart_rejoins::Rejoins;
use super::invariants::takeover_by_one_backup::Takeovers;
use super::invariants::{Violation, transfer_keeps_owner, wire_round_trip};
use super::network::{Dropped, Latency, Network, mix};
use super::ownership::{Ownership, Sid};
use super::report::MapCounts;
use super::takeovers::TakeoverTimes;
use super::traffic::Window;
use super::transport::{Delivery, Resolved, StreamCounters, Transport};
use super::verifier::{Memoized, VerifierStats};
use super::views::{Seen, Views};

/// The node the simulator runs.
pub type SimNode = Node<LocalKey, SmallRng>;

fn counts(node: &SimNode) -> super::traffic::Counts {
    super::traffic::Counts::of(node.stats(), &node.swim().stats())
}

/// Keep at most this many violations in memory (all are counted).
const MAX_KEPT_VIOLATIONS: usize = 100;

/// How often the session invariants are checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Wall-clock time (Unix ms) at virtual time zero: records carry it.
const UNIX_BASE_MS: u64 = 1_700_000_000_000;

/// The overlay every simulated node belongs to.
const OVERLAY: &str = "sim";

/// What a simulation is made of.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// The SWIM parameters every node uses.
    pub protocol: swim::Config,
    /// The session engine's parameters (the verifier is the simulator's).
    pub sessions: sessions::Config,
    /// Sessions each node will host.
    pub capacity: u32,
    /// Link latencies.
    pub latency: Latency,
    /// Largest extra delay of a packet, as a fraction of its link's
    /// one-way delay.
    pub jitter: f64,
    /// Every live node must declare a crashed node dead within this.
    pub detection_bound: Duration,
    /// A restarted node must be alive in every view within this.
    pub rejoin_bound: Duration,
    /// A metadata update that has not reached 99.9% of the nodes after this
    /// counts as incomplete.
    pub dissemination_timeout: Duration,
    /// How long after a fault a death notice about an incarnation held
    /// during it is still expected; `None` derives it from the protocol
    /// (longest suspicion plus 5 s).
    pub grace: Option<Duration>,
    /// Datagrams a paused node buffers (its socket's receive queue); more
    /// are dropped.
    pub backlog_limit: usize,
    /// Stream items a paused node buffers; a stream whose item does not fit
    /// breaks (the driver resets a stream it cannot drain).
    pub stream_backlog_limit: usize,
    /// The bound of the session invariants: a crashed primary's sessions
    /// must be claimed, an unhosted session hosted again, two owners that
    /// hear each other reduced to one, within this.
    pub session_bound: Duration,
    /// How often each session's client sends a report (RTCP receiver
    /// report: its consent to the stream) to every node streaming to it;
    /// `None` (the default): clients stay silent, and `sessions.consent`
    /// is off. With reports, every hosting node shares a signed
    /// performance summary by gossip when its numbers move (every 2 s),
    /// which at N=1000 floods every node with N summaries per period: a
    /// 60 s run did not finish in 15 min of wall time (2026-12-01).
    pub client_reports: Option<Duration>,
    /// How long a started instance takes to send its first packet, when
    /// its node tells the protocol so (`Node::handle_service_started`,
    /// which confirms a handover to it).
    pub service_start: Duration,
    /// The tags of node `i` (`--tag`), none for nodes beyond the list:
    /// with [`Latency::Matrix`], `region` tags that follow the matrix's
    /// round-robin regions let placement spread backups over them.
    pub tags: Vec<baton_protocol::meta::Tags>,
    /// Wall clocks disagree by up to this much: node `i`'s SWIM reads the
    /// virtual wall clock shifted by a fixed offset drawn from the seed,
    /// uniform in `[0, clock_skew)` (the shared probe schedule numbers its
    /// periods on it; record timestamps keep the common clock).
    pub clock_skew: Duration,
}

impl SimConfig {
    /// `nodes` nodes on a LAN (0.1-1 ms RTT, 10% jitter), LAN protocol profile.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            protocol: swim::Config::lan(),
            sessions: sessions::Config {
                // Simulated clients send nothing unless `client_reports`
                // says so; consent is the engine's unit tests' and the
                // end-to-end tests' business.
                consent: sessions::ConsentConfig {
                    required: false,
                    ..sessions::ConsentConfig::default()
                },
                ..sessions::Config::default()
            },
            capacity: 16,
            latency: Latency::lan(),
            jitter: 0.1,
            detection_bound: Duration::from_secs(10),
            rejoin_bound: Duration::from_secs(5),
            dissemination_timeout: Duration::from_secs(30),
            grace: None,
            backlog_limit: 4096,
            stream_backlog_limit: 4096,
            session_bound: Duration::from_secs(10),
            client_reports: None,
            service_start: Duration::from_millis(20),
            tags: Vec::new(),
            clock_skew: Duration::ZERO,
        }
    }
}

/// Where a node's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not started yet.
    NotStarted,
    /// Running.
    Running,
    /// Alive but processing nothing; what reaches it queues up.
    Paused,
    /// Gone; what reaches it is dropped.
    Crashed,
}

/// Convergence watches: each measures from when it is set until every live
/// node sees every other live node alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// From the first node's start.
    Warmup,
    /// From a partition heal.
    Heal,
    /// From the moment faults stop.
    Settle,
}

/// What happened to datagrams, and other counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams handed to a running node.
    pub delivered: u64,
    /// Datagrams lost at random.
    pub lost: u64,
    /// Datagrams dropped by a cut.
    pub cut: u64,
    /// Datagrams that arrived at a crashed (or not yet started) node.
    pub to_stopped: u64,
    /// Datagrams dropped because a paused node's backlog was full.
    pub backlog_dropped: u64,
    /// Datagrams to an address that is no node of the simulation.
    pub unknown_recipient: u64,
    /// Refutations (a node defending itself with a higher incarnation).
    pub refutations: u64,
    /// Healthy nodes declared dead.
    pub false_positives: u64,
    /// Healthy nodes suspected (not a failure: suspicion is how SWIM checks).
    pub suspicions_of_healthy: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Pauses.
    pub pauses: u64,
    /// Violations found (more than are kept).
    pub violations: u64,
    /// Peers admitted (handshakes that ended with keys, both sides count).
    pub admitted: u64,
    /// Handshakes that failed.
    pub handshakes_failed: u64,
    /// Refusals (by this node or by its peer).
    pub refusals: u64,
    /// Sessions the simulator asked a node to open.
    pub opened: u64,
    /// Opens the node refused.
    pub open_failed: u64,
    /// Times a node fenced itself (it heard nothing from the overlay).
    pub fenced: u64,
    /// Times a node saw two processes holding one identity.
    pub duplicate_identity: u64,
    /// Client reports handed to the nodes hosting their sessions.
    pub client_reports: u64,
    /// Sessions closed (their client stopped consenting, or a close).
    pub closed: u64,
}

/// What reaches a node; a paused node queues these.
#[derive(Debug)]
enum Input {
    Datagram { from: u32, bytes: Vec<u8> },
    Net(Delivery),
    Discovered(Vec<u32>),
    Started(String),
}

#[derive(Debug)]
struct Slot {
    id: NodeId,
    node: Option<Box<SimNode>>,
    status: Status,
    backlog: VecDeque<Input>,
    backlog_datagrams: usize,
    backlog_streams: usize,
    /// The earliest wake-up in the queue, so that the queue holds about one
    /// per node.
    next_wake: Option<u64>,
    /// Processes started for this node so far.
    life: u32,
    /// The incarnation last seen, to tell [`Health`] of new ones.
    incarnation: u32,
    /// Undecodable messages and unreadable payloads counted so far.
    undecodable: (u64, u64),
    /// Announcements made by [`Sim::set_meta`].
    meta_version: u64,
    /// When a requested restart may happen (it also waits until every live
    /// node has declared the crash).
    restart_at: Option<u64>,
}

#[derive(Debug)]
enum What {
    Datagram {
        to: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    Net(Delivery),
    Discover {
        node: u32,
        life: u32,
        peers: Vec<u32>,
    },
    Wake(u32),
    /// An instance a node started sends its first packet.
    ServiceStarted {
        node: u32,
        life: u32,
        id: String,
    },
    Start {
        node: u32,
        seeds: Vec<u32>,
    },
    Restart(u32),
    Resume(u32),
    DetectionDeadline(u32),
    RejoinDeadline {
        node: u32,
        life: u32,
    },
    Check,
    Sweep,
    Clients,
}

#[derive(Debug)]
struct Queued {
    at: u64,
    seq: u64,
    what: What,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed: the BinaryHeap pops the earliest, first-inserted event.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The session measures and invariants of a run.
#[derive(Debug)]
struct Sessions {
    ownership: Ownership,
    claims: Takeovers,
    doubles: DoubleOwnership,
    lost: Lost,
    times: TakeoverTimes,
    /// Sessions closed: nobody need host them any more.
    closed: BTreeSet<Sid>,
}

/// A deterministic simulation of `n` Baton nodes.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    base: Instant,
    now: u64,
    queue: BinaryHeap<Queued>,
    seq: u64,
    nodes: Vec<Slot>,
    /// Node id to index (lookups only, never iterated).
    index: HashMap<NodeId, usize>,
    net: Network,
    net_rng: SmallRng,
    rng: SmallRng,
    transport: Transport,
    verifier: Memoized,
    views: Views,
    health: Health,
    completeness: Completeness,
    cut_detection: CutDetection,
    /// The other side of the same cuts: until every minority node has
    /// every majority node dead.
    minority_verdict: CutDetection,
    rejoins: Rejoins,
    dissemination: Dissemination,
    sessions: Sessions,
    watches: Vec<(Watch, u64)>,
    converged: [Vec<Duration>; 3],
    violations: Vec<Violation>,
    counters: Counters,
    /// Map counters of the lives that ended (crashes).
    retired_map: MapCounts,
    window: Window,
    window_span: (Option<u64>, Option<u64>),
    unstarted: usize,
    tx_buf: Vec<Transmit>,
    act_buf: Vec<Action>,
    ev_buf: Vec<Event>,
}

impl Sim {
    /// A simulation of `config.nodes` nodes, none started yet (see
    /// [`bootstrap`](Self::bootstrap)).
    pub fn new(config: SimConfig) -> Self {
        let n = config.nodes.min(identity::MAX_NODES);
        let (_, max_suspicion) = config.protocol.suspicion_bounds(n);
        let grace = config
            .grace
            .unwrap_or(max_suspicion + Duration::from_secs(5));
        let nodes: Vec<Slot> = (0..n)
            .map(|i| Slot {
                id: baton_protocol::session::Signer::id(&identity::key(config.seed, i)).clone(),
                node: None,
                status: Status::NotStarted,
                backlog: VecDeque::new(),
                backlog_datagrams: 0,
                backlog_streams: 0,
                next_wake: None,
                life: 0,
                incarnation: 0,
                undecodable: (0, 0),
                meta_version: 0,
                restart_at: None,
            })
            .collect();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.id.clone(), i))
            .collect();
        let bound = config.session_bound;
        let mut sim = Sim {
            net: Network::new(n, config.seed, config.latency.clone(), config.jitter),
            net_rng: SmallRng::seed_from_u64(mix(config.seed ^ 0x006e_6574_776f_726b)),
            rng: SmallRng::seed_from_u64(mix(config.seed ^ 0x7369_6d75_6c61_746f)),
            transport: Transport::new(),
            verifier: Memoized::new(),
            views: Views::new(n),
            health: Health::new(n, grace),
            completeness: Completeness::new(config.detection_bound),
            cut_detection: CutDetection::new(),
            minority_verdict: CutDetection::new(),
            rejoins: Rejoins::new(config.rejoin_bound),
            dissemination: Dissemination::new(config.dissemination_timeout),
            sessions: Sessions {
                ownership: Ownership::new(n),
                claims: Takeovers::new(bound),
                doubles: DoubleOwnership::new(bound),
                lost: Lost::new(bound),
                times: TakeoverTimes::new(),
                closed: BTreeSet::new(),
            },
            base: Instant::now(),
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes,
            index,
            watches: Vec::new(),
            converged: Default::default(),
            violations: Vec::new(),
            counters: Counters::default(),
            retired_map: MapCounts::default(),
            window: Window::default(),
            window_span: (None, None),
            unstarted: n,
            tx_buf: Vec::new(),
            act_buf: Vec::new(),
            ev_buf: Vec::new(),
            config,
        };
        sim.push(Self::ns(CHECK_EVERY), What::Check);
        sim.push(Self::ns(SWEEP_EVERY), What::Sweep);
        if let Some(every) = sim.config.client_reports {
            sim.push(Self::ns(every), What::Clients);
        }
        sim
    }

    // ---- time ----

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// Virtual time as the `Instant` the nodes see.
    pub fn instant(&self) -> Instant {
        self.base + self.now()
    }

    fn unix_ms(&self) -> u64 {
        UNIX_BASE_MS + self.now / 1_000_000
    }

    fn ns(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    fn ns_of(&self, at: Instant) -> u64 {
        Self::ns(at.saturating_duration_since(self.base))
    }

    /// Processes every event up to and including `until`, then sets the
    /// clock to `until`.
    pub fn run_until(&mut self, until: Duration) {
        let until = Self::ns(until);
        while self.queue.peek().is_some_and(|q| q.at <= until) {
            let Some(q) = self.queue.pop() else { break };
            self.now = self.now.max(q.at);
            self.process(q.what);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now() + d);
    }

    fn push(&mut self, at: u64, what: What) {
        self.seq += 1;
        self.queue.push(Queued {
            at: at.max(self.now),
            seq: self.seq,
            what,
        });
    }

    // ---- accessors ----

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// The index of the node with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// How reports name node `i`.
    pub fn name(&self, i: usize) -> String {
        format!("n{i}")
    }

    /// Node `i`'s state machine, if its process exists.
    pub fn node(&self, i: usize) -> Option<&SimNode> {
        self.nodes[i].node.as_deref()
    }

    /// Where node `i`'s process is.
    pub fn status(&self, i: usize) -> Status {
        self.nodes[i].status
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Counts of the streams and connections so far.
    pub fn streams(&self) -> StreamCounters {
        self.transport.counters()
    }

    /// Signature verifications, real and remembered.
    pub fn verifier(&self) -> VerifierStats {
        self.verifier.stats()
    }

    /// Every node's view of every other.
    pub fn views(&self) -> &Views {
        &self.views
    }

    /// The fault history of the nodes.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Counts of the run so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Vivaldi's relative error now, one sample per ordered pair of running
    /// nodes where the first holds a coordinate of the second: how far the
    /// distance between the first's own coordinate and the one it holds of
    /// the second is from the pair's mean RTT (the link's RTT plus the mean
    /// jitter), over that RTT. What `/v1/members` shows as `distance_ms`,
    /// judged as the testnet judges it.
    pub fn vivaldi_errors(&self) -> Vec<f64> {
        let mut errors = Vec::new();
        for (i, slot) in self.nodes.iter().enumerate() {
            let Some(node) = &slot.node else { continue };
            let swim = node.swim();
            for m in swim.members() {
                let (Some(coord), Some(j)) = (&m.coord, self.index_of(&m.id)) else {
                    continue;
                };
                if self.nodes[j].node.is_none() {
                    continue;
                }
                let truth = self.net.rtt(i, j).as_secs_f64() * (1.0 + self.config.jitter / 2.0);
                if truth > 0.0 && i != j {
                    let est = swim.coordinate().distance_to(coord).as_secs_f64();
                    errors.push((est - truth).abs() / truth);
                }
            }
        }
        errors
    }

    /// The maps' sync and delta counters over every life of every node.
    pub fn map_counts(&self) -> MapCounts {
        let mut total = self.retired_map;
        for slot in &self.nodes {
            if let Some(node) = &slot.node {
                total.add(MapCounts::of(node.stats()));
            }
        }
        total
    }

    /// The violations found so far (the first 100; all are counted).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Records a violation found outside the simulator (by a scenario).
    pub fn violate(&mut self, v: Violation) {
        self.counters.violations += 1;
        if self.violations.len() < MAX_KEPT_VIOLATIONS {
            self.violations.push(v);
        }
    }

    /// Whether every live node sees every other live node alive.
    pub fn is_converged(&self) -> bool {
        self.views.converged()
    }

    /// Membership updates waiting to be piggybacked, over every running
    /// node: a join wave has passed when this is below the node count.
    pub fn queued_updates(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|s| s.node.as_ref())
            .map(|n| n.swim().queued_updates())
            .sum()
    }

    /// Nodes whose process exists.
    pub fn live_count(&self) -> usize {
        self.views.live_count()
    }

    /// Detection latencies of the crashes every observer has declared.
    pub fn detection_samples(&self) -> &[Duration] {
        self.completeness.samples()
    }

    /// Crashed nodes that some live node has not declared dead yet.
    pub fn undetected_crashes(&self) -> Vec<usize> {
        self.completeness.open_members()
    }

    /// Times for metadata updates to reach 99.9% of the other nodes.
    pub fn dissemination_samples(&self) -> &[Duration] {
        self.dissemination.samples()
    }

    /// Metadata updates that did not reach 99.9% of the nodes in time.
    pub fn dissemination_incomplete(&self) -> usize {
        self.dissemination.incomplete()
    }

    /// Times for restarted nodes to be alive in every view again.
    pub fn rejoin_samples(&self) -> &[Duration] {
        self.rejoins.samples()
    }

    /// Convergence times measured by watches of `kind`.
    pub fn convergence_samples(&self, kind: Watch) -> &[Duration] {
        &self.converged[kind as usize]
    }

    /// Whether node `i` runs unfaulted and is not part of an open crash or
    /// rejoin measurement: a fault may be injected there without muddling
    /// a measurement in progress.
    pub fn is_settled(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        node.status == Status::Running
            && node.restart_at.is_none()
            && self.health.is_healthy(i)
            && !self.completeness.is_open(i)
            && !self.rejoins.is_pending(i)
    }

    /// Sessions the simulator opened.
    pub fn session_count(&self) -> usize {
        self.sessions.ownership.len()
    }

    /// The nodes hosting session `id` (services started and not stopped).
    pub fn hosts(&self, id: &str) -> Vec<usize> {
        self.sessions
            .ownership
            .sid(id)
            .map(|sid| {
                self.sessions
                    .ownership
                    .hosts(sid)
                    .iter()
                    .map(|&h| h as usize)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sessions every replica of which is in `burst` now: each node hosting
    /// it (the ground truth of [`hosts`](Self::hosts)) and every backup its
    /// record there names. Crashing `burst` at once leaves nobody to take
    /// them over (not a `not_lost` violation: no backup lives). A session
    /// whose record names no backup counts once its hosts are all in.
    pub fn sessions_all_replicas_in(&self, burst: &[usize]) -> usize {
        let o = &self.sessions.ownership;
        let inside = |n: u32| burst.contains(&(n as usize));
        let hosted: BTreeSet<Sid> = burst
            .iter()
            .filter(|&&i| i < self.nodes.len())
            .flat_map(|&i| o.hosted_by(i as u32))
            .collect();
        hosted
            .into_iter()
            .filter(|&sid| {
                o.hosts(sid).iter().all(|&h| {
                    inside(h)
                        && self.nodes[h as usize]
                            .node
                            .as_ref()
                            .is_none_or(|n| self.backups_in(n, sid).into_iter().all(inside))
                })
            })
            .count()
    }

    /// Sessions that broke the not-lost invariant.
    pub fn sessions_lost(&self) -> usize {
        self.sessions.lost.flagged()
    }

    /// Sessions that broke the not-doubly-owned invariant.
    pub fn double_owned(&self) -> usize {
        self.sessions.doubles.flagged()
    }

    /// Takeover times: a primary's crash until every live node's map names
    /// the backup that claimed the session.
    pub fn takeover_samples(&self) -> &[Duration] {
        self.sessions.times.samples()
    }

    /// Crash until a backup's claim is written at the claimer (the first
    /// part of [`takeover_samples`](Self::takeover_samples)).
    pub fn claim_samples(&self) -> &[Duration] {
        self.sessions.times.claims()
    }

    /// Claim until each waiting node's map names the claimer.
    pub fn claim_spread_samples(&self) -> &[Duration] {
        self.sessions.times.spread()
    }

    /// Takeovers that had not reached every live node when the run ended,
    /// and takeovers cut short by the crash of their claimer.
    pub fn takeovers_unfinished(&self) -> (usize, usize) {
        (
            self.sessions.times.open_count(),
            self.sessions.times.superseded(),
        )
    }

    /// Crashed primaries' sessions that no running backup could take over
    /// (not timed in `takeover_ms`).
    pub fn takeovers_without_replica(&self) -> usize {
        self.sessions.times.without_replica()
    }

    /// Whether every running node's map is the same (equal digest roots)
    /// and every session is hosted by exactly one node.
    pub fn sessions_settled(&self) -> bool {
        let mut roots = self
            .nodes
            .iter()
            .filter_map(|s| s.node.as_ref())
            .map(|n| n.engine().map().digest().root());
        let first = roots.next();
        let same = roots.all(|r| Some(r) == first);
        let o = &self.sessions.ownership;
        let closed = &self.sessions.closed;
        same && (0..o.len() as Sid).all(|sid| o.hosts(sid).len() == 1 || closed.contains(&sid))
    }

    // ---- scripted actions ----

    /// Starts every node: node 0 now, the others spread evenly over `over`,
    /// each discovering node 0 and up to two random earlier nodes (as mDNS
    /// or bootstrap addresses would let it), then dialling and admitting
    /// them.
    pub fn bootstrap(&mut self, over: Duration) {
        let n = self.nodes.len();
        for i in 0..n {
            let mut seeds: Vec<u32> = Vec::new();
            if i > 0 {
                seeds.push(0);
            }
            for _ in 0..2 {
                if i > 1 {
                    let s = self.rng.random_range(1..i) as u32;
                    if !seeds.contains(&s) {
                        seeds.push(s);
                    }
                }
            }
            let at =
                self.now + Self::ns(over.mul_f64(i as f64 / n.max(2).saturating_sub(1) as f64));
            self.push(
                at,
                What::Start {
                    node: i as u32,
                    seeds,
                },
            );
        }
    }

    /// Starts every node now, already a group that has run for a while
    /// ([`node::warm_start`]: pairwise keys, full membership tables, shared
    /// maps): the state reached without the O(n²) handshakes and the wave
    /// of join announcements that [`bootstrap`](Self::bootstrap) sends
    /// through the group (which takes ~50 s to drain at n = 1000).
    pub fn bootstrap_warm(&mut self) {
        let n = self.nodes.len();
        for i in 0..n {
            if self.nodes[i].status == Status::NotStarted {
                self.boot(i, Vec::new(), false);
            }
        }
        let now = self.instant();
        let mut group: Vec<&mut SimNode> = self
            .nodes
            .iter_mut()
            .filter_map(|s| s.node.as_deref_mut())
            .collect();
        node::warm_start(&mut group, now);
        for i in 0..n {
            self.after(i);
        }
        // The warm start's keys are not admissions the run made.
        self.counters.admitted = 0;
        self.check_watches();
    }

    /// Opens a session on node `i` for `client` through [`Node::open`], the
    /// API's command; returns its record, or `None` if the node refused.
    pub fn open_session(&mut self, i: usize, client: &str) -> Option<Record> {
        if self.nodes[i].status != Status::Running {
            return None;
        }
        let now = self.instant();
        self.counters.opened += 1;
        let node = self.nodes[i].node.as_mut()?;
        match node.open(
            now,
            "rtp-audio".into(),
            client.to_owned(),
            Default::default(),
        ) {
            Ok(record) => {
                self.sessions.ownership.register(&record.id);
                self.after(i);
                Some(record)
            }
            Err(_) => {
                self.counters.open_failed += 1;
                self.after(i);
                None
            }
        }
    }

    /// A client's report on session `id`, given to node `i` (as RTCP or the
    /// API would); returns whether the node knew the session.
    pub fn report(&mut self, i: usize, id: &str, report: sessions::Report) -> bool {
        if self.nodes[i].status != Status::Running {
            return false;
        }
        let now = self.instant();
        let known = self.nodes[i]
            .node
            .as_mut()
            .is_some_and(|n| n.report(now, id, report).is_ok());
        self.after(i);
        known
    }

    /// Makes every running node's map hold every session any of them holds,
    /// and its table every node's latest announcement (the openers' new
    /// load), as if anti-entropy had run ([`node::warm_tables`],
    /// [`node::warm_maps`]). Call it at the instant the sessions were opened,
    /// before their pushes arrive: they then arrive as old news and are not
    /// spread again. Every node piggybacks every delta it learns about a
    /// dozen times, one or two a datagram, so a burst of thousands of opens
    /// spread by gossip would fill every queue for many minutes.
    pub fn replicate_sessions(&mut self) {
        let now = self.instant();
        let mut group: Vec<&mut SimNode> = self
            .nodes
            .iter_mut()
            .filter(|s| s.status == Status::Running)
            .filter_map(|s| s.node.as_deref_mut())
            .collect();
        node::warm_tables(&mut group, now);
        node::warm_maps(&mut group, now);
        for i in 0..self.nodes.len() {
            self.after(i);
        }
    }

    /// Crashes node `i` now: its process, its connections and everything it
    /// knew are gone; its services stop with it.
    pub fn crash(&mut self, i: usize) {
        let now = self.now();
        if !matches!(self.nodes[i].status, Status::Running | Status::Paused) {
            return;
        }
        let Some(node) = self.nodes[i].node.take() else {
            return;
        };
        self.on_host_crash(i, &node);
        self.window.retire(i, counts(&node));
        self.retired_map.add(MapCounts::of(node.stats()));
        let incarnation = node.swim().incarnation();
        drop(node);
        let slot = &mut self.nodes[i];
        slot.status = Status::Crashed;
        slot.backlog.clear();
        slot.backlog_datagrams = 0;
        slot.backlog_streams = 0;
        slot.next_wake = None;
        self.counters.crashes += 1;
        self.transport.crash(self.now, i as u32);
        self.flush_transport();
        let n = self.nodes.len();
        let observers: Vec<usize> = (0..n)
            .filter(|&o| o != i && self.views.is_live(o) && self.views.get(o, i).is_active())
            .collect();
        self.views.stop(i);
        self.health.set_running(i, false, incarnation, now);
        // A paused process that dies is no longer paused once it restarts.
        self.health.set_paused(i, false, incarnation, now);
        self.rejoins.on_stop(i);
        self.dissemination.on_stop(i, now);
        self.cut_detection.on_gone(i, now);
        self.minority_verdict.on_gone(i, now);
        for detected in self.completeness.on_observer_gone(i) {
            self.detected(detected);
        }
        self.completeness.abandon(i);
        match self.completeness.on_crash(i, now, n, observers) {
            Some(detected) => self.detected(detected),
            None => {
                let at = Self::ns(now + self.completeness.bound());
                self.push(at, What::DetectionDeadline(i as u32));
            }
        }
        self.poll_rejoins();
        self.check_watches();
    }

    /// Restarts crashed node `i` now: the same key and address, a new
    /// process (fresh RNG, empty tables and map), discovering a few live
    /// nodes.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].status != Status::Crashed {
            return;
        }
        self.nodes[i].restart_at = None;
        self.completeness.abandon(i);
        let seeds = self.pick_seeds(i);
        self.boot(i, seeds, true);
    }

    /// Restarts crashed node `i` at `at`, or later, once every live node has
    /// declared it dead (or the detection bound has passed): that is the
    /// window in which its detection is measured.
    pub fn restart_at(&mut self, i: usize, at: Duration) {
        if self.nodes[i].status != Status::Crashed {
            return;
        }
        let at = Self::ns(at);
        self.nodes[i].restart_at = Some(at);
        self.push(at, What::Restart(i as u32));
    }

    fn try_restart(&mut self, i: usize) {
        let Some(at) = self.nodes[i].restart_at else {
            return;
        };
        if self.now < at || self.completeness.is_open(i) {
            return;
        }
        self.restart(i);
    }

    /// Pauses node `i`: it processes nothing until resumed, and what reaches
    /// it queues up, as for a process that is starved of CPU.
    pub fn pause(&mut self, i: usize) {
        if self.nodes[i].status != Status::Running {
            return;
        }
        self.nodes[i].status = Status::Paused;
        self.counters.pauses += 1;
        self.dissemination.excuse(i, self.now());
        let incarnation = self.incarnation(i);
        self.health.set_paused(i, true, incarnation, self.now());
    }

    /// Resumes node `i` at `at`.
    pub fn resume_at(&mut self, i: usize, at: Duration) {
        self.push(Self::ns(at), What::Resume(i as u32));
    }

    /// Resumes paused node `i` now: it first handles what queued up, in
    /// arrival order, as a driver reading its sockets' backlog would, and
    /// only then its timers.
    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].status != Status::Paused {
            return;
        }
        self.nodes[i].status = Status::Running;
        let incarnation = self.incarnation(i);
        self.health.set_paused(i, false, incarnation, self.now());
        let backlog = std::mem::take(&mut self.nodes[i].backlog);
        self.nodes[i].backlog_datagrams = 0;
        self.nodes[i].backlog_streams = 0;
        for input in backlog {
            if self.nodes[i].status != Status::Running {
                break;
            }
            self.apply(i, input);
        }
        let now = self.instant();
        if let Some(node) = self.nodes[i].node.as_mut() {
            node.handle_timeout(now);
        }
        self.after(i);
    }

    /// Node `i` announces new metadata (a new listen address); measures how
    /// long it takes to reach 99.9% of the other running nodes (paused ones
    /// are not waited for).
    pub fn set_meta(&mut self, i: usize) {
        if self.nodes[i].status != Status::Running {
            return;
        }
        self.nodes[i].meta_version += 1;
        let tag = format!(
            "{}/p2p-circuit/v{}",
            identity::multiaddr(i),
            self.nodes[i].meta_version
        );
        let now = self.instant();
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        node.set_listen_addrs(now, vec![tag.clone()]);
        let n = self.nodes.len();
        let live: Vec<usize> = (0..n)
            .filter(|&j| self.nodes[j].status == Status::Running)
            .collect();
        self.dissemination
            .start(i, tag.into_bytes(), self.now(), n, live);
        self.after(i);
    }

    /// Drops the open dissemination measurements (a fault is starting that
    /// keeps them from finishing on purpose).
    pub fn interrupt_dissemination(&mut self) {
        self.dissemination.interrupt();
    }

    /// Sets the loss probability of every link (datagrams only: streams
    /// retransmit).
    pub fn set_loss(&mut self, p: f64) {
        self.net.set_loss(p);
    }

    /// Cuts every group from the others, both ways (see [`Network::partition`]).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.net.partition(groups);
        self.cuts_changed();
    }

    /// Cuts datagrams from `from` to `to` only (connections between them
    /// break: they need both directions).
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.net.cut_one_way(from, to);
        self.cuts_changed();
    }

    /// Cuts every datagram from a node of `from` to a node of `to`.
    pub fn cut_one_way_between(&mut self, from: &[usize], to: &[usize]) {
        for &a in from {
            for &b in to {
                self.net.cut_one_way(a, b);
            }
        }
        self.cuts_changed();
    }

    /// Times how long the majority takes to declare the whole minority
    /// dead, and the minority the whole majority, from now (the cut between
    /// them made by the caller) until the next heal.
    pub fn watch_cut(&mut self, minority: &[usize], majority: &[usize]) {
        let now = self.now();
        let views = &self.views;
        let dead = |o: usize, m: usize| views.get(o, m) == Seen::Dead;
        self.cut_detection.on_cut(now, minority, majority, dead);
        self.minority_verdict.on_cut(now, majority, minority, dead);
    }

    /// Cut until every minority node had the whole majority dead, and the
    /// cuts healed before that (a minority that hears nothing fences
    /// itself instead: `Swim::is_isolated`).
    pub fn minority_verdict(&self) -> (&[Duration], usize) {
        (
            self.minority_verdict.samples(),
            self.minority_verdict.undetected(),
        )
    }

    /// Cut until the whole minority was dead at every majority node, and
    /// the cuts healed before that.
    pub fn cut_detection(&self) -> (&[Duration], usize) {
        (
            self.cut_detection.samples(),
            self.cut_detection.undetected(),
        )
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cut_detection.close();
        self.minority_verdict.close();
        self.net.heal();
        self.cuts_changed();
    }

    fn cuts_changed(&mut self) {
        let now = self.now();
        for i in 0..self.nodes.len() {
            let cut = self.net.cut_degree(i) > 0;
            let incarnation = self.incarnation(i);
            self.health.set_cut(i, cut, incarnation, now);
        }
        self.transport.cuts_changed(self.now, &self.net);
        self.flush_transport();
    }

    /// Starts a convergence measurement of `kind` now (finishing at once if
    /// the views have converged already).
    pub fn watch(&mut self, kind: Watch) {
        self.watches.retain(|(k, _)| *k != kind);
        self.watches.push((kind, self.now));
        self.check_watches();
    }

    /// Stops a convergence measurement; returns whether it was still open.
    pub fn cancel_watch(&mut self, kind: Watch) -> bool {
        let before = self.watches.len();
        self.watches.retain(|(k, _)| *k != kind);
        before != self.watches.len()
    }

    /// Whether a convergence measurement of `kind` is still open.
    pub fn is_watching(&self, kind: Watch) -> bool {
        self.watches.iter().any(|(k, _)| *k == kind)
    }

    /// Starts counting traffic.
    pub fn start_measurement(&mut self) {
        let nodes = &self.nodes;
        self.window
            .open(nodes.len(), |i| nodes[i].node.as_deref().map(counts));
        self.window_span = (Some(self.now), None);
    }

    /// Stops counting traffic.
    pub fn stop_measurement(&mut self) {
        if self.window_span.1.is_some() {
            return;
        }
        let nodes = &self.nodes;
        self.window.close(|i| nodes[i].node.as_deref().map(counts));
        self.window_span.1 = Some(self.now);
    }

    /// What each node sent over the (closed) window, by class, and its
    /// length.
    pub fn traffic(&self) -> (Vec<super::traffic::ByClass>, Duration) {
        let (since, until) = self.window_span;
        let since = since.unwrap_or(self.now);
        let until = until.unwrap_or(self.now);
        (
            self.window.per_node(),
            Duration::from_nanos(until.saturating_sub(since)),
        )
    }

    /// Acks that carried a coordinate over the (closed) window, all nodes
    /// together: `[asked, unasked]`.
    pub fn coords_sent(&self) -> [u64; 2] {
        self.window.coords()
    }

    /// Runs the session checks now (the run does every [`CHECK_EVERY`]).
    pub fn check_sessions(&mut self) {
        let now = self.now();
        let shared: Vec<Sid> = self
            .sessions
            .ownership
            .shared()
            .chain(self.sessions.doubles.open())
            .collect::<BTreeSet<Sid>>()
            .into_iter()
            .collect();
        for sid in shared {
            let owners = self.owners(sid);
            self.sessions.doubles.set_owners(sid, &owners, now);
        }
        let (nodes, health, net) = (&self.nodes, &self.health, &self.net);
        let live = |n: u32| matches!(nodes[n as usize].status, Status::Running | Status::Paused);
        let clear = |owners: &[u32]| {
            owners.iter().all(|&a| {
                health.is_running(a as usize)
                    && owners
                        .iter()
                        .all(|&b| a == b || !net.is_cut_between(a as usize, b as usize))
            })
        };
        let name = |n: u32| format!("n{n}");
        let o = &self.sessions.ownership;
        let session = |sid: Sid| o.id(sid).to_owned();
        let mut found = self.sessions.doubles.check(now, clear, name, session);
        let o = &self.sessions.ownership;
        let session = |sid: Sid| o.id(sid).to_owned();
        found.extend(self.sessions.lost.check(now, live, name, session));
        let o = &self.sessions.ownership;
        let session = |sid: Sid| o.id(sid).to_owned();
        found.extend(self.sessions.claims.check(now, live, name, session));
        for v in found {
            self.violate(v);
        }
    }

    // ---- the event loop ----

    fn process(&mut self, what: What) {
        match what {
            What::Datagram { to, from, bytes } => {
                let input = Input::Datagram { from, bytes };
                self.dispatch(to as usize, input);
            }
            What::Net(delivery) => self.deliver_net(delivery),
            What::Discover { node, life, peers } => {
                if self.nodes[node as usize].life == life {
                    self.dispatch(node as usize, Input::Discovered(peers));
                }
            }
            What::Wake(i) => self.wake(i as usize),
            What::ServiceStarted { node, life, id } => {
                if self.nodes[node as usize].life == life {
                    self.dispatch(node as usize, Input::Started(id));
                }
            }
            What::Start { node, seeds } => {
                let i = node as usize;
                if self.nodes[i].status == Status::NotStarted {
                    self.boot(i, seeds, true);
                }
            }
            What::Restart(i) => self.try_restart(i as usize),
            What::Resume(i) => self.resume(i as usize),
            What::DetectionDeadline(i) => {
                let i = i as usize;
                let now = self.now();
                if let Some(v) = self
                    .completeness
                    .check_deadline(i, now, |o| format!("n{o}"))
                {
                    self.violate(v);
                    self.try_restart(i);
                }
            }
            What::RejoinDeadline { node, life } => {
                let i = node as usize;
                let missing = (self.views.live_count() - 1).saturating_sub(self.views.alive_in(i));
                let name = self.name(i);
                let now = self.now();
                if let Some(v) = self.rejoins.check_deadline(i, life, now, missing, &name) {
                    self.violate(v);
                }
            }
            What::Check => {
                self.check_sessions();
                self.push(self.now + Self::ns(CHECK_EVERY), What::Check);
            }
            What::Sweep => {
                self.transport.sweep(self.now);
                self.flush_transport();
                self.push(self.now + Self::ns(SWEEP_EVERY), What::Sweep);
            }
            What::Clients => {
                self.client_reports();
                if let Some(every) = self.config.client_reports {
                    self.push(self.now + Self::ns(every), What::Clients);
                }
            }
        }
    }

    /// The node a stream or connection delivery is for.
    fn deliver_net(&mut self, delivery: Delivery) {
        let to = match &delivery {
            Delivery::OpenFailed { node, life, .. } => {
                if self.nodes[*node as usize].life != *life {
                    return;
                }
                Some(*node)
            }
            Delivery::Connected { node, .. } | Delivery::Disconnected { node, .. } => Some(*node),
            other => self.transport.node_of(other),
        };
        if let Some(to) = to {
            self.dispatch(to as usize, Input::Net(delivery));
        }
    }

    /// Hands an input to a running node, queues it for a paused one, drops
    /// it for a stopped one.
    fn dispatch(&mut self, i: usize, input: Input) {
        match self.nodes[i].status {
            Status::Running => {
                if matches!(input, Input::Datagram { .. }) {
                    self.counters.delivered += 1;
                }
                self.apply(i, input);
            }
            Status::Paused => self.queue_input(i, input),
            Status::NotStarted | Status::Crashed => {
                if matches!(input, Input::Datagram { .. }) {
                    self.counters.to_stopped += 1;
                }
            }
        }
    }

    fn queue_input(&mut self, i: usize, input: Input) {
        let slot = &mut self.nodes[i];
        match &input {
            Input::Datagram { .. } => {
                if slot.backlog_datagrams >= self.config.backlog_limit {
                    self.counters.backlog_dropped += 1;
                    return;
                }
                slot.backlog_datagrams += 1;
                self.counters.delivered += 1;
            }
            // Accepts and frames wait in the peer's write queue in reality:
            // beyond the limit the stream breaks. Ends and connection news
            // are bounded by the streams and connections themselves.
            Input::Net(d @ (Delivery::Accept { .. } | Delivery::Frame { .. })) => {
                if slot.backlog_streams >= self.config.stream_backlog_limit {
                    if let Some(pipe) = d.pipe() {
                        self.transport.overflow(self.now, pipe);
                        self.flush_transport();
                    }
                    return;
                }
                slot.backlog_streams += 1;
            }
            Input::Net(_) | Input::Discovered(_) | Input::Started(_) => {}
        }
        self.nodes[i].backlog.push_back(input);
    }

    /// Node `i` (running) handles one input, then its output is drained.
    fn apply(&mut self, i: usize, input: Input) {
        let now = self.instant();
        match input {
            Input::Datagram { from, bytes } => {
                let from = identity::datagram_addr(from as usize);
                if let Some(node) = self.nodes[i].node.as_mut() {
                    node.handle_datagram(now, from, &bytes);
                }
            }
            Input::Started(id) => {
                if let Some(node) = self.nodes[i].node.as_mut() {
                    node.handle_service_started(now, &id);
                }
            }
            Input::Discovered(peers) => {
                for p in peers {
                    let id = self.nodes[p as usize].id.clone();
                    if let Some(node) = self.nodes[i].node.as_mut() {
                        node.handle_discovered(now, id, vec![identity::multiaddr(p as usize)]);
                    }
                }
            }
            Input::Net(delivery) => {
                let pipe = delivery.pipe();
                match self.transport.resolve(self.now, delivery) {
                    Resolved::Accept { from, protocol } => {
                        let peer = self.nodes[from as usize].id.clone();
                        let answer = self.nodes[i]
                            .node
                            .as_mut()
                            .and_then(|n| n.handle_stream_accepted(now, peer, protocol));
                        if let Some(pipe) = pipe {
                            self.transport.accepted(
                                self.now,
                                &self.net,
                                &mut self.net_rng,
                                pipe,
                                answer,
                            );
                        }
                    }
                    Resolved::Frame { stream, bytes } => {
                        if let Some(node) = self.nodes[i].node.as_mut() {
                            node.handle_frame(now, stream, &bytes);
                        }
                    }
                    Resolved::Closed { stream, error } => {
                        if let Some(node) = self.nodes[i].node.as_mut() {
                            node.handle_stream_closed(now, stream, error);
                        }
                    }
                    Resolved::Connected { peer, outbound } => {
                        let id = self.nodes[peer as usize].id.clone();
                        let ip = Some(identity::ip(peer as usize));
                        if let Some(node) = self.nodes[i].node.as_mut() {
                            node.handle_connected(now, id, ip, outbound);
                        }
                    }
                    Resolved::Disconnected { peer } => {
                        let id = self.nodes[peer as usize].id.clone();
                        if let Some(node) = self.nodes[i].node.as_mut() {
                            node.handle_disconnected(now, id);
                        }
                    }
                    Resolved::Nothing => {}
                }
            }
        }
        self.after(i);
    }

    fn boot(&mut self, i: usize, seeds: Vec<u32>, announce: bool) {
        let now = self.instant();
        let life = self.nodes[i].life + 1;
        let rng = SmallRng::seed_from_u64(mix(
            self.config.seed ^ mix((i as u64) << 32 | u64::from(life))
        ));
        let restarted = self.nodes[i].status == Status::Crashed;
        if self.nodes[i].status == Status::NotStarted {
            self.unstarted -= 1;
        }
        let mut node = Node::new(
            self.node_config(i),
            identity::key(self.config.seed, i),
            rng,
            now,
            self.unix_ms(),
        );
        if !self.config.clock_skew.is_zero() {
            let skew = Self::ns(self.config.clock_skew).max(1);
            let offset = mix(self.config.seed ^ mix(0x5ce3 ^ i as u64)) % skew;
            node.handle_wall_clock(now, self.unix_ms() + offset / 1_000_000);
        }
        let slot = &mut self.nodes[i];
        slot.incarnation = node.swim().incarnation();
        slot.undecodable = (0, 0);
        slot.node = Some(Box::new(node));
        slot.status = Status::Running;
        slot.life = life;
        slot.next_wake = None;
        self.window.restart(i);
        self.views.start(i);
        self.health.set_running(i, true, 0, self.now());
        if restarted {
            self.counters.restarts += 1;
            self.rejoins.on_restart(i, life, self.now());
            let at = Self::ns(self.now() + self.rejoins.bound());
            self.push(
                at,
                What::RejoinDeadline {
                    node: i as u32,
                    life,
                },
            );
        }
        if announce {
            self.apply(i, Input::Discovered(seeds));
        }
        self.check_watches();
    }

    fn node_config(&self, i: usize) -> Config {
        let mut sessions = self.config.sessions.clone();
        sessions.map.verifier = self.verifier.verifier();
        Config {
            name: self.name(i),
            policy: Policy {
                overlay: OVERLAY.into(),
                network_key: Some(b"simulated network key".to_vec()),
                allowlist: None,
                max_members: self.nodes.len() + 16,
            },
            capacity: self.config.capacity,
            swim: self.config.protocol.clone(),
            sessions,
            datagram: Some(identity::datagram_addr(i)),
            bootstrap: Vec::new(),
            timing: Timing::default(),
            clients: ClientPolicy::default(),
            services: 0,
            tags: self.config.tags.get(i).cloned().unwrap_or_default(),
        }
    }

    /// Node 0 if it runs, and random running nodes, three in all at most.
    fn pick_seeds(&mut self, i: usize) -> Vec<u32> {
        let n = self.nodes.len();
        let mut seeds = Vec::new();
        if i != 0 && self.views.is_live(0) {
            seeds.push(0);
        }
        for _ in 0..32 {
            if seeds.len() >= 3 {
                break;
            }
            let s = self.rng.random_range(0..n) as u32;
            if s as usize != i && self.views.is_live(s as usize) && !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        seeds
    }

    fn incarnation(&self, i: usize) -> u32 {
        self.nodes[i]
            .node
            .as_ref()
            .map_or(0, |n| n.swim().incarnation())
    }

    fn wake(&mut self, i: usize) {
        if self.nodes[i].next_wake != Some(self.now) {
            return; // superseded by an earlier wake-up
        }
        self.nodes[i].next_wake = None;
        if self.nodes[i].status != Status::Running {
            return; // a paused node fires its timers when resumed
        }
        let now = self.instant();
        if let Some(node) = self.nodes[i].node.as_mut() {
            node.handle_timeout(now);
        }
        self.after(i);
    }

    /// Drains node `i`'s output, executes it, and schedules its next
    /// wake-up.
    fn after(&mut self, i: usize) {
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let mut tx = std::mem::take(&mut self.tx_buf);
        let mut act = std::mem::take(&mut self.act_buf);
        let mut ev = std::mem::take(&mut self.ev_buf);
        loop {
            let before = (tx.len(), act.len(), ev.len());
            tx.extend(std::iter::from_fn(|| node.poll_transmit()));
            act.extend(std::iter::from_fn(|| node.poll_action()));
            ev.extend(std::iter::from_fn(|| node.poll_event()));
            if (tx.len(), act.len(), ev.len()) == before {
                break;
            }
        }
        let wake = node.poll_timeout();
        let incarnation = node.swim().incarnation();
        let stats = node.stats();
        let undecodable = (stats.drops.undecodable, stats.bad_payloads);
        if incarnation != self.nodes[i].incarnation {
            self.nodes[i].incarnation = incarnation;
            self.health.note_incarnation(i, incarnation);
        }
        let before = std::mem::replace(&mut self.nodes[i].undecodable, undecodable);
        if let Some(v) = wire_round_trip::check(&self.name(i), before, undecodable, self.now()) {
            self.violate(v);
        }
        for t in tx.drain(..) {
            self.transmit(i, t);
        }
        for e in ev.drain(..) {
            self.observe(i, e);
        }
        for a in act.drain(..) {
            self.act(i, a);
        }
        self.tx_buf = tx;
        self.act_buf = act;
        self.ev_buf = ev;
        self.flush_transport();
        if let Some(at) = wake {
            let at = self.ns_of(at).max(self.now);
            if self.nodes[i].next_wake.is_none_or(|w| at < w) {
                self.nodes[i].next_wake = Some(at);
                self.push(at, What::Wake(i as u32));
            }
        }
    }

    fn flush_transport(&mut self) {
        let out: Vec<(u64, Delivery)> = self.transport.take().collect();
        for (at, d) in out {
            self.push(at, What::Net(d));
        }
    }

    fn transmit(&mut self, from: usize, t: Transmit) {
        let now = self.now;
        let (net, rng) = (&self.net, &mut self.net_rng);
        let node = from as u32;
        match t {
            Transmit::Datagram { to, bytes, .. } => {
                self.counters.sent += 1;
                let Some(to) = identity::node_of(&to, self.nodes.len()) else {
                    self.counters.unknown_recipient += 1;
                    return;
                };
                match net.transit(from, to, rng) {
                    Ok(delay) => {
                        let at = now + Self::ns(delay);
                        self.push(
                            at,
                            What::Datagram {
                                to: to as u32,
                                from: node,
                                bytes,
                            },
                        );
                    }
                    Err(Dropped::Lost) => self.counters.lost += 1,
                    Err(Dropped::Cut) => self.counters.cut += 1,
                }
            }
            Transmit::Open {
                stream,
                peer,
                protocol,
                max_frame,
                ..
            } => {
                let peer = self.index.get(&peer).map(|&p| p as u32);
                let running = peer.is_some_and(|p| {
                    matches!(
                        self.nodes[p as usize].status,
                        Status::Running | Status::Paused
                    )
                });
                let life = self.nodes[from].life;
                self.transport.open(
                    now,
                    net,
                    rng,
                    (node, life, stream),
                    peer,
                    running,
                    protocol,
                    max_frame,
                );
            }
            Transmit::Frame { stream, bytes } => {
                self.transport.frame(now, net, rng, node, stream, bytes);
            }
            Transmit::Finish { stream } => self.transport.finish(now, net, rng, node, stream),
            Transmit::Reset { stream } => self.transport.reset(now, net, rng, node, stream),
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        match action {
            Action::Start(record) => self.on_start(i, &record),
            Action::Stop { id, reason } => self.on_stop(i, &id, &reason),
            // A warm standby sends nothing and a paused primary still owns
            // its session: neither changes who serves it.
            Action::Warm(_) | Action::Pause { .. } | Action::Resume { .. } => {}
            Action::Dial {
                peer: Some(peer), ..
            } => {
                if let Some(&j) = self.index.get(&peer) {
                    let running = matches!(self.nodes[j].status, Status::Running | Status::Paused);
                    self.transport.dial(
                        self.now,
                        &self.net,
                        &mut self.net_rng,
                        i as u32,
                        j as u32,
                        running,
                    );
                }
            }
            // No bootstrap addresses are configured: nothing to dial.
            Action::Dial { peer: None, .. } => {}
            Action::Disconnect { peer } => {
                if let Some(&j) = self.index.get(&peer) {
                    self.transport
                        .disconnect(self.now, i as u32, j as u32, "closed by the peer");
                }
            }
            Action::Walk => {
                // A DHT walk finds a few providers of the overlay: random
                // running nodes this one can reach.
                let n = self.nodes.len();
                let mut peers = Vec::new();
                for _ in 0..8 {
                    if peers.len() >= 3 || n < 2 {
                        break;
                    }
                    let j = self.rng.random_range(0..n);
                    if j != i
                        && self.nodes[j].status == Status::Running
                        && !self.net.is_cut_between(i, j)
                        && !peers.contains(&(j as u32))
                    {
                        peers.push(j as u32);
                    }
                }
                if !peers.is_empty() {
                    let at = self.now + Self::ns(Duration::from_millis(20));
                    let life = self.nodes[i].life;
                    self.push(
                        at,
                        What::Discover {
                            node: i as u32,
                            life,
                            peers,
                        },
                    );
                }
            }
        }
    }

    fn observe(&mut self, i: usize, event: Event) {
        let now = self.now();
        match event {
            Event::Member(e) => self.observe_member(i, e),
            Event::SessionChanged { id } => {
                let Some(sid) = self.sessions.ownership.sid(&id) else {
                    return;
                };
                let Some(crashed) = self.sessions.times.crashed(sid) else {
                    return;
                };
                let crashed_id = &self.nodes[crashed as usize].id;
                let moved = self.nodes[i]
                    .node
                    .as_ref()
                    .and_then(|n| n.engine().map().get(&id))
                    .is_some_and(|r| r.primary != *crashed_id);
                if moved {
                    self.sessions.times.on_seen(sid, i as u32, now);
                }
            }
            Event::Admitted { .. } => self.counters.admitted += 1,
            Event::Refused { .. } | Event::RefusedBy { .. } => self.counters.refusals += 1,
            Event::HandshakeFailed { .. } => self.counters.handshakes_failed += 1,
            Event::Fenced { fenced: true } => self.counters.fenced += 1,
            Event::DuplicateIdentity { .. } => self.counters.duplicate_identity += 1,
            Event::SessionStarted { .. }
            | Event::SessionStopped { .. }
            | Event::SessionFailed { .. }
            | Event::SessionPaused { .. }
            | Event::SessionResumed { .. }
            | Event::ServicesDiffer { .. }
            | Event::Fenced { fenced: false } => {}
        }
    }

    fn observe_member(&mut self, i: usize, event: swim::Event) {
        let now = self.now();
        match event {
            swim::Event::MemberState {
                id,
                state,
                incarnation,
                ..
            } => {
                let Some(m) = self.index_of(&id) else { return };
                self.views.set(i, m, state.into());
                match state {
                    State::Dead => {
                        self.judge(i, m, incarnation, true);
                        self.cut_detection.on_dead(i, m, now);
                        self.minority_verdict.on_dead(i, m, now);
                        if let Some(detected) = self.completeness.on_dead(i, m, now) {
                            self.detected(detected);
                        }
                    }
                    State::Suspect => self.judge(i, m, incarnation, false),
                    State::Alive => self.poll_rejoins(),
                    State::Left => {}
                }
                self.check_watches();
            }
            swim::Event::MemberMeta { id, meta, .. } => {
                // Decoded only while its announcement is being timed: load
                // changes announce new metadata too, a thousand times over.
                if let Some(m) = self.index_of(&id)
                    && self.dissemination.is_open_for(m)
                    && let Ok(meta) = NodeMeta::decode(&meta)
                    && let Some(tag) = meta.addrs.first()
                {
                    self.dissemination.on_meta(i, m, tag.as_bytes(), now);
                }
            }
            swim::Event::Refuted { .. } => self.counters.refutations += 1,
            swim::Event::Removed { id } => {
                if let Some(m) = self.index_of(&id) {
                    self.views.set(i, m, Seen::Unknown);
                }
            }
            swim::Event::ProbeRtt { .. } => {}
        }
    }

    /// Judges a suspicion or a death declaration by `observer`.
    fn judge(&mut self, observer: usize, member: usize, incarnation: u32, dead: bool) {
        let now = self.now();
        let verdict =
            healthy_not_dead::judge(&self.health, &self.net, observer, member, incarnation, now);
        if verdict != Verdict::FalsePositive {
            return;
        }
        if !dead {
            self.counters.suspicions_of_healthy += 1;
            return;
        }
        self.counters.false_positives += 1;
        let declarer = self.nodes[observer]
            .node
            .as_ref()
            .and_then(|n| n.swim().member(&self.nodes[member].id))
            .and_then(|m| m.by.as_ref())
            .and_then(|by| self.index_of(by))
            .map_or_else(|| "?".to_owned(), |d| self.name(d));
        let v = healthy_not_dead::violation(
            &self.name(observer),
            &self.name(member),
            incarnation,
            now,
            &declarer,
        );
        self.violate(v);
    }

    fn detected(&mut self, detected: Detected) {
        let i = detected.member;
        if self.nodes[i].restart_at.is_some() {
            self.push(self.now, What::Restart(i as u32));
        }
    }

    fn poll_rejoins(&mut self) {
        if !self.rejoins.any_pending() {
            return;
        }
        let views = &self.views;
        let everyone = views.live_count().saturating_sub(1);
        self.rejoins.poll(self.now(), |m| {
            views.is_live(m) && views.alive_in(m) >= everyone
        });
    }

    fn check_watches(&mut self) {
        if self.watches.is_empty() || !self.views.converged() {
            return;
        }
        // Warm-up convergence only counts once every node has started.
        let all_started = self.unstarted == 0;
        let now = self.now;
        let converged = &mut self.converged;
        self.watches.retain(|&(kind, since)| {
            if kind == Watch::Warmup && !all_started {
                return true;
            }
            converged[kind as usize].push(Duration::from_nanos(now - since));
            false
        });
    }

    // ---- sessions ----

    /// The backups a node's record of session `sid` names, as indices.
    fn backups_in(&self, node: &SimNode, sid: Sid) -> Vec<u32> {
        let id = self.sessions.ownership.id(sid);
        node.engine()
            .map()
            .get(id)
            .map(|r| {
                r.backups
                    .iter()
                    .filter_map(|b| self.index_of(b).map(|x| x as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The owners of `sid`: its live hosts, but not one serving a handover
    /// it wrote that is not confirmed yet (make-before-break).
    fn owners(&self, sid: Sid) -> Vec<u32> {
        let id = self.sessions.ownership.id(sid);
        self.sessions
            .ownership
            .hosts(sid)
            .iter()
            .copied()
            .filter(|&h| {
                let slot = &self.nodes[h as usize];
                let handing_over = slot
                    .node
                    .as_ref()
                    .and_then(|n| n.engine().map().get(id))
                    .is_some_and(|r| {
                        r.state == SessionState::Active
                            && r.primary != slot.id
                            && r.writer == slot.id
                    });
                !handing_over
            })
            .collect()
    }

    fn on_start(&mut self, i: usize, record: &Record) {
        let Some(sid) = self.sessions.ownership.sid(&record.id) else {
            return;
        };
        let now = self.now();
        let at = self.now + self.config.service_start.as_nanos() as u64;
        let (node, life) = (i as u32, self.nodes[i].life);
        let id = record.id.clone();
        self.push(at, What::ServiceStarted { node, life, id });
        self.sessions.ownership.start(i as u32, sid);
        self.sessions.lost.hosted(sid);
        if record.reason.starts_with("takeover") {
            self.sessions.times.on_claimed(sid, now);
        }
        // A claim: a takeover's start, or the crashed primary, restarted,
        // resuming its own session (takeover_by_one_backup).
        let resumed = self.sessions.claims.primary_of(sid) == Some(i as u32);
        if (record.reason.starts_with("takeover") || resumed)
            && let Some(v) =
                self.sessions
                    .claims
                    .on_claim(sid, i as u32, now, |n| format!("n{n}"), &record.id)
        {
            self.violate(v);
        }
    }

    fn on_stop(&mut self, i: usize, id: &str, reason: &str) {
        let Some(sid) = self.sessions.ownership.sid(id) else {
            return;
        };
        let now = self.now();
        self.sessions.ownership.stop(i as u32, sid);
        let owners = self.owners(sid).len();
        if let Some(v) = transfer_keeps_owner::check(id, &self.name(i), reason, owners, now) {
            self.violate(v);
        }
        let closed = self.nodes[i].node.as_ref().is_some_and(|n| {
            n.engine()
                .map()
                .get(id)
                .is_some_and(|r| r.state == SessionState::Closed)
        });
        if closed {
            if self.sessions.closed.insert(sid) {
                self.counters.closed += 1;
            }
            self.sessions.lost.hosted(sid);
        } else if self.sessions.ownership.hosts(sid).is_empty() {
            let backups = self.nodes[i]
                .node
                .as_ref()
                .map(|n| self.backups_in(n, sid))
                .unwrap_or_default();
            self.sessions.lost.unhosted(sid, backups, now);
        }
    }

    /// Each session's client reports to every running node streaming to it
    /// (the service hands RTCP to its node, which forwards it to the
    /// primary if that is another node).
    fn client_reports(&mut self) {
        let report = sessions::Report {
            loss: 0.0,
            jitter: Duration::from_millis(2),
            rtt: Duration::from_millis(10),
            packets: 0,
        };
        let now = self.instant();
        for sid in 0..self.sessions.ownership.len() as Sid {
            if self.sessions.closed.contains(&sid) {
                continue;
            }
            let hosts: Vec<u32> = self.sessions.ownership.hosts(sid).to_vec();
            for h in hosts {
                let h = h as usize;
                if self.nodes[h].status != Status::Running {
                    continue;
                }
                let id = self.sessions.ownership.id(sid).to_owned();
                if let Some(n) = self.nodes[h].node.as_mut()
                    && n.report(now, &id, report).is_ok()
                {
                    self.counters.client_reports += 1;
                }
                self.after(h);
            }
        }
    }

    /// The crash of node `i`, whose last state is `node`: its services
    /// stop, and each session it alone hosted as primary opens a takeover.
    fn on_host_crash(&mut self, i: usize, node: &SimNode) {
        let now = self.now();
        let me = &self.nodes[i].id;
        let hosted: Vec<Sid> = self.sessions.ownership.hosted_by(i as u32).collect();
        let primary_of: Vec<(Sid, bool)> = hosted
            .iter()
            .map(|&sid| {
                let id = self.sessions.ownership.id(sid);
                let primary = node
                    .engine()
                    .map()
                    .get(id)
                    .is_some_and(|r| r.primary == *me && r.state == SessionState::Active);
                (sid, primary)
            })
            .collect();
        self.sessions.ownership.crash(i as u32);
        self.sessions.times.on_gone(i as u32, now);
        for (sid, primary) in primary_of {
            if !self.sessions.ownership.hosts(sid).is_empty() {
                continue;
            }
            let backups = self.backups_in(node, sid);
            self.sessions.lost.unhosted(sid, backups.clone(), now);
            if !primary {
                continue;
            }
            let running: BTreeSet<u32> = backups
                .iter()
                .copied()
                .filter(|&b| self.nodes[b as usize].status == Status::Running)
                .collect();
            self.sessions.claims.on_crash(sid, i as u32, backups, now);
            let id = self.sessions.ownership.id(sid);
            let crashed = &self.nodes[i].id;
            let waiting: BTreeSet<u32> = (0..self.nodes.len())
                .filter(|&o| o != i)
                .filter(|&o| {
                    self.nodes[o]
                        .node
                        .as_ref()
                        .and_then(|n| n.engine().map().get(id))
                        .is_some_and(|r| r.primary == *crashed)
                })
                .map(|o| o as u32)
                .collect();
            self.sessions
                .times
                .on_crash(sid, i as u32, now, waiting, running);
        }
    }
}
