//! Jobs the prompt rules refused (migration `0012_moderation_refusals`).
//!
//! A refused create writes nothing else: no job, no charge. This record is
//! what is left of it, so an operator can see who keeps asking for what
//! the rules refuse, and so the review queue (and suspending users who hit
//! the child-safety rules) has something to read. It keeps the normalised
//! excerpt that matched, never the whole prompt.

use async_trait::async_trait;

use tessera_core::{BotId, Millis, Platform, UserRef};

use super::StoreError;

/// A refusal to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefusal {
    pub user_ref: UserRef,
    pub bot_id: BotId,
    pub channel: Platform,
    pub rule: String,
    /// `prompt_refused` or `content_not_allowed`.
    pub code: String,
    pub excerpt: String,
    pub now: Millis,
}

/// A recorded refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusalRecord {
    pub id: i64,
    pub user_ref: UserRef,
    pub bot_id: BotId,
    pub channel: Platform,
    pub rule: String,
    pub code: String,
    pub excerpt: String,
    pub created_at: Millis,
}

/// The record of refused prompts.
#[async_trait]
pub trait Refusals {
    /// Records a refusal; answers its id.
    async fn record_refusal(&self, refusal: &NewRefusal) -> Result<i64, StoreError>;

    /// A user's refusals, newest first, at most `limit`.
    async fn refusals_of(
        &self,
        user_ref: &UserRef,
        limit: u32,
    ) -> Result<Vec<RefusalRecord>, StoreError>;
}

/// Implements [`Refusals`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_refusals {
    ($store:ty) => {
        const _: () = {
            use $crate::store::refusals::{NewRefusal, RefusalRecord, Refusals};
            use $crate::store::rows::corrupt;
            use $crate::store::StoreError;

            type Row = (i64, String, String, String, String, String, String, i64);

            #[async_trait::async_trait]
            impl Refusals for $store {
                async fn record_refusal(&self, r: &NewRefusal) -> Result<i64, StoreError> {
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO moderation_refusals \
                         (user_ref, bot_id, channel, rule, code, excerpt, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    )
                    .bind(r.user_ref.to_string())
                    .bind(r.bot_id.as_str())
                    .bind(r.channel.as_str())
                    .bind(&r.rule)
                    .bind(&r.code)
                    .bind(&r.excerpt)
                    .bind(r.now)
                    .fetch_one(self.writer())
                    .await?;
                    Ok(id)
                }

                async fn refusals_of(
                    &self,
                    user_ref: &tessera_core::UserRef,
                    limit: u32,
                ) -> Result<Vec<RefusalRecord>, StoreError> {
                    let rows: Vec<Row> = sqlx::query_as(
                        "SELECT id, user_ref, bot_id, channel, rule, code, excerpt, created_at \
                         FROM moderation_refusals WHERE user_ref = $1 \
                         ORDER BY created_at DESC, id DESC LIMIT $2",
                    )
                    .bind(user_ref.to_string())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                    rows.into_iter()
                        .map(
                            |(id, user, bot, channel, rule, code, excerpt, created_at)| {
                                Ok(RefusalRecord {
                                    id,
                                    user_ref: user
                                        .parse()
                                        .map_err(|_| corrupt("user_ref", &user))?,
                                    bot_id: bot.parse().map_err(|_| corrupt("bot_id", &bot))?,
                                    channel: channel
                                        .parse()
                                        .map_err(|_| corrupt("channel", &channel))?,
                                    rule,
                                    code,
                                    excerpt,
                                    created_at,
                                })
                            },
                        )
                        .collect()
                }
            }
        };
    };
}

pub(crate) use impl_refusals;
