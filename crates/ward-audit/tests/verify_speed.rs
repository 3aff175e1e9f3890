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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn fetch_parts_sqlite() {
    use sqlx::Row;
    let n = 200_000usize;
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("audit.db").display());
    let store = AuditStore::open(&url).await.unwrap();
    let signer = AuditSigner::generate().unwrap();
    let template = AuditRecord {
        request_id: "0f5b0d1e-3c1a-4a57-9d8e-5c1f1b0f7e21".into(),
        action: "read".into(),
        resource_type: Some("Observation".into()),
        resource_id: Some("6f1d3c2e-8a77-4b1e-9e55-2f3a1c9d0b44".into()),
        patients: vec!["a3c9e7d1-5b2f-4e8a-9c1d-7e6f5a4b3c2d".into()],
        ..Default::default()
    };
    bulk_append(&store, "n1", &signer, std::iter::repeat_n(template, n), 5_000)
        .await
        .unwrap();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    for cols in ["seq", "seq, hash", "seq, record", "seq, record, prev_hash, hash"] {
        let t = Instant::now();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {cols} FROM audit_record WHERE node = 'n1' ORDER BY seq"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        let el = t.elapsed().as_secs_f64();
        eprintln!("any {cols}: {} rows {:.0}/s", rows.len(), n as f64 / el);
    }
    let t = Instant::now();
    let mut after = 0i64;
    let mut total = 0usize;
    loop {
        let rows = sqlx::query("SELECT seq, record, prev_hash, hash FROM audit_record WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind("n1").bind(after).bind(20_000i64).fetch_all(&pool).await.unwrap();
        if rows.is_empty() {
            break;
        }
        total += rows.len();
        after = rows.last().unwrap().get::<i64, _>(0);
    }
    eprintln!("paged: {total} {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    let r = verify(&store, &signer.public_key_bytes()).await.unwrap();
    eprintln!(
        "verify: {} {:.0}/s",
        r.records,
        n as f64 / t.elapsed().as_secs_f64()
    );
    let sp = sqlx::SqlitePool::connect(&url).await.unwrap();
    for cols in ["seq", "seq, record, prev_hash, hash"] {
        let t = Instant::now();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {cols} FROM audit_record WHERE node = 'n1' ORDER BY seq"
        )))
        .fetch_all(&sp)
        .await
        .unwrap();
        let el = t.elapsed().as_secs_f64();
        eprintln!("native {cols}: {} rows {:.0}/s", rows.len(), n as f64 / el);
        let _ = rows[0].try_get::<i64, _>(0);
    }
    let rows = sqlx::query("SELECT record FROM audit_record WHERE node = 'n1' ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let recs: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    eprintln!("record len {}", recs[0].len());
    let t = Instant::now();
    let mut h = [0u8; 32];
    for r in &recs {
        h = chain_hash(&h, r.as_bytes());
    }
    eprintln!("hash: {:.0}/s {}", n as f64 / t.elapsed().as_secs_f64(), h[0]);
}
