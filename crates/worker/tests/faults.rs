//! PostgreSQL restarted under load (RELIABILITY.md): while the database is
//! down the API answers 503 `database_unavailable` in the JSON envelope (and
//! `/readyz` 503), never 500, nothing panics; once it is back the scheduler
//! recovers by itself, with no restart: creates succeed, dispatch resumes,
//! every job ends, and the invariants hold.
//!
//! The shared test server cannot be stopped (every other test uses it), so
//! this test runs its own PostgreSQL ([`tessera_testkit::pg::PgServer`]) and
//! stops it with `pg_ctl stop -m fast`, as an operator restarting it would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use tessera_api::public::CreateJobRequest;
use tessera_api::{Client, ClientError};
use tessera_core::{Capability, JobId, Platform};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::pg::PgServer;
use tessera_testkit::{invariants, sim, TestApp, TestDb};

const BOT: &str = "tg-image-bot-1";
const WORKERS: usize = 4;
const CREATORS: usize = 4;
const USERS_PER_CREATOR: usize = 6;
const OUTAGE: Duration = Duration::from_secs(4);
const WAIT: Duration = Duration::from_secs(120);

fn config(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    config.workers.missed_heartbeats = 3;
    config.workers.dispatch_tick_ms = 100;
    // A request waits at most this long for a connection before the 503.
    config.database.acquire_timeout_secs = 1;
}

/// What the API answered, by kind.
#[derive(Default)]
struct Answers {
    ok: AtomicUsize,
    /// 503 `database_unavailable` in the JSON envelope.
    unavailable: AtomicUsize,
    /// Requests that never got an answer (there should be none: the
    /// scheduler stays up).
    transport: AtomicUsize,
    /// Anything else: a 500, another code, an answer outside the envelope.
    wrong: Mutex<Vec<String>>,
}

impl Answers {
    /// Records an answer; true when it succeeded.
    fn note<T>(&self, what: &str, answer: &Result<T, ClientError>) -> bool {
        match answer {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.failed(what, e);
                false
            }
        }
    }

    /// Records a failure.
    fn failed(&self, what: &str, e: &ClientError) {
        match e {
            ClientError::Api { status, body }
                if status.as_u16() == 503 && body.error.code == "database_unavailable" =>
            {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            ClientError::Transport(_) => {
                self.transport.fetch_add(1, Ordering::Relaxed);
            }
            e => self.wrong.lock().unwrap().push(format!("{what}: {e:?}")),
        }
    }
}

/// What the load did.
#[derive(Default)]
struct Load {
    ids: Mutex<Vec<JobId>>,
    creates: Answers,
    reads: Answers,
    /// Creates sent again with their idempotency key after a 503.
    retried_creates: AtomicUsize,
    /// Creates answered with a job after PostgreSQL came back.
    created_after: AtomicUsize,
}

/// Creates a job as a careful frontend does: one idempotency key, sent again
/// after a pause while the scheduler answers 503.
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
    let pause = Duration::from_millis(200);
    let id = tessera_testkit::create_retrying(client, &req, &key, WAIT, pause, |e| {
        load.creates.failed("create", e);
        load.retried_creates.fetch_add(1, Ordering::Relaxed);
        true
    })
    .await;
    load.creates.ok.fetch_add(1, Ordering::Relaxed);
    id
}

