//! OAuth for people (issue 10, SPEC AC-2, AC-4, AC-6): authorization codes with PKCE S256,
//! refresh-token rotation and families, id_tokens, userinfo, introspection, revocation and
//! EHR launches, against a real server over TLS, on SQLite and PostgreSQL.
//!
//! The browser half (login, consent) is another branch's: codes come from `issue_code` called
//! on the deployment's store, as the authorize endpoint calls it. Exchanges, refreshes and
//! revocations go through the `oauth2` crate (with Ward's own reqwest client as its HTTP
//! function: its reqwest feature would bring a second reqwest and rustls); requests an honest
//! client library refuses to send (a blank verifier, a plain one) are built by hand.

mod common;

use std::future::Future;
use std::pin::Pin;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Backend, TestServer};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields,
    IntrospectionUrl, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RevocationUrl,
    StandardRevocableToken, StandardTokenResponse, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use ward_auth::CodeGrant;
use ward_store::Store;

const REDIRECT: &str = "https://app.example/callback";
const APP_SCOPES: &str =
    "openid fhirUser profile offline_access online_access launch launch/patient patient/*.rs user/*.rs";
const ASKED: &str = "openid fhirUser profile offline_access launch/patient patient/*.rs";

/// SMART's additions to the token response.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SmartFields {
    id_token: Option<String>,
    patient: Option<String>,
    encounter: Option<String>,
    need_patient_banner: Option<bool>,
    smart_style_url: Option<String>,
}
impl ExtraTokenFields for SmartFields {}

type SmartTokens = StandardTokenResponse<SmartFields, BasicTokenType>;
type SmartClient = oauth2::Client<
    BasicErrorResponse,
    SmartTokens,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointSet,
    EndpointSet,
>;

type HttpFuture = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>>;

/// The `oauth2` crate's HTTP function, over the test's reqwest client (which trusts only the
/// deployment's CA).
fn http(client: reqwest::Client) -> impl Fn(oauth2::HttpRequest) -> HttpFuture {
    move |req| {
        let client = client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut out = oauth2::http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            Ok(out.body(resp.bytes().await?.to_vec()).unwrap())
        })
    }
}

/// A deployment with a registered app and a signed-in user's store handle.
struct Env {
    s: TestServer,
    store: Store,
    app: (String, String),
    user_id: String,
    username: String,
}

async fn env(backend: Backend) -> Env {
    env_with(backend, |_| {}).await
}

async fn env_with(backend: Backend, adjust: impl FnOnce(&mut ward_server::Config)) -> Env {
    let s = TestServer::start_with(backend, adjust).await;
    let store = ward::clients::open_store(&s.config).await.unwrap();
    let app = s.new_client(APP_SCOPES).await;
    let (user_id, username) = new_user(&store, "dr-kim", "Practitioner/prac-1").await;
    Env {
        s,
        store,
        app,
        user_id,
        username,
    }
}

