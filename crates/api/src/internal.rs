//! The internal API (`/api/internal`), between the scheduler and its workers,
//! behind the internal token (ARCHITECTURE.md).
//!
//! [`result_form`] is the multipart body a result travels in.

pub mod result_form;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::params::JobParams;
use tessera_core::{Capability, InputId, JobId, WorkerId};

/// What a worker is doing, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Ready for a job.
    Idle,
    /// Running `current_job`.
    Busy,
    /// Finishing its job, taking no new one (shutting down).
    Draining,
}

impl WorkerStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Busy => "busy",
            WorkerStatus::Draining => "draining",
        }
    }
}

/// `POST /api/internal/heartbeat`: the seed's fields, plus where the worker
/// listens, what it serves and the job it is running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Stable name, for example `worker-gpu-0`.
    pub worker_id: WorkerId,
    pub status: WorkerStatus,
    /// Base URL of the worker's API, for example `http://10.0.0.5:9000`.
    #[schema(value_type = crate::schema::WorkerAddress)]
    pub address: String,
    #[schema(min_items = 1, max_items = 64)]
    pub capabilities: Vec<Capability>,
    /// Models installed on the worker.
    #[schema(value_type = Vec<crate::schema::ModelName>, max_items = 64)]
    pub models: Vec<String>,
    /// Models in GPU memory now. Every one of them is warm: the policy
    /// prefers jobs of any of them.
    #[serde(default)]
    #[schema(value_type = Vec<crate::schema::ModelName>, max_items = 64)]
    pub loaded_models: Vec<String>,
    /// How much GPU memory each loaded model takes, where the worker knows
    /// (its engines' configured footprints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub model_memory: Vec<ModelMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_job: Option<JobId>,
    /// GPU readings, where the worker can read them (NVML); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub gpu_name: Option<String>,
    /// MiB, as in the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used: Option<u64>,
    /// MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_total: Option<u64>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub gpu_utilization: Option<f32>,
    /// Whether each engine can take a job now, as the worker's last probe of
    /// it found. A worker that sends none (older ones) has every engine ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 64)]
    pub engines: Vec<EngineReadiness>,
}

/// One loaded model's footprint in GPU memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelMemory {
    /// One of the worker's `loaded_models`.
    #[schema(value_type = crate::schema::ModelName)]
    pub model: String,
    /// MiB, like the GPU's readings.
    #[schema(maximum = 1_048_576)]
    pub mib: u64,
}

/// What an attempt's engine run took, as the worker measured it. The
/// scheduler learns each worker's run and model-load times per model from
/// these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTiming {
    /// From the job's start on the engine to its last output, milliseconds.
    #[schema(maximum = 604_800_000)]
    pub engine_ms: u64,
    /// Whether the engine loaded the job's model first (it was not in GPU
    /// memory when the job began).
    pub model_load: bool,
}

/// One engine of a worker and whether it can take a job now (its adapter's
/// readiness probe: ComfyUI's `/system_stats`, llama.cpp's `/health`...).
/// The scheduler sends a capability or model only to a worker whose engine
/// for it is ready.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineReadiness {
    /// The adapter: `comfyui`, `kobold`, `openai_chat`, `whisper_cpp`, `sim`...
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub engine: String,
    /// One of the worker's `capabilities`.
    pub capability: Capability,
    /// The models this engine serves, among the worker's `models`.
    #[schema(value_type = Vec<crate::schema::ModelName>, max_items = 64)]
    pub models: Vec<String>,
    pub ready: bool,
    /// Since when the engine has been ready (or not), by the worker's clock.
    pub since: DateTime<Utc>,
    /// Why the last probe failed, when the engine is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 1000,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub error: Option<String>,
}

impl Heartbeat {
    /// The capabilities and models the worker can run now: those of its
    /// ready engines, and everything when it reports no readiness (older
    /// workers). A capability is left out when every engine reported for it
    /// is down, a model when every engine listing it is.
    pub fn ready_now(&self) -> (Vec<Capability>, Vec<String>) {
        let all_down = |of: &dyn Fn(&EngineReadiness) -> bool| {
            let mut reported = self.engines.iter().filter(|e| of(e)).peekable();
            reported.peek().is_some() && reported.all(|e| !e.ready)
        };
        let capabilities = self
            .capabilities
            .iter()
            .filter(|c| !all_down(&|e| e.capability == **c))
            .copied()
            .collect();
        let models = self
            .models
            .iter()
            .filter(|m| !all_down(&|e| e.models.contains(m)))
            .cloned()
            .collect();
        (capabilities, models)
    }
}

/// The scheduler's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    /// Send the next heartbeat within this many milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Jobs the worker reported running that the scheduler no longer wants run
    /// (cancelled, timed out or given to another worker): stop them and drop their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_jobs: Vec<JobId>,
}

