//! NDJSON export and offline verification (`ward audit export`, `ward audit verify --file`).
//!
//! Format `ward-audit-ndjson-v1`, one JSON object per line:
//! 1. a header: `{"ward_audit_export":1,"format":"ward-audit-ndjson-v1","exported_at":…,
//!    "key_id":…,"public_key":<base64 raw 32 bytes>,"public_key_pem":…,"nodes":[…]}`;
//! 2. every checkpoint: `{"checkpoint":{"node","seq","hash"(hex),"key_id","signature"(base64),"at",
//!    "prev_seq","chains"}}`;
//! 3. every record, per node in seq order, as an R4 `AuditEvent` ([`crate::to_audit_event`])
//!    whose `urn:ward:audit:chain` extension also carries `prev_hash` (hex) and `canonical`
//!    (`valueBase64Binary`, the exact canonical bytes that were hashed).
//!
//! Offline verification trusts only the public key given to it (not the header's): it walks
//! each chain over the canonical bytes exactly like [`crate::verify`], checks the checkpoints
//! (genesis, links, the chains they list), and also checks that each AuditEvent's readable
//! content is what its canonical record produces (an edited AuditEvent is `Edited`). Records
//! carry no MAC here (only Ward holds that key): what it proves is that every record up to each
//! chain's last signed checkpoint is the one Ward wrote, in place, none removed or added. It
//! cannot authenticate the records after that checkpoint (reported as `unsealed`), nor tell an
//! export cut back to an earlier checkpoint from a complete one.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sqlx::Row;
use ward_crypto::{audit_key_id, ed25519_public_key_pem, parse_ed25519_public_key};

use crate::fhir::WARD_URN;
use crate::record::format_instant;
use crate::store::{AuditStore, Checkpoint};
use crate::verify::{VerifyReport, Walker};
use crate::{AuditError, AuditRecord, to_audit_event};

/// The `format` value of the export header.
pub const EXPORT_FORMAT: &str = "ward-audit-ndjson-v1";
const PAGE: i64 = 5_000;

fn add_chain_fields(ev: &mut Value, prev_hex: &str, canonical_b64: &str) {
    if let Some(chain) = ev
        .get_mut("extension")
        .and_then(|e| e.get_mut(0))
        .and_then(|c| c.get_mut("extension"))
        .and_then(Value::as_array_mut)
    {
        chain.push(json!({"url": "prev_hash", "valueString": prev_hex}));
        chain.push(json!({"url": "canonical", "valueBase64Binary": canonical_b64}));
    }
}

fn write_line(out: &mut impl Write, v: &Value) -> Result<(), AuditError> {
    serde_json::to_writer(&mut *out, v).map_err(|e| AuditError::Io(e.into()))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes every chain and checkpoint as NDJSON (see the module documentation). `signer_pub` is
/// the audit public key (raw, DER or PEM) put in the header for reference. Returns the number
/// of records written.
pub async fn export(store: &AuditStore, out: &mut impl Write, signer_pub: &[u8]) -> Result<u64, AuditError> {
    let pk = parse_ed25519_public_key(signer_pub)?;
    let nodes = store.nodes().await?;
    let header = json!({
        "ward_audit_export": 1,
        "format": EXPORT_FORMAT,
        "exported_at": format_instant(time::OffsetDateTime::now_utc()),
        "key_id": audit_key_id(&pk),
        "public_key": STANDARD.encode(pk),
        "public_key_pem": ed25519_public_key_pem(&pk),
        "nodes": nodes,
    });
    write_line(out, &header)?;
    for node in &nodes {
        for cp in store.checkpoints(node).await? {
            write_line(
                out,
                &json!({"checkpoint": {
                    "node": cp.node,
                    "seq": cp.seq,
                    "hash": hex::encode(&cp.hash),
                    "key_id": cp.key_id,
                    "signature": STANDARD.encode(&cp.signature),
                    "at": cp.at,
                    "prev_seq": cp.prev_seq,
                    "chains": cp.chains,
                }}),
            )?;
        }
    }
    let mut n = 0u64;
    for node in &nodes {
        let mut after = 0i64;
        loop {
            let rows = store.chain_page(node, after, PAGE).await?;
            for r in &rows {
                let seq: i64 = r.try_get(0)?;
                let record: &str = r.try_get(1)?;
                let prev: &[u8] = r.try_get(2)?;
                let hash: &[u8] = r.try_get(3)?;
                let hash_hex = hex::encode(hash);
                let mut ev = match AuditRecord::from_canonical(record.as_bytes()) {
                    Ok(rec) => to_audit_event(&rec, &hash_hex),
                    // Exported as is; offline verification will flag it.
                    Err(_) => json!({
                        "resourceType": "AuditEvent",
                        "id": format!("{node}-{seq}"),
                        "extension": [{"url": format!("{WARD_URN}:chain"), "extension": [
                            {"url": "node", "valueString": node},
                            {"url": "seq", "valueString": seq.to_string()},
                            {"url": "hash", "valueString": hash_hex},
                        ]}],
                    }),
                };
                // The chain position is the stored one, even if the record claims another.
                if let Some(chain) = ev["extension"][0]["extension"].as_array_mut() {
                    for f in chain.iter_mut() {
                        match f["url"].as_str() {
                            Some("node") => f["valueString"] = json!(node),
                            Some("seq") => f["valueString"] = json!(seq.to_string()),
                            _ => {}
                        }
                    }
                }
                add_chain_fields(&mut ev, &hex::encode(prev), &STANDARD.encode(record.as_bytes()));
                write_line(out, &ev)?;
                n += 1;
                after = seq;
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
    }
    out.flush()?;
    Ok(n)
}

fn corrupt(what: &str) -> AuditError {
    AuditError::Corrupt(format!("export: {what}"))
}

fn parse_checkpoint(v: &Value) -> Result<Checkpoint, AuditError> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| corrupt("malformed checkpoint line"))
    };
    let int = |k: &str| {
        v.get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| corrupt("malformed checkpoint line"))
    };
    Ok(Checkpoint {
        node: s("node")?,
        seq: int("seq")?,
        prev_seq: int("prev_seq")?,
        chains: s("chains")?,
        hash: hex::decode(s("hash")?).map_err(|_| corrupt("malformed checkpoint hash"))?,
        key_id: s("key_id")?,
        signature: STANDARD
            .decode(s("signature")?)
            .map_err(|_| corrupt("malformed checkpoint signature"))?,
        at: s("at")?,
    })
}

