//! Misbehaviour a test switches on, for the ways real Bot API servers fail a
//! bot beyond Telegram's documented errors: a server that ignores
//! `getUpdates`' `timeout` and answers an empty list at once (a misconfigured
//! local Bot API server or proxy), connections that break before a method's
//! answer is complete, and a `getMe` that carries only the fields the Bot API
//! requires of a `User` (older local Bot API servers leave out the rest).
//! Flood control ([`TelegramStandIn::flood`]) is Telegram's own and lives
//! with the envelope in `api`.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::state::BotState;
use super::TelegramStandIn;

/// What a test switched on for one bot.
#[derive(Debug, Default)]
pub(super) struct Faults {
    /// `getUpdates` answers at once, whatever its `timeout`.
    pub(super) ignore_poll_timeout: bool,
    /// Per method (lower case), how many more calls lose their connection.
    pub(super) broken: HashMap<String, u32>,
    /// `getMe` answers only `id`, `is_bot`, `first_name` and `username`.
    pub(super) bare_get_me: bool,
}

impl Faults {
    /// Whether this call of `method` loses its connection (counting it).
    pub(super) fn breaks(&mut self, method: &str) -> bool {
        match self.broken.get_mut(&method.to_ascii_lowercase()) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }
}

impl TelegramStandIn {
    /// From now on `getUpdates` ignores its `timeout` (`true`): with nothing
    /// queued it answers `[]` at once instead of holding the poll.
    pub fn ignore_poll_timeout(&self, token: &str, ignore: bool) {
        self.mutate(token, |bot, _| bot.faults.ignore_poll_timeout = ignore);
    }

    /// The next `times` calls of `method` lose their connection: the call is
    /// recorded (with no status) and not carried out, and the answer breaks
    /// off after its headers, so the client sees a transport error.
    pub fn break_connections(&self, token: &str, method: &str, times: u32) {
        let key = method.to_ascii_lowercase();
        self.mutate(token, |bot, _| {
            bot.faults.broken.insert(key, times);
        });
    }

    /// `getMe` answers only the fields the Bot API requires (`id`, `is_bot`,
    /// `first_name`, `username`), as older local Bot API servers do (`true`),
    /// or the full `User` with the bot's `can_*` fields (`false`, the default).
    pub fn bare_get_me(&self, token: &str, bare: bool) {
        self.mutate(token, |bot, _| bot.faults.bare_get_me = bare);
    }
}

/// `getMe`'s result for this bot.
pub(super) fn me(bot: &BotState) -> Value {
    let mut me = bot.user_json();
    if !bot.faults.bare_get_me {
        me["can_join_groups"] = json!(true);
        me["can_read_all_group_messages"] = json!(false);
        me["supports_inline_queries"] = json!(false);
        me["can_connect_to_business"] = json!(false);
        me["has_main_web_app"] = json!(false);
    }
    me
}

/// An answer that breaks off: a 200 with the start of a JSON body, then an
/// error in the body stream, on which the server drops the connection.
pub(super) fn broken_answer() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"ok\":true,")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the stand-in breaks this connection",
        )),
    ];
    let body = Body::from_stream(futures::stream::iter(chunks));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
