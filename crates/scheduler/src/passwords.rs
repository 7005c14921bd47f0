//! Website passwords: Argon2id hashes, computed off the async runtime and a
//! few at a time.
//!
//! A password is kept only as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`)
//! with Argon2id's default parameters, which the string names, so a later change
//! of parameters still verifies old hashes. Hashing is slow and takes about 19 MiB
//! on purpose; it runs on tokio's blocking threads, at most as many at once as the
//! machine has cores, so a flood of sign-ups or sign-ins waits its turn (and meets
//! the request timeout) instead of exhausting memory or stalling other requests.
//!
//! Signing in with an email no account has verifies against a fixed hash all the
//! same, so the time taken does not tell which emails have accounts.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

/// Hashing or verifying could not be done (never: the password is wrong).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("a stored password hash is not a PHC string: {0}")]
    Corrupt(argon2::password_hash::Error),
    #[error("the password hashing task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes and verifies passwords, a bounded number at once. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    /// At most as many hashes at once as the machine has cores.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_limit(cores)
    }

    pub fn with_limit(at_once: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
        }
    }

    /// Runs `work` on a blocking thread once a permit is free. The permit is
    /// held until the work ends, even if the request waiting for it is gone.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
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
}
