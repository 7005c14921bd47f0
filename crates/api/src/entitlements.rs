//! Discord premium app subscriptions on the public API: what a Discord bot
//! relays of the entitlements Discord showed it (on an interaction, or in a
//! gateway dispatch), and the SKU it offers for each plan. The scheduler
//! decides what an entitlement is worth; a bot only passes on what it saw.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::{Plan, UserRef};

/// An entitlement as Discord sends it (the Entitlement object); fields
/// Tessera does not read (`application_id`, `subscription_id`,
/// `promotion_id`, ...) are accepted and ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiscordEntitlement {
    /// The entitlement's snowflake.
    #[schema(pattern = r"^[0-9]{1,20}$", example = "1019653849998299136")]
    pub id: String,
    #[schema(pattern = r"^[0-9]{1,20}$", example = "1019475255913222144")]
    pub sku_id: String,
    /// The user granted the SKU; absent on a guild's entitlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9]{1,20}$")]
    pub user_id: Option<String>,
    /// Discord's entitlement type: 8 an app subscription, 4 a test
    /// entitlement; others are not plans.
    #[serde(rename = "type")]
    #[schema(minimum = 0, maximum = 255)]
    pub kind: u8,
    #[serde(default)]
    pub deleted: bool,
    /// Absent on test entitlements. (Documented as a plain date-time, not
    /// nullable: JSON `null` is read as absent all the same.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Option<DateTime<Utc>>,
    /// Set when the subscription has ended (absent while it lives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Option<DateTime<Utc>>,
}

/// Where a bot saw the entitlements it relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementSource {
    /// The `entitlements` of an interaction: the user's live ones.
    Interaction,
    /// `ENTITLEMENT_CREATE`: a purchase.
    Created,
    /// `ENTITLEMENT_UPDATE`: a subscription ended (`ends_at` set).
    Updated,
    /// `ENTITLEMENT_DELETE`: refunded, charged back or removed.
    Deleted,
}

/// `POST /api/v1/payments/discord/entitlements` (Discord keys only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementsRequest {
    /// The Discord user the entitlements were seen for: on an interaction,
    /// its user; from the gateway, the entitlement's `user_id`.
    #[schema(value_type = String, pattern = r"^discord:[A-Za-z0-9_.@-]{1,64}$", example = "discord:771129655544643584")]
    pub user_ref: UserRef,
    pub source: EntitlementSource,
    /// At most 100.
    #[schema(max_items = 100)]
    pub entitlements: Vec<DiscordEntitlement>,
}

/// What became of one relayed entitlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementOutcome {
    /// New to the ledger: recorded (and applied where it could be).
    Recorded,
    /// The ledger holds it already: nothing changed.
    AlreadyRecorded,
    /// Not a plan this scheduler sells (another user's, an unmapped SKU, not
    /// a subscription): nothing recorded.
    Ignored,
}

/// One relayed entitlement's fate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EntitlementResult {
    pub entitlement_id: String,
    pub outcome: EntitlementOutcome,
    /// In words: what the ledger did, or why it was ignored.
    pub detail: String,
}

/// The answer: the plan that now applies to the user, and what each
/// entitlement did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EntitlementsOutcome {
    pub user_ref: UserRef,
    pub plan: Plan,
    pub entitlements: Vec<EntitlementResult>,
}

/// A plan sold in Discord and the SKU that buys it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiscordSku {
    pub plan: Plan,
    #[schema(pattern = r"^[0-9]{1,20}$")]
    pub sku_id: String,
}

/// `GET /api/v1/payments/discord/skus` (Discord keys only): what a bot's
/// `/subscribe` offers, by plan priority; empty when plans are not sold in
/// Discord.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DiscordSkus {
    pub skus: Vec<DiscordSku>,
}
