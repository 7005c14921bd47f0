//! A KoboldCPP stand-in: its native generate API, with polling and abort.
//!
//! It follows KoboldCPP's documented API (`/api` on a KoboldCPP server):
//!
//! - `POST /api/v1/generate` (and `/api/latest/generate`) takes a
//!   `GenerationInput` and answers `{"results": [{"text", "finish_reason"}]}`.
//!   The reply is the stand-in's filler, one word a "token", one token every
//!   [`KoboldOptions::token_delay`]; `finish_reason` is `"stop"` when the
//!   filler ended by itself and `"length"` otherwise (the `max_length` limit
//!   or an abort), as KoboldCPP reports anything but an end-of-stream token.
//!   A body that is not JSON gets KoboldCPP's `500 {"detail": {"msg": "Error
//!   parsing input.", "type": "bad_input"}}`; a field outside its documented
//!   schema (`prompt` a required string, `max_length` and
//!   `max_context_length` integers ≥ 1, `temperature` a number ≥ 0, `genkey`
//!   a string) gets `422 {"detail": {field: [messages]}}`, the validation
//!   shape of the KoboldAI API KoboldCPP emulates.
//! - While one generation runs, another gets `503 {"detail": {"msg": "Server
//!   is busy; please try again later.", "type": "service_unavailable"}}` when
//!   [`KoboldOptions::single_slot`] is set (KoboldCPP without `--multiuser`),
//!   and waits its turn otherwise.
//! - `POST /api/extra/generate/check` (`{"genkey"}`, optional) and
//!   `GET /api/extra/generate/check` answer `{"results": [{"text"}]}` with
//!   the text so far of the generation with that key, or `""`.
//! - `POST /api/extra/abort` (`{"genkey"}`) stops the generation with that
//!   key (`{"success": "true", "done": "true"}`), defers the abort of a
//!   queued one (`"done": "false"`), or answers `{"success": "false"}`.
//!   As on KoboldCPP, a generation whose client hung up runs on until it
//!   ends or is aborted.
//! - `GET /api/v1/model` and `GET /api/extra/version` answer as KoboldCPP does.
//! - With [`KoboldOptions::password`] (KoboldCPP's `--password`), every `POST`
//!   (generate, check, abort) wants `Authorization: Bearer <password>` and
//!   without it gets KoboldCPP's `401 {"detail": {"error": "Unauthorized",
//!   "msg": "Authentication key is missing or invalid.", "type":
//!   "unauthorized"}}`; `GET`s stay open, as there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Words the stand-in "generates", in order, round and round.
const FILLER: &[&str] = &[
    "Once",
    "upon",
    "a",
    "time",
    "a",
    "small",
    "kobold",
    "kept",
    "a",
    "lantern",
    "lit",
    "for",
    "travellers",
    "lost",
    "in",
    "the",
    "hills.",
];

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct KoboldOptions {
    /// Tokens the filler reply has before it ends by itself.
    pub reply_tokens: usize,
    /// Time per token.
    pub token_delay: Duration,
    /// Answer 503 while generating, as KoboldCPP without `--multiuser`.
    pub single_slot: bool,
    /// Answer generate requests with 200 and a body that is not JSON.
    pub malformed: bool,
    /// The model name KoboldCPP reports.
    pub model: String,
    /// The password KoboldCPP was started with (`--password`), if any.
    pub password: Option<String>,
}

impl Default for KoboldOptions {
    fn default() -> Self {
        Self {
            reply_tokens: 8,
            token_delay: Duration::from_millis(5),
            single_slot: true,
            malformed: false,
            model: "koboldcpp/standin-7b".into(),
            password: None,
        }
    }
}

