//! Issue-9 attacks on the FHIR API, tried black-box over TLS: the audit trail through scopes,
//! percent-encoded paths and bundles; reviving a resource without the create permission;
//! bundle entries over unreadable versions; a batch entry that fails; a Bundle body sent by a
//! token that could not authorize any entry.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Backend, TestServer, distinctive_patient};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

on_both_backends!(
    wildcard_client_cannot_obtain_the_audit_trail,
    audit_event_is_never_written_whatever_the_spelling,
    audit_event_view_is_one_event_per_request,
    update_only_client_cannot_revive,
    bundle_entries_over_an_unreadable_version_fail_closed,
    bundle_without_any_usable_permission_is_refused_before_its_body
);

/// A TLS connection that sends exactly the bytes given: no client normalises the path.
async fn raw_connection(s: &TestServer) -> TlsStream<TcpStream> {
    let tls = ward_bench::client::tls_config(&s.dir.join("tls/ca.pem")).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], s.port).into();
    let host = s
        .url
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned();
    let name = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host).unwrap(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(tls).connect(name, tcp).await.unwrap()
}

fn head(s: &TestServer, method: &str, path: &str, token: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/fhir+json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        s.port
    )
}

/// One request with a raw, pre-encoded path: (status, body).
async fn raw_request(s: &TestServer, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    let mut conn = raw_connection(s).await;
    conn.write_all(head(s, method, path, token, body.len()).as_bytes())
        .await
        .unwrap();
    conn.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut out))
        .await
        .expect("answered")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:.200}"));
    (status, text)
}

/// A POST of `body` to the base URL (a Bundle).
fn to_base(s: &TestServer, token: &str, body: &Value) -> reqwest::RequestBuilder {
    s.client
        .post(&s.fhir)
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(body).unwrap())
}

async fn json_of(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Rows of `rtype` in the resource store, read behind Ward's back.
async fn stored_versions(s: &TestServer, rtype: &str, id: Option<&str>) -> i64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&s.config.store_url()).await.unwrap();
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM resource_version WHERE rtype = $1 AND ($2 = '' OR id = $2)")
            .bind(rtype)
            .bind(id.unwrap_or(""))
            .fetch_one(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();
    n
}

/// A client registered with `system/*.cruds` asks for `system/AuditEvent.rs`: the wildcard
/// does not intersect into an AuditEvent grant, and the trail stays closed.
async fn wildcard_client_cannot_obtain_the_audit_trail(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (id, secret) = s.new_client("system/*.cruds").await;
    let token_url = format!("{}/oauth2/token", s.url);
    let ask = |scope: &'static str| {
        s.client
            .post(&token_url)
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
    };
    let (status, body) = json_of(ask("system/AuditEvent.rs")).await;
    assert_eq!(status, 400, "nothing of the request is granted: {body}");
    assert_eq!(body["error"], "invalid_scope");
    let (status, body) = json_of(ask("system/AuditEvent.rs system/Patient.rs")).await;
    assert_eq!(status, 200);
    assert_eq!(body["scope"], "system/Patient.rs", "AuditEvent is not granted");
    let t = body["access_token"].as_str().unwrap();
    assert_eq!(s.get("AuditEvent", t).send().await.unwrap().status(), 403);
    assert_eq!(s.get("Patient", t).send().await.unwrap().status(), 200);
    // Without asking, the same client's token does not open the trail either.
    let all = s.token_for(&id, &secret, None).await;
    assert_eq!(s.get("AuditEvent", &all).send().await.unwrap().status(), 403);
    // A client whose registration names AuditEvent gets it.
    let (aid, asecret) = s.new_client("system/*.cruds system/AuditEvent.rs").await;
    let at = s.token_for(&aid, &asecret, Some("system/AuditEvent.rs")).await;
    assert_eq!(s.get("AuditEvent", &at).send().await.unwrap().status(), 200);
    s.stop().await;
}

