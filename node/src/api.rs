//! The node's HTTP API: JSON views of [`Shared`] for `baton` and scripts, a
//! server-sent event stream of member changes, and Prometheus metrics. Handlers
//! only read [`Shared`]; the driver is the only writer, and session requests
//! (open, close, report) go to it as [`SessionCommand`]s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use baton_protocol::map::{
    MAX_CLIENT_BYTES, MAX_ID_CHARS, MAX_PARAM_KEY_BYTES, MAX_PARAM_VALUE_BYTES, MAX_PARAMS,
    MAX_SERVICE_CHARS,
};
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, timeout_at};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::state::{
    CommandError, MemberView, PeerView, ReportBody, SessionCommand, SessionView, Shared,
};

/// Interval of the SSE keep-alive comments, so that proxies and clients can
/// tell a quiet stream from a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a session request (open, close, report) waits for the driver,
/// queueing included, before the API answers 503.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest jitter or RTT a report may carry, in milliseconds (an hour):
/// anything larger is a client bug, and the driver turns these into
/// `Duration`s.
pub const MAX_REPORT_MS: f64 = 3_600_000.0;

/// Every path this API serves, for the 404 message.
const PATHS: &str = "GET /v1/status, GET /v1/members, GET /v1/peers, \
                     GET|POST /v1/sessions, GET|DELETE /v1/sessions/{id}, \
                     POST /v1/sessions/{id}/report, GET /v1/events, GET /metrics";

/// The router of the API. With `token`, every request must carry
/// `Authorization: Bearer <token>`.
///
/// Event streams opened on this router end only when the client leaves; use
/// [`serve`] to have them end at shutdown.
pub fn router(shared: Arc<Shared>, token: Option<String>) -> Router {
    build(shared, token, None, COMMAND_TIMEOUT)
}

/// Serves the API on `listener` until `shutdown` completes, then closes the
/// event streams and waits for in-flight requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, shared, token, shutdown, COMMAND_TIMEOUT).await
}

