//! `tessera worker`: one GPU's executor, reporting to a scheduler.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use tessera_worker::{Worker, WorkerConfig};

/// The worker's settings live in a TOML file (`[worker]` and one `[[engines]]`
/// table per engine); `TESSERA_WORKER__KEY` variables override the `[worker]`
/// section, and the flags below override both. The internal token comes from
/// `worker.internal_token_file` or `TESSERA_WORKER__INTERNAL_TOKEN`, never a flag.
#[derive(Args)]
#[command(after_long_help = SETTINGS_HELP)]
pub struct WorkerArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "TESSERA_WORKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (worker.listen), for example 0.0.0.0:9000.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The scheduler's base URL (worker.scheduler_url).
    #[arg(long)]
    pub scheduler_url: Option<String>,
    /// The worker's stable name (worker.id), for example worker-gpu-0.
    /// Checked when the worker starts, not when the line is parsed, so a
    /// service template's `worker-gpu-%i` passes until systemd fills it in.
    #[arg(long)]
    pub id: Option<String>,
    /// Print the commented example configuration and exit.
    #[arg(long)]
    pub print_example: bool,
}

const SETTINGS_HELP: &str = concat!(
    "Example configuration, with the [worker] defaults:\n\n",
    include_str!("../../../worker/worker.example.toml")
);

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if args.print_example {
        print!("{}", tessera_worker::config::EXAMPLE);
        return Ok(());
    }
    let mut config = WorkerConfig::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.worker.listen = listen;
    }
    if let Some(url) = args.scheduler_url {
        config.worker.scheduler_url = url;
    }
    if let Some(id) = args.id {
        config.worker.id = id
            .parse()
            .map_err(|e| anyhow::anyhow!("--id {id:?}: {e}"))?;
    }
    let mut handle = Worker::start(config).await?;
    tokio::select! {
        _ = super::shutdown_signal() => {
            tracing::info!("stopping: finishing the running job and delivering its result");
            handle.shutdown().await?;
        }
        result = handle.wait() => result?,
    }
    tracing::info!("stopped");
    Ok(())
}
