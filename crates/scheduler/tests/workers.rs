//! The internal API's heartbeat and the admin view of workers, on both backends.

use std::time::Duration;

use tessera_api::internal::{Heartbeat, WorkerStatus};
use tessera_api::Client;
use tessera_core::{Capability, JobState, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

fn busy(id: &str) -> Heartbeat {
    Heartbeat {
        status: WorkerStatus::Busy,
        ..heartbeat(id)
    }
}

fn heartbeat(id: &str) -> Heartbeat {
    Heartbeat {
        worker_id: id.parse().unwrap(),
        status: WorkerStatus::Idle,
        address: "http://127.0.0.1:9000".into(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec!["sdxl-1.0".into()],
        model_memory: vec![],
        current_job: None,
        gpu_name: None,
        gpu_memory_used: Some(8000),
        gpu_memory_total: None,
        gpu_utilization: None,
        engines: vec![],
    }
}

async fn only_the_internal_token_may_send_heartbeats(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let internal = app.internal_token.clone();
    let frontend_key = app.key(Platform::Telegram, "tg-image-bot-1").await;
    let hb = heartbeat("worker-gpu-0");
    let cases = [
        ("", Some(401), "unauthorized"),
        ("not-a-token-at-all", Some(401), "invalid_credentials"),
        (frontend_key.as_str(), Some(403), "wrong_credential"),
        (app.admin_token.as_str(), Some(403), "wrong_credential"),
        (internal.as_str(), None, ""),
    ];
    for (token, status, code) in cases {
        let result = app.client_with(token).heartbeat(&hb).await;
        match status {
            None => assert_eq!(
                result
                    .expect("internal token accepted")
                    .heartbeat_interval_ms,
                30_000
            ),
            Some(status) => {
                let err = result.expect_err("refused");
                assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{token:?}");
                assert_eq!(err.code(), Some(code), "{token:?}");
            }
        }
    }
    // The internal token opens nothing else.
    let err = app.client_with(&internal).list_workers().await.unwrap_err();
    assert_eq!(err.code(), Some("wrong_credential"));
    let err = app.client_with(&internal).plans().await.unwrap_err();
    assert_eq!(err.code(), Some("wrong_credential"));
    app.shutdown().await;
}

/// Makes one field of a heartbeat invalid, in its JSON: a typed heartbeat
/// cannot hold a malformed worker id, but the wire can.
type Spoil = Box<dyn Fn(&mut serde_json::Value)>;

async fn what_workers_report_is_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "worker_id",
            Box::new(|h| h["worker_id"] = "worker gpu/0".into()),
        ),
        ("worker_id", Box::new(|h| h["worker_id"] = "a\u{0}b".into())),
        (
            "address",
            Box::new(|h| h["address"] = "file:///etc/passwd".into()),
        ),
        ("address", Box::new(|h| h["address"] = "not a url".into())),
        (
            "capabilities",
            Box::new(|h| h["capabilities"] = serde_json::json!([])),
        ),
        (
            "models",
            Box::new(|h| h["models"] = serde_json::json!(["../../models"])),
        ),
        (
            "loaded_models",
            Box::new(|h| h["loaded_models"] = serde_json::json!([""])),
        ),
        ("gpu_name", Box::new(|h| h["gpu_name"] = "a\u{0}b".into())),
        (
            "gpu_utilization",
            Box::new(|h| h["gpu_utilization"] = 250.0.into()),
        ),
        // An engine serving what the worker does not list.
        (
            "engines",
            Box::new(|h| {
                h["engines"] = serde_json::json!([{"engine": "kobold", "capability": "text",
                    "models": ["sdxl-1.0"], "ready": true, "since": "2026-05-01T10:00:00Z"}])
            }),
        ),
        (
            "engines",
            Box::new(|h| {
                h["engines"] = serde_json::json!([{"engine": "comfyui", "capability": "image",
                    "models": ["sdxl-1.0"], "ready": false, "since": "2026-05-01T10:00:00Z",
                    "error": "down\u{0}"}])
            }),
        ),
        (
            "engines[0].ready",
            Box::new(|h| {
                h["engines"] = serde_json::json!([{"engine": "comfyui", "capability": "image",
                    "models": ["sdxl-1.0"], "ready": "yes", "since": "2026-05-01T10:00:00Z"}])
            }),
        ),
    ];
    for (field, spoil) in cases {
        let mut hb = serde_json::to_value(heartbeat("worker-gpu-0")).unwrap();
        spoil(&mut hb);
        let answer = http
            .post(format!("{}/api/internal/heartbeat", app.base_url()))
            .bearer_auth(&app.internal_token)
            .json(&hb)
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{field}"
        );
        let body: tessera_api::ApiErrorBody = answer.json().await.expect(field);
        assert_eq!(body.error.code, "invalid_heartbeat", "{field}");
        assert_eq!(body.error.field.as_deref(), Some(field));
    }
    assert!(
        app.admin.list_workers().await.unwrap().workers.is_empty(),
        "nothing stored"
    );
    app.shutdown().await;
}

