//! Passwords: the redacted [`Password`] type and Argon2id hashing for the
//! directories this crate ships.
//!
//! Hashing and checking run on tokio's blocking pool: an Argon2id check costs
//! tens of milliseconds of CPU and must not stall the request workers. An unknown
//! user is checked against a dummy hash, so "no such user" and "wrong password"
//! take about the same time.

use std::fmt;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use zeroize::Zeroize;

use crate::error::StoreError;

/// A password as typed by a user. `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password, for hashing or checking.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
struct HashingFailed;

/// Hashes `password` with Argon2id (default parameters, random salt) into a PHC
/// string, off the async workers.
///
/// # Errors
///
/// [`StoreError::Backend`] if hashing fails (no randomness) or the blocking pool
/// is gone.
pub async fn hash(password: &Password) -> Result<String, StoreError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|_| StoreError::backend(HashingFailed))?
}

fn hash_now(password: &Password) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| StoreError::backend(HashingFailed))
}

/// Checks `password` against a stored PHC hash (`None`: the user does not exist;
/// a dummy hash is checked so the answer takes as long). Off the async workers.
pub async fn verify(stored: Option<String>, password: &Password) -> bool {
    let password = password.clone();
    tokio::task::spawn_blocking(move || verify_now(stored.as_deref(), &password))
        .await
        .unwrap_or(false)
}

/// The user `found` (with their stored PHC hash) if `password` is theirs; `None`
/// for a wrong password or no user, after about the same work. What every
/// [`Directory`](crate::store::Directory) of this crate does for
/// `verify_password`.
pub async fn check<U>(found: Option<(U, String)>, password: &Password) -> Option<U> {
    let (user, phc) = found.unzip();
    if verify(phc, password).await {
        user
    } else {
        None
    }
}

fn verify_now(stored: Option<&str>, password: &Password) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let (phc, real) = match stored {
        Some(phc) => (Some(phc), true),
        None => (
            DUMMY
                .get_or_init(|| hash_now(&Password::new("not a real password")).ok())
                .as_deref(),
            false,
        ),
    };
    let Some(parsed) = phc.and_then(|p| PasswordHash::new(p).ok()) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok();
    matches && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let pw = Password::new("correct horse");
        let phc = hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify(Some(phc.clone()), &pw).await);
        assert!(!verify(Some(phc), &Password::new("correct horsE")).await);
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        assert!(!verify(None, &Password::new("not a real password")).await);
        assert!(!verify(Some("garbage".into()), &Password::new("x")).await);
    }

    #[test]
    fn passwords_are_redacted() {
        let pw = Password::new("hunter2");
        assert_eq!(format!("{pw:?} {pw}"), "Password(<redacted>) <redacted>");
    }
}
