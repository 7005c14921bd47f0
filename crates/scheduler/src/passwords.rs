//! Website passwords: Argon2id hashes, computed off the async runtime and a
//! few at a time.
//!
//! A password is kept only as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`)
//! with Argon2id's default parameters, which the string names, so a later change
//! of parameters still verifies old hashes. Hashing is slow and takes about 19 MiB
//! on purpose; it runs on tokio's blocking threads, at most half as many at once
//! as the machine has cores (at least one), so the rest of the API keeps CPUs to
//! run on during a flood of sign-ups or sign-ins. A few more
//! ([`MAX_WAITING`]) may wait for their turn; past that a request is refused at
//! once ([`PasswordError::Busy`], 503 `busy` on the API) instead of queueing
//! without bound.
//!
//! Signing in with an email no account has verifies against a fixed hash all the
//! same, so the time taken does not tell which emails have accounts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::{Semaphore, TryAcquireError};

/// Hashes that may wait for a free permit; one more is refused as busy.
pub const MAX_WAITING: usize = 16;

/// Hashing or verifying could not be done (never: the password is wrong).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too many hashes are running and waiting already: try again shortly.
    #[error("too many password hashes are waiting")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("a stored password hash is not a PHC string: {0}")]
    Corrupt(argon2::password_hash::Error),
    #[error("the password hashing task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes and verifies passwords, a bounded number at once, with a bounded
/// number waiting. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit now.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    /// At most half as many hashes at once as the machine has cores (at
    /// least one), and [`MAX_WAITING`] more waiting.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_limits(cores / 2, MAX_WAITING)
    }

    /// `at_once` hashes at once (at least one), and [`MAX_WAITING`] waiting.
    pub fn with_limit(at_once: usize) -> Self {
        Self::with_limits(at_once, MAX_WAITING)
    }

    /// `at_once` hashes at once (at least one), and `max_waiting` waiting.
    pub fn with_limits(at_once: usize, max_waiting: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    /// Runs `work` on a blocking thread once a permit is free, or answers
    /// [`PasswordError::Busy`] when none is and `max_waiting` requests wait
    /// already. The permit is held until the work ends, even if the request
    /// waiting for it is gone.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                let _waiting = Waiting::enter(&self.waiting, self.max_waiting)?;
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
            Err(TryAcquireError::Closed) => unreachable!("the semaphore is never closed"),
        };
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await?)
    }

    /// The PHC string of a new Argon2id hash of `password`, with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_now(&password))
            .await?
            .map_err(PasswordError::Hash)
    }

    /// Whether `password` matches the PHC string `stored`. With no stored hash
    /// (no such account) it verifies against a fixed hash, taking as long,
    /// and answers false.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        self.run(move || match stored {
            Some(phc) => verify_now(&password, &phc),
            None => {
                let _ = verify_now(&password, dummy_hash());
                Ok(false)
            }
        })
        .await?
    }
}

/// One request counted as waiting for a permit, until dropped (it got one,
/// or the request was dropped while waiting).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Result<Self, PasswordError> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(PasswordError::Busy);
        }
        Ok(Self(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn hash_now(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_now(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(PasswordError::Corrupt)?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Hash(e)),
    }
}

/// A hash of a random password no one knows, made with the same parameters
/// as real ones, to verify against when an email has no account.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let secret = crate::auth::new_token();
        hash_now(&secret).expect("hashing a random token")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::with_limit(2);
        let phc = passwords.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(passwords
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!passwords
            .verify("correct horsE".into(), Some(phc.clone()))
            .await
            .unwrap());
        // Two hashes of one password differ (fresh salts).
        assert_ne!(passwords.hash("correct horse".into()).await.unwrap(), phc);
        // No account: false, after the same work.
        assert!(!passwords.verify("anything".into(), None).await.unwrap());
        assert!(matches!(
            passwords
                .verify("x".into(), Some("not a hash".into()))
                .await,
            Err(PasswordError::Corrupt(_))
        ));
    }

    /// Waits until `n` requests wait for a permit.
    async fn waiting(passwords: &Passwords, n: usize) {
        for _ in 0..1000 {
            if passwords.waiting.load(Ordering::Acquire) == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never {n} waiting");
    }

    #[tokio::test]
    async fn past_the_waiting_limit_a_request_is_refused_at_once() {
        let passwords = Passwords::with_limits(1, 2);
        // Every permit taken: requests wait, two of them at most.
        let held = passwords.permits.clone().acquire_owned().await.unwrap();
        let first = tokio::spawn({
            let p = passwords.clone();
            async move { p.verify("a".into(), None).await }
        });
        let second = tokio::spawn({
            let p = passwords.clone();
            async move { p.hash("b".into()).await }
        });
        waiting(&passwords, 2).await;
        assert!(matches!(
            passwords.verify("c".into(), None).await,
            Err(PasswordError::Busy)
        ));
        assert!(matches!(
            passwords.hash("d".into()).await,
            Err(PasswordError::Busy)
        ));
        // A request given up while waiting leaves its place.
        second.abort();
        assert!(second.await.unwrap_err().is_cancelled());
        waiting(&passwords, 1).await;
        let third = tokio::spawn({
            let p = passwords.clone();
            async move { p.verify("e".into(), None).await }
        });
        waiting(&passwords, 2).await;
        // Once permits free up, the waiting ones run.
        drop(held);
        assert!(!first.await.unwrap().unwrap());
        assert!(!third.await.unwrap().unwrap());
        assert_eq!(passwords.waiting.load(Ordering::Acquire), 0);
        assert!(!passwords.verify("f".into(), None).await.unwrap());
    }

    #[test]
    fn half_the_cores_hash_at_once() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let passwords = Passwords::new();
        assert_eq!(passwords.permits.available_permits(), (cores / 2).max(1));
        assert_eq!(passwords.max_waiting, MAX_WAITING);
    }
}
