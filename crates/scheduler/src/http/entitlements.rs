//! `/api/v1/payments/discord`: Discord premium app subscriptions. A Discord
//! bot relays the entitlements Discord showed it (each interaction's, and
//! the gateway's `ENTITLEMENT_CREATE`/`UPDATE`/`DELETE`); the scheduler keeps
//! those of the user's own subscription SKUs it sells and records them in the
//! ledger ([`crate::payments::entitlements`] says how an entitlement becomes
//! events). And the SKU of each plan, for the bot's `/subscribe`. Discord
//! keys only: others 403 `forbidden_frontend`.

use axum::extract::State;
use axum::Json;

use tessera_api::entitlements::{
    DiscordSku, DiscordSkus, EntitlementOutcome, EntitlementResult, EntitlementsOutcome,
    EntitlementsRequest,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{Platform, UserRef};

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::{ApiJson, Refusal};
use super::AppState;
use crate::lifecycle::now_ms;
use crate::payments::entitlements::is_snowflake;
use crate::store::{ApiKeyRecord, ApplyOutcome};

/// The most entitlements one request relays.
const MAX_ENTITLEMENTS: usize = 100;

fn discord_only(key: &ApiKeyRecord) -> Result<(), ApiError> {
    if key.frontend == Platform::Discord {
        return Ok(());
    }
    Err(ApiError::forbidden(
        ErrorCode::ForbiddenFrontend,
        format!(
            "Discord subscriptions are the Discord bots': a {} key cannot use them",
            key.frontend
        ),
    ))
}

impl Refusal for EntitlementsRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        let code = if field == "user_ref" {
            ErrorCode::InvalidUserRef
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::invalid(code, message).with_field(field)
    }
}

/// Relay the entitlements Discord showed a bot for one user. Each one of the
/// user's own subscription SKUs this scheduler sells becomes a ledger event
/// (once: the same entitlement seen again the same day, or a redelivered
/// dispatch, changes nothing); others are ignored. A user never seen is
/// created. Answers the plan that now applies.
#[utoipa::path(
    post, path = "/api/v1/payments/discord/entitlements", tag = "payments",
    request_body = EntitlementsRequest,
    responses(
        (status = 200, body = EntitlementsOutcome),
        (status = 403, description = "Not a Discord key (`forbidden_frontend`), or not a Discord user (`forbidden_user_ref`)", body = ApiErrorBody),
        (status = 422, description = "An id is not a snowflake, or more than 100 entitlements (`invalid_request`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn relay(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<EntitlementsRequest>,
) -> Result<Json<EntitlementsOutcome>, ApiError> {
    discord_only(&key)?;
    if req.user_ref.platform() != Platform::Discord {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenUserRef,
            format!("{} is not a Discord user", req.user_ref),
        ));
    }
    if req.entitlements.len() > MAX_ENTITLEMENTS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            format!("at most {MAX_ENTITLEMENTS} entitlements at once"),
        )
        .with_field("entitlements"));
    }
    for (i, e) in req.entitlements.iter().enumerate() {
        let ids = [
            ("id", Some(&e.id)),
            ("sku_id", Some(&e.sku_id)),
            ("user_id", e.user_id.as_ref()),
        ];
        for (name, value) in ids {
            if value.is_some_and(|v| !is_snowflake(v)) {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidRequest,
                    format!("{name} must be a Discord snowflake (1-20 digits)"),
                )
                .with_field(format!("entitlements.{i}.{name}")));
            }
        }
    }
    let now = now_ms();
    let config = &state.config.payments.discord;
    let mut results = Vec::with_capacity(req.entitlements.len());
    let mut ensured = false;
    for e in &req.entitlements {
        let events = match config.events(&req.user_ref, req.source, e, now) {
            Ok(events) => events,
            Err(why) => {
                results.push(EntitlementResult {
                    entitlement_id: e.id.clone(),
                    outcome: EntitlementOutcome::Ignored,
                    detail: format!("ignored: {why}"),
                });
                continue;
            }
        };
        if !ensured {
            state.store.ensure_user(&req.user_ref, now).await?;
            ensured = true;
        }
        for event in events {
            let (outcome, detail) = match state.store.apply_payment_event(&event, now).await? {
                ApplyOutcome::Recorded(r) => {
                    tracing::info!(user_ref = %req.user_ref, entitlement = %e.id, event = %r.event_id, effect = %r.effect, "Discord entitlement recorded");
                    (EntitlementOutcome::Recorded, r.effect)
                }
                ApplyOutcome::AlreadyRecorded(r) => (EntitlementOutcome::AlreadyRecorded, r.effect),
                ApplyOutcome::Invalid(why) => {
                    tracing::error!(entitlement = %e.id, %why, "a Discord entitlement made a malformed event");
                    (EntitlementOutcome::Ignored, format!("ignored: {why}"))
                }
            };
            results.push(EntitlementResult {
                entitlement_id: e.id.clone(),
                outcome,
                detail,
            });
        }
    }
    let plan = plan_now(&state, &req.user_ref, now).await?;
    Ok(Json(EntitlementsOutcome {
        user_ref: req.user_ref,
        plan,
        entitlements: results,
    }))
}

/// The plan that applies to the user now (the default for one never seen).
async fn plan_now(
    state: &AppState,
    user: &UserRef,
    now: tessera_core::Millis,
) -> Result<tessera_core::Plan, ApiError> {
    if let Some(q) = state
        .store
        .quota(user, state.clock.day_of(now), now)
        .await?
    {
        return Ok(q.plan);
    }
    state
        .store
        .plans()
        .await?
        .into_iter()
        .find(|p| p.id == tessera_core::Plan::DEFAULT_ID)
        .ok_or_else(|| {
            ApiError::from(crate::store::StoreError::Corrupt(
                "default plan missing".into(),
            ))
        })
}

/// The plans sold in Discord and the SKU of each, by priority: what a bot's
/// `/subscribe` offers. Empty when `[payments.discord.skus]` is.
#[utoipa::path(
    get, path = "/api/v1/payments/discord/skus", tag = "payments",
    responses(
        (status = 200, body = DiscordSkus),
        (status = 403, description = "Not a Discord key (`forbidden_frontend`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn skus(
    State(state): State<AppState>,
    Frontend(key): Frontend,
) -> Result<Json<DiscordSkus>, ApiError> {
    discord_only(&key)?;
    let config = &state.config.payments.discord;
    let skus = state
        .store
        .plans()
        .await?
        .into_iter()
        .filter_map(|plan| {
            let sku_id = config.skus.get(plan.id.as_str())?.clone();
            Some(DiscordSku { plan, sku_id })
        })
        .collect();
    Ok(Json(DiscordSkus { skus }))
}
