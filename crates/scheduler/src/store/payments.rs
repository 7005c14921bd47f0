//! The payments ledger: every payment event of every provider, recorded once,
//! and the plan grants those events add up to. Providers redeliver webhooks
//! and deliver them out of order, so applying an event is one transaction
//! keyed by (provider, event id) that changes nothing the second time, and
//! what a grant holds depends on the set of events, not on their order: the
//! newest event (by the provider's time) sets the plan, the paid period only
//! grows, and a refund, chargeback or cancel ends the grant for good.
//!
//! A grant never changes `users.plan_id` (the operator's manual plan): the
//! plan that applies is computed on every read as the best of the manual plan
//! and the live grants ([`EFFECTIVE_PLAN`](super::users::EFFECTIVE_PLAN)), so a
//! lapsed grant stops counting at its `paid_until` with no sweep, and a
//! provider's cancel can never take away what an operator gave.

use async_trait::async_trait;

use tessera_core::{Millis, PaymentKind, PaymentProvider, UserRef};

use super::rows::corrupt;
use super::StoreError;

/// A payment event as a provider (or an operator) reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPaymentEvent {
    pub provider: PaymentProvider,
    /// The provider's id of the event, unique per provider: a second event
    /// with the same id is a redelivery.
    pub event_id: String,
    pub kind: PaymentKind,
    /// The user the provider names; `None` when it names nobody we know how
    /// to read. The event applies to that user's billing user.
    pub user_ref: Option<UserRef>,
    /// Required for events that give a plan; optional on others.
    pub plan_id: Option<String>,
    /// Money moved, in the currency's minor units, never negative (a refund
    /// carries what went back).
    pub amount_minor: i64,
    pub currency: Option<String>,
    /// The paid period (start, end); required for events that give a plan.
    pub period: Option<(Millis, Millis)>,
    /// The provider's subscription or charge: the grant the event changes.
    /// Required, except on an operator's revoke (which ends every grant the
    /// operators gave the user).
    pub reference: Option<String>,
    /// The provider's time of the event: what orders events on one grant.
    pub occurred_at: Millis,
}

impl NewPaymentEvent {
    /// Why the event cannot be recorded, if it cannot: a caller's mistake,
    /// not a provider's (the ledger keeps every well-formed event).
    pub fn check(&self) -> Result<(), String> {
        if self.event_id.is_empty() || self.event_id.len() > 255 {
            return Err("event_id must be 1-255 characters".into());
        }
        if self.amount_minor < 0 {
            return Err("amount_minor must not be negative".into());
        }
        if self.kind.grants() {
            if self.plan_id.is_none() {
                return Err(format!("a {} names the plan it pays for", self.kind));
            }
            match self.period {
                Some((start, end)) if end > start => {}
                Some(_) => return Err("the period must end after it starts".into()),
                None => return Err(format!("a {} names the period it pays for", self.kind)),
            }
        }
        let revoke_all = self.kind == PaymentKind::AdminRevoke;
        if self.reference.as_deref().is_none_or(str::is_empty) && !revoke_all {
            return Err("the event names no subscription or charge (reference)".into());
        }
        if matches!(
            self.kind,
            PaymentKind::AdminGrant | PaymentKind::AdminRevoke
        ) != (self.provider == PaymentProvider::Admin)
        {
            return Err(
                "admin_grant and admin_revoke are the admin provider's, and only its".into(),
            );
        }
        Ok(())
    }
}

/// What recording an event did, as the ledger keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The event changed a grant.
    Applied,
    /// The event was recorded and changed nothing: older than what the grant
    /// holds, or for a grant already ended.
    Unchanged,
    /// No such user: the event is kept and listed, never applied.
    UnknownUser,
    /// The event names a plan that does not exist: kept, not applied.
    UnknownPlan,
}

impl PaymentOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentOutcome::Applied => "applied",
            PaymentOutcome::Unchanged => "unchanged",
            PaymentOutcome::UnknownUser => "unknown_user",
            PaymentOutcome::UnknownPlan => "unknown_plan",
        }
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "applied" => PaymentOutcome::Applied,
            "unchanged" => PaymentOutcome::Unchanged,
            "unknown_user" => PaymentOutcome::UnknownUser,
            "unknown_plan" => PaymentOutcome::UnknownPlan,
            other => return Err(corrupt("payment outcome", other)),
        })
    }
}

