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

/// Libraries whose log lines carry secrets (Telegram puts the bot token in
/// every request path, Discord the interaction token in follow-up paths, and
/// both libraries log paths in their spans): silenced whatever the filter
/// says. Their failures reach Tessera's own logs as errors.
const SECRET_BEARING: &[&str] = &[
    "teloxide_core=off",
    "twilight_http=off",
    "twilight_http_ratelimiting=off",
    "twilight_gateway=warn",
];

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let mut filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(f)?,
        _ => EnvFilter::try_new(format!("{},sqlx=warn", args.log))?,
    };
    for directive in SECRET_BEARING {
        filter = filter.add_directive(directive.parse()?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