/// The reply of `tokens` tokens, as the stand-in generates it.
pub fn reply(tokens: usize) -> String {
    (0..tokens)
        .map(|i| format!(" {}", FILLER[i % FILLER.len()]))
        .collect()
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct KoboldRequest {
    pub method: String,
    pub path: String,
    /// The JSON body, if it was JSON.
    pub body: Option<Value>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Generation {
    genkey: String,
    text: String,
    abort: bool,
}

struct Shared {
    options: KoboldOptions,
    requests: Mutex<Vec<KoboldRequest>>,
    current: Mutex<Option<Generation>>,
    slot: Arc<tokio::sync::Mutex<()>>,
    queued: AtomicUsize,
    pending_abort: Mutex<Option<String>>,
    finished: AtomicUsize,
}

/// A running KoboldCPP stand-in; stops when dropped.
pub struct KoboldStandIn {
    url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl KoboldStandIn {
    pub async fn start(options: KoboldOptions) -> Self {
        let shared = Arc::new(Shared {
            options,
            requests: Mutex::new(Vec::new()),
            current: Mutex::new(None),
            slot: Arc::new(tokio::sync::Mutex::new(())),
            queued: AtomicUsize::new(0),
            pending_abort: Mutex::new(None),
            finished: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/api/v1/generate", post(generate))
            .route("/api/latest/generate", post(generate))
            .route("/api/extra/generate/check", post(check).get(check))
            .route("/api/extra/abort", post(abort))
            .route("/api/v1/model", get(model))
            .route("/api/extra/version", get(version))
            .fallback(|| async { (StatusCode::NOT_FOUND, "File Not Found") })
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            shared,
            server,
        }
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<KoboldRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<KoboldRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Whether a generation is running now.
    pub fn generating(&self) -> bool {
        lock(&self.shared.current).is_some()
    }

    /// Generations that ended (finished or aborted).
    pub fn generations_finished(&self) -> usize {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// Waits until no generation runs (at most `limit`); true if none does.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.generating() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for KoboldStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn record(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let authorization = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&shared.requests).push(KoboldRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        body: serde_json::from_slice(&bytes).ok(),
        authorization: authorization.clone(),
    });
    if let Some(password) = &shared.options.password {
        // As KoboldCPP's check_header_password: "Bearer ", then the key trimmed.
        let presented = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        if parts.method == Method::POST && presented != Some(password.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "detail": {
                    "error": "Unauthorized",
                    "msg": "Authentication key is missing or invalid.",
                    "type": "unauthorized",
                } })),
            )
                .into_response();
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn detail(status: StatusCode, msg: &str, kind: &str) -> Response {
    (
        status,
        Json(json!({ "detail": { "msg": msg, "type": kind } })),
    )
        .into_response()
}

/// Checks a generate body against KoboldCPP's documented `GenerationInput`.
fn validate(body: &Value) -> Result<(), Box<Response>> {
    let mut problems = serde_json::Map::new();
    let mut problem = |field: &str, msg: &str| {
        problems.insert(field.to_owned(), json!([msg]));
    };
    if !body.is_object() {
        return Err(Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "detail": { "_schema": ["Invalid input type."] } })),
            )
                .into_response(),
        ));
    }
    match body.get("prompt") {
        None => problem("prompt", "Missing data for required field."),
        Some(Value::String(_)) => {}
        Some(_) => problem("prompt", "Not a valid string."),
    }
    for field in ["max_length", "max_context_length"] {
        let Some(v) = body.get(field) else { continue };
        match v.as_i64() {
            Some(n) if n < 1 => problem(field, "Must be greater than or equal to 1."),
            Some(_) => {}
            None if v.is_u64() => {}
            None => problem(field, "Not a valid integer."),
        }
    }
    match body.get("temperature") {
        None => {}
        Some(v) => match v.as_f64() {
            Some(t) if t >= 0.0 => {}
            Some(_) => problem("temperature", "Must be greater than or equal to 0."),
            None => problem("temperature", "Not a valid number."),
        },
    }
    if body.get("genkey").is_some_and(|g| !g.is_string()) {
        problem("genkey", "Not a valid string.");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "detail": problems })),
            )
                .into_response(),
        ))
    }
}

