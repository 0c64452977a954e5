//! `testnet bench`: measures real `batond` processes on loopback: idle
//! memory and CPU per node, monitoring traffic per node (on the wire, from
//! the loopback interface counters, and as SWIM payload), and the time from a
//! `kill -9` until every survivor reports the node dead on `/v1/events`.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::rtp_receiver::RtpReceiver;
use baton_node::views::{OpenRequest, Session, Status};

use crate::local::{LocalCluster, LocalError, loopback_bytes};
use crate::sim::stats::Summary;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Nodes to start.
    pub nodes: usize,
    /// Time from convergence until the idle measurement starts, so that
    /// start-up work (the first Kademlia walks, the first coordinate
    /// exchanges, the first anti-entropy rounds) is not counted as idle.
    pub settle: Duration,
    /// Length of the idle measurement.
    pub idle: Duration,
    /// Kills to time (each victim is restarted afterwards).
    pub kills: usize,
}

/// How often the idle phase samples each node's CPU time for the series.
const CPU_WINDOW: Duration = Duration::from_secs(10);

/// The measured results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Nodes started.
    pub nodes: usize,
    /// Time until every node saw every other alive, at start.
    pub converge_ms: f64,
    /// Length of the idle measurement, seconds.
    pub idle_s: f64,
    /// Resident memory per node at the end of the idle phase, MB.
    pub rss_mb: Summary,
    /// CPU per node during the idle phase, percent of one core.
    pub cpu_pct: Summary,
    /// The idle phase as a time series: CPU per node (mean over the nodes,
    /// percent of one core) in each consecutive window of
    /// `cpu_window_s` seconds, so a periodic task shows as a bump.
    pub cpu_series_pct: Vec<f64>,
    /// Length of each window of `cpu_series_pct`, seconds.
    pub cpu_window_s: f64,
    /// Seconds between convergence and the start of the idle phase.
    pub settle_s: f64,
    /// Bytes per node per second on the wire (loopback counters: UDP, IP,
    /// QUIC and the payload), received side.
    pub bytes_per_node_per_s: f64,
    /// SWIM payload bytes sent per node per second (CBOR, no framing).
    pub payload_bytes_per_node_per_s: f64,
    /// Kill until every survivor reported the victim dead, ms.
    pub detection_ms: Summary,
    /// Restart until every node saw the victim alive again, ms.
    pub rejoin_ms: Summary,
    /// Longest interval without packets at the client of a session whose
    /// primary was killed (the gap a user hears), ms.
    pub gap_ms: Summary,
    /// From the first survivor's dead declaration to the first packet from
    /// the new primary, ms.
    pub reinstantiation_ms: Summary,
    /// Packets lost by those clients around the kill.
    pub lost_packets: Summary,
    /// Sessions whose stream did not resume within 10 s.
    pub sessions_lost: usize,
    /// The whole run, start-up to the last rejoin, seconds of wall time.
    pub wall_s: f64,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn payload_bytes_out(cluster: &LocalCluster, i: usize) -> f64 {
    crate::http::get_text(&cluster.nodes[i].api.to_string(), "/metrics")
        .map(|text| crate::http::bytes_out(&text))
        .unwrap_or(0.0)
}

