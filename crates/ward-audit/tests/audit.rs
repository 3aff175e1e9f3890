//! ward-audit against both backends: writer, chain, tamper detection, fail-closed, export,
//! review queries. PostgreSQL tests need `WARD_TEST_POSTGRES_URL` (they fail without it).

use std::io::Cursor;
use std::time::Duration;

use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};
use ward_audit::*;

// ----- fixtures ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

struct Fx {
    kind: Kind,
    url: String,
    _tmp: Option<tempfile::TempDir>,
    /// PostgreSQL: the database this fixture created (dropped on drop) and its base URL.
    pg: Option<(String, String)>,
    /// PostgreSQL: a role this fixture created (dropped on drop).
    role: Option<String>,
}

/// Creates a fresh database `ward_t_<hex>` on the server named by `WARD_TEST_POSTGRES_URL`
/// (like `ward_store::testing::fresh_postgres_url`): returns (url, database name, base url).
/// Panics when the variable is unset: PostgreSQL tests must fail, never skip.
async fn fresh_postgres_url() -> (String, String, String) {
    sqlx::any::install_default_drivers();
    let base = std::env::var("WARD_TEST_POSTGRES_URL")
        .expect("WARD_TEST_POSTGRES_URL is not set: PostgreSQL tests require it");
    let mut conn = AnyConnection::connect(&base)
        .await
        .expect("cannot connect to PostgreSQL");
    let name = format!("ward_t_{}", hex::encode(uuid::Uuid::new_v4().as_bytes()));
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("cannot create test database");
    let _ = conn.close().await;
    let (scheme, rest) = base.split_once("://").unwrap();
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split_once('/').map_or(before_query, |(a, _)| a);
    let mut url = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    (url, name, base)
}

impl Fx {
    async fn new(kind: Kind) -> Fx {
        match kind {
            Kind::Sqlite => {
                let tmp = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", tmp.path().join("audit.db").display());
                Fx {
                    kind,
                    url,
                    _tmp: Some(tmp),
                    pg: None,
                    role: None,
                }
            }
            Kind::Postgres => {
                let (url, name, base) = fresh_postgres_url().await;
                Fx {
                    kind,
                    url,
                    _tmp: None,
                    pg: Some((name, base)),
                    role: None,
                }
            }
        }
    }

    async fn open(&self) -> AuditStore {
        AuditStore::open_with(
            &self.url,
            &StoreOptions {
                busy_timeout: Duration::from_millis(300),
                acquire_timeout: Duration::from_secs(5),
            },
        )
        .await
        .unwrap()
    }

    /// A raw connection with the append-only triggers disabled (file / superuser level).
    async fn tamper_conn(&self) -> AnyConnection {
        let mut c = AnyConnection::connect(&self.url).await.unwrap();
        let stmts: &[&str] = match self.kind {
            Kind::Sqlite => &[
                "DROP TRIGGER IF EXISTS audit_record_no_update",
                "DROP TRIGGER IF EXISTS audit_record_no_delete",
                "DROP TRIGGER IF EXISTS audit_patient_no_update",
                "DROP TRIGGER IF EXISTS audit_patient_no_delete",
                "DROP TRIGGER IF EXISTS audit_checkpoint_no_update",
                "DROP TRIGGER IF EXISTS audit_checkpoint_no_delete",
            ],
            Kind::Postgres => &[
                "ALTER TABLE audit_record DISABLE TRIGGER ALL",
                "ALTER TABLE audit_patient DISABLE TRIGGER ALL",
                "ALTER TABLE audit_checkpoint DISABLE TRIGGER ALL",
            ],
        };
        for s in stmts {
            sqlx::query(*s).execute(&mut c).await.unwrap();
        }
        c
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        let Some((name, base)) = self.pg.take() else {
            return;
        };
        let role = self.role.take();
        // Drop only what this fixture created, from a thread of its own (Drop cannot await).
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(mut c) = AnyConnection::connect(&base).await else {
                    return;
                };
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
                if let Some(r) = role {
                    let _ = sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {r}")))
                        .execute(&mut c)
                        .await;
                }
                let _ = c.close().await;
            });
        })
        .join()
        .ok();
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Fx::new(super::Kind::Sqlite).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Fx::new(super::Kind::Postgres).await).await;
            }
        })*
    };
}

fn rec(i: usize) -> AuditRecord {
    AuditRecord {
        request_id: format!("req-{i}"),
        actor: Actor {
            client_id: Some("client-a".into()),
            user_id: i.is_multiple_of(2).then(|| "user-1".into()),
            roles_or_scopes: vec!["system/*.rs".into()],
        },
        source: Source {
            ip: Some("127.0.0.1".into()),
            port: Some(40000),
            user_agent: Some("test-agent".into()),
        },
        action: "read".into(),
        kind: RecordKind::Request,
        resource_type: Some("Patient".into()),
        resource_id: Some(format!("p{}", i % 5)),
        resource_version: Some(1),
        patients: vec![format!("p{}", i % 5)],
        outcome: Outcome {
            status: 200,
            code: None,
        },
        returned: 1,
        ..Default::default()
    }
}

fn config() -> AuditConfig {
    AuditConfig {
        batch_max: 64,
        batch_wait: Duration::from_millis(2),
        checkpoint_every: 10_000,
        checkpoint_interval: Duration::from_secs(3600),
    }
}

/// A log of `n` records on node "n1" with one checkpoint at its end.
async fn build_log(fx: &Fx, n: usize) -> (AuditStore, AuditSigner, AuditSigner) {
    let store = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    let pk = signer.try_clone().unwrap();
    bulk_append(&store, "n1", &signer, (1..=n).map(rec), 16)
        .await
        .unwrap();
    (store, signer, pk)
}

