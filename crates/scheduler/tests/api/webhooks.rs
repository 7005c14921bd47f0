//! Job webhooks end to end: a real receiver on loopback checks the
//! signature with its own HMAC, fails on purpose to see the retries, and
//! callback addresses the operator does not allow are refused at create.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use sha2::Sha256;

use tessera_api::public::{CreateJobRequest, WebhookEvent};
use tessera_api::Client;
use tessera_core::{Capability, JobId, JobState, Platform};
use tessera_scheduler::store::{DeliveryState, WebhookDelivery};
use tessera_scheduler::SchedulerConfig;
use tessera_testkit::{backend_tests, Backend, TestApp};

use crate::common::*;

/// What the receiver does with one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Answers 200, but only after this long: past the attempt's timeout.
    Hang(Duration),
}

/// A request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    /// Replies for the first requests, in order; then 200.
    script: Arc<Mutex<Vec<Reply>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Starts a receiver on a loopback port; answers its URL.
    async fn start(script: Vec<Reply>) -> (Receiver, String) {
        let receiver = Receiver {
            script: Arc::new(Mutex::new(script)),
            got: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{n} webhook requests never arrived: {:?}", self.got());
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    r.got.lock().unwrap().push(Received { headers, body });
    let reply = {
        let mut script = r.script.lock().unwrap();
        if script.is_empty() {
            Reply::Status(200)
        } else {
            script.remove(0)
        }
    };
    match reply {
        Reply::Status(s) => AxumStatus::from_u16(s).unwrap(),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            AxumStatus::OK
        }
    }
}

