//! The error envelope: `{"error": {"code": "...", "message": "..."}}`.
//!
//! `code` is stable and machine-readable (frontends switch on it); `message` is a
//! sentence for people. Optional fields add what a caller needs to act.
//!
//! Every role that answers HTTP builds the envelope here: [`ApiErrorBody::new`]
//! and its builder methods, and, with the `axum` feature, `response`, which
//! turns a status, a code and a sentence into the answer itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tessera_core::ErrorCode;
use utoipa::ToSchema;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ErrorDetail,
}

impl ApiErrorBody {
    /// Whether the error carries this code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.error.code == code
    }

    /// The code, when this version knows it.
    pub fn code(&self) -> Option<ErrorCode> {
        self.error.code.parse().ok()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, for example `quota_exhausted`, `invalid_params`, `unauthorized`.
    #[schema(example = "quota_exhausted")]
    pub code: String,
    /// What went wrong, in a sentence.
    pub message: String,
    /// The request field at fault, when there is one (`params.prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// When quotas reset, on `quota_exhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<DateTime<Utc>>,
    /// The expected wait (seconds) of the queue a new job would join, on
    /// `queue_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_wait_seconds: Option<u64>,
    /// Seconds after which the same request may be admitted, on
    /// `queue_full` and `too_many_queued`; the `Retry-After` header says
    /// the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

impl ApiErrorBody {
    /// An envelope with a code and a sentence, and no optional field.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
                field: None,
                resets_at: None,
                expected_wait_seconds: None,
                retry_after_seconds: None,
            },
        }
    }

    /// Names the request field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.error.field = Some(field.into());
        self
    }

    /// Says when quotas reset.
    pub fn with_resets_at(mut self, resets_at: DateTime<Utc>) -> Self {
        self.error.resets_at = Some(resets_at);
        self
    }

    /// Says when to retry, and for a full queue how long its wait is.
    pub fn with_retry(
        mut self,
        retry_after_seconds: u64,
        expected_wait_seconds: Option<u64>,
    ) -> Self {
        self.error.retry_after_seconds = Some(retry_after_seconds);
        self.error.expected_wait_seconds = expected_wait_seconds;
        self
    }

    /// The answer carrying this envelope as JSON, with `status`.
    #[cfg(feature = "axum")]
    pub fn respond(self, status: axum::http::StatusCode) -> axum::response::Response {
        use axum::response::IntoResponse;
        (status, axum::Json(self)).into_response()
    }
}

/// The answer to a failed request: `status` and the envelope with `code` and
/// `message`, as JSON.
#[cfg(feature = "axum")]
pub fn response(
    status: axum::http::StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
) -> axum::response::Response {
    ApiErrorBody::new(code, message).respond(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_appear_only_when_set() {
        let plain =
            serde_json::to_value(ApiErrorBody::new(ErrorCode::NotFound, "no such job")).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"error": {"code": "not_found", "message": "no such job"}})
        );
        let at = DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let full = ApiErrorBody::new(ErrorCode::QuotaExhausted, "come back tomorrow")
            .with_field("params.prompt")
            .with_resets_at(at);
        assert_eq!(full.error.field.as_deref(), Some("params.prompt"));
        assert_eq!(full.error.resets_at, Some(at));
        let full = serde_json::to_value(
            ApiErrorBody::new(ErrorCode::QueueFull, "the queue is full")
                .with_retry(300, Some(1500)),
        )
        .unwrap();
        assert_eq!(full["error"]["expected_wait_seconds"], 1500);
        assert_eq!(full["error"]["retry_after_seconds"], 300);
    }
}
