//! The scheduler's Prometheus metrics, served at `/metrics` (how to scrape
//! them and the alerts on them: docs/operations.md, "Monitoring").
//!
//! Two kinds. **Events** are counted as this process sees them: jobs created,
//! dispatched and ended, queue waits and run times, API requests. They start
//! at zero with each process, as Prometheus counters do (`rate()` and
//! `increase()` handle restarts), and with several replicas each counts what
//! it did itself, so sums over replicas are right. **State** is read from the
//! database at each scrape: queue depth per priority, running jobs, workers
//! with their heartbeats and GPU readings (workers usually sit on a network
//! Prometheus cannot reach, so their readings are exported here too), the
//! connection pool, money received (from the payments ledger). Every scheduler has its own registry, so
//! tests that run several in one process do not share counters.
//!
//! Names are listed in [`NAMES`]; the alert rules in `deploy/prometheus` use
//! only those, and a test checks both against a real scrape.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use tessera_core::{Capability, JobId, Millis, Plan, Priority, Transition};

use crate::store::{JobRecord, Store, StoreGauges, WorkerRecord};

/// The content type of the OpenMetrics text format Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric family the scheduler exports, as Prometheus names them.
pub const NAMES: &[&str] = &[
    "tessera_build_info",
    "tessera_jobs_created_total",
    "tessera_jobs_dispatched_total",
    "tessera_jobs_completed_total",
    "tessera_jobs_failed_total",
    "tessera_jobs_cancelled_total",
    "tessera_jobs_requeued_total",
    "tessera_stream_output_bytes_total",
    "tessera_moderation_refusals_total",
    "tessera_admission_refusals_total",
    "tessera_webhook_deliveries_total",
    "tessera_moderation_withheld_total",
    "tessera_moderation_reports_total",
    "tessera_moderation_sanctions_total",
    "tessera_job_queue_wait_seconds",
    "tessera_job_run_seconds",
    "tessera_job_latency_seconds",
    "tessera_eta_error_ratio",
    "tessera_eta_error_seconds",
    "tessera_http_requests_total",
    "tessera_http_request_duration_seconds",
    "tessera_queue_depth",
    "tessera_jobs_running",
    "tessera_workers",
    "tessera_worker_up",
    "tessera_worker_heartbeat_age_seconds",
    "tessera_worker_busy",
    "tessera_worker_engine_ready",
    "tessera_worker_gpu_utilization_ratio",
    "tessera_worker_gpu_memory_used_bytes",
    "tessera_worker_gpu_memory_total_bytes",
    "tessera_database_up",
    "tessera_database_pool_connections",
    "tessera_database_pool_max_connections",
    "tessera_users",
    "tessera_revenue_per_day_dollars",
    "tessera_revenue_30d_minor_units",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    capability: String,
    plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispatchLabels {
    capability: String,
    plan: String,
    /// Whether the worker had to load the job's model (`true`) or had it loaded.
    model_load: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailLabels {
    capability: String,
    plan: String,
    /// The job's error code (`attempts_exhausted`, `run_timeout`, ...): a fixed set.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// The prompt rule's name: the operator's configured set, and the built-in ones.
    rule: String,
    /// The frontend: `telegram`, `discord`, `web`.
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    /// The plan's id.
    plan: String,
    /// `queue_full` or `too_many_queued`.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    /// `delivered`, `failed_attempt` or `abandoned`.
    outcome: String,
}

/// Reports of outputs, by the reporter's frontend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    /// `telegram`, `discord`, `web`.
    channel: String,
}

/// Sanctions placed, by kind and the sanctioned user's platform.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SanctionLabels {
    /// `suspension` or `ban`.
    kind: String,
    /// The sanctioned user's platform: `telegram`, `discord`, `web`.
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WithheldLabels {
    /// The classifier's label that withheld the output (a configured
    /// threshold's), `unclassified`, or the prompt rule a text answer matched.
    label: String,
    /// The frontend: `telegram`, `discord`, `web`.
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapabilityLabels {
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route pattern (`/api/v1/jobs/{job_id}`), never the raw path.
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    capability: String,
    priority: String,
    plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    worker: String,
    engine: String,
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    worker: String,
    gpu: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevenueLabels {
    provider: String,
    plan: String,
    currency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    database: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Seconds, from 5 ms to about 45 minutes (doubling): API answers, queue waits
/// and runs of a video all fall inside.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 20))
}

/// A relative error, from 1 % to about 16 times (doubling).
fn ratio_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 12))
}

