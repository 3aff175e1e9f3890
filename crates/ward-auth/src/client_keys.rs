//! Client public keys for `private_key_jwt` (SMART Backend Services): a registered JWK Set
//! (inline, or fetched from an https URL and cached), validated at registration and at use.
//!
//! Only public keys of the kinds SMART names are accepted: EC P-384 (ES384) and RSA of at least
//! 2048 bits (RS384), plus EC P-256 (ES256) and RS256. The algorithm is pinned by the key: a
//! header `alg` the key's type does not allow (`none`, any `HS*`, ES256 on a P-384 key) fails.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Largest JWK Set accepted (file or URL).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys in one set.
const MAX_KEYS: usize = 16;
/// Private-key members of a JWK (RFC 7518 §6.2.2, §6.3.2, §6.4): never accepted.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a JWK Set was refused (the message names no key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWK Set is not a JSON object with a non-empty \"keys\" array (at most 16 keys)")]
    Shape,
    #[error("the JWK Set is larger than 64 KiB")]
    TooLarge,
    #[error("a key holds private key material; register only public keys")]
    PrivateKey,
    #[error("a key has no \"kid\", or two keys share one")]
    Kid,
    #[error("unsupported key: {0}")]
    Unsupported(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    P256,
    P384,
    Rsa,
}

/// One verified-shape public key of a client.
#[derive(Clone)]
pub struct ClientKey {
    kid: String,
    kind: KeyType,
    /// The JWK's own `alg`, if it names one.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm to verify with when the header says `header_alg`, if this key allows it.
    fn algorithm_for(&self, header_alg: &str) -> Option<Algorithm> {
        let alg = match (self.kind, header_alg) {
            (KeyType::P384, "ES384") => Algorithm::ES384,
            (KeyType::P256, "ES256") => Algorithm::ES256,
            (KeyType::Rsa, "RS384") => Algorithm::RS384,
            (KeyType::Rsa, "RS256") => Algorithm::RS256,
            _ => return None,
        };
        match self.alg {
            Some(pinned) if pinned != alg => None,
            _ => Some(alg),
        }
    }
}

fn b64_len(v: Option<&Value>) -> Option<usize> {
    let s = v?.as_str()?;
    URL_SAFE_NO_PAD.decode(s).ok().map(|b| b.len())
}

fn parse_key(jwk: &serde_json::Map<String, Value>) -> Result<ClientKey, JwksError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(JwksError::PrivateKey);
    }
    let kid = match jwk.get("kid") {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => k.clone(),
        _ => return Err(JwksError::Kid),
    };
    if jwk.get("use").is_some_and(|u| u != "sig") {
        return Err(JwksError::Unsupported("\"use\" must be \"sig\""));
    }
    let str_of = |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default();
    let (kind, decoding) = match (str_of("kty"), str_of("crv")) {
        ("EC", crv @ ("P-256" | "P-384")) => {
            let (kind, len) = if crv == "P-256" {
                (KeyType::P256, 32)
            } else {
                (KeyType::P384, 48)
            };
            if b64_len(jwk.get("x")) != Some(len) || b64_len(jwk.get("y")) != Some(len) {
                return Err(JwksError::Unsupported("EC coordinates of the wrong length"));
            }
            let key = DecodingKey::from_ec_components(str_of("x"), str_of("y"))
                .map_err(|_| JwksError::Unsupported("EC key"))?;
            (kind, key)
        }
        ("EC", _) => return Err(JwksError::Unsupported("EC keys must be on P-256 or P-384")),
        ("RSA", _) => {
            if b64_len(jwk.get("n")).is_none_or(|n| n < 256) || b64_len(jwk.get("e")).is_none() {
                return Err(JwksError::Unsupported("RSA keys must have at least 2048 bits"));
            }
            let key = DecodingKey::from_rsa_components(str_of("n"), str_of("e"))
                .map_err(|_| JwksError::Unsupported("RSA key"))?;
            (KeyType::Rsa, key)
        }
        _ => return Err(JwksError::Unsupported("only EC and RSA keys are accepted")),
    };
    let alg = match jwk.get("alg").and_then(Value::as_str) {
        None => None,
        Some(a) => {
            let alg = match a {
                "ES256" => Algorithm::ES256,
                "ES384" => Algorithm::ES384,
                "RS256" => Algorithm::RS256,
                "RS384" => Algorithm::RS384,
                _ => return Err(JwksError::Unsupported("alg must be ES384, RS384, ES256 or RS256")),
            };
            let key = ClientKey {
                kid: kid.clone(),
                kind,
                alg: None,
                decoding: decoding.clone(),
            };
            if key.algorithm_for(a).is_none() {
                return Err(JwksError::Unsupported("alg does not fit the key type"));
            }
            Some(alg)
        }
    };
    Ok(ClientKey {
        kid,
        kind,
        alg,
        decoding,
    })
}

