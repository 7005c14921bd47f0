//! Tessera's Discord frontend (seed section 4.1).
//!
//! Each configured instance is one Discord application. By default it keeps a
//! gateway connection (which works from behind NAT) and receives slash
//! command interactions there; optionally ([`config::Mode::Http`]) Discord
//! POSTs them to an endpoint this process serves, checked with the
//! application's Ed25519 key ([`endpoint`]). Either way the interaction is
//! deferred at once (Discord's deadline is three seconds), then handed to the
//! shared chat core ([`tessera_chat::Bot`]), which creates the job on the
//! public API and keeps the deferred response up to date until the output
//! is sent as a follow-up.
//!
//! The chat core's "chat" is `"{channel id}/{interaction token}"` and its
//! progress message is the interaction's original response (`@original`), so
//! a restarted process can still edit it and deliver (a token lives 15
//! minutes; after that, replies go to the channel with the bot token).
//!
//! Must not: touch the database or a worker; log a token or an API key.

pub mod config;
pub mod endpoint;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use twilight_gateway::{
    CloseFrame, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_http::api_error::ApiError;
use twilight_http::error::ErrorType;
use twilight_model::application::command::Command as AppCommand;
use twilight_model::application::interaction::application_command::{
    CommandData, CommandOptionValue,
};
use twilight_model::application::interaction::{Interaction, InteractionData, InteractionType};
use twilight_model::channel::message::MessageFlags;
use twilight_model::http::attachment::Attachment as OutAttachment;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};
use twilight_model::id::marker::{ApplicationMarker, ChannelMarker, MessageMarker};
use twilight_model::id::Id;

use tessera_api::client::Client;
use tessera_api::internal::ArtifactKind;
use tessera_chat::{Audio, Bot, BotSettings, Incoming, Messenger, OutFile, SendError};
use tessera_core::{Capability, Platform, UserRef};

pub use config::{BotInstance, DiscordConfig, Mode};

/// Longest message content Discord takes, in characters.
const MAX_CONTENT_CHARS: usize = 2000;
/// The progress message: the interaction's original response.
const ORIGINAL: &str = "@original";
/// Discord's gateway, used when `gateway_url` names no proxy.
const DISCORD_GATEWAY: &str = "wss://gateway.discord.gg";

/// Sends through Discord's REST API: interaction responses and follow-ups
/// while the interaction token lives, channel messages after.
#[derive(Clone)]
pub struct Discord {
    http: Arc<twilight_http::Client>,
    app: Id<ApplicationMarker>,
    /// Interaction tokens whose deferred original response is still empty:
    /// the first text for them fills it.
    fresh: Arc<Mutex<HashSet<String>>>,
    /// Channel messages standing in for expired original responses.
    moved: Arc<Mutex<HashMap<String, Id<MessageMarker>>>>,
}

/// Where a reply goes.
struct Target<'a> {
    channel: Id<ChannelMarker>,
    token: &'a str,
}

fn target(chat: &str) -> Result<Target<'_>, SendError> {
    // The text holds an interaction token: never repeat it in an error.
    let bad = || SendError::Gone("not a Discord reply target".into());
    let (channel, token) = chat.split_once('/').ok_or_else(bad)?;
    let channel = channel
        .parse::<u64>()
        .ok()
        .and_then(Id::new_checked)
        .ok_or_else(bad)?;
    if token.is_empty() {
        return Err(bad());
    }
    Ok(Target { channel, token })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a failed REST call means for the reply.
enum Failure {
    /// The interaction token expired (15 minutes) or is unknown: use the channel.
    TokenExpired,
    Send(SendError),
}

fn failure(e: twilight_http::Error) -> Failure {
    match e.kind() {
        ErrorType::Unauthorized => Failure::TokenExpired,
        ErrorType::Response { error, status, .. } => {
            let code = match error {
                ApiError::General(g) => Some(g.code),
                _ => None,
            };
            match (status.get(), code) {
                // Unknown Webhook, Invalid Webhook Token, Unknown Interaction.
                (_, Some(10015 | 50027 | 10062)) | (401, _) => Failure::TokenExpired,
                // Unknown Channel, Missing Access, Cannot send messages to this user.
                (_, Some(10003 | 50001 | 50007 | 50013)) | (403, _) => {
                    Failure::Send(SendError::Gone(e.to_string()))
                }
                _ => Failure::Send(SendError::Failed(e.to_string())),
            }
        }
        _ => Failure::Send(SendError::Failed(e.to_string())),
    }
}

