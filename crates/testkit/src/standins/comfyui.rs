//! A loopback ComfyUI, for testing the worker's ComfyUI engine without a GPU.
//!
//! It follows the request and answer shapes of ComfyUI's server:
//!
//! - `POST /prompt {"prompt", "client_id", "prompt_id"?}` validates the graph
//!   against a catalogue of real node classes (their required inputs, input
//!   types and ranges, the types their outputs carry) and answers 400 with
//!   `{"error": {"type", "message", "details", "extra_info"}, "node_errors"}` as
//!   ComfyUI does, or queues it and answers `{"prompt_id", "number", "node_errors"}`.
//! - One prompt runs at a time. Its messages go to the `/ws?clientId=` socket
//!   of the client that queued it, in ComfyUI's order: `execution_start`,
//!   `execution_cached`, then `executing` per node, `progress` per sampler step,
//!   `executed` per output node, and `execution_success` (or `execution_error`,
//!   `execution_interrupted`); the history entry is recorded, then `executing`
//!   with `node: null`. A new socket first receives `status`.
//! - `/history`, `/history/{id}` (entries with `prompt`, `outputs`, `status`),
//!   `/queue` (GET, and POST `delete`/`clear`), `/interrupt` (scoped by an
//!   optional `prompt_id` body, as in current ComfyUI), `/free`, `/prompt` (GET).
//! - `GET /view` applies ComfyUI's path rules: no `filename` is 404; one starting
//!   with `/` or containing `..` is 400; a `type` other than `output`, `input`
//!   or `temp` is 400; a `subfolder` leaving that folder is 403; the file name
//!   is reduced to its last component; an unknown file is 404.
//!
//! Save nodes write real files of the size the graph's empty latent asks for:
//! PNGs (with the graph in a `prompt` text chunk, as ComfyUI does), animated
//! WEBPs and animated PNGs (at most [`Settings::max_frames`] frames). Samplers
//! take [`Settings::step_delay`] per step. Model file inputs (`ckpt_name`...)
//! accept any name. Every request is recorded; [`ComfyUi`]'s methods inject
//! failures: an exception in a node, dropped websockets, refused websockets, an
//! error status from `/prompt`, a held queue, a restart that forgets every
//! prompt, or the server going away.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// How the stand-in runs prompts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time each sampler step takes.
    pub step_delay: Duration,
    /// Most steps a sampler runs, whatever the graph asks (keeps tests short).
    pub max_steps: u32,
    /// Most frames in an animation, and images in a batch.
    pub max_frames: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            step_delay: Duration::from_millis(5),
            max_steps: 20,
            max_frames: 8,
        }
    }
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// A running stand-in.
pub struct ComfyUi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    runner: Option<JoinHandle<()>>,
}

impl ComfyUi {
    /// Starts on a free loopback port with the default settings.
    pub async fn start() -> ComfyUi {
        Self::start_with(Settings::default()).await
    }

