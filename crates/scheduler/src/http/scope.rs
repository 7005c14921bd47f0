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
use crate::store::{ApiKeyRecord, JobRecord};

/// The one bot whose jobs a key sees, if it is limited to one: a web key
/// sees only its own bot id's jobs (each website is its own trust domain); a
/// Telegram or Discord key sees every bot of its platform's.
pub(crate) fn own_bot_only(key: &ApiKeyRecord) -> Option<&BotId> {
    (key.frontend == Platform::Web).then_some(&key.bot_id)
}

/// Whether a key of the job's frontend sees the job.
pub(crate) fn sees(key: &ApiKeyRecord, job: &JobRecord) -> bool {
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
