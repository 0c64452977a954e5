//! Test support for the API's tests: a node with fixtures (members, peers,
//! sessions, counters), a server on a loopback port that must shut down
//! gracefully, and a blocking HTTP client that shows status and headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub(crate) use super::fake;
use super::{Access, COMMAND_TIMEOUT, LIMITS, Limits, serve_with};
use baton_protocol::node::{Class, Drops, Flow, Stats};
use baton_protocol::swim;

use crate::metrics::Metrics;
use crate::state::{LocalInfo, SessionCommand, Shared};
use crate::views::{Member, Peer, Session};

pub(crate) const LIMIT: Duration = Duration::from_secs(20);

fn member(id: &str, name: &str, state: &str, incarnation: u32) -> Member {
    Member {
        id: id.to_owned(),
        name: name.to_owned(),
        state: state.to_owned(),
        incarnation,
        rtt_ms: Some(0.4),
        distance_ms: None,
        addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".to_owned()],
        capacity: 10,
        load: 0,
        since: "2026-01-01T00:00:00.000Z".to_owned(),
        coordinate: Some(crate::views::Coordinate {
            vec_ms: vec![if name == "bravo" { 1.25 } else { -2.0 }, 0.5],
            height_ms: 0.25,
            adjustment_ms: 0.0,
            error: 0.5,
        }),
        ..Member::default()
    }
}

/// A node whose session driver is gone (its receiver is dropped).
pub(crate) fn shared() -> Arc<Shared> {
    shared_with(mpsc::channel(1).0)
}

/// A node whose session driver is the fake one.
pub(crate) fn shared_with_driver() -> (Arc<Shared>, fake::Reports) {
    let (commands, receiver) = mpsc::channel(8);
    let shared = shared_with(commands);
    let reports = fake::spawn(shared.clone(), receiver);
    (shared, reports)
}

