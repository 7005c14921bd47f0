//! Refunds an operator makes (`POST /api/admin/payments/refund`), and the
//! Telegram bots' side of them. The scheduler decides, once, whether a
//! payment of the ledger may be refunded; the provider carries it out:
//! Stripe is asked at once and its `charge.refunded` webhook records the
//! refund; a Telegram Stars payment becomes an order for the bot that took
//! it (the scheduler holds no bot token), which the bot fetches, carries out
//! with `refundStarPayment` and reports through the Stars refund relay (done,
//! recorded once) or `refund-failures` (Telegram's error). Discord makes its
//! own refunds and the bots relay them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::refunds::{
    ListRefundOrdersQuery, RefundAccepted, RefundOrderList, RefundOrderView, RefundPaymentRequest,
    RefundState as WireState, StarsRefundFailure, StarsRefundOrder, StarsRefundOrders,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{PaymentKind, PaymentProvider, Platform};

use super::auth::{Admin, Frontend};
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Refusal};
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::payments::refunds::{refund_stripe, StripeRefund};
use crate::store::{OrderOutcome, PaymentEventRecord, RefundOrderRecord, RefundState};

impl Refusal for RefundPaymentRequest {}
impl Refusal for StarsRefundFailure {}

/// The most orders a bot is handed at once.
const ORDERS_PER_POLL: u32 = 20;
/// Why a Discord payment is not refunded here.
const DISCORD_REFUNDS: &str = "Discord makes refunds of app subscriptions itself (the user asks \
    Discord's support, or you refund in the Developer Portal); the bot relays the entitlement's \
    deletion and the plan ends then";
/// Why an operator's grant is not refunded.
const ADMIN_GRANTS: &str =
    "an operator's grant took no money: end it with `tessera admin payments revoke`";
/// The longest error a bot may report, in characters.
const MAX_ERROR: usize = 500;

fn state_of(s: RefundState) -> WireState {
    match s {
        RefundState::Pending => WireState::Pending,
        RefundState::Done => WireState::Done,
        RefundState::Failed => WireState::Failed,
    }
}

fn view(o: RefundOrderRecord) -> RefundOrderView {
    RefundOrderView {
        order_id: o.id,
        payment_id: o.payment_id,
        telegram_payment_charge_id: o.charge_id,
        user_ref: o.user_ref,
        bot_id: o.bot_id,
        amount: o.amount_minor,
        state: state_of(o.state),
        error: o.error,
        created_at: rfc3339(o.created_at),
        updated_at: rfc3339(o.updated_at),
    }
}

