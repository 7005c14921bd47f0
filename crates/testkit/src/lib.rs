//! Test harness: real databases and the real scheduler, on loopback.
//!
//! - [`TestDb`]: a fresh database per test. PostgreSQL databases are created in the
//!   throwaway server that `scripts/test` starts (its admin URL arrives in
//!   `TESSERA_TEST_DATABASE_URL`); SQLite databases are files in a temporary folder.
//! - [`TestApp`]: the scheduler started on `127.0.0.1:0` over such a database, with
//!   a random admin token and helpers to mint frontend keys.
//! - [`backend_tests!`]: runs each listed `async fn(Backend)` once per backend.
//! - [`standins`]: loopback stand-ins for the engine servers workers drive
//!   (ComfyUI, KoboldCPP, OpenAI-compatible servers, whisper.cpp), with failure
//!   injection and request records, for the worker's adapter tests; and for
//!   the Telegram Bot API and Discord (REST, gateway), with simulated users,
//!   for the chat frontends' tests.
//! - [`classifier`]: NudeNet's detector from the test virtualenv, and a
//!   ComfyUI that paints a picture it really scores, for output moderation.
//! - [`engines`]: real engines (llama.cpp's server, a speech-to-text server,
//!   espeak-ng) that `scripts/test` installs, started on loopback for a test.
//! - [`localstripe::LocalStripe`]: localstripe, a third-party stateful Stripe
//!   emulator with signed webhooks, started on loopback for a payment test.
//! - [`Replica`]: a further scheduler over a [`TestApp`]'s database, on its own
//!   runtime so that killing it ends everything it runs, as a crash does;
//!   [`proxy::Proxy`]: a round-robin TCP balancer to put workers and frontends
//!   behind several replicas.
//! - [`pg::PgServer`]: a PostgreSQL server of a test's own, to stop and start.
//! - [`sse::Events`]: a reader of a job's server-sent events.
//!
//! Nothing here mocks Tessera: tests drive the same server binary code over HTTP.

pub mod classifier;
pub mod engines;
pub mod invariants;
pub mod localstripe;
pub mod pg;
pub mod proxy;
pub mod sse;
pub mod standins;

use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;
use tempfile::TempDir;

use tessera_api::admin::CreateKeyRequest;
use tessera_api::Client;
use tessera_core::Platform;
use tessera_scheduler::config::SchedulerConfig;
use tessera_scheduler::store::{self, Inspect};
use tessera_scheduler::{Scheduler, SchedulerHandle};

/// Environment variable holding the admin URL of the test PostgreSQL server.
pub const PG_URL_VAR: &str = "TESSERA_TEST_DATABASE_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        init_tracing();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = format!("sqlite://{}/tessera.db", dir.path().display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
                    panic!(
                        "{PG_URL_VAR} is not set: run the suite with scripts/test, which starts \
                         a throwaway PostgreSQL, or point it at a server you own"
                    )
                });
                Self::postgres_in(&admin).await
            }
        }
    }

    /// A new database in the PostgreSQL server at `admin` (a URL allowed to
    /// create databases), for tests that run their own server.
    pub async fn postgres_in(admin: &str) -> TestDb {
        init_tracing();
        let name = format!("tessera_test_{:016x}", rand::rng().random::<u64>());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
            .await
            .expect("connecting to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("creating a test database");
        let mut url = url::Url::parse(admin).expect("admin URL");
        url.set_path(&name);
        TestDb {
            url: url.to_string(),
            _dir: None,
        }
    }

    /// Scheduler settings for this database, listening on a free loopback port.
    pub fn config(&self) -> SchedulerConfig {
        let mut config = SchedulerConfig::default();
        config.server.listen = "127.0.0.1:0".parse().expect("address");
        config.database.url = self.url.clone();
        config.database.max_connections = 8;
        config
    }

    /// Opens the store directly (migrations applied), with its [`Inspect`] reads.
    pub async fn store(&self) -> Arc<dyn Inspect> {
        store::connect_inspect(&self.config().database)
            .await
            .expect("opening the test store")
    }
}

