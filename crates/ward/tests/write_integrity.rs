//! Writes never diverge from the audit trail (SPEC AU-2, IN-1): a change runs to its end
//! whatever happens to the client's connection, a stored change is never answered as failed,
//! every intent gets exactly one final record (at once, or by reconciliation), and one node id
//! is one running process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Backend, Proc, TestServer, distinctive_patient, raw_tls};
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};
use tokio::io::AsyncWriteExt;

on_both_backends!(
    disconnecting_clients_never_split_a_write,
    a_stored_change_is_never_answered_as_failed,
    a_second_node_with_the_same_id_refuses_to_start,
    killed_mid_write_is_reconciled_at_start,
    another_deployments_keys_are_named_at_start,
    routine_operation_leaves_the_log_quiet,
    a_transaction_of_reads_sees_one_state,
);

async fn pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::pool::PoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}

/// Deterministic pseudo-random numbers (no dependency, reproducible runs).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The state of the trail against the store once nothing runs: every intent of `node` has
/// exactly one final record naming it, and every stored version was written under an intent
/// of `node` that has one. Returns the final records by intent seq (outcome code, status).
async fn trail_matches_store(
    audit_url: &str,
    store_url: &str,
    node: &str,
) -> BTreeMap<i64, (Option<String>, i64)> {
    let audit = pool(audit_url).await;
    let intents: BTreeSet<i64> =
        sqlx::query("SELECT seq FROM audit_record WHERE node = $1 AND kind = 'intent'")
            .bind(node)
            .fetch_all(&audit)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect();
    let mut finals: BTreeMap<i64, Vec<(Option<String>, i64)>> = BTreeMap::new();
    for r in sqlx::query(
        "SELECT intent_seq, record, status FROM audit_record WHERE node = $1 AND intent_seq IS NOT NULL",
    )
    .bind(node)
    .fetch_all(&audit)
    .await
    .unwrap()
    {
        let rec: Value = serde_json::from_str(&r.get::<String, _>(1)).unwrap();
        let code = rec["outcome"]["code"].as_str().map(str::to_owned);
        finals.entry(r.get(0)).or_default().push((code, r.get(2)));
    }
    audit.close().await;
    for seq in &intents {
        let n = finals.get(seq).map_or(0, Vec::len);
        assert_eq!(n, 1, "intent {seq} has {n} final records (want exactly one)");
    }
    for seq in finals.keys() {
        assert!(
            intents.contains(seq),
            "a final record names {seq}, which is no intent"
        );
    }
    let store = pool(store_url).await;
    let rows = sqlx::query(
        "SELECT rv.rtype, rv.id, rv.version, wi.node, wi.intent_seq FROM resource_version rv \
         LEFT JOIN write_intent wi ON wi.tenant = rv.tenant AND wi.rtype = rv.rtype \
         AND wi.id = rv.id AND wi.version = rv.version",
    )
    .fetch_all(&store)
    .await
    .unwrap();
    store.close().await;
    assert!(!rows.is_empty());
    for r in &rows {
        let what = format!(
            "{}/{} v{}",
            r.get::<String, _>(0),
            r.get::<String, _>(1),
            r.get::<i64, _>(2)
        );
        let written_by: Option<String> = r.get(3);
        let intent: Option<i64> = r.get(4);
        assert_eq!(written_by.as_deref(), Some(node), "{what} names no intent");
        let intent = intent.unwrap();
        assert!(
            intents.contains(&intent),
            "{what}: intent {intent} is not on the trail"
        );
    }
    finals.into_iter().map(|(k, mut v)| (k, v.remove(0))).collect()
}

