//! Suspensions and bans, and the audit log every moderation action writes
//! (migration `0015_moderation_people`).
//!
//! A sanction names one user but applies to the person: every user sharing
//! that user's billing user (`BILLING_USER`: a chat user linked to a
//! website account, and the account), at the time of the check, so a link
//! made after a ban carries it too. The job create path asks
//! [`Sanctions::sanction_in_force`] before anything is charged. Placing,
//! lifting and the automatic suspension of a user who hit the child-safety
//! rules each write their audit row in the same transaction, so the log
//! never misses an action that happened, nor records one that did not.

use async_trait::async_trait;

use tessera_api::review::SanctionKind;
use tessera_core::{Millis, UserRef};

use super::review::CaseRecord;
use super::StoreError;

/// A sanction to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSanction {
    pub user_ref: UserRef,
    pub kind: SanctionKind,
    pub reason: String,
    /// None: until lifted.
    pub ends_at: Option<Millis>,
    /// `admin`, `admin:<name>` or `system`.
    pub actor: String,
    /// The case it is placed for.
    pub case_id: Option<i64>,
    pub now: Millis,
}

/// A sanction as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanctionRecord {
    pub id: i64,
    pub user_ref: UserRef,
    pub kind: SanctionKind,
    pub reason: String,
    pub placed_by: String,
    pub case_id: Option<i64>,
    pub starts_at: Millis,
    pub ends_at: Option<Millis>,
    pub lifted_at: Option<Millis>,
    pub lifted_by: Option<String>,
}

impl SanctionRecord {
    /// Whether it refuses jobs at `now`.
    pub fn in_force(&self, now: Millis) -> bool {
        self.lifted_at.is_none() && self.starts_at <= now && self.ends_at.is_none_or(|e| e > now)
    }
}

/// A user who hit the child-safety rules, to suspend pending review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSafetyHit {
    pub user_ref: UserRef,
    /// The rule that refused, and the refusal's id.
    pub rule: String,
    pub refusal_id: Option<i64>,
    pub now: Millis,
}

/// Suspensions and bans.
#[async_trait]
pub trait Sanctions {
    /// Places a sanction on a user (created if never seen, on the default
    /// plan) and writes its audit row (`suspend` or `ban`).
    async fn place_sanction(&self, s: &NewSanction) -> Result<SanctionRecord, StoreError>;

    /// Lifts every sanction in force on the person (the user and everyone
    /// linked with them), with one audit row each (`lift`); answers what it
    /// lifted, none when nothing was in force.
    async fn lift_sanctions(
        &self,
        user_ref: &UserRef,
        actor: &str,
        reason: &str,
        now: Millis,
    ) -> Result<Vec<SanctionRecord>, StoreError>;

    /// The sanction that refuses the person's jobs at `now`: a ban before a
    /// suspension, then the one that ends last (no end first).
    async fn sanction_in_force(
        &self,
        user_ref: &UserRef,
        now: Millis,
    ) -> Result<Option<SanctionRecord>, StoreError>;

    /// Every sanction of the person, newest first.
    async fn sanctions_of(&self, user_ref: &UserRef) -> Result<Vec<SanctionRecord>, StoreError>;

    /// Suspends a user who hit the child-safety rules, with no end, pending
    /// review, by `system`, opens (or joins) their `child_safety` case, and
    /// writes the audit row (`auto_suspend`), in one transaction.
    async fn suspend_for_child_safety(
        &self,
        hit: &ChildSafetyHit,
    ) -> Result<(SanctionRecord, CaseRecord), StoreError>;
}

/// The columns of a sanction, for a row `s` of `moderation_sanctions`.
pub(crate) const SANCTION_COLUMNS: &str = "s.id, s.user_ref, s.kind, s.reason, s.placed_by, \
    s.case_id, s.starts_at, s.ends_at, s.lifted_at, s.lifted_by";

/// A row of [`SANCTION_COLUMNS`].
pub(crate) type SanctionRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

pub(crate) fn sanction(row: SanctionRow) -> Result<SanctionRecord, StoreError> {
    let (id, user, kind, reason, placed_by, case_id, starts_at, ends_at, lifted_at, lifted_by) =
        row;
    Ok(SanctionRecord {
        id,
        user_ref: user
            .parse()
            .map_err(|_| super::rows::corrupt("user_ref", &user))?,
        kind: kind
            .parse()
            .map_err(|_| super::rows::corrupt("sanction kind", &kind))?,
        reason,
        placed_by,
        case_id,
        starts_at,
        ends_at,
        lifted_at,
        lifted_by,
    })
}

