//! Speech to text on an engine server: whisper.cpp's own server
//! (`whisper_cpp`) or any server with OpenAI's transcription endpoint
//! (`openai_transcription`: faster-whisper servers, vLLM, OpenAI).
//!
//! Both take the job's audio as a multipart upload and answer
//! `{"text": ...}`, which becomes one text artifact. whisper.cpp's server
//! (`POST /inference`) takes the fields `file`, `response_format`,
//! `temperature` and `language`; it transcribes English unless told
//! otherwise, so a job that names no language sends `language=auto`. It
//! stops transcribing when the client hangs up, which is how a cancelled job
//! stops it. Its errors are `{"error": "..."}`: 400 when the audio cannot be
//! read (the job's fault), 500 when inference fails.
//!
//! OpenAI's endpoint (`POST /v1/audio/transcriptions`) takes `file`, `model`,
//! `response_format` and an optional `language`, and tells audio formats
//! apart by the uploaded file's name, so the name follows the input's
//! content type.

use std::borrow::Borrow;
use std::path::PathBuf;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use tessera_core::params::{JobParams, SpeechToTextParams};
use tessera_core::Capability;

use super::upstream::{self, base_url, openai_base_url};
use super::{cancellable, Artifact, Engine, EngineError, Input, Progress, Resident, Task};

/// Largest transcription answer read (bytes).
const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhisperCppConfig {
    /// whisper.cpp server's base URL (`http://127.0.0.1:8081`).
    pub url: String,
    /// The model names jobs ask for; the server runs the model it loaded.
    pub models: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiTranscriptionConfig {
    /// The server's base URL; a trailing `/v1` is ignored.
    pub url: String,
    /// The model names jobs ask for.
    pub models: Vec<String>,
    /// The model name sent to the server, when it differs from the job's.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// A file holding the bearer token the server wants, if any.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
}

/// The job's parameters and its audio.
fn audio(task: &Task) -> Result<(&SpeechToTextParams, &Input), EngineError> {
    let JobParams::SpeechToText(params) = &task.params else {
        return Err(EngineError::rejected(
            "this engine runs only speech-to-text jobs",
        ));
    };
    let input = task
        .inputs
        .iter()
        .find(|i| i.id == params.input_id)
        .or_else(|| task.inputs.first())
        .ok_or_else(|| EngineError::rejected("the job carries no audio to transcribe"))?;
    if input.bytes.is_empty() {
        return Err(EngineError::rejected("the job's audio is empty"));
    }
    Ok((params, input))
}

fn file_part(input: &Input) -> Result<Part, EngineError> {
    let name = upstream::audio_file_name(&input.content_type);
    let mime = if input.content_type.is_empty() {
        "application/octet-stream"
    } else {
        input.content_type.as_str()
    };
    Part::stream_with_length(
        reqwest::Body::from(input.bytes.clone()),
        input.bytes.len() as u64,
    )
    .file_name(name)
    .mime_str(mime)
    .or_else(|_| {
        Part::bytes(input.bytes.to_vec())
            .file_name(name)
            .mime_str("application/octet-stream")
    })
    .map_err(|e| EngineError::rejected(format!("cannot upload the audio: {e}")))
}

/// Sends `request`, reads `{"text": ...}`; cancelling drops the connection.
async fn transcribe(
    engine: &str,
    request: reqwest::RequestBuilder,
    key: Option<&upstream::ApiKey>,
    cancel: &CancellationToken,
) -> Result<String, EngineError> {
    let scrub = |mut e: EngineError| {
        if let Some(key) = key {
            e.message = key.scrub(e.message);
        }
        e
    };
    cancellable(cancel, async {
        let response = request
            .send()
            .await
            .map_err(|e| scrub(upstream::send_error(engine, &e)))?;
        let status = response.status();
        let body = upstream::read_body(engine, response, MAX_BODY)
            .await
            .map_err(scrub)?;
        if !status.is_success() {
            return Err(scrub(upstream::status_error(engine, status, &body)));
        }
        #[derive(Deserialize)]
        struct Transcript {
            text: String,
        }
        let transcript: Transcript = serde_json::from_slice(&body).map_err(|e| {
            EngineError::invalid_output(format!(
                "{engine} answered something other than {{\"text\": ...}} ({e}): {}",
                upstream::snippet(&body)
            ))
        })?;
        Ok(transcript.text.trim().to_owned())
    })
    .await
}

/// whisper.cpp's server.
pub struct WhisperCpp {
    config: WhisperCppConfig,
    base: String,
    http: reqwest::Client,
}

impl WhisperCpp {
    /// `http` is the worker's shared client (or a reference to it).
    pub fn new(config: WhisperCppConfig, http: impl Borrow<reqwest::Client>) -> Self {
        Self {
            base: base_url(&config.url),
            config,
            http: http.borrow().clone(),
        }
    }
}

#[async_trait]
impl Engine for WhisperCpp {
    fn kind(&self) -> &'static str {
        "whisper_cpp"
    }

    fn capability(&self) -> Capability {
        Capability::SpeechToText
    }

    fn models(&self) -> Vec<String> {
        self.config.models.clone()
    }

    fn loaded_models(&self) -> Vec<String> {
        // The server keeps the one model it was started with.
        self.config.models.clone()
    }

    /// `GET /health`, which whisper.cpp's server answers 503 while it loads
    /// its model; an older server without it answered, so it is up.
    async fn probe(&self) -> Result<(), EngineError> {
        let url = format!("{}/health", self.base);
        upstream::probe_get(&self.http, "whisper.cpp", &url, None, true).await
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let (params, input) = audio(task)?;
        let form = Form::new()
            .part("file", file_part(input)?)
            .text("response_format", "json")
            .text("temperature", "0.0")
            .text(
                "language",
                params.language.clone().unwrap_or_else(|| "auto".into()),
            );
        let request = self
            .http
            .post(format!("{}/inference", self.base))
            .multipart(form);
        let text = transcribe("whisper.cpp", request, None, cancel).await?;
        progress.percent(100.0);
        Ok(vec![Artifact::text(text)])
    }
}

