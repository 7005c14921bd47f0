//! `/api/admin`: the operator's API, behind the admin token. `tessera admin` is its
//! command-line client.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::admin::{CreateKeyRequest, CreatedKey, KeyList, KeyView, SetPlanRequest};
use tessera_api::internal::{WorkerInfo, WorkerList};
use tessera_api::public::{JobList, JobView, ListJobsQuery, UserQuota};
use tessera_api::ApiErrorBody;
use tessera_core::{ApiKeyId, UserRef};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::jobs::{self, rfc3339};
use super::users::to_view;
use super::{now_ms, AppState};
use crate::auth::{hash_secret, new_api_key};
use crate::store::{ApiKeyRecord, TransitionChange};

fn key_view(k: ApiKeyRecord) -> KeyView {
    KeyView {
        key_id: k.id,
        frontend: k.frontend,
        bot_id: k.bot_id,
        created_at: rfc3339(k.created_at),
        revoked_at: k.revoked_at.map(rfc3339),
    }
}

/// Bot ids name processes in logs and configs: keep them plain.
pub fn is_bot_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Create a frontend API key bound to one frontend and bot. The secret is in this
/// answer only; the scheduler keeps its hash.
#[utoipa::path(
    post, path = "/api/admin/keys", tag = "admin",
    request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 401, body = ApiErrorBody), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    if !is_bot_id(&req.bot_id) {
        return Err(ApiError::invalid(
            "invalid_bot_id",
            "bot_id must be 1-64 letters, digits, `-`, `_` or `.`",
        )
        .with_field("bot_id"));
    }
    let secret = new_api_key();
    let key = state
        .store
        .insert_api_key(req.frontend, &req.bot_id, &hash_secret(&secret), now_ms())
        .await?;
    tracing::info!(key_id = %key.id, frontend = %key.frontend, bot_id = %key.bot_id, "frontend key created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key_view(key),
            api_key: secret,
        }),
    ))
}

/// List frontend keys, revoked ones included; secrets are never shown.
#[utoipa::path(
    get, path = "/api/admin/keys", tag = "admin",
    responses((status = 200, body = KeyList), (status = 401, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.list_api_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(key_view).collect(),
    }))
}

/// Revoke a frontend key. It stops working at once on this scheduler, and on other
/// replicas within `auth.key_cache_secs`.
#[utoipa::path(
    delete, path = "/api/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path, description = "The key's id, `key_...`", pattern = "^key_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses((status = 200, body = KeyView), (status = 401, body = ApiErrorBody), (status = 404, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let not_found = || ApiError::not_found("key_not_found", "no such key");
    let id: ApiKeyId = key_id.parse().map_err(|_| not_found())?;
    let key = state
        .store
        .revoke_api_key(&id, now_ms())
        .await?
        .ok_or_else(not_found)?;
    state.keys.forget(&key.id);
    tracing::info!(key_id = %key.id, "frontend key revoked");
    Ok(Json(key_view(key)))
}

/// Put a user on a plan (created if never seen). For a bot user linked to a
/// website account this is the account's plan, which all its users share.
#[utoipa::path(
    put, path = "/api/admin/users/{user_ref}/plan", tag = "admin",
    params(("user_ref" = String, Path, description = "`platform:id`", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    request_body = SetPlanRequest,
    responses((status = 200, body = UserQuota), (status = 401, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn set_plan(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<SetPlanRequest>,
) -> Result<Json<UserQuota>, ApiError> {
    let user: UserRef = user_ref
        .parse()
        .map_err(|e: tessera_core::user_ref::InvalidUserRef| {
            ApiError::invalid("invalid_user_ref", e.to_string()).with_field("user_ref")
        })?;
    let now = now_ms();
    let not_found = || {
        ApiError::not_found(
            "plan_not_found",
            format!(
                "no plan {:?}; plans are free, starter, pro, admin",
                req.plan_id
            ),
        )
    };
    // A name no plan can have is not looked up: text PostgreSQL cannot take
    // (U+0000) used to fail there with a 500 instead of this 404.
    if !is_bot_id(&req.plan_id) {
        return Err(not_found());
    }
    let quota = state
        .store
        .set_plan(&user, &req.plan_id, state.clock.day_of(now), now)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(user_ref = %user, plan = %req.plan_id, "plan changed");
    Ok(Json(to_view(&state, quota, now)))
}

/// List jobs of every frontend, newest first (`status=QUEUED,RUNNING` for live ones).
#[utoipa::path(
    get, path = "/api/admin/jobs", tag = "admin",
    params(ListJobsQuery),
    responses((status = 200, body = JobList), (status = 401, body = ApiErrorBody), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> Result<Json<JobList>, ApiError> {
    jobs::list_with(&state, jobs::filter_from(&q)?).await
}

/// Cancel any job; its tokens are refunded.
#[utoipa::path(
    delete, path = "/api/admin/jobs/{job_id}", tag = "admin",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    responses((status = 200, body = JobView), (status = 401, body = ApiErrorBody), (status = 404, body = ApiErrorBody), (status = 409, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = jobs::parse_job_id(&job_id)?;
    let change = TransitionChange {
        now: now_ms(),
        error: Some((
            "cancelled_by_admin".into(),
            "cancelled by an operator".into(),
        )),
        ..Default::default()
    };
    jobs::cancel_with(&state, &id, &change).await
}

/// Workers the scheduler has heard from, online or not.
#[utoipa::path(
    get, path = "/api/admin/workers", tag = "admin",
    responses((status = 200, body = WorkerList), (status = 401, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_workers(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<WorkerList>, ApiError> {
    let now = now_ms();
    let workers = state.store.list_workers().await?;
    Ok(Json(WorkerList {
        workers: workers
            .into_iter()
            .map(|w| WorkerInfo {
                online: state.config.workers.is_online(w.last_seen_at, now),
                heartbeat: w.heartbeat,
                first_seen_at: rfc3339(w.first_seen_at),
                last_seen_at: rfc3339(w.last_seen_at),
            })
            .collect(),
    }))
}
