//! Discord premium app subscriptions, for the Discord bots: plans mapped to
//! SKUs, and the entitlements the bots relay from interactions and the
//! gateway, turned here into events of the ledger.
//!
//! What Discord says, and when (its Monetization documentation, since the
//! entitlement migration of November 2024): a purchase makes an entitlement
//! (type 8, `starts_at` set, `ends_at` null) and dispatches
//! `ENTITLEMENT_CREATE`; renewals and cancellations send nothing about the
//! entitlement, which stays live with no end; when the subscription ends
//! (the cancelled period ran out, or a payment failed) `ends_at` is set and
//! `ENTITLEMENT_UPDATE` dispatched; a refund or a removed test entitlement
//! deletes it (`ENTITLEMENT_DELETE`). Every interaction carries the user's
//! live entitlements. Test entitlements (type 4) have neither date.
//!
//! The ledger's paid period only grows, so a live entitlement with no end
//! cannot be recorded as "paid forever". Instead:
//!
//! - **Live** (no `ends_at`, not deleted): paid until the end of the UTC day
//!   it was seen on plus `live_grace_secs`, one event per entitlement and
//!   day (`discord-{id}-live-{day}`), so a hundred interactions in a day are
//!   one event and each new day's first sighting extends the plan. Every
//!   interaction relays the user's entitlements before a job is made, so a
//!   user who is active is always covered; one who is idle lapses to FREE
//!   after the grace and is back on their plan at their next command.
//! - **Ended** (`ends_at` in the past): a `cancel` at `ends_at`
//!   (`discord-{id}-ended`): the plan ends now, for good.
//! - **Ending** (`ends_at` in the future): paid until `ends_at`
//!   (`discord-{id}-until-{ms}`).
//! - **Deleted**: a `refund` (`discord-{id}-deleted`): the plan ends now.
//!
//! So a missed `ENTITLEMENT_UPDATE` still ends the plan at most one day plus
//! `live_grace_secs` after the user was last seen with it. The reference
//! (the ledger's grant) is the entitlement id; Discord does not say what was
//! paid, so amounts are 0 (Discord's payouts are in its developer portal).
//! Entitlements of other users, of SKUs no plan maps, of guilds, or of other
//! types are ignored and recorded nowhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use tessera_api::entitlements::{DiscordEntitlement, EntitlementSource};
use tessera_core::{Millis, PaymentKind, PaymentProvider, UserRef};

use crate::store::NewPaymentEvent;

/// Discord's entitlement type of an app subscription.
pub const APPLICATION_SUBSCRIPTION: u8 = 8;
/// Discord's entitlement type of a test entitlement the developer made.
pub const TEST_MODE_PURCHASE: u8 = 4;

const DAY_MS: Millis = 86_400_000;

/// `[payments.discord]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// Plan id -> the id of the subscription SKU that buys it (from the
    /// developer portal's Monetization page). Empty: nothing is sold in
    /// Discord.
    pub skus: BTreeMap<String, String>,
    /// How long past the end of the day it was last seen a live
    /// subscription (one Discord has not ended) keeps its plan.
    pub live_grace_secs: u64,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        DiscordConfig {
            skus: BTreeMap::new(),
            live_grace_secs: 172_800,
        }
    }
}

