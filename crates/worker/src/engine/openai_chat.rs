//! `openai_chat`: text generation on any server that speaks OpenAI's chat
//! completions API: llama.cpp's server, vLLM, Ollama, and OpenAI itself.
//!
//! A job becomes one streamed `POST /v1/chat/completions`
//! (`"stream": true, "stream_options": {"include_usage": true}`). The reply
//! arrives as server-sent events, one `data: {...}` chunk per token or so,
//! then a chunk carrying `finish_reason`, then (when the server honours
//! `include_usage`) a chunk with the token counts, then `data: [DONE]`.
//! Progress is the tokens received over `max_tokens`; each chunk's text goes
//! to [`Progress::text`] as it arrives, for the job's followers. Streaming is what makes
//! cancelling work: dropping the response closes the connection, and all
//! three servers stop generating for a client that left. A server that
//! ignores `stream` and answers one JSON completion is read as well.
//!
//! Errors arrive in OpenAI's envelope (`{"error": {"message", "type",
//! "code"}}`) or one of its cousins ([`super::upstream::error_message`]),
//! before the stream or inside it; they become readable [`EngineError`]s.

use std::borrow::Borrow;
use std::path::PathBuf;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use tessera_core::params::{JobParams, TextParams};
use tessera_core::Capability;

use super::upstream::{self, openai_base_url, ApiKey};
use super::{cancellable, Artifact, Engine, EngineError, Progress, Resident, Task};

const ENGINE: &str = "the chat completions server";
/// Longest error or non-streamed body read (bytes).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Longest line of the event stream (bytes).
const MAX_LINE: usize = 4 * 1024 * 1024;
/// Most text a reply may hold (bytes).
const MAX_TEXT: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiChatConfig {
    /// The server's base URL (`http://127.0.0.1:8080`); a trailing `/v1` is ignored.
    pub url: String,
    /// The model names jobs ask for.
    pub models: Vec<String>,
    /// The model name sent to the server, when it differs from the job's
    /// (`qwen2.5:7b-instruct` on Ollama for a catalog model `qwen2.5-7b`).
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// A file holding the bearer token the server wants, if any.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The field that carries the job's token limit: `max_tokens` (what
    /// llama.cpp, vLLM and Ollama read) or `max_completion_tokens` (what
    /// OpenAI's reasoning models insist on).
    #[serde(default)]
    pub token_limit_field: TokenLimitField,
    /// Whether the job's temperature is sent; models that accept only their
    /// default (OpenAI's reasoning models) refuse any other.
    #[serde(default = "default_send_temperature")]
    pub send_temperature: bool,
}

fn default_send_temperature() -> bool {
    true
}

/// The name under which the token limit is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLimitField {
    #[default]
    MaxTokens,
    MaxCompletionTokens,
}

impl TokenLimitField {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenLimitField::MaxTokens => "max_tokens",
            TokenLimitField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

/// One finished reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    /// `stop`, `length`... as the server said; `None` if it did not.
    pub finish_reason: Option<String>,
    /// From the server's usage report; `None` if it sent none.
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Stream chunks that carried text (0 when the server did not stream).
    pub chunks: usize,
}

pub struct OpenAiChat {
    config: OpenAiChatConfig,
    base: String,
    http: reqwest::Client,
    last_model: Resident,
}

impl OpenAiChat {
    /// `http` is the worker's shared client (or a reference to it).
    pub fn new(config: OpenAiChatConfig, http: impl Borrow<reqwest::Client>) -> Self {
        Self {
            base: openai_base_url(&config.url),
            config,
            http: http.borrow().clone(),
            last_model: Resident::default(),
        }
    }

    /// The chat completions request: the token limit under the configured
    /// name, the temperature unless the configuration leaves it out.
    fn request_body(&self, model: &str, messages: Vec<Value>, params: &TextParams) -> Value {
        let mut body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        body[self.config.token_limit_field.as_str()] = json!(params.max_tokens);
        if self.config.send_temperature {
            body["temperature"] = json!(upstream::decimal(params.temperature));
        }
        body
    }

