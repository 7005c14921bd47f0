//! The queue as the dispatcher, the monitor and the estimates read it: its
//! head in queue order, windows on it for a dispatch pass, its groups by
//! capability and model, and how long completed jobs ran.

use async_trait::async_trait;

use tessera_core::policy::{QueuedJob, WorkerView};
use tessera_core::{Capability, JobId, Millis};

use super::StoreError;

/// The queued jobs of one capability and model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueGroup {
    pub capability: Capability,
    pub model: String,
    pub jobs: i64,
    pub oldest_queued_at: Millis,
}

/// A worker asking for work: what it can run and what it has loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSlot {
    pub worker_id: tessera_core::WorkerId,
    pub capabilities: Vec<Capability>,
    /// Models installed on the worker.
    pub models: Vec<String>,
    /// Models in GPU memory now.
    pub loaded_models: Vec<String>,
}

impl WorkerSlot {
    /// The (capability, model) queue ranges the worker could take jobs from.
    pub fn ranges(&self) -> Vec<(Capability, String)> {
        self.capabilities
            .iter()
            .flat_map(|&c| self.models.iter().map(move |m| (c, m.clone())))
            .collect()
    }

    /// The worker as the queue policy sees it.
    pub fn view(&self) -> WorkerView<'_> {
        WorkerView {
            capabilities: &self.capabilities,
            models: &self.models,
            loaded_models: &self.loaded_models,
        }
    }
}

/// Reading the queue.
#[async_trait]
pub trait Queue {
    /// The first `limit` queued jobs of a capability, in queue order (priority,
    /// then age, then id): one index-ordered scan.
    async fn queue_head(
        &self,
        capability: Capability,
        limit: u32,
    ) -> Result<Vec<QueuedJob<JobId>>, StoreError>;

    /// A window on the queue: for every (capability, model) range given and
    /// every priority, the first `depth` queued jobs of that range in queue
    /// order, each an exact range of one partial index.
    ///
    /// The window is exact for the policy: for any set `E` of fewer than
    /// `depth` jobs, [`Candidates::from_queue`](tessera_core::policy::Candidates::from_queue) over the window less `E` is the
    /// candidates over the whole queue less `E`, for every worker whose
    /// capabilities and models are among the ranges. A dispatch pass reads one
    /// window with `depth` above its number of free workers and chooses for
    /// all of them in memory.
    async fn queue_window(
        &self,
        ranges: &[(Capability, String)],
        depth: u32,
    ) -> Result<Vec<QueuedJob<JobId>>, StoreError>;

    /// The queue by capability and model: how many jobs wait and since when.
    async fn queued_groups(&self) -> Result<Vec<QueueGroup>, StoreError>;

    /// Queued jobs of a capability and model queued before `before`, in queue order.
    async fn queued_before(
        &self,
        capability: Capability,
        model: &str,
        before: Millis,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Run times (ms) of the latest completed jobs of a capability, newest first.
    async fn recent_run_times(
        &self,
        capability: Capability,
        limit: u32,
    ) -> Result<Vec<Millis>, StoreError>;
}

/// How many (capability, model) ranges one queue-window statement reads:
/// four `UNION ALL` members each, well inside SQLite's compound-select limit.
pub(crate) const WINDOW_RANGES_PER_STATEMENT: usize = 25;

/// Implements [`Queue`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_queue {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_core::policy::QueuedJob;
            use tessera_core::{Capability, JobId, Millis, Priority};

            use $crate::store::queue::WINDOW_RANGES_PER_STATEMENT;
            use $crate::store::rows::capability_str;
            use $crate::store::{Queue, QueueGroup, StoreError};

            #[async_trait::async_trait]
            impl Queue for $store {
                async fn queue_head(
                    &self,
                    capability: Capability,
                    limit: u32,
                ) -> Result<
                    Vec<QueuedJob<JobId>>,
                    StoreError,
                > {
                    let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
                        "SELECT id, model, priority, queued_at FROM jobs \
                         WHERE status = 'QUEUED' AND capability = $1 \
                         ORDER BY priority DESC, queued_at, id LIMIT $2",
                    )
                    .bind(capability_str(capability))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter()
                        .map(|(id, model, priority, queued_at)| {
                            Ok(QueuedJob {
                                id: id.parse().map_err(|_| {
                                    StoreError::Corrupt(format!("job id {id:?}"))
                                })?,
                                capability,
                                model,
                                priority: Priority(priority.clamp(0, 255) as u8),
                                queued_at,
                            })
                        })
                        .collect()
                }

