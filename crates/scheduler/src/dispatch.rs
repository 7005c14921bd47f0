//! The dispatcher and its worker registry (seed sections 5.2, 7.2 and 9).
//!
//! The registry is the scheduler's picture of its workers: what each serves,
//! whether it is online, and which job this scheduler gave it. Heartbeats feed
//! it; a restart rebuilds it from the database (workers, and RUNNING jobs with
//! their worker), so nothing running is forgotten.
//!
//! Dispatch is event-driven: a new job, a heartbeat from an idle worker, a
//! result, or a job handed back wakes one pass, which reads one window on the
//! queue ([`Store::queue_window`], deep enough for every idle online worker),
//! chooses in memory, for each such worker in turn, the job the core policy
//! picks for it (passing over jobs already chosen in the pass), claims them all
//! in one transaction
//! ([`Store::claim_batch`]: conditional QUEUED → RUNNING updates, so two
//! dispatchers can never both start one job) and sends each to its worker's
//! `/run_job`. A slow tick (`workers.dispatch_tick_ms`) is only a safety net.
//!
//! A job the worker does not accept (busy, draining, unreachable) goes back to
//! the queue without counting as an attempt. Heartbeats reconcile both ways,
//! against the database where the worker's report and the registry disagree,
//! so that replicas dispatching to the same workers see each other's
//! dispatches: a worker running a job the scheduler no longer wants is told
//! to cancel it; a job the database has running on a worker that does not
//! name it was lost (the worker restarted, or the replica that claimed it died
//! before sending it), and goes back to the queue; a worker whose job ended
//! through another replica is free.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::{watch, Notify};

use tessera_api::internal::{CancelJob, Heartbeat, InputRef, RunJob, WorkerStatus};
use tessera_api::ApiErrorBody;
use tessera_core::params::JobParams;
use tessera_core::policy::{Candidates, Policy};
use tessera_core::{JobId, Millis, Transition};

use crate::config::WorkersConfig;
use crate::http::now_ms;
use crate::metrics::Metrics;
use crate::store::{Fence, JobRecord, Store, TransitionChange, WorkerSlot};

/// A job the database has running on a worker that the worker does not name
/// this long after its dispatch (or twice the dispatch timeout, if longer) was
/// lost: its send is over by then.
const LOST_JOB_GRACE_MS: Millis = 10_000;

/// The dispatcher: cheap to clone, one per scheduler.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    metrics: Metrics,
    config: WorkersConfig,
    policy: Policy,
    token: Option<String>,
    http: reqwest::Client,
    workers: Mutex<HashMap<String, Entry>>,
    wake: Notify,
}

