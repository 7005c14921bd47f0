//! `tessera scheduler`: the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use tessera_scheduler::{Scheduler, SchedulerConfig};

/// Every setting lives in the TOML file (see `tessera config example`) and can be
/// overridden by a `TESSERA_SECTION__KEY` environment variable; the flags below
/// override both. `--help` lists every setting after the flags.
#[derive(Args)]
#[command(after_long_help = SETTINGS_HELP)]
pub struct SchedulerArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "TESSERA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (server.listen), for example 0.0.0.0:8000.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Database (database.url): sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Shown by `tessera scheduler --help`: the commented reference of every setting.
const SETTINGS_HELP: &str = concat!(
    "Settings (TOML file, or TESSERA_SECTION__KEY variables), with their defaults:\n\n",
    include_str!("../../../scheduler/tessera.example.toml")
);

pub async fn load(args: &SchedulerArgs) -> anyhow::Result<SchedulerConfig> {
    let mut config = SchedulerConfig::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(url) = &args.database_url {
        config.database.url = url.clone();
    }
    Ok(config)
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let config = load(&args).await?;
    if config.auth.admin_token()?.is_none() {
        tracing::warn!("no auth.admin_token: the admin API will refuse every call");
    }
    let mut handle = Scheduler::start(config).await?;
    tokio::select! {
        _ = super::shutdown_signal() => {
            tracing::info!("stopping: finishing requests in flight");
            handle.shutdown().await?;
        }
        result = handle.wait() => result?,
    }
    tracing::info!("stopped");
    Ok(())
}
