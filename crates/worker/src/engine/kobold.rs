//! `kobold`: text generation on a KoboldCPP server, through its native API.
//!
//! KoboldCPP serves one model and one generation at a time. A job becomes one
//! `POST /api/v1/generate` carrying a `genkey` unique to the run; while it
//! runs, `POST /api/extra/generate/check` with that key returns the text so
//! far, from which progress is estimated (KoboldCPP reports text, not a token
//! count: about four characters a token), and which goes to the job's
//! followers as it grows ([`Progress::text_so_far`]). Cancelling sends
//! `POST /api/extra/abort` with the key, so the server stops generating rather
//! than finishing a reply nobody reads; a run dropped without a cancel (the
//! job's time limit) sends the abort on its way out too.
//!
//! KoboldCPP answers `503 {"detail": {"msg", "type": "service_unavailable"}}`
//! when it is busy with another client's generation (unless started with
//! `--multiuser`, when it queues): that is retryable.
//!
//! A KoboldCPP started with `--password` wants that password as a bearer
//! token on every generate, check and abort, and answers `401 {"detail":
//! {"msg": "Authentication key is missing or invalid.", "type":
//! "unauthorized"}}` without it. The password comes from a file
//! (`api_key_file`), read at each run so that a changed password needs no
//! restart; a 401 says which setting to fix.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use tessera_core::params::{JobParams, TextParams};
use tessera_core::Capability;

use super::upstream::{self, base_url, ApiKey};
use super::{Artifact, Engine, EngineError, Progress, Task};

const ENGINE: &str = "KoboldCPP";
/// Largest generate answer read (bytes).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Characters per token, for the progress estimate.
const CHARS_PER_TOKEN: f32 = 4.0;
/// How long a cancelled run waits for the aborted generation to return, so
/// that the next job finds the server free.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// Pause between two aborts while the first found no generation.
const ABORT_RETRY: Duration = Duration::from_millis(100);
/// Limit on the small side requests (check, abort).
const SIDE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KoboldConfig {
    /// KoboldCPP's base URL (`http://127.0.0.1:5001`).
    pub url: String,
    /// The model names jobs ask for; KoboldCPP runs whichever model it loaded.
    pub models: Vec<String>,
    /// A file holding the password KoboldCPP was started with (`--password`),
    /// sent as a bearer token; none for a server without one.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
}

pub struct Kobold {
    config: KoboldConfig,
    base: String,
    http: reqwest::Client,
    poll_every: Duration,
    runs: AtomicU64,
}

impl Kobold {
    /// `http` is the worker's shared client (or a reference to it).
    pub fn new(config: KoboldConfig, http: impl Borrow<reqwest::Client>) -> Self {
        Self {
            base: base_url(&config.url),
            config,
            http: http.borrow().clone(),
            poll_every: Duration::from_millis(500),
            runs: AtomicU64::new(0),
        }
    }

    /// How often progress is polled while generating (500 ms by default).
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every.max(Duration::from_millis(10));
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The text generated so far by the run with this key; `None` when the
    /// server does not say.
    async fn check(&self, genkey: &str, key: Option<&ApiKey>) -> Option<String> {
        let request = self
            .http
            .post(self.url("/api/extra/generate/check"))
            .json(&json!({ "genkey": genkey }))
            .timeout(SIDE_REQUEST_TIMEOUT);
        let response = authorized(request, key).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let value: Value = response.json().await.ok()?;
        value
            .get("results")?
            .get(0)?
            .get("text")?
            .as_str()
            .map(str::to_owned)
    }

    fn generate_body(params: &TextParams, genkey: &str) -> Value {
        json!({
            "prompt": prompt(params),
            "max_length": params.max_tokens,
            "temperature": upstream::decimal(params.temperature),
            "genkey": genkey,
            // Keeps prompts and replies out of the server's console.
            "quiet": true,
        })
    }
}

/// The text KoboldCPP continues: the system text, a blank line, the prompt.
pub fn prompt(params: &TextParams) -> String {
    match params.system.as_deref().map(str::trim) {
        Some(system) if !system.is_empty() => format!("{system}\n\n{}", params.prompt),
        _ => params.prompt.clone(),
    }
}

