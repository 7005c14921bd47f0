//! Wire types of Tessera's HTTP APIs and a typed async client.
//!
//! This is the only Tessera crate that frontends and workers depend on (besides the
//! pure `tessera-core` it re-exports), so the seed's rule "frontends never touch
//! the database" holds at compile time: nothing here can reach the scheduler's store.
//!
//! - [`public`]: what frontends send and receive on `/api/v1`.
//! - [`admin`]: the operator's API on `/api/admin`.
//! - [`internal`]: between the scheduler and its workers, on `/api/internal`.
//! - [`error`]: the one JSON error envelope every endpoint answers with (with the
//!   `axum` feature, `error::response` builds the whole answer), and
//!   [`ErrorCode`], every stable code it can carry.
//! - [`entitlements`]: Discord premium app subscriptions relayed by the
//!   Discord bots.
//! - [`schema`]: rules the API document states that no wire type carries
//!   (a worker's address, a model name), with the checks that match them.
//! - [`stars`]: Telegram Stars payments, between the Telegram bots and the
//!   scheduler.
//! - [`refunds`]: refunds operators make, and the Telegram bots' refund
//!   orders.
//! - [`nsfw`]: where adult content may be allowed (a job's context, a
//!   Telegram chat's setting).
//! - [`review`]: suspensions and bans, users' reports, the review queue
//!   and the audit log.
//! - [`client`]: a `reqwest` client for all of the above.

pub mod admin;
pub mod client;
pub mod entitlements;
pub mod error;
pub mod internal;
pub mod nsfw;
pub mod openai;
pub mod public;
pub mod refunds;
pub mod review;
pub mod schema;
pub mod stars;
pub mod stripe;

pub use client::{Client, ClientError};
pub use error::{ApiErrorBody, ErrorDetail};
pub use tessera_core as core;
pub use tessera_core::ErrorCode;

/// Header a frontend sets so that a retried create returns the first job.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header set on a response that replays an earlier create.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Header carrying the request id that follows a job through every layer.
pub const REQUEST_ID: &str = "x-request-id";

/// Whether `id` may be kept as a request id: 1 to 128 visible ASCII
/// characters, so whatever a client sends cannot forge log lines or grow rows.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}
