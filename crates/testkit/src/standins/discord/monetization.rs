//! Premium app subscriptions, as Discord's Monetization documentation
//! describes them (SKUs, Entitlements, Implementing App Subscriptions):
//! an application's SKUs, its users' entitlements over REST, the gateway
//! dispatches that follow an entitlement's life, and the entitlements each
//! interaction carries. A test plays Discord's store: it grants a user a
//! subscription ([`DiscordStandIn::grant_entitlement`]), ends it
//! ([`DiscordStandIn::end_entitlement`]) or has Discord delete it
//! ([`DiscordStandIn::delete_entitlement`]).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::gateway::{dispatch, newest_session};
use super::rest::{bot_for_app, error, error_at, form_error, read_payload};
use super::state::{unix_ms, Records, Shared};
use super::DiscordStandIn;

/// SKU type: a durable one-time purchase.
pub const SKU_DURABLE: u64 = 2;
/// SKU type: a consumable one-time purchase.
pub const SKU_CONSUMABLE: u64 = 3;
/// SKU type: a recurring subscription.
pub const SKU_SUBSCRIPTION: u64 = 5;

/// SKU flag: available for purchase.
const SKU_AVAILABLE: u64 = 1 << 2;
/// SKU flag: a subscription a user buys for themselves.
const SKU_USER_SUBSCRIPTION: u64 = 1 << 8;

/// Entitlement type: bought as an app subscription.
pub const ENTITLEMENT_APPLICATION_SUBSCRIPTION: u64 = 8;
/// Entitlement type: a one-time purchase.
pub const ENTITLEMENT_PURCHASE: u64 = 1;
/// Entitlement type: a test entitlement the developer made.
pub const ENTITLEMENT_TEST_MODE_PURCHASE: u64 = 4;

/// An entitlement as the stand-in keeps it.
#[derive(Clone, Debug)]
pub(super) struct Entitlement {
    id: u64,
    sku_id: u64,
    application_id: u64,
    user_id: Option<u64>,
    guild_id: Option<u64>,
    kind: u64,
    deleted: bool,
    /// Unix ms; `None` for test entitlements.
    starts_at: Option<u64>,
    ends_at: Option<u64>,
    consumed: Option<bool>,
}

impl Entitlement {
    fn json(&self) -> Value {
        let mut value = json!({
            "id": self.id.to_string(),
            "sku_id": self.sku_id.to_string(),
            "application_id": self.application_id.to_string(),
            "type": self.kind,
            "deleted": self.deleted,
            "starts_at": self.starts_at.map(iso),
            "ends_at": self.ends_at.map(iso),
        });
        if let Some(user) = self.user_id {
            value["user_id"] = json!(user.to_string());
        }
        if let Some(guild) = self.guild_id {
            value["guild_id"] = json!(guild.to_string());
        }
        if let Some(consumed) = self.consumed {
            value["consumed"] = json!(consumed);
        }
        value
    }

    fn ended(&self, now_ms: u64) -> bool {
        self.ends_at.is_some_and(|end| end <= now_ms)
    }
}

/// SKUs and entitlements of every application.
#[derive(Default)]
pub(super) struct Monetization {
    skus: Vec<(u64, Value)>,
    entitlements: Vec<Entitlement>,
}

