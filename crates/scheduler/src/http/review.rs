//! People: the operator's suspensions and bans
//! (`/api/admin/users/{user_ref}/suspend|ban|lift|sanctions`), users'
//! reports of outputs (`POST /api/v1/jobs/{job_id}/reports`), the review
//! queue (`/api/admin/moderation/cases`) and the audit log
//! (`/api/admin/moderation/audit`).
//!
//! Every action is recorded by the store in the audit log in the same
//! transaction as the action; the admin token is the actor `admin`, or
//! `admin:<name>` when the request names the operator (`actor`, which
//! `tessera admin ... --actor` sends).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use tessera_api::review::{
    AuditEntry, AuditList, AuditQuery, CaseDetail, CaseList, CaseView, DecideRequest, Decision,
    DecisionResult, JobEvidence, LiftRequest, LiftResult, ListCasesQuery, RefusalEvidence,
    ReportEvidence, ReportRequest, ReportView, SanctionKind, SanctionRequest, SanctionView,
    UserSanctions, MAX_REASON_CHARS,
};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::UserRef;

use super::auth::{Admin, Frontend};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery, Refusal};
use super::scope::{sees, speaks_for};
use super::wire::{job_not_found, parse_job_id, rfc3339};
use super::AppState;
use crate::lifecycle::now_ms;
use crate::store::{
    AuditRecord, CaseFilter, CaseRecord, DecideOutcome, NewDecision, NewReport, NewSanction,
    ReportOutcome, ReportRecord, SanctionRecord,
};

impl Refusal for SanctionRequest {}
impl Refusal for LiftRequest {}
impl Refusal for DecideRequest {}

/// A reporter that is no user reference is `invalid_user_ref`.
impl Refusal for ReportRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        match field {
            "user_ref" => ApiError::invalid(ErrorCode::InvalidUserRef, message).with_field(field),
            _ => ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field),
        }
    }
}

fn path_user(text: &str) -> Result<UserRef, ApiError> {
    text.parse()
        .map_err(|e: tessera_core::user_ref::InvalidUserRef| {
            ApiError::invalid(ErrorCode::InvalidUserRef, e.to_string()).with_field("user_ref")
        })
}

/// A reason, report or note: 1 to 500 characters, as the document says;
/// kept trimmed, with U+0000 (which PostgreSQL cannot store) replaced.
fn words(field: &str, text: &str) -> Result<String, ApiError> {
    let count = text.chars().count();
    if count == 0 || count > MAX_REASON_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            format!("{field} must be 1 to {MAX_REASON_CHARS} characters"),
        )
        .with_field(field));
    }
    let clean = text.replace('\0', "\u{FFFD}");
    let trimmed = clean.trim();
    Ok(if trimmed.is_empty() {
        clean.clone()
    } else {
        trimmed.to_owned()
    })
}

/// `admin`, or `admin:<name>` for an operator who named themselves.
fn actor(name: Option<&str>) -> Result<String, ApiError> {
    match name {
        None => Ok("admin".into()),
        Some(n)
            if (1..=64).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.@-".contains(&b)) =>
        {
            Ok(format!("admin:{n}"))
        }
        Some(_) => Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            "actor must be 1 to 64 letters, digits or _.@-",
        )
        .with_field("actor")),
    }
}

/// An end time: in the future.
fn end(until: Option<chrono::DateTime<chrono::Utc>>, now: i64) -> Result<Option<i64>, ApiError> {
    match until.map(|u| u.timestamp_millis()) {
        Some(ms) if ms <= now => Err(ApiError::invalid(
            ErrorCode::InvalidPeriod,
            "until must be in the future",
        )
        .with_field("until")),
        other => Ok(other),
    }
}

pub(crate) fn sanction_view(s: SanctionRecord) -> SanctionView {
    SanctionView {
        sanction_id: s.id,
        user_ref: s.user_ref,
        kind: s.kind,
        reason: s.reason,
        placed_by: s.placed_by,
        case_id: s.case_id,
        starts_at: rfc3339(s.starts_at),
        until: s.ends_at.map(rfc3339),
        lifted_at: s.lifted_at.map(rfc3339),
        lifted_by: s.lifted_by,
    }
}

fn case_view(c: CaseRecord) -> CaseView {
    CaseView {
        case_id: c.id,
        kind: c.kind,
        user_ref: c.user_ref,
        job_id: c.job_id,
        artifact_id: c.artifact_id,
        cause: c.cause,
        status: c.status,
        decision: c.decision,
        decided_by: c.decided_by,
        decided_at: c.decided_at.map(rfc3339),
        note: c.note,
        created_at: rfc3339(c.created_at),
    }
}

