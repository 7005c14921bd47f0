//! The state machine in the database. Every change of a job's state is one
//! conditional `UPDATE ... WHERE status IN (<legal sources>)`, so an illegal
//! move matches no row; a completion records its artifacts and a bad end
//! refunds, in the same transaction, and so does the webhook delivery of a
//! job created with a callback URL. A dispatch pass claims all its jobs in
//! one transaction, and a running attempt's reports are fenced by its worker
//! and attempt.

use async_trait::async_trait;

use tessera_core::{JobId, Millis, Platform, Transition, WorkerId};

use super::{JobRecord, NewArtifact, StoreError};

/// What a transition did.
#[derive(Clone, Debug, PartialEq)]
pub enum TransitionOutcome {
    Applied(JobRecord),
    /// The job is not in a state the transition starts from; here is how it is.
    Illegal(JobRecord),
    NotFound,
}

/// Details of a transition. Only the fields the transition uses are read.
#[derive(Clone, Debug, Default)]
pub struct TransitionChange {
    pub now: Millis,
    /// Act only on a job of this frontend (a frontend's key sees only its own).
    pub frontend: Option<Platform>,
    /// Act only on a job of this bot (a web key sees only its own bot's).
    pub bot_id: Option<tessera_core::BotId>,
    /// Dispatch: the worker chosen.
    pub worker_id: Option<tessera_core::WorkerId>,
    /// Fail or Cancel: why.
    pub error: Option<(String, String)>,
    /// Act only if the job is still running this attempt on this worker: a
    /// worker's report about an attempt the scheduler took back changes nothing.
    pub fence: Option<Fence>,
    /// Complete (or Fail, when the outputs are withheld for review): the
    /// outputs, recorded in the same transaction.
    pub artifacts: Vec<NewArtifact>,
    /// Fail: keep the job's tokens (no refund), as `moderation.outputs.refund
    /// = false` asks of a job whose outputs were withheld.
    pub keep_tokens: bool,
    /// Requeue: the dispatch never reached the worker (or it refused the job),
    /// so it does not count as an attempt and the job keeps its queued time,
    /// its place in the queue and its wait-bound clock.
    pub release: bool,
}

/// One attempt of a job: the worker that runs it and the job's dispatch count
/// when it was sent (the fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub worker_id: tessera_core::WorkerId,
    pub attempt: i32,
}

/// Changing a job's state.
#[async_trait]
pub trait Transitions {
    /// Applies a state-machine transition if the job is in one of its source
    /// states; refunds in the same transaction when the job ends FAILED or CANCELLED.
    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        change: &TransitionChange,
    ) -> Result<TransitionOutcome, StoreError>;

    /// Dispatches several chosen jobs, each to its worker (QUEUED → RUNNING,
    /// attempts + 1), in one transaction: one commit for a whole dispatch pass.
    /// Answers the jobs claimed; a job no longer QUEUED (another dispatcher
    /// took it, or it was cancelled) is left out.
    async fn claim_batch(
        &self,
        claims: &[(JobId, WorkerId)],
        now: Millis,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// Records progress of a running attempt; false if the attempt is no longer current.
    async fn set_progress(
        &self,
        id: &JobId,
        fence: &Fence,
        progress: f32,
    ) -> Result<bool, StoreError>;
}

/// Moves a queue's virtual time ([`tessera_core::fair`]) after a claim: to the
/// smallest start tag the claim found queued, the claimed jobs' included
/// (`$3`, the smallest of theirs), never back. `$1` and `$2` are the queue's
/// capability and priority; the head left queued, if below `$3`, is one
/// probe of `jobs_queue_fair` (written once: PostgreSQL runs a subquery once
/// per mention). Served in tag order this is the claimed job's tag; a job
/// taken out of order (a warm model, an overdue job) does not move the clock
/// past the jobs still waiting.
pub(crate) const FAIR_CLOCK_ADVANCE: &str =
    "INSERT INTO fair_clocks (capability, priority, virtual_time) \
     SELECT $1, $2, COALESCE((SELECT fair_tag FROM jobs WHERE status = 'QUEUED' \
         AND capability = $1 AND priority = $2 AND fair_tag < $3 \
         ORDER BY priority DESC, fair_tag LIMIT 1), $3) \
     WHERE TRUE \
     ON CONFLICT (capability, priority) DO UPDATE SET virtual_time = excluded.virtual_time \
     WHERE excluded.virtual_time > fair_clocks.virtual_time";

