use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Error, Result, SecretBytes, sha256};

/// The RS256 (RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit) key that signs OpenID Connect
/// id_tokens: OIDC requires RS256 among the id_token algorithms; access tokens stay ES256.
pub struct RsaSigningKey {
    pkcs8: SecretBytes,
    pair: KeyPair,
    /// Big-endian modulus and exponent, no leading zeros.
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaSigningKey {
    /// A new random 2048-bit key.
    pub fn generate() -> Result<RsaSigningKey> {
        let pair = KeyPair::generate(KeySize::Rsa2048)?;
        let der = pair
            .as_der()
            .map_err(|_| Error::InvalidKey("RS256 key encoding"))?;
        RsaSigningKey::from_pkcs8_der(der.as_ref())
    }

    /// Parses an unencrypted PKCS#8 DER RSA private key of at least 2048 bits.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<RsaSigningKey> {
        let pair =
            KeyPair::from_pkcs8(der).map_err(|_| Error::InvalidKey("RS256 key (expected RSA PKCS#8 DER)"))?;
        if pair.public_modulus_len() < 256 {
            return Err(Error::InvalidKey("RS256 key shorter than 2048 bits"));
        }
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        Ok(RsaSigningKey {
            pkcs8: SecretBytes::from_slice(der),
            pair,
            n,
            e,
        })
    }

    /// The private key as PKCS#8 DER (secret).
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8.expose()
    }

    /// Key id: base64url of the first 16 bytes of SHA-256 of the modulus.
    pub fn kid(&self) -> String {
        URL_SAFE_NO_PAD.encode(&sha256(&self.n)[..16])
    }

    /// The public key as a JWK for a JWKS document.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid(),
        })
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5 SHA-256 (JWS RS256).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)?;
        Ok(sig)
    }
}

impl fmt::Debug for RsaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigningKey")
            .field("kid", &self.kid())
            .field("private", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};

    #[test]
    fn generate_parse_sign_verify() {
        let k = RsaSigningKey::generate().unwrap();
        let again = RsaSigningKey::from_pkcs8_der(k.pkcs8_der()).unwrap();
        assert_eq!(k.kid(), again.kid());
        let jwk = k.public_jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str()),
            (Some("RSA"), Some("RS256"))
        );
        assert!(jwk.get("d").is_none());
        let sig = k.sign(b"header.payload").unwrap();
        let pk = RsaPublicKeyComponents {
            n: &k.n[..],
            e: &k.e[..],
        };
        pk.verify(&RSA_PKCS1_2048_8192_SHA256, b"header.payload", &sig)
            .unwrap();
        assert!(
            pk.verify(&RSA_PKCS1_2048_8192_SHA256, b"header.payloaX", &sig)
                .is_err()
        );
        assert!(format!("{k:?}").contains("***"));
        assert!(RsaSigningKey::from_pkcs8_der(b"nope").is_err());
    }
}
