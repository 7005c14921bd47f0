//! The stand-in's public values: message kinds and uploads, messages as a
//! bot sent them and as a chat holds them now, calls, command menus, webhooks
//! and their deliveries, and what a simulated user sends.

use axum::body::Bytes;
use serde_json::Value;

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Text,
    Photo,
    Video,
    Audio,
    Document,
    Voice,
    /// An invoice a bot sent (`sendInvoice`).
    Invoice,
    /// A user's payment (`successful_payment`).
    SuccessfulPayment,
    /// A refunded payment (`refunded_payment`).
    RefundedPayment,
}

impl MessageKind {
    /// The `Message` field (and the upload's form field) of this kind.
    pub fn field(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Photo => "photo",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Voice => "voice",
            Self::Invoice => "invoice",
            Self::SuccessfulPayment => "successful_payment",
            Self::RefundedPayment => "refunded_payment",
        }
    }

    pub(super) fn folder(self) -> &'static str {
        match self {
            Self::Text | Self::Invoice | Self::SuccessfulPayment | Self::RefundedPayment => "text",
            Self::Photo => "photos",
            Self::Video => "videos",
            Self::Audio => "music",
            Self::Document => "documents",
            Self::Voice => "voice",
        }
    }

    /// The leading characters of this kind's `file_id`s.
    pub(super) fn id_prefix(self) -> &'static str {
        match self {
            Self::Text | Self::Invoice | Self::SuccessfulPayment | Self::RefundedPayment => "AA",
            Self::Photo => "AgACAgIAAxkBAAI",
            Self::Video => "BAACAgIAAxkBAAI",
            Self::Audio => "CQACAgIAAxkBAAI",
            Self::Document => "BQACAgIAAxkBAAI",
            Self::Voice => "AwACAgIAAxkBAAI",
        }
    }
}

/// A file sent in a multipart form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// The part's file name, if it had a non-empty one.
    pub file_name: Option<String>,
    /// The part's content type, if it had one.
    pub mime: Option<String>,
    pub bytes: Bytes,
}

/// A message a bot sent, as it was sent.
#[derive(Clone, Debug)]
pub struct SentMessage {
    pub chat_id: i64,
    pub message_id: i64,
    pub kind: MessageKind,
    /// The text, or the caption of a file.
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    /// The file, when it was uploaded in the request.
    pub upload: Option<Upload>,
    /// The `file_id` or URL the bot gave instead of uploading.
    pub file_ref: Option<String>,
    /// The `file_id` the stand-in answered with.
    pub file_id: Option<String>,
    /// The message it replies to.
    pub reply_to: Option<i64>,
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    Bot,
    User(i64),
}

/// A message of a chat as it stands now.
#[derive(Clone, Debug)]
pub struct ChatMessage {
    pub message_id: i64,
    pub author: Author,
    pub kind: MessageKind,
    /// The text, or the caption of a file, after every edit.
    pub text: Option<String>,
    /// Earlier texts, oldest first; one per edit.
    pub history: Vec<String>,
    pub reply_to: Option<i64>,
    /// The `file_id` of its file.
    pub file_id: Option<String>,
}

impl ChatMessage {
    /// How many times it was edited.
    pub fn edits(&self) -> usize {
        self.history.len()
    }
}

/// One call a bot made.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method, spelled as documented when the stand-in knows it.
    pub method: String,
    /// The parameters; an uploaded file shows as `{"file_name", "size"}`.
    pub params: Value,
    /// The HTTP status of the answer, once answered.
    pub status: Option<u16>,
}

/// One entry of a command menu.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub command: String,
    pub description: String,
}

/// A bot's webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
    pub allowed_updates: Option<Vec<String>>,
    pub max_connections: u32,
}

/// One attempt to deliver an update to a webhook.
#[derive(Clone, Debug)]
pub struct WebhookDelivery {
    pub update_id: u32,
    /// The webhook's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why the attempt failed, in `getWebhookInfo`'s words.
    pub error: Option<String>,
}

/// What a simulated user sends; see [`TelegramStandIn::user_says`].
#[derive(Clone, Debug)]
pub struct UserMessage {
    pub(super) kind: MessageKind,
    pub(super) text: Option<String>,
    pub(super) file: Option<Upload>,
    pub(super) duration: u32,
    /// The message (of the same chat) this one replies to.
    pub(super) reply_to: Option<i64>,
}

impl UserMessage {
    pub fn text(text: &str) -> Self {
        Self {
            kind: MessageKind::Text,
            text: Some(text.to_owned()),
            file: None,
            duration: 0,
            reply_to: None,
        }
    }

    /// This message as a reply to `message` (Telegram's
    /// `reply_to_message`, shown only when that message is in the chat).
    pub fn replying_to(self, message: i64) -> Self {
        Self {
            reply_to: Some(message),
            ..self
        }
    }

    pub(super) fn file(
        kind: MessageKind,
        bytes: Bytes,
        mime: &str,
        file_name: Option<&str>,
    ) -> Self {
        Self {
            kind,
            text: None,
            file: Some(Upload {
                file_name: file_name.map(str::to_owned),
                mime: Some(mime.to_owned()),
                bytes,
            }),
            duration: 0,
            reply_to: None,
        }
    }

    /// A voice message (`mime` is `audio/ogg` from Telegram's apps).
    pub fn voice(bytes: impl Into<Bytes>, mime: &str, duration_secs: u32) -> Self {
        Self {
            duration: duration_secs,
            ..Self::file(MessageKind::Voice, bytes.into(), mime, None)
        }
    }

    /// A file sent as a document.
    pub fn document(bytes: impl Into<Bytes>, mime: &str, file_name: &str) -> Self {
        Self::file(MessageKind::Document, bytes.into(), mime, Some(file_name))
    }
}
