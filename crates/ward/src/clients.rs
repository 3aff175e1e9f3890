//! `ward client create|list|disable`: OAuth clients, whose secrets are shown once and
//! stored only as keyed hashes (HMAC-SHA-256 under the store's index key) (SPEC AC-1, AC-2).

use anyhow::{Context, bail};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use ward_auth::ScopeSet;
use ward_server::Config;
use ward_store::{ClientRecord, Store};
use zeroize::Zeroizing;

#[derive(Default)]
pub struct NewClient {
    pub name: String,
    pub scopes: String,
    /// Exact redirect URIs for the authorization-code flow.
    pub redirect_uris: Vec<String>,
    /// A JWK Set file (public keys) for `private_key_jwt`; no secret is made.
    pub jwks_file: Option<std::path::PathBuf>,
    /// Or an https URL of the client's JWK Set.
    pub jwks_url: Option<String>,
    /// A public client (no secret; PKCE required).
    pub public: bool,
}

#[derive(Serialize)]
pub struct CreatedClient {
    pub client_id: String,
    /// Empty (and left out of JSON) for a client without a secret (public, or JWKS).
    #[serde(skip_serializing_if = "secret_is_empty")]
    pub client_secret: Zeroizing<String>,
    pub name: String,
    pub scopes: String,
    pub redirect_uris: Vec<String>,
    pub public: bool,
    /// `client_secret`, `private_key_jwt` or `none`.
    pub token_endpoint_auth_method: &'static str,
}

#[derive(Serialize)]
pub struct ClientSummary {
    pub client_id: String,
    pub name: String,
    pub scopes: String,
    pub disabled: bool,
    pub created_at: String,
    pub redirect_uris: Vec<String>,
    pub public: bool,
    /// `client_secret`, `private_key_jwt` or `none`.
    pub token_endpoint_auth_method: &'static str,
    /// The registered JWK Set URL, if any (an inline JWK Set is not printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}

fn auth_method(c: &ClientRecord) -> &'static str {
    if c.public {
        "none"
    } else if c.jwks.is_some() || c.jwks_url.is_some() {
        "private_key_jwt"
    } else {
        "client_secret"
    }
}

fn secret_is_empty(s: &Zeroizing<String>) -> bool {
    s.is_empty()
}

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let kek =
        ward_crypto::keyfiles::load_kek(&config.keys_dir()).context("loading the key-encryption key")?;
    Store::open(&config.store_url(), &kek)
        .await
        .context("opening the store")
}

pub async fn create(config: &Config, new: NewClient) -> anyhow::Result<CreatedClient> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        bail!("--name must be 1 to 200 characters");
    }
    let scopes = ScopeSet::parse(&new.scopes).context("--scopes")?;
    if scopes.is_empty() {
        bail!("--scopes must name at least one scope");
    }
    for uri in &new.redirect_uris {
        ward_auth::registration::check_redirect_uri(uri)
            .map_err(|e| anyhow::anyhow!("--redirect-uri: {e}"))?;
    }
    let jwks = match &new.jwks_file {
        Some(path) => {
            let meta = std::fs::metadata(path).context("--jwks")?;
            if meta.len() > ward_auth::client_keys::MAX_JWKS_BYTES as u64 {
                bail!("--jwks: the JWK Set is larger than 64 KiB");
            }
            let text = std::fs::read_to_string(path).context("--jwks")?;
            ward_auth::client_keys::parse_jwks(&text).context("--jwks")?;
            Some(text)
        }
        None => None,
    };
    if let Some(url) = &new.jwks_url {
        ward_auth::registration::check_jwks_url(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let asymmetric = jwks.is_some() || new.jwks_url.is_some();
    if new.public && asymmetric {
        bail!("a public client has no keys: use --public or --jwks/--jwks-url, not both");
    }
    if new.public && new.redirect_uris.is_empty() {
        bail!("a public client needs at least one --redirect-uri");
    }
    let store = open_store(config).await?;
    // Ids are fresh UUIDs, never reused (AC-1).
    let client_id = uuid::Uuid::new_v4().to_string();
    let (secret, secret_hash) = if new.public || asymmetric {
        (Zeroizing::new(String::new()), String::new())
    } else {
        let secret = ward_auth::secret::generate_secret();
        let hash = ward_auth::secret::hash_secret(&store, &client_id, &secret);
        (secret, hash)
    };
    let record = ClientRecord {
        client_id: client_id.clone(),
        name: name.to_owned(),
        secret_hash,
        scopes: scopes.to_string(),
        disabled: false,
        created_at: time::OffsetDateTime::now_utc(),
        redirect_uris: new.redirect_uris.clone(),
        public: new.public,
        jwks,
        jwks_url: new.jwks_url.clone(),
    };
    store.insert_client(&record).await.context("storing the client")?;
    store.close().await;
    crate::audit_cli::record_admin(config, "client-create", Some(("Client", &client_id))).await?;
    let token_endpoint_auth_method = auth_method(&record);
    Ok(CreatedClient {
        client_id,
        client_secret: secret,
        name: record.name,
        scopes: record.scopes,
        redirect_uris: record.redirect_uris,
        public: record.public,
        token_endpoint_auth_method,
    })
}

pub async fn list(config: &Config) -> anyhow::Result<Vec<ClientSummary>> {
    let store = open_store(config).await?;
    let clients = store.list_clients().await?;
    store.close().await;
    Ok(clients
        .into_iter()
        .map(|c| ClientSummary {
            token_endpoint_auth_method: auth_method(&c),
            redirect_uris: c.redirect_uris,
            public: c.public,
            jwks_url: c.jwks_url,
            client_id: c.client_id,
            name: c.name,
            scopes: c.scopes,
            disabled: c.disabled,
            created_at: c.created_at.format(&Rfc3339).unwrap_or_default(),
        })
        .collect())
}

pub async fn disable(config: &Config, client_id: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let found = store.disable_client(client_id).await?;
    store.close().await;
    if !found {
        bail!("no client with that id");
    }
    crate::audit_cli::record_admin(config, "client-disable", Some(("Client", client_id))).await?;
    Ok(())
}