    pub async fn start_with(settings: Settings) -> ComfyUi {
        let shared = Arc::new(Shared {
            settings,
            state: Mutex::new(Inner::default()),
            work: Notify::new(),
            interrupt: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = router(shared.clone());
        let (stop, mut stop_rx) = watch::channel(false);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        let runner = tokio::spawn(run_queue(shared.clone()));
        ComfyUi {
            addr,
            shared,
            stop,
            server: Some(server),
            runner: Some(runner),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// The requests with this method and path (`"POST", "/interrupt"`).
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// The graphs posted to `/prompt`, accepted or not.
    pub fn prompts(&self) -> Vec<Value> {
        self.requests_to("POST", "/prompt")
            .into_iter()
            .filter_map(|r| r.body.and_then(|b| b.get("prompt").cloned()))
            .collect()
    }

    /// The history entry of a prompt, once it ran.
    pub fn history(&self, prompt_id: &str) -> Option<Value> {
        self.shared.lock().history.get(prompt_id).cloned()
    }

    /// The prompt running now.
    pub fn running(&self) -> Option<String> {
        self.shared
            .lock()
            .running
            .as_ref()
            .map(|i| i.prompt_id.clone())
    }

    /// The prompts waiting in the queue.
    pub fn pending(&self) -> Vec<String> {
        self.shared
            .lock()
            .queue
            .iter()
            .map(|i| i.prompt_id.clone())
            .collect()
    }

    /// The next prompt to run raises `exception_type: message` in its first
    /// sampler, after the first step (or in its first node without a sampler).
    pub fn fail_next_execution(&self, exception_type: &str, message: &str) {
        self.shared.lock().faults.execution_error =
            Some((exception_type.to_owned(), message.to_owned()));
    }

    /// When a sampler reaches this step, every websocket is closed (once).
    pub fn drop_websockets_at_step(&self, step: u32) {
        self.shared.lock().faults.drop_ws_at_step = Some(step);
    }

    /// `/ws` answers 503 instead of upgrading.
    pub fn refuse_websockets(&self, refuse: bool) {
        self.shared.lock().faults.refuse_ws = refuse;
    }

    /// `POST /prompt` answers this status (and a plain-text body) instead of
    /// queueing; `None` restores the normal answer.
    pub fn answer_prompts_with(&self, status: Option<u16>) {
        self.shared.lock().faults.prompt_status = status;
    }

    /// While held, queued prompts wait and nothing starts.
    pub fn hold_queue(&self, hold: bool) {
        self.shared.lock().faults.hold = hold;
        self.shared.work.notify_one();
    }

    /// Forgets everything, as a restarted ComfyUI would: the queue, the history
    /// and the websockets; a running prompt stops and leaves no history.
    pub fn restart(&self) {
        {
            let mut state = self.shared.lock();
            state.queue.clear();
            state.history.clear();
            state.generation += 1;
        }
        if self.running().is_some() {
            self.shared.interrupt.store(true, Ordering::SeqCst);
        }
        self.close_sockets();
    }

    /// Puts a file where `/view` finds it (`kind` is `output`, `input` or `temp`).
    pub fn put_file(&self, kind: &str, subfolder: &str, filename: &str, bytes: Vec<u8>) {
        self.shared.lock().files.insert(
            (kind.to_owned(), subfolder.to_owned(), filename.to_owned()),
            Bytes::from(bytes),
        );
    }

    /// Stops serving: the port refuses connections afterwards.
    pub async fn shutdown(mut self) {
        self.close_sockets();
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(runner) = self.runner.take() {
            runner.abort();
        }
    }

    fn close_sockets(&self) {
        let sockets = std::mem::take(&mut self.shared.lock().sockets);
        for tx in sockets.into_values() {
            let _ = tx.send(Out::Close);
        }
    }
}

impl Drop for ComfyUi {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(runner) = self.runner.take() {
            runner.abort();
        }
    }
}

struct Shared {
    settings: Settings,
    state: Mutex<Inner>,
    /// Wakes the queue runner.
    work: Notify,
    /// Set by `/interrupt` while a prompt runs.
    interrupt: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends to one client's socket, or to every socket when `sid` is `None`.
    fn send(&self, sid: Option<&str>, kind: &str, data: Value) {
        let message = json!({ "type": kind, "data": data });
        let state = self.lock();
        match sid {
            Some(sid) => {
                if let Some(tx) = state.sockets.get(sid) {
                    let _ = tx.send(Out::Json(message));
                }
            }
            None => {
                for tx in state.sockets.values() {
                    let _ = tx.send(Out::Json(message.clone()));
                }
            }
        }
    }

    fn queue_remaining(&self) -> usize {
        let state = self.lock();
        state.queue.len() + usize::from(state.running.is_some())
    }

    fn broadcast_status(&self) {
        let remaining = self.queue_remaining();
        self.send(
            None,
            "status",
            json!({ "status": { "exec_info": { "queue_remaining": remaining } } }),
        );
    }
}

#[derive(Default)]
struct Inner {
    number: u64,
    queue: Vec<Item>,
    running: Option<Item>,
    history: Map<String, Value>,
    files: HashMap<(String, String, String), Bytes>,
    sockets: HashMap<String, mpsc::UnboundedSender<Out>>,
    requests: Vec<Recorded>,
    faults: Faults,
    /// Next file counter per (subfolder, prefix).
    counters: HashMap<(String, String), u32>,
    /// Bumped by a restart: what ran before it leaves no history.
    generation: u64,
}

#[derive(Default)]
struct Faults {
    execution_error: Option<(String, String)>,
    drop_ws_at_step: Option<u32>,
    refuse_ws: bool,
    prompt_status: Option<u16>,
    hold: bool,
}

#[derive(Clone, Debug)]
struct Item {
    number: f64,
    prompt_id: String,
    prompt: Map<String, Value>,
    extra_data: Value,
    client_id: Option<String>,
    outputs: Vec<String>,
}

impl Item {
    /// As ComfyUI lists it: `[number, prompt_id, prompt, extra_data, outputs]`.
    fn to_value(&self) -> Value {
        json!([
            self.number,
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }
}

enum Out {
    Json(Value),
    Close,
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/prompt", post(post_prompt).get(get_prompt))
        .route("/history", get(get_history).post(post_history))
        .route("/history/{prompt_id}", get(get_history_entry))
        .route("/queue", get(get_queue).post(post_queue))
        .route("/interrupt", post(post_interrupt))
        .route("/free", post(post_free))
        .route("/view", get(view))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    shared.lock().requests.push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        body: serde_json::from_slice(&bytes).ok(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn error_body(kind: &str, message: &str, details: &str, extra: Value) -> Value {
    json!({ "type": kind, "message": message, "details": details, "extra_info": extra })
}

async fn post_prompt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if let Some(status) = shared.lock().faults.prompt_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, "injected failure").into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error",
        )
            .into_response();
    };
    let number = {
        let mut state = shared.lock();
        match request.get("number").and_then(Value::as_f64) {
            Some(n) => n,
            None => {
                let n = state.number as f64;
                state.number += 1;
                if request.get("front").and_then(Value::as_bool) == Some(true) {
                    -n
                } else {
                    n
                }
            }
        }
    };
    let Some(prompt) = request.get("prompt") else {
        let error = error_body(
            "no_prompt",
            "No prompt provided",
            "No prompt provided",
            json!({}),
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "node_errors": {} })),
        )
            .into_response();
    };
    let Some(prompt) = prompt.as_object().cloned() else {
        let error = error_body(
            "invalid_prompt",
            "Cannot execute because the prompt is not an object of nodes.",
            "",
            json!({}),
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "node_errors": {} })),
        )
            .into_response();
    };
    let prompt_id = match request.get("prompt_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => uuid(),
    };
    match validate(&prompt) {
        Validation::Refused { error, node_errors } => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "node_errors": node_errors })),
        )
            .into_response(),
        Validation::Accepted {
            outputs,
            node_errors,
        } => {
            let mut extra_data = request
                .get("extra_data")
                .filter(|v| v.is_object())
                .cloned()
                .unwrap_or_else(|| json!({}));
            let client_id = request
                .get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let (Some(id), Some(extra)) = (&client_id, extra_data.as_object_mut()) {
                extra.insert("client_id".into(), json!(id));
            }
            shared.lock().queue.push(Item {
                number,
                prompt_id: prompt_id.clone(),
                prompt,
                extra_data,
                client_id,
                outputs,
            });
            shared.broadcast_status();
            shared.work.notify_one();
            Json(json!({ "prompt_id": prompt_id, "number": number, "node_errors": node_errors }))
                .into_response()
        }
    }
}

async fn get_prompt(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "exec_info": { "queue_remaining": shared.queue_remaining() } }))
}

async fn get_history(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let state = shared.lock();
    let max = query.get("max_items").and_then(|m| m.parse::<usize>().ok());
    let skip = max.map_or(0, |m| state.history.len().saturating_sub(m));
    let out: Map<String, Value> = state
        .history
        .iter()
        .skip(skip)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Json(Value::Object(out))
}