/// The scheduler running for one test.
pub struct TestApp {
    pub db: TestDb,
    pub handle: SchedulerHandle,
    /// The store the scheduler runs on, with its [`Inspect`] reads.
    store: Arc<dyn Inspect>,
    pub admin_token: String,
    /// The token between scheduler and workers.
    pub internal_token: String,
    /// A client holding the admin token.
    pub admin: Client,
    /// Where this scheduler keeps artifacts and inputs.
    pub artifacts: TempDir,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with settings adjusted by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut SchedulerConfig)) -> TestApp {
        Self::spawn_on(TestDb::new(backend).await, tweak).await
    }

    /// Spawns over `db`, with settings adjusted by `tweak`.
    pub async fn spawn_on(db: TestDb, tweak: impl FnOnce(&mut SchedulerConfig)) -> TestApp {
        let admin_token = tessera_scheduler::auth::new_token();
        let internal_token = tessera_scheduler::auth::new_token();
        let mut config = db.config();
        let artifacts = tempfile::tempdir().expect("a temporary artifacts folder");
        config.artifacts.location = artifacts.path().display().to_string();
        config.auth.admin_token = Some(admin_token.clone());
        config.auth.internal_token = Some(internal_token.clone());
        tweak(&mut config);
        let (handle, store) = start(config, "starting the scheduler").await;
        let admin = Client::new(&handle.base_url(), admin_token.clone()).expect("client");
        TestApp {
            db,
            handle,
            store,
            admin_token,
            internal_token,
            admin,
            artifacts,
        }
    }

    /// Settings for another scheduler over this one's database and artifact
    /// folder, with the same tokens, listening on `listen`.
    pub fn config_for(&self, listen: SocketAddr) -> SchedulerConfig {
        let mut config = self.db.config();
        config.server.listen = listen;
        config.artifacts.location = self.artifacts.path().display().to_string();
        config.auth.admin_token = Some(self.admin_token.clone());
        config.auth.internal_token = Some(self.internal_token.clone());
        config
    }

    /// Starts another replica of this scheduler (same database, artifact
    /// folder and tokens, another loopback port), settings adjusted by
    /// `tweak`. It runs on a runtime of its own: see [`Replica::kill`].
    pub async fn replica(&self, tweak: impl FnOnce(&mut SchedulerConfig)) -> Replica {
        let mut config = self.config_for("127.0.0.1:0".parse().expect("address"));
        tweak(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("replica")
            .enable_all()
            .build()
            .expect("a runtime for the replica");
        let handle = runtime
            .spawn(Scheduler::start(config))
            .await
            .expect("the replica's start panicked")
            .expect("starting a replica");
        Replica {
            addr: handle.addr(),
            handle: Some(handle),
            runtime: Some(runtime),
        }
    }

    pub fn base_url(&self) -> String {
        self.handle.base_url()
    }

    /// The scheduler's `/metrics` page, read with the admin token.
    pub async fn scrape_metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("{}/metrics", self.base_url()))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("scraping /metrics")
            .text()
            .await
            .expect("reading /metrics")
    }

    /// The store the scheduler runs on, with the reads only tests make.
    pub fn store(&self) -> &Arc<dyn Inspect> {
        &self.store
    }

    /// Mints a key for a bot through the admin API and returns its secret.
    pub async fn key(&self, frontend: Platform, bot_id: &str) -> String {
        self.admin
            .create_key(&CreateKeyRequest {
                frontend,
                bot_id: bot_id.parse().expect("a test's bot id is a plain name"),
            })
            .await
            .expect("creating a frontend key")
            .api_key
    }

    /// A client speaking for a new key of this bot.
    pub async fn frontend(&self, frontend: Platform, bot_id: &str) -> Client {
        let key = self.key(frontend, bot_id).await;
        Client::new(&self.base_url(), key).expect("client")
    }

    /// A client with any token (or none, with an empty string) for raw requests.
    pub fn client_with(&self, token: &str) -> Client {
        Client::new(&self.base_url(), token.to_owned()).expect("client")
    }

    /// Kills the scheduler (as a crash would) and starts it again on the same
    /// port, database and artifact folder, with the same tokens.
    pub async fn crash_and_restart(&mut self, tweak: impl FnOnce(&mut SchedulerConfig)) {
        let mut config = self.config_for(self.handle.addr());
        tweak(&mut config);
        self.handle.kill();
        // Let the aborted tasks drop their listener before binding its port again.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (handle, store) = start(config, "restarting the scheduler").await;
        let old = std::mem::replace(&mut self.handle, handle);
        self.store = store;
        drop(old);
    }

    /// Starts a worker on `127.0.0.1:0` that reports to this scheduler
    /// (engines: [`sim`] for simulated GPU work).
    pub async fn worker(
        &self,
        id: &str,
        engines: Vec<tessera_worker::config::EngineConfig>,
    ) -> tessera_worker::WorkerHandle {
        self.worker_via(&self.base_url(), id, engines).await
    }

    /// Starts a worker that reports to the scheduler at `scheduler_url` (a
    /// replica, or a balancer in front of several), with this one's token.
    pub async fn worker_via(
        &self,
        scheduler_url: &str,
        id: &str,
        engines: Vec<tessera_worker::config::EngineConfig>,
    ) -> tessera_worker::WorkerHandle {
        self.worker_with(scheduler_url, id, engines, Default::default())
            .await
    }

    /// Starts a worker that classifies its outputs with the classifier
    /// `moderation` names (see `tessera_worker::classify`).
    pub async fn worker_classifying(
        &self,
        id: &str,
        engines: Vec<tessera_worker::config::EngineConfig>,
        moderation: tessera_worker::config::ModerationConfig,
    ) -> tessera_worker::WorkerHandle {
        self.worker_with(&self.base_url(), id, engines, moderation)
            .await
    }

    async fn worker_with(
        &self,
        scheduler_url: &str,
        id: &str,
        engines: Vec<tessera_worker::config::EngineConfig>,
        moderation: tessera_worker::config::ModerationConfig,
    ) -> tessera_worker::WorkerHandle {
        let config = tessera_worker::WorkerConfig {
            worker: tessera_worker::config::AgentConfig {
                id: id.parse().expect("a test's worker id is a plain name"),
                listen: "127.0.0.1:0".parse().expect("address"),
                scheduler_url: scheduler_url.to_owned(),
                internal_token: Some(self.internal_token.clone()),
                heartbeat_interval_ms: 200,
                ..Default::default()
            },
            engines,
            moderation,
        };
        tessera_worker::Worker::start(config)
            .await
            .expect("starting a worker")
    }

    pub async fn shutdown(self) {
        self.handle.shutdown().await.expect("clean shutdown");
    }
}

