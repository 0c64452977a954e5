//! In-process integration tests of the overlay: real nodes (libp2p QUIC on
//! 127.0.0.1, mDNS off) bootstrapped from one address.

use std::time::{Duration, Instant};

use baton_node::Node;
use baton_tests::{TempDir, dial_addr, eventually, loopback_config, state_of};

async fn start(name: &str, dir: &TempDir, extra: &[&str]) -> Node {
    Node::start(loopback_config(name, &dir.0, extra))
        .await
        .expect("node starts")
}

fn alive_members(node: &Node) -> usize {
    node.shared
        .members
        .iter()
        .filter(|m| m.state == "alive")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_and_a_killed_node_is_declared_dead_then_rejoins() {
    let dirs: Vec<TempDir> = (0..5)
        .map(|i| TempDir::new(&format!("overlay-{i}")))
        .collect();
    let first = start("n0", &dirs[0], &[]).await;
    let seed = dial_addr(&first).await;
    let mut nodes = vec![first];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        nodes.push(start(&format!("n{i}"), dir, &["--bootstrap", &seed]).await);
    }

    let converged = eventually(Duration::from_secs(20), || {
        nodes.iter().all(|n| alive_members(n) == 4)
    })
    .await;
    assert!(
        converged,
        "5 nodes bootstrapped from one reach full membership"
    );

    // Kill the last node abruptly: no leave, its connections just vanish.
    let victim = nodes.pop().expect("five nodes");
    let victim_id = victim.peer_id;
    let (_, incarnation_before) = state_of(&nodes[0], &victim).expect("known");
    let killed_at = Instant::now();
    victim.kill();
    let key = victim_id.to_base58();
    let all_dead = eventually(Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            n.shared
                .members
                .get(&key)
                .is_some_and(|m| m.state == "dead")
        })
    })
    .await;
    let detection = killed_at.elapsed();
    assert!(all_dead, "every survivor declares the killed node dead");
    eprintln!("detection of a killed node among 5: <= {detection:?}");

    // Restarted with the same data dir, it keeps its peer id and comes back
    // alive with a higher incarnation, refuting its own death.
    let restarted = start("n4", &dirs[4], &["--bootstrap", &seed]).await;
    assert_eq!(
        restarted.peer_id, victim_id,
        "identity is kept in the data dir"
    );
    let back = eventually(Duration::from_secs(15), || {
        nodes.iter().all(|n| {
            state_of(n, &restarted)
                .is_some_and(|(state, inc)| state == "alive" && inc > incarnation_before)
        })
    })
    .await;
    assert!(
        back,
        "the restarted node is alive again everywhere, at a higher incarnation"
    );

    restarted.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_overlay_or_network_key_are_refused() {
    let key_dir = TempDir::new("keys");
    let key_a = key_dir.0.join("a.key");
    let key_b = key_dir.0.join("b.key");
    std::fs::write(&key_a, "correct horse battery staple\n").unwrap();
    std::fs::write(&key_b, "another key entirely, 32 bytes!\n").unwrap();
    let key_a = key_a.display().to_string();
    let key_b = key_b.display().to_string();

    let dirs: Vec<TempDir> = (0..4)
        .map(|i| TempDir::new(&format!("refuse-{i}")))
        .collect();
    let secured = ["--overlay", "blue", "--network-key-file", key_a.as_str()];
    let a = start("a", &dirs[0], &secured).await;
    let seed = dial_addr(&a).await;
    let with_seed = |extra: &[&'static str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.push("--bootstrap".into());
        v.push(seed.clone());
        v
    };
    let friend_flags = with_seed(&["--overlay", "blue", "--network-key-file"]);
    let mut friend_flags: Vec<&str> = friend_flags.iter().map(String::as_str).collect();
    friend_flags.insert(3, key_a.as_str());
    let friend = start("friend", &dirs[1], &friend_flags).await;

    let other_overlay_flags = with_seed(&["--overlay", "red", "--network-key-file"]);
    let mut other_overlay_flags: Vec<&str> =
        other_overlay_flags.iter().map(String::as_str).collect();
    other_overlay_flags.insert(3, key_a.as_str());
    let stranger = start("stranger", &dirs[2], &other_overlay_flags).await;

    let wrong_key_flags = with_seed(&["--overlay", "blue", "--network-key-file"]);
    let mut wrong_key_flags: Vec<&str> = wrong_key_flags.iter().map(String::as_str).collect();
    wrong_key_flags.insert(3, key_b.as_str());
    let impostor = start("impostor", &dirs[3], &wrong_key_flags).await;

    let admitted = eventually(Duration::from_secs(15), || {
        state_of(&a, &friend).is_some_and(|(s, _)| s == "alive")
            && state_of(&friend, &a).is_some_and(|(s, _)| s == "alive")
    })
    .await;
    assert!(admitted, "same overlay and key: admitted both ways");

    let refused = |peer: &Node| {
        a.shared
            .peers
            .get(&peer.peer_id.to_base58())
            .is_some_and(|p| p.admission == "refused")
    };
    assert!(
        eventually(Duration::from_secs(10), || refused(&stranger)
            && refused(&impostor))
        .await,
        "another overlay and another key are refused"
    );
    // Give gossip time to do harm, then check nobody let them in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for outsider in [&stranger, &impostor] {
        assert_eq!(
            state_of(&a, outsider),
            None,
            "refused peers never appear in members"
        );
        assert_eq!(
            state_of(&friend, outsider),
            None,
            "nor in the members of admitted peers"
        );
        assert_eq!(alive_members(outsider), 0, "and they see nobody");
    }
    let reason = a
        .shared
        .peers
        .get(&stranger.peer_id.to_base58())
        .and_then(|p| p.reason.clone())
        .unwrap_or_default();
    assert!(reason.contains("overlay"), "the refusal says why: {reason}");

    for node in [a, friend, stranger, impostor] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_one_name_are_told_apart_by_their_peer_id() {
    use baton_node::state::SessionCommand;
    let dirs: Vec<TempDir> = (0..3)
        .map(|i| TempDir::new(&format!("names-{i}")))
        .collect();
    // `a` hosts nothing, so the session lands on the first `b`.
    let a = start("a", &dirs[0], &["--capacity", "0"]).await;
    let seed = dial_addr(&a).await;
    let b1 = start("b", &dirs[1], &["--bootstrap", &seed]).await;
    assert!(
        eventually(Duration::from_secs(20), || alive_members(&a) == 1
            && alive_members(&b1) == 1)
        .await,
        "a and the first b see each other"
    );
    // The session is opened while its primary's name is still unique...
    let (reply, answer) = tokio::sync::oneshot::channel();
    a.shared
        .commands
        .send(SessionCommand::Open {
            service: "rtp-audio".into(),
            client: "127.0.0.1:5004".into(),
            params: Default::default(),
            reply,
        })
        .await
        .expect("driver runs");
    let view = answer.await.expect("answer").expect("opens");
    assert!(
        eventually(Duration::from_secs(10), || a
            .shared
            .sessions
            .get(&view.id)
            .is_some_and(|s| s.primary_name == "b"))
        .await,
        "a names the primary b while it is the only b"
    );
    // ...then a second `b` joins: the views already published name the
    // primary with its peer id tail too. It hosts nothing either, so it
    // becomes no backup and the session record does not change: the views
    // are published again for the name alone.
    let b2 = start("b", &dirs[2], &["--capacity", "0", "--bootstrap", &seed]).await;
    let nodes = [a, b1, b2];
    assert!(
        eventually(Duration::from_secs(20), || nodes
            .iter()
            .all(|n| alive_members(n) == 2))
        .await,
        "membership converges"
    );
    let tail: String = view.primary[view.primary.len() - 6..].to_string();
    let expected = format!("b (…{tail})");
    let shown = eventually(Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            n.shared
                .sessions
                .get(&view.id)
                .is_some_and(|s| s.primary_name == expected)
        })
    })
    .await;
    let names: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            n.shared
                .sessions
                .get(&view.id)
                .map(|s| s.primary_name.clone())
        })
        .collect();
    assert!(
        shown,
        "every node names the primary {expected:?}: {names:?}"
    );
    for node in nodes {
        node.shutdown().await;
    }
}