/// Parses and validates a JWK Set (public EC P-256/P-384 or RSA ≥ 2048-bit keys, each with a
/// unique `kid`).
pub fn parse_jwks(text: &str) -> Result<Vec<ClientKey>, JwksError> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value = serde_json::from_str(text).map_err(|_| JwksError::Shape)?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::Shape);
    };
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(JwksError::Shape);
    }
    let mut out: Vec<ClientKey> = Vec::with_capacity(keys.len());
    for k in keys {
        let obj = k.as_object().ok_or(JwksError::Shape)?;
        let key = parse_key(obj)?;
        if out.iter().any(|o| o.kid == key.kid) {
            return Err(JwksError::Kid);
        }
        out.push(key);
    }
    Ok(out)
}

/// Why an assertion's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    UnknownKid,
    AlgorithmNotAllowed,
    BadSignature,
}

/// Verifies the compact JWT `jwt` with the key `kid` of `keys`, the algorithm pinned by the
/// key's type. Only the signature: the caller checks the claims.
pub fn verify_signature(
    keys: &[ClientKey],
    kid: &str,
    header_alg: &str,
    jwt: &str,
) -> Result<(), KeyRefusal> {
    let key = keys.iter().find(|k| k.kid == kid).ok_or(KeyRefusal::UnknownKid)?;
    let alg = key
        .algorithm_for(header_alg)
        .ok_or(KeyRefusal::AlgorithmNotAllowed)?;
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key.decoding, &validation)
        .map(|_| ())
        .map_err(|_| KeyRefusal::BadSignature)
}

/// Fetches a JWK Set document over https (implemented by the server, which owns HTTP).
pub trait JwksFetcher: Send + Sync {
    fn fetch<'a>(&'a self, url: &'a str)
    -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
}

/// How long a fetched set is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// At most one fetch per URL in this interval, whatever the requests ask for (an unknown
/// `kid` cannot make Ward fetch on every request).
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Most URLs cached.
const MAX_CACHED_URLS: usize = 1000;

struct Cached {
    keys: Arc<Vec<ClientKey>>,
    fetched: Option<Instant>,
    attempted: Instant,
}

