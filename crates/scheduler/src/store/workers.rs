//! Workers as their heartbeats describe them, and the running jobs the
//! dispatcher and the monitor reconcile against them.

use async_trait::async_trait;
use sqlx::types::Json;

use tessera_api::internal::{EngineReadiness, Heartbeat, ModelMemory, WorkerStatus};
use tessera_core::{Capability, Millis};

use super::rows::corrupt;
use super::{JobRecord, StoreError};

/// A worker as its last heartbeat described it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    pub heartbeat: Heartbeat,
    pub first_seen_at: Millis,
    pub last_seen_at: Millis,
}

/// Workers and the jobs running on them.
#[async_trait]
pub trait Workers {
    /// Records a heartbeat: the worker as it describes itself, seen at `now`.
    async fn record_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        now: Millis,
    ) -> Result<WorkerRecord, StoreError>;

    /// Every worker ever seen, by id.
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;

    /// RUNNING jobs whose worker was last seen before `cutoff` (or never).
    async fn running_on_lost_workers(&self, cutoff: Millis) -> Result<Vec<JobRecord>, StoreError>;

    /// Every RUNNING job, oldest dispatch first: for restarts, reconciliation and run timeouts.
    async fn running_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// The RUNNING jobs dispatched to one worker, by any replica, oldest
    /// dispatch first: what a heartbeat is reconciled against.
    async fn running_on_worker(&self, worker_id: &str) -> Result<Vec<JobRecord>, StoreError>;
}

pub(crate) const WORKER_COLUMNS: &str =
    "id, address, status, capabilities, models, loaded_models, \
    current_job, gpu_name, gpu_memory_used, gpu_memory_total, gpu_utilization, first_seen_at, \
    last_seen_at, engines, model_memory";

#[derive(sqlx::FromRow)]
pub(crate) struct WorkerRow {
    id: String,
    address: String,
    status: String,
    capabilities: Json<Vec<Capability>>,
    models: Json<Vec<String>>,
    loaded_models: Json<Vec<String>>,
    current_job: Option<String>,
    gpu_name: Option<String>,
    gpu_memory_used: Option<i64>,
    gpu_memory_total: Option<i64>,
    gpu_utilization: Option<f32>,
    first_seen_at: i64,
    last_seen_at: i64,
    engines: Json<Vec<EngineReadiness>>,
    model_memory: Json<Vec<ModelMemory>>,
}

impl TryFrom<WorkerRow> for WorkerRecord {
    type Error = StoreError;

    fn try_from(r: WorkerRow) -> Result<Self, StoreError> {
        let status = match r.status.as_str() {
            "idle" => WorkerStatus::Idle,
            "busy" => WorkerStatus::Busy,
            "draining" => WorkerStatus::Draining,
            other => return Err(corrupt("worker status", other)),
        };
        let current_job = match r.current_job {
            Some(id) => Some(id.parse().map_err(|_| corrupt("job id", &id))?),
            None => None,
        };
        Ok(WorkerRecord {
            heartbeat: Heartbeat {
                worker_id: r.id.parse().map_err(|_| corrupt("worker id", &r.id))?,
                status,
                address: r.address,
                capabilities: r.capabilities.0,
                models: r.models.0,
                loaded_models: r.loaded_models.0,
                model_memory: r.model_memory.0,
                current_job,
                gpu_name: r.gpu_name,
                gpu_memory_used: r.gpu_memory_used.map(|v| v.max(0) as u64),
                gpu_memory_total: r.gpu_memory_total.map(|v| v.max(0) as u64),
                gpu_utilization: r.gpu_utilization,
                engines: r.engines.0,
            },
            first_seen_at: r.first_seen_at,
            last_seen_at: r.last_seen_at,
        })
    }
}

/// Implements [`Workers`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_workers {
    ($store:ty) => {
        const _: () = {
            use sqlx::types::Json;
            use tessera_api::internal::Heartbeat;
            use tessera_core::Millis;

            use $crate::store::rows::{JobRow, JOB_COLUMNS};
            use $crate::store::workers::{WorkerRow, WORKER_COLUMNS};
            use $crate::store::{JobRecord, StoreError, WorkerRecord, Workers};

            #[async_trait::async_trait]
            impl Workers for $store {
                async fn record_heartbeat(
                    &self,
                    hb: &Heartbeat,
                    now: Millis,
                ) -> Result<WorkerRecord, StoreError> {
                    let mib = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                    let row: WorkerRow = sqlx::query_as(&format!(
                        "INSERT INTO workers ({cols}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14) \
                         ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
                           status = excluded.status, capabilities = excluded.capabilities, \
                           models = excluded.models, loaded_models = excluded.loaded_models, \
                           current_job = excluded.current_job, gpu_name = excluded.gpu_name, \
                           gpu_memory_used = excluded.gpu_memory_used, \
                           gpu_memory_total = excluded.gpu_memory_total, \
                           gpu_utilization = excluded.gpu_utilization, \
                           last_seen_at = excluded.last_seen_at, engines = excluded.engines, \
                           model_memory = excluded.model_memory \
                         RETURNING {cols}",
                        cols = WORKER_COLUMNS
                    ))
                    .bind(hb.worker_id.as_str())
                    .bind(&hb.address)
                    .bind(hb.status.as_str())
                    .bind(Json(&hb.capabilities))
                    .bind(Json(&hb.models))
                    .bind(Json(&hb.loaded_models))
                    .bind(hb.current_job.as_ref().map(|j| j.as_str()))
                    .bind(hb.gpu_name.as_deref())
                    .bind(mib(hb.gpu_memory_used))
                    .bind(mib(hb.gpu_memory_total))
                    .bind(hb.gpu_utilization)
                    .bind(now)
                    .bind(Json(&hb.engines))
                    .bind(Json(&hb.model_memory))
                    .fetch_one(self.writer())
                    .await?;
                    row.try_into()
                }

                async fn list_workers(
                    &self,
                ) -> Result<Vec<WorkerRecord>, StoreError> {
                    let rows: Vec<WorkerRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM workers ORDER BY id",
                        WORKER_COLUMNS
                    ))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn running_on_lost_workers(
                    &self,
                    cutoff: Millis,
                ) -> Result<Vec<JobRecord>, StoreError> {
                    let cols = JOB_COLUMNS
                        .split(", ")
                        .map(|c| format!("j.{}", c.trim()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let rows: Vec<JobRow> = sqlx::query_as(&format!(
                        "SELECT {cols} FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id \
                         WHERE j.status = 'RUNNING' AND (w.id IS NULL OR w.last_seen_at < $1) \
                         ORDER BY j.id"
                    ))
                    .bind(cutoff)
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn running_jobs(
                    &self,
                ) -> Result<Vec<JobRecord>, StoreError> {
                    let rows: Vec<JobRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM jobs WHERE status = 'RUNNING' ORDER BY started_at, id",
                        JOB_COLUMNS
                    ))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn running_on_worker(
                    &self,
                    worker_id: &str,
                ) -> Result<Vec<JobRecord>, StoreError> {
                    // An exact range of the partial index `jobs_running`.
                    let rows: Vec<JobRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM jobs WHERE status = 'RUNNING' AND worker_id = $1 \
                         ORDER BY started_at, id",
                        JOB_COLUMNS
                    ))
                    .bind(worker_id)
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }
            }
        };
    };
}

pub(crate) use impl_workers;
