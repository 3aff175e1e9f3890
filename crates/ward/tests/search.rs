//! FHIR search over blind indexes, the patient compartment, paging and minimization
//! (SPEC F-2, F-3, MN-1, EN-4), on both backends.

mod common;

use std::collections::BTreeSet;

use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(
    string_and_token_parameters,
    identifying_dates_by_year_then_filtered,
    clinical_parameters_sort_and_include,
    compartment_search,
    paging_through_a_large_result_set,
    strict_lenient_and_refusals,
    post_search_keeps_phi_out_of_urls,
    system_history_and_authorization,
    no_plaintext_after_searches,
);

async fn search(s: &TestServer, t: &str, path: &str) -> Value {
    let resp = s.get(path, t).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(body["resourceType"], "Bundle");
    assert_eq!(body["type"], "searchset");
    body
}

/// Ids of the `match` entries, in order.
fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn idset(bundle: &Value) -> BTreeSet<String> {
    ids(bundle).into_iter().collect()
}

async fn id_of(s: &TestServer, t: &str, body: Value) -> String {
    s.create(t, &body).await["id"].as_str().unwrap().to_owned()
}

fn person(family: &str, given: &str, mrn: &str, birth: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [
            { "system": "urn:oid:1.2.36.146.595.217.0.1", "value": mrn },
            { "value": format!("NOSYS-{mrn}") }
        ],
        "name": [{ "family": family, "given": [given] }],
        "telecom": [{ "system": "phone", "value": format!("+1-555-{mrn}") },
                    { "system": "email", "value": format!("{given}.{family}@Example.org") }],
        "gender": "female",
        "birthDate": birth,
        "address": [{ "city": "Quabbleton", "postalCode": "99501" }]
    })
}

