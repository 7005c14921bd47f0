//! The review queue: cases, users' reports, decisions, and reading the
//! audit log (migration `0015_moderation_people`).
//!
//! A case is opened by a report, a withheld output, repeated refusals or a
//! child-safety refusal; at most one is open per kind, user and job, so a
//! second report of a job joins the first's case and repeated refusals
//! open one case while it waits. [`Review::open_case`] is the one way in
//! for every source. Deciding a case places or lifts sanctions and writes
//! the audit log in the same transaction as the decision.

use async_trait::async_trait;

use tessera_api::review::{CaseKind, CaseStatus, Decision};
use tessera_core::{ArtifactId, BotId, JobId, Millis, Platform, UserRef};

use super::sanctions::SanctionRecord;
use super::StoreError;

/// A case to open (or join, when one of the same kind, user and job is open).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCase {
    pub kind: CaseKind,
    /// The user the case is about.
    pub user_ref: UserRef,
    pub job_id: Option<JobId>,
    pub artifact_id: Option<ArtifactId>,
    /// What opened it, in words.
    pub cause: String,
    pub now: Millis,
}

/// A case as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseRecord {
    pub id: i64,
    pub kind: CaseKind,
    pub user_ref: UserRef,
    pub job_id: Option<JobId>,
    pub artifact_id: Option<ArtifactId>,
    pub cause: String,
    pub status: CaseStatus,
    pub decision: Option<Decision>,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
    pub note: Option<String>,
    pub created_at: Millis,
}

/// A user's report of a job's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewReport {
    pub job_id: JobId,
    /// The job's owner, whom the case is about.
    pub owner: UserRef,
    pub reporter: UserRef,
    pub bot_id: BotId,
    pub channel: Platform,
    pub reason: String,
    pub now: Millis,
}

/// A report as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecord {
    pub id: i64,
    pub job_id: JobId,
    pub reporter: UserRef,
    pub bot_id: BotId,
    pub channel: Platform,
    pub reason: String,
    pub case_id: i64,
    pub created_at: Millis,
}

/// What recording a report did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// A new report, in its case.
    Recorded(ReportRecord),
    /// The reporter had reported this job already: their first report.
    Repeated(ReportRecord),
}

/// Which cases to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseFilter {
    pub kind: Option<CaseKind>,
    pub status: Option<CaseStatus>,
    pub limit: u32,
}

/// A decision to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDecision {
    pub case_id: i64,
    pub decision: Decision,
    /// With `suspend`: its end; none: until lifted.
    pub until: Option<Millis>,
    pub note: Option<String>,
    pub actor: String,
    pub now: Millis,
}

/// What deciding a case did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecideOutcome {
    Decided {
        case: CaseRecord,
        placed: Option<SanctionRecord>,
        lifted: Vec<SanctionRecord>,
    },
    NotFound,
    /// Decided before; nothing changed.
    AlreadyDecided(CaseRecord),
}

/// An entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub user_ref: Option<UserRef>,
    pub case_id: Option<i64>,
    pub sanction_id: Option<i64>,
    pub detail: String,
}

/// The review queue and the audit log.
#[async_trait]
pub trait Review {
    /// Opens a case, or answers the open one of the same kind, user and job;
    /// `true` when it opened one. Withheld outputs, reports, repeated
    /// refusals and child-safety refusals all come in here.
    async fn open_case(&self, case: &NewCase) -> Result<(CaseRecord, bool), StoreError>;

    /// Records a report of a job's output, opening or joining the job's open
    /// `report` case; a reporter's second report of a job changes nothing.
    async fn report_job(&self, report: &NewReport) -> Result<ReportOutcome, StoreError>;

    /// Opens a `refusals` case for the user when they have at least
    /// `threshold` refusals since `since` and no such case is open; answers
    /// the case it opened.
    async fn review_refusals(
        &self,
        user_ref: &UserRef,
        threshold: u32,
        since: Millis,
        now: Millis,
    ) -> Result<Option<CaseRecord>, StoreError>;

