//! A Telegram Bot API stand-in: the methods Tessera's bots call, on
//! `127.0.0.1:0`, with simulated users on the other side.
//!
//! It follows the Bot API as documented at `core.telegram.org/bots/api`:
//!
//! - Methods are served at `/bot<token>/<method>`, by GET or POST, with the
//!   method name matched case-insensitively. Parameters come from the query
//!   string and from an `application/x-www-form-urlencoded`,
//!   `application/json` or `multipart/form-data` body; in forms, objects
//!   and arrays (`reply_parameters`, `allowed_updates`, `commands`) are JSON
//!   text. Every answer is `{"ok": true, "result": ...}` or `{"ok": false,
//!   "error_code": N, "description": "..."}`, with `"parameters":
//!   {"retry_after": S}` on flood control. A token no bot has gets 401
//!   `Unauthorized`; a path that is not `/bot<token>/<method>`, or a method
//!   outside the list below, gets 404 `Not Found`.
//! - `getMe`; `getUpdates` with `offset` (an update is confirmed, and
//!   forgotten, once a call asks for a higher offset; a negative offset keeps
//!   only that many of the newest), `limit` (1–100) and `timeout` (a long
//!   poll held until an update arrives or the time is up). A second
//!   `getUpdates` ends the one still held with 409 `Conflict: terminated by
//!   other getUpdates request; ...`, and while a webhook is set `getUpdates`
//!   answers 409 `Conflict: can't use getUpdates method while webhook is
//!   active; use deleteWebhook to delete the webhook first`.
//!   `allowed_updates` is kept until changed, as documented.
//! - `setWebhook` (`url`, `secret_token`, `allowed_updates`,
//!   `drop_pending_updates`, `max_connections`), `deleteWebhook` and
//!   `getWebhookInfo`. While a webhook is set, queued updates are POSTed to
//!   it one at a time, in order, as JSON, with `X-Telegram-Bot-Api-Secret-Token`
//!   when a secret was given; an answer that is not 2xx, or no answer, is
//!   retried with growing waits and shows in `getWebhookInfo` as
//!   `last_error_date`/`last_error_message`. Unlike Telegram, which wants
//!   HTTPS on a public address, the stand-in takes only loopback URLs
//!   (`http` or `https`), so a test can receive the updates.
//! - `sendMessage` (`chat_id`, `text`, `parse_mode`, `reply_to_message_id`
//!   or `reply_parameters`, `reply_markup`), `editMessageText`,
//!   `deleteMessage`, `sendChatAction`; `sendPhoto`, `sendVideo`,
//!   `sendAudio`, `sendDocument` and `sendVoice` with the file as a
//!   multipart part named after the kind, as an `attach://<part>` reference
//!   to another part (what teloxide sends), as the `file_id` of a file the
//!   stand-in knows, or as an HTTP URL (recorded, not fetched). Answers are
//!   full `Message` objects: a photo is an array of `PhotoSize` (its width
//!   and height read from the image; the smaller sizes share the original's
//!   bytes), audio, video, voice and documents carry `file_id`,
//!   `file_unique_id`, `file_size`, `mime_type` and the rest.
//! - `file_id`s belong to the bot that received or sent the file, as on
//!   Telegram. `getFile` answers a `File` with a `file_path`; the bytes are served at
//!   `/file/bot<token>/<file_path>` (the path may arrive percent-encoded, as
//!   teloxide encodes its `/`).
//! - `setMyCommands`, `getMyCommands` and `deleteMyCommands`, keyed by
//!   `scope` and `language_code`; `logOut` and `close` answer true.
//!
//! Its errors are Telegram's, with Telegram's texts (which teloxide matches
//! on): 400 `Bad Request: chat not found` for a chat no user of the bot has
//! written from (see [`TelegramStandIn::open_chat`]), 403 `Forbidden: bot
//! was blocked by the user` after [`TelegramStandIn::block`], 400 `Bad
//! Request: message text is empty`, `message is too long` (over 4096
//! characters), `message caption is too long` (over 1024), `message to edit
//! not found`, `message is not modified: ...`, `message can't be edited`,
//! `there is no text in the message to edit`, `message to be replied not
//! found`, `wrong file identifier/HTTP URL specified`, `file must be
//! non-empty`, `IMAGE_PROCESS_FAILED` (a photo that is not an image),
//! `invalid file_id` and `file is too big` (getFile over 20 MB), 413 for an
//! upload over 50 MB, and 429 `Too Many Requests: retry after N` when a test
//! floods a method ([`TelegramStandIn::flood`]).
//!
//! Lengths are counted in Unicode characters; entity offsets
//! (`bot_command` entities on what simulated users type) in UTF-16 code
//! units, as the API documents. `parse_mode` is recorded, not applied.
//! Every call is recorded, as are the messages each bot sent (with their
//! uploaded bytes) and every chat as it stands, edits applied.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest text message, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest media caption, in characters.
pub const MAX_CAPTION_CHARS: usize = 1024;
/// Largest file `getFile` hands out.
pub const MAX_DOWNLOAD_BYTES: usize = 20 * 1024 * 1024;
/// Largest upload.
pub const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// The first `update_id` a bot's queue hands out.
const FIRST_UPDATE_ID: u32 = 700_000_001;
/// Bot ids given to tokens that do not start with a numeric id.
const FIRST_BOT_ID: i64 = 7_000_000_001;
/// Waits between webhook delivery attempts.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

const WEBHOOK_ACTIVE: &str = "Conflict: can't use getUpdates method while webhook is active; \
     use deleteWebhook to delete the webhook first";
const TERMINATED: &str = "Conflict: terminated by other getUpdates request; \
     make sure that only one bot instance is running";
const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply \
     markup are exactly the same as a current content and reply markup of the message";

/// Methods the stand-in serves, spelled as documented.
const METHODS: &[&str] = &[
    "getMe",
    "logOut",
    "close",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "deleteMessage",
    "sendPhoto",
    "sendVideo",
    "sendAudio",
    "sendDocument",
    "sendVoice",
    "sendChatAction",
    "getFile",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
];

const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Text,
    Photo,
    Video,
    Audio,
    Document,
    Voice,
}

impl MessageKind {
    /// The `Message` field (and the upload's form field) of this kind.
    pub fn field(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Photo => "photo",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Voice => "voice",
        }
    }

    fn folder(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Photo => "photos",
            Self::Video => "videos",
            Self::Audio => "music",
            Self::Document => "documents",
            Self::Voice => "voice",
        }
    }

    /// The leading characters of this kind's `file_id`s.
    fn id_prefix(self) -> &'static str {
        match self {
            Self::Text => "AA",
            Self::Photo => "AgACAgIAAxkBAAI",
            Self::Video => "BAACAgIAAxkBAAI",
            Self::Audio => "CQACAgIAAxkBAAI",
            Self::Document => "BQACAgIAAxkBAAI",
            Self::Voice => "AwACAgIAAxkBAAI",
        }
    }
}

