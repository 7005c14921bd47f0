//! What the running stand-in holds (bots, sessions, interactions, messages,
//! files, calls), shared by its routes and its handle, and how a test reads
//! it and waits for it to change without polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::gateway::newest_session;
use super::monetization::Monetization;
use super::types::{
    Call, DiscordBot, DiscordOptions, GatewayConnection, InteractionRecord, MessageRecord,
};
use super::{DiscordStandIn, DISCORD_EPOCH_MS};

pub(super) enum Outgoing {
    Text(String),
    Close(u16, &'static str),
}

pub(super) struct BotState {
    pub(super) bot: DiscordBot,
    pub(super) key: SigningKey,
    pub(super) identifies: u64,
    pub(super) resumes: u64,
    pub(super) heartbeats: u64,
}

pub(super) struct Session {
    pub(super) token: String,
    pub(super) seq: u64,
    pub(super) events: Vec<(u64, String)>,
    pub(super) conn: Option<(u64, mpsc::UnboundedSender<Outgoing>)>,
    pub(super) started: Instant,
}

pub(super) struct Interaction {
    pub(super) record: InteractionRecord,
    pub(super) dispatched: Instant,
    pub(super) guild_id: Option<u64>,
    pub(super) user: Value,
}

pub(super) struct Injection {
    pub(super) route: String,
    pub(super) times: usize,
    pub(super) retry_after: f64,
}

pub(super) struct Stored {
    pub(super) bytes: Bytes,
    pub(super) content_type: Option<String>,
    pub(super) downloads: usize,
}

#[derive(Default)]
pub(super) struct Records {
    pub(super) bots: HashMap<String, BotState>,
    /// (application, guild) → commands, in order.
    pub(super) commands: HashMap<(u64, Option<u64>), Vec<Value>>,
    pub(super) sessions: HashMap<String, Session>,
    pub(super) interactions: HashMap<u64, Interaction>,
    pub(super) by_token: HashMap<String, u64>,
    pub(super) channel_messages: HashMap<u64, Vec<MessageRecord>>,
    pub(super) dm_channels: HashMap<u64, u64>,
    /// Channels where the bots may not post: the refusal's code (50001
    /// Missing Access, 50013 Missing Permissions).
    pub(super) refused_channels: HashMap<u64, u64>,
    /// Users who take no direct messages from the bots.
    pub(super) closed_dms: std::collections::HashSet<u64>,
    /// Guild channels marked age-restricted (`nsfw` in their channel object).
    pub(super) nsfw_channels: std::collections::HashSet<u64>,
    pub(super) files: HashMap<u64, Stored>,
    pub(super) calls: Vec<Call>,
    pub(super) injections: Vec<Injection>,
    pub(super) windows: HashMap<String, (Instant, u32)>,
    pub(super) connections: Vec<GatewayConnection>,
    pub(super) monetization: Monetization,
}

pub(super) struct Shared {
    pub(super) options: DiscordOptions,
    pub(super) base: String,
    pub(super) port: u16,
    pub(super) state: Mutex<Records>,
    pub(super) changes: watch::Sender<u64>,
    pub(super) last_id: AtomicU64,
    pub(super) next_conn: AtomicU64,
    pub(super) http: reqwest::Client,
    /// The guild's attachment size limit now (it starts at the options'
    /// and changes as a guild gains or loses boosts).
    pub(super) attachment_size_limit: AtomicU64,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Records> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn attachment_size_limit(&self) -> u64 {
        self.attachment_size_limit
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// A fresh snowflake: milliseconds since Discord's epoch, then worker
    /// and increment bits; strictly increasing.
    pub(super) fn snowflake(&self) -> u64 {
        let ms = unix_ms().saturating_sub(DISCORD_EPOCH_MS);
        let candidate = (ms << 22) | (1 << 17);
        let mut last = self.last_id.load(Ordering::SeqCst);
        loop {
            let next = candidate.max(last + 1);
            match self
                .last_id
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    pub(super) fn file_url(&self, channel_id: u64, id: u64, filename: &str) -> String {
        let hm = hex::encode(id.to_le_bytes());
        format!(
            "{}/attachments/{channel_id}/{id}/{filename}?ex={:x}&is={:x}&hm={hm}",
            self.base,
            unix_ms() / 1000 + 86_400,
            unix_ms() / 1000
        )
    }
}

impl DiscordStandIn {
    /// What became of an interaction.
    pub fn interaction(&self, id: u64) -> Option<InteractionRecord> {
        self.shared
            .lock()
            .interactions
            .get(&id)
            .map(|i| i.record.clone())
    }

    /// Messages the bots posted to a channel (not interaction responses).
    pub fn channel_messages(&self, channel_id: u64) -> Vec<MessageRecord> {
        self.shared
            .lock()
            .channel_messages
            .get(&channel_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The application's global commands, as `GET` returns them.
    pub fn commands(&self, application_id: u64) -> Vec<Value> {
        self.shared
            .lock()
            .commands
            .get(&(application_id, None))
            .cloned()
            .unwrap_or_default()
    }

    /// The names of the application's global commands.
    pub fn command_names(&self, application_id: u64) -> Vec<String> {
        self.commands(application_id)
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// REST calls whose `"METHOD /api/v10/path"` contains `route`.
    pub fn calls(&self, route: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| format!("{} {}", c.method, c.path).contains(route))
            .cloned()
            .collect()
    }

    pub fn identifies(&self, token: &str) -> u64 {
        self.counter(token, |b| b.identifies)
    }

    pub fn resumes(&self, token: &str) -> u64 {
        self.counter(token, |b| b.resumes)
    }

    pub fn heartbeats(&self, token: &str) -> u64 {
        self.counter(token, |b| b.heartbeats)
    }

    /// Every gateway connection, in order.
    pub fn gateway_connections(&self) -> Vec<GatewayConnection> {
        self.shared.lock().connections.clone()
    }

    /// Times a served attachment was downloaded.
    pub fn downloads(&self, attachment_id: u64) -> usize {
        self.shared
            .lock()
            .files
            .get(&attachment_id)
            .map_or(0, |f| f.downloads)
    }

    /// Whether the bot has a live, identified gateway connection.
    pub fn connected(&self, token: &str) -> bool {
        newest_session(&self.shared.lock(), strip_bot(token), true).is_some()
    }

    /// Waits (at most `limit`) until `check` finds something in the state.
    async fn wait<T>(
        &self,
        limit: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changes.borrow_and_update();
            if let Some(found) = check(self) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return check(self),
            }
        }
    }

    /// Waits until the bot has a live, identified gateway connection.
    pub async fn wait_connected(&self, token: &str, limit: Duration) -> bool {
        self.wait(limit, |s| s.connected(token).then_some(()))
            .await
            .is_some()
    }

    /// Waits until the application has global commands; returns them.
    pub async fn wait_commands(&self, application_id: u64, limit: Duration) -> Vec<Value> {
        self.wait(limit, |s| {
            let commands = s.commands(application_id);
            (!commands.is_empty()).then_some(commands)
        })
        .await
        .unwrap_or_default()
    }

    /// Waits until the interaction's record satisfies `done`.
    pub async fn wait_interaction(
        &self,
        id: u64,
        limit: Duration,
        done: impl Fn(&InteractionRecord) -> bool,
    ) -> Option<InteractionRecord> {
        self.wait(limit, |s| s.interaction(id).filter(|r| done(r)))
            .await
    }

    /// Waits until the interaction has `n` follow-ups.
    pub async fn wait_followups(
        &self,
        id: u64,
        n: usize,
        limit: Duration,
    ) -> Option<InteractionRecord> {
        self.wait_interaction(id, limit, |r| r.followups.len() >= n)
            .await
    }

    /// Waits until the channel has `n` messages from bots.
    pub async fn wait_channel_messages(
        &self,
        channel_id: u64,
        n: usize,
        limit: Duration,
    ) -> Vec<MessageRecord> {
        self.wait(limit, |s| {
            let messages = s.channel_messages(channel_id);
            (messages.len() >= n).then_some(messages)
        })
        .await
        .unwrap_or_else(|| self.channel_messages(channel_id))
    }

    /// Waits until the bot resumed `n` times.
    pub async fn wait_resumes(&self, token: &str, n: u64, limit: Duration) -> bool {
        self.wait(limit, |s| (s.resumes(token) >= n).then_some(()))
            .await
            .is_some()
    }

    /// Waits until the bot sent `n` heartbeats.
    pub async fn wait_heartbeats(&self, token: &str, n: u64, limit: Duration) -> bool {
        self.wait(limit, |s| (s.heartbeats(token) >= n).then_some(()))
            .await
            .is_some()
    }

    pub(super) fn bot(&self, token: &str) -> DiscordBot {
        self.shared
            .lock()
            .bots
            .get(token)
            .unwrap_or_else(|| panic!("unknown bot token {token:?}"))
            .bot
            .clone()
    }

    fn counter(&self, token: &str, f: impl Fn(&BotState) -> u64) -> u64 {
        self.shared.lock().bots.get(strip_bot(token)).map_or(0, f)
    }
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn strip_bot(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}
