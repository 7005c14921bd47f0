//! Messages: `sendMessage`, `editMessageText`, `deleteMessage`,
//! `sendChatAction` and the `send*` methods for files, checked as Telegram
//! checks them (chats, lengths, replies, edits), and the `Message`, `Chat`
//! and `User` objects the API answers with.

use std::collections::HashMap;

use axum::body::Bytes;
use serde_json::{json, Map, Value};

use super::api::{Answer, Ctx, Failure, Params, Source};
use super::files::{file_json, guess_mime, keep, new_file_record, store_file, FileSpec};
use super::state::{now, BotState, Msg, UserInfo};
use super::types::{Author, MessageKind, SentMessage};
use super::{MAX_CAPTION_CHARS, MAX_TEXT_CHARS};

const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply \
     markup are exactly the same as a current content and reply markup of the message";

fn chat_json(chat_id: i64, users: &HashMap<i64, UserInfo>) -> Value {
    if chat_id > 0 {
        let user = users
            .get(&chat_id)
            .cloned()
            .unwrap_or_else(|| UserInfo::default_for(chat_id));
        let mut chat = json!({ "id": chat_id, "type": "private", "first_name": user.first_name });
        if let Some(last) = user.last_name {
            chat["last_name"] = json!(last);
        }
        if let Some(username) = user.username {
            chat["username"] = json!(username);
        }
        chat
    } else if chat_id < -1_000_000_000_000 {
        json!({ "id": chat_id, "type": "supergroup", "title": format!("Supergroup {chat_id}") })
    } else {
        json!({ "id": chat_id, "type": "group", "title": format!("Group {chat_id}") })
    }
}

pub(super) fn user_json(user_id: i64, users: &HashMap<i64, UserInfo>) -> Value {
    let user = users
        .get(&user_id)
        .cloned()
        .unwrap_or_else(|| UserInfo::default_for(user_id));
    let mut value = json!({ "id": user_id, "is_bot": false, "first_name": user.first_name });
    if let Some(last) = user.last_name {
        value["last_name"] = json!(last);
    }
    if let Some(username) = user.username {
        value["username"] = json!(username);
    }
    if let Some(language) = user.language_code {
        value["language_code"] = json!(language);
    }
    value
}

/// A `Message` object; `nested` adds the message it replies to.
pub(super) fn render(
    bot: &BotState,
    users: &HashMap<i64, UserInfo>,
    chat_id: i64,
    message_id: i64,
    nested: bool,
) -> Value {
    let chat = &bot.chats[&chat_id];
    let m = &chat.messages[&message_id];
    let mut out = Map::new();
    out.insert("message_id".into(), json!(m.id));
    let from = match m.author {
        Author::Bot => bot.user_json(),
        Author::User(id) => user_json(id, users),
    };
    out.insert("from".into(), from);
    out.insert("chat".into(), chat_json(chat_id, users));
    out.insert("date".into(), json!(m.date));
    if let Some(edit) = m.edit_date {
        out.insert("edit_date".into(), json!(edit));
    }
    if nested {
        if let Some(reply) = m.reply_to.filter(|r| chat.messages.contains_key(r)) {
            out.insert(
                "reply_to_message".into(),
                render(bot, users, chat_id, reply, false),
            );
        }
    }
    match m.kind {
        MessageKind::Text => {
            out.insert("text".into(), json!(m.text.clone().unwrap_or_default()));
            if let Some(e) = &m.entities {
                out.insert("entities".into(), e.clone());
            }
        }
        kind => {
            if let Some(media) = &m.media {
                out.insert(kind.field().into(), media.clone());
            }
            if let Some(caption) = &m.text {
                out.insert("caption".into(), json!(caption));
                if let Some(e) = &m.entities {
                    out.insert("caption_entities".into(), e.clone());
                }
            }
        }
    }
    if let Some(markup) = &m.reply_markup {
        out.insert("reply_markup".into(), markup.clone());
    }
    Value::Object(out)
}

