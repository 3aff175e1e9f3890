//! Authentication and authorization from the attacker's side (SPEC AC-1, AC-2, AC-4).

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Backend, TestServer, distinctive_patient};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

on_both_backends!(
    token_endpoint,
    bearer_token_attacks,
    scopes_are_enforced,
    disabled_client_loses_access
);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn decode_part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

async fn token_endpoint(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (id, secret) = s.new_client("system/Patient.rs system/Observation.cruds").await;
    let token_url = format!("{}/oauth2/token", s.url);

    // client_secret_basic
    let resp = s
        .client
        .post(&token_url)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() <= 900);
    let token = body["access_token"].as_str().unwrap();
    let header = decode_part(token, 0);
    let claims = decode_part(token, 1);
    assert_eq!(header["alg"], "ES256");
    let kid = header["kid"].as_str().unwrap();
    for claim in ["iss", "aud", "sub", "exp", "iat", "jti", "scope"] {
        assert!(claims.get(claim).is_some(), "claim {claim}");
    }
    assert_eq!(claims["aud"], s.fhir.as_str());
    assert_eq!(claims["iss"], s.url.as_str());
    assert_eq!(claims["sub"], id.as_str());
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() <= 900);
    assert_eq!(claims["scope"], "system/Patient.rs system/Observation.cruds");

    // the JWKS publishes that kid
    let jwks: Value = s
        .client
        .get(format!("{}/oauth2/jwks", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid && k.get("d").is_none())
    );

    // client_secret_post, with a narrower scope: the intersection is granted
    let resp = s
        .client
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "system/Patient.cruds system/Condition.r"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["scope"], "system/Patient.rs");

    // nothing grantable
    let resp = s
        .client
        .post(&token_url)
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "system/Condition.r"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_scope");

    // unknown client and wrong secret look identical
    let wrong = s
        .client
        .post(&token_url)
        .basic_auth(&id, Some("not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let unknown = s
        .client
        .post(&token_url)
        .basic_auth("no-such-client", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let (wrong, unknown): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_client");

    // other grants are refused
    let resp = s
        .client
        .post(&token_url)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "password"), ("username", "x"), ("password", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    s.stop().await;
}

async fn bearer_token_attacks(backend: Backend) {
    let s = TestServer::start(backend).await;
    let good = s.admin_token().await;
    let p = s.create(&good, &distinctive_patient("AT")).await;
    let path = format!("Patient/{}", p["id"].as_str().unwrap());
    assert_eq!(s.get(&path, &good).send().await.unwrap().status(), 200);

    // no token
    let resp = s.client.get(format!("{}/{path}", s.fhir)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");

    let key = ward_crypto::keyfiles::load_signing_key(&s.dir.join("keys")).unwrap();
    let kid = key.kid();
    let enc = EncodingKey::from_ec_der(key.pkcs8_der());
    let claims = decode_part(&good, 1);
    let sign = |claims: &Value, alg: Algorithm, kid: Option<&str>, key: &EncodingKey| {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, key).unwrap()
    };
    // control: a token we forge with the real key and honest claims is accepted, so the
    // refusals below are about the one thing each changes
    let control = sign(&claims, Algorithm::ES256, Some(&kid), &enc);
    assert_eq!(s.get(&path, &control).send().await.unwrap().status(), 200);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    let t = now();
    let mut attacks: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                &with(&|c| {
                    c["exp"] = json!(t - 300);
                    c["iat"] = json!(t - 900);
                    c["nbf"] = json!(t - 900);
                }),
                Algorithm::ES256,
                Some(&kid),
                &enc,
            ),
        ),
        (
            "not yet valid",
            sign(
                &with(&|c| {
                    c["nbf"] = json!(t + 600);
                    c["iat"] = json!(t + 600);
                    c["exp"] = json!(t + 1200);
                }),
                Algorithm::ES256,
                Some(&kid),
                &enc,
            ),
        ),
        (
            "wrong aud",
            sign(
                &with(&|c| c["aud"] = json!("https://other.example/fhir")),
                Algorithm::ES256,
                Some(&kid),
                &enc,
            ),
        ),
        (
            "wrong iss",
            sign(
                &with(&|c| c["iss"] = json!("https://evil.example")),
                Algorithm::ES256,
                Some(&kid),
                &enc,
            ),
        ),
        (
            "unknown kid",
            sign(&claims, Algorithm::ES256, Some("unknown-kid"), &enc),
        ),
        ("no kid", sign(&claims, Algorithm::ES256, None, &enc)),
        (
            "HS256 with public key",
            sign(
                &claims,
                Algorithm::HS256,
                Some(&kid),
                &EncodingKey::from_secret(key.public_key_uncompressed()),
            ),
        ),
        (
            "HS256 with jwk",
            sign(
                &claims,
                Algorithm::HS256,
                Some(&kid),
                &EncodingKey::from_secret(serde_json::to_string(&key.public_jwk()).unwrap().as_bytes()),
            ),
        ),
        ("garbage", "not.a.token".into()),
        ("empty", String::new()),
    ];
    // alg none, the payload unchanged
    let parts: Vec<&str> = good.split('.').collect();
    let none = B64.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    attacks.push(("alg none", format!("{none}.{}.", parts[1])));
    // payload tampered (another subject, a longer life), original signature kept
    let widened = B64.encode(
        serde_json::to_vec(&with(&|c| {
            c["sub"] = json!("someone-else");
            c["exp"] = json!(t + 850);
        }))
        .unwrap(),
    );
    attacks.push(("tampered", format!("{}.{widened}.{}", parts[0], parts[2])));
    // a valid signature from another deployment's key
    let other = TestServer::start(Backend::Sqlite).await;
    let foreign_key = ward_crypto::keyfiles::load_signing_key(&other.dir.join("keys")).unwrap();
    attacks.push((
        "foreign key",
        sign(
            &claims,
            Algorithm::ES256,
            Some(&kid),
            &EncodingKey::from_ec_der(foreign_key.pkcs8_der()),
        ),
    ));
    // a token of the other deployment, as is
    attacks.push(("other server's token", other.admin_token().await));

    for (name, token) in &attacks {
        let resp = s.get(&path, token).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{name}");
        assert!(resp.headers().contains_key("www-authenticate"), "{name}");
    }
    other.stop().await;
    s.stop().await;
}

