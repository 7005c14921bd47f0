//! `/api/v1/accounts` and `/api/v1/link-codes`: website accounts, and linking
//! Telegram and Discord users to them.
//!
//! An account is a `web:` user with an email and a password (kept as an
//! Argon2id hash, [`crate::passwords`]). Only the website's keys create,
//! sign in to and read accounts, and each web bot id is its own trust domain:
//! an account belongs to the bot id of the web key that created it (its home
//! bot), and to a web key of any other bot id it does not exist (sign-in
//! fails as for an unknown email, reading and linking answer
//! `account_not_found`, creating jobs and reading the quota `forbidden_user_ref`).
//! Emails stay unique across bots: signing up with another bot's account's
//! email is still `email_taken`. A bot user links to one by asking its bot
//! for a one-time code (`POST /api/v1/link-codes`, with the bot's key) and
//! entering it on the website, which redeems it for the signed-in account.
//! The code proves that the bot user asked. From then on the bot user is
//! billed as the account: one plan and one daily quota, whichever frontend
//! the jobs come from (the store's billing user, `COALESCE(account_id, id)`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rand::Rng;
use sha2::{Digest, Sha256};

use tessera_api::public::{AccountView, Credentials, LinkCode, LinkCodeRequest, RedeemLinkRequest};
use tessera_api::ApiErrorBody;
use tessera_api::ErrorCode;
use tessera_core::{Platform, UserRef};

use super::auth::Frontend;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Refusal};
use super::scope::{account_not_found, speaks_for, user_ref_for, web_only};
use super::wire::rfc3339;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::passwords::PasswordError;
use crate::store::{AccountRecord, RedeemOutcome};

/// The characters of a link code: no 0/O, 1/I/L, so it reads back unambiguously.
pub const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a link code (shown as two groups of four).
pub const CODE_LEN: usize = 8;
/// How long a link code can be redeemed.
pub const CODE_TTL_MS: i64 = 10 * 60 * 1000;

const EMAIL_CHARS: std::ops::RangeInclusive<usize> = 3..=254;
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=256;

impl Refusal for Credentials {}

impl Refusal for RedeemLinkRequest {}

/// A `user_ref` that is no reference is `invalid_user_ref`.
impl Refusal for LinkCodeRequest {
    fn refuse(field: &str, message: String) -> ApiError {
        let code = if field == "user_ref" {
            ErrorCode::InvalidUserRef
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::invalid(code, message).with_field(field)
    }
}

/// Create a website account (web keys only): a new `web:` user on the default
/// plan, with this email and password.
#[utoipa::path(
    post, path = "/api/v1/accounts", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Account created", body = AccountView),
        (status = 403, description = "Not a web key", body = ApiErrorBody),
        (status = 409, description = "The email belongs to an account", body = ApiErrorBody),
        (status = 422, description = "Invalid email (`invalid_email`) or password (`weak_password`)", body = ApiErrorBody),
        (status = 503, description = "Too many sign-ups and sign-ins at once (`busy`); retry after `Retry-After` seconds", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    web_only(&key)?;
    let email = normalise_email(&req.email).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidEmail,
            "the email must be an address such as ada@example.org (3 to 254 characters)",
        )
        .with_field("email")
    })?;
    if !PASSWORD_CHARS.contains(&req.password.chars().count()) {
        return Err(ApiError::invalid(
            ErrorCode::WeakPassword,
            format!(
                "the password must be {} to {} characters long",
                PASSWORD_CHARS.start(),
                PASSWORD_CHARS.end()
            ),
        )
        .with_field("password"));
    }
    let hash = state
        .passwords
        .hash(req.password)
        .await
        .map_err(password_failed)?;
    let user_ref = UserRef::new(
        Platform::Web,
        &ulid::Ulid::new().to_string().to_ascii_lowercase(),
    )
    .expect("a ULID is a valid user id");
    let account = state
        .store
        .create_account(&user_ref, &key.bot_id, &email, &hash, now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::EmailTaken,
                "an account with this email exists; sign in instead",
            )
            .with_field("email")
        })?;
    tracing::info!(user_ref = %account.user_ref, bot_id = %key.bot_id, "account created");
    Ok((StatusCode::CREATED, Json(view(account))))
}

