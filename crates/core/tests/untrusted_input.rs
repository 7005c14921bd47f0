//! The parsers of untrusted input in this crate never panic, on stable Rust:
//! the twins of the cargo-fuzz targets `params` and `user_ref` (fuzz/), so
//! the property runs in scripts/test. The fuzz targets explore further
//! (coverage-guided, for minutes); these draw a few hundred inputs per run,
//! shaped to get past the first checks often: known field names, values near
//! the limits, control characters.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use tessera_core::billing::CostRules;
use tessera_core::catalog::ModelCatalog;
use tessera_core::params::{
    self, JobParams, MAX_PROMPT_CHARS, MAX_SPEECH_CHARS, MAX_TEXT_PROMPT_CHARS, MIN_SIDE,
};
use tessera_core::{Capability, Plan, UserRef};

/// Text users send, with what makes validation work: blanks, control
/// characters, separators, digits, non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,24}",
        "[\\PC\\n\\t\\r\u{0}\u{1b}\u{7f}\u{85}\u{2028}]{0,24}",
        "[0-9]{1,12}[xX:][0-9]{1,12}",
        Just(String::new()),
        Just("é".repeat(MAX_PROMPT_CHARS + 1)),
        Just(" x ".repeat(MAX_TEXT_PROMPT_CHARS)),
    ]
}

/// A number the way JSON carries one, near the limits fields have.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e40f64..1e40).prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, 7, 8, 64, 100, 101, 4096, 4097, -1])
            .prop_map(Value::from),
        prop::sample::select(vec![0.0f64, 0.5, 2.0, 2.0001, -0.0, 1e39, 3.4e38])
            .prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The fields some capability takes, and one it does not.
const FIELDS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "resolution",
    "aspect_ratio",
    "seed",
    "steps",
    "model",
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
    "cfg",
];

/// A `params` object: known fields with values of any type, often of the
/// right one.
fn params_object() -> impl Strategy<Value = Value> {
    let field_value = prop_oneof![
        3 => text().prop_map(Value::String),
        2 => number(),
        1 => value(),
        1 => prop::sample::select(vec![
            "1024x1024", "2048x2048", "63x64", "16:9", "1:32", "0:9", "32:1",
            "sdxl-1.0", "flux-schnell", "wan-2.1", "nope", "inp_01JD3Z8X9Q4W6E2R5T7Y9V1K3M",
            "en", "EN", "en-us", "a b",
        ])
        .prop_map(|s| json!(s)),
    ];
    prop::collection::btree_map(prop::sample::select(FIELDS), field_value, 0..6).prop_map(|m| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Map<_, _>>(),
        )
    })
}

/// A seed plan, or any plan the `plans` table can hold.
fn plan() -> impl Strategy<Value = Plan> {
    // Small sides often: a plan narrower than the smallest size is the
    // corner a uniform draw would never meet.
    let side = prop_oneof![1u32..=130, 1u32..=i32::MAX as u32];
    (0usize..4, prop::option::of(side), any::<bool>()).prop_map(|(i, max, all)| {
        let mut plan = Plan::seed_plans()[i].clone();
        if let Some(max) = max {
            plan.max_resolution = max;
            if all {
                plan.allowed_models = vec!["*".into()];
            }
        }
        plan
    })
}

/// The default cost rules, or any the configuration accepts.
fn costs() -> impl Strategy<Value = CostRules> {
    prop_oneof![
        Just(CostRules::default()),
        any::<[i64; 5]>().prop_map(|[a, b, c, d, e]| CostRules {
            image_per_megapixel: a,
            video_per_second: b,
            text_per_1k_tokens: c,
            speech_to_text: d,
            text_to_speech: e,
        }),
    ]
}

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
        assert!(side >= MIN_SIDE && side <= plan.max_resolution && side % 8 == 0);
    }
}

/// A request that validates for `capability`, to start from.
fn valid_base(capability: Capability) -> Map<String, Value> {
    let base = match capability {
        Capability::Image => json!({"prompt": "a fox", "aspect_ratio": "16:9", "seed": 1}),
        Capability::Video => json!({"prompt": "waves", "duration_seconds": 4}),
        Capability::Text => json!({"prompt": "hi", "max_tokens": 512}),
        Capability::SpeechToText => json!({"input_id": "inp_01JD3Z8X9Q4W6E2R5T7Y9V1K3M"}),
        Capability::TextToSpeech => json!({"text": "hello", "speed": 1.0}),
    };
    match base {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// A valid request with up to three fields replaced or added.
fn near_valid(capability: Capability) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS), params_object(), 0..3).prop_map(
        move |changes| {
            let mut map = valid_base(capability);
            for (field, pool) in changes {
                // Any value the pool drew for this field, or none at all.
                match pool.get(field) {
                    Some(v) => map.insert(field.to_owned(), v.clone()),
                    None => map.remove(field),
                };
            }
            Value::Object(map)
        },
    )
}