    /// Streams one reply of `model` (or the configured upstream model) to
    /// `params`. Returns [`EngineError::cancelled`] as soon as `cancel` fires,
    /// having dropped the stream.
    pub async fn complete(
        &self,
        model: &str,
        params: &TextParams,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Completion, EngineError> {
        let key = upstream::optional_api_key(self.config.api_key_file.as_ref()).await?;
        let upstream_model = self.config.upstream_model.as_deref().unwrap_or(model);
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = params.system.as_deref().filter(|s| !s.trim().is_empty()) {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.push(json!({ "role": "user", "content": params.prompt }));
        let body = self.request_body(upstream_model, messages, params);
        let mut request = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .header(header::ACCEPT, "text/event-stream")
            .json(&body);
        if let Some(key) = &key {
            request = request.bearer_auth(key.as_str());
        }
        let response = cancellable(cancel, async {
            request
                .send()
                .await
                .map_err(|e| scrub(&key, upstream::send_error(ENGINE, &e)))
        })
        .await?;
        let status = response.status();
        if !status.is_success() {
            let body = cancellable(cancel, upstream::read_body(ENGINE, response, MAX_BODY)).await?;
            return Err(scrub(&key, upstream::status_error(ENGINE, status, &body)));
        }
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let completion = if is_json {
            let body = cancellable(cancel, upstream::read_body(ENGINE, response, MAX_BODY)).await?;
            let whole = whole_completion(&body)?;
            progress.text(&whole.text);
            whole
        } else {
            let mut stream = response.bytes_stream();
            let mut reader = Reader::new(params.max_tokens);
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    // Dropping the stream closes the connection: the server stops.
                    _ = cancel.cancelled() => return Err(EngineError::cancelled()),
                };
                match next {
                    Some(Ok(bytes)) => {
                        if reader.push(&bytes, progress)? {
                            break;
                        }
                    }
                    Some(Err(e)) => return Err(scrub(&key, upstream::send_error(ENGINE, &e))),
                    None => {
                        reader.finish(progress)?;
                        break;
                    }
                }
            }
            reader.into_completion()?
        };
        progress.percent(100.0);
        Ok(completion)
    }
}

fn scrub(key: &Option<ApiKey>, mut e: EngineError) -> EngineError {
    if let Some(key) = key {
        e.message = key.scrub(e.message);
    }
    e
}

