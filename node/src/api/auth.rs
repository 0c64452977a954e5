//! Bearer-token authentication. With a token configured, every request must
//! carry `Authorization: Bearer <token>`, or it is answered 401 before any
//! handler runs. A separate read token, when configured, opens the reads
//! (`GET`, `HEAD`: views, events, `/metrics`) and nothing else, so that
//! Prometheus or a dashboard does not hold the key that opens sessions.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// The digests of the tokens a node accepts.
#[derive(Debug)]
struct Tokens {
    full: [u8; 32],
    read: Option<[u8; 32]>,
}

/// `app`, answering 401 to every request without `token`, or, for reads,
/// without `token` or `read_token`.
pub(super) fn require(
    app: Router<AppState>,
    token: &str,
    read_token: Option<&str>,
) -> Router<AppState> {
    // Only the digests are kept: comparing digests takes the same time
    // whatever the length or content of the presented token.
    let tokens = Arc::new(Tokens {
        full: Sha256::digest(token.as_bytes()).into(),
        read: read_token.map(|t| Sha256::digest(t.as_bytes()).into()),
    });
    app.layer(middleware::from_fn_with_state(tokens, require_token))
}

async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    const HOW: &str = "pass it as the header 'Authorization: Bearer <token>' \
                       (baton: --token TOKEN or the environment variable BATON_TOKEN)";
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().ok().and_then(bearer_token));
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
