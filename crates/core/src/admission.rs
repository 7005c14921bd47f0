//! Admission control's decision: whether a new job is queued or refused at
//! once, before anything is charged, because it would wait longer than its
//! plan's bound or because its user already has as many queued jobs as the
//! plan allows.
//!
//! The expected wait of a new job is the work queued ahead of it divided
//! among the workers that can run it now:
//!
//! - *ahead*: the queued jobs of its capability and model whose priority is
//!   at or above its plan's (the queue serves by priority, so a higher plan
//!   has less ahead of it and keeps admission longer);
//! - *run time*: the measured mean run time of the capability;
//! - *capacity*: the workers ready to run the capability and model now.
//!
//! `wait = ahead × run / capacity`, counted for the job's model and for all
//! the capability's models on all its workers, the larger; and at least
//! what the plan's queue delivers now: how long its oldest queued job has
//! waited (later arrivals of higher plans, which no count sees, go before
//! it). Past the plan's bound the job is refused
//! with the expected wait and a retry time of what the excess takes to drain
//! (`wait − bound`, at least 1 s). With no ready worker, or no measured run
//! time yet, nothing is refused here: a job nobody can run is another rule's,
//! and an assumed run time is no ground to turn anyone away.
//!
//! The scheduler (`crates/scheduler/src/admission.rs`) reads the inputs and
//! its configuration (per-plan bounds and caps) and calls [`decide`]; the
//! simulator ([`crate::simulation`]) calls it with the same inputs counted
//! from its own queue.

use crate::{Capability, Priority};

/// What admission knows of the queue a new job would join.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub capability: Capability,
    /// The model the parameters chose (under the plan read before the create).
    pub model: String,
    /// Workers that can run the job now.
    pub capacity: usize,
    /// The measured mean run time (seconds), if any job has completed.
    pub measured_run_seconds: Option<f64>,
    /// Queued jobs of the capability and model, per priority.
    pub queued_by_priority: Vec<(Priority, i64)>,
    /// Queued jobs of the capability, every model, per priority: the work
    /// ahead when the models share the workers. Empty counts nothing.
    pub queued_all_models_by_priority: Vec<(Priority, i64)>,
    /// Workers that can run the capability now, any model (0 when the
    /// caller does not count them).
    pub capacity_all_models: usize,
    /// How long the oldest queued job of each priority (of the capability,
    /// any model) has waited, seconds: the wait its plan's queue delivers
    /// now. Empty counts nothing.
    pub oldest_wait_by_priority: Vec<(Priority, f64)>,
    /// The user's queued jobs, when their plan has a cap.
    pub user_queued: Option<i64>,
    /// One job's expected run time (measured or assumed), seconds: how long
    /// a user at their cap waits for one of their jobs to leave the queue.
    pub run_seconds: f64,
}

/// The plan-specific limits a decision applies, resolved by the caller from
/// its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The plan's priority: what is counted ahead of a new job.
    pub priority: Priority,
    /// The longest expected wait a new job is admitted into, ms.
    pub bound_ms: i64,
    /// The most queued jobs one user of the plan may have; `None`: no cap.
    pub cap: Option<u32>,
}

/// Why a create was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    QueueFull {
        expected_wait_seconds: u64,
        bound_seconds: u64,
        retry_after_seconds: u64,
    },
    TooManyQueued {
        queued: i64,
        cap: u32,
        retry_after_seconds: u64,
    },
}

impl Refusal {
    /// The metric's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::TooManyQueued { .. } => "too_many_queued",
        }
    }

    pub fn retry_after_seconds(&self) -> u64 {
        match self {
            Refusal::QueueFull {
                retry_after_seconds,
                ..
            }
            | Refusal::TooManyQueued {
                retry_after_seconds,
                ..
            } => *retry_after_seconds,
        }
    }
}

/// Jobs queued at or above `priority`: what runs before a new job of it.
pub fn ahead(queued_by_priority: &[(Priority, i64)], priority: Priority) -> i64 {
    queued_by_priority
        .iter()
        .filter(|(p, _)| *p >= priority)
        .map(|(_, n)| (*n).max(0))
        .sum()
}

