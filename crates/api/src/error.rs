//! The error envelope: `{"error": {"code": "...", "message": "..."}}`.
//!
//! `code` is stable and machine-readable (frontends switch on it); `message` is a
//! sentence for people. Optional fields add what a caller needs to act.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiErrorBody {
    pub error: ErrorDetail,
}

impl ApiErrorBody {
    /// Whether the error carries this code.
    pub fn is(&self, code: tessera_core::ErrorCode) -> bool {
        self.error.code == code
    }

    /// The code, when this version knows it.
    pub fn code(&self) -> Option<tessera_core::ErrorCode> {
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
}
