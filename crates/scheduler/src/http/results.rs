//! What workers send back: progress, output text as it is produced, results
//! with their artifacts, and the inputs they fetch. All behind the internal
//! token.
//!
//! Progress and output pieces are fenced like results (below): one for an
//! attempt that is no longer the job's current one is answered 409
//! `stale_attempt`. Both go to the job's followers through the lifecycle
//! ([`crate::follow`]); output text is held in memory only, the offsets of its
//! pieces checked there (a repeated piece ignored, a gap refused with
//! `output_gap`).
//!
//! A result is one multipart request: a `result` part (JSON, [`JobResult`])
//! then one part per artifact. The artifacts are written to the object store
//! first, then recorded in the same transaction that completes the job, fenced
//! by worker and attempt: a result for an attempt the scheduler took back (the
//! worker was thought lost, the job was cancelled or timed out) changes nothing
//! and is answered 409 `stale_attempt`, which tells the worker to discard it. A
//! retried upload of a result already recorded is acknowledged again
//! (`replayed: true`), so a worker can retry until it hears back.
//!
//! A failure the worker calls retryable goes back to the queue, counted as an
//! attempt, until `workers.max_attempts`. One with `engine_unavailable` says
//! the engine is down, not that the job is bad: it goes back without counting
//! (the job keeps its place in the queue), and that worker gets no job for
//! that capability until a heartbeat says its engine is ready again, so the
//! job waits for the engine or goes to another worker. That holds while the
//! job has waited less than `workers.unservable_after_secs` since it was
//! queued; after that such failures count again, so no job bounces forever.
//!
//! The parts' names, types and order are defined once, in
//! `tessera_api::internal::result_form`, which the worker writes them with.

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use tessera_api::internal::result_form::{Part, PartOrder};
use tessera_api::internal::{
    JobResult, Outcome, OutputAck, OutputPiece, ProgressReport, ResultAck, MAX_OUTPUT_PIECE_BYTES,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{ArtifactId, InputId, JobId, JobState, Transition};

use super::auth::Internal;
use super::error::ApiError;
use super::extract::{parse_json, ApiJson, ApiPath, Refusal};
use super::wire::parse_job_id;
use super::withhold;
use super::AppState;
use crate::artifacts::artifact_key;
use crate::follow::MAX_OUTPUT_BYTES;
use crate::lifecycle::{now_ms, Refused};
use crate::store::{Fence, NewArtifact, TransitionChange, TransitionOutcome};

/// What a worker id is (as its heartbeat is checked).
/// Most artifacts one result may carry.
const MAX_ARTIFACTS: usize = 16;
/// Largest width or height an artifact may claim.
const MAX_SIDE: u32 = 16_384;
/// The longest engine run a result may report: a week, in milliseconds.
const MAX_ENGINE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Progress of a running attempt, in percent.
#[utoipa::path(
    post, path = "/api/internal/jobs/{job_id}/progress", tag = "internal",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    request_body = ProgressReport,
    responses(
        (status = 204, description = "Recorded"),
        (status = 409, description = "Not the current attempt: stop reporting", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("internal_token" = []))
)]
pub async fn progress(
    State(state): State<AppState>,
    _internal: Internal,
    ApiPath(job_id): ApiPath<String>,
    ApiJson(report): ApiJson<ProgressReport>,
) -> Result<StatusCode, ApiError> {
    let id = parse_job_id(&job_id)?;
    if !report.progress.is_finite() || !(0.0..=100.0).contains(&report.progress) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidProgress,
            "progress is a percentage, 0 to 100",
        )
        .with_field("progress"));
    }
    let fence = Fence {
        worker_id: report.worker_id,
        attempt: report.attempt,
    };
    if state
        .store
        .set_progress(&id, &fence, report.progress)
        .await?
    {
        state.lifecycle.progressed(&id, report.progress);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(stale())
    }
}

