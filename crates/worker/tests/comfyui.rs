//! The ComfyUI engine against the loopback ComfyUI stand-in: the whole run
//! (queue, websocket, history, view), the parameters it writes into the graph,
//! its answers to every failure, cancellation and unloading; and the stand-in's
//! own rules where they copy ComfyUI's (`/view` paths, `/prompt` refusals).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use tessera_api::internal::ArtifactKind;
use tessera_core::params::{ImageParams, JobParams, VideoParams};
use tessera_core::{Capability, JobId};
use tessera_testkit::standins::comfyui::{ComfyUi as StandIn, Settings};
use tessera_worker::config::EngineConfig;
use tessera_worker::engine::comfyui::{ComfyUi, ComfyUiConfig};
use tessera_worker::engine::{self, Artifact, Engine, EngineError, Progress, Task};

const IMAGE_TEMPLATE: &str = include_str!("../workflows/image-example.json");
const VIDEO_TEMPLATE: &str = include_str!("../workflows/video-example.json");

/// Node ids of the shipped templates.
const IMAGE_PROMPT: &str = "6";
const IMAGE_NEGATIVE: &str = "7";
const IMAGE_SIZE: &str = "5";
const IMAGE_SAMPLER: &str = "3";
const VIDEO_SIZE: &str = "40";
const VIDEO_OUTPUT: &str = "28";

struct Setup {
    comfy: StandIn,
    engine: ComfyUi,
    _dir: tempfile::TempDir,
}

fn config(url: &str, capability: Capability, dir: &Path) -> ComfyUiConfig {
    ComfyUiConfig {
        memory_mib: None,
        model_memory_mib: Default::default(),
        url: url.to_owned(),
        capability,
        models: vec!["model-a".into()],
        workflows_dir: dir.to_owned(),
        websocket: true,
        poll_interval_ms: 20,
        max_output_bytes: 64 * 1024 * 1024,
        keep_metadata: false,
    }
}

fn write_template(dir: &Path, model: &str, text: &str) {
    std::fs::write(dir.join(format!("{model}.json")), text).unwrap();
}

async fn setup_with(
    capability: Capability,
    settings: Settings,
    template: &str,
    tweak: impl FnOnce(&mut ComfyUiConfig),
) -> Setup {
    let comfy = StandIn::start_with(settings).await;
    let dir = tempfile::tempdir().unwrap();
    write_template(dir.path(), "model-a", template);
    let mut config = config(&comfy.url(), capability, dir.path());
    tweak(&mut config);
    let engine = ComfyUi::new(config, reqwest::Client::new()).unwrap();
    Setup {
        comfy,
        engine,
        _dir: dir,
    }
}

async fn image_setup() -> Setup {
    setup_with(
        Capability::Image,
        Settings::default(),
        IMAGE_TEMPLATE,
        |_| {},
    )
    .await
}

fn image_task(width: u32, height: u32, seed: Option<u64>) -> Task {
    Task {
        job_id: JobId::generate(),
        model: "model-a".into(),
        params: JobParams::Image(ImageParams {
            prompt: "a red fox in the snow".into(),
            negative_prompt: Some("blurry".into()),
            width,
            height,
            seed,
            steps: 6,
        }),
        inputs: vec![],
    }
}

fn video_task() -> Task {
    Task {
        job_id: JobId::generate(),
        model: "model-a".into(),
        params: JobParams::Video(VideoParams {
            prompt: "waves on a beach".into(),
            negative_prompt: None,
            width: 64,
            height: 48,
            duration_seconds: 1,
            fps: 8,
            seed: Some(3),
        }),
        inputs: vec![],
    }
}

/// Runs a task, collecting every progress value reported.
async fn run(
    engine: &ComfyUi,
    task: &Task,
    cancel: &CancellationToken,
) -> (Result<Vec<Artifact>, EngineError>, Vec<f32>) {
    let (progress, rx) = Progress::new();
    let seen = tokio::spawn(record(rx));
    let result = engine.run(task, &progress, cancel).await;
    drop(progress);
    (result, seen.await.unwrap())
}

async fn record(mut rx: watch::Receiver<Option<f32>>) -> Vec<f32> {
    let mut seen = Vec::new();
    while rx.changed().await.is_ok() {
        if let Some(p) = *rx.borrow_and_update() {
            seen.push(p);
        }
    }
    seen
}

