//! `/api/admin/payments`: the operator's view of the payments ledger, and
//! plans given and taken by hand. An operator's grant or revoke is a ledger
//! event like any provider's (provider `admin`), so the ledger says who gave
//! what, and it only ever touches what operators gave: a plan paid through a
//! provider ends with that provider's refund or cancel.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::admin::{
    GrantPlanRequest, ListPaymentsQuery, PaymentEventView, PaymentList, PaymentOutcome,
    RevokePlanRequest,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{PaymentKind, PaymentProvider, PlanId};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Refusal};
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::store::{self, ApplyOutcome, NewPaymentEvent, PaymentEventRecord, PaymentFilter};

fn view(e: PaymentEventRecord) -> PaymentEventView {
    PaymentEventView {
        id: e.id,
        provider: e.provider,
        event_id: e.event_id,
        kind: e.kind,
        user_ref: e.user_ref,
        billing_user: e.billing_user,
        plan_id: e.plan_id,
        amount_minor: e.amount_minor,
        currency: e.currency,
        period_start: e.period.map(|(start, _)| rfc3339(start)),
        period_end: e.period.map(|(_, end)| rfc3339(end)),
        reference: e.reference,
        occurred_at: rfc3339(e.occurred_at),
        outcome: match e.outcome {
            store::PaymentOutcome::Applied => PaymentOutcome::Applied,
            store::PaymentOutcome::Unchanged => PaymentOutcome::Unchanged,
            store::PaymentOutcome::UnknownUser => PaymentOutcome::UnknownUser,
            store::PaymentOutcome::UnknownPlan => PaymentOutcome::UnknownPlan,
        },
        effect: e.effect,
        received_at: rfc3339(e.received_at),
    }
}

/// The payments ledger, newest first: every provider's events and the
/// operators' grants and revokes, with what each did. `unknown_user=true`
/// lists the events kept for users nobody knows.
#[utoipa::path(
    get, path = "/api/admin/payments", tag = "admin",
    params(ListPaymentsQuery),
    responses((status = 200, body = PaymentList), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListPaymentsQuery>,
) -> Result<Json<PaymentList>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(
            ApiError::invalid(ErrorCode::InvalidQuery, "limit must be between 1 and 100")
                .with_field("limit"),
        );
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => Some(c.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::InvalidQuery,
                "cursor must be a next_cursor from a previous page",
            )
            .with_field("cursor")
        })?),
    };
    let filter = PaymentFilter {
        user_ref: q.user_ref,
        provider: q.provider,
        unknown_user: q.unknown_user.unwrap_or(false),
        before,
        limit,
    };
    let events = state.store.payment_events(&filter).await?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(PaymentList {
        events: events.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// Fields of a grant or revoke that do not parse.
fn refuse(field: &str, message: String) -> ApiError {
    match field {
        "user_ref" => ApiError::invalid(ErrorCode::InvalidUserRef, message).with_field(field),
        f if f == PlanId::FIELD => ApiError::not_found(
            ErrorCode::PlanNotFound,
            "no such plan; plans are free, starter, pro, admin",
        ),
        _ => ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field),
    }
}

impl Refusal for GrantPlanRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        refuse(field, message)
    }
}

impl Refusal for RevokePlanRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        refuse(field, message)
    }
}

async fn record(state: &AppState, event: &NewPaymentEvent) -> Result<PaymentEventView, ApiError> {
    match state
        .store
        .apply_payment_event(event, event.occurred_at)
        .await?
    {
        ApplyOutcome::Recorded(e) | ApplyOutcome::AlreadyRecorded(e) => Ok(view(e)),
        ApplyOutcome::Invalid(why) => Err(ApiError::invalid(ErrorCode::InvalidRequest, why)),
    }
}

/// Give a user a plan until a date (a user never seen is created). Recorded
/// in the ledger as an `admin_grant`; the plan that applies is the best of
/// the user's own plan and every live grant, so this never lowers a plan,
/// and no provider's event ends it.
#[utoipa::path(
    post, path = "/api/admin/payments/grant", tag = "admin",
    request_body = GrantPlanRequest,
    responses(
        (status = 201, body = PaymentEventView),
        (status = 404, description = "No such plan (`plan_not_found`)", body = ApiErrorBody),
        (status = 422, description = "`until` is not in the future (`invalid_period`), or a field does not parse", body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn grant(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<GrantPlanRequest>,
) -> Result<(StatusCode, Json<PaymentEventView>), ApiError> {
    let now = now_ms();
    let until = req.until.timestamp_millis();
    if until <= now {
        return Err(
            ApiError::invalid(ErrorCode::InvalidPeriod, "until must be in the future")
                .with_field("until"),
        );
    }
    let plans = state.store.plans().await?;
    if !plans.iter().any(|p| p.id == req.plan_id.as_str()) {
        return Err(ApiError::not_found(
            ErrorCode::PlanNotFound,
            format!(
                "no plan {:?}; plans are free, starter, pro, admin",
                req.plan_id
            ),
        ));
    }
    let event_id = format!("admin-{}", ulid::Ulid::new().to_string().to_lowercase());
    let event = NewPaymentEvent {
        provider: PaymentProvider::Admin,
        event_id: event_id.clone(),
        kind: PaymentKind::AdminGrant,
        user_ref: Some(req.user_ref.clone()),
        plan_id: Some(req.plan_id.to_string()),
        amount_minor: 0,
        currency: None,
        period: Some((now, until)),
        reference: Some(event_id),
        occurred_at: now,
    };
    let recorded = record(&state, &event).await?;
    tracing::info!(user_ref = %req.user_ref, plan = %req.plan_id, until = %req.until, "plan granted by an operator");
    Ok((StatusCode::CREATED, Json(recorded)))
}

/// End every plan operators granted the user, now. Recorded in the ledger as
/// an `admin_revoke`. Plans paid through a provider are not touched (they end
/// with the provider's refund or cancel), nor the user's own plan (`PUT
/// /api/admin/users/{user_ref}/plan`).
#[utoipa::path(
    post, path = "/api/admin/payments/revoke", tag = "admin",
    request_body = RevokePlanRequest,
    responses(
        (status = 200, body = PaymentEventView),
        (status = 404, description = "The user holds no live plan an operator granted (`grant_not_found`)", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<RevokePlanRequest>,
) -> Result<Json<PaymentEventView>, ApiError> {
    let now = now_ms();
    let grants = state.store.plan_grants(&req.user_ref).await?;
    if !grants
        .iter()
        .any(|g| g.provider == PaymentProvider::Admin && g.active && g.paid_until > now)
    {
        return Err(ApiError::not_found(
            ErrorCode::GrantNotFound,
            format!("{} holds no live plan an operator granted", req.user_ref),
        ));
    }
    let event = NewPaymentEvent {
        provider: PaymentProvider::Admin,
        event_id: format!("admin-{}", ulid::Ulid::new().to_string().to_lowercase()),
        kind: PaymentKind::AdminRevoke,
        user_ref: Some(req.user_ref.clone()),
        plan_id: None,
        amount_minor: 0,
        currency: None,
        period: None,
        reference: None,
        occurred_at: now,
    };
    let recorded = record(&state, &event).await?;
    tracing::info!(user_ref = %req.user_ref, "operator's plans revoked");
    Ok(Json(recorded))
}
