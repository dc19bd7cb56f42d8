//! Errors as the OpenAI API returns them: a status and
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    /// 400: a request that cannot be served as it is.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, kind: "invalid_request_error", message: message.into(), param }
    }

    pub fn not_found(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self { status: StatusCode::NOT_FOUND, kind: "not_found_error", message: message.into(), param }
    }

    /// 429: the queue is full.
    pub fn busy(message: impl Into<String>) -> Self {
        Self { status: StatusCode::TOO_MANY_REQUESTS, kind: "rate_limit_error", message: message.into(), param: None }
    }

    /// 503: shutting down, or the engine has failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, kind: "service_unavailable", message: message.into(), param: None }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal_error", message: message.into(), param: None }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "object": "error",
            "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.status.as_u16() }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<finetp_engine::SubmitError> for ApiError {
    fn from(e: finetp_engine::SubmitError) -> Self {
        use finetp_engine::SubmitError as S;
        match e {
            S::QueueFull { .. } => ApiError::busy(format!("the server is busy: {e}; retry later")),
            S::Closed | S::Failed(_) => ApiError::unavailable(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}
