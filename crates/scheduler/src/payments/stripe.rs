//! Stripe, for the website: Checkout sessions in subscription mode, the
//! customer portal, and the webhooks that report what was paid.

use serde::{Deserialize, Serialize};

/// `[payments.stripe]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {}