/// A file sent in a multipart form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The part's file name, if it had a non-empty one.
    pub file_name: Option<String>,
    /// The part's content type, if it had one.
    pub mime: Option<String>,
    pub bytes: Bytes,
}

/// A message a bot sent, as it was sent.
#[derive(Clone, Debug)]
pub struct SentMessage {
    pub chat_id: i64,
    pub message_id: i64,
    pub kind: MessageKind,
    /// The text, or the caption of a file.
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    /// The file, when it was uploaded in the request.
    pub upload: Option<Upload>,
    /// The `file_id` or URL the bot gave instead of uploading.
    pub file_ref: Option<String>,
    /// The `file_id` the stand-in answered with.
    pub file_id: Option<String>,
    /// The message it replies to.
    pub reply_to: Option<i64>,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    Bot,
    User(i64),
}

/// A message of a chat as it stands now.
#[derive(Clone, Debug)]
pub struct ChatMessage {
    pub message_id: i64,
    pub author: Author,
    pub kind: MessageKind,
    /// The text, or the caption of a file, after every edit.
    pub text: Option<String>,
    /// Earlier texts, oldest first; one per edit.
    pub history: Vec<String>,
    pub reply_to: Option<i64>,
    /// The `file_id` of its file.
    pub file_id: Option<String>,
}

impl ChatMessage {
    /// How many times it was edited.
    pub fn edits(&self) -> usize {
        self.history.len()
    }
}

/// One call a bot made.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method, spelled as documented when the stand-in knows it.
    pub method: String,
    /// The parameters; an uploaded file shows as `{"file_name", "size"}`.
    pub params: Value,
    /// The HTTP status of the answer, once answered.
    pub status: Option<u16>,
}

/// One entry of a command menu.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub command: String,
    pub description: String,
}

/// A bot's webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
    pub allowed_updates: Option<Vec<String>>,
    pub max_connections: u32,
}

/// One attempt to deliver an update to a webhook.
#[derive(Clone, Debug)]
pub struct WebhookDelivery {
    pub update_id: u32,
    /// The webhook's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why the attempt failed, in `getWebhookInfo`'s words.
    pub error: Option<String>,
}

/// What a simulated user sends; see [`TelegramStandIn::user_says`].
#[derive(Clone, Debug)]
pub struct UserMessage {
    kind: MessageKind,
    text: Option<String>,
    file: Option<Upload>,
    duration: u32,
}

impl UserMessage {
    pub fn text(text: &str) -> Self {
        Self {
            kind: MessageKind::Text,
            text: Some(text.to_owned()),
            file: None,
            duration: 0,
        }
    }

    fn file(kind: MessageKind, bytes: Bytes, mime: &str, file_name: Option<&str>) -> Self {
        Self {
            kind,
            text: None,
            file: Some(Upload {
                file_name: file_name.map(str::to_owned),
                mime: Some(mime.to_owned()),
                bytes,
            }),
            duration: 0,
        }
    }

    /// A voice message (`mime` is `audio/ogg` from Telegram's apps).
    pub fn voice(bytes: impl Into<Bytes>, mime: &str, duration_secs: u32) -> Self {
        Self {
            duration: duration_secs,
            ..Self::file(MessageKind::Voice, bytes.into(), mime, None)
        }
    }

    /// A file sent as a document.
    pub fn document(bytes: impl Into<Bytes>, mime: &str, file_name: &str) -> Self {
        Self::file(MessageKind::Document, bytes.into(), mime, Some(file_name))
    }
}

#[derive(Clone, Debug)]
struct UserInfo {
    first_name: String,
    last_name: Option<String>,
    username: Option<String>,
    language_code: Option<String>,
}

impl UserInfo {
    fn default_for(id: i64) -> Self {
        Self {
            first_name: format!("User {id}"),
            last_name: None,
            username: Some(format!("user{id}")),
            language_code: Some("en".into()),
        }
    }
}

#[derive(Clone, Debug)]
struct StoredFile {
    /// The token of the bot it belongs to: `file_id`s are per bot.
    owner: String,
    id: String,
    unique_id: String,
    path: String,
    bytes: Bytes,
    mime: Option<String>,
    file_name: Option<String>,
    duration: u32,
    width: u32,
    height: u32,
    /// The `PhotoSize` array, for photos.
    photo: Option<Value>,
}

#[derive(Default)]
struct Files {
    by_id: HashMap<String, StoredFile>,
    by_path: HashMap<String, String>,
    next: u64,
}

#[derive(Clone, Debug)]
struct Msg {
    id: i64,
    author: Author,
    date: i64,
    kind: MessageKind,
    /// Text, or caption.
    text: Option<String>,
    entities: Option<Value>,
    /// The `Message` field of the file (`photo`, `voice`, ...).
    media: Option<Value>,
    file_id: Option<String>,
    reply_to: Option<i64>,
    reply_markup: Option<Value>,
    edit_date: Option<i64>,
    history: Vec<String>,
}

struct ChatState {
    next_id: i64,
    messages: BTreeMap<i64, Msg>,
    blocked: bool,
}

impl ChatState {
    fn new() -> Self {
        Self {
            next_id: 1,
            messages: BTreeMap::new(),
            blocked: false,
        }
    }
}

struct BotState {
    id: i64,
    username: String,
    first_name: String,
    next_update_id: u32,
    updates: VecDeque<(u32, Value)>,
    allowed_updates: Option<Vec<String>>,
    poll_generation: u64,
    webhook: Option<Webhook>,
    last_error: Option<(i64, String)>,
    deliveries: Vec<WebhookDelivery>,
    commands: Vec<(Value, String, Vec<Command>)>,
    chats: BTreeMap<i64, ChatState>,
    sent: Vec<SentMessage>,
    calls: Vec<Call>,
    downloads: Vec<String>,
    floods: HashMap<String, (u32, u32)>,
}

impl BotState {
    /// Whether updates of `kind` are wanted now.
    fn wants(&self, kind: &str) -> bool {
        match &self.allowed_updates {
            Some(list) if !list.is_empty() => list.iter().any(|k| k == kind),
            _ => !matches!(
                kind,
                "chat_member" | "message_reaction" | "message_reaction_count"
            ),
        }
    }

    fn user_json(&self) -> Value {
        json!({
            "id": self.id,
            "is_bot": true,
            "first_name": self.first_name,
            "username": self.username,
        })
    }
}

#[derive(Default)]
struct StateInner {
    bots: HashMap<String, BotState>,
    files: Files,
    users: HashMap<i64, UserInfo>,
    next_bot_id: i64,
    stopped: bool,
}

