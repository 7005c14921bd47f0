//! The job as stored, its row and its columns, which several rooms of the
//! store read (jobs, transitions, workers), and the small conversions they
//! share.

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::types::Json;

use tessera_core::params::JobParams;
use tessera_core::{
    BotId, Capability, JobId, JobState, Millis, Platform, Priority, UserRef, WorkerId,
};

use super::StoreError;

/// A job as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub user_id: i64,
    pub user_ref: UserRef,
    pub frontend: Platform,
    pub bot_id: BotId,
    pub capability: Capability,
    pub model: String,
    pub priority: Priority,
    pub status: JobState,
    /// Typed when the row is read: the one place stored parameters are parsed.
    pub params: JobParams,
    pub reply_context: Option<Value>,
    pub cost_tokens: i64,
    pub billing_day: NaiveDate,
    pub refunded: bool,
    pub attempts: i32,
    pub worker_id: Option<WorkerId>,
    pub progress: Option<f32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: Millis,
    pub queued_at: Option<Millis>,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    /// When the frontend acknowledged handing the outcome to the user.
    pub delivered_at: Option<Millis>,
    /// The `X-Request-Id` of the request that created it.
    pub request_id: Option<String>,
    /// Whether its outputs may be adult content: decided at create from the
    /// request's context (a Discord channel's flag, a Telegram chat's
    /// setting, a website account's confirmed age) and the user's plan.
    pub adult_allowed: bool,
    /// Its start tag in its queue's fair order (`tessera_core::fair`), fixed
    /// when it was queued and kept when a lost worker gives it back.
    pub fair_tag: i64,
    /// Where its webhook is delivered when it ends (`crate::webhooks`).
    pub callback_url: Option<String>,
    /// The key that created it, whose webhook secret signs the delivery.
    pub callback_key_id: Option<String>,
}

pub(crate) const JOB_COLUMNS: &str = "id, user_id, user_ref, frontend, bot_id, capability, model, \
    priority, status, params, reply_context, cost_tokens, billing_day, refunded, attempts, \
    worker_id, progress, error_code, error_message, created_at, queued_at, started_at, ended_at, \
    delivered_at, request_id, adult_allowed, fair_tag, callback_url, callback_key_id";

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    user_id: i64,
    user_ref: String,
    frontend: String,
    bot_id: String,
    capability: String,
    model: String,
    priority: i32,
    status: String,
    params: Json<Value>,
    reply_context: Option<Json<Value>>,
    cost_tokens: i64,
    billing_day: NaiveDate,
    refunded: bool,
    attempts: i32,
    worker_id: Option<String>,
    progress: Option<f32>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: i64,
    queued_at: Option<i64>,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    delivered_at: Option<i64>,
    request_id: Option<String>,
    adult_allowed: bool,
    fair_tag: i64,
    callback_url: Option<String>,
    callback_key_id: Option<String>,
}

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let capability: Capability = r
            .capability
            .parse()
            .map_err(|_| corrupt("capability", &r.capability))?;
        Ok(JobRecord {
            id: r.id.parse().map_err(|_| corrupt("job id", &r.id))?,
            user_id: r.user_id,
            user_ref: r
                .user_ref
                .parse()
                .map_err(|_| corrupt("user_ref", &r.user_ref))?,
            frontend: r
                .frontend
                .parse()
                .map_err(|_| corrupt("frontend", &r.frontend))?,
            bot_id: r.bot_id.parse().map_err(|_| corrupt("bot_id", &r.bot_id))?,
            capability,
            model: r.model,
            priority: Priority(
                u8::try_from(r.priority)
                    .map_err(|_| corrupt("priority", &r.priority.to_string()))?,
            ),
            status: r.status.parse().map_err(|_| corrupt("status", &r.status))?,
            params: JobParams::from_stored(capability, r.params.0)
                .map_err(|e| corrupt("params", &e.to_string()))?,
            reply_context: r.reply_context.map(|j| j.0),
            cost_tokens: r.cost_tokens,
            billing_day: r.billing_day,
            refunded: r.refunded,
            attempts: r.attempts,
            worker_id: r
                .worker_id
                .map(|w| w.parse().map_err(|_| corrupt("worker_id", &w)))
                .transpose()?,
            progress: r.progress,
            error_code: r.error_code,
            error_message: r.error_message,
            created_at: r.created_at,
            queued_at: r.queued_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            delivered_at: r.delivered_at,
            request_id: r.request_id,
            adult_allowed: r.adult_allowed,
            fair_tag: r.fair_tag,
            callback_url: r.callback_url,
            callback_key_id: r.callback_key_id,
        })
    }
}

pub(crate) fn capability_str(c: Capability) -> &'static str {
    c.as_str()
}
