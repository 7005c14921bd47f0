//! A Discord stand-in: the v10 REST routes a slash-command bot uses, the
//! gateway, simulated users, and HTTP interactions with signed requests.
//!
//! It follows Discord's developer documentation (Gateway; Opcodes and
//! Status Codes; Application Commands; Receiving and Responding to
//! Interactions; Message and Webhook resources; Rate Limits):
//!
//! - REST lives under `/api/v10`, for clients that address it as a plain
//!   HTTP proxy (twilight-http's `ClientBuilder::proxy(addr, true)`). Routes
//!   that need a bot answer `401 {"message": "401: Unauthorized", "code": 0}`
//!   without `Authorization: Bot <token>` of a known bot. Snowflakes are
//!   strings and carry the time they were made. Every answer carries
//!   `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After` and
//!   `-Bucket`; a route over its limit (per method and path, see
//!   [`DiscordOptions::route_limit`]) and every injected limit
//!   ([`DiscordStandIn::rate_limit`]) get `429 {"message": "You are being
//!   rate limited.", "retry_after", "global": false}` with `Retry-After` and
//!   `X-RateLimit-Scope: user`.
//! - Invalid bodies get the form-error envelope `400 {"code": 50035,
//!   "message": "Invalid Form Body", "errors": {path: {"_errors": [...]}}}`:
//!   command names that are not 1-32 lowercase letters, digits, `-`, `_` or
//!   `'`, descriptions outside 1-100 characters, more than 25 options or
//!   choices, required options after optional ones, message content over
//!   2000 characters, more than 10 embeds or files, embeds over their field
//!   limits or 6000 characters in all. A message with nothing in it gets
//!   `400 {"code": 50006, "message": "Cannot send an empty message"}`; a file
//!   over the interaction's `attachment_size_limit` gets `413` code 40005.
//! - An interaction must be answered once (`POST /interactions/{id}/{token}/
//!   callback`, types 4, 5 or 9 for a command; 1 only for a PING) within
//!   [`DiscordOptions::ack_deadline`] (3 s) of its dispatch; a late or
//!   unknown one gets `404` code 10062 "Unknown interaction", a second one
//!   `400` code 40060 "Interaction has already been acknowledged.". Its token
//!   then works on `/webhooks/{application}/{token}` for
//!   [`DiscordOptions::token_lifetime`] (15 minutes, then `401` code 50027
//!   "Invalid Webhook Token"): `@original` exists once the interaction is
//!   acknowledged (a deferred one is an empty message flagged LOADING until
//!   its first edit; before that `404` code 10008 "Unknown Message"), and
//!   follow-ups before it get `404` code 10015 "Unknown Webhook".
//!   Follow-ups answer with the message, as if `wait=true`.
//! - Bodies are JSON or `multipart/form-data` with a `payload_json` part and
//!   `files[n]` parts, which `attachments[].id` refer to by `n`. Files keep
//!   their bytes; a part without a `Content-Type` gets one from its file
//!   name's extension, as Discord infers it. Every attachment, the bot's and
//!   the simulated users', is served at a CDN-shaped URL on the stand-in.
//! - The gateway is a WebSocket at `/gateway` (and `/gateway/`, where
//!   clients append `/?v=10&encoding=json`); it speaks uncompressed JSON only
//!   and refuses `compress` or another `encoding` with a plain `400` before
//!   the upgrade. It sends HELLO (op 10) and expects IDENTIFY (op 2), which
//!   gets READY (op 0, `s` = 1) whose `resume_gateway_url` is
//!   `ws://127.0.0.1:PORT/gateway-resume` (also on the stand-in, so a test
//!   sees which URL a client resumed on), or RESUME (op 6), which replays the
//!   dispatches after the client's sequence and then sends RESUMED (an
//!   unknown session gets INVALID_SESSION, op 9, `false`). HEARTBEAT (op 1)
//!   gets HEARTBEAT_ACK (op 11). Close codes: 4001 unknown opcode, 4002
//!   payload that does not decode (or is over 4096 bytes), 4003 a command
//!   before identifying, 4004 bad token, 4005 a second IDENTIFY, 4009 no
//!   heartbeat for two intervals (plus two seconds), 4012 `v` other than 10,
//!   4010 a `shard` whose ID is not below its count, 4013 undefined intent
//!   bits, 4014 privileged intents the bot was not granted
//!   ([`DiscordBot::privileged_intents`]).
//! - Users are simulated: [`DiscordStandIn::slash`] and
//!   [`DiscordStandIn::invoke`] dispatch `INTERACTION_CREATE` (type 2) with a
//!   full interaction object to the bot's newest gateway session (buffered
//!   for a resume while it is away); [`DiscordStandIn::post_interaction`]
//!   POSTs one to a bot's HTTP interactions endpoint signed with the bot's
//!   Ed25519 key (`X-Signature-Ed25519` over timestamp + body,
//!   `X-Signature-Timestamp`), and takes a callback from the answer's body.
//!
//! The stand-in records every REST call, interaction, message and gateway
//! connection, lets a test wait for them without polling, and stops when
//! dropped. It models one shard, no guild state beyond what interactions
//! carry, and no gateway events other than READY, RESUMED and
//! INTERACTION_CREATE.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::openai::{read_form, FormField};

/// Discord's epoch (2015-01-01), in Unix milliseconds.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
/// The guild simulated users invoke commands in unless told otherwise.
pub const DEFAULT_GUILD_ID: u64 = 1_100_000_000_000_000_001;

/// Message flag: only the invoking user sees it.
pub const FLAG_EPHEMERAL: u64 = 1 << 6;
/// Message flag: a deferred response not edited yet.
pub const FLAG_LOADING: u64 = 1 << 7;

const INTENT_GUILD_MEMBERS: u64 = 1 << 1;
const INTENT_GUILD_PRESENCES: u64 = 1 << 8;
const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;
/// Every privileged intent.
pub const PRIVILEGED_INTENTS: u64 =
    INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT;
/// Every intent bit Discord defines (0-16, 20-21, 24-25).
const DEFINED_INTENTS: u64 = 0x1_FFFF | (1 << 20) | (1 << 21) | (1 << 24) | (1 << 25);

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct DiscordOptions {
    /// The heartbeat interval HELLO announces (Discord's is 41.25 s).
    pub heartbeat_interval: Duration,
    /// Time from dispatch within which an interaction must be answered.
    pub ack_deadline: Duration,
    /// How long an interaction token works on the webhook routes.
    pub token_lifetime: Duration,
    /// Largest file, in bytes, a message may carry; also each interaction's
    /// `attachment_size_limit` (Discord's default is 10 MiB).
    pub attachment_size_limit: u64,
    /// Requests per window each method and path may make before a 429.
    pub route_limit: u32,
    /// The window of [`Self::route_limit`].
    pub route_window: Duration,
}

impl Default for DiscordOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(41_250),
            ack_deadline: Duration::from_secs(3),
            token_lifetime: Duration::from_secs(15 * 60),
            attachment_size_limit: 10 * 1024 * 1024,
            route_limit: 5,
            route_window: Duration::from_secs(1),
        }
    }
}

/// A bot (application) the stand-in knows.
#[derive(Clone, Debug)]
pub struct DiscordBot {
    /// The bot token, without the `Bot ` prefix.
    pub token: String,
    /// The application's ID, which is also the bot user's.
    pub application_id: u64,
    pub username: String,
    /// Privileged intents (`PRIVILEGED_INTENTS` bits) enabled for it.
    pub privileged_intents: u64,
    /// Its HTTP interactions endpoint, reported by `GET /applications/@me`.
    pub interactions_endpoint_url: Option<String>,
}

