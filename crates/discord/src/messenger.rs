//! Replies through Discord's REST API: the deferred original response filled
//! and edited while the interaction token lives (15 minutes), follow-ups for
//! more text and files, and channel messages with the bot token after (or,
//! where the bot may not post in the channel, direct messages: `fallback`).
//!
//! Files larger than the interaction's `attachment_size_limit` are not
//! uploaded (the shared bot sends a download link), and an upload answered
//! 40005 "Request entity too large" is not tried again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use twilight_http::api_error::ApiError;
use twilight_http::error::ErrorType;
use twilight_model::http::attachment::Attachment as OutAttachment;
use twilight_model::id::marker::{ApplicationMarker, ChannelMarker, MessageMarker, UserMarker};
use twilight_model::id::Id;

use tessera_api::internal::ArtifactKind;
use tessera_chat::{Messenger, OutFile, SendError};

/// Longest message content Discord takes, in characters.
const MAX_CONTENT_CHARS: usize = 2000;
/// The progress message: the interaction's original response.
const ORIGINAL: &str = "@original";
/// Largest attachment when an interaction did not say (Discord's default
/// `attachment_size_limit`, 10 MiB).
pub const DEFAULT_ATTACHMENT_LIMIT: u64 = 10 * 1024 * 1024;

/// A message sent with the bot token: its channel and id.
type BotMessage = (Id<ChannelMarker>, Id<MessageMarker>);

/// Sends through Discord's REST API: interaction responses and follow-ups
/// while the interaction token lives, channel messages after.
#[derive(Clone)]
pub struct Discord {
    pub(crate) http: Arc<twilight_http::Client>,
    pub(crate) app: Id<ApplicationMarker>,
    /// Interaction tokens whose deferred original response is still empty:
    /// the first text for them fills it.
    pub(crate) fresh: Arc<Mutex<HashSet<String>>>,
    /// Channel (or direct) messages standing in for expired original
    /// responses: their channel and id.
    moved: Arc<Mutex<HashMap<String, BotMessage>>>,
}

/// Where a reply goes: `"{channel}:{user}/{token}"`, or
/// `"{channel}/{token}"` as jobs made before the user was kept say.
pub(crate) struct Target<'a> {
    pub(crate) channel: Id<ChannelMarker>,
    /// Who asked: direct messages reach them where the channel is refused.
    pub(crate) user: Option<Id<UserMarker>>,
    pub(crate) token: &'a str,
}

/// The chat core's "chat" for an interaction.
pub(crate) fn chat_of(
    channel: Id<ChannelMarker>,
    user: Option<Id<UserMarker>>,
    token: &str,
) -> String {
    match user {
        Some(user) => format!("{channel}:{user}/{token}"),
        None => format!("{channel}/{token}"),
    }
}

fn snowflake<T>(s: &str) -> Option<Id<T>> {
    s.parse::<u64>().ok().and_then(Id::new_checked)
}

fn target(chat: &str) -> Result<Target<'_>, SendError> {
    // The text holds an interaction token: never repeat it in an error.
    let bad = || SendError::Gone("not a Discord reply target".into());
    let (head, token) = chat.split_once('/').ok_or_else(bad)?;
    let (channel, user) = match head.split_once(':') {
        Some((channel, user)) => (channel, Some(snowflake(user).ok_or_else(bad)?)),
        None => (head, None),
    };
    let channel = snowflake(channel).ok_or_else(bad)?;
    if token.is_empty() {
        return Err(bad());
    }
    Ok(Target {
        channel,
        user,
        token,
    })
}

/// A message sent with the bot token, as the chat core keeps it: `c{id}` in
/// the interaction's channel, `c{channel}-{id}` elsewhere (a direct message).
fn bot_message(t: &Target<'_>, channel: Id<ChannelMarker>, id: Id<MessageMarker>) -> String {
    if channel == t.channel {
        format!("c{id}")
    } else {
        format!("c{channel}-{id}")
    }
}

