//! `/api/v1/payments/stripe/...`: the website's Stripe channel. A website
//! account buys a plan through a Checkout session (`checkout`) and manages
//! it on Stripe's customer portal (`portal`); Stripe reports what happened
//! to `webhook`, which checks Stripe's signature and records each event in
//! the payments ledger, where it applies to the account's billing user.
//!
//! The Stripe customer is made here, at the account's first checkout, and
//! recorded before the visitor is sent to Stripe, so every later webhook
//! naming it resolves to the account whatever order webhooks come in. When
//! Stripe cannot be reached nothing is recorded and the website is told
//! `payment_provider_unavailable`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;

use tessera_api::stripe::{
    PaymentRedirect, StripeCheckoutRequest, StripeOffer, StripeOffers, StripePortalRequest,
    StripeWebhookAck,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{PlanId, Platform, UserRef};

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::{ApiJson, Refusal};
use super::AppState;
use crate::lifecycle::now_ms;
use crate::payments::stripe::{Stripe, StripeError};
use crate::payments::stripe_webhook::{map_event, verify, MapError, Mapped, SignatureError};
use crate::store::{ApiKeyRecord, ApplyOutcome};

/// Plans nobody buys, whatever the configuration says.
const NOT_SOLD: [&str; 2] = ["free", "admin"];

fn refuse(field: &str, message: String) -> ApiError {
    match field {
        "user_ref" => ApiError::invalid(ErrorCode::InvalidUserRef, message).with_field(field),
        f if f == PlanId::FIELD => {
            ApiError::invalid(ErrorCode::PlanNotForSale, message).with_field(field)
        }
        _ => ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field),
    }
}

impl Refusal for StripeCheckoutRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        refuse(field, message)
    }
}

impl Refusal for StripePortalRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        refuse(field, message)
    }
}

fn configured(state: &AppState) -> Result<&Stripe, ApiError> {
    state.stripe.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::PaymentsNotConfigured,
            "this scheduler does not take payments through Stripe ([payments.stripe] has no secret_key)",
        )
    })
}

fn unavailable(e: StripeError) -> ApiError {
    tracing::warn!(error = %e, "a call to Stripe failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::PaymentProviderUnavailable,
        "Stripe could not be reached or refused the request; nothing was charged, try again later",
    )
}

fn check_url(field: &str, url: &str) -> Result<(), ApiError> {
    let ok = url.len() <= 2048
        && (url.starts_with("https://") || url.starts_with("http://"))
        && url::Url::parse(url).is_ok()
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            format!("{field} must be an http(s) URL of at most 2048 characters"),
        )
        .with_field(field))
    }
}

/// The account, if it is one of the key's bot's (web keys only).
async fn account(state: &AppState, key: &ApiKeyRecord, user: &UserRef) -> Result<(), ApiError> {
    if key.frontend != Platform::Web {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenFrontend,
            "only the website's keys take payments through Stripe",
        ));
    }
    if user.platform() != Platform::Web {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenUserRef,
            format!("a web key cannot act for {} users", user.platform()),
        ));
    }
    state
        .store
        .get_account(user)
        .await?
        .filter(|a| a.home_bot == key.bot_id)
        .map(|_| ())
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::AccountNotFound,
                "no account of this website has this user",
            )
        })
}

/// The plans the website sells through Stripe, cheapest first (web keys
/// only): every plan with a price in `[payments.stripe.prices]`, none when
/// Stripe is not configured, so the website offers only what it can sell.
#[utoipa::path(
    get, path = "/api/v1/payments/stripe/plans", tag = "payments",
    responses(
        (status = 200, body = StripeOffers),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn offers(
    State(state): State<AppState>,
    Frontend(key): Frontend,
) -> Result<Json<StripeOffers>, ApiError> {
    if key.frontend != Platform::Web {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenFrontend,
            "only the website's keys sell plans through Stripe",
        ));
    }
    if state.stripe.is_none() {
        return Ok(Json(StripeOffers { plans: Vec::new() }));
    }
    let prices = &state.config.payments.stripe.prices;
    let mut plans: Vec<StripeOffer> = state
        .store
        .plans()
        .await?
        .into_iter()
        .filter(|p| !NOT_SOLD.contains(&p.id.as_str()) && prices.contains_key(&p.id))
        .filter_map(|p| {
            Some(StripeOffer {
                plan_id: p.id.parse().ok()?,
                name: p.name,
                price_cents: p.price_cents,
                daily_tokens: p.daily_tokens,
            })
        })
        .collect();
    plans.sort_by_key(|o| o.price_cents);
    Ok(Json(StripeOffers { plans }))
}

