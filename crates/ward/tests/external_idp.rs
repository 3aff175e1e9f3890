//! External identity providers (SPEC AC-3): tokens minted here with the test's own RSA and EC
//! keys, JWKS served from a file and over HTTPS, against a real server over real TLS. Every
//! rejection the issue lists has a case: each would pass if its check were removed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use common::{Backend, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ward_server::config::TrustedIssuerConfig;

const ISS_A: &str = "https://idp-a.test/realms/ward";
const ISS_B: &str = "https://idp-b.test";

/// A signing key of a test identity provider.
struct IdpKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key as PEM: what an attacker would use as an HMAC secret.
    public_pem: Vec<u8>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn rsa_key(kid: &str) -> IdpKey {
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8: Pkcs8V1Der = kp.as_der().unwrap();
    let private = pem("PRIVATE KEY", pkcs8.as_ref());
    let public = kp.public_key();
    let spki: aws_lc_rs::encoding::PublicKeyX509Der = public.as_der().unwrap();
    IdpKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64.encode(public.exponent().big_endian_without_leading_zero()),
        }),
        public_pem: pem("PUBLIC KEY", spki.as_ref()).into_bytes(),
    }
}

fn ec_key(kid: &str) -> IdpKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    IdpKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(&kp.serialize_der()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]),
        }),
        public_pem: kp.public_key_pem().into_bytes(),
    }
}

