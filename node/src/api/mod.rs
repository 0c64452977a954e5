//! The node's HTTP API: JSON views of [`Shared`] for `baton` and scripts, a
//! server-sent event stream of member changes, and Prometheus metrics. This
//! module wires the routes; each concern has its own file below.
//!
//! Handlers only read [`Shared`]; the driver is the only writer, and session
//! requests (open, close, report) go to it as
//! [`SessionCommand`](crate::state::SessionCommand)s.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::state::Shared;

mod auth;
mod error;
mod events;
#[cfg(test)]
pub(crate) mod fake;
mod guard;
mod health;
mod metrics;
mod overlay;
mod request;
mod server;
mod sessions;
#[cfg(test)]
pub(crate) mod testing;
mod web;

pub use error::ApiError;
pub use events::KEEP_ALIVE;
pub use request::{MAX_REPORT_MS, check_bodies};
pub use server::{LIMITS, Limits, raise_open_files};
pub use web::PAGE_CSP;

/// Who may use the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// With a token, every request but `GET /v1/health` must carry
    /// `Authorization: Bearer <token>` (or the read token, for reads).
    pub token: Option<String>,
    /// A token that opens `GET` requests only (views, events, `/metrics`).
    pub read_token: Option<String>,
    /// Names requests may give in `Host` besides IP addresses and
    /// `localhost` (see the `guard` module: DNS rebinding).
    pub hosts: Vec<String>,
    /// Active sessions one caller (API client IP address) may have opened
    /// through this node; `None`: no cap.
    pub max_sessions_per_caller: Option<usize>,
}

impl Access {
    /// Access with `token` (if any), no read token, no extra host names.
    pub fn token(token: Option<String>) -> Self {
        Access {
            token,
            ..Access::default()
        }
    }
}

/// How long a session request (open, close, report) waits for the driver,
/// queueing included, before the API answers 503.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every path this API serves, for the 404 message.
const PATHS: &str = "GET /ui/ (the web view), GET /v1/status, GET /v1/members, GET /v1/peers, \
                     GET|POST /v1/sessions, GET|DELETE /v1/sessions/{id}, \
                     POST /v1/sessions/{id}/report, GET /v1/events, GET /metrics, \
                     GET /v1/health";

/// The router of the API and of the web view, guarded by `access` (see
/// [`Access`]).
///
/// Event streams opened on this router end only when the client leaves; use
/// [`serve`] to have them end at shutdown.
pub fn router(shared: Arc<Shared>, access: &Access) -> Router {
    build(shared, access, None, COMMAND_TIMEOUT, LIMITS.body)
}

/// Serves the API on `listener` within [`LIMITS`] until `shutdown`
/// completes, then closes the event streams and waits for in-flight
/// requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, shared, access, shutdown, COMMAND_TIMEOUT, LIMITS).await
}

/// [`serve`], with session requests waiting `command_timeout` for the
/// driver, within `limits`.
async fn serve_with(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
    command_timeout: Duration,
    limits: Limits,
) -> std::io::Result<()> {
    let (closing_tx, closing_rx) = watch::channel(false);
    let app = build(
        shared,
        &access,
        Some(closing_rx),
        command_timeout,
        limits.body,
    );
    let signal = async move {
        shutdown.await;
        // Graceful shutdown waits for every open response, and an event
        // stream never ends by itself.
        let _ = closing_tx.send(true);
    };
    server::run(listener, app, limits, signal).await
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    /// Sessions opened through this API, by caller, for the per-caller cap.
    callers: Arc<sessions::Callers>,
    /// Set to `true` when the server shuts down; `None` when nobody will.
    closing: Option<watch::Receiver<bool>>,
    /// How long a session request waits for the driver.
    command_timeout: Duration,
}

fn build(
    shared: Arc<Shared>,
    access: &Access,
    closing: Option<watch::Receiver<bool>>,
    command_timeout: Duration,
    body_timeout: Duration,
) -> Router {
    let app = Router::new()
        .route("/v1/status", get(overlay::status))
        .route("/v1/members", get(overlay::members))
        .route("/v1/peers", get(overlay::peers))
        .route("/v1/sessions", get(sessions::list).post(sessions::open))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::close),
        )
        .route("/v1/sessions/{id}/report", post(sessions::report))
        .route("/v1/events", get(events::events))
        .route("/metrics", get(metrics::metrics));
    let mut app = web::routes(app);
    let tokens = access
        .token
        .as_deref()
        .map(|token| auth::tokens(token, access.read_token.as_deref()));
    if let Some(tokens) = &tokens {
        app = auth::login_route(app, tokens);
    }
    app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Layers wrap what is above them; the last added runs first: Host and
    // Origin, then the token, then the body, then the handler.
    app = server::bound_bodies(app, body_timeout);
    if let Some(tokens) = tokens {
        app = auth::require(app, tokens);
    }
    app = guard::check(app, guard::Hosts::new(&access.hosts));
    // After the guards, which wrap only the routes added before them.
    app.route("/v1/health", get(health::health))
        .with_state(AppState {
            shared,
            callers: Arc::new(sessions::Callers::new(access.max_sessions_per_caller)),
            closing,
            command_timeout,
        })
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

#[cfg(test)]
mod tests {
    use super::testing::{Server, get, request, shared};

    #[tokio::test]
    async fn unknown_path_is_a_json_404_naming_the_valid_paths() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/v1/nope").await;
        assert_eq!(reply.status, 404);
        assert!(reply.content_type.starts_with("application/json"));
        let message = reply.error();
        assert!(message.contains("/v1/nope"), "{message}");
        for path in [
            "GET /ui/",
            "/v1/status",
            "/v1/members",
            "/v1/peers",
            "GET|POST /v1/sessions",
            "GET|DELETE /v1/sessions/{id}",
            "POST /v1/sessions/{id}/report",
            "/v1/events",
            "/metrics",
            "/v1/health",
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
}