async fn exec(c: &mut AnyConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn row(c: &mut AnyConnection, seq: i64) -> (String, Vec<u8>, Vec<u8>) {
    let r = sqlx::query("SELECT record, prev_hash, hash FROM audit_record WHERE node = 'n1' AND seq = $1")
        .bind(seq)
        .fetch_one(&mut *c)
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn move_seq(c: &mut AnyConnection, from: i64, to: i64) {
    sqlx::query("UPDATE audit_record SET seq = $1 WHERE node = 'n1' AND seq = $2")
        .bind(to)
        .bind(from)
        .execute(&mut *c)
        .await
        .unwrap();
}

async fn set_row(c: &mut AnyConnection, seq: i64, record: &str, prev: &[u8], hash: &[u8]) {
    sqlx::query(
        "UPDATE audit_record SET record = $1, prev_hash = $2, hash = $3 WHERE node = 'n1' AND seq = $4",
    )
    .bind(record)
    .bind(prev.to_vec())
    .bind(hash.to_vec())
    .bind(seq)
    .execute(&mut *c)
    .await
    .unwrap();
}

async fn insert_row(c: &mut AnyConnection, seq: i64, record: &str, prev: &[u8], hash: &[u8]) {
    sqlx::query(
        "INSERT INTO audit_record (node, seq, at_ms, action, status, record, prev_hash, hash) \
         VALUES ('n1', $1, 0, 'read', 200, $2, $3, $4)",
    )
    .bind(seq)
    .bind(record)
    .bind(prev.to_vec())
    .bind(hash.to_vec())
    .execute(&mut *c)
    .await
    .unwrap();
}

fn h32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap()
}

async fn expect_bad(store: &AuditStore, pk: &AuditSigner, seq: i64, kind: Damage) {
    let report = verify(store, pk).await.unwrap();
    assert!(!report.ok, "tampering not detected: {report:?}");
    let bad = report.first_bad.clone().unwrap();
    assert_eq!(
        (bad.node.as_str(), bad.seq, bad.kind),
        ("n1", seq, kind),
        "{report:?}"
    );
}

// ----- writer ----------------------------------------------------------------------------------

async fn writer_commits_batches_and_checkpoints(fx: Fx) {
    let store = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    let pk = signer.try_clone().unwrap();
    let (h, join) = start_writer(store.clone(), "n1".into(), signer, config())
        .await
        .unwrap();
    assert!(h.healthy());
    assert_eq!(h.record(rec(0)).await.unwrap(), 1);
    assert_eq!(h.stats(), (1, 1));

    let mut tasks = Vec::new();
    for i in 1..=300 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.record(rec(i)).await.unwrap() }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=301).collect::<Vec<i64>>());
    let (records, batches) = h.stats();
    assert_eq!(records, 301);
    assert!(
        batches < 301 / 2,
        "no group commit: {batches} batches for {records} records"
    );

    // Durable and in the chain before shutdown; only the genesis checkpoint yet, so every
    // record is authenticated (MAC) but not yet sealed.
    let r = verify(&store, &pk).await.unwrap();
    assert!(r.ok && r.records == 301 && r.unsealed == 301, "{r:?}");
    let cps = store.checkpoints("n1").await.unwrap();
    assert_eq!((cps.len(), cps[0].seq, cps[0].prev_seq), (1, 0, -1));

    let other = h.clone();
    h.shutdown().await;
    join.await.unwrap();
    assert!(matches!(other.record(rec(1)).await, Err(AuditError::Closed)));
    let cps = store.checkpoints("n1").await.unwrap();
    assert_eq!(cps.len(), 2);
    assert_eq!((cps[1].seq, cps[1].prev_seq), (301, 0));
    let r = verify(&store, &pk).await.unwrap();
    assert!(r.ok && r.unsealed == 0, "{r:?}");
    assert_eq!(r.chains[0].verified_through, 301);

    // Other keys cannot continue the chain.
    let other = start_writer(
        store.clone(),
        "n1".into(),
        AuditSigner::generate().unwrap(),
        config(),
    )
    .await;
    assert!(matches!(other, Err(AuditError::OtherKey { .. })), "{other:?}");
    // The stored `at` is canonical, and a restarted writer continues the chain.
    let (h, join) = start_writer(store.clone(), "n1".into(), pk.try_clone().unwrap(), config())
        .await
        .unwrap();
    let mut r0 = rec(0);
    r0.at = "2026-11-23T13:00:00.1239+01:00".into();
    assert_eq!(h.record(r0).await.unwrap(), 302);
    h.shutdown().await;
    join.await.unwrap();
    let found = search(
        &store,
        &AuditQuery {
            agent: Some("user-1".into()),
            count: 500,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let found: Vec<_> = found.into_iter().filter(|(r, _)| r.seq == 302).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0.at, "2026-11-23T12:00:00.123Z");
    let r = verify(&store, &pk).await.unwrap();
    assert!(r.ok && r.records == 302 && r.unsealed == 0, "{r:?}");
    store.close().await;
}

async fn periodic_checkpoints_and_multi_node(fx: Fx) {
    let store = fx.open().await;
    // Nodes of one deployment share the audit key file.
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    ward_crypto::keyfiles::create_key_dir(&keys).unwrap();
    let signer_a = AuditSigner::load(&keys).unwrap();
    let signer_b = AuditSigner::load(&keys).unwrap();
    let pk = signer_a.try_clone().unwrap();
    let cfg = AuditConfig {
        checkpoint_every: 10,
        batch_wait: Duration::ZERO,
        ..config()
    };
    let (a, ja) = start_writer(store.clone(), "node-a".into(), signer_a, cfg.clone())
        .await
        .unwrap();
    let (b, jb) = start_writer(store.clone(), "node-b".into(), signer_b, cfg)
        .await
        .unwrap();
    for i in 0..25 {
        a.record(rec(i)).await.unwrap();
        b.record(rec(i)).await.unwrap();
    }
    let cps = store.checkpoints("node-a").await.unwrap();
    assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![0, 10, 20]);
    // Checkpoints list the chains registered so far: node-b registered after node-a.
    assert_eq!(
        (cps[0].chains.as_str(), cps[1].chains.as_str()),
        ("node-a", "node-a,node-b")
    );
    a.shutdown().await;
    b.shutdown().await;
    ja.await.unwrap();
    jb.await.unwrap();
    let r = verify(&store, &pk).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.records, 50);
    assert_eq!(r.chains.len(), 2);
    assert!(
        r.chains
            .iter()
            .all(|c| c.last_seq == 25 && c.verified_through == 25 && c.checkpoints == 4)
    );
    store.close().await;
}

