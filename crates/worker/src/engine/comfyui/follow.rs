//! Following a queued prompt until ComfyUI has finished it: on the `/ws`
//! websocket when it connects (with step progress), by polling `/history`
//! otherwise or once it drops, and reading the failures ComfyUI reports.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::client::clip;
use super::{ComfyUi, EngineError, Progress, Template};

/// Time limit of the websocket handshake; past it the run polls instead.
const WS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed `/history` polls in a row after which ComfyUI counts as down.
const MAX_POLL_FAILURES: u32 = 3;
/// While the websocket is up, `/history` is still read every this many poll
/// periods, in case a finishing message was missed.
const SAFETY_POLL_EVERY: u64 = 15;
/// Every this many polls without a history entry, `/queue` is read to notice a
/// prompt that ComfyUI lost (a restart).
const QUEUE_CHECK_EVERY: u64 = 10;
/// How long a finished prompt may take to appear in `/history`.
const HISTORY_GRACE: Duration = Duration::from_secs(30);

impl ComfyUi {
    /// Opens `/ws?clientId=...`; `None` (and the run polls) when it cannot.
    pub(super) async fn connect_ws(&self, client_id: &str) -> Option<Ws> {
        let mut url = self.endpoint("ws");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).ok()?;
        url.query_pairs_mut().append_pair("clientId", client_id);
        match tokio::time::timeout(
            WS_CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        {
            Ok(Ok((ws, _))) => Some(ws),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "ComfyUI websocket unavailable; polling /history instead");
                None
            }
            Err(_) => {
                tracing::info!("ComfyUI websocket handshake timed out; polling /history instead");
                None
            }
        }
    }
    /// Follows a queued prompt until ComfyUI has finished it; its history entry.
    pub(super) async fn follow(
        &self,
        watch: &mut Watch<'_>,
        mut ws: Option<Ws>,
    ) -> Result<Value, EngineError> {
        let period = Duration::from_millis(self.config.poll_interval_ms.max(10));
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        let mut failures = 0;
        loop {
            let listening = ws.is_some();
            tokio::select! {
                message = next_message(&mut ws), if listening => match message {
                    Some(Ok(Message::Text(text))) => match watch.on_message(text.as_str()) {
                        Signal::Continue => {}
                        Signal::Finished => return self.await_history(watch.prompt_id).await,
                        Signal::Failed(e) => return Err(e),
                    },
                    Some(Ok(Message::Close(_))) | None => {
                        tracing::info!(prompt_id = watch.prompt_id, "ComfyUI websocket closed; polling /history");
                        ws = None;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::info!(prompt_id = watch.prompt_id, error = %e, "ComfyUI websocket failed; polling /history");
                        ws = None;
                    }
                },
                _ = poll.tick() => {
                    ticks += 1;
                    if listening && ticks % SAFETY_POLL_EVERY != 0 {
                        continue;
                    }
                    match self.history(watch.prompt_id).await {
                        Ok(Some(entry)) => {
                            watch.started = true;
                            return Ok(entry);
                        }
                        Ok(None) => {
                            failures = 0;
                            if ticks % QUEUE_CHECK_EVERY != 0 {
                                continue;
                            }
                            match self.queued(watch.prompt_id).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    // It may have finished between the two reads.
                                    if let Some(entry) = self.history(watch.prompt_id).await? {
                                        watch.started = true;
                                        return Ok(entry);
                                    }
                                    return Err(EngineError::unavailable(format!(
                                        "ComfyUI no longer knows prompt {} (was it restarted?)",
                                        watch.prompt_id
                                    )));
                                }
                                Err(e) => {
                                    failures += 1;
                                    if failures >= MAX_POLL_FAILURES {
                                        return Err(e);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            if failures >= MAX_POLL_FAILURES {
                                return Err(e);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the history entry of a prompt the websocket said has finished.
    /// ComfyUI records it just after its last messages, so it may lag a little.
    async fn await_history(&self, prompt_id: &str) -> Result<Value, EngineError> {
        let deadline = tokio::time::Instant::now() + HISTORY_GRACE;
        let mut delay = Duration::from_millis(20);
        let mut failures = 0;
        loop {
            match self.history(prompt_id).await {
                Ok(Some(entry)) => return Ok(entry),
                Ok(None) => {}
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_POLL_FAILURES {
                        return Err(e);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::unavailable(format!(
                    "ComfyUI said prompt {prompt_id} finished but its history never showed it"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_message(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// What one websocket message means for the run.
pub(super) enum Signal {
    Continue,
    Finished,
    Failed(EngineError),
}

/// The state of one followed prompt.
pub(super) struct Watch<'a> {
    prompt_id: &'a str,
    template: &'a Template,
    progress: &'a Progress,
    /// The nodes whose progress is the job's (see [`Template::stepping_samplers`]).
    samplers: HashSet<String>,
    /// Fraction done of each of them seen reporting.
    sampler_done: HashMap<String, f32>,
    /// Highest percentage reported so far (progress never goes back).
    reported: f32,
    /// ComfyUI began executing the prompt.
    pub(super) started: bool,
    /// ComfyUI said the prompt ended (failed or interrupted).
    pub(super) ended: bool,
}

impl<'a> Watch<'a> {
    pub(super) fn new(prompt_id: &'a str, template: &'a Template, progress: &'a Progress) -> Self {
        Self {
            prompt_id,
            template,
            progress,
            samplers: template.stepping_samplers(),
            sampler_done: HashMap::new(),
            reported: 0.0,
            started: false,
            ended: false,
        }
    }

    pub(super) fn on_message(&mut self, text: &str) -> Signal {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return Signal::Continue;
        };
        let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
        let data = message.get("data").cloned().unwrap_or(Value::Null);
        let prompt_id = data.get("prompt_id").and_then(Value::as_str);
        let ours = match prompt_id {
            Some(id) => id == self.prompt_id,
            // Older servers leave the id out of some messages; they belong to
            // the prompt this client is running.
            None => self.started,
        };
        if !ours {
            return Signal::Continue;
        }
        match kind {
            "execution_start" | "execution_cached" => {
                self.started = true;
                Signal::Continue
            }
            "executing" => {
                self.started = true;
                if data.get("node").is_none_or(Value::is_null) {
                    Signal::Finished
                } else {
                    Signal::Continue
                }
            }
            "progress" => {
                self.on_progress(&data);
                Signal::Continue
            }
            "execution_success" => Signal::Finished,
            "execution_error" => {
                self.started = true;
                self.ended = true;
                Signal::Failed(execution_error(&data, self.template))
            }
            "execution_interrupted" => {
                self.ended = true;
                Signal::Failed(interrupted(&data, self.template))
            }
            _ => Signal::Continue,
        }
    }

    fn on_progress(&mut self, data: &Value) {
        let value = data.get("value").and_then(Value::as_f64).unwrap_or(0.0);
        let max = data.get("max").and_then(Value::as_f64).unwrap_or(0.0);
        if !(max > 0.0 && value.is_finite()) {
            return;
        }
        let fraction = (value / max).clamp(0.0, 1.0) as f32;
        let overall = match data.get("node").and_then(node_id) {
            Some(node) if self.samplers.contains(&node) => {
                self.sampler_done.insert(node, fraction);
                self.sampler_done.values().sum::<f32>() / self.samplers.len() as f32
            }
            // Once a sampler reports, another node's bar (a tiled decode, an
            // upscaler) would restart the job's: only the samplers count.
            _ if !self.sampler_done.is_empty() => return,
            // Graphs whose sampling node is not titled (SamplerCustomAdvanced
            // fed by a titled RandomNoise), and servers that do not name the
            // node: whatever reports.
            _ => fraction,
        };
        // 100 is for when the files are in hand.
        let percent = (overall * 100.0).min(99.0);
        if percent > self.reported {
            self.reported = percent;
            self.progress.percent(percent);
        }
    }
}

/// Node ids arrive as strings, or as numbers from some custom nodes.
fn node_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn execution_error(data: &Value, template: &Template) -> EngineError {
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("").trim();
    let node = data
        .get("node_id")
        .and_then(node_id)
        .map(|id| template.describe(&id))
        .unwrap_or_else(|| "a node".into());
    let kind = text("exception_type");
    let message = text("exception_message");
    let detail = match (kind.is_empty(), message.is_empty()) {
        (false, false) => format!("{kind}: {message}"),
        (false, true) => kind.to_owned(),
        (true, false) => message.to_owned(),
        (true, true) => "no details".to_owned(),
    };
    let lower = format!("{kind} {message}").to_ascii_lowercase();
    if lower.contains("outofmemory") || lower.contains("out of memory") {
        EngineError::unavailable(clip(format!(
            "ComfyUI ran out of GPU memory in {node}: {detail}"
        )))
    } else {
        EngineError::rejected(clip(format!("ComfyUI failed in {node}: {detail}")))
    }
}

fn interrupted(data: &Value, template: &Template) -> EngineError {
    let node = data
        .get("node_id")
        .and_then(node_id)
        .map(|id| format!(" in {}", template.describe(&id)))
        .unwrap_or_default();
    EngineError::unavailable(format!(
        "ComfyUI interrupted the prompt{node}, though Tessera did not ask it to"
    ))
}

/// The failure a history entry records, if any.
pub(super) fn history_failure(entry: &Value, template: &Template) -> Option<EngineError> {
    let status = entry.get("status")?;
    if status.get("status_str").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let messages = status.get("messages").and_then(Value::as_array);
    for message in messages.into_iter().flatten().rev() {
        let kind = message.get(0).and_then(Value::as_str);
        let data = message.get(1).cloned().unwrap_or(Value::Null);
        match kind {
            Some("execution_error") => return Some(execution_error(&data, template)),
            Some("execution_interrupted") => return Some(interrupted(&data, template)),
            _ => {}
        }
    }
    Some(EngineError::rejected(
        "ComfyUI reports that the prompt failed, without saying why",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera_core::Capability;

    const IMAGE: &str = include_str!("../../../workflows/image-example.json");

    #[test]
    fn execution_errors_map_to_rejected_or_out_of_memory() {
        let t = Template::parse(Capability::Image, IMAGE).unwrap();
        let e = execution_error(
            &json!({"node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError", "exception_message": "bad shape"}),
            &t,
        );
        assert_eq!(e.code, "engine_rejected");
        assert!(
            e.message.contains("RuntimeError: bad shape"),
            "{}",
            e.message
        );
        let e = execution_error(
            &json!({"node_id": "3", "exception_type": "torch.OutOfMemoryError", "exception_message": "Allocation on device"}),
            &t,
        );
        assert!(e.retryable);
        assert!(e.message.contains("out of GPU memory"));
        // Garbage does not panic.
        let e = execution_error(&json!(null), &t);
        assert_eq!(e.code, "engine_rejected");
    }

    #[test]
    fn progress_only_moves_forward_and_follows_the_samplers() {
        let t = Template::parse(Capability::Image, IMAGE).unwrap();
        let (progress, rx) = Progress::new();
        let mut w = Watch::new("p1", &t, &progress);
        let msg = |kind: &str, data: Value| json!({"type": kind, "data": data}).to_string();
        assert!(matches!(
            w.on_message(&msg("execution_start", json!({"prompt_id": "p1"}))),
            Signal::Continue
        ));
        w.on_message(&msg(
            "progress",
            json!({"value": 5, "max": 10, "prompt_id": "p1", "node": "3"}),
        ));
        assert_eq!(*rx.borrow(), Some(50.0));
        // Another node's bar, or another prompt's, does not move it.
        w.on_message(&msg(
            "progress",
            json!({"value": 9, "max": 10, "prompt_id": "p1", "node": "8"}),
        ));
        w.on_message(&msg(
            "progress",
            json!({"value": 9, "max": 10, "prompt_id": "p2", "node": "3"}),
        ));
        assert_eq!(*rx.borrow(), Some(50.0));
        w.on_message(&msg(
            "progress",
            json!({"value": 10, "max": 10, "prompt_id": "p1", "node": "3"}),
        ));
        assert_eq!(*rx.borrow(), Some(99.0));
        assert!(matches!(w.on_message("not json"), Signal::Continue));
        assert!(matches!(
            w.on_message(&msg("executing", json!({"node": null, "prompt_id": "p1"}))),
            Signal::Finished
        ));
        assert!(matches!(
            w.on_message(&msg(
                "execution_error",
                json!({"prompt_id": "p1", "node_id": "3"})
            )),
            Signal::Failed(_)
        ));
    }
    #[test]
    fn history_errors_are_read() {
        let t = Template::parse(Capability::Image, IMAGE).unwrap();
        let entry = json!({"outputs": {}, "status": {"status_str": "error", "completed": false, "messages": [
            ["execution_start", {"prompt_id": "p"}],
            ["execution_error", {"prompt_id": "p", "node_id": "3", "exception_type": "ValueError", "exception_message": "nope"}]
        ]}});
        let e = history_failure(&entry, &t).unwrap();
        assert!(e.message.contains("ValueError: nope"), "{}", e.message);
        let ok = json!({"outputs": {}, "status": {"status_str": "success", "completed": true, "messages": []}});
        assert!(history_failure(&ok, &t).is_none());
        assert!(history_failure(&json!({"outputs": {}}), &t).is_none());
    }
}
