//! Credentials: frontend API keys, developer keys and the admin and internal
//! tokens.
//!
//! Frontend keys (`tsk_`) and developer keys (`tdk_`) are 160-bit random secrets (prefix + 40 hex digits). Only their
//! SHA-256 is stored, and a request's key is found by hashing it and looking the
//! hash up. A slow password hash (argon2) would add nothing here: it protects
//! guessable passwords, while a random 160-bit key cannot be guessed, and a fast
//! hash lets every request be checked with one index lookup. Tokens from the
//! configuration are compared by hash in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{ApiKeyRecord, DeveloperKeyRecord};

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

/// Prefix of developer keys (a website account's personal keys for the
/// gateway): told apart from frontend keys at a glance, and in a scan.
pub const DEVELOPER_KEY_PREFIX: &str = "tdk_";

/// A new developer key secret.
pub fn new_developer_key() -> String {
    format!("{DEVELOPER_KEY_PREFIX}{}", random_hex(20))
}

/// A stored key a [`KeyCache`] keeps: known by its id when it is revoked.
pub trait CachedKey: Clone {
    type Id: Clone + Eq + std::hash::Hash;

    fn key_id(&self) -> &Self::Id;
}

impl CachedKey for ApiKeyRecord {
    type Id = tessera_core::ApiKeyId;

    fn key_id(&self) -> &Self::Id {
        &self.id
    }
}

impl CachedKey for DeveloperKeyRecord {
    type Id = tessera_core::DeveloperKeyId;

    fn key_id(&self) -> &Self::Id {
        &self.id
    }
}

/// Keys found recently, by secret hash, so a busy frontend does not cost a
/// database round trip per request. Only live keys are kept, each for at most the
/// configured time (`auth.key_cache_secs`); revoking a key drops it here at once,
/// and from other replicas' caches when its time is up. One cache holds
/// frontend keys, another developer keys.
pub struct KeyCache<K: CachedKey = ApiKeyRecord> {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (K, Instant)>>,
    /// Keys revoked here recently: a lookup that read the key just before the
    /// revocation must not put it back.
    revoked: Mutex<HashMap<K::Id, Instant>>,
}

impl<K: CachedKey> KeyCache<K> {
    /// Most keys kept; past it the cache starts over (frontends number in tens).
    const MAX_ENTRIES: usize = 10_000;

    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<K> {
        let entries = self.entries.lock().expect("key cache lock");
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(key, _)| key.clone())
    }

    pub fn put(&self, hash: [u8; 32], key: K) {
        if self.ttl.is_zero() {
            return;
        }
        // Lock order everywhere: revoked, then entries. Holding `revoked` while
        // inserting means a revocation cannot slip in between check and insert.
        let mut revoked = self.revoked.lock().expect("key cache lock");
        revoked.retain(|_, at| at.elapsed() < self.ttl);
        if revoked.contains_key(key.key_id()) {
            return;
        }
        let mut entries = self.entries.lock().expect("key cache lock");
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (key, Instant::now()));
    }

    /// Forgets a revoked key, and refuses to cache it again for one lifetime
    /// (a lookup racing the revocation may have read it as live).
    pub fn forget(&self, id: &K::Id) {
        let mut revoked = self.revoked.lock().expect("key cache lock");
        revoked.insert(id.clone(), Instant::now());
        let mut entries = self.entries.lock().expect("key cache lock");
        entries.retain(|_, (key, _)| key.key_id() != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_key_is_not_cached_again_by_a_racing_lookup() {
        let cache: KeyCache = KeyCache::new(Duration::from_secs(60));
        let key = ApiKeyRecord {
            id: tessera_core::ApiKeyId::generate(),
            frontend: tessera_core::Platform::Web,
            bot_id: "b".parse().unwrap(),
            created_at: 0,
            revoked_at: None,
        };
        cache.put([1; 32], key.clone());
        assert_eq!(cache.get(&[1; 32]), Some(key.clone()));
        cache.forget(&key.id);
        assert_eq!(cache.get(&[1; 32]), None);
        // The lookup that read the key before the revocation finishes now.
        cache.put([1; 32], key);
        assert_eq!(cache.get(&[1; 32]), None);
    }

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
