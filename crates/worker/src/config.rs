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
use tessera_core::WorkerId;

use crate::engine::{comfyui, espeak, kobold, openai_chat, sim, speech, whisper};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub worker: AgentConfig,
    pub engines: Vec<EngineConfig>,
    /// The output classifier; without it results carry no classification.
    pub moderation: ModerationConfig,
}

/// `[moderation]`: NudeNet's detector, run on this machine's CPU on every
/// image and on sampled frames of every video before the result is sent.
/// Both paths or neither.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    /// NudeNet's `320n.onnx` (in the `nudenet` Python package).
    pub classifier_model: Option<PathBuf>,
    /// ONNX Runtime's shared library, `libonnxruntime.so.*` (in the
    /// `onnxruntime` Python package's `onnxruntime/capi`).
    pub onnxruntime_lib: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Stable name, shown in the admin view and on jobs (`worker-gpu-0`):
    /// 1-64 letters, digits, `-`, `_` or `.`, checked when the file is read.
    pub id: WorkerId,
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
    /// A token that may read `/metrics` and nothing else (for Prometheus); the
    /// internal token may read them too.
    pub metrics_token: Option<String>,
    /// Or a file holding it.
    pub metrics_token_file: Option<PathBuf>,
    /// Heartbeat period until the scheduler's first answer sets its own (ms).
    pub heartbeat_interval_ms: u64,
    /// Largest input a job may download from the scheduler (bytes).
    pub max_input_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            id: "worker-gpu-0".parse().expect("a plain name"),
            listen: "0.0.0.0:9000".parse().expect("valid address"),
            advertise_url: String::new(),
            scheduler_url: "http://127.0.0.1:8000".into(),
            internal_token: None,
            internal_token_file: None,
            metrics_token: None,
            metrics_token_file: None,
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
    /// KoboldCPP's native API for text generation.
    Kobold(kobold::KoboldConfig),
    /// Any OpenAI-compatible chat completions server (llama.cpp, vLLM, Ollama).
    OpenaiChat(openai_chat::OpenAiChatConfig),
    /// whisper.cpp's server for speech to text.
    WhisperCpp(whisper::WhisperCppConfig),
    /// Any server with OpenAI's transcription endpoint.
    OpenaiTranscription(whisper::OpenAiTranscriptionConfig),
    /// Any server with OpenAI's speech endpoint.
    OpenaiSpeech(speech::OpenAiSpeechConfig),
}

