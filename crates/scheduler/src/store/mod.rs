//! Storage: the one interface the control plane writes through, and its two backends.
//!
//! [`Store`] speaks in decisions, not rows: "create this job if the user can pay
//! for it", "apply this transition and refund if it ends the job badly". Each
//! method is one transaction, so a crash between two statements can never leave a
//! job charged but missing, or ended but not refunded.
//!
//! `Store` is the sum of one trait per resource, each in its own module with its
//! record types and its SQL: [`Base`] (the database itself), [`Keys`] (frontend keys), [`DeveloperKeys`]
//! (accounts' personal keys for the gateway),
//! [`Users`] (plans and quotas), [`Accounts`] (and link codes), [`Jobs`],
//! [`Transitions`] (the state machine), [`Files`] (artifacts and inputs),
//! [`Queue`], [`Workers`], [`Payments`] (the payments ledger), [`StripeCustomers`]
//! [`RefundOrders`] (refunds operators order of Telegram Stars payments) and
//! [`Refusals`] (jobs the prompt rules refused), [`NsfwSettings`] (chats'
//! NSFW settings, accounts' confirmed ages), [`Sanctions`] (suspensions
//! and bans), [`Review`] (the review queue, reports and the audit log), [`Timings`]
//! (learned run and load times per worker and model) and [`Webhooks`] (keys'
//! webhook secrets, ended jobs' webhook deliveries). Callers hold an `Arc<dyn Store>` and call any of
//! their methods without naming the parts. [`Inspect`] holds what only tests
//! and tools read, outside `Store`.
//!
//! [`postgres::PgStore`] is for production, [`sqlite::SqliteStore`] the embedded
//! default. Their SQL is written once, in each resource's `impl_<resource>!`
//! macro, and `impl_store!` instantiates them all for a backend; the schemas
//! are kept column for column equal (integers for times, JSON as JSONB or TEXT).
//! The conformance suite in `tests/store_conformance/` runs every behaviour
//! against both.

mod accounts;
mod admission;
mod base;
mod developer_keys;
mod files;
mod inspect;
mod jobs;
mod keys;
mod nsfw;
mod payments;
pub mod postgres;
mod queue;
mod refund_orders;
mod refusals;
mod review;
mod rows;
mod sanctions;
pub mod sqlite;
mod stripe_customers;
mod timings;
mod transitions;
mod users;
mod webhooks;
mod workers;

use std::sync::Arc;

use crate::config::DatabaseConfig;

pub use accounts::{AccountRecord, Accounts, RedeemOutcome};
pub use admission::Admission;
pub use base::{Backend, Base, PoolStats, StoreGauges};
pub use developer_keys::{
    DeveloperKeyRecord, DeveloperKeys, MintOutcome, NewDeveloperKey, TOUCH_EVERY_MS,
};
pub use files::{ArtifactRecord, Files, InputRecord, NewArtifact};
pub use inspect::Inspect;
pub use jobs::{Callback, CreateOutcome, Idempotency, JobFilter, Jobs, NewJob, Validator};
pub use keys::{ApiKeyRecord, Keys};
pub use nsfw::{ChatNsfwRecord, NsfwSettings};
pub use payments::{
    ApplyOutcome, GrantRecord, NewPaymentEvent, PaymentEventRecord, PaymentFilter, PaymentOutcome,
    Payments, RevenueRow,
};
pub use queue::{Queue, QueueGroup, WorkerSlot};
pub use refund_orders::{OrderOutcome, RefundOrderRecord, RefundOrders, RefundState};
pub use refusals::{NewRefusal, RefusalRecord, Refusals};
pub use review::{
    AuditRecord, CaseFilter, CaseRecord, DecideOutcome, NewCase, NewDecision, NewReport,
    ReportOutcome, ReportRecord, Review,
};
pub use rows::JobRecord;
pub use sanctions::{ChildSafetyHit, NewSanction, SanctionRecord, Sanctions};
pub use stripe_customers::StripeCustomers;
pub use timings::{TimingRecord, Timings};
pub use transitions::{Fence, TransitionChange, TransitionOutcome, Transitions};
pub use users::{QuotaRecord, Users};
pub use webhooks::{event_of, AttemptOutcome, DeliveryState, WebhookDelivery, Webhooks};
pub use workers::{WorkerRecord, Workers};