impl DiscordBot {
    pub fn new(token: &str, application_id: u64, username: &str) -> Self {
        Self {
            token: strip_bot(token).to_owned(),
            application_id,
            username: username.to_owned(),
            privileged_intents: 0,
            interactions_endpoint_url: None,
        }
    }
}

/// A file a simulated user attaches to a command option.
#[derive(Clone, Debug)]
pub struct UserAttachment {
    /// The command option (type 11, ATTACHMENT) it is given for.
    pub option: String,
    pub bytes: Bytes,
    pub filename: String,
    pub content_type: String,
}

/// A slash command a simulated user runs.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub command: String,
    /// Either Discord's option array (`[{"name", "type", "value"}]`, passed
    /// through) or an object of name → value, typed from the registered
    /// command (or from the JSON type: string 3, integer 4, boolean 5,
    /// number 10).
    pub options: Value,
    pub channel_id: u64,
    pub user_id: u64,
    pub username: String,
    /// `None`: the bot's DM with the user.
    pub guild_id: Option<u64>,
    pub locale: String,
    pub attachments: Vec<UserAttachment>,
}

impl Invocation {
    pub fn new(channel_id: u64, user_id: u64, command: &str) -> Self {
        Self {
            command: command.to_owned(),
            options: json!([]),
            channel_id,
            user_id,
            username: format!("user{}", user_id % 10_000),
            guild_id: Some(DEFAULT_GUILD_ID),
            locale: "en-US".into(),
            attachments: Vec::new(),
        }
    }

    pub fn options(mut self, options: Value) -> Self {
        self.options = options;
        self
    }

    /// Runs it in the user's DM with the bot.
    pub fn dm(mut self) -> Self {
        self.guild_id = None;
        self
    }

    pub fn username(mut self, username: &str) -> Self {
        self.username = username.to_owned();
        self
    }

    pub fn attachment(
        mut self,
        option: &str,
        bytes: impl Into<Bytes>,
        filename: &str,
        content_type: &str,
    ) -> Self {
        self.attachments.push(UserAttachment {
            option: option.to_owned(),
            bytes: bytes.into(),
            filename: filename.to_owned(),
            content_type: content_type.to_owned(),
        });
        self
    }
}

/// An interaction the stand-in sent.
#[derive(Clone, Debug)]
pub struct SentInteraction {
    pub id: u64,
    pub token: String,
    pub application_id: u64,
    /// The interaction object as sent.
    pub payload: Value,
}

/// A file in a message, or one a user attached.
#[derive(Clone, Debug)]
pub struct FileRecord {
    pub id: u64,
    pub filename: String,
    /// The effective content type (the part's, or inferred from the name).
    pub content_type: Option<String>,
    /// The `Content-Type` of the multipart part, if it had one.
    pub part_content_type: Option<String>,
    pub description: Option<String>,
    pub bytes: Bytes,
    pub url: String,
}

/// A message as the stand-in holds it.
#[derive(Clone, Debug)]
pub struct MessageRecord {
    pub id: u64,
    pub channel_id: u64,
    pub content: String,
    pub embeds: Vec<Value>,
    pub components: Vec<Value>,
    pub attachments: Vec<FileRecord>,
    pub flags: u64,
    /// Successful edits.
    pub edits: usize,
    /// The content when created and after each edit.
    pub history: Vec<String>,
    pub deleted: bool,
}

impl MessageRecord {
    pub fn ephemeral(&self) -> bool {
        self.flags & FLAG_EPHEMERAL != 0
    }

    pub fn loading(&self) -> bool {
        self.flags & FLAG_LOADING != 0
    }
}

/// The initial response to an interaction.
#[derive(Clone, Debug)]
pub struct CallbackRecord {
    /// 1 PONG, 4 CHANNEL_MESSAGE_WITH_SOURCE, 5 DEFERRED_..., 9 MODAL.
    pub kind: u64,
    pub data: Value,
    /// Time from dispatch to the callback.
    pub after: Duration,
    /// Whether it came in the body of an HTTP interactions answer.
    pub via_http_answer: bool,
}

/// A request about an interaction that the stand-in refused.
#[derive(Clone, Debug)]
pub struct Rejection {
    pub route: String,
    pub status: u16,
    pub code: u64,
}

/// What became of one interaction.
#[derive(Clone, Debug)]
pub struct InteractionRecord {
    pub id: u64,
    pub token: String,
    pub application_id: u64,
    /// 1 PING, 2 APPLICATION_COMMAND.
    pub kind: u64,
    pub command: Option<String>,
    pub channel_id: Option<u64>,
    pub user_id: Option<u64>,
    pub callback: Option<CallbackRecord>,
    pub original: Option<MessageRecord>,
    pub followups: Vec<MessageRecord>,
    pub rejected: Vec<Rejection>,
}

impl InteractionRecord {
    pub fn callback_type(&self) -> Option<u64> {
        self.callback.as_ref().map(|c| c.kind)
    }

    pub fn acknowledged(&self) -> bool {
        self.callback.is_some()
    }

    /// The original response's content now.
    pub fn original_content(&self) -> Option<&str> {
        self.original.as_ref().map(|m| m.content.as_str())
    }
}

/// One REST request.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// The path, `/api/v10/...`.
    pub path: String,
    pub query: Option<String>,
    /// The authenticated bot's token, if any.
    pub bot: Option<String>,
    /// The JSON body, or a multipart body's `payload_json`.
    pub json: Option<Value>,
    /// A multipart body's parts.
    pub form: Vec<FormField>,
    /// The status answered (0 while in flight).
    pub status: u16,
}

/// One WebSocket connection to the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConnection {
    /// `/gateway/` or `/gateway-resume/` (or without the slash).
    pub path: String,
    pub query: String,
    /// The bot it identified or resumed as.
    pub token: Option<String>,
    /// Intents of its IDENTIFY.
    pub intents: Option<u64>,
    /// The close code the stand-in sent, if it closed it.
    pub closed_with: Option<u16>,
}

/// How [`DiscordStandIn::drop_connection`] ends a gateway connection.
#[derive(Clone, Copy, Debug)]
pub enum GatewayDrop {
    /// A close frame with this code (4000 lets the client resume).
    Close(u16),
    /// Op 7 RECONNECT; the client closes and resumes.
    Reconnect,
    /// Op 9 INVALID_SESSION; `false` also forgets the session.
    InvalidSession { resumable: bool },
}

/// How [`DiscordStandIn::post_signed`] signs a request.
#[derive(Clone, Copy, Debug)]
pub enum Signing {
    /// The bot's key, over timestamp + body.
    Valid,
    /// Another key.
    WrongKey,
    /// The bot's key, over another body.
    OtherBody,
    /// No signature headers.
    Missing,
}

/// The answer of a bot's HTTP interactions endpoint.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// `None` when it did not answer within the ack deadline.
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub elapsed: Duration,
    /// The interaction posted, if it was one the stand-in made.
    pub interaction: Option<SentInteraction>,
}

impl HttpAnswer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

