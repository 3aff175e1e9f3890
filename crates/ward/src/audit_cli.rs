//! `ward audit verify|export|disclosures`, and the audit records of admin commands
//! (SPEC AU-1, AU-3, AU-5).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use ward_audit::{AuditConfig, AuditSigner, AuditStore, VerifyReport};
use ward_server::Config;

async fn open(config: &Config) -> anyhow::Result<AuditStore> {
    AuditStore::open(&config.audit_url())
        .await
        .context("opening the audit trail")
}

/// The audit public key: all an export needs (it also serves trails older than the MAC key).
fn public_key(config: &Config) -> anyhow::Result<Vec<u8>> {
    Ok(ward_crypto::keyfiles::load_audit_key(&config.keys_dir())
        .context("loading the audit key")?
        .public_key()
        .to_vec())
}

/// How long a command waits for another one holding the admin chain.
const ADMIN_CHAIN_WAIT: Duration = Duration::from_secs(10);

/// Commits one admin record on this deployment's admin chain (`<node>-admin`), so CLI
/// actions never fork a running server's chain.
pub async fn record_admin(
    config: &Config,
    action: &str,
    subject: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let store = open(config).await?;
    let signer = AuditSigner::load_for_writer(&config.keys_dir(), &store)
        .await
        .context("loading the audit keys")?;
    let node = format!("{}-admin", config.audit.node);
    let cfg = AuditConfig {
        batch_max: 1,
        batch_wait: Duration::from_micros(0),
        checkpoint_every: config.audit.checkpoint_every,
        checkpoint_interval: Duration::from_secs(config.audit.checkpoint_secs),
    };
    // Two commands at once take turns on the admin chain rather than collide on it.
    let mut waited = Duration::ZERO;
    let lease = loop {
        match store.lease_node(&node).await {
            Err(ward_audit::AuditError::NodeInUse(_)) if waited < ADMIN_CHAIN_WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            }
            other => break other?,
        }
    };
    let (handle, writer) = ward_audit::start_leased_writer(store, lease, signer, cfg).await?;
    ward_server::audit::record_admin(&handle, action, subject)
        .await
        .context("committing the audit record")?;
    handle.shutdown().await;
    let _ = writer.await;
    Ok(())
}

/// Online verification: needs both audit keys (the MAC key authenticates every record).
pub async fn verify(config: &Config) -> anyhow::Result<VerifyReport> {
    let store = open(config).await?;
    let keys = AuditSigner::load(&config.keys_dir()).context("loading the audit keys")?;
    Ok(ward_audit::verify(&store, &keys).await?)
}

pub fn verify_file(file: &Path, pubkey_file: &Path) -> anyhow::Result<VerifyReport> {
    let key = read_public_key(pubkey_file)?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    Ok(ward_audit::verify_export(&mut std::io::BufReader::new(f), &key)?)
}

/// The public key file `export` writes beside its output: base64 of the raw Ed25519 key.
fn read_public_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("the public key file must hold base64")
}

pub async fn export(config: &Config, out: &mut dyn Write) -> anyhow::Result<u64> {
    let store = open(config).await?;
    let key = public_key(config)?;
    let mut buf = std::io::BufWriter::new(out);
    let n = ward_audit::export(&store, &mut buf, &key).await?;
    buf.flush()?;
    Ok(n)
}

fn public_key_base64(config: &Config) -> anyhow::Result<String> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.encode(public_key(config)?))
}

/// `export --out FILE`: the trail to FILE and its public key to `FILE.pub`, both new files
/// (never overwritten, never through a symlink) readable by the owner only: the trail names
/// patients and clients.
pub async fn export_to_file(config: &Config, path: &Path) -> anyhow::Result<u64> {
    let key_path = std::path::PathBuf::from(format!("{}.pub", path.display()));
    let mut f = crate::files::create_new(path, 0o600)?;
    let mut key = match crate::files::create_new(&key_path, 0o600) {
        Ok(k) => k,
        Err(e) => {
            // The export file was just made by this call: take it back.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    let n = export(config, &mut f).await?;
    key.write_all((public_key_base64(config)? + "\n").as_bytes())?;
    f.sync_all()?;
    key.sync_all()?;
    Ok(n)
}

/// The accounting of disclosures of `patient`: the records listing it, and the records naming
/// a resource version (a large Group) whose compartment holds it, resolved here against the
/// resource store. A version that cannot be read fails the whole answer: it must be complete.
pub async fn disclosures(
    config: &Config,
    patient: &str,
    since: Option<OffsetDateTime>,
) -> anyhow::Result<Vec<ward_audit::AuditRecord>> {
    let store = open(config).await?;
    let mut records = ward_audit::disclosures(&store, patient, since).await?;
    let sources = ward_audit::patient_sources(&store).await?;
    if !sources.is_empty() {
        let pid = patient.strip_prefix("Patient/").unwrap_or(patient);
        let resources = crate::clients::open_store(config).await?;
        for reference in sources {
            if version_names_patient(&resources, &reference, pid).await? {
                records.extend(ward_audit::records_via(&store, &reference, since).await?);
            }
        }
        resources.close().await;
        records.sort_by(|a, b| (&a.at, &a.node, a.seq).cmp(&(&b.at, &b.node, b.seq)));
        records.dedup_by(|a, b| a.node == b.node && a.seq == b.seq);
    }
    Ok(records)
}

/// Whether the compartment of the version `Type/id/_history/N` holds patient `pid`.
async fn version_names_patient(
    store: &ward_store::Store,
    reference: &str,
    pid: &str,
) -> anyhow::Result<bool> {
    let parsed = reference.split_once("/_history/").and_then(|(tid, v)| {
        let (rtype, id) = tid.split_once('/')?;
        Some((rtype, id, v.parse::<i64>().ok()?))
    });
    let (rtype, id, version) = parsed.context("an audit record names a malformed resource version")?;
    let stored = match store.vread_json(rtype, id, version).await {
        Ok(stored) => stored,
        // A write's intent names the version it was about to make; a write that then failed
        // (a lost If-Match race, say) made none, and disclosed nothing through it.
        Err(ward_store::StoreError::NotFound) => return Ok(false),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "resolving the patients of {rtype} version {version} named by the audit trail"
            )));
        }
    };
    let patients = ward_server::audit::patients_of(rtype, id, &stored.value()?);
    Ok(patients.iter().any(|p| p == pid))
}
