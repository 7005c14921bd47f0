//! Storage: the one trait the control plane writes through, and its two backends.
//!
//! [`Store`] speaks in decisions, not rows: "create this job if the user can pay
//! for it", "apply this transition and refund if it ends the job badly". Each
//! method is one transaction, so a crash between two statements can never leave a
//! job charged but missing, or ended but not refunded.
//!
//! [`postgres::PgStore`] is for production, [`sqlite::SqliteStore`] the embedded
//! default. Their SQL is written once in [`common`] and instantiated for each; the
//! schemas are kept column for column equal (integers for times, JSON as JSONB or
//! TEXT). The conformance suite in `tests/store_conformance.rs` runs every
//! behaviour against both.

pub mod common;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::Value;

use tessera_api::internal::ArtifactKind;
use tessera_core::params::{ParamError, ValidJob};
use tessera_core::policy::{Candidates, Policy, QueuedJob, Reason, WorkerView};
use tessera_core::{
    ApiKeyId, ArtifactId, Capability, InputId, JobId, JobState, Millis, Plan, Platform, Priority,
    Transition, UserRef,
};

use crate::config::DatabaseConfig;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Opens the database named by `config.url` and applies pending migrations.
pub async fn connect(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    if config.url.starts_with("postgres://") || config.url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(config).await?))
    } else if config.url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(config).await?))
    } else {
        Err(StoreError::Config(format!(
            "database.url must start with sqlite:// or postgres://, not {:?}",
            config.url.split(':').next().unwrap_or_default()
        )))
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub user_id: i64,
    pub user_ref: String,
    pub frontend: Platform,
    pub bot_id: String,
    pub capability: Capability,
    pub model: String,
    pub priority: Priority,
    pub status: JobState,
    pub params: Value,
    pub reply_context: Option<Value>,
    pub cost_tokens: i64,
    pub billing_day: NaiveDate,
    pub refunded: bool,
    pub attempts: i32,
    pub worker_id: Option<String>,
    pub progress: Option<f32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: Millis,
    pub queued_at: Option<Millis>,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// When the frontend acknowledged handing the outcome to the user.
    pub delivered_at: Option<Millis>,
    /// The `X-Request-Id` of the request that created it.
    pub request_id: Option<String>,
}

/// A frontend API key as stored (its secret only as a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub frontend: Platform,
    pub bot_id: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A user's plan and what they spent on a billing day.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaRecord {
    pub user_ref: String,
    pub plan: Plan,
    pub tokens_used: i64,
    /// For a website account, the bot id of the web key that created it
    /// (only that bot's keys may act for it); `None` for any other user.
    pub home_bot: Option<String>,
}

/// A website account: a `web:` user with an email and a password, and the
/// bot users linked to it, who are billed as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub user_id: i64,
    pub user_ref: String,
    /// The bot id of the web key that created the account: each website is
    /// its own trust domain, and only its keys may use the account.
    pub home_bot: String,
    pub email: String,
    /// `platform:id` of every bot user linked to the account, sorted.
    pub linked: Vec<String>,
    pub created_at: Millis,
}

/// What redeeming a link code did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// The code's bot user is now linked to the account (moved, if it was
    /// linked to another); the account as it now is.
    Linked(AccountRecord),
    /// No such code: never issued, already used, replaced or expired.
    InvalidCode,
    /// The user redeeming is not an account of this bot; the code was left
    /// unused.
    NoAccount,
}

/// The create request, after authentication and shape checks.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    pub frontend: Platform,
    pub bot_id: String,
    pub user_ref: UserRef,
    pub capability: Capability,
    pub reply_context: Option<Value>,
    pub idempotency: Option<Idempotency>,
    /// The creating request's `X-Request-Id`, which follows the job to its worker.
    pub request_id: Option<String>,
    pub now: Millis,
    pub day: NaiveDate,
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
    pub bot_id: Option<String>,
    /// Dispatch: the worker chosen.
    pub worker_id: Option<String>,
    /// Fail or Cancel: why.
    pub error: Option<(String, String)>,
    /// Act only if the job is still running this attempt on this worker: a
    /// worker's report about an attempt the scheduler took back changes nothing.
    pub fence: Option<Fence>,
    /// Complete: the outputs, recorded in the same transaction.
    pub artifacts: Vec<NewArtifact>,
    /// Requeue: the dispatch never reached the worker (or it refused the job),
    /// so it does not count as an attempt and the job keeps its queued time,
    /// its place in the queue and its wait-bound clock.
    pub release: bool,
}

/// One attempt of a job: the worker that runs it and the job's dispatch count
/// when it was sent (the fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub worker_id: String,
    pub attempt: i32,
}