/// The expected wait of a new job (seconds) with `ahead` jobs before it,
/// each taking `run_seconds`, on `capacity` workers (at least one).
pub fn expected_wait(ahead: i64, run_seconds: f64, capacity: usize) -> f64 {
    ahead.max(0) as f64 * run_seconds / capacity.max(1) as f64
}

/// Seconds until a queued job starts when `ahead` jobs go before it on
/// `workers` workers (at least one), `idle` of them free now, each job
/// taking `run_seconds`: the free workers take the first jobs at once; every
/// other job, this one included, waits for a busy worker, and busy workers
/// free up one every `run / workers` on average. What the estimate a queued
/// job shows promises (the scheduler's `Estimator::start_in`; the simulator
/// checks it against actual starts).
pub fn start_in(ahead: u64, workers: usize, idle: usize, run_seconds: f64) -> f64 {
    let idle = idle.min(workers) as u64;
    if ahead < idle {
        return 0.0;
    }
    (ahead - idle + 1) as f64 * run_seconds.max(0.0) / workers.max(1) as f64
}

/// Admits or refuses a new job whose parameters chose `model`, under the
/// plan's `limits`. Inputs gathered for another model (the plan changed
/// between the read and the decision) admit.
pub fn decide(limits: &Limits, model: &str, inputs: &Inputs) -> Result<(), Refusal> {
    if let (Some(cap), Some(queued)) = (limits.cap.filter(|&c| c > 0), inputs.user_queued) {
        if queued >= i64::from(cap) {
            return Err(Refusal::TooManyQueued {
                queued,
                cap,
                retry_after_seconds: secs(inputs.run_seconds),
            });
        }
    }
    if inputs.model != model || inputs.capacity == 0 {
        return Ok(());
    }
    let Some(run) = inputs.measured_run_seconds else {
        return Ok(());
    };
    // The job's own model's queue on the workers ready for it, and every
    // model's queue on all the capability's workers: the other models' jobs
    // occupy the same GPUs, and a queue counted for one model alone
    // admitted several times the bound (docs/simulation.md). The larger
    // of the two, so workers kept for one model are not diluted.
    let own = expected_wait(
        ahead(&inputs.queued_by_priority, limits.priority),
        run,
        inputs.capacity,
    );
    let all = if inputs.capacity_all_models > 0 {
        expected_wait(
            ahead(&inputs.queued_all_models_by_priority, limits.priority),
            run,
            inputs.capacity_all_models,
        )
    } else {
        0.0
    };
    // What the plan's queue delivers now: its oldest job's wait so far.
    // Later arrivals of higher plans go before a new job, which the counts
    // above cannot see; under a long overload they set the wait, and the
    // oldest job has already waited through them.
    let delivered = inputs
        .oldest_wait_by_priority
        .iter()
        .filter(|(p, _)| *p == limits.priority)
        .map(|(_, w)| *w)
        .fold(0.0, f64::max);
    let wait = own.max(all).max(delivered);
    let bound = limits.bound_ms.max(1) as f64 / 1000.0;
    if wait <= bound {
        return Ok(());
    }
    Err(Refusal::QueueFull {
        expected_wait_seconds: secs(wait),
        bound_seconds: secs(bound),
        retry_after_seconds: secs(wait - bound),
    })
}

