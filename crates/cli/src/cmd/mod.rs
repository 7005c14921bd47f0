pub mod admin;
pub mod bench;
pub mod bench_baseline;
pub mod bench_lifecycle;
pub mod bots;
pub mod config;
pub mod discord;
pub mod moderation;
pub mod scheduler;
pub mod simulate;
pub mod telegram;
pub mod up;
pub mod web;
pub mod worker;

/// Resolves when the process is asked to stop: Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Keeps a bot process small: no transparent huge pages for it.
///
/// mimalloc asks the kernel for huge pages on its arenas, and where THP is
/// on (`always` or `madvise`) every touched 2 MiB region becomes resident:
/// an idle bot process measured 27 MiB resident with them and 16 MiB
/// without, and a busy one 47 MiB against 28 (docs/benchmarks.md, bots).
/// The scheduler keeps them; it is one process with a large, hot heap.
/// Called before the runtime starts, so before logging: a kernel without the
/// setting simply keeps its default.
pub fn prefer_small_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Runs a chat frontend until Ctrl-C or SIGTERM (then lets it stop cleanly)
/// or until it fails by itself.
pub async fn run_frontend<Fut>(
    run: impl FnOnce(tokio_util::sync::CancellationToken) -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let mut task = tokio::spawn(run(stop.clone()));
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("stopping: jobs keep running; the next start delivers them");
            stop.cancel();
            task.await??;
        }
        result = &mut task => result??,
    }
    tracing::info!("stopped");
    Ok(())
}
