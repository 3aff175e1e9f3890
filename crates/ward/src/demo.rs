//! `ward demo`: one command from a fresh checkout to a running server with synthetic
//! patients (SPEC §1 quick start).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use ward_server::Config;
use zeroize::Zeroizing;

use crate::clients::{self, NewClient};
use crate::{files, init};

/// The demo's service client, kept (mode 0600) so the README walk-through works on every
/// start. Real deployments have no such file: `ward client create` shows a secret once.
const DEMO_CLIENT_FILE: &str = "demo-client.json";

#[derive(Serialize, Deserialize)]
pub struct DemoClient {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
}

pub struct DemoOptions {
    pub dir: PathBuf,
    pub patients: usize,
    pub seed: u64,
}

/// Initializes and loads the demo directory if it does not exist yet; returns its config
/// and client.
pub async fn prepare(opts: &DemoOptions) -> anyhow::Result<(Config, DemoClient)> {
    if !opts.dir.exists() {
        init::init(&init::InitOptions {
            dir: opts.dir.clone(),
            listen: None,
            store_url: None,
        })
        .await?;
        let config = Config::load(Some(&opts.dir), None)?;
        let created = clients::create(
            &config,
            NewClient {
                name: "demo".into(),
                scopes: "system/*.cruds".into(),
                ..Default::default()
            },
        )
        .await?;
        let demo = DemoClient {
            client_id: created.client_id,
            client_secret: created.client_secret,
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&demo)?);
        files::write_new(&opts.dir.join(DEMO_CLIENT_FILE), &json, 0o600)?;
        load_synthetic(&config, opts.patients, opts.seed).await?;
        // Writing data outside the API is an admin action like any other: on the trail.
        crate::audit_cli::record_admin(&config, "demo-load", None).await?;
    }
    let config = Config::load(Some(&opts.dir), None)?;
    let demo = read_demo_client(&opts.dir)?;
    Ok((config, demo))
}

fn read_demo_client(dir: &Path) -> anyhow::Result<DemoClient> {
    let path = dir.join(DEMO_CLIENT_FILE);
    let bytes =
        Zeroizing::new(std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?);
    Ok(serde_json::from_slice(&bytes)?)
}

/// Stores the deterministic synthetic data set with its own ids.
pub async fn load_synthetic(config: &Config, patients: usize, seed: u64) -> anyhow::Result<usize> {
    let store = clients::open_store(config).await?;
    let resources = ward_fhir::synthetic::generate(seed, patients);
    let n = resources.len();
    for r in resources {
        let rtype = r["resourceType"]
            .as_str()
            .context("synthetic resource without type")?
            .to_owned();
        let id = r["id"]
            .as_str()
            .context("synthetic resource without id")?
            .to_owned();
        store.update(&rtype, &id, r, None).await?;
    }
    store.close().await;
    Ok(n)
}

/// The walk-through printed when the demo starts.
pub fn instructions(config: &Config, demo: &DemoClient, dir: &Path) -> String {
    let base = config.fhir_base();
    let url = &config.server.public_url;
    let ca = dir.join("tls/ca.pem");
    format!(
        "Ward demo is serving {base}\n\n\
         Get a token:\n  \
         TOKEN=$(curl -s --cacert {ca} -u '{id}:{secret}' -d grant_type=client_credentials {url}/oauth2/token \\\n    \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n\n\
         Search patients (POST keeps search values out of URLs), then read one:\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $TOKEN\" -d family=Nguyen {base}/Patient/_search\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $TOKEN\" {base}/Patient/<id>\n",
        ca = ca.display(),
        id = demo.client_id,
        secret = demo.client_secret.as_str(),
    )
}