/// A worker as the scheduler knows it (`GET /api/admin/workers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// False once `workers.missed_heartbeats` heartbeats are missing.
    pub online: bool,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// What the scheduler tells a worker to run (`POST /run_job` on the worker).
///
/// `attempt` is the job's dispatch count: the fencing token the worker sends back
/// with progress and its result, so a result of an attempt the scheduler has
/// since taken back (worker thought lost, job cancelled) is refused.
///
/// Its `params` are those of its `capability`, typed: they are parsed once,
/// with the rest of the body ([`RunJob::from_slice`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RunJobWire")]
pub struct RunJob {
    pub job_id: JobId,
    pub attempt: i32,
    pub capability: Capability,
    /// The model to run, one of those the worker listed.
    pub model_id: String,
    /// The validated parameters of the job's capability (`tessera_core::params`).
    #[schema(value_type = Object)]
    pub params: JobParams,
    /// Inputs the job reads (the audio of a speech-to-text job), fetched from the
    /// scheduler's `/api/internal/inputs/{id}` with the internal token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputRef>,
    /// The scheduler fails the job if no result arrives within this time.
    pub timeout_ms: u64,
    /// The `X-Request-Id` of the request that created the job: the worker
    /// logs it with the job and sends it back with the job's progress and result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A [`RunJob`] as it travels: the parameters are read as JSON first and
/// typed once their capability is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunJobWire {
    job_id: JobId,
    attempt: i32,
    capability: Capability,
    model_id: String,
    params: serde_json::Value,
    #[serde(default)]
    inputs: Vec<InputRef>,
    timeout_ms: u64,
    #[serde(default)]
    request_id: Option<String>,
}

/// Why a `/run_job` body was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunJobError {
    /// Not a job at all: malformed JSON, a missing or mistyped field.
    #[error("not a job: {0}")]
    NotAJob(serde_json::Error),
    /// A job whose parameters do not fit its capability.
    #[error("parameters do not fit {capability}: {error}")]
    Params {
        capability: Capability,
        error: serde_json::Error,
    },
}

impl TryFrom<RunJobWire> for RunJob {
    type Error = RunJobError;

    fn try_from(w: RunJobWire) -> Result<Self, RunJobError> {
        let params = JobParams::from_stored(w.capability, w.params).map_err(|error| {
            RunJobError::Params {
                capability: w.capability,
                error,
            }
        })?;
        Ok(RunJob {
            job_id: w.job_id,
            attempt: w.attempt,
            capability: w.capability,
            model_id: w.model_id,
            params,
            inputs: w.inputs,
            timeout_ms: w.timeout_ms,
            request_id: w.request_id,
        })
    }
}

impl RunJob {
    /// Reads a `/run_job` body, telling a body that is no job from a job whose
    /// parameters do not fit its capability.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, RunJobError> {
        let wire: RunJobWire = serde_json::from_slice(bytes).map_err(RunJobError::NotAJob)?;
        RunJob::try_from(wire)
    }
}

/// An input a job reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InputRef {
    pub input_id: InputId,
    pub content_type: String,
    pub size: u64,
}

/// The worker's answer to `/run_job`: accepted, the result follows on the internal API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunJobAccepted {
    pub job_id: JobId,
    pub attempt: i32,
}

/// `POST /cancel_job` on a worker: stop this job if it is the one running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelJob {
    pub job_id: JobId,
}

/// `GET /health` on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerHealth {
    pub worker_id: WorkerId,
    pub status: WorkerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_job: Option<JobId>,
}

/// One engine of a worker, in `GET /capabilities`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EngineInfo {
    /// The adapter: `comfyui`, `kobold`, `openai_chat`, `whisper_cpp`, `sim`...
    pub engine: String,
    pub capability: Capability,
    pub models: Vec<String>,
    pub loaded_models: Vec<String>,
    /// Whether the engine can take a job now (its last readiness probe).
    pub ready: bool,
    /// Since when it has been ready (or not).
    pub ready_since: DateTime<Utc>,
    /// Why the last probe failed, when it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /capabilities` on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerCapabilities {
    pub worker_id: WorkerId,
    pub engines: Vec<EngineInfo>,
    pub capabilities: Vec<Capability>,
    pub models: Vec<String>,
    pub loaded_models: Vec<String>,
    /// Each loaded model's footprint, where known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_memory: Vec<ModelMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_total: Option<u64>,
}

/// `POST /api/internal/jobs/{job_id}/progress`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"worker_id": "worker-gpu-0", "attempt": 1, "progress": 42.5}))]
pub struct ProgressReport {
    pub worker_id: WorkerId,
    pub attempt: i32,
    /// Percent done, 0 to 100.
    #[schema(minimum = 0, maximum = 100)]
    pub progress: f32,
}

