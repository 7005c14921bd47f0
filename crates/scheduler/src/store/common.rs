//! SQL shared by both backends, written once.
//!
//! The schemas are equal column for column and every statement here is plain SQL
//! both databases accept (`$N` parameters, `RETURNING`, `ON CONFLICT`, row values),
//! so one text serves both. [`impl_store!`] instantiates the [`Store`](super::Store)
//! trait for a backend type that provides two pools: `writer()` for transactions
//! and `reader()` for reads (the same pool on PostgreSQL; on SQLite one writer
//! connection and several readers, which is how SQLite wants to be used).

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::types::Json;

use tessera_core::{Capability, JobState, Plan, Platform, Priority};

use super::{ApiKeyRecord, JobRecord, StoreError};

pub(crate) const JOB_COLUMNS: &str = "id, user_id, user_ref, frontend, bot_id, capability, model, \
    priority, status, params, reply_context, cost_tokens, billing_day, refunded, attempts, \
    worker_id, progress, error_code, error_message, created_at, queued_at, started_at, ended_at, \
    delivered_at, request_id";

pub(crate) const PLAN_COLUMNS: &str =
    "p.id, p.name, p.daily_tokens, p.priority, p.max_resolution, p.allowed_models, p.price_cents";

/// The id of a user's billing user, for a row `u` of `users`: the account
/// it is linked to, or itself. Its plan applies and its `usage_daily` rows
/// are charged; this expression is the one place that rule is written.
pub(crate) const BILLING_USER: &str = "COALESCE(u.account_id, u.id)";

/// Selects an account (`a`, a user with an email and a password) with one row
/// per linked user (`l`, none: one row with NULL): one statement, so the
/// account and its links are read from one snapshot. Append the condition.
pub(crate) const ACCOUNT_SELECT: &str = "SELECT a.id, a.user_ref, a.home_bot, a.email, \
    a.created_at, a.password_hash, l.user_ref FROM users a \
    LEFT JOIN users l ON l.account_id = a.id \
    WHERE a.email IS NOT NULL AND a.password_hash IS NOT NULL AND ";

/// A row of [`ACCOUNT_SELECT`].
pub(crate) type AccountJoinRow = (i64, String, String, String, i64, String, Option<String>);