struct Shared {
    state: Mutex<StateInner>,
    changed: watch::Sender<u64>,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every waiter: held long polls, deliveries and test helpers.
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A running Telegram Bot API stand-in; stops when dropped.
pub struct TelegramStandIn {
    url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl TelegramStandIn {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(StateInner {
                next_bot_id: FIRST_BOT_ID,
                ..StateInner::default()
            }),
            changed: watch::channel(0).0,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(WEBHOOK_TIMEOUT)
                .build()
                .expect("an HTTP client for webhooks"),
            runtime: tokio::runtime::Handle::current(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", any(api))
            .route("/file/{bot}/{*path}", get(download))
            .fallback(|| async { Failure::new(404, "Not Found").into_response() })
            .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES + 1024 * 1024))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!("http://{}/", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            shared,
            server,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// The base URL with its trailing slash (`http://127.0.0.1:PORT/`), for
    /// teloxide's `Bot::set_api_url`.
    pub fn api_url(&self) -> String {
        self.url.clone()
    }

    /// The URL of one method, `{api_url}bot<token>/<method>`.
    pub fn method_url(&self, token: &str, method: &str) -> String {
        format!("{}bot{token}/{method}", self.url)
    }

    /// Registers a bot. Its id is the token's numeric prefix (`123:ABC`
    /// gives 123), or one the stand-in picks; its first name is the username.
    pub fn add_bot(&self, token: &str, username: &str) {
        {
            let mut state = self.shared.lock();
            assert!(
                !state.bots.contains_key(token),
                "a bot with that token exists"
            );
            let id = match token.split_once(':').map(|(id, _)| id.parse::<i64>()) {
                Some(Ok(id)) if id > 0 => id,
                _ => {
                    state.next_bot_id += 1;
                    state.next_bot_id - 1
                }
            };
            state.bots.insert(
                token.to_owned(),
                BotState {
                    id,
                    username: username.to_owned(),
                    first_name: username.to_owned(),
                    next_update_id: FIRST_UPDATE_ID,
                    updates: VecDeque::new(),
                    allowed_updates: None,
                    poll_generation: 0,
                    webhook: None,
                    last_error: None,
                    deliveries: Vec::new(),
                    commands: Vec::new(),
                    chats: BTreeMap::new(),
                    sent: Vec::new(),
                    calls: Vec::new(),
                    downloads: Vec::new(),
                    floods: HashMap::new(),
                },
            );
        }
        let task = self
            .shared
            .runtime
            .spawn(deliver(self.shared.clone(), token.to_owned()));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        self.shared.bump();
    }

    /// Names a simulated user (otherwise `User <id>`, `@user<id>`, `en`).
    pub fn name_user(&self, user_id: i64, first_name: &str, username: Option<&str>) {
        self.shared.lock().users.insert(
            user_id,
            UserInfo {
                first_name: first_name.to_owned(),
                last_name: None,
                username: username.map(str::to_owned),
                language_code: Some("en".into()),
            },
        );
    }

    /// Makes a chat known to a bot without a message in it, as when a user
    /// started the bot long ago. A chat with id > 0 is the private chat with
    /// that user; below −10¹² a supergroup; otherwise a group.
    pub fn open_chat(&self, token: &str, chat_id: i64) {
        self.mutate(token, |bot, _| {
            bot.chats.entry(chat_id).or_insert_with(ChatState::new);
        });
    }

    /// A user writes `text`; queues the update and returns the message id.
    /// A leading `/command` (and any after whitespace) gets a `bot_command`
    /// entity.
    pub fn user_text(&self, token: &str, chat_id: i64, user_id: i64, text: &str) -> i64 {
        self.user_says(token, chat_id, user_id, UserMessage::text(text))
    }

    /// A user sends a voice message; its bytes are served through `getFile`.
    pub fn user_voice(
        &self,
        token: &str,
        chat_id: i64,
        user_id: i64,
        bytes: impl Into<Bytes>,
        mime: &str,
        duration_secs: u32,
    ) -> i64 {
        let message = UserMessage::voice(bytes, mime, duration_secs);
        self.user_says(token, chat_id, user_id, message)
    }

    /// A user sends a file as a document.
    pub fn user_document(
        &self,
        token: &str,
        chat_id: i64,
        user_id: i64,
        bytes: impl Into<Bytes>,
        mime: &str,
        file_name: &str,
    ) -> i64 {
        let message = UserMessage::document(bytes, mime, file_name);
        self.user_says(token, chat_id, user_id, message)
    }

    /// A user sends any message; queues a `message` update (when the bot's
    /// `allowed_updates` want one) and returns the message id.
    ///
    /// Panics on an unknown token, on a private chat (id > 0) whose id is
    /// not the user's, and on a file the stand-in refuses.
    pub fn user_says(&self, token: &str, chat_id: i64, user_id: i64, message: UserMessage) -> i64 {
        assert!(
            chat_id <= 0 || chat_id == user_id,
            "the private chat with user {user_id} has id {user_id}, not {chat_id}"
        );
        let mut state = self.shared.lock();
        let StateInner {
            bots, files, users, ..
        } = &mut *state;
        let bot = bots
            .get_mut(token)
            .unwrap_or_else(|| panic!("no bot has that token; call add_bot first"));
        let (media, file_id) = match &message.file {
            Some(upload) => {
                let spec = FileSpec {
                    kind: message.kind,
                    upload: upload.clone(),
                    duration: message.duration,
                    width: 0,
                    height: 0,
                };
                let (media, id) =
                    store_file(files, token, spec).expect("a simulated user's file must be valid");
                (Some(media), Some(id))
            }
            None => (None, None),
        };
        let entities = message.text.as_deref().and_then(command_entities);
        let chat = bot.chats.entry(chat_id).or_insert_with(ChatState::new);
        let id = chat.next_id;
        chat.next_id += 1;
        chat.messages.insert(
            id,
            Msg {
                id,
                author: Author::User(user_id),
                date: now(),
                kind: message.kind,
                text: message.text,
                entities,
                media,
                file_id,
                // Simulated users do not reply to messages.
                reply_to: None,
                reply_markup: None,
                edit_date: None,
                history: Vec::new(),
            },
        );
        if bot.wants("message") {
            let rendered = render(bot, users, chat_id, id, true);
            let update_id = bot.next_update_id;
            bot.next_update_id += 1;
            bot.updates.push_back((
                update_id,
                json!({ "update_id": update_id, "message": rendered }),
            ));
        }
        drop(state);
        self.shared.bump();
        id
    }

    /// Makes sends to the chat answer 403 `Forbidden: bot was blocked by
    /// the user`.
    pub fn block(&self, token: &str, chat_id: i64) {
        self.mutate(token, |bot, _| {
            bot.chats
                .entry(chat_id)
                .or_insert_with(ChatState::new)
                .blocked = true;
        });
    }

    /// The next `times` calls of `method` answer 429 `Too Many Requests:
    /// retry after {retry_after_secs}` with `parameters.retry_after`.
    pub fn flood(&self, token: &str, method: &str, times: u32, retry_after_secs: u32) {
        let key = method.to_ascii_lowercase();
        self.mutate(token, |bot, _| {
            bot.floods.insert(key, (times, retry_after_secs));
        });
    }

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

    fn read<T>(&self, token: &str, f: impl FnOnce(&BotState) -> T) -> T {
        let state = self.shared.lock();
        let bot = state
            .bots
            .get(token)
            .unwrap_or_else(|| panic!("no bot has that token; call add_bot first"));
        f(bot)
    }

    fn mutate<T>(&self, token: &str, f: impl FnOnce(&mut BotState, &mut Files) -> T) -> T {
        let mut state = self.shared.lock();
        let StateInner { bots, files, .. } = &mut *state;
        let bot = bots
            .get_mut(token)
            .unwrap_or_else(|| panic!("no bot has that token; call add_bot first"));
        let value = f(bot, files);
        drop(state);
        self.shared.bump();
        value
    }
}

impl Drop for TelegramStandIn {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.bump();
        self.server.abort();
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            task.abort();
        }
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

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `bot_command` entities: a `/` at the start or after whitespace, then
/// letters, digits, `_` and `@`; offsets and lengths in UTF-16 code units.
fn command_entities(text: &str) -> Option<Value> {
    let mut entities = Vec::new();
    let mut offset16 = 0usize;
    let mut previous: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '/' && previous.is_none_or(char::is_whitespace) {
            let rest = &text[i + 1..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '@')
                .collect();
            if name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            {
                let length = 1 + name.len();
                entities.push(json!({
                    "type": "bot_command",
                    "offset": offset16,
                    "length": length,
                }));
                // The command is ASCII: one UTF-16 unit per byte.
                offset16 += length;
                for _ in 0..name.len() {
                    chars.next();
                }
                previous = name.chars().last();
                continue;
            }
        }
        offset16 += c.len_utf16();
        previous = Some(c);
    }
    (!entities.is_empty()).then_some(Value::Array(entities))
}

fn chat_json(chat_id: i64, users: &HashMap<i64, UserInfo>) -> Value {
    if chat_id > 0 {
        let user = users
            .get(&chat_id)
            .cloned()
            .unwrap_or_else(|| UserInfo::default_for(chat_id));
        let mut chat = json!({ "id": chat_id, "type": "private", "first_name": user.first_name });
        if let Some(last) = user.last_name {
            chat["last_name"] = json!(last);
        }
        if let Some(username) = user.username {
            chat["username"] = json!(username);
        }
        chat
    } else if chat_id < -1_000_000_000_000 {
        json!({ "id": chat_id, "type": "supergroup", "title": format!("Supergroup {chat_id}") })
    } else {
        json!({ "id": chat_id, "type": "group", "title": format!("Group {chat_id}") })
    }
}

fn user_json(user_id: i64, users: &HashMap<i64, UserInfo>) -> Value {
    let user = users
        .get(&user_id)
        .cloned()
        .unwrap_or_else(|| UserInfo::default_for(user_id));
    let mut value = json!({ "id": user_id, "is_bot": false, "first_name": user.first_name });
    if let Some(last) = user.last_name {
        value["last_name"] = json!(last);
    }
    if let Some(username) = user.username {
        value["username"] = json!(username);
    }
    if let Some(language) = user.language_code {
        value["language_code"] = json!(language);
    }
    value
}

/// A `Message` object; `nested` adds the message it replies to.
fn render(
    bot: &BotState,
    users: &HashMap<i64, UserInfo>,
    chat_id: i64,
    message_id: i64,
    nested: bool,
) -> Value {
    let chat = &bot.chats[&chat_id];
    let m = &chat.messages[&message_id];
    let mut out = Map::new();
    out.insert("message_id".into(), json!(m.id));
    let from = match m.author {
        Author::Bot => bot.user_json(),
        Author::User(id) => user_json(id, users),
    };
    out.insert("from".into(), from);
    out.insert("chat".into(), chat_json(chat_id, users));
    out.insert("date".into(), json!(m.date));
    if let Some(edit) = m.edit_date {
        out.insert("edit_date".into(), json!(edit));
    }
    if nested {
        if let Some(reply) = m.reply_to.filter(|r| chat.messages.contains_key(r)) {
            out.insert(
                "reply_to_message".into(),
                render(bot, users, chat_id, reply, false),
            );
        }
    }
    match m.kind {
        MessageKind::Text => {
            out.insert("text".into(), json!(m.text.clone().unwrap_or_default()));
            if let Some(e) = &m.entities {
                out.insert("entities".into(), e.clone());
            }
        }
        kind => {
            if let Some(media) = &m.media {
                out.insert(kind.field().into(), media.clone());
            }
            if let Some(caption) = &m.text {
                out.insert("caption".into(), json!(caption));
                if let Some(e) = &m.entities {
                    out.insert("caption_entities".into(), e.clone());
                }
            }
        }
    }
    if let Some(markup) = &m.reply_markup {
        out.insert("reply_markup".into(), markup.clone());
    }
    Value::Object(out)
}

/// What a new file is.
struct FileSpec {
    kind: MessageKind,
    upload: Upload,
    duration: u32,
    width: u32,
    height: u32,
}

fn guess_mime(file_name: &str) -> Option<&'static str> {
    let extension = file_name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/x-wav",
        "flac" => "audio/flac",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "json" => "application/json",
        "zip" => "application/zip",
        _ => return None,
    })
}

