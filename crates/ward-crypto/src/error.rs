/// The one error type of `ward-crypto`. Display strings never contain key material,
/// plaintext or full file paths (only a key file's name).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A primitive of the crypto library failed (for example the system RNG).
    #[error("cryptographic operation failed")]
    Crypto,
    /// AEAD opening failed: tampered ciphertext, wrong key or wrong associated data.
    #[error("decryption failed: ciphertext or associated data does not authenticate")]
    Decrypt,
    /// AES key unwrap failed: wrong key-encryption key or tampered wrapped key.
    #[error("key unwrap failed")]
    Unwrap,
    /// The sealed value names a key epoch this keyring does not hold.
    #[error("no data key for key epoch {0}")]
    UnknownEpoch(u32),
    /// A sealed value, wrapped key or key file has the wrong shape.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Key material of the wrong length or encoding.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The key directory or a file in it is accessible by group or others.
    #[error(
        "insecure permissions on '{name}': group/other access must be removed (chmod 700 dir, 600 files)"
    )]
    InsecurePermissions { name: String },
    /// Refusing to overwrite an existing key file.
    #[error("key file '{name}' already exists; refusing to overwrite")]
    AlreadyExists { name: String },
    /// An I/O error on a key file.
    #[error("I/O error on '{name}': {kind}")]
    Io { name: String, kind: std::io::ErrorKind },
}

impl Error {
    pub(crate) fn io(name: &str, e: &std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Error::AlreadyExists {
                name: name.to_owned(),
            };
        }
        Error::Io {
            name: name.to_owned(),
            kind: e.kind(),
        }
    }
}

impl From<aws_lc_rs::error::Unspecified> for Error {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        Error::Crypto
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
