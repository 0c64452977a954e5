//! In-process: the `/metrics` of real nodes on 127.0.0.1 passes `promtool
//! check metrics`, its histograms measure what they say (probe RTTs of a
//! live overlay, a killed primary's way from suspect to dead, its session's
//! takeover up to the first packet), and every metric the alert rules and
//! the dashboard in `deploy/` query is one a node exports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use baton_node::Node;
use baton_node::cli::ApiClient;
use baton_node::state::SessionCommand;
use baton_node::views::Session;
use baton_testnet::rtp_receiver::RtpReceiver;
use baton_tests::{
    TempDir, dial_addr, eventually, loopback_config, repo_root, require_tool, run_with_input,
};
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

async fn scrape(api: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        ApiClient::new(&api.to_string(), None)
            .expect("loopback address")
            .get_text("/metrics")
            .expect("GET /metrics")
    })
    .await
    .expect("scrape thread")
}

/// The value of the sample written exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every `baton_*` and `libp2p_*` metric name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["baton_", "libp2p_"] {
        for (i, _) in text.match_indices(prefix) {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_metrics_pass_promtool_time_probes_deaths_and_takeovers_and_cover_deploy() {
    let test = "real_metrics_pass_promtool_time_probes_deaths_and_takeovers_and_cover_deploy";
    if !require_tool(test, "promtool", "prometheus") {
        return;
    }
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("metrics-{i}")))
        .collect();
    let first = start("m0", &dirs[0], &[]).await;
    let seed = dial_addr(&first).await;
    let mut nodes = vec![first];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(start(&format!("m{i}"), dir, &["--bootstrap", &seed]).await);
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

    let receiver = RtpReceiver::bind("127.0.0.1:0").expect("bind receiver");
    let view = open(&nodes[0], receiver.local_addr().to_string()).await;
    let id = view.id.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            nodes.iter().all(|n| {
                n.shared
                    .sessions
                    .get(&id)
                    .is_some_and(|s| s.epoch == view.epoch)
            })
        })
        .await,
        "the session record reaches every node"
    );
    assert!(
        eventually(Duration::from_secs(5), || receiver.len() >= 10).await,
        "the primary streams"
    );
    let primary = view.primary.clone();
    let victim = nodes
        .iter()
        .position(|n| n.peer_id.to_base58() == primary)
        .expect("primary is one of ours");
    nodes.remove(victim).kill();
    let taken_over = eventually(Duration::from_secs(10), || {
        nodes
            .iter()
            .any(|n| n.shared.sessions.get(&id).is_some_and(|s| s.hosted_here))
    })
    .await;
    assert!(taken_over, "a backup takes the session over");
    let new_primary = nodes
        .iter()
        .position(|n| n.shared.sessions.get(&id).is_some_and(|s| s.hosted_here))
        .expect("someone hosts it");
    let before = receiver.len();
    assert!(
        eventually(Duration::from_secs(5), || receiver.len() > before).await,
        "the stream resumes from the new primary"
    );
    assert!(
        eventually(Duration::from_secs(10), || nodes.iter().all(|n| n
            .shared
            .members
            .get(&primary)
            .is_some_and(|m| m.state == "dead")))
        .await,
        "every survivor declares the killed primary dead"
    );

    let mut texts = Vec::new();
    for node in &nodes {
        let text = scrape(node.api_addr).await;
        let (clean, said) = run_with_input("promtool", &["check", "metrics"], &text);
        assert!(
            clean && said.trim().is_empty(),
            "promtool check metrics: {said}\n{text}"
        );
        let probes = sample(&text, "baton_probe_rtt_seconds_count").unwrap_or(0.0);
        assert!(probes > 0.0, "answered probes are timed:\n{text}");
        let build = text
            .lines()
            .find(|l| l.starts_with("baton_build_info{"))
            .unwrap_or_else(|| panic!("no baton_build_info in\n{text}"));
        let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(build.contains(&version) && build.ends_with(" 1"), "{build}");
        let probe_bytes = sample(
            &text,
            "baton_traffic_bytes_total{class=\"probe\",direction=\"out\"}",
        );
        assert!(
            probe_bytes.unwrap_or(0.0) > 0.0,
            "probes are counted by class:\n{text}"
        );
        assert!(sample(&text, "baton_connections").is_some(), "{text}");
        assert_eq!(
            sample(&text, "baton_fenced"),
            Some(0.0),
            "survivors hear each other"
        );
        texts.push(text);
    }
    let deaths: f64 = texts
        .iter()
        .map(|t| sample(t, "baton_suspicion_to_dead_seconds_count").unwrap_or(0.0))
        .sum();
    assert!(
        deaths >= 1.0,
        "a survivor timed the killed primary from suspect to dead"
    );
    // The claim-to-first-packet observation lands when the instance sends,
    // a moment after the takeover.
    let takeover = "baton_session_first_packet_seconds_count{reason=\"takeover\"}";
    let mut timed = sample(&texts[new_primary], takeover).unwrap_or(0.0);
    for _ in 0..20 {
        if timed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        timed = sample(&scrape(nodes[new_primary].api_addr).await, takeover).unwrap_or(0.0);
    }
    assert_eq!(timed, 1.0, "the takeover is timed to its first packet");
    let text = scrape(nodes[new_primary].api_addr).await;
    eprintln!(
        "takeover claim to first packet: {:.1} ms; suspicion to death: {deaths} timed; \
         connections open: {:?}",
        sample(
            &text,
            "baton_session_first_packet_seconds_sum{reason=\"takeover\"}"
        )
        .unwrap_or(f64::NAN)
            * 1e3,
        sample(&text, "baton_connections"),
    );

    // Every metric the alert rules and the dashboard query exists.
    let exported: String = texts.concat();
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/baton.json"] {
        let path = repo_root().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} queries metrics");
        for name in names {
            let found = exported.lines().any(|l| {
                l.strip_prefix(&name)
                    .is_some_and(|r| r.starts_with([' ', '{']))
            });
            assert!(found, "{file} queries {name}, which no node exports");
        }
    }

    for node in nodes {
        node.shutdown().await;
    }
}
