//! Tessera's Telegram frontend (ARCHITECTURE.md): bot instances that turn chat
//! messages into jobs on the public API and reply with the results.
//!
//! The Bot API is spoken through `teloxide-core` (requests, types, errors,
//! file downloads); what a bot does with a message is `tessera-chat`'s
//! platform-neutral [`tessera_chat::Bot`]. This crate only connects the two:
//! long polling of `getUpdates`, reading voice messages and audio files,
//! `setMyCommands`, and a [`Messenger`] that sends, edits and uploads while
//! honouring Telegram's flood control (`retry_after`) and trying again when
//! the connection breaks.
//!
//! Telegram's size rules are followed, not discovered by failing: a photo
//! over 10 MB, over 10,000 pixels of width plus height or more than 20 times
//! as long as wide goes as a document (as does one Telegram refuses as a
//! photo), and a file over `max_upload_bytes` (the Bot API's 50 MB) is not
//! uploaded at all: the shared bot sends a download link instead.
//!
//! It also copes with Bot API servers that are not Telegram's own: a server
//! that answers `getUpdates` at once, whatever its `timeout`, is polled at
//! most once every [`EMPTY_POLL_FLOOR`] while it has nothing; a `getMe` with
//! only the fields the Bot API requires (older local servers) is enough to
//! start ([`me`]).
//!
//! Must not: touch the database or a worker; log a token or an API key.

pub mod config;
pub mod me;
pub mod nsfw;
pub mod refund_orders;
pub mod stars;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::net::Download;
use teloxide_core::payloads::{
    GetUpdatesSetters, SendAudioSetters, SendDocumentSetters, SendPhotoSetters, SendVideoSetters,
    SetWebhookSetters,
};
use teloxide_core::requests::Requester;
use teloxide_core::types::{
    AllowedUpdate, BotCommand, ChatId, InputFile, Message, MessageId, UpdateKind,
};
use tokio_util::sync::CancellationToken;

use tessera_api::client::Client;
use tessera_api::internal::ArtifactKind;
use tessera_chat::{Audio, Bot, BotSettings, Incoming, Messenger, OutFile, SendError};
use tessera_core::{Platform, UserRef};

pub use config::{BotInstance, TelegramConfig};

/// Longest text message Telegram takes, in UTF-16 code units.
const MAX_MESSAGE_UNITS: usize = 4096;
/// Flood-control waits honoured per call before giving up.
const FLOOD_RETRIES: u32 = 3;
/// Tries again after a broken connection per call, the pauses between them
/// doubling from [`FIRST_SEND_PAUSE`] (1, 2, 4 s), as the bot's start-up
/// waits for an unreachable server.
const TRANSPORT_RETRIES: u32 = 3;
const FIRST_SEND_PAUSE: Duration = Duration::from_secs(1);

/// Least time between the starts of two `getUpdates` calls when the first
/// answered nothing. A server that holds the poll for its `timeout`, as
/// Telegram does, never comes near it; one that answers `[]` at once (a
/// misconfigured local Bot API server or proxy) is asked once a second
/// instead of as fast as the network allows.
pub const EMPTY_POLL_FLOOR: Duration = Duration::from_secs(1);

/// Largest photo `sendPhoto` takes, bytes.
pub const MAX_PHOTO_BYTES: u64 = 10 * 1024 * 1024;
/// Largest width plus height of a photo, pixels.
pub const MAX_PHOTO_DIMENSIONS: u64 = 10_000;
/// Largest ratio of a photo's long side to its short side.
const MAX_PHOTO_RATIO: u64 = 20;

/// Whether Telegram takes an image of this size as a photo; when not, it
/// goes as a document. Unknown dimensions are tried as a photo.
pub fn fits_as_photo(bytes: u64, width: Option<u32>, height: Option<u32>) -> bool {
    if bytes > MAX_PHOTO_BYTES {
        return false;
    }
    match (width, height) {
        (Some(w), Some(h)) => {
            let (w, h) = (u64::from(w), u64::from(h));
            w + h <= MAX_PHOTO_DIMENSIONS && w.max(h) <= MAX_PHOTO_RATIO * w.min(h).max(1)
        }
        _ => true,
    }
}