/// Most jobs whose promised start is held for the ETA-error check: past it,
/// new jobs go unchecked until dispatches make room (a queue that deep is
/// the queue-depth alert's business).
const MAX_PROMISES: usize = 200_000;

/// A job's estimate and its first dispatch, whichever came first: the create
/// works the estimate out after the job is committed, so the dispatcher may
/// take the job before it.
enum Promise {
    /// The create promised a start at `start_at`, then `run_ms` of running.
    Made { start_at: Millis, run_ms: Millis },
    /// The job was first dispatched at `at`, before its promise was made.
    Started { at: Millis },
}

/// The scheduler's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    /// Plan id by priority, for labelling jobs (a job keeps its plan's priority).
    plans: Mutex<HashMap<u8, Plan>>,
    created: Family<JobLabels, Counter>,
    dispatched: Family<DispatchLabels, Counter>,
    completed: Family<JobLabels, Counter>,
    failed: Family<FailLabels, Counter>,
    cancelled: Family<JobLabels, Counter>,
    requeued: Family<CapabilityLabels, Counter>,
    stream_output: Family<CapabilityLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    admission_refusals: Family<AdmissionLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    withheld: Family<WithheldLabels, Counter>,
    reports: Family<ChannelLabels, Counter>,
    sanctions: Family<SanctionLabels, Counter>,
    queue_wait: Hist<JobLabels>,
    run: Hist<CapabilityLabels>,
    latency: Hist<JobLabels>,
    eta_error_ratio: Hist<CapabilityLabels>,
    eta_error_seconds: Hist<CapabilityLabels>,
    /// Per job created and not yet dispatched: when its estimate said it
    /// would start, when it was created, and the run time (ms) the estimate
    /// counted on.
    promises: Mutex<HashMap<JobId, Promise>>,
    requests: Family<HttpLabels, Counter>,
    request_seconds: Hist<RouteLabels>,
    queue_depth: Family<QueueLabels, Gauge>,
    running: Family<CapabilityLabels, Gauge>,
    workers: Family<StatusLabels, Gauge>,
    worker_up: Family<WorkerLabels, Gauge>,
    heartbeat_age: Family<WorkerLabels, FloatGauge>,
    worker_busy: Family<WorkerLabels, Gauge>,
    engine_ready: Family<EngineLabels, Gauge>,
    gpu_utilization: Family<GpuLabels, FloatGauge>,
    gpu_used: Family<GpuLabels, Gauge>,
    gpu_total: Family<GpuLabels, Gauge>,
    database_up: Gauge,
    pool: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    users: Family<PlanLabels, Gauge>,
    revenue: FloatGauge,
    revenue_30d: Family<RevenueLabels, Gauge>,
}

