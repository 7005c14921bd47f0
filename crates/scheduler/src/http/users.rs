//! `/api/v1/users` and `/api/v1/plans`: what a bot's `/quota` and a pricing page show.

use axum::extract::State;
use axum::Json;

use tessera_api::public::{PlanList, UserQuota};
use tessera_api::ApiErrorBody;
use tessera_core::{Plan, UserRef};

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::ApiPath;
use super::jobs::{rfc3339, user_ref_for};
use super::{now_ms, AppState};
use crate::store::QuotaRecord;

/// A user's plan, tokens used and left today, and when the quota resets. A user
/// never seen is shown on the default plan with nothing used (and is not created).
/// A bot user linked to a website account shows the account's plan and quota.
/// A website account of another web bot is refused (403 `forbidden_user_ref`).
#[utoipa::path(
    get, path = "/api/v1/users/{user_ref}", tag = "users",
    params(("user_ref" = String, Path, description = "`platform:id`, on the key's platform", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    responses(
        (status = 200, body = UserQuota),
        (status = 401, body = ApiErrorBody),
        (status = 403, body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(user_ref): ApiPath<String>,
) -> Result<Json<UserQuota>, ApiError> {
    let user = user_ref_for(&key.frontend, &user_ref)?;
    let now = now_ms();
    let record = quota_record(&state, &user, now).await?;
    if record
        .home_bot
        .as_ref()
        .is_some_and(|bot| *bot != key.bot_id)
    {
        return Err(super::jobs::foreign_account());
    }
    Ok(Json(to_view(&state, record, now)))
}

/// The user's quota record; a user never seen is on the default plan.
async fn quota_record(
    state: &AppState,
    user: &UserRef,
    now: tessera_core::Millis,
) -> Result<QuotaRecord, ApiError> {
    Ok(
        match state.store.quota(user, state.clock.day_of(now)).await? {
            Some(q) => q,
            None => {
                let plan = state
                    .store
                    .plans()
                    .await?
                    .into_iter()
                    .find(|p| p.id == Plan::DEFAULT_ID)
                    .ok_or_else(|| {
                        ApiError::from(crate::store::StoreError::Corrupt(
                            "default plan missing".into(),
                        ))
                    })?;
                QuotaRecord {
                    user_ref: user.to_string(),
                    plan,
                    tokens_used: 0,
                    home_bot: None,
                }
            }
        },
    )
}

pub(crate) fn to_view(state: &AppState, q: QuotaRecord, now: tessera_core::Millis) -> UserQuota {
    UserQuota {
        tokens_left_today: q
            .plan
            .daily_tokens
            .map(|limit| (limit - q.tokens_used).max(0)),
        user_ref: q.user_ref,
        plan: q.plan,
        tokens_used_today: q.tokens_used,
        resets_at: rfc3339(state.clock.next_reset(now)),
    }
}

/// The plans on offer, by priority.
#[utoipa::path(
    get, path = "/api/v1/plans", tag = "users",
    responses((status = 200, body = PlanList), (status = 401, body = ApiErrorBody)),
    security(("frontend_key" = []))
)]
pub async fn plans(
    State(state): State<AppState>,
    _key: Frontend,
) -> Result<Json<PlanList>, ApiError> {
    Ok(Json(PlanList {
        plans: state.store.plans().await?,
    }))
}
