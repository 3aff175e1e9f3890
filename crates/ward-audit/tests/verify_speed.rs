//! `cargo test --release -p ward-audit --test verify_speed -- --ignored --nocapture`: how fast
//! verification walks a large chain (SPEC P-3: at least 500,000 records/s).

use std::time::Instant;

use ward_audit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release"]
async fn verify_speed() {
    let n: usize = std::env::var("WARD_VERIFY_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("audit.db").display());
    let store = AuditStore::open(&url).await.unwrap();
    let signer = AuditSigner::generate().unwrap();
    let template = AuditRecord {
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
    };
    bulk_append(&store, "bench", &signer, std::iter::repeat_n(template, n), 5_000)
        .await
        .unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let report = verify(&store, &signer).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(report.ok && report.records == n as u64);
        eprintln!(
            "verify: {n} records in {secs:.3} s = {:.0} records/s",
            n as f64 / secs
        );
    }
}
