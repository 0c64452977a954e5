//! End-to-end on loopback, with real `batond` processes: what an operator
//! meets on one machine. `exec` commands die with a `kill -9`ed node and a
//! restart ends what they left; a data directory serves one node at a
//! time; a held port stops the node with the OS's reason; logs written to
//! a pipe are plain text, without Kademlia's warnings of a node alone.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_node::cli::client::ApiClient;
use baton_node::views::{OpenRequest, Session};
use baton_tests::{TempDir, workspace_bin};

/// A `batond` process, its stderr collected line by line; killed with
/// SIGKILL (and waited for) on drop, so a failing test leaves none behind.
struct Batond {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Batond {
    fn start(args: &[&str]) -> Batond {
        let mut child = Command::new(workspace_bin("batond"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start batond");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Batond { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `text`; returns that line.
    fn wait_for(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "batond did not log {text:?} within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The API address of a node started with `--log-format json`.
    fn api(&self) -> String {
        let line = self.wait_for("\"node started\"", Duration::from_secs(20));
        let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        json["fields"]["api_addr"]
            .as_str()
            .expect("node started names api_addr")
            .to_string()
    }

    /// Its exit status, if it exits within `timeout`.
    fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for batond") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Batond {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Process `pid`'s state letter, parent and process group, from /proc.
fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Live (not zombie) processes matching `keep` on (parent, group).
fn processes(keep: impl Fn(u32, u32) -> bool) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(s, ppid, pgrp)| s != 'Z' && keep(ppid, pgrp)))
        .collect()
}

fn group(pgid: u32) -> Vec<u32> {
    processes(|_, pgrp| pgrp == pgid)
}

fn eventually(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILLs the process groups it was given, on drop: what the node under
/// test failed to end does not outlive the test.
#[derive(Default)]
struct Groups(Vec<u32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for &pgid in &self.0 {
            if !group(pgid).is_empty() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pgid}")])
                    .status();
            }
        }
    }
}

fn loopback_args<'a>(dir: &'a str, name: &'a str) -> Vec<&'a str> {
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

#[test]
fn kill_9_of_batond_leaves_no_exec_command_and_a_restart_ends_the_leftovers() {
    let dir = TempDir::new("orphans");
    let conf = dir.0.join("batond.toml");
    // `nested` leaves a grandchild that ignores SIGTERM: the parent-death
    // signal reaches the shell only, and only SIGKILL ends the sleep.
    std::fs::write(
        &conf,
        "[services.exec]\n\
         direct = \"sleep 1000\"\n\
         nested = \"sh -c \\\"trap '' TERM; sleep 1000 & wait\\\"\"\n",
    )
    .unwrap();
    let data = dir.0.join("data").display().to_string();
    let conf = conf.display().to_string();
    let mut args = loopback_args(&data, "orphans");
    args.extend(["--config", &conf]);
    let mut node = Batond::start(&args);
    let api = ApiClient::new(&node.api(), None).unwrap();
    let mut cleanup = Groups::default();
    for template in ["direct", "nested"] {
        let session: Session = api
            .post(
                "/v1/sessions",
                &OpenRequest {
                    service: "exec".into(),
                    client: "127.0.0.1:5004".into(),
                    params: [("template".to_string(), template.to_string())].into(),
                },
            )
            .expect("open an exec session");
        assert!(session.hosted_here, "{session:?}");
    }
    // Each command leads a group of its own: sleep alone, and sh + sleep.
    let batond = node.pid();
    assert!(
        eventually(Duration::from_secs(10), || {
            let leaders = processes(|ppid, _| ppid == batond);
            leaders.len() == 2 && leaders.iter().map(|&l| group(l).len()).sum::<usize>() == 3
        }),
        "two exec commands run: {:?}\n{}",
        processes(|ppid, _| ppid == batond),
        node.log()
    );
    let leaders = processes(|ppid, _| ppid == batond);
    cleanup.0.extend(&leaders);
    let (nested, direct): (Vec<u32>, Vec<u32>) =
        leaders.iter().partition(|&&l| group(l).len() == 2);
    let (nested, direct) = (nested[0], direct[0]);

    node.kill_9();
    assert!(
        eventually(Duration::from_secs(5), || group(direct).is_empty()),
        "the session's command outlived kill -9 of its node: group {direct} has {:?}",
        group(direct)
    );
    // The grandchild survives the parent-death signal of its shell...
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        group(nested).len(),
        1,
        "the nested sleep outlives its shell"
    );

    // ...and the next run on the same data directory ends it.
    let restarted = Batond::start(&args);
    restarted.api();
    assert!(
        eventually(Duration::from_secs(2), || group(nested).is_empty()),
        "a restart on the same data directory left group {nested} running: {:?}\n{}",
        group(nested),
        restarted.log()
    );
    restarted.wait_for(
        "ending exec process groups left running",
        Duration::from_secs(1),
    );
}

#[test]
fn a_second_batond_on_a_held_data_dir_refuses_naming_the_holder() {
    let dir = TempDir::new("lock");
    let data = dir.0.join("data").display().to_string();
    let first = Batond::start(&loopback_args(&data, "first"));
    first.api();
    let mut second = Batond::start(&loopback_args(&data, "second"));
    let status = second.exit_within(Duration::from_secs(10));
    let log = second.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second batond started on a data directory in use ({status:?}):\n{log}"
    );
    assert!(
        log.contains(&format!(
            "is in use by another batond (pid {})",
            first.pid()
        )) && log.contains("--data-dir"),
        "{log}"
    );
}

