//! Discord premium app subscriptions, for the Discord bots: plans mapped to
//! SKUs, and the entitlements the bots relay from interactions and the
//! gateway.

use serde::{Deserialize, Serialize};

/// `[payments.discord]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {}
