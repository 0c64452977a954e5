//! End-to-end on loopback, with real `batond` processes: `--check-config`
//! checks without binding, locking or creating anything; SIGHUP reloads
//! what can change at run time (log filter, allowlist, exec templates),
//! names what needs a restart, and keeps the old configuration when the
//! new one is broken, and says so as a `reload` event of `/v1/events` and
//! to `reload-*` hooks; `[hooks]` run the operator's command on a member's
//! death and a session's takeover, and a hung hook is killed.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use std::sync::mpsc;

use baton_node::cli::client::ApiClient;
use baton_node::cli::sse::Received;
use baton_node::views::{Event, OpenRequest, Peer, Session, Status};
use baton_tests::batond::Batond;
use baton_tests::{TempDir, workspace_bin};

fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn loopback_args<'a>(dir: &'a str, name: &'a str, config: &'a str) -> Vec<&'a str> {
    vec![
        "--name",
        name,
        "--data-dir",
        dir,
        "--config",
        config,
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--no-mdns",
        "--api",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
}

fn batond(args: &[&str]) -> Output {
    Command::new(workspace_bin("batond"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run batond")
}

fn open(api: &ApiClient, template: &str) -> Result<Session, String> {
    api.post(
        "/v1/sessions",
        &OpenRequest {
            service: "exec".into(),
            client: "127.0.0.1:5004".into(),
            params: [("template".to_string(), template.to_string())].into(),
        },
    )
    .map_err(|e| e.to_string())
}

/// The value of a metric line that starts with `prefix`.
fn metric(api: &ApiClient, prefix: &str) -> Option<f64> {
    let text = api.get_text("/metrics").ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The `reload` events of `api`'s event stream, as they arrive (a thread
/// reads the stream until the node ends it).
fn reload_events(api: &ApiClient) -> mpsc::Receiver<Event> {
    let reader = api.events().expect("GET /v1/events");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for frame in reader {
            let Ok(frame) = frame else { return };
            if let Ok(Received::Event(e)) = Received::decode(&frame)
                && frame.name == "reload"
                && tx.send(e).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn dial_addr(api: &ApiClient) -> String {
    let status: Status = api.get("/v1/status").unwrap();
    let addr = status
        .listen_addrs
        .iter()
        .find(|a| a.contains("127.0.0.1"))
        .expect("listens on loopback");
    format!("{addr}/p2p/{}", status.id)
}

#[test]
fn check_config_checks_like_a_start_and_binds_locks_and_creates_nothing() {
    let dir = TempDir::new("check-config");
    let key = dir.0.join("network.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let good = dir.0.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "name = \"checked\"\nnetwork_key_file = \"{}\"\nlog_level = \"info\"\n\
             [services.exec]\nhold = \"sleep 1000\"\n\
             [[hooks.handler]]\nevents = [\"member-dead\"]\ncommand = [\"/bin/true\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let good = good.display().to_string();
    let fresh = dir.0.join("fresh");
    let fresh_s = fresh.display().to_string();
    let out = batond(&["--config", &good, "--data-dir", &fresh_s, "--check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("batond: configuration OK: node \"checked\" (a new identity in")
            && stdout.contains("with a network key")
            && stdout.contains("1 exec templates, 1 hook handlers"),
        "{stdout}"
    );
    assert!(!fresh.exists(), "--check-config created the data directory");

    // A node runs on this data directory and API port: the check neither
    // locks the one nor binds the other, and names the node's identity.
    let data = dir.0.join("data").display().to_string();
    let node = Batond::start(&loopback_args(&data, "checked", &good));
    let api = node.api();
    let status: Status = api.get("/v1/status").unwrap();
    let held = api.api().trim_start_matches("http://").to_string();
    let files = std::fs::read_dir(&data).unwrap().count();
    let out = batond(&[
        "--config",
        &good,
        "--data-dir",
        &data,
        "--api",
        &held,
        "--check-config",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains(&format!("peer id {}", status.id)),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), files);
    drop(node);

    // Broken configurations: exit 2 and the error a start gives.
    let cases = [
        (
            format!("network_key_file = \"{}/missing.key\"\n", dir.0.display()),
            "cannot read network key file",
        ),
        (
            "[services.exec]\nt = \"p '{n}\"\n".to_string(),
            "[services] exec template \"t\": unterminated",
        ),
        (
            "listen = [\"/ip4/127.0.0.1/udp/7701\"]\n".to_string(),
            "invalid listen address",
        ),
        (
            "[[hooks.handler]]\nevents = [\"member-gone\"]\ncommand = [\"x\"]\n".to_string(),
            "[hooks] hooks.handler[0].events: unknown event \"member-gone\"",
        ),
        (
            "log_level = \"info,baton_node=loud\"\n".to_string(),
            "invalid log_level",
        ),
        ("capacity = \"many\"\n".to_string(), "capacity"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let bad = dir.0.join(format!("bad{i}.toml"));
        std::fs::write(&bad, text).unwrap();
        let bad = bad.display().to_string();
        let checked = batond(&["--config", &bad, "--data-dir", &fresh_s, "--check-config"]);
        let stderr = String::from_utf8_lossy(&checked.stderr).to_string();
        assert_eq!(checked.status.code(), Some(2), "{text}: {checked:?}");
        assert!(checked.stdout.is_empty(), "{text}: {checked:?}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        // A start says the same, in the same words.
        let started = batond(&["--config", &bad, "--data-dir", &fresh_s]);
        assert_eq!(started.status.code(), Some(2), "{text}: {started:?}");
        assert_eq!(String::from_utf8_lossy(&started.stderr), stderr);
    }
    // An identity key that a start could not read.
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(fresh.join("identity.key"), "not a key").unwrap();
    let out = batond(&["--config", &good, "--data-dir", &fresh_s, "--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a valid libp2p ed25519 key"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 1);
}

#[test]
fn sighup_reloads_log_level_allowlist_and_templates_and_keeps_the_old_config_when_broken() {
    let dir = TempDir::new("sighup");
    let conf = dir.0.join("batond.toml");
    let conf_s = conf.display().to_string();
    std::fs::write(
        &conf,
        "log_level = \"info\"\ncapacity = 10\n[services.exec]\none = \"sleep 1000\"\n",
    )
    .unwrap();
    let data_a = dir.0.join("a").display().to_string();
    let mut a = Batond::start(&loopback_args(&data_a, "a", &conf_s));
    let api_a = a.api();
    let other_conf = dir.0.join("b.toml");
    std::fs::write(&other_conf, "").unwrap();
    let other_conf = other_conf.display().to_string();
    let data_b = dir.0.join("b").display().to_string();
    let seed = dial_addr(&api_a);
    let mut args_b = loopback_args(&data_b, "b", &other_conf);
    args_b.extend(["--bootstrap", &seed]);
    let b = Batond::start(&args_b);
    let api_b = b.api();
    let id_b = api_b.get::<Status>("/v1/status").unwrap().id;
    let admitted = |api: &ApiClient, id: &str| {
        api.get::<Vec<Peer>>("/v1/peers")
            .ok()
            .and_then(|peers| peers.into_iter().find(|p| p.id == id))
            .map(|p| p.admission)
    };
    assert!(
        eventually(Duration::from_secs(20), || admitted(&api_a, &id_b)
            .as_deref()
            == Some("admitted")),
        "b was not admitted:\n{}",
        a.log()
    );
    assert!(!a.log().contains("\"level\":\"DEBUG\""));
    open(&api_a, "one").expect("template one is configured");
    let reloads = reload_events(&api_a);
    let id_a = api_a.get::<Status>("/v1/status").unwrap().id;
    let hooked = dir.0.join("hooked");

    // Debug logs, a new template in place of the old, an allowlist without
    // b, and a capacity that only a restart applies.
    let other = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_base58();
    std::fs::write(
        &conf,
        format!(
            "log_level = \"debug\"\ncapacity = 11\nallow = [\"{other}\"]\n\
             [services.exec]\ntwo = \"sleep 1000\"\n\
             [[hooks.handler]]\nevents = [\"reload-*\"]\n\
             command = [\"sh\", \"-c\", \"echo \\\"$BATON_EVENT $BATON_RESTART $BATON_REASON\\\" >> {}\"]\n",
            hooked.display()
        ),
    )
    .unwrap();
    let mark = a.lines();
    a.hangup();
    let line = a.wait_for_since(mark, "configuration reloaded", Duration::from_secs(10));
    assert!(line.contains("\"needs_restart\":\"capacity\""), "{line}");
    assert!(
        line.contains("log_level") && line.contains("allow") && line.contains("services.exec"),
        "{line}"
    );
    let warned = a.wait_for_since(
        mark,
        "takes effect only at a restart",
        Duration::from_secs(1),
    );
    assert!(
        warned.contains("\"level\":\"WARN\"") && warned.contains("\"field\":\"capacity\""),
        "{warned}"
    );
    assert!(a.running(), "SIGHUP ended batond:\n{}", a.log());
    // In effect: the templates, the allowlist, the log filter.
    let err = open(&api_a, "one").unwrap_err();
    assert!(err.contains("one"), "{err}");
    let two = open(&api_a, "two").expect("template two after the reload");
    assert!(two.hosted_here, "{two:?}");
    assert!(
        eventually(Duration::from_secs(10), || admitted(&api_a, &id_b)
            .as_deref()
            == Some("refused")),
        "b is still admitted after the reload:\n{}",
        a.log_since(mark)
    );
    let _: Status = api_a.get("/v1/status").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || a.log_since(mark).lines().any(
            |l| l.contains("\"level\":\"DEBUG\"") && l.contains("api request")
        )),
        "no debug line after log_level = debug:\n{}",
        a.log_since(mark)
    );
    let status: Status = api_a.get("/v1/status").unwrap();
    assert_eq!(status.capacity, 10, "capacity needs a restart");
    assert_eq!(
        metric(&api_a, "baton_config_reloads_total{result=\"ok\"}"),
        Some(1.0)
    );
    // The event: what changed, what needs a restart; the new hooks ran on it.
    let event = reloads
        .recv_timeout(Duration::from_secs(10))
        .expect("no reload event on /v1/events");
    assert_eq!(
        (
            event.kind.as_str(),
            event.state.as_str(),
            event.name.as_str()
        ),
        ("reload", "applied", "a"),
        "{event:?}"
    );
    assert_eq!(event.id, id_a);
    assert_eq!(
        event.applied,
        ["log_level", "allow", "services.exec", "hooks"],
        "{event:?}"
    );
    assert_eq!(event.restart, ["capacity"], "{event:?}");
    assert_eq!(event.reason, None);
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&hooked)
            .is_ok_and(|t| t
                .lines()
                .any(|l| l.trim() == "reload-applied capacity"))),
        "the reload-applied hook did not run:\n{}",
        a.log_since(mark)
    );

    // A broken file: refused as a whole, the node runs on as it was.
    std::fs::write(
        &conf,
        "log_level = \"warn\"\ncapacity = \"many\"\n[services.exec]\nthree = \"sleep 1000\"\n",
    )
    .unwrap();
    let mark = a.lines();
    a.hangup();
    let line = a.wait_for_since(mark, "reload refused", Duration::from_secs(10));
    assert!(
        line.contains("\"level\":\"ERROR\"") && line.contains("capacity"),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        a.running(),
        "a broken file on SIGHUP ended batond:\n{}",
        a.log()
    );
    open(&api_a, "two").expect("the old templates stay");
    assert!(open(&api_a, "three").is_err());
    assert_eq!(
        metric(&api_a, "baton_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
    let event = reloads
        .recv_timeout(Duration::from_secs(10))
        .expect("no reload event for the refused file");
    assert_eq!(
        (event.kind.as_str(), event.state.as_str()),
        ("reload", "refused"),
        "{event:?}"
    );
    let reason = event.reason.clone().unwrap_or_default();
    assert!(reason.contains("capacity"), "{event:?}");
    assert!(
        event.applied.is_empty() && event.restart.is_empty(),
        "{event:?}"
    );
    // The hooks in effect (those of the last good file) heard it too.
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&hooked)
            .is_ok_and(|t| t
                .split("reload-refused ")
                .nth(1)
                .is_some_and(|rest| rest.contains("capacity")))),
        "the reload-refused hook did not run:\n{}",
        a.log_since(mark)
    );
    // Still at debug, as before the broken file.
    // Every API request is logged at DEBUG, so one request is a probe of
    // the filter that does not depend on what else the node is doing.
    let mark = a.lines();
    let _: Status = api_a.get("/v1/status").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || a.log_since(mark).lines().any(
            |l| l.contains("\"level\":\"DEBUG\"") && l.contains("api request")
        )),
        "the log filter changed with a refused file:\n{}",
        a.log_since(mark)
    );
    assert_eq!(a.exit_within(Duration::from_millis(100)), None);
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(text) => {
            text.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                == Some('Z')
        }
    }
}