fn extension_for(mime: Option<&str>, file_name: Option<&str>) -> String {
    if let Some((_, e)) = file_name.and_then(|n| n.rsplit_once('.')) {
        if !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric()) {
            return e.to_ascii_lowercase();
        }
    }
    match mime.unwrap_or("") {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "audio/mpeg" => "mp3",
        "audio/mp4" => "m4a",
        "audio/ogg" => "oga",
        "audio/x-wav" | "audio/wav" => "wav",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    }
    .to_owned()
}

/// The image type by its magic bytes.
fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF8") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn new_file_record(
    files: &mut Files,
    owner: &str,
    kind: MessageKind,
    bytes: Bytes,
    mime: Option<String>,
    file_name: Option<String>,
) -> StoredFile {
    files.next += 1;
    let n = files.next;
    let extension = extension_for(mime.as_deref(), file_name.as_deref());
    StoredFile {
        owner: owner.to_owned(),
        id: format!("{}{n:06}ZxSt4nd1n{n:x}", kind.id_prefix()),
        unique_id: format!("AgAD{n:06}"),
        path: format!("{}/file_{n}.{extension}", kind.folder()),
        bytes,
        mime,
        file_name,
        duration: 0,
        width: 0,
        height: 0,
        photo: None,
    }
}

fn keep(files: &mut Files, file: StoredFile) {
    files.by_path.insert(file.path.clone(), file.id.clone());
    files.by_id.insert(file.id.clone(), file);
}

