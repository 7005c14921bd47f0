//! Bot secrets (platform tokens, Tessera API keys): read from an environment
//! variable or a file a config names, never from a flag, and never printed.

use std::path::Path;

/// A secret value: `Debug` shows `Secret(***)`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `prefix` + the bot id in upper case with `_` for anything not
/// alphanumeric: `env_name("TELEGRAM_TOKEN_", "tg-image-bot-1")` is
/// `TELEGRAM_TOKEN_TG_IMAGE_BOT_1`.
pub fn env_name(prefix: &str, id: &str) -> String {
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

/// Where one secret comes from.
pub struct SecretSource<'a> {
    /// What it is, for error messages: "Telegram token".
    pub what: &'a str,
    /// The config key naming a file instead: "token_file".
    pub file_key: &'a str,
    /// The bot it belongs to.
    pub bot_id: &'a str,
    /// The variable the config names, if any.
    pub env: Option<&'a str>,
    /// The file the config names, if any; it wins over the environment.
    pub file: Option<&'a Path>,
    /// The variable read when the config names neither.
    pub default_env: String,
}

impl SecretSource<'_> {
    /// Reads the secret, trimmed; an unset, empty or unreadable one is an
    /// error that says where to put it.
    pub fn read(&self) -> anyhow::Result<Secret> {
        let id = self.bot_id;
        let what = self.what;
        if let Some(path) = self.file {
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
        let name = self.env.unwrap_or(&self.default_env);
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
            _ => anyhow::bail!(
                "bot {id}: its {what} is not set; put it in the environment variable {name} \
                 (or name a file with {})",
                self.file_key
            ),
        }
    }
}

/// What a bot instance needs besides its config entry.
pub struct BotSecrets {
    /// Its platform token (Telegram or Discord).
    pub token: Secret,
    /// Its Tessera frontend key.
    pub api_key: Secret,
}

/// The Tessera API key of bot `bot_id`: from `file` if the config names one,
/// else from the variable `env`, else from `TESSERA_API_KEY_<ID>`.
pub fn api_key(bot_id: &str, env: Option<&str>, file: Option<&Path>) -> anyhow::Result<Secret> {
    SecretSource {
        what: "Tessera API key",
        file_key: "api_key_file",
        bot_id,
        env,
        file,
        default_env: env_name("TESSERA_API_KEY_", bot_id),
    }
    .read()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("123:abc")), "Secret(***)");
    }

    #[test]
    fn a_missing_secret_says_where_to_put_it() {
        let source = SecretSource {
            what: "Discord token",
            file_key: "token_file",
            bot_id: "dc-image-bot-1",
            env: None,
            file: None,
            default_env: env_name("TESSERA_TEST_UNSET_", "dc-image-bot-1"),
        };
        let err = source.read().unwrap_err().to_string();
        assert!(err.contains("TESSERA_TEST_UNSET_DC_IMAGE_BOT_1"), "{err}");
        assert!(err.contains("token_file"), "{err}");
    }

    #[test]
    fn a_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc:123\n").unwrap();
        let source = SecretSource {
            what: "Telegram token",
            file_key: "token_file",
            bot_id: "b",
            env: Some("TESSERA_TEST_UNSET_TOO"),
            file: Some(&path),
            default_env: String::new(),
        };
        assert_eq!(source.read().unwrap().expose(), "abc:123");
    }
}
