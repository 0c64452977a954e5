//! End-to-end: three `batond` processes in network namespaces on one bridge.
//! The primary of a session is cut off the LAN: the others declare it dead
//! and a backup claims the session, while the cut-off primary, hearing
//! nobody, fences itself and stops serving it (no two senders during the
//! cut). When the cut heals, exactly one owner remains everywhere. Needs root; runs in CI. Namespaces are removed after.

use std::time::{Duration, Instant};

use baton_testnet::netns;
use baton_tests::lan::Lan;
use baton_tests::{TempDir, require_netns, workspace_bin};
use serde_json::Value;

fn json(lan: &Lan, i: usize, baton: &std::path::Path, args: &[&str]) -> Option<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&lan.run(i, baton, &all).ok()?).ok()
}

fn wait(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    let deadline = start + timeout;
    while Instant::now() < deadline {
        if check() {
            eprintln!("{what}: {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn after_a_partition_heals_each_session_has_one_owner() {
    if !require_netns("after_a_partition_heals_each_session_has_one_owner") {
        return;
    }
    let batond = workspace_bin("batond");
    let baton = workspace_bin("baton");
    let dir = TempDir::new("partition");
    let n = 3;
    let prefix;
    {
        let mut lan = Lan::new("p", n, 2).expect("create namespaces");
        prefix = lan.prefix().to_string();
        for i in 0..n {
            let mut args: Vec<String> = vec![
                "--name".into(),
                format!("p{i}"),
                "--data-dir".into(),
                dir.0.join(format!("n{i}")).display().to_string(),
                "--listen".into(),
                "/ip4/0.0.0.0/udp/7701/quic-v1".into(),
                "--no-mdns".into(),
            ];
            if i > 0 {
                args.push("--bootstrap".into());
                args.push("/ip4/198.18.2.1/udp/7701/quic-v1".into());
            }
            lan.spawn(i, &batond, &args, &dir.0.join(format!("n{i}.log")))
                .expect("start batond");
        }
        let alive = |lan: &Lan, i: usize| {
            json(lan, i, &baton, &["members"])
                .and_then(|v| v.as_array().cloned())
                .map(|m| {
                    // Others only: the list names this node too (`local`).
                    m.iter()
                        .filter(|m| m["state"] == "alive" && m["local"] != true)
                        .count()
                })
                .unwrap_or(0)
        };
        wait("membership converges", Duration::from_secs(30), || {
            (0..n).all(|i| alive(&lan, i) == n - 1)
        });

        let opened = json(
            &lan,
            0,
            &baton,
            &[
                "open",
                "--service",
                "rtp-audio",
                "--client",
                "127.0.0.1:5004",
            ],
        )
        .expect("open a session");
        let id = opened["id"].as_str().expect("session id").to_string();
        let session = |lan: &Lan, i: usize| json(lan, i, &baton, &["session", &id]);
        wait(
            "every node knows the session",
            Duration::from_secs(15),
            || (0..n).all(|i| session(&lan, i).is_some()),
        );
        let first = session(&lan, 0).unwrap();
        let primary_id = first["primary"].as_str().unwrap().to_string();
        let status = |lan: &Lan, i: usize| json(lan, i, &baton, &["status"]);
        let primary = (0..n)
            .find(|i| status(&lan, *i).is_some_and(|s| s["id"] == primary_id.as_str()))
            .expect("the primary is one of the nodes");

        // Cut the primary off: a backup claims the session on the other side.
        lan.cut(primary).expect("cut");
        let others: Vec<usize> = (0..n).filter(|i| *i != primary).collect();
        wait(
            "the majority moves the session",
            Duration::from_secs(
                std::env::var("PT")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(20),
            ),
            || {
                others
                    .iter()
                    .all(|i| session(&lan, *i).is_some_and(|s| s["primary"] != primary_id.as_str()))
            },
        );
        let hosted =
            |lan: &Lan, i: usize| session(lan, i).is_some_and(|s| s["hosted_here"] == true);
        // The cut-off primary hears nobody: it fences itself and stops
        // serving (protocol.md 7.12), so its client does not get two
        // senders for the length of the cut.
        wait(
            "the cut-off primary fences itself and stops serving",
            Duration::from_secs(15),
            || !hosted(&lan, primary),
        );

        // Heal: exactly one owner remains, agreed by all, and it is the
        // new primary; the old one stops.
        lan.heal(primary).expect("heal");
        let healed = Instant::now();
        wait("one owner after the heal", Duration::from_secs(30), || {
            let views: Vec<Value> = (0..n).filter_map(|i| session(&lan, i)).collect();
            let owners = (0..n).filter(|i| hosted(&lan, *i)).count();
            views.len() == n
                && owners == 1
                && views.iter().all(|v| v["primary"] == views[0]["primary"])
                && views[0]["primary"] != primary_id.as_str()
        });
        eprintln!("one owner {:?} after the heal", healed.elapsed());
        assert!(!hosted(&lan, primary), "the loser stopped sending");
        wait("membership heals too", Duration::from_secs(30), || {
            (0..n).all(|i| alive(&lan, i) == n - 1)
        });
    }
    assert!(
        netns::with_prefix(&prefix).is_empty(),
        "namespaces are removed after the test"
    );
}
