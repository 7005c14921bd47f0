//! `tessera`: one binary, one subcommand per role.
//!
//! Each role runs as its own process in production; `tessera up` runs them together
//! on one machine. This crate only parses arguments and wires library crates
//! together; what a role does lives in that role's crate.

mod cmd;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: profiling the API under load showed glibc's malloc and free at about
/// a tenth of CPU time, spent on many small, short-lived allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tessera: a control plane that turns a few GPU machines into a generative-AI
/// service thousands of chat users share fairly.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine with nothing to configure (SQLite in a data folder).
    Up(cmd::up::UpArgs),
    /// Run the control plane: public, admin and internal API on one port.
    Scheduler(cmd::scheduler::SchedulerArgs),
    /// Run a worker: one GPU's engines, taking jobs from a scheduler.
    Worker(cmd::worker::WorkerArgs),
    /// Run Telegram bots: one or many instances from one config file.
    Telegram(cmd::telegram::TelegramArgs),
    /// Run Discord bots: one or many instances from one config file.
    Discord(cmd::discord::DiscordArgs),
    /// Run Telegram and Discord bots together in one process.
    Bots(cmd::bots::BotsArgs),
    /// Run the website: accounts, generation, live progress, gallery and plans.
    Web(cmd::web::WebArgs),
    /// Manage frontend keys, user plans and jobs through the admin API.
    Admin(cmd::admin::AdminArgs),
    /// Print or check configuration.
    Config(cmd::config::ConfigArgs),
    /// Measure API throughput and latency against a real database.
    Bench(cmd::bench::BenchArgs),
    /// Compare queue policies on a workload replayed against simulated GPUs.
    Simulate(Box<cmd::simulate::SimulateArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if matches!(
        cli.command,
        Command::Telegram(_) | Command::Discord(_) | Command::Bots(_)
    ) {
        // Bots wait on the network: one thread serves any number of
        // instances (the bots benchmark delivers as fast with one as with
        // two), and small pages keep each process small. Both before the
        // runtime's threads allocate anything.
        cmd::prefer_small_pages();
        runtime.worker_threads(1);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Up(args) => cmd::up::run(args).await,
        Command::Scheduler(args) => cmd::scheduler::run(args).await,
        Command::Worker(args) => cmd::worker::run(args).await,
        Command::Telegram(args) => cmd::telegram::run(args).await,
        Command::Discord(args) => cmd::discord::run(args).await,
        Command::Bots(args) => cmd::bots::run(args).await,
        Command::Web(args) => cmd::web::run(args).await,
        Command::Admin(args) => cmd::admin::run(args).await,
        Command::Config(args) => cmd::config::run(args),
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::Simulate(args) => cmd::simulate::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
