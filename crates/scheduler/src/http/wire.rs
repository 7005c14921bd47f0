//! Values at the API's edge that every resource reads or writes the same
//! way: plain names (bot, worker and plan ids), job ids in paths, and times.
//!
//! They sit here, not in the first resource that needed them, so that the
//! resource modules depend only on shared modules and never on each other.

use chrono::{DateTime, Utc};

use tessera_core::{JobId, Millis};

use super::error::ApiError;

/// Bot ids name processes in logs and configs: keep them plain. Worker ids
/// and plan ids follow the same rule.
pub fn is_bot_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A job id from a path; one that cannot be a job's is no such job (404).
pub(crate) fn parse_job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse().map_err(|_| job_not_found())
}

pub(crate) fn job_not_found() -> ApiError {
    ApiError::not_found("job_not_found", "no such job")
}

/// A stored time (milliseconds since the epoch) as the API writes it.
pub(crate) fn rfc3339(ms: Millis) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}
