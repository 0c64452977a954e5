//! The simulator: `n` real SWIM state machines over a simulated network, in
//! virtual time, driven exactly as a node's driver drives one.
//!
//! One event queue, ordered by (virtual time, insertion order), holds
//! message deliveries, timer wake-ups and scheduled fault actions, so a run
//! is a pure function of its configuration and seed. Every message is
//! encoded with the real codec, carried (or lost, or cut) by the
//! [`Network`], and decoded at the receiver. After every `handle_*` call the
//! node's transmits and events are drained and its next wake-up scheduled.
//! The invariants are checked on the events that could break them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use baton_protocol::NodeId;
use baton_protocol::swim::{self, Event, State, Swim, Transmit};
use baton_protocol::wire::{self, Message, Update};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::dissemination::Dissemination;
use super::health::Health;
use super::invariants::crashed_declared_dead::{Completeness, Detected};
use super::invariants::healthy_not_dead::{self, Verdict};
use super::invariants::restart_rejoins::Rejoins;
use super::invariants::{Violation, wire_round_trip};
use super::network::{Dropped, Latency, Network, mix};
use super::views::{Seen, Views};

/// The state machine the simulator runs.
pub type Machine = Swim<SmallRng>;

/// Keep at most this many violations in memory (all are counted).
const MAX_KEPT_VIOLATIONS: usize = 100;

/// Message kinds, in the order of [`kind_index`].
pub const KINDS: [&str; 6] = ["ping", "ping-req", "ack", "nack", "gossip", "sync"];

/// What a simulation is made of.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// The SWIM parameters every node uses.
    pub protocol: swim::Config,
    /// Link latencies.
    pub latency: Latency,
    /// Largest extra delay of a message, as a fraction of its link's
    /// one-way delay.
    pub jitter: f64,
    /// Size of each node's metadata, in bytes (at least 12).
    pub meta_bytes: usize,
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
    /// Messages a paused node buffers (its socket's receive queue); more are
    /// dropped.
    pub backlog_limit: usize,
}

impl SimConfig {
    /// `nodes` nodes on a LAN (0.1-1 ms RTT, 10% jitter), LAN protocol profile.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            protocol: swim::Config::lan(),
            latency: Latency::lan(),
            jitter: 0.1,
            meta_bytes: 32,
            detection_bound: Duration::from_secs(10),
            rejoin_bound: Duration::from_secs(5),
            dissemination_timeout: Duration::from_secs(30),
            grace: None,
            backlog_limit: 4096,
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
    /// Alive but processing nothing; messages queue up.
    Paused,
    /// Gone; messages to it are dropped.
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

/// What happened to messages, and other counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages sent.
    pub sent: u64,
    /// Membership updates carried by the messages sent.
    pub updates_sent: u64,
    /// Messages handed to a running node.
    pub delivered: u64,
    /// Messages lost at random.
    pub lost: u64,
    /// Messages dropped by a cut.
    pub cut: u64,
    /// Messages that arrived at a crashed (or not yet started) node.
    pub to_stopped: u64,
    /// Messages dropped because a paused node's backlog was full.
    pub backlog_dropped: u64,
    /// Messages to an id that is no node of the simulation.
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
}

/// Traffic over the measurement window.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Length of the window.
    pub window: Duration,
    /// Bytes sent per node (all nodes) per second.
    pub bytes_per_node_per_s: f64,
    /// Messages sent per node per second.
    pub msgs_per_node_per_s: f64,
    /// Bytes per second sent by the busiest node.
    pub max_bytes_per_node_per_s: f64,
    /// Bytes per node per second by message kind (see [`KINDS`]).
    pub bytes_by_kind: [f64; 6],
    /// Messages per node per second by message kind.
    pub msgs_by_kind: [f64; 6],
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    swim: Option<Machine>,
    status: Status,
    backlog: VecDeque<(u32, Vec<u8>)>,
    /// The earliest wake-up in the queue, so that the queue holds about one
    /// per node.
    next_wake: Option<u64>,
    /// Processes started for this node so far.
    life: u32,
    meta_version: u64,
    /// When a requested restart may happen (it also waits until every live
    /// node has declared the crash).
    restart_at: Option<u64>,
    bytes_sent: u64,
    msgs_sent: u64,
}

