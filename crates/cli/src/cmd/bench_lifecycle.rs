//! `tessera bench --scenario lifecycle`: the whole loop, create to result.
//!
//! Starts the real scheduler and `--workers` real workers with a `sim` engine
//! at zero run time in this process, all on loopback, then measures three things:
//!
//! 1. **Throughput**: concurrent clients create jobs for `--seconds`; workers
//!    take, run and report them. Completed lifecycles per second are counted
//!    from the database (first creation to last completion).
//! 2. **Dispatch latency on an idle worker**: `--idle-jobs` jobs created one at
//!    a time, each after the previous one finished, so a worker is always idle
//!    when a job arrives. Latency is the job's `started_at - queued_at` as the
//!    scheduler recorded them (milliseconds).
//! 3. **A dead worker**: a worker running a long job is killed; the time until
//!    its job is back in the queue is measured, with heartbeats every
//!    `--heartbeat-ms` and the default three missed heartbeats before offline.
//! 4. **A baseline**: once the scheduler has stopped, a raw queue loop on the
//!    same database with as many clients, for as long (`bench_baseline`);
//!    throughput is also reported as a ratio to it, which compares across hosts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use tessera_api::public::CreateJobRequest;
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_scheduler::auth::{hash_secret, new_api_key, new_token};
use tessera_scheduler::store::Store;
use tessera_scheduler::{Scheduler, SchedulerConfig};
use tessera_worker::config::{AgentConfig, EngineConfig};
use tessera_worker::engine::sim::SimConfig;
use tessera_worker::{Worker, WorkerConfig};

use super::bench::{phase, BenchArgs, Load, Op};

fn sim_worker(id: String, url: &str, token: &str, model: &str, run_ms: u64) -> WorkerConfig {
    WorkerConfig {
        worker: AgentConfig {
            id: id.parse().expect("bench worker ids are plain names"),
            listen: "127.0.0.1:0".parse().expect("address"),
            scheduler_url: url.to_owned(),
            internal_token: Some(token.to_owned()),
            heartbeat_interval_ms: 1000,
            ..Default::default()
        },
        engines: vec![EngineConfig::Sim(SimConfig {
            memory_mib: None,
            model_memory_mib: Default::default(),
            capability: Capability::Image,
            models: vec![model.to_owned()],
            run_ms,
            load_ms: 0,
            fail_when_prompt_contains: None,
        })],
        moderation: Default::default(),
    }
}

fn body(user_ref: &str, model: &str) -> anyhow::Result<bytes::Bytes> {
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Web,
        bot_id: "bench".parse().expect("a plain name"),
        capability: Capability::Image,
        user_ref: user_ref.parse()?,
        reply_context: None,
        params: json!({"prompt": "a beautiful sunset over the sea", "resolution": "512x512", "model": model}),
    };
    Ok(bytes::Bytes::from(serde_json::to_vec(&req)?))
}