/// An output file already written to the object store, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewArtifact {
    pub id: ArtifactId,
    pub kind: ArtifactKind,
    pub storage_key: String,
    pub format: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_size: u64,
    pub position: u32,
}

/// An artifact as stored, with the frontend and bot of its job (who may read it).
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactRecord {
    pub id: ArtifactId,
    pub job_id: JobId,
    pub frontend: Platform,
    pub bot_id: String,
    pub kind: ArtifactKind,
    pub storage_key: String,
    pub format: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_size: u64,
    pub position: u32,
    pub created_at: Millis,
}

/// An uploaded input as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRecord {
    pub id: InputId,
    pub frontend: Platform,
    pub bot_id: String,
    pub content_type: String,
    pub size: u64,
    pub storage_key: String,
    pub created_at: Millis,
}

/// The queued jobs of one capability and model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueGroup {
    pub capability: Capability,
    pub model: String,
    pub jobs: i64,
    pub oldest_queued_at: Millis,
}

/// A worker asking for work: what it can run and what it has loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerSlot {
    pub worker_id: String,
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

/// A worker as its last heartbeat described it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    pub heartbeat: tessera_api::internal::Heartbeat,
    pub first_seen_at: Millis,
    pub last_seen_at: Millis,
}

/// What the metrics read from the database at each scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreGauges {
    /// QUEUED jobs by capability and priority.
    pub queued: Vec<(Capability, Priority, i64)>,
    /// RUNNING jobs by capability.
    pub running: Vec<(Capability, i64)>,
    /// Billing users (accounts and users linked to none) by plan id: a
    /// person's linked bot users are counted once, with their account.
    pub users_per_plan: Vec<(String, i64)>,
}

/// The connection pool(s) of a store, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open now.
    pub size: u32,
    /// Of those, the idle ones.
    pub idle: u32,
    /// The most the pool(s) may open.
    pub max: u32,
}

