//! The fault scenarios of `testnet sim`, and the measurement around them.
//!
//! Every run has the same shape: bootstrap (small groups: node 0 first, the
//! others discover a few earlier nodes over ~2 s, handshake and join; large
//! groups: a warm start) and warm-up until the views converge and the join
//! wave has drained; then, with `--sessions S`, S sessions opened through
//! `Node::open` on random nodes and replicated (by gossip and anti-entropy
//! in a cold-started group, by import in a warm-started one) until every
//! map agrees; the measurement window, where the scenario injects its
//! faults and nodes announce new metadata every few seconds; then the
//! settle phase, where faults stop and the membership must converge.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::engine::{Sim, SimConfig, Status, Watch};
use super::identity;
use super::invariants::converges;
use super::network::mix;
use super::report::{Messages, Report, SessionReport, Streams, TrafficReport, WallPhases};
use super::stats::{Summary, round};
use super::traffic::{HEADER_BYTES, Rates};

/// Groups larger than this start warm unless told otherwise: a cold start
/// of n nodes runs ~n²/2 handshakes and a join wave that takes ~50 s of
/// virtual time to drain at n = 1000.
pub const WARM_ABOVE: usize = 256;

/// Clients are spread over this many /24s (the policy's location keys).
pub const CLIENT_LOCATIONS: u8 = 4;

/// Sessions of a cold-started group replicate by gossip and anti-entropy up
/// to this many; more are imported. Every node piggybacks every delta it
/// learns ~12 times at one or two a datagram, so a group spreads about one
/// write a second: a larger burst would still fill the piggyback queues
/// when the measurement starts.
pub const GOSSIP_AT_MOST: usize = 64;

/// A fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A random node crashes every ~3 s and restarts ~2.5 s later.
    Crash,
    /// Random loss on every link, no crashes.
    Loss,
    /// A minority is cut away for 10 s every 20 s.
    Partition,
    /// One node is paused in bursts.
    Pause,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 4] = [
        Scenario::Crash,
        Scenario::Loss,
        Scenario::Partition,
        Scenario::Pause,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Crash => "crash",
            Scenario::Loss => "loss",
            Scenario::Partition => "partition",
            Scenario::Pause => "pause",
        }
    }

    /// The default length of the measurement window.
    pub fn default_duration(self) -> Duration {
        match self {
            Scenario::Loss => Duration::from_secs(30 * 60),
            _ => Duration::from_secs(60),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| format!("unknown scenario `{s}`: use crash, loss, partition or pause"))
    }
}

/// Everything a scenario run needs.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// Which faults.
    pub scenario: Scenario,
    /// The simulated group.
    pub sim: SimConfig,
    /// Name of the protocol profile, for the report.
    pub profile: String,
    /// Length of the measurement window.
    pub duration: Duration,
    /// Nodes start over this long, each discovering node 0 and up to two
    /// earlier nodes...
    pub bootstrap_over: Duration,
    /// ...unless every node starts at once, a group that has run for a
    /// while ([`Sim::bootstrap_warm`]); sessions are then replicated by
    /// import rather than gossip. Defaults to `nodes > WARM_ABOVE`.
    pub warm_start: bool,
    /// Sessions opened before the measurement window.
    pub sessions: usize,
    /// Whether they are replicated by import ([`Sim::replicate_sessions`])
    /// rather than gossip: by default when the group starts warm or there
    /// are more than [`GOSSIP_AT_MOST`].
    pub import_sessions: Option<bool>,
    /// The opens are spread over this long.
    pub open_over: Duration,
    /// The measurement starts no earlier than this, and only once the views
    /// have converged and the join announcements have drained (messages
    /// carry less than one update on average)...
    pub warmup: Duration,
    /// ...which must happen by this (the views must have converged; an
    /// undrained join wave is only reported).
    pub max_warmup: Duration,
    /// Length of the final phase without faults.
    pub settle: Duration,
    /// Loss probability of every link during the measurement window: 0.05
    /// in the loss scenario, 0 in the others unless set.
    pub loss: f64,
    /// Cut the minority one way only (partition scenario).
    pub asymmetric: bool,
    /// Mean time between two metadata updates.
    pub update_every: Duration,
    /// Mean time between two crashes (crash scenario).
    pub crash_every: Duration,
    /// Distinct settled nodes each crash takes down at the same instant
    /// (fewer if fewer are settled): correlated failures, as of a cluster
    /// or a rack (crash scenario).
    pub crash_together: usize,
    /// A crashed node restarts this long after its crash (or once every
    /// live node has declared it dead, if that is later).
    pub restart_after: Duration,
    /// Time between the starts of two partitions.
    pub partition_every: Duration,
    /// How long a partition lasts.
    pub partition_for: Duration,
    /// The fraction of nodes cut away.
    pub partition_fraction: f64,
    /// Range of pause lengths (pause scenario).
    pub pause_for: (Duration, Duration),
    /// Range of running time between two pauses.
    pub pause_gap: (Duration, Duration),
    /// The command that replays the run, for the report.
    pub replay: String,
}

