//! Who is calling: extractors for the frontend key and the admin, internal and
//! metrics tokens, and the developer key check of the gateway.
//!
//! - No `Authorization: Bearer` header: 401 `unauthorized`.
//! - A credential that is nobody's: 401 `invalid_credentials`.
//! - A real credential of the wrong kind (the admin token on the public API, a
//!   frontend key on the admin or internal API, ...): 403 `wrong_credential`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::auth::{hash_secret, TokenCheck, DEVELOPER_KEY_PREFIX};
use crate::store::{ApiKeyRecord, DeveloperKeyRecord};
use tessera_api::ErrorCode;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send your key as `Authorization: Bearer <key>`"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <key>`",
        )),
    }
}

fn invalid() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidCredentials,
        "the credential is not valid (unknown or revoked)",
    )
}

/// A request made with a live frontend API key.
pub struct Frontend(pub ApiKeyRecord);

impl FromRequestParts<AppState> for Frontend {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let hash = hash_secret(token);
        if let Some(key) = state.keys.get(&hash) {
            return Ok(Frontend(key));
        }
        if let Some(key) = state.store.find_api_key(&hash).await? {
            state.keys.put(hash, key.clone());
            return Ok(Frontend(key));
        }
        if is_token(state, token) || is_developer_key(state, token).await? {
            return Err(ApiError::forbidden(
                ErrorCode::WrongCredential,
                "this endpoint needs a frontend API key, not an admin, internal or metrics token or a developer key",
            ));
        }
        Err(invalid())
    }
}

/// The live developer key a gateway request carries (`tdk_...`). A frontend
/// key or a configured token is a real credential of the wrong kind (403
/// `wrong_credential`); anything else is 401. A key's use is recorded when
/// it is read from the store and its last recorded use is a minute old or
/// more, so a busy key costs no write per request; that write is done before
/// the request goes on, so the use is visible as soon as it is answered.
pub(crate) async fn developer_key(
    parts: &Parts,
    state: &AppState,
) -> Result<DeveloperKeyRecord, ApiError> {
    let token = bearer(parts)?;
    let hash = hash_secret(token);
    if token.starts_with(DEVELOPER_KEY_PREFIX) {
        if let Some(key) = state.developer_keys.get(&hash) {
            return Ok(key);
        }
        if let Some(key) = state.store.find_developer_key(&hash).await? {
            let now = crate::lifecycle::now_ms();
            if key
                .last_used_at
                .is_none_or(|at| now - at >= crate::store::TOUCH_EVERY_MS)
            {
                // Awaited, not spawned: at most one write a minute per key,
                // and the account page then shows the use the request made.
                if let Err(e) = state.store.touch_developer_key(&key.id, now).await {
                    tracing::debug!(key_id = %key.id, error = %e, "a developer key's use not recorded");
                }
            }
            state.developer_keys.put(hash, key.clone());
            return Ok(key);
        }
        return Err(invalid());
    }
    if is_token(state, token) || state.store.find_api_key(&hash).await?.is_some() {
        return Err(ApiError::forbidden(
            ErrorCode::WrongCredential,
            "the gateway takes developer keys (tdk_...), which an account makes on the website's account page",
        ));
    }
    Err(invalid())
}

/// Whether `token` is a live developer key: a real credential, so its use
/// outside the gateway is 403, not 401. Asked only of refused requests.
async fn is_developer_key(state: &AppState, token: &str) -> Result<bool, ApiError> {
    Ok(token.starts_with(DEVELOPER_KEY_PREFIX)
        && state
            .store
            .find_developer_key(&hash_secret(token))
            .await?
            .is_some())
}

/// Whether `token` is one of the scheduler's configured tokens (admin,
/// internal, metrics): a real credential, so a wrong use of it is 403, not 401.
fn is_token(state: &AppState, token: &str) -> bool {
    state.admin.matches(token)
        || state.internal.matches(token)
        || state.metrics_reader.matches(token)
}

/// Checks that the request carries the configured token `expected` (named
/// `name`: `admin` or `internal`). Another real credential (another token or a
/// frontend key) is recognised only to answer 403 rather than 401.
async fn require_token(
    parts: &Parts,
    state: &AppState,
    expected: &TokenCheck,
    name: &str,
) -> Result<(), ApiError> {
    let token = bearer(parts)?;
    if expected.matches(token) {
        return Ok(());
    }
    if !expected.is_configured() {
        return Err(ApiError::unauthorized(format!(
            "the {name} API is disabled: configure auth.{name}_token on the scheduler"
        )));
    }
    if is_token(state, token)
        || is_developer_key(state, token).await?
        || state
            .store
            .find_api_key(&hash_secret(token))
            .await?
            .is_some()
    {
        return Err(ApiError::forbidden(
            ErrorCode::WrongCredential,
            format!("this endpoint needs the {name} token"),
        ));
    }
    Err(invalid())
}

/// A request made with the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        require_token(parts, state, &state.admin, "admin").await?;
        Ok(Admin)
    }
}

/// A request made with the internal token (workers).
pub struct Internal;

impl FromRequestParts<AppState> for Internal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        require_token(parts, state, &state.internal, "internal").await?;
        Ok(Internal)
    }
}

/// A request that may read the metrics: the metrics token or the admin token.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if state.metrics_reader.matches(token) || state.admin.matches(token) {
            return Ok(MetricsReader);
        }
        if !state.metrics_reader.is_configured() && !state.admin.is_configured() {
            return Err(ApiError::unauthorized(
                "the metrics are disabled: configure auth.metrics_token (or auth.admin_token) on the scheduler",
            ));
        }
        if state.internal.matches(token)
            || is_developer_key(state, token).await?
            || state
                .store
                .find_api_key(&hash_secret(token))
                .await?
                .is_some()
        {
            return Err(ApiError::forbidden(
                ErrorCode::WrongCredential,
                "the metrics need the metrics token or the admin token",
            ));
        }
        Err(invalid())
    }
}
