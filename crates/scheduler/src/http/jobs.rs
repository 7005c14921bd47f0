//! `/api/v1/jobs`: create, read, list and cancel jobs; and the operator's
//! `/api/admin/jobs`, which lists and cancels any job.
//!
//! A key sees its frontend's jobs only, and a web key only its own bot id's
//! ([`super::scope`]). A cancel is a state change, made through the
//! [`Lifecycle`](crate::lifecycle::Lifecycle).
//!
//! `GET /api/v1/jobs/{job_id}/events` follows a job as server-sent events
//! ([`events`]): what the lifecycle publishes ([`crate::follow`]), with the
//! job re-read from the store every second so that an end applied on another
//! replica (whose events this one never sees) still ends the stream.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use std::collections::HashMap;
use std::sync::Mutex;

use tessera_api::public::{
    ArtifactView, CreateJobRequest, CreateJobResponse, JobError, JobList, JobView, ListJobsQuery,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{moderation, params, JobId, JobState, Millis, Transition};

use super::auth::{Admin, Frontend};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, Refusal};
use super::scope::{foreign_account, own_bot_only, sees, speaks_for, Speaks};
use super::wire::{job_not_found, parse_job_id, rfc3339};
use super::AppState;
use crate::admission;
use crate::estimate::Estimator;
use crate::lifecycle::now_ms;
use crate::store::{
    ApiKeyRecord, CreateOutcome, Idempotency, JobFilter, JobRecord, NewJob, NewRefusal,
    TransitionChange, TransitionOutcome,
};

/// Largest `reply_context`, serialised.
pub const MAX_REPLY_CONTEXT_BYTES: usize = 4096;
/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A job's `user_ref` that is no reference is `invalid_user_ref`; a `bot_id`
/// that is no bot id cannot be the key's, so it is `forbidden_bot` as any
/// other bot's is.
impl Refusal for CreateJobRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        match field {
            "user_ref" => ApiError::invalid(ErrorCode::InvalidUserRef, message).with_field(field),
            "bot_id" => ApiError::forbidden(ErrorCode::ForbiddenBot, message),
            _ => ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field),
        }
    }
}

