//! The HTTP API end to end: the real scheduler on a loopback port, driven through
//! the typed client (`tessera_api::Client`) and, for requests the client cannot
//! make (no credential, broken JSON, wrong content type), through raw `reqwest`.
//! Every test runs on PostgreSQL and on SQLite and must pass unchanged on both.

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use tessera_api::admin::CreateKeyRequest;
use tessera_api::internal::{Heartbeat, WorkerStatus};
use tessera_api::public::{
    CreateJobRequest, CreateJobResponse, Credentials, JobView, LinkCode, ListJobsQuery,
};
use tessera_api::{ApiErrorBody, Client, ClientError, ErrorDetail};
use tessera_core::{ApiKeyId, Capability, JobId, JobState, Platform};
use tessera_testkit::{backend_tests, Backend, TestApp};

const TG_BOT: &str = "tg-image-bot-1";
const TG_BOT_2: &str = "tg-image-bot-2";
const DC_BOT: &str = "dc-image-bot-1";
const WEB: &str = "web-1";
/// A second web bot, such as the demo key `tessera up` prints.
const DEMO: &str = "demo";

// ---- helpers ----

fn image_job(frontend: Platform, bot_id: &str, user_ref: &str, params: Value) -> CreateJobRequest {
    CreateJobRequest {
        frontend,
        bot_id: bot_id.to_owned(),
        capability: Capability::Image,
        user_ref: user_ref.to_owned(),
        reply_context: None,
        params,
    }
}

/// An image job from `tg-image-bot-1`.
fn tg_job(user_ref: &str, params: Value) -> CreateJobRequest {
    image_job(Platform::Telegram, TG_BOT, user_ref, params)
}

fn prompt(text: &str) -> Value {
    json!({ "prompt": text })
}

