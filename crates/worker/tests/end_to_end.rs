//! End to end: the real scheduler, real workers and their engines (`sim`, and
//! espeak-ng for speech), over loopback HTTP, on both databases.
//!
//! Heartbeats are shortened to 200 ms (a worker is offline after 3 missed) so
//! that losing a worker takes a second, not a minute and a half.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use object_store::ObjectStore;
use tessera_api::public::{CreateJobRequest, JobView};
use tessera_api::Client;
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::engines::S3Server;
use tessera_testkit::{backend_tests, sim, Backend, TestApp};
use tessera_worker::config::EngineConfig;
use tessera_worker::engine::espeak::EspeakConfig;
use tessera_worker::engine::sim::{SimConfig, SIGNATURE};

const BOT: &str = "tg-image-bot-1";

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    // Counted lost after 2 s of silence: at 600 ms a stall of the loaded
    // machine once made the monitor take a live worker's job back, and the
    // load-time test saw it run twice. The killed-worker test waits 2 s.
    config.workers.missed_heartbeats = 10;
    config.workers.dispatch_tick_ms = 100;
}

/// A worker with one `sim` engine for sdxl images taking `run_ms` per job.
async fn sdxl_worker(app: &TestApp, id: &str, run_ms: u64) -> tessera_worker::WorkerHandle {
    app.worker(id, vec![sim(Capability::Image, &["sdxl-1.0"], run_ms)])
        .await
}

/// Waits up to 5 s for `done`, or panics saying `what` never happened.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates a job as a careful frontend does: with an idempotency key, retrying
/// when the connection drops (a scheduler restarting), so it is charged once.
async fn create(client: &Client, user: &str, capability: Capability, params: Value) -> JobId {
    let req = CreateJobRequest {
        callback_url: None,
        context: None,
        frontend: Platform::Telegram,
        bot_id: BOT.parse().unwrap(),
        capability,
        user_ref: user.parse().unwrap(),
        reply_context: None,
        params,
    };
    let key = JobId::generate().to_string();
    let mut tries = 0;
    tessera_testkit::create_retrying(
        client,
        &req,
        &key,
        Duration::from_secs(60),
        Duration::from_millis(50),
        |e| {
            tries += 1;
            matches!(e, tessera_api::ClientError::Transport(_)) && tries <= 20
        },
    )
    .await
}