/// Create a job.
///
/// Validates the parameters against the user's plan and the prompt rules,
/// reserves the job's tokens and queues it, in one transaction. A prompt the
/// rules refuse is answered 422 (`prompt_refused`, or `content_not_allowed`
/// for adult content where it is not allowed) with the rule's message, and
/// costs nothing. Adult content is allowed where the `context` says so as
/// far as the key is believed (a Discord key's NSFW channel, a Telegram
/// key's chat whose admins turned it on, a web key's account that confirmed
/// its age) and the plan does not forbid it; the decision is kept on the job;
/// a rewrite rule's change shows in the job's `params`. A suspended or banned
/// user (or one linked with them) is refused 403 (`user_suspended`,
/// `user_banned`) before anything else. With an `Idempotency-Key` header, a retry of the
/// same request returns the first job (200, `Idempotent-Replayed: true`) instead of
/// charging twice. With a `callback_url`, the job is POSTed there, signed with
/// the key's webhook secret, when it ends (docs/webhooks.md); a URL whose host
/// is or resolves to a non-public address is refused (`callback_not_allowed`),
/// and so is a key without a secret (`webhook_secret_missing`).
#[utoipa::path(
    post, path = "/api/v1/jobs", tag = "jobs",
    request_body = CreateJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: at most 128 printable ASCII characters.", pattern = "^[!-~]{1,128}$")),
    responses(
        (status = 201, description = "Job queued", body = CreateJobResponse),
        (status = 200, description = "Replay of an earlier create with the same Idempotency-Key", body = CreateJobResponse),
        (status = 403, description = "Key may not speak for this bot or user (`forbidden_bot`, `forbidden_user_ref`: a user of another platform, or an account of another website), or its `context` names what only another kind of frontend reports (`context_not_allowed`), or the user is suspended or banned (`user_suspended`, `user_banned`: the message says until when; nothing charged)", body = ApiErrorBody),
        (status = 409, description = "Idempotency-Key reused with a different request", body = ApiErrorBody),
        (status = 422, description = "Invalid request or parameters, or a prompt the rules refuse (`prompt_refused`, `content_not_allowed`), or a `callback_url` that is not allowed (`callback_not_allowed`: a private, loopback, link-local or otherwise non-public address, or a host that does not resolve) or whose key has no webhook secret (`webhook_secret_missing`); nothing charged", body = ApiErrorBody),
        (status = 429, description = "Daily token quota exhausted (`quota_exhausted`, with `resets_at`); or not admitted, nothing charged: the plan's queue for this capability and model would keep the job past the plan's wait bound (`queue_full`, with `expected_wait_seconds` and `retry_after_seconds`), or the user has as many queued jobs as the plan allows (`too_many_queued`, with `retry_after_seconds`); both with a `Retry-After` header", body = ApiErrorBody,
            headers(("Retry-After" = u64, description = "On `queue_full` and `too_many_queued`: seconds before the same create may be admitted"))),
    ),
    security(("frontend_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateJobRequest>,
) -> Result<Response, ApiError> {
    let created = submit(&state, &key, &headers, req).await?;
    let body = CreateJobResponse {
        job_id: created.job.id,
        status: created.job.status,
        estimated_time_seconds: created.estimated_time_seconds,
        cost_tokens: created.job.cost_tokens,
    };
    let status = if created.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, Json(body)).into_response();
    if created.replayed {
        resp.headers_mut().insert(
            tessera_api::IDEMPOTENT_REPLAYED,
            HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// A job [`submit`] created, or found made by an earlier create with the
/// same `Idempotency-Key`.
pub(crate) struct Submitted {
    pub job: JobRecord,
    pub replayed: bool,
    pub estimated_time_seconds: u64,
}

/// Creates a job for `key` as [`create`] describes: the one way a job is
/// made, shared with the OpenAI-compatible gateway, whose developer keys
/// speak through their account's website.
pub(crate) async fn submit(
    state: &AppState,
    key: &impl Speaks,
    headers: &HeaderMap,
    req: CreateJobRequest,
) -> Result<Submitted, ApiError> {
    let state = state.clone();
    let frontend = key.frontend();
    if req.frontend != frontend || req.bot_id != *key.bot_id() {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenBot,
            format!(
                "this key speaks for {}/{}, not {}/{}",
                frontend,
                key.bot_id(),
                req.frontend,
                req.bot_id
            ),
        ));
    }
    speaks_for(&frontend, &req.user_ref)?;
    super::people::refuse_sanctioned(&state, &req.user_ref).await?;
    let user_ref = req.user_ref.clone();
    if let Some(ctx) = &req.reply_context {
        // Opaque, but an object, as the document says: an array or a number
        // was stored and then answered against the document's schema.
        if !ctx.is_object() && !ctx.is_null() {
            return Err(ApiError::invalid(
                ErrorCode::InvalidRequest,
                "reply_context must be a JSON object",
            )
            .with_field("reply_context"));
        }
        if serde_json::to_vec(ctx).map_or(true, |b| b.len() > MAX_REPLY_CONTEXT_BYTES) {
            return Err(ApiError::invalid(
                ErrorCode::ReplyContextTooLarge,
                format!("reply_context must serialise to at most {MAX_REPLY_CONTEXT_BYTES} bytes"),
            )
            .with_field("reply_context"));
        }
        // Opaque, but stored: PostgreSQL's JSONB cannot hold U+0000 (SQLite
        // can), so without this check the same request failed with a 500 on
        // one backend only. No frontend needs it to say where to reply.
        if has_nul(ctx) {
            return Err(ApiError::invalid(
                ErrorCode::InvalidRequest,
                "reply_context must not contain the character U+0000",
            )
            .with_field("reply_context"));
        }
    }
    // Whether the context allows adult content, as far as the key is
    // believed; the plan has its say below. A context the key may not
    // report is refused here, before anything is charged.
    let context_allows =
        super::adult::context_allows(&state, key, &req.user_ref, req.context.as_ref()).await?;
    let callback = match &req.callback_url {
        Some(url) => Some(super::webhooks::callback(&state, key, url).await?),
        None => None,
    };
    let idempotency = idempotency(headers, &req)?;
    let now = now_ms();
    let new = NewJob {
        id: JobId::generate(),
        frontend,
        bot_id: key.bot_id().clone(),
        user_ref,
        capability: req.capability,
        reply_context: req.reply_context.clone(),
        idempotency,
        request_id: headers
            .get(tessera_api::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| tessera_api::is_valid_request_id(id))
            .map(str::to_owned),
        callback,
        now,
        day: state.clock.day_of(now),
    };
    let config = &state.config;
    // The prompt rules run inside the create, on the validated parameters and
    // the plan it reads, before anything is charged: a refusal is an invalid
    // create, and the transaction never reserves a token. What refused is
    // kept here to be recorded once the create has answered.
    let refused: Mutex<Option<moderation::Refusal>> = Mutex::new(None);
    // Admission control's inputs, read before the transaction; its decision
    // is made inside, against the plan the transaction reads, once the
    // prompt rules passed (a refused prompt is recorded whatever the queue).
    let inputs = admission_inputs(&state, &req, now).await?;
    let not_admitted: Mutex<Option<(String, admission::Refusal)>> = Mutex::new(None);
    let channel = frontend;
    let validate = |plan: &tessera_core::Plan| {
        let mut job = params::validate(
            req.capability,
            &req.params,
            plan,
            &config.catalog,
            &config.billing.costs,
        )?;
        job.adult_allowed = context_allows && config.moderation.plan_allows_adult(&plan.id);
        let context = moderation::Context {
            plan: &plan.id,
            channel,
            nsfw_allowed: job.adult_allowed,
        };
        match state.prompts.check(&mut job.params, &context) {
            Ok(_) => match inputs.as_ref().map(|inputs| {
                admission::decide(
                    &config.admission,
                    config.queue.policy.max_wait_ms,
                    plan,
                    &job.model,
                    inputs,
                )
            }) {
                Some(Err(refusal)) => {
                    let error = params::ParamError {
                        code: refusal_code(&refusal),
                        field: String::new(),
                        message: String::new(),
                    };
                    *not_admitted.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((plan.id.clone(), refusal));
                    Err(error)
                }
                _ => Ok(job),
            },
            Err(refusal) => {
                let error = params::ParamError {
                    code: refusal.code,
                    field: "params".into(),
                    message: refusal.message.clone(),
                };
                *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
                Err(error)
            }
        }
    };
    if req.capability == tessera_core::Capability::SpeechToText {
        check_input(&state, key, &req.params).await?;
    }
    let (job, replayed) = match state.store.create_job(&new, &validate).await? {
        CreateOutcome::Created(job) => {
            tracing::info!(
                job_id = %job.id,
                request_id = job.request_id.as_deref().unwrap_or("-"),
                capability = %job.capability,
                bot_id = %job.bot_id,
                "job created"
            );
            state.lifecycle.created(&job);
            (job, false)
        }
        CreateOutcome::Replayed(job) => (job, true),
        CreateOutcome::IdempotencyConflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request",
            ))
        }
        CreateOutcome::Invalid(e) => {
            let not_admitted = not_admitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some((plan, refusal)) = not_admitted {
                return Err(not_admitted_error(&state, &new, &plan, refusal));
            }
            let refusal = refused.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(refusal) = refusal {
                record_refusal(&state, &new, refusal).await;
            }
            return Err(ApiError::invalid(e.code, e.message).with_field(e.field));
        }
        CreateOutcome::ForeignAccount => return Err(foreign_account()),
        CreateOutcome::QuotaExhausted { plan, used, cost } => {
            let resets = state.clock.next_reset(now);
            let limit = plan.daily_tokens.unwrap_or(i64::MAX);
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QuotaExhausted,
                format!(
                    "this job costs {cost} tokens and {} of the {} plan's {limit} daily tokens are left; the quota resets at {}",
                    (limit - used).max(0),
                    plan.name,
                    rfc3339(resets).format("%H:%M UTC")
                ),
            );
            err.resets_at = Some(rfc3339(resets));
            return Err(err);
        }
    };
    // The job is committed: from here on nothing may turn this into an error, or
    // a client retrying without an Idempotency-Key would pay twice.
    let estimate = match estimate(&state, &job, now).await {
        Ok(e) => {
            if let (false, Some(start_in)) = (replayed, e.start_in) {
                // Checked against the job's real start when it is dispatched.
                let run = e.done_in.unwrap_or(0) as f64 - start_in;
                state.lifecycle.metrics().promised(
                    &job,
                    now + (start_in * 1000.0).round() as Millis,
                    (run.max(0.0) * 1000.0).round() as Millis,
                );
            }
            e.done_in.unwrap_or(0)
        }
        Err(e) => {
            tracing::warn!(job_id = %job.id, error = ?e, "no estimate for a created job");
            Estimator::queued(state.config.estimates.default_seconds(job.capability), 0)
        }
    };
    Ok(Submitted {
        job,
        replayed,
        estimated_time_seconds: estimate,
    })
}

