//! `tessera bots`: Telegram and Discord instances in one process.

use std::path::PathBuf;

use clap::Args;

use tessera_discord::DiscordConfig;
use tessera_telegram::TelegramConfig;

/// Runs the bots of a Telegram config file and of a Discord config file
/// together, sharing one runtime (the seed's twelve bots fit in one small
/// process). Each file is what `tessera telegram` and `tessera discord` take.
#[derive(Args)]
pub struct BotsArgs {
    /// Telegram bots' TOML configuration file.
    #[arg(long, env = "TESSERA_TELEGRAM_CONFIG")]
    pub telegram: Option<PathBuf>,
    /// Discord bots' TOML configuration file.
    #[arg(long, env = "TESSERA_DISCORD_CONFIG")]
    pub discord: Option<PathBuf>,
    /// The scheduler's base URL, for both (scheduler_url).
    #[arg(long)]
    pub scheduler_url: Option<String>,
}

pub async fn run(args: BotsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.telegram.is_some() || args.discord.is_some(),
        "nothing to run: give --telegram FILE, --discord FILE or both"
    );
    let telegram = match &args.telegram {
        Some(path) => {
            let mut c = TelegramConfig::load(Some(path))?;
            if let Some(url) = &args.scheduler_url {
                c.scheduler_url = url.clone();
            }
            Some(c)
        }
        None => None,
    };
    let discord = match &args.discord {
        Some(path) => {
            let mut c = DiscordConfig::load(Some(path))?;
            if let Some(url) = &args.scheduler_url {
                c.scheduler_url = url.clone();
            }
            Some(c)
        }
        None => None,
    };
    super::run_frontend(|stop| async move {
        let telegram = async {
            match telegram {
                Some(c) => tessera_telegram::run(c, stop.clone()).await,
                None => Ok(()),
            }
        };
        let discord = async {
            match discord {
                Some(c) => tessera_discord::run(c, stop.clone()).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(telegram, discord).map(|_| ())
    })
    .await
}
