//! End-to-end, in a real browser: three `batond` processes on loopback with
//! an API token, a session, and the web view open in headless Chromium
//! (the Debian package `chromium`; `.ci/run` installs it). The primary is
//! killed with SIGKILL; the page, left open, must show it dead and the
//! session on its new primary, with the death and the takeover in its event
//! list (from `/v1/events`), and a page opened afterwards must show the same
//! at its first render.
//!
//! The browser is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: NUL-separated JSON on its descriptors 3 and
//! 4, here two FIFOs), so no port is opened and no crate is needed. Its own
//! traffic stays on loopback: background networking, sync, component
//! updates are off and every name but 127.0.0.1 resolves to nothing. The
//! test reads what the page rendered into its DOM (`data-` attributes).
//!
//! `cargo test -p baton-tests --test webview -- --ignored` also renders
//! `docs/webview.png`, the README's picture: five nodes, four sessions, one
//! node killed.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baton_node::cli::client::ApiClient;
use baton_node::views::{Member, OpenRequest, Session, Status};
use baton_testnet::rtp_receiver::RtpReceiver;
use baton_tests::{TempDir, repo_root, require_tool, workspace_bin};
use serde_json::{Value, json};

const TOKEN: &str = "webview-e2e-token";

/// A `batond` process on loopback, SIGKILLed (and waited for) on drop.
struct Batond {
    child: Child,
    api: String,
    client: ApiClient,
    _dir: TempDir,
}

impl Batond {
    fn start(name: &str, bootstrap: Option<&str>) -> Batond {
        let dir = TempDir::new(&format!("webview-{name}"));
        let data = dir.0.join("data").display().to_string();
        let mut args = vec![
            "--name",
            name,
            "--data-dir",
            &data,
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
            "--api-token",
            TOKEN,
            "--log-format",
            "json",
        ];
        if let Some(seed) = bootstrap {
            args.extend(["--bootstrap", seed]);
        }
        let mut child = Command::new(workspace_bin("batond"))
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start batond");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("\"node started\"") {
                    let json: Value = serde_json::from_str(&line).unwrap_or_default();
                    let api = json["fields"]["api_addr"].as_str().unwrap_or("").to_owned();
                    let _ = tx.send(api);
                    sent = true;
                }
            }
        });
        let api = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("batond logs \"node started\" with its api_addr");
        let client = ApiClient::new(&api, Some(TOKEN.to_owned())).expect("API client");
        Batond {
            child,
            api,
            client,
            _dir: dir,
        }
    }

    fn status(&self) -> Status {
        self.client.get("/v1/status").expect("GET /v1/status")
    }

    fn members(&self) -> Vec<Member> {
        self.client.get("/v1/members").expect("GET /v1/members")
    }

    /// Its first listen address, with `/p2p/<peer id>`.
    fn dial_addr(&self) -> String {
        let status = wait_for("a listen address", Duration::from_secs(10), || {
            let status = self.status();
            (!status.listen_addrs.is_empty()).then_some(status)
        });
        format!("{}/p2p/{}", status.listen_addrs[0], status.id)
    }

    /// The web view's address, with the token to log the browser in.
    fn page(&self) -> String {
        format!("http://{}/ui/?token={TOKEN}", self.api)
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

/// Polls `check` every 100 ms until it answers something or `timeout`
/// passes (then fails the test, naming `what`).
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `n` nodes, the first the others' seed, once each sees all others alive.
fn overlay(names: &[&str]) -> Vec<Batond> {
    let first = Batond::start(names[0], None);
    let seed = first.dial_addr();
    let mut nodes = vec![first];
    for name in &names[1..] {
        nodes.push(Batond::start(name, Some(&seed)));
    }
    let others = names.len() - 1;
    wait_for("converged membership", Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| {
                let members = n.members();
                let alive = members.iter().filter(|m| m.state == "alive" && !m.local);
                alive.count() == others
            })
            .then_some(())
    });
    nodes
}

fn open(node: &Batond, client: &RtpReceiver) -> Session {
    node.client
        .post(
            "/v1/sessions",
            &OpenRequest {
                service: "rtp-audio".into(),
                client: client.local_addr().to_string(),
                params: Default::default(),
            },
        )
        .expect("open a session")
}

/// Headless Chromium driven over the DevTools protocol on a pipe. Its
/// process group is SIGKILLed on drop.
struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    dir: TempDir,
}

