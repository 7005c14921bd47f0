//! Jobs: creating one (idempotently, validated against its user's plan and
//! charged in the same transaction), reading and listing them, and recording
//! that a frontend delivered an ended one. How a job's state changes lives in
//! `transitions`.

use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::Value;

use tessera_core::params::{ParamError, ValidJob};
use tessera_core::{Capability, JobId, JobState, Millis, Plan, Platform, UserRef};

use super::rows::JobRow;
use super::{JobRecord, StoreError};

/// The create request, after authentication and shape checks.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    pub frontend: Platform,
    pub bot_id: tessera_core::BotId,
    pub user_ref: UserRef,
    pub capability: Capability,
    pub reply_context: Option<Value>,
    pub idempotency: Option<Idempotency>,
    /// The creating request's `X-Request-Id`, which follows the job to its worker.
    pub request_id: Option<String>,
    /// Where the job's webhook goes when it ends, and the creating key's id
    /// (whose webhook secret signs it); checked by the caller.
    pub callback: Option<Callback>,
    pub now: Millis,
    pub day: NaiveDate,
}

/// A job's webhook: its URL, and the id of the key whose secret signs it.
#[derive(Clone, Debug)]
pub struct Callback {
    pub url: String,
    pub key_id: String,
}

/// An `Idempotency-Key` and the hash of the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// Validates parameters against the user's plan, read just before the tokens are reserved.
pub type Validator<'a> = &'a (dyn Fn(&Plan) -> Result<ValidJob, ParamError> + Send + Sync);

/// What a create decided.
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created(JobRecord),
    /// The idempotency key was seen before with the same request: the first job.
    Replayed(JobRecord),
    /// The idempotency key was seen before with a different request.
    IdempotencyConflict,
    Invalid(ParamError),
    /// The user is a website account of another web bot, which this bot may
    /// not act for; nothing was charged.
    ForeignAccount,
    /// The job costs more than the user has left today.
    QuotaExhausted {
        plan: Plan,
        used: i64,
        cost: i64,
    },
}

/// Filters for listing jobs, newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub frontend: Option<Platform>,
    pub user_ref: Option<UserRef>,
    pub bot_id: Option<tessera_core::BotId>,
    pub statuses: Vec<JobState>,
    /// Only ended jobs whose outcome the frontend has not acknowledged.
    pub undelivered: bool,
    /// Only jobs created before this one (the page cursor).
    pub before: Option<JobId>,
    pub limit: u32,
}

/// Creating, reading and listing jobs.
#[async_trait]
pub trait Jobs {
    /// Replays an idempotent retry, or: creates the user if new (one idempotent
    /// statement), validates against their plan, then reserves the tokens and
    /// inserts the job as QUEUED atomically (nothing charged without a job, no job
    /// without a charge).
    async fn create_job(
        &self,
        new: &NewJob,
        validate: Validator<'_>,
    ) -> Result<CreateOutcome, StoreError>;

    /// A job, optionally only if it belongs to `frontend`.
    async fn get_job(
        &self,
        id: &JobId,
        frontend: Option<Platform>,
    ) -> Result<Option<JobRecord>, StoreError>;

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;

    /// Records that the frontend handed an ended job's outcome to its user
    /// (the first time counts; later calls change nothing). `None` when the
    /// job is not the frontend's (and, given `bot_id`, that bot's) or has not
    /// ended.
    async fn mark_delivered(
        &self,
        id: &JobId,
        frontend: Platform,
        bot_id: Option<&str>,
        now: Millis,
    ) -> Result<Option<JobRecord>, StoreError>;
}

/// A job and the hash of the request that created it.
#[derive(sqlx::FromRow)]
pub(crate) struct ReplayRow {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub request_hash: Option<Vec<u8>>,
}

/// Columns of a new job, in the order `bind_new_job` ([`impl_jobs`]) binds them,
/// then `fair_tag`, which each backend computes in its insert.
pub(crate) const NEW_JOB_COLUMNS: &str = "id, user_id, user_ref, frontend, bot_id, capability, \
    model, priority, status, params, reply_context, cost_tokens, billing_day, idempotency_key, \
    request_hash, created_at, queued_at, request_id, adult_allowed, callback_url, callback_key_id, \
    fair_tag";

/// `$1..$20` for [`NEW_JOB_COLUMNS`] but the last (queued_at repeats created_at).
pub(crate) const NEW_JOB_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17, $18, $19, \
     $20";

/// The parameters of a fair-share upsert, as placeholders of the statement
/// it is part of (`"$2"`...).
pub(crate) struct FairParams<'a> {
    pub user_id: &'a str,
    pub capability: &'a str,
    pub priority: &'a str,
    /// The job's fair cost ([`tessera_core::fair::cost`]).
    pub cost: &'a str,
}

