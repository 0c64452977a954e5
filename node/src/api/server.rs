//! The API's HTTP server, built to outlast hostile clients: it accepts at
//! most [`Limits::max_connections`] connections at once (more are closed as
//! they arrive, before a byte is read), closes a connection that has not
//! sent a complete request head within [`Limits::header_read`] (a slow
//! header, or an idle keep-alive connection: hyper's header-read timer runs
//! whenever a connection waits for a request), and answers 408 to a request
//! whose body has not arrived within [`Limits::body`]. `batond` raises its
//! open-file limit at start (`RLIMIT_NOFILE`, to the hard limit) so that
//! the connection cap, not the file descriptors, is what runs out.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{ApiError, AppState, MAX_BODY_BYTES};

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a connection has to send a complete request head, counted from
    /// when it starts waiting for one (so it also ends idle connections).
    pub header_read: Duration,
    /// Time a request has to send its whole body.
    pub body: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

/// The bounds `batond` serves with.
pub const LIMITS: Limits = Limits {
    header_read: Duration::from_secs(10),
    body: Duration::from_secs(10),
    max_connections: 256,
};

/// `app`, reading each request's body within `limit` and
/// [`MAX_BODY_BYTES`] before any handler runs.
pub(super) fn bound_bodies(app: Router<AppState>, limit: Duration) -> Router<AppState> {
    app.layer(middleware::from_fn_with_state(limit, read_body))
}

async fn read_body(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let response = read_body_then(limit, parts, body, next).await;
    // One DEBUG line per request (never the query: it may hold a token).
    tracing::debug!(%method, %path, status = response.status().as_u16(), "api request");
    response
}

async fn read_body_then(
    limit: Duration,
    parts: axum::http::request::Parts,
    body: Body,
    next: Next,
) -> Response {
    let read = async {
        let mut body = body;
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_BODY_BYTES {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                    ));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(bytes))
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then waits for the connections in flight to finish.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(64 * 1024);
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: std::fmt::Arguments<'_>| {
        // One line per 10 s at most: a flood must not flood the log too.
        let now = Instant::now();
        if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            last_warning = Some(now);
            tracing::warn!("API: {what}");
        }
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, caller) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: wait a moment instead of spinning.
                warn(format_args!("cannot accept a connection: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn(format_args!(
                "{} connections are open, the most this API serves at once; \
                 closing new ones until some end",
                limits.max_connections
            ));
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Handlers may ask who calls (the per-caller session cap).
        let app = app.clone().layer(Extension(ConnectInfo(caller)));
        let service = TowerToHyperService::new(app);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit, so
/// that many clients, peers and sessions do not run out of descriptors
/// before their own caps apply. Answers the limit in force.
pub fn raise_open_files() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::api::Access;
    use crate::api::testing::{Server, shared};

    const QUICK: Limits = Limits {
        header_read: Duration::from_millis(300),
        body: Duration::from_millis(300),
        max_connections: 4,
    };

    /// Reads until the peer closes (answers what arrived) or `within`
    /// passes (answers `None`: still open).
    async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn a_slow_header_and_an_idle_connection_are_closed() {
        let server = Server::start_limited(shared(), Access::default(), QUICK).await;
        let mut slow = connect(server.addr).await;
        slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let mut idle = connect(server.addr).await;
        let started = Instant::now();
        assert!(
            read_to_close(&mut slow, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(
            read_to_close(&mut idle, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // A kept-alive connection that goes quiet after its request is
        // closed too.
        let mut kept = connect(server.addr).await;
        kept.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut kept, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.stop().await;
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_is_a_408() {
        let server = Server::start_limited(shared(), Access::default(), QUICK).await;
        let mut stream = connect(server.addr).await;
        stream
            .write_all(
                b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{\"serv",
            )
            .await
            .unwrap();
        let answer = read_to_close(&mut stream, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("did not arrive within 300ms"), "{answer}");
        server.stop().await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_the_api_recovers() {
        let limits = Limits {
            header_read: Duration::from_secs(30),
            ..QUICK
        };
        let server = Server::start_limited(shared(), Access::default(), limits).await;
        let mut held = Vec::new();
        for _ in 0..limits.max_connections {
            held.push(connect(server.addr).await);
        }
        // Give the server the time to accept them all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = connect(server.addr).await;
        let _ = extra
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await;
        let answer = read_to_close(&mut extra, Duration::from_secs(5)).await;
        assert_eq!(answer.as_deref(), Some(""), "closed without an answer");
        held.clear();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut after = connect(server.addr).await;
        after
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut after, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.stop().await;
    }

    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let limit = raise_open_files().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(limit, hard);
    }
}
