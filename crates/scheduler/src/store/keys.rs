//! Frontend API keys: minted, found by the hash of their secret, listed and
//! revoked. The secret itself is never stored.

use async_trait::async_trait;

use tessera_core::{ApiKeyId, Millis, Platform};

use super::rows::corrupt;
use super::StoreError;

/// A frontend API key as stored (its secret only as a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub frontend: Platform,
    pub bot_id: tessera_core::BotId,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// Frontend keys.
#[async_trait]
pub trait Keys {
    async fn insert_api_key(
        &self,
        frontend: Platform,
        bot_id: &str,
        secret_hash: &[u8],
        now: Millis,
    ) -> Result<ApiKeyRecord, StoreError>;

    /// The live (not revoked) key with this secret hash.
    async fn find_api_key(&self, secret_hash: &[u8]) -> Result<Option<ApiKeyRecord>, StoreError>;

    async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes a key; `None` if there is no such key. Revoking twice keeps the first time.
    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        now: Millis,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: String,
    frontend: String,
    bot_id: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;

    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKeyRecord {
            id: r.id.parse().map_err(|_| corrupt("key id", &r.id))?,
            frontend: r
                .frontend
                .parse::<Platform>()
                .map_err(|_| corrupt("frontend", &r.frontend))?,
            bot_id: r.bot_id.parse().map_err(|_| corrupt("bot_id", &r.bot_id))?,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// Implements [`Keys`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_keys {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{ApiKeyId, Millis, Platform};

            use $crate::store::keys::ApiKeyRow;
            use $crate::store::{ApiKeyRecord, Keys, StoreError};

            #[async_trait::async_trait]
            impl Keys for $store {
                async fn insert_api_key(
                    &self,
                    frontend: Platform,
                    bot_id: &str,
                    secret_hash: &[u8],
                    now: Millis,
                ) -> Result<ApiKeyRecord, StoreError> {
                    let id = ApiKeyId::generate();
                    let row: ApiKeyRow = sqlx::query_as(
                        "INSERT INTO api_keys (id, frontend, bot_id, secret_hash, created_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         RETURNING id, frontend, bot_id, created_at, revoked_at",
                    )
                    .bind(id.as_str())
                    .bind(frontend.as_str())
                    .bind(bot_id)
                    .bind(secret_hash)
                    .bind(now)
                    .fetch_one(self.writer())
                    .await?;
                    row.try_into()
                }

                async fn find_api_key(
                    &self,
                    secret_hash: &[u8],
                ) -> Result<Option<ApiKeyRecord>, StoreError> {
                    let row: Option<ApiKeyRow> = sqlx::query_as(
                        "SELECT id, frontend, bot_id, created_at, revoked_at FROM api_keys \
                         WHERE secret_hash = $1 AND revoked_at IS NULL",
                    )
                    .bind(secret_hash)
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }

                async fn list_api_keys(
                    &self,
                ) -> Result<Vec<ApiKeyRecord>, StoreError> {
                    let rows: Vec<ApiKeyRow> = sqlx::query_as(
                        "SELECT id, frontend, bot_id, created_at, revoked_at FROM api_keys ORDER BY id",
                    )
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn revoke_api_key(
                    &self,
                    id: &ApiKeyId,
                    now: Millis,
                ) -> Result<Option<ApiKeyRecord>, StoreError> {
                    let row: Option<ApiKeyRow> = sqlx::query_as(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
                         RETURNING id, frontend, bot_id, created_at, revoked_at",
                    )
                    .bind(id.as_str())
                    .bind(now)
                    .fetch_optional(self.writer())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }
            }
        };
    };
}

pub(crate) use impl_keys;
