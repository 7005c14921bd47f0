//! `tessera config`: the commented reference and a checker.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use tessera_scheduler::config::{SchedulerConfig, EXAMPLE};

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the scheduler's configuration file with every key, its default and what it does.
    Example,
    /// Load a configuration (file, then environment) and report the first problem, if any.
    Check {
        /// TOML configuration file.
        #[arg(long, short, env = "TESSERA_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub fn run(args: ConfigArgs) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Example => {
            print!("{EXAMPLE}");
            Ok(())
        }
        ConfigCommand::Check { config } => {
            let c = SchedulerConfig::load(config.as_deref())?;
            println!(
                "configuration is valid: listen {}, database {}",
                c.server.listen,
                tessera_scheduler::app::redact(&c.database.url)
            );
            Ok(())
        }
    }
}