/// Polls a job until `done` holds, or panics with its last state.
async fn wait_for(
    client: &Client,
    id: &JobId,
    what: &str,
    done: impl Fn(&JobView) -> bool,
) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = match client.get_job(id).await {
            Ok(job) => job,
            Err(tessera_api::ClientError::Transport(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => panic!("reading {id}: {e:?}"),
        };
        if done(&job) {
            return job;
        }
        if Instant::now() > deadline {
            panic!("{id} never became {what}: {job:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(client: &Client, id: &JobId) -> JobView {
    wait_for(client, id, "finished", |j| j.status.is_terminal()).await
}

async fn every_capability_runs_from_create_to_downloaded_artifact(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let pictures = app
        .worker(
            "worker-gpu-0",
            vec![
                sim(Capability::Image, &["sdxl-1.0", "flux-schnell"], 0),
                sim(Capability::Video, &["wan-2.1"], 0),
            ],
        )
        .await;
    let sound = app
        .worker(
            "worker-gpu-1",
            vec![
                sim(Capability::Text, &["llama-3.2-3b"], 0),
                sim(Capability::SpeechToText, &["whisper-base"], 0),
                EngineConfig::Espeak(EspeakConfig {
                    program: "espeak-ng".into(),
                    models: vec!["espeak-ng".into()],
                    default_voice: "en".into(),
                    words_per_minute: 175,
                }),
            ],
        )
        .await;
    let wav = tessera_worker::engine::sim::artifact(&tessera_worker::engine::Task {
        job_id: JobId::generate(),
        model: "espeak-ng".into(),
        params: tessera_core::params::JobParams::TextToSpeech(
            tessera_core::params::TextToSpeechParams {
                text: "an uploaded voice message".into(),
                voice: None,
                speed: 1.0,
            },
        ),
        inputs: vec![],
    })
    .bytes;
    let input = tg
        .upload_input("audio/wav", wav.to_vec())
        .await
        .expect("uploading audio");
    assert_eq!(input.size, wav.len() as u64);

    let jobs = [
        (
            Capability::Image,
            json!({"prompt": "a lighthouse at dusk", "resolution": "512x512"}),
        ),
        (
            Capability::Video,
            json!({"prompt": "waves", "resolution": "512x288", "duration_seconds": 2}),
        ),
        (
            Capability::Text,
            json!({"prompt": "Say hello.", "max_tokens": 64}),
        ),
        (
            Capability::SpeechToText,
            json!({"input_id": input.input_id}),
        ),
        (
            Capability::TextToSpeech,
            json!({"text": "Hello from Tessera."}),
        ),
    ];
    let mut ids = Vec::new();
    for (i, (capability, params)) in jobs.iter().enumerate() {
        let user = format!("telegram:{}", 100 + i);
        ids.push((
            *capability,
            create(&tg, &user, *capability, params.clone()).await,
        ));
    }
    for (capability, id) in ids {
        let job = finished(&tg, &id).await;
        assert_eq!(job.status, JobState::Completed, "{capability}: {job:#?}");
        assert_eq!(job.attempts, 1);
        assert_eq!(job.progress, Some(100.0));
        assert_eq!(job.artifacts.len(), 1, "{capability}");
        let artifact = &job.artifacts[0];
        let bytes = tg.download(&artifact.url).await.expect("downloading");
        assert_eq!(bytes.len() as u64, artifact.file_size);
        match capability {
            Capability::Image => {
                assert_eq!(&bytes[1..4], b"PNG");
                assert_eq!((artifact.width, artifact.height), (Some(256), Some(256)));
                assert!(String::from_utf8_lossy(&bytes).contains(SIGNATURE));
            }
            Capability::Video => {
                assert_eq!(artifact.format, "apng");
                assert!(bytes.windows(4).any(|w| w == b"acTL"), "an animated PNG");
            }
            Capability::Text => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains(SIGNATURE), "{text}");
            }
            Capability::SpeechToText => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(
                    text.contains(&format!("{} bytes of audio/wav", wav.len())),
                    "{text}"
                );
            }
            Capability::TextToSpeech => {
                assert_eq!(&bytes[0..4], b"RIFF");
                assert_eq!(&bytes[8..12], b"WAVE");
                assert!(bytes.len() > 20_000, "about a second of real speech");
            }
        }
    }
    // Another frontend cannot read these artifacts.
    let web = app.frontend(Platform::Web, "web-1").await;
    let job = tg
        .get_job(&tg.list_jobs(&Default::default()).await.unwrap().jobs[0].job_id)
        .await
        .unwrap();
    let other = web.download(&job.artifacts[0].url).await.unwrap_err();
    assert_eq!(other.code(), Some("artifact_not_found"));
    pictures.shutdown().await.unwrap();
    sound.shutdown().await.unwrap();
}

async fn a_killed_workers_job_is_completed_by_another(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let first = sdxl_worker(&app, "worker-gpu-0", 60_000).await;
    let id = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "a fox"}),
    )
    .await;
    let running = wait_for(&tg, &id, "running", |j| j.status == JobState::Running).await;
    assert_eq!(running.attempts, 1);
    // RUNNING is recorded when the job is claimed, just before it is sent.
    until("the worker never took the job", || {
        first.current_job() == Some(id.clone())
    })
    .await;
    first.kill();
    let second = sdxl_worker(&app, "worker-gpu-1", 0).await;
    let job = finished(&tg, &id).await;
    assert_eq!(job.status, JobState::Completed, "{job:#?}");
    assert_eq!(job.attempts, 2, "the second attempt finished it");
    assert!(!job.refunded);
    assert_eq!(job.artifacts.len(), 1);
    second.shutdown().await.unwrap();
}

async fn a_poison_job_fails_after_the_attempt_limit_and_is_refunded(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let worker = sdxl_worker(&app, "worker-gpu-0", 0).await;
    let id = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "[poison] a fox"}),
    )
    .await;
    let healthy = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "a fox"}),
    )
    .await;
    let job = finished(&tg, &id).await;
    assert_eq!(job.status, JobState::Failed);
    assert_eq!(job.attempts, 3, "max_attempts");
    assert!(job.refunded);
    let error = job.error.unwrap();
    assert_eq!(error.code, "engine_crashed");
    assert!(
        error.message.contains("after 3 attempts"),
        "{}",
        error.message
    );
    assert_eq!(finished(&tg, &healthy).await.status, JobState::Completed);
    let quota = tg.get_user("telegram:1").await.unwrap();
    assert_eq!(
        quota.tokens_used_today, 1,
        "only the healthy job is charged"
    );
    worker.shutdown().await.unwrap();
}