fn parse_bot_message(t: &Target<'_>, message: &str) -> Result<BotMessage, SendError> {
    let bad = || SendError::Failed(format!("{message:?} is not a message id"));
    let rest = message.strip_prefix('c').ok_or_else(bad)?;
    let (channel, id) = match rest.split_once('-') {
        Some((channel, id)) => (
            channel
                .parse::<u64>()
                .ok()
                .and_then(Id::new_checked)
                .ok_or_else(bad)?,
            id,
        ),
        None => (t.channel, rest),
    };
    let id = id
        .parse::<u64>()
        .ok()
        .and_then(Id::new_checked)
        .ok_or_else(bad)?;
    Ok((channel, id))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
                // Request entity too large: a link instead, never again.
                (_, Some(40005)) | (413, _) => Failure::Send(SendError::TooLarge(e.to_string())),
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

pub(crate) fn chunks(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec!["(empty)".into()];
    }
    chars
        .chunks(MAX_CONTENT_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

pub(crate) fn send_failed(e: twilight_http::Error) -> SendError {
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
    pub(crate) fn deferred(&self, token: &str) {
        lock(&self.fresh).insert(token.to_owned());
    }

    /// Forgets a deferred interaction once handled; answers whether its
    /// original response was never filled.
    pub(crate) fn handled(&self, token: &str) -> bool {
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

    fn upload_limit(&self, announced: Option<u64>) -> u64 {
        announced.unwrap_or(DEFAULT_ATTACHMENT_LIMIT)
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
                                self.fallback_text(&t, &rest).await?;
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
        let (channel, id) = self.fallback_text(&t, text).await?;
        Ok(bot_message(&t, channel, id))
    }

    async fn edit_text(&self, chat: &str, message: &str, text: &str) -> Result<(), SendError> {
        let t = target(chat)?;
        let text: String = text.chars().take(MAX_CONTENT_CHARS).collect();
        let moved = if message.starts_with('c') {
            Some(parse_bot_message(&t, message)?)
        } else {
            lock(&self.moved).get(t.token).copied()
        };
        if let Some((channel, id)) = moved {
            self.http
                .update_message(channel, id)
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
                    let moved = self.fallback_text(&t, &text).await?;
                    lock(&self.moved).insert(t.token.to_owned(), moved);
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
        self.fallback_file(&t, &attachment, &caption).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_targets_carry_channel_user_and_token() {
        let t = target("123/abc/def").unwrap();
        assert_eq!(t.channel.get(), 123);
        assert_eq!(t.user, None);
        assert_eq!(t.token, "abc/def");
        let t = target("123:456/abc:d/ef").unwrap();
        assert_eq!((t.channel.get(), t.user.map(Id::get)), (123, Some(456)));
        assert_eq!(t.token, "abc:d/ef");
        assert_eq!(
            chat_of(Id::new(123), Some(Id::new(456)), "abc:d/ef"),
            "123:456/abc:d/ef"
        );
        assert!(target("nope").is_err());
        assert!(target("0/abc").is_err());
        assert!(target("12/").is_err());
        assert!(target("12:/abc").is_err());
        assert!(target("12:x/abc").is_err());
    }

    #[test]
    fn bot_messages_name_their_channel_when_it_is_not_the_interaction_s() {
        let t = target("123:456/tok").unwrap();
        let here = bot_message(&t, Id::new(123), Id::new(9));
        let dm = bot_message(&t, Id::new(77), Id::new(9));
        assert_eq!((here.as_str(), dm.as_str()), ("c9", "c77-9"));
        assert_eq!(
            parse_bot_message(&t, &here).unwrap(),
            (Id::new(123), Id::new(9))
        );
        assert_eq!(
            parse_bot_message(&t, &dm).unwrap(),
            (Id::new(77), Id::new(9))
        );
        assert!(parse_bot_message(&t, "c").is_err());
        assert!(parse_bot_message(&t, "c1-").is_err());
    }
}
