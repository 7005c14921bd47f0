//! The slash commands: what an instance registers with Discord (the chat
//! core's commands, with Discord options in place of free text) and how an
//! invoked command's options read back into the chat core's command.

use serde_json::json;
use twilight_model::application::command::Command as AppCommand;
use twilight_model::application::interaction::application_command::{
    CommandData, CommandOptionValue,
};
use twilight_model::application::interaction::{Interaction, InteractionData};

use tessera_core::Capability;

/// The application commands an instance registers: the chat core's commands
/// with Discord options in place of free text.
pub fn application_commands(capabilities: &[Capability]) -> Vec<AppCommand> {
    tessera_chat::command::commands_for(capabilities)
        .into_iter()
        // `/start` is Telegram's convention; Discord lists commands itself.
        .filter(|c| c.name != "start")
        .map(|c| {
            let string = |name: &str, description: &str, required: bool| {
                json!({"type": 3, "name": name, "description": description, "required": required})
            };
            let options = match c.name {
                "imagine" | "video" => vec![
                    string("prompt", "What to make", true),
                    string("ar", "Aspect ratio, for example 16:9", false),
                    json!({"type": 4, "name": "seed", "description": "Seed, for a repeatable result", "required": false, "min_value": 0}),
                    string("model", "Model id, within your plan", false),
                ],
                "ask" => vec![string("prompt", "Your question", true)],
                "report" => vec![
                    string("job", "The job id of the output (job_...)", true),
                    string("reason", "What is wrong with it", false),
                ],
                "say" => vec![string("text", "The words to say", true)],
                "transcribe" => vec![
                    json!({"type": 11, "name": "file", "description": "A voice message or audio file", "required": true}),
                ],
                _ => vec![],
            };
            // The first line of the chat core's description, within Discord's 100 characters.
            let description: String = c
                .description
                .split(':')
                .next()
                .unwrap_or(c.description)
                .chars()
                .take(100)
                .collect();
            serde_json::from_value(json!({
                "type": 1,
                "name": c.name,
                "description": description,
                "options": options,
                "version": "1",
            }))
            .expect("a well-formed command")
        })
        .chain(std::iter::once(
            serde_json::from_value(json!({
                "type": 1,
                "name": "subscribe",
                "description": "Buy a plan: more tokens a day",
                "options": [],
                "version": "1",
            }))
            .expect("a well-formed command"),
        ))
        .collect()
}

/// Whether the interaction is `/subscribe`, which the Discord bot answers
/// itself (premium buttons are Discord's own).
pub fn is_subscribe(interaction: &Interaction) -> bool {
    matches!(
        &interaction.data,
        Some(InteractionData::ApplicationCommand(data)) if data.name == "subscribe"
    )
}

/// Reads a slash command into the chat core's command. Job commands keep
/// their options apart (a prompt is taken verbatim, so `--seed` inside it is
/// just words); the others are parsed as their text would be.
pub fn slash_command(
    data: &CommandData,
    capabilities: &[Capability],
) -> Result<Option<tessera_chat::command::Command>, tessera_chat::command::CommandError> {
    let mut prompt = String::new();
    let mut flags = Vec::new();
    for option in &data.options {
        let value = match &option.value {
            CommandOptionValue::String(s) => s.clone(),
            CommandOptionValue::Integer(i) => i.to_string(),
            CommandOptionValue::Number(n) => n.to_string(),
            CommandOptionValue::Boolean(b) => b.to_string(),
            _ => continue,
        };
        match option.name.as_str() {
            "prompt" | "text" => prompt = value,
            name => flags.push((name.to_owned(), value)),
        }
    }
    match data.name.as_str() {
        "imagine" | "video" | "ask" | "say" => {
            tessera_chat::command::job_with_options(&data.name, &prompt, &flags, capabilities)
                .map(Some)
        }
        "report" => {
            let option = |want: &str| {
                flags
                    .iter()
                    .find(|(name, _)| name == want)
                    .map_or("", |(_, v)| v.as_str())
            };
            let text = format!("/report {} {}", option("job"), option("reason"));
            tessera_chat::command::parse(&text, None, capabilities)
        }
        name => tessera_chat::command::parse(&format!("/{name}"), None, capabilities),
    }
}

