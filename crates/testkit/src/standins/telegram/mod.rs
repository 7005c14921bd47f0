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
//! - Payments in Telegram Stars, the currency of digital goods:
//!   `sendInvoice` and `createInvoiceLink` take `currency` `XTR`, an empty
//!   (or absent) `provider_token` and exactly one price; a link may carry
//!   `subscription_period`, which must be 2592000 (30 days), for at most
//!   10,000 Stars. The invoice message carries an `Invoice`; a link is
//!   `https://t.me/$...`. `answerPreCheckoutQuery` (`ok`, and
//!   `error_message` when not ok), `refundStarPayment` (`user_id`,
//!   `telegram_payment_charge_id`) and `editUserStarSubscription`
//!   (`is_canceled`). A test plays the buyer
//!   ([`TelegramStandIn::user_pays`]): a `pre_checkout_query` update, then,
//!   once the bot answered ok within the deadline (Telegram's is ten
//!   seconds), a `message` from the user with `successful_payment`
//!   (`subscription_expiration_date`, `is_recurring` and
//!   `is_first_recurring` for a subscription); [`TelegramStandIn::renew`]
//!   charges a subscription's next period (a `successful_payment` with no
//!   query first). A refund answers true once and queues a `message` with
//!   `refunded_payment`; a second one gets `CHARGE_ALREADY_REFUNDED`, an
//!   unknown charge (or another user's) `CHARGE_NOT_FOUND`. Charges,
//!   refunds and invoices are kept ([`TelegramStandIn::star_payments`],
//!   [`TelegramStandIn::star_refunds`], [`TelegramStandIn::invoices`]).
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
//! `PHOTO_SAVE_FILE_INVALID` (a photo over 10 MB) and
//! `PHOTO_INVALID_DIMENSIONS` (a photo over 10,000 pixels of width plus
//! height, or more than 20 times as long as wide), which `sendDocument` takes,
//! `invalid file_id` and `file is too big` (getFile over 20 MB), 413 for an
//! upload over 50 MB, and 429 `Too Many Requests: retry after N` when a test
//! floods a method ([`TelegramStandIn::flood`]).
//! For payments: `query is too old and response timeout expired or query
//! ID is invalid` (a late or repeated pre-checkout answer),
//! `CHARGE_ALREADY_REFUNDED` and `CHARGE_NOT_FOUND`; where Telegram's text
//! for a malformed invoice is not documented (a currency other than `XTR`,
//! a provider token, several prices, an amount of 0, a wrong subscription
//! period) the stand-in answers 400 with an upper-case reason of its own.
//!
//! Beyond Telegram's errors, a test can make it misbehave as other Bot API
//! servers do: ignore `getUpdates`' `timeout`
//! ([`TelegramStandIn::ignore_poll_timeout`]), break the connection of a
//! method's next calls ([`TelegramStandIn::break_connections`]), or answer
//! `getMe` with only the fields the Bot API requires
//! ([`TelegramStandIn::bare_get_me`]).
//!
//! Lengths are counted in Unicode characters; entity offsets
//! (`bot_command` entities on what simulated users type) in UTF-16 code
//! units, as the API documents. `parse_mode` is recorded, not applied.
//! Every call is recorded, as are the messages each bot sent (with their
//! uploaded bytes) and every chat as it stands, edits applied.
//!
//! The stand-in lives in one folder, a file per concern:
//!
//! - `mod.rs`: starting it (the routes), its URLs, registering bots, and
//!   stopping it;
//! - `types`: the values tests build and read back (messages as sent and as
//!   they stand, calls, commands, webhooks and their deliveries, what a
//!   simulated user sends);
//! - `state`: what the running stand-in holds per bot, chat and file, and how
//!   tests read it and wait for it to change;
//! - `api`: the Bot API's envelope (answers, Telegram's errors), parameters
//!   from queries, forms, JSON and multipart bodies, the dispatch of methods,
//!   flood control, and the command menu methods;
//! - `faults`: the misbehaviour a test switches on (polls that ignore their
//!   `timeout`, broken connections, a bare `getMe`);
//! - `messages`: sending, editing and deleting messages, chat actions, and
//!   `Message` objects as the API renders them;
//! - `files`: uploads, `file_id`s, photo sizes, `getFile` and downloads;
//! - `updates`: `getUpdates` long polling and webhooks with their retries;
//! - `users`: simulated users writing, sending voice messages and files, and
//!   blocking the bot.
//! - `payments`: Stars invoices and links, pre-checkout queries, simulated
//!   purchases and renewals, refunds and subscription cancellation.
//! - `members`: who administers a group ([`TelegramStandIn::set_chat_member_status`])
//!   and `getChatMember`.

mod api;
mod faults;
mod files;
mod members;
mod messages;
mod payments;
mod state;
mod types;
mod updates;
mod users;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use api::{api, Failure};
use faults::Faults;
use files::download;
use state::{BotState, Files, Shared, StateInner};
use updates::deliver;

pub use payments::{
    Checkout, SentInvoice, StarPayment, StarRefund, MAX_SUBSCRIPTION_STARS, PRE_CHECKOUT_DEADLINE,
    SUBSCRIPTION_PERIOD,
};
pub use types::{
    Author, Call, ChatMessage, Command, MessageKind, SentMessage, Upload, UserMessage, Webhook,
    WebhookDelivery,
};

/// Longest text message, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// Longest media caption, in characters.
pub const MAX_CAPTION_CHARS: usize = 1024;

/// Largest file `getFile` hands out.
pub const MAX_DOWNLOAD_BYTES: usize = 20 * 1024 * 1024;

/// Largest upload.
pub const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// Largest photo `sendPhoto` takes.
pub const MAX_PHOTO_BYTES: usize = 10 * 1024 * 1024;

/// Largest width plus height of a photo.
pub const MAX_PHOTO_DIMENSIONS: u64 = 10_000;

/// The first `update_id` a bot's queue hands out.
const FIRST_UPDATE_ID: u32 = 700_000_001;

/// Bot ids given to tokens that do not start with a numeric id.
const FIRST_BOT_ID: i64 = 7_000_000_001;

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

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
                    faults: Faults::default(),
                    payments: Default::default(),
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

impl TelegramStandIn {
    /// As `mutate`, with the simulated users' names at hand.
    fn mutate_with_users<T>(
        &self,
        token: &str,
        f: impl FnOnce(&mut BotState, &HashMap<i64, state::UserInfo>) -> T,
    ) -> T {
        let mut state = self.shared.lock();
        let StateInner { bots, users, .. } = &mut *state;
        let bot = bots
            .get_mut(token)
            .unwrap_or_else(|| panic!("no bot has that token; call add_bot first"));
        let value = f(bot, users);
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