/// Discord's "Unknown Message" (10008) or "Unknown Webhook" (10015): what
/// an edit answers before Discord has applied the interaction's deferral.
fn not_acknowledged_yet(e: &twilight_http::Error) -> bool {
    matches!(e.kind(), ErrorType::Response { error: ApiError::General(g), .. } if g.code == 10008 || g.code == 10015)
}

fn chunks(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec!["(empty)".into()];
    }
    chars
        .chunks(MAX_CONTENT_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

fn send_failed(e: twilight_http::Error) -> SendError {
    match failure(e) {
        Failure::Send(e) => e,
        Failure::TokenExpired => SendError::Failed("Discord refused the bot token".into()),
    }
}

impl Discord {
    pub fn new(http: Arc<twilight_http::Client>, app: Id<ApplicationMarker>) -> Self {
        Self {
            http,
            app,
            fresh: Arc::default(),
            moved: Arc::default(),
        }
    }

    /// Notes that an interaction was deferred and its original is empty.
    fn deferred(&self, token: &str) {
        lock(&self.fresh).insert(token.to_owned());
    }

    /// Forgets a deferred interaction once handled; answers whether its
    /// original response was never filled.
    fn handled(&self, token: &str) -> bool {
        lock(&self.fresh).remove(token)
    }

    /// Edits the original response. In HTTP mode the deferral travels in the
    /// endpoint's answer, so the first edit may reach Discord before the
    /// deferral has been applied ("Unknown Message" or "Unknown Webhook"):
    /// that is retried for a few seconds before the token counts as expired.
    async fn update_original(&self, token: &str, text: &str) -> Result<(), twilight_http::Error> {
        let client = self.http.interaction(self.app);
        let mut wait = Duration::from_millis(100);
        loop {
            match client.update_response(token).content(Some(text)).await {
                Ok(_) => return Ok(()),
                Err(e) if wait < Duration::from_secs(3) && not_acknowledged_yet(&e) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn channel_text(
        &self,
        channel: Id<ChannelMarker>,
        text: &str,
    ) -> Result<Id<MessageMarker>, SendError> {
        let mut first = None;
        for part in chunks(text) {
            let m = self
                .http
                .create_message(channel)
                .content(&part)
                .await
                .map_err(send_failed)?
                .model()
                .await
                .map_err(|e| SendError::Failed(e.to_string()))?;
            first.get_or_insert(m.id);
        }
        first.ok_or_else(|| SendError::Failed("nothing sent".into()))
    }

    async fn followup_text(&self, token: &str, text: &str) -> Result<String, Failure> {
        let client = self.http.interaction(self.app);
        let mut first = None;
        for part in chunks(text) {
            let m = client
                .create_followup(token)
                .content(&part)
                .await
                .map_err(failure)?
                .model()
                .await
                .map_err(|e| Failure::Send(SendError::Failed(e.to_string())))?;
            first.get_or_insert(m.id.to_string());
        }
        Ok(first.unwrap_or_default())
    }
}

#[async_trait]
impl Messenger for Discord {
    async fn finished(&self, chat: &str) {
        if let Ok(t) = target(chat) {
            lock(&self.fresh).remove(t.token);
            lock(&self.moved).remove(t.token);
        }
    }

    async fn send_text(&self, chat: &str, text: &str) -> Result<String, SendError> {
        let t = target(chat)?;
        let parts = chunks(text);
        if self.handled(t.token) {
            // The deferred response is waiting for its first words.
            match self.update_original(t.token, &parts[0]).await {
                Ok(_) => {
                    if parts.len() > 1 {
                        let rest: String = parts[1..].concat();
                        match self.followup_text(t.token, &rest).await {
                            Ok(_) => {}
                            Err(Failure::Send(e)) => return Err(e),
                            Err(Failure::TokenExpired) => {
                                self.channel_text(t.channel, &rest).await?;
                            }
                        }
                    }
                    return Ok(ORIGINAL.into());
                }
                Err(e) => match failure(e) {
                    Failure::TokenExpired => {}
                    Failure::Send(e) => return Err(e),
                },
            }
        } else {
            match self.followup_text(t.token, text).await {
                Ok(id) => return Ok(id),
                Err(Failure::Send(e)) => return Err(e),
                Err(Failure::TokenExpired) => {}
            }
        }
        let id = self.channel_text(t.channel, text).await?;
        Ok(format!("c{id}"))
    }

    async fn edit_text(&self, chat: &str, message: &str, text: &str) -> Result<(), SendError> {
        let t = target(chat)?;
        let text: String = text.chars().take(MAX_CONTENT_CHARS).collect();
        if let Some(id) = message.strip_prefix('c') {
            let id = id
                .parse::<u64>()
                .ok()
                .and_then(Id::new_checked)
                .ok_or_else(|| SendError::Failed(format!("{message:?} is not a message id")))?;
            self.http
                .update_message(t.channel, id)
                .content(Some(&text))
                .await
                .map_err(send_failed)?;
            return Ok(());
        }
        let moved = lock(&self.moved).get(t.token).copied();
        if let Some(id) = moved {
            self.http
                .update_message(t.channel, id)
                .content(Some(&text))
                .await
                .map_err(send_failed)?;
            return Ok(());
        }
        let client = self.http.interaction(self.app);
        let result = if message == ORIGINAL {
            lock(&self.fresh).remove(t.token);
            self.update_original(t.token, &text).await
        } else {
            let id = message
                .parse::<u64>()
                .ok()
                .and_then(Id::new_checked)
                .ok_or_else(|| SendError::Failed(format!("{message:?} is not a message id")))?;
            client
                .update_followup(t.token, id)
                .content(Some(&text))
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => match failure(e) {
                Failure::Send(e) => Err(e),
                Failure::TokenExpired => {
                    // The progress message can no longer be edited: a channel
                    // message takes its place from now on.
                    let id = self.channel_text(t.channel, &text).await?;
                    lock(&self.moved).insert(t.token.to_owned(), id);
                    Ok(())
                }
            },
        }
    }

    async fn send_file(&self, chat: &str, file: OutFile) -> Result<(), SendError> {
        let t = target(chat)?;
        if file.kind == ArtifactKind::Text {
            let text = String::from_utf8_lossy(&file.bytes).into_owned();
            return self.send_text(chat, &text).await.map(|_| ());
        }
        let attachment = [OutAttachment::from_bytes(
            format!("tessera.{}", file.format),
            file.bytes.to_vec(),
            0,
        )];
        let caption: String = file
            .caption
            .unwrap_or_default()
            .chars()
            .take(MAX_CONTENT_CHARS)
            .collect();
        let client = self.http.interaction(self.app);
        let mut request = client.create_followup(t.token).attachments(&attachment);
        if !caption.is_empty() {
            request = request.content(&caption);
        }
        match request.await {
            Ok(_) => return Ok(()),
            Err(e) => match failure(e) {
                Failure::Send(e) => return Err(e),
                Failure::TokenExpired => {}
            },
        }
        let mut request = self.http.create_message(t.channel).attachments(&attachment);
        if !caption.is_empty() {
            request = request.content(&caption);
        }
        request.await.map(|_| ()).map_err(send_failed)
    }
}

/// The application commands an instance registers: the chat core's commands
/// with Discord options in place of free text.
pub fn application_commands(capabilities: &[Capability]) -> Vec<AppCommand> {
    tessera_chat::command::commands_for(capabilities)
        .into_iter()
        // `/start` is Telegram's convention; Discord lists commands itself.
        .filter(|c| c.name != "start")
        .map(|c| {
            let string = |name: &str, description: &str, required: bool| {
                json!({"type": 3, "name": name, "description": description, "required": required})
            };
            let options = match c.name {
                "imagine" | "video" => vec![
                    string("prompt", "What to make", true),
                    string("ar", "Aspect ratio, for example 16:9", false),
                    json!({"type": 4, "name": "seed", "description": "Seed, for a repeatable result", "required": false, "min_value": 0}),
                    string("model", "Model id, within your plan", false),
                ],
                "ask" => vec![string("prompt", "Your question", true)],
                "say" => vec![string("text", "The words to say", true)],
                "transcribe" => vec![
                    json!({"type": 11, "name": "file", "description": "A voice message or audio file", "required": true}),
                ],
                _ => vec![],
            };
            // The first line of the chat core's description, within Discord's 100 characters.
            let description: String = c
                .description
                .split(':')
                .next()
                .unwrap_or(c.description)
                .chars()
                .take(100)
                .collect();
            serde_json::from_value(json!({
                "type": 1,
                "name": c.name,
                "description": description,
                "options": options,
                "version": "1",
            }))
            .expect("a well-formed command")
        })
        .collect()
}

/// Reads a slash command into the chat core's command. Job commands keep
/// their options apart (a prompt is taken verbatim, so `--seed` inside it is
/// just words); the others are parsed as their text would be.
pub fn slash_command(
    data: &CommandData,
    capabilities: &[Capability],
) -> Result<Option<tessera_chat::command::Command>, tessera_chat::command::CommandError> {
    let mut prompt = String::new();
    let mut flags = Vec::new();
    for option in &data.options {
        let value = match &option.value {
            CommandOptionValue::String(s) => s.clone(),
            CommandOptionValue::Integer(i) => i.to_string(),
            CommandOptionValue::Number(n) => n.to_string(),
            CommandOptionValue::Boolean(b) => b.to_string(),
            _ => continue,
        };
        match option.name.as_str() {
            "prompt" | "text" => prompt = value,
            name => flags.push((name.to_owned(), value)),
        }
    }
    match data.name.as_str() {
        "imagine" | "video" | "ask" | "say" => {
            tessera_chat::command::job_with_options(&data.name, &prompt, &flags, capabilities)
                .map(Some)
        }
        name => tessera_chat::command::parse(&format!("/{name}"), None, capabilities),
    }
}

/// Whether only the user who asked may see the answer: a link code is theirs
/// alone (whoever enters it on the website links the asker to their own
/// account), so `/link` is answered with an ephemeral message.
pub fn answers_privately(interaction: &Interaction) -> bool {
    matches!(
        &interaction.data,
        Some(InteractionData::ApplicationCommand(data)) if data.name == "link"
    )
}

/// What one instance needs to handle interactions, whichever way they come.
#[derive(Clone)]
pub struct Handler {
    pub bot: Bot<Discord>,
    download: reqwest::Client,
    max_audio_bytes: u64,
}

impl Handler {
    /// Handles an interaction that has already been deferred. Never fails:
    /// problems become words in the response.
    async fn handle(&self, interaction: Interaction) {
        let dc = self.bot.messenger().clone();
        let token = interaction.token.clone();
        let Some(chat) = interaction
            .channel
            .as_ref()
            .map(|c| c.id)
            .map(|channel| format!("{channel}/{token}"))
        else {
            dc.handled(&token);
            return;
        };
        let fresh = || lock(&dc.fresh).contains(&token);
        match self.incoming(&interaction, &chat).await {
            Ok(Some((incoming, user))) => self.bot.on_admitted(incoming, user).await,
            Ok(None) => {}
            Err(words) => {
                if fresh() {
                    let _ = dc.send_text(&chat, &words).await;
                }
            }
        }
        // The deferred response must not think forever.
        if fresh() {
            let _ = dc
                .send_text(&chat, "There is nothing for me to do with that.")
                .await;
        }
        dc.handled(&token);
    }

    /// Reads an application command into the chat core's terms, downloading
    /// an audio attachment. `Err` carries words for the user.
    async fn incoming(
        &self,
        interaction: &Interaction,
        chat: &str,
    ) -> Result<Option<(Incoming, UserRef)>, String> {
        let Some(InteractionData::ApplicationCommand(data)) = &interaction.data else {
            return Ok(None);
        };
        let Some(user) = interaction.author_id() else {
            return Ok(None);
        };
        // Rate limits come before any download.
        let Some(user_ref) = self.bot.admit(chat, &user.to_string()).await else {
            return Err("Please wait a little before your next request.".into());
        };
        let attachment = data.options.iter().find_map(|o| match o.value {
            CommandOptionValue::Attachment(id) => {
                data.resolved.as_ref().and_then(|r| r.attachments.get(&id))
            }
            _ => None,
        });
        let mut audio = None;
        if let Some(a) = attachment {
            let content_type = a.content_type.clone().unwrap_or_default();
            if !content_type.starts_with("audio/") && !content_type.starts_with("video/") {
                return Err(
                    "That file is not audio: send a voice message or an audio file.".into(),
                );
            }
            if a.size > self.max_audio_bytes {
                return Err(format!(
                    "That file is too big: at most {} MB, please.",
                    self.max_audio_bytes / (1024 * 1024)
                ));
            }
            let bytes = self.fetch(&a.url).await.map_err(|e| {
                tracing::warn!(error = %e, "could not download an attachment");
                "I couldn't fetch that file from Discord; please send it again.".to_owned()
            })?;
            audio = Some(Audio {
                content_type,
                bytes,
            });
        }
        let command = if audio.is_some() {
            None
        } else {
            match slash_command(data, &self.bot.settings().capabilities) {
                Ok(Some(command)) => Some(command),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            }
        };
        let incoming = Incoming {
            chat: chat.to_owned(),
            message_id: interaction.id.to_string(),
            user_id: user.to_string(),
            text: None,
            audio,
            command,
        };
        Ok(Some((incoming, user_ref)))
    }

    async fn fetch(&self, url: &str) -> anyhow::Result<Bytes> {
        let response = self.download.get(url).send().await?.error_for_status()?;
        if response
            .content_length()
            .is_some_and(|n| n > self.max_audio_bytes)
        {
            anyhow::bail!("attachment larger than announced");
        }
        Ok(response.bytes().await?)
    }

    /// Defers an interaction that came over the gateway, then handles it.
    fn spawn_from_gateway(&self, interaction: Interaction) {
        if interaction.kind != InteractionType::ApplicationCommand {
            return;
        }
        let this = self.clone();
        self.bot.spawn_handler(async move {
            let dc = this.bot.messenger().clone();
            let response = InteractionResponse {
                kind: InteractionResponseType::DeferredChannelMessageWithSource,
                data: answers_privately(&interaction).then(|| InteractionResponseData {
                    flags: Some(MessageFlags::EPHEMERAL),
                    ..Default::default()
                }),
            };
            let deferred = dc
                .http
                .interaction(dc.app)
                .create_response(interaction.id, &interaction.token, &response)
                .await;
            if let Err(e) = deferred {
                tracing::warn!(bot_id = %this.bot.settings().bot_id, error = %e, "could not defer an interaction");
                return;
            }
            dc.deferred(&interaction.token);
            this.handle(interaction).await;
        });
    }

    /// Handles an interaction that the endpoint deferred in its HTTP answer.
    pub(crate) fn spawn_deferred(&self, interaction: Interaction) {
        let this = self.clone();
        self.bot.messenger().deferred(&interaction.token);
        self.bot
            .spawn_handler(async move { this.handle(interaction).await });
    }
}

/// One running bot instance.
pub struct Instance {
    pub handler: Handler,
    /// Cancelled when the gateway connection ends for good by itself (a
    /// close code that forbids reconnecting, such as a revoked token).
    pub lost: CancellationToken,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    pub fn bot_id(&self) -> &str {
        &self.handler.bot.settings().bot_id
    }

    /// Stops receiving interactions and following jobs. Jobs keep running in
    /// the scheduler; the next process resumes and delivers them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
        self.handler.bot.shutdown().await;
    }
}

/// What an instance needs besides its config entry.
pub use tessera_chat::secret::BotSecrets as Secrets;

/// Starts one bot instance: checks the token, registers its commands, resumes
/// its jobs, then (gateway mode) connects to the gateway. In HTTP mode the
/// caller routes the endpoint's interactions to [`Instance::handler`].
pub async fn start(
    config: &DiscordConfig,
    instance: &BotInstance,
    secrets: Secrets,
) -> anyhow::Result<Instance> {
    let mut builder = twilight_http::Client::builder()
        .token(secrets.token.expose().to_owned())
        .timeout(Duration::from_secs(30))
        // An expired interaction token answers 401; that must not disable the
        // bot token for every later call.
        .remember_invalid_token(false);
    if let Some((authority, plain_http)) = config.api_proxy() {
        builder = builder.proxy(authority, plain_http);
    }
    let http = Arc::new(builder.build());
    // Discord out of reach is waited for a while; a refused token is not.
    let mut pause = Duration::from_secs(1);
    let app = loop {
        match http.current_user_application().await {
            Ok(response) => break response.model().await?,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorType::RequestError | ErrorType::RequestTimedOut
                ) && pause.as_secs() <= 16 =>
            {
                tracing::warn!(bot_id = %instance.id, error = %e, retry_in_s = pause.as_secs(), "cannot reach Discord");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorType::Unauthorized | ErrorType::Response { .. }
                ) =>
            {
                anyhow::bail!("bot {}: Discord refused its token: {e}", instance.id)
            }
            Err(e) => anyhow::bail!("bot {}: cannot reach Discord: {e}", instance.id),
        }
    };
    let commands = application_commands(&instance.capabilities);
    if let Err(e) = http
        .interaction(app.id)
        .set_global_commands(&commands)
        .await
    {
        tracing::warn!(bot_id = %instance.id, error = %e, "could not register the commands");
    }
    let api = Client::new(&config.scheduler_url, secrets.api_key.expose().to_owned())?;
    let settings = BotSettings {
        platform: Platform::Discord,
        bot_id: instance.id.clone(),
        username: None,
        capabilities: instance.capabilities.clone(),
        limits: instance.limits.clone(),
        poll_ms: config.job_poll_ms,
        min_edit_ms: config.min_edit_ms,
    };
    let bot = Bot::new(settings, api, Discord::new(http, app.id));
    if let Err(e) = bot.resume().await {
        tracing::warn!(bot_id = %instance.id, error = %e, "could not resume jobs now");
    }
    let handler = Handler {
        bot,
        download: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()?,
        max_audio_bytes: config.max_audio_bytes,
    };
    let stop = CancellationToken::new();
    let lost = CancellationToken::new();
    let task = match instance.mode {
        Mode::Gateway => {
            let mut gateway = twilight_gateway::ConfigBuilder::new(
                secrets.token.expose().to_owned(),
                // Interactions arrive whatever the intents.
                Intents::empty(),
            );
            if config.gateway_url.trim_end_matches('/') != DISCORD_GATEWAY {
                gateway = gateway.proxy_url(config.gateway_url.trim_end_matches('/').to_owned());
            }
            let shard = Shard::with_config(ShardId::ONE, gateway.build());
            tracing::info!(bot_id = %instance.id, "discord bot connecting to the gateway");
            Some(tokio::spawn(listen(
                shard,
                handler.clone(),
                stop.clone(),
                lost.clone(),
            )))
        }
        Mode::Http => {
            tracing::info!(bot_id = %instance.id, "discord bot waiting for interactions over HTTP");
            None
        }
    };
    Ok(Instance {
        handler,
        lost,
        stop,
        task,
    })
}

async fn listen(
    mut shard: Shard,
    handler: Handler,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let bot_id = handler.bot.settings().bot_id.clone();
    let wanted = EventTypeFlags::INTERACTION_CREATE | EventTypeFlags::READY;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = shard.next_event(wanted) => event,
        };
        match event {
            None => {
                tracing::error!(%bot_id, "Discord closed the gateway for good (token revoked, sharding required or intents refused); this bot stops");
                lost.cancel();
                return;
            }
            Some(Ok(Event::InteractionCreate(i))) => handler.spawn_from_gateway(i.0),
            Some(Ok(Event::Ready(ready))) => {
                tracing::info!(%bot_id, application_id = %ready.application.id, "gateway ready")
            }
            Some(Ok(_)) => {}
            // The shard reconnects (or resumes) by itself; fatal closes end the stream.
            Some(Err(e)) => tracing::warn!(%bot_id, error = %e, "gateway receive error"),
        }
    }
    shard.close(CloseFrame::NORMAL);
}