enum Outgoing {
    Text(String),
    Close(u16, &'static str),
}

struct BotState {
    bot: DiscordBot,
    key: SigningKey,
    identifies: u64,
    resumes: u64,
    heartbeats: u64,
}

struct Session {
    token: String,
    seq: u64,
    events: Vec<(u64, String)>,
    conn: Option<(u64, mpsc::UnboundedSender<Outgoing>)>,
    started: Instant,
}

struct Interaction {
    record: InteractionRecord,
    dispatched: Instant,
    guild_id: Option<u64>,
    user: Value,
}

struct Injection {
    route: String,
    times: usize,
    retry_after: f64,
}

struct Stored {
    bytes: Bytes,
    content_type: Option<String>,
    downloads: usize,
}

#[derive(Default)]
struct Records {
    bots: HashMap<String, BotState>,
    /// (application, guild) → commands, in order.
    commands: HashMap<(u64, Option<u64>), Vec<Value>>,
    sessions: HashMap<String, Session>,
    interactions: HashMap<u64, Interaction>,
    by_token: HashMap<String, u64>,
    channel_messages: HashMap<u64, Vec<MessageRecord>>,
    dm_channels: HashMap<u64, u64>,
    files: HashMap<u64, Stored>,
    calls: Vec<Call>,
    injections: Vec<Injection>,
    windows: HashMap<String, (Instant, u32)>,
    connections: Vec<GatewayConnection>,
}

struct Shared {
    options: DiscordOptions,
    base: String,
    port: u16,
    state: Mutex<Records>,
    changes: watch::Sender<u64>,
    last_id: AtomicU64,
    next_conn: AtomicU64,
    http: reqwest::Client,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// A fresh snowflake: milliseconds since Discord's epoch, then worker
    /// and increment bits; strictly increasing.
    fn snowflake(&self) -> u64 {
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

    fn file_url(&self, channel_id: u64, id: u64, filename: &str) -> String {
        let hm = hex::encode(id.to_le_bytes());
        format!(
            "{}/attachments/{channel_id}/{id}/{filename}?ex={:x}&is={:x}&hm={hm}",
            self.base,
            unix_ms() / 1000 + 86_400,
            unix_ms() / 1000
        )
    }
}

/// A running Discord stand-in; stops when dropped.
pub struct DiscordStandIn {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl DiscordStandIn {
    pub async fn start() -> Self {
        Self::start_with(DiscordOptions::default()).await
    }

    pub async fn start_with(options: DiscordOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            options,
            base: format!("http://{addr}"),
            port: addr.port(),
            state: Mutex::new(Records::default()),
            changes: watch::channel(0).0,
            last_id: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            http: reqwest::Client::new(),
        });
        let api = Router::new()
            .route("/users/@me", get(current_user))
            .route("/users/@me/channels", post(create_dm))
            .route("/applications/@me", get(current_application))
            .route("/gateway", get(gateway_info))
            .route("/gateway/bot", get(gateway_bot))
            .route(
                "/applications/{app}/commands",
                put(put_commands).get(get_commands).post(post_command),
            )
            .route(
                "/applications/{app}/commands/{id}",
                get(get_command).delete(delete_command),
            )
            .route(
                "/applications/{app}/guilds/{guild}/commands",
                put(put_guild_commands).get(get_guild_commands),
            )
            .route("/interactions/{id}/{token}/callback", post(callback))
            .route("/webhooks/{app}/{token}", post(followup))
            .route(
                "/webhooks/{app}/{token}/messages/{message}",
                get(get_webhook_message)
                    .patch(edit_webhook_message)
                    .delete(delete_webhook_message),
            )
            .route("/channels/{id}/messages", post(channel_message))
            .route(
                "/channels/{id}/messages/{message}",
                patch(edit_channel_message),
            )
            .route("/channels/{id}/typing", post(typing))
            .fallback(|| async { error(StatusCode::NOT_FOUND, 0, "404: Not Found") })
            .method_not_allowed_fallback(|| async {
                error(StatusCode::METHOD_NOT_ALLOWED, 0, "405: Method Not Allowed")
            })
            .layer(axum::middleware::from_fn_with_state(
                shared.clone(),
                rest_layer,
            ));
        let app = Router::new()
            .nest("/api/v10", api)
            .route("/gateway", get(gateway))
            .route("/gateway/", get(gateway))
            .route("/gateway-resume", get(gateway))
            .route("/gateway-resume/", get(gateway))
            .route("/attachments/{channel}/{id}/{filename}", get(attachment))
            .fallback(|| async { error(StatusCode::NOT_FOUND, 0, "404: Not Found") })
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// `127.0.0.1:PORT`, for `twilight_http::client::ClientBuilder::proxy(_, true)`.
    pub fn rest_proxy(&self) -> String {
        format!("127.0.0.1:{}", self.shared.port)
    }

    /// `ws://127.0.0.1:PORT/gateway`, for twilight-gateway's `proxy_url`.
    pub fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}/gateway", self.shared.port)
    }

