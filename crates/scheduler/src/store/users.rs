//! Users, their plans and what they spent: the plans on offer, a user's
//! quota on a billing day, and putting a user on a plan. A user is created
//! on first sight, on the default plan. A bot user linked to a website
//! account is billed as the account (`BILLING_USER`): its plan applies and
//! its usage rows are charged.

use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::types::Json;

use tessera_core::{Millis, Plan, Priority, UserRef};

use super::rows::corrupt;
use super::StoreError;

/// A user's plan and what they spent on a billing day.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaRecord {
    pub user_ref: tessera_core::UserRef,
    pub plan: Plan,
    pub tokens_used: i64,
    /// For a website account, the bot id of the web key that created it
    /// (only that bot's keys may act for it); `None` for any other user.
    pub home_bot: Option<tessera_core::BotId>,
}

/// Plans, users and their quotas.
#[async_trait]
pub trait Users {
    async fn plans(&self) -> Result<Vec<Plan>, StoreError>;

    /// The user's plan and tokens used on `day`; `None` for a user never seen.
    /// A user linked to an account shows the account's plan and usage. The
    /// plan is the one that applies at `now` ([`EFFECTIVE_PLAN`]).
    async fn quota(
        &self,
        user_ref: &UserRef,
        day: NaiveDate,
        now: Millis,
    ) -> Result<Option<QuotaRecord>, StoreError>;

    /// Puts a user (created if new) on a plan; `None` if the plan does not
    /// exist. A user linked to an account changes the account's plan, which
    /// is the one that applies to it. This is the operator's manual plan:
    /// payment events never change it, and a live plan grant better than it
    /// still applies on top ([`EFFECTIVE_PLAN`]).
    async fn set_plan(
        &self,
        user_ref: &UserRef,
        plan_id: &str,
        day: NaiveDate,
        now: Millis,
    ) -> Result<Option<QuotaRecord>, StoreError>;

    /// Creates the user on the default plan if never seen (a payment channel
    /// meeting a user first, so that their payment applies); does nothing
    /// for a known user.
    async fn ensure_user(&self, user_ref: &UserRef, now: Millis) -> Result<(), StoreError>;
}

pub(crate) const PLAN_COLUMNS: &str =
    "p.id, p.name, p.daily_tokens, p.priority, p.max_resolution, p.allowed_models, p.price_cents";

/// The id of a user's billing user, for a row `u` of `users`: the account
/// it is linked to, or itself. Its plan applies and its `usage_daily` rows
/// are charged; this expression is the one place that rule is written.
pub(crate) const BILLING_USER: &str = "COALESCE(u.account_id, u.id)";

/// The id of the plan that applies at time `${now}` to a billing user, for a
/// row `b` of `users`: the best (by priority) of the user's own plan (the
/// default or the operator's manual plan, `b.plan_id`) and the plans of its
/// live grants (active, paid until after now; see `store::payments`). A
/// grant counts only while it is paid for, so a lapsed subscription stops
/// applying at its end with nobody acting, and no provider event can lower
/// what an operator set. Replace `{now}` with the parameter's number.
pub(crate) const EFFECTIVE_PLAN: &str = "COALESCE((SELECT g.plan_id FROM plan_grants g \
    JOIN plans gp ON gp.id = g.plan_id \
    WHERE g.user_id = b.id AND g.state = 'active' AND g.paid_until > ${now} \
    AND gp.priority > (SELECT bp.priority FROM plans bp WHERE bp.id = b.plan_id) \
    ORDER BY gp.priority DESC, g.paid_until DESC, g.provider, g.reference LIMIT 1), b.plan_id)";

/// [`EFFECTIVE_PLAN`] with its time as parameter `$n`.
pub(crate) fn effective_plan(n: usize) -> String {
    EFFECTIVE_PLAN.replace("{now}", &n.to_string())
}

#[derive(sqlx::FromRow)]
pub(crate) struct PlanRow {
    pub(crate) id: String,
    name: String,
    daily_tokens: Option<i64>,
    priority: i32,
    max_resolution: i32,
    allowed_models: Json<Vec<String>>,
    price_cents: i64,
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;

    fn try_from(r: PlanRow) -> Result<Self, StoreError> {
        Ok(Plan {
            priority: Priority(
                u8::try_from(r.priority).map_err(|_| corrupt("plan priority", &r.id))?,
            ),
            max_resolution: u32::try_from(r.max_resolution)
                .map_err(|_| corrupt("plan max_resolution", &r.id))?,
            id: r.id,
            name: r.name,
            daily_tokens: r.daily_tokens,
            allowed_models: r.allowed_models.0,
            price_cents: r.price_cents,
        })
    }
}

/// A user joined with their billing user's plan.
#[derive(sqlx::FromRow)]
pub(crate) struct UserPlanRow {
    /// The billing user's id.
    pub user_id: i64,
    /// The user's own `home_bot` (set for website accounts only).
    pub home_bot: Option<String>,
    #[sqlx(flatten)]
    pub plan: PlanRow,
}

