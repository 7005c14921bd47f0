//! What the adapters that call an engine server over HTTP share.
//!
//! Engine servers (KoboldCPP, llama.cpp, vLLM, Ollama, whisper.cpp...) answer
//! errors in a handful of shapes; this module turns any of them into one
//! readable [`EngineError`], decides which failures are worth another attempt,
//! reads response bodies with a size limit, and reads API keys from files so
//! that a key never reaches a log line or an error message.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::Value;

use super::EngineError;

/// Longest upstream message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 500;

/// `url` without trailing slashes.
pub(crate) fn base_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// The base URL of an OpenAI-compatible server: without trailing slashes, and
/// without a trailing `/v1`, which operators often copy from client settings.
pub(crate) fn openai_base_url(url: &str) -> String {
    let url = base_url(url);
    match url.strip_suffix("/v1") {
        Some(base) => base.to_owned(),
        None => url,
    }
}

/// `x` as the decimal people wrote (`0.7`, not `0.699999988079071`), for JSON.
pub(crate) fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// An API key read from a file, kept out of `Debug` output.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `message` with every occurrence of the key replaced.
    pub(crate) fn scrub(&self, message: String) -> String {
        if self.0.is_empty() || !message.contains(&self.0) {
            message
        } else {
            message.replace(&self.0, "[redacted]")
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Reads the key in `path` (surrounding whitespace removed). Errors name the
/// file, never its content.
pub(crate) async fn read_api_key(path: &Path) -> Result<ApiKey, EngineError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        EngineError::unavailable(format!(
            "cannot read the API key file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(EngineError::unavailable(format!(
            "the API key file {} is empty",
            path.display()
        )));
    }
    Ok(ApiKey(key.to_owned()))
}

/// The key in `path`, if there is a path.
pub(crate) async fn optional_api_key(
    path: Option<&PathBuf>,
) -> Result<Option<ApiKey>, EngineError> {
    match path {
        Some(path) => read_api_key(path).await.map(Some),
        None => Ok(None),
    }
}

/// Checks at start-up that an API key file can be read, so that a wrong path
/// stops the worker instead of failing every job.
pub(crate) fn check_api_key_file(path: Option<&PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the API key file {}: {}",
                path.display(),
                e.kind()
            )
        })?;
        if text.trim().is_empty() {
            anyhow::bail!("the API key file {} is empty", path.display());
        }
    }
    Ok(())
}

/// A readiness probe of an engine server ([`super::Engine::probe`]): a GET
/// of `url` (with the API key, if any) within [`super::PROBE_TIMEOUT`]. The
/// engine is ready when it answers with success, or with 404 or 405 where
/// `missing_is_up` (a server of another kind, or an older version, without
/// that path: it answered, so it is up); any other answer, or none, says it
/// is not.
pub(crate) async fn probe_get(
    http: &reqwest::Client,
    engine: &str,
    url: &str,
    key: Option<&ApiKey>,
    missing_is_up: bool,
) -> Result<(), EngineError> {
    let mut request = http.get(url).timeout(super::PROBE_TIMEOUT);
    if let Some(key) = key {
        request = request.bearer_auth(key.as_str());
    }
    let response = request.send().await.map_err(|e| send_error(engine, &e))?;
    let status = response.status();
    if status.is_success()
        || (missing_is_up
            && matches!(
                status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ))
    {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    let said = error_message(&body).unwrap_or_else(|| snippet(&body));
    let message = format!("{engine} answered its readiness probe with {status}: {said}");
    Err(EngineError::unavailable(match key {
        Some(key) => key.scrub(message),
        None => message,
    }))
}

/// A request that got no answer: the server is down, unreachable or stalled,
/// which another attempt (maybe on another worker) may not meet.
pub(crate) fn send_error(engine: &str, e: &reqwest::Error) -> EngineError {
    let what = if e.is_connect() {
        "cannot connect to"
    } else if e.is_timeout() {
        "timed out talking to"
    } else {
        "lost the connection to"
    };
    // reqwest's messages name the URL but never headers, so no key leaks here.
    EngineError::unavailable(format!("{what} {engine}: {}", error_chain(e)))
}

/// `e` and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Whether a status an engine answered says the job itself is at fault.
/// Authentication, rate limits and time-outs are the worker's or the
/// server's state, not the job's: another attempt may succeed.
pub(crate) fn job_at_fault(status: StatusCode) -> bool {
    status.is_client_error()
        && !matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
        )
}

/// The error for a non-success answer: rejected when the job is at fault
/// ([`job_at_fault`]), unavailable otherwise, quoting the server's message.
pub(crate) fn status_error(engine: &str, status: StatusCode, body: &[u8]) -> EngineError {
    let message = format!(
        "{engine} answered {status}: {}",
        error_message(body).unwrap_or_else(|| snippet(body))
    );
    if job_at_fault(status) {
        EngineError::rejected(message)
    } else {
        EngineError::unavailable(message)
    }
}

