use std::fmt;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::{Error, Result, SecretBytes, sha256};

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The Ed25519 key that signs audit checkpoints (AU-3). It is a key of its own, stored in
/// `keys/audit-ed25519.p8`, never a data key, the KEK or the token signing key.
pub struct AuditKey {
    pkcs8: SecretBytes,
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl AuditKey {
    /// A new random Ed25519 key.
    pub fn generate() -> Result<AuditKey> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())?;
        AuditKey::from_pkcs8_der(doc.as_ref())
    }

    /// Parses a PKCS#8 (v1 or v2) DER Ed25519 private key (the bytes are copied).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<AuditKey> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| Error::InvalidKey("audit key (expected Ed25519 PKCS#8 DER)"))?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| Error::InvalidKey("Ed25519 public key"))?;
        Ok(AuditKey {
            pkcs8: SecretBytes::from_slice(der),
            pair,
            public,
        })
    }

    /// The private key as PKCS#8 DER (secret).
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8.expose()
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Key id: see [`audit_key_id`].
    pub fn key_id(&self) -> String {
        audit_key_id(&self.public)
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) document.
    pub fn public_key_pem(&self) -> String {
        ed25519_public_key_pem(&self.public)
    }

    /// Signs `message` (64-byte Ed25519 signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKey")
            .field("key_id", &self.key_id())
            .field("private", &"***")
            .finish()
    }
}

/// The key that authenticates every audit record (AU-3): `HMAC-SHA-256(key, hash || seal)`,
/// where `hash` is the record's chain hash and `seal` the seq of the last signed checkpoint
/// before it (big-endian i64). A writer with database access but without this key cannot add
/// a record that verifies. Stored in `keys/audit-mac.key`, a key of its own.
#[derive(Clone)]
pub struct AuditMacKey {
    key: hmac::Key,
}

impl AuditMacKey {
    pub const LEN: usize = 32;

    /// A new random key.
    pub fn generate() -> Result<AuditMacKey> {
        AuditMacKey::from_bytes(&zeroize::Zeroizing::new(crate::random_bytes(Self::LEN)))
    }

    /// From exactly 32 secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<AuditMacKey> {
        if bytes.len() != Self::LEN {
            return Err(Error::InvalidKey("audit MAC key (expected 32 bytes)"));
        }
        Ok(AuditMacKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        })
    }

    /// The tag of a record with chain hash `hash`, sealed after checkpoint `seal`.
    pub fn tag(&self, hash: &[u8; 32], seal: i64) -> [u8; 32] {
        // 40 bytes: one SHA-256 block for the inner hash, so checking a tag stays cheap.
        let mut msg = [0u8; 40];
        msg[..32].copy_from_slice(hash);
        msg[32..].copy_from_slice(&seal.to_be_bytes());
        let t = hmac::sign(&self.key, &msg);
        let mut out = [0u8; 32];
        out.copy_from_slice(t.as_ref());
        out
    }

    /// Whether `tag` is the tag of (`hash`, `seal`) (constant time).
    pub fn verify(&self, hash: &[u8; 32], seal: i64, tag: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.tag(hash, seal), tag).is_ok()
    }
}

impl fmt::Debug for AuditMacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditMacKey(***)")
    }
}

/// Key id of an audit public key: the first 16 characters of base64url (no padding) of
/// SHA-256 of the raw 32-byte public key.
pub fn audit_key_id(public: &[u8]) -> String {
    let mut id = URL_SAFE_NO_PAD.encode(sha256(public));
    id.truncate(16);
    id
}

/// PEM `PUBLIC KEY` (RFC 8410 SubjectPublicKeyInfo) of a raw Ed25519 public key.
pub fn ed25519_public_key_pem(public: &[u8; 32]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    )
}

/// Parses an Ed25519 public key given as raw 32 bytes, SubjectPublicKeyInfo DER, PEM
/// (`PUBLIC KEY`), or base64 / base64url text of the raw key or of the DER.
pub fn parse_ed25519_public_key(input: &[u8]) -> Result<[u8; 32]> {
    const BAD: Error = Error::InvalidKey("Ed25519 public key");
    if input.len() == 32 {
        return input.try_into().map_err(|_| BAD);
    }
    if input.len() == 44 && input.starts_with(&ED25519_SPKI_PREFIX) {
        return input[12..].try_into().map_err(|_| BAD);
    }
    let text = std::str::from_utf8(input).map_err(|_| BAD)?.trim();
    let body: String = if let Some(rest) = text.strip_prefix("-----BEGIN PUBLIC KEY-----") {
        let end = rest.find("-----END PUBLIC KEY-----").ok_or(BAD)?;
        rest[..end].split_whitespace().collect()
    } else {
        text.to_owned()
    };
    let decoded = STANDARD
        .decode(&body)
        .or_else(|_| URL_SAFE_NO_PAD.decode(&body))
        .map_err(|_| BAD)?;
    if decoded.len() == 32 || (decoded.len() == 44 && decoded.starts_with(&ED25519_SPKI_PREFIX)) {
        parse_ed25519_public_key(&decoded)
    } else {
        Err(BAD)
    }
}

/// Verifies an Ed25519 signature by a raw 32-byte public key.
pub fn verify_ed25519(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify_and_encodings() {
        let k = AuditKey::generate().unwrap();
        let again = AuditKey::from_pkcs8_der(k.pkcs8_der()).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        assert_eq!(k.key_id().len(), 16);
        assert_eq!(k.key_id(), audit_key_id(k.public_key()));
        let sig = k.sign(b"message");
        assert_eq!(sig.len(), 64);
        assert!(verify_ed25519(k.public_key(), b"message", &sig));
        assert!(!verify_ed25519(k.public_key(), b"messagf", &sig));
        let pem = k.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(&parse_ed25519_public_key(pem.as_bytes()).unwrap(), k.public_key());
        assert_eq!(&parse_ed25519_public_key(k.public_key()).unwrap(), k.public_key());
        let b64 = STANDARD.encode(k.public_key());
        assert_eq!(&parse_ed25519_public_key(b64.as_bytes()).unwrap(), k.public_key());
        assert!(parse_ed25519_public_key(b"garbage").is_err());
        assert!(AuditKey::from_pkcs8_der(b"not a key").is_err());
        let dbg = format!("{k:?}");
        assert!(dbg.contains("***") && dbg.contains(&k.key_id()));
    }

    #[test]
    fn mac_key_tags() {
        let k = AuditMacKey::from_bytes(&[7; 32]).unwrap();
        let t = k.tag(&[1; 32], 5);
        assert!(k.verify(&[1; 32], 5, &t));
        assert!(!k.verify(&[1; 32], 6, &t));
        assert!(!k.verify(&[2; 32], 5, &t));
        assert!(!AuditMacKey::generate().unwrap().verify(&[1; 32], 5, &t));
        assert!(AuditMacKey::from_bytes(&[0; 31]).is_err());
        assert_eq!(format!("{k:?}"), "AuditMacKey(***)");
    }

    #[test]
    fn es256_key_is_not_an_audit_key() {
        let es = crate::SigningKey::generate().unwrap();
        assert!(AuditKey::from_pkcs8_der(es.pkcs8_der()).is_err());
    }
}