/// Runs the benchmark, printing progress to stderr.
pub fn run(config: &BenchConfig) -> Result<BenchReport, LocalError> {
    let run_started = Instant::now();
    let n = config.nodes.max(2);
    eprintln!("starting {n} batond processes on 127.0.0.1 ...");
    let mut cluster = LocalCluster::start(n, &[])?;
    let converge = cluster.wait_converged(Duration::from_secs(30))?;
    eprintln!(
        "membership converged in {converge:?}; settling for {:?} ...",
        config.settle
    );
    std::thread::sleep(config.settle);

    eprintln!("measuring idle nodes for {:?} ...", config.idle);
    let ticks_per_s = 100.0; // USER_HZ on Linux
    // The counters read over HTTP first: the CPU the nodes spend answering
    // must fall before the first window, not into it unaccounted.
    let payload_before: Vec<f64> = (0..n).map(|i| payload_bytes_out(&cluster, i)).collect();
    let lo_before = loopback_bytes();
    let before: Vec<Option<(u64, u64)>> = (0..n).map(|i| cluster.proc_usage(i)).collect();
    let started = Instant::now();
    let mut series = Vec::new();
    let mut window_start = before.clone();
    let mut window_at = started;
    while started.elapsed() < config.idle {
        let left = config.idle.saturating_sub(started.elapsed());
        std::thread::sleep(left.min(CPU_WINDOW));
        let now: Vec<Option<(u64, u64)>> = (0..n).map(|i| cluster.proc_usage(i)).collect();
        let at = Instant::now();
        let window = at.duration_since(window_at).as_secs_f64();
        let per_node: Vec<f64> = window_start
            .iter()
            .zip(&now)
            .filter_map(|(b, a)| match (b, a) {
                (Some((_, t0)), Some((_, t1))) => {
                    Some(t1.saturating_sub(*t0) as f64 / ticks_per_s / window * 100.0)
                }
                _ => None,
            })
            .collect();
        if !per_node.is_empty() && window > 0.0 {
            let mean = per_node.iter().sum::<f64>() / per_node.len() as f64;
            series.push((mean * 100.0).round() / 100.0);
        }
        window_start = now;
        window_at = at;
    }
    let after: Vec<Option<(u64, u64)>> = (0..n).map(|i| cluster.proc_usage(i)).collect();
    let secs = started.elapsed().as_secs_f64();
    let lo_after = loopback_bytes();
    let payload_after: Vec<f64> = (0..n).map(|i| payload_bytes_out(&cluster, i)).collect();
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        if let (Some((_, t0)), Some((rss_kb, t1))) = (b, a) {
            rss.push(*rss_kb as f64 / 1024.0);
            cpu.push((t1.saturating_sub(*t0)) as f64 / ticks_per_s / secs * 100.0);
        }
    }
    let wire = match (lo_before, lo_after) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / n as f64 / secs,
        _ => f64::NAN,
    };
    let payload: f64 = payload_after
        .iter()
        .zip(&payload_before)
        .map(|(a, b)| a - b)
        .sum::<f64>()
        / n as f64
        / secs;

    let mut detections = Vec::new();
    let mut rejoins = Vec::new();
    let mut gaps = Vec::new();
    let mut reinstantiations = Vec::new();
    let mut lost = Vec::new();
    let mut sessions_lost = 0;
    for k in 0..config.kills {
        let victim = 1 + k % (n - 1);
        let victim_id = cluster.get::<Status>(victim, "/v1/status")?.id;
        let survivors: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
        // A session hosted by the victim, streaming to a local receiver.
        let receiver = RtpReceiver::bind("127.0.0.1:0")?;
        let body = OpenRequest {
            service: "rtp-audio".to_owned(),
            client: receiver.local_addr().to_string(),
            params: Default::default(),
        };
        let session: Session = cluster.post(victim, "/v1/sessions", &body)?;
        let hosted_by_victim = session.primary == victim_id;
        let flowing = Instant::now() + Duration::from_secs(5);
        while receiver.len() < 10 && Instant::now() < flowing {
            std::thread::sleep(Duration::from_millis(20));
        }
        let streams: Vec<_> = survivors
            .iter()
            .map(|i| cluster.follow_events(*i))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let killed_at = unix_ms();
        cluster.kill(victim);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut latest: f64 = 0.0;
        let mut earliest: f64 = f64::MAX;
        let mut all = true;
        for rx in &streams {
            let mut seen = None;
            while seen.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(event) => {
                        if event.id == victim_id && event.state == "dead" {
                            seen = Some(event.at_ms as f64);
                        }
                    }
                    Err(_) => break,
                }
            }
            match seen {
                Some(at) => {
                    latest = latest.max(at);
                    earliest = earliest.min(at);
                }
                None => all = false,
            }
        }
        if !all {
            return Err(LocalError::Timeout(format!(
                "kill {}: not every survivor reported {} dead",
                k + 1,
                cluster.nodes[victim].name
            )));
        }
        let detection = latest - killed_at;
        eprintln!(
            "kill {}/{}: {} declared dead by all {} survivors after {detection:.0} ms",
            k + 1,
            config.kills,
            cluster.nodes[victim].name,
            survivors.len()
        );
        detections.push(detection);
        if hosted_by_victim {
            let before = receiver.len();
            let deadline = Instant::now() + Duration::from_secs(10);
            while receiver.len() < before + 10 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if receiver.len() < before + 10 {
                sessions_lost += 1;
            } else {
                let report = receiver.report(..);
                gaps.push(report.longest_gap_ms);
                lost.push(report.lost as f64);
                if let Some(start_us) = report.longest_gap_start_unix_us {
                    let resumed_ms = start_us as f64 / 1e3 + report.longest_gap_ms;
                    reinstantiations.push(resumed_ms - earliest);
                }
                eprintln!(
                    "    its session resumed from a backup: gap {:.0} ms, {} packets lost",
                    report.longest_gap_ms, report.lost
                );
            }
        }
        let restarted = Instant::now();
        cluster.restart(victim)?;
        cluster.wait_converged(Duration::from_secs(30))?;
        rejoins.push(restarted.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(1));
    }

    Ok(BenchReport {
        nodes: n,
        converge_ms: (converge.as_secs_f64() * 1e3).round(),
        idle_s: (secs * 10.0).round() / 10.0,
        rss_mb: Summary::of(&rss),
        cpu_pct: Summary::of(&cpu),
        cpu_series_pct: series,
        cpu_window_s: CPU_WINDOW.as_secs_f64(),
        settle_s: config.settle.as_secs_f64(),
        bytes_per_node_per_s: wire.round(),
        payload_bytes_per_node_per_s: payload.round(),
        detection_ms: Summary::of(&detections),
        rejoin_ms: Summary::of(&rejoins),
        gap_ms: Summary::of(&gaps),
        reinstantiation_ms: Summary::of(&reinstantiations),
        lost_packets: Summary::of(&lost),
        sessions_lost,
        wall_s: (run_started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}
