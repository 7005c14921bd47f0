//! Who the visitor is: one signed, HttpOnly, SameSite=Lax cookie.
//!
//! The cookie holds a small JSON value: the CSRF token every form must echo,
//! and, once signed in, the account's `user_ref` and email. It is signed
//! (HMAC-SHA256) with the site's key, so it cannot be forged or edited, and
//! nothing about sessions is stored server-side: any number of website
//! processes with the same secret serve the same visitors.
//!
//! CSRF: every form carries the cookie's token in a hidden `csrf` field and
//! every POST compares the two in constant time. A page from another site
//! can neither read the token nor (SameSite=Lax) send the cookie with a
//! cross-site POST.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::WebError;
use crate::AppState;

/// The cookie's name.
pub const COOKIE: &str = "tessera_session";
/// How long a sign-in lasts.
pub const MAX_AGE_SECS: i64 = 30 * 24 * 3600;

/// The signing key from a configured secret of at least 32 bytes: SHA-512 of
/// it, so any length of secret gives the 64 bytes the signer wants.
pub fn key_from_secret(secret: &str) -> anyhow::Result<Key> {
    use sha2::{Digest, Sha512};
    if secret.len() < 32 {
        anyhow::bail!("the cookie secret must be at least 32 characters");
    }
    Ok(Key::from(&Sha512::digest(secret.as_bytes())))
}

/// A signed-in account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user_ref: tessera_core::UserRef,
    pub email: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Stored {
    /// CSRF token.
    c: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Account>,
    /// When the account signed in, seconds since the epoch.
    #[serde(default)]
    t: i64,
}

/// The visitor's session, read from (or made for) the request.
#[derive(Clone, Debug)]
pub struct Session {
    pub csrf: String,
    pub account: Option<Account>,
    signed_in_at: i64,
    /// Whether the cookie must be (re)sent with the answer.
    fresh: bool,
    jar: SignedCookieJar,
    secure: bool,
}

fn token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Session {
    /// The signed-in account, or a redirect to the sign-in page.
    pub fn require(&self) -> Result<&Account, WebError> {
        self.account.as_ref().ok_or(WebError::SignInNeeded)
    }

    /// Checks a submitted form's CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), WebError> {
        if bool::from(submitted.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }

    /// Signs `account` in, with a new CSRF token.
    pub fn sign_in(mut self, account: Account) -> Self {
        self.account = Some(account);
        self.csrf = token();
        self.signed_in_at = chrono::Utc::now().timestamp();
        self.fresh = true;
        self
    }

    /// Signs out, with a new CSRF token.
    pub fn sign_out(mut self) -> Self {
        self.account = None;
        self.csrf = token();
        self.fresh = true;
        self
    }

    /// The cookie jar to answer with: the session's cookie when it changed.
    pub fn jar(self) -> SignedCookieJar {
        if !self.fresh {
            return self.jar;
        }
        let value = serde_json::to_string(&Stored {
            c: self.csrf,
            a: self.account,
            t: self.signed_in_at,
        })
        .unwrap_or_default();
        let mut cookie = Cookie::new(COOKIE, value);
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_path("/");
        cookie.set_secure(self.secure);
        cookie.set_max_age(cookie::time::Duration::seconds(MAX_AGE_SECS));
        self.jar.add(cookie)
    }
}

impl<S> FromRequestParts<S> for Session
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let jar = SignedCookieJar::from_headers(&parts.headers, app.key.clone());
        let now = chrono::Utc::now().timestamp();
        let stored = jar
            .get(COOKIE)
            .and_then(|c| serde_json::from_str::<Stored>(c.value()).ok())
            .filter(|s| s.c.len() >= 32);
        Ok(match stored {
            Some(s) => {
                let expired = s.a.is_some() && now - s.t > MAX_AGE_SECS;
                Session {
                    csrf: s.c,
                    account: if expired { None } else { s.a },
                    signed_in_at: s.t,
                    fresh: expired,
                    jar,
                    secure: app.config.secure_cookies,
                }
            }
            None => Session {
                csrf: token(),
                account: None,
                signed_in_at: 0,
                fresh: true,
                jar,
                secure: app.config.secure_cookies,
            },
        })
    }
}
