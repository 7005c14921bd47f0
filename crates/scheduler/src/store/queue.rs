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

    /// The worker as the queue policy sees it, knowing no load times.
    pub fn view(&self) -> WorkerView<'_> {
        self.view_with(&[], &[])
    }

    /// The worker as the queue policy sees it, with the load times learned
    /// for it ([`crate::timings::Learned::loads_on`]) and the models other
    /// workers hold loaded ([`crate::registry::FreeWorker::warm_elsewhere`]).
    pub fn view_with<'a>(
        &'a self,
        load_ms: &'a [(String, tessera_core::Millis)],
        warm_elsewhere: &'a [String],
    ) -> WorkerView<'a> {
        WorkerView {
            capabilities: &self.capabilities,
            models: &self.models,
            loaded_models: &self.loaded_models,
            load_ms,
            warm_elsewhere,
        }
    }
}

/// Reading the queue.
#[async_trait]
pub trait Queue {
    /// The first `limit` queued jobs of a capability, in queue order (priority,
    /// then fair tag, then age, then id): one index-ordered scan.
    async fn queue_head(
        &self,
        capability: Capability,
        limit: u32,
    ) -> Result<Vec<QueuedJob<JobId>>, StoreError>;

    /// A window on the queue: for every (capability, model) range given and
    /// every priority, the first `depth` queued jobs of that range in queue
    /// order and the first `depth` in age order (each job once), each an
    /// exact range of one partial index.
    ///
    /// The window is exact for the policy: for any set `E` of fewer than
    /// `depth` jobs, [`Candidates::from_queue`](tessera_core::policy::Candidates::from_queue) over the window less `E` is the
    /// candidates over the whole queue less `E`, for every worker whose
    /// capabilities and models are among the ranges (each candidate is the
    /// first of a range in one of the two orders). A dispatch pass reads one
    /// window with `depth` above its number of free workers and chooses for
    /// all of them in memory.
    async fn queue_window(
        &self,
        ranges: &[(Capability, String)],
        depth: u32,
    ) -> Result<Vec<QueuedJob<JobId>>, StoreError>;

    /// The queue by capability and model: how many jobs wait and since when.
    async fn queued_groups(&self) -> Result<Vec<QueueGroup>, StoreError>;

    /// Queued jobs of a capability and model queued before `before`, by
    /// priority, then age.
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
/// eight `UNION ALL` members each (four priorities, two orders), well inside
/// SQLite's compound-select limit of 500.
pub(crate) const WINDOW_RANGES_PER_STATEMENT: usize = 25;

/// The two orders a window reads each range in, as `ORDER BY` clauses (the
/// range fixes the priority; it stays in the clause so the index order is
/// plain to see).
pub(crate) const WINDOW_ORDERS: [&str; 2] = [
    "priority DESC, fair_tag, queued_at, id",
    "priority DESC, queued_at, id",
];

/// Implements [`Queue`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_queue {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashSet;

            use tessera_core::policy::QueuedJob;
            use tessera_core::{Capability, JobId, Millis, Priority};

