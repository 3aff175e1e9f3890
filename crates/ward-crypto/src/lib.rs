//! ward-crypto: the cryptographic safeguards of Ward, pure and synchronous.
//!
//! * [`Envelope`]: AES-256-GCM envelope encryption of stored resource versions (EN-1), the
//!   associated data ([`Aad`]) binds tenant, type, id and version so ciphertexts cannot be swapped.
//! * [`Kek`]: the key-encryption key that wraps data keys with AES key wrap (EN-2).
//! * [`BlindIndexer`]: keyed HMAC blind indexes for identifying search values (EN-4).
//! * [`SigningKey`]: the ES256 keys that sign access tokens; [`RsaSigningKey`]: the RS256 key
//!   that signs OpenID Connect id_tokens.
//! * [`AuditKey`]: the Ed25519 key that signs audit checkpoints, and [`AuditMacKey`], the key
//!   that authenticates every audit record (both kept apart from the data keys).
//! * [`keyfiles`]: the local key-file provider with strict file permissions.
//! * [`SecretBytes`], [`DataKey`]: zeroizing secret wrappers with redacted `Debug` (EN-5).
//!
//! No error message produced here contains key material or plaintext.

mod audit_key;
mod blind;
mod envelope;
mod error;
mod kek;
pub mod keyfiles;
mod rand;
mod rsa_signing;
mod secret;
mod signing;

pub use audit_key::{
    AuditKey, AuditMacKey, audit_key_id, ed25519_public_key_pem, parse_ed25519_public_key, verify_ed25519,
};
pub use blind::{BlindIndexer, ct_eq, sha256};
pub use envelope::{Aad, Envelope, FORMAT_VERSION};
pub use error::{Error, Result};
pub use kek::Kek;
pub use rand::{random_bytes, random_token};
pub use rsa_signing::RsaSigningKey;
pub use secret::{DataKey, SecretBytes, SecretString};
pub use signing::SigningKey;
