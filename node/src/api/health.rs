//! `GET /v1/health`: liveness for container healthchecks and supervisors.
//! 200 `{"status": "ok"}` when the driver answers a ping within the session
//! request timeout, 503 with the reason when it does not (stuck or gone).
//! It needs no token: it tells nothing but that the node lives, and a
//! healthcheck should not have to hold a secret.

use axum::Json;
use axum::extract::State;

use super::{ApiError, AppState};
use crate::state::SessionCommand;
use crate::views::Health;

pub(super) async fn health(State(st): State<AppState>) -> Result<Json<Health>, ApiError> {
    st.ask(
        "answer a health check",
        "the node is alive but its driver is stuck or overloaded",
        |reply| SessionCommand::Ping { reply },
    )
    .await?;
    Ok(Json(Health {
        status: "ok".to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::api::testing::{Server, get, shared, shared_with, shared_with_driver};

    #[tokio::test]
    async fn health_is_200_ok_when_the_driver_answers() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared, None).await;
        let reply = get(server.addr, "/v1/health").await;
        assert_eq!(reply.status, 200);
        assert!(reply.content_type.starts_with("application/json"));
        assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));
        server.stop().await;
    }

    #[tokio::test]
    async fn health_is_503_when_the_driver_is_gone() {
        let server = Server::start(shared(), None).await;
        let reply = get(server.addr, "/v1/health").await;
        assert_eq!(reply.status, 503);
        assert!(
            reply.error().contains("driver is not running"),
            "{}",
            reply.error()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn health_is_503_when_the_driver_does_not_answer() {
        // A driver that holds requests without answering them.
        let (commands, mut held) = mpsc::channel(8);
        let _hold = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some(command) = held.recv().await {
                kept.push(command);
            }
        });
        let server =
            Server::start_with(shared_with(commands), None, Duration::from_millis(200)).await;
        let reply = get(server.addr, "/v1/health").await;
        assert_eq!(reply.status, 503);
        assert!(
            reply.error().contains("did not answer a health check"),
            "{}",
            reply.error()
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn health_needs_no_token_where_everything_else_does() {
        let (shared, _) = shared_with_driver();
        let server = Server::start(shared, Some("s3cret")).await;
        assert_eq!(get(server.addr, "/v1/health").await.status, 200);
        assert_eq!(get(server.addr, "/metrics").await.status, 401);
        assert_eq!(get(server.addr, "/v1/status").await.status, 401);
        server.stop().await;
    }
}
