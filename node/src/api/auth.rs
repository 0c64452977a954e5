//! Bearer-token authentication. With a token configured, every request must
//! carry `Authorization: Bearer <token>`, or it is answered 401 before any
//! handler runs. A separate read token, when configured, opens the reads
//! (`GET`, `HEAD`: views, events, `/metrics`) and nothing else, so that
//! Prometheus or a dashboard does not hold the key that opens sessions.
//!
//! Browsers (the web view, see the `web` module) cannot add the header to a
//! page load or an `EventSource`: a page address with `?token=`, or the
//! login form (`POST /ui/login`), gets them a cookie holding a digest of
//! the token, and that cookie opens reads only.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, web};

/// The digests of the tokens a node accepts, and the web view's cookies.
#[derive(Debug)]
pub(super) struct Tokens {
    full: [u8; 32],
    read: Option<[u8; 32]>,
    /// The cookie of a browser logged in with the full token, and its
    /// digest; the cookie opens reads only, whichever token it came from.
    full_cookie: (String, [u8; 32]),
    read_cookie: Option<(String, [u8; 32])>,
}

impl Tokens {
    /// The web view's cookie for `token`, if it is one of this node's.
    fn cookie_for(&self, token: &str) -> Option<&str> {
        if token_matches(&self.full, token) {
            return Some(&self.full_cookie.0);
        }
        match (&self.read, &self.read_cookie) {
            (Some(read), Some((cookie, _))) if token_matches(read, token) => Some(cookie),
            _ => None,
        }
    }

    /// Whether `cookie` is a web view cookie of this node.
    fn cookie_valid(&self, cookie: &str) -> bool {
        token_matches(&self.full_cookie.1, cookie)
            | self
                .read_cookie
                .as_ref()
                .is_some_and(|(_, digest)| token_matches(digest, cookie))
    }
}

/// The path of the login form, which needs no token.
const LOGIN: &str = "/ui/login";

fn with_digest(cookie: String) -> (String, [u8; 32]) {
    let digest = Sha256::digest(cookie.as_bytes()).into();
    (cookie, digest)
}

/// The tokens `token` and `read_token` (if any), as [`require`] and
/// [`login_route`] check them.
pub(super) fn tokens(token: &str, read_token: Option<&str>) -> Arc<Tokens> {
    // Only the digests are kept: comparing digests takes the same time
    // whatever the length or content of the presented token.
    Arc::new(Tokens {
        full: Sha256::digest(token.as_bytes()).into(),
        read: read_token.map(|t| Sha256::digest(t.as_bytes()).into()),
        full_cookie: with_digest(web::cookie_value(token)),
        read_cookie: read_token.map(|t| with_digest(web::cookie_value(t))),
    })
}

/// `app`, answering 401 to every request without the token, or, for
/// reads, without the token, the read token or the web view's cookie; but
/// `POST /ui/login`, which presents a token.
pub(super) fn require(app: Router<AppState>, tokens: Arc<Tokens>) -> Router<AppState> {
    app.layer(middleware::from_fn_with_state(tokens, require_token))
}

/// `app` with the web view's login form, `POST /ui/login`.
pub(super) fn login_route(app: Router<AppState>, tokens: &Arc<Tokens>) -> Router<AppState> {
    app.route(LOGIN, post(login).with_state(tokens.clone()))
}

