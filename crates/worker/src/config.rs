//! Worker configuration: a TOML file, then `TESSERA_WORKER__*` environment variables.
//!
//! The worker section says who the worker is and where the scheduler is; each
//! `[[engines]]` table configures one adapter. The internal token comes from a
//! file or the environment, never the command line. [`EXAMPLE`] is the commented
//! reference printed by `tessera worker --print-example`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::engine::{comfyui, espeak, sim};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub worker: AgentConfig,
    pub engines: Vec<EngineConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Stable name, shown in the admin view and on jobs (`worker-gpu-0`).
    pub id: String,
    /// Where the worker's API listens.
    pub listen: SocketAddr,
    /// The base URL the scheduler reaches this worker at; derived from `listen`
    /// when empty (an unspecified address becomes 127.0.0.1).
    pub advertise_url: String,
    /// The scheduler's base URL.
    pub scheduler_url: String,
    /// The token shared between the scheduler and its workers.
    pub internal_token: Option<String>,
    /// Or a file holding it.
    pub internal_token_file: Option<PathBuf>,
    /// Heartbeat period until the scheduler's first answer sets its own (ms).
    pub heartbeat_interval_ms: u64,
    /// Largest input a job may download from the scheduler (bytes).
    pub max_input_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            id: "worker-gpu-0".into(),
            listen: "0.0.0.0:9000".parse().expect("valid address"),
            advertise_url: String::new(),
            scheduler_url: "http://127.0.0.1:8000".into(),
            internal_token: None,
            internal_token_file: None,
            heartbeat_interval_ms: 30_000,
            max_input_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One engine adapter and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EngineConfig {
    /// Simulated GPU work: for demos, benchmarks and scheduler tests.
    Sim(sim::SimConfig),
    /// espeak-ng run locally for text-to-speech: no GPU, no model download.
    Espeak(espeak::EspeakConfig),
    /// A ComfyUI server for text-to-image or text-to-video, one workflow
    /// template per model.
    Comfyui(comfyui::ComfyUiConfig),
}

impl WorkerConfig {
    /// Defaults, then `file` if given, then `TESSERA_WORKER__*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(WorkerConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("TESSERA_")
                .filter(|k| k.as_str().starts_with("worker__"))
                .split("__"),
        );
        let config: WorkerConfig = figment.extract()?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        if self.engines.is_empty() {
            anyhow::bail!("a worker needs at least one [[engines]] table");
        }
        let id = &self.worker.id;
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            anyhow::bail!("worker.id must be 1-64 letters, digits, `-`, `_` or `.`");
        }
        url::Url::parse(&self.worker.scheduler_url)
            .map_err(|e| anyhow::anyhow!("worker.scheduler_url: {e}"))?;
        if !self.worker.advertise_url.is_empty() {
            url::Url::parse(&self.worker.advertise_url)
                .map_err(|e| anyhow::anyhow!("worker.advertise_url: {e}"))?;
        }
        Ok(())
    }

    /// The internal token, from the setting or its file.
    pub fn internal_token(&self) -> anyhow::Result<String> {
        let token = match (&self.worker.internal_token, &self.worker.internal_token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => anyhow::bail!(
                "the worker needs the internal token: set worker.internal_token_file or TESSERA_WORKER__INTERNAL_TOKEN"
            ),
        };
        if token.len() < 16 {
            anyhow::bail!("the internal token must be at least 16 characters");
        }
        Ok(token)
    }
}

/// The commented reference configuration.
pub const EXAMPLE: &str = include_str!("../worker.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_checks() {
        let config: WorkerConfig = Figment::from(Toml::string(EXAMPLE)).extract().unwrap();
        config.check().unwrap();
        assert_eq!(config.worker, AgentConfig::default());
        assert!(!config.engines.is_empty());
    }

    #[test]
    fn a_worker_without_engines_is_refused() {
        let config = WorkerConfig::default();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("[[engines]]"), "{e}");
    }
}