/// What admission control reads before a create: the user's plan now, the
/// model the parameters choose under it, the workers ready for it, the
/// measured run time and, where they can matter, the queue's counts and the
/// user's queued jobs. `None` when the parameters are invalid (the create
/// refuses them), or when nothing could refuse the job: no plan has a cap
/// and no worker is ready for the capability (then nothing is read, and a
/// create costs what it did before admission).
async fn admission_inputs(
    state: &AppState,
    req: &CreateJobRequest,
    now: Millis,
) -> Result<Option<admission::Inputs>, ApiError> {
    let config = &state.config;
    let capacity_all_models = state
        .lifecycle
        .workers()
        .capacity_any_model(req.capability, now);
    if capacity_all_models == 0 && !config.admission.any_cap() {
        return Ok(None);
    }
    let plan = match state
        .store
        .quota(&req.user_ref, state.clock.day_of(now), now)
        .await?
    {
        Some(quota) => quota.plan,
        None => match state
            .store
            .plans()
            .await?
            .into_iter()
            .find(|p| p.id == tessera_core::Plan::DEFAULT_ID)
        {
            Some(plan) => plan,
            None => return Ok(None),
        },
    };
    let Ok(job) = params::validate(
        req.capability,
        &req.params,
        &plan,
        &config.catalog,
        &config.billing.costs,
    ) else {
        return Ok(None);
    };
    let capacity = state
        .lifecycle
        .workers()
        .capacity(req.capability, &job.model, now);
    let measured_run_seconds = if capacity > 0 {
        state
            .estimator
            .measured_seconds(&*state.store, req.capability)
            .await?
    } else {
        None
    };
    let (queued_by_priority, all_models) = if measured_run_seconds.is_some() {
        (
            state
                .store
                .queued_by_priority(req.capability, &job.model)
                .await?,
            state
                .store
                .queued_by_priority_all_models(req.capability)
                .await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let queued_all_models_by_priority = all_models.iter().map(|&(p, n, _)| (p, n)).collect();
    let oldest_wait_by_priority = all_models
        .iter()
        .filter_map(|&(p, _, oldest)| Some((p, (now - oldest?).max(0) as f64 / 1000.0)))
        .collect();
    let user_queued = match config.admission.cap(&plan.id) {
        Some(_) => Some(state.store.queued_of_user(&req.user_ref).await?),
        None => None,
    };
    let run_seconds = match measured_run_seconds {
        Some(run) => run,
        None => {
            state
                .estimator
                .run_seconds(&*state.store, req.capability)
                .await?
        }
    };
    Ok(Some(admission::Inputs {
        capability: req.capability,
        model: job.model,
        capacity,
        measured_run_seconds,
        queued_by_priority,
        queued_all_models_by_priority,
        capacity_all_models,
        oldest_wait_by_priority,
        user_queued,
        run_seconds,
    }))
}

fn refusal_code(refusal: &admission::Refusal) -> ErrorCode {
    match refusal {
        admission::Refusal::QueueFull { .. } => ErrorCode::QueueFull,
        admission::Refusal::TooManyQueued { .. } => ErrorCode::TooManyQueued,
    }
}

/// The 429 for a create admission control refused, counted and logged.
fn not_admitted_error(
    state: &AppState,
    new: &NewJob,
    plan: &str,
    refusal: admission::Refusal,
) -> ApiError {
    tracing::info!(
        plan,
        reason = refusal.reason(),
        capability = %new.capability,
        bot_id = %new.bot_id,
        "job refused by admission control"
    );
    state
        .lifecycle
        .metrics()
        .admission_refused(plan, refusal.reason());
    let retry_after = refusal.retry_after_seconds();
    let code = refusal_code(&refusal);
    let (message, wait) = match refusal {
        admission::Refusal::QueueFull {
            expected_wait_seconds,
            bound_seconds,
            retry_after_seconds,
        } => (
            format!(
                "the queue for {} jobs on this plan is full: a new job would wait about {expected_wait_seconds} s, past the plan's bound of {bound_seconds} s; retry in {retry_after_seconds} s",
                new.capability
            ),
            Some(expected_wait_seconds),
        ),
        admission::Refusal::TooManyQueued {
            queued,
            cap,
            retry_after_seconds,
        } => (
            format!(
                "this user has {queued} jobs waiting and the plan allows {cap}; retry in {retry_after_seconds} s, once one has started"
            ),
            None,
        ),
    };
    let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
    err.retry = Some((retry_after, wait));
    err
}

/// Counts and records a refused create. The refusal stands whatever
/// happens here: a record that cannot be written is logged.
async fn record_refusal(state: &AppState, new: &NewJob, refusal: moderation::Refusal) {
    tracing::info!(
        rule = %refusal.rule,
        code = refusal.code.as_str(),
        channel = new.frontend.as_str(),
        bot_id = %new.bot_id,
        "job refused by a prompt rule"
    );
    state
        .lifecycle
        .metrics()
        .refused(&refusal.rule, new.frontend);
    let record = NewRefusal {
        user_ref: new.user_ref.clone(),
        bot_id: new.bot_id.clone(),
        channel: new.frontend,
        rule: refusal.rule,
        code: refusal.code.as_str().to_owned(),
        excerpt: refusal.excerpt,
        now: new.now,
    };
    let refusal_id = match state.store.record_refusal(&record).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, rule = %record.rule, "a refusal could not be recorded");
            None
        }
    };
    super::people::after_refusal(state, &record, refusal_id).await;
}