fn conflict(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

fn already(message: impl Into<String>) -> ApiError {
    conflict(ErrorCode::AlreadyRefunded, message)
}

/// Refund a payment of the ledger. Stripe: the invoice's charge is refunded
/// at once, and Stripe's `charge.refunded` webhook records it (202
/// `requested`). Telegram Stars: an order for the bot that took the payment
/// (202 `pending`), which it carries out within its poll interval; ordering
/// a failed one again retries it. Discord refunds its own payments.
#[utoipa::path(
    post, path = "/api/admin/payments/refund", tag = "admin",
    request_body = RefundPaymentRequest,
    responses(
        (status = 202, body = RefundAccepted),
        (status = 404, description = "No payment has this id (`payment_not_found`), or Stripe is not configured (`payments_not_configured`)", body = ApiErrorBody),
        (status = 409, description = "Not a payment that took money (`not_a_payment`), refunded or under way already (`already_refunded`), or not refundable this way (`refund_not_supported`: Discord's, or a Stars payment whose bot is not known)", body = ApiErrorBody),
        (status = 502, description = "Stripe could not be reached or refused; nothing changed (`payment_provider_unavailable`)", body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn refund(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<RefundPaymentRequest>,
) -> Result<(StatusCode, Json<RefundAccepted>), ApiError> {
    if req.payment_id < 1 {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            "payment_id is a ledger id, 1 or more",
        )
        .with_field("payment_id"));
    }
    let payment = state
        .store
        .payment_event_by_id(req.payment_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::PaymentNotFound,
                format!(
                    "no payment {} in the ledger; `tessera admin payments list` shows the ids",
                    req.payment_id
                ),
            )
        })?;
    if !matches!(payment.kind, PaymentKind::Purchase | PaymentKind::Renewal) {
        return Err(conflict(
            ErrorCode::NotAPayment,
            format!(
                "ledger entry {} is a {}, not a payment: only purchases and renewals are refunded",
                payment.id, payment.kind
            ),
        ));
    }
    if payment.amount_minor == 0 {
        return Err(conflict(
            ErrorCode::NotAPayment,
            format!(
                "ledger entry {} took no money (a Stripe checkout's money is on its invoice's \
                 event, listed beside it): refund that one",
                payment.id
            ),
        ));
    }
    let accepted = match payment.provider {
        PaymentProvider::Stripe => stripe(&state, &payment).await?,
        PaymentProvider::Telegram => telegram(&state, &payment).await?,
        PaymentProvider::Discord => {
            return Err(conflict(ErrorCode::RefundNotSupported, DISCORD_REFUNDS))
        }
        PaymentProvider::Admin => return Err(conflict(ErrorCode::NotAPayment, ADMIN_GRANTS)),
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn stripe(
    state: &AppState,
    payment: &PaymentEventRecord,
) -> Result<RefundAccepted, ApiError> {
    let stripe = state.stripe.as_ref().ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::PaymentsNotConfigured,
            "this scheduler has no Stripe key ([payments.stripe] secret_key), so it cannot ask \
             Stripe for a refund",
        )
    })?;
    match refund_stripe(stripe, payment).await {
        Ok(StripeRefund::Requested { refund, paid_by }) => {
            tracing::info!(payment = payment.id, %refund, %paid_by, "Stripe refund requested by an operator");
            Ok(RefundAccepted {
                payment_id: payment.id,
                provider: PaymentProvider::Stripe,
                state: WireState::Requested,
                order: None,
                message: format!(
                    "Stripe refunded {paid_by} ({refund}); its charge.refunded webhook records \
                     the refund and ends the plan"
                ),
            })
        }
        Ok(StripeRefund::AlreadyRefunded { paid_by }) => Err(already(format!(
            "Stripe says {paid_by} of payment {} is refunded already",
            payment.id
        ))),
        Ok(StripeRefund::NotRefundable(why)) => Err(conflict(ErrorCode::RefundNotSupported, why)),
        Err(e) => {
            tracing::warn!(error = %e, payment = payment.id, "a Stripe refund failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::PaymentProviderUnavailable,
                format!("Stripe could not make the refund, so nothing changed: {e}"),
            ))
        }
    }
}

async fn telegram(
    state: &AppState,
    payment: &PaymentEventRecord,
) -> Result<RefundAccepted, ApiError> {
    let charge = &payment.event_id;
    let refund_id = format!("refund-{charge}");
    if state
        .store
        .payment_event_of(PaymentProvider::Telegram, &refund_id)
        .await?
        .is_some()
    {
        return Err(already(format!(
            "Telegram charge {charge} (payment {}) is refunded already",
            payment.id
        )));
    }
    let user = payment
        .user_ref
        .clone()
        .filter(|u| u.platform() == Platform::Telegram)
        .ok_or_else(|| {
            conflict(
                ErrorCode::RefundNotSupported,
                format!("payment {} names no Telegram user to refund", payment.id),
            )
        })?;
    let bot = state.store.charge_bot(charge).await?.ok_or_else(|| {
        conflict(
            ErrorCode::RefundNotSupported,
            format!(
                "which Telegram bot took charge {charge} is not known (it was relayed before \
                 refunds were ordered this way), and only that bot can refund it: the user can \
                 send /refund to it"
            ),
        )
    })?;
    let outcome = state
        .store
        .order_refund(payment, &user, &bot, now_ms())
        .await?;
    let (order, again) = match outcome {
        OrderOutcome::Ordered(o) => (o, false),
        OrderOutcome::Retried(o) => (o, true),
        OrderOutcome::Exists(o) if o.state == RefundState::Done => {
            return Err(already(format!(
                "Telegram charge {charge} (payment {}) is refunded already (order {})",
                payment.id, o.id
            )))
        }
        OrderOutcome::Exists(o) => {
            return Err(already(format!(
                "the refund of payment {} is already waiting for bot {} (order {})",
                payment.id, o.bot_id, o.id
            )))
        }
    };
    tracing::info!(payment = payment.id, order = order.id, bot_id = %order.bot_id, again, "Stars refund ordered by an operator");
    let message =
        format!(
        "bot {} refunds {} ⭐ to {} at its next poll{}; `tessera admin payments refunds` shows \
         the order",
        order.bot_id,
        order.amount_minor,
        order.user_ref,
        if again { " (ordered again after it failed)" } else { "" }
    );
    Ok(RefundAccepted {
        payment_id: payment.id,
        provider: PaymentProvider::Telegram,
        state: state_of(order.state),
        order: Some(view(order)),
        message,
    })
}