/// [`serve`], with session requests waiting `command_timeout` for the driver.
async fn serve_with(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    command_timeout: Duration,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    let app = build(shared, token, Some(closing_rx), command_timeout);
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

    /// A 400 Bad Request.
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<CommandError> for ApiError {
    /// The driver's refusal; a status that is not an HTTP error becomes 500,
    /// so that a refusal never reads as success.
    fn from(e: CommandError) -> Self {
        let status = StatusCode::from_u16(e.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if e.message.is_empty() {
            "the node refused the request without saying why".to_owned()
        } else {
            e.message
        };
        ApiError::new(status, message)
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
    /// How long a session request waits for the driver.
    command_timeout: Duration,
}

fn build(
    shared: Arc<Shared>,
    token: Option<String>,
    closing: Option<watch::Receiver<bool>>,
    command_timeout: Duration,
) -> Router {
    let mut app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/peers", get(peers))
        .route("/v1/sessions", get(list_sessions).post(open_session))
        .route("/v1/sessions/{id}", get(get_session).delete(close_session))
        .route("/v1/sessions/{id}/report", post(report_session))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(token) = token {
        // Only the digest is kept: comparing digests takes the same time
        // whatever the length or content of the presented token.
        let expected: Arc<[u8; 32]> = Arc::new(Sha256::digest(token.as_bytes()).into());
        app = app.layer(middleware::from_fn_with_state(expected, require_token));
    }
    app.with_state(AppState {
        shared,
        closing,
        command_timeout,
    })
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
    let (allow, use_) = allowed_methods(&path);
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {path}: use {use_}"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The methods a path takes: the `Allow` header and the words of the 405
/// message.
fn allowed_methods(path: &str) -> (&'static str, &'static str) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v1", "sessions"] => ("GET,HEAD,POST", "GET or POST"),
        ["v1", "sessions", _] => ("GET,HEAD,DELETE", "GET or DELETE"),
        ["v1", "sessions", _, "report"] => ("POST", "POST"),
        _ => ("GET,HEAD", "GET"),
    }
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

async fn list_sessions(State(st): State<AppState>) -> Json<Vec<SessionView>> {
    Json(st.shared.sessions_sorted())
}

async fn get_session(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_id(id)?;
    match st.shared.sessions.get(&id) {
        Some(view) => Ok(Json(view.value().clone())),
        None => Err(no_session(&id)),
    }
}

async fn open_session(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let OpenRequest {
        service,
        client,
        params,
    } = OpenRequest::parse(json_body(&headers, body)?)?;
    let view = st
        .ask(
            "open the session",
            "the session may still open: see GET /v1/sessions (baton sessions)",
            |reply| SessionCommand::Open {
                service,
                client,
                params,
                reply,
            },
        )
        .await?;
    let mut response = (StatusCode::CREATED, Json(&view)).into_response();
    // Session ids are plain ASCII; were one not, the header is only a hint.
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn close_session(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_id(id)?;
    let view = st
        .ask(
            &format!("close session {}", quoted(&id)),
            "the session may still close: see GET /v1/sessions/{id}",
            |reply| SessionCommand::Close {
                id: id.clone(),
                reply,
            },
        )
        .await?;
    Ok(Json(view))
}

async fn report_session(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let id = session_id(id)?;
    let report = parse_report(json_body(&headers, body)?)?;
    st.ask(
        &format!("take the report on session {}", quoted(&id)),
        "the report may still count",
        |reply| SessionCommand::Report {
            id: id.clone(),
            report,
            reply,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

impl AppState {
    /// Sends the command that `make` builds around a reply channel to the
    /// driver and waits for its answer, queueing included, at most
    /// `command_timeout`. `action` says what was asked ("open the session"),
    /// `aftermath` what may still happen if the answer comes too late.
    async fn ask<T>(
        &self,
        action: &str,
        aftermath: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, CommandError>>) -> SessionCommand,
    ) -> Result<T, ApiError> {
        let unavailable = |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
        let not_running = || {
            unavailable(format!(
                "cannot {action}: this node's session driver is not running \
                 (the node is shutting down or failed); retry on another node"
            ))
        };
        let wait = humantime::format_duration(self.command_timeout);
        let deadline = Instant::now() + self.command_timeout;
        let (reply, answer) = oneshot::channel();
        match timeout_at(deadline, self.shared.commands.send(make(reply))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(not_running()),
            // Never queued, so nothing happened.
            Err(_) => {
                return Err(unavailable(format!(
                    "cannot {action}: this node is too busy, its queue of session \
                     requests stayed full for {wait}; nothing was done, retry later"
                )));
            }
        }
        match timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer.map_err(ApiError::from),
            Ok(Err(_)) => Err(not_running()),
            Err(_) => Err(unavailable(format!(
                "this node did not {action} within {wait}: it may be overloaded; {aftermath}"
            ))),
        }
    }
}

/// The `{id}` of a session path. Ids that no session can have are answered
/// with 404 here rather than bothering the driver.
fn session_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|e| {
        ApiError::bad_request(format!("bad session id in the path: {}", e.body_text()))
    })?;
    let valid = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        let mut error = no_session(&id);
        error.message.push_str(&format!(
            ": session ids are 1 to {MAX_ID_CHARS} characters of A-Z, a-z, 0-9, '_' and '-'"
        ));
        return Err(error);
    }
    Ok(id)
}

fn no_session(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no session {} on this node", quoted(id)),
    )
}

/// `text` in double quotes, escaped, cut to 80 characters: safe to put in a
/// message whatever the client sent.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The JSON of a request body. The body must be declared JSON: a web page
/// cannot send that header to another origin without the browser asking this
/// API first (CORS preflight), which it does not answer, so a page the
/// operator visits cannot open or close sessions.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let declared_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !declared_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with the header 'Content-Type: application/json' \
             (curl: --json '{...}')",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// What a JSON value is, for messages: "a string", "null"...
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The fields of a JSON object body that may only have the fields `allowed`.
fn object(value: Value, allowed: &[&str], example: &str) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object such as {example}, not {}",
            json_kind(&value)
        )));
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {}: the fields are {}",
            quoted(unknown),
            allowed.join(", ")
        )));
    }
    Ok(fields)
}

/// A required field: absent is an error, and so is null.
fn required<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    example: &str,
) -> Result<&'a Value, ApiError> {
    fields.get(name).ok_or_else(|| {
        ApiError::bad_request(format!("missing field \"{name}\", such as {example}"))
    })
}

fn string_field(
    fields: &Map<String, Value>,
    name: &str,
    example: &str,
) -> Result<String, ApiError> {
    match required(fields, name, example)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(ApiError::bad_request(format!(
            "field \"{name}\" must be a string such as {example}, not {}",
            json_kind(other)
        ))),
    }
}

