//! `/api/v1/payments/telegram/...`: Telegram Stars, for Telegram keys only.
//! The bot asks for a signed invoice, relays the pre-checkout query (the
//! scheduler's yes or no becomes its `answerPreCheckoutQuery`), relays the
//! `successful_payment`, and asks which charge it may refund before calling
//! `refundStarPayment`. Every relay is checked against the payload the
//! scheduler signed ([`crate::payments::stars`]); the ledger's event id is
//! Telegram's charge id, so a relay repeated changes nothing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::admin::PaymentOutcome as WireOutcome;
use tessera_api::stars::{
    StarsInvoice, StarsInvoiceRequest, StarsOffer, StarsOffers, StarsPayment, StarsPaymentOutcome,
    StarsPreCheckout, StarsPreCheckoutOk, StarsRefundRequest, StarsRefundable, StarsRefunded,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{Millis, PaymentKind, PaymentProvider, Plan, PlanId, Platform, UserRef};

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::{ApiJson, Refusal};
use super::scope::speaks_for;
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::payments::stars::{nonce, Invoice, PayloadSigner, SUBSCRIPTION_PERIOD_SECS};
use crate::store::{
    ApiKeyRecord, ApplyOutcome, NewPaymentEvent, PaymentEventRecord, PaymentFilter, PaymentOutcome,
};

/// Stars have no smaller unit: amounts are whole Stars.
const XTR: &str = "XTR";
/// Longest title and description the Bot API takes, in characters.
const MAX_TITLE: usize = 32;
const MAX_DESCRIPTION: usize = 255;

fn telegram_only(key: &ApiKeyRecord) -> Result<(), ApiError> {
    if key.frontend == Platform::Telegram {
        return Ok(());
    }
    Err(ApiError::forbidden(
        ErrorCode::ForbiddenFrontend,
        format!(
            "Telegram Stars are the Telegram bots': a {} key cannot use them",
            key.frontend
        ),
    ))
}

fn signer(state: &AppState) -> PayloadSigner {
    PayloadSigner::derived_from(state.links.base_key())
}

fn refuse(field: &str, message: String) -> ApiError {
    match field {
        "user_ref" => ApiError::invalid(ErrorCode::InvalidUserRef, message).with_field(field),
        f if f == PlanId::FIELD => ApiError::not_found(
            ErrorCode::PlanNotForSale,
            "no such plan is sold in Telegram",
        ),
        _ => ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field),
    }
}

macro_rules! refusal {
    ($($t:ty),*) => {$(
        impl Refusal for $t {
            fn refuse(field: &str, message: String) -> ApiError {
                refuse(field, message)
            }
        }
    )*};
}
refusal!(
    StarsInvoiceRequest,
    StarsPreCheckout,
    StarsPayment,
    StarsRefundRequest,
    StarsRefunded
);

fn not_for_sale(status: StatusCode, plan: &str) -> ApiError {
    ApiError::new(
        status,
        ErrorCode::PlanNotForSale,
        format!(
            "the {plan} plan is not sold in Telegram at this price; send /subscribe to see what is"
        ),
    )
}

fn forged() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::PaymentPayloadInvalid,
        "this invoice was not made by this service for you; send /subscribe for a new one",
    )
    .with_field("payload")
}

fn days(secs: u64) -> u64 {
    secs.div_ceil(86_400)
}

/// The plans Telegram sells, cheapest first (empty when none is).
#[utoipa::path(
    get, path = "/api/v1/payments/telegram/plans", tag = "payments",
    responses((status = 200, body = StarsOffers)),
    security(("frontend_key" = []))
)]
pub async fn offers(
    State(state): State<AppState>,
    Frontend(key): Frontend,
) -> Result<Json<StarsOffers>, ApiError> {
    telegram_only(&key)?;
    let config = &state.config.payments.telegram;
    let mut plans: Vec<StarsOffer> = state
        .store
        .plans()
        .await?
        .into_iter()
        .filter_map(|p| {
            let stars = config.price(&p.id)?;
            Some(StarsOffer {
                plan_id: p.id.parse().ok()?,
                name: p.name,
                stars,
                daily_tokens: p.daily_tokens,
            })
        })
        .collect();
    plans.sort_by_key(|o| o.stars);
    Ok(Json(StarsOffers {
        subscription: config.subscription,
        days: days(config.period_secs()),
        plans,
    }))
}

