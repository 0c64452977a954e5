//! `testnet demo`: the local demonstration. Five real `batond` processes on
//! loopback (no root needed), a few `rtp-audio` sessions towards local RTP
//! receivers, then the primary of one session is killed: the demo shows who
//! detected it and when, which backup took over, and the gap each receiver
//! heard; then `baton members` and `baton sessions` as they stand.

use std::time::{Duration, Instant, SystemTime};

use crate::rtp_receiver::RtpReceiver;
use baton_node::views::{OpenRequest, Session, Status};

use crate::local::{LocalCluster, LocalError, bin_dir};

/// Demo parameters.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Nodes to start.
    pub nodes: usize,
    /// Sessions to open.
    pub sessions: usize,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn step(text: &str) {
    println!("\n==> {text}");
}

/// Runs the demo, printing as it goes.
pub fn run(config: &DemoConfig) -> Result<(), LocalError> {
    let n = config.nodes.max(3);
    step(&format!(
        "starting {n} batond processes on 127.0.0.1 (mDNS off, bootstrapped from n0)"
    ));
    let started = Instant::now();
    let cluster = LocalCluster::start(n, &[])?;
    let converged = cluster.wait_converged(Duration::from_secs(30))?;
    println!(
        "    every node sees the {} others alive after {converged:.1?}",
        n - 1
    );

    step(&format!(
        "opening {} rtp-audio sessions towards local RTP receivers",
        config.sessions
    ));
    let mut receivers = Vec::new();
    let mut sessions = Vec::new();
    for s in 0..config.sessions {
        let receiver = RtpReceiver::bind("127.0.0.1:0")?;
        let body = OpenRequest {
            service: "rtp-audio".to_owned(),
            client: receiver.local_addr().to_string(),
            params: Default::default(),
        };
        let view: Session = cluster.post(s % n, "/v1/sessions", &body)?;
        sessions.push(view.id);
        receivers.push(receiver);
    }
    // Let every node learn the sessions and the streams start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && receivers.iter().any(|r| r.len() < 25) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = node_names(&cluster);
    for (id, receiver) in sessions.iter().zip(&receivers) {
        let view: Session = cluster.get(0, &format!("/v1/sessions/{id}"))?;
        let backups: Vec<String> = view.backups.iter().map(|p| name_of(&names, p)).collect();
        println!(
            "    session {}…  primary {}  backups [{}]  -> {} ({} packets so far)",
            &id[..8.min(id.len())],
            name_of(&names, &view.primary),
            backups.join(", "),
            receiver.local_addr(),
            receiver.len()
        );
    }

    let target = &sessions[0];
    let view: Session = cluster.get(0, &format!("/v1/sessions/{target}"))?;
    let primary_id = view.primary;
    let victim = (0..n)
        .find(|i| {
            cluster
                .get::<Status>(*i, "/v1/status")
                .is_ok_and(|s| s.id == primary_id)
        })
        .ok_or_else(|| LocalError::Timeout("cannot find the primary".into()))?;
    let survivors: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    let streams: Vec<_> = survivors
        .iter()
        .map(|i| cluster.follow_events(*i))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    step(&format!(
        "kill -9 {} (primary of session {}…)",
        cluster.nodes[victim].name,
        &target[..8]
    ));
    let killed_ms = unix_ms();
    let killed_at = Instant::now();
    let mut cluster = cluster;
    cluster.kill(victim);

    for (rx, i) in streams.iter().zip(&survivors) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = None;
        while seen.is_none() && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(e) if e.id == primary_id && e.state == "dead" => {
                    seen = Some(e.at_ms as f64);
                }
                _ => {}
            }
        }
        match seen {
            Some(at) => println!(
                "    {} declared {} dead after {:.0} ms",
                cluster.nodes[*i].name,
                cluster.nodes[victim].name,
                at - killed_ms
            ),
            None => println!(
                "    {} did not report it dead within 10 s",
                cluster.nodes[*i].name
            ),
        }
    }

    // Which backup took over, and what the clients heard.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut new_primary = None;
    while new_primary.is_none() && Instant::now() < deadline {
        if let Ok(v) = cluster.get::<Session>(survivors[0], &format!("/v1/sessions/{target}"))
            && v.primary != primary_id
        {
            new_primary = Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match &new_primary {
        Some(v) => println!(
            "    {} took session {}… over (epoch {}): {}",
            name_of(&names, &v.primary),
            &target[..8],
            v.epoch,
            v.reason
        ),
        None => println!("    no backup took the session over within 10 s"),
    }
    std::thread::sleep(Duration::from_secs(2));
    step("what each client heard around the kill");
    for (id, receiver) in sessions.iter().zip(&receivers) {
        let report = receiver.report(killed_at - Duration::from_secs(2)..);
        println!(
            "    session {}…: longest gap {:.0} ms, {} packets lost, {} stream(s), {} sender(s)",
            &id[..8.min(id.len())],
            report.longest_gap_ms,
            report.lost,
            report.ssrcs.len(),
            report.sources.len()
        );
    }

    let survivor = survivors[0];
    let api = cluster.nodes[survivor].api.to_string();
    let baton = bin_dir().join("baton");
    for command in ["members", "sessions"] {
        step(&format!("baton --api {api} {command}"));
        match std::process::Command::new(&baton)
            .args(["--api", &api, command])
            .output()
        {
            Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
            Err(e) => println!("    cannot run {}: {e}", baton.display()),
        }
    }
    step(&format!(
        "done in {:.1?}; stopping the nodes",
        started.elapsed()
    ));
    Ok(())
}

fn node_names(cluster: &LocalCluster) -> Vec<(String, String)> {
    (0..cluster.nodes.len())
        .filter_map(|i| {
            let status: Status = cluster.get(i, "/v1/status").ok()?;
            Some((status.id, cluster.nodes[i].name.clone()))
        })
        .collect()
}

fn name_of(names: &[(String, String)], id: &str) -> String {
    names
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| {
            id.chars()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        })
}
