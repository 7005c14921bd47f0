//! ComfyUI templates checked against the node classes the server really has
//! (`/object_info`): a model whose template names a class the server lacks,
//! sets an input its class does not take, or leaves out one it requires is
//! refused with a sentence naming the model, the node and the class, and no
//! longer offered; the others go on. A ComfyUI that is not up when the worker
//! starts is checked once it answers. Also the stand-in's `/object_info`.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use tessera_core::params::{ImageParams, JobParams};
use tessera_core::{Capability, JobId};
use tessera_testkit::standins::comfyui::{ComfyUi as StandIn, Settings};
use tessera_testkit::{Backend, TestApp};
use tessera_worker::config::EngineConfig;
use tessera_worker::engine::comfyui::{ComfyUi, ComfyUiConfig};
use tessera_worker::engine::{Engine, Progress, Task};

const IMAGE_TEMPLATE: &str = include_str!("../workflows/image-example.json");

fn config(url: &str, dir: &Path, models: &[&str]) -> ComfyUiConfig {
    ComfyUiConfig {
        memory_mib: None,
        model_memory_mib: Default::default(),
        url: url.to_owned(),
        capability: Capability::Image,
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        workflows_dir: dir.to_owned(),
        websocket: true,
        poll_interval_ms: 20,
        max_output_bytes: 64 * 1024 * 1024,
        keep_metadata: false,
    }
}

/// The shipped image template with `change` applied to its graph.
fn template_with(change: impl FnOnce(&mut Value)) -> String {
    let mut graph: Value = serde_json::from_str(IMAGE_TEMPLATE).unwrap();
    change(&mut graph);
    graph.to_string()
}

/// Node "5" (the empty latent) as another class with the same inputs.
fn with_sd3_latent(graph: &mut Value) {
    graph["5"]["class_type"] = json!("EmptySD3LatentImage");
}

/// Node "3" (the sampler) sets an input KSampler does not take.
fn with_unknown_input(graph: &mut Value) {
    graph["3"]["inputs"]["sigma_boost"] = json!(1.5);
}

/// Writes the templates of `sdxl` (as shipped), `sd3` (an SD3 latent) and
/// `odd` (an input KSampler does not take).
fn three_templates(dir: &Path) {
    std::fs::write(dir.join("sdxl.json"), IMAGE_TEMPLATE).unwrap();
    std::fs::write(dir.join("sd3.json"), template_with(with_sd3_latent)).unwrap();
    std::fs::write(dir.join("odd.json"), template_with(with_unknown_input)).unwrap();
}

fn image_task(model: &str) -> Task {
    Task {
        job_id: JobId::generate(),
        model: model.into(),
        params: JobParams::Image(ImageParams {
            prompt: "a red fox".into(),
            negative_prompt: None,
            width: 64,
            height: 64,
            seed: Some(1),
            steps: 2,
        }),
        inputs: vec![],
    }
}

#[tokio::test]
async fn models_whose_templates_the_server_cannot_run_are_refused_and_named() {
    let comfy = StandIn::start().await;
    comfy.remove_node_class("EmptySD3LatentImage");
    let dir = tempfile::tempdir().unwrap();
    three_templates(dir.path());
    let engine = ComfyUi::new(
        config(&comfy.url(), dir.path(), &["sdxl", "sd3", "odd"]),
        reqwest::Client::new(),
    )
    .unwrap();
    // Before a check, everything configured is offered.
    assert_eq!(engine.models(), ["sdxl", "sd3", "odd"]);

    let check = engine.check_templates().await.unwrap();
    assert_eq!(check.usable, ["sdxl"]);
    assert_eq!(
        check.refused["sd3"],
        "model \"sd3\": node 5 uses class EmptySD3LatentImage, which this ComfyUI does not \
         have (is its custom node installed?)"
    );
    assert_eq!(
        check.refused["odd"],
        "model \"odd\": node 3 (KSampler) sets input \"sigma_boost\", which this ComfyUI's \
         KSampler does not take"
    );
    assert_eq!(engine.models(), ["sdxl"]);
    assert_eq!(comfy.requests_to("GET", "/object_info").len(), 1);

    // A job for a refused model sent before the scheduler heard goes back
    // (retryable) without reaching ComfyUI; the others run.
    let (progress, _rx) = Progress::new();
    let cancel = CancellationToken::new();
    let e = engine
        .run(&image_task("sd3"), &progress, &cancel)
        .await
        .unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(e.message.contains("EmptySD3LatentImage"), "{e:?}");
    assert!(comfy.prompts().is_empty());
    let artifacts = engine
        .run(&image_task("sdxl"), &progress, &cancel)
        .await
        .unwrap();
    assert_eq!(artifacts.len(), 1);
}

#[tokio::test]
async fn a_required_input_left_out_refuses_the_model_and_every_model_refused_offers_none() {
    let comfy = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.json"),
        template_with(|g| {
            g["3"]["inputs"].as_object_mut().unwrap().remove("denoise");
        }),
    )
    .unwrap();
    std::fs::write(dir.path().join("b.json"), template_with(with_unknown_input)).unwrap();
    let engine = ComfyUi::new(
        config(&comfy.url(), dir.path(), &["a", "b"]),
        reqwest::Client::new(),
    )
    .unwrap();
    let check = engine.check_templates().await.unwrap();
    assert!(check.usable.is_empty());
    assert_eq!(
        check.refused["a"],
        "model \"a\": node 3 (KSampler) leaves out input \"denoise\", which this ComfyUI's \
         KSampler requires"
    );
    assert!(engine.models().is_empty());
}

