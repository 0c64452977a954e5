//! End-to-end: real `batond` processes in three network namespaces on one
//! bridge find each other by mDNS alone (no bootstrap address), as providers
//! on one LAN would. Needs root; runs in CI. Namespaces are removed after.

use std::time::{Duration, Instant};

use baton_testnet::netns;
use baton_tests::lan::Lan;
use baton_tests::{TempDir, require_netns, workspace_bin};

#[test]
fn nodes_in_namespaces_discover_each_other_by_mdns() {
    if !require_netns("nodes_in_namespaces_discover_each_other_by_mdns") {
        return;
    }
    let batond = workspace_bin("batond");
    let baton = workspace_bin("baton");
    let dir = TempDir::new("mdns");
    let n = 3;
    let prefix;
    {
        let mut lan = Lan::new("m", n, 1).expect("create namespaces");
        prefix = lan.prefix().to_string();
        for i in 0..n {
            let args: Vec<String> = [
                "--name".to_string(),
                format!("lan{i}"),
                "--data-dir".to_string(),
                dir.0.join(format!("n{i}")).display().to_string(),
                "--listen".to_string(),
                "/ip4/0.0.0.0/udp/7701/quic-v1".to_string(),
                "--api".to_string(),
                "127.0.0.1:7700".to_string(),
            ]
            .to_vec();
            lan.spawn(i, &batond, &args, &dir.0.join(format!("n{i}.log")))
                .expect("start batond");
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let mut views: Vec<String>;
        let converged = loop {
            views = (0..n)
                .map(|i| {
                    lan.run(i, &baton, &["--json", "members"])
                        .unwrap_or_default()
                })
                .collect::<Vec<String>>();
            let all = views.iter().all(|v| {
                serde_json::from_str::<serde_json::Value>(v)
                    .ok()
                    .and_then(|j| j.as_array().cloned())
                    .is_some_and(|members| {
                        // The list names this node too (`local`).
                        let others: Vec<_> =
                            members.iter().filter(|m| m["local"] != true).collect();
                        others.len() == n - 1 && others.iter().all(|m| m["state"] == "alive")
                    })
            });
            if all {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        if !converged {
            for i in 0..n {
                let log =
                    std::fs::read_to_string(dir.0.join(format!("n{i}.log"))).unwrap_or_default();
                eprintln!("--- node {i} log ---\n{log}");
            }
        }
        assert!(
            converged,
            "every node sees the 2 others alive via mDNS: {views:?}"
        );
        eprintln!("mDNS discovery converged in {:?}", started.elapsed());
    }
    assert!(
        netns::with_prefix(&prefix).is_empty(),
        "namespaces are removed after the test"
    );
}