/// Forged AuditEvents sent under every spelling of the type, single and in bundles, by a
/// client whose registration even names AuditEvent with every permission: each write is
/// 405, a wrong case is no type at all, and the resource store never holds one.
async fn audit_event_is_never_written_whatever_the_spelling(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (id, secret) = s.new_client("system/*.cruds system/AuditEvent.cruds").await;
    let t = s.token_for(&id, &secret, None).await;
    let forged = json!({
        "resourceType": "AuditEvent",
        "id": "forged",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": true, "who": {"display": "nobody"}}],
        "source": {"observer": {"display": "ward"}},
    });
    let body = serde_json::to_vec(&forged).unwrap();
    for (method, path) in [
        ("POST", "/fhir/Audit%45vent"),
        ("POST", "/fhir/%41uditEvent"),
        ("POST", "/fhir/%41%75%64%69%74%45%76%65%6e%74"),
        ("POST", "/fhir/AuditEven%74"),
        ("PUT", "/fhir/Audit%45vent/forged"),
        ("PUT", "/fhir/%41uditEvent/forged"),
        ("DELETE", "/fhir/Audit%45vent/forged"),
        ("GET", "/fhir/Audit%45vent/forged"),
        ("POST", "/fhir/Audit%45vent/_search"),
        ("POST", "/fhir/AuditEvent"),
        ("PUT", "/fhir/AuditEvent/forged"),
    ] {
        let (status, text) = raw_request(&s, method, path, &t, &body).await;
        assert_eq!(status, 405, "{method} {path}: {text:.300}");
        assert!(text.contains("OperationOutcome"), "{method} {path}");
    }
    for (method, path) in [
        ("POST", "/fhir/auditEvent"),
        ("POST", "/fhir/AUDITEVENT"),
        ("PUT", "/fhir/auditevent/forged"),
    ] {
        let (status, text) = raw_request(&s, method, path, &t, &body).await;
        assert!(matches!(status, 400 | 404), "{method} {path}: {status}");
        assert!(text.contains("OperationOutcome"), "{method} {path}");
    }
    for kind in ["transaction", "batch"] {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {"resource": forged, "request": {"method": "POST", "url": "AuditEvent"}},
                {"resource": forged, "request": {"method": "PUT", "url": "AuditEvent/forged"}},
            ],
        });
        let (status, body) = json_of(to_base(&s, &t, &bundle)).await;
        if kind == "transaction" {
            assert_eq!(status, 405, "{body}");
        } else {
            assert_eq!(status, 200, "{body}");
            for e in body["entry"].as_array().unwrap() {
                assert!(
                    e["response"]["status"].as_str().unwrap().starts_with("405"),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(stored_versions(&s, "AuditEvent", None).await, 0);
    s.stop().await;
}

/// The review shows one AuditEvent per request: a write's final record, naming its intent,
/// never the intent as a failure; an intent with no final record (its final record refused
/// here) is shown as such, claiming no outcome. `_summary=count` and `_count=0` count.
async fn audit_event_view_is_one_event_per_request(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("VW")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let mut p2 = p.clone();
    p2["gender"] = json!("other");
    assert_eq!(
        s.put_json(&format!("Patient/{pid}"), &t, &p2)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.get(&format!("Patient/{pid}"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (status, bundle) = json_of(s.get(&format!("AuditEvent?entity=Patient/{pid}&_count=100"), &t)).await;
    assert_eq!(status, 200);
    let events: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["subtype"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["read", "update", "create"], "one event per request");
    for e in &events {
        assert_eq!(e["outcome"], "0", "{e}");
        assert!(!e["outcomeDesc"].as_str().unwrap().starts_with("HTTP 0"), "{e}");
    }
    for write in &events[1..] {
        let details = write["extension"][1]["extension"].as_array().unwrap();
        let intent = details
            .iter()
            .find(|d| d["url"] == "intent")
            .expect("names its intent");
        assert!(
            intent["valueReference"]["reference"]
                .as_str()
                .unwrap()
                .starts_with("AuditEvent/")
        );
    }
    // No successful write of the whole trail reads as a major failure.
    let (_, all) = json_of(s.get("AuditEvent?_count=1000", &t)).await;
    for e in all["entry"].as_array().unwrap() {
        assert_ne!(e["resource"]["outcome"], "12", "{e}");
        assert!(
            e["resource"].get("outcome").is_some(),
            "no orphan intent yet: {e}"
        );
    }
    let (_, twelve) = json_of(s.get("AuditEvent?outcome=12", &t)).await;
    assert!(
        twelve
            .get("entry")
            .is_none_or(|e| e.as_array().unwrap().is_empty()),
        "{twelve}"
    );

    // Counting.
    for q in ["_summary=count", "_count=0"] {
        let (status, c) = json_of(s.get(&format!("AuditEvent?entity=Patient/{pid}&{q}"), &t)).await;
        assert_eq!(status, 200, "{q}: {c}");
        assert!(c["total"].as_u64().unwrap() >= 3, "{q}: {c}");
        assert!(c.get("entry").is_none(), "{q}: {c}");
    }
    let (_, c) = json_of(s.get("AuditEvent?action=create&_summary=count", &t)).await;
    assert_eq!(c["total"], 1, "{c}");

    // An intent whose final record the database refuses: the write's outcome is unknown. (A
    // failed write: a stored one waits for its final record instead, see write_integrity.rs.)
    let (wid, wsecret) = s.new_client("system/Patient.cruds").await;
    let wt = s.token_for(&wid, &wsecret, None).await;
    for _ in 0..2 {
        s.create(&t, &distinctive_patient("DD")).await;
    }
    refuse_final_create_records(&s, true).await;
    let resp = s
        .post_json("Patient", &wt, &distinctive_patient("OR"))
        .header("if-none-exist", "family=ZyxwarfieldDD")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "no final record, no answer");
    refuse_final_create_records(&s, false).await;
    let mut orphan = Value::Null;
    for _ in 0..50 {
        let (status, b) = json_of(s.get(&format!("AuditEvent?agent={wid}&action=create"), &t)).await;
        if status == 200 {
            orphan = b;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entries = orphan["entry"].as_array().expect("the review answers again");
    assert_eq!(entries.len(), 1, "{orphan}");
    let intent = &entries[0]["resource"];
    assert!(intent.get("outcome").is_none(), "claims no outcome: {intent}");
    let desc = intent["outcomeDesc"].as_str().unwrap();
    assert!(desc.contains("intent") && desc.contains("unknown"), "{desc}");
    let details = intent["extension"][1]["extension"].as_array().unwrap();
    assert!(
        details
            .iter()
            .any(|d| d["url"] == "kind" && d["valueCode"] == "intent")
    );
    for outcome in ["0", "4", "8", "12"] {
        let (_, b) = json_of(s.get(
            &format!("AuditEvent?agent={wid}&action=create&outcome={outcome}"),
            &t,
        ))
        .await;
        assert!(
            b.get("entry").is_none_or(|e| e.as_array().unwrap().is_empty()),
            "outcome={outcome}"
        );
    }
    s.stop().await;
}

/// Makes the audit database refuse the final records of failed creates (their status is 4xx;
/// an intent's is 0), or lifts that.
async fn refuse_final_create_records(s: &TestServer, refuse: bool) {
    use sqlx::Executor;
    let url = s.config.audit_url();
    match s.backend {
        Backend::Sqlite => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let sql = if refuse {
                "CREATE TRIGGER test_refuse_final BEFORE INSERT ON audit_record \
                 WHEN NEW.status >= 400 AND NEW.action = 'create' \
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END;"
            } else {
                "DROP TRIGGER test_refuse_final"
            };
            conn.execute(sql).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let sql = if refuse {
                "CREATE FUNCTION test_refuse_final() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$ LANGUAGE plpgsql;
                 CREATE TRIGGER test_refuse_final BEFORE INSERT ON audit_record FOR EACH ROW
                 WHEN (NEW.status >= 400 AND NEW.action = 'create') EXECUTE FUNCTION test_refuse_final();"
            } else {
                "DROP TRIGGER test_refuse_final ON audit_record; DROP FUNCTION test_refuse_final();"
            };
            conn.execute(sql).await.unwrap();
        }
    }
}

/// A client that may update but not create brings back a deleted resource with `If-Match`
/// naming its tombstone (and without): refused, single and in bundles; it stays deleted.
async fn update_only_client_cannot_revive(backend: Backend) {
    let s = TestServer::start(backend).await;
    let admin = s.admin_token().await;
    let p = s.create(&admin, &distinctive_patient("RV")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let path = format!("Patient/{pid}");
    let del = s.delete(&path, &admin).send().await.unwrap();
    assert_eq!(del.status(), 204);
    let tombstone = del.headers()["etag"].to_str().unwrap().to_owned();
    let (cid, secret) = s.new_client("system/Patient.rud").await;
    let t = s.token_for(&cid, &secret, None).await;
    for if_match in [Some(tombstone.as_str()), None] {
        let mut req = s.put_json(&path, &t, &p);
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(status, 403, "revive with If-Match {if_match:?}");
    }
    for kind in ["transaction", "batch"] {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"resource": p, "request": {"method": "PUT", "url": path, "ifMatch": tombstone}}],
        });
        let (status, body) = json_of(to_base(&s, &t, &bundle)).await;
        match kind {
            "transaction" => assert_eq!(status, 403, "{body}"),
            _ => assert!(
                body["entry"][0]["response"]["status"]
                    .as_str()
                    .unwrap()
                    .starts_with("403"),
                "{body}"
            ),
        }
    }
    assert_eq!(
        s.get(&path, &admin).send().await.unwrap().status(),
        410,
        "still deleted"
    );
    assert_eq!(stored_versions(&s, "Patient", Some(&pid)).await, 2);
    // A live resource is still updated, with or without If-Match.
    let q = s.create(&admin, &distinctive_patient("RW")).await;
    let qpath = format!("Patient/{}", q["id"].as_str().unwrap());
    assert_eq!(
        s.put_json(&qpath, &t, &q)
            .header("if-match", "W/\"1\"")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(s.put_json(&qpath, &t, &q).send().await.unwrap().status(), 200);
    s.stop().await;
}

/// Bundle entries that change a resource whose current version fails its integrity check:
/// the entry fails (500) instead of being written and audited without the patients it
/// leaves; in a batch it fails alone and the others are written, in a transaction nothing is.
async fn bundle_entries_over_an_unreadable_version_fail_closed(backend: Backend) {
    use sqlx::Connection;
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = s.create(&t, &distinctive_patient("51")).await;
    let b = s.create(&t, &distinctive_patient("52")).await;
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
    db.close().await.unwrap();
    let a_url = format!("Patient/{a_id}");
    let create = |fresh: &str| json!({"resource": distinctive_patient(fresh), "request": {"method": "POST", "url": "Patient"}});
    let put = json!({"resource": a, "request": {"method": "PUT", "url": a_url}});
    let delete = json!({"request": {"method": "DELETE", "url": a_url}});
    // A date at the end of FHIR's range once panicked while indexing: whatever it does now
    // (stored, refused), it answers for its own entry only.
    let mut last = distinctive_patient("55");
    last["birthDate"] = json!("9999-12-31");
    let far_future = json!({"resource": last, "request": {"method": "POST", "url": "Patient"}});
    let (status, body) = json_of(to_base(
        &s,
        &t,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [create("53"), put.clone()]}),
    ))
    .await;
    assert_eq!(status, 500, "{body}");
    let (status, body) = json_of(to_base(
        &s,
        &t,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [create("53"), delete.clone()]}),
    ))
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        stored_versions(&s, "Patient", None).await,
        2,
        "the transaction wrote nothing"
    );

    let (status, body) = json_of(to_base(
        &s,
        &t,
        &json!({"resourceType": "Bundle", "type": "batch", "entry": [create("54"), put, delete, far_future]}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "batch-response");
    let e = body["entry"].as_array().unwrap();
    assert!(
        e[0]["response"]["status"].as_str().unwrap().starts_with("201"),
        "{body}"
    );
    assert!(e[0]["response"]["location"].as_str().is_some());
    for k in [1, 2] {
        assert!(
            e[k]["response"]["status"].as_str().unwrap().starts_with("500"),
            "{body}"
        );
        assert_eq!(e[k]["response"]["outcome"]["resourceType"], "OperationOutcome");
    }
    let far = e[3]["response"]["status"].as_str().unwrap();
    let far_stored = far.starts_with("201");
    if !far_stored {
        assert_eq!(e[3]["response"]["outcome"]["resourceType"], "OperationOutcome");
    }
    assert_eq!(
        stored_versions(&s, "Patient", Some(a_id)).await,
        1,
        "a is unchanged"
    );
    assert_eq!(
        stored_versions(&s, "Patient", None).await,
        3 + i64::from(far_stored),
        "the batch's other create is written"
    );
    s.stop().await;
}

/// A token whose scopes could authorize no Bundle entry (an auditor's; a `patient/` scope,
/// which needs a launch context Ward does not have; search only, as bundles have no search
/// entries) sends a 4 MB Bundle slowly: the answer is 403 before the body is read.
async fn bundle_without_any_usable_permission_is_refused_before_its_body(backend: Backend) {
    let s = TestServer::start(backend).await;
    for scopes in ["system/AuditEvent.rs", "patient/*.cruds", "system/*.s"] {
        let (id, secret) = s.new_client(scopes).await;
        let t = s.token_for(&id, &secret, None).await;
        let mut conn = raw_connection(&s).await;
        conn.write_all(head(&s, "POST", "/fhir", &t, 4_000_000).as_bytes())
            .await
            .unwrap();
        conn.write_all(br#"{"resourceType":"Bundle","type":"batch","entry":["#)
            .await
            .unwrap();
        // The body never completes; the answer must not wait for it.
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{scopes}: no answer before the body was sent"))
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 403"), "{scopes}: {text:.200}");
    }
    // A token that may write still gets its Bundle read and processed.
    let admin = s.admin_token().await;
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": distinctive_patient("BB"), "request": {"method": "POST", "url": "Patient"}}]});
    let (status, body) = json_of(to_base(&s, &admin, &bundle)).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}
