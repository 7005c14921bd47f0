pub mod admin;
pub mod bench;
pub mod bench_lifecycle;
pub mod bots;
pub mod config;
pub mod discord;
pub mod scheduler;
pub mod telegram;
pub mod up;
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
