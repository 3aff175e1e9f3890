//! Clients with keys (SMART Backend Services `private_key_jwt`), signing-key rotation,
//! discovery, and prompt revocation across processes and nodes (SPEC AC-2, AC-6, SEC-5).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    RSA_PKCS1_SHA384,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Backend, Proc, TestServer};
use serde_json::{Value, json};

on_both_backends!(
    private_key_jwt_refusals,
    public_and_keyed_clients_have_no_secret,
    revoked_token_id_and_subject_are_refused
);

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A client key pair made by the test, as a client would hold it.
enum TestKey {
    Ec(EcdsaKeyPair, &'static str, &'static str),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

struct ClientKey {
    kid: String,
    key: TestKey,
}

impl ClientKey {
    fn es384(kid: &str) -> ClientKey {
        let alg = &ECDSA_P384_SHA384_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).unwrap();
        ClientKey {
            kid: kid.into(),
            key: TestKey::Ec(pair, "P-384", "ES384"),
        }
    }

    fn es256(kid: &str) -> ClientKey {
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).unwrap();
        ClientKey {
            kid: kid.into(),
            key: TestKey::Ec(pair, "P-256", "ES256"),
        }
    }

    fn rs384(kid: &str) -> ClientKey {
        ClientKey {
            kid: kid.into(),
            key: TestKey::Rsa(aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap()),
        }
    }

    fn alg(&self) -> &'static str {
        match &self.key {
            TestKey::Ec(_, _, alg) => alg,
            TestKey::Rsa(_) => "RS384",
        }
    }

    fn public_jwk(&self) -> Value {
        match &self.key {
            TestKey::Ec(pair, crv, alg) => {
                let p = pair.public_key().as_ref();
                let n = (p.len() - 1) / 2;
                json!({"kty": "EC", "crv": crv, "x": B64.encode(&p[1..1 + n]), "y": B64.encode(&p[1 + n..]),
                       "kid": self.kid, "alg": alg, "use": "sig"})
            }
            TestKey::Rsa(pair) => {
                let p = pair.public_key();
                json!({"kty": "RSA", "n": B64.encode(p.modulus().big_endian_without_leading_zero()),
                       "e": B64.encode(p.exponent().big_endian_without_leading_zero()),
                       "kid": self.kid, "alg": "RS384"})
            }
        }
    }

    /// The public key as raw bytes (what an attacker would use as an HMAC secret).
    fn public_bytes(&self) -> Vec<u8> {
        match &self.key {
            TestKey::Ec(pair, _, _) => pair.public_key().as_ref().to_vec(),
            TestKey::Rsa(pair) => pair.public_key().as_ref().to_vec(),
        }
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(header).unwrap()),
            B64.encode(serde_json::to_vec(claims).unwrap())
        );
        let sig = match &self.key {
            TestKey::Ec(pair, _, _) => pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            TestKey::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA384,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
        };
        format!("{input}.{}", B64.encode(sig))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}), claims)
    }
}