#[test]
fn a_held_udp_or_tcp_port_stops_batond_with_the_os_reason() {
    let dir = TempDir::new("ports");
    let data = dir.0.join("data").display().to_string();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let quic = format!(
        "/ip4/127.0.0.1/udp/{}/quic-v1",
        udp.local_addr().unwrap().port()
    );
    let stream = format!("/ip4/127.0.0.1/tcp/{}", tcp.local_addr().unwrap().port());
    let swim = udp.local_addr().unwrap().to_string();
    for (flags, expected) in [
        (
            ["--listen", quic.as_str(), "--swim-listen", "127.0.0.1:0"],
            format!("cannot listen on {quic}: Address already in use"),
        ),
        (
            ["--listen", stream.as_str(), "--swim-listen", "127.0.0.1:0"],
            format!("cannot listen on {stream}: Address already in use"),
        ),
        (
            [
                "--listen",
                "/ip4/127.0.0.1/udp/0/quic-v1",
                "--swim-listen",
                swim.as_str(),
            ],
            format!("cannot bind the datagram socket {swim}: Address already in use"),
        ),
    ] {
        let mut args = vec![
            "--name",
            "ports",
            "--data-dir",
            &data,
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
        ];
        args.extend(flags);
        assert_refused(&args, &expected);
    }
    // libp2p-tcp listens with SO_REUSEPORT, so that before the check two
    // batond processes shared one TCP port.
    let port = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let stream = format!("/ip4/127.0.0.1/tcp/{port}");
    let second = dir.0.join("second").display().to_string();
    let tcp_args = |data: &str| -> Vec<String> {
        [
            "--name",
            "tcp",
            "--data-dir",
            data,
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
            "--listen",
            &stream,
            "--swim-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]
        .map(String::from)
        .to_vec()
    };
    let holder_args = tcp_args(&data);
    let holder = Batond::start(&holder_args.iter().map(String::as_str).collect::<Vec<_>>());
    holder.api();
    let second_args = tcp_args(&second);
    assert_refused(
        &second_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &format!("cannot listen on {stream}: Address already in use"),
    );
}

/// Starts batond with `args` and checks that it exits with status 1,
/// having said `expected`.
fn assert_refused(args: &[&str], expected: &str) {
    let mut node = Batond::start(args);
    let status = node.exit_within(Duration::from_secs(10));
    let log = node.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "batond {args:?} did not stop:\n{log}"
    );
    assert!(
        log.contains(expected),
        "{args:?}: no {expected:?} in\n{log}"
    );
}