/// The chat a method targets: known, and not blocked.
pub(super) fn target_chat(ctx: &mut Ctx<'_>, params: &Params) -> Result<i64, Failure> {
    let raw = params
        .text("chat_id")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Failure::bad("chat_id is empty"))?;
    let chat_id: i64 = raw
        .trim()
        .parse()
        .map_err(|_| Failure::bad("chat not found"))?;
    let chat = ctx
        .bot
        .chats
        .get(&chat_id)
        .ok_or_else(|| Failure::bad("chat not found"))?;
    if chat.blocked {
        return Err(Failure::new(403, "Forbidden: bot was blocked by the user"));
    }
    Ok(chat_id)
}

/// The message a send replies to, from `reply_parameters` or
/// `reply_to_message_id`.
fn reply_target(ctx: &Ctx<'_>, chat_id: i64, params: &Params) -> Result<Option<i64>, Failure> {
    let (id, allow_without) = match params.json("reply_parameters")? {
        Some(rp) => (
            rp.get("message_id").and_then(Value::as_i64),
            rp.get("allow_sending_without_reply")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        None => (
            params.int("reply_to_message_id")?,
            params.flag("allow_sending_without_reply"),
        ),
    };
    let Some(id) = id else { return Ok(None) };
    if ctx.bot.chats[&chat_id].messages.contains_key(&id) {
        Ok(Some(id))
    } else if allow_without {
        Ok(None)
    } else {
        Err(Failure::bad("message to be replied not found"))
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn post_message(
    ctx: &mut Ctx<'_>,
    chat_id: i64,
    kind: MessageKind,
    text: Option<String>,
    media: Option<Value>,
    file_id: Option<String>,
    reply_to: Option<i64>,
    reply_markup: Option<Value>,
) -> (i64, Value) {
    let chat = ctx.bot.chats.get_mut(&chat_id).expect("checked before");
    let id = chat.next_id;
    chat.next_id += 1;
    chat.messages.insert(
        id,
        Msg {
            id,
            author: Author::Bot,
            date: now(),
            kind,
            text,
            entities: None,
            media,
            file_id,
            reply_to,
            reply_markup,
            edit_date: None,
            history: Vec::new(),
        },
    );
    (id, render(ctx.bot, ctx.users, chat_id, id, true))
}

pub(super) fn send_message(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let text = params.text("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Failure::bad("message text is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Failure::bad("message is too long"));
    }
    let reply_to = reply_target(ctx, chat_id, params)?;
    let markup = params.json("reply_markup")?;
    let (message_id, rendered) = post_message(
        ctx,
        chat_id,
        MessageKind::Text,
        Some(text.clone()),
        None,
        None,
        reply_to,
        markup,
    );
    ctx.bot.sent.push(SentMessage {
        chat_id,
        message_id,
        kind: MessageKind::Text,
        text: Some(text),
        parse_mode: params.text("parse_mode"),
        upload: None,
        file_ref: None,
        file_id: None,
        reply_to,
    });
    Ok(rendered.into())
}

pub(super) fn edit_message_text(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    if params.text("inline_message_id").is_some() {
        return Err(Failure::bad("MESSAGE_ID_INVALID"));
    }
    let chat_id = target_chat(ctx, params)?;
    let message_id = params
        .int("message_id")?
        .ok_or_else(|| Failure::bad("message identifier is not specified"))?;
    let text = params.text("text").unwrap_or_default();
    if text.trim().is_empty() {
        return Err(Failure::bad("message text is empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Failure::bad("MESSAGE_TOO_LONG"));
    }
    let markup = params.json("reply_markup")?;
    let chat = ctx.bot.chats.get_mut(&chat_id).expect("checked before");
    let message = chat
        .messages
        .get_mut(&message_id)
        .ok_or_else(|| Failure::bad("message to edit not found"))?;
    if message.author != Author::Bot {
        return Err(Failure::bad("message can't be edited"));
    }
    if message.kind != MessageKind::Text {
        return Err(Failure::bad("there is no text in the message to edit"));
    }
    if message.text.as_deref() == Some(text.as_str()) && message.reply_markup == markup {
        return Err(Failure::bad(NOT_MODIFIED));
    }
    let previous = message.text.replace(text).unwrap_or_default();
    message.history.push(previous);
    message.reply_markup = markup;
    message.edit_date = Some(now());
    Ok(render(ctx.bot, ctx.users, chat_id, message_id, true).into())
}

pub(super) fn delete_message(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let message_id = params
        .int("message_id")?
        .ok_or_else(|| Failure::bad("message identifier is not specified"))?;
    let chat = ctx.bot.chats.get_mut(&chat_id).expect("checked before");
    chat.messages
        .remove(&message_id)
        .ok_or_else(|| Failure::bad("message to delete not found"))?;
    Ok(json!(true).into())
}

pub(super) fn send_file(ctx: &mut Ctx<'_>, params: &Params, kind: MessageKind) -> Answer {
    let chat_id = target_chat(ctx, params)?;
    let caption = params.text("caption").filter(|c| !c.is_empty());
    if caption
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_CAPTION_CHARS)
    {
        return Err(Failure::bad("message caption is too long"));
    }
    let field = kind.field();
    let source = params
        .source(field)?
        .ok_or_else(|| Failure::bad(&format!("there is no {field} in the request")))?;
    let reply_to = reply_target(ctx, chat_id, params)?;
    let number = |name: &str| -> Result<u32, Failure> {
        Ok(params.int(name)?.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    };
    let (upload, file_ref, media, file_id) = match source {
        Source::Upload(upload) => {
            let spec = FileSpec {
                kind,
                upload: upload.clone(),
                duration: number("duration")?,
                width: number("width")?,
                height: number("height")?,
            };
            let (mut media, id) = store_file(ctx.files, ctx.token, spec)?;
            if kind == MessageKind::Audio {
                for extra in ["performer", "title"] {
                    if let Some(v) = params.text(extra) {
                        media[extra] = json!(v);
                    }
                }
            }
            (Some(upload), None, media, id)
        }
        Source::Ref(reference) => {
            let file = if reference.starts_with("http://") || reference.starts_with("https://") {
                let name = reference
                    .rsplit('/')
                    .next()
                    .filter(|n| n.contains('.'))
                    .map(str::to_owned);
                let mime = name.as_deref().and_then(guess_mime).map(str::to_owned);
                let file = new_file_record(ctx.files, ctx.token, kind, Bytes::new(), mime, name);
                keep(ctx.files, file.clone());
                file
            } else {
                ctx.files
                    .by_id
                    .get(&reference)
                    .filter(|f| f.owner == ctx.token)
                    .cloned()
                    .ok_or_else(|| Failure::bad("wrong file identifier/HTTP URL specified"))?
            };
            let media = file_json(&file, kind);
            (None, Some(reference), media, file.id)
        }
    };
    let (message_id, rendered) = post_message(
        ctx,
        chat_id,
        kind,
        caption.clone(),
        Some(media),
        Some(file_id.clone()),
        reply_to,
        params.json("reply_markup")?,
    );
    ctx.bot.sent.push(SentMessage {
        chat_id,
        message_id,
        kind,
        text: caption,
        parse_mode: params.text("parse_mode"),
        upload,
        file_ref,
        file_id: Some(file_id),
        reply_to,
    });
    Ok(rendered.into())
}

pub(super) fn send_chat_action(ctx: &mut Ctx<'_>, params: &Params) -> Answer {
    target_chat(ctx, params)?;
    let action = params.text("action").unwrap_or_default();
    if action.is_empty() {
        return Err(Failure::bad("action is empty"));
    }
    if !CHAT_ACTIONS.contains(&action.as_str()) {
        return Err(Failure::bad("wrong parameter action in request"));
    }
    Ok(json!(true).into())
}