async fn triggers_refuse_update_and_delete(fx: Fx) {
    let (store, _, _) = build_log(&fx, 3).await;
    let mut c = AnyConnection::connect(&fx.url).await.unwrap();
    for sql in [
        "UPDATE audit_record SET action = 'x' WHERE seq = 1",
        "DELETE FROM audit_record WHERE seq = 3",
        "UPDATE audit_checkpoint SET seq = 1",
        "DELETE FROM audit_checkpoint",
        "UPDATE audit_patient SET patient_id = 'x'",
        "DELETE FROM audit_patient",
    ] {
        let err = sqlx::query(AssertSqlSafe(sql)).execute(&mut c).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    if fx.kind == Kind::Postgres {
        for t in ["audit_record", "audit_patient", "audit_checkpoint"] {
            let err = sqlx::query(AssertSqlSafe(format!("TRUNCATE {t}")))
                .execute(&mut c)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("append-only"), "{t}: {err}");
        }
    }
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM audit_record")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    store.close().await;
}

// ----- tamper detection -----------------------------------------------------------------------

async fn tamper_untouched_and_edited(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 40).await;
    let r = verify(&store, &pk).await.unwrap();
    assert!(
        r.ok && r.records == 40 && r.chains[0].verified_through == 40,
        "{r:?}"
    );
    let mut c = fx.tamper_conn().await;
    exec(
        &mut c,
        "UPDATE audit_record SET record = replace(record, '\"status\":200', '\"status\":404') WHERE seq = 12",
    )
    .await;
    expect_bad(&store, &pk, 12, Damage::Edited).await;
    store.close().await;
}

async fn tamper_edited_with_recomputed_hash(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 40).await;
    let mut c = fx.tamper_conn().await;
    let (record, prev, _) = row(&mut c, 12).await;
    let forged = record.replace("\"returned\":1", "\"returned\":0");
    assert_ne!(forged, record);
    let h = chain_hash(&h32(&prev), forged.as_bytes());
    set_row(&mut c, 12, &forged, &prev, &h).await;
    // Without the MAC key the new hash cannot be tagged.
    expect_bad(&store, &pk, 12, Damage::Forged).await;
    store.close().await;
}

async fn tamper_rewritten_chain_fails_checkpoint(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 30).await;
    let mut c = fx.tamper_conn().await;
    // Rewrite record 12 and re-hash everything after it: the signed checkpoint catches it, and
    // before it the MAC of the rewritten record.
    let (_, mut prev, _) = row(&mut c, 12).await;
    for seq in 12..=30 {
        let (record, _, _) = row(&mut c, seq).await;
        let record = if seq == 12 {
            record.replace("\"returned\":1", "\"returned\":0")
        } else {
            record
        };
        let h = chain_hash(&h32(&prev), record.as_bytes());
        set_row(&mut c, seq, &record, &prev, &h).await;
        prev = h.to_vec();
    }
    expect_bad(&store, &pk, 12, Damage::Forged).await;
    store.close().await;
}

async fn tamper_deleted(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 40).await;
    let mut c = fx.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_record WHERE seq = 17").await;
    expect_bad(&store, &pk, 17, Damage::Deleted).await;
    // Renumbering the rest to close the gap is still a deletion at 17.
    for seq in 18..=40 {
        move_seq(&mut c, seq, seq - 1).await;
    }
    expect_bad(&store, &pk, 17, Damage::Deleted).await;
    store.close().await;
}

async fn tamper_inserted(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 40).await;
    let mut c = fx.tamper_conn().await;
    // Make room at 10 and slip in a well-formed, correctly linked forged record.
    for seq in (10..=40).rev() {
        move_seq(&mut c, seq, seq + 1).await;
    }
    let (_, _, h9) = row(&mut c, 9).await;
    let (template, _, _) = row(&mut c, 11).await;
    let forged = template.replace("req-10", "req-forged"); // old record 10, still claiming seq 10
    let h = chain_hash(&h32(&h9), forged.as_bytes());
    insert_row(&mut c, 10, &forged, &h9, &h).await;
    expect_bad(&store, &pk, 10, Damage::Forged).await;
    store.close().await;

    // A garbage row appended after the end.
    let fx2 = Fx::new(fx.kind).await;
    let (store, _, pk) = build_log(&fx2, 20).await;
    let mut c = fx2.tamper_conn().await;
    insert_row(&mut c, 21, "{\"forged\":true}", &[0u8; 32], &[1u8; 32]).await;
    expect_bad(&store, &pk, 21, Damage::Inserted).await;
    store.close().await;
}

async fn tamper_reordered(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 40).await;
    let mut c = fx.tamper_conn().await;
    move_seq(&mut c, 20, -1).await;
    move_seq(&mut c, 21, 20).await;
    move_seq(&mut c, -1, 21).await;
    expect_bad(&store, &pk, 20, Damage::Reordered).await;
    store.close().await;
}

