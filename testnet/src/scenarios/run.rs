//! The scenarios.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::harness::{Harness, Options, SessionService, Standby, Traffic, sleep, traffic_over};
use super::report::{Report, Target, fmt_num};
use crate::plot::{Plot, Style, cdf};
use crate::sim::stats::Summary;
use crate::targets::{self, ByNet};
use crate::testbed::{Program, Testbed, TestbedConfig, TestbedError, unix_ms};

/// The scenarios `testnet run` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Kill the primary of a session with SIGKILL, restart it, repeat.
    Kill,
    /// Cut a minority away, heal, repeat.
    Partition,
    /// 5% random loss on every link for a long run.
    Loss,
    /// One node SIGSTOPped in bursts.
    Pause,
    /// Rolling restarts of every node.
    Churn,
    /// Idle overlays of 8, 16, 32 and 64 nodes.
    Scale,
    /// Serf and Baton side by side on the same testnet: idle traffic and
    /// kill detection.
    Compare,
    /// A host that is no member floods every node's datagram socket with
    /// garbage, forged and oversized datagrams.
    Spray,
    /// The path from a session's primary to its client degrades (loss and
    /// delay on that pair only); the session moves to a better node.
    Degrade,
    /// One node cut one way (it cannot hear, then another that cannot
    /// send): it must fence itself, and no client hear two senders.
    Cut,
    /// Every node of one region killed at once (or cut off); sessions
    /// with a backup elsewhere must survive.
    Outage,
}

impl Scenario {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Kill => "kill",
            Scenario::Partition => "partition",
            Scenario::Loss => "loss",
            Scenario::Pause => "pause",
            Scenario::Churn => "churn",
            Scenario::Scale => "scale",
            Scenario::Compare => "compare",
            Scenario::Spray => "spray",
            Scenario::Degrade => "degrade",
            Scenario::Cut => "cut",
            Scenario::Outage => "outage",
        }
    }
}

/// Runs `scenario` and writes its report into `opts.out`.
pub fn run(scenario: Scenario, opts: &Options) -> Result<Report, TestbedError> {
    let started = Instant::now();
    let mut report = match scenario {
        Scenario::Kill => kill(opts)?,
        Scenario::Partition => partition(opts)?,
        Scenario::Loss => loss(opts)?,
        Scenario::Pause => pause(opts)?,
        Scenario::Churn => churn(opts)?,
        Scenario::Scale => scale(opts)?,
        Scenario::Compare => compare(opts)?,
        Scenario::Spray => spray(opts)?,
        Scenario::Degrade => super::degrade::degrade(opts)?,
        Scenario::Cut => super::cut::cut(opts)?,
        Scenario::Outage => super::outage::outage(opts)?,
    };
    report.duration_s = started.elapsed().as_secs_f64().round();
    report.write(&opts.out)?;
    Ok(report)
}

pub(super) fn new_report(scenario: Scenario, opts: &Options, loss: f64) -> Report {
    let mut r = Report::new(
        scenario.name(),
        opts.nodes,
        opts.wan.as_ref().map(|(_, l)| l.clone()),
        loss,
        opts.seed,
    );
    r.sessions = opts.sessions;
    r
}

fn is_wan(opts: &Options) -> bool {
    opts.wan.is_some()
}

/// Brings the testnet up, opens the sessions, lets coordinates settle and
/// measures Vivaldi's error (on a WAN).
pub(super) fn prepare(opts: &Options, report: &mut Report) -> Result<Harness, TestbedError> {
    prepare_with(opts, report, Vec::new())
}