async fn new_user(store: &Store, name: &str, fhir_user: &str) -> (String, String) {
    let role = if fhir_user.starts_with("Patient/") {
        ward_auth::Role::Patient
    } else {
        ward_auth::Role::Clinician
    };
    let u = ward_auth::users::create_user(
        store,
        ward_auth::users::NewUser {
            username: name.into(),
            role,
            fhir_user: Some(fhir_user.into()),
            password: None,
        },
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    (u.user_id, u.username)
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.s.url)
    }

    fn oauth(&self, id: &str, secret: Option<&str>) -> SmartClient {
        let mut c = oauth2::Client::new(ClientId::new(id.into()))
            .set_token_uri(TokenUrl::new(self.url("/oauth2/token")).unwrap())
            .set_revocation_url(RevocationUrl::new(self.url("/oauth2/revoke")).unwrap())
            .set_introspection_url(IntrospectionUrl::new(self.url("/oauth2/introspect")).unwrap())
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
        if let Some(s) = secret {
            c = c.set_client_secret(ClientSecret::new(s.into()));
        }
        c
    }

    fn app_client(&self) -> SmartClient {
        self.oauth(&self.app.0, Some(&self.app.1))
    }

    fn grant(&self, challenge: &PkceCodeChallenge, scope: &str) -> CodeGrant {
        CodeGrant {
            client_id: self.app.0.clone(),
            user_id: self.user_id.clone(),
            redirect_uri: REDIRECT.into(),
            scope: scope.into(),
            code_challenge: challenge.as_str().into(),
            nonce: Some("n-0S6_WzA2Mj".into()),
            patient: Some("pat-1".into()),
            encounter: Some("enc-1".into()),
            auth_time: self.s.config.clock.now().unix_timestamp(),
            amr: vec!["pwd".into(), "otp".into()],
            acr: Some("urn:ward:acr:mfa".into()),
            need_patient_banner: true,
            smart_style_url: Some(self.url("/oauth2/smart-style.json")),
        }
    }

    /// A code as the authorize endpoint would issue it, with its PKCE verifier.
    async fn code(&self, scope: &str) -> (String, PkceCodeVerifier) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let code = ward_auth::issue_code(
            &self.store,
            self.grant(&challenge, scope),
            self.s.config.clock.now(),
        )
        .await
        .unwrap();
        (code, verifier)
    }

    /// Exchanges a fresh code through the `oauth2` crate.
    async fn tokens(&self, scope: &str) -> SmartTokens {
        let (code, verifier) = self.code(scope).await;
        self.app_client()
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&http(self.s.client.clone()))
            .await
            .expect("code exchange")
    }

    async fn refresh(&self, rt: &str, scope: Option<&str>) -> Result<SmartTokens, String> {
        let token = RefreshToken::new(rt.into());
        let client = self.app_client();
        let mut req = client.exchange_refresh_token(&token);
        if let Some(s) = scope {
            req = req.add_extra_param("scope", s.to_owned());
        }
        req.request_async(&http(self.s.client.clone()))
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(r) => r.error().as_ref().to_owned(),
                other => format!("{other:?}"),
            })
    }

    /// A hand-built token request (form), with the app's Basic credentials.
    async fn raw_token(&self, form: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .s
            .client
            .post(self.url("/oauth2/token"))
            .basic_auth(&self.app.0, Some(&self.app.1))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    async fn introspect_as(&self, who: &(String, String), token: &str) -> Value {
        let resp = self
            .s
            .client
            .post(self.url("/oauth2/introspect"))
            .basic_auth(&who.0, Some(&who.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        resp.json().await.unwrap()
    }

    async fn introspect(&self, token: &str) -> Value {
        self.introspect_as(&self.app, token).await
    }

    async fn userinfo(&self, token: &str) -> (u16, Value) {
        let resp = self
            .s
            .client
            .get(self.url("/oauth2/userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

fn rt_of(t: &SmartTokens) -> String {
    t.refresh_token().expect("refresh token").secret().clone()
}

fn at_of(t: &SmartTokens) -> String {
    t.access_token().secret().clone()
}

async fn code_exchange_gives_user_tokens_with_launch_context(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    assert_eq!(*t.token_type(), BasicTokenType::Bearer);
    assert!(t.expires_in().unwrap().as_secs() <= 900);
    let scope: Vec<String> = t.scopes().unwrap().iter().map(|s| s.to_string()).collect();
    for s in [
        "openid",
        "fhirUser",
        "offline_access",
        "patient/*.rs",
        "launch/patient",
    ] {
        assert!(scope.contains(&s.to_owned()), "{s} in {scope:?}");
    }
    assert!(!scope.contains(&"user/*.rs".to_owned()), "only what was granted");
    let extra = t.extra_fields();
    assert_eq!(extra.patient.as_deref(), Some("pat-1"));
    assert_eq!(extra.encounter.as_deref(), Some("enc-1"));
    assert_eq!(extra.need_patient_banner, Some(true));
    assert!(t.refresh_token().is_some());

    let claims = payload(&at_of(&t));
    assert_eq!(claims["sub"], e.user_id.as_str());
    assert_eq!(claims["client_id"], e.app.0.as_str());
    assert_eq!(claims["fhirUser"], "Practitioner/prac-1");
    assert_eq!(claims["patient"], "pat-1");
    assert_eq!(claims["encounter"], "enc-1");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims["acr"], "urn:ward:acr:mfa");
    assert!(claims["auth_time"].is_i64());
    assert!(claims["fam"].as_str().is_some_and(|f| !f.is_empty()));

    // The style sheet named by smart_style_url is real SMART style JSON.
    let style: Value =
        e.s.client
            .get(extra.smart_style_url.clone().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(style["color_background"].is_string() && style["font_family_body"].is_string());

    // Without offline_access or online_access: no refresh token; without openid: no id_token.
    let t = e.tokens("patient/*.rs launch/patient").await;
    assert!(t.refresh_token().is_none() && t.extra_fields().id_token.is_none());

    // The response headers of success and failure alike forbid caching.
    let (code, verifier) = e.code(ASKED).await;
    let (status, headers, _) = e
        .raw_token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&headers["cache-control"], &headers["pragma"]),
        (&"no-store".parse().unwrap(), &"no-cache".parse().unwrap())
    );
    let (status, headers, body) = e
        .raw_token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ])
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(
        (&headers["cache-control"], &headers["pragma"]),
        (&"no-store".parse().unwrap(), &"no-cache".parse().unwrap())
    );
}

async fn id_token_is_rs256_with_oidc_claims(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    let id_token = t.extra_fields().id_token.clone().expect("id_token with openid");
    let header = jsonwebtoken::decode_header(&id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: jsonwebtoken::jwk::JwkSet =
        e.s.client
            .get(e.url("/oauth2/jwks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("id_token kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[&e.app.0]);
    v.set_issuer(&[&e.s.url]);
    let claims = jsonwebtoken::decode::<Value>(&id_token, &key, &v).unwrap().claims;
    assert_eq!(claims["sub"], e.user_id.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj", "nonce echoed exactly");
    assert_eq!(claims["fhirUser"], format!("{}/Practitioner/prac-1", e.s.fhir));
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims["acr"], "urn:ward:acr:mfa");
    assert!(claims["auth_time"].is_i64() && claims["iat"].is_i64() && claims["exp"].is_i64());
    // The signature is checked: a changed claim fails.
    let parts: Vec<&str> = id_token.split('.').collect();
    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!("someone-else");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&forged_claims).unwrap()),
        parts[2]
    );
    assert!(jsonwebtoken::decode::<Value>(&forged, &key, &v).is_err());
}

async fn pkce_is_mandatory_and_s256_only(backend: Backend) {
    let e = env(backend).await;
    let exchange = |code: String, verifier: Option<String>| {
        let e = &e;
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("redirect_uri", REDIRECT.to_owned()),
            ];
            if let Some(v) = verifier {
                form.push(("code_verifier", v));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, _, body) = e.raw_token(&form).await;
            (status, body["error"].as_str().unwrap_or_default().to_owned())
        }
    };
    let refused = |r: (u16, String)| r.0 == 400 && (r.1 == "invalid_grant" || r.1 == "invalid_request");
    // Missing.
    let (code, _) = e.code(ASKED).await;
    assert_eq!(exchange(code, None).await, (400, "invalid_request".into()));
    // Blank.
    let (code, _) = e.code(ASKED).await;
    assert!(refused(exchange(code, Some(String::new())).await));
    // Wrong length: the right verifier cut to 42 characters (RFC 7636 wants 43 to 128).
    let (code, verifier) = e.code(ASKED).await;
    assert!(refused(
        exchange(code, Some(verifier.secret()[..42].to_owned())).await
    ));
    // Wrong verifier of the right shape.
    let (code, _) = e.code(ASKED).await;
    let other = PkceCodeVerifier::new("x".repeat(64));
    assert_eq!(
        exchange(code, Some(other.secret().clone())).await.1,
        "invalid_grant"
    );
    // `plain`: the challenge itself presented as the verifier.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let code = ward_auth::issue_code(&e.store, e.grant(&challenge, ASKED), e.s.config.clock.now())
        .await
        .unwrap();
    assert_eq!(
        exchange(code, Some(challenge.as_str().to_owned())).await.1,
        "invalid_grant"
    );
    // A plain challenge (a verifier, not its S256 hash) is never stored.
    let plain = PkceCodeChallenge::new_random_sha256().1.secret().clone() + "more-than-43-characters";
    let mut g = e.grant(&challenge, ASKED);
    g.code_challenge = plain;
    assert!(
        ward_auth::issue_code(&e.store, g, e.s.config.clock.now())
            .await
            .is_err()
    );
    // And the right verifier works.
    let (code, verifier) = e.code(ASKED).await;
    assert_eq!(exchange(code, Some(verifier.secret().clone())).await.0, 200);
}

