//! Token-endpoint scenarios (issue 10 "Performance"): `client_credentials` with a client
//! secret (Basic), and with a `private_key_jwt` assertion (ES384, a fresh `jti` each request,
//! signed by the load generator).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::client::Reply;
use crate::load::{Rng, Workload};

fn form_request(body: String, basic: Option<&HeaderValue>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(v) = basic {
        b = b.header(header::AUTHORIZATION, v.clone());
    }
    b.body(Full::new(Bytes::from(body))).unwrap_or_default()
}

fn check_token(reply: &Reply) -> Result<(), String> {
    if reply.status != StatusCode::OK {
        return Err(format!("token request answered HTTP {}", reply.status));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("token body: {e}"))?;
    if v["access_token"].as_str().is_none_or(str::is_empty) {
        return Err("no access_token".into());
    }
    Ok(())
}

/// `POST /oauth2/token` with `Authorization: Basic` (client id and secret).
pub struct TokenSecret {
    basic: HeaderValue,
}

impl TokenSecret {
    pub fn new(client_id: &str, secret: &str) -> anyhow::Result<TokenSecret> {
        let basic = format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")));
        Ok(TokenSecret {
            basic: HeaderValue::from_str(&basic)?,
        })
    }
}

impl Workload for TokenSecret {
    fn request(&self, _rng: &mut Rng) -> (Request<Full<Bytes>>, usize) {
        (
            form_request("grant_type=client_credentials".into(), Some(&self.basic)),
            0,
        )
    }

    fn check(&self, _tag: usize, reply: &Reply) -> Result<(), String> {
        check_token(reply)
    }
}

/// `POST /oauth2/token` with a signed client assertion.
pub struct TokenJwt {
    key: EcdsaKeyPair,
    client_id: String,
    token_url: String,
}

/// The key id the benchmark's client registers.
pub const BENCH_KID: &str = "bench-es384";

impl TokenJwt {
    /// A new ES384 key; `jwks()` is what to register.
    pub fn new_key() -> anyhow::Result<EcdsaKeyPair> {
        let alg = &ECDSA_P384_SHA384_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("ES384 key generation failed"))?;
        EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).map_err(|_| anyhow::anyhow!("ES384 key"))
    }

    /// The public JWK Set of `key`.
    pub fn jwks(key: &EcdsaKeyPair) -> Value {
        let p = key.public_key().as_ref();
        let (x, y) = p.get(1..).unwrap_or_default().split_at(48);
        json!({"keys": [{"kty": "EC", "crv": "P-384", "x": B64.encode(x), "y": B64.encode(y),
                         "kid": BENCH_KID, "alg": "ES384"}]})
    }

    pub fn new(key: EcdsaKeyPair, client_id: &str, token_url: &str) -> TokenJwt {
        TokenJwt {
            key,
            client_id: client_id.into(),
            token_url: token_url.into(),
        }
    }

    fn assertion(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = json!({"alg": "ES384", "kid": BENCH_KID, "typ": "JWT"});
        let claims = json!({"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                            "exp": now + 240, "iat": now, "jti": uuid::Uuid::new_v4().to_string()});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map(|s| B64.encode(s.as_ref()))
            .unwrap_or_default();
        format!("{input}.{sig}")
    }
}

impl Workload for TokenJwt {
    fn request(&self, _rng: &mut Rng) -> (Request<Full<Bytes>>, usize) {
        let body = format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
            self.assertion()
        );
        (form_request(body, None), 0)
    }

    fn check(&self, _tag: usize, reply: &Reply) -> Result<(), String> {
        check_token(reply)
    }
}
