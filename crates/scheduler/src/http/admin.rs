//! `/api/admin`: the operator's API for keys and workers, behind the admin
//! token. `tessera admin` is its command-line client; the operator's calls on
//! jobs and plans live with their resources ([`super::jobs`], [`super::users`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::admin::{CreateKeyRequest, CreatedKey, KeyList, KeyView};
use tessera_api::internal::{WorkerInfo, WorkerList};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{ApiKeyId, BotId};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Refusal};
use super::wire::rfc3339;
use super::AppState;
use crate::auth::{hash_secret, new_api_key};
use crate::lifecycle::now_ms;
use crate::store::ApiKeyRecord;

fn key_view(k: ApiKeyRecord) -> KeyView {
    KeyView {
        key_id: k.id,
        frontend: k.frontend,
        bot_id: k.bot_id,
        created_at: rfc3339(k.created_at),
        revoked_at: k.revoked_at.map(rfc3339),
    }
}

/// A key's `bot_id` that is not a plain name is `invalid_bot_id`.
impl Refusal for CreateKeyRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        let code = if field == BotId::FIELD {
            ErrorCode::InvalidBotId
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::invalid(code, message).with_field(field)
    }
}

/// Create a frontend API key bound to one frontend and bot. The secret is in this
/// answer only; the scheduler keeps its hash.
#[utoipa::path(
    post, path = "/api/admin/keys", tag = "admin",
    request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
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
    responses((status = 200, body = KeyList)),
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
    responses((status = 200, body = KeyView), (status = 404, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(key_id): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let not_found = || ApiError::not_found(ErrorCode::KeyNotFound, "no such key");
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

/// Workers the scheduler has heard from, online or not.
#[utoipa::path(
    get, path = "/api/admin/workers", tag = "admin",
    responses((status = 200, body = WorkerList)),
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