                async fn queue_window(
                    &self,
                    ranges: &[(Capability, String)],
                    depth: u32,
                ) -> Result<
                    Vec<QueuedJob<JobId>>,
                    StoreError,
                > {
                    let mut ranges = ranges.to_vec();
                    ranges.sort_by(|a, b| {
                        (capability_str(a.0), &a.1)
                            .cmp(&(capability_str(b.0), &b.1))
                    });
                    ranges.dedup();
                    let mut window = Vec::new();
                    if depth == 0 {
                        return Ok(window);
                    }
                    // Per capability, model and priority, the head of that exact
                    // range of `jobs_queue_by_model`, in statements of at most
                    // `WINDOW_RANGES_PER_STATEMENT` ranges. Within one priority,
                    // queue order and age order agree, so these heads hold every
                    // candidate the policy can ask for.
                    for chunk in ranges.chunks(WINDOW_RANGES_PER_STATEMENT) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new("");
                        let mut first = true;
                        for (cap, model) in chunk {
                            for p in Priority::FREE.0..=Priority::ADMIN.0 {
                                if !first {
                                    qb.push(" UNION ALL ");
                                }
                                first = false;
                                qb.push(
                                    "SELECT * FROM (SELECT id, capability, model, priority, queued_at \
                                     FROM jobs WHERE status = 'QUEUED' AND capability = ",
                                );
                                qb.push_bind(capability_str(*cap));
                                qb.push(" AND model = ").push_bind(model.clone());
                                qb.push(" AND priority = ").push_bind(i32::from(p));
                                qb.push(" ORDER BY priority DESC, queued_at, id LIMIT ")
                                    .push_bind(i64::from(depth));
                                qb.push(") AS head");
                            }
                        }
                        let rows: Vec<(String, String, String, i32, i64)> =
                            qb.build_query_as().fetch_all(self.reader()).await?;
                        for (id, capability, model, priority, queued_at) in rows {
                            let corrupt = |what: String| StoreError::Corrupt(what);
                            window.push(QueuedJob {
                                id: id.parse().map_err(|_| corrupt(format!("job id {id:?}")))?,
                                capability: capability
                                    .parse()
                                    .map_err(|_| corrupt(format!("capability {capability:?}")))?,
                                model,
                                priority: Priority(priority.clamp(0, 255) as u8),
                                queued_at,
                            });
                        }
                    }
                    Ok(window)
                }

                async fn queued_groups(
                    &self,
                ) -> Result<Vec<QueueGroup>, StoreError> {
                    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                        "SELECT capability, model, COUNT(*), MIN(queued_at) FROM jobs \
                         WHERE status = 'QUEUED' GROUP BY capability, model ORDER BY capability, model",
                    )
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter()
                        .map(|(capability, model, jobs, oldest)| {
                            Ok(QueueGroup {
                                capability: capability.parse().map_err(|_| {
                                    StoreError::Corrupt(format!(
                                        "capability {capability:?}"
                                    ))
                                })?,
                                model,
                                jobs,
                                oldest_queued_at: oldest,
                            })
                        })
                        .collect()
                }

                async fn queued_before(
                    &self,
                    capability: Capability,
                    model: &str,
                    before: Millis,
                    limit: u32,
                ) -> Result<Vec<JobId>, StoreError> {
                    let rows: Vec<(String,)> = sqlx::query_as(
                        "SELECT id FROM jobs WHERE status = 'QUEUED' AND capability = $1 \
                         AND model = $2 AND queued_at < $3 ORDER BY priority DESC, queued_at, id \
                         LIMIT $4",
                    )
                    .bind(capability_str(capability))
                    .bind(model)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter()
                        .map(|(id,)| {
                            id.parse().map_err(|_| {
                                StoreError::Corrupt(format!("job id {id:?}"))
                            })
                        })
                        .collect()
                }

                async fn recent_run_times(
                    &self,
                    capability: Capability,
                    limit: u32,
                ) -> Result<Vec<Millis>, StoreError> {
                    let rows: Vec<(Option<i64>,)> = sqlx::query_as(
                        "SELECT ended_at - started_at FROM jobs \
                         WHERE status = 'COMPLETED' AND capability = $1 AND started_at IS NOT NULL \
                         ORDER BY ended_at DESC LIMIT $2",
                    )
                    .bind(capability_str(capability))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                    Ok(rows.into_iter().filter_map(|(ms,)| ms).collect())
                }
            }
        };
    };
}

pub(crate) use impl_queue;
