//! Premium app subscriptions: the bot relays what Discord says of its
//! users' entitlements to the scheduler, which decides what each is worth
//! (the ledger), and offers the purchase with premium buttons. Relayed:
//! the `entitlements` of every interaction (before its job is made, so a
//! fresh purchase raises the allowance at once) and the gateway's
//! `ENTITLEMENT_CREATE`/`UPDATE`/`DELETE`. twilight parses only the first of
//! those dispatches, so the gateway loop reads all three here from the raw
//! JSON.

use serde::Deserialize;
use twilight_model::application::monetization::Entitlement;
use twilight_model::channel::message::component::{ActionRow, Button, ButtonStyle, Component};
use twilight_model::id::Id;

use tessera_api::client::{Client, ClientError};
use tessera_api::entitlements::{
    DiscordEntitlement, DiscordSkus, EntitlementSource, EntitlementsRequest,
};
use tessera_core::{Platform, UserRef};

/// An entitlement in Tessera's wire form (ids as text, times as RFC 3339).
pub(crate) fn wire(e: &Entitlement) -> DiscordEntitlement {
    let time = |t: &twilight_model::util::Timestamp| {
        chrono::DateTime::from_timestamp_micros(t.as_micros())
    };
    DiscordEntitlement {
        id: e.id.to_string(),
        sku_id: e.sku_id.to_string(),
        user_id: e.user_id.map(|u| u.to_string()),
        kind: u8::from(e.kind),
        deleted: e.deleted,
        starts_at: e.starts_at.as_ref().and_then(time),
        ends_at: e.ends_at.as_ref().and_then(time),
    }
}

/// Relays entitlements seen for `user_id`; failures are logged (the next
/// interaction relays them again, and the ledger keeps each once).
pub(crate) async fn relay(
    api: &Client,
    bot_id: &str,
    user_id: &str,
    source: EntitlementSource,
    entitlements: Vec<DiscordEntitlement>,
) {
    let Ok(user_ref) = UserRef::new(Platform::Discord, user_id) else {
        return;
    };
    let req = EntitlementsRequest {
        user_ref,
        source,
        entitlements,
    };
    match api.relay_entitlements(&req).await {
        Ok(outcome) => {
            tracing::debug!(%bot_id, user_ref = %outcome.user_ref, plan = %outcome.plan.id, "entitlements relayed")
        }
        Err(e) => {
            tracing::warn!(%bot_id, user_ref = %req.user_ref, error = %e, "could not relay entitlements")
        }
    }
}

/// A gateway dispatch of an entitlement, as Discord sends it.
#[derive(Deserialize)]
struct Dispatch {
    t: Option<String>,
    d: Option<Entitlement>,
}

/// An `ENTITLEMENT_CREATE`, `_UPDATE` or `_DELETE` dispatch, read from the
/// gateway's raw JSON; `None` for anything else (left to twilight).
pub(crate) fn entitlement_dispatch(json: &str) -> Option<(EntitlementSource, Entitlement)> {
    // Cheap test first: most messages are not entitlements.
    if !json.contains("\"ENTITLEMENT_") {
        return None;
    }
    let dispatch: Dispatch = serde_json::from_str(json).ok()?;
    let source = match dispatch.t.as_deref()? {
        "ENTITLEMENT_CREATE" => EntitlementSource::Created,
        "ENTITLEMENT_UPDATE" => EntitlementSource::Updated,
        "ENTITLEMENT_DELETE" => EntitlementSource::Deleted,
        _ => return None,
    };
    Some((source, dispatch.d?))
}

/// What `/subscribe` answers: words, and a row of premium buttons (style 6
/// with the SKU; Discord draws the name and price and runs the purchase).
pub(crate) fn offer(skus: &Result<DiscordSkus, ClientError>) -> (String, Vec<Component>) {
    let skus = match skus {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the plans sold in Discord");
            return (
                "I can't reach the service to show the plans right now; please try /subscribe again in a minute.".into(),
                vec![],
            );
        }
    };
    let buttons: Vec<Component> = skus
        .skus
        .iter()
        .filter_map(|s| {
            s.sku_id
                .parse::<u64>()
                .ok()
                .and_then(Id::new_checked)
                .map(|id| (s, id))
        })
        .take(5)
        .map(|(_, sku_id)| {
            Component::Button(Button {
                custom_id: None,
                disabled: false,
                emoji: None,
                label: None,
                style: ButtonStyle::Premium,
                url: None,
                sku_id: Some(sku_id),
                id: None,
            })
        })
        .collect();
    if buttons.is_empty() {
        return ("Plans are not sold in Discord here.".into(), vec![]);
    }
    let lines: Vec<String> = skus
        .skus
        .iter()
        .map(|s| match s.plan.daily_tokens {
            Some(tokens) => format!("- {}: {tokens} tokens a day", s.plan.name),
            None => format!("- {}: no daily token limit", s.plan.name),
        })
        .collect();
    let words = format!(
        "Subscribe to a plan; it applies as soon as Discord confirms the purchase, and /quota shows it.\n{}",
        lines.join("\n")
    );
    let row = Component::ActionRow(ActionRow {
        components: buttons,
        id: None,
    });
    (words, vec![row])
}
