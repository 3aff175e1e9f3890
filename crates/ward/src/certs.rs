//! The local certificate authority `ward init` makes: a CA and a server certificate for
//! the listen address, so Ward speaks only HTTPS from the first start (SPEC TS-1).

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM texts of the CA certificate, the server certificate and the server's private key.
pub struct LocalTls {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: zeroize::Zeroizing<String>,
}

/// Makes a CA (whose private key is discarded: nothing else can ever be signed with it)
/// and a server certificate for `localhost`, `127.0.0.1`, `::1` and `extra_host`.
pub fn generate(extra_host: &str) -> anyhow::Result<LocalTls> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Ward local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !extra_host.is_empty() && !names.iter().any(|n| n == extra_host) {
        names.push(extra_host.to_owned());
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "Ward server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().context("server key")?;
    let cert = params.signed_by(&key, &issuer).context("server certificate")?;
    Ok(LocalTls {
        ca_pem: ca_cert.pem(),
        server_pem: cert.pem(),
        server_key_pem: zeroize::Zeroizing::new(key.serialize_pem()),
    })
}
