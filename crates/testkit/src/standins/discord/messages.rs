//! Messages: bodies checked against Discord's limits (content, embeds,
//! files, emptiness), built or edited into records with their attachments,
//! rendered as Discord's message objects; channel messages (with the
//! refusals of a channel the bot may not post in and of a user who takes no
//! direct messages), and the CDN-shaped attachment downloads.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::rest::{
    authenticate, error, error_at, form_error, merge, read_payload, unauthorized, user_json,
    Payload,
};
use super::state::{Shared, Stored};
use super::types::{FileRecord, MessageRecord};
use super::{DiscordStandIn, DISCORD_EPOCH_MS, FLAG_EPHEMERAL, FLAG_LOADING};

impl DiscordStandIn {
    /// From now on the bots may not post or edit in `channel_id`: Discord
    /// answers `403` with `code` (50001 "Missing Access" where the bot cannot
    /// see the channel, 50013 "Missing Permissions" where it lacks Send
    /// Messages).
    pub fn refuse_channel(&self, channel_id: u64, code: u64) {
        self.shared.lock().refused_channels.insert(channel_id, code);
    }

    /// From now on `user_id` takes no direct messages from the bots: opening
    /// the DM channel works, a message there gets `403` code 50007 "Cannot
    /// send messages to this user", as for a user who turned off DMs from
    /// server members or blocked the bot.
    pub fn close_dms(&self, user_id: u64) {
        self.shared.lock().closed_dms.insert(user_id);
    }

    /// Marks a guild channel age-restricted or not, as a server's moderators
    /// do in its settings: interactions made there from now on carry
    /// `"nsfw": true` (or `false`) in their `channel` object.
    pub fn set_channel_nsfw(&self, channel_id: u64, nsfw: bool) {
        let mut state = self.shared.lock();
        if nsfw {
            state.nsfw_channels.insert(channel_id);
        } else {
            state.nsfw_channels.remove(&channel_id);
        }
    }

    /// The DM channel a bot opened with `user_id`, if any; its messages are
    /// [`DiscordStandIn::channel_messages`].
    pub fn dm_channel(&self, user_id: u64) -> Option<u64> {
        self.shared.lock().dm_channels.get(&user_id).copied()
    }
}

/// The refusal a bot's post or edit in `channel_id` gets, if any.
fn refusal(shared: &Shared, channel_id: u64) -> Option<Response> {
    let state = shared.lock();
    if let Some(&code) = state.refused_channels.get(&channel_id) {
        let message = if code == 50013 {
            "Missing Permissions"
        } else {
            "Missing Access"
        };
        return Some(error(StatusCode::FORBIDDEN, code, message));
    }
    let closed = state
        .dm_channels
        .iter()
        .any(|(user, channel)| *channel == channel_id && state.closed_dms.contains(user));
    closed.then(|| {
        error(
            StatusCode::FORBIDDEN,
            50007,
            "Cannot send messages to this user",
        )
    })
}

fn validate_embeds(embeds: &[Value]) -> Value {
    let mut errors = json!({});
    let limit = |path: Vec<String>, text: &Value, max: usize, errors: &mut Value| -> usize {
        let n = text.as_str().map_or(0, |s| s.chars().count());
        if n > max {
            merge(
                errors,
                error_at(
                    &path,
                    "BASE_TYPE_MAX_LENGTH",
                    &format!("Must be {max} or fewer in length."),
                ),
            );
        }
        n
    };
    let mut total = 0;
    for (i, embed) in embeds.iter().enumerate() {
        let at = |rest: &[&str]| {
            let mut p = vec!["embeds".to_owned(), i.to_string()];
            p.extend(rest.iter().map(|s| (*s).to_owned()));
            p
        };
        total += limit(at(&["title"]), &embed["title"], 256, &mut errors);
        total += limit(
            at(&["description"]),
            &embed["description"],
            4096,
            &mut errors,
        );
        total += limit(
            at(&["footer", "text"]),
            &embed["footer"]["text"],
            2048,
            &mut errors,
        );
        total += limit(
            at(&["author", "name"]),
            &embed["author"]["name"],
            256,
            &mut errors,
        );
        if let Some(fields) = embed["fields"].as_array() {
            if fields.len() > 25 {
                merge(
                    &mut errors,
                    error_at(
                        &at(&["fields"]),
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    ),
                );
            }
            for (j, field) in fields.iter().enumerate() {
                let j = j.to_string();
                total += limit(
                    at(&["fields", &j, "name"]),
                    &field["name"],
                    256,
                    &mut errors,
                );
                total += limit(
                    at(&["fields", &j, "value"]),
                    &field["value"],
                    1024,
                    &mut errors,
                );
            }
        }
    }
    if total > 6000 {
        merge(
            &mut errors,
            error_at(
                &["embeds".to_owned()],
                "MAX_EMBED_SIZE_EXCEEDED",
                "Embed size exceeds maximum size of 6000",
            ),
        );
    }
    errors
}

