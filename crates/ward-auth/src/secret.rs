//! Client secrets: generated with the OS RNG, shown once, stored only as argon2id hashes.
//!
//! Hashing is CPU-heavy, so it runs on the blocking pool, never on the async threads.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use zeroize::Zeroizing;

/// A fresh client secret: 32 random bytes, base64url.
pub fn generate_secret() -> Zeroizing<String> {
    Zeroizing::new(ward_crypto::random_token(32))
}

/// argon2id (v19, default parameters) PHC string of `secret`.
pub async fn hash_secret(secret: Zeroizing<String>) -> Result<String, argon2::password_hash::Error> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(secret.as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .unwrap_or(Err(argon2::password_hash::Error::Crypto))
}

/// A valid argon2id hash of a secret nobody knows, so an unknown client costs the same
/// time as a wrong secret and the two cannot be told apart.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Argon2::default()
        .hash_password(ward_crypto::random_token(32).as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Checks `secret` against a PHC string; `None` means "no such client" and still spends
/// the hashing time. Comparison of the computed hash is constant time (argon2 crate).
pub async fn verify_secret(secret: Zeroizing<String>, phc: Option<String>) -> bool {
    let known = phc.is_some();
    tokio::task::spawn_blocking(move || {
        let phc = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
            && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let secret = generate_secret();
        let hash = hash_secret(secret.clone()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains(secret.as_str()));
        assert!(verify_secret(secret.clone(), Some(hash.clone())).await);
        assert!(!verify_secret(Zeroizing::new("wrong".into()), Some(hash)).await);
        assert!(!verify_secret(secret, None).await);
    }
}
