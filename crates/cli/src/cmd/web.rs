//! `tessera web`: the website.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use tessera_chat::secret::Secret;
use tessera_web::WebConfig;

/// The website is configured by flags and environment variables only.
#[derive(Args)]
#[command(after_long_help = SECRETS_HELP)]
pub struct WebArgs {
    /// Address to listen on.
    #[arg(long, env = "TESSERA_WEB_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// The scheduler's base URL.
    #[arg(
        long,
        env = "TESSERA_SCHEDULER_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub scheduler_url: String,
    /// The bot id the frontend key was made for.
    #[arg(long, env = "TESSERA_WEB_BOT_ID", default_value = "web")]
    pub bot_id: tessera_core::BotId,
    /// File holding the `web` frontend key (else `TESSERA_WEB_API_KEY`).
    #[arg(long, env = "TESSERA_WEB_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// File holding the cookie-signing secret (else
    /// `TESSERA_WEB_COOKIE_SECRET`; without either, a random one per start
    /// signs everyone out at each restart).
    #[arg(long, env = "TESSERA_WEB_COOKIE_SECRET_FILE")]
    pub cookie_secret_file: Option<PathBuf>,
    /// Mark cookies Secure: set this when the site is served over HTTPS.
    #[arg(long, env = "TESSERA_WEB_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Largest audio upload for speech-to-text, in MiB.
    #[arg(long, env = "TESSERA_WEB_MAX_UPLOAD_MIB", default_value_t = 25)]
    pub max_upload_mib: usize,
    /// The address visitors reach the site at (https://tessera.example), for
    /// the pages Stripe sends buyers back to; default: the address each
    /// visitor used.
    #[arg(long, env = "TESSERA_WEB_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The address developers reach the scheduler at
    /// (https://api.tessera.example): the account page gives its /v1 as the
    /// base URL for developer keys; default: --scheduler-url, said to be
    /// possibly private.
    #[arg(long, env = "TESSERA_SCHEDULER_PUBLIC_URL")]
    pub scheduler_public_url: Option<String>,
}

const SECRETS_HELP: &str = "\
Secrets come from the environment or from files, never from a flag:
  - the `web` frontend key: TESSERA_WEB_API_KEY or --api-key-file. Make one with
    `tessera admin keys create --frontend web --bot-id web`.
  - the secret that signs session cookies: TESSERA_WEB_COOKIE_SECRET or
    --cookie-secret-file, at least 32 characters, the same on every website
    process behind one address.
The website keeps nothing else: accounts, jobs and quotas live in the scheduler.";

/// A secret from `file` when given, else from the variable `env`.
fn secret(what: &str, file: Option<&PathBuf>, env: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} from {}", path.display()))?;
        let text = text.trim();
        anyhow::ensure!(!text.is_empty(), "{} is empty", path.display());
        return Ok(Some(Secret::new(text)));
    }
    Ok(std::env::var(env)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(Secret::new))
}

/// An http(s) address from the flag `flag`, without its trailing slash.
fn address(flag: &str, example: &str, url: &str) -> anyhow::Result<String> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && !url.chars().any(char::is_whitespace);
    anyhow::ensure!(
        ok,
        "{flag} must be an http(s) address such as {example}, not {url:?}"
    );
    Ok(url.trim_end_matches('/').to_owned())
}

impl WebArgs {
    pub fn config(&self) -> anyhow::Result<WebConfig> {
        let api_key = secret(
            "frontend key",
            self.api_key_file.as_ref(),
            "TESSERA_WEB_API_KEY",
        )?
        .context(
            "the website needs a `web` frontend key: set TESSERA_WEB_API_KEY or pass \
             --api-key-file (make one with `tessera admin keys create --frontend web --bot-id web`)",
        )?;
        let mut config = WebConfig::new(self.scheduler_url.clone(), api_key);
        config.listen = self.listen;
        config.bot_id = self.bot_id.clone();
        config.cookie_secret = secret(
            "cookie secret",
            self.cookie_secret_file.as_ref(),
            "TESSERA_WEB_COOKIE_SECRET",
        )?;
        config.secure_cookies = self.secure_cookies;
        config.max_upload_bytes = self.max_upload_mib.saturating_mul(1024 * 1024);
        config.public_url = self
            .public_url
            .as_deref()
            .map(|url| address("--public-url", "https://tessera.example", url))
            .transpose()?;
        config.scheduler_public_url = self
            .scheduler_public_url
            .as_deref()
            .map(|url| address("--scheduler-public-url", "https://api.tessera.example", url))
            .transpose()?;
        Ok(config)
    }
}

pub async fn run(args: WebArgs) -> anyhow::Result<()> {
    let web = tessera_web::start(args.config()?).await?;
    println!("Tessera's website is at {}", web.base_url());
    super::shutdown_signal().await;
    tracing::info!("stopping: requests in flight finish");
    web.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
