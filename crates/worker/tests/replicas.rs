//! Two scheduler replicas on one PostgreSQL, behind one load balancer, under
//! load; one of them crashes mid-load (RELIABILITY.md).
//!
//! Workers and frontends talk to a round-robin TCP balancer
//! ([`tessera_testkit::proxy::Proxy`]) that sends each request to the next
//! replica, so both replicas receive every worker's heartbeats and results
//! and every frontend's creates and reads, and both dispatch to every worker. Then one replica is
//! killed as a crash would (its runtime ended: connections cut, job sends in
//! flight lost) while creates go on through the balancer, which skips it.
//!
//! PostgreSQL only: replicas share one database server. SQLite is one
//! machine's embedded database, a file with a single writer inside one
//! process; there is no second scheduler to put beside the first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use tessera_api::public::CreateJobRequest;
use tessera_api::{Client, ClientError};
use tessera_core::{Capability, JobId, Platform};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::proxy::{Proxy, Spread};
use tessera_testkit::{invariants, sim, Backend, TestApp};

const BOT: &str = "tg-image-bot-1";
const WORKERS: usize = 4;
const CREATORS: usize = 4;
const USERS_PER_CREATOR: usize = 8;
/// Jobs created in all; the kill comes after half of them.
const JOBS: usize = 400;
const WAIT: Duration = Duration::from_secs(120);

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    // Counted lost after 2 s of silence: at 600 ms a loaded machine's stall
    // made the monitor take a job back from a live worker, which then ran
    // it twice (the workers never go silent here; the crash is a replica's).
    config.workers.missed_heartbeats = 10;
    config.workers.dispatch_tick_ms = 100;
}

/// What the load met, for the figures.
#[derive(Default)]
struct Load {
    ids: Mutex<Vec<JobId>>,
    created: AtomicUsize,
    /// Creates sent again with the same idempotency key (connection cut, 503).
    retried_creates: AtomicUsize,
    reads: AtomicUsize,
    /// Status reads that met a cut connection or a 503 (and were retried).
    failed_reads: AtomicUsize,
}

/// Creates a job as a careful frontend does: one idempotency key, the request
/// sent again when the connection drops or the scheduler answers 503.
async fn create(client: &Client, user: &str, n: usize, load: &Load) -> JobId {
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: BOT.parse().unwrap(),
        capability: Capability::Image,
        user_ref: user.parse().unwrap(),
        reply_context: None,
        params: json!({"prompt": format!("job {n} of {user}")}),
    };
    let key = JobId::generate().to_string();
    let within = Duration::from_secs(60);
    tessera_testkit::create_retrying(client, &req, &key, within, Duration::from_millis(50), |e| {
        load.retried_creates.fetch_add(1, Ordering::Relaxed);
        retryable(e)
    })
    .await
}

fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport(_) => true,
        other => other.status().is_some_and(|s| s.as_u16() == 503),
    }
}

/// `GET /metrics` of a scheduler (admin token) or worker (internal token).
async fn scrape(base: &str, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("scraping metrics")
        .text()
        .await
        .expect("reading metrics")
}

