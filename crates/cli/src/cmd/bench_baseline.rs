//! The yardstick of `tessera bench --scenario lifecycle`: a raw queue loop on
//! the same database, run in the same process right after Tessera's.
//!
//! Completed lifecycles per second depend as much on the host (its cores, its
//! disk's flush time) as on Tessera, so figures from two machines cannot be
//! compared as they are. This loop is the least a job queue can do on the same
//! host and database: insert a row, claim it, mark it done, three commits as
//! Tessera's create, claim and result are, with no HTTP, no validation, no
//! worker and no artifact. Tessera's rate divided by this one is a ratio that
//! travels between hosts better than either figure alone.
//!
//! On PostgreSQL every client holds a connection of its own and claims with
//! `FOR UPDATE SKIP LOCKED`, the usual way to share a queue table. On SQLite,
//! which has one writer at a time, the clients share one writer connection, as
//! Tessera's SQLite store does, and claim without locks (there are none to
//! skip). Either way the loop works on a table of its own, created for the run
//! and dropped after it (in a scratch schema on PostgreSQL); Tessera's tables
//! are not touched.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor};

/// The payload every queued row carries: about the size of an image job's parameters.
const PAYLOAD: &str = r#"{"prompt": "a beautiful sunset over the sea", "resolution": "512x512", "model": "sdxl-1.0"}"#;

/// What the raw loop measured.
pub struct Baseline {
    /// Rows inserted, claimed and completed per second while measured.
    pub per_second: f64,
    pub completed: u64,
    pub errors: u64,
    /// How it was run, in a sentence for the report.
    pub how: String,
}

/// Runs the loop with `clients` concurrent clients on `database_url` (a
/// PostgreSQL or SQLite URL): `warmup` unmeasured, then `length` measured.
pub async fn run(
    database_url: &str,
    clients: usize,
    warmup: Duration,
    length: Duration,
) -> anyhow::Result<Baseline> {
    let clients = clients.max(1);
    if database_url.starts_with("sqlite") {
        sqlite(database_url, clients, warmup, length).await
    } else {
        postgres(database_url, clients, warmup, length).await
    }
}

/// Counts completions across clients; stops them.
#[derive(Clone, Default)]
struct Tally {
    completed: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Tally {
    /// Lets the clients run `warmup`, then counts what they complete in
    /// `length`; stops them and answers the rate and the count.
    async fn measure(&self, warmup: Duration, length: Duration) -> (f64, u64) {
        tokio::time::sleep(warmup).await;
        let (first, started) = (self.completed.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(length).await;
        let (last, elapsed) = (self.completed.load(Ordering::Relaxed), started.elapsed());
        self.stop.store(true, Ordering::Relaxed);
        let completed = last - first;
        (completed as f64 / elapsed.as_secs_f64(), completed)
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, e: &sqlx::Error) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("raw queue loop: {e}");
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn postgres(
    url: &str,
    clients: usize,
    warmup: Duration,
    length: Duration,
) -> anyhow::Result<Baseline> {
    let schema = format!("tessera_bench_baseline_{}", std::process::id());
    let table = format!("{schema}.queue");
    let mut admin = PgConnection::connect(url)
        .await
        .context("connecting for the raw queue loop")?;
    admin
        .execute(
            format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE;
                 CREATE SCHEMA {schema};
                 CREATE TABLE {table} (
                     id BIGSERIAL PRIMARY KEY,
                     status SMALLINT NOT NULL DEFAULT 0,
                     payload JSONB NOT NULL,
                     created_at BIGINT NOT NULL,
                     claimed_at BIGINT,
                     ended_at BIGINT
                 );
                 CREATE INDEX queue_queued ON {table} (id) WHERE status = 0;"
            )
            .as_str(),
        )
        .await
        .context("creating the raw queue loop's table")?;
    let tally = Tally::default();
    let insert = format!("INSERT INTO {table} (payload, created_at) VALUES ($1::jsonb, $2)");
    let claim = format!(
        "UPDATE {table} SET status = 1, claimed_at = $1 WHERE id = (
             SELECT id FROM {table} WHERE status = 0 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
         ) RETURNING id"
    );
    let complete = format!("UPDATE {table} SET status = 2, ended_at = $1 WHERE id = $2");
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut conn = PgConnection::connect(url).await?;
        let (tally, insert, claim, complete) = (
            tally.clone(),
            insert.clone(),
            claim.clone(),
            complete.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while tally.running() {
                let lifecycle = async {
                    sqlx::query(&insert)
                        .bind(PAYLOAD)
                        .bind(now_ms())
                        .execute(&mut conn)
                        .await?;
                    let claimed: Option<i64> = sqlx::query_scalar(&claim)
                        .bind(now_ms())
                        .fetch_optional(&mut conn)
                        .await?;
                    if let Some(id) = claimed {
                        sqlx::query(&complete)
                            .bind(now_ms())
                            .bind(id)
                            .execute(&mut conn)
                            .await?;
                    }
                    Ok::<_, sqlx::Error>(claimed.is_some())
                };
                match lifecycle.await {
                    Ok(true) => {
                        tally.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => tally.error(&e),
                }
            }
            conn.close().await
        }));
    }
    let (per_second, completed) = tally.measure(warmup, length).await;
    for task in tasks {
        task.await??;
    }
    admin
        .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await
        .context("dropping the raw queue loop's schema")?;
    admin.close().await?;
    Ok(Baseline {
        per_second,
        completed,
        errors: tally.errors.load(Ordering::Relaxed),
        how: format!(
            "{clients} clients, each on a connection of its own, loop over a table of their own \
             in a scratch schema of the same database (primary key, JSONB payload, a partial \
             index on queued rows): insert a row, claim the oldest queued one \
             (`UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)`), mark it done; three \
             autocommitted statements, as a lifecycle commits three times"
        ),
    })
}

