//! The worker agent: its HTTP API, the job it runs, heartbeats and results.
//!
//! `POST /run_job` accepts a job (202) and returns at once; the job runs on a
//! task that reports progress, the text the engine writes as it writes it (in
//! pieces at most every [`OUTPUT_EVERY`], offsets in UTF-8 bytes: see
//! `stream_output`) and then its result to the scheduler
//! (`/api/internal/jobs/{id}/progress`, `/output` and `/result`), retrying the result until
//! the scheduler acknowledges it or says the attempt is no longer wanted, so a
//! dropped connection never loses a finished result. One job at a time: a
//! worker is one GPU. Heartbeats carry the current job so the scheduler can
//! reconcile after either side restarts, and their answer names jobs to stop.
//! Every route, and every call to the scheduler, carries the internal token;
//! the calls go through `tessera_api::Client`, and a result's multipart body is
//! `tessera_api::internal::result_form`'s, the one the scheduler reads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use tessera_api::error::response as error;
use tessera_api::internal::result_form::ResultForm;
use tessera_api::internal::{
    CancelJob, EngineInfo, Heartbeat, JobResult, ModelMemory, Outcome, OutputPiece, ProgressReport,
    RunJob, RunJobAccepted, RunJobError, RunTiming, WorkerCapabilities, WorkerHealth, WorkerStatus,
};
use tessera_api::{Client, ClientError};
use tessera_core::params::JobParams;
use tessera_core::{Capability, ErrorCode, JobId, WorkerId};

use crate::config::WorkerConfig;
use crate::engine::{self, Artifact, Engine, EngineError, Input, Progress, Task};
use crate::gpu::Gpu;
use crate::readiness::{self, Readiness};

/// Longest wait between two tries of a result upload.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Least time between two progress reports of one job.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Least time between two output posts of one job: the text an engine
/// writes meanwhile goes in one piece.
pub const OUTPUT_EVERY: Duration = Duration::from_millis(50);
/// Longest a result waits for the last output piece to be sent.
const OUTPUT_FLUSH: Duration = Duration::from_secs(2);

pub struct Worker;

impl Worker {
    /// Binds, starts serving and sends the first heartbeat.
    pub async fn start(config: WorkerConfig) -> anyhow::Result<WorkerHandle> {
        config.check()?;
        let token = config.internal_token()?;
        let metrics_token = config.metrics_token()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let engines = engine::build(&config.engines, &http)?;
        let classifier = crate::classify::OutputClassifier::load(&config.moderation).await?;
        if classifier.is_none() {
            tracing::info!("no output classifier ([moderation] classifier_model and onnxruntime_lib are unset): results carry no classification");
        }
        let scheduler = Client::with_http(http, &config.worker.scheduler_url, token.clone())
            .context("worker.scheduler_url")?;
        let listener = tokio::net::TcpListener::bind(config.worker.listen)
            .await
            .with_context(|| format!("binding {}", config.worker.listen))?;
        let addr = listener.local_addr()?;
        let advertise = if config.worker.advertise_url.is_empty() {
            let host = if addr.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                addr.ip().to_string()
            };
            format!("http://{host}:{}", addr.port())
        } else {
            config.worker.advertise_url.trim_end_matches('/').to_owned()
        };
        let shared = Arc::new(Shared {
            id: config.worker.id.clone(),
            advertise,
            token,
            metrics_token,
            metrics: crate::metrics::Metrics::new(),
            registered: AtomicBool::new(false),
            scheduler,
            readiness: Readiness::new(engines.len()),
            engines,
            gpu: Gpu::open(0),
            current: Mutex::new(None),
            draining: AtomicBool::new(false),
            heartbeat_now: Notify::new(),
            interval_ms: AtomicU64::new(config.worker.heartbeat_interval_ms.max(100)),
            max_input_bytes: config.worker.max_input_bytes,
            classifier,
        });
        // The first heartbeat already says which engines are up.
        readiness::probe_all(&shared.readiness, &shared.engines).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = router(shared.clone());
        let mut server_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                })
                .await
                .context("serving the worker API")
        });
        let probes = tokio::spawn(probe_loop(shared.clone(), stop_rx.clone()));
        // Settings checked against the engines (ComfyUI's templates against
        // its node classes), retried until each engine answers.
        let checks = tokio::spawn(engine::check_until_answered(
            shared.engines.clone(),
            Duration::from_millis(config.worker.heartbeat_interval_ms.clamp(100, 5_000)),
            stop_rx.clone(),
            {
                let shared = shared.clone();
                move || shared.heartbeat_now.notify_one()
            },
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), stop_rx));
        tracing::info!(worker_id = %shared.id, %addr, engines = shared.engines.len(), "worker listening");
        Ok(WorkerHandle {
            addr,
            shared,
            stop: stop_tx,
            server,
            heartbeat,
            probes,
            checks,
        })
    }
}

