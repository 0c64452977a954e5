//! The trade-off study of the seed paper, part 1: monitoring overhead
//! against detection time and false alarms, as SWIM's probe interval
//! varies. Each point is two simulator runs of whole nodes: a crash run
//! (a random node crashes every ~3 s) for the detection time, and an idle
//! run (no crashes, no application updates) for what monitoring costs on
//! the wire and how many healthy members are declared dead. Both at the
//! same group size, probe interval and loss.
//!
//! The points are steps of `testnet evaluate` (keys `study-...`), so each
//! keeps its report under `docs/eval/` and its command beside its numbers;
//! `testnet study` runs only them.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::plot::{Plot, Style};

/// Probe intervals swept, ms.
pub const INTERVALS_MS: [u64; 5] = [50, 100, 200, 500, 1000];
/// Loss on every link.
pub const LOSSES: [f64; 2] = [0.0, 0.05];
/// Group sizes.
pub const SIZES: [usize; 2] = [100, 1000];

/// Serf 0.8, LAN profile, 10 agents in network namespaces on this kind of
/// machine (measured, docs/evaluation.md "Against the anchors"): bytes per
/// node per second, seconds to declare a kill.
pub const SERF: (f64, f64) = (330.0, 8.0);
/// Raman & Katz: 300 ms heart-beats, ~1.8 s to detect (no traffic figure).
pub const PAPER_DETECTION_S: f64 = 1.8;

/// One point of the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Group size.
    pub nodes: usize,
    /// SWIM's protocol period, ms.
    pub interval_ms: u64,
    /// Loss on every link, 0 to 1.
    pub loss: f64,
}

impl Point {
    fn tag(&self) -> String {
        format!(
            "n{}-p{}-l{}",
            self.nodes,
            self.interval_ms,
            (self.loss * 100.0).round() as u32
        )
    }

    /// Key of the crash run.
    pub fn detection_key(&self) -> String {
        format!("study-det-{}", self.tag())
    }

    /// Key of the idle run.
    pub fn idle_key(&self) -> String {
        format!("study-idle-{}", self.tag())
    }

    /// Protocol flags: the interval, and a first-probe timeout that fits
    /// inside it (the adaptive timeout takes over once RTTs are known).
    fn tuning(&self) -> String {
        let timeout = (self.interval_ms / 2).min(50);
        format!(
            "--probe-interval {}ms --probe-timeout {timeout}ms --loss {}",
            self.interval_ms, self.loss
        )
    }

    /// The crash run's arguments after `testnet`. Long enough at N=100 for
    /// 100 crashes (a p99 that is not just the maximum of a handful).
    pub fn detection_args(&self, quick: bool) -> String {
        let duration = match (quick, self.nodes) {
            (true, _) => "30s",
            (false, n) if n <= 100 => "300s",
            _ => "60s",
        };
        format!(
            "sim --nodes {} --seed 1 --scenario crash --duration {duration} {} --json",
            self.nodes,
            self.tuning()
        )
    }

    /// The idle run's arguments: warm, no crashes, no updates, measured
    /// after `warmup_s`. A warm-started node holds its members but none
    /// of their coordinates, and its probes ask for one until each member
    /// was probed once, N probe periods (sim-traffic's note in
    /// docs/evaluation.md): the idle runs of N=1000 measured that start-up
    /// and overstated the steady state (1700 B/s at 100 ms against 1380
    /// after the warm-up, until 2026-12-04). The window is shorter at
    /// N=1000 to pay for the warm-up: 60 s, a dozen anti-entropy rounds.
    pub fn idle_args(&self, quick: bool) -> String {
        let duration = match (quick, self.nodes) {
            (true, _) => "20s",
            (false, n) if n <= 100 => "120s",
            _ => "60s",
        };
        format!(
            "sim --nodes {} --seed 1 --scenario loss --duration {duration} --warm-start \
             --warmup {}s --update-every 1h {} --json",
            self.nodes,
            self.warmup_s(),
            self.tuning()
        )
    }

    /// N probe periods and a fifth more (every member probed once, with
    /// the permutation's slack), 10 s at least.
    fn warmup_s(&self) -> u64 {
        (self.nodes as u64 * self.interval_ms * 6 / 5)
            .div_ceil(1000)
            .max(10)
    }
}

