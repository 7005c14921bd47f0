//! A scheduling simulator: a workload replayed against simulated GPUs in
//! simulated time, deciding with the same [`Policy::choose`] the scheduler
//! runs, to compare policies on what they cost and what users wait.
//!
//! The model (docs/simulation.md):
//!
//! - **Jobs** arrive as a Poisson process with a plan, a user of that plan and
//!   a model drawn from the workload's shares; each job's run time, load time
//!   and warm overhead are drawn when it arrives, so every policy sees exactly
//!   the same jobs and pays exactly the same costs for the same choices.
//! - **Users**: each plan's arrivals are spread over its users with a skewed
//!   but fixed draw (user `i` of a plan weighs `1 / (i + 1)^skew`), and one
//!   optional *flooding* user of a plan submits at a rate of their own (drawn
//!   from a separate stream, so the other jobs are the same with and without
//!   them). Jobs carry fair tags from [`crate::fair::FairQueue`] per queue
//!   (capability and priority), as the scheduler computes them; every job
//!   costs 1 token in the tags (the workload has one image size).
//! - **GPU memory**: each GPU has `gpu_gib` of memory and each model a
//!   footprint; a GPU keeps models resident while they fit and evicts the
//!   least recently used to make room. A job on a resident model pays a small
//!   overhead (warm), on another model a load. The policy sees the resident
//!   set as the worker's loaded models.
//! - **Admission** (optional, [`Admission`]): each arrival goes through
//!   [`crate::admission::decide`] with the inputs the scheduler would read
//!   (the queue's counts, the GPUs, the mean of the last 50 run times, the
//!   user's queued jobs); refused jobs never queue.
//! - **Estimates**: each accepted job's estimate is what the scheduler would
//!   show ([`crate::admission::start_in`] over the jobs ahead in queue
//!   order, the mean run time measured so far), checked against its start.
//!
//! Free GPUs take work in index order whenever a job arrives or a run ends.
//! Measured over the horizon: completed jobs per GPU-hour, the share of GPU
//! time spent loading models, waits (queued to started) per plan and per
//! user, refusals, Jain's fairness index among a plan's users, estimate
//! errors, and the longest wait. Jobs still queued at the end count with the
//! age they reached, so a policy cannot look good by never starting a job.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::admission::{self, Inputs, Limits};
use crate::fair::FairQueue;
use crate::policy::{held_elsewhere, holders, queue_order, Policy, QueuedJob, WorkerView};
use crate::{Capability, Millis, Priority};

/// One user submitting far more than the others, on one plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flood {
    /// Index of the plan in [`Workload::plans`].
    pub plan: usize,
    /// The flooding user's own arrival rate, jobs per hour (Poisson).
    pub jobs_per_hour: f64,
}

/// What arrives and what it costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Simulated GPUs, each one worker that can run every model.
    pub gpus: usize,
    /// Simulated time, hours.
    pub hours: f64,
    /// Mean arrival rate, jobs per hour (the flooding user's excluded).
    pub jobs_per_hour: f64,
    /// Plans: id, priority, share of arrivals.
    pub plans: Vec<(String, Priority, f64)>,
    /// Users per plan, in the order of `plans` (a plan not listed has one).
    pub users: Vec<usize>,
    /// How skewed a plan's arrivals are over its users: user `i` (from 0)
    /// weighs `1 / (i + 1)^user_skew`; 0 spreads them evenly.
    pub user_skew: f64,
    /// One flooding user, if any.
    pub flood: Option<Flood>,
    /// Models: id, share of arrivals.
    pub models: Vec<(String, f64)>,
    /// GPU memory of each GPU, GiB.
    pub gpu_gib: f64,
    /// Models' footprints in GPU memory, GiB; a model not listed takes
    /// [`DEFAULT_FOOTPRINT_GIB`].
    pub footprints_gib: Vec<(String, f64)>,
    /// Run time of a job, seconds (uniform between the two).
    pub run_secs: (f64, f64),
    /// Loading a model that is not in memory, seconds.
    pub load_secs: (f64, f64),
    /// Starting a job on a model already in memory, seconds.
    pub warm_secs: (f64, f64),
    /// Seed of the random draws: the same seed gives the same jobs.
    pub seed: u64,
}

/// The footprint of a model the workload does not list, GiB.
pub const DEFAULT_FOOTPRINT_GIB: f64 = 7.0;

/// How many completed run times the measured mean is taken over (the
/// scheduler's `estimates.sample_size` default).
pub const RUN_SAMPLES: usize = 50;

