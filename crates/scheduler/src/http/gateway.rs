//! `/v1`: the OpenAI-compatible gateway, for the tools people already use
//! (Open WebUI, SillyTavern, scripts written for OpenAI's API).
//!
//! It takes developer keys only ([`super::developer_keys`]): each call is a
//! Tessera job of the key's account, made through the account's website
//! ([`super::jobs::submit`], the one way jobs are made), so the account's
//! plan, quota, priority, prompt rules, bans and admission apply, the job is
//! charged, queued fairly and shows in the account's gallery. A key limited
//! to some capabilities is refused the others (403 `capability_not_allowed`).
//!
//! Every refusal is OpenAI's error envelope (`{"error": {"message", "type",
//! "param", "code"}}`) with Tessera's stable code as `code`, so OpenAI's
//! clients raise it as they raise OpenAI's own: a quota refusal is a 429 of
//! type `insufficient_quota`; a full queue a 429 with `Retry-After`.
//!
//! A call waits for its job. The client hanging up cancels the job (and
//! refunds it, as any cancel does): the handler's future is dropped, and a
//! guard cancels what it left. A streamed chat completion
//! (`"stream": true`) answers once the job starts on a worker (queue
//! position has no place in OpenAI's shape) and then sends the text as the
//! engine makes it ([`crate::follow`]), then a chunk with `finish_reason`,
//! the usage chunk when asked, and `[DONE]`.
//!
//! Conversations: Tessera's text jobs take a system text and one prompt, so
//! the system and developer messages become the system text, and a
//! conversation of several turns becomes a transcript (`User: ...`,
//! `Assistant: ...`) ending in the last user turn: the prompt rules read all
//! of it, as they read every prompt.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Multipart, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use tessera_api::internal::TextUsage;
use tessera_api::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChatMessage, ChunkChoice, Delta, ImageData, ImageRequest, ImagesResponse, Model, ModelList,
    OpenAiError, OpenAiErrorBody, SpeechRequest, Transcription, Usage,
};
use tessera_api::public::CreateJobRequest;
use tessera_api::ErrorCode;
use tessera_core::{Capability, InputId, JobId, JobState, Platform, Transition};

use super::error::ApiError;
use super::extract::ApiPath;
use super::jobs::{submit, Submitted};
use super::AppState;
use crate::artifacts::input_key;
use crate::follow::JobEvent;
use crate::lifecycle::now_ms;
use crate::store::{ArtifactRecord, DeveloperKeyRecord, InputRecord, JobRecord, TransitionChange};

/// OpenAI's voice names, which no engine here knows.
const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
];

/// How often a waiting call reads its job again when no event says it
/// changed (an event may come to another replica).
const RECHECK: Duration = Duration::from_secs(1);

/// A gateway failure, answered in OpenAI's error envelope.
#[derive(Debug)]
pub struct GatewayError(pub ApiError);

impl From<ApiError> for GatewayError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<crate::store::StoreError> for GatewayError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.into())
    }
}

impl From<object_store::Error> for GatewayError {
    fn from(e: object_store::Error) -> Self {
        Self(e.into())
    }
}

fn bad_request(code: ErrorCode, param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError(ApiError::new(StatusCode::BAD_REQUEST, code, message).with_field(param))
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let e = self.0;
        let kind = match (e.status, e.code) {
            (_, ErrorCode::QuotaExhausted) => "insufficient_quota",
            (StatusCode::UNAUTHORIZED, _) => "authentication_error",
            (StatusCode::FORBIDDEN, _) => "permission_error",
            (StatusCode::NOT_FOUND, _) => "not_found_error",
            (StatusCode::TOO_MANY_REQUESTS, _) => "rate_limit_error",
            (s, _) if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = OpenAiErrorBody {
            error: OpenAiError {
                message: e.message,
                kind: kind.to_owned(),
                param: e.field,
                code: Some(e.code.as_str().to_owned()),
            },
        };
        let mut resp = (e.status, Json(body)).into_response();
        if e.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some((after, _)) = e.retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after));
        } else if e.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// A gateway request's developer key.