struct ChainFields {
    node: String,
    seq: i64,
    hash: Vec<u8>,
    prev_hash: Vec<u8>,
    canonical: Vec<u8>,
}

fn chain_fields(ev: &Value) -> Option<ChainFields> {
    let ext = ev.get("extension")?.as_array()?;
    let chain = ext
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(&format!("{WARD_URN}:chain")))?;
    let mut f: HashMap<&str, &Value> = HashMap::new();
    for e in chain.get("extension")?.as_array()? {
        let url = e.get("url")?.as_str()?;
        let v = e.get("valueString").or_else(|| e.get("valueBase64Binary"))?;
        f.insert(url, v);
    }
    Some(ChainFields {
        node: f.get("node")?.as_str()?.to_owned(),
        seq: f.get("seq")?.as_str()?.parse().ok()?,
        hash: hex::decode(f.get("hash")?.as_str()?).ok()?,
        prev_hash: hex::decode(f.get("prev_hash")?.as_str()?).ok()?,
        canonical: STANDARD.decode(f.get("canonical")?.as_str()?).ok()?,
    })
}

/// Verifies an NDJSON export offline against `pubkey` (raw 32 bytes, DER or PEM). Structural
/// problems (not an export, unparseable lines) are `Err(Corrupt)`; damage to the chains is
/// reported in the [`VerifyReport`].
pub fn verify_export(ndjson: &mut impl BufRead, pubkey: &[u8]) -> Result<VerifyReport, AuditError> {
    let pk = parse_ed25519_public_key(pubkey)?;
    let mut header_seen = false;
    let mut checkpoints: BTreeMap<String, Vec<Checkpoint>> = BTreeMap::new();
    let mut walkers: BTreeMap<String, Walker> = BTreeMap::new();
    let mut line = String::new();
    loop {
        line.clear();
        if ndjson.read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(text).map_err(|_| corrupt("a line is not JSON"))?;
        if !header_seen {
            if v.get("ward_audit_export").and_then(Value::as_i64) != Some(1)
                || v.get("format").and_then(Value::as_str) != Some(EXPORT_FORMAT)
            {
                return Err(corrupt("missing or unknown header"));
            }
            header_seen = true;
            continue;
        }
        if let Some(cp) = v.get("checkpoint") {
            if !walkers.is_empty() {
                return Err(corrupt("checkpoint after records"));
            }
            let cp = parse_checkpoint(cp)?;
            checkpoints.entry(cp.node.clone()).or_default().push(cp);
            continue;
        }
        if v.get("resourceType").and_then(Value::as_str) != Some("AuditEvent") {
            return Err(corrupt("unexpected line"));
        }
        let f = chain_fields(&v).ok_or_else(|| corrupt("AuditEvent without its chain extension"))?;
        let readable_ok = match AuditRecord::from_canonical(&f.canonical) {
            Ok(rec) => {
                let mut expected = to_audit_event(&rec, &hex::encode(&f.hash));
                add_chain_fields(
                    &mut expected,
                    &hex::encode(&f.prev_hash),
                    &STANDARD.encode(&f.canonical),
                );
                expected == v
            }
            Err(_) => false,
        };
        let walker = walkers.entry(f.node.clone()).or_insert_with(|| {
            Walker::new(
                &f.node,
                checkpoints.get(&f.node).map_or(&[][..], Vec::as_slice),
                None,
            )
        });
        walker.push_checked(f.seq, &f.canonical, &f.prev_hash, &f.hash, None, readable_ok);
    }
    if !header_seen {
        return Err(corrupt("empty"));
    }
    for node in checkpoints.keys() {
        if !walkers.contains_key(node) {
            walkers.insert(node.clone(), Walker::new(node, &checkpoints[node], None));
        }
    }
    let chains = walkers
        .into_iter()
        .map(|(node, w)| w.finish(checkpoints.get(&node).map_or(&[][..], Vec::as_slice), &pk))
        .collect();
    Ok(VerifyReport::from_chains(chains))
}
