//! FHIR REST behaviour over real TLS on both backends (SPEC F-1, IN-1, IN-2).

mod common;

use common::{Backend, TestServer, distinctive_patient};
use serde_json::{Value, json};

on_both_backends!(
    crud_versions_and_headers,
    round_trip_is_exact,
    conditional_create,
    prefer_minimal_and_if_match,
    history_bundles,
    metadata_is_public_and_truthful,
);

async fn crud_versions_and_headers(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;

    // create: server-assigned UUID, Location, ETag, Last-Modified
    let mut body = distinctive_patient("A1");
    body["id"] = json!("client-chosen-id-is-ignored");
    let resp = s.post_json("Patient", &t, &body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let h = resp.headers().clone();
    assert_eq!(h["etag"], "W/\"1\"");
    assert!(h.contains_key("last-modified"));
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+json")
    );
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "server-assigned UUID");
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"].is_string());
    assert_eq!(
        h["location"].to_str().unwrap(),
        format!("{}/Patient/{id}/_history/1", s.fhir)
    );

    // read
    let resp = s.get(&format!("Patient/{id}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "W/\"1\"");
    let read: Value = resp.json().await.unwrap();
    assert_eq!(read, created);

    // update
    let mut changed = created.clone();
    changed["gender"] = json!("female");
    let resp = s
        .put_json(&format!("Patient/{id}"), &t, &changed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "W/\"2\"");
    let v2: Value = resp.json().await.unwrap();
    assert_eq!(v2["meta"]["versionId"], "2");
    assert_eq!(v2["gender"], "female");

    // vread of both versions
    let v1: Value = s
        .get(&format!("Patient/{id}/_history/1"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v1.get("gender").is_none());
    let resp = s
        .get(&format!("Patient/{id}/_history/2"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.get(&format!("Patient/{id}/_history/9"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // delete makes a tombstone: read gives 410, history keeps every version
    let resp = s.delete(&format!("Patient/{id}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["etag"], "W/\"3\"");
    let resp = s.get(&format!("Patient/{id}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 410);
    let oo: Value = resp.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(
        s.get(&format!("Patient/{id}/_history/3"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        410
    );
    assert_eq!(
        s.get(&format!("Patient/{id}/_history/1"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // unknown id and unknown type
    assert_eq!(
        s.get("Patient/does-not-exist", &t).send().await.unwrap().status(),
        404
    );
    assert_eq!(s.get("NotAType/x", &t).send().await.unwrap().status(), 404);
    let resp = s.delete("Patient/never-was", &t).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // update-as-create with a client-chosen id
    let mut fresh = distinctive_patient("A2");
    fresh["id"] = json!("chosen-1");
    let resp = s.put_json("Patient/chosen-1", &t, &fresh).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().contains_key("location"));
    s.stop().await;
}

async fn round_trip_is_exact(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let raw = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueQuantity":{"value":1.50,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},"component":[{"code":{"text":"x"},"valueQuantity":{"value":0.000000000000000000012345678901234567890}}],"issued":"2026-01-02T03:04:05.678+01:00"}"#;
    let resp = s
        .client
        .post(format!("{}/Observation", s.fhir))
        .bearer_auth(&t)
        .header("content-type", "application/fhir+json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#""value":1.50"#), "decimal precision kept: {text}");
    assert!(text.contains("0.000000000000000000012345678901234567890"));
    assert!(text.contains(r#""issued":"2026-01-02T03:04:05.678+01:00""#));
    let created: Value = serde_json::from_str(&text).unwrap();
    let id = created["id"].as_str().unwrap();
    let read = s
        .get(&format!("Observation/{id}"), &t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(read.contains(r#""value":1.50"#));

    // primitive extensions survive
    let p = s.create(&t, &distinctive_patient("RT")).await;
    let id = p["id"].as_str().unwrap();
    let back: Value = s
        .get(&format!("Patient/{id}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back["_birthDate"], distinctive_patient("RT")["_birthDate"]);
    let mut expected = distinctive_patient("RT");
    expected["id"] = back["id"].clone();
    expected["meta"] = back["meta"].clone();
    assert_eq!(back, expected, "nothing but id and meta added");
    s.stop().await;
}

async fn conditional_create(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let body = distinctive_patient("CC");
    let criteria = "identifier=urn:oid:1.2.36.146.595.217.0.1|MRNCC77421";
    let first = s
        .post_json("Patient", &t, &body)
        .header("if-none-exist", criteria)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = s
        .post_json("Patient", &t, &body)
        .header("if-none-exist", criteria)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "existing match returned, nothing created");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let hist: Value = s
        .get("Patient/_history", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hist["entry"].as_array().unwrap().len(), 1);

    // two matches: 412
    s.create(&t, &body).await;
    let resp = s
        .post_json("Patient", &t, &body)
        .header("if-none-exist", criteria)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);

    // unsupported criteria are refused, not ignored
    let resp = s
        .post_json("Patient", &t, &body)
        .header("if-none-exist", "bogus-param=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

async fn prefer_minimal_and_if_match(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let resp = s
        .post_json("Patient", &t, &distinctive_patient("PM"))
        .header("prefer", "return=minimal")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(resp.bytes().await.unwrap().is_empty());
    let id = location.split('/').rev().nth(2).unwrap().to_owned();

    let mut body: Value = s
        .get(&format!("Patient/{id}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["gender"] = json!("other");
    let stale = s
        .put_json(&format!("Patient/{id}"), &t, &body)
        .header("if-match", "W/\"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let ok = s
        .put_json(&format!("Patient/{id}"), &t, &body)
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let replay = s
        .put_json(&format!("Patient/{id}"), &t, &body)
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 412, "a lost update is refused");
    let bad = s
        .put_json(&format!("Patient/{id}"), &t, &body)
        .header("if-match", "nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let del = s
        .delete(&format!("Patient/{id}"), &t)
        .header("if-match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 412);
    s.stop().await;
}

async fn history_bundles(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = s.create(&t, &distinctive_patient("H1")).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let mut p2 = p.clone();
    p2["active"] = json!(true);
    assert_eq!(
        s.put_json(&format!("Patient/{id}"), &t, &p2)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.delete(&format!("Patient/{id}"), &t).send().await.unwrap();
    s.create(&t, &distinctive_patient("H2")).await;

    let b: Value = s
        .get(&format!("Patient/{id}/_history"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "history");
    let e = b["entry"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none());
    assert_eq!(e[1]["request"]["method"], "PUT");
    assert_eq!(e[2]["request"]["method"], "POST");
    assert_eq!(e[2]["response"]["etag"], "W/\"1\"");

    let b: Value = s
        .get("Patient/_history?_count=2", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["entry"].as_array().unwrap().len(), 2);
    let b: Value = s
        .get("Patient/_history", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["entry"].as_array().unwrap().len(), 4);
    let b: Value = s
        .get("Patient/_history?_since=2999-01-01T00:00:00Z", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(b["entry"].as_array().unwrap().is_empty());
    assert_eq!(
        s.get("Patient/_history?_count=0", &t)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        s.get("Patient/_history?_count=5000", &t)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        s.get("Patient/_history?name=x", &t)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        s.get("Patient/nope/_history", &t).send().await.unwrap().status(),
        404
    );
    s.stop().await;
}

async fn metadata_is_public_and_truthful(backend: Backend) {
    let s = TestServer::start(backend).await;
    let resp = s.client.get(format!("{}/metadata", s.fhir)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cs: Value = resp.json().await.unwrap();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    for r in resources {
        let codes: Vec<&str> = r["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        // search is implemented for every type: claimed, with the parameters it supports
        assert!(codes.contains(&"search-type"), "{codes:?}");
        let params: Vec<&str> = r["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(
            params.contains(&"_id") && params.contains(&"_lastUpdated"),
            "{params:?}"
        );
        for p in r["searchParam"].as_array().unwrap() {
            assert!(
                [
                    "string",
                    "token",
                    "reference",
                    "date",
                    "quantity",
                    "uri",
                    "number"
                ]
                .contains(&p["type"].as_str().unwrap()),
                "{p}"
            );
        }
    }
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let names: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "family",
        "given",
        "name",
        "identifier",
        "birthdate",
        "gender",
        "phone",
        "address-city",
    ] {
        assert!(names.contains(&p), "{p} missing from {names:?}");
    }
    assert!(
        !names.contains(&"_text") && !names.contains(&"_content"),
        "not implemented"
    );
    let system: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        system,
        ["transaction", "batch", "history-system"],
        "exactly the system-level interactions implemented"
    );
    // everything claimed works: spot-check every interaction on one type
    let t = s.admin_token().await;
    let c = s
        .create(&t, &json!({"resourceType": "Basic", "code": {"text": "x"}}))
        .await;
    let id = c["id"].as_str().unwrap();
    for path in [
        format!("Basic/{id}"),
        format!("Basic/{id}/_history/1"),
        format!("Basic/{id}/_history"),
        "Basic/_history".into(),
        "Basic".into(),
        format!("Basic?_id={id}"),
        "_history".into(),
    ] {
        assert_eq!(s.get(&path, &t).send().await.unwrap().status(), 200, "{path}");
    }
    // search answers a searchset with the match
    let bundle: Value = s.get("Basic", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1);
    assert_eq!(bundle["entry"][0]["resource"]["id"], json!(id));
    s.stop().await;
}