/// Refund orders of Telegram Stars payments, newest first, with their state
/// and, when Telegram refused, its error.
#[utoipa::path(
    get, path = "/api/admin/payments/refunds", tag = "admin",
    params(ListRefundOrdersQuery),
    responses((status = 200, body = RefundOrderList), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListRefundOrdersQuery>,
) -> Result<Json<RefundOrderList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(
            ApiError::invalid(ErrorCode::InvalidQuery, "limit must be between 1 and 100")
                .with_field("limit"),
        );
    }
    let wanted = q.state.map(|s| match s {
        WireState::Pending | WireState::Requested => RefundState::Pending,
        WireState::Done => RefundState::Done,
        WireState::Failed => RefundState::Failed,
    });
    let orders = state.store.refund_orders(wanted, limit).await?;
    Ok(Json(RefundOrderList {
        orders: orders.into_iter().map(view).collect(),
    }))
}

fn telegram_only(platform: Platform) -> Result<(), ApiError> {
    if platform == Platform::Telegram {
        return Ok(());
    }
    Err(ApiError::forbidden(
        ErrorCode::ForbiddenFrontend,
        format!("refund orders are the Telegram bots': a {platform} key cannot read them"),
    ))
}

/// The refunds operators ordered of this key's bot, oldest first: the bot
/// calls `refundStarPayment` for each and reports it.
#[utoipa::path(
    get, path = "/api/v1/payments/telegram/refund-orders", tag = "payments",
    responses((status = 200, body = StarsRefundOrders)),
    security(("frontend_key" = []))
)]
pub async fn orders(
    State(state): State<AppState>,
    Frontend(key): Frontend,
) -> Result<Json<StarsRefundOrders>, ApiError> {
    telegram_only(key.frontend)?;
    let orders = state
        .store
        .pending_refund_orders(&key.bot_id, ORDERS_PER_POLL)
        .await?;
    Ok(Json(StarsRefundOrders {
        orders: orders
            .into_iter()
            .map(|o| StarsRefundOrder {
                order_id: o.id,
                user_ref: o.user_ref,
                telegram_payment_charge_id: o.charge_id,
                amount: o.amount_minor,
            })
            .collect(),
    }))
}

/// Telegram refused an order's refund: the order is failed, with Telegram's
/// error, for the operator to see (and order again). A refund Telegram made
/// is reported through `POST /api/v1/payments/telegram/refunds` instead.
#[utoipa::path(
    post, path = "/api/v1/payments/telegram/refund-failures", tag = "payments",
    request_body = StarsRefundFailure,
    responses(
        (status = 204, description = "Recorded as failed"),
        (status = 404, description = "No pending order of this bot has this id (`refund_order_not_found`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn failed(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<StarsRefundFailure>,
) -> Result<StatusCode, ApiError> {
    telegram_only(key.frontend)?;
    if req.order_id < 1 || req.error.chars().count() > MAX_ERROR {
        let field = if req.order_id < 1 {
            "order_id"
        } else {
            "error"
        };
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            format!("order_id is 1 or more, and error at most {MAX_ERROR} characters"),
        )
        .with_field(field));
    }
    let said = req.error.trim();
    let error = if said.is_empty() {
        "Telegram gave no reason"
    } else {
        said
    };
    let order = state
        .store
        .refund_order_failed(req.order_id, &key.bot_id, error, now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::RefundOrderNotFound,
                format!(
                    "bot {} has no pending refund order {}",
                    key.bot_id, req.order_id
                ),
            )
        })?;
    tracing::warn!(order = order.id, bot_id = %order.bot_id, charge = %order.charge_id, %error, "Telegram refused an ordered Stars refund");
    Ok(StatusCode::NO_CONTENT)
}
