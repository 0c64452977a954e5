//! The node's HTTP API: JSON views of [`Shared`] for `baton` and scripts, a
//! server-sent event stream of member changes, and Prometheus metrics. Handlers
//! only read [`Shared`]; the driver is the only writer.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::state::{MemberView, PeerView, Shared};

/// Interval of the SSE keep-alive comments, so that proxies and clients can
/// tell a quiet stream from a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Every path this API serves, for the 404 message.
const PATHS: &str = "GET /v1/status, GET /v1/members, GET /v1/peers, GET /v1/events, GET /metrics";

/// The router of the API. With `token`, every request must carry
/// `Authorization: Bearer <token>`.
///
/// Event streams opened on this router end only when the client leaves; use
/// [`serve`] to have them end at shutdown.
pub fn router(shared: Arc<Shared>, token: Option<String>) -> Router {
    build(shared, token, None)
}

/// Serves the API on `listener` until `shutdown` completes, then closes the
/// event streams and waits for in-flight requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    let app = build(shared, token, Some(closing_rx));
    let signal = async move {
        shutdown.await;
        // Graceful shutdown waits for every open response, and an event
        // stream never ends by itself.
        let _ = closing_tx.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}

/// An error answer: `{"error": "<message>"}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    /// Set to `true` when the server shuts down; `None` when nobody will.
    closing: Option<watch::Receiver<bool>>,
}

fn build(
    shared: Arc<Shared>,
    token: Option<String>,
    closing: Option<watch::Receiver<bool>>,
) -> Router {
    let mut app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/peers", get(peers))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    if let Some(token) = token {
        // Only the digest is kept: comparing digests takes the same time
        // whatever the length or content of the presented token.
        let expected: Arc<[u8; 32]> = Arc::new(Sha256::digest(token.as_bytes()).into());
        app = app.layer(middleware::from_fn_with_state(expected, require_token));
    }
    app.with_state(AppState { shared, closing })
}