impl ScenarioConfig {
    /// The defaults of `testnet sim` for this scenario, group size and seed.
    pub fn new(scenario: Scenario, nodes: usize, seed: u64) -> Self {
        ScenarioConfig {
            scenario,
            sim: SimConfig::new(nodes, seed),
            profile: "lan".to_owned(),
            duration: scenario.default_duration(),
            bootstrap_over: Duration::from_secs(2),
            warm_start: nodes > WARM_ABOVE,
            sessions: 0,
            import_sessions: None,
            open_over: Duration::from_secs(2),
            warmup: Duration::from_secs(10),
            max_warmup: Duration::from_secs(120),
            settle: Duration::from_secs(15),
            loss: if scenario == Scenario::Loss {
                0.05
            } else {
                0.0
            },
            asymmetric: false,
            update_every: Duration::from_secs(2),
            crash_every: Duration::from_secs(3),
            crash_together: 1,
            restart_after: Duration::from_millis(2500),
            partition_every: Duration::from_secs(20),
            partition_for: Duration::from_secs(10),
            partition_fraction: 0.2,
            pause_for: (Duration::from_millis(200), Duration::from_millis(2500)),
            pause_gap: (Duration::from_secs(1), Duration::from_secs(3)),
            replay: format!(
                "cargo run --release -p baton-testnet --bin testnet -- sim --nodes {nodes} \
                 --seed {seed} --scenario {scenario}"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    Update,
    Crash,
    Cut,
    Heal,
    Pause,
    /// Whether the sessions settled since the heal of partition `cut`
    /// (its count), healed at the given time.
    SessionsSettled {
        cut: u64,
        healed: Duration,
    },
}

/// How often the sessions are checked for having settled after a heal.
const SETTLED_CHECK: Duration = Duration::from_millis(100);

/// Runs a scenario to the end and reports what it measured.
pub fn run(cfg: &ScenarioConfig) -> Report {
    let wall = Instant::now();
    let n = cfg.sim.nodes;
    let mut sim_cfg = cfg.sim.clone();
    // Room for every session four times over on average: opens and
    // takeovers never run out of capacity by accident.
    let per_node = (cfg.sessions.div_ceil(n.max(1)) * 4).min(u32::MAX as usize) as u32;
    sim_cfg.capacity = sim_cfg.capacity.max(per_node);
    let mut sim = Sim::new(sim_cfg);
    let mut rng = SmallRng::seed_from_u64(mix(cfg.sim.seed ^ 0x7363_656e_6172_696f));

    // Bootstrap and warm-up.
    sim.watch(Watch::Warmup);
    if cfg.warm_start {
        sim.bootstrap_warm();
    } else {
        sim.bootstrap(cfg.bootstrap_over);
    }
    let bootstrap_wall = wall.elapsed();
    let drained = warm_up(&mut sim, cfg);
    if sim.is_watching(Watch::Warmup)
        && let Err(mut v) =
            converges::check(sim.views(), Duration::ZERO, sim.now(), |i| format!("n{i}"))
    {
        v.details = format!("bootstrap did not converge: {}", v.details);
        sim.violate(v);
    }
    let sessions_from = wall.elapsed();
    let replicated = open_sessions(&mut sim, cfg, &mut rng);
    let sessions_wall = wall.elapsed() - sessions_from;

    // The measurement window.
    let warmup_wall = wall.elapsed();
    let start = sim.now();
    let end = start + cfg.duration;
    sim.start_measurement();
    let mut agenda: BinaryHeap<Reverse<(Duration, u64, Act)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut plan = |agenda: &mut BinaryHeap<_>, at: Duration, act: Act| {
        order += 1;
        agenda.push(Reverse((at, order, act)));
    };
    plan(
        &mut agenda,
        start + jitter(&mut rng, cfg.update_every),
        Act::Update,
    );
    let paused = if n > 1 { rng.random_range(1..n) } else { 0 };
    let mut heal_unconverged = 0;
    // Partitions cut so far; heal until the sessions settled (the maps
    // equal, every session hosted once), and heals that had not settled
    // them when the next cut came.
    let mut cuts = 0u64;
    let mut sessions_settled = Vec::new();
    let mut sessions_unsettled = 0usize;
    let mut all_replicas_crashed = 0u64;
    sim.set_loss(cfg.loss);
    match cfg.scenario {
        Scenario::Crash => plan(
            &mut agenda,
            start + jitter(&mut rng, cfg.crash_every),
            Act::Crash,
        ),
        Scenario::Loss => {}
        Scenario::Partition => plan(&mut agenda, start + Duration::from_secs(5), Act::Cut),
        Scenario::Pause => plan(
            &mut agenda,
            start + between(&mut rng, cfg.pause_gap),
            Act::Pause,
        ),
    }
    while let Some(Reverse((at, _, act))) = agenda.pop() {
        if at >= end {
            // A heal whose sessions had not settled when the run ended.
            sessions_unsettled += std::iter::once(act)
                .chain(agenda.drain().map(|Reverse((_, _, a))| a))
                .filter(|a| matches!(a, Act::SessionsSettled { .. }))
                .count();
            break;
        }
        sim.run_until(at);
        match act {
            Act::Update => {
                // Updates are timed in a whole group: not across a cut, nor
                // while a healed partition is still merging.
                if !sim.network().has_cuts()
                    && !sim.is_watching(Watch::Heal)
                    && let Some(i) = pick(&sim, &mut rng, |sim, i| sim.is_settled(i))
                {
                    sim.set_meta(i);
                }
                plan(
                    &mut agenda,
                    at + jitter(&mut rng, cfg.update_every),
                    Act::Update,
                );
            }
            Act::Crash => {
                // With one node a burst draws exactly what a single crash did.
                let mut burst = Vec::with_capacity(cfg.crash_together);
                while burst.len() < cfg.crash_together {
                    let ok = |sim: &Sim, i| sim.is_settled(i) && !burst.contains(&i);
                    let Some(i) = pick(&sim, &mut rng, ok) else {
                        break;
                    };
                    burst.push(i);
                }
                all_replicas_crashed += sim.sessions_all_replicas_in(&burst) as u64;
                for &i in &burst {
                    sim.crash(i);
                    sim.restart_at(i, at + cfg.restart_after);
                }
                plan(
                    &mut agenda,
                    at + jitter(&mut rng, cfg.crash_every),
                    Act::Crash,
                );
            }
            Act::Cut => {
                cuts += 1;
                sim.interrupt_dissemination();
                if sim.cancel_watch(Watch::Heal) {
                    heal_unconverged += 1;
                }
                let size = ((cfg.partition_fraction * n as f64).ceil() as usize).clamp(1, n / 2);
                let (minority, majority) = split(&mut rng, n, size);
                if cfg.asymmetric {
                    sim.cut_one_way_between(&minority, &majority);
                    sim.watch_cut(&minority, &majority);
                } else {
                    sim.partition(&[majority.clone(), minority.clone()]);
                    sim.watch_cut(&minority, &majority);
                }
                plan(&mut agenda, at + cfg.partition_for, Act::Heal);
                plan(&mut agenda, at + cfg.partition_every, Act::Cut);
            }
            Act::Heal => {
                sim.heal();
                sim.watch(Watch::Heal);
                if cfg.sessions > 0 {
                    let check = Act::SessionsSettled {
                        cut: cuts,
                        healed: at,
                    };
                    plan(&mut agenda, at + SETTLED_CHECK, check);
                }
            }
            Act::SessionsSettled { cut, healed } => {
                if cut != cuts {
                    sessions_unsettled += 1;
                } else if sim.sessions_settled() {
                    sessions_settled.push(at - healed);
                } else {
                    plan(&mut agenda, at + SETTLED_CHECK, act);
                }
            }
            Act::Pause => {
                sim.pause(paused);
                let length = between(&mut rng, cfg.pause_for);
                sim.resume_at(paused, at + length);
                let next = at + length + between(&mut rng, cfg.pause_gap);
                plan(&mut agenda, next, Act::Pause);
            }
        }
    }
    sim.run_until(end);
    sim.stop_measurement();
    let measure_wall = wall.elapsed() - warmup_wall;

    // Faults stop; the membership must converge.
    sim.heal();
    sim.set_loss(0.0);
    for i in 0..n {
        match sim.status(i) {
            Status::Paused => sim.resume(i),
            Status::Crashed => {
                let now = sim.now();
                sim.restart_at(i, now);
            }
            _ => {}
        }
    }
    sim.watch(Watch::Settle);
    sim.run_until(end + cfg.settle);
    if let Err(v) = converges::check(sim.views(), end, sim.now(), |i| format!("n{i}")) {
        sim.violate(v);
    }

    let wall = Wall {
        total: wall.elapsed(),
        bootstrap: bootstrap_wall,
        sessions: sessions_wall,
        warmup: warmup_wall,
        measure: measure_wall,
    };
    let outcome = Outcome {
        start,
        drained,
        heal_unconverged,
        sessions_settled,
        sessions_unsettled,
        replicated,
        all_replicas_crashed,
    };
    let report = report(cfg, &sim, &wall, &outcome);
    // Freeing a thousand nodes' maps takes seconds: let a thread do it
    // while the report is printed (the process may exit first).
    std::thread::spawn(move || drop(sim));
    report
}

/// Runs until the measurement may start: not before `cfg.warmup`, with the
/// views converged and the join wave drained, or until `cfg.max_warmup`.
/// Returns whether the join wave drained.
fn warm_up(sim: &mut Sim, cfg: &ScenarioConfig) -> bool {
    const STEP: Duration = Duration::from_secs(1);
    sim.run_until(cfg.warmup.max(cfg.bootstrap_over).saturating_sub(STEP));
    loop {
        sim.run_for(STEP);
        let converged = !sim.is_watching(Watch::Warmup);
        if (converged && drained(sim)) || sim.now() >= cfg.max_warmup {
            return drained(sim);
        }
    }
}

/// Whether the news has spread: fewer membership updates wait to be
/// piggybacked than there are nodes. Every join is news to every node and
/// rides on its next probes and acks many times: measuring before that
/// wave has passed would measure the bootstrap, not the scenario.
fn drained(sim: &Sim) -> bool {
    sim.queued_updates() < sim.live_count().max(1)
}

impl ScenarioConfig {
    /// Whether sessions are replicated by import rather than gossip.
    pub fn imports_sessions(&self) -> bool {
        self.import_sessions
            .unwrap_or(self.warm_start || self.sessions > GOSSIP_AT_MOST)
    }
}

/// Opens `cfg.sessions` sessions through `Node::open` on random running
/// nodes, clients spread over [`CLIENT_LOCATIONS`] /24s. Replicated by
/// gossip, the opens are spread over `cfg.open_over`; by import, they all
/// happen at one instant, followed by the import. Then runs until every
/// map agrees, every session has one host and the news has drained (at
/// most `cfg.max_warmup` more). Returns how long replication took from the
/// first open, if it completed.
fn open_sessions(sim: &mut Sim, cfg: &ScenarioConfig, rng: &mut SmallRng) -> Option<Duration> {
    if cfg.sessions == 0 {
        return Some(Duration::ZERO);
    }
    let import = cfg.imports_sessions();
    let first = sim.now();
    let step = if import {
        Duration::ZERO
    } else {
        cfg.open_over.div_f64(cfg.sessions as f64)
    };
    for k in 0..cfg.sessions {
        if !import {
            sim.run_until(first + step.mul_f64(k as f64));
        }
        let location = (k % usize::from(CLIENT_LOCATIONS)) as u8;
        let client = identity::client_addr(
            location,
            rng.random_range(1..=254),
            5004 + 2 * rng.random_range(0..1000u16),
        );
        if let Some(i) = pick(sim, rng, |sim, i| sim.status(i) == Status::Running) {
            sim.open_session(i, &client.to_string());
        }
    }
    if import {
        sim.replicate_sessions();
    }
    const STEP: Duration = Duration::from_millis(500);
    let limit = sim.now() + cfg.max_warmup;
    loop {
        if sim.sessions_settled() {
            let took = sim.now() - first;
            while !drained(sim) && sim.now() < limit {
                sim.run_for(STEP);
            }
            return Some(took);
        }
        if sim.now() >= limit {
            return None;
        }
        sim.run_for(STEP);
    }
}

#[derive(Debug)]
struct Wall {
    total: Duration,
    bootstrap: Duration,
    sessions: Duration,
    warmup: Duration,
    measure: Duration,
}

/// What the run itself found, besides the simulator's counters.
#[derive(Debug)]
struct Outcome {
    /// When the measurement window started.
    start: Duration,
    /// Whether the join wave had drained by then.
    drained: bool,
    /// Heals after which the views had not converged at the next cut.
    heal_unconverged: usize,
    /// Heal until the sessions settled (partition scenario with sessions).
    sessions_settled: Vec<Duration>,
    /// Heals after which they had not settled at the next cut or the end.
    sessions_unsettled: usize,
    /// How long session replication took, if it completed.
    replicated: Option<Duration>,
    /// Sessions every replica of which was in a crash burst, summed over
    /// the bursts.
    all_replicas_crashed: u64,
}

fn report(cfg: &ScenarioConfig, sim: &Sim, wall: &Wall, outcome: &Outcome) -> Report {
    let Outcome {
        start,
        drained,
        heal_unconverged,
        ref sessions_settled,
        sessions_unsettled,
        replicated,
        all_replicas_crashed,
    } = *outcome;
    let wall_s = wall.total.as_secs_f64();
    let measure_wall_s = wall.measure.as_secs_f64();
    let (per_node, window) = sim.traffic();
    let rates = Rates::of(&per_node, window.as_secs_f64());
    let [asked, unasked] = sim.coords_sent();
    // Hundredths: a rate well under one a second.
    let coord_rate = |n: u64| {
        let rate = n as f64 / per_node.len().max(1) as f64 / window.as_secs_f64().max(1e-9);
        (rate * 100.0).round() / 100.0
    };
    let c = sim.counters();
    let to_ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let summary = |ds: &[Duration]| Summary::of(&ds.iter().map(to_ms).collect::<Vec<_>>());
    let first_ms = |ds: &[Duration]| ds.first().map(|d| round(to_ms(d)));
    let virtual_s = sim.now().as_secs_f64();
    let streams = sim.streams();
    let verifier = sim.verifier();
    let (takeovers_unfinished, takeovers_superseded) = sim.takeovers_unfinished();
    Report {
        scenario: cfg.scenario.name().to_owned(),
        nodes: cfg.sim.nodes,
        seed: cfg.sim.seed,
        profile: cfg.profile.clone(),
        latency: cfg.sim.latency.describe(),
        warm_start: cfg.warm_start,
        virtual_s: round(virtual_s),
        warmup_s: round(start.as_secs_f64()),
        warmup_drained: drained,
        measured_s: round(window.as_secs_f64()),
        wall_s: millis(wall_s),
        speedup: round(virtual_s / wall_s.max(1e-9)),
        wall_phases_s: WallPhases {
            bootstrap: millis(wall.bootstrap.as_secs_f64()),
            sessions: millis(wall.sessions.as_secs_f64()),
            warmup: millis(wall.warmup.as_secs_f64()),
            measure: millis(measure_wall_s),
            settle: millis((wall.total - wall.warmup - wall.measure).as_secs_f64()),
        },
        measure_speedup: round(window.as_secs_f64() / measure_wall_s.max(1e-9)),
        detection_ms: summary(sim.detection_samples()),
        dissemination_ms: summary(sim.dissemination_samples()),
        dissemination_incomplete: sim.dissemination_incomplete(),
        false_positives: c.false_positives,
        suspicions_of_healthy: c.suspicions_of_healthy,
        bytes_per_node_per_s: round(rates.bytes),
        msgs_per_node_per_s: round(rates.packets),
        max_bytes_per_node_per_s: round(rates.max_bytes),
        vivaldi_median_rel_error: median(sim.vivaldi_errors()).map(|m| (m * 1e4).round() / 1e4),
        traffic: TrafficReport {
            counted: format!(
                "sealed datagrams and stream frame payloads as the node counts them, plus \
                 {HEADER_BYTES} bytes of Ethernet+IPv4+UDP headers per datagram; stream \
                 transport overhead (frame lengths, QUIC/Noise/yamux) not counted"
            ),
            header_bytes_per_node_per_s: round(rates.header_bytes),
            bytes_per_node_per_s_by_class: rates
                .by_class
                .iter()
                .map(|(class, b, _)| (class.as_str(), round(*b)))
                .collect(),
            packets_per_node_per_s_by_class: rates
                .by_class
                .iter()
                .map(|(class, _, p)| (class.as_str(), round(*p)))
                .collect(),
            coords_asked_per_node_per_s: coord_rate(asked),
            coords_unasked_per_node_per_s: coord_rate(unasked),
        },
        sessions: cfg.sessions,
        sessions_lost: sim.sessions_lost(),
        sessions_all_replicas_crashed: all_replicas_crashed,
        crash_together: cfg.crash_together,
        backups: cfg.sim.sessions.policy.backups,
        double_owned: sim.double_owned(),
        takeover_ms: summary(sim.takeover_samples()),
        claim_ms: summary(sim.claim_samples()),
        claim_spread_ms: summary(sim.claim_spread_samples()),
        session_details: SessionReport {
            replication: if cfg.sessions == 0 {
                "none".to_owned()
            } else if cfg.imports_sessions() {
                "import (node::warm_tables and warm_maps, as after anti-entropy)".to_owned()
            } else {
                "gossip and anti-entropy".to_owned()
            },
            replicated_ms: replicated.map(|d| round(to_ms(&d))),
            opened: c.opened,
            open_failed: c.open_failed,
            client_reports: c.client_reports,
            closed: c.closed,
            takeovers_unfinished,
            takeovers_superseded,
            takeovers_without_replica: sim.takeovers_without_replica(),
            signatures_verified: verifier.verified,
            signatures_remembered: verifier.remembered,
            map: sim.map_counts(),
        },
        warmup_converged_ms: first_ms(sim.convergence_samples(Watch::Warmup)),
        rejoin_ms: (cfg.scenario == Scenario::Crash).then(|| summary(sim.rejoin_samples())),
        heal_converge_ms: (cfg.scenario == Scenario::Partition)
            .then(|| summary(sim.convergence_samples(Watch::Heal))),
        heal_unconverged: (cfg.scenario == Scenario::Partition).then_some(heal_unconverged),
        cut_detection_ms: (cfg.scenario == Scenario::Partition)
            .then(|| summary(sim.cut_detection().0)),
        cut_undetected: (cfg.scenario == Scenario::Partition).then(|| sim.cut_detection().1),
        minority_verdict_ms: (cfg.scenario == Scenario::Partition)
            .then(|| summary(sim.minority_verdict().0)),
        minority_verdict_undetected: (cfg.scenario == Scenario::Partition)
            .then(|| sim.minority_verdict().1),
        heal_sessions_settled_ms: (cfg.scenario == Scenario::Partition && cfg.sessions > 0)
            .then(|| summary(sessions_settled)),
        heal_sessions_unsettled: (cfg.scenario == Scenario::Partition && cfg.sessions > 0)
            .then_some(sessions_unsettled),
        settle_converged_ms: first_ms(sim.convergence_samples(Watch::Settle)),
        crashes: c.crashes,
        restarts: c.restarts,
        pauses: c.pauses,
        refutations: c.refutations,
        admitted: c.admitted,
        handshakes_failed: c.handshakes_failed,
        messages: Messages {
            sent: c.sent,
            delivered: c.delivered,
            lost: c.lost,
            cut: c.cut,
            to_crashed: c.to_stopped,
            backlog_dropped: c.backlog_dropped,
        },
        streams: Streams {
            opened: streams.opened,
            refused: streams.refused,
            open_failed: streams.open_failed,
            broken: streams.broken,
            over_cap: streams.over_cap,
            frames: streams.frames,
            connections: streams.connections,
            idle_closed: streams.idle_closed,
        },
        violations_total: c.violations,
        violations: sim.violations().to_vec(),
        replay: cfg.replay.clone(),
    }
}

fn millis(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

/// `mean` scaled by a random factor in 0.8..1.2: deterministic jitter.
fn jitter(rng: &mut SmallRng, mean: Duration) -> Duration {
    mean.mul_f64(rng.random_range(0.8..1.2))
}

fn between(rng: &mut SmallRng, (lo, hi): (Duration, Duration)) -> Duration {
    if hi <= lo {
        return lo;
    }
    lo + (hi - lo).mul_f64(rng.random::<f64>())
}

/// A random node that satisfies `ok`: random tries first, then a scan from a
/// random place, so that a nearly exhausted group still yields one.
fn pick(sim: &Sim, rng: &mut SmallRng, ok: impl Fn(&Sim, usize) -> bool) -> Option<usize> {
    let n = sim.len();
    if n == 0 {
        return None;
    }
    for _ in 0..16 {
        let i = rng.random_range(0..n);
        if ok(sim, i) {
            return Some(i);
        }
    }
    let from = rng.random_range(0..n);
    (0..n).map(|k| (from + k) % n).find(|&i| ok(sim, i))
}

/// A random `size`-node minority and the rest.
fn split(rng: &mut SmallRng, n: usize, size: usize) -> (Vec<usize>, Vec<usize>) {
    let mut all: Vec<usize> = (0..n).collect();
    for k in 0..size.min(n) {
        let j = rng.random_range(k..n);
        all.swap(k, j);
    }
    let majority = all.split_off(size.min(n));
    (all, majority)
}

/// The median of `xs`, if any.
fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[xs.len() / 2])
}