/// Start a Stripe Checkout session in subscription mode for a website
/// account to buy a plan (web keys only): the URL of Stripe's page. The
/// account's Stripe customer is made at its first checkout.
#[utoipa::path(
    post, path = "/api/v1/payments/stripe/checkout", tag = "payments",
    request_body = StripeCheckoutRequest,
    responses(
        (status = 200, description = "Send the visitor to `url`", body = PaymentRedirect),
        (status = 403, description = "Not a web key (`forbidden_frontend`), or not a web user", body = ApiErrorBody),
        (status = 404, description = "No account of this website has this user (`account_not_found`), or this scheduler does not take payments through Stripe (`payments_not_configured`)", body = ApiErrorBody),
        (status = 422, description = "The plan is not sold through Stripe (`plan_not_for_sale`), or a URL is not http(s)", body = ApiErrorBody),
        (status = 502, description = "Stripe could not be reached or refused (`payment_provider_unavailable`); nothing was made", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn checkout(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StripeCheckoutRequest>,
) -> Result<Json<PaymentRedirect>, ApiError> {
    account(&state, &key, &req.user_ref).await?;
    let stripe = configured(&state)?;
    check_url("success_url", &req.success_url)?;
    check_url("cancel_url", &req.cancel_url)?;
    let plan = req.plan_id.as_str();
    let price = stripe
        .prices
        .get(plan)
        .filter(|_| !NOT_SOLD.contains(&plan))
        .ok_or_else(|| {
            let sold: Vec<&str> = stripe
                .prices
                .keys()
                .map(String::as_str)
                .filter(|p| !NOT_SOLD.contains(p))
                .collect();
            ApiError::invalid(
                ErrorCode::PlanNotForSale,
                format!(
                    "the plan {plan} is not sold through Stripe; plans for sale: {}",
                    if sold.is_empty() {
                        "none".to_owned()
                    } else {
                        sold.join(", ")
                    }
                ),
            )
            .with_field("plan_id")
        })?;
    let user = &req.user_ref;
    let user_text = user.to_string();
    let customer = match state.store.stripe_customer(user).await? {
        Some(customer) => customer,
        None => {
            let made = stripe
                .client
                .create_customer(&user.to_string())
                .await
                .map_err(unavailable)?;
            state
                .store
                .put_stripe_customer(user, &made, now_ms())
                .await?
                .ok_or_else(|| ApiError::not_found(ErrorCode::AccountNotFound, "no such account"))?
        }
    };
    let url = stripe
        .client
        .create_checkout(&crate::payments::stripe::CheckoutRequest {
            customer: &customer,
            price,
            user_ref: &user_text,
            plan_id: plan,
            success_url: &req.success_url,
            cancel_url: &req.cancel_url,
        })
        .await
        .map_err(unavailable)?;
    tracing::info!(user_ref = %user, plan_id = plan, "Stripe checkout started");
    Ok(Json(PaymentRedirect { url }))
}

/// Open Stripe's customer portal for a website account (web keys only):
/// there it cancels its subscription or changes its card.
#[utoipa::path(
    post, path = "/api/v1/payments/stripe/portal", tag = "payments",
    request_body = StripePortalRequest,
    responses(
        (status = 200, description = "Send the visitor to `url`", body = PaymentRedirect),
        (status = 403, description = "Not a web key (`forbidden_frontend`), or not a web user", body = ApiErrorBody),
        (status = 404, description = "No such account (`account_not_found`), it never started a checkout (`no_payment_customer`), or Stripe is not configured (`payments_not_configured`)", body = ApiErrorBody),
        (status = 422, description = "The return URL is not http(s)", body = ApiErrorBody),
        (status = 502, description = "Stripe could not be reached or refused (`payment_provider_unavailable`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn portal(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StripePortalRequest>,
) -> Result<Json<PaymentRedirect>, ApiError> {
    account(&state, &key, &req.user_ref).await?;
    let stripe = configured(&state)?;
    check_url("return_url", &req.return_url)?;
    let customer = state
        .store
        .stripe_customer(&req.user_ref)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::NoPaymentCustomer,
                "this account has never bought a plan through Stripe, so there is nothing to manage",
            )
        })?;
    let url = stripe
        .client
        .create_portal(&customer, &req.return_url)
        .await
        .map_err(unavailable)?;
    Ok(Json(PaymentRedirect { url }))
}

