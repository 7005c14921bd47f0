//! Simulated users: a slash command (with options and attachments, in a
//! guild or a DM) becomes a full interaction object, registered with the
//! stand-in and dispatched to the bot's newest gateway session.

use std::time::Instant;

use axum::body::Bytes;
use serde_json::{json, Map, Value};

use super::gateway::{dispatch, newest_session};
use super::state::{strip_bot, Interaction, Stored};
use super::types::{InteractionRecord, Invocation, SentInteraction};
use super::DiscordStandIn;

impl DiscordStandIn {
    /// A user runs `/command` with `options` in `channel_id` of the default
    /// guild; dispatched over the gateway.
    pub fn slash(
        &self,
        token: &str,
        channel_id: u64,
        user_id: u64,
        command: &str,
        options: Value,
    ) -> SentInteraction {
        self.invoke(
            token,
            Invocation::new(channel_id, user_id, command).options(options),
        )
    }

    /// As [`Self::slash`], giving a file for the attachment option `option`.
    #[allow(clippy::too_many_arguments)]
    pub fn slash_with_attachment(
        &self,
        token: &str,
        channel_id: u64,
        user_id: u64,
        command: &str,
        option: &str,
        bytes: impl Into<Bytes>,
        filename: &str,
        content_type: &str,
    ) -> SentInteraction {
        self.invoke(
            token,
            Invocation::new(channel_id, user_id, command).attachment(
                option,
                bytes,
                filename,
                content_type,
            ),
        )
    }