fn jwks_of(keys: &[&ClientKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

fn claims(client_id: &str, token_url: &str) -> Value {
    json!({
        "iss": client_id, "sub": client_id, "aud": token_url,
        "exp": now() + 240, "iat": now(), "jti": uuid::Uuid::new_v4().to_string(),
    })
}

async fn keyed_client(s: &TestServer, keys: &[&ClientKey]) -> String {
    let file = s.dir.join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, jwks_of(keys).to_string()).unwrap();
    let c = ward::clients::create(
        &s.config,
        ward::clients::NewClient {
            name: "backend".into(),
            scopes: "system/Patient.rs".into(),
            jwks_file: Some(file),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(c.client_secret.is_empty(), "a keyed client gets no secret");
    assert_eq!(c.token_endpoint_auth_method, "private_key_jwt");
    c.client_id
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn assertion_request(
    client: &reqwest::Client,
    url: &str,
    kind: &str,
    jwt: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = client
        .post(format!("{url}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/Patient.rs"),
            ("client_assertion_type", kind),
            ("client_assertion", jwt),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

fn assert_no_store(h: &reqwest::header::HeaderMap) {
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["pragma"], "no-cache");
}

async fn private_key_jwt_refusals(backend: Backend) {
    // Many refusals from one address: keep the rate limits out of the way.
    let s = TestServer::start_with(backend, |c| {
        c.server.token_requests_per_minute_per_client = 10_000;
        c.server.token_requests_per_minute_per_ip = 10_000;
        c.server.token_burst = 1000;
    })
    .await;
    let token_url = format!("{}/oauth2/token", s.url);
    let ec = ClientKey::es384("ec-1");
    let rsa = ClientKey::rs384("rsa-1");
    let id = keyed_client(&s, &[&ec, &rsa]).await;
    let other_key = ClientKey::es384("other-1");
    let other = keyed_client(&s, &[&other_key]).await;
    let send = |kind: &'static str, jwt: String| {
        let client = s.client.clone();
        let url = s.url.clone();
        async move { assertion_request(&client, &url, kind, &jwt).await }
    };

    // Both key types work; the token reaches data; headers forbid caching.
    for key in [&ec, &rsa] {
        let (status, body, headers) = send(JWT_BEARER, key.sign(&claims(&id, &token_url))).await;
        assert_eq!(status, 200, "{} assertion: {body}", key.alg());
        assert_no_store(&headers);
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(s.get("Patient", token).send().await.unwrap().status(), 200);
    }

    // A replayed assertion (same jti) is refused, even a second later.
    let once = ec.sign(&claims(&id, &token_url));
    assert_eq!(send(JWT_BEARER, once.clone()).await.0, 200);
    let (status, body, headers) = send(JWT_BEARER, once).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed jti"
    );
    assert_no_store(&headers);
    // The same jti in a fresh assertion is a replay too.
    let mut c = claims(&id, &token_url);
    assert_eq!(send(JWT_BEARER, ec.sign(&c)).await.0, 200);
    c["exp"] = json!(now() + 200);
    assert_eq!(
        send(JWT_BEARER, ec.sign(&c)).await.0,
        401,
        "jti reused with another exp"
    );

    // Wrong assertion type: 400 invalid_request.
    let (status, body, headers) = send(
        "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
        ec.sign(&claims(&id, &token_url)),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
    assert_no_store(&headers);

    let refused = |what: &'static str, jwt: String| async move {
        let (status, body, _) = send(JWT_BEARER, jwt).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}"
        );
    };
    let mut c = claims(&id, &token_url);
    c["aud"] = json!(format!("{}/fhir", s.url));
    refused("wrong aud", ec.sign(&c)).await;
    let mut c = claims(&id, &token_url);
    c["sub"] = json!(other);
    refused("iss != sub", ec.sign(&c)).await;
    let mut c = claims(&id, &token_url);
    c["exp"] = json!(now() + 600);
    refused("exp more than 5 minutes ahead", ec.sign(&c)).await;
    let mut c = claims(&id, &token_url);
    c["exp"] = json!(now() - 120);
    refused("expired", ec.sign(&c)).await;
    let mut c = claims(&id, &token_url);
    c.as_object_mut().unwrap().remove("jti");
    refused("no jti", ec.sign(&c)).await;
    // alg none, and HS256 keyed with the client's public key.
    let c = claims(&id, &token_url);
    let unsigned = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "kid": "ec-1"}).to_string()),
        B64.encode(c.to_string())
    );
    refused("alg none", unsigned).await;
    for (kid, key) in [("ec-1", &ec), ("rsa-1", &rsa)] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.into());
        let hs = jsonwebtoken::encode(
            &h,
            &claims(&id, &token_url),
            &jsonwebtoken::EncodingKey::from_secret(&key.public_bytes()),
        )
        .unwrap();
        refused("HS256 with the public key as secret", hs).await;
        let jwk = key.public_jwk().to_string();
        let hs = jsonwebtoken::encode(
            &h,
            &claims(&id, &token_url),
            &jsonwebtoken::EncodingKey::from_secret(jwk.as_bytes()),
        )
        .unwrap();
        refused("HS256 with the JWK text as secret", hs).await;
    }
    // An algorithm the key type does not allow: RS256-shaped header on the EC key.
    refused(
        "alg not pinned to the key",
        ec.sign_with_header(&json!({"alg": "ES256", "kid": "ec-1"}), &claims(&id, &token_url)),
    )
    .await;
    // Unknown kid; a key of another client (its kid, or presented under this client's kid).
    let stranger = ClientKey::es384("nobody");
    refused("unknown kid", stranger.sign(&claims(&id, &token_url))).await;
    refused("another client's key", other_key.sign(&claims(&id, &token_url))).await;
    let impostor = ClientKey::es384("ec-1");
    refused(
        "a foreign key under a known kid",
        impostor.sign(&claims(&id, &token_url)),
    )
    .await;
    // A signature tampered after the fact.
    let good = ec.sign(&claims(&id, &token_url));
    let (head, _) = good.rsplit_once('.').unwrap();
    let mut c = claims(&id, &token_url);
    c["scope"] = json!("system/*.cruds");
    let forged = format!(
        "{}.{}.{}",
        head.split('.').next().unwrap(),
        B64.encode(c.to_string()),
        good.rsplit_once('.').unwrap().1
    );
    refused("payload swapped under a signature", forged).await;
    // A disabled client's assertions stop working.
    ward::clients::disable(&s.config, &other).await.unwrap();
    refused("disabled client", other_key.sign(&claims(&other, &token_url))).await;
    // A secret-style request for a keyed client fails like an unknown one.
    let resp = s
        .client
        .post(&token_url)
        .basic_auth(&id, Some(""))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    s.stop().await;
}

