//! `comfyui`: text-to-image and text-to-video through a ComfyUI server.
//!
//! ComfyUI runs graphs of nodes. Tessera keeps one API-format graph per model,
//! `{workflows_dir}/{model}.json`, loaded and checked when the worker starts,
//! and writes a job's parameters into the nodes whose `_meta.title` names them
//! (`tessera:prompt`, `tessera:negative`, `tessera:size`, `tessera:sampler`,
//! `tessera:fps`, `tessera:output`; see [`Template`] and `docs/engines.md`).
//!
//! A run posts the graph to `/prompt`, follows it on the `/ws` websocket (or by
//! polling `/history/{prompt_id}` when the websocket cannot connect or drops),
//! then reads the output node's files from `/history` and fetches each with
//! `/view`. The names ComfyUI reports are checked and only ever sent back to it
//! as query parameters: no local path is built from them. The files' format and
//! size come from their own headers, not from their names.
//!
//! Errors: ComfyUI unreachable or answering 5xx is `engine_unavailable`
//! (retryable); a graph it refuses (400 with `error`/`node_errors`) or a node
//! that fails while running is `engine_rejected`, except out-of-memory failures,
//! which are `engine_unavailable` because another attempt (after ComfyUI freed
//! its models, or on a bigger GPU) may succeed. A cancelled job deletes its
//! prompt from the queue if it had not started and interrupts it; a run future
//! dropped before it finished (the agent's time limit) does the same.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use url::Url;

use tessera_api::internal::{ArtifactKind, ArtifactMeta};
use tessera_core::params::JobParams;
use tessera_core::Capability;

use super::{cancellable, Artifact, Engine, EngineError, LoadedModel, Progress, Task};

/// Title of the text encoder(s) that receive the prompt (input `text`).
pub const TITLE_PROMPT: &str = "tessera:prompt";
/// Title of the text encoder(s) that receive the negative prompt (input `text`);
/// optional, and a job without one keeps the template's text.
pub const TITLE_NEGATIVE: &str = "tessera:negative";
/// Title of the empty latent(s) that receive `width`, `height` and, for video, `length`.
pub const TITLE_SIZE: &str = "tessera:size";
/// Title of the node(s) that receive the seed (`seed` or `noise_seed`) and, for
/// images, `steps`: a `KSampler`, or a `RandomNoise` and a `BasicScheduler`.
pub const TITLE_SAMPLER: &str = "tessera:sampler";
/// Title of a node that receives the frame rate (`fps` or `frame_rate`), for
/// video graphs whose output node does not take it.
pub const TITLE_FPS: &str = "tessera:fps";
/// Title of the node(s) whose saved files are the job's artifacts.
pub const TITLE_OUTPUT: &str = "tessera:output";

/// Largest random seed: 2^53 - 1, exact in every JSON reader.
const MAX_RANDOM_SEED: u64 = (1 << 53) - 1;
/// Time limit of one control request (`/prompt`, `/history`, `/interrupt`...).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one output download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
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
/// Longest error text kept from ComfyUI.
const MAX_MESSAGE_CHARS: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComfyUiConfig {
    /// Base URL of the ComfyUI server (`http://127.0.0.1:8188`).
    #[serde(default = "default_url")]
    pub url: String,
    /// `image` or `video`.
    pub capability: Capability,
    /// Models served; each needs `{workflows_dir}/{model}.json`.
    pub models: Vec<String>,
    /// Folder of the API-format workflow templates (relative paths are relative
    /// to the worker's working directory).
    pub workflows_dir: PathBuf,
    /// Follow progress on ComfyUI's websocket; when false, or when it cannot
    /// connect, the run polls `/history` instead (no step progress).
    #[serde(default = "default_websocket")]
    pub websocket: bool,
    /// Period of `/history` polling (ms).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Largest output file fetched from ComfyUI (bytes).
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
}

fn default_url() -> String {
    "http://127.0.0.1:8188".into()
}
fn default_websocket() -> bool {
    true
}
fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_max_output_bytes() -> u64 {
    512 * 1024 * 1024
}

/// A checked workflow template: the graph, and which nodes receive what.
#[derive(Clone, Debug)]
pub struct Template {
    capability: Capability,
    graph: Map<String, Value>,
    prompt: Vec<String>,
    negative: Vec<String>,
    size: Vec<String>,
    /// The nodes titled `tessera:sampler`.
    sampler: Vec<SamplerNode>,
    /// Node ids and the name of their frame-rate input.
    fps: Vec<(String, &'static str)>,
    output: Vec<String>,
}

impl Template {
    /// Reads and checks `{dir}/{model}.json`.
    pub fn load(capability: Capability, dir: &Path, model: &str) -> anyhow::Result<Template> {
        if !valid_model_file_name(model) {
            anyhow::bail!(
                "comfyui model {model:?} cannot name a workflow file: use letters, digits, `.`, `_`, `-` or `+`, not starting with `.`"
            );
        }
        let path = dir.join(format!("{model}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "comfyui model {model:?}: cannot read its workflow template {}",
                path.display()
            )
        })?;
        Template::parse(capability, &text).map_err(|e| {
            anyhow::anyhow!(
                "comfyui model {model:?}: workflow template {} is not usable: {e}",
                path.display()
            )
        })
    }

