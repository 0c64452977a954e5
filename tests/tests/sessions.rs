//! In-process: real nodes on 127.0.0.1 host an `rtp-audio` session towards a
//! local RTP receiver; the primary is killed and the first backup takes the
//! stream over, as the same stream (one SSRC, continuing sequence numbers).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_node::Node;
use baton_node::state::SessionCommand;
use baton_node::views::Session;
use baton_testnet::rtp_receiver::RtpReceiver;
use baton_tests::{TempDir, dial_addr, eventually, loopback_config};
use tokio::sync::oneshot;

async fn start(name: &str, dir: &TempDir, extra: &[&str]) -> Node {
    Node::start(loopback_config(name, &dir.0, extra))
        .await
        .expect("node starts")
}

async fn open(node: &Node, client: String) -> Session {
    let (reply, answer) = oneshot::channel();
    node.shared
        .commands
        .send(SessionCommand::Open {
            service: "rtp-audio".into(),
            client,
            params: BTreeMap::new(),
            reply,
        })
        .await
        .expect("driver runs");
    answer
        .await
        .expect("driver answers")
        .expect("session opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_the_kill_of_its_primary() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("sess-{i}"))).collect();
    let first = start("s0", &dirs[0], &[]).await;
    let seed = dial_addr(&first).await;
    let mut nodes = vec![first];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(start(&format!("s{i}"), dir, &["--bootstrap", &seed]).await);
    }
    let last_started = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || nodes.iter().all(|n| n
            .shared
            .members
            .iter()
            .filter(|m| m.state == "alive")
            .count()
            == 2))
        .await,
        "membership converges"
    );

    let receiver = RtpReceiver::bind("127.0.0.1:0").expect("bind receiver");
    let view = open(&nodes[0], receiver.local_addr().to_string()).await;
    assert_eq!(view.backups.len(), 2, "two backups: {view:?}");
    let id = view.id.clone();
    let everyone_knows = eventually(Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            n.shared
                .sessions
                .get(&id)
                .is_some_and(|s| s.epoch == view.epoch || s.primary != view.primary)
        })
    })
    .await;
    assert!(everyone_knows, "the session record reaches every node");
    let primary_id = nodes[0].shared.sessions.get(&id).unwrap().primary.clone();
    assert!(
        eventually(Duration::from_secs(5), || receiver.len() >= 25).await,
        "the primary streams"
    );
    let epoch_before = nodes[0].shared.sessions.get(&id).unwrap().epoch;
    let backups = nodes[0].shared.sessions.get(&id).unwrap().backups.clone();

    let victim = nodes
        .iter()
        .position(|n| n.peer_id.to_base58() == primary_id)
        .expect("primary is one of ours");
    let victim_label = format!(
        "{} (…{})",
        nodes[victim].shared.local.name,
        &primary_id[primary_id.len() - 8..]
    );
    // A node claims nothing for its first `resume_grace` (2 s): its map
    // may still be stale (protocol.md 7.12). The kill comes after that.
    tokio::time::sleep_until((last_started + Duration::from_millis(2500)).into()).await;
    let killed_at = Instant::now();
    nodes.remove(victim).kill();

    let taken_over = eventually(Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            n.shared
                .sessions
                .get(&id)
                .is_some_and(|s| s.primary != primary_id && s.epoch > epoch_before)
        })
    })
    .await;
    assert!(
        taken_over,
        "every survivor sees a new primary at a higher epoch"
    );
    let record = nodes[0].shared.sessions.get(&id).unwrap().clone();
    assert_eq!(record.primary, backups[0], "the first backup took over");
    // The reason names the dead node as `baton members` shows it.
    assert_eq!(
        record.reason,
        format!("takeover: primary {victim_label} is down")
    );
    assert_eq!(record.history.last().unwrap().reason, record.reason);

    let before = receiver.len();
    assert!(
        eventually(Duration::from_secs(5), || receiver.len() >= before + 25).await,
        "the stream resumes from the new primary"
    );
    let report = receiver.report(killed_at - Duration::from_secs(1)..);
    eprintln!(
        "failover: gap {:.0} ms, lost {} packets, ssrcs {:?}, sources {:?}",
        report.longest_gap_ms, report.lost, report.ssrcs, report.sources
    );
    assert_eq!(
        report.ssrcs.len(),
        1,
        "one continuous stream, not a new one"
    );
    assert_eq!(
        report.sources.len(),
        2,
        "sent by two clusters one after the other"
    );
    assert_eq!(report.mismatched_duplicates, 0);

    for node in nodes {
        node.shutdown().await;
    }
}

