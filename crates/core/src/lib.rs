//! Tessera's domain rules, with no I/O.
//!
//! Everything here is a pure function or a plain value: job ids and the job state
//! machine, capabilities, plans and priorities, the model catalogue, parameter
//! validation, prompt rules, token costs, billing days, fair queuing within a
//! plan and the queue-selection policy. The scheduler, the simulator and the
//! tests all call the same code, so a rule is written once and tested without
//! a database.
//!
//! What must not live here: anything that talks to a network, a database, a clock
//! (callers pass `now`) or a file. Wire formats belong to `tessera-api`.

pub mod admission;
pub mod billing;
pub mod capability;
pub mod catalog;
pub mod codes;
pub mod fair;
pub mod ids;
pub mod moderation;
pub mod params;
pub mod payments;
pub mod plan;
pub mod policy;
pub mod simulation;
pub mod state;
pub mod user_ref;

pub use capability::Capability;
pub use codes::ErrorCode;
pub use ids::{
    ApiKeyId, ArtifactId, BotId, DeveloperKeyId, InputId, JobId, PlanId, WebhookId, WorkerId,
};
pub use payments::{PaymentKind, PaymentProvider};
pub use plan::{Plan, Priority};
pub use state::{JobState, Transition};
pub use user_ref::{Platform, UserRef};

/// Milliseconds since the Unix epoch, UTC. Every stored timestamp uses it, so both
/// database backends order and subtract times the same way.
pub type Millis = i64;
