//! The REST layer every `/api/v10` request passes through (the call record,
//! injected and per-route rate limits with Discord's headers), what the
//! routes share (authentication, error envelopes, JSON and multipart bodies,
//! user objects), and the small routes: the current user and application,
//! DM channels, gateway discovery and typing.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::standins::openai::{read_form, FormField};

use super::state::{unix_ms, Injection, Shared};
use super::types::{Call, DiscordBot};
use super::{DiscordStandIn, INTENT_GUILD_MEMBERS, INTENT_GUILD_PRESENCES, INTENT_MESSAGE_CONTENT};

impl DiscordStandIn {
    /// The next `times` REST requests whose `"METHOD /api/v10/path"`
    /// contains `route` get a 429 asking to retry after `retry_after_secs`.
    pub fn rate_limit(&self, route: &str, times: usize, retry_after_secs: f64) {
        self.shared.lock().injections.push(Injection {
            route: route.to_owned(),
            times,
            retry_after: retry_after_secs,
        });
    }
}

pub(super) fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (status, Json(json!({ "message": message, "code": code }))).into_response()
}

pub(super) fn form_error(errors: Value) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "code": 50035, "errors": errors, "message": "Invalid Form Body" })),
    )
        .into_response()
}

/// `{"a": {"0": {"b": {"_errors": [{code, message}]}}}}` for path `a.0.b`.
pub(super) fn error_at(path: &[String], code: &str, message: &str) -> Value {
    let mut value = json!({ "_errors": [{ "code": code, "message": message }] });
    for key in path.iter().rev() {
        value = json!({ key.clone(): value });
    }
    value
}

/// Merges `b` into `a` (both error trees).
pub(super) fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if k != "_errors" => merge(existing, v),
                    Some(Value::Array(existing)) => {
                        if let Value::Array(v) = v {
                            existing.extend(v);
                        }
                    }
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (a, b) => *a = b,
    }
}

pub(super) fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
}

/// The bot a request authenticates as.
pub(super) fn authenticate(shared: &Shared, headers: &HeaderMap) -> Option<DiscordBot> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bot ")?;
    shared.lock().bots.get(token).map(|b| b.bot.clone())
}

pub(super) fn user_json(bot: &DiscordBot) -> Value {
    json!({
        "id": bot.application_id.to_string(),
        "username": bot.username,
        "discriminator": "0",
        "global_name": null,
        "avatar": null,
        "bot": true,
        "public_flags": 524_288,
        "flags": 524_288,
        "banner": null,
        "accent_color": null,
    })
}

pub(super) fn current_user_json(bot: &DiscordBot) -> Value {
    let mut user = user_json(bot);
    user["mfa_enabled"] = json!(false);
    user["verified"] = json!(true);
    user["locale"] = json!("en-US");
    user["premium_type"] = json!(0);
    user["email"] = Value::Null;
    user
}

pub(super) fn application_flags(bot: &DiscordBot) -> u64 {
    let mut flags = 1 << 23; // APPLICATION_COMMAND_BADGE
    if bot.privileged_intents & INTENT_GUILD_PRESENCES != 0 {
        flags |= 1 << 12;
    }
    if bot.privileged_intents & INTENT_GUILD_MEMBERS != 0 {
        flags |= 1 << 14;
    }
    if bot.privileged_intents & INTENT_MESSAGE_CONTENT != 0 {
        flags |= 1 << 18;
    }
    flags
}

fn bucket_hash(method: &Method, path: &str) -> String {
    // Snowflakes and tokens are not part of a bucket's identity.
    let template: Vec<&str> = path
        .split('/')
        .map(|s| {
            if s.len() > 16 && !s.starts_with('@') {
                "{}"
            } else {
                s
            }
        })
        .collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    method.as_str().hash(&mut hasher);
    template.join("/").hash(&mut hasher);
    let mut out = String::new();
    let _ = write!(out, "{:016x}", hasher.finish());
    out
}

fn rate_limited(retry_after: f64, bucket: &str, limit: u32) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": false,
        })),
    )
        .into_response();
    let h = response.headers_mut();
    let reset = unix_ms() as f64 / 1000.0 + retry_after;
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set("retry-after", format!("{}", retry_after.ceil() as u64));
    set("x-ratelimit-limit", limit.to_string());
    set("x-ratelimit-remaining", "0".into());
    set("x-ratelimit-reset", format!("{reset:.3}"));
    set("x-ratelimit-reset-after", format!("{retry_after:.3}"));
    set("x-ratelimit-bucket", bucket.to_owned());
    set("x-ratelimit-scope", "user".into());
    response
}

