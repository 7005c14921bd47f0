//! Outputs judged before delivery, end to end: the real scheduler on both
//! databases, a real worker running NudeNet's detector (the model and ONNX
//! Runtime from the test virtualenv) on what its engines make, and the
//! scheduler's `[moderation.outputs]` deciding.
//!
//! No explicit image is made or shipped. The withholding path is driven by
//! configured thresholds on what the model really reports: a drawn,
//! blurred skin-toned oval with a face's features (the ComfyUI stand-in
//! paints it, as a model would) is scored `BUTTOCKS_EXPOSED` at about 0.37
//! by NudeNet's 320n, a false positive well under the default threshold
//! (0.5), so it is delivered with its label stored; configured at 0.3, the
//! same label withholds it.

use std::time::{Duration, Instant};

use serde_json::json;

use tessera_api::nsfw::JobContext;
use tessera_api::public::{CreateJobRequest, JobView};
use tessera_api::review::{CaseKind, CaseStatus, ListCasesQuery};
use tessera_api::{Client, ErrorCode};
use tessera_core::moderation::outputs::Unclassified;
use tessera_core::moderation::{Action, RuleConfig};
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::classifier::{assets, oval_face, patient, withholding, PaintingWorker};
use tessera_testkit::{backend_tests, sim, Backend, TestApp};
use tessera_worker::config::ModerationConfig;

const BOT: &str = "tg-image-bot-1";
const USER: &str = "telegram:1";
fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    config.workers.dispatch_tick_ms = 100;
    patient(config);
}

async fn create(client: &Client, capability: Capability, params: serde_json::Value) -> JobId {
    create_in(client, None, capability, params).await
}

/// A job from `USER`, written in the Telegram chat `chat` (`None`: the
/// plain context, where adult content is not allowed).
async fn create_in(
    client: &Client,
    chat: Option<i64>,
    capability: Capability,
    params: serde_json::Value,
) -> JobId {
    let req = CreateJobRequest {
        callback_url: None,
        frontend: Platform::Telegram,
        bot_id: BOT.parse().unwrap(),
        capability,
        user_ref: USER.parse().unwrap(),
        reply_context: None,
        context: chat.map(JobContext::telegram),
        params,
    };
    client.create_job(&req, None).await.unwrap().job.job_id
}

