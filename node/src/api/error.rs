//! The API's error answer, `{"error": "<message>"}` with a 4xx/5xx status,
//! and what turns the driver's refusals and client text into one safely.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::state::CommandError;
use crate::views::ErrorBody;

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
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
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
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// `text` in double quotes, escaped, cut to 80 characters: safe to put in a
/// message whatever the client sent.
pub(super) fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
