//! `/api/v1/users` and `/api/v1/plans`: what a bot's `/quota` and a pricing
//! page show; and the operator's `PUT /api/admin/users/{user_ref}/plan`.

use axum::extract::State;
use axum::Json;

use tessera_api::admin::SetPlanRequest;
use tessera_api::public::{PlanList, UserQuota};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{Plan, PlanId, UserRef};

use super::auth::{Admin, Frontend};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Refusal};
use super::scope::{foreign_account, user_ref_for};
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
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
        (status = 403, description = "The user is of another platform than the key, or an account of another website (`forbidden_user_ref`)", body = ApiErrorBody),
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
        return Err(foreign_account());
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
        match state
            .store
            .quota(user, state.clock.day_of(now), now)
            .await?
        {
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
                    user_ref: user.clone(),
                    plan,
                    tokens_used: 0,
                    home_bot: None,
                }
            }
        },
    )
}

fn to_view(state: &AppState, q: QuotaRecord, now: tessera_core::Millis) -> UserQuota {
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
    responses((status = 200, body = PlanList)),
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

/// A plan id no plan can have (not a plain name, U+0000 among them) is
/// refused as any unknown plan is: 404 `plan_not_found`, never looked up.
impl Refusal for SetPlanRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        if field == PlanId::FIELD {
            ApiError::not_found(
                ErrorCode::PlanNotFound,
                "no such plan; plans are free, starter, pro, admin",
            )
        } else {
            ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field)
        }
    }
}

/// Put a user on a plan (created if never seen). For a bot user linked to a
/// website account this is the account's plan, which all its users share.
#[utoipa::path(
    put, path = "/api/admin/users/{user_ref}/plan", tag = "admin",
    params(("user_ref" = String, Path, description = "`platform:id`", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    request_body = SetPlanRequest,
    responses((status = 200, body = UserQuota), (status = 404, body = ApiErrorBody), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn set_plan(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<SetPlanRequest>,
) -> Result<Json<UserQuota>, ApiError> {
    let user: UserRef = user_ref
        .parse()
        .map_err(|e: tessera_core::user_ref::InvalidUserRef| {
            ApiError::invalid(ErrorCode::InvalidUserRef, e.to_string()).with_field("user_ref")
        })?;
    let now = now_ms();
    let not_found = || {
        ApiError::not_found(
            ErrorCode::PlanNotFound,
            format!(
                "no plan {:?}; plans are free, starter, pro, admin",
                req.plan_id
            ),
        )
    };
    let quota = state
        .store
        .set_plan(&user, &req.plan_id, state.clock.day_of(now), now)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(user_ref = %user, plan = %req.plan_id, "plan changed");
    Ok(Json(to_view(&state, quota, now)))
}