impl Metrics {
    /// A fresh registry; `database` names the backend in `tessera_build_info`.
    pub fn new(database: &str) -> Self {
        let mut inner = Inner {
            registry: Registry::with_prefix("tessera"),
            plans: Mutex::new(HashMap::new()),
            created: Family::default(),
            dispatched: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            cancelled: Family::default(),
            requeued: Family::default(),
            stream_output: Family::default(),
            refusals: Family::default(),
            admission_refusals: Family::default(),
            webhooks: Family::default(),
            withheld: Family::default(),
            reports: Family::default(),
            sanctions: Family::default(),
            queue_wait: Family::new_with_constructor(seconds_histogram),
            run: Family::new_with_constructor(seconds_histogram),
            latency: Family::new_with_constructor(seconds_histogram),
            eta_error_ratio: Family::new_with_constructor(ratio_histogram),
            eta_error_seconds: Family::new_with_constructor(seconds_histogram),
            promises: Mutex::new(HashMap::new()),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds_histogram),
            queue_depth: Family::default(),
            running: Family::default(),
            workers: Family::default(),
            worker_up: Family::default(),
            heartbeat_age: Family::default(),
            worker_busy: Family::default(),
            engine_ready: Family::default(),
            gpu_utilization: Family::default(),
            gpu_used: Family::default(),
            gpu_total: Family::default(),
            database_up: Gauge::default(),
            pool: Family::default(),
            pool_max: Gauge::default(),
            users: Family::default(),
            revenue: FloatGauge::default(),
            revenue_30d: Family::default(),
        };
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                database: database.to_owned(),
            })
            .set(1);
        // Every outcome from zero, so the family is scraped (and `rate()`
        // works) before the first webhook is sent.
        for outcome in ["delivered", "failed_attempt", "abandoned"] {
            let _ = inner.webhooks.get_or_create(&WebhookLabels {
                outcome: outcome.to_owned(),
            });
        }
        let i = &mut inner;
        let r = &mut i.registry;
        r.register(
            "build_info",
            "Always 1: the version and database backend are labels",
            build,
        );
        r.register(
            "jobs_created",
            "Jobs created (new, not replayed), by capability and plan",
            i.created.clone(),
        );
        r.register("jobs_dispatched", "Jobs sent to a worker, by capability, plan and whether the worker had to load the model", i.dispatched.clone());
        r.register(
            "jobs_completed",
            "Jobs that ended COMPLETED",
            i.completed.clone(),
        );
        r.register(
            "jobs_failed",
            "Jobs that ended FAILED (and were refunded), by error code",
            i.failed.clone(),
        );
        r.register(
            "jobs_cancelled",
            "Jobs that ended CANCELLED",
            i.cancelled.clone(),
        );
        r.register(
            "jobs_requeued",
            "Running jobs put back in the queue (worker lost or unreachable)",
            i.requeued.clone(),
        );
        r.register(
            "stream_output_bytes",
            "Bytes of output text (UTF-8) workers streamed to the scheduler as it was produced, by capability",
            i.stream_output.clone(),
        );
        r.register(
            "moderation_refusals",
            "Job creates the prompt rules refused (nothing charged), by rule and channel",
            i.refusals.clone(),
        );
        r.register(
            "admission_refusals",
            "Job creates refused by admission control (nothing charged), by plan and reason (`queue_full`, `too_many_queued`)",
            i.admission_refusals.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Job webhook delivery attempts, by outcome: `delivered` (a 2xx answer), `failed_attempt` (another attempt follows), `abandoned` (failed, and the last)",
            i.webhooks.clone(),
        );
        r.register(
            "moderation_withheld",
            "Jobs whose outputs were withheld for review, by label and channel",
            i.withheld.clone(),
        );
        r.register(
            "moderation_reports",
            "Outputs users reported (a repeat by the same user not counted), by channel",
            i.reports.clone(),
        );
        r.register(
            "moderation_sanctions",
            "Suspensions and bans placed (by operators, decisions and automatically), by kind and the user's platform",
            i.sanctions.clone(),
        );
        r.register(
            "job_queue_wait_seconds",
            "Time from queued to dispatched",
            i.queue_wait.clone(),
        );
        r.register(
            "job_run_seconds",
            "Time from dispatched to completed, for the run that completed",
            i.run.clone(),
        );
        r.register(
            "eta_error_ratio",
            "How far a job's first dispatch missed the start its create's estimate promised, as a share of the job's real wait plus run time, by capability",
            i.eta_error_ratio.clone(),
        );
        r.register(
            "eta_error_seconds",
            "How far a job's first dispatch missed the start its create's estimate promised, seconds, early or late",
            i.eta_error_seconds.clone(),
        );
        r.register(
            "job_latency_seconds",
            "Time from created to completed: what a user waits",
            i.latency.clone(),
        );
        r.register(
            "http_requests",
            "API requests answered, by method, route and status",
            i.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "API response times, by method and route",
            i.request_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Jobs QUEUED now, by capability and priority (with its plan)",
            i.queue_depth.clone(),
        );
        r.register(
            "jobs_running",
            "Jobs RUNNING now, by capability",
            i.running.clone(),
        );
        r.register(
            "workers",
            "Workers the scheduler knows, by status (online, offline)",
            i.workers.clone(),
        );
        r.register(
            "worker_up",
            "1 while the worker's heartbeats arrive, 0 once it missed too many",
            i.worker_up.clone(),
        );
        r.register(
            "worker_heartbeat_age_seconds",
            "Seconds since the worker's last heartbeat",
            i.heartbeat_age.clone(),
        );
        r.register(
            "worker_busy",
            "1 while the worker reports a running job",
            i.worker_busy.clone(),
        );
        r.register(
            "worker_engine_ready",
            "1 while an online worker's engine answers its readiness probe, 0 while it does not \
             (no jobs go to it meanwhile), by worker, engine and capability",
            i.engine_ready.clone(),
        );
        r.register(
            "worker_gpu_utilization_ratio",
            "GPU utilization the worker last reported, 0 to 1 (absent without NVML)",
            i.gpu_utilization.clone(),
        );
        r.register(
            "worker_gpu_memory_used_bytes",
            "GPU memory in use the worker last reported (absent without NVML)",
            i.gpu_used.clone(),
        );
        r.register(
            "worker_gpu_memory_total_bytes",
            "GPU memory of the worker's GPU (absent without NVML)",
            i.gpu_total.clone(),
        );
        r.register(
            "database_up",
            "1 when the database answered this scrape's queries, else 0",
            i.database_up.clone(),
        );
        r.register(
            "database_pool_connections",
            "Connections of the scheduler's pool, by state (idle, in_use)",
            i.pool.clone(),
        );
        r.register(
            "database_pool_max_connections",
            "The pool's size limit",
            i.pool_max.clone(),
        );
        r.register("users", "Users, by plan", i.users.clone());
        r.register(
            "revenue_per_day_dollars",
            "Money received in US dollars over the last 30 days, net of refunds and \
             chargebacks, / 30 (the payments ledger)",
            i.revenue.clone(),
        );
        r.register(
            "revenue_30d_minor_units",
            "Money received over the last 30 days, net of refunds and chargebacks, in the \
             currency's minor units (cents; Telegram Stars are whole), by provider, plan and \
             currency (the payments ledger)",
            i.revenue_30d.clone(),
        );
        Metrics(Arc::new(inner))
    }

    /// The plans, for the `plan` label of jobs (jobs keep their plan's priority).
    pub fn set_plans(&self, plans: Vec<Plan>) {
        let mut map = self.0.plans.lock().unwrap_or_else(|e| e.into_inner());
        *map = plans.into_iter().map(|p| (p.priority.0, p)).collect();
    }

    fn plan_of(&self, priority: Priority) -> String {
        let map = self.0.plans.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&priority.0)
            .map_or_else(|| format!("priority-{}", priority.0), |p| p.id.clone())
    }

    fn job_labels(&self, job: &JobRecord) -> JobLabels {
        JobLabels {
            capability: job.capability.to_string(),
            plan: self.plan_of(job.priority),
        }
    }

    /// A job was created (not a replay of an idempotent retry).
    pub fn created(&self, job: &JobRecord) {
        self.0.created.get_or_create(&self.job_labels(job)).inc();
    }

    /// A prompt rule refused a create.
    pub fn refused(&self, rule: &str, channel: tessera_core::Platform) {
        let labels = RefusalLabels {
            rule: rule.to_owned(),
            channel: channel.as_str().to_owned(),
        };
        self.0.refusals.get_or_create(&labels).inc();
    }

    /// Admission control refused a create.
    pub fn admission_refused(&self, plan: &str, reason: &str) {
        let labels = AdmissionLabels {
            plan: plan.to_owned(),
            reason: reason.to_owned(),
        };
        self.0.admission_refusals.get_or_create(&labels).inc();
    }

    /// A webhook delivery attempt ended: `delivered`, `failed_attempt` or
    /// `abandoned`.
    pub fn webhook_attempt(&self, outcome: &str) {
        let labels = WebhookLabels {
            outcome: outcome.to_owned(),
        };
        self.0.webhooks.get_or_create(&labels).inc();
    }

    /// A job's outputs were withheld.
    pub fn withheld(&self, label: &str, channel: tessera_core::Platform) {
        let labels = WithheldLabels {
            label: label.to_owned(),
            channel: channel.as_str().to_owned(),
        };
        self.0.withheld.get_or_create(&labels).inc();
    }

    /// A user reported an output.
    pub fn reported(&self, channel: tessera_core::Platform) {
        let labels = ChannelLabels {
            channel: channel.as_str().to_owned(),
        };
        self.0.reports.get_or_create(&labels).inc();
    }

    /// A suspension or ban was placed on a user of `channel`.
    pub fn sanctioned(&self, kind: &str, channel: tessera_core::Platform) {
        let labels = SanctionLabels {
            kind: kind.to_owned(),
            channel: channel.as_str().to_owned(),
        };
        self.0.sanctions.get_or_create(&labels).inc();
    }

    /// A claimed job is on its way to a worker; `model_load` when the worker
    /// did not have its model loaded.
    pub fn dispatched(&self, job: &JobRecord, model_load: bool) {
        let JobLabels { capability, plan } = self.job_labels(job);
        let labels = DispatchLabels {
            capability,
            plan,
            model_load: model_load.to_string(),
        };
        self.0.dispatched.get_or_create(&labels).inc();
        if let Some(started) = job.started_at {
            let mut promises = self.promises();
            match promises.remove(&job.id) {
                Some(Promise::Made { start_at, run_ms }) => {
                    drop(promises);
                    self.check_promise(job, start_at, run_ms, started);
                }
                // The dispatcher may take a job before its create has
                // worked out the estimate: the promise is checked when it
                // comes. A job's first dispatch counts, not a later one.
                Some(first @ Promise::Started { .. }) => {
                    promises.insert(job.id.clone(), first);
                }
                None if promises.len() < MAX_PROMISES => {
                    promises.insert(job.id.clone(), Promise::Started { at: started });
                }
                None => {}
            }
        }
        if let (Some(queued), Some(started)) = (job.queued_at, job.started_at) {
            self.0
                .queue_wait
                .get_or_create(&self.job_labels(job))
                .observe(seconds(started - queued));
        }
    }

    /// A job was created whose estimate says it starts at `start_at` and
    /// then runs `run_ms`: its first dispatch is checked against that
    /// ([`dispatched`](Self::dispatched)).
    pub fn promised(&self, job: &JobRecord, start_at: Millis, run_ms: Millis) {
        let mut promises = self.promises();
        match promises.remove(&job.id) {
            Some(Promise::Started { at }) => {
                drop(promises);
                self.check_promise(job, start_at, run_ms, at);
            }
            _ if promises.len() < MAX_PROMISES => {
                promises.insert(job.id.clone(), Promise::Made { start_at, run_ms });
            }
            _ => {}
        }
    }

    /// The error of the start as a share of what the user waits in all:
    /// the real wait and the run the estimate counted on.
    fn check_promise(&self, job: &JobRecord, start_at: Millis, run_ms: Millis, started: Millis) {
        let missed = seconds((started - start_at).abs());
        let scale = seconds((started - job.created_at).max(0) + run_ms.max(0));
        let capability = CapabilityLabels {
            capability: job.capability.to_string(),
        };
        self.0
            .eta_error_seconds
            .get_or_create(&capability)
            .observe(missed);
        self.0
            .eta_error_ratio
            .get_or_create(&capability)
            .observe(missed / scale.max(1.0));
    }

    fn promises(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Promise>> {
        self.0.promises.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A transition was applied; `job` is the job after it. Called by the
    /// [`Lifecycle`](crate::lifecycle::Lifecycle), through which every state
    /// change after creation goes, so the counters miss none.
    pub fn transitioned(&self, t: Transition, job: &JobRecord) {
        if job.status.is_terminal() {
            // Ended without a dispatch (cancelled, failed as unservable):
            // nothing to check its estimate against.
            self.promises().remove(&job.id);
        }
        match t {
            Transition::Complete => {
                let labels = self.job_labels(job);
                self.0.completed.get_or_create(&labels).inc();
                if let (Some(started), Some(ended)) = (job.started_at, job.ended_at) {
                    self.0
                        .run
                        .get_or_create(&CapabilityLabels {
                            capability: job.capability.to_string(),
                        })
                        .observe(seconds(ended - started));
                }
                if let Some(ended) = job.ended_at {
                    self.0
                        .latency
                        .get_or_create(&labels)
                        .observe(seconds(ended - job.created_at));
                }
            }
            Transition::Fail => {
                let JobLabels { capability, plan } = self.job_labels(job);
                let code = job.error_code.clone().unwrap_or_default();
                self.0
                    .failed
                    .get_or_create(&FailLabels {
                        capability,
                        plan,
                        code,
                    })
                    .inc();
            }
            Transition::Cancel => {
                self.0.cancelled.get_or_create(&self.job_labels(job)).inc();
            }
            Transition::Requeue => {
                self.0
                    .requeued
                    .get_or_create(&CapabilityLabels {
                        capability: job.capability.to_string(),
                    })
                    .inc();
            }
            Transition::Enqueue | Transition::Dispatch => {}
        }
    }

    /// `bytes` of new output text a worker streamed for a job of `capability`.
    pub fn streamed(&self, capability: Capability, bytes: usize) {
        self.0
            .stream_output
            .get_or_create(&CapabilityLabels {
                capability: capability.to_string(),
            })
            .inc_by(bytes as u64);
    }

    /// Counts and times an API request (a middleware for the router).
    pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
        let started = Instant::now();
        let method = req.method().as_str().to_owned();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let resp = next.run(req).await;
        let elapsed = started.elapsed().as_secs_f64();
        metrics
            .0
            .request_seconds
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(elapsed);
        metrics
            .0
            .requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status: resp.status().as_u16().to_string(),
            })
            .inc();
        resp
    }

    /// Reads the state gauges from the database, then renders every metric.
    pub async fn render(
        &self,
        store: &dyn Store,
        is_online: impl Fn(Millis) -> bool,
        now: Millis,
    ) -> String {
        let i = &self.0;
        let pool = store.pool_stats();
        i.pool
            .get_or_create(&PoolLabels {
                state: "idle".into(),
            })
            .set(pool.idle.into());
        i.pool
            .get_or_create(&PoolLabels {
                state: "in_use".into(),
            })
            .set(i64::from(pool.size.saturating_sub(pool.idle)));
        i.pool_max.set(pool.max.into());
        let gauges = store.gauges(now).await;
        let workers = store.list_workers().await;
        match (gauges, workers) {
            (Ok(gauges), Ok(workers)) => {
                i.database_up.set(1);
                self.set_gauges(&gauges);
                self.set_workers(&workers, is_online, now);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "metrics: reading the database failed");
                // The last readings stay: a gap in the queue depth is worse
                // than a stale one while `tessera_database_up` says why.
                i.database_up.set(0);
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &i.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }

    fn set_gauges(&self, g: &StoreGauges) {
        let i = &self.0;
        i.queue_depth.clear();
        // Every plan's priority appears for every capability that has jobs, so
        // a queue that empties reads 0 rather than vanishing.
        let plans: Vec<Plan> = {
            let map = i.plans.lock().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        for capability in Capability::ALL {
            for plan in &plans {
                i.queue_depth
                    .get_or_create(&QueueLabels {
                        capability: capability.to_string(),
                        priority: plan.priority.0.to_string(),
                        plan: plan.id.clone(),
                    })
                    .set(0);
            }
        }
        for (capability, priority, jobs) in &g.queued {
            i.queue_depth
                .get_or_create(&QueueLabels {
                    capability: capability.to_string(),
                    priority: priority.0.to_string(),
                    plan: self.plan_of(*priority),
                })
                .set(*jobs);
        }
        i.running.clear();
        for capability in Capability::ALL {
            i.running
                .get_or_create(&CapabilityLabels {
                    capability: capability.to_string(),
                })
                .set(0);
        }
        for (capability, jobs) in &g.running {
            i.running
                .get_or_create(&CapabilityLabels {
                    capability: capability.to_string(),
                })
                .set(*jobs);
        }
        i.users.clear();
        for plan in &plans {
            let count = g
                .users_per_plan
                .iter()
                .find(|(id, _)| *id == plan.id)
                .map_or(0, |(_, n)| *n);
            i.users
                .get_or_create(&PlanLabels {
                    plan: plan.id.clone(),
                })
                .set(count);
        }
        i.revenue_30d.clear();
        let mut usd_cents = 0i64;
        for row in &g.revenue_30d {
            i.revenue_30d
                .get_or_create(&RevenueLabels {
                    provider: row.provider.clone(),
                    plan: row.plan_id.clone(),
                    currency: row.currency.clone(),
                })
                .set(row.net_minor);
            if row.currency.eq_ignore_ascii_case("usd") {
                usd_cents = usd_cents.saturating_add(row.net_minor);
            }
        }
        i.revenue.set(usd_cents as f64 / 100.0 / 30.0);
    }

    fn set_workers(
        &self,
        workers: &[WorkerRecord],
        is_online: impl Fn(Millis) -> bool,
        now: Millis,
    ) {
        let i = &self.0;
        i.worker_up.clear();
        i.heartbeat_age.clear();
        i.worker_busy.clear();
        i.engine_ready.clear();
        i.gpu_utilization.clear();
        i.gpu_used.clear();
        i.gpu_total.clear();
        let (mut online, mut offline) = (0, 0);
        for w in workers {
            let hb = &w.heartbeat;
            let up = is_online(w.last_seen_at);
            if up {
                online += 1;
            } else {
                offline += 1;
            }
            let labels = WorkerLabels {
                worker: hb.worker_id.to_string(),
            };
            i.worker_up.get_or_create(&labels).set(i64::from(up));
            i.heartbeat_age
                .get_or_create(&labels)
                .set(seconds(now - w.last_seen_at));
            i.worker_busy
                .get_or_create(&labels)
                .set(i64::from(hb.current_job.is_some()));
            // An offline worker's engines are not known: tessera_worker_up says it.
            let mut engines: HashMap<EngineLabels, bool> = HashMap::new();
            for e in hb.engines.iter().filter(|_| up) {
                let engine = EngineLabels {
                    worker: hb.worker_id.to_string(),
                    engine: e.engine.clone(),
                    capability: e.capability.to_string(),
                };
                // Two engines of one kind for one capability: down if either is.
                *engines.entry(engine).or_insert(true) &= e.ready;
            }
            for (engine, ready) in engines {
                i.engine_ready.get_or_create(&engine).set(i64::from(ready));
            }
            let gpu = GpuLabels {
                worker: hb.worker_id.to_string(),
                gpu: hb.gpu_name.clone().unwrap_or_default(),
            };
            if let Some(u) = hb.gpu_utilization {
                i.gpu_utilization
                    .get_or_create(&gpu)
                    .set(f64::from(u) / 100.0);
            }
            if let Some(mib) = hb.gpu_memory_used {
                i.gpu_used.get_or_create(&gpu).set(mib_to_bytes(mib));
            }
            if let Some(mib) = hb.gpu_memory_total {
                i.gpu_total.get_or_create(&gpu).set(mib_to_bytes(mib));
            }
        }
        i.workers.clear();
        i.workers
            .get_or_create(&StatusLabels {
                status: "online".into(),
            })
            .set(online);
        i.workers
            .get_or_create(&StatusLabels {
                status: "offline".into(),
            })
            .set(offline);
    }
}

fn seconds(ms: Millis) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn mib_to_bytes(mib: u64) -> i64 {
    i64::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}