async fn public_and_keyed_clients_have_no_secret(backend: Backend) {
    let s = TestServer::start(backend).await;
    let c = ward::clients::create(
        &s.config,
        ward::clients::NewClient {
            name: "spa".into(),
            scopes: "patient/Patient.rs".into(),
            redirect_uris: vec!["https://app.example/cb".into(), "http://127.0.0.1:5000/cb".into()],
            public: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(c.client_secret.is_empty());
    let stored = ward::clients::open_store(&s.config)
        .await
        .unwrap()
        .get_client(&c.client_id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.public && stored.secret_hash.is_empty());
    assert_eq!(stored.redirect_uris.len(), 2);
    // A public client cannot use client_credentials, with or without a secret.
    for secret in ["", "x"] {
        let resp = s
            .client
            .post(format!("{}/oauth2/token", s.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", c.client_id.as_str()),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    s.stop().await;
}

/// Registration refuses bad redirect URIs and JWK Sets (CLI, as an operator runs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Proc::init(tmp.path());
    let create = |extra: &[&str]| {
        let mut args = vec![
            "client",
            "create",
            "--json",
            "--name",
            "x",
            "--scopes",
            "system/Patient.rs",
        ];
        args.extend_from_slice(extra);
        p.ward(&args)
    };
    for bad in [
        "http://app.example/cb",
        "https://app.example/cb#x",
        "/cb",
        "https://u:p@app.example/cb",
    ] {
        let out = create(&["--redirect-uri", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("redirect"), "{bad}");
    }
    let ok = create(&["--redirect-uri", "http://[::1]:8080/cb", "--public"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(v.get("client_secret").is_none(), "a public client has no secret");
    assert_eq!(v["public"], true);

    let ec = ClientKey::es384("k");
    let mut private = ec.public_jwk();
    private["d"] = json!(B64.encode([7u8; 48]));
    let mut weak_rsa = ClientKey::rs384("r").public_jwk();
    weak_rsa["n"] = json!(B64.encode([0xffu8; 128]));
    let mut hs = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
    hs["alg"] = json!("HS256");
    let mut es_alg_mismatch = ec.public_jwk();
    es_alg_mismatch["alg"] = json!("ES256");
    let mut no_kid = ec.public_jwk();
    no_kid.as_object_mut().unwrap().remove("kid");
    for (what, jwks) in [
        ("private key", json!({"keys": [private]})),
        ("1024-bit RSA", json!({"keys": [weak_rsa]})),
        ("symmetric key", json!({"keys": [hs]})),
        ("alg not fitting the curve", json!({"keys": [es_alg_mismatch]})),
        ("no kid", json!({"keys": [no_kid]})),
        (
            "duplicate kid",
            json!({"keys": [ec.public_jwk(), ec.public_jwk()]}),
        ),
        ("no keys", json!({"keys": []})),
    ] {
        let file = tmp.path().join("jwks.json");
        std::fs::write(&file, jwks.to_string()).unwrap();
        let out = create(&["--jwks", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{what} accepted");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("c2VjcmV0"),
            "no key material in errors"
        );
    }
    let out = create(&["--jwks-url", "http://keys.example/jwks.json"]);
    assert!(!out.status.success(), "http jwks url accepted");
    let out = create(&["--jwks-url", "https://keys.example/jwks.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["token_endpoint_auth_method"], "private_key_jwt");
    let file = tmp.path().join("jwks.json");
    std::fs::write(
        &file,
        jwks_of(&[&ec, &ClientKey::rs384("r"), &ClientKey::es256("e")]).to_string(),
    )
    .unwrap();
    let out = create(&["--jwks", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&p.ward(&["client", "list", "--json"]).stdout).unwrap();
    let methods: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["token_endpoint_auth_method"].as_str().unwrap())
        .collect();
    for m in ["none", "private_key_jwt", "client_secret"] {
        assert!(methods.contains(&m), "{methods:?}");
    }
    assert!(!String::from_utf8_lossy(&p.ward(&["client", "list", "--json"]).stdout).contains("\"kty\""));
}

fn ward_ok(p: &Proc, args: &[&str]) -> Value {
    let out = p.ward(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn write_jwks(dir: &Path, key: &ClientKey) -> String {
    let file = dir.join(format!("jwks-{}.json", key.kid));
    std::fs::write(&file, jwks_of(&[key]).to_string()).unwrap();
    file.to_str().unwrap().to_owned()
}

/// A `jti` stays spent across a restart (the replay cache is in the store), on both backends.
async fn replay_cache_survives_restart(store_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::init_with(tmp.path(), store_url.as_deref());
    let key = ClientKey::es384("restart-1");
    let jwks = write_jwks(tmp.path(), &key);
    let id = ward_ok(
        &p,
        &[
            "client",
            "create",
            "--json",
            "--name",
            "b",
            "--scopes",
            "system/Patient.rs",
            "--jwks",
            &jwks,
        ],
    )["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.start().await;
    let jwt = key.sign(&claims(&id, &format!("{}/oauth2/token", p.url)));
    assert_eq!(
        assertion_request(&p.client, &p.url, JWT_BEARER, &jwt).await.0,
        200
    );
    p.terminate();
    p.start().await;
    let (status, body, _) = assertion_request(&p.client, &p.url, JWT_BEARER, &jwt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replay after restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cache_survives_restart_sqlite() {
    replay_cache_survives_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_cache_survives_restart_postgres() {
    replay_cache_survives_restart(Some(ward_store::testing::fresh_postgres_url().await)).await;
}

fn kid_of(token: &str) -> String {
    let header: Value =
        serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// Rotation: tokens under the old kid keep working after a restart, new ones carry the new
/// kid, the JWKS lists both (and the RS256 id_token key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::init(tmp.path());
    p.start().await;
    let old = p.token().await;
    let old_kid = kid_of(&old);
    let rotated = ward_ok(&p, &["keys", "rotate-signing", "--json"]);
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let file = p.dir.join("keys").join("jwt-es256-0001.p8");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    p.terminate();
    p.start().await;
    assert_eq!(
        p.get_fhir("Patient", &old).send().await.unwrap().status(),
        200,
        "old kid verifies"
    );
    let new = p.token().await;
    assert_eq!(kid_of(&new), new_kid, "new tokens use the new key");
    assert_eq!(p.get_fhir("Patient", &new).send().await.unwrap().status(), 200);
    let jwks: Value = p
        .client
        .get(format!("{}/oauth2/jwks", p.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<(&str, &str)> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["alg"].as_str().unwrap()))
        .collect();
    assert!(kids.contains(&(old_kid.as_str(), "ES256")), "{kids:?}");
    assert!(kids.contains(&(new_kid.as_str(), "ES256")), "{kids:?}");
    assert!(kids.iter().any(|(_, alg)| *alg == "RS256"), "{kids:?}");
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("d").is_none())
    );
    // The rotation is audited.
    let out = p.ward(&["audit", "export", "--format", "ndjson"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("keys-rotate-signing"));
}

/// Discovery documents and the CapabilityStatement advertise the endpoints and methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents() {
    let s = TestServer::start(Backend::Sqlite).await;
    let get = |path: String| {
        let client = s.client.clone();
        async move {
            let resp = client.get(path).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let oidc = get(format!("{}/.well-known/openid-configuration", s.url)).await;
    let smart = get(format!("{}/.well-known/smart-configuration", s.fhir)).await;
    let base = &s.url;
    for doc in [&oidc, &smart] {
        assert_eq!(doc["issuer"], base.as_str());
        assert_eq!(doc["token_endpoint"], format!("{base}/oauth2/token"));
        assert_eq!(doc["authorization_endpoint"], format!("{base}/oauth2/authorize"));
        assert_eq!(doc["jwks_uri"], format!("{base}/oauth2/jwks"));
        assert_eq!(doc["introspection_endpoint"], format!("{base}/oauth2/introspect"));
        assert_eq!(doc["revocation_endpoint"], format!("{base}/oauth2/revoke"));
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        let has = |field: &str, v: &str| doc[field].as_array().unwrap().iter().any(|x| x == v);
        assert!(has("token_endpoint_auth_methods_supported", "private_key_jwt"));
        assert!(has("token_endpoint_auth_signing_alg_values_supported", "ES384"));
        assert!(has("token_endpoint_auth_signing_alg_values_supported", "RS384"));
        assert!(has("id_token_signing_alg_values_supported", "RS256"));
        assert!(has("grant_types_supported", "client_credentials"));
        assert!(has("scopes_supported", "openid"));
        assert!(!has("token_endpoint_auth_signing_alg_values_supported", "none"));
        assert!(!has("token_endpoint_auth_signing_alg_values_supported", "HS256"));
    }
    let caps = smart["capabilities"].as_array().unwrap();
    for c in [
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
        "client-public",
        "permission-v2",
    ] {
        assert!(caps.iter().any(|x| x == c), "{c}");
    }
    let cap = get(format!("{}/metadata", s.fhir)).await;
    let ext = cap["rest"][0]["security"]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
        .unwrap()
        .clone();
    let uri = |name: &str| {
        ext["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == name)
            .map(|e| e["valueUri"].as_str().unwrap().to_owned())
    };
    assert_eq!(uri("authorize"), Some(format!("{base}/oauth2/authorize")));
    assert_eq!(uri("token"), Some(format!("{base}/oauth2/token")));
    assert_eq!(uri("introspect"), Some(format!("{base}/oauth2/introspect")));
    assert_eq!(uri("revoke"), Some(format!("{base}/oauth2/revoke")));
    s.stop().await;
}

/// Polls `f` until it returns true or `limit` passes; the elapsed time when it did.
async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// `ward client disable` (another process) stops a live token within a second (SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_revokes_within_a_second_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = Proc::init(tmp.path());
    let created = ward_ok(
        &p,
        &[
            "client",
            "create",
            "--json",
            "--name",
            "c",
            "--scopes",
            "system/Patient.rs",
        ],
    );
    let (id, secret) = (
        created["client_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    );
    p.start().await;
    p.admin = (id.clone(), secret);
    let t = p.token().await;
    assert_eq!(p.get_fhir("Patient", &t).send().await.unwrap().status(), 200);
    ward_ok(&p, &["client", "disable", "--json", &id]);
    let took = within(Duration::from_millis(1200), async || {
        p.get_fhir("Patient", &t).send().await.unwrap().status() == 401
    })
    .await;
    assert!(
        took.is_some(),
        "the token still worked 1.2 s after ward client disable"
    );
    eprintln!("refused {:?} after ward client disable returned", took.unwrap());
}

/// Two `ward serve` nodes on one PostgreSQL: a token of A works on B; disabling its client
/// (A's CLI) makes B refuse it within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_revokes_on_another_node_postgres() {
    let url = ward_store::testing::fresh_postgres_url().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Proc::init_with(tmp.path(), Some(&url));
    let created = ward_ok(
        &a,
        &[
            "client",
            "create",
            "--json",
            "--name",
            "c",
            "--scopes",
            "system/Patient.rs",
        ],
    );
    let id = created["client_id"].as_str().unwrap().to_owned();
    a.admin = (id.clone(), created["client_secret"].as_str().unwrap().to_owned());
    a.start().await;
    // Node B: the same deployment (keys, store, public URL), its own port and audit chain.
    let b_port = common::free_port();
    let mut b = Proc {
        dir: a.dir.clone(),
        child: None,
        url: format!("https://127.0.0.1:{b_port}"),
        client: a.client.clone(),
        admin: a.admin.clone(),
        log: tmp.path().join("ward-b.log"),
        port: b_port,
        env: vec![
            ("WARD_SERVER_LISTEN".into(), format!("127.0.0.1:{b_port}")),
            ("WARD_AUDIT_NODE".into(), "node-b".into()),
        ],
    };
    b.start().await;
    let t = a.token().await;
    assert_eq!(
        b.get_fhir("Patient", &t).send().await.unwrap().status(),
        200,
        "A's token works on B"
    );
    ward_ok(&a, &["client", "disable", "--json", &id]);
    let took = within(Duration::from_millis(1200), async || {
        b.get_fhir("Patient", &t).send().await.unwrap().status() == 401
    })
    .await;
    assert!(
        took.is_some(),
        "node B still accepted the token 1.2 s after the disable"
    );
    eprintln!(
        "node B refused {:?} after ward client disable returned",
        took.unwrap()
    );
    let on_a = within(Duration::from_millis(1200), async || {
        a.get_fhir("Patient", &t).send().await.unwrap().status() == 401
    })
    .await;
    assert!(on_a.is_some(), "node A still accepted the token");
}

/// `Store::revoke` by token id and by subject: the server refuses the token within a second
/// (the store call stands for another node's or the CLI's revocation).
async fn revoked_token_id_and_subject_are_refused(backend: Backend) {
    use ward_store::RevokedKind;
    let s = TestServer::start(backend).await;
    let (id, secret) = s.new_client("system/Patient.rs").await;
    let t1 = s.token_for(&id, &secret, None).await;
    let t2 = s.token_for(&id, &secret, None).await;
    let jti = |t: &str| -> String {
        let claims: Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        claims["jti"].as_str().unwrap().to_owned()
    };
    let store = ward::clients::open_store(&s.config).await.unwrap();
    store.revoke(RevokedKind::TokenId, &jti(&t1)).await.unwrap();
    let refused = within(Duration::from_millis(1200), async || {
        s.get("Patient", &t1).send().await.unwrap().status() == 401
    })
    .await;
    assert!(refused.is_some(), "revoked jti still accepted");
    assert_eq!(
        s.get("Patient", &t2).send().await.unwrap().status(),
        200,
        "another token of the client"
    );
    store.revoke(RevokedKind::Subject, &id).await.unwrap();
    let refused = within(Duration::from_millis(1200), async || {
        s.get("Patient", &t2).send().await.unwrap().status() == 401
    })
    .await;
    assert!(refused.is_some(), "revoked subject still accepted");
    store.close().await;
    s.stop().await;
}
