//! What a scenario run measured: a JSON object for scripts (`--json`), a
//! table for people.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::invariants::Violation;
use super::stats::Summary;

/// The result of one scenario run. Times are in milliseconds of virtual time
/// unless the key says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `crash`, `loss`, `partition` or `pause`.
    pub scenario: String,
    /// Number of nodes.
    pub nodes: usize,
    /// The seed that replays the run.
    pub seed: u64,
    /// Protocol profile, `lan` or `wan`.
    pub profile: String,
    /// Link latency model.
    pub latency: String,
    /// Whether every node started knowing the whole group (`--warm-start`)
    /// rather than joining one after the other.
    pub warm_start: bool,
    /// Virtual time simulated, warm-up and settle phases included.
    pub virtual_s: f64,
    /// When the measurement window started: the views had converged and the
    /// join announcements had drained.
    pub warmup_s: f64,
    /// Whether the join announcements had drained when the measurement
    /// started (if not, traffic figures include part of the bootstrap).
    pub warmup_drained: bool,
    /// Length of the measurement window (traffic is counted over it).
    pub measured_s: f64,
    /// Wall-clock time the run took.
    pub wall_s: f64,
    /// Virtual seconds per wall-clock second, over the whole run.
    pub speedup: f64,
    /// Wall-clock time of each phase.
    pub wall_phases_s: WallPhases,
    /// Virtual seconds per wall-clock second in the measurement window.
    pub measure_speedup: f64,
    /// Crash until every live node marks the node dead.
    pub detection_ms: Summary,
    /// A metadata update until 99.9% (rounded up) of the other live nodes have it.
    pub dissemination_ms: Summary,
    /// Updates that did not get there within the timeout.
    pub dissemination_incomplete: usize,
    /// Healthy nodes declared dead.
    pub false_positives: u64,
    /// Healthy nodes suspected (refuted in time; for information).
    pub suspicions_of_healthy: u64,
    /// Bytes sent per node per second over the measurement window,
    /// datagram headers included (see `traffic.counted`).
    pub bytes_per_node_per_s: f64,
    /// Datagrams and stream frames sent per node per second.
    pub msgs_per_node_per_s: f64,
    /// Bytes per second sent by the busiest node.
    pub max_bytes_per_node_per_s: f64,
    /// Median over ordered pairs of Vivaldi's relative RTT error at the end
    /// of the run (estimate from the coordinates a node holds against the
    /// link's mean RTT), as the testnet's scale report measures it.
    pub vivaldi_median_rel_error: Option<f64>,
    /// Traffic by the node's classes.
    pub traffic: TrafficReport,
    /// Sessions opened before the measurement window (`--sessions`).
    pub sessions: usize,
    /// Sessions hosted by no live node for longer than the bound while a
    /// backup lived (invariant `not_lost`).
    pub sessions_lost: usize,
    /// Sessions whose primary and every backup were in one crash burst,
    /// summed over the bursts: nobody was left to take them over (not
    /// counted in `sessions_lost`, whose clock waits while no backup lives).
    pub sessions_all_replicas_crashed: u64,
    /// Nodes each crash takes down at once (`--crash-together`).
    pub crash_together: usize,
    /// Backups per session (`--backups`, the policy's `backups`).
    pub backups: usize,
    /// Sessions hosted by two live nodes for longer than the bound after
    /// they could hear each other (invariant `not_doubly_owned`).
    pub double_owned: usize,
    /// A primary's crash until every live node's map names the backup that
    /// claimed the session; sessions with no backup running to claim them
    /// are counted in `session_details.takeovers_without_replica` instead.
    pub takeover_ms: Summary,
    /// A primary's crash until a backup has written its claim (at the
    /// claimer): `takeover_ms` less the claim's spread to every node.
    pub claim_ms: Summary,
    /// The claim until one node's map names the claimer, over every node
    /// that waited and every takeover: how the claim spreads.
    pub claim_spread_ms: Summary,
    /// How the sessions were set up, and what became of takeovers.
    pub session_details: SessionReport,
    /// First node's start until every node sees every other alive.
    pub warmup_converged_ms: Option<f64>,
    /// Restart until the restarted node is alive in every view (crash scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejoin_ms: Option<Summary>,
    /// Partition heal until every node sees every node alive (partition scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heal_converge_ms: Option<Summary>,
    /// Heals after which the views had not converged when the next cut came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heal_unconverged: Option<usize>,
    /// Cut until every majority node declared every minority node dead
    /// (symmetric partitions; what a takeover across the cut waits for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_detection_ms: Option<Summary>,
    /// Cuts healed before the majority had declared the whole minority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_undetected: Option<usize>,
    /// The other side: cut until every minority node declared every
    /// majority node dead (where the minority's own claims start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minority_verdict_ms: Option<Summary>,
    /// Cuts healed before the minority had declared the whole majority (a
    /// minority that hears nothing fences itself and declares nobody).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minority_verdict_undetected: Option<usize>,
    /// Partition heal until the sessions settled: every running node's map
    /// the same and every session hosted by exactly one node (checked every
    /// 100 ms; partition scenario with sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heal_sessions_settled_ms: Option<Summary>,
    /// Heals after which the sessions had not settled when the next cut
    /// came or the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heal_sessions_unsettled: Option<usize>,
    /// Faults stopping until every live node sees every other alive.
    pub settle_converged_ms: Option<f64>,
    /// Crashes injected.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Refutations by nodes defending themselves.
    pub refutations: u64,
    /// Peers admitted by a handshake (each side counts).
    pub admitted: u64,
    /// Handshakes that failed (timeouts, broken streams).
    pub handshakes_failed: u64,
    /// Datagram fates over the whole run.
    pub messages: Messages,
    /// Stream and connection fates over the whole run.
    pub streams: Streams,
    /// Violations found (only the first 100 are listed).
    pub violations_total: u64,
    /// The broken invariants, if any.
    pub violations: Vec<Violation>,
    /// The command that replays this run.
    pub replay: String,
}