/// The upsert of a user's finish tag in a queue ([`tessera_core::fair`]): a
/// new job starts at the later of the queue's virtual time (0 for a queue no
/// claim has moved yet) and the user's previous finish, and finishes its cost
/// later. It answers the new finish tag; the job's start tag is that less its
/// cost. `select` is what the new row is selected from (`FROM reserved`, so
/// it is written only when the tokens were reserved), or empty. On
/// PostgreSQL a racing create of the same user waits on the row and then
/// reads the finish the first one wrote, so one user's tags never repeat;
/// SQLite's one writer runs them in turn.
pub(crate) fn fair_share_upsert(p: &FairParams<'_>, select: &str) -> String {
    let FairParams {
        user_id,
        capability,
        priority,
        cost,
    } = p;
    format!(
        "INSERT INTO fair_shares (user_id, capability, priority, finish_tag) \
         SELECT {user_id}, {capability}, {priority}, \
             COALESCE((SELECT virtual_time FROM fair_clocks \
                       WHERE capability = {capability} AND priority = {priority}), 0) + {cost} \
         {select} WHERE TRUE \
         ON CONFLICT (user_id, capability, priority) DO UPDATE \
         SET finish_tag = CASE WHEN fair_shares.finish_tag + {cost} > excluded.finish_tag \
             THEN fair_shares.finish_tag + {cost} ELSE excluded.finish_tag END \
         RETURNING finish_tag"
    )
}

pub(crate) fn status_list(states: &[JobState]) -> Vec<&'static str> {
    states.iter().map(|s| s.as_str()).collect()
}

