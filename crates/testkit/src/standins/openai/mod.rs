//! An OpenAI-compatible stand-in: chat completions, transcriptions, speech.
//!
//! It follows OpenAI's API reference, which llama.cpp's server, vLLM and
//! Ollama implement:
//!
//! - `POST /v1/chat/completions`, streamed (`"stream": true`, server-sent
//!   events: a role chunk, one chunk per token, a chunk with
//!   `finish_reason`, with `stream_options.include_usage` a last chunk with
//!   empty `choices` and the `usage`, then `data: [DONE]`) or not (one
//!   `chat.completion` object). The reply is filler, one word a token, one
//!   token every [`OpenAiOptions::token_delay`]; it has
//!   [`OpenAiOptions::reply_tokens`] tokens, cut to `max_tokens`
//!   (`finish_reason` `"length"`) or not (`"stop"`). Usage is consistent with
//!   what was sent: `completion_tokens` is the number of token chunks and
//!   `prompt_tokens` the number of words in the messages.
//! - `POST /v1/audio/transcriptions` (multipart `file`, `model`, `language`,
//!   `response_format`) answers `{"text"}` (or text, `verbose_json`, SRT,
//!   VTT); like OpenAI it refuses files whose name has no audio extension.
//! - `POST /v1/audio/speech` (`model`, `input`, `voice`, `response_format`,
//!   `speed`) answers a WAV tone (or raw PCM) as long as the text asks.
//!
//! With [`OpenAiOptions::reasoning`] the model answers as OpenAI's reasoning
//! models do: `max_tokens` is refused (they take `max_completion_tokens`), and
//! so is any `temperature` but the default, 1.
//!
//! Errors use OpenAI's envelope, `{"error": {"message", "type", "param",
//! "code"}}`, with its statuses: 400 for invalid requests, 401 for a wrong
//! key, 404 for an unknown model. [`Fault`] makes it misbehave as real
//! servers do. It records every request and whether each stream was read to
//! its end or dropped by the client.
//!
//! `mod.rs` holds the options, the handle and its records, and what every
//! route shares (the error envelope, the key and model checks, multipart
//! forms); `chat` serves chat completions, streamed or not; `audio` serves
//! transcriptions and speech.

mod audio;
mod chat;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use audio::{speech, transcriptions};
use chat::chat;

pub use audio::wav_tone;

const FILLER: &[&str] = &[
    "The", "answer", "is", "simple:", "measure", "twice,", "cut", "once,", "and", "keep", "the",
    "workshop", "tidy.",
];

/// Formats OpenAI's transcription endpoint accepts, by file name extension.
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm",
];

/// Ways the stand-in misbehaves, each as some real server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 `{"error": {"code": 503, "message": "Loading model", "type":
    /// "unavailable_error"}}`, as llama.cpp's server while it loads.
    Loading,
    /// 500 with an `internal_server_error` in the envelope.
    ServerError,
    /// 200 with a body that is not what was asked for: an event that is not
    /// JSON, a JSON body that is cut, speech that is not WAV.
    Malformed,
    /// The chat stream stops halfway, without `finish_reason` or `[DONE]`.
    CutStream,
    /// An error event inside the stream after a few tokens, as llama.cpp
    /// sends when the context overflows.
    ErrorInStream,
}

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct OpenAiOptions {
    /// Models it serves; empty: any name.
    pub models: Vec<String>,
    /// Tokens of the chat reply before it ends by itself.
    pub reply_tokens: usize,
    /// Time per streamed token, and the time a transcription or speech takes.
    pub token_delay: Duration,
    /// The bearer token it wants, if any.
    pub api_key: Option<String>,
    /// The text of every transcription.
    pub transcript: String,
    pub fault: Option<Fault>,
    /// Refuse `max_tokens` and any `temperature` but 1, with OpenAI's 400
    /// `unsupported_parameter` / `unsupported_value`, as its reasoning models.
    pub reasoning: bool,
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            reply_tokens: 6,
            token_delay: Duration::from_millis(2),
            api_key: None,
            transcript: "The quick brown fox jumps over the lazy dog.".into(),
            fault: None,
            reasoning: false,
        }
    }
}

/// The chat reply of `tokens` tokens, as the stand-in sends it.
pub fn reply(tokens: usize) -> String {
    (0..tokens).map(token).collect()
}

fn token(i: usize) -> String {
    let word = FILLER[i % FILLER.len()];
    if i == 0 {
        word.to_owned()
    } else {
        format!(" {word}")
    }
}

