//! The OpenAI-compatible gateway (`/v1`) end to end: a website account's
//! developer keys, the real scheduler and real workers (`sim` engines), over
//! loopback HTTP, on both databases. The streamed answer from the real
//! llama.cpp server and the official `openai` client are in
//! `gateway_engines.rs`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use tessera_api::public::{Credentials, ListJobsQuery, NewDeveloperKeyRequest};
use tessera_api::Client;
use tessera_core::{Capability, JobState, Platform, UserRef};
use tessera_scheduler::config::SchedulerConfig;
use tessera_testkit::{backend_tests, sim, Backend, TestApp};

const WEB_BOT: &str = "website";

fn fast(config: &mut SchedulerConfig) {
    config.workers.heartbeat_interval_ms = 200;
    config.workers.missed_heartbeats = 3;
    config.workers.dispatch_tick_ms = 100;
}

/// A website account and a developer key of it.
struct Person {
    account: UserRef,
    key: String,
    web: Client,
}

async fn person(app: &TestApp, email: &str, capabilities: Option<Vec<Capability>>) -> Person {
    let web = app.frontend(Platform::Web, WEB_BOT).await;
    let account = web
        .create_account(&Credentials {
            email: email.into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("account");
    let created = web
        .create_developer_key(
            &account.user_ref,
            &NewDeveloperKeyRequest {
                name: "my scripts".into(),
                capabilities,
            },
        )
        .await
        .expect("developer key");
    assert!(created.api_key.starts_with("tdk_"));
    Person {
        account: account.user_ref,
        key: created.api_key,
        web,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

async fn get(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let resp = http()
        .get(format!("{}{path}", app.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, key: &str, path: &str, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{}{path}", app.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn post_json(app: &TestApp, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = post(app, key, path, body).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts OpenAI's error envelope with Tessera's code.
fn refused(answer: &(StatusCode, Value), status: StatusCode, kind: &str, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    let error = &answer.1["error"];
    assert_eq!(error["type"], kind, "{}", answer.1);
    assert_eq!(error["code"], code, "{}", answer.1);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        answer.1
    );
}

fn chat(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompt},
    ]})
}

async fn account_jobs(person: &Person) -> Vec<tessera_api::public::JobView> {
    person
        .web
        .list_jobs(&ListJobsQuery {
            user_ref: Some(person.account.clone()),
            ..Default::default()
        })
        .await
        .expect("the account's jobs")
        .jobs
}

async fn models_follow_the_plan_and_the_keys_capabilities(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = person(&app, "ada@example.org", None).await;
    let (status, list) = get(&app, &ada.key, "/v1/models").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // FREE allows these and not the larger text model.
    for model in ["sdxl-1.0", "llama-3.2-3b", "whisper-base", "espeak-ng"] {
        assert!(ids.contains(&model), "{model} missing from {ids:?}");
    }
    assert!(!ids.contains(&"qwen-2.5-7b"), "{ids:?}");
    // PRO allows it.
    app.admin
        .set_plan(ada.account.to_string(), &"pro".parse().unwrap())
        .await
        .expect("plan set");
    let (_, list) = get(&app, &ada.key, "/v1/models").await;
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "qwen-2.5-7b" && m["capability"] == "text"));

    // A key limited to text lists text models only.
    let bea = person(&app, "bea@example.org", Some(vec![Capability::Text])).await;
    let (_, list) = get(&app, &bea.key, "/v1/models").await;
    let data = list["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|m| m["capability"] == "text"), "{list}");

    // Credentials: none, unknown, and a frontend key.
    let resp = http()
        .get(format!("{}/v1/models", app.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let none: Value = resp.json().await.unwrap();
    assert_eq!(none["error"]["type"], "authentication_error");
    let forged = format!("tdk_{}", "0".repeat(40));
    refused(
        &get(&app, &forged, "/v1/models").await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_credentials",
    );
    let frontend = app.key(Platform::Web, WEB_BOT).await;
    refused(
        &get(&app, &frontend, "/v1/models").await,
        StatusCode::FORBIDDEN,
        "permission_error",
        "wrong_credential",
    );
    // And a developer key is no frontend key: a real credential of the
    // wrong kind there.
    let resp = http()
        .get(format!("{}/api/v1/plans", app.base_url()))
        .bearer_auth(&ada.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "wrong_credential", "{body}");
    app.shutdown().await;
}

async fn every_call_is_a_charged_job_of_the_account(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let _workers = [
        app.worker(
            "w-text",
            vec![
                sim(Capability::Text, &["llama-3.2-3b"], 50),
                sim(Capability::Image, &["sdxl-1.0"], 50),
            ],
        )
        .await,
        app.worker(
            "w-audio",
            vec![
                sim(Capability::TextToSpeech, &["espeak-ng"], 50),
                sim(Capability::SpeechToText, &["whisper-base"], 50),
            ],
        )
        .await,
    ];
    let ada = person(&app, "ada@example.org", None).await;

    // A chat completion.
    let (status, answer) = post_json(
        &app,
        &ada.key,
        "/v1/chat/completions",
        &chat("llama-3.2-3b", "Say hello."),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "llama-3.2-3b");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-job_"));
    let choice = &answer["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"]["content"]
            .as_str()
            .unwrap()
            .contains("10-character prompt"),
        "the sim engine's reply to the prompt: {answer}"
    );

    // An image, as base64 and as an address that needs no key.
    let (status, image) = post_json(
        &app,
        &ada.key,
        "/v1/images/generations",
        &json!({"prompt": "a lighthouse", "size": "512x512", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{image}");
    let png = base64::engine::general_purpose::STANDARD
        .decode(image["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let (status, image) = post_json(
        &app,
        &ada.key,
        "/v1/images/generations",
        &json!({"prompt": "a lighthouse at night"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{image}");
    let url = image["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&app.base_url()), "{url}");
    let fetched = http().get(url).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(&fetched.bytes().await.unwrap()[..4], b"\x89PNG");
    let altered = format!("{}x", &url[..url.len() - 1]);
    let altered = http().get(&altered).send().await.unwrap();
    assert_eq!(altered.status(), StatusCode::FORBIDDEN);

    // Speech, and its transcription.
    let resp = post(
        &app,
        &ada.key,
        "/v1/audio/speech",
        &json!({"model": "espeak-ng", "input": "Hello there.", "voice": "alloy"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let wav = resp.bytes().await.unwrap();
    assert_eq!(&wav[..4], b"RIFF");
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-base")
        .part(
            "file",
            reqwest::multipart::Part::bytes(wav.to_vec())
                .file_name("hello.wav")
                .mime_str("audio/wav")
                .unwrap(),
        );
    let resp = http()
        .post(format!("{}/v1/audio/transcriptions", app.base_url()))
        .bearer_auth(&ada.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text: Value = resp.json().await.unwrap();
    assert!(
        text["text"]
            .as_str()
            .unwrap()
            .contains(&format!("{} bytes of audio/wav", wav.len())),
        "{text}"
    );

    // Each call was a job of the account, through its website, charged.
    let jobs = account_jobs(&ada).await;
    assert_eq!(jobs.len(), 5, "{jobs:#?}");
    assert!(jobs
        .iter()
        .all(|j| j.status == JobState::Completed && j.bot_id.as_str() == WEB_BOT));
    let quota = ada.web.get_user(&ada.account).await.unwrap();
    assert_eq!(quota.tokens_used_today, 5);
    // OpenAI's voice name meant the engine's default voice.
    let speech = jobs
        .iter()
        .find(|j| j.capability == Capability::TextToSpeech)
        .unwrap();
    assert!(speech.params.get("voice").is_none(), "{:?}", speech.params);

    // Another person sees none of it: their own account's list is empty,
    // and their key's image addresses are their own.
    let bea = person(&app, "bea@example.org", None).await;
    assert!(account_jobs(&bea).await.is_empty());
    app.shutdown().await;
}

async fn refusals_come_in_openais_envelope(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        // One chat job takes 15 of FREE's 20 daily tokens.
        c.billing.costs.text_per_1k_tokens = 15;
    })
    .await;
    let _worker = app
        .worker("w-text", vec![sim(Capability::Text, &["llama-3.2-3b"], 50)])
        .await;
    let ada = person(&app, "ada@example.org", None).await;
    refused(
        &post_json(
            &app,
            &ada.key,
            "/v1/chat/completions",
            &chat("gpt-4o", "hi"),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found_error",
        "model_not_found",
    );
    refused(
        &post_json(
            &app,
            &ada.key,
            "/v1/chat/completions",
            &json!({"model": "llama-3.2-3b", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    refused(
        &post_json(
            &app,
            &ada.key,
            "/v1/chat/completions",
            &json!({"model": "llama-3.2-3b", "messages": [{"role": "assistant", "content": "hi"}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    refused(
        &post_json(&app, &ada.key, "/v1/chat/completions", &json!({"model": 3})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    // The plan's model rules apply.
    refused(
        &post_json(
            &app,
            &ada.key,
            "/v1/chat/completions",
            &chat("qwen-2.5-7b", "hi"),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_error",
        "model_not_allowed",
    );
    // A key limited to images.
    let painter = person(&app, "cy@example.org", Some(vec![Capability::Image])).await;
    refused(
        &post_json(
            &app,
            &painter.key,
            "/v1/chat/completions",
            &chat("llama-3.2-3b", "hi"),
        )
        .await,
        StatusCode::FORBIDDEN,
        "permission_error",
        "capability_not_allowed",
    );
    // The quota: one job fits, the next is refused and costs nothing.
    let (status, _) = post_json(
        &app,
        &ada.key,
        "/v1/chat/completions",
        &chat("llama-3.2-3b", "hi"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    refused(
        &post_json(
            &app,
            &ada.key,
            "/v1/chat/completions",
            &chat("llama-3.2-3b", "again"),
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "insufficient_quota",
        "quota_exhausted",
    );
    assert_eq!(account_jobs(&ada).await.len(), 1);
    app.shutdown().await;
}

async fn a_full_queue_is_a_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.admission.max_queued_per_user.insert("free".into(), 1);
    })
    .await;
    // No worker serves text: the first job waits in the queue.
    let ada = person(&app, "ada@example.org", None).await;
    let first = {
        let (app_url, key) = (app.base_url(), ada.key.clone());
        tokio::spawn(async move {
            http()
                .post(format!("{app_url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat("llama-3.2-3b", "first"))
                .send()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while account_jobs(&ada).await.is_empty() {
        assert!(Instant::now() < deadline, "the first job never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = post(
        &app,
        &ada.key,
        "/v1/chat/completions",
        &chat("llama-3.2-3b", "second"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_queued", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    first.abort();
    app.shutdown().await;
}

async fn a_client_hanging_up_cancels_its_job(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let _worker = app
        .worker(
            "w-slow",
            vec![sim(Capability::Text, &["llama-3.2-3b"], 5_000)],
        )
        .await;
    let ada = person(&app, "ada@example.org", None).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v1/chat/completions", app.base_url()))
        .bearer_auth(&ada.key)
        .json(&chat("llama-3.2-3b", "take your time"))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = account_jobs(&ada).await;
        if let [job] = jobs.as_slice() {
            if job.status == JobState::Cancelled {
                assert_eq!(
                    job.error.as_ref().map(|e| e.code.as_str()),
                    Some("cancelled_by_user")
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "never cancelled: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refunded, as every cancel is.
    let quota = ada.web.get_user(&ada.account).await.unwrap();
    assert_eq!(quota.tokens_used_today, 0);
    app.shutdown().await;
}

async fn a_revoked_key_stops_at_the_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = person(&app, "ada@example.org", None).await;
    assert_eq!(get(&app, &ada.key, "/v1/models").await.0, StatusCode::OK);
    let keys = ada.web.developer_keys(&ada.account).await.unwrap().keys;
    let [key] = keys.as_slice() else {
        panic!("one key: {keys:?}")
    };
    ada.web
        .revoke_developer_key(&ada.account, &key.key_id)
        .await
        .unwrap();
    refused(
        &get(&app, &ada.key, "/v1/models").await,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_credentials",
    );
    // Its use was recorded.
    let keys = ada.web.developer_keys(&ada.account).await.unwrap().keys;
    assert!(keys[0].revoked_at.is_some());
    assert!(keys[0].last_used_at.is_some(), "{keys:?}");
    app.shutdown().await;
}

/// A gateway call waits for its job however long it takes: the API's request
/// deadline (1 s here) would otherwise cancel a job that runs 2 s.
async fn a_call_waits_past_the_request_deadline(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.server.request_timeout_secs = 1;
    })
    .await;
    let _worker = app
        .worker(
            "w-slow",
            vec![sim(Capability::Text, &["llama-3.2-3b"], 2_000)],
        )
        .await;
    let ada = person(&app, "ada@example.org", None).await;
    let (status, answer) = post_json(
        &app,
        &ada.key,
        "/v1/chat/completions",
        &chat("llama-3.2-3b", "take your time"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    app.shutdown().await;
}

backend_tests!(
    a_call_waits_past_the_request_deadline,
    models_follow_the_plan_and_the_keys_capabilities,
    every_call_is_a_charged_job_of_the_account,
    refusals_come_in_openais_envelope,
    a_full_queue_is_a_429_with_retry_after,
    a_client_hanging_up_cancels_its_job,
    a_revoked_key_stops_at_the_next_request,
);
