//! PostgreSQL, the production backend: one pool for reads and transactions.
//!
//! Migrations take PostgreSQL's advisory lock, so replicas starting together apply
//! them once.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use tessera_core::fair;
use tessera_core::params::ValidJob;
use tessera_core::Priority;

use super::jobs::{fair_share_upsert, FairParams, NEW_JOB_COLUMNS, NEW_JOB_VALUES};
use super::rows::{JobRow, JOB_COLUMNS};
use super::{impl_store, NewJob, StoreError};
use crate::config::DatabaseConfig;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?
            .application_name("tessera-scheduler");
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }
}

impl PgStore {
    /// What goes before a statement to have its plan (for tools and tests).
    const EXPLAIN: &'static str = "EXPLAIN (COSTS OFF) ";

    /// The plan PostgreSQL answers for an `EXPLAIN` statement, line by line.
    async fn plan_lines(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<String>, StoreError> {
        use sqlx::Row;
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// Holds the ledger's lock on one grant (provider, reference) until the
    /// transaction ends. Applying an event reads the grant and writes what it
    /// computed, so two events of one grant applied at once must take turns:
    /// two first events would otherwise both insert it (a unique violation),
    /// and two later ones could each overwrite the other's update.
    async fn lock_grant(
        conn: &mut sqlx::PgConnection,
        provider: &str,
        reference: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 0))")
            .bind(provider)
            .bind(reference)
            .execute(conn)
            .await?;
        Ok(())
    }
}

impl PgStore {
    /// Reserves the tokens, takes the job's fair tag and inserts the job in
    /// one statement, which PostgreSQL runs atomically: when the conditional
    /// upsert reserves nothing, the share upsert and the insert select no row.
    /// One round trip, no BEGIN/COMMIT; `None` means over quota.
    async fn reserve_and_insert(
        &self,
        new: &NewJob,
        user_id: i64,
        user_ref: &str,
        priority: Priority,
        job: &ValidJob,
        limit: Option<i64>,
    ) -> Result<Option<JobRow>, sqlx::Error> {
        let share = fair_share_upsert(
            &FairParams {
                user_id: "$2",
                capability: "$6",
                priority: "$8",
                cost: "$22",
            },
            "FROM reserved",
        );
        let sql = format!(
            "WITH reserved AS ( \
               INSERT INTO usage_daily (user_id, day, tokens_used, jobs_created) \
               VALUES ($2, $13, $12, 1) \
               ON CONFLICT (user_id, day) DO UPDATE \
               SET tokens_used = usage_daily.tokens_used + excluded.tokens_used, \
                   jobs_created = usage_daily.jobs_created + 1 \
               WHERE $21::BIGINT IS NULL OR usage_daily.tokens_used + excluded.tokens_used <= $21 \
               RETURNING 1), \
             share AS ({share}) \
             INSERT INTO jobs ({NEW_JOB_COLUMNS}) \
             SELECT {NEW_JOB_VALUES}, share.finish_tag - $22 FROM share \
             RETURNING {JOB_COLUMNS}"
        );
        Self::bind_new_job(sqlx::query_as(&sql), new, user_id, user_ref, priority, job)
            .bind(limit)
            .bind(fair::cost(job.cost_tokens))
            .fetch_optional(&self.pool)
            .await
    }
}

impl_store!(PgStore, sqlx::Postgres, Backend::Postgres);