#[derive(Debug)]
enum What {
    Deliver { to: u32, from: u32, bytes: Vec<u8> },
    Wake(u32),
    Start { node: u32, seeds: Vec<u32> },
    Restart(u32),
    Resume(u32),
    DetectionDeadline(u32),
    RejoinDeadline { node: u32, life: u32 },
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

#[derive(Debug, Default)]
struct TrafficCounters {
    since: Option<u64>,
    until: Option<u64>,
    kind_bytes: [u64; 6],
    kind_msgs: [u64; 6],
}

/// A deterministic simulation of `n` Baton nodes.
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    base: Instant,
    now: u64,
    queue: BinaryHeap<Queued>,
    seq: u64,
    nodes: Vec<Node>,
    index: HashMap<NodeId, usize>,
    shorts: HashMap<u64, usize>,
    net: Network,
    net_rng: SmallRng,
    rng: SmallRng,
    views: Views,
    health: Health,
    completeness: Completeness,
    rejoins: Rejoins,
    dissemination: Dissemination,
    watches: Vec<(Watch, u64)>,
    converged: [Vec<Duration>; 3],
    violations: Vec<Violation>,
    counters: Counters,
    traffic: TrafficCounters,
    unstarted: usize,
    tx_buf: Vec<Transmit>,
    ev_buf: Vec<Event>,
}