/// Check an account's email and password (web keys only). A wrong password,
/// an unknown email and an account of another web bot get the same answer,
/// after the same work.
#[utoipa::path(
    post, path = "/api/v1/accounts/sign-in", tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "The email and password match this account", body = AccountView),
        (status = 403, description = "Not a web key, or the email or password is wrong (`sign_in_failed`)", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
        (status = 503, description = "Too many sign-ups and sign-ins at once (`busy`); retry after `Retry-After` seconds", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn sign_in(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<Credentials>,
) -> Result<Json<AccountView>, ApiError> {
    web_only(&key)?;
    // An email no account could have is looked up no more than an unknown
    // one, and another bot's account is verified as an unknown email is.
    let found = match normalise_email(&req.email) {
        Some(email) => state
            .store
            .account_by_email(&email)
            .await?
            .filter(|(account, _)| account.home_bot == key.bot_id),
        None => None,
    };
    let (account, hash) = match found {
        Some((account, hash)) => (Some(account), Some(hash)),
        None => (None, None),
    };
    let matches = state
        .passwords
        .verify(req.password, hash)
        .await
        .map_err(password_failed)?;
    match account {
        Some(account) if matches => Ok(Json(view(account))),
        _ => Err(ApiError::forbidden(
            ErrorCode::SignInFailed,
            "the email or password is wrong",
        )),
    }
}

/// An account and the bot users linked to it (web keys of the bot that
/// created it only).
#[utoipa::path(
    get, path = "/api/v1/accounts/{user_ref}", tag = "accounts",
    params(("user_ref" = String, Path, description = "The account's `web:` user", pattern = "^web:[A-Za-z0-9_.@-]{1,64}$")),
    responses(
        (status = 200, body = AccountView),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 404, description = "This web user has no account of this key's bot", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(user_ref): ApiPath<String>,
) -> Result<Json<AccountView>, ApiError> {
    web_only(&key)?;
    let user = user_ref_for(&key.frontend, &user_ref)?;
    let account = state
        .store
        .get_account(&user)
        .await?
        .filter(|account| account.home_bot == key.bot_id)
        .ok_or_else(account_not_found)?;
    Ok(Json(view(account)))
}

/// The account's owner confirmed being 18 or older (web keys of the bot that
/// created the account, after the website asked its signed-in owner):
/// adult content is allowed for the account's website jobs from now on,
/// where the plan allows it. The first confirmation's time stays; the web
/// key cannot claim it in a job's request instead.
#[utoipa::path(
    post, path = "/api/v1/accounts/{user_ref}/age-confirmation", tag = "accounts",
    params(("user_ref" = String, Path, description = "The account's `web:` user", pattern = "^web:[A-Za-z0-9_.@-]{1,64}$")),
    responses(
        (status = 200, description = "The account, with `age_confirmed_at`", body = AccountView),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 404, description = "This web user has no account of this key's bot", body = ApiErrorBody),
        (status = 422, body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn confirm_age(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(user_ref): ApiPath<String>,
) -> Result<Json<AccountView>, ApiError> {
    web_only(&key)?;
    let user = user_ref_for(&key.frontend, &user_ref)?;
    state
        .store
        .confirm_age(&user, &key.bot_id, now_ms())
        .await?
        .ok_or_else(account_not_found)?;
    tracing::info!(user_ref = %user, bot_id = %key.bot_id, "an account confirmed its age");
    let account = state
        .store
        .get_account(&user)
        .await?
        .filter(|account| account.home_bot == key.bot_id)
        .ok_or_else(account_not_found)?;
    Ok(Json(view(account)))
}

/// A one-time code for a Telegram or Discord user to link to a website
/// account (a bot's key, for a user of its platform; created on first
/// sight). Valid for 10 minutes; asking again replaces the earlier code.
#[utoipa::path(
    post, path = "/api/v1/link-codes", tag = "accounts",
    request_body = LinkCodeRequest,
    responses(
        (status = 201, description = "The code to show the user", body = LinkCode),
        (status = 403, description = "The user is not on the key's platform", body = ApiErrorBody),
        (status = 422, description = "Invalid user, or a web user (`not_linkable`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn link_code(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiJson(req): ApiJson<LinkCodeRequest>,
) -> Result<(StatusCode, Json<LinkCode>), ApiError> {
    speaks_for(&key.frontend, &req.user_ref)?;
    let user = req.user_ref;
    if user.platform() == Platform::Web {
        return Err(ApiError::invalid(
            ErrorCode::NotLinkable,
            "only Telegram and Discord users link to a website account",
        )
        .with_field("user_ref"));
    }
    let now = now_ms();
    let expires_at = now + CODE_TTL_MS;
    // A clash with another live code (about one in 10^11 per live code) draws again.
    for _ in 0..4 {
        let code = new_code();
        if state
            .store
            .put_link_code(&user, &code_hash(&code), expires_at, now)
            .await?
        {
            tracing::info!(user_ref = %user, bot_id = %key.bot_id, "link code issued");
            return Ok((
                StatusCode::CREATED,
                Json(LinkCode {
                    code: format!("{}-{}", &code[..4], &code[4..]),
                    expires_at: rfc3339(expires_at),
                }),
            ));
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::LinkCodeUnavailable,
        "no link code could be drawn; try again",
    ))
}

/// Link the bot user who asked for a code to this account (web keys of the
/// bot that created it only).
/// A code links once; a bot user linked to another account moves to this one.
#[utoipa::path(
    post, path = "/api/v1/accounts/{user_ref}/links", tag = "accounts",
    params(("user_ref" = String, Path, description = "The account's `web:` user", pattern = "^web:[A-Za-z0-9_.@-]{1,64}$")),
    request_body = RedeemLinkRequest,
    responses(
        (status = 200, description = "Linked; the account with its linked users", body = AccountView),
        (status = 403, description = "Not a web key (`forbidden_frontend`)", body = ApiErrorBody),
        (status = 404, description = "This web user has no account of this key's bot", body = ApiErrorBody),
        (status = 422, description = "The code is unknown, used or expired (`invalid_link_code`)", body = ApiErrorBody),
    ),
    security(("frontend_key" = []))
)]
pub async fn redeem(
    State(state): State<AppState>,
    Frontend(key): Frontend,
    ApiPath(user_ref): ApiPath<String>,
    ApiJson(req): ApiJson<RedeemLinkRequest>,
) -> Result<Json<AccountView>, ApiError> {
    web_only(&key)?;
    let account = user_ref_for(&key.frontend, &user_ref)?;
    let invalid = || {
        ApiError::invalid(
            ErrorCode::InvalidLinkCode,
            "the link code is wrong, used or expired; ask the bot for a new one with /link",
        )
        .with_field("code")
    };
    let code = normalise_code(&req.code).ok_or_else(invalid)?;
    match state
        .store
        .redeem_link_code(&account, &key.bot_id, &code_hash(&code), now_ms())
        .await?
    {
        RedeemOutcome::Linked(account) => {
            tracing::info!(user_ref = %account.user_ref, linked = account.linked.len(), "bot user linked");
            Ok(Json(view(account)))
        }
        RedeemOutcome::InvalidCode => Err(invalid()),
        RedeemOutcome::NoAccount => Err(account_not_found()),
    }
}

/// Accounts belong to the website: other frontends' keys are refused.
fn password_failed(e: PasswordError) -> ApiError {
    if let PasswordError::Busy = e {
        tracing::warn!("password hashing busy: a sign-up or sign-in refused");
        // 503: the error envelope adds `Retry-After`.
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Busy,
            "too many sign-ins at once; try again in a moment",
        );
    }
    tracing::error!(error = %e, "password hashing failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalError,
        "an internal error occurred; it has been logged",
    )
}

fn view(a: AccountRecord) -> AccountView {
    AccountView {
        user_ref: a.user_ref,
        email: a.email,
        linked: a.linked,
        created_at: rfc3339(a.created_at),
        age_confirmed_at: a.age_confirmed_at.map(rfc3339),
    }
}

/// An email as stored: trimmed and lower-cased; `None` unless it has 3 to 254
/// characters, exactly one `@` after a non-empty local part, a domain with a
/// `.` at neither end, and no blanks or control characters.
pub fn normalise_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    if !EMAIL_CHARS.contains(&email.chars().count())
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.');
    valid.then_some(email)
}