/// A running worker.
pub struct WorkerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: JoinHandle<anyhow::Result<()>>,
    heartbeat: JoinHandle<()>,
    probes: JoinHandle<()>,
    checks: JoinHandle<()>,
}

impl WorkerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The job running now, if any.
    pub fn current_job(&self) -> Option<JobId> {
        self.shared.current().map(|r| r.job_id)
    }

    /// Stops taking jobs, lets the running one finish and deliver its result,
    /// tells the scheduler, then stops.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.heartbeat_now.notify_one();
        while self.shared.current().is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.stop.send(true);
        self.checks.abort();
        let _ = self.heartbeat.await;
        let _ = self.probes.await;
        self.server.await.context("worker server panicked")?
    }

    /// Stops at once, as a crash would: no result, no last heartbeat.
    pub fn kill(self) {
        self.server.abort();
        self.heartbeat.abort();
        self.probes.abort();
        self.checks.abort();
        if let Some(running) = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            running.task.abort();
        }
    }

    /// Waits until the server stops by itself (an error), for the CLI.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await.context("worker server panicked")?
    }
}

struct Shared {
    id: WorkerId,
    advertise: String,
    token: String,
    /// May read `/metrics` only.
    metrics_token: Option<String>,
    metrics: crate::metrics::Metrics,
    /// Whether the scheduler accepted the last heartbeat (for `/readyz`).
    registered: AtomicBool,
    /// The scheduler's internal API, with the internal token.
    scheduler: Client,
    engines: Vec<Arc<dyn Engine>>,
    /// What the last probe of each engine found, in `engines`' order.
    readiness: Readiness,
    gpu: Option<Gpu>,
    current: Mutex<Option<Running>>,
    draining: AtomicBool,
    heartbeat_now: Notify,
    interval_ms: AtomicU64,
    max_input_bytes: u64,
    /// Classifies pictures before they are sent; `None` without `[moderation]`.
    classifier: Option<crate::classify::OutputClassifier>,
}

struct Running {
    job_id: JobId,
    attempt: i32,
    cancel: CancellationToken,
    task: tokio::task::AbortHandle,
}

#[derive(Clone)]
struct RunningView {
    job_id: JobId,
}