impl EngineConfig {
    /// The engine server's base URL, for adapters that talk to one.
    pub fn url(&self) -> Option<&str> {
        match self {
            EngineConfig::Sim(_) | EngineConfig::Espeak(_) => None,
            EngineConfig::Comfyui(c) => Some(&c.url),
            EngineConfig::Kobold(c) => Some(&c.url),
            EngineConfig::OpenaiChat(c) => Some(&c.url),
            EngineConfig::WhisperCpp(c) => Some(&c.url),
            EngineConfig::OpenaiTranscription(c) => Some(&c.url),
            EngineConfig::OpenaiSpeech(c) => Some(&c.url),
        }
    }
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
                // Keys keep the variable's case here: compare without it.
                .filter(|k| k.as_str().to_ascii_lowercase().starts_with("worker__"))
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
        url::Url::parse(&self.worker.scheduler_url)
            .map_err(|e| anyhow::anyhow!("worker.scheduler_url: {e}"))?;
        if !self.worker.advertise_url.is_empty() {
            url::Url::parse(&self.worker.advertise_url)
                .map_err(|e| anyhow::anyhow!("worker.advertise_url: {e}"))?;
            // What the scheduler takes in a heartbeat's `address`.
            let advertised = self.worker.advertise_url.trim_end_matches('/');
            if !tessera_api::schema::is_worker_address(advertised) {
                anyhow::bail!(
                    "worker.advertise_url {advertised:?} must be http(s)://host[:port][/path], the host a name or an IPv4 address"
                );
            }
        }
        match (
            &self.moderation.classifier_model,
            &self.moderation.onnxruntime_lib,
        ) {
            (Some(_), None) => anyhow::bail!(
                "moderation.classifier_model is set but moderation.onnxruntime_lib is not: the classifier needs both"
            ),
            (None, Some(_)) => anyhow::bail!(
                "moderation.onnxruntime_lib is set but moderation.classifier_model is not: the classifier needs both"
            ),
            _ => {}
        }
        for (i, engine) in self.engines.iter().enumerate() {
            if let Some(url) = engine.url() {
                let parsed = url::Url::parse(url)
                    .map_err(|e| anyhow::anyhow!("engines[{i}].url {url:?}: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    anyhow::bail!("engines[{i}].url {url:?} is not an http(s) URL");
                }
            }
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

    /// The metrics token, from the setting or its file, if one is configured.
    pub fn metrics_token(&self) -> anyhow::Result<Option<String>> {
        let token = match (&self.worker.metrics_token, &self.worker.metrics_token_file) {
            (Some(t), _) => t.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if token.len() < 16 {
            anyhow::bail!("the metrics token must be at least 16 characters");
        }
        Ok(Some(token))
    }
}

/// The commented reference configuration.
pub const EXAMPLE: &str = include_str!("../worker.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn worker_variables_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "w.toml",
                "[worker]\nid = \"from-file\"\n\n[[engines]]\nkind = \"sim\"\ncapability = \"image\"\nmodels = [\"sdxl-1.0\"]\n",
            )?;
            jail.set_env("TESSERA_WORKER__ID", "worker-gpu-7");
            jail.set_env("TESSERA_WORKER__SCHEDULER_URL", "http://scheduler:8000");
            jail.set_env("TESSERA_DATABASE__URL", "postgres://not-a-worker-setting");
            let c = WorkerConfig::load(Some(Path::new("w.toml"))).unwrap();
            assert_eq!(c.worker.id, "worker-gpu-7");
            assert_eq!(c.worker.scheduler_url, "http://scheduler:8000");
            Ok(())
        });
    }

    #[test]
    fn example_parses_and_checks() {
        let config: WorkerConfig = Figment::from(Toml::string(EXAMPLE)).extract().unwrap();
        config.check().unwrap();
        assert_eq!(config.worker, AgentConfig::default());
        assert_eq!(config.moderation, ModerationConfig::default());
        assert!(!config.engines.is_empty());
    }

    /// The example's commented engine tables, uncommented.
    fn uncommented_engines() -> String {
        let mut out = String::new();
        let mut in_table = false;
        for line in EXAMPLE.lines() {
            if line == "# [[engines]]" {
                in_table = true;
            } else if line.is_empty() {
                in_table = false;
            }
            if in_table {
                let line = line.strip_prefix("# ").unwrap_or(line);
                if !line.starts_with('#') {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    #[test]
    fn the_examples_commented_engines_parse_and_build() {
        let text = uncommented_engines();
        let config: WorkerConfig = Figment::from(Toml::string(&text)).extract().unwrap();
        config.check().unwrap();
        let kinds = [
            "comfyui",
            "kobold",
            "openai_chat",
            "whisper_cpp",
            "openai_transcription",
            "openai_speech",
        ];
        assert_eq!(config.engines.len(), kinds.len(), "{text}");
        let mut config = config;
        // The example's key files and workflow folder do not exist here.
        let workflows = tempfile::tempdir().unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/image-example.json"),
            workflows.path().join("sdxl-1.0.json"),
        )
        .unwrap();
        for engine in &mut config.engines {
            match engine {
                EngineConfig::Comfyui(c) => c.workflows_dir = workflows.path().to_owned(),
                EngineConfig::Kobold(c) => c.api_key_file = None,
                EngineConfig::OpenaiChat(c) => c.api_key_file = None,
                EngineConfig::OpenaiTranscription(c) => c.api_key_file = None,
                EngineConfig::OpenaiSpeech(c) => c.api_key_file = None,
                _ => {}
            }
        }
        let engines = crate::engine::build(&config.engines, &reqwest::Client::new()).unwrap();
        let built: Vec<&str> = engines.iter().map(|e| e.kind()).collect();
        assert_eq!(built, kinds);
        assert_eq!(
            engines.iter().map(|e| e.capability()).collect::<Vec<_>>(),
            [
                tessera_core::Capability::Image,
                tessera_core::Capability::Text,
                tessera_core::Capability::Text,
                tessera_core::Capability::SpeechToText,
                tessera_core::Capability::SpeechToText,
                tessera_core::Capability::TextToSpeech,
            ]
        );
    }

    #[test]
    fn engine_urls_and_key_files_are_checked_at_start() {
        let mut config: WorkerConfig = Figment::from(Toml::string(&uncommented_engines()))
            .extract()
            .unwrap();
        if let EngineConfig::Kobold(c) = &mut config.engines[1] {
            c.url = "127.0.0.1:5001".into();
        }
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("engines[1].url"), "{e}");
        let e = crate::engine::build(&config.engines[2..3], &reqwest::Client::new())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/etc/tessera/llm-api-key"), "{e}");
    }

    #[test]
    fn the_classifier_needs_both_paths() {
        let mut config: WorkerConfig = Figment::from(Toml::string(EXAMPLE)).extract().unwrap();
        config.moderation.classifier_model = Some("/models/320n.onnx".into());
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("moderation.onnxruntime_lib"), "{e}");
        config.moderation = ModerationConfig {
            classifier_model: None,
            onnxruntime_lib: Some("/lib/libonnxruntime.so".into()),
        };
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("moderation.classifier_model"), "{e}");
    }

    #[test]
    fn a_worker_without_engines_is_refused() {
        let config = WorkerConfig::default();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("[[engines]]"), "{e}");
    }
}