async fn tamper_truncated(fx: Fx) {
    let (store, signer, pk) = build_log(&fx, 40).await;
    let mut c = fx.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_record WHERE seq >= 36").await;
    expect_bad(&store, &pk, 36, Damage::TruncatedAfterCheckpoint).await;
    // The writer refuses to append over the truncation (it would hide it).
    let err = start_writer(store.clone(), "n1".into(), signer, config())
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Corrupt(_)), "{err}");
    // Everything gone: still caught through the checkpoint.
    exec(&mut c, "DELETE FROM audit_record").await;
    expect_bad(&store, &pk, 1, Damage::TruncatedAfterCheckpoint).await;
    store.close().await;
}

async fn tamper_forged_checkpoint(fx: Fx) {
    let (store, _, pk) = build_log(&fx, 40).await;
    let mut c = fx.tamper_conn().await;
    // A checkpoint signed by another key.
    let (_, _, h20) = row(&mut c, 20).await;
    let other = AuditSigner::generate().unwrap();
    let at = "2026-11-23T12:00:00.000Z";
    let mut cp = Checkpoint {
        node: "n1".into(),
        seq: 20,
        hash: h20.clone(),
        key_id: other.key_id(),
        signature: Vec::new(),
        at: at.into(),
        prev_seq: 0,
        chains: "n1".into(),
    };
    cp.signature = ward_crypto::AuditKey::generate().unwrap().sign(&cp.message());
    sqlx::query(
        "INSERT INTO audit_checkpoint (node, seq, hash, key_id, signature, at, prev_seq, chains) \
         VALUES ('n1', 20, $1, $2, $3, $4, 0, 'n1')",
    )
    .bind(h20.clone())
    .bind(other.key_id())
    .bind(cp.signature.clone())
    .bind(at)
    .execute(&mut c)
    .await
    .unwrap();
    expect_bad(&store, &pk, 20, Damage::BadSignature).await;
    exec(&mut c, "DELETE FROM audit_checkpoint WHERE seq = 20").await;
    assert!(verify(&store, &pk).await.unwrap().ok);
    // Moving the real checkpoint to another hash breaks its signature.
    exec(&mut c, "UPDATE audit_checkpoint SET seq = 39 WHERE seq = 40").await;
    expect_bad(&store, &pk, 39, Damage::BadSignature).await;
    // Another deployment's keys sign no checkpoint at all: verification says so, naming both
    // key ids, instead of reporting every checkpoint as badly signed.
    exec(&mut c, "UPDATE audit_checkpoint SET seq = 40 WHERE seq = 39").await;
    let wrong = AuditSigner::generate().unwrap();
    match verify(&store, &wrong).await {
        Err(e @ AuditError::OtherKey { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("another audit key") && msg.contains(&wrong.key_id()),
                "{msg}"
            );
            assert!(msg.contains(&pk.key_id()), "{msg}");
        }
        other => panic!("expected OtherKey, got {other:?}"),
    }
    assert!(verify(&store, &pk).await.unwrap().ok);
    store.close().await;
}

async fn tamper_across_pages(fx: Fx) {
    // Longer than one verification page (4,000): the packed fast path hands over to the
    // row-by-row classifier in the middle of a later page.
    let (store, _, pk) = build_log(&fx, 9_000).await;
    let r = verify(&store, &pk).await.unwrap();
    assert!(
        r.ok && r.records == 9_000 && r.chains[0].verified_through == 9_000,
        "{r:?}"
    );
    let mut c = fx.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_record WHERE seq = 8001").await;
    expect_bad(&store, &pk, 8001, Damage::Deleted).await;
    exec(
        &mut c,
        "UPDATE audit_record SET record = replace(record, 'req-', 'REQ-') WHERE seq = 5002",
    )
    .await;
    expect_bad(&store, &pk, 5002, Damage::Edited).await;
    let r = verify(&store, &pk).await.unwrap();
    assert_eq!(r.records, 8_999);
    // A gap wider than a page (pages are seq ranges: (4000, 8000] is now empty): found, and
    // the rows after it are still counted.
    exec(&mut c, "DELETE FROM audit_record WHERE seq BETWEEN 3000 AND 8500").await;
    expect_bad(&store, &pk, 3000, Damage::Deleted).await;
    let r = verify(&store, &pk).await.unwrap();
    assert_eq!(r.records, 2_999 + 500);
    // Forged rows at the far ends of the seq range are read (and verification does not walk
    // the empty seqs up to them); one below seq 1 is the first damage.
    let forge = |seq: i64| {
        format!(
            "INSERT INTO audit_record (node, seq, at_ms, action, status, client_id, user_id, \
             resource_type, resource_id, record, prev_hash, hash) \
             SELECT node, {seq}, at_ms, action, status, client_id, user_id, resource_type, \
             resource_id, record, prev_hash, hash FROM audit_record WHERE seq = 9000"
        )
    };
    exec(&mut c, &forge(i64::MAX)).await;
    expect_bad(&store, &pk, 3000, Damage::Deleted).await;
    assert_eq!(verify(&store, &pk).await.unwrap().records, 2_999 + 500 + 1);
    exec(&mut c, &forge(i64::MIN)).await;
    expect_bad(&store, &pk, 1, Damage::Inserted).await;
    assert_eq!(verify(&store, &pk).await.unwrap().records, 2_999 + 500 + 2);
    store.close().await;
}

// ----- fail closed ------------------------------------------------------------------------------

