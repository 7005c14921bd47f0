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
//! Errors use OpenAI's envelope, `{"error": {"message", "type", "param",
//! "code"}}`, with its statuses: 400 for invalid requests, 401 for a wrong
//! key, 404 for an unknown model. [`Fault`] makes it misbehave as real
//! servers do. It records every request and whether each stream was read to
//! its end or dropped by the client.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

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

struct Chat {
    model: String,
    prompt_tokens: usize,
    max_tokens: Option<usize>,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(shared: &Shared, body: &Value) -> Result<Chat, Box<Response>> {
    if !body.is_object() {
        return refuse(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
            None,
        ));
    }
    let model = check_model(shared, body.get("model"))?;
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return refuse(invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                Some("messages"),
                Some("empty_array"),
            ))
        }
        Some(_) => {
            return refuse(invalid(
                "Invalid type for 'messages': expected an array.",
                Some("messages"),
                Some("invalid_type"),
            ))
        }
        None => {
            return refuse(invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            ))
        }
    };
    let mut prompt_tokens = 0;
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str);
        if !matches!(
            role,
            Some("system" | "developer" | "user" | "assistant" | "tool")
        ) {
            return refuse(invalid(
                &format!("Invalid value for 'messages[{i}].role'."),
                Some(&format!("messages[{i}].role")),
                Some("invalid_value"),
            ));
        }
        match message.get("content") {
            Some(Value::String(text)) => prompt_tokens += count_words(text),
            _ => {
                return refuse(invalid(
                    &format!("Invalid type for 'messages[{i}].content': expected a string."),
                    Some(&format!("messages[{i}].content")),
                    Some("invalid_type"),
                ))
            }
        }
    }
    let max_tokens = match body.get("max_tokens").or_else(|| body.get("max_completion_tokens")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                return refuse(invalid(
                    &format!("Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got {n} instead."),
                    Some("max_tokens"),
                    Some("integer_below_min_value"),
                ))
            }
            None => {
                return refuse(invalid(
                    "Invalid type for 'max_tokens': expected an integer.",
                    Some("max_tokens"),
                    Some("invalid_type"),
                ))
            }
        },
    };
    if let Some(t) = body.get("temperature").filter(|t| !t.is_null()) {
        match t.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => {}
            Some(t) if t < 0.0 => {
                return refuse(invalid(
                    &format!("Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got {t} instead."),
                    Some("temperature"),
                    Some("decimal_below_min_value"),
                ))
            }
            Some(t) => {
                return refuse(invalid(
                    &format!("Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {t} instead."),
                    Some("temperature"),
                    Some("decimal_above_max_value"),
                ))
            }
            None => {
                return refuse(invalid(
                    "Invalid type for 'temperature': expected a decimal.",
                    Some("temperature"),
                    Some("invalid_type"),
                ))
            }
        }
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let options = body.get("stream_options").filter(|o| !o.is_null());
    if options.is_some() && !stream {
        return refuse(invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
            None,
        ));
    }
    let include_usage = options
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Chat {
        model,
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    record(
        &shared,
        "/v1/chat/completions",
        &headers,
        json.clone(),
        Vec::new(),
    );
    if let Err(r) = gate(&shared, &headers) {
        return *r;
    }
    let chat = match parse_chat(&shared, json.as_ref().unwrap_or(&Value::Null)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let wanted = shared.options.reply_tokens;
    let sent = chat.max_tokens.map_or(wanted, |m| wanted.min(m));
    let finish_reason = if sent < wanted { "length" } else { "stop" };
    let usage = json!({
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": sent,
        "total_tokens": chat.prompt_tokens + sent,
    });
    let id = format!("chatcmpl-standin{}", lock(&shared.requests).len());
    if !chat.stream {
        if shared.options.fault == Some(Fault::Malformed) {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"id\": \"chatcmpl-cut\", \"choices\": [",
            )
                .into_response();
        }
        tokio::time::sleep(shared.options.token_delay * sent as u32).await;
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": now(),
            "model": chat.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": reply(sent), "refusal": null },
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        }))
        .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let producer = shared.clone();
    shared.streams_started.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let shared = producer;
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut c = json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": now(),
                "model": chat.model,
                "system_fingerprint": null,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            });
            if chat.include_usage {
                c["usage"] = Value::Null;
            }
            event(&c)
        };
        let fault = shared.options.fault;
        let mut events = vec![chunk(
            json!({ "role": "assistant", "content": "", "refusal": null }),
            None,
        )];
        let cut_at = match fault {
            Some(Fault::CutStream | Fault::ErrorInStream) => sent / 2,
            _ => sent,
        };
        let send_all = |events: Vec<Bytes>| {
            let tx = tx.clone();
            async move {
                for e in events {
                    if tx.send(e).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        if fault == Some(Fault::Malformed) {
            let _ = send_all(vec![Bytes::from_static(
                b"data: {\"choices\": [{\"delta\": \n\n",
            )])
            .await;
            shared.streams_finished.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if !send_all(std::mem::take(&mut events)).await {
            shared.streams_dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        for i in 0..cut_at {
            tokio::time::sleep(shared.options.token_delay).await;
            if !send_all(vec![chunk(json!({ "content": token(i) }), None)]).await {
                shared.streams_dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            shared.chunks_sent.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Some(Fault::CutStream) => {
                shared.streams_finished.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Some(Fault::ErrorInStream) => {
                let _ = send_all(vec![event(&json!({
                    "error": {
                        "code": 400,
                        "message": "the request exceeds the available context size, try increasing it",
                        "type": "exceed_context_size_error",
                    }
                }))])
                .await;
                shared.streams_finished.fetch_add(1, Ordering::SeqCst);
                return;
            }
            _ => {}
        }
        events.push(chunk(json!({}), Some(finish_reason)));
        if chat.include_usage {
            events.push(event(&json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": now(),
                "model": chat.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage,
            })));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        if send_all(events).await {
            shared.streams_finished.fetch_add(1, Ordering::SeqCst);
        } else {
            shared.streams_dropped.fetch_add(1, Ordering::SeqCst);
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn transcriptions(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let headers = request.headers().clone();
    let form = read_form(request).await;
    record(
        &shared,
        "/v1/audio/transcriptions",
        &headers,
        None,
        form.clone().unwrap_or_default(),
    );
    if let Err(r) = gate(&shared, &headers) {
        return *r;
    }
    let Some(form) = form else {
        return invalid("Could not parse multipart form", None, None);
    };
    let field = |name: &str| form.iter().find(|f| f.name == name);
    let Some(file) = field("file") else {
        return invalid(
            "Missing required parameter: 'file'.",
            Some("file"),
            Some("missing_required_parameter"),
        );
    };
    if let Err(r) = check_model(
        &shared,
        field("model").map(|f| Value::String(f.text())).as_ref(),
    ) {
        return *r;
    }
    let extension = file
        .file_name
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !AUDIO_EXTENSIONS.contains(&extension.as_str()) {
        return invalid(
            &format!("Invalid file format. Supported formats: {AUDIO_EXTENSIONS:?}"),
            Some("file"),
            Some("invalid_value"),
        );
    }
    if file.bytes.is_empty() {
        return invalid(
            "Audio file is too short.",
            Some("file"),
            Some("audio_too_short"),
        );
    }
    let language = field("language").map(|f| f.text());
    if let Some(l) = &language {
        if l.len() != 2 || !l.bytes().all(|b| b.is_ascii_lowercase()) {
            return invalid(
                &format!("Invalid language '{l}'. Language parameter must be specified in ISO-639-1 format."),
                Some("language"),
                Some("invalid_language_format"),
            );
        }
    }
    let format = field("response_format").map_or("json".to_owned(), |f| f.text());
    tokio::time::sleep(shared.options.token_delay).await;
    let text = shared.options.transcript.clone();
    match format.as_str() {
        "json" => Json(json!({ "text": text })).into_response(),
        "text" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text,
        )
            .into_response(),
        "verbose_json" => Json(json!({
            "task": "transcribe",
            "language": language.unwrap_or_else(|| "en".into()),
            "duration": 1.0,
            "text": text,
            "segments": [],
        }))
        .into_response(),
        "srt" => format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n").into_response(),
        "vtt" => format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n").into_response(),
        other => invalid(
            &format!("Invalid value for 'response_format': '{other}'."),
            Some("response_format"),
            Some("invalid_value"),
        ),
    }
}

async fn speech(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    record(
        &shared,
        "/v1/audio/speech",
        &headers,
        json.clone(),
        Vec::new(),
    );
    if let Err(r) = gate(&shared, &headers) {
        return *r;
    }
    let Some(body) = json.filter(Value::is_object) else {
        return invalid(
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    if let Err(r) = check_model(&shared, body.get("model")) {
        return *r;
    }
    let input = match body.get("input") {
        Some(Value::String(s)) if s.chars().count() > 4096 => {
            return invalid(
                &format!("Invalid 'input': string too long. Expected a string with maximum length 4096, but got a string with length {} instead.", s.chars().count()),
                Some("input"),
                Some("string_above_max_length"),
            )
        }
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return invalid(
                "Missing required parameter: 'input'.",
                Some("input"),
                Some("missing_required_parameter"),
            )
        }
    };
    let voice = body.get("voice").and_then(Value::as_str).unwrap_or("");
    if voice.is_empty() {
        return invalid(
            "Missing required parameter: 'voice'.",
            Some("voice"),
            Some("missing_required_parameter"),
        );
    }
    let speed = match body.get("speed") {
        None | Some(Value::Null) => 1.0,
        Some(v) => match v.as_f64() {
            Some(s) if (0.25..=4.0).contains(&s) => s,
            _ => {
                return invalid(
                    "Invalid 'speed': expected a number between 0.25 and 4.0.",
                    Some("speed"),
                    Some("invalid_value"),
                )
            }
        },
    };
    let format = body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3");
    if !matches!(format, "mp3" | "opus" | "aac" | "flac" | "wav" | "pcm") {
        return invalid(
            &format!("Invalid value for 'response_format': '{format}'."),
            Some("response_format"),
            Some("invalid_value"),
        );
    }
    tokio::time::sleep(shared.options.token_delay).await;
    if shared.options.fault == Some(Fault::Malformed) {
        // An MP3 frame where a WAV was asked for.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "audio/mpeg")],
            Bytes::from_static(b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x00"),
        )
            .into_response();
    }
    let seconds = (count_words(&input) as f64 * 0.3 / speed).clamp(0.1, 30.0) as f32;
    match format {
        "wav" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "audio/wav")],
            wav_tone(seconds, 24_000),
        )
            .into_response(),
        "pcm" => {
            let wav = wav_tone(seconds, 24_000);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "audio/pcm")],
                wav[44..].to_vec(),
            )
                .into_response()
        }
        // Encoders for the compressed formats are beyond a stand-in.
        other => openai_error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("this stand-in renders only wav and pcm, not {other}"),
            "invalid_request_error",
            Some("response_format"),
            None,
        ),
    }
}

/// A 16-bit mono WAV of a quiet 440 Hz tone.
pub fn wav_tone(seconds: f32, rate: u32) -> Vec<u8> {
    let samples = (seconds * rate as f32) as u32;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f32 / rate as f32;
        let v = (t * 440.0 * std::f32::consts::TAU).sin() * 2000.0;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    out
}