/// A recorded payment event.
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentEventRecord {
    /// The ledger's own id, increasing: the listing's order and cursor.
    pub id: i64,
    pub provider: PaymentProvider,
    pub event_id: String,
    pub kind: PaymentKind,
    /// The user the event named.
    pub user_ref: Option<UserRef>,
    /// That user's billing user, whose plan the event changed; `None` for an
    /// unknown user.
    pub billing_user: Option<UserRef>,
    /// The event's plan, or for an event that names none, its grant's.
    pub plan_id: Option<String>,
    pub amount_minor: i64,
    pub currency: Option<String>,
    pub period: Option<(Millis, Millis)>,
    pub reference: Option<String>,
    pub occurred_at: Millis,
    pub outcome: PaymentOutcome,
    /// What applying it did, in words.
    pub effect: String,
    pub received_at: Millis,
}

/// What [`Payments::apply_payment_event`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyOutcome {
    /// The event is now in the ledger (whether it changed a grant says its
    /// `outcome`).
    Recorded(PaymentEventRecord),
    /// The provider and event id were recorded before: nothing changed; the
    /// event as first recorded.
    AlreadyRecorded(PaymentEventRecord),
    /// The event is malformed ([`NewPaymentEvent::check`]): nothing recorded.
    Invalid(String),
}

/// Filters of the ledger's listing, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PaymentFilter {
    /// Events naming this user or charged to their billing user.
    pub user_ref: Option<UserRef>,
    pub provider: Option<PaymentProvider>,
    /// Only events for users nobody knows.
    pub unknown_user: bool,
    /// Only events recorded before this ledger id (the page cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// A grant: what one subscription or charge gives its billing user.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantRecord {
    pub provider: PaymentProvider,
    pub reference: String,
    pub user_ref: UserRef,
    pub plan_id: Option<String>,
    pub paid_until: Millis,
    /// `false` once refunded, charged back, cancelled or revoked.
    pub active: bool,
    /// The provider's time of the newest payment that set the plan (0 when
    /// none came yet).
    pub changed_at: Millis,
    /// The time of the earliest event that ended it.
    pub ended_at: Option<Millis>,
}

/// Money received, net of refunds and chargebacks, per provider, plan and
/// currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevenueRow {
    pub provider: String,
    /// Empty for events that name no plan.
    pub plan_id: String,
    /// Empty for events that name no currency.
    pub currency: String,
    pub net_minor: i64,
}

/// The ledger.
#[async_trait]
pub trait Payments {
    /// Records a payment event and applies it to its grant, in one
    /// transaction: once per (provider, event id), whatever the order.
    async fn apply_payment_event(
        &self,
        event: &NewPaymentEvent,
        now: Millis,
    ) -> Result<ApplyOutcome, StoreError>;

    /// The ledger, newest first.
    async fn payment_events(
        &self,
        filter: &PaymentFilter,
    ) -> Result<Vec<PaymentEventRecord>, StoreError>;

    /// The grants of the user's billing user, live and ended.
    async fn plan_grants(&self, user_ref: &UserRef) -> Result<Vec<GrantRecord>, StoreError>;

    /// Money received since `since` (the provider's time), net.
    async fn revenue_since(&self, since: Millis) -> Result<Vec<RevenueRow>, StoreError>;
}

pub(crate) const EVENT_SELECT: &str = "SELECT e.id, e.provider, e.event_id, e.kind, e.user_ref, \
    b.user_ref AS billing_user, e.plan_id, e.amount_minor, e.currency, e.period_start, \
    e.period_end, e.reference, e.occurred_at, e.outcome, e.effect, e.received_at \
    FROM payment_events e LEFT JOIN users b ON b.id = e.user_id";

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    provider: String,
    event_id: String,
    kind: String,
    user_ref: Option<String>,
    billing_user: Option<String>,
    plan_id: Option<String>,
    amount_minor: i64,
    currency: Option<String>,
    period_start: Option<i64>,
    period_end: Option<i64>,
    reference: Option<String>,
    occurred_at: i64,
    outcome: String,
    effect: String,
    received_at: i64,
}