/// Every point, in the order they run (small groups first).
pub fn points(quick: bool) -> Vec<Point> {
    if quick {
        return [100, 500]
            .into_iter()
            .map(|interval_ms| Point {
                nodes: 100,
                interval_ms,
                loss: 0.0,
            })
            .collect();
    }
    let mut v = Vec::new();
    for nodes in SIZES {
        for loss in LOSSES {
            for interval_ms in INTERVALS_MS {
                v.push(Point {
                    nodes,
                    interval_ms,
                    loss,
                });
            }
        }
    }
    v
}

/// One point of the testnet's side of the sweep: 16 real `batond`
/// processes in network namespaces, LAN or the emulated WAN, at one probe
/// interval. One `testnet run kill` each: the idle nodes' cost measured
/// over 30 s before the kills, then 10 kills for the detection time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestnetPoint {
    /// The emulated WAN matrix, else the LAN.
    pub wan: bool,
    /// SWIM's protocol period, ms.
    pub interval_ms: u64,
}

/// Nodes of the testnet points.
pub const TESTNET_NODES: usize = 16;
/// Kills of each testnet point.
pub const TESTNET_KILLS: usize = 10;

impl TestnetPoint {
    /// Key of its run.
    pub fn key(&self) -> String {
        format!(
            "study-tn-{}-p{}",
            if self.wan { "wan" } else { "lan" },
            self.interval_ms
        )
    }

    /// Its arguments after `testnet` (no sessions: their media would be
    /// counted in the idle bytes, and detection does not need them).
    pub fn args(&self) -> String {
        format!(
            "run kill --nodes {TESTNET_NODES} --sessions 0 --faults {TESTNET_KILLS} --settle 20s \
             --idle 30s --probe-interval {}ms{}",
            self.interval_ms,
            if self.wan { " --wan" } else { "" }
        )
    }
}

/// The testnet points, LAN then WAN; none in a quick study (it checks the
/// pipeline without root).
pub fn testnet_points(quick: bool) -> Vec<TestnetPoint> {
    if quick {
        return Vec::new();
    }
    [false, true]
        .into_iter()
        .flat_map(|wan| {
            INTERVALS_MS
                .into_iter()
                .map(move |interval_ms| TestnetPoint { wan, interval_ms })
        })
        .collect()
}

/// What a testnet point measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestnetMeasured {
    /// Detection p50 and p99, ms.
    pub detection: (f64, f64),
    /// Kills detected.
    pub samples: u64,
    /// Idle bytes per node per second on the wire.
    pub bytes: Option<f64>,
    /// Idle CPU p50, % of a core.
    pub cpu: Option<f64>,
}

/// Reads a testnet point's report; `None` without its detection.
pub fn testnet_measured(r: &Value) -> Option<TestnetMeasured> {
    let det = &r["detection_ms"];
    Some(TestnetMeasured {
        detection: (det["p50"].as_f64()?, det["p99"].as_f64()?),
        samples: det["samples"].as_u64()?,
        bytes: r["bytes_per_node_per_s"].as_f64(),
        cpu: r["cpu_pct"]["p50"].as_f64(),
    })
}

/// What one point measured; `None` where its run is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Detection p50 and p99, ms, and the number of samples.
    pub detection: Option<(f64, f64, u64)>,
    /// Bytes per node per second on the wire, idle.
    pub bytes: Option<f64>,
    /// Healthy members declared dead: in the crash run, and in the idle run.
    pub false_deaths: Option<(u64, u64)>,
}

/// Reads a point's two reports (`report(key)`, `Value::Null` if missing).
pub fn measured<'a>(p: &Point, report: impl Fn(&str) -> &'a Value) -> Measured {
    let det = report(&p.detection_key());
    let idle = report(&p.idle_key());
    let f = |v: &Value| v.as_f64();
    Measured {
        detection: match (
            f(&det["detection_ms"]["p50"]),
            f(&det["detection_ms"]["p99"]),
            det["detection_ms"]["samples"].as_u64(),
        ) {
            (Some(a), Some(b), Some(n)) => Some((a, b, n)),
            _ => None,
        },
        bytes: f(&idle["bytes_per_node_per_s"]),
        false_deaths: match (
            det["false_positives"].as_u64(),
            idle["false_positives"].as_u64(),
        ) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        },
    }
}