async fn string_and_token_parameters(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = id_of(&s, &t, person("Zyxwarfield", "Émilie", "M100", "1937-04-19")).await;
    let b = id_of(&s, &t, person("Zyxwarton", "Bartholomew", "M200", "1950-01-01")).await;
    let c = id_of(
        &s,
        &t,
        person("Quarrington-Smythe-Abernathy", "Cleo", "M300", "1999-12-31"),
    )
    .await;

    // string: starts-with, case- and accent-insensitive
    let q = |p: &str| format!("Patient?{p}");
    assert_eq!(idset(&search(&s, &t, &q("family=zyxwar")).await), set(&[&a, &b]));
    assert_eq!(idset(&search(&s, &t, &q("family=ZYXWARF")).await), set(&[&a]));
    assert_eq!(idset(&search(&s, &t, &q("given=emilie")).await), set(&[&a]));
    assert_eq!(idset(&search(&s, &t, &q("given=%C3%89MI")).await), set(&[&a]));
    assert_eq!(idset(&search(&s, &t, &q("name=bartho")).await), set(&[&b]));
    assert!(
        ids(&search(&s, &t, &q("family=warfield")).await).is_empty(),
        "not contains"
    );
    // :exact: the whole value, as written
    assert_eq!(
        idset(&search(&s, &t, &q("family:exact=Zyxwarfield")).await),
        set(&[&a])
    );
    assert!(ids(&search(&s, &t, &q("family:exact=zyxwarfield")).await).is_empty());
    assert!(ids(&search(&s, &t, &q("family:exact=Zyxwar")).await).is_empty());
    // longer than the 16 indexed characters: prefix match, then confirmed after decryption
    assert_eq!(
        idset(&search(&s, &t, &q("family=quarrington-smythe-ab")).await),
        set(&[&c])
    );
    assert!(ids(&search(&s, &t, &q("family=quarrington-smythe-xx")).await).is_empty());
    // OR within a list, AND across parameters
    assert_eq!(
        idset(&search(&s, &t, &q("family=zyxwarf,quarr")).await),
        set(&[&a, &c])
    );
    assert_eq!(
        idset(&search(&s, &t, &q("family=zyxwar&given=bart")).await),
        set(&[&b])
    );
    assert_eq!(idset(&search(&s, &t, &q("address-city=quabble")).await).len(), 3);

    // tokens: code, system|code, |code, system|
    let sys = "urn:oid:1.2.36.146.595.217.0.1";
    assert_eq!(idset(&search(&s, &t, &q("identifier=M100")).await), set(&[&a]));
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("identifier={sys}|M200"))).await),
        set(&[&b])
    );
    assert!(ids(&search(&s, &t, &q(&format!("identifier={sys}|NOSYS-M200"))).await).is_empty());
    assert_eq!(
        idset(&search(&s, &t, &q("identifier=|NOSYS-M300")).await),
        set(&[&c])
    );
    assert!(ids(&search(&s, &t, &q("identifier=|M300")).await).is_empty());
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("identifier={sys}|"))).await).len(),
        3
    );
    assert_eq!(
        idset(&search(&s, &t, &q("identifier=M100,M300")).await),
        set(&[&a, &c])
    );
    assert_eq!(
        idset(&search(&s, &t, &q("phone=%2B1-555-M200")).await),
        set(&[&b])
    );
    assert_eq!(
        idset(&search(&s, &t, &q("email=BARTHOLOMEW.Zyxwarton@example.ORG")).await),
        set(&[&b])
    );
    assert_eq!(idset(&search(&s, &t, &q("gender=female")).await).len(), 3);
    assert!(ids(&search(&s, &t, &q("gender=male")).await).is_empty());
    // :missing
    assert_eq!(
        idset(&search(&s, &t, &q("death-date:missing=true")).await).len(),
        3
    );
    assert!(ids(&search(&s, &t, &q("gender:missing=true")).await).is_empty());
    assert_eq!(idset(&search(&s, &t, &q("family:missing=false")).await).len(), 3);
    // _id
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("_id={a},{c}"))).await),
        set(&[&a, &c])
    );
    // _lastUpdated
    assert_eq!(
        idset(&search(&s, &t, &q("_lastUpdated=gt2000-01-01")).await).len(),
        3
    );
    assert!(ids(&search(&s, &t, &q("_lastUpdated=lt2000-01-01")).await).is_empty());

    // updates replace the index, deletes remove it
    let mut changed = s
        .get(&format!("Patient/{b}"), &t)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    changed["name"][0]["family"] = json!("Renamedovich");
    assert_eq!(
        s.put_json(&format!("Patient/{b}"), &t, &changed)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(idset(&search(&s, &t, &q("family=zyxwar")).await), set(&[&a]));
    assert_eq!(idset(&search(&s, &t, &q("family=renamed")).await), set(&[&b]));
    let resp = s.delete(&format!("Patient/{a}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(ids(&search(&s, &t, &q("family=zyxwar")).await).is_empty());
    assert!(ids(&search(&s, &t, &q("identifier=M100")).await).is_empty());
    s.stop().await;
}

async fn identifying_dates_by_year_then_filtered(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = id_of(&s, &t, person("Datea", "A", "D1", "1937-04-19")).await;
    let b = id_of(&s, &t, person("Dateb", "B", "D2", "1937-11-02")).await;
    let c = id_of(&s, &t, person("Datec", "C", "D3", "1938")).await;
    let q = |p: &str| format!("Patient?birthdate={p}");
    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("1937", vec![&a, &b]),
        ("1937-04", vec![&a]),
        ("1937-04-19", vec![&a]),
        ("eq1937-04-20", vec![]),
        ("ne1937-04-19", vec![&b, &c]),
        ("lt1937-06-01", vec![&a]),
        ("le1937-11-02", vec![&a, &b]),
        ("gt1937-04-19", vec![&b, &c]),
        ("ge1937-11-02", vec![&b, &c]),
        ("sa1937-12-31", vec![&c]),
        ("eb1937-05", vec![&a]),
        // ap: 10% of the distance to now (about nine years here)
        ("ap1937-04-19", vec![&a, &b, &c]),
        ("ap1900-01-01", vec![]),
        ("1938", vec![&c]),
        ("1937-04-19,1938", vec![&a, &c]),
    ];
    for (value, expected) in cases {
        let expected: BTreeSet<String> = expected.into_iter().cloned().collect();
        let bundle = search(&s, &t, &q(value)).await;
        assert_eq!(idset(&bundle), expected, "birthdate={value}");
        assert_eq!(
            bundle["total"],
            json!(expected.len()),
            "total for birthdate={value}"
        );
    }
    // combined with another criterion
    assert_eq!(
        idset(&search(&s, &t, "Patient?birthdate=1937&family=dateb").await),
        set(&[&b])
    );
    s.stop().await;
}

fn observation(patient: &str, code: &str, when: &str, value: f64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": code }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "effectiveDateTime": when,
        "valueQuantity": { "value": value, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg" }
    })
}

