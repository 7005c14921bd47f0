//! The admin API (`/api/admin`), spoken by `tessera admin` with the admin token.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use tessera_core::{ApiKeyId, BotId, PaymentKind, PaymentProvider, PlanId, Platform, UserRef};

/// `POST /api/admin/keys`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The frontend kind the key speaks for.
    pub frontend: Platform,
    /// The bot instance the key speaks for, for example `tg-image-bot-1`.
    pub bot_id: BotId,
}

/// A frontend key as listed; the secret is never shown again after creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub key_id: ApiKeyId,
    pub frontend: Platform,
    pub bot_id: BotId,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Answer to a key creation: the only time the secret is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    /// Send as `Authorization: Bearer <api_key>`. Store it now: only its hash is kept.
    pub api_key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// `PUT /api/admin/users/{user_ref}/plan`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPlanRequest {
    /// `free`, `starter`, `pro` or `admin`.
    pub plan_id: PlanId,
}

/// Filters of `GET /api/admin/payments`, the payments ledger. Newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPaymentsQuery {
    /// Only events naming this user or charged to their billing user (the
    /// account a linked bot user belongs to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")]
    pub user_ref: Option<UserRef>,
    /// Only this provider's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<PaymentProvider>,
    /// `true`: only events for users nobody knows (kept, never applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_user: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// What recording a payment event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// It changed a grant (and perhaps the plan that applies).
    Applied,
    /// Recorded, changed nothing: older than what its grant holds, or for a
    /// grant already ended.
    Unchanged,
    /// No such user: kept and listed, never applied.
    UnknownUser,
    /// No such plan: kept and listed, never applied.
    UnknownPlan,
}

/// A payment event as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PaymentEventView {
    /// The ledger's id: increasing, the listing's order.
    pub id: i64,
    pub provider: PaymentProvider,
    /// The provider's id of the event, unique per provider.
    pub event_id: String,
    pub kind: PaymentKind,
    /// The user the event named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ref: Option<UserRef>,
    /// That user's billing user, whose plan it changed; absent for a user
    /// nobody knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_user: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// Money moved in the currency's minor units (cents; Telegram Stars are
    /// whole); a refund's is the money that went back.
    pub amount_minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The paid period's start and end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<DateTime<Utc>>,
    /// The provider's subscription or charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The provider's time of the event.
    pub occurred_at: DateTime<Utc>,
    pub outcome: PaymentOutcome,
    /// What applying it did, in words.
    pub effect: String,
    /// When the scheduler recorded it.
    pub received_at: DateTime<Utc>,
}

/// A page of the payments ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PaymentList {
    pub events: Vec<PaymentEventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/admin/payments/grant`: give a user a plan until a date,
/// recorded in the ledger as an `admin_grant` of the `admin` provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantPlanRequest {
    /// `platform:id`; a user never seen is created. A bot user linked to an
    /// account gives the plan to the account.
    pub user_ref: UserRef,
    /// `free`, `starter`, `pro` or `admin`.
    pub plan_id: PlanId,
    /// When the plan ends: in the future.
    pub until: DateTime<Utc>,
}

/// `POST /api/admin/payments/revoke`: end every plan operators granted the
/// user (`admin_revoke`). Plans paid through a provider end with that
/// provider's refund or cancel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokePlanRequest {
    /// `platform:id`.
    pub user_ref: UserRef,
}

/// `GET /api/admin/artifacts/{artifact_id}`: an artifact as kept, for
/// review: what the output classifier found, and whether it was withheld.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactReview {
    pub artifact_id: tessera_core::ArtifactId,
    pub job_id: tessera_core::JobId,
    pub frontend: Platform,
    pub bot_id: String,
    #[serde(rename = "type")]
    pub kind: crate::internal::ArtifactKind,
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    pub file_size: u64,
    /// Kept for review only: no frontend key may fetch it.
    pub withheld: bool,
    /// What the worker's classifier found; absent when none came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<crate::internal::Classification>,
    /// Where the admin fetches the bytes: `/api/admin/artifacts/{id}/content`.
    pub content_url: String,
    pub created_at: DateTime<Utc>,
}

/// `GET /api/admin/jobs/{job_id}/artifacts`: a job's artifacts as kept,
/// withheld ones too, by position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactReviewList {
    pub artifacts: Vec<ArtifactReview>,
}
