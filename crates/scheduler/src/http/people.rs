//! What moderation does to people, shared by the resources that meet them:
//! the job create refuses a suspended or banned user, a refused prompt may
//! suspend its user or open a case, and the review routes place sanctions.
//!
//! It is its own shared module (like [`scope`](super::scope)) so that
//! `jobs` and `review` apply the same rules without importing each other.

use axum::http::StatusCode;

use tessera_api::review::{CaseKind, SanctionKind};
use tessera_api::ErrorCode;
use tessera_core::moderation::builtin;
use tessera_core::UserRef;

use super::error::ApiError;
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::store::{ChildSafetyHit, JobRecord, NewCase, NewRefusal, SanctionRecord};

/// One day, in milliseconds: the window repeated refusals are counted in.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Refuses a create by a suspended or banned user (403 `user_suspended`,
/// `user_banned`), before anything is validated or charged. The sanction
/// may be on a user linked with this one: it applies to the person.
pub(crate) async fn refuse_sanctioned(state: &AppState, user: &UserRef) -> Result<(), ApiError> {
    match state.store.sanction_in_force(user, now_ms()).await? {
        Some(s) => Err(sanction_refusal(&s)),
        None => Ok(()),
    }
}

/// The refusal a sanction in force answers, saying until when; the reason
/// stays with the operators.
pub(crate) fn sanction_refusal(s: &SanctionRecord) -> ApiError {
    let until = match s.ends_at {
        Some(end) => format!("until {}", rfc3339(end).format("%Y-%m-%d %H:%M UTC")),
        None if s.placed_by == "system" => "pending a review by the operators".to_owned(),
        None => "until the operators lift it".to_owned(),
    };
    let (code, what) = match s.kind {
        SanctionKind::Ban => (ErrorCode::UserBanned, "banned"),
        SanctionKind::Suspension => (ErrorCode::UserSuspended, "suspended"),
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        code,
        format!("This account is {what} {until}, so it cannot start jobs; nothing was charged."),
    )
}

/// What follows a recorded refusal: a child-safety refusal suspends its
/// user at once and opens a case; enough refusals in a day open a
/// `refusals` case. The refusal stands whatever happens here.
pub(crate) async fn after_refusal(state: &AppState, refusal: &NewRefusal, id: Option<i64>) {
    if builtin::is_builtin(&refusal.rule) {
        let hit = ChildSafetyHit {
            user_ref: refusal.user_ref.clone(),
            rule: refusal.rule.clone(),
            refusal_id: id,
            now: refusal.now,
        };
        match state.store.suspend_for_child_safety(&hit).await {
            Ok((sanction, case)) => {
                tracing::warn!(
                    user_ref = %refusal.user_ref,
                    rule = %refusal.rule,
                    case_id = case.id,
                    sanction_id = sanction.id,
                    "user suspended pending review: a child-safety rule refused their prompt"
                );
                state.lifecycle.metrics().sanctioned(
                    SanctionKind::Suspension.as_str(),
                    refusal.user_ref.platform(),
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                user_ref = %refusal.user_ref,
                "a user the child-safety rules refused could not be suspended"
            ),
        }
        return;
    }
    let threshold = state.config.moderation.review_after_refusals;
    if threshold == 0 {
        return;
    }
    match state
        .store
        .review_refusals(
            &refusal.user_ref,
            threshold,
            refusal.now - DAY_MS,
            refusal.now,
        )
        .await
    {
        Ok(Some(case)) => tracing::info!(
            user_ref = %refusal.user_ref,
            case_id = case.id,
            "repeated refusals: a case was opened for review"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "repeated refusals could not be reviewed"),
    }
}

/// What follows outputs withheld for review: a `withheld` case about the
/// job's owner, which the queue shows with the job's artifacts. Opening it
/// again (a worker's retried upload) joins the open case, so a retry after
/// a crash between the job's failure and this call still opens it.
pub(crate) async fn after_withheld(state: &AppState, job: &JobRecord, label: &str) {
    let case = NewCase {
        kind: CaseKind::Withheld,
        user_ref: job.user_ref.clone(),
        job_id: Some(job.id.clone()),
        artifact_id: None,
        cause: format!("outputs withheld ({label})"),
        now: now_ms(),
    };
    match state.store.open_case(&case).await {
        Ok((case, opened)) => {
            if opened {
                tracing::info!(job_id = %job.id, case_id = case.id, "withheld outputs: a case was opened for review");
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            job_id = %job.id,
            "withheld outputs could not be put in the review queue"
        ),
    }
}
