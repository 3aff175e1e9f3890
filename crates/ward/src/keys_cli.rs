//! `ward keys rotate-signing`: adds an ES256 access-token signing key (mode 0600, next to the
//! others). Servers sign with the newest key after a restart; the older ones keep verifying
//! and stay in the JWKS. Audited like the other administrative actions.

use anyhow::Context;
use ward_server::Config;

/// Adds the key; returns its `kid`.
pub async fn rotate_signing(config: &Config) -> anyhow::Result<String> {
    let key =
        ward_crypto::keyfiles::rotate_signing_key(&config.keys_dir()).context("adding a signing key")?;
    let kid = key.kid();
    crate::audit_cli::record_admin(config, "keys-rotate-signing", Some(("SigningKey", &kid))).await?;
    Ok(kid)
}
