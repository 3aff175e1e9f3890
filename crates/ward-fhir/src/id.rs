//! FHIR logical ids.

/// Whether `s` is a valid FHIR id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::is_valid_id;

    #[test]
    fn ids() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_valid_id("A.b-9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("é"));
        assert!(!is_valid_id("../x"));
    }
}