/// Whether only the user who asked may see the answer: a link code is theirs
/// alone (whoever enters it on the website links the asker to their own
/// account), so `/link` is answered with an ephemeral message.
pub fn answers_privately(interaction: &Interaction) -> bool {
    matches!(
        &interaction.data,
        Some(InteractionData::ApplicationCommand(data)) if data.name == "link"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_follow_the_capabilities_within_discord_limits() {
        let image = application_commands(&[Capability::Image]);
        let names: Vec<&str> = image.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "imagine",
                "status",
                "cancel",
                "quota",
                "link",
                "report",
                "help",
                "subscribe"
            ]
        );
        let all = application_commands(&[
            Capability::Image,
            Capability::Video,
            Capability::Text,
            Capability::SpeechToText,
            Capability::TextToSpeech,
        ]);
        assert_eq!(all.len(), 12);
        for c in &all {
            assert!((1..=32).contains(&c.name.len()), "{}", c.name);
            assert!(
                (1..=100).contains(&c.description.chars().count()),
                "{}",
                c.name
            );
            for o in &c.options {
                assert!((1..=100).contains(&o.description.chars().count()));
            }
        }
        let transcribe = all.iter().find(|c| c.name == "transcribe").unwrap();
        assert_eq!(
            transcribe.options[0].kind,
            twilight_model::application::command::CommandOptionType::Attachment
        );
    }

    fn job_params(data: serde_json::Value) -> serde_json::Value {
        let data: CommandData = serde_json::from_value(data).unwrap();
        match slash_command(&data, &[Capability::Image]).unwrap().unwrap() {
            tessera_chat::command::Command::Job { params, .. } => params,
            other => panic!("not a job: {other:?}"),
        }
    }

    #[test]
    fn slash_options_become_the_jobs_parameters() {
        let params = job_params(json!({
            "id": "11", "name": "imagine", "type": 1,
            "options": [
                {"name": "seed", "type": 4, "value": 7},
                {"name": "prompt", "type": 3, "value": "a lighthouse at dawn"},
                {"name": "ar", "type": 3, "value": "16:9"}
            ]
        }));
        assert_eq!(params["prompt"], "a lighthouse at dawn");
        assert_eq!(params["seed"], 7);
        assert_eq!(params["aspect_ratio"], "16:9");
        // A prompt is words, even when they look like options.
        let params = job_params(json!({
            "id": "11", "name": "imagine", "type": 1,
            "options": [{"name": "prompt", "type": 3, "value": "a sign reading --seed 5"}]
        }));
        assert_eq!(params["prompt"], "a sign reading --seed 5");
        assert!(params.get("seed").is_none());
        // Commands without options are the chat core's.
        let data: CommandData =
            serde_json::from_value(json!({"id": "12", "name": "quota", "type": 1})).unwrap();
        assert_eq!(
            slash_command(&data, &[Capability::Image]).unwrap(),
            Some(tessera_chat::command::Command::Quota)
        );
        let data: CommandData =
            serde_json::from_value(json!({"id": "14", "name": "link", "type": 1})).unwrap();
        assert_eq!(
            slash_command(&data, &[Capability::Image]).unwrap(),
            Some(tessera_chat::command::Command::Link)
        );
        let data: CommandData = serde_json::from_value(
            json!({"id": "13", "name": "video", "type": 1, "options": [{"name": "prompt", "type": 3, "value": "x"}]}),
        )
        .unwrap();
        assert!(
            slash_command(&data, &[Capability::Image]).is_err(),
            "not served here"
        );
    }
}
