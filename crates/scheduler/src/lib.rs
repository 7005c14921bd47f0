//! The control plane: the only component that writes the database and the only one
//! that decides (ARCHITECTURE.md, "Bird's-eye view").
//!
//! - [`config`]: settings from TOML and the environment.
//! - [`store`]: the storage trait and its PostgreSQL and SQLite backends.
//! - [`http`]: the public (`/api/v1`), admin (`/api/admin`) and internal
//!   (`/api/internal`) APIs, one module per resource, errors mapped to JSON in one place.
//! - [`lifecycle`]: every state change after a job's creation, and what follows
//!   it (metrics, dispatch wake-ups, taking a job back); what `http`,
//!   `dispatch` and `monitor` share instead of calling each other.
//! - [`follow`]: a job's events (start, progress, output text, end) for the
//!   frontends that follow it, in memory, fed by the lifecycle.
//! - [`registry`]: the scheduler's picture of its workers, held by the lifecycle.
//! - [`timings`]: run and load times learned from results, per worker and
//!   model, for the policy, the estimates and admission; held by the lifecycle.
//! - [`dispatch`]: the event-driven dispatcher.
//! - [`monitor`]: lost workers, run timeouts and jobs no worker can serve.
//! - [`artifacts`]: the object store holding artifacts and inputs.
//! - [`links`]: download links, signed and verified here only.
//! - [`payments`]: the channels that sell plans (Stripe, Telegram Stars,
//!   Discord entitlements), each feeding the payments ledger.
//! - [`webhooks`]: job webhooks: callback addresses checked, deliveries
//!   signed, sent and retried.
//! - [`passwords`]: website passwords, hashed with Argon2id a few at a time.
//! - [`metrics`]: Prometheus metrics at `/metrics`, counted and read at scrape time.
//! - [`app`]: wiring: open the store, build the router, serve until shutdown.
//!
//! Frontends and workers never link this crate: they speak to it over HTTP through
//! `tessera-api`.

pub mod admission;
pub mod app;
pub mod artifacts;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod estimate;
pub mod follow;
pub mod http;
pub mod lifecycle;
pub mod links;
pub mod metrics;
pub mod monitor;
pub mod orphans;
pub mod passwords;
pub mod payments;
pub mod queue;
pub mod registry;
pub mod store;
pub mod timings;
pub mod webhooks;

pub use app::{Scheduler, SchedulerHandle};
pub use config::SchedulerConfig;