/// Telegram refused a photo for its size or shape (it would take the file
/// as a document).
fn photo_refused(e: &RequestError) -> bool {
    matches!(e, RequestError::Api(ApiError::Unknown(text))
        if ["PHOTO_INVALID_DIMENSIONS", "PHOTO_SAVE_FILE_INVALID"].iter().any(|c| text.contains(c)))
}

/// Sends through the Bot API.
#[derive(Clone)]
pub struct Telegram {
    bot: teloxide_core::Bot,
    /// Largest upload, bytes (`max_upload_bytes`).
    max_upload: u64,
}

fn chat_id(chat: &str) -> Result<ChatId, SendError> {
    chat.parse()
        .map(ChatId)
        .map_err(|_| SendError::Gone(format!("{chat:?} is not a Telegram chat id")))
}

fn message_id(id: &str) -> Result<MessageId, SendError> {
    id.parse()
        .map(MessageId)
        .map_err(|_| SendError::Failed(format!("{id:?} is not a Telegram message id")))
}

fn send_error(e: RequestError) -> SendError {
    match e {
        RequestError::Api(
            ApiError::BotBlocked
            | ApiError::ChatNotFound
            | ApiError::UserDeactivated
            | ApiError::BotKicked
            | ApiError::BotKickedFromSupergroup,
        ) => SendError::Gone(e.to_string()),
        RequestError::Api(ApiError::MessageIsTooLong | ApiError::EditedMessageIsTooLong) => {
            SendError::Refused("it is larger than Telegram accepts".into())
        }
        RequestError::Api(ApiError::RequestEntityTooLarge) => {
            SendError::TooLarge("Telegram answered \"Request Entity Too Large\"".into())
        }
        other => SendError::Failed(other.to_string()),
    }
}

/// Whether a failed call lost its connection (refused, reset, cut off
/// before the answer was complete) rather than being answered. A call that
/// timed out is not counted: it already waited long, and the bot's own
/// delivery retries take over.
fn broke_off(e: &RequestError) -> bool {
    match e {
        RequestError::Network(e) => !e.is_timeout(),
        RequestError::Io(_) => true,
        _ => false,
    }
}