/// Starts a scheduler as [`Scheduler::start`] does, on a store opened here so
/// that the test keeps its [`Inspect`] reads; `what` names the step in a panic.
async fn start(config: SchedulerConfig, what: &str) -> (SchedulerHandle, Arc<dyn Inspect>) {
    config.check().expect(what);
    let store = store::connect_inspect(&config.database).await.expect(what);
    let handle = Scheduler::start_with_store(config, store.clone())
        .await
        .expect(what);
    (handle, store)
}

/// A further scheduler replica started by [`TestApp::replica`].
pub struct Replica {
    addr: SocketAddr,
    handle: Option<SchedulerHandle>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the replica as a crash would. [`SchedulerHandle::kill`] aborts
    /// its server, dispatcher and monitor tasks, but what they spawned on the
    /// runtime lives on: the connections already accepted (a client holding
    /// one keeps being answered) and the job sends in flight. Ending the
    /// replica's own runtime ends all of it at once, as the end of a process
    /// does: its sockets close, its transactions in flight roll back.
    pub fn kill(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.kill();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub fn is_alive(&self) -> bool {
        self.runtime.is_some()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,sqlx=error".to_owned()))
        .with_test_writer()
        .try_init();
}

/// Creates a job as a careful frontend does (the bots do the same): one
/// idempotency key, the request sent again after `pause` while `passing`
/// says a failure is a passing one (a scheduler restarting, its database
/// away) and `within` has not run out. The key makes every retry answer with
/// the first job, so the job is created and charged once. Panics on a failure
/// that is not passing, or one that lasts.
pub async fn create_retrying(
    client: &Client,
    req: &tessera_api::public::CreateJobRequest,
    key: &str,
    within: std::time::Duration,
    pause: std::time::Duration,
    mut passing: impl FnMut(&tessera_api::ClientError) -> bool,
) -> tessera_core::JobId {
    let deadline = std::time::Instant::now() + within;
    loop {
        match client.create_job(req, Some(key)).await {
            Ok(created) => return created.job.job_id,
            Err(e) if passing(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
            }
            Err(e) => panic!("creating a job: {e:?}"),
        }
    }
}

/// How many jobs a worker's engines ran (finished or not), from its
/// `/metrics`: the count that says whether a job ran twice, which a job's
/// dispatch count (`attempts`) cannot (a dispatch can be taken back unsent).
pub async fn engine_runs(worker: &tessera_worker::WorkerHandle, internal_token: &str) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", worker.addr()))
        .bearer_auth(internal_token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("scraping a worker")
        .text()
        .await
        .expect("a worker's metrics");
    text.lines()
        .filter(|l| l.starts_with("tessera_runs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Runs each listed `async fn name(backend: Backend)` as two tests,
/// `postgres::name` and `sqlite::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
    };
}

/// A `sim` engine for `capability` serving `models`, `run_ms` a job, no
/// model-load time; a prompt containing `[poison]` makes it fail as a crashed
/// engine would (for attempt-limit tests).
pub fn sim(
    capability: tessera_core::Capability,
    models: &[&str],
    run_ms: u64,
) -> tessera_worker::config::EngineConfig {
    tessera_worker::config::EngineConfig::Sim(tessera_worker::engine::sim::SimConfig {
        memory_mib: None,
        model_memory_mib: Default::default(),
        capability,
        models: models.iter().map(|m| m.to_string()).collect(),
        run_ms,
        load_ms: 0,
        fail_when_prompt_contains: Some("[poison]".into()),
    })
}