fn request() -> impl Strategy<Value = (Capability, Value)> {
    prop::sample::select(Capability::ALL.to_vec()).prop_flat_map(|capability| {
        let raw = prop_oneof![
            3 => near_valid(capability),
            1 => params_object(),
            1 => value(),
        ];
        (Just(capability), raw)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// `params::validate` never panics, and what it passes is what the
    /// scheduler may store and a worker receive (the `params` fuzz target).
    #[test]
    fn params_validation_never_panics(
        (capability, raw) in request(),
        plan in plan(),
        costs in costs(),
    ) {
        let catalog = ModelCatalog::default();
        let Ok(job) = params::validate(capability, &raw, &plan, &catalog, &costs) else {
            return Ok(());
        };
        prop_assert!(job.cost_tokens >= 0);
        prop_assert_eq!(job.cost_tokens, costs.cost(job.params.size()));
        prop_assert!(plan.allows_model(&job.model));
        prop_assert!(catalog.get(capability).unwrap().models.contains(&job.model));
        match &job.params {
            JobParams::Image(p) => {
                check_text("prompt", &p.prompt, MAX_PROMPT_CHARS);
                check_size(p.width, p.height, &plan);
            }
            JobParams::Video(p) => {
                check_text("prompt", &p.prompt, MAX_PROMPT_CHARS);
                check_size(p.width, p.height, &plan);
            }
            JobParams::Text(p) => check_text("prompt", &p.prompt, MAX_TEXT_PROMPT_CHARS),
            JobParams::SpeechToText(_) => {}
            JobParams::TextToSpeech(p) => check_text("text", &p.text, MAX_SPEECH_CHARS),
        }
        let stored = JobParams::from_stored(capability, job.params.to_value()).unwrap();
        prop_assert_eq!(stored, job.params);
    }

    /// `UserRef` parsing never panics; text and JSON agree; a reference
    /// prints back as it came (the `user_ref` fuzz target).
    #[test]
    fn user_ref_parsing_never_panics(
        text in prop_oneof![
            "\\PC{0,80}",
            "(telegram|discord|web|irc|)[:]?[A-Za-z0-9_.@:\\- \u{0}/é-]{0,70}",
        ],
    ) {
        let parsed = text.parse::<UserRef>();
        let from_json = serde_json::from_value::<UserRef>(Value::String(text.clone()));
        prop_assert_eq!(parsed.is_ok(), from_json.is_ok());
        if let Ok(user) = parsed {
            prop_assert_eq!(user.to_string(), text);
            prop_assert!((1..=UserRef::MAX_ID_LEN).contains(&user.platform_user_id().len()));
        }
    }
}

/// What the first fuzzing runs found, kept as plain tests (fuzz/README.md).
mod found_by_fuzzing {
    use super::*;

    /// A stored plan whose longest side is under 64 pixels (the table only
    /// asks for more than 0): an `aspect_ratio` request panicked in `clamp`
    /// (its bounds crossed). Such a plan now allows no size at all.
    #[test]
    fn a_plan_smaller_than_the_smallest_side_refuses_every_size() {
        let mut plan = Plan::seed_plans()[0].clone();
        for max in [1, 7, 8, 63] {
            plan.max_resolution = max;
            for raw in [
                json!({"prompt": "x", "aspect_ratio": "16:9"}),
                json!({"prompt": "x"}),
                json!({"prompt": "x", "resolution": "64x64"}),
            ] {
                let e = params::validate(
                    Capability::Image,
                    &raw,
                    &plan,
                    &ModelCatalog::default(),
                    &CostRules::default(),
                )
                .unwrap_err();
                assert_eq!(e.code, "resolution_not_allowed", "{max}: {raw}");
            }
        }
    }

    /// Cost rules as large as the configuration accepts overflowed `i64`
    /// (a panic in debug builds, a wrapped, possibly negative cost in
    /// release). A cost now stops at `i64::MAX`: no plan can pay it.
    #[test]
    fn huge_cost_rules_saturate() {
        let costs = CostRules {
            image_per_megapixel: i64::MAX,
            video_per_second: i64::MAX / 2,
            text_per_1k_tokens: i64::MAX,
            speech_to_text: 1,
            text_to_speech: 1,
        };
        let pro = &Plan::seed_plans()[2];
        for (cap, raw) in [
            (
                Capability::Image,
                json!({"prompt": "x", "resolution": "2048x2048"}),
            ),
            (
                Capability::Video,
                json!({"prompt": "x", "duration_seconds": 10}),
            ),
            (Capability::Text, json!({"prompt": "x", "max_tokens": 4096})),
        ] {
            let job = params::validate(cap, &raw, pro, &ModelCatalog::default(), &costs).unwrap();
            assert_eq!(job.cost_tokens, i64::MAX, "{cap}");
        }
    }
}