async fn cancelling_reaches_queued_and_running_jobs(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let worker = sdxl_worker(&app, "worker-gpu-0", 60_000).await;
    let running = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "one"}),
    )
    .await;
    wait_for(&tg, &running, "running", |j| j.status == JobState::Running).await;
    let queued = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "two"}),
    )
    .await;
    assert!(tg.get_job(&queued).await.unwrap().queue_position.is_some());

    let cancelled = tg.cancel_job(&queued).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.refunded),
        (JobState::Cancelled, true)
    );

    let cancelled = tg.cancel_job(&running).await.unwrap();
    assert_eq!(
        (cancelled.status, cancelled.refunded),
        (JobState::Cancelled, true)
    );
    // The engine stops: the worker is free again long before the 60 s run would end.
    until("the running job was never stopped", || {
        worker.current_job().is_none()
    })
    .await;
    // And it takes the next job.
    let next = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "three"}),
    )
    .await;
    wait_for(&tg, &next, "running", |j| j.status == JobState::Running).await;
    assert_eq!(
        tg.get_job(&running).await.unwrap().status,
        JobState::Cancelled
    );
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        1
    );
    worker.kill();
}

async fn a_scheduler_crash_mid_load_loses_nothing_and_runs_nothing_twice(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let workers = [
        sdxl_worker(&app, "worker-gpu-0", 30).await,
        sdxl_worker(&app, "worker-gpu-1", 30).await,
    ];
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            create(
                &tg,
                &format!("telegram:{}", i % 10),
                Capability::Image,
                json!({"prompt": format!("job {i}")}),
            )
            .await,
        );
    }
    // Crash while jobs are queued, running and being reported.
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.crash_and_restart(fast).await;
    for i in 40..60 {
        ids.push(
            create(
                &tg,
                &format!("telegram:{}", i % 10),
                Capability::Image,
                json!({"prompt": format!("job {i}")}),
            )
            .await,
        );
    }
    for id in &ids {
        let job = finished(&tg, id).await;
        assert_eq!(job.status, JobState::Completed, "{job:#?}");
        assert_eq!(job.artifacts.len(), 1);
    }
    // Each job ran once. (A job the crashed scheduler claimed but never sent
    // is taken back and dispatched again, so `attempts` may be 2; it still
    // runs once.)
    let mut runs = 0;
    for w in &workers {
        runs += tessera_testkit::engine_runs(w, &app.internal_token).await;
    }
    assert_eq!(runs, ids.len() as u64, "a job ran more than once");
    let checked =
        tessera_testkit::invariants::check(&**app.store(), &ids, Some(app.artifacts.path()), true)
            .await;
    assert_eq!(checked.jobs, 60);
    assert_eq!(checked.artifacts, 60);
    assert_eq!(checked.tokens_charged, 60);
    for w in workers {
        w.shutdown().await.unwrap();
    }
}

async fn a_loaded_model_attracts_its_jobs_while_priority_holds(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        // Warm jobs never pass a higher priority: affinity only orders within a tier.
        c.queue.policy.affinity_patience_ms = 0;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    // One worker, busy with a first sdxl job while the queue fills up.
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![EngineConfig::Sim(SimConfig {
                memory_mib: None,
                model_memory_mib: Default::default(),
                capability: Capability::Image,
                models: vec!["sdxl-1.0".into(), "flux-schnell".into()],
                run_ms: 300,
                load_ms: 100,
                fail_when_prompt_contains: None,
            })],
        )
        .await;
    app.admin
        .set_plan("telegram:2", &"starter".parse().unwrap())
        .await
        .unwrap();
    app.admin
        .set_plan("telegram:3", &"starter".parse().unwrap())
        .await
        .unwrap();
    let image = |model: &str| json!({"prompt": "p", "model": model, "resolution": "512x512"});
    // Warm up: sdxl is loaded and the worker busy while the queue fills.
    let first = create(&tg, "telegram:1", Capability::Image, image("sdxl-1.0")).await;
    wait_for(&tg, &first, "running", |j| j.status == JobState::Running).await;
    let starter_flux = create(&tg, "telegram:2", Capability::Image, image("flux-schnell")).await;
    let starter_sdxl = create(&tg, "telegram:3", Capability::Image, image("sdxl-1.0")).await;
    let free_sdxl = create(&tg, "telegram:4", Capability::Image, image("sdxl-1.0")).await;
    let mut started = Vec::new();
    for id in [&starter_flux, &starter_sdxl, &free_sdxl] {
        let job = finished(&tg, id).await;
        assert_eq!(job.status, JobState::Completed);
        started.push((job.started_at.unwrap(), id.clone()));
    }
    started.sort();
    let order: Vec<JobId> = started.into_iter().map(|(_, id)| id).collect();
    // Within the starter tier the job for the loaded model passes the older
    // one (affinity); the free job for the loaded model still waits for the
    // starter job that needs a model switch (priority).
    assert_eq!(order, vec![starter_sdxl, starter_flux, free_sdxl]);
    worker.shutdown().await.unwrap();
}

