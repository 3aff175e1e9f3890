//! Transaction and batch Bundles (SPEC F-1, IN-5) on both backends: urn:uuid references,
//! atomic rollback, conditional entries, per-entry batch outcomes, the entry cap, the audit
//! records of a bundle.

mod common;

use common::{Backend, TestServer, distinctive_patient};
use serde_json::{Value, json};
use ward_audit::{AuditQuery, AuditStore, RecordKind};

on_both_backends!(
    transaction_resolves_urn_uuid_references,
    transaction_with_a_bad_entry_writes_nothing,
    transaction_forbidden_entry_writes_nothing,
    transaction_is_atomic_when_a_write_in_the_middle_fails,
    transaction_conditional_create,
    batch_entries_succeed_and_fail_independently,
    entry_cap_is_413,
    bundle_is_audited_with_its_patients,
);

/// POSTs a Bundle to the base URL.
async fn post_bundle(s: &TestServer, token: &str, bundle: &Value) -> (u16, Value) {
    let resp = s
        .client
        .post(&s.fhir)
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(bundle).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn batch(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "batch", "entry": entries})
}

fn post(full_url: &str, resource: Value) -> Value {
    let rtype = resource["resourceType"].as_str().unwrap().to_owned();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
}

fn put(resource: Value, if_match: Option<&str>) -> Value {
    let url = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    );
    let mut request = json!({"method": "PUT", "url": url});
    if let Some(m) = if_match {
        request["ifMatch"] = json!(m);
    }
    json!({"resource": resource, "request": request})
}

fn delete(url: &str) -> Value {
    json!({"request": {"method": "DELETE", "url": url}})
}

fn get(url: &str) -> Value {
    json!({"request": {"method": "GET", "url": url}})
}

fn observation(subject: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": subject}})
}