pub(super) async fn rest_layer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, 200 * 1024 * 1024).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        );
    };
    let method = parts.method.clone();
    let path = format!("/api/v10{}", parts.uri.path());
    let route = format!("{method} {path}");
    let payload = parse_payload(&parts.headers, bytes.clone()).await;
    let bot = authenticate(&shared, &parts.headers).map(|b| b.token);
    let index = {
        let mut state = shared.lock();
        state.calls.push(Call {
            method: method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            bot,
            json: payload.as_ref().map(|p| p.json.clone()),
            form: payload.map(|p| p.form).unwrap_or_default(),
            status: 0,
        });
        state.calls.len() - 1
    };
    shared.changed();
    let bucket = bucket_hash(&method, &path);
    let limit = shared.options.route_limit;
    let window = shared.options.route_window;
    // Injected limits first, then the route's own window.
    let verdict = {
        let mut state = shared.lock();
        let injected = state
            .injections
            .iter_mut()
            .find(|i| i.times > 0 && route.contains(&i.route))
            .map(|i| {
                i.times -= 1;
                i.retry_after
            });
        state.injections.retain(|i| i.times > 0);
        match injected {
            Some(retry) => Err(retry),
            None => {
                let now = Instant::now();
                let entry = state.windows.entry(route.clone()).or_insert((now, 0));
                if now.duration_since(entry.0) >= window {
                    *entry = (now, 0);
                }
                let reset_after = window.saturating_sub(now.duration_since(entry.0));
                if entry.1 >= limit {
                    Err(reset_after.as_secs_f64())
                } else {
                    entry.1 += 1;
                    Ok((limit - entry.1, reset_after))
                }
            }
        }
    };
    let response = match verdict {
        Err(retry_after) => rate_limited(retry_after, &bucket, limit),
        Ok((remaining, reset_after)) => {
            let mut response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let reset = unix_ms() as f64 / 1000.0 + reset_after.as_secs_f64();
            let h = response.headers_mut();
            let mut set = |name: &'static str, value: String| {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            };
            set("x-ratelimit-limit", limit.to_string());
            set("x-ratelimit-remaining", remaining.to_string());
            set("x-ratelimit-reset", format!("{reset:.3}"));
            set(
                "x-ratelimit-reset-after",
                format!("{:.3}", reset_after.as_secs_f64()),
            );
            set("x-ratelimit-bucket", bucket);
            response
        }
    };
    shared.lock().calls[index].status = response.status().as_u16();
    shared.changed();
    response
}

pub(super) struct Payload {
    pub(super) json: Value,
    pub(super) files: Vec<Upload>,
}

pub(super) struct Upload {
    /// `n` of `files[n]`.
    pub(super) index: u64,
    pub(super) filename: String,
    pub(super) content_type: Option<String>,
    pub(super) bytes: Bytes,
}

struct Parsed {
    pub(super) json: Value,
    form: Vec<FormField>,
}

/// The JSON (or `payload_json`) of a body and its form parts.
async fn parse_payload(headers: &HeaderMap, bytes: Bytes) -> Option<Parsed> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("multipart/form-data") {
        let request = Request::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(bytes))
            .ok()?;
        let form = read_form(request).await?;
        let json = form
            .iter()
            .find(|f| f.name == "payload_json")
            .and_then(|f| serde_json::from_slice(&f.bytes).ok())
            .unwrap_or(Value::Null);
        Some(Parsed { json, form })
    } else if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok().map(|json| Parsed {
            json,
            form: Vec::new(),
        })
    }
}

/// A message body: JSON, or multipart with `payload_json` and `files[n]`.
pub(super) async fn read_payload(request: Request) -> Result<Payload, Box<Response>> {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("multipart/form-data"));
    if bytes.is_empty() {
        return Ok(Payload {
            json: json!({}),
            files: Vec::new(),
        });
    }
    let Some(parsed) = parse_payload(&parts.headers, bytes).await else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        )));
    };
    if !is_form {
        return Ok(Payload {
            json: parsed.json,
            files: Vec::new(),
        });
    }
    let mut files = Vec::new();
    let mut next_index = 0;
    for field in parsed.form {
        let Some(filename) = field.file_name.clone() else {
            continue;
        };
        let index = field
            .name
            .strip_prefix("files[")
            .and_then(|n| n.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(next_index);
        next_index = index + 1;
        files.push(Upload {
            index,
            filename,
            content_type: field.content_type.clone(),
            bytes: field.bytes.clone(),
        });
    }
    let json = if parsed.json.is_null() {
        json!({})
    } else {
        parsed.json
    };
    Ok(Payload { json, files })
}