/// A server with OpenAI's transcription endpoint.
pub struct OpenAiTranscription {
    config: OpenAiTranscriptionConfig,
    base: String,
    http: reqwest::Client,
    last_model: Resident,
}

impl OpenAiTranscription {
    /// `http` is the worker's shared client (or a reference to it).
    pub fn new(config: OpenAiTranscriptionConfig, http: impl Borrow<reqwest::Client>) -> Self {
        Self {
            base: openai_base_url(&config.url),
            config,
            http: http.borrow().clone(),
            last_model: Resident::default(),
        }
    }
}

#[async_trait]
impl Engine for OpenAiTranscription {
    fn kind(&self) -> &'static str {
        "openai_transcription"
    }

    fn capability(&self) -> Capability {
        Capability::SpeechToText
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
        upstream::probe_get(
            &self.http,
            "the transcription server",
            &url,
            key.as_ref(),
            true,
        )
        .await
    }

    async fn run(
        &self,
        task: &Task,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<Vec<Artifact>, EngineError> {
        let (params, input) = audio(task)?;
        let key = upstream::optional_api_key(self.config.api_key_file.as_ref()).await?;
        let model = self
            .config
            .upstream_model
            .clone()
            .unwrap_or_else(|| task.model.clone());
        let mut form = Form::new()
            .part("file", file_part(input)?)
            .text("model", model)
            .text("response_format", "json");
        if let Some(language) = &params.language {
            form = form.text("language", language.clone());
        }
        let mut request = self
            .http
            .post(format!("{}/v1/audio/transcriptions", self.base))
            .multipart(form);
        if let Some(key) = &key {
            request = request.bearer_auth(key.as_str());
        }
        let text = transcribe("the transcription server", request, key.as_ref(), cancel).await?;
        self.last_model.used(&task.model);
        progress.percent(100.0);
        Ok(vec![Artifact::text(text)])
    }
}
