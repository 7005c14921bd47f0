//! `tessera bench`: throughput and latency of the public API on a real database.
//!
//! Starts the real scheduler in this process on a loopback port, mints a frontend
//! key, puts the benchmark's users on the PRO plan, then runs two timed phases with
//! a fixed number of concurrent HTTP clients: job creations (`POST /api/v1/jobs`)
//! and status reads (`GET /api/v1/jobs/{id}`) of the jobs just created. It prints a
//! report that says how it was run. Server and clients share the machine's cores,
//! as they would on a single-machine deployment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use serde_json::json;

use tessera_api::public::CreateJobRequest;
use tessera_core::{Capability, JobId, Platform, UserRef};
use tessera_scheduler::auth::{hash_secret, new_api_key, new_token};
use tessera_scheduler::{Scheduler, SchedulerConfig};

#[derive(Args)]
pub struct BenchArgs {
    /// Database to run against; default: a SQLite file in a temporary folder.
    /// Use an empty PostgreSQL database: the benchmark fills it.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of unmeasured creations first (connections, caches, statements).
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,
    /// Concurrent HTTP clients (16 measured best on a 2-core machine).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Distinct users the jobs are spread over (each on the PRO plan: 300 tokens a day).
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Database connections in the scheduler's pool (8 measured best on a 2-core machine).
    #[arg(long, default_value_t = 8)]
    pub pool: u32,
    /// Also write the report to this file.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// What to measure: `api` (creates and reads, no workers) or `lifecycle`
    /// (the whole loop with `sim` workers at zero run time).
    #[arg(long, value_enum, default_value = "api")]
    pub scenario: Scenario,
    /// Lifecycle: how many `sim` workers take jobs (a dispatch pass costs the same
    /// for 1 or 32 free workers, so more workers complete more per pass).
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Lifecycle: jobs created one at a time on idle workers, for dispatch latency.
    #[arg(long, default_value_t = 500)]
    pub idle_jobs: usize,
    /// Lifecycle: the heartbeat period (ms) for the dead-worker measurement.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Api,
    Lifecycle,
}

pub(crate) struct Phase {
    pub(crate) name: &'static str,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency_us: Histogram<u64>,
}