fn fill(template: &str, plan: &Plan, days: u64, max: usize) -> String {
    let tokens = plan
        .daily_tokens
        .map_or_else(|| "unlimited".to_owned(), |t| t.to_string());
    template
        .replace("{plan}", &plan.name)
        .replace("{tokens}", &tokens)
        .replace("{days}", &days.to_string())
        .chars()
        .take(max)
        .collect()
}

/// A signed invoice for one plan and one user: what the bot passes to
/// `createInvoiceLink` (a subscription) or `sendInvoice`.
#[utoipa::path(
    post, path = "/api/v1/payments/telegram/invoices", tag = "payments",
    request_body = StarsInvoiceRequest,
    responses(
        (status = 201, body = StarsInvoice),
        (status = 404, description = "The plan is not sold in Telegram (`plan_not_for_sale`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn invoice(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StarsInvoiceRequest>,
) -> Result<(StatusCode, Json<StarsInvoice>), ApiError> {
    telegram_only(&key)?;
    speaks_for(&key.frontend, &req.user_ref)?;
    let config = &state.config.payments.telegram;
    let plan_id = req.plan_id.as_str();
    let stars = config
        .price(plan_id)
        .ok_or_else(|| not_for_sale(StatusCode::NOT_FOUND, plan_id))?;
    let plan = state
        .store
        .plans()
        .await?
        .into_iter()
        .find(|p| p.id == plan_id)
        .ok_or_else(|| not_for_sale(StatusCode::NOT_FOUND, plan_id))?;
    let now = now_ms();
    state.store.ensure_user(&req.user_ref, now).await?;
    let expires = now / 1000 + i64::try_from(config.invoice_lifetime_secs).unwrap_or(i64::MAX / 2);
    let invoice = Invoice {
        plan: plan.id.clone(),
        stars,
        expires,
        nonce: nonce(),
    };
    let payload = signer(&state).sign(&req.user_ref, &invoice);
    let days = days(config.period_secs());
    tracing::info!(user_ref = %req.user_ref, plan = %plan.id, stars, "Stars invoice made");
    Ok((
        StatusCode::CREATED,
        Json(StarsInvoice {
            title: fill(&config.title, &plan, days, MAX_TITLE),
            description: fill(&config.description, &plan, days, MAX_DESCRIPTION),
            payload,
            currency: XTR.into(),
            label: plan.name.clone(),
            amount: stars,
            subscription_period: config.subscription.then_some(SUBSCRIPTION_PERIOD_SECS),
            expires_at: rfc3339(expires.saturating_mul(1000)),
        }),
    ))
}

/// The invoice a relay names, checked: signed for this user, in Stars, for
/// the amount it asked.
fn checked(
    state: &AppState,
    user: &UserRef,
    payload: &str,
    currency: &str,
    total: u32,
) -> Result<Invoice, ApiError> {
    let invoice = signer(state).verify(user, payload).ok_or_else(forged)?;
    if currency != XTR || total != invoice.stars {
        return Err(ApiError::invalid(
            ErrorCode::PaymentMismatch,
            format!(
                "the invoice asked {} {XTR}, not {total} {currency}",
                invoice.stars
            ),
        ));
    }
    Ok(invoice)
}

/// Telegram's `pre_checkout_query`, relayed: 200 when the user may pay; a
/// refusal's message is what the bot shows as `error_message`. Creates the
/// user if new, so that the payment applies.
#[utoipa::path(
    post, path = "/api/v1/payments/telegram/pre-checkout", tag = "payments",
    request_body = StarsPreCheckout,
    responses(
        (status = 200, body = StarsPreCheckoutOk),
        (status = 400, description = "A payload this scheduler did not sign for this user (`payment_payload_invalid`)", body = ApiErrorBody),
        (status = 409, description = "The plan is no longer sold at that price (`plan_not_for_sale`)", body = ApiErrorBody),
        (status = 410, description = "The invoice is past its lifetime (`payment_payload_expired`)", body = ApiErrorBody),
        (status = 422, description = "Not the currency or amount invoiced (`payment_mismatch`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn pre_checkout(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StarsPreCheckout>,
) -> Result<Json<StarsPreCheckoutOk>, ApiError> {
    telegram_only(&key)?;
    speaks_for(&key.frontend, &req.user_ref)?;
    let invoice = checked(
        &state,
        &req.user_ref,
        &req.payload,
        &req.currency,
        req.total_amount,
    )?;
    let now = now_ms();
    if invoice.expires <= now / 1000 {
        return Err(ApiError::new(
            StatusCode::GONE,
            ErrorCode::PaymentPayloadExpired,
            "this invoice has expired; send /subscribe for a new one",
        ));
    }
    if state.config.payments.telegram.price(&invoice.plan) != Some(invoice.stars) {
        return Err(not_for_sale(StatusCode::CONFLICT, &invoice.plan));
    }
    state.store.ensure_user(&req.user_ref, now).await?;
    let plan_id = invoice.plan.parse().map_err(|_| forged())?;
    Ok(Json(StarsPreCheckoutOk { plan_id }))
}

async fn outcome(
    state: &AppState,
    user: &UserRef,
    applied: ApplyOutcome,
) -> Result<StarsPaymentOutcome, ApiError> {
    let (record, already) = match applied {
        ApplyOutcome::Recorded(e) => (e, false),
        ApplyOutcome::AlreadyRecorded(e) => (e, true),
        ApplyOutcome::Invalid(why) => {
            return Err(ApiError::invalid(ErrorCode::InvalidRequest, why))
        }
    };
    let now = now_ms();
    let plan = match state
        .store
        .quota(user, state.clock.day_of(now), now)
        .await?
    {
        Some(q) => q.plan,
        None => state
            .store
            .plans()
            .await?
            .into_iter()
            .find(|p| p.id == Plan::DEFAULT_ID)
            .ok_or_else(|| {
                ApiError::from(crate::store::StoreError::Corrupt("no free plan".into()))
            })?,
    };
    Ok(StarsPaymentOutcome {
        outcome: match record.outcome {
            PaymentOutcome::Applied => WireOutcome::Applied,
            PaymentOutcome::Unchanged => WireOutcome::Unchanged,
            PaymentOutcome::UnknownUser => WireOutcome::UnknownUser,
            PaymentOutcome::UnknownPlan => WireOutcome::UnknownPlan,
        },
        already_recorded: already,
        plan,
        paid_until: record
            .period
            .filter(|_| record.kind.grants())
            .map(|(_, end)| rfc3339(end)),
    })
}

/// A `successful_payment`, relayed: checked against the signed payload
/// again, then recorded in the ledger under its charge id (a repeat changes
/// nothing). A renewal (`is_recurring` without `is_first_recurring`)
/// extends the grant of the subscription's first payment.
#[utoipa::path(
    post, path = "/api/v1/payments/telegram/payments", tag = "payments",
    request_body = StarsPayment,
    responses(
        (status = 200, body = StarsPaymentOutcome),
        (status = 400, description = "A payload this scheduler did not sign for this user (`payment_payload_invalid`)", body = ApiErrorBody),
        (status = 422, description = "Not the currency or amount invoiced (`payment_mismatch`), or a period that ends before it starts", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn payment(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StarsPayment>,
) -> Result<Json<StarsPaymentOutcome>, ApiError> {
    telegram_only(&key)?;
    speaks_for(&key.frontend, &req.user_ref)?;
    let charge = req.telegram_payment_charge_id.trim();
    if charge.is_empty() || charge.len() > 200 {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            "telegram_payment_charge_id must be 1-200 characters",
        )
        .with_field("telegram_payment_charge_id"));
    }
    // The money was taken: the invoice's expiry and today's price no longer
    // matter, only that the scheduler made this invoice for this user.
    let invoice = checked(
        &state,
        &req.user_ref,
        &req.payload,
        &req.currency,
        req.total_amount,
    )?;
    let start: Millis = req.date.saturating_mul(1000);
    let period_ms = i64::try_from(state.config.payments.telegram.period_secs())
        .unwrap_or(i64::MAX / 2000)
        * 1000;
    let end = match req.subscription_expiration_date {
        Some(secs) => secs.saturating_mul(1000),
        None => start.saturating_add(period_ms),
    };
    if start <= 0 || end <= start {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            "the paid period must end after the payment's date",
        )
        .with_field("subscription_expiration_date"));
    }
    let now = now_ms();
    state.store.ensure_user(&req.user_ref, now).await?;
    // Only the bot that took a payment can refund it: an operator's refund
    // is ordered of this one.
    state
        .store
        .record_charge_bot(charge, &key.bot_id, now)
        .await?;
    let kind = if req.is_recurring && !req.is_first_recurring {
        PaymentKind::Renewal
    } else {
        PaymentKind::Purchase
    };
    let event = NewPaymentEvent {
        provider: PaymentProvider::Telegram,
        event_id: charge.to_owned(),
        kind,
        user_ref: Some(req.user_ref.clone()),
        plan_id: Some(invoice.plan.clone()),
        amount_minor: i64::from(req.total_amount),
        currency: Some(XTR.into()),
        period: Some((start, end)),
        reference: Some(invoice.reference()),
        occurred_at: start,
    };
    let applied = state.store.apply_payment_event(&event, now).await?;
    let answer = outcome(&state, &req.user_ref, applied).await?;
    tracing::info!(user_ref = %req.user_ref, plan = %invoice.plan, %kind, already = answer.already_recorded, "Stars payment relayed");
    Ok(Json(answer))
}