fn number_field(fields: &Map<String, Value>, name: &str, example: &str) -> Result<f64, ApiError> {
    let value = required(fields, name, example)?;
    match value.as_f64() {
        Some(n) => Ok(n),
        None => Err(ApiError::bad_request(format!(
            "field \"{name}\" must be a number such as {example}, not {}",
            json_kind(value)
        ))),
    }
}

/// A duration in milliseconds, from 0 to [`MAX_REPORT_MS`].
fn millis_field(fields: &Map<String, Value>, name: &str, example: &str) -> Result<f64, ApiError> {
    let ms = number_field(fields, name, example)?;
    if (0.0..=MAX_REPORT_MS).contains(&ms) {
        Ok(ms)
    } else {
        // As written: 1e300 rather than its 301 digits.
        Err(ApiError::bad_request(format!(
            "field \"{name}\" is {}: it must be from 0 to {MAX_REPORT_MS} milliseconds",
            fields[name]
        )))
    }
}

/// The body of `POST /v1/sessions`, checked.
#[derive(Debug, PartialEq)]
struct OpenRequest {
    service: String,
    client: String,
    params: BTreeMap<String, String>,
}

impl OpenRequest {
    const EXAMPLE: &str =
        r#"{"service": "rtp-audio", "client": "127.0.0.1:5004", "params": {"source": "tone"}}"#;

    /// Checks the fields and the limits of the session map, so that a bad
    /// request is answered with the field at fault.
    fn parse(body: Value) -> Result<Self, ApiError> {
        let fields = object(body, &["service", "client", "params"], Self::EXAMPLE)?;
        let service = string_field(&fields, "service", "\"rtp-audio\"")?;
        let chars = service.chars().count();
        if chars == 0 || chars > MAX_SERVICE_CHARS {
            return Err(ApiError::bad_request(format!(
                "field \"service\" must be 1 to {MAX_SERVICE_CHARS} characters, such as \"rtp-audio\""
            )));
        }
        let client = string_field(&fields, "client", "\"127.0.0.1:5004\"")?;
        if client.is_empty() || client.len() > MAX_CLIENT_BYTES {
            return Err(ApiError::bad_request(format!(
                "field \"client\" must be 1 to {MAX_CLIENT_BYTES} bytes, such as \"127.0.0.1:5004\""
            )));
        }
        let params = match fields.get("params") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(params)) => Self::params(params)?,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "field \"params\" must be an object of strings such as {{\"source\": \"tone\"}}, \
                     not {}",
                    json_kind(other)
                )));
            }
        };
        Ok(OpenRequest {
            service,
            client,
            params,
        })
    }

    fn params(params: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
        if params.len() > MAX_PARAMS {
            return Err(ApiError::bad_request(format!(
                "field \"params\" has {} parameters, at most {MAX_PARAMS} are allowed",
                params.len()
            )));
        }
        let mut out = BTreeMap::new();
        for (key, value) in params {
            if key.is_empty() || key.len() > MAX_PARAM_KEY_BYTES {
                return Err(ApiError::bad_request(format!(
                    "parameter name {} in \"params\" must be 1 to {MAX_PARAM_KEY_BYTES} bytes",
                    quoted(key)
                )));
            }
            let Value::String(value) = value else {
                return Err(ApiError::bad_request(format!(
                    "parameter {} in \"params\" must be a string, not {}: write numbers \
                     and booleans in quotes, such as \"20\"",
                    quoted(key),
                    json_kind(value)
                )));
            };
            if value.len() > MAX_PARAM_VALUE_BYTES {
                return Err(ApiError::bad_request(format!(
                    "parameter {} in \"params\" is {} bytes, at most {MAX_PARAM_VALUE_BYTES} \
                     are allowed",
                    quoted(key),
                    value.len()
                )));
            }
            out.insert(key.clone(), value.clone());
        }
        Ok(out)
    }
}