impl Shared {
    fn current(&self) -> Option<RunningView> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| RunningView {
                job_id: r.job_id.clone(),
            })
    }

    fn status(&self) -> (WorkerStatus, Option<JobId>) {
        let current = self.current().map(|r| r.job_id);
        let status = if self.draining.load(Ordering::SeqCst) {
            WorkerStatus::Draining
        } else if current.is_some() {
            WorkerStatus::Busy
        } else {
            WorkerStatus::Idle
        };
        (status, current)
    }

    fn cancel(&self, job_id: &JobId) -> bool {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some(r) if &r.job_id == job_id => {
                r.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    fn capabilities(&self) -> WorkerCapabilities {
        let engines: Vec<EngineInfo> = self
            .engines
            .iter()
            .zip(self.readiness.report(&self.engines))
            .map(|(e, r)| EngineInfo {
                engine: r.engine,
                capability: r.capability,
                models: r.models,
                loaded_models: e.loaded_models(),
                ready: r.ready,
                ready_since: r.since,
                error: r.error,
            })
            .collect();
        let mut capabilities: Vec<Capability> = engines.iter().map(|e| e.capability).collect();
        capabilities.sort_by_key(|c| c.as_str());
        capabilities.dedup();
        let mut models: Vec<String> = engines.iter().flat_map(|e| e.models.clone()).collect();
        models.sort();
        models.dedup();
        let mut loaded: Vec<String> = engines
            .iter()
            .flat_map(|e| e.loaded_models.clone())
            .collect();
        loaded.sort();
        loaded.dedup();
        let mut model_memory: Vec<ModelMemory> =
            self.engines.iter().flat_map(|e| e.model_memory()).collect();
        model_memory.sort_by(|a, b| a.model.cmp(&b.model));
        model_memory.dedup_by(|a, b| a.model == b.model);
        let gpu = self.gpu.as_ref().map(Gpu::read).unwrap_or_default();
        WorkerCapabilities {
            worker_id: self.id.clone(),
            engines,
            capabilities,
            models,
            loaded_models: loaded,
            model_memory,
            gpu_name: gpu.name,
            gpu_memory_used: gpu.memory_used,
            gpu_memory_total: gpu.memory_total,
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let internal = Router::new()
        .route("/health", get(health))
        .route("/capabilities", get(capabilities))
        .route("/run_job", post(run_job))
        .route("/cancel_job", post(cancel_job))
        .route("/unload", post(unload))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such route on a worker",
            )
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(internal)
        .with_state(shared)
}

/// `GET /healthz`: the process is up. No credential; reveals nothing.
async fn alive() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the scheduler accepted the last heartbeat and the worker is
/// not shutting down. No credential; reveals nothing.
async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Draining,
            "this worker is shutting down",
        );
    }
    if !shared.registered.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotRegistered,
            "the scheduler has not accepted this worker's last heartbeat",
        );
    }
    Json(serde_json::json!({"status": "ready"})).into_response()
}

/// `GET /metrics`: the metrics token or the internal token.
async fn metrics(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let presented = bearer(&request);
    let matches = |expected: &str| {
        presented.is_some_and(|t| bool::from(t.as_bytes().ct_eq(expected.as_bytes())))
    };
    if !matches(&shared.token) && !shared.metrics_token.as_deref().is_some_and(matches) {
        return error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the metrics need the metrics token or the internal token (Authorization: Bearer ...)",
        );
    }
    let gpu = shared.gpu.as_ref().map(Gpu::read).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        shared.metrics.render(&gpu),
    )
        .into_response()
}

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(&request) {
        Some(t) if bool::from(t.as_bytes().ct_eq(shared.token.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the internal token is not valid",
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this worker answers only with the internal token (Authorization: Bearer ...)",
        ),
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<WorkerHealth> {
    let (status, current_job) = shared.status();
    Json(WorkerHealth {
        worker_id: shared.id.clone(),
        status,
        current_job,
    })
}

async fn capabilities(State(shared): State<Arc<Shared>>) -> Json<WorkerCapabilities> {
    Json(shared.capabilities())
}

async fn run_job(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let job = match RunJob::from_slice(&body) {
        Ok(job) => job,
        Err(e @ RunJobError::NotAJob(_)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidJob,
                e.to_string(),
            )
        }
        Err(e @ RunJobError::Params { .. }) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidParams,
                e.to_string(),
            )
        }
    };
    let Some(index) = shared
        .engines
        .iter()
        .position(|e| e.capability() == job.capability && e.models().contains(&job.model_id))
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnsupportedModel,
            format!(
                "this worker does not serve {} with {:?}",
                job.capability, job.model_id
            ),
        );
    };
    let engine = shared.engines[index].clone();
    if let Some(down) = shared.readiness.get(index).filter(|s| !s.ready) {
        // The scheduler hands the job back without counting an attempt.
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::EngineUnavailable,
            format!(
                "this worker's {} engine is down: {}",
                engine.kind(),
                down.error.unwrap_or_default()
            ),
        );
    }
    let params = job.params.clone();
    let accepted = RunJobAccepted {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
    };
    let mut current = shared.current.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(running) = current.as_ref() {
        if running.job_id == job.job_id && running.attempt == job.attempt {
            // A retried dispatch of the job already running.
            return (StatusCode::ACCEPTED, Json(accepted)).into_response();
        }
        return error(
            StatusCode::CONFLICT,
            ErrorCode::Busy,
            format!("this worker is running {}", running.job_id),
        );
    }
    if shared.draining.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Draining,
            "this worker is shutting down",
        );
    }
    let cancel = CancellationToken::new();
    // Every line the job logs carries its id and the id of the request that
    // created it (the scheduler sends it in the job and in X-Request-Id).
    let request_id = job
        .request_id
        .as_deref()
        .filter(|id| tessera_api::is_valid_request_id(id))
        .unwrap_or("-");
    let span = tracing::info_span!("job", job_id = %job.job_id, request_id = %request_id);
    let task = tokio::spawn(
        execute(shared.clone(), job.clone(), index, params, cancel.clone())
            .instrument(span.clone()),
    );
    *current = Some(Running {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        cancel,
        task: task.abort_handle(),
    });
    drop(current);
    span.in_scope(|| tracing::info!(attempt = job.attempt, model = %job.model_id, "job accepted"));
    (StatusCode::ACCEPTED, Json(accepted)).into_response()
}