async fn clinical_parameters_sort_and_include(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = id_of(&s, &t, person("Clinic", "Pat", "C1", "1970-01-01")).await;
    let other = id_of(&s, &t, person("Other", "Oz", "C2", "1971-01-01")).await;
    let o1 = id_of(&s, &t, observation(&p, "8867-4", "2021-03-01T10:00:00Z", 5.4)).await;
    let o2 = id_of(&s, &t, observation(&p, "8310-5", "2021-06-15", 37.2)).await;
    let o3 = id_of(
        &s,
        &t,
        observation(&other, "8867-4", "2022-01-01T00:00:00Z", 120.0),
    )
    .await;
    let q = |p: &str| format!("Observation?{p}");

    // reference forms
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("subject=Patient/{p}"))).await),
        set(&[&o1, &o2])
    );
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("subject={p}"))).await),
        set(&[&o1, &o2])
    );
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("subject:Patient={p}"))).await),
        set(&[&o1, &o2])
    );
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("patient={other}"))).await),
        set(&[&o3])
    );
    assert_eq!(
        idset(&search(&s, &t, &q(&format!("subject={}/Patient/{p}", s.fhir))).await),
        set(&[&o1, &o2])
    );
    assert!(ids(&search(&s, &t, &q(&format!("subject=Group/{p}"))).await).is_empty());
    // tokens on codes
    assert_eq!(
        idset(&search(&s, &t, &q("code=http://loinc.org|8867-4")).await),
        set(&[&o1, &o3])
    );
    assert_eq!(idset(&search(&s, &t, &q("code=8310-5")).await), set(&[&o2]));
    assert_eq!(idset(&search(&s, &t, &q("status=final")).await).len(), 3);
    // dates, precision-aware
    assert_eq!(idset(&search(&s, &t, &q("date=2021")).await), set(&[&o1, &o2]));
    assert_eq!(idset(&search(&s, &t, &q("date=2021-03")).await), set(&[&o1]));
    assert_eq!(
        idset(&search(&s, &t, &q("date=ge2021-06-15")).await),
        set(&[&o2, &o3])
    );
    assert_eq!(idset(&search(&s, &t, &q("date=lt2021-06")).await), set(&[&o1]));
    assert_eq!(idset(&search(&s, &t, &q("date=gt2021-12-31")).await), set(&[&o3]));
    assert_eq!(
        idset(&search(&s, &t, &q("date=le2021-03-01T10:00:00Z")).await),
        set(&[&o1])
    );
    assert_eq!(idset(&search(&s, &t, &q("date=ne2021")).await), set(&[&o3]));
    assert_eq!(idset(&search(&s, &t, &q("date=sa2021-12")).await), set(&[&o3]));
    assert_eq!(idset(&search(&s, &t, &q("date=eb2021-04")).await), set(&[&o1]));
    assert!(idset(&search(&s, &t, &q("date=ap2021-06-15")).await).contains(&o2));
    assert!(ids(&search(&s, &t, &q("date=ap1990-01-01")).await).is_empty());
    assert_eq!(
        idset(&search(&s, &t, &q("date=ge2021-01-01&date=lt2021-04-01")).await),
        set(&[&o1])
    );
    // quantities
    assert_eq!(
        idset(&search(&s, &t, &q("value-quantity=5.4")).await),
        set(&[&o1])
    );
    assert_eq!(
        idset(&search(&s, &t, &q("value-quantity=5")).await),
        set(&[&o1]),
        "5 means 4.5..5.5"
    );
    assert_eq!(
        idset(&search(&s, &t, &q("value-quantity=gt30|http://unitsofmeasure.org|mg")).await),
        set(&[&o2, &o3])
    );
    assert!(ids(&search(&s, &t, &q("value-quantity=gt30|http://unitsofmeasure.org|g")).await).is_empty());
    assert_eq!(
        idset(&search(&s, &t, &q("value-quantity=lt10||mg")).await),
        set(&[&o1])
    );
    assert_eq!(
        idset(&search(&s, &t, &q("value-quantity=ap110")).await),
        set(&[&o3])
    );
    assert_eq!(
        idset(&search(&s, &t, &q("value-quantity=le37.2")).await),
        set(&[&o1, &o2])
    );
    assert!(ids(&search(&s, &t, &q("value-quantity:missing=true")).await).is_empty());

    // _sort on a date parameter and _lastUpdated
    assert_eq!(
        ids(&search(&s, &t, &q("_sort=date")).await),
        vec![o1.clone(), o2.clone(), o3.clone()]
    );
    assert_eq!(
        ids(&search(&s, &t, &q("_sort=-date")).await),
        vec![o3.clone(), o2.clone(), o1.clone()]
    );
    assert_eq!(
        ids(&search(&s, &t, &q("_sort=_lastUpdated")).await),
        vec![o1.clone(), o2.clone(), o3.clone()]
    );
    assert_eq!(
        ids(&search(&s, &t, &q("_sort=-_lastUpdated")).await),
        vec![o3.clone(), o2.clone(), o1.clone()]
    );

    // _include / _revinclude, one level, marked as include
    let b = search(&s, &t, &q(&format!("subject={p}&_include=Observation:subject"))).await;
    assert_eq!(idset(&b), set(&[&o1, &o2]));
    let included: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(included.len(), 1, "{b}");
    assert_eq!(included[0]["resource"]["id"], json!(p));
    assert_eq!(included[0]["fullUrl"], json!(format!("{}/Patient/{p}", s.fhir)));
    let b = search(
        &s,
        &t,
        &format!("Patient?_id={p}&_revinclude=Observation:subject"),
    )
    .await;
    assert_eq!(idset(&b), set(&[&p]));
    let rev: BTreeSet<String> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rev, set(&[&o1, &o2]));
    assert_eq!(b["total"], 1, "total counts matches only");

    // _summary and _elements, _total
    let b = search(&s, &t, &q("_summary=count")).await;
    assert_eq!(b["total"], 3);
    assert!(b.get("entry").is_none());
    let b = search(&s, &t, &q(&format!("_id={o1}&_elements=status"))).await;
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["status"], "final");
    assert!(r.get("code").is_none() && r.get("valueQuantity").is_none(), "{r}");
    assert!(
        r["meta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["code"] == "SUBSETTED")
    );
    let b = search(&s, &t, &q(&format!("_id={o1}&_summary=data"))).await;
    assert!(b["entry"][0]["resource"].get("code").is_some());
    let b = search(&s, &t, &q("_total=none")).await;
    assert!(b.get("total").is_none());
    assert_eq!(ids(&b).len(), 3);
    // every entry has a fullUrl
    for e in search(&s, &t, &q("")).await["entry"].as_array().unwrap() {
        assert!(e["fullUrl"].as_str().unwrap().starts_with(&s.fhir));
    }
    s.stop().await;
}

