//! The website's Stripe calls (`/api/v1/payments/stripe/...`): starting a
//! Checkout session, opening the customer portal, and what the scheduler
//! answers Stripe's webhooks. Only the website's keys start checkouts and
//! portals; the webhook's credential is Stripe's signature.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::{PlanId, UserRef};

/// `POST /api/v1/payments/stripe/checkout`: a website account buys a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripeCheckoutRequest {
    /// The signed-in account (a `web:` user of the key's bot).
    #[schema(value_type = String, pattern = r"^web:[A-Za-z0-9_.@-]{1,64}$", example = "web:01j9z8x7w6v5t4s3r2q1p0n9m8")]
    pub user_ref: UserRef,
    /// The plan to buy: one with a Stripe price configured.
    #[schema(value_type = String, pattern = r"^[A-Za-z0-9_.@-]{1,64}$", example = "starter")]
    pub plan_id: PlanId,
    /// Where Stripe sends the buyer after paying (an `http(s)` URL).
    #[schema(
        pattern = r"^https?://[^\s]+$",
        max_length = 2048,
        example = "https://tessera.example/account?paid=1"
    )]
    pub success_url: String,
    /// Where Stripe sends the buyer who goes back without paying.
    #[schema(
        pattern = r"^https?://[^\s]+$",
        max_length = 2048,
        example = "https://tessera.example/pricing"
    )]
    pub cancel_url: String,
}

/// `POST /api/v1/payments/stripe/portal`: a website account manages its
/// subscription (cancel, change the card) on Stripe's customer portal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StripePortalRequest {
    /// The signed-in account (a `web:` user of the key's bot).
    #[schema(value_type = String, pattern = r"^web:[A-Za-z0-9_.@-]{1,64}$", example = "web:01j9z8x7w6v5t4s3r2q1p0n9m8")]
    pub user_ref: UserRef,
    /// Where the portal's "return" link leads (an `http(s)` URL).
    #[schema(
        pattern = r"^https?://[^\s]+$",
        max_length = 2048,
        example = "https://tessera.example/account"
    )]
    pub return_url: String,
}

/// Where to send the visitor: a page of Stripe's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PaymentRedirect {
    #[schema(example = "https://checkout.stripe.com/c/pay/cs_test_a1b2c3")]
    pub url: String,
}

/// What the scheduler did with a Stripe webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StripeWebhookAck {
    /// Always `true`: the event is recorded (or was before, or is ignored).
    pub received: bool,
    /// `applied`, `unchanged`, `unknown_user`, `unknown_plan` (what the
    /// ledger did), `already_recorded` (a redelivery) or `ignored` (a type
    /// the channel does not act on).
    #[schema(example = "applied")]
    pub outcome: String,
}

/// A plan the website sells through Stripe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StripeOffer {
    #[schema(value_type = String, example = "starter")]
    pub plan_id: PlanId,
    /// Display name (`STARTER`).
    pub name: String,
    /// Monthly price in US cents, as the plan lists it.
    pub price_cents: i64,
    /// Tokens a day on the plan; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<i64>,
}

/// `GET /api/v1/payments/stripe/plans`: what the website sells, cheapest
/// first; empty when Stripe is not configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StripeOffers {
    pub plans: Vec<StripeOffer>,
}
