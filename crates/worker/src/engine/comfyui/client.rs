//! The HTTP side of ComfyUI's API: queueing a graph (`/prompt`), reading
//! `/history` and `/queue`, downloading outputs (`/view`), and stopping a prompt
//! Tessera no longer wants. ComfyUI's refusals are turned into sentences here.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use url::Url;

use super::output::OutputFile;
use super::{ComfyUi, EngineError, Template};

/// Time limit of one control request (`/prompt`, `/history`, `/interrupt`...).
pub(super) const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one output download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest error text kept from ComfyUI.
const MAX_MESSAGE_CHARS: usize = 1_000;

impl ComfyUi {
    pub(super) fn endpoint(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    pub(super) fn unreachable(&self, e: reqwest::Error) -> EngineError {
        EngineError::unavailable(format!(
            "ComfyUI at {} cannot be reached: {e}",
            self.config.url
        ))
    }

    /// `POST /prompt`; the prompt id ComfyUI assigned.
    pub(super) async fn submit(
        &self,
        graph: &Value,
        client_id: &str,
        prompt_id: &str,
        template: &Template,
    ) -> Result<String, EngineError> {
        let response = self
            .http
            .post(self.endpoint("prompt"))
            .timeout(CONTROL_TIMEOUT)
            .json(&json!({ "prompt": graph, "client_id": client_id, "prompt_id": prompt_id }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_server_error() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /prompt with {status}: {}",
                snippet(&body)
            )));
        }
        if status == reqwest::StatusCode::BAD_REQUEST {
            return Err(EngineError::rejected(refusal_message(&body, template)));
        }
        if !status.is_success() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /prompt with {status}: {}",
                snippet(&body)
            )));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            EngineError::invalid_output(format!(
                "ComfyUI's answer to /prompt is not JSON: {}",
                snippet(&body)
            ))
        })?;
        match answer.get("prompt_id").and_then(Value::as_str) {
            Some(id) if valid_prompt_id(id) => Ok(id.to_owned()),
            _ => Err(EngineError::invalid_output(format!(
                "ComfyUI's answer to /prompt has no usable prompt_id: {}",
                snippet(&body)
            ))),
        }
    }

    /// `GET /history/{id}`: the entry, or `None` while ComfyUI has none.
    pub(super) async fn history(&self, prompt_id: &str) -> Result<Option<Value>, EngineError> {
        let response = self
            .http
            .get(self.endpoint(&format!("history/{prompt_id}")))
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /history with {status}"
            )));
        }
        let body: Value = response.json().await.map_err(|e| {
            EngineError::invalid_output(format!("ComfyUI's /history answer is not JSON: {e}"))
        })?;
        Ok(body.get(prompt_id).filter(|e| e.is_object()).cloned())
    }

    /// Whether `/queue` still holds the prompt, running or pending.
    pub(super) async fn queued(&self, prompt_id: &str) -> Result<bool, EngineError> {
        let response = self
            .http
            .get(self.endpoint("queue"))
            .timeout(CONTROL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /queue with {}",
                response.status()
            )));
        }
        let body: Value = response.json().await.map_err(|e| {
            EngineError::invalid_output(format!("ComfyUI's /queue answer is not JSON: {e}"))
        })?;
        let holds = |key: &str| {
            body.get(key)
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|item| item.get(1).and_then(Value::as_str) == Some(prompt_id))
                })
        };
        Ok(holds("queue_running") || holds("queue_pending"))
    }

    /// `GET /view?filename=..&subfolder=..&type=output`, at most `max_output_bytes`.
    pub(super) async fn fetch(&self, file: &OutputFile) -> Result<Bytes, EngineError> {
        let limit = self.config.max_output_bytes;
        let mut response = self
            .http
            .get(self.endpoint("view"))
            .query(&[
                ("filename", file.filename.as_str()),
                ("subfolder", file.subfolder.as_str()),
                ("type", "output"),
            ])
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /view for {:?} with {status}",
                file.filename
            )));
        }
        if !status.is_success() {
            return Err(EngineError::invalid_output(format!(
                "ComfyUI answered /view for {:?} with {status}",
                file.filename
            )));
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_big(&file.filename, limit));
        }
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_big(&file.filename, limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }
}

fn too_big(name: &str, limit: u64) -> EngineError {
    EngineError::invalid_output(format!(
        "ComfyUI output {name:?} is larger than max_output_bytes ({limit})"
    ))
}

