//! The stand-in's public values: its options, the bots and slash-command
//! invocations a test describes, and the records of what happened (messages,
//! interactions, REST calls, gateway connections, endpoint answers).

use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Value};

use crate::standins::openai::FormField;

use super::state::strip_bot;
use super::{DEFAULT_GUILD_ID, FLAG_EPHEMERAL, FLAG_LOADING};

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