pub(super) async fn current_user(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    match authenticate(&shared, &headers) {
        Some(bot) => Json(current_user_json(&bot)).into_response(),
        None => unauthorized(),
    }
}

pub(super) async fn create_dm(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if authenticate(&shared, &headers).is_none() {
        return unauthorized();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(recipient) = body["recipient_id"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .or_else(|| body["recipient_id"].as_u64())
    else {
        return form_error(error_at(
            &["recipient_id".to_owned()],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ));
    };
    let channel = {
        let mut state = shared.lock();
        match state.dm_channels.get(&recipient) {
            Some(c) => *c,
            None => {
                let c = shared.snowflake();
                state.dm_channels.insert(recipient, c);
                c
            }
        }
    };
    Json(json!({
        "id": channel.to_string(),
        "type": 1,
        "last_message_id": null,
        "flags": 0,
        "recipients": [{
            "id": recipient.to_string(),
            "username": format!("user{}", recipient % 10_000),
            "discriminator": "0",
            "global_name": null,
            "avatar": null,
            "public_flags": 0,
        }],
    }))
    .into_response()
}

pub(super) async fn current_application(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let Some(bot) = authenticate(&shared, &headers) else {
        return unauthorized();
    };
    let key = {
        let state = shared.lock();
        hex::encode(state.bots[&bot.token].key.verifying_key().to_bytes())
    };
    Json(json!({
        "id": bot.application_id.to_string(),
        "name": bot.username,
        "icon": null,
        "description": "",
        "summary": "",
        "type": null,
        "bot": user_json(&bot),
        "bot_public": true,
        "bot_require_code_grant": false,
        "verify_key": key,
        "flags": application_flags(&bot),
        "team": null,
        "owner": {
            "id": "1000000000000000001",
            "username": "owner",
            "discriminator": "0",
            "global_name": null,
            "avatar": null,
            "public_flags": 0,
            "flags": 0,
        },
        "hook": true,
        "redirect_uris": [],
        "interactions_endpoint_url": bot.interactions_endpoint_url,
        "approximate_guild_count": 1,
        "tags": [],
        "integration_types_config": { "0": {} },
    }))
    .into_response()
}

pub(super) async fn gateway_info(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "url": format!("ws://127.0.0.1:{}/gateway", shared.port) })).into_response()
}

pub(super) async fn gateway_bot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if authenticate(&shared, &headers).is_none() {
        return unauthorized();
    }
    Json(json!({
        "url": format!("ws://127.0.0.1:{}/gateway", shared.port),
        "shards": 1,
        "session_start_limit": {
            "total": 1000,
            "remaining": 999,
            "reset_after": 14_400_000,
            "max_concurrency": 1,
        },
    }))
    .into_response()
}

/// The bot authenticated for `app`, or the error to answer.
pub(super) fn bot_for_app(
    shared: &Shared,
    headers: &HeaderMap,
    app: &str,
) -> Result<DiscordBot, Box<Response>> {
    let Some(bot) = authenticate(shared, headers) else {
        return Err(Box::new(unauthorized()));
    };
    if app.parse::<u64>().ok() != Some(bot.application_id) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            50001,
            "Missing Access",
        )));
    }
    Ok(bot)
}

pub(super) async fn typing(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if authenticate(&shared, &headers).is_none() {
        return unauthorized();
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_nest_and_merge() {
        let mut errors = error_at(&["0".into(), "name".into()], "A", "a");
        merge(
            &mut errors,
            error_at(&["0".into(), "description".into()], "B", "b"),
        );
        merge(
            &mut errors,
            error_at(&["0".into(), "name".into()], "C", "c"),
        );
        assert_eq!(errors["0"]["name"]["_errors"].as_array().unwrap().len(), 2);
        assert_eq!(errors["0"]["description"]["_errors"][0]["code"], "B");
    }

    #[test]
    fn buckets_ignore_ids() {
        let a = bucket_hash(
            &Method::POST,
            "/api/v10/channels/1100000000000000001/messages",
        );
        let b = bucket_hash(
            &Method::POST,
            "/api/v10/channels/1100000000000000002/messages",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            bucket_hash(
                &Method::GET,
                "/api/v10/channels/1100000000000000001/messages"
            )
        );
    }
}
