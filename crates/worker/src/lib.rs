//! Tessera's worker: a dumb executor for one GPU (docs/engines.md).
//!
//! [`agent`] serves `/health`, `/capabilities`, `/run_job`, `/cancel_job` and
//! `/unload` (internal token), `/healthz` and `/readyz` (no credential) and
//! `/metrics` ([`metrics`]; metrics or internal token), runs one job at a time, reports progress and results to the
//! scheduler and sends heartbeats. [`engine`] holds the adapters to real engines
//! behind one trait. A worker knows nothing of users, plans or billing, and
//! depends only on the API crate: it cannot reach the scheduler's database.

pub mod agent;
pub mod classify;
pub mod config;
pub mod engine;
pub mod gpu;
pub mod metrics;
pub mod readiness;

pub use agent::{Worker, WorkerHandle};
pub use config::WorkerConfig;