async fn get_history_entry(
    State(shared): State<Arc<Shared>>,
    Path(prompt_id): Path<String>,
) -> Json<Value> {
    let state = shared.lock();
    Json(match state.history.get(&prompt_id) {
        Some(entry) => json!({ prompt_id: entry }),
        None => json!({}),
    })
}

async fn post_history(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut state = shared.lock();
    if request.get("clear").and_then(Value::as_bool) == Some(true) {
        state.history.clear();
    }
    for id in request
        .get("delete")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        state.history.remove(id);
    }
    StatusCode::OK.into_response()
}

async fn get_queue(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let state = shared.lock();
    let running: Vec<Value> = state.running.iter().map(Item::to_value).collect();
    let pending: Vec<Value> = state.queue.iter().map(Item::to_value).collect();
    Json(json!({ "queue_running": running, "queue_pending": pending }))
}

async fn post_queue(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    {
        let mut state = shared.lock();
        if request.get("clear").and_then(Value::as_bool) == Some(true) {
            state.queue.clear();
        }
        let delete: HashSet<&str> = request
            .get("delete")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        state
            .queue
            .retain(|i| !delete.contains(i.prompt_id.as_str()));
    }
    shared.broadcast_status();
    StatusCode::OK.into_response()
}

async fn post_interrupt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    // The body is optional; without a prompt_id the interrupt is global.
    let target = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b.get("prompt_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let state = shared.lock();
    if let Some(running) = &state.running {
        if target.as_deref().is_none_or(|t| t == running.prompt_id) {
            shared.interrupt.store(true, Ordering::SeqCst);
        }
    }
    StatusCode::OK.into_response()
}

async fn post_free(State(_shared): State<Arc<Shared>>, body: Bytes) -> Response {
    // ComfyUI reads a JSON body and sets flags its queue worker acts on.
    match serde_json::from_slice::<Value>(&body) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `subfolder` resolved inside its base folder, or `None` if it leaves it.
fn inside(subfolder: &str) -> Option<String> {
    if subfolder.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in subfolder.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

async fn view(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(filename) = query.get("filename") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let kind = query.get("type").map_or("output", String::as_str);
    if !matches!(kind, "output" | "input" | "temp") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let subfolder = match query.get("subfolder") {
        None => String::new(),
        Some(sub) => match inside(sub) {
            Some(sub) => sub,
            None => return StatusCode::FORBIDDEN.into_response(),
        },
    };
    let name = filename.rsplit('/').next().unwrap_or(filename).to_owned();
    let file = shared
        .lock()
        .files
        .get(&(kind.to_owned(), subfolder, name.clone()))
        .cloned();
    match file {
        Some(bytes) => {
            let content_type = match name.rsplit('.').next() {
                Some("png") => "image/png",
                Some("webp") => "image/webp",
                Some("gif") => "image/gif",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("mp4") => "video/mp4",
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::CONTENT_DISPOSITION, format!("filename=\"{name}\"")),
                ],
                bytes,
            )
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn websocket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if shared.lock().faults.refuse_ws {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let sid = query
        .get("clientId")
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| uuid().replace('-', ""));
    upgrade.on_upgrade(move |socket| serve_socket(shared, sid, socket))
}

async fn serve_socket(shared: Arc<Shared>, sid: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // A reconnecting client replaces its old socket.
    shared.lock().sockets.insert(sid.clone(), tx.clone());
    let hello = json!({
        "type": "status",
        "data": { "status": { "exec_info": { "queue_remaining": shared.queue_remaining() } }, "sid": sid },
    });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Out::Json(v)) => {
                        if socket.send(Message::Text(v.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Out::Close) | None => {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                },
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut state = shared.lock();
    if state
        .sockets
        .get(&sid)
        .is_some_and(|current| current.same_channel(&tx))
    {
        state.sockets.remove(&sid);
    }
}

// ---------------------------------------------------------------------------
// Node classes

#[derive(Clone, Copy, Debug)]
enum In {
    /// A link carrying this type.
    Link(&'static str),
    Int(i128, i128),
    Float(f64, f64),
    Str,
    Bool,
    Choice(&'static [&'static str]),
    /// A model file name: any non-empty string here.
    File,
}

impl In {
    fn type_name(self) -> &'static str {
        match self {
            In::Link(t) => t,
            In::Int(..) => "INT",
            In::Float(..) => "FLOAT",
            In::Str => "STRING",
            In::Bool => "BOOLEAN",
            In::Choice(_) | In::File => "COMBO",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Plain,
    /// An empty latent: where the size comes from.
    Latent,
    Sampler,
    SaveImage,
    PreviewImage,
    SaveWebp,
    SaveApng,
}

struct NodeClass {
    name: &'static str,
    required: &'static [(&'static str, In)],
    optional: &'static [(&'static str, In)],
    outputs: &'static [&'static str],
    role: Role,
}

impl NodeClass {
    fn is_output(&self) -> bool {
        matches!(
            self.role,
            Role::SaveImage | Role::PreviewImage | Role::SaveWebp | Role::SaveApng
        )
    }
}

const MAX_RESOLUTION: i128 = 8192;
const SAMPLERS: &[&str] = &[
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "ddpm",
    "lcm",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
];
const SCHEDULERS: &[&str] = &[
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
];
const SIZE: In = In::Int(16, MAX_RESOLUTION);
const BATCH: In = In::Int(1, 4096);

