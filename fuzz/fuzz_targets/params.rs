//! `tessera_core::params::validate`: a job's `params` as a frontend sends them,
//! validated as `POST /api/v1/jobs` validates them (crates/scheduler/src/http/jobs.rs):
//! for a capability, under the user's plan, with the model catalogue and the
//! cost rules of the configuration.
//!
//! The JSON is the untrusted part. The plan is one of the seed's four or any
//! plan the `plans` table can hold (its only CHECK is `max_resolution > 0`);
//! the cost rules are the defaults or any the configuration accepts (it does
//! not bound them). Both are fuzzed too, since a panic there is a panic on a
//! user's request all the same.
//!
//! Asserted: no panic; and of a job that passes, what the scheduler stores
//! and a worker receives: texts trimmed, not empty, within their limit, free
//! of control characters but newline and tab; sizes within the plan, at
//! least 64 and multiples of 8; a model of the catalogue the plan allows; a
//! cost that is what the cost rules say and never negative; parameters that
//! read back (`JobParams::from_stored`) as they were validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use tessera_core::billing::CostRules;
use tessera_core::catalog::ModelCatalog;
use tessera_core::params::{
    self, JobParams, MAX_PROMPT_CHARS, MAX_SPEECH_CHARS, MAX_TEXT_PROMPT_CHARS, MIN_SIDE,
};
use tessera_core::{Capability, Plan};

/// The input's layout, so that a seed is readable (`fuzz/seeds/params`):
///
/// - byte 0: the capability (`Capability::ALL`, modulo 5);
/// - byte 1: the plan and costs: bits 0-1 pick a seed plan; bit 2 makes it a
///   stored plan whose `max_resolution` comes from the next 4 bytes (bit 3:
///   and that allows every model); bit 4 takes the five cost rules from the
///   next 40 bytes (little-endian `i64`s) instead of the defaults;
/// - the rest: the request's `params`, as JSON text.
struct Input {
    capability: Capability,
    plan: Plan,
    costs: CostRules,
    json: Vec<u8>,
}

impl Input {
    fn read(data: &[u8]) -> Option<Input> {
        let (&[cap, flags], mut rest) = data.split_first_chunk::<2>()?;
        let capability = Capability::ALL[usize::from(cap) % Capability::ALL.len()];
        let mut plan = Plan::seed_plans()[usize::from(flags & 3)].clone();
        if flags & 4 != 0 {
            let (side, tail) = rest.split_first_chunk::<4>()?;
            rest = tail;
            // The column is a positive INTEGER.
            plan.max_resolution = (u32::from_le_bytes(*side) % i32::MAX as u32).max(1);
            if flags & 8 != 0 {
                plan.allowed_models = vec!["*".into()];
            }
        }
        let mut costs = CostRules::default();
        if flags & 16 != 0 {
            let mut next = || -> Option<i64> {
                let (n, tail) = rest.split_first_chunk::<8>()?;
                rest = tail;
                Some(i64::from_le_bytes(*n))
            };
            costs = CostRules {
                image_per_megapixel: next()?,
                video_per_second: next()?,
                text_per_1k_tokens: next()?,
                speech_to_text: next()?,
                text_to_speech: next()?,
            };
        }
        Some(Input {
            capability,
            plan,
            costs,
            json: rest.to_vec(),
        })
    }
}

/// The checks every stored text passes.
fn check_text(field: &str, text: &str, max_chars: usize) {
    assert!(!text.is_empty(), "{field} is empty");
    assert_eq!(text, text.trim(), "{field} is not trimmed");
    assert!(text.chars().count() <= max_chars, "{field} is too long");
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "{field} holds a control character: {text:?}"
    );
}

fn check_size(width: u32, height: u32, plan: &Plan) {
    for side in [width, height] {
        assert!(side >= MIN_SIDE, "{width}x{height} below {MIN_SIDE}");
        assert!(
            side <= plan.max_resolution,
            "{width}x{height} over the plan"
        );
        assert_eq!(side % 8, 0, "{width}x{height} not multiples of 8");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(Input {
        capability,
        plan,
        costs,
        json,
    }) = Input::read(data)
    else {
        return;
    };
    let Ok(raw) = serde_json::from_slice::<Value>(&json) else {
        return;
    };
    let catalog = ModelCatalog::default();
    let Ok(job) = params::validate(capability, &raw, &plan, &catalog, &costs) else {
        return;
    };
    assert_eq!(job.capability, capability);
    assert!(job.cost_tokens >= 0, "negative cost {}", job.cost_tokens);
    assert_eq!(job.cost_tokens, costs.cost(job.params.size()));
    let entry = catalog
        .get(capability)
        .expect("the default catalogue is complete");
    assert!(entry.models.contains(&job.model), "model {:?}", job.model);
    assert!(
        plan.allows_model(&job.model),
        "model {:?} not in the plan",
        job.model
    );
    match &job.params {
        JobParams::Image(p) => {
            check_text("prompt", &p.prompt, MAX_PROMPT_CHARS);
            if let Some(n) = &p.negative_prompt {
                check_text("negative_prompt", n, MAX_PROMPT_CHARS);
            }
            check_size(p.width, p.height, &plan);
            assert!((1..=100).contains(&p.steps));
        }
        JobParams::Video(p) => {
            check_text("prompt", &p.prompt, MAX_PROMPT_CHARS);
            if let Some(n) = &p.negative_prompt {
                check_text("negative_prompt", n, MAX_PROMPT_CHARS);
            }
            check_size(p.width, p.height, &plan);
            assert!((1..=10).contains(&p.duration_seconds));
            assert!((8..=30).contains(&p.fps));
        }
        JobParams::Text(p) => {
            check_text("prompt", &p.prompt, MAX_TEXT_PROMPT_CHARS);
            if let Some(s) = &p.system {
                check_text("system", s, MAX_TEXT_PROMPT_CHARS);
            }
            assert!((1..=4096).contains(&p.max_tokens));
            assert!((0.0..=2.0).contains(&p.temperature));
        }
        JobParams::SpeechToText(p) => {
            if let Some(l) = &p.language {
                assert!(l.len() == 2 && l.bytes().all(|b| b.is_ascii_lowercase()));
            }
        }
        JobParams::TextToSpeech(p) => {
            check_text("text", &p.text, MAX_SPEECH_CHARS);
            assert!((0.5..=2.0).contains(&p.speed));
        }
    }
    // What a worker receives is what was validated.
    let stored = JobParams::from_stored(capability, job.params.to_value())
        .expect("validated parameters read back");
    assert_eq!(stored, job.params);
});
