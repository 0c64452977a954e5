//! End-to-end on loopback, with real `batond` processes: what an operator
//! meets on one machine. `exec` commands die with a `kill -9`ed node and a
//! restart ends what they left; a data directory serves one node at a
//! time; a held port stops the node with the OS's reason; logs written to
//! a pipe are plain text, without Kademlia's warnings of a node alone.
//! A receiver on loopback counts the senders of an `exec` session's RTP
//! (source address and SSRC): after `kill -9` of the primary it hears the
//! backup alone, and a copy of the primary on its data directory is
//! refused without a second sender. Bootstrap mistakes and a name two
//! nodes share are warned about.

use std::process::Command;
use std::time::{Duration, Instant};

use baton_node::cli::client::ApiClient;
use baton_node::views::{OpenRequest, Session};
use baton_tests::TempDir;
use baton_tests::batond::Batond;

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
    let api = ApiClient::new(&node.api_addr(), None).unwrap();
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
    restarted.api_addr();
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
    first.api_addr();
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
    holder.api_addr();
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
    let api = node.api_addr();
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
    a.api_addr();
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

#[test]
fn bootstrap_mistakes_and_a_shared_name_are_warned_about() {
    let dir = TempDir::new("warnings");
    let data = |name: &str| dir.0.join(name).display().to_string();
    let (data_a, data_b, data_c, data_d) = (data("a"), data("b"), data("c"), data("d"));
    let port = free_udp_pair();
    let listen = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    // `a` lists only itself: it says it waits for others.
    let mut args_a = loopback_args(&data_a, "twin");
    args_a[5] = &listen;
    args_a.extend(["--bootstrap", &listen]);
    let a = Batond::start(&args_a);
    a.api_addr();
    a.wait_for(
        "every bootstrap address is this node itself",
        Duration::from_secs(5),
    );
    // `b` takes `a`'s name: both say so, naming the name.
    let mut args_b = loopback_args(&data_b, "twin");
    args_b.extend(["--bootstrap", &listen]);
    let b = Batond::start(&args_b);
    let started: serde_json::Value =
        serde_json::from_str(&b.wait_for("\"node started\"", Duration::from_secs(20))).unwrap();
    let b_id = started["fields"]["peer_id"].as_str().unwrap().to_string();
    let shared = "two nodes of the overlay share a name";
    for node in [&a, &b] {
        let line = node.wait_for(shared, Duration::from_secs(30));
        assert!(line.contains("\"name\":\"twin\""), "{line}");
        assert!(line.contains("give each node a name of its own"), "{line}");
    }
    // `c` dials `a`'s address expecting `b`'s peer id; `d` a port where
    // nothing listens. Each dial that fails is a warning with the reason.
    let wrong_id = format!("{listen}/p2p/{b_id}");
    let mut args_c = loopback_args(&data_c, "c");
    args_c.extend(["--bootstrap", &wrong_id]);
    let c = Batond::start(&args_c);
    let line = c.wait_for("cannot reach a bootstrap address", Duration::from_secs(30));
    assert!(line.contains(&b_id), "{line}");
    let nobody = free_udp_pair();
    let nowhere = format!("/ip4/127.0.0.1/udp/{nobody}/quic-v1");
    let mut args_d = loopback_args(&data_d, "d");
    args_d.extend(["--bootstrap", &nowhere]);
    let d = Batond::start(&args_d);
    let line = d.wait_for("cannot reach a bootstrap address", Duration::from_secs(30));
    assert!(line.contains("\"error\""), "{line}");
}

/// A client that counts senders: the testnet's RTP receiver on 127.0.0.1
/// (silent: it sends no RTCP), read as (arrival, source address, SSRC).
struct Senders {
    addr: std::net::SocketAddr,
    rx: baton_testnet::rtp_receiver::RtpReceiver,
}

