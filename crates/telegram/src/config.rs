//! `tessera telegram` configuration: one file, any number of bot instances.
//!
//! Secrets (each bot's Telegram token and its Tessera API key) are never in the
//! file or on the command line: each instance names an environment variable or
//! a file to read them from, and [`Secret`] never prints its value.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tessera_chat::LimitConfig;
use tessera_core::Capability;

/// The example printed by `tessera telegram --print-example`.
pub const EXAMPLE: &str = include_str!("../telegram.example.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The scheduler's public API.
    pub scheduler_url: String,
    /// The Bot API server (a local `telegram-bot-api` server works too).
    pub api_url: String,
    /// Long-poll timeout of `getUpdates`, seconds.
    pub poll_timeout_secs: u32,
    /// How often a followed job is read, ms.
    pub job_poll_ms: u64,
    /// Least time between two edits of one progress message, ms (Telegram
    /// allows about one message per second per chat).
    pub min_edit_ms: u64,
    /// Largest voice message or audio file accepted, bytes (Telegram bots can
    /// download at most 20 MB).
    pub max_audio_bytes: u32,
    pub bots: Vec<BotInstance>,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            scheduler_url: "http://127.0.0.1:8000".into(),
            api_url: "https://api.telegram.org/".into(),
            poll_timeout_secs: 30,
            job_poll_ms: 1000,
            min_edit_ms: 3000,
            max_audio_bytes: 20 * 1024 * 1024,
            bots: Vec::new(),
        }
    }
}

/// One bot instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotInstance {
    /// The bot id its API key was made for, for example `tg-image-bot-1`.
    pub id: String,
    /// What it serves: `image`, `video`, `text`, `speech_to_text`, `text_to_speech`.
    pub capabilities: Vec<Capability>,
    /// Environment variable holding the Telegram token
    /// (default `TELEGRAM_TOKEN_<ID>`, e.g. `TELEGRAM_TOKEN_TG_IMAGE_BOT_1`).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Or a file holding it.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the Tessera API key
    /// (default `TESSERA_API_KEY_<ID>`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Or a file holding it.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub limits: LimitConfig,
}

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn env_name(prefix: &str, id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{id}")
}

fn read_secret(
    what: &str,
    id: &str,
    env: Option<&str>,
    file: Option<&PathBuf>,
    default_env: String,
) -> anyhow::Result<Secret> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "bot {id}: cannot read its {what} from {}: {e}",
                path.display()
            )
        })?;
        let text = text.trim();
        anyhow::ensure!(!text.is_empty(), "bot {id}: {} is empty", path.display());
        return Ok(Secret(text.to_owned()));
    }
    let name = env.map_or(default_env, str::to_owned);
    match std::env::var(&name) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
        _ => anyhow::bail!(
            "bot {id}: its {what} is not set; put it in the environment variable {name} \
             (or name a file with {}_file)",
            if what == "Telegram token" {
                "token"
            } else {
                "api_key"
            }
        ),
    }
}

impl BotInstance {
    pub fn token(&self) -> anyhow::Result<Secret> {
        read_secret(
            "Telegram token",
            &self.id,
            self.token_env.as_deref(),
            self.token_file.as_ref(),
            env_name("TELEGRAM_TOKEN_", &self.id),
        )
    }

    pub fn api_key(&self) -> anyhow::Result<Secret> {
        read_secret(
            "Tessera API key",
            &self.id,
            self.api_key_env.as_deref(),
            self.api_key_file.as_ref(),
            env_name("TESSERA_API_KEY_", &self.id),
        )
    }
}

impl TelegramConfig {
    /// Reads a TOML file, then `TESSERA_TELEGRAM__*` variables (`__` between
    /// levels, e.g. `TESSERA_TELEGRAM__SCHEDULER_URL`).
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        use figment::providers::{Env, Format, Serialized, Toml};
        let mut fig = figment::Figment::from(Serialized::defaults(TelegramConfig::default()));
        if let Some(p) = path {
            anyhow::ensure!(p.exists(), "config file {} not found", p.display());
            fig = fig.merge(Toml::file(p));
        }
        let config: TelegramConfig = fig
            .merge(Env::prefixed("TESSERA_TELEGRAM__").split("__"))
            .extract()?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.bots.is_empty(),
            "no bots configured: add [[bots]] tables"
        );
        let mut seen = std::collections::HashSet::new();
        for b in &self.bots {
            anyhow::ensure!(!b.id.is_empty(), "a bot has an empty id");
            anyhow::ensure!(seen.insert(&b.id), "bot {} is configured twice", b.id);
            anyhow::ensure!(
                !b.capabilities.is_empty(),
                "bot {} serves no capability",
                b.id
            );
        }
        url::Url::parse(&self.api_url)?;
        url::Url::parse(&self.scheduler_url)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_names_twelve_secrets_by_environment() {
        let c: TelegramConfig = toml::from_str(EXAMPLE).unwrap();
        c.check().unwrap();
        assert_eq!(c.bots.len(), 6);
        assert_eq!(c.bots[0].id, "tg-image-bot-1");
        assert_eq!(c.bots[3].capabilities, vec![Capability::Video]);
        let err = c.bots[0].token().unwrap_err().to_string();
        assert!(err.contains("TELEGRAM_TOKEN_TG_IMAGE_BOT_1"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret("123:abc".into())), "Secret(***)");
    }
}
