//! End-to-end: `testnet run kill` and `testnet run partition` on real
//! `batond` processes in network namespaces behind the userspace WAN
//! emulator with the built-in wide-area matrix, and `testnet run degrade`
//! on a LAN behind it, and `testnet run cut` (a primary cut one way, so
//! that it cannot hear, then so that it cannot send: self-fencing), and
//! `testnet run outage` (every node of a WAN region killed at once), and
//! `testnet run compare` (Serf's agents, then batond, on one LAN),
//! checked through the report.json they write; and mDNS discovery across
//! the emulator. Root only (CI runs them; outside CI without root they
//! skip).
//!
//! What must hold is asserted (every kill detected by every survivor, the
//! streams resume, no session lost or doubly owned after the fault or the
//! heal); the latencies are printed, and judged by `testnet run` at full
//! size, not here on a loaded CI machine.

use std::path::Path;
use std::process::Command;

use baton_tests::{TempDir, require_netns, require_tool, workspace_bin};

/// One scenario at a time: two testnets at once would share 2 cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `testnet run ARGS --out DIR` and answers the parsed report; the
/// run's output is shown when it could not be made (exit 2). Exit 1 (a
/// latency target missed) is left to the caller's assertions.
fn run(args: &[&str], out: &Path) -> serde_json::Value {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let testnet = workspace_bin("testnet");
    let output = Command::new(&testnet)
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run testnet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = std::fs::read_to_string(out.join("report.json")).unwrap_or_else(|e| {
        panic!(
            "testnet run {args:?} wrote no report ({e}), exit {:?}:\n{stderr}",
            output.status
        )
    });
    let report: serde_json::Value = serde_json::from_str(&report).expect("report.json is JSON");
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "testnet run {args:?} failed (exit {:?}):\n{stderr}",
        output.status
    );
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(out.join("report.md").exists(), "report.md missing");
    report
}