/// A piece of a running attempt's output text, for the job's followers.
///
/// `offset` is the UTF-8 bytes of the attempt's text sent before the piece:
/// a piece held already is acknowledged and ignored, one past what is held is
/// refused (`output_gap`; send the whole text again from offset 0). The text
/// is held in memory by the scheduler replica receiving it, for its followers
/// (`GET /api/v1/jobs/{job_id}/events`); the result still carries the output.
#[utoipa::path(
    post, path = "/api/internal/jobs/{job_id}/output", tag = "internal",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    request_body = OutputPiece,
    responses(
        (status = 200, description = "Taken, or held already", body = OutputAck),
        (status = 409, description = "`stale_attempt`: not the current attempt, stop sending; `output_gap`: the piece does not follow what is held, send the whole text from offset 0", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("internal_token" = []))
)]
pub async fn output(
    State(state): State<AppState>,
    _internal: Internal,
    ApiPath(job_id): ApiPath<String>,
    ApiJson(piece): ApiJson<OutputPiece>,
) -> Result<Json<OutputAck>, ApiError> {
    let id = parse_job_id(&job_id)?;
    if piece.text.len() > MAX_OUTPUT_PIECE_BYTES {
        return Err(ApiError::invalid(
            ErrorCode::InvalidOutputPiece,
            format!("a piece's text is at most {MAX_OUTPUT_PIECE_BYTES} bytes"),
        )
        .with_field("text"));
    }
    let offset = usize::try_from(piece.offset)
        .ok()
        .filter(|o| *o <= MAX_OUTPUT_BYTES)
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidOutputPiece,
                format!("an offset is at most {MAX_OUTPUT_BYTES} bytes"),
            )
            .with_field("offset")
        })?;
    let job = state.store.get_job(&id, None).await?;
    let Some(job) = job.filter(|job| {
        job.status == JobState::Running
            && job.worker_id.as_deref() == Some(piece.worker_id.as_str())
            && job.attempts == piece.attempt
    }) else {
        return Err(stale());
    };
    match state.lifecycle.output(&job, offset, &piece.text) {
        Ok(held) => Ok(Json(OutputAck {
            received: held as u64,
        })),
        Err(Refused::Gap { held }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::OutputGap,
            format!("the piece does not follow the {held} bytes held; send the whole text again from offset 0"),
        )),
        Err(Refused::Stale) => Err(stale()),
        Err(Refused::TooLarge) => Err(ApiError::invalid(
            ErrorCode::InvalidOutputPiece,
            format!("an attempt streams at most {MAX_OUTPUT_BYTES} bytes of text"),
        )
        .with_field("text")),
    }
}

/// Every refusal of an output piece's body is `invalid_output_piece`.
impl Refusal for OutputPiece {
    fn refuse(field: &str, message: String) -> ApiError {
        ApiError::invalid(ErrorCode::InvalidOutputPiece, message).with_field(field)
    }
}

fn stale() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::StaleAttempt,
        "this attempt is no longer the job's current one (requeued, cancelled or timed out); discard its result",
    )
}

/// A progress report's worker id is compared in SQL (the fence), so it is
/// typed and checked as it is read, like every field: `invalid_progress`.
impl Refusal for ProgressReport {
    fn refuse(field: &str, message: String) -> ApiError {
        ApiError::invalid(ErrorCode::InvalidProgress, message).with_field(field)
    }
}

/// Every refusal of a result's `result` part, JSON or not, is
/// `invalid_result`, naming the field where one is at fault.
impl Refusal for JobResult {
    fn refuse(field: &str, message: String) -> ApiError {
        bad_result(format!("the result part is not a result: {message}")).with_field(field)
    }

    fn malformed(message: String) -> ApiError {
        bad_result(format!("the result part is not a result: {message}"))
    }
}

fn bad_result(message: impl Into<String>) -> ApiError {
    ApiError::invalid(ErrorCode::InvalidResult, message)
}

/// A result's multipart form as the document describes it (the handler reads
/// the parts one by one, see `tessera_api::internal::result_form`). The
/// artifact parts are named in the description only: their names are not a
/// fixed list of properties.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ResultUpload {
    /// The first part: how the attempt ended, as JSON.
    result: JobResult,
}