/// Runs a Bot API call, waiting out flood control (`429 retry_after`) a few
/// times, and trying again a few times, after growing pauses, when the
/// connection breaks. A send whose answer was lost may have been taken, so
/// a retried message can arrive twice; a reply lost for good is worse.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, RequestError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RequestError>>,
{
    let mut floods = 0;
    let mut breaks = 0;
    let mut pause = FIRST_SEND_PAUSE;
    loop {
        match call().await {
            Err(RequestError::RetryAfter(wait)) if floods < FLOOD_RETRIES => {
                floods += 1;
                tracing::info!(wait_s = wait.seconds(), "Telegram flood control; waiting");
                tokio::time::sleep(wait.duration()).await;
            }
            Err(e) if broke_off(&e) && breaks < TRANSPORT_RETRIES => {
                breaks += 1;
                tracing::warn!(error = %e, retry_in_s = pause.as_secs(), "a Bot API call lost its connection; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return other,
        }
    }
}

/// Splits text into messages Telegram takes: it counts length in UTF-16
/// code units (an emoji is two), at most 4096 a message.
fn chunks(text: &str) -> Vec<String> {
    if text.is_empty() {
        return vec!["(empty)".into()];
    }
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut units = 0;
    for c in text.chars() {
        if units + c.len_utf16() > MAX_MESSAGE_UNITS {
            parts.push(std::mem::take(&mut part));
            units = 0;
        }
        units += c.len_utf16();
        part.push(c);
    }
    parts.push(part);
    parts
}

#[async_trait]
impl Messenger for Telegram {
    async fn send_text(&self, chat: &str, text: &str) -> Result<String, SendError> {
        let chat = chat_id(chat)?;
        let mut first = None;
        for part in chunks(text) {
            let sent = with_retries(|| self.bot.send_message(chat, part.clone()).into_future())
                .await
                .map_err(send_error)?;
            first.get_or_insert(sent.id.0.to_string());
        }
        Ok(first.unwrap_or_default())
    }

    async fn edit_text(&self, chat: &str, message: &str, text: &str) -> Result<(), SendError> {
        let (chat, id) = (chat_id(chat)?, message_id(message)?);
        let text = chunks(text).swap_remove(0);
        match with_retries(|| {
            self.bot
                .edit_message_text(chat, id, text.clone())
                .into_future()
        })
        .await
        {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(send_error(e)),
        }
    }

    fn upload_limit(&self, _announced: Option<u64>) -> u64 {
        self.max_upload
    }

    async fn send_file(&self, chat: &str, file: OutFile) -> Result<(), SendError> {
        let chat = chat_id(chat)?;
        let size = file.bytes.len() as u64;
        if size > self.max_upload {
            return Err(SendError::TooLarge(format!(
                "{size} bytes, over max_upload_bytes"
            )));
        }
        let name = format!("tessera.{}", file.format);
        let input = || InputFile::memory(file.bytes.clone()).file_name(name.clone());
        let caption = file.caption.clone().unwrap_or_default();
        let format = file.format.as_str();
        let document = || {
            with_retries(|| {
                self.bot
                    .send_document(chat, input())
                    .caption(caption.clone())
                    .into_future()
            })
        };
        let sent = match file.kind {
            ArtifactKind::Image
                if matches!(format, "png" | "jpg" | "jpeg" | "webp")
                    && fits_as_photo(size, file.width, file.height) =>
            {
                match with_retries(|| {
                    self.bot
                        .send_photo(chat, input())
                        .caption(caption.clone())
                        .into_future()
                })
                .await
                {
                    // Dimensions the worker did not report, or rules
                    // stricter than documented: the file goes as it is.
                    Err(e) if photo_refused(&e) => {
                        tracing::info!(error = %e, "Telegram refused a photo; sending it as a document");
                        document().await
                    }
                    other => other,
                }
            }
            ArtifactKind::Video if format == "mp4" => {
                with_retries(|| {
                    self.bot
                        .send_video(chat, input())
                        .caption(caption.clone())
                        .into_future()
                })
                .await
            }
            ArtifactKind::Audio if matches!(format, "mp3" | "m4a") => {
                with_retries(|| {
                    self.bot
                        .send_audio(chat, input())
                        .caption(caption.clone())
                        .into_future()
                })
                .await
            }
            ArtifactKind::Text => {
                let text = String::from_utf8_lossy(&file.bytes).into_owned();
                return self.send_text(&chat.0.to_string(), &text).await.map(|_| ());
            }
            // Animated PNG, WAV, photos too large to be photos and the like:
            // Telegram takes them as documents.
            _ => document().await,
        };
        sent.map(|_| ()).map_err(send_error)
    }
}

use std::future::IntoFuture;

/// Turns updates into messages for one instance, however they arrive.
#[derive(Clone)]
pub struct Handler {
    pub bot: Bot<Telegram>,
    tg: teloxide_core::Bot,
    max_audio_bytes: u32,
    /// Plans sold for Telegram Stars.
    seller: stars::Seller,
}

/// The updates a bot asks Telegram for.
fn wanted_updates() -> Vec<AllowedUpdate> {
    vec![AllowedUpdate::Message, AllowedUpdate::PreCheckoutQuery]
}

impl Handler {
    /// Handles one update in the background.
    pub fn dispatch(&self, update: teloxide_core::types::Update) {
        match update.kind {
            UpdateKind::Message(m) => {
                let this = self.clone();
                self.bot
                    .spawn_handler(async move { this.on_message(m).await });
            }
            UpdateKind::PreCheckoutQuery(q) => {
                let seller = self.seller.clone();
                self.bot
                    .spawn_handler(async move { seller.pre_checkout(q).await });
            }
            _ => {}
        }
    }

    async fn on_message(&self, m: Message) {
        // Money already taken: relayed whatever the rate limits.
        if let Some(payment) = m.successful_payment() {
            return self.seller.paid(&m, payment).await;
        }
        if let teloxide_core::types::MessageKind::RefundedPayment(r) = &m.kind {
            return self.seller.refunded(&m, &r.refunded_payment).await;
        }
        if let (Some(text), Some(from)) = (m.text(), m.from.as_ref()) {
            let username = self.bot.settings().username.clone();
            if let Some(asked) = nsfw::parse(text, username.as_deref()) {
                if from.is_bot {
                    return;
                }
                let chat = m.chat.id;
                let Some(user) = self
                    .bot
                    .admit(&chat.0.to_string(), &from.id.0.to_string())
                    .await
                else {
                    return;
                };
                let private = m.chat.is_private();
                let api = &self.seller.api;
                let text = nsfw::answer(&self.tg, api, chat, private, from.id, &user, asked).await;
                let _ = self
                    .bot
                    .messenger()
                    .send_text(&chat.0.to_string(), &text)
                    .await;
                return;
            }
            let name = stars::command(text, username.as_deref()).map(|(name, _)| name);
            let stars = stars::parse(text, username.as_deref());
            if !from.is_bot
                && (stars.is_some() || matches!(name.as_deref(), Some("help" | "start")))
            {
                let chat = m.chat.id;
                let Some(user) = self
                    .bot
                    .admit(&chat.0.to_string(), &from.id.0.to_string())
                    .await
                else {
                    return;
                };
                let text = match stars {
                    None => format!(
                        "{}\n/{}: {}",
                        stars::help(&tessera_chat::words::help(
                            &self.bot.settings().capabilities,
                        )),
                        nsfw::COMMAND.0,
                        nsfw::COMMAND.1
                    ),
                    Some(_) if !m.chat.is_private() => {
                        "Send /subscribe or /refund to me in a private chat.".to_owned()
                    }
                    Some(stars::StarsCommand::Subscribe(plan)) => {
                        return self.seller.subscribe(chat, &user, plan.as_deref()).await
                    }
                    Some(stars::StarsCommand::Refund) => {
                        return self.seller.refund(chat, from.id, &user).await
                    }
                };
                let _ = self
                    .bot
                    .messenger()
                    .send_text(&chat.0.to_string(), &text)
                    .await;
                return;
            }
        }
        let quota = m.chat.is_private()
            && m.text()
                .and_then(|t| stars::command(t, self.bot.settings().username.as_deref()))
                .is_some_and(|(name, _)| name == "quota");
        if let Some((incoming, user)) =
            read_message(&self.tg, &self.bot, &m, self.max_audio_bytes).await
        {
            self.bot.on_admitted(incoming, user.clone()).await;
            if quota {
                self.seller.offer_when_out(m.chat.id, &user).await;
            }
        }
    }
}

/// One running bot instance.
pub struct Instance {
    pub handler: Handler,
    /// The secret Telegram sends with each webhook request (webhook mode).
    pub webhook_secret: Option<config::Secret>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Carries out the refunds operators order ([`refund_orders`]).
    refunds: tokio::task::JoinHandle<()>,
}

impl Instance {
    pub fn bot_id(&self) -> &str {
        &self.handler.bot.settings().bot_id
    }

    /// Stops receiving updates and following jobs. Jobs keep running in the
    /// scheduler; the next process resumes and delivers them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
        let _ = self.refunds.await;
        self.handler.bot.shutdown().await;
    }
}

/// What an instance needs besides its config entry.
pub use tessera_chat::secret::BotSecrets as Secrets;

/// A random webhook secret: Telegram allows `A-Z a-z 0-9 _ -`, up to 256.
fn webhook_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}