async fn compartment_search(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let a = id_of(&s, &t, person("Compa", "A", "K1", "1980-01-01")).await;
    let b = id_of(&s, &t, person("Compb", "B", "K2", "1981-01-01")).await;
    let oa = id_of(&s, &t, observation(&a, "1-1", "2021-01-01", 1.0)).await;
    let ob = id_of(&s, &t, observation(&b, "1-1", "2021-01-01", 1.0)).await;
    // b's observation performed by a: it belongs to both compartments
    let mut shared = observation(&b, "2-2", "2021-02-01", 2.0);
    shared["performer"] = json!([{ "reference": format!("Patient/{a}") }]);
    let shared = id_of(&s, &t, shared).await;
    let ca = id_of(
        &s,
        &t,
        json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{a}")},
               "code": {"text": "x"}}),
    )
    .await;
    let org = id_of(&s, &t, json!({"resourceType": "Organization", "name": "Org"})).await;

    let c = |p: &str| format!("Patient/{p}");
    assert_eq!(
        idset(&search(&s, &t, &format!("{}/Observation", c(&a))).await),
        set(&[&oa, &shared])
    );
    assert_eq!(
        idset(&search(&s, &t, &format!("{}/Observation", c(&b))).await),
        set(&[&ob, &shared])
    );
    assert_eq!(
        idset(&search(&s, &t, &format!("{}/Condition", c(&a))).await),
        set(&[&ca])
    );
    assert!(ids(&search(&s, &t, &format!("{}/Condition", c(&b))).await).is_empty());
    assert_eq!(
        idset(&search(&s, &t, &format!("{}/Patient", c(&a))).await),
        set(&[&a])
    );
    // criteria inside the compartment; they never reach outside it
    assert_eq!(
        idset(&search(&s, &t, &format!("{}/Observation?code=2-2", c(&a))).await),
        set(&[&shared])
    );
    assert!(ids(&search(&s, &t, &format!("{}/Observation?_id={ob}", c(&a))).await).is_empty());
    assert!(ids(&search(&s, &t, &format!("{}/Observation?subject={b}&code=1-1", c(&a))).await).is_empty());
    // unknown patient: empty, like any other patient without data
    assert!(ids(&search(&s, &t, &format!("{}/Observation", c("no-such-patient"))).await).is_empty());
    // a type outside the compartment definition, or another compartment
    let resp = s
        .get(&format!("{}/Organization", c(&a)), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = s
        .get(&format!("Organization/{org}/Patient"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // paging links stay inside the compartment
    let b1 = search(&s, &t, &format!("{}/Observation?_count=1", c(&a))).await;
    assert_eq!(ids(&b1).len(), 1);
    let next = b1["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        next.starts_with(&format!("{}/Patient/{a}/Observation?_cursor=", s.fhir)),
        "{next}"
    );
    let b2: Value = s
        .client
        .get(&next)
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut both: BTreeSet<String> = idset(&b1);
    both.extend(idset(&b2));
    assert_eq!(both, set(&[&oa, &shared]));
    // a cursor cannot be replayed in another compartment
    let moved = next.replace(&format!("Patient/{a}/"), &format!("Patient/{b}/"));
    let resp = s.client.get(&moved).bearer_auth(&t).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

async fn paging_through_a_large_result_set(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = id_of(&s, &t, person("Pager", "P", "P1", "1990-01-01")).await;
    let mut order = Vec::new();
    for i in 0..120 {
        let o = observation(
            &p,
            "9-9",
            &format!("2020-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
            f64::from(i),
        );
        order.push(id_of(&s, &t, o).await);
    }
    let created: BTreeSet<String> = order.iter().cloned().collect();
    for sort in ["", "&_sort=date", "&_sort=-date", "&_sort=_lastUpdated"] {
        let mut seen = Vec::new();
        let first = search(&s, &t, &format!("Observation?code=9-9&_count=7{sort}")).await;
        assert_eq!(first["total"], 120);
        assert!(
            !first["link"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["relation"] == "previous"),
            "first page has no previous"
        );
        let mut page = first.clone();
        let mut pages = 1;
        let mut second: Option<Value> = None;
        loop {
            let got = ids(&page);
            assert!(got.len() <= 7);
            seen.extend(got);
            let Some(next) = page["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
            else {
                break;
            };
            let url = next["url"].as_str().unwrap();
            assert!(
                !url.contains("9-9") && !url.contains("code"),
                "cursor URLs carry no query values: {url}"
            );
            page = s
                .client
                .get(url)
                .bearer_auth(&t)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            pages += 1;
            if second.is_none() {
                second = Some(page.clone());
            }
            assert!(pages < 30, "paging does not end");
        }
        assert_eq!(pages, 18, "120 / 7 rounded up");
        assert_eq!(seen.len(), 120, "no duplicates or gaps ({sort})");
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);
        // dates and lastUpdated both follow creation order here
        match sort {
            "&_sort=date" | "&_sort=_lastUpdated" => assert_eq!(seen, order, "{sort}"),
            "&_sort=-date" | "" => {
                assert_eq!(seen, order.iter().rev().cloned().collect::<Vec<_>>(), "{sort}")
            }
            _ => {}
        }
        // previous of page 2 is page 1
        let second = second.unwrap();
        let prev = second["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "previous")
            .unwrap();
        let back: Value = s
            .client
            .get(prev["url"].as_str().unwrap())
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ids(&back), ids(&first), "previous link ({sort})");
    }
    // a tampered or foreign cursor is refused
    let first = search(&s, &t, "Observation?code=9-9&_count=7").await;
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tampered = next.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    assert_eq!(s.status_of(&tampered, Some(&t)).await, 400);
    // Another client, allowed the same search, cannot follow this client's cursor; the
    // holder still can.
    let (b_id, b_secret) = s.new_client("system/Observation.rs").await;
    let b = s.token_for(&b_id, &b_secret, None).await;
    assert_eq!(
        s.status_of(&next, Some(&b)).await,
        400,
        "a cursor stays with its client"
    );
    assert_eq!(
        s.status_of(&format!("{}/Observation?code=9-9&_count=7", s.fhir), Some(&b))
            .await,
        200,
        "control: the other client may run the search itself"
    );
    assert_eq!(
        s.status_of(&next, Some(&t)).await,
        200,
        "the holder may follow it"
    );
    let other_type = next.replace("/Observation?", "/Condition?");
    assert_eq!(s.status_of(&other_type, Some(&t)).await, 400);
    // _count bounds
    assert_eq!(
        ids(&search(&s, &t, "Observation?code=9-9").await).len(),
        50,
        "default 50"
    );
    assert_eq!(
        ids(&search(&s, &t, "Observation?code=9-9&_count=5000").await).len(),
        120,
        "max 1000"
    );
    s.stop().await;
}

async fn strict_lenient_and_refusals(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    id_of(&s, &t, person("Strict", "S", "S1", "1960-01-01")).await;
    let refused = |path: &'static str, expected: &'static str| {
        let s = &s;
        let t = &t;
        async move {
            let resp = s.get(path, t).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{path}");
            let oo: Value = resp.json().await.unwrap();
            assert_eq!(oo["resourceType"], "OperationOutcome");
            let text = oo.to_string();
            assert!(text.contains(expected), "{path}: {text}");
            assert!(
                !text.contains("Strict") && !text.contains("strict"),
                "no values echoed: {text}"
            );
        }
    };
    refused("Patient?shoe-size=9", "shoe-size").await;
    refused("Patient?family:contains=strict", "family:contains").await;
    refused("Patient?name:text=strict", "name:text").await;
    refused("Patient?_sort=family", "_sort").await;
    refused("Patient?_sort=birthdate", "_sort").await;
    refused("Patient?birthdate=strict", "birthdate").await;
    refused(
        "Patient?general-practitioner.name=strict",
        "general-practitioner.name",
    )
    .await;
    refused("Patient?_include=*", "_include").await;
    refused("Patient?_total=strict", "_total").await;
    refused("Patient?_has:Observation:subject:code=strict", "_has").await;
    // lenient: ignored and reported in an OperationOutcome entry
    let resp = s
        .get("Patient?shoe-size=9&family=stri", &t)
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(ids(&b).len(), 1);
    let outcome = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
    assert!(outcome["resource"].to_string().contains("shoe-size"));
    // lenient does not cover refusals that would need plaintext
    let resp = s
        .get("Patient?family:contains=stri", &t)
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // unknown type
    assert_eq!(s.get("Nonsense?x=1", &t).send().await.unwrap().status(), 404);
    s.stop().await;
}

async fn post_search_keeps_phi_out_of_urls(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let mut all = BTreeSet::new();
    for i in 0..5 {
        all.insert(
            id_of(
                &s,
                &t,
                person("Zyxpostfield", &format!("G{i}"), &format!("Q{i}"), "1945-05-05"),
            )
            .await,
        );
    }
    let post = |form: Vec<(&'static str, &'static str)>| {
        s.client
            .post(format!("{}/Patient/_search", s.fhir))
            .bearer_auth(&t)
            .form(&form)
            .send()
    };
    let resp = post(vec![
        ("family", "zyxpost"),
        ("birthdate", "1945"),
        ("_count", "2"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut page: Value = resp.json().await.unwrap();
    assert_eq!(page["total"], 5);
    let mut seen = Vec::new();
    loop {
        for l in page["link"].as_array().unwrap() {
            let url = l["url"].as_str().unwrap();
            // The sealed cursor is random-looking hex that may contain any digits by chance.
            let url = url.split("_cursor=").next().unwrap();
            assert!(
                !url.to_lowercase().contains("zyxpost") && !url.contains("1945"),
                "no PHI in links: {url}"
            );
        }
        seen.extend(ids(&page));
        let Some(next) = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        else {
            break;
        };
        page = s
            .client
            .get(next["url"].as_str().unwrap())
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), all);
    // same answer as GET
    let get = search(&s, &t, "Patient?family=zyxpost&birthdate=1945").await;
    assert_eq!(idset(&get), all);
    // wrong body type
    let resp = s
        .client
        .post(format!("{}/Patient/_search", s.fhir))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    s.stop().await;
}

async fn system_history_and_authorization(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let p = id_of(&s, &t, person("Hist", "H", "H1", "1975-01-01")).await;
    id_of(&s, &t, observation(&p, "3-3", "2021-01-01", 1.0)).await;
    let h: Value = s.get("_history", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["type"], "history");
    assert_eq!(h["entry"].as_array().unwrap().len(), 2);
    let h: Value = s
        .get("_history?_count=1", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["entry"].as_array().unwrap().len(), 1);
    assert_eq!(
        h["entry"][0]["resource"]["resourceType"], "Observation",
        "newest first"
    );
    let h: Value = s
        .get("_history?_since=2999-01-01T00:00:00Z", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(h["entry"].as_array().unwrap().is_empty());

    // a client allowed to search Patient only
    let (id, secret) = s.new_client("system/Patient.rs").await;
    let narrow = s.token_for(&id, &secret, None).await;
    assert_eq!(s.get("_history", &narrow).send().await.unwrap().status(), 403);
    assert_eq!(
        s.get("Observation?code=3-3", &narrow)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        s.get(&format!("Patient/{p}/Observation"), &narrow)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let resp = s
        .client
        .post(format!("{}/Observation/_search", s.fhir))
        .bearer_auth(&narrow)
        .form(&[("code", "3-3")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // allowed search; _include of a type it may not read is left out
    assert_eq!(
        ids(&search(&s, &narrow, "Patient?family=hist").await),
        vec![p.clone()]
    );
    let b = search(
        &s,
        &narrow,
        &format!("Patient?_id={p}&_revinclude=Observation:subject"),
    )
    .await;
    assert_eq!(b["entry"].as_array().unwrap().len(), 1, "{b}");
    // read-only scope (no search)
    let (id, secret) = s.new_client("system/Patient.r").await;
    let read_only = s.token_for(&id, &secret, None).await;
    assert_eq!(
        s.get("Patient?family=hist", &read_only)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // no token
    let resp = s
        .client
        .get(format!("{}/Patient?family=hist", s.fhir))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    s.stop().await;
}

async fn no_plaintext_after_searches(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    for tag in ["S1", "S2"] {
        s.create(&t, &common::distinctive_patient(tag)).await;
    }
    // searches with distinctive values, through GET and POST
    for path in [
        "Patient?family=Zyxwarfield",
        "Patient?family:exact=ZyxwarfieldS1",
        "Patient?given=Quillonias2",
        "Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|MRNS177421",
        "Patient?phone=%2B1-555-01S1-8841",
        "Patient?birthdate=1937-04-19",
        "Patient?address=S177%20Marrowgate",
        "Patient?address-city=Quabbleton",
        "Patient?family=Vexquorbantiliusmaximus",
    ] {
        search(&s, &t, path).await;
    }
    let resp = s
        .client
        .post(format!("{}/Patient/_search", s.fhir))
        .bearer_auth(&t)
        .form(&[("family", "Plonkwhistlebury"), ("birthdate", "1911-11-11")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        ids(&search(&s, &t, "Patient?family=zyxwarfields1&birthdate=1937-04-19").await).len(),
        1
    );
    let planted = [
        "Zyxwarfield",
        "zyxwarfield",
        "ZYXWARFIELD",
        "Quillonia",
        "quillonia",
        "MRNS177421",
        "555-01S1-8841",
        "1937-04-19",
        "19370419",
        "Marrowgate",
        "marrowgate",
        "Quabbleton",
        "quabbleton",
        "Vexquorbantilius",
        "vexquorbantilius",
        "Plonkwhistlebury",
        "plonkwhistlebury",
        "1911-11-11",
    ];
    let (dump, tables) = common::store_dump(&s).await;
    if s.backend == Backend::Postgres {
        for expected in [
            "search_blind",
            "search_date",
            "search_reference",
            "search_quantity",
            "compartment",
        ] {
            assert!(tables.iter().any(|t| t == expected), "{expected} in {tables:?}");
        }
    }
    for needle in planted {
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "plaintext {needle:?} found in the database"
        );
    }
    s.stop().await;
}
