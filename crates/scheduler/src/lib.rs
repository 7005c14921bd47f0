//! The control plane: the only component that writes the database and the only one
//! that decides (seed section 2.1).
//!
//! - [`config`]: settings from TOML and the environment.
//! - [`store`]: the storage trait and its PostgreSQL and SQLite backends.
//! - [`http`]: the public (`/api/v1`) and admin (`/api/admin`) APIs, one module per
//!   resource, errors mapped to JSON in one place.
//! - [`app`]: wiring: open the store, build the router, serve until shutdown.
//!
//! Frontends and workers never link this crate: they speak to it over HTTP through
//! `tessera-api`.

pub mod app;
pub mod auth;
pub mod config;
pub mod estimate;
pub mod http;
pub mod monitor;
pub mod queue;
pub mod store;

pub use app::{Scheduler, SchedulerHandle};
pub use config::SchedulerConfig;
