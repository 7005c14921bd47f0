//! Taking payments: the three channels through which people buy plans, each
//! turning what its provider reports into events of the one ledger
//! ([`crate::store::Payments`]). The scheduler decides here, once: frontends
//! relay what their platform told them, and nothing reaches the ledger until
//! it has been checked against what the scheduler itself configured, signed
//! or asked the provider.
//!
//! - [`stripe`]: the website's Stripe Checkout, customer portal and webhooks.
//! - [`stars`]: Telegram Stars invoices and subscriptions, relayed by the bots.
//! - [`entitlements`]: Discord premium app subscriptions, relayed by the bots.
//! - [`refunds`]: refunds operators make, of Stripe and Telegram Stars payments.

use serde::{Deserialize, Serialize};

pub mod entitlements;
pub mod refunds;
pub mod stars;
pub mod stripe;
pub mod stripe_webhook;

/// `[payments]`: how each channel sells plans. Every channel is off until
/// it is configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    pub stripe: stripe::StripeConfig,
    pub telegram: stars::StarsConfig,
    pub discord: entitlements::DiscordConfig,
}