    /// The `resume_gateway_url` READY hands out.
    pub fn resume_gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}/gateway-resume", self.shared.port)
    }

    pub fn options(&self) -> &DiscordOptions {
        &self.shared.options
    }

    /// Adds a bot with no privileged intents and no HTTP endpoint.
    pub fn add_bot(&self, token: &str, application_id: u64, username: &str) {
        self.add(DiscordBot::new(token, application_id, username));
    }

    pub fn add(&self, bot: DiscordBot) {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        self.shared.lock().bots.insert(
            bot.token.clone(),
            BotState {
                bot,
                key,
                identifies: 0,
                resumes: 0,
                heartbeats: 0,
            },
        );
    }

    /// The bot's Ed25519 public key, hex, as the developer portal shows it.
    pub fn public_key_hex(&self, token: &str) -> String {
        let state = self.shared.lock();
        let bot = state.bots.get(strip_bot(token)).expect("a known bot");
        hex::encode(bot.key.verifying_key().to_bytes())
    }

    // ----- failure injection -----

    /// The next `times` REST requests whose `"METHOD /api/v10/path"`
    /// contains `route` get a 429 asking to retry after `retry_after_secs`.
    pub fn rate_limit(&self, route: &str, times: usize, retry_after_secs: f64) {
        self.shared.lock().injections.push(Injection {
            route: route.to_owned(),
            times,
            retry_after: retry_after_secs,
        });
    }

    /// Ends the bot's newest live gateway connection with close code 4000
    /// (resumable); false if it had none.
    pub fn disconnect(&self, token: &str) -> bool {
        self.drop_connection(token, GatewayDrop::Close(4000))
    }

    /// Ends the bot's newest live gateway connection as told.
    pub fn drop_connection(&self, token: &str, how: GatewayDrop) -> bool {
        let token = strip_bot(token);
        let mut state = self.shared.lock();
        let Some((session_id, _)) = newest_session(&state, token, true) else {
            return false;
        };
        let session = state.sessions.get_mut(&session_id).expect("session");
        let (_, tx) = session.conn.clone().expect("live");
        match how {
            GatewayDrop::Close(code) => {
                session.conn = None;
                let _ = tx.send(Outgoing::Close(code, "Disconnected by the stand-in"));
            }
            GatewayDrop::Reconnect => {
                let _ = tx.send(Outgoing::Text(op(7, Value::Null)));
            }
            GatewayDrop::InvalidSession { resumable } => {
                if !resumable {
                    state.sessions.remove(&session_id);
                }
                let _ = tx.send(Outgoing::Text(op(9, json!(resumable))));
            }
        }
        true
    }

    // ----- simulated users -----

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

    /// POSTs the interaction for `invocation`, signed, to a bot's HTTP
    /// interactions endpoint, and takes a callback from its answer.
    pub async fn post_interaction(
        &self,
        endpoint_url: &str,
        token: &str,
        invocation: Invocation,
    ) -> HttpAnswer {
        let token = strip_bot(token);
        let sent = self.make_interaction(token, &invocation);
        let mut answer = self
            .post_signed(endpoint_url, token, &sent.payload, Signing::Valid)
            .await;
        if answer.status == Some(200) {
            if let Some(body) = answer.json() {
                if let Some(kind) = body.get("type").and_then(Value::as_u64) {
                    let data = body.get("data").cloned().unwrap_or(Value::Null);
                    let payload = Payload {
                        json: data,
                        files: Vec::new(),
                    };
                    let _ = apply_callback(
                        &self.shared,
                        sent.id,
                        &sent.token,
                        kind,
                        payload,
                        true,
                        "HTTP answer",
                    );
                }
            }
        }
        answer.interaction = Some(sent);
        answer
    }

    /// POSTs a PING (type 1), signed, to a bot's HTTP interactions endpoint.
    pub async fn ping(&self, endpoint_url: &str, token: &str) -> HttpAnswer {
        let token = strip_bot(token);
        let application_id = self.bot(token).application_id;
        let id = self.shared.snowflake();
        let itoken = interaction_token(id);
        let payload = json!({
            "id": id.to_string(),
            "application_id": application_id.to_string(),
            "type": 1,
            "token": itoken,
            "version": 1,
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": self.shared.options.attachment_size_limit,
            "user": null,
        });
        self.register_interaction(
            id,
            &itoken,
            application_id,
            1,
            None,
            None,
            None,
            json!(null),
        );
        let mut answer = self
            .post_signed(endpoint_url, token, &payload, Signing::Valid)
            .await;
        answer.interaction = Some(SentInteraction {
            id,
            token: itoken,
            application_id,
            payload,
        });
        answer
    }

    /// POSTs `body` to a bot's HTTP interactions endpoint, signed as told.
    pub async fn post_signed(
        &self,
        endpoint_url: &str,
        token: &str,
        body: &Value,
        signing: Signing,
    ) -> HttpAnswer {
        let token = strip_bot(token);
        let body = serde_json::to_vec(body).expect("JSON");
        let timestamp = (unix_ms() / 1000).to_string();
        let key = self.shared.lock().bots[token].key.clone();
        let signed = |key: &SigningKey, body: &[u8]| {
            let mut message = timestamp.as_bytes().to_vec();
            message.extend_from_slice(body);
            hex::encode(key.sign(&message).to_bytes())
        };
        let signature = match signing {
            Signing::Valid => Some(signed(&key, &body)),
            Signing::WrongKey => Some(signed(
                &SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
                &body,
            )),
            Signing::OtherBody => Some(signed(&key, b"{\"type\":1}")),
            Signing::Missing => None,
        };
        let mut request = self
            .shared
            .http
            .post(endpoint_url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                "Discord-Interactions/1.0 (+https://discord.com)",
            )
            .timeout(self.shared.options.ack_deadline)
            .body(body);
        if let Some(signature) = signature {
            request = request
                .header("X-Signature-Ed25519", signature)
                .header("X-Signature-Timestamp", &timestamp);
        }
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await.unwrap_or_default();
                HttpAnswer {
                    status: Some(status),
                    content_type,
                    body,
                    elapsed: started.elapsed(),
                    interaction: None,
                }
            }
            Err(_) => HttpAnswer {
                status: None,
                content_type: None,
                body: Bytes::new(),
                elapsed: started.elapsed(),
                interaction: None,
            },
        }
    }

    /// Checks an endpoint as the developer portal does before saving it: a
    /// signed PING must get 200 `{"type": 1}` and a badly signed one 401.
    pub async fn verify_endpoint(&self, endpoint_url: &str, token: &str) -> Result<(), String> {
        let answer = self.ping(endpoint_url, token).await;
        let pong = answer
            .json()
            .and_then(|b| b.get("type").and_then(Value::as_u64));
        if answer.status != Some(200) || pong != Some(1) {
            return Err(format!(
                "a signed PING got {:?} {:?}, not 200 {{\"type\": 1}}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        let bad = json!({"id": self.shared.snowflake().to_string(), "type": 1, "version": 1});
        for signing in [Signing::WrongKey, Signing::OtherBody] {
            let answer = self.post_signed(endpoint_url, token, &bad, signing).await;
            if answer.status != Some(401) {
                return Err(format!(
                    "a PING signed with {signing:?} got {:?}, not 401",
                    answer.status
                ));
            }
        }
        Ok(())
    }

    // ----- records -----

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

    // ----- waiting -----

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

    // ----- internals -----

    fn bot(&self, token: &str) -> DiscordBot {
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

    #[allow(clippy::too_many_arguments)]
    fn register_interaction(
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

    fn make_interaction(&self, token: &str, inv: &Invocation) -> SentInteraction {
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
            "entitlements": [],
            "attachment_size_limit": shared.options.attachment_size_limit,
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
                    "nsfw": false,
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

impl Drop for DiscordStandIn {
    fn drop(&mut self) {
        self.server.abort();
        // Close the live gateway connections so their tasks end too.
        let state = self.shared.lock();
        for session in state.sessions.values() {
            if let Some((_, tx)) = &session.conn {
                let _ = tx.send(Outgoing::Close(1001, "going away"));
            }
        }
    }
}

// ----- helpers -----

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn strip_bot(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}

fn interaction_token(id: u64) -> String {
    let random: [u8; 24] = rand::random();
    format!("aW50ZXJhY3Rpb246{id}:{}", hex::encode(random))
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    (status, Json(json!({ "message": message, "code": code }))).into_response()
}

fn form_error(errors: Value) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "code": 50035, "errors": errors, "message": "Invalid Form Body" })),
    )
        .into_response()
}

/// `{"a": {"0": {"b": {"_errors": [{code, message}]}}}}` for path `a.0.b`.
fn error_at(path: &[String], code: &str, message: &str) -> Value {
    let mut value = json!({ "_errors": [{ "code": code, "message": message }] });
    for key in path.iter().rev() {
        value = json!({ key.clone(): value });
    }
    value
}

/// Merges `b` into `a` (both error trees).
fn merge(a: &mut Value, b: Value) {
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

fn op(code: u8, d: Value) -> String {
    json!({ "op": code, "d": d, "s": null, "t": null }).to_string()
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized")
}

/// The bot a request authenticates as.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Option<DiscordBot> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bot ")?;
    shared.lock().bots.get(token).map(|b| b.bot.clone())
}

fn user_json(bot: &DiscordBot) -> Value {
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

fn current_user_json(bot: &DiscordBot) -> Value {
    let mut user = user_json(bot);
    user["mfa_enabled"] = json!(false);
    user["verified"] = json!(true);
    user["locale"] = json!("en-US");
    user["premium_type"] = json!(0);
    user["email"] = Value::Null;
    user
}

fn application_flags(bot: &DiscordBot) -> u64 {
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

/// The newest session of a bot (with a live connection, if `live`).
fn newest_session(state: &Records, token: &str, live: bool) -> Option<(String, Instant)> {
    state
        .sessions
        .iter()
        .filter(|(_, s)| s.token == token && (!live || s.conn.is_some()))
        .max_by_key(|(_, s)| s.started)
        .map(|(id, s)| (id.clone(), s.started))
}

/// Appends a dispatch to a session and sends it if it is connected.
fn dispatch(state: &mut Records, session_id: &str, t: &str, d: &Value) -> u64 {
    let session = state.sessions.get_mut(session_id).expect("session");
    session.seq += 1;
    let seq = session.seq;
    let text = json!({ "op": 0, "s": seq, "t": t, "d": d }).to_string();
    session.events.push((seq, text.clone()));
    if let Some((_, tx)) = &session.conn {
        let _ = tx.send(Outgoing::Text(text));
    }
    seq
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

// ----- the REST layer: records, limits, headers -----

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

async fn rest_layer(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
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

// ----- bodies -----

struct Payload {
    json: Value,
    files: Vec<Upload>,
}

struct Upload {
    /// `n` of `files[n]`.
    index: u64,
    filename: String,
    content_type: Option<String>,
    bytes: Bytes,
}

struct Parsed {
    json: Value,
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
async fn read_payload(request: Request) -> Result<Payload, Box<Response>> {
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

// ----- messages -----

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
fn build_message(
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
        .any(|f| f.bytes.len() as u64 > shared.options.attachment_size_limit)
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
    kind: u64,
    application_id: Option<u64>,
    /// The interaction's ID, user and guild.
    interaction: Option<(u64, &'a Value, Option<u64>)>,
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

fn interaction_message_json(shared: &Shared, id: u64, message: &MessageRecord) -> Value {
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

// ----- REST handlers -----

async fn current_user(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match authenticate(&shared, &headers) {
        Some(bot) => Json(current_user_json(&bot)).into_response(),
        None => unauthorized(),
    }
}

async fn create_dm(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
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

async fn current_application(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
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

async fn gateway_info(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "url": format!("ws://127.0.0.1:{}/gateway", shared.port) })).into_response()
}

async fn gateway_bot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
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
fn bot_for_app(
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

fn valid_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '\'')
        && name
            .chars()
            .all(|c| c.to_lowercase().eq(std::iter::once(c)))
}

fn check_len(errors: &mut Value, path: &[String], value: &Value, min: usize, max: usize) {
    let n = value.as_str().map(|s| s.chars().count());
    match n {
        None if min > 0 => merge(
            errors,
            error_at(path, "BASE_TYPE_REQUIRED", "This field is required"),
        ),
        Some(n) if n < min || n > max => merge(
            errors,
            error_at(
                path,
                "BASE_TYPE_BAD_LENGTH",
                &format!("Must be between {min} and {max} in length."),
            ),
        ),
        _ => {}
    }
}

fn check_options(errors: &mut Value, path: &[String], options: &Value, depth: usize) {
    let Some(options) = options.as_array() else {
        return;
    };
    if options.len() > 25 {
        merge(
            errors,
            error_at(
                path,
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            ),
        );
    }
    let mut seen_optional = false;
    let mut names = Vec::new();
    for (i, option) in options.iter().enumerate() {
        let at = |key: &str| {
            let mut p = path.to_vec();
            p.push(i.to_string());
            p.push(key.to_owned());
            p
        };
        let kind = option["type"].as_u64().unwrap_or(0);
        if !(1..=11).contains(&kind) || (depth >= 2 && kind <= 2) {
            merge(
                errors,
                error_at(
                    &at("type"),
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}.",
                ),
            );
        }
        check_len(errors, &at("name"), &option["name"], 1, 32);
        if let Some(name) = option["name"].as_str() {
            if !valid_name(name) {
                merge(
                    errors,
                    error_at(
                        &at("name"),
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    ),
                );
            }
            if names.contains(&name) {
                merge(
                    errors,
                    error_at(
                        &at("name"),
                        "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                        "Option name already exists",
                    ),
                );
            }
            names.push(name);
        }
        check_len(errors, &at("description"), &option["description"], 1, 100);
        let required = option["required"].as_bool().unwrap_or(false);
        if kind > 2 {
            if required && seen_optional {
                merge(
                    errors,
                    error_at(
                        &at("required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    ),
                );
            }
            seen_optional |= !required;
        }
        if let Some(choices) = option["choices"].as_array() {
            if choices.len() > 25 {
                merge(
                    errors,
                    error_at(
                        &at("choices"),
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 25 or fewer in length.",
                    ),
                );
            }
            for (j, choice) in choices.iter().enumerate() {
                let mut p = at("choices");
                p.push(j.to_string());
                p.push("name".into());
                check_len(errors, &p, &choice["name"], 1, 100);
            }
        }
        if kind <= 2 {
            check_options(errors, &at("options"), &option["options"], depth + 1);
        }
    }
}

/// Validates one command; an error tree (empty if valid).
fn check_command(command: &Value, path: &[String]) -> Value {
    let mut errors = json!({});
    let at = |key: &str| {
        let mut p = path.to_vec();
        p.push(key.to_owned());
        p
    };
    if !command.is_object() {
        return error_at(
            path,
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        );
    }
    let kind = command["type"].as_u64().unwrap_or(1);
    check_len(&mut errors, &at("name"), &command["name"], 1, 32);
    if kind == 1 {
        if let Some(name) = command["name"].as_str() {
            if !valid_name(name) {
                merge(
                    &mut errors,
                    error_at(
                        &at("name"),
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    ),
                );
            }
        }
        check_len(
            &mut errors,
            &at("description"),
            &command["description"],
            1,
            100,
        );
        check_options(&mut errors, &at("options"), &command["options"], 0);
    } else if command["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty())
    {
        merge(
            &mut errors,
            error_at(
                &at("description"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 0 and 0 in length.",
            ),
        );
    }
    errors
}

/// Stores `commands` (validated) for an application and scope, keeping the
/// IDs of commands whose name and type stay.
fn store_commands(
    shared: &Shared,
    app: u64,
    guild: Option<u64>,
    commands: &[Value],
    replace: bool,
) -> Result<Vec<Value>, Box<Response>> {
    let mut errors = json!({});
    for (i, command) in commands.iter().enumerate() {
        let path = if replace {
            vec![i.to_string()]
        } else {
            Vec::new()
        };
        merge(&mut errors, check_command(command, &path));
    }
    if replace {
        let mut seen = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            let key = (
                c["name"].as_str().unwrap_or(""),
                c["type"].as_u64().unwrap_or(1),
            );
            if seen.contains(&key) {
                merge(
                    &mut errors,
                    error_at(
                        &[i.to_string(), "name".into()],
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    ),
                );
            }
            seen.push(key);
        }
        if commands
            .iter()
            .filter(|c| c["type"].as_u64().unwrap_or(1) == 1)
            .count()
            > 100
        {
            merge(
                &mut errors,
                error_at(
                    &[],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                ),
            );
        }
    }
    if errors.as_object().is_some_and(|o| !o.is_empty()) {
        return Err(Box::new(form_error(errors)));
    }
    let mut state = shared.lock();
    let existing = state
        .commands
        .get(&(app, guild))
        .cloned()
        .unwrap_or_default();
    let mut stored: Vec<Value> = if replace {
        Vec::new()
    } else {
        existing.clone()
    };
    let mut out = Vec::new();
    for command in commands {
        let kind = command["type"].as_u64().unwrap_or(1);
        let name = command["name"].as_str().unwrap_or("");
        let old = existing
            .iter()
            .find(|c| c["name"] == name && c["type"] == kind);
        let id = old
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| shared.snowflake().to_string());
        let mut value = json!({
            "id": id,
            "application_id": app.to_string(),
            "version": shared.snowflake().to_string(),
            "default_member_permissions": command.get("default_member_permissions").cloned().unwrap_or(Value::Null),
            "type": kind,
            "name": name,
            "name_localizations": command.get("name_localizations").cloned().unwrap_or(Value::Null),
            "description": command["description"].as_str().unwrap_or(""),
            "description_localizations": command.get("description_localizations").cloned().unwrap_or(Value::Null),
            "dm_permission": command.get("dm_permission").cloned().unwrap_or(json!(true)),
            "contexts": command.get("contexts").cloned().unwrap_or(Value::Null),
            "integration_types": command.get("integration_types").cloned().unwrap_or(json!([0])),
            "nsfw": command.get("nsfw").cloned().unwrap_or(json!(false)),
        });
        if let Some(options) = command.get("options").filter(|o| o.is_array()) {
            value["options"] = options.clone();
        }
        if let Some(guild) = guild {
            value["guild_id"] = json!(guild.to_string());
        }
        stored.retain(|c| !(c["name"] == name && c["type"] == kind));
        stored.push(value.clone());
        out.push(value);
    }
    state.commands.insert((app, guild), stored);
    drop(state);
    shared.changed();
    Ok(out)
}

async fn put_commands(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    put_scoped(&shared, &app, None, &headers, &body)
}

async fn put_guild_commands(
    State(shared): State<Arc<Shared>>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(guild) = guild.parse() else {
        return error(StatusCode::NOT_FOUND, 10004, "Unknown Guild");
    };
    put_scoped(&shared, &app, Some(guild), &headers, &body)
}

fn put_scoped(
    shared: &Shared,
    app: &str,
    guild: Option<u64>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let bot = match bot_for_app(shared, headers, app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let Ok(Value::Array(commands)) = serde_json::from_slice::<Value>(body) else {
        return form_error(error_at(&[], "BASE_TYPE_ARRAY", "Must be an array."));
    };
    match store_commands(shared, bot.application_id, guild, &commands, true) {
        Ok(out) => Json(out).into_response(),
        Err(response) => *response,
    }
}

async fn post_command(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let Ok(command) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            50109,
            "The request body contains invalid JSON.",
        );
    };
    match store_commands(&shared, bot.application_id, None, &[command], false) {
        Ok(mut out) => (StatusCode::CREATED, Json(out.remove(0))).into_response(),
        Err(response) => *response,
    }
}

async fn get_commands(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => Json(
            shared
                .lock()
                .commands
                .get(&(bot.application_id, None))
                .cloned()
                .unwrap_or_default(),
        )
        .into_response(),
        Err(response) => *response,
    }
}

async fn get_guild_commands(
    State(shared): State<Arc<Shared>>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => Json(
            shared
                .lock()
                .commands
                .get(&(bot.application_id, guild.parse().ok()))
                .cloned()
                .unwrap_or_default(),
        )
        .into_response(),
        Err(response) => *response,
    }
}

async fn get_command(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let found = shared
        .lock()
        .commands
        .get(&(bot.application_id, None))
        .and_then(|c| c.iter().find(|c| c["id"] == id.as_str()).cloned());
    match found {
        Some(command) => Json(command).into_response(),
        None => error(StatusCode::NOT_FOUND, 10063, "Unknown application command"),
    }
}

async fn delete_command(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let bot = match bot_for_app(&shared, &headers, &app) {
        Ok(bot) => bot,
        Err(response) => return *response,
    };
    let removed = {
        let mut state = shared.lock();
        let commands = state
            .commands
            .entry((bot.application_id, None))
            .or_default();
        let before = commands.len();
        commands.retain(|c| c["id"] != id.as_str());
        before != commands.len()
    };
    shared.changed();
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, 10063, "Unknown application command")
    }
}

/// Records a refusal on an interaction and returns it.
fn reject(
    shared: &Shared,
    id: u64,
    route: &str,
    status: StatusCode,
    code: u64,
    message: &str,
) -> Response {
    if let Some(i) = shared.lock().interactions.get_mut(&id) {
        i.record.rejected.push(Rejection {
            route: route.to_owned(),
            status: status.as_u16(),
            code,
        });
    }
    shared.changed();
    error(status, code, message)
}

/// Applies an initial response; the created original message, if any.
fn apply_callback(
    shared: &Shared,
    id: u64,
    token: &str,
    kind: u64,
    payload: Payload,
    via_http_answer: bool,
    route: &str,
) -> Result<Option<MessageRecord>, Box<Response>> {
    let (interaction_kind, channel_id, dispatched, acknowledged) = {
        let state = shared.lock();
        match state.interactions.get(&id) {
            Some(i) if i.record.token == token => (
                i.record.kind,
                i.record.channel_id.unwrap_or(0),
                i.dispatched,
                i.record.callback.is_some(),
            ),
            _ => {
                return Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    10062,
                    "Unknown interaction",
                )))
            }
        }
    };
    let after = dispatched.elapsed();
    if after > shared.options.ack_deadline {
        return Err(Box::new(reject(
            shared,
            id,
            route,
            StatusCode::NOT_FOUND,
            10062,
            "Unknown interaction",
        )));
    }
    if acknowledged {
        return Err(Box::new(reject(
            shared,
            id,
            route,
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        )));
    }
    let allowed: &[u64] = if interaction_kind == 1 {
        &[1]
    } else {
        &[4, 5, 9]
    };
    if !allowed.contains(&kind) {
        let errors = error_at(
            &["type".to_owned()],
            "INTERACTION_RESPONSE_TYPE_INVALID",
            "Invalid interaction response type",
        );
        if let Some(i) = shared.lock().interactions.get_mut(&id) {
            i.record.rejected.push(Rejection {
                route: route.to_owned(),
                status: 400,
                code: 50035,
            });
        }
        return Err(Box::new(form_error(errors)));
    }
    let data = payload.json.clone();
    let original = match kind {
        4 => {
            let mut payload = payload;
            if payload.json.is_null() {
                payload.json = json!({});
            }
            Some(build_message(shared, payload, None, channel_id, false)?)
        }
        5 => {
            let flags = data["flags"].as_u64().unwrap_or(0) & FLAG_EPHEMERAL;
            Some(MessageRecord {
                id: shared.snowflake(),
                channel_id,
                content: String::new(),
                embeds: Vec::new(),
                components: Vec::new(),
                attachments: Vec::new(),
                flags: flags | FLAG_LOADING,
                edits: 0,
                history: vec![String::new()],
                deleted: false,
            })
        }
        _ => None,
    };
    {
        let mut state = shared.lock();
        let i = state.interactions.get_mut(&id).expect("interaction");
        i.record.callback = Some(CallbackRecord {
            kind,
            data,
            after,
            via_http_answer,
        });
        i.record.original.clone_from(&original);
    }
    shared.changed();
    Ok(original)
}

async fn callback(
    State(shared): State<Arc<Shared>>,
    Path((id, token)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    let route = format!("POST /interactions/{id}/.../callback");
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    };
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let Some(kind) = payload.json["type"].as_u64() else {
        return form_error(error_at(
            &["type".to_owned()],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ));
    };
    let data = payload.json.get("data").cloned().unwrap_or(Value::Null);
    let inner = Payload {
        json: data,
        files: payload.files,
    };
    let original = match apply_callback(&shared, id, &token, kind, inner, false, &route) {
        Ok(original) => original,
        Err(response) => return *response,
    };
    if query.get("with_response").map(String::as_str) != Some("true") {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut answer = json!({
        "interaction": {
            "id": id.to_string(),
            "type": 2,
            "response_message_id": original.as_ref().map(|m| m.id.to_string()),
            "response_message_loading": original.as_ref().is_some_and(MessageRecord::loading),
            "response_message_ephemeral": original.as_ref().is_some_and(MessageRecord::ephemeral),
        },
    });
    if let Some(message) = &original {
        answer["resource"] = json!({
            "type": kind,
            "message": interaction_message_json(&shared, id, message),
        });
    }
    Json(answer).into_response()
}

/// The interaction a webhook route's application and token name.
fn webhook_interaction(shared: &Shared, app: &str, token: &str) -> Result<u64, Box<Response>> {
    let state = shared.lock();
    let Some(&id) = state.by_token.get(token) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            50027,
            "Invalid Webhook Token",
        )));
    };
    let interaction = &state.interactions[&id];
    if app.parse::<u64>().ok() != Some(interaction.record.application_id) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            10015,
            "Unknown Webhook",
        )));
    }
    if interaction.dispatched.elapsed() > shared.options.token_lifetime {
        drop(state);
        return Err(Box::new(reject(
            shared,
            id,
            "webhook",
            StatusCode::UNAUTHORIZED,
            50027,
            "Invalid Webhook Token",
        )));
    }
    Ok(id)
}

