//! In-process: an `exec` command that keeps exiting on its primary is given
//! up after a bounded number of quick restarts, the session moves to its
//! backup, and the failure is there for the operator on the node where it
//! happened: the session's view (state, restarts, last exit, stderr) through
//! the HTTP API, `restarted` and `failed` events, and the metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use baton_node::Node;
use baton_node::cli::ApiClient;
use baton_node::state::SessionCommand;
use baton_node::views::{Event, Session};
use baton_tests::{TempDir, dial_addr, eventually, loopback_config};
use tokio::sync::oneshot;

/// A node whose `play` template runs `command`.
async fn start(name: &str, dir: &TempDir, command: &str, extra: &[&str]) -> Node {
    let config = dir.0.join("batond.toml");
    std::fs::write(
        &config,
        format!("[services.exec]\nplay = {command:?}\n[sessions]\nconsent = false\n"),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut flags = vec!["--config", &config];
    flags.extend(extra);
    let data = dir.0.join("data");
    Node::start(loopback_config(name, &data, &flags))
        .await
        .expect("node starts")
}

async fn get_session(api: SocketAddr, id: &str) -> Session {
    let path = format!("/v1/sessions/{id}");
    tokio::task::spawn_blocking(move || {
        ApiClient::new(&api.to_string(), None)
            .expect("loopback address")
            .get(&path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    })
    .await
    .expect("request thread")
}

async fn metrics(api: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        ApiClient::new(&api.to_string(), None)
            .expect("loopback address")
            .get_text("/metrics")
            .expect("GET /metrics")
    })
    .await
    .expect("request thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_keeps_exiting_hands_its_session_to_the_backup() {
    let (dir_a, dir_b) = (TempDir::new("exec-a"), TempDir::new("exec-b"));
    let a = start(
        "a",
        &dir_a,
        "sh -c 'echo cannot read the clip >&2; exit 3'",
        &[],
    )
    .await;
    let seed = dial_addr(&a).await;
    let b = start("b", &dir_b, "sleep 60", &["--bootstrap", &seed]).await;
    let alive = |n: &Node| n.shared.members.iter().any(|m| m.state == "alive");
    assert!(
        eventually(Duration::from_secs(20), || alive(&a) && alive(&b)).await,
        "the two nodes see each other"
    );
    let mut events = a.shared.events.subscribe();

    let (reply, answer) = oneshot::channel();
    a.shared
        .commands
        .send(SessionCommand::Open {
            service: "exec".into(),
            client: "127.0.0.1:5004".into(),
            params: BTreeMap::from([("template".to_string(), "play".to_string())]),
            reply,
        })
        .await
        .expect("driver runs");
    let opened: Session = answer.await.unwrap().expect("the session opens");
    let (a_id, b_id) = (a.peer_id.to_base58(), b.peer_id.to_base58());
    assert_eq!(
        (opened.primary.as_str(), &opened.backups[..]),
        (a_id.as_str(), &[b_id.clone()][..])
    );
    let id = opened.id.clone();

    // Five quick exits take about 1.5 s; then b runs it.
    let moved = eventually(Duration::from_secs(10), || {
        b.shared
            .sessions
            .get(&id)
            .is_some_and(|s| s.primary == b_id && s.hosted_here)
    })
    .await;
    assert!(moved, "the backup took the session over");
    let on_b = b.shared.sessions.get(&id).unwrap().clone();
    let handover = on_b.history.last().expect("b saw the move");
    assert_eq!(handover.primary, b_id);
    // Nodes are named as `baton members` shows them, not by a compact id.
    let a_label = format!("a (…{})", &a_id[a_id.len() - 8..]);
    let b_label = format!("b (…{})", &b_id[b_id.len() - 8..]);
    assert!(
        handover
            .reason
            .starts_with(&format!("service failed on {a_label}: "))
            && handover.reason.contains("gave up after 5 quick exits"),
        "{:?}",
        on_b.history
    );
    let running = on_b.instance.expect("b shows its instance");
    assert_eq!((running.state.as_str(), running.restarts), ("running", 0));

    // Where it failed, the API shows why.
    let on_a = get_session(a.api_addr, &id).await;
    assert!(!on_a.hosted_here);
    let failed = on_a.instance.expect("a keeps the failed instance");
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.restarts, 4);
    assert_eq!(failed.last_exit.as_deref(), Some("exit status: 3"));
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 5 quick exits"),
        "{failed:?}"
    );
    assert_eq!(failed.stderr, vec!["cannot read the clip"; 5]);

    let mut seen: Vec<Event> = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.id == id {
            seen.push(event);
        }
    }
    let states: Vec<&str> = seen.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "started",
            "restarted",
            "restarted",
            "restarted",
            "restarted",
            "failed",
            "stopped"
        ],
        "{seen:#?}"
    );
    assert_eq!(
        seen[1].reason.as_deref(),
        Some("the command ended (exit status: 3); restart 1")
    );
    assert!(
        seen[5]
            .reason
            .as_deref()
            .unwrap()
            .ends_with(&format!("handed to {b_label}")),
        "{:?}",
        seen[5]
    );

    let text = metrics(a.api_addr).await;
    assert!(
        text.contains("\nbaton_service_restarts_total 4\n"),
        "{text}"
    );
    assert!(
        text.contains("\nbaton_service_failures_total 1\n"),
        "{text}"
    );

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_is_missing_at_open_shows_a_failed_event_saying_why() {
    let dir = TempDir::new("exec-missing");
    let a = start("a", &dir, "/nonexistent/baton-test-program {client}", &[]).await;
    let mut events = a.shared.events.subscribe();
    let (reply, answer) = oneshot::channel();
    a.shared
        .commands
        .send(SessionCommand::Open {
            service: "exec".into(),
            client: "127.0.0.1:5004".into(),
            params: BTreeMap::from([("template".to_string(), "play".to_string())]),
            reply,
        })
        .await
        .expect("driver runs");
    let refused = answer.await.unwrap().expect_err("the open fails");
    assert_eq!(refused.status, 500, "{refused:?}");
    let mut seen: Vec<Event> = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.kind == "session" {
            seen.push(event);
        }
    }
    let states: Vec<&str> = seen.iter().map(|e| e.state.as_str()).collect();
    assert!(states.contains(&"failed"), "{seen:#?}");
    let failed = seen.iter().find(|e| e.state == "failed").unwrap();
    let reason = failed.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("the service did not start: ") && reason.contains("baton-test-program"),
        "{reason}"
    );
    // The failure comes before the session stops.
    let at = |state: &str| states.iter().position(|s| *s == state);
    assert!(
        at("failed") < at("stopped") || at("stopped").is_none(),
        "{states:?}"
    );
    a.shutdown().await;
}
