//! Learned run and load times: what each worker's engine runs of each model
//! have taken, as the workers report them with their results
//! ([`crate::timings`] turns them into estimates).

use async_trait::async_trait;

use tessera_core::{Capability, Millis, WorkerId};

use super::StoreError;

/// What one worker's runs of one model have taken.
#[derive(Clone, Debug, PartialEq)]
pub struct TimingRecord {
    pub worker_id: WorkerId,
    pub capability: Capability,
    pub model: String,
    /// Running mean of runs that found the model loaded, milliseconds.
    pub warm_ms: Option<f64>,
    pub warm_runs: i64,
    /// Running mean of runs that loaded the model first, milliseconds.
    pub cold_ms: Option<f64>,
    pub cold_runs: i64,
    pub updated_at: Millis,
}

/// How many runs make a plain mean before it becomes a moving one: each
/// later run moves it a fifth of the way, so a worker that slows down (or a
/// model swapped for a bigger one) shows in about five runs.
pub const MEAN_OVER: i64 = 5;

/// Recording and reading learned timings.
#[async_trait]
pub trait Timings {
    /// Adds one engine run of `engine_ms` to the worker's timings of the
    /// model: a cold run (`model_load`) to the loads, else to the warm runs.
    async fn learn_timing(
        &self,
        worker_id: &WorkerId,
        capability: Capability,
        model: &str,
        engine_ms: u64,
        model_load: bool,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Every worker's timings (a row per worker, capability and model).
    async fn timings(&self) -> Result<Vec<TimingRecord>, StoreError>;
}

/// Implements [`Timings`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_timings {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{Capability, Millis, WorkerId};

            use $crate::store::rows::{capability_str, corrupt};
            use $crate::store::timings::MEAN_OVER;
            use $crate::store::{StoreError, TimingRecord, Timings};

            #[async_trait::async_trait]
            impl Timings for $store {
                async fn learn_timing(
                    &self,
                    worker_id: &WorkerId,
                    capability: Capability,
                    model: &str,
                    engine_ms: u64,
                    model_load: bool,
                    now: Millis,
                ) -> Result<(), StoreError> {
                    let (mean, runs) = if model_load {
                        ("cold_ms", "cold_runs")
                    } else {
                        ("warm_ms", "warm_runs")
                    };
                    // A plain mean over the first MEAN_OVER runs, a moving one after.
                    let sql = format!(
                        "INSERT INTO model_timings \
                           (worker_id, capability, model, {mean}, {runs}, updated_at) \
                         VALUES ($1, $2, $3, $4, 1, $5) \
                         ON CONFLICT (worker_id, capability, model) DO UPDATE SET \
                           {mean} = CASE WHEN model_timings.{mean} IS NULL THEN excluded.{mean} \
                             ELSE model_timings.{mean} + (excluded.{mean} - model_timings.{mean}) \
                               / (CASE WHEN model_timings.{runs} < {n} \
                                  THEN model_timings.{runs} + 1 ELSE {n} END) END, \
                           {runs} = model_timings.{runs} + 1, \
                           updated_at = excluded.updated_at",
                        n = MEAN_OVER,
                    );
                    sqlx::query(&sql)
                        .bind(worker_id.as_str())
                        .bind(capability_str(capability))
                        .bind(model)
                        .bind(engine_ms as f64)
                        .bind(now)
                        .execute(self.writer())
                        .await?;
                    Ok(())
                }

                async fn timings(&self) -> Result<Vec<TimingRecord>, StoreError> {
                    #[allow(clippy::type_complexity)]
                    let rows: Vec<(String, String, String, Option<f64>, i64, Option<f64>, i64, i64)> =
                        sqlx::query_as(
                            "SELECT worker_id, capability, model, warm_ms, warm_runs, \
                               cold_ms, cold_runs, updated_at \
                             FROM model_timings ORDER BY worker_id, capability, model",
                        )
                        .fetch_all(self.reader())
                        .await?;
                    rows.into_iter()
                        .map(|(w, c, model, warm_ms, warm_runs, cold_ms, cold_runs, at)| {
                            Ok(TimingRecord {
                                worker_id: w.parse().map_err(|_| corrupt("worker id", &w))?,
                                capability: c.parse().map_err(|_| corrupt("capability", &c))?,
                                model,
                                warm_ms,
                                warm_runs,
                                cold_ms,
                                cold_runs,
                                updated_at: at,
                            })
                        })
                        .collect()
                }
            }
        };
    };
}

pub(crate) use impl_timings;
