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
//! `/view`. Before that, the templates are checked against the node classes
//! the server reports on `/object_info` (`nodes`): a model whose template
//! names a class or an input the server lacks is refused and not offered.
//! The names ComfyUI reports are checked and only ever sent back to it
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
//!
//! The adapter lives in seven files, one concern each:
//!
//! - `mod.rs`: the settings ([`ComfyUiConfig`]), the engine value and its
//!   [`Engine`] implementation, which drives one run from graph to artifacts;
//! - `template`: the workflow templates, loaded, checked and filled in
//!   ([`Template`] and the `tessera:*` titles);
//! - `nodes`: the templates checked against the server's node classes
//!   (`/object_info`), and which models that leaves ([`TemplateCheck`]);
//! - `client`: the HTTP side of ComfyUI's API (`/prompt`, `/history`, `/queue`,
//!   `/view`, `/free`), its refusals read as sentences, and stopping a prompt
//!   Tessera no longer wants;
//! - `follow`: following a queued prompt to its end, on the `/ws` websocket or
//!   by polling, with its progress and the failures ComfyUI reports;
//! - `output`: the files a finished prompt saved, their names checked, and
//!   their format and size read from their own headers ([`describe_file`]);
//! - `metadata`: the graph ComfyUI writes into PNG text chunks and WEBP
//!   EXIF, removed from outputs unless `keep_metadata` is set.

mod client;
mod follow;
mod metadata;
mod nodes;
mod output;
mod template;

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use tessera_api::internal::ModelMemory;
use tessera_core::Capability;

use super::{cancellable, Artifact, Engine, EngineError, ModelRoom, Progress, Resident, Task};
use client::{random_uuid, StopGuard, CONTROL_TIMEOUT};
use follow::Watch;

pub use nodes::TemplateCheck;
pub use output::describe_file;
pub use template::{
    Template, TITLE_FPS, TITLE_NEGATIVE, TITLE_OUTPUT, TITLE_PROMPT, TITLE_SAMPLER, TITLE_SIZE,
};

/// Largest random seed: 2^53 - 1, exact in every JSON reader.
const MAX_RANDOM_SEED: u64 = (1 << 53) - 1;

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
    /// Keep the metadata ComfyUI writes into outputs (the rendered graph, in
    /// PNG text chunks and WEBP EXIF/XMP); by default it is removed.
    #[serde(default)]
    pub keep_metadata: bool,
    /// GPU memory ComfyUI's models may fill, MiB. With `model_memory_mib`
    /// for every model, the adapter reports as many models resident as fit
    /// (ComfyUI keeps models cached and frees the least needed to load the
    /// next); without, only the model it ran last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Each model's footprint in GPU memory, MiB (checkpoint plus what its
    /// workflow loads beside it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub model_memory_mib: std::collections::BTreeMap<String, u64>,
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

pub struct ComfyUi {
    config: ComfyUiConfig,
    /// Base URL, its path ending in `/` so endpoints join under it.
    base: Url,
    http: reqwest::Client,
    templates: HashMap<String, Template>,
    loaded: Resident,
    /// What the last `/object_info` check refused.
    checked: nodes::Checked,
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
            base,
            http,
            templates,
            loaded: Resident::new(ModelRoom {
                memory_mib: config.memory_mib,
                model_memory_mib: config.model_memory_mib.clone(),
            }),
            checked: nodes::Checked::default(),
            config,
        })
    }
}

#[async_trait]
impl Engine for ComfyUi {
    fn kind(&self) -> &'static str {
        "comfyui"
    }

    fn capability(&self) -> Capability {
        self.config.capability
    }

    /// The configured models less those the last `/object_info` check
    /// refused (before one, all of them).
    fn models(&self) -> Vec<String> {
        self.config
            .models
            .iter()
            .filter(|m| self.checked.refusal(m).is_none())
            .cloned()
            .collect()
    }

    fn loaded_models(&self) -> Vec<String> {
        self.loaded.list()
    }

    fn model_memory(&self) -> Vec<ModelMemory> {
        self.loaded.memory()
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
        if let Some(why) = self.checked.refusal(&task.model) {
            // Sent before the scheduler heard the model is no longer offered:
            // another worker may serve it.
            return Err(EngineError::unavailable(why));
        }
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
            self.loaded.used(&task.model);
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

    /// `GET /system_stats`, which ComfyUI answers once its server is up.
    async fn probe(&self) -> Result<(), EngineError> {
        let response = self
            .http
            .get(self.endpoint("system_stats"))
            .timeout(super::PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(EngineError::unavailable(format!(
                "ComfyUI answered /system_stats with {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// The templates against the server's node classes (`/object_info`).
    async fn check(&self) -> Result<(), EngineError> {
        self.check_templates().await.map(|_| ())
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
        self.loaded.clear();
        Ok(())
    }
}