impl Default for Workload {
    /// The seed's figures: 20-30 s an image, 30-60 s a model load, 0-5 s on a
    /// warm model; the seed's four plans with most users on FREE; four image
    /// models of unequal popularity; four GPUs for 8 hours at 340 jobs an
    /// hour: 35 % more than they can run loading a model for most jobs
    /// (FIFO), well within what they run when they rarely load one.
    ///
    /// Users: 200 on FREE, 60 on STARTER, 30 on PRO, 3 admins, skew 0.5 (the
    /// busiest FREE user sends about 4 % of FREE's jobs), no flooding user.
    ///
    /// Memory: 16 GiB a GPU (a common 16 GB card) and footprints of fp16
    /// checkpoints with their text encoders and VAE: SDXL and Playground
    /// v2.5 (an SDXL architecture) 7 GiB, FLUX.1 schnell (fp8) 12 GiB,
    /// SD 1.5 3 GiB. Two models fit beside each other at most (never FLUX
    /// with SDXL), so which models a GPU keeps still matters.
    fn default() -> Self {
        Self {
            gpus: 4,
            hours: 8.0,
            jobs_per_hour: 340.0,
            plans: vec![
                ("free".into(), Priority::FREE, 0.60),
                ("starter".into(), Priority::STARTER, 0.25),
                ("pro".into(), Priority::PRO, 0.14),
                ("admin".into(), Priority::ADMIN, 0.01),
            ],
            users: vec![200, 60, 30, 3],
            user_skew: 0.5,
            flood: None,
            models: vec![
                ("sdxl-1.0".into(), 0.40),
                ("flux-schnell".into(), 0.30),
                ("sd-1.5".into(), 0.20),
                ("playground-v2.5".into(), 0.10),
            ],
            gpu_gib: 16.0,
            footprints_gib: vec![
                ("sdxl-1.0".into(), 7.0),
                ("flux-schnell".into(), 12.0),
                ("sd-1.5".into(), 3.0),
                ("playground-v2.5".into(), 7.0),
            ],
            run_secs: (20.0, 30.0),
            load_secs: (30.0, 60.0),
            warm_secs: (0.0, 5.0),
            seed: 7,
        }
    }
}

impl Workload {
    /// The farm's capacity, jobs per hour: what the GPUs complete when every
    /// job pays a mean run and warm start and, as often as its model differs
    /// from the previous job's when models are drawn independently
    /// (`1 − Σ share²`, the loads of arrival order with one model per GPU), a
    /// mean load. Workloads are stated as multiples of it (`--load`).
    pub fn capacity_per_hour(&self) -> f64 {
        let mean = |(lo, hi): (f64, f64)| (lo + hi) / 2.0;
        let total: f64 = self.models.iter().map(|m| m.1).sum();
        let same: f64 = self
            .models
            .iter()
            .map(|m| (m.1 / total.max(f64::MIN_POSITIVE)).powi(2))
            .sum();
        let cost = mean(self.run_secs) + mean(self.warm_secs) + (1.0 - same) * mean(self.load_secs);
        self.gpus as f64 * 3600.0 / cost.max(f64::MIN_POSITIVE)
    }

    /// The model's footprint, GiB.
    pub fn footprint(&self, model: &str) -> f64 {
        self.footprints_gib
            .iter()
            .find(|(m, _)| m == model)
            .map_or(DEFAULT_FOOTPRINT_GIB, |f| f.1)
    }

    fn users_of(&self, plan: usize) -> usize {
        self.users.get(plan).copied().unwrap_or(1).max(1)
    }
}

/// Admission control in a replay: per plan (in the workload's order), the
/// bound on a new job's expected wait and the cap on a user's queued jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    pub bounds_ms: Vec<Millis>,
    pub caps: Vec<Option<u32>>,
}

impl Admission {
    /// The simulator's defaults, relative to the policy's wait bound: FREE
    /// admits expected waits up to a ninth of it, STARTER two ninths, PRO
    /// four ninths, ADMIN all of it (100, 200, 400 and 900 s with the
    /// default 15 minutes); a FREE user may have 2 jobs queued, STARTER 8,
    /// PRO 16, ADMIN any (a FREE cap of 4 let a flooding user's queued jobs
    /// take a larger share of FREE's admission bound from everyone). The
    /// margin below the wait bound is for what the expected wait cannot see:
    /// higher plans' jobs that arrive later and go first (at twice capacity
    /// they take 40 % of the GPUs). Looser bounds (a third, a half, two
    /// thirds) kept more of a queue for affinity, about 1.3x FIFO's
    /// throughput at twice capacity against 1.24x, but let accepted jobs
    /// start past the wait bound and the estimates miss by about 30 % at
    /// twice capacity (docs/simulation.md).
    pub fn relative_to(w: &Workload, policy: &Policy) -> Admission {
        let (bounds_ms, caps) = w
            .plans
            .iter()
            .map(|(_, p, _)| {
                let (num, den, cap) = match *p {
                    p if p >= Priority::ADMIN => (1, 1, None),
                    p if p >= Priority::PRO => (4, 9, Some(16)),
                    p if p >= Priority::STARTER => (2, 9, Some(8)),
                    _ => (1, 9, Some(2)),
                };
                (policy.max_wait_ms * num / den, cap)
            })
            .unzip();
        Admission { bounds_ms, caps }
    }
}

/// Waits of one plan's jobs, seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanWaits {
    pub plan: String,
    /// Accepted jobs (their waits are the figures below).
    pub jobs: usize,
    /// Jobs admission refused.
    pub refused: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// p95 wait of the jobs of the plan's regular users (the flooding
    /// user's left out).
    pub regular_p95: f64,
    /// Jain's fairness index among the plan's users (the flooding user
    /// included) of the jobs each started against their max-min fair share
    /// of what the plan started ([`fair_service`]); 1 when perfectly fair.
    pub jain: f64,
    /// Median estimate error of the plan's started jobs ([`EtaError`]).
    pub eta_median: f64,
    /// Mean estimated and actual wait of the plan's started jobs, s.
    pub eta_mean: (f64, f64),
}

