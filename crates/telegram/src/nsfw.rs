//! `/nsfw on|off`: a group's admins allow adult content there, or stop it.
//!
//! Whether adult content is allowed is the scheduler's decision; a group's
//! setting is one thing it decides from, and only the bot can see who the
//! group's admins are. So the bot asks Telegram (`getChatMember`: the
//! sender must be the group's `creator` or an `administrator`) and only
//! then reports the change (`PUT /api/v1/telegram/chats/{chat_id}/nsfw`).
//! `/nsfw` alone shows the setting. Private chats are never NSFW. The words
//! are the chat crate's (`tessera_chat::words`).

use teloxide_core::requests::Requester;
use teloxide_core::types::{ChatId, UserId};

use tessera_api::client::Client;
use tessera_chat::words;
use tessera_core::UserRef;

use crate::stars::command;

/// The command menu's entry.
pub const COMMAND: (&str, &str) = (
    "nsfw",
    "Group admins: allow adult content here (/nsfw on) or stop it (/nsfw off)",
);

/// What `/nsfw` asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsfwCommand {
    Show,
    Set(bool),
    /// Something other than `on` or `off`.
    Unclear,
}

/// The `/nsfw` command in `text`, if it is one for this bot.
pub fn parse(text: &str, username: Option<&str>) -> Option<NsfwCommand> {
    let (name, args) = command(text, username)?;
    if name != "nsfw" {
        return None;
    }
    Some(match args.to_ascii_lowercase().as_str() {
        "" => NsfwCommand::Show,
        "on" => NsfwCommand::Set(true),
        "off" => NsfwCommand::Set(false),
        _ => NsfwCommand::Unclear,
    })
}

/// The answer to `/nsfw` from `user` (Telegram's `from`) in `chat`.
pub async fn answer(
    tg: &teloxide_core::Bot,
    api: &Client,
    chat: ChatId,
    private: bool,
    from: UserId,
    user: &UserRef,
    asked: NsfwCommand,
) -> String {
    let now = chrono::Utc::now();
    if private {
        return words::NSFW_PRIVATE_CHAT.into();
    }
    let enabled = match asked {
        NsfwCommand::Unclear => return words::NSFW_USAGE.into(),
        NsfwCommand::Show => {
            return match api.chat_nsfw(chat.0).await {
                Ok(setting) => words::nsfw_state(&setting),
                Err(e) => words::api_error(&e, now),
            }
        }
        NsfwCommand::Set(enabled) => enabled,
    };
    match tg.get_chat_member(chat, from).await {
        Ok(member) if member.is_privileged() => {}
        Ok(_) => return words::NSFW_ADMINS_ONLY.into(),
        Err(e) => {
            tracing::warn!(chat = chat.0, error = %e, "getChatMember failed");
            return words::NSFW_UNCHECKED.into();
        }
    }
    match api.set_chat_nsfw(chat.0, enabled, user).await {
        Ok(setting) => words::nsfw_changed(setting.enabled),
        Err(e) => words::api_error(&e, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_command() {
        assert_eq!(parse("/nsfw", None), Some(NsfwCommand::Show));
        assert_eq!(parse("/nsfw ON", None), Some(NsfwCommand::Set(true)));
        assert_eq!(
            parse("/nsfw@tess off", Some("tess")),
            Some(NsfwCommand::Set(false))
        );
        assert_eq!(parse("/nsfw maybe", None), Some(NsfwCommand::Unclear));
        assert_eq!(parse("/nsfw@other on", Some("tess")), None);
        assert_eq!(parse("/imagine nsfw", None), None);
    }
}