async fn redirect_uri_must_match_exactly(backend: Backend) {
    let e = env(backend).await;
    for redirect in [
        None,
        Some("https://app.example/callback/"),
        Some("https://APP.example/callback"),
        Some("https://app.example/callback?x=1"),
    ] {
        let (code, verifier) = e.code(ASKED).await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.secret().as_str()),
        ];
        if let Some(r) = redirect {
            form.push(("redirect_uri", r));
        }
        let (status, _, body) = e.raw_token(&form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{redirect:?}"
        );
    }
}

async fn code_is_bound_to_its_client_and_expires(backend: Backend) {
    let e = env(backend).await;
    let other = e.s.new_client(APP_SCOPES).await;
    // Another client presenting the app's code (with its own valid credentials).
    let (code, verifier) = e.code(ASKED).await;
    let err = e
        .oauth(&other.0, Some(&other.1))
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, oauth2::RequestTokenError::ServerResponse(ref r) if r.error().as_ref() == "invalid_grant"),
        "{err:?}"
    );
    // The app with a wrong secret.
    let (code, verifier) = e.code(ASKED).await;
    let err = e
        .oauth(&e.app.0, Some("wrong-secret"))
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, oauth2::RequestTokenError::ServerResponse(ref r) if r.error().as_ref() == "invalid_client"),
        "{err:?}"
    );
    // A code 61 s old (the server's clock moved on).
    let (code, verifier) = e.code(ASKED).await;
    e.s.config.clock.advance(61);
    let err = e
        .app_client()
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, oauth2::RequestTokenError::ServerResponse(ref r) if r.error().as_ref() == "invalid_grant"),
        "{err:?}"
    );
    // A code 59 s old still works.
    let (code, verifier) = e.code(ASKED).await;
    e.s.config.clock.advance(59);
    e.app_client()
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    // A code nobody issued.
    let (_, verifier) = e.code(ASKED).await;
    let (status, _, body) = e
        .raw_token(&[
            ("grant_type", "authorization_code"),
            ("code", "made-up-code"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
        ])
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
}