/// Get a job: its state, queue position and estimate while it waits, progress
/// while it runs, and why it failed.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, body = JobView),
        (status = 404, description = "No such job for this frontend", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = visible_job(&state, &key, &job_id).await?;
    Ok(Json(seen_by(view(&state, job).await?, &key.bot_id)))
}

/// The job `job_id` names, if `key` sees it (404 otherwise, so ids do not
/// leak).
async fn visible_job(
    state: &AppState,
    key: &ApiKeyRecord,
    job_id: &str,
) -> Result<JobRecord, ApiError> {
    let id = parse_job_id(job_id)?;
    state
        .store
        .get_job(&id, Some(key.frontend))
        .await?
        .filter(|job| sees(key, job))
        .ok_or_else(job_not_found)
}

/// How often a follower re-reads its job from the store.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Follow a job as server-sent events, until it ends.
///
/// Events: `started` (`{}`: an attempt began on a worker; text shown so far
/// belongs to an earlier attempt and is void), `progress` (`{"progress": n}`,
/// percent), `output` (`{"text": "..."}`: new output text, following the text
/// since the last `started`), and last `end` (the job as `GET
/// /api/v1/jobs/{job_id}` answers it), after which the stream closes. A
/// follower that joins a running job first gets `started`, the attempt's
/// text so far as one `output`, and its progress. Keep-alive comments come
/// every 15 s. Output and progress reach followers connected to the
/// scheduler replica the job's worker reports to; the end reaches every
/// follower within a second, as the job is re-read every second.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/events", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "Server-sent events: `started`, `progress`, `output`, then `end` (a `JobView`)", content_type = "text/event-stream", body = Object),
        (status = 404, description = "No such job for this frontend", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{KeepAlive, Sse};
    let job = visible_job(&state, &key, &job_id).await?;
    let id = job.id.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        if let Err(e) = follow(&state, &key, job, &tx).await {
            tracing::debug!(job_id = %id, error = %e, "a job's follower stopped");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Why a follower stopped before the end: its client left, or the job
/// could not be read.
#[derive(Debug, thiserror::Error)]
enum Unfollowed {
    #[error("the client left")]
    Left,
    #[error("reading the job: {0:?}")]
    Read(ApiError),
    #[error("encoding the job: {0}")]
    Encode(String),
}

impl From<ApiError> for Unfollowed {
    fn from(e: ApiError) -> Self {
        Unfollowed::Read(e)
    }
}

/// Feeds `tx` the job's events until it ends, the client leaves, or the
/// scheduler stops.
async fn follow(
    state: &AppState,
    key: &ApiKeyRecord,
    job: JobRecord,
    tx: &tokio::sync::mpsc::Sender<axum::response::sse::Event>,
) -> Result<(), Unfollowed> {
    use crate::lifecycle::JobEvent;
    use axum::response::sse::Event;
    use tokio::sync::broadcast::error::RecvError;

    let send = |name: &'static str, data: serde_json::Value| async move {
        let event = Event::default().event(name).data(data.to_string());
        tx.send(event).await.map_err(|_| Unfollowed::Left)
    };
    let id = job.id.clone();
    let mut stopping = state.lifecycle.stopping();
    // Subscribed before anything is sent, so nothing falls between.
    let mut following = state.lifecycle.follow_output(&id);
    if job.status.is_terminal() {
        return end(state, key, job, tx).await;
    }
    // The attempt whose text was sent, and how much of it (bytes); `None`
    // once a `started` came whose attempt is not known here.
    let mut attempt = None;
    let mut sent = 0;
    if job.status == JobState::Running {
        send("started", serde_json::json!({})).await?;
        attempt = Some(job.attempts);
        if following.attempt == job.attempts && !following.text.is_empty() {
            sent = following.text.len();
            send("output", serde_json::json!({"text": following.text})).await?;
        }
        if let Some(p) = job.progress {
            send("progress", serde_json::json!({"progress": p})).await?;
        }
    }
    let mut poll = tokio::time::interval(FOLLOW_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        // Whether the store must be asked: the end, or the poll.
        let check = tokio::select! {
            _ = tx.closed() => return Err(Unfollowed::Left),
            _ = async { drop(stopping.wait_for(|s| *s).await) } => return Ok(()),
            event = following.events.recv() => match event {
                Ok(JobEvent::Started) => {
                    attempt = None;
                    sent = 0;
                    send("started", serde_json::json!({})).await?;
                    false
                }
                Ok(JobEvent::Progress(p)) => {
                    send("progress", serde_json::json!({"progress": p})).await?;
                    false
                }
                Ok(JobEvent::Output(text)) => {
                    sent += text.len();
                    send("output", serde_json::json!({"text": text})).await?;
                    false
                }
                Ok(JobEvent::Ended(_)) => true,
                Err(RecvError::Lagged(_)) => {
                    // Fell behind: catch up from the text held now.
                    following = state.lifecycle.follow_output(&id);
                    let text = &following.text;
                    let rest = (attempt == Some(following.attempt))
                        .then(|| text.get(sent..))
                        .flatten();
                    let rest = match rest {
                        Some(rest) => rest,
                        None => {
                            send("started", serde_json::json!({})).await?;
                            text.as_str()
                        }
                    };
                    if !rest.is_empty() {
                        send("output", serde_json::json!({"text": rest})).await?;
                    }
                    attempt = Some(following.attempt);
                    sent = text.len();
                    false
                }
                Err(RecvError::Closed) => {
                    // The stream ended or was swept: the store says which.
                    following.events = state.lifecycle.follow(&id);
                    true
                }
            },
            _ = poll.tick() => true,
        };
        if !check {
            continue;
        }
        let job = state
            .store
            .get_job(&id, Some(key.frontend))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(job_not_found)?;
        if job.status.is_terminal() {
            return end(state, key, job, tx).await;
        }
    }
}

/// The last event: the job as `GET /api/v1/jobs/{job_id}` answers it.
async fn end(
    state: &AppState,
    key: &ApiKeyRecord,
    job: JobRecord,
    tx: &tokio::sync::mpsc::Sender<axum::response::sse::Event>,
) -> Result<(), Unfollowed> {
    let view = seen_by(view(state, job).await?, &key.bot_id);
    let event = axum::response::sse::Event::default()
        .event("end")
        .json_data(view)
        .map_err(|e| Unfollowed::Encode(e.to_string()))?;
    tx.send(event).await.map_err(|_| Unfollowed::Left)
}

/// A job as one bot's key may see it: another bot's `reply_context` (where
/// that bot answers, possibly with a platform credential such as a Discord
/// interaction token) is withheld, and so is its `callback_url`.
fn seen_by(mut job: JobView, bot_id: &str) -> JobView {
    if job.bot_id != bot_id {
        job.reply_context = None;
        job.callback_url = None;
    }
    job
}

/// Cancel a queued or running job; its tokens are refunded in the same transaction.
#[utoipa::path(
    delete, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "Cancelled and refunded", body = JobView),
        (status = 404, body = ApiErrorBody),
        (status = 409, description = "The job already ended", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&job_id)?;
    let change = TransitionChange {
        now: now_ms(),
        frontend: Some(key.frontend),
        bot_id: own_bot_only(&key).cloned(),
        error: Some((
            ErrorCode::CancelledByUser.into(),
            format!("cancelled by {}", key.bot_id),
        )),
        ..Default::default()
    };
    let Json(job) = cancel_with(&state, &id, &change).await?;
    Ok(Json(seen_by(job, &key.bot_id)))
}

