//! What the running stand-in holds (users, files, and per bot its chats,
//! updates, webhook, commands and records), and how a test reads it and
//! waits for it to change without polling.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::faults::Faults;
use super::payments::Payments;
use super::types::{
    Author, Call, ChatMessage, Command, MessageKind, SentMessage, Webhook, WebhookDelivery,
};
use super::TelegramStandIn;

#[derive(Clone, Debug)]
pub(super) struct UserInfo {
    pub(super) first_name: String,
    pub(super) last_name: Option<String>,
    pub(super) username: Option<String>,
    pub(super) language_code: Option<String>,
}

impl UserInfo {
    pub(super) fn default_for(id: i64) -> Self {
        Self {
            first_name: format!("User {id}"),
            last_name: None,
            username: Some(format!("user{id}")),
            language_code: Some("en".into()),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct StoredFile {
    /// The token of the bot it belongs to: `file_id`s are per bot.
    pub(super) owner: String,
    pub(super) id: String,
    pub(super) unique_id: String,
    pub(super) path: String,
    pub(super) bytes: Bytes,
    pub(super) mime: Option<String>,
    pub(super) file_name: Option<String>,
    pub(super) duration: u32,
    pub(super) width: u32,
    pub(super) height: u32,
    /// The `PhotoSize` array, for photos.
    pub(super) photo: Option<Value>,
}

#[derive(Default)]
pub(super) struct Files {
    pub(super) by_id: HashMap<String, StoredFile>,
    pub(super) by_path: HashMap<String, String>,
    pub(super) next: u64,
}

#[derive(Clone, Debug)]
pub(super) struct Msg {
    pub(super) id: i64,
    pub(super) author: Author,
    pub(super) date: i64,
    pub(super) kind: MessageKind,
    /// Text, or caption.
    pub(super) text: Option<String>,
    pub(super) entities: Option<Value>,
    /// The `Message` field of the file (`photo`, `voice`, ...).
    pub(super) media: Option<Value>,
    pub(super) file_id: Option<String>,
    pub(super) reply_to: Option<i64>,
    pub(super) reply_markup: Option<Value>,
    pub(super) edit_date: Option<i64>,
    pub(super) history: Vec<String>,
}

pub(super) struct ChatState {
    pub(super) next_id: i64,
    pub(super) messages: BTreeMap<i64, Msg>,
    pub(super) blocked: bool,
}

impl ChatState {
    pub(super) fn new() -> Self {
        Self {
            next_id: 1,
            messages: BTreeMap::new(),
            blocked: false,
        }
    }
}

pub(super) struct BotState {
    pub(super) id: i64,
    pub(super) username: String,
    pub(super) first_name: String,
    pub(super) next_update_id: u32,
    pub(super) updates: VecDeque<(u32, Value)>,
    pub(super) allowed_updates: Option<Vec<String>>,
    pub(super) poll_generation: u64,
    pub(super) webhook: Option<Webhook>,
    pub(super) last_error: Option<(i64, String)>,
    pub(super) deliveries: Vec<WebhookDelivery>,
    pub(super) commands: Vec<(Value, String, Vec<Command>)>,
    pub(super) chats: BTreeMap<i64, ChatState>,
    pub(super) sent: Vec<SentMessage>,
    pub(super) calls: Vec<Call>,
    pub(super) downloads: Vec<String>,
    pub(super) floods: HashMap<String, (u32, u32)>,
    pub(super) faults: Faults,
    pub(super) payments: Payments,
}

impl BotState {
    /// Whether updates of `kind` are wanted now.
    pub(super) fn wants(&self, kind: &str) -> bool {
        match &self.allowed_updates {
            Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
            _ => !matches!(
                kind,
                "chat_member" | "message_reaction" | "message_reaction_count"
            ),
        }
    }

    pub(super) fn user_json(&self) -> Value {
        json!({
            "id": self.id,
            "is_bot": true,
            "first_name": self.first_name,
            "username": self.username,
        })
    }
}

#[derive(Default)]
pub(super) struct StateInner {
    pub(super) bots: HashMap<String, BotState>,
    pub(super) files: Files,
    pub(super) users: HashMap<i64, UserInfo>,
    /// (group, user) → `ChatMember` status, where a test set one.
    pub(super) members: HashMap<(i64, i64), String>,
    pub(super) next_bot_id: i64,
    pub(super) stopped: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<StateInner>,
    pub(super) changed: watch::Sender<u64>,
    pub(super) http: reqwest::Client,
    pub(super) runtime: tokio::runtime::Handle,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every waiter: held long polls, deliveries and test helpers.
    pub(super) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl TelegramStandIn {
    /// Every message the bot sent, in order, as sent.
    pub fn sent(&self, token: &str) -> Vec<SentMessage> {
        self.read(token, |bot| bot.sent.clone())
    }

    /// The messages of one chat as they stand, edits applied, oldest first.
    pub fn chat(&self, token: &str, chat_id: i64) -> Vec<ChatMessage> {
        self.read(token, |bot| {
            bot.chats
                .get(&chat_id)
                .map(|c| c.messages.values().map(public_message).collect())
                .unwrap_or_default()
        })
    }

    /// How many calls of `method` (any spelling) the bot made.
    pub fn calls(&self, token: &str, method: &str) -> usize {
        self.read(token, |bot| {
            bot.calls
                .iter()
                .filter(|c| c.method.eq_ignore_ascii_case(method))
                .count()
        })
    }

    /// Every call the bot made, in order.
    pub fn requests(&self, token: &str) -> Vec<Call> {
        self.read(token, |bot| bot.calls.clone())
    }

    /// The default-scope command menu without a language (empty if none).
    pub fn commands(&self, token: &str) -> Vec<Command> {
        self.commands_for(token, &json!({ "type": "default" }), None)
            .unwrap_or_default()
    }

    /// The command menu set for one `scope` (a `BotCommandScope` object) and
    /// language, if one was set.
    pub fn commands_for(
        &self,
        token: &str,
        scope: &Value,
        language_code: Option<&str>,
    ) -> Option<Vec<Command>> {
        let language = language_code.unwrap_or("").to_owned();
        self.read(token, |bot| {
            bot.commands
                .iter()
                .find(|(s, l, _)| s == scope && *l == language)
                .map(|(_, _, c)| c.clone())
        })
    }

    /// The bot's webhook, if one is set.
    pub fn webhook(&self, token: &str) -> Option<Webhook> {
        self.read(token, |bot| bot.webhook.clone())
    }

    /// Every attempt to deliver an update to the bot's webhook.
    pub fn deliveries(&self, token: &str) -> Vec<WebhookDelivery> {
        self.read(token, |bot| bot.deliveries.clone())
    }

    /// Updates queued and not yet confirmed (or delivered to a webhook).
    pub fn pending_updates(&self, token: &str) -> usize {
        self.read(token, |bot| bot.updates.len())
    }

    /// The `file_path`s the bot downloaded, in order.
    pub fn downloads(&self, token: &str) -> Vec<String> {
        self.read(token, |bot| bot.downloads.clone())
    }

    /// Waits until `check` holds (at most `limit`); true if it does. `check`
    /// runs now and after every change to the stand-in's state.
    pub async fn wait_until(&self, limit: Duration, mut check: impl FnMut(&Self) -> bool) -> bool {
        self.wait_for(limit, |s| check(s).then_some(()))
            .await
            .is_some()
    }

    /// Waits until `check` gives a value (at most `limit`).
    pub async fn wait_for<T>(
        &self,
        limit: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changed = self.shared.changed.subscribe();
        loop {
            if let Some(value) = check(self) {
                return Some(value);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return check(self),
            }
        }
    }

    /// Waits for a sent message that matches (at most `limit`); the first
    /// match among all the bot sent, including before the call.
    pub async fn wait_sent(
        &self,
        token: &str,
        limit: Duration,
        matches: impl Fn(&SentMessage) -> bool,
    ) -> Option<SentMessage> {
        self.wait_for(limit, |s| s.sent(token).into_iter().find(|m| matches(m)))
            .await
    }

    /// Waits until the bot made `count` calls of `method` (at most `limit`).
    pub async fn wait_calls(
        &self,
        token: &str,
        method: &str,
        count: usize,
        limit: Duration,
    ) -> bool {
        self.wait_until(limit, |s| s.calls(token, method) >= count)
            .await
    }

    /// Waits until no update waits for confirmation or delivery.
    pub async fn wait_consumed(&self, token: &str, limit: Duration) -> bool {
        self.wait_until(limit, |s| s.pending_updates(token) == 0)
            .await
    }
}

fn public_message(m: &Msg) -> ChatMessage {
    ChatMessage {
        message_id: m.id,
        author: m.author,
        kind: m.kind,
        text: m.text.clone(),
        history: m.history.clone(),
        reply_to: m.reply_to,
        file_id: m.file_id.clone(),
    }
}

pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
