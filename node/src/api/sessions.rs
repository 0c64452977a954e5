//! The session handlers: list and show sessions from [`Shared`], and hand
//! open, close and report requests to the driver, waiting a bounded time
//! for its answer.
//!
//! [`Shared`]: crate::state::Shared

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use baton_protocol::map::MAX_ID_CHARS;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};

use super::error::quoted;
use super::{ApiError, AppState, request};
use crate::state::{Closed, CommandError, SessionCommand, Shared};
use crate::views::{OpenRequest, Session};

pub(super) async fn list(State(st): State<AppState>) -> Json<Vec<Session>> {
    Json(st.shared.sessions_sorted())
}

pub(super) async fn get(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Session>, ApiError> {
    let id = session_id(id)?;
    match st.shared.sessions.get(&id) {
        Some(view) => Ok(Json(view.value().clone())),
        None => Err(no_session(&id)),
    }
}

/// The sessions each caller opened through this node's API, for
/// `max_sessions_per_caller`: a caller (an API client's IP address) may keep
/// that many active at once. Only callers with active sessions are kept, so
/// this stays as bounded as the sessions.
#[derive(Debug)]
pub(super) struct Callers {
    max: Option<usize>,
    opened: Mutex<HashMap<IpAddr, Vec<String>>>,
}

impl Callers {
    pub(super) fn new(max: Option<usize>) -> Self {
        Callers {
            max,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses `caller` a new session when it has its most active.
    fn check(&self, shared: &Shared, caller: IpAddr) -> Result<(), ApiError> {
        let Some(max) = self.max else { return Ok(()) };
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        let active = |id: &String| shared.sessions.get(id).is_some_and(|s| s.state == "active");
        opened.retain(|_, ids| {
            ids.retain(active);
            !ids.is_empty()
        });
        let n = opened.get(&caller).map_or(0, Vec::len);
        if n >= max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{caller} has {n} active sessions opened through this node, the most one \
                     caller may have (max_sessions_per_caller); close some first"
                ),
            ));
        }
        Ok(())
    }

    fn note(&self, caller: IpAddr, id: &str) {
        if self.max.is_some() {
            let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
            opened.entry(caller).or_default().push(id.to_string());
        }
    }
}

pub(super) async fn open(
    State(st): State<AppState>,
    caller: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let OpenRequest {
        service,
        client,
        params,
    } = request::open(request::json_body(&headers, body)?)?;
    let caller = caller.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(ip) = caller {
        st.callers.check(&st.shared, ip)?;
    }
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
    if let Some(ip) = caller {
        st.callers.note(ip, &view.id);
    }
    let mut response = (StatusCode::CREATED, Json(&view)).into_response();
    // Session ids are plain ASCII; were one not, the header is only a hint.
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{}", view.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(super) async fn close(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(id)?;
    let closed = st
        .ask(
            &format!("close session {}", quoted(&id)),
            "the session may still close: see GET /v1/sessions/{id}",
            |reply| SessionCommand::Close {
                id: id.clone(),
                reply,
            },
        )
        .await?;
    // The primary closes: 200 with the closed session. Any other node sends
    // the request on to the primary: 202 with the primary it went to.
    Ok(match closed {
        Closed::Here(view) => Json(*view).into_response(),
        Closed::Forwarded(to) => (StatusCode::ACCEPTED, Json(to)).into_response(),
    })
}

pub(super) async fn report(
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(id)?;
    let report = request::report(request::json_body(&headers, body)?)?;
    let forwarded = st
        .ask(
            &format!("take the report on session {}", quoted(&id)),
            "the report may still count",
            |reply| SessionCommand::Report {
                id: id.clone(),
                report,
                reply,
            },
        )
        .await?;
    // The primary weighs reports: one taken here answers 204, one sent on
    // to the primary 202 with the primary it went to.
    Ok(match forwarded {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(to) => (StatusCode::ACCEPTED, Json(to)).into_response(),
    })
}

impl AppState {
    /// Sends the command that `make` builds around a reply channel to the
    /// driver and waits for its answer, queueing included, at most
    /// `command_timeout`. `action` says what was asked ("open the session"),
    /// `aftermath` what may still happen if the answer comes too late.
    pub(super) async fn ask<T>(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::sync::mpsc;

    use crate::api::testing::{
        Server, fake, get, post_json, request, send, shared, shared_with, shared_with_driver,
    };
    use crate::views::Report;

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
    async fn one_caller_may_keep_a_bounded_number_of_sessions_open() {
        let (shared, _) = shared_with_driver();
        let access = crate::api::Access {
            max_sessions_per_caller: Some(2),
            ..crate::api::Access::default()
        };
        let server = Server::start_access(shared.clone(), access).await;
        let open =
            |port: u16| format!(r#"{{"service": "rtp-audio", "client": "127.0.0.1:{port}"}}"#);
        for port in [5004, 5006] {
            let reply = post_json(server.addr, "/v1/sessions", &open(port)).await;
            assert_eq!(reply.status, 201, "{}", reply.body);
        }
        let reply = post_json(server.addr, "/v1/sessions", &open(5008)).await;
        assert_eq!(reply.status, 429, "{}", reply.body);
        assert!(
            reply.error().contains("max_sessions_per_caller"),
            "{}",
            reply.error()
        );
        // A closed session no longer counts.
        let reply = send(server.addr, "DELETE", "/v1/sessions/s1", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let reply = post_json(server.addr, "/v1/sessions", &open(5008)).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
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

    #[tokio::test]
    async fn close_answers_the_closed_session_202_naming_the_primary_or_the_refusal() {
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

        // Closing it again answers the same.
        let reply = request(server.addr, "DELETE", "/v1/sessions/s1", None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["state"], "closed");

        // Another node is the primary: the request goes on to it, 202 names it.
        let reply = request(server.addr, "DELETE", "/v1/sessions/s-bravo", None).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        let to: crate::views::Forwarded = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            to,
            crate::views::Forwarded {
                forwarded_to: "12D3KooWBravo".to_owned(),
                forwarded_to_name: "bravo".to_owned(),
            }
        );
        let reply = request(server.addr, "DELETE", "/v1/sessions/nope", None).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error(), "no session \"nope\" on this node");
        server.stop().await;
    }

    #[tokio::test]
    async fn a_report_taken_by_the_primary_answers_204_one_sent_on_202() {
        let (shared, reports) = shared_with_driver();
        let server = Server::start(shared, None).await;
        // This node is s-old's primary: it takes the report.
        let reply = post_json(
            server.addr,
            "/v1/sessions/s-old/report",
            r#"{"loss": 0.02, "jitter_ms": 4.0, "rtt_ms": 30, "packets": 500}"#,
        )
        .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
        assert!(reply.body.is_empty());
        // s-bravo's primary is bravo: the report goes on to it, and the
        // answer says so. `packets` may be left out.
        let reply = post_json(
            server.addr,
            "/v1/sessions/s-bravo/report",
            r#"{"loss": 1, "jitter_ms": 0, "rtt_ms": 0.5}"#,
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        let to: crate::views::Forwarded = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            to,
            crate::views::Forwarded {
                forwarded_to: "12D3KooWBravo".to_owned(),
                forwarded_to_name: "bravo".to_owned(),
            }
        );
        assert_eq!(
            *reports.lock().unwrap(),
            [
                (
                    "s-old".to_owned(),
                    Report {
                        loss: 0.02,
                        jitter_ms: 4.0,
                        rtt_ms: 30.0,
                        packets: 500
                    }
                ),
                (
                    "s-bravo".to_owned(),
                    Report {
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
}