fn ms(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut config = SchedulerConfig::default();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.database.max_connections = args.pool;
    config.database.url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", tmp.path().display()));
    config.artifacts.location = tmp.path().join("artifacts").display().to_string();
    config.auth.admin_token = Some(new_token());
    let token = new_token();
    config.auth.internal_token = Some(token.clone());
    config.workers.heartbeat_interval_ms = args.heartbeat_ms;
    let backend = if config.database.url.starts_with("sqlite") {
        "SQLite (WAL, synchronous=full)".to_owned()
    } else {
        "PostgreSQL".to_owned()
    };
    let handle = Scheduler::start(config.clone()).await?;
    let store = handle.store().clone();
    let url = handle.base_url();

    let secret = new_api_key();
    let now = chrono::Utc::now().timestamp_millis();
    store
        .insert_api_key(Platform::Web, "bench", &hash_secret(&secret), now)
        .await?;
    let day = config.billing.clock()?.day_of(now);
    eprintln!("preparing {} users on the PRO plan...", args.users);
    let users: Vec<String> = (0..args.users).map(|i| format!("web:bench-{i}")).collect();
    for u in &users {
        store
            .set_plan(&u.parse().expect("user ref"), "pro", day, now)
            .await?;
    }
    let mut workers = Vec::new();
    for i in 0..args.workers {
        workers.push(
            Worker::start(sim_worker(
                format!("bench-{i}"),
                &url,
                &token,
                "sdxl-1.0",
                0,
            ))
            .await?,
        );
    }
    // Let every worker's first heartbeat land.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let load = Load {
        addr: handle.addr(),
        auth: format!("Bearer {secret}"),
        bodies: Arc::new(
            users
                .iter()
                .map(|u| body(u, "sdxl-1.0"))
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
    };

    // 1. Throughput.
    eprintln!("warming up for {} s...", args.warmup_seconds);
    let (_, warm) = phase(
        &load,
        Op::Create,
        args.concurrency,
        Duration::from_secs(args.warmup_seconds),
    )
    .await?;
    drain(&*store, &warm).await?;
    eprintln!("measuring full lifecycles for {} s...", args.seconds);
    let (creates, ids) = phase(
        &load,
        Op::Create,
        args.concurrency,
        Duration::from_secs(args.seconds),
    )
    .await?;
    let jobs = drain(&*store, &ids).await?;
    let completed = jobs
        .iter()
        .filter(|j| j.status == JobState::Completed)
        .count();
    let first = jobs.iter().map(|j| j.created_at).min().unwrap_or_default();
    let last = jobs
        .iter()
        .filter_map(|j| j.ended_at)
        .max()
        .unwrap_or_default();
    let span_s = ((last - first).max(1)) as f64 / 1000.0;
    let mut loaded = Histogram::<u64>::new(3)?;
    for j in &jobs {
        if let (Some(q), Some(s)) = (j.queued_at, j.started_at) {
            loaded.record((s - q).max(0) as u64)?;
        }
    }

    // 2. Dispatch latency on idle workers.
    eprintln!(
        "measuring dispatch on idle workers ({} jobs, one at a time)...",
        args.idle_jobs
    );
    let mut idle = Histogram::<u64>::new(3)?;
    let mut idle_rest = Histogram::<u64>::new(3)?;
    let mut sender = load.connect().await?;
    for i in 0..args.idle_jobs {
        let id = Op::Create
            .once(&load, &mut sender, i)
            .await?
            .context("a create answers an id")?;
        let job = wait_terminal(&*store, &id).await?;
        anyhow::ensure!(
            job.status == JobState::Completed,
            "{id} ended {}",
            job.status
        );
        idle.record(
            (job.started_at.unwrap_or_default() - job.queued_at.unwrap_or_default()).max(0) as u64,
        )?;
        idle_rest.record(
            (job.ended_at.unwrap_or_default() - job.started_at.unwrap_or_default()).max(0) as u64,
        )?;
    }

    // 3. A dead worker.
    eprintln!("killing a worker in the middle of a job...");
    let doomed = Worker::start(sim_worker(
        "bench-doomed".into(),
        &url,
        &token,
        "flux-schnell",
        3_600_000,
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead_body = body(&users[0], "flux-schnell")?;
    let dead_load = Load {
        bodies: Arc::new(vec![dead_body]),
        ..load.clone()
    };
    let id = Op::Create
        .once(&dead_load, &mut sender, 0)
        .await?
        .context("a create answers an id")?;
    while doomed.current_job().as_ref() != Some(&id) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    let killed_ms = chrono::Utc::now().timestamp_millis();
    doomed.kill();
    let requeued = loop {
        let job = store.get_job(&id, None).await?.context("the job exists")?;
        if job.status == JobState::Queued {
            break killed.elapsed();
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "the dead worker's job never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let worker_record = store
        .list_workers()
        .await?
        .into_iter()
        .find(|w| w.heartbeat.worker_id == "bench-doomed")
        .context("the doomed worker was registered")?;
    let offline_at = worker_record.last_seen_at + config.workers.silence_limit_ms();
    let after_offline_ms = killed_ms + requeued.as_millis() as i64 - offline_at;

    for w in workers {
        w.shutdown().await?;
    }
    handle.shutdown().await?;

    eprintln!(
        "measuring a raw queue loop on the same database for {} s...",
        args.seconds
    );
    let baseline = super::bench_baseline::run(
        &config.database.url,
        args.concurrency,
        Duration::from_secs(args.warmup_seconds),
        Duration::from_secs(args.seconds),
    )
    .await?;
    let per_second = completed as f64 / span_s;

    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let period = args.heartbeat_ms as f64 / 1000.0;
    let report = format!(
        "## Full lifecycle benchmark, {backend}\n\n\
         - When: {} UTC; tessera {} ({profile} build)\n\
         - Machine: {}\n\
         - How: the scheduler, {} workers with a `sim` engine at zero run time (each job still \
           makes and uploads a small PNG that says it is simulated) and {} concurrent HTTP/1.1 \
           clients, all in one process over loopback; {} connections in the scheduler's pool. \
           Every lifecycle is: create (validate, reserve tokens, insert), dispatch (one queue window per pass, \
           conditional claim, `POST /run_job`), run, result (multipart upload, artifact written to \
           the object store, recorded with the completion in one transaction).\n\
         - Baseline: after the scheduler stopped, {}; {} s warm-up, then {} s measured. \
           The ratio of Tessera's completed lifecycles per second to this loop's compares \
           across hosts better than either figure.\n\n\
         | measure | value |\n|---|---|\n\
         | jobs created in {} s | {} ({} errors) |\n\
         | completed | {} |\n\
         | **completed lifecycles per second** | **{:.0}** |\n\
         | raw queue loop on the same database, lifecycles per second | {:.0} ({} in {} s, {} errors) |\n\
         | **Tessera / raw queue loop** | **{:.2}** |\n\
         | enqueue to dispatch under that load, p50 / p99 ms | {} / {} |\n\
         | **enqueue to dispatch on an idle worker ({} jobs), p50 / p99 / max ms** | **{} / {} / {}** |\n\
         | dispatch to recorded result on an idle worker, p50 / p99 ms | {} / {} |\n\
         | heartbeat period | {period} s (offline after {} missed) |\n\
         | dead worker: kill to job back in the queue | {:.2} s |\n\
         | **dead worker: marked offline to job back in the queue** | **{:.2} s ({:.2} periods)** |\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        env!("CARGO_PKG_VERSION"),
        super::bench::machine(),
        args.workers,
        args.concurrency,
        args.pool,
        baseline.how,
        args.warmup_seconds,
        args.seconds,
        args.seconds,
        creates.ok,
        creates.errors,
        completed,
        per_second,
        baseline.per_second,
        baseline.completed,
        args.seconds,
        baseline.errors,
        per_second / baseline.per_second.max(f64::MIN_POSITIVE),
        ms(&loaded, 0.5),
        ms(&loaded, 0.99),
        args.idle_jobs,
        ms(&idle, 0.5),
        ms(&idle, 0.99),
        idle.max(),
        ms(&idle_rest, 0.5),
        ms(&idle_rest, 0.99),
        config.workers.missed_heartbeats,
        requeued.as_secs_f64(),
        after_offline_ms.max(0) as f64 / 1000.0,
        after_offline_ms.max(0) as f64 / args.heartbeat_ms as f64,
    );
    print!("{report}");
    if let Some(path) = &args.report {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Waits until every job ended; answers them.
async fn drain(
    store: &dyn Store,
    ids: &[JobId],
) -> anyhow::Result<Vec<tessera_scheduler::store::JobRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(wait_terminal(store, id).await?);
    }
    Ok(out)
}

async fn wait_terminal(
    store: &dyn Store,
    id: &JobId,
) -> anyhow::Result<tessera_scheduler::store::JobRecord> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = store.get_job(id, None).await?.context("the job exists")?;
        if job.status.is_terminal() {
            return Ok(job);
        }
        anyhow::ensure!(Instant::now() < deadline, "{id} never finished");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
