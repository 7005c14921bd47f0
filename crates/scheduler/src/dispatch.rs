//! The dispatcher: the passes that give queued jobs to free workers.
//!
//! Dispatch is event-driven: a new job, a heartbeat from an idle worker, a
//! result, or a job handed back wakes one pass (through the
//! [`Lifecycle`]'s wake-up signal), which reads one window on the queue
//! ([`Store::queue_window`], deep enough for every idle online worker),
//! chooses in memory, for each such worker in turn, the job the core policy
//! picks for it (passing over jobs already chosen in the pass), claims them all
//! in one transaction
//! ([`Store::claim_batch`]: conditional QUEUED → RUNNING updates, so two
//! dispatchers can never both start one job) and sends each to its worker's
//! `/run_job`; each claimed job's followers see `Started`
//! ([`Lifecycle::started`]). A slow tick (`workers.dispatch_tick_ms`) is only a safety net.
//!
//! A job the worker does not accept (busy, draining, unreachable) goes back to
//! the queue without counting as an attempt. Which workers are free, and what
//! they serve, is the worker registry's ([`crate::registry`]), which the
//! lifecycle holds; heartbeats reconcile it there. Of the parts that move
//! jobs, the dispatcher knows only the lifecycle, and none of them knows the
//! dispatcher: only `app` wires it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::watch;

use tessera_api::internal::{InputRef, RunJob};
use tessera_api::ApiErrorBody;
use tessera_core::params::JobParams;
use tessera_core::policy::{held_elsewhere, Candidates, Policy};
use tessera_core::{JobId, Transition, WorkerId};

use crate::config::WorkersConfig;
use crate::lifecycle::{now_ms, Lifecycle};
use crate::store::{Fence, JobRecord, Store, TransitionChange};