async fn cancel_with(
    state: &AppState,
    id: &JobId,
    change: &TransitionChange,
) -> Result<Json<JobView>, ApiError> {
    match state
        .lifecycle
        .apply(id, Transition::Cancel, change)
        .await?
    {
        TransitionOutcome::Applied(job) => {
            if job.worker_id.is_some() {
                // It was running: the engine must stop too.
                state.lifecycle.workers().stop_on_worker(&job);
            }
            Ok(Json(view(state, job).await?))
        }
        TransitionOutcome::Illegal(job) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::JobFinished,
            format!("the job is already {} and cannot be cancelled", job.status),
        )),
        TransitionOutcome::NotFound => Err(job_not_found()),
    }
}

/// Acknowledge that the outcome of an ended job (its outputs, or why it
/// failed) reached the user. A restarted bot lists `undelivered=true` jobs to
/// deliver what it lost; acknowledging twice is harmless.
#[utoipa::path(
    post, path = "/api/v1/jobs/{job_id}/delivered", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses(
        (status = 200, description = "Recorded (or already recorded)", body = JobView),
        (status = 404, body = ApiErrorBody),
        (status = 409, description = "The job has not ended yet", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn delivered(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&job_id)?;
    if let Some(job) = state
        .store
        .mark_delivered(
            &id,
            key.frontend,
            own_bot_only(&key).map(|b| b.as_str()),
            now_ms(),
        )
        .await?
    {
        return Ok(Json(seen_by(view(&state, job).await?, &key.bot_id)));
    }
    let job = state.store.get_job(&id, Some(key.frontend)).await?;
    match job.filter(|job| sees(&key, job)) {
        Some(job) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::JobNotFinished,
            format!(
                "the job is {} and has no outcome to deliver yet",
                job.status
            ),
        )),
        None => Err(job_not_found()),
    }
}