    /// Dispatches `INTERACTION_CREATE` for `invocation` to the bot's newest
    /// gateway session. Panics if the bot is unknown, never identified, or
    /// has not registered the command.
    pub fn invoke(&self, token: &str, invocation: Invocation) -> SentInteraction {
        let token = strip_bot(token);
        let sent = self.make_interaction(token, &invocation);
        let mut state = self.shared.lock();
        let (session_id, _) = newest_session(&state, token, false).unwrap_or_else(|| {
            panic!("bot {token:?} has no gateway session; wait for it to identify first")
        });
        dispatch(&mut state, &session_id, "INTERACTION_CREATE", &sent.payload);
        drop(state);
        self.shared.changed();
        sent
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn register_interaction(
        &self,
        id: u64,
        token: &str,
        application_id: u64,
        kind: u64,
        command: Option<String>,
        channel_id: Option<u64>,
        guild_id: Option<u64>,
        user: Value,
    ) {
        let user_id = user["id"].as_str().and_then(|s| s.parse().ok());
        let mut state = self.shared.lock();
        state.by_token.insert(token.to_owned(), id);
        state.interactions.insert(
            id,
            Interaction {
                record: InteractionRecord {
                    id,
                    token: token.to_owned(),
                    application_id,
                    kind,
                    command,
                    channel_id,
                    user_id,
                    callback: None,
                    original: None,
                    followups: Vec::new(),
                    rejected: Vec::new(),
                },
                dispatched: Instant::now(),
                guild_id,
                user,
            },
        );
        drop(state);
        self.shared.changed();
    }

    pub(super) fn make_interaction(&self, token: &str, inv: &Invocation) -> SentInteraction {
        let bot = self.bot(token);
        let app = bot.application_id;
        let shared = &self.shared;
        let command = {
            let state = shared.lock();
            let global = state.commands.get(&(app, None));
            let guild = inv
                .guild_id
                .and_then(|g| state.commands.get(&(app, Some(g))));
            global
                .into_iter()
                .chain(guild)
                .flatten()
                .find(|c| c["name"] == inv.command.as_str() && c["type"] == 1)
                .cloned()
                .unwrap_or_else(|| {
                    panic!(
                        "application {app} has no command /{} registered",
                        inv.command
                    )
                })
        };
        let id = shared.snowflake();
        let itoken = interaction_token(id);
        let user = json!({
            "id": inv.user_id.to_string(),
            "username": inv.username,
            "discriminator": "0",
            "global_name": inv.username,
            "avatar": null,
            "public_flags": 0,
        });
        let mut resolved = Map::new();
        let mut options = match &inv.options {
            Value::Array(a) => a.clone(),
            Value::Object(o) => o
                .iter()
                .map(|(name, value)| typed_option(&command, name, value))
                .collect(),
            Value::Null => Vec::new(),
            other => panic!("options must be an array or an object, not {other}"),
        };
        let mut attachments = Map::new();
        for file in &inv.attachments {
            let attachment_id = shared.snowflake();
            let url = shared.file_url(inv.channel_id, attachment_id, &file.filename);
            attachments.insert(
                attachment_id.to_string(),
                json!({
                    "id": attachment_id.to_string(),
                    "filename": file.filename,
                    "size": file.bytes.len(),
                    "url": url,
                    "proxy_url": url,
                    "content_type": file.content_type,
                    "ephemeral": true,
                }),
            );
            shared.lock().files.insert(
                attachment_id,
                Stored {
                    bytes: file.bytes.clone(),
                    content_type: Some(file.content_type.clone()),
                    downloads: 0,
                },
            );
            options.push(json!({
                "name": file.option,
                "type": 11,
                "value": attachment_id.to_string(),
            }));
        }
        if !attachments.is_empty() {
            resolved.insert("attachments".into(), Value::Object(attachments));
        }
        let mut data = json!({
            "id": command["id"],
            "name": inv.command,
            "type": 1,
            "options": options,
        });
        if let Some(guild) = inv.guild_id {
            data["guild_id"] = json!(guild.to_string());
        }
        if !resolved.is_empty() {
            data["resolved"] = Value::Object(resolved);
        }
        let app_permissions =
            (1u64 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31) | (1 << 38);
        let mut payload = json!({
            "id": id.to_string(),
            "application_id": app.to_string(),
            "type": 2,
            "data": data,
            "channel_id": inv.channel_id.to_string(),
            "token": itoken,
            "version": 1,
            "app_permissions": app_permissions.to_string(),
            "locale": inv.locale,
            "entitlements": super::monetization::active_entitlements(shared, app, inv.user_id, inv.guild_id),
            "attachment_size_limit": shared.attachment_size_limit(),
        });
        match inv.guild_id {
            Some(guild) => {
                payload["guild_id"] = json!(guild.to_string());
                payload["guild"] = json!({
                    "id": guild.to_string(),
                    "locale": "en-US",
                    "features": [],
                });
                payload["guild_locale"] = json!("en-US");
                payload["channel"] = json!({
                    "id": inv.channel_id.to_string(),
                    "type": 0,
                    "guild_id": guild.to_string(),
                    "name": "general",
                    "position": 0,
                    "permission_overwrites": [],
                    "nsfw": shared.lock().nsfw_channels.contains(&inv.channel_id),
                    "topic": null,
                    "last_message_id": null,
                    "rate_limit_per_user": 0,
                    "parent_id": null,
                    "flags": 0,
                    "permissions": app_permissions.to_string(),
                });
                payload["member"] = json!({
                    "user": user,
                    "roles": [],
                    "joined_at": "2024-01-01T00:00:00.000000+00:00",
                    "deaf": false,
                    "mute": false,
                    "flags": 0,
                    "pending": false,
                    "permissions": "2248473465835073",
                    "nick": null,
                    "avatar": null,
                    "banner": null,
                    "premium_since": null,
                    "communication_disabled_until": null,
                });
                payload["authorizing_integration_owners"] = json!({ "0": guild.to_string() });
                payload["context"] = json!(0);
            }
            None => {
                payload["user"] = user.clone();
                payload["channel"] = json!({
                    "id": inv.channel_id.to_string(),
                    "type": 1,
                    "last_message_id": null,
                    "flags": 0,
                    "recipients": [user],
                });
                payload["authorizing_integration_owners"] = json!({ "0": "0" });
                payload["context"] = json!(1);
            }
        }
        self.register_interaction(
            id,
            &itoken,
            app,
            2,
            Some(inv.command.clone()),
            Some(inv.channel_id),
            inv.guild_id,
            user,
        );
        SentInteraction {
            id,
            token: itoken,
            application_id: app,
            payload,
        }
    }
}

fn typed_option(command: &Value, name: &str, value: &Value) -> Value {
    let declared = command["options"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == name))
        .and_then(|o| o["type"].as_u64());
    let kind = declared.unwrap_or(match value {
        Value::Bool(_) => 5,
        Value::Number(n) if n.is_i64() || n.is_u64() => 4,
        Value::Number(_) => 10,
        _ => 3,
    });
    json!({ "name": name, "type": kind, "value": value })
}

pub(super) fn interaction_token(id: u64) -> String {
    let random: [u8; 24] = rand::random();
    format!("aW50ZXJhY3Rpb246{id}:{}", hex::encode(random))
}