async fn followup(
    State(shared): State<Arc<Shared>>,
    Path((app, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    let route = "POST /webhooks/{app}/{token}";
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let (acknowledged, channel_id) = {
        let state = shared.lock();
        let i = &state.interactions[&id].record;
        (i.callback.is_some(), i.channel_id.unwrap_or(0))
    };
    if !acknowledged {
        return reject(
            &shared,
            id,
            route,
            StatusCode::NOT_FOUND,
            10015,
            "Unknown Webhook",
        );
    }
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let message = match build_message(&shared, payload, None, channel_id, false) {
        Ok(m) => m,
        Err(response) => {
            note_rejection(&shared, id, route, &response);
            return *response;
        }
    };
    shared
        .lock()
        .interactions
        .get_mut(&id)
        .expect("interaction")
        .record
        .followups
        .push(message.clone());
    shared.changed();
    Json(interaction_message_json(&shared, id, &message)).into_response()
}

fn note_rejection(shared: &Shared, id: u64, route: &str, response: &Response) {
    if let Some(i) = shared.lock().interactions.get_mut(&id) {
        i.record.rejected.push(Rejection {
            route: route.to_owned(),
            status: response.status().as_u16(),
            code: 0,
        });
    }
    shared.changed();
}

/// The webhook message a route names: the original or a follow-up.
fn find_webhook_message(shared: &Shared, id: u64, message: &str) -> Option<MessageRecord> {
    let state = shared.lock();
    let record = &state.interactions[&id].record;
    if message == "@original" {
        return record.original.clone().filter(|m| !m.deleted);
    }
    let message_id: u64 = message.parse().ok()?;
    record
        .original
        .iter()
        .chain(&record.followups)
        .find(|m| m.id == message_id && !m.deleted)
        .cloned()
}

fn store_webhook_message(shared: &Shared, id: u64, message: MessageRecord) {
    let mut state = shared.lock();
    let record = &mut state.interactions.get_mut(&id).expect("interaction").record;
    if record.original.as_ref().is_some_and(|m| m.id == message.id) {
        record.original = Some(message);
    } else if let Some(m) = record.followups.iter_mut().find(|m| m.id == message.id) {
        *m = message;
    }
    drop(state);
    shared.changed();
}

async fn get_webhook_message(
    State(shared): State<Arc<Shared>>,
    Path((app, token, message)): Path<(String, String, String)>,
) -> Response {
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    match find_webhook_message(&shared, id, &message) {
        Some(m) => Json(interaction_message_json(&shared, id, &m)).into_response(),
        None => error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
    }
}

async fn edit_webhook_message(
    State(shared): State<Arc<Shared>>,
    Path((app, token, message)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let route = format!("PATCH /webhooks/{{app}}/{{token}}/messages/{message}");
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let Some(existing) = find_webhook_message(&shared, id, &message) else {
        return reject(
            &shared,
            id,
            &route,
            StatusCode::NOT_FOUND,
            10008,
            "Unknown Message",
        );
    };
    let payload = match read_payload(request).await {
        Ok(p) => p,
        Err(response) => return *response,
    };
    let channel_id = existing.channel_id;
    let edited = match build_message(&shared, payload, Some(&existing), channel_id, false) {
        Ok(m) => m,
        Err(response) => {
            note_rejection(&shared, id, &route, &response);
            return *response;
        }
    };
    store_webhook_message(&shared, id, edited.clone());
    Json(interaction_message_json(&shared, id, &edited)).into_response()
}

async fn delete_webhook_message(
    State(shared): State<Arc<Shared>>,
    Path((app, token, message)): Path<(String, String, String)>,
) -> Response {
    let id = match webhook_interaction(&shared, &app, &token) {
        Ok(id) => id,
        Err(response) => return *response,
    };
    let Some(mut existing) = find_webhook_message(&shared, id, &message) else {
        return error(StatusCode::NOT_FOUND, 10008, "Unknown Message");
    };
    existing.deleted = true;
    store_webhook_message(&shared, id, existing);
    StatusCode::NO_CONTENT.into_response()
}

async fn channel_message(
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

async fn edit_channel_message(
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

async fn typing(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if authenticate(&shared, &headers).is_none() {
        return unauthorized();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn attachment(
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

// ----- the gateway -----

async fn gateway(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    ws: WebSocketUpgrade,
) -> Response {
    let path = uri.path().to_owned();
    let raw_query = uri.query().unwrap_or("").to_owned();
    if query.get("encoding").is_some_and(|e| e != "json") || query.contains_key("compress") {
        return (
            StatusCode::BAD_REQUEST,
            "the stand-in speaks uncompressed JSON only (no compress, encoding=json)",
        )
            .into_response();
    }
    let version_ok = query.get("v").map(String::as_str) == Some("10");
    ws.on_upgrade(move |socket| connection(shared, socket, path, raw_query, version_ok))
}

struct Conn {
    id: u64,
    index: usize,
    token: Option<String>,
    session: Option<String>,
}

enum Step {
    Continue,
    Close(u16, &'static str),
}

async fn connection(
    shared: Arc<Shared>,
    socket: WebSocket,
    path: String,
    query: String,
    version_ok: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let index = {
        let mut state = shared.lock();
        state.connections.push(GatewayConnection {
            path,
            query,
            token: None,
            intents: None,
            closed_with: None,
        });
        state.connections.len() - 1
    };
    shared.changed();
    let mut conn = Conn {
        id: shared.next_conn.fetch_add(1, Ordering::SeqCst),
        index,
        token: None,
        session: None,
    };
    let interval = shared.options.heartbeat_interval;
    let grace = interval * 2 + Duration::from_secs(2);
    let mut deadline = tokio::time::Instant::now() + grace;
    let close = |code: u16, reason: &'static str| {
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let mut closed_with = None;
    if !version_ok {
        let _ = sink.send(close(4012, "Invalid API version")).await;
        closed_with = Some(4012);
    } else {
        let hello = op(
            10,
            json!({ "heartbeat_interval": interval.as_millis() as u64 }),
        );
        if sink.send(WsMessage::Text(hello.into())).await.is_ok() {
            loop {
                tokio::select! {
                    incoming = stream.next() => {
                        let text = match incoming {
                            Some(Ok(WsMessage::Text(t))) => t.to_string(),
                            Some(Ok(WsMessage::Binary(_))) => {
                                let _ = sink.send(close(4002, "Decode error")).await;
                                closed_with = Some(4002);
                                break;
                            }
                            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                            Some(Ok(_)) => continue,
                        };
                        deadline = tokio::time::Instant::now() + grace;
                        match handle_payload(&shared, &mut conn, &tx, &text) {
                            Step::Continue => {}
                            Step::Close(code, reason) => {
                                let _ = sink.send(close(code, reason)).await;
                                closed_with = Some(code);
                                break;
                            }
                        }
                    }
                    outgoing = rx.recv() => match outgoing {
                        Some(Outgoing::Text(text)) => {
                            if sink.send(WsMessage::Text(text.into())).await.is_err() {
                                break;
                            }
                        }
                        Some(Outgoing::Close(code, reason)) => {
                            let _ = sink.send(close(code, reason)).await;
                            closed_with = Some(code);
                            break;
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline) => {
                        let _ = sink.send(close(4009, "Session timed out")).await;
                        closed_with = Some(4009);
                        break;
                    }
                }
            }
        }
    }
    {
        let mut state = shared.lock();
        if let Some(session) = conn
            .session
            .as_ref()
            .and_then(|s| state.sessions.get_mut(s))
        {
            if session.conn.as_ref().is_some_and(|(id, _)| *id == conn.id) {
                session.conn = None;
            }
        }
        if closed_with.is_some() {
            state.connections[conn.index].closed_with = closed_with;
        }
    }
    shared.changed();
    // Let the client read the close frame before the socket goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

fn handle_payload(
    shared: &Shared,
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<Outgoing>,
    text: &str,
) -> Step {
    if text.len() > 4096 {
        return Step::Close(4002, "Decode error");
    }
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        return Step::Close(4002, "Decode error");
    };
    let Some(code) = payload["op"].as_u64() else {
        return Step::Close(4002, "Decode error");
    };
    let d = &payload["d"];
    match code {
        1 => {
            if let Some(token) = &conn.token {
                if let Some(bot) = shared.lock().bots.get_mut(token) {
                    bot.heartbeats += 1;
                }
            }
            shared.changed();
            let _ = tx.send(Outgoing::Text(op(11, Value::Null)));
            Step::Continue
        }
        2 => identify(shared, conn, tx, d),
        6 => resume(shared, conn, tx, d),
        3 | 4 | 8 | 31 => {
            if conn.session.is_none() {
                Step::Close(4003, "Not authenticated")
            } else {
                Step::Continue
            }
        }
        _ => Step::Close(4001, "Unknown opcode"),
    }
}

fn identify(
    shared: &Shared,
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<Outgoing>,
    d: &Value,
) -> Step {
    if conn.session.is_some() {
        return Step::Close(4005, "Already authenticated");
    }
    let (Some(token), Some(intents), true) = (
        d["token"].as_str(),
        d["intents"].as_u64(),
        d["properties"].is_object(),
    ) else {
        return Step::Close(4002, "Decode error");
    };
    let token = strip_bot(token).to_owned();
    let mut state = shared.lock();
    let Some(bot) = state.bots.get(&token).map(|b| b.bot.clone()) else {
        return Step::Close(4004, "Authentication failed");
    };
    if intents & !DEFINED_INTENTS != 0 {
        return Step::Close(4013, "Invalid intent(s)");
    }
    if intents & PRIVILEGED_INTENTS & !bot.privileged_intents != 0 {
        return Step::Close(4014, "Disallowed intent(s)");
    }
    let shard = d["shard"].as_array().and_then(|s| {
        let id = s.first()?.as_u64()?;
        let count = s.get(1)?.as_u64()?;
        Some((id, count))
    });
    if shard.is_some_and(|(id, count)| count == 0 || id >= count) {
        return Step::Close(4010, "Invalid shard");
    }
    let session_id = hex::encode(rand::random::<[u8; 16]>());
    state.sessions.insert(
        session_id.clone(),
        Session {
            token: token.clone(),
            seq: 0,
            events: Vec::new(),
            conn: Some((conn.id, tx.clone())),
            started: Instant::now(),
        },
    );
    if let Some(b) = state.bots.get_mut(&token) {
        b.identifies += 1;
    }
    let record = &mut state.connections[conn.index];
    record.token = Some(token.clone());
    record.intents = Some(intents);
    let mut ready = json!({
        "v": 10,
        "user": current_user_json(&bot),
        "guilds": [],
        "session_id": session_id,
        "resume_gateway_url": format!("ws://127.0.0.1:{}/gateway-resume", shared.port),
        "application": { "id": bot.application_id.to_string(), "flags": application_flags(&bot) },
        "private_channels": [],
        "relationships": [],
    });
    if let Some((id, count)) = shard {
        ready["shard"] = json!([id, count]);
    }
    dispatch(&mut state, &session_id, "READY", &ready);
    drop(state);
    conn.token = Some(token);
    conn.session = Some(session_id);
    shared.changed();
    Step::Continue
}

fn resume(
    shared: &Shared,
    conn: &mut Conn,
    tx: &mpsc::UnboundedSender<Outgoing>,
    d: &Value,
) -> Step {
    if conn.session.is_some() {
        return Step::Close(4005, "Already authenticated");
    }
    let (Some(token), Some(session_id), Some(seq)) = (
        d["token"].as_str(),
        d["session_id"].as_str(),
        d["seq"].as_u64(),
    ) else {
        return Step::Close(4002, "Decode error");
    };
    let token = strip_bot(token).to_owned();
    let mut state = shared.lock();
    if !state.bots.contains_key(&token) {
        return Step::Close(4004, "Authentication failed");
    }
    let valid = state
        .sessions
        .get(session_id)
        .is_some_and(|s| s.token == token && seq <= s.seq);
    if !valid {
        let _ = tx.send(Outgoing::Text(op(9, json!(false))));
        return Step::Continue;
    }
    let session = state.sessions.get_mut(session_id).expect("session");
    // A connection still attached to the session is superseded.
    if let Some((_, old)) = session.conn.take() {
        let _ = old.send(Outgoing::Close(4000, "Session resumed elsewhere"));
    }
    for (_, text) in session.events.iter().filter(|(s, _)| *s > seq) {
        let _ = tx.send(Outgoing::Text(text.clone()));
    }
    session.conn = Some((conn.id, tx.clone()));
    dispatch(&mut state, session_id, "RESUMED", &Value::Null);
    if let Some(b) = state.bots.get_mut(&token) {
        b.resumes += 1;
    }
    state.connections[conn.index].token = Some(token.clone());
    drop(state);
    conn.token = Some(token);
    conn.session = Some(session_id.to_owned());
    shared.changed();
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_discords_pattern() {
        assert!(valid_name("imagine"));
        assert!(valid_name("tts-voice_2"));
        assert!(valid_name("día"));
        assert!(!valid_name("Imagine"));
        assert!(!valid_name("two words"));
        assert!(!valid_name("slash/"));
    }

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