/// Implements [`Transitions`] for a backend with `writer()` and `reader()`
/// pools, with `transition_in`, which applies one transition inside a
/// transaction.
macro_rules! impl_transitions {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::BTreeMap;

            use tessera_core::{JobId, Millis, Transition, WorkerId};

            use $crate::store::rows::{capability_str, JobRow, JOB_COLUMNS};
            use $crate::store::transitions::FAIR_CLOCK_ADVANCE;
            use $crate::store::{
                Fence, JobRecord, Jobs, StoreError, TransitionChange, TransitionOutcome,
                Transitions,
            };

            #[async_trait::async_trait]
            impl Transitions for $store {
                async fn transition(
                    &self,
                    id: &JobId,
                    t: Transition,
                    c: &TransitionChange,
                ) -> Result<TransitionOutcome, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    if let Some(job) = Self::transition_in(&mut tx, id, t, c).await? {
                        tx.commit().await?;
                        return Ok(TransitionOutcome::Applied(job));
                    }
                    tx.rollback().await?;
                    let job = self.get_job(id, c.frontend).await?.filter(|job| {
                        c.bot_id.as_ref().is_none_or(|bot| *bot == job.bot_id)
                    });
                    Ok(match job {
                        Some(job) => TransitionOutcome::Illegal(job),
                        None => TransitionOutcome::NotFound,
                    })
                }

                async fn claim_batch(
                    &self,
                    claims: &[(JobId, WorkerId)],
                    now: Millis,
                ) -> Result<Vec<JobRecord>, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let mut claimed = Vec::with_capacity(claims.len());
                    for (id, worker_id) in claims {
                        let change = TransitionChange {
                            now,
                            worker_id: Some(worker_id.clone()),
                            ..Default::default()
                        };
                        let dispatch = Transition::Dispatch;
                        if let Some(job) = Self::transition_in(&mut tx, id, dispatch, &change).await? {
                            claimed.push(job);
                        }
                    }
                    // Each queue claimed from moves its virtual time, once per
                    // pass, in one order on every replica, so two passes wait
                    // for each other at worst and never deadlock.
                    let mut heads: BTreeMap<(&'static str, i32), i64> = BTreeMap::new();
                    for job in &claimed {
                        let queue = (capability_str(job.capability), i32::from(job.priority.0));
                        let head = heads.entry(queue).or_insert(job.fair_tag);
                        *head = (*head).min(job.fair_tag);
                    }
                    for ((capability, priority), claimed_head) in heads {
                        sqlx::query(FAIR_CLOCK_ADVANCE)
                            .bind(capability)
                            .bind(priority)
                            .bind(claimed_head)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(claimed)
                }

                async fn set_progress(
                    &self,
                    id: &JobId,
                    fence: &Fence,
                    progress: f32,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE jobs SET progress = $1 WHERE id = $2 AND status = 'RUNNING' \
                         AND worker_id = $3 AND attempts = $4",
                    )
                    .bind(progress)
                    .bind(id.as_str())
                    .bind(fence.worker_id.as_str())
                    .bind(fence.attempt)
                    .execute(self.writer())
                    .await?;
                    Ok(done.rows_affected() == 1)
                }
            }

            impl $store {
                /// Applies a transition inside `tx`: the conditional update, the
                /// artifacts of a completion and the refund of a bad end. `None`
                /// when the job is not in one of the transition's source states
                /// (or not the frontend's, or not the fenced attempt).
                async fn transition_in(
                    tx: &mut sqlx::Transaction<'static, $db>,
                    id: &JobId,
                    t: Transition,
                    c: &TransitionChange,
                ) -> Result<Option<JobRecord>, StoreError> {
                    use tessera_core::Transition as T;
                    let to = t.to();
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE jobs SET status = ");
                    qb.push_bind(to.as_str());
                    match t {
                        T::Enqueue => {
                            qb.push(", queued_at = ").push_bind(c.now);
                        }
                        T::Dispatch => {
                            qb.push(", started_at = ").push_bind(c.now);
                            qb.push(", attempts = attempts + 1, progress = NULL, worker_id = ")
                                .push_bind(c.worker_id.as_ref().map(|w| w.to_string()));
                        }
                        T::Complete => {
                            qb.push(", ended_at = ").push_bind(c.now);
                            qb.push(", progress = 100");
                        }
                        T::Fail | T::Cancel => {
                            let (code, message) = c.error.clone().unwrap_or_default();
                            qb.push(", ended_at = ").push_bind(c.now);
                            qb.push(", error_code = ").push_bind(code);
                            qb.push(", error_message = ").push_bind(message);
                            if c.keep_tokens {
                                qb.push(", refunded = ").push_bind(false);
                            } else {
                                qb.push(", refunded = (cost_tokens > 0)");
                            }
                        }
                        T::Requeue => {
                            qb.push(", started_at = NULL, worker_id = NULL, progress = NULL");
                            if c.release {
                                // Never started: it keeps its place in the queue
                                // and its wait-bound clock.
                                qb.push(", attempts = attempts - 1");
                            } else {
                                qb.push(", queued_at = ").push_bind(c.now);
                            }
                        }
                    }
                    qb.push(" WHERE id = ").push_bind(id.as_str());
                    qb.push(" AND status IN (").push(t.from_sql_list()).push(")");
                    if let Some(frontend) = c.frontend {
                        qb.push(" AND frontend = ").push_bind(frontend.as_str());
                    }
                    if let Some(bot_id) = &c.bot_id {
                        qb.push(" AND bot_id = ").push_bind(bot_id.to_string());
                    }
                    if let Some(fence) = &c.fence {
                        qb.push(" AND worker_id = ").push_bind(fence.worker_id.to_string());
                        qb.push(" AND attempts = ").push_bind(fence.attempt);
                    }
                    qb.push(" RETURNING ").push(JOB_COLUMNS);

                    let row: Option<JobRow> =
                        qb.build_query_as().fetch_optional(&mut **tx).await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let job: JobRecord = row.try_into()?;
                    if matches!(t, T::Complete | T::Fail) {
                        for a in &c.artifacts {
                            sqlx::query(
                                "INSERT INTO artifacts (id, job_id, type, storage_key, format, width, \
                                 height, file_size, position, created_at, classification, withheld, usage) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                            )
                            .bind(a.id.as_str())
                            .bind(id.as_str())
                            .bind(a.kind.as_str())
                            .bind(&a.storage_key)
                            .bind(&a.format)
                            .bind(a.width.map(|w| i32::try_from(w).unwrap_or(i32::MAX)))
                            .bind(a.height.map(|h| i32::try_from(h).unwrap_or(i32::MAX)))
                            .bind(i64::try_from(a.file_size).unwrap_or(i64::MAX))
                            .bind(i32::try_from(a.position).unwrap_or(i32::MAX))
                            .bind(c.now)
                            .bind(a.classification.as_deref())
                            .bind(a.withheld)
                            .bind(a.usage.as_deref())
                            .execute(&mut **tx)
                            .await?;
                        }
                    }
                    if let (true, Some(url), Some(key_id)) = (
                        matches!(t, T::Complete | T::Fail | T::Cancel),
                        &job.callback_url,
                        &job.callback_key_id,
                    ) {
                        // The job's webhook is due from the moment it ends,
                        // in the same transaction: an ended job never
                        // misses it.
                        sqlx::query($crate::store::webhooks::INSERT_DELIVERY)
                            .bind(id.as_str())
                            .bind(tessera_core::WebhookId::generate().as_str())
                            .bind($crate::store::event_of(job.status))
                            .bind(url)
                            .bind(key_id)
                            .bind(c.now)
                            .execute(&mut **tx)
                            .await?;
                    }
                    if job.refunded {
                        sqlx::query(
                            "UPDATE usage_daily SET tokens_used = tokens_used - $1 \
                             WHERE user_id = $2 AND day = $3",
                        )
                        .bind(job.cost_tokens)
                        .bind(job.user_id)
                        .bind(job.billing_day)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Ok(Some(job))
                }
            }
        };
    };
}

pub(crate) use impl_transitions;
