//! An engine that is down is not a worker that is free: the real scheduler
//! and a real worker whose ComfyUI (the stand-in) is killed and started
//! again, on both databases.
//!
//! ComfyUI going away mid-job drops the websocket and refuses connections;
//! the worker fails the attempt with `engine_unavailable`, finds its engine
//! down and says so; the scheduler puts the job back without counting the
//! attempt and sends nothing for that engine until it answers again. The
//! admin's worker list and the metrics show the engine down meanwhile.

use std::time::{Duration, Instant};

use serde_json::json;

use tessera_api::internal::{RunJob, WorkerInfo};
use tessera_api::public::{CreateJobRequest, JobView};
use tessera_api::{ApiErrorBody, Client};
use tessera_core::params::{ImageParams, JobParams};
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::standins::comfyui::{ComfyUi as StandIn, Settings};
use tessera_testkit::{backend_tests, sim, Backend, TestApp};
use tessera_worker::config::EngineConfig;
use tessera_worker::engine::comfyui::ComfyUiConfig;

const BOT: &str = "tg-image-bot-1";
const MODEL: &str = "sdxl-1.0";
const TEMPLATE: &str = include_str!("../workflows/image-example.json");

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    // Readiness travels on every heartbeat (200 ms); a worker is counted
    // lost only after 2 s of silence, which a loaded 2-core machine's
    // stalls stay under (at 600 ms the restart test's job was taken back
    // from a live worker in 2 of 4 full runs).
    config.workers.missed_heartbeats = 10;
    config.workers.dispatch_tick_ms = 100;
}

/// A ComfyUI engine for `MODEL` at `url`, its template in `dir`.
fn comfyui(url: &str, dir: &std::path::Path) -> EngineConfig {
    std::fs::write(dir.join(format!("{MODEL}.json")), TEMPLATE).unwrap();
    EngineConfig::Comfyui(ComfyUiConfig {
        memory_mib: None,
        model_memory_mib: Default::default(),
        url: url.to_owned(),
        capability: Capability::Image,
        models: vec![MODEL.into()],
        workflows_dir: dir.to_owned(),
        websocket: true,
        poll_interval_ms: 20,
        max_output_bytes: 64 * 1024 * 1024,
        keep_metadata: false,
    })
}

async fn create(client: &Client, capability: Capability, params: serde_json::Value) -> JobId {
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: BOT.parse().unwrap(),
        capability,
        user_ref: "telegram:1".parse().unwrap(),
        reply_context: None,
        params,
    };
    client.create_job(&req, None).await.unwrap().job.job_id
}

/// Polls until `done` holds, for up to 20 s, or panics saying `what` never happened.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut done: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = done().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job(client: &Client, id: &JobId) -> JobView {
    client.get_job(id).await.unwrap()
}