pub struct Developer(pub DeveloperKeyRecord);

impl FromRequestParts<AppState> for Developer {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, GatewayError> {
        Ok(Developer(super::auth::developer_key(parts, state).await?))
    }
}

/// The models the key may use: the catalogue's, narrowed by the account's
/// plan and the key's capabilities.
#[utoipa::path(
    get, path = "/v1/models", tag = "gateway",
    responses((status = 200, body = ModelList)),
    security(("developer_key" = []))
)]
pub async fn models(
    State(state): State<AppState>,
    Developer(key): Developer,
) -> Result<Json<ModelList>, GatewayError> {
    let plan = plan_of(&state, &key).await?;
    let data = state
        .config
        .catalog
        .0
        .iter()
        .filter(|(capability, _)| key.allows(**capability))
        .flat_map(|(capability, entry)| {
            entry
                .models
                .iter()
                .filter(|m| plan.as_ref().is_none_or(|p| p.allows_model(m)))
                .map(|m| Model {
                    id: m.clone(),
                    object: "model".into(),
                    created: 0,
                    owned_by: "tessera".into(),
                    capability: *capability,
                })
        })
        .collect();
    Ok(Json(ModelList {
        object: "list".into(),
        data,
    }))
}

async fn plan_of(
    state: &AppState,
    key: &DeveloperKeyRecord,
) -> Result<Option<tessera_core::Plan>, GatewayError> {
    let now = now_ms();
    Ok(state
        .store
        .quota(&key.account, state.clock.day_of(now), now)
        .await?
        .map(|q| q.plan))
}

/// Answer a conversation: as one completion, or streamed as the engine
/// writes it (`"stream": true`).
#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "gateway",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream`, server-sent `chat.completion.chunk` events ending in `[DONE]`", body = ChatCompletion),
        (status = 400, description = "A request the gateway cannot serve", body = OpenAiErrorBody),
        (status = 429, description = "Quota exhausted (`insufficient_quota`) or not admitted (`queue_full`, `too_many_queued`, with `Retry-After`)", body = OpenAiErrorBody),
    ),
    security(("developer_key" = []))
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    Developer(key): Developer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: ChatCompletionRequest = parse(&body)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "n",
            "only one choice (n = 1) is served",
        ));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "tools",
            "tool calling is not served",
        ));
    }
    let (system, prompt) = conversation(&req.messages)?;
    let mut params = json!({ "prompt": prompt, "model": req.model });
    if let Some(system) = system {
        params["system"] = json!(system);
    }
    if let Some(max) = req.max_completion_tokens.or(req.max_tokens) {
        params["max_tokens"] = json!(max);
    }
    if let Some(t) = req.temperature {
        params["temperature"] = json!(t);
    }
    let model = req.model.clone();
    let created = create(
        &state,
        &key,
        &headers,
        Capability::Text,
        Some(&model),
        params,
    )
    .await?;
    if req.stream == Some(true) {
        let mut guard = CancelOnDrop::new(&state, &created.job);
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let events = state.lifecycle.follow(&created.job.id);
        let job = started(&state, &created.job.id, events).await?;
        if job.status.is_terminal() && job.status != JobState::Completed {
            guard.disarm();
            return Err(job_failed(&job));
        }
        let stream = chat_stream(state.clone(), job, model, include_usage, guard);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let job = completed(&state, &created.job).await?;
    let (content, usage, finish) = answer_of(&state, &job).await?;
    Ok(Json(ChatCompletion {
        id: completion_id(&job.id),
        object: "chat.completion".into(),
        created: job.created_at / 1000,
        model,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content,
            },
            finish_reason: Some(finish),
        }],
        usage,
    })
    .into_response())
}