/// `POST /api/internal/jobs/{job_id}/output`: a piece of a running attempt's
/// output text, sent as the engine produces it.
///
/// `offset` counts UTF-8 bytes: the length of the attempt's text sent before
/// this piece. The scheduler takes only what extends the text it holds: a
/// piece it holds already is acknowledged and ignored, an overlapping one is
/// trimmed, and one past the end it holds is refused (409 `output_gap`), upon
/// which the worker sends its whole text again from offset 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"worker_id": "worker-gpu-0", "attempt": 1, "offset": 12, "text": " upon a time"}))]
pub struct OutputPiece {
    pub worker_id: WorkerId,
    pub attempt: i32,
    /// UTF-8 bytes of the attempt's output sent before this piece; an
    /// attempt streams at most [`MAX_OUTPUT_BYTES`].
    #[schema(minimum = 0, maximum = 8388608)]
    pub offset: u64,
    /// The piece: at most 1 MiB of UTF-8.
    pub text: String,
}

/// The most output text one attempt may stream: 8 MiB (the schema's
/// `maximum` of an offset says the same number).
pub const MAX_OUTPUT_BYTES: usize = 8 << 20;
const _: () = assert!(MAX_OUTPUT_BYTES == 8_388_608, "the schema's maximum offset");

/// The most bytes one [`OutputPiece`]'s text may carry: 1 MiB.
pub const MAX_OUTPUT_PIECE_BYTES: usize = 1 << 20;

/// The answer to an [`OutputPiece`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputAck {
    /// UTF-8 bytes of the attempt's output the scheduler holds now: where
    /// the next piece starts.
    pub received: u64,
}

/// How an attempt ended, as the worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Completed,
    Failed,
}

/// The kind of an artifact (the seed's `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    Image,
    Video,
    Audio,
    Text,
}

impl ArtifactKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Image => "image",
            ArtifactKind::Video => "video",
            ArtifactKind::Audio => "audio",
            ArtifactKind::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "image" => ArtifactKind::Image,
            "video" => ArtifactKind::Video,
            "audio" => ArtifactKind::Audio,
            "text" => ArtifactKind::Text,
            _ => return None,
        })
    }
}

/// Describes one artifact part of a result upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactMeta {
    #[serde(rename = "type")]
    pub kind: ArtifactKind,
    /// File extension without the dot: `png`, `webp`, `mp4`, `wav`, `txt`...
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// What the worker's output classifier found in an image or in a
    /// video's sampled frames; absent when the worker has no classifier or
    /// the artifact is not a picture. The scheduler decides what it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// For a text artifact of a text job: the tokens the engine read and
    /// wrote, and why it stopped, as the engine reported them (absent when
    /// it reported none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TextUsage>,
}

/// What a text engine counted of a job's run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// `stop` (the model ended its answer) or `length` (the answer reached
    /// its token limit), as the engine said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[a-z_]{1,32}$")]
    pub finish_reason: Option<String>,
}

/// Most detections one artifact's classification may carry.
pub const MAX_DETECTIONS: usize = 256;

/// An output classifier's verdict on one artifact, as the worker sends it
/// and the scheduler stores it with the artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Classification {
    /// The model that looked: `nudenet-320n`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub model: String,
    /// How many pictures were classified: 1 for an image, the sampled
    /// frames for a video (first, middle, last); 0 when none could be.
    pub frames: u32,
    /// Why the artifact could not be classified (a format the worker cannot
    /// decode, an unreadable file): the scheduler's `unclassified` policy
    /// decides then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 500)]
    pub unclassified: Option<String>,
    /// What was found, best first.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub detections: Vec<ClassifiedDetection>,
}

/// One thing the classifier found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifiedDetection {
    /// The model's label (NudeNet's: `FACE_FEMALE`, `BUTTOCKS_EXPOSED`...).
    #[schema(pattern = r"^[A-Z_]{1,64}$")]
    pub label: String,
    /// Confidence, 0 to 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub score: f32,
    /// Which sampled frame (0-based) it was found in; absent for an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u32>,
    /// Where: `[x, y, width, height]` in the frame's pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[u32; 4]>,
}

/// Why an attempt failed, as the worker reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerError {
    /// Stable code: `engine_unavailable`, `engine_error`, `invalid_output`, `cancelled`...
    #[schema(pattern = r"^[a-z0-9_]{1,64}$")]
    pub code: String,
    pub message: String,
    /// True when another attempt (on this or another worker) may succeed.
    pub retryable: bool,
}

/// The `result` part of `POST /api/internal/jobs/{job_id}/result` (multipart,
/// see [`result_form`]): the attempt it ends and, when completed, one
/// [`ArtifactMeta`] per following part, named `artifact-0`, `artifact-1`... in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    pub worker_id: WorkerId,
    pub attempt: i32,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WorkerError>,
    /// What the engine's run took; absent when it never ran (older workers
    /// send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<RunTiming>,
}

/// The scheduler's acknowledgement of a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultAck {
    pub job_id: JobId,
    /// The job's state after the result.
    pub status: tessera_core::JobState,
    /// True when this result was already recorded (a retried upload).
    pub replayed: bool,
}