/// The sum of the samples of `name` whose labels contain every one of `with`.
fn sum(metrics: &str, name: &str, with: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Requests a scheduler served, by kind, from its metrics.
fn served(metrics: &str) -> (u64, u64, u64) {
    let requests = "tessera_http_requests_total";
    (
        sum(metrics, requests, &["route=\"/api/internal/heartbeat\""]),
        sum(
            metrics,
            requests,
            &["method=\"POST\"", "route=\"/api/v1/jobs\""],
        ),
        sum(
            metrics,
            requests,
            &["route=\"/api/internal/jobs/{job_id}/result\""],
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_a_balancer_lose_nothing_and_run_nothing_twice_when_one_crashes() {
    let app = TestApp::spawn_with(Backend::Postgres, fast).await;
    let mut second = app.replica(fast).await;
    let proxy = Proxy::start(vec![app.handle.addr(), second.addr()], Spread::Requests).await;
    // Paying users, a quarter of them on the higher priority.
    for user in 0..CREATORS * USERS_PER_CREATOR {
        let plan = if user % 4 == 0 { "pro" } else { "starter" };
        app.admin
            .set_plan(&format!("telegram:{user}"), &plan.parse().unwrap())
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let run_ms = 20 + 20 * i as u64;
        workers.push(
            app.worker_via(
                &proxy.url(),
                &format!("worker-gpu-{i}"),
                vec![sim(Capability::Image, &["sdxl-1.0"], run_ms)],
            )
            .await,
        );
    }
    let key = app.key(Platform::Telegram, BOT).await;
    let load = Arc::new(Load::default());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Several frontends, each with its own connections, create for their users.
    let mut creators = Vec::new();
    for c in 0..CREATORS {
        let client = Client::new(&proxy.url(), key.clone()).unwrap();
        let load = load.clone();
        creators.push(tokio::spawn(async move {
            let mut n = 0;
            while load.created.fetch_add(1, Ordering::SeqCst) < JOBS {
                let user = format!("telegram:{}", c * USERS_PER_CREATOR + n % USERS_PER_CREATOR);
                let id = create(&client, &user, n, &load).await;
                load.ids.lock().unwrap().push(id);
                n += 1;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }));
    }
    // And one follows jobs, as a bot does.
    let reader = {
        let client = Client::new(&proxy.url(), key.clone()).unwrap();
        let load = load.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !done.load(Ordering::SeqCst) {
                let id = {
                    let ids = load.ids.lock().unwrap();
                    (!ids.is_empty()).then(|| ids[i % ids.len()].clone())
                };
                i += 7;
                if let Some(id) = id {
                    match client.get_job(&id).await {
                        Ok(job) => assert_eq!(job.job_id, id),
                        Err(e) if retryable(&e) => {
                            load.failed_reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("reading {id}: {e:?}"),
                    }
                    load.reads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Halfway, once both replicas have dispatched and recorded results, the
    // second one crashes.
    let started = Instant::now();
    let deadline = started + WAIT;
    let dispatched = "tessera_jobs_dispatched_total";
    let (before_a, before_b) = loop {
        assert!(Instant::now() < deadline, "the first half was never run");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if load.ids.lock().unwrap().len() < JOBS / 2 {
            continue;
        }
        let a = scrape(&app.base_url(), &app.admin_token).await;
        let b = scrape(&second.base_url(), &app.admin_token).await;
        if [&a, &b]
            .iter()
            .all(|m| sum(m, dispatched, &[]) >= 50 && served(m).2 >= 50)
        {
            break (a, b);
        }
    };
    second.kill();
    let killed_after = started.elapsed();
    let created_at_kill = load.ids.lock().unwrap().len();
    let (a, b) = (served(&before_a), served(&before_b));
    for (name, (heartbeats, creates, results)) in [("first", a), ("second", b)] {
        assert!(
            heartbeats > 0 && creates > 0 && results > 0,
            "the {name} replica was not behind the balancer: {heartbeats} heartbeats, \
             {creates} creates, {results} results"
        );
    }
    let dispatched_b = sum(&before_b, dispatched, &[]);
    assert!(dispatched_b > 0, "the second replica never dispatched");

    for c in creators {
        c.await.expect("a frontend panicked");
    }
    let ids = load.ids.lock().unwrap().clone();
    assert_eq!(ids.len(), JOBS);

    // Everything ends.
    let store = app.store().clone();
    loop {
        let jobs = invariants::all_jobs(&*store).await;
        let live = jobs.iter().filter(|j| !j.status.is_terminal()).count();
        if live == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{live} jobs never ended: {:#?}",
            jobs.iter()
                .filter(|j| !j.status.is_terminal())
                .take(5)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended_after = started.elapsed();
    done.store(true, Ordering::SeqCst);
    reader.await.expect("the reader panicked");

    let checked = invariants::check(&*store, &ids, Some(app.artifacts.path()), true).await;
    let jobs = invariants::all_jobs(&*store).await;
    assert_eq!(checked.jobs, JOBS);
    assert_eq!(
        checked.by_state.get("COMPLETED").copied(),
        Some(JOBS),
        "{:?}",
        checked.by_state
    );
    assert_eq!(checked.artifacts, JOBS);

    // No worker died, so each job ran on a worker exactly once: as many
    // engine runs as jobs, all completed.
    let mut runs = 0;
    for w in &workers {
        let metrics = scrape(&format!("http://{}", w.addr()), &app.internal_token).await;
        assert_eq!(
            sum(&metrics, "tessera_runs_total", &[]),
            sum(&metrics, "tessera_runs_total", &["outcome=\"completed\""])
        );
        runs += sum(&metrics, "tessera_runs_total", &[]);
    }
    assert_eq!(runs, JOBS as u64, "engine runs, for {JOBS} jobs");
    // A job is dispatched again only when the crashed replica had claimed it
    // and not yet handed it to a worker (or had not handed back a job a busy
    // worker refused): at most one per worker.
    let retried: Vec<_> = jobs.iter().filter(|j| j.attempts > 1).collect();
    assert!(
        retried.len() <= WORKERS,
        "{} jobs dispatched more than once: {retried:#?}",
        retried.len()
    );

    let after_a = scrape(&app.base_url(), &app.admin_token).await;
    let a_end = served(&after_a);
    eprintln!(
        "replicas: {JOBS} jobs created by {CREATORS} frontends for {} users through a balancer \
         over 2 replicas and {WORKERS} workers; 1 replica crash after {created_at_kill} creates; \
         before it the replicas served {}/{} heartbeats, {}/{} creates, {}/{} results and \
         dispatched {}/{}; {} creates retried, {} status reads ({} retried); {} jobs checked, \
         {} completed, {} engine runs, {} dispatched more than once",
        CREATORS * USERS_PER_CREATOR,
        a.0,
        b.0,
        a.1,
        b.1,
        a.2,
        b.2,
        sum(&before_a, dispatched, &[]),
        dispatched_b,
        load.retried_creates.load(Ordering::Relaxed),
        load.reads.load(Ordering::Relaxed),
        load.failed_reads.load(Ordering::Relaxed),
        checked.jobs,
        checked.by_state.get("COMPLETED").copied().unwrap_or(0),
        runs,
        checked.retried,
    );
    eprintln!(
        "replicas: crash at {:.1} s, all ended at {:.1} s; the first replica served {} heartbeats, \
         {} creates, {} results in all; the balancer gave {} and {} connections, {} found no replica",
        killed_after.as_secs_f64(),
        ended_after.as_secs_f64(),
        a_end.0,
        a_end.1,
        a_end.2,
        proxy.connections(0),
        proxy.connections(1),
        proxy.refused(),
    );
    for w in workers {
        w.shutdown().await.unwrap();
    }
}