/// Whether `s` is a Discord snowflake: 1 to 20 digits.
pub fn is_snowflake(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl DiscordConfig {
    /// Checks what the types cannot: SKU ids are snowflakes, each sold once.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (plan, sku) in &self.skus {
            if !is_snowflake(sku) {
                return Err(format!(
                    "payments.discord.skus.{plan} must be a Discord SKU id (digits), not {sku:?}"
                ));
            }
            if !seen.insert(sku) {
                return Err(format!(
                    "payments.discord.skus: SKU {sku} is given to two plans"
                ));
            }
        }
        Ok(())
    }

    /// The plan a SKU buys.
    pub fn plan_of(&self, sku_id: &str) -> Option<&str> {
        self.skus
            .iter()
            .find(|(_, sku)| sku.as_str() == sku_id)
            .map(|(plan, _)| plan.as_str())
    }

    /// The ledger events one relayed entitlement makes, or why it makes
    /// none. `now` is the scheduler's clock when the bot relayed it.
    pub fn events(
        &self,
        user: &UserRef,
        source: EntitlementSource,
        e: &DiscordEntitlement,
        now: Millis,
    ) -> Result<Vec<NewPaymentEvent>, String> {
        if e.kind != APPLICATION_SUBSCRIPTION && e.kind != TEST_MODE_PURCHASE {
            return Err(format!(
                "type {} is not an app subscription (8) or a test entitlement (4)",
                e.kind
            ));
        }
        match e.user_id.as_deref() {
            Some(id) if id == user.platform_user_id() => {}
            Some(_) => return Err(format!("it belongs to another user than {user}")),
            None => return Err("it is a guild's, not a user's".into()),
        }
        let Some(plan) = self.plan_of(&e.sku_id) else {
            return Err(format!("SKU {} buys no plan here", e.sku_id));
        };
        let event = |id: String, kind, period, at| NewPaymentEvent {
            provider: PaymentProvider::Discord,
            event_id: format!("discord-{}-{id}", e.id),
            kind,
            user_ref: Some(user.clone()),
            plan_id: Some(plan.to_owned()),
            amount_minor: 0,
            currency: None,
            period,
            reference: Some(e.id.clone()),
            occurred_at: at,
        };
        let starts = e.starts_at.map(|t| t.timestamp_millis());
        if e.deleted || source == EntitlementSource::Deleted {
            return Ok(vec![event(
                "deleted".into(),
                PaymentKind::Refund,
                None,
                now,
            )]);
        }
        if let Some(ends) = e.ends_at.map(|t| t.timestamp_millis()) {
            if ends <= now {
                return Ok(vec![event("ended".into(), PaymentKind::Cancel, None, ends)]);
            }
            let start = starts.unwrap_or(now).min(ends - 1);
            return Ok(vec![event(
                format!("until-{ends}"),
                PaymentKind::Update,
                Some((start, ends)),
                start,
            )]);
        }
        let day = now.div_euclid(DAY_MS);
        let day_start = day * DAY_MS;
        let grace = Millis::try_from(self.live_grace_secs.saturating_mul(1000)).unwrap_or(DAY_MS);
        let until = day_start + DAY_MS + grace;
        let first_day = starts.is_none_or(|s| s.div_euclid(DAY_MS) >= day);
        let kind = if first_day {
            PaymentKind::Purchase
        } else {
            PaymentKind::Renewal
        };
        Ok(vec![event(
            format!("live-{day}"),
            kind,
            Some((day_start, until)),
            day_start,
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DiscordConfig {
        DiscordConfig {
            skus: [("starter".to_owned(), "111".to_owned())].into(),
            ..Default::default()
        }
    }

    fn ent(user: &str, sku: &str, kind: u8) -> DiscordEntitlement {
        DiscordEntitlement {
            id: "900".into(),
            sku_id: sku.into(),
            user_id: Some(user.into()),
            kind,
            deleted: false,
            starts_at: None,
            ends_at: None,
        }
    }

    const NOW: Millis = 1_767_312_000_000 + 3_600_000;

    #[test]
    fn a_live_entitlement_is_one_event_a_day_paid_until_the_day_and_the_grace() {
        let user: UserRef = "discord:42".parse().unwrap();
        let c = config();
        let e = ent("42", "111", APPLICATION_SUBSCRIPTION);
        let a = c
            .events(&user, EntitlementSource::Interaction, &e, NOW)
            .unwrap();
        let b = c
            .events(&user, EntitlementSource::Created, &e, NOW + 1000)
            .unwrap();
        assert_eq!(a, b, "the same day, whatever the source, is the same event");
        let (start, end) = a[0].period.unwrap();
        assert_eq!(end - start, DAY_MS + 172_800_000);
        assert!(start <= NOW && NOW < end);
        let next = c
            .events(&user, EntitlementSource::Interaction, &e, NOW + DAY_MS)
            .unwrap();
        assert_ne!(next[0].event_id, a[0].event_id);
        assert!(next[0].period.unwrap().1 > end);
    }

    #[test]
    fn ends_deletes_and_strangers_read_as_documented() {
        let user: UserRef = "discord:42".parse().unwrap();
        let c = config();
        let mut e = ent("42", "111", APPLICATION_SUBSCRIPTION);
        e.ends_at = chrono::DateTime::from_timestamp_millis(NOW - 5);
        let ended = c
            .events(&user, EntitlementSource::Updated, &e, NOW)
            .unwrap();
        assert_eq!(
            (ended[0].kind, ended[0].occurred_at),
            (PaymentKind::Cancel, NOW - 5)
        );
        e.ends_at = chrono::DateTime::from_timestamp_millis(NOW + 5000);
        let ending = c
            .events(&user, EntitlementSource::Interaction, &e, NOW)
            .unwrap();
        assert_eq!(ending[0].period.unwrap().1, NOW + 5000);
        e.deleted = true;
        let deleted = c
            .events(&user, EntitlementSource::Updated, &e, NOW)
            .unwrap();
        assert_eq!(deleted[0].kind, PaymentKind::Refund);
        assert!(c
            .events(&user, EntitlementSource::Created, &ent("43", "111", 8), NOW)
            .is_err());
        assert!(c
            .events(&user, EntitlementSource::Created, &ent("42", "222", 8), NOW)
            .is_err());
        assert!(c
            .events(&user, EntitlementSource::Created, &ent("42", "111", 1), NOW)
            .is_err());
        assert!(c
            .events(&user, EntitlementSource::Created, &ent("42", "111", 4), NOW)
            .is_ok());
    }

    #[test]
    fn sku_ids_are_checked() {
        let mut c = config();
        assert!(c.check().is_ok());
        c.skus.insert("pro".into(), "111".into());
        assert!(c.check().unwrap_err().contains("two plans"));
        c.skus.insert("pro".into(), "abc".into());
        assert!(c.check().is_err());
    }
}