/// What a receiver does to trust a webhook: recompute the HMAC of
/// `"{timestamp}.{body}"` with the secret and compare in constant time.
fn verify(secret: &str, got: &Received) -> bool {
    let header = |name: &str| {
        got.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header("Tessera-Webhook-Timestamp");
    let Some(sent) = header("Tessera-Signature")
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    if timestamp
        .parse::<i64>()
        .map_or(true, |t| (now - t).abs() > 300)
    {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    mac.verify_slice(&sent).is_ok()
}

/// Loopback allowed (the receiver's), retries fast.
fn fast(config: &mut SchedulerConfig) {
    config.webhooks.allow_networks = vec!["127.0.0.0/8".into(), "::1/128".into()];
    config.webhooks.first_retry_ms = 100;
    config.webhooks.max_retry_ms = 200;
    config.webhooks.timeout_ms = 500;
    config.webhooks.poll_ms = 50;
}

fn hooked(user_ref: &str, url: &str) -> CreateJobRequest {
    CreateJobRequest {
        callback_url: Some(url.to_owned()),
        ..tg_job(user_ref, prompt("a lighthouse"))
    }
}

/// The job's delivery once it is no longer pending.
async fn settled(app: &TestApp, job: &JobId) -> WebhookDelivery {
    for _ in 0..300 {
        if let Some(d) = app.store().webhook_delivery(job).await.unwrap() {
            if d.state != DeliveryState::Pending {
                return d;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the webhook of {job} never settled")
}

async fn deliveries(app: &TestApp, outcome: &str) -> u64 {
    counter(
        app,
        "tessera_webhook_deliveries_total",
        &[("outcome", outcome)],
    )
    .await
}

async fn a_webhook_is_delivered_signed_and_verified(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let client = app.frontend(Platform::Telegram, TG_BOT).await;
    let secret = client.rotate_webhook_secret().await.unwrap().secret;
    assert!(secret.starts_with("whsec_") && secret.len() == 6 + 64);
    let (receiver, url) = Receiver::start(Vec::new()).await;

    let job = client
        .create_job(&hooked("telegram:1", &url), None)
        .await
        .unwrap()
        .job;
    let seen = client.get_job(&job.job_id).await.unwrap();
    assert_eq!(seen.callback_url.as_deref(), Some(url.as_str()));
    // Nothing is sent while the job lives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.got().is_empty());

    let ended = client.cancel_job(&job.job_id).await.unwrap();
    let got = receiver.wait_for(1).await;
    let hook = &got[0];
    assert!(verify(&secret, hook), "the signature does not verify");
    assert!(!verify("whsec_another", hook), "any secret verifies");
    let event: WebhookEvent = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(event.event, "job.cancelled");
    assert_eq!(
        hook.headers["Tessera-Webhook-Id"].to_str().unwrap(),
        event.webhook_id.as_str()
    );
    assert_eq!(hook.headers["content-type"], "application/json");
    // The job as the public GET answers it.
    assert_eq!(event.job, client.get_job(&job.job_id).await.unwrap());
    assert_eq!(event.job.status, JobState::Cancelled);
    assert_eq!(event.job.ended_at, ended.ended_at);

    let delivery = settled(&app, &job.job_id).await;
    assert_eq!(delivery.state, DeliveryState::Delivered);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status, Some(200));
    assert_eq!(delivery.id, event.webhook_id);
    assert_eq!(deliveries(&app, "delivered").await, 1);
    assert_eq!(deliveries(&app, "failed_attempt").await, 0);

    // A rotated secret signs what is sent from then on; the old one no longer verifies.
    let rotated = client.rotate_webhook_secret().await.unwrap().secret;
    assert_ne!(rotated, secret);
    let second = client
        .create_job(&hooked("telegram:1", &url), None)
        .await
        .unwrap()
        .job;
    client.cancel_job(&second.job_id).await.unwrap();
    let got = receiver.wait_for(2).await;
    assert!(verify(&rotated, &got[1]));
    assert!(!verify(&secret, &got[1]));
    // Exactly one request per delivered job.
    settled(&app, &second.job_id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.got().len(), 2);
    app.shutdown().await;
}

async fn a_completed_job_is_announced_with_its_artifacts(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![tessera_testkit::sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    let client = app.frontend(Platform::Telegram, TG_BOT).await;
    let secret = client.rotate_webhook_secret().await.unwrap().secret;
    let (receiver, url) = Receiver::start(Vec::new()).await;
    let job = client
        .create_job(&hooked("telegram:1", &url), None)
        .await
        .unwrap()
        .job;
    let got = receiver.wait_for(1).await;
    assert!(verify(&secret, &got[0]));
    let event: WebhookEvent = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event.event, "job.completed");
    assert_eq!(event.job.job_id, job.job_id);
    assert_eq!(event.job.status, JobState::Completed);
    assert!(!event.job.artifacts.is_empty());
    assert_eq!(event.job, client.get_job(&job.job_id).await.unwrap());
    let delivery = settled(&app, &job.job_id).await;
    assert_eq!(delivery.state, DeliveryState::Delivered);
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

async fn failed_attempts_are_retried_with_the_same_webhook_id(backend: Backend) {
    let app = TestApp::spawn_with(backend, fast).await;
    let client = app.frontend(Platform::Telegram, TG_BOT).await;
    let secret = client.rotate_webhook_secret().await.unwrap().secret;
    let (receiver, url) = Receiver::start(vec![
        Reply::Status(500),
        Reply::Hang(Duration::from_secs(3)),
    ])
    .await;
    let job = client
        .create_job(&hooked("telegram:1", &url), None)
        .await
        .unwrap()
        .job;
    client.cancel_job(&job.job_id).await.unwrap();

    let got = receiver.wait_for(3).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["Tessera-Webhook-Id"].to_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "ids differ: {ids:?}");
    assert!(got.iter().all(|r| verify(&secret, r)));
    let delivery = settled(&app, &job.job_id).await;
    assert_eq!(delivery.state, DeliveryState::Delivered);
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.id.as_str(), ids[0]);
    // Nothing more is sent once delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 3);
    assert_eq!(deliveries(&app, "failed_attempt").await, 2);
    assert_eq!(deliveries(&app, "delivered").await, 1);
    app.shutdown().await;
}

async fn a_delivery_is_abandoned_past_its_max_age(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        fast(c);
        c.webhooks.first_retry_ms = 300;
        c.webhooks.max_retry_ms = 300;
        c.webhooks.max_age_secs = 1;
    })
    .await;
    let client = app.frontend(Platform::Telegram, TG_BOT).await;
    client.rotate_webhook_secret().await.unwrap();
    let (receiver, url) = Receiver::start(vec![Reply::Status(503); 100]).await;
    let job = client
        .create_job(&hooked("telegram:1", &url), None)
        .await
        .unwrap()
        .job;
    client.cancel_job(&job.job_id).await.unwrap();
    let delivery = settled(&app, &job.job_id).await;
    assert_eq!(delivery.state, DeliveryState::Abandoned);
    assert_eq!(delivery.last_status, Some(503));
    assert!(delivery.attempts >= 2, "{delivery:?}");
    let first = delivery.first_attempt_at.unwrap();
    let last = delivery.last_attempt_at.unwrap();
    // No attempt falls due past the max age; one is sent within a poll
    // (50 ms) and a little work of falling due.
    assert!(
        last - first <= 1000 + 250,
        "an attempt past the max age: {delivery:?}"
    );
    assert_eq!(receiver.got().len(), delivery.attempts as usize);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.got().len(), delivery.attempts as usize);
    assert_eq!(deliveries(&app, "abandoned").await, 1);
    assert_eq!(
        deliveries(&app, "failed_attempt").await,
        delivery.attempts as u64 - 1
    );
    app.shutdown().await;
}