impl Phase {
    pub(crate) fn row(&self) -> String {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.name,
            self.ok,
            self.errors,
            self.ok as f64 / self.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}

/// Microseconds from 1 µs to 60 s at three significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.scenario == Scenario::Lifecycle {
        return super::bench_lifecycle::run(args).await;
    }
    let tmp = tempfile::tempdir()?;
    let mut config = SchedulerConfig::default();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.database.max_connections = args.pool;
    config.database.url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", tmp.path().display()));
    config.auth.admin_token = Some(new_token());
    let backend = if config.database.url.starts_with("sqlite") {
        format!(
            "SQLite (WAL, synchronous={:?})",
            config.database.sqlite_synchronous
        )
        .to_lowercase()
    } else {
        "PostgreSQL".to_owned()
    };
    let handle = Scheduler::start(config.clone()).await?;
    let store = handle.store().clone();

    let secret = new_api_key();
    let now = chrono::Utc::now().timestamp_millis();
    store
        .insert_api_key(Platform::Web, "bench", &hash_secret(&secret), now)
        .await?;
    let day = config.billing.clock()?.day_of(now);
    eprintln!("preparing {} users on the PRO plan...", args.users);
    let users: Vec<UserRef> = (0..args.users)
        .map(|i| format!("web:bench-{i}").parse())
        .collect::<Result<_, _>>()?;
    for u in &users {
        store.set_plan(u, "pro", day, now).await?;
    }
    let bodies = users
        .iter()
        .map(|user_ref| {
            let req = CreateJobRequest {
callback_url: None,
context: None,
                frontend: Platform::Web,
                bot_id: "bench".parse().expect("a plain name"),
                capability: Capability::Image,
                user_ref: user_ref.clone(),
                reply_context: None,
                params: json!({"prompt": "a beautiful sunset over the sea", "resolution": "1024x1024"}),
            };
            serde_json::to_vec(&req).map(bytes::Bytes::from)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let load = Load {
        addr: handle.addr(),
        auth: format!("Bearer {secret}"),
        bodies: Arc::new(bodies),
    };

    eprintln!("warming up for {} s...", args.warmup_seconds);
    let warmup = Duration::from_secs(args.warmup_seconds);
    phase(&load, Op::Create, args.concurrency, warmup).await?;
    let length = Duration::from_secs(args.seconds);
    eprintln!("measuring creations for {} s...", args.seconds);
    let (creates, ids) = phase(&load, Op::Create, args.concurrency, length).await?;
    anyhow::ensure!(!ids.is_empty(), "no job was created, nothing to read");
    eprintln!("measuring status reads for {} s...", args.seconds);
    let (reads, _) = phase(&load, Op::Read(Arc::new(ids)), args.concurrency, length).await?;
    handle.shutdown().await?;

    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut report = String::new();
    report.push_str(&format!(
        "## Public API benchmark, {backend}\n\n\
         - When: {} UTC; tessera {} ({profile} build)\n\
         - Machine: {}\n\
         - How: the scheduler and {} concurrent HTTP/1.1 keep-alive clients in one process, \
           over loopback (one connection per client, prebuilt bodies, only the job id decoded); {} connections in the scheduler's database pool; {} s warm-up, then {} s per phase\n\
         - Load: image jobs (1024x1024, 1 token) spread over {} users on the PRO plan; every create \
           authenticates the key, validates, reserves the tokens and inserts the job atomically, then \
           looks up the queue position for the estimate; no workers run, so every job stays queued. \
           Reads fetch random jobs from the create phase (queue positions up to {}).\n\n\
         | phase | ok | errors | per second | p50 ms | p90 ms | p99 ms | max ms |\n\
         |---|---|---|---|---|---|---|---|\n{}\n{}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        env!("CARGO_PKG_VERSION"),
        machine(),
        args.concurrency,
        args.pool,
        args.warmup_seconds,
        args.seconds,
        args.users,
        config.queue.position_cap,
        creates.row(),
        reads.row(),
    ));
    print!("{report}");
    if let Some(path) = &args.report {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The load generator: each client task holds one HTTP/1.1 keep-alive connection
/// (hyper's low-level client, no pool, no URL parsing), sends prebuilt bodies and
/// decodes only what it needs, so the cores it shares with the server go to the
/// server.
#[derive(Clone)]
pub(crate) struct Load {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) auth: String,
    /// One prebuilt create body per user.
    pub(crate) bodies: Arc<Vec<bytes::Bytes>>,
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

impl Load {
    pub(crate) async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends one request; answers the status and the body.
    async fn send(
        &self,
        sender: &mut Sender,
        method: hyper::Method,
        path: &str,
        body: bytes::Bytes,
    ) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
        use http_body_util::BodyExt;
        sender.ready().await?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::AUTHORIZATION, &self.auth)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(body))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[derive(serde::Deserialize)]
struct CreatedId {
    job_id: JobId,
}

/// What each request of a phase does.
#[derive(Clone)]
pub(crate) enum Op {
    /// `POST /api/v1/jobs`, keeping the new job's id.
    Create,
    /// `GET /api/v1/jobs/{id}` of a random job among these.
    Read(Arc<Vec<JobId>>),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Create => "create `POST /api/v1/jobs`",
            Op::Read(_) => "status `GET /api/v1/jobs/{id}`",
        }
    }

    /// One request; the created job's id for a create.
    pub(crate) async fn once(
        &self,
        load: &Load,
        sender: &mut Sender,
        i: usize,
    ) -> anyhow::Result<Option<JobId>> {
        match self {
            Op::Create => {
                let body = load.bodies[i % load.bodies.len()].clone();
                match load
                    .send(sender, hyper::Method::POST, "/api/v1/jobs", body)
                    .await?
                {
                    (hyper::StatusCode::CREATED, body) => {
                        Ok(Some(serde_json::from_slice::<CreatedId>(&body)?.job_id))
                    }
                    (status, body) => anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body)),
                }
            }
            Op::Read(ids) => {
                let path = format!(
                    "/api/v1/jobs/{}",
                    ids.choose(&mut rand::rng()).expect("ids")
                );
                match load
                    .send(sender, hyper::Method::GET, &path, bytes::Bytes::new())
                    .await?
                {
                    (hyper::StatusCode::OK, _) => Ok(None),
                    (status, _) => anyhow::bail!("{status}"),
                }
            }
        }
    }
}

/// Runs `concurrency` clients, each on its own connection, repeating `op` for
/// `length`; answers the phase's figures and the ids of created jobs.
pub(crate) async fn phase(
    load: &Load,
    op: Op,
    concurrency: usize,
    length: Duration,
) -> anyhow::Result<(Phase, Vec<JobId>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (load, op, stop) = (load.clone(), op.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = latency_histogram();
            let (mut ok, mut errors, mut ids) = (0u64, 0u64, Vec::new());
            let mut sender = load.connect().await?;
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match op.once(&load, &mut sender, i).await {
                    Ok(id) => {
                        hist.saturating_record(t0.elapsed().as_micros() as u64);
                        ok += 1;
                        ids.extend(id);
                    }
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("{}: {e:#}", op.name());
                        }
                        if sender.is_closed() {
                            sender = load.connect().await?;
                        }
                    }
                }
                i += concurrency;
            }
            anyhow::Ok((hist, ok, errors, ids))
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut phase = Phase {
        name: op.name(),
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: latency_histogram(),
    };
    let mut all_ids = Vec::new();
    for task in tasks {
        let (hist, ok, errors, ids) = task.await??;
        phase.latency_us.add(hist)?;
        phase.ok += ok;
        phase.errors += errors;
        all_ids.extend(ids);
    }
    phase.elapsed = started.elapsed();
    Ok((phase, all_ids))
}

/// The machine a report was measured on: cores, CPU model (where the OS says
/// it) and platform, so runs on different hosts are not compared blindly.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .map_or_else(String::new, |name| format!(" ({name})"));
    format!(
        "{cores} cores{cpu}, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
