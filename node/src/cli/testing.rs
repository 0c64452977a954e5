//! Test support for the CLI's tests: fixtures of members and sessions, a
//! real API server on a loopback port with the fake driver behind it, and
//! `baton` run in-process against it.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::timeout;

use super::render::Names;
use crate::api::fake;
use crate::state::{LocalInfo, Shared};
use crate::views::{Member, Session};

/// Bound on every test step, so that a bug fails a test instead of hanging it.
pub(super) const LIMIT: Duration = Duration::from_secs(20);

fn member(id: &str, name: &str, state: &str) -> Member {
    Member {
        id: id.to_owned(),
        name: name.to_owned(),
        state: state.to_owned(),
        incarnation: 1,
        rtt_ms: None,
        distance_ms: None,
        addrs: Vec::new(),
        capacity: 4,
        load: 0,
        since: "2026-01-01T00:00:00.000Z".to_owned(),
        coordinate: None,
    }
}

/// `bravo`, alive with two addresses, and `charlie`, suspect.
pub(super) fn two_members() -> Vec<Member> {
    vec![
        Member {
            incarnation: 1,
            rtt_ms: Some(0.4),
            distance_ms: Some(0.52),
            addrs: vec![
                "/ip4/127.0.0.1/udp/4001/quic-v1".to_owned(),
                "/ip4/127.0.0.1/tcp/4001".to_owned(),
            ],
            ..member("12D3KooWBravo0000bbbbbbbb", "bravo", "alive")
        },
        Member {
            incarnation: 12,
            distance_ms: Some(103.26),
            ..member("12D3KooWCharlie000cccccccc", "charlie", "suspect")
        },
    ]
}

/// Names of `alpha` (this node) and `bravo`.
pub(super) fn names() -> Names {
    [
        ("12D3KooWLocal0000aaaaaaaa", "alpha"),
        ("12D3KooWBravo0000bbbbbbbb", "bravo"),
    ]
    .into_iter()
    .map(|(id, name)| (id.to_owned(), name.to_owned()))
    .collect()
}

/// Two sessions: `s1` hosted here with a named backup and an unknown one,
/// `s2` closed, on a node whose name the API did not send.
pub(super) fn two_sessions() -> Vec<Session> {
    let mut s1 = fake::view(
        "s1",
        "12D3KooWLocal0000aaaaaaaa",
        "alpha",
        &["12D3KooWBravo0000bbbbbbbb", "12D3KooWDelta00000dddddddd"],
    );
    s1.hosted_here = true;
    s1.epoch = 2;
    let mut s2 = fake::view("s2", "12D3KooWBravo0000bbbbbbbb", "", &[]);
    s2.state = "closed".to_owned();
    s2.client = "10.0.0.7:5004".to_owned();
    vec![s1, s2]
}

/// A port on 127.0.0.1 that nobody listens on (bound, then released).
pub(super) fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// This node, as the fixtures have it.
pub(super) fn shared_local() -> LocalInfo {
    LocalInfo {
        id: "12D3KooWLocal0000aaaaaaaa".to_owned(),
        name: "alpha".to_owned(),
        overlay: "test".to_owned(),
        profile: "lan".to_owned(),
        capacity: 8,
        version: "0.1.0".to_owned(),
        started: std::time::SystemTime::now(),
    }
}

/// A node with two members, whose session driver is the fake one.
pub(super) fn shared() -> (Arc<Shared>, fake::Reports) {
    let (commands, receiver) = tokio::sync::mpsc::channel(8);
    let shared = Shared::new(shared_local(), commands);
    for m in two_members() {
        shared.members.insert(m.id.clone(), m);
    }
    let shared = Arc::new(shared);
    let reports = fake::spawn(shared.clone(), receiver);
    (shared, reports)
}

/// A running API server: its address, what stops it, and its task.
pub(super) type Served = (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<io::Result<()>>,
);

/// Serves the API of `shared` on a loopback port until told to stop.
pub(super) async fn serve(shared: Arc<Shared>, token: Option<&str>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::api::serve(
        listener,
        shared,
        crate::api::Access::token(token.map(str::to_owned)),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// Runs `f` on a blocking thread, at most [`LIMIT`].
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    timeout(LIMIT, tokio::task::spawn_blocking(f))
        .await
        .expect("timed out")
        .unwrap()
}

/// Runs `baton --api <api> <args>` on a blocking thread; returns the exit
/// code and the output.
pub(super) async fn baton(api: &str, args: &[&str]) -> (i32, String) {
    let argv: Vec<String> = ["baton", "--api", api]
        .iter()
        .chain(args)
        .map(|a| (*a).to_owned())
        .collect();
    blocking(move || {
        let mut out = Vec::new();
        let code = super::run_to(argv, &mut out);
        (code, String::from_utf8(out).unwrap())
    })
    .await
}

/// Output that the test can read while it is being written.
#[derive(Clone, Default)]
pub(super) struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedOut {
    /// What was written so far.
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