/// The plot: bytes per node per second (idle) against detection p99, one
/// line per group size and loss, the probe interval falling from left to
/// right; Serf's measured point and the paper's detection time for scale.
pub fn plot<'a>(quick: bool, report: impl Fn(&str) -> &'a Value) -> Plot {
    let mut plot = Plot::new(
        "Monitoring cost against detection time (probe interval 1000 -> 50 ms)",
        "bytes per node per second on the wire, idle",
        "detection p99 (s)",
    );
    let all = points(quick);
    for nodes in SIZES {
        for loss in LOSSES {
            let line: Vec<(f64, f64)> = all
                .iter()
                .filter(|p| p.nodes == nodes && p.loss == loss)
                .filter_map(|p| {
                    let m = measured(p, &report);
                    Some((m.bytes?, m.detection?.1 / 1000.0))
                })
                .collect();
            if !line.is_empty() {
                plot = plot.series(
                    &format!("N={nodes}, {:.0}% loss", loss * 100.0),
                    Style::Line,
                    line,
                );
            }
        }
    }
    for wan in [false, true] {
        let line: Vec<(f64, f64)> = testnet_points(quick)
            .iter()
            .filter(|p| p.wan == wan)
            .filter_map(|p| {
                let m = testnet_measured(report(&p.key()))?;
                Some((m.bytes?, m.detection.1 / 1000.0))
            })
            .collect();
        if !line.is_empty() {
            plot = plot.series(
                &format!(
                    "testnet N={TESTNET_NODES}, {} (real processes)",
                    if wan { "WAN" } else { "LAN" }
                ),
                Style::Line,
                line,
            );
        }
    }
    plot.series("Serf 0.8 (N=10, measured)", Style::Points, vec![SERF])
        .reference("paper: ~1.8 s at 300 ms heart-beats", PAPER_DETECTION_S)
}

/// The study's section of docs/evaluation.md: the plot and one row per
/// point with both commands.
pub fn render<'a>(md: &mut String, quick: bool, report: impl Fn(&str) -> &'a Value) {
    let _ = writeln!(
        md,
        "## Trade-off study: monitoring overhead, detection, false alarms\n\n\
         The seed paper sets out to study the trade-off between re-instantiation \
         time, monitoring overhead and backup pre-provisioning. This part sweeps \
         SWIM's probe interval ({} ms) at {} nodes, without loss and with 5% loss \
         on every link, in the simulator (whole nodes, virtual time, seed 1). Each \
         point is two runs: a crash run (a random node crashes every ~3 s and \
         restarts) gives the detection time (crash until every survivor holds it \
         dead) and the healthy members declared dead among the churn; an idle run \
         (warm, no crashes, no application updates) gives what monitoring alone \
         costs per node on the wire (sealed datagrams plus 42 bytes of headers \
         each, stream frames) and the healthy members declared dead, measured \
         after a warm-up of N probe periods and a fifth, once every node has \
         asked each member for its coordinate (before 2026-12-04 the N=1000 \
         points measured that start-up: 1700 B/s at 100 ms against 1380 in the \
         steady state). Regenerate \
         with `sudo ./target/release/testnet study --docs docs` (the N=1000 \
         points take most of the time).\n\n\
         ![monitoring cost against detection](eval/study-monitoring.svg)\n\n\
         | N | loss | probe interval | detection p50 / p99 (crashes) | bytes/s per node, idle | healthy declared dead: crash run / idle run | commands |\n\
         |---|---|---|---|---|---|---|",
        INTERVALS_MS.map(|i| i.to_string()).join(" / "),
        SIZES.map(|n| n.to_string()).join(" and "),
    );
    let mut missing = 0;
    for p in points(quick) {
        let m = measured(&p, &report);
        if m == Measured::default() {
            missing += 1;
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {:.0}% | {} ms | {} | {} | {} | `testnet {}`; `testnet {}` |",
            p.nodes,
            p.loss * 100.0,
            p.interval_ms,
            m.detection
                .map(|(a, b, n)| format!("{a:.0} / **{b:.0}** ms (n={n})"))
                .unwrap_or_else(|| "-".into()),
            m.bytes
                .map(|b| format!("{b:.0} B/s"))
                .unwrap_or_else(|| "-".into()),
            m.false_deaths
                .map(|(a, b)| format!("{a} / {b}"))
                .unwrap_or_else(|| "-".into()),
            p.detection_args(quick),
            p.idle_args(quick),
        );
    }
    if missing > 0 {
        let _ = writeln!(
            md,
            "\n{missing} points of the sweep have no report yet (not run): \
             `testnet study` runs them."
        );
    }
    render_testnet(md, quick, &report);
    let reading = reading(quick, &report);
    if !reading.is_empty() {
        let _ = writeln!(md, "\n**Reading the sweep.** {}", reading.join(" "));
    }
    let _ = writeln!(
        md,
        "\nFor scale: Serf 0.8 (LAN profile, 10 agents, measured on this kind of \
         machine) sends ~{:.0} B/s per node and declares a kill after ~{:.0} s; the \
         paper reports ~{PAPER_DETECTION_S} s with 300 ms heart-beats.\n",
        SERF.0, SERF.1
    );
}