async fn sqlite(
    url: &str,
    clients: usize,
    warmup: Duration,
    length: Duration,
) -> anyhow::Result<Baseline> {
    let table = "tessera_bench_baseline_queue";
    let options = SqliteConnectOptions::from_str(url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .context("opening the database for the raw queue loop")?;
    writer
        .execute(
            format!(
                "DROP TABLE IF EXISTS {table};
                 CREATE TABLE {table} (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     status INTEGER NOT NULL DEFAULT 0,
                     payload TEXT NOT NULL,
                     created_at INTEGER NOT NULL,
                     claimed_at INTEGER,
                     ended_at INTEGER
                 );
                 CREATE INDEX {table}_queued ON {table} (id) WHERE status = 0;"
            )
            .as_str(),
        )
        .await
        .context("creating the raw queue loop's table")?;
    let tally = Tally::default();
    let insert = format!("INSERT INTO {table} (payload, created_at) VALUES ($1, $2)");
    let claim = format!(
        "UPDATE {table} SET status = 1, claimed_at = $1 WHERE id = (
             SELECT id FROM {table} WHERE status = 0 ORDER BY id LIMIT 1
         ) RETURNING id"
    );
    let complete = format!("UPDATE {table} SET status = 2, ended_at = $1 WHERE id = $2");
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (writer, tally, insert, claim, complete) = (
            writer.clone(),
            tally.clone(),
            insert.clone(),
            claim.clone(),
            complete.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while tally.running() {
                let lifecycle = async {
                    sqlx::query(&insert)
                        .bind(PAYLOAD)
                        .bind(now_ms())
                        .execute(&writer)
                        .await?;
                    let claimed: Option<i64> = sqlx::query_scalar(&claim)
                        .bind(now_ms())
                        .fetch_optional(&writer)
                        .await?;
                    if let Some(id) = claimed {
                        sqlx::query(&complete)
                            .bind(now_ms())
                            .bind(id)
                            .execute(&writer)
                            .await?;
                    }
                    Ok::<_, sqlx::Error>(claimed.is_some())
                };
                match lifecycle.await {
                    Ok(true) => {
                        tally.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => tally.error(&e),
                }
            }
        }));
    }
    let (per_second, completed) = tally.measure(warmup, length).await;
    for task in tasks {
        task.await?;
    }
    writer
        .execute(format!("DROP TABLE {table}").as_str())
        .await
        .context("dropping the raw queue loop's table")?;
    writer.close().await;
    Ok(Baseline {
        per_second,
        completed,
        errors: tally.errors.load(Ordering::Relaxed),
        how: format!(
            "{clients} clients share one writer connection (SQLite writes one at a time; \
             Tessera's store does the same), WAL, synchronous=full, and loop over a table of \
             their own in the same database file (integer key, JSON payload as text, a partial \
             index on queued rows): insert a row, claim the oldest queued one \
             (`UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING id`; no locks to skip), \
             mark it done; three autocommitted statements, as a lifecycle commits three times"
        ),
    })
}