/// No namespace of the run is left (its names start with `bt<pid>-` of the
/// testnet process, which has exited: any `bt*` namespace whose process is
/// gone would be a leftover).
fn assert_no_leftovers() {
    let left: Vec<String> = baton_testnet::netns::list()
        .into_iter()
        .filter(|n| {
            n.strip_prefix("bt")
                .and_then(|r| r.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !baton_testnet::sys::process_exists(pid))
        })
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn kill_on_the_wan_fails_over_within_the_targets() {
    if !require_netns("kill_on_the_wan_fails_over_within_the_targets") {
        return;
    }
    let dir = TempDir::new("e2e-kill");
    let out = dir.0.join("kill");
    let report = run(
        &[
            "kill",
            "--nodes",
            "4",
            "--wan",
            "--sessions",
            "3",
            "--faults",
            "2",
            "--settle",
            "8s",
        ],
        &out,
    );
    assert_no_leftovers();
    assert_eq!(report["scenario"], "kill");
    // Both kills seen by every survivor within 20 s.
    assert_eq!(report["detection_ms"]["samples"], 2, "{report:#}");
    assert_eq!(report["details"]["undetected_kills"], 0, "{report:#}");
    // Each victim was the primary of a session, whose stream resumed from
    // a backup within 10 s.
    assert!(
        report["gap_ms"]["samples"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    assert!(report["gap_ms"]["max"].as_f64().unwrap() < 10_000.0);
    assert_eq!(report["sessions_lost"], 0);
    assert_eq!(report["double_owned"], 0);
    assert!(out.join("detection.svg").exists());
}

#[test]
fn partition_on_the_wan_heals_to_one_owner_per_session() {
    if !require_netns("partition_on_the_wan_heals_to_one_owner_per_session") {
        return;
    }
    let dir = TempDir::new("e2e-partition");
    let out = dir.0.join("partition");
    let report = run(
        &[
            "partition",
            "--nodes",
            "5",
            "--wan",
            "--sessions",
            "3",
            "--faults",
            "1",
            "--settle",
            "8s",
        ],
        &out,
    );
    assert_no_leftovers();
    assert_eq!(report["scenario"], "partition");
    // The majority saw the whole minority dead.
    assert_eq!(report["detection_ms"]["samples"], 1, "{report:#}");
    let heal = &report["details"]["partitions"][0];
    assert!(
        heal["one_owner_after_heal_ms"].as_f64().is_some(),
        "sessions never had one owner each after the heal: {report:#}"
    );
    assert_eq!(heal["minority"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["sessions_lost"], 0);
    assert_eq!(report["double_owned"], 0);
    assert!(out.join("owners.svg").exists());
}

#[test]
fn nodes_find_each_other_by_mdns_alone_through_the_emulator() {
    if !require_netns("nodes_find_each_other_by_mdns_alone_through_the_emulator") {
        return;
    }
    // The testbed takes batond from the directory of the running binary.
    workspace_bin("batond");
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("e2e-mdns");
    let mut config = baton_testnet::testbed::TestbedConfig::new(3, &dir.0);
    config.bootstrap = false;
    config.wan = Some(baton_testnet::emu::builtin_matrix());
    let testbed = baton_testnet::testbed::Testbed::up(config).expect("testbed up");
    let prefix = testbed.prefix().to_owned();
    let took = testbed
        .wait_converged(std::time::Duration::from_secs(30))
        .expect("every node sees the others alive, found by mDNS alone");
    eprintln!("3 nodes found each other by mDNS through the emulator in {took:?}");
    drop(testbed);
    let left: Vec<String> = baton_testnet::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// Runs `testnet ARGS` with the state directory `state`; answers (success,
/// stdout + stderr).
fn testnet(state: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_bin("testnet"))
        .args(args)
        .env("BATON_TESTNET_DIR", state)
        .output()
        .expect("run testnet");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Takes a testnet down when dropped, so a failed assertion leaves nothing.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        testnet(self.0, &["down"]);
    }
}

#[test]
fn up_commands_and_down_leave_nothing_behind() {
    if !require_netns("up_commands_and_down_leave_nothing_behind") {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("e2e-up");
    let state = dir.0.join("state");
    let (ok, out) = testnet(&state, &["up", "--nodes", "3", "--wan"]);
    let _down = Down(&state);
    assert!(ok, "testnet up failed:\n{out}");
    assert!(out.contains("n3") && out.contains("198.18.1.3"), "{out}");
    let pid = std::fs::read_to_string(state.join("pid")).expect("the daemon wrote its pid");
    let prefix = format!("bt{}-", pid.trim());
    assert_eq!(
        baton_testnet::netns::list()
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .count(),
        4,
        "one namespace per node and one for the clients"
    );
    let (ok, out) = testnet(&state, &["up", "--nodes", "2"]);
    assert!(!ok && out.contains("already up"), "{out}");

    let (ok, out) = testnet(&state, &["cut", "n2", "--one-way"]);
    assert!(ok, "{out}");
    let (_, status) = testnet(&state, &["status"]);
    assert!(
        status.contains("n2->n1") && !status.contains("n1->n2"),
        "{status}"
    );
    let (ok, out) = testnet(&state, &["heal"]);
    assert!(ok, "{out}");
    let (_, status) = testnet(&state, &["status"]);
    assert!(status.contains("cut links: none"), "{status}");

    let (ok, out) = testnet(&state, &["kill", "3"]);
    assert!(ok, "{out}");
    let (_, status) = testnet(&state, &["status"]);
    assert!(status.contains("killed"), "{status}");
    let (ok, out) = testnet(&state, &["restart", "n3"]);
    assert!(ok, "{out}");
    let (ok, out) = testnet(&state, &["pause", "n9"]);
    assert!(!ok && out.contains("no node `n9`"), "{out}");
    let (ok, out) = testnet(&state, &["loss", "0.05"]);
    assert!(ok, "{out}");

    let (ok, out) = testnet(&state, &["down"]);
    assert!(ok, "{out}");
    let left: Vec<String> = baton_testnet::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!state.exists(), "state directory left behind");
    let (_, out) = testnet(&state, &["status"]);
    assert!(out.contains("no testnet is up"), "{out}");
}

#[test]
fn a_stranger_spraying_datagrams_disturbs_nobody_and_is_counted() {
    if !require_netns("a_stranger_spraying_datagrams_disturbs_nobody_and_is_counted") {
        return;
    }
    let dir = TempDir::new("e2e-spray");
    let out = dir.0.join("spray");
    let report = run(
        &[
            "spray",
            "--nodes",
            "3",
            "--duration",
            "8s",
            "--settle",
            "3s",
        ],
        &out,
    );
    let details = &report["details"];
    assert!(
        details["sprayed"].as_u64().unwrap_or(0) > 10_000,
        "{details}"
    );
    assert_eq!(details["suspicions"], 0, "nobody suspected: {details}");
    assert_eq!(details["deaths"], 0, "nobody declared dead: {details}");
    let sprayed = details["sprayed"].as_f64().unwrap_or(0.0);
    let counted = details["dropped_counted"].as_f64().unwrap_or(0.0);
    assert!(
        counted >= 0.95 * sprayed,
        "every datagram dropped and counted: {details}"
    );
    assert_no_leftovers();
}

#[test]
fn a_degraded_path_moves_its_sessions_make_before_break() {
    if !require_netns("a_degraded_path_moves_its_sessions_make_before_break") {
        return;
    }
    let dir = TempDir::new("e2e-degrade");
    let out = dir.0.join("degrade");
    let report = run(
        &[
            "degrade",
            "--nodes",
            "4",
            "--sessions",
            "4",
            "--faults",
            "2",
            "--settle",
            "8s",
        ],
        &out,
    );
    assert_no_leftovers();
    assert_eq!(report["scenario"], "degrade");
    let details = &report["details"];
    // Both degradations moved every session of the degraded primary, each
    // to another node, heard by the client from there.
    let degradations = details["degradations"].as_array().expect("degradations");
    assert_eq!(degradations.len(), 2, "{report:#}");
    assert_eq!(details["sessions_not_moved"], 0, "{report:#}");
    let moves = details["moves"].as_array().expect("moves");
    assert!(moves.len() >= 2, "{report:#}");
    for m in moves {
        let heard = &m["move"];
        assert_ne!(heard["to"], m["from"], "{m}");
        assert_eq!(heard["ssrcs"], 1, "one stream across the move: {m}");
    }
    assert!(
        report["transfer_ms"]["samples"].as_u64().unwrap() >= 2,
        "{report:#}"
    );
    // Make-before-break: nothing lost by the moves, overlapping copies
    // identical, one owner per session afterwards.
    assert_eq!(details["lost_by_moves"], 0, "{report:#}");
    assert_eq!(details["mismatched_duplicates"], 0, "{report:#}");
    assert_eq!(report["sessions_lost"], 0, "{report:#}");
    assert_eq!(report["double_owned"], 0, "{report:#}");
    eprintln!(
        "degrade: transfer_ms {} (limit {} ms)",
        report["transfer_ms"], details["transfer_limit_ms"]
    );
    assert!(out.join("transfer.svg").exists());
}

#[test]
fn a_node_cut_one_way_fences_itself_and_no_client_hears_two_senders() {
    if !require_netns("a_node_cut_one_way_fences_itself_and_no_client_hears_two_senders") {
        return;
    }
    let dir = TempDir::new("e2e-cut");
    let out = dir.0.join("cut");
    // Two cuts: the first victim cannot hear, the second cannot send.
    let report = run(
        &[
            "cut",
            "--nodes",
            "6",
            "--sessions",
            "6",
            "--faults",
            "2",
            "--settle",
            "5s",
        ],
        &out,
    );
    assert_no_leftovers();
    assert_eq!(report["scenario"], "cut");
    let details = &report["details"];
    // The bound docs/protocol.md 7.12 documents, as the scenario used it.
    let bound = baton_testnet::targets::FENCE_MS.lan;
    assert_eq!(details["fence_bound_ms"].as_f64(), Some(bound));
    let cuts = details["cuts"].as_array().expect("cuts");
    assert_eq!(cuts.len(), 2, "{report:#}");
    assert_eq!(cuts[0]["direction"], "cannot_hear");
    assert_eq!(cuts[1]["direction"], "cannot_send");
    let ms = |c: &serde_json::Value, key: &str| {
        c[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} not measured: {c:#}"))
    };
    for c in cuts {
        eprintln!("{c}");
        // It was serving something, which the others took over.
        assert!(c["hosted_before"].as_u64().unwrap() >= 1, "{c:#}");
        assert_eq!(c["taken_over"], c["hosted_before"], "{c:#}");
        // It fenced itself and stopped serving within the bound...
        assert!(ms(c, "fenced_ms") <= bound, "fenced too late: {c:#}");
        assert!(
            ms(c, "stopped_serving_ms") <= bound,
            "served too long: {c:#}"
        );
        assert!(ms(c, "last_heard_ms") <= bound, "heard too long: {c:#}");
        // ...so no client heard two senders, and no session had two hosts,
        // for longer.
        assert!(ms(c, "double_heard_ms") <= bound, "{c:#}");
        assert!(ms(c, "double_hosted_ms") <= bound, "{c:#}");
        // While cut it claimed nothing and blamed nobody.
        assert_eq!(c["claims"], 0, "{c:#}");
        assert_eq!(c["deaths_declared"], 0, "{c:#}");
        // After the heal: one owner per session, agreed by every node; the
        // victim serves again (its fence lifted).
        assert!(
            c["one_owner_after_heal_ms"].as_f64().is_some(),
            "no single owner after the heal: {c:#}"
        );
        assert!(c["unfenced_ms"].as_f64().is_some(), "{c:#}");
        assert_eq!(c["sessions_lost"], 0, "{c:#}");
        assert_eq!(c["double_owned"], 0, "{c:#}");
    }
    // The victim that could send was heard by its clients until it fenced;
    // of the one that could not send, only packets in flight at the cut.
    assert!(ms(&cuts[0], "last_heard_ms") > 100.0, "{report:#}");
    assert!(ms(&cuts[1], "last_heard_ms") < 100.0, "{report:#}");
}

#[test]
fn a_region_outage_on_the_wan_loses_no_session_with_a_backup_elsewhere() {
    if !require_netns("a_region_outage_on_the_wan_loses_no_session_with_a_backup_elsewhere") {
        return;
    }
    let dir = TempDir::new("e2e-outage");
    let out = dir.0.join("outage");
    // 6 nodes over the first 3 regions of the built-in matrix (2 each), a
    // session opened on each; the region holding the most primaries is
    // killed at once, held down 10 s, restarted.
    let report = run(
        &[
            "outage",
            "--nodes",
            "6",
            "--wan",
            "--regions",
            "3",
            "--sessions",
            "6",
            "--faults",
            "1",
            "--settle",
            "8s",
        ],
        &out,
    );
    assert_no_leftovers();
    assert_eq!(report["scenario"], "outage");
    let details = &report["details"];
    // Every node announced its region as its `region` tag.
    let announced = details["announced_regions"].as_object().expect("regions");
    assert_eq!(announced.len(), 6, "{report:#}");
    let regions = ["westus", "centralus", "eastus"];
    for (i, r) in regions.iter().cycle().take(6).enumerate() {
        assert_eq!(announced[&format!("n{}", i + 1)], *r, "{report:#}");
    }
    let outages = details["outages"].as_array().expect("outages");
    assert_eq!(outages.len(), 1, "{report:#}");
    let o = &outages[0];
    eprintln!("{o}");
    assert_eq!(o["variant"], "kill");
    assert_eq!(o["nodes"].as_array().unwrap().len(), 2, "{o:#}");
    assert!(regions.contains(&o["region"].as_str().unwrap()), "{o:#}");
    // The region held primaries, each with a backup in another region
    // (spread placement); every one of them was taken over outside it and
    // heard again by its client, within the hold.
    let covered = o["with_backup_outside"].as_u64().unwrap();
    assert!(covered >= 1, "{o:#}");
    assert_eq!(o["all_replicas_in_region"], 0, "{o:#}");
    assert_eq!(
        o["gaps_ms"].as_array().unwrap().len() as u64,
        covered,
        "{o:#}"
    );
    assert!(
        o["new_owner_ms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64().is_some_and(|ms| ms < 10_000.0)),
        "{o:#}"
    );
    assert_eq!(o["sessions_lost"], 0, "{o:#}");
    assert_eq!(o["lost_after_restore"], 0, "{o:#}");
    assert!(o["one_owner_after_restore_ms"].as_f64().is_some(), "{o:#}");
    assert_eq!(report["sessions_lost"], 0, "{report:#}");
    assert_eq!(report["double_owned"], 0, "{report:#}");
    // A gap is reported, against the WAN kill target.
    let gap = &report["gap_ms"];
    assert_eq!(gap["samples"].as_u64(), Some(covered), "{report:#}");
    let p99 = gap["p99"].as_f64().expect("gap p99");
    assert!(p99 > 0.0 && p99 < 10_000.0, "{report:#}");
    assert_eq!(
        details["gap_limit_ms"].as_f64(),
        Some(baton_testnet::targets::GAP_P99_MS.wan)
    );
    eprintln!(
        "outage: gap {} new owner {} (limit {} ms)",
        report["gap_ms"], details["new_owner_ms"], details["gap_limit_ms"]
    );
    assert!(out.join("gap.svg").exists());
}

#[test]
fn serf_and_baton_side_by_side_each_declare_a_kill() {
    let test = "serf_and_baton_side_by_side_each_declare_a_kill";
    if !require_netns(test) || !require_tool(test, "serf", "serf") {
        return;
    }
    let dir = TempDir::new("e2e-compare");
    let out = dir.0.join("compare");
    // Serf's agents, then batond, on one LAN testnet of 3 namespaces
    // (Serf installed by .ci/run): idle traffic, one kill each.
    let report = run(
        &[
            "compare",
            "--nodes",
            "3",
            "--faults",
            "1",
            "--duration",
            "5s",
            "--settle",
            "3s",
        ],
        &out,
    );
    assert_no_leftovers();
    assert_eq!(report["scenario"], "compare");
    let programs = report["details"]["programs"].as_array().expect("programs");
    let row = |name: &str| {
        programs
            .iter()
            .find(|p| p["program"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {report:#}"))
    };
    for name in ["serf", "baton"] {
        let r = row(name);
        eprintln!(
            "{name}: {} B/s, detection {}",
            r["bytes_per_node_per_s"], r["detection_ms"]
        );
        assert!(
            r["bytes_per_node_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{name} sent nothing: {r:#}"
        );
        // The kill was declared by every survivor.
        assert_eq!(r["detection_ms"]["samples"], 1, "{name}: {r:#}");
    }
    // Serf's LAN profile waits seconds (1 s probes, a suspicion of 4 s or
    // more); Baton declares within about half a second: the order holds on
    // a loaded machine too.
    let p50 = |name: &str| row(name)["detection_ms"]["p50"].as_f64().unwrap();
    assert!(p50("baton") < p50("serf"), "{report:#}");
    assert!(report["details"]["bytes_times_detection_p50"]["serf"].is_number());
}
