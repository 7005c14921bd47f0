//! Queue selection: which queued job an idle worker runs next (docs/simulation.md).
//!
//! The seed's rule serves plans in priority order and prefers a job whose model the
//! worker already has loaded, because a model load costs 30-60 s against 0-5 s for a
//! warm model. Left alone, that preference can pass over a job forever: a steady
//! stream of warm-model jobs starves everything else. Tessera keeps the preference
//! and bounds it twice:
//!
//! 1. **Wait bound.** A job that has waited `max_wait` is *overdue*; while any
//!    compatible job is overdue the worker takes an overdue job, whatever its
//!    plan: the oldest overdue job whose model it has loaded if there is one,
//!    else the oldest. Once the oldest has waited twice `max_wait`, strictly the
//!    oldest. So a job can be passed over by younger jobs only until it has
//!    waited twice the bound, and no job waits much past that.
//!
//!    Affinity among overdue jobs matters under a backlog: when every job is
//!    overdue, taking them strictly oldest first would load a model for most
//!    of them, which lowers throughput, which lengthens the backlog. The
//!    simulator (`tessera simulate`) showed that collapse: at 400 jobs an hour
//!    on four GPUs, strictly-oldest overdue jobs completed 71 jobs per
//!    GPU-hour against 99 with warm overdue jobs first.
//! 2. **Affinity patience.** A warm-model job may jump ahead of higher-priority
//!    jobs only while every one of them has waited less than `affinity_patience`,
//!    and less than the load the jump saves where the worker has learned it
//!    ([`WorkerView::load_ms`]: a model that loads in 2 s is not worth making
//!    a paying user wait 10 s for). Within one priority the warm job
//!    goes first, while the head of the priority has waited less than two
//!    thirds of the wait bound; after that the head goes (a job of a model nobody
//!    holds is not left to wait until it is overdue: the simulator found
//!    such jobs, warm ones always passing them, starting past the bound).
//! 3. **Locality wait** (delay scheduling). When the first job in queue order
//!    is cold here but its model is loaded on other workers, enough of them
//!    for that model's queued jobs ([`held_elsewhere`]), it is left to them
//!    while it has waited less than `locality_wait` (and less than the load
//!    it saves here, where learned): this worker takes a warm job, or the
//!    first job whose model no worker holds (a load wherever it runs), or
//!    nothing for now. Loading it here too would cost a load and evict a
//!    model the next jobs want; at twice capacity with admission most loads
//!    were such loads (docs/simulation.md).
//!
//! Otherwise the first compatible job in queue order runs. Queue order is
//! priority, then the job's fair-queuing tag ([`crate::fair`]: start-time fair
//! queuing over users, so one user's flood does not hold back the others'
//! jobs of the same plan), then arrival, then id; the warm job affinity
//! prefers is the first warm job in that order. Age (arrival) decides only
//! where the wait bound does, so the bound keeps its meaning whatever the tags.
//!
//! The decision needs only a few jobs, never the whole queue: the oldest
//! compatible job, the best compatible job (priority, then tag), the best and the
//! oldest compatible jobs on a loaded model, the oldest compatible job that
//! outranks the best warm one, the best compatible job whose model no worker
//! holds, and (for [`PolicyKind::Seed`]) the warm head of each priority.
//! [`Candidates`] holds them. Each is the first of some
//! (capability, model, priority) range either in queue order or in age order,
//! so all of them are among the heads of those ranges in both orders: the
//! stores read those heads (a few rows from each of two partial indexes) and,
//! like the simulator and the tests, find the candidates with
//! [`Candidates::from_queue`]; all then call the same [`Policy::choose`].

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use crate::fair::Tag;
use crate::{Capability, Millis, Priority};

/// A queued job as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedJob<Id> {
    pub id: Id,
    pub capability: Capability,
    pub model: String,
    pub priority: Priority,
    /// Its start tag in its queue's fair order ([`crate::fair`]), fixed when
    /// it was first queued.
    pub fair_tag: Tag,
    /// When the job (last) entered the queue.
    pub queued_at: Millis,
}

impl<Id: Ord> QueuedJob<Id> {
    /// Queue order: higher priority first, then the fair tag, then first
    /// come, then id.
    fn best_key(&self) -> (Reverse<Priority>, Tag, Millis, &Id) {
        (
            Reverse(self.priority),
            self.fair_tag,
            self.queued_at,
            &self.id,
        )
    }

    /// Age order: first come, then higher priority, then id.
    fn oldest_key(&self) -> (Millis, Reverse<Priority>, &Id) {
        (self.queued_at, Reverse(self.priority), &self.id)
    }
}

impl<Id> QueuedJob<Id> {
    /// How long the job has been queued at `now`.
    pub fn waited(&self, now: Millis) -> Millis {
        now - self.queued_at
    }
}

/// How many workers hold each model, from the other workers' loaded models
/// one after another: the `holders` [`held_elsewhere`] reads.
pub fn holders<'a>(loaded: impl IntoIterator<Item = &'a String>) -> Vec<(String, usize)> {
    let mut holders: Vec<(String, usize)> = Vec::new();
    for model in loaded {
        match holders.iter_mut().find(|(m, _)| m == model) {
            Some((_, n)) => *n += 1,
            None => holders.push((model.clone(), 1)),
        }
    }
    holders
}

