//! Run and load times learned from what workers report.
//!
//! Every result carries what the engine's run took and whether it loaded the
//! job's model first ([`RunTiming`]). The store keeps, per worker, capability
//! and model, a running mean of warm runs and one of cold runs
//! ([`crate::store::Timings`]); the load is their difference. Two parts of
//! the scheduler read them, through one snapshot refreshed every few
//! seconds ([`Timings::learned`]):
//!
//! - the queue policy: a higher plan's job is passed over for a warm one no
//!   longer than the load the jump saves on that worker
//!   ([`tessera_core::policy::WorkerView::load_ms`]);
//! - the estimate a job shows: the model's warm run time across workers,
//!   plus its load when no worker ready for it holds it.
//!
//! (Admission and the drain of the queue ahead use the capability's mean
//! time a job holds a worker, loads included, as the simulator does.)
//!
//! Until a model has warm runs, the estimator's capability mean (from
//! completed jobs) or its configured default stands in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_api::internal::RunTiming;
use tessera_core::{Capability, Millis, WorkerId};

use crate::store::{Store, StoreError, TimingRecord};

/// How long a snapshot serves before it is read again.
const REFRESH: Duration = Duration::from_secs(5);

/// What one model takes on the workers that ran it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelTimes {
    /// Mean warm run across workers, weighted by their runs, milliseconds.
    pub run_ms: Option<f64>,
    /// Mean load across workers that have both kinds of runs, weighted by
    /// their cold runs, milliseconds.
    pub load_ms: Option<f64>,
}

/// A snapshot of the learned timings.
#[derive(Debug, Default)]
pub struct Learned {
    /// Per worker: each model's load time there.
    loads: HashMap<WorkerId, Vec<(String, Millis)>>,
    /// Per capability and model, across workers.
    models: HashMap<(Capability, String), ModelTimes>,
}

impl Learned {
    pub fn from_records(records: &[TimingRecord]) -> Self {
        let mut loads: HashMap<WorkerId, Vec<(String, Millis)>> = HashMap::new();
        // (Σ warm × runs, Σ runs, Σ load × cold runs, Σ cold runs)
        let mut sums: HashMap<(Capability, String), (f64, f64, f64, f64)> = HashMap::new();
        for r in records {
            let sum = sums
                .entry((r.capability, r.model.clone()))
                .or_insert((0.0, 0.0, 0.0, 0.0));
            if let Some(warm) = r.warm_ms.filter(|_| r.warm_runs > 0) {
                sum.0 += warm * r.warm_runs as f64;
                sum.1 += r.warm_runs as f64;
                if let Some(cold) = r.cold_ms.filter(|_| r.cold_runs > 0) {
                    let load = (cold - warm).max(0.0);
                    sum.2 += load * r.cold_runs as f64;
                    sum.3 += r.cold_runs as f64;
                    loads
                        .entry(r.worker_id.clone())
                        .or_default()
                        .push((r.model.clone(), load.round() as Millis));
                }
            }
        }
        let models = sums
            .into_iter()
            .map(|(k, (warm, runs, load, loads))| {
                let times = ModelTimes {
                    run_ms: (runs > 0.0).then(|| warm / runs),
                    load_ms: (loads > 0.0).then(|| load / loads),
                };
                (k, times)
            })
            .collect();
        Self { loads, models }
    }

    /// Each model's learned load time on `worker`, for the queue policy.
    pub fn loads_on(&self, worker: &WorkerId) -> &[(String, Millis)] {
        self.loads.get(worker).map_or(&[], Vec::as_slice)
    }

    /// What `model` takes across the workers that ran it.
    pub fn model(&self, capability: Capability, model: &str) -> ModelTimes {
        self.models
            .get(&(capability, model.to_owned()))
            .copied()
            .unwrap_or_default()
    }
}

/// The learned timings: recorded as results come, read as a snapshot.
#[derive(Default)]
pub struct Timings {
    cache: Mutex<Option<(Arc<Learned>, Instant)>>,
}

impl Timings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one run of `model` on `worker_id`; the next read sees it.
    pub async fn learn(
        &self,
        store: &dyn Store,
        worker_id: &WorkerId,
        capability: Capability,
        model: &str,
        timing: RunTiming,
        now: Millis,
    ) -> Result<(), StoreError> {
        store
            .learn_timing(
                worker_id,
                capability,
                model,
                timing.engine_ms,
                timing.model_load,
                now,
            )
            .await?;
        *self.lock() = None;
        Ok(())
    }

    /// The current snapshot, read again when older than a few seconds. A
    /// failed read serves the last snapshot (or none): timings are advice.
    pub async fn learned(&self, store: &dyn Store) -> Arc<Learned> {
        let cached = self.lock().clone();
        if let Some((learned, at)) = &cached {
            if at.elapsed() < REFRESH {
                return learned.clone();
            }
        }
        match store.timings().await {
            Ok(records) => {
                let learned = Arc::new(Learned::from_records(&records));
                *self.lock() = Some((learned.clone(), Instant::now()));
                learned
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the learned timings failed");
                cached.map(|(l, _)| l).unwrap_or_default()
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Learned>, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(worker: &str, model: &str, warm: (f64, i64), cold: (f64, i64)) -> TimingRecord {
        TimingRecord {
            worker_id: worker.parse().unwrap(),
            capability: Capability::Image,
            model: model.into(),
            warm_ms: (warm.1 > 0).then_some(warm.0),
            warm_runs: warm.1,
            cold_ms: (cold.1 > 0).then_some(cold.0),
            cold_runs: cold.1,
            updated_at: 0,
        }
    }

    #[test]
    fn loads_are_cold_less_warm_and_models_are_weighted_by_runs() {
        let learned = Learned::from_records(&[
            record("gpu-0", "sdxl", (20_000.0, 3), (65_000.0, 1)),
            record("gpu-1", "sdxl", (30_000.0, 1), (60_000.0, 3)),
            // Cold runs only: no load can be told apart, and no warm time.
            record("gpu-1", "flux", (0.0, 0), (90_000.0, 2)),
            // Faster cold than warm (noise): no negative load.
            record("gpu-0", "sd15", (9_000.0, 2), (8_000.0, 1)),
        ]);
        let w0: WorkerId = "gpu-0".parse().unwrap();
        let w1: WorkerId = "gpu-1".parse().unwrap();
        assert_eq!(
            learned.loads_on(&w0),
            &[("sdxl".to_owned(), 45_000), ("sd15".to_owned(), 0)]
        );
        assert_eq!(learned.loads_on(&w1), &[("sdxl".to_owned(), 30_000)]);
        assert_eq!(learned.loads_on(&"gpu-9".parse().unwrap()), &[]);
        let sdxl = learned.model(Capability::Image, "sdxl");
        assert_eq!(sdxl.run_ms, Some(22_500.0));
        // 45 s once, 30 s three times.
        assert_eq!(sdxl.load_ms, Some(33_750.0));
        assert_eq!(
            learned.model(Capability::Image, "flux"),
            ModelTimes::default()
        );
        assert_eq!(
            learned.model(Capability::Video, "sdxl"),
            ModelTimes::default()
        );
    }
}