/// Number of versions in the type history (all ids, tombstones included).
async fn versions(s: &TestServer, t: &str, rtype: &str) -> usize {
    let b: Value = s
        .get(&format!("{rtype}/_history?_count=1000"), t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    b["entry"].as_array().map_or(0, Vec::len)
}

async fn counts(s: &TestServer, t: &str) -> (usize, usize) {
    (
        versions(s, t, "Patient").await,
        versions(s, t, "Observation").await,
    )
}

fn id_of_location(entry: &Value) -> String {
    let loc = entry["response"]["location"].as_str().unwrap();
    loc.split('/').rev().nth(2).unwrap().to_owned()
}

fn issue_expression(outcome: &Value) -> String {
    outcome["issue"][0]["expression"][0]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn transaction_resolves_urn_uuid_references(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a";
    let o1 = "urn:uuid:88f151c0-a954-468a-88be-2d13d8d6e0a1";
    let mut panel = observation(p);
    panel["hasMember"] = json!([{"reference": o1}]);
    panel["performer"] = json!([{"reference": p, "display": "self"}]);
    panel["extension"] = json!([{"url": "http://example.org/about", "valueReference": {"reference": o1}}]);
    let bundle = transaction(vec![
        post(o1, observation(p)),
        post(p, distinctive_patient("TX")),
        post("urn:uuid:0c3151bd-1cbf-4d0b-b80c-0a7fd4bc3f5a", panel),
    ]);
    let (status, resp) = post_bundle(&s, &t, &bundle).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["resourceType"], "Bundle");
    assert_eq!(resp["type"], "transaction-response");
    let entries = resp["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        assert_eq!(e["response"]["status"], "201 Created", "{e}");
        assert_eq!(e["response"]["etag"], "W/\"1\"");
        assert!(e["response"]["lastModified"].is_string());
        assert!(
            e["response"]["location"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}/", s.fhir))
        );
        assert!(e.get("resource").is_none(), "minimal without Prefer");
    }
    // Response entries are in request order.
    let (o1_id, pid, panel_id) = (
        id_of_location(&entries[0]),
        id_of_location(&entries[1]),
        id_of_location(&entries[2]),
    );
    assert!(
        entries[1]["response"]["location"]
            .as_str()
            .unwrap()
            .contains(&format!("/Patient/{pid}/_history/1"))
    );

    let read = |path: String| {
        let s = &s;
        let t = &t;
        async move {
            let r = s.get(&path, t).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    let patient = read(format!("Patient/{pid}")).await;
    assert_eq!(patient["name"][0]["family"], "ZyxwarfieldTX");
    let obs = read(format!("Observation/{o1_id}")).await;
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    let panel = read(format!("Observation/{panel_id}")).await;
    assert_eq!(panel["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(panel["hasMember"][0]["reference"], format!("Observation/{o1_id}"));
    assert_eq!(panel["performer"][0]["reference"], format!("Patient/{pid}"));
    assert_eq!(panel["performer"][0]["display"], "self");
    assert_eq!(
        panel["extension"][0]["valueReference"]["reference"],
        format!("Observation/{o1_id}")
    );
    // Search and compartment indexes see the rewritten references.
    let comp = read(format!("Patient/{pid}/Observation")).await;
    assert_eq!(comp["entry"].as_array().map_or(0, Vec::len), 2, "{comp}");
    let by_subject = read(format!("Observation?subject=Patient/{pid}")).await;
    assert_eq!(by_subject["entry"].as_array().map_or(0, Vec::len), 2);

    // Prefer: return=representation returns the stored resources; GET entries run after the
    // writes and see them.
    let mut p2 = patient.clone();
    p2["gender"] = json!("female");
    let bundle = transaction(vec![
        get(&format!("Patient/{pid}")),
        put(p2, Some("W/\"1\"")),
        get(&format!("Patient/{pid}/_history/1")),
    ]);
    let resp = s
        .client
        .post(&s.fhir)
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=representation")
        .body(serde_json::to_vec(&bundle).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp: Value = resp.json().await.unwrap();
    let e = resp["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    assert_eq!(e[0]["resource"]["gender"], "female", "GET runs after the PUT");
    assert_eq!(e[0]["response"]["etag"], "W/\"2\"");
    assert_eq!(e[1]["response"]["status"], "200 OK");
    assert_eq!(e[1]["resource"]["meta"]["versionId"], "2");
    assert_eq!(e[2]["resource"]["meta"]["versionId"], "1");

    // A PUT entry's urn:uuid fullUrl resolves to its [type]/[id] (update-as-create here).
    let mut chosen = distinctive_patient("TZ");
    chosen["id"] = json!("chosen-pid");
    let mut put_entry = put(chosen, None);
    put_entry["fullUrl"] = json!("urn:uuid:5c0f2e7a-1d3b-4a9c-8e6f-7a8b9c0d1e2f");
    let (status, resp) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            post(o1, observation("urn:uuid:5c0f2e7a-1d3b-4a9c-8e6f-7a8b9c0d1e2f")),
            put_entry,
        ]),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["entry"][1]["response"]["status"], "201 Created");
    let obs = read(format!("Observation/{}", id_of_location(&resp["entry"][0]))).await;
    assert_eq!(obs["subject"]["reference"], "Patient/chosen-pid");

    // A urn:uuid reference that names no entry is refused; nothing is written.
    let before = counts(&s, &t).await;
    let (status, oo) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            post(p, distinctive_patient("TY")),
            post(o1, observation("urn:uuid:00000000-0000-4000-8000-000000000000")),
        ]),
    )
    .await;
    assert_eq!(status, 400, "{oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(issue_expression(&oo), "Bundle.entry[1].resource");
    assert_eq!(counts(&s, &t).await, before);
    s.stop().await;
}

async fn transaction_with_a_bad_entry_writes_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let existing = s.create(&t, &distinctive_patient("BE")).await;
    let eid = existing["id"].as_str().unwrap().to_owned();
    let before = counts(&s, &t).await;
    let p = "urn:uuid:4b0a7e4c-3b8a-4a36-9d55-8f2d1c1e0b11";

    // A schema violation in the third entry.
    let mut bad = observation(p);
    bad["status"] = json!(42);
    let (status, oo) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            post(p, distinctive_patient("BF")),
            post("urn:uuid:9a5e1d0a-6f2c-4a7e-8f0e-6c1a2b3c4d5e", observation(p)),
            post("urn:uuid:1f0c3a6e-2b4d-4e8f-9a1b-3c5d7e9f0a2b", bad),
        ]),
    )
    .await;
    assert_eq!(status, 400, "{oo}");
    assert!(
        issue_expression(&oo).starts_with("Bundle.entry[2].resource"),
        "{oo}"
    );
    assert!(!oo.to_string().contains("ZyxwarfieldBF"), "no PHI in errors");
    assert_eq!(counts(&s, &t).await, before);

    // An If-Match conflict.
    let mut changed = existing.clone();
    changed["active"] = json!(true);
    let (status, oo) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            post(p, distinctive_patient("BG")),
            post("urn:uuid:9a5e1d0a-6f2c-4a7e-8f0e-6c1a2b3c4d5e", observation(p)),
            put(changed.clone(), Some("W/\"9\"")),
        ]),
    )
    .await;
    assert_eq!(status, 412, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "conflict");
    assert_eq!(issue_expression(&oo), "Bundle.entry[2]");
    assert_eq!(counts(&s, &t).await, before);
    let still: Value = s
        .get(&format!("Patient/{eid}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["meta"]["versionId"], "1");

    // Unsupported entries are refused before anything is written.
    for (entry, code) in [
        (get("Patient?name=x"), 400),
        (
            json!({"request": {"method": "PATCH", "url": format!("Patient/{eid}")}}),
            400,
        ),
        (delete("Patient?identifier=x"), 400),
        (get("NoSuchType/1"), 400),
        (get(&format!("Patient/{eid}/_history/7")), 404),
        (get("Patient/never-existed"), 404),
    ] {
        let (status, oo) = post_bundle(
            &s,
            &t,
            &transaction(vec![post(p, distinctive_patient("BH")), entry.clone()]),
        )
        .await;
        assert_eq!(status, code, "{entry} -> {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert!(issue_expression(&oo).starts_with("Bundle.entry[1]"), "{oo}");
    }
    // Two changes of one resource.
    let (status, _) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            put(changed.clone(), None),
            delete(&format!("Patient/{eid}")),
        ]),
    )
    .await;
    assert_eq!(status, 400);
    // Not a transaction or batch; not a Bundle; an entry without request.
    for body in [
        json!({"resourceType": "Bundle", "type": "collection", "entry": []}),
        json!({"resourceType": "Patient"}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": distinctive_patient("BI")}]}),
    ] {
        let (status, oo) = post_bundle(&s, &t, &body).await;
        assert_eq!(status, 400, "{body} -> {oo}");
    }
    assert_eq!(counts(&s, &t).await, before);
    // Wrong content type.
    let resp = s
        .client
        .post(&s.fhir)
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    s.stop().await;
}

