//! Refunds an operator makes: `POST /api/admin/payments/refund` names a
//! payment of the ledger, and the scheduler has its provider refund it.
//! Stripe is asked at once (its `charge.refunded` webhook then records the
//! refund); a Telegram Stars payment becomes an order for the bot that took
//! it, which the bot fetches (`GET /api/v1/payments/telegram/refund-orders`),
//! carries out with `refundStarPayment` and reports. Discord makes its own
//! refunds.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use tessera_core::{BotId, PaymentProvider, UserRef};

/// `POST /api/admin/payments/refund`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPaymentRequest {
    /// The ledger's id of the payment (the `ID` column of `tessera admin
    /// payments list`, `id` in `GET /api/admin/payments`).
    #[schema(minimum = 1)]
    pub payment_id: i64,
}

/// Where an operator's refund stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    /// Asked of the provider (Stripe); its refund webhook records it.
    Requested,
    /// Waiting for the Telegram bot that took the payment.
    Pending,
    /// Refunded, and in the ledger.
    Done,
    /// The provider refused; `error` says why. Refunding again retries.
    Failed,
}

/// A refund of a Telegram Stars payment an operator ordered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefundOrderView {
    pub order_id: i64,
    /// The ledger's id of the payment.
    pub payment_id: i64,
    pub telegram_payment_charge_id: String,
    #[schema(value_type = String)]
    pub user_ref: UserRef,
    /// The bot that took the payment and must refund it.
    #[schema(value_type = String)]
    pub bot_id: BotId,
    /// In Stars.
    pub amount: i64,
    /// `pending`, `done` or `failed`.
    pub state: RefundState,
    /// Telegram's error, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `POST /api/admin/payments/refund` set going.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefundAccepted {
    pub payment_id: i64,
    pub provider: PaymentProvider,
    /// `requested` (Stripe) or the order's state (Telegram).
    pub state: RefundState,
    /// The Telegram order, for a Stars payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<RefundOrderView>,
    /// What happens next, in words.
    pub message: String,
}

/// Filters of `GET /api/admin/payments/refunds`, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRefundOrdersQuery {
    /// Only orders in this state: `pending`, `done` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^(pending|done|failed)$")]
    pub state: Option<RefundState>,
    /// At most this many, 1 to 100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Refund orders of Telegram Stars payments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefundOrderList {
    pub orders: Vec<RefundOrderView>,
}

/// A refund a Telegram bot is to make with `refundStarPayment`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsRefundOrder {
    pub order_id: i64,
    /// Who paid (`refundStarPayment`'s `user_id` is its id).
    #[schema(value_type = String)]
    pub user_ref: UserRef,
    pub telegram_payment_charge_id: String,
    /// In Stars.
    pub amount: i64,
}

/// `GET /api/v1/payments/telegram/refund-orders`: the key's bot's pending
/// orders, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsRefundOrders {
    pub orders: Vec<StarsRefundOrder>,
}

/// `POST /api/v1/payments/telegram/refund-failures`: Telegram refused an
/// order's refund.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsRefundFailure {
    #[schema(minimum = 1)]
    pub order_id: i64,
    /// Telegram's error, as it said it.
    #[schema(min_length = 1, max_length = 500)]
    pub error: String,
}