/// The dispatcher: cheap to clone, one per scheduler.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    lifecycle: Lifecycle,
    config: WorkersConfig,
    policy: Policy,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        lifecycle: Lifecycle,
        config: WorkersConfig,
        policy: Policy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                lifecycle,
                config,
                policy,
            }),
        }
    }

    /// Runs dispatch passes until `stop` turns true.
    pub fn spawn(&self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(this.inner.config.dispatch_tick_ms.max(10));
            loop {
                tokio::select! {
                    _ = this.inner.lifecycle.woken() => {}
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                this.pass().await;
            }
        })
    }

    /// One pass: a claim for every free worker, all at once.
    pub async fn pass(&self) {
        let workers = self.inner.lifecycle.workers();
        let free = workers.claim_free(now_ms());
        if free.is_empty() {
            return;
        }
        // Read one window on the queue deep enough for every free worker, choose
        // a job for each in turn in memory, passing over the jobs chosen for the
        // others, then claim them all in one transaction: one read and one
        // commit per pass, and no dispatcher racing itself for the head of the
        // queue.
        let now = now_ms();
        let ranges: Vec<_> = free.iter().flat_map(|w| w.slot.ranges()).collect();
        let depth = u32::try_from(free.len() + 1).unwrap_or(u32::MAX);
        let window = self.inner.store.queue_window(&ranges, depth).await;
        let learned = self
            .inner
            .lifecycle
            .timings()
            .learned(&*self.inner.store)
            .await;
        let mut chosen: HashSet<JobId> = HashSet::new();
        let mut claims: Vec<(JobId, WorkerId)> = Vec::new();
        match &window {
            Ok(window) => {
                for worker in &free {
                    let worker_id = &worker.worker_id;
                    let left = window.iter().filter(|j| !chosen.contains(&j.id));
                    // The window holds only the head of each range: a model
                    // with more queued jobs than it shows may be held here
                    // when it should not, for the locality wait at most.
                    let held = held_elsewhere(&worker.warm_elsewhere, left.clone());
                    let view = worker.slot.view_with(learned.loads_on(worker_id), &held);
                    let candidates = Candidates::from_queue(left, &view);
                    if let Some((job, reason)) = self.inner.policy.choose(&candidates, now) {
                        tracing::debug!(job_id = %job.id, %worker_id, ?reason, "chosen");
                        chosen.insert(job.id.clone());
                        claims.push((job.id.clone(), worker_id.clone()));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the queue failed; retrying on the next wake-up")
            }
        }
        let claimed = if claims.is_empty() {
            Ok(Vec::new())
        } else {
            self.inner.store.claim_batch(&claims, now).await
        };
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                workers.claims_done(&free, &[]);
                tracing::warn!(error = %e, "claiming failed; retrying on the next wake-up");
                return;
            }
        };
        workers.claims_done(&free, &claimed);
        let lost = claimed.len() < claims.len();
        for job in claimed {
            let Some(worker_id) = job.worker_id.clone() else {
                continue;
            };
            let worker = free.iter().find(|w| w.worker_id == worker_id);
            let loaded = worker.is_some_and(|w| w.slot.loaded_models.contains(&job.model));
            self.inner.lifecycle.metrics().dispatched(&job, !loaded);
            self.inner.lifecycle.started(&job.id, job.attempts);
            let address = worker.map(|w| w.address.clone()).unwrap_or_default();
            let this = self.clone();
            tokio::spawn(async move { this.send(worker_id, address, job).await });
        }
        if lost {
            // Another dispatcher took some of the chosen jobs: look again.
            self.inner.lifecycle.wake();
        }
    }

    /// Sends a claimed job to its worker; hands it back if the worker does not take it.
    async fn send(&self, worker_id: WorkerId, address: String, job: JobRecord) {
        let fence = Fence {
            worker_id: worker_id.clone(),
            attempt: job.attempts,
        };
        let body = match self.run_job_body(&job).await {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "cannot build the job for its worker; handing it back");
                self.hand_back(&job, fence, false).await;
                return;
            }
        };
        let mut request = self
            .inner
            .lifecycle
            .workers()
            .request(&format!("{address}/run_job"))
            .json(&body);
        if let Some(id) = &job.request_id {
            request = request.header(tessera_api::REQUEST_ID, id);
        }
        let sent = request.send().await;
        let refusal = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                let status = r.status();
                let code = r
                    .json::<ApiErrorBody>()
                    .await
                    .map(|b| b.error.code)
                    .unwrap_or_default();
                Some((status, code))
            }
            Err(e) => {
                tracing::warn!(job_id = %job.id, %worker_id, error = %e, "worker unreachable; job handed back");
                None
            }
        };
        if let Some((status, code)) = &refusal {
            tracing::warn!(job_id = %job.id, %worker_id, %status, %code, "worker refused the job; handed back");
        }
        let worker_at_fault = !matches!(&refusal, Some((StatusCode::UNPROCESSABLE_ENTITY, c)) if c == "invalid_params");
        if worker_at_fault {
            self.inner.lifecycle.workers().suspect(&worker_id);
            self.hand_back(&job, fence, true).await;
        } else {
            // The worker found the job's parameters unusable: another attempt would too.
            let change = TransitionChange {
                now: now_ms(),
                fence: Some(fence),
                error: Some((
                    "invalid_params".into(),
                    "the worker could not read the job's parameters; tokens refunded".into(),
                )),
                ..Default::default()
            };
            if let Err(e) = self
                .inner
                .lifecycle
                .apply(&job.id, Transition::Fail, &change)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %e, "could not fail the job");
            }
            self.inner.lifecycle.released(&worker_id, &job.id);
        }
    }

    async fn run_job_body(&self, job: &JobRecord) -> anyhow::Result<RunJob> {
        let mut inputs = Vec::new();
        if let JobParams::SpeechToText(p) = &job.params {
            let input = self
                .inner
                .store
                .get_input(&p.input_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("input {} is gone", p.input_id))?;
            inputs.push(InputRef {
                input_id: input.id,
                content_type: input.content_type,
                size: input.size,
            });
        }
        Ok(RunJob {
            job_id: job.id.clone(),
            attempt: job.attempts,
            capability: job.capability,
            model_id: job.model.clone(),
            params: job.params.clone(),
            inputs,
            timeout_ms: self.inner.config.run_timeout_secs.of_ms(job.capability),
            request_id: job.request_id.clone(),
        })
    }

    /// Puts a job the worker never started back in the queue; `release` does
    /// not count the attempt.
    async fn hand_back(&self, job: &JobRecord, fence: Fence, release: bool) {
        let worker_id = fence.worker_id.clone();
        let change = TransitionChange {
            now: now_ms(),
            fence: Some(fence),
            release,
            ..Default::default()
        };
        match self
            .inner
            .lifecycle
            .apply(&job.id, Transition::Requeue, &change)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "could not hand the job back; the health monitor will")
            }
        }
        self.inner
            .lifecycle
            .workers()
            .handed_back(&worker_id, &job.id);
        self.inner.lifecycle.wake();
    }
}