const CLASSES: &[NodeClass] = &[
    NodeClass {
        name: "CheckpointLoaderSimple",
        required: &[("ckpt_name", In::File)],
        optional: &[],
        outputs: &["MODEL", "CLIP", "VAE"],
        role: Role::Plain,
    },
    NodeClass {
        name: "UNETLoader",
        required: &[
            ("unet_name", In::File),
            (
                "weight_dtype",
                In::Choice(&["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]),
            ),
        ],
        optional: &[],
        outputs: &["MODEL"],
        role: Role::Plain,
    },
    NodeClass {
        name: "CLIPLoader",
        required: &[
            ("clip_name", In::File),
            (
                "type",
                In::Choice(&[
                    "stable_diffusion",
                    "stable_cascade",
                    "sd3",
                    "stable_audio",
                    "mochi",
                    "ltxv",
                    "pixart",
                    "cosmos",
                    "lumina2",
                    "wan",
                    "hidream",
                    "chroma",
                    "ace",
                    "omnigen2",
                    "qwen_image",
                    "hunyuan_image",
                ]),
            ),
        ],
        optional: &[("device", In::Choice(&["default", "cpu"]))],
        outputs: &["CLIP"],
        role: Role::Plain,
    },
    NodeClass {
        name: "VAELoader",
        required: &[("vae_name", In::File)],
        optional: &[],
        outputs: &["VAE"],
        role: Role::Plain,
    },
    NodeClass {
        name: "CLIPTextEncode",
        required: &[("text", In::Str), ("clip", In::Link("CLIP"))],
        optional: &[],
        outputs: &["CONDITIONING"],
        role: Role::Plain,
    },
    NodeClass {
        name: "EmptyLatentImage",
        required: &[("width", SIZE), ("height", SIZE), ("batch_size", BATCH)],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Latent,
    },
    NodeClass {
        name: "EmptySD3LatentImage",
        required: &[("width", SIZE), ("height", SIZE), ("batch_size", BATCH)],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Latent,
    },
    NodeClass {
        name: "EmptyHunyuanLatentVideo",
        required: &[
            ("width", SIZE),
            ("height", SIZE),
            ("length", In::Int(1, MAX_RESOLUTION)),
            ("batch_size", BATCH),
        ],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Latent,
    },
    NodeClass {
        name: "ModelSamplingSD3",
        required: &[
            ("model", In::Link("MODEL")),
            ("shift", In::Float(0.0, 100.0)),
        ],
        optional: &[],
        outputs: &["MODEL"],
        role: Role::Plain,
    },
    NodeClass {
        name: "KSampler",
        required: &[
            ("model", In::Link("MODEL")),
            ("seed", In::Int(0, u64::MAX as i128)),
            ("steps", In::Int(1, 10_000)),
            ("cfg", In::Float(0.0, 100.0)),
            ("sampler_name", In::Choice(SAMPLERS)),
            ("scheduler", In::Choice(SCHEDULERS)),
            ("positive", In::Link("CONDITIONING")),
            ("negative", In::Link("CONDITIONING")),
            ("latent_image", In::Link("LATENT")),
            ("denoise", In::Float(0.0, 1.0)),
        ],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Sampler,
    },
    NodeClass {
        name: "KSamplerAdvanced",
        required: &[
            ("model", In::Link("MODEL")),
            ("add_noise", In::Choice(&["enable", "disable"])),
            ("noise_seed", In::Int(0, u64::MAX as i128)),
            ("steps", In::Int(1, 10_000)),
            ("cfg", In::Float(0.0, 100.0)),
            ("sampler_name", In::Choice(SAMPLERS)),
            ("scheduler", In::Choice(SCHEDULERS)),
            ("positive", In::Link("CONDITIONING")),
            ("negative", In::Link("CONDITIONING")),
            ("latent_image", In::Link("LATENT")),
            ("start_at_step", In::Int(0, 10_000)),
            ("end_at_step", In::Int(0, 10_000)),
            (
                "return_with_leftover_noise",
                In::Choice(&["disable", "enable"]),
            ),
        ],
        optional: &[],
        outputs: &["LATENT"],
        role: Role::Sampler,
    },
    NodeClass {
        name: "VAEDecode",
        required: &[("samples", In::Link("LATENT")), ("vae", In::Link("VAE"))],
        optional: &[],
        outputs: &["IMAGE"],
        role: Role::Plain,
    },
    NodeClass {
        name: "SaveImage",
        required: &[("images", In::Link("IMAGE")), ("filename_prefix", In::Str)],
        optional: &[],
        outputs: &[],
        role: Role::SaveImage,
    },
    NodeClass {
        name: "PreviewImage",
        required: &[("images", In::Link("IMAGE"))],
        optional: &[],
        outputs: &[],
        role: Role::PreviewImage,
    },
    NodeClass {
        name: "SaveAnimatedWEBP",
        required: &[
            ("images", In::Link("IMAGE")),
            ("filename_prefix", In::Str),
            ("fps", In::Float(0.01, 1000.0)),
            ("lossless", In::Bool),
            ("quality", In::Int(0, 100)),
            ("method", In::Choice(&["default", "fastest", "slowest"])),
        ],
        optional: &[],
        outputs: &[],
        role: Role::SaveWebp,
    },
    NodeClass {
        name: "SaveAnimatedPNG",
        required: &[
            ("images", In::Link("IMAGE")),
            ("filename_prefix", In::Str),
            ("fps", In::Float(0.01, 1000.0)),
            ("compress_level", In::Int(0, 9)),
        ],
        optional: &[],
        outputs: &[],
        role: Role::SaveApng,
    },
];

fn class(name: &str) -> Option<&'static NodeClass> {
    CLASSES.iter().find(|c| c.name == name)
}

fn class_of(node: &Value) -> Option<&'static NodeClass> {
    node.get("class_type")
        .and_then(Value::as_str)
        .and_then(class)
}

// ---------------------------------------------------------------------------
// Validation, as execution.validate_prompt does it

enum Validation {
    Accepted {
        outputs: Vec<String>,
        node_errors: Value,
    },
    Refused {
        error: Value,
        node_errors: Value,
    },
}

