//! Bearer-token authentication: with a token configured, every request must
//! carry `Authorization: Bearer <token>`, or it is answered 401 before any
//! handler runs.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// `app`, answering 401 to every request without `token`.
pub(super) fn require(app: Router<AppState>, token: &str) -> Router<AppState> {
    // Only the digest is kept: comparing digests takes the same time
    // whatever the length or content of the presented token.
    let expected: Arc<[u8; 32]> = Arc::new(Sha256::digest(token.as_bytes()).into());
    app.layer(middleware::from_fn_with_state(expected, require_token))
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

#[cfg(test)]
mod tests {
    use super::*;
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
