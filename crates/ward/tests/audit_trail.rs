//! The audit trail seen from outside (SPEC AU-1..AU-5, AU-8, OPS-3): one durable record per
//! request, fail-closed when the trail cannot commit, tamper evidence through the CLI, no
//! PHI in logs.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Backend, Proc, TestServer, distinctive_patient};
use serde_json::{Value, json};
use ward_audit::{AuditQuery, AuditRecord, AuditStore, RecordKind};

on_both_backends!(
    one_record_per_request,
    fail_closed_and_recovers,
    audit_event_review_is_read_only,
    change_of_an_unreadable_version_fails_closed,
    forged_row_while_running_fails_closed,
    big_group_reads_are_bounded_and_disclosed
);

async fn all_records(s: &TestServer) -> Vec<AuditRecord> {
    let store = AuditStore::open(&s.config.audit_url()).await.unwrap();
    let q = AuditQuery {
        count: 100_000,
        ..AuditQuery::default()
    };
    ward_audit::search(&store, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// Sends `req` with a fresh request id and returns (request id, status).
async fn send(req: reqwest::RequestBuilder) -> (String, u16) {
    let rid = format!("walk-{}", uuid::Uuid::new_v4().simple());
    let resp = req.header("x-request-id", &rid).send().await.unwrap();
    (rid, resp.status().as_u16())
}

async fn one_record_per_request(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("AU")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{pid}")}});
    let o = s.create(&t, &obs).await;
    let oid = o["id"].as_str().unwrap().to_owned();
    let (ro_id, ro_secret) = s.new_client("system/Observation.r").await;
    let ro = s.token_for(&ro_id, &ro_secret, None).await;
    let c = &s.client;
    let f = &s.fhir;
    let mut p2 = p.clone();
    p2["active"] = json!(false);

    // (request, expected action, expected status, expected client, resource)
    let cases: Vec<(reqwest::RequestBuilder, &str, u16, Option<&str>)> = vec![
        (c.get(format!("{f}/metadata")), "capabilities", 200, None),
        (
            c.post(format!("{}/oauth2/token", s.url))
                .basic_auth(&s.admin_id, Some(&s.admin_secret))
                .form(&[("grant_type", "client_credentials")]),
            "token",
            200,
            Some(&s.admin_id),
        ),
        (
            c.post(format!("{}/oauth2/token", s.url))
                .basic_auth(&s.admin_id, Some("wrong"))
                .form(&[("grant_type", "client_credentials")]),
            "token",
            401,
            Some(&s.admin_id),
        ),
        (
            s.get(&format!("Patient/{pid}"), &t),
            "read",
            200,
            Some(&s.admin_id),
        ),
        (c.get(format!("{f}/Patient/{pid}")), "read", 401, None),
        (s.get(&format!("Patient/{pid}"), &ro), "read", 403, Some(&ro_id)),
        (
            s.get(&format!("Observation/{oid}"), &ro),
            "read",
            200,
            Some(&ro_id),
        ),
        (
            s.get(&format!("Patient/{pid}/_history/1"), &t),
            "vread",
            200,
            Some(&s.admin_id),
        ),
        (
            s.get(&format!("Patient/{pid}/_history"), &t),
            "history-instance",
            200,
            Some(&s.admin_id),
        ),
        (
            s.get("Patient/_history", &t),
            "history-type",
            200,
            Some(&s.admin_id),
        ),
        (c.get(format!("{f}/Patient/_history")), "history-type", 401, None),
        (
            s.put_json(&format!("Patient/{pid}"), &t, &p2),
            "update",
            200,
            Some(&s.admin_id),
        ),
        (c.put(format!("{f}/Patient/{pid}")).json(&p2), "update", 401, None),
        (
            s.post_json("Patient", &t, &distinctive_patient("A2")),
            "create",
            201,
            Some(&s.admin_id),
        ),
        (c.post(format!("{f}/Patient")).json(&p2), "create", 401, None),
        (
            c.delete(format!("{f}/Observation/{oid}")).bearer_auth(&t),
            "delete",
            204,
            Some(&s.admin_id),
        ),
        (c.delete(format!("{f}/Observation/{oid}")), "delete", 401, None),
        (s.get("AuditEvent", &t), "search-type", 200, Some(&s.admin_id)),
        (c.get(format!("{f}/AuditEvent")), "search-type", 401, None),
        (c.get(format!("{}/no/such/route", s.url)), "http-get", 404, None),
        (c.get(format!("{f}/Patient/{pid}/_history/1")), "vread", 401, None),
        (
            c.get(format!("{f}/Patient/{pid}/_history")),
            "history-instance",
            401,
            None,
        ),
        (c.get(format!("{f}/Patient?family=x")), "search-type", 401, None),
        (
            c.post(format!("{f}/Patient/_search")).form(&[("family", "x")]),
            "search-type",
            401,
            None,
        ),
        (
            c.get(format!("{f}/Patient/{pid}/Observation")),
            "search-compartment",
            401,
            None,
        ),
        (c.get(format!("{f}/_history")), "history-system", 401, None),
        (
            c.post(f.to_string())
                .json(&json!({"resourceType": "Bundle", "type": "batch"})),
            "bundle",
            401,
            None,
        ),
        (
            s.get("Patient?family=ZyxwarfieldAU", &t),
            "search-type",
            200,
            Some(&s.admin_id),
        ),
        (
            s.get(&format!("Patient/{pid}/Observation"), &t),
            "search-compartment",
            200,
            Some(&s.admin_id),
        ),
        (s.get("_history", &t), "history-system", 200, Some(&s.admin_id)),
        // attacker-chosen bytes in the path and in the claimed client id do not break the trail
        (c.get(format!("{f}/Patient/%00%01")), "read", 401, None),
        (
            c.post(format!("{}/oauth2/token", s.url)).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "\u{0}evil"),
                ("client_secret", "x"),
            ]),
            "token",
            401,
            Some("(malformed)"),
        ),
    ];
    let mut sent = Vec::new();
    for (req, action, status, client) in cases {
        let (rid, got) = send(req).await;
        assert_eq!(got, status, "{action} expected {status}");
        sent.push((rid, action, status, client));
    }
    let (health_rid, _) = send(c.get(format!("{}/healthz", s.url))).await;

    let records = all_records(&s).await;
    let mut by_rid: HashMap<&str, Vec<&AuditRecord>> = HashMap::new();
    for r in &records {
        by_rid.entry(r.request_id.as_str()).or_default().push(r);
    }
    for (rid, action, status, client) in &sent {
        let recs = by_rid
            .get(rid.as_str())
            .unwrap_or_else(|| panic!("no record for {action} {status}"));
        let finals: Vec<_> = recs.iter().filter(|r| r.kind == RecordKind::Request).collect();
        assert_eq!(finals.len(), 1, "{action} {status}: exactly one request record");
        let r = finals[0];
        assert_eq!(r.action, *action);
        assert_eq!(r.outcome.status, *status, "{action}");
        assert_eq!(r.actor.client_id.as_deref(), *client, "{action} {status}");
        assert!(r.source.ip.as_deref() == Some("127.0.0.1"), "{action}: source ip");
        assert!(
            r.at.ends_with('Z') && r.at.contains('.'),
            "UTC with milliseconds: {}",
            r.at
        );
        let intents = recs.iter().filter(|r| r.kind == RecordKind::Intent).count();
        let write = matches!(*action, "create" | "update" | "delete") && *status < 300;
        assert_eq!(intents, usize::from(write), "{action} {status}: intent records");
        if write {
            assert!(r.intent_seq.is_some(), "{action}: outcome points at its intent");
        }
    }
    // what was read and about whom
    let read = by_rid[sent[3].0.as_str()]
        .iter()
        .find(|r| r.kind == RecordKind::Request)
        .unwrap();
    assert_eq!(read.resource_type.as_deref(), Some("Patient"));
    assert_eq!(read.resource_id.as_deref(), Some(pid.as_str()));
    assert_eq!(read.patients, vec![pid.clone()]);
    assert_eq!(read.returned, 1);
    let obs_read = by_rid[sent[6].0.as_str()]
        .iter()
        .find(|r| r.kind == RecordKind::Request)
        .unwrap();
    assert_eq!(
        obs_read.patients,
        vec![pid.clone()],
        "an Observation's patient is recorded"
    );
    assert!(
        !by_rid.contains_key(health_rid.as_str()),
        "health probes are not audited"
    );
    // search values are recorded only as keyed hashes
    let search = sent
        .iter()
        .filter(|(_, a, st, c)| *a == "search-type" && *st == 200 && c.is_some())
        .flat_map(|(rid, ..)| by_rid[rid.as_str()].iter())
        .find(|r| r.kind == RecordKind::Request && r.resource_type.as_deref() == Some("Patient"))
        .unwrap();
    assert_eq!(search.query_hashes.len(), 1, "{:?}", search.query_hashes);
    let (name, hash) = search.query_hashes[0].split_once('=').unwrap();
    assert_eq!(name, "family");
    assert!(
        hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hash}"
    );
    assert!(!search.query_hashes[0].contains("Zyxwarfield"));
    assert!(
        search.patients.contains(&pid),
        "the patients a search returned are recorded"
    );
    s.stop().await;
}

