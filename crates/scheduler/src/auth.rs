//! Credentials: frontend API keys and the admin and internal tokens.
//!
//! Frontend keys are 160-bit random secrets (`tsk_` + 40 hex digits). Only their
//! SHA-256 is stored, and a request's key is found by hashing it and looking the
//! hash up. A slow password hash (argon2) would add nothing here: it protects
//! guessable passwords, while a random 160-bit key cannot be guessed, and a fast
//! hash lets every request be checked with one index lookup. Tokens from the
//! configuration are compared by hash in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of frontend API keys, so a leaked one is recognisable in a scan.
pub const KEY_PREFIX: &str = "tsk_";

/// A new frontend API key secret.
pub fn new_api_key() -> String {
    format!("{KEY_PREFIX}{}", random_hex(20))
}

/// A new random token (admin or internal), 256 bits as hex.
pub fn new_token() -> String {
    random_hex(32)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// SHA-256 of a secret, as stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A configured token, kept only as its hash.
#[derive(Clone)]
pub struct TokenCheck(Option<[u8; 32]>);

impl TokenCheck {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(hash_secret))
    }

    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }

    /// True when `presented` is the configured token.
    pub fn matches(&self, presented: &str) -> bool {
        match &self.0 {
            Some(expected) => bool::from(expected.ct_eq(&hash_secret(presented))),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_prefixed_and_checked_by_hash() {
        let a = new_api_key();
        let b = new_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 44);
        let check = TokenCheck::new(Some(&a));
        assert!(check.matches(&a));
        assert!(!check.matches(&b));
        assert!(!TokenCheck::new(None).matches(""));
    }
}
