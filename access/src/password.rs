//! Passwords: at least 12 characters, hashed with argon2id at OWASP's recommended parameters
//! (19 MiB, 2 iterations, 1 lane). Hashing and verifying are CPU-bound, so the async helpers
//! run them on the blocking pool. A login for an unknown user verifies against a dummy hash so
//! that it costs the same time as a wrong password.

use std::sync::OnceLock;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::AccessError;

pub const MIN_LEN: usize = 12;
const MAX_LEN: usize = 1024;

/// A password that meets the policy. Its `Debug` never shows it.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub fn parse(s: &str) -> Result<Password, AccessError> {
        let n = s.chars().count();
        if n < MIN_LEN {
            return Err(AccessError::WeakPassword("must be at least 12 characters"));
        }
        if s.len() > MAX_LEN {
            return Err(AccessError::WeakPassword("must be at most 1024 bytes"));
        }
        if s.chars().all(|c| s.starts_with(c)) {
            return Err(AccessError::WeakPassword("must not repeat one character"));
        }
        Ok(Password(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The argon2id instance with the parameters stated above.
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn hash(password: &Password) -> Result<String, AccessError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AccessError::Hashing)
}

/// True if `password` matches the PHC-format `hash`. A malformed hash never matches.
pub fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the username is unknown.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(uuid::Uuid::now_v7().to_string().as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

pub async fn hash_blocking(password: Password) -> Result<String, AccessError> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|_| AccessError::Hashing)?
}

pub async fn verify_blocking(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&hash, &password))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaaaaaaaaaa").is_err());
        assert!(Password::parse("correct horse battery").is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("correct horse battery").unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn hash_and_verify() {
        let p = Password::parse("correct horse battery").unwrap();
        let h = hash(&p).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify(&h, "correct horse battery"));
        assert!(!verify(&h, "correct horse battery!"));
        assert!(!verify("not a hash", "x"));
        assert!(!verify(dummy_hash(), "correct horse battery"));
    }
}