    /// Parses and checks an API-format graph for `capability`.
    pub fn parse(capability: Capability, text: &str) -> Result<Template, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("it is not valid JSON ({e})"))?;
        let Value::Object(graph) = value else {
            return Err("it must be a JSON object of nodes keyed by id".into());
        };
        if graph.contains_key("nodes") && graph.contains_key("links") {
            return Err(
                "it is a UI-format workflow; export it from ComfyUI with \"Export (API)\"".into(),
            );
        }
        if graph.is_empty() {
            return Err("it has no nodes".into());
        }
        for (id, node) in &graph {
            let Some(node) = node.as_object() else {
                return Err(format!("node {id:?} is not an object"));
            };
            match node.get("class_type") {
                Some(Value::String(c)) if !c.is_empty() => {}
                _ => return Err(format!("node {id:?} has no class_type")),
            }
            let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
                return Err(format!("node {id:?} has no inputs object"));
            };
            for (name, input) in inputs {
                if let Value::Array(link) = input {
                    let target = link.first().and_then(Value::as_str);
                    let slot = link.get(1).and_then(Value::as_u64);
                    match (target, slot, link.len()) {
                        (Some(t), Some(_), 2) if graph.contains_key(t) => {}
                        (Some(t), Some(_), 2) => {
                            return Err(format!(
                            "node {id:?} input {name:?} links to node {t:?}, which does not exist"
                        ))
                        }
                        _ => {
                            return Err(format!(
                            "node {id:?} input {name:?} is a list but not a link [node_id, slot]"
                        ))
                        }
                    }
                }
            }
        }
        let titled = |title: &str| -> Vec<String> {
            graph
                .iter()
                .filter(|(_, n)| n.pointer("/_meta/title").and_then(Value::as_str) == Some(title))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let video = match capability {
            Capability::Image => false,
            Capability::Video => true,
            other => return Err(format!("comfyui serves image or video jobs, not {other}")),
        };
        let prompt = titled(TITLE_PROMPT);
        let negative = titled(TITLE_NEGATIVE);
        let size = titled(TITLE_SIZE);
        let samplers = titled(TITLE_SAMPLER);
        let fps_nodes = titled(TITLE_FPS);
        let output = titled(TITLE_OUTPUT);
        for (title, ids) in [
            (TITLE_PROMPT, &prompt),
            (TITLE_SIZE, &size),
            (TITLE_SAMPLER, &samplers),
            (TITLE_OUTPUT, &output),
        ] {
            if ids.is_empty() {
                return Err(format!("no node is titled {title:?}"));
            }
        }
        let check = |ids: &[String], title: &str, input: &str| -> Result<(), String> {
            for id in ids {
                literal_input(&graph, id, input)
                    .map_err(|e| format!("{title} node {id:?}: {e}"))?;
            }
            Ok(())
        };
        check(&prompt, TITLE_PROMPT, "text")?;
        check(&negative, TITLE_NEGATIVE, "text")?;
        check(&size, TITLE_SIZE, "width")?;
        check(&size, TITLE_SIZE, "height")?;
        if video {
            check(&size, TITLE_SIZE, "length")?;
        }
        let mut sampler = Vec::new();
        for id in &samplers {
            let seed = ["seed", "noise_seed"]
                .into_iter()
                .find(|k| literal_input(&graph, id, k).is_ok());
            let steps = literal_input(&graph, id, "steps").is_ok();
            if seed.is_none() && !steps {
                return Err(format!(
                    "{TITLE_SAMPLER} node {id:?} has no literal `seed`, `noise_seed` or `steps` input"
                ));
            }
            sampler.push(SamplerNode {
                id: id.clone(),
                seed,
                steps,
            });
        }
        if !sampler.iter().any(|n| n.seed.is_some()) {
            return Err(format!(
                "no {TITLE_SAMPLER} node has a literal `seed` or `noise_seed` input"
            ));
        }
        if !video && !sampler.iter().any(|n| n.steps) {
            return Err(format!(
                "no {TITLE_SAMPLER} node has a literal `steps` input, which image jobs set"
            ));
        }
        let mut fps = Vec::new();
        for id in &fps_nodes {
            let key = fps_input(&graph, id).ok_or_else(|| {
                format!("{TITLE_FPS} node {id:?} has no literal `fps` or `frame_rate` input")
            })?;
            fps.push((id.clone(), key));
        }
        if video {
            for id in &output {
                if let Some(key) = fps_input(&graph, id) {
                    fps.push((id.clone(), key));
                }
            }
            if fps.is_empty() {
                return Err(format!(
                    "nothing receives the frame rate: give the {TITLE_OUTPUT} node an `fps` or `frame_rate` input, or title a node {TITLE_FPS:?}"
                ));
            }
        }
        Ok(Template {
            capability,
            graph,
            prompt,
            negative,
            size,
            sampler,
            fps,
            output,
        })
    }

    /// The graph with a job's parameters written into its named nodes.
    /// `seed` is used when the job gives none.
    pub fn render(&self, params: &JobParams, seed: u64) -> Result<Value, EngineError> {
        let (prompt, negative, width, height, seed, steps, video) = match (params, self.capability)
        {
            (JobParams::Image(p), Capability::Image) => (
                &p.prompt,
                p.negative_prompt.as_deref(),
                p.width,
                p.height,
                p.seed.unwrap_or(seed),
                Some(p.steps),
                None,
            ),
            (JobParams::Video(p), Capability::Video) => (
                &p.prompt,
                p.negative_prompt.as_deref(),
                p.width,
                p.height,
                p.seed.unwrap_or(seed),
                None,
                Some((p.frames(), p.fps)),
            ),
            _ => {
                return Err(EngineError::rejected(format!(
                    "this comfyui engine serves {} jobs",
                    self.capability
                )))
            }
        };
        let mut graph = self.graph.clone();
        let mut set = |id: &str, input: &str, value: Value| {
            if let Some(inputs) = graph
                .get_mut(id)
                .and_then(|n| n.get_mut("inputs"))
                .and_then(Value::as_object_mut)
            {
                inputs.insert(input.to_owned(), value);
            }
        };
        for id in &self.prompt {
            set(id, "text", json!(prompt));
        }
        // Without a negative prompt the template's own text stays: it is the
        // model's recommended one.
        if let Some(negative) = negative {
            for id in &self.negative {
                set(id, "text", json!(negative));
            }
        }
        for id in &self.size {
            set(id, "width", json!(width));
            set(id, "height", json!(height));
            if let Some((frames, _)) = video {
                set(id, "length", json!(frames));
            }
        }
        for node in &self.sampler {
            if let Some(key) = node.seed {
                set(&node.id, key, json!(seed));
            }
            if let (true, Some(steps)) = (node.steps, steps) {
                set(&node.id, "steps", json!(steps));
            }
        }
        if let Some((_, fps)) = video {
            for (id, key) in &self.fps {
                let float = self
                    .graph
                    .get(id)
                    .and_then(|n| n.pointer(&format!("/inputs/{key}")))
                    .is_some_and(Value::is_f64);
                set(id, key, if float { json!(fps as f64) } else { json!(fps) });
            }
        }
        Ok(Value::Object(graph))
    }

    /// The `_meta.title` or class of a node, for messages.
    fn describe(&self, id: &str) -> String {
        let node = self.graph.get(id);
        let title = node
            .and_then(|n| n.pointer("/_meta/title"))
            .and_then(Value::as_str);
        let class = node
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str);
        match (title, class) {
            (Some(t), Some(c)) if t != c => format!("node {id} ({c} \"{t}\")"),
            (_, Some(c)) => format!("node {id} ({c})"),
            _ => format!("node {id}"),
        }
    }

    /// The sampling nodes among the `tessera:sampler` ones: those with both a
    /// seed and steps (`KSampler`), whose progress is the job's.
    fn stepping_samplers(&self) -> HashSet<String> {
        self.sampler
            .iter()
            .filter(|n| n.seed.is_some() && n.steps)
            .map(|n| n.id.clone())
            .collect()
    }
}

