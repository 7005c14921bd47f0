//! A job's life after its creation: state changes, and what follows them.
//!
//! Three parts of the scheduler move jobs: the HTTP handlers (a job created,
//! cancelled, or ended by its worker's result), the dispatcher (a job a
//! worker would not take, handed back) and the health monitor (jobs of lost
//! workers, run timeouts, jobs nobody serves). Each change must be counted in
//! the metrics, may need a dispatch pass (a job back in the queue, a worker
//! free again) and may need the worker registry settled (a job taken back is
//! no longer believed to run anywhere). This module does all of that in one
//! place, so those three parts depend on it and never on each other: the
//! dispatcher waits on the lifecycle's wake-up signal instead of being called
//! by the handlers, and the monitor takes jobs back through the lifecycle
//! instead of through the dispatcher.
//!
//! The lifecycle also tells a job's followers what happens to it
//! ([`Lifecycle::follow`], [`crate::follow`]): `Started` when the dispatcher
//! claims it ([`Lifecycle::started`]), and `Ended` from every transition to an
//! end state it applies, so no end can skip the followers.
//!
//! Every change of a job's state after its creation goes through
//! [`Lifecycle::apply`] (or [`Lifecycle::take_back`], which applies one),
//! except the dispatcher's claim, a batch of conditional QUEUED → RUNNING
//! updates it counts itself. Transitions are the store's conditional updates,
//! so a change that lost a race to another replica applies nothing and counts
//! nothing.

use std::sync::Arc;

use tokio::sync::{broadcast, Notify};

use tessera_api::internal::{Heartbeat, WorkerStatus};
use tessera_api::ErrorCode;
use tessera_core::{JobId, Millis, Transition};

use crate::config::WorkersConfig;
use crate::follow::Follows;
pub use crate::follow::{Following, JobEvent, Refused};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{Fence, JobRecord, Store, StoreError, TransitionChange, TransitionOutcome};
use crate::timings::Timings;

/// The wall clock in milliseconds; the only place the scheduler reads time
/// for its records.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// State changes and their consequences; cheap to clone, one per scheduler.
#[derive(Clone)]
pub struct Lifecycle(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    metrics: Metrics,
    workers: Registry,
    /// Dispatches of one job before a lost worker fails it.
    max_attempts: u32,
    /// Asks the dispatcher for a pass.
    wake: Notify,
    /// Asks the webhook deliverer to look for due deliveries.
    hooks: Notify,
    /// Run and load times learned from the workers' results.
    timings: Timings,
    /// The followed jobs' event streams.
    follows: Follows,
}

