//! What a chat user typed, as a command.
//!
//! Parsing is the only place untrusted chat text is read: it becomes either a
//! command with its arguments or a plain-words error. Prompts go to the public
//! API as they are; the scheduler validates them (length, resolution, model,
//! plan) and its error messages are shown to the user.

use serde_json::{json, Map, Value};
use tessera_core::Capability;

/// Longest text a user may send as a prompt, in characters; the scheduler
/// enforces its own limit as well.
pub const MAX_TEXT_CHARS: usize = 4000;

/// A parsed command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Start,
    Help,
    Status,
    /// Cancel the user's newest live job.
    Cancel,
    Quota,
    /// Ask for a code that links this chat user to a website account.
    Link,
    /// Report an output to the operators: the job named, or the one whose
    /// message this one replies to.
    Report {
        job_id: Option<tessera_core::JobId>,
        reason: String,
    },
    /// Create a job: `/imagine`, `/video`, `/ask`, `/say`, or text with no
    /// command on a bot whose first capability takes text.
    Job {
        capability: Capability,
        params: Value,
    },
}

/// Why a message is not a command the bot can run; shown to the user.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("I don't know the command /{0}. Send /help to see what I can do.")]
    Unknown(String),
    #[error("This bot doesn't do {0}. Send /help to see what it does.")]
    NotServed(&'static str),
    #[error("{0}")]
    Usage(String),
}

/// A slash command the platform should list: name and one-line description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// The capability it needs, if it creates a job.
    pub capability: Option<Capability>,
}

const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "imagine",
        description: "Make an image: /imagine <prompt> [--ar 16:9] [--seed N] [--model id]",
        capability: Some(Capability::Image),
    },
    CommandInfo {
        name: "video",
        description: "Make a short video: /video <prompt> [--ar 16:9] [--seed N] [--model id]",
        capability: Some(Capability::Video),
    },
    CommandInfo {
        name: "ask",
        description: "Ask the language model: /ask <text>",
        capability: Some(Capability::Text),
    },
    CommandInfo {
        name: "say",
        description: "Turn text into speech: /say <text>",
        capability: Some(Capability::TextToSpeech),
    },
    CommandInfo {
        name: "transcribe",
        description: "Write down what a voice message or audio file says",
        capability: Some(Capability::SpeechToText),
    },
    CommandInfo {
        name: "status",
        description: "Your jobs that are waiting or running",
        capability: None,
    },
    CommandInfo {
        name: "cancel",
        description: "Cancel your newest waiting or running job (tokens refunded)",
        capability: None,
    },
    CommandInfo {
        name: "quota",
        description: "Your plan, tokens left today and when they reset",
        capability: None,
    },
    CommandInfo {
        name: "link",
        description:
            "Get a code to link this account to your website account, to share one plan and quota",
        capability: None,
    },
    CommandInfo {
        name: "report",
        description: "Report an output to the operators: reply to its message with /report <why>, or /report <job id> <why>",
        capability: None,
    },
    CommandInfo {
        name: "help",
        description: "What this bot can do",
        capability: None,
    },
    CommandInfo {
        name: "start",
        description: "Start here",
        capability: None,
    },
];

/// The commands a bot serving `capabilities` offers, in menu order.
pub fn commands_for(capabilities: &[Capability]) -> Vec<CommandInfo> {
    COMMANDS
        .iter()
        .filter(|c| c.capability.is_none_or(|cap| capabilities.contains(&cap)))
        .copied()
        .collect()
}

fn capability_words(c: Capability) -> &'static str {
    match c {
        Capability::Image => "images",
        Capability::Video => "videos",
        Capability::Text => "text replies",
        Capability::SpeechToText => "transcription",
        Capability::TextToSpeech => "speech",
    }
}

/// Parses a text message. `bot_username` strips `/cmd@bot` suffixes; a command
/// addressed to another bot is ignored (`Ok(None)`), as is empty text. Text
/// without a command creates a job of the bot's first text-taking capability.
pub fn parse(
    text: &str,
    bot_username: Option<&str>,
    capabilities: &[Capability],
) -> Result<Option<Command>, CommandError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let Some(rest) = text.strip_prefix('/') else {
        let Some(&cap) = capabilities.iter().find(|c| {
            matches!(
                c,
                Capability::Image | Capability::Video | Capability::Text | Capability::TextToSpeech
            )
        }) else {
            return Err(CommandError::Usage(
                "Send a voice message or an audio file and I'll write down what it says.".into(),
            ));
        };
        return job(cap, text, capabilities).map(Some);
    };
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (name, addressee) = match head.split_once('@') {
        Some((n, a)) => (n, Some(a)),
        None => (head, None),
    };
    if let (Some(to), Some(me)) = (addressee, bot_username) {
        if !to.eq_ignore_ascii_case(me) {
            return Ok(None);
        }
    }
    let command = match name.to_ascii_lowercase().as_str() {
        "start" => Command::Start,
        "help" => Command::Help,
        "status" => Command::Status,
        "cancel" => Command::Cancel,
        "quota" => Command::Quota,
        "link" => Command::Link,
        "report" => report(args)?,
        "imagine" => job(Capability::Image, args, capabilities)?,
        "video" => job(Capability::Video, args, capabilities)?,
        "ask" => job(Capability::Text, args, capabilities)?,
        "say" => job(Capability::TextToSpeech, args, capabilities)?,
        "transcribe" => job(Capability::SpeechToText, args, capabilities)?,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(CommandError::Unknown(shown));
        }
    };
    Ok(Some(command))
}