fn http_request(s: &TestServer, method: &str, path: &str, token: &str, body: Option<&Value>) -> Vec<u8> {
    let host = s.url.trim_start_matches("https://");
    let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let mut req = format!(
        "{method} /fhir/{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend(body);
    req
}

/// Before: a client that went away while its write ran dropped the request's future, so the
/// steps after the point it reached never ran: intents without a final record, and changes
/// stored but not recorded as done.
async fn disconnecting_clients_never_split_a_write(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            s.create(&t, &distinctive_patient(&format!("{i:02}"))).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut rng = Lcg(0x5eed);
    let mut requests = Vec::new();
    for i in 0..160u64 {
        let id = &ids[usize::try_from(rng.below(ids.len() as u64)).unwrap()];
        let mut p = distinctive_patient(&format!("{:02}", i % 100));
        let req = match rng.below(4) {
            0 => http_request(&s, "POST", "Patient", &t, Some(&p)),
            1 => {
                p["id"] = json!(id);
                http_request(&s, "PUT", &format!("Patient/{id}"), &t, Some(&p))
            }
            2 => http_request(&s, "DELETE", &format!("Patient/{id}"), &t, None),
            _ => {
                p["id"] = json!(id);
                let bundle = json!({
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {"fullUrl": "urn:uuid:6f1c1e52-2b1e-4c47-9a43-0d7e3c1f0a01",
                         "resource": distinctive_patient("TX"),
                         "request": {"method": "POST", "url": "Patient"}},
                        {"resource": p, "request": {"method": "PUT", "url": format!("Patient/{id}")}},
                    ]
                });
                http_request(&s, "POST", "", &t, Some(&bundle))
            }
        };
        // Most clients leave within the time a write takes; some right after sending.
        requests.push((req, Duration::from_micros(rng.below(20_000))));
    }
    for wave in requests.chunks(40) {
        let mut tasks = Vec::new();
        for (req, after) in wave.iter().cloned() {
            let (dir, port) = (s.dir.clone(), s.port);
            tasks.push(tokio::spawn(async move {
                let mut conn = raw_tls(&dir, port).await;
                conn.write_all(&req).await.unwrap();
                conn.flush().await.unwrap();
                tokio::time::sleep(after).await;
                drop(conn);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    let (audit_url, store_url) = (s.config.audit_url(), s.config.store_url());
    // Shutting down waits for the writes still running.
    let _files = s.stop_keeping_files().await;
    let finals = trail_matches_store(&audit_url, &store_url, "node-1").await;
    assert!(
        finals.len() > 100,
        "the writes ran: {} final records",
        finals.len()
    );
}

/// Makes final records of writes fail (a trigger behind Ward's back): all of them, or with
/// `client_errors_only` those of writes answered 4xx; `None` lifts it.
async fn block_final_records(audit_url: &str, backend: Backend, block: Option<bool>) {
    let audit = pool(audit_url).await;
    let condition = |client_errors_only: bool| {
        if client_errors_only {
            "NEW.intent_seq IS NOT NULL AND NEW.status BETWEEN 400 AND 499"
        } else {
            "NEW.intent_seq IS NOT NULL"
        }
    };
    let sql = match (backend, block) {
        (Backend::Sqlite, Some(c)) => format!(
            "CREATE TRIGGER test_block_final BEFORE INSERT ON audit_record WHEN {} \
             BEGIN SELECT RAISE(ABORT, 'blocked by test'); END",
            condition(c)
        ),
        (Backend::Sqlite, None) => "DROP TRIGGER test_block_final".into(),
        (Backend::Postgres, Some(c)) => format!(
            "CREATE FUNCTION test_block_final() RETURNS trigger AS $$ BEGIN IF {} THEN \
             RAISE EXCEPTION 'blocked by test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER test_block_final BEFORE INSERT ON audit_record FOR EACH ROW \
             EXECUTE FUNCTION test_block_final()",
            condition(c)
        ),
        (Backend::Postgres, None) => {
            "DROP TRIGGER test_block_final ON audit_record; DROP FUNCTION test_block_final()".into()
        }
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&audit)
        .await
        .unwrap();
    audit.close().await;
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Before: when the final record could not be committed after the store commit, the client
/// got 503 while the change was kept (a retry made a duplicate), and the intent stayed
/// unresolved for ever.
async fn a_stored_change_is_never_answered_as_failed(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.audit.reconcile_secs = 1).await;
    let t = s.admin_token().await;
    let p0 = s.create(&t, &distinctive_patient("P0")).await;
    let p0_path = format!("Patient/{}", p0["id"].as_str().unwrap());
    let audit_url = s.config.audit_url();

    // 1. A create whose final record cannot be committed: the answer waits, ePHI fails
    //    closed meanwhile, and the answer is the truth once the record is in.
    block_final_records(&audit_url, backend, Some(false)).await;
    let create = {
        let req = s.post_json("Patient", &t, &distinctive_patient("P1"));
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    let ready = format!("{}/readyz", s.url);
    wait_for("the server to fail closed", async || {
        s.status_of(&ready, None).await == 503
    })
    .await;
    assert_eq!(s.get(&p0_path, &t).send().await.unwrap().status(), 503);
    assert!(!create.is_finished(), "the answer waits for the final record");
    let report = ward::audit_cli::verify(&s.config).await.unwrap();
    let node = report.chains.iter().find(|c| c.node == "node-1").unwrap();
    assert_eq!(
        node.unresolved_intents.count, 1,
        "verify names the open intent: {node:?}"
    );
    let open_seq = node.unresolved_intents.first[0];

    block_final_records(&audit_url, backend, None).await;
    let resp = create.await.unwrap();
    assert_eq!(resp.status(), 201, "a stored change is answered as stored");
    let p1: Value = resp.json().await.unwrap();
    let p1_path = format!("Patient/{}", p1["id"].as_str().unwrap());
    assert_eq!(s.get(&p1_path, &t).send().await.unwrap().status(), 200);

    // 2. A write that failed (412, nothing stored) and whose final record failed too: 503 is
    //    true there, and periodic reconciliation records it as not committed.
    block_final_records(&audit_url, backend, Some(true)).await;
    let mut changed = p0.clone();
    changed["gender"] = json!("other");
    let stale = s
        .put_json(&p0_path, &t, &changed)
        .header("if-match", "W/\"9\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 503);
    block_final_records(&audit_url, backend, None).await;
    let store_url = s.config.store_url();
    wait_for("reconciliation", async || {
        let report = ward::audit_cli::verify(&s.config).await.unwrap();
        report.chains.iter().all(|c| c.unresolved_intents.count == 0)
    })
    .await;
    let current = s.get(&p0_path, &t).send().await.unwrap();
    assert_eq!(
        current.headers()["etag"],
        "W/\"1\"",
        "the refused update changed nothing"
    );
    let _files = s.stop_keeping_files().await;
    let finals = trail_matches_store(&audit_url, &store_url, "node-1").await;
    assert_eq!(finals[&open_seq].1, 201, "the held create's one final record");
    let reconciled: Vec<_> = finals
        .values()
        .filter(|(code, _)| code.as_deref() == Some("not-committed"))
        .collect();
    assert_eq!(reconciled.len(), 1, "{finals:?}");
}

/// A node killed while a stored change waited for its final record: the next start resolves
/// the intent against the store, as committed but not acknowledged.
async fn killed_mid_write_is_reconciled_at_start(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let store_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(ward_store::testing::fresh_postgres_url().await),
    };
    let mut p = Proc::init_with(tmp.path(), store_url.as_deref());
    p.start().await;
    let config = ward_server::Config::load(Some(&p.dir), None).unwrap();
    let audit_url = config.audit_url();
    let t = p.token().await;
    block_final_records(&audit_url, backend, Some(false)).await;
    let create = {
        let req = p.post_fhir("Patient", &t).json(&distinctive_patient("K1"));
        tokio::spawn(async move { req.send().await })
    };
    let ready = format!("{}/readyz", p.url);
    let client = p.client.clone();
    wait_for("the write to be held", async || {
        client.get(&ready).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    p.kill9();
    assert!(
        create.await.unwrap().is_err(),
        "the client saw the connection go, no answer"
    );
    block_final_records(&audit_url, backend, None).await;
    let out = p.ward(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("unresolved: node node-1 has 1 intent record"),
        "{text}"
    );

    p.start().await;
    let out = p.ward(&["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("unresolved"), "{text}");
    p.terminate();
    let finals = trail_matches_store(&audit_url, &config.store_url(), "node-1").await;
    let recovered: Vec<_> = finals
        .values()
        .filter(|(code, _)| code.as_deref() == Some("committed-not-acknowledged"))
        .collect();
    assert_eq!(recovered.len(), 1, "{finals:?}");
}

/// Before: a second node started with the same `audit.node` served too, and the two chains
/// collided on every record.
async fn a_second_node_with_the_same_id_refuses_to_start(backend: Backend) {
    let s = TestServer::start(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match ward_server::start(s.config.clone(), Some(listener)).await {
        Ok(_) => panic!("a second node-1 started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("\"node-1\" is already running") && err.contains("audit.node"),
        "{err}"
    );
    // The first node is unaffected.
    let t = s.admin_token().await;
    s.create(&t, &distinctive_patient("N1")).await;
    s.stop().await;
}

/// Before: a store opened with another deployment's `keys/` failed with "cryptographic
/// failure", and another audit key with "audit chain ... run `ward audit verify`" (which then
/// reported every checkpoint as badly signed).
async fn another_deployments_keys_are_named_at_start(backend: Backend) {
    let other = TestServer::start(backend).await;
    let other_keys = other.dir.join("keys");
    let s = TestServer::start(backend).await;
    let config = s.config.clone();
    let _files = s.stop_keeping_files().await;
    let keys = config.keys_dir();
    let start = async || {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        match ward_server::start(config.clone(), Some(listener)).await {
            Ok(_) => panic!("started with another deployment's keys"),
            Err(e) => e.to_string(),
        }
    };
    let own_kek = std::fs::read(keys.join("kek.key")).unwrap();
    std::fs::copy(other_keys.join("kek.key"), keys.join("kek.key")).unwrap();
    let err = start().await;
    assert!(
        err.contains("initialised with another key-encryption key") && err.contains("copy keys/"),
        "{err}"
    );
    std::fs::write(keys.join("kek.key"), own_kek).unwrap();
    for f in ["audit-ed25519.p8", "audit-mac.key"] {
        std::fs::copy(other_keys.join(f), keys.join(f)).unwrap();
    }
    let err = start().await;
    assert!(err.contains("signed with another audit key"), "{err}");
    let err = ward::audit_cli::verify(&config).await.unwrap_err().to_string();
    assert!(err.contains("another audit key"), "{err:#}");
    other.stop().await;
}

/// Before: every start and CLI command logged the migration table's "already exists,
/// skipping" notice (PostgreSQL), and every handshake of a client sending an IP address as its
/// server name a rustls warning.
async fn routine_operation_leaves_the_log_quiet(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let store_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(ward_store::testing::fresh_postgres_url().await),
    };
    let mut p = Proc::init_with(tmp.path(), store_url.as_deref());
    p.start().await;
    p.terminate();
    p.start().await;
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", p.port),
            "-servername",
            "127.0.0.1",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TLSv1.3"),
        "the handshake completed"
    );
    let t = p.token().await;
    let created = p
        .post_fhir("Patient", &t)
        .json(&distinctive_patient("Q1"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(p.ward(&["client", "list"]).status.success());
    p.terminate();
    let log = std::fs::read_to_string(&p.log).unwrap();
    for noise in [
        "already exists, skipping",
        "presented as hostname",
        "no transaction in progress",
    ] {
        assert!(!log.contains(noise), "log has {noise:?}:\n{log}");
    }
}

/// Before (PostgreSQL): each read of a transaction Bundle saw the state of its own moment, so
/// a writer committing in between was seen half.
async fn a_transaction_of_reads_sees_one_state(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let mut ids = Vec::new();
    for tag in ["RA", "RB"] {
        let mut p = distinctive_patient(tag);
        p["identifier"][0]["value"] = json!("0");
        ids.push(s.create(&t, &p).await["id"].as_str().unwrap().to_owned());
    }
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let ids = ids.clone();
            let (client, url, token) = (s.client.clone(), s.fhir.clone(), t.clone());
            tokio::spawn(async move {
                for n in 0..30 {
                    let entry: Vec<Value> = ids
                        .iter()
                        .map(|id| {
                            let mut p = distinctive_patient("RW");
                            p["id"] = json!(id);
                            p["identifier"][0]["value"] = json!(format!("{w}-{n}"));
                            json!({"resource": p, "request": {"method": "PUT", "url": format!("Patient/{id}")}})
                        })
                        .collect();
                    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entry});
                    let r = client.post(&url).bearer_auth(&token).json(&bundle).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let ids = ids.clone();
            let (client, url, token) = (s.client.clone(), s.fhir.clone(), t.clone());
            tokio::spawn(async move {
                let mut torn = 0;
                for _ in 0..30 {
                    let entry: Vec<Value> = (0..6)
                        .map(|i| json!({"request": {"method": "GET", "url": format!("Patient/{}", ids[i % 2])}}))
                        .collect();
                    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entry});
                    let r: Value = client.post(&url).bearer_auth(&token).json(&bundle).send().await.unwrap().json().await.unwrap();
                    let seen: BTreeSet<String> = r["entry"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["resource"]["identifier"][0]["value"].as_str().unwrap().to_owned())
                        .collect();
                    if seen.len() != 1 {
                        torn += 1;
                    }
                }
                torn
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut torn = 0;
    for r in readers {
        torn += r.await.unwrap();
    }
    assert_eq!(torn, 0, "transactions of reads saw two states");
    s.stop().await;
}