/// Whole seconds, rounded up, at least 1.
fn secs(s: f64) -> u64 {
    if s.is_finite() {
        s.ceil().max(1.0) as u64
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(by: &[(Priority, i64)], capacity: usize, run: Option<f64>) -> Inputs {
        Inputs {
            capability: Capability::Image,
            model: "sdxl-1.0".into(),
            capacity,
            measured_run_seconds: run,
            queued_by_priority: by.to_vec(),
            queued_all_models_by_priority: Vec::new(),
            capacity_all_models: 0,
            oldest_wait_by_priority: Vec::new(),
            user_queued: None,
            run_seconds: run.unwrap_or(30.0),
        }
    }

    fn limits(priority: Priority, bound_ms: i64) -> Limits {
        Limits {
            priority,
            bound_ms,
            cap: None,
        }
    }

    #[test]
    fn the_wait_is_the_work_ahead_over_the_workers() {
        let q = inputs(&[(Priority::FREE, 10), (Priority::PRO, 2)], 2, Some(60.0));
        assert_eq!(
            decide(&limits(Priority::FREE, 300_000), "sdxl-1.0", &q),
            Err(Refusal::QueueFull {
                expected_wait_seconds: 360,
                bound_seconds: 300,
                retry_after_seconds: 60,
            })
        );
        assert_eq!(
            decide(&limits(Priority::PRO, 300_000), "sdxl-1.0", &q),
            Ok(())
        );
        assert_eq!(
            decide(&limits(Priority::FREE, 360_000), "sdxl-1.0", &q),
            Ok(())
        );
        assert_eq!(expected_wait(3, 30.0, 0), 90.0, "no worker counts as one");
    }

    /// Other models' jobs share the workers: 2 sdxl jobs of 60 s on 2
    /// workers is 60 s, but 20 jobs of every model on 4 workers is 300 s.
    #[test]
    fn every_models_queue_counts_when_it_is_given() {
        let mut q = inputs(&[(Priority::FREE, 2)], 2, Some(60.0));
        let free = limits(Priority::FREE, 200_000);
        assert_eq!(decide(&free, "sdxl-1.0", &q), Ok(()));
        q.queued_all_models_by_priority = vec![(Priority::FREE, 15), (Priority::PRO, 5)];
        q.capacity_all_models = 4;
        assert_eq!(
            decide(&free, "sdxl-1.0", &q),
            Err(Refusal::QueueFull {
                expected_wait_seconds: 300,
                bound_seconds: 200,
                retry_after_seconds: 100,
            })
        );
        // A PRO job has only the 5 PRO jobs ahead: 75 s.
        assert_eq!(
            decide(&limits(Priority::PRO, 200_000), "sdxl-1.0", &q),
            Ok(())
        );
        // The own model's queue still counts when it is the longer wait.
        q.queued_by_priority = vec![(Priority::FREE, 8)];
        q.queued_all_models_by_priority = vec![(Priority::FREE, 8)];
        assert_eq!(
            decide(&free, "sdxl-1.0", &q),
            Err(Refusal::QueueFull {
                expected_wait_seconds: 240,
                bound_seconds: 200,
                retry_after_seconds: 40,
            })
        );
    }

    #[test]
    fn a_cap_of_zero_is_no_cap() {
        let mut q = inputs(&[], 1, Some(10.0));
        q.user_queued = Some(5);
        let mut l = limits(Priority::FREE, 1_000);
        l.cap = Some(0);
        assert_eq!(decide(&l, "sdxl-1.0", &q), Ok(()));
        l.cap = Some(5);
        assert_eq!(
            decide(&l, "sdxl-1.0", &q),
            Err(Refusal::TooManyQueued {
                queued: 5,
                cap: 5,
                retry_after_seconds: 10
            })
        );
    }

    #[test]
    fn a_queue_that_already_waits_past_the_bound_refuses() {
        let limits = Limits {
            priority: Priority::FREE,
            bound_ms: 100_000,
            cap: None,
        };
        // One job ahead, two workers: 15 s by the counts. But the oldest
        // free job has waited 160 s (higher plans kept taking the workers).
        let mut q = inputs(&[(Priority::FREE, 1)], 2, Some(30.0));
        q.oldest_wait_by_priority = vec![(Priority::FREE, 160.0), (Priority::PRO, 400.0)];
        assert_eq!(
            decide(&limits, "sdxl-1.0", &q),
            Err(Refusal::QueueFull {
                expected_wait_seconds: 160,
                bound_seconds: 100,
                retry_after_seconds: 60,
            })
        );
        // Another plan's old job says nothing about this plan's queue.
        q.oldest_wait_by_priority = vec![(Priority::PRO, 400.0)];
        assert_eq!(decide(&limits, "sdxl-1.0", &q), Ok(()));
    }
}
