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
//!   optional `prompt_id` body, as in current ComfyUI), `/free`, `/prompt`
//!   (GET), `/system_stats` (what a readiness probe asks).
//! - `/object_info` describes every node class as ComfyUI's `node_info` does
//!   (`{class: {"input": {"required", "optional"}, "input_order", "output",
//!   "output_is_list", "output_name", "name", "display_name", "description",
//!   "python_module", "category", "output_node"}}`; a link input is
//!   `[TYPE]`, a widget `[TYPE, {options}]`, a combo `[[choices], {}]`), and
//!   `/object_info/{class}` one (`{}` for a class it does not have). A class
//!   removed with [`ComfyUi::remove_node_class`] is missing from both and
//!   refused in `/prompt`, as on a server without that custom node.
//! - `GET /view` applies ComfyUI's path rules: no `filename` is 404; one starting
//!   with `/` or containing `..` is 400; a `type` other than `output`, `input`
//!   or `temp` is 400; a `subfolder` leaving that folder is 403; the file name
//!   is reduced to its last component; an unknown file is 404.
//!
//! Save nodes write real files of the size the graph's empty latent asks for:
//! PNGs (with the graph in a `prompt` text chunk, as ComfyUI does), animated
//! WEBPs and animated PNGs (at most [`Settings::max_frames`] frames). Samplers
//! take [`Settings::step_delay`] per step. A test that needs a particular
//! picture (the output classifier's) sets [`Settings::painter`], which
//! draws in place of the gradient, as the model would. Model file inputs (`ckpt_name`...)
//! accept any name. Every request is recorded; [`ComfyUi`]'s methods inject
//! failures: an exception in a node, dropped websockets, refused websockets, an
//! error status from `/prompt`, a held queue, a restart that forgets every
//! prompt, or the server going away: for good ([`ComfyUi::shutdown`]), or
//! for a while, as a killed ComfyUI that its supervisor starts again
//! ([`ComfyUi::go_away`], [`ComfyUi::come_back`], [`ComfyUi::away_for`]):
//! its port refuses connections meanwhile, and it comes back on the same
//! port having forgotten every prompt.
//!
//! The stand-in lives in one folder, a file per concern:
//!
//! - `mod.rs`: the handle (starting, records, failure injection, stopping)
//!   and the state its routes and its queue runner share;
//! - `routes`: the HTTP API (`/prompt`, `/history`, `/queue`, `/interrupt`,
//!   `/free`, `/view` with ComfyUI's path rules) and the request records;
//! - `websocket`: the `/ws` socket each client follows its prompts on;
//! - `nodes`: the catalogue of node classes, their inputs and outputs;
//! - `validation`: a posted graph checked against that catalogue, with
//!   ComfyUI's error shapes;
//! - `execution`: the queue runner, which runs one prompt at a time, node by
//!   node, with sampler steps, injected failures and interrupts;
//! - `media`: the files save nodes write (PNGs, animated PNGs and WEBPs).

mod execution;
mod media;
mod nodes;
mod routes;
mod validation;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use execution::run_queue;
use routes::router;

/// How the stand-in runs prompts.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time each sampler step takes.
    pub step_delay: Duration,
    /// Most steps a sampler runs, whatever the graph asks (keeps tests short).
    pub max_steps: u32,
    /// Most frames in an animation, and images in a batch.
    pub max_frames: u32,
    /// What the model draws, in place of the seed-tinted gradient: for
    /// tests that need a particular picture to come out (the output
    /// classifier's). `None`: the gradient.
    pub painter: Option<Painter>,
}

/// Draws one frame: `(width, height, frame)` to `width × height` RGB
/// pixels, row by row. Stands for what the diffusion model would paint.
#[derive(Clone)]
pub struct Painter(pub Arc<dyn Fn(u32, u32, u32) -> Vec<u8> + Send + Sync>);

impl std::fmt::Debug for Painter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Painter")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            step_delay: Duration::from_millis(5),
            max_steps: 20,
            max_frames: 8,
            painter: None,
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
    /// The HTTP server, while it serves.
    serving: Arc<Mutex<Option<Serving>>>,
    runner: Option<JoinHandle<()>>,
}