fn valid_prompt_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// A readable sentence from ComfyUI's 400 answer to `/prompt`:
/// `{"error": {"type", "message", "details", "extra_info"}, "node_errors": {id:
/// {"errors": [...], "class_type"}}}` (older servers send `error` as a string).
fn refusal_message(body: &[u8], template: &Template) -> String {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return clip(format!("ComfyUI refused the workflow: {}", snippet(body)));
    };
    let mut parts = Vec::new();
    match answer.get("error") {
        Some(Value::String(s)) => parts.push(s.clone()),
        Some(Value::Object(e)) => {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            let details = e.get("details").and_then(Value::as_str).unwrap_or("");
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
            let mut s = if message.is_empty() {
                kind.to_owned()
            } else {
                message.to_owned()
            };
            if !details.is_empty() && !details.contains('\n') {
                s.push_str(&format!(" ({details})"));
            }
            parts.push(s);
        }
        _ => {}
    }
    if let Some(nodes) = answer.get("node_errors").and_then(Value::as_object) {
        for (id, node) in nodes {
            let errors = node.get("errors").and_then(Value::as_array);
            let reasons: Vec<String> = errors
                .into_iter()
                .flatten()
                .map(|e| {
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("error");
                    match e.get("details").and_then(Value::as_str) {
                        Some(d) if !d.is_empty() => format!("{message}: {d}"),
                        _ => message.to_owned(),
                    }
                })
                .collect();
            if !reasons.is_empty() {
                parts.push(format!("{}: {}", template.describe(id), reasons.join("; ")));
            }
        }
    }
    if parts.is_empty() {
        parts.push(snippet(body));
    }
    clip(format!(
        "ComfyUI refused the workflow: {}",
        parts.join("; ")
    ))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(300).collect();
    text.trim().to_owned()
}

pub(super) fn clip(mut s: String) -> String {
    if s.chars().count() > MAX_MESSAGE_CHARS {
        s = s.chars().take(MAX_MESSAGE_CHARS).collect();
        s.push('…');
    }
    s
}

/// Asks ComfyUI to drop a prompt that Tessera no longer wants: deletes it from
/// the queue if it had not started, and interrupts it. When dropped armed (the
/// run's future was dropped), it does so on a spawned task.
pub(super) struct StopGuard {
    pub(super) http: reqwest::Client,
    pub(super) base: Url,
    pub(super) prompt_id: String,
    pub(super) started: bool,
    pub(super) armed: bool,
}

impl StopGuard {
    pub(super) async fn stop(&mut self) {
        self.armed = false;
        stop_prompt(
            self.http.clone(),
            self.base.clone(),
            self.prompt_id.clone(),
            self.started,
        )
        .await;
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(stop_prompt(
                self.http.clone(),
                self.base.clone(),
                self.prompt_id.clone(),
                self.started,
            ));
        }
    }
}

/// `POST /queue {"delete": [id]}` unless it started, then `POST /interrupt
/// {"prompt_id": id}`. Servers that predate the `prompt_id` body interrupt
/// whatever runs, which on a Tessera worker is this job's prompt.
async fn stop_prompt(http: reqwest::Client, base: Url, prompt_id: String, started: bool) {
    let post = |path: &str, body: Value| {
        let url = base.join(path).unwrap_or_else(|_| base.clone());
        http.post(url)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
    };
    if !started {
        if let Err(e) = post("queue", json!({ "delete": [prompt_id] })).await {
            tracing::warn!(%prompt_id, error = %e, "could not delete the prompt from ComfyUI's queue");
        }
    }
    if let Err(e) = post("interrupt", json!({ "prompt_id": prompt_id })).await {
        tracing::warn!(%prompt_id, error = %e, "could not interrupt ComfyUI");
    }
}

/// A random id shaped like a UUID (version 4).
pub(super) fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::Capability;

    const IMAGE: &str = include_str!("../../../workflows/image-example.json");

    #[test]
    fn refusals_read_well() {
        let t = Template::parse(Capability::Image, IMAGE).unwrap();
        let body = json!({
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
            "node_errors": {"3": {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": "sampler_name: 'x' not in [...]", "extra_info": {}}], "dependent_outputs": ["9"], "class_type": "KSampler"}}
        });
        let m = refusal_message(body.to_string().as_bytes(), &t);
        assert!(m.contains("Prompt outputs failed validation"), "{m}");
        assert!(m.contains("node 3 (KSampler \"tessera:sampler\")"), "{m}");
        assert!(m.contains("sampler_name"), "{m}");
        let m = refusal_message(br#"{"error": "no prompt", "node_errors": []}"#, &t);
        assert!(m.contains("no prompt"), "{m}");
        let m = refusal_message(b"<html>oops</html>", &t);
        assert!(m.contains("oops"), "{m}");
    }
    #[test]
    fn ids_look_like_uuids() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(valid_prompt_id(&id));
        assert!(!valid_prompt_id("../x"));
    }
}
