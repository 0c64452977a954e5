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
    /// Bytes sent per node per second over the measurement window.
    pub bytes_per_node_per_s: f64,
    /// Messages sent per node per second.
    pub msgs_per_node_per_s: f64,
    /// Bytes per second sent by the busiest node.
    pub max_bytes_per_node_per_s: f64,
    /// `bytes_per_node_per_s` by message kind.
    pub bytes_per_node_per_s_by_kind: BTreeMap<&'static str, f64>,
    /// `msgs_per_node_per_s` by message kind.
    pub msgs_per_node_per_s_by_kind: BTreeMap<&'static str, f64>,
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
    /// Message fates over the whole run.
    pub messages: Messages,
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
    /// Bootstrap and warm-up.
    pub warmup: f64,
    /// The measurement window.
    pub measure: f64,
    /// The final fault-free phase.
    pub settle: f64,
}

/// What happened to the messages of a run.
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
                "{:.2} s, {:.1}x virtual/wall (warm-up {:.2} s, measured window {:.2} s = {:.1}x, \
                 settle {:.2} s)",
                self.wall_s, self.speedup, w.warmup, w.measure, self.measure_speedup, w.settle
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
        row(f, "settle converged", ms(self.settle_converged_ms))?;
        row(
            f,
            "traffic per node",
            format!(
                "{:.0} B/s, {:.1} msgs/s (busiest node {:.0} B/s)",
                self.bytes_per_node_per_s, self.msgs_per_node_per_s, self.max_bytes_per_node_per_s
            ),
        )?;
        let kinds: Vec<String> = self
            .bytes_per_node_per_s_by_kind
            .iter()
            .filter(|(_, b)| **b > 0.0)
            .map(|(k, b)| format!("{k} {b:.0}"))
            .collect();
        row(f, "  by kind (B/s)", kinds.join(", "))?;
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
            "messages",
            format!(
                "{} sent, {} delivered, {} lost, {} cut, {} to crashed, {} backlog-dropped",
                m.sent, m.delivered, m.lost, m.cut, m.to_crashed, m.backlog_dropped
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
