//! The health monitor: what no event reports, a sweep finds.
//!
//! Every heartbeat period it looks for
//! - RUNNING jobs whose worker has been silent longer than `missed_heartbeats`
//!   periods: each goes back to the queue with its attempt count kept, or, once
//!   dispatched `max_attempts` times, FAILS and is refunded;
//! - RUNNING jobs past their capability's run timeout: they FAIL, are refunded,
//!   and their worker is told to stop;
//! - QUEUED jobs that no online worker can serve, waiting longer than
//!   `unservable_after_secs`: they FAIL and are refunded instead of waiting forever.
//!
//! Transitions are conditional updates, fenced by worker and attempt where a
//! worker is involved, so several scheduler replicas may sweep at once: a job
//! a worker completes in the meantime, or another replica already moved, is
//! simply not matched.
//!
//! Every change goes through the [`Lifecycle`], which counts it, wakes the
//! dispatcher for jobs back in the queue, and settles the worker registry;
//! the monitor never calls the dispatcher.
//!
//! Silence is only held against a worker when this scheduler could have heard
//! it: the first and the last of these sweeps wait until the scheduler has
//! had its database for a whole silence limit, since it started and since
//! the database last failed or stalled. While the database is down no
//! heartbeat is recorded, so right after it comes back every worker would
//! look lost and every running job would be run again.

use std::sync::Arc;
use std::time::Duration;

use tessera_api::ErrorCode;
use tessera_core::{Millis, Transition};
use tokio::sync::watch;

use crate::config::WorkersConfig;
use crate::lifecycle::Lifecycle;
use crate::store::{Fence, Store, StoreError, TransitionChange, TransitionOutcome};

/// Most unservable jobs failed per model and sweep; the next sweep goes on.
const UNSERVABLE_BATCH: u32 = 500;

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub requeued: usize,
    pub failed: usize,
    pub timed_out: usize,
    pub unservable: usize,
}

/// One sweep at `now`; `heard` says whether this scheduler could have heard
/// every heartbeat of the last silence limit (else workers' silence is not
/// judged: no job is taken back from a silent worker, none failed for want
/// of an online worker).
pub async fn sweep(
    store: &dyn Store,
    config: &WorkersConfig,
    lifecycle: &Lifecycle,
    now: Millis,
    heard: bool,
) -> Result<Sweep, StoreError> {
    let mut done = Sweep::default();
    if heard {
        lost_workers(store, config, lifecycle, now, &mut done).await?;
    }
    run_timeouts(store, config, lifecycle, now, &mut done).await?;
    if heard {
        unservable(store, config, lifecycle, now, &mut done).await?;
    }
    Ok(done)
}

async fn lost_workers(
    store: &dyn Store,
    config: &WorkersConfig,
    lifecycle: &Lifecycle,
    now: Millis,
    done: &mut Sweep,
) -> Result<(), StoreError> {
    let lost = store
        .running_on_lost_workers(now - config.silence_limit_ms())
        .await?;
    for job in lost {
        // Jobs of lost workers are RUNNING, and a RUNNING job has its worker.
        let Some(worker) = job.worker_id.clone() else {
            continue;
        };
        let fence = Fence {
            worker_id: worker.clone(),
            attempt: job.attempts,
        };
        match lifecycle.take_back(&job.id, fence, now).await? {
            Some(Transition::Fail) => {
                done.failed += 1;
                tracing::warn!(job_id = %job.id, %worker, attempts = job.attempts, "job failed: attempt limit reached");
            }
            Some(_) => {
                done.requeued += 1;
                tracing::warn!(job_id = %job.id, %worker, attempts = job.attempts, "worker lost; job requeued");
            }
            None => {}
        }
    }
    Ok(())
}