/// `request` with the password as its bearer token, if there is one.
fn authorized(request: reqwest::RequestBuilder, key: Option<&ApiKey>) -> reqwest::RequestBuilder {
    match key {
        Some(key) => request.bearer_auth(key.as_str()),
        None => request,
    }
}

/// Sends the abort for a run that ends without a reply, unless disarmed.
struct AbortOnDrop {
    http: reqwest::Client,
    url: String,
    genkey: String,
    key: Option<ApiKey>,
    armed: bool,
}

impl AbortOnDrop {
    fn request(&self) -> reqwest::RequestBuilder {
        let request = self
            .http
            .post(&self.url)
            .json(&json!({ "genkey": self.genkey }))
            .timeout(SIDE_REQUEST_TIMEOUT);
        authorized(request, self.key.as_ref())
    }

    /// Sends the abort and waits for the answer: true if KoboldCPP says it
    /// stopped (or will stop) the generation.
    async fn send(&self) -> bool {
        match self.request().send().await {
            Ok(r) => {
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                // KoboldCPP answers "true" as a string; its docs say a boolean.
                let success = matches!(body.get("success"), Some(Value::Bool(true)))
                    || body.get("success").and_then(Value::as_str) == Some("true");
                tracing::debug!(genkey = %self.genkey, %status, success, "KoboldCPP abort sent");
                success
            }
            Err(e) => {
                tracing::warn!(genkey = %self.genkey, error = %e, "KoboldCPP abort failed");
                false
            }
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let request = self.request();
            let genkey = self.genkey.clone();
            runtime.spawn(async move {
                if let Err(e) = request.send().await {
                    tracing::warn!(%genkey, error = %e, "KoboldCPP abort failed");
                }
            });
        }
    }
}

#[derive(Deserialize)]
struct GenerateOutput {
    results: Vec<GenerateResult>,
}

#[derive(Deserialize)]
struct GenerateResult {
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[async_trait]
impl Engine for Kobold {
    fn kind(&self) -> &'static str {
        "kobold"
    }

    fn capability(&self) -> Capability {
        Capability::Text
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        // KoboldCPP keeps the one model it was started with in memory.
        self.config.models.clone()
    }

