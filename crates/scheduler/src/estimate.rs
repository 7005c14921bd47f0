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

    /// As [`measured_seconds`](Self::measured_seconds), for one model: its
    /// learned warm run time, else the capability's measured mean.
    pub async fn measured_model_seconds(
        &self,
        store: &dyn Store,
        timings: &Timings,
        c: Capability,
        model: &str,
    ) -> Result<Option<f64>, StoreError> {
        match timings.learned(store).await.model(c, model).run_ms {
            Some(ms) => Ok(Some(ms / 1000.0)),
            None => self.measured_seconds(store, c).await,
        }
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
        Self::queued_on(run_seconds, ahead, 1)
    }

    /// Seconds until a queued job with `ahead` jobs before it is done when
    /// `workers` workers (at least one is assumed) run the queue side by
    /// side: the jobs ahead go in rounds of `workers`, then this one runs.
    pub fn queued_on(run_seconds: f64, ahead: u64, workers: usize) -> u64 {
        let rounds = tessera_core::admission::rounds_ahead(ahead, workers);
        ((rounds as f64 + 1.0) * run_seconds).ceil().max(1.0) as u64
    }

    /// Seconds until a queued job is done: [`queued_on`](Self::queued_on),
    /// plus the model's load when none of the `workers` holds it (`warm`
    /// of them do).
    pub fn queued_cold(
        run_seconds: f64,
        load_seconds: f64,
        ahead: u64,
        workers: usize,
        warm: usize,
    ) -> u64 {
        (Self::start_in(run_seconds, load_seconds, ahead, workers, warm) + run_seconds)
            .ceil()
            .max(1.0) as u64
    }

    /// Seconds until a queued job starts on its engine (the load included
    /// when no worker holds its model): what its estimate promises, and what
    /// the ETA-error metric checks against the job's real start.
    pub fn start_in(
        run_seconds: f64,
        load_seconds: f64,
        ahead: u64,
        workers: usize,
        warm: usize,
    ) -> f64 {
        let rounds = (ahead / workers.max(1) as u64) as f64;
        let load = if warm == 0 {
            load_seconds.max(0.0)
        } else {
            0.0
        };
        rounds * run_seconds.max(0.0) + load
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
        // Side by side: three ahead on two workers is one round, then this one.
        assert_eq!(Estimator::queued_on(30.0, 3, 2), 60);
        assert_eq!(Estimator::queued_on(30.0, 4, 2), 90);
        assert_eq!(Estimator::queued_on(30.0, 1, 4), 30);
        assert_eq!(
            Estimator::queued_on(30.0, 3, 0),
            120,
            "no worker counts as one"
        );
        // A model no ready worker holds pays its load once.
        assert_eq!(Estimator::queued_cold(30.0, 45.2, 3, 2, 0), 106);
        assert_eq!(Estimator::queued_cold(30.0, 45.2, 3, 2, 1), 60);
        assert_eq!(Estimator::queued_cold(30.0, 0.0, 3, 2, 0), 60);
        assert_eq!(Estimator::running(30.0, 0, 10_000), 20);
        assert_eq!(Estimator::running(30.0, 0, 60_000), 1);
    }
}
