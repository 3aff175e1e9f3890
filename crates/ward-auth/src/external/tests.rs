use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const ISS: &str = "https://idp.test/realms/ward";
const AUD: &str = "https://ward.test/fhir";
const NOW: u64 = 1_800_000_000;

struct Key {
    kid: String,
    jwk: Value,
    encoding: EncodingKey,
}

fn ec_key() -> Key {
    let dir = std::env::temp_dir().join(format!("ward-ext-test-{}", ward_crypto::random_token(8)));
    ward_crypto::keyfiles::create_key_dir(&dir).unwrap();
    let key = ward_crypto::keyfiles::load_signing_key(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Key {
        kid: key.kid(),
        jwk: key.public_jwk(),
        encoding: EncodingKey::from_ec_der(key.pkcs8_der()),
    }
}

/// Serves a JWKS that the test can change, counting reads.
struct Fake {
    jwks: Mutex<Value>,
    reads: AtomicUsize,
}

impl JwksFetch for Fake {
    fn fetch<'a>(&'a self, _: &'a JwksSource) -> JwksFuture<'a> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::to_vec(&*self.jwks.lock().unwrap()).unwrap();
        Box::pin(async move { Ok(body) })
    }
}

fn settings() -> IssuerSettings {
    IssuerSettings {
        issuer: ISS.into(),
        audience: AUD.into(),
        jwks: JwksSource::Uri("https://idp.test/jwks".into()),
        algorithms: vec![Algorithm::ES256],
        role_claim: "realm_access.roles".into(),
        roles: BTreeMap::from([
            ("ward-service".into(), "service".into()),
            ("ward-clinician".into(), "clinician".into()),
        ]),
        fhir_user_claim: Some("fhirUser".into()),
        scope_claim: "scope".into(),
        refresh_secs: 60,
    }
}

fn issuer_with(keys: &[&Key]) -> (TrustedIssuer, Arc<Fake>) {
    let fake = Arc::new(Fake {
        jwks: Mutex::new(json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })),
        reads: AtomicUsize::new(0),
    });
    (TrustedIssuer::new(settings(), fake.clone()).unwrap(), fake)
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "u-1", "azp": "app-1", "exp": NOW + 300, "iat": NOW,
        "realm_access": { "roles": ["ward-service", "other"] },
        "scope": "system/Patient.rs user/*.rs email", "fhirUser": "Practitioner/p-1", "jti": "j-1"
    })
}

fn sign(key: &Key, c: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, c, &key.encoding).unwrap()
}

#[tokio::test]
async fn maps_a_verified_token_into_namespaced_claims() {
    let k = ec_key();
    let (issuer, _) = issuer_with(&[&k]);
    let id = issuer.verify(&sign(&k, &claims()), NOW).await.unwrap();
    assert_eq!(id.claims.sub, format!("{ISS}#sub:u-1"));
    assert_eq!(id.claims.client_id, format!("{ISS}#client:app-1"));
    assert_eq!(id.claims.iss, ISS);
    // The service role may hold system/ scopes, not user/ ones; unknown scopes are dropped.
    assert_eq!(id.claims.scope, "system/Patient.rs");
    assert_eq!(id.roles, ["service"]);
    assert_eq!(id.fhir_user.as_deref(), Some("Practitioner/p-1"));
    assert_eq!(id.subject, "u-1");

    let mut c = claims();
    c["realm_access"]["roles"] = json!(["ward-clinician"]);
    let id = issuer.verify(&sign(&k, &c), NOW).await.unwrap();
    assert_eq!(id.claims.scope, "user/*.rs", "a clinician holds no system/ scope");
    c["realm_access"]["roles"] = json!(["ward-service", "ward-clinician"]);
    let id = issuer.verify(&sign(&k, &c), NOW).await.unwrap();
    assert_eq!(id.roles, ["clinician", "service"]);
    assert_eq!(id.claims.scope, "system/Patient.rs user/*.rs");
    // A space-separated role string works too, and an array of scopes.
    c["realm_access"]["roles"] = json!("other ward-service");
    c["scope"] = json!(["system/Observation.rs", "system/AuditEvent.rs"]);
    let id = issuer.verify(&sign(&k, &c), NOW).await.unwrap();
    assert_eq!(
        id.claims.scope, "system/Observation.rs",
        "no wildcard turns into AuditEvent"
    );
    // A malformed fhirUser is dropped, not trusted.
    c["fhirUser"] = json!("Practitioner/../../x");
    assert_eq!(issuer.verify(&sign(&k, &c), NOW).await.unwrap().fhir_user, None);
}