/// The models whose jobs are left to the workers holding them
/// ([`WorkerView::warm_elsewhere`]): of `holders` (each model loaded on
/// other workers, and on how many), those with no more jobs queued than
/// holders, so each queued job can go to one of them warm. A model with a
/// backlog beyond its holders is worth loading on another worker at once.
pub fn held_elsewhere<'q, Id: 'q>(
    holders: &[(String, usize)],
    queue: impl IntoIterator<Item = &'q QueuedJob<Id>>,
) -> Vec<String> {
    let mut queued = vec![0usize; holders.len()];
    for job in queue {
        if let Some(i) = holders.iter().position(|(m, _)| *m == job.model) {
            queued[i] += 1;
        }
    }
    holders
        .iter()
        .zip(queued)
        .filter(|((_, workers), queued)| queued <= workers)
        .map(|((model, _), _)| model.clone())
        .collect()
}

/// How many jobs of `head` (a prefix of the queue in queue order: priority, then
/// fair tag, then age, then id) run before `job`. `job` need not be in `head`.
pub fn jobs_ahead<Id: Ord>(head: &[QueuedJob<Id>], job: &QueuedJob<Id>) -> usize {
    let key = job.best_key();
    head.partition_point(|j| j.best_key() < key)
}

/// What the policy needs to know about the worker asking for work.
#[derive(Clone, Copy, Debug)]
pub struct WorkerView<'a> {
    pub capabilities: &'a [Capability],
    /// Models the worker can serve (installed).
    pub models: &'a [String],
    /// Models loaded in GPU memory now (all of them count as warm).
    pub loaded_models: &'a [String],
    /// What loading each model has been seen to cost on this worker, where
    /// it has been learned ([`Candidates::best_load_ms`]).
    pub load_ms: &'a [(String, Millis)],
    /// Models loaded on the other workers that take jobs now, and no more
    /// of whose jobs are queued than those workers ([`held_elsewhere`]): a
    /// job of one of them is theirs to run warm for a while
    /// ([`Policy::locality_wait_ms`]).
    pub warm_elsewhere: &'a [String],
}

impl WorkerView<'_> {
    pub fn can_run<Id>(&self, job: &QueuedJob<Id>) -> bool {
        self.capabilities.contains(&job.capability) && self.models.contains(&job.model)
    }

    pub fn has_loaded(&self, model: &str) -> bool {
        self.loaded_models.iter().any(|m| m == model)
    }

    /// Whether another worker has `model` loaded.
    pub fn warm_elsewhere(&self, model: &str) -> bool {
        self.warm_elsewhere.iter().any(|m| m == model)
    }

    /// The learned cost of loading `model` here, if any.
    pub fn load_ms(&self, model: &str) -> Option<Millis> {
        self.load_ms
            .iter()
            .find_map(|(m, ms)| (m == model).then_some(*ms))
    }
}

/// The three jobs a decision looks at, each among the jobs the worker can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidates<J> {
    /// Queued longest.
    pub oldest: Option<J>,
    /// First in queue order: highest priority, then lowest fair tag.
    pub best: Option<J>,
    /// Like `best`, among jobs whose model is loaded on the worker.
    pub best_loaded: Option<J>,
    /// Queued longest among jobs of higher priority than `best_loaded`.
    pub oldest_outranking_loaded: Option<J>,
    /// The seed's rule (section 7.2): the highest-priority job that is at the
    /// head of its priority's queue (among jobs the worker can run) and whose
    /// model is loaded. Only [`PolicyKind::Seed`] reads it.
    pub loaded_head: Option<J>,
    /// Queued longest among jobs whose model is loaded on the worker.
    pub oldest_loaded: Option<J>,
    /// The learned cost of loading `best`'s model on the worker, when it is
    /// not loaded there and a cost has been learned: passing `best` over for
    /// a warm job saves at most this.
    pub best_load_ms: Option<Millis>,
    /// `best`'s model is not loaded on the worker but is on another one.
    pub best_elsewhere: bool,
    /// Like `best`, among jobs whose model is neither loaded here nor left
    /// to the workers holding it ([`WorkerView::warm_elsewhere`]): a load
    /// somewhere anyway.
    pub best_unplaced: Option<J>,
}

impl<J> Candidates<J> {
    /// Borrows the candidates, for [`Policy::choose`].
    pub fn as_ref(&self) -> Candidates<&J> {
        Candidates {
            oldest: self.oldest.as_ref(),
            best: self.best.as_ref(),
            best_loaded: self.best_loaded.as_ref(),
            oldest_outranking_loaded: self.oldest_outranking_loaded.as_ref(),
            loaded_head: self.loaded_head.as_ref(),
            oldest_loaded: self.oldest_loaded.as_ref(),
            best_load_ms: self.best_load_ms,
            best_elsewhere: self.best_elsewhere,
            best_unplaced: self.best_unplaced.as_ref(),
        }
    }
}

