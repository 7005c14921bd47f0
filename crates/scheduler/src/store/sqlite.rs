//! SQLite, the zero-setup embedded backend for one machine.
//!
//! SQLite allows one writer at a time. Rather than letting transactions collide
//! and retry on `SQLITE_BUSY`, the store keeps a single writer connection (every
//! transaction queues for it, in order) and a pool of read-only connections that
//! WAL mode lets read while the writer writes. The database must be a file: an
//! in-memory database would not be shared between the connections.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use tessera_core::fair;
use tessera_core::params::ValidJob;
use tessera_core::Priority;

use super::jobs::{fair_share_upsert, FairParams, NEW_JOB_COLUMNS, NEW_JOB_VALUES};
use super::rows::{capability_str, JobRow, JOB_COLUMNS};
use super::{impl_store, NewJob, StoreError};
use crate::config::{self, DatabaseConfig};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        if config.url.contains(":memory:") || config.url.contains("mode=memory") {
            return Err(StoreError::Config(
                "database.url: SQLite must be a file (sqlite://PATH), not in memory".into(),
            ));
        }
        let synchronous = match config.sqlite_synchronous {
            config::SqliteSynchronous::Full => SqliteSynchronous::Full,
            config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::from_str(&config.url)
            .map_err(|e| StoreError::Config(format!("database.url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(config.acquire_timeout_secs.max(1)));
        let acquire = Duration::from_secs(config.acquire_timeout_secs);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(acquire)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

impl SqliteStore {
    /// What goes before a statement to have its plan (for tools and tests).
    const EXPLAIN: &'static str = "EXPLAIN QUERY PLAN ";

    /// The plan SQLite answers for an `EXPLAIN QUERY PLAN` statement: each
    /// step's detail, in order.
    async fn plan_lines<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<Vec<String>, StoreError> {
        use sqlx::Row;
        let rows = query.fetch_all(&self.reader).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("detail"))
            .collect::<Result<_, _>>()?)
    }

    /// The ledger's lock on one grant: nothing to do, since every write
    /// transaction runs on the one writer connection, one at a time.
    async fn lock_grant(
        _conn: &mut sqlx::SqliteConnection,
        _provider: &str,
        _reference: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

impl SqliteStore {
    /// Reserves the tokens with a conditional upsert, takes the job's fair
    /// tag and inserts the job, in one transaction on the single writer
    /// connection; `None` means over quota.
    async fn reserve_and_insert(
        &self,
        new: &NewJob,
        user_id: i64,
        user_ref: &str,
        priority: Priority,
        job: &ValidJob,
        limit: Option<i64>,
    ) -> Result<Option<JobRow>, sqlx::Error> {
        let mut tx = self.writer.begin().await?;
        let reserved = sqlx::query(
            "INSERT INTO usage_daily (user_id, day, tokens_used, jobs_created) \
             VALUES ($1, $2, $3, 1) \
             ON CONFLICT (user_id, day) DO UPDATE \
             SET tokens_used = usage_daily.tokens_used + excluded.tokens_used, \
                 jobs_created = usage_daily.jobs_created + 1 \
             WHERE $4 IS NULL OR usage_daily.tokens_used + excluded.tokens_used <= $4",
        )
        .bind(user_id)
        .bind(new.day)
        .bind(job.cost_tokens)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() == 0 {
            return Ok(None);
        }
        let cost = fair::cost(job.cost_tokens);
        let share = fair_share_upsert(
            &FairParams {
                user_id: "$1",
                capability: "$2",
                priority: "$3",
                cost: "$4",
            },
            "",
        );
        let (finish,): (i64,) = sqlx::query_as(&share)
            .bind(user_id)
            .bind(capability_str(new.capability))
            .bind(i32::from(priority.0))
            .bind(cost)
            .fetch_one(&mut *tx)
            .await?;
        let sql = format!(
            "INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES ({NEW_JOB_VALUES}, $21) \
             RETURNING {JOB_COLUMNS}"
        );
        let row = Self::bind_new_job(sqlx::query_as(&sql), new, user_id, user_ref, priority, job)
            .bind(finish - cost)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(row))
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, Backend::Sqlite);
