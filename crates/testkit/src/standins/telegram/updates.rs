//! Updates: `getUpdates` long polling (offsets, limits, one poll at a time)
//! and webhooks (`setWebhook`, `deleteWebhook`, `getWebhookInfo`), whose
//! updates are POSTed in order with growing waits between failed tries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::{strings, Answer, Ctx, Failure, Params, Reply};
use super::state::{now, BotState, Shared};
use super::types::{Webhook, WebhookDelivery};

/// Waits between webhook delivery attempts.
const RETRY_FIRST: Duration = Duration::from_millis(50);

const RETRY_MAX: Duration = Duration::from_secs(2);

const WEBHOOK_ACTIVE: &str = "Conflict: can't use getUpdates method while webhook is active; \
     use deleteWebhook to delete the webhook first";

const TERMINATED: &str = "Conflict: terminated by other getUpdates request; \
     make sure that only one bot instance is running";

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(super) fn set_webhook(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let address = params.text("url").unwrap_or_default();
    if address.trim().is_empty() {
        return Ok(delete_webhook(ctx.bot, params.flag("drop_pending_updates")));
    }
    let parsed = url::Url::parse(address.trim())
        .map_err(|_| Failure::bad("invalid webhook URL specified"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Failure::bad(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    if !is_loopback(&parsed) {
        return Err(Failure::bad(
            "bad webhook: the stand-in delivers only to loopback addresses",
        ));
    }
    let secret_token = params.text("secret_token").filter(|s| !s.is_empty());
    if let Some(secret) = &secret_token {
        let allowed = secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if secret.len() > 256 || !allowed {
            return Err(Failure::bad("secret token contains unallowed characters"));
        }
    }
    let allowed_updates = params.json("allowed_updates")?.as_ref().and_then(strings);
    let max_connections = params.int("max_connections")?.unwrap_or(40).clamp(1, 100) as u32;
    if params.flag("drop_pending_updates") {
        ctx.bot.updates.clear();
    }
    if allowed_updates.is_some() {
        ctx.bot.allowed_updates = allowed_updates.clone();
    }
    let webhook = Webhook {
        url: parsed.to_string(),
        secret_token,
        allowed_updates,
        max_connections,
    };
    let same = ctx.bot.webhook.as_ref().map(|w| &w.url) == Some(&webhook.url);
    ctx.bot.webhook = Some(webhook);
    ctx.bot.last_error = None;
    Ok(Reply {
        result: json!(true),
        description: Some(
            if same {
                "Webhook is already set"
            } else {
                "Webhook was set"
            }
            .into(),
        ),
    })
}

pub(super) fn delete_webhook(bot: &mut BotState, drop_pending: bool) -> Reply {
    if drop_pending {
        bot.updates.clear();
    }
    let was = bot.webhook.take().is_some();
    bot.last_error = None;
    Reply {
        result: json!(true),
        description: Some(
            if was {
                "Webhook was deleted"
            } else {
                "Webhook is already deleted"
            }
            .into(),
        ),
    }
}

pub(super) fn webhook_info(bot: &BotState) -> Value {
    let mut info = json!({
        "url": bot.webhook.as_ref().map_or("", |w| w.url.as_str()),
        "has_custom_certificate": false,
        "pending_update_count": bot.updates.len(),
    });
    if let Some(w) = &bot.webhook {
        info["max_connections"] = json!(w.max_connections);
        info["ip_address"] = json!("127.0.0.1");
        if let Some(allowed) = &w.allowed_updates {
            info["allowed_updates"] = json!(allowed);
        }
        if let Some((date, message)) = &bot.last_error {
            info["last_error_date"] = json!(date);
            info["last_error_message"] = json!(message);
        }
    }
    info
}

pub(super) async fn get_updates(shared: &Arc<Shared>, token: &str, params: &Params) -> Answer {
    let offset = params.int("offset")?;
    let limit = params.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = params.int("timeout")?.unwrap_or(0).clamp(0, 3600) as u64;
    let allowed = params.json("allowed_updates")?;
    let mut changed = shared.changed.subscribe();
    let (generation, timeout) = {
        let mut state = shared.lock();
        let bot = state.bots.get_mut(token).expect("checked before");
        let timeout = if bot.faults.ignore_poll_timeout {
            0
        } else {
            timeout
        };
        if bot.webhook.is_some() {
            return Err(Failure::new(409, WEBHOOK_ACTIVE));
        }
        if let Some(list) = allowed.as_ref().and_then(strings) {
            bot.allowed_updates = Some(list);
        }
        match offset {
            Some(o) if o > 0 => bot.updates.retain(|(id, _)| i64::from(*id) >= o),
            Some(o) if o < 0 => {
                let keep = o.unsigned_abs() as usize;
                while bot.updates.len() > keep {
                    bot.updates.pop_front();
                }
            }
            _ => {}
        }
        bot.poll_generation += 1;
        (bot.poll_generation, timeout)
    };
    shared.bump();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        {
            let state = shared.lock();
            if state.stopped {
                return Ok(json!([]).into());
            }
            let bot = &state.bots[token];
            if bot.poll_generation != generation {
                return Err(Failure::new(409, TERMINATED));
            }
            if bot.webhook.is_some() {
                return Err(Failure::new(
                    409,
                    "Conflict: terminated by setWebhook request",
                ));
            }
            let batch: Vec<Value> = bot
                .updates
                .iter()
                .take(limit)
                .map(|(_, u)| u.clone())
                .collect();
            if !batch.is_empty() {
                return Ok(Value::Array(batch).into());
            }
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            _ => return Ok(json!([]).into()),
        }
    }
}

/// Delivers a bot's updates to its webhook while one is set.
pub(super) async fn deliver(shared: Arc<Shared>, token: String) {
    let mut changed = shared.changed.subscribe();
    let mut wait = RETRY_FIRST;
    loop {
        let job = {
            let state = shared.lock();
            if state.stopped {
                return;
            }
            state
                .bots
                .get(&token)
                .and_then(|bot| match (&bot.webhook, bot.updates.front()) {
                    (Some(w), Some((id, update))) => {
                        Some((w.url.clone(), w.secret_token.clone(), *id, update.clone()))
                    }
                    _ => None,
                })
        };
        let Some((url, secret, update_id, update)) = job else {
            if changed.changed().await.is_err() {
                return;
            }
            continue;
        };
        let mut request = shared.http.post(&url).json(&update);
        if let Some(secret) = &secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let (status, error) = match request.send().await {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (
                Some(r.status().as_u16()),
                Some(format!(
                    "Wrong response from the webhook: {} {}",
                    r.status().as_u16(),
                    r.status().canonical_reason().unwrap_or("")
                )),
            ),
            Err(e) if e.is_timeout() => (None, Some("Read timeout expired".to_owned())),
            Err(e) if e.is_connect() => (None, Some("Connection refused".to_owned())),
            Err(e) => (None, Some(format!("Failed to deliver: {e}"))),
        };
        let failed = error.is_some();
        {
            let mut state = shared.lock();
            if let Some(bot) = state.bots.get_mut(&token) {
                bot.deliveries.push(WebhookDelivery {
                    update_id,
                    status,
                    error: error.clone(),
                });
                match error {
                    None => {
                        if bot.updates.front().map(|(id, _)| *id) == Some(update_id) {
                            bot.updates.pop_front();
                        }
                    }
                    Some(message) => bot.last_error = Some((now(), message)),
                }
            }
        }
        shared.bump();
        if failed {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        } else {
            wait = RETRY_FIRST;
        }
    }
}