pub(crate) fn shared_with(commands: mpsc::Sender<SessionCommand>) -> Arc<Shared> {
    let shared = Shared::new(
        LocalInfo {
            id: "12D3KooWLocal".to_owned(),
            name: "alpha".to_owned(),
            overlay: "test".to_owned(),
            profile: "lan".to_owned(),
            capacity: 8,
            version: "0.1.0".to_owned(),
            started: SystemTime::now() - Duration::from_secs(90),
        },
        commands,
    );
    // Inserted out of order: the API must sort.
    let old = Session {
        state: "closed".to_owned(),
        reason: "close".to_owned(),
        ..fake::view("s-old", "12D3KooWLocal", "alpha", &[])
    };
    let bravo = fake::view(
        "s-bravo",
        "12D3KooWBravo",
        "bravo",
        &["12D3KooWLocal", "12D3KooWCharlie"],
    );
    for s in [old, bravo] {
        shared.sessions.insert(s.id.clone(), s);
    }
    // Inserted out of order: the API must sort.
    let tags = |region: &str| [("region".to_owned(), region.to_owned())].into();
    for m in [
        Member {
            tags: tags("us"),
            ..member("12D3KooWCharlie", "charlie", "suspect", 2)
        },
        Member {
            tags: tags("eu"),
            ..member("12D3KooWBravo", "bravo", "alive", 1)
        },
    ] {
        shared.members.insert(m.id.clone(), m);
    }
    if let Ok(mut me) = shared.me.write() {
        me.tags = tags("eu");
    }
    shared.peers.insert(
        "12D3KooWBravo".to_owned(),
        Peer {
            id: "12D3KooWBravo".to_owned(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".to_owned()],
            connections: 1,
            admission: "admitted".to_owned(),
            reason: None,
        },
    );
    if let Ok(mut addrs) = shared.listen_addrs.write() {
        addrs.push("/ip4/127.0.0.1/tcp/4000".to_owned());
    }
    if let Ok(mut own) = shared.coordinate.write() {
        *own = Some(crate::views::Coordinate {
            vec_ms: vec![0.25, 0.0],
            height_ms: 0.5,
            adjustment_ms: 0.0,
            error: 0.25,
        });
    }
    counters(&shared.metrics);
    Arc::new(shared)
}

/// Counters as a node that has run a while would have them.
fn counters(m: &Metrics) {
    let flow = |packets, bytes| Flow { packets, bytes };
    let stats = Stats {
        received: [
            (Class::Probe, flow(40, 4000)),
            (Class::MapSync, flow(2, 1000)),
        ]
        .into(),
        sent: [(Class::Probe, flow(60, 6000))].into(),
        drops: Drops {
            bad_tag: 3,
            replayed: 1,
            ..Drops::default()
        },
        handshakes: 8,
        handshakes_failed: 2,
        refusals: 6,
        refused_by: 1,
        ..Stats::default()
    };
    let swim = swim::Stats {
        probes: 7,
        failed_probes: 2,
        suspicions: 3,
        refutations: 1,
        declared_dead: 4,
        messages_in: 100,
        messages_out: 101,
        ..swim::Stats::default()
    };
    m.send_failed();
    m.copy_stats(&stats, &swim);
    m.set_swim_self(9, 2);
    m.connections().set(3);
    m.probe_rtt.observe(0.003);
    m.first_packet("takeover: primary 12D3KooWBravo is down")
        .observe(0.04);
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub(crate) async fn start(shared: Arc<Shared>, token: Option<&str>) -> Server {
        Self::start_with(shared, token, COMMAND_TIMEOUT).await
    }

    pub(crate) async fn start_with(
        shared: Arc<Shared>,
        token: Option<&str>,
        command_timeout: Duration,
    ) -> Server {
        let access = Access::token(token.map(str::to_owned));
        Self::spawn(shared, access, command_timeout, LIMITS).await
    }

    pub(crate) async fn start_access(shared: Arc<Shared>, access: Access) -> Server {
        Self::spawn(shared, access, COMMAND_TIMEOUT, LIMITS).await
    }

    pub(crate) async fn start_limited(
        shared: Arc<Shared>,
        access: Access,
        limits: Limits,
    ) -> Server {
        Self::spawn(shared, access, COMMAND_TIMEOUT, limits).await
    }

    async fn spawn(
        shared: Arc<Shared>,
        access: Access,
        command_timeout: Duration,
        limits: Limits,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            shared,
            access,
            async move {
                let _ = stopped.await;
            },
            command_timeout,
            limits,
        ));
        Server { addr, stop, task }
    }

    /// Shuts down and checks that graceful shutdown completes.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let served = timeout(LIMIT, self.task).await;
        assert!(matches!(served, Ok(Ok(Ok(())))), "shutdown: {served:?}");
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) allow: String,
    pub(crate) location: String,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub(crate) fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> Reply {
    send(addr, method, path, auth, None).await
}

/// Writes `text` to a new connection as is and answers all that comes
/// back until the server closes it (at most 10 s).
pub(crate) async fn raw(addr: SocketAddr, text: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(LIMIT, stream.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A request with `body` as `(content type, bytes)`, if any.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    let url = format!("http://{addr}{path}");
    let method = method.to_owned();
    let auth = auth.map(str::to_owned);
    let body = body.map(|(content_type, bytes)| (content_type.to_owned(), bytes));
    let blocking = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let builder = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        let builder = match &auth {
            Some(auth) => builder.header("Authorization", auth),
            None => builder,
        };
        let mut response = match body {
            Some((content_type, bytes)) => agent.run(
                builder
                    .header("Content-Type", content_type)
                    .body(bytes)
                    .unwrap(),
            ),
            None => agent.run(builder.body(()).unwrap()),
        }
        .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (content_type, allow, location) =
            (header("content-type"), header("allow"), header("location"));
        Reply {
            status: response.status().as_u16(),
            content_type,
            allow,
            location,
            body: response.body_mut().read_to_string().unwrap(),
        }
    });
    timeout(LIMIT, blocking).await.unwrap().unwrap()
}

pub(crate) async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
    let body = Some(("application/json", body.as_bytes().to_vec()));
    send(addr, "POST", path, None, body).await
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None).await
}