/// The streamed answer of a started job: the text as it comes, then the
/// end. A task writes the events into a channel the response reads; when the
/// client hangs up the channel closes, the task stops, and its guard
/// cancels the job.
fn chat_stream(
    state: AppState,
    job: JobRecord,
    model: String,
    include_usage: bool,
    guard: CancelOnDrop,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut guard = guard;
        let mut out = ChunkWriter {
            tx,
            id: completion_id(&job.id),
            created: job.created_at / 1000,
            model,
            include_usage,
        };
        let ended = stream_text(&state, &job.id, &mut out).await;
        if out.tx.is_closed() {
            // The client left: the guard cancels the job.
            return;
        }
        let sent = match ended {
            Ok((job, sent)) if job.status == JobState::Completed => {
                guard.disarm();
                // What the stream did not carry (the job finished on another
                // replica, or faster than this follower) comes from the
                // job's text output.
                match answer_of(&state, &job).await {
                    Ok((full, usage, finish)) => {
                        if let Some(rest) = full.strip_prefix(sent.as_str()) {
                            out.text(rest).await;
                        }
                        out.finish(&finish, usage).await
                    }
                    Err(e) => out.error(e).await,
                }
            }
            Ok((job, _)) => {
                guard.disarm();
                out.error(job_failed(&job)).await
            }
            // The guard cancels the job, which is refunded.
            Err(e) => out.error(e).await,
        };
        if sent {
            let _ = out.tx.send(Event::default().data("[DONE]")).await;
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}

/// Writes a completion's chunks as server-sent events.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Event>,
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
}

impl ChunkWriter {
    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
            }],
            usage: self.include_usage.then_some(None),
        }
    }

    /// Sends one event; false when the client is gone.
    async fn send(&self, chunk: &ChatCompletionChunk) -> bool {
        let data = serde_json::to_string(chunk).unwrap_or_default();
        self.tx.send(Event::default().data(data)).await.is_ok()
    }

    async fn role(&self) -> bool {
        let delta = Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        };
        self.send(&self.chunk(delta, None)).await
    }

    async fn text(&self, text: &str) -> bool {
        if text.is_empty() {
            return true;
        }
        let delta = Delta {
            content: Some(text.to_owned()),
            ..Delta::default()
        };
        self.send(&self.chunk(delta, None)).await
    }

    async fn finish(&self, reason: &str, usage: Option<Usage>) -> bool {
        if !self.send(&self.chunk(Delta::default(), Some(reason))).await {
            return false;
        }
        if self.include_usage {
            let last = ChatCompletionChunk {
                choices: Vec::new(),
                usage: Some(usage),
                ..self.chunk(Delta::default(), None)
            };
            return self.send(&last).await;
        }
        true
    }

    /// A failure after the stream began: OpenAI's clients read an `error`
    /// object in the stream as the failure it is.
    async fn error(&self, GatewayError(e): GatewayError) -> bool {
        let body = json!({"error": {
            "message": e.message,
            "type": if e.status.is_server_error() { "server_error" } else { "invalid_request_error" },
            "param": null,
            "code": e.code.as_str(),
        }});
        self.tx
            .send(Event::default().data(body.to_string()))
            .await
            .is_ok()
    }
}

fn interrupted() -> GatewayError {
    GatewayError(ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::StreamInterrupted,
        "the worker was lost in the middle of the answer; the job is cancelled and refunded: ask again",
    ))
}