/// Implements [`Users`] for a backend with `writer()` and `reader()` pools,
/// with the helpers other rooms find a user's plan and usage with:
/// `find_user_plan`, `user_plan` (which creates the user on first sight),
/// `used_on` and `quota_on`.
macro_rules! impl_users {
    ($store:ty, $db:ty) => {
        const _: () = {
            use chrono::NaiveDate;
            use tessera_core::{Millis, Plan, UserRef};

            use $crate::store::rows::corrupt;
            use $crate::store::users::{effective_plan, PlanRow, UserPlanRow, BILLING_USER, PLAN_COLUMNS};
            use $crate::store::{QuotaRecord, StoreError, Users};

            #[async_trait::async_trait]
            impl Users for $store {
                async fn plans(&self) -> Result<Vec<Plan>, StoreError> {
                    let rows: Vec<PlanRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM plans p ORDER BY p.priority, p.id",
                        PLAN_COLUMNS
                    ))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn quota(
                    &self,
                    user_ref: &UserRef,
                    day: NaiveDate,
                    now: Millis,
                ) -> Result<Option<QuotaRecord>, StoreError> {
                    let mut conn = self.reader().acquire().await?;
                    Self::quota_on(&mut conn, user_ref, day, now).await
                }

                async fn set_plan(
                    &self,
                    user_ref: &UserRef,
                    plan_id: &str,
                    day: NaiveDate,
                    now: Millis,
                ) -> Result<Option<QuotaRecord>, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM plans WHERE id = $1")
                        .bind(plan_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if exists.is_none() {
                        return Ok(None);
                    }
                    sqlx::query(
                        "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                    )
                    .bind(user_ref.to_string())
                    .bind(user_ref.platform().as_str())
                    .bind(user_ref.platform_user_id())
                    .bind(plan_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    // The plan that applies to a linked user is its account's.
                    sqlx::query(&format!(
                        "UPDATE users SET plan_id = $1 WHERE id = \
                         (SELECT {} FROM users u WHERE u.user_ref = $2)",
                        BILLING_USER
                    ))
                    .bind(plan_id)
                    .bind(user_ref.to_string())
                    .execute(&mut *tx)
                    .await?;
                    let quota = Self::quota_on(&mut tx, user_ref, day, now).await?;
                    tx.commit().await?;
                    Ok(quota)
                }

                async fn ensure_user(&self, user_ref: &UserRef, now: Millis) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                    )
                    .bind(user_ref.to_string())
                    .bind(user_ref.platform().as_str())
                    .bind(user_ref.platform_user_id())
                    .bind(Plan::DEFAULT_ID)
                    .bind(now)
                    .execute(self.writer())
                    .await?;
                    Ok(())
                }
            }

            impl $store {
                /// The user's billing user (the account it is linked to, or
                /// itself) and that user's plan, if the user exists: what a job
                /// of the user is charged to and validated against; and the
                /// user's home bot, if it is a website account. The plan is
                /// the one that applies at `now` ([`EFFECTIVE_PLAN`]).
                async fn find_user_plan(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    user_ref: &str,
                    now: Millis,
                ) -> Result<Option<UserPlanRow>, StoreError> {
                    Ok(sqlx::query_as(&format!(
                        "SELECT b.id AS user_id, u.home_bot, {} FROM users u \
                         JOIN users b ON b.id = {} \
                         JOIN plans p ON p.id = {} \
                         WHERE u.user_ref = $1",
                        PLAN_COLUMNS,
                        BILLING_USER,
                        effective_plan(2)
                    ))
                    .bind(user_ref)
                    .bind(now)
                    .fetch_optional(&mut *conn)
                    .await?)
                }

                /// The user (created on first sight, on the default plan): their
                /// billing user's id and plan, and their home bot.
                async fn user_plan(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    user: &UserRef,
                    user_ref: &str,
                    now: Millis,
                ) -> Result<(i64, Plan, Option<String>), StoreError> {
                    let row = match Self::find_user_plan(conn, user_ref, now).await? {
                        Some(row) => row,
                        None => {
                            sqlx::query(
                                "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                            )
                            .bind(user_ref)
                            .bind(user.platform().as_str())
                            .bind(user.platform_user_id())
                            .bind(Plan::DEFAULT_ID)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?;
                            Self::find_user_plan(conn, user_ref, now).await?.ok_or_else(|| {
                                StoreError::Corrupt(format!("user {user_ref} vanished"))
                            })?
                        }
                    };
                    Ok((row.user_id, row.plan.try_into()?, row.home_bot))
                }

                async fn used_on(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    user_id: i64,
                    day: NaiveDate,
                ) -> Result<i64, StoreError> {
                    let row: Option<(i64,)> = sqlx::query_as(
                        "SELECT tokens_used FROM usage_daily WHERE user_id = $1 AND day = $2",
                    )
                    .bind(user_id)
                    .bind(day)
                    .fetch_optional(&mut *conn)
                    .await?;
                    Ok(row.map_or(0, |(t,)| t))
                }

                async fn quota_on(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    user_ref: &UserRef,
                    day: NaiveDate,
                    now: Millis,
                ) -> Result<Option<QuotaRecord>, StoreError> {
                    let found = Self::find_user_plan(conn, &user_ref.to_string(), now).await?;
                    let Some(row) = found else { return Ok(None) };
                    let tokens_used = Self::used_on(conn, row.user_id, day).await?;
                    Ok(Some(QuotaRecord {
                        user_ref: user_ref.clone(),
                        plan: row.plan.try_into()?,
                        tokens_used,
                        home_bot: row
                            .home_bot
                            .map(|b| b.parse().map_err(|_| corrupt("home_bot", &b)))
                            .transpose()?,
                    }))
                }
            }
        };
    };
}

pub(crate) use impl_users;
