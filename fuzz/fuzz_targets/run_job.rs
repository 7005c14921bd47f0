//! The worker's `POST /run_job` body (crates/worker/src/agent.rs, `run_job`):
//! the JSON is read as a `RunJob` (`RunJob::from_slice`), its `params` typed
//! for its capability in the same step, and the engines then read
//! the parameters (`VideoParams::frames` sizes a video). The scheduler only
//! sends validated parameters, but the worker must not trust the wire: the
//! internal token is a shared secret, and a stored row may predate today's
//! rules.
//!
//! Asserted: no panic, in parsing or in what the engines compute from the
//! parameters before they run; parameters that parse serialise again, and a
//! `RunJob` that parses serialises and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

use tessera_api::internal::RunJob;
use tessera_core::billing::CostRules;
use tessera_core::params::JobParams;

fuzz_target!(|data: &[u8]| {
    let Ok(job) = RunJob::from_slice(data) else {
        return;
    };
    let again: RunJob = serde_json::from_value(serde_json::to_value(&job).expect("serialises"))
        .expect("a RunJob reads back");
    assert_eq!(again, job);
    let params = &job.params;
    // What engines and the scheduler compute from parameters.
    if let JobParams::Video(p) = params {
        let _ = p.frames();
    }
    let _ = CostRules::default().cost(params.size());
    let _ = params.to_value();
});