impl Lifecycle {
    /// A lifecycle over `store`, counting in `metrics`, with an empty worker
    /// registry; `token` is the internal token sent to workers.
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Metrics,
        config: &WorkersConfig,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        Ok(Self(Arc::new(Inner {
            store,
            metrics,
            workers: Registry::new(config.clone(), token)?,
            max_attempts: config.max_attempts,
            wake: Notify::new(),
            hooks: Notify::new(),
            timings: Timings::new(),
            follows: Follows::default(),
        })))
    }

    /// The metrics every state change is counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Run and load times learned from the workers' results.
    pub fn timings(&self) -> &Timings {
        &self.0.timings
    }

    /// The scheduler's picture of its workers.
    pub fn workers(&self) -> &Registry {
        &self.0.workers
    }

    /// Rebuilds the worker registry from the database after a restart.
    pub async fn restore(&self) -> Result<(), StoreError> {
        self.0.workers.restore(&*self.0.store).await
    }

    /// A job was created (not a replay of an idempotent retry): counted, and
    /// a dispatch pass asked for.
    pub fn created(&self, job: &JobRecord) {
        self.0.metrics.created(job);
        self.wake();
    }

    /// Applies a transition through the store and counts it if it applied; a
    /// job back in the queue wakes the dispatcher.
    pub async fn apply(
        &self,
        id: &JobId,
        t: Transition,
        change: &TransitionChange,
    ) -> Result<TransitionOutcome, StoreError> {
        let outcome = self.transition(id, t, change).await?;
        if t == Transition::Requeue && matches!(outcome, TransitionOutcome::Applied(_)) {
            self.wake();
        }
        Ok(outcome)
    }

    /// Applies, counts and tells the followers, without the wake-up.
    async fn transition(
        &self,
        id: &JobId,
        t: Transition,
        change: &TransitionChange,
    ) -> Result<TransitionOutcome, StoreError> {
        let outcome = self.0.store.transition(id, t, change).await?;
        if let TransitionOutcome::Applied(job) = &outcome {
            self.0.metrics.transitioned(t, job);
            if job.status.is_terminal() {
                self.0.follows.ended(id, job.status);
                if job.callback_url.is_some() {
                    // Its webhook delivery was written with the end: due now.
                    self.0.hooks.notify_one();
                }
            } else if t == Transition::Requeue {
                self.0.follows.requeued(id);
            }
        }
        Ok(outcome)
    }

    /// Events of this job from now on. In memory, per scheduler replica
    /// (see [`crate::follow`]): a follower must also re-read the job from the
    /// store, at least every second, to see an end applied elsewhere.
    pub fn follow(&self, job: &JobId) -> broadcast::Receiver<JobEvent> {
        self.0.follows.follow(job)
    }

    /// The current attempt's output text so far, and the events after it:
    /// for a follower that joins a running job, or one that fell behind.
    pub fn follow_output(&self, job: &JobId) -> Following {
        self.0.follows.follow_output(job)
    }

    /// The dispatcher claimed `job` for attempt `attempt`: its followers see `Started`.
    pub fn started(&self, job: &JobId, attempt: i32) {
        self.0.follows.started(job, attempt);
    }

    /// A running attempt's progress, recorded: its followers see it.
    pub fn progressed(&self, job: &JobId, progress: f32) {
        self.0.follows.progressed(job, progress);
    }

    /// An output piece of the job's current attempt (the caller fenced it):
    /// the new part goes to the followers and is counted. Answers the bytes
    /// of the attempt's text held after it.
    pub fn output(&self, job: &JobRecord, offset: usize, text: &str) -> Result<usize, Refused> {
        let (held, added) = self.0.follows.output(&job.id, job.attempts, offset, text)?;
        if added > 0 {
            self.0.metrics.streamed(job.capability, added);
        }
        Ok(held)
    }

    /// Turns true when the scheduler stops: a follower ends its stream.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.follows.stopping()
    }

    /// The streams of followed jobs held now (see [`crate::follow`]).
    pub fn follows(&self) -> &Follows {
        &self.0.follows
    }

    /// Takes a job back from a worker that lost it (fell silent, or restarted
    /// without it): back to the queue, or, once dispatched `max_attempts` times,
    /// FAILED and refunded. Fenced on the worker and attempt, so a job that moved
    /// on meanwhile is left alone. A job taken back is no longer believed to
    /// run on any worker. Answers the transition applied, if any.
    pub async fn take_back(
        &self,
        job_id: &JobId,
        fence: Fence,
        now: Millis,
    ) -> Result<Option<Transition>, StoreError> {
        let attempts = fence.attempt;
        let exhausted = attempts >= i32::try_from(self.0.max_attempts).unwrap_or(i32::MAX);
        let (transition, error) = if exhausted {
            let message = format!(
                "the job was dispatched {attempts} times and its worker was lost each time; tokens refunded"
            );
            (
                Transition::Fail,
                Some((ErrorCode::AttemptsExhausted.into(), message)),
            )
        } else {
            (Transition::Requeue, None)
        };
        let change = TransitionChange {
            now,
            error,
            fence: Some(fence),
            ..Default::default()
        };
        let outcome = self.transition(job_id, transition, &change).await?;
        let TransitionOutcome::Applied(_) = outcome else {
            return Ok(None);
        };
        self.0.workers.forget(job_id);
        if transition == Transition::Requeue {
            self.wake();
        }
        Ok(Some(transition))
    }

    /// A worker's heartbeat (already recorded in the store): the registry is
    /// reconciled with the database ([`Registry::heartbeat`]), the jobs the
    /// worker lost are taken back, and an idle worker, or one whose lost jobs
    /// were taken back, wakes the dispatcher.
    /// Answers the jobs the worker should stop.
    pub async fn heartbeat(&self, hb: &Heartbeat, now: Millis) -> Vec<JobId> {
        let Some(reconciled) = self.0.workers.heartbeat(&*self.0.store, hb, now).await else {
            return Vec::new();
        };
        let mut taken_back = false;
        for job in reconciled.lost {
            tracing::warn!(worker_id = %hb.worker_id, job_id = %job.id, attempt = job.attempts, "the worker does not run a job dispatched to it; requeueing it");
            let fence = Fence {
                worker_id: hb.worker_id.clone(),
                attempt: job.attempts,
            };
            match self.take_back(&job.id, fence, now).await {
                Ok(Some(_)) => taken_back = true,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "could not requeue a lost job; the next heartbeat will")
                }
            }
        }
        if taken_back || hb.status == WorkerStatus::Idle {
            self.wake();
        }
        reconciled.cancel
    }

    /// A result for `job_id` arrived from `worker_id`, accepted or not: the
    /// worker is free again, and the dispatcher is woken.
    pub fn released(&self, worker_id: &str, job_id: &JobId) {
        self.0.workers.released(worker_id, job_id);
        self.wake();
    }

    /// Asks for a dispatch pass soon.
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Resolves when a job with a webhook ended here (for the webhook
    /// deliverer).
    pub async fn webhooks_due(&self) {
        self.0.hooks.notified().await;
    }

    /// Resolves when a dispatch pass was asked for (for the dispatcher).
    pub async fn woken(&self) {
        self.0.wake.notified().await;
    }
}
