use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `n` random bytes from the system CSPRNG.
///
/// # Panics
/// If the operating system RNG fails, which leaves no safe way to continue.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut out).expect("system random number generator failed");
    out
}

/// `n_bytes` random bytes encoded as base64url without padding.
pub fn random_token(n_bytes: usize) -> String {
    let bytes = zeroize::Zeroizing::new(random_bytes(n_bytes));
    URL_SAFE_NO_PAD.encode(&*bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values() {
        assert_eq!(random_bytes(0).len(), 0);
        assert_eq!(random_bytes(48).len(), 48);
        assert_ne!(random_bytes(16), random_bytes(16));
        let t = random_token(32);
        assert_eq!(t.len(), 43);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(random_token(32), random_token(32));
    }
}