#[test]
fn a_lone_batond_writes_plain_logs_to_a_pipe_without_kademlia_warnings() {
    let dir = TempDir::new("logs");
    let data = dir.0.join("data").display().to_string();
    let mut args = loopback_args(&data, "alone");
    args.truncate(args.len() - 2); // human-readable lines
    let node = Batond::start(&args);
    node.wait_for("listening", Duration::from_secs(20));
    // Kademlia tries to walk 500 ms after each new listen address.
    std::thread::sleep(Duration::from_secs(2));
    let log = node.log();
    assert!(!log.contains('\x1b'), "colour escapes in a pipe:\n{log}");
    assert!(
        !log.contains("Failed to trigger bootstrap"),
        "a node alone warns about Kademlia:\n{log}"
    );
}

/// One HTTP/1.1 request written by hand (so that `Host` and `Origin` are
/// what the test says); answers the status line.
fn http_status(api: &str, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_token_is_enforced_on_loopback_and_a_rebound_host_is_refused() {
    let dir = TempDir::new("token");
    let data = dir.0.join("data").display().to_string();
    let mut args = loopback_args(&data, "guarded");
    args.extend([
        "--api-token",
        "full-token",
        "--api-read-token",
        "read-token",
    ]);
    let node = Batond::start(&args);
    let api = node.api();
    let host = format!("Host: {api}\r\n");
    assert!(http_status(&api, "/v1/status", &host).contains(" 401 "));
    let full = format!("{host}Authorization: Bearer full-token\r\n");
    assert!(http_status(&api, "/v1/status", &full).contains(" 200 "));
    let read = format!("{host}Authorization: Bearer read-token\r\n");
    assert!(http_status(&api, "/metrics", &read).contains(" 200 "));
    let rebound = "Host: rebind.example:7700\r\nAuthorization: Bearer full-token\r\n";
    assert!(http_status(&api, "/v1/status", rebound).contains(" 403 "));
    let cross = format!("{full}Origin: http://evil.example\r\n");
    assert!(http_status(&api, "/v1/status", &cross).contains(" 403 "));
    // Health stays open, for supervisors and load balancers.
    assert!(http_status(&api, "/v1/health", &host).contains(" 200 "));
}

/// A loopback UDP port whose next one is free too (QUIC and, beside it,
/// SWIM's datagram socket); taken back before the node binds them.
fn free_udp_pair() -> u16 {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

#[test]
fn members_with_other_exec_templates_are_warned_about_on_both_sides() {
    let dir = TempDir::new("templates");
    let conf = |name: &str, command: &str| {
        let path = dir.0.join(format!("{name}.toml"));
        std::fs::write(&path, format!("[services.exec]\nplay = \"{command}\"\n")).unwrap();
        path.display().to_string()
    };
    let (conf_a, conf_b) = (conf("a", "sleep 100"), conf("b", "sleep 200"));
    let (data_a, data_b) = (
        dir.0.join("a").display().to_string(),
        dir.0.join("b").display().to_string(),
    );
    let port = free_udp_pair();
    let listen = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let mut args_a = loopback_args(&data_a, "a");
    args_a[5] = &listen;
    args_a.extend(["--config", &conf_a]);
    let a = Batond::start(&args_a);
    a.api();
    let mut args_b = loopback_args(&data_b, "b");
    args_b.extend(["--config", &conf_b, "--bootstrap", &listen]);
    let b = Batond::start(&args_b);
    let warning = "templates differ from this node's";
    let said_a = a.wait_for(warning, Duration::from_secs(30));
    let said_b = b.wait_for(warning, Duration::from_secs(30));
    // Each names the other.
    assert!(said_a.contains("\"name\":\"b\""), "{said_a}");
    assert!(said_b.contains("\"name\":\"a\""), "{said_b}");
    // Once, not on every announcement: the loads they gossip change as
    // nothing else does, so a second warning would come from a repeat.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.log().matches(warning).count(), 1, "{}", a.log());
}