/// The control plane's storage: every resource's part. Every method is one
/// transaction.
pub trait Store:
    Base
    + Keys
    + DeveloperKeys
    + Users
    + Accounts
    + Jobs
    + Transitions
    + Files
    + Queue
    + Admission
    + Workers
    + Payments
    + StripeCustomers
    + RefundOrders
    + Refusals
    + NsfwSettings
    + Sanctions
    + Review
    + Timings
    + Webhooks
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Base
        + Keys
        + DeveloperKeys
        + Users
        + Accounts
        + Jobs
        + Transitions
        + Files
        + Queue
        + Admission
        + Workers
        + Payments
        + StripeCustomers
        + RefundOrders
        + Refusals
        + NsfwSettings
        + Sanctions
        + Review
        + Timings
        + Webhooks
        + Send
        + Sync
        + 'static
{
}

/// Opens the database named by `config.url` and applies pending migrations.
pub async fn connect(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(connect_inspect(config).await?)
}

/// Opens the store as [`connect`] does, with its [`Inspect`] reads: for tests
/// and tools.
pub async fn connect_inspect(config: &DatabaseConfig) -> Result<Arc<dyn Inspect>, StoreError> {
    if config.url.starts_with("postgres://") || config.url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(config).await?))
    } else if config.url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(config).await?))
    } else {
        Err(StoreError::Config(format!(
            "database.url must start with sqlite:// or postgres://, not {:?}",
            config.url.split(':').next().unwrap_or_default()
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; the API answers 503 and the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value Tessera cannot read back; a bug or a hand edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Database(db) => match db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLite: busy or locked past the timeout, in any extended form
                // (SQLITE_BUSY_SNAPSHOT is 517: the primary code is the low byte).
                Some(lite) => sqlx::error::DatabaseError::code(lite)
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
                // PostgreSQL: connection exceptions (08), shutdown and recovery (57P0x).
                None => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
            },
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// Implements every part of [`Store`], and [`Inspect`], for a backend type
/// with two pools: `writer()` for transactions and `reader()` for reads (the
/// same pool on PostgreSQL; on SQLite one writer connection and several
/// readers, which is how SQLite wants to be used). Every statement is plain
/// SQL both databases accept (`$N` parameters, `RETURNING`, `ON CONFLICT`,
/// row values), so one text serves both; each part is instantiated by its
/// module's macro, and the parts share the helpers they define on the backend
/// type (`transition_in`, `user_plan`, `used_on`...).
macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:expr) => {
        $crate::store::base::impl_base!($store, $db, $backend);
        $crate::store::keys::impl_keys!($store);
        $crate::store::developer_keys::impl_developer_keys!($store);
        $crate::store::users::impl_users!($store, $db);
        $crate::store::accounts::impl_accounts!($store, $db);
        $crate::store::jobs::impl_jobs!($store, $db);
        $crate::store::transitions::impl_transitions!($store, $db);
        $crate::store::files::impl_files!($store, $db);
        $crate::store::queue::impl_queue!($store, $db);
        $crate::store::admission::impl_admission!($store);
        $crate::store::workers::impl_workers!($store);
        $crate::store::payments::impl_payments!($store, $db);
        $crate::store::stripe_customers::impl_stripe_customers!($store);
        $crate::store::refund_orders::impl_refund_orders!($store, $db);
        $crate::store::refusals::impl_refusals!($store);
        $crate::store::nsfw::impl_nsfw!($store);
        $crate::store::sanctions::impl_sanctions!($store, $db);
        $crate::store::review::impl_review!($store, $db);
        $crate::store::timings::impl_timings!($store);
        $crate::store::webhooks::impl_webhooks!($store);
        $crate::store::inspect::impl_inspect!($store);
    };
}

pub(crate) use impl_store;