#[test]
fn hooks_get_member_dead_and_takeover_events_and_a_hung_hook_is_killed() {
    let dir = TempDir::new("hooks");
    let script = dir.0.join("record.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         # Appends one line per event: name, node, session, member, stdin JSON.\n\
         json=$(cat)\n\
         printf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$BATON_EVENT\" \"$BATON_NODE\" \"$BATON_SESSION\" \
         \"$BATON_MEMBER_ID\" \"$json\" >> \"$1/$BATON_NODE.events\"\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let hung = dir.0.join("hung.pids");
    let conf = dir.0.join("batond.toml");
    std::fs::write(
        &conf,
        format!(
            "[services.exec]\nhold = \"sleep 1000\"\n\
             [hooks]\nconcurrency = 2\n\
             [[hooks.handler]]\nevents = [\"member-dead\", \"session-takeover\"]\n\
             command = [\"{script}\", \"{dir}\"]\n\
             [[hooks.handler]]\nevents = [\"member-dead\"]\n\
             command = [\"sh\", \"-c\", \"echo $$ >> {hung}; exec sleep 300\"]\ntimeout = \"1s\"\n",
            script = script.display(),
            dir = dir.0.display(),
            hung = hung.display(),
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let data: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| dir.0.join(n).display().to_string())
        .collect();
    let mut a = Batond::start(&loopback_args(&data[0], "a", &conf));
    let api_a = a.api();
    let id_a = api_a.get::<Status>("/v1/status").unwrap().id;
    let seed = dial_addr(&api_a);
    let mut others = Vec::new();
    for (name, data) in [("b", &data[1]), ("c", &data[2])] {
        let mut args = loopback_args(data, name, &conf);
        args.extend(["--bootstrap", &seed]);
        others.push(Batond::start(&args));
    }
    let apis: Vec<ApiClient> = others.iter().map(Batond::api).collect();
    let alive = |api: &ApiClient| {
        api.get::<Status>("/v1/status")
            .is_ok_and(|s| s.members.alive == 2)
    };
    assert!(
        eventually(Duration::from_secs(30), || alive(&api_a)
            && apis.iter().all(alive)),
        "the three did not meet:\n{}",
        a.log()
    );
    let session = open(&api_a, "hold").expect("open on a");
    assert!(
        eventually(Duration::from_secs(10), || {
            apis.iter().all(|api| {
                api.get::<Vec<Session>>("/v1/sessions")
                    .is_ok_and(|s| s.iter().any(|s| s.id == session.id && s.backups.len() == 2))
            })
        }),
        "the session did not reach b and c with two backups"
    );

    a.kill_9();
    let killed = Instant::now();
    let events = |name: &str| {
        std::fs::read_to_string(dir.0.join(format!("{name}.events"))).unwrap_or_default()
    };
    let all = || format!("{}{}", events("b"), events("c"));
    assert!(
        eventually(Duration::from_secs(30), || {
            let text = all();
            text.matches("member-dead\t").count() >= 2 && text.contains("session-takeover\t")
        }),
        "no member-dead from both and a takeover:\nb: {}\nc: {}\n{}",
        events("b"),
        events("c"),
        others[0].log()
    );
    // The nodes answer while their hung hooks run.
    for api in &apis {
        let status: Status = api
            .get("/v1/status")
            .expect("a node with a hung hook answers");
        assert_eq!(status.members.dead, 1);
    }
    for name in ["b", "c"] {
        let text = events(name);
        let dead = text
            .lines()
            .find(|l| l.starts_with("member-dead\t"))
            .unwrap_or_else(|| panic!("{name}: no member-dead in {text}"));
        let fields: Vec<&str> = dead.splitn(5, '\t').collect();
        assert_eq!(fields[1], name, "{dead}");
        assert_eq!(fields[2], "", "{dead}");
        assert_eq!(fields[3], id_a, "{dead}");
        let json: serde_json::Value = serde_json::from_str(fields[4]).unwrap();
        assert_eq!(json["event"], "member-dead");
        assert_eq!(json["kind"], "member");
        assert_eq!(json["id"], id_a.as_str());
        assert_eq!(json["name"], "a");
        assert_eq!(json["state"], "dead");
        assert_eq!(json["node"]["name"], name);
    }
    let text = all();
    let takeover = text
        .lines()
        .find(|l| l.starts_with("session-takeover\t"))
        .unwrap();
    let fields: Vec<&str> = takeover.splitn(5, '\t').collect();
    assert_eq!(fields[2], session.id, "{takeover}");
    let json: serde_json::Value = serde_json::from_str(fields[4]).unwrap();
    assert_eq!(json["event"], "session-takeover");
    assert_eq!(json["kind"], "session");
    assert_eq!(json["id"], session.id.as_str());
    assert_eq!(json["state"], "started");
    assert!(
        json["reason"].as_str().unwrap().starts_with("takeover"),
        "{json}"
    );
    assert_eq!(text.matches("session-takeover\t").count(), 1, "{text}");

    // The hung hooks (one per survivor) are killed after their 1 s.
    let pids = || -> Vec<u32> {
        std::fs::read_to_string(&hung)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || pids().len() == 2),
        "the hung hook did not start twice: {:?}",
        pids()
    );
    assert!(
        eventually(Duration::from_secs(5), || pids().into_iter().all(gone)),
        "a hung hook outlived its timeout: {:?}",
        pids()
    );
    assert!(killed.elapsed() < Duration::from_secs(40));
    for (node, api) in others.iter().zip(&apis) {
        assert!(
            eventually(Duration::from_secs(5), || metric(
                api,
                "baton_hook_runs_total{result=\"timeout\"}"
            ) == Some(1.0)),
            "{}",
            node.log()
        );
        node.wait_for(
            "hook timed out: killed with its process group",
            Duration::from_secs(1),
        );
        assert!(metric(api, "baton_hook_runs_total{result=\"ok\"}").unwrap_or(0.0) >= 1.0);
    }
}