async fn fail_closed_and_recovers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("FC")).await;
    let path = format!("Patient/{}", p["id"].as_str().unwrap());

    block_audit_inserts(&s, true).await;
    let resp = s.get(&path, &t).send().await.unwrap();
    assert_eq!(
        resp.status(),
        503,
        "ePHI is not released without a committed record"
    );
    let body = resp.text().await.unwrap();
    assert!(!body.contains("Zyxwarfield"), "no data in the refusal");
    let before = s.get("Patient/_history", &t).send().await.unwrap();
    assert_eq!(before.status(), 503);
    let write = s
        .post_json("Patient", &t, &distinctive_patient("F2"))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 503);
    assert_eq!(s.status_of(&format!("{}/metadata", s.fhir), None).await, 200);
    assert_eq!(s.status_of(&format!("{}/healthz", s.url), None).await, 200);
    assert_eq!(s.status_of(&format!("{}/readyz", s.url), None).await, 503);

    block_audit_inserts(&s, false).await;
    let mut status = 0;
    for _ in 0..50 {
        status = s.get(&path, &t).send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "service resumes by itself");
    assert_eq!(s.status_of(&format!("{}/readyz", s.url), None).await, 200);
    // the refused write left nothing behind
    let hist: Value = s
        .get("Patient/_history", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hist["entry"].as_array().unwrap().len(), 1);
    s.stop().await;
}

