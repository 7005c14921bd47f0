//! `openai_speech`: text to speech on any server with OpenAI's speech
//! endpoint (Kokoro-FastAPI, openedai-speech, LocalAI, OpenAI itself).
//!
//! A job becomes one `POST /v1/audio/speech` with `response_format: "wav"`;
//! the answer is the audio itself. Tessera stores WAV for speech, so the
//! answer must be a RIFF/WAVE file with a `data` chunk; anything else is
//! invalid output. Servers that stream their WAV write placeholder sizes in
//! its header; those are set to the real ones before the file is returned.

use std::borrow::Borrow;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use tessera_api::internal::{ArtifactKind, ArtifactMeta};
use tessera_core::params::JobParams;
use tessera_core::Capability;

use super::espeak::fix_wav_sizes;
use super::upstream::{self, openai_base_url};
use super::{cancellable, Artifact, Engine, EngineError, Progress, Resident, Task};

const ENGINE: &str = "the speech server";
/// Largest audio answer read (bytes): minutes of 48 kHz stereo WAV.
const MAX_AUDIO: usize = 256 * 1024 * 1024;
/// The voice when neither the job nor the configuration names one: the
/// first of OpenAI's voices, which compatible servers map to one of theirs.
const FALLBACK_VOICE: &str = "alloy";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSpeechConfig {
    /// The server's base URL; a trailing `/v1` is ignored.
    pub url: String,
    /// The model names jobs ask for.
    pub models: Vec<String>,
    /// The model name sent to the server, when it differs from the job's.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The voice when the job names none (`alloy` if unset).
    #[serde(default)]
    pub default_voice: Option<String>,
    /// A file holding the bearer token the server wants, if any.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
}

pub struct OpenAiSpeech {
    config: OpenAiSpeechConfig,
    base: String,
    http: reqwest::Client,
    last_model: Resident,
}

impl OpenAiSpeech {
    /// `http` is the worker's shared client (or a reference to it).
    pub fn new(config: OpenAiSpeechConfig, http: impl Borrow<reqwest::Client>) -> Self {
        Self {
            base: openai_base_url(&config.url),
            config,
            http: http.borrow().clone(),
            last_model: Resident::default(),
        }
    }
}

/// `bytes` as a WAV file with true sizes, if it is one.
pub fn checked_wav(bytes: Vec<u8>) -> Result<Vec<u8>, EngineError> {
    let head = upstream::snippet(&bytes[..bytes.len().min(32)]);
    fix_wav_sizes(bytes).ok_or_else(|| {
        EngineError::invalid_output(format!(
            "{ENGINE} did not answer a WAV file (RIFF/WAVE with a data chunk); it began with: {head}"
        ))
    })
}

#[async_trait]
impl Engine for OpenAiSpeech {
    fn kind(&self) -> &'static str {
        "openai_speech"
    }

    fn capability(&self) -> Capability {
        Capability::TextToSpeech
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        self.last_model.list()
    }

    /// `GET /v1/models` with the key: the cheapest request OpenAI-compatible
    /// servers share; one without it answered, so it is up.
    async fn probe(&self) -> Result<(), EngineError> {
        let key = upstream::optional_api_key(self.config.api_key_file.as_ref()).await?;
        let url = format!("{}/v1/models", self.base);
        upstream::probe_get(&self.http, ENGINE, &url, key.as_ref(), true).await
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let JobParams::TextToSpeech(params) = &task.params else {
            return Err(EngineError::rejected(
                "openai_speech runs only text-to-speech jobs",
            ));
        };
        let key = upstream::optional_api_key(self.config.api_key_file.as_ref()).await?;
        let scrub = |mut e: EngineError| {
            if let Some(key) = &key {
                e.message = key.scrub(e.message);
            }
            e
        };
        let voice = params
            .voice
            .as_deref()
            .or(self.config.default_voice.as_deref())
            .unwrap_or(FALLBACK_VOICE);
        let model = self.config.upstream_model.as_deref().unwrap_or(&task.model);
        let body = json!({
            "model": model,
            "input": params.text,
            "voice": voice,
            "response_format": "wav",
            "speed": upstream::decimal(params.speed),
        });
        let mut request = self
            .http
            .post(format!("{}/v1/audio/speech", self.base))
            .json(&body);
        if let Some(key) = &key {
            request = request.bearer_auth(key.as_str());
        }
        let (status, body) = cancellable(cancel, async {
            let response = request
                .send()
                .await
                .map_err(|e| scrub(upstream::send_error(ENGINE, &e)))?;
            let status = response.status();
            let body = upstream::read_body(ENGINE, response, MAX_AUDIO)
                .await
                .map_err(scrub)?;
            Ok((status, body))
        })
        .await?;
        if !status.is_success() {
            return Err(scrub(upstream::status_error(ENGINE, status, &body)));
        }
        let wav = checked_wav(body)?;
        self.last_model.used(&task.model);
        progress.percent(100.0);
        Ok(vec![Artifact {
            meta: ArtifactMeta {
                kind: ArtifactKind::Audio,
                format: "wav".into(),
                width: None,
                height: None,
                classification: None,
                usage: None,
            },
            bytes: Bytes::from(wav),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wav_files_pass() {
        let e = checked_wav(b"ID3\x04\0\0\0\0mp3 data".to_vec()).unwrap_err();
        assert_eq!(e.code, "invalid_output");
        assert!(e.message.contains("ID3"), "{}", e.message);
        assert!(checked_wav(Vec::new()).is_err());
        let mut wav = b"RIFF\xff\xff\xff\xffWAVEfmt \x10\0\0\0".to_vec();
        wav.extend_from_slice(&[0; 16]);
        wav.extend_from_slice(b"data\xff\xff\xff\xff\x01\x02");
        let fixed = checked_wav(wav).unwrap();
        assert_eq!(u32::from_le_bytes(fixed[40..44].try_into().unwrap()), 2);
    }
}