/// Sends the job's text as it is made, until the job ends or the client
/// leaves; the job as it ended and the text sent.
async fn stream_text(
    state: &AppState,
    id: &JobId,
    out: &mut ChunkWriter,
) -> Result<(JobRecord, String), GatewayError> {
    use tokio::sync::broadcast::error::RecvError;
    let mut sent = String::new();
    if !out.role().await {
        return Ok((read_job(state, id).await?, sent));
    }
    // Text made before this follower began (the job started first), and
    // the events after it.
    let following = state.lifecycle.follow_output(id);
    let mut events = following.events;
    if !out.text(&following.text).await {
        return Ok((read_job(state, id).await?, sent));
    }
    sent.push_str(&following.text);
    loop {
        if out.tx.is_closed() {
            return Ok((read_job(state, id).await?, sent));
        }
        match tokio::time::timeout(RECHECK, events.recv()).await {
            Ok(Ok(JobEvent::Output(text))) => {
                if !out.text(&text).await {
                    return Ok((read_job(state, id).await?, sent));
                }
                sent.push_str(&text);
            }
            Ok(Ok(JobEvent::Ended(_))) => return Ok((read_job(state, id).await?, sent)),
            // The worker was lost mid-answer and another attempt began:
            // what the client read cannot be taken back.
            Ok(Ok(JobEvent::Started)) if !sent.is_empty() => return Err(interrupted()),
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(_))) => {
                // Fell behind: catch up from the text kept so far.
                let following = state.lifecycle.follow_output(id);
                events = following.events;
                match following.text.strip_prefix(sent.as_str()) {
                    Some(rest) => {
                        let rest = rest.to_owned();
                        if !out.text(&rest).await {
                            return Ok((read_job(state, id).await?, sent));
                        }
                        sent.push_str(&rest);
                    }
                    None => return Err(interrupted()),
                }
            }
            Ok(Err(RecvError::Closed)) | Err(_) => {
                let job = read_job(state, id).await?;
                if job.status.is_terminal() {
                    return Ok((job, sent));
                }
                events = state.lifecycle.follow(id);
            }
        }
    }
}

/// Make an image.
#[utoipa::path(
    post, path = "/v1/images/generations", tag = "gateway",
    request_body = ImageRequest,
    responses(
        (status = 200, body = ImagesResponse),
        (status = 400, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody),
    ),
    security(("developer_key" = []))
)]
pub async fn images(
    State(state): State<AppState>,
    Developer(key): Developer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: ImageRequest = parse(&body)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "n",
            "one image per request (n = 1) is served",
        ));
    }
    let as_url = match req.response_format.as_deref() {
        None | Some("url") => true,
        Some("b64_json") => false,
        Some(_) => {
            return Err(bad_request(
                ErrorCode::InvalidRequest,
                "response_format",
                "response_format is url or b64_json",
            ))
        }
    };
    let mut params = json!({ "prompt": req.prompt });
    if let Some(model) = &req.model {
        params["model"] = json!(model);
    }
    if let Some(size) = &req.size {
        params["resolution"] = json!(size);
    }
    let created = create(
        &state,
        &key,
        &headers,
        Capability::Image,
        req.model.as_deref(),
        params,
    )
    .await?;
    let job = completed(&state, &created.job).await?;
    let revised_prompt = match &job.params {
        tessera_core::params::JobParams::Image(p) if p.prompt != req.prompt.trim() => {
            Some(p.prompt.clone())
        }
        _ => None,
    };
    let mut data = Vec::new();
    for artifact in outputs(&state, &job).await? {
        let item = if as_url {
            let (token, _) = state.links.sign(&artifact.id, now_ms().max(0) as u64);
            ImageData {
                url: Some(format!("{}/v1/downloads/{token}", origin(&headers))),
                b64_json: None,
                revised_prompt: revised_prompt.clone(),
            }
        } else {
            let bytes = state.blobs.get(&artifact.storage_key).await?;
            ImageData {
                url: None,
                b64_json: Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                revised_prompt: revised_prompt.clone(),
            }
        };
        data.push(item);
    }
    Ok(Json(ImagesResponse {
        created: job.created_at / 1000,
        data,
    })
    .into_response())
}