/// Makes the audit store refuse inserts (a trigger, added behind Ward's back) or lifts that.
/// The record of a change names the patients of the version it replaces. When that version
/// cannot be read (here its ciphertext is another resource's, so it fails its AEAD check), the
/// change is refused rather than recorded without them, and nothing is written.
async fn change_of_an_unreadable_version_fails_closed(backend: Backend) {
    use sqlx::Connection;
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = s.create(&t, &distinctive_patient("41")).await;
    let b = s.create(&t, &distinctive_patient("42")).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.config.store_url()).await.unwrap();
    sqlx::query(
        "UPDATE resource_version SET ciphertext = \
         (SELECT ciphertext FROM resource_version WHERE id = $2) WHERE id = $1",
    )
    .bind(a_id)
    .bind(b_id)
    .execute(&mut db)
    .await
    .unwrap();
    let path = format!("Patient/{a_id}");
    let (_, status) = send(s.put_json(&path, &t, &a)).await;
    assert_eq!(
        status, 500,
        "update over a version that fails its integrity check"
    );
    let (_, status) = send(s.delete(&path, &t)).await;
    assert_eq!(status, 500, "delete of a version that fails its integrity check");
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM resource_version WHERE id = $1")
        .bind(a_id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(versions, 1, "nothing was written");
    db.close().await.unwrap();
    s.stop().await;
}