/// `GET /readyz`: the status and the JSON body.
async fn ready(base: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("the scheduler answers /readyz");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").cloned();
    let body: Value = resp.json().await.expect("/readyz answers JSON");
    if status == 503 {
        assert!(retry_after.is_some(), "a 503 says when to retry");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_503_meanwhile_and_recovers_by_itself() {
    // Any panic, in the scheduler's tasks as in the test's, is counted.
    let panics = Arc::new(AtomicUsize::new(0));
    let default_hook = std::panic::take_hook();
    let counted = panics.clone();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let pg = Arc::new(
        tokio::task::spawn_blocking(PgServer::start_new)
            .await
            .unwrap(),
    );
    let app = TestApp::spawn_on(TestDb::postgres_in(&pg.url()).await, config).await;
    for user in 0..CREATORS * USERS_PER_CREATOR {
        app.admin
            .set_plan(&format!("telegram:{user}"), &"starter".parse().unwrap())
            .await
            .unwrap();
    }
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(
            app.worker(
                &format!("worker-gpu-{i}"),
                vec![sim(Capability::Image, &["sdxl-1.0"], 100 + 50 * i as u64)],
            )
            .await,
        );
    }
    let key = app.key(Platform::Telegram, BOT).await;
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let back = Arc::new(AtomicBool::new(false));

    let mut tasks = Vec::new();
    for c in 0..CREATORS {
        let client = Client::new(&app.base_url(), key.clone()).unwrap();
        let (load, stop, back) = (load.clone(), stop.clone(), back.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let user = format!("telegram:{}", c * USERS_PER_CREATOR + n % USERS_PER_CREATOR);
                let id = create(&client, &user, n, &load).await;
                if back.load(Ordering::SeqCst) {
                    load.created_after.fetch_add(1, Ordering::Relaxed);
                }
                load.ids.lock().unwrap().push(id);
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // Status reads, as bots following their jobs do.
    for r in 0..2 {
        let client = Client::new(&app.base_url(), key.clone()).unwrap();
        let (load, stop) = (load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = r;
            while !stop.load(Ordering::SeqCst) {
                let id = {
                    let ids = load.ids.lock().unwrap();
                    (!ids.is_empty()).then(|| ids[i % ids.len()].clone())
                };
                i += 5;
                if let Some(id) = id {
                    load.reads.note("read", &client.get_job(&id).await);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    // Under load: jobs created, queued, running and reported.
    let started = Instant::now();
    let store = app.store().clone();
    loop {
        assert!(started.elapsed() < WAIT, "the load never got going");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let completed = invariants::all_jobs(&*store)
            .await
            .iter()
            .filter(|j| j.status.is_terminal())
            .count();
        if load.ids.lock().unwrap().len() >= 40 && completed >= 20 {
            break;
        }
    }
    assert_eq!(ready(&app.base_url()).await.0, 200);

    // PostgreSQL goes away for a few seconds.
    let before = load.ids.lock().unwrap().len();
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let stopped = Instant::now();
    let mut readyz_unavailable = 0;
    while stopped.elapsed() < OUTAGE {
        let (status, body) = ready(&app.base_url()).await;
        assert_eq!(status, 503, "/readyz while PostgreSQL is down: {body}");
        assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
        readyz_unavailable += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = (
        load.creates.unavailable.load(Ordering::Relaxed),
        load.reads.unavailable.load(Ordering::Relaxed),
    );
    assert!(
        during.0 > 0 && during.1 > 0,
        "creates and reads meet 503 while PostgreSQL is down: {during:?}"
    );

    // Back on the same port and data; nothing is restarted on our side.
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.start())
        .await
        .unwrap();
    back.store(true, Ordering::SeqCst);
    let restarted = Instant::now();
    while ready(&app.base_url()).await.0 != 200 {
        assert!(restarted.elapsed() < WAIT, "/readyz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_after = restarted.elapsed();
    while load.created_after.load(Ordering::Relaxed) < 40 {
        assert!(restarted.elapsed() < WAIT, "creates never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("a load task panicked");
    }
    let ids = load.ids.lock().unwrap().clone();

    // Every job ends: dispatch resumed by itself.
    loop {
        let jobs = invariants::all_jobs(&*store).await;
        let live = jobs.iter().filter(|j| !j.status.is_terminal()).count();
        if live == 0 {
            break;
        }
        assert!(
            restarted.elapsed() < WAIT,
            "{live} jobs never ended after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended_after = restarted.elapsed();
    let checked = invariants::check(&*store, &ids, Some(app.artifacts.path()), true).await;
    let completed = checked.by_state.get("COMPLETED").copied().unwrap_or(0);
    let mut runs = 0;
    for w in &workers {
        runs += tessera_testkit::engine_runs(w, &app.internal_token).await;
    }

    let wrong = [&load.creates, &load.reads]
        .iter()
        .flat_map(|a| a.wrong.lock().unwrap().clone())
        .collect::<Vec<_>>();
    eprintln!(
        "postgres restart: 1 outage of {:.1} s under load ({before} jobs created before it); \
         {} jobs created by {CREATORS} frontends for {} users, {} creates and {} status reads \
         answered, 503 database_unavailable to {} creates (retried with their key) and {} \
         reads, /readyz 503 {readyz_unavailable} times; ready {:.1} s after PostgreSQL was \
         back, every job ended {:.1} s after; {} jobs checked, {} completed, {} engine runs, \
         {} dispatched more than once; {} unanswered requests, {} wrong answers, {} panics",
        OUTAGE.as_secs_f64(),
        ids.len(),
        CREATORS * USERS_PER_CREATOR,
        load.creates.ok.load(Ordering::Relaxed),
        load.reads.ok.load(Ordering::Relaxed),
        load.creates.unavailable.load(Ordering::Relaxed),
        load.reads.unavailable.load(Ordering::Relaxed),
        ready_after.as_secs_f64(),
        ended_after.as_secs_f64(),
        checked.jobs,
        completed,
        runs,
        checked.retried,
        load.creates.transport.load(Ordering::Relaxed)
            + load.reads.transport.load(Ordering::Relaxed),
        wrong.len(),
        panics.load(Ordering::SeqCst),
    );
    assert!(
        wrong.is_empty(),
        "answers other than 2xx or 503 database_unavailable: {wrong:#?}"
    );
    assert_eq!(load.creates.transport.load(Ordering::Relaxed), 0);
    assert_eq!(load.reads.transport.load(Ordering::Relaxed), 0);
    assert_eq!(panics.load(Ordering::SeqCst), 0, "something panicked");
    assert_eq!(checked.jobs, ids.len());
    assert_eq!(completed, ids.len(), "{:?}", checked.by_state);
    // The outage made no worker look lost: nothing was run twice.
    assert_eq!(
        runs,
        ids.len() as u64,
        "engine runs, for {} jobs",
        ids.len()
    );
    assert_eq!(checked.retried, 0, "jobs dispatched more than once");
    for w in workers {
        w.shutdown().await.unwrap();
    }
    app.shutdown().await;
}