/// Speak a text.
#[utoipa::path(
    post, path = "/v1/audio/speech", tag = "gateway",
    request_body = SpeechRequest,
    responses(
        (status = 200, description = "The audio (`audio/wav`)"),
        (status = 400, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody),
    ),
    security(("developer_key" = []))
)]
pub async fn speech(
    State(state): State<AppState>,
    Developer(key): Developer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let req: SpeechRequest = parse(&body)?;
    if req.response_format.as_deref().is_some_and(|f| f != "wav") {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "response_format",
            "the engines make wav: ask for response_format \"wav\"",
        ));
    }
    let mut params = json!({ "text": req.input, "model": req.model });
    // OpenAI's own voice names (what tools send by default) mean the
    // engine's default voice; any other is the engine's to read.
    if let Some(voice) = req.voice.as_deref().filter(|v| !OPENAI_VOICES.contains(v)) {
        params["voice"] = json!(voice);
    }
    if let Some(speed) = req.speed {
        params["speed"] = json!(speed);
    }
    let created = create(
        &state,
        &key,
        &headers,
        Capability::TextToSpeech,
        Some(&req.model),
        params,
    )
    .await?;
    let job = completed(&state, &created.job).await?;
    let Some(artifact) = outputs(&state, &job).await?.into_iter().next() else {
        return Err(no_output());
    };
    let bytes = state.blobs.get(&artifact.storage_key).await?;
    Ok((
        [(header::CONTENT_TYPE, content_type(&artifact.format))],
        bytes,
    )
        .into_response())
}

/// Transcribe an audio file (multipart: `file`, `model`, optional
/// `language` and `response_format` `json` or `text`).
#[utoipa::path(
    post, path = "/v1/audio/transcriptions", tag = "gateway",
    request_body(content_type = "multipart/form-data", description = "`file` (the audio), `model`, and optionally `language` (ISO 639-1) and `response_format` (`json` or `text`)"),
    responses(
        (status = 200, body = Transcription),
        (status = 400, body = OpenAiErrorBody),
        (status = 429, body = OpenAiErrorBody),
    ),
    security(("developer_key" = []))
)]
pub async fn transcriptions(
    State(state): State<AppState>,
    Developer(key): Developer,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, GatewayError> {
    let mut multipart = multipart.map_err(|e| {
        bad_request(
            ErrorCode::MalformedRequest,
            "file",
            format!("send the audio as multipart/form-data: {e}"),
        )
    })?;
    let mut file: Option<(String, Bytes)> = None;
    let mut model = None;
    let mut language = None;
    let mut format = None;
    while let Some(field) = multipart.next_field().await.map_err(|e| {
        bad_request(
            ErrorCode::MalformedRequest,
            "file",
            format!("the form could not be read: {e}"),
        )
    })? {
        let name = field.name().unwrap_or_default().to_owned();
        let content_type = field.content_type().map(str::to_owned);
        let file_name = field.file_name().map(str::to_owned);
        let bytes = field.bytes().await.map_err(|e| {
            bad_request(
                ErrorCode::MalformedRequest,
                &name,
                format!("the form could not be read: {e}"),
            )
        })?;
        let text = || String::from_utf8_lossy(&bytes).trim().to_owned();
        match name.as_str() {
            "file" => {
                let kind = content_type
                    .filter(|t| t.starts_with("audio/"))
                    .or_else(|| audio_type(file_name.as_deref()))
                    .unwrap_or_else(|| "audio/wav".into());
                file = Some((kind, bytes));
            }
            "model" => model = Some(text()),
            "language" => language = Some(text()),
            "response_format" => format = Some(text()),
            _ => {}
        }
    }
    let Some((kind, audio)) = file else {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "file",
            "the form has no `file` part",
        ));
    };
    let model = model.ok_or_else(|| {
        bad_request(
            ErrorCode::InvalidRequest,
            "model",
            "the form has no `model` part",
        )
    })?;
    let as_text = match format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(_) => {
            return Err(bad_request(
                ErrorCode::InvalidRequest,
                "response_format",
                "response_format is json or text",
            ))
        }
    };
    if audio.is_empty() {
        return Err(bad_request(
            ErrorCode::EmptyInput,
            "file",
            "the audio file is empty",
        ));
    }
    if audio.len() as u64 > state.config.artifacts.max_input_bytes {
        return Err(super::files::too_large(state.config.artifacts.max_input_bytes).into());
    }
    check_model(&state, &key, Capability::SpeechToText, Some(&model))?;
    let id = InputId::generate();
    let record = InputRecord {
        storage_key: input_key(&id),
        id,
        frontend: Platform::Web,
        bot_id: key.home_bot.clone(),
        content_type: kind,
        size: audio.len() as u64,
        created_at: now_ms(),
    };
    state.blobs.put(&record.storage_key, audio).await?;
    state.store.insert_input(&record).await?;
    let mut params = json!({ "input_id": record.id, "model": model });
    if let Some(language) = language.filter(|l| !l.is_empty()) {
        params["language"] = json!(language);
    }
    let created = create(
        &state,
        &key,
        &headers,
        Capability::SpeechToText,
        Some(&model),
        params,
    )
    .await?;
    let job = completed(&state, &created.job).await?;
    let text = text_of(&state, &job).await?;
    if as_text {
        return Ok(text.into_response());
    }
    Ok(Json(Transcription { text }).into_response())
}

