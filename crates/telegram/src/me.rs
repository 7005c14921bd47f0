//! `getMe`, read for only what the Bot API requires of the answer.
//!
//! teloxide-core's `Me` insists on fields that Telegram has added over the
//! years (`can_join_groups`, `has_main_web_app`, ...), and older local Bot
//! API servers leave them out: a bot would then refuse to start against a
//! server that works. The bot needs only its username (for `/cmd@name`), so
//! it asks `getMe` through teloxide's request machinery (the same URL, client
//! and errors) with a result type of its own, holding the fields the Bot API
//! documents as always present for a bot.

use serde::{Deserialize, Serialize};
use teloxide_core::errors::RequestError;
use teloxide_core::requests::{JsonRequest, Payload};

/// The `getMe` call, with no parameters.
#[derive(Clone, Debug, Serialize)]
struct GetMe {}

impl Payload for GetMe {
    type Output = BotUser;
    const NAME: &'static str = "getMe";
}

/// The bot's `User` as `getMe` answers it; fields beyond these are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct BotUser {
    pub id: u64,
    pub is_bot: bool,
    pub first_name: String,
    /// Always there for a bot on Telegram; optional in the `User` type.
    pub username: Option<String>,
}

/// Asks the server who the bot is.
pub async fn get_me(tg: &teloxide_core::Bot) -> Result<BotUser, RequestError> {
    JsonRequest::new(tg.clone(), GetMe {}).await
}

/// Longest part of a server's answer quoted in an error.
const QUOTED_CHARS: usize = 300;

/// Says what the server answered when it was not a `getMe` result: the
/// parse error and the start of the body.
pub fn unreadable(source: &serde_json::Error, raw: &str) -> String {
    let mut quoted: String = raw.chars().take(QUOTED_CHARS).collect();
    if quoted.len() < raw.len() {
        quoted.push_str("...");
    }
    format!("its answer to getMe is not a Bot API answer ({source}): {quoted:?}")
}