#[tokio::test]
async fn every_claim_check_refuses() {
    let k = ec_key();
    let (issuer, _) = issuer_with(&[&k]);
    let refused = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&k, &c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("wrong iss", refused(&|c| c["iss"] = json!("https://other.test"))),
        (
            "iss with a trailing slash",
            refused(&|c| c["iss"] = json!(format!("{ISS}/"))),
        ),
        ("wrong aud", refused(&|c| c["aud"] = json!("https://ward.test"))),
        ("aud array without it", refused(&|c| c["aud"] = json!(["a", "b"]))),
        (
            "no aud",
            refused(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
        ),
        (
            "no exp",
            refused(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        ),
        ("exp a string", refused(&|c| c["exp"] = json!("soon"))),
        ("expired beyond skew", refused(&|c| c["exp"] = json!(NOW - 61))),
        ("nbf beyond skew", refused(&|c| c["nbf"] = json!(NOW + 61))),
        ("iat beyond skew", refused(&|c| c["iat"] = json!(NOW + 61))),
        (
            "no sub",
            refused(&|c| drop(c.as_object_mut().unwrap().remove("sub"))),
        ),
        ("sub with a space", refused(&|c| c["sub"] = json!("a b"))),
        ("sub too long", refused(&|c| c["sub"] = json!("x".repeat(300)))),
        (
            "unmapped role",
            refused(&|c| c["realm_access"]["roles"] = json!(["other"])),
        ),
        (
            "no role claim",
            refused(&|c| drop(c.as_object_mut().unwrap().remove("realm_access"))),
        ),
    ];
    for (what, token) in cases {
        assert!(issuer.verify(&token, NOW).await.is_err(), "{what}");
    }
    // Within the skew: accepted.
    let mut c = claims();
    c["exp"] = json!(NOW - 59);
    c["nbf"] = json!(NOW + 59);
    c["iat"] = json!(NOW + 59);
    c["aud"] = json!(["x", AUD]);
    issuer.verify(&sign(&k, &c), NOW).await.unwrap();
}

#[tokio::test]
async fn header_and_key_checks_refuse() {
    let k = ec_key();
    let other = ec_key();
    let (issuer, _) = issuer_with(&[&k]);
    let c = claims();
    // no kid
    let h = Header::new(Algorithm::ES256);
    let t = jsonwebtoken::encode(&h, &c, &k.encoding).unwrap();
    assert_eq!(issuer.verify(&t, NOW).await, Err(reject("no kid")));
    // another key under this kid
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(k.kid.clone());
    let t = jsonwebtoken::encode(&h, &c, &other.encoding).unwrap();
    assert!(issuer.verify(&t, NOW).await.is_err());
    // unknown kid
    assert_eq!(
        issuer.verify(&sign(&other, &c), NOW).await,
        Err(TokenError::UnknownKey)
    );
    // alg none
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, k.kid));
    assert!(issuer.verify(&format!("{head}.{body}."), NOW).await.is_err());
    // HS256 keyed with the public key, whatever its form
    let x = k.jwk["x"].as_str().unwrap();
    for secret in [x.as_bytes().to_vec(), serde_json::to_vec(&k.jwk).unwrap()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(k.kid.clone());
        let t = jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(issuer.verify(&t, NOW).await, Err(reject("algorithm not allowed")));
    }
    // Even with HS256 in the list (which configuration refuses), the EC key never fits it.
    let mut s = settings();
    s.algorithms = vec![Algorithm::ES256, Algorithm::HS256, Algorithm::ES384];
    let fake = Arc::new(Fake {
        jwks: Mutex::new(json!({ "keys": [k.jwk] })),
        reads: AtomicUsize::new(0),
    });
    let lax = TrustedIssuer::new(s, fake).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(k.kid.clone());
    let t = jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(x.as_bytes())).unwrap();
    assert_eq!(
        lax.verify(&t, NOW).await,
        Err(reject("key does not fit the algorithm"))
    );
    // ES384 against a P-256 key: refused before any signature check.
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some(k.kid.clone());
    let t = format!(
        "{}.{body}.AAAA",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap())
    );
    assert_eq!(
        lax.verify(&t, NOW).await,
        Err(reject("key does not fit the algorithm"))
    );
    // garbage
    assert_eq!(issuer.verify("a.b", NOW).await, Err(TokenError::Malformed));
}

/// An unknown `kid` reads the JWKS again, at most once per `refresh_secs` (clock injected).
#[tokio::test]
async fn unknown_kids_refresh_the_keys_at_most_once_per_interval() {
    let k1 = ec_key();
    let k2 = ec_key();
    let (issuer, fake) = issuer_with(&[&k1]);
    let reads = || fake.reads.load(Ordering::SeqCst);
    let claims = || {
        let mut c = claims();
        c["exp"] = json!(NOW + 10_000);
        c
    };
    issuer.verify(&sign(&k1, &claims()), NOW).await.unwrap();
    assert_eq!(reads(), 1, "read when first needed");
    issuer.verify(&sign(&k1, &claims()), NOW + 1000).await.unwrap();
    assert_eq!(reads(), 1, "known kid: no read");
    // The provider rotates: k2 appears.
    *fake.jwks.lock().unwrap() = json!({ "keys": [k1.jwk, k2.jwk] });
    let t2 = sign(&k2, &claims());
    // 59 s after the last read: refused without a read.
    assert_eq!(issuer.verify(&t2, NOW + 59).await, Err(TokenError::UnknownKey));
    assert_eq!(reads(), 1);
    // 60 s after: one read, and k2 verifies.
    issuer.verify(&t2, NOW + 60).await.unwrap();
    assert_eq!(reads(), 2);
    // A flood of unknown kids right after costs no read.
    let k3 = ec_key();
    for s in 0..50 {
        assert_eq!(
            issuer.verify(&sign(&k3, &claims()), NOW + 60 + s).await,
            Err(TokenError::UnknownKey)
        );
    }
    assert_eq!(reads(), 2);
    assert_eq!(
        issuer.verify(&sign(&k3, &claims()), NOW + 120).await,
        Err(TokenError::UnknownKey)
    );
    assert_eq!(reads(), 3);
    // Many unknown kids at once past the interval: one read.
    let t3 = sign(&k3, &claims());
    for _ in 0..20 {
        assert_eq!(issuer.verify(&t3, NOW + 200).await, Err(TokenError::UnknownKey));
    }
    assert_eq!(reads(), 4);
}