/// Stores a new file; answers its `Message` field and `file_id`.
fn store_file(files: &mut Files, owner: &str, spec: FileSpec) -> Result<(Value, String), Failure> {
    let FileSpec {
        kind,
        upload,
        duration,
        width,
        height,
    } = spec;
    if upload.bytes.is_empty() {
        return Err(Failure::bad("file must be non-empty"));
    }
    if upload.bytes.len() > MAX_UPLOAD_BYTES {
        return Err(Failure::new(413, "Request Entity Too Large"));
    }
    let file_name = upload.file_name.filter(|n| !n.is_empty());
    let mime = match upload.mime.as_deref() {
        Some(m) if !m.is_empty() && m != "application/octet-stream" => Some(m.to_owned()),
        _ => file_name.as_deref().and_then(guess_mime).map(str::to_owned),
    };
    if kind == MessageKind::Photo {
        let (Some(image_type), Ok(size)) = (
            image_mime(&upload.bytes),
            imagesize::blob_size(&upload.bytes),
        ) else {
            return Err(Failure::bad("IMAGE_PROCESS_FAILED"));
        };
        let photo = photo_sizes(
            files,
            owner,
            upload.bytes.clone(),
            image_type,
            size.width as u32,
            size.height as u32,
        );
        let id = photo
            .as_array()
            .and_then(|a| a.last())
            .and_then(|p| p["file_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        return Ok((photo, id));
    }
    let mime = mime.or_else(|| match kind {
        MessageKind::Voice => Some("audio/ogg".into()),
        MessageKind::Audio => Some("audio/mpeg".into()),
        MessageKind::Video => Some("video/mp4".into()),
        _ => None,
    });
    let mut file = new_file_record(files, owner, kind, upload.bytes, mime, file_name);
    file.duration = duration;
    file.width = width;
    file.height = height;
    let media = file_json(&file, kind);
    let id = file.id.clone();
    keep(files, file);
    Ok((media, id))
}

/// The sizes Telegram keeps of a photo: each of 90, 320, 800 and 1280
/// pixels on the long side smaller than the original, then the original
/// (at most 2560). They all serve the original's bytes.
fn photo_sizes(
    files: &mut Files,
    owner: &str,
    bytes: Bytes,
    mime: &str,
    width: u32,
    height: u32,
) -> Value {
    let long_side = width.max(height).max(1);
    let mut sides: Vec<u32> = [90, 320, 800, 1280]
        .into_iter()
        .filter(|s| *s < long_side)
        .collect();
    sides.push(long_side.min(2560));
    let area = (u64::from(width) * u64::from(height)).max(1);
    let sizes: Vec<Value> = sides
        .into_iter()
        .map(|side| {
            let w = (u64::from(width) * u64::from(side) / u64::from(long_side)).max(1);
            let h = (u64::from(height) * u64::from(side) / u64::from(long_side)).max(1);
            let size = (bytes.len() as u64 * w * h / area).max(1);
            let mut file = new_file_record(
                files,
                owner,
                MessageKind::Photo,
                bytes.clone(),
                Some(mime.to_owned()),
                None,
            );
            file.width = w as u32;
            file.height = h as u32;
            let value = json!({
                "file_id": file.id,
                "file_unique_id": file.unique_id,
                "width": w,
                "height": h,
                "file_size": if side == long_side.min(2560) { bytes.len() as u64 } else { size },
            });
            keep(files, file);
            value
        })
        .collect();
    let photo = Value::Array(sizes);
    for p in photo.as_array().into_iter().flatten() {
        if let Some(f) = p["file_id"].as_str().and_then(|id| files.by_id.get_mut(id)) {
            f.photo = Some(photo.clone());
        }
    }
    photo
}

/// A file as the `Message` field of `kind`.
fn file_json(file: &StoredFile, kind: MessageKind) -> Value {
    if kind == MessageKind::Photo {
        if let Some(photo) = &file.photo {
            return photo.clone();
        }
        return json!([{
            "file_id": file.id, "file_unique_id": file.unique_id,
            "width": file.width, "height": file.height, "file_size": file.bytes.len(),
        }]);
    }
    let mut value = json!({
        "file_id": file.id,
        "file_unique_id": file.unique_id,
        "file_size": file.bytes.len(),
    });
    if matches!(
        kind,
        MessageKind::Audio | MessageKind::Voice | MessageKind::Video
    ) {
        value["duration"] = json!(file.duration);
    }
    if kind == MessageKind::Video {
        value["width"] = json!(file.width);
        value["height"] = json!(file.height);
    }
    if kind != MessageKind::Voice {
        if let Some(name) = &file.file_name {
            value["file_name"] = json!(name);
        }
    }
    if let Some(mime) = &file.mime {
        value["mime_type"] = json!(mime);
    }
    value
}

// ---------------------------------------------------------------------------
// Answers.

#[derive(Debug)]
struct Failure {
    code: u16,
    description: String,
    retry_after: Option<u32>,
}

impl Failure {
    fn new(code: u16, description: &str) -> Self {
        Self {
            code,
            description: description.to_owned(),
            retry_after: None,
        }
    }

    fn bad(what: &str) -> Self {
        Self::new(400, &format!("Bad Request: {what}"))
    }

    fn flood(retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                &format!("Too Many Requests: retry after {retry_after}"),
            )
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(retry) = self.retry_after {
            body["parameters"] = json!({ "retry_after": retry });
        }
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(body)).into_response()
    }
}

struct Reply {
    result: Value,
    description: Option<String>,
}

impl From<Value> for Reply {
    fn from(result: Value) -> Self {
        Self {
            result,
            description: None,
        }
    }
}

type Answer = Result<Reply, Failure>;

