//! Engines: the one trait every adapter implements, and the adapters.
//!
//! An engine turns one validated job into artifacts. It knows its capability,
//! the models it serves and which of them are loaded; it reports progress when
//! the engine behind it does, and stops when the job is cancelled. It knows
//! nothing of users, plans or the scheduler: the agent ([`crate::agent`]) owns
//! those conversations.

pub mod comfyui;
pub mod espeak;
pub mod kobold;
pub mod openai_chat;
pub mod sim;
pub mod speech;
mod upstream;
pub mod whisper;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use tessera_api::internal::{ArtifactKind, ArtifactMeta, ModelMemory, WorkerError};
use tessera_core::params::JobParams;
use tessera_core::{Capability, ErrorCode, InputId, JobId};

use crate::config::EngineConfig;

/// One job as an engine receives it: parameters already parsed into their
/// validated shape, inputs already downloaded.
#[derive(Clone, Debug)]
pub struct Task {
    pub job_id: JobId,
    pub model: String,
    pub params: JobParams,
    pub inputs: Vec<Input>,
}

/// An input file of a job (the audio of a speech-to-text job).
#[derive(Clone, Debug)]
pub struct Input {
    pub id: InputId,
    pub content_type: String,
    pub bytes: Bytes,
}

/// One output file.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub meta: ArtifactMeta,
    pub bytes: Bytes,
}

impl Artifact {
    /// A UTF-8 text artifact (`txt`).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            meta: ArtifactMeta {
                kind: ArtifactKind::Text,
                format: "txt".into(),
                width: None,
                height: None,
                classification: None,
                usage: None,
            },
            bytes: Bytes::from(text.into()),
        }
    }
}

/// Why an engine could not finish a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EngineError {
    /// Stable code, reported to the scheduler.
    pub code: ErrorCode,
    pub message: String,
    /// True when another attempt may succeed (engine down, out of memory),
    /// false when the job itself is at fault.
    pub retryable: bool,
}

impl EngineError {
    /// The engine process cannot be reached or is not ready: retry elsewhere.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::EngineUnavailable,
            message: message.into(),
            retryable: true,
        }
    }

    /// The engine refused or failed the job; running it again would fail again.
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::EngineRejected,
            message: message.into(),
            retryable: false,
        }
    }

    /// The engine answered with something Tessera cannot use.
    pub fn invalid_output(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidOutput,
            message: message.into(),
            retryable: true,
        }
    }

    pub fn cancelled() -> Self {
        Self {
            code: ErrorCode::Cancelled,
            message: "the job was cancelled while running".into(),
            retryable: false,
        }
    }

    pub fn timed_out(ms: u64) -> Self {
        Self {
            code: ErrorCode::RunTimeout,
            message: format!("the engine did not finish within {ms} ms"),
            retryable: false,
        }
    }

    pub fn to_wire(&self) -> WorkerError {
        WorkerError {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
            retryable: self.retryable,
        }
    }
}

/// Where an engine reports progress, in percent, and the text it writes as it
/// writes it. Cheap to call often, and never waits on the network: the agent
/// forwards the latest percentage to the scheduler at a bounded rate, and the
/// new text in batches ([`Progress::output`]).
#[derive(Clone, Debug)]
pub struct Progress {
    percent: watch::Sender<Option<f32>>,
    /// The attempt's output text so far.
    text: Arc<watch::Sender<String>>,
}

impl Progress {
    pub fn new() -> (Self, watch::Receiver<Option<f32>>) {
        let (tx, rx) = watch::channel(None);
        let progress = Self {
            percent: tx,
            text: Arc::new(watch::channel(String::new()).0),
        };
        (progress, rx)
    }

    /// Reports `done` of `total` steps.
    pub fn steps(&self, done: u64, total: u64) {
        if total > 0 {
            self.percent(done as f32 * 100.0 / total as f32);
        }
    }

    pub fn percent(&self, percent: f32) {
        if percent.is_finite() {
            let _ = self.percent.send(Some(percent.clamp(0.0, 100.0)));
        }
    }

    /// Text the engine just wrote, following what it wrote before.
    pub fn text(&self, delta: &str) {
        if !delta.is_empty() {
            self.text.send_modify(|t| t.push_str(delta));
        }
    }

    /// The engine's whole text so far, for engines that read it whole
    /// (KoboldCPP's check): what extends the text already reported is
    /// reported; text that does not (the server rewrote it) is ignored.
    pub fn text_so_far(&self, whole: &str) {
        self.text
            .send_if_modified(|t| match whole.strip_prefix(t.as_str()) {
                Some(rest) if !rest.is_empty() => {
                    t.push_str(rest);
                    true
                }
                _ => false,
            });
    }