async fn report(node: &Node, id: &str, loss: f64, jitter_ms: f64) {
    let (reply, answer) = oneshot::channel();
    node.shared
        .commands
        .send(SessionCommand::Report {
            id: id.to_string(),
            report: baton_node::views::Report {
                loss,
                jitter_ms,
                rtt_ms: 1.0,
                packets: 50,
            },
            reply,
        })
        .await
        .expect("driver runs");
    answer
        .await
        .expect("driver answers")
        .expect("report accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_triggered_transfer_loses_no_packets() {
    let conf_dir = TempDir::new("transfer-conf");
    let conf = conf_dir.0.join("batond.toml");
    std::fs::write(
        &conf,
        "[sessions]\npoor_for = \"1s\"\nmin_dwell = \"2s\"\nmin_samples = 1\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("xfer-{i}"))).collect();
    let x = start("x", &dirs[0], &["--config", &conf]).await;
    let seed = dial_addr(&x).await;
    let y = start("y", &dirs[1], &["--config", &conf, "--bootstrap", &seed]).await;
    assert!(
        eventually(Duration::from_secs(20), || {
            x.shared.members.iter().any(|m| m.state == "alive")
                && y.shared.members.iter().any(|m| m.state == "alive")
        })
        .await
    );
    // Session A on x, session B on y, clients in the same location.
    let ra = RtpReceiver::bind("127.0.0.1:0").unwrap();
    let rb = RtpReceiver::bind("127.0.0.1:0").unwrap();
    let a = open(&x, ra.local_addr().to_string()).await;
    let b = open(&y, rb.local_addr().to_string()).await;
    assert_eq!(a.primary, x.peer_id.to_base58());
    assert_eq!(b.primary, y.peer_id.to_base58());
    // y serves that location well, x badly, for longer than poor_for.
    let started = Instant::now();
    let moved = loop {
        report(&y, &b.id, 0.0, 2.0).await;
        report(&x, &a.id, 0.2, 80.0).await;
        let primary = y.shared.sessions.get(&a.id).map(|s| s.primary.clone());
        let done = primary.as_deref() == Some(&y.peer_id.to_base58())
            && x.shared.sessions.get(&a.id).is_some_and(|s| !s.hosted_here)
            && y.shared.sessions.get(&a.id).is_some_and(|s| s.hosted_here);
        if done {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        moved,
        "the session moved to the peer that serves its location better"
    );
    let record = y.shared.sessions.get(&a.id).unwrap().clone();
    assert!(
        record
            .history
            .iter()
            .any(|m| m.reason.starts_with("transfer")),
        "{record:?}"
    );
    // Let the stream run on the new primary, then look at what the client got.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = ra.report(..);
    eprintln!(
        "transfer: {} packets, lost {}, duplicates {}, longest gap {:.0} ms, sources {:?}",
        got.packets, got.lost, got.duplicates, got.longest_gap_ms, got.sources
    );
    assert_eq!(got.lost, 0, "make-before-break: no packet lost");
    assert!(
        got.duplicates >= 1,
        "the old primary stopped only after the new one's first packet, which both sent"
    );
    assert_eq!(got.ssrcs.len(), 1);
    assert_eq!(
        got.sources.len(),
        2,
        "both clusters sent, one after the other"
    );
    assert_eq!(
        got.mismatched_duplicates, 0,
        "overlapping packets are identical"
    );
    x.shutdown().await;
    y.shutdown().await;
}

/// Asserts that what reached `receiver` after `from` is a paused stream's
/// consent probes only: at most one packet a second, each at least 0.9 s
/// after the one before.
fn assert_only_probes_after(receiver: &RtpReceiver, from: Instant, what: &str) {
    let after: Vec<Instant> = receiver
        .arrivals()
        .iter()
        .map(|a| a.at)
        .filter(|at| *at > from)
        .collect();
    let span = Instant::now() - from;
    assert!(
        after.len() as f64 <= span.as_secs_f64() + 1.0,
        "{what} sent {} packets in the {span:?} after its consent ran out",
        after.len()
    );
    for pair in after.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "{what} sent two packets {:?} apart after its consent ran out",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_consents_stops_receiving_on_its_primary_and_after_a_takeover() {
    // One API request names any address as a client: without consent the
    // overlay would stream there for ever, and a takeover would carry the
    // stream on. Here the client sends no RTCP and nobody reports for it.
    const FIRST: Duration = Duration::from_secs(3);
    const INTERVAL: Duration = Duration::from_secs(4);
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("consent-{i}")))
        .collect();
    let config = |i: usize, extra: &[&str]| {
        let mut c = loopback_config(&format!("c{i}"), &dirs[i].0, extra);
        c.sessions.consent.first = FIRST;
        c.sessions.consent.interval = INTERVAL;
        c.sessions.consent.grace = Duration::from_secs(60);
        c
    };
    let first = Node::start(config(0, &[])).await.expect("node starts");
    let seed = dial_addr(&first).await;
    let mut nodes = vec![first];
    for i in 1..3 {
        let node = Node::start(config(i, &["--bootstrap", &seed]))
            .await
            .expect("node starts");
        nodes.push(node);
    }
    assert!(
        eventually(Duration::from_secs(20), || nodes.iter().all(|n| n
            .shared
            .members
            .iter()
            .filter(|m| m.state == "alive")
            .count()
            == 2))
        .await,
        "membership converges"
    );

    // On its primary: the stream pauses once the first window has passed.
    let silent = RtpReceiver::bind_silent("127.0.0.1:0").expect("bind receiver");
    let opened = Instant::now();
    let view = open(&nodes[0], silent.local_addr().to_string()).await;
    assert!(
        eventually(Duration::from_secs(3), || !silent.is_empty()).await,
        "the stream starts"
    );
    tokio::time::sleep(FIRST + Duration::from_secs(4)).await;
    // Past the window, one probe a second at most (the client could still
    // answer one), not the stream.
    assert_only_probes_after(
        &silent,
        opened + FIRST + Duration::from_millis(1500),
        "the primary",
    );
    let paused = nodes
        .iter()
        .filter_map(|n| n.shared.sessions.get(&view.id))
        .any(|s| s.state != "active" || s.paused);
    assert!(paused, "the session shows the pause somewhere");

    // After a takeover: the backup grants a full interval, then pauses too.
    let silent = RtpReceiver::bind_silent("127.0.0.1:0").expect("bind receiver");
    let view = open(&nodes[1], silent.local_addr().to_string()).await;
    assert!(
        eventually(Duration::from_secs(3), || !silent.is_empty()).await,
        "the stream starts"
    );
    let primary = nodes
        .iter()
        .position(|n| n.peer_id.to_base58() == view.primary)
        .expect("primary is one of ours");
    let killed_at = Instant::now();
    nodes.remove(primary).kill();
    let sources = || {
        silent
            .arrivals()
            .iter()
            .map(|a| a.from)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        eventually(Duration::from_secs(10), || sources() == 2).await,
        "a backup took the stream over"
    );
    let took_over = silent
        .arrivals()
        .iter()
        .map(|a| a.at)
        .find(|at| *at > killed_at)
        .expect("packets after the kill");
    tokio::time::sleep(INTERVAL + Duration::from_secs(4)).await;
    assert_only_probes_after(
        &silent,
        took_over + INTERVAL + Duration::from_millis(1500),
        "the backup",
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sessions_view_goes_when_its_tombstone_is_collected() {
    let dir = TempDir::new("views");
    let mut config = loopback_config("v0", &dir.0, &[]);
    config.sessions.map.tombstone_ttl_ms = 500;
    config.sessions.gc_interval = Duration::from_millis(500);
    config.sessions.consent.required = false;
    let node = Node::start(config).await.expect("node starts");
    let receiver = RtpReceiver::bind_silent("127.0.0.1:0").expect("bind receiver");
    let view = open(&node, receiver.local_addr().to_string()).await;
    let (reply, answer) = oneshot::channel();
    node.shared
        .commands
        .send(SessionCommand::Close {
            id: view.id.clone(),
            reply,
        })
        .await
        .expect("driver runs");
    answer.await.expect("driver answers").expect("closed");
    assert!(
        eventually(Duration::from_secs(5), || node
            .shared
            .sessions
            .get(&view.id)
            .is_some_and(|s| s.state == "closed"))
        .await,
        "the closed session shows as closed"
    );
    // The tombstone goes after its TTL, the view at the next sweep (10 s).
    assert!(
        eventually(Duration::from_secs(15), || node
            .shared
            .sessions
            .get(&view.id)
            .is_none())
        .await,
        "the view of a collected session stays for ever"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_sent_to_a_backup_goes_on_to_the_primary_which_closes_the_session() {
    use baton_node::state::Closed;
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("fwd-{i}"))).collect();
    let first = start("f0", &dirs[0], &[]).await;
    let seed = dial_addr(&first).await;
    let second = start("f1", &dirs[1], &["--bootstrap", &seed]).await;
    let nodes = [first, second];
    assert!(
        eventually(Duration::from_secs(20), || nodes.iter().all(|n| n
            .shared
            .members
            .iter()
            .any(|m| m.state == "alive")))
        .await,
        "membership converges"
    );
    let receiver = RtpReceiver::bind_silent("127.0.0.1:0").expect("bind receiver");
    let view = open(&nodes[0], receiver.local_addr().to_string()).await;
    let primary = nodes
        .iter()
        .position(|n| n.peer_id.to_base58() == view.primary)
        .expect("primary is one of ours");
    let other = &nodes[1 - primary];
    assert!(
        eventually(Duration::from_secs(10), || other
            .shared
            .sessions
            .contains_key(&view.id))
        .await,
        "the other node knows the session"
    );
    let (reply, answer) = oneshot::channel();
    other
        .shared
        .commands
        .send(SessionCommand::Close {
            id: view.id.clone(),
            reply,
        })
        .await
        .expect("driver runs");
    match answer.await.expect("driver answers").expect("accepted") {
        Closed::Forwarded(to) => {
            assert_eq!(to.forwarded_to, view.primary);
            assert_eq!(to.forwarded_to_name, nodes[primary].shared.local.name);
        }
        Closed::Here(s) => panic!("a node that is not the primary closed it: {s:?}"),
    }
    assert!(
        eventually(Duration::from_secs(5), || nodes.iter().all(|n| n
            .shared
            .sessions
            .get(&view.id)
            .is_some_and(|s| s.state == "closed")))
        .await,
        "the primary closed the session, and every node sees it closed"
    );
    for node in nodes {
        node.shutdown().await;
    }
}
