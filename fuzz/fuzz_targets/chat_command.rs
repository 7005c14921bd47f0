//! `tessera_chat::command`: what a chat user types, as the bots read it.
//!
//! `parse` takes a message's text (Telegram and Discord text, with the bot's
//! username for `/cmd@bot`), and `job_with_options` a Discord slash command
//! whose prompt and options arrive apart. Both run on text nobody checked.
//!
//! Asserted: no panic; a job command is of a capability the bot serves, and
//! its parameters are an object whose prompt (or text) is not empty and
//! within `MAX_TEXT_CHARS`; an unknown command is shown back in at most 32
//! characters. The parameters then go through `params::validate` under the
//! seed's FREE plan, as the scheduler would take them, which must not panic
//! either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use tessera_chat::command::{self, Command, CommandError, MAX_TEXT_CHARS};
use tessera_core::billing::CostRules;
use tessera_core::catalog::ModelCatalog;
use tessera_core::{params, Capability, Plan};

/// The input's layout, so that a seed is readable (`fuzz/seeds/chat_command`):
///
/// - byte 0: the capabilities the bot serves, one bit each in
///   `Capability::ALL`'s order;
/// - byte 1: bit 0 clear: a text message, the rest of the input (bit 1: the
///   bot's username is `tessera_bot`, else unknown); bit 0 set: a slash
///   command, the rest split at newlines into its name, its prompt, then
///   option names and values in turn.
/// The text must be UTF-8, as every platform delivers it.
enum Input {
    Text {
        text: String,
        bot_username: Option<&'static str>,
        capabilities: Vec<Capability>,
    },
    Slash {
        name: String,
        prompt: String,
        flags: Vec<(String, String)>,
        capabilities: Vec<Capability>,
    },
}

impl Input {
    fn read(data: &[u8]) -> Option<Input> {
        let (&[mask, mode], rest) = data.split_first_chunk::<2>()?;
        let text = std::str::from_utf8(rest).ok()?;
        let capabilities = served(mask);
        if mode & 1 == 0 {
            return Some(Input::Text {
                text: text.to_owned(),
                bot_username: (mode & 2 != 0).then_some("tessera_bot"),
                capabilities,
            });
        }
        let mut lines = text.split('\n').map(str::to_owned);
        let name = lines.next().unwrap_or_default();
        let prompt = lines.next().unwrap_or_default();
        let mut flags = Vec::new();
        while let Some(flag) = lines.next() {
            flags.push((flag, lines.next().unwrap_or_default()));
        }
        Some(Input::Slash {
            name,
            prompt,
            flags,
            capabilities,
        })
    }
}

/// The capabilities whose bit is set in `mask`, in the catalogue's order.
fn served(mask: u8) -> Vec<Capability> {
    Capability::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, c)| c)
        .collect()
}

fn check(result: Result<Option<Command>, CommandError>, capabilities: &[Capability]) {
    match result {
        Ok(Some(Command::Job { capability, params })) => {
            assert!(
                capabilities.contains(&capability),
                "{capability} not served"
            );
            let Value::Object(map) = &params else {
                panic!("parameters are not an object: {params}")
            };
            let text = map
                .get("prompt")
                .or_else(|| map.get("text"))
                .and_then(Value::as_str)
                .expect("a job has its prompt or text");
            assert!(!text.is_empty(), "an empty prompt");
            assert!(
                text.chars().count() <= MAX_TEXT_CHARS,
                "a prompt over the limit"
            );
            let free = &Plan::seed_plans()[0];
            let _ = params::validate(
                capability,
                &params,
                free,
                &ModelCatalog::default(),
                &CostRules::default(),
            );
        }
        Err(CommandError::Unknown(shown)) => {
            assert!(
                shown.chars().count() <= 32,
                "an unknown command shown whole"
            );
        }
        Ok(_) | Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match Input::read(data) {
        None => {}
        Some(Input::Text {
            text,
            bot_username,
            capabilities,
        }) => {
            let result = command::parse(&text, bot_username, &capabilities);
            check(result, &capabilities);
        }
        Some(Input::Slash {
            name,
            prompt,
            flags,
            capabilities,
        }) => {
            let result = command::job_with_options(&name, &prompt, &flags, &capabilities);
            check(result.map(Some), &capabilities);
        }
    }
});
