//! Website accounts and the bot users linked to them: an account is a `web:`
//! user with an email and a password hash, owned by the web bot that created
//! it; a bot user links to one with a one-time code, in the transaction that
//! deletes the code.

use async_trait::async_trait;

use tessera_core::{Millis, UserRef};

use super::rows::corrupt;

use super::StoreError;

/// A website account: a `web:` user with an email and a password, and the
/// bot users linked to it, who are billed as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub user_id: i64,
    pub user_ref: tessera_core::UserRef,
    /// The bot id of the web key that created the account: each website is
    /// its own trust domain, and only its keys may use the account.
    pub home_bot: tessera_core::BotId,
    pub email: String,
    /// `platform:id` of every bot user linked to the account, sorted.
    pub linked: Vec<tessera_core::UserRef>,
    pub created_at: Millis,
    /// When the owner confirmed being 18 or older, if they have.
    pub age_confirmed_at: Option<Millis>,
}

/// What redeeming a link code did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// The code's bot user is now linked to the account (moved, if it was
    /// linked to another); the account as it now is.
    Linked(AccountRecord),
    /// No such code: never issued, already used, replaced or expired.
    InvalidCode,
    /// The user redeeming is not an account of this bot; the code was left
    /// unused.
    NoAccount,
}

/// Accounts and link codes.
#[async_trait]
pub trait Accounts {
    /// Creates the account `user_ref` (a `web:` user never seen) of the web
    /// bot `home_bot` with an email (already normalised) and a password hash,
    /// on the default plan. `None` when the email belongs to another account
    /// (of any bot: emails are unique).
    async fn create_account(
        &self,
        user_ref: &UserRef,
        home_bot: &str,
        email: &str,
        password_hash: &str,
        now: Millis,
    ) -> Result<Option<AccountRecord>, StoreError>;

    /// The account with this email, and its password hash (a PHC string).
    async fn account_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(AccountRecord, String)>, StoreError>;

    /// The account `user_ref`; `None` when that user has no account.
    async fn get_account(&self, user_ref: &UserRef) -> Result<Option<AccountRecord>, StoreError>;

    /// Gives a bot user (created on first sight, on the default plan) a link
    /// code, replacing any earlier one, and forgets expired codes. `false`
    /// when another live code has this hash (the caller draws a new code).
    async fn put_link_code(
        &self,
        user_ref: &UserRef,
        code_hash: &[u8],
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Links the bot user who asked for the code to the account `account` of
    /// the web bot `home_bot`, and deletes the code, in one transaction: a
    /// code links once. A code is live while `now` is before its expiry. An
    /// account of another bot is no account ([`RedeemOutcome::NoAccount`]).
    async fn redeem_link_code(
        &self,
        account: &UserRef,
        home_bot: &str,
        code_hash: &[u8],
        now: Millis,
    ) -> Result<RedeemOutcome, StoreError>;
}

/// Selects an account (`a`, a user with an email and a password) with one row
/// per linked user (`l`, none: one row with NULL): one statement, so the
/// account and its links are read from one snapshot. Append the condition.
pub(crate) const ACCOUNT_SELECT: &str = "SELECT a.id, a.user_ref, a.home_bot, a.email, \
    a.created_at, a.password_hash, l.user_ref, a.age_confirmed_at FROM users a \
    LEFT JOIN users l ON l.account_id = a.id \
    WHERE a.email IS NOT NULL AND a.password_hash IS NOT NULL AND ";

/// A row of [`ACCOUNT_SELECT`].
pub(crate) type AccountJoinRow = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<i64>,
);

