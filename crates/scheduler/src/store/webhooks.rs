//! Job webhooks: each key's signing secret, and the delivery of an ended
//! job's webhook.
//!
//! A job's callback URL is stored on the job at its create. The transaction
//! that ends the job writes its one delivery row (`transitions`), due at
//! once. Deliverers claim due rows with a conditional update that pushes
//! `due_at` past the attempt's timeout and raises `attempts`, so two
//! replicas never send one attempt, and a deliverer that dies mid-attempt
//! leaves a row that falls due again (a re-delivery with the same webhook
//! id). An attempt's outcome is recorded fenced on its attempt number.

use async_trait::async_trait;

use tessera_core::{JobId, JobState, Millis, WebhookId};

use super::rows::corrupt;
use super::StoreError;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Due at `due_at` (or being attempted, under a claim's lease).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up on, past the retry window (or with nothing to sign it).
    Abandoned,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "abandoned" => DeliveryState::Abandoned,
            _ => return None,
        })
    }
}

/// The event an ended job's webhook announces: `job.completed`,
/// `job.failed`, `job.cancelled`.
pub fn event_of(state: JobState) -> String {
    format!("job.{}", state.as_str().to_ascii_lowercase())
}

/// A job's webhook delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// Sent as `Tessera-Webhook-Id` with every attempt.
    pub id: WebhookId,
    pub job_id: JobId,
    /// `job.completed`, `job.failed` or `job.cancelled`.
    pub event: String,
    pub url: String,
    /// The key whose webhook secret signs it.
    pub key_id: String,
    pub state: DeliveryState,
    /// Attempts claimed so far; a claim answers the attempt it claimed.
    pub attempts: i32,
    pub due_at: Millis,
    pub created_at: Millis,
    pub first_attempt_at: Option<Millis>,
    pub last_attempt_at: Option<Millis>,
    /// The HTTP status of the last answer, if one came.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered or abandoned.
    pub ended_at: Option<Millis>,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer with this status.
    Delivered { status: u16 },
    /// Failed; try again at `due_at`.
    Retry {
        due_at: Millis,
        status: Option<u16>,
        error: String,
    },
    /// Failed, and no attempt follows.
    Abandoned { status: Option<u16>, error: String },
}

/// Webhook secrets and deliveries.
#[async_trait]
pub trait Webhooks {
    /// Sets (or replaces) a key's webhook signing secret.
    async fn set_webhook_secret(
        &self,
        key_id: &str,
        secret: &str,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// A key's webhook signing secret, if it has one.
    async fn webhook_secret(&self, key_id: &str) -> Result<Option<String>, StoreError>;

    /// Claims up to `limit` pending deliveries due at `now`, earliest first:
    /// each one's attempts are raised by one and it is not due again until
    /// `lease_until` (unless its outcome is recorded first). Answers them as
    /// claimed; a row another deliverer claimed first is left out.
    async fn claim_webhooks(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Records the outcome of attempt `attempt` of a job's delivery; false
    /// (nothing changed) when the delivery is no longer pending at that
    /// attempt.
    async fn record_webhook_attempt(
        &self,
        job_id: &JobId,
        attempt: i32,
        outcome: &AttemptOutcome,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// A job's delivery, if it has one.
    async fn webhook_delivery(&self, job_id: &JobId)
        -> Result<Option<WebhookDelivery>, StoreError>;
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, job_id, event, url, key_id, state, attempts, \
    due_at, created_at, first_attempt_at, last_attempt_at, last_status, last_error, ended_at";

/// The delivery row written in the transaction that ends a job with a
/// callback URL: `$1` job id, `$2` webhook id, `$3` event, `$4` URL, `$5`
/// key id, `$6` now. Once per job: a second end cannot happen, and would
/// change nothing.
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries \
    (job_id, id, event, url, key_id, state, attempts, due_at, created_at) \
    VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6) ON CONFLICT (job_id) DO NOTHING";

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: String,
    job_id: String,
    event: String,
    url: String,
    key_id: String,
    state: String,
    attempts: i32,
    due_at: i64,
    created_at: i64,
    first_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_status: Option<i32>,
    last_error: Option<String>,
    ended_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for WebhookDelivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        Ok(WebhookDelivery {
            id: r.id.parse().map_err(|_| corrupt("webhook id", &r.id))?,
            job_id: r.job_id.parse().map_err(|_| corrupt("job id", &r.job_id))?,
            event: r.event,
            url: r.url,
            key_id: r.key_id,
            state: DeliveryState::parse(&r.state).ok_or_else(|| corrupt("state", &r.state))?,
            attempts: r.attempts,
            due_at: r.due_at,
            created_at: r.created_at,
            first_attempt_at: r.first_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
            ended_at: r.ended_at,
        })
    }
}

/// Implements [`Webhooks`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_webhooks {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{JobId, Millis};

