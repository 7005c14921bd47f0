//! The worker's Prometheus metrics, served at `/metrics`.
//!
//! What only the worker sees: the runs of its engines (by outcome), how long
//! they took, the model loads they needed, how long the output classifier
//! took, and its own GPU read from NVML at each scrape. The scheduler exports the farm-wide view (every worker's
//! heartbeat and last GPU reading), which is what the alert rules use; a
//! worker's own metrics are for looking at one GPU machine closely. Names
//! differ from the scheduler's (`tessera_gpu_*` here, `tessera_worker_gpu_*`
//! there) so that one Prometheus scraping both never mixes them up.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use tessera_core::Capability;

use crate::gpu::GpuReading;

/// The content type of the OpenMetrics text format Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric family a worker exports, as Prometheus names them.
pub const NAMES: &[&str] = &[
    "tessera_runs_total",
    "tessera_run_seconds",
    "tessera_model_loads_total",
    "tessera_running",
    "tessera_gpu_utilization_ratio",
    "tessera_gpu_memory_used_bytes",
    "tessera_gpu_memory_total_bytes",
    "tessera_classify_seconds",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    capability: String,
    /// `completed`, or the engine's error code (`engine_error`, `timed_out`,
    /// `cancelled`, ...): a fixed set.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapabilityLabels {
    capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GpuLabels {
    gpu: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A worker's metrics.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_seconds: Family<CapabilityLabels, Histogram, fn() -> Histogram>,
    model_loads: Family<ModelLabels, Counter>,
    running: Gauge,
    gpu_utilization: Family<GpuLabels, FloatGauge>,
    gpu_used: Family<GpuLabels, Gauge>,
    gpu_total: Family<GpuLabels, Gauge>,
    classify_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// The artifact's type: `image` or `video`.
    kind: String,
}

/// Seconds, from 5 ms to about 20 s (doubling).
fn classify_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Seconds, from 50 ms to about 7 hours (doubling).
fn run_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("tessera"),
            runs: Family::default(),
            run_seconds: Family::new_with_constructor(run_histogram),
            model_loads: Family::default(),
            running: Gauge::default(),
            gpu_utilization: Family::default(),
            gpu_used: Family::default(),
            gpu_total: Family::default(),
            classify_seconds: Family::new_with_constructor(classify_histogram),
        };
        let r = &mut m.registry;
        r.register(
            "runs",
            "Jobs this worker ran, by capability and outcome",
            m.runs.clone(),
        );
        r.register(
            "run_seconds",
            "How long this worker's runs took, model load included",
            m.run_seconds.clone(),
        );
        r.register(
            "model_loads",
            "Runs that had to load their model first, by model",
            m.model_loads.clone(),
        );
        r.register(
            "running",
            "1 while a job runs on this worker",
            m.running.clone(),
        );
        r.register(
            "gpu_utilization_ratio",
            "This worker's GPU utilization, 0 to 1 (absent without NVML)",
            m.gpu_utilization.clone(),
        );
        r.register(
            "gpu_memory_used_bytes",
            "GPU memory in use (absent without NVML)",
            m.gpu_used.clone(),
        );
        r.register(
            "gpu_memory_total_bytes",
            "GPU memory of this worker's GPU (absent without NVML)",
            m.gpu_total.clone(),
        );
        r.register(
            "classify_seconds",
            "How long the output classifier took per artifact (every frame sampled), by type",
            m.classify_seconds.clone(),
        );
        m
    }

    /// The output classifier judged an artifact of `kind` in `seconds`.
    pub fn classified(&self, kind: tessera_api::internal::ArtifactKind, seconds: f64) {
        self.classify_seconds
            .get_or_create(&KindLabels {
                kind: kind.as_str().to_owned(),
            })
            .observe(seconds);
    }

    /// A run started.
    pub fn started(&self) {
        self.running.set(1);
    }

    /// A run ended with `outcome` (`completed` or an error code) after
    /// `seconds`; `loaded_model` when the engine had to load `model` for it.
    pub fn ended(
        &self,
        capability: Capability,
        model: &str,
        outcome: &str,
        seconds: f64,
        loaded_model: bool,
    ) {
        self.running.set(0);
        self.runs
            .get_or_create(&RunLabels {
                capability: capability.to_string(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.run_seconds
            .get_or_create(&CapabilityLabels {
                capability: capability.to_string(),
            })
            .observe(seconds);
        if loaded_model {
            self.model_loads
                .get_or_create(&ModelLabels {
                    model: model.to_owned(),
                })
                .inc();
        }
    }

    /// Renders every metric, with the GPU read now.
    pub fn render(&self, gpu: &GpuReading) -> String {
        let labels = GpuLabels {
            gpu: gpu.name.clone().unwrap_or_default(),
        };
        if let Some(u) = gpu.utilization {
            self.gpu_utilization
                .get_or_create(&labels)
                .set(f64::from(u) / 100.0);
        }
        let bytes = |mib: u64| i64::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        if let Some(used) = gpu.memory_used {
            self.gpu_used.get_or_create(&labels).set(bytes(used));
        }
        if let Some(total) = gpu.memory_total {
            self.gpu_total.get_or_create(&labels).set(bytes(total));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        out
    }
}