/// Filters for listing jobs, newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub frontend: Option<Platform>,
    pub user_ref: Option<String>,
    pub bot_id: Option<String>,
    pub statuses: Vec<JobState>,
    /// Only ended jobs whose outcome the frontend has not acknowledged.
    pub undelivered: bool,
    /// Only jobs created before this one (the page cursor).
    pub before: Option<JobId>,
    pub limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; the API answers 503 and the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value Tessera cannot read back; a bug or a hand edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Database(db) => match db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLite: busy or locked past the timeout, in any extended form
                // (SQLITE_BUSY_SNAPSHOT is 517: the primary code is the low byte).
                Some(lite) => sqlx::error::DatabaseError::code(lite)
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
                // PostgreSQL: connection exceptions (08), shutdown and recovery (57P0x).
                None => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
            },
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// The control plane's storage. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The connection pool's state, for the metrics.
    fn pool_stats(&self) -> PoolStats;

    /// Queue depth, running jobs and users per plan, for the metrics.
    async fn gauges(&self) -> Result<StoreGauges, StoreError>;

    async fn close(&self);

    // ---- frontend keys ----

    async fn insert_api_key(
        &self,
        frontend: Platform,
        bot_id: &str,
        secret_hash: &[u8],
        now: Millis,
    ) -> Result<ApiKeyRecord, StoreError>;

    /// The live (not revoked) key with this secret hash.
    async fn find_api_key(&self, secret_hash: &[u8]) -> Result<Option<ApiKeyRecord>, StoreError>;

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes a key; `None` if there is no such key. Revoking twice keeps the first time.
    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        now: Millis,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;

    // ---- plans and users ----

    async fn plans(&self) -> Result<Vec<Plan>, StoreError>;

    /// The user's plan and tokens used on `day`; `None` for a user never seen.
    /// A user linked to an account shows the account's plan and usage.
    async fn quota(
        &self,
        user_ref: &UserRef,
        day: NaiveDate,
    ) -> Result<Option<QuotaRecord>, StoreError>;

    /// Puts a user (created if new) on a plan; `None` if the plan does not
    /// exist. A user linked to an account changes the account's plan, which
    /// is the one that applies to it.
    async fn set_plan(
        &self,
        user_ref: &UserRef,
        plan_id: &str,
        day: NaiveDate,
        now: Millis,
    ) -> Result<Option<QuotaRecord>, StoreError>;

    // ---- accounts and links ----

    /// Creates the account `user_ref` (a `web:` user never seen) of the web
    /// bot `home_bot` with an email (already normalised) and a password hash,
    /// on the default plan. `None` when the email belongs to another account
    /// (of any bot: emails are unique).
    async fn create_account(
        &self,
        user_ref: &UserRef,
        home_bot: &str,
        email: &str,
        password_hash: &str,
        now: Millis,
    ) -> Result<Option<AccountRecord>, StoreError>;

    /// The account with this email, and its password hash (a PHC string).
    async fn account_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(AccountRecord, String)>, StoreError>;

    /// The account `user_ref`; `None` when that user has no account.
    async fn get_account(&self, user_ref: &UserRef) -> Result<Option<AccountRecord>, StoreError>;

    /// Gives a bot user (created on first sight, on the default plan) a link
    /// code, replacing any earlier one, and forgets expired codes. `false`
    /// when another live code has this hash (the caller draws a new code).
    async fn put_link_code(
        &self,
        user_ref: &UserRef,
        code_hash: &[u8],
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Links the bot user who asked for the code to the account `account` of
    /// the web bot `home_bot`, and deletes the code, in one transaction: a
    /// code links once. A code is live while `now` is before its expiry. An
    /// account of another bot is no account ([`RedeemOutcome::NoAccount`]).
    async fn redeem_link_code(
        &self,
        account: &UserRef,
        home_bot: &str,
        code_hash: &[u8],
        now: Millis,
    ) -> Result<RedeemOutcome, StoreError>;

    // ---- jobs ----

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

    /// Applies a state-machine transition if the job is in one of its source
    /// states; refunds in the same transaction when the job ends FAILED or CANCELLED.
    async fn transition(
        &self,
        id: &JobId,
        transition: Transition,
        change: &TransitionChange,
    ) -> Result<TransitionOutcome, StoreError>;

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
    /// `depth` jobs, [`Candidates::from_queue`] over the window less `E` is the
    /// candidates over the whole queue less `E`, for every worker whose
    /// capabilities and models are among the ranges. A dispatch pass reads one
    /// window with `depth` above its number of free workers and chooses for
    /// all of them in memory.
    async fn queue_window(
        &self,
        ranges: &[(Capability, String)],
        depth: u32,
    ) -> Result<Vec<QueuedJob<JobId>>, StoreError>;

    /// The queue policy's candidates for one worker (a window of depth 1).
    async fn candidates(
        &self,
        worker: &WorkerSlot,
    ) -> Result<Candidates<QueuedJob<JobId>>, StoreError> {
        let window = self.queue_window(&worker.ranges(), 1).await?;
        Ok(Candidates::from_queue(&window, &worker.view()).cloned())
    }

    /// Dispatches several chosen jobs, each to its worker (QUEUED → RUNNING,
    /// attempts + 1), in one transaction: one commit for a whole dispatch pass.
    /// Answers the jobs claimed; a job no longer QUEUED (another dispatcher
    /// took it, or it was cancelled) is left out.
    async fn claim_batch(
        &self,
        claims: &[(JobId, String)],
        now: Millis,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// Picks the job the policy chooses for this one worker and dispatches it to
    /// the worker (QUEUED → RUNNING, attempts + 1) through [`Store::claim_batch`].
    /// Two dispatchers racing for one job cannot both win: the claim is a
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

    /// Run times (ms) of the latest completed jobs of a capability, newest first.
    async fn recent_run_times(
        &self,
        capability: Capability,
        limit: u32,
    ) -> Result<Vec<Millis>, StoreError>;

    // ---- workers ----

    /// Records a heartbeat: the worker as it describes itself, seen at `now`.
    async fn record_heartbeat(
        &self,
        heartbeat: &tessera_api::internal::Heartbeat,
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

    /// Records progress of a running attempt; false if the attempt is no longer current.
    async fn set_progress(
        &self,
        id: &JobId,
        fence: &Fence,
        progress: f32,
    ) -> Result<bool, StoreError>;

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

    /// The artifacts of these jobs, by job and position.
    async fn artifacts_of(&self, jobs: &[JobId]) -> Result<Vec<ArtifactRecord>, StoreError>;

    async fn get_artifact(&self, id: &ArtifactId) -> Result<Option<ArtifactRecord>, StoreError>;

    async fn insert_input(&self, input: &InputRecord) -> Result<(), StoreError>;

    async fn get_input(&self, id: &InputId) -> Result<Option<InputRecord>, StoreError>;

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

    /// Tokens charged on a day to the user's billing user (the account it is
    /// linked to, or itself), which its quota shows (0 if none).
    async fn tokens_used(&self, user_ref: &UserRef, day: NaiveDate) -> Result<i64, StoreError>;

    /// Tokens charged on a day to the user with this id: the `usage_daily`
    /// row that jobs with this `user_id` were charged to and are refunded to.
    async fn tokens_charged(&self, user_id: i64, day: NaiveDate) -> Result<i64, StoreError>;
}