/// An image (or other output) a gateway answer linked to: the link's
/// signature is the permission, as for the website's download links.
#[utoipa::path(
    get, path = "/v1/downloads/{token}", tag = "gateway",
    params(("token" = String, Path, description = "The signed token of an image's `url`")),
    responses(
        (status = 200, description = "The file, with its content type"),
        (status = 403, body = OpenAiErrorBody),
        (status = 404, body = OpenAiErrorBody),
        (status = 410, body = OpenAiErrorBody),
    ),
    security(())
)]
pub async fn download(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    Ok(super::files::redeem(&state, &token, &headers).await?)
}

/// Creates the job, refusing first what the key may not ask.
async fn create(
    state: &AppState,
    key: &DeveloperKeyRecord,
    headers: &HeaderMap,
    capability: Capability,
    model: Option<&str>,
    params: Value,
) -> Result<Submitted, GatewayError> {
    check_model(state, key, capability, model)?;
    let req = CreateJobRequest {
        frontend: Platform::Web,
        bot_id: key.home_bot.clone(),
        capability,
        user_ref: key.account.clone(),
        reply_context: None,
        params,
        context: None,
        callback_url: None,
    };
    let submitted = submit(state, key, headers, req).await?;
    tracing::info!(job_id = %submitted.job.id, key_id = %key.id, "gateway job created");
    Ok(submitted)
}

/// The key may use the capability, and the model is one of its catalogue's.
fn check_model(
    state: &AppState,
    key: &DeveloperKeyRecord,
    capability: Capability,
    model: Option<&str>,
) -> Result<(), GatewayError> {
    if !key.allows(capability) {
        return Err(GatewayError(ApiError::forbidden(
            ErrorCode::CapabilityNotAllowed,
            format!("this key may not make {capability} jobs"),
        )));
    }
    let known = state
        .config
        .catalog
        .get(capability)
        .is_some_and(|entry| model.is_none_or(|m| entry.models.iter().any(|x| x == m)));
    if !known {
        return Err(GatewayError(
            ApiError::not_found(
                ErrorCode::ModelNotFound,
                format!(
                    "no {capability} model {:?} here; GET /v1/models lists them",
                    model.unwrap_or_default()
                ),
            )
            .with_field("model"),
        ));
    }
    Ok(())
}

/// Cancels a job whose caller went away before it ended.
struct CancelOnDrop {
    state: AppState,
    job: Option<JobId>,
}

impl CancelOnDrop {
    fn new(state: &AppState, job: &JobRecord) -> Self {
        Self {
            state: state.clone(),
            job: Some(job.id.clone()),
        }
    }

