//! Time estimates that improve as real run times accrue.
//!
//! A model's run time is what its workers' warm runs have taken
//! ([`crate::timings`]), and its load what their cold runs took beyond that.
//! Until a model has warm runs, the capability's mean stands in: the mean of
//! the latest `sample_size` completed jobs (start to end), or the configured
//! default before any completed. The capability mean is cached for a few
//! seconds: an estimate is advice, and a status poll should not cost a scan.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_core::{Capability, Millis};

use crate::config::EstimateConfig;
use crate::registry::Capacity;
use crate::store::{Store, StoreError};
use crate::timings::Timings;

const REFRESH: Duration = Duration::from_secs(5);

pub struct Estimator {
    config: EstimateConfig,
    /// Per capability: the run time, whether it was measured, and when.
    cache: Mutex<HashMap<Capability, (f64, bool, Instant)>>,
}

impl Estimator {
    pub fn new(config: EstimateConfig) -> Self {
        Self {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Expected run time of one job, in seconds.
    pub async fn run_seconds(&self, store: &dyn Store, c: Capability) -> Result<f64, StoreError> {
        Ok(self.mean(store, c).await?.0)
    }

    /// The measured mean run time of one job, in seconds; `None` while no job
    /// of the capability has completed (the default is only assumed).
    pub async fn measured_seconds(
        &self,
        store: &dyn Store,
        c: Capability,
    ) -> Result<Option<f64>, StoreError> {
        let (secs, measured) = self.mean(store, c).await?;
        Ok(measured.then_some(secs))
    }

    /// A job of `model`'s expected run time and, where learned, its load
    /// time, in seconds: `(run, load)`. The run is the model's learned warm
    /// run time, else the capability's mean; the load 0 until learned.
    pub async fn model_seconds(
        &self,
        store: &dyn Store,
        timings: &Timings,
        c: Capability,
        model: &str,
    ) -> Result<(f64, f64), StoreError> {
        let learned = timings.learned(store).await.model(c, model);
        let run = match learned.run_ms {
            Some(ms) => ms / 1000.0,
            None => self.run_seconds(store, c).await?,
        };
        Ok((run, learned.load_ms.unwrap_or(0.0) / 1000.0))
    }

    async fn mean(&self, store: &dyn Store, c: Capability) -> Result<(f64, bool), StoreError> {
        if let Some((secs, measured, at)) =
            self.cache.lock().expect("estimator lock").get(&c).copied()
        {
            if at.elapsed() < REFRESH {
                return Ok((secs, measured));
            }
        }
        let samples = store.recent_run_times(c, self.config.sample_size).await?;
        let measured = !samples.is_empty();
        let secs = if measured {
            samples.iter().map(|&ms| ms.max(0) as f64).sum::<f64>() / samples.len() as f64 / 1000.0
        } else {
            self.config.default_seconds(c)
        };
        self.cache
            .lock()
            .expect("estimator lock")
            .insert(c, (secs, measured, Instant::now()));
        Ok((secs, measured))
    }

    /// Seconds until a queued job with `ahead` jobs before it is done, on
    /// one worker.
    pub fn queued(run_seconds: f64, ahead: u64) -> u64 {
        ((ahead as f64 + 1.0) * run_seconds).ceil().max(1.0) as u64
    }

    /// Seconds until a queued job starts on its engine: free workers take
    /// the jobs ahead at once, the rest wait for busy ones
    /// ([`tessera_core::admission::start_in`]); plus the model's load when
    /// none of the workers holds it. What its estimate promises, and what
    /// the ETA-error metric checks against the job's real start.
    /// `drain_seconds` is how long a job holds a worker on average (the
    /// capability's mean, loads included).
    pub fn start_in(drain_seconds: f64, load_seconds: f64, ahead: u64, capacity: Capacity) -> f64 {
        let start =
            tessera_core::admission::start_in(ahead, capacity.ready, capacity.idle, drain_seconds);
        let load = if capacity.warm == 0 {
            load_seconds.max(0.0)
        } else {
            0.0
        };
        start + load
    }

    /// Seconds until a running job started at `started_at` is done.
    pub fn running(run_seconds: f64, started_at: Millis, now: Millis) -> u64 {
        let elapsed = (now - started_at).max(0) as f64 / 1000.0;
        (run_seconds - elapsed).ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_scale_with_the_queue_and_never_reach_zero() {
        assert_eq!(Estimator::queued(30.0, 0), 30);
        assert_eq!(Estimator::queued(30.0, 3), 120);
        assert_eq!(Estimator::queued(0.0, 3), 1);
        let busy = |ready, warm| Capacity {
            ready,
            warm,
            idle: 0,
        };
        // Two busy workers: the 3 jobs ahead and this one start as they free
        // up, one every 15 s; a model no ready worker holds pays its load once.
        assert_eq!(Estimator::start_in(30.0, 45.0, 3, busy(2, 0)), 105.0);
        assert_eq!(Estimator::start_in(30.0, 45.0, 3, busy(2, 1)), 60.0);
        // A free worker for each job ahead and this one: it starts at once.
        let free = Capacity {
            ready: 4,
            warm: 4,
            idle: 4,
        };
        assert_eq!(Estimator::start_in(30.0, 45.0, 3, free), 0.0);
        assert_eq!(Estimator::start_in(30.0, 45.0, 4, free), 7.5);
        assert_eq!(Estimator::running(30.0, 0, 10_000), 20);
        assert_eq!(Estimator::running(30.0, 0, 60_000), 1);
    }
}
