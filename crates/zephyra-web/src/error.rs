//! Errors as HTTP responses: a 4xx carries its message, a 5xx is logged and answers a generic body.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use zephyra_analysis::AnalysisError;

/// Everything a route can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such page or feature (404).
    #[error("{0}")]
    NotFound(String),
    /// The body is larger than the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The request URI is longer than the limit (414).
    #[error("{0}")]
    UriTooLong(String),
    /// The feature needs something the server was started without (503).
    #[error("{0}")]
    Unavailable(String),
    /// The features store is damaged (500, with the message: the operator must recompute it).
    #[error("{0}")]
    Damaged(String),
    /// Anything else (500; the message is logged, not sent).
    #[error("{0}")]
    Internal(String),
}

impl From<AnalysisError> for ApiError {
    fn from(e: AnalysisError) -> Self {
        match e {
            AnalysisError::InvalidArgument(m) => ApiError::BadRequest(m),
            AnalysisError::DamagedStore { reason, .. } => ApiError::Damaged(format!(
                "the features store is damaged: {reason}; the server's operator must recompute it with `zephyra features`"
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "the request body is larger than {} bytes",
                crate::MAX_BODY_BYTES
            ))
        } else {
            ApiError::BadRequest(format!("invalid JSON body: {}", r.body_text()))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::UriTooLong(m) => (StatusCode::URI_TOO_LONG, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Damaged(m) => {
                tracing::error!(error = %m, "damaged features store");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong".to_string(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
