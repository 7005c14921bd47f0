//! What happens to an interaction once it arrives, over the gateway or the
//! HTTP endpoint: it is deferred (Discord's deadline is three seconds), its
//! user admitted, an audio attachment downloaded, and the command handed to
//! the chat core; problems become words in the deferred response.

use bytes::Bytes;
use twilight_model::application::interaction::application_command::CommandOptionValue;
use twilight_model::application::interaction::{Interaction, InteractionData, InteractionType};
use twilight_model::channel::message::MessageFlags;
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};

use tessera_chat::{Audio, Bot, Incoming, Messenger};
use tessera_core::UserRef;

use crate::commands::{answers_privately, is_subscribe, slash_command};
use crate::messenger::{chat_of, lock, Discord};
use crate::subscriptions;
use tessera_api::entitlements::EntitlementSource;
use tessera_api::nsfw::JobContext;

/// What one instance needs to handle interactions, whichever way they come.
#[derive(Clone)]
pub struct Handler {
    pub bot: Bot<Discord>,
    pub(crate) download: reqwest::Client,
    pub(crate) max_audio_bytes: u64,
    /// The public API, for relaying entitlements and reading the SKUs.
    pub(crate) api: tessera_api::Client,
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
            .map(|channel| chat_of(channel, interaction.author_id(), &token))
        else {
            dc.handled(&token);
            return;
        };
        let fresh = || lock(&dc.fresh).contains(&token);
        // The user's live entitlements first, so a fresh purchase counts
        // for the job this interaction makes.
        if let (false, Some(user)) = (interaction.entitlements.is_empty(), interaction.author_id())
        {
            let seen = interaction
                .entitlements
                .iter()
                .map(subscriptions::wire)
                .collect();
            subscriptions::relay(
                &self.api,
                &self.bot.settings().bot_id,
                &user.to_string(),
                EntitlementSource::Interaction,
                seen,
            )
            .await;
        }
        if is_subscribe(&interaction) {
            if self
                .bot
                .admit(
                    &chat,
                    &interaction
                        .author_id()
                        .map(|u| u.to_string())
                        .unwrap_or_default(),
                )
                .await
                .is_some()
            {
                self.subscribe(&token).await;
            }
            dc.handled(&token);
            return;
        }
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
            upload_limit: Some(interaction.attachment_size_limit),
            context: Some(channel_context(interaction)),
            replied_to: None,
        };
        Ok(Some((incoming, user_ref)))
    }

    /// Answers `/subscribe` in the deferred response: the plans sold here
    /// as premium buttons, or words saying why there are none.
    async fn subscribe(&self, token: &str) {
        let dc = self.bot.messenger();
        let (words, components) = subscriptions::offer(&self.api.discord_skus().await);
        let answered = dc
            .http
            .interaction(dc.app)
            .update_response(token)
            .content(Some(&words))
            .components(Some(&components))
            .await;
        if let Err(e) = answered {
            tracing::warn!(bot_id = %self.bot.settings().bot_id, error = %e, "could not answer /subscribe");
        }
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
    pub(crate) fn spawn_from_gateway(&self, interaction: Interaction) {
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

    /// Relays an entitlement dispatch from the gateway to the scheduler.
    pub(crate) fn spawn_entitlement(
        &self,
        source: EntitlementSource,
        e: twilight_model::application::monetization::Entitlement,
    ) {
        let Some(user) = e.user_id else {
            return;
        };
        let this = self.clone();
        self.bot.spawn_handler(async move {
            let bot_id = this.bot.settings().bot_id.to_string();
            subscriptions::relay(
                &this.api,
                &bot_id,
                &user.to_string(),
                source,
                vec![subscriptions::wire(&e)],
            )
            .await;
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

/// Whether the interaction's channel is age-restricted, as Discord says in
/// the interaction (`channel.nsfw`): the scheduler believes it from a
/// Discord key and decides. Direct messages are never NSFW.
fn channel_context(interaction: &Interaction) -> JobContext {
    let nsfw = interaction
        .guild_id
        .and(interaction.channel.as_ref())
        .map(|channel| channel.nsfw == Some(true));
    JobContext::discord(nsfw)
}
