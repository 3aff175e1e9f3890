//! Passwords of people (SPEC AC-5): the rules a new password must meet, argon2id hashing with
//! its parameters recorded in each PHC string, and constant-time checks on the blocking pool.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, Version, password_hash::PasswordHasher};
use ward_crypto::SecretString;

/// Fewest characters (Unicode scalar values) of a password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most bytes of a password: bounds the work of a check, far above any real password.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The 30,000 most common passwords (lowercase), from the `zxcvbn` crate: see `data/NOTICE`.
const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| COMMON_PASSWORDS.lines().filter(|l| !l.is_empty()).collect());

/// argon2id parameters of new hashes: OWASP's first choice (19 MiB, 2 passes, 1 lane). Each
/// PHC string records its own, so raising them later leaves old hashes verifiable.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, Some(32)).unwrap_or_default()
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Why a new password is refused. Messages say what rule failed, never the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRule {
    #[error("the password must have at least 12 characters")]
    TooShort,
    #[error("the password is too long")]
    TooLong,
    #[error("the password is one of the most common passwords")]
    Common,
    #[error("the password must not be the username")]
    IsUsername,
    #[error("the new password must differ from the current one")]
    SameAsCurrent,
}

/// Checks a new password against the rules: length, the common-password list (compared
/// case-insensitively), and not the username.
pub fn check_new_password(password: &str, username: &str) -> Result<(), PasswordRule> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordRule::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordRule::TooShort);
    }
    let lower = zeroize::Zeroizing::new(password.to_lowercase());
    if COMMON.contains(lower.as_str()) {
        return Err(PasswordRule::Common);
    }
    if lower.as_str() == username.to_lowercase() {
        return Err(PasswordRule::IsUsername);
    }
    Ok(())
}

/// Whether `password` is in the bundled common-password list (case-insensitive).
pub fn is_common(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().as_str())
}

/// Number of passwords in the bundled list.
pub fn common_list_len() -> usize {
    COMMON.len()
}

/// The argon2id PHC string of `password`, computed on the blocking pool.
pub async fn hash(password: SecretString) -> Result<String, argon2::password_hash::Error> {
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.expose().as_bytes())
            .map(|h| h.to_string())
    })
    .await
    .unwrap_or(Err(argon2::password_hash::Error::Crypto))
}

/// A hash no password matches, with the parameters of real ones: an unknown user costs what a
/// wrong password costs.
pub(crate) static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hasher()
        .hash_password(ward_crypto::random_token(32).as_bytes())
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Whether `password` matches the PHC string `phc` (constant-time comparison of the
/// derived hash), on the blocking pool.
pub async fn verify(phc: String, password: SecretString) -> bool {
    #[cfg(test)]
    let _ = VERIFIED.try_with(|v| v.borrow_mut().push(phc_params(&phc)));
    tokio::task::spawn_blocking(move || {
        let mut memory = Vec::new();
        crate::secret::argon2_matches(&phc, password.expose().as_bytes(), &mut memory)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
tokio::task_local! {
    /// The parameters of each hash a test's task verified against: proof of the work done.
    pub(crate) static VERIFIED: std::cell::RefCell<Vec<String>>;
}

/// The algorithm, version and parameters of a PHC string (without salt and hash).
#[cfg(test)]
pub(crate) fn phc_params(phc: &str) -> String {
    phc.split('$').take(4).collect::<Vec<_>>().join("$")
}

/// A one-time password for a new user or a reset: 120 random bits in base64url (20
/// characters), never in the common list.
pub fn generate_one_time() -> SecretString {
    SecretString::new(ward_crypto::random_token(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_table() {
        let cases: &[(&str, &str, Result<(), PasswordRule>)] = &[
            ("", "alice", Err(PasswordRule::TooShort)),
            ("elevenchars", "alice", Err(PasswordRule::TooShort)),
            // 11 characters of 2 bytes each: counted in characters, not bytes.
            ("ééééééééééé", "alice", Err(PasswordRule::TooShort)),
            ("twelve chars", "alice", Ok(())),
            ("correct horse battery", "alice", Ok(())),
            // In the bundled list, whatever the case.
            ("qwertyuiop123", "alice", Err(PasswordRule::Common)),
            ("QwertyUiop123", "alice", Err(PasswordRule::Common)),
            ("1qaz2wsx3edc", "alice", Err(PasswordRule::Common)),
            ("alice.wonder1", "alice.wonder1", Err(PasswordRule::IsUsername)),
            ("ALICE.WONDER1", "alice.wonder1", Err(PasswordRule::IsUsername)),
        ];
        for (pw, user, want) in cases {
            assert_eq!(check_new_password(pw, user), *want, "{pw:?}");
        }
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(check_new_password(&long, "a"), Err(PasswordRule::TooLong));
    }

    #[test]
    fn the_list_is_bundled_whole() {
        assert!(common_list_len() >= 10_000, "{}", common_list_len());
        for pw in ["123456", "password", "iloveyou", "trustno1", "qwertyuiop123"] {
            assert!(is_common(pw), "{pw}");
        }
        // Every list entry of an allowed length is refused.
        let long_ones: Vec<&str> = COMMON_PASSWORDS
            .lines()
            .filter(|l| l.chars().count() >= MIN_PASSWORD_CHARS)
            .collect();
        assert!(long_ones.len() > 100);
        for pw in long_ones {
            assert_eq!(
                check_new_password(pw, "someone"),
                Err(PasswordRule::Common),
                "{pw}"
            );
        }
    }

    #[test]
    fn one_time_passwords_meet_the_rules() {
        for _ in 0..20 {
            let pw = generate_one_time();
            assert_eq!(pw.expose().len(), 20);
            assert_eq!(check_new_password(pw.expose(), "u"), Ok(()));
        }
    }

    #[tokio::test]
    async fn hashes_record_their_parameters_and_verify() {
        let phc = hash(SecretString::new("correct horse battery".into()))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify(phc.clone(), SecretString::new("correct horse battery".into())).await);
        assert!(!verify(phc.clone(), SecretString::new("correct horse batterY".into())).await);
        assert!(!verify(DUMMY_HASH.clone(), SecretString::new("".into())).await);
        assert!(DUMMY_HASH.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        // Two hashes of one password differ (salted).
        let again = hash(SecretString::new("correct horse battery".into()))
            .await
            .unwrap();
        assert_ne!(phc, again);
    }
}