/// The job once it has ended, within 60 s (the first classification
/// loads the model).
async fn ended(client: &Client, id: &JobId) -> JobView {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = client.get_job(id).await.unwrap();
        if job.status.is_terminal() {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {job:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_tests!(
    benign_outputs_are_delivered_with_their_labels_stored,
    a_configured_threshold_withholds_the_output_for_review,
    a_group_that_allows_adult_content_gets_what_is_withheld_elsewhere,
    unclassified_outputs_are_withheld_when_configured_and_tokens_kept,
    text_answers_are_held_to_the_prompt_rules,
);

async fn benign_outputs_are_delivered_with_their_labels_stored(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let painting = PaintingWorker::start(
        &app,
        "worker-gpu-0",
        vec![sim(Capability::Video, &["wan-2.1"], 10)],
    )
    .await;

    // The painted oval: found, under the default threshold, delivered.
    let id = create(
        &tg,
        Capability::Image,
        json!({"prompt": "a portrait", "resolution": "640x640"}),
    )
    .await;
    let job = ended(&tg, &id).await;
    assert_eq!(job.status, JobState::Completed, "{job:?}");
    let png = tg.download(&job.artifacts[0].url).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let review = app.admin.review_job_artifacts(&id).await.unwrap().artifacts;
    assert_eq!(review.len(), 1);
    assert!(!review[0].withheld);
    let c = review[0].classification.as_ref().expect("classified");
    assert_eq!(
        (c.model.as_str(), c.frames, &c.unclassified),
        ("nudenet-320n", 1, &None)
    );
    let found: Vec<(&str, f32)> = c
        .detections
        .iter()
        .map(|d| (d.label.as_str(), d.score))
        .collect();
    assert!(
        found
            .iter()
            .any(|(label, score)| *label == "BUTTOCKS_EXPOSED" && (0.3..0.5).contains(score)),
        "{found:?}"
    );
    assert!(c.detections[0].bbox.is_some() && c.detections[0].frame.is_none());

    // The simulator's animated PNG: three frames sampled, nothing found.
    let id = create(
        &tg,
        Capability::Video,
        json!({"prompt": "a sunrise", "duration_seconds": 2}),
    )
    .await;
    let job = ended(&tg, &id).await;
    assert_eq!(job.status, JobState::Completed, "{job:?}");
    let review = app.admin.review_job_artifacts(&id).await.unwrap().artifacts;
    let c = review[0].classification.as_ref().expect("classified");
    assert_eq!(c.frames, 3, "{c:?}");
    assert_eq!(c.unclassified, None);
    assert!(c.detections.is_empty(), "{c:?}");
    assert!(!review[0].withheld);
    painting.shutdown().await;
}

async fn a_configured_threshold_withholds_the_output_for_review(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        withholding(c);
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let painting = PaintingWorker::start(&app, "worker-gpu-0", vec![]).await;
    let id = create(
        &tg,
        Capability::Image,
        json!({"prompt": "a portrait", "resolution": "640x640"}),
    )
    .await;
    let job = ended(&tg, &id).await;

    // The user is told plainly, and given the token back.
    assert_eq!(job.status, JobState::Failed, "{job:?}");
    let error = job.error.as_ref().unwrap();
    assert_eq!(error.code, "content_withheld");
    assert_eq!(
        error.message,
        "Your image was withheld: it showed content not allowed here. Nothing was charged."
    );
    assert!(job.refunded);
    assert!(job.artifacts.is_empty(), "nothing offered to the frontend");
    let quota = tg.get_user(USER).await.unwrap();
    assert_eq!(quota.tokens_used_today, 0);

    // Kept for review: refused to the frontend, served to the admin.
    let review = app.admin.review_job_artifacts(&id).await.unwrap().artifacts;
    assert_eq!(review.len(), 1);
    let artifact = &review[0];
    assert!(artifact.withheld);
    let c = artifact.classification.as_ref().unwrap();
    assert_eq!(c.detections[0].label, "BUTTOCKS_EXPOSED");
    let refused = tg
        .download(&format!("/api/v1/artifacts/{}", artifact.artifact_id))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(reqwest::StatusCode::FORBIDDEN));
    assert!(refused.is(ErrorCode::ContentWithheld), "{refused}");
    let link = tg
        .create_download_link(&artifact.artifact_id)
        .await
        .unwrap_err();
    assert!(link.is(ErrorCode::ContentWithheld), "{link}");
    let bytes = app
        .admin
        .review_artifact_content(&artifact.artifact_id)
        .await
        .unwrap();
    assert_eq!(bytes.len() as u64, artifact.file_size);
    assert_eq!(
        image::load_from_memory(&bytes)
            .unwrap()
            .to_rgb8()
            .into_raw(),
        oval_face(640, 640),
        "the very picture the model painted"
    );
    let one = app
        .admin
        .review_artifact(&artifact.artifact_id)
        .await
        .unwrap();
    assert_eq!(&one, artifact);
    // A frontend key is not the admin.
    let e = tg.review_artifact(&artifact.artifact_id).await.unwrap_err();
    assert!(e.is(ErrorCode::WrongCredential), "{e}");

    // In the review queue: one open `withheld` case about the job's owner.
    let queue = app
        .admin
        .list_cases(&ListCasesQuery::default())
        .await
        .unwrap()
        .cases;
    assert_eq!(queue.len(), 1, "{queue:?}");
    let case = &queue[0];
    assert_eq!(case.kind, CaseKind::Withheld);
    assert_eq!(case.status, CaseStatus::Open);
    assert_eq!(case.user_ref.to_string(), USER);
    assert_eq!(case.job_id.as_ref(), Some(&id));
    assert!(case.cause.contains("BUTTOCKS_EXPOSED"), "{case:?}");

    // Counted by label and channel.
    let metrics = app.scrape_metrics().await;
    assert!(
        metrics.contains(
            "tessera_moderation_withheld_total{label=\"BUTTOCKS_EXPOSED\",channel=\"telegram\"} 1"
        ),
        "{metrics}"
    );
    painting.shutdown().await;
}

/// The same picture and threshold, asked for in a Telegram group whose
/// admins turned adult content on: the context allows what was found, so
/// it is delivered (its labels stored); the same user's job in their
/// private chat is withheld.
async fn a_group_that_allows_adult_content_gets_what_is_withheld_elsewhere(backend: Backend) {
    const GROUP: i64 = -1_001_234_567_890;
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        withholding(c);
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    tg.set_chat_nsfw(GROUP, true, &"telegram:77".parse().unwrap())
        .await
        .unwrap();
    let painting = PaintingWorker::start(&app, "worker-gpu-0", vec![]).await;
    let params = json!({"prompt": "a portrait", "resolution": "640x640"});

    let in_group = create_in(&tg, Some(GROUP), Capability::Image, params.clone()).await;
    let job = ended(&tg, &in_group).await;
    assert_eq!(job.status, JobState::Completed, "{job:?}");
    assert_eq!(job.artifacts.len(), 1);
    let review = app
        .admin
        .review_job_artifacts(&in_group)
        .await
        .unwrap()
        .artifacts;
    assert!(!review[0].withheld);
    let c = review[0].classification.as_ref().unwrap();
    assert_eq!(c.detections[0].label, "BUTTOCKS_EXPOSED");

    let private = create_in(&tg, Some(77), Capability::Image, params).await;
    let job = ended(&tg, &private).await;
    assert_eq!(job.status, JobState::Failed, "{job:?}");
    assert_eq!(job.error.unwrap().code, "content_withheld");
    painting.shutdown().await;
}

async fn unclassified_outputs_are_withheld_when_configured_and_tokens_kept(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.moderation.outputs.unclassified = Unclassified::Withhold;
        c.moderation.outputs.refund = false;
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    // A worker without the classifier: its outputs come unclassified.
    let _worker = app
        .worker(
            "worker-gpu-0",
            vec![sim(Capability::Image, &["sdxl-1.0"], 10)],
        )
        .await;
    let id = create(&tg, Capability::Image, json!({"prompt": "a fox"})).await;
    let job = ended(&tg, &id).await;
    assert_eq!(job.status, JobState::Failed, "{job:?}");
    let error = job.error.as_ref().unwrap();
    assert_eq!(error.code, "content_withheld");
    assert_eq!(
        error.message,
        "Your image was withheld: it could not be checked, and only checked outputs are delivered here. Its tokens are not refunded."
    );
    assert!(!job.refunded);
    assert_eq!(tg.get_user(USER).await.unwrap().tokens_used_today, 1);
    let review = app.admin.review_job_artifacts(&id).await.unwrap().artifacts;
    assert!(review[0].withheld);
    assert_eq!(review[0].classification, None);
}

async fn text_answers_are_held_to_the_prompt_rules(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        // The simulator's answers say "A reply of at most N tokens...".
        let mut rule = RuleConfig::empty();
        rule.name = "no_replies".into();
        rule.words = vec!["reply".into()];
        rule.action = Action::Refuse;
        c.moderation.rules.push(rule);
    })
    .await;
    let tg = app.frontend(Platform::Telegram, BOT).await;
    let _worker = app
        .worker(
            "worker-gpu-0",
            vec![sim(Capability::Text, &["llama-3.2-3b"], 10)],
        )
        .await;
    let id = create(&tg, Capability::Text, json!({"prompt": "say something"})).await;
    let job = ended(&tg, &id).await;
    assert_eq!(job.status, JobState::Failed, "{job:?}");
    let error = job.error.as_ref().unwrap();
    assert_eq!(error.code, "content_withheld");
    assert_eq!(
        error.message,
        "Your answer was withheld: it said something not allowed here. Nothing was charged."
    );
    assert!(job.refunded);
    let review = app.admin.review_job_artifacts(&id).await.unwrap().artifacts;
    assert!(review[0].withheld);
}

/// A classifier file that cannot be used stops the worker at start, naming
/// the key to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_classifier_path_is_a_start_error_naming_the_key() {
    let assets = assets();
    let missing = tempfile::tempdir().unwrap();
    for (moderation, key) in [
        (
            ModerationConfig {
                classifier_model: Some(missing.path().join("320n.onnx")),
                onnxruntime_lib: Some(assets.runtime.clone()),
            },
            "moderation.classifier_model",
        ),
        (
            ModerationConfig {
                classifier_model: Some(assets.model.clone()),
                onnxruntime_lib: Some(missing.path().join("libonnxruntime.so")),
            },
            "moderation.onnxruntime_lib",
        ),
    ] {
        let e = tessera_worker::classify::OutputClassifier::load(&moderation)
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().starts_with(key), "{e}");
    }
}