fn jwks(keys: &[&IdpKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sign_with(key: &IdpKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

fn sign(key: &IdpKey, claims: &Value) -> String {
    sign_with(key, key.alg, Some(&key.kid), claims)
}

fn issuer_config(issuer: &str, audience: &str, algorithms: &[&str]) -> TrustedIssuerConfig {
    TrustedIssuerConfig {
        issuer: issuer.into(),
        audience: audience.into(),
        jwks_file: None,
        jwks_uri: None,
        jwks_ca_file: None,
        jwks_refresh_secs: 60,
        algorithms: algorithms.iter().map(|a| a.to_string()).collect(),
        role_claim: "realm_access.roles".into(),
        roles: [("ward-service", "service"), ("ward-clinician", "clinician")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect(),
        fhir_user_claim: Some("fhirUser".into()),
        scope_claim: "scope".into(),
    }
}

/// A service token of `iss` for the server `s`: it may search Patients.
fn claims(iss: &str, s: &TestServer, sub: &str) -> Value {
    let now = now();
    json!({
        "iss": iss, "aud": s.fhir, "sub": sub, "azp": "partner-app",
        "iat": now, "nbf": now, "exp": now + 300, "jti": format!("j-{sub}"),
        "realm_access": { "roles": ["ward-service"] },
        "scope": "system/Patient.rs"
    })
}

async fn status(s: &TestServer, token: &str) -> u16 {
    s.status_of(&format!("{}/Patient?_count=1", s.fhir), Some(token))
        .await
}

struct Keys {
    a_ec: IdpKey,
    a_rsa: IdpKey,
    b_ec: IdpKey,
    b_rsa: IdpKey,
}

/// Issuer A (ES256 and RS256 allowed) and issuer B (ES256 only, though its JWKS also holds an
/// RSA key), both from JWKS files.
async fn server_with_file_issuers(backend: Backend) -> (TestServer, Keys) {
    let keys = Keys {
        a_ec: ec_key("a-ec"),
        a_rsa: rsa_key("a-rsa"),
        b_ec: ec_key("b-ec"),
        b_rsa: rsa_key("b-rsa"),
    };
    let (ja, jb) = (jwks(&[&keys.a_ec, &keys.a_rsa]), jwks(&[&keys.b_ec, &keys.b_rsa]));
    let s = TestServer::start_with(backend, |cfg| {
        std::fs::write(cfg.dir.join("idp-a.jwks"), ja.to_string()).unwrap();
        std::fs::write(cfg.dir.join("idp-b.jwks"), jb.to_string()).unwrap();
        let fhir = cfg.fhir_base();
        let mut a = issuer_config(ISS_A, &fhir, &["ES256", "RS256"]);
        a.jwks_file = Some("idp-a.jwks".into());
        let mut b = issuer_config(ISS_B, &fhir, &["ES256"]);
        b.jwks_file = Some("idp-b.jwks".into());
        cfg.auth.trusted_issuers = vec![a, b];
    })
    .await;
    (s, keys)
}

fn audit_url(s: &TestServer, agent: &str) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&format!("{}/AuditEvent", s.fhir)).unwrap();
    url.query_pairs_mut().append_pair("agent", agent);
    url
}

async fn external_tokens(backend: Backend) {
    let (s, k) = server_with_file_issuers(backend).await;
    let base = |sub: &str| claims(ISS_A, &s, sub);

    // Accepted: EC and RSA keys of A, B's own EC key, aud as an array.
    assert_eq!(status(&s, &sign(&k.a_ec, &base("alice"))).await, 200);
    assert_eq!(status(&s, &sign(&k.a_rsa, &base("alice"))).await, 200);
    let mut b = claims(ISS_B, &s, "bob");
    assert_eq!(status(&s, &sign(&k.b_ec, &b)).await, 200);
    let mut c = base("carol");
    c["aud"] = json!(["https://elsewhere.test", s.fhir]);
    assert_eq!(status(&s, &sign(&k.a_ec, &c)).await, 200);

    // Clock skew: within 60 s accepted, beyond refused.
    let n = now();
    let mut c = base("skew");
    c["exp"] = json!(n - 30);
    c["iat"] = json!(n - 300);
    c["nbf"] = json!(n - 300);
    assert_eq!(
        status(&s, &sign(&k.a_ec, &c)).await,
        200,
        "expired 30 s ago: within skew"
    );
    let mut c = base("skew");
    c["nbf"] = json!(n + 30);
    c["iat"] = json!(n + 30);
    assert_eq!(
        status(&s, &sign(&k.a_ec, &c)).await,
        200,
        "nbf 30 s ahead: within skew"
    );

    let refusals: Vec<(&str, String)> = vec![
        ("wrong iss (untrusted)", {
            let mut c = base("x");
            c["iss"] = json!("https://idp-c.test");
            sign(&k.a_ec, &c)
        }),
        ("iss of B signed by A", {
            let mut c = base("x");
            c["iss"] = json!(ISS_B);
            sign(&k.a_ec, &c)
        }),
        ("Ward's own issuer, A's key", {
            let mut c = base("x");
            c["iss"] = json!(s.url);
            sign(&k.a_ec, &c)
        }),
        ("wrong aud", {
            let mut c = base("x");
            c["aud"] = json!(s.url);
            sign(&k.a_ec, &c)
        }),
        ("aud array without it", {
            let mut c = base("x");
            c["aud"] = json!(["https://elsewhere.test"]);
            sign(&k.a_ec, &c)
        }),
        ("expired beyond skew", {
            let mut c = base("x");
            c["exp"] = json!(n - 120);
            c["iat"] = json!(n - 600);
            c["nbf"] = json!(n - 600);
            sign(&k.a_ec, &c)
        }),
        ("no exp", {
            let mut c = base("x");
            c.as_object_mut().unwrap().remove("exp");
            sign(&k.a_ec, &c)
        }),
        ("nbf in the future beyond skew", {
            let mut c = base("x");
            c["nbf"] = json!(n + 120);
            sign(&k.a_ec, &c)
        }),
        ("iat in the future beyond skew", {
            let mut c = base("x");
            c["iat"] = json!(n + 120);
            sign(&k.a_ec, &c)
        }),
        (
            "missing kid",
            sign_with(&k.a_ec, Algorithm::ES256, None, &base("x")),
        ),
        (
            "unknown kid",
            sign_with(&k.a_ec, Algorithm::ES256, Some("nope"), &base("x")),
        ),
        ("alg none", {
            let head = B64.encode(br#"{"alg":"none","typ":"JWT","kid":"a-ec"}"#);
            format!("{head}.{}.", B64.encode(base("x").to_string()))
        }),
        ("HS256 keyed with A's RSA public key", {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("a-rsa".into());
            jsonwebtoken::encode(&h, &base("x"), &EncodingKey::from_secret(&k.a_rsa.public_pem)).unwrap()
        }),
        ("HS256 keyed with A's EC public key", {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("a-ec".into());
            jsonwebtoken::encode(&h, &base("x"), &EncodingKey::from_secret(&k.a_ec.public_pem)).unwrap()
        }),
        ("RS256 at B, which allows only ES256", {
            b["sub"] = json!("x");
            sign(&k.b_rsa, &b)
        }),
        ("A's iss, B's key and kid", sign(&k.b_ec, &base("x"))),
        (
            "A's iss and kid, B's key",
            sign_with(&k.b_ec, Algorithm::ES256, Some("a-ec"), &base("x")),
        ),
        (
            "ES256 header on A's RSA key",
            sign_with(&k.a_ec, Algorithm::ES256, Some("a-rsa"), &base("x")),
        ),
        ("unmapped role", {
            let mut c = base("x");
            c["realm_access"]["roles"] = json!(["ward-admin", "offline_access"]);
            sign(&k.a_ec, &c)
        }),
        ("no role claim", {
            let mut c = base("x");
            c.as_object_mut().unwrap().remove("realm_access");
            sign(&k.a_ec, &c)
        }),
        ("tampered payload", {
            let t = sign(&k.a_ec, &base("x"));
            let parts: Vec<&str> = t.split('.').collect();
            let mut c = base("x");
            c["scope"] = json!("system/*.cruds");
            format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2])
        }),
    ];
    for (what, token) in &refusals {
        let resp = s
            .client
            .get(format!("{}/Patient?_count=1", s.fhir))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );
    }

    // Role mapping applied: a clinician holds no system/ scope, and user/ reaches nothing yet:
    // authenticated (not 401) but forbidden.
    let mut c = base("dr-who");
    c["realm_access"]["roles"] = json!(["ward-clinician"]);
    c["scope"] = json!("system/Patient.rs user/Patient.rs openid");
    assert_eq!(status(&s, &sign(&k.a_ec, &c)).await, 403);
    // Scopes are the token's, within the role: a service token without Patient scope is 403,
    // one asking for the audit trail through a wildcard gets nothing of it.
    let mut c = base("svc");
    c["scope"] = json!("system/Observation.rs");
    assert_eq!(status(&s, &sign(&k.a_ec, &c)).await, 403);
    let mut c = base("svc");
    c["scope"] = json!("system/*.rs system/AuditEvent.rs");
    let t = sign(&k.a_ec, &c);
    assert_eq!(status(&s, &t).await, 200);
    assert_eq!(
        s.status_of(&format!("{}/AuditEvent", s.fhir), Some(&t)).await,
        403,
        "the service role never reaches the audit trail"
    );
    // A granular scope is not honoured as its unrestricted form.
    let mut c = base("svc");
    c["scope"] = json!("system/Patient.rs?_tag=x");
    assert_eq!(status(&s, &sign(&k.a_ec, &c)).await, 403);

    // The audit trail names the issuer and the subject, namespaced.
    let admin = s.admin_token().await;
    let agent = format!("{ISS_A}#sub:alice");
    let resp = s
        .client
        .get(audit_url(&s, &agent))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bundle: Value = resp.json().await.unwrap();
    let text = bundle.to_string();
    assert!(bundle["entry"].as_array().is_some_and(|e| e.len() >= 2), "{text}");
    assert!(text.contains(&agent) && text.contains(&format!("{ISS_A}#client:partner-app")));
    assert!(text.contains("role:service"), "{text}");
    // An external subject equal to a Ward client id is still not that client.
    let mut c = base(&s.admin_id);
    c["azp"] = json!(s.admin_id);
    assert_eq!(status(&s, &sign(&k.a_ec, &c)).await, 200);
    let resp = s
        .client
        .get(audit_url(&s, &format!("{ISS_A}#sub:{}", s.admin_id)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains(&format!("{ISS_A}#client:{}", s.admin_id)), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_sqlite() {
    external_tokens(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_postgres() {
    external_tokens(Backend::Postgres).await;
}

/// A JWKS file that is missing or holds no usable key stops the start with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwks_file_stops_the_start() {
    for (content, says) in [
        (None, "cannot read"),
        (
            Some(json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]})),
            "no usable",
        ),
        (Some(json!({"not": "a jwks"})), "not a JWK Set"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deploy");
        ward::init::init(&ward::init::InitOptions {
            dir: dir.clone(),
            listen: Some("127.0.0.1:0".into()),
            store_url: None,
        })
        .await
        .unwrap();
        let mut config = ward_server::Config::load(Some(&dir), None).unwrap();
        if let Some(c) = &content {
            std::fs::write(dir.join("idp.jwks"), c.to_string()).unwrap();
        }
        let mut t = issuer_config(ISS_A, &config.fhir_base(), &["ES256"]);
        t.jwks_file = Some("idp.jwks".into());
        config.auth.trusted_issuers = vec![t];
        let err = match ward_server::start(config, None).await {
            Ok(_) => panic!("started with {content:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("auth.trusted_issuers[0]") && err.contains(says),
            "{err}"
        );
    }
}

/// A minimal HTTPS JWKS server with the deployment's own certificate, counting its reads.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<Value>>,
    /// Extra response headers and status line, when not a plain 200.
    status_line: Arc<Mutex<String>>,
    reads: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn bind(initial: Value) -> (JwksServer, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = JwksServer {
            port,
            body: Arc::new(Mutex::new(initial)),
            status_line: Arc::new(Mutex::new("HTTP/1.1 200 OK".into())),
            reads: Arc::new(AtomicUsize::new(0)),
        };
        (server, listener)
    }

    fn serve(&self, listener: tokio::net::TcpListener, cert: &std::path::Path, key: &std::path::Path) {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let (body, reads, status_line) = (self.body.clone(), self.reads.clone(), self.status_line.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, body, reads) = (acceptor.clone(), body.clone(), reads.clone());
                let status_line = status_line.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                    let json = body.lock().unwrap().to_string();
                    let resp = format!(
                        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                        json.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    }
}

/// `jwks_uri`: read over HTTPS when first needed, read again on an unknown `kid` (a key
/// rotation at the provider), at most once per `jwks_refresh_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uri_is_refreshed_on_an_unknown_kid_at_most_once_per_interval() {
    let k1 = ec_key("k1");
    let k2 = rsa_key("k2");
    let k3 = ec_key("k3");
    let (jwks_server, listener) = JwksServer::bind(jwks(&[&k1])).await;
    let port = jwks_server.port;
    let mut listener = Some(listener);
    let s = TestServer::start_with(Backend::Sqlite, |cfg| {
        let mut t = issuer_config(ISS_A, &cfg.fhir_base(), &["ES256", "RS256"]);
        t.jwks_uri = Some(format!("https://127.0.0.1:{port}/certs"));
        t.jwks_ca_file = Some(cfg.tls.ca.clone());
        t.jwks_refresh_secs = 2;
        cfg.auth.trusted_issuers = vec![t];
        jwks_server.serve(
            listener.take().unwrap(),
            &cfg.path(&cfg.tls.cert),
            &cfg.path(&cfg.tls.key),
        );
    })
    .await;
    let reads = || jwks_server.reads.load(Ordering::SeqCst);
    assert_eq!(reads(), 0, "read when first needed, not at start");
    let c = claims(ISS_A, &s, "alice");
    assert_eq!(status(&s, &sign(&k1, &c)).await, 200);
    assert_eq!(reads(), 1);
    assert_eq!(status(&s, &sign(&k1, &c)).await, 200);
    assert_eq!(reads(), 1, "cached");

    // The provider rotates in k2. Right after the last read, the unknown kid costs no read.
    *jwks_server.body.lock().unwrap() = jwks(&[&k1, &k2]);
    let t2 = sign(&k2, &c);
    assert_eq!(status(&s, &t2).await, 401);
    assert_eq!(reads(), 1, "within jwks_refresh_secs: no read");
    // Past the interval, the unknown kid reads the JWKS again and verifies.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status(&s, &t2).await, 200);
    assert_eq!(reads(), 2);
    // A kid the provider does not have: refused, and a flood of them costs no read.
    for _ in 0..10 {
        assert_eq!(status(&s, &sign(&k3, &c)).await, 401);
    }
    assert_eq!(reads(), 2);
    s.stop().await;
}

/// A JWKS server whose certificate the configured CA did not sign is never trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uri_with_an_untrusted_certificate_is_not_read() {
    let k1 = ec_key("k1");
    let (jwks_server, listener) = JwksServer::bind(jwks(&[&k1])).await;
    let port = jwks_server.port;
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.pem");
    let other_tls = ward::certs::generate("127.0.0.1").unwrap();
    std::fs::write(&other_ca, &other_tls.ca_pem).unwrap();
    let mut listener = Some(listener);
    let s = TestServer::start_with(Backend::Sqlite, |cfg| {
        let mut t = issuer_config(ISS_A, &cfg.fhir_base(), &["ES256"]);
        t.jwks_uri = Some(format!("https://127.0.0.1:{port}/certs"));
        t.jwks_ca_file = Some(other_ca.clone());
        cfg.auth.trusted_issuers = vec![t];
        jwks_server.serve(
            listener.take().unwrap(),
            &cfg.path(&cfg.tls.cert),
            &cfg.path(&cfg.tls.key),
        );
    })
    .await;
    let c = claims(ISS_A, &s, "alice");
    assert_eq!(status(&s, &sign(&k1, &c)).await, 401);
    assert_eq!(
        jwks_server.reads.load(Ordering::SeqCst),
        0,
        "no request got past the handshake"
    );
    s.stop().await;
}

/// A JWKS read is bounded: a document over 256 KiB and a redirect (even to the same, good
/// document) are refused, so the keys stay unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uri_reads_are_bounded_and_never_redirected() {
    let k1 = ec_key("k1");
    let mut big = jwks(&[&k1]);
    big["padding"] = json!("x".repeat(300 * 1024));
    let (jwks_server, listener) = JwksServer::bind(big).await;
    let port = jwks_server.port;
    let mut listener = Some(listener);
    let s = TestServer::start_with(Backend::Sqlite, |cfg| {
        let mut t = issuer_config(ISS_A, &cfg.fhir_base(), &["ES256"]);
        t.jwks_uri = Some(format!("https://127.0.0.1:{port}/certs"));
        t.jwks_ca_file = Some(cfg.tls.ca.clone());
        t.jwks_refresh_secs = 1;
        cfg.auth.trusted_issuers = vec![t];
        jwks_server.serve(
            listener.take().unwrap(),
            &cfg.path(&cfg.tls.cert),
            &cfg.path(&cfg.tls.key),
        );
    })
    .await;
    let t1 = sign(&k1, &claims(ISS_A, &s, "alice"));
    assert_eq!(status(&s, &t1).await, 401, "oversized JWKS");
    assert_eq!(jwks_server.reads.load(Ordering::SeqCst), 1);
    // A redirect carrying the good document in its body is not followed nor used.
    *jwks_server.body.lock().unwrap() = jwks(&[&k1]);
    *jwks_server.status_line.lock().unwrap() =
        format!("HTTP/1.1 302 Found\r\nlocation: https://127.0.0.1:{port}/other");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&s, &t1).await, 401, "redirect");
    assert_eq!(
        jwks_server.reads.load(Ordering::SeqCst),
        2,
        "no request to the redirect target"
    );
    // The same document served plainly works: the refusals above were the bounds.
    *jwks_server.status_line.lock().unwrap() = "HTTP/1.1 200 OK".into();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&s, &t1).await, 200);
    s.stop().await;
}