fn user(s: Option<String>) -> Result<Option<UserRef>, StoreError> {
    s.map(|s| s.parse().map_err(|_| corrupt("user_ref", &s)))
        .transpose()
}

impl TryFrom<EventRow> for PaymentEventRecord {
    type Error = StoreError;

    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(PaymentEventRecord {
            id: r.id,
            provider: r
                .provider
                .parse()
                .map_err(|_| corrupt("payment provider", &r.provider))?,
            event_id: r.event_id,
            kind: r
                .kind
                .parse()
                .map_err(|_| corrupt("payment kind", &r.kind))?,
            user_ref: user(r.user_ref)?,
            billing_user: user(r.billing_user)?,
            plan_id: r.plan_id,
            amount_minor: r.amount_minor,
            currency: r.currency,
            period: r.period_start.zip(r.period_end),
            reference: r.reference,
            occurred_at: r.occurred_at,
            outcome: PaymentOutcome::parse(&r.outcome)?,
            effect: r.effect,
            received_at: r.received_at,
        })
    }
}

/// A grant row joined with its user's `user_ref`.
pub(crate) type GrantRow = (
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    Option<i64>,
);

pub(crate) fn grant_from(r: GrantRow) -> Result<GrantRecord, StoreError> {
    let (provider, reference, user_ref, plan_id, paid_until, state, changed_at, ended_at) = r;
    Ok(GrantRecord {
        provider: provider
            .parse()
            .map_err(|_| corrupt("payment provider", &provider))?,
        reference,
        user_ref: user_ref
            .parse()
            .map_err(|_| corrupt("user_ref", &user_ref))?,
        plan_id,
        paid_until,
        active: state == "active",
        changed_at,
        ended_at,
    })
}