/// Two models that fit side by side on one worker: each loads once, both
/// stay resident with their footprints, the scheduler learns each model's
/// warm run and load from the results, and every job's promised start is
/// checked at its dispatch.
async fn run_and_load_times_are_learned_and_models_share_the_gpu(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![EngineConfig::Sim(SimConfig {
                memory_mib: Some(16_000),
                model_memory_mib: [
                    ("sdxl-1.0".to_owned(), 7_000),
                    ("flux-schnell".to_owned(), 9_000),
                ]
                .into_iter()
                .collect(),
                capability: Capability::Image,
                models: vec!["sdxl-1.0".into(), "flux-schnell".into()],
                run_ms: 100,
                load_ms: 800,
                fail_when_prompt_contains: None,
            })],
        )
        .await;
    app.admin
        .set_plan("telegram:1", &"starter".parse().unwrap())
        .await
        .unwrap();
    let image = |model: &str| json!({"prompt": "p", "model": model, "resolution": "512x512"});
    // Cold, cold, then warm twice each: nothing is evicted, so no model
    // loads twice.
    for model in [
        "sdxl-1.0",
        "flux-schnell",
        "sdxl-1.0",
        "flux-schnell",
        "sdxl-1.0",
        "flux-schnell",
    ] {
        let id = create(&tg, "telegram:1", Capability::Image, image(model)).await;
        assert_eq!(finished(&tg, &id).await.status, JobState::Completed);
    }
    let timings = app.store().timings().await.unwrap();
    assert_eq!(timings.len(), 2, "{timings:?}");
    for t in &timings {
        assert_eq!(t.worker_id.as_str(), "worker-gpu-0");
        assert_eq!((t.cold_runs, t.warm_runs), (1, 2), "{t:?}");
        // The sim sleeps 800 ms to load and 100 ms to run: a load is what
        // the cold run took beyond the warm ones.
        let load = t.cold_ms.unwrap() - t.warm_ms.unwrap();
        assert!(load >= 700.0, "{t:?}");
        assert!(t.warm_ms.unwrap() >= 100.0, "{t:?}");
    }
    // The heartbeat says both are resident, with their footprints.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let workers = app.admin.list_workers().await.unwrap().workers;
        let hb = &workers[0].heartbeat;
        if hb.loaded_models.len() == 2 {
            assert_eq!(hb.loaded_models, ["flux-schnell", "sdxl-1.0"]);
            let memory: Vec<(&str, u64)> = hb
                .model_memory
                .iter()
                .map(|m| (m.model.as_str(), m.mib))
                .collect();
            assert_eq!(memory, [("flux-schnell", 9_000), ("sdxl-1.0", 7_000)]);
            break;
        }
        assert!(Instant::now() < deadline, "{hb:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every job's estimate was checked at its dispatch.
    let metrics = app.scrape_metrics().await;
    let checked: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tessera_eta_error_ratio_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(checked, 6.0, "{metrics}");
    worker.shutdown().await.unwrap();
}