    fn disarm(&mut self) {
        self.job = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.job.take() else {
            return;
        };
        let state = self.state.clone();
        tokio::spawn(async move {
            let change = TransitionChange {
                now: now_ms(),
                error: Some((
                    ErrorCode::CancelledByUser.into(),
                    "cancelled: the gateway's client hung up".into(),
                )),
                ..Default::default()
            };
            match state
                .lifecycle
                .apply(&id, Transition::Cancel, &change)
                .await
            {
                Ok(crate::store::TransitionOutcome::Applied(job)) => {
                    if job.worker_id.is_some() {
                        state.lifecycle.workers().stop_on_worker(&job);
                    }
                    tracing::info!(job_id = %id, "gateway client hung up: job cancelled");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "a hung-up gateway job was not cancelled")
                }
            }
        });
    }
}

async fn read_job(state: &AppState, id: &JobId) -> Result<JobRecord, GatewayError> {
    state.store.get_job(id, None).await?.ok_or_else(|| {
        GatewayError(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "the job is gone",
        ))
    })
}

/// Waits until the job ends, cancelling it if the caller goes away first;
/// the job as it completed, or its failure as OpenAI's clients expect one.
async fn completed(state: &AppState, job: &JobRecord) -> Result<JobRecord, GatewayError> {
    let mut guard = CancelOnDrop::new(state, job);
    let mut events = state.lifecycle.follow(&job.id);
    let job = loop {
        let job = read_job(state, &job.id).await?;
        if job.status.is_terminal() {
            break job;
        }
        wait_for(&mut events, |e| matches!(e, JobEvent::Ended(_))).await;
    };
    guard.disarm();
    if job.status != JobState::Completed {
        return Err(job_failed(&job));
    }
    Ok(job)
}

/// Waits until the job has started on a worker (or ended).
async fn started(
    state: &AppState,
    id: &JobId,
    mut events: tokio::sync::broadcast::Receiver<JobEvent>,
) -> Result<JobRecord, GatewayError> {
    loop {
        let job = read_job(state, id).await?;
        if job.status == JobState::Running || job.status.is_terminal() {
            return Ok(job);
        }
        wait_for(&mut events, |e| {
            matches!(e, JobEvent::Started | JobEvent::Ended(_))
        })
        .await;
    }
}

/// Returns at the first event `wanted` accepts, or after [`RECHECK`].
async fn wait_for(
    events: &mut tokio::sync::broadcast::Receiver<JobEvent>,
    wanted: impl Fn(&JobEvent) -> bool,
) {
    let _ = tokio::time::timeout(RECHECK, async {
        loop {
            match events.recv().await {
                Ok(e) if wanted(&e) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // Nothing more comes here: the recheck reads the job.
                    std::future::pending::<()>().await;
                }
            }
        }
    })
    .await;
}

/// A job that did not complete, as OpenAI's clients expect a failure.
fn job_failed(job: &JobRecord) -> GatewayError {
    let code = job
        .error_code
        .as_deref()
        .and_then(|c| c.parse::<ErrorCode>().ok())
        .unwrap_or(ErrorCode::InternalError);
    let message = job
        .error_message
        .clone()
        .unwrap_or_else(|| format!("the job ended {}", job.status));
    let status = match code {
        ErrorCode::ContentWithheld | ErrorCode::PromptRefused | ErrorCode::ContentNotAllowed => {
            StatusCode::BAD_REQUEST
        }
        _ if job.status == JobState::Cancelled => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    GatewayError(ApiError::new(status, code, message))
}

fn no_output() -> GatewayError {
    GatewayError(ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::InternalError,
        "the job completed without an output",
    ))
}

/// The job's delivered outputs, in order.
async fn outputs(state: &AppState, job: &JobRecord) -> Result<Vec<ArtifactRecord>, GatewayError> {
    let mut all = state
        .store
        .artifacts_of(std::slice::from_ref(&job.id))
        .await?;
    all.retain(|a| !a.withheld);
    all.sort_by_key(|a| a.position);
    Ok(all)
}

/// The job's text output.
async fn text_of(state: &AppState, job: &JobRecord) -> Result<String, GatewayError> {
    Ok(answer_of(state, job).await?.0)
}