/// Sanctions of the person of user `$1`: every sanction placed on a user
/// whose billing user is `$1`'s. Append conditions with `AND`.
pub(crate) const PERSON_SANCTIONS: &str = "FROM moderation_sanctions s \
    JOIN users su ON su.id = s.user_id \
    JOIN users u ON u.user_ref = $1 \
    WHERE COALESCE(su.account_id, su.id) = COALESCE(u.account_id, u.id)";

/// Orders sanctions in force by what refuses most: a ban, then no end, then
/// the latest end.
pub(crate) const STRONGEST_FIRST: &str = "ORDER BY CASE WHEN s.kind = 'ban' THEN 0 ELSE 1 END, \
    CASE WHEN s.ends_at IS NULL THEN 0 ELSE 1 END, s.ends_at DESC, s.id DESC";

/// Implements [`Sanctions`] for a backend, with the helpers the review
/// queue shares: `user_row_in`, `place_in`, `lift_in`, `audit_in`.
macro_rules! impl_sanctions {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_api::review::{CaseKind, SanctionKind};
            use tessera_core::{Millis, Plan, UserRef};

            use $crate::store::review::{CaseRecord, NewCase};
            use $crate::store::sanctions::{
                sanction, ChildSafetyHit, NewSanction, SanctionRecord, SanctionRow, Sanctions,
                PERSON_SANCTIONS, SANCTION_COLUMNS, STRONGEST_FIRST,
            };
            use $crate::store::StoreError;

            #[async_trait::async_trait]
            impl Sanctions for $store {
                async fn place_sanction(
                    &self,
                    s: &NewSanction,
                ) -> Result<SanctionRecord, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let placed = Self::place_in(&mut tx, s).await?;
                    tx.commit().await?;
                    Ok(placed)
                }

                async fn lift_sanctions(
                    &self,
                    user_ref: &UserRef,
                    actor: &str,
                    reason: &str,
                    now: Millis,
                ) -> Result<Vec<SanctionRecord>, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let lifted = Self::lift_in(&mut tx, user_ref, actor, reason, None, now).await?;
                    tx.commit().await?;
                    Ok(lifted)
                }

                async fn sanction_in_force(
                    &self,
                    user_ref: &UserRef,
                    now: Millis,
                ) -> Result<Option<SanctionRecord>, StoreError> {
                    let row: Option<SanctionRow> = sqlx::query_as(&format!(
                        "SELECT {SANCTION_COLUMNS} {PERSON_SANCTIONS} AND s.lifted_at IS NULL \
                         AND s.starts_at <= $2 AND (s.ends_at IS NULL OR s.ends_at > $2) \
                         {STRONGEST_FIRST} LIMIT 1"
                    ))
                    .bind(user_ref.to_string())
                    .bind(now)
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(sanction).transpose()
                }

                async fn sanctions_of(
                    &self,
                    user_ref: &UserRef,
                ) -> Result<Vec<SanctionRecord>, StoreError> {
                    let rows: Vec<SanctionRow> = sqlx::query_as(&format!(
                        "SELECT {SANCTION_COLUMNS} {PERSON_SANCTIONS} ORDER BY s.id DESC"
                    ))
                    .bind(user_ref.to_string())
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(sanction).collect()
                }

                async fn suspend_for_child_safety(
                    &self,
                    hit: &ChildSafetyHit,
                ) -> Result<(SanctionRecord, CaseRecord), StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let cause = match hit.refusal_id {
                        Some(id) => format!(
                            "refused by the built-in child-safety rule {} (refusal {id})",
                            hit.rule
                        ),
                        None => format!("refused by the built-in child-safety rule {}", hit.rule),
                    };
                    let (case, _) = Self::open_case_in(
                        &mut tx,
                        &NewCase {
                            kind: CaseKind::ChildSafety,
                            user_ref: hit.user_ref.clone(),
                            job_id: None,
                            artifact_id: None,
                            cause: cause.clone(),
                            now: hit.now,
                        },
                    )
                    .await?;
                    let placed = Self::sanction_row_in(
                        &mut tx,
                        &NewSanction {
                            user_ref: hit.user_ref.clone(),
                            kind: SanctionKind::Suspension,
                            reason: format!("automatic, pending review: {cause}"),
                            ends_at: None,
                            actor: "system".into(),
                            case_id: Some(case.id),
                            now: hit.now,
                        },
                    )
                    .await?;
                    Self::audit_in(
                        &mut tx,
                        hit.now,
                        "system",
                        "auto_suspend",
                        Some(&hit.user_ref),
                        Some(case.id),
                        Some(placed.id),
                        &format!("suspended with no end, pending review of case {}: {cause}", case.id),
                    )
                    .await?;
                    tx.commit().await?;
                    Ok((placed, case))
                }
            }

            impl $store {
                /// The user's own row id, the user created on first sight
                /// (on the default plan).
                async fn user_row_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    user: &UserRef,
                    now: Millis,
                ) -> Result<i64, StoreError> {
                    sqlx::query(
                        "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                    )
                    .bind(user.to_string())
                    .bind(user.platform().as_str())
                    .bind(user.platform_user_id())
                    .bind(Plan::DEFAULT_ID)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                    let (id,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE user_ref = $1")
                        .bind(user.to_string())
                        .fetch_one(&mut *conn)
                        .await?;
                    Ok(id)
                }

                /// Inserts a sanction, without its audit row.
                async fn sanction_row_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    s: &NewSanction,
                ) -> Result<SanctionRecord, StoreError> {
                    let user_id = Self::user_row_in(conn, &s.user_ref, s.now).await?;
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO moderation_sanctions \
                         (user_id, user_ref, kind, reason, placed_by, case_id, starts_at, ends_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    )
                    .bind(user_id)
                    .bind(s.user_ref.to_string())
                    .bind(s.kind.as_str())
                    .bind(&s.reason)
                    .bind(&s.actor)
                    .bind(s.case_id)
                    .bind(s.now)
                    .bind(s.ends_at)
                    .fetch_one(&mut *conn)
                    .await?;
                    Ok(SanctionRecord {
                        id,
                        user_ref: s.user_ref.clone(),
                        kind: s.kind,
                        reason: s.reason.clone(),
                        placed_by: s.actor.clone(),
                        case_id: s.case_id,
                        starts_at: s.now,
                        ends_at: s.ends_at,
                        lifted_at: None,
                        lifted_by: None,
                    })
                }

                /// Places a sanction and writes its audit row.
                async fn place_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    s: &NewSanction,
                ) -> Result<SanctionRecord, StoreError> {
                    let placed = Self::sanction_row_in(conn, s).await?;
                    let until = match s.ends_at {
                        Some(end) => format!("until {}", $crate::store::sanctions::when(end)),
                        None => "with no end".to_owned(),
                    };
                    let action = match s.kind {
                        SanctionKind::Suspension => "suspend",
                        SanctionKind::Ban => "ban",
                    };
                    Self::audit_in(
                        conn,
                        s.now,
                        &s.actor,
                        action,
                        Some(&s.user_ref),
                        s.case_id,
                        Some(placed.id),
                        &format!("{} {until}: {}", s.kind, s.reason),
                    )
                    .await?;
                    Ok(placed)
                }

                /// Lifts the person's sanctions in force, one audit row each.
                async fn lift_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    user_ref: &UserRef,
                    actor: &str,
                    reason: &str,
                    case_id: Option<i64>,
                    now: Millis,
                ) -> Result<Vec<SanctionRecord>, StoreError> {
                    let rows: Vec<SanctionRow> = sqlx::query_as(&format!(
                        "SELECT {SANCTION_COLUMNS} {PERSON_SANCTIONS} AND s.lifted_at IS NULL \
                         AND (s.ends_at IS NULL OR s.ends_at > $2) ORDER BY s.id"
                    ))
                    .bind(user_ref.to_string())
                    .bind(now)
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut lifted = Vec::with_capacity(rows.len());
                    for row in rows {
                        let mut s = sanction(row)?;
                        let done = sqlx::query(
                            "UPDATE moderation_sanctions SET lifted_at = $1, lifted_by = $2 \
                             WHERE id = $3 AND lifted_at IS NULL",
                        )
                        .bind(now)
                        .bind(actor)
                        .bind(s.id)
                        .execute(&mut *conn)
                        .await?;
                        if done.rows_affected() == 0 {
                            continue;
                        }
                        s.lifted_at = Some(now);
                        s.lifted_by = Some(actor.to_owned());
                        Self::audit_in(
                            conn,
                            now,
                            actor,
                            "lift",
                            Some(&s.user_ref),
                            case_id.or(s.case_id),
                            Some(s.id),
                            &format!("lifted the {} placed by {}: {reason}", s.kind, s.placed_by),
                        )
                        .await?;
                        lifted.push(s);
                    }
                    Ok(lifted)
                }

                /// Appends to the audit log.
                #[allow(clippy::too_many_arguments)]
                async fn audit_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    at: Millis,
                    actor: &str,
                    action: &str,
                    user_ref: Option<&UserRef>,
                    case_id: Option<i64>,
                    sanction_id: Option<i64>,
                    detail: &str,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO moderation_audit \
                         (at, actor, action, user_ref, case_id, sanction_id, detail) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(at)
                    .bind(actor)
                    .bind(action)
                    .bind(user_ref.map(ToString::to_string))
                    .bind(case_id)
                    .bind(sanction_id)
                    .bind(detail)
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(crate) use impl_sanctions;

/// A time for the audit log's words: `2026-12-08 14:00 UTC`.
pub(crate) fn when(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}