async fn workers_go_offline_after_missed_heartbeats(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.workers.heartbeat_interval_ms = 500;
        c.workers.missed_heartbeats = 2;
    })
    .await;
    let worker: Client = app.client_with(&app.internal_token);
    let ack = worker.heartbeat(&heartbeat("worker-gpu-0")).await.unwrap();
    assert_eq!(ack.heartbeat_interval_ms, 500);
    let listed = app.admin.list_workers().await.unwrap().workers;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].online);
    assert_eq!(listed[0].heartbeat, heartbeat("worker-gpu-0"));

    // The limit is 2 x 500 ms; wait well past it.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let listed = app.admin.list_workers().await.unwrap().workers;
    assert!(
        !listed[0].online,
        "two missed heartbeats make a worker offline"
    );

    let mut busy = heartbeat("worker-gpu-0");
    busy.status = WorkerStatus::Busy;
    worker.heartbeat(&busy).await.unwrap();
    let listed = app.admin.list_workers().await.unwrap().workers;
    assert!(listed[0].online, "a heartbeat brings it back");
    assert_eq!(listed[0].heartbeat.status, WorkerStatus::Busy);
    assert!(listed[0].last_seen_at > listed[0].first_seen_at);
    app.shutdown().await;
}

/// A Telegram image job of `user` with these parameters, as the test bot
/// `tg-image-bot-1` creates it.
fn image_job(user: &str, params: serde_json::Value) -> tessera_api::public::CreateJobRequest {
    tessera_api::public::CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: "tg-image-bot-1".parse().unwrap(),
        capability: Capability::Image,
        user_ref: user.parse().unwrap(),
        reply_context: None,
        params,
    }
}