/// Starts one bot instance: checks the token (`getMe`), registers its commands,
/// resumes its jobs, then long-polls for updates until shut down, or, with a
/// webhook configured, registers it (the caller serves [`webhook::router`]).
pub async fn start(
    config: &TelegramConfig,
    instance: &BotInstance,
    secrets: Secrets,
) -> anyhow::Result<Instance> {
    let api_url = reqwest::Url::parse(&config.api_url)?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(
            u64::from(config.poll_timeout_secs) + 15,
        ))
        .tcp_nodelay(true)
        .build()?;
    let tg =
        teloxide_core::Bot::with_client(secrets.token.expose(), http).set_api_url(api_url.clone());
    // Uploads and downloads of files get their own, longer, timeout.
    let files = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .build()?;
    let sender =
        teloxide_core::Bot::with_client(secrets.token.expose(), files).set_api_url(api_url.clone());
    // Telegram out of reach is waited for a while; a refused token is not.
    // Whatever the server answered instead of the bot is said as it was.
    let mut pause = Duration::from_secs(1);
    let me = loop {
        match me::get_me(&tg).await {
            Ok(me) => break me,
            Err(e @ (RequestError::Network(_) | RequestError::Io(_))) if pause.as_secs() <= 16 => {
                tracing::warn!(bot_id = %instance.id, error = %e, retry_in_s = pause.as_secs(), "cannot reach the Bot API server");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            // teloxide reads both `Unauthorized` and `Not Found` as this.
            Err(RequestError::Api(ApiError::InvalidToken)) => anyhow::bail!(
                "bot {}: the Bot API server at {api_url} answered getMe \"Unauthorized\" or \"Not Found\": \
                 its token is wrong, or api_url is not a Bot API server",
                instance.id
            ),
            Err(RequestError::Api(e)) => anyhow::bail!(
                "bot {}: the Bot API server answered getMe with an error: {e}",
                instance.id
            ),
            Err(RequestError::InvalidJson { source, raw }) => anyhow::bail!(
                "bot {}: the Bot API server at {api_url}: {}",
                instance.id,
                me::unreadable(&source, &raw)
            ),
            Err(e @ (RequestError::Network(_) | RequestError::Io(_))) => anyhow::bail!(
                "bot {}: cannot reach the Bot API server at {api_url}: {e}",
                instance.id
            ),
            Err(e) => anyhow::bail!(
                "bot {}: the Bot API server at {api_url} answered getMe with: {e}",
                instance.id
            ),
        }
    };
    if !me.is_bot {
        tracing::warn!(bot_id = %instance.id, id = me.id, "getMe answered a user that is not a bot");
    }
    let username = me.username.clone();
    let mut commands: Vec<BotCommand> = tessera_chat::command::commands_for(&instance.capabilities)
        .into_iter()
        .map(|c| BotCommand::new(c.name, c.description))
        .collect();
    // The plans for sale come before /help and /start, at the menu's end.
    let at = commands
        .iter()
        .position(|c| c.command == "help")
        .unwrap_or(commands.len());
    let ours = stars::COMMANDS.into_iter().chain([nsfw::COMMAND]);
    for (i, (name, description)) in ours.enumerate() {
        commands.insert(at + i, BotCommand::new(name, description));
    }
    if let Err(e) = tg.set_my_commands(commands).await {
        tracing::warn!(bot_id = %instance.id, error = %e, "could not register the command menu");
    }
    let api = Client::new(&config.scheduler_url, secrets.api_key.expose().to_owned())?;
    let seller = stars::Seller {
        tg: sender.clone(),
        api: api.clone(),
        bot_id: instance.id.to_string(),
    };
    let settings = BotSettings {
        platform: Platform::Telegram,
        bot_id: instance.id.clone(),
        username,
        capabilities: instance.capabilities.clone(),
        limits: instance.limits.clone(),
        poll_ms: config.job_poll_ms,
        min_edit_ms: config.min_edit_ms,
        site_url: config.site_url.clone(),
    };
    let bot = Bot::new(
        settings,
        api,
        Telegram {
            bot: sender.clone(),
            max_upload: config.max_upload_bytes,
        },
    );
    if let Err(e) = bot.resume().await {
        tracing::warn!(bot_id = %instance.id, error = %e, "could not resume jobs now");
    }
    let handler = Handler {
        bot,
        tg: sender,
        max_audio_bytes: config.max_audio_bytes,
        seller,
    };
    let stop = CancellationToken::new();
    let (task, webhook_secret) = match &config.webhook {
        None => {
            // Long polling and a webhook exclude each other.
            if let Err(e) = tg.delete_webhook().await {
                tracing::warn!(bot_id = %instance.id, error = %e, "could not remove a webhook");
            }
            let task = tokio::spawn(poll(
                handler.clone(),
                tg.clone(),
                config.poll_timeout_secs,
                stop.clone(),
            ));
            tracing::info!(bot_id = %instance.id, "telegram bot polling");
            (Some(task), None)
        }
        Some(w) => {
            let secret = webhook_secret();
            let url = format!(
                "{}/telegram/{}",
                w.public_url.trim_end_matches('/'),
                instance.id
            );
            let url = reqwest::Url::parse(&url)?;
            tg.set_webhook(url)
                .secret_token(secret.clone())
                .allowed_updates(wanted_updates())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("bot {}: Telegram refused the webhook: {e}", instance.id)
                })?;
            tracing::info!(bot_id = %instance.id, "telegram bot receiving updates on its webhook");
            (None, Some(config::Secret::new(secret)))
        }
    };
    // Started once the instance is sure to start, so it never outlives it.
    let refunds = tokio::spawn(refund_orders::run(
        handler.seller.clone(),
        Duration::from_secs(config.refund_poll_secs),
        stop.clone(),
    ));
    Ok(Instance {
        handler,
        webhook_secret,
        stop,
        task,
        refunds,
    })
}

