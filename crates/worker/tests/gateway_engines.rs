//! The gateway with real engines and the official `openai` client: the
//! llama.cpp server streams a chat completion through worker and scheduler
//! to the client while it writes, espeak-ng speaks, the transcription
//! server (PocketSphinx) hears, a `sim` engine paints; the client is
//! OpenAI's own Python library (`crates/testkit/py/openai_client.py`), so
//! the shapes are the ones it reads and the errors the ones it raises.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use tessera_api::public::{Credentials, NewDeveloperKeyRequest};
use tessera_core::{Capability, JobId, Platform};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::engines::{self, LlamaServer, Transcriber};
use tessera_testkit::{sim, Backend, TestApp};
use tessera_worker::config::EngineConfig;

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    config.workers.missed_heartbeats = 3;
    config.workers.dispatch_tick_ms = 100;
    // Speech costs more than FREE's 20 daily tokens: the second account's
    // request is the quota refusal.
    config.billing.costs.text_to_speech = 25;
}

/// A developer key of a new account on `plan`.
async fn developer_key(app: &TestApp, email: &str, plan: &str) -> String {
    let web = app.frontend(Platform::Web, "website").await;
    let account = web
        .create_account(&Credentials {
            email: email.into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("account");
    app.admin
        .set_plan(&account.user_ref, &plan.parse().unwrap())
        .await
        .expect("plan");
    web.create_developer_key(
        &account.user_ref,
        &NewDeveloperKeyRequest {
            name: "sdk".into(),
            capabilities: None,
        },
    )
    .await
    .expect("developer key")
    .api_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_streams_chats_and_makes_images_speech_and_transcripts() {
    let llama = LlamaServer::start();
    let transcriber = Transcriber::start();
    let app = TestApp::spawn_with(Backend::Sqlite, fast).await;
    let engines: Vec<EngineConfig> = serde_json::from_value(json!([
        { "kind": "openai_chat", "url": llama.url,
          "models": ["llama-3.2-3b"], "upstream_model": llama.model },
        { "kind": "openai_transcription", "url": transcriber.url,
          "models": ["whisper-base"], "upstream_model": transcriber.model },
        { "kind": "espeak", "program": engines::espeak_program(),
          "models": ["espeak-ng"], "default_voice": "en" },
    ]))
    .expect("engine settings");
    let _engines = app.worker("w-engines", engines).await;
    let _painter = app
        .worker("w-image", vec![sim(Capability::Image, &["sdxl-1.0"], 50)])
        .await;
    let key = developer_key(&app, "ada@example.org", "pro").await;
    let poor = developer_key(&app, "bea@example.org", "free").await;

    let python = engines::python();
    let run = tokio::task::spawn_blocking({
        let base = format!("{}/v1", app.base_url());
        move || {
            Command::new(python)
                .arg(engines::script("openai_client.py"))
                .args([
                    base.as_str(),
                    key.as_str(),
                    poor.as_str(),
                    "llama-3.2-3b",
                    "sdxl-1.0",
                    "espeak-ng",
                    "whisper-base",
                ])
                .stdin(Stdio::null())
                .output()
                .expect("running the openai client")
        }
    });
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the client finished in time")
        .expect("client task");
    assert!(
        output.status.success(),
        "the openai client failed ({}):\n{}\nllama.cpp:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        llama.stderr()
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the client's JSON report");

    // The model list.
    let models = report["models"].as_array().unwrap();
    for model in ["llama-3.2-3b", "sdxl-1.0", "espeak-ng", "whisper-base"] {
        assert!(models.iter().any(|m| m == model), "{model}: {models:?}");
    }

    // The stream: chunks arrived before the job ended, with usage at the
    // end. The worker sends what the engine wrote at most every 50 ms, so
    // 256 tokens of the tiny model come in a few pieces.
    let stream = &report["stream"];
    let chunks = stream["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 2, "several chunks: {stream}");
    assert_eq!(stream["finish_reason"], "length", "{stream}");
    let usage = &stream["usage"];
    assert_eq!(usage["completion_tokens"], 256, "{stream}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + 256)
    );
    let job: JobId = stream["id"]
        .as_str()
        .unwrap()
        .strip_prefix("chatcmpl-")
        .unwrap()
        .parse()
        .unwrap();
    let job = app
        .store()
        .get_job(&job, None)
        .await
        .unwrap()
        .expect("the streamed job");
    let ended_ms = job.ended_at.expect("ended") as f64;
    let first_ms = chunks[0]["at"].as_f64().unwrap() * 1000.0;
    assert!(
        first_ms < ended_ms,
        "the first chunk came {:.0} ms after the job ended",
        first_ms - ended_ms
    );
    let before_end = chunks
        .iter()
        .filter(|c| c["at"].as_f64().unwrap() * 1000.0 < ended_ms)
        .count();
    assert!(
        before_end >= 2,
        "{before_end} chunks before the end: {stream}"
    );
    let streamed: String = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let kept = app
        .store()
        .artifacts_of(std::slice::from_ref(&job.id))
        .await
        .unwrap();
    let kept = std::fs::read_to_string(app.artifacts.path().join(&kept[0].storage_key))
        .expect("the job's text");
    assert_eq!(streamed, kept, "the stream is the job's text");

    // The whole answer.
    assert_eq!(report["chat"]["finish_reason"], "length");
    assert!(!report["chat"]["content"].as_str().unwrap().is_empty());
    assert_eq!(report["chat"]["usage"]["completion_tokens"], 8);

    // The image, the speech, and the speech heard again.
    assert_eq!(report["image"]["png"], true, "{report}");
    assert_eq!(report["speech"]["riff"], true, "{report}");
    assert!(report["speech"]["bytes"].as_u64().unwrap() > 10_000);
    let heard = report["transcription"].as_str().unwrap().to_lowercase();
    for word in ["coffee", "door", "light"] {
        assert!(heard.contains(word), "{word} not in {heard:?}");
    }

    // Errors, as the client raises them.
    let errors = &report["errors"];
    assert_eq!(
        errors["unknown_model"]["class"], "NotFoundError",
        "{errors}"
    );
    assert_eq!(errors["unknown_model"]["code"], "model_not_found");
    assert_eq!(
        errors["too_large"]["class"], "UnprocessableEntityError",
        "{errors}"
    );
    assert_eq!(errors["quota"]["class"], "RateLimitError", "{errors}");
    assert_eq!(errors["quota"]["code"], "quota_exhausted");
    assert_eq!(errors["quota"]["type"], "insufficient_quota");
    assert_eq!(
        errors["bad_key"]["class"], "AuthenticationError",
        "{errors}"
    );
    app.shutdown().await;
}
