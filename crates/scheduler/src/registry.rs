//! The worker registry: the scheduler's picture of its workers, and the
//! client that reaches them.
//!
//! It stands apart from the dispatcher because more than the dispatcher
//! reads and settles it: heartbeats feed it, results free workers, the health
//! monitor asks which models some online worker serves and forgets jobs it
//! takes back, and a cancelled or timed-out job is stopped on its worker. All
//! of them reach it through the [`Lifecycle`](crate::lifecycle::Lifecycle), so
//! none of them needs the dispatcher, and the dispatcher needs none of them.
//!
//! For each worker it holds what the worker serves, which of its engines are
//! ready (a worker whose engine for a capability or model is down is no
//! candidate for it, though it is for its other engines), whether it is
//! online, and which job this scheduler gave it. A restart rebuilds it from the database
//! (workers, and RUNNING jobs with their worker), so nothing running is
//! forgotten. Heartbeats reconcile it both ways against the database (see
//! [`Registry::heartbeat`]), so that replicas dispatching to the same workers
//! see each other's dispatches.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tessera_api::internal::{CancelJob, EngineReadiness, Heartbeat, WorkerStatus};
use tessera_core::{Capability, JobId, Millis, WorkerId};

use crate::config::WorkersConfig;
use crate::store::{JobRecord, Store, StoreError, WorkerSlot};

/// A job the database has running on a worker that the worker does not name
/// this long after its dispatch (or twice the dispatch timeout, if longer) was
/// lost: its send is over by then.
const LOST_JOB_GRACE_MS: Millis = 10_000;

/// The registry; one per scheduler, held by its lifecycle.
pub struct Registry {
    config: WorkersConfig,
    token: Option<String>,
    http: reqwest::Client,
    workers: Mutex<HashMap<WorkerId, Entry>>,
}

#[derive(Clone, Debug)]
struct Entry {
    /// Everything the worker serves.
    slot: WorkerSlot,
    /// What its ready engines serve: what it may be sent.
    ready: WorkerSlot,
    /// Its engines' readiness, as its last heartbeat reported it.
    engines: Vec<EngineReadiness>,
    /// Capabilities whose engine failed a job as unavailable since the last
    /// heartbeat: no job for them until a heartbeat says the engine is ready.
    failed: Vec<Capability>,
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

/// A free worker a dispatch pass chooses a job for.
#[derive(Clone, Debug)]
pub struct FreeWorker {
    pub worker_id: WorkerId,
    pub slot: WorkerSlot,
    pub address: String,
    /// Models loaded on the other workers that take jobs now, busy or free,
    /// and on how many: the policy leaves their jobs to them for a while
    /// ([`tessera_core::policy::Policy::locality_wait_ms`]) when they are
    /// enough for the queued ones ([`tessera_core::policy::held_elsewhere`]).
    pub warm_elsewhere: Vec<(String, usize)>,
}

/// What a heartbeat's reconciliation found.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Jobs the worker runs that the scheduler no longer wants: it must stop them.
    pub cancel: Vec<JobId>,
    /// Jobs the database has running on the worker that the worker does not
    /// name, past the grace for sends in flight: they must be taken back.
    pub lost: Vec<JobRecord>,
}