/// Builds a new message, or an edit of `base`, from a body.
pub(super) fn build_message(
    shared: &Shared,
    payload: Payload,
    base: Option<&MessageRecord>,
    channel_id: u64,
    allow_empty: bool,
) -> Result<MessageRecord, Box<Response>> {
    let body = &payload.json;
    if !body.is_object() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        )));
    }
    let mut errors = json!({});
    if let Some(content) = body["content"].as_str() {
        if content.chars().count() > 2000 {
            merge(
                &mut errors,
                error_at(
                    &["content".to_owned()],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 2000 or fewer in length.",
                ),
            );
        }
    }
    if let Some(embeds) = body["embeds"].as_array() {
        if embeds.len() > 10 {
            merge(
                &mut errors,
                error_at(
                    &["embeds".to_owned()],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 10 or fewer in length.",
                ),
            );
        } else {
            merge(&mut errors, validate_embeds(embeds));
        }
    }
    merge(
        &mut errors,
        super::monetization::premium_button_errors(&body["components"]),
    );
    if payload.files.len() > 10 {
        merge(
            &mut errors,
            error_at(
                &["files".to_owned()],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 10 or fewer in length.",
            ),
        );
    }
    if errors.as_object().is_some_and(|o| !o.is_empty()) {
        return Err(Box::new(form_error(errors)));
    }
    if payload
        .files
        .iter()
        .any(|f| f.bytes.len() as u64 > shared.attachment_size_limit())
    {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        )));
    }
    let mut message = base.cloned().unwrap_or_else(|| MessageRecord {
        id: shared.snowflake(),
        channel_id,
        content: String::new(),
        embeds: Vec::new(),
        components: Vec::new(),
        attachments: Vec::new(),
        flags: 0,
        edits: 0,
        history: Vec::new(),
        deleted: false,
    });
    match &body["content"] {
        Value::String(s) => message.content = s.clone(),
        Value::Null if body.get("content").is_some() => message.content.clear(),
        _ => {}
    }
    match &body["embeds"] {
        Value::Array(a) => message.embeds = a.clone(),
        Value::Null if body.get("embeds").is_some() => message.embeds.clear(),
        _ => {}
    }
    match &body["components"] {
        Value::Array(a) => message.components = a.clone(),
        Value::Null if body.get("components").is_some() => message.components.clear(),
        _ => {}
    }
    if base.is_none() {
        message.flags =
            body["flags"].as_u64().unwrap_or(0) & (FLAG_EPHEMERAL | (1 << 2) | (1 << 12));
    } else if let Some(flags) = body["flags"].as_u64() {
        message.flags = (message.flags & FLAG_EPHEMERAL) | (flags & ((1 << 2) | (1 << 12)));
    }
    // Attachments: listed existing ones are kept (all, if no list), files
    // are added with the metadata their `attachments` entry gives.
    let listed = body["attachments"].as_array();
    let entry = |id: u64| {
        listed.and_then(|l| {
            l.iter().find(|a| {
                a["id"].as_u64() == Some(id) || a["id"].as_str() == Some(id.to_string().as_str())
            })
        })
    };
    if let Some(list) = listed {
        message.attachments.retain(|a| {
            list.iter().any(|l| {
                l["id"].as_str() == Some(a.id.to_string().as_str())
                    || l["id"].as_u64() == Some(a.id)
            })
        });
    }
    for upload in payload.files {
        let meta = entry(upload.index);
        let filename = meta
            .and_then(|m| m["filename"].as_str())
            .unwrap_or(&upload.filename)
            .to_owned();
        let id = shared.snowflake();
        let content_type = upload
            .content_type
            .clone()
            .or_else(|| guess_content_type(&filename).map(str::to_owned));
        let url = shared.file_url(channel_id, id, &filename);
        shared.lock().files.insert(
            id,
            Stored {
                bytes: upload.bytes.clone(),
                content_type: content_type.clone(),
                downloads: 0,
            },
        );
        message.attachments.push(FileRecord {
            id,
            filename,
            content_type,
            part_content_type: upload.content_type,
            description: meta
                .and_then(|m| m["description"].as_str())
                .map(str::to_owned),
            bytes: upload.bytes,
            url,
        });
    }
    let empty = message.content.trim().is_empty()
        && message.embeds.is_empty()
        && message.attachments.is_empty()
        && message.components.is_empty()
        && body.get("sticker_ids").is_none()
        && body.get("poll").is_none();
    if empty && !allow_empty {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        )));
    }
    if base.is_some() {
        message.edits += 1;
        message.flags &= !FLAG_LOADING;
    }
    message.history.push(message.content.clone());
    Ok(message)
}

struct MessageView<'a> {
    message: &'a MessageRecord,
    author: Value,
    pub(super) kind: u64,
    pub(super) application_id: Option<u64>,
    /// The interaction's ID, user and guild.
    pub(super) interaction: Option<(u64, &'a Value, Option<u64>)>,
}