/// Whether a JSON object's snowflake `id` is `id`.
fn has_id(object: &Value, id: u64) -> bool {
    object["id"].as_str().and_then(|v| v.parse::<u64>().ok()) == Some(id)
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// Sends `t` with `d` to the newest session of the bot of `application_id`.
fn dispatch_to_app(state: &mut Records, application_id: u64, t: &str, d: &Value) {
    let Some(token) = state
        .bots
        .iter()
        .find(|(_, b)| b.bot.application_id == application_id)
        .map(|(token, _)| token.clone())
    else {
        return;
    };
    if let Some((session, _)) = newest_session(state, &token, false) {
        dispatch(state, &session, t, d);
    }
}

/// The active entitlements of a user (theirs, and their guild's) as an
/// interaction carries them.
pub(super) fn active_entitlements(
    shared: &Shared,
    application_id: u64,
    user_id: u64,
    guild_id: Option<u64>,
) -> Value {
    let now = unix_ms();
    let state = shared.lock();
    let list: Vec<Value> = state
        .monetization
        .entitlements
        .iter()
        .filter(|e| e.application_id == application_id && !e.deleted && !e.ended(now))
        .filter(|e| e.consumed != Some(true))
        .filter(|e| e.user_id == Some(user_id) || (guild_id.is_some() && e.guild_id == guild_id))
        .map(Entitlement::json)
        .collect();
    Value::Array(list)
}

impl DiscordStandIn {
    /// Publishes a SKU of `kind` ([`SKU_SUBSCRIPTION`], [`SKU_DURABLE`],
    /// [`SKU_CONSUMABLE`]) for the application; its id.
    pub fn add_sku(&self, application_id: u64, kind: u64, name: &str) -> u64 {
        let id = self.shared.snowflake();
        let flags = if kind == SKU_SUBSCRIPTION {
            SKU_AVAILABLE | SKU_USER_SUBSCRIPTION
        } else {
            SKU_AVAILABLE
        };
        let slug: String = name
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let sku = json!({
            "id": id.to_string(),
            "type": kind,
            "application_id": application_id.to_string(),
            "name": name,
            "slug": slug,
            "flags": flags,
        });
        self.shared
            .lock()
            .monetization
            .skus
            .push((application_id, sku));
        self.shared.changed();
        id
    }

    /// The user buys the SKU: a new entitlement (type 8 for a
    /// subscription, 1 otherwise) starting now with no end, announced by
    /// `ENTITLEMENT_CREATE`; its JSON. Panics on an unknown SKU.
    pub fn grant_entitlement(&self, application_id: u64, user_id: u64, sku_id: u64) -> Value {
        let id = self.shared.snowflake();
        let mut state = self.shared.lock();
        let sku = state
            .monetization
            .skus
            .iter()
            .find(|(app, s)| *app == application_id && has_id(s, sku_id))
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("application {application_id} has no SKU {sku_id}"));
        let kind = sku["type"].as_u64().unwrap_or(0);
        let entitlement = Entitlement {
            id,
            sku_id,
            application_id,
            user_id: Some(user_id),
            guild_id: None,
            kind: if kind == SKU_SUBSCRIPTION {
                ENTITLEMENT_APPLICATION_SUBSCRIPTION
            } else {
                ENTITLEMENT_PURCHASE
            },
            deleted: false,
            starts_at: Some(unix_ms()),
            ends_at: None,
            consumed: (kind == SKU_CONSUMABLE).then_some(false),
        };
        let value = entitlement.json();
        state.monetization.entitlements.push(entitlement);
        dispatch_to_app(&mut state, application_id, "ENTITLEMENT_CREATE", &value);
        drop(state);
        self.shared.changed();
        value
    }

    /// The subscription ends (the user cancelled and the paid period ran
    /// out, or a payment failed): `ends_at` is set to `ends_at_ms` (Unix
    /// ms) and `ENTITLEMENT_UPDATE` is dispatched, as Discord does when a
    /// subscription ends. Since November 2024 Discord sends no entitlement
    /// event when a subscription renews or is cancelled: the entitlement
    /// stays as it is (`ends_at` null) until it ends. Its JSON; `None` for
    /// an unknown entitlement.
    pub fn end_entitlement(&self, entitlement_id: u64, ends_at_ms: u64) -> Option<Value> {
        self.change_entitlement(entitlement_id, "ENTITLEMENT_UPDATE", |e| {
            e.ends_at = Some(ends_at_ms);
        })
    }

    /// Discord deletes the entitlement (a refund, a chargeback, or a test
    /// entitlement removed): `deleted` becomes true and
    /// `ENTITLEMENT_DELETE` is dispatched. `None` for an unknown one.
    pub fn delete_entitlement(&self, entitlement_id: u64) -> Option<Value> {
        self.change_entitlement(entitlement_id, "ENTITLEMENT_DELETE", |e| {
            e.deleted = true;
        })
    }

    /// Every entitlement of the application, deleted and ended included.
    pub fn entitlements(&self, application_id: u64) -> Vec<Value> {
        self.shared
            .lock()
            .monetization
            .entitlements
            .iter()
            .filter(|e| e.application_id == application_id)
            .map(Entitlement::json)
            .collect()
    }

    fn change_entitlement(
        &self,
        entitlement_id: u64,
        event: &str,
        change: impl FnOnce(&mut Entitlement),
    ) -> Option<Value> {
        let mut state = self.shared.lock();
        let entitlement = state
            .monetization
            .entitlements
            .iter_mut()
            .find(|e| e.id == entitlement_id)?;
        change(entitlement);
        let value = entitlement.json();
        let app = entitlement.application_id;
        dispatch_to_app(&mut state, app, event, &value);
        drop(state);
        self.shared.changed();
        Some(value)
    }
}

