//! `ward client create|list|disable`: OAuth clients, whose secrets are shown once and
//! stored only as keyed hashes (HMAC-SHA-256 under the store's index key) (SPEC AC-1, AC-2).

use anyhow::{Context, bail};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use ward_auth::ScopeSet;
use ward_server::Config;
use ward_store::{ClientRecord, Store};
use zeroize::Zeroizing;

pub struct NewClient {
    pub name: String,
    pub scopes: String,
}

#[derive(Serialize)]
pub struct CreatedClient {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub name: String,
    pub scopes: String,
}

#[derive(Serialize)]
pub struct ClientSummary {
    pub client_id: String,
    pub name: String,
    pub scopes: String,
    pub disabled: bool,
    pub created_at: String,
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
    let store = open_store(config).await?;
    // Ids are fresh UUIDs, never reused (AC-1).
    let client_id = uuid::Uuid::new_v4().to_string();
    let secret = ward_auth::secret::generate_secret();
    let secret_hash = ward_auth::secret::hash_secret(&store, &client_id, &secret);
    let record = ClientRecord {
        client_id: client_id.clone(),
        name: name.to_owned(),
        secret_hash,
        scopes: scopes.to_string(),
        disabled: false,
        created_at: time::OffsetDateTime::now_utc(),
        redirect_uris: Vec::new(),
        public: false,
        jwks: None,
        jwks_url: None,
    };
    store.insert_client(&record).await.context("storing the client")?;
    store.close().await;
    crate::audit_cli::record_admin(config, "client-create", Some(("Client", &client_id))).await?;
    Ok(CreatedClient {
        client_id,
        client_secret: secret,
        name: record.name,
        scopes: record.scopes,
    })
}

pub async fn list(config: &Config) -> anyhow::Result<Vec<ClientSummary>> {
    let store = open_store(config).await?;
    let clients = store.list_clients().await?;
    store.close().await;
    Ok(clients
        .into_iter()
        .map(|c| ClientSummary {
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