fn last_graph(comfy: &StandIn) -> Value {
    comfy.prompts().pop().expect("a prompt was posted")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn an_image_job_returns_the_png_comfyui_saved() {
    let s = image_setup().await;
    assert!(s.engine.loaded_models().is_empty());
    let (result, progress) = run(
        &s.engine,
        &image_task(96, 64, Some(42)),
        &CancellationToken::new(),
    )
    .await;
    let artifacts = result.unwrap();
    assert_eq!(artifacts.len(), 1);
    let a = &artifacts[0];
    assert_eq!(a.meta.kind, ArtifactKind::Image);
    assert_eq!(a.meta.format, "png");
    assert_eq!((a.meta.width, a.meta.height), (Some(96), Some(64)));
    assert!(a.bytes.starts_with(b"\x89PNG"));

    // Progress only moves forward, follows the sampler's steps, ends at 100.
    assert!(progress.len() >= 3, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100.0));
    assert!(progress.iter().any(|p| *p > 0.0 && *p < 100.0));

    assert_eq!(s.engine.loaded_models(), vec!["model-a".to_string()]);
    // The file came through /view, named only in the query, from the output folder.
    let views = s.comfy.requests_to("GET", "/view");
    assert_eq!(views.len(), 1);
    let query = views[0].query.clone().unwrap();
    assert!(query.contains("type=output"), "{query}");
    assert!(query.contains("subfolder=tessera"), "{query}");
    // The prompt came with a client id, the one the websocket used.
    let posted = s.comfy.requests_to("POST", "/prompt");
    let client_id = posted[0].body.as_ref().unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sockets = s.comfy.requests_to("GET", "/ws");
    assert_eq!(sockets.len(), 1);
    assert!(sockets[0]
        .query
        .as_deref()
        .unwrap()
        .contains(&format!("clientId={client_id}")));
}

#[tokio::test]
async fn a_video_job_returns_the_animated_webp() {
    let s = setup_with(
        Capability::Video,
        Settings::default(),
        VIDEO_TEMPLATE,
        |_| {},
    )
    .await;
    let (result, progress) = run(&s.engine, &video_task(), &CancellationToken::new()).await;
    let artifacts = result.unwrap();
    assert_eq!(artifacts.len(), 1);
    let a = &artifacts[0];
    assert_eq!(a.meta.kind, ArtifactKind::Video);
    assert_eq!(a.meta.format, "webp");
    assert_eq!((a.meta.width, a.meta.height), (Some(64), Some(48)));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100.0));

    // Frames and frame rate went to the latent and the output node.
    let graph = last_graph(&s.comfy);
    assert_eq!(graph[VIDEO_SIZE]["inputs"]["length"], 8);
    assert_eq!(graph[VIDEO_SIZE]["inputs"]["width"], 64);
    assert_eq!(graph[VIDEO_OUTPUT]["inputs"]["fps"], 8.0);
    // No negative prompt: the template's own stays.
    let template: Value = serde_json::from_str(VIDEO_TEMPLATE).unwrap();
    assert_eq!(
        graph["7"]["inputs"]["text"],
        template["7"]["inputs"]["text"]
    );
}

#[tokio::test]
async fn parameters_land_in_the_named_nodes() {
    let s = image_setup().await;
    let (result, _) = run(
        &s.engine,
        &image_task(128, 96, Some(1234)),
        &CancellationToken::new(),
    )
    .await;
    result.unwrap();
    let graph = last_graph(&s.comfy);
    assert_eq!(
        graph[IMAGE_PROMPT]["inputs"]["text"],
        "a red fox in the snow"
    );
    assert_eq!(graph[IMAGE_NEGATIVE]["inputs"]["text"], "blurry");
    assert_eq!(graph[IMAGE_SIZE]["inputs"]["width"], 128);
    assert_eq!(graph[IMAGE_SIZE]["inputs"]["height"], 96);
    assert_eq!(graph[IMAGE_SAMPLER]["inputs"]["seed"], 1234);
    assert_eq!(graph[IMAGE_SAMPLER]["inputs"]["steps"], 6);
    // Everything else is the template's.
    let template: Value = serde_json::from_str(IMAGE_TEMPLATE).unwrap();
    assert_eq!(
        graph[IMAGE_SAMPLER]["inputs"]["cfg"],
        template[IMAGE_SAMPLER]["inputs"]["cfg"]
    );
    assert_eq!(graph["4"], template["4"]);
}