#[derive(Clone, Debug)]
struct SamplerNode {
    id: String,
    /// The name of its seed input, if it has one.
    seed: Option<&'static str>,
    /// Whether it has a `steps` input.
    steps: bool,
}

/// The input is present and a literal value (not a link), so Tessera may set it.
fn literal_input(graph: &Map<String, Value>, id: &str, input: &str) -> Result<(), String> {
    match graph
        .get(id)
        .and_then(|n| n.pointer(&format!("/inputs/{input}")))
    {
        None => Err(format!("it has no `{input}` input")),
        Some(Value::Array(_)) => Err(format!(
            "its `{input}` input is a link; Tessera sets it, so it must be a plain value"
        )),
        Some(_) => Ok(()),
    }
}

fn fps_input(graph: &Map<String, Value>, id: &str) -> Option<&'static str> {
    ["fps", "frame_rate"]
        .into_iter()
        .find(|k| literal_input(graph, id, k).is_ok())
}

fn valid_model_file_name(model: &str) -> bool {
    (1..=128).contains(&model.len())
        && !model.starts_with('.')
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

pub struct ComfyUi {
    config: ComfyUiConfig,
    /// Base URL, its path ending in `/` so endpoints join under it.
    base: Url,
    http: reqwest::Client,
    templates: HashMap<String, Template>,
    loaded: LoadedModel,
}

impl ComfyUi {
    /// Checks the settings and loads every model's template.
    pub fn new(config: ComfyUiConfig, http: reqwest::Client) -> anyhow::Result<Self> {
        if !matches!(config.capability, Capability::Image | Capability::Video) {
            anyhow::bail!(
                "comfyui serves image or video jobs; capability {} is not one of them",
                config.capability
            );
        }
        let mut base = Url::parse(&config.url)
            .map_err(|e| anyhow::anyhow!("comfyui url {:?}: {e}", config.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            anyhow::bail!("comfyui url {:?} must be an http(s) URL", config.url);
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        base.set_fragment(None);
        if config.models.is_empty() {
            anyhow::bail!("a comfyui engine needs at least one model");
        }
        let mut templates = HashMap::new();
        for model in &config.models {
            let template = Template::load(config.capability, &config.workflows_dir, model)?;
            templates.insert(model.clone(), template);
        }
        Ok(Self {
            config,
            base,
            http,
            templates,
            loaded: LoadedModel::default(),
        })
    }

    fn endpoint(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn unreachable(&self, e: reqwest::Error) -> EngineError {
        EngineError::unavailable(format!(
            "ComfyUI at {} cannot be reached: {e}",
            self.config.url
        ))
    }

    /// Opens `/ws?clientId=...`; `None` (and the run polls) when it cannot.
    async fn connect_ws(&self, client_id: &str) -> Option<Ws> {
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

    /// `POST /prompt`; the prompt id ComfyUI assigned.
    async fn submit(
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
    async fn history(&self, prompt_id: &str) -> Result<Option<Value>, EngineError> {
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
    async fn queued(&self, prompt_id: &str) -> Result<bool, EngineError> {
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

    /// Follows a queued prompt until ComfyUI has finished it; its history entry.
    async fn follow(
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

    /// Turns a finished prompt's history entry into artifacts.
    async fn collect(
        &self,
        entry: &Value,
        template: &Template,
    ) -> Result<Vec<Artifact>, EngineError> {
        if let Some(e) = history_failure(entry, template) {
            return Err(e);
        }
        let files = output_files(entry, &template.output)?;
        if files.is_empty() {
            return Err(EngineError::invalid_output(format!(
                "ComfyUI finished, but the {TITLE_OUTPUT} node saved no output file"
            )));
        }
        let mut artifacts = Vec::with_capacity(files.len());
        for file in &files {
            let bytes = self.fetch(file).await?;
            let meta = describe_file(&bytes, template.capability).map_err(|e| {
                EngineError::invalid_output(format!("ComfyUI output {:?}: {e}", file.filename))
            })?;
            artifacts.push(Artifact { meta, bytes });
        }
        Ok(artifacts)
    }

    /// `GET /view?filename=..&subfolder=..&type=output`, at most `max_output_bytes`.
    async fn fetch(&self, file: &OutputFile) -> Result<Bytes, EngineError> {
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

type Ws =
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
enum Signal {
    Continue,
    Finished,
    Failed(EngineError),
}

/// The state of one followed prompt.
struct Watch<'a> {
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
    started: bool,
    /// ComfyUI said the prompt ended (failed or interrupted).
    ended: bool,
}

impl<'a> Watch<'a> {
    fn new(prompt_id: &'a str, template: &'a Template, progress: &'a Progress) -> Self {
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

    fn on_message(&mut self, text: &str) -> Signal {
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
fn history_failure(entry: &Value, template: &Template) -> Option<EngineError> {
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

/// One file ComfyUI saved, as its history names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OutputFile {
    filename: String,
    subfolder: String,
}

/// The `output` files saved by the given nodes. Entries of another type
/// (`temp` previews) are skipped; a name that could leave ComfyUI's output
/// folder is an error.
fn output_files(entry: &Value, nodes: &[String]) -> Result<Vec<OutputFile>, EngineError> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let outputs = entry.get("outputs").and_then(Value::as_object);
    for id in nodes {
        let Some(node) = outputs.and_then(|o| o.get(id)).and_then(Value::as_object) else {
            continue;
        };
        for items in node.values().filter_map(Value::as_array) {
            for item in items.iter().filter_map(Value::as_object) {
                let Some(filename) = item.get("filename").and_then(Value::as_str) else {
                    continue;
                };
                let kind = item.get("type").and_then(Value::as_str).unwrap_or("output");
                if kind != "output" {
                    continue;
                }
                let subfolder = item.get("subfolder").and_then(Value::as_str).unwrap_or("");
                if !safe_file_name(filename) || !safe_subfolder(subfolder) {
                    return Err(EngineError::invalid_output(format!(
                        "ComfyUI named an output {:?} in {:?}, which is not a plain file name",
                        clip(filename.to_owned()),
                        clip(subfolder.to_owned())
                    )));
                }
                let file = OutputFile {
                    filename: filename.to_owned(),
                    subfolder: subfolder.to_owned(),
                };
                if seen.insert(file.clone()) {
                    files.push(file);
                }
            }
        }
    }
    Ok(files)
}

fn safe_file_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name != "."
        && !name.contains("..")
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

fn safe_subfolder(sub: &str) -> bool {
    sub.len() <= 1024
        && !sub.starts_with('/')
        && !sub.contains('\\')
        && !sub.chars().any(char::is_control)
        && sub.split('/').all(|part| part != ".." && part != ".")
        && !sub.contains(':')
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

fn clip(mut s: String) -> String {
    if s.chars().count() > MAX_MESSAGE_CHARS {
        s = s.chars().take(MAX_MESSAGE_CHARS).collect();
        s.push('…');
    }
    s
}

/// Asks ComfyUI to drop a prompt that Tessera no longer wants: deletes it from
/// the queue if it had not started, and interrupts it. When dropped armed (the
/// run's future was dropped), it does so on a spawned task.
struct StopGuard {
    http: reqwest::Client,
    base: Url,
    prompt_id: String,
    started: bool,
    armed: bool,
}

impl StopGuard {
    async fn stop(&mut self) {
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
fn random_uuid() -> String {
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

#[async_trait]
impl Engine for ComfyUi {
    fn kind(&self) -> &'static str {
        "comfyui"
    }

    fn capability(&self) -> Capability {
        self.config.capability
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        self.loaded.list()
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let template = self.templates.get(&task.model).ok_or_else(|| {
            EngineError::rejected(format!(
                "this comfyui engine does not serve model {:?}",
                task.model
            ))
        })?;
        let graph = template.render(&task.params, rand::random_range(0..=MAX_RANDOM_SEED))?;
        if cancel.is_cancelled() {
            return Err(EngineError::cancelled());
        }
        let client_id = random_uuid().replace('-', "");
        let ws = if self.config.websocket {
            cancellable(cancel, async { Ok(self.connect_ws(&client_id).await) }).await?
        } else {
            None
        };
        // Newer servers keep the id the client proposes, so a cancel that
        // lands while /prompt is answering can still name the prompt.
        let proposed = random_uuid();
        let mut guard = StopGuard {
            http: self.http.clone(),
            base: self.base.clone(),
            prompt_id: proposed.clone(),
            started: false,
            armed: true,
        };
        let submitted = tokio::select! {
            r = self.submit(&graph, &client_id, &proposed, template) => r,
            _ = cancel.cancelled() => {
                guard.stop().await;
                return Err(EngineError::cancelled());
            }
        };
        let prompt_id = match submitted {
            Ok(id) => id,
            Err(e) => {
                guard.armed = false;
                return Err(e);
            }
        };
        guard.prompt_id = prompt_id.clone();
        tracing::debug!(job_id = %task.job_id, %prompt_id, "ComfyUI queued the prompt");

        let mut watch = Watch::new(&prompt_id, template, progress);
        let followed = tokio::select! {
            r = self.follow(&mut watch, ws) => r,
            _ = cancel.cancelled() => Err(EngineError::cancelled()),
        };
        if watch.started {
            self.loaded.set(Some(task.model.clone()));
        }
        guard.started = watch.started;
        let entry = match followed {
            Ok(entry) => entry,
            Err(e) if e.code == EngineError::cancelled().code => {
                guard.stop().await;
                return Err(e);
            }
            Err(e) => {
                // A failure ComfyUI reported ended the prompt; otherwise (the
                // server stopped answering) it may still be running, and
                // nobody wants it any more.
                if watch.ended {
                    guard.armed = false;
                }
                return Err(e);
            }
        };
        guard.armed = false;
        let artifacts = cancellable(cancel, self.collect(&entry, template)).await?;
        progress.percent(100.0);
        Ok(artifacts)
    }

    async fn unload(&self) -> Result<(), EngineError> {
        let response = self
            .http
            .post(self.endpoint("free"))
            .timeout(CONTROL_TIMEOUT)
            .json(&json!({ "unload_models": true, "free_memory": true }))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /free with {}",
                response.status()
            )));
        }
        self.loaded.set(None);
        Ok(())
    }
}

/// The kind, format and size of a file ComfyUI saved, from its own header.
pub fn describe_file(bytes: &[u8], capability: Capability) -> Result<ArtifactMeta, String> {
    let format = sniff(bytes).ok_or("its content is not a known image or video format")?;
    let (kind, name) = match (capability, format) {
        (Capability::Image, Format::Png { .. }) => (ArtifactKind::Image, "png"),
        (Capability::Image, Format::Jpeg) => (ArtifactKind::Image, "jpeg"),
        (Capability::Image, Format::Webp { .. }) => (ArtifactKind::Image, "webp"),
        (Capability::Image, Format::Gif) => (ArtifactKind::Image, "gif"),
        (Capability::Video, Format::Png { animated: true }) => (ArtifactKind::Video, "apng"),
        (Capability::Video, Format::Webp { .. }) => (ArtifactKind::Video, "webp"),
        (Capability::Video, Format::Gif) => (ArtifactKind::Video, "gif"),
        (Capability::Video, Format::Mp4) => (ArtifactKind::Video, "mp4"),
        (Capability::Video, Format::Mov) => (ArtifactKind::Video, "mov"),
        (Capability::Video, Format::Webm) => (ArtifactKind::Video, "webm"),
        (Capability::Video, Format::Mkv) => (ArtifactKind::Video, "mkv"),
        (capability, format) => {
            return Err(format!(
                "a {capability} job cannot return a {} file",
                format.name()
            ))
        }
    };
    let size = match format {
        Format::Png { .. } | Format::Jpeg | Format::Webp { .. } | Format::Gif => {
            let size = imagesize::blob_size(bytes)
                .map_err(|e| format!("its {} header cannot be read: {e}", format.name()))?;
            let w = u32::try_from(size.width).ok().filter(|w| *w > 0);
            let h = u32::try_from(size.height).ok().filter(|h| *h > 0);
            match (w, h) {
                (Some(w), Some(h)) => Some((w, h)),
                _ => return Err(format!("its {} header gives no size", format.name())),
            }
        }
        Format::Mp4 | Format::Mov => mp4_size(bytes),
        Format::Webm | Format::Mkv => None,
    };
    Ok(ArtifactMeta {
        kind,
        format: name.into(),
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Png { animated: bool },
    Jpeg,
    Webp { animated: bool },
    Gif,
    Mp4,
    Mov,
    Webm,
    Mkv,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Png { animated: false } => "png",
            Format::Png { animated: true } => "animated png",
            Format::Jpeg => "jpeg",
            Format::Webp { animated: false } => "webp",
            Format::Webp { animated: true } => "animated webp",
            Format::Gif => "gif",
            Format::Mp4 => "mp4",
            Format::Mov => "mov",
            Format::Webm => "webm",
            Format::Mkv => "mkv",
        }
    }
}

fn sniff(b: &[u8]) -> Option<Format> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png {
            animated: png_is_animated(b),
        });
    }
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        return Some(Format::Jpeg);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(Format::Gif);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        // A VP8X chunk first, with its animation flag.
        let animated = b.len() >= 21 && &b[12..16] == b"VP8X" && b[20] & 0x02 != 0;
        return Some(Format::Webp { animated });
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return Some(if &b[8..12] == b"qt  " {
            Format::Mov
        } else {
            Format::Mp4
        });
    }
    if b.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) {
        let head = &b[..b.len().min(64)];
        let webm = head.windows(4).any(|w| w == b"webm");
        return Some(if webm { Format::Webm } else { Format::Mkv });
    }
    None
}

/// An `acTL` chunk before the first `IDAT` makes a PNG an animated PNG.
fn png_is_animated(b: &[u8]) -> bool {
    let mut at = 8usize;
    while let Some(header) = b.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        match &header[4..8] {
            b"acTL" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => {}
        }
        at = match at.checked_add(12).and_then(|a| a.checked_add(len)) {
            Some(next) => next,
            None => return false,
        };
    }
    false
}

/// Width and height of the first video track of an MP4/MOV (`moov/trak/tkhd`).
fn mp4_size(b: &[u8]) -> Option<(u32, u32)> {
    fn boxes(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let header = b.get(at..at + 8)?;
            let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as u64;
            let kind = &header[4..8];
            let (start, end) = match size {
                0 => (at + 8, b.len()),
                1 => {
                    let large = b.get(at + 8..at + 16)?;
                    let large = u64::from_be_bytes(large.try_into().ok()?);
                    (at + 16, at.checked_add(usize::try_from(large).ok()?)?)
                }
                n => (at + 8, at.checked_add(usize::try_from(n).ok()?)?),
            };
            if end < start || end > b.len() {
                return None;
            }
            at = end;
            Some((kind, &b[start..end]))
        })
    }
    let (_, moov) = boxes(b).find(|(k, _)| *k == b"moov")?;
    for (_, trak) in boxes(moov).filter(|(k, _)| *k == b"trak") {
        let Some((_, tkhd)) = boxes(trak).find(|(k, _)| *k == b"tkhd") else {
            continue;
        };
        let version = *tkhd.first()?;
        let offset = if version == 1 {
            4 + 32 + 52
        } else {
            4 + 20 + 52
        };
        let w = u32::from_be_bytes(tkhd.get(offset..offset + 4)?.try_into().ok()?) >> 16;
        let h = u32::from_be_bytes(tkhd.get(offset + 4..offset + 8)?.try_into().ok()?) >> 16;
        if w > 0 && h > 0 {
            return Some((w, h));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::params::{ImageParams, VideoParams};

    const IMAGE: &str = include_str!("../../workflows/image-example.json");
    const VIDEO: &str = include_str!("../../workflows/video-example.json");

    fn image(seed: Option<u64>) -> JobParams {
        JobParams::Image(ImageParams {
            prompt: "a red fox".into(),
            negative_prompt: Some("blurry".into()),
            width: 768,
            height: 512,
            seed,
            steps: 12,
        })
    }

    fn titled<'a>(graph: &'a Value, title: &str) -> &'a Value {
        graph
            .as_object()
            .unwrap()
            .values()
            .find(|n| n.pointer("/_meta/title").and_then(Value::as_str) == Some(title))
            .unwrap()
    }

    #[test]
    fn the_shipped_templates_are_usable() {
        Template::parse(Capability::Image, IMAGE).unwrap();
        Template::parse(Capability::Video, VIDEO).unwrap();
        // An image graph has no frame count to set.
        let e = Template::parse(Capability::Video, IMAGE).unwrap_err();
        assert!(e.contains("length"), "{e}");
        // Only image and video.
        assert!(Template::parse(Capability::Text, IMAGE).is_err());
    }

    #[test]
    fn parameters_land_in_the_named_nodes() {
        let t = Template::parse(Capability::Image, IMAGE).unwrap();
        let g = t.render(&image(Some(42)), 7).unwrap();
        assert_eq!(titled(&g, TITLE_PROMPT)["inputs"]["text"], "a red fox");
        assert_eq!(titled(&g, TITLE_NEGATIVE)["inputs"]["text"], "blurry");
        assert_eq!(titled(&g, TITLE_SIZE)["inputs"]["width"], 768);
        assert_eq!(titled(&g, TITLE_SIZE)["inputs"]["height"], 512);
        assert_eq!(titled(&g, TITLE_SAMPLER)["inputs"]["seed"], 42);
        assert_eq!(titled(&g, TITLE_SAMPLER)["inputs"]["steps"], 12);
        // Without a seed, the one given is used.
        let g = t.render(&image(None), 7).unwrap();
        assert_eq!(titled(&g, TITLE_SAMPLER)["inputs"]["seed"], 7);
        // Links are left alone.
        assert!(titled(&g, TITLE_SAMPLER)["inputs"]["model"].is_array());
    }

    #[test]
    fn video_parameters_include_length_and_fps() {
        let t = Template::parse(Capability::Video, VIDEO).unwrap();
        let g = t
            .render(
                &JobParams::Video(VideoParams {
                    prompt: "waves".into(),
                    negative_prompt: None,
                    width: 832,
                    height: 480,
                    duration_seconds: 2,
                    fps: 16,
                    seed: Some(5),
                }),
                0,
            )
            .unwrap();
        assert_eq!(titled(&g, TITLE_SIZE)["inputs"]["length"], 32);
        let template: Value = serde_json::from_str(VIDEO).unwrap();
        assert_eq!(
            titled(&g, TITLE_NEGATIVE)["inputs"]["text"],
            titled(&template, TITLE_NEGATIVE)["inputs"]["text"]
        );
        assert_eq!(titled(&g, TITLE_OUTPUT)["inputs"]["fps"], 16.0);
        assert!(t.render(&image(None), 0).is_err());
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        let cases = [
            ("not json", "JSON"),
            ("[]", "object"),
            (r#"{"nodes": [], "links": []}"#, "UI-format"),
            (r#"{"1": {"inputs": {}}}"#, "class_type"),
            (
                r#"{"1": {"class_type": "X", "inputs": {"a": ["9", 0]}}}"#,
                "does not exist",
            ),
            (
                r#"{"1": {"class_type": "X", "inputs": {"a": ["1", 0, 3]}}}"#,
                "not a link",
            ),
            (
                r#"{"1": {"class_type": "X", "inputs": {}}}"#,
                "tessera:prompt",
            ),
        ];
        for (text, expected) in cases {
            let e = Template::parse(Capability::Image, text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
        // A named node whose input is a link cannot be set.
        let linked = IMAGE.replacen("\"width\": 1024", "\"width\": [\"4\", 0]", 1);
        let e = Template::parse(Capability::Image, &linked).unwrap_err();
        assert!(e.contains("link"), "{e}");
        // Missing the sampler's seed.
        let seedless = IMAGE.replacen("\"seed\": 0", "\"noise\": 0", 1);
        let e = Template::parse(Capability::Image, &seedless).unwrap_err();
        assert!(e.contains("seed"), "{e}");
        // Image jobs set steps.
        let stepless = IMAGE.replacen("\"steps\": 30", "\"stops\": 30", 1);
        let e = Template::parse(Capability::Image, &stepless).unwrap_err();
        assert!(e.contains("steps"), "{e}");
    }

    #[test]
    fn model_names_must_be_plain_file_names() {
        assert!(valid_model_file_name("sdxl-1.0"));
        assert!(!valid_model_file_name("../etc/passwd"));
        assert!(!valid_model_file_name(".hidden"));
        assert!(!valid_model_file_name("a/b"));
        assert!(!valid_model_file_name(""));
    }

    #[test]
    fn output_names_that_could_leave_the_folder_are_refused() {
        let nodes = vec!["9".to_string()];
        let entry = |name: &str, sub: &str| {
            json!({"outputs": {"9": {"images": [
                {"filename": name, "subfolder": sub, "type": "output"},
                {"filename": "preview.png", "subfolder": "", "type": "temp"}
            ]}}})
        };
        let files = output_files(&entry("a_00001_.png", "tessera"), &nodes).unwrap();
        assert_eq!(
            files,
            vec![OutputFile {
                filename: "a_00001_.png".into(),
                subfolder: "tessera".into()
            }]
        );
        for (name, sub) in [
            ("../x.png", ""),
            ("/etc/passwd", ""),
            ("a\\b.png", ""),
            ("x.png", "../up"),
            ("x.png", "/abs"),
            ("x.png", "a/../../b"),
            ("", ""),
        ] {
            assert!(
                output_files(&entry(name, sub), &nodes).is_err(),
                "{name} {sub}"
            );
        }
        // Other nodes' files are not the job's.
        assert!(output_files(&entry("a.png", ""), &["3".to_string()])
            .unwrap()
            .is_empty());
    }

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

    /// Flux-style sampling: the seed on RandomNoise, the steps on
    /// BasicScheduler, and an untitled SamplerCustomAdvanced that reports.
    const CUSTOM: &str = r#"{
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}, "_meta": {"title": "tessera:prompt"}},
        "3": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}, "_meta": {"title": "tessera:size"}},
        "4": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}, "_meta": {"title": "tessera:sampler"}},
        "5": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 4, "denoise": 1.0, "model": ["1", 0]}, "_meta": {"title": "tessera:sampler"}},
        "6": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "7": {"class_type": "BasicGuider", "inputs": {"model": ["1", 0], "conditioning": ["2", 0]}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["4", 0], "guider": ["7", 0], "sampler": ["6", 0], "sigmas": ["5", 0], "latent_image": ["3", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["9", 0]}, "_meta": {"title": "tessera:output"}}
    }"#;

    #[test]
    fn seed_and_steps_may_sit_on_different_nodes() {
        let t = Template::parse(Capability::Image, CUSTOM).unwrap();
        let g = t.render(&image(Some(77)), 0).unwrap();
        assert_eq!(g["4"]["inputs"]["noise_seed"], 77);
        assert!(g["4"]["inputs"].get("steps").is_none());
        assert_eq!(g["5"]["inputs"]["steps"], 12);
        // The untitled sampling node's progress is the job's.
        let (progress, rx) = Progress::new();
        let mut w = Watch::new("p", &t, &progress);
        let msg = json!({"type": "progress", "data": {"value": 1, "max": 4, "prompt_id": "p", "node": "8"}});
        w.on_message(&msg.to_string());
        assert_eq!(*rx.borrow(), Some(25.0));
    }

    #[test]
    fn formats_and_sizes_come_from_the_headers() {
        let mut png = Vec::new();
        {
            let mut e = png::Encoder::new(&mut png, 20, 10);
            e.set_color(png::ColorType::Rgb);
            let mut w = e.write_header().unwrap();
            w.write_image_data(&[0; 20 * 10 * 3]).unwrap();
        }
        let meta = describe_file(&png, Capability::Image).unwrap();
        assert_eq!(
            (meta.format.as_str(), meta.width, meta.height),
            ("png", Some(20), Some(10))
        );
        assert!(describe_file(&png, Capability::Video).is_err());

        // A GIF header (logical screen 33 x 17).
        let gif = b"GIF89a\x21\x00\x11\x00\x00\x00\x00;";
        let meta = describe_file(gif, Capability::Video).unwrap();
        assert_eq!(
            (meta.format.as_str(), meta.width, meta.height),
            ("gif", Some(33), Some(17))
        );
        assert_eq!(meta.kind, ArtifactKind::Video);

        // An MP4 with one 640 x 360 track.
        let mut tkhd = vec![0u8; 4 + 20 + 52];
        tkhd.extend_from_slice(&(640u32 << 16).to_be_bytes());
        tkhd.extend_from_slice(&(360u32 << 16).to_be_bytes());
        let wrap = |kind: &[u8], body: &[u8]| {
            let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        };
        let mut mp4 = wrap(b"ftyp", b"isom\0\0\0\0");
        mp4.extend(wrap(b"moov", &wrap(b"trak", &wrap(b"tkhd", &tkhd))));
        let meta = describe_file(&mp4, Capability::Video).unwrap();
        assert_eq!(
            (meta.format.as_str(), meta.width, meta.height),
            ("mp4", Some(640), Some(360))
        );

        // Truncated or unknown content is an error, never a panic.
        for bad in [
            &b""[..],
            b"\x89PNG\r\n\x1a\n",
            b"RIFF\0\0\0\0WEBP",
            b"hello",
        ] {
            assert!(describe_file(bad, Capability::Image).is_err());
        }
        assert!(mp4_size(b"\0\0\0\x01moov").is_none());
        let meta = describe_file(b"\0\0\0\x0cftypisom", Capability::Video).unwrap();
        assert_eq!((meta.width, meta.height), (None, None));
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

    #[test]
    fn ids_look_like_uuids() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(valid_prompt_id(&id));
        assert!(!valid_prompt_id("../x"));
    }
}