impl<J: Clone> Candidates<&J> {
    /// Owned copies of the candidates.
    pub fn cloned(&self) -> Candidates<J> {
        Candidates {
            oldest: self.oldest.cloned(),
            best: self.best.cloned(),
            best_loaded: self.best_loaded.cloned(),
            oldest_outranking_loaded: self.oldest_outranking_loaded.cloned(),
            loaded_head: self.loaded_head.cloned(),
            oldest_loaded: self.oldest_loaded.cloned(),
            best_load_ms: self.best_load_ms,
            best_elsewhere: self.best_elsewhere,
            best_unplaced: self.best_unplaced.cloned(),
        }
    }
}

/// Queue order: priority first, then fair tag, then age, then id. Equal only
/// for the same job.
pub fn queue_order<Id: Ord>(a: &QueuedJob<Id>, b: &QueuedJob<Id>) -> std::cmp::Ordering {
    a.best_key().cmp(&b.best_key())
}

/// Age order: first queued first, then priority, then id.
pub fn age_order<Id: Ord>(a: &QueuedJob<Id>, b: &QueuedJob<Id>) -> std::cmp::Ordering {
    a.oldest_key().cmp(&b.oldest_key())
}

impl<'q, Id: Ord> Candidates<&'q QueuedJob<Id>> {
    /// Finds the candidates by scanning a whole queue.
    pub fn from_queue(
        queue: impl IntoIterator<Item = &'q QueuedJob<Id>>,
        worker: &WorkerView<'_>,
    ) -> Self {
        let mut c = Candidates {
            oldest: None,
            best: None,
            best_loaded: None,
            oldest_outranking_loaded: None,
            loaded_head: None,
            oldest_loaded: None,
            best_load_ms: None,
            best_elsewhere: false,
            best_unplaced: None,
        };
        let runnable: Vec<_> = queue.into_iter().filter(|j| worker.can_run(j)).collect();
        for &job in &runnable {
            if c.oldest
                .is_none_or(|o: &QueuedJob<Id>| job.oldest_key() < o.oldest_key())
            {
                c.oldest = Some(job);
            }
            if c.best
                .is_none_or(|b: &QueuedJob<Id>| job.best_key() < b.best_key())
            {
                c.best = Some(job);
            }
            if !worker.has_loaded(&job.model)
                && !worker.warm_elsewhere(&job.model)
                && c.best_unplaced
                    .is_none_or(|b: &QueuedJob<Id>| job.best_key() < b.best_key())
            {
                c.best_unplaced = Some(job);
            }
            if worker.has_loaded(&job.model)
                && c.oldest_loaded
                    .is_none_or(|o: &QueuedJob<Id>| job.oldest_key() < o.oldest_key())
            {
                c.oldest_loaded = Some(job);
            }
            if worker.has_loaded(&job.model)
                && c.best_loaded
                    .is_none_or(|b: &QueuedJob<Id>| job.best_key() < b.best_key())
            {
                c.best_loaded = Some(job);
            }
        }
        if let Some(warm) = c.best_loaded {
            c.oldest_outranking_loaded = runnable
                .iter()
                .copied()
                .filter(|j| j.priority > warm.priority)
                .min_by(|a, b| a.oldest_key().cmp(&b.oldest_key()));
        }
        // The head of each priority's queue, highest priority first; the first
        // head whose model is loaded.
        let mut heads: Vec<&QueuedJob<Id>> = Vec::new();
        for &job in &runnable {
            match heads.iter_mut().find(|h| h.priority == job.priority) {
                Some(head) if job.best_key() < head.best_key() => *head = job,
                Some(_) => {}
                None => heads.push(job),
            }
        }
        heads.sort_by_key(|h| Reverse(h.priority));
        c.loaded_head = heads.into_iter().find(|h| worker.has_loaded(&h.model));
        c.best_elsewhere = c
            .best
            .is_some_and(|b| !worker.has_loaded(&b.model) && worker.warm_elsewhere(&b.model));
        c.best_load_ms = c
            .best
            .filter(|b| !worker.has_loaded(&b.model))
            .and_then(|b| worker.load_ms(&b.model));
        c
    }
}

/// Why a job was chosen; recorded for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It had waited past the wait bound and was the oldest.
    Overdue,
    /// Its model was already loaded on the worker.
    Affinity,
    /// It was first in priority order.
    Priority,
    /// It was first in arrival order (FIFO policy).
    Arrival,
}

/// Which rule to apply. Only [`PolicyKind::Tessera`] runs in production; the others
/// exist so the simulator can compare against them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// First come, first served.
    Fifo,
    /// Highest priority first, no affinity, no wait bound.
    StrictPriority,
    /// Priority and affinity with a wait bound and affinity patience (see above).
    #[default]
    Tessera,
    /// The seed's rule as written (section 7.2): the first priority queue, from
    /// the highest, whose head job has its model loaded gives that job;
    /// otherwise the highest-priority job. No wait bound.
    Seed,
}

