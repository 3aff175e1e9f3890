//! `ward user create|list|disable|reset-mfa`: people who sign in (SPEC AC-1, AC-5). A
//! generated password is shown once and must be changed at first sign-in; each command
//! writes an admin audit record naming the user id (never a password).

use std::io::BufRead;

use anyhow::{Context, bail};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use ward_auth::users::{self, CreatedUser, NewUser, Role};
use ward_crypto::SecretString;
use ward_server::Config;

use crate::clients::open_store;

/// Options of `ward user create`.
pub struct CreateOptions {
    pub username: String,
    pub role: String,
    pub fhir_user: Option<String>,
    /// The password, read from standard input; `None`: generate a one-time password.
    pub password: Option<SecretString>,
}

#[derive(Serialize)]
pub struct UserSummary {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub disabled: bool,
    pub mfa_enrolled: bool,
    pub must_change_password: bool,
    pub created_at: String,
}

/// Reads a password from the first line of standard input (without its line ending).
pub fn read_password_stdin() -> anyhow::Result<SecretString> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("--password-stdin: standard input held no password");
    }
    Ok(SecretString::new(password.to_owned()))
}

pub async fn create(config: &Config, opts: CreateOptions) -> anyhow::Result<CreatedUser> {
    let role: Role = opts.role.parse().context("--role")?;
    let store = open_store(config).await?;
    let created = users::create_user(
        &store,
        NewUser {
            username: opts.username,
            role,
            fhir_user: opts.fhir_user,
            password: opts.password,
        },
        time::OffsetDateTime::now_utc(),
    )
    .await;
    store.close().await;
    let created = created.context("creating the user")?;
    crate::audit_cli::record_admin(config, "user-create", Some(("User", &created.user_id))).await?;
    Ok(created)
}

pub async fn list(config: &Config) -> anyhow::Result<Vec<UserSummary>> {
    let store = open_store(config).await?;
    let list = store.list_users().await;
    store.close().await;
    Ok(list?
        .into_iter()
        .map(|u| UserSummary {
            user_id: u.user_id,
            username: u.username,
            role: u.role,
            fhir_user: u.fhir_user,
            disabled: u.disabled,
            mfa_enrolled: u.totp_enrolled,
            must_change_password: u.must_change_password,
            created_at: u.created_at.format(&Rfc3339).unwrap_or_default(),
        })
        .collect())
}

/// Disables a user; returns the user id.
pub async fn disable(config: &Config, username: &str) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let res = users::disable_user(&store, username).await;
    store.close().await;
    let user_id = res.context("disabling the user")?;
    crate::audit_cli::record_admin(config, "user-disable", Some(("User", &user_id))).await?;
    Ok(user_id)
}

/// Removes a user's second factors; returns the user id.
pub async fn reset_mfa(config: &Config, username: &str) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let res = users::reset_mfa(&store, username).await;
    store.close().await;
    let user_id = res.context("resetting the user's second factor")?;
    crate::audit_cli::record_admin(config, "user-reset-mfa", Some(("User", &user_id))).await?;
    Ok(user_id)
}