impl Senders {
    fn bind() -> Senders {
        let rx = baton_testnet::rtp_receiver::RtpReceiver::bind_silent("127.0.0.1:0")
            .expect("bind the receiver");
        Senders {
            addr: rx.local_addr(),
            rx,
        }
    }

    /// Every packet from `from` on: when, from which address, which SSRC.
    fn seen(&self, from: Instant) -> Vec<(Instant, std::net::SocketAddr, u32)> {
        self.rx
            .arrivals()
            .into_iter()
            .filter(|a| a.at >= from)
            .map(|a| (a.at, a.from, a.ssrc))
            .collect()
    }

    /// The distinct senders (source address, SSRC) heard from `from` on.
    fn since(&self, from: Instant) -> Vec<(std::net::SocketAddr, u32)> {
        let mut out: Vec<_> = self
            .seen(from)
            .into_iter()
            .map(|(_, addr, ssrc)| (addr, ssrc))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The most distinct senders heard within any `window` from `from` on.
    fn most_at_once(&self, from: Instant, window: Duration) -> usize {
        let packets = self.seen(from);
        packets
            .iter()
            .map(|(start, _, _)| {
                let mut in_window: Vec<_> = packets
                    .iter()
                    .filter(|(at, _, _)| *at >= *start && *at < *start + window)
                    .map(|&(_, addr, ssrc)| (addr, ssrc))
                    .collect();
                in_window.sort_unstable();
                in_window.dedup();
                in_window.len()
            })
            .max()
            .unwrap_or(0)
    }

    /// When `sender` was last heard.
    fn last_from(&self, sender: (std::net::SocketAddr, u32)) -> Option<Instant> {
        self.rx
            .arrivals()
            .into_iter()
            .filter(|a| (a.from, a.ssrc) == sender)
            .map(|a| a.at)
            .max()
    }
}

/// Two `batond`s on loopback whose `play` template streams a tone with
/// ffmpeg to the session's client, and an `exec` session of it streaming
/// to a [`Senders`]: the nodes (the primary first), their data
/// directories, the receiver, and a guard over the commands' groups.
struct Streaming {
    primary: Batond,
    backup: Batond,
    primary_data: String,
    receiver: Senders,
    sender: (std::net::SocketAddr, u32),
    _groups: Groups,
    _dir: TempDir,
}

fn one_session_streaming(test: &str) -> Streaming {
    let dir = TempDir::new(test);
    let conf = dir.0.join("batond.toml");
    std::fs::write(
        &conf,
        "[services.exec]\n\
         play = \"ffmpeg -nostdin -loglevel error -re -f lavfi -i sine=frequency=440:sample_rate=8000 \
         -ac 1 -acodec pcm_mulaw -f rtp -rtpflags skip_rtcp rtp://{client}?pkt_size=172\"\n\
         [sessions]\nconsent = false\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let (data_a, data_b) = (
        dir.0.join("a").display().to_string(),
        dir.0.join("b").display().to_string(),
    );
    let port = free_udp_pair();
    let listen = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let mut args_a = loopback_args(&data_a, "a");
    args_a[5] = &listen;
    args_a.extend(["--config", &conf]);
    let a = Batond::start(&args_a);
    let api_a = ApiClient::new(&a.api_addr(), None).unwrap();
    let mut args_b = loopback_args(&data_b, "b");
    args_b.extend(["--config", &conf, "--bootstrap", &listen]);
    let b = Batond::start(&args_b);
    let api_b = ApiClient::new(&b.api_addr(), None).unwrap();
    let alive = |api: &ApiClient| {
        api.get::<Vec<baton_node::views::Member>>("/v1/members")
            .is_ok_and(|m| m.iter().any(|m| m.state == "alive" && !m.local))
    };
    assert!(
        eventually(Duration::from_secs(20), || alive(&api_a) && alive(&api_b)),
        "the two nodes see each other:\n{}\n{}",
        a.log(),
        b.log()
    );
    let receiver = Senders::bind();
    let session: Session = api_a
        .post(
            "/v1/sessions",
            &OpenRequest {
                service: "exec".into(),
                client: receiver.addr.to_string(),
                params: [("template".to_string(), "play".to_string())].into(),
            },
        )
        .expect("open an exec session");
    let a_is_primary = session.hosted_here;
    let (primary, backup, primary_data) = if a_is_primary {
        (a, b, data_a)
    } else {
        (b, a, data_b)
    };
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || !receiver
            .since(started)
            .is_empty()),
        "the session's ffmpeg streams to the client:\n{}",
        primary.log()
    );
    // Whatever the nodes leave running is ended with the test.
    let mut groups = Groups::default();
    for node in [&primary, &backup] {
        let pid = node.pid();
        groups.0.extend(processes(|ppid, _| ppid == pid));
    }
    let heard = receiver.since(started);
    assert_eq!(heard.len(), 1, "one sender: {heard:?}");
    Streaming {
        primary,
        backup,
        primary_data,
        receiver,
        sender: heard[0],
        _groups: groups,
        _dir: dir,
    }
}