/// The result of an attempt: `result` (JSON) then `artifact-0`, `artifact-1`... parts.
#[utoipa::path(
    post, path = "/api/internal/jobs/{job_id}/result", tag = "internal",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    request_body(content = ResultUpload, content_type = "multipart/form-data",
        description = "Part `result`: a `JobResult` as JSON, first. Then parts `artifact-0`, `artifact-1`...: the bytes of each artifact the result lists, in order."),
    responses(
        (status = 200, body = ResultAck),
        (status = 404, body = ApiErrorBody),
        (status = 409, description = "Stale attempt: discard the result", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("internal_token" = []))
)]
pub async fn result(
    State(state): State<AppState>,
    _internal: Internal,
    ApiPath(job_id): ApiPath<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<ResultAck>, ApiError> {
    let id = parse_job_id(&job_id)?;
    let mut multipart = multipart?;
    let mut result: Option<JobResult> = None;
    let mut parts: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    let mut order = PartOrder::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad_result(format!("unreadable multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let part = order.next(&name).map_err(|e| bad_result(e.to_string()))?;
        if part == Part::Result {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| bad_result(format!("unreadable result part: {e}")))?;
            result = Some(parse_json::<JobResult>(&bytes)?);
        } else {
            // `Part::Artifact(parts.len())`: the parts come in order.
            if parts.len() == MAX_ARTIFACTS {
                return Err(bad_result(format!("at most {MAX_ARTIFACTS} artifacts")));
            }
            let bytes = field
                .bytes()
                .await
                .map_err(|e| bad_result(format!("unreadable part {name}: {e}")))?;
            total += bytes.len() as u64;
            if total > state.config.artifacts.max_result_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::ResultTooLarge,
                    format!(
                        "the artifacts exceed artifacts.max_result_bytes ({})",
                        state.config.artifacts.max_result_bytes
                    ),
                ));
            }
            parts.push(bytes);
        }
    }
    let result = result.ok_or_else(|| bad_result("the `result` part is missing"))?;
    let fence = Fence {
        worker_id: result.worker_id.clone(),
        attempt: result.attempt,
    };
    let ack = match result.outcome {
        Outcome::Completed => completed(&state, &id, &result, parts, fence).await,
        Outcome::Failed => failed(&state, &id, &result, fence).await,
    };
    // Accepted or refused, the worker is done with this job.
    state.lifecycle.released(&result.worker_id, &id);
    ack.map(Json)
}