async fn generate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error parsing input.",
            "bad_input",
        );
    };
    if let Err(response) = validate(&body) {
        return *response;
    }
    let permit = if shared.options.single_slot {
        match shared.slot.clone().try_lock_owned() {
            Ok(p) => p,
            Err(_) => {
                return detail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Server is busy; please try again later.",
                    "service_unavailable",
                )
            }
        }
    } else {
        shared.queued.fetch_add(1, Ordering::SeqCst);
        let p = shared.slot.clone().lock_owned().await;
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        p
    };
    if shared.options.malformed {
        drop(permit);
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"results\": [{\"text\": ",
        )
            .into_response();
    }
    let max_length = body
        .get("max_length")
        .and_then(Value::as_u64)
        .unwrap_or(180) as usize;
    let genkey = body
        .get("genkey")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // Generation runs on its own, as KoboldCPP's does: a client that hangs
    // up does not stop it; only an abort or the end does.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let gen_shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let shared = gen_shared;
        let deferred = {
            let mut pending = lock(&shared.pending_abort);
            if pending.as_deref() == Some(genkey.as_str()) && !genkey.is_empty() {
                *pending = None;
                true
            } else {
                false
            }
        };
        *lock(&shared.current) = Some(Generation {
            genkey: genkey.clone(),
            abort: deferred,
            ..Generation::default()
        });
        let wanted = shared.options.reply_tokens;
        let mut produced = 0;
        let mut aborted = false;
        while produced < wanted.min(max_length) {
            if lock(&shared.current).as_ref().is_some_and(|g| g.abort) {
                aborted = true;
                break;
            }
            tokio::time::sleep(shared.options.token_delay).await;
            if lock(&shared.current).as_ref().is_some_and(|g| g.abort) {
                aborted = true;
                break;
            }
            let word = format!(" {}", FILLER[produced % FILLER.len()]);
            if let Some(g) = lock(&shared.current).as_mut() {
                g.text.push_str(&word);
            }
            produced += 1;
        }
        let text = lock(&shared.current)
            .take()
            .map(|g| g.text)
            .unwrap_or_default();
        shared.finished.fetch_add(1, Ordering::SeqCst);
        let ended_by_itself = !aborted && produced == wanted && wanted <= max_length;
        let finish_reason = if ended_by_itself { "stop" } else { "length" };
        let _ = tx.send(json!({ "results": [{ "text": text, "finish_reason": finish_reason }] }));
    });
    match rx.await {
        Ok(result) => Json(result).into_response(),
        Err(_) => detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generation failed",
            "server_error",
        ),
    }
}

async fn check(State(shared): State<Arc<Shared>>, method: Method, body: Bytes) -> Response {
    let genkey = if method == Method::POST {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("genkey").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let queued = shared.queued.load(Ordering::SeqCst);
    let text = match lock(&shared.current).as_ref() {
        // Without a key, only a lone generation shows its text (no leaks
        // between clients), as on KoboldCPP.
        Some(g)
            if (genkey.is_empty() && g.genkey.is_empty() && queued == 0)
                || (!genkey.is_empty() && g.genkey == genkey) =>
        {
            g.text.clone()
        }
        _ => String::new(),
    };
    Json(json!({ "results": [{ "text": text }] })).into_response()
}

async fn abort(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let genkey = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("genkey").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let queued = shared.queued.load(Ordering::SeqCst);
    let mut current = lock(&shared.current);
    let answer = match current.as_mut() {
        Some(g)
            if (genkey.is_empty() && queued == 0) || (!genkey.is_empty() && g.genkey == genkey) =>
        {
            g.abort = true;
            json!({ "success": "true", "done": "true" })
        }
        _ if !genkey.is_empty() && queued > 0 => {
            *lock(&shared.pending_abort) = Some(genkey);
            json!({ "success": "true", "done": "false" })
        }
        _ => json!({ "success": "false", "done": "false" }),
    };
    drop(current);
    Json(answer).into_response()
}

async fn model(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "result": shared.options.model })).into_response()
}

async fn version() -> Response {
    Json(json!({ "result": "KoboldCpp", "version": "1.76" })).into_response()
}