#[test]
fn after_kill_9_of_the_primary_the_client_hears_one_sender_the_backups() {
    let Streaming {
        mut primary,
        backup,
        receiver,
        sender: old,
        mut _groups,
        ..
    } = one_session_streaming("one-sender");
    // Watch over the backup's commands too, once it runs them.
    let killed = Instant::now();
    primary.kill_9();
    // The backup takes over and streams; the old primary's ffmpeg died with
    // it (it would be a second sender, an orphan, for as long as it runs).
    let taken_over = eventually(Duration::from_secs(10), || {
        receiver.since(killed).iter().any(|s| *s != old)
    });
    let pid = backup.pid();
    _groups.0.extend(processes(|ppid, _| ppid == pid));
    assert!(
        taken_over,
        "no new sender within 10 s of the kill: {:?}\n{}",
        receiver.since(killed),
        backup.log()
    );
    // Two more seconds of listening, then count.
    std::thread::sleep(Duration::from_secs(2));
    let last_old = receiver.last_from(old).expect("the old sender was heard");
    assert!(
        last_old < killed + Duration::from_millis(500),
        "the killed primary's command still sent {:?} after the kill",
        last_old.duration_since(killed)
    );
    let after = killed + Duration::from_millis(500);
    let senders = receiver.since(after);
    assert_eq!(
        senders.len(),
        1,
        "one sender after the takeover: {senders:?}"
    );
    assert_eq!(
        receiver.most_at_once(killed, Duration::from_secs(1)),
        1,
        "two senders within one second after the kill"
    );
    let new = senders[0];
    eprintln!(
        "takeover: old sender {old:?} last heard {:?} after the kill; new sender {new:?} first \
         heard {:?} after it",
        last_old.saturating_duration_since(killed),
        receiver
            .seen(killed)
            .iter()
            .find(|(_, a, s)| (*a, *s) == new)
            .map(|(at, _, _)| at.duration_since(killed))
    );
}

#[test]
fn a_copy_of_the_primary_on_its_data_dir_is_refused_and_the_client_hears_one_sender() {
    let streaming = one_session_streaming("copy");
    let from = Instant::now();
    let mut copy = Batond::start(&loopback_args(&streaming.primary_data, "copy"));
    let status = copy.exit_within(Duration::from_secs(10));
    let log = copy.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second batond on the primary's data directory ran ({status:?}):\n{log}"
    );
    assert!(
        log.contains(&format!(
            "is in use by another batond (pid {})",
            streaming.primary.pid()
        )),
        "{log}"
    );
    // The client keeps hearing the one sender it heard, and no other.
    std::thread::sleep(Duration::from_secs(2));
    let senders = streaming.receiver.since(from);
    assert_eq!(
        senders,
        [streaming.sender],
        "senders after the copy started"
    );
    let _ = &streaming.backup;
}