/// Issue 9 item 5: a row added to the server's own chain behind its back, with nothing but
/// INSERT rights and a correct (unkeyed) chain hash, at the positions the writer takes next.
/// The writer finds a database head that is not its own and stops: every request fails closed
/// (503), it does not adopt the forged head; verification names the row, and the server refuses
/// to start on that chain.
async fn forged_row_while_running_fails_closed(backend: Backend) {
    use sqlx::{Connection, Row};
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("FR")).await;
    let path = format!("Patient/{}", p["id"].as_str().unwrap());
    assert_eq!(s.get(&path, &t).send().await.unwrap().status(), 200);

    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.config.audit_url()).await.unwrap();
    let head = sqlx::query(
        "SELECT seq, record, hash FROM audit_record WHERE node = 'node-1' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let (seq, record, mut prev): (i64, String, Vec<u8>) = (head.get(0), head.get(1), head.get(2));
    for next in seq + 1..=seq + 5 {
        let forged = record.replacen(&format!("\"seq\":{seq},"), &format!("\"seq\":{next},"), 1);
        let hash = ward_audit::chain_hash(&prev.clone().try_into().unwrap(), forged.as_bytes());
        sqlx::query(
            "INSERT INTO audit_record (node, seq, at_ms, action, status, record, prev_hash, hash) \
             VALUES ('node-1', $1, 0, 'read', 200, $2, $3, $4)",
        )
        .bind(next)
        .bind(forged)
        .bind(prev.clone())
        .bind(hash.to_vec())
        .execute(&mut db)
        .await
        .unwrap();
        prev = hash.to_vec();
    }
    db.close().await.unwrap();

    for _ in 0..4 {
        let resp = s.get(&path, &t).send().await.unwrap();
        assert_eq!(resp.status(), 503, "fails closed, and stays so");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.status_of(&format!("{}/readyz", s.url), None).await, 503);

    let report = ward::audit_cli::verify(&s.config).await.unwrap();
    let bad = report.first_bad.expect("the forged rows are found");
    assert_eq!(
        (bad.node.as_str(), bad.seq, bad.kind),
        ("node-1", seq + 1, ward_audit::Damage::Forged)
    );
    // No server continues a chain someone else wrote to (it refuses before binding its port).
    let err = ward_server::start(s.config.clone(), None)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("audit"), "{err:#}");
    s.stop().await;
}