fn bad_event(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidWebhookEvent,
        message,
    )
}

/// Stripe's webhooks. The credential is the `Stripe-Signature` header
/// (HMAC-SHA256 of `{t}.{body}` under the endpoint's signing secret, signed
/// within the tolerance); each event is recorded once in the payments
/// ledger, keyed by its Stripe id, and applied to its customer's account.
#[utoipa::path(
    post, path = "/api/v1/payments/stripe/webhook", tag = "payments",
    request_body(content = serde_json::Value, description = "A Stripe event, as Stripe sends it", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature: `t=<unix time>,v1=<hex HMAC-SHA256>`")),
    responses(
        (status = 200, description = "Recorded, already recorded, or ignored", body = StripeWebhookAck),
        (status = 400, description = "No valid signature (`webhook_signature_invalid`), signed too long ago (`webhook_signature_expired`), or not an event (`invalid_webhook_event`); nothing recorded", body = ApiErrorBody),
        (status = 404, description = "This scheduler does not take payments through Stripe, or has no webhook secret (`payments_not_configured`)", body = ApiErrorBody),
        (status = 503, description = "Stripe could not be asked what the event names (`payment_provider_unavailable`); Stripe delivers it again", body = ApiErrorBody),
    )
)]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<StripeWebhookAck>, ApiError> {
    let header = headers
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok());
    // No credential at all is refused first, as a missing key is elsewhere.
    if header.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::WebhookSignatureInvalid,
            "no Stripe-Signature header: only Stripe's signed webhooks are taken here",
        ));
    }
    let stripe = configured(&state)?;
    let Some(secret) = stripe.webhook_secret.as_deref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::PaymentsNotConfigured,
            "[payments.stripe] has no webhook_secret, so no webhook can be verified",
        ));
    };
    let now = now_ms();
    verify(header, &body, secret, stripe.tolerance_secs, now / 1000).map_err(|e| {
        tracing::warn!(?e, "a Stripe webhook was refused");
        let (code, message) = match e {
            SignatureError::Missing => (
                ErrorCode::WebhookSignatureInvalid,
                "no Stripe-Signature with t= and v1= values".to_owned(),
            ),
            SignatureError::Invalid => (
                ErrorCode::WebhookSignatureInvalid,
                "no signature in Stripe-Signature matches this body".to_owned(),
            ),
            SignatureError::Stale { age_secs } => (
                ErrorCode::WebhookSignatureExpired,
                format!(
                    "the signature is {age_secs} s old, past the {} s tolerance",
                    stripe.tolerance_secs
                ),
            ),
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    })?;
    let event: Value =
        serde_json::from_slice(&body).map_err(|e| bad_event(format!("not JSON: {e}")))?;
    let ack = |outcome: &str| {
        Json(StripeWebhookAck {
            received: true,
            outcome: outcome.to_owned(),
        })
    };
    let (mut event, customer) = match map_event(stripe, &event).await {
        Ok(Mapped::Event { event, customer }) => (event, customer),
        Ok(Mapped::Ignored(what)) => {
            tracing::debug!(what = %what, "a Stripe webhook ignored");
            return Ok(ack("ignored"));
        }
        Err(MapError::Malformed(why)) => return Err(bad_event(why)),
        Err(MapError::Stripe(e)) => {
            tracing::warn!(error = %e, "a Stripe event could not be resolved; Stripe will deliver it again");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::PaymentProviderUnavailable,
                "Stripe could not be asked what the event names; deliver it again later",
            ));
        }
    };
    if let Some(customer) = &customer {
        event.user_ref = state.store.stripe_customer_user(customer).await?;
    }
    match state.store.apply_payment_event(&event, now).await? {
        ApplyOutcome::Recorded(record) => {
            tracing::info!(
                event_id = %record.event_id,
                kind = %record.kind,
                outcome = record.outcome.as_str(),
                effect = %record.effect,
                "Stripe event recorded"
            );
            Ok(ack(record.outcome.as_str()))
        }
        ApplyOutcome::AlreadyRecorded(_) => Ok(ack("already_recorded")),
        ApplyOutcome::Invalid(why) => Err(bad_event(why)),
    }
}
