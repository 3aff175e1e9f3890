//! The authorization-code flow in a real browser (SPEC UI-1): headless Debian Chromium driven
//! over WebDriver signs in with the one-time password `ward user create` printed, changes it,
//! enrolls TOTP (a privileged scope asks for it), approves, and the app side exchanges the
//! code with PKCE and calls `/fhir/metadata` and `userinfo`. A screenshot of each page is
//! saved under `<target>/e2e-screenshots/` for a person to look at.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NEW_PASSWORD: &str = "Purple-Lantern-Quartz-93";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e-screenshots")
}

/// The app's loopback redirect URI: answers every request and reports the `/cb` ones.
async fn redirect_listener() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let body = "<!doctype html><title>App</title><p>Signed in; the app has its code.</p>";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                if target.starts_with("/cb") {
                    let _ = tx.send(target);
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}/cb"), rx)
}

/// A confidential app (client secret) whose redirect URI is the loopback listener.
async fn app(s: &TestServer, redirect: &str) -> (String, String) {
    let store = ward::clients::open_store(&s.config).await.unwrap();
    let client_id = uuid::Uuid::new_v4().to_string();
    let secret = ward_auth::secret::generate_secret();
    let secret_hash = ward_auth::secret::hash_secret(&store, &client_id, &secret);
    store
        .insert_client(&ward_store::ClientRecord {
            client_id: client_id.clone(),
            name: "E2E Chart".into(),
            secret_hash,
            scopes: "user/*.rs openid fhirUser".into(),
            disabled: false,
            created_at: time::OffsetDateTime::now_utc(),
            redirect_uris: vec![redirect.into()],
            public: false,
            jwks: None,
            jwks_url: None,
        })
        .await
        .unwrap();
    store.close().await;
    (client_id, secret.to_string())
}

/// `ward user create` as an operator runs it: the one-time password comes from its output.
fn ward_user_create(s: &TestServer, username: &str) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["user", "create", "--username", username, "--role", "clinician"])
        .args(["--fhir-user", "Practitioner/e2e-1", "--json", "--dir"])
        .arg(&s.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["user_id"].as_str().unwrap().to_owned(),
        v["one_time_password"].as_str().unwrap().to_owned(),
    )
}

async fn sign_in_with_chromium(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.auth.privileged_scopes = vec!["user/*".into()]).await;
    let (redirect, mut redirected) = redirect_listener().await;
    let (client_id, client_secret) = app(&s, &redirect).await;
    let (user_id, one_time) = ward_user_create(&s, "erin");

    let verifier = ward_crypto::random_token(48);
    let challenge = URL_SAFE_NO_PAD.encode(ward_crypto::sha256(verifier.as_bytes()));
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("response_type", "code"),
        ("client_id", client_id.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("scope", "user/Observation.rs openid fhirUser"),
        ("state", "e2e-state"),
        ("aud", s.fhir.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("nonce", "e2e-nonce"),
    ] {
        q.append_pair(k, v);
    }
    let authorize = format!("{}/oauth2/authorize?{}", s.url, q.finish());

    let spki = webdriver::spki_sha256_b64(&s.dir.join("tls/server.pem"));
    let browser = webdriver::Driver::start().await.browser(&spki).await;
    let shots = screenshots().join(format!("{backend:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&shots);

    browser.goto(&authorize).await;
    assert!(
        browser.title_starts_with("Sign in").await,
        "{}",
        browser.source().await
    );
    browser.screenshot(&shots.join("1-login.png")).await;
    browser.fill("#username", "erin").await;
    browser.fill("#password", &one_time).await;
    browser.click("button[type=submit]").await;

    assert!(
        browser.title_starts_with("Change your password").await,
        "{}",
        browser.source().await
    );
    browser.screenshot(&shots.join("2-password-change.png")).await;
    browser.fill("#current", &one_time).await;
    browser.fill("#new", NEW_PASSWORD).await;
    browser.fill("#confirm", NEW_PASSWORD).await;
    browser.click("button[type=submit]").await;

    assert!(
        browser.title_starts_with("Set up your authenticator").await,
        "{}",
        browser.source().await
    );
    browser.screenshot(&shots.join("3-totp-enrollment.png")).await;
    let secret = browser.text("#totp-secret").await;
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret.trim().as_bytes())
        .unwrap();
    let code = ward_auth::totp::code(&secret, ward_auth::totp::step_at(s.config.clock.now())).unwrap();
    browser.fill("#code", code.expose()).await;
    browser.click("button[type=submit]").await;

    assert!(
        browser.title_starts_with("Recovery codes").await,
        "{}",
        browser.source().await
    );
    browser.screenshot(&shots.join("4-recovery-codes.png")).await;
    browser.click("a[href='/oauth2/authorize/continue']").await;

    assert!(
        browser.title_starts_with("Allow access?").await,
        "{}",
        browser.source().await
    );
    browser.screenshot(&shots.join("5-consent.png")).await;
    browser.click("button[type=submit]").await;

    let target = tokio::time::timeout(std::time::Duration::from_secs(20), redirected.recv())
        .await
        .expect("the browser reached the app")
        .unwrap();
    browser.screenshot(&shots.join("6-back-at-the-app.png")).await;
    assert!(browser.url().await.starts_with(&redirect));
    browser.quit().await;
    let params: Vec<(String, String)> = form_urlencoded::parse(target.split_once('?').unwrap().1.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("state").as_deref(), Some("e2e-state"));
    let code = get("code").expect("a code");

    // The app exchanges the code with its PKCE verifier and its secret.
    let resp = s
        .client
        .post(format!("{}/oauth2/token", s.url))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(tokens["id_token"].is_string());

    let metadata = s
        .client
        .get(format!("{}/metadata", s.fhir))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 200);
    let info: Value = s
        .client
        .get(format!("{}/oauth2/userinfo", s.url))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], user_id.as_str());
    assert_eq!(
        info["fhirUser"],
        format!("{}/Practitioner/e2e-1", s.fhir).as_str()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_chromium_sqlite() {
    sign_in_with_chromium(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_chromium_postgres() {
    sign_in_with_chromium(Backend::Postgres).await;
}