fn report_view(r: ReportRecord) -> ReportView {
    ReportView {
        report_id: r.id,
        job_id: r.job_id,
        case_id: r.case_id,
        reason: r.reason,
        created_at: rfc3339(r.created_at),
    }
}

fn audit_entry(a: AuditRecord) -> AuditEntry {
    AuditEntry {
        id: a.id,
        at: rfc3339(a.at),
        actor: a.actor,
        action: a.action,
        user_ref: a.user_ref,
        case_id: a.case_id,
        sanction_id: a.sanction_id,
        detail: a.detail,
    }
}

async fn sanction(
    state: &AppState,
    kind: SanctionKind,
    user_ref: &str,
    req: SanctionRequest,
) -> Result<(StatusCode, Json<SanctionView>), ApiError> {
    let user = path_user(user_ref)?;
    let now = now_ms();
    let new = NewSanction {
        user_ref: user.clone(),
        kind,
        reason: words("reason", &req.reason)?,
        ends_at: end(req.until, now)?,
        actor: actor(req.actor.as_deref())?,
        case_id: None,
        now,
    };
    let placed = state.store.place_sanction(&new).await?;
    state
        .lifecycle
        .metrics()
        .sanctioned(kind.as_str(), user.platform());
    tracing::info!(user_ref = %user, kind = kind.as_str(), actor = %new.actor, "sanction placed");
    Ok((StatusCode::CREATED, Json(sanction_view(placed))))
}

