//! Telegram Stars (`XTR`), for the Telegram bots: invoices and subscription
//! links the scheduler prices and signs, and the payments the bots relay.

use serde::{Deserialize, Serialize};

/// `[payments.telegram]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StarsConfig {}
