//! What `POST /run_job` reads never panics, on stable Rust: the twin of the
//! cargo-fuzz target `run_job` (fuzz/), so the property runs in scripts/test.
//! The body is read as the worker reads it (`RunJob::from_slice`, which types
//! its `params` for its capability in the same step), and the parameters are then
//! used as the engines use them before they run (`VideoParams::frames`).
//! Bodies are drawn near the real shape: every field present, each value of
//! the right type or not, numbers near the limits of their types.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use tessera_api::internal::RunJob;
use tessera_core::billing::CostRules;
use tessera_core::params::JobParams;
use tessera_core::Capability;

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u32>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e40f64..1e40).prop_map(Value::from),
        Just(json!(u32::MAX)),
        Just(json!(65536)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => number(),
        2 => "\\PC{0,16}".prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(json!("inp_01JD3Z8X9Q4W6E2R5T7Y9V1K3M")),
    ]
}

/// Stored parameters: every field some capability has, with any scalar.
fn params() -> impl Strategy<Value = Value> {
    let fields = vec![
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "seed",
        "steps",
        "duration_seconds",
        "fps",
        "system",
        "max_tokens",
        "temperature",
        "input_id",
        "language",
        "text",
        "voice",
        "speed",
    ];
    prop::collection::btree_map(prop::sample::select(fields), scalar(), 0..10).prop_map(|m| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Map<_, _>>(),
        )
    })
}

/// A `/run_job` body, the real shape with drawn values.
fn body() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(Capability::ALL.to_vec()),
        params(),
        scalar(),
        any::<bool>(),
    )
        .prop_map(|(capability, params, attempt, with_inputs)| {
            let mut job = json!({
                "job_id": "job_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
                "attempt": attempt,
                "capability": capability,
                "model_id": "sdxl-1.0",
                "params": params,
                "timeout_ms": 60000,
            });
            if with_inputs {
                job["inputs"] = json!([{"input_id": "inp_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
                    "content_type": "audio/wav", "size": 1}]);
            }
            job
        })
}

/// What the worker does with a body, as far as no engine is needed.
fn read_as_the_worker_does(bytes: &[u8]) {
    let Ok(job) = RunJob::from_slice(bytes) else {
        return;
    };
    let again: RunJob = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
    assert_eq!(again, job);
    let params = &job.params;
    if let JobParams::Video(p) = params {
        let _ = p.frames();
    }
    let _ = CostRules::default().cost(params.size());
    let _ = params.to_value();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_run_job_body_never_panics(body in body()) {
        read_as_the_worker_does(&serde_json::to_vec(&body).unwrap());
    }

    #[test]
    fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        read_as_the_worker_does(&bytes);
    }
}

/// Found while writing the `run_job` fuzz target (which its first 60 s did
/// not reach): a video's frame count overflowed `u32` (a panic in debug
/// builds, a wrong count in release) for parameters no scheduler sends but
/// the wire can carry.
#[test]
fn a_huge_video_has_a_saturated_frame_count() {
    let params = JobParams::from_stored(
        Capability::Video,
        json!({"prompt": "x", "width": 64, "height": 64,
               "duration_seconds": u32::MAX, "fps": 30}),
    )
    .unwrap();
    let JobParams::Video(p) = params else {
        panic!("a video")
    };
    assert_eq!(p.frames(), u32::MAX);
}
