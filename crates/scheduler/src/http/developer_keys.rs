//! `/api/v1/accounts/{user_ref}/developer-keys`: a website account's
//! personal keys for the OpenAI-compatible gateway ([`super::gateway`]).
//!
//! The website makes, lists and revokes them for its signed-in owner, with
//! its web key, as it reads the account: only keys of the account's home bot
//! reach them. A developer key acts as that person: jobs made with it are
//! the account's jobs of its home bot (its plan, quota, priority, moderation
//! and bans apply, and they show in its gallery), limited to the key's
//! capabilities if it has a list. The secret (`tdk_` + 40 hex digits) is
//! shown once; only its SHA-256 is kept, as for frontend keys. A revoked key
//! stops at once on this replica and within `auth.key_cache_secs` on others.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::public::{
    CreatedDeveloperKey, DeveloperKeyList, DeveloperKeyView, NewDeveloperKeyRequest,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::DeveloperKeyId;

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Refusal};
use super::scope::{account_not_found, user_ref_for, web_only};
use super::wire::rfc3339;
use super::AppState;
use crate::auth::{hash_secret, new_developer_key};
use crate::lifecycle::now_ms;
use crate::store::{DeveloperKeyRecord, MintOutcome, NewDeveloperKey};

/// Most live developer keys one account may hold.
pub const MAX_LIVE_KEYS: i64 = 20;
/// Longest key name, in characters.
const MAX_NAME_CHARS: usize = 64;

impl Refusal for NewDeveloperKeyRequest {}

/// Make a developer key for an account (web keys of the account's website).
/// The answer is the only time the secret is shown.
#[utoipa::path(
    post, path = "/api/v1/accounts/{user_ref}/developer-keys", tag = "accounts",
    params(("user_ref" = String, Path, description = "The account's `web:` user", pattern = "^web:[A-Za-z0-9_.@-]{1,64}$")),
    request_body = NewDeveloperKeyRequest,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedDeveloperKey),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 404, description = "This web user has no account of this key's bot", body = ApiErrorBody),
        (status = 409, description = "The account holds as many live keys as it may (`too_many_keys`)", body = ApiErrorBody),
        (status = 422, description = "A name that is empty, too long or not printable, or a capability listed twice or none (`invalid_request`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<NewDeveloperKeyRequest>,
) -> Result<(StatusCode, Json<CreatedDeveloperKey>), ApiError> {
    web_only(&key)?;
    let account = user_ref_for(&key.frontend, &user_ref)?;
    // As the document states it: the name as sent is 1 to 64 characters,
    // none a control character, not all spaces; it is kept trimmed.
    let name = req.name.trim();
    if name.is_empty()
        || req.name.chars().count() > MAX_NAME_CHARS
        || req.name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            format!("a key's name is 1 to {MAX_NAME_CHARS} printable characters"),
        )
        .with_field("name"));
    }
    if let Some(list) = &req.capabilities {
        let mut seen = list.clone();
        seen.sort();
        seen.dedup();
        if list.is_empty() || seen.len() != list.len() {
            return Err(ApiError::invalid(
                ErrorCode::InvalidRequest,
                "capabilities lists each capability at most once, and at least one (leave it out for all)",
            )
            .with_field("capabilities"));
        }
    }
    let secret = new_developer_key();
    let outcome = state
        .store
        .insert_developer_key(&NewDeveloperKey {
            account: &account,
            home_bot: &key.bot_id,
            name,
            capabilities: req.capabilities.as_deref(),
            secret_hash: &hash_secret(&secret),
            max_live: MAX_LIVE_KEYS,
            now: now_ms(),
        })
        .await?;
    match outcome {
        MintOutcome::Minted(record) => {
            tracing::info!(user_ref = %account, key_id = %record.id, "developer key created");
            Ok((
                StatusCode::CREATED,
                Json(CreatedDeveloperKey {
                    key: view(record),
                    api_key: secret,
                }),
            ))
        }
        MintOutcome::NoAccount => Err(account_not_found()),
        MintOutcome::TooMany => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::TooManyKeys,
            format!("an account holds at most {MAX_LIVE_KEYS} live keys; revoke one first"),
        )),
    }
}

/// An account's developer keys, revoked ones too, oldest first (web keys of
/// the account's website). Secrets are never shown again.
#[utoipa::path(
    get, path = "/api/v1/accounts/{user_ref}/developer-keys", tag = "accounts",
    params(("user_ref" = String, Path, description = "The account's `web:` user", pattern = "^web:[A-Za-z0-9_.@-]{1,64}$")),
    responses(
        (status = 200, body = DeveloperKeyList),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 404, description = "This web user has no account of this key's bot", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(user_ref): ApiPath<String>,
) -> Result<Json<DeveloperKeyList>, ApiError> {
    web_only(&key)?;
    let account = user_ref_for(&key.frontend, &user_ref)?;
    let found = state
        .store
        .get_account(&account)
        .await?
        .is_some_and(|a| a.home_bot == key.bot_id);
    if !found {
        return Err(account_not_found());
    }
    let keys = state
        .store
        .list_developer_keys(&account, &key.bot_id)
        .await?;
    Ok(Json(DeveloperKeyList {
        keys: keys.into_iter().map(view).collect(),
    }))
}

/// Revoke a developer key of an account (web keys of the account's
/// website). Its next request is refused; revoking twice keeps the first time.
#[utoipa::path(
    delete, path = "/api/v1/accounts/{user_ref}/developer-keys/{key_id}", tag = "accounts",
    params(
        ("user_ref" = String, Path, description = "The account's `web:` user", pattern = "^web:[A-Za-z0-9_.@-]{1,64}$"),
        ("key_id" = String, Path, description = "The key's id, `dkey_...`", pattern = "^dkey_[0-7][0-9A-HJKMNP-TV-Z]{25}$"),
    ),
    responses(
        (status = 200, description = "The key, revoked", body = DeveloperKeyView),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 404, description = "The account has no such key (`key_not_found`)", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath((user_ref, key_id)): ApiPath<(String, String)>,
) -> Result<Json<DeveloperKeyView>, ApiError> {
    web_only(&key)?;
    let account = user_ref_for(&key.frontend, &user_ref)?;
    let not_found = || ApiError::not_found(ErrorCode::KeyNotFound, "this account has no such key");
    let id: DeveloperKeyId = key_id.parse().map_err(|_| not_found())?;
    let record = state
        .store
        .revoke_developer_key(&account, &key.bot_id, &id, now_ms())
        .await?
        .ok_or_else(not_found)?;
    state.developer_keys.forget(&record.id);
    tracing::info!(user_ref = %account, key_id = %record.id, "developer key revoked");
    Ok(Json(view(record)))
}

fn view(key: DeveloperKeyRecord) -> DeveloperKeyView {
    DeveloperKeyView {
        key_id: key.id,
        name: key.name,
        capabilities: key.capabilities,
        created_at: rfc3339(key.created_at),
        last_used_at: key.last_used_at.map(rfc3339),
        revoked_at: key.revoked_at.map(rfc3339),
    }
}
