//! The audit figures of SPEC P-3 and issue 4: how fast `ward audit verify` walks a large
//! chain, and how the group-commit writer batched the records of the load run.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use ward_audit::{Actor, AuditRecord, AuditSigner, AuditStore, Outcome, Source};

/// `ward audit verify` over a freshly built log.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyFigures {
    pub records: u64,
    pub build_secs: f64,
    pub verify_secs: f64,
    pub records_per_sec: f64,
}

/// A log of `n` realistic read records on one chain in a SQLite file under `dir`, then one
/// full verification (the same code `ward audit verify` runs).
pub async fn verify_speed(dir: &Path, n: usize) -> anyhow::Result<VerifyFigures> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("verify-bench.db").display());
    let store = AuditStore::open(&url)
        .await
        .context("opening the benchmark audit log")?;
    let signer = AuditSigner::generate()?;
    let template = read_record();
    let t = Instant::now();
    ward_audit::bulk_append(&store, "bench", &signer, std::iter::repeat_n(template, n), 5_000).await?;
    let build_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = ward_audit::verify(&store, &signer).await?;
    let verify_secs = t.elapsed().as_secs_f64();
    store.close().await;
    anyhow::ensure!(
        report.ok && report.records == n as u64,
        "the benchmark log did not verify"
    );
    Ok(VerifyFigures {
        records: n as u64,
        build_secs: round(build_secs),
        verify_secs: round(verify_secs),
        records_per_sec: (n as f64 / verify_secs).round(),
    })
}

/// A realistic record of one read, as Ward writes it (client, scopes, source, the resource,
/// the patient whose compartment it is in).
pub fn read_record() -> AuditRecord {
    AuditRecord {
        request_id: "0f5b0d1e-3c1a-4a57-9d8e-5c1f1b0f7e21".into(),
        actor: Actor {
            client_id: Some("6c1f7b8e-2d3a-4f5e-8a9b-0c1d2e3f4a5b".into()),
            user_id: None,
            roles_or_scopes: vec!["system/Patient.rs".into(), "system/Observation.rs".into()],
        },
        source: Source {
            ip: Some("127.0.0.1".into()),
            port: Some(51234),
            user_agent: Some("ward-bench".into()),
        },
        action: "read".into(),
        resource_type: Some("Observation".into()),
        resource_id: Some("6f1d3c2e-8a77-4b1e-9e55-2f3a1c9d0b44".into()),
        resource_version: Some(1),
        patients: vec!["a3c9e7d1-5b2f-4e8a-9c1d-7e6f5a4b3c2d".into()],
        outcome: Outcome {
            status: 200,
            code: None,
        },
        returned: 1,
        ..Default::default()
    }
}

/// What the server's writer did during the whole run, from the totals it logs at shutdown.
#[derive(Clone, Debug, Serialize)]
pub struct WriterFigures {
    pub records: u64,
    pub batches: u64,
    pub mean_batch: f64,
    /// Records over the seconds the Ward scenarios ran (warm-ups included).
    pub records_per_sec: f64,
}

/// Parses `audit_records=N audit_batches=M` from Ward's shutdown log line.
pub fn writer_figures(log: &str, load_secs: f64) -> Option<WriterFigures> {
    let field = |name: &str| -> Option<u64> {
        let line = log.lines().rev().find(|l| l.contains("audit writer totals"))?;
        let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let (records, batches) = (field("audit_records")?, field("audit_batches")?);
    Some(WriterFigures {
        records,
        batches,
        mean_batch: round(records as f64 / batches.max(1) as f64),
        records_per_sec: if load_secs > 0.0 {
            (records as f64 / load_secs).round()
        } else {
            0.0
        },
    })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_shutdown_line() {
        let log =
            "x\n2026 INFO ward_server::serve: audit writer totals audit_records=1200 audit_batches=48\n";
        let f = super::writer_figures(log, 12.0).unwrap();
        assert_eq!(
            (f.records, f.batches, f.mean_batch, f.records_per_sec),
            (1200, 48, 25.0, 100.0)
        );
        assert!(super::writer_figures("nothing", 1.0).is_none());
    }
}