#[tokio::test]
async fn a_comfyui_that_cannot_be_read_changes_nothing() {
    let comfy = StandIn::start().await;
    let url = comfy.url();
    comfy.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    three_templates(dir.path());
    let engine = ComfyUi::new(
        config(&url, dir.path(), &["sdxl", "sd3"]),
        reqwest::Client::new(),
    )
    .unwrap();
    let e = engine.check_templates().await.unwrap_err();
    assert!(
        e.retryable && e.message.contains("cannot be reached"),
        "{e:?}"
    );
    assert_eq!(engine.models(), ["sdxl", "sd3"]);
}

/// Waits until the worker's heartbeat, as the scheduler shows it, offers `models`.
async fn wait_for_models(app: &TestApp, models: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let workers = serde_json::to_value(app.admin.list_workers().await.unwrap()).unwrap();
        let offered = &workers["workers"][0]["models"];
        if offered == &json!(models) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker offers {offered}, not {models:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker started before its ComfyUI offers every model; once ComfyUI
/// answers, its templates are checked and the heartbeat drops the refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comfyui_that_comes_up_after_the_worker_is_checked_when_it_answers() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.workers.heartbeat_interval_ms = 200;
    })
    .await;
    let first = StandIn::start().await;
    let url = first.url();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    first.shutdown().await;
    let dir = tempfile::tempdir().unwrap();
    three_templates(dir.path());
    let worker = app
        .worker(
            "worker-comfy-0",
            vec![EngineConfig::Comfyui(config(
                &url,
                dir.path(),
                &["sdxl", "sd3"],
            ))],
        )
        .await;
    wait_for_models(&app, &["sd3", "sdxl"]).await;
    let comfy = StandIn::start_at(addr, Settings::default()).await;
    comfy.remove_node_class("EmptySD3LatentImage");
    wait_for_models(&app, &["sdxl"]).await;
    assert!(!comfy.requests_to("GET", "/object_info").is_empty());
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

/// A ComfyUI that restarts without a custom node: when the readiness probe
/// finds it back, the templates are checked again before the worker says it
/// is ready, and the model that needs the missing class is no longer offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comfyui_that_comes_back_without_a_node_class_is_checked_again() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.workers.heartbeat_interval_ms = 200;
    })
    .await;
    let comfy = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    three_templates(dir.path());
    let worker = app
        .worker(
            "worker-comfy-0",
            vec![EngineConfig::Comfyui(config(
                &comfy.url(),
                dir.path(),
                &["sdxl", "sd3"],
            ))],
        )
        .await;
    wait_for_models(&app, &["sd3", "sdxl"]).await;
    let checks_before = comfy.requests_to("GET", "/object_info").len();
    comfy.go_away().await;
    comfy.remove_node_class("EmptySD3LatentImage");
    // The worker's probe finds it gone before it comes back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let workers = serde_json::to_value(app.admin.list_workers().await.unwrap()).unwrap();
        if workers["workers"][0]["engines"][0]["ready"] == json!(false) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never reported its ComfyUI down: {workers}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    comfy.come_back().await;
    wait_for_models(&app, &["sdxl"]).await;
    assert!(
        comfy.requests_to("GET", "/object_info").len() > checks_before,
        "the templates were not read against the restarted server"
    );
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn the_stand_in_describes_its_node_classes_as_comfyui_does() {
    let comfy = StandIn::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{}{path}", comfy.url()));
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().await.unwrap()
        }
    };
    let all = get("/object_info").await;
    let sampler = &all["KSampler"];
    assert_eq!(sampler["name"], "KSampler");
    assert_eq!(sampler["input"]["required"]["model"], json!(["MODEL"]));
    assert_eq!(sampler["input"]["required"]["steps"][0], "INT");
    assert_eq!(sampler["input"]["required"]["steps"][1]["min"], 1);
    assert!(sampler["input"]["required"]["sampler_name"][0]
        .as_array()
        .unwrap()
        .contains(&json!("euler")));
    assert_eq!(sampler["input_order"]["required"][0], "model");
    assert_eq!(sampler["output"], json!(["LATENT"]));
    assert_eq!(sampler["output_is_list"], json!([false]));
    assert_eq!(sampler["output_node"], false);
    assert_eq!(all["SaveImage"]["output_node"], true);
    let one = get("/object_info/SaveImage").await;
    assert_eq!(one.as_object().unwrap().len(), 1);
    assert_eq!(one["SaveImage"], all["SaveImage"]);
    assert_eq!(get("/object_info/NoSuchNode").await, json!({}));

    comfy.remove_node_class("EmptyLatentImage");
    assert!(get("/object_info").await.get("EmptyLatentImage").is_none());
    assert_eq!(get("/object_info/EmptyLatentImage").await, json!({}));
    let graph: Value = serde_json::from_str(IMAGE_TEMPLATE).unwrap();
    let refused = http
        .post(format!("{}/prompt", comfy.url()))
        .json(&json!({ "prompt": graph }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "missing_node_type");
}