/// A running HTTP server of the stand-in.
struct Serving {
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Serving {
    fn start(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Serving {
        let app = router(shared);
        let (stop, mut stop_rx) = watch::channel(false);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        Serving { stop, server }
    }

    /// Stops serving; the port refuses connections afterwards.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let abort = self.server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

impl ComfyUi {
    /// Starts on a free loopback port with the default settings.
    pub async fn start() -> ComfyUi {
        Self::start_with(Settings::default()).await
    }

    pub async fn start_with(settings: Settings) -> ComfyUi {
        Self::start_at("127.0.0.1:0".parse().expect("an address"), settings).await
    }

    /// Starts on `addr` (a port a stopped stand-in used, to play a ComfyUI
    /// that comes up after the worker).
    pub async fn start_at(addr: SocketAddr, settings: Settings) -> ComfyUi {
        let shared = Arc::new(Shared {
            settings,
            state: Mutex::new(Inner::default()),
            work: Notify::new(),
            interrupt: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("binding a loopback port");
        let addr = listener.local_addr().expect("local address");
        let serving = Serving::start(listener, shared.clone());
        let runner = tokio::spawn(run_queue(shared.clone()));
        ComfyUi {
            addr,
            shared,
            serving: Arc::new(Mutex::new(Some(serving))),
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
        self.shared.forget_everything();
    }

    /// From now on the server lacks this node class, as one without the
    /// custom node that brings it: `/object_info` leaves it out and
    /// `/prompt` refuses a graph using it (`missing_node_type`).
    pub fn remove_node_class(&self, class: &str) {
        self.shared.lock().removed_classes.insert(class.to_owned());
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
        self.shared.close_sockets();
        let serving = lock(&self.serving).take();
        if let Some(serving) = serving {
            serving.stop().await;
        }
        if let Some(runner) = self.runner.take() {
            runner.abort();
        }
    }

    /// Goes away as a killed ComfyUI does: every websocket drops, the running
    /// prompt stops, the queue and the history are forgotten, and the port
    /// refuses connections until [`come_back`](Self::come_back).
    pub async fn go_away(&self) {
        go_away(&self.shared, &self.serving).await;
    }

    /// Serves again on the same port, as a restarted ComfyUI (nothing of
    /// before is remembered).
    pub async fn come_back(&self) {
        come_back(self.addr, &self.shared, &self.serving).await;
    }

    /// Goes away now and comes back after `away` on the same port, on a task
    /// of its own; await the handle to know it is back.
    pub async fn away_for(&self, away: Duration) -> JoinHandle<()> {
        self.go_away().await;
        let (addr, shared, serving) = (self.addr, self.shared.clone(), self.serving.clone());
        tokio::spawn(async move {
            tokio::time::sleep(away).await;
            come_back(addr, &shared, &serving).await;
        })
    }

    /// Whether the server is serving now (not gone away).
    pub fn is_up(&self) -> bool {
        lock(&self.serving).is_some()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn go_away(shared: &Arc<Shared>, serving: &Mutex<Option<Serving>>) {
    shared.forget_everything();
    let current = lock(serving).take();
    if let Some(current) = current {
        current.stop().await;
    }
}

async fn come_back(addr: SocketAddr, shared: &Arc<Shared>, serving: &Mutex<Option<Serving>>) {
    if lock(serving).is_some() {
        return;
    }
    // The old sockets may linger a moment; the port is ours again soon.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the ComfyUI stand-in cannot listen on {addr} again: {e}"),
        }
    };
    let started = Serving::start(listener, shared.clone());
    *lock(serving) = Some(started);
}

impl Drop for ComfyUi {
    fn drop(&mut self) {
        if let Some(serving) = lock(&self.serving).take() {
            serving.server.abort();
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

    /// What a restart does: the queue, the history and the websockets are
    /// gone, and a running prompt stops and leaves no history.
    fn forget_everything(&self) {
        let running = {
            let mut state = self.lock();
            state.queue.clear();
            state.history.clear();
            state.generation += 1;
            state.running.is_some()
        };
        if running {
            self.interrupt.store(true, Ordering::SeqCst);
        }
        self.close_sockets();
    }

    fn close_sockets(&self) {
        let sockets = std::mem::take(&mut self.lock().sockets);
        for tx in sockets.into_values() {
            let _ = tx.send(Out::Close);
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
    /// Node classes this server does not have (a custom node not installed).
    removed_classes: std::collections::HashSet<String>,
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
