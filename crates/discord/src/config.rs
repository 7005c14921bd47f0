//! `tessera discord` configuration: one file, any number of bot instances.
//!
//! Secrets (each bot's Discord token and its Tessera API key) are never in the
//! file or on the command line: each instance names an environment variable or
//! a file to read them from (see [`tessera_chat::secret`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tessera_chat::secret::{env_name, SecretSource};
use tessera_chat::LimitConfig;
use tessera_core::{BotId, Capability};

pub use tessera_chat::Secret;

/// The example printed by `tessera discord --print-example`.
pub const EXAMPLE: &str = include_str!("../discord.example.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscordConfig {
    /// The scheduler's public API.
    pub scheduler_url: String,
    /// Discord's REST API (`http://` only for a loopback proxy).
    pub api_url: String,
    /// Discord's gateway.
    pub gateway_url: String,
    /// How often a followed job is read, ms.
    pub job_poll_ms: u64,
    /// Least time between two edits of one progress message, ms.
    pub min_edit_ms: u64,
    /// Largest audio attachment accepted for transcription, bytes.
    pub max_audio_bytes: u64,
    /// Where bots in HTTP mode receive interactions.
    pub interactions_listen: SocketAddr,
    /// The website's public address, for download links to outputs larger
    /// than an interaction's `attachment_size_limit` (`tessera up` sets it
    /// to its own website).
    pub site_url: Option<String>,
    pub bots: Vec<BotInstance>,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            scheduler_url: "http://127.0.0.1:8000".into(),
            api_url: "https://discord.com".into(),
            gateway_url: "wss://gateway.discord.gg".into(),
            job_poll_ms: 1000,
            min_edit_ms: 2000,
            max_audio_bytes: 25 * 1024 * 1024,
            interactions_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            site_url: None,
            bots: Vec::new(),
        }
    }
}

/// How an instance receives interactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A gateway connection: works behind NAT, nothing to expose.
    #[default]
    Gateway,
    /// Discord POSTs interactions to `interactions_listen`, signed with Ed25519.
    Http,
}

/// One bot instance (one Discord application).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotInstance {
    /// The bot id its API key was made for, for example `dc-image-bot-1`.
    pub id: BotId,
    /// What it serves: `image`, `video`, `text`, `speech_to_text`, `text_to_speech`.
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub mode: Mode,
    /// The application's public key, hex (HTTP mode only).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Environment variable holding the Discord bot token
    /// (default `DISCORD_TOKEN_<ID>`, e.g. `DISCORD_TOKEN_DC_IMAGE_BOT_1`).
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
            what: "Discord token",
            file_key: "token_file",
            bot_id: &self.id,
            env: self.token_env.as_deref(),
            file: self.token_file.as_deref(),
            default_env: env_name("DISCORD_TOKEN_", &self.id),
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

    /// The Ed25519 key interactions are checked with (HTTP mode).
    pub fn verifying_key(&self) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
        let key_hex = self.public_key.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "bot {}: mode = \"http\" needs public_key (the application's public key from the developer portal)",
                self.id
            )
        })?;
        let bytes = hex::decode(key_hex.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                anyhow::anyhow!("bot {}: public_key must be 64 hex characters", self.id)
            })?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        ed25519_dalek::VerifyingKey::from_bytes(&key)
            .map_err(|e| anyhow::anyhow!("bot {}: public_key is not an Ed25519 key: {e}", self.id))
    }
}

impl DiscordConfig {
    /// Reads a TOML file, then `TESSERA_DISCORD__*` variables (`__` between
    /// levels, e.g. `TESSERA_DISCORD__SCHEDULER_URL`).
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let config: DiscordConfig = tessera_chat::config::load(path, "TESSERA_DISCORD__")?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        tessera_chat::config::check_bots(
            self.bots
                .iter()
                .map(|b| (b.id.as_str(), b.capabilities.as_slice())),
        )?;
        for b in &self.bots {
            if b.mode == Mode::Http {
                b.verifying_key()?;
            }
        }
        let api = url::Url::parse(&self.api_url)?;
        let loopback = match api.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        anyhow::ensure!(
            api.scheme() == "https" || (api.scheme() == "http" && loopback),
            "api_url must be https:// (plain http:// only on loopback, or the bot token would travel in the clear)"
        );
        anyhow::ensure!(
            api.path() == "/" || api.path().is_empty(),
            "api_url is a host (and port), without a path"
        );
        let gateway = url::Url::parse(&self.gateway_url)?;
        anyhow::ensure!(
            matches!(gateway.scheme(), "ws" | "wss"),
            "gateway_url must be a ws:// or wss:// URL"
        );
        url::Url::parse(&self.scheduler_url)?;
        Ok(())
    }

    /// `api_url` as twilight's proxy setting: `host[:port]` and whether it
    /// speaks plain HTTP; `None` for Discord itself.
    pub fn api_proxy(&self) -> Option<(String, bool)> {
        let url = url::Url::parse(&self.api_url).ok()?;
        if url.host_str() == Some("discord.com") && url.scheme() == "https" {
            return None;
        }
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Some((authority, url.scheme() == "http"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_names_secrets_by_environment() {
        let c: DiscordConfig = toml::from_str(EXAMPLE).unwrap();
        c.check().unwrap();
        assert_eq!(c.bots.len(), 6);
        assert_eq!(c.bots[0].id, "dc-image-bot-1");
        assert_eq!(c.bots[0].mode, Mode::Gateway);
        assert_eq!(c.bots[3].capabilities, vec![Capability::Video]);
        let defaults = DiscordConfig {
            bots: c.bots.clone(),
            ..Default::default()
        };
        assert_eq!(
            c, defaults,
            "the example's top-level values are the defaults"
        );
        let err = c.bots[0].token().unwrap_err().to_string();
        assert!(err.contains("DISCORD_TOKEN_DC_IMAGE_BOT_1"), "{err}");
        assert_eq!(c.api_proxy(), None);
    }

    #[test]
    fn http_mode_needs_a_valid_public_key() {
        let mut c: DiscordConfig = toml::from_str(EXAMPLE).unwrap();
        c.bots[0].mode = Mode::Http;
        assert!(c.check().unwrap_err().to_string().contains("public_key"));
        c.bots[0].public_key = Some("zz".repeat(32));
        assert!(c.check().unwrap_err().to_string().contains("64 hex"));
        // The RFC 8032 test vector 1 public key.
        c.bots[0].public_key =
            Some("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".into());
        c.check().unwrap();
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let mut c: DiscordConfig = toml::from_str(EXAMPLE).unwrap();
        c.api_url = "http://proxy.example.org:8080".into();
        assert!(c.check().unwrap_err().to_string().contains("in the clear"));
        c.api_url = "http://127.0.0.1:8080".into();
        c.check().unwrap();
        c.api_url = "https://proxy.example.org/api".into();
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("without a path"));
    }

    #[test]
    fn a_loopback_api_url_becomes_a_plain_http_proxy() {
        let c = DiscordConfig {
            api_url: "http://127.0.0.1:4567".into(),
            ..Default::default()
        };
        assert_eq!(c.api_proxy(), Some(("127.0.0.1:4567".into(), true)));
    }
}