async fn fail_closed_and_recover(mut fx: Fx) {
    let signer = AuditSigner::generate().unwrap();
    let pk = signer.try_clone().unwrap();
    match fx.kind {
        Kind::Sqlite => {
            let store = fx.open().await;
            let (h, join) = start_writer(store.clone(), "n1".into(), signer, config())
                .await
                .unwrap();
            assert_eq!(h.record(rec(1)).await.unwrap(), 1);
            // Another connection holds the write lock: the audit store cannot commit.
            let mut locker = AnyConnection::connect(&fx.url).await.unwrap();
            exec(&mut locker, "BEGIN EXCLUSIVE").await;
            for i in 0..3 {
                assert!(matches!(h.record(rec(i)).await, Err(AuditError::Unavailable)));
                assert!(!h.healthy());
            }
            exec(&mut locker, "COMMIT").await;
            // Recovers by itself.
            assert_eq!(h.record(rec(5)).await.unwrap(), 2);
            assert!(h.healthy());
            h.shutdown().await;
            join.await.unwrap();
            let r = verify(&store, &pk).await.unwrap();
            assert!(r.ok && r.records == 2, "{r:?}");
            store.close().await;
        }
        Kind::Postgres => {
            // Ward connects as a non-owner role with SELECT and INSERT only (the recommended
            // set-up); the owner revokes INSERT, then grants it back.
            let owner = fx.open().await; // runs the migrations as the owner
            let db = fx.pg.as_ref().unwrap().0.clone();
            let role = format!("{db}_app");
            fx.role = Some(role.clone());
            let mut su = AnyConnection::connect(&fx.url).await.unwrap();
            exec(&mut su, &format!("CREATE ROLE {role} LOGIN")).await;
            exec(&mut su, &format!("GRANT CONNECT ON DATABASE {db} TO {role}")).await;
            exec(&mut su, &format!("GRANT USAGE ON SCHEMA public TO {role}")).await;
            exec(
                &mut su,
                &format!("GRANT SELECT, INSERT ON audit_record, audit_patient, audit_checkpoint TO {role}"),
            )
            .await;
            exec(
                &mut su,
                &format!("GRANT SELECT ON ward_audit_migrations TO {role}"),
            )
            .await;
            let app_url = fx.url.replacen("postgres@", &format!("{role}@"), 1);
            assert_ne!(app_url, fx.url, "test URL must name the postgres user");
            let store = AuditStore::open(&app_url).await.unwrap();
            let (h, join) = start_writer(store.clone(), "n1".into(), signer, config())
                .await
                .unwrap();
            assert_eq!(h.record(rec(1)).await.unwrap(), 1);
            // The app role cannot change audit rows even without triggers.
            let mut app = AnyConnection::connect(&app_url).await.unwrap();
            let err = sqlx::query("ALTER TABLE audit_record DISABLE TRIGGER ALL")
                .execute(&mut app)
                .await;
            assert!(err.is_err());
            exec(&mut su, &format!("REVOKE INSERT ON audit_record FROM {role}")).await;
            for i in 0..3 {
                assert!(matches!(h.record(rec(i)).await, Err(AuditError::Unavailable)));
                assert!(!h.healthy());
            }
            exec(&mut su, &format!("GRANT INSERT ON audit_record TO {role}")).await;
            assert_eq!(h.record(rec(5)).await.unwrap(), 2);
            assert!(h.healthy());
            h.shutdown().await;
            join.await.unwrap();
            let r = verify(&store, &pk).await.unwrap();
            assert!(r.ok && r.records == 2, "{r:?}");
            let _ = app.close().await;
            let _ = su.close().await;
            store.close().await;
            owner.close().await;
        }
    }
}

