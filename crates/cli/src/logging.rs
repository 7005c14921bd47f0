//! Log output for every role: human-readable by default, JSON lines on request.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Args)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TESSERA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to log, as a tracing filter (`info`, `debug`, `tessera_scheduler=debug,info`).
    /// RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, default_value = "info", env = "TESSERA_LOG")]
    pub log: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f)?,
        _ => EnvFilter::try_new(format!("{},sqlx=warn", args.log))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