async fn require_token(
    State(expected): State<Arc<[u8; 32]>>,
    request: Request,
    next: Next,
) -> Response {
    const HOW: &str = "pass it as the header 'Authorization: Bearer <token>' \
                       (baton: --token TOKEN or the environment variable BATON_TOKEN)";
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().ok().and_then(bearer_token));
    let message = match presented {
        Some(Some(token)) if token_matches(&expected, token) => return next.run(request).await,
        Some(Some(_)) => format!("the bearer token is not valid for this node: {HOW}"),
        Some(None) => format!("the Authorization header is not a bearer token: {HOW}"),
        None => format!("this API needs a bearer token: {HOW}"),
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"baton\""),
    );
    response
}

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_matches(expected: &[u8; 32], presented: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Constant time: no early exit on the first differing byte.
    let diff = expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

async fn not_found(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such path: {path}; this API serves {PATHS}"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {path}: use GET"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
    response
}

/// Body of `GET /v1/status`.
#[derive(Debug, Serialize)]
struct Status {
    id: String,
    name: String,
    overlay: String,
    profile: String,
    version: String,
    capacity: u32,
    uptime_s: u64,
    incarnation: u32,
    local_health: u32,
    listen_addrs: Vec<String>,
    members: MemberCounts,
    peers: usize,
}

#[derive(Debug, Serialize)]
struct MemberCounts {
    alive: usize,
    suspect: usize,
    dead: usize,
    left: usize,
}

async fn status(State(st): State<AppState>) -> Json<Status> {
    let shared = &st.shared;
    let local = &shared.local;
    let [alive, suspect, dead, left] = shared.members_by_state().map(|(_, n)| n);
    let listen_addrs = match shared.listen_addrs.read() {
        Ok(addrs) => addrs.clone(),
        // A writer panicked mid-update; the list is still worth showing.
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Json(Status {
        id: local.id.clone(),
        name: local.name.clone(),
        overlay: local.overlay.clone(),
        profile: local.profile.clone(),
        version: local.version.clone(),
        capacity: local.capacity,
        uptime_s: uptime(shared).as_secs(),
        incarnation: shared.metrics.incarnation.load(Ordering::Relaxed),
        local_health: shared.metrics.local_health.load(Ordering::Relaxed),
        listen_addrs,
        members: MemberCounts {
            alive,
            suspect,
            dead,
            left,
        },
        peers: shared.peers.len(),
    })
}

fn uptime(shared: &Shared) -> Duration {
    SystemTime::now()
        .duration_since(shared.local.started)
        .unwrap_or_default()
}

async fn members(State(st): State<AppState>) -> Json<Vec<MemberView>> {
    Json(st.shared.members_sorted())
}

async fn peers(State(st): State<AppState>) -> Json<Vec<PeerView>> {
    Json(st.shared.peers_sorted())
}

async fn events(State(st): State<AppState>) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    let stream = BroadcastStream::new(st.shared.events.subscribe()).map(|item| match item {
        Ok(event) => Event::default()
            .event(sse_name(&event.kind))
            .json_data(&event),
        Err(BroadcastStreamRecvError::Lagged(missed)) => Event::default()
            .event("lagged")
            .json_data(serde_json::json!({ "kind": "lagged", "missed": missed })),
    });
    let closing = st.closing;
    let stream = stream.take_until(async move {
        match closing {
            // An error means the server is gone: closing too.
            Some(mut closing) => drop(closing.wait_for(|closing| *closing).await),
            None => std::future::pending().await,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// An SSE event name: a line break would end the field (and make axum panic).
fn sse_name(kind: &str) -> String {
    kind.chars().filter(|c| !matches!(c, '\r' | '\n')).collect()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let body = render_metrics(&st.shared);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// `shared` in the Prometheus text exposition format 0.0.4.
fn render_metrics(shared: &Shared) -> String {
    let m = &shared.metrics;
    let c = |counter: &AtomicU64| counter.load(Ordering::Relaxed).to_string();
    let mut out = String::with_capacity(2048);
    let by_state = shared
        .members_by_state()
        .map(|(state, n)| (state, n.to_string()));
    family(
        &mut out,
        ("baton_members", "gauge"),
        "Members known to this node by state, this node excluded.",
        Some("state"),
        &by_state,
    );
    let counters = [
        ("baton_probes_total", "SWIM probes started.", &m.probes),
        (
            "baton_failed_probes_total",
            "SWIM probes that failed, direct and indirect.",
            &m.failed_probes,
        ),
        (
            "baton_suspicions_total",
            "Suspicions this node raised.",
            &m.suspicions,
        ),
        (
            "baton_refutations_total",
            "Suspicions about this node that it refuted.",
            &m.refutations,
        ),
        (
            "baton_declared_dead_total",
            "Members this node declared dead.",
            &m.declared_dead,
        ),
    ];
    for (name, help, counter) in counters {
        family(&mut out, (name, "counter"), help, None, &[("", c(counter))]);
    }
    let by_direction = [
        (
            "baton_messages_total",
            "SWIM messages by direction.",
            &m.messages_in,
            &m.messages_out,
        ),
        (
            "baton_bytes_total",
            "SWIM payload bytes by direction, without libp2p framing.",
            &m.bytes_in,
            &m.bytes_out,
        ),
    ];
    for (name, help, inbound, outbound) in by_direction {
        family(
            &mut out,
            (name, "counter"),
            help,
            Some("direction"),
            &[("in", c(inbound)), ("out", c(outbound))],
        );
    }
    family(
        &mut out,
        ("baton_dropped_messages_total", "counter"),
        "Messages dropped: undecodable, from refused peers, or queues full.",
        None,
        &[("", c(&m.dropped))],
    );
    family(
        &mut out,
        ("baton_refused_peers_total", "counter"),
        "Peers refused by the peering policy.",
        None,
        &[("", c(&m.refused))],
    );
    let gauges = [
        (
            "baton_incarnation",
            "This node's SWIM incarnation.",
            m.incarnation.load(Ordering::Relaxed).to_string(),
        ),
        (
            "baton_local_health",
            "Lifeguard local health multiplier (0 is healthy).",
            m.local_health.load(Ordering::Relaxed).to_string(),
        ),
        (
            "baton_peers",
            "libp2p peers connected or recently refused.",
            shared.peers.len().to_string(),
        ),
        (
            "baton_uptime_seconds",
            "Seconds since this node started.",
            format!("{:.3}", uptime(shared).as_secs_f64()),
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, (name, "gauge"), help, None, &[("", value)]);
    }
    out
}

/// One metric family: HELP, TYPE and a sample per `(label value, value)`.
fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    label: Option<&str>,
    samples: &[(&str, String)],
) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (label_value, value) in samples {
        match label {
            Some(label) => {
                let _ = writeln!(out, "{name}{{{label}=\"{label_value}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;
    use crate::state::{ApiEvent, LocalInfo, MemberView, Metrics, PeerView, wall_clock};

    /// Bound on every test step, so that a bug fails a test instead of hanging it.
    const LIMIT: Duration = Duration::from_secs(20);

    fn member(id: &str, name: &str, state: &str, incarnation: u32) -> MemberView {
        MemberView {
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
        }
    }

    fn shared() -> Arc<Shared> {
        let shared = Shared::new(LocalInfo {
            id: "12D3KooWLocal".to_owned(),
            name: "alpha".to_owned(),
            overlay: "test".to_owned(),
            profile: "lan".to_owned(),
            capacity: 8,
            version: "0.1.0".to_owned(),
            started: SystemTime::now() - Duration::from_secs(90),
        });
        // Inserted out of order: the API must sort.
        for m in [
            member("12D3KooWCharlie", "charlie", "suspect", 2),
            member("12D3KooWBravo", "bravo", "alive", 1),
        ] {
            shared.members.insert(m.id.clone(), m);
        }
        shared.peers.insert(
            "12D3KooWBravo".to_owned(),
            PeerView {
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
        let m = &shared.metrics;
        Metrics::add(&m.probes, 7);
        Metrics::add(&m.failed_probes, 2);
        Metrics::add(&m.suspicions, 3);
        Metrics::add(&m.refutations, 1);
        Metrics::add(&m.declared_dead, 4);
        Metrics::add(&m.messages_in, 100);
        Metrics::add(&m.messages_out, 101);
        Metrics::add(&m.bytes_in, 5000);
        Metrics::add(&m.bytes_out, 6000);
        Metrics::add(&m.dropped, 5);
        Metrics::add(&m.refused, 6);
        m.incarnation.store(9, Ordering::Relaxed);
        m.local_health.store(2, Ordering::Relaxed);
        Arc::new(shared)
    }

    fn event(id: &str, state: &str) -> ApiEvent {
        let (at, at_ms) = wall_clock();
        ApiEvent {
            kind: "member".to_owned(),
            at,
            at_ms,
            id: id.to_owned(),
            name: "bravo".to_owned(),
            state: state.to_owned(),
            previous: Some("alive".to_owned()),
            incarnation: 1,
        }
    }

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(shared: Arc<Shared>, token: Option<&str>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(
                listener,
                shared,
                token.map(str::to_owned),
                async move {
                    let _ = stopped.await;
                },
            ));
            Server { addr, stop, task }
        }

        /// Shuts down and checks that graceful shutdown completes.
        async fn stop(self) {
            let _ = self.stop.send(());
            let served = timeout(LIMIT, self.task).await;
            assert!(matches!(served, Ok(Ok(Ok(())))), "shutdown: {served:?}");
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        content_type: String,
        allow: String,
        body: String,
    }

    impl Reply {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }

        fn error(&self) -> String {
            self.json()["error"].as_str().unwrap().to_owned()
        }
    }

    async fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Reply {
        let url = format!("http://{addr}{path}");
        let method = method.to_owned();
        let auth = auth.map(str::to_owned);
        let blocking = tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .new_agent();
            let mut response = match method.as_str() {
                "GET" => {
                    let mut req = agent.get(&url);
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth);
                    }
                    req.call()
                }
                _ => {
                    let mut req = agent.post(&url);
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth);
                    }
                    req.send_empty()
                }
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
            let (content_type, allow) = (header("content-type"), header("allow"));
            Reply {
                status: response.status().as_u16(),
                content_type,
                allow,
                body: response.body_mut().read_to_string().unwrap(),
            }
        });
        timeout(LIMIT, blocking).await.unwrap().unwrap()
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        request(addr, "GET", path, None).await
    }

    #[tokio::test]
    async fn status_reports_identity_counts_and_health() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/v1/status").await;
        assert_eq!(reply.status, 200);
        assert!(reply.content_type.starts_with("application/json"));
        let mut status = reply.json();
        let uptime = status["uptime_s"].take();
        assert!(
            (90..3600).contains(&uptime.as_u64().unwrap()),
            "uptime {uptime}"
        );
        assert_eq!(
            status,
            json!({
                "id": "12D3KooWLocal",
                "name": "alpha",
                "overlay": "test",
                "profile": "lan",
                "version": "0.1.0",
                "capacity": 8,
                "uptime_s": null,
                "incarnation": 9,
                "local_health": 2,
                "listen_addrs": ["/ip4/127.0.0.1/tcp/4000"],
                "members": {"alive": 1, "suspect": 1, "dead": 0, "left": 0},
                "peers": 1,
            })
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn members_are_sorted_and_carry_the_contract_fields() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let members = get(server.addr, "/v1/members").await.json();
        let list = members.as_array().unwrap();
        let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["bravo", "charlie"]);
        // DESIGN.md: scripts rely on these fields.
        assert_eq!(list[0]["id"], "12D3KooWBravo");
        assert_eq!(list[0]["state"], "alive");
        assert_eq!(list[1]["state"], "suspect");
        assert_eq!(list[1]["incarnation"], 2);
        assert_eq!(list[0]["rtt_ms"], 0.4);
        assert_eq!(
            members,
            serde_json::to_value(shared.members_sorted()).unwrap()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn peers_are_listed() {
        let server = Server::start(shared(), None).await;
        let peers = get(server.addr, "/v1/peers").await.json();
        assert_eq!(
            peers,
            json!([{
                "id": "12D3KooWBravo",
                "addrs": ["/ip4/127.0.0.1/tcp/4001"],
                "connections": 1,
                "admission": "admitted",
                "reason": null,
            }])
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_path_is_a_json_404_naming_the_valid_paths() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/v1/nope").await;
        assert_eq!(reply.status, 404);
        assert!(reply.content_type.starts_with("application/json"));
        let message = reply.error();
        assert!(message.contains("/v1/nope"), "{message}");
        for path in [
            "/v1/status",
            "/v1/members",
            "/v1/peers",
            "/v1/events",
            "/metrics",
        ] {
            assert!(message.contains(path), "{message}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn wrong_method_is_a_json_405() {
        let server = Server::start(shared(), None).await;
        let reply = request(server.addr, "POST", "/v1/members", None).await;
        assert_eq!(reply.status, 405);
        assert!(reply.error().contains("POST"), "{}", reply.error());
        assert!(reply.allow.contains("GET"), "allow: {:?}", reply.allow);
        server.stop().await;
    }

    #[tokio::test]
    async fn token_is_required_when_configured() {
        let server = Server::start(shared(), Some("s3cret")).await;
        let addr = server.addr;

        let missing = request(addr, "GET", "/v1/status", None).await;
        assert_eq!(missing.status, 401);
        assert!(
            missing.error().contains("Authorization: Bearer <token>"),
            "{}",
            missing.error()
        );
        assert!(missing.error().contains("--token"), "{}", missing.error());
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
            let reply = request(addr, "GET", "/v1/status", Some(wrong)).await;
            assert_eq!(reply.status, 401, "{wrong}");
        }
        // Nothing, not even the list of paths, without the token.
        assert_eq!(request(addr, "GET", "/nope", None).await.status, 401);
        assert_eq!(request(addr, "GET", "/metrics", None).await.status, 401);

        for right in ["Bearer s3cret", "bearer s3cret"] {
            let reply = request(addr, "GET", "/v1/status", Some(right)).await;
            assert_eq!(reply.status, 200, "{right}");
            assert_eq!(reply.json()["name"], "alpha");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn no_token_is_asked_when_none_is_configured() {
        let server = Server::start(shared(), None).await;
        let reply = request(server.addr, "GET", "/v1/status", Some("Bearer anything")).await;
        assert_eq!(reply.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_expose_the_counters_in_prometheus_text() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.content_type.starts_with("text/plain; version=0.0.4"),
            "{}",
            reply.content_type
        );
        let text = reply.body;
        for line in [
            "# TYPE baton_members gauge",
            "baton_members{state=\"alive\"} 1",
            "baton_members{state=\"suspect\"} 1",
            "baton_members{state=\"dead\"} 0",
            "baton_members{state=\"left\"} 0",
            "# TYPE baton_probes_total counter",
            "baton_probes_total 7",
            "baton_failed_probes_total 2",
            "baton_suspicions_total 3",
            "baton_refutations_total 1",
            "baton_declared_dead_total 4",
            "baton_messages_total{direction=\"in\"} 100",
            "baton_messages_total{direction=\"out\"} 101",
            "baton_bytes_total{direction=\"in\"} 5000",
            "baton_bytes_total{direction=\"out\"} 6000",
            "baton_dropped_messages_total 5",
            "baton_refused_peers_total 6",
            "# TYPE baton_incarnation gauge",
            "baton_incarnation 9",
            "baton_local_health 2",
            "baton_peers 1",
            "# TYPE baton_uptime_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every family has its HELP and TYPE before its samples.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(families.len(), 14);
        for family in families {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        server.stop().await;
    }

    /// Sends `GET /v1/events` on a raw connection and waits until the
    /// handler has subscribed.
    async fn open_events(addr: SocketAddr, shared: &Shared) -> TcpStream {
        let subscribers = shared.events.receiver_count();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
            )
            .await
            .unwrap();
        timeout(LIMIT, async {
            while shared.events.receiver_count() == subscribers {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the event handler never subscribed");
        stream
    }

    /// Reads until `buf` holds a complete `data:` line; returns the SSE
    /// event name before it and the line's JSON.
    async fn next_event(stream: &mut TcpStream, buf: &mut String) -> (String, Value) {
        timeout(LIMIT, async {
            loop {
                if let Some(start) = buf.find("\ndata: ") {
                    if let Some(len) = buf[start + 7..].find('\n') {
                        let data = buf[start + 7..start + 7 + len].to_owned();
                        let name = buf[..start]
                            .rsplit_once("event: ")
                            .map(|(_, name)| name.to_owned())
                            .unwrap_or_default();
                        buf.drain(..start + 7 + len);
                        return (name, serde_json::from_str(&data).unwrap());
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the stream ended; received:\n{buf}");
                buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .expect("no event arrived")
    }

    #[tokio::test]
    async fn events_stream_delivers_published_events_and_ends_at_shutdown() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let mut stream = open_events(server.addr, &shared).await;
        let mut buf = String::new();

        let sent = event("12D3KooWBravo", "suspect");
        shared.publish(sent.clone());
        let (name, data) = next_event(&mut stream, &mut buf).await;
        assert_eq!(name, "member");
        assert_eq!(data, serde_json::to_value(&sent).unwrap());

        // Graceful shutdown must not wait forever for the open stream.
        server.stop().await;
        let rest = timeout(LIMIT, async {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            rest
        })
        .await
        .expect("the event stream stayed open after shutdown");
        assert!(!String::from_utf8_lossy(&rest).contains("data:"));
    }

    #[tokio::test]
    async fn lagging_subscriber_is_told_how_many_events_it_missed() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let mut stream = open_events(server.addr, &shared).await;
        let mut buf = String::new();

        // This test runs on one thread: the server cannot drain the channel
        // while the loop runs, so the subscriber falls behind.
        let overflow = 10;
        for i in 0..crate::state::EVENT_BUFFER + overflow {
            let mut e = event("12D3KooWBravo", "suspect");
            e.incarnation = u32::try_from(i).unwrap();
            shared.publish(e);
        }
        let (name, data) = next_event(&mut stream, &mut buf).await;
        assert_eq!(name, "lagged");
        assert_eq!(data, json!({"kind": "lagged", "missed": overflow}));
        // Then it goes on with the oldest event still buffered.
        let (name, data) = next_event(&mut stream, &mut buf).await;
        assert_eq!(name, "member");
        assert_eq!(data["incarnation"], overflow);
        server.stop().await;
    }

    #[test]
    fn bearer_token_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn token_comparison_needs_the_exact_token() {
        let expected: [u8; 32] = Sha256::digest(b"s3cret").into();
        assert!(token_matches(&expected, "s3cret"));
        assert!(!token_matches(&expected, "s3cre"));
        assert!(!token_matches(&expected, "s3cret "));
        assert!(!token_matches(&expected, ""));
    }

    #[test]
    fn sse_names_cannot_break_the_stream() {
        assert_eq!(sse_name("member\r\nevil"), "memberevil");
    }
}
