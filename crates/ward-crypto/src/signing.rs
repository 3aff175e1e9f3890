use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Error, Result, SecretBytes, sha256};

/// The ES256 (ECDSA P-256 with SHA-256) key that signs JWT access tokens.
pub struct SigningKey {
    pkcs8: SecretBytes,
    pair: EcdsaKeyPair,
    public: Vec<u8>,
}

impl SigningKey {
    /// A new random P-256 key.
    pub fn generate() -> Result<SigningKey> {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())?;
        SigningKey::from_pkcs8_der(doc.as_ref())
    }

    /// Parses an unencrypted PKCS#8 v1/v2 DER P-256 private key (the bytes are copied).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| Error::InvalidKey("ES256 signing key (expected P-256 PKCS#8 DER)"))?;
        let public = pair.public_key().as_ref().to_vec();
        if public.len() != 65 || public[0] != 0x04 {
            return Err(Error::InvalidKey("ES256 public key"));
        }
        Ok(SigningKey {
            pkcs8: SecretBytes::from_slice(der),
            pair,
            public,
        })
    }

    /// The private key as PKCS#8 DER (secret; e.g. for `jsonwebtoken::EncodingKey::from_ec_der`).
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8.expose()
    }

    /// The public key as an uncompressed SEC1 point (0x04 || X || Y, 65 bytes).
    pub fn public_key_uncompressed(&self) -> &[u8] {
        &self.public
    }

    /// Key id: base64url of the first 16 bytes of SHA-256 of the uncompressed public key.
    pub fn kid(&self) -> String {
        URL_SAFE_NO_PAD.encode(&sha256(&self.public)[..16])
    }

    /// The public key as a JWK for a JWKS document.
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&self.public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.public[33..65]),
            "use": "sig",
            "alg": "ES256",
            "kid": self.kid(),
        })
    }

    /// Signs `message`; returns the fixed-length (r || s, 64 bytes) signature used by JWS ES256.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig = self.pair.sign(&SystemRandom::new(), message)?;
        Ok(sig.as_ref().to_vec())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("private", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn generate_parse_jwk_sign_verify() {
        let k = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8_der(k.pkcs8_der()).unwrap();
        assert_eq!(k.public_key_uncompressed(), again.public_key_uncompressed());
        assert_eq!(k.kid(), again.kid());
        assert_eq!(k.kid().len(), 22);

        let jwk = k.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], k.kid().as_str());
        let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        assert_eq!([&[4u8][..], &x, &y].concat(), k.public_key_uncompressed());
        assert!(jwk.get("d").is_none());

        let sig = k.sign(b"header.payload").unwrap();
        assert_eq!(sig.len(), 64);
        let pk = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k.public_key_uncompressed());
        pk.verify(b"header.payload", &sig).unwrap();
        assert!(pk.verify(b"header.payloaX", &sig).is_err());
    }

    #[test]
    fn rejects_garbage_and_redacts_debug() {
        assert!(matches!(
            SigningKey::from_pkcs8_der(b"not a key"),
            Err(Error::InvalidKey(_))
        ));
        let k = SigningKey::generate().unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("***"));
        let der_hex = hex::encode(k.pkcs8_der());
        assert!(!dbg.contains(&der_hex[der_hex.len() - 16..]));
    }
}