    /// The output text so far, changed as the engine writes.
    pub fn output(&self) -> watch::Receiver<String> {
        self.text.subscribe()
    }
}

/// How much GPU memory an engine's models may fill, and what each takes:
/// with both, several models stay loaded side by side ([`Resident`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoom {
    /// GPU memory the engine's models may fill, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Each model's footprint in GPU memory, MiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_memory_mib: BTreeMap<String, u64>,
}

impl ModelRoom {
    /// Whether `models` fit side by side: the budget is set, each has a
    /// footprint, and they add up to no more than the budget.
    fn fits<'a>(&self, models: impl IntoIterator<Item = &'a String>) -> bool {
        let Some(budget) = self.memory_mib else {
            return false;
        };
        let mut total = 0u64;
        for m in models {
            match self.model_memory_mib.get(m) {
                Some(mib) => total = total.saturating_add(*mib),
                None => return false,
            }
        }
        total <= budget
    }
}

/// The models an engine holds in GPU memory, as far as its adapter knows:
/// the models it ran, most recently used first, as many as fit its
/// [`ModelRoom`]. Loading one that does not fit beside the others evicts the
/// least recently used until it does, as ComfyUI's model cache frees memory
/// for the next model; with no room configured only the last model is held
/// (an engine that replaces its model). Every resident model is warm.
#[derive(Debug, Default)]
pub struct Resident {
    room: ModelRoom,
    models: std::sync::Mutex<Vec<String>>,
}

