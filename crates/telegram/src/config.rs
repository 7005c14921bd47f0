//! `tessera telegram` configuration: one file, any number of bot instances.
//!
//! Secrets (each bot's Telegram token and its Tessera API key) are never in the
//! file or on the command line: each instance names an environment variable or
//! a file to read them from, and [`Secret`] never prints its value.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tessera_chat::secret::{env_name, SecretSource};
use tessera_chat::LimitConfig;

pub use tessera_chat::Secret;
use tessera_core::{BotId, Capability};

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
    /// How often each bot asks the scheduler for refunds operators ordered
    /// of its Telegram Stars payments, seconds (and once at start).
    pub refund_poll_secs: u64,
    /// Largest voice message or audio file accepted, bytes (Telegram bots can
    /// download at most 20 MB).
    pub max_audio_bytes: u32,
    /// Largest file uploaded, bytes: Telegram's Bot API takes 50 MB (a
    /// local `telegram-bot-api` server up to 2000 MB). Larger outputs go as
    /// download links.
    pub max_upload_bytes: u64,
    /// The website's public address, for download links to outputs larger
    /// than Telegram takes (`tessera up` sets it to its own website).
    pub site_url: Option<String>,
    /// Receive updates on a webhook instead of long polling.
    pub webhook: Option<Webhook>,
    pub bots: Vec<BotInstance>,
}

/// Webhook mode: Telegram POSTs each update to
/// `{public_url}/telegram/{bot id}`, which a reverse proxy with TLS forwards
/// to `listen`. Every request must carry the secret token the bot registered
/// with `setWebhook` (a new random one at each start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where this process listens, e.g. `127.0.0.1:8443`.
    pub listen: std::net::SocketAddr,
    /// The public HTTPS base URL Telegram reaches, e.g. `https://bots.example.org`.
    pub public_url: String,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            scheduler_url: "http://127.0.0.1:8000".into(),
            api_url: "https://api.telegram.org/".into(),
            poll_timeout_secs: 30,
            job_poll_ms: 1000,
            min_edit_ms: 3000,
            refund_poll_secs: 30,
            max_audio_bytes: 20 * 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            site_url: None,
            webhook: None,
            bots: Vec::new(),
        }
    }
}

/// One bot instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotInstance {
    /// The bot id its API key was made for, for example `tg-image-bot-1`.
    pub id: BotId,
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

impl BotInstance {
    pub fn token(&self) -> anyhow::Result<Secret> {
        SecretSource {
            what: "Telegram token",
            file_key: "token_file",
            bot_id: &self.id,
            env: self.token_env.as_deref(),
            file: self.token_file.as_deref(),
            default_env: env_name("TELEGRAM_TOKEN_", &self.id),
        }
        .read()
    }

    pub fn api_key(&self) -> anyhow::Result<Secret> {
        tessera_chat::secret::api_key(
            &self.id,
            self.api_key_env.as_deref(),
            self.api_key_file.as_deref(),
        )
    }
}

impl TelegramConfig {
    /// Reads a TOML file, then `TESSERA_TELEGRAM__*` variables (`__` between
    /// levels, e.g. `TESSERA_TELEGRAM__SCHEDULER_URL`).
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let config: TelegramConfig = tessera_chat::config::load(path, "TESSERA_TELEGRAM__")?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        tessera_chat::config::check_bots(
            self.bots
                .iter()
                .map(|b| (b.id.as_str(), b.capabilities.as_slice())),
        )?;
        url::Url::parse(&self.api_url)?;
        url::Url::parse(&self.scheduler_url)?;
        if let Some(w) = &self.webhook {
            let url = url::Url::parse(&w.public_url)
                .map_err(|e| anyhow::anyhow!("webhook.public_url: {e}"))?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https"),
                "webhook.public_url must be an http(s) URL"
            );
        }
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
        let defaults = TelegramConfig {
            bots: c.bots.clone(),
            ..Default::default()
        };
        assert_eq!(
            c, defaults,
            "the example's top-level values are the defaults"
        );
        let err = c.bots[0].token().unwrap_err().to_string();
        assert!(err.contains("TELEGRAM_TOKEN_TG_IMAGE_BOT_1"), "{err}");
    }
}
