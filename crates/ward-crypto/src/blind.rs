use std::fmt;

use aws_lc_rs::{digest, hmac};

use crate::DataKey;

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `a` and `b` are equal, in time independent of where they differ (MAC checks).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Keyed blind index: HMAC-SHA256(index key, len(param) || param || len(value) || value).
/// Equal (param, value) pairs give equal outputs; nothing about the value is revealed
/// without the key.
pub struct BlindIndexer {
    key: hmac::Key,
}

impl BlindIndexer {
    pub fn new(key: DataKey) -> BlindIndexer {
        BlindIndexer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose()),
        }
    }

    pub fn blind(&self, param: &str, value: &str) -> [u8; 32] {
        self.tag(&[param.as_bytes(), value.as_bytes()])
    }

    /// A keyed digest of `bytes` in the domain `label` (e.g. the content hash of a stored
    /// version): unlike a bare SHA-256, it cannot be used to confirm a guessed plaintext.
    pub fn mac(&self, label: &str, bytes: &[u8]) -> [u8; 32] {
        self.tag(&[label.as_bytes(), bytes])
    }

    /// HMAC over length-prefixed fields, so field boundaries cannot be shifted.
    fn tag(&self, fields: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for field in fields {
            let len = u64::try_from(field.len()).unwrap_or(u64::MAX);
            ctx.update(&len.to_be_bytes());
            ctx.update(field);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl fmt::Debug for BlindIndexer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndexer(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_vector() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn blind_is_deterministic_keyed_and_unambiguous() {
        let key = DataKey::generate().unwrap();
        let b = BlindIndexer::new(key.clone());
        let b_same = BlindIndexer::new(key);
        let b_other = BlindIndexer::new(DataKey::generate().unwrap());
        assert_eq!(b.blind("family", "smith"), b_same.blind("family", "smith"));
        assert_ne!(b.blind("family", "smith"), b_other.blind("family", "smith"));
        assert_ne!(b.blind("family", "smith"), b.blind("given", "smith"));
        assert_ne!(b.blind("ab", "c"), b.blind("a", "bc"));
        assert_eq!(format!("{b:?}"), "BlindIndexer(***)");
    }

    #[test]
    fn blind_matches_manual_hmac() {
        let key = DataKey::from_bytes(&[9; 32]).unwrap();
        let b = BlindIndexer::new(key);
        let mut msg = Vec::new();
        msg.extend_from_slice(&6u64.to_be_bytes());
        msg.extend_from_slice(b"family");
        msg.extend_from_slice(&5u64.to_be_bytes());
        msg.extend_from_slice(b"smith");
        let expect = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]), &msg);
        assert_eq!(&b.blind("family", "smith")[..], expect.as_ref());
    }
}