/// `POST /ui/login`: the web view's login form. A right token gets the
/// cookie and the page; a wrong one the form again.
async fn login(
    State(tokens): State<Arc<Tokens>>,
    headers: HeaderMap,
    form: Result<Form<Login>, FormRejection>,
) -> Response {
    let Ok(Form(Login { token })) = form else {
        return web::login_page(
            StatusCode::BAD_REQUEST,
            "the login form sends token=... as application/x-www-form-urlencoded",
        );
    };
    match tokens.cookie_for(token.trim()) {
        Some(cookie) => web::to_page(Some(web::set_cookie(&headers, cookie))),
        None => web::login_page(
            StatusCode::UNAUTHORIZED,
            "That token is not valid for this node.",
        ),
    }
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    const HOW: &str = "pass it as the header 'Authorization: Bearer <token>' \
                       (baton: --token TOKEN or the environment variable BATON_API_TOKEN)";
    if request.method() == Method::POST && request.uri().path() == LOGIN {
        return next.run(request).await;
    }
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().ok().and_then(bearer_token));
    // A browser: the page opened with ?token=, or the cookie that gave.
    let page = read && web::is_page(request.uri().path());
    let mut stale_cookie = false;
    if presented.is_none() && read {
        if page && let Some(token) = web::query_token(request.uri()) {
            let Some(cookie) = tokens.cookie_for(&token).map(str::to_owned) else {
                return web::login_page(
                    StatusCode::UNAUTHORIZED,
                    "The token in the address is not valid for this node.",
                );
            };
            let mut request = request;
            request.extensions_mut().insert(web::Grant(cookie));
            return next.run(request).await;
        }
        if let Some(cookie) = web::cookie(&request) {
            if tokens.cookie_valid(cookie) {
                return next.run(request).await;
            }
            stale_cookie = true;
        }
    }
    if page && !matches!(presented, Some(Some(_))) {
        let why = if stale_cookie {
            "This browser's login is no longer valid (the node's token changed)."
        } else {
            "This node's API needs a token."
        };
        return web::login_page(StatusCode::UNAUTHORIZED, why);
    }
    let (status, message) = match presented {
        Some(Some(token)) if token_matches(&tokens.full, token) => {
            return next.run(request).await;
        }
        Some(Some(token)) if tokens.read.is_some_and(|r| token_matches(&r, token)) => {
            if read {
                return next.run(request).await;
            }
            (
                StatusCode::FORBIDDEN,
                format!(
                    "the read token opens GET requests only; {} {} needs the api_token",
                    request.method(),
                    request.uri().path().chars().take(200).collect::<String>()
                ),
            )
        }
        Some(Some(_)) => (
            StatusCode::UNAUTHORIZED,
            format!("the bearer token is not valid for this node: {HOW}"),
        ),
        Some(None) => (
            StatusCode::UNAUTHORIZED,
            format!("the Authorization header is not a bearer token: {HOW}"),
        ),
        None if stale_cookie => (
            StatusCode::UNAUTHORIZED,
            format!(
                "the web view's cookie is not valid for this node (its token changed?): \
                 log in again at /ui/, or {HOW}"
            ),
        ),
        None => (
            StatusCode::UNAUTHORIZED,
            format!("this API needs a bearer token: {HOW}"),
        ),
    };
    let mut response = ApiError::new(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"baton\""),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Access;
    use crate::api::testing::{Server, request, send, shared};

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
    async fn the_read_token_opens_reads_and_nothing_else() {
        let access = Access {
            token: Some("s3cret".into()),
            read_token: Some("look".into()),
            ..Access::default()
        };
        let server = Server::start_access(shared(), access).await;
        let addr = server.addr;
        for path in ["/v1/status", "/metrics", "/v1/sessions"] {
            let reply = request(addr, "GET", path, Some("Bearer look")).await;
            assert_eq!(reply.status, 200, "{path}");
        }
        let open = || Some(("application/json", br#"{"service": "rtp-audio"}"#.to_vec()));
        let reply = send(addr, "POST", "/v1/sessions", Some("Bearer look"), open()).await;
        assert_eq!(reply.status, 403);
        assert!(reply.error().contains("api_token"), "{}", reply.error());
        let reply = send(
            addr,
            "DELETE",
            "/v1/sessions/abc",
            Some("Bearer look"),
            None,
        )
        .await;
        assert_eq!(reply.status, 403);
        // The full token still opens everything.
        let reply = send(addr, "POST", "/v1/sessions", Some("Bearer s3cret"), open()).await;
        assert_ne!(reply.status, 401);
        assert_ne!(reply.status, 403);
        assert_eq!(request(addr, "GET", "/metrics", None).await.status, 401);
        server.stop().await;
    }

    #[tokio::test]
    async fn no_token_is_asked_when_none_is_configured() {
        let server = Server::start(shared(), None).await;
        let reply = request(server.addr, "GET", "/v1/status", Some("Bearer anything")).await;
        assert_eq!(reply.status, 200);
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
}