fn message_json(view: MessageView<'_>) -> Value {
    let m = view.message;
    let attachments: Vec<Value> = m
        .attachments
        .iter()
        .map(|a| {
            let mut v = json!({
                "id": a.id.to_string(),
                "filename": a.filename,
                "size": a.bytes.len(),
                "url": a.url,
                "proxy_url": a.url,
            });
            if let Some(ct) = &a.content_type {
                v["content_type"] = json!(ct);
            }
            if let Some(d) = &a.description {
                v["description"] = json!(d);
            }
            v
        })
        .collect();
    let created = DISCORD_EPOCH_MS + (m.id >> 22);
    let timestamp = chrono::DateTime::from_timestamp_millis(created as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let mut v = json!({
        "id": m.id.to_string(),
        "channel_id": m.channel_id.to_string(),
        "type": view.kind,
        "author": view.author,
        "content": m.content,
        "timestamp": timestamp,
        "edited_timestamp": if m.edits > 0 { json!(now_iso()) } else { Value::Null },
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": m.embeds,
        "components": m.components,
        "pinned": false,
        "flags": m.flags,
    });
    if let Some(app) = view.application_id {
        v["application_id"] = json!(app.to_string());
        v["webhook_id"] = json!(app.to_string());
    }
    if let Some((id, user, guild)) = view.interaction {
        let owner = guild.map_or("0".to_owned(), |g| g.to_string());
        v["interaction_metadata"] = json!({
            "id": id.to_string(),
            "type": 2,
            "user": user,
            "authorizing_integration_owners": { "0": owner },
        });
    }
    v
}

pub(super) fn interaction_message_json(shared: &Shared, id: u64, message: &MessageRecord) -> Value {
    let state = shared.lock();
    let interaction = &state.interactions[&id];
    let app = interaction.record.application_id;
    let author = state
        .bots
        .values()
        .find(|b| b.bot.application_id == app)
        .map(|b| user_json(&b.bot))
        .unwrap_or(Value::Null);
    message_json(MessageView {
        message,
        author,
        kind: 20,
        application_id: Some(app),
        interaction: Some((id, &interaction.user, interaction.guild_id)),
    })
}

fn guess_content_type(filename: &str) -> Option<&'static str> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        _ => return None,
    })
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

pub(super) async fn channel_message(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<String>,
    request: Request,
) -> Response {
    let Some(bot) = authenticate(&shared, request.headers()) else {
        return unauthorized();
    };
    let Ok(channel_id) = channel.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, 10003, "Unknown Channel");
    };
    if let Some(refused) = refusal(&shared, channel_id) {
        return refused;
    }
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    if payload.json["flags"].as_u64().unwrap_or(0) & FLAG_EPHEMERAL != 0 {
        return form_error(error_at(
            &["flags".to_owned()],
            "MESSAGE_FLAGS_INVALID",
            "Invalid flags",
        ));
    }
    let message = match build_message(&shared, payload, None, channel_id, false) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    shared
        .lock()
        .channel_messages
        .entry(channel_id)
        .or_default()
        .push(message.clone());
    shared.changed();
    Json(message_json(MessageView {
        message: &message,
        author: user_json(&bot),
        kind: 0,
        application_id: None,
        interaction: None,
    }))
    .into_response()
}

pub(super) async fn edit_channel_message(
    State(shared): State<Arc<Shared>>,
    Path((channel, message)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(bot) = authenticate(&shared, request.headers()) else {
        return unauthorized();
    };
    let (Ok(channel_id), Ok(message_id)) = (channel.parse::<u64>(), message.parse::<u64>()) else {
        return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    };
    if let Some(refused) = refusal(&shared, channel_id) {
        return refused;
    }
    let existing = shared
        .lock()
        .channel_messages
        .get(&channel_id)
        .and_then(|ms| ms.iter().find(|m| m.id == message_id).cloned());
    let Some(existing) = existing else {
        return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    };
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let edited = match build_message(&shared, payload, Some(&existing), channel_id, false) {
        Ok(m) => m,
        Err(response) => return *response,
    };
    if let Some(m) = shared
        .lock()
        .channel_messages
        .get_mut(&channel_id)
        .and_then(|ms| ms.iter_mut().find(|m| m.id == message_id))
    {
        *m = edited.clone();
    }
    shared.changed();
    Json(message_json(MessageView {
        message: &edited,
        author: user_json(&bot),
        kind: 0,
        application_id: None,
        interaction: None,
    }))
    .into_response()
}

pub(super) async fn attachment(
    State(shared): State<Arc<Shared>>,
    Path((_channel, id, _filename)): Path<(String, String, String)>,
) -> Response {
    let found = id.parse::<u64>().ok().and_then(|id| {
        let mut state = shared.lock();
        state.files.get_mut(&id).map(|f| {
            f.downloads += 1;
            (f.bytes.clone(), f.content_type.clone())
        })
    });
    shared.changed();
    match found {
        Some((bytes, content_type)) => (
            [(
                header::CONTENT_TYPE,
                content_type.unwrap_or_else(|| "application/octet-stream".into()),
            )],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}