/// A raw answer: status, headers and the body, which must be JSON.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts an error answer: its status, its stable code, and that the body is
    /// exactly the error envelope.
    #[track_caller]
    fn error(&self, status: StatusCode, code: &str) -> ErrorDetail {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        let body: ApiErrorBody = serde_json::from_value(self.body.clone())
            .unwrap_or_else(|e| panic!("error body is not an ApiErrorBody ({e}): {}", self.body));
        assert_eq!(
            body.error.code, code,
            "unexpected code; body: {}",
            self.body
        );
        assert!(
            !body.error.message.is_empty(),
            "empty message: {}",
            self.body
        );
        body.error
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(rb: RequestBuilder) -> Answer {
    let resp = rb.send().await.expect("the request completes");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("the body arrives");
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer {
        status,
        headers,
        body,
    }
}

/// A raw request to the scheduler, without any credential.
fn raw(app: &TestApp, method: Method, path: &str) -> RequestBuilder {
    reqwest::Client::new().request(method, format!("{}{path}", app.base_url()))
}

/// A raw create with a frontend key and, optionally, an idempotency key.
fn raw_create(
    http: &reqwest::Client,
    app: &TestApp,
    key: &str,
    req: &CreateJobRequest,
    idempotency_key: Option<&str>,
) -> RequestBuilder {
    let mut rb = http
        .post(format!("{}/api/v1/jobs", app.base_url()))
        .bearer_auth(key)
        .json(req);
    if let Some(k) = idempotency_key {
        rb = rb.header(tessera_api::IDEMPOTENCY_KEY, k);
    }
    rb
}

/// Asserts that a typed call failed with this status and code; returns the detail.
#[track_caller]
fn api_error<T: Debug>(
    result: Result<T, ClientError>,
    status: StatusCode,
    code: &str,
) -> ErrorDetail {
    let e = match result {
        Ok(v) => panic!("expected {status} {code}, got success: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.status(), Some(status), "unexpected status: {e}");
    assert_eq!(e.code(), Some(code), "unexpected code: {e}");
    match e {
        ClientError::Api { body, .. } => {
            assert!(!body.error.message.is_empty());
            body.error
        }
        other => panic!("expected an error envelope, got {other:?}"),
    }
}

/// Every page of a listing, following `next_cursor`.
async fn list_all(client: &Client, query: ListJobsQuery, admin: bool) -> Vec<JobView> {
    let mut query = query;
    let mut jobs = Vec::new();
    for _ in 0..1000 {
        let page = if admin {
            client.admin_list_jobs(&query).await
        } else {
            client.list_jobs(&query).await
        }
        .expect("listing jobs");
        let limit = query.limit.unwrap_or(20) as usize;
        assert!(page.jobs.len() <= limit, "a page larger than its limit");
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return jobs,
        }
    }
    panic!("paging never ended")
}

fn by_user(user_ref: &str) -> ListJobsQuery {
    ListJobsQuery {
        user_ref: Some(user_ref.to_owned()),
        ..Default::default()
    }
}

/// `client` can neither read, cancel nor acknowledge these jobs: to it they
/// do not exist.
async fn cannot_reach(client: &Client, jobs: &[&JobId]) {
    for id in jobs {
        api_error(
            client.get_job(id).await,
            StatusCode::NOT_FOUND,
            "job_not_found",
        );
        api_error(
            client.cancel_job(id).await,
            StatusCode::NOT_FOUND,
            "job_not_found",
        );
        api_error(
            client.mark_delivered(id).await,
            StatusCode::NOT_FOUND,
            "job_not_found",
        );
    }
}

fn ids(jobs: &[JobView]) -> Vec<JobId> {
    jobs.iter().map(|j| j.job_id.clone()).collect()
}

/// Tokens the user's live (not refunded) jobs hold.
fn charged(jobs: &[JobView]) -> i64 {
    jobs.iter()
        .filter(|j| !j.refunded)
        .map(|j| j.cost_tokens)
        .sum()
}

// ---- 1. the round trip ----

async fn create_get_cancel_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let mut req = tg_job("telegram:42", prompt("a beautiful sunset"));
    req.reply_context = Some(json!({"chat_id": 42, "message_id": 7}));

    let created = send(raw_create(&http, &app, &key, &req, None)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.header(tessera_api::IDEMPOTENT_REPLAYED), None);
    assert!(
        created.header(tessera_api::REQUEST_ID).is_some(),
        "every answer carries a request id"
    );
    let created: CreateJobResponse = serde_json::from_value(created.body).expect("a create answer");
    assert_eq!(created.status, JobState::Queued);
    assert_eq!(created.cost_tokens, 1);
    assert!(created.estimated_time_seconds > 0);
    assert!(created.job_id.as_str().starts_with("job_"));

    // Another key of the same bot reads it. No worker serves its model yet, so
    // instead of a queue position the job says why it waits.
    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(job.job_id, created.job_id);
    assert_eq!(job.status, JobState::Queued);
    assert_eq!(job.queue_position, None);
    assert_eq!(
        job.notice.as_ref().map(|n| n.code.as_str()),
        Some("no_worker")
    );

    // A busy worker that serves the model: the job has a place in its queue.
    let internal = Client::new(&app.base_url(), app.internal_token.clone()).unwrap();
    internal
        .heartbeat(&Heartbeat {
            worker_id: "worker-gpu-0".into(),
            status: WorkerStatus::Busy,
            address: "http://127.0.0.1:9".into(),
            capabilities: vec![Capability::Image],
            models: vec!["sdxl-1.0".into()],
            loaded_models: vec![],
            current_job: None,
            gpu_name: None,
            gpu_memory_used: None,
            gpu_memory_total: None,
            gpu_utilization: None,
        })
        .await
        .unwrap();
    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(job.notice, None);
    assert_eq!(job.queue_position, Some(0));
    assert!(job.estimated_time_seconds.is_some_and(|s| s > 0));
    assert_eq!(
        (job.frontend, job.bot_id.as_str()),
        (Platform::Telegram, TG_BOT)
    );
    assert_eq!(job.capability, Capability::Image);
    assert_eq!(job.model, "sdxl-1.0");
    assert_eq!(job.user_ref, "telegram:42");
    assert_eq!(
        job.params,
        json!({"prompt": "a beautiful sunset", "width": 1024, "height": 1024, "steps": 30})
    );
    assert_eq!(job.params["width"], 1024);
    assert_eq!(
        job.reply_context,
        Some(json!({"chat_id": 42, "message_id": 7}))
    );
    // Another bot of the same platform sees the job but not where its bot
    // answers (for Discord that holds an interaction token).
    let other = app.frontend(Platform::Telegram, "tg-video-bot-1").await;
    let seen = other.get_job(&created.job_id).await.unwrap();
    assert_eq!(seen.job_id, created.job_id);
    assert_eq!(seen.reply_context, None);
    let listed = other
        .list_jobs(&ListJobsQuery {
            user_ref: Some("telegram:42".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.jobs.iter().all(|j| j.reply_context.is_none()));
    assert_eq!((job.cost_tokens, job.refunded, job.attempts), (1, false, 0));
    assert_eq!(job.error, None);
    assert!(job.queued_at.is_some() && job.started_at.is_none() && job.ended_at.is_none());

    let quota = tg.get_user("telegram:42").await.unwrap();
    assert_eq!(quota.plan.id, "free");
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (1, Some(19))
    );

    let cancelled = tg.cancel_job(&created.job_id).await.unwrap();
    assert_eq!(cancelled.status, JobState::Cancelled);
    assert!(cancelled.refunded);
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled_by_user")
    );
    assert!(cancelled.ended_at.is_some());
    assert_eq!(
        (cancelled.queue_position, cancelled.estimated_time_seconds),
        (None, None)
    );

    let again = tg.cancel_job(&created.job_id).await;
    api_error(again, StatusCode::CONFLICT, "job_finished");

    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(job.status, JobState::Cancelled);
    assert_eq!(
        job.error.map(|e| e.code),
        Some("cancelled_by_user".to_owned())
    );

    let quota = tg.get_user("telegram:42").await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (0, Some(20))
    );

    // Ids that are not jobs, or not this frontend's, are simply not found.
    api_error(
        tg.get_job(&JobId::generate()).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    api_error(
        tg.cancel_job(&JobId::generate()).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    let bad_id = send(raw(&app, Method::GET, "/api/v1/jobs/not-a-job").bearer_auth(&key)).await;
    bad_id.error(StatusCode::NOT_FOUND, "job_not_found");
    app.shutdown().await;
}

// ---- 2. credentials ----

async fn credentials_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let req = tg_job("telegram:1", prompt("x"));

    // No credential at all.
    let none = send(raw(&app, Method::POST, "/api/v1/jobs").json(&req)).await;
    none.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(none.header(WWW_AUTHENTICATE.as_str()), Some("Bearer"));
    send(raw(&app, Method::GET, "/api/v1/jobs"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(raw(&app, Method::GET, "/api/admin/keys"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A credential that is not a bearer token.
    let basic =
        raw(&app, Method::GET, "/api/v1/jobs").header(AUTHORIZATION, format!("Basic {key}"));
    send(basic)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let empty = raw(&app, Method::GET, "/api/v1/jobs").header(AUTHORIZATION, "Bearer ");
    send(empty)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Credentials that are nobody's.
    let garbage = app.client_with("garbage-garbage-garbage");
    api_error(
        garbage.create_job(&req, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    api_error(
        garbage.list_keys().await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );

    // Real credentials of the wrong kind.
    let admin_as_frontend = app.client_with(&app.admin_token);
    api_error(
        admin_as_frontend.create_job(&req, None).await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    api_error(
        admin_as_frontend.list_jobs(&ListJobsQuery::default()).await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    let frontend = app.client_with(&key);
    api_error(
        frontend.list_keys().await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    api_error(
        frontend
            .create_key(&CreateKeyRequest {
                frontend: Platform::Telegram,
                bot_id: "sneaky".into(),
            })
            .await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );
    api_error(
        frontend.set_plan("telegram:1", "admin").await,
        StatusCode::FORBIDDEN,
        "wrong_credential",
    );

    // A revoked key stops working at once, on every endpoint.
    let created = app
        .admin
        .create_key(&CreateKeyRequest {
            frontend: Platform::Telegram,
            bot_id: TG_BOT.into(),
        })
        .await
        .unwrap();
    assert!(created.key.key_id.as_str().starts_with("key_"));
    assert_eq!(created.key.revoked_at, None);
    let doomed = app.client_with(&created.api_key);
    doomed
        .create_job(&req, None)
        .await
        .expect("the key works before revocation");
    let revoked = app.admin.revoke_key(&created.key.key_id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    api_error(
        doomed.create_job(&req, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    api_error(
        doomed.list_jobs(&ListJobsQuery::default()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    api_error(
        doomed.list_keys().await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    // The other key of the same bot still works; the listing shows the revocation
    // and never a secret.
    frontend
        .create_job(&req, None)
        .await
        .expect("an unrevoked key works");
    let keys = app.admin.list_keys().await.unwrap();
    let listed = keys
        .keys
        .iter()
        .find(|k| k.key_id == created.key.key_id)
        .expect("the revoked key is listed");
    assert_eq!(listed.revoked_at, revoked.revoked_at);
    let raw_keys =
        send(raw(&app, Method::GET, "/api/admin/keys").bearer_auth(&app.admin_token)).await;
    assert_eq!(raw_keys.status, StatusCode::OK);
    assert!(!raw_keys.body.to_string().contains(&created.api_key));
    assert!(!raw_keys.body.to_string().contains(&key));
    app.shutdown().await;
}

async fn keys_speak_only_for_their_bot_and_platform(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;

    let other_bot = image_job(Platform::Telegram, TG_BOT_2, "telegram:1", prompt("x"));
    api_error(
        tg.create_job(&other_bot, None).await,
        StatusCode::FORBIDDEN,
        "forbidden_bot",
    );
    let other_platform = image_job(Platform::Discord, TG_BOT, "discord:1", prompt("x"));
    api_error(
        tg.create_job(&other_platform, None).await,
        StatusCode::FORBIDDEN,
        "forbidden_bot",
    );
    api_error(
        tg.create_job(&tg_job("discord:1", prompt("x")), None).await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    api_error(
        tg.get_user("discord:1").await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );

    // A telegram job is invisible to a discord key: not readable, not cancellable.
    let job = tg
        .create_job(&tg_job("telegram:1", prompt("x")), None)
        .await
        .unwrap()
        .job;
    api_error(
        dc.get_job(&job.job_id).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    api_error(
        dc.cancel_job(&job.job_id).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    assert_eq!(
        tg.get_job(&job.job_id).await.unwrap().status,
        JobState::Queued
    );

    // Refused requests charged nothing; the one job did.
    let quota = tg.get_user("telegram:1").await.unwrap();
    assert_eq!(quota.tokens_used_today, 1);
    let discord = dc.get_user("discord:1").await.unwrap();
    assert_eq!(discord.tokens_used_today, 0);
    app.shutdown().await;
}

// ---- 3. validation ----

async fn invalid_requests_are_refused_with_stable_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:7";

    let e = api_error(
        tg.create_job(&tg_job(user, prompt("   ")), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_empty",
    );
    assert_eq!(e.field.as_deref(), Some("params.prompt"));
    let e = api_error(
        tg.create_job(
            &tg_job(user, json!({"prompt": "x", "resolution": "2048x2048"})),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "resolution_not_allowed",
    );
    assert_eq!(e.field.as_deref(), Some("params.resolution"));
    let e = api_error(
        tg.create_job(
            &tg_job(user, json!({"prompt": "x", "model": "flux-schnell"})),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_not_allowed",
    );
    assert_eq!(e.field.as_deref(), Some("params.model"));
    api_error(
        tg.create_job(&tg_job(user, json!({"prompt": "x", "cfg": 7})), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_param",
    );
    let e = api_error(
        tg.create_job(&tg_job("telegram", prompt("x")), None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_user_ref",
    );
    assert_eq!(e.field.as_deref(), Some("user_ref"));
    let mut big_context = tg_job(user, prompt("x"));
    big_context.reply_context = Some(json!({ "blob": "x".repeat(5000) }));
    let e = api_error(
        tg.create_job(&big_context, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "reply_context_too_large",
    );
    assert_eq!(e.field.as_deref(), Some("reply_context"));
    api_error(
        tg.create_job(&tg_job(user, prompt("x")), Some("has spaces in it"))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    );

    // Requests the typed client cannot make.
    let post = || raw(&app, Method::POST, "/api/v1/jobs").bearer_auth(&key);
    let mut unknown_capability = serde_json::to_value(tg_job(user, prompt("x"))).unwrap();
    unknown_capability["capability"] = json!("teleportation");
    send(post().json(&unknown_capability))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let mut extra_field = serde_json::to_value(tg_job(user, prompt("x"))).unwrap();
    extra_field["priority"] = json!(3);
    send(post().json(&extra_field))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let malformed = post()
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"frontend": "telegram", "bot_id": "#);
    send(malformed)
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_request");
    let valid_text = serde_json::to_string(&tg_job(user, prompt("x"))).unwrap();
    send(post().body(valid_text.clone()))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    send(post().header(CONTENT_TYPE, "text/plain").body(valid_text))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // Nothing was created and nothing charged.
    let all = list_all(&app.admin, ListJobsQuery::default(), true).await;
    assert!(all.is_empty(), "refused requests created jobs: {all:?}");
    assert_eq!(tg.get_user(user).await.unwrap().tokens_used_today, 0);
    app.shutdown().await;
}

async fn oversized_bodies_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.server.body_limit_bytes = 1024).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);

    // Small enough: accepted.
    tg.create_job(&tg_job("telegram:1", prompt("small")), None)
        .await
        .expect("a small request fits");
    let big = tg_job("telegram:1", prompt(&"x".repeat(1500)));
    let answer = send(raw_create(&reqwest::Client::new(), &app, &key, &big, None)).await;
    answer.error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    api_error(
        tg.create_job(&big, None).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        1
    );
    app.shutdown().await;
}

/// What an attacker or a broken client sends: each refused with a clear 4xx
/// in the JSON envelope, nothing created, nothing charged, nothing read from
/// outside the store.
async fn hostile_input_is_refused_with_a_clear_4xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:9";
    let post = || raw(&app, Method::POST, "/api/v1/jobs").bearer_auth(&key);

    // Invalid UTF-8 in a JSON body.
    let mut bytes = serde_json::to_vec(&tg_job(user, prompt("PLACEHOLDER"))).unwrap();
    let at = bytes.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    send(post().header(CONTENT_TYPE, "application/json").body(bytes))
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_request");
    // A prompt far over the limit, inside the body limit.
    api_error(
        tg.create_job(&tg_job(user, prompt(&"a fox ".repeat(10_000))), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "prompt_too_long",
    );
    // Control characters that could forge lines wherever a prompt is shown.
    let e = api_error(
        tg.create_job(&tg_job(user, prompt("a fox\u{0}\u{1b}[2J")), None)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_params",
    );
    assert_eq!(e.field.as_deref(), Some("params.prompt"));
    // A user reference with a path or a control character in it.
    for bad in ["telegram:../../admin", "telegram:1\n2", "telegram:"] {
        api_error(
            tg.create_job(&tg_job(bad, prompt("x")), None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_ref",
        );
    }
    // Paths that try to leave the store: artifact and input ids are checked
    // before any key is built from them.
    for path in [
        "/api/v1/artifacts/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/artifacts/art_..%2F..%2Ftessera.db",
        "/api/v1/artifacts/%2Fetc%2Fpasswd",
    ] {
        send(raw(&app, Method::GET, path).bearer_auth(&key))
            .await
            .error(StatusCode::NOT_FOUND, "artifact_not_found");
    }
    send(
        raw(
            &app,
            Method::GET,
            "/api/internal/inputs/..%2F..%2Fetc%2Fpasswd",
        )
        .bearer_auth(&app.internal_token),
    )
    .await
    .error(StatusCode::NOT_FOUND, "input_not_found");
    // A job id that is no job id.
    send(raw(&app, Method::GET, "/api/v1/jobs/..%2Fjobs").bearer_auth(&key))
        .await
        .error(StatusCode::NOT_FOUND, "job_not_found");
    // A request id with bytes that are no text is ignored, not fatal.
    let created = send(
        raw_create(
            &reqwest::Client::new(),
            &app,
            &key,
            &tg_job(user, prompt("ok")),
            None,
        )
        .header(
            tessera_api::REQUEST_ID,
            reqwest::header::HeaderValue::from_bytes(b"id-\xff\xfe").unwrap(),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    // Only the last request created a job, and charged for it.
    let all = list_all(&app.admin, ListJobsQuery::default(), true).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(tg.get_user(user).await.unwrap().tokens_used_today, 1);
    app.shutdown().await;
}

// U+0000 in text that reaches SQL. PostgreSQL cannot hold it in TEXT or
// JSONB and failed each of these with a 500 (SQLite took them); Schemathesis
// found them (tests/schemathesis.rs). Each is now refused before the
// database, the same way on both backends.

/// Listing filters are checked as strictly as the values they match.
async fn nul_in_list_filters_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    for (path, token, field) in [
        ("/api/v1/jobs?user_ref=telegram%3A1%00", &key, "user_ref"),
        ("/api/v1/jobs?bot_id=tg-image-bot-1%00", &key, "bot_id"),
        (
            "/api/admin/jobs?user_ref=telegram%3A1%00",
            &app.admin_token,
            "user_ref",
        ),
        (
            "/api/admin/jobs?bot_id=tg-image-bot-1%00",
            &app.admin_token,
            "bot_id",
        ),
        // Malformed without a NUL: refused alike, not an empty page.
        ("/api/v1/jobs?user_ref=nobody", &key, "user_ref"),
        ("/api/v1/jobs?bot_id=a%20b", &key, "bot_id"),
    ] {
        let e = send(raw(&app, Method::GET, path).bearer_auth(token))
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
        assert_eq!(e.field.as_deref(), Some(field), "{path}");
    }
    let ok = send(
        raw(
            &app,
            Method::GET,
            "/api/v1/jobs?user_ref=telegram%3A1&bot_id=tg-image-bot-1",
        )
        .bearer_auth(&key),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    app.shutdown().await;
}

/// A `reply_context` holding U+0000, in a value or a key, creates nothing.
async fn nul_in_reply_context_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:10";
    for ctx in [
        json!({"chat": 1, "message\u{0}": 2}),
        json!({"chat": "a\u{0}b"}),
        json!({"deep": [{"x": ["\u{0}"]}]}),
    ] {
        let req = CreateJobRequest {
            reply_context: Some(ctx.clone()),
            ..tg_job(user, prompt("a fox"))
        };
        let e = api_error(
            tg.create_job(&req, None).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
        assert_eq!(e.field.as_deref(), Some("reply_context"), "{ctx}");
    }
    assert_eq!(tg.get_user(user).await.unwrap().tokens_used_today, 0);
    assert!(list_all(&app.admin, by_user(user), true).await.is_empty());
    // Other control characters are the frontend's business, and stored.
    let req = CreateJobRequest {
        reply_context: Some(json!({"chat": "a\u{1}b"})),
        ..tg_job(user, prompt("a fox"))
    };
    let job = tg.create_job(&req, None).await.unwrap().job;
    let stored = tg.get_job(&job.job_id).await.unwrap();
    assert_eq!(stored.reply_context, Some(json!({"chat": "a\u{1}b"})));
    app.shutdown().await;
}

/// A plan id no plan can have is an unknown plan, not a database error.
async fn nul_in_a_plan_id_is_an_unknown_plan(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for plan in ["pro\u{0}", "\u{0}", "", "PRO PLAN"] {
        let answer = send(
            raw(&app, Method::PUT, "/api/admin/users/telegram:11/plan")
                .bearer_auth(&app.admin_token)
                .json(&json!({ "plan_id": plan })),
        )
        .await;
        answer.error(StatusCode::NOT_FOUND, "plan_not_found");
    }
    let quota = send(
        raw(&app, Method::PUT, "/api/admin/users/telegram:11/plan")
            .bearer_auth(&app.admin_token)
            .json(&json!({ "plan_id": "pro" })),
    )
    .await;
    assert_eq!(quota.status, StatusCode::OK, "{:?}", quota.body);
    assert_eq!(quota.body["plan"]["id"], "pro");
    app.shutdown().await;
}

/// Progress and results name their worker as a heartbeat does.
async fn nul_in_a_worker_id_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let job = tg
        .create_job(&tg_job("telegram:12", prompt("a fox")), None)
        .await
        .unwrap()
        .job;
    let progress = format!("/api/internal/jobs/{}/progress", job.job_id);
    for worker in ["w\u{0}", "", "a b"] {
        let e = send(
            raw(&app, Method::POST, &progress)
                .bearer_auth(&app.internal_token)
                .json(&json!({"worker_id": worker, "attempt": 1, "progress": 5.0})),
        )
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_progress");
        assert_eq!(e.field.as_deref(), Some("worker_id"), "{worker:?}");
    }
    // A well-formed worker that is not running it: the fence, as before.
    send(
        raw(&app, Method::POST, &progress)
            .bearer_auth(&app.internal_token)
            .json(&json!({"worker_id": "worker-0", "attempt": 1, "progress": 5.0})),
    )
    .await
    .error(StatusCode::CONFLICT, "stale_attempt");
    // The result upload (multipart, written by hand: one `result` part).
    let boundary = "tessera-test-boundary";
    let part = json!({"worker_id": "w\u{0}", "attempt": 1, "outcome": "failed",
        "error": {"code": "engine_error", "message": "x", "retryable": false}});
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"result\"\r\n\
         Content-Type: application/json\r\n\r\n{part}\r\n--{boundary}--\r\n"
    );
    let e = send(
        raw(
            &app,
            Method::POST,
            &format!("/api/internal/jobs/{}/result", job.job_id),
        )
        .bearer_auth(&app.internal_token)
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_result");
    assert_eq!(e.field.as_deref(), Some("worker_id"));
    // The job is untouched.
    assert_eq!(
        tg.get_job(&job.job_id).await.unwrap().status,
        JobState::Queued
    );
    app.shutdown().await;
}

async fn unknown_routes_and_methods_answer_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    send(raw(&app, Method::GET, "/api/v1/nope"))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    send(raw(&app, Method::GET, "/nope").bearer_auth(&key))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    send(raw(&app, Method::PATCH, "/api/v1/jobs").bearer_auth(&key))
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(raw(
        &app,
        Method::PUT,
        "/api/v1/jobs/job_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
    ))
    .await
    .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(raw(&app, Method::POST, "/healthz"))
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.shutdown().await;
}

// ---- 4. idempotency ----

async fn idempotent_retries_replay_the_first_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let http = reqwest::Client::new();
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let req = tg_job("telegram:5", prompt("a lighthouse"));

    let first = send(raw_create(&http, &app, &key, &req, Some("retry-1"))).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header(tessera_api::IDEMPOTENT_REPLAYED), None);
    let second = send(raw_create(&http, &app, &key, &req, Some("retry-1"))).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(
        second.header(tessera_api::IDEMPOTENT_REPLAYED),
        Some("true")
    );
    assert_eq!(first.body["job_id"], second.body["job_id"]);
    assert_eq!(second.body["cost_tokens"], 1);
    let job_id: JobId = serde_json::from_value(first.body["job_id"].clone()).unwrap();

    // The typed client reports the replay too.
    let third = tg.create_job(&req, Some("retry-1")).await.unwrap();
    assert!(third.replayed);
    assert_eq!(third.job.job_id, job_id);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        1
    );

    // The same key for a different request is refused, and charges nothing.
    let different = tg_job("telegram:5", prompt("a different lighthouse"));
    api_error(
        tg.create_job(&different, Some("retry-1")).await,
        StatusCode::CONFLICT,
        "idempotency_key_reused",
    );
    // A fresh key is a fresh job.
    let fresh = tg.create_job(&different, Some("retry-2")).await.unwrap();
    assert!(!fresh.replayed);
    assert_ne!(fresh.job.job_id, job_id);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        2
    );

    // A replay returns the job as created, even after it was cancelled.
    tg.cancel_job(&job_id).await.unwrap();
    let late = tg.create_job(&req, Some("retry-1")).await.unwrap();
    assert!(late.replayed);
    assert_eq!(late.job.job_id, job_id);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        1
    );

    // The same request spelled differently (keys in another order, other spacing)
    // is still the same request.
    let spelled = |text: &str| {
        http.post(format!("{}/api/v1/jobs", app.base_url()))
            .bearer_auth(&key)
            .header(CONTENT_TYPE, "application/json")
            .header(tessera_api::IDEMPOTENCY_KEY, "spelling")
            .body(text.to_owned())
    };
    let a = send(spelled(
        r#"{"frontend":"telegram","bot_id":"tg-image-bot-1","capability":"image","user_ref":"telegram:5","params":{"prompt":"a tower","resolution":"512x512"}}"#,
    ))
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let b = send(spelled(
        r#"{ "params": { "resolution": "512x512", "prompt": "a tower" },
             "user_ref": "telegram:5", "capability": "image",
             "bot_id": "tg-image-bot-1", "frontend": "telegram", "reply_context": null }"#,
    ))
    .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    assert_eq!(b.header(tessera_api::IDEMPOTENT_REPLAYED), Some("true"));
    assert_eq!(a.body["job_id"], b.body["job_id"]);
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        2
    );

    // Keys of up to 128 printable characters are accepted; longer ones are not.
    let longest = "k".repeat(128);
    tg.create_job(&tg_job("telegram:5", prompt("long key")), Some(&longest))
        .await
        .expect("a 128-character key is fine");
    api_error(
        tg.create_job(
            &tg_job("telegram:5", prompt("longer key")),
            Some(&"k".repeat(129)),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
    );
    assert_eq!(
        tg.get_user("telegram:5").await.unwrap().tokens_used_today,
        3
    );

    // Keys are per bot: another bot's identical key is its own request.
    let tg2 = app.frontend(Platform::Telegram, TG_BOT_2).await;
    let other = image_job(
        Platform::Telegram,
        TG_BOT_2,
        "telegram:6",
        prompt("a lighthouse"),
    );
    let other = tg2.create_job(&other, Some("retry-1")).await.unwrap();
    assert!(!other.replayed);
    assert_ne!(other.job.job_id, job_id);
    app.shutdown().await;
}

async fn concurrent_retries_with_one_key_create_one_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let req = tg_job("telegram:burst", prompt("one job only"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let tg = tg.clone();
            let req = req.clone();
            tokio::spawn(async move { tg.create_job(&req, Some("burst-key")).await })
        })
        .collect();
    let mut job_ids = HashSet::new();
    let mut fresh = 0;
    for t in futures::future::join_all(tasks).await {
        let created = t.expect("task").expect("every retry succeeds");
        job_ids.insert(created.job.job_id);
        if !created.replayed {
            fresh += 1;
        }
    }
    assert_eq!(job_ids.len(), 1, "one key, one job: {job_ids:?}");
    assert_eq!(fresh, 1, "exactly one answer is the original create");
    assert_eq!(
        tg.get_user("telegram:burst")
            .await
            .unwrap()
            .tokens_used_today,
        1
    );
    let jobs = list_all(&app.admin, by_user("telegram:burst"), true).await;
    assert_eq!(ids(&jobs), job_ids.into_iter().collect::<Vec<_>>());
    app.shutdown().await;
}

/// The last token of the day: a retry racing its first attempt must answer with
/// that attempt's job, not with "quota exhausted" (the first attempt spent it).
async fn racing_retries_on_the_last_token_all_get_the_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    for i in 0..19 {
        let req = tg_job("telegram:last", prompt(&format!("warm-up {i}")));
        tg.create_job(&req, None).await.expect("within quota");
    }
    let req = tg_job("telegram:last", prompt("the twentieth"));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (tg, req) = (tg.clone(), req.clone());
            tokio::spawn(async move { tg.create_job(&req, Some("last-token")).await })
        })
        .collect();
    let mut job_ids = HashSet::new();
    for t in futures::future::join_all(tasks).await {
        let created = t
            .expect("task")
            .unwrap_or_else(|e| panic!("a retry of a created job was refused: {e}"));
        job_ids.insert(created.job.job_id);
    }
    assert_eq!(job_ids.len(), 1, "one key, one job: {job_ids:?}");
    let quota = tg.get_user("telegram:last").await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (20, Some(0))
    );
    // A different request after that is refused as it should be.
    let more = tg_job("telegram:last", prompt("one more"));
    let refused = tg.create_job(&more, Some("another-key")).await.unwrap_err();
    assert_eq!(refused.code(), Some("quota_exhausted"));
    app.shutdown().await;
}

// ---- 5. plans ----

async fn plans_set_limits_and_costs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    // A user never seen is shown on the free plan.
    let ghost = tg.get_user("telegram:ghost").await.unwrap();
    assert_eq!(ghost.plan.id, "free");
    assert_eq!(
        (ghost.tokens_used_today, ghost.tokens_left_today),
        (0, Some(20))
    );
    assert!(ghost.resets_at > Utc::now());

    let set = app.admin.set_plan("telegram:pro", "pro").await.unwrap();
    assert_eq!(set.plan.id, "pro");
    assert_eq!(
        (set.tokens_used_today, set.tokens_left_today),
        (0, Some(300))
    );

    let big = tg_job(
        "telegram:pro",
        json!({"prompt": "x", "resolution": "2048x2048"}),
    );
    let created = tg.create_job(&big, None).await.unwrap().job;
    assert_eq!(created.cost_tokens, 4);
    let job = tg.get_job(&created.job_id).await.unwrap();
    assert_eq!(
        (job.params["width"].clone(), job.params["height"].clone()),
        (json!(2048), json!(2048))
    );
    let quota = tg.get_user("telegram:pro").await.unwrap();
    assert_eq!(quota.plan.id, "pro");
    assert_eq!(quota.plan.name, "PRO");
    assert_eq!(quota.tokens_used_today, 4);
    assert_eq!(quota.tokens_left_today, Some(296));

    // Changing plans keeps the day's usage.
    let downgraded = app.admin.set_plan("telegram:pro", "starter").await.unwrap();
    assert_eq!(downgraded.plan.id, "starter");
    assert_eq!(
        (downgraded.tokens_used_today, downgraded.tokens_left_today),
        (4, Some(116))
    );
    api_error(
        tg.create_job(&big, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "resolution_not_allowed",
    );
    app.admin.set_plan("telegram:pro", "pro").await.unwrap();

    // The same request on the free plan is refused.
    let free = tg_job(
        "telegram:free",
        json!({"prompt": "x", "resolution": "2048x2048"}),
    );
    api_error(
        tg.create_job(&free, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "resolution_not_allowed",
    );

    // The admin plan is unlimited: no tokens_left_today at all.
    let boss = app.admin.set_plan("telegram:boss", "admin").await.unwrap();
    assert_eq!(boss.plan.id, "admin");
    assert_eq!(boss.plan.daily_tokens, None);
    assert_eq!(boss.tokens_left_today, None);
    tg.create_job(&tg_job("telegram:boss", prompt("x")), None)
        .await
        .unwrap();
    let quota = tg.get_user("telegram:boss").await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (1, None)
    );
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let raw_quota =
        send(raw(&app, Method::GET, "/api/v1/users/telegram:boss").bearer_auth(&key)).await;
    assert_eq!(raw_quota.status, StatusCode::OK);
    assert!(
        raw_quota
            .body
            .get("tokens_left_today")
            .is_none_or(Value::is_null),
        "an unlimited plan shows no tokens left: {}",
        raw_quota.body
    );

    let plans = tg.plans().await.unwrap();
    let plan_ids: Vec<_> = plans.plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(plan_ids, ["free", "starter", "pro", "admin"]);
    app.shutdown().await;
}

// ---- 6. the quota under concurrency ----

async fn quota_holds_under_100_concurrent_creates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.key(Platform::Telegram, TG_BOT).await;
    let tg = app.client_with(&key);
    let user = "telegram:crowd";
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = app.base_url();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let http = http.clone();
            let base = base.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let req = tg_job(user, prompt(&format!("picture {i}")));
                let rb = http
                    .post(format!("{base}/api/v1/jobs"))
                    .bearer_auth(&key)
                    .json(&req);
                send(rb).await
            })
        })
        .collect();
    let answers: Vec<Answer> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|t| t.expect("task"))
        .collect();

    let mut created = HashSet::new();
    let mut resets = HashSet::new();
    let mut refused = 0;
    for a in &answers {
        match a.status {
            StatusCode::CREATED => {
                let job: CreateJobResponse = serde_json::from_value(a.body.clone()).unwrap();
                assert_eq!(job.cost_tokens, 1);
                created.insert(job.job_id);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let e = a.error(StatusCode::TOO_MANY_REQUESTS, "quota_exhausted");
                let at = e.resets_at.expect("quota_exhausted says when quotas reset");
                assert!(at > Utc::now());
                resets.insert(at);
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {}", a.body),
        }
    }
    assert_eq!((created.len(), refused), (20, 80));
    assert_eq!(resets.len(), 1, "one reset time for everyone: {resets:?}");

    let quota = tg.get_user(user).await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (20, Some(0))
    );
    assert!(resets.contains(&quota.resets_at));

    let query = ListJobsQuery {
        limit: Some(7),
        ..by_user(user)
    };
    let jobs = list_all(&tg, query.clone(), false).await;
    assert_eq!(jobs.len(), 20);
    assert_eq!(ids(&jobs).into_iter().collect::<HashSet<_>>(), created);
    assert_eq!(charged(&jobs), quota.tokens_used_today);

    // Cancelling five gives back five tokens, and the books still balance.
    for job in jobs.iter().take(5) {
        let cancelled = tg.cancel_job(&job.job_id).await.unwrap();
        assert!(cancelled.refunded);
    }
    let quota = tg.get_user(user).await.unwrap();
    assert_eq!(
        (quota.tokens_used_today, quota.tokens_left_today),
        (15, Some(5))
    );
    let jobs = list_all(&tg, query, false).await;
    assert_eq!(jobs.len(), 20);
    assert_eq!(jobs.iter().filter(|j| j.refunded).count(), 5);
    assert_eq!(charged(&jobs), 15);

    // The refunded tokens can be spent again, and no more.
    for i in 0..5 {
        tg.create_job(&tg_job(user, prompt(&format!("again {i}"))), None)
            .await
            .expect("refunded tokens are spendable");
    }
    api_error(
        tg.create_job(&tg_job(user, prompt("one too many")), None)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );
    let jobs = list_all(&tg, by_user(user), false).await;
    let quota = tg.get_user(user).await.unwrap();
    assert_eq!(quota.tokens_used_today, 20);
    assert_eq!(charged(&jobs), 20);
    app.shutdown().await;
}

// ---- 7. listing ----

async fn listing_filters_pages_and_scopes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg1 = app.frontend(Platform::Telegram, TG_BOT).await;
    let tg2 = app.frontend(Platform::Telegram, TG_BOT_2).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;

    // Created one after another, a few milliseconds apart, so that "newest first"
    // has one meaning.
    let mut telegram = Vec::new();
    let mut discord = Vec::new();
    for (client, req) in [
        (&tg1, tg_job("telegram:a", prompt("1"))),
        (
            &tg2,
            image_job(Platform::Telegram, TG_BOT_2, "telegram:b", prompt("2")),
        ),
        (
            &dc,
            image_job(Platform::Discord, DC_BOT, "discord:c", prompt("3")),
        ),
        (&tg1, tg_job("telegram:a", prompt("4"))),
        (
            &tg2,
            image_job(Platform::Telegram, TG_BOT_2, "telegram:b", prompt("5")),
        ),
        (&tg1, tg_job("telegram:a", prompt("6"))),
        (
            &dc,
            image_job(Platform::Discord, DC_BOT, "discord:c", prompt("7")),
        ),
    ] {
        let id = client.create_job(&req, None).await.unwrap().job.job_id;
        if req.frontend == Platform::Telegram {
            telegram.push(id);
        } else {
            discord.push(id);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tg1.cancel_job(&telegram[0]).await.unwrap();
    let newest_first = |v: &[JobId]| v.iter().rev().cloned().collect::<Vec<_>>();

    // A telegram key sees both telegram bots' jobs, newest first.
    let all = tg1.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(ids(&all.jobs), newest_first(&telegram));
    assert_eq!(all.next_cursor, None);

    let bot1 = tg1
        .list_jobs(&ListJobsQuery {
            bot_id: Some(TG_BOT.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bot1.jobs.len(), 3);
    assert!(bot1.jobs.iter().all(|j| j.bot_id == TG_BOT));
    let bot2 = tg1
        .list_jobs(&ListJobsQuery {
            bot_id: Some(TG_BOT_2.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bot2.jobs.len(), 2);
    assert!(bot2.jobs.iter().all(|j| j.bot_id == TG_BOT_2));

    let status = |s: &str| ListJobsQuery {
        status: Some(s.into()),
        ..Default::default()
    };
    let live_or_cancelled = tg1.list_jobs(&status("QUEUED,CANCELLED")).await.unwrap();
    assert_eq!(live_or_cancelled.jobs.len(), 5);
    let cancelled = tg1.list_jobs(&status("CANCELLED")).await.unwrap();
    assert_eq!(ids(&cancelled.jobs), vec![telegram[0].clone()]);
    let queued = tg1.list_jobs(&status("QUEUED")).await.unwrap();
    assert_eq!(queued.jobs.len(), 4);
    assert!(queued.jobs.iter().all(|j| j.status == JobState::Queued));
    assert!(tg1
        .list_jobs(&status("COMPLETED"))
        .await
        .unwrap()
        .jobs
        .is_empty());

    // Bad queries.
    let e = api_error(
        tg1.list_jobs(&status("NOPE")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );
    assert_eq!(e.field.as_deref(), Some("status"));
    for limit in [0, 101] {
        let bad = ListJobsQuery {
            limit: Some(limit),
            ..Default::default()
        };
        let e = api_error(
            tg1.list_jobs(&bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
        );
        assert_eq!(e.field.as_deref(), Some("limit"));
    }
    let bad_cursor = ListJobsQuery {
        cursor: Some("not-a-cursor".into()),
        ..Default::default()
    };
    api_error(
        tg1.list_jobs(&bad_cursor).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );
    let key = app.key(Platform::Telegram, TG_BOT).await;
    for query in ["limit=abc", "colour=blue"] {
        send(raw(&app, Method::GET, &format!("/api/v1/jobs?{query}")).bearer_auth(&key))
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query");
    }

    // Pages of two visit every job once, newest first.
    let mut query = ListJobsQuery {
        limit: Some(2),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = tg1.list_jobs(&query).await.unwrap();
        assert!(page.jobs.len() <= 2);
        pages += 1;
        seen.extend(ids(&page.jobs));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(seen, newest_first(&telegram));
    assert_eq!(pages, 3);

    // A discord key never sees telegram jobs, whatever it asks for.
    let theirs = dc.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(ids(&theirs.jobs), newest_first(&discord));
    assert!(theirs.jobs.iter().all(|j| j.frontend == Platform::Discord));
    let snooping = [
        ListJobsQuery {
            bot_id: Some(TG_BOT.into()),
            ..Default::default()
        },
        by_user("telegram:a"),
        status("CANCELLED"),
    ];
    for q in snooping {
        assert!(dc.list_jobs(&q).await.unwrap().jobs.is_empty(), "{q:?}");
    }

    // The admin sees everything.
    let everything = list_all(&app.admin, ListJobsQuery::default(), true).await;
    let mut expected: Vec<JobId> = telegram.iter().chain(&discord).cloned().collect();
    expected.sort();
    expected.reverse();
    assert_eq!(ids(&everything), expected);
    let paged = list_all(
        &app.admin,
        ListJobsQuery {
            limit: Some(3),
            ..Default::default()
        },
        true,
    )
    .await;
    assert_eq!(ids(&paged), expected);
    let admin_discord = list_all(
        &app.admin,
        ListJobsQuery {
            bot_id: Some(DC_BOT.into()),
            ..Default::default()
        },
        true,
    )
    .await;
    assert_eq!(ids(&admin_discord), newest_first(&discord));
    api_error(
        app.admin.admin_list_jobs(&status("NOPE")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );
    app.shutdown().await;
}

// ---- 8. admin ----

async fn admin_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    api_error(
        app.admin.set_plan("telegram:1", "platinum").await,
        StatusCode::NOT_FOUND,
        "plan_not_found",
    );
    api_error(
        app.admin.set_plan("nobody", "pro").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_user_ref",
    );
    assert_eq!(tg.get_user("telegram:1").await.unwrap().plan.id, "free");

    // An operator cancels a frontend's job; the frontend sees why.
    let job = tg
        .create_job(&tg_job("telegram:1", prompt("x")), None)
        .await
        .unwrap()
        .job;
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        1
    );
    let cancelled = app.admin.admin_cancel_job(&job.job_id).await.unwrap();
    assert_eq!(cancelled.status, JobState::Cancelled);
    assert!(cancelled.refunded);
    assert_eq!(
        cancelled.error.as_ref().map(|e| e.code.as_str()),
        Some("cancelled_by_admin")
    );
    let seen = tg.get_job(&job.job_id).await.unwrap();
    assert_eq!(seen.status, JobState::Cancelled);
    assert_eq!(
        seen.error.map(|e| e.code),
        Some("cancelled_by_admin".to_owned())
    );
    assert_eq!(
        tg.get_user("telegram:1").await.unwrap().tokens_used_today,
        0
    );
    api_error(
        app.admin.admin_cancel_job(&job.job_id).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    api_error(
        tg.cancel_job(&job.job_id).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    api_error(
        app.admin.admin_cancel_job(&JobId::generate()).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );

    // Keys.
    let unknown: ApiKeyId = "key_01JD3Z8X9Q4W6E2R5T7Y9V1K3M".parse().unwrap();
    api_error(
        app.admin.revoke_key(&unknown).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    );
    send(raw(&app, Method::DELETE, "/api/admin/keys/not-a-key").bearer_auth(&app.admin_token))
        .await
        .error(StatusCode::NOT_FOUND, "key_not_found");
    for bad in ["bad id", "", "a/b", &"x".repeat(65)] {
        let e = api_error(
            app.admin
                .create_key(&CreateKeyRequest {
                    frontend: Platform::Telegram,
                    bot_id: bad.to_owned(),
                })
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_bot_id",
        );
        assert_eq!(e.field.as_deref(), Some("bot_id"), "{bad:?}");
    }
    let created = send(
        raw(&app, Method::POST, "/api/admin/keys")
            .bearer_auth(&app.admin_token)
            .json(&json!({"frontend": "web", "bot_id": "web-app.1"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["frontend"], "web");
    assert_eq!(created.body["bot_id"], "web-app.1");
    let key_id: ApiKeyId = serde_json::from_value(created.body["key_id"].clone()).unwrap();
    let secret = created.body["api_key"]
        .as_str()
        .expect("the secret")
        .to_owned();
    let web = app.client_with(&secret);
    let web_job = image_job(Platform::Web, "web-app.1", "web:ada", prompt("x"));
    web.create_job(&web_job, None)
        .await
        .expect("the new key works");
    let listed = app.admin.list_keys().await.unwrap();
    assert!(listed
        .keys
        .iter()
        .any(|k| k.key_id == key_id && k.revoked_at.is_none()));
    let first = app.admin.revoke_key(&key_id).await.unwrap();
    let second = app.admin.revoke_key(&key_id).await.unwrap();
    assert!(first.revoked_at.is_some());
    assert_eq!(
        second.revoked_at, first.revoked_at,
        "revoking again keeps the first time"
    );
    api_error(
        web.create_job(&web_job, None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
    app.shutdown().await;
}

// ---- 9. documents and probes ----

async fn openapi_and_probes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = send(raw(&app, Method::GET, "/api/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with('3')));
    let paths = doc.body["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/users/{user_ref}",
        "/api/v1/plans",
        "/api/admin/keys",
        "/api/admin/keys/{key_id}",
        "/api/admin/users/{user_ref}/plan",
        "/api/admin/jobs",
        "/api/admin/jobs/{job_id}",
        "/api/v1/accounts",
        "/api/v1/accounts/sign-in",
        "/api/v1/accounts/{user_ref}",
        "/api/v1/accounts/{user_ref}/links",
        "/api/v1/link-codes",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(paths["/api/v1/jobs"].get("post").is_some());
    assert!(paths["/api/v1/jobs"].get("get").is_some());
    assert!(doc.body["components"]["schemas"]
        .get("ApiErrorBody")
        .is_some());

    let alive = send(raw(&app, Method::GET, "/healthz")).await;
    assert_eq!(
        (alive.status, alive.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = send(raw(&app, Method::GET, "/readyz")).await;
    assert_eq!(
        (ready.status, ready.body.clone()),
        (StatusCode::OK, json!({"status": "ready"}))
    );

    // A caller's request id is echoed back.
    let traced =
        send(raw(&app, Method::GET, "/healthz").header(tessera_api::REQUEST_ID, "trace-me-42"))
            .await;
    assert_eq!(traced.header(tessera_api::REQUEST_ID), Some("trace-me-42"));
    app.shutdown().await;
}

/// A frontend acknowledges delivering an ended job; a restarted bot lists the
/// ended jobs it has not delivered yet, and nothing else.
async fn delivery_is_acknowledged_once_jobs_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let other = app.frontend(Platform::Telegram, "tg-video-bot-1").await;
    let live = tg
        .create_job(&tg_job("telegram:7", prompt("still waiting")), None)
        .await
        .unwrap()
        .job;
    let ended = tg
        .create_job(&tg_job("telegram:7", prompt("cancelled soon")), None)
        .await
        .unwrap()
        .job;
    let undelivered = ListJobsQuery {
        bot_id: Some(TG_BOT.into()),
        undelivered: Some(true),
        ..Default::default()
    };
    assert!(tg.list_jobs(&undelivered).await.unwrap().jobs.is_empty());

    let early = tg.mark_delivered(&live.job_id).await.unwrap_err();
    assert_eq!(early.code(), Some("job_not_finished"), "{early}");
    assert_eq!(early.status(), Some(StatusCode::CONFLICT));

    tg.cancel_job(&ended.job_id).await.unwrap();
    let listed = tg.list_jobs(&undelivered).await.unwrap().jobs;
    assert_eq!(ids(&listed), vec![ended.job_id.clone()]);
    assert_eq!(listed[0].delivered_at, None);

    let first = tg.mark_delivered(&ended.job_id).await.unwrap();
    let at = first.delivered_at.expect("delivery recorded");
    let again = tg.mark_delivered(&ended.job_id).await.unwrap();
    assert_eq!(
        again.delivered_at,
        Some(at),
        "the first acknowledgement counts"
    );
    assert!(tg.list_jobs(&undelivered).await.unwrap().jobs.is_empty());
    assert_eq!(
        tg.get_job(&ended.job_id).await.unwrap().delivered_at,
        Some(at)
    );

    // Another platform's key cannot see or acknowledge it.
    let dc = app.frontend(Platform::Discord, "dc-image-bot-1").await;
    let foreign = dc.mark_delivered(&ended.job_id).await.unwrap_err();
    assert_eq!(foreign.code(), Some("job_not_found"), "{foreign}");
    // A key of another bot on the same platform shares the platform's jobs.
    assert!(other.mark_delivered(&ended.job_id).await.is_ok());
}

// ---- 10. accounts and links ----

fn credentials(email: &str, password: &str) -> Credentials {
    Credentials {
        email: email.to_owned(),
        password: password.to_owned(),
    }
}

const CODE_ALPHABET: &str = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// A link code as issued: `XXXX-XXXX` from the unambiguous alphabet, valid
/// for ten minutes.
#[track_caller]
fn check_code(code: &LinkCode) {
    let (a, b) = code.code.split_once('-').expect("two groups");
    assert_eq!((a.len(), b.len()), (4, 4), "{}", code.code);
    assert!(
        a.chars()
            .chain(b.chars())
            .all(|c| CODE_ALPHABET.contains(c)),
        "{}",
        code.code
    );
    let ttl = code.expires_at - Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(9) && ttl <= chrono::Duration::minutes(10),
        "expires in {ttl}"
    );
}

async fn accounts_sign_up_and_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web_key = app.key(Platform::Web, WEB).await;
    let web = app.client_with(&web_key);
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;

    let created = send(
        raw(&app, Method::POST, "/api/v1/accounts")
            .bearer_auth(&web_key)
            .json(&json!({"email": "  Ada@Example.ORG ", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(
        !created.body.to_string().contains("argon2") && !created.body.to_string().contains("horse"),
        "neither the password nor its hash is shown: {}",
        created.body
    );
    let ada: tessera_api::public::AccountView =
        serde_json::from_value(created.body).expect("an account");
    let id = ada.user_ref.strip_prefix("web:").expect("a web user");
    assert_eq!(id.len(), 26, "a ULID: {id}");
    assert_eq!(id, id.to_lowercase());
    assert_eq!(ada.email, "ada@example.org");
    assert!(ada.linked.is_empty());
    // On the default plan, like any new user.
    let quota = web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(
        (quota.plan.id.as_str(), quota.tokens_used_today),
        ("free", 0)
    );

    // One account per email, whatever its case.
    for email in ["ada@example.org", "ADA@example.org"] {
        let e = api_error(
            web.create_account(&credentials(email, "another password"))
                .await,
            StatusCode::CONFLICT,
            "email_taken",
        );
        assert_eq!(e.field.as_deref(), Some("email"));
    }
    for email in [
        "",
        "ada",
        "@example.org",
        "ada@example",
        "ada@.example.org",
        "ada@example.org.",
        "ada@@example.org",
        "ada lovelace@example.org",
        "ada@exa\u{0}mple.org",
        &format!("{}@example.org", "a".repeat(243)),
    ] {
        let e = api_error(
            web.create_account(&credentials(email, "correct horse battery"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        );
        assert_eq!(e.field.as_deref(), Some("email"), "{email:?}");
    }
    for password in ["", "7 chars", &"p".repeat(257)] {
        let e = api_error(
            web.create_account(&credentials("bob@example.org", password))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        );
        assert_eq!(e.field.as_deref(), Some("password"));
    }
    // Characters are counted, not bytes: eight of them will do, 256 too.
    web.create_account(&credentials("bob@example.org", "пароль12"))
        .await
        .unwrap();
    web.create_account(&credentials("cy@example.org", &"p".repeat(256)))
        .await
        .unwrap();

    // Signing in: the email as typed, the password exactly.
    let signed = web
        .sign_in(&credentials(" ADA@example.org", "correct horse battery"))
        .await
        .unwrap();
    assert_eq!(signed, ada);
    let wrong = api_error(
        web.sign_in(&credentials("ada@example.org", "correct horse batterY"))
            .await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    // An unknown email gets the very same answer.
    for email in ["eve@example.org", "not an email"] {
        let unknown = api_error(
            web.sign_in(&credentials(email, "correct horse battery"))
                .await,
            StatusCode::FORBIDDEN,
            "sign_in_failed",
        );
        assert_eq!(unknown, wrong);
    }

    assert_eq!(web.get_account(&ada.user_ref).await.unwrap(), ada);
    api_error(
        web.get_account("web:nobody").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // A web user seen through jobs only has no account either.
    web.create_job(
        &image_job(Platform::Web, WEB, "web:anon", prompt("x")),
        None,
    )
    .await
    .unwrap();
    api_error(
        web.get_account("web:anon").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    api_error(
        web.get_account("telegram:1").await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );

    // Accounts are the website's: bots' keys are refused before anything is read.
    let ada_creds = credentials("ada@example.org", "correct horse battery");
    api_error(
        tg.create_account(&credentials("tg@example.org", "correct horse battery"))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.sign_in(&ada_creds).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.get_account(&ada.user_ref).await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    api_error(
        tg.redeem_link_code(&ada.user_ref, "K7QF-M2XD").await,
        StatusCode::FORBIDDEN,
        "forbidden_frontend",
    );
    // Link codes are for bot users on the key's own platform.
    let e = api_error(
        web.create_link_code(&ada.user_ref).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_linkable",
    );
    assert_eq!(e.field.as_deref(), Some("user_ref"));
    api_error(
        tg.create_link_code("discord:1").await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    api_error(
        tg.create_link_code("telegram:").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_user_ref",
    );
    // Unknown fields are refused, as everywhere.
    send(
        raw(&app, Method::POST, "/api/v1/accounts/sign-in")
            .bearer_auth(&web_key)
            .json(&json!({"email": "ada@example.org", "password": "correct horse battery", "admin": true})),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    app.shutdown().await;
}

async fn linked_bot_users_share_the_accounts_plan_and_quota(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let dc = app.frontend(Platform::Discord, DC_BOT).await;
    let ada = web
        .create_account(&credentials("ada@example.org", "correct horse battery"))
        .await
        .unwrap();

    // The bot user asks for a code (and is created on first sight)...
    let code = tg.create_link_code("telegram:42").await.unwrap();
    check_code(&code);
    assert_eq!(tg.get_user("telegram:42").await.unwrap().plan.id, "free");
    // ...asking again replaces it...
    let code_2 = tg.create_link_code("telegram:42").await.unwrap();
    check_code(&code_2);
    assert_ne!(code_2.code, code.code);
    let e = api_error(
        web.redeem_link_code(&ada.user_ref, &code.code).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_link_code",
    );
    assert_eq!(e.field.as_deref(), Some("code"));
    // ...a web user without an account cannot use it (and it is not spent)...
    api_error(
        web.redeem_link_code("web:nobody", &code_2.code).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // ...and the website redeems it, typed loosely, for the signed-in account.
    let typed = code_2.code.to_lowercase().replace('-', " ");
    let linked = web.redeem_link_code(&ada.user_ref, &typed).await.unwrap();
    assert_eq!(linked.linked, ["telegram:42"]);
    assert_eq!(web.get_account(&ada.user_ref).await.unwrap(), linked);
    // A code links once.
    api_error(
        web.redeem_link_code(&ada.user_ref, &code_2.code).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_link_code",
    );
    for garbage in ["", "K7QF", "K7QF-M2XD-9", "0000-0000", "\u{0}"] {
        api_error(
            web.redeem_link_code(&ada.user_ref, garbage).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_link_code",
        );
    }

    // One quota: a job from Telegram and one from the website are charged
    // to the account, and both users see the same day.
    let web_job = |text: &str| image_job(Platform::Web, WEB, &ada.user_ref, prompt(text));
    let tg_first = tg
        .create_job(&tg_job("telegram:42", prompt("from telegram")), None)
        .await
        .unwrap()
        .job;
    web.create_job(&web_job("from the website"), None)
        .await
        .unwrap();
    let seen_by_bot = tg.get_user("telegram:42").await.unwrap();
    let seen_by_web = web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(
        (seen_by_bot.tokens_used_today, seen_by_bot.tokens_left_today),
        (2, Some(18))
    );
    assert_eq!(
        (seen_by_web.tokens_used_today, seen_by_web.tokens_left_today),
        (2, Some(18))
    );
    assert_eq!(seen_by_bot.plan, seen_by_web.plan);
    // Spent from both sides, it is spent for both.
    for i in 0..18 {
        if i % 2 == 0 {
            tg.create_job(&tg_job("telegram:42", prompt("x")), None)
                .await
                .unwrap();
        } else {
            web.create_job(&web_job("x"), None).await.unwrap();
        }
    }
    api_error(
        tg.create_job(&tg_job("telegram:42", prompt("one more")), None)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );
    api_error(
        web.create_job(&web_job("one more"), None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );
    // A refund frees a token for both.
    tg.cancel_job(&tg_first.job_id).await.unwrap();
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().tokens_used_today,
        19
    );
    web.create_job(&web_job("the freed token"), None)
        .await
        .unwrap();
    api_error(
        tg.create_job(&tg_job("telegram:42", prompt("x")), None)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exhausted",
    );

    // One plan: putting the bot user on a plan puts the account on it.
    let upgraded = app.admin.set_plan("telegram:42", "pro").await.unwrap();
    assert_eq!(
        (
            upgraded.plan.id.as_str(),
            upgraded.tokens_used_today,
            upgraded.tokens_left_today
        ),
        ("pro", 20, Some(280))
    );
    let account_quota = web.get_user(&ada.user_ref).await.unwrap();
    assert_eq!(
        (
            account_quota.plan.id.as_str(),
            account_quota.tokens_left_today
        ),
        ("pro", Some(280))
    );
    let big = tg_job(
        "telegram:42",
        json!({"prompt": "x", "resolution": "2048x2048"}),
    );
    assert_eq!(tg.create_job(&big, None).await.unwrap().job.cost_tokens, 4);

    // A Discord user links to the same account.
    let dc_code = dc.create_link_code("discord:9").await.unwrap();
    check_code(&dc_code);
    let linked = web
        .redeem_link_code(&ada.user_ref, &dc_code.code)
        .await
        .unwrap();
    assert_eq!(linked.linked, ["discord:9", "telegram:42"]);
    assert_eq!(
        dc.get_user("discord:9").await.unwrap().tokens_used_today,
        24
    );

    // Linking again elsewhere moves the bot user: its quota is the new account's.
    let bob = web
        .create_account(&credentials("bob@example.org", "another password"))
        .await
        .unwrap();
    let moved = tg.create_link_code("telegram:42").await.unwrap();
    let bob = web
        .redeem_link_code(&bob.user_ref, &moved.code)
        .await
        .unwrap();
    assert_eq!(bob.linked, ["telegram:42"]);
    assert_eq!(
        web.get_account(&ada.user_ref).await.unwrap().linked,
        ["discord:9"]
    );
    let now_bobs = tg.get_user("telegram:42").await.unwrap();
    assert_eq!(
        (now_bobs.plan.id.as_str(), now_bobs.tokens_used_today),
        ("free", 0)
    );
    tg.create_job(&tg_job("telegram:42", prompt("on bob")), None)
        .await
        .unwrap();
    assert_eq!(
        web.get_user(&bob.user_ref).await.unwrap().tokens_used_today,
        1
    );
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().tokens_used_today,
        24
    );

    // A bot user's own paid plan is not lost by linking: the account takes
    // the better of the two, and a worse one never lowers it.
    app.admin.set_plan("discord:77", "starter").await.unwrap();
    let cat = web
        .create_account(&credentials("cat@example.org", "correct horse battery"))
        .await
        .unwrap();
    let code = dc.create_link_code("discord:77").await.unwrap();
    web.redeem_link_code(&cat.user_ref, &code.code)
        .await
        .unwrap();
    assert_eq!(
        web.get_user(&cat.user_ref).await.unwrap().plan.id,
        "starter"
    );
    assert_eq!(dc.get_user("discord:77").await.unwrap().plan.id, "starter");
    let code = tg.create_link_code("telegram:88").await.unwrap();
    web.redeem_link_code(&cat.user_ref, &code.code)
        .await
        .unwrap();
    assert_eq!(
        web.get_user(&cat.user_ref).await.unwrap().plan.id,
        "starter"
    );

    // What each user id was charged is what its jobs cost, refunds included.
    let checked = tessera_testkit::invariants::check(&**app.store(), &[], None, false).await;
    assert_eq!(checked.tokens_charged, 24 + 1);
    app.shutdown().await;
}

/// Each web bot id is its own trust domain: a second web key (the `demo` key
/// `tessera up` prints) cannot use the website's accounts, nor see its jobs.
/// Web users that are no account stay anyone's.
async fn each_web_bot_is_its_own_trust_domain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let web = app.frontend(Platform::Web, WEB).await;
    let demo = app.frontend(Platform::Web, DEMO).await;
    let tg = app.frontend(Platform::Telegram, TG_BOT).await;
    let password = "correct horse battery";
    let ada_creds = credentials("ada@example.org", password);
    let ada = web.create_account(&ada_creds).await.unwrap();

    // To the demo key, the website's account does not exist: signing in
    // fails as for an unknown email, reading and linking find no account.
    let unknown = api_error(
        demo.sign_in(&credentials("eve@example.org", password))
            .await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    let foreign = api_error(
        demo.sign_in(&ada_creds).await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    assert_eq!(foreign, unknown);
    let nobody = api_error(
        demo.get_account("web:nobody").await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    assert_eq!(
        api_error(
            demo.get_account(&ada.user_ref).await,
            StatusCode::NOT_FOUND,
            "account_not_found",
        ),
        nobody
    );
    let code = tg.create_link_code("telegram:42").await.unwrap();
    api_error(
        demo.redeem_link_code(&ada.user_ref, &code.code).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // Emails are unique across websites.
    api_error(
        demo.create_account(&credentials("ada@example.org", "another password"))
            .await,
        StatusCode::CONFLICT,
        "email_taken",
    );
    // The demo key's own accounts are its own, and not the website's.
    let dee_creds = credentials("dee@example.org", password);
    let dee = demo.create_account(&dee_creds).await.unwrap();
    assert_eq!(demo.sign_in(&dee_creds).await.unwrap(), dee);
    assert_eq!(demo.get_account(&dee.user_ref).await.unwrap(), dee);
    api_error(
        web.sign_in(&dee_creds).await,
        StatusCode::FORBIDDEN,
        "sign_in_failed",
    );
    api_error(
        web.get_account(&dee.user_ref).await,
        StatusCode::NOT_FOUND,
        "account_not_found",
    );
    // The website's key still does all of it; the code was not spent.
    assert_eq!(web.sign_in(&ada_creds).await.unwrap(), ada);
    let linked = web
        .redeem_link_code(&ada.user_ref, &code.code)
        .await
        .unwrap();
    assert_eq!(linked.linked, ["telegram:42"]);

    // The demo key may neither create jobs for the account nor read its quota.
    let ada_job =
        |bot: &str, text: &str| image_job(Platform::Web, bot, &ada.user_ref, prompt(text));
    let e = api_error(
        demo.create_job(&ada_job(DEMO, "on ada's tokens"), None)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    assert!(e.message.contains("another website"), "{}", e.message);
    api_error(
        demo.get_user(&ada.user_ref).await,
        StatusCode::FORBIDDEN,
        "forbidden_user_ref",
    );
    assert_eq!(
        web.get_user(&ada.user_ref).await.unwrap().tokens_used_today,
        0,
        "nothing was charged"
    );
    let ada_first = web
        .create_job(&ada_job(WEB, "mine"), None)
        .await
        .unwrap()
        .job;
    let ada_second = web
        .create_job(&ada_job(WEB, "mine too"), None)
        .await
        .unwrap()
        .job;
    // A web user that is no account is anyone's, as in the demo.
    let mut demos = Vec::new();
    for (client, bot) in [(&web, WEB), (&demo, DEMO)] {
        let job = client
            .create_job(
                &image_job(Platform::Web, bot, "web:me", prompt("shared")),
                None,
            )
            .await
            .unwrap()
            .job;
        if bot == DEMO {
            demos.push(job.job_id);
        }
        assert_eq!(client.get_user("web:me").await.unwrap().user_ref, "web:me");
    }
    assert_eq!(demo.get_user("web:me").await.unwrap().tokens_used_today, 2);

    // Each web key sees only its own bot's jobs, as if the others did not exist.
    cannot_reach(&demo, &[&ada_first.job_id, &ada_second.job_id]).await;
    api_error(
        web.get_job(&demos[0]).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    let theirs = demo.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(ids(&theirs.jobs), demos);
    assert!(demo
        .list_jobs(&by_user(&ada.user_ref))
        .await
        .unwrap()
        .jobs
        .is_empty());
    let own = ListJobsQuery {
        bot_id: Some(DEMO.into()),
        ..Default::default()
    };
    assert_eq!(ids(&demo.list_jobs(&own).await.unwrap().jobs), demos);
    let snooping = ListJobsQuery {
        bot_id: Some(WEB.into()),
        ..Default::default()
    };
    api_error(
        demo.list_jobs(&snooping).await,
        StatusCode::FORBIDDEN,
        "forbidden_bot",
    );
    let mine = web.list_jobs(&ListJobsQuery::default()).await.unwrap();
    assert_eq!(mine.jobs.len(), 3);
    assert!(mine.jobs.iter().all(|j| j.bot_id == WEB));
    // A Telegram key still sees every Telegram bot's jobs, and no web job.
    assert!(tg
        .list_jobs(&ListJobsQuery::default())
        .await
        .unwrap()
        .jobs
        .is_empty());
    web.cancel_job(&ada_second.job_id).await.unwrap();

    // Ended, with an artifact: still the website's alone (cancelling an
    // ended job of another bot is not `job_finished`, which would tell it exists).
    let worker = app
        .worker(
            "worker-gpu-0",
            vec![tessera_testkit::sim(Capability::Image, &["sdxl-1.0"], 0)],
        )
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let job = web.get_job(&ada_first.job_id).await.unwrap();
        if job.status == JobState::Completed {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never completed: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cannot_reach(&demo, &[&ada_first.job_id, &ada_second.job_id]).await;
    let url = &done.artifacts[0].url;
    api_error(
        demo.download(url).await,
        StatusCode::NOT_FOUND,
        "artifact_not_found",
    );
    assert!(!web.download(url).await.unwrap().is_empty());
    assert!(web
        .mark_delivered(&ada_first.job_id)
        .await
        .unwrap()
        .delivered_at
        .is_some());
    api_error(
        web.cancel_job(&ada_first.job_id).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    worker.shutdown().await.unwrap();
    app.shutdown().await;
}

backend_tests!(
    create_get_cancel_round_trip,
    credentials_are_checked,
    keys_speak_only_for_their_bot_and_platform,
    invalid_requests_are_refused_with_stable_codes,
    oversized_bodies_are_refused,
    hostile_input_is_refused_with_a_clear_4xx,
    nul_in_list_filters_is_refused,
    nul_in_reply_context_is_refused,
    nul_in_a_plan_id_is_an_unknown_plan,
    nul_in_a_worker_id_is_refused,
    unknown_routes_and_methods_answer_json,
    idempotent_retries_replay_the_first_job,
    concurrent_retries_with_one_key_create_one_job,
    racing_retries_on_the_last_token_all_get_the_job,
    plans_set_limits_and_costs,
    quota_holds_under_100_concurrent_creates,
    listing_filters_pages_and_scopes,
    admin_endpoints,
    openapi_and_probes,
    delivery_is_acknowledged_once_jobs_end,
    accounts_sign_up_and_sign_in,
    linked_bot_users_share_the_accounts_plan_and_quota,
    each_web_bot_is_its_own_trust_domain,
);