/// The job's text output, and what its engine counted: OpenAI's usage (when
/// the engine reported both counts) and finish reason (`stop` when it said
/// none).
async fn answer_of(
    state: &AppState,
    job: &JobRecord,
) -> Result<(String, Option<Usage>, String), GatewayError> {
    let mut text = String::new();
    let mut counted: Option<TextUsage> = None;
    for artifact in outputs(state, job).await? {
        if artifact.kind == tessera_api::internal::ArtifactKind::Text {
            let bytes = state.blobs.get(&artifact.storage_key).await?;
            text.push_str(&String::from_utf8_lossy(&bytes));
            if let Some(usage) = artifact.usage.as_deref() {
                counted = serde_json::from_str(usage).ok();
            }
        }
    }
    let usage = counted.as_ref().and_then(|u| {
        let (prompt, completion) = (u.prompt_tokens?, u.completion_tokens?);
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        })
    });
    let finish = counted
        .and_then(|u| u.finish_reason)
        .unwrap_or_else(|| "stop".into());
    Ok((text, usage, finish))
}

fn completion_id(job: &JobId) -> String {
    format!("chatcmpl-{job}")
}

/// The system text and the prompt of a conversation.
fn conversation(messages: &[ChatMessage]) -> Result<(Option<String>, String), GatewayError> {
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let text = content_text(&m.content, i)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" | "assistant" => turns.push((m.role.as_str(), text)),
            other => {
                return Err(bad_request(
                    ErrorCode::InvalidRequest,
                    &format!("messages.{i}.role"),
                    format!("role {other:?} is not served: system, developer, user or assistant"),
                ))
            }
        }
    }
    let Some(&(last_role, _)) = turns.last() else {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "messages",
            "the conversation needs a user message",
        ));
    };
    if last_role != "user" {
        return Err(bad_request(
            ErrorCode::InvalidRequest,
            "messages",
            "the conversation must end with a user message",
        ));
    }
    let prompt = if turns.len() == 1 {
        turns.pop().map(|(_, t)| t).unwrap_or_default()
    } else {
        turns
            .iter()
            .map(|(role, text)| {
                let who = if *role == "user" { "User" } else { "Assistant" };
                format!("{who}: {text}")
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, prompt))
}

/// A message's text: a string, or the text parts of an array.
fn content_text(content: &Value, i: usize) -> Result<String, GatewayError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = Vec::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push(t),
                    _ => {
                        return Err(bad_request(
                            ErrorCode::InvalidRequest,
                            &format!("messages.{i}.content"),
                            "only text parts are served",
                        ))
                    }
                }
            }
            Ok(text.join("\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err(bad_request(
            ErrorCode::InvalidRequest,
            &format!("messages.{i}.content"),
            "content is a string or an array of text parts",
        )),
    }
}

/// A JSON body, refused in OpenAI's way (400) when it does not parse.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = e.inner().to_string();
        let mut error = bad_request(ErrorCode::InvalidRequest, &field, message);
        if field == "." {
            error.0.field = None;
        }
        error
    })
}

/// The scheme and host the client reached this gateway at, for the
/// addresses of outputs: `X-Forwarded-Proto` (a TLS proxy in front) and
/// `Host`.
fn origin(headers: &HeaderMap) -> String {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match text("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let host = text("host")
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

fn audio_type(file_name: Option<&str>) -> Option<String> {
    let ext = file_name?.rsplit_once('.')?.1.to_ascii_lowercase();
    let sub = match ext.as_str() {
        "wav" => "wav",
        "mp3" => "mpeg",
        "ogg" | "oga" => "ogg",
        "flac" => "flac",
        "webm" => "webm",
        "m4a" | "mp4" => "mp4",
        _ => return None,
    };
    Some(format!("audio/{sub}"))
}

fn content_type(format: &str) -> HeaderValue {
    let value = match format {
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    };
    HeaderValue::from_static(value)
}