/// [`prepare`], with more `batond` flags for every node.
pub(super) fn prepare_with(
    opts: &Options,
    report: &mut Report,
    flags: Vec<String>,
) -> Result<Harness, TestbedError> {
    let mut h = Harness::up_with(opts, opts.nodes, flags)?;
    h.open_sessions(opts.sessions)?;
    eprintln!("settling for {:?} ...", opts.settle);
    sleep(opts.settle)?;
    if is_wan(opts) {
        let errors = h.vivaldi_errors();
        let median = Summary::of(&errors).p50;
        report.vivaldi_median_rel_error = median.map(|m| m / 100.0);
        report.targets.push(Target::at_most(
            "Vivaldi median relative RTT error",
            median,
            targets::VIVALDI_MEDIAN_ERROR_PCT,
            "%",
        ));
        eprintln!(
            "Vivaldi median relative error over {} pairs: {}",
            errors.len(),
            median
                .map(|m| format!("{m:.1}%"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(h)
}

/// Waits until every node in `observers` reported `victim` dead after
/// `since_ms`; answers each observer's delay (ms), or None for those that
/// did not within `timeout`.
fn wait_dead(
    h: &Harness,
    victim: usize,
    observers: &[usize],
    since_ms: f64,
    timeout: Duration,
) -> Result<Vec<Option<f64>>, TestbedError> {
    let deadline = Instant::now() + timeout;
    loop {
        let id = &h.ids[victim];
        let seen = h.events_where(|e| {
            e.kind == "member" && e.id == *id && e.state == "dead" && e.at_ms >= since_ms
        });
        let delays: Vec<Option<f64>> = observers
            .iter()
            .map(|o| {
                seen.iter()
                    .filter(|e| e.observer == *o)
                    .map(|e| e.at_ms - since_ms)
                    .reduce(f64::min)
            })
            .collect();
        if delays.iter().all(Option::is_some) || Instant::now() > deadline {
            return Ok(delays);
        }
        sleep(Duration::from_millis(50))?;
    }
}

/// Primaries of every session as `observer` sees them.
pub(super) fn primaries(h: &Harness, observer: usize) -> Vec<Option<usize>> {
    (0..h.sessions.len())
        .map(|k| h.primary_of(k, observer))
        .collect()
}

/// For each session in `affected` (with `counts[s]` packets before the
/// fault at `at`): waits up to 10 s for its stream to resume, then answers
/// the longest silence around the fault and the packets lost in it, for
/// those that resumed.
fn resumed_gaps(
    h: &Harness,
    affected: &[usize],
    counts: &[usize],
    at: Instant,
) -> (Vec<f64>, Vec<u64>) {
    let mut gaps = Vec::new();
    let mut lost = Vec::new();
    // One deadline for them all: a session that cannot resume (on the WAN
    // a partition may cut off every replica of one) must not hold the
    // fault open for the others' sake. Ten seconds each, one after the
    // other, held partition-wan's "10 s" partitions open for 31 s, past
    // the consent interval (30 s), and the sessions claimed on the cut
    // side paused for want of consent before the heal.
    let deadline = Instant::now() + Duration::from_secs(10);
    for &s in affected {
        let left = deadline.saturating_duration_since(Instant::now());
        if h.sessions[s]
            .receiver
            .wait_for_packets(counts[s] + 10, left)
        {
            let g = h.gap(s, at - Duration::from_secs(1), Instant::now());
            gaps.push(g.longest_gap_ms);
            lost.push(g.lost);
        }
    }
    (gaps, lost)
}

/// A p99 latency target, whose limit depends on the network.
fn p99_target(report: &mut Report, opts: &Options, what: &str, value: Option<f64>, limit: ByNet) {
    let net = if is_wan(opts) { "WAN" } else { "LAN" };
    let limit = limit.on(is_wan(opts));
    report.targets.push(Target::at_most(
        &format!("{what} ({net})"),
        value,
        limit,
        "ms",
    ));
}

fn detection_targets(report: &mut Report, opts: &Options) {
    let p99 = report.detection_ms.and_then(|s| s.p99);
    p99_target(
        report,
        opts,
        "detection p99",
        p99,
        targets::DETECTION_P99_MS,
    );
}

fn gap_target(report: &mut Report, opts: &Options) {
    let p99 = report.gap_ms.and_then(|s| s.p99);
    let (what, limit) = match (opts.service, opts.standby) {
        (SessionService::Transcode, Some(Standby::Warm)) => (
            "client gap p99 when the primary fails, transcode, warm standby",
            targets::TRANSCODE_WARM_GAP_P99_MS,
        ),
        (SessionService::Transcode, _) => (
            "client gap p99 when the primary fails, transcode, cold standby",
            targets::GAP_P99_MS,
        ),
        (SessionService::RtpAudio, _) => {
            ("client gap p99 when the primary fails", targets::GAP_P99_MS)
        }
    };
    p99_target(report, opts, what, p99, limit);
}

pub(super) fn ownership_targets(report: &mut Report) {
    report.targets.push(Target::at_most(
        "sessions lost after a fault (checked as the scenario says)",
        report.sessions_lost.map(|v| v as f64),
        targets::SESSIONS_LOST,
        "",
    ));
    report.targets.push(Target::at_most(
        "sessions doubly owned after a fault (checked as the scenario says)",
        report.double_owned.map(|v| v as f64),
        targets::SESSIONS_DOUBLY_OWNED,
        "",
    ));
}

/// When the kill scenario checks ownership: 5 s after the kill, the last
/// 2 s of each client's reception must come from one source (a takeover
/// that took longer than 3 s shows as lost). The restarted victim is
/// checked by the next kill's check and by one at the end, so a fault
/// costs about 8 s on the LAN and a run can afford the 50 kills whose p99
/// is more than the maximum of a handful (it waited 10 s before, and ran
/// 10 kills).
const KILL_CHECK_AFTER: Duration = Duration::from_secs(5);

/// On the WAN, the kill scenario measures Vivaldi's error again after
/// every this many kills (once the restarted victim has converged).
const VIVALDI_EVERY: usize = 10;

/// `kill`: SIGKILL the primary of a session, time detection and the gap,
/// check ownership 5 s later, restart it, repeat; check once more at the
/// end.
fn kill(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Kill, opts, opts.loss);
    let mut h = prepare(opts, &mut report)?;
    let n = h.tb.nodes.len();
    // What the idle nodes cost before the kills (the trade-off study's
    // testnet points: bytes against detection as the probe interval moves).
    if !opts.idle.is_zero() {
        eprintln!("measuring the idle nodes for {:?} ...", opts.idle);
        let usage = h.usage_over(opts.idle)?;
        report.bytes_per_node_per_s = Some(usage.mean_bytes().round());
        report.cpu_pct = Some(Summary::of(&usage.cpu_pct));
        report.rss_mb = Some(Summary::of(&usage.rss_mb));
        report.timeline.push(format!(
            "idle for {:.0} s before the kills: {:.0} B/s per node on the wire",
            opts.idle.as_secs_f64(),
            usage.mean_bytes()
        ));
    }
    // What the instances cost (ffmpeg processes of `transcode`; the
    // generator of rtp-audio runs inside the node and is in its CPU).
    let instances = if opts.service == SessionService::Transcode {
        let u = h.instance_usage_over(Duration::from_secs(10))?;
        eprintln!(
            "{} instances ({} beyond one per session): {:.2}% of a core and {:.0} B/s of source read each",
            u.instances,
            u.instances.saturating_sub(h.sessions.len()),
            u.cpu_pct_per_instance,
            u.read_bytes_per_s_per_instance
        );
        Some(u)
    } else {
        None
    };
    let mut detections = Vec::new();
    let mut per_observer = Vec::new();
    let mut gaps = Vec::new();
    let (mut lost, mut double) = (0, 0);
    let mut rows = Vec::new();
    // Vivaldi's error as the run goes (WAN): the one `prepare` measured
    // comes 20-30 s after a cold start, while coordinates still settle.
    let settled = Instant::now();
    let mut vivaldi_series = Vec::new();
    for k in 0..opts.faults.max(1) {
        let before = primaries(&h, 0);
        // The primary of a session, not n1 (the others bootstrap from it).
        let victim = (0..before.len())
            .map(|s| (s + k) % before.len().max(1))
            .find_map(|s| before.get(s).copied().flatten().filter(|p| *p != 0))
            .unwrap_or(1 + k % (n - 1));
        let affected: Vec<usize> = (0..before.len())
            .filter(|s| before[*s] == Some(victim))
            .collect();
        let counts: Vec<usize> = h.sessions.iter().map(|s| s.receiver.len()).collect();
        let survivors: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
        let at = Instant::now();
        let at_ms = unix_ms();
        h.tb.kill(victim);
        let delays = wait_dead(&h, victim, &survivors, at_ms, Duration::from_secs(20))?;
        let all = delays.iter().all(Option::is_some);
        let detection = delays.iter().flatten().copied().reduce(f64::max);
        per_observer.extend(delays.iter().flatten().copied());
        // When suspicion began: the first survivor to suspect the victim.
        let victim_id = h.ids[victim].clone();
        let first_suspect = h
            .events_where(|e| {
                e.kind == "member" && e.id == victim_id && e.state == "suspect" && e.at_ms >= at_ms
            })
            .iter()
            .map(|e| e.at_ms - at_ms)
            .reduce(f64::min);
        if all && let Some(d) = detection {
            detections.push(d);
        }
        let (fault_gaps, fault_lost) = resumed_gaps(&h, &affected, &counts, at);
        gaps.extend(&fault_gaps);
        sleep((at + KILL_CHECK_AFTER).saturating_duration_since(Instant::now()))?;
        let (l, d, notes) = h.ownership();
        lost += l;
        double += d;
        let line = format!(
            "kill {}: {} (primary of {} session(s)) dead at every survivor after {}; client gaps {:?} ms; {} s later {l} lost, {d} doubly owned {}",
            k + 1,
            h.tb.nodes[victim].name,
            affected.len(),
            if all {
                detection.map(|d| format!("{d:.0} ms")).unwrap_or_default()
            } else {
                format!("-- not all of them within 20 s ({delays:?})")
            },
            fault_gaps.iter().map(|g| g.round()).collect::<Vec<_>>(),
            KILL_CHECK_AFTER.as_secs(),
            notes.join("; ")
        );
        eprintln!("{line}");
        report.timeline.push(line);
        rows.push(
            json!({"victim": h.tb.nodes[victim].name, "detection_ms": detection,
            "all_survivors": all, "first_suspicion_ms": first_suspect, "per_observer_ms": delays, "gaps_ms": fault_gaps, "lost_packets": fault_lost,
            "sessions_lost": l, "double_owned": d}),
        );
        h.tb.restart(victim)?;
        h.tb.wait_api(victim, Duration::from_secs(15))?;
        h.follow(victim)?;
        h.tb.wait_converged(Duration::from_secs(60))?;
        sleep(Duration::from_secs(1))?;
        if is_wan(opts) && (k + 1) % VIVALDI_EVERY == 0 {
            let median = Summary::of(&h.vivaldi_errors()).p50;
            let after_s = settled.elapsed().as_secs_f64().round();
            eprintln!("Vivaldi median error {median:?} % after {after_s} s more");
            vivaldi_series.push(json!({"after_kill": k + 1, "s_after_settle": after_s,
                "median_pct": median.map(|m| (m * 100.0).round() / 100.0)}));
        }
    }
    // The last victim's restart, checked as the others' were by the next
    // kill's check.
    sleep(KILL_CHECK_AFTER)?;
    let (l, d, notes) = h.ownership();
    lost += l;
    double += d;
    let line = format!(
        "after the last restart: {} s later {l} lost, {d} doubly owned {}",
        KILL_CHECK_AFTER.as_secs(),
        notes.join("; ")
    );
    eprintln!("{line}");
    report.timeline.push(line);
    report.detection_ms = Some(Summary::of(&detections));
    report.gap_ms = Some(Summary::of(&gaps));
    report.sessions_lost = Some(lost);
    report.double_owned = Some(double);
    let undetected = opts.faults.max(1) - detections.len();
    report.details = json!({"kills": rows, "undetected_kills": undetected,
    "vivaldi_series": vivaldi_series,
    "detection_per_observer_ms": Summary::of(&per_observer),
    "service": opts.service.name(),
    "standby": opts.standby.map_or("cold (the node's default)", |s| s.name()),
    "instances": instances.as_ref().map(|u| json!({
        "running": u.instances,
        "beyond_one_per_session": u.instances.saturating_sub(h.sessions.len()),
        "cpu_pct_per_instance": (u.cpu_pct_per_instance * 100.0).round() / 100.0,
        "source_read_bytes_per_s_per_instance": u.read_bytes_per_s_per_instance.round(),
        "measured": "the nodes' child processes over 10 s before the first kill: CPU from /proc/PID/stat, source read from /proc/PID/io rchar",
    }))});
    detection_targets(&mut report, opts);
    report.targets.push(Target::at_most(
        "kills not detected by every survivor within 20 s",
        Some(undetected as f64),
        0.0,
        "",
    ));
    gap_target(&mut report, opts);
    ownership_targets(&mut report);
    let target = targets::DETECTION_P99_MS.on(is_wan(opts));
    report.plots.push((
        "detection.svg".into(),
        Plot::new(
            "Kill until every survivor marks the node dead",
            "kill",
            "ms",
        )
        .series(
            "all survivors",
            Style::Points,
            detections
                .iter()
                .enumerate()
                .map(|(i, d)| ((i + 1) as f64, *d))
                .collect(),
        )
        .reference("target p99", target),
    ));
    report.plots.push((
        "detection-cdf.svg".into(),
        Plot::new("Detection at each survivor (CDF)", "ms", "fraction").series(
            "per survivor",
            Style::Step,
            cdf(&per_observer),
        ),
    ));
    report.plots.push((
        "gap.svg".into(),
        Plot::new(
            "Client gap when the primary is killed (CDF)",
            "ms",
            "fraction",
        )
        .series("sessions of the killed node", Style::Step, cdf(&gaps)),
    ));
    report.clients = h.clients();
    if opts.service == SessionService::Transcode {
        let most = report.clients.iter().map(|c| c.ssrcs).max();
        report.targets.push(Target::at_most(
            "SSRCs one client heard across the takeovers, max",
            most.map(|m| m as f64),
            1.0,
            "",
        ));
    }
    Ok(report)
}

/// The `size` nodes to cut away: consecutive indices among 1..n (n1, the
/// others' bootstrap, stays), starting where the most sessions have their
/// primary, so that each cut takes several sessions' primaries (after a
/// cut they live on the majority side, and a cut of the same nodes would
/// take none); among starts that take as many, the first from `from`.
fn minority_with_most_primaries(
    primaries: &[Option<usize>],
    n: usize,
    size: usize,
    from: usize,
) -> Vec<usize> {
    let ring = n.saturating_sub(1).max(1);
    let group_at = |start: usize| -> Vec<usize> {
        (0..size.min(ring))
            .map(|j| 1 + (start - 1 + j) % ring)
            .collect()
    };
    let held = |group: &[usize]| {
        primaries
            .iter()
            .filter(|p| p.is_some_and(|p| group.contains(&p)))
            .count()
    };
    let from = from.clamp(1, ring);
    (0..ring)
        .map(|j| group_at(1 + (from - 1 + j) % ring))
        .fold(None::<(usize, Vec<usize>)>, |best, group| {
            let h = held(&group);
            match best {
                Some((b, _)) if b >= h => best,
                _ => Some((h, group)),
            }
        })
        .map(|(_, group)| group)
        .unwrap_or_default()
}

/// `partition`: cut a minority (the consecutive nodes holding the most
/// sessions' primaries, [`minority_with_most_primaries`]) away from the
/// rest and the clients, hold, heal; time detection, the time until every
/// session has one owner again, and ownership 10 s after the heal.
fn partition(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Partition, opts, opts.loss);
    let h = prepare(opts, &mut report)?;
    let n = h.tb.nodes.len();
    let size = ((n - 1) / 2).max(1);
    let mut detections = Vec::new();
    let mut gaps = Vec::new();
    let mut one_owner = Vec::new();
    let (mut lost, mut double) = (0, 0);
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for k in 0..opts.faults.max(1) {
        let before = primaries(&h, 0);
        let first = before
            .get(k % before.len().max(1))
            .copied()
            .flatten()
            .filter(|p| *p != 0)
            .unwrap_or(1);
        let group = minority_with_most_primaries(&before, n, size, first);
        let majority: Vec<usize> = (0..n).filter(|i| !group.contains(i)).collect();
        let affected: Vec<usize> = (0..before.len())
            .filter(|s| before[*s].is_some_and(|p| group.contains(&p)))
            .collect();
        let counts: Vec<usize> = h.sessions.iter().map(|s| s.receiver.len()).collect();
        let names: Vec<String> = group.iter().map(|i| h.tb.nodes[*i].name.clone()).collect();
        let cut_at = Instant::now();
        let cut_ms = unix_ms();
        h.tb.cut(&group, false);
        let mut worst: Option<f64> = Some(0.0);
        for &g in &group {
            let d = wait_dead(&h, g, &majority, cut_ms, Duration::from_secs(20))?;
            let m = if d.iter().all(Option::is_some) {
                d.iter().flatten().copied().reduce(f64::max)
            } else {
                None
            };
            worst = worst.zip(m).map(|(a, b)| a.max(b));
        }
        if let Some(w) = worst {
            detections.push(w);
        }
        let (fault_gaps, fault_lost) = resumed_gaps(&h, &affected, &counts, cut_at);
        gaps.extend(&fault_gaps);
        sleep((cut_at + opts.cut_for).saturating_duration_since(Instant::now()))?;
        let heal_at = Instant::now();
        h.tb.heal_all();
        // Until every session has exactly one host again.
        let mut curve = Vec::new();
        let mut settled = None;
        while heal_at.elapsed() < Duration::from_secs(20) {
            let hosts = h.hosts();
            let single = h
                .sessions
                .iter()
                .filter(|s| hosts.get(&s.id).map_or(0, Vec::len) == 1)
                .count();
            let t = heal_at.elapsed().as_secs_f64();
            curve.push((t, single as f64));
            if single == h.sessions.len() && settled.is_none() {
                settled = Some(t * 1e3);
            }
            if settled.is_some() && t > 3.0 {
                break;
            }
            sleep(Duration::from_millis(100))?;
        }
        if let Some(s) = settled {
            one_owner.push(s);
        }
        sleep((heal_at + Duration::from_secs(10)).saturating_duration_since(Instant::now()))?;
        let (l, d, notes) = h.ownership();
        lost += l;
        double += d;
        let hosts = h.hosts();
        let owners: HashMap<&str, Vec<&str>> = h
            .sessions
            .iter()
            .map(|s| {
                (
                    s.id.as_str(),
                    hosts
                        .get(&s.id)
                        .map(|v| v.iter().map(|i| h.tb.nodes[*i].name.as_str()).collect())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let line = format!(
            "partition {}: {} cut away; majority saw them all dead after {}; client gaps {:?} ms; healed after {:.1} s; one owner per session {} after the heal; 10 s later {l} lost, {d} doubly owned {}",
            k + 1,
            names.join(","),
            worst
                .map(|w| format!("{w:.0} ms"))
                .unwrap_or_else(|| "-- not within 20 s".into()),
            fault_gaps.iter().map(|g| g.round()).collect::<Vec<_>>(),
            (heal_at - cut_at).as_secs_f64(),
            settled
                .map(|s| format!("{s:.0} ms"))
                .unwrap_or_else(|| "never (20 s)".into()),
            notes.join("; ")
        );
        eprintln!("{line}");
        report.timeline.push(line);
        rows.push(
            json!({"minority": names, "detection_ms": worst, "gaps_ms": fault_gaps, "lost_packets": fault_lost,
            "cut_for_s": (heal_at - cut_at).as_secs_f64(),
            "one_owner_after_heal_ms": settled, "owners_after_heal": owners,
            "sessions_lost": l, "double_owned": d}),
        );
        curves.push(curve);
        h.tb.wait_converged(Duration::from_secs(60))?;
        sleep(Duration::from_secs(2))?;
    }
    report.detection_ms = Some(Summary::of(&detections));
    report.gap_ms = Some(Summary::of(&gaps));
    report.sessions_lost = Some(lost);
    report.double_owned = Some(double);
    report.details = json!({"partitions": rows,
        "one_owner_after_heal_ms": Summary::of(&one_owner)});
    // The detection targets are for one killed node; here the majority
    // must see a whole minority dead at once. The clients of its
    // sessions wait only for their primary's death: the gap target holds.
    gap_target(&mut report, opts);
    ownership_targets(&mut report);
    report.targets.push(Target::at_most(
        "heals after which some session never had exactly one owner within 20 s",
        Some((opts.faults.max(1) - one_owner.len()) as f64),
        0.0,
        "",
    ));
    let mut plot = Plot::new(
        "Sessions with exactly one owner after the heal",
        "s after heal",
        "sessions",
    )
    .reference("all sessions", h.sessions.len() as f64);
    for (i, c) in curves.into_iter().enumerate() {
        plot = plot.series(&format!("partition {}", i + 1), Style::Step, c);
    }
    report.plots.push(("owners.svg".into(), plot));
    report.clients = h.clients();
    Ok(report)
}

/// A plotted series.
type Points = Vec<(f64, f64)>;

/// Member events per 10 s bucket: (suspect, dead) series.
fn buckets(h: &Harness, healthy: impl Fn(&str) -> bool, secs: f64) -> (Points, Points) {
    let n = (secs / 10.0).ceil().max(1.0) as usize;
    let (mut suspect, mut dead) = (vec![0.0; n], vec![0.0; n]);
    for e in h.events_where(|e| e.kind == "member" && healthy(&e.id)) {
        let b = (h.t(e.at_ms) / 10.0).floor();
        if b < 0.0 || b as usize >= n {
            continue;
        }
        match e.state.as_str() {
            "suspect" => suspect[b as usize] += 1.0,
            "dead" => dead[b as usize] += 1.0,
            _ => {}
        }
    }
    let series = |v: Vec<f64>| {
        v.into_iter()
            .enumerate()
            .map(|(i, c)| (i as f64 * 10.0, c))
            .collect()
    };
    (series(suspect), series(dead))
}

/// `loss`: every link drops 5% (or `--loss`) for `--duration`; every
/// death is a false positive.
fn loss(opts: &Options) -> Result<Report, TestbedError> {
    let p = if opts.loss > 0.0 { opts.loss } else { 0.05 };
    let mut report = new_report(Scenario::Loss, opts, p);
    let mut quiet = opts.clone();
    quiet.loss = 0.0;
    let mut h = prepare(&quiet, &mut report)?;
    h.tb.switch().set_loss(p);
    h.t0_ms = unix_ms();
    let start = Instant::now();
    eprintln!(
        "{}% loss on every link for {:?} ...",
        fmt_num(p * 100.0),
        opts.duration
    );
    let usage = h.usage_over(opts.duration)?;
    let secs = start.elapsed().as_secs_f64();
    let since = h.t0_ms;
    let deaths = h.events_where(|e| e.kind == "member" && e.state == "dead" && e.at_ms >= since);
    let suspicions =
        h.events_where(|e| e.kind == "member" && e.state == "suspect" && e.at_ms >= since);
    let refutations = h.events_where(|e| e.kind == "refuted" && e.at_ms >= since);
    let gaps: Vec<f64> = (0..h.sessions.len())
        .map(|k| h.gap(k, start, Instant::now()).longest_gap_ms)
        .collect();
    let (l, d, notes) = h.ownership();
    report.false_positives = Some(deaths.len() as u64);
    report.gap_ms = Some(Summary::of(&gaps));
    report.sessions_lost = Some(l);
    report.double_owned = Some(d);
    report.bytes_per_node_per_s = Some(usage.mean_bytes().round());
    report.cpu_pct = Some(Summary::of(&usage.cpu_pct));
    report.rss_mb = Some(Summary::of(&usage.rss_mb));
    report.timeline.push(format!(
        "{:.0} s at {}% loss: {} suspicions raised, {} refuted, {} false deaths; {l} sessions lost, {d} doubly owned {}",
        secs,
        fmt_num(p * 100.0),
        suspicions.len(),
        refutations.len(),
        deaths.len(),
        notes.join("; ")
    ));
    report.details = json!({"seconds": secs, "suspicions": suspicions.len(),
        "refutations": refutations.len(),
        "false_deaths": deaths.iter().map(|e| json!({"observer": h.tb.nodes[e.observer].name, "t_s": h.t(e.at_ms)})).collect::<Vec<_>>()});
    report.targets.push(Target::at_most(
        "healthy nodes declared dead",
        Some(deaths.len() as f64),
        targets::FALSE_DEATHS,
        "",
    ));
    ownership_targets(&mut report);
    let (s, dd) = buckets(&h, |_| true, secs);
    report.plots.push((
        "false-positives.svg".into(),
        Plot::new(
            &format!("Member events per 10 s at {}% loss", fmt_num(p * 100.0)),
            "s",
            "events",
        )
        .series("suspicions", Style::Step, s)
        .series("deaths (false)", Style::Step, dd),
    ));
    let _ = &mut h;
    report.clients = h.clients();
    Ok(report)
}

/// `pause`: the last node is SIGSTOPped for 0.5-2.5 s every 3-6 s for
/// `--duration`; only it may be suspected or declared dead.
fn pause(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Pause, opts, opts.loss);
    let mut h = prepare(opts, &mut report)?;
    let n = h.tb.nodes.len();
    let victim = n - 1;
    let victim_id = h.ids[victim].clone();
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    h.t0_ms = unix_ms();
    let start = Instant::now();
    let mut bursts = Vec::new();
    eprintln!(
        "pausing {} in bursts for {:?} ...",
        h.tb.nodes[victim].name, opts.duration
    );
    while start.elapsed() < opts.duration {
        let burst = Duration::from_millis(rng.random_range(500..=2500));
        let at = start.elapsed().as_secs_f64();
        h.tb.pause(victim)?;
        let slept = sleep(burst);
        h.tb.resume(victim)?;
        slept?;
        bursts.push((at, burst.as_secs_f64()));
        sleep(Duration::from_millis(rng.random_range(3000..=6000)))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let since = h.t0_ms;
    let about = |healthy: bool| {
        let vid = victim_id.clone();
        move |id: &str| (id != vid) == healthy
    };
    let healthy_dead = h.events_where(|e| {
        e.kind == "member"
            && e.state == "dead"
            && e.at_ms >= since
            && e.id != victim_id
            && e.observer != victim
    });
    let healthy_suspect = h.events_where(|e| {
        e.kind == "member"
            && e.state == "suspect"
            && e.at_ms >= since
            && e.id != victim_id
            && e.observer != victim
    });
    let victim_dead = h.events_where(|e| {
        e.kind == "member" && e.state == "dead" && e.at_ms >= since && e.id == victim_id
    });
    let victim_suspect = h.events_where(|e| {
        e.kind == "member" && e.state == "suspect" && e.at_ms >= since && e.id == victim_id
    });
    sleep(Duration::from_secs(5))?;
    let (l, d, notes) = h.ownership();
    report.false_positives = Some(healthy_dead.len() as u64);
    report.sessions_lost = Some(l);
    report.double_owned = Some(d);
    report.timeline.push(format!(
        "{} bursts over {secs:.0} s: the paused node was suspected {} times and declared dead {} times; healthy nodes suspected {} times, declared dead {} times (by nodes other than the paused one); {l} sessions lost, {d} doubly owned {}",
        bursts.len(), victim_suspect.len(), victim_dead.len(), healthy_suspect.len(), healthy_dead.len(), notes.join("; ")
    ));
    report.details = json!({"victim": h.tb.nodes[victim].name,
        "bursts": bursts.iter().map(|(t, d)| json!({"t_s": t, "seconds": d})).collect::<Vec<_>>(),
        "victim_suspected": victim_suspect.len(), "victim_declared_dead": victim_dead.len(),
        "healthy_suspected": healthy_suspect.len(), "healthy_declared_dead": healthy_dead.len(),
        "healthy_deaths": healthy_dead.iter().map(|e| json!({
            "observer": h.tb.nodes[e.observer].name,
            "subject": h.ids.iter().position(|id| *id == e.id).map(|i| h.tb.nodes[i].name.clone()),
            "t_s": (h.t(e.at_ms) * 1000.0).round() / 1000.0,
        })).collect::<Vec<_>>()});
    report.targets.push(Target::at_most(
        "healthy nodes declared dead",
        Some(healthy_dead.len() as f64),
        targets::FALSE_DEATHS,
        "",
    ));
    ownership_targets(&mut report);
    let (vs, vd) = buckets(&h, about(false), secs);
    let (hs, hd) = buckets(&h, about(true), secs);
    let mut plot = Plot::new(
        "Member events per 10 s while one node is paused in bursts",
        "s",
        "events",
    )
    .series("paused node suspected", Style::Step, vs)
    .series("paused node declared dead", Style::Step, vd)
    .series("healthy suspected", Style::Step, hs)
    .series("healthy declared dead", Style::Step, hd);
    for (t, _) in bursts.iter().take(40) {
        plot = plot.marker("", *t);
    }
    report.plots.push(("suspicions.svg".into(), plot));
    report.clients = h.clients();
    Ok(report)
}

/// `churn`: every node in turn is stopped (SIGTERM) and started again;
/// sessions lost and doubly owned at the end, the gaps on the way.
fn churn(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Churn, opts, opts.loss);
    let mut h = prepare(opts, &mut report)?;
    let n = h.tb.nodes.len();
    let mut gaps = Vec::new();
    let mut rows = Vec::new();
    let restarts = if opts.faults == 0 { n } else { opts.faults };
    for k in 0..restarts {
        let node = k % n;
        let before = primaries(&h, (node + 1) % n);
        let affected: Vec<usize> = (0..before.len())
            .filter(|s| before[*s] == Some(node))
            .collect();
        let counts: Vec<usize> = h.sessions.iter().map(|s| s.receiver.len()).collect();
        let at = Instant::now();
        h.tb.stop(node, Duration::from_secs(10));
        sleep(Duration::from_secs(1))?;
        h.tb.start(node)?;
        h.tb.wait_api(node, Duration::from_secs(15))?;
        h.follow(node)?;
        let (fault_gaps, fault_lost) = resumed_gaps(&h, &affected, &counts, at);
        h.tb.wait_converged(Duration::from_secs(60))?;
        let line = format!(
            "restart {}: {} stopped (SIGTERM) and started again; it was primary of {} session(s), client gaps {:?} ms",
            k + 1,
            h.tb.nodes[node].name,
            affected.len(),
            fault_gaps.iter().map(|g| g.round()).collect::<Vec<_>>()
        );
        eprintln!("{line}");
        report.timeline.push(line);
        rows.push(json!({"node": h.tb.nodes[node].name, "gaps_ms": fault_gaps, "lost_packets": fault_lost}));
        gaps.extend(fault_gaps);
        sleep(Duration::from_secs(2))?;
    }
    sleep(Duration::from_secs(10))?;
    let (l, d, notes) = h.ownership();
    report.timeline.push(format!(
        "10 s after the last restart: {l} sessions lost, {d} doubly owned {}",
        notes.join("; ")
    ));
    report.gap_ms = Some(Summary::of(&gaps));
    report.sessions_lost = Some(l);
    report.double_owned = Some(d);
    report.details = json!({"restarts": rows});
    ownership_targets(&mut report);
    report.plots.push((
        "gap.svg".into(),
        Plot::new("Client gap per restart of its primary", "restart", "ms").series(
            "gap",
            Style::Points,
            rows.iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    r["gaps_ms"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(move |g| g.as_f64().map(|g| ((i + 1) as f64, g)))
                })
                .collect(),
        ),
    ));
    let _ = &mut h;
    report.clients = h.clients();
    Ok(report)
}

/// `scale`: idle overlays of 8, 16, 32 and 64 nodes (up to `--nodes`):
/// traffic, CPU and RSS per node against N.
fn scale(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Scale, opts, opts.loss);
    report.sessions = 0;
    let sizes: Vec<usize> = [8, 16, 32, 64]
        .into_iter()
        .filter(|s| *s <= opts.nodes)
        .collect();
    let sizes = if sizes.is_empty() {
        vec![opts.nodes]
    } else {
        sizes
    };
    let mut rows = Vec::new();
    let (mut bytes, mut cpu, mut rss, mut viv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_usage = None;
    let mut failed = Vec::new();
    let mut series: Vec<(usize, Vec<(f64, f64)>)> = Vec::new();
    for &n in &sizes {
        // A size that does not come up is a finding, not the end of the
        // report: the smaller sizes stand.
        let h = match Harness::up(opts, n) {
            Ok(h) => h,
            Err(TestbedError::Interrupted) => return Err(TestbedError::Interrupted),
            Err(e) => {
                let line = format!("N={n}: {e}");
                eprintln!("{line}");
                report.timeline.push(line);
                failed.push(n);
                break;
            }
        };
        sleep(opts.settle)?;
        eprintln!("N={n}: measuring idle nodes for {:?} ...", opts.duration);
        // Acks carrying a coordinate, by why: does the unasked resend fire
        // at rest, and how often against the probes?
        let coords = |h: &Harness| {
            metric_sums(
                h,
                &[
                    "baton_coordinates_asked_total",
                    "baton_coordinates_unasked_total",
                    "baton_discovery_walks_total",
                ],
            )
        };
        let coords_before = coords(&h)?;
        let (usage, traffic) = std::thread::scope(|scope| {
            let watched = scope.spawn(|| traffic_over(&h.tb, n, opts.duration, SAMPLE_STEP));
            let usage = h.usage_over(opts.duration);
            let traffic = watched.join().unwrap_or_else(|_| Ok(Traffic::default()));
            (usage, traffic)
        });
        let (usage, traffic) = (usage?, traffic?);
        let coords_after = coords(&h)?;
        let per_node_s = |i: usize| {
            coords_after[i].saturating_sub(coords_before[i]) as f64
                / n as f64
                / opts.duration.as_secs_f64().max(1e-3)
        };
        let (asked, unasked) = (per_node_s(0), per_node_s(1));
        // Discovery walks in the window, and what the libp2p class carried
        // per walk (walks are its main steady-state traffic): the window
        // may hold none, the rate is what a long run averages.
        let walks = coords_after[2].saturating_sub(coords_before[2]);
        let libp2p_total = traffic
            .by_class
            .iter()
            .find(|(c, _)| *c == "libp2p")
            .map_or(0.0, |(_, b)| *b)
            * n as f64
            * opts.duration.as_secs_f64();
        let per_walk = (walks > 0).then(|| libp2p_total / walks as f64);
        let connections = h.connections();
        let errors = if is_wan(opts) {
            h.vivaldi_errors()
        } else {
            Vec::new()
        };
        let b = usage.mean_bytes();
        let c = Summary::of(&usage.cpu_pct);
        let r = Summary::of(&usage.rss_mb);
        let v = Summary::of(&errors).p50;
        let line = format!(
            "N={n}: {b:.0} B/s sent per node ({}); acks with a coordinate per node {asked:.2}/s asked, {unasked:.2}/s unasked; discovery walks {walks}{}; open connections per node p50 {} max {}; CPU p50 {} max {} %; RSS p50 {} max {} MB{}",
            classes_line(&traffic),
            per_walk
                .map(|w| format!(" (libp2p {:.0} KB per walk)", w / 1e3))
                .unwrap_or_default(),
            Summary::of(&connections)
                .p50
                .map(fmt_num)
                .unwrap_or_default(),
            Summary::of(&connections)
                .max
                .map(fmt_num)
                .unwrap_or_default(),
            c.p50.map(fmt_num).unwrap_or_default(),
            c.max.map(fmt_num).unwrap_or_default(),
            r.p50.map(fmt_num).unwrap_or_default(),
            r.max.map(fmt_num).unwrap_or_default(),
            v.map(|v| format!("; Vivaldi median error {v:.1}%"))
                .unwrap_or_default()
        );
        eprintln!("{line}");
        report.timeline.push(line);
        let mut row = json!({"nodes": n, "bytes_per_node_per_s": b.round(), "cpu_pct": c, "rss_mb": r,
            "vivaldi_median_rel_error": v.map(|v| v / 100.0),
            "coords_per_node_per_s": {"asked": asked, "unasked": unasked},
            "walks": walks, "libp2p_bytes_per_walk": per_walk.map(f64::round),
            "bytes_by_class": classes_json(&traffic.by_class),
            "frames_by_class": classes_json(&traffic.frames_by_class),
            "series_bytes_per_node_per_s": traffic.series,
            "connections_per_node": Summary::of(&connections)});
        let steady = steady_bytes(&row);
        row["steady_bytes_per_node_per_s"] = json!(steady);
        if let Some(st) = steady {
            let line = format!(
                "N={n}: steady state (walks at their rate, not as the window caught them) {st:.0} B/s per node"
            );
            eprintln!("{line}");
            report.timeline.push(line);
        }
        rows.push(row);
        series.push((n, traffic.series.clone()));
        bytes.push((n as f64, steady.unwrap_or(b)));
        cpu.push((n as f64, c.p50.unwrap_or(f64::NAN)));
        rss.push((n as f64, r.p50.unwrap_or(f64::NAN)));
        if let Some(v) = v {
            viv.push((n as f64, v));
        }
        last_usage = Some((usage, v));
        drop(h);
    }
    let ratio = match (bytes.first(), bytes.last()) {
        (Some((_, a)), Some((_, b))) if *a > 0.0 => Some(b / a),
        _ => None,
    };
    if let Some((usage, v)) = last_usage {
        report.bytes_per_node_per_s = bytes.last().map(|(_, b)| b.round());
        report.cpu_pct = Some(Summary::of(&usage.cpu_pct));
        report.rss_mb = Some(Summary::of(&usage.rss_mb));
        report.vivaldi_median_rel_error = v.map(|m| m / 100.0);
    }
    report.details = json!({"steps": rows, "traffic_ratio_largest_to_smallest": ratio,
        "failed_sizes": failed});
    report.targets.push(Target::at_most(
        "sizes whose membership did not converge",
        Some(failed.len() as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "monitoring traffic per node at the largest N (steady state)",
        report.bytes_per_node_per_s,
        targets::TRAFFIC_BYTES_PER_NODE_PER_S,
        "B/s",
    ));
    if sizes.len() > 1 {
        report.targets.push(Target::at_most(
            &format!(
                "traffic ratio N={} / N={}",
                sizes[sizes.len() - 1],
                sizes[0]
            ),
            ratio.map(|r| (r * 100.0).round() / 100.0),
            targets::TRAFFIC_RATIO,
            "",
        ));
    }
    report.targets.push(Target::at_most(
        "idle RSS per node (max, largest N)",
        report.rss_mb.and_then(|s| s.max),
        targets::IDLE_RSS_MB,
        "MB",
    ));
    report.targets.push(Target::at_most(
        "idle CPU per node (p50, largest N)",
        report.cpu_pct.and_then(|s| s.p50),
        targets::IDLE_CPU_PCT,
        "% of a core",
    ));
    if is_wan(opts) {
        report.targets.push(Target::at_most(
            "Vivaldi median relative RTT error (largest N)",
            report.vivaldi_median_rel_error.map(|v| v * 100.0),
            targets::VIVALDI_MEDIAN_ERROR_PCT,
            "%",
        ));
    }
    report.plots.push((
        "traffic.svg".into(),
        Plot::new("Bytes sent per node per second (eth0)", "nodes", "B/s")
            .series("idle overlay", Style::Line, bytes)
            .reference(
                &format!(
                    "target {}",
                    targets::kb_per_s(targets::TRAFFIC_BYTES_PER_NODE_PER_S)
                ),
                targets::TRAFFIC_BYTES_PER_NODE_PER_S,
            ),
    ));
    let mut over_time = Plot::new(
        "Bytes sent per node per second, over the measurement",
        "s",
        "B/s",
    )
    .reference("target", targets::TRAFFIC_BYTES_PER_NODE_PER_S);
    for (n, points) in series {
        over_time = over_time.series(&format!("N={n}"), Style::Line, points);
    }
    report
        .plots
        .push(("traffic-over-time.svg".into(), over_time));
    report.plots.push((
        "cpu.svg".into(),
        Plot::new("CPU per node (median)", "nodes", "% of a core")
            .series("idle", Style::Line, cpu)
            .reference(
                &format!("target {}%", fmt_num(targets::IDLE_CPU_PCT)),
                targets::IDLE_CPU_PCT,
            ),
    ));
    report.plots.push((
        "rss.svg".into(),
        Plot::new("RSS per node (median)", "nodes", "MB")
            .series("idle", Style::Line, rss)
            .reference(
                &format!("target {} MB", fmt_num(targets::IDLE_RSS_MB)),
                targets::IDLE_RSS_MB,
            ),
    ));
    if !viv.is_empty() {
        report.plots.push((
            "vivaldi.svg".into(),
            Plot::new("Vivaldi median relative error", "nodes", "%")
                .series("median", Style::Line, viv)
                .reference(
                    &format!("target {}%", fmt_num(targets::VIVALDI_MEDIAN_ERROR_PCT)),
                    targets::VIVALDI_MEDIAN_ERROR_PCT,
                ),
        ));
    }
    Ok(report)
}

/// How often traffic is sampled for its time series.
const SAMPLE_STEP: Duration = Duration::from_secs(5);

fn classes_json(classes: &[(&'static str, f64)]) -> serde_json::Value {
    serde_json::Value::Object(
        classes
            .iter()
            .map(|(name, v)| ((*name).to_string(), json!((v * 10.0).round() / 10.0)))
            .collect(),
    )
}

/// Bytes a discovery walk sends per peer of the group, overlay-wide: a
/// QUIC connection, identify and the Kademlia requests (measured: 1675 KB
/// for a walk of a 64-node LAN group, 63 peers, `testnet run scale --nodes
/// 64 --duration 600s --settle 40s`, 2026-12-04, docs/eval/idle-long).
/// Used for a window that held no walk.
pub const WALK_BYTES_PER_PEER: f64 = 26_600.0;

/// A scale step's steady-state bytes per node per second: the window's
/// traffic without its libp2p class (in an idle overlay, discovery walks),
/// plus the walks' share at the rate the protocol walks (a group of any
/// size about `group_walkers` per `group_walk`): a walk is a rare burst, so
/// a 30 s window either misses it or divides a whole walk over 30 s. The
/// walk's cost is the one measured in the window when it held one, else
/// [`WALK_BYTES_PER_PEER`] per peer. `None` for a step recorded before
/// walks were counted.
pub fn steady_bytes(step: &serde_json::Value) -> Option<f64> {
    let bytes = step["bytes_per_node_per_s"].as_f64()?;
    let n = step["nodes"].as_f64()?;
    // A node alone walks every few seconds: no group share to spread.
    if n < 2.0 {
        return None;
    }
    let walks = step["walks"].as_u64()?;
    let libp2p = step["bytes_by_class"]["libp2p"].as_f64().unwrap_or(0.0);
    // A walk the window cut short (or mDNS in the same class) must not
    // make it look cheaper than a whole one.
    let whole = WALK_BYTES_PER_PEER * (n - 1.0);
    let per_walk = match step["libp2p_bytes_per_walk"].as_f64() {
        Some(b) if walks > 0 => b.max(whole),
        _ => whole,
    };
    let timing = baton_protocol::node::Timing::default();
    let walks_per_s =
        f64::from(timing.group_walkers.max(1)) / timing.group_walk.as_secs_f64().max(1.0);
    Some((bytes - libp2p + per_walk * walks_per_s / n).round())
}

fn classes_line(traffic: &Traffic) -> String {
    traffic
        .by_class
        .iter()
        .filter(|(_, v)| *v >= 0.5)
        .map(|(name, v)| format!("{name} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `compare`: Serf's agents, then Baton's nodes, on the same testnet (LAN
/// by default, N nodes): idle traffic per node for `--duration`, then
/// `--faults` kills, each timed until every survivor reports the node
/// failed (Serf: its member-failed event handler; Baton: the dead event).
fn compare(opts: &Options) -> Result<Report, TestbedError> {
    let mut report = new_report(Scenario::Compare, opts, opts.loss);
    report.sessions = 0;
    let n = opts.nodes.max(3);
    let mut rows = Vec::new();
    let mut summary: Vec<(&str, f64, Summary)> = Vec::new();
    for program in [Program::Serf, Program::Batond] {
        let name = match program {
            Program::Serf => "serf",
            Program::Batond => "baton",
        };
        let mut config = TestbedConfig::new(n, &opts.out.join(format!("nodes-{name}")));
        config.program = program;
        config.wan = opts.wan.as_ref().map(|(m, _)| m.clone());
        config.loss = opts.loss;
        config.mdns = opts.mdns && program == Program::Batond;
        config.bootstrap = true;
        config.seed = opts.seed;
        eprintln!("{name}: bringing up {n} nodes ...");
        let mut tb = Testbed::up(config)?;
        let took = tb.wait_converged(Duration::from_secs(60 + n as u64))?;
        eprintln!(
            "{name}: membership converged after {:.1} s; settling for {:?}",
            took.as_secs_f64(),
            opts.settle
        );
        // Baton's detection is read from its event streams, Serf's from the
        // files its event handler appends to.
        let events = (program == Program::Batond)
            .then(|| follow_all(&tb))
            .transpose()?;
        sleep(opts.settle)?;
        eprintln!("{name}: measuring idle traffic for {:?} ...", opts.duration);
        let traffic = traffic_over(&tb, n, opts.duration, SAMPLE_STEP)?;
        let mut detections = Vec::new();
        let mut kills = Vec::new();
        for k in 0..opts.faults.max(1) {
            let victim = 1 + k % (n - 1);
            let survivors: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
            let at_ms = unix_ms();
            tb.kill(victim);
            let deadline = Instant::now() + Duration::from_secs(30);
            let delays = loop {
                let delays: Vec<Option<f64>> = survivors
                    .iter()
                    .map(|&o| match &events {
                        Some(seen) => seen.first_dead(o, &tb.nodes[victim].name, at_ms),
                        None => tb
                            .serf_failures(o)
                            .into_iter()
                            .filter(|t| *t >= at_ms)
                            .reduce(f64::min)
                            .map(|t| t - at_ms),
                    })
                    .collect();
                if delays.iter().all(Option::is_some) || Instant::now() > deadline {
                    break delays;
                }
                sleep(Duration::from_millis(50))?;
            };
            let all = delays.iter().all(Option::is_some);
            let worst = delays.iter().flatten().copied().reduce(f64::max);
            if all && let Some(w) = worst {
                detections.push(w);
            }
            let line = format!(
                "{name} kill {}: {} failed at every survivor after {}",
                k + 1,
                tb.nodes[victim].name,
                match (all, worst) {
                    (true, Some(w)) => format!("{w:.0} ms"),
                    _ => format!("-- not all within 30 s ({delays:?})"),
                }
            );
            eprintln!("{line}");
            report.timeline.push(line);
            kills.push(
                json!({"victim": tb.nodes[victim].name, "detection_ms": worst,
                "all_survivors": all, "per_observer_ms": delays}),
            );
            tb.restart(victim)?;
            tb.wait_api(victim, Duration::from_secs(15))?;
            if let Some(seen) = &events {
                seen.follow(&tb, victim)?;
            }
            tb.wait_converged(Duration::from_secs(60))?;
            sleep(Duration::from_secs(3))?;
        }
        let d = Summary::of(&detections);
        let line = format!(
            "{name}: {:.0} B/s sent per node idle ({}); detection p50 {} ms, max {} ms over {} kills",
            traffic.mean,
            classes_line(&traffic),
            d.p50.map(fmt_num).unwrap_or_default(),
            d.max.map(fmt_num).unwrap_or_default(),
            detections.len()
        );
        eprintln!("{line}");
        report.timeline.push(line);
        rows.push(
            json!({"program": name, "bytes_per_node_per_s": traffic.mean.round(),
            "bytes_by_class": classes_json(&traffic.by_class),
            "series_bytes_per_node_per_s": traffic.series, "detection_ms": d, "kills": kills}),
        );
        summary.push((name, traffic.mean, d));
        drop(tb);
    }
    let get = |name: &str| summary.iter().find(|(n, _, _)| *n == name);
    let product = |(_, bytes, d): &(&str, f64, Summary)| d.p50.map(|ms| bytes * ms / 1000.0);
    let serf = get("serf").and_then(product);
    let baton = get("baton").and_then(product);
    if let Some((_, bytes, d)) = get("baton") {
        report.bytes_per_node_per_s = Some(bytes.round());
        report.detection_ms = Some(*d);
        report.targets.push(Target::at_most(
            "Baton: bytes sent per node per second, idle",
            Some(bytes.round()),
            targets::TRAFFIC_BYTES_PER_NODE_PER_S,
            "B/s",
        ));
        report.targets.push(Target::at_most(
            "Baton: kill until every survivor declares it, p50",
            d.p50,
            targets::COMPARE_DETECTION_MS,
            "ms",
        ));
    }
    report.targets.push(Target::at_most(
        "bytes x detection time, Baton over Serf",
        match (baton, serf) {
            (Some(b), Some(s)) if s > 0.0 => Some((b / s * 100.0).round() / 100.0),
            _ => None,
        },
        targets::COMPARE_PRODUCT_RATIO,
        "",
    ));
    report.details = json!({"programs": rows,
        "bytes_times_detection_p50": {"serf": serf, "baton": baton}});
    let mut plot = Plot::new("Idle bytes sent per node per second", "s", "B/s");
    for row in &rows {
        let name = row["program"].as_str().unwrap_or_default().to_string();
        let points: Vec<(f64, f64)> = row["series_bytes_per_node_per_s"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect();
        plot = plot.series(&name, Style::Line, points);
    }
    report.plots.push(("traffic.svg".into(), plot));
    Ok(report)
}

/// (observer, member name, state, Unix ms) of one member event.
type MemberEvent = (usize, String, String, f64);

/// Every node's events, followed on threads: the first time each observer
/// reported a member dead.
struct Followed {
    seen: std::sync::Arc<std::sync::Mutex<Vec<MemberEvent>>>,
}

fn follow_all(tb: &Testbed) -> Result<Followed, TestbedError> {
    let followed = Followed {
        seen: Default::default(),
    };
    for i in 0..tb.nodes.len() {
        followed.follow(tb, i)?;
    }
    Ok(followed)
}

impl Followed {
    fn follow(&self, tb: &Testbed, i: usize) -> Result<(), TestbedError> {
        let rx = tb.follow_events(i)?;
        let seen = self.seen.clone();
        std::thread::spawn(move || {
            while let Ok(e) = rx.recv() {
                if e.kind == "member" {
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((i, e.name, e.state, e.at_ms as f64));
                }
            }
        });
        Ok(())
    }

    /// When `observer` first reported the member named `name` dead after
    /// `since_ms`, as a delay (ms).
    fn first_dead(&self, observer: usize, name: &str, since_ms: f64) -> Option<f64> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(o, n, s, at)| *o == observer && n == name && s == "dead" && *at >= since_ms)
            .map(|(_, _, _, at)| at - since_ms)
            .reduce(f64::min)
    }
}

/// Datagrams per second the `spray` scenario sends to each node.
pub const SPRAY_PER_NODE: u64 = 4000;

/// `spray`: from the client namespace (no member of the overlay), every
/// node's datagram socket gets [`SPRAY_PER_NODE`] datagrams a second for
/// `--duration`: random bytes of every length up to 1 500, datagrams with a
/// well-formed header (a random key index and counter) and a random body,
/// and datagrams over the size limit. Measured: CPU per node before and
/// during, what the nodes dropped, and whether anyone was suspected or
/// declared dead.
fn spray(opts: &Options) -> Result<Report, TestbedError> {
    use rand::RngCore;
    let mut report = new_report(Scenario::Spray, opts, opts.loss);
    report.sessions = 0;
    let mut quiet = opts.clone();
    quiet.sessions = 0;
    let h = prepare(&quiet, &mut report)?;
    let n = h.tb.nodes.len();
    let targets: Vec<std::net::SocketAddr> = (0..n)
        .map(|i| {
            std::net::SocketAddr::from((
                crate::testbed::node_addr(i),
                crate::testbed::QUIC_PORT + 1,
            ))
        })
        .collect();
    eprintln!("baseline for 5 s ...");
    let before = h.usage_over(Duration::from_secs(5))?;
    let dropped_before = dropped(&h)?;
    let since = unix_ms();
    eprintln!(
        "spraying {} datagrams/s at each of {n} nodes for {:?} ...",
        SPRAY_PER_NODE, opts.duration
    );
    let duration = opts.duration;
    let seed = opts.seed;
    let sender = h.tb.in_client(move || {
        std::thread::spawn(move || -> std::io::Result<u64> {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            socket.set_nonblocking(true)?;
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut buf = vec![0u8; 1500];
            let start = Instant::now();
            let mut sent = 0u64;
            let per_tick = (SPRAY_PER_NODE * targets.len() as u64 / 100).max(1);
            while start.elapsed() < duration {
                let tick = Instant::now();
                for k in 0..per_tick {
                    let to = targets[(k as usize) % targets.len()];
                    let len = match k % 3 {
                        // Random bytes of any length.
                        0 => rng.random_range(1..1500),
                        // A well-formed header, a random key index.
                        1 => rng.random_range(22..200),
                        // Over the size limit.
                        _ => rng.random_range(1201..1500),
                    };
                    rng.fill_bytes(&mut buf[..len]);
                    if socket.send_to(&buf[..len], to).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
            }
            Ok(sent)
        })
    })?;
    let during = h.usage_over(opts.duration)?;
    let sent = sender
        .join()
        .map_err(|_| TestbedError::Invalid("the sprayer panicked".into()))??;
    sleep(Duration::from_secs(2))?;
    let dropped_after = dropped(&h)?;
    let suspicions =
        h.events_where(|e| e.kind == "member" && e.state == "suspect" && e.at_ms >= since);
    let deaths = h.events_where(|e| e.kind == "member" && e.state == "dead" && e.at_ms >= since);
    let cpu_before = Summary::of(&before.cpu_pct);
    let cpu_during = Summary::of(&during.cpu_pct);
    let counted = dropped_after.saturating_sub(dropped_before);
    report.false_positives = Some(deaths.len() as u64);
    report.cpu_pct = Some(cpu_during);
    report.rss_mb = Some(Summary::of(&during.rss_mb));
    let line = format!(
        "{sent} datagrams sprayed ({:.0}/s per node); {counted} counted as dropped by the nodes; \
         CPU per node p50 {} -> {} % (max {} %); {} suspicions, {} deaths",
        sent as f64 / opts.duration.as_secs_f64() / n as f64,
        cpu_before.p50.map(fmt_num).unwrap_or_default(),
        cpu_during.p50.map(fmt_num).unwrap_or_default(),
        cpu_during.max.map(fmt_num).unwrap_or_default(),
        suspicions.len(),
        deaths.len()
    );
    eprintln!("{line}");
    report.timeline.push(line);
    report.details = json!({"sprayed": sent, "dropped_counted": counted,
        "per_node_per_s": sent as f64 / opts.duration.as_secs_f64() / n as f64,
        "cpu_before": cpu_before, "cpu_during": cpu_during,
        "suspicions": suspicions.len(), "deaths": deaths.len()});
    report.targets.push(Target::at_most(
        "healthy nodes declared dead during the spray",
        Some(deaths.len() as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_most(
        "healthy nodes suspected during the spray",
        Some(suspicions.len() as f64),
        0.0,
        "",
    ));
    report.targets.push(Target::at_least(
        "sprayed datagrams the nodes counted as dropped (fraction)",
        Some(if sent == 0 {
            0.0
        } else {
            (counted as f64 / sent as f64 * 100.0).round() / 100.0
        }),
        0.95,
        "",
    ));
    report.targets.push(Target::at_most(
        "CPU per node under the spray (max)",
        cpu_during.max,
        targets::SPRAY_CPU_PCT,
        "% of a core",
    ));
    Ok(report)
}

/// Datagrams every node counted as dropped so far: the sum of their
/// `baton_dropped_messages_total` (every reason together).
fn dropped(h: &Harness) -> Result<u64, TestbedError> {
    Ok(metric_sums(h, &["baton_dropped_messages_total"])?[0])
}

/// For each metric family named, the sum over every node of its samples:
/// one GET of `/metrics` per node. A node whose `/metrics` cannot be read
/// is an error, not a zero.
fn metric_sums(h: &Harness, names: &[&str]) -> Result<Vec<u64>, TestbedError> {
    let mut sums = vec![0.0f64; names.len()];
    for i in 0..h.tb.nodes.len() {
        let text = h.tb.get_text(i, "/metrics")?;
        for (sum, name) in sums.iter_mut().zip(names) {
            *sum += metric_sum(&text, name);
        }
    }
    Ok(sums.into_iter().map(|s| s as u64).collect())
}

/// The sum of the samples of the metric family `name` in a `/metrics`
/// text (every label set; not other families that merely begin with it).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{WALK_BYTES_PER_PEER, metric_sum, minority_with_most_primaries, steady_bytes};
    use serde_json::json;

    #[test]
    fn a_partition_cuts_away_the_consecutive_nodes_holding_the_most_primaries() {
        // 8 nodes, groups of 3 among n2..n8 (indices 1..=7, wrapping).
        let primaries = [Some(1), Some(5), Some(6), Some(7), Some(0), None, Some(6)];
        // 5, 6, 7 hold four sessions; every other group fewer.
        assert_eq!(
            minority_with_most_primaries(&primaries, 8, 3, 1),
            vec![5, 6, 7]
        );
        // Groups wrap from n8 to n2: 6, 7, 1 and 7, 1, 2 both hold three;
        // the first from `from` (1, going up) is 6, 7, 1.
        let wrap = [Some(7), Some(1), Some(6), Some(2)];
        assert_eq!(minority_with_most_primaries(&wrap, 8, 3, 1), vec![6, 7, 1]);
        // A tie is broken by the start nearest `from`, going up.
        let even = [Some(2), Some(5)];
        assert_eq!(minority_with_most_primaries(&even, 8, 1, 4), vec![5]);
        assert_eq!(minority_with_most_primaries(&even, 8, 1, 6), vec![2]);
        // No session primaried anywhere but n1: the group from `from`.
        assert_eq!(
            minority_with_most_primaries(&[Some(0)], 8, 3, 4),
            vec![4, 5, 6]
        );
    }

    #[test]
    fn steady_traffic_spreads_a_walk_over_its_period_not_over_the_window() {
        // A 30 s window of 64 nodes that held one walk of 2.3 MB: 1201 B/s
        // of libp2p in the window; at one walk per 600 s per group the
        // share is 2.3 MB / 600 s / 64 nodes = 60 B/s.
        let caught = json!({"nodes": 64, "bytes_per_node_per_s": 2640.0,
            "bytes_by_class": {"libp2p": 1201.0}, "walks": 1,
            "libp2p_bytes_per_walk": 2_304_000.0});
        assert_eq!(steady_bytes(&caught), Some(1439.0 + 60.0));
        // No walk in the window: the measured cost per peer stands in.
        let missed = json!({"nodes": 8, "bytes_per_node_per_s": 1368.0,
            "bytes_by_class": {"libp2p": 0.0}, "walks": 0});
        let share = (WALK_BYTES_PER_PEER * 7.0 / 600.0 / 8.0).round();
        assert_eq!(steady_bytes(&missed), Some(1368.0 + share));
        // A walk the window cut short counts as a whole one.
        let cut = json!({"nodes": 8, "bytes_per_node_per_s": 1400.0,
            "bytes_by_class": {"libp2p": 30.0}, "walks": 1, "libp2p_bytes_per_walk": 900.0});
        assert_eq!(steady_bytes(&cut), Some(1370.0 + share));
        // A report from before walks were counted, or a node alone, says nothing.
        assert_eq!(
            steady_bytes(&json!({"nodes": 8, "bytes_per_node_per_s": 1.0})),
            None
        );
        let alone = json!({"nodes": 1, "bytes_per_node_per_s": 1.0, "walks": 3});
        assert_eq!(steady_bytes(&alone), None);
    }

    #[test]
    fn metric_sum_adds_the_samples_of_the_named_family_only() {
        let text = "# HELP baton_dropped_messages_total Datagrams dropped.\n\
                    # TYPE baton_dropped_messages_total counter\n\
                    baton_dropped_messages_total 7\n\
                    baton_dropped_perf_summaries_total 3\n\
                    baton_datagram_drops_total{reason=\"bad_tag\"} 2\n\
                    baton_datagram_drops_total{reason=\"replayed\"} 5.5\n";
        assert_eq!(metric_sum(text, "baton_dropped_messages_total"), 7.0);
        assert_eq!(metric_sum(text, "baton_datagram_drops_total"), 7.5);
        assert_eq!(metric_sum(text, "baton_dropped"), 0.0, "no prefix match");
        assert_eq!(metric_sum(text, "baton_nothing"), 0.0);
    }
}