/// A non-streamed `chat.completion` object.
fn whole_completion(body: &[u8]) -> Result<Completion, EngineError> {
    #[derive(Deserialize)]
    struct Whole {
        choices: Vec<Choice>,
        #[serde(default)]
        usage: Option<Usage>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
        #[serde(default)]
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<String>,
    }
    let whole: Whole = serde_json::from_slice(body).map_err(|e| {
        EngineError::invalid_output(format!(
            "{ENGINE} answered JSON that is not a chat completion ({e}): {}",
            upstream::snippet(body)
        ))
    })?;
    let Some(choice) = whole.choices.into_iter().next() else {
        return Err(EngineError::invalid_output(format!(
            "{ENGINE} answered a completion without choices"
        )));
    };
    Ok(Completion {
        text: choice.message.content.unwrap_or_default(),
        finish_reason: choice.finish_reason,
        prompt_tokens: whole.usage.as_ref().and_then(|u| u.prompt_tokens),
        completion_tokens: whole.usage.as_ref().and_then(|u| u.completion_tokens),
        chunks: 0,
    })
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Reads a chat completion event stream as bytes arrive.
struct Reader {
    max_tokens: u32,
    /// The unfinished line.
    line: Vec<u8>,
    /// The `data` of the event being read.
    data: Option<String>,
    events: usize,
    done: bool,
    completion: Completion,
}

impl Reader {
    fn new(max_tokens: u32) -> Self {
        Self {
            max_tokens,
            line: Vec::new(),
            data: None,
            events: 0,
            done: false,
            completion: Completion::default(),
        }
    }

    /// Feeds bytes; true once `[DONE]` arrived.
    fn push(&mut self, mut bytes: &[u8], progress: &Progress) -> Result<bool, EngineError> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, progress)?;
            if self.done {
                return Ok(true);
            }
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(EngineError::invalid_output(format!(
                "{ENGINE} sent an event line over {MAX_LINE} bytes"
            )));
        }
        self.line.extend_from_slice(bytes);
        Ok(false)
    }

    /// The stream ended: reads what is left (some servers send the last
    /// `data: [DONE]` without a newline).
    fn finish(&mut self, progress: &Progress) -> Result<(), EngineError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, progress)?;
        }
        self.dispatch(progress)
    }

    fn line_done(&mut self, line: &[u8], progress: &Progress) -> Result<(), EngineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return self.dispatch(progress);
        }
        if line.starts_with(b":") {
            return Ok(()); // a comment, used as a keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            return Ok(()); // event, id, retry
        }
        let value = std::str::from_utf8(value).map_err(|_| {
            EngineError::invalid_output(format!("{ENGINE} sent an event that is not UTF-8"))
        })?;
        // Servers that forget the blank line between events: a complete
        // event followed by another `data` line is two events.
        if self.data.as_deref().is_some_and(complete_event) {
            self.dispatch(progress)?;
        }
        match &mut self.data {
            Some(data) => {
                data.push('\n');
                data.push_str(value);
            }
            None => self.data = Some(value.to_owned()),
        }
        Ok(())
    }

    fn dispatch(&mut self, progress: &Progress) -> Result<(), EngineError> {
        let Some(data) = self.data.take() else {
            return Ok(());
        };
        if self.done {
            return Ok(());
        }
        self.events += 1;
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            EngineError::invalid_output(format!(
                "{ENGINE} sent an event that is not JSON ({e}): {}",
                upstream::snippet(data.as_bytes())
            ))
        })?;
        if let Some(e) = stream_error(&chunk) {
            return Err(e);
        }
        if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
            let first = choices
                .iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
            if let Some(choice) = first {
                if let Some(text) = choice
                    .get("delta")
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str)
                {
                    if !text.is_empty() {
                        if self.completion.text.len() + text.len() > MAX_TEXT {
                            return Err(EngineError::invalid_output(format!(
                                "{ENGINE} sent more than {MAX_TEXT} bytes of text"
                            )));
                        }
                        self.completion.text.push_str(text);
                        self.completion.chunks += 1;
                        progress.text(text);
                    }
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    self.completion.finish_reason = Some(reason.to_owned());
                }
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            if let Ok(usage) = serde_json::from_value::<Usage>(usage.clone()) {
                self.completion.prompt_tokens =
                    usage.prompt_tokens.or(self.completion.prompt_tokens);
                self.completion.completion_tokens = usage
                    .completion_tokens
                    .or(self.completion.completion_tokens);
            }
        }
        let tokens = (self.completion.chunks as u64)
            .max(self.completion.completion_tokens.unwrap_or(0))
            .min(u64::from(self.max_tokens));
        progress.steps(tokens, u64::from(self.max_tokens));
        Ok(())
    }

    fn into_completion(self) -> Result<Completion, EngineError> {
        if self.done || self.completion.finish_reason.is_some() {
            return Ok(self.completion);
        }
        if self.events == 0 {
            return Err(EngineError::invalid_output(format!(
                "{ENGINE} answered without any server-sent event"
            )));
        }
        Err(EngineError::unavailable(format!(
            "{ENGINE} ended the stream before the reply finished ({} chunks of text received)",
            self.completion.chunks
        )))
    }
}

/// Whether `data` is a whole event already.
fn complete_event(data: &str) -> bool {
    data.trim() == "[DONE]" || serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok()
}

/// An error sent inside the stream, in OpenAI's envelope or vLLM's flat shape.
fn stream_error(chunk: &Value) -> Option<EngineError> {
    let error = match chunk.get("error") {
        Some(e) if !e.is_null() => e,
        _ if chunk.get("object").and_then(Value::as_str) == Some("error") => chunk,
        _ => return None,
    };
    let message = upstream::error_message(chunk.to_string().as_bytes())
        .unwrap_or_else(|| upstream::snippet(error.to_string().as_bytes()));
    let message = format!("{ENGINE} failed during the reply: {message}");
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| reqwest::StatusCode::from_u16(c).ok());
    Some(match status {
        Some(status) if upstream::job_at_fault(status) => EngineError::rejected(message),
        _ => EngineError::unavailable(message),
    })
}

