//! Wire types of Telegram Stars payments (`/api/v1/payments/telegram/...`):
//! what a Telegram bot asks the scheduler before it offers, accepts and
//! refunds a payment, and the payments it relays. Telegram keys only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::{PlanId, UserRef};

/// A plan sold in Telegram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsOffer {
    #[schema(value_type = String)]
    pub plan_id: PlanId,
    pub name: String,
    /// The price, in Stars.
    pub stars: u32,
    /// Tokens a day on the plan; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<i64>,
}

/// `GET /api/v1/payments/telegram/plans`: what Telegram sells, cheapest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsOffers {
    /// `true`: subscriptions renewed every 30 days; `false`: one-off invoices.
    pub subscription: bool,
    /// Days one payment pays for.
    pub days: u64,
    pub plans: Vec<StarsOffer>,
}

/// `POST /api/v1/payments/telegram/invoices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsInvoiceRequest {
    #[schema(value_type = String, pattern = r"^telegram:[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub user_ref: UserRef,
    #[schema(value_type = String, example = "starter")]
    pub plan_id: PlanId,
}

/// What the bot passes to `createInvoiceLink` (a subscription) or
/// `sendInvoice` (a one-off invoice), as it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsInvoice {
    pub title: String,
    pub description: String,
    /// The signed payload Telegram hands back (at most 128 bytes).
    pub payload: String,
    /// Always `XTR`.
    pub currency: String,
    /// The one price's label.
    pub label: String,
    /// In Stars.
    pub amount: u32,
    /// `2592000` for a subscription link; absent for a one-off invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_period: Option<u32>,
    /// Until when it may be paid.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/payments/telegram/pre-checkout`: Telegram's
/// `pre_checkout_query`, relayed before the user is charged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsPreCheckout {
    /// The payer (the query's `from`).
    #[schema(value_type = String, pattern = r"^telegram:[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub user_ref: UserRef,
    /// `invoice_payload`.
    #[schema(max_length = 4096)]
    pub payload: String,
    #[schema(max_length = 16)]
    pub currency: String,
    pub total_amount: u32,
}

/// The scheduler agrees to the payment (a refusal is an error whose message
/// the bot passes as `error_message`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsPreCheckoutOk {
    #[schema(value_type = String)]
    pub plan_id: PlanId,
}

/// `POST /api/v1/payments/telegram/payments`: a `successful_payment`,
/// relayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsPayment {
    /// Who paid (the message's `from`).
    #[schema(value_type = String, pattern = r"^telegram:[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub user_ref: UserRef,
    /// `invoice_payload`.
    #[schema(max_length = 4096)]
    pub payload: String,
    #[schema(max_length = 16)]
    pub currency: String,
    pub total_amount: u32,
    /// The charge: the ledger's event id, so a relay repeated changes nothing.
    #[schema(min_length = 1, max_length = 200)]
    pub telegram_payment_charge_id: String,
    /// For a subscription: when the paid period ends (Unix seconds).
    #[serde(default)]
    pub subscription_expiration_date: Option<i64>,
    #[serde(default)]
    pub is_recurring: bool,
    #[serde(default)]
    pub is_first_recurring: bool,
    /// The message's date (Unix seconds): when it was paid.
    pub date: i64,
}

/// What a relayed payment did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsPaymentOutcome {
    /// The ledger's outcome: `applied`, `unchanged`, `unknown_user`,
    /// `unknown_plan`.
    pub outcome: crate::admin::PaymentOutcome,
    /// `true` when this charge had been relayed before (nothing changed now).
    pub already_recorded: bool,
    /// The plan that now applies to the user.
    pub plan: tessera_core::Plan,
    /// The end of the period this charge paid for, if it paid for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_until: Option<DateTime<Utc>>,
}

/// `POST /api/v1/payments/telegram/refund-requests`: which payment of the
/// user may be refunded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsRefundRequest {
    #[schema(value_type = String, pattern = r"^telegram:[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub user_ref: UserRef,
}

/// The charge the bot may refund with `refundStarPayment`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StarsRefundable {
    pub telegram_payment_charge_id: String,
    #[schema(value_type = String)]
    pub plan_id: PlanId,
    /// In Stars.
    pub amount: i64,
}

/// `POST /api/v1/payments/telegram/refunds`: Telegram refunded a charge
/// (`refundStarPayment` succeeded, or said it was already refunded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsRefunded {
    #[schema(value_type = String, pattern = r"^telegram:[A-Za-z0-9_.@-]{1,64}$", example = "telegram:123456")]
    pub user_ref: UserRef,
    #[schema(min_length = 1, max_length = 200)]
    pub telegram_payment_charge_id: String,
}