/// List this frontend's jobs, newest first, filtered and paged: for galleries, and
/// for a restarted bot to find the jobs it still has to answer. A web key lists
/// only its own bot's jobs: a `bot_id` filter naming another bot is refused
/// (403 `forbidden_bot`).
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "jobs",
    params(ListJobsQuery),
    responses(
        (status = 200, body = JobList),
        (status = 403, description = "A web key asked for another bot's jobs (`forbidden_bot`)", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    let mut filter = filter_from(&q)?;
    filter.frontend = Some(key.frontend);
    if let Some(own) = own_bot_only(&key) {
        if filter.bot_id.as_ref().is_some_and(|asked| asked != own) {
            return Err(ApiError::forbidden(
                ErrorCode::ForbiddenBot,
                format!(
                    "a web key lists only its own bot's jobs: this key's bot is {own}, not {}",
                    filter.bot_id.as_deref().unwrap_or_default()
                ),
            ));
        }
        filter.bot_id = Some(own.clone());
    }
    let Json(mut list) = list_with(&state, filter).await?;
    list.jobs = list
        .jobs
        .into_iter()
        .map(|j| seen_by(j, &key.bot_id))
        .collect();
    Ok(Json(list))
}

/// List jobs of every frontend, newest first (`status=QUEUED,RUNNING` for live ones).
#[utoipa::path(
    get, path = "/api/admin/jobs", tag = "admin",
    params(ListJobsQuery),
    responses((status = 200, body = JobList), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    list_with(&state, filter_from(&q)?).await
}

/// Cancel any job; its tokens are refunded.
#[utoipa::path(
    delete, path = "/api/admin/jobs/{job_id}", tag = "admin",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses((status = 200, body = JobView), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_job_id(&job_id)?;
    let change = TransitionChange {
        now: now_ms(),
        error: Some((
            ErrorCode::CancelledByAdmin.into(),
            "cancelled by an operator".into(),
        )),
        ..Default::default()
    };
    cancel_with(&state, &id, &change).await
}

fn filter_from(q: &ListJobsQuery) -> Result<JobFilter, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(
            ApiError::invalid(ErrorCode::InvalidQuery, "limit must be between 1 and 100")
                .with_field("limit"),
        );
    }
    // The `user_ref` and `bot_id` filters are typed, so they were checked as
    // strictly as the stored values when the query was read: text PostgreSQL
    // cannot take (U+0000) used to fail there with a 500.
    let statuses = match &q.status {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            // Spaces around a state, and no other blank: what the document's
            // `STATUS_FILTER_PATTERN` says.
            .map(|part| part.trim_matches(' ').parse::<JobState>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                ApiError::invalid(ErrorCode::InvalidQuery, e.to_string()).with_field("status")
            })?,
    };
    let before = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<JobId>().map_err(|_| {
            ApiError::invalid(
                ErrorCode::InvalidQuery,
                "cursor must be a next_cursor from a previous page",
            )
            .with_field("cursor")
        })?),
    };
    Ok(JobFilter {
        frontend: None,
        user_ref: q.user_ref.clone(),
        bot_id: q.bot_id.clone(),
        statuses,
        undelivered: q.undelivered.unwrap_or(false),
        before,
        limit,
    })
}