/// A code stolen by another registered client (a public one needs no secret) is worth nothing
/// to it, and its presentation neither uses the code up nor revokes what the code produced.
async fn another_client_can_neither_burn_nor_revoke_a_code(backend: Backend) {
    let e = env(backend).await;
    let other = e.s.new_client(APP_SCOPES).await;
    let (code, verifier) = e.code(ASKED).await;
    let err = e
        .oauth(&other.0, Some(&other.1))
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.secret().clone()))
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, oauth2::RequestTokenError::ServerResponse(ref r) if r.error().as_ref() == "invalid_grant"),
        "{err:?}"
    );
    // The app still exchanges its code.
    let t = e
        .app_client()
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .expect("the other client's attempt used the app's code up");
    // The other client replaying the used code revokes nothing of the app's.
    let err = e
        .oauth(&other.0, Some(&other.1))
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new("x".repeat(43)))
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, oauth2::RequestTokenError::ServerResponse(ref r) if r.error().as_ref() == "invalid_grant"),
        "{err:?}"
    );
    assert_eq!(e.introspect(&at_of(&t)).await["active"], true);
    assert!(
        e.refresh(&rt_of(&t), None).await.is_ok(),
        "the app's family was revoked"
    );
}

/// Two presentations of one code at once: never two sets of tokens, and whatever one of them
/// got is revoked (the other was a replay).
async fn concurrent_code_presentations_yield_no_live_tokens(backend: Backend) {
    let e = env(backend).await;
    for _ in 0..3 {
        let (code, verifier) = e.code(ASKED).await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret().as_str()),
        ];
        let (a, b) = tokio::join!(e.raw_token(&form), e.raw_token(&form));
        let ok: Vec<&Value> = [&a, &b].iter().filter(|r| r.0 == 200).map(|r| &r.2).collect();
        assert!(ok.len() <= 1, "a code exchanged twice");
        for body in ok {
            let at = body["access_token"].as_str().unwrap();
            assert_eq!(e.introspect(at).await["active"], false);
            let rt = body["refresh_token"].as_str().unwrap();
            assert_eq!(e.refresh(rt, None).await.unwrap_err(), "invalid_grant");
        }
    }
}