impl Browser {
    fn start() -> Browser {
        let dir = TempDir::new("webview-chromium");
        let (to, from) = (dir.0.join("to-browser"), dir.0.join("from-browser"));
        for fifo in [&to, &from] {
            let made = Command::new("mkfifo").arg(fifo).status().expect("mkfifo");
            assert!(made.success(), "mkfifo {}", fifo.display());
        }
        let profile = dir.0.join("profile").display().to_string();
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"to="$1"; from="$2"; shift 2; exec chromium "$@" 3<"$to" 4>"$from""#)
            .arg("sh")
            .arg(&to)
            .arg(&from)
            .args([
                "--headless=new",
                // As root, Chromium runs only without its sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                &format!("--user-data-dir={profile}"),
                "--window-size=1280,800",
                "--hide-scrollbars",
                // Nothing but the page's own requests, and only to loopback.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--disable-extensions",
                "--disable-breakpad",
                "--no-first-run",
                "--no-default-browser-check",
                "--metrics-recording-only",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "about:blank",
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Opening a FIFO waits for its other end: from a thread, so that a
        // browser that does not start fails the test instead of hanging it.
        let (opened, files) = mpsc::channel();
        std::thread::spawn(move || {
            let to = File::options().write(true).open(&to);
            let from = to.is_ok().then(|| File::open(&from));
            let _ = opened.send((to, from));
        });
        let (to, from) = match files.recv_timeout(Duration::from_secs(20)) {
            Ok((Ok(to), Some(Ok(from)))) => (to, from),
            other => panic!("chromium did not open its DevTools pipe: {other:?}"),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut from = BufReader::new(from);
            let mut message = Vec::new();
            let mut byte = [0u8; 1];
            while from.read(&mut byte).is_ok_and(|n| n == 1) {
                if byte[0] != 0 {
                    message.push(byte[0]);
                    continue;
                }
                if let Ok(value) = serde_json::from_slice(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            dir,
        }
    }

    /// Sends a DevTools command (to a page's session, if given) and answers
    /// its result.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if answer["id"] == json!(id) {
                assert!(answer.get("error").is_none(), "{method} failed: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab of 1280x800; answers its DevTools session.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        let session = session["sessionId"].as_str().unwrap().to_owned();
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        );
        self.call(Some(&session), "Page.navigate", json!({"url": url}));
        session
    }

    /// What the page shows, read from its DOM.
    fn state(&mut self, session: &str) -> Value {
        const READ: &str = r##"JSON.stringify({
            ready: document.body.dataset.ready || "",
            live: (document.getElementById("live") || {dataset: {}}).dataset.live || "",
            members: [...document.querySelectorAll("#members tr[data-member]")].map((r) => ({
                id: r.dataset.member, name: r.dataset.name, state: r.dataset.state,
                self: r.dataset.self === "1"})),
            sessions: [...document.querySelectorAll("#sessions tr[data-session]")].map((r) => ({
                id: r.dataset.session, primary: r.dataset.primary, backups: r.dataset.backups,
                epoch: Number(r.dataset.epoch), state: r.dataset.state})),
            events: [...document.querySelectorAll("#events li")].map((l) => ({
                kind: l.dataset.kind, source: l.dataset.source, id: l.dataset.id || "",
                state: l.dataset.state || "", reason: l.dataset.reason || ""})),
            map: [...document.querySelectorAll("#map [data-map-member]")].map((g) => ({
                id: g.dataset.mapMember, state: g.dataset.state})),
        })"##;
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": READ, "returnByValue": true}),
        );
        let text = result["result"]["value"].as_str().unwrap_or("{}");
        serde_json::from_str(text).expect("the page's state is JSON")
    }