async fn cancel_job(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: CancelJob = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                e.to_string(),
            )
        }
    };
    if shared.cancel(&req.job_id) {
        tracing::info!(job_id = %req.job_id, "cancelling the running job");
        StatusCode::ACCEPTED.into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotRunning,
            format!("{} is not running here", req.job_id),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unload {
    #[serde(default)]
    capability: Option<Capability>,
}

async fn unload(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: Unload = if body.is_empty() {
        Unload { capability: None }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidRequest,
                    e.to_string(),
                )
            }
        }
    };
    for engine in &shared.engines {
        if req.capability.is_none_or(|c| c == engine.capability()) {
            if let Err(e) = engine.unload().await {
                return error(StatusCode::BAD_GATEWAY, e.code, e.message);
            }
        }
    }
    Json(shared.capabilities()).into_response()
}

/// Runs one accepted job and delivers its result.
async fn execute(
    shared: Arc<Shared>,
    job: RunJob,
    index: usize,
    params: JobParams,
    cancel: CancellationToken,
) {
    let engine = shared.engines[index].clone();
    let started = std::time::Instant::now();
    let had_model = engine.loaded_models().contains(&job.model_id);
    shared.metrics.started();
    let outcome = run(&shared, &job, &*engine, params, &cancel).await;
    let loaded_model = !had_model && engine.loaded_models().contains(&job.model_id);
    let timing = RunTiming {
        engine_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        model_load: loaded_model,
    };
    shared.metrics.ended(
        job.capability,
        &job.model_id,
        outcome
            .as_ref()
            .map_or_else(|e| e.code.as_str(), |_| "completed"),
        started.elapsed().as_secs_f64(),
        loaded_model,
    );
    match &outcome {
        Ok(a) => {
            tracing::info!(job_id = %job.job_id, artifacts = a.len(), ms = started.elapsed().as_millis() as u64, "job finished")
        }
        Err(e) => {
            tracing::warn!(job_id = %job.job_id, code = %e.code, error = %e.message, "job failed")
        }
    }
    if outcome
        .as_ref()
        .is_err_and(|e| e.code == ErrorCode::EngineUnavailable)
        && readiness::probe_one(&shared.readiness, &shared.engines, index).await
    {
        // Down: the scheduler hears it before the result, so no job is sent back here.
        shared.heartbeat_now.notify_one();
    }
    let outcome = match outcome {
        Ok(artifacts) => Ok(classified(&shared, &job, artifacts).await),
        failed => failed,
    };
    deliver(&shared, &job, outcome, timing).await;
    let mut current = shared.current.lock().unwrap_or_else(|p| p.into_inner());
    if current
        .as_ref()
        .is_some_and(|r| r.job_id == job.job_id && r.attempt == job.attempt)
    {
        *current = None;
    }
}