fn answer_response(answer: Answer) -> Response {
    match answer {
        Ok(reply) => {
            let mut body = json!({ "ok": true, "result": reply.result });
            if let Some(d) = reply.description {
                body["description"] = json!(d);
            }
            Json(body).into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

// ---------------------------------------------------------------------------
// Parameters.

#[derive(Clone, Debug)]
enum Param {
    Json(Value),
    Text(String),
    File(Upload),
}

#[derive(Default)]
struct Params(HashMap<String, Param>);

/// Where a file to send comes from.
enum Source {
    Upload(Upload),
    Ref(String),
}

impl Params {
    fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Param::Json(Value::Null) => None,
            Param::Json(Value::String(s)) | Param::Text(s) => Some(s.clone()),
            Param::Json(other) => Some(other.to_string()),
            Param::File(_) => None,
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, Failure> {
        let bad = || Failure::bad(&format!("invalid {name} specified"));
        match self.0.get(name) {
            None | Some(Param::Json(Value::Null)) => Ok(None),
            Some(Param::Json(Value::Number(n))) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Param::Json(Value::String(s)) | Param::Text(s)) if s.trim().is_empty() => Ok(None),
            Some(Param::Json(Value::String(s)) | Param::Text(s)) => {
                s.trim().parse().map(Some).map_err(|_| bad())
            }
            Some(_) => Err(bad()),
        }
    }

    fn flag(&self, name: &str) -> bool {
        match self.0.get(name) {
            Some(Param::Json(Value::Bool(b))) => *b,
            Some(Param::Json(Value::String(s)) | Param::Text(s)) => {
                matches!(s.trim(), "true" | "True" | "1")
            }
            Some(Param::Json(Value::Number(n))) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// An object or array, given as JSON or as JSON text.
    fn json(&self, name: &str) -> Result<Option<Value>, Failure> {
        match self.0.get(name) {
            None | Some(Param::Json(Value::Null)) => Ok(None),
            Some(Param::Json(Value::String(s)) | Param::Text(s)) => {
                if s.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str(s)
                    .map(Some)
                    .map_err(|_| Failure::bad(&format!("can't parse {name} JSON object")))
            }
            Some(Param::Json(v)) => Ok(Some(v.clone())),
            Some(Param::File(_)) => Err(Failure::bad(&format!("can't parse {name} JSON object"))),
        }
    }

    /// The file to send in field `name`: a part, an `attach://` reference to
    /// a part, or a `file_id`/URL.
    fn source(&self, name: &str) -> Result<Option<Source>, Failure> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Param::File(upload)) => Ok(Some(Source::Upload(upload.clone()))),
            Some(_) => {
                let Some(text) = self.text(name).filter(|t| !t.trim().is_empty()) else {
                    return Ok(None);
                };
                if let Some(part) = text.strip_prefix("attach://") {
                    return match self.0.get(part) {
                        Some(Param::File(upload)) => Ok(Some(Source::Upload(upload.clone()))),
                        _ => Err(Failure::bad("wrong file identifier/HTTP URL specified")),
                    };
                }
                Ok(Some(Source::Ref(text)))
            }
        }
    }

    /// The parameters as JSON, files as `{"file_name", "size"}`.
    fn summary(&self) -> Value {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Param::Json(v) => v.clone(),
                    Param::Text(s) => Value::String(s.clone()),
                    Param::File(u) => json!({ "file_name": u.file_name, "size": u.bytes.len() }),
                };
                (k.clone(), v)
            })
            .collect();
        Value::Object(map)
    }
}

async fn read_params(request: Request) -> Result<Params, Failure> {
    let mut params = Params::default();
    if let Some(query) = request.uri().query() {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            params.0.insert(k.into_owned(), Param::Text(v.into_owned()));
        }
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD_BYTES + 1024 * 1024)
        .await
        .map_err(|_| Failure::new(413, "Request Entity Too Large"))?;
    if bytes.is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("multipart/form-data") {
        let request = Request::from_parts(parts, Body::from(bytes));
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|_| Failure::bad("can't parse multipart/form-data request"))?;
        loop {
            let field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(_) => return Err(Failure::bad("can't parse multipart/form-data request")),
            };
            let name = field.name().unwrap_or("").to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let mime = field.content_type().map(str::to_owned);
            let data = field
                .bytes()
                .await
                .map_err(|_| Failure::bad("can't parse multipart/form-data request"))?;
            let value = match file_name {
                Some(file_name) => Param::File(Upload {
                    file_name: Some(file_name).filter(|n| !n.is_empty()),
                    mime,
                    bytes: data,
                }),
                None => Param::Text(String::from_utf8_lossy(&data).into_owned()),
            };
            params.0.insert(name, value);
        }
    } else if content_type.starts_with("application/json") {
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| Failure::bad("can't parse JSON object"))?;
        let Value::Object(map) = value else {
            return Err(Failure::bad("can't parse JSON object"));
        };
        for (k, v) in map {
            params.0.insert(k, Param::Json(v));
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            params.0.insert(k.into_owned(), Param::Text(v.into_owned()));
        }
    }
    Ok(params)
}

// ---------------------------------------------------------------------------
// Routes.

async fn api(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(token) = bot.strip_prefix("bot").map(str::to_owned) else {
        return Failure::new(404, "Not Found").into_response();
    };
    if !shared.lock().bots.contains_key(&token) {
        return Failure::new(401, "Unauthorized").into_response();
    }
    let params = match read_params(request).await {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let name = METHODS
        .iter()
        .copied()
        .find(|m| m.eq_ignore_ascii_case(&method));
    let (index, flood) = {
        let mut state = shared.lock();
        let Some(bot) = state.bots.get_mut(&token) else {
            return Failure::new(401, "Unauthorized").into_response();
        };
        bot.calls.push(Call {
            method: name.map_or(method.clone(), str::to_owned),
            params: params.summary(),
            status: None,
        });
        let flood = match bot.floods.get_mut(&method.to_ascii_lowercase()) {
            Some((times, retry)) if *times > 0 => {
                *times -= 1;
                Some(*retry)
            }
            _ => None,
        };
        (bot.calls.len() - 1, flood)
    };
    shared.bump();
    let answer = match (name, flood) {
        (None, _) => Err(Failure::new(404, "Not Found")),
        (Some(_), Some(retry)) => Err(Failure::flood(retry)),
        (Some(name), None) => call(&shared, &token, name, &params).await,
    };
    let status = match &answer {
        Ok(_) => 200,
        Err(f) => f.code,
    };
    if let Some(bot) = shared.lock().bots.get_mut(&token) {
        bot.calls[index].status = Some(status);
    }
    shared.bump();
    answer_response(answer)
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let Some(token) = bot.strip_prefix("bot") else {
        return Failure::new(404, "Not Found").into_response();
    };
    let mut state = shared.lock();
    if !state.bots.contains_key(token) {
        return Failure::new(401, "Unauthorized").into_response();
    }
    let file = state
        .files
        .by_path
        .get(&path)
        .and_then(|id| state.files.by_id.get(id))
        .filter(|f| f.owner == token)
        .map(|f| (f.bytes.clone(), f.mime.clone()));
    let Some((bytes, mime)) = file else {
        return Failure::new(404, "Not Found").into_response();
    };
    if let Some(bot) = state.bots.get_mut(token) {
        bot.downloads.push(path);
    }
    drop(state);
    shared.bump();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            mime.unwrap_or_else(|| "application/octet-stream".into()),
        )],
        bytes,
    )
        .into_response()
}