/// What happened to the flooding user's jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlooderWaits {
    pub arrived: usize,
    pub refused: usize,
    pub started: usize,
    pub p95: f64,
}

/// How far the estimates shown at arrival were from the actual starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EtaError {
    /// Accepted jobs that started (those still queued at the end have no
    /// actual start).
    pub jobs: usize,
    /// Median and 90th percentile of `|estimated − actual wait| /
    /// max(actual wait, mean run time)`.
    pub median: f64,
    pub p90: f64,
}

/// What one policy did with the workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub arrived: usize,
    pub refused: usize,
    pub completed: usize,
    pub completed_per_gpu_hour: f64,
    /// Share of all GPU time spent loading models (0-1).
    pub load_share: f64,
    pub model_loads: usize,
    /// Per plan, in the workload's order.
    pub waits: Vec<PlanWaits>,
    /// The longest any job waited, seconds (queued at the end included).
    pub longest_wait: f64,
    /// Accepted jobs that waited past the policy's wait bound (queued at
    /// the end included).
    pub past_wait_bound: usize,
    /// Accepted jobs that waited past their plan's admission bound (0
    /// without admission).
    pub past_admission_bound: usize,
    /// Jobs still queued when the horizon ended.
    pub queued_at_end: usize,
    pub flooder: Option<FlooderWaits>,
    pub eta: EtaError,
}

/// One arrival with every cost it may incur drawn in advance.
#[derive(Clone, Debug)]
struct Arrival {
    at: Millis,
    plan: usize,
    /// Index among all users: the plans' users in order, then the flooder.
    user: usize,
    model: usize,
    run: Millis,
    load: Millis,
    warm: Millis,
}

fn uniform_ms(rng: &mut StdRng, (lo, hi): (f64, f64)) -> Millis {
    let secs = if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    };
    (secs * 1000.0).round() as Millis
}

fn pick(rng: &mut StdRng, shares: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = shares.clone().sum();
    let mut x = rng.random_range(0.0..total.max(f64::MIN_POSITIVE));
    let mut last = 0;
    for (i, share) in shares.enumerate() {
        last = i;
        if x < share {
            return i;
        }
        x -= share;
    }
    last
}

/// Poisson arrival times below `horizon`, `per_hour` on average.
fn poisson(
    rng: &mut StdRng,
    per_hour: f64,
    horizon: Millis,
    mut each: impl FnMut(&mut StdRng, Millis),
) {
    let mean_gap_ms = 3_600_000.0 / per_hour.max(f64::MIN_POSITIVE);
    let mut t = 0.0f64;
    loop {
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        t += -u.ln() * mean_gap_ms;
        if t as Millis >= horizon {
            return;
        }
        each(rng, t as Millis);
    }
}

fn arrivals(w: &Workload) -> Vec<Arrival> {
    let horizon = (w.hours * 3_600_000.0) as Millis;
    let offsets: Vec<usize> = (0..w.plans.len())
        .scan(0, |next, p| {
            let at = *next;
            *next += w.users_of(p);
            Some(at)
        })
        .collect();
    let flooder = (0..w.plans.len()).map(|p| w.users_of(p)).sum::<usize>();
    let weights: Vec<Vec<f64>> = (0..w.plans.len())
        .map(|p| {
            (0..w.users_of(p))
                .map(|i| 1.0 / ((i + 1) as f64).powf(w.user_skew))
                .collect()
        })
        .collect();
    let draw = |rng: &mut StdRng, at: Millis, plan: usize, user: usize| Arrival {
        at,
        plan,
        user,
        model: pick(rng, w.models.iter().map(|m| m.1)),
        run: uniform_ms(rng, w.run_secs),
        load: uniform_ms(rng, w.load_secs),
        warm: uniform_ms(rng, w.warm_secs),
    };
    let mut out = Vec::new();
    let mut rng = StdRng::seed_from_u64(w.seed);
    poisson(&mut rng, w.jobs_per_hour, horizon, |rng, at| {
        let plan = pick(rng, w.plans.iter().map(|p| p.2));
        let user = offsets[plan] + pick(rng, weights[plan].iter().copied());
        out.push(draw(rng, at, plan, user));
    });
    if let Some(flood) = w.flood.as_ref().filter(|f| f.plan < w.plans.len()) {
        // A stream of its own: the other users' jobs are the same with and
        // without the flood.
        let mut rng = StdRng::seed_from_u64(w.seed ^ 0x9e37_79b9_7f4a_7c15);
        poisson(&mut rng, flood.jobs_per_hour, horizon, |rng, at| {
            out.push(draw(rng, at, flood.plan, flooder));
        });
        out.sort_by_key(|a| a.at);
    }
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Jain's fairness index of `xs`: `(Σx)² / (n · Σx²)`, from `1/n` (one
/// gets everything) to 1 (all equal); 1 for no values or all zero.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || squares <= 0.0 {
        1.0
    } else {
        sum * sum / (xs.len() as f64 * squares)
    }
}