/// The artifacts with what the output classifier found in each picture.
async fn classified(shared: &Shared, job: &RunJob, mut artifacts: Vec<Artifact>) -> Vec<Artifact> {
    let Some(classifier) = &shared.classifier else {
        return artifacts;
    };
    for artifact in &mut artifacts {
        if let Some((classification, seconds)) =
            classifier.classify(&artifact.meta, &artifact.bytes).await
        {
            shared.metrics.classified(artifact.meta.kind, seconds);
            tracing::debug!(job_id = %job.job_id, format = %artifact.meta.format, ms = (seconds * 1000.0) as u64, found = classification.detections.len(), unclassified = ?classification.unclassified, "output classified");
            artifact.meta.classification = Some(classification);
        }
    }
    artifacts
}

async fn run(
    shared: &Arc<Shared>,
    job: &RunJob,
    engine: &dyn Engine,
    params: JobParams,
    cancel: &CancellationToken,
) -> Result<Vec<Artifact>, EngineError> {
    let inputs = fetch_inputs(shared, job).await?;
    let task = Task {
        job_id: job.job_id.clone(),
        model: job.model_id.clone(),
        params,
        inputs,
    };
    let (progress, rx) = Progress::new();
    let reporter = tokio::spawn(
        report_progress(
            shared.clone(),
            job.job_id.clone(),
            job.attempt,
            job.request_id.clone(),
            rx,
        )
        .in_current_span(),
    );
    let finished = CancellationToken::new();
    let mut streamer = tokio::spawn(
        stream_output(
            shared.clone(),
            job.job_id.clone(),
            job.attempt,
            job.request_id.clone(),
            progress.output(),
            finished.clone(),
        )
        .in_current_span(),
    );
    let limit = Duration::from_millis(job.timeout_ms.max(1));
    let result = match tokio::time::timeout(limit, engine.run(&task, &progress, cancel)).await {
        Ok(r) => r,
        Err(_) => {
            cancel.cancel();
            Err(EngineError::timed_out(job.timeout_ms))
        }
    };
    reporter.abort();
    // The last of the text goes before the result, so the job's followers
    // have it all before the end; a scheduler that does not take it within
    // OUTPUT_FLUSH does not hold the result up.
    finished.cancel();
    if result.is_ok()
        && tokio::time::timeout(OUTPUT_FLUSH, &mut streamer)
            .await
            .is_err()
    {
        tracing::debug!(job_id = %job.job_id, "the last output piece was not sent in time");
    }
    streamer.abort();
    result
}

async fn fetch_inputs(shared: &Shared, job: &RunJob) -> Result<Vec<Input>, EngineError> {
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        if input.size > shared.max_input_bytes {
            return Err(EngineError::rejected(format!(
                "input {} is {} bytes, more than this worker takes ({})",
                input.input_id, input.size, shared.max_input_bytes
            )));
        }
        let bytes = shared
            .scheduler
            .fetch_input(&input.input_id, job.request_id.as_deref())
            .await
            .map_err(|e| {
                EngineError::unavailable(format!("fetching input {}: {e}", input.input_id))
            })?;
        inputs.push(Input {
            id: input.input_id.clone(),
            content_type: input.content_type.clone(),
            bytes,
        });
    }
    Ok(inputs)
}