/// The testnet's side of the sweep: one row per real-process point.
fn render_testnet<'a>(md: &mut String, quick: bool, report: impl Fn(&str) -> &'a Value) {
    let points = testnet_points(quick);
    if points.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "
The same sweep on real processes: {TESTNET_NODES} `batond` in network \
         namespaces, on the LAN and on the emulated WAN, no loss, no sessions. \
         Each point is one `testnet run kill`: the idle nodes' bytes on the wire \
         (Ethernet frames, everything included: datagrams, libp2p, mDNS) and CPU \
         over 30 s, then {TESTNET_KILLS} kills (detection: kill until every \
         survivor holds the node dead; at n = {TESTNET_KILLS} the p99 is the \
         largest). Loss is the simulator's part (false deaths need long runs); the \
         loss steps above measure it on real processes at 100 ms.\n\n\
         | network | probe interval | detection p50 / p99 (kills) | bytes/s per node, idle | CPU p50, idle | command |\n\
         |---|---|---|---|---|---|"
    );
    let mut missing = 0;
    for p in points {
        let Some(m) = testnet_measured(report(&p.key())) else {
            missing += 1;
            continue;
        };
        let ((p50, p99), n) = (m.detection, m.samples);
        let _ = writeln!(
            md,
            "| {} | {} ms | {p50:.0} / **{p99:.0}** ms (n={n}) | {} | {} | `sudo testnet {}` |",
            if p.wan { "WAN" } else { "LAN" },
            p.interval_ms,
            m.bytes
                .map_or_else(|| "-".into(), |b| format!("{b:.0} B/s")),
            m.cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}%")),
            p.args(),
        );
    }
    if missing > 0 {
        let _ = writeln!(
            md,
            "\n{missing} testnet points have no report yet (not run): `sudo testnet \
             study` runs them."
        );
    }
    // The simulator against the real processes, interval by interval: the
    // LAN's idle bytes beside the simulator's N=100 idle run without loss.
    let pairs: Vec<String> = testnet_points(quick)
        .iter()
        .filter(|p| !p.wan)
        .filter_map(|p| {
            let real = testnet_measured(report(&p.key()))?.bytes;
            let sim = measured(
                &Point {
                    nodes: 100,
                    interval_ms: p.interval_ms,
                    loss: 0.0,
                },
                &report,
            )
            .bytes?;
            Some(format!("{} ms: {:.0} / {sim:.0}", p.interval_ms, real?))
        })
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(
            md,
            "\nIdle bytes per node, testnet LAN (N={TESTNET_NODES}) / simulator \
             (N=100), B/s: {}. A node's monitoring cost does not grow with N, and \
             the simulator's model of the wire matches the real one; a 30 s window \
             can also hold one of the group's discovery walks (about 450 KB \
             overlay-wide at N=16, see the traffic notes), which a point then shows \
             as extra bytes.",
            pairs.join("; ")
        );
    }
}