impl Sim {
    /// A simulation of `config.nodes` nodes, none started yet (see
    /// [`bootstrap`](Self::bootstrap)).
    pub fn new(config: SimConfig) -> Self {
        let n = config.nodes;
        let (_, max_suspicion) = config.protocol.suspicion_bounds(n);
        let grace = config
            .grace
            .unwrap_or(max_suspicion + Duration::from_secs(5));
        let nodes = (0..n)
            .map(|i| Node {
                id: NodeId::synthetic(i as u32),
                swim: None,
                status: Status::NotStarted,
                backlog: VecDeque::new(),
                next_wake: None,
                life: 0,
                meta_version: 0,
                restart_at: None,
                bytes_sent: 0,
                msgs_sent: 0,
            })
            .collect::<Vec<_>>();
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.id.clone(), i))
            .collect();
        let shorts = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.id.short(), i))
            .collect();
        Sim {
            shorts,
            net: Network::new(n, config.seed, config.latency.clone(), config.jitter),
            net_rng: SmallRng::seed_from_u64(mix(config.seed ^ 0x006e_6574_776f_726b)),
            rng: SmallRng::seed_from_u64(mix(config.seed ^ 0x7369_6d75_6c61_746f)),
            views: Views::new(n),
            health: Health::new(n, grace),
            completeness: Completeness::new(config.detection_bound),
            rejoins: Rejoins::new(config.rejoin_bound),
            dissemination: Dissemination::new(config.dissemination_timeout),
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
            traffic: TrafficCounters::default(),
            unstarted: n,
            tx_buf: Vec::new(),
            ev_buf: Vec::new(),
            config,
        }
    }

    // ---- time ----

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    /// Virtual time as the `Instant` the state machines see.
    pub fn instant(&self) -> Instant {
        self.base + self.now()
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
    pub fn node(&self, i: usize) -> Option<&Machine> {
        self.nodes[i].swim.as_ref()
    }

    /// Where node `i`'s process is.
    pub fn status(&self, i: usize) -> Status {
        self.nodes[i].status
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
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

    /// How long restarted nodes took to be alive in every view.
    pub fn rejoin_samples(&self) -> &[Duration] {
        self.rejoins.samples()
    }

    /// Convergence times measured by watches of `kind`.
    pub fn convergence_samples(&self, kind: Watch) -> &[Duration] {
        &self.converged[kind as usize]
    }

    /// Whether node `i` runs, healthy, with no crash or restart of its own
    /// still being digested by the group: a fair target for a new fault,
    /// or origin of an update.
    pub fn is_settled(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        node.status == Status::Running
            && node.restart_at.is_none()
            && self.health.is_healthy(i)
            && !self.completeness.is_open(i)
            && !self.rejoins.is_pending(i)
    }

    // ---- scripted actions ----

    /// Starts every node: node 0 now, the others spread evenly over `over`,
    /// each joining through node 0 and up to two random earlier nodes.
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

    /// Starts every node now, each already knowing every other as alive, as
    /// after an anti-entropy exchange with a node that knew the whole group:
    /// the state of a group that has been running for a while, reached
    /// without the wave of join announcements that [`bootstrap`](Self::bootstrap)
    /// sends through the group (which takes ~50 s to drain at n = 1000).
    pub fn bootstrap_warm(&mut self) {
        let n = self.nodes.len();
        let table: Vec<Update> = (0..n)
            .map(|k| Update::Alive {
                id: self.nodes[k].id.clone(),
                incarnation: 0,
                meta: self.meta(k),
            })
            .collect();
        for i in 0..n {
            if self.nodes[i].status != Status::NotStarted {
                continue;
            }
            self.boot(i, Vec::new());
            let from = usize::from(i == 0);
            let updates: Vec<Update> = table
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != i)
                .map(|(_, u)| u.clone())
                .collect();
            let now = self.instant();
            let from_id = self.nodes[from].id.clone();
            if let Some(swim) = self.nodes[i].swim.as_mut() {
                swim.handle_message(
                    now,
                    from_id,
                    Message::Sync(wire::Sync {
                        digest: 0,
                        updates,
                        reply: false,
                    }),
                );
            }
            self.after(i);
        }
    }

    /// Crashes node `i` now: its process and everything it knew are gone.
    pub fn crash(&mut self, i: usize) {
        let now = self.now();
        let node = &mut self.nodes[i];
        if !matches!(node.status, Status::Running | Status::Paused) {
            return;
        }
        let incarnation = node.swim.as_ref().map_or(0, Machine::incarnation);
        node.swim = None;
        node.status = Status::Crashed;
        node.backlog.clear();
        node.next_wake = None;
        self.counters.crashes += 1;
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

    /// Restarts crashed node `i` now, with the same id and a fresh state
    /// machine (incarnation 0), joining through a few live nodes.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].status != Status::Crashed {
            return;
        }
        self.nodes[i].restart_at = None;
        self.completeness.abandon(i);
        let seeds = self.pick_seeds(i);
        self.boot(i, seeds);
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

    /// Pauses node `i`: it processes nothing until resumed, and messages
    /// to it queue up, as for a process that is starved of CPU.
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

    /// Resumes paused node `i` now: it first handles the messages that
    /// queued up, in arrival order, as a driver reading its socket's backlog
    /// would, and only then its timers.
    pub fn resume(&mut self, i: usize) {
        if self.nodes[i].status != Status::Paused {
            return;
        }
        self.nodes[i].status = Status::Running;
        let incarnation = self.incarnation(i);
        self.health.set_paused(i, false, incarnation, self.now());
        while let Some((from, bytes)) = self.nodes[i].backlog.pop_front() {
            self.counters.delivered += 1;
            self.handle_bytes(i, from as usize, &bytes);
            self.after(i);
        }
        let now = self.instant();
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            swim.handle_timeout(now);
        }
        self.after(i);
    }

    /// Node `i` announces new metadata; measures how long it takes to reach
    /// 99.9% of the other running nodes (paused ones are not waited for).
    pub fn set_meta(&mut self, i: usize) {
        if self.nodes[i].status != Status::Running {
            return;
        }
        self.nodes[i].meta_version += 1;
        let meta = self.meta(i);
        let now = self.instant();
        let Some(swim) = self.nodes[i].swim.as_mut() else {
            return;
        };
        swim.set_meta(now, meta.clone());
        let incarnation = swim.incarnation();
        self.health.note_incarnation(i, incarnation);
        let n = self.nodes.len();
        let live: Vec<usize> = (0..n)
            .filter(|&j| self.nodes[j].status == Status::Running)
            .collect();
        self.dissemination.start(i, meta, self.now(), n, live);
        self.after(i);
    }

    /// Drops the open dissemination measurements (a fault is starting that
    /// keeps them from finishing on purpose).
    pub fn interrupt_dissemination(&mut self) {
        self.dissemination.interrupt();
    }

    /// Sets the loss probability of every link.
    pub fn set_loss(&mut self, p: f64) {
        self.net.set_loss(p);
    }

    /// Cuts every group from the others, both ways (see [`Network::partition`]).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.net.partition(groups);
        self.cuts_changed();
    }

    /// Cuts messages from `from` to `to` only.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.net.cut_one_way(from, to);
        self.cuts_changed();
    }

    /// Cuts every message from a node of `from` to a node of `to`.
    pub fn cut_one_way_between(&mut self, from: &[usize], to: &[usize]) {
        for &a in from {
            for &b in to {
                self.net.cut_one_way(a, b);
            }
        }
        self.cuts_changed();
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
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
        for node in &mut self.nodes {
            node.bytes_sent = 0;
            node.msgs_sent = 0;
        }
        self.traffic = TrafficCounters {
            since: Some(self.now),
            ..TrafficCounters::default()
        };
    }

    /// Stops counting traffic.
    pub fn stop_measurement(&mut self) {
        if self.traffic.until.is_none() {
            self.traffic.until = Some(self.now);
        }
    }

    /// Traffic over the measurement window (up to now if it is still open).
    pub fn traffic(&self) -> Traffic {
        let since = self.traffic.since.unwrap_or(self.now);
        let until = self.traffic.until.unwrap_or(self.now);
        let window = Duration::from_nanos(until.saturating_sub(since));
        let secs = window.as_secs_f64().max(1e-9);
        let n = self.nodes.len().max(1) as f64;
        let total_bytes: u64 = self.traffic.kind_bytes.iter().sum();
        let total_msgs: u64 = self.traffic.kind_msgs.iter().sum();
        let max_bytes = self.nodes.iter().map(|n| n.bytes_sent).max().unwrap_or(0);
        Traffic {
            window,
            bytes_per_node_per_s: total_bytes as f64 / n / secs,
            msgs_per_node_per_s: total_msgs as f64 / n / secs,
            max_bytes_per_node_per_s: max_bytes as f64 / secs,
            bytes_by_kind: self.traffic.kind_bytes.map(|b| b as f64 / n / secs),
            msgs_by_kind: self.traffic.kind_msgs.map(|m| m as f64 / n / secs),
        }
    }

    // ---- the event loop ----

    fn process(&mut self, what: What) {
        match what {
            What::Deliver { to, from, bytes } => self.deliver(to as usize, from as usize, bytes),
            What::Wake(i) => self.wake(i as usize),
            What::Start { node, seeds } => {
                let i = node as usize;
                if self.nodes[i].status == Status::NotStarted {
                    self.boot(i, seeds.into_iter().map(|s| s as usize).collect());
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
        }
    }

    fn boot(&mut self, i: usize, seeds: Vec<usize>) {
        let now = self.instant();
        let life = self.nodes[i].life + 1;
        let rng = SmallRng::seed_from_u64(mix(
            self.config.seed ^ mix((i as u64) << 32 | u64::from(life))
        ));
        let meta = self.meta(i);
        let node = &mut self.nodes[i];
        let restarted = node.status == Status::Crashed;
        if node.status == Status::NotStarted {
            self.unstarted -= 1;
        }
        let mut swim = Swim::new(
            node.id.clone(),
            meta,
            self.config.protocol.clone(),
            rng,
            now,
        );
        let seed_ids: Vec<NodeId> = seeds.iter().map(|&s| self.nodes[s].id.clone()).collect();
        swim.join(now, seed_ids);
        let node = &mut self.nodes[i];
        node.swim = Some(swim);
        node.status = Status::Running;
        node.life = life;
        node.next_wake = None;
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
        self.after(i);
        self.check_watches();
    }

    /// Node 0 if it runs, and random running nodes, three in all at most.
    fn pick_seeds(&mut self, i: usize) -> Vec<usize> {
        let n = self.nodes.len();
        let mut seeds = Vec::new();
        if i != 0 && self.views.is_live(0) {
            seeds.push(0);
        }
        for _ in 0..32 {
            if seeds.len() >= 3 {
                break;
            }
            let s = self.rng.random_range(0..n);
            if s != i && self.views.is_live(s) && !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        seeds
    }

    fn meta(&self, i: usize) -> Vec<u8> {
        let mut meta = Vec::with_capacity(self.config.meta_bytes.max(12));
        meta.extend_from_slice(&self.nodes[i].meta_version.to_be_bytes());
        meta.extend_from_slice(&(i as u32).to_be_bytes());
        meta.resize(self.config.meta_bytes.max(12), b'.');
        meta
    }

    fn incarnation(&self, i: usize) -> u32 {
        self.nodes[i].swim.as_ref().map_or(0, Machine::incarnation)
    }

    fn deliver(&mut self, to: usize, from: usize, bytes: Vec<u8>) {
        match self.nodes[to].status {
            Status::Running => {}
            Status::Paused => {
                if self.nodes[to].backlog.len() >= self.config.backlog_limit {
                    self.counters.backlog_dropped += 1;
                } else {
                    self.nodes[to].backlog.push_back((from as u32, bytes));
                }
                return;
            }
            Status::NotStarted | Status::Crashed => {
                self.counters.to_stopped += 1;
                return;
            }
        }
        self.counters.delivered += 1;
        self.handle_bytes(to, from, &bytes);
        self.after(to);
    }

    fn handle_bytes(&mut self, to: usize, from: usize, bytes: &[u8]) {
        let (shorts, nodes) = (&self.shorts, &self.nodes);
        let resolve = |short: u64| shorts.get(&short).map(|&i| nodes[i].id.clone());
        match wire::decode(bytes, &resolve) {
            Ok(decoded) => {
                let now = self.instant();
                let from_id = self.nodes[from].id.clone();
                if let Some(swim) = self.nodes[to].swim.as_mut() {
                    swim.handle_message(now, from_id, decoded.message);
                }
            }
            Err(err) => {
                let v = wire_round_trip::violation(
                    &self.name(from),
                    &self.name(to),
                    bytes.len(),
                    &err,
                    self.now(),
                );
                self.violate(v);
            }
        }
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
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            swim.handle_timeout(now);
        }
        self.after(i);
    }

    /// Drains node `i`'s output and schedules its next wake-up.
    fn after(&mut self, i: usize) {
        let Some(swim) = self.nodes[i].swim.as_mut() else {
            return;
        };
        let mut tx = std::mem::take(&mut self.tx_buf);
        let mut ev = std::mem::take(&mut self.ev_buf);
        while let Some(t) = swim.poll_transmit() {
            tx.push(t);
        }
        while let Some(e) = swim.poll_event() {
            ev.push(e);
        }
        let wake = swim.poll_timeout();
        for t in tx.drain(..) {
            self.send(i, t);
        }
        for e in ev.drain(..) {
            self.observe(i, e);
        }
        self.tx_buf = tx;
        self.ev_buf = ev;
        if let Some(at) = wake {
            let at = self.ns_of(at).max(self.now);
            if self.nodes[i].next_wake.is_none_or(|w| at < w) {
                self.nodes[i].next_wake = Some(at);
                self.push(at, What::Wake(i as u32));
            }
        }
    }

    fn send(&mut self, from: usize, t: Transmit) {
        let bytes = wire::encode_message(&t.message);
        self.counters.sent += 1;
        self.counters.updates_sent += t.message.updates().len() as u64;
        if self.traffic.since.is_some() && self.traffic.until.is_none() {
            let kind = kind_index(&t.message);
            self.traffic.kind_bytes[kind] += bytes.len() as u64;
            self.traffic.kind_msgs[kind] += 1;
            self.nodes[from].bytes_sent += bytes.len() as u64;
            self.nodes[from].msgs_sent += 1;
        }
        let Some(&to) = self.index.get(&t.to) else {
            self.counters.unknown_recipient += 1;
            return;
        };
        match self.net.transit(from, to, &mut self.net_rng) {
            Ok(delay) => {
                let at = self.now + Self::ns(delay);
                self.push(
                    at,
                    What::Deliver {
                        to: to as u32,
                        from: from as u32,
                        bytes,
                    },
                );
            }
            Err(Dropped::Lost) => self.counters.lost += 1,
            Err(Dropped::Cut) => self.counters.cut += 1,
        }
    }

    fn observe(&mut self, i: usize, event: Event) {
        let now = self.now();
        match event {
            Event::MemberState {
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
            Event::MemberMeta { id, meta } => {
                if let Some(m) = self.index_of(&id) {
                    self.dissemination.on_meta(i, m, &meta, now);
                }
            }
            Event::Refuted { incarnation } => {
                self.counters.refutations += 1;
                self.health.note_incarnation(i, incarnation);
            }
            Event::Removed { id } => {
                if let Some(m) = self.index_of(&id) {
                    self.views.set(i, m, Seen::Unknown);
                }
            }
            _ => {}
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
            .swim
            .as_ref()
            .and_then(|s| s.member(&self.nodes[member].id))
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
}

/// The index of a message's kind in [`KINDS`].
pub fn kind_index(message: &Message) -> usize {
    match message {
        Message::Ping(_) => 0,
        Message::PingReq(_) => 1,
        Message::Ack(_) => 2,
        Message::Nack(_) => 3,
        Message::Gossip(_) => 4,
        Message::Sync(_) => 5,
    }
}
