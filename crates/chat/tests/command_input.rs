//! The chat command parser never panics, on stable Rust: the twin of the
//! cargo-fuzz target `chat_command` (fuzz/), so the property runs in
//! scripts/test. Messages are drawn to look like commands often: a known or
//! unknown `/name`, an `@bot` suffix, `--options` with or without values,
//! any Unicode, and texts around the length limit.

use proptest::prelude::*;
use serde_json::Value;

use tessera_chat::command::{self, Command, CommandError, MAX_TEXT_CHARS};
use tessera_core::billing::CostRules;
use tessera_core::catalog::ModelCatalog;
use tessera_core::{params, Capability, Plan};

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        "[a-z]{1,10}",
        prop::sample::select(vec![
            "/imagine",
            "/video",
            "/ask",
            "/say",
            "/transcribe",
            "/status",
            "/cancel",
            "/quota",
            "/link",
            "/help",
            "/start",
            "/IMAGINE@tessera_bot",
            "/imagine@other",
            "--ar",
            "--aspect",
            "--seed",
            "--model",
            "--steps",
            "--",
            "16:9",
            "0:0",
            "18446744073709551616",
            "-1",
            "flux-schnell",
            "@",
            "/",
            "\u{0}",
            "\n",
            "\u{2003}",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A message: words joined by assorted blanks, sometimes at the length limit.
fn message() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec((word(), prop::sample::select(vec![" ", "  ", "\t", "\n", "\u{a0}", ""])), 0..12)
            .prop_map(|parts| parts.into_iter().map(|(w, s)| w + s).collect()),
        1 => (0usize..3).prop_map(|extra| format!("/imagine {}", "x".repeat(MAX_TEXT_CHARS - 1 + extra))),
        1 => (0usize..3).prop_map(|extra| "y ".repeat(MAX_TEXT_CHARS / 2 + extra)),
    ]
}

fn capabilities() -> impl Strategy<Value = Vec<Capability>> {
    prop::sample::subsequence(Capability::ALL.to_vec(), 0..=Capability::ALL.len())
}

/// What the fuzz target asserts of an answer.
fn check(result: Result<Option<Command>, CommandError>, capabilities: &[Capability]) {
    match result {
        Ok(Some(Command::Job { capability, params })) => {
            assert!(capabilities.contains(&capability));
            let text = params
                .get("prompt")
                .or_else(|| params.get("text"))
                .and_then(Value::as_str)
                .expect("a job has its prompt or text");
            assert!(!text.is_empty() && text.chars().count() <= MAX_TEXT_CHARS);
            // And the scheduler's validation takes it without panicking.
            let _ = params::validate(
                capability,
                &params,
                &Plan::seed_plans()[0],
                &ModelCatalog::default(),
                &CostRules::default(),
            );
        }
        Err(CommandError::Unknown(shown)) => assert!(shown.chars().count() <= 32),
        Ok(_) | Err(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsing_a_message_never_panics(
        text in message(),
        bot in prop::option::of(prop_oneof![Just("tessera_bot".to_owned()), "\\PC{0,8}"]),
        caps in capabilities(),
    ) {
        check(command::parse(&text, bot.as_deref(), &caps), &caps);
    }

    #[test]
    fn a_slash_command_never_panics(
        name in prop_oneof![
            prop::sample::select(vec!["imagine", "video", "ask", "say", "transcribe"]).prop_map(str::to_owned),
            "\\PC{0,40}",
        ],
        prompt in message(),
        flags in prop::collection::vec((
            prop_oneof![
                prop::sample::select(vec!["ar", "aspect", "seed", "model"]).prop_map(str::to_owned),
                "\\PC{0,30}",
            ],
            word(),
        ), 0..4),
        caps in capabilities(),
    ) {
        check(command::job_with_options(&name, &prompt, &flags, &caps).map(Some), &caps);
    }
}