async fn run_timeouts(
    store: &dyn Store,
    config: &WorkersConfig,
    lifecycle: &Lifecycle,
    now: Millis,
    done: &mut Sweep,
) -> Result<(), StoreError> {
    for job in store.running_jobs().await? {
        let limit =
            i64::try_from(config.run_timeout_secs.of_ms(job.capability)).unwrap_or(i64::MAX);
        let Some(started) = job.started_at else {
            continue;
        };
        if now - started <= limit {
            continue;
        }
        let Some(worker) = job.worker_id.clone() else {
            continue;
        };
        let change = TransitionChange {
            now,
            fence: Some(Fence {
                worker_id: worker.clone(),
                attempt: job.attempts,
            }),
            error: Some((
                ErrorCode::RunTimeout.into(),
                format!(
                    "the job ran longer than the {} s allowed for {}; tokens refunded",
                    limit / 1000,
                    job.capability
                ),
            )),
            ..Default::default()
        };
        if let TransitionOutcome::Applied(failed) =
            lifecycle.apply(&job.id, Transition::Fail, &change).await?
        {
            done.timed_out += 1;
            tracing::warn!(job_id = %job.id, %worker, "job failed: run timeout");
            lifecycle.workers().stop_on_worker(&job);
            lifecycle.workers().forget(&failed.id);
        }
    }
    Ok(())
}

async fn unservable(
    store: &dyn Store,
    config: &WorkersConfig,
    lifecycle: &Lifecycle,
    now: Millis,
    done: &mut Sweep,
) -> Result<(), StoreError> {
    let limit =
        i64::try_from(config.unservable_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    for group in store.queued_groups().await? {
        if now - group.oldest_queued_at <= limit
            || lifecycle
                .workers()
                .serves(group.capability, &group.model, now)
        {
            continue;
        }
        let ids = store
            .queued_before(
                group.capability,
                &group.model,
                now - limit,
                UNSERVABLE_BATCH,
            )
            .await?;
        for id in ids {
            let change = TransitionChange {
                now,
                error: Some((
                    ErrorCode::NoWorker.into(),
                    format!(
                        "no online worker serves {} with {} and the job waited more than {} s; tokens refunded",
                        group.capability,
                        group.model,
                        limit / 1000
                    ),
                )),
                ..Default::default()
            };
            if let TransitionOutcome::Applied(_) =
                lifecycle.apply(&id, Transition::Fail, &change).await?
            {
                done.unservable += 1;
            }
        }
        tracing::warn!(capability = %group.capability, model = %group.model, "jobs no worker serves were failed and refunded");
    }
    Ok(())
}

/// Runs [`sweep`] every heartbeat period (at most every 5 s for short periods)
/// until `stop` turns true. Workers' silence is judged once the database has
/// answered for a whole silence limit, since the start and since it last
/// failed or stalled.
pub fn spawn(
    store: Arc<dyn Store>,
    config: WorkersConfig,
    lifecycle: Lifecycle,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_millis(config.heartbeat_interval_ms.clamp(10, 5_000));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when heartbeats could be recorded, as far as the monitor knows.
        let mut listening_since = Some(chrono::Utc::now().timestamp_millis());
        let stall_ms = i64::try_from(config.heartbeat_interval_ms).unwrap_or(i64::MAX);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // A database that fails or stalls for a heartbeat period may have
            // kept heartbeats from being recorded: silence is judged again
            // only a whole silence limit after it answers promptly. The
            // sweep's clock starts after that answer, so a later stall cannot
            // make a worker look silent either.
            let asked = chrono::Utc::now().timestamp_millis();
            if let Err(e) = store.ping().await {
                if listening_since.take().is_some() {
                    tracing::warn!(error = %e, "the database does not answer; workers' silence is not judged until it has answered for a silence limit");
                }
                continue;
            }
            let now = chrono::Utc::now().timestamp_millis();
            if now - asked > stall_ms {
                listening_since = Some(now);
            }
            let since = *listening_since.get_or_insert(now);
            let heard = now - since >= config.silence_limit_ms();
            if let Err(e) = sweep(&*store, &config, &lifecycle, now, heard).await {
                tracing::warn!(error = %e, "health monitor sweep failed; retrying next period");
                listening_since = None;
            }
        }
    })
}
