//! The admin API (`/api/admin`), spoken by `tessera admin` with the admin token.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tessera_core::{ApiKeyId, BotId, PlanId, Platform};

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