async fn call(shared: &Arc<Shared>, token: &str, name: &str, params: &Params) -> Answer {
    if name == "getUpdates" {
        return get_updates(shared, token, params).await;
    }
    let mut state = shared.lock();
    let StateInner {
        bots, files, users, ..
    } = &mut *state;
    let bot = bots.get_mut(token).expect("checked before");
    let mut ctx = Ctx {
        token,
        bot,
        files,
        users,
    };
    let answer = match name {
        "getMe" => Ok(json!({
            "id": ctx.bot.id,
            "is_bot": true,
            "first_name": ctx.bot.first_name,
            "username": ctx.bot.username,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        })
        .into()),
        "logOut" | "close" => Ok(json!(true).into()),
        "setWebhook" => set_webhook(&mut ctx, params),
        "deleteWebhook" => Ok(delete_webhook(ctx.bot, params.flag("drop_pending_updates"))),
        "getWebhookInfo" => Ok(webhook_info(ctx.bot).into()),
        "sendMessage" => send_message(&mut ctx, params),
        "editMessageText" => edit_message_text(&mut ctx, params),
        "deleteMessage" => delete_message(&mut ctx, params),
        "sendPhoto" => send_file(&mut ctx, params, MessageKind::Photo),
        "sendVideo" => send_file(&mut ctx, params, MessageKind::Video),
        "sendAudio" => send_file(&mut ctx, params, MessageKind::Audio),
        "sendDocument" => send_file(&mut ctx, params, MessageKind::Document),
        "sendVoice" => send_file(&mut ctx, params, MessageKind::Voice),
        "sendChatAction" => send_chat_action(&mut ctx, params),
        "getFile" => get_file(&mut ctx, params),
        "setMyCommands" => set_my_commands(&mut ctx, params),
        "getMyCommands" => get_my_commands(&mut ctx, params),
        "deleteMyCommands" => delete_my_commands(&mut ctx, params),
        _ => Err(Failure::new(404, "Not Found")),
    };
    drop(state);
    shared.bump();
    answer
}

struct Ctx<'a> {
    token: &'a str,
    bot: &'a mut BotState,
    files: &'a mut Files,
    users: &'a HashMap<i64, UserInfo>,
}

/// The chat a method targets: known, and not blocked.
fn target_chat(ctx: &mut Ctx<'_>, params: &Params) -> Result<i64, Failure> {
    let raw = params
        .text("chat_id")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Failure::bad("chat_id is empty"))?;
    let chat_id: i64 = raw
        .trim()
        .parse()
        .map_err(|_| Failure::bad("chat not found"))?;
    let chat = ctx
        .bot
        .chats
        .get(&chat_id)
        .ok_or_else(|| Failure::bad("chat not found"))?;
    if chat.blocked {
        return Err(Failure::new(403, "Forbidden: bot was blocked by the user"));
    }
    Ok(chat_id)
}

/// The message a send replies to, from `reply_parameters` or
/// `reply_to_message_id`.
fn reply_target(ctx: &Ctx<'_>, chat_id: i64, params: &Params) -> Result<Option<i64>, Failure> {
    let (id, allow_without) = match params.json("reply_parameters")? {
        Some(rp) => (
            rp.get("message_id").and_then(Value::as_i64),
            rp.get("allow_sending_without_reply")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        None => (
            params.int("reply_to_message_id")?,
            params.flag("allow_sending_without_reply"),
        ),
    };
    let Some(id) = id else { return Ok(None) };
    if ctx.bot.chats[&chat_id].messages.contains_key(&id) {
        Ok(Some(id))
    } else if allow_without {
        Ok(None)
    } else {
        Err(Failure::bad("message to be replied not found"))
    }
}

#[allow(clippy::too_many_arguments)]
fn post_message(
    ctx: &mut Ctx<'_>,
    chat_id: i64,
    kind: MessageKind,
    text: Option<String>,
    media: Option<Value>,
    file_id: Option<String>,
    reply_to: Option<i64>,
    reply_markup: Option<Value>,
) -> (i64, Value) {
    let chat = ctx.bot.chats.get_mut(&chat_id).expect("checked before");
    let id = chat.next_id;
    chat.next_id += 1;
    chat.messages.insert(
        id,
        Msg {
            id,
            author: Author::Bot,
            date: now(),
            kind,
            text,
            entities: None,
            media,
            file_id,
            reply_to,
            reply_markup,
            edit_date: None,
            history: Vec::new(),
        },
    );
    (id, render(ctx.bot, ctx.users, chat_id, id, true))
}

fn send_message(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let text = params.text("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Failure::bad("message text is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Failure::bad("message is too long"));
    }
    let reply_to = reply_target(ctx, chat_id, params)?;
    let markup = params.json("reply_markup")?;
    let (message_id, rendered) = post_message(
        ctx,
        chat_id,
        MessageKind::Text,
        Some(text.clone()),
        None,
        None,
        reply_to,
        markup,
    );
    ctx.bot.sent.push(SentMessage {
        chat_id,
        message_id,
        kind: MessageKind::Text,
        text: Some(text),
        parse_mode: params.text("parse_mode"),
        upload: None,
        file_ref: None,
        file_id: None,
        reply_to,
    });
    Ok(rendered.into())
}

fn edit_message_text(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    if params.text("inline_message_id").is_some() {
        return Err(Failure::bad("MESSAGE_ID_INVALID"));
    }
    let chat_id = target_chat(ctx, params)?;
    let message_id = params
        .int("message_id")?
        .ok_or_else(|| Failure::bad("message identifier is not specified"))?;
    let text = params.text("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Failure::bad("message text is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Failure::bad("MESSAGE_TOO_LONG"));
    }
    let markup = params.json("reply_markup")?;
    let chat = ctx.bot.chats.get_mut(&chat_id).expect("checked before");
    let message = chat
        .messages
        .get_mut(&message_id)
        .ok_or_else(|| Failure::bad("message to edit not found"))?;
    if message.author != Author::Bot {
        return Err(Failure::bad("message can't be edited"));
    }
    if message.kind != MessageKind::Text {
        return Err(Failure::bad("there is no text in the message to edit"));
    }
    if message.text.as_deref() == Some(text.as_str()) && message.reply_markup == markup {
        return Err(Failure::bad(NOT_MODIFIED));
    }
    let previous = message.text.replace(text).unwrap_or_default();
    message.history.push(previous);
    message.reply_markup = markup;
    message.edit_date = Some(now());
    Ok(render(ctx.bot, ctx.users, chat_id, message_id, true).into())
}

