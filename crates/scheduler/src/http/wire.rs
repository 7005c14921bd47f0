//! Values at the API's edge that every resource reads or writes the same
//! way: job ids in paths, and times. (Bot, worker and plan ids and user
//! references in bodies and queries are typed and checked as they are read:
//! see [`extract`](super::extract).)
//!
//! They sit here, not in the first resource that needed them, so that the
//! resource modules depend only on shared modules and never on each other.

use chrono::{DateTime, Utc};

use tessera_api::ErrorCode;
use tessera_core::{JobId, Millis};

use super::error::ApiError;

/// A job id from a path; one that cannot be a job's is no such job (404).
pub(crate) fn parse_job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse().map_err(|_| job_not_found())
}

pub(crate) fn job_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::JobNotFound, "no such job")
}

/// A stored time (milliseconds since the epoch) as the API writes it.
pub(crate) fn rfc3339(ms: Millis) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}