/// The database refuses one record of a batch (here a trigger, standing in for a value it
/// cannot store): that request fails closed, its batch-mates commit and the chain stays whole.
async fn refused_record_fails_alone(fx: Fx) {
    let store = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    let pk = signer.try_clone().unwrap();
    let mut c = AnyConnection::connect(&fx.url).await.unwrap();
    match fx.kind {
        Kind::Sqlite => {
            exec(
                &mut c,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_record \
                 WHEN NEW.action = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .await
        }
        Kind::Postgres => {
            exec(
                &mut c,
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.action = 'poison' THEN \
                 RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            exec(
                &mut c,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_record \
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            )
            .await
        }
    }
    let (h, join) = start_writer(store.clone(), "n1".into(), signer, config())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut r = rec(i);
                if i == 20 {
                    r.action = "poison".into();
                }
                h.record(r).await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(seq) => seqs.push(seq),
            Err(AuditError::Unavailable) if i == 20 => {}
            other => panic!("record {i}: {other:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=39).collect::<Vec<i64>>());
    let (records, batches) = h.stats();
    assert_eq!(records, 39);
    assert!(batches < 39, "the records were not batched: {batches} batches");
    h.shutdown().await;
    join.await.unwrap();
    let r = verify(&store, &pk).await.unwrap();
    assert!(r.ok && r.records == 39, "{r:?}");
    let _ = c.close().await;
    store.close().await;
}

/// Someone with INSERT rights (a stolen database credential, or a second process with the
/// same node id) takes the next chain position with a correctly hashed row: the writer's
/// batch collides, and the writer finds a database head that is not its own. It stops (every
/// record fails closed) instead of adopting that head and later signing it, and a restarted
/// writer refuses the chain.
async fn writer_stops_when_someone_else_writes(fx: Fx) {
    let store = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    let keys = signer.try_clone().unwrap();
    let (h, join) = start_writer(store.clone(), "n1".into(), signer, config())
        .await
        .unwrap();
    assert_eq!(h.record(rec(0)).await.unwrap(), 1);
    let mut c = AnyConnection::connect(&fx.url).await.unwrap();
    let (record, _, h1) = row(&mut c, 1).await;
    let forged = record.replace("\"seq\":1,", "\"seq\":2,");
    insert_row(&mut c, 2, &forged, &h1, &chain_hash(&h32(&h1), forged.as_bytes())).await;
    assert!(
        matches!(h.record(rec(1)).await, Err(AuditError::Unavailable)),
        "the colliding batch fails closed"
    );
    for i in 2..5 {
        assert!(
            matches!(h.record(rec(i)).await, Err(AuditError::Unavailable)),
            "the writer stays stopped"
        );
    }
    assert!(!h.healthy());
    h.shutdown().await;
    join.await.unwrap();
    let r = verify(&store, &keys).await.unwrap();
    let bad = r.first_bad.unwrap();
    assert_eq!((bad.node.as_str(), bad.seq, bad.kind), ("n1", 2, Damage::Forged));
    let again = start_writer(store.clone(), "n1".into(), keys, config()).await;
    assert!(matches!(again, Err(AuditError::Corrupt(_))), "{again:?}");
    let _ = c.close().await;
    store.close().await;
}

/// Copies `from`'s records 1..=n onto a new chain `node` with correct (unkeyed) hashes: what
/// a writer with INSERT rights but without the keys can make.
async fn fabricate_chain(c: &mut AnyConnection, node: &str, n: i64) {
    let mut prev = [0u8; 32];
    for seq in 1..=n {
        let (record, _, _) = row(c, seq).await;
        let record = record.replace("\"node\":\"n1\"", &format!("\"node\":\"{node}\""));
        let hash = chain_hash(&prev, record.as_bytes());
        sqlx::query(
            "INSERT INTO audit_record (node, seq, at_ms, action, status, record, prev_hash, hash) \
             VALUES ($1, $2, 0, 'read', 200, $3, $4, $5)",
        )
        .bind(node)
        .bind(seq)
        .bind(record)
        .bind(prev.to_vec())
        .bind(hash.to_vec())
        .execute(&mut *c)
        .await
        .unwrap();
        prev = hash;
    }
}

async fn expect_bad_on(store: &AuditStore, keys: &AuditSigner, node: &str, seq: i64, kind: Damage) {
    let r = verify(store, keys).await.unwrap();
    assert!(!r.ok, "not detected: {r:?}");
    let bad = r.first_bad.clone().unwrap();
    assert_eq!((bad.node.as_str(), bad.seq, bad.kind), (node, seq, kind), "{r:?}");
}

/// Issue 9 item 5: a whole chain for an unknown node, made with INSERT rights only (no
/// tampering with existing rows), fails: it has no signed genesis, and its records no MAC.
async fn forged_chain_for_unknown_node(fx: Fx) {
    let (store, _, keys) = build_log(&fx, 10).await;
    let mut c = AnyConnection::connect(&fx.url).await.unwrap();
    fabricate_chain(&mut c, "node-9", 5).await;
    expect_bad_on(&store, &keys, "node-9", 0, Damage::NoGenesis).await;
    // Even with a genuine genesis signature copied over from n1 (it signs another node).
    sqlx::query(
        "INSERT INTO audit_checkpoint (node, seq, hash, key_id, signature, at, prev_seq, chains) \
         SELECT 'node-9', seq, hash, key_id, signature, at, prev_seq, chains FROM audit_checkpoint \
         WHERE node = 'n1' AND seq = 0",
    )
    .execute(&mut c)
    .await
    .unwrap();
    expect_bad_on(&store, &keys, "node-9", 0, Damage::BadSignature).await;
    let _ = c.close().await;
    store.close().await;
}

/// Issue 9 item 5: a record appended at the head with a correct unkeyed hash fails (today it
/// would be "not yet sealed" at worst; the MAC makes it forged), and no writer continues it.
async fn forged_record_at_head(fx: Fx) {
    let (store, _, keys) = build_log(&fx, 20).await;
    assert_eq!(verify(&store, &keys).await.unwrap().unsealed, 0);
    let mut c = AnyConnection::connect(&fx.url).await.unwrap();
    let (record, _, h20) = row(&mut c, 20).await;
    let forged = record.replace("\"seq\":20,", "\"seq\":21,");
    insert_row(
        &mut c,
        21,
        &forged,
        &h20,
        &chain_hash(&h32(&h20), forged.as_bytes()),
    )
    .await;
    expect_bad(&store, &keys, 21, Damage::Forged).await;
    let writer = start_writer(store.clone(), "n1".into(), keys.try_clone().unwrap(), config()).await;
    assert!(matches!(writer, Err(AuditError::Corrupt(_))), "{writer:?}");
    let _ = c.close().await;
    store.close().await;
}

/// A log of 30 records on n1 with checkpoints at 0 (genesis), 10, 20 and 30.
async fn sealed_log(fx: &Fx) -> (AuditStore, AuditSigner) {
    let store = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    for part in 0..3 {
        bulk_append(&store, "n1", &signer, (1..=10).map(|i| rec(part * 10 + i)), 4)
            .await
            .unwrap();
    }
    let cps: Vec<i64> = store
        .checkpoints("n1")
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(cps, vec![0, 10, 20, 30]);
    let r = verify(&store, &signer).await.unwrap();
    assert!(r.ok && r.unsealed == 0, "{r:?}");
    (store, signer)
}

/// Issue 9 item 5: with every signed checkpoint deleted the chain fails (no genesis).
async fn all_checkpoints_deleted(fx: Fx) {
    let (store, keys) = sealed_log(&fx).await;
    let mut c = fx.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_checkpoint").await;
    expect_bad(&store, &keys, 0, Damage::NoGenesis).await;
    let _ = c.close().await;
    store.close().await;
}

/// Issue 9 item 5: a checkpoint deleted from the middle fails (the records after it name it
/// under their MAC, and so does the next checkpoint); so does a deleted genesis. The newest
/// checkpoint, when no record names it yet, leaves its records reported as not yet sealed.
async fn some_checkpoints_deleted(fx: Fx) {
    let (store, keys) = sealed_log(&fx).await;
    let mut c = fx.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_checkpoint WHERE seq = 10").await;
    expect_bad(&store, &keys, 10, Damage::CheckpointRemoved).await;
    store.close().await;

    let fx2 = Fx::new(fx.kind).await;
    let (store, keys) = sealed_log(&fx2).await;
    let mut c = fx2.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_checkpoint WHERE seq = 0").await;
    expect_bad(&store, &keys, 0, Damage::NoGenesis).await;
    store.close().await;

    let fx3 = Fx::new(fx.kind).await;
    let (store, keys) = sealed_log(&fx3).await;
    let mut c = fx3.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_checkpoint WHERE seq = 30").await;
    let r = verify(&store, &keys).await.unwrap();
    assert!(
        r.ok && r.unsealed == 10 && r.chains[0].verified_through == 20,
        "{r:?}"
    );
    let _ = c.close().await;
    store.close().await;
}

/// Issue 9 item 5: a chain deleted whole (records and checkpoints) is missing when a later
/// checkpoint of another chain lists it.
async fn deleted_chain_is_missing(fx: Fx) {
    let store = fx.open().await;
    let keys = AuditSigner::generate().unwrap();
    bulk_append(&store, "n1", &keys, (1..=5).map(rec), 4)
        .await
        .unwrap();
    bulk_append(&store, "n2", &keys, (1..=5).map(rec), 4)
        .await
        .unwrap();
    bulk_append(&store, "n1", &keys, (6..=8).map(rec), 4)
        .await
        .unwrap();
    let last = store.checkpoints("n1").await.unwrap().pop().unwrap();
    assert_eq!(last.chains, "n1,n2");
    assert!(verify(&store, &keys).await.unwrap().ok);
    let mut c = fx.tamper_conn().await;
    exec(&mut c, "DELETE FROM audit_patient WHERE node = 'n2'").await;
    exec(&mut c, "DELETE FROM audit_record WHERE node = 'n2'").await;
    exec(&mut c, "DELETE FROM audit_checkpoint WHERE node = 'n2'").await;
    expect_bad_on(&store, &keys, "n2", 0, Damage::MissingChain).await;
    let _ = c.close().await;
    store.close().await;
}

// ----- export -------------------------------------------------------------------------------

async fn export_round_trip_and_tampered_export(fx: Fx) {
    let (store, signer, pk) = build_log(&fx, 30).await;
    bulk_append(&store, "n2", &signer, (1..=5).map(rec), 100)
        .await
        .unwrap();
    let mut out = Vec::new();
    let n = export(&store, &mut out, signer.public_key_pem().as_bytes())
        .await
        .unwrap();
    assert_eq!(n, 35);
    let text = String::from_utf8(out.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // header, checkpoints (n1 at 0 and 30, n2 at 0 and 5), records
    assert_eq!(lines.len(), 1 + 4 + 35);

    let r = verify_export(&mut Cursor::new(&out), signer.public_key_pem().as_bytes()).unwrap();
    assert!(r.ok && r.records == 35 && r.chains.len() == 2, "{r:?}");

    // Each record line is a valid R4 AuditEvent.
    let validator = ward_fhir::validate::Validator::new();
    for l in &lines[5..] {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        validator
            .validate(&v, "AuditEvent")
            .unwrap_or_else(|e| panic!("{e:?}\n{l}"));
    }

    let check = |lines: Vec<String>, seq: i64, kind: Damage| {
        let data = lines.join("\n");
        let r = verify_export(&mut Cursor::new(data.as_bytes()), &pk.public_key_bytes()).unwrap();
        let bad = r
            .first_bad
            .clone()
            .unwrap_or_else(|| panic!("not detected: {r:?}"));
        assert_eq!((bad.node.as_str(), bad.seq, bad.kind), ("n1", seq, kind), "{r:?}");
    };
    let owned: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    let rec_line = |seq: usize| 4 + seq; // header, 4 checkpoints, then n1 records from seq 1

    // Edited readable field.
    let mut l = owned.clone();
    assert!(l[rec_line(7)].contains("\"outcome\":\"0\""));
    l[rec_line(7)] = l[rec_line(7)].replace("\"outcome\":\"0\"", "\"outcome\":\"4\"");
    check(l, 7, Damage::Edited);
    // Deleted line.
    let mut l = owned.clone();
    l.remove(rec_line(9));
    check(l, 9, Damage::Deleted);
    // Swapped lines.
    let mut l = owned.clone();
    l.swap(rec_line(11), rec_line(12));
    check(l, 11, Damage::Reordered);
    // Truncated tail.
    let mut l = owned.clone();
    l.truncate(rec_line(25));
    check(l, 25, Damage::TruncatedAfterCheckpoint);
    // Wrong key.
    let wrong = AuditSigner::generate().unwrap();
    let r = verify_export(&mut Cursor::new(&out), &wrong.public_key_bytes()).unwrap();
    assert_eq!(r.first_bad.unwrap().kind, Damage::BadSignature);
    // Not an export.
    assert!(matches!(
        verify_export(&mut Cursor::new(b"{\"x\":1}\n"), &pk.public_key_bytes()),
        Err(AuditError::Corrupt(_))
    ));
    store.close().await;
}

// ----- review -------------------------------------------------------------------------------

async fn disclosures_and_search(fx: Fx) {
    let store = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    let mut recs: Vec<AuditRecord> = (0..20).map(rec).collect();
    recs[3].action = "search-type".into();
    recs[3].resource_id = None;
    recs[3].patients = vec!["p3".into(), "p9".into()];
    recs[3].query_hashes = vec!["h1".into()];
    recs[4].outcome = Outcome {
        status: 403,
        code: Some("forbidden".into()),
    };
    recs[5].action = "create".into();
    recs[6].action = "token".into();
    recs[6].kind = RecordKind::Request;
    recs[6].resource_type = None;
    recs[6].resource_id = None;
    recs[6].patients = vec![];
    recs[8].purpose_of_use = Some("ETREAT".into());
    recs[8].break_glass = true;
    for (i, r) in recs.iter_mut().enumerate() {
        r.at = format!("2026-11-23T12:00:{i:02}.000Z");
    }
    bulk_append(&store, "n1", &signer, recs, 7).await.unwrap();

    let d = disclosures(&store, "p9", None).await.unwrap();
    assert_eq!(d.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4]);
    let d = disclosures(&store, "Patient/p3", None).await.unwrap();
    assert_eq!(d.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 9, 14, 19]);
    let since = time::OffsetDateTime::parse(
        "2026-11-23T12:00:10Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let d = disclosures(&store, "p3", Some(since)).await.unwrap();
    assert_eq!(d.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![14, 19]);

    let seqs = |v: Vec<(AuditRecord, String)>| v.into_iter().map(|(r, _)| r.seq).collect::<Vec<_>>();
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        seqs(search(&store, &q(|q| q.count = 3)).await.unwrap()),
        vec![20, 19, 18]
    );
    assert_eq!(
        seqs(
            search(&store, &q(|q| q.patient = Some("p9".into())))
                .await
                .unwrap()
        ),
        vec![4]
    );
    assert_eq!(
        seqs(search(&store, &q(|q| q.action = Some("C".into()))).await.unwrap()),
        vec![6]
    );
    assert_eq!(
        seqs(
            search(&store, &q(|q| q.action = Some("token".into())))
                .await
                .unwrap()
        ),
        vec![7]
    );
    assert_eq!(
        seqs(search(&store, &q(|q| q.action = Some("E".into()))).await.unwrap()),
        vec![7]
    );
    assert_eq!(
        seqs(search(&store, &q(|q| q.outcome = Some(4))).await.unwrap()),
        vec![5]
    );
    assert_eq!(
        seqs(search(&store, &q(|q| q.outcome = Some(403))).await.unwrap()),
        vec![5]
    );
    assert_eq!(
        seqs(
            search(&store, &q(|q| q.entity = Some("Patient/p9".into())))
                .await
                .unwrap()
        ),
        vec![4]
    );
    assert_eq!(
        seqs(
            search(&store, &q(|q| q.entity = Some("Patient/p1".into())))
                .await
                .unwrap()
        ),
        vec![17, 12, 2]
    );
    let agent_user: Vec<i64> = seqs(
        search(&store, &q(|q| q.agent = Some("user-1".into())))
            .await
            .unwrap(),
    );
    assert_eq!(agent_user.len(), 10);
    assert!(agent_user.iter().all(|s| (s - 1) % 2 == 0));
    let range = AuditQuery {
        date_ge: Some(since),
        date_lt: Some(since + time::Duration::seconds(2)),
        ..Default::default()
    };
    assert_eq!(seqs(search(&store, &range).await.unwrap()), vec![12, 11]);

    // The AuditEvent form.
    let found = search(&store, &q(|q| q.patient = Some("p9".into())))
        .await
        .unwrap();
    let ev = to_audit_event(&found[0].0, &found[0].1);
    assert_eq!(ev["id"], "n1-4");
    assert_eq!(ev["action"], "R");
    assert_eq!(ev["subtype"][0]["code"], "search-type");
    assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], "client-a");
    let bg = search(&store, &q(|q| q.action = Some("read".into())))
        .await
        .unwrap();
    let ev = to_audit_event(&bg.iter().find(|(r, _)| r.seq == 9).unwrap().0, "00");
    assert_eq!(ev["agent"][0]["who"]["identifier"]["value"], "user-1");
    assert_eq!(ev["agent"][1]["requestor"], false);
    assert_eq!(ev["purposeOfEvent"][1]["coding"][0]["code"], "BTG");
    let validator = ward_fhir::validate::Validator::new();
    validator.validate(&ev, "AuditEvent").unwrap();
    store.close().await;
}

