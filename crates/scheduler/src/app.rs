//! Wiring: open the store, build the router, serve until told to stop.
//!
//! [`Scheduler::start`] binds first (so a port-0 address is known before it
//! returns) and serves on a task; [`SchedulerHandle::shutdown`] stops accepting
//! connections, lets requests in flight finish, then closes the database pool.
//! The CLI and the test harness both use it, so tests run the real server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::SchedulerConfig;
use crate::dispatch::Dispatcher;
use crate::http::{self, AppState};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::store::{self, Store};

pub struct Scheduler;

impl Scheduler {
    /// Connects to the database, applies migrations and starts serving.
    pub async fn start(config: SchedulerConfig) -> anyhow::Result<SchedulerHandle> {
        config.check()?;
        let store = store::connect(&config.database)
            .await
            .with_context(|| format!("opening the database at {}", redact(&config.database.url)))?;
        Self::start_with_store(config, store).await
    }

    /// Starts serving on an already opened store.
    pub async fn start_with_store(
        config: SchedulerConfig,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<SchedulerHandle> {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let workers = config.workers.clone();
        let blobs = crate::artifacts::Blobs::open(&config.artifacts)?;
        let metrics = Metrics::new(store.backend().as_str());
        metrics.set_plans(store.plans().await.context("reading the plans")?);
        let lifecycle = Lifecycle::new(
            store.clone(),
            metrics,
            &workers,
            config.auth.internal_token()?,
        )?;
        lifecycle
            .restore()
            .await
            .context("reading workers and running jobs back")?;
        let dispatcher = Dispatcher::new(
            store.clone(),
            lifecycle.clone(),
            workers.clone(),
            config.queue.policy,
        );
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let orphans = crate::orphans::spawn(
            store.clone(),
            blobs.clone(),
            &config.artifacts,
            stop_rx.clone(),
        );
        let state = AppState::new(store.clone(), config, lifecycle.clone(), blobs)?;
        let webhooks = crate::webhooks::spawn(state.clone(), stop_rx.clone());
        let app = http::router(state);
        let follows = lifecycle.follows().clone();
        let monitor =
            crate::monitor::spawn(store.clone(), workers, lifecycle.clone(), stop_rx.clone());
        let dispatch = dispatcher.spawn(stop_rx.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                    // Open event streams end, or they would hold the shutdown.
                    follows.stop();
                })
                .await
                .context("serving HTTP")
        });
        tracing::info!(%addr, backend = ?store.backend(), "scheduler listening");
        Ok(SchedulerHandle {
            addr,
            store,
            stop: stop_tx,
            lifecycle,
            task,
            monitor,
            dispatch,
            orphans,
            webhooks,
        })
    }
}

/// A running scheduler.
pub struct SchedulerHandle {
    addr: SocketAddr,
    store: Arc<dyn Store>,
    stop: watch::Sender<bool>,
    lifecycle: Lifecycle,
    task: JoinHandle<anyhow::Result<()>>,
    monitor: JoinHandle<()>,
    dispatch: JoinHandle<()>,
    orphans: JoinHandle<()>,
    webhooks: JoinHandle<()>,
}

impl SchedulerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The scheduler's lifecycle: what follows its jobs' state changes, and
    /// their followers.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Stops taking connections, finishes requests in flight, closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let served = self.task.await.context("server task panicked")?;
        self.monitor.await.context("health monitor panicked")?;
        self.dispatch.await.context("dispatcher panicked")?;
        self.orphans.await.context("orphan sweep panicked")?;
        self.webhooks.await.context("webhook deliverer panicked")?;
        self.store.close().await;
        served
    }

    /// Stops at once, as a crash would: connections dropped, requests in flight
    /// abandoned (their transactions roll back), nothing flushed.
    pub fn kill(&self) {
        self.task.abort();
        self.monitor.abort();
        self.dispatch.abort();
        self.orphans.abort();
        self.webhooks.abort();
    }

    /// Waits until the server stops by itself (an error) — for the CLI.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task panicked")?
    }
}

/// A database URL with any password hidden, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