/// `GET /applications/{app}/skus`.
pub(super) async fn list_skus(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let state = shared.lock();
    let skus: Vec<Value> = state
        .monetization
        .skus
        .iter()
        .filter(|(a, _)| *a == bot.application_id)
        .map(|(_, s)| s.clone())
        .collect();
    Json(skus).into_response()
}

fn snowflakes(text: &str) -> Option<Vec<u64>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().ok())
        .collect()
}

fn query_error(name: &str) -> Response {
    form_error(error_at(
        &[name.to_owned()],
        "NUMBER_TYPE_COERCE",
        "Value is not snowflake.",
    ))
}

/// `GET /applications/{app}/entitlements` with `user_id`, `sku_ids`
/// (comma-separated), `guild_id`, `before`, `after`, `limit` (1-100),
/// `exclude_ended` and `exclude_deleted` (default true).
pub(super) async fn list_entitlements(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let id_param = |name: &str| -> Result<Option<u64>, String> {
        match query.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| name.to_owned()),
        }
    };
    let flag = |name: &str, default: bool| match query.get(name).map(String::as_str) {
        Some("true" | "True" | "1") => true,
        Some("false" | "False" | "0") => false,
        _ => default,
    };
    let ids = (|| {
        Ok::<_, String>((
            id_param("user_id")?,
            id_param("guild_id")?,
            id_param("before")?,
            id_param("after")?,
        ))
    })();
    let (user, guild, before, after) = match ids {
        Ok(ids) => ids,
        Err(name) => return query_error(&name),
    };
    let skus = match query.get("sku_ids").map(|s| snowflakes(s)) {
        None => None,
        Some(Some(list)) => Some(list),
        Some(None) => return query_error("sku_ids"),
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return form_error(error_at(
                &["limit".to_owned()],
                "NUMBER_TYPE_MAX",
                "int value should be less than or equal to 100.",
            ))
        }
    };
    let exclude_ended = flag("exclude_ended", false);
    let exclude_deleted = flag("exclude_deleted", true);
    let now = unix_ms();
    let state = shared.lock();
    let mut list: Vec<&Entitlement> = state
        .monetization
        .entitlements
        .iter()
        .filter(|e| e.application_id == bot.application_id)
        .filter(|e| user.is_none() || e.user_id == user)
        .filter(|e| guild.is_none() || e.guild_id == guild)
        .filter(|e| skus.as_ref().is_none_or(|s| s.contains(&e.sku_id)))
        .filter(|e| before.is_none_or(|b| e.id < b))
        .filter(|e| after.is_none_or(|a| e.id > a))
        .filter(|e| !(exclude_ended && e.ended(now)))
        .filter(|e| !(exclude_deleted && e.deleted))
        .collect();
    list.sort_by_key(|e| e.id);
    if before.is_some() && after.is_none() {
        // The newest ones before the cursor.
        let skip = list.len().saturating_sub(limit);
        list.drain(..skip);
    }
    list.truncate(limit);
    Json(list.into_iter().map(Entitlement::json).collect::<Vec<_>>()).into_response()
}

fn unknown_entitlement() -> Response {
    error(StatusCode::NOT_FOUND, 10029, "Unknown Entitlement")
}

/// `GET /applications/{app}/entitlements/{id}`.
pub(super) async fn get_entitlement(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let state = shared.lock();
    state
        .monetization
        .entitlements
        .iter()
        .find(|e| e.application_id == bot.application_id && id.parse() == Ok(e.id))
        .map_or_else(unknown_entitlement, |e| Json(e.json()).into_response())
}