/// Longest report reason, in characters (the scheduler's limit).
pub const MAX_REPORT_CHARS: usize = 500;

/// `/report [job id] [why]`: a first word that looks like a job id names the
/// job; the rest is the reason (the operators read it).
fn report(args: &str) -> Result<Command, CommandError> {
    let (first, rest) = match args.find(char::is_whitespace) {
        Some(i) => (&args[..i], args[i..].trim()),
        None => (args, ""),
    };
    let (job_id, reason) = if first.starts_with("job_") {
        let id = first.parse().map_err(|_| {
            CommandError::Usage(format!(
                "{} is not a job id. Send /report <job id> <why>, or reply to my message with /report <why>.",
                first.chars().take(40).collect::<String>()
            ))
        })?;
        (Some(id), rest)
    } else {
        (None, args)
    };
    let reason = if reason.is_empty() {
        "reported in the chat, no reason given".to_owned()
    } else {
        reason.chars().take(MAX_REPORT_CHARS).collect()
    };
    Ok(Command::Report { job_id, reason })
}

/// A job command whose options arrive already apart, as Discord's slash
/// commands give them: the prompt verbatim (a `--` inside it is just text)
/// and each option by name (`ar`, `seed`, `model`), checked as the text
/// parser checks them.
pub fn job_with_options(
    name: &str,
    prompt: &str,
    flags: &[(String, String)],
    capabilities: &[Capability],
) -> Result<Command, CommandError> {
    let cap = match name {
        "imagine" => Capability::Image,
        "video" => Capability::Video,
        "ask" => Capability::Text,
        "say" => Capability::TextToSpeech,
        "transcribe" => Capability::SpeechToText,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(CommandError::Unknown(shown));
        }
    };
    let mut options = Map::new();
    for (flag, value) in flags {
        apply_option(flag, value, &mut options)?;
    }
    job_from(cap, prompt.trim(), options, capabilities)
}

fn job(cap: Capability, args: &str, capabilities: &[Capability]) -> Result<Command, CommandError> {
    if matches!(cap, Capability::Image | Capability::Video)
        && args.chars().count() <= MAX_TEXT_CHARS
    {
        let (prompt, options) = split_options(args)?;
        return job_from(cap, &prompt, options, capabilities);
    }
    job_from(cap, args, Map::new(), capabilities)
}

fn job_from(
    cap: Capability,
    args: &str,
    options: Map<String, Value>,
    capabilities: &[Capability],
) -> Result<Command, CommandError> {
    if !capabilities.contains(&cap) {
        return Err(CommandError::NotServed(capability_words(cap)));
    }
    let usage = |what: &str| CommandError::Usage(what.to_owned());
    if args.chars().count() > MAX_TEXT_CHARS {
        return Err(CommandError::Usage(format!(
            "That is too long: at most {MAX_TEXT_CHARS} characters, please."
        )));
    }
    let params = match cap {
        Capability::Image | Capability::Video => {
            let prompt = args;
            if prompt.is_empty() {
                let cmd = if cap == Capability::Image {
                    "imagine"
                } else {
                    "video"
                };
                return Err(usage(&format!(
                    "Tell me what to make, for example: /{cmd} a lighthouse at dawn --ar 16:9"
                )));
            }
            let mut p = Map::new();
            p.insert("prompt".into(), json!(prompt));
            p.extend(options);
            Value::Object(p)
        }
        Capability::Text => {
            if args.is_empty() {
                return Err(usage(
                    "Ask me something, for example: /ask why is the sky blue?",
                ));
            }
            json!({"prompt": args})
        }
        Capability::TextToSpeech => {
            if args.is_empty() {
                return Err(usage(
                    "Give me the words to say, for example: /say good morning",
                ));
            }
            json!({"text": args})
        }
        Capability::SpeechToText => {
            return Err(usage(
                "Send a voice message or an audio file to transcribe.",
            ))
        }
    };
    Ok(Command::Job {
        capability: cap,
        params,
    })
}