/// Max-min fair shares of `capacity` among `demands` (water-filling): each
/// gets their demand or an equal level, whichever is less, the level set so
/// that the shares use the whole capacity (or every demand is met).
pub fn max_min_shares(demands: &[f64], capacity: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
    let mut shares = vec![0.0; demands.len()];
    let mut left = capacity.max(0.0);
    for (k, &i) in order.iter().enumerate() {
        let level = left / (order.len() - k) as f64;
        let share = demands[i].max(0.0).min(level);
        shares[i] = share;
        left -= share;
    }
    shares
}

/// Each user's service against their max-min fair share of what the plan
/// got: `served / fair share` for every user who submitted a job, where the
/// shares divide the plan's started jobs among the users' demands (jobs
/// submitted, refused ones included). Jain's index over these is 1 when
/// every user got their fair share, whatever their demand, and falls as one
/// user takes more than theirs.
pub fn fair_service(demanded: &[f64], served: &[f64]) -> Vec<f64> {
    let total: f64 = served.iter().sum();
    let shares = max_min_shares(demanded, total);
    demanded
        .iter()
        .zip(served)
        .zip(shares)
        .filter(|((d, _), _)| **d > 0.0)
        .map(|((_, s), f)| if f > 0.0 { s / f } else { 1.0 })
        .collect()
}

struct Gpu {
    busy_until: Option<Millis>,
    /// The running job's time on the GPU (overhead and run), ms.
    running: Millis,
    /// Resident models (index) and when each was last used.
    resident: Vec<(usize, Millis)>,
    /// Their ids, for the policy.
    loaded: Vec<String>,
}

impl Gpu {
    /// Makes `model` resident at `now`; true when it had to be loaded.
    /// Evicts the least recently used models until it fits (all of them if
    /// it is larger than the memory).
    fn use_model(
        &mut self,
        model: usize,
        now: Millis,
        gib: &[f64],
        memory: f64,
        names: &[String],
    ) -> bool {
        if let Some(r) = self.resident.iter_mut().find(|r| r.0 == model) {
            r.1 = now;
            return false;
        }
        let used = |resident: &[(usize, Millis)]| resident.iter().map(|r| gib[r.0]).sum::<f64>();
        while !self.resident.is_empty() && used(&self.resident) + gib[model] > memory {
            let lru = (0..self.resident.len())
                .min_by_key(|&i| self.resident[i].1)
                .expect("a resident model");
            self.resident.swap_remove(lru);
        }
        self.resident.push((model, now));
        self.loaded = self.resident.iter().map(|r| names[r.0].clone()).collect();
        true
    }
}

/// One job's fate in a replay.
#[derive(Clone, Debug, Default)]
struct Fate {
    refused: bool,
    started: Option<Millis>,
    /// The estimated wait shown at arrival and the mean run time it used, s.
    estimate: Option<(f64, f64)>,
}

/// Replays `w` under `policy`, admitting every job.
pub fn simulate(w: &Workload, policy: Policy) -> Outcome {
    replay(w, policy, None)
}

/// Replays `w` under `policy` with admission control.
pub fn simulate_admitted(w: &Workload, policy: Policy, admission: &Admission) -> Outcome {
    replay(w, policy, Some(admission))
}