/// The account in rows of [`ACCOUNT_SELECT`], and its password hash; `None`
/// for no rows. Linked users are sorted here, byte-wise, so both databases
/// give the same order whatever their collation.
pub(crate) fn account_from(
    rows: Vec<AccountJoinRow>,
) -> Result<Option<(AccountRecord, String)>, StoreError> {
    let mut rows = rows.into_iter();
    let Some((user_id, user_ref, home_bot, email, created_at, hash, first, age_confirmed_at)) =
        rows.next()
    else {
        return Ok(None);
    };
    let user = |s: String| s.parse().map_err(|_| corrupt("user_ref", &s));
    let mut linked: Vec<String> = first.into_iter().chain(rows.filter_map(|r| r.6)).collect();
    linked.sort();
    let linked = linked
        .into_iter()
        .map(user)
        .collect::<Result<Vec<UserRef>, _>>()?;
    Ok(Some((
        AccountRecord {
            user_id,
            user_ref: user(user_ref)?,
            home_bot: home_bot
                .parse()
                .map_err(|_| corrupt("home_bot", &home_bot))?,
            email,
            linked,
            created_at,
            age_confirmed_at,
        },
        hash,
    )))
}

/// Implements [`Accounts`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_accounts {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_core::{Millis, Plan, UserRef};

            use $crate::store::accounts::{account_from, AccountJoinRow, ACCOUNT_SELECT};
            use $crate::store::rows::corrupt;
            use $crate::store::{AccountRecord, Accounts, RedeemOutcome, StoreError};

            #[async_trait::async_trait]
            impl Accounts for $store {
                async fn create_account(
                    &self,
                    user_ref: &UserRef,
                    home_bot: &str,
                    email: &str,
                    password_hash: &str,
                    now: Millis,
                ) -> Result<Option<AccountRecord>, StoreError> {
                    // A taken email inserts nothing; the user_ref is new (the
                    // caller draws it), so any other conflict is an error.
                    let row: Option<(i64, i64)> = sqlx::query_as(
                        "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, email, \
                         password_hash, home_bot, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (email) DO NOTHING RETURNING id, created_at",
                    )
                    .bind(user_ref.to_string())
                    .bind(user_ref.platform().as_str())
                    .bind(user_ref.platform_user_id())
                    .bind(Plan::DEFAULT_ID)
                    .bind(email)
                    .bind(password_hash)
                    .bind(home_bot)
                    .bind(now)
                    .fetch_optional(self.writer())
                    .await?;
                    let Some((user_id, created_at)) = row else {
                        return Ok(None);
                    };
                    Ok(Some(AccountRecord {
                        user_id,
                        user_ref: user_ref.clone(),
                        home_bot: home_bot
                            .parse()
                            .map_err(|_| corrupt("home_bot", home_bot))?,
                        email: email.to_owned(),
                        linked: Vec::new(),
                        created_at,
                        age_confirmed_at: None,
                    }))
                }

                async fn account_by_email(
                    &self,
                    email: &str,
                ) -> Result<Option<(AccountRecord, String)>, StoreError>
                {
                    let mut conn = self.reader().acquire().await?;
                    Self::account_on(&mut conn, "a.email", email).await
                }

                async fn get_account(
                    &self,
                    user_ref: &UserRef,
                ) -> Result<Option<AccountRecord>, StoreError> {
                    let mut conn = self.reader().acquire().await?;
                    let found = Self::account_on(&mut conn, "a.user_ref", &user_ref.to_string()).await?;
                    Ok(found.map(|(account, _)| account))
                }

                async fn put_link_code(
                    &self,
                    user_ref: &UserRef,
                    code_hash: &[u8],
                    expires_at: Millis,
                    now: Millis,
                ) -> Result<bool, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    sqlx::query(
                        "INSERT INTO users (user_ref, platform, platform_user_id, plan_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_ref) DO NOTHING",
                    )
                    .bind(user_ref.to_string())
                    .bind(user_ref.platform().as_str())
                    .bind(user_ref.platform_user_id())
                    .bind(Plan::DEFAULT_ID)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let (user_id,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE user_ref = $1")
                        .bind(user_ref.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                    // The user's earlier code, and everyone's expired ones.
                    sqlx::query("DELETE FROM link_codes WHERE user_id = $1 OR expires_at <= $2")
                        .bind(user_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    // A live code with the same hash (or a code this user got
                    // from a request committed meanwhile) inserts nothing.
                    let inserted = sqlx::query(
                        "INSERT INTO link_codes (code_hash, user_id, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(code_hash)
                    .bind(user_id)
                    .bind(expires_at)
                    .execute(&mut *tx)
                    .await?;
                    if inserted.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn redeem_link_code(
                    &self,
                    account: &UserRef,
                    home_bot: &str,
                    code_hash: &[u8],
                    now: Millis,
                ) -> Result<RedeemOutcome, StoreError> {
                    let account_ref = account.to_string();
                    let mut tx = self.writer().begin().await?;
                    // Another bot's account is no account: its code stays unused.
                    let found: Option<(i64,)> = sqlx::query_as(
                        "SELECT id FROM users WHERE user_ref = $1 AND home_bot = $2 \
                         AND email IS NOT NULL AND password_hash IS NOT NULL",
                    )
                    .bind(&account_ref)
                    .bind(home_bot)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((account_id,)) = found else {
                        tx.rollback().await?;
                        return Ok(RedeemOutcome::NoAccount);
                    };
                    // Deleting the code is what makes it single use: of two
                    // redeems racing for it, one deletes it and the other finds
                    // nothing.
                    let code: Option<(i64, i64)> = sqlx::query_as(
                        "DELETE FROM link_codes WHERE code_hash = $1 RETURNING user_id, expires_at",
                    )
                    .bind(code_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let user_id = match code {
                        None => {
                            tx.rollback().await?;
                            return Ok(RedeemOutcome::InvalidCode);
                        }
                        Some((_, expires_at)) if expires_at <= now => {
                            // Expired: gone now, and still no link.
                            tx.commit().await?;
                            return Ok(RedeemOutcome::InvalidCode);
                        }
                        Some((user_id, _)) => user_id,
                    };
                    // Links are one hop: only bot users are linked, only to accounts.
                    let linked = sqlx::query(
                        "UPDATE users SET account_id = $1 WHERE id = $2 AND platform <> 'web'",
                    )
                    .bind(account_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                    if linked.rows_affected() == 0 {
                        tx.commit().await?;
                        return Ok(RedeemOutcome::InvalidCode);
                    }
                    // A bot user who paid for a plan keeps it: the account takes
                    // the better of its own plan and the bot user's (never a worse one).
                    sqlx::query(
                        "UPDATE users SET plan_id = (SELECT b.plan_id FROM users b WHERE b.id = $2) \
                         WHERE id = $1 \
                         AND (SELECT p.priority FROM plans p JOIN users b ON b.plan_id = p.id WHERE b.id = $2) \
                           > (SELECT p.priority FROM plans p WHERE p.id = users.plan_id)",
                    )
                    .bind(account_id)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                    // What the bot user bought before linking is the account's now.
                    sqlx::query("UPDATE plan_grants SET user_id = $1 WHERE user_id = $2")
                        .bind(account_id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    let view = Self::account_on(&mut tx, "a.user_ref", &account_ref).await?;
                    tx.commit().await?;
                    match view {
                        Some((account, _)) => Ok(RedeemOutcome::Linked(account)),
                        None => Err(StoreError::Corrupt(format!(
                            "account {account_ref} vanished"
                        ))),
                    }
                }
            }

            impl $store {
                /// The account whose `column` (`a.email` or `a.user_ref`) is
                /// `value`, with its linked users and its password hash.
                async fn account_on(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    column: &'static str,
                    value: &str,
                ) -> Result<Option<(AccountRecord, String)>, StoreError>
                {
                    let rows: Vec<AccountJoinRow> = sqlx::query_as(&format!(
                        "{}{column} = $1",
                        ACCOUNT_SELECT
                    ))
                    .bind(value)
                    .fetch_all(&mut *conn)
                    .await?;
                    account_from(rows)
                }
            }
        };
    };
}

pub(crate) use impl_accounts;