/// Wall-clock seconds spent in each phase of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WallPhases {
    /// Starting the nodes (a warm start's keys, tables and maps included).
    pub bootstrap: f64,
    /// Opening and replicating the sessions.
    pub sessions: f64,
    /// Bootstrap, warm-up and sessions.
    pub warmup: f64,
    /// The measurement window.
    pub measure: f64,
    /// The final fault-free phase.
    pub settle: f64,
}

/// Traffic by the classes of the node's own counters, per node per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficReport {
    /// What the byte counts include.
    pub counted: String,
    /// Ethernet+IPv4+UDP header bytes (42 per datagram).
    pub header_bytes_per_node_per_s: f64,
    /// Payload bytes by class (`probe`, `gossip`, `deltas` on datagrams;
    /// `admission`, `swim_bulk`, `map_sync` on streams).
    pub bytes_per_node_per_s_by_class: BTreeMap<&'static str, f64>,
    /// Datagrams or frames by class.
    pub packets_per_node_per_s_by_class: BTreeMap<&'static str, f64>,
    /// Acks that carried the sender's Vivaldi coordinate because the
    /// prober asked (once every `coord_interval`), per node per second.
    pub coords_asked_per_node_per_s: f64,
    /// Acks that carried it unasked, because it moved since that prober
    /// last got it (`swim::COORD_RESEND_FRACTION`), per node per second.
    pub coords_unasked_per_node_per_s: f64,
}

/// How the sessions were set up, and what became of takeovers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionReport {
    /// How the sessions reached every map before the window.
    pub replication: String,
    /// First open until every map agreed and every session had one host.
    pub replicated_ms: Option<f64>,
    /// Opens asked of nodes.
    pub opened: u64,
    /// Opens a node refused.
    pub open_failed: u64,
    /// Client reports (consent) handed to the nodes streaming to them.
    pub client_reports: u64,
    /// Sessions closed during the run (a close, or consent that ran out).
    pub closed: u64,
    /// Takeovers that had not reached every live node at the end.
    pub takeovers_unfinished: usize,
    /// Takeovers cut short by a crash of the backup that claimed.
    pub takeovers_superseded: usize,
    /// Crashed primaries' sessions no running backup could take over (every
    /// replica down at once): they resume when a replica restarts, and are
    /// not timed in `takeover_ms`. Decided at the crash: a backup down then
    /// that restarts and claims is not timed either (it comes back within
    /// `restart_after`), and a running backup that cannot claim before the
    /// primary restarts leaves the takeover open until the session moves.
    pub takeovers_without_replica: usize,
    /// Record signatures verified for real.
    pub signatures_verified: u64,
    /// Copies accepted from the simulator's memory of verified records.
    pub signatures_remembered: u64,
    /// What the nodes' maps did to stay in step, over the whole run and
    /// every life of every node.
    pub map: MapCounts,
}

/// Map anti-entropy and delta counts summed over every node's lives (the
/// node's own `Stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MapCounts {
    /// Map sync exchanges completed.
    pub syncs: u64,
    /// Syncs started because a down member's sessions still named it
    /// primary a while after it went down.
    pub claim_pulls: u64,
    /// Syncs started because a delta cited history the node lacked.
    pub unlinked_pulls: u64,
    /// Copies of deltas dropped unread (news already taken).
    pub duplicate_deltas: u64,
}