fn replay(w: &Workload, policy: Policy, admission: Option<&Admission>) -> Outcome {
    let jobs = arrivals(w);
    let horizon = (w.hours * 3_600_000.0) as Millis;
    let capabilities = [Capability::Image];
    let models: Vec<String> = w.models.iter().map(|m| m.0.clone()).collect();
    let gib: Vec<f64> = models.iter().map(|m| w.footprint(m)).collect();
    let default_run = (w.run_secs.0 + w.run_secs.1) / 2.0 + (w.warm_secs.0 + w.warm_secs.1) / 2.0;
    let mut gpus: Vec<Gpu> = (0..w.gpus)
        .map(|_| Gpu {
            busy_until: None,
            running: 0,
            resident: Vec::new(),
            loaded: Vec::new(),
        })
        .collect();
    let mut queue: Vec<QueuedJob<usize>> = Vec::new();
    let mut fair: HashMap<Priority, FairQueue<usize>> = HashMap::new();
    let mut fates: Vec<Fate> = vec![Fate::default(); jobs.len()];
    let mut queued_of_user: HashMap<usize, i64> = HashMap::new();
    // The last run times (overhead and run, as the scheduler measures
    // started to ended), ms.
    let mut recent: VecDeque<Millis> = VecDeque::with_capacity(RUN_SAMPLES);
    let (mut completed, mut loads, mut load_ms) = (0usize, 0usize, 0 as Millis);
    let mut next = 0usize;
    loop {
        let next_arrival = jobs.get(next).map(|j| j.at);
        let next_free = gpus.iter().filter_map(|g| g.busy_until).min();
        let now = match (next_arrival, next_free) {
            (Some(a), Some(f)) => a.min(f),
            (Some(a), None) => a,
            (None, Some(f)) => f,
            (None, None) => break,
        };
        if now >= horizon {
            break;
        }
        for gpu in &mut gpus {
            if gpu.busy_until == Some(now) {
                gpu.busy_until = None;
                completed += 1;
                if recent.len() == RUN_SAMPLES {
                    recent.pop_front();
                }
                recent.push_back(gpu.running);
            }
        }
        let measured = (!recent.is_empty())
            .then(|| recent.iter().sum::<Millis>() as f64 / recent.len() as f64 / 1000.0);
        while jobs.get(next).is_some_and(|j| j.at == now) {
            let id = next;
            next += 1;
            let j = &jobs[id];
            let (plan, priority) = (j.plan, w.plans[j.plan].1);
            let model = &models[j.model];
            if let Some(a) = admission {
                let cap = a.caps.get(plan).copied().flatten();
                let count = |of_model: bool| {
                    let mut by: Vec<(Priority, i64)> = Vec::new();
                    for q in queue.iter().filter(|q| !of_model || q.model == *model) {
                        match by.iter_mut().find(|(p, _)| *p == q.priority) {
                            Some((_, n)) => *n += 1,
                            None => by.push((q.priority, 1)),
                        }
                    }
                    by
                };
                let inputs = Inputs {
                    capability: Capability::Image,
                    model: model.clone(),
                    capacity: w.gpus,
                    measured_run_seconds: measured,
                    queued_by_priority: count(true),
                    queued_all_models_by_priority: count(false),
                    capacity_all_models: w.gpus,
                    oldest_wait_by_priority: {
                        let mut oldest: Vec<(Priority, f64)> = Vec::new();
                        for q in &queue {
                            let waited = (now - q.queued_at) as f64 / 1000.0;
                            match oldest.iter_mut().find(|(p, _)| *p == q.priority) {
                                Some((_, w)) => *w = w.max(waited),
                                None => oldest.push((q.priority, waited)),
                            }
                        }
                        oldest
                    },
                    user_queued: cap.map(|_| queued_of_user.get(&j.user).copied().unwrap_or(0)),
                    run_seconds: measured.unwrap_or(default_run),
                };
                let limits = Limits {
                    priority,
                    bound_ms: a.bounds_ms.get(plan).copied().unwrap_or(policy.max_wait_ms),
                    cap,
                };
                if admission::decide(&limits, model, &inputs).is_err() {
                    fates[id].refused = true;
                    continue;
                }
            }
            let tag = fair.entry(priority).or_default().enqueue(j.user, 1);
            let job = QueuedJob {
                id,
                capability: Capability::Image,
                model: model.clone(),
                priority,
                fair_tag: tag,
                queued_at: j.at,
            };
            // The estimate the job is shown: the jobs ahead of it in queue
            // order, in rounds of the GPUs, each a mean run.
            let ahead = queue
                .iter()
                .filter(|q| queue_order(q, &job).is_lt())
                .count() as u64;
            let run = measured.unwrap_or(default_run);
            let idle = gpus.iter().filter(|g| g.busy_until.is_none()).count();
            fates[id].estimate = Some((admission::start_in(ahead, w.gpus, idle, run), run));
            *queued_of_user.entry(j.user).or_default() += 1;
            queue.push(job);
        }
        for g in 0..gpus.len() {
            if gpus[g].busy_until.is_some() {
                continue;
            }
            // What the other GPUs hold, busy or free, as the scheduler's
            // registry reports it to the policy, where they are enough for
            // the model's queued jobs.
            let others = holders(
                gpus.iter()
                    .enumerate()
                    .filter(|(o, _)| *o != g)
                    .flat_map(|(_, other)| &other.loaded),
            );
            let elsewhere = held_elsewhere(&others, &queue);
            let gpu = &mut gpus[g];
            let view = WorkerView {
                capabilities: &capabilities,
                models: &models,
                loaded_models: &gpu.loaded,
                load_ms: &[],
                warm_elsewhere: &elsewhere,
            };
            // Nothing for this GPU (the policy may leave a job for the GPU
            // that has its model): the next GPU may still take one.
            let Some((chosen, _)) = policy.choose_from_queue(&queue, &view, now) else {
                continue;
            };
            let (id, priority) = (chosen.id, chosen.priority);
            // The claim moves the queue's virtual time to the head it found.
            let head = queue
                .iter()
                .filter(|q| q.priority == priority)
                .map(|q| q.fair_tag)
                .min()
                .expect("the chosen job is queued");
            fair.entry(priority).or_default().claimed(head);
            let at = queue
                .iter()
                .position(|q| q.id == id)
                .expect("chosen from the queue");
            queue.swap_remove(at);
            let a = &jobs[id];
            *queued_of_user.entry(a.user).or_default() -= 1;
            let overhead = if gpu.use_model(a.model, now, &gib, w.gpu_gib, &models) {
                loads += 1;
                load_ms += a.load.min(horizon - now);
                a.load
            } else {
                a.warm
            };
            fates[id].started = Some(now);
            gpu.running = overhead + a.run;
            gpu.busy_until = Some(now + overhead + a.run);
        }
    }
    summarize(
        w,
        &policy,
        admission,
        &jobs[..next],
        &fates[..next],
        horizon,
        Totals {
            completed,
            loads,
            load_ms,
            queued_at_end: queue.len(),
        },
    )
}

struct Totals {
    completed: usize,
    loads: usize,
    load_ms: Millis,
    queued_at_end: usize,
}

