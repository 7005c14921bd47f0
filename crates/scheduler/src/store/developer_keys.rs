//! Developer keys: personal API keys a website account makes for itself to
//! call the OpenAI-compatible gateway as that person. Minted, found by the
//! hash of their secret, listed, revoked, and their last use recorded. The
//! secret itself is never stored.

use async_trait::async_trait;

use tessera_core::{BotId, Capability, DeveloperKeyId, Millis, UserRef};

use super::rows::corrupt;
use super::StoreError;

/// A developer key as stored (its secret only as a hash), with the account
/// it acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeveloperKeyRecord {
    pub id: DeveloperKeyId,
    /// The account (a `web:` user) the key acts as.
    pub account: UserRef,
    /// The account's home bot: the key's jobs are that website's jobs.
    pub home_bot: BotId,
    pub name: String,
    /// The capabilities the key may use; `None` for every one.
    pub capabilities: Option<Vec<Capability>>,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

impl DeveloperKeyRecord {
    /// Whether the key may make jobs of `capability`.
    pub fn allows(&self, capability: Capability) -> bool {
        self.capabilities
            .as_ref()
            .is_none_or(|list| list.contains(&capability))
    }
}

/// A developer key to mint.
#[derive(Clone, Debug)]
pub struct NewDeveloperKey<'a> {
    pub account: &'a UserRef,
    /// The web bot whose key asks: an account of another bot gets no key.
    pub home_bot: &'a BotId,
    pub name: &'a str,
    pub capabilities: Option<&'a [Capability]>,
    pub secret_hash: &'a [u8],
    /// Most live keys an account may hold.
    pub max_live: i64,
    pub now: Millis,
}

/// What minting a developer key did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MintOutcome {
    Minted(DeveloperKeyRecord),
    /// The user is no account of this bot.
    NoAccount,
    /// The account holds as many live keys as it may.
    TooMany,
}

/// Developer keys.
#[async_trait]
pub trait DeveloperKeys {
    /// Mints a key for an account, if it is one of `home_bot`'s and holds
    /// fewer than `max_live` live keys: one statement, so two racing mints
    /// cannot pass the limit together on PostgreSQL's or SQLite's writer.
    async fn insert_developer_key(
        &self,
        key: &NewDeveloperKey<'_>,
    ) -> Result<MintOutcome, StoreError>;

    /// The live key with this secret hash.
    async fn find_developer_key(
        &self,
        secret_hash: &[u8],
    ) -> Result<Option<DeveloperKeyRecord>, StoreError>;

    /// Every key of the account (of `home_bot`), revoked ones too, oldest first.
    async fn list_developer_keys(
        &self,
        account: &UserRef,
        home_bot: &BotId,
    ) -> Result<Vec<DeveloperKeyRecord>, StoreError>;

    /// Revokes a key of the account; `None` when the account (of `home_bot`)
    /// has no such key. Revoking twice keeps the first time.
    async fn revoke_developer_key(
        &self,
        account: &UserRef,
        home_bot: &BotId,
        id: &DeveloperKeyId,
        now: Millis,
    ) -> Result<Option<DeveloperKeyRecord>, StoreError>;

    /// Records a use of the key at `now`, when the last one recorded is a
    /// minute or more older (a write per request would cost a busy key a
    /// transaction each). Says whether it wrote.
    async fn touch_developer_key(
        &self,
        id: &DeveloperKeyId,
        now: Millis,
    ) -> Result<bool, StoreError>;
}

/// How often a key's last use is written, at most.
pub const TOUCH_EVERY_MS: Millis = 60_000;