async fn poll(
    handler: Handler,
    tg: teloxide_core::Bot,
    poll_timeout_secs: u32,
    stop: CancellationToken,
) {
    let bot_id = handler.bot.settings().bot_id.clone();
    let mut offset: i32 = 0;
    let mut failures: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let request = tg
            .get_updates()
            .offset(offset)
            .timeout(poll_timeout_secs)
            .allowed_updates(wanted_updates())
            .into_future();
        let answer = tokio::select! {
            _ = stop.cancelled() => break,
            a = request => a,
        };
        match answer {
            Ok(updates) if updates.is_empty() => {
                failures = 0;
                // A server that ignores `timeout` answers `[]` at once:
                // without a floor this loop would spin.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(started + EMPTY_POLL_FLOOR) => {}
                }
            }
            Ok(updates) => {
                failures = 0;
                for update in updates {
                    offset = offset.max(update.id.0 as i32 + 1);
                    handler.dispatch(update);
                }
            }
            Err(RequestError::RetryAfter(wait)) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait.duration()) => {}
                }
            }
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(500 * u64::from(failures.min(20)));
                tracing::warn!(%bot_id, error = %e, retry_in_ms = wait.as_millis() as u64, "getUpdates failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Reads a Telegram message into the bot's terms, downloading audio.
async fn read_message(
    tg: &teloxide_core::Bot,
    bot: &Bot<Telegram>,
    m: &Message,
    max_audio_bytes: u32,
) -> Option<(Incoming, UserRef)> {
    let user = m.from.as_ref()?;
    if user.is_bot {
        return None;
    }
    let chat = m.chat.id.0.to_string();
    let text = m.text().or(m.caption()).map(str::to_owned);
    // A private chat is a conversation with the bot; in a group only
    // commands are for it, whatever the bot's privacy mode lets through.
    if !m.chat.is_private() && !text.as_deref().is_some_and(|t| t.starts_with('/')) {
        return None;
    }
    // Rate limits come before any download.
    let user_ref = bot.admit(&chat, &user.id.0.to_string()).await?;
    // A link code is the asker's alone: whoever enters it on the website
    // links the asker to their own account. Not in front of a group.
    if !m.chat.is_private() && text.as_deref().is_some_and(|t| asks_for_link(bot, t)) {
        let _ = bot
            .messenger()
            .send_text(
                &chat,
                "Send /link to me in a private chat, so that only you see your code.",
            )
            .await;
        return None;
    }
    let audio_file = if let Some(v) = m.voice() {
        Some((v.file.clone(), v.mime_type.as_ref().map(|t| t.to_string())))
    } else if let Some(a) = m.audio() {
        Some((a.file.clone(), a.mime_type.as_ref().map(|t| t.to_string())))
    } else {
        m.document()
            .filter(|d| d.mime_type.as_ref().is_some_and(|t| t.type_() == "audio"))
            .map(|d| (d.file.clone(), d.mime_type.as_ref().map(|t| t.to_string())))
    };
    let mut audio = None;
    if let Some((file, mime)) = audio_file {
        if !bot.serves(tessera_core::Capability::SpeechToText) {
            let _ = bot
                .messenger()
                .send_text(
                    &chat,
                    "This bot doesn't transcribe audio. Send /help to see what it does.",
                )
                .await;
            return None;
        }
        if file.size > max_audio_bytes {
            let _ = bot
                .messenger()
                .send_text(
                    &chat,
                    &format!(
                        "That file is too big: at most {} MB, please.",
                        max_audio_bytes / (1024 * 1024)
                    ),
                )
                .await;
            return None;
        }
        match download(tg, &file.id.0).await {
            Ok(bytes) => {
                audio = Some(Audio {
                    content_type: mime.unwrap_or_else(|| "audio/ogg".into()),
                    bytes,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not download a voice message");
                let _ = bot
                    .messenger()
                    .send_text(
                        &chat,
                        "I couldn't fetch that audio from Telegram; please send it again.",
                    )
                    .await;
                return None;
            }
        }
    }
    if text.is_none() && audio.is_none() {
        return None;
    }
    let incoming = Incoming {
        message_id: format!("{chat}:{}", m.id.0),
        chat,
        user_id: user.id.0.to_string(),
        text,
        audio,
        command: None,
        upload_limit: None,
        // The scheduler looks up whether this chat's admins allowed adult
        // content (private chats never).
        context: Some(tessera_api::nsfw::JobContext::telegram(m.chat.id.0)),
        replied_to: m.reply_to_message().map(|r| r.id.0.to_string()),
    };
    Some((incoming, user_ref))
}

/// Whether `text` is this bot's `/link` command.
fn asks_for_link(bot: &Bot<Telegram>, text: &str) -> bool {
    let s = bot.settings();
    matches!(
        tessera_chat::command::parse(text, s.username.as_deref(), &s.capabilities),
        Ok(Some(tessera_chat::command::Command::Link))
    )
}

async fn download(tg: &teloxide_core::Bot, file_id: &str) -> anyhow::Result<Bytes> {
    let file = tg
        .get_file(teloxide_core::types::FileId(file_id.to_owned()))
        .await?;
    let mut buf: Vec<u8> = Vec::new();
    tg.download_file(&file.path, &mut buf).await?;
    Ok(Bytes::from(buf))
}

/// Runs every configured instance until `stop` is cancelled, with one HTTP
/// listener for all of them in webhook mode.
pub async fn run(config: TelegramConfig, stop: CancellationToken) -> anyhow::Result<()> {
    // The webhook's port is bound before any bot registers its webhook, so
    // Telegram's first POSTs wait in the backlog instead of being refused.
    let listener = match &config.webhook {
        None => None,
        Some(w) => Some(
            tokio::net::TcpListener::bind(w.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for webhooks on {}: {e}", w.listen))?,
        ),
    };
    let mut running = Vec::new();
    for instance in &config.bots {
        let secrets = Secrets {
            token: instance.token()?,
            api_key: instance.api_key()?,
        };
        running.push(start(&config, instance, secrets).await?);
    }
    let server = listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "webhook endpoint listening");
        }
        let app = webhook::router(&running, &config.scheduler_url);
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    });
    stop.cancelled().await;
    if let Some(server) = server {
        server.await??;
    }
    for instance in running {
        instance.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_over_telegrams_limits_are_documents() {
        let mb = 1024 * 1024;
        assert!(fits_as_photo(mb, Some(1024), Some(1024)));
        assert!(fits_as_photo(MAX_PHOTO_BYTES, Some(5000), Some(5000)));
        assert!(fits_as_photo(mb, None, None));
        assert!(!fits_as_photo(MAX_PHOTO_BYTES + 1, Some(512), Some(512)));
        assert!(!fits_as_photo(mb, Some(5001), Some(5000)));
        assert!(!fits_as_photo(mb, Some(4200), Some(200)));
        assert!(fits_as_photo(mb, Some(4000), Some(200)));
    }
}