async fn list_with(state: &AppState, filter: JobFilter) -> Result<Json<JobList>, ApiError> {
    let jobs = state.store.list_jobs(&filter).await?;
    let next_cursor = (jobs.len() == filter.limit as usize)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobList {
        jobs: views(state, jobs).await?,
        next_cursor,
    }))
}

/// A speech-to-text job reads an input this frontend uploaded. A malformed id
/// is left to parameter validation, which names the field.
async fn check_input(
    state: &AppState,
    key: &impl Speaks,
    params: &serde_json::Value,
) -> Result<(), ApiError> {
    let Some(id) = params
        .get("input_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<tessera_core::InputId>().ok())
    else {
        return Ok(());
    };
    // A web key passes only its own bot's inputs, as it sees only its jobs.
    match state.store.get_input(&id).await? {
        Some(input)
            if input.frontend == key.frontend()
                && own_bot_only(key).is_none_or(|bot| *bot == input.bot_id) =>
        {
            Ok(())
        }
        _ => Err(ApiError::invalid(
            ErrorCode::UnknownInput,
            "input_id must be an input this frontend uploaded with POST /api/v1/inputs",
        )
        .with_field("params.input_id")),
    }
}

fn idempotency(
    headers: &HeaderMap,
    req: &CreateJobRequest,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get(tessera_api::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidIdempotencyKey,
                format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"),
            )
        })?;
    // The parsed request re-serialised: object keys come out sorted, so two
    // spellings of the same request hash the same.
    let canonical = serde_json::to_vec(req).expect("requests serialise");
    Ok(Some(Idempotency {
        key: key.to_owned(),
        request_hash: Sha256::digest(&canonical).to_vec(),
    }))
}

