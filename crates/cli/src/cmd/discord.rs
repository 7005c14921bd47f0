//! `tessera discord`: one or many Discord bot instances.

use std::path::PathBuf;

use clap::Args;

use tessera_discord::DiscordConfig;

/// The bots live in a TOML file (one `[[bots]]` table per instance);
/// `TESSERA_DISCORD__KEY` variables override top-level settings. Each bot's
/// Discord token and Tessera API key come from environment variables or
/// files the config names (by default `DISCORD_TOKEN_<ID>` and
/// `TESSERA_API_KEY_<ID>`), never from a flag, and are never logged.
#[derive(Args)]
#[command(after_long_help = SETTINGS_HELP)]
pub struct DiscordArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "TESSERA_DISCORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The scheduler's base URL (scheduler_url).
    #[arg(long)]
    pub scheduler_url: Option<String>,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    pub print_example: bool,
}

const SETTINGS_HELP: &str = concat!(
    "Example configuration (the seed's six Discord bots):\n\n",
    include_str!("../../../discord/discord.example.toml")
);

pub async fn run(args: DiscordArgs) -> anyhow::Result<()> {
    if args.print_example {
        print!("{}", tessera_discord::config::EXAMPLE);
        return Ok(());
    }
    let mut config = DiscordConfig::load(args.config.as_deref())?;
    if let Some(url) = args.scheduler_url {
        config.scheduler_url = url;
    }
    super::run_frontend(|stop| tessera_discord::run(config, stop)).await
}