async fn scopes_are_enforced(backend: Backend) {
    let s = TestServer::start(backend).await;
    let admin = s.admin_token().await;
    let p = s.create(&admin, &distinctive_patient("SC")).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let (id, secret) = s.new_client("system/Patient.rs system/Observation.c").await;
    let t = s.token_for(&id, &secret, None).await;

    assert_eq!(
        s.get(&format!("Patient/{pid}"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(s.get("Patient/_history", &t).send().await.unwrap().status(), 200);
    // no c/u/d on Patient
    assert_eq!(
        s.post_json("Patient", &t, &distinctive_patient("X"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        s.put_json(&format!("Patient/{pid}"), &t, &p)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let del = s.delete(&format!("Patient/{pid}"), &t).send().await.unwrap();
    assert_eq!(del.status(), 403);
    // other types: nothing
    assert_eq!(
        s.get("Condition/_history", &t).send().await.unwrap().status(),
        403
    );
    // create-only on Observation: cannot read back, cannot use If-None-Exist as an oracle
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "t"}});
    let resp = s.post_json("Observation", &t, &obs).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let oid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.get(&format!("Observation/{oid}"), &t)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let resp = s
        .post_json("Observation", &t, &obs)
        .header("if-none-exist", format!("_id={oid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // the 403 body says nothing about the data
    let cond = json!({"resourceType": "Condition", "subject": {"reference": format!("Patient/{pid}")},
        "code": {"text": "Quillonia-condition-text"}});
    let cid = s.create(&admin, &cond).await["id"].as_str().unwrap().to_owned();
    let resp = s.get(&format!("Condition/{cid}"), &t).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("Quillonia") && !body.contains(&pid), "{body}");
    // update-as-create needs the create permission, also for a deleted resource
    let (uid, usecret) = s.new_client("system/Patient.u system/Patient.d").await;
    let ut = s.token_for(&uid, &usecret, None).await;
    let mut fresh = distinctive_patient("UC");
    fresh["id"] = json!("brand-new-id");
    assert_eq!(
        s.put_json("Patient/brand-new-id", &ut, &fresh)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let del = s.delete(&format!("Patient/{pid}"), &ut).send().await.unwrap();
    assert_eq!(del.status(), 204);
    let mut revived = p.clone();
    revived["active"] = json!(true);
    assert_eq!(
        s.put_json(&format!("Patient/{pid}"), &ut, &revived)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    s.stop().await;
}

async fn disabled_client_loses_access(backend: Backend) {
    let s = TestServer::start(backend).await;
    let (id, secret) = s.new_client("system/Patient.rs").await;
    let t = s.token_for(&id, &secret, None).await;
    assert_eq!(s.get("Patient/_history", &t).send().await.unwrap().status(), 200);
    ward::clients::disable(&s.config, &id).await.unwrap();
    // revocations reach the server within a second (poll)
    let mut status = 200;
    for _ in 0..40 {
        status = s
            .get("Patient/_history", &t)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(status, 401, "a disabled client's live token stops working");
    let resp = s
        .client
        .post(format!("{}/oauth2/token", s.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    s.stop().await;
}