/// A time as a date, for the words of an effect.
pub(crate) fn day_of(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// Implements [`Payments`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_payments {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_core::{Millis, PaymentKind, UserRef};

            use $crate::store::payments::{
                day_of, grant_from, EventRow, GrantRow, EVENT_SELECT,
            };
            use $crate::store::{
                ApplyOutcome, GrantRecord, NewPaymentEvent, PaymentEventRecord, PaymentFilter,
                PaymentOutcome, Payments, RevenueRow, StoreError,
            };

            #[async_trait::async_trait]
            impl Payments for $store {
                async fn apply_payment_event(
                    &self,
                    event: &NewPaymentEvent,
                    now: Millis,
                ) -> Result<ApplyOutcome, StoreError> {
                    if let Err(why) = event.check() {
                        return Ok(ApplyOutcome::Invalid(why));
                    }
                    let mut tx = self.writer().begin().await?;
                    // The row first: of two deliveries racing, the second
                    // waits on the unique key and then inserts nothing.
                    let (start, end) = event.period.unzip();
                    let inserted: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO payment_events (provider, event_id, kind, user_ref, plan_id, \
                         amount_minor, currency, period_start, period_end, reference, occurred_at, \
                         outcome, effect, received_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'unchanged', '', $12) \
                         ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
                    )
                    .bind(event.provider.as_str())
                    .bind(&event.event_id)
                    .bind(event.kind.as_str())
                    .bind(event.user_ref.as_ref().map(ToString::to_string))
                    .bind(&event.plan_id)
                    .bind(event.amount_minor)
                    .bind(&event.currency)
                    .bind(start)
                    .bind(end)
                    .bind(&event.reference)
                    .bind(event.occurred_at)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((id,)) = inserted else {
                        tx.rollback().await?;
                        let mut conn = self.reader().acquire().await?;
                        let first = Self::payment_event_on(&mut conn, "e.provider = $1 AND e.event_id = $2", event.provider.as_str(), &event.event_id).await?;
                        return match first {
                            Some(first) => Ok(ApplyOutcome::AlreadyRecorded(first)),
                            None => Err(StoreError::Corrupt(format!(
                                "payment event {} {} vanished", event.provider, event.event_id
                            ))),
                        };
                    };
                    let (user_id, plan_id, outcome, effect) =
                        Self::apply_in(&mut tx, event, now).await?;
                    sqlx::query(
                        "UPDATE payment_events SET user_id = $1, plan_id = $2, outcome = $3, effect = $4 \
                         WHERE id = $5",
                    )
                    .bind(user_id)
                    .bind(plan_id)
                    .bind(outcome.as_str())
                    .bind(effect)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    let record = Self::payment_event_on(&mut tx, "e.provider = $1 AND e.event_id = $2", event.provider.as_str(), &event.event_id).await?;
                    tx.commit().await?;
                    record.map(ApplyOutcome::Recorded).ok_or_else(|| {
                        StoreError::Corrupt(format!("payment event {id} vanished"))
                    })
                }

                async fn payment_events(
                    &self,
                    f: &PaymentFilter,
                ) -> Result<Vec<PaymentEventRecord>, StoreError> {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(EVENT_SELECT);
                    qb.push(" WHERE 1 = 1");
                    if let Some(user_ref) = &f.user_ref {
                        qb.push(" AND (e.user_ref = ")
                            .push_bind(user_ref.to_string())
                            .push(" OR e.user_id = (SELECT COALESCE(u.account_id, u.id) FROM users u WHERE u.user_ref = ")
                            .push_bind(user_ref.to_string())
                            .push("))");
                    }
                    if let Some(provider) = f.provider {
                        qb.push(" AND e.provider = ").push_bind(provider.as_str());
                    }
                    if f.unknown_user {
                        qb.push(" AND e.user_id IS NULL");
                    }
                    if let Some(before) = f.before {
                        qb.push(" AND e.id < ").push_bind(before);
                    }
                    qb.push(" ORDER BY e.id DESC LIMIT ")
                        .push_bind(i64::from(f.limit));
                    let rows: Vec<EventRow> =
                        qb.build_query_as().fetch_all(self.reader()).await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn plan_grants(
                    &self,
                    user_ref: &UserRef,
                ) -> Result<Vec<GrantRecord>, StoreError> {
                    let rows: Vec<GrantRow> = sqlx::query_as(
                        "SELECT g.provider, g.reference, b.user_ref, g.plan_id, g.paid_until, \
                         g.state, g.changed_at, g.ended_at FROM plan_grants g JOIN users b ON b.id = g.user_id \
                         WHERE g.user_id = (SELECT COALESCE(u.account_id, u.id) FROM users u \
                         WHERE u.user_ref = $1) ORDER BY g.changed_at, g.provider, g.reference",
                    )
                    .bind(user_ref.to_string())
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(grant_from).collect()
                }

                async fn revenue_since(&self, since: Millis) -> Result<Vec<RevenueRow>, StoreError> {
                    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                        "SELECT provider, COALESCE(plan_id, ''), COALESCE(currency, ''), \
                         CAST(SUM(CASE WHEN kind IN ('refund', 'chargeback') \
                         THEN -amount_minor ELSE amount_minor END) AS BIGINT) \
                         FROM payment_events WHERE occurred_at >= $1 \
                         GROUP BY provider, COALESCE(plan_id, ''), COALESCE(currency, '') \
                         ORDER BY 1, 2, 3",
                    )
                    .bind(since)
                    .fetch_all(self.reader())
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(provider, plan_id, currency, net_minor)| RevenueRow {
                            provider,
                            plan_id,
                            currency,
                            net_minor,
                        })
                        .collect())
                }
            }

            impl $store {
                async fn payment_event_on(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    condition: &'static str,
                    a: &str,
                    b: &str,
                ) -> Result<Option<PaymentEventRecord>, StoreError> {
                    let row: Option<EventRow> =
                        sqlx::query_as(&format!("{EVENT_SELECT} WHERE {condition}"))
                            .bind(a)
                            .bind(b)
                            .fetch_optional(&mut *conn)
                            .await?;
                    row.map(TryInto::try_into).transpose()
                }

                /// Applies a newly recorded event to its grant: the billing
                /// user's id, the plan to record (the event's, or its grant's),
                /// the outcome and its words.
                async fn apply_in(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    event: &NewPaymentEvent,
                    now: Millis,
                ) -> Result<(Option<i64>, Option<String>, PaymentOutcome, String), StoreError> {
                    let Some(user_ref) = &event.user_ref else {
                        return Ok((None, event.plan_id.clone(), PaymentOutcome::UnknownUser,
                            "kept, not applied: the event names no user".into()));
                    };
                    if event.provider == tessera_core::PaymentProvider::Admin {
                        // An operator names the user: no guess, created if new.
                        sqlx::query(
                            "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                        )
                        .bind(user_ref.to_string())
                        .bind(user_ref.platform().as_str())
                        .bind(user_ref.platform_user_id())
                        .bind(tessera_core::Plan::DEFAULT_ID)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                    }
                    let billing: Option<(i64, String)> = sqlx::query_as(
                        "SELECT b.id, b.user_ref FROM users u JOIN users b ON b.id = COALESCE(u.account_id, u.id) \
                         WHERE u.user_ref = $1",
                    )
                    .bind(user_ref.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some((user_id, billing_ref)) = billing else {
                        return Ok((None, event.plan_id.clone(), PaymentOutcome::UnknownUser,
                            format!("kept, not applied: no user {user_ref} is known")));
                    };
                    if let Some(plan_id) = &event.plan_id {
                        let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM plans WHERE id = $1")
                            .bind(plan_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                        if exists.is_none() {
                            return Ok((Some(user_id), event.plan_id.clone(), PaymentOutcome::UnknownPlan,
                                format!("kept, not applied: no plan {plan_id:?}")));
                        }
                    }
                    let (outcome, plan_id, words) = match (event.kind, &event.reference) {
                        (PaymentKind::AdminRevoke, None) => {
                            let ended: Vec<(String, Option<String>)> = sqlx::query_as(
                                "UPDATE plan_grants SET state = 'ended', ended_at = $1 \
                                 WHERE user_id = $2 AND provider = 'admin' AND state = 'active' \
                                 RETURNING reference, plan_id",
                            )
                            .bind(event.occurred_at)
                            .bind(user_id)
                            .fetch_all(&mut *conn)
                            .await?;
                            if ended.is_empty() {
                                (PaymentOutcome::Unchanged, None, "no plan given by an operator to end".to_owned())
                            } else {
                                let plans: Vec<String> = ended.iter()
                                    .map(|(r, p)| format!("{} ({r})", p.as_deref().unwrap_or("no plan")))
                                    .collect();
                                (PaymentOutcome::Applied, ended[0].1.clone(),
                                    format!("ended what operators gave: {}", plans.join(", ")))
                            }
                        }
                        (kind, reference) => {
                            let reference = reference.as_deref().unwrap_or_default();
                            Self::apply_to_grant(conn, event, kind, reference, user_id).await?
                        }
                    };
                    let applies = Self::find_user_plan(conn, &billing_ref, now).await?
                        .map_or_else(|| "?".to_owned(), |r| r.plan.id);
                    Ok((Some(user_id), plan_id.or_else(|| event.plan_id.clone()), outcome,
                        format!("{words}; {billing_ref} is now on {applies}")))
                }

                /// Applies a grant's event (every kind but a revoke of all):
                /// the outcome, the grant's plan and the words.
                async fn apply_to_grant(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    event: &NewPaymentEvent,
                    kind: PaymentKind,
                    reference: &str,
                    user_id: i64,
                ) -> Result<(PaymentOutcome, Option<String>, String), StoreError> {
                    let provider = event.provider.as_str();
                    // Events of one grant take turns (a no-op on SQLite's
                    // single writer).
                    Self::lock_grant(&mut *conn, provider, reference).await?;
                    let grant: Option<(i64, Option<String>, i64, String, i64)> = sqlx::query_as(
                        "SELECT user_id, plan_id, paid_until, state, changed_at FROM plan_grants \
                         WHERE provider = $1 AND reference = $2",
                    )
                    .bind(provider)
                    .bind(reference)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let t = event.occurred_at;
                    let Some((owner, plan, paid_until, state, changed_at)) = grant else {
                        // The grant's first event (in the order they came).
                        // One that ends it first leaves no payment seen yet
                        // (changed_at 0, paid until 0), for the payment that
                        // comes after to fill in as it would have before.
                        let (plan, until, changed, state, ended_at, words) = if kind.grants() {
                            let until = event.period.map_or(t, |(_, end)| end);
                            let plan = event.plan_id.clone();
                            let words = format!("{} until {}", plan.as_deref().unwrap_or_default(), day_of(until));
                            (plan, until, t, "active", None, words)
                        } else {
                            (event.plan_id.clone(), 0, 0, "ended", Some(t),
                                format!("{reference} ended by a {kind} before anything it paid for arrived; \
                                         later payments for it give nothing"))
                        };
                        sqlx::query(
                            "INSERT INTO plan_grants (provider, reference, user_id, plan_id, paid_until, \
                             state, changed_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        )
                        .bind(provider)
                        .bind(reference)
                        .bind(user_id)
                        .bind(&plan)
                        .bind(until)
                        .bind(state)
                        .bind(changed)
                        .bind(ended_at)
                        .execute(&mut *conn)
                        .await?;
                        return Ok((PaymentOutcome::Applied, plan, words));
                    };
                    if owner != user_id {
                        return Ok((PaymentOutcome::Unchanged, plan,
                            format!("not applied: {reference} belongs to another user")));
                    }
                    let active = state == "active";
                    if kind.ends() {
                        // The earliest end is kept, whatever order ends come in.
                        sqlx::query(
                            "UPDATE plan_grants SET state = 'ended', \
                             ended_at = CASE WHEN ended_at IS NULL OR ended_at > $1 THEN $1 ELSE ended_at END \
                             WHERE provider = $2 AND reference = $3",
                        )
                        .bind(t)
                        .bind(provider)
                        .bind(reference)
                        .execute(&mut *conn)
                        .await?;
                        if !active {
                            return Ok((PaymentOutcome::Unchanged, plan,
                                format!("unchanged: {reference} had ended already")));
                        }
                        return Ok((PaymentOutcome::Applied, plan.clone(),
                            format!("ended {} (paid until {}) by a {kind}",
                                plan.as_deref().unwrap_or_default(), day_of(paid_until))));
                    }
                    // The paid period only grows; the newest payment sets the
                    // plan (on a tie of times, the better plan), whatever
                    // order they come in. An ended grant takes them too (so
                    // it reads the same in any order) and still gives nothing.
                    let until = event.period.map_or(paid_until, |(_, end)| end.max(paid_until));
                    let new_plan = if t > changed_at || plan.is_none() {
                        event.plan_id.clone()
                    } else if t == changed_at {
                        Self::better_plan(conn, plan.as_deref(), event.plan_id.as_deref()).await?
                    } else {
                        plan.clone()
                    };
                    let new_changed = t.max(changed_at);
                    let same = until == paid_until && new_plan == plan && new_changed == changed_at;
                    if !same {
                        sqlx::query(
                            "UPDATE plan_grants SET plan_id = $1, paid_until = $2, changed_at = $3 \
                             WHERE provider = $4 AND reference = $5",
                        )
                        .bind(&new_plan)
                        .bind(until)
                        .bind(new_changed)
                        .bind(provider)
                        .bind(reference)
                        .execute(&mut *conn)
                        .await?;
                    }
                    if !active {
                        return Ok((PaymentOutcome::Unchanged, new_plan,
                            format!("recorded, gives nothing: {reference} has ended")));
                    }
                    if same {
                        return Ok((PaymentOutcome::Unchanged, plan,
                            "unchanged: older than what the grant holds".to_owned()));
                    }
                    Ok((PaymentOutcome::Applied, new_plan.clone(), format!("{} until {}",
                        new_plan.as_deref().unwrap_or_default(), day_of(until))))
                }

                /// Of two plans, the one of higher priority (then the
                /// greater id, so the choice is the same whichever comes first).
                async fn better_plan(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    a: Option<&str>,
                    b: Option<&str>,
                ) -> Result<Option<String>, StoreError> {
                    let best: Option<(String,)> = sqlx::query_as(
                        "SELECT id FROM plans WHERE id = $1 OR id = $2 ORDER BY priority DESC, id DESC LIMIT 1",
                    )
                    .bind(a)
                    .bind(b)
                    .fetch_optional(&mut *conn)
                    .await?;
                    Ok(best.map(|(id,)| id).or_else(|| a.or(b).map(str::to_owned)))
                }
            }
        };
    };
}

pub(crate) use impl_payments;
