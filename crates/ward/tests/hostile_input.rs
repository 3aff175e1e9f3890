//! Bad input and resource bounds (issue 15 items 1 and 3, issue 9 items 4 and 6), black-box
//! over TLS on both backends: dates at the ends of the FHIR range never give a 500, searches
//! above the configured bounds get a 400 that says what to narrow, `total` stops at its cap,
//! and `ward serve` refuses data files open to group or others.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Backend, TestServer};
use serde_json::{Value, json};

on_both_backends!(
    extreme_dates_are_indexed_or_refused_never_500,
    searches_above_the_bounds_are_refused,
    total_is_omitted_beyond_its_cap,
);

const PREFIXES: [&str; 10] = ["", "eq", "ne", "lt", "gt", "le", "ge", "sa", "eb", "ap"];

/// Every searchable form of the extremes (issue 15 reproduced 500s on all of them).
const EXTREMES: [&str; 9] = [
    "9999",
    "9999-12",
    "9999-12-31",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-12:00",
    "0001",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-12:00",
];

/// A GET of `path` with `pairs` as its (form-encoded) query.
fn get_q<K: AsRef<str>, V: AsRef<str>>(
    s: &TestServer,
    path: &str,
    t: &str,
    pairs: &[(K, V)],
) -> reqwest::RequestBuilder {
    let enc = |x: &str| {
        x.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k.as_ref()), enc(v.as_ref())))
        .collect::<Vec<_>>()
        .join("&");
    s.get(&format!("{path}?{query}"), t)
}

async fn status_and_body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn match_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn extreme_dates_are_indexed_or_refused_never_500(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    // Writes: each extreme is a valid FHIR value, stored and indexed.
    let late = s
        .create(
            &t,
            &json!({"resourceType": "Patient", "birthDate": "9999-12-31",
            "deceasedDateTime": "9999-12-31T23:59:59-12:00"}),
        )
        .await;
    let early = s
        .create(
            &t,
            &json!({"resourceType": "Patient", "birthDate": "0001-01-01",
            "deceasedDateTime": "0001-01-01T00:00:00+14:00"}),
        )
        .await;
    let obs = |when: &str| {
        json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "x"}, "effectiveDateTime": when})
    };
    let late_obs = s.create(&t, &obs("9999-12-31T23:59:59.999-12:00")).await;
    let early_obs = s.create(&t, &obs("0001-01-01T00:00:00+14:00")).await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();

    // Searches: every prefix on every extreme, on an identifying date, a clinical date,
    // `_lastUpdated`, by GET and POST: 200 or 4xx, never 500.
    for value in EXTREMES {
        for prefix in PREFIXES {
            for (rtype, param) in [
                ("Patient", "birthdate"),
                ("Patient", "death-date"),
                ("Observation", "date"),
                ("Observation", "_lastUpdated"),
            ] {
                let v = format!("{prefix}{value}");
                let resp = get_q(&s, rtype, &t, &[(param, v.as_str())]).send().await.unwrap();
                let (status, body) = status_and_body(resp).await;
                assert!(status < 500, "{rtype}?{param}={v}: {status} {body}");
                let resp = s
                    .client
                    .post(format!("{}/{rtype}/_search", s.fhir))
                    .bearer_auth(&t)
                    .form(&[(param, v.as_str())])
                    .send()
                    .await
                    .unwrap();
                let (status, body) = status_and_body(resp).await;
                assert!(status < 500, "POST {rtype}/_search {param}={v}: {status} {body}");
            }
        }
    }
    // ...and indexed correctly.
    let found = |path: String| {
        let s = &s;
        let t = &t;
        async move {
            let (status, body) = status_and_body(s.get(&path, t).send().await.unwrap()).await;
            assert_eq!(status, 200, "{path}: {body}");
            match_ids(&body)
        }
    };
    assert_eq!(
        found("Patient?birthdate=9999-12-31".into()).await,
        vec![id(&late)]
    );
    assert_eq!(found("Patient?birthdate=9999".into()).await, vec![id(&late)]);
    assert_eq!(
        found("Patient?birthdate=0001-01-01".into()).await,
        vec![id(&early)]
    );
    assert_eq!(found("Patient?birthdate=lt0002".into()).await, vec![id(&early)]);
    assert_eq!(
        found("Observation?date=ge9999-12-31".into()).await,
        vec![id(&late_obs)]
    );
    assert_eq!(
        found("Observation?date=lt0001-01-01".into()).await,
        vec![id(&early_obs)]
    );

    // Just outside the range: refused with an OperationOutcome.
    for bad in [
        "10000-01-01",
        "0000-12-31",
        "9999-12-32",
        "9999-12-31T23:59:59+14:01",
    ] {
        let resp = get_q(&s, "Patient", &t, &[("birthdate", bad)])
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_body(resp).await;
        assert_eq!(status, 400, "birthdate={bad}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    let resp = s
        .post_json(
            "Patient",
            &t,
            &json!({"resourceType": "Patient", "birthDate": "0000-01-01"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Conditional create on an extreme date: it matches the existing patient.
    let resp = s
        .post_json(
            "Patient",
            &t,
            &json!({"resourceType": "Patient", "birthDate": "9999-12-31"}),
        )
        .header("if-none-exist", "birthdate=9999-12-31")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "If-None-Exist matched the existing patient");

    // Inside a transaction and a batch.
    let entry = |birth: &str, cond: Option<&str>| {
        let mut request = json!({"method": "POST", "url": "Patient"});
        if let Some(c) = cond {
            request["ifNoneExist"] = json!(c);
        }
        json!({"fullUrl": format!("urn:uuid:{}", uuid_like(birth, cond.is_some())),
            "resource": {"resourceType": "Patient", "birthDate": birth}, "request": request})
    };
    for kind in ["transaction", "batch"] {
        let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
            entry("9999-12-31", None),
            entry("0001-01-01", Some("birthdate=0001-01-01")),
            entry("9999-12-31", Some("birthdate=ge9999-12-31T23:59:59-12:00")),
        ]});
        let resp = s
            .client
            .post(&s.fhir)
            .bearer_auth(&t)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(&bundle).unwrap())
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_body(resp).await;
        assert!(status < 500, "{kind}: {status} {body}");
        assert_eq!(status, 200, "{kind}: {body}");
    }
    s.stop().await;
}

