//! Admission control: a create is refused at once, before anything is
//! charged, when the job would wait longer than its plan's bound, or when its
//! user already has as many queued jobs as the plan allows.
//!
//! The expected wait of a new job is the work queued ahead of it divided
//! among the workers that can run it now:
//!
//! - *ahead*: the queued jobs of its capability and model whose priority is
//!   at or above its plan's (the queue serves by priority, so a higher plan
//!   has less ahead of it and keeps admission longer);
//! - *run time*: the model's learned warm run time (crate::timings), else
//!   the estimator's measured mean for the capability;
//! - *capacity*: the online workers, not draining, whose engine for the
//!   capability and model is ready ([`Registry::capacity`](crate::registry::Registry::capacity)).
//!
//! `wait = ahead × run / capacity`, or, when longer, the same over the
//! capability's whole queue (every model) and the workers ready for any of
//! its models ([`Registry::capacity_any_model`](crate::registry::Registry::capacity_any_model)):
//! the models share the GPUs, and the simulator showed that one model's
//! queue alone admitted jobs into waits several times the bound. Past the plan's bound
//! (`admission.max_wait_ms`, else `queue.policy.max_wait_ms`) the create is
//! refused 429 `queue_full` with the expected wait and a `Retry-After` of
//! the time the excess takes to drain (`wait − bound`, at least 1 s). With no
//! ready worker, or no measured run time yet, nothing is refused here: a job
//! nobody can run is the unservable bound's ([`crate::monitor`]), and an
//! assumed run time is no ground to turn anyone away.
//!
//! The inputs are read before the create's transaction (the user's plan, the
//! model the parameters choose, the counts); the decision is made inside it,
//! against the plan the transaction read, so an idempotent retry of an
//! accepted job is still answered with its job and a refusal charges nothing.
//!
//! The decision itself is [`tessera_core::admission`]'s, shared with the
//! simulator; this module resolves the plan's bound and cap from the
//! configuration and calls it.

use tessera_core::admission::{self as core_admission, Limits};
use tessera_core::Plan;

pub use tessera_core::admission::{ahead, Inputs, Refusal};

use crate::config::AdmissionConfig;

/// Admits or refuses a new job of `plan` whose parameters chose `model`.
/// Inputs gathered for another model (the plan changed between the read
/// and the transaction) admit.
pub fn decide(
    config: &AdmissionConfig,
    policy_bound_ms: i64,
    plan: &Plan,
    model: &str,
    inputs: &Inputs,
) -> Result<(), Refusal> {
    let limits = Limits {
        priority: plan.priority,
        bound_ms: config.bound_ms(&plan.id, policy_bound_ms),
        cap: config.cap(&plan.id),
    };
    core_admission::decide(&limits, model, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::{Capability, Priority};

    fn plan(id: &str, priority: Priority) -> Plan {
        Plan {
            id: id.into(),
            name: id.to_ascii_uppercase(),
            daily_tokens: None,
            priority,
            max_resolution: 1024,
            allowed_models: vec!["*".into()],
            price_cents: 0,
        }
    }

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

    #[test]
    fn the_wait_is_the_work_ahead_over_the_workers_ready_for_it() {
        let config = AdmissionConfig::default();
        let free = plan("free", Priority::FREE);
        let pro = plan("pro", Priority::PRO);
        // 10 free and 2 pro jobs of 60 s on 2 workers: a free job waits 360 s,
        // a pro job 60 s.
        let q = inputs(&[(Priority::FREE, 10), (Priority::PRO, 2)], 2, Some(60.0));
        assert_eq!(
            decide(&config, 300_000, &free, "sdxl-1.0", &q),
            Err(Refusal::QueueFull {
                expected_wait_seconds: 360,
                bound_seconds: 300,
                retry_after_seconds: 60,
            })
        );
        assert_eq!(decide(&config, 300_000, &pro, "sdxl-1.0", &q), Ok(()));
        // At the bound exactly, admitted.
        assert_eq!(decide(&config, 360_000, &free, "sdxl-1.0", &q), Ok(()));
        // A bound of the plan's own.
        let mut own = AdmissionConfig::default();
        own.max_wait_ms.insert("free".into(), 1_000_000);
        assert_eq!(decide(&own, 300_000, &free, "sdxl-1.0", &q), Ok(()));
    }

    #[test]
    fn no_refusal_without_a_worker_or_a_measured_time_or_for_another_model() {
        let config = AdmissionConfig::default();
        let free = plan("free", Priority::FREE);
        let full = [(Priority::FREE, 1000)];
        assert_eq!(
            decide(
                &config,
                1000,
                &free,
                "sdxl-1.0",
                &inputs(&full, 0, Some(60.0))
            ),
            Ok(())
        );
        assert_eq!(
            decide(&config, 1000, &free, "sdxl-1.0", &inputs(&full, 1, None)),
            Ok(())
        );
        assert_eq!(
            decide(&config, 1000, &free, "flux", &inputs(&full, 1, Some(60.0))),
            Ok(())
        );
    }

    #[test]
    fn the_user_cap_counts_queued_jobs() {
        let mut config = AdmissionConfig::default();
        config.max_queued_per_user.insert("free".into(), 2);
        config.max_queued_per_user.insert("pro".into(), 0);
        let mut q = inputs(&[], 1, Some(12.5));
        q.user_queued = Some(2);
        assert_eq!(
            decide(&config, 1000, &plan("free", Priority::FREE), "sdxl-1.0", &q),
            Err(Refusal::TooManyQueued {
                queued: 2,
                cap: 2,
                retry_after_seconds: 13,
            })
        );
        assert_eq!(
            decide(&config, 1000, &plan("pro", Priority::PRO), "sdxl-1.0", &q),
            Ok(())
        );
        q.user_queued = Some(1);
        assert_eq!(
            decide(&config, 1000, &plan("free", Priority::FREE), "sdxl-1.0", &q),
            Ok(())
        );
    }
}