#[async_trait]
impl Engine for OpenAiChat {
    fn kind(&self) -> &'static str {
        "openai_chat"
    }

    fn capability(&self) -> Capability {
        Capability::Text
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        // What the server last ran for this worker, as far as it knows.
        self.last_model.list()
    }

    /// `GET /health`, which llama.cpp's server answers 503 while it loads its
    /// model (vLLM has it too); a server without it (OpenAI) answered, so it is up.
    async fn probe(&self) -> Result<(), EngineError> {
        let url = format!("{}/health", self.base);
        upstream::probe_get(&self.http, ENGINE, &url, None, true).await
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let JobParams::Text(params) = &task.params else {
            return Err(EngineError::rejected("openai_chat runs only text jobs"));
        };
        let completion = self.complete(&task.model, params, progress, cancel).await?;
        self.last_model.used(&task.model);
        tracing::debug!(
            job_id = %task.job_id,
            finish_reason = completion.finish_reason.as_deref().unwrap_or("unknown"),
            prompt_tokens = completion.prompt_tokens,
            completion_tokens = completion.completion_tokens,
            chunks = completion.chunks,
            "chat completion finished"
        );
        let mut artifact = Artifact::text(completion.text);
        artifact.meta.usage = Some(tessera_api::internal::TextUsage {
            prompt_tokens: completion.prompt_tokens,
            completion_tokens: completion.completion_tokens,
            finish_reason: completion.finish_reason.filter(|r| is_reason(r)),
        });
        Ok(vec![artifact])
    }
}

/// A finish reason worth passing on: a short lowercase word, as OpenAI's
/// API and the servers that speak it write them.
fn is_reason(reason: &str) -> bool {
    (1..=32).contains(&reason.len()) && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(parts: &[&[u8]]) -> Result<Completion, EngineError> {
        let (progress, _rx) = Progress::new();
        let mut reader = Reader::new(16);
        for part in parts {
            if reader.push(part, &progress)? {
                return reader.into_completion();
            }
        }
        reader.finish(&progress)?;
        reader.into_completion()
    }

    const CHUNK: &str =
        r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;

    #[test]
    fn events_split_anywhere_read_the_same() {
        let stream = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}}}}]}}\r\n\r\n\
             : keep-alive\n\n\
             data: {CHUNK}\n\n\
             data:{{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" there\"}},\"finish_reason\":\"stop\"}}]}}\n\n\
             data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}}}\n\n\
             data: [DONE]\n\n"
        );
        let want = Completion {
            text: "Hi there".into(),
            finish_reason: Some("stop".into()),
            prompt_tokens: Some(5),
            completion_tokens: Some(2),
            chunks: 2,
        };
        assert_eq!(read(&[stream.as_bytes()]).unwrap(), want);
        let bytes = stream.as_bytes();
        for cut in 1..bytes.len() {
            assert_eq!(
                read(&[&bytes[..cut], &bytes[cut..]]).unwrap(),
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_last_done_without_newline_and_missing_blank_lines_are_read() {
        let stream = format!("data: {CHUNK}\ndata: {CHUNK}\ndata: [DONE]");
        let c = read(&[stream.as_bytes()]).unwrap();
        assert_eq!((c.text.as_str(), c.chunks), ("HiHi", 2));
    }

    #[test]
    fn a_cut_stream_is_retryable_and_garbage_is_invalid_output() {
        let cut = format!("data: {CHUNK}\n\n");
        let e = read(&[cut.as_bytes()]).unwrap_err();
        assert_eq!(e.code, "engine_unavailable");
        let e = read(&[b"data: {not json\n\n"]).unwrap_err();
        assert_eq!(e.code, "invalid_output");
        let e = read(&[b"<html>hello</html>"]).unwrap_err();
        assert_eq!(e.code, "invalid_output");
    }

    #[test]
    fn errors_inside_the_stream_keep_their_message() {
        let e = read(&[
            br#"data: {"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}"#,
            b"\n\n",
        ])
        .unwrap_err();
        assert_eq!(e.code, "engine_rejected");
        assert!(e.message.contains("context size"), "{}", e.message);
        let e = read(&[
            br#"data: {"object":"error","message":"engine dead","type":"InternalServerError","code":500}"#,
            b"\n\n",
        ])
        .unwrap_err();
        assert_eq!(e.code, "engine_unavailable");
    }

    #[test]
    fn a_whole_completion_is_read_too() {
        let c = whole_completion(
            br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Yes."},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(c.text, "Yes.");
        assert_eq!(c.completion_tokens, Some(1));
        assert_eq!(whole_completion(b"[]").unwrap_err().code, "invalid_output");
    }
}