/// Suspend a user (created if never seen) until a time, or until lifted.
/// It applies to the person: every user linked with them (a chat user and
/// its website account) is refused jobs with 403 `user_suspended`.
#[utoipa::path(
    post, path = "/api/admin/users/{user_ref}/suspend", tag = "admin",
    params(("user_ref" = String, Path, description = "`platform:id`", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    request_body = SanctionRequest,
    responses(
        (status = 201, body = SanctionView),
        (status = 422, description = "`until` not in the future (`invalid_period`), an empty or long reason, a bad actor", body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn suspend(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<SanctionRequest>,
) -> Result<(StatusCode, Json<SanctionView>), ApiError> {
    sanction(&state, SanctionKind::Suspension, &user_ref, req).await
}

/// Ban a user (created if never seen), for good or until a time; every user
/// linked with them is refused jobs with 403 `user_banned`.
#[utoipa::path(
    post, path = "/api/admin/users/{user_ref}/ban", tag = "admin",
    params(("user_ref" = String, Path, description = "`platform:id`", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    request_body = SanctionRequest,
    responses(
        (status = 201, body = SanctionView),
        (status = 422, description = "`until` not in the future (`invalid_period`), an empty or long reason, a bad actor", body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn ban(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<SanctionRequest>,
) -> Result<(StatusCode, Json<SanctionView>), ApiError> {
    sanction(&state, SanctionKind::Ban, &user_ref, req).await
}

/// Lift every suspension and ban in force on the person.
#[utoipa::path(
    post, path = "/api/admin/users/{user_ref}/lift", tag = "admin",
    params(("user_ref" = String, Path, description = "`platform:id`", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    request_body = LiftRequest,
    responses(
        (status = 200, body = LiftResult),
        (status = 404, description = "Nothing in force to lift (`no_sanction`)", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn lift(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<LiftRequest>,
) -> Result<Json<LiftResult>, ApiError> {
    let user = path_user(&user_ref)?;
    let reason = match &req.reason {
        Some(r) => words("reason", r)?,
        None => "lifted by an operator".into(),
    };
    let who = actor(req.actor.as_deref())?;
    let lifted = state
        .store
        .lift_sanctions(&user, &who, &reason, now_ms())
        .await?;
    if lifted.is_empty() {
        return Err(ApiError::not_found(
            ErrorCode::NoSanction,
            format!("{user} has no suspension or ban in force"),
        ));
    }
    tracing::info!(user_ref = %user, actor = %who, count = lifted.len(), "sanctions lifted");
    Ok(Json(LiftResult {
        user_ref: user,
        lifted: lifted.into_iter().map(sanction_view).collect(),
    }))
}

/// A person's sanctions: the one in force, and every one, newest first.
#[utoipa::path(
    get, path = "/api/admin/users/{user_ref}/sanctions", tag = "admin",
    params(("user_ref" = String, Path, description = "`platform:id`", pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")),
    responses((status = 200, body = UserSanctions), (status = 422, body = ApiErrorBody)),
    security(("admin_token" = []))
)]
pub async fn sanctions(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(user_ref): ApiPath<String>,
) -> Result<Json<UserSanctions>, ApiError> {
    let user = path_user(&user_ref)?;
    let active = state.store.sanction_in_force(&user, now_ms()).await?;
    let all = state.store.sanctions_of(&user).await?;
    Ok(Json(UserSanctions {
        user_ref: user,
        active: active.map(sanction_view),
        sanctions: all.into_iter().map(sanction_view).collect(),
    }))
}

/// Report a job's output: a user of the key's platform, a job the key
/// sees. The report opens the job's case in the review queue, or joins it;
/// a user's second report of a job changes nothing and answers the first
/// (200).
#[utoipa::path(
    post, path = "/api/v1/jobs/{job_id}/reports", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id, `job_...`", pattern = "^job_[0-7][0-9A-HJKMNP-TV-Z]{25}$")),
    request_body = ReportRequest,
    responses(
        (status = 201, description = "Reported", body = ReportView),
        (status = 200, description = "This user reported the job before: the first report", body = ReportView),
        (status = 403, description = "The reporter is of another platform than the key (`forbidden_user_ref`)", body = ApiErrorBody),
        (status = 404, description = "No such job for this frontend", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn report(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(job_id): ApiPath<String>,
    ApiJson(req): ApiJson<ReportRequest>,
) -> Result<(StatusCode, Json<ReportView>), ApiError> {
    let id = parse_job_id(&job_id)?;
    speaks_for(&key.frontend, &req.user_ref)?;
    let job = state
        .store
        .get_job(&id, Some(key.frontend))
        .await?
        .filter(|job| sees(&key, job))
        .ok_or_else(job_not_found)?;
    let new = NewReport {
        job_id: job.id,
        owner: job.user_ref,
        reporter: req.user_ref,
        bot_id: key.bot_id.clone(),
        channel: key.frontend,
        reason: words("reason", &req.reason)?,
        now: now_ms(),
    };
    match state.store.report_job(&new).await? {
        ReportOutcome::Recorded(r) => {
            state.lifecycle.metrics().reported(key.frontend);
            tracing::info!(job_id = %r.job_id, case_id = r.case_id, "output reported");
            Ok((StatusCode::CREATED, Json(report_view(r))))
        }
        ReportOutcome::Repeated(r) => Ok((StatusCode::OK, Json(report_view(r)))),
    }
}

/// The review queue: open cases first (oldest first), then decided ones
/// (newest decision first).
#[utoipa::path(
    get, path = "/api/admin/moderation/cases", tag = "admin",
    params(ListCasesQuery),
    responses((status = 200, body = CaseList)),
    security(("admin_token" = []))
)]
pub async fn cases(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListCasesQuery>,
) -> Result<Json<CaseList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(
            ApiError::invalid(ErrorCode::InvalidQuery, "limit must be between 1 and 100")
                .with_field("limit"),
        );
    }
    let filter = CaseFilter {
        kind: q.kind,
        status: q.status,
        limit,
    };
    let cases = state.store.list_cases(&filter).await?;
    Ok(Json(CaseList {
        cases: cases.into_iter().map(case_view).collect(),
    }))
}

fn case_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::CaseNotFound, "no such case")
}

fn parse_case_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(case_not_found)
}

/// A case with its evidence: the user's sanction in force, their latest
/// refused prompts (excerpts only), the reports, the job's parameters and
/// artifact ids.
#[utoipa::path(
    get, path = "/api/admin/moderation/cases/{case_id}", tag = "admin",
    params(("case_id" = i64, Path, description = "The case's id", minimum = 1, maximum = 1_000_000_000_000_000_000_i64)),
    responses(
        (status = 200, body = CaseDetail),
        (status = 404, description = "No such case (`case_not_found`)", body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn show_case(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(case_id): ApiPath<String>,
) -> Result<Json<CaseDetail>, ApiError> {
    let id = parse_case_id(&case_id)?;
    let case = state.store.get_case(id).await?.ok_or_else(case_not_found)?;
    let sanction = state
        .store
        .sanction_in_force(&case.user_ref, now_ms())
        .await?;
    let refusals = state.store.refusals_of(&case.user_ref, 20).await?;
    let reports = state.store.case_reports(id).await?;
    let job = match &case.job_id {
        Some(job_id) => match state.store.get_job(job_id, None).await? {
            Some(job) => {
                let artifacts = state
                    .store
                    .artifacts_of(std::slice::from_ref(job_id))
                    .await?;
                Some(JobEvidence {
                    job_id: job.id,
                    capability: job.capability,
                    status: job.status,
                    params: job.params.to_value(),
                    artifact_ids: artifacts.into_iter().map(|a| a.id).collect(),
                })
            }
            None => None,
        },
        None => None,
    };
    Ok(Json(CaseDetail {
        case: case_view(case),
        sanction: sanction.map(sanction_view),
        refusals: refusals
            .into_iter()
            .map(|r| RefusalEvidence {
                rule: r.rule,
                code: r.code,
                excerpt: r.excerpt,
                channel: r.channel,
                bot_id: r.bot_id,
                at: rfc3339(r.created_at),
            })
            .collect(),
        reports: reports
            .into_iter()
            .map(|r| ReportEvidence {
                report_id: r.id,
                reporter: r.reporter,
                channel: r.channel,
                reason: r.reason,
                at: rfc3339(r.created_at),
            })
            .collect(),
        job,
    }))
}

/// Decide an open case: `dismiss`, `suspend` (until a time, or until
/// lifted), `ban` or `lift` (every sanction of the case's user). Recorded in
/// the audit log with the sanctions it placed or lifted.
#[utoipa::path(
    post, path = "/api/admin/moderation/cases/{case_id}/decision", tag = "admin",
    params(("case_id" = i64, Path, description = "The case's id", minimum = 1, maximum = 1_000_000_000_000_000_000_i64)),
    request_body = DecideRequest,
    responses(
        (status = 200, body = DecisionResult),
        (status = 404, description = "No such case (`case_not_found`)", body = ApiErrorBody),
        (status = 409, description = "The case was decided already (`case_decided`)", body = ApiErrorBody),
        (status = 422, description = "`until` with another decision than `suspend`, or not in the future (`invalid_period`)", body = ApiErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn decide(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(case_id): ApiPath<String>,
    ApiJson(req): ApiJson<DecideRequest>,
) -> Result<Json<DecisionResult>, ApiError> {
    let id = parse_case_id(&case_id)?;
    let now = now_ms();
    if req.until.is_some() && req.decision != Decision::Suspend {
        return Err(ApiError::invalid(
            ErrorCode::InvalidRequest,
            "until goes with the decision suspend only",
        )
        .with_field("until"));
    }
    let decision = NewDecision {
        case_id: id,
        decision: req.decision,
        until: end(req.until, now)?,
        note: req.note.as_deref().map(|n| words("note", n)).transpose()?,
        actor: actor(req.actor.as_deref())?,
        now,
    };
    match state.store.decide_case(&decision).await? {
        DecideOutcome::NotFound => Err(case_not_found()),
        DecideOutcome::AlreadyDecided(c) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::CaseDecided,
            format!(
                "case {} was decided already ({})",
                c.id,
                c.decision.map_or("-", |d| d.as_str())
            ),
        )),
        DecideOutcome::Decided {
            case,
            placed,
            lifted,
        } => {
            if let Some(s) = &placed {
                state
                    .lifecycle
                    .metrics()
                    .sanctioned(s.kind.as_str(), s.user_ref.platform());
            }
            tracing::info!(case_id = case.id, decision = req.decision.as_str(), actor = %decision.actor, "case decided");
            Ok(Json(DecisionResult {
                case: case_view(case),
                sanction: placed.map(sanction_view),
                lifted: lifted.into_iter().map(sanction_view).collect(),
            }))
        }
    }
}

/// The audit log of moderation actions, newest first.
#[utoipa::path(
    get, path = "/api/admin/moderation/audit", tag = "admin",
    params(AuditQuery),
    responses((status = 200, body = AuditList)),
    security(("admin_token" = []))
)]
pub async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(
            ApiError::invalid(ErrorCode::InvalidQuery, "limit must be between 1 and 100")
                .with_field("limit"),
        );
    }
    // The bounds the API document gives (an id past 10^18 is none of ours).
    if q.before
        .is_some_and(|b| !(1..=1_000_000_000_000_000_000).contains(&b))
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidQuery,
            "before is an entry id, 1 to 10^18",
        )
        .with_field("before"));
    }
    let entries = state
        .store
        .audit_log(q.user_ref.as_ref(), q.before, limit)
        .await?;
    Ok(Json(AuditList {
        entries: entries.into_iter().map(audit_entry).collect(),
    }))
}