impl Registry {
    /// An empty registry; `token` is the internal token sent to workers.
    pub fn new(config: WorkersConfig, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.dispatch_timeout_ms.max(1)))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            config,
            token,
            http,
            workers: Mutex::new(HashMap::new()),
        })
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<WorkerId, Entry>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the registry from the database: after a restart, workers seen
    /// recently and the jobs they were running.
    pub async fn restore(&self, store: &dyn Store) -> Result<(), StoreError> {
        let workers = store.list_workers().await?;
        let running = store.running_jobs().await?;
        let mut map = self.workers();
        for w in workers {
            let hb = w.heartbeat;
            map.insert(
                hb.worker_id.clone(),
                Entry {
                    slot: slot_of(&hb),
                    ready: ready_slot_of(&hb),
                    engines: hb.engines,
                    failed: Vec::new(),
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

    /// Records a heartbeat and reconciles the registry with the database;
    /// `None` when the heartbeat tells nothing to reconcile (a busy worker
    /// naming no job) or the database cannot be read now.
    ///
    /// The report is checked against the database, which holds the dispatches
    /// of every replica (one indexed read of the worker's running jobs):
    /// - the job the worker names is adopted if the database has it running
    ///   there (another replica sent it, or this one restarted), else the
    ///   worker is told to stop it;
    /// - a job the database has running on the worker that the worker does not
    ///   name was lost, and after a grace for sends still in flight must go
    ///   back to the queue, whichever replica dispatched it: the worker never
    ///   got it (the replica that claimed it crashed before sending it, or
    ///   could not hand back a job the worker refused) or forgot it (it
    ///   restarted);
    /// - a job this scheduler believed the worker runs that is no longer
    ///   running there ended (its result may have reached another replica):
    ///   the worker is free.
    pub async fn heartbeat(
        &self,
        store: &dyn Store,
        hb: &Heartbeat,
        now: Millis,
    ) -> Option<Reconciled> {
        let believed = {
            let mut map = self.workers();
            let entry = map.entry(hb.worker_id.clone()).or_insert_with(|| Entry {
                slot: slot_of(hb),
                ready: ready_slot_of(hb),
                engines: Vec::new(),
                failed: Vec::new(),
                address: String::new(),
                status: hb.status,
                last_seen: now,
                assigned: None,
                claiming: false,
                suspect: false,
            });
            entry.slot = slot_of(hb);
            entry.ready = ready_slot_of(hb);
            entry.engines = hb.engines.clone();
            entry.failed.clear();
            entry.address = hb.address.clone();
            entry.status = hb.status;
            entry.last_seen = now;
            entry.suspect = false;
            entry.assigned.clone()
        };
        // A busy worker that names no job tells nothing about what it runs.
        let conclusive = hb.current_job.is_some() || hb.status != WorkerStatus::Busy;
        if !conclusive {
            return None;
        }
        let running = match store.running_on_worker(&hb.worker_id).await {
            Ok(running) => running,
            Err(e) => {
                tracing::warn!(worker_id = %hb.worker_id, error = %e, "cannot reconcile a heartbeat now");
                return None;
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
        let lost: Vec<JobRecord> = running
            .iter()
            .filter(|j| Some(&j.id) != hb.current_job.as_ref())
            .filter(|j| now - j.started_at.unwrap_or(now) > self.lost_job_grace())
            .cloned()
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
        Some(Reconciled { cancel, lost })
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
    }

    /// Forgets that a worker runs `job_id` (the job was taken back).
    pub fn forget(&self, job_id: &JobId) {
        for entry in self.workers().values_mut() {
            if entry.assigned.as_ref().is_some_and(|a| &a.job_id == job_id) {
                entry.assigned = None;
            }
        }
    }

    /// Forgets that `worker_id` runs `job_id`, if it was believed to: the
    /// worker never started it.
    pub fn handed_back(&self, worker_id: &str, job_id: &JobId) {
        if let Some(entry) = self.workers().get_mut(worker_id) {
            if entry.assigned.as_ref().is_some_and(|a| &a.job_id == job_id) {
                entry.assigned = None;
            }
        }
    }

    /// The worker did not take the job it was sent: no job goes to it before
    /// its next heartbeat.
    pub fn suspect(&self, worker_id: &str) {
        if let Some(entry) = self.workers().get_mut(worker_id) {
            entry.suspect = true;
        }
    }

    /// A job failed on `worker_id` because its engine for `capability` is
    /// unavailable: no job for that capability goes to the worker until a
    /// heartbeat says the engine is ready (the worker probes it at once and
    /// reports it down, or ready again, in its next heartbeat).
    pub fn engine_failed(&self, worker_id: &str, capability: Capability) {
        if let Some(entry) = self.workers().get_mut(worker_id) {
            if !entry.failed.contains(&capability) {
                entry.failed.push(capability);
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
        let job_id = job.id.clone();
        let request = self
            .request(&format!("{address}/cancel_job"))
            .json(&CancelJob {
                job_id: job_id.clone(),
            });
        tokio::spawn(async move {
            match request.send().await {
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

    /// Whether some online worker serves this capability and model. A worker
    /// whose engine for it is down still does until the engine has been down
    /// for `unservable_after_secs`: an engine restarting is ordinary, and its
    /// jobs wait for it rather than fail.
    pub fn serves(&self, capability: Capability, model: &str, now: Millis) -> bool {
        let limit = i64::try_from(self.config.unservable_after_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        self.workers().values().any(|e| {
            self.config.is_online(e.last_seen, now)
                && e.status != WorkerStatus::Draining
                && e.slot.capabilities.contains(&capability)
                && e.slot.models.iter().any(|m| m == model)
                && (slot_serves(&e.ready, capability, model)
                    || down_since(&e.engines, capability, model)
                        .is_none_or(|since| now - since < limit))
        })
    }

    /// How many workers could run a job of this capability and model now:
    /// online, not draining, with a ready engine for it that has not failed
    /// since their last heartbeat. What admission divides the queue among.
    pub fn capacity(&self, capability: Capability, model: &str, now: Millis) -> usize {
        self.capacity_now(capability, model, now).ready
    }

    /// As [`capacity`](Self::capacity), with how many of those workers hold
    /// the model in GPU memory and how many are free now: what a queued
    /// job's estimate needs.
    pub fn capacity_now(&self, capability: Capability, model: &str, now: Millis) -> Capacity {
        self.workers()
            .values()
            .filter(|e| self.takes(e, capability, now) && slot_serves(&e.ready, capability, model))
            .fold(Capacity::default(), |c, e| Capacity {
                ready: c.ready + 1,
                warm: c.warm + usize::from(e.ready.loaded_models.iter().any(|m| m == model)),
                idle: c.idle + usize::from(self.is_free(e, now)),
            })
    }

    /// How many workers could run a job of this capability now, whatever its
    /// model: the workers the capability's models share, which admission
    /// divides the capability's whole queue among.
    pub fn capacity_any_model(&self, capability: Capability, now: Millis) -> usize {
        self.workers()
            .values()
            .filter(|e| {
                self.takes(e, capability, now)
                    && e.ready.capabilities.contains(&capability)
                    && !e.ready.models.is_empty()
            })
            .count()
    }

    /// Whether the worker takes jobs of the capability now, as far as its
    /// state goes: online, not draining, the capability not failed since its
    /// last heartbeat (what its ready engines serve is the caller's test).
    fn takes(&self, e: &Entry, capability: Capability, now: Millis) -> bool {
        self.config.is_online(e.last_seen, now)
            && e.status != WorkerStatus::Draining
            && !e.failed.contains(&capability)
    }

    /// The free workers (idle, online, believed to run nothing, not suspect,
    /// no claim in flight), each marked as being claimed for until
    /// [`claims_done`](Self::claims_done).
    ///
    /// Each comes with what its ready engines serve, less what failed as
    /// unavailable since its last heartbeat; a worker with nothing left is not free.
    pub fn claim_free(&self, now: Millis) -> Vec<FreeWorker> {
        let mut map = self.workers();
        let warm: Vec<(WorkerId, Vec<String>)> = map
            .iter()
            .filter(|(_, e)| {
                self.config.is_online(e.last_seen, now) && e.status != WorkerStatus::Draining
            })
            .map(|(id, e)| (id.clone(), e.ready.loaded_models.clone()))
            .collect();
        let elsewhere = |id: &WorkerId| {
            tessera_core::policy::holders(
                warm.iter()
                    .filter(|(other, _)| other != id)
                    .flat_map(|(_, loaded)| loaded),
            )
        };
        map.iter_mut()
            .filter(|(_, e)| self.is_free(e, now))
            .filter_map(|(id, e)| {
                let mut slot = e.ready.clone();
                slot.capabilities.retain(|c| !e.failed.contains(c));
                if slot.capabilities.is_empty() || slot.models.is_empty() {
                    return None;
                }
                e.claiming = true;
                Some(FreeWorker {
                    worker_id: id.clone(),
                    slot,
                    address: e.address.clone(),
                    warm_elsewhere: elsewhere(id),
                })
            })
            .collect()
    }

    /// The claims for `free` are over; each job of `claimed` is now believed
    /// to run on its worker. One lock for both, so no pass sees a worker
    /// between the two.
    pub fn claims_done(&self, free: &[FreeWorker], claimed: &[JobRecord]) {
        let mut map = self.workers();
        for w in free {
            if let Some(entry) = map.get_mut(&w.worker_id) {
                entry.claiming = false;
            }
        }
        for job in claimed {
            if let Some(entry) = job.worker_id.as_ref().and_then(|w| map.get_mut(w)) {
                entry.assigned = Some(Assignment {
                    job_id: job.id.clone(),
                    attempt: job.attempts,
                });
            }
        }
    }

    /// A POST to a worker, with the dispatch timeout and the internal token.
    pub fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.post(url).timeout(Duration::from_millis(
            self.config.dispatch_timeout_ms.max(1),
        ));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    fn lost_job_grace(&self) -> Millis {
        let send = i64::try_from(self.config.dispatch_timeout_ms).unwrap_or(i64::MAX / 2);
        LOST_JOB_GRACE_MS.max(send.saturating_mul(2))
    }

    fn is_free(&self, e: &Entry, now: Millis) -> bool {
        e.status == WorkerStatus::Idle
            && e.assigned.is_none()
            && !e.claiming
            && !e.suspect
            && self.config.is_online(e.last_seen, now)
    }
}

/// The workers that could run a capability and model now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Online, not draining, with a ready engine for it.
    pub ready: usize,
    /// Of those, holding the model in GPU memory.
    pub warm: usize,
    /// Of those, free for a job now.
    pub idle: usize,
}

/// What the worker's ready engines serve ([`Heartbeat::ready_now`]).
fn ready_slot_of(hb: &Heartbeat) -> WorkerSlot {
    let (capabilities, models) = hb.ready_now();
    WorkerSlot {
        capabilities,
        models,
        ..slot_of(hb)
    }
}

fn slot_serves(slot: &WorkerSlot, capability: Capability, model: &str) -> bool {
    slot.capabilities.contains(&capability) && slot.models.iter().any(|m| m == model)
}

/// Since when (ms, by the worker's clock) the engines for this capability
/// and model have been down: the latest change among those that are.
fn down_since(engines: &[EngineReadiness], capability: Capability, model: &str) -> Option<Millis> {
    engines
        .iter()
        .filter(|e| !e.ready && e.capability == capability && e.models.iter().any(|m| m == model))
        .map(|e| e.since.timestamp_millis())
        .max()
}

fn slot_of(hb: &Heartbeat) -> WorkerSlot {
    WorkerSlot {
        worker_id: hb.worker_id.clone(),
        capabilities: hb.capabilities.clone(),
        models: hb.models.clone(),
        loaded_models: hb.loaded_models.clone(),
    }
}