/// Splits `--ar W:H`, `--seed N` and `--model id` out of a prompt.
fn split_options(args: &str) -> Result<(String, Map<String, Value>), CommandError> {
    let mut words = args.split_whitespace();
    let mut prompt: Vec<&str> = Vec::new();
    let mut options = Map::new();
    while let Some(word) = words.next() {
        let Some(flag) = word.strip_prefix("--") else {
            prompt.push(word);
            continue;
        };
        let value = words.next().ok_or_else(|| {
            CommandError::Usage(format!("--{flag} needs a value, for example --ar 16:9"))
        })?;
        apply_option(flag, value, &mut options)?;
    }
    Ok((prompt.join(" "), options))
}

/// Checks one option and puts it into the job's parameters.
fn apply_option(
    flag: &str,
    value: &str,
    options: &mut Map<String, Value>,
) -> Result<(), CommandError> {
    {
        match flag {
            "ar" | "aspect" => {
                options.insert("aspect_ratio".into(), json!(value));
            }
            "seed" => {
                let seed: u64 = value.parse().map_err(|_| {
                    CommandError::Usage(format!(
                        "--seed takes a whole number, not {:?}",
                        value.chars().take(24).collect::<String>()
                    ))
                })?;
                options.insert("seed".into(), json!(seed));
            }
            "model" => {
                options.insert("model".into(), json!(value));
            }
            other => {
                return Err(CommandError::Usage(format!(
                    "I don't know the option --{}; try --ar, --seed or --model.",
                    other.chars().take(24).collect::<String>()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &[Capability] = &[Capability::Image];

    #[test]
    fn imagine_takes_a_prompt_and_options() {
        let c = parse(
            "/imagine@tg_image_bot a red fox --ar 16:9 --seed 42 --model flux-schnell",
            Some("tg_image_bot"),
            IMAGE,
        )
        .unwrap();
        assert_eq!(
            c,
            Some(Command::Job {
                capability: Capability::Image,
                params: json!({"prompt": "a red fox", "aspect_ratio": "16:9", "seed": 42, "model": "flux-schnell"})
            })
        );
    }

    #[test]
    fn plain_text_is_the_bots_first_job_kind() {
        let c = parse("a lighthouse", None, &[Capability::TextToSpeech]).unwrap();
        assert_eq!(
            c,
            Some(Command::Job {
                capability: Capability::TextToSpeech,
                params: json!({"text": "a lighthouse"})
            })
        );
    }

    #[test]
    fn link_takes_no_arguments_and_any_case() {
        for text in ["/link", "/LINK", "/link@tg_image_bot", "/link please"] {
            assert_eq!(
                parse(text, Some("tg_image_bot"), IMAGE),
                Ok(Some(Command::Link)),
                "{text}"
            );
        }
        assert_eq!(
            parse("/link", None, &[Capability::SpeechToText]),
            Ok(Some(Command::Link))
        );
    }

    #[test]
    fn commands_for_other_bots_and_empty_text_are_ignored() {
        assert_eq!(parse("/imagine@other_bot x", Some("me"), IMAGE), Ok(None));
        assert_eq!(parse("   ", Some("me"), IMAGE), Ok(None));
    }

    #[test]
    fn mistakes_get_plain_words() {
        let err = |t: &str| parse(t, None, IMAGE).unwrap_err().to_string();
        assert!(err("/imagine").contains("Tell me what to make"));
        assert!(err("/imagine x --seed abc").contains("whole number"));
        assert!(err("/imagine x --ar").contains("needs a value"));
        assert!(err("/imagine x --steps 9").contains("--steps"));
        assert!(err("/video a cat").contains("doesn't do videos"));
        assert!(err("/frobnicate").contains("/frobnicate"));
        assert!(err(&format!("/imagine {}", "x".repeat(MAX_TEXT_CHARS + 1))).contains("too long"));
    }

    #[test]
    fn report_takes_a_job_id_or_a_reply() {
        let p = |t: &str| parse(t, None, IMAGE);
        let id = tessera_core::JobId::generate();
        assert_eq!(
            p(&format!("/report {id} gross, really")),
            Ok(Some(Command::Report {
                job_id: Some(id),
                reason: "gross, really".into()
            }))
        );
        assert_eq!(
            p("/report  offensive"),
            Ok(Some(Command::Report {
                job_id: None,
                reason: "offensive".into()
            }))
        );
        match p("/report") {
            Ok(Some(Command::Report {
                job_id: None,
                reason,
            })) => assert!(!reason.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(p("/report job_nope why"), Err(CommandError::Usage(m)) if m.contains("not a job id"))
        );
    }

    #[test]
    fn the_menu_lists_only_what_the_bot_serves() {
        let names: Vec<_> = commands_for(IMAGE).iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["imagine", "status", "cancel", "quota", "link", "report", "help", "start"]
        );
    }
}
