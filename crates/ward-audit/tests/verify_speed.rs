//! Rough verification speed check (not a timed test): `cargo test --release -p ward-audit
//! --test verify_speed -- --ignored --nocapture`. The load benchmark reports the real figure.

use std::time::Instant;

use ward_audit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly in release mode"]
async fn verify_speed_sqlite() {
    let n: usize = std::env::var("WARD_AUDIT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("audit.db").display());
    let store = AuditStore::open(&url).await.unwrap();
    let signer = AuditSigner::generate().unwrap();
    let template = AuditRecord {
        request_id: "0f5b0d1e-3c1a-4a57-9d8e-5c1f1b0f7e21".into(),
        actor: Actor {
            client_id: Some("svc-client-0001".into()),
            user_id: None,
            roles_or_scopes: vec!["system/Patient.rs".into(), "system/Observation.rs".into()],
        },
        source: Source {
            ip: Some("10.1.2.3".into()),
            port: Some(51234),
            user_agent: Some("ward-bench/1.0".into()),
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
    };
    let t = Instant::now();
    bulk_append(&store, "n1", &signer, std::iter::repeat_n(template, n), 5_000)
        .await
        .unwrap();
    eprintln!("built {n} records in {:?}", t.elapsed());
    let t = Instant::now();
    let r = verify(&store, &signer.public_key_bytes()).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(r.ok && r.records == n as u64);
    eprintln!(
        "verified {n} records in {secs:.3}s: {:.0} records/s",
        n as f64 / secs
    );
    let t = Instant::now();
    let r = verify(&store, &signer.public_key_bytes()).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(r.ok);
    eprintln!("again: {:.0} records/s", n as f64 / secs);
    store.close().await;
    if std::env::var_os("WARD_AUDIT_KEEP").is_some() {
        eprintln!("kept {}", tmp.keep().display());
    }
}