async fn a_job_no_worker_serves_says_so_then_fails_and_is_refunded(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.workers.unservable_after_secs = 1;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let worker = sdxl_worker(&app, "worker-gpu-0", 0).await;
    let id = create(
        &tg,
        "telegram:1",
        Capability::Video,
        json!({"prompt": "waves", "resolution": "512x288"}),
    )
    .await;
    let job = tg.get_job(&id).await.unwrap();
    assert_eq!(job.status, JobState::Queued);
    assert_eq!(job.queue_position, None);
    assert_eq!(job.notice.unwrap().code, "no_worker");
    let job = finished(&tg, &id).await;
    assert_eq!(job.status, JobState::Failed);
    assert_eq!(job.error.unwrap().code, "no_worker");
    assert!(job.refunded);
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        0
    );
    worker.shutdown().await.unwrap();
}

async fn a_run_timeout_fails_the_job_and_stops_the_engine(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.workers.run_timeout_secs.image = 1;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let worker = sdxl_worker(&app, "worker-gpu-0", 60_000).await;
    let id = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "slow"}),
    )
    .await;
    let job = finished(&tg, &id).await;
    assert_eq!(job.status, JobState::Failed);
    assert_eq!(job.error.unwrap().code, "run_timeout");
    assert!(job.refunded);
    until("the engine kept running", || worker.current_job().is_none()).await;
    worker.shutdown().await.unwrap();
}

/// With `artifacts.location` an `s3://` URL, results and uploaded inputs are
/// objects in that bucket (a real S3-compatible server on loopback), served
/// back through the public API byte for byte.
async fn artifacts_can_be_kept_in_an_s3_compatible_store(backend: Backend) {
    let s3 = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let options = s3.options();
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.artifacts.location = format!("s3://{}/farm-a", S3Server::BUCKET);
        c.artifacts.options = options;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![
                sim(Capability::Image, &["sdxl-1.0"], 0),
                sim(Capability::SpeechToText, &["whisper-base"], 0),
            ],
        )
        .await;
    let voice = b"RIFF....WAVE a voice message".to_vec();
    let input = tg.upload_input("audio/wav", voice.clone()).await.unwrap();
    let image = create(
        &tg,
        "telegram:1",
        Capability::Image,
        json!({"prompt": "a lighthouse at dusk", "resolution": "512x512"}),
    )
    .await;
    let heard = create(
        &tg,
        "telegram:2",
        Capability::SpeechToText,
        json!({"input_id": input.input_id}),
    )
    .await;

    let bucket = s3.bucket();
    let object = |key: String| {
        let bucket = &bucket;
        async move {
            let path = object_store::path::Path::from(key.as_str());
            match bucket.get(&path).await {
                Ok(found) => found.bytes().await.unwrap().to_vec(),
                Err(e) => panic!("{key} is not in the bucket: {e}"),
            }
        }
    };
    let input_key = format!("farm-a/inputs/{}", input.input_id);
    assert_eq!(object(input_key).await, voice);

    for id in [&image, &heard] {
        let job = finished(&tg, id).await;
        assert_eq!(job.status, JobState::Completed, "{job:#?}");
        let artifact = &job.artifacts[0];
        let served = tg.download(&artifact.url).await.expect("downloading");
        assert_eq!(served.len() as u64, artifact.file_size);
        assert!(String::from_utf8_lossy(&served).contains(SIGNATURE));
        let key = format!("farm-a/jobs/{id}-1-0.{}", artifact.format);
        assert_eq!(object(key).await, served);
    }
    // The speech-to-text engine was given the bytes that were kept in S3.
    let job = finished(&tg, &heard).await;
    let text = String::from_utf8(tg.download(&job.artifacts[0].url).await.unwrap()).unwrap();
    assert!(
        text.contains(&format!("{} bytes of audio/wav", voice.len())),
        "{text}"
    );
    worker.shutdown().await.unwrap();
}

backend_tests!(
    artifacts_can_be_kept_in_an_s3_compatible_store,
    every_capability_runs_from_create_to_downloaded_artifact,
    a_killed_workers_job_is_completed_by_another,
    a_poison_job_fails_after_the_attempt_limit_and_is_refunded,
    cancelling_reaches_queued_and_running_jobs,
    a_scheduler_crash_mid_load_loses_nothing_and_runs_nothing_twice,
    a_loaded_model_attracts_its_jobs_while_priority_holds,
    run_and_load_times_are_learned_and_models_share_the_gpu,
    a_job_no_worker_serves_says_so_then_fails_and_is_refunded,
    a_run_timeout_fails_the_job_and_stops_the_engine,
);
