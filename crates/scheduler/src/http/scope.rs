//! What a frontend key may see and speak for, shared by every resource the
//! public API serves.
//!
//! [`auth`](super::auth) says who is calling; this says how far that key
//! reaches. It is its own module so that jobs, files, users and accounts each
//! apply the same rules without reaching into one another.
//!
//! A key sees its frontend's records only. Telegram and Discord keys see every
//! bot of their platform's (a bot resumes by bot id); a web key sees only its
//! own bot id's ([`own_bot_only`]): each website is its own trust domain, so a
//! demo key cannot read the website's users' jobs. A key speaks for users of
//! its platform only ([`user_ref_for`]), and a website account belongs to the
//! web bot that created it ([`foreign_account`]).

use tessera_api::ErrorCode;
use tessera_core::{BotId, Platform, UserRef};

use super::error::ApiError;
use crate::store::{ApiKeyRecord, DeveloperKeyRecord, JobRecord};

/// Whom a key speaks through: a frontend key its own frontend and bot, a
/// developer key its account's website (the web bot that made the account).
pub(crate) trait Speaks {
    fn frontend(&self) -> Platform;
    fn bot_id(&self) -> &BotId;
    /// The key's id, as text: what its webhook secret is kept under.
    fn key_id(&self) -> String;
}

impl Speaks for ApiKeyRecord {
    fn frontend(&self) -> Platform {
        self.frontend
    }

    fn bot_id(&self) -> &BotId {
        &self.bot_id
    }

    fn key_id(&self) -> String {
        self.id.to_string()
    }
}

impl Speaks for DeveloperKeyRecord {
    fn frontend(&self) -> Platform {
        Platform::Web
    }

    fn bot_id(&self) -> &BotId {
        &self.home_bot
    }

    fn key_id(&self) -> String {
        self.id.to_string()
    }
}

/// The one bot whose jobs a key sees, if it is limited to one: a web key
/// sees only its own bot id's jobs (each website is its own trust domain); a
/// Telegram or Discord key sees every bot of its platform's.
pub(crate) fn own_bot_only(key: &impl Speaks) -> Option<&BotId> {
    (key.frontend() == Platform::Web).then_some(key.bot_id())
}

/// Whether a key of the job's frontend sees the job.
pub(crate) fn sees(key: &impl Speaks, job: &JobRecord) -> bool {
    own_bot_only(key).is_none_or(|bot| *bot == job.bot_id)
}

/// A website account another web bot created: to this key, a user it may
/// not act for.
pub(crate) fn foreign_account() -> ApiError {
    ApiError::forbidden(
        ErrorCode::ForbiddenUserRef,
        "this account belongs to another website",
    )
}

/// A user reference from a path that the key may speak for: well formed,
/// and on the key's platform.
pub(crate) fn user_ref_for(frontend: &Platform, text: &str) -> Result<UserRef, ApiError> {
    let user_ref: UserRef = text
        .parse()
        .map_err(|e: tessera_core::user_ref::InvalidUserRef| {
            ApiError::invalid(ErrorCode::InvalidUserRef, e.to_string()).with_field("user_ref")
        })?;
    speaks_for(frontend, &user_ref)?;
    Ok(user_ref)
}

/// Whether a key of `frontend` may speak for `user_ref`: users of its own
/// platform only.
pub(crate) fn speaks_for(frontend: &Platform, user_ref: &UserRef) -> Result<(), ApiError> {
    if user_ref.platform() != *frontend {
        return Err(ApiError::forbidden(
            ErrorCode::ForbiddenUserRef,
            format!(
                "a {frontend} key cannot act for {} users",
                user_ref.platform()
            ),
        ));
    }
    Ok(())
}

/// Accounts, and what belongs to them, are the website's: other keys are
/// refused `forbidden_frontend`.
pub(crate) fn web_only(key: &ApiKeyRecord) -> Result<(), ApiError> {
    if key.frontend == Platform::Web {
        return Ok(());
    }
    Err(ApiError::forbidden(
        ErrorCode::ForbiddenFrontend,
        format!(
            "accounts are the website's: a {} key cannot use them",
            key.frontend
        ),
    ))
}

/// The answer for a web user with no account of the key's bot.
pub(crate) fn account_not_found() -> ApiError {
    ApiError::not_found(ErrorCode::AccountNotFound, "this user has no account")
}