fn delete_message(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let message_id = params
        .int("message_id")?
        .ok_or_else(|| Failure::bad("message identifier is not specified"))?;
    let chat = ctx.bot.chats.get_mut(&chat_id).expect("checked before");
    chat.messages
        .remove(&message_id)
        .ok_or_else(|| Failure::bad("message to delete not found"))?;
    Ok(json!(true).into())
}

fn send_file(ctx: &mut Ctx<'_>, params: &Params, kind: MessageKind) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let caption = params.text("caption").filter(|c| !c.is_empty());
    if caption
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CAPTION_CHARS)
    {
        return Err(Failure::bad("message caption is too long"));
    }
    let field = kind.field();
    let source = params
        .source(field)?
        .ok_or_else(|| Failure::bad(&format!("there is no {field} in the request")))?;
    let reply_to = reply_target(ctx, chat_id, params)?;
    let number = |name: &str| -> Result<u32, Failure> {
        Ok(params.int(name)?.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    };
    let (upload, file_ref, media, file_id) = match source {
        Source::Upload(upload) => {
            let spec = FileSpec {
                kind,
                upload: upload.clone(),
                duration: number("duration")?,
                width: number("width")?,
                height: number("height")?,
            };
            let (mut media, id) = store_file(ctx.files, ctx.token, spec)?;
            if kind == MessageKind::Audio {
                for extra in ["performer", "title"] {
                    if let Some(v) = params.text(extra) {
                        media[extra] = json!(v);
                    }
                }
            }
            (Some(upload), None, media, id)
        }
        Source::Ref(reference) => {
            let file = if reference.starts_with("http://") || reference.starts_with("https://") {
                let name = reference
                    .rsplit('/')
                    .next()
                    .filter(|n| n.contains('.'))
                    .map(str::to_owned);
                let mime = name.as_deref().and_then(guess_mime).map(str::to_owned);
                let file = new_file_record(ctx.files, ctx.token, kind, Bytes::new(), mime, name);
                keep(ctx.files, file.clone());
                file
            } else {
                ctx.files
                    .by_id
                    .get(&reference)
                    .filter(|f| f.owner == ctx.token)
                    .cloned()
                    .ok_or_else(|| Failure::bad("wrong file identifier/HTTP URL specified"))?
            };
            let media = file_json(&file, kind);
            (None, Some(reference), media, file.id)
        }
    };
    let (message_id, rendered) = post_message(
        ctx,
        chat_id,
        kind,
        caption.clone(),
        Some(media),
        Some(file_id.clone()),
        reply_to,
        params.json("reply_markup")?,
    );
    ctx.bot.sent.push(SentMessage {
        chat_id,
        message_id,
        kind,
        text: caption,
        parse_mode: params.text("parse_mode"),
        upload,
        file_ref,
        file_id: Some(file_id),
        reply_to,
    });
    Ok(rendered.into())
}

fn send_chat_action(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    target_chat(ctx, params)?;
    let action = params.text("action").unwrap_or_default();
    if action.is_empty() {
        return Err(Failure::bad("action is empty"));
    }
    if !CHAT_ACTIONS.contains(&action.as_str()) {
        return Err(Failure::bad("wrong parameter action in request"));
    }
    Ok(json!(true).into())
}

fn get_file(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let id = params
        .text("file_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Failure::bad("file_id is empty"))?;
    let file = ctx
        .files
        .by_id
        .get(&id)
        .filter(|f| f.owner == ctx.token)
        .ok_or_else(|| Failure::bad("invalid file_id"))?;
    if file.bytes.len() > MAX_DOWNLOAD_BYTES {
        return Err(Failure::bad("file is too big"));
    }
    Ok(json!({
        "file_id": file.id,
        "file_unique_id": file.unique_id,
        "file_size": file.bytes.len(),
        "file_path": file.path,
    })
    .into())
}

fn scope_and_language(params: &Params) -> Result<(Value, String), Failure> {
    let scope = params
        .json("scope")?
        .unwrap_or_else(|| json!({ "type": "default" }));
    if !scope.get("type").is_some_and(Value::is_string) {
        return Err(Failure::bad("can't parse BotCommandScope JSON object"));
    }
    let language = params.text("language_code").unwrap_or_default();
    Ok((scope, language))
}

fn set_my_commands(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let list = params
        .json("commands")?
        .ok_or_else(|| Failure::bad("parameter \"commands\" is required"))?;
    let Value::Array(items) = list else {
        return Err(Failure::bad("can't parse commands JSON object"));
    };
    if items.len() > 100 {
        return Err(Failure::bad("too many commands specified"));
    }
    let mut commands = Vec::new();
    for item in items {
        let command = item.get("command").and_then(Value::as_str).unwrap_or("");
        let description = item
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let valid = (1..=32).contains(&command.len())
            && command
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Failure::bad("BOT_COMMAND_INVALID"));
        }
        if !(1..=256).contains(&description.chars().count()) {
            return Err(Failure::bad("command description must be non-empty"));
        }
        commands.push(Command {
            command: command.to_owned(),
            description: description.to_owned(),
        });
    }
    let (scope, language) = scope_and_language(params)?;
    ctx.bot
        .commands
        .retain(|(s, l, _)| !(s == &scope && l == &language));
    if !commands.is_empty() {
        ctx.bot.commands.push((scope, language, commands));
    }
    Ok(json!(true).into())
}

fn get_my_commands(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let (scope, language) = scope_and_language(params)?;
    let commands: Vec<Value> = ctx
        .bot
        .commands
        .iter()
        .find(|(s, l, _)| s == &scope && l == &language)
        .map(|(_, _, c)| {
            c.iter()
                .map(|c| json!({ "command": c.command, "description": c.description }))
                .collect()
        })
        .unwrap_or_default();
    Ok(Value::Array(commands).into())
}

fn delete_my_commands(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let (scope, language) = scope_and_language(params)?;
    ctx.bot
        .commands
        .retain(|(s, l, _)| !(s == &scope && l == &language));
    Ok(json!(true).into())
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn set_webhook(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
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

fn delete_webhook(bot: &mut BotState, drop_pending: bool) -> Reply {
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

fn webhook_info(bot: &BotState) -> Value {
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

async fn get_updates(shared: &Arc<Shared>, token: &str, params: &Params) -> Answer {
    let offset = params.int("offset")?;
    let limit = params.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = params.int("timeout")?.unwrap_or(0).clamp(0, 3600) as u64;
    let allowed = params.json("allowed_updates")?;
    let mut changed = shared.changed.subscribe();
    let generation = {
        let mut state = shared.lock();
        let bot = state.bots.get_mut(token).expect("checked before");
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
        bot.poll_generation
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
async fn deliver(shared: Arc<Shared>, token: String) {
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