            use $crate::store::webhooks::{DeliveryRow, DELIVERY_COLUMNS};
            use $crate::store::{AttemptOutcome, StoreError, WebhookDelivery, Webhooks};

            #[async_trait::async_trait]
            impl Webhooks for $store {
                async fn set_webhook_secret(
                    &self,
                    key_id: &str,
                    secret: &str,
                    now: Millis,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO webhook_secrets (key_id, secret, created_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (key_id) DO UPDATE \
                         SET secret = excluded.secret, created_at = excluded.created_at",
                    )
                    .bind(key_id)
                    .bind(secret)
                    .bind(now)
                    .execute(self.writer())
                    .await?;
                    Ok(())
                }

                async fn webhook_secret(
                    &self,
                    key_id: &str,
                ) -> Result<Option<String>, StoreError> {
                    let row: Option<(String,)> =
                        sqlx::query_as("SELECT secret FROM webhook_secrets WHERE key_id = $1")
                            .bind(key_id)
                            .fetch_optional(self.reader())
                            .await?;
                    Ok(row.map(|(s,)| s))
                }

                async fn claim_webhooks(
                    &self,
                    now: Millis,
                    lease_until: Millis,
                    limit: u32,
                ) -> Result<Vec<WebhookDelivery>, StoreError> {
                    // The condition is repeated outside the subquery: on
                    // PostgreSQL a row another replica claimed meanwhile is
                    // re-checked after its lock and no longer matches.
                    let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
                        "UPDATE webhook_deliveries SET due_at = $2, attempts = attempts + 1, \
                         first_attempt_at = COALESCE(first_attempt_at, $1), last_attempt_at = $1 \
                         WHERE job_id IN (SELECT job_id FROM webhook_deliveries \
                             WHERE state = 'pending' AND due_at <= $1 ORDER BY due_at LIMIT $3) \
                         AND state = 'pending' AND due_at <= $1 \
                         RETURNING {DELIVERY_COLUMNS}"
                    ))
                    .bind(now)
                    .bind(lease_until)
                    .bind(i64::from(limit))
                    .fetch_all(self.writer())
                    .await?;
                    let mut claimed = rows
                        .into_iter()
                        .map(TryInto::try_into)
                        .collect::<Result<Vec<WebhookDelivery>, _>>()?;
                    claimed.sort_by(|a, b| a.job_id.cmp(&b.job_id));
                    Ok(claimed)
                }

                async fn record_webhook_attempt(
                    &self,
                    job_id: &JobId,
                    attempt: i32,
                    outcome: &AttemptOutcome,
                    now: Millis,
                ) -> Result<bool, StoreError> {
                    let (state, due_at, status, error) = match outcome {
                        AttemptOutcome::Delivered { status } => {
                            ("delivered", None, Some(*status), None)
                        }
                        AttemptOutcome::Retry {
                            due_at,
                            status,
                            error,
                        } => ("pending", Some(*due_at), *status, Some(error.as_str())),
                        AttemptOutcome::Abandoned { status, error } => {
                            ("abandoned", None, *status, Some(error.as_str()))
                        }
                    };
                    let done = sqlx::query(
                        "UPDATE webhook_deliveries SET state = $1, \
                         due_at = COALESCE($2, due_at), last_status = $3, last_error = $4, \
                         ended_at = CASE WHEN $1 = 'pending' THEN NULL ELSE $5 END \
                         WHERE job_id = $6 AND attempts = $7 AND state = 'pending'",
                    )
                    .bind(state)
                    .bind(due_at)
                    .bind(status.map(i32::from))
                    .bind(error)
                    .bind(now)
                    .bind(job_id.as_str())
                    .bind(attempt)
                    .execute(self.writer())
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn webhook_delivery(
                    &self,
                    job_id: &JobId,
                ) -> Result<Option<WebhookDelivery>, StoreError> {
                    let row: Option<DeliveryRow> = sqlx::query_as(&format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE job_id = $1"
                    ))
                    .bind(job_id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }
            }
        };
    };
}

pub(crate) use impl_webhooks;