/// A confidential client with `private_key_jwt` (ES256 key registered as a JWK Set file)
/// exchanges its code and refreshes with assertions; a replayed assertion is refused.
async fn private_key_jwt_clients_exchange_codes(backend: Backend) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let e = env(backend).await;
    let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
    let p = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65]),
                     "kid": "k1", "alg": "ES256", "use": "sig"});
    let file = e.s.dir.join("app-jwks.json");
    std::fs::write(&file, json!({ "keys": [jwk] }).to_string()).unwrap();
    let client_id = ward::clients::create(
        &e.s.config,
        ward::clients::NewClient {
            name: "keyed app".into(),
            scopes: APP_SCOPES.into(),
            jwks_file: Some(file),
            redirect_uris: vec![REDIRECT.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .client_id;
    let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
    let token_url = e.url("/oauth2/token");
    let assertion = |jti: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k1".into());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "iat": now, "jti": jti});
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut g = e.grant(&challenge, ASKED);
    g.client_id = client_id.clone();
    let code = ward_auth::issue_code(&e.store, g, e.s.config.clock.now())
        .await
        .unwrap();
    let first = assertion("jti-1");
    let send = |form: Vec<(&'static str, String)>| {
        let e = &e;
        async move {
            let resp =
                e.s.client
                    .post(e.url("/oauth2/token"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned();
    let (status, body) = send(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT.into()),
        ("code_verifier", verifier.secret().clone()),
        ("client_assertion_type", jwt_bearer.clone()),
        ("client_assertion", first.clone()),
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["client_id"],
        client_id.as_str()
    );
    let rt = body["refresh_token"].as_str().unwrap().to_owned();
    // The same assertion again is refused (jti replay), also for a refresh.
    let (status, body) = send(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", rt.clone()),
        ("client_assertion_type", jwt_bearer.clone()),
        ("client_assertion", first),
    ])
    .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    let (status, _) = send(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", rt),
        ("client_assertion_type", jwt_bearer),
        ("client_assertion", assertion("jti-2")),
    ])
    .await;
    assert_eq!(status, 200);
}

async fn public_clients_use_client_id_and_pkce(backend: Backend) {
    let e = env(backend).await;
    let public_id = uuid::Uuid::new_v4().to_string();
    e.store
        .insert_client(&ward_store::ClientRecord {
            client_id: public_id.clone(),
            name: "patient app".into(),
            secret_hash: String::new(),
            scopes: APP_SCOPES.into(),
            disabled: false,
            created_at: time::OffsetDateTime::now_utc(),
            redirect_uris: vec![REDIRECT.into()],
            public: true,
            jwks: None,
            jwks_url: None,
        })
        .await
        .unwrap();
    let public = e.oauth(&public_id, None);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut g = e.grant(&challenge, ASKED);
    g.client_id = public_id.clone();
    let code = ward_auth::issue_code(&e.store, g.clone(), e.s.config.clock.now())
        .await
        .unwrap();
    let t = public
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    let claims = payload(&at_of(&t));
    assert_eq!(claims["client_id"], public_id.as_str());
    // Its refresh token rotates with client_id alone too.
    let token = RefreshToken::new(rt_of(&t));
    public
        .exchange_refresh_token(&token)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    // Without the verifier its code is worth nothing.
    let code = ward_auth::issue_code(&e.store, g, e.s.config.clock.now())
        .await
        .unwrap();
    let resp =
        e.s.client
            .post(e.url("/oauth2/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_id", public_id.as_str()),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 400);
    // A confidential client cannot pass for a public one by leaving its secret out.
    let (code, verifier) = e.code(ASKED).await;
    let resp =
        e.s.client
            .post(e.url("/oauth2/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.secret().as_str()),
                ("client_id", e.app.0.as_str()),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
    // Introspection needs a confidential client.
    let resp =
        e.s.client
            .post(e.url("/oauth2/introspect"))
            .form(&[("token", at_of(&t).as_str()), ("client_id", public_id.as_str())])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
    // And discovery says so.
    let doc: Value =
        e.s.client
            .get(e.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        !doc["introspection_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert!(
        doc["revocation_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
}

async fn code_replay_revokes_what_it_produced(backend: Backend) {
    let e = env(backend).await;
    let (code, verifier) = e.code(ASKED).await;
    let verifier_text = verifier.secret().clone();
    let t = e
        .app_client()
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    let at = at_of(&t);
    assert_eq!(e.userinfo(&at).await.0, 200, "the access token works");
    assert_eq!(e.introspect(&at).await["active"], true);
    // The code again (an attacker who saw it).
    let (status, _, body) = e
        .raw_token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier_text),
        ])
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    // Everything issued from the code is revoked: the access token that worked, the refresh token.
    assert_eq!(e.userinfo(&at).await.0, 401);
    assert_eq!(e.introspect(&at).await, json!({ "active": false }));
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let e = env(backend).await;
    let t1 = e.tokens(ASKED).await;
    let rt1 = rt_of(&t1);
    let t2 = e.refresh(&rt1, None).await.unwrap();
    let rt2 = rt_of(&t2);
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(payload(&at_of(&t2))["fam"], payload(&at_of(&t1))["fam"]);
    assert_eq!(payload(&at_of(&t2))["patient"], "pat-1");
    assert_eq!(t2.extra_fields().patient.as_deref(), Some("pat-1"));
    let t3 = e.refresh(&rt2, None).await.unwrap();
    let at3 = at_of(&t3);
    assert_eq!(e.userinfo(&at3).await.0, 200);
    // rt1 again: reuse. The whole family goes, the latest refresh and access tokens included.
    assert_eq!(e.refresh(&rt1, None).await.unwrap_err(), "invalid_grant");
    assert_eq!(e.refresh(&rt_of(&t3), None).await.unwrap_err(), "invalid_grant");
    assert_eq!(e.introspect(&at3).await["active"], false);
    assert_eq!(e.userinfo(&at3).await.0, 401);
    // Another family of the same user is untouched.
    let other = e.tokens(ASKED).await;
    assert!(e.refresh(&rt_of(&other), None).await.is_ok());
    // The reuse is in the audit trail.
    let audit = ward_audit::AuditStore::open(&e.s.config.audit_url())
        .await
        .unwrap();
    let q = ward_audit::AuditQuery {
        action: Some("token".into()),
        count: 1000,
        ..ward_audit::AuditQuery::default()
    };
    let records = ward_audit::search(&audit, &q).await.unwrap();
    assert!(
        records
            .iter()
            .any(|(r, _)| r.outcome.status == 400 && r.outcome.code.as_deref() == Some("refresh-reuse")),
        "a refresh-reuse record"
    );
}

async fn refresh_scope_may_narrow_never_widen(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    let narrow = e
        .refresh(&rt_of(&t), Some("openid patient/Patient.r offline_access"))
        .await
        .unwrap();
    let scope = payload(&at_of(&narrow))["scope"].as_str().unwrap().to_owned();
    assert_eq!(scope, "patient/Patient.r openid offline_access");
    // The next refresh token keeps the original grant: the full scope comes back.
    let full = e.refresh(&rt_of(&narrow), None).await.unwrap();
    assert!(
        payload(&at_of(&full))["scope"]
            .as_str()
            .unwrap()
            .contains("patient/*.rs")
    );
    // Wider: more letters, another context, a scope never granted.
    for wider in ["patient/*.cruds", "user/*.rs", "openid patient/*.rs launch"] {
        assert_eq!(
            e.refresh(&rt_of(&full), Some(wider)).await.unwrap_err(),
            "invalid_scope",
            "{wider}"
        );
    }
}

async fn refresh_tokens_expire_idle_and_absolutely(backend: Backend) {
    let e = env_with(backend, |c| {
        c.auth.refresh_idle_secs = 100;
        c.auth.refresh_max_secs = 250;
    })
    .await;
    let clock = e.s.config.clock.clone();
    // Idle: unused for more than 100 s.
    let t = e.tokens(ASKED).await;
    clock.advance(101);
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
    // Absolute: used every 90 s, still over at 250 s.
    let t = e.tokens(ASKED).await;
    clock.advance(90);
    let t = e.refresh(&rt_of(&t), None).await.unwrap();
    clock.advance(90);
    let t = e.refresh(&rt_of(&t), None).await.unwrap();
    assert_eq!(e.introspect(&rt_of(&t)).await["active"], true);
    clock.advance(80);
    assert_eq!(e.introspect(&rt_of(&t)).await["active"], false);
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
}

async fn online_access_ends_with_the_session_lifetime(backend: Backend) {
    let e = env_with(backend, |c| {
        c.auth.refresh_online_max_secs = 120;
    })
    .await;
    let t = e.tokens("openid online_access patient/*.rs").await;
    e.s.config.clock.advance(121);
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
    // offline_access is not bound by it.
    let t = e.tokens(ASKED).await;
    e.s.config.clock.advance(121);
    assert!(e.refresh(&rt_of(&t), None).await.is_ok());
}

async fn refresh_refused_for_disabled_user_or_client(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    ward_auth::users::disable_user(&e.store, &e.username)
        .await
        .unwrap();
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
    let (user2, _) = new_user(&e.store, "nurse-lee", "Practitioner/prac-2").await;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut g = e.grant(&challenge, ASKED);
    g.user_id = user2;
    let code = ward_auth::issue_code(&e.store, g, e.s.config.clock.now())
        .await
        .unwrap();
    let t = e
        .app_client()
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    ward::clients::disable(&e.s.config, &e.app.0).await.unwrap();
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_client");
}

/// `ward user disable` (the CLI, another process) makes the user's live access token fail at
/// once: refused by userinfo, FHIR and introspection within about a second; the refresh token
/// is dead too.
async fn user_disable_cli_refuses_access_tokens_within_a_second(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    let at = at_of(&t);
    assert_eq!(e.userinfo(&at).await.0, 200, "the token works before the disable");
    assert_eq!(e.introspect(&at).await["active"], true);
    // A user token reaches no FHIR data yet (policy issue), but it is authenticated: 403.
    assert_eq!(e.s.get("Patient/pat-1", &at).send().await.unwrap().status(), 403);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["user", "disable", &e.username, "--json", "--dir"])
        .arg(&e.s.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // FHIR knows of the disable only through the revocation list (userinfo also looks the
    // user up): it is the check that must turn within a second.
    let fhir_status = async || {
        let resp = e.s.get("Patient/pat-1", &at).send().await.unwrap();
        resp.status().as_u16()
    };
    let start = std::time::Instant::now();
    let mut refused = false;
    while start.elapsed() <= std::time::Duration::from_millis(1200) {
        if fhir_status().await == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        refused,
        "FHIR still accepted the token 1.2 s after ward user disable"
    );
    eprintln!("refused {:?} after ward user disable returned", start.elapsed());
    assert_eq!(e.userinfo(&at).await.0, 401);
    assert_eq!(e.introspect(&at).await["active"], false);
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
}

async fn introspection_answers_only_for_live_tokens_of_the_caller(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    let at = at_of(&t);
    let rt = rt_of(&t);
    let live = e.introspect(&at).await;
    assert_eq!(live["active"], true);
    assert_eq!(live["token_type"], "Bearer");
    assert_eq!(live["client_id"], e.app.0.as_str());
    assert_eq!(live["sub"], e.user_id.as_str());
    assert_eq!(live["patient"], "pat-1");
    assert_eq!(live["encounter"], "enc-1");
    assert_eq!(live["fhirUser"], format!("{}/Practitioner/prac-1", e.s.fhir));
    assert!(live["scope"].as_str().unwrap().contains("patient/*.rs"));
    assert!(live["exp"].is_u64() && live["iat"].is_u64());
    let live = e.introspect(&rt).await;
    assert_eq!(
        (live["active"].as_bool(), live["token_type"].as_str()),
        (Some(true), Some("refresh_token"))
    );
    assert_eq!(live["patient"], "pat-1");
    // Through the oauth2 crate too.
    let via_lib = e
        .app_client()
        .introspect(&oauth2::AccessToken::new(at.clone()))
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    assert!(via_lib.active());
    assert_eq!(via_lib.client_id().map(|c| c.as_str()), Some(e.app.0.as_str()));

    let inactive = json!({ "active": false });
    // Another client learns nothing about the app's tokens.
    let other = e.s.new_client("system/Patient.rs").await;
    assert_eq!(e.introspect_as(&other, &at).await, inactive);
    assert_eq!(e.introspect_as(&other, &rt).await, inactive);
    // Unknown, malformed.
    for junk in ["nope", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", &"x".repeat(9000)] {
        assert_eq!(e.introspect(junk).await, inactive, "{junk:.20}");
    }
    // Expired (signed with the deployment's own key, so only the time is wrong).
    let key = ward_crypto::keyfiles::load_signing_key(&e.s.config.keys_dir()).unwrap();
    let mut claims = payload(&at);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    claims["iat"] = json!(now - 1000);
    claims["nbf"] = json!(now - 1000);
    claims["exp"] = json!(now - 400);
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(key.kid());
    let expired = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(key.pkcs8_der()),
    )
    .unwrap();
    assert_eq!(e.introspect(&expired).await, inactive);
    // Another issuer's token (its own key and issuer), with the app as client.
    let dir = tempfile::tempdir().unwrap();
    ward_crypto::keyfiles::create_key_dir(&dir.path().join("keys")).unwrap();
    let foreign_key = ward_crypto::keyfiles::load_signing_key(&dir.path().join("keys")).unwrap();
    let foreign = ward_auth::TokenService::new(
        &foreign_key,
        "https://elsewhere.example",
        &e.s.fhir,
        std::time::Duration::from_secs(600),
    )
    .unwrap()
    .issue(&e.user_id, &e.app.0, "patient/*.rs")
    .unwrap();
    assert_eq!(e.introspect(&foreign.access_token).await, inactive);
    // Revoked.
    let resp =
        e.s.client
            .post(e.url("/oauth2/revoke"))
            .basic_auth(&e.app.0, Some(&e.app.1))
            .form(&[("token", rt.as_str())])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(e.introspect(&rt).await, inactive);
    assert_eq!(e.introspect(&at).await, inactive);
    // The caller must authenticate.
    let resp =
        e.s.client
            .post(e.url("/oauth2/introspect"))
            .form(&[("token", at.as_str())])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
    let resp =
        e.s.client
            .post(e.url("/oauth2/introspect"))
            .basic_auth(&e.app.0, Some("wrong"))
            .form(&[("token", at.as_str())])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
}

async fn revocation_endpoint(backend: Backend) {
    let e = env(backend).await;
    let http = http(e.s.client.clone());
    // A refresh token revokes its family.
    let t = e.tokens(ASKED).await;
    e.app_client()
        .revoke_token(StandardRevocableToken::RefreshToken(RefreshToken::new(rt_of(&t))))
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(e.refresh(&rt_of(&t), None).await.unwrap_err(), "invalid_grant");
    assert_eq!(e.userinfo(&at_of(&t)).await.0, 401);
    // An access token: that token only.
    let t = e.tokens(ASKED).await;
    let other = e.tokens(ASKED).await;
    e.app_client()
        .revoke_token(StandardRevocableToken::AccessToken(oauth2::AccessToken::new(
            at_of(&t),
        )))
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(e.userinfo(&at_of(&t)).await.0, 401);
    assert_eq!(e.userinfo(&at_of(&other)).await.0, 200);
    // Unknown tokens: 200 all the same.
    for junk in ["unknown", "a.b.c"] {
        let resp =
            e.s.client
                .post(e.url("/oauth2/revoke"))
                .basic_auth(&e.app.0, Some(&e.app.1))
                .form(&[("token", junk)])
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Another client cannot revoke the app's tokens (200, and nothing happens).
    let intruder = e.s.new_client(APP_SCOPES).await;
    for token in [rt_of(&other), at_of(&other)] {
        let resp =
            e.s.client
                .post(e.url("/oauth2/revoke"))
                .basic_auth(&intruder.0, Some(&intruder.1))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(e.userinfo(&at_of(&other)).await.0, 200);
    assert!(e.refresh(&rt_of(&other), None).await.is_ok());
    // An unauthenticated caller is refused.
    let resp =
        e.s.client
            .post(e.url("/oauth2/revoke"))
            .basic_auth(&e.app.0, Some("wrong"))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
}

async fn userinfo_needs_a_user_token_with_openid(backend: Backend) {
    let e = env(backend).await;
    let t = e.tokens(ASKED).await;
    let at = at_of(&t);
    let (status, body) = e.userinfo(&at).await;
    assert_eq!(status, 200);
    assert_eq!(body["sub"], e.user_id.as_str());
    assert_eq!(body["fhirUser"], format!("{}/Practitioner/prac-1", e.s.fhir));
    assert_eq!(body["preferred_username"], "dr-kim");
    // POST works too.
    let resp =
        e.s.client
            .post(e.url("/oauth2/userinfo"))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    // Without `profile`: no username.
    let t = e.tokens("openid fhirUser patient/*.rs").await;
    let (_, body) = e.userinfo(&at_of(&t)).await;
    assert!(body.get("preferred_username").is_none() && body["fhirUser"].is_string());
    // Without openid, a client's own token, no token, a bad token.
    let t = e.tokens("patient/*.rs").await;
    let resp =
        e.s.client
            .get(e.url("/oauth2/userinfo"))
            .bearer_auth(at_of(&t))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let admin = e.s.admin_token().await;
    assert_eq!(e.userinfo(&admin).await.0, 403);
    let resp = e.s.client.get(e.url("/oauth2/userinfo")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let resp =
        e.s.client
            .get(e.url("/oauth2/userinfo"))
            .bearer_auth("a.b.c")
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

async fn ehr_launch_is_single_use(backend: Backend) {
    let e = env(backend).await;
    let dir = e.s.dir.to_str().unwrap().to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args([
            "launch",
            "create",
            "--dir",
            &dir,
            "--user",
            &e.username,
            "--patient",
            "pat-7",
            "--encounter",
            "enc-9",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let launch = created["launch"].as_str().unwrap();
    assert!(launch.len() >= 43);
    let now = e.s.config.clock.now();
    let ctx = ward_auth::take_launch(&e.store, launch, &e.app.0, now)
        .await
        .unwrap();
    assert_eq!(
        (
            ctx.user_id.as_str(),
            ctx.patient.as_str(),
            ctx.encounter.as_deref()
        ),
        (e.user_id.as_str(), "pat-7", Some("enc-9"))
    );
    // Used once: never again. Made up: never.
    assert!(
        ward_auth::take_launch(&e.store, launch, &e.app.0, now)
            .await
            .is_err()
    );
    assert!(
        ward_auth::take_launch(&e.store, "made-up", &e.app.0, now)
            .await
            .is_err()
    );
    // Expired.
    let ctx = ward_auth::LaunchContext {
        user_id: e.user_id.clone(),
        patient: "pat-7".into(),
        encounter: None,
        client_id: None,
    };
    let old = ward_auth::codes::create_launch(&e.store, &ctx, now)
        .await
        .unwrap();
    let later = now + ward_auth::codes::LAUNCH_LIFETIME;
    assert!(
        ward_auth::take_launch(&e.store, &old, &e.app.0, later)
            .await
            .is_err()
    );
    // Bound to a client: another client cannot take it.
    let bound = ward_auth::LaunchContext {
        client_id: Some(e.app.0.clone()),
        ..ctx
    };
    let l = ward_auth::codes::create_launch(&e.store, &bound, now)
        .await
        .unwrap();
    assert!(
        ward_auth::take_launch(&e.store, &l, "another-client", now)
            .await
            .is_err()
    );
    // The launch value is stored only as a hash.
    let (bytes, _) = common::store_dump(&e.s).await;
    assert!(!bytes.windows(launch.len()).any(|w| w == launch.as_bytes()));
    // An unknown user gets no launch.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args([
            "launch",
            "create",
            "--dir",
            &dir,
            "--user",
            "nobody",
            "--patient",
            "pat-7",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

async fn codes_and_refresh_tokens_are_stored_only_as_hashes(backend: Backend) {
    let e = env(backend).await;
    let (code, verifier) = e.code(ASKED).await;
    let t = e
        .app_client()
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http(e.s.client.clone()))
        .await
        .unwrap();
    let rt = rt_of(&t);
    let (bytes, _) = common::store_dump(&e.s).await;
    for secret in [code.as_str(), rt.as_str()] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}

on_both_backends!(
    code_exchange_gives_user_tokens_with_launch_context,
    id_token_is_rs256_with_oidc_claims,
    pkce_is_mandatory_and_s256_only,
    redirect_uri_must_match_exactly,
    code_is_bound_to_its_client_and_expires,
    another_client_can_neither_burn_nor_revoke_a_code,
    code_replay_revokes_what_it_produced,
    public_clients_use_client_id_and_pkce,
    concurrent_code_presentations_yield_no_live_tokens,
    private_key_jwt_clients_exchange_codes,
    refresh_rotates_and_reuse_revokes_the_family,
    refresh_scope_may_narrow_never_widen,
    refresh_tokens_expire_idle_and_absolutely,
    online_access_ends_with_the_session_lifetime,
    refresh_refused_for_disabled_user_or_client,
    user_disable_cli_refuses_access_tokens_within_a_second,
    introspection_answers_only_for_live_tokens_of_the_caller,
    revocation_endpoint,
    userinfo_needs_a_user_token_with_openid,
    ehr_launch_is_single_use,
    codes_and_refresh_tokens_are_stored_only_as_hashes,
);