/// One running writer per node: a second process asking for the same node's chain is
/// refused with a message saying so, and gets it once the first lets go.
async fn node_lease_is_exclusive(fx: Fx) {
    let store = fx.open().await;
    let other_process = fx.open().await;
    let signer = AuditSigner::generate().unwrap();
    let lease = store.lease_node("n1").await.unwrap();
    let (h, join) = start_leased_writer(store.clone(), lease, signer.try_clone().unwrap(), config())
        .await
        .unwrap();
    match other_process.lease_node("n1").await {
        Err(e @ AuditError::NodeInUse(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("already running") && msg.contains("audit.node"),
                "{msg}"
            );
        }
        other => panic!("a second holder of n1 must be refused: {other:?}"),
    }
    // Another node id is free.
    drop(other_process.lease_node("n2").await.unwrap());

    // Intents without a final record are found; one named by a final record is not.
    let mut intent = rec(1);
    intent.kind = RecordKind::Intent;
    let first = h.record(intent.clone()).await.unwrap();
    let second = h.record(intent).await.unwrap();
    let mut done = rec(2);
    done.intent_seq = Some(first);
    h.record(done).await.unwrap();
    let open: Vec<i64> = store
        .unresolved_intents("n1", 0, 100, true)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(open, vec![second]);
    assert_eq!(store.final_record_of("n1", first).await.unwrap(), Some(first + 2));
    let summary = store.unresolved_summary("n1").await.unwrap();
    assert_eq!((summary.count, summary.first), (1, vec![second]));

    h.shutdown().await;
    join.await.unwrap();
    // The writer let go of the lease when it stopped.
    drop(other_process.lease_node("n1").await.unwrap());
    store.close().await;
}

both!(
    node_lease_is_exclusive,
    writer_commits_batches_and_checkpoints,
    periodic_checkpoints_and_multi_node,
    triggers_refuse_update_and_delete,
    tamper_untouched_and_edited,
    tamper_edited_with_recomputed_hash,
    tamper_rewritten_chain_fails_checkpoint,
    tamper_deleted,
    tamper_inserted,
    tamper_reordered,
    tamper_truncated,
    tamper_forged_checkpoint,
    tamper_across_pages,
    fail_closed_and_recover,
    refused_record_fails_alone,
    writer_stops_when_someone_else_writes,
    forged_chain_for_unknown_node,
    forged_record_at_head,
    all_checkpoints_deleted,
    some_checkpoints_deleted,
    deleted_chain_is_missing,
    export_round_trip_and_tampered_export,
    disclosures_and_search,
);