/// The body of `POST /v1/sessions/{id}/report`, checked.
fn parse_report(body: Value) -> Result<ReportBody, ApiError> {
    const EXAMPLE: &str = r#"{"loss": 0.02, "jitter_ms": 4.0, "rtt_ms": 30.0, "packets": 500}"#;
    let fields = object(body, &["loss", "jitter_ms", "rtt_ms", "packets"], EXAMPLE)?;
    let loss = number_field(&fields, "loss", "0.02")?;
    if !(0.0..=1.0).contains(&loss) {
        return Err(ApiError::bad_request(format!(
            "field \"loss\" is {}: it is the fraction of packets lost, from 0 to 1 \
             (0.02 is 2%)",
            fields["loss"]
        )));
    }
    let jitter_ms = millis_field(&fields, "jitter_ms", "4.0")?;
    let rtt_ms = millis_field(&fields, "rtt_ms", "30.0")?;
    let packets = match fields.get("packets") {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_u64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "field \"packets\" must be a whole number of packets, 0 or more, not {}",
                match value {
                    Value::Number(n) => n.to_string(),
                    other => json_kind(other).to_owned(),
                }
            ))
        })?,
    };
    Ok(ReportBody {
        loss,
        jitter_ms,
        rtt_ms,
        packets,
    })
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
    let (mut active, mut closed, mut hosted) = (0usize, 0usize, 0usize);
    for session in shared.sessions.iter() {
        match session.state.as_str() {
            "active" => active += 1,
            "closed" => closed += 1,
            _ => {}
        }
        hosted += usize::from(session.hosted_here);
    }
    family(
        &mut out,
        ("baton_sessions", "gauge"),
        "Sessions in this node's copy of the session map by state (closed: tombstones \
         not yet collected).",
        Some("state"),
        &[
            ("active", active.to_string()),
            ("closed", closed.to_string()),
        ],
    );
    family(
        &mut out,
        ("baton_sessions_hosted", "gauge"),
        "Sessions this node hosts now.",
        None,
        &[("", hosted.to_string())],
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

/// A stand-in for the driver in tests of the API and the CLI: it answers
/// session commands the way the driver's contract says.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::state::MoveView;

    /// Reports the fake driver accepted, by session id.
    pub(crate) type Reports = Arc<Mutex<Vec<(String, ReportBody)>>>;

    /// A session as the driver shows it.
    pub(crate) fn view(
        id: &str,
        primary: &str,
        primary_name: &str,
        backups: &[&str],
    ) -> SessionView {
        SessionView {
            id: id.to_owned(),
            service: "rtp-audio".to_owned(),
            primary: primary.to_owned(),
            primary_name: primary_name.to_owned(),
            backups: backups.iter().map(|b| (*b).to_owned()).collect(),
            epoch: 1,
            version: 0,
            state: "active".to_owned(),
            client: "127.0.0.1:5004".to_owned(),
            location: "127.0.0.0/24".to_owned(),
            params: BTreeMap::new(),
            started_ms: 1_772_368_496_789,
            updated_ms: 1_772_368_496_789,
            reason: "open".to_owned(),
            history: vec![MoveView {
                epoch: 1,
                primary: primary.to_owned(),
                reason: "open".to_owned(),
                at_ms: 1_772_368_496_789,
            }],
            hosted_here: false,
        }
    }

    /// Answers the commands of `commands` against `shared.sessions` until
    /// the test ends:
    /// - open: `rtp-audio` opens `s1`, `s2`... hosted here; any other
    ///   service is refused with 400;
    /// - close: 404 for an unknown session, 409 naming the primary when it
    ///   is another node, else the closed session;
    /// - report: 404 for an unknown session, else recorded in the result.
    pub(crate) fn spawn(
        shared: Arc<Shared>,
        mut commands: mpsc::Receiver<SessionCommand>,
    ) -> Reports {
        let reports = Reports::default();
        let seen = reports.clone();
        tokio::spawn(async move {
            let mut opened = 0;
            while let Some(command) = commands.recv().await {
                let unknown = |id: &str| CommandError {
                    status: 404,
                    message: format!("no session {id:?} on this node"),
                };
                match command {
                    SessionCommand::Open {
                        service,
                        client,
                        params,
                        reply,
                    } => {
                        let answer = if service == "rtp-audio" {
                            opened += 1;
                            let local = &shared.local;
                            let view = SessionView {
                                client,
                                params,
                                hosted_here: true,
                                ..view(&format!("s{opened}"), &local.id, &local.name, &[])
                            };
                            // Backups: the alive members, by name.
                            let view = SessionView {
                                backups: shared
                                    .members_sorted()
                                    .into_iter()
                                    .filter(|m| m.state == "alive")
                                    .map(|m| m.id)
                                    .collect(),
                                ..view
                            };
                            shared.sessions.insert(view.id.clone(), view.clone());
                            Ok(view)
                        } else {
                            Err(CommandError {
                                status: 400,
                                message: format!("unknown service {service:?}"),
                            })
                        };
                        let _ = reply.send(answer);
                    }
                    SessionCommand::Close { id, reply } => {
                        let answer = match shared.sessions.get_mut(&id) {
                            None => Err(unknown(&id)),
                            Some(s) if s.primary != shared.local.id => Err(CommandError {
                                status: 409,
                                message: format!(
                                    "this node is not the primary of session {id:?}: close it on \
                                     its primary {} ({})",
                                    s.primary_name, s.primary
                                ),
                            }),
                            Some(mut s) => {
                                s.state = "closed".to_owned();
                                s.hosted_here = false;
                                s.reason = "close".to_owned();
                                Ok(s.clone())
                            }
                        };
                        let _ = reply.send(answer);
                    }
                    SessionCommand::Report { id, report, reply } => {
                        let answer = if shared.sessions.contains_key(&id) {
                            seen.lock().unwrap().push((id, report));
                            Ok(())
                        } else {
                            Err(unknown(&id))
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
        });
        reports
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};
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

    /// A node whose session driver is gone (its receiver is dropped).
    fn shared() -> Arc<Shared> {
        shared_with(mpsc::channel(1).0)
    }

    /// A node whose session driver is the fake one.
    fn shared_with_driver() -> (Arc<Shared>, fake::Reports) {
        let (commands, receiver) = mpsc::channel(8);
        let shared = shared_with(commands);
        let reports = fake::spawn(shared.clone(), receiver);
        (shared, reports)
    }

    fn shared_with(commands: mpsc::Sender<SessionCommand>) -> Arc<Shared> {
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
        let old = SessionView {
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
            reason: None,
        }
    }

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(shared: Arc<Shared>, token: Option<&str>) -> Server {
            Self::start_with(shared, token, COMMAND_TIMEOUT).await
        }

        async fn start_with(
            shared: Arc<Shared>,
            token: Option<&str>,
            command_timeout: Duration,
        ) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_with(
                listener,
                shared,
                token.map(str::to_owned),
                async move {
                    let _ = stopped.await;
                },
                command_timeout,
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
        location: String,
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
        send(addr, method, path, auth, None).await
    }

    /// A request with `body` as `(content type, bytes)`, if any.
    async fn send(
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

    async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
        let body = Some(("application/json", body.as_bytes().to_vec()));
        send(addr, "POST", path, None, body).await
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
            "GET|POST /v1/sessions",
            "GET|DELETE /v1/sessions/{id}",
            "POST /v1/sessions/{id}/report",
            "/v1/events",
            "/metrics",
        ] {
            assert!(message.contains(path), "{message}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn wrong_method_is_a_json_405_naming_the_methods_of_the_path() {
        let server = Server::start(shared(), None).await;
        for (method, path, allow, advice) in [
            ("POST", "/v1/members", "GET,HEAD", "use GET"),
            ("PUT", "/v1/sessions", "GET,HEAD,POST", "use GET or POST"),
            (
                "POST",
                "/v1/sessions/s1",
                "GET,HEAD,DELETE",
                "use GET or DELETE",
            ),
            ("GET", "/v1/sessions/s1/report", "POST", "use POST"),
        ] {
            let reply = request(server.addr, method, path, None).await;
            assert_eq!(reply.status, 405, "{method} {path}");
            let message = reply.error();
            assert!(
                message.contains(&format!(
                    "method {method} is not allowed on {path}: {advice}"
                )),
                "{message}"
            );
            assert_eq!(reply.allow, allow, "{method} {path}");
        }
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
        assert_eq!(request(addr, "GET", "/v1/sessions", None).await.status, 401);
        let open = Some(("application/json", br#"{"service": "rtp-audio"}"#.to_vec()));
        let reply = send(addr, "POST", "/v1/sessions", None, open).await;
        assert_eq!(reply.status, 401);

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
            "# TYPE baton_sessions gauge",
            "baton_sessions{state=\"active\"} 1",
            "baton_sessions{state=\"closed\"} 1",
            "# TYPE baton_sessions_hosted gauge",
            "baton_sessions_hosted 0",
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
        assert_eq!(families.len(), 16);
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

    #[tokio::test]
    async fn sessions_are_listed_sorted_with_the_contract_fields() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let reply = get(server.addr, "/v1/sessions").await;
        assert_eq!(reply.status, 200);
        assert!(reply.content_type.starts_with("application/json"));
        let sessions = reply.json();
        let list = sessions.as_array().unwrap();
        let ids: Vec<&str> = list.iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["s-bravo", "s-old"]);
        // DESIGN.md: scripts rely on these fields.
        assert_eq!(list[0]["service"], "rtp-audio");
        assert_eq!(list[0]["primary"], "12D3KooWBravo");
        assert_eq!(
            list[0]["backups"],
            json!(["12D3KooWLocal", "12D3KooWCharlie"])
        );
        assert_eq!(list[0]["epoch"], 1);
        assert_eq!(
            sessions,
            serde_json::to_value(shared.sessions_sorted()).unwrap()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn one_session_by_id_or_a_404_naming_it() {
        let shared = shared();
        let server = Server::start(shared.clone(), None).await;
        let reply = get(server.addr, "/v1/sessions/s-bravo").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.json(),
            serde_json::to_value(fake::view(
                "s-bravo",
                "12D3KooWBravo",
                "bravo",
                &["12D3KooWLocal", "12D3KooWCharlie"]
            ))
            .unwrap()
        );

        let reply = get(server.addr, "/v1/sessions/nope").await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error(), "no session \"nope\" on this node");
        // An id no session can have: the message says what ids look like.
        let reply = get(server.addr, "/v1/sessions/a%20%22b").await;
        assert_eq!(reply.status, 404);
        assert!(
            reply
                .error()
                .starts_with("no session \"a \\\"b\" on this node: session ids are 1 to 64"),
            "{}",
            reply.error()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn open_goes_to_the_driver_and_answers_201_with_the_session() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared.clone(), None).await;
        let reply = post_json(
            server.addr,
            "/v1/sessions",
            r#"{"service": "rtp-audio", "client": "127.0.0.1:5004", "params": {"codec": "pcmu"}}"#,
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.location, "/v1/sessions/s1");
        let session = reply.json();
        assert_eq!(session["id"], "s1");
        assert_eq!(session["primary"], "12D3KooWLocal");
        assert_eq!(session["client"], "127.0.0.1:5004");
        assert_eq!(session["params"], json!({"codec": "pcmu"}));
        assert_eq!(session["hosted_here"], true);
        // Now listed, and counted as hosted.
        assert_eq!(get(server.addr, "/v1/sessions/s1").await.json(), session);
        let metrics = get(server.addr, "/metrics").await.body;
        assert!(
            metrics.lines().any(|l| l == "baton_sessions_hosted 1"),
            "{metrics}"
        );

        // Without params, and with a charset on the content type.
        let body = br#"{"service": "rtp-audio", "client": "127.0.0.1:5006", "params": null}"#;
        let typed = Some(("application/json; charset=utf-8", body.to_vec()));
        let reply = send(server.addr, "POST", "/v1/sessions", None, typed).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.json()["params"], json!({}));
        server.stop().await;
    }

    #[tokio::test]
    async fn the_drivers_refusal_keeps_its_status_and_message() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared, None).await;
        let reply = post_json(
            server.addr,
            "/v1/sessions",
            r#"{"service": "fax", "client": "127.0.0.1:5004"}"#,
        )
        .await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.error(), "unknown service \"fax\"");
        server.stop().await;
    }

    #[test]
    fn a_refusal_that_is_not_an_http_error_becomes_500() {
        for (status, expected) in [(409, 409), (503, 503), (200, 500), (99, 500), (1000, 500)] {
            let error = ApiError::from(CommandError {
                status,
                message: "m".to_owned(),
            });
            assert_eq!(error.status.as_u16(), expected, "{status}");
        }
        let error = ApiError::from(CommandError {
            status: 409,
            message: String::new(),
        });
        assert!(error.message.contains("without saying why"));
    }

    #[tokio::test]
    async fn bad_open_bodies_are_refused_before_the_driver_naming_the_field() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared.clone(), None).await;
        let long = "x".repeat(MAX_CLIENT_BYTES + 1);
        let many: Map<String, Value> = (0..=MAX_PARAMS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let cases = [
            (r#"{"service": "rtp-audio","#.to_owned(), "not valid JSON"),
            ("[1, 2]".to_owned(), "must be a JSON object such as"),
            (
                r#"{"client": "127.0.0.1:5004"}"#.to_owned(),
                "missing field \"service\"",
            ),
            (
                r#"{"service": "rtp-audio"}"#.to_owned(),
                "missing field \"client\"",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "codec": "pcmu"}"#.to_owned(),
                "unknown field \"codec\": the fields are service, client, params",
            ),
            (
                r#"{"service": 7, "client": "c"}"#.to_owned(),
                "field \"service\" must be a string such as \"rtp-audio\", not a number",
            ),
            (
                r#"{"service": "", "client": "c"}"#.to_owned(),
                "field \"service\" must be 1 to 32 characters",
            ),
            (
                format!(r#"{{"service": "rtp-audio", "client": "{long}"}}"#),
                "field \"client\" must be 1 to 128 bytes",
            ),
            (
                r#"{"service": "rtp-audio", "client": null}"#.to_owned(),
                "field \"client\" must be a string such as \"127.0.0.1:5004\", not null",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "params": ["a"]}"#.to_owned(),
                "field \"params\" must be an object of strings",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "params": {"ptime": 20}}"#.to_owned(),
                "parameter \"ptime\" in \"params\" must be a string, not a number",
            ),
            (
                r#"{"service": "rtp-audio", "client": "c", "params": {"": "x"}}"#.to_owned(),
                "parameter name \"\" in \"params\" must be 1 to 64 bytes",
            ),
            (
                json!({"service": "rtp-audio", "client": "c", "params": many}).to_string(),
                "field \"params\" has 33 parameters, at most 32",
            ),
        ];
        for (body, expected) in cases {
            let reply = post_json(server.addr, "/v1/sessions", &body).await;
            assert_eq!(reply.status, 400, "{body}");
            let message = reply.error();
            assert!(message.contains(expected), "{body}: {message}");
        }
        assert_eq!(shared.sessions.len(), 2, "the driver opened a session");
        server.stop().await;
    }

    #[tokio::test]
    async fn bodies_must_be_declared_json_and_small() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared.clone(), None).await;
        let body = br#"{"service": "rtp-audio", "client": "127.0.0.1:5004"}"#.to_vec();
        // What a web page can send to another origin without asking first.
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let reply = send(
                server.addr,
                "POST",
                "/v1/sessions",
                None,
                content_type.map(|c| (c, body.clone())),
            )
            .await;
            assert_eq!(reply.status, 415, "{content_type:?}");
            assert!(
                reply.error().contains("Content-Type: application/json"),
                "{}",
                reply.error()
            );
        }
        let huge = format!(
            r#"{{"service": "rtp-audio", "client": "c", "params": {{"pad": "{}"}}}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let reply = post_json(server.addr, "/v1/sessions", &huge).await;
        assert_eq!(reply.status, 413);
        assert!(
            reply.error().contains("larger than 65536 bytes"),
            "{}",
            reply.error()
        );
        let reply = post_json(server.addr, "/v1/sessions/s-bravo/report", &huge).await;
        assert_eq!(reply.status, 413);
        assert_eq!(shared.sessions.len(), 2, "the driver opened a session");
        server.stop().await;
    }

    #[tokio::test]
    async fn close_answers_the_closed_session_or_the_drivers_refusal() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared, None).await;
        let open = r#"{"service": "rtp-audio", "client": "127.0.0.1:5004"}"#;
        assert_eq!(
            post_json(server.addr, "/v1/sessions", open).await.status,
            201
        );

        let reply = request(server.addr, "DELETE", "/v1/sessions/s1", None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let closed = reply.json();
        assert_eq!(closed["id"], "s1");
        assert_eq!(closed["state"], "closed");

        // Another node is the primary: 409, and the message says which.
        let reply = request(server.addr, "DELETE", "/v1/sessions/s-bravo", None).await;
        assert_eq!(reply.status, 409);
        assert!(
            reply.error().contains("bravo (12D3KooWBravo)"),
            "{}",
            reply.error()
        );
        let reply = request(server.addr, "DELETE", "/v1/sessions/nope", None).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error(), "no session \"nope\" on this node");
        server.stop().await;
    }

    #[tokio::test]
    async fn report_goes_to_the_driver_and_answers_204() {
        let (shared, reports) = shared_with_driver();
        let server = Server::start(shared, None).await;
        let reply = post_json(
            server.addr,
            "/v1/sessions/s-bravo/report",
            r#"{"loss": 0.02, "jitter_ms": 4.0, "rtt_ms": 30, "packets": 500}"#,
        )
        .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        assert!(reply.body.is_empty());
        // `packets` may be left out.
        let reply = post_json(
            server.addr,
            "/v1/sessions/s-bravo/report",
            r#"{"loss": 1, "jitter_ms": 0, "rtt_ms": 0.5}"#,
        )
        .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        assert_eq!(
            *reports.lock().unwrap(),
            [
                (
                    "s-bravo".to_owned(),
                    ReportBody {
                        loss: 0.02,
                        jitter_ms: 4.0,
                        rtt_ms: 30.0,
                        packets: 500
                    }
                ),
                (
                    "s-bravo".to_owned(),
                    ReportBody {
                        loss: 1.0,
                        jitter_ms: 0.0,
                        rtt_ms: 0.5,
                        packets: 0
                    }
                ),
            ]
        );
        let reply = post_json(
            server.addr,
            "/v1/sessions/nope/report",
            r#"{"loss": 0, "jitter_ms": 0, "rtt_ms": 0}"#,
        )
        .await;
        assert_eq!(reply.status, 404);
        server.stop().await;
    }

    #[tokio::test]
    async fn bad_reports_are_400_naming_the_field() {
        let (shared, reports) = shared_with_driver();
        let server = Server::start(shared, None).await;
        for (body, expected) in [
            (r#"{"jitter_ms": 1, "rtt_ms": 1}"#, "missing field \"loss\""),
            (
                r#"{"loss": 1.5, "jitter_ms": 1, "rtt_ms": 1}"#,
                "field \"loss\" is 1.5: it is the fraction of packets lost, from 0 to 1",
            ),
            (
                r#"{"loss": -0.1, "jitter_ms": 1, "rtt_ms": 1}"#,
                "field \"loss\" is -0.1",
            ),
            (
                r#"{"loss": "5%", "jitter_ms": 1, "rtt_ms": 1}"#,
                "field \"loss\" must be a number such as 0.02, not a string",
            ),
            (
                r#"{"loss": 0, "jitter_ms": -1, "rtt_ms": 1}"#,
                "field \"jitter_ms\" is -1: it must be from 0 to 3600000 milliseconds",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1e300}"#,
                "field \"rtt_ms\" is 1e+300: it must be",
            ),
            (r#"{"loss": 0, "jitter_ms": 1}"#, "missing field \"rtt_ms\""),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1, "packets": -3}"#,
                "field \"packets\" must be a whole number of packets, 0 or more, not -3",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1, "packets": 1.5}"#,
                "not 1.5",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1, "mos": 4}"#,
                "unknown field \"mos\": the fields are loss, jitter_ms, rtt_ms, packets",
            ),
            (
                r#"{"loss": 0, "jitter_ms": 1, "rtt_ms": 1e999}"#,
                "not valid JSON",
            ),
        ] {
            let reply = post_json(server.addr, "/v1/sessions/s-bravo/report", body).await;
            assert_eq!(reply.status, 400, "{body}");
            let message = reply.error();
            assert!(message.contains(expected), "{body}: {message}");
        }
        assert!(reports.lock().unwrap().is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn a_driver_that_does_not_answer_is_a_503_after_the_timeout() {
        // A queue of one that nobody reads.
        let (commands, _receiver) = mpsc::channel(1);
        let server =
            Server::start_with(shared_with(commands), None, Duration::from_millis(100)).await;
        let open = r#"{"service": "rtp-audio", "client": "127.0.0.1:5004"}"#;
        // Queued, never answered: it may still happen.
        let reply = post_json(server.addr, "/v1/sessions", open).await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.error(),
            "this node did not open the session within 100ms: it may be overloaded; \
             the session may still open: see GET /v1/sessions (baton sessions)"
        );
        // The queue is full now: nothing was done.
        let reply = request(server.addr, "DELETE", "/v1/sessions/s1", None).await;
        assert_eq!(reply.status, 503);
        assert!(
            reply.error().starts_with(
                "cannot close session \"s1\": this node is too busy, its queue of session \
                 requests stayed full for 100ms; nothing was done"
            ),
            "{}",
            reply.error()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn a_driver_that_is_gone_is_a_503() {
        let (commands, receiver) = mpsc::channel(1);
        let server = Server::start(shared_with(commands.clone()), None).await;
        let report = r#"{"loss": 0, "jitter_ms": 0, "rtt_ms": 0}"#;
        drop(receiver);
        let reply = post_json(server.addr, "/v1/sessions/s-bravo/report", report).await;
        assert_eq!(reply.status, 503);
        assert!(
            reply
                .error()
                .contains("this node's session driver is not running"),
            "{}",
            reply.error()
        );

        // Taken, then dropped without an answer.
        let (commands, mut receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            while let Some(command) = receiver.recv().await {
                drop(command);
            }
        });
        let server2 = Server::start(shared_with(commands), None).await;
        let reply = request(server2.addr, "DELETE", "/v1/sessions/s-bravo", None).await;
        assert_eq!(reply.status, 503);
        assert!(
            reply.error().contains("driver is not running"),
            "{}",
            reply.error()
        );
        server.stop().await;
        server2.stop().await;
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
