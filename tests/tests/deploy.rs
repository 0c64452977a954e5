//! What `deploy/` ships, checked with the tools that consume it: the alert
//! rules with `promtool` (syntax and unit tests), the dashboard's queries as
//! PromQL, the systemd unit with `systemd-analyze verify` (its man pages
//! included), the container recipe against the workspace, and the signals
//! the unit and the container send a real `batond`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_node::cli::ApiClient;
use baton_tests::{TempDir, repo_root, require_tool, workspace_bin};

fn deploy(file: &str) -> PathBuf {
    repo_root().join("deploy").join(file)
}

/// Runs `program args`; answers whether it succeeded and what it printed.
fn run(program: &str, args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let test = "alert_rules_pass_promtool_check_and_their_unit_tests";
    if !require_tool(test, "promtool", "prometheus") {
        return;
    }
    let dir = deploy("prometheus");
    let (ok, said) = run("promtool", &["check", "rules", "alerts.yml"], &dir, &[]);
    assert!(ok, "promtool check rules: {said}");
    assert!(said.contains("SUCCESS"), "{said}");
    let (ok, said) = run("promtool", &["test", "rules", "alerts_test.yml"], &dir, &[]);
    assert!(ok, "promtool test rules: {said}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let test = "dashboard_queries_are_valid_promql";
    if !require_tool(test, "promtool", "prometheus") {
        return;
    }
    let text = std::fs::read_to_string(deploy("grafana/baton.json")).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids: Vec<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "every panel has an id");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let exprs: Vec<String> = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .map(|e| {
            // Grafana's variables, as Grafana would fill them in.
            e.replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
        })
        .collect();
    assert!(exprs.len() >= 20, "the dashboard queries: {exprs:?}");
    // promtool parses PromQL in rule files: each query becomes a rule.
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(
            |(i, expr)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}),
        )
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = TempDir::new("dashboard-rules");
    std::fs::write(dir.0.join("queries.yml"), file.to_string()).unwrap();
    let (ok, said) = run("promtool", &["check", "rules", "queries.yml"], &dir.0, &[]);
    assert!(ok, "the dashboard's queries: {said}\n{exprs:#?}");
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let test = "systemd_unit_passes_systemd_analyze_verify";
    if !require_tool(test, "systemd-analyze", "systemd") || !require_tool(test, "man", "man-db") {
        return;
    }
    let unit = std::fs::read_to_string(deploy("systemd/baton.service")).expect("read the unit");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=baton",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "KillMode=control-group",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from the unit"
        );
    }
    // verify checks that ExecStart is executable and that the man pages of
    // Documentation= exist: the built batond stands in for /usr/bin/batond,
    // the pages `baton man` writes for installed ones.
    let batond = workspace_bin("batond");
    let dir = TempDir::new("systemd-verify");
    let man1 = dir.0.join("man/man1");
    for program in ["baton", "batond"] {
        let args = [
            "baton",
            "man",
            program,
            "--out-dir",
            &man1.display().to_string(),
        ];
        assert_eq!(baton_node::cli::run(args), 0, "baton man {program}");
    }
    let unit = unit.replace("/usr/bin/batond", &batond.display().to_string());
    std::fs::write(dir.0.join("baton.service"), unit).unwrap();
    let (ok, said) = run(
        "systemd-analyze",
        &["verify", "baton.service"],
        &dir.0,
        &[("MANPATH", &dir.0.join("man"))],
    );
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn containerfile_builds_every_workspace_member_and_runs_unprivileged() {
    let recipe = std::fs::read_to_string(deploy("Containerfile")).expect("read the recipe");
    let workspace = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let members = workspace
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("workspace members");
    // cargo loads every member: the build stage must copy each one.
    for member in members.trim_matches(['[', ']']).split(',') {
        let member = member.trim().trim_matches('"');
        assert!(
            recipe
                .lines()
                .any(|l| l == format!("COPY {member} {member}")),
            "the Containerfile does not copy the workspace member {member}"
        );
    }
    assert_eq!(recipe.matches("\nFROM ").count(), 2, "two stages");
    let user = recipe
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(
        recipe.contains("CMD [\"baton\", \"--api\", \"127.0.0.1:7700\", \"health\"]"),
        "the healthcheck asks /v1/health"
    );
}

/// A `batond` on loopback, killed when dropped (also when the test fails).
struct Batond(Child);

impl Drop for Batond {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

fn healthy(api: &str) -> bool {
    ApiClient::new(api, None)
        .map(|c| c.with_timeout(Duration::from_secs(2)))
        .is_ok_and(|c| c.get_text("/v1/health").is_ok())
}

#[test]
fn batond_runs_on_through_sighup_and_leaves_on_sigterm() {
    let dir = TempDir::new("batond-signals");
    let log = dir.0.join("batond.log");
    let api = {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let mut node = Batond(
        Command::new(workspace_bin("batond"))
            .args(["--name", "signals", "--no-mdns", "--api", &api])
            .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"])
            .arg("--data-dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            // A file, not a pipe: a full pipe would stall the node's logging.
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start batond"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthy(&api) {
        assert!(
            Instant::now() < deadline,
            "batond never answered /v1/health"
        );
        assert!(
            node.0.try_wait().unwrap().is_none(),
            "batond exited at start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // systemctl reload: the node must not die (nor leave).
    signal(&node.0, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.0.try_wait().unwrap().is_none(),
        "batond died of SIGHUP"
    );
    assert!(healthy(&api), "batond answers after SIGHUP");

    // systemctl stop / docker stop: a leave, then a clean exit.
    signal(&node.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "batond did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit status {status}: {log}");
    assert!(log.contains("SIGHUP"), "the SIGHUP is logged: {log}");
    assert!(log.contains("leaving the overlay"), "{log}");
}