async fn completed(
    state: &AppState,
    id: &JobId,
    result: &JobResult,
    parts: Vec<Bytes>,
    fence: Fence,
) -> Result<ResultAck, ApiError> {
    if result.artifacts.is_empty() {
        return Err(bad_result("a completed result needs at least one artifact"));
    }
    if result.artifacts.len() != parts.len() {
        return Err(bad_result(format!(
            "the result describes {} artifacts but {} parts came",
            result.artifacts.len(),
            parts.len()
        )));
    }
    for meta in &result.artifacts {
        let format_ok = (1..=8).contains(&meta.format.len())
            && meta
                .format
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !format_ok {
            return Err(bad_result(
                "an artifact format is 1-8 lowercase letters or digits",
            ));
        }
        if meta.width.is_some_and(|w| w == 0 || w > MAX_SIDE)
            || meta.height.is_some_and(|h| h == 0 || h > MAX_SIDE)
        {
            return Err(bad_result(format!(
                "artifact sides are 1 to {MAX_SIDE} pixels"
            )));
        }
        if let Some(c) = &meta.classification {
            withhold::validate(c).map_err(|e| bad_result(e).with_field("classification"))?;
        }
        if let Some(reason) = meta.usage.as_ref().and_then(|u| u.finish_reason.as_deref()) {
            if !(1..=32).contains(&reason.len())
                || !reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return Err(
                    bad_result("a finish_reason is 1-32 lowercase letters or underscores")
                        .with_field("usage.finish_reason"),
                );
            }
        }
    }
    if result.timing.is_some_and(|t| t.engine_ms > MAX_ENGINE_MS) {
        return Err(
            bad_result("a run's engine_ms is at most 604800000 (a week)").with_field("timing"),
        );
    }
    let Some(job) = state.store.get_job(id, None).await? else {
        return Err(ApiError::not_found(ErrorCode::JobNotFound, "no such job"));
    };
    let this_attempt =
        job.worker_id.as_deref() == Some(fence.worker_id.as_str()) && job.attempts == fence.attempt;
    if recorded(&job) && this_attempt {
        return Ok(ResultAck {
            job_id: job.id,
            status: job.status,
            replayed: true,
        });
    }
    if job.status != JobState::Running || !this_attempt {
        return Err(stale());
    }
    let verdict = withhold::judge(state, &job, &result.artifacts, &parts).await?;
    let mut artifacts = Vec::with_capacity(parts.len());
    let mut written: Vec<String> = Vec::with_capacity(parts.len());
    for (position, (meta, bytes)) in result.artifacts.iter().zip(parts).enumerate() {
        let key = artifact_key(id, fence.attempt, position, &meta.format);
        let size = bytes.len() as u64;
        if let Err(e) = state.blobs.put(&key, bytes).await {
            state.blobs.delete_all(&written).await;
            return Err(e.into());
        }
        written.push(key.clone());
        artifacts.push(NewArtifact {
            id: ArtifactId::generate(),
            kind: meta.kind,
            storage_key: key,
            format: meta.format.clone(),
            width: meta.width,
            height: meta.height,
            file_size: size,
            position: position as u32,
            classification: meta
                .classification
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
            withheld: verdict.is_some(),
            usage: meta
                .usage
                .as_ref()
                .and_then(|u| serde_json::to_string(u).ok()),
        });
    }
    // Withheld outputs are recorded all the same, for review, as the job
    // fails with `content_withheld`, refunded or not as configured.
    let (transition, error, keep_tokens) = match &verdict {
        Some(v) => (
            Transition::Fail,
            Some((
                ErrorCode::ContentWithheld.as_str().to_owned(),
                v.message.clone(),
            )),
            !v.refund,
        ),
        None => (Transition::Complete, None, false),
    };
    let change = TransitionChange {
        now: now_ms(),
        fence: Some(fence.clone()),
        artifacts,
        error,
        keep_tokens,
        ..Default::default()
    };
    let outcome = state.lifecycle.apply(id, transition, &change).await;
    if let (Ok(TransitionOutcome::Applied(job)), Some(timing)) = (&outcome, result.timing) {
        // The engine ran to its outputs (withheld or not): what it took is
        // worth learning. Advice only, so a failed write costs a warning.
        if let Err(e) = state
            .lifecycle
            .timings()
            .learn(
                &*state.store,
                &fence.worker_id,
                job.capability,
                &job.model,
                timing,
                now_ms(),
            )
            .await
        {
            tracing::warn!(job_id = %job.id, error = %e, "could not record the run's timing");
        }
    }
    match outcome {
        Ok(TransitionOutcome::Applied(job)) => {
            if let Some(v) = &verdict {
                tracing::warn!(job_id = %job.id, label = %v.label, channel = job.frontend.as_str(), "outputs withheld for review");
                state.lifecycle.metrics().withheld(&v.label, job.frontend);
                super::people::after_withheld(state, &job, &v.label).await;
            } else {
                tracing::info!(job_id = %job.id, worker_id = ?job.worker_id, "job completed");
            }
            Ok(ResultAck {
                job_id: job.id,
                status: job.status,
                replayed: false,
            })
        }
        // Cancelled or taken back between the check and the update, or a
        // copy of this upload committed first: then its rows name these
        // very keys (the same job, attempt and positions), so they stay.
        Ok(_) => match state.store.get_job(id, None).await? {
            Some(job)
                if recorded(&job)
                    && job.worker_id.as_deref() == Some(fence.worker_id.as_str())
                    && job.attempts == fence.attempt =>
            {
                if let Some(v) = verdict.as_ref().filter(|_| job.status == JobState::Failed) {
                    super::people::after_withheld(state, &job, &v.label).await;
                }
                Ok(ResultAck {
                    job_id: job.id,
                    status: job.status,
                    replayed: true,
                })
            }
            _ => {
                // Nothing will ever name these objects: delete them now.
                state.blobs.delete_all(&written).await;
                Err(stale())
            }
        },
        // Whether the transaction committed is unknown (the database went
        // away mid-commit): the objects stay, the worker retries, and the
        // orphan sweep deletes them if no row ever names them.
        Err(e) => Err(e.into()),
    }
}