    /// Polls the page until `check` holds of what it shows; fails the test
    /// with the last state seen otherwise.
    fn wait_until(
        &mut self,
        session: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(session);
            if check(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "the page did not show {what} within {timeout:?}; it shows:\n{state:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&mut self, session: &str, path: &Path) {
        let shot = self.call(
            Some(session),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        let png = base64(shot["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// Decodes standard base64 (what DevTools sends screenshots in).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | u32::from(d) << (18 - 6 * i));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn member_state(page: &Value, id: &str) -> String {
    page["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .map(|m| m["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

fn session_row<'a>(page: &'a Value, id: &str) -> Option<&'a Value> {
    page["sessions"]
        .as_array()
        .and_then(|ss| ss.iter().find(|s| s["id"] == id))
}

#[test]
fn the_web_view_shows_a_killed_primary_dead_and_its_session_on_the_new_primary() {
    if !require_tool(
        "the_web_view_shows_a_killed_primary_dead_and_its_session_on_the_new_primary",
        "chromium",
        "chromium",
    ) {
        return;
    }
    let mut nodes = overlay(&["w0", "w1", "w2"]);
    let ids: Vec<String> = nodes.iter().map(|n| n.status().id).collect();
    let receiver = RtpReceiver::bind("127.0.0.1:0").expect("bind an RTP receiver");
    let opened = open(&nodes[0], &receiver);
    assert_eq!(opened.backups.len(), 2, "two backups: {opened:?}");
    let (primary, first_backup) = (opened.primary.clone(), opened.backups[0].clone());
    // The page is opened on the first backup, the node that takes over.
    let watcher = ids.iter().position(|id| *id == first_backup).unwrap();
    let victim = ids.iter().position(|id| *id == primary).unwrap();
    wait_for(
        "the session on the watcher",
        Duration::from_secs(10),
        || {
            let sessions: Vec<Session> = nodes[watcher].client.get("/v1/sessions").ok()?;
            sessions.iter().any(|s| s.id == opened.id).then_some(())
        },
    );

    let mut browser = Browser::start();
    let tab = browser.open(&nodes[watcher].page());
    let before = browser.wait_until(
        &tab,
        "the overlay and the session",
        Duration::from_secs(30),
        |p| {
            p["ready"] == "1"
                && p["live"] == "open"
                && p["members"].as_array().is_some_and(|m| m.len() == 3)
                && session_row(p, &opened.id).is_some()
                && p["map"].as_array().is_some_and(|m| m.len() == 3)
        },
    );
    // Logged in through ?token=: the cookie opened the page, its files,
    // the views and the event stream.
    for id in &ids {
        assert_eq!(member_state(&before, id), "alive", "{before:#}");
    }
    let own = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["self"] == true);
    assert_eq!(own.unwrap()["id"], first_backup.as_str());
    let row = session_row(&before, &opened.id).unwrap();
    assert_eq!(row["primary"], primary.as_str());
    assert_eq!(row["backups"], opened.backups.join(",").as_str());
    assert_eq!(row["epoch"], opened.epoch);

    nodes[victim].kill_9();
    let after = browser.wait_until(
        &tab,
        "the primary dead and the session moved",
        Duration::from_secs(30),
        |p| {
            member_state(p, &primary) == "dead"
                && session_row(p, &opened.id).is_some_and(|s| s["primary"] == first_backup.as_str())
        },
    );
    let row = session_row(&after, &opened.id).unwrap();
    assert!(row["epoch"].as_u64().unwrap() > opened.epoch, "{row}");
    // The death and the takeover came in on the event stream, live.
    let events = after["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "member"
            && e["source"] == "stream"
            && e["id"] == primary.as_str()
            && e["state"] == "dead"),
        "no live member event for the kill: {after:#}"
    );
    let after = browser.wait_until(&tab, "the takeover event", Duration::from_secs(10), |p| {
        p["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "session"
                && e["source"] == "stream"
                && e["id"] == opened.id.as_str()
                && e["reason"].as_str().unwrap_or("").starts_with("takeover")
        })
    });
    assert_eq!(after["live"], "open");

    // A page opened now shows the same at once, from the views.
    let fresh = browser.open(&nodes[watcher].page());
    let now = browser.wait_until(&fresh, "a first render", Duration::from_secs(20), |p| {
        p["ready"] == "1"
    });
    assert_eq!(member_state(&now, &primary), "dead", "{now:#}");
    let row = session_row(&now, &opened.id).expect("the session is listed");
    assert_eq!(row["primary"], first_backup.as_str(), "{now:#}");
}

#[test]
fn the_web_view_without_the_token_shows_the_login_form_only() {
    if !require_tool(
        "the_web_view_without_the_token_shows_the_login_form_only",
        "chromium",
        "chromium",
    ) {
        return;
    }
    let node = Batond::start("w-login", None);
    let mut browser = Browser::start();
    let tab = browser.open(&format!("http://{}/ui/", node.api));
    let form = wait_for("the login form", Duration::from_secs(20), || {
        let result = browser.call(
            Some(&tab),
            "Runtime.evaluate",
            json!({"expression": "document.querySelector('form') ? document.querySelector('form').action + ' ' + (document.body.dataset.ready || 'no page') : ''", "returnByValue": true}),
        );
        let text = result["result"]["value"].as_str().unwrap_or("").to_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(form, format!("http://{}/ui/login no page", node.api));
}

/// Renders `docs/webview.png`: five nodes, four sessions, one node killed.
#[test]
#[ignore = "renders docs/webview.png for the README; run with --ignored"]
fn screenshot_of_a_five_node_overlay() {
    assert!(
        require_tool("screenshot_of_a_five_node_overlay", "chromium", "chromium"),
        "the screenshot needs chromium"
    );
    let mut nodes = overlay(&["berkeley", "stanford", "mit", "cmu", "eth"]);
    let ids: Vec<String> = nodes.iter().map(|n| n.status().id).collect();
    let receivers: Vec<RtpReceiver> = (0..4)
        .map(|_| RtpReceiver::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let sessions: Vec<Session> = receivers
        .iter()
        .enumerate()
        .map(|(i, r)| open(&nodes[i % 3], r))
        .collect();
    let victim_id = sessions[0].primary.clone();
    let victim = ids.iter().position(|id| *id == victim_id).unwrap();
    let watcher = (0..nodes.len()).find(|&i| i != victim).unwrap();
    // Coordinates settle over a few probe rounds.
    std::thread::sleep(Duration::from_secs(8));
    let mut browser = Browser::start();
    let tab = browser.open(&nodes[watcher].page());
    browser.wait_until(&tab, "the overlay", Duration::from_secs(30), |p| {
        p["ready"] == "1"
            && p["live"] == "open"
            && p["map"].as_array().is_some_and(|m| m.len() == 5)
    });
    nodes[victim].kill_9();
    browser.wait_until(&tab, "the takeover", Duration::from_secs(30), |p| {
        member_state(p, &victim_id) == "dead"
            && session_row(p, &sessions[0].id).is_some_and(|s| s["primary"] != victim_id.as_str())
    });
    std::thread::sleep(Duration::from_secs(3));
    let path: PathBuf = repo_root().join("docs").join("webview.png");
    browser.screenshot(&tab, &path);
    eprintln!("wrote {}", path.display());
}