#[tokio::test]
async fn the_seed_is_random_when_the_job_gives_none() {
    let s = image_setup().await;
    let mut seeds = Vec::new();
    for _ in 0..2 {
        let (result, _) = run(
            &s.engine,
            &image_task(64, 64, None),
            &CancellationToken::new(),
        )
        .await;
        result.unwrap();
        let seed = last_graph(&s.comfy)[IMAGE_SAMPLER]["inputs"]["seed"]
            .as_u64()
            .unwrap();
        assert!(seed < 1 << 53);
        seeds.push(seed);
    }
    assert_ne!(seeds[0], seeds[1]);
}

#[tokio::test]
async fn a_graph_comfyui_refuses_is_rejected_with_its_reasons() {
    let bad = IMAGE_TEMPLATE.replace("\"euler\"", "\"no-such-sampler\"");
    let s = setup_with(Capability::Image, Settings::default(), &bad, |_| {}).await;
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(!e.retryable);
    assert!(
        e.message.contains("Prompt outputs failed validation"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Value not in list"), "{}", e.message);
    assert!(e.message.contains("no-such-sampler"), "{}", e.message);
    assert!(e.message.contains("tessera:sampler"), "{}", e.message);

    // A node class ComfyUI does not have.
    let unknown = IMAGE_TEMPLATE.replace("\"VAEDecode\"", "\"VAEDecodeFancy\"");
    let s = setup_with(Capability::Image, Settings::default(), &unknown, |_| {}).await;
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(e.message.contains("not found"), "{}", e.message);
    // Nothing was loaded: the prompt never ran.
    assert!(s.engine.loaded_models().is_empty());
}

#[tokio::test]
async fn a_node_failure_is_rejected_and_out_of_memory_is_retryable() {
    let s = image_setup().await;
    s.comfy
        .fail_next_execution("RuntimeError", "mat1 and mat2 shapes cannot be multiplied");
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(
        e.message
            .contains("RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
        "{}",
        e.message
    );
    assert!(e.message.contains("KSampler"), "{}", e.message);
    // The model did start loading.
    assert_eq!(s.engine.loaded_models(), vec!["model-a".to_string()]);

    s.comfy.fail_next_execution(
        "torch.OutOfMemoryError",
        "Allocation on device 0 would exceed allowed memory.",
    );
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(e.message.contains("out of GPU memory"), "{}", e.message);
    // ComfyUI ended those prompts itself: nothing to interrupt.
    assert!(s.comfy.requests_to("POST", "/interrupt").is_empty());
}

#[tokio::test]
async fn a_node_failure_seen_only_in_history_is_reported_too() {
    let s = setup_with(
        Capability::Image,
        Settings::default(),
        IMAGE_TEMPLATE,
        |c| c.websocket = false,
    )
    .await;
    s.comfy.fail_next_execution("ValueError", "bad latent");
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(
        e.message.contains("ValueError: bad latent"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_dropped_websocket_falls_back_to_history() {
    let s = setup_with(
        Capability::Image,
        Settings {
            step_delay: Duration::from_millis(20),
            ..Settings::default()
        },
        IMAGE_TEMPLATE,
        |_| {},
    )
    .await;
    s.comfy.drop_websockets_at_step(2);
    let (result, progress) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let artifacts = result.unwrap();
    assert_eq!(artifacts[0].meta.format, "png");
    assert_eq!(progress.last(), Some(&100.0));
    // The run went on by polling /history.
    let prompt_id = prompt_id(&s.comfy);
    let polls = s.comfy.requests_to("GET", &format!("/history/{prompt_id}"));
    assert!(polls.len() >= 2, "{} polls", polls.len());
}

#[tokio::test]
async fn a_refused_websocket_polls_from_the_start() {
    let s = image_setup().await;
    s.comfy.refuse_websockets(true);
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(result.unwrap().len(), 1);
}

fn prompt_id(comfy: &StandIn) -> String {
    let posted = comfy.requests_to("POST", "/prompt");
    posted[0].body.as_ref().unwrap()["prompt_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn cancel_mid_run_interrupts_comfyui() {
    let s = setup_with(
        Capability::Image,
        Settings {
            step_delay: Duration::from_millis(50),
            ..Settings::default()
        },
        IMAGE_TEMPLATE,
        |_| {},
    )
    .await;
    let cancel = CancellationToken::new();
    let (progress, mut rx) = Progress::new();
    let task = image_task(64, 64, Some(1));
    let c = cancel.clone();
    let canceller = tokio::spawn(async move {
        // Once the sampler is under way.
        while rx.changed().await.is_ok() {
            if rx.borrow_and_update().is_some_and(|p| p > 0.0) {
                break;
            }
        }
        c.cancel();
    });
    let started = std::time::Instant::now();
    let e = s.engine.run(&task, &progress, &cancel).await.unwrap_err();
    canceller.await.unwrap();
    assert_eq!(e, EngineError::cancelled());
    assert!(started.elapsed() < Duration::from_secs(5));

    let id = prompt_id(&s.comfy);
    let interrupts = s.comfy.requests_to("POST", "/interrupt");
    assert_eq!(interrupts.len(), 1);
    assert_eq!(interrupts[0].body.as_ref().unwrap()["prompt_id"], id);
    // It had started: nothing to delete from the queue.
    assert!(s.comfy.requests_to("POST", "/queue").is_empty());
    // ComfyUI stopped it.
    eventually("the interrupted prompt in history", || {
        s.comfy.history(&id).is_some()
    })
    .await;
    let entry = s.comfy.history(&id).unwrap();
    assert_eq!(entry["status"]["status_str"], "error");
    let last = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()[0]
        .clone();
    assert_eq!(last, "execution_interrupted");
}

#[tokio::test]
async fn cancel_before_start_deletes_the_queued_prompt() {
    let s = image_setup().await;
    s.comfy.hold_queue(true);
    let cancel = CancellationToken::new();
    let task = image_task(64, 64, Some(1));
    let c = cancel.clone();
    let pending = async {
        eventually("a queued prompt", || !s.comfy.pending().is_empty()).await;
        c.cancel();
    };
    let (result, ()) = tokio::join!(
        async {
            let (progress, _rx) = Progress::new();
            s.engine.run(&task, &progress, &cancel).await
        },
        pending
    );
    assert_eq!(result.unwrap_err(), EngineError::cancelled());
    let id = prompt_id(&s.comfy);
    let deletes = s.comfy.requests_to("POST", "/queue");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body.as_ref().unwrap()["delete"], json!([id]));
    assert!(s.comfy.pending().is_empty());
    // And it never runs.
    s.comfy.hold_queue(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.comfy.history(&id).is_none());
    assert!(s.engine.loaded_models().is_empty());
}

#[tokio::test]
async fn a_run_dropped_by_a_time_limit_still_stops_the_prompt() {
    let s = setup_with(
        Capability::Image,
        Settings {
            step_delay: Duration::from_millis(100),
            ..Settings::default()
        },
        IMAGE_TEMPLATE,
        |_| {},
    )
    .await;
    let (progress, _rx) = Progress::new();
    let task = image_task(64, 64, Some(1));
    let cancel = CancellationToken::new();
    let limited = tokio::time::timeout(
        Duration::from_millis(300),
        s.engine.run(&task, &progress, &cancel),
    )
    .await;
    assert!(limited.is_err());
    eventually("an interrupt", || {
        !s.comfy.requests_to("POST", "/interrupt").is_empty()
    })
    .await;
}

#[tokio::test]
async fn unload_frees_comfyui_memory() {
    let s = image_setup().await;
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    result.unwrap();
    assert_eq!(s.engine.loaded_models(), vec!["model-a".to_string()]);
    s.engine.unload().await.unwrap();
    let frees = s.comfy.requests_to("POST", "/free");
    assert_eq!(frees.len(), 1);
    assert_eq!(
        frees[0].body,
        Some(json!({ "unload_models": true, "free_memory": true }))
    );
    assert!(s.engine.loaded_models().is_empty());
}

#[tokio::test]
async fn comfyui_down_or_failing_is_unavailable() {
    // Nothing listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    write_template(dir.path(), "model-a", IMAGE_TEMPLATE);
    let engine = ComfyUi::new(
        config(
            &format!("http://127.0.0.1:{port}"),
            Capability::Image,
            dir.path(),
        ),
        reqwest::Client::new(),
    )
    .unwrap();
    let (result, _) = run(
        &engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.retryable);
    let e = engine.unload().await.unwrap_err();
    assert_eq!(e.code, "engine_unavailable");

    // A server error from /prompt.
    let s = image_setup().await;
    s.comfy.answer_prompts_with(Some(503));
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.message.contains("503"), "{}", e.message);

    // The server going away in the middle of a run.
    let s = setup_with(
        Capability::Image,
        Settings {
            step_delay: Duration::from_millis(50),
            ..Settings::default()
        },
        IMAGE_TEMPLATE,
        |_| {},
    )
    .await;
    let Setup {
        comfy,
        engine,
        _dir,
    } = s;
    let (progress, mut rx) = Progress::new();
    let task = image_task(64, 64, Some(1));
    let stopper = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if rx.borrow_and_update().is_some_and(|p| p > 0.0) {
                break;
            }
        }
        comfy.shutdown().await;
    });
    let e = engine
        .run(&task, &progress, &CancellationToken::new())
        .await
        .unwrap_err();
    stopper.await.unwrap();
    assert_eq!(e.code, "engine_unavailable", "{e:?}");
}

#[tokio::test]
async fn a_prompt_lost_in_a_restart_is_unavailable() {
    let s = setup_with(
        Capability::Image,
        Settings::default(),
        IMAGE_TEMPLATE,
        |c| c.websocket = false,
    )
    .await;
    s.comfy.hold_queue(true);
    let task = image_task(64, 64, Some(1));
    let restart = async {
        eventually("a queued prompt", || !s.comfy.pending().is_empty()).await;
        s.comfy.restart();
    };
    let (result, ()) = tokio::join!(
        async {
            let (progress, _rx) = Progress::new();
            s.engine
                .run(&task, &progress, &CancellationToken::new())
                .await
        },
        restart
    );
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_unavailable");
    assert!(e.message.contains("no longer knows"), "{}", e.message);
}

#[tokio::test]
async fn an_output_outside_the_output_folder_fails_as_comfyui_does() {
    let escaping = IMAGE_TEMPLATE.replace("\"tessera/image\"", "\"../../etc/image\"");
    let s = setup_with(Capability::Image, Settings::default(), &escaping, |_| {}).await;
    let (result, _) = run(
        &s.engine,
        &image_task(64, 64, Some(1)),
        &CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.code, "engine_rejected");
    assert!(
        e.message.contains("outside the output folder"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn jobs_the_engine_does_not_serve_are_rejected() {
    let s = image_setup().await;
    let mut task = image_task(64, 64, None);
    task.model = "other".into();
    let (result, _) = run(&s.engine, &task, &CancellationToken::new()).await;
    assert_eq!(result.unwrap_err().code, "engine_rejected");
    let (result, _) = run(&s.engine, &video_task(), &CancellationToken::new()).await;
    assert_eq!(result.unwrap_err().code, "engine_rejected");
    assert!(s.comfy.requests_to("POST", "/prompt").is_empty());
}

#[tokio::test]
async fn bad_templates_stop_the_worker_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9";
    let err = |capability: Capability| {
        ComfyUi::new(config(url, capability, dir.path()), reqwest::Client::new())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    };
    // Missing.
    let e = err(Capability::Image);
    assert!(e.contains("model-a") && e.contains("model-a.json"), "{e}");
    // Not JSON.
    write_template(dir.path(), "model-a", "{ not json");
    assert!(err(Capability::Image).contains("not valid JSON"));
    // Without the node the capability needs.
    let untitled = IMAGE_TEMPLATE.replace("tessera:sampler", "KSampler");
    write_template(dir.path(), "model-a", &untitled);
    let e = err(Capability::Image);
    assert!(e.contains("tessera:sampler"), "{e}");
    // An image template for a video engine: no frame count to set.
    write_template(dir.path(), "model-a", IMAGE_TEMPLATE);
    let e = err(Capability::Video);
    assert!(e.contains("length"), "{e}");
    // A capability ComfyUI does not serve here.
    assert!(err(Capability::Text).contains("image or video"));
    // Good at last.
    assert!(err(Capability::Image).is_empty());
}

#[tokio::test]
async fn the_configuration_builds_a_comfyui_engine() {
    let dir = tempfile::tempdir().unwrap();
    write_template(dir.path(), "sdxl-1.0", IMAGE_TEMPLATE);
    let config: EngineConfig = serde_json::from_value(json!({
        "kind": "comfyui",
        "capability": "image",
        "models": ["sdxl-1.0"],
        "workflows_dir": dir.path(),
    }))
    .unwrap();
    let engines = engine::build(&[config], &reqwest::Client::new()).unwrap();
    assert_eq!(engines[0].kind(), "comfyui");
    assert_eq!(engines[0].capability(), Capability::Image);
    assert_eq!(engines[0].models(), vec!["sdxl-1.0".to_string()]);
}

// The stand-in's own rules, as ComfyUI's server applies them.

#[tokio::test]
async fn the_stand_in_serves_view_with_comfyui_path_rules() {
    let comfy = StandIn::start().await;
    comfy.put_file("output", "sub", "a.png", b"PNGDATA".to_vec());
    comfy.put_file("output", "", "top.png", b"TOP".to_vec());
    let http = reqwest::Client::new();
    let view = |query: &'static str| {
        let url = format!("{}/view?{query}", comfy.url());
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let (status, body) = view("filename=a.png&subfolder=sub&type=output").await;
    assert_eq!((status, &body[..]), (200, &b"PNGDATA"[..]));
    // type defaults to output; no subfolder is the folder itself.
    assert_eq!(view("filename=top.png").await.0, 200);
    // Only the last component of the name counts.
    assert_eq!(view("filename=x/a.png&subfolder=sub").await.0, 200);
    // `..` or an absolute name: 400.
    assert_eq!(view("filename=../top.png").await.0, 400);
    assert_eq!(view("filename=..%2Fsub%2Fa.png").await.0, 400);
    assert_eq!(view("filename=%2Fetc%2Fpasswd").await.0, 400);
    // A folder type ComfyUI does not have: 400.
    assert_eq!(view("filename=a.png&type=models").await.0, 400);
    // A subfolder that leaves the folder: 403.
    assert_eq!(view("filename=a.png&subfolder=..").await.0, 403);
    assert_eq!(view("filename=a.png&subfolder=sub%2F..%2F..").await.0, 403);
    assert_eq!(view("filename=a.png&subfolder=%2Fetc").await.0, 403);
    // One that stays inside is fine.
    assert_eq!(view("filename=a.png&subfolder=x%2F..%2Fsub").await.0, 200);
    // Unknown file, or no filename: 404.
    assert_eq!(view("filename=nope.png").await.0, 404);
    assert_eq!(view("type=output").await.0, 404);
    assert_eq!(view("filename=a.png&type=temp&subfolder=sub").await.0, 404);
}

#[tokio::test]
async fn the_stand_in_refuses_prompts_in_comfyui_shape() {
    let comfy = StandIn::start().await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{}/prompt", comfy.url());
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(json!({ "client_id": "x" })).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "no_prompt");
    assert_eq!(body["node_errors"], json!({}));

    let (status, body) = post(json!({ "prompt": {
        "1": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "Mystery"}}
    }}))
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "missing_node_type");
    assert_eq!(
        body["error"]["message"],
        "Node 'Mystery' not found. The custom node may not be installed."
    );
    assert_eq!(body["error"]["extra_info"]["class_type"], "NoSuchNode");

    let (status, body) = post(json!({ "prompt": {
        "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "x"}}
    }}))
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "prompt_no_outputs");

    // A required input missing: the node is named in node_errors.
    let mut graph: Value = serde_json::from_str(IMAGE_TEMPLATE).unwrap();
    graph["3"]["inputs"]
        .as_object_mut()
        .unwrap()
        .remove("steps");
    let (status, body) = post(json!({ "prompt": graph })).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let errors = &body["node_errors"]["3"];
    assert_eq!(errors["class_type"], "KSampler");
    assert_eq!(errors["errors"][0]["type"], "required_input_missing");
    assert_eq!(errors["errors"][0]["details"], "steps");
    assert_eq!(errors["dependent_outputs"], json!(["9"]));

    // The shipped templates are accepted as they are.
    for template in [IMAGE_TEMPLATE, VIDEO_TEMPLATE] {
        let graph: Value = serde_json::from_str(template).unwrap();
        let (status, body) = post(json!({ "prompt": graph })).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["prompt_id"].is_string());
        assert_eq!(body["node_errors"], json!({}));
    }
}