async fn worker_info(app: &TestApp, id: &str) -> WorkerInfo {
    let list = app.admin.list_workers().await.unwrap().workers;
    list.into_iter()
        .find(|w| w.heartbeat.worker_id.as_str() == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

/// The `tessera_worker_engine_ready` sample of a worker's engine, if exported.
async fn engine_ready_metric(app: &TestApp, worker: &str, engine: &str) -> Option<f64> {
    let text = app.scrape_metrics().await;
    let wanted = format!("worker=\"{worker}\"");
    let engine = format!("engine=\"{engine}\"");
    text.lines()
        .filter(|l| l.starts_with("tessera_worker_engine_ready{"))
        .find(|l| l.contains(&wanted) && l.contains(&engine))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn an_engine_restart_mid_job_completes_the_job_without_burning_an_attempt(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let comfy = StandIn::start_with(Settings {
        step_delay: Duration::from_millis(100),
        ..Settings::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let worker = app
        .worker("worker-gpu-0", vec![comfyui(&comfy.url(), dir.path())])
        .await;
    let id = create(&tg, Capability::Image, json!({"prompt": "a fox"})).await;

    // ComfyUI is killed while it runs the job, and comes back 3 s later.
    until("the job running on ComfyUI", || async {
        comfy.running().is_some().then_some(())
    })
    .await;
    let back = comfy.away_for(Duration::from_secs(3)).await;

    // The attempt failed on the dead engine, and did not count.
    let queued = until("the job back in the queue", || async {
        let j = job(&tg, &id).await;
        (j.status == JobState::Queued).then_some(j)
    })
    .await;
    assert_eq!(
        queued.attempts, 0,
        "the dead engine's attempt is not counted"
    );
    // While it is away, the worker says so and no job goes to it.
    let down = until("the engine reported down", || async {
        let w = worker_info(&app, "worker-gpu-0").await;
        w.heartbeat.engines.first().filter(|e| !e.ready).cloned()
    })
    .await;
    assert_eq!(down.engine, "comfyui");
    assert!(
        down.error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot be reached"),
        "{down:?}"
    );
    assert_eq!(
        engine_ready_metric(&app, "worker-gpu-0", "comfyui").await,
        Some(0.0)
    );

    back.await.unwrap();
    let done = until("the job finished", || async {
        let j = job(&tg, &id).await;
        j.status.is_terminal().then_some(j)
    })
    .await;
    assert_eq!(done.status, JobState::Completed, "{done:#?}");
    assert_eq!(done.attempts, 1, "only the attempt that ran counts");
    assert!(!done.refunded);
    assert_eq!(done.artifacts.len(), 1);
    // One prompt before the engine went away, one after it came back: none
    // was tried while it was down.
    assert_eq!(comfy.prompts().len(), 2);
    let up = worker_info(&app, "worker-gpu-0").await;
    assert!(up.heartbeat.engines[0].ready, "{up:?}");
    assert_eq!(
        engine_ready_metric(&app, "worker-gpu-0", "comfyui").await,
        Some(1.0)
    );
    worker.shutdown().await.unwrap();
}

async fn a_worker_whose_engine_is_down_gets_no_job_for_it_but_does_for_its_others(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let comfy = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    comfy.go_away().await;
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![
                comfyui(&comfy.url(), dir.path()),
                sim(Capability::Text, &["llama-3.2-3b"], 0),
            ],
        )
        .await;
    // The admin's list shows the engine down from the first heartbeat.
    let listed = until("the worker listed", || async {
        let list = app.admin.list_workers().await.unwrap().workers;
        list.into_iter().next()
    })
    .await;
    let engines = &listed.heartbeat.engines;
    assert_eq!(engines.len(), 2, "{listed:?}");
    assert!(!engines[0].ready && engines[0].capability == Capability::Image);
    assert!(engines[1].ready && engines[1].error.is_none());

    // The worker's own answers say the same, and it refuses a job for the
    // down engine with a code the dispatcher hands back without counting.
    let http = reqwest::Client::new();
    let base = format!("http://{}", worker.addr());
    let caps: serde_json::Value = http
        .get(format!("{base}/capabilities"))
        .bearer_auth(&app.internal_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(caps["engines"][0]["ready"], false, "{caps}");
    assert_eq!(caps["engines"][1]["ready"], true, "{caps}");
    let run = RunJob {
        job_id: JobId::generate(),
        attempt: 1,
        capability: Capability::Image,
        model_id: MODEL.into(),
        params: JobParams::Image(ImageParams {
            prompt: "a fox".into(),
            negative_prompt: None,
            width: 64,
            height: 64,
            seed: None,
            steps: 4,
        }),
        inputs: vec![],
        timeout_ms: 10_000,
        request_id: None,
    };
    let refused = http
        .post(format!("{base}/run_job"))
        .bearer_auth(&app.internal_token)
        .json(&run)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: ApiErrorBody = refused.json().await.unwrap();
    assert_eq!(body.error.code, "engine_unavailable");

    let picture = create(&tg, Capability::Image, json!({"prompt": "a fox"})).await;
    let words = create(&tg, Capability::Text, json!({"prompt": "Hello"})).await;
    let text = until("the text job finished", || async {
        let j = job(&tg, &words).await;
        j.status.is_terminal().then_some(j)
    })
    .await;
    assert_eq!(text.status, JobState::Completed, "{text:#?}");
    // Several heartbeats and dispatch passes later, the image job still waits,
    // never sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = job(&tg, &picture).await;
    assert_eq!(waiting.status, JobState::Queued, "{waiting:#?}");
    assert_eq!(waiting.attempts, 0);
    assert!(comfy.prompts().is_empty());

    comfy.come_back().await;
    let done = until("the image job finished", || async {
        let j = job(&tg, &picture).await;
        j.status.is_terminal().then_some(j)
    })
    .await;
    assert_eq!(done.status, JobState::Completed, "{done:#?}");
    assert_eq!(done.attempts, 1);
    worker.shutdown().await.unwrap();
}

/// An engine that answers its probe but fails every job as unavailable
/// (ComfyUI answering `/system_stats` and 503 to `/prompt`) does not keep a
/// job bouncing forever: its failures go uncounted only while the job has
/// waited less than `unservable_after_secs` since it was queued, then count,
/// and the job fails once it has used its attempts.
async fn failures_count_again_once_a_job_has_waited_past_the_bound(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.workers.unservable_after_secs = 1;
        c.workers.max_attempts = 2;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let comfy = StandIn::start().await;
    comfy.answer_prompts_with(Some(503));
    let dir = tempfile::tempdir().unwrap();
    let worker = app
        .worker("worker-gpu-0", vec![comfyui(&comfy.url(), dir.path())])
        .await;
    let id = create(&tg, Capability::Image, json!({"prompt": "a fox"})).await;
    let done = until("the job ended", || async {
        let j = job(&tg, &id).await;
        j.status.is_terminal().then_some(j)
    })
    .await;
    assert_eq!(done.status, JobState::Failed, "{done:#?}");
    let error = done.error.as_ref().expect("a failed job says why");
    assert_eq!(error.code, "engine_unavailable", "{done:#?}");
    assert_eq!(done.attempts, 2, "the attempts past the bound count");
    assert!(done.refunded);
    // More prompts than counted attempts: the failures before the bound
    // went uncounted.
    let tried = comfy.requests_to("POST", "/prompt").len();
    assert!(tried > 2, "only {tried} prompts were tried");
    worker.shutdown().await.unwrap();
}

backend_tests!(
    an_engine_restart_mid_job_completes_the_job_without_burning_an_attempt,
    a_worker_whose_engine_is_down_gets_no_job_for_it_but_does_for_its_others,
    failures_count_again_once_a_job_has_waited_past_the_bound,
);
