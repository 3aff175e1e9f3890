use std::fmt;

use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use zeroize::Zeroizing;

use crate::{DataKey, Error, Result, SecretBytes};

/// The key-encryption key (KEK): wraps and unwraps data keys with AES-256 key wrap
/// (RFC 3394 / NIST SP 800-38F KW). It never encrypts data directly.
#[derive(Clone)]
pub struct Kek(SecretBytes);

/// Length of a wrapped 32-byte data key (key + 8-byte integrity block).
const WRAPPED_LEN: usize = DataKey::LEN + 8;

impl Kek {
    pub const LEN: usize = 32;

    /// A KEK from exactly 32 bytes (copied). Meant for tests and key providers.
    pub fn from_bytes(bytes: &[u8]) -> Result<Kek> {
        if bytes.len() != Self::LEN {
            return Err(Error::InvalidKey("key-encryption key must be 32 bytes"));
        }
        Ok(Kek(SecretBytes::from_slice(bytes)))
    }

    /// A fresh random KEK.
    pub fn generate() -> Result<Kek> {
        let k = DataKey::generate()?;
        Kek::from_bytes(k.expose())
    }

    fn aes_kek(&self) -> Result<AesKek> {
        AesKek::new(&AES_256, self.0.expose()).map_err(|_| Error::InvalidKey("key-encryption key"))
    }

    /// Wraps a data key (AES-KW). Output is 40 bytes.
    pub fn wrap(&self, key: &DataKey) -> Result<Vec<u8>> {
        let mut out = vec![0u8; WRAPPED_LEN];
        let n = self.aes_kek()?.wrap(key.expose(), &mut out)?.len();
        out.truncate(n);
        Ok(out)
    }

    /// Unwraps a data key; fails if the KEK is wrong or the wrapped key was altered.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<DataKey> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(Error::Malformed("wrapped key"));
        }
        let mut out = Zeroizing::new(vec![0u8; DataKey::LEN]);
        let plain = self
            .aes_kek()?
            .unwrap(wrapped, &mut out)
            .map_err(|_| Error::Unwrap)?;
        DataKey::from_bytes(plain)
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip() {
        let kek = Kek::generate().unwrap();
        let dk = DataKey::generate().unwrap();
        let wrapped = kek.wrap(&dk).unwrap();
        assert_eq!(wrapped.len(), 40);
        assert_ne!(&wrapped[..32], dk.expose());
        assert_eq!(kek.unwrap(&wrapped).unwrap(), dk);
    }

    #[test]
    fn rfc3394_vector() {
        // RFC 3394 §4.6: 256-bit key data with 256-bit KEK.
        let kek = Kek::from_bytes(
            &hex::decode("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F").unwrap(),
        )
        .unwrap();
        let dk = DataKey::from_bytes(
            &hex::decode("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F").unwrap(),
        )
        .unwrap();
        let expected =
            hex::decode("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
                .unwrap();
        assert_eq!(kek.wrap(&dk).unwrap(), expected);
        assert_eq!(kek.unwrap(&expected).unwrap(), dk);
    }

    #[test]
    fn wrong_kek_or_tamper_fails() {
        let kek = Kek::generate().unwrap();
        let other = Kek::generate().unwrap();
        let dk = DataKey::generate().unwrap();
        let mut wrapped = kek.wrap(&dk).unwrap();
        assert!(matches!(other.unwrap(&wrapped), Err(Error::Unwrap)));
        wrapped[5] ^= 1;
        assert!(matches!(kek.unwrap(&wrapped), Err(Error::Unwrap)));
        assert!(matches!(kek.unwrap(&wrapped[..39]), Err(Error::Malformed(_))));
        assert!(Kek::from_bytes(&[0; 16]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let kek = Kek::from_bytes(&[7; 32]).unwrap();
        assert_eq!(format!("{kek:?}"), "Kek(***)");
    }
}