fn validate(prompt: &Map<String, Value>) -> Validation {
    let refused = |error: Value| Validation::Refused {
        error,
        node_errors: json!({}),
    };
    let mut outputs = Vec::new();
    for (id, node) in prompt {
        let title = node.pointer("/_meta/title").and_then(Value::as_str);
        let Some(class_type) = node.get("class_type").and_then(Value::as_str) else {
            return refused(error_body(
                "missing_node_type",
                &format!(
                    "Node '{}' has no class_type. The workflow may be corrupted or a custom node is missing.",
                    title.map_or_else(|| format!("ID #{id}"), str::to_owned)
                ),
                &format!("Node ID '#{id}'"),
                json!({ "node_id": id, "class_type": null, "node_title": title }),
            ));
        };
        let Some(class) = class(class_type) else {
            return refused(error_body(
                "missing_node_type",
                &format!(
                    "Node '{}' not found. The custom node may not be installed.",
                    title.map_or_else(|| format!("ID #{id}"), str::to_owned)
                ),
                &format!("Node ID '#{id}'"),
                json!({ "node_id": id, "class_type": class_type, "node_title": title }),
            ));
        };
        if class.is_output() {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return refused(error_body(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
            json!({}),
        ));
    }
    let mut checker = Checker {
        prompt,
        done: HashMap::new(),
        errors: BTreeMap::new(),
        visiting: HashSet::new(),
    };
    let mut good = Vec::new();
    let mut dependents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lines = Vec::new();
    for output in &outputs {
        if checker.check(output) {
            good.push(output.clone());
        } else {
            for (id, errors) in &checker.errors {
                dependents
                    .entry(id.clone())
                    .or_default()
                    .push(output.clone());
                for e in errors {
                    lines.push(format!(
                        "{}: {}",
                        e["message"].as_str().unwrap_or(""),
                        e["details"].as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    let mut node_errors = Map::new();
    for (id, errors) in &checker.errors {
        let class_type = prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null);
        node_errors.insert(
            id.clone(),
            json!({
                "errors": errors,
                "dependent_outputs": dependents.get(id).cloned().unwrap_or_default(),
                "class_type": class_type,
            }),
        );
    }
    if good.is_empty() {
        lines.dedup();
        return Validation::Refused {
            error: error_body(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                &lines.join("\n"),
                json!({}),
            ),
            node_errors: Value::Object(node_errors),
        };
    }
    Validation::Accepted {
        outputs: good,
        node_errors: Value::Object(node_errors),
    }
}

struct Checker<'a> {
    prompt: &'a Map<String, Value>,
    done: HashMap<String, bool>,
    errors: BTreeMap<String, Vec<Value>>,
    visiting: HashSet<String>,
}

impl Checker<'_> {
    /// Whether the node and everything upstream of it is valid.
    fn check(&mut self, id: &str) -> bool {
        if let Some(ok) = self.done.get(id) {
            return *ok;
        }
        if !self.visiting.insert(id.to_owned()) {
            self.errors
                .entry(id.to_owned())
                .or_default()
                .push(error_body(
                    "dependency_cycle",
                    "Dependency cycle detected",
                    id,
                    json!({}),
                ));
            return false;
        }
        let node = &self.prompt[id];
        let class = class_of(node).expect("classes were checked first");
        let empty = Map::new();
        let inputs = node
            .get("inputs")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut errors = Vec::new();
        let mut valid = true;
        let declared = class
            .required
            .iter()
            .map(|r| (r, true))
            .chain(class.optional.iter().map(|o| (o, false)));
        for (&(name, spec), required) in declared {
            let Some(value) = inputs.get(name) else {
                if required {
                    errors.push(error_body(
                        "required_input_missing",
                        "Required input is missing",
                        name,
                        json!({ "input_name": name }),
                    ));
                }
                continue;
            };
            if let Value::Array(link) = value {
                let target = link.first().and_then(Value::as_str);
                let slot = link.get(1).and_then(Value::as_u64);
                let (Some(target), Some(slot), 2) = (target, slot, link.len()) else {
                    errors.push(error_body(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        json!({ "input_name": name, "received_value": value }),
                    ));
                    continue;
                };
                let Some(linked) = self.prompt.get(target).and_then(class_of) else {
                    errors.push(error_body(
                        "exception_during_inner_validation",
                        "Exception when validating inner node",
                        &format!("'{target}'"),
                        json!({ "input_name": name, "linked_node": value }),
                    ));
                    continue;
                };
                let received = linked.outputs.get(slot as usize).copied();
                if received != Some(spec.type_name()) {
                    let received = received.unwrap_or("*");
                    errors.push(error_body(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        &format!("{name}, received_type({received}) mismatch input_type({})", spec.type_name()),
                        json!({ "input_name": name, "received_type": received, "linked_node": value }),
                    ));
                    continue;
                }
                if !self.check(target) {
                    valid = false;
                }
                continue;
            }
            if let Some(e) = check_literal(name, spec, value) {
                errors.push(e);
            }
        }
        self.visiting.remove(id);
        let ok = valid && errors.is_empty();
        if !errors.is_empty() {
            self.errors.insert(id.to_owned(), errors);
        }
        self.done.insert(id.to_owned(), ok);
        ok
    }
}

fn check_literal(name: &str, spec: In, value: &Value) -> Option<Value> {
    let info = |v: &Value| json!({ "input_name": name, "received_value": v });
    let convert = |kind: &str| {
        error_body(
            "invalid_input_type",
            &format!("Failed to convert an input value to a {kind} value"),
            &format!("{name}, {value}"),
            info(value),
        )
    };
    let range = |v: f64, min: f64, max: f64| {
        if v < min {
            Some(error_body(
                "value_smaller_than_min",
                &format!("Value {v} smaller than min of {min}"),
                name,
                info(value),
            ))
        } else if v > max {
            Some(error_body(
                "value_bigger_than_max",
                &format!("Value {v} bigger than max of {max}"),
                name,
                info(value),
            ))
        } else {
            None
        }
    };
    match spec {
        In::Link(_) => Some(error_body(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            name,
            info(value),
        )),
        In::Int(min, max) => {
            let v: Option<i128> = match value {
                Value::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .or_else(|| n.as_f64().map(|f| f.trunc() as i128)),
                Value::String(s) => s.trim().parse().ok(),
                Value::Bool(b) => Some(i128::from(*b)),
                _ => None,
            };
            let v = match v {
                Some(v) => v,
                None => return Some(convert("INT")),
            };
            if v < min {
                Some(error_body(
                    "value_smaller_than_min",
                    &format!("Value {v} smaller than min of {min}"),
                    name,
                    info(value),
                ))
            } else if v > max {
                Some(error_body(
                    "value_bigger_than_max",
                    &format!("Value {v} bigger than max of {max}"),
                    name,
                    info(value),
                ))
            } else {
                None
            }
        }
        In::Float(min, max) => {
            let v = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            match v {
                Some(v) if v.is_finite() => range(v, min, max),
                _ => Some(convert("FLOAT")),
            }
        }
        In::Str | In::Bool => None,
        In::Choice(list) => {
            let ok = value.as_str().is_some_and(|v| list.contains(&v));
            (!ok).then(|| {
                error_body(
                    "value_not_in_list",
                    "Value not in list",
                    &format!("{name}: '{}' not in {list:?}", value_text(value)),
                    info(value),
                )
            })
        }
        In::File => {
            let ok = value.as_str().is_some_and(|v| !v.is_empty());
            (!ok).then(|| {
                error_body(
                    "value_not_in_list",
                    "Value not in list",
                    &format!("{name}: '{}' not in (list of files)", value_text(value)),
                    info(value),
                )
            })
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Execution

async fn run_queue(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.lock();
            if state.faults.hold || state.queue.is_empty() {
                None
            } else {
                let at = state
                    .queue
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.number.total_cmp(&b.1.number))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let item = state.queue.remove(at);
                state.running = Some(item.clone());
                Some(item)
            }
        };
        match next {
            Some(item) => {
                shared.interrupt.store(false, Ordering::SeqCst);
                shared.broadcast_status();
                execute(&shared, &item).await;
                shared.lock().running = None;
                shared.broadcast_status();
            }
            None => shared.work.notified().await,
        }
    }
}

/// Why a prompt stopped early.
enum Stop {
    Interrupted {
        node: String,
    },
    Failed {
        node: String,
        kind: String,
        message: String,
    },
}

async fn execute(shared: &Arc<Shared>, item: &Item) {
    let generation = shared.lock().generation;
    let sid = item.client_id.as_deref();
    let prompt_id = item.prompt_id.as_str();
    let mut messages: Vec<Value> = Vec::new();
    let say = |kind: &str, data: Value, messages: &mut Vec<Value>| {
        messages.push(json!([kind, data]));
        shared.send(sid, kind, data);
    };
    say(
        "execution_start",
        json!({ "prompt_id": prompt_id, "timestamp": now_ms() }),
        &mut messages,
    );
    say(
        "execution_cached",
        json!({ "nodes": [], "prompt_id": prompt_id, "timestamp": now_ms() }),
        &mut messages,
    );
    let order = execution_order(&item.prompt, &item.outputs);
    let mut injected = shared.lock().faults.execution_error.take();
    let has_sampler = order
        .iter()
        .any(|id| class_of(&item.prompt[id]).is_some_and(|c| c.role == Role::Sampler));
    let mut executed: Vec<String> = Vec::new();
    let mut outputs = Map::new();
    let mut stop = None;
    for id in &order {
        if shared.interrupt.swap(false, Ordering::SeqCst) {
            stop = Some(Stop::Interrupted { node: id.clone() });
            break;
        }
        let node = &item.prompt[id];
        let Some(class) = class_of(node) else {
            continue;
        };
        shared.send(
            sid,
            "executing",
            json!({ "node": id, "display_node": id, "prompt_id": prompt_id }),
        );
        let result = match class.role {
            Role::Sampler => run_sampler(shared, item, id, &mut injected).await,
            role if class.is_output() => save(shared, item, id, role).map(|ui| {
                shared.send(
                    sid,
                    "executed",
                    json!({ "node": id, "display_node": id, "output": ui, "prompt_id": prompt_id }),
                );
                outputs.insert(id.clone(), ui);
            }),
            _ => match (&injected, has_sampler) {
                (Some((kind, message)), false) => Err(Stop::Failed {
                    node: id.clone(),
                    kind: kind.clone(),
                    message: message.clone(),
                }),
                _ => Ok(()),
            },
        };
        if let Err(s) = result {
            stop = Some(s);
            break;
        }
        executed.push(id.clone());
    }
    let node_type = |id: &str| {
        item.prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let status = match stop {
        None => {
            say(
                "execution_success",
                json!({ "prompt_id": prompt_id, "timestamp": now_ms() }),
                &mut messages,
            );
            "success"
        }
        Some(Stop::Interrupted { node }) => {
            say(
                "execution_interrupted",
                json!({
                    "prompt_id": prompt_id, "node_id": node, "node_type": node_type(&node),
                    "executed": executed, "timestamp": now_ms(),
                }),
                &mut messages,
            );
            "error"
        }
        Some(Stop::Failed {
            node,
            kind,
            message,
        }) => {
            say(
                "execution_error",
                json!({
                    "prompt_id": prompt_id, "node_id": node, "node_type": node_type(&node),
                    "executed": executed, "exception_message": message, "exception_type": kind,
                    "traceback": ["  File \"execution.py\", line 1, in execute\n"],
                    "current_inputs": {}, "current_outputs": {}, "timestamp": now_ms(),
                }),
                &mut messages,
            );
            "error"
        }
    };
    let meta: Map<String, Value> = outputs
        .keys()
        .map(|id| {
            (
                id.clone(),
                json!({ "node_id": id, "display_node": id, "parent_node": null, "real_node_id": id }),
            )
        })
        .collect();
    let mut state = shared.lock();
    if state.generation != generation {
        return;
    }
    state.history.insert(
        prompt_id.to_owned(),
        json!({
            "prompt": item.to_value(),
            "outputs": outputs,
            "status": { "status_str": status, "completed": status == "success", "messages": messages },
            "meta": meta,
        }),
    );
    drop(state);
    shared.send(
        sid,
        "executing",
        json!({ "node": null, "prompt_id": prompt_id }),
    );
}

/// The nodes the outputs need, each after the nodes it links to.
fn execution_order(prompt: &Map<String, Value>, outputs: &[String]) -> Vec<String> {
    fn visit(
        prompt: &Map<String, Value>,
        id: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(id.to_owned()) {
            return;
        }
        let inputs = prompt
            .get(id)
            .and_then(|n| n.get("inputs"))
            .and_then(Value::as_object);
        for value in inputs.into_iter().flat_map(|i| i.values()) {
            if let Some(target) = value
                .as_array()
                .and_then(|l| l.first())
                .and_then(Value::as_str)
            {
                if prompt.contains_key(target) {
                    visit(prompt, target, seen, order);
                }
            }
        }
        order.push(id.to_owned());
    }
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut sorted = outputs.to_vec();
    sorted.sort();
    for output in &sorted {
        visit(prompt, output, &mut seen, &mut order);
    }
    order
}

fn int_input(node: &Value, name: &str) -> Option<i128> {
    match node.pointer(&format!("/inputs/{name}"))? {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().map(|f| f as i128)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

async fn run_sampler(
    shared: &Arc<Shared>,
    item: &Item,
    id: &str,
    injected: &mut Option<(String, String)>,
) -> Result<(), Stop> {
    let node = &item.prompt[id];
    let steps = int_input(node, "steps")
        .unwrap_or(1)
        .clamp(1, i128::from(shared.settings.max_steps.max(1))) as u32;
    for step in 1..=steps {
        tokio::time::sleep(shared.settings.step_delay).await;
        if shared.interrupt.swap(false, Ordering::SeqCst) {
            return Err(Stop::Interrupted {
                node: id.to_owned(),
            });
        }
        shared.send(
            item.client_id.as_deref(),
            "progress",
            json!({ "value": step, "max": steps, "prompt_id": item.prompt_id, "node": id }),
        );
        let drop_now = {
            let mut state = shared.lock();
            if state.faults.drop_ws_at_step == Some(step) {
                state.faults.drop_ws_at_step = None;
                true
            } else {
                false
            }
        };
        if drop_now {
            let sockets = std::mem::take(&mut shared.lock().sockets);
            for tx in sockets.into_values() {
                let _ = tx.send(Out::Close);
            }
        }
        if let Some((kind, message)) = injected.take() {
            return Err(Stop::Failed {
                node: id.to_owned(),
                kind,
                message,
            });
        }
    }
    Ok(())
}

/// What the output node draws: the size, frames and seed of the empty latent
/// and sampler upstream of it.
struct Picture {
    width: u32,
    height: u32,
    frames: u32,
    seed: u64,
}

fn picture_for(prompt: &Map<String, Value>, output: &str, max_frames: u32) -> Picture {
    let mut picture = Picture {
        width: 64,
        height: 64,
        frames: 1,
        seed: 0,
    };
    let mut seen = HashSet::new();
    let mut todo = vec![output.to_owned()];
    let (mut got_size, mut got_seed) = (false, false);
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = prompt.get(&id) else {
            continue;
        };
        match class_of(node).map(|c| (c.role, c.name)) {
            Some((Role::Latent, name)) if !got_size => {
                got_size = true;
                let side = |k| int_input(node, k).unwrap_or(64).clamp(1, MAX_RESOLUTION) as u32;
                picture.width = side("width");
                picture.height = side("height");
                let batch = int_input(node, "batch_size").unwrap_or(1).clamp(1, 4096) as u32;
                picture.frames = if name == "EmptyHunyuanLatentVideo" {
                    // Four frames per latent frame, plus the first.
                    let length = int_input(node, "length").unwrap_or(1).clamp(1, 8192) as u32;
                    ((length - 1) / 4) * 4 + 1
                } else {
                    batch
                };
            }
            Some((Role::Sampler, _)) if !got_seed => {
                got_seed = true;
                picture.seed = int_input(node, "seed")
                    .or_else(|| int_input(node, "noise_seed"))
                    .unwrap_or(0)
                    .clamp(0, u64::MAX as i128) as u64;
            }
            _ => {}
        }
        let inputs = node.get("inputs").and_then(Value::as_object);
        for value in inputs.into_iter().flat_map(|i| i.values()) {
            if let Some(t) = value
                .as_array()
                .and_then(|l| l.first())
                .and_then(Value::as_str)
            {
                todo.push(t.to_owned());
            }
        }
    }
    picture.frames = picture.frames.clamp(1, max_frames.max(1));
    picture
}

/// Runs a save node: writes its files and returns its `ui` output.
fn save(shared: &Arc<Shared>, item: &Item, id: &str, role: Role) -> Result<Value, Stop> {
    let node = &item.prompt[id];
    let picture = picture_for(&item.prompt, id, shared.settings.max_frames);
    let (kind, prefix) = match role {
        Role::PreviewImage => (
            "temp",
            format!("ComfyUI_temp_{}", &uuid().replace('-', "")[..5]),
        ),
        _ => (
            "output",
            node.pointer("/inputs/filename_prefix")
                .and_then(Value::as_str)
                .unwrap_or("ComfyUI")
                .to_owned(),
        ),
    };
    // As folder_paths.get_save_image_path: the prefix's folder must stay inside.
    let (folder, base) = match prefix.rsplit_once('/') {
        Some((folder, base)) => (folder.to_owned(), base.to_owned()),
        None => (String::new(), prefix.clone()),
    };
    let Some(subfolder) = inside(&folder).filter(|_| !prefix.starts_with('/')) else {
        return Err(Stop::Failed {
            node: id.to_owned(),
            kind: "Exception".into(),
            message: "Saving image outside the output folder is not allowed.".into(),
        });
    };
    let graph = Value::Object(item.prompt.clone()).to_string();
    let fps = node
        .pointer("/inputs/fps")
        .and_then(Value::as_f64)
        .filter(|f| *f > 0.0)
        .unwrap_or(8.0);
    let mut files = Vec::new();
    let mut write = |extension: &str, bytes: Vec<u8>| {
        let mut state = shared.lock();
        let counter = state
            .counters
            .entry((subfolder.clone(), base.clone()))
            .or_insert(1);
        let filename = format!("{base}_{:05}_.{extension}", *counter);
        *counter += 1;
        state.files.insert(
            (kind.to_owned(), subfolder.clone(), filename.clone()),
            Bytes::from(bytes),
        );
        files.push(json!({ "filename": filename, "subfolder": subfolder, "type": kind }));
    };
    let animated = match role {
        Role::SaveWebp => {
            write("webp", animated_webp(&picture, fps));
            true
        }
        Role::SaveApng => {
            write("png", png_frames(&picture, picture.frames, Some(&graph)));
            true
        }
        _ => {
            for frame in 0..picture.frames {
                let still = Picture {
                    seed: picture.seed.wrapping_add(u64::from(frame)),
                    ..picture
                };
                write("png", png_frames(&still, 1, Some(&graph)));
            }
            false
        }
    };
    let mut ui = json!({ "images": files });
    if animated {
        ui["animated"] = json!([true]);
    }
    Ok(ui)
}

/// RGB pixels of one frame: a gradient tinted by the seed and frame.
fn pixels(p: &Picture, frame: u32) -> Vec<u8> {
    let tint = (p.seed.wrapping_mul(2_654_435_761) >> 8) as u8;
    let mut data = Vec::with_capacity((p.width * p.height * 3) as usize);
    for y in 0..p.height {
        for x in 0..p.width {
            data.push((x * 255 / p.width.max(1)) as u8 ^ tint);
            data.push((y * 255 / p.height.max(1)) as u8);
            data.push((frame * 255 / p.frames.max(1)) as u8);
        }
    }
    data
}

/// A PNG, animated when `frames > 1`, with the graph in a `prompt` text chunk.
fn png_frames(p: &Picture, frames: u32, graph: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, p.width, p.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(graph) = graph {
            let latin1: String = graph
                .chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect();
            let _ = encoder.add_text_chunk("prompt".into(), latin1);
        }
        if frames > 1 {
            encoder
                .set_animated(frames, 0)
                .expect("frame count is positive");
        }
        let mut writer = encoder.write_header().expect("writing to a Vec");
        for frame in 0..frames {
            writer
                .write_image_data(&pixels(p, frame))
                .expect("writing to a Vec");
        }
        writer.finish().expect("writing to a Vec");
    }
    out
}

/// An animated WEBP: a VP8X header with the animation flag, an ANIM chunk,
/// and one ANMF frame per picture frame, each a lossless VP8L bitstream.
fn animated_webp(p: &Picture, fps: f64) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, name: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(name);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
    }
    fn u24(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes()[..3]);
    }
    let duration = ((1000.0 / fps).round() as u32).clamp(1, 0xff_ffff);
    let mut body = Vec::new();
    let mut vp8x = vec![0x02, 0, 0, 0];
    u24(&mut vp8x, p.width - 1);
    u24(&mut vp8x, p.height - 1);
    chunk(&mut body, b"VP8X", &vp8x);
    chunk(&mut body, b"ANIM", &[0xff, 0xff, 0xff, 0xff, 0, 0]);
    for frame in 0..p.frames {
        let mut still = Vec::new();
        image_webp::WebPEncoder::new(&mut still)
            .encode(
                &pixels(p, frame),
                p.width,
                p.height,
                image_webp::ColorType::Rgb8,
            )
            .expect("encoding to a Vec");
        // A simple-format file: RIFF, size, WEBP, then the VP8L chunk.
        let vp8l_len = u32::from_le_bytes(still[16..20].try_into().expect("4 bytes")) as usize;
        let vp8l = &still[20..20 + vp8l_len];
        let mut anmf = Vec::new();
        u24(&mut anmf, 0);
        u24(&mut anmf, 0);
        u24(&mut anmf, p.width - 1);
        u24(&mut anmf, p.height - 1);
        u24(&mut anmf, duration);
        anmf.push(0x02); // do not blend, do not dispose
        chunk(&mut anmf, b"VP8L", vp8l);
        chunk(&mut body, b"ANMF", &anmf);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn animated_webps_decode() {
        let p = Picture {
            width: 40,
            height: 24,
            frames: 3,
            seed: 9,
        };
        let bytes = animated_webp(&p, 8.0);
        let decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(bytes)).unwrap();
        assert!(decoder.is_animated());
        assert_eq!(decoder.num_frames(), 3);
        assert_eq!(decoder.dimensions(), (40, 24));
    }

    #[test]
    fn subfolders_resolve_inside_or_not_at_all() {
        assert_eq!(inside("").as_deref(), Some(""));
        assert_eq!(inside("a/./b").as_deref(), Some("a/b"));
        assert_eq!(inside("a/../b").as_deref(), Some("b"));
        assert_eq!(inside("../a"), None);
        assert_eq!(inside("a/../../b"), None);
        assert_eq!(inside("/etc"), None);
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let graph: Map<String, Value> = serde_json::from_value(json!({
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 64}},
            "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["4", 2]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        }))
        .unwrap();
        let Validation::Refused { error, node_errors } = validate(&graph) else {
            panic!("accepted");
        };
        assert_eq!(error["type"], "prompt_outputs_failed_validation");
        let types: Vec<&str> = node_errors["1"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["value_smaller_than_min", "required_input_missing"]);
        assert_eq!(node_errors["1"]["dependent_outputs"], json!(["3"]));
        // Nodes downstream of an error carry none of their own.
        assert!(node_errors.get("2").is_none());

        let graph: Map<String, Value> = serde_json::from_value(json!({
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }))
        .unwrap();
        let Validation::Refused { node_errors, .. } = validate(&graph) else {
            panic!("accepted");
        };
        assert_eq!(
            node_errors["2"]["errors"][0]["type"],
            "return_type_mismatch"
        );
    }
}