/// Implements [`Jobs`] for a backend with `writer()` and `reader()` pools and
/// a `reserve_and_insert` of its own, with `bind_new_job`, which binds a new
/// job's values for that statement.
macro_rules! impl_jobs {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::types::Json;
            use tessera_core::params::ValidJob;
            use tessera_core::{JobId, Millis, Platform, Priority, Transition};

            use $crate::store::jobs::{status_list, ReplayRow};
            use $crate::store::rows::{capability_str, JobRow, JOB_COLUMNS};
            use $crate::store::{
                CreateOutcome, Idempotency, JobFilter, JobRecord, Jobs, NewJob, StoreError,
                Validator,
            };

            #[async_trait::async_trait]
            impl Jobs for $store {
                async fn create_job(
                    &self,
                    new: &NewJob,
                    validate: Validator<'_>,
                ) -> Result<CreateOutcome, StoreError> {
                    if let Some(idem) = &new.idempotency {
                        if let Some(outcome) = self.replay(new, idem).await? {
                            return Ok(outcome);
                        }
                    }
                    let user_ref = new.user_ref.to_string();
                    let (user_id, plan, home_bot) = {
                        let mut conn = self.writer().acquire().await?;
                        Self::user_plan(&mut conn, &new.user_ref, &user_ref, new.now).await?
                    };
                    // A website account is its own bot's only (read with the
                    // plan: no extra query).
                    if home_bot.is_some_and(|bot| bot != new.bot_id) {
                        return Ok(CreateOutcome::ForeignAccount);
                    }
                    let job = match validate(&plan) {
                        Ok(job) => job,
                        Err(e) => return Ok(CreateOutcome::Invalid(e)),
                    };
                    let limit = plan.daily_tokens;
                    let inserted = if limit.is_some_and(|l| job.cost_tokens > l) {
                        Ok(None)
                    } else {
                        self.reserve_and_insert(new, user_id, &user_ref, plan.priority, &job, limit)
                            .await
                    };
                    match inserted {
                        Ok(Some(row)) => Ok(CreateOutcome::Created(row.try_into()?)),
                        Ok(None) => {
                            // A retry that raced its first attempt waits on the usage row
                            // and then finds the quota spent by that very attempt: answer
                            // with the first job, not with a refusal.
                            if let Some(idem) = &new.idempotency {
                                if let Some(outcome) = self.replay(new, idem).await? {
                                    return Ok(outcome);
                                }
                            }
                            let mut conn = self.reader().acquire().await?;
                            let used = Self::used_on(&mut conn, user_id, new.day).await?;
                            Ok(CreateOutcome::QuotaExhausted {
                                plan,
                                used,
                                cost: job.cost_tokens,
                            })
                        }
                        // A concurrent retry with the same key won the race: this attempt
                        // (and its reservation) rolled back; answer with the first job.
                        Err(sqlx::Error::Database(db))
                            if db.is_unique_violation() && new.idempotency.is_some() =>
                        {
                            let idem = new.idempotency.as_ref().expect("checked above");
                            match self.replay(new, idem).await? {
                                Some(outcome) => Ok(outcome),
                                None => Err(StoreError::Corrupt(
                                    "idempotency key conflict without a job".into(),
                                )),
                            }
                        }
                        Err(e) => Err(e.into()),
                    }
                }

                async fn get_job(
                    &self,
                    id: &JobId,
                    frontend: Option<Platform>,
                ) -> Result<Option<JobRecord>, StoreError> {
                    let row: Option<JobRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM jobs WHERE id = $1 AND ($2 IS NULL OR frontend = $2)",
                        JOB_COLUMNS
                    ))
                    .bind(id.as_str())
                    .bind(frontend.map(|f| f.as_str()))
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }

                async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                        "SELECT {} FROM jobs WHERE 1 = 1",
                        JOB_COLUMNS
                    ));
                    if let Some(frontend) = f.frontend {
                        qb.push(" AND frontend = ").push_bind(frontend.as_str());
                    }
                    if let Some(user_ref) = &f.user_ref {
                        qb.push(" AND user_ref = ").push_bind(user_ref.to_string());
                    }
                    if let Some(bot_id) = &f.bot_id {
                        qb.push(" AND bot_id = ").push_bind(bot_id.as_str());
                    }
                    if !f.statuses.is_empty() {
                        qb.push(" AND status IN (");
                        let mut sep = qb.separated(", ");
                        for s in status_list(&f.statuses) {
                            sep.push_bind(s);
                        }
                        qb.push(")");
                    }
                    if f.undelivered {
                        qb.push(
                            " AND delivered_at IS NULL \
                             AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')",
                        );
                    }
                    if let Some(before) = &f.before {
                        qb.push(" AND id < ").push_bind(before.as_str());
                    }
                    qb.push(" ORDER BY id DESC LIMIT ")
                        .push_bind(i64::from(f.limit));
                    let rows: Vec<JobRow> = qb.build_query_as().fetch_all(self.reader()).await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn mark_delivered(
                    &self,
                    id: &JobId,
                    frontend: Platform,
                    bot_id: Option<&str>,
                    now: Millis,
                ) -> Result<Option<JobRecord>, StoreError> {
                    let row: Option<JobRow> = sqlx::query_as(&format!(
                        "UPDATE jobs SET delivered_at = COALESCE(delivered_at, $1) \
                         WHERE id = $2 AND frontend = $3 AND ($4 IS NULL OR bot_id = $4) \
                         AND status IN ('COMPLETED', 'FAILED', 'CANCELLED') RETURNING {}",
                        JOB_COLUMNS
                    ))
                    .bind(now)
                    .bind(id.as_str())
                    .bind(frontend.as_str())
                    .bind(bot_id)
                    .fetch_optional(self.writer())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }
            }

            impl $store {
                /// Binds a new job's values as `$1..$20` of [`NEW_JOB_VALUES`].
                fn bind_new_job<'q, O>(
                    q: sqlx::query::QueryAs<'q, $db, O, <$db as sqlx::Database>::Arguments<'q>>,
                    new: &'q NewJob,
                    user_id: i64,
                    user_ref: &'q str,
                    priority: Priority,
                    job: &'q ValidJob,
                ) -> sqlx::query::QueryAs<'q, $db, O, <$db as sqlx::Database>::Arguments<'q>>
                {
                    q.bind(new.id.as_str())
                        .bind(user_id)
                        .bind(user_ref)
                        .bind(new.frontend.as_str())
                        .bind(new.bot_id.as_str())
                        .bind(capability_str(new.capability))
                        .bind(&job.model)
                        .bind(i32::from(priority.0))
                        .bind(Transition::Enqueue.to().as_str())
                        .bind(Json(job.params.to_value()))
                        .bind(new.reply_context.as_ref().map(Json))
                        .bind(job.cost_tokens)
                        .bind(new.day)
                        .bind(new.idempotency.as_ref().map(|i| i.key.as_str()))
                        .bind(new.idempotency.as_ref().map(|i| i.request_hash.as_slice()))
                        .bind(new.now)
                        .bind(new.request_id.as_deref())
                        .bind(job.adult_allowed)
                        .bind(new.callback.as_ref().map(|c| c.url.as_str()))
                        .bind(new.callback.as_ref().map(|c| c.key_id.as_str()))
                }

                /// The job an idempotency key already created, if any.
                async fn replay(
                    &self,
                    new: &NewJob,
                    idem: &Idempotency,
                ) -> Result<Option<CreateOutcome>, StoreError> {
                    let row: Option<ReplayRow> = sqlx::query_as(&format!(
                        "SELECT {}, request_hash FROM jobs \
                         WHERE frontend = $1 AND bot_id = $2 AND idempotency_key = $3",
                        JOB_COLUMNS
                    ))
                    .bind(new.frontend.as_str())
                    .bind(new.bot_id.as_str())
                    .bind(&idem.key)
                    .fetch_optional(self.writer())
                    .await?;
                    row.map(|r| {
                        if r.request_hash.as_deref() == Some(idem.request_hash.as_slice()) {
                            r.job.try_into().map(CreateOutcome::Replayed)
                        } else {
                            Ok(CreateOutcome::IdempotencyConflict)
                        }
                    })
                    .transpose()
                }
            }
        };
    };
}

pub(crate) use impl_jobs;