/// Runs every configured instance until `stop` is cancelled, with one HTTP
/// listener for the instances in HTTP mode.
pub async fn run(config: DiscordConfig, stop: CancellationToken) -> anyhow::Result<()> {
    let mut running = Vec::new();
    let mut endpoints = Vec::new();
    for instance in &config.bots {
        let secrets = Secrets {
            token: instance.token()?,
            api_key: instance.api_key()?,
        };
        let started = start(&config, instance, secrets).await?;
        if instance.mode == Mode::Http {
            endpoints.push((
                instance.id.to_string(),
                instance.verifying_key()?,
                started.handler.clone(),
            ));
        }
        running.push(started);
    }
    let server = if endpoints.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(config.interactions_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen for interactions on {}: {e}",
                    config.interactions_listen
                )
            })?;
        tracing::info!(address = %config.interactions_listen, "interactions endpoint listening");
        let app = endpoint::router(endpoints, &config.scheduler_url);
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }))
    };
    let lost = futures::future::select_all(
        running
            .iter()
            .map(|i| Box::pin(i.lost.clone().cancelled_owned())),
    );
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        (_, which, _) = lost => Err(anyhow::anyhow!(
            "bot {} lost its gateway connection for good",
            running[which].bot_id()
        )),
    };
    stop.cancel();
    if let Some(server) = server {
        server.await??;
    }
    for instance in running {
        instance.shutdown().await;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_follow_the_capabilities_within_discord_limits() {
        let image = application_commands(&[Capability::Image]);
        let names: Vec<&str> = image.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["imagine", "status", "cancel", "quota", "link", "help"]
        );
        let all = application_commands(&[
            Capability::Image,
            Capability::Video,
            Capability::Text,
            Capability::SpeechToText,
            Capability::TextToSpeech,
        ]);
        assert_eq!(all.len(), 10);
        for c in &all {
            assert!((1..=32).contains(&c.name.len()), "{}", c.name);
            assert!(
                (1..=100).contains(&c.description.chars().count()),
                "{}",
                c.name
            );
            for o in &c.options {
                assert!((1..=100).contains(&o.description.chars().count()));
            }
        }
        let transcribe = all.iter().find(|c| c.name == "transcribe").unwrap();
        assert_eq!(
            transcribe.options[0].kind,
            twilight_model::application::command::CommandOptionType::Attachment
        );
    }

    fn job_params(data: serde_json::Value) -> serde_json::Value {
        let data: CommandData = serde_json::from_value(data).unwrap();
        match slash_command(&data, &[Capability::Image]).unwrap().unwrap() {
            tessera_chat::command::Command::Job { params, .. } => params,
            other => panic!("not a job: {other:?}"),
        }
    }

    #[test]
    fn slash_options_become_the_jobs_parameters() {
        let params = job_params(json!({
            "id": "11", "name": "imagine", "type": 1,
            "options": [
                {"name": "seed", "type": 4, "value": 7},
                {"name": "prompt", "type": 3, "value": "a lighthouse at dawn"},
                {"name": "ar", "type": 3, "value": "16:9"}
            ]
        }));
        assert_eq!(params["prompt"], "a lighthouse at dawn");
        assert_eq!(params["seed"], 7);
        assert_eq!(params["aspect_ratio"], "16:9");
        // A prompt is words, even when they look like options.
        let params = job_params(json!({
            "id": "11", "name": "imagine", "type": 1,
            "options": [{"name": "prompt", "type": 3, "value": "a sign reading --seed 5"}]
        }));
        assert_eq!(params["prompt"], "a sign reading --seed 5");
        assert!(params.get("seed").is_none());
        // Commands without options are the chat core's.
        let data: CommandData =
            serde_json::from_value(json!({"id": "12", "name": "quota", "type": 1})).unwrap();
        assert_eq!(
            slash_command(&data, &[Capability::Image]).unwrap(),
            Some(tessera_chat::command::Command::Quota)
        );
        let data: CommandData =
            serde_json::from_value(json!({"id": "14", "name": "link", "type": 1})).unwrap();
        assert_eq!(
            slash_command(&data, &[Capability::Image]).unwrap(),
            Some(tessera_chat::command::Command::Link)
        );
        let data: CommandData = serde_json::from_value(
            json!({"id": "13", "name": "video", "type": 1, "options": [{"name": "prompt", "type": 3, "value": "x"}]}),
        )
        .unwrap();
        assert!(
            slash_command(&data, &[Capability::Image]).is_err(),
            "not served here"
        );
    }

    #[test]
    fn reply_targets_carry_channel_and_token() {
        let t = target("123/abc/def").unwrap();
        assert_eq!(t.channel.get(), 123);
        assert_eq!(t.token, "abc/def");
        assert!(target("nope").is_err());
        assert!(target("0/abc").is_err());
        assert!(target("12/").is_err());
    }
}