async fn refused(client: &Client, url: &str, code: &str) {
    let refused = client.create_job(&hooked("telegram:1", url), None).await;
    let detail = api_error(refused, StatusCode::UNPROCESSABLE_ENTITY, code);
    assert_eq!(detail.field.as_deref(), Some("callback_url"), "{url}");
}

async fn callbacks_to_private_addresses_are_refused_at_create(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = app.frontend(Platform::Telegram, TG_BOT).await;
    // A key without a secret cannot sign: told to make one.
    let missing = client
        .create_job(&hooked("telegram:1", "https://example.com/hook"), None)
        .await;
    let detail = api_error(
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "webhook_secret_missing",
    );
    assert!(detail.message.contains("/api/v1/webhook-secret"));
    client.rotate_webhook_secret().await.unwrap();
    for url in [
        "http://10.0.0.1/hook",
        "http://192.168.1.20:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://0.0.0.0/",
        // A name that resolves to loopback.
        "http://localhost:9/hook",
    ] {
        refused(&client, url, "callback_not_allowed").await;
    }
    for url in [
        "ftp://example.com/hook",
        "/relative/hook",
        "https://user:password@example.com/hook",
        &format!("https://example.com/{}", "a".repeat(2048)),
    ] {
        refused(&client, url, "invalid_request").await;
    }
    // Nothing was created or charged.
    assert!(list_all(&client, by_user("telegram:1"), false)
        .await
        .is_empty());
    assert_eq!(
        client
            .get_user("telegram:1")
            .await
            .unwrap()
            .tokens_used_today,
        0
    );
    app.shutdown().await;

    // Where the operator allows loopback, it is taken (and only loopback).
    let app = TestApp::spawn_with(backend, fast).await;
    let client = app.frontend(Platform::Telegram, TG_BOT).await;
    client.rotate_webhook_secret().await.unwrap();
    for url in ["http://127.0.0.1:9/hook", "http://localhost:9/hook"] {
        let created = client
            .create_job(&hooked("telegram:1", url), None)
            .await
            .unwrap();
        assert_eq!(created.job.status, JobState::Queued);
    }
    refused(&client, "http://10.0.0.1/hook", "callback_not_allowed").await;
    app.shutdown().await;
}

backend_tests!(
    a_webhook_is_delivered_signed_and_verified,
    a_completed_job_is_announced_with_its_artifacts,
    failed_attempts_are_retried_with_the_same_webhook_id,
    a_delivery_is_abandoned_past_its_max_age,
    callbacks_to_private_addresses_are_refused_at_create,
);