async fn report_progress(
    shared: Arc<Shared>,
    job_id: JobId,
    attempt: i32,
    request_id: Option<String>,
    mut rx: watch::Receiver<Option<f32>>,
) {
    while rx.changed().await.is_ok() {
        let Some(progress) = *rx.borrow_and_update() else {
            continue;
        };
        let report = ProgressReport {
            worker_id: shared.id.clone(),
            attempt,
            progress,
        };
        let sent = shared
            .scheduler
            .report_progress(&job_id, &report, request_id.as_deref())
            .await;
        // Only a report that never arrived is worth a line: an answer (even
        // 409 for an attempt taken back) means the scheduler has heard it.
        if let Err(e @ ClientError::Transport(_)) = sent {
            tracing::debug!(%job_id, error = %e, "progress report not delivered");
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}

/// Sends the engine's text to the scheduler as it grows
/// (`POST /api/internal/jobs/{id}/output`), at most one piece every
/// [`OUTPUT_EVERY`], until `finished` and everything written is sent (or the
/// scheduler refuses the attempt). `offset` is the bytes of text the
/// scheduler said it holds; when it answers `output_gap` (it restarted, or a
/// piece went astray) the whole text goes again from 0, and the scheduler
/// keeps only what it lacks. The engine never waits on this.
async fn stream_output(
    shared: Arc<Shared>,
    job_id: JobId,
    attempt: i32,
    request_id: Option<String>,
    mut text: watch::Receiver<String>,
    finished: CancellationToken,
) {
    // Bytes of the text the scheduler holds.
    let mut sent = 0usize;
    // A piece failed to arrive: try again after OUTPUT_EVERY, changed or not.
    let mut retry = false;
    loop {
        if !retry && !finished.is_cancelled() {
            tokio::select! {
                changed = text.changed() => {
                    if changed.is_err() {
                        // The engine is gone: what it wrote is all there is.
                        finished.cancel();
                    }
                }
                _ = finished.cancelled() => {}
            }
        }
        let last = finished.is_cancelled();
        let began = tokio::time::Instant::now();
        let piece = {
            let all = text.borrow_and_update();
            all.get(sent..).filter(|p| !p.is_empty()).map(str::to_owned)
        };
        retry = false;
        if let Some(piece) = piece {
            let body = OutputPiece {
                worker_id: shared.id.clone(),
                attempt,
                offset: sent as u64,
                text: piece,
            };
            match shared
                .scheduler
                .send_output(&job_id, &body, request_id.as_deref())
                .await
            {
                Ok(ack) => {
                    let held = usize::try_from(ack.received).unwrap_or(usize::MAX);
                    let all = text.borrow();
                    // What the scheduler holds is a prefix of this text;
                    // anything else is a fresh start.
                    sent = if all.is_char_boundary(held.min(all.len())) {
                        held.min(all.len())
                    } else {
                        0
                    };
                }
                Err(e) if e.is(ErrorCode::OutputGap) => {
                    sent = 0;
                    retry = true;
                }
                Err(e @ ClientError::Transport(_)) => {
                    tracing::debug!(%job_id, error = %e, "output piece not delivered");
                    retry = true;
                }
                Err(ClientError::Api { status, .. }) if status.is_server_error() => retry = true,
                Err(e) => {
                    // The attempt was taken back, or the piece refused: the
                    // result will say the rest.
                    tracing::debug!(%job_id, error = %e, "output refused; no more is sent");
                    return;
                }
            }
        } else if last {
            return;
        }
        if last && !retry && text.borrow().len() == sent {
            return;
        }
        tokio::time::sleep_until(began + OUTPUT_EVERY).await;
    }
}

/// Sends the result until the scheduler acknowledges it or refuses the attempt.
async fn deliver(
    shared: &Shared,
    job: &RunJob,
    outcome: Result<Vec<Artifact>, EngineError>,
    timing: RunTiming,
) {
    let (result, parts) = match outcome {
        Ok(artifacts) => (
            JobResult {
                worker_id: shared.id.clone(),
                attempt: job.attempt,
                outcome: Outcome::Completed,
                artifacts: artifacts.iter().map(|a| a.meta.clone()).collect(),
                error: None,
                timing: Some(timing),
            },
            artifacts.into_iter().map(|a| a.bytes).collect::<Vec<_>>(),
        ),
        Err(e) => (
            JobResult {
                worker_id: shared.id.clone(),
                attempt: job.attempt,
                outcome: Outcome::Failed,
                artifacts: vec![],
                error: Some(e.to_wire()),
                timing: Some(timing),
            },
            vec![],
        ),
    };
    let form = ResultForm::new(&result, parts);
    let mut delay = Duration::from_millis(100);
    let mut tries = 0u32;
    loop {
        tries += 1;
        let sent = shared
            .scheduler
            .deliver_result(&job.job_id, &form, job.request_id.as_deref())
            .await;
        match sent {
            Ok(_) => return delivered(job, tries),
            // Acknowledged, with an answer that cannot be read: delivered all the same.
            Err(ClientError::Unexpected { status, .. }) if status.is_success() => {
                return delivered(job, tries)
            }
            Err(e @ (ClientError::Api { .. } | ClientError::Unexpected { .. })) => {
                let status = e.status().unwrap_or_default();
                if status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND {
                    tracing::warn!(job_id = %job.job_id, attempt = job.attempt, body = %e, "result refused: the scheduler no longer wants this attempt; discarded");
                    return;
                }
                if status.is_client_error() {
                    tracing::error!(job_id = %job.job_id, %status, body = %e, "result rejected as malformed; discarded");
                    return;
                }
                tracing::warn!(job_id = %job.job_id, %status, tries, "result not accepted yet; retrying");
            }
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = %e, tries, "result not delivered; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

fn delivered(job: &RunJob, tries: u32) {
    if tries > 1 {
        tracing::info!(job_id = %job.job_id, tries, "result delivered after retries");
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut reachable = true;
    loop {
        let caps = shared.capabilities();
        let (status, current_job) = shared.status();
        let gpu = shared.gpu.as_ref().map(Gpu::read).unwrap_or_default();
        let hb = Heartbeat {
            worker_id: shared.id.clone(),
            status,
            address: shared.advertise.clone(),
            capabilities: caps.capabilities,
            models: caps.models,
            loaded_models: caps.loaded_models,
            model_memory: caps.model_memory,
            current_job,
            gpu_name: gpu.name,
            gpu_memory_used: gpu.memory_used,
            gpu_memory_total: gpu.memory_total,
            gpu_utilization: gpu.utilization,
            engines: shared.readiness.report(&shared.engines),
        };
        match shared.scheduler.heartbeat(&hb).await {
            Ok(ack) => {
                heard(&shared, &mut reachable);
                shared
                    .interval_ms
                    .store(ack.heartbeat_interval_ms.max(100), Ordering::Relaxed);
                for job in &ack.cancel_jobs {
                    if shared.cancel(job) {
                        tracing::info!(job_id = %job, "scheduler no longer wants the running job; cancelling");
                    }
                }
            }
            // Accepted, with an answer that cannot be read: registered all the same.
            Err(ClientError::Unexpected { status, .. }) if status.is_success() => {
                heard(&shared, &mut reachable);
            }
            Err(e @ (ClientError::Api { .. } | ClientError::Unexpected { .. })) => {
                let status = e.status().unwrap_or_default();
                tracing::error!(%status, body = %e, "heartbeat refused");
                shared.registered.store(false, Ordering::SeqCst);
                reachable = false;
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(error = %e, "scheduler unreachable; heartbeats will retry");
                }
                shared.registered.store(false, Ordering::SeqCst);
                reachable = false;
            }
        }
        if *stop.borrow() {
            return;
        }
        let wait = Duration::from_millis(shared.interval_ms.load(Ordering::Relaxed));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.heartbeat_now.notified() => {}
            _ = stop.wait_for(|s| *s) => {
                // One last heartbeat says the worker is draining, then stop.
                continue;
            }
        }
    }
}

/// The scheduler accepted a heartbeat.
fn heard(shared: &Shared, reachable: &mut bool) {
    shared.registered.store(true, Ordering::SeqCst);
    if !*reachable {
        tracing::info!("scheduler reachable again");
        *reachable = true;
    }
}

/// Probes every engine each heartbeat period, every
/// [`readiness::DOWN_PROBE_EVERY`] while one is down, and sends a heartbeat
/// at once when an engine goes down or comes back.
async fn probe_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = Duration::from_millis(shared.interval_ms.load(Ordering::Relaxed));
        let wait = if shared.readiness.any_down() {
            interval.min(readiness::DOWN_PROBE_EVERY)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if readiness::probe_all(&shared.readiness, &shared.engines).await {
            shared.heartbeat_now.notify_one();
        }
    }
}