#[derive(Clone, Debug)]
struct Entry {
    slot: WorkerSlot,
    address: String,
    status: WorkerStatus,
    last_seen: Millis,
    /// The job this scheduler believes the worker runs.
    assigned: Option<Assignment>,
    /// A claim for this worker is in flight.
    claiming: bool,
    /// The worker did not take the last job it was sent; wait for its next heartbeat.
    suspect: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Assignment {
    job_id: JobId,
    attempt: i32,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Metrics,
        config: WorkersConfig,
        policy: Policy,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.dispatch_timeout_ms.max(1)))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                config,
                policy,
                token,
                http,
                workers: Mutex::new(HashMap::new()),
                wake: Notify::new(),
            }),
        })
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the registry from the database: after a restart, workers seen
    /// recently and the jobs they were running.
    pub async fn restore(&self) -> Result<(), crate::store::StoreError> {
        let workers = self.inner.store.list_workers().await?;
        let running = self.inner.store.running_jobs().await?;
        let mut map = self.workers();
        for w in workers {
            let hb = w.heartbeat;
            map.insert(
                hb.worker_id.clone(),
                Entry {
                    slot: slot_of(&hb),
                    address: hb.address,
                    status: hb.status,
                    last_seen: w.last_seen_at,
                    assigned: None,
                    claiming: false,
                    suspect: false,
                },
            );
        }
        for job in running {
            if let Some(entry) = job.worker_id.as_ref().and_then(|w| map.get_mut(w)) {
                entry.assigned = Some(Assignment {
                    job_id: job.id.clone(),
                    attempt: job.attempts,
                });
            }
        }
        Ok(())
    }

    /// The metrics every state change is counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Asks for a dispatch pass soon.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Records a heartbeat and reconciles: returns the jobs the worker should stop.
    ///
    /// The report is checked against the database, which holds the dispatches
    /// of every replica (one indexed read of the worker's running jobs):
    /// - the job the worker names is adopted if the database has it running
    ///   there (another replica sent it, or this one restarted), else the
    ///   worker is told to stop it;
    /// - a job the database has running on the worker that the worker does not
    ///   name was lost, and after a grace for sends still in flight goes back
    ///   to the queue, whichever replica dispatched it: the worker never got
    ///   it (the replica that claimed it crashed before sending it, or could
    ///   not hand back a job the worker refused) or forgot it (it restarted);
    /// - a job this scheduler believed the worker runs that is no longer
    ///   running there ended (its result may have reached another replica):
    ///   the worker is free.
    pub async fn heartbeat(&self, hb: &Heartbeat, now: Millis) -> Vec<JobId> {
        let believed = {
            let mut map = self.workers();
            let entry = map.entry(hb.worker_id.clone()).or_insert_with(|| Entry {
                slot: WorkerSlot::default(),
                address: String::new(),
                status: hb.status,
                last_seen: now,
                assigned: None,
                claiming: false,
                suspect: false,
            });
            entry.slot = slot_of(hb);
            entry.address = hb.address.clone();
            entry.status = hb.status;
            entry.last_seen = now;
            entry.suspect = false;
            entry.assigned.clone()
        };
        // A busy worker that names no job tells nothing about what it runs.
        let conclusive = hb.current_job.is_some() || hb.status != WorkerStatus::Busy;
        if !conclusive {
            return Vec::new();
        }
        let running = match self.inner.store.running_on_worker(&hb.worker_id).await {
            Ok(running) => running,
            Err(e) => {
                tracing::warn!(worker_id = %hb.worker_id, error = %e, "cannot reconcile a heartbeat now");
                return Vec::new();
            }
        };
        let mut cancel = Vec::new();
        let mut adopted = None;
        if let Some(current) = &hb.current_job {
            match running.iter().find(|j| &j.id == current) {
                Some(job) => {
                    adopted = Some(Assignment {
                        job_id: job.id.clone(),
                        attempt: job.attempts,
                    })
                }
                None => cancel.push(current.clone()),
            }
        }
        let lost: Vec<&JobRecord> = running
            .iter()
            .filter(|j| Some(&j.id) != hb.current_job.as_ref())
            .filter(|j| now - j.started_at.unwrap_or(now) > self.lost_job_grace())
            .collect();
        if let Some(entry) = self.workers().get_mut(&hb.worker_id) {
            // Unless this scheduler claimed a job for the worker meanwhile.
            if entry.assigned == believed {
                entry.assigned = adopted.or_else(|| {
                    believed.filter(|b| {
                        running
                            .iter()
                            .any(|j| j.id == b.job_id && j.attempts == b.attempt)
                            && !lost.iter().any(|j| j.id == b.job_id)
                    })
                });
            }
        }
        let mut requeued = false;
        for job in lost {
            tracing::warn!(worker_id = %hb.worker_id, job_id = %job.id, attempt = job.attempts, "the worker does not run a job dispatched to it; requeueing it");
            let fence = Fence {
                worker_id: hb.worker_id.clone(),
                attempt: job.attempts,
            };
            match crate::monitor::take_back(
                &*self.inner.store,
                &self.inner.metrics,
                &self.inner.config,
                &job.id,
                fence,
                now,
            )
            .await
            {
                Ok(Some(_)) => {
                    self.forget(&job.id);
                    requeued = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "could not requeue a lost job; the next heartbeat will")
                }
            }
        }
        if requeued || hb.status == WorkerStatus::Idle {
            self.wake();
        }
        cancel
    }

    /// A result for `job_id` arrived from `worker_id`, accepted or not: the
    /// worker is free again, also when another replica sent it the job.
    pub fn released(&self, worker_id: &str, job_id: &JobId) {
        if let Some(entry) = self.workers().get_mut(worker_id) {
            match &entry.assigned {
                Some(a) if &a.job_id == job_id => {
                    entry.assigned = None;
                    entry.status = WorkerStatus::Idle;
                }
                None if entry.status == WorkerStatus::Busy => entry.status = WorkerStatus::Idle,
                // Believed to run another job: its next heartbeat settles it.
                _ => {}
            }
        }
        self.wake();
    }

    /// Forgets that a worker runs `job_id` (the job was taken back).
    pub fn forget(&self, job_id: &JobId) {
        for entry in self.workers().values_mut() {
            if entry.assigned.as_ref().is_some_and(|a| &a.job_id == job_id) {
                entry.assigned = None;
            }
        }
    }

    /// Tells the worker running `job` to stop it (cancelled or timed out). Best
    /// effort: if the call is lost, the worker's next heartbeat is answered
    /// with the job to cancel.
    pub fn stop_on_worker(&self, job: &JobRecord) {
        let Some(worker_id) = job.worker_id.clone() else {
            return;
        };
        let address = self.workers().get(&worker_id).map(|e| e.address.clone());
        let Some(address) = address else { return };
        let this = self.clone();
        let job_id = job.id.clone();
        tokio::spawn(async move {
            let sent = this
                .request(&format!("{address}/cancel_job"))
                .json(&CancelJob {
                    job_id: job_id.clone(),
                })
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(%job_id, %worker_id, "asked the worker to stop the job")
                }
                Ok(r) => {
                    tracing::info!(%job_id, %worker_id, status = %r.status(), "worker was not running the job")
                }
                Err(e) => {
                    tracing::warn!(%job_id, %worker_id, error = %e, "could not reach the worker to stop the job")
                }
            }
        });
    }

    /// Whether some online worker serves this capability and model.
    pub fn serves(&self, capability: tessera_core::Capability, model: &str, now: Millis) -> bool {
        self.workers().values().any(|e| {
            self.inner.config.is_online(e.last_seen, now)
                && e.status != WorkerStatus::Draining
                && e.slot.capabilities.contains(&capability)
                && e.slot.models.iter().any(|m| m == model)
        })
    }

    fn lost_job_grace(&self) -> Millis {
        let send = i64::try_from(self.inner.config.dispatch_timeout_ms).unwrap_or(i64::MAX / 2);
        LOST_JOB_GRACE_MS.max(send.saturating_mul(2))
    }

    fn is_free(&self, e: &Entry, now: Millis) -> bool {
        e.status == WorkerStatus::Idle
            && e.assigned.is_none()
            && !e.claiming
            && !e.suspect
            && self.inner.config.is_online(e.last_seen, now)
    }

    /// Runs dispatch passes until `stop` turns true.
    pub fn spawn(&self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(this.inner.config.dispatch_tick_ms.max(10));
            loop {
                tokio::select! {
                    _ = this.inner.wake.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                this.pass().await;
            }
        })
    }

    /// One pass: a claim for every free worker, all at once.
    pub async fn pass(&self) {
        let now = now_ms();
        let free: Vec<(String, WorkerSlot, String)> = {
            let mut map = self.workers();
            map.iter_mut()
                .filter(|(_, e)| self.is_free(e, now))
                .map(|(id, e)| {
                    e.claiming = true;
                    (id.clone(), e.slot.clone(), e.address.clone())
                })
                .collect()
        };
        if free.is_empty() {
            return;
        }
        // Read one window on the queue deep enough for every free worker, choose
        // a job for each in turn in memory, passing over the jobs chosen for the
        // others, then claim them all in one transaction: one read and one
        // commit per pass, and no dispatcher racing itself for the head of the
        // queue.
        let now = now_ms();
        let ranges: Vec<_> = free.iter().flat_map(|(_, slot, _)| slot.ranges()).collect();
        let depth = u32::try_from(free.len() + 1).unwrap_or(u32::MAX);
        let window = self.inner.store.queue_window(&ranges, depth).await;
        let mut chosen: HashSet<JobId> = HashSet::new();
        let mut claims: Vec<(JobId, String)> = Vec::new();
        let mut addresses: HashMap<String, String> = HashMap::new();
        match &window {
            Ok(window) => {
                for (worker_id, slot, address) in &free {
                    let left = window.iter().filter(|j| !chosen.contains(&j.id));
                    let candidates = Candidates::from_queue(left, &slot.view());
                    if let Some((job, reason)) = self.inner.policy.choose(&candidates, now) {
                        tracing::debug!(job_id = %job.id, %worker_id, ?reason, "chosen");
                        chosen.insert(job.id.clone());
                        claims.push((job.id.clone(), worker_id.clone()));
                        addresses.insert(worker_id.clone(), address.clone());
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
        let mut map = self.workers();
        for (worker_id, _, _) in &free {
            if let Some(entry) = map.get_mut(worker_id) {
                entry.claiming = false;
            }
        }
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming failed; retrying on the next wake-up");
                return;
            }
        };
        let lost = claimed.len() < claims.len();
        let mut sends = Vec::with_capacity(claimed.len());
        for job in claimed {
            let Some(worker_id) = job.worker_id.clone() else {
                continue;
            };
            let loaded = free
                .iter()
                .find(|(id, _, _)| *id == worker_id)
                .is_some_and(|(_, slot, _)| slot.loaded_models.contains(&job.model));
            self.inner.metrics.dispatched(&job, !loaded);
            if let Some(entry) = map.get_mut(&worker_id) {
                entry.assigned = Some(Assignment {
                    job_id: job.id.clone(),
                    attempt: job.attempts,
                });
            }
            let address = addresses.remove(&worker_id).unwrap_or_default();
            sends.push((worker_id, address, job));
        }
        drop(map);
        for (worker_id, address, job) in sends {
            let this = self.clone();
            tokio::spawn(async move { this.send(worker_id, address, job).await });
        }
        if lost {
            // Another dispatcher took some of the chosen jobs: look again.
            self.wake();
        }
    }

    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let mut req = self.inner.http.post(url).timeout(Duration::from_millis(
            self.inner.config.dispatch_timeout_ms.max(1),
        ));
        if let Some(token) = &self.inner.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends a claimed job to its worker; hands it back if the worker does not take it.
    async fn send(&self, worker_id: String, address: String, job: JobRecord) {
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
        let mut request = self.request(&format!("{address}/run_job")).json(&body);
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
            if let Some(entry) = self.workers().get_mut(&worker_id) {
                entry.suspect = true;
            }
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
                .metrics
                .apply(&*self.inner.store, &job.id, Transition::Fail, &change)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %e, "could not fail the job");
            }
            self.released(&worker_id, &job.id);
        }
    }

    async fn run_job_body(&self, job: &JobRecord) -> anyhow::Result<RunJob> {
        let mut inputs = Vec::new();
        if let JobParams::SpeechToText(p) =
            JobParams::from_stored(job.capability, job.params.clone())?
        {
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
            .metrics
            .apply(&*self.inner.store, &job.id, Transition::Requeue, &change)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job_id = %job.id, error = %e, "could not hand the job back; the health monitor will")
            }
        }
        if let Some(entry) = self.workers().get_mut(&worker_id) {
            if entry.assigned.as_ref().is_some_and(|a| a.job_id == job.id) {
                entry.assigned = None;
            }
        }
        self.wake();
    }
}

fn slot_of(hb: &Heartbeat) -> WorkerSlot {
    WorkerSlot {
        worker_id: hb.worker_id.clone(),
        capabilities: hb.capabilities.clone(),
        models: hb.models.clone(),
        loaded_models: hb.loaded_models.clone(),
    }
}