impl MapCounts {
    /// One node's counters.
    pub fn of(stats: &baton_protocol::node::Stats) -> MapCounts {
        MapCounts {
            syncs: stats.syncs,
            claim_pulls: stats.claim_pulls,
            unlinked_pulls: stats.unlinked_pulls,
            duplicate_deltas: stats.duplicate_deltas,
        }
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: MapCounts) {
        self.syncs += other.syncs;
        self.claim_pulls += other.claim_pulls;
        self.unlinked_pulls += other.unlinked_pulls;
        self.duplicate_deltas += other.duplicate_deltas;
    }
}

/// What happened to the streams and connections of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Streams {
    /// Opened by nodes.
    pub opened: u64,
    /// Refused by their acceptor.
    pub refused: u64,
    /// Could not be opened (peer down or cut off).
    pub open_failed: u64,
    /// Broken by a cut, a crash or a closed connection.
    pub broken: u64,
    /// Broken by a frame over its reader's cap.
    pub over_cap: u64,
    /// Frames delivered.
    pub frames: u64,
    /// Connections made.
    pub connections: u64,
    /// Connections closed for being idle.
    pub idle_closed: u64,
}

/// What happened to the datagrams of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Messages {
    /// Sent.
    pub sent: u64,
    /// Handed to a running node.
    pub delivered: u64,
    /// Lost at random.
    pub lost: u64,
    /// Dropped by a cut.
    pub cut: u64,
    /// Arrived at a crashed node.
    pub to_crashed: u64,
    /// Dropped by a paused node's full backlog.
    pub backlog_dropped: u64,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations_total == 0
    }

    /// The JSON object of `--json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report without the wall-clock fields, which are the only ones
    /// that differ between two runs with the same seed.
    pub fn deterministic_part(&self) -> Report {
        Report {
            wall_s: 0.0,
            speedup: 0.0,
            wall_phases_s: WallPhases::default(),
            measure_speedup: 0.0,
            ..self.clone()
        }
    }
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