    /// `GET /api/v1/model`, which KoboldCPP answers once its model is loaded.
    async fn probe(&self) -> Result<(), EngineError> {
        let key = upstream::optional_api_key(self.config.api_key_file.as_ref()).await?;
        let url = self.url("/api/v1/model");
        upstream::probe_get(&self.http, ENGINE, &url, key.as_ref(), false).await
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let JobParams::Text(params) = &task.params else {
            return Err(EngineError::rejected("kobold runs only text jobs"));
        };
        if cancel.is_cancelled() {
            return Err(EngineError::cancelled());
        }
        let key = upstream::optional_api_key(self.config.api_key_file.as_ref()).await?;
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let genkey = format!("tessera-{}-{run}", task.job_id);
        let mut abort = AbortOnDrop {
            http: self.http.clone(),
            url: self.url("/api/extra/abort"),
            genkey: genkey.clone(),
            key: key.clone(),
            armed: true,
        };
        let generate = self
            .http
            .post(self.url("/api/v1/generate"))
            .json(&Self::generate_body(params, &genkey));
        let generate = authorized(generate, key.as_ref()).send();
        tokio::pin!(generate);
        let mut poll = tokio::time::interval(self.poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        let expected_chars = params.max_tokens.max(1) as f32 * CHARS_PER_TOKEN;
        let answered = loop {
            tokio::select! {
                answered = &mut generate => break answered,
                _ = cancel.cancelled() => {
                    abort.armed = false;
                    let mut stopped = abort.send().await;
                    // Let the aborted generation return, so the server is free
                    // for the next job. An abort that found nothing (the
                    // generate request had not arrived yet) is sent again.
                    let grace = tokio::time::sleep(ABORT_GRACE);
                    tokio::pin!(grace);
                    loop {
                        tokio::select! {
                            _ = &mut generate => break,
                            _ = &mut grace => break,
                            _ = tokio::time::sleep(ABORT_RETRY), if !stopped => {
                                stopped = abort.send().await;
                            }
                        }
                    }
                    return Err(EngineError::cancelled());
                }
                _ = poll.tick() => {
                    let check = tokio::select! {
                        text = self.check(&genkey, key.as_ref()) => text,
                        _ = cancel.cancelled() => continue,
                    };
                    if let Some(text) = check {
                        progress.text_so_far(&text);
                        let estimate = text.chars().count() as f32 / expected_chars * 100.0;
                        progress.percent(estimate.min(99.0));
                    }
                }
            }
        };
        let response = match answered {
            Ok(response) => response,
            Err(e) => {
                // No answer; the guard aborts whatever may still run there.
                return Err(scrub(&key, upstream::send_error(ENGINE, &e)));
            }
        };
        let status = response.status();
        // The generation is over, whatever its answer says.
        abort.armed = false;
        let body = upstream::read_body(ENGINE, response, MAX_BODY).await?;
        if !status.is_success() {
            let e = kobold_status_error(status, &body, self.config.api_key_file.as_ref());
            return Err(scrub(&key, e));
        }
        let output: GenerateOutput = serde_json::from_slice(&body).map_err(|e| {
            EngineError::invalid_output(format!(
                "KoboldCPP's generate answer is not its documented JSON ({e}): {}",
                upstream::snippet(&body)
            ))
        })?;
        let Some(result) = output.results.into_iter().next() else {
            return Err(EngineError::invalid_output(
                "KoboldCPP's generate answer holds no result",
            ));
        };
        tracing::debug!(
            job_id = %task.job_id,
            finish_reason = result.finish_reason.as_deref().unwrap_or("unknown"),
            chars = result.text.len(),
            "KoboldCPP generation finished"
        );
        progress.percent(100.0);
        Ok(vec![Artifact::text(result.text.trim())])
    }
}

fn scrub(key: &Option<ApiKey>, mut e: EngineError) -> EngineError {
    if let Some(key) = key {
        e.message = key.scrub(e.message);
    }
    e
}

/// KoboldCPP answers a body it cannot use with 500 and `"type": "bad_input"`
/// (unparsable or over 32 MB): that is the job's fault, not the server's. A
/// 401 is the worker's: its message says which setting to fix.
fn kobold_status_error(
    status: reqwest::StatusCode,
    body: &[u8],
    key_file: Option<&PathBuf>,
) -> EngineError {
    let bad_input = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("detail")?
                .get("type")?
                .as_str()
                .map(|t| t == "bad_input")
        })
        .unwrap_or(false);
    let mut e = upstream::status_error(ENGINE, status, body);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        e.message.push_str(&match key_file {
            None => " (KoboldCPP was started with --password: put that password in a file \
                      and name it in this engine's api_key_file)"
                .to_owned(),
            Some(path) => format!(
                " (the password in {} is not the one KoboldCPP was started with)",
                path.display()
            ),
        });
    }
    if bad_input {
        EngineError::rejected(e.message)
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(system: Option<&str>) -> TextParams {
        TextParams {
            prompt: "Write a haiku.".into(),
            system: system.map(str::to_owned),
            max_tokens: 64,
            temperature: 0.7,
        }
    }

    #[test]
    fn the_system_text_comes_before_the_prompt() {
        assert_eq!(prompt(&params(None)), "Write a haiku.");
        assert_eq!(prompt(&params(Some("  "))), "Write a haiku.");
        assert_eq!(
            prompt(&params(Some("You are terse."))),
            "You are terse.\n\nWrite a haiku."
        );
    }

    #[test]
    fn bad_input_is_the_jobs_fault_and_busy_is_not() {
        let e = kobold_status_error(
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"detail":{"msg":"Error parsing input.","type":"bad_input"}}"#,
            None,
        );
        assert_eq!(e.code, "engine_rejected");
        let e = kobold_status_error(
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            br#"{"detail":{"msg":"Server is busy; please try again later.","type":"service_unavailable"}}"#,
            None,
        );
        assert!(e.retryable);
        assert!(e.message.contains("Server is busy"), "{}", e.message);
    }
}
