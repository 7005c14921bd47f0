//! The one place errors become HTTP responses.
//!
//! Every failure a handler can meet is an [`ApiError`]: a status, a stable code and
//! a sentence, sent as the JSON envelope of `tessera_api::error`. Extractor
//! rejections (bad JSON, wrong content type, oversized body, bad path or query)
//! are converted here too, so no endpoint ever answers with plain text.

use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::PathRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use tessera_api::{ApiErrorBody, ErrorCode};

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub resets_at: Option<DateTime<Utc>>,
    /// Seconds to wait before retrying (a `Retry-After` header and
    /// `retry_after_seconds`), and the expected wait of a full queue.
    pub retry: Option<(u64, Option<u64>)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            resets_at: None,
            retry: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = ApiErrorBody::new(self.code, self.message);
        if let Some(field) = self.field {
            body = body.with_field(field);
        }
        if let Some(resets_at) = self.resets_at {
            body = body.with_resets_at(resets_at);
        }
        if let Some((after, wait)) = self.retry {
            body = body.with_retry(after, wait);
        }
        let mut resp = body.respond(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some((after, _)) = self.retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::DatabaseUnavailable,
                    "the database cannot be reached right now; retry shortly",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::InternalError,
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}

/// The object store holding artifacts and inputs failed: retryable for the caller.
impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        tracing::error!(error = %e, "artifact store error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageUnavailable,
            "the store of artifacts and inputs cannot be used right now; retry shortly",
        )
    }
}

/// A body the framework refused before it was parsed.
pub(super) fn rejection(status: StatusCode, text: String) -> ApiError {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::BAD_REQUEST => ErrorCode::MalformedRequest,
        _ => ErrorCode::InvalidRequest,
    };
    ApiError::new(status, code, text)
}

impl From<MultipartRejection> for ApiError {
    fn from(r: MultipartRejection) -> Self {
        rejection(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, r.body_text())
    }
}

/// Answers unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::NotFound, "no such endpoint")
}

/// Answers known routes called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}
