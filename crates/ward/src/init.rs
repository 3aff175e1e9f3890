//! `ward init`: a new deployment directory with configuration, TLS, keys, an empty store,
//! one admin service client and one admin user (SPEC §1), whose one-time password is shown
//! once and must be changed at first sign-in (then TOTP enrollment: admins need MFA).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use ward_crypto::SecretString;
use ward_server::Config;
use zeroize::Zeroizing;

use crate::clients::{self, NewClient};
use crate::{certs, files, users};

/// Scopes of the admin service client made at init.
/// (`AuditEvent` must be named: a wildcard never opens the audit trail.)
pub const ADMIN_SCOPES: &str = "system/*.cruds system/AuditEvent.rs";

pub struct InitOptions {
    pub dir: PathBuf,
    /// `HOST:PORT`; sets both `server.listen` and `server.public_url`.
    pub listen: Option<String>,
    pub store_url: Option<String>,
}

#[derive(Serialize)]
pub struct InitOutput {
    pub dir: String,
    pub fhir_base: String,
    pub ca_cert: String,
    pub admin_client_id: String,
    pub admin_client_secret: Zeroizing<String>,
    pub admin_username: String,
    pub admin_password: SecretString,
}

/// Username of the admin user made at init.
pub const ADMIN_USERNAME: &str = "admin";

pub async fn init(opts: &InitOptions) -> anyhow::Result<InitOutput> {
    let dir = &opts.dir;
    if dir.exists() {
        bail!(
            "{} already exists; ward init never overwrites a directory",
            dir.display()
        );
    }
    files::create_dir(dir, 0o700)?;
    match populate(dir, opts).await {
        Ok(out) => Ok(out),
        Err(e) => {
            // Leave nothing half made behind: a later init must be able to start clean.
            let _ = std::fs::remove_dir_all(dir);
            Err(e)
        }
    }
}

async fn populate(dir: &Path, opts: &InitOptions) -> anyhow::Result<InitOutput> {
    let mut config = Config::default();
    if let Some(listen) = &opts.listen {
        let addr: std::net::SocketAddr = listen
            .parse()
            .context("--listen must be HOST:PORT with an IP address")?;
        config.server.listen = addr.to_string();
        config.server.public_url = format!("https://{addr}");
    }
    if let Some(url) = &opts.store_url {
        config.store.url = url.clone();
    }
    let host = config
        .server
        .listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();

    let tls_dir = dir.join("tls");
    files::create_dir(&tls_dir, 0o700)?;
    let tls = certs::generate(&host)?;
    files::write_new(&tls_dir.join("ca.pem"), tls.ca_pem.as_bytes(), 0o644)?;
    files::write_new(&tls_dir.join("server.pem"), tls.server_pem.as_bytes(), 0o644)?;
    files::write_new(&tls_dir.join("server.key"), tls.server_key_pem.as_bytes(), 0o600)?;
    ward_crypto::keyfiles::create_key_dir(&dir.join("keys")).context("creating keys")?;
    files::write_new(&dir.join("ward.toml"), config.to_toml().as_bytes(), 0o600)?;

    let config = Config::load(Some(dir), None)?;
    let admin = clients::create(
        &config,
        NewClient {
            name: "admin".into(),
            scopes: ADMIN_SCOPES.into(),
        },
    )
    .await?;
    let user = users::create(
        &config,
        users::CreateOptions {
            username: ADMIN_USERNAME.into(),
            role: "admin".into(),
            fhir_user: None,
            password: None,
        },
    )
    .await?;
    let admin_password = user
        .one_time_password
        .context("the admin user got no one-time password")?;
    let dir = std::fs::canonicalize(dir)?;
    Ok(InitOutput {
        fhir_base: config.fhir_base(),
        ca_cert: dir.join("tls/ca.pem").display().to_string(),
        dir: dir.display().to_string(),
        admin_client_id: admin.client_id,
        admin_client_secret: admin.client_secret,
        admin_username: user.username,
        admin_password,
    })
}
