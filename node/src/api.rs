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