    /// Cases, open ones first (oldest first), then decided ones (newest
    /// decision first).
    async fn list_cases(&self, filter: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError>;

    async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError>;

    /// A case's reports, oldest first.
    async fn case_reports(&self, case_id: i64) -> Result<Vec<ReportRecord>, StoreError>;

    /// Decides an open case: places (`suspend`, `ban`) or lifts (`lift`)
    /// sanctions on its user, records the decision and writes the audit log,
    /// in one transaction.
    async fn decide_case(&self, decision: &NewDecision) -> Result<DecideOutcome, StoreError>;

    /// The audit log, newest first: optionally one user's entries, and
    /// entries older than `before`.
    async fn audit_log(
        &self,
        user_ref: Option<&UserRef>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

pub(crate) const CASE_COLUMNS: &str = "c.id, c.kind, c.user_ref, c.job_id, c.artifact_id, \
    c.cause, c.status, c.decision, c.decided_by, c.decided_at, c.note, c.created_at";

pub(crate) type CaseRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
);

pub(crate) fn case(row: CaseRow) -> Result<CaseRecord, StoreError> {
    use super::rows::corrupt;
    let (id, kind, user, job, artifact, cause, status, decision, by, at, note, created_at) = row;
    Ok(CaseRecord {
        id,
        kind: kind.parse().map_err(|_| corrupt("case kind", &kind))?,
        user_ref: user.parse().map_err(|_| corrupt("user_ref", &user))?,
        job_id: job
            .map(|j| j.parse().map_err(|_| corrupt("job_id", &j)))
            .transpose()?,
        artifact_id: artifact
            .map(|a| a.parse().map_err(|_| corrupt("artifact_id", &a)))
            .transpose()?,
        cause,
        status: status
            .parse()
            .map_err(|_| corrupt("case status", &status))?,
        decision: decision
            .map(|d| d.parse().map_err(|_| corrupt("decision", &d)))
            .transpose()?,
        decided_by: by,
        decided_at: at,
        note,
        created_at,
    })
}

pub(crate) type ReportRow = (i64, String, String, String, String, String, i64, i64);

pub(crate) fn report(row: ReportRow) -> Result<ReportRecord, StoreError> {
    use super::rows::corrupt;
    let (id, job, reporter, bot, channel, reason, case_id, created_at) = row;
    Ok(ReportRecord {
        id,
        job_id: job.parse().map_err(|_| corrupt("job_id", &job))?,
        reporter: reporter
            .parse()
            .map_err(|_| corrupt("reporter", &reporter))?,
        bot_id: bot.parse().map_err(|_| corrupt("bot_id", &bot))?,
        channel: channel.parse().map_err(|_| corrupt("channel", &channel))?,
        reason,
        case_id,
        created_at,
    })
}

pub(crate) const REPORT_COLUMNS: &str =
    "id, job_id, reporter, bot_id, channel, reason, case_id, created_at";

/// Implements [`Review`] for a backend; uses the helpers of
/// `impl_sanctions!` and defines `open_case_in`, which it uses.
macro_rules! impl_review {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_api::review::{CaseKind, CaseStatus, Decision, SanctionKind};
            use tessera_core::{Millis, UserRef};

            use $crate::store::review::{
                case, report, AuditRecord, CaseFilter, CaseRecord, CaseRow, DecideOutcome,
                NewCase, NewDecision, NewReport, ReportOutcome, ReportRecord, ReportRow, Review,
                CASE_COLUMNS, REPORT_COLUMNS,
            };
            use $crate::store::rows::corrupt;
            use $crate::store::sanctions::NewSanction;
            use $crate::store::StoreError;

            type AuditRow = (i64, i64, String, String, Option<String>, Option<i64>, Option<i64>, String);

            #[async_trait::async_trait]
            impl Review for $store {
                async fn open_case(&self, c: &NewCase) -> Result<(CaseRecord, bool), StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let opened = Self::open_case_in(&mut tx, c).await?;
                    tx.commit().await?;
                    Ok(opened)
                }

                async fn report_job(&self, r: &NewReport) -> Result<ReportOutcome, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let first: Option<ReportRow> = sqlx::query_as(&format!(
                        "SELECT {REPORT_COLUMNS} FROM moderation_reports \
                         WHERE job_id = $1 AND reporter = $2"
                    ))
                    .bind(r.job_id.to_string())
                    .bind(r.reporter.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = first {
                        return Ok(ReportOutcome::Repeated(report(row)?));
                    }
                    let (case, _) = Self::open_case_in(
                        &mut tx,
                        &NewCase {
                            kind: CaseKind::Report,
                            user_ref: r.owner.clone(),
                            job_id: Some(r.job_id.clone()),
                            artifact_id: None,
                            cause: format!("reported by {}", r.reporter),
                            now: r.now,
                        },
                    )
                    .await?;
                    let inserted: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO moderation_reports \
                         (job_id, reporter, bot_id, channel, reason, case_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (job_id, reporter) DO NOTHING RETURNING id",
                    )
                    .bind(r.job_id.to_string())
                    .bind(r.reporter.to_string())
                    .bind(r.bot_id.as_str())
                    .bind(r.channel.as_str())
                    .bind(&r.reason)
                    .bind(case.id)
                    .bind(r.now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((id,)) = inserted else {
                        // A concurrent first report won: answer it.
                        drop(tx);
                        let row: ReportRow = sqlx::query_as(&format!(
                            "SELECT {REPORT_COLUMNS} FROM moderation_reports \
                             WHERE job_id = $1 AND reporter = $2"
                        ))
                        .bind(r.job_id.to_string())
                        .bind(r.reporter.to_string())
                        .fetch_one(self.writer())
                        .await?;
                        return Ok(ReportOutcome::Repeated(report(row)?));
                    };
                    tx.commit().await?;
                    Ok(ReportOutcome::Recorded(ReportRecord {
                        id,
                        job_id: r.job_id.clone(),
                        reporter: r.reporter.clone(),
                        bot_id: r.bot_id.clone(),
                        channel: r.channel,
                        reason: r.reason.clone(),
                        case_id: case.id,
                        created_at: r.now,
                    }))
                }

                async fn review_refusals(
                    &self,
                    user_ref: &UserRef,
                    threshold: u32,
                    since: Millis,
                    now: Millis,
                ) -> Result<Option<CaseRecord>, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let (count,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM moderation_refusals \
                         WHERE user_ref = $1 AND created_at > $2",
                    )
                    .bind(user_ref.to_string())
                    .bind(since)
                    .fetch_one(&mut *tx)
                    .await?;
                    if count < i64::from(threshold) {
                        return Ok(None);
                    }
                    let (case, opened) = Self::open_case_in(
                        &mut tx,
                        &NewCase {
                            kind: CaseKind::Refusals,
                            user_ref: user_ref.clone(),
                            job_id: None,
                            artifact_id: None,
                            cause: format!("{count} refused prompts in 24 hours"),
                            now,
                        },
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(opened.then_some(case))
                }

                async fn list_cases(&self, f: &CaseFilter) -> Result<Vec<CaseRecord>, StoreError> {
                    let rows: Vec<CaseRow> = sqlx::query_as(&format!(
                        "SELECT {CASE_COLUMNS} FROM moderation_cases c \
                         WHERE ($1 IS NULL OR c.kind = $1) AND ($2 IS NULL OR c.status = $2) \
                         ORDER BY CASE WHEN c.status = 'open' THEN 0 ELSE 1 END, \
                         CASE WHEN c.status = 'open' THEN c.created_at ELSE -c.decided_at END, c.id \
                         LIMIT $3"
                    ))
                    .bind(f.kind.map(|k| k.as_str()))
                    .bind(f.status.map(|s| s.as_str()))
                    .bind(i64::from(f.limit))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(case).collect()
                }

                async fn get_case(&self, id: i64) -> Result<Option<CaseRecord>, StoreError> {
                    let row: Option<CaseRow> = sqlx::query_as(&format!(
                        "SELECT {CASE_COLUMNS} FROM moderation_cases c WHERE c.id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(case).transpose()
                }

                async fn case_reports(&self, case_id: i64) -> Result<Vec<ReportRecord>, StoreError> {
                    let rows: Vec<ReportRow> = sqlx::query_as(&format!(
                        "SELECT {REPORT_COLUMNS} FROM moderation_reports \
                         WHERE case_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(case_id)
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(report).collect()
                }

                async fn decide_case(&self, d: &NewDecision) -> Result<DecideOutcome, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let row: Option<CaseRow> = sqlx::query_as(&format!(
                        "SELECT {CASE_COLUMNS} FROM moderation_cases c WHERE c.id = $1"
                    ))
                    .bind(d.case_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else { return Ok(DecideOutcome::NotFound) };
                    let mut found = case(row)?;
                    let done = sqlx::query(
                        "UPDATE moderation_cases SET status = 'decided', decision = $1, \
                         decided_by = $2, decided_at = $3, note = $4 \
                         WHERE id = $5 AND status = 'open'",
                    )
                    .bind(d.decision.as_str())
                    .bind(&d.actor)
                    .bind(d.now)
                    .bind(&d.note)
                    .bind(d.case_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok(DecideOutcome::AlreadyDecided(found));
                    }
                    found.status = CaseStatus::Decided;
                    found.decision = Some(d.decision);
                    found.decided_by = Some(d.actor.clone());
                    found.decided_at = Some(d.now);
                    found.note = d.note.clone();
                    let why = d.note.clone().unwrap_or_else(|| format!("case {}", found.id));
                    let sanction = |kind, ends_at| NewSanction {
                        user_ref: found.user_ref.clone(),
                        kind,
                        reason: format!("decision on case {} ({}): {why}", found.id, found.kind),
                        ends_at,
                        actor: d.actor.clone(),
                        case_id: Some(found.id),
                        now: d.now,
                    };
                    let (placed, lifted) = match d.decision {
                        Decision::Dismiss => (None, Vec::new()),
                        Decision::Suspend => (
                            Some(Self::place_in(&mut tx, &sanction(SanctionKind::Suspension, d.until)).await?),
                            Vec::new(),
                        ),
                        Decision::Ban => (
                            Some(Self::place_in(&mut tx, &sanction(SanctionKind::Ban, None)).await?),
                            Vec::new(),
                        ),
                        Decision::Lift => (
                            None,
                            Self::lift_in(&mut tx, &found.user_ref, &d.actor, &why, Some(found.id), d.now)
                                .await?,
                        ),
                    };
                    Self::audit_in(
                        &mut tx,
                        d.now,
                        &d.actor,
                        "decide",
                        Some(&found.user_ref),
                        Some(found.id),
                        placed.as_ref().map(|s| s.id),
                        &format!("decided case {} ({}): {}; {why}", found.id, found.kind, d.decision),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(DecideOutcome::Decided { case: found, placed, lifted })
                }

                async fn audit_log(
                    &self,
                    user_ref: Option<&UserRef>,
                    before: Option<i64>,
                    limit: u32,
                ) -> Result<Vec<AuditRecord>, StoreError> {
                    let rows: Vec<AuditRow> = sqlx::query_as(
                        "SELECT id, at, actor, action, user_ref, case_id, sanction_id, detail \
                         FROM moderation_audit \
                         WHERE ($1 IS NULL OR user_ref = $1) AND ($2 IS NULL OR id < $2) \
                         ORDER BY id DESC LIMIT $3",
                    )
                    .bind(user_ref.map(ToString::to_string))
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter()
                        .map(|(id, at, actor, action, user, case_id, sanction_id, detail)| {
                            Ok(AuditRecord {
                                id,
                                at,
                                actor,
                                action,
                                user_ref: user
                                    .map(|u| u.parse().map_err(|_| corrupt("user_ref", &u)))
                                    .transpose()?,
                                case_id,
                                sanction_id,
                                detail,
                            })
                        })
                        .collect()
                }
            }

            impl $store {
                /// Opens a case, or finds the open one of the same kind, user
                /// and job; `true` when it opened one.
                async fn open_case_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    c: &NewCase,
                ) -> Result<(CaseRecord, bool), StoreError> {
                    let inserted: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO moderation_cases \
                         (kind, user_ref, job_id, artifact_id, cause, status, created_at) \
                         VALUES ($1, $2, $3, $4, $5, 'open', $6) \
                         ON CONFLICT DO NOTHING RETURNING id",
                    )
                    .bind(c.kind.as_str())
                    .bind(c.user_ref.to_string())
                    .bind(c.job_id.as_ref().map(ToString::to_string))
                    .bind(c.artifact_id.as_ref().map(ToString::to_string))
                    .bind(&c.cause)
                    .bind(c.now)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let opened = inserted.is_some();
                    let row: CaseRow = sqlx::query_as(&format!(
                        "SELECT {CASE_COLUMNS} FROM moderation_cases c \
                         WHERE c.kind = $1 AND c.user_ref = $2 \
                         AND COALESCE(c.job_id, '') = COALESCE($3, '') AND c.status = 'open'"
                    ))
                    .bind(c.kind.as_str())
                    .bind(c.user_ref.to_string())
                    .bind(c.job_id.as_ref().map(ToString::to_string))
                    .fetch_one(&mut *conn)
                    .await?;
                    Ok((case(row)?, opened))
                }
            }

        };
    };
}

pub(crate) use impl_review;