/// Issue 9 item 4: reading a Group of 3,000 members used to insert 3,000 audit rows (on the
/// single writer). The record now names the Group version instead of its members, so its rows
/// stay bounded, and the accounting of disclosures of a member still lists the read.
async fn big_group_reads_are_bounded_and_disclosed(backend: Backend) {
    use sqlx::{Connection, Row};
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let member = s.create(&t, &distinctive_patient("GR")).await;
    let pid = member["id"].as_str().unwrap().to_owned();
    let mut members = vec![json!({"entity": {"reference": format!("Patient/{pid}")}})];
    members.extend((1..3_000).map(|i| json!({"entity": {"reference": format!("Patient/m{i}")}})));
    let group = s
        .create(
            &t,
            &json!({"resourceType": "Group", "type": "person", "actual": true, "member": members}),
        )
        .await;
    let gid = group["id"].as_str().unwrap().to_owned();
    let (rid, status) = send(s.get(&format!("Group/{gid}"), &t)).await;
    assert_eq!(status, 200);

    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.config.audit_url()).await.unwrap();
    let rows = sqlx::query(
        "SELECT r.node, r.seq, r.record, (SELECT COUNT(*) FROM audit_patient p \
         WHERE p.node = r.node AND p.seq = r.seq) FROM audit_record r",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut read_seen = false;
    for r in &rows {
        let rec = AuditRecord::from_canonical(r.get::<String, _>(2).as_bytes()).unwrap();
        let patient_rows: i64 = r.get(3);
        assert!(
            patient_rows <= ward_server::audit::MAX_LISTED_PATIENTS as i64,
            "{} patient rows for one {} record",
            patient_rows,
            rec.action
        );
        if rec.request_id == rid {
            read_seen = true;
            assert_eq!(rec.patients_via, vec![format!("Group/{gid}/_history/1")]);
            assert!(rec.patients.is_empty());
        }
    }
    assert!(read_seen);
    db.close().await.unwrap();

    // An update that fails after its intent (wrong If-Match) names a version that never
    // exists: the accounting must still be answered, for everyone.
    let mut stale = group.clone();
    stale["active"] = json!(true);
    let resp = s
        .put_json(&format!("Group/{gid}"), &t, &stale)
        .header("if-match", "W/\"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);

    let disclosed = ward::audit_cli::disclosures(&s.config, &pid, None).await.unwrap();
    assert!(
        disclosed
            .iter()
            .any(|r| r.request_id == rid && r.action == "read" && r.resource_id.as_deref() == Some(&gid)),
        "the Group read is disclosed for its member"
    );
    let other = ward::audit_cli::disclosures(&s.config, "not-a-member", None)
        .await
        .unwrap();
    assert!(other.is_empty(), "and for no one else");
    s.stop().await;
}

/// Issue 9 item 6: a client-chosen `X-Request-ID` is echoed, but each record also carries an
/// id the server made: two requests reusing one id are two distinguishable records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_request_ids_stay_distinguishable() {
    let s = TestServer::start(Backend::Sqlite).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("RI")).await;
    let path = format!("Patient/{}", p["id"].as_str().unwrap());
    for _ in 0..2 {
        let resp = s
            .get(&path, &t)
            .header("x-request-id", "same-id-twice")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-request-id"], "same-id-twice", "echoed");
    }
    let recs: Vec<AuditRecord> = all_records(&s)
        .await
        .into_iter()
        .filter(|r| r.request_id == "same-id-twice")
        .collect();
    assert_eq!(recs.len(), 2);
    assert_ne!(recs[0].server_request_id, recs[1].server_request_id);
    for r in &recs {
        assert!(uuid::Uuid::parse_str(&r.server_request_id).is_ok());
    }
    s.stop().await;
}

async fn block_audit_inserts(s: &TestServer, block: bool) {
    use sqlx::Executor;
    match s.backend {
        Backend::Sqlite => {
            let url = s.config.audit_url();
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let sql = if block {
                "CREATE TRIGGER test_block_audit BEFORE INSERT ON audit_record BEGIN SELECT RAISE(ABORT, 'blocked by test'); END;"
            } else {
                "DROP TRIGGER test_block_audit"
            };
            conn.execute(sql).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.config.audit_url())
                .await
                .unwrap();
            if block {
                conn.execute(
                    "CREATE FUNCTION test_block_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'blocked by test'; END $$ LANGUAGE plpgsql;
                     CREATE TRIGGER test_block_audit BEFORE INSERT ON audit_record FOR EACH ROW EXECUTE FUNCTION test_block_audit();",
                )
                .await
                .unwrap();
            } else {
                conn.execute(
                    "DROP TRIGGER test_block_audit ON audit_record; DROP FUNCTION test_block_audit();",
                )
                .await
                .unwrap();
            }
        }
    }
}