#[test]
fn jwks_keeps_only_signature_keys_that_fit() {
    let k = ec_key();
    let mut enc = k.jwk.clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc");
    let mut wrong_alg = k.jwk.clone();
    wrong_alg["alg"] = json!("RS256");
    wrong_alg["kid"] = json!("wrong");
    let mut no_kid = k.jwk.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let short_rsa =
        json!({"kty": "RSA", "kid": "short", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"});
    let hmac = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
    let odd = json!({"kty": "XYZ", "kid": "odd"});
    let jwks = json!({ "keys": [k.jwk, enc, wrong_alg, no_kid, short_rsa, hmac, odd] });
    let keys = keys_of(&serde_json::to_vec(&jwks).unwrap()).unwrap();
    assert_eq!(keys.keys().collect::<Vec<_>>(), [&k.kid]);
    assert!(keys_of(b"[]").is_err());
    assert!(keys_of(b"{\"keys\": 1}").is_err());
}

#[test]
fn settings_are_checked() {
    settings().validate().unwrap();
    type Mutate = Box<dyn Fn(&mut IssuerSettings)>;
    let bad: Vec<(&str, Mutate)> = vec![
        ("http issuer", Box::new(|s| s.issuer = "http://idp.test".into())),
        (
            "issuer with fragment",
            Box::new(|s| s.issuer = "https://idp.test#x".into()),
        ),
        ("empty audience", Box::new(|s| s.audience = " ".into())),
        (
            "http jwks",
            Box::new(|s| s.jwks = JwksSource::Uri("http://idp.test/jwks".into())),
        ),
        ("no algorithm", Box::new(|s| s.algorithms.clear())),
        ("no roles", Box::new(|s| s.roles.clear())),
        (
            "unknown Ward role",
            Box::new(|s| {
                s.roles.insert("x".into(), "superuser".into());
            }),
        ),
        ("zero refresh", Box::new(|s| s.refresh_secs = 0)),
    ];
    for (what, f) in bad {
        let mut s = settings();
        f(&mut s);
        assert!(s.validate().is_err(), "{what}");
    }
    for refused in ["none", "None", "HS256", "hs384", "HS512", "RSA-OAEP", "ES512", ""] {
        assert!(parse_algorithm(refused).is_err(), "{refused}");
    }
    assert!(parse_algorithm("none").unwrap_err().0.contains("never"));
    assert!(parse_algorithm("HS256").unwrap_err().0.contains("HMAC"));
    for ok in ["RS256", "PS384", "ES256", "ES384", "EdDSA"] {
        parse_algorithm(ok).unwrap();
    }
    let dup = || TrustedIssuer::new(settings(), Arc::new(FileFetch)).unwrap();
    assert!(TrustedIssuers::new(vec![dup(), dup()]).is_err());
}

#[test]
fn issuer_is_read_from_the_payload() {
    let k = ec_key();
    let t = sign(&k, &claims());
    assert_eq!(unverified_issuer(&t).as_deref(), Some(ISS));
    assert_eq!(unverified_issuer("x"), None);
    assert_eq!(unverified_issuer("a.%%%.c"), None);
    let (issuer, _) = issuer_with(&[&k]);
    let set = TrustedIssuers::new(vec![issuer]).unwrap();
    assert!(set.for_token(&t).is_some());
    let mut c = claims();
    c["iss"] = json!("https://ward.test");
    assert!(set.for_token(&sign(&k, &c)).is_none());
}

#[test]
fn role_ceilings() {
    for role in ROLES {
        let c = role_ceiling(role);
        assert!(!c.is_empty(), "{role}");
        let system = c.allows_any_type_except(Context::System, &[], &[crate::Interaction::Read]);
        assert_eq!(system, role == "service", "{role}");
        assert!(
            !c.allows(Context::System, "AuditEvent", crate::Interaction::Read),
            "{role}"
        );
    }
    assert!(role_ceiling("superuser").is_empty());
}

use crate::scope::Context;