impl Resident {
    pub fn new(room: ModelRoom) -> Self {
        Self {
            room,
            models: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `model` is in GPU memory.
    pub fn holds(&self, model: &str) -> bool {
        self.lock().iter().any(|m| m == model)
    }

    /// `model` was loaded or used: it is the most recently used, and the
    /// least recently used others leave until the rest fit.
    pub fn used(&self, model: &str) {
        let mut models = self.lock();
        models.retain(|m| m != model);
        models.insert(0, model.to_owned());
        while models.len() > 1 && !self.room.fits(models.iter()) {
            models.pop();
        }
    }

    /// Everything was unloaded.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// As [`Engine::loaded_models`] answers it: most recently used first.
    pub fn list(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// As [`Engine::model_memory`] answers it: the resident models with a
    /// known footprint.
    pub fn memory(&self) -> Vec<ModelMemory> {
        self.lock()
            .iter()
            .filter_map(|m| {
                self.room.model_memory_mib.get(m).map(|&mib| ModelMemory {
                    model: m.clone(),
                    mib,
                })
            })
            .collect()
    }
}

/// An adapter between the worker and one engine.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// The adapter's name, as in the worker's configuration (`sim`, `comfyui`...).
    fn kind(&self) -> &'static str;

    fn capability(&self) -> Capability;

    /// Models this engine can run.
    fn models(&self) -> Vec<String>;

    /// Models in GPU memory now (as far as the adapter knows).
    fn loaded_models(&self) -> Vec<String>;

    /// The footprints of the loaded models, where the adapter knows them.
    fn model_memory(&self) -> Vec<ModelMemory> {
        Vec::new()
    }

    /// Runs one job to its artifacts. Returns [`EngineError::cancelled`] soon
    /// after `cancel` fires, having asked the engine to stop where it can.
    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError>;

    /// Whether the engine can take a job now: one cheap request to it
    /// (ComfyUI's `/system_stats`, KoboldCPP's `/api/v1/model`, llama.cpp's
    /// `/health`...) answered within [`PROBE_TIMEOUT`], or an
    /// [`EngineError::unavailable`] saying why not. The agent probes every
    /// engine each heartbeat period, more often while one is down, and right
    /// after a run fails with `engine_unavailable`. Adapters with nothing to
    /// ask are always ready.
    async fn probe(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Frees GPU memory (`/free` on ComfyUI); engines that cannot do nothing.
    async fn unload(&self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Checks the settings against the engine itself (ComfyUI: the
    /// templates against `/object_info`), which may change [`Engine::models`].
    /// An error means the engine could not be asked: call again once it
    /// answers, and again whenever it comes back. Engines with nothing to
    /// check answer at once.
    async fn check(&self) -> Result<(), EngineError> {
        Ok(())
    }
}

/// Runs every engine's [`Engine::check`] now, and again every `retry` for
/// the engines that could not be asked, until each has answered once or
/// `stop` is set; `changed` is called after each check that answered (so a
/// heartbeat can carry the models it left).
pub async fn check_until_answered(
    engines: Vec<Arc<dyn Engine>>,
    retry: std::time::Duration,
    mut stop: watch::Receiver<bool>,
    changed: impl Fn(),
) {
    let mut waiting = engines;
    let mut first = true;
    loop {
        let mut still = Vec::new();
        for engine in waiting {
            match engine.check().await {
                Ok(()) => changed(),
                Err(e) if first => {
                    tracing::info!(engine = engine.kind(), error = %e, "cannot check the engine's settings yet; trying again until it answers");
                    still.push(engine);
                }
                Err(e) => {
                    tracing::debug!(engine = engine.kind(), error = %e, "cannot check the engine's settings yet");
                    still.push(engine);
                }
            }
        }
        first = false;
        if still.is_empty() {
            return;
        }
        waiting = still;
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Longest a readiness probe ([`Engine::probe`]) may take.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Builds the engines a worker's configuration lists. `http` is the worker's
/// one HTTP client, shared by the adapters that talk to an engine server.
pub fn build(
    configs: &[EngineConfig],
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Arc<dyn Engine>>> {
    let mut engines: Vec<Arc<dyn Engine>> = Vec::with_capacity(configs.len());
    for config in configs {
        engines.push(match config {
            EngineConfig::Sim(c) => Arc::new(sim::Sim::new(c.clone())),
            EngineConfig::Espeak(c) => Arc::new(espeak::Espeak::new(c.clone())?),
            EngineConfig::Comfyui(c) => Arc::new(comfyui::ComfyUi::new(c.clone(), http.clone())?),
            EngineConfig::Kobold(c) => {
                upstream::check_api_key_file(c.api_key_file.as_ref())?;
                Arc::new(kobold::Kobold::new(c.clone(), http))
            }
            EngineConfig::OpenaiChat(c) => {
                upstream::check_api_key_file(c.api_key_file.as_ref())?;
                Arc::new(openai_chat::OpenAiChat::new(c.clone(), http))
            }
            EngineConfig::WhisperCpp(c) => Arc::new(whisper::WhisperCpp::new(c.clone(), http)),
            EngineConfig::OpenaiTranscription(c) => {
                upstream::check_api_key_file(c.api_key_file.as_ref())?;
                Arc::new(whisper::OpenAiTranscription::new(c.clone(), http))
            }
            EngineConfig::OpenaiSpeech(c) => {
                upstream::check_api_key_file(c.api_key_file.as_ref())?;
                Arc::new(speech::OpenAiSpeech::new(c.clone(), http))
            }
        });
    }
    Ok(engines)
}

/// Waits for `fut` unless `cancel` fires first.
pub async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => Err(EngineError::cancelled()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(memory: Option<u64>, footprints: &[(&str, u64)]) -> Resident {
        Resident::new(ModelRoom {
            memory_mib: memory,
            model_memory_mib: footprints
                .iter()
                .map(|(m, mib)| ((*m).to_owned(), *mib))
                .collect(),
        })
    }

    #[test]
    fn models_stay_side_by_side_while_they_fit_and_the_least_used_leaves() {
        let r = room(
            Some(16_000),
            &[("sdxl", 7_000), ("flux", 9_000), ("sd15", 3_000)],
        );
        r.used("sdxl");
        r.used("flux");
        assert_eq!(r.list(), ["flux", "sdxl"], "16 GB holds both");
        assert!(r.holds("sdxl") && r.holds("flux"));
        // Using sdxl again makes flux the least recently used: loading sd15
        // (3 GB) needs room, and flux leaves, not sdxl.
        r.used("sdxl");
        r.used("sd15");
        assert_eq!(r.list(), ["sd15", "sdxl"]);
        assert_eq!(
            r.memory(),
            [
                ModelMemory {
                    model: "sd15".into(),
                    mib: 3_000
                },
                ModelMemory {
                    model: "sdxl".into(),
                    mib: 7_000
                },
            ]
        );
        r.clear();
        assert!(r.list().is_empty());
    }

    #[test]
    fn without_room_or_a_footprint_only_the_last_model_is_held() {
        let r = Resident::default();
        r.used("sdxl");
        r.used("flux");
        assert_eq!(r.list(), ["flux"]);
        assert!(r.memory().is_empty());
        // A model without a footprint cannot be placed beside another.
        let r = room(Some(64_000), &[("sdxl", 7_000)]);
        r.used("sdxl");
        r.used("flux");
        assert_eq!(r.list(), ["flux"]);
        // One model bigger than the room is still the one loaded.
        let r = room(Some(4_000), &[("flux", 9_000)]);
        r.used("flux");
        assert_eq!(r.list(), ["flux"]);
    }
}
