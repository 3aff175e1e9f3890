//! The TLS configuration (SPEC TS-1): TLS 1.2 and 1.3 only, ECDHE key exchange with AEAD
//! ciphers only. rustls offers no compression and no renegotiation at all.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS set-up failures; they name files, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {0}")]
    Cert(String),
    #[error("cannot read TLS private key {0}")]
    Key(String),
    #[error("TLS private key {0} is readable by group or others; chmod 600 it")]
    KeyPermissions(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// TLS 1.2 suites Ward accepts: ECDHE with AES-GCM or ChaCha20-Poly1305. (TLS 1.3 suites
/// are all AEAD with (EC)DHE by construction.)
const TLS12_SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The crypto provider with the suite list narrowed to the allowed ones.
pub fn provider() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites.retain(|s| match s {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => TLS12_SUITES.contains(&s.suite()),
    });
    provider
}

/// Builds the server configuration from PEM files. The key file must not be readable by
/// group or others.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    check_key_permissions(key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|_| TlsError::Cert(cert.display().to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Key(key.display().to_string()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn check_key_permissions(key: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(key).map_err(|_| TlsError::Key(key.display().to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(TlsError::KeyPermissions(key.display().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aead_ecdhe_suites_remain() {
        let p = provider();
        assert!(!p.cipher_suites.is_empty());
        for s in &p.cipher_suites {
            let name = format!("{:?}", s.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
    }
}