/// The message of an error body in any of the shapes engine servers use:
/// OpenAI's `{"error": {"message", "type", "code"}}`, `{"error": "..."}`
/// (whisper.cpp, Ollama), a top-level `{"message", "type"}` (older vLLM),
/// and `{"detail": ...}` (KoboldCPP's `{"msg", "type"}`, KoboldAI's
/// `{field: [messages]}`, FastAPI's list of `{"loc", "msg"}`).
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = if let Some(error) = value.get("error") {
        match error {
            Value::String(s) => s.clone(),
            Value::Object(_) => {
                let message = error.get("message").map(plain)?;
                let kind = error
                    .get("type")
                    .or_else(|| error.get("code"))
                    .filter(|v| !v.is_null())
                    .map(plain);
                with_kind(message, kind)
            }
            _ => return None,
        }
    } else if let Some(detail) = value.get("detail") {
        detail_message(detail)?
    } else if let Some(message) = value.get("message") {
        with_kind(plain(message), value.get("type").map(plain))
    } else {
        return None;
    };
    Some(clip(&text))
}

fn detail_message(detail: &Value) -> Option<String> {
    Some(match detail {
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            if let Some(msg) = map.get("msg") {
                with_kind(plain(msg), map.get("type").map(plain))
            } else {
                map.iter()
                    .map(|(field, problems)| match problems {
                        Value::Array(items) => format!(
                            "{field}: {}",
                            items.iter().map(plain).collect::<Vec<_>>().join("; ")
                        ),
                        other => format!("{field}: {}", plain(other)),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let msg = item.get("msg").map(plain).unwrap_or_else(|| plain(item));
                match item.get("loc").and_then(Value::as_array) {
                    Some(loc) => format!(
                        "{}: {msg}",
                        loc.iter().map(plain).collect::<Vec<_>>().join(".")
                    ),
                    None => msg,
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => return None,
    })
}

fn with_kind(message: String, kind: Option<String>) -> String {
    match kind {
        Some(kind) if !kind.is_empty() => format!("{message} ({kind})"),
        _ => message,
    }
}

/// A JSON value as text, strings without their quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The start of a body that is not a known error shape, printable.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    clip(text)
}

fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    engine: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, EngineError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| send_error(engine, &e))? {
        if body.len() + chunk.len() > limit {
            return Err(EngineError::invalid_output(format!(
                "{engine} answered more than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A file name for an upload of this content type: OpenAI's transcription
/// endpoint tells formats apart by the name's extension.
pub(crate) fn audio_file_name(content_type: &str) -> &'static str {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio.wav",
        "audio/mpeg" | "audio/mp3" => "audio.mp3",
        "audio/ogg" | "application/ogg" => "audio.ogg",
        "audio/opus" => "audio.ogg",
        "audio/flac" | "audio/x-flac" => "audio.flac",
        "audio/webm" | "video/webm" => "audio.webm",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "audio.m4a",
        "video/mp4" => "audio.mp4",
        _ => "audio.wav",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_error_shape_reads_as_a_message() {
        let cases: [(&str, &str); 7] = [
            (
                r#"{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#,
                "bad temperature (invalid_request_error)",
            ),
            (
                r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#,
                "Loading model (unavailable_error)",
            ),
            (
                r#"{"error":"failed to read audio data"}"#,
                "failed to read audio data",
            ),
            (
                r#"{"object":"error","message":"too long","type":"BadRequestError","param":null,"code":400}"#,
                "too long (BadRequestError)",
            ),
            (
                r#"{"detail":{"msg":"Server is busy; please try again later.","type":"service_unavailable"}}"#,
                "Server is busy; please try again later. (service_unavailable)",
            ),
            (
                r#"{"detail":{"max_length":["Must be greater than or equal to 1."]}}"#,
                "max_length: Must be greater than or equal to 1.",
            ),
            (
                r#"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}"#,
                "body.prompt: field required",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(error_message(body.as_bytes()).as_deref(), Some(want));
        }
        assert_eq!(error_message(b"<html>502</html>"), None);
        assert_eq!(snippet(b"  \n"), "(empty body)");
    }

    #[test]
    fn the_job_is_at_fault_only_for_its_own_client_errors() {
        assert!(job_at_fault(StatusCode::BAD_REQUEST));
        assert!(job_at_fault(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!job_at_fault(StatusCode::UNAUTHORIZED));
        assert!(!job_at_fault(StatusCode::TOO_MANY_REQUESTS));
        assert!(!job_at_fault(StatusCode::SERVICE_UNAVAILABLE));
        let e = status_error("vLLM", StatusCode::BAD_REQUEST, b"{\"error\":\"nope\"}");
        assert_eq!(e.code, "engine_rejected");
        assert!(e.message.contains("nope"), "{}", e.message);
    }

    #[test]
    fn decimals_stay_as_written() {
        assert_eq!(decimal(0.7), 0.7);
        assert_eq!(decimal(1.25), 1.25);
        assert_eq!(serde_json::json!(decimal(0.2)).to_string(), "0.2");
    }

    #[test]
    fn urls_lose_trailing_slashes_and_v1() {
        assert_eq!(openai_base_url("http://h:8000/v1/"), "http://h:8000");
        assert_eq!(openai_base_url("http://h:8000/"), "http://h:8000");
        assert_eq!(base_url("http://h:5001//"), "http://h:5001");
    }

    #[test]
    fn keys_are_scrubbed_and_never_debug_printed() {
        let key = ApiKey("sk-secret-123".into());
        assert_eq!(
            key.scrub("Incorrect API key provided: sk-secret-123.".into()),
            "Incorrect API key provided: [redacted]."
        );
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn upload_names_follow_the_content_type() {
        assert_eq!(audio_file_name("audio/mpeg"), "audio.mp3");
        assert_eq!(audio_file_name("audio/wav; codecs=1"), "audio.wav");
        assert_eq!(audio_file_name("application/octet-stream"), "audio.wav");
    }
}
