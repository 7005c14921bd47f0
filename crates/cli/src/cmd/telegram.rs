//! `tessera telegram`: one or many Telegram bot instances.

use std::path::PathBuf;

use clap::Args;

use tessera_telegram::TelegramConfig;

/// The bots live in a TOML file (one `[[bots]]` table per instance);
/// `TESSERA_TELEGRAM__KEY` variables override top-level settings. Each bot's
/// Telegram token and Tessera API key come from environment variables or
/// files the config names (by default `TELEGRAM_TOKEN_<ID>` and
/// `TESSERA_API_KEY_<ID>`), never from a flag, and are never logged.
#[derive(Args)]
#[command(after_long_help = SETTINGS_HELP)]
pub struct TelegramArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "TESSERA_TELEGRAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// The scheduler's base URL (scheduler_url).
    #[arg(long)]
    pub scheduler_url: Option<String>,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    pub print_example: bool,
}

const SETTINGS_HELP: &str = concat!(
    "Example configuration (the seed's six Telegram bots):\n\n",
    include_str!("../../../telegram/telegram.example.toml")
);

pub async fn run(args: TelegramArgs) -> anyhow::Result<()> {
    if args.print_example {
        print!("{}", tessera_telegram::config::EXAMPLE);
        return Ok(());
    }
    let mut config = TelegramConfig::load(args.config.as_deref())?;
    if let Some(url) = args.scheduler_url {
        config.scheduler_url = url;
    }
    super::run_frontend(|stop| tessera_telegram::run(config, stop)).await
}
