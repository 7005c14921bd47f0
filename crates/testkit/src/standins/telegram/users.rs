//! Simulated users: they get names, open chats, write (with `bot_command`
//! entities on what they type), send voice messages and documents, and
//! block the bot; what they send becomes a `message` update.

use axum::body::Bytes;
use serde_json::{json, Value};

use super::files::{store_file, FileSpec};
use super::messages::render;
use super::state::{now, ChatState, Msg, StateInner, UserInfo};
use super::types::{Author, UserMessage};
use super::TelegramStandIn;

impl TelegramStandIn {
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
                reply_to: message.reply_to,
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
