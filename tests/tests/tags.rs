//! End-to-end on loopback, with real `batond` processes and the `baton`
//! binary: tags given with `--tag` travel with the nodes' metadata, every
//! node lists itself and the others with their tags, `baton members --tag
//! ... --state ...` filters through the API, `baton rtt` reads the
//! coordinates, and tags beyond the caps stop `batond` at start.

use std::process::Command;
use std::time::{Duration, Instant};

use baton_tests::batond::Batond;
use baton_tests::{TempDir, workspace_bin};

fn node_args<'a>(dir: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "--name",
        name,
        "--data-dir",
        dir,
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--no-mdns",
        "--api",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
}

/// Runs `baton --api <api> <args>`: exit code, stdout, stderr.
fn baton(api: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_bin("baton"))
        .arg("--api")
        .arg(api)
        .args(args)
        .env_remove("BATON_API")
        .env_remove("BATON_TOKEN")
        .env_remove("BATON_API_TOKEN")
        .output()
        .expect("run baton");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first column (the name) of each row of a `baton members` table.
fn names(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split("  ").next().unwrap_or_default().to_owned())
        .collect()
}

fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn tags_travel_with_the_metadata_and_members_filter_by_them_end_to_end() {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("tags-{i}"))).collect();
    let dir = |i: usize| dirs[i].0.to_str().expect("utf-8 temp dir").to_owned();
    let (d0, d1, d2) = (dir(0), dir(1), dir(2));
    let mut args0 = node_args(&d0, "t0");
    args0.extend(["--tag", "region=eu", "--tag", "tier=media"]);
    let n0 = Batond::start(&args0);
    let api0 = n0.api_addr();
    let (code, status, err) = baton(&api0, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let seed = format!(
        "{}/p2p/{}",
        status["listen_addrs"][0]
            .as_str()
            .expect("a listen address"),
        status["id"].as_str().unwrap()
    );
    let mut args1 = node_args(&d1, "t1");
    args1.extend(["--tag", "region=eu", "--bootstrap", &seed]);
    let n1 = Batond::start(&args1);
    let mut args2 = node_args(&d2, "t2");
    args2.extend(["--tag", "region=us", "--bootstrap", &seed]);
    let n2 = Batond::start(&args2);
    let api2 = n2.api_addr();
    let _ = n1.api_addr();

    // Every node sees the three, itself included and marked.
    let mut last = String::new();
    let converged = eventually(Duration::from_secs(30), || {
        [&api0, &api2].iter().all(|api| {
            let (code, out, _) = baton(api, &["members", "--state", "alive", "--json"]);
            last = out.clone();
            code == 0
                && serde_json::from_str::<Vec<serde_json::Value>>(&out).is_ok_and(|m| {
                    m.len() == 3
                        && m.iter().filter(|m| m["local"] == true).count() == 1
                        && m.iter().all(|m| !m["tags"]["region"].is_null())
                })
        })
    });
    assert!(converged, "three alive members with their tags:\n{last}");

    // The tags as t2 heard them from t0's metadata.
    let (code, out, err) = baton(&api2, &["members", "--tag", "region=eu"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(&out), ["t0", "t1"], "{out}");
    assert!(out.contains("region=eu,tier=media"), "{out}");
    assert!(out.lines().next().unwrap().contains("TAGS"), "{out}");
    let (code, out, _) = baton(
        &api2,
        &["members", "--tag", "region=us", "--state", "alive"],
    );
    assert_eq!(code, 0);
    assert_eq!(names(&out), ["t2 (local)"], "{out}");
    let (code, out, _) = baton(
        &api0,
        &["members", "--tag", "region=eu", "--tag", "tier=media"],
    );
    assert_eq!(code, 0);
    assert_eq!(names(&out), ["t0 (local)"], "{out}");
    let (code, out, _) = baton(&api0, &["members", "--tag", "region=eu", "--state", "dead"]);
    assert_eq!(code, 0);
    assert_eq!(names(&out), Vec::<String>::new(), "{out}");
    // A bad filter is a usage error of the CLI, and a 400 of the API.
    let (code, _, err) = baton(&api0, &["members", "--tag", "region"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = baton(&api0, &["members", "--state", "zombie"]);
    assert_eq!(code, 2, "{err}");

    // RTT between two other members and to this node, from coordinates.
    let mut out = String::new();
    let estimated = eventually(Duration::from_secs(20), || {
        let (code, o, e) = baton(&api0, &["rtt", "t1", "t2"]);
        out = format!("{o}{e}");
        code == 0
    });
    assert!(estimated, "{out}");
    assert!(out.starts_with("Estimated t1 <-> t2 rtt: "), "{out}");
    let (code, out, err) = baton(&api0, &["rtt", "t2", "--json"]);
    assert_eq!(code, 0, "{err}");
    let estimate: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(estimate["b"]["name"], "t0");
    let ms = estimate["rtt_ms"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&ms), "loopback: {ms} ms");
    let (code, _, err) = baton(&api0, &["rtt", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no member is named \"nobody\""), "{err}");
}

#[test]
fn tags_beyond_the_caps_stop_batond_at_start_with_the_reason() {
    let dir = TempDir::new("tags-bad");
    let d = dir.0.to_str().unwrap().to_owned();
    let nine: Vec<String> = (0..9).map(|i| format!("k{i}=v")).collect();
    let mut too_many = node_args(&d, "bad");
    for t in &nine {
        too_many.extend(["--tag", t.as_str()]);
    }
    let mut bad_value = node_args(&d, "bad");
    bad_value.extend(["--tag", "region=eu west"]);
    for (args, expected) in [
        (too_many, "invalid tags: 9 tags: a node has at most 8"),
        (bad_value, "may hold only letters, digits"),
    ] {
        let mut node = Batond::start(&args);
        let code = node
            .exit_within(Duration::from_secs(10))
            .and_then(|s| s.code());
        let log = node.log();
        assert_eq!(
            code,
            Some(2),
            "batond did not stop as on a configuration error:\n{log}"
        );
        assert!(log.contains(expected), "no {expected:?} in\n{log}");
    }
}
