//! OpenAI's API shapes, as the scheduler's gateway (`/v1`) speaks them: the
//! parts of the model list, chat completions (whole and streamed), image
//! generations and audio that tools written for OpenAI's API send and read.
//!
//! Requests accept and ignore the fields Tessera has no use for (OpenAI's
//! clients send many: `presence_penalty`, `logit_bias`, `user`...), so a tool
//! that sets them still works; fields that would change the answer in a way
//! Tessera cannot honour (`n` above 1, tools) are refused by the gateway.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`.
/// `code` is Tessera's stable error code (`quota_exhausted`, `queue_full`...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiError,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `insufficient_quota`,
    /// `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    pub code: Option<String>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    pub data: Vec<Model>,
}

/// A model the key's plan may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// The catalogue's model name, as jobs name it.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds; the catalogue keeps no dates, so 0.
    pub created: i64,
    /// Always `tessera`.
    pub owned_by: String,
    /// What the model does: `text` (chat completions), `image`
    /// (images/generations), `speech_to_text` (audio/transcriptions),
    /// `text_to_speech` (audio/speech), `video`.
    pub capability: tessera_core::Capability,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// OpenAI's newer name for `max_tokens`; either is read.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// How many answers: only 1 is served.
    #[serde(default)]
    pub n: Option<u32>,
    /// Tool calling is not served; a request with tools is refused.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tools: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system` (or `developer`), `user` or `assistant`.
    pub role: String,
    /// Text, or an array of parts of which only `{"type": "text"}` ones are
    /// read (an image part is refused).
    #[schema(value_type = Object)]
    #[serde(default)]
    pub content: Value,
}

/// A whole chat completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-` and the Tessera job's id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Option<Usage>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    /// `stop`, or `length` when the answer reached its token limit.
    pub finish_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    pub content: String,
}

/// Tokens read and written, as the engine counted them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One server-sent event of a streamed chat completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// On the last chunk when `stream_options.include_usage` was asked (with
    /// no choices); `null` on the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `POST /v1/images/generations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageRequest {
    pub prompt: String,
    /// The catalogue's image model; absent for its default.
    #[serde(default)]
    pub model: Option<String>,
    /// How many images: only 1 is served.
    #[serde(default)]
    pub n: Option<u32>,
    /// `WIDTHxHEIGHT`, for example `1024x1024`.
    #[serde(default)]
    pub size: Option<String>,
    /// `url` (the default) or `b64_json`.
    #[serde(default)]
    pub response_format: Option<String>,
}

/// The images made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImagesResponse {
    pub created: i64,
    pub data: Vec<ImageData>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageData {
    /// A signed address the image can be fetched from without a key, for
    /// the link lifetime the operator configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// The prompt as the job ran it, when a rule rewrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

/// `POST /v1/audio/speech`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpeechRequest {
    pub model: String,
    pub input: String,
    /// The engine's voice (espeak-ng's `en-us`...); OpenAI's names
    /// (`alloy`...) mean the engine's default.
    #[serde(default)]
    pub voice: Option<String>,
    /// 0.5 to 2 (the jobs' own bounds).
    #[serde(default)]
    pub speed: Option<f32>,
    /// `wav` is what the engines make; another format is refused.
    #[serde(default)]
    pub response_format: Option<String>,
}

/// `POST /v1/audio/transcriptions` with `response_format=json` (the default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transcription {
    pub text: String,
}
