//! Reads and shortcuts for tests and tools, kept out of the production
//! [`Store`]: the scheduler never calls them. Both backends implement
//! [`Inspect`]; [`connect_inspect`](super::connect_inspect) opens a store with
//! it, and the testkit keeps such a handle on the store its scheduler runs on.

use async_trait::async_trait;
use chrono::NaiveDate;

use tessera_core::policy::{Candidates, Policy, QueuedJob, Reason};
use tessera_core::{Capability, JobId, Millis, UserRef};

use super::{JobRecord, Store, StoreError, WorkerSlot};

/// What tests and tools read besides the [`Store`], and a one-worker dispatch.
#[async_trait]
pub trait Inspect: Store {
    /// Tokens charged on a day to the user's billing user (the account it is
    /// linked to, or itself), which its quota shows (0 if none).
    async fn tokens_used(&self, user_ref: &UserRef, day: NaiveDate) -> Result<i64, StoreError>;

    /// Tokens charged on a day to the user with this id: the `usage_daily`
    /// row that jobs with this `user_id` were charged to and are refunded to.
    async fn tokens_charged(&self, user_id: i64, day: NaiveDate) -> Result<i64, StoreError>;

    /// The database's plan for each statement that reads the queue on the
    /// dispatch and create paths, for one (capability, model) range: the
    /// dispatch window at `depth` (`window`), the queue head behind
    /// positions (`head`), the unservable sweep's read of every job queued
    /// before now (`before`) and the clock's advance after a claim (`clock`). Each plan is its lines as
    /// the database words them (`EXPLAIN` on PostgreSQL, `EXPLAIN QUERY
    /// PLAN` details on SQLite).
    async fn queue_plans(
        &self,
        capability: Capability,
        model: &str,
        depth: u32,
    ) -> Result<Vec<(&'static str, Vec<String>)>, StoreError>;

    /// The queue policy's candidates for one worker (a window of depth 1).
    async fn candidates(
        &self,
        worker: &WorkerSlot,
    ) -> Result<Candidates<QueuedJob<JobId>>, StoreError> {
        let window = self.queue_window(&worker.ranges(), 1).await?;
        Ok(Candidates::from_queue(&window, &worker.view()).cloned())
    }

    /// Picks the job the policy chooses for this one worker and dispatches it
    /// to the worker (QUEUED → RUNNING, attempts + 1) through
    /// [`Transitions::claim_batch`](super::Transitions::claim_batch). Two
    /// dispatchers racing for one job cannot both win: the claim is a
    /// conditional update, and the loser looks again.
    async fn claim_next(
        &self,
        worker: &WorkerSlot,
        policy: &Policy,
        now: Millis,
    ) -> Result<Option<(JobRecord, Reason)>, StoreError> {
        for _ in 0..8 {
            let candidates = self.candidates(worker).await?;
            let Some((job, reason)) = policy.choose(&candidates.as_ref(), now) else {
                return Ok(None);
            };
            let claim = [(job.id.clone(), worker.worker_id.clone())];
            if let Some(job) = self.claim_batch(&claim, now).await?.pop() {
                return Ok(Some((job, reason)));
            }
        }
        // Lost eight races in a row: another dispatcher is busy; the next wake-up retries.
        Ok(None)
    }
}

/// Implements [`Inspect`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_inspect {
    ($store:ty) => {
        const _: () = {
            use chrono::NaiveDate;
            use tessera_core::UserRef;

            use tessera_core::{Capability, Millis};

            use $crate::store::transitions::FAIR_CLOCK_ADVANCE;
            use $crate::store::users::BILLING_USER;
            use $crate::store::{Inspect, StoreError};

            #[async_trait::async_trait]
            impl Inspect for $store {
                async fn tokens_used(
                    &self,
                    user_ref: &UserRef,
                    day: NaiveDate,
                ) -> Result<i64, StoreError> {
                    let row: Option<(i64,)> = sqlx::query_as(&format!(
                        "SELECT d.tokens_used FROM users u JOIN usage_daily d ON d.user_id = {} \
                         WHERE u.user_ref = $1 AND d.day = $2",
                        BILLING_USER
                    ))
                    .bind(user_ref.to_string())
                    .bind(day)
                    .fetch_optional(self.reader())
                    .await?;
                    Ok(row.map_or(0, |(t,)| t))
                }

                async fn tokens_charged(
                    &self,
                    user_id: i64,
                    day: NaiveDate,
                ) -> Result<i64, StoreError> {
                    let mut conn = self.reader().acquire().await?;
                    Self::used_on(&mut conn, user_id, day).await
                }

                async fn queue_plans(
                    &self,
                    capability: Capability,
                    model: &str,
                    depth: u32,
                ) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
                    let range = [(capability, model.to_owned())];
                    let window = Self::queue_window_statement(Self::EXPLAIN, &range, depth);
                    let head = Self::queue_head_statement(Self::EXPLAIN, capability, 1_000);
                    let before = Self::queued_before_statement(
                        Self::EXPLAIN,
                        capability,
                        model,
                        Millis::MAX,
                        100,
                    );
                    let mut clock = sqlx::QueryBuilder::new(Self::EXPLAIN);
                    clock.push(FAIR_CLOCK_ADVANCE);
                    let mut plans = Vec::new();
                    for (what, mut qb) in [("window", window), ("head", head), ("before", before)] {
                        plans.push((what, self.plan_lines(qb.build()).await?));
                    }
                    // The clock's statement has its parameters written in.
                    let clock = clock
                        .build()
                        .bind(capability.as_str())
                        .bind(0i32)
                        .bind(i64::MAX);
                    plans.push(("clock", self.plan_lines(clock).await?));
                    Ok(plans)
                }
            }
        };
    };
}

pub(crate) use impl_inspect;