/// Polls `check` until it holds or five seconds pass.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The health monitor puts a lost worker's job back in the queue, fails it once
/// the attempt limit is reached (refunding it), and leaves live workers alone.
/// Jobs are claimed through the store as the dispatcher claims them; the
/// workers here are only heartbeats, reporting busy so that the scheduler's own
/// dispatcher leaves them alone.
async fn lost_workers_jobs_are_requeued_then_failed_and_refunded(backend: Backend) {
    use tessera_core::policy::Policy;
    use tessera_scheduler::store::WorkerSlot;

    let app = TestApp::spawn_with(backend, |c| {
        // Silent for 3 x 200 ms = 600 ms is lost; live heartbeats below come
        // every ~100 ms, leaving room for a busy two-core test machine.
        c.workers.heartbeat_interval_ms = 200;
        c.workers.missed_heartbeats = 3;
        c.workers.max_attempts = 2;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let worker = app.client_with(&app.internal_token);
    let req = |user: &str| image_job(user, serde_json::json!({"prompt": "a lighthouse"}));
    let slot = |id: &str| WorkerSlot {
        worker_id: id.parse().unwrap(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
    };
    let now = || chrono::Utc::now().timestamp_millis();

    let job = tg
        .create_job(&req("telegram:lost"), None)
        .await
        .unwrap()
        .job
        .job_id;
    worker.heartbeat(&busy("worker-gpu-0")).await.unwrap();
    let (claimed, _) = app
        .store()
        .claim_next(&slot("worker-gpu-0"), &Policy::default(), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job);

    // worker-gpu-0 falls silent: its job goes back to the queue, still paid for.
    eventually("requeue", || async {
        tg.get_job(&job).await.unwrap().status == JobState::Queued
    })
    .await;
    let view = tg.get_job(&job).await.unwrap();
    assert_eq!((view.attempts, view.refunded), (1, false));
    assert_eq!(
        tg.get_user("telegram:lost")
            .await
            .unwrap()
            .tokens_used_today,
        1
    );

    // A second worker takes it and is lost too: the attempt limit fails and refunds it.
    worker.heartbeat(&busy("worker-gpu-1")).await.unwrap();
    app.store()
        .claim_next(&slot("worker-gpu-1"), &Policy::default(), now())
        .await
        .unwrap()
        .unwrap();
    eventually("failure", || async {
        tg.get_job(&job).await.unwrap().status == JobState::Failed
    })
    .await;
    let view = tg.get_job(&job).await.unwrap();
    assert_eq!((view.attempts, view.refunded), (2, true));
    assert_eq!(view.error.unwrap().code, "attempts_exhausted");
    assert_eq!(
        tg.get_user("telegram:lost")
            .await
            .unwrap()
            .tokens_used_today,
        0
    );

    // A worker that keeps its heartbeat keeps its job.
    let kept = tg
        .create_job(&req("telegram:kept"), None)
        .await
        .unwrap()
        .job
        .job_id;
    worker.heartbeat(&busy("worker-gpu-2")).await.unwrap();
    app.store()
        .claim_next(&slot("worker-gpu-2"), &Policy::default(), now())
        .await
        .unwrap()
        .unwrap();
    for _ in 0..15 {
        worker.heartbeat(&busy("worker-gpu-2")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = tg.get_job(&kept).await.unwrap();
    assert_eq!((view.status, view.attempts), (JobState::Running, 1));
    app.shutdown().await;
}

/// Replicas dispatch to the same workers, so a job may be claimed for a worker
/// by a replica that dies before its `/run_job` reaches the worker (or before
/// it hands back a job the worker refused): the database says RUNNING on that
/// worker, the worker never heard of it, and the surviving replica never
/// dispatched it. Heartbeats are checked against the database: past the grace
/// for sends in flight, a job the worker does not name goes back to the
/// queue, whether the worker is idle or busy with another job, and runs.
async fn a_job_claimed_by_a_replica_that_died_before_sending_it_runs(backend: Backend) {
    use tessera_core::JobId;

    let app = TestApp::spawn_with(backend, |c| {
        c.workers.heartbeat_interval_ms = 200;
        c.workers.dispatch_tick_ms = 100;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let create = |prompt: &str| image_job("telegram:1", serde_json::json!({ "prompt": prompt }));
    let mut ids: Vec<JobId> = Vec::new();
    for prompt in [
        "never sent to an idle worker",
        "never sent to a busy worker",
        "running",
    ] {
        ids.push(
            tg.create_job(&create(prompt), None)
                .await
                .unwrap()
                .job
                .job_id,
        );
    }
    let (idle_lost, busy_lost, running) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    // Another replica claimed them, then died: nothing was sent.
    let claimed_at = std::time::Instant::now();
    let claims = [
        (idle_lost.clone(), "worker-gpu-0".parse().unwrap()),
        (busy_lost.clone(), "worker-gpu-1".parse().unwrap()),
        (running.clone(), "worker-gpu-1".parse().unwrap()),
    ];
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        app.store().claim_batch(&claims, now).await.unwrap().len(),
        3
    );

    // worker-gpu-0 is a real worker, idle; worker-gpu-1 a heartbeat busy with
    // the job it really runs.
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![tessera_testkit::sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    let internal = app.client_with(&app.internal_token);
    let mut busy = busy("worker-gpu-1");
    busy.current_job = Some(running.clone());
    let deadline = claimed_at + Duration::from_secs(40);
    loop {
        let ack = internal.heartbeat(&busy).await.unwrap();
        assert!(ack.cancel_jobs.is_empty(), "{:?}", ack.cancel_jobs);
        let idle = tg.get_job(&idle_lost).await.unwrap();
        let other = tg.get_job(&busy_lost).await.unwrap();
        if claimed_at.elapsed() < Duration::from_secs(8) {
            // Within the grace, a send may still be on its way.
            assert_eq!(
                (idle.status, other.status),
                (JobState::Running, JobState::Running)
            );
        }
        if idle.status == JobState::Completed && other.status == JobState::Completed {
            assert_eq!((idle.attempts, other.attempts), (2, 2));
            assert!(!idle.refunded && !other.refunded);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lost jobs never ran: {idle:#?} {other:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The job worker-gpu-1 names is left alone.
    let kept = tg.get_job(&running).await.unwrap();
    assert_eq!((kept.status, kept.attempts), (JobState::Running, 1));
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

/// While PostgreSQL is down no heartbeat can be recorded, so when it comes
/// back every worker has been silent for as long as the outage lasted. A
/// worker whose next heartbeat is not in yet is not lost for that: the health
/// monitor judges silence only once the database has answered for a whole
/// silence limit. PostgreSQL only: the test stops a server of its own
/// (SQLite has no server to stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_makes_no_worker_look_lost() {
    use std::sync::Arc;
    use tessera_testkit::pg::PgServer;
    use tessera_testkit::TestDb;

    let pg = Arc::new(
        tokio::task::spawn_blocking(PgServer::start_new)
            .await
            .unwrap(),
    );
    let app = TestApp::spawn_on(TestDb::postgres_in(&pg.url()).await, |c| {
        // Silent for 10 x 200 ms = 2 s is lost.
        c.workers.heartbeat_interval_ms = 200;
        c.workers.missed_heartbeats = 10;
        c.database.acquire_timeout_secs = 1;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let req = image_job("telegram:1", serde_json::json!({"prompt": "a lighthouse"}));
    let job = tg.create_job(&req, None).await.unwrap().job.job_id;
    let now = chrono::Utc::now().timestamp_millis();
    let claim = [(job.clone(), "worker-gpu-0".parse().unwrap())];
    assert_eq!(app.store().claim_batch(&claim, now).await.unwrap().len(), 1);
    let worker = app.client_with(&app.internal_token);
    let mut running = busy("worker-gpu-0");
    running.current_job = Some(job.clone());
    for _ in 0..5 {
        worker.heartbeat(&running).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Three seconds without PostgreSQL: heartbeats are refused meanwhile.
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let stopped = std::time::Instant::now();
    while stopped.elapsed() < Duration::from_secs(3) {
        let refused = worker.heartbeat(&running).await.unwrap_err();
        assert_eq!(refused.code(), Some("database_unavailable"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let server = pg.clone();
    tokio::task::spawn_blocking(move || server.start())
        .await
        .unwrap();
    // The worker's next heartbeat comes a little late, within its limit;
    // the monitor sweeps several times meanwhile.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..15 {
        let ack = worker.heartbeat(&running).await.unwrap();
        assert!(
            ack.cancel_jobs.is_empty(),
            "told to stop {:?}",
            ack.cancel_jobs
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let view = tg.get_job(&job).await.unwrap();
    assert_eq!((view.status, view.attempts), (JobState::Running, 1));
    app.shutdown().await;
}

/// A busy worker the dispatcher never sends a job of these tests to (it
/// serves another model), so the tests claim jobs for it themselves.
fn aside(id: &str) -> Heartbeat {
    Heartbeat {
        models: vec!["flux-schnell".into()],
        loaded_models: vec![],
        ..busy(id)
    }
}

/// A job created by telegram:`user`, claimed for `worker` (QUEUED → RUNNING,
/// attempt 1) as the dispatcher would.
async fn running_job(app: &TestApp, user: &str, worker: &str) -> tessera_core::JobId {
    use tessera_core::policy::Policy;
    use tessera_scheduler::store::WorkerSlot;

    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let req = image_job(user, serde_json::json!({"prompt": "a lighthouse"}));
    let job = tg.create_job(&req, None).await.unwrap().job.job_id;
    let slot = WorkerSlot {
        worker_id: worker.parse().unwrap(),
        capabilities: vec![Capability::Image],
        models: vec!["sdxl-1.0".into()],
        loaded_models: vec![],
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (claimed, _) = app
        .store()
        .claim_next(&slot, &Policy::default(), now)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the job of {user} is not claimed: {:?}", job));
    assert_eq!(claimed.id, job);
    job
}

/// A completed result of attempt 1 on `worker` with `count` PNG artifacts of `size` bytes.
fn png_result(
    worker: &str,
    count: usize,
    size: usize,
) -> tessera_api::internal::result_form::ResultForm {
    use tessera_api::internal::result_form::ResultForm;
    use tessera_api::internal::{ArtifactKind, ArtifactMeta, JobResult, Outcome};
    let result = JobResult {
        worker_id: worker.parse().unwrap(),
        attempt: 1,
        outcome: Outcome::Completed,
        artifacts: (0..count)
            .map(|_| ArtifactMeta {
                kind: ArtifactKind::Image,
                format: "png".into(),
                width: Some(64),
                height: Some(64),
                classification: None,
                usage: None,
            })
            .collect(),
        error: None,
        timing: None,
    };
    let bytes = bytes::Bytes::from(vec![7u8; size]);
    ResultForm::new(&result, vec![bytes; count])
}

/// The files under the artifact folder's `jobs/` whose names start with `prefix`.
fn job_files(app: &TestApp, prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(app.artifacts.path().join("jobs")) else {
        return Vec::new();
    };
    dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

/// A result that loses the race with a cancel is refused as stale, and the
/// files it had already written are gone with it; one that wins keeps every
/// file its artifacts name. The cancel lands at a different moment of the
/// upload each round (before the fence check, while the files are written,
/// after the commit).
async fn a_result_refused_after_a_cancel_leaves_no_file(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let worker = app.client_with(&app.internal_token);
    worker.heartbeat(&aside("worker-gpu-0")).await.unwrap();
    let form = png_result("worker-gpu-0", 16, 256 * 1024);
    let (mut completed, mut refused) = (0, 0);
    for round in 0..24u64 {
        let job = running_job(&app, &format!("telegram:race{round}"), "worker-gpu-0").await;
        let upload = worker.deliver_result(&job, &form, None);
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(round * 3)).await;
            tg.cancel_job(&job).await
        };
        let (ack, _) = tokio::join!(upload, cancel);
        let files = job_files(&app, &format!("{job}-"));
        let status = tg.get_job(&job).await.unwrap().status;
        match ack {
            Ok(ack) => {
                assert_eq!(ack.status, JobState::Completed, "round {round}");
                assert_eq!(status, JobState::Completed, "round {round}");
                assert_eq!(files.len(), 16, "round {round}: {files:?}");
                completed += 1;
            }
            Err(e) => {
                assert_eq!(e.code(), Some("stale_attempt"), "round {round}: {e}");
                assert_eq!(status, JobState::Cancelled, "round {round}");
                assert!(files.is_empty(), "round {round}: left behind {files:?}");
                refused += 1;
            }
        }
    }
    // Both ends of the race were reached.
    assert!(
        completed > 0 && refused > 0,
        "{completed} completed, {refused} refused"
    );
    app.shutdown().await;
}

/// Sets a file's modification time `secs` seconds back.
fn age(path: &std::path::Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

/// Objects no artifact or input names, older than the grace, are swept;
/// younger ones, named ones and files Tessera never names are not.
async fn objects_no_row_names_are_swept(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.artifacts.orphan_sweep_secs = 1).await;
    let root = app.artifacts.path().to_owned();
    let worker = app.client_with(&app.internal_token);
    worker.heartbeat(&aside("worker-gpu-0")).await.unwrap();
    // A recorded artifact and a recorded input, both old.
    let job = running_job(&app, "telegram:kept", "worker-gpu-0").await;
    worker
        .deliver_result(&job, &png_result("worker-gpu-0", 1, 100), None)
        .await
        .unwrap();
    let artifact = root.join("jobs").join(format!("{job}-1-0.png"));
    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let input = tg
        .upload_input("audio/wav", b"RIFF....WAVE".to_vec())
        .await
        .unwrap();
    let input = root.join("inputs").join(input.input_id.to_string());
    // Orphans: two old, one written just now, and a file of no Tessera shape.
    let old_artifact = root
        .join("jobs")
        .join(format!("{}-1-0.png", tessera_core::JobId::generate()));
    let old_input = root
        .join("inputs")
        .join(tessera_core::InputId::generate().to_string());
    let fresh = root
        .join("jobs")
        .join(format!("{}-1-0.png", tessera_core::JobId::generate()));
    let foreign = root.join("jobs").join("README");
    for path in [&old_artifact, &old_input, &fresh, &foreign] {
        std::fs::write(path, b"orphan").unwrap();
    }
    for path in [&artifact, &input, &old_artifact, &old_input, &foreign] {
        age(path, 2 * 3600);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while old_artifact.exists() || old_input.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphans were not swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for kept in [&artifact, &input, &fresh, &foreign] {
        assert!(kept.exists(), "{} was swept", kept.display());
    }
    // The recorded artifact still downloads.
    let view = tg.get_job(&job).await.unwrap();
    let url = &view.artifacts[0].url;
    assert_eq!(tg.download(url).await.unwrap(), vec![7u8; 100]);
    app.shutdown().await;
}

/// A worker's `/run_job` on loopback that takes every job and records its id.
async fn recording_worker() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let taken: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = taken.clone();
    let app = axum::Router::new().route(
        "/run_job",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let record = record.clone();
            async move {
                let id = body["job_id"].as_str().unwrap_or_default().to_owned();
                record.lock().unwrap().push(id);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, taken)
}

/// Delay scheduling through the dispatcher: a job whose model a busy worker
/// holds is left to that worker rather than loaded on a free worker holding
/// another model (the locality wait is set long here); once more of the
/// model's jobs are queued than workers hold it, the free one loads it.
async fn a_job_is_left_to_the_worker_that_holds_its_model(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.queue.policy.locality_wait_ms = 600_000;
        c.workers.dispatch_tick_ms = 100;
    })
    .await;
    let internal = app.client_with(&app.internal_token);
    let both: Vec<String> = vec!["sdxl-1.0".into(), "flux-schnell".into()];
    let warm = Heartbeat {
        models: both.clone(),
        loaded_models: vec!["sdxl-1.0".into()],
        ..busy("warm-gpu")
    };
    internal.heartbeat(&warm).await.unwrap();
    let (address, taken) = recording_worker().await;
    internal
        .heartbeat(&Heartbeat {
            address,
            models: both.clone(),
            loaded_models: vec!["flux-schnell".into()],
            ..heartbeat("free-gpu")
        })
        .await
        .unwrap();

    let tg = app.frontend(Platform::Telegram, "tg-image-bot-1").await;
    let req = image_job(
        "telegram:4242",
        serde_json::json!({"prompt": "a lighthouse", "model": "sdxl-1.0"}),
    );
    let job = tg.create_job(&req, None).await.unwrap().job.job_id;
    // Many dispatch passes (every 100 ms, and the create's wake-up): the
    // free worker is not sent the job while the busy one holds its model.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        taken.lock().unwrap().is_empty(),
        "{:?}",
        taken.lock().unwrap()
    );
    assert_eq!(tg.get_job(&job).await.unwrap().status, JobState::Queued);

    // A second job of the model: more queued than workers holding it, so
    // the free worker loads it rather than leave both to the busy one.
    let second = tg.create_job(&req, None).await.unwrap().job.job_id;
    eventually(
        "the free worker takes the head of the model's jobs",
        || async {
            taken
                .lock()
                .unwrap()
                .iter()
                .any(|id| *id == job.to_string())
        },
    )
    .await;
    assert_eq!(tg.get_job(&second).await.unwrap().status, JobState::Queued);
    app.shutdown().await;
}

backend_tests!(
    a_job_is_left_to_the_worker_that_holds_its_model,
    only_the_internal_token_may_send_heartbeats,
    what_workers_report_is_validated,
    workers_go_offline_after_missed_heartbeats,
    lost_workers_jobs_are_requeued_then_failed_and_refunded,
    a_job_claimed_by_a_replica_that_died_before_sending_it_runs,
    a_result_refused_after_a_cancel_leaves_no_file,
    objects_no_row_names_are_swept,
);
