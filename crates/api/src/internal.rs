//! The internal API (`/api/internal`), between the scheduler and its workers,
//! behind the internal token (seed sections 5.2 and 5.3).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::{Capability, JobId};

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
    pub worker_id: String,
    pub status: WorkerStatus,
    /// Base URL of the worker's API, for example `http://10.0.0.5:9000`.
    pub address: String,
    pub capabilities: Vec<Capability>,
    /// Models installed on the worker.
    pub models: Vec<String>,
    /// Models in GPU memory now.
    #[serde(default)]
    pub loaded_models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_job: Option<JobId>,
    /// GPU readings, where the worker can read them (NVML); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
    /// MiB, as in the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_used: Option<u64>,
    /// MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_total: Option<u64>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f32>,
}

/// The scheduler's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    /// Send the next heartbeat within this many milliseconds.
    pub heartbeat_interval_ms: u64,
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