fn summarize(
    w: &Workload,
    policy: &Policy,
    admission: Option<&Admission>,
    jobs: &[Arrival],
    fates: &[Fate],
    horizon: Millis,
    t: Totals,
) -> Outcome {
    let flooder = (0..w.plans.len()).map(|p| w.users_of(p)).sum::<usize>();
    let users = flooder + 1;
    let mut waits: Vec<Vec<f64>> = vec![Vec::new(); w.plans.len()];
    let mut regular: Vec<Vec<f64>> = vec![Vec::new(); w.plans.len()];
    let mut refused = vec![0usize; w.plans.len()];
    let mut demanded = vec![0.0f64; users];
    let mut served = vec![0.0f64; users];
    let mut flood_waits = Vec::new();
    let (mut flood_refused, mut flood_started) = (0usize, 0usize);
    let (mut past_wait_bound, mut past_admission_bound) = (0usize, 0usize);
    let mut errors = Vec::new();
    let mut plan_errors: Vec<Vec<f64>> = vec![Vec::new(); w.plans.len()];
    let mut plan_means = vec![(0.0f64, 0.0f64, 0usize); w.plans.len()];
    for (a, f) in jobs.iter().zip(fates) {
        demanded[a.user] += 1.0;
        if f.refused {
            refused[a.plan] += 1;
            flood_refused += usize::from(a.user == flooder);
            continue;
        }
        let wait_ms = f.started.unwrap_or(horizon) - a.at;
        let wait = wait_ms as f64 / 1000.0;
        if let Some(started) = f.started {
            served[a.user] += 1.0;
            flood_started += usize::from(a.user == flooder);
            if let Some((estimate, run)) = f.estimate {
                let actual = (started - a.at) as f64 / 1000.0;
                let error = (estimate - actual).abs() / actual.max(run).max(f64::MIN_POSITIVE);
                errors.push(error);
                plan_errors[a.plan].push(error);
                let m = &mut plan_means[a.plan];
                *m = (m.0 + estimate, m.1 + actual, m.2 + 1);
            }
        }
        waits[a.plan].push(wait);
        if a.user == flooder {
            flood_waits.push(wait);
        } else {
            regular[a.plan].push(wait);
        }
        past_wait_bound += usize::from(wait_ms > policy.max_wait_ms);
        if let Some(bound) = admission.and_then(|adm| adm.bounds_ms.get(a.plan)) {
            past_admission_bound += usize::from(wait_ms > *bound);
        }
    }
    let gpu_hours = w.gpus as f64 * w.hours;
    let mut longest = 0.0f64;
    let offsets: Vec<usize> = (0..w.plans.len())
        .scan(0, |next, p| {
            let at = *next;
            *next += w.users_of(p);
            Some(at)
        })
        .collect();
    let plan_waits = w
        .plans
        .iter()
        .enumerate()
        .map(|(p, (plan, _, _))| {
            let waits = &mut waits[p];
            waits.sort_by(f64::total_cmp);
            regular[p].sort_by(f64::total_cmp);
            let max = waits.last().copied().unwrap_or(0.0);
            longest = longest.max(max);
            let mut members: Vec<usize> = (offsets[p]..offsets[p] + w.users_of(p)).collect();
            if w.flood.as_ref().is_some_and(|f| f.plan == p) {
                members.push(flooder);
            }
            plan_errors[p].sort_by(f64::total_cmp);
            let (est, act, n) = plan_means[p];
            let n = n.max(1) as f64;
            let d: Vec<f64> = members.iter().map(|&u| demanded[u]).collect();
            let s: Vec<f64> = members.iter().map(|&u| served[u]).collect();
            PlanWaits {
                plan: plan.clone(),
                jobs: waits.len(),
                refused: refused[p],
                p50: quantile(waits, 0.50),
                p95: quantile(waits, 0.95),
                p99: quantile(waits, 0.99),
                max,
                regular_p95: quantile(&regular[p], 0.95),
                jain: jain(&fair_service(&d, &s)),
                eta_median: quantile(&plan_errors[p], 0.5),
                eta_mean: (est / n, act / n),
            }
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    flood_waits.sort_by(f64::total_cmp);
    Outcome {
        arrived: jobs.len(),
        refused: refused.iter().sum(),
        completed: t.completed,
        completed_per_gpu_hour: t.completed as f64 / gpu_hours,
        load_share: t.load_ms as f64 / (gpu_hours * 3_600_000.0),
        model_loads: t.loads,
        waits: plan_waits,
        longest_wait: longest,
        past_wait_bound,
        past_admission_bound,
        queued_at_end: t.queued_at_end,
        flooder: w.flood.as_ref().map(|_| FlooderWaits {
            arrived: demanded[flooder] as usize,
            refused: flood_refused,
            started: flood_started,
            p95: quantile(&flood_waits, 0.95),
        }),
        eta: EtaError {
            jobs: errors.len(),
            median: quantile(&errors, 0.5),
            p90: quantile(&errors, 0.9),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyKind;

    fn with(kind: PolicyKind) -> Policy {
        Policy {
            kind,
            ..Policy::default()
        }
    }

    fn pro(o: &Outcome) -> &PlanWaits {
        o.waits.iter().find(|w| w.plan == "pro").unwrap()
    }

    #[test]
    fn the_same_seed_replays_the_same_jobs() {
        let w = Workload {
            hours: 1.0,
            ..Workload::default()
        };
        assert_eq!(
            simulate(&w, Policy::default()),
            simulate(&w, Policy::default())
        );
        let flooded = Workload {
            flood: Some(Flood {
                plan: 0,
                jobs_per_hour: 300.0,
            }),
            ..w.clone()
        };
        let admission = Admission::relative_to(&w, &Policy::default());
        assert_eq!(
            simulate_admitted(&flooded, Policy::default(), &admission),
            simulate_admitted(&flooded, Policy::default(), &admission)
        );
        let other = Workload {
            seed: 8,
            ..w.clone()
        };
        assert_ne!(
            simulate(&w, Policy::default()),
            simulate(&other, Policy::default())
        );
    }

    #[test]
    fn one_model_needs_one_load_per_gpu() {
        let w = Workload {
            hours: 1.0,
            models: vec![("sdxl-1.0".into(), 1.0)],
            ..Workload::default()
        };
        for kind in [PolicyKind::Fifo, PolicyKind::Tessera] {
            let o = simulate(&w, with(kind));
            assert_eq!(o.model_loads, w.gpus, "{kind:?}");
        }
    }

    #[test]
    fn an_idle_farm_starts_every_job_at_once() {
        let w = Workload {
            hours: 2.0,
            jobs_per_hour: 10.0,
            models: vec![("sdxl-1.0".into(), 1.0)],
            ..Workload::default()
        };
        let o = simulate(&w, Policy::default());
        assert!(o.longest_wait < 1.0, "{o:?}");
        assert!(o.completed + 4 >= o.arrived, "{o:?}");
    }

    #[test]
    fn jains_index_and_fair_shares_by_hand() {
        assert!((jain(&[1.0, 1.0, 0.5, 0.5]) - 0.9).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
        assert_eq!(jain(&[2.0, 2.0]), 1.0);
        // Ten jobs among demands 2, 4 and 100: 2, 4 and the remaining 4.
        assert_eq!(
            max_min_shares(&[2.0, 100.0, 4.0], 10.0),
            vec![2.0, 4.0, 4.0]
        );
        // The flooder got 8 of 10 where their fair share was 4, the others
        // 1 of 2 and 1 of 4: (0.5, 2, 0.25).
        let x = fair_service(&[2.0, 100.0, 4.0], &[1.0, 8.0, 1.0]);
        assert_eq!(x, vec![0.5, 2.0, 0.25]);
        assert!(jain(&x) < 0.6);
        // Each got their fair share: perfectly fair, whatever the demands.
        assert_eq!(
            jain(&fair_service(&[2.0, 100.0, 4.0], &[2.0, 4.0, 4.0])),
            1.0
        );
    }

    #[test]
    fn a_gpu_with_room_keeps_two_models_and_evicts_the_least_recently_used() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let gib = [7.0, 7.0, 3.0];
        let mut gpu = Gpu {
            busy_until: None,
            running: 0,
            resident: Vec::new(),
            loaded: Vec::new(),
        };
        assert!(gpu.use_model(0, 1, &gib, 16.0, &names));
        // Room for the second beside the first.
        assert!(gpu.use_model(1, 2, &gib, 16.0, &names));
        assert_eq!(gpu.loaded, ["a", "b"]);
        // Both warm now; using a makes b the least recently used.
        assert!(!gpu.use_model(1, 3, &gib, 16.0, &names));
        assert!(!gpu.use_model(0, 4, &gib, 16.0, &names));
        // c (3 GiB) does not fit beside 14: b goes, a stays.
        assert!(gpu.use_model(2, 5, &gib, 16.0, &names));
        let mut loaded = gpu.loaded.clone();
        loaded.sort();
        assert_eq!(loaded, ["a", "c"]);
        // The replay: one GPU whose memory holds both models loads each once.
        let w = Workload {
            gpus: 1,
            hours: 1.0,
            jobs_per_hour: 60.0,
            models: vec![("sdxl-1.0".into(), 0.5), ("sd-1.5".into(), 0.5)],
            ..Workload::default()
        };
        assert_eq!(simulate(&w, with(PolicyKind::Fifo)).model_loads, 2);
        // With room for one, FIFO loads at most every other job or so.
        let small = Workload { gpu_gib: 8.0, ..w };
        assert!(simulate(&small, with(PolicyKind::Fifo)).model_loads > 10);
    }

    fn at_load(load: f64, flood: Option<f64>) -> Workload {
        let w = Workload {
            hours: 4.0,
            ..Workload::default()
        };
        Workload {
            jobs_per_hour: load * w.capacity_per_hour(),
            flood: flood.map(|jobs_per_hour| Flood {
                plan: 0,
                jobs_per_hour,
            }),
            ..w
        }
    }

    #[test]
    fn admission_refuses_under_twice_capacity_and_keeps_accepted_jobs_near_the_bound() {
        let w = at_load(2.0, None);
        let policy = Policy::default();
        let admission = Admission::relative_to(&w, &policy);
        let o = simulate_admitted(&w, policy, &admission);
        let free = &o.waits[0];
        assert!(free.refused > 100, "{o:?}");
        // Higher plans keep admission longer.
        assert!(o.waits[2].refused < free.refused / 10, "{o:?}");
        // Accepted jobs are served by the wait bound, a few cold-model ones
        // just past it (affinity passes them over until they are overdue),
        // none near twice it; without admission most jobs wait past it.
        let bound = policy.max_wait_ms as f64 / 1000.0;
        assert!(o.longest_wait < 1.1 * bound, "{o:?}");
        assert!(o.past_wait_bound * 50 < o.arrived - o.refused, "{o:?}");
        let open = simulate(&w, policy);
        assert!(open.past_wait_bound * 3 > open.arrived, "{open:?}");
        // And PRO keeps its wait.
        assert!(pro(&o).p95 < 60.0, "{o:?}");
    }

    /// The other FREE users' p95 wait at twice capacity, with and without
    /// one user flooding FREE: FIFO lets the flood multiply it, Tessera with
    /// admission (fair tags, the per-user cap) keeps it within a third.
    #[test]
    fn a_flooding_user_moves_the_others_little_under_tessera_and_much_under_fifo() {
        let policy = Policy::default();
        let fifo = with(PolicyKind::Fifo);
        let plain = at_load(2.0, None);
        let flooded = at_load(2.0, Some(600.0));
        let admission = Admission::relative_to(&plain, &policy);
        let others = |o: &Outcome| o.waits[0].regular_p95;
        let (f0, f1) = (simulate(&plain, fifo), simulate(&flooded, fifo));
        assert!(others(&f1) > 1.5 * others(&f0), "{f0:?}\n{f1:?}");
        let t0 = simulate_admitted(&plain, policy, &admission);
        let t1 = simulate_admitted(&flooded, policy, &admission);
        let moved = (others(&t1) - others(&t0)).abs() / others(&t0);
        assert!(moved < 0.35, "moved {moved}: {t0:?}\n{t1:?}");
        let flooder = t1.flooder.as_ref().unwrap();
        assert!(flooder.refused > flooder.started, "{flooder:?}");
        // The other users' jobs are the same with and without the flood.
        assert_eq!(
            t1.arrived - flooder.arrived,
            t0.arrived,
            "the flood has a stream of its own"
        );
    }

    /// Delay scheduling at twice capacity with admission: leaving a job to
    /// the GPU that holds its model loads fewer models and completes more
    /// jobs than loading it on whichever GPU is free (at least 1.3x FIFO's),
    /// and PRO keeps its wait.
    #[test]
    fn leaving_jobs_to_the_gpu_that_holds_their_model_loads_less() {
        let w = at_load(2.0, None);
        let policy = Policy::default();
        let admission = Admission::relative_to(&w, &policy);
        let held = simulate_admitted(&w, policy, &admission);
        let loading = simulate_admitted(
            &w,
            Policy {
                locality_wait_ms: 0,
                ..policy
            },
            &admission,
        );
        let fifo = simulate(&w, with(PolicyKind::Fifo));
        assert!(
            held.model_loads * 4 < loading.model_loads * 3,
            "held {held:?}\nloading {loading:?}"
        );
        assert!(
            held.completed_per_gpu_hour >= 1.3 * fifo.completed_per_gpu_hour,
            "held {held:?}\nfifo {fifo:?}"
        );
        assert!(pro(&held).p95 < 60.0, "{held:?}");
    }

    #[test]
    fn estimates_hold_at_light_load() {
        let w = at_load(1.0, None);
        let o = simulate_admitted(
            &w,
            Policy::default(),
            &Admission::relative_to(&w, &Policy::default()),
        );
        assert!(o.eta.jobs > 500 && o.eta.median <= 0.25, "{:?}", o.eta);
    }

    /// The earlier issue's goal, on the default four-model workload with the
    /// seed's one model per GPU (memory for no second one): Tessera's policy
    /// completes at least 30 % more jobs per GPU-hour than FIFO, PRO's p95
    /// wait is no worse than strict priority's, and no job waits more than
    /// twice the wait bound. With the default 16 GiB, FIFO keeps a second
    /// model often enough to keep up with 340 jobs an hour almost (70 per
    /// GPU-hour, Tessera runs all 81): the throughput goal holds where both
    /// have a backlog, at twice capacity.
    #[test]
    fn tessera_beats_fifo_and_keeps_its_promises_on_the_default_workload() {
        let w = Workload {
            gpu_gib: 1.0,
            ..Workload::default()
        };
        let fifo = simulate(&w, with(PolicyKind::Fifo));
        let strict = simulate(&w, with(PolicyKind::StrictPriority));
        let tessera = simulate(&w, with(PolicyKind::Tessera));
        assert!(
            tessera.completed_per_gpu_hour >= 1.3 * fifo.completed_per_gpu_hour,
            "tessera {tessera:?}\nfifo {fifo:?}"
        );
        assert!(
            pro(&tessera).p95 <= pro(&strict).p95,
            "tessera {:?}\nstrict {:?}",
            pro(&tessera),
            pro(&strict)
        );
        // The policy's promise: strictly oldest first past twice the bound.
        let bound = 2.0 * Policy::default().max_wait_ms as f64 / 1000.0;
        assert!(tessera.longest_wait <= bound, "{tessera:?}");

        let w = at_load(2.0, None);
        let fifo = simulate(&w, with(PolicyKind::Fifo));
        let tessera = simulate(&w, with(PolicyKind::Tessera));
        assert!(
            tessera.completed_per_gpu_hour >= 1.3 * fifo.completed_per_gpu_hour,
            "tessera {tessera:?}\nfifo {fifo:?}"
        );
    }
}