/// Words in `text`: the stand-in's token count of a prompt.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// A part of a multipart form.
#[derive(Clone, Debug)]
pub struct FormField {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl FormField {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads every part of a multipart body; `None` if it is not one.
pub async fn read_form(request: Request) -> Option<Vec<FormField>> {
    let mut multipart = Multipart::from_request(request, &()).await.ok()?;
    let mut fields = Vec::new();
    while let Some(field) = multipart.next_field().await.ok()? {
        let name = field.name().unwrap_or("").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let bytes = field.bytes().await.ok()?;
        fields.push(FormField {
            name,
            file_name,
            content_type,
            bytes,
        });
    }
    Some(fields)
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct OpenAiRequest {
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The body, if it was JSON.
    pub json: Option<Value>,
    /// The parts, if it was a multipart form.
    pub form: Vec<FormField>,
}

impl OpenAiRequest {
    pub fn field(&self, name: &str) -> Option<&FormField> {
        self.form.iter().find(|f| f.name == name)
    }
}

struct Shared {
    options: OpenAiOptions,
    requests: Mutex<Vec<OpenAiRequest>>,
    streams_started: AtomicUsize,
    streams_finished: AtomicUsize,
    streams_dropped: AtomicUsize,
    chunks_sent: AtomicUsize,
}

/// A running OpenAI-compatible stand-in; stops when dropped.
pub struct OpenAiStandIn {
    url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl OpenAiStandIn {
    pub async fn start(options: OpenAiOptions) -> Self {
        let shared = Arc::new(Shared {
            options,
            requests: Mutex::new(Vec::new()),
            streams_started: AtomicUsize::new(0),
            streams_finished: AtomicUsize::new(0),
            streams_dropped: AtomicUsize::new(0),
            chunks_sent: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1/audio/speech", post(speech))
            .fallback(|| async {
                openai_error(
                    StatusCode::NOT_FOUND,
                    "Invalid URL",
                    "invalid_request_error",
                    None,
                    None,
                )
            })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            shared,
            server,
        }
    }

    /// The base URL (`http://127.0.0.1:PORT`, without `/v1`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> Vec<OpenAiRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Option<OpenAiRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// Streams begun, read to `[DONE]`, and dropped by the client before.
    pub fn streams(&self) -> (usize, usize, usize) {
        (
            self.shared.streams_started.load(Ordering::SeqCst),
            self.shared.streams_finished.load(Ordering::SeqCst),
            self.shared.streams_dropped.load(Ordering::SeqCst),
        )
    }

    /// Token chunks written to streams so far.
    pub fn chunks_sent(&self) -> usize {
        self.shared.chunks_sent.load(Ordering::SeqCst)
    }

    /// Waits until a stream was dropped (at most `limit`); true if one was.
    pub async fn wait_stream_dropped(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.shared.streams_dropped.load(Ordering::SeqCst) > 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for OpenAiStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error in OpenAI's envelope.
pub fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({
            "error": { "message": message, "type": kind, "param": param, "code": code }
        })),
    )
        .into_response()
}

fn invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    openai_error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        param,
        code,
    )
}

fn refuse<T>(response: Response) -> Result<T, Box<Response>> {
    Err(Box::new(response))
}

/// The key check, the fault that applies before any work, and the model.
fn gate(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if let Some(want) = &shared.options.api_key {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(key) if key == want => {}
            Some(key) => {
                // OpenAI shows only the ends of a wrong key.
                let shown = if key.len() > 8 {
                    format!("{}***{}", &key[..3], &key[key.len() - 4..])
                } else {
                    "***".into()
                };
                return refuse(openai_error(
                    StatusCode::UNAUTHORIZED,
                    &format!("Incorrect API key provided: {shown}."),
                    "invalid_request_error",
                    None,
                    Some("invalid_api_key"),
                ));
            }
            None => {
                return refuse(openai_error(
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key.",
                    "invalid_request_error",
                    None,
                    None,
                ))
            }
        }
    }
    match shared.options.fault {
        Some(Fault::Loading) => refuse((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": { "code": 503, "message": "Loading model", "type": "unavailable_error" }
            })),
        )
            .into_response()),
        Some(Fault::ServerError) => refuse(openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "internal_server_error",
            None,
            None,
        )),
        _ => Ok(()),
    }
}

fn check_model(shared: &Shared, model: Option<&Value>) -> Result<String, Box<Response>> {
    let Some(model) = model.and_then(Value::as_str) else {
        return refuse(invalid("You must provide a model parameter.", None, None));
    };
    if !shared.options.models.is_empty() && !shared.options.models.iter().any(|m| m == model) {
        return refuse(openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ));
    }
    Ok(model.to_owned())
}

fn record(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    json: Option<Value>,
    form: Vec<FormField>,
) {
    lock(&shared.requests).push(OpenAiRequest {
        path: path.to_owned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        json,
        form,
    });
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