/// A fixed UUID per test entry (the fullUrls of one Bundle must differ).
fn uuid_like(birth: &str, cond: bool) -> String {
    let n = birth.bytes().map(u64::from).sum::<u64>() * 2 + u64::from(cond);
    format!("00000000-0000-4000-8000-{n:012}")
}

async fn searches_above_the_bounds_are_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let max_params = s.config.server.max_search_params;
    let max_values = s.config.server.max_search_values;
    assert_eq!((max_params, max_values), (64, 256), "the documented defaults");
    let p = s
        .create(
            &t,
            &json!({"resourceType": "Patient", "gender": "female",
        "name": [{"family": "Quorvath"}]}),
        )
        .await;
    let pid = p["id"].as_str().unwrap().to_owned();

    // At the bounds: the query runs and finds the patient.
    let many: Vec<(&str, String)> = (0..max_params)
        .map(|i| {
            if i % 2 == 0 {
                ("gender", "female".to_owned())
            } else {
                ("family", "Quorvath".to_owned())
            }
        })
        .collect();
    let (status, body) = status_and_body(get_q(&s, "Patient", &t, &many).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(match_ids(&body), vec![pid.clone()]);
    let list = (0..max_values - 1)
        .map(|i| format!("Family{i}"))
        .chain(["Quorvath".to_owned()])
        .collect::<Vec<_>>()
        .join(",");
    let (status, body) = status_and_body(
        get_q(&s, "Patient", &t, &[("family", &list)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(match_ids(&body), vec![pid.clone()]);
    let ids = (0..max_values - 1)
        .map(|i| format!("id{i}"))
        .chain([pid.clone()])
        .collect::<Vec<_>>()
        .join(",");
    let (status, body) =
        status_and_body(get_q(&s, "Patient", &t, &[("_id", &ids)]).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");

    // One above: 400 saying what to narrow, never a database error.
    let mut over = many.clone();
    over.push(("gender", "female".to_owned()));
    let (status, body) = status_and_body(get_q(&s, "Patient", &t, &over).send().await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("more than 64 parameters") && text.contains("too-costly"),
        "{text}"
    );
    let longer = format!("{list},Extra");
    let (status, body) = status_and_body(
        get_q(&s, "Patient", &t, &[("family", &longer)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("narrow the value lists"), "{body}");
    // The reproductions of the issue: 987 repetitions, 496 values; by GET and POST.
    let repeated: Vec<(&str, &str)> = (0..987).map(|_| ("family", "x")).collect();
    let (status, _) = status_and_body(get_q(&s, "Patient", &t, &repeated).send().await.unwrap()).await;
    assert_eq!(status, 400);
    let values = vec!["x"; 496].join(",");
    let resp = s
        .client
        .post(format!("{}/Patient/_search", s.fhir))
        .bearer_auth(&t)
        .form(&[("family", values.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // _elements count too (review finding 5: 1.3M values took seconds of CPU per request).
    let started = std::time::Instant::now();
    let resp = s
        .client
        .post(format!("{}/Patient/_search", s.fhir))
        .bearer_auth(&t)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_elements={}", "zz,".repeat(1_300_000)))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("too-costly"), "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = status_and_body(
        get_q(
            &s,
            "Patient",
            &t,
            &[("_elements", "gender,gender,name"), ("family", &list)],
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // If-None-Exist is bounded as well.
    let cond = vec!["family=x"; 100].join("&");
    let resp = s
        .post_json("Patient", &t, &json!({"resourceType": "Patient"}))
        .header("if-none-exist", cond)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    s.stop().await;
}

async fn total_is_omitted_beyond_its_cap(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.server.max_search_total = 3).await;
    let t = s.admin_token().await;
    let search = |q: &'static str| {
        let s = &s;
        let t = &t;
        async move {
            let (status, body) = status_and_body(s.get(q, t).send().await.unwrap()).await;
            assert_eq!(status, 200, "{q}: {body}");
            body
        }
    };
    for day in 1..=3 {
        s.create(
            &t,
            &json!({"resourceType": "Patient", "gender": "male",
            "birthDate": format!("1961-02-0{day}")}),
        )
        .await;
    }
    // At the cap: counted (in SQL, and by decrypting birth-date candidates).
    assert_eq!(search("Patient?gender=male").await["total"], 3);
    assert_eq!(search("Patient?birthdate=1961&_summary=count").await["total"], 3);
    s.create(
        &t,
        &json!({"resourceType": "Patient", "gender": "male", "birthDate": "1961-03-01"}),
    )
    .await;
    // Beyond: no `total` (accurate is the default), the page itself is complete.
    let body = search("Patient?gender=male").await;
    assert!(body.get("total").is_none(), "{body}");
    assert_eq!(match_ids(&body).len(), 4);
    let body = search("Patient?birthdate=1961-02&_total=accurate").await;
    assert!(body.get("total").is_none(), "4 candidates of 1961: {body}");
    assert_eq!(match_ids(&body).len(), 3);
    assert!(
        search("Patient?gender=male&_summary=count")
            .await
            .get("total")
            .is_none()
    );
    s.stop().await;
}

/// Issue 9 item 6: `ward serve` refuses a data directory or database files that group or
/// others can access; the files Ward creates are private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_data_open_to_others() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deploy");
    ward::init::init(&ward::init::InitOptions {
        dir: dir.clone(),
        listen: Some("127.0.0.1:0".into()),
        store_url: None,
    })
    .await
    .unwrap();
    let config = ward_server::Config::load(Some(&dir), None).unwrap();
    let dir = config.dir.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    ward_server::start(config.clone(), Some(listener))
        .await
        .unwrap()
        .shutdown()
        .await;
    for name in ["ward.db", "audit.db"] {
        let mode = std::fs::metadata(dir.join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is created private");
    }
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let start = || async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ward_server::start(config.clone(), Some(listener)).await
    };
    for (path, open, private) in [
        (dir.clone(), 0o755, 0o700),
        (dir.clone(), 0o710, 0o700),
        (dir.join("ward.db"), 0o644, 0o600),
        (dir.join("audit.db"), 0o640, 0o600),
    ] {
        chmod(&path, open);
        let err = start().await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("insecure permissions"), "{}: {err}", path.display());
        chmod(&path, private);
    }
    let wal = dir.join("ward.db-wal");
    std::fs::write(&wal, b"").unwrap();
    chmod(&wal, 0o604);
    assert!(start().await.is_err(), "a readable WAL file is refused too");
    std::fs::remove_file(&wal).unwrap();
    let server = start().await.expect("private again: starts");
    server.shutdown().await;
}
