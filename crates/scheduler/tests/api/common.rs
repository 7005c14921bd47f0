//! What every module of the API suite shares: the bots it speaks for, job
//! requests, raw requests and their answers, and error and listing checks.

use std::fmt::Debug;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use tessera_api::internal::{Heartbeat, WorkerStatus};
use tessera_api::public::{CreateJobRequest, JobView, ListJobsQuery};
use tessera_api::{ApiErrorBody, Client, ClientError, ErrorDetail};
use tessera_core::{Capability, JobId, Platform};
use tessera_testkit::TestApp;

pub const TG_BOT: &str = "tg-image-bot-1";
pub const TG_BOT_2: &str = "tg-image-bot-2";
pub const DC_BOT: &str = "dc-image-bot-1";
pub const WEB: &str = "web-1";
/// A second web bot, such as the demo key `tessera up` prints.
pub const DEMO: &str = "demo";

pub fn image_job(
    frontend: Platform,
    bot_id: &str,
    user_ref: &str,
    params: Value,
) -> CreateJobRequest {
    CreateJobRequest {
        callback_url: None,
        context: None,
        frontend,
        bot_id: bot_id.parse().unwrap(),
        capability: Capability::Image,
        user_ref: user_ref.parse().unwrap(),
        reply_context: None,
        params,
    }
}

/// Creates a `tg-image-bot-1` image job for `user_ref` as raw JSON: a typed
/// request cannot hold a malformed reference, but the wire can.
pub async fn create_for_raw_user(app: &TestApp, key: &str, user_ref: &str) -> Answer {
    let mut body = serde_json::to_value(tg_job("telegram:1", prompt("x"))).unwrap();
    body["user_ref"] = user_ref.into();
    send(
        raw(app, Method::POST, "/api/v1/jobs")
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

/// An image job from `tg-image-bot-1`.
pub fn tg_job(user_ref: &str, params: Value) -> CreateJobRequest {
    image_job(Platform::Telegram, TG_BOT, user_ref, params)
}

pub fn prompt(text: &str) -> Value {
    json!({ "prompt": text })
}

/// A raw answer: status, headers and the body, which must be JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts an error answer: its status, its stable code, and that the body is
    /// exactly the error envelope.
    #[track_caller]
    pub fn error(&self, status: StatusCode, code: &str) -> ErrorDetail {
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(rb: RequestBuilder) -> Answer {
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
pub fn raw(app: &TestApp, method: Method, path: &str) -> RequestBuilder {
    reqwest::Client::new().request(method, format!("{}{path}", app.base_url()))
}

/// A raw create with a frontend key and, optionally, an idempotency key.
pub fn raw_create(
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
pub fn api_error<T: Debug>(
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
pub async fn list_all(client: &Client, query: ListJobsQuery, admin: bool) -> Vec<JobView> {
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

pub fn by_user(user_ref: &str) -> ListJobsQuery {
    ListJobsQuery {
        user_ref: Some(user_ref.parse().unwrap()),
        ..Default::default()
    }
}

/// `client` can neither read, cancel nor acknowledge these jobs: to it they
/// do not exist.
pub async fn cannot_reach(client: &Client, jobs: &[&JobId]) {
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

pub fn ids(jobs: &[JobView]) -> Vec<JobId> {
    jobs.iter().map(|j| j.job_id.clone()).collect()
}

/// Tokens the user's live (not refunded) jobs hold.
pub fn charged(jobs: &[JobView]) -> i64 {
    jobs.iter()
        .filter(|j| !j.refunded)
        .map(|j| j.cost_tokens)
        .sum()
}

/// A heartbeat from `worker-gpu-0`, busy, serving `sdxl-1.0` at an address
/// nobody answers: a worker that can run image jobs, so they are queued for
/// it, but takes none.
pub async fn busy_image_worker(app: &TestApp) {
    let internal = Client::new(&app.base_url(), app.internal_token.clone()).unwrap();
    internal
        .heartbeat(&Heartbeat {
            worker_id: "worker-gpu-0".parse().unwrap(),
            status: WorkerStatus::Busy,
            address: "http://127.0.0.1:9".into(),
            capabilities: vec![Capability::Image],
            models: vec!["sdxl-1.0".into()],
            loaded_models: vec![],
            model_memory: Vec::new(),
            current_job: None,
            gpu_name: None,
            gpu_memory_used: None,
            gpu_memory_total: None,
            gpu_utilization: None,
            engines: vec![],
        })
        .await
        .unwrap();
}

/// The sum of the scraped samples of the counter `name` (`..._total`) whose
/// labels include every `(label, value)` of `labels`; 0 with none.
pub async fn counter(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = app.scrape_metrics().await;
    let series = format!("{name}{{");
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| l.starts_with(&series))
        .filter(|l| wanted.iter().all(|w| l.contains(w.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