/// The user's own Telegram charges, newest first.
async fn charges(state: &AppState, user: &UserRef) -> Result<Vec<PaymentEventRecord>, ApiError> {
    let filter = PaymentFilter {
        user_ref: Some(user.clone()),
        provider: Some(PaymentProvider::Telegram),
        unknown_user: false,
        before: None,
        limit: 100,
    };
    Ok(state
        .store
        .payment_events(&filter)
        .await?
        .into_iter()
        .filter(|e| e.user_ref.as_ref() == Some(user))
        .filter(|e| matches!(e.kind, PaymentKind::Purchase | PaymentKind::Renewal))
        .collect())
}

fn nothing_to_refund() -> ApiError {
    ApiError::not_found(
        ErrorCode::NothingToRefund,
        "you have no Telegram payment that can be refunded: only the latest payment of a plan still running is",
    )
}

/// Which of the user's charges the bot may refund: the newest of a Telegram
/// plan still running. The bot then calls `refundStarPayment` and reports
/// it to `/refunds`.
#[utoipa::path(
    post, path = "/api/v1/payments/telegram/refund-requests", tag = "payments",
    request_body = StarsRefundRequest,
    responses(
        (status = 200, body = StarsRefundable),
        (status = 404, description = "Nothing may be refunded (`nothing_to_refund`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn refundable(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StarsRefundRequest>,
) -> Result<Json<StarsRefundable>, ApiError> {
    telegram_only(&key)?;
    speaks_for(&key.frontend, &req.user_ref)?;
    let now = now_ms();
    let grants = state.store.plan_grants(&req.user_ref).await?;
    let live = |reference: &Option<String>| {
        grants.iter().any(|g| {
            g.provider == PaymentProvider::Telegram
                && g.active
                && g.paid_until > now
                && Some(&g.reference) == reference.as_ref()
        })
    };
    let charge = charges(&state, &req.user_ref)
        .await?
        .into_iter()
        .find(|e| live(&e.reference))
        .ok_or_else(nothing_to_refund)?;
    let plan_id = charge
        .plan_id
        .as_deref()
        .and_then(|p| p.parse().ok())
        .ok_or_else(nothing_to_refund)?;
    Ok(Json(StarsRefundable {
        telegram_payment_charge_id: charge.event_id,
        plan_id,
        amount: charge.amount_minor,
    }))
}

/// Telegram refunded a charge: recorded in the ledger as a refund (once,
/// whatever the repeats), which ends the plan it paid for.
#[utoipa::path(
    post, path = "/api/v1/payments/telegram/refunds", tag = "payments",
    request_body = StarsRefunded,
    responses(
        (status = 200, body = StarsPaymentOutcome),
        (status = 404, description = "No such charge of this user (`nothing_to_refund`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn refunded(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StarsRefunded>,
) -> Result<Json<StarsPaymentOutcome>, ApiError> {
    telegram_only(&key)?;
    speaks_for(&key.frontend, &req.user_ref)?;
    let charge = charges(&state, &req.user_ref)
        .await?
        .into_iter()
        .find(|e| e.event_id == req.telegram_payment_charge_id)
        .ok_or_else(nothing_to_refund)?;
    let now = now_ms();
    let event = NewPaymentEvent {
        provider: PaymentProvider::Telegram,
        event_id: format!("refund-{}", charge.event_id),
        kind: PaymentKind::Refund,
        user_ref: Some(req.user_ref.clone()),
        plan_id: charge.plan_id.clone(),
        amount_minor: charge.amount_minor,
        currency: Some(XTR.into()),
        period: None,
        reference: charge.reference.clone(),
        occurred_at: now,
    };
    let applied = state.store.apply_payment_event(&event, now).await?;
    // An operator's order of this refund, if any, is done.
    state
        .store
        .refund_orders_done(&charge.event_id, now)
        .await?;
    let answer = outcome(&state, &req.user_ref, applied).await?;
    tracing::info!(user_ref = %req.user_ref, charge = %charge.event_id, "Stars payment refunded");
    Ok(Json(answer))
}