async fn transaction_forbidden_entry_writes_nothing(backend: Backend) {
    let s = TestServer::start(backend).await;
    let admin = s.admin_token().await;
    let (id, secret) = s.new_client("system/Patient.cruds").await;
    let t = s.token_for(&id, &secret, None).await;
    let before = counts(&s, &admin).await;
    let p = "urn:uuid:2d6a8c1e-5f3b-4d7a-9e0c-1b2a3c4d5e6f";
    let (status, oo) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            post(p, distinctive_patient("FB")),
            post("urn:uuid:3e7b9d2f-6a4c-4e8b-8f1d-2c3b4d5e6f7a", observation(p)),
        ]),
    )
    .await;
    assert_eq!(status, 403, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "forbidden");
    assert_eq!(issue_expression(&oo), "Bundle.entry[1]");
    assert_eq!(counts(&s, &admin).await, before);

    // Update-as-create needs the create permission, as for the single PUT.
    let (id, secret) = s.new_client("system/Patient.ru").await;
    let ru = s.token_for(&id, &secret, None).await;
    let mut np = distinctive_patient("FC");
    np["id"] = json!("chosen-id");
    let (status, _) = post_bundle(&s, &ru, &transaction(vec![put(np, None)])).await;
    assert_eq!(status, 403);
    // The same client may batch; the forbidden entry fails alone.
    let (status, resp) = post_bundle(
        &s,
        &t,
        &batch(vec![
            post(
                "urn:uuid:4f8c0e3a-7b5d-4f9c-9a2e-3d4c5e6f7a8b",
                distinctive_patient("FD"),
            ),
            post(
                "urn:uuid:5a9d1f4b-8c6e-4a0d-8b3f-4e5d6f7a8b9c",
                observation("Patient/x"),
            ),
        ]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(resp["entry"][1]["response"]["status"], "403 Forbidden");
    assert_eq!(
        resp["entry"][1]["response"]["outcome"]["issue"][0]["code"],
        "forbidden"
    );
    assert_eq!(counts(&s, &admin).await, (before.0 + 1, before.1));
    s.stop().await;
}

async fn transaction_is_atomic_when_a_write_in_the_middle_fails(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = s.create(&t, &distinctive_patient("MA")).await;
    let b = s.create(&t, &distinctive_patient("MB")).await;
    let c = s.create(&t, &distinctive_patient("MC")).await;
    let (aid, bid, cid) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
        c["id"].as_str().unwrap().to_owned(),
    );
    let before = counts(&s, &t).await;
    let mut b2 = b.clone();
    b2["gender"] = json!("male");
    let mut c2 = c.clone();
    c2["gender"] = json!("female");
    // Processing order is DELETE, POST, PUT, GET: the delete of A and the create of the
    // Observation are written, then the update of B fails on its stale ifMatch (the 3rd
    // write of 4), so the update of C never runs, and everything is rolled back.
    let bundle = transaction(vec![
        put(c2.clone(), Some("W/\"1\"")),
        post(
            "urn:uuid:6b0e2a5c-9d7f-4b1e-8c4a-5f6e7a8b9c0d",
            observation(&format!("Patient/{aid}")),
        ),
        put(b2.clone(), Some("W/\"3\"")),
        delete(&format!("Patient/{aid}")),
    ]);
    let (status, oo) = post_bundle(&s, &t, &bundle).await;
    assert_eq!(status, 412, "{oo}");
    assert_eq!(issue_expression(&oo), "Bundle.entry[2]");
    assert_eq!(counts(&s, &t).await, before);
    for id in [&aid, &bid, &cid] {
        let r = s.get(&format!("Patient/{id}"), &t).send().await.unwrap();
        assert_eq!(r.status(), 200, "A is not deleted");
        assert_eq!(r.headers()["etag"], "W/\"1\"");
    }
    let obs: Value = s
        .get(&format!("Observation?subject=Patient/{aid}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        obs["entry"].as_array().map_or(0, Vec::len),
        0,
        "no index rows left"
    );

    // With the right version, all four apply.
    let bundle = transaction(vec![
        put(c2, Some("W/\"1\"")),
        post(
            "urn:uuid:6b0e2a5c-9d7f-4b1e-8c4a-5f6e7a8b9c0d",
            observation(&format!("Patient/{aid}")),
        ),
        put(b2, Some("W/\"1\"")),
        delete(&format!("Patient/{aid}")),
    ]);
    let (status, resp) = post_bundle(&s, &t, &bundle).await;
    assert_eq!(status, 200, "{resp}");
    let e = resp["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    assert_eq!(e[0]["response"]["etag"], "W/\"2\"");
    assert_eq!(e[1]["response"]["status"], "201 Created");
    assert_eq!(e[2]["response"]["status"], "200 OK");
    assert_eq!(e[3]["response"]["status"], "204 No Content");
    assert_eq!(e[3]["response"]["etag"], "W/\"2\"");
    assert_eq!(counts(&s, &t).await, (before.0 + 3, before.1 + 1));
    assert_eq!(
        s.get(&format!("Patient/{aid}"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    s.stop().await;
}

async fn transaction_conditional_create(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let existing = s.create(&t, &distinctive_patient("CC")).await;
    let eid = existing["id"].as_str().unwrap().to_owned();
    let before = counts(&s, &t).await;
    let p = "urn:uuid:7c1f3b6d-0e8a-4c2f-9d5b-6a7b8c9d0e1f";
    let conditional = |tag: &str| {
        let mut e = post(p, distinctive_patient(tag));
        e["request"]["ifNoneExist"] =
            json!(format!("identifier=urn:oid:1.2.36.146.595.217.0.1|MRN{tag}77421"));
        e
    };
    // Matches the existing patient: nothing created, the Observation points at it.
    let (status, resp) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            conditional("CC"),
            post("urn:uuid:8d2a4c7e-1f9b-4d3a-8e6c-7b8c9d0e1f2a", observation(p)),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(id_of_location(&resp["entry"][0]), eid);
    assert_eq!(resp["entry"][1]["response"]["status"], "201 Created");
    let oid = id_of_location(&resp["entry"][1]);
    let obs: Value = s
        .get(&format!("Observation/{oid}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(obs["subject"]["reference"], format!("Patient/{eid}"));
    assert_eq!(counts(&s, &t).await, (before.0, before.1 + 1));

    // Matches nothing: created, and referenced by its new id.
    let (status, resp) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            conditional("CD"),
            post("urn:uuid:8d2a4c7e-1f9b-4d3a-8e6c-7b8c9d0e1f2a", observation(p)),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["entry"][0]["response"]["status"], "201 Created");
    let new_id = id_of_location(&resp["entry"][0]);
    assert_ne!(new_id, eid);
    let oid = id_of_location(&resp["entry"][1]);
    let obs: Value = s
        .get(&format!("Observation/{oid}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(obs["subject"]["reference"], format!("Patient/{new_id}"));
    assert_eq!(counts(&s, &t).await, (before.0 + 1, before.1 + 2));

    // Two matches: 412, nothing written.
    s.create(&t, &distinctive_patient("CD")).await;
    let before = counts(&s, &t).await;
    let (status, oo) = post_bundle(
        &s,
        &t,
        &transaction(vec![
            post(
                "urn:uuid:9e3b5d8f-2a0c-4e4b-9f7d-8c9d0e1f2a3b",
                observation(&format!("Patient/{eid}")),
            ),
            conditional("CD"),
        ]),
    )
    .await;
    assert_eq!(status, 412, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "multiple-matches");
    assert_eq!(issue_expression(&oo), "Bundle.entry[1]");
    assert_eq!(counts(&s, &t).await, before);
    s.stop().await;
}

async fn batch_entries_succeed_and_fail_independently(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = s.create(&t, &distinctive_patient("BA")).await;
    let b = s.create(&t, &distinctive_patient("BB")).await;
    let (aid, bid) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let before = counts(&s, &t).await;
    let mut a2 = a.clone();
    a2["gender"] = json!("other");
    let mut invalid = distinctive_patient("BC");
    invalid["gender"] = json!(["not", "a", "code"]);
    let mut conditional = post("urn:uuid:a1", distinctive_patient("BB"));
    conditional["request"]["ifNoneExist"] = json!("identifier=urn:oid:1.2.36.146.595.217.0.1|MRNBB77421");
    let bundle = batch(vec![
        post(
            "urn:uuid:0a4c6e9f-3b1d-4f5c-8a8e-9d0e1f2a3b4c",
            distinctive_patient("BD"),
        ),
        put(a2.clone(), Some("W/\"5\"")),
        get("Patient/does-not-exist"),
        delete(&format!("Patient/{bid}")),
        post(
            "urn:uuid:1b5d7f0a-4c2e-4a6d-9b9f-0e1f2a3b4c5d",
            observation("urn:uuid:0a4c6e9f-3b1d-4f5c-8a8e-9d0e1f2a3b4c"),
        ),
        post("urn:uuid:2c6e8a1b-5d3f-4b7e-8c0a-1f2a3b4c5d6e", invalid),
        put(a2, Some("W/\"1\"")),
        get(&format!("Patient/{aid}")),
        conditional,
        delete("Patient/never-existed"),
        get("Patient?name=x"),
    ]);
    let (status, resp) = post_bundle(&s, &t, &bundle).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["type"], "batch-response");
    let e = resp["entry"].as_array().unwrap();
    let statuses: Vec<&str> = e
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "201 Created",
            "412 Precondition Failed",
            "404 Not Found",
            "204 No Content",
            "400 Bad Request",
            "400 Bad Request",
            "200 OK",
            "200 OK",
            "201 Created",
            "404 Not Found",
            "400 Bad Request",
        ]
    );
    for i in [1, 2, 4, 5, 9, 10] {
        let oo = &e[i]["response"]["outcome"];
        assert_eq!(oo["resourceType"], "OperationOutcome", "{i}");
        assert_eq!(oo["issue"][0]["severity"], "error");
    }
    assert_eq!(e[1]["response"]["outcome"]["issue"][0]["code"], "conflict");
    assert!(
        issue_expression(&e[5]["response"]["outcome"]).starts_with("Bundle.entry[5].resource.gender"),
        "{}",
        e[5]
    );
    // The batch GET returns the state before the batch's own later PUT? No: entries run in
    // order, so the GET after the PUT sees version 2.
    assert_eq!(e[7]["resource"]["gender"], "other");
    assert_eq!(e[7]["response"]["etag"], "W/\"2\"");
    // The conditional POST: the deleted patient no longer matches, so it was created.
    let created: Value = s
        .get(&format!("Patient/{}", id_of_location(&e[8])), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["name"][0]["family"], "ZyxwarfieldBB");
    // written: BD create, A update, B delete, BB create (4 Patient versions); no Observation
    assert_eq!(counts(&s, &t).await, (before.0 + 4, before.1));
    s.stop().await;
}

async fn entry_cap_is_413(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let max = s.config.server.max_bundle_entries;
    assert_eq!(max, 1000, "the default");
    let entries: Vec<Value> = (0..=max).map(|_| get("Patient/x")).collect();
    for b in [transaction(entries.clone()), batch(entries)] {
        let (status, oo) = post_bundle(&s, &t, &b).await;
        assert_eq!(status, 413, "{oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert_eq!(oo["issue"][0]["code"], "too-costly");
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("server.max_bundle_entries")
        );
    }
    // At the cap is fine.
    let entries: Vec<Value> = (0..max).map(|_| get("Patient/x")).collect();
    let (status, resp) = post_bundle(&s, &t, &batch(entries)).await;
    assert_eq!(status, 200);
    assert_eq!(resp["entry"].as_array().unwrap().len(), max);
    // An empty transaction is valid and answers an empty transaction-response.
    let (status, resp) = post_bundle(&s, &t, &json!({"resourceType": "Bundle", "type": "transaction"})).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["type"], "transaction-response");
    assert!(resp.get("entry").is_none());
    s.stop().await;
}

async fn bundle_is_audited_with_its_patients(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let old = s.create(&t, &distinctive_patient("AA")).await;
    let old_id = old["id"].as_str().unwrap().to_owned();
    let p = "urn:uuid:3d7f9b2c-6e4a-4c8f-9d1b-2a3b4c5d6e7f";
    let rid = format!("bundle-{}", uuid::Uuid::new_v4().simple());
    let bundle = transaction(vec![
        post(p, distinctive_patient("AB")),
        post("urn:uuid:4e8a0c3d-7f5b-4d9a-8e2c-3b4c5d6e7f8a", observation(p)),
        delete(&format!("Patient/{old_id}")),
    ]);
    let resp = s
        .client
        .post(&s.fhir)
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .header("x-request-id", &rid)
        .body(serde_json::to_vec(&bundle).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp: Value = resp.json().await.unwrap();
    let new_id = id_of_location(&resp["entry"][0]);

    let store = AuditStore::open(&s.config.audit_url()).await.unwrap();
    let q = AuditQuery {
        count: 100_000,
        ..AuditQuery::default()
    };
    let records: Vec<_> = ward_audit::search(&store, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.request_id == rid)
        .collect();
    let intents: Vec<_> = records.iter().filter(|r| r.kind == RecordKind::Intent).collect();
    let finals: Vec<_> = records.iter().filter(|r| r.kind == RecordKind::Request).collect();
    assert_eq!(intents.len(), 1, "one intent record before the writes");
    assert_eq!(finals.len(), 1);
    let f = finals[0];
    assert_eq!(f.action, "transaction");
    assert_eq!(intents[0].action, "transaction");
    assert_eq!(f.outcome.status, 200);
    assert_eq!(f.resource_type.as_deref(), Some("Bundle"));
    assert_eq!(f.intent_seq, Some(intents[0].seq));
    assert_eq!(f.returned, 2, "the patient and the observation");
    for pid in [&new_id, &old_id] {
        assert!(f.patients.contains(pid), "{pid} in {:?}", f.patients);
        assert!(intents[0].patients.contains(pid), "intent names {pid}");
    }
    s.stop().await;
}