/// A new link code: [`CODE_LEN`] characters of [`CODE_ALPHABET`], drawn from
/// the thread's CSPRNG.
fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// A code as typed, as issued: upper case, without blanks or dashes; `None`
/// when it cannot be a code at all.
pub fn normalise_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// What is stored of a code: its SHA-256.
fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowered_and_checked() {
        assert_eq!(
            normalise_email("  Ada@Example.ORG "),
            Some("ada@example.org".into())
        );
        assert_eq!(normalise_email("a@b.c"), Some("a@b.c".into()));
        for bad in [
            "",
            "ab",
            "ada",
            "@example.org",
            "ada@",
            "ada@example",
            "ada@.example.org",
            "ada@example.org.",
            "ada@@example.org",
            "a@b@example.org",
            "ada lovelace@example.org",
            "ada@exa\u{0}mple.org",
            "ada@exa\u{7f}mple.org",
        ] {
            assert_eq!(normalise_email(bad), None, "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(242));
        assert_eq!(long.len(), 254);
        assert!(normalise_email(&long).is_some());
        assert!(normalise_email(&format!("a{long}")).is_none());
    }

    #[test]
    fn a_busy_hasher_is_a_503_to_retry() {
        use axum::response::IntoResponse;
        let resp = password_failed(PasswordError::Busy).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers().get(axum::http::header::RETRY_AFTER).unwrap(),
            "1"
        );
        let e = password_failed(PasswordError::Busy);
        assert_eq!(e.code, "busy");
    }

    #[test]
    fn codes_are_unambiguous_and_read_back_however_typed() {
        for _ in 0..100 {
            let code = new_code();
            assert_eq!(code.len(), CODE_LEN);
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
            assert_eq!(normalise_code(&code), Some(code.clone()));
        }
        assert_eq!(normalise_code("k7qf-m2xd"), Some("K7QFM2XD".into()));
        assert_eq!(normalise_code(" K7QF M2XD\n"), Some("K7QFM2XD".into()));
        assert_eq!(normalise_code("K7QF-M2X"), None);
        assert_eq!(normalise_code("K7QF-M2XD9"), None);
        // 0, 1, I, L and O are never in a code.
        assert_eq!(normalise_code("K7QF-M2X0"), None);
        assert_eq!(normalise_code("K7QF-M2XI"), None);
        assert_eq!(normalise_code("ÄÄÄÄ-ÄÄÄÄ"), None);
        assert_ne!(code_hash("K7QFM2XD"), code_hash("K7QFM2XE"));
    }
}
