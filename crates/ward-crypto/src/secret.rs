use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Secret bytes: zeroized on drop, `Debug` prints `***`.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes` (no copy is left behind by this call).
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies `bytes` into a new secret; the caller stays responsible for its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec())
    }

    /// The secret bytes. Do not log or copy them into non-zeroizing storage.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret text (a one-time password, a TOTP secret or URI, a recovery code): zeroized on
/// drop, `Debug` prints `***`. Serializes as its text, for the one place it is shown.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(text: String) -> Self {
        SecretString(text)
    }

    /// The secret text. Do not log or copy it into non-zeroizing storage.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(text: String) -> Self {
        SecretString(text)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A 256-bit data key (AES-256-GCM data encryption key or HMAC blind-index key).
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(SecretBytes);

impl DataKey {
    pub const LEN: usize = 32;

    /// 32 fresh random bytes from the system CSPRNG.
    pub fn generate() -> Result<DataKey> {
        let mut bytes = vec![0u8; Self::LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Crypto)?;
        Ok(DataKey(SecretBytes::new(bytes)))
    }

    /// A data key from exactly 32 bytes (copied).
    pub fn from_bytes(bytes: &[u8]) -> Result<DataKey> {
        if bytes.len() != Self::LEN {
            return Err(Error::InvalidKey("data key must be 32 bytes"));
        }
        Ok(DataKey(SecretBytes::from_slice(bytes)))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_slice(b"super-secret-value");
        assert_eq!(format!("{s:?}"), "***");
        let k = DataKey::from_bytes(&[0x41; 32]).unwrap();
        let dbg = format!("{k:?} {k:#?}");
        assert!(
            !dbg.contains("65") && !dbg.contains("41") && !dbg.contains('A'),
            "{dbg}"
        );
        assert_eq!(format!("{k:?}"), "DataKey(***)");
    }

    #[test]
    fn data_key_generate_and_length() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a.expose(), b.expose());
        assert!(DataKey::from_bytes(&[0; 31]).is_err());
        assert!(DataKey::from_bytes(&[0; 33]).is_err());
    }
}