async fn audit_event_review_is_read_only(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("RV")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    s.get(&format!("Patient/{pid}"), &t).send().await.unwrap();

    let bundle: Value = s
        .get(&format!("AuditEvent?patient={pid}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["type"], "searchset");
    let entries = bundle["entry"].as_array().unwrap();
    assert!(entries.len() >= 2, "create and read of the patient");
    for e in entries {
        assert_eq!(e["resource"]["resourceType"], "AuditEvent");
    }
    let by_action: Value = s
        .get("AuditEvent?action=read&outcome=200", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!by_action["entry"].as_array().unwrap().is_empty());
    let by_agent: Value = s
        .get(&format!("AuditEvent?agent={}", s.admin_id), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!by_agent["entry"].as_array().unwrap().is_empty());
    let future: Value = s
        .get("AuditEvent?date=ge2999-01-01", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(future["entry"].as_array().unwrap().is_empty());
    assert_eq!(s.get("AuditEvent?name=x", &t).send().await.unwrap().status(), 400);

    // no writes through the API
    let event = entries[0]["resource"].clone();
    assert_eq!(
        s.post_json("AuditEvent", &t, &event)
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    let id = event["id"].as_str().unwrap_or("x");
    assert_eq!(
        s.put_json(&format!("AuditEvent/{id}"), &t, &event)
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    let del = s.delete(&format!("AuditEvent/{id}"), &t).send().await.unwrap();
    assert_eq!(del.status(), 405);
    // a client without AuditEvent scope cannot review
    let (cid, secret) = s.new_client("system/Patient.rs").await;
    let pt = s.token_for(&cid, &secret, None).await;
    assert_eq!(s.get("AuditEvent", &pt).send().await.unwrap().status(), 403);
    // nor does a wildcard: the trail must be named explicitly
    let (wid, wsecret) = s.new_client("system/*.rs").await;
    let wt = s.token_for(&wid, &wsecret, None).await;
    assert_eq!(s.get("AuditEvent", &wt).send().await.unwrap().status(), 403);
    assert_eq!(
        s.get(&format!("Patient/{pid}"), &wt)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_kill_9_sqlite() {
    records_survive_kill_9(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_kill_9_postgres() {
    let url = ward_store::testing::fresh_postgres_url().await;
    records_survive_kill_9(Some(&url)).await;
}

async fn records_survive_kill_9(store_url: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Proc::init_with(tmp.path(), store_url);
    w.start().await;
    let t = w.token().await;
    let created: Value = w
        .client
        .post(format!("{}/fhir/Patient", w.url))
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .body(distinctive_patient("K9").to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = created["id"].as_str().unwrap().to_owned();
    let mut rids = Vec::new();
    for round in 0..5 {
        let rid = format!("kill-nine-{round}-{}", uuid::Uuid::new_v4().simple());
        let resp = w
            .client
            .get(format!("{}/fhir/Patient/{pid}", w.url))
            .bearer_auth(&t)
            .header("x-request-id", &rid)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
        w.kill9();
        rids.push(rid);
        w.start().await;
    }
    w.kill9();
    let config = ward_server::Config::load(Some(&w.dir), None).unwrap();
    let store = AuditStore::open(&config.audit_url()).await.unwrap();
    let all = ward_audit::search(
        &store,
        &AuditQuery {
            count: 100_000,
            ..AuditQuery::default()
        },
    )
    .await
    .unwrap();
    for rid in &rids {
        assert!(
            all.iter()
                .any(|(r, _)| &r.request_id == rid && r.action == "read"),
            "record of {rid} survived kill -9"
        );
    }
    // the chains are intact despite the kills
    let out = w.ward(&["audit", "verify", "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_export_disclosures_and_tamper_via_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Proc::init(tmp.path());
    w.start().await;
    let t = w.token().await;
    let created: Value = w
        .client
        .post(format!("{}/fhir/Patient", w.url))
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .header("x-purpose-of-use", "TREAT")
        .body(distinctive_patient("CL").to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = created["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        w.get_fhir(&format!("Patient/{pid}"), &t).send().await.unwrap();
    }
    w.terminate(); // SIGTERM: drain, flush, final checkpoint

    let out = w.ward(&["audit", "verify", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["records"].as_u64().unwrap() >= 6);
    assert_eq!(report["unsealed"], 0, "sealed at shutdown");

    forgeries_on_copies_fail_verification(tmp.path(), &w.dir).await;

    let out = w.ward(&["audit", "disclosures", "--patient", &pid, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reads = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "read")
        .count();
    assert_eq!(reads, 3);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["purpose_of_use"] == "TREAT")
    );

    let export = tmp.path().join("audit.ndjson");
    let out = w.ward(&[
        "audit",
        "export",
        "--format",
        "ndjson",
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = format!("{}.pub", export.display());
    export_files_are_private_and_new(&w, &export, Path::new(&key));
    let verify_file = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["audit", "verify", "--file"])
            .arg(file)
            .args(["--pubkey", &key])
            .output()
            .unwrap()
    };
    assert!(verify_file(&export).status.success());
    // an export edited in one record fails offline verification
    let text = std::fs::read_to_string(&export).unwrap();
    let tampered = text.replacen("\"read\"", "\"vread\"", 1);
    assert_ne!(text, tampered);
    let bad = tmp.path().join("tampered.ndjson");
    std::fs::write(&bad, tampered).unwrap();
    assert!(!verify_file(&bad).status.success());

    // edit a row behind the triggers' back: verify names the record
    let config = ward_server::Config::load(Some(&w.dir), None).unwrap();
    {
        use sqlx::Executor;
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&config.audit_url())
            .await
            .unwrap();
        let triggers: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_record'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (name,) in triggers {
            conn.execute(sqlx::AssertSqlSafe(format!("DROP TRIGGER \"{name}\"")))
                .await
                .unwrap();
        }
        let done = conn
            .execute(
                "UPDATE audit_record SET record = replace(record, '\"action\":\"', '\"action\":\"forged-') \
                 WHERE node = 'node-1' AND seq = 3",
            )
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
    let out = w.ward(&["audit", "verify", "--json"]);
    assert!(!out.status.success(), "a damaged trail fails verification");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad"]["node"], "node-1");
    assert_eq!(report["first_bad"]["seq"], 3);
}

/// Runs `ward audit verify --json` on `dir`: (exit success, report).
fn verify_dir(dir: &Path) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["audit", "verify", "--json", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

/// Issue 9 item 5, as reproduced on a copy of the data dir: forgeries that need only INSERT on
/// the audit tables (a fabricated chain for `node-9`, a record appended at the head of
/// `node-1` with a correct unkeyed hash) and the removal of every signed checkpoint each make
/// `ward audit verify` fail.
async fn forgeries_on_copies_fail_verification(tmp: &Path, dir: &Path) {
    use sqlx::{Connection, Executor, Row};
    let attacks: [(&str, &str, i64, &str); 3] = [
        ("node-9", "node-9", 0, "no_genesis"),
        ("head", "node-1", -1, "forged"),
        ("no-checkpoints", "node-1", 0, "no_genesis"),
    ];
    for (name, node, seq, kind) in attacks {
        let copy = tmp.join(format!("copy-{name}"));
        let ok = Command::new("cp").arg("-a").arg(dir).arg(&copy).status().unwrap();
        assert!(ok.success());
        let url = format!("sqlite://{}", copy.join("audit.db").display());
        let mut c = <sqlx::SqliteConnection as Connection>::connect(&url)
            .await
            .unwrap();
        let head = sqlx::query(
            "SELECT seq, record, hash FROM audit_record WHERE node = 'node-1' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        let (last, record, hash): (i64, String, Vec<u8>) = (head.get(0), head.get(1), head.get(2));
        let forge = |node: &str, seq: i64, prev: &[u8]| {
            let rec = record
                .replacen("\"node\":\"node-1\"", &format!("\"node\":\"{node}\""), 1)
                .replacen(&format!("\"seq\":{last},"), &format!("\"seq\":{seq},"), 1);
            let h = ward_audit::chain_hash(&prev.try_into().unwrap(), rec.as_bytes());
            (rec, h)
        };
        let mut rows = Vec::new();
        let expected_seq = match name {
            "node-9" => {
                let mut prev = [0u8; 32];
                for seq in 1..=3 {
                    let (rec, h) = forge("node-9", seq, &prev);
                    rows.push(("node-9", seq, rec, prev.to_vec(), h));
                    prev = h;
                }
                seq
            }
            "head" => {
                let (rec, h) = forge("node-1", last + 1, &hash);
                rows.push(("node-1", last + 1, rec, hash.clone(), h));
                last + 1
            }
            _ => {
                c.execute("DROP TRIGGER audit_checkpoint_no_delete")
                    .await
                    .unwrap();
                c.execute("DELETE FROM audit_checkpoint").await.unwrap();
                seq
            }
        };
        for (node, seq, rec, prev, h) in rows {
            sqlx::query(
                "INSERT INTO audit_record (node, seq, at_ms, action, status, record, prev_hash, hash) \
                 VALUES ($1, $2, 0, 'read', 200, $3, $4, $5)",
            )
            .bind(node)
            .bind(seq)
            .bind(rec)
            .bind(prev)
            .bind(h.to_vec())
            .execute(&mut c)
            .await
            .unwrap();
        }
        c.close().await.unwrap();
        let (success, report) = verify_dir(&copy);
        assert!(!success && report["ok"] == false, "{name}: {report}");
        assert_eq!(report["first_bad"]["node"], node, "{name}: {report}");
        assert_eq!(report["first_bad"]["seq"], expected_seq, "{name}: {report}");
        assert_eq!(report["first_bad"]["kind"], kind, "{name}: {report}");
    }
}

/// Issue 9 item 6: `ward audit export --out FILE` made FILE and FILE.pub readable by the owner
/// only, and refuses to overwrite either or to write through a symlink.
fn export_files_are_private_and_new(w: &Proc, export: &Path, key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for f in [export, key] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let before = std::fs::read(export).unwrap();
    let run = |out: &Path| {
        w.ward(&[
            "audit",
            "export",
            "--format",
            "ndjson",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    assert!(
        !run(export).status.success(),
        "an existing export is not overwritten"
    );
    assert_eq!(std::fs::read(export).unwrap(), before);
    // A symlink planted where the export goes (even a dangling one) is not followed.
    let dir = export.parent().unwrap();
    let target = dir.join("elsewhere.txt");
    let link = dir.join("link.ndjson");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(!run(&link).status.success(), "a symlink is not followed");
    assert!(!target.exists(), "nothing was written through the link");
    // An existing FILE.pub (or a link there) stops the export before anything is left behind.
    let fresh = dir.join("fresh.ndjson");
    std::os::unix::fs::symlink(&target, dir.join("fresh.ndjson.pub")).unwrap();
    assert!(!run(&fresh).status.success());
    assert!(!fresh.exists() && !target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_phi_in_logs_or_audit_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Proc::init(tmp.path());
    w.start().await;
    let t = w.token().await;
    let patient = distinctive_patient("LG");
    let created: Value = w
        .client
        .post(format!("{}/fhir/Patient", w.url))
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = created["id"].as_str().unwrap();
    // values that could leak: in bodies, in bad bodies, in query strings, in conditional headers
    let mut bad = patient.clone();
    bad["name"][0]["family"] = json!(42);
    w.post_fhir("Patient", &t)
        .body(bad.to_string())
        .send()
        .await
        .unwrap();
    w.get_fhir("Patient?family=ZyxwarfieldLG", &t)
        .send()
        .await
        .unwrap();
    w.get_fhir("Patient/_history?_since=ZyxwarfieldLG", &t)
        .send()
        .await
        .unwrap();
    w.post_fhir("Patient", &t)
        .header(
            "if-none-exist",
            "identifier=urn:oid:1.2.36.146.595.217.0.1|MRNLG77421",
        )
        .body(patient.to_string())
        .send()
        .await
        .unwrap();
    w.get_fhir(&format!("Patient/{pid}"), &t).send().await.unwrap();
    w.terminate();

    let mut logs = String::new();
    std::fs::File::open(&w.log)
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.contains("request"), "the log was captured");
    let mut audit_bytes = Vec::new();
    for entry in std::fs::read_dir(&w.dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("audit.db") {
            audit_bytes.extend(std::fs::read(p).unwrap());
        }
    }
    assert!(audit_bytes.len() > 4096, "the audit files were found");
    let audit_text = String::from_utf8_lossy(&audit_bytes);
    for needle in [
        "Zyxwarfield",
        "zyxwarfield",
        "Quillonia",
        "MRNLG77421",
        "555-01LG-8841",
        "1937-04-19",
        "Marrowgate",
        "Quabbleton",
        &t[20..60],
    ] {
        assert!(!logs.contains(needle), "log leaks {needle}");
        assert!(!audit_text.contains(needle), "audit files leak {needle}");
    }
}
