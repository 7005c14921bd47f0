//! The health monitor (seed section 9): jobs of lost workers go back to the queue.
//!
//! Every heartbeat period it looks for RUNNING jobs whose worker has been silent
//! longer than `missed_heartbeats` periods. Each goes back to the queue with its
//! attempt count kept, or, once it has been dispatched `max_attempts` times,
//! FAILS and is refunded in the same transaction. Transitions are conditional
//! updates, so several scheduler replicas may run the monitor at once: a job a
//! worker completes in the meantime, or another replica already moved, is
//! simply not matched.

use std::sync::Arc;
use std::time::Duration;

use tessera_core::{Millis, Transition};
use tokio::sync::watch;

use crate::config::WorkersConfig;
use crate::store::{Store, StoreError, TransitionChange, TransitionOutcome};

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub requeued: usize,
    pub failed: usize,
}

/// Requeues or fails the running jobs of workers silent for too long at `now`.
pub async fn sweep(
    store: &dyn Store,
    config: &WorkersConfig,
    now: Millis,
) -> Result<Sweep, StoreError> {
    let mut done = Sweep::default();
    let lost = store
        .running_on_lost_workers(now - config.silence_limit_ms())
        .await?;
    for job in lost {
        let worker = job.worker_id.clone().unwrap_or_default();
        let (transition, change) = if job.attempts
            >= i32::try_from(config.max_attempts).unwrap_or(i32::MAX)
        {
            let message = format!(
                "the job was dispatched {} times and its worker was lost each time; tokens refunded",
                job.attempts
            );
            (
                Transition::Fail,
                TransitionChange {
                    now,
                    error: Some(("attempts_exhausted".into(), message)),
                    ..Default::default()
                },
            )
        } else {
            (
                Transition::Requeue,
                TransitionChange {
                    now,
                    ..Default::default()
                },
            )
        };
        if let TransitionOutcome::Applied(job) =
            store.transition(&job.id, transition, &change).await?
        {
            match transition {
                Transition::Fail => {
                    done.failed += 1;
                    tracing::warn!(job_id = %job.id, %worker, attempts = job.attempts, "job failed: attempt limit reached");
                }
                _ => {
                    done.requeued += 1;
                    tracing::warn!(job_id = %job.id, %worker, attempts = job.attempts, "worker lost; job requeued");
                }
            }
        }
    }
    Ok(done)
}

/// Runs [`sweep`] every heartbeat period until `stop` turns true.
pub fn spawn(
    store: Arc<dyn Store>,
    config: WorkersConfig,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = chrono::Utc::now().timestamp_millis();
            if let Err(e) = sweep(&*store, &config, now).await {
                tracing::warn!(error = %e, "health monitor sweep failed; retrying next period");
            }
        }
    })
}