            use $crate::store::queue::{WINDOW_ORDERS, WINDOW_RANGES_PER_STATEMENT};
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
                    let rows: Vec<(String, String, i32, i64, i64)> =
                        Self::queue_head_statement("", capability, limit)
                            .build_query_as()
                            .fetch_all(self.reader())
                            .await?;
                    rows.into_iter()
                        .map(|(id, model, priority, queued_at, fair_tag)| {
                            Ok(QueuedJob {
                                id: id.parse().map_err(|_| {
                                    StoreError::Corrupt(format!("job id {id:?}"))
                                })?,
                                capability,
                                model,
                                priority: Priority(priority.clamp(0, 255) as u8),
                                fair_tag,
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
                    let mut seen = HashSet::new();
                    for chunk in ranges.chunks(WINDOW_RANGES_PER_STATEMENT) {
                        let rows: Vec<(String, String, String, i32, i64, i64)> =
                            Self::queue_window_statement("", chunk, depth)
                                .build_query_as()
                                .fetch_all(self.reader())
                                .await?;
                        for (id, capability, model, priority, queued_at, fair_tag) in rows {
                            // A job first in both orders comes twice.
                            if !seen.insert(id.clone()) {
                                continue;
                            }
                            let corrupt = |what: String| StoreError::Corrupt(what);
                            window.push(QueuedJob {
                                id: id.parse().map_err(|_| corrupt(format!("job id {id:?}")))?,
                                capability: capability
                                    .parse()
                                    .map_err(|_| corrupt(format!("capability {capability:?}")))?,
                                model,
                                priority: Priority(priority.clamp(0, 255) as u8),
                                fair_tag,
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
                    let rows: Vec<(String,)> =
                        Self::queued_before_statement("", capability, model, before, limit)
                            .build_query_as()
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

            impl $store {
                /// The first `limit` queued jobs of a capability in queue
                /// order: an index-ordered range of `jobs_queue_fair`.
                /// `prefix` goes before it (`EXPLAIN`, for tools).
                pub(crate) fn queue_head_statement(
                    prefix: &str,
                    capability: Capability,
                    limit: u32,
                ) -> sqlx::QueryBuilder<'static, $db> {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(prefix);
                    qb.push(
                        "SELECT id, model, priority, queued_at, fair_tag FROM jobs \
                         WHERE status = 'QUEUED' AND capability = ",
                    );
                    qb.push_bind(capability_str(capability));
                    qb.push(" ORDER BY priority DESC, fair_tag, queued_at, id LIMIT ");
                    qb.push_bind(i64::from(limit));
                    qb
                }

                /// The window's statement for some ranges: per range, priority
                /// and order, the head of that exact range of
                /// `jobs_queue_by_model_fair` or `jobs_queue_by_model_age`,
                /// `depth` rows each, in one `UNION ALL`.
                pub(crate) fn queue_window_statement(
                    prefix: &str,
                    ranges: &[(Capability, String)],
                    depth: u32,
                ) -> sqlx::QueryBuilder<'static, $db> {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(prefix);
                    let mut first = true;
                    for (cap, model) in ranges {
                        for p in Priority::FREE.0..=Priority::ADMIN.0 {
                            for order in WINDOW_ORDERS {
                                if !first {
                                    qb.push(" UNION ALL ");
                                }
                                first = false;
                                qb.push(
                                    "SELECT * FROM (SELECT id, capability, model, priority, \
                                     queued_at, fair_tag FROM jobs \
                                     WHERE status = 'QUEUED' AND capability = ",
                                );
                                qb.push_bind(capability_str(*cap));
                                qb.push(" AND model = ").push_bind(model.clone());
                                qb.push(" AND priority = ").push_bind(i32::from(p));
                                qb.push(" ORDER BY ").push(order).push(" LIMIT ");
                                qb.push_bind(i64::from(depth));
                                qb.push(") AS head");
                            }
                        }
                    }
                    qb
                }

                /// Queued jobs of a range queued before a time, by priority
                /// then age: a range of `jobs_queue_by_model_age`.
                pub(crate) fn queued_before_statement(
                    prefix: &str,
                    capability: Capability,
                    model: &str,
                    before: Millis,
                    limit: u32,
                ) -> sqlx::QueryBuilder<'static, $db> {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(prefix);
                    qb.push("SELECT id FROM jobs WHERE status = 'QUEUED' AND capability = ");
                    qb.push_bind(capability_str(capability));
                    qb.push(" AND model = ").push_bind(model.to_owned());
                    qb.push(" AND queued_at < ").push_bind(before);
                    qb.push(" ORDER BY priority DESC, queued_at, id LIMIT ");
                    qb.push_bind(i64::from(limit));
                    qb
                }
            }
        };
    };
}

pub(crate) use impl_queue;
