//! Where adult content may be allowed (migration `0013_nsfw_context`): a
//! chat's NSFW setting, which the chat's admins change through their bot, and
//! a website account's confirmed age.
//!
//! Both are read at create, where the scheduler decides whether a job may be
//! adult content (the decision is kept on the job, `jobs.adult_allowed`).
//! They live in the database rather than with the bots because a frontend's
//! word is believed only as far as its key allows: a Telegram bot reports
//! which chat a request came from, and the scheduler answers for what that
//! chat's admins set.

use async_trait::async_trait;

use tessera_core::{Millis, Platform, UserRef};

use super::StoreError;

/// A chat's NSFW setting as last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatNsfwRecord {
    pub platform: Platform,
    pub chat_id: i64,
    pub enabled: bool,
    /// The admin who changed it last.
    pub set_by: UserRef,
    pub set_at: Millis,
}

/// Chats' NSFW settings and accounts' confirmed ages.
#[async_trait]
pub trait NsfwSettings {
    /// A chat's setting; `None` if nobody ever changed it (it is off).
    async fn chat_nsfw(
        &self,
        platform: Platform,
        chat_id: i64,
    ) -> Result<Option<ChatNsfwRecord>, StoreError>;

    /// Turns adult content on or off in a chat, as `by` asked; answers the
    /// setting as it now is.
    async fn set_chat_nsfw(
        &self,
        platform: Platform,
        chat_id: i64,
        enabled: bool,
        by: &UserRef,
        now: Millis,
    ) -> Result<ChatNsfwRecord, StoreError>;

    /// Records that the owner of the account `user_ref` (of the web bot
    /// `home_bot`) confirmed being 18 or older; the first confirmation's time
    /// stays. `None` when there is no such account of that bot.
    async fn confirm_age(
        &self,
        user_ref: &UserRef,
        home_bot: &str,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError>;

    /// Whether `user_ref` is an account of `home_bot` whose owner confirmed
    /// their age.
    async fn age_confirmed(&self, user_ref: &UserRef, home_bot: &str) -> Result<bool, StoreError>;
}

/// Implements [`NsfwSettings`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_nsfw {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{Millis, Platform, UserRef};

            use $crate::store::nsfw::{ChatNsfwRecord, NsfwSettings};
            use $crate::store::rows::corrupt;
            use $crate::store::StoreError;

            type Row = (bool, String, i64);

            fn record(
                platform: Platform,
                chat_id: i64,
                (enabled, set_by, set_at): Row,
            ) -> Result<ChatNsfwRecord, StoreError> {
                Ok(ChatNsfwRecord {
                    platform,
                    chat_id,
                    enabled,
                    set_by: set_by.parse().map_err(|_| corrupt("set_by", &set_by))?,
                    set_at,
                })
            }

            #[async_trait::async_trait]
            impl NsfwSettings for $store {
                async fn chat_nsfw(
                    &self,
                    platform: Platform,
                    chat_id: i64,
                ) -> Result<Option<ChatNsfwRecord>, StoreError> {
                    let row: Option<Row> = sqlx::query_as(
                        "SELECT enabled, set_by, set_at FROM chat_nsfw \
                         WHERE platform = $1 AND chat_id = $2",
                    )
                    .bind(platform.as_str())
                    .bind(chat_id.to_string())
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(|r| record(platform, chat_id, r)).transpose()
                }

                async fn set_chat_nsfw(
                    &self,
                    platform: Platform,
                    chat_id: i64,
                    enabled: bool,
                    by: &UserRef,
                    now: Millis,
                ) -> Result<ChatNsfwRecord, StoreError> {
                    let row: Row = sqlx::query_as(
                        "INSERT INTO chat_nsfw (platform, chat_id, enabled, set_by, set_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (platform, chat_id) DO UPDATE SET \
                         enabled = excluded.enabled, set_by = excluded.set_by, \
                         set_at = excluded.set_at \
                         RETURNING enabled, set_by, set_at",
                    )
                    .bind(platform.as_str())
                    .bind(chat_id.to_string())
                    .bind(enabled)
                    .bind(by.to_string())
                    .bind(now)
                    .fetch_one(self.writer())
                    .await?;
                    record(platform, chat_id, row)
                }

                async fn confirm_age(
                    &self,
                    user_ref: &UserRef,
                    home_bot: &str,
                    now: Millis,
                ) -> Result<Option<Millis>, StoreError> {
                    let row: Option<(Option<i64>,)> = sqlx::query_as(
                        "UPDATE users SET age_confirmed_at = COALESCE(age_confirmed_at, $1) \
                         WHERE user_ref = $2 AND home_bot = $3 \
                         AND email IS NOT NULL AND password_hash IS NOT NULL \
                         RETURNING age_confirmed_at",
                    )
                    .bind(now)
                    .bind(user_ref.to_string())
                    .bind(home_bot)
                    .fetch_optional(self.writer())
                    .await?;
                    Ok(row.and_then(|(at,)| at))
                }

                async fn age_confirmed(
                    &self,
                    user_ref: &UserRef,
                    home_bot: &str,
                ) -> Result<bool, StoreError> {
                    let row: Option<(Option<i64>,)> = sqlx::query_as(
                        "SELECT age_confirmed_at FROM users \
                         WHERE user_ref = $1 AND home_bot = $2",
                    )
                    .bind(user_ref.to_string())
                    .bind(home_bot)
                    .fetch_optional(self.reader())
                    .await?;
                    Ok(row.is_some_and(|(at,)| at.is_some()))
                }
            }
        };
    };
}

pub(crate) use impl_nsfw;