fn summary(s: &Summary) -> String {
    if s.samples == 0 {
        return "no samples".to_owned();
    }
    format!(
        "p50 {}  p99 {}  max {}  ({} samples)",
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.samples
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<24} {v}");
        writeln!(
            f,
            "testnet sim: {} scenario, {} nodes, seed {}",
            self.scenario, self.nodes, self.seed
        )?;
        row(f, "profile", format!("{} ({})", self.profile, self.latency))?;
        row(
            f,
            "virtual time",
            format!(
                "{:.1} s: warm-up {:.1} s{}, measured {:.1} s, settle",
                self.virtual_s,
                self.warmup_s,
                if self.warmup_drained {
                    ""
                } else {
                    " (join wave NOT drained)"
                },
                self.measured_s
            ),
        )?;
        let w = &self.wall_phases_s;
        row(
            f,
            "wall time",
            format!(
                "{:.2} s, {:.1}x virtual/wall (warm-up {:.2} s of which bootstrap {:.2} s and \
                 sessions {:.2} s, measured window {:.2} s = {:.1}x, settle {:.2} s)",
                self.wall_s,
                self.speedup,
                w.warmup,
                w.bootstrap,
                w.sessions,
                w.measure,
                self.measure_speedup,
                w.settle
            ),
        )?;
        let bootstrap = if self.warm_start {
            "warm start"
        } else {
            "joins"
        };
        row(
            f,
            "warm-up converged",
            format!("{} ({bootstrap})", ms(self.warmup_converged_ms)),
        )?;
        row(f, "detection", summary(&self.detection_ms))?;
        row(f, "false positives", self.false_positives.to_string())?;
        row(
            f,
            "suspicions of healthy",
            self.suspicions_of_healthy.to_string(),
        )?;
        let incomplete = if self.dissemination_incomplete > 0 {
            format!(", {} incomplete", self.dissemination_incomplete)
        } else {
            String::new()
        };
        row(
            f,
            "dissemination (99.9%)",
            format!("{}{incomplete}", summary(&self.dissemination_ms)),
        )?;
        if let Some(rejoin) = &self.rejoin_ms {
            row(f, "rejoin after restart", summary(rejoin))?;
        }
        if let Some(heal) = &self.heal_converge_ms {
            let unconverged = self.heal_unconverged.unwrap_or(0);
            row(
                f,
                "convergence after heal",
                format!("{} ({unconverged} unconverged at next cut)", summary(heal)),
            )?;
        }
        if let Some(cut) = &self.cut_detection_ms {
            let undetected = self.cut_undetected.unwrap_or(0);
            row(
                f,
                "whole minority dead at every majority node",
                format!("{} ({undetected} cuts healed before)", summary(cut)),
            )?;
        }
        if let Some(verdict) = &self.minority_verdict_ms {
            let undetected = self.minority_verdict_undetected.unwrap_or(0);
            row(
                f,
                "whole majority dead at every minority node",
                format!("{} ({undetected} cuts healed before)", summary(verdict)),
            )?;
        }
        if let Some(settled) = &self.heal_sessions_settled_ms {
            let unsettled = self.heal_sessions_unsettled.unwrap_or(0);
            row(
                f,
                "sessions settled after heal",
                format!(
                    "{} ({unsettled} unsettled at the next cut or the end)",
                    summary(settled)
                ),
            )?;
        }
        row(f, "settle converged", ms(self.settle_converged_ms))?;
        row(
            f,
            "traffic per node",
            format!(
                "{:.0} B/s, {:.1} msgs/s (busiest node {:.0} B/s)",
                self.bytes_per_node_per_s, self.msgs_per_node_per_s, self.max_bytes_per_node_per_s
            ),
        )?;
        let t = &self.traffic;
        let mut classes: Vec<String> = t
            .bytes_per_node_per_s_by_class
            .iter()
            .filter(|(_, b)| **b > 0.0)
            .map(|(k, b)| format!("{k} {b:.0}"))
            .collect();
        classes.push(format!("headers {:.0}", t.header_bytes_per_node_per_s));
        row(f, "  by class (B/s)", classes.join(", "))?;
        row(
            f,
            "  coordinates sent (/s)",
            format!(
                "{:.2} asked, {:.2} unasked",
                t.coords_asked_per_node_per_s, t.coords_unasked_per_node_per_s
            ),
        )?;
        if let Some(e) = self.vivaldi_median_rel_error {
            row(
                f,
                "Vivaldi error (median, end)",
                format!("{:.1}%", e * 100.0),
            )?;
        }
        if self.sessions > 0 {
            let d = &self.session_details;
            row(
                f,
                "sessions",
                format!(
                    "{} opened ({} refused), replicated by {} in {}; {} client reports, {} closed",
                    d.opened,
                    d.open_failed,
                    d.replication,
                    ms(d.replicated_ms),
                    d.client_reports,
                    d.closed
                ),
            )?;
            row(
                f,
                "  lost / doubly owned",
                format!("{} / {}", self.sessions_lost, self.double_owned),
            )?;
            row(
                f,
                "  every replica crashed",
                format!(
                    "{} (bursts of {} crashes, {} backups per session)",
                    self.sessions_all_replicas_crashed, self.crash_together, self.backups
                ),
            )?;
            row(
                f,
                "  map (whole run)",
                format!(
                    "{} syncs ({} claim pulls, {} unlinked pulls), {} duplicate deltas dropped",
                    d.map.syncs, d.map.claim_pulls, d.map.unlinked_pulls, d.map.duplicate_deltas
                ),
            )?;
            row(f, "  claim (at the claimer)", summary(&self.claim_ms))?;
            row(
                f,
                "  claim spread (per node)",
                summary(&self.claim_spread_ms),
            )?;
            row(
                f,
                "  takeover",
                format!(
                    "{} ({} unfinished, {} superseded, {} without a running backup)",
                    summary(&self.takeover_ms),
                    d.takeovers_unfinished,
                    d.takeovers_superseded,
                    d.takeovers_without_replica
                ),
            )?;
        }
        row(
            f,
            "faults",
            format!(
                "{} crashes, {} restarts, {} pauses, {} refutations",
                self.crashes, self.restarts, self.pauses, self.refutations
            ),
        )?;
        let m = &self.messages;
        row(
            f,
            "datagrams",
            format!(
                "{} sent, {} delivered, {} lost, {} cut, {} to crashed, {} backlog-dropped",
                m.sent, m.delivered, m.lost, m.cut, m.to_crashed, m.backlog_dropped
            ),
        )?;
        let s = &self.streams;
        row(
            f,
            "streams",
            format!(
                "{} opened, {} refused, {} failed to open, {} broken ({} over cap), {} \
                 connections ({} closed idle); {} admissions, {} failed handshakes",
                s.opened,
                s.refused,
                s.open_failed,
                s.broken,
                s.over_cap,
                s.connections,
                s.idle_closed,
                self.admitted,
                self.handshakes_failed
            ),
        )?;
        if self.passed() {
            row(f, "invariants", "all held".to_owned())?;
        } else {
            row(
                f,
                "invariants",
                format!("{} VIOLATION(S)", self.violations_total),
            )?;
            for v in &self.violations {
                writeln!(
                    f,
                    "  VIOLATION {} at {:.1} ms: {}",
                    v.invariant, v.at_ms, v.details
                )?;
                writeln!(f, "    source: {}", v.source)?;
            }
            if self.violations_total > self.violations.len() as u64 {
                writeln!(
                    f,
                    "  ... and {} more",
                    self.violations_total - self.violations.len() as u64
                )?;
            }
        }
        writeln!(f, "  replay: {}", self.replay)
    }
}