/// Whether the job holds a completed result: delivered, or withheld.
fn recorded(job: &crate::store::JobRecord) -> bool {
    job.status == JobState::Completed
        || (job.status == JobState::Failed
            && job.error_code.as_deref() == Some(ErrorCode::ContentWithheld.as_str()))
}

async fn failed(
    state: &AppState,
    id: &JobId,
    result: &JobResult,
    fence: Fence,
) -> Result<ResultAck, ApiError> {
    let error = result
        .error
        .as_ref()
        .ok_or_else(|| bad_result("a failed result needs an error"))?;
    let code_ok = (1..=64).contains(&error.code.len())
        && error
            .code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !code_ok {
        return Err(bad_result(
            "an error code is 1-64 lowercase letters, digits or `_`",
        ));
    }
    let message: String = error
        .message
        .chars()
        .filter(|c| !c.is_control())
        .take(1000)
        .collect();
    let Some(job) = state.store.get_job(id, None).await? else {
        return Err(ApiError::not_found(ErrorCode::JobNotFound, "no such job"));
    };
    if job.status != JobState::Running
        || job.worker_id.as_deref() != Some(fence.worker_id.as_str())
        || job.attempts != fence.attempt
    {
        return Err(stale());
    }
    let now = now_ms();
    let engine_down = error.code == ErrorCode::EngineUnavailable.as_str();
    if engine_down {
        // Before the job is back in the queue, so no pass sends it there again.
        state
            .lifecycle
            .workers()
            .engine_failed(&fence.worker_id, job.capability);
    }
    let waited = now - job.queued_at.unwrap_or(now);
    let bound = i64::try_from(
        state
            .config
            .workers
            .unservable_after_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX);
    // The engine was down: not the job's attempt, while it has not waited too long.
    let release = engine_down && error.retryable && waited < bound;
    let max = i32::try_from(state.config.workers.max_attempts).unwrap_or(i32::MAX);
    let retry = error.retryable && (release || job.attempts < max);
    let (transition, error_change) = if retry {
        (Transition::Requeue, None)
    } else {
        let text = if error.retryable {
            format!(
                "{message} (after {} attempts; tokens refunded)",
                job.attempts
            )
        } else {
            format!("{message} (tokens refunded)")
        };
        (Transition::Fail, Some((error.code.clone(), text)))
    };
    let change = TransitionChange {
        now,
        fence: Some(fence),
        error: error_change,
        release,
        ..Default::default()
    };
    match state.lifecycle.apply(id, transition, &change).await? {
        TransitionOutcome::Applied(job) => {
            tracing::warn!(job_id = %job.id, code = %error.code, retry, counted = !release, "attempt failed");
            Ok(ResultAck {
                job_id: job.id,
                status: job.status,
                replayed: false,
            })
        }
        _ => Err(stale()),
    }
}

/// An uploaded input, for the worker running a job that reads it.
#[utoipa::path(
    get, path = "/api/internal/inputs/{input_id}", tag = "internal",
    params(("input_id" = String, Path, description = "The input's id, `inp_...`", pattern = "^inp_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "The input's bytes"),
        (status = 404, body = ApiErrorBody),
    ),
    security(("internal_token" = []))
)]
pub async fn input(
    State(state): State<AppState>,
    _internal: Internal,
    ApiPath(input_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::InputNotFound, "no such input");
    let id: InputId = input_id.parse().map_err(|_| not_found())?;
    let record = state.store.get_input(&id).await?.ok_or_else(not_found)?;
    let bytes = state.blobs.get(&record.storage_key).await?;
    Ok((
        [(header::CONTENT_TYPE, record.content_type)],
        Body::from(bytes),
    )
        .into_response())
}
