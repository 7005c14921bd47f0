//! `/api/v1/webhook-secret`: a frontend key's webhook signing secret, and
//! the check of a job's `callback_url` at create (docs/webhooks.md).
//!
//! The secret signs every webhook of the key's jobs, so it is kept as it is
//! (a hash could not sign); it is shown once, when made, and rotating it
//! replaces it at once for every delivery not yet sent.

use axum::extract::State;
use axum::Json;

use tessera_api::public::WebhookSecret;
use tessera_api::{ApiErrorBody, ErrorCode};

use super::auth::Frontend;
use super::error::ApiError;
use super::scope::Speaks;
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::store::Callback;
use crate::webhooks::{new_secret, CallbackError};

/// Create or rotate this key's webhook signing secret.
///
/// Answers the new secret (`whsec_` and 64 hex digits), the only time it is
/// shown. Every webhook of this key's jobs sent from now on is signed with
/// it (`Tessera-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`);
/// an earlier secret stops signing at once.
#[utoipa::path(
    post, path = "/api/v1/webhook-secret", tag = "jobs",
    responses(
        (status = 200, description = "The new secret, shown once", body = WebhookSecret),
        (status = 401, body = ApiErrorBody),
        (status = 403, description = "Not a frontend key (`wrong_credential`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn rotate(
    State(state): State<AppState>,
    Frontend(key): Frontend,
) -> Result<Json<WebhookSecret>, ApiError> {
    let secret = new_secret();
    let now = now_ms();
    state
        .store
        .set_webhook_secret(key.id.as_str(), &secret, now)
        .await?;
    tracing::info!(key_id = %key.id, "webhook secret rotated");
    Ok(Json(WebhookSecret {
        secret,
        created_at: rfc3339(now),
    }))
}

/// Checks a create's `callback_url` (its shape, the key's secret, every
/// address its host resolves to) and answers what the job keeps.
pub(crate) async fn callback(
    state: &AppState,
    key: &impl Speaks,
    url: &str,
) -> Result<Callback, ApiError> {
    let refused = |e: CallbackError| match e {
        CallbackError::Invalid(m) => {
            ApiError::invalid(ErrorCode::InvalidRequest, m).with_field("callback_url")
        }
        CallbackError::NotAllowed(m) => {
            ApiError::invalid(ErrorCode::CallbackNotAllowed, m).with_field("callback_url")
        }
    };
    crate::webhooks::AddressPolicy::parse(url).map_err(refused)?;
    if state.store.webhook_secret(&key.key_id()).await?.is_none() {
        return Err(ApiError::invalid(
            ErrorCode::WebhookSecretMissing,
            "this key has no webhook secret to sign the callback with: call POST /api/v1/webhook-secret first",
        )
        .with_field("callback_url"));
    }
    state.webhook_policy.check(url).await.map_err(refused)?;
    Ok(Callback {
        url: url.to_owned(),
        key_id: key.key_id(),
    })
}
