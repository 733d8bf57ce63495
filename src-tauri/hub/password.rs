//! Room passwords: argon2id hashes (PHC strings), computed and verified on the blocking pool behind
//! a small semaphore. Each check costs ~20 MiB and tens of milliseconds by design; the cap keeps a
//! flood of guesses from taking every blocking thread or the machine's memory, while the async
//! threads keep serving everything else.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use tokio::sync::Semaphore;

use super::error::HubError;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

impl Passwords {
    /// `concurrency` argon2 computations may run at once; more wait their turn.
    pub fn new(concurrency: usize) -> Self {
        Passwords { permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }

    pub async fn hash(&self, password: String) -> Result<String, HubError> {
        let _permit = self.permits.acquire().await.map_err(|_| HubError::ShuttingDown)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HubError::Internal(format!("argon2 hash failed: {e}")))
        })
        .await
        .map_err(|e| HubError::Internal(format!("argon2 task failed: {e}")))?
    }

    /// True when `password` matches `hash`. A malformed stored hash is an internal error, never a
    /// match.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HubError> {
        let _permit = self.permits.acquire().await.map_err(|_| HubError::ShuttingDown)?;
        tokio::task::spawn_blocking(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|_| HubError::Internal("stored password hash is malformed".into()))?;
            Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(|e| HubError::Internal(format!("argon2 task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let p = Passwords::new(2);
        let hash = p.hash("secret123".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(p.verify("secret123".into(), hash.clone()).await.unwrap());
        assert!(!p.verify("wrong".into(), hash.clone()).await.unwrap());
        assert!(!p.verify(String::new(), hash).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_hash_is_an_error_not_a_match() {
        let p = Passwords::new(1);
        assert!(p.verify("x".into(), "not-a-hash".into()).await.is_err());
    }
}
