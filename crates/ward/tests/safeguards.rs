//! Input validation, transmission security, headers, error hygiene and encryption at rest
//! (SPEC SEC-1, SEC-3, SEC-4, TS-1, TS-2, EN-1, EN-4).

mod common;

use std::process::{Command, Stdio};

use common::{Backend, TestServer, distinctive_patient};
use serde_json::{Value, json};

on_both_backends!(
    invalid_input_is_refused_and_nothing_stored,
    security_headers_everywhere,
    no_plaintext_phi_at_rest
);

async fn expect_outcome(resp: reqwest::Response, status: u16, path: Option<&str>) -> Value {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+json")
    );
    let oo: Value = resp.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
    if let Some(path) = path {
        let expr = oo["issue"][0]["expression"][0].as_str().unwrap_or("");
        assert_eq!(expr, path, "{oo}");
    }
    oo
}

async fn invalid_input_is_refused_and_nothing_stored(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let post_raw = |body: &str, ct: &str| {
        s.client
            .post(format!("{}/Patient", s.fhir))
            .bearer_auth(&t)
            .header("content-type", ct.to_owned())
            .body(body.to_owned())
    };
    let fhir = "application/fhir+json";

    let mut unknown = distinctive_patient("V1");
    unknown["favouriteColour"] = json!("blue");
    expect_outcome(
        s.post_json("Patient", &t, &unknown).send().await.unwrap(),
        400,
        Some("Patient.favouriteColour"),
    )
    .await;

    let mut wrong_type = distinctive_patient("V2");
    wrong_type["active"] = json!("yes");
    expect_outcome(
        s.post_json("Patient", &t, &wrong_type).send().await.unwrap(),
        400,
        Some("Patient.active"),
    )
    .await;

    let mut nested = distinctive_patient("V3");
    nested["name"][0]["given"] = json!([42]);
    expect_outcome(
        s.post_json("Patient", &t, &nested).send().await.unwrap(),
        400,
        Some("Patient.name[0].given[0]"),
    )
    .await;

    // control characters (a NUL would also poison PostgreSQL text columns downstream)
    let mut nul = distinctive_patient("V5");
    nul["name"][0]["family"] = json!("Zyx\u{0}warfield");
    expect_outcome(
        s.post_json("Patient", &t, &nul).send().await.unwrap(),
        400,
        Some("Patient.name[0].family"),
    )
    .await;
    let mut nul_ref = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    nul_ref["subject"] = json!({"reference": "Patient/\u{0}x"});
    assert_eq!(
        s.post_json("Observation", &t, &nul_ref)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    expect_outcome(
        s.post_json("Patient", &t, &obs).send().await.unwrap(),
        400,
        Some("resourceType"),
    )
    .await;

    expect_outcome(
        post_raw(r#"{"resourceType":"Patient","active":true,"active":false}"#, fhir)
            .send()
            .await
            .unwrap(),
        400,
        Some("Patient.active"),
    )
    .await;
    expect_outcome(
        post_raw(
            r#"{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}"#,
            fhir,
        )
        .send()
        .await
        .unwrap(),
        400,
        Some("Patient.name[0].family"),
    )
    .await;

    let deep = format!(
        r#"{{"resourceType":"Patient","extension":[{}{{"url":"x"}}{}]}}"#,
        r#"{"url":"x","extension":["#.repeat(100),
        "]}".repeat(100)
    );
    let resp = post_raw(&deep, fhir).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    let big = format!(
        r#"{{"resourceType":"Patient","text":{{"status":"generated","div":"<div>{}</div>"}}}}"#,
        "a".repeat(5 << 20)
    );
    expect_outcome(post_raw(&big, fhir).send().await.unwrap(), 413, None).await;

    expect_outcome(
        post_raw(r#"{"resourceType":"Patient"}"#, "application/xml")
            .send()
            .await
            .unwrap(),
        415,
        None,
    )
    .await;
    expect_outcome(
        post_raw(r#"{"resourceType":"Patient"}"#, "text/plain")
            .send()
            .await
            .unwrap(),
        415,
        None,
    )
    .await;
    // plain application/json is accepted
    assert_eq!(
        post_raw(r#"{"resourceType":"Patient","active":true}"#, "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    expect_outcome(post_raw("{not json", fhir).send().await.unwrap(), 400, None).await;
    expect_outcome(
        post_raw(r#"{"resourceType":"Patient"} trailing"#, fhir)
            .send()
            .await
            .unwrap(),
        400,
        None,
    )
    .await;

    // update: body id must match the URL, ids must be well-formed
    let created = s.create(&t, &distinctive_patient("V4")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let mut other_id = created.clone();
    other_id["id"] = json!("someone-else");
    expect_outcome(
        s.put_json(&format!("Patient/{id}"), &t, &other_id)
            .send()
            .await
            .unwrap(),
        400,
        Some("Patient.id"),
    )
    .await;
    let mut no_id = created.clone();
    no_id.as_object_mut().unwrap().remove("id");
    expect_outcome(
        s.put_json(&format!("Patient/{id}"), &t, &no_id)
            .send()
            .await
            .unwrap(),
        400,
        Some("Patient.id"),
    )
    .await;
    let bad_id = "a".repeat(65);
    expect_outcome(
        s.get(&format!("Patient/{bad_id}"), &t).send().await.unwrap(),
        400,
        None,
    )
    .await;
    expect_outcome(s.get("Patient/bad$id", &t).send().await.unwrap(), 400, None).await;

    // nothing but the two good creates was stored
    let hist: Value = s
        .get("Patient/_history", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hist["entry"].as_array().unwrap().len(), 2);
    let v: Value = s
        .get(&format!("Patient/{id}"), &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["meta"]["versionId"], "1");

    // error bodies carry no internals and no submitted values
    let oo = expect_outcome(
        s.post_json("Patient", &t, &unknown).send().await.unwrap(),
        400,
        None,
    )
    .await;
    let text = oo.to_string();
    for leak in [
        "blue",
        "Zyxwarfield",
        "SELECT",
        "sqlite",
        "postgres",
        "/tmp",
        ".rs:",
        "panicked",
    ] {
        assert!(!text.contains(leak), "error body leaks {leak}: {text}");
    }
    assert!(
        oo["extension"][0]["valueString"].is_string(),
        "request id in the outcome"
    );
    s.stop().await;
}

async fn security_headers_everywhere(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let requests = vec![
        s.client.get(format!("{}/metadata", s.fhir)),
        s.client.get(format!("{}/healthz", s.url)),
        s.client.get(format!("{}/readyz", s.url)),
        s.client.get(format!("{}/oauth2/jwks", s.url)),
        s.client
            .get(format!("{}/.well-known/openid-configuration", s.url)),
        s.client
            .get(format!("{}/.well-known/smart-configuration", s.fhir)),
        s.client.get(format!("{}/Patient/x", s.fhir)),
        s.get("Patient/_history", &t),
        s.get("Patient/missing", &t),
        s.client.get(format!("{}/no/such/route", s.url)),
        s.client
            .post(format!("{}/oauth2/token", s.url))
            .form(&[("grant_type", "client_credentials")]),
    ];
    for req in requests {
        let resp = req
            .header("x-request-id", "client-chosen-1234")
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        let url = resp.url().to_string();
        let hsts = h["strict-transport-security"].to_str().unwrap();
        let max_age: u64 = hsts
            .split(';')
            .next()
            .unwrap()
            .trim()
            .strip_prefix("max-age=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age >= 31_536_000, "{url}");
        assert_eq!(h["cache-control"], "no-store", "{url}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{url}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'"),
            "{url}"
        );
        assert_eq!(h["x-request-id"], "client-chosen-1234", "{url}");
    }
    // a malformed request id is replaced, not echoed
    let resp = s
        .client
        .get(format!("{}/healthz", s.url))
        .header("x-request-id", "bad id\twith junk")
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(rid).is_ok());
    s.stop().await;
}

async fn no_plaintext_phi_at_rest(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    for tag in ["P1", "P2", "P3"] {
        s.create(&t, &distinctive_patient(tag)).await;
    }
    let planted = [
        "Zyxwarfield",
        "zyxwarfield",
        "ZYXWARFIELD",
        "Quillonia",
        "quillonia",
        "MRNP177421",
        "555-01P1-8841",
        "1937-04-19",
        "19370419",
        "Marrowgate",
        "marrowgate",
        "Quabbleton",
        "quabbleton",
    ];
    let (dump, tables) = common::store_dump(&s).await;
    if s.backend == Backend::Postgres {
        assert!(tables.len() >= 3, "{tables:?}");
    }
    let hay = String::from_utf8_lossy(&dump).to_string();
    for needle in planted {
        assert!(
            !hay.contains(needle),
            "plaintext {needle} found at rest ({:?})",
            s.backend
        );
    }
    // control: the same scan finds a value we know is stored in clear (a resource type)
    assert!(hay.contains("Patient"));
    s.stop().await;
}

/// TS-1: run the system's OpenSSL client against the server.
fn openssl(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let connected = out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (connected, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_and_suites() {
    let s = TestServer::start(Backend::Sqlite).await;
    let port = s.port;
    let results = tokio::task::spawn_blocking(move || {
        [
            // controls: modern clients connect
            ("tls1.3", openssl(port, &["-tls1_3"])),
            ("tls1.2 ECDHE-GCM", openssl(port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"])),
            ("tls1.2 CHACHA", openssl(port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"])),
            // refused: old protocols, CBC suites, static RSA key exchange
            ("tls1.1", openssl(port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])),
            ("tls1.0", openssl(port, &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"])),
            (
                "tls1.2 CBC only",
                openssl(port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:AES128-SHA:AES256-SHA"]),
            ),
            ("tls1.2 static RSA GCM", openssl(port, &["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384"])),
        ]
    })
    .await
    .unwrap();
    for (name, (connected, text)) in &results {
        let expected = name.starts_with("tls1.3") || name.contains("ECDHE-GCM") || name.contains("CHACHA");
        assert_eq!(*connected, expected, "{name}: {text}");
    }
    // plain HTTP on the TLS port gets no HTTP answer
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_output_and_refusal_and_client_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let bin = env!("CARGO_BIN_EXE_ward");
    let out = Command::new(bin)
        .args(["init", "--dir"])
        .arg(&dir)
        .args(["--json", "--listen", "127.0.0.1:18443"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["fhir_base", "ca_cert", "admin_client_id", "admin_client_secret"] {
        assert!(v[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    assert_eq!(v["fhir_base"], "https://127.0.0.1:18443/fhir");
    let secret = v["admin_client_secret"].as_str().unwrap().to_owned();

    // modes of what init wrote
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("keys")), 0o700);
    for f in std::fs::read_dir(dir.join("keys")).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
    assert_eq!(mode(&dir.join("tls/server.key")), 0o600);

    // refuses to overwrite
    let again = Command::new(bin)
        .args(["init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // client create / list / disable
    let out = Command::new(bin)
        .args(["client", "create", "--dir"])
        .arg(&dir)
        .args([
            "--name",
            "lab",
            "--scopes",
            "system/Patient.rs system/Observation.cruds",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cid = c["client_id"].as_str().unwrap().to_owned();
    let csecret = c["client_secret"].as_str().unwrap().to_owned();
    let out = Command::new(bin)
        .args(["client", "list", "--json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(list.contains(&cid));
    assert!(
        !list.contains(&csecret) && !list.contains("argon2"),
        "list never shows secrets or hashes"
    );
    let out = Command::new(bin)
        .args(["client", "disable", "--dir"])
        .arg(&dir)
        .arg(&cid)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(bin)
        .args(["client", "list", "--json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == cid.as_str() && c["disabled"] == true)
    );

    // `WARD_<SECTION>_<KEY>` overrides the file (SPEC §1), in the upper case operators write,
    // and an unknown key is an error rather than silently ignored.
    let with_env = |key: &str, value: &str| {
        Command::new(bin)
            .args(["client", "list", "--json", "--dir"])
            .arg(&dir)
            .env(key, value)
            .output()
            .unwrap()
    };
    let out = with_env("WARD_SERVER_LISTEN", "not-an-address");
    assert!(!out.status.success(), "the override was not read");
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    let out = with_env("WARD_SERVER_LISTEN", "127.0.0.1:18444");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = with_env("WARD_AUDIT_NO_SUCH_KEY", "1");
    assert!(!out.status.success(), "unknown keys are an error");

    // secrets are stored only as keyed hashes
    let mut db = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("ward.db") {
            db.extend(std::fs::read(p).unwrap());
        }
    }
    let db = String::from_utf8_lossy(&db);
    assert!(!db.contains(&secret) && !db.contains(&csecret));
    assert!(db.contains("$ward-hmac-sha256$v1$"));

    // the server refuses to start when the key directory is readable by others
    std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(bin)
        .args(["serve", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::set_permissions(dir.join("keys"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let kek = dir.join("keys/kek.key");
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = Command::new(bin)
        .args(["serve", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kek.key"));
}