/// JWK Sets fetched from client URLs, cached, refreshed when a `kid` is unknown (rate-limited).
pub struct RemoteJwks {
    fetcher: Box<dyn JwksFetcher>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks").finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub fn new(fetcher: Box<dyn JwksFetcher>) -> Self {
        RemoteJwks {
            fetcher,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys at `url`, fetched if not cached, stale, or lacking `kid` (at most once per
    /// [`JWKS_MIN_REFETCH`] per URL).
    pub async fn keys(&self, url: &str, kid: &str) -> Arc<Vec<ClientKey>> {
        let now = Instant::now();
        {
            let mut cache = self.lock();
            let entry = cache.get_mut(url);
            let (keys, fetch) = match entry {
                Some(c) => {
                    let fresh = c.fetched.is_some_and(|t| now.duration_since(t) < JWKS_TTL);
                    let has_kid = c.keys.iter().any(|k| k.kid == kid);
                    let may = now.duration_since(c.attempted) >= JWKS_MIN_REFETCH;
                    let fetch = (!fresh || !has_kid) && may;
                    if fetch {
                        c.attempted = now;
                    }
                    (c.keys.clone(), fetch)
                }
                None => {
                    if cache.len() >= MAX_CACHED_URLS {
                        cache.clear();
                    }
                    cache.insert(
                        url.to_owned(),
                        Cached {
                            keys: Arc::new(Vec::new()),
                            fetched: None,
                            attempted: now,
                        },
                    );
                    (Arc::new(Vec::new()), true)
                }
            };
            if !fetch {
                return keys;
            }
        }
        let fetched = match self.fetcher.fetch(url).await {
            Ok(text) => parse_jwks(&text).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let mut cache = self.lock();
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                cache.insert(
                    url.to_owned(),
                    Cached {
                        keys: keys.clone(),
                        fetched: Some(Instant::now()),
                        attempted: now,
                    },
                );
                keys
            }
            Err(e) => {
                tracing::warn!(error = %e, "client JWKS fetch failed");
                cache.get(url).map(|c| c.keys.clone()).unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const P256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const P256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn jwks(kids: &[&str]) -> String {
        let keys: Vec<Value> = kids
            .iter()
            .map(|k| serde_json::json!({"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": k}))
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    struct Fake {
        calls: Arc<AtomicUsize>,
        kids: Arc<Mutex<Vec<&'static str>>>,
    }

    impl JwksFetcher for Fake {
        fn fetch<'a>(
            &'a self,
            _url: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let body = jwks(&self.kids.lock().unwrap());
            Box::pin(async move { Ok(body) })
        }
    }

    #[tokio::test]
    async fn remote_sets_are_cached_and_refetched_at_most_once_per_interval() {
        let calls = Arc::new(AtomicUsize::new(0));
        let kids = Arc::new(Mutex::new(vec!["a"]));
        let remote = RemoteJwks::new(Box::new(Fake {
            calls: calls.clone(),
            kids: kids.clone(),
        }));
        let url = "https://keys.example/jwks";
        assert_eq!(remote.keys(url, "a").await.len(), 1);
        assert_eq!(remote.keys(url, "a").await.len(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "cached");
        // An unknown kid right after a fetch does not fetch again (an attacker's flood).
        for _ in 0..50 {
            assert!(!remote.keys(url, "b").await.iter().any(|k| k.kid() == "b"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "rate-limited");
        // Once the interval has passed, an unknown kid refreshes the set (key rotation).
        kids.lock().unwrap().push("b");
        remote.lock().get_mut(url).unwrap().attempted -= JWKS_MIN_REFETCH;
        assert!(remote.keys(url, "b").await.iter().any(|k| k.kid() == "b"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn algorithm_is_pinned_by_key_type() {
        let keys = parse_jwks(&jwks(&["a"])).unwrap();
        let k = &keys[0];
        assert_eq!(k.algorithm_for("ES256"), Some(Algorithm::ES256));
        for alg in ["none", "HS256", "ES384", "RS256", "PS256", "EdDSA"] {
            assert_eq!(k.algorithm_for(alg), None, "{alg}");
        }
        assert_eq!(
            verify_signature(&keys, "a", "HS256", "e30.e30.c2ln"),
            Err(KeyRefusal::AlgorithmNotAllowed)
        );
        assert_eq!(
            verify_signature(&keys, "zz", "ES256", "e30.e30.c2ln"),
            Err(KeyRefusal::UnknownKid)
        );
        assert_eq!(
            verify_signature(&keys, "a", "ES256", "e30.e30.c2ln"),
            Err(KeyRefusal::BadSignature)
        );
    }
}
