//! Where replies go once an interaction token has expired (15 minutes): the
//! interaction's channel, with the bot token; and where the bot may not post
//! there (403: Missing Access 50001, Missing Permissions 50013, or the
//! channel is gone, 10003), the asker's direct messages (`POST
//! /users/@me/channels` with `recipient_id`, then a message in that
//! channel). A user who takes no direct messages (50007, "Cannot send
//! messages to this user") is out of reach: that is logged in words and
//! the reply reported gone, so the chat core stops retrying it.

use twilight_http::api_error::ApiError;
use twilight_http::error::ErrorType;
use twilight_model::http::attachment::Attachment;
use twilight_model::id::marker::{ChannelMarker, MessageMarker};
use twilight_model::id::Id;

use tessera_chat::SendError;

use crate::messenger::{chunks, send_failed, Discord, Target};

/// Why a post with the bot token did not land.
enum Post {
    /// Discord refused the bot this channel: try the user's DMs.
    Refused(twilight_http::Error),
    Failed(SendError),
}

fn code(e: &twilight_http::Error) -> Option<u64> {
    match e.kind() {
        ErrorType::Response {
            error: ApiError::General(g),
            ..
        } => Some(g.code),
        _ => None,
    }
}

fn classify(e: twilight_http::Error) -> Post {
    let forbidden = matches!(e.kind(), ErrorType::Response { status, .. } if status.get() == 403);
    if forbidden || matches!(code(&e), Some(50001 | 50013 | 10003)) {
        Post::Refused(e)
    } else {
        Post::Failed(send_failed(e))
    }
}

/// Discord's words for a refusal, without the request (whose path may hold
/// an id worth keeping out of logs).
fn why(e: &twilight_http::Error) -> String {
    match e.kind() {
        ErrorType::Response {
            error: ApiError::General(g),
            status,
            ..
        } => format!("{} {} (code {})", status.get(), g.message, g.code),
        _ => e.to_string(),
    }
}

impl Discord {
    /// Sends text with the bot token to the interaction's channel, or to
    /// the user's DMs where the channel is refused; answers where it went.
    pub(crate) async fn fallback_text(
        &self,
        t: &Target<'_>,
        text: &str,
    ) -> Result<(Id<ChannelMarker>, Id<MessageMarker>), SendError> {
        let refused = match self.post_text(t.channel, text).await {
            Ok(id) => return Ok((t.channel, id)),
            Err(Post::Failed(e)) => return Err(e),
            Err(Post::Refused(e)) => e,
        };
        let dm = self.dm_channel(t, &refused).await?;
        match self.post_text(dm, text).await {
            Ok(id) => Ok((dm, id)),
            Err(Post::Failed(e)) => Err(e),
            Err(Post::Refused(e)) => Err(self.unreachable(t, &refused, &e)),
        }
    }

    /// Sends a file as [`Discord::fallback_text`] sends text.
    pub(crate) async fn fallback_file(
        &self,
        t: &Target<'_>,
        attachment: &[Attachment],
        caption: &str,
    ) -> Result<(), SendError> {
        let refused = match self.post_file(t.channel, attachment, caption).await {
            Ok(()) => return Ok(()),
            Err(Post::Failed(e)) => return Err(e),
            Err(Post::Refused(e)) => e,
        };
        let dm = self.dm_channel(t, &refused).await?;
        match self.post_file(dm, attachment, caption).await {
            Ok(()) => Ok(()),
            Err(Post::Failed(e)) => Err(e),
            Err(Post::Refused(e)) => Err(self.unreachable(t, &refused, &e)),
        }
    }

    async fn post_text(
        &self,
        channel: Id<ChannelMarker>,
        text: &str,
    ) -> Result<Id<MessageMarker>, Post> {
        let mut first = None;
        for part in chunks(text) {
            let m = self
                .http
                .create_message(channel)
                .content(&part)
                .await
                .map_err(classify)?
                .model()
                .await
                .map_err(|e| Post::Failed(SendError::Failed(e.to_string())))?;
            first.get_or_insert(m.id);
        }
        first.ok_or_else(|| Post::Failed(SendError::Failed("nothing sent".into())))
    }

    async fn post_file(
        &self,
        channel: Id<ChannelMarker>,
        attachment: &[Attachment],
        caption: &str,
    ) -> Result<(), Post> {
        let mut request = self.http.create_message(channel).attachments(attachment);
        if !caption.is_empty() {
            request = request.content(caption);
        }
        request.await.map(|_| ()).map_err(classify)
    }

    /// The DM channel with the interaction's user, after `refused` in the
    /// channel.
    async fn dm_channel(
        &self,
        t: &Target<'_>,
        refused: &twilight_http::Error,
    ) -> Result<Id<ChannelMarker>, SendError> {
        let Some(user) = t.user else {
            tracing::warn!(
                channel = %t.channel,
                refused = %why(refused),
                "the interaction token expired and the bot may not post in the channel; \
                 this reply names no user to send a direct message to, so it is lost"
            );
            return Err(SendError::Gone(format!(
                "the channel refused the bot: {}",
                why(refused)
            )));
        };
        let opened = match self.http.create_private_channel(user).await {
            Ok(response) => response
                .model()
                .await
                .map_err(|e| SendError::Failed(e.to_string())),
            Err(e) => match classify(e) {
                Post::Failed(e) => Err(e),
                Post::Refused(e) => Err(self.unreachable(t, refused, &e)),
            },
        }?;
        tracing::info!(
            channel = %t.channel,
            user = %user,
            refused = %why(refused),
            "the interaction token expired and the bot may not post in the channel; \
             replying in a direct message"
        );
        Ok(opened.id)
    }

    /// Neither the channel nor the user's DMs take the reply: said in the
    /// log, and reported gone so nobody retries.
    fn unreachable(
        &self,
        t: &Target<'_>,
        channel: &twilight_http::Error,
        dm: &twilight_http::Error,
    ) -> SendError {
        tracing::warn!(
            channel = %t.channel,
            user = ?t.user.map(|u| u.get()),
            channel_refused = %why(channel),
            dm_refused = %why(dm),
            "the interaction token expired, the bot may not post in the channel, and the user \
             takes no direct messages from it: the reply cannot be delivered"
        );
        SendError::Gone(format!(
            "the channel refused the bot ({}) and so did the user's direct messages ({})",
            why(channel),
            why(dm)
        ))
    }
}