/// The capabilities column: `NULL` for all, else a comma-separated list.
pub(crate) fn capabilities_column(list: Option<&[Capability]>) -> Option<String> {
    list.map(|list| {
        list.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The columns every read selects: the key, and its account's user_ref and
/// home bot (`k` is the key, `a` the account).
pub(crate) const KEY_COLUMNS: &str = "k.id, a.user_ref, a.home_bot, k.name, k.capabilities, \
    k.created_at, k.last_used_at, k.revoked_at";

pub(crate) type DeveloperKeyRow = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

pub(crate) fn record(row: DeveloperKeyRow) -> Result<DeveloperKeyRecord, StoreError> {
    let (id, account, home_bot, name, capabilities, created_at, last_used_at, revoked_at) = row;
    let home_bot = home_bot.unwrap_or_default();
    Ok(DeveloperKeyRecord {
        id: id.parse().map_err(|_| corrupt("developer key id", &id))?,
        account: account.parse().map_err(|_| corrupt("user_ref", &account))?,
        home_bot: home_bot
            .parse()
            .map_err(|_| corrupt("home_bot", &home_bot))?,
        name,
        capabilities: capabilities
            .map(|text| {
                text.split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| c.parse().map_err(|_| corrupt("capability", c)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?,
        created_at,
        last_used_at,
        revoked_at,
    })
}

/// Implements [`DeveloperKeys`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_developer_keys {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{BotId, DeveloperKeyId, Millis, UserRef};

            use $crate::store::developer_keys::{
                capabilities_column, record, DeveloperKeyRow, KEY_COLUMNS, TOUCH_EVERY_MS,
            };
            use $crate::store::{
                DeveloperKeyRecord, DeveloperKeys, MintOutcome, NewDeveloperKey, StoreError,
            };

            #[async_trait::async_trait]
            impl DeveloperKeys for $store {
                async fn insert_developer_key(
                    &self,
                    key: &NewDeveloperKey<'_>,
                ) -> Result<MintOutcome, StoreError> {
                    let id = DeveloperKeyId::generate();
                    // The account and its live keys are read by the insert
                    // itself: no account of this bot, or one at its limit,
                    // inserts nothing, and the reads below say which.
                    let inserted: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO developer_keys (id, account_id, name, secret_hash, \
                         capabilities, created_at) \
                         SELECT $1, a.id, $2, $3, $4, $5 FROM users a \
                         WHERE a.user_ref = $6 AND a.home_bot = $7 AND a.password_hash IS NOT NULL \
                         AND (SELECT COUNT(*) FROM developer_keys k \
                              WHERE k.account_id = a.id AND k.revoked_at IS NULL) < $8 \
                         RETURNING created_at",
                    )
                    .bind(id.as_str())
                    .bind(key.name)
                    .bind(key.secret_hash)
                    .bind(capabilities_column(key.capabilities))
                    .bind(key.now)
                    .bind(key.account.to_string())
                    .bind(key.home_bot.as_str())
                    .bind(key.max_live)
                    .fetch_optional(self.writer())
                    .await?;
                    if inserted.is_some() {
                        return Ok(MintOutcome::Minted(DeveloperKeyRecord {
                            id,
                            account: key.account.clone(),
                            home_bot: key.home_bot.clone(),
                            name: key.name.to_owned(),
                            capabilities: key.capabilities.map(<[_]>::to_vec),
                            created_at: key.now,
                            last_used_at: None,
                            revoked_at: None,
                        }));
                    }
                    let account: Option<(i64,)> = sqlx::query_as(
                        "SELECT id FROM users WHERE user_ref = $1 AND home_bot = $2 \
                         AND password_hash IS NOT NULL",
                    )
                    .bind(key.account.to_string())
                    .bind(key.home_bot.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                    Ok(match account {
                        Some(_) => MintOutcome::TooMany,
                        None => MintOutcome::NoAccount,
                    })
                }

                async fn find_developer_key(
                    &self,
                    secret_hash: &[u8],
                ) -> Result<Option<DeveloperKeyRecord>, StoreError> {
                    let row: Option<DeveloperKeyRow> = sqlx::query_as(&format!(
                        "SELECT {KEY_COLUMNS} FROM developer_keys k \
                         JOIN users a ON a.id = k.account_id \
                         WHERE k.secret_hash = $1 AND k.revoked_at IS NULL"
                    ))
                    .bind(secret_hash)
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(record).transpose()
                }

                async fn list_developer_keys(
                    &self,
                    account: &UserRef,
                    home_bot: &BotId,
                ) -> Result<Vec<DeveloperKeyRecord>, StoreError> {
                    let rows: Vec<DeveloperKeyRow> = sqlx::query_as(&format!(
                        "SELECT {KEY_COLUMNS} FROM developer_keys k \
                         JOIN users a ON a.id = k.account_id \
                         WHERE a.user_ref = $1 AND a.home_bot = $2 ORDER BY k.id"
                    ))
                    .bind(account.to_string())
                    .bind(home_bot.as_str())
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(record).collect()
                }

                async fn revoke_developer_key(
                    &self,
                    account: &UserRef,
                    home_bot: &BotId,
                    id: &DeveloperKeyId,
                    now: Millis,
                ) -> Result<Option<DeveloperKeyRecord>, StoreError> {
                    // SQLite's RETURNING sees only the updated table: the
                    // account's columns are the ones the condition matched.
                    let row: Option<DeveloperKeyRow> = sqlx::query_as(
                        "UPDATE developer_keys SET revoked_at = COALESCE(revoked_at, $4) \
                         WHERE id = $3 AND account_id = (SELECT id FROM users \
                         WHERE user_ref = $1 AND home_bot = $2 AND password_hash IS NOT NULL) \
                         RETURNING id, $1, $2, name, capabilities, created_at, last_used_at, revoked_at",
                    )
                    .bind(account.to_string())
                    .bind(home_bot.as_str())
                    .bind(id.as_str())
                    .bind(now)
                    .fetch_optional(self.writer())
                    .await?;
                    row.map(record).transpose()
                }

                async fn touch_developer_key(
                    &self,
                    id: &DeveloperKeyId,
                    now: Millis,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE developer_keys SET last_used_at = $2 WHERE id = $1 \
                         AND (last_used_at IS NULL OR last_used_at <= $3)",
                    )
                    .bind(id.as_str())
                    .bind(now)
                    .bind(now - TOUCH_EVERY_MS)
                    .execute(self.writer())
                    .await?;
                    Ok(done.rows_affected() > 0)
                }
            }
        };
    };
}

pub(crate) use impl_developer_keys;