/// `POST /applications/{app}/entitlements`: a test entitlement
/// (`sku_id`, `owner_id`, `owner_type` 1 guild or 2 user), without start
/// or end, announced by `ENTITLEMENT_CREATE`.
pub(super) async fn create_test_entitlement(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    request: axum::extract::Request,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let body = &payload.json;
    let snowflake = |name: &str| match &body[name] {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    let mut errors = json!({});
    for name in ["sku_id", "owner_id"] {
        if snowflake(name).is_none() {
            super::rest::merge(
                &mut errors,
                error_at(
                    &[name.to_owned()],
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ),
            );
        }
    }
    let owner_type = body["owner_type"].as_u64();
    if !matches!(owner_type, Some(1 | 2)) {
        super::rest::merge(
            &mut errors,
            error_at(
                &["owner_type".to_owned()],
                "BASE_TYPE_CHOICES",
                "Value must be one of {1, 2}.",
            ),
        );
    }
    if errors.as_object().is_some_and(|o| !o.is_empty()) {
        return form_error(errors);
    }
    let (sku_id, owner_id) = (
        snowflake("sku_id").unwrap_or(0),
        snowflake("owner_id").unwrap_or(0),
    );
    let id = shared.snowflake();
    let mut state = shared.lock();
    let known = state
        .monetization
        .skus
        .iter()
        .any(|(a, s)| *a == bot.application_id && has_id(s, sku_id));
    if !known {
        return error(StatusCode::NOT_FOUND, 10027, "Unknown SKU");
    }
    let (user_id, guild_id) = if owner_type == Some(2) {
        (Some(owner_id), None)
    } else {
        (None, Some(owner_id))
    };
    let entitlement = Entitlement {
        id,
        sku_id,
        application_id: bot.application_id,
        user_id,
        guild_id,
        kind: ENTITLEMENT_TEST_MODE_PURCHASE,
        deleted: false,
        starts_at: None,
        ends_at: None,
        consumed: None,
    };
    let value = entitlement.json();
    state.monetization.entitlements.push(entitlement);
    dispatch_to_app(&mut state, bot.application_id, "ENTITLEMENT_CREATE", &value);
    drop(state);
    shared.changed();
    Json(value).into_response()
}

/// `DELETE /applications/{app}/entitlements/{id}`: test entitlements only;
/// 204, and `ENTITLEMENT_DELETE`.
pub(super) async fn delete_test_entitlement(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let mut state = shared.lock();
    let Some(entitlement) = state.monetization.entitlements.iter_mut().find(|e| {
        e.application_id == bot.application_id
            && id.parse() == Ok(e.id)
            && e.kind == ENTITLEMENT_TEST_MODE_PURCHASE
            && !e.deleted
    }) else {
        return unknown_entitlement();
    };
    entitlement.deleted = true;
    let value = entitlement.json();
    dispatch_to_app(&mut state, bot.application_id, "ENTITLEMENT_DELETE", &value);
    drop(state);
    shared.changed();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /applications/{app}/entitlements/{id}/consume`: a consumable
/// one-time purchase becomes `consumed`; 204.
pub(super) async fn consume_entitlement(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let mut state = shared.lock();
    let Some(entitlement) =
        state.monetization.entitlements.iter_mut().find(|e| {
            e.application_id == bot.application_id && id.parse() == Ok(e.id) && !e.deleted
        })
    else {
        return unknown_entitlement();
    };
    // Discord documents no code for these two refusals; the stand-in
    // answers 400 with the general code 0.
    match entitlement.consumed {
        Some(false) => entitlement.consumed = Some(true),
        Some(true) => return error(StatusCode::BAD_REQUEST, 0, "Entitlement already consumed"),
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                0,
                "Only consumable entitlements can be consumed",
            )
        }
    }
    drop(state);
    shared.changed();
    StatusCode::NO_CONTENT.into_response()
}

/// Form errors for premium buttons (type 2, style 6) in a message's
/// `components`: each needs a `sku_id` and has no `custom_id`, `label`,
/// `url` or `emoji`.
pub(super) fn premium_button_errors(components: &Value) -> Value {
    let mut errors = json!({});
    let Some(rows) = components.as_array() else {
        return errors;
    };
    for (r, row) in rows.iter().enumerate() {
        let Some(items) = row["components"].as_array() else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            if item["type"] != 2 || item["style"] != 6 {
                continue;
            }
            let path = |field: &str| {
                vec![
                    "components".to_owned(),
                    r.to_string(),
                    "components".to_owned(),
                    i.to_string(),
                    field.to_owned(),
                ]
            };
            let sku = match &item["sku_id"] {
                Value::String(s) => s.parse::<u64>().is_ok(),
                Value::Number(n) => n.is_u64(),
                _ => false,
            };
            if !sku {
                super::rest::merge(
                    &mut errors,
                    error_at(
                        &path("sku_id"),
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                    ),
                );
            }
            for field in ["custom_id", "label", "url", "emoji"] {
                if item.get(field).is_some_and(|v| !v.is_null()) {
                    super::rest::merge(
                        &mut errors,
                        error_at(
                            &path(field),
                            "COMPONENT_INVALID",
                            "A premium button cannot have this field.",
                        ),
                    );
                }
            }
        }
    }
    errors
}