/// The queue policy and its two bounds, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub kind: PolicyKind,
    /// A job queued this long is overdue: served before jobs that are not,
    /// warm ones first; past twice this, strictly oldest first.
    pub max_wait_ms: Millis,
    /// How long a higher-priority job may be passed over for a warm-model job.
    pub affinity_patience_ms: Millis,
    /// How long a job whose model is loaded on another worker is left for
    /// that worker rather than loaded here (delay scheduling), and no longer
    /// than loading it here costs where that has been learned: this worker
    /// takes a warm job, or one whose model is loaded nowhere, or waits.
    /// 0 turns it off.
    pub locality_wait_ms: Millis,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kind: PolicyKind::Tessera,
            // Tuned with `tessera simulate` (docs/simulation.md): the seed's
            // figures on four GPUs and four models near the farm's capacity.
            max_wait_ms: 15 * 60 * 1000,
            affinity_patience_ms: 10 * 1000,
            // The overload goals (docs/simulation.md): at twice capacity with
            // admission, 1.32x FIFO's throughput at 20 s, 1.35x at 30 s,
            // 1.37x at 45 s, where the estimates' error grew.
            locality_wait_ms: 30 * 1000,
        }
    }
}

impl Policy {
    /// Picks the job to run from the candidates, or `None` when the worker can run
    /// nothing that is queued.
    pub fn choose<'q, Id>(
        &self,
        c: &Candidates<&'q QueuedJob<Id>>,
        now: Millis,
    ) -> Option<(&'q QueuedJob<Id>, Reason)> {
        match self.kind {
            PolicyKind::Fifo => c.oldest.map(|j| (j, Reason::Arrival)),
            PolicyKind::StrictPriority => c.best.map(|j| (j, Reason::Priority)),
            PolicyKind::Seed => match c.loaded_head {
                Some(warm) => Some((warm, Reason::Affinity)),
                None => c.best.map(|j| (j, Reason::Priority)),
            },
            PolicyKind::Tessera => {
                if let Some(oldest) = c.oldest {
                    let waited = oldest.waited(now);
                    if waited >= self.max_wait_ms {
                        if waited < self.max_wait_ms.saturating_mul(2) {
                            if let Some(warm) = c.oldest_loaded {
                                if warm.waited(now) >= self.max_wait_ms {
                                    return Some((warm, Reason::Overdue));
                                }
                            }
                        }
                        return Some((oldest, Reason::Overdue));
                    }
                }
                let best = c.best?;
                // Passing a higher plan's job over saves at most the load it
                // would cost: no longer than that, where it is known.
                let patience = c.best_load_ms.map_or(self.affinity_patience_ms, |load| {
                    load.min(self.affinity_patience_ms)
                });
                let patient = c
                    .oldest_outranking_loaded
                    .is_none_or(|o| o.waited(now) < patience);
                // Within a plan, a warm job passes the head only while the
                // head has waited less than two thirds of the bound: a job of an
                // unloaded model is not left to wait until it is overdue.
                let fair = |warm: &QueuedJob<Id>| {
                    warm.priority != best.priority || best.waited(now) < self.max_wait_ms * 2 / 3
                };
                if let Some(warm) = c.best_loaded.filter(|w| patient && fair(w)) {
                    return Some((warm, Reason::Affinity));
                }
                // Delay scheduling: the head's model is loaded on another
                // worker, which will take it warm when it is free; loading it
                // here too costs a load and evicts a model someone else's
                // jobs need. For a while, take a warm job, or one that needs
                // a load wherever it runs, or nothing.
                let hold = c.best_load_ms.map_or(self.locality_wait_ms, |load| {
                    load.min(self.locality_wait_ms)
                });
                if c.best_elsewhere && best.waited(now) < hold {
                    if let Some(warm) = c.best_loaded.filter(|w| fair(w)) {
                        return Some((warm, Reason::Affinity));
                    }
                    return c.best_unplaced.map(|cold| (cold, Reason::Priority));
                }
                Some((best, Reason::Priority))
            }
        }
    }

    /// Convenience for callers holding the whole queue (simulator, tests).
    pub fn choose_from_queue<'q, Id: Ord>(
        &self,
        queue: impl IntoIterator<Item = &'q QueuedJob<Id>>,
        worker: &WorkerView<'_>,
        now: Millis,
    ) -> Option<(&'q QueuedJob<Id>, Reason)> {
        self.choose(&Candidates::from_queue(queue, worker), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MODELS: [&str; 4] = ["m0", "m1", "m2", "m3"];
    const CAPS: [Capability; 2] = [Capability::Image, Capability::Video];

    fn job(id: u32, priority: u8, model: &str, queued_at: Millis) -> QueuedJob<u32> {
        tagged(id, priority, model, queued_at, 0)
    }

    fn tagged(id: u32, priority: u8, model: &str, queued_at: Millis, tag: i64) -> QueuedJob<u32> {
        QueuedJob {
            id,
            capability: Capability::Image,
            model: model.into(),
            priority: Priority(priority),
            fair_tag: tag,
            queued_at,
        }
    }

    fn all_models() -> Vec<String> {
        MODELS.iter().map(|m| (*m).to_owned()).collect()
    }

    fn policy() -> Policy {
        Policy {
            kind: PolicyKind::Tessera,
            max_wait_ms: 1_000,
            affinity_patience_ms: 100,
            locality_wait_ms: 300,
        }
    }

    /// A job with any tag: the tags of a queue are unrelated to the jobs'
    /// ages (ties included), so the policy's rules must hold for any.
    fn arb_job(id: u32) -> impl Strategy<Value = QueuedJob<u32>> {
        (0u8..4, 0usize..4, 0usize..2, 0i64..2_000, 0i64..40).prop_map(move |(p, m, c, t, tag)| {
            QueuedJob {
                id,
                capability: CAPS[c],
                model: MODELS[m].to_owned(),
                priority: Priority(p),
                fair_tag: tag,
                queued_at: t,
            }
        })
    }

    fn arb_queue() -> impl Strategy<Value = Vec<QueuedJob<u32>>> {
        (0usize..40).prop_flat_map(|n| (0..n as u32).map(arb_job).collect::<Vec<_>>())
    }

    fn arb_subset<T: Clone + std::fmt::Debug + 'static>(
        items: &'static [T],
    ) -> impl Strategy<Value = Vec<T>> {
        proptest::sample::subsequence(items.to_vec(), 0..=items.len())
    }

    #[test]
    fn the_seed_rule_looks_only_at_the_head_of_each_priority() {
        let seed = Policy {
            kind: PolicyKind::Seed,
            ..policy()
        };
        let models = all_models();
        let loaded = vec!["m0".to_owned()];
        let w = WorkerView {
            capabilities: &[Capability::Image],
            models: &models,
            loaded_models: &loaded,
            load_ms: &[],
            warm_elsewhere: &[],
        };
        // PRO's head needs m1; FREE's head has m0 loaded: the seed takes FREE's head.
        let queue = vec![job(1, 2, "m1", 0), job(2, 0, "m0", 5), job(3, 2, "m0", 9)];
        let (chosen, reason) = seed.choose_from_queue(&queue, &w, 10).unwrap();
        assert_eq!((chosen.id, reason), (2, Reason::Affinity));
        // An m0 job behind PRO's head is not looked at once FREE has none: the
        // highest-priority job runs, and the model is loaded.
        let queue = vec![job(1, 2, "m1", 0), job(3, 2, "m0", 9)];
        let (chosen, reason) = seed.choose_from_queue(&queue, &w, 10).unwrap();
        assert_eq!((chosen.id, reason), (1, Reason::Priority));
        // Tessera takes the warm PRO job behind the head (same priority).
        let (chosen, _) = policy().choose_from_queue(&queue, &w, 10).unwrap();
        assert_eq!(chosen.id, 3);
    }

    proptest! {
        #[test]
        fn chooses_only_runnable_jobs_and_something_when_possible(
            queue in arb_queue(),
            caps in arb_subset(&CAPS),
            loaded in arb_subset(&MODELS),
            now in 0i64..4_000,
        ) {
            let models = all_models();
            let loaded: Vec<String> = loaded.iter().map(|m| (*m).to_owned()).collect();
            let w = WorkerView { capabilities: &caps, models: &models, loaded_models: &loaded, load_ms: &[], warm_elsewhere: &[] };
            let chosen = policy().choose_from_queue(&queue, &w, now);
            let runnable = queue.iter().any(|j| w.can_run(j));
            prop_assert_eq!(chosen.is_some(), runnable);
            if let Some((j, _)) = chosen {
                prop_assert!(w.can_run(j));
            }
        }

        /// Delay scheduling never holds a job past the locality wait, and
        /// while it holds one it takes only a warm job or one whose model no
        /// worker has.
        #[test]
        fn the_locality_wait_holds_a_job_no_longer_than_it_says(
            queue in arb_queue(),
            loaded in arb_subset(&MODELS),
            elsewhere in arb_subset(&MODELS),
            now in 0i64..4_000,
        ) {
            let p = policy();
            let models = all_models();
            let loaded: Vec<String> = loaded.iter().map(|m| (*m).to_owned()).collect();
            let elsewhere: Vec<String> = elsewhere.iter().map(|m| (*m).to_owned()).collect();
            let w = WorkerView { capabilities: &CAPS, models: &models, loaded_models: &loaded, load_ms: &[], warm_elsewhere: &elsewhere };
            let alone = WorkerView { warm_elsewhere: &[], ..w };
            let chosen = p.choose_from_queue(&queue, &w, now);
            let without = p.choose_from_queue(&queue, &alone, now);
            if queue.iter().all(|j| j.waited(now) >= p.locality_wait_ms) {
                prop_assert_eq!(chosen.map(|c| c.0.id), without.map(|c| c.0.id));
            }
            if chosen.map(|c| c.0.id) != without.map(|c| c.0.id) {
                // Held: the job chosen alone, cold here, warm elsewhere,
                // younger than the wait.
                let (held, _) = without.expect("a job to hold");
                prop_assert!(held.waited(now) < p.locality_wait_ms, "{held:?}");
                prop_assert!(!w.has_loaded(&held.model) && w.warm_elsewhere(&held.model), "{held:?}");
                if let Some((j, _)) = chosen {
                    prop_assert!(w.has_loaded(&j.model) || !w.warm_elsewhere(&j.model), "{j:?}");
                }
            }
        }

        #[test]
        fn strict_priority_when_no_model_is_loaded(
            queue in arb_queue(),
            now in 0i64..2_000,
        ) {
            let models = all_models();
            let w = WorkerView { capabilities: &CAPS, models: &models, loaded_models: &[], load_ms: &[], warm_elsewhere: &[] };
            let p = policy();
            let overdue = queue.iter().any(|j| j.waited(now) >= p.max_wait_ms);
            prop_assume!(!overdue);
            if let Some((j, reason)) = p.choose_from_queue(&queue, &w, now) {
                prop_assert_eq!(reason, Reason::Priority);
                for other in &queue {
                    prop_assert!(other.priority <= j.priority);
                    if other.priority == j.priority {
                        // Within a priority, fair order: tag, then arrival.
                        prop_assert!((other.fair_tag, other.queued_at) >= (j.fair_tag, j.queued_at));
                    }
                }
            }
        }

        #[test]
        fn a_loaded_model_wins_within_its_priority(
            queue in arb_queue(),
            loaded in arb_subset(&MODELS),
            now in 0i64..2_000,
        ) {
            let models = all_models();
            let loaded: Vec<String> = loaded.iter().map(|m| (*m).to_owned()).collect();
            let w = WorkerView { capabilities: &CAPS, models: &models, loaded_models: &loaded, load_ms: &[], warm_elsewhere: &[] };
            let p = policy();
            prop_assume!(!queue.iter().any(|j| j.waited(now) >= p.max_wait_ms));
            let Some(top) = queue.iter().map(|j| j.priority).max() else { return Ok(()) };
            let warm_at_top = queue.iter().any(|j| j.priority == top && w.has_loaded(&j.model));
            let head = queue.iter().min_by(|a, b| queue_order(a, b)).unwrap();
            let (j, reason) = p.choose_from_queue(&queue, &w, now).unwrap();
            if warm_at_top && head.waited(now) < p.max_wait_ms * 2 / 3 {
                prop_assert_eq!(reason, Reason::Affinity);
                prop_assert_eq!(j.priority, top);
                prop_assert!(w.has_loaded(&j.model));
            } else if warm_at_top {
                // The head has waited two thirds of the bound: it goes, warm or not.
                prop_assert_eq!(j.id, head.id);
            }
            // Affinity never passes over a higher-priority job that ran out of patience.
            for other in &queue {
                if other.priority > j.priority {
                    prop_assert!(other.waited(now) < p.affinity_patience_ms);
                }
            }
        }

        #[test]
        fn overdue_jobs_go_first_and_late_ones_in_age_order(
            queue in arb_queue(),
            caps in arb_subset(&CAPS),
            loaded in arb_subset(&MODELS),
            now in 0i64..4_000,
        ) {
            let models = all_models();
            let loaded: Vec<String> = loaded.iter().map(|m| (*m).to_owned()).collect();
            let w = WorkerView { capabilities: &caps, models: &models, loaded_models: &loaded, load_ms: &[], warm_elsewhere: &[] };
            let p = policy();
            if let Some((j, _)) = p.choose_from_queue(&queue, &w, now) {
                let runnable: Vec<_> = queue.iter().filter(|o| w.can_run(o)).collect();
                for other in &runnable {
                    // Overdue jobs go before every job that is not.
                    if other.waited(now) >= p.max_wait_ms {
                        prop_assert!(j.waited(now) >= p.max_wait_ms);
                    }
                    // Past twice the bound, strictly the oldest.
                    if other.waited(now) >= 2 * p.max_wait_ms {
                        prop_assert!(j.queued_at <= other.queued_at);
                    }
                }
                // An overdue job younger than the oldest runs only for its loaded model.
                let oldest = runnable.iter().map(|o| o.queued_at).min().unwrap();
                if j.waited(now) >= p.max_wait_ms && j.queued_at > oldest {
                    prop_assert!(w.has_loaded(&j.model));
                }
            }
        }

        /// One worker drains a queue that keeps receiving warm-model FREE jobs
        /// from one user, fairly tagged per priority with the others' jobs.
        /// Once a job has waited twice the bound only jobs queued before it
        /// start ahead of it, and every job is served: neither the stream nor
        /// the tags can starve anyone.
        #[test]
        fn no_job_starves_under_a_stream_of_warm_jobs(
            arrivals in proptest::collection::vec((0u8..4, 0usize..4, 1u32..6, 0i64..4), 1..120),
            stream_every in 1usize..4,
        ) {
            use std::collections::HashMap;
            use crate::fair::FairQueue;
            let mut fair: HashMap<u8, FairQueue<u32>> = HashMap::new();
            let p = policy();
            let service = 50; // ms per job
            let models = all_models();
            let mut loaded = vec!["m0".to_owned()];
            let mut queue: Vec<QueuedJob<u32>> = Vec::new();
            let mut now = 0;
            let mut next_id = 0u32;
            let mut pending = arrivals.into_iter();
            // (job, dispatched at), in dispatch order.
            let mut dispatched: Vec<(QueuedJob<u32>, Millis)> = Vec::new();
            for step in 0..2_500usize {
                if let Some((prio, m, user, tokens)) = pending.next() {
                    let tag = fair.entry(prio).or_default().enqueue(user, tokens);
                    queue.push(tagged(next_id, prio, MODELS[m], now, tag));
                    next_id += 1;
                }
                if step % stream_every == 0 && step < 1_000 {
                    let tag = fair.entry(0).or_default().enqueue(0, 1);
                    queue.push(tagged(next_id, 0, "m0", now, tag));
                    next_id += 1;
                }
                let w = WorkerView { capabilities: &CAPS, models: &models, loaded_models: &loaded, load_ms: &[], warm_elsewhere: &[] };
                let Some((chosen, _)) = p.choose_from_queue(&queue, &w, now) else { continue };
                let chosen = chosen.clone();
                let head = queue
                    .iter()
                    .filter(|j| j.priority == chosen.priority)
                    .map(|j| j.fair_tag)
                    .min()
                    .expect("the chosen job is queued");
                fair.entry(chosen.priority.0).or_default().claimed(head);
                queue.retain(|j| j.id != chosen.id);
                loaded = vec![chosen.model.clone()];
                dispatched.push((chosen, now));
                now += service;
            }
            prop_assert!(queue.is_empty(), "{} jobs never ran", queue.len());
            prop_assert_eq!(dispatched.len(), next_id as usize);
            for (i, (j, at)) in dispatched.iter().enumerate() {
                let late_at = j.queued_at + 2 * p.max_wait_ms;
                for (earlier, earlier_at) in &dispatched[..i] {
                    if *earlier_at >= late_at {
                        prop_assert!(
                            earlier.queued_at <= j.queued_at,
                            "job {} (queued {}) late at {} was passed over at {} by younger job {} (queued {}); it ran at {}",
                            j.id, j.queued_at, late_at, earlier_at, earlier.id, earlier.queued_at, at
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn jobs_ahead_counts_in_queue_order() {
        let mut head = vec![job(1, 0, "m0", 5), job(2, 3, "m0", 9), job(3, 0, "m0", 1)];
        head.sort_by(|a, b| a.best_key().cmp(&b.best_key()));
        assert_eq!(head.iter().map(|j| j.id).collect::<Vec<_>>(), vec![2, 3, 1]);
        assert_eq!(jobs_ahead(&head, &head[2].clone()), 2);
        assert_eq!(jobs_ahead(&head, &job(9, 3, "m1", 0)), 0);
        assert_eq!(jobs_ahead(&head, &job(9, 0, "m1", 3)), 2);
        assert_eq!(jobs_ahead(&head, &job(9, 1, "m1", 3)), 1);
        // Within a priority the fair tag comes before age.
        let mut head = vec![
            tagged(1, 0, "m0", 1, 7),
            tagged(2, 0, "m0", 5, 3),
            tagged(3, 1, "m0", 9, 9),
        ];
        head.sort_by(|a, b| a.best_key().cmp(&b.best_key()));
        assert_eq!(head.iter().map(|j| j.id).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(jobs_ahead(&head, &tagged(9, 0, "m1", 0, 5)), 2);
        assert_eq!(jobs_ahead(&head, &tagged(9, 0, "m1", 0, 3)), 1);
    }

    #[test]
    fn affinity_yields_to_a_higher_priority_job_after_patience() {
        let p = policy();
        let pro_cold = job(1, 2, "m1", 0);
        let free_warm = job(2, 0, "m0", 0);
        let queue = [pro_cold.clone(), free_warm.clone()];
        let models = all_models();
        let loaded = vec!["m0".to_owned()];
        let w = WorkerView {
            capabilities: &CAPS,
            models: &models,
            loaded_models: &loaded,
            load_ms: &[],
            warm_elsewhere: &[],
        };
        let (j, r) = p.choose_from_queue(&queue, &w, 50).unwrap();
        assert_eq!((j.id, r), (2, Reason::Affinity));
        let (j, r) = p.choose_from_queue(&queue, &w, 100).unwrap();
        assert_eq!((j.id, r), (1, Reason::Priority));
    }

    #[test]
    fn a_job_whose_model_another_worker_holds_is_left_to_it_for_the_locality_wait() {
        let p = policy();
        let pro_elsewhere = job(1, 2, "m1", 0);
        let free_unplaced = job(2, 0, "m2", 0);
        let free_warm = job(3, 0, "m0", 0);
        let models = all_models();
        let loaded = vec!["m0".to_owned()];
        let elsewhere = vec!["m1".to_owned()];
        let w = WorkerView {
            capabilities: &CAPS,
            models: &models,
            loaded_models: &loaded,
            load_ms: &[],
            warm_elsewhere: &elsewhere,
        };
        let pick = |queue: &[QueuedJob<u32>], now| {
            p.choose_from_queue(queue, &w, now).map(|(j, r)| (j.id, r))
        };
        // Past affinity patience (100 ms) but inside the locality wait
        // (300 ms): the warm FREE job, not a load of the PRO job's model.
        let queue = [pro_elsewhere.clone(), free_unplaced.clone(), free_warm];
        assert_eq!(pick(&queue, 200), Some((3, Reason::Affinity)));
        // No warm job: the one whose model no worker holds, a load anyway.
        let queue = [pro_elsewhere.clone(), free_unplaced];
        assert_eq!(pick(&queue, 200), Some((2, Reason::Priority)));
        // Nothing else: the worker waits for the PRO job's worker ...
        let queue = [pro_elsewhere];
        assert_eq!(pick(&queue, 200), None);
        // ... until the locality wait is over.
        assert_eq!(pick(&queue, 300), Some((1, Reason::Priority)));
        // A load learned to cost 150 ms here is not worth waiting 300 for.
        let cheap = [("m1".to_owned(), 150)];
        let learned = WorkerView {
            load_ms: &cheap,
            ..w
        };
        let (j, _) = p.choose_from_queue(&queue, &learned, 200).unwrap();
        assert_eq!(j.id, 1);
        // Off, the PRO job is loaded here at once.
        let off = Policy {
            locality_wait_ms: 0,
            ..p
        };
        let (j, _) = off.choose_from_queue(&queue, &w, 200).unwrap();
        assert_eq!(j.id, 1);
    }

    #[test]
    fn a_model_with_more_jobs_queued_than_workers_holding_it_is_not_held() {
        let holders = [
            ("m0".to_owned(), 1),
            ("m1".to_owned(), 2),
            ("m2".to_owned(), 1),
        ];
        let queue = [
            job(1, 0, "m0", 0),
            job(2, 0, "m0", 1),
            job(3, 1, "m1", 0),
            job(4, 0, "m1", 0),
            job(5, 0, "m3", 0),
        ];
        // m0: two jobs, one worker; m1: two jobs, two workers; m2: none queued.
        assert_eq!(held_elsewhere(&holders, &queue), ["m1", "m2"]);
        let loaded: [Vec<String>; 2] = [
            vec!["m0".into(), "m1".into()],
            vec!["m1".into(), "m2".into()],
        ];
        assert_eq!(super::holders(loaded.iter().flatten()), holders);
    }

    #[test]
    fn a_cheap_load_shortens_patience_to_what_it_saves() {
        let p = policy();
        let queue = [job(1, 2, "m1", 0), job(2, 0, "m0", 0)];
        let models = all_models();
        let loaded = vec!["m0".to_owned()];
        let view = |load_ms| WorkerView {
            capabilities: &CAPS,
            models: &models,
            loaded_models: &loaded,
            load_ms,
            warm_elsewhere: &[],
        };
        // m1 loads in 30 ms here: the PRO job is passed over for 30 ms, not 100.
        let cheap = [("m1".to_owned(), 30)];
        let (j, r) = p.choose_from_queue(&queue, &view(&cheap), 29).unwrap();
        assert_eq!((j.id, r), (2, Reason::Affinity));
        let (j, r) = p.choose_from_queue(&queue, &view(&cheap), 30).unwrap();
        assert_eq!((j.id, r), (1, Reason::Priority));
        // A load dearer than the patience changes nothing; another model's load
        // is not the one saved.
        let dear = [("m1".to_owned(), 5_000)];
        let (j, _) = p.choose_from_queue(&queue, &view(&dear), 99).unwrap();
        assert_eq!(j.id, 2);
        let other = [("m2".to_owned(), 1)];
        let (j, _) = p.choose_from_queue(&queue, &view(&other), 99).unwrap();
        assert_eq!(j.id, 2);
        // A model that loads in no time is never worth a higher plan's wait.
        let free = [("m1".to_owned(), 0)];
        let (j, r) = p.choose_from_queue(&queue, &view(&free), 0).unwrap();
        assert_eq!((j.id, r), (1, Reason::Priority));
    }

    #[test]
    fn the_wait_bound_beats_priority_and_affinity() {
        let p = policy();
        let old_free_cold = job(1, 0, "m1", 0);
        let new_pro_warm = job(2, 3, "m0", 999);
        let queue = [old_free_cold, new_pro_warm];
        let models = all_models();
        let loaded = vec!["m0".to_owned()];
        let w = WorkerView {
            capabilities: &CAPS,
            models: &models,
            loaded_models: &loaded,
            load_ms: &[],
            warm_elsewhere: &[],
        };
        assert_eq!(p.choose_from_queue(&queue, &w, 999).unwrap().0.id, 2);
        let (j, r) = p.choose_from_queue(&queue, &w, 1_000).unwrap();
        assert_eq!((j.id, r), (1, Reason::Overdue));
    }

    #[test]
    fn the_comparison_policies_do_what_their_names_say() {
        let queue = [job(1, 0, "m0", 0), job(2, 3, "m1", 10)];
        let models = all_models();
        let loaded = vec!["m0".to_owned()];
        let w = WorkerView {
            capabilities: &CAPS,
            models: &models,
            loaded_models: &loaded,
            load_ms: &[],
            warm_elsewhere: &[],
        };
        let fifo = Policy {
            kind: PolicyKind::Fifo,
            ..policy()
        };
        let strict = Policy {
            kind: PolicyKind::StrictPriority,
            ..policy()
        };
        assert_eq!(fifo.choose_from_queue(&queue, &w, 20).unwrap().0.id, 1);
        assert_eq!(strict.choose_from_queue(&queue, &w, 20).unwrap().0.id, 2);
    }
}