/// The account in rows of [`ACCOUNT_SELECT`], and its password hash; `None`
/// for no rows. Linked users are sorted here, byte-wise, so both databases
/// give the same order whatever their collation.
pub(crate) fn account_from(rows: Vec<AccountJoinRow>) -> Option<(super::AccountRecord, String)> {
    let mut rows = rows.into_iter();
    let (user_id, user_ref, home_bot, email, created_at, hash, first) = rows.next()?;
    let mut linked: Vec<String> = first.into_iter().chain(rows.filter_map(|r| r.6)).collect();
    linked.sort();
    Some((
        super::AccountRecord {
            user_id,
            user_ref,
            home_bot,
            email,
            linked,
            created_at,
        },
        hash,
    ))
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    user_id: i64,
    user_ref: String,
    frontend: String,
    bot_id: String,
    capability: String,
    model: String,
    priority: i32,
    status: String,
    params: Json<Value>,
    reply_context: Option<Json<Value>>,
    cost_tokens: i64,
    billing_day: NaiveDate,
    refunded: bool,
    attempts: i32,
    worker_id: Option<String>,
    progress: Option<f32>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: i64,
    queued_at: Option<i64>,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    delivered_at: Option<i64>,
    request_id: Option<String>,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        Ok(JobRecord {
            id: r.id.parse().map_err(|_| corrupt("job id", &r.id))?,
            user_id: r.user_id,
            user_ref: r.user_ref,
            frontend: r
                .frontend
                .parse()
                .map_err(|_| corrupt("frontend", &r.frontend))?,
            bot_id: r.bot_id,
            capability: r
                .capability
                .parse()
                .map_err(|_| corrupt("capability", &r.capability))?,
            model: r.model,
            priority: Priority(
                u8::try_from(r.priority)
                    .map_err(|_| corrupt("priority", &r.priority.to_string()))?,
            ),
            status: r.status.parse().map_err(|_| corrupt("status", &r.status))?,
            params: r.params.0,
            reply_context: r.reply_context.map(|j| j.0),
            cost_tokens: r.cost_tokens,
            billing_day: r.billing_day,
            refunded: r.refunded,
            attempts: r.attempts,
            worker_id: r.worker_id,
            progress: r.progress,
            error_code: r.error_code,
            error_message: r.error_message,
            created_at: r.created_at,
            queued_at: r.queued_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            delivered_at: r.delivered_at,
            request_id: r.request_id,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PlanRow {
    id: String,
    name: String,
    daily_tokens: Option<i64>,
    priority: i32,
    max_resolution: i32,
    allowed_models: Json<Vec<String>>,
    price_cents: i64,
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;

    fn try_from(r: PlanRow) -> Result<Self, StoreError> {
        Ok(Plan {
            priority: Priority(
                u8::try_from(r.priority).map_err(|_| corrupt("plan priority", &r.id))?,
            ),
            max_resolution: u32::try_from(r.max_resolution)
                .map_err(|_| corrupt("plan max_resolution", &r.id))?,
            id: r.id,
            name: r.name,
            daily_tokens: r.daily_tokens,
            allowed_models: r.allowed_models.0,
            price_cents: r.price_cents,
        })
    }
}

pub(crate) const WORKER_COLUMNS: &str =
    "id, address, status, capabilities, models, loaded_models, \
    current_job, gpu_name, gpu_memory_used, gpu_memory_total, gpu_utilization, first_seen_at, \
    last_seen_at";

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
}

impl TryFrom<WorkerRow> for super::WorkerRecord {
    type Error = StoreError;

    fn try_from(r: WorkerRow) -> Result<Self, StoreError> {
        use tessera_api::internal::{Heartbeat, WorkerStatus};
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
        Ok(super::WorkerRecord {
            heartbeat: Heartbeat {
                worker_id: r.id,
                status,
                address: r.address,
                capabilities: r.capabilities.0,
                models: r.models.0,
                loaded_models: r.loaded_models.0,
                current_job,
                gpu_name: r.gpu_name,
                gpu_memory_used: r.gpu_memory_used.map(|v| v.max(0) as u64),
                gpu_memory_total: r.gpu_memory_total.map(|v| v.max(0) as u64),
                gpu_utilization: r.gpu_utilization,
            },
            first_seen_at: r.first_seen_at,
            last_seen_at: r.last_seen_at,
        })
    }
}

/// A job and the hash of the request that created it.
#[derive(sqlx::FromRow)]
pub(crate) struct ReplayRow {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub request_hash: Option<Vec<u8>>,
}

/// A user joined with their billing user's plan.
#[derive(sqlx::FromRow)]
pub(crate) struct UserPlanRow {
    /// The billing user's id.
    pub user_id: i64,
    /// The user's own `home_bot` (set for website accounts only).
    pub home_bot: Option<String>,
    #[sqlx(flatten)]
    pub plan: PlanRow,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: String,
    frontend: String,
    bot_id: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;

    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKeyRecord {
            id: r.id.parse().map_err(|_| corrupt("key id", &r.id))?,
            frontend: r
                .frontend
                .parse::<Platform>()
                .map_err(|_| corrupt("frontend", &r.frontend))?,
            bot_id: r.bot_id,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

pub(crate) const ARTIFACT_COLUMNS: &str = "a.id, a.job_id, j.frontend, j.bot_id, a.type, \
    a.storage_key, a.format, a.width, a.height, a.file_size, a.position, a.created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct ArtifactRow {
    id: String,
    job_id: String,
    frontend: String,
    bot_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    storage_key: String,
    format: String,
    width: Option<i32>,
    height: Option<i32>,
    file_size: i64,
    position: i32,
    created_at: i64,
}

impl TryFrom<ArtifactRow> for super::ArtifactRecord {
    type Error = StoreError;

    fn try_from(r: ArtifactRow) -> Result<Self, StoreError> {
        Ok(super::ArtifactRecord {
            id: r.id.parse().map_err(|_| corrupt("artifact id", &r.id))?,
            job_id: r.job_id.parse().map_err(|_| corrupt("job id", &r.job_id))?,
            frontend: r
                .frontend
                .parse::<Platform>()
                .map_err(|_| corrupt("frontend", &r.frontend))?,
            bot_id: r.bot_id,
            kind: tessera_api::internal::ArtifactKind::parse(&r.kind)
                .ok_or_else(|| corrupt("artifact type", &r.kind))?,
            storage_key: r.storage_key,
            format: r.format,
            width: r.width.and_then(|w| u32::try_from(w).ok()),
            height: r.height.and_then(|h| u32::try_from(h).ok()),
            file_size: u64::try_from(r.file_size).unwrap_or_default(),
            position: u32::try_from(r.position).unwrap_or_default(),
            created_at: r.created_at,
        })
    }
}

/// Columns of a new job, in the order [`bind_new_job`](impl_store) binds them.
pub(crate) const NEW_JOB_COLUMNS: &str = "id, user_id, user_ref, frontend, bot_id, capability, \
    model, priority, status, params, reply_context, cost_tokens, billing_day, idempotency_key, \
    request_hash, created_at, queued_at, request_id";

/// `$1..$17` for [`NEW_JOB_COLUMNS`] (queued_at repeats created_at).
pub(crate) const NEW_JOB_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17";

/// How many (capability, model) ranges one queue-window statement reads:
/// four `UNION ALL` members each, well inside SQLite's compound-select limit.
pub(crate) const WINDOW_RANGES_PER_STATEMENT: usize = 25;

pub(crate) fn status_list(states: &[JobState]) -> Vec<&'static str> {
    states.iter().map(|s| s.as_str()).collect()
}

pub(crate) fn capability_str(c: Capability) -> &'static str {
    c.as_str()
}

/// Implements [`Store`](super::Store) for a backend with `writer()` and `reader()` pools.
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> $crate::store::Backend {
                $backend
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn close(&self) {
                self.writer().close().await;
                self.reader().close().await;
            }

            fn pool_stats(&self) -> $crate::store::PoolStats {
                let stats = |pool: &sqlx::Pool<$db>| $crate::store::PoolStats {
                    size: pool.size(),
                    idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                    max: pool.options().get_max_connections(),
                };
                let writer = stats(self.writer());
                if std::ptr::eq(self.writer(), self.reader()) {
                    return writer;
                }
                let reader = stats(self.reader());
                $crate::store::PoolStats {
                    size: writer.size + reader.size,
                    idle: writer.idle + reader.idle,
                    max: writer.max + reader.max,
                }
            }

            async fn gauges(
                &self,
            ) -> Result<$crate::store::StoreGauges, $crate::store::StoreError> {
                let corrupt = |c: &str| {
                    $crate::store::StoreError::Corrupt(format!("capability {c:?}"))
                };
                let live: Vec<(String, String, i32, i64)> = sqlx::query_as(
                    "SELECT status, capability, priority, COUNT(*) FROM jobs \
                     WHERE status IN ('QUEUED', 'RUNNING') \
                     GROUP BY status, capability, priority",
                )
                .fetch_all(self.reader())
                .await?;
                let mut gauges = $crate::store::StoreGauges::default();
                for (status, capability, priority, jobs) in live {
                    let capability: tessera_core::Capability =
                        capability.parse().map_err(|_| corrupt(&capability))?;
                    if status == "QUEUED" {
                        let priority = tessera_core::Priority(priority.clamp(0, 255) as u8);
                        gauges.queued.push((capability, priority, jobs));
                    } else {
                        match gauges.running.iter_mut().find(|(c, _)| *c == capability) {
                            Some((_, n)) => *n += jobs,
                            None => gauges.running.push((capability, jobs)),
                        }
                    }
                }
                // Billing users only (accounts and unlinked users): a person's
                // linked bot users share the account's plan and are counted
                // with it, once, as the plan's revenue is.
                gauges.users_per_plan = sqlx::query_as(
                    "SELECT plan_id, COUNT(*) FROM users WHERE account_id IS NULL \
                     GROUP BY plan_id ORDER BY plan_id",
                )
                .fetch_all(self.reader())
                .await?;
                Ok(gauges)
            }

            async fn insert_api_key(
                &self,
                frontend: tessera_core::Platform,
                bot_id: &str,
                secret_hash: &[u8],
                now: tessera_core::Millis,
            ) -> Result<$crate::store::ApiKeyRecord, $crate::store::StoreError> {
                let id = tessera_core::ApiKeyId::generate();
                let row: $crate::store::common::ApiKeyRow = sqlx::query_as(
                    "INSERT INTO api_keys (id, frontend, bot_id, secret_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     RETURNING id, frontend, bot_id, created_at, revoked_at",
                )
                .bind(id.as_str())
                .bind(frontend.as_str())
                .bind(bot_id)
                .bind(secret_hash)
                .bind(now)
                .fetch_one(self.writer())
                .await?;
                row.try_into()
            }

            async fn find_api_key(
                &self,
                secret_hash: &[u8],
            ) -> Result<Option<$crate::store::ApiKeyRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::common::ApiKeyRow> = sqlx::query_as(
                    "SELECT id, frontend, bot_id, created_at, revoked_at FROM api_keys \
                     WHERE secret_hash = $1 AND revoked_at IS NULL",
                )
                .bind(secret_hash)
                .fetch_optional(self.reader())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_api_keys(
                &self,
            ) -> Result<Vec<$crate::store::ApiKeyRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::common::ApiKeyRow> = sqlx::query_as(
                    "SELECT id, frontend, bot_id, created_at, revoked_at FROM api_keys ORDER BY id",
                )
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn revoke_api_key(
                &self,
                id: &tessera_core::ApiKeyId,
                now: tessera_core::Millis,
            ) -> Result<Option<$crate::store::ApiKeyRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::common::ApiKeyRow> = sqlx::query_as(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                     RETURNING id, frontend, bot_id, created_at, revoked_at",
                )
                .bind(id.as_str())
                .bind(now)
                .fetch_optional(self.writer())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn plans(&self) -> Result<Vec<tessera_core::Plan>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::common::PlanRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM plans p ORDER BY p.priority, p.id",
                    $crate::store::common::PLAN_COLUMNS
                ))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn quota(
                &self,
                user_ref: &tessera_core::UserRef,
                day: chrono::NaiveDate,
            ) -> Result<Option<$crate::store::QuotaRecord>, $crate::store::StoreError> {
                let mut conn = self.reader().acquire().await?;
                Self::quota_on(&mut conn, user_ref, day).await
            }

            async fn set_plan(
                &self,
                user_ref: &tessera_core::UserRef,
                plan_id: &str,
                day: chrono::NaiveDate,
                now: tessera_core::Millis,
            ) -> Result<Option<$crate::store::QuotaRecord>, $crate::store::StoreError> {
                let mut tx = self.writer().begin().await?;
                let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM plans WHERE id = $1")
                    .bind(plan_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Ok(None);
                }
                sqlx::query(
                    "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                )
                .bind(user_ref.to_string())
                .bind(user_ref.platform().as_str())
                .bind(user_ref.platform_user_id())
                .bind(plan_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                // The plan that applies to a linked user is its account's.
                sqlx::query(&format!(
                    "UPDATE users SET plan_id = $1 WHERE id = \
                     (SELECT {} FROM users u WHERE u.user_ref = $2)",
                    $crate::store::common::BILLING_USER
                ))
                .bind(plan_id)
                .bind(user_ref.to_string())
                .execute(&mut *tx)
                .await?;
                let quota = Self::quota_on(&mut tx, user_ref, day).await?;
                tx.commit().await?;
                Ok(quota)
            }

            async fn create_account(
                &self,
                user_ref: &tessera_core::UserRef,
                home_bot: &str,
                email: &str,
                password_hash: &str,
                now: tessera_core::Millis,
            ) -> Result<Option<$crate::store::AccountRecord>, $crate::store::StoreError> {
                // A taken email inserts nothing; the user_ref is new (the
                // caller draws it), so any other conflict is an error.
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, email, \
                     password_hash, home_bot, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (email) DO NOTHING RETURNING id, created_at",
                )
                .bind(user_ref.to_string())
                .bind(user_ref.platform().as_str())
                .bind(user_ref.platform_user_id())
                .bind(tessera_core::Plan::DEFAULT_ID)
                .bind(email)
                .bind(password_hash)
                .bind(home_bot)
                .bind(now)
                .fetch_optional(self.writer())
                .await?;
                Ok(row.map(|(user_id, created_at)| $crate::store::AccountRecord {
                    user_id,
                    user_ref: user_ref.to_string(),
                    home_bot: home_bot.to_owned(),
                    email: email.to_owned(),
                    linked: Vec::new(),
                    created_at,
                }))
            }

            async fn account_by_email(
                &self,
                email: &str,
            ) -> Result<Option<($crate::store::AccountRecord, String)>, $crate::store::StoreError>
            {
                let mut conn = self.reader().acquire().await?;
                Self::account_on(&mut conn, "a.email", email).await
            }

            async fn get_account(
                &self,
                user_ref: &tessera_core::UserRef,
            ) -> Result<Option<$crate::store::AccountRecord>, $crate::store::StoreError> {
                let mut conn = self.reader().acquire().await?;
                let found = Self::account_on(&mut conn, "a.user_ref", &user_ref.to_string()).await?;
                Ok(found.map(|(account, _)| account))
            }

            async fn put_link_code(
                &self,
                user_ref: &tessera_core::UserRef,
                code_hash: &[u8],
                expires_at: tessera_core::Millis,
                now: tessera_core::Millis,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.writer().begin().await?;
                sqlx::query(
                    "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                )
                .bind(user_ref.to_string())
                .bind(user_ref.platform().as_str())
                .bind(user_ref.platform_user_id())
                .bind(tessera_core::Plan::DEFAULT_ID)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let (user_id,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE user_ref = $1")
                    .bind(user_ref.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
                // The user's earlier code, and everyone's expired ones.
                sqlx::query("DELETE FROM link_codes WHERE user_id = $1 OR expires_at <= $2")
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                // A live code with the same hash (or a code this user got
                // from a request committed meanwhile) inserts nothing.
                let inserted = sqlx::query(
                    "INSERT INTO link_codes (code_hash, user_id, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(code_hash)
                .bind(user_id)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn redeem_link_code(
                &self,
                account: &tessera_core::UserRef,
                home_bot: &str,
                code_hash: &[u8],
                now: tessera_core::Millis,
            ) -> Result<$crate::store::RedeemOutcome, $crate::store::StoreError> {
                use $crate::store::RedeemOutcome;
                let account_ref = account.to_string();
                let mut tx = self.writer().begin().await?;
                // Another bot's account is no account: its code stays unused.
                let found: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM users WHERE user_ref = $1 AND home_bot = $2 \
                     AND email IS NOT NULL AND password_hash IS NOT NULL",
                )
                .bind(&account_ref)
                .bind(home_bot)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((account_id,)) = found else {
                    tx.rollback().await?;
                    return Ok(RedeemOutcome::NoAccount);
                };
                // Deleting the code is what makes it single use: of two
                // redeems racing for it, one deletes it and the other finds
                // nothing.
                let code: Option<(i64, i64)> = sqlx::query_as(
                    "DELETE FROM link_codes WHERE code_hash = $1 RETURNING user_id, expires_at",
                )
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let user_id = match code {
                    None => {
                        tx.rollback().await?;
                        return Ok(RedeemOutcome::InvalidCode);
                    }
                    Some((_, expires_at)) if expires_at <= now => {
                        // Expired: gone now, and still no link.
                        tx.commit().await?;
                        return Ok(RedeemOutcome::InvalidCode);
                    }
                    Some((user_id, _)) => user_id,
                };
                // Links are one hop: only bot users are linked, only to accounts.
                let linked = sqlx::query(
                    "UPDATE users SET account_id = $1 WHERE id = $2 AND platform <> 'web'",
                )
                .bind(account_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                if linked.rows_affected() == 0 {
                    tx.commit().await?;
                    return Ok(RedeemOutcome::InvalidCode);
                }
                // A bot user who paid for a plan keeps it: the account takes
                // the better of its own plan and the bot user's (never a worse one).
                sqlx::query(
                    "UPDATE users SET plan_id = (SELECT b.plan_id FROM users b WHERE b.id = $2) \
                     WHERE id = $1 \
                     AND (SELECT p.priority FROM plans p JOIN users b ON b.plan_id = p.id WHERE b.id = $2) \
                       > (SELECT p.priority FROM plans p WHERE p.id = users.plan_id)",
                )
                .bind(account_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                let view = Self::account_on(&mut tx, "a.user_ref", &account_ref).await?;
                tx.commit().await?;
                match view {
                    Some((account, _)) => Ok(RedeemOutcome::Linked(account)),
                    None => Err($crate::store::StoreError::Corrupt(format!(
                        "account {account_ref} vanished"
                    ))),
                }
            }

            async fn create_job(
                &self,
                new: &$crate::store::NewJob,
                validate: $crate::store::Validator<'_>,
            ) -> Result<$crate::store::CreateOutcome, $crate::store::StoreError> {
                use $crate::store::CreateOutcome;
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
                    self.reserve_and_insert(new, user_id, &user_ref, plan.priority, &job, limit).await
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
                        Ok(CreateOutcome::QuotaExhausted { plan, used, cost: job.cost_tokens })
                    }
                    // A concurrent retry with the same key won the race: this attempt
                    // (and its reservation) rolled back; answer with the first job.
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() && new.idempotency.is_some() => {
                        let idem = new.idempotency.as_ref().expect("checked above");
                        match self.replay(new, idem).await? {
                            Some(outcome) => Ok(outcome),
                            None => Err($crate::store::StoreError::Corrupt(
                                "idempotency key conflict without a job".into(),
                            )),
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }

            async fn get_job(
                &self,
                id: &tessera_core::JobId,
                frontend: Option<tessera_core::Platform>,
            ) -> Result<Option<$crate::store::JobRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::common::JobRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM jobs WHERE id = $1 AND ($2 IS NULL OR frontend = $2)",
                    $crate::store::common::JOB_COLUMNS
                ))
                .bind(id.as_str())
                .bind(frontend.map(|f| f.as_str()))
                .fetch_optional(self.reader())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_jobs(
                &self,
                f: &$crate::store::JobFilter,
            ) -> Result<Vec<$crate::store::JobRecord>, $crate::store::StoreError> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM jobs WHERE 1 = 1",
                    $crate::store::common::JOB_COLUMNS
                ));
                if let Some(frontend) = f.frontend {
                    qb.push(" AND frontend = ").push_bind(frontend.as_str());
                }
                if let Some(user_ref) = &f.user_ref {
                    qb.push(" AND user_ref = ").push_bind(user_ref.as_str());
                }
                if let Some(bot_id) = &f.bot_id {
                    qb.push(" AND bot_id = ").push_bind(bot_id.as_str());
                }
                if !f.statuses.is_empty() {
                    qb.push(" AND status IN (");
                    let mut sep = qb.separated(", ");
                    for s in $crate::store::common::status_list(&f.statuses) {
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
                qb.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(f.limit));
                let rows: Vec<$crate::store::common::JobRow> =
                    qb.build_query_as().fetch_all(self.reader()).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn transition(
                &self,
                id: &tessera_core::JobId,
                t: tessera_core::Transition,
                c: &$crate::store::TransitionChange,
            ) -> Result<$crate::store::TransitionOutcome, $crate::store::StoreError> {
                use $crate::store::TransitionOutcome;
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

            async fn queue_head(
                &self,
                capability: tessera_core::Capability,
                limit: u32,
            ) -> Result<
                Vec<tessera_core::policy::QueuedJob<tessera_core::JobId>>,
                $crate::store::StoreError,
            > {
                let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
                    "SELECT id, model, priority, queued_at FROM jobs \
                     WHERE status = 'QUEUED' AND capability = $1 \
                     ORDER BY priority DESC, queued_at, id LIMIT $2",
                )
                .bind($crate::store::common::capability_str(capability))
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(id, model, priority, queued_at)| {
                        Ok(tessera_core::policy::QueuedJob {
                            id: id.parse().map_err(|_| {
                                $crate::store::StoreError::Corrupt(format!("job id {id:?}"))
                            })?,
                            capability,
                            model,
                            priority: tessera_core::Priority(priority.clamp(0, 255) as u8),
                            queued_at,
                        })
                    })
                    .collect()
            }

            async fn queue_window(
                &self,
                ranges: &[(tessera_core::Capability, String)],
                depth: u32,
            ) -> Result<
                Vec<tessera_core::policy::QueuedJob<tessera_core::JobId>>,
                $crate::store::StoreError,
            > {
                let mut ranges = ranges.to_vec();
                ranges.sort_by(|a, b| {
                    ($crate::store::common::capability_str(a.0), &a.1)
                        .cmp(&($crate::store::common::capability_str(b.0), &b.1))
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
                for chunk in ranges.chunks($crate::store::common::WINDOW_RANGES_PER_STATEMENT) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("");
                    let mut first = true;
                    for (cap, model) in chunk {
                        for p in tessera_core::Priority::FREE.0..=tessera_core::Priority::ADMIN.0 {
                            if !first {
                                qb.push(" UNION ALL ");
                            }
                            first = false;
                            qb.push(
                                "SELECT * FROM (SELECT id, capability, model, priority, queued_at \
                                 FROM jobs WHERE status = 'QUEUED' AND capability = ",
                            );
                            qb.push_bind($crate::store::common::capability_str(*cap));
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
                        let corrupt = |what: String| $crate::store::StoreError::Corrupt(what);
                        window.push(tessera_core::policy::QueuedJob {
                            id: id.parse().map_err(|_| corrupt(format!("job id {id:?}")))?,
                            capability: capability
                                .parse()
                                .map_err(|_| corrupt(format!("capability {capability:?}")))?,
                            model,
                            priority: tessera_core::Priority(priority.clamp(0, 255) as u8),
                            queued_at,
                        });
                    }
                }
                Ok(window)
            }

            async fn claim_batch(
                &self,
                claims: &[(tessera_core::JobId, String)],
                now: tessera_core::Millis,
            ) -> Result<Vec<$crate::store::JobRecord>, $crate::store::StoreError> {
                let mut tx = self.writer().begin().await?;
                let mut claimed = Vec::with_capacity(claims.len());
                for (id, worker_id) in claims {
                    let change = $crate::store::TransitionChange {
                        now,
                        worker_id: Some(worker_id.clone()),
                        ..Default::default()
                    };
                    let dispatch = tessera_core::Transition::Dispatch;
                    if let Some(job) = Self::transition_in(&mut tx, id, dispatch, &change).await? {
                        claimed.push(job);
                    }
                }
                tx.commit().await?;
                Ok(claimed)
            }

            async fn recent_run_times(
                &self,
                capability: tessera_core::Capability,
                limit: u32,
            ) -> Result<Vec<tessera_core::Millis>, $crate::store::StoreError> {
                let rows: Vec<(Option<i64>,)> = sqlx::query_as(
                    "SELECT ended_at - started_at FROM jobs \
                     WHERE status = 'COMPLETED' AND capability = $1 AND started_at IS NOT NULL \
                     ORDER BY ended_at DESC LIMIT $2",
                )
                .bind($crate::store::common::capability_str(capability))
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                Ok(rows.into_iter().filter_map(|(ms,)| ms).collect())
            }

            async fn record_heartbeat(
                &self,
                hb: &tessera_api::internal::Heartbeat,
                now: tessera_core::Millis,
            ) -> Result<$crate::store::WorkerRecord, $crate::store::StoreError> {
                let mib = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                let row: $crate::store::common::WorkerRow = sqlx::query_as(&format!(
                    "INSERT INTO workers ({cols}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                     ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
                       status = excluded.status, capabilities = excluded.capabilities, \
                       models = excluded.models, loaded_models = excluded.loaded_models, \
                       current_job = excluded.current_job, gpu_name = excluded.gpu_name, \
                       gpu_memory_used = excluded.gpu_memory_used, \
                       gpu_memory_total = excluded.gpu_memory_total, \
                       gpu_utilization = excluded.gpu_utilization, \
                       last_seen_at = excluded.last_seen_at \
                     RETURNING {cols}",
                    cols = $crate::store::common::WORKER_COLUMNS
                ))
                .bind(&hb.worker_id)
                .bind(&hb.address)
                .bind(hb.status.as_str())
                .bind(sqlx::types::Json(&hb.capabilities))
                .bind(sqlx::types::Json(&hb.models))
                .bind(sqlx::types::Json(&hb.loaded_models))
                .bind(hb.current_job.as_ref().map(|j| j.as_str()))
                .bind(hb.gpu_name.as_deref())
                .bind(mib(hb.gpu_memory_used))
                .bind(mib(hb.gpu_memory_total))
                .bind(hb.gpu_utilization)
                .bind(now)
                .fetch_one(self.writer())
                .await?;
                row.try_into()
            }

            async fn list_workers(
                &self,
            ) -> Result<Vec<$crate::store::WorkerRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::common::WorkerRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM workers ORDER BY id",
                    $crate::store::common::WORKER_COLUMNS
                ))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn running_on_lost_workers(
                &self,
                cutoff: tessera_core::Millis,
            ) -> Result<Vec<$crate::store::JobRecord>, $crate::store::StoreError> {
                let cols = $crate::store::common::JOB_COLUMNS
                    .split(", ")
                    .map(|c| format!("j.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let rows: Vec<$crate::store::common::JobRow> = sqlx::query_as(&format!(
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
            ) -> Result<Vec<$crate::store::JobRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::common::JobRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM jobs WHERE status = 'RUNNING' ORDER BY started_at, id",
                    $crate::store::common::JOB_COLUMNS
                ))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn running_on_worker(
                &self,
                worker_id: &str,
            ) -> Result<Vec<$crate::store::JobRecord>, $crate::store::StoreError> {
                // An exact range of the partial index `jobs_running`.
                let rows: Vec<$crate::store::common::JobRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM jobs WHERE status = 'RUNNING' AND worker_id = $1 \
                     ORDER BY started_at, id",
                    $crate::store::common::JOB_COLUMNS
                ))
                .bind(worker_id)
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_progress(
                &self,
                id: &tessera_core::JobId,
                fence: &$crate::store::Fence,
                progress: f32,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE jobs SET progress = $1 WHERE id = $2 AND status = 'RUNNING' \
                     AND worker_id = $3 AND attempts = $4",
                )
                .bind(progress)
                .bind(id.as_str())
                .bind(&fence.worker_id)
                .bind(fence.attempt)
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn mark_delivered(
                &self,
                id: &tessera_core::JobId,
                frontend: tessera_core::Platform,
                bot_id: Option<&str>,
                now: tessera_core::Millis,
            ) -> Result<Option<$crate::store::JobRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::common::JobRow> = sqlx::query_as(&format!(
                    "UPDATE jobs SET delivered_at = COALESCE(delivered_at, $1) \
                     WHERE id = $2 AND frontend = $3 AND ($4 IS NULL OR bot_id = $4) \
                     AND status IN ('COMPLETED', 'FAILED', 'CANCELLED') RETURNING {}",
                    $crate::store::common::JOB_COLUMNS
                ))
                .bind(now)
                .bind(id.as_str())
                .bind(frontend.as_str())
                .bind(bot_id)
                .fetch_optional(self.writer())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn artifacts_of(
                &self,
                jobs: &[tessera_core::JobId],
            ) -> Result<Vec<$crate::store::ArtifactRecord>, $crate::store::StoreError> {
                if jobs.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM artifacts a JOIN jobs j ON j.id = a.job_id WHERE a.job_id IN (",
                    $crate::store::common::ARTIFACT_COLUMNS
                ));
                let mut list = qb.separated(", ");
                for job in jobs {
                    list.push_bind(job.as_str());
                }
                qb.push(") ORDER BY a.job_id, a.position");
                let rows: Vec<$crate::store::common::ArtifactRow> =
                    qb.build_query_as().fetch_all(self.reader()).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn get_artifact(
                &self,
                id: &tessera_core::ArtifactId,
            ) -> Result<Option<$crate::store::ArtifactRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::common::ArtifactRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM artifacts a JOIN jobs j ON j.id = a.job_id WHERE a.id = $1",
                    $crate::store::common::ARTIFACT_COLUMNS
                ))
                .bind(id.as_str())
                .fetch_optional(self.reader())
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn insert_input(
                &self,
                input: &$crate::store::InputRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO inputs (id, frontend, bot_id, content_type, size, storage_key, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(input.id.as_str())
                .bind(input.frontend.as_str())
                .bind(&input.bot_id)
                .bind(&input.content_type)
                .bind(i64::try_from(input.size).unwrap_or(i64::MAX))
                .bind(&input.storage_key)
                .bind(input.created_at)
                .execute(self.writer())
                .await?;
                Ok(())
            }

            async fn get_input(
                &self,
                id: &tessera_core::InputId,
            ) -> Result<Option<$crate::store::InputRecord>, $crate::store::StoreError> {
                let row: Option<(String, String, String, String, i64, String, i64)> =
                    sqlx::query_as(
                        "SELECT id, frontend, bot_id, content_type, size, storage_key, created_at \
                         FROM inputs WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.map(|(id, frontend, bot_id, content_type, size, storage_key, created_at)| {
                    Ok($crate::store::InputRecord {
                        id: id.parse().map_err(|_| {
                            $crate::store::StoreError::Corrupt(format!("input id {id:?}"))
                        })?,
                        frontend: frontend.parse().map_err(|_| {
                            $crate::store::StoreError::Corrupt(format!("frontend {frontend:?}"))
                        })?,
                        bot_id,
                        content_type,
                        size: u64::try_from(size).unwrap_or_default(),
                        storage_key,
                        created_at,
                    })
                })
                .transpose()
            }

            async fn queued_groups(
                &self,
            ) -> Result<Vec<$crate::store::QueueGroup>, $crate::store::StoreError> {
                let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                    "SELECT capability, model, COUNT(*), MIN(queued_at) FROM jobs \
                     WHERE status = 'QUEUED' GROUP BY capability, model ORDER BY capability, model",
                )
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(capability, model, jobs, oldest)| {
                        Ok($crate::store::QueueGroup {
                            capability: capability.parse().map_err(|_| {
                                $crate::store::StoreError::Corrupt(format!(
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
                capability: tessera_core::Capability,
                model: &str,
                before: tessera_core::Millis,
                limit: u32,
            ) -> Result<Vec<tessera_core::JobId>, $crate::store::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT id FROM jobs WHERE status = 'QUEUED' AND capability = $1 \
                     AND model = $2 AND queued_at < $3 ORDER BY priority DESC, queued_at, id \
                     LIMIT $4",
                )
                .bind($crate::store::common::capability_str(capability))
                .bind(model)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(id,)| {
                        id.parse().map_err(|_| {
                            $crate::store::StoreError::Corrupt(format!("job id {id:?}"))
                        })
                    })
                    .collect()
            }

            async fn tokens_used(
                &self,
                user_ref: &tessera_core::UserRef,
                day: chrono::NaiveDate,
            ) -> Result<i64, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(&format!(
                    "SELECT d.tokens_used FROM users u JOIN usage_daily d ON d.user_id = {} \
                     WHERE u.user_ref = $1 AND d.day = $2",
                    $crate::store::common::BILLING_USER
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
                day: chrono::NaiveDate,
            ) -> Result<i64, $crate::store::StoreError> {
                let mut conn = self.reader().acquire().await?;
                Self::used_on(&mut conn, user_id, day).await
            }
        }

        impl $store {
            /// Applies a transition inside `tx`: the conditional update, the
            /// artifacts of a completion and the refund of a bad end. `None`
            /// when the job is not in one of the transition's source states
            /// (or not the frontend's, or not the fenced attempt).
            async fn transition_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: &tessera_core::JobId,
                t: tessera_core::Transition,
                c: &$crate::store::TransitionChange,
            ) -> Result<Option<$crate::store::JobRecord>, $crate::store::StoreError> {
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
                            .push_bind(c.worker_id.clone());
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
                        qb.push(", refunded = (cost_tokens > 0)");
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
                    qb.push(" AND bot_id = ").push_bind(bot_id.clone());
                }
                if let Some(fence) = &c.fence {
                    qb.push(" AND worker_id = ").push_bind(fence.worker_id.clone());
                    qb.push(" AND attempts = ").push_bind(fence.attempt);
                }
                qb.push(" RETURNING ").push($crate::store::common::JOB_COLUMNS);

                let row: Option<$crate::store::common::JobRow> =
                    qb.build_query_as().fetch_optional(&mut **tx).await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let job: $crate::store::JobRecord = row.try_into()?;
                if t == T::Complete {
                    for a in &c.artifacts {
                        sqlx::query(
                            "INSERT INTO artifacts (id, job_id, type, storage_key, format, width, \
                             height, file_size, position, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
                        .execute(&mut **tx)
                        .await?;
                    }
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


            /// Binds a new job's values as `$1..$17` of [`NEW_JOB_VALUES`].
            fn bind_new_job<'q, O>(
                q: sqlx::query::QueryAs<'q, $db, O, <$db as sqlx::Database>::Arguments<'q>>,
                new: &'q $crate::store::NewJob,
                user_id: i64,
                user_ref: &'q str,
                priority: tessera_core::Priority,
                job: &'q tessera_core::params::ValidJob,
            ) -> sqlx::query::QueryAs<'q, $db, O, <$db as sqlx::Database>::Arguments<'q>> {
                q.bind(new.id.as_str())
                    .bind(user_id)
                    .bind(user_ref)
                    .bind(new.frontend.as_str())
                    .bind(&new.bot_id)
                    .bind($crate::store::common::capability_str(new.capability))
                    .bind(&job.model)
                    .bind(i32::from(priority.0))
                    .bind(tessera_core::Transition::Enqueue.to().as_str())
                    .bind(sqlx::types::Json(job.params.to_value()))
                    .bind(new.reply_context.as_ref().map(sqlx::types::Json))
                    .bind(job.cost_tokens)
                    .bind(new.day)
                    .bind(new.idempotency.as_ref().map(|i| i.key.as_str()))
                    .bind(new.idempotency.as_ref().map(|i| i.request_hash.as_slice()))
                    .bind(new.now)
                    .bind(new.request_id.as_deref())
            }

            /// The job an idempotency key already created, if any.
            async fn replay(
                &self,
                new: &$crate::store::NewJob,
                idem: &$crate::store::Idempotency,
            ) -> Result<Option<$crate::store::CreateOutcome>, $crate::store::StoreError> {
                let row: Option<$crate::store::common::ReplayRow> = sqlx::query_as(&format!(
                    "SELECT {}, request_hash FROM jobs \
                     WHERE frontend = $1 AND bot_id = $2 AND idempotency_key = $3",
                    $crate::store::common::JOB_COLUMNS
                ))
                .bind(new.frontend.as_str())
                .bind(&new.bot_id)
                .bind(&idem.key)
                .fetch_optional(self.writer())
                .await?;
                row.map(|r| {
                    if r.request_hash.as_deref() == Some(idem.request_hash.as_slice()) {
                        r.job.try_into().map($crate::store::CreateOutcome::Replayed)
                    } else {
                        Ok($crate::store::CreateOutcome::IdempotencyConflict)
                    }
                })
                .transpose()
            }

            /// The user's billing user (the account it is linked to, or
            /// itself) and that user's plan, if the user exists: what a job
            /// of the user is charged to and validated against; and the
            /// user's home bot, if it is a website account.
            async fn find_user_plan(
                conn: &mut <$db as sqlx::Database>::Connection,
                user_ref: &str,
            ) -> Result<Option<$crate::store::common::UserPlanRow>, $crate::store::StoreError> {
                Ok(sqlx::query_as(&format!(
                    "SELECT b.id AS user_id, u.home_bot, {} FROM users u \
                     JOIN users b ON b.id = {} \
                     JOIN plans p ON p.id = b.plan_id \
                     WHERE u.user_ref = $1",
                    $crate::store::common::PLAN_COLUMNS,
                    $crate::store::common::BILLING_USER
                ))
                .bind(user_ref)
                .fetch_optional(&mut *conn)
                .await?)
            }

            /// The user (created on first sight, on the default plan): their
            /// billing user's id and plan, and their home bot.
            async fn user_plan(
                conn: &mut <$db as sqlx::Database>::Connection,
                user: &tessera_core::UserRef,
                user_ref: &str,
                now: tessera_core::Millis,
            ) -> Result<(i64, tessera_core::Plan, Option<String>), $crate::store::StoreError> {
                let row = match Self::find_user_plan(conn, user_ref).await? {
                    Some(row) => row,
                    None => {
                        sqlx::query(
                            "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                        )
                        .bind(user_ref)
                        .bind(user.platform().as_str())
                        .bind(user.platform_user_id())
                        .bind(tessera_core::Plan::DEFAULT_ID)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Self::find_user_plan(conn, user_ref).await?.ok_or_else(|| {
                            $crate::store::StoreError::Corrupt(format!("user {user_ref} vanished"))
                        })?
                    }
                };
                Ok((row.user_id, row.plan.try_into()?, row.home_bot))
            }

            /// The account whose `column` (`a.email` or `a.user_ref`) is
            /// `value`, with its linked users and its password hash.
            async fn account_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                column: &'static str,
                value: &str,
            ) -> Result<Option<($crate::store::AccountRecord, String)>, $crate::store::StoreError>
            {
                let rows: Vec<$crate::store::common::AccountJoinRow> = sqlx::query_as(&format!(
                    "{}{column} = $1",
                    $crate::store::common::ACCOUNT_SELECT
                ))
                .bind(value)
                .fetch_all(&mut *conn)
                .await?;
                Ok($crate::store::common::account_from(rows))
            }

            async fn used_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                user_id: i64,
                day: chrono::NaiveDate,
            ) -> Result<i64, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT tokens_used FROM usage_daily WHERE user_id = $1 AND day = $2",
                )
                .bind(user_id)
                .bind(day)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(row.map_or(0, |(t,)| t))
            }

            async fn quota_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                user_ref: &tessera_core::UserRef,
                day: chrono::NaiveDate,
            ) -> Result<Option<$crate::store::QuotaRecord>, $crate::store::StoreError> {
                let found = Self::find_user_plan(conn, &user_ref.to_string()).await?;
                let Some(row) = found else { return Ok(None) };
                let tokens_used = Self::used_on(conn, row.user_id, day).await?;
                Ok(Some($crate::store::QuotaRecord {
                    user_ref: user_ref.to_string(),
                    plan: row.plan.try_into()?,
                    tokens_used,
                    home_bot: row.home_bot,
                }))
            }
        }
    };
}

pub(crate) use impl_store;