/// What the sweep says, from its numbers: the point that spends what Serf
/// spends, the cheapest point that detects as fast as the paper, and what
/// loss costs. Empty when the points it needs have no reports.
fn reading<'a>(quick: bool, report: impl Fn(&str) -> &'a Value) -> Vec<String> {
    let all: Vec<(Point, Measured)> = points(quick)
        .into_iter()
        .map(|p| (p, measured(&p, &report)))
        .collect();
    let mut out = Vec::new();
    let clean = |n: usize| {
        all.iter()
            .filter(move |(p, _)| p.nodes == n && p.loss == 0.0)
            .filter_map(|(p, m)| Some((p, m.bytes?, m.detection?)))
    };
    if let Some((p, bytes, (_, p99, _))) =
        clean(100).min_by(|a, b| (a.1 - SERF.0).abs().total_cmp(&(b.1 - SERF.0).abs()))
    {
        out.push(format!(
            "At about Serf's traffic ({bytes:.0} B/s per node, probe interval {} ms, N=100), \
             detection p99 is {:.1} s, against Serf's ~{:.0} s.",
            p.interval_ms,
            p99 / 1000.0,
            SERF.1
        ));
    }
    if let Some((p, bytes, (_, p99, _))) = clean(100)
        .filter(|(_, _, (_, p99, _))| *p99 <= PAPER_DETECTION_S * 1000.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
    {
        out.push(format!(
            "The cheapest point that detects within the paper's ~{PAPER_DETECTION_S} s \
             (p99 {:.2} s) spends {bytes:.0} B/s per node (interval {} ms, N=100).",
            p99 / 1000.0,
            p.interval_ms
        ));
    }
    let mut per_size = Vec::new();
    for n in SIZES {
        let ratios: Vec<f64> = INTERVALS_MS
            .iter()
            .filter_map(|&i| {
                let at = |loss: f64| {
                    all.iter()
                        .find(|(p, _)| p.nodes == n && p.interval_ms == i && p.loss == loss)
                        .and_then(|(_, m)| m.bytes)
                };
                Some(at(0.05)? / at(0.0)?)
            })
            .collect();
        if let (Some(lo), Some(hi)) = (
            ratios.iter().copied().reduce(f64::min),
            ratios.iter().copied().reduce(f64::max),
        ) {
            per_size.push(format!("{lo:.1}-{hi:.1}x at N={n}"));
        }
    }
    if !per_size.is_empty() {
        out.push(format!(
            "5% loss on every link costs {} the bytes of no loss (failed direct \
             probes start indirect ones through k members; the rare suspicions of \
             healthy members spread to all and are refuted).",
            per_size.join(" and ")
        ));
    }
    out
}

/// Writes the plot next to the reports.
pub fn write_plot<'a>(
    eval: &Path,
    quick: bool,
    report: impl Fn(&str) -> &'a Value,
) -> std::io::Result<()> {
    plot(quick, report).write(&eval.join("study-monitoring.svg"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_testnet_points_run_kill_with_an_idle_window_and_show_in_the_section() {
        assert!(
            testnet_points(true).is_empty(),
            "a quick study needs no root"
        );
        let all = testnet_points(false);
        assert_eq!(all.len(), 2 * INTERVALS_MS.len());
        let keys: std::collections::BTreeSet<String> = all.iter().map(TestnetPoint::key).collect();
        assert_eq!(keys.len(), all.len());
        let wan = TestnetPoint {
            wan: true,
            interval_ms: 200,
        };
        assert_eq!(wan.key(), "study-tn-wan-p200");
        assert_eq!(
            wan.args(),
            "run kill --nodes 16 --sessions 0 --faults 10 --settle 20s --idle 30s \
             --probe-interval 200ms --wan"
        );
        let report = serde_json::json!({
            "detection_ms": {"p50": 650.0, "p99": 900.0, "samples": 10},
            "bytes_per_node_per_s": 691.0,
            "cpu_pct": {"p50": 0.4},
        });
        let null = Value::Null;
        let mut md = String::new();
        render_testnet(&mut md, false, |k| {
            if k == "study-tn-lan-p200" {
                &report
            } else {
                &null
            }
        });
        assert!(
            md.contains("| LAN | 200 ms | 650 / **900** ms (n=10) | 691 B/s | 0.40% |"),
            "{md}"
        );
        assert!(md.contains("9 testnet points have no report yet"), "{md}");
    }

    #[test]
    fn every_point_has_two_distinct_runs_and_the_interval_in_both() {
        let all = points(false);
        assert_eq!(all.len(), INTERVALS_MS.len() * LOSSES.len() * SIZES.len());
        let mut keys = std::collections::BTreeSet::new();
        for p in &all {
            assert!(keys.insert(p.detection_key()));
            assert!(keys.insert(p.idle_key()));
            for args in [p.detection_args(false), p.idle_args(false)] {
                assert!(
                    args.contains(&format!("--probe-interval {}ms", p.interval_ms)),
                    "{args}"
                );
                assert!(args.contains(&format!("--nodes {}", p.nodes)), "{args}");
            }
        }
        // The first-probe timeout fits in the interval.
        let p = Point {
            nodes: 100,
            interval_ms: 50,
            loss: 0.05,
        };
        assert!(p.detection_args(false).contains("--probe-timeout 25ms"));
        assert!(p.idle_args(false).contains("--loss 0.05"));
        // The idle window starts once every member was probed once.
        assert!(p.idle_args(false).contains("--warmup 10s"));
        let big = Point {
            nodes: 1000,
            interval_ms: 500,
            loss: 0.0,
        };
        assert!(
            big.idle_args(false).contains("--warmup 600s"),
            "{}",
            big.idle_args(false)
        );
    }

    #[test]
    fn the_reading_names_serfs_point_the_papers_and_what_loss_costs() {
        let mut reports = BTreeMap::new();
        for (interval_ms, bytes, p99) in [
            (100, 1400.0, 950.0),
            (200, 700.0, 1600.0),
            (500, 320.0, 5000.0),
        ] {
            for (loss, factor) in [(0.0, 1.0), (0.05, 2.0)] {
                let p = Point {
                    nodes: 100,
                    interval_ms,
                    loss,
                };
                reports.insert(
                    p.detection_key(),
                    serde_json::json!({"detection_ms": {"p50": p99 / 2.0, "p99": p99, "samples": 99}, "false_positives": 0}),
                );
                reports.insert(
                    p.idle_key(),
                    serde_json::json!({"bytes_per_node_per_s": bytes * factor, "false_positives": 0}),
                );
            }
        }
        let null = Value::Null;
        let get = |k: &str| reports.get(k).unwrap_or(&null);
        let said = reading(false, get).join(" ");
        assert!(
            said.contains("Serf's traffic (320 B/s per node, probe interval 500 ms"),
            "{said}"
        );
        assert!(said.contains("p99 is 5.0 s"), "{said}");
        assert!(
            said.contains("(p99 1.60 s) spends 700 B/s per node (interval 200 ms"),
            "{said}"
        );
        assert!(said.contains("costs 2.0-2.0x"), "{said}");
        assert!(reading(false, |_: &str| &null).is_empty());
    }

    #[test]
    fn a_point_reads_its_two_reports_and_renders_what_is_there() {
        let p = points(true)[0];
        let mut reports = BTreeMap::new();
        reports.insert(
            p.detection_key(),
            serde_json::json!({
                "detection_ms": {"p50": 400.0, "p99": 700.5, "samples": 20},
                "false_positives": 1,
            }),
        );
        reports.insert(
            p.idle_key(),
            serde_json::json!({"bytes_per_node_per_s": 1234.4, "false_positives": 0}),
        );
        let null = Value::Null;
        let get = |k: &str| reports.get(k).unwrap_or(&null);
        let m = measured(&p, get);
        assert_eq!(m.detection, Some((400.0, 700.5, 20)));
        assert_eq!(m.bytes, Some(1234.4));
        assert_eq!(m.false_deaths, Some((1, 0)));
        let mut md = String::new();
        render(&mut md, true, get);
        assert!(
            md.contains("| 100 | 0% | 100 ms | 400 / **700** ms (n=20) | 1234 B/s | 1 / 0 |"),
            "{md}"
        );
        // The other quick point has no report: counted, not rendered.
        assert!(
            md.contains("1 points of the sweep have no report yet"),
            "{md}"
        );
        let svg = plot(true, get).to_svg();
        assert!(
            svg.contains("N=100, 0% loss") && svg.contains("Serf 0.8"),
            "{svg}"
        );
    }
}