/// Whether a JSON value holds U+0000 in any string or object key.
fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// For a live job: how many jobs run before it and when it starts (queued
/// only), and the seconds until it is done.
async fn estimate(state: &AppState, job: &JobRecord, now: Millis) -> Result<Estimate, ApiError> {
    if !matches!(
        job.status,
        JobState::Queued | JobState::Created | JobState::Running
    ) {
        return Ok(Estimate::default());
    }
    let (run, load) = state
        .estimator
        .model_seconds(
            &*state.store,
            state.lifecycle.timings(),
            job.capability,
            &job.model,
        )
        .await?;
    if job.status == JobState::Running {
        return Ok(Estimate {
            done_in: Some(Estimator::running(run, job.started_at.unwrap_or(now), now)),
            ..Estimate::default()
        });
    }
    let ahead = state.positions.ahead_of(&*state.store, job).await?;
    // The jobs ahead drain at the capability's mean time a job holds a
    // worker (loads included); this one then runs its model's time.
    let drain = state
        .estimator
        .run_seconds(&*state.store, job.capability)
        .await?;
    // The workers that can run it take the jobs ahead side by side; if none
    // holds its model, one loads it first.
    let capacity = state
        .lifecycle
        .workers()
        .capacity_now(job.capability, &job.model, now);
    let start_in = Estimator::start_in(drain, load, ahead, capacity);
    Ok(Estimate {
        ahead: Some(ahead),
        done_in: Some((start_in + run).ceil().max(1.0) as u64),
        start_in: Some(start_in),
    })
}

/// What a live job's view says of its future.
#[derive(Default)]
struct Estimate {
    /// Jobs that run before it (queued only).
    ahead: Option<u64>,
    /// Seconds until it is done.
    done_in: Option<u64>,
    /// Seconds until it starts (queued only).
    start_in: Option<f64>,
}

/// The frontend's view of a stored job.
pub(crate) async fn view(state: &AppState, job: JobRecord) -> Result<JobView, ApiError> {
    let mut views = views(state, vec![job]).await?;
    Ok(views.pop().expect("one view per job"))
}

/// Views of several jobs, their artifacts read in one query.
async fn views(state: &AppState, jobs: Vec<JobRecord>) -> Result<Vec<JobView>, ApiError> {
    let completed: Vec<JobId> = jobs
        .iter()
        .filter(|j| j.status == JobState::Completed)
        .map(|j| j.id.clone())
        .collect();
    let mut artifacts: HashMap<JobId, Vec<ArtifactView>> = HashMap::new();
    for a in state.store.artifacts_of(&completed).await? {
        artifacts
            .entry(a.job_id.clone())
            .or_default()
            .push(ArtifactView {
                url: format!("/api/v1/artifacts/{}", a.id),
                artifact_id: a.id,
                kind: a.kind,
                format: a.format,
                width: a.width,
                height: a.height,
                file_size: a.file_size,
                created_at: rfc3339(a.created_at),
            });
    }
    let now = now_ms();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let unservable = job.status == JobState::Queued
            && !state
                .lifecycle
                .workers()
                .serves(job.capability, &job.model, now);
        let (queue_position, estimated_time_seconds) = if unservable {
            (None, None)
        } else {
            let e = estimate(state, &job, now).await?;
            (e.ahead, e.done_in)
        };
        let notice = unservable.then(|| JobError {
            code: ErrorCode::NoWorker.into(),
            message: format!(
                "no online worker serves {} with {} now; the job waits for one, and fails and is refunded after {} s",
                job.capability, job.model, state.config.workers.unservable_after_secs
            ),
        });
        let error = match (job.error_code, job.error_message) {
            (Some(code), message) => Some(JobError {
                code,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        out.push(JobView {
            artifacts: artifacts.remove(&job.id).unwrap_or_default(),
            job_id: job.id,
            status: job.status,
            frontend: job.frontend,
            bot_id: job.bot_id,
            capability: job.capability,
            model: job.model,
            user_ref: job.user_ref,
            params: job.params.to_value(),
            reply_context: job.reply_context,
            cost_tokens: job.cost_tokens,
            refunded: job.refunded,
            attempts: job.attempts,
            queue_position,
            estimated_time_seconds,
            progress: job.progress,
            error,
            notice,
            created_at: rfc3339(job.created_at),
            queued_at: job.queued_at.map(rfc3339),
            started_at: job.started_at.map(rfc3339),
            ended_at: job.ended_at.map(rfc3339),
            delivered_at: job.delivered_at.map(rfc3339),
            callback_url: job.callback_url,
        });
    }
    Ok(out)
}
