//! External identity providers (SPEC AC-3): access tokens of the issuers configured in
//! `[[auth.trusted_issuers]]`, each verified against its own JWKS only.
//!
//! Checks: the token's algorithm is in the issuer's allowlist (asymmetric only: `none` and
//! `HS*` are refused when the settings are made), `kid` is present and names a key of that
//! issuer whose type fits the algorithm (so an `HS256` token keyed with a public key, or an
//! `ES384` token against a P-256 key, never verifies), `iss` is exactly the issuer, `aud` (a
//! string or an array) contains the audience, `exp` is present, and `exp`, `nbf` and `iat`
//! hold with at most [`SKEW_SECS`] of clock skew. The JWKS is read when first needed and again
//! on an unknown `kid`, at most once per `refresh_secs` (single flight).
//!
//! A verified token becomes Ward [`Claims`]: `sub` and `client_id` are namespaced by the issuer
//! (`<issuer>#sub:<sub>`, `<issuer>#client:<azp>`) so they can never equal a Ward user or
//! client id, and the scopes are the token's scope claim intersected with what the mapped
//! roles may have ([`role_ceiling`]). A token none of whose role values is mapped is refused.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::scope::ScopeSet;
use crate::token::{Claims, TokenError};

/// Clock skew tolerated on `exp`, `nbf` and `iat` of external tokens (AC-3: at most 60 s).
pub const SKEW_SECS: u64 = 60;
/// Largest JWKS document read, from a file or over HTTPS.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Longest bearer token looked at (headers are bounded anyway; this bounds the decoding).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `sub`, `azp`/`client_id` and `jti` accepted.
const MAX_ID_LEN: usize = 255;
/// RSA keys shorter than this are not loaded.
const MIN_RSA_BITS: usize = 2048;

/// Ward's roles (SPEC AC-7), the targets of a claim-to-role mapping.
pub const ROLES: [&str; 9] = [
    "admin",
    "clinician",
    "nurse",
    "front-desk",
    "billing",
    "researcher",
    "auditor",
    "patient",
    "service",
];

/// What a role may be granted through an external token, until the policy issue decides per
/// role. `user/` and `patient/` scopes reach no data yet (only `system/` is honoured); only the
/// `service` role may hold `system/` scopes, and its wildcard never reaches AuditEvent
/// ([`crate::scope::EXPLICIT_ONLY`]).
pub fn role_ceiling(role: &str) -> ScopeSet {
    const IDENTITY: &str = "openid fhirUser profile online_access offline_access";
    let scopes = match role {
        "service" => "system/*.cruds".to_owned(),
        "patient" => format!("patient/*.cruds launch launch/patient {IDENTITY}"),
        "auditor" => format!("user/AuditEvent.rs {IDENTITY}"),
        r if ROLES.contains(&r) => {
            format!("user/*.cruds patient/*.cruds launch launch/patient launch/encounter {IDENTITY}")
        }
        _ => String::new(),
    };
    ScopeSet::parse_lenient(&scopes)
}

/// Why a trusted-issuer configuration cannot be used. Names the setting, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExternalConfigError(pub String);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    /// `https://` only.
    Uri(String),
}

/// One trusted issuer, validated.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    pub algorithms: Vec<Algorithm>,
    /// Claim holding the role values (a string or an array); dots descend into objects
    /// (`realm_access.roles`).
    pub role_claim: String,
    /// External role value → Ward role.
    pub roles: BTreeMap<String, String>,
    pub fhir_user_claim: Option<String>,
    /// Claim holding the scopes (a space-separated string or an array).
    pub scope_claim: String,
    /// Least seconds between two JWKS reads.
    pub refresh_secs: u64,
}

impl IssuerSettings {
    /// Checks everything that can be checked without the keys.
    pub fn validate(&self) -> Result<(), ExternalConfigError> {
        let err = |m: String| Err(ExternalConfigError(m));
        let i = &self.issuer;
        if !i.starts_with("https://") || i.len() > 256 || i.contains(['#', '?', ' ']) || i.len() <= 8 {
            return err("issuer must be an https:// URL without query or fragment".into());
        }
        if self.audience.trim().is_empty() {
            return err("audience must not be empty".into());
        }
        if let JwksSource::Uri(u) = &self.jwks
            && (!u.starts_with("https://") || u.len() <= 8)
        {
            return err("jwks_uri must be an https:// URL".into());
        }
        if self.algorithms.is_empty() {
            return err("algorithms must name at least one algorithm".into());
        }
        if self.role_claim.is_empty() || self.scope_claim.is_empty() {
            return err("role_claim and scope_claim must not be empty".into());
        }
        if self.roles.is_empty() {
            return err("roles must map at least one claim value to a Ward role".into());
        }
        if let Some(bad) = self.roles.values().find(|r| !ROLES.contains(&r.as_str())) {
            return err(format!(
                "roles maps to {bad:?}, which is not a Ward role (one of {})",
                ROLES.join(", ")
            ));
        }
        if self.refresh_secs == 0 {
            return err("jwks_refresh_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Parses an allowlist entry. `none` and the HMAC algorithms are refused: an issuer's keys are
/// public, and an HMAC "verified" with a public key proves nothing.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, ExternalConfigError> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        n if n.eq_ignore_ascii_case("none") => {
            return Err(ExternalConfigError("algorithm \"none\" is never allowed".into()));
        }
        n if n.to_ascii_uppercase().starts_with("HS") => {
            return Err(ExternalConfigError(format!(
                "algorithm {n:?} is an HMAC: never allowed for an external issuer (its keys are public)"
            )));
        }
        n => {
            return Err(ExternalConfigError(format!(
                "unknown algorithm {n:?} (allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
            )));
        }
    };
    Ok(alg)
}

/// A JWKS read in progress: the document's bytes, or why it could not be read.
pub type JwksFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;

/// Reads the JWKS of one source. The HTTPS variant lives in `ward-server` (no HTTP here); it
/// bounds the time and the size ([`MAX_JWKS_BYTES`]).
pub trait JwksFetch: Send + Sync {
    fn fetch<'a>(&'a self, source: &'a JwksSource) -> JwksFuture<'a>;
}

/// Reads `jwks_file` sources; refuses URIs.
#[derive(Debug, Default)]
pub struct FileFetch;

impl JwksFetch for FileFetch {
    fn fetch<'a>(&'a self, source: &'a JwksSource) -> JwksFuture<'a> {
        Box::pin(async move {
            match source {
                JwksSource::File(path) => read_file_bounded(path).await,
                JwksSource::Uri(_) => Err("no HTTPS client".into()),
            }
        })
    }
}

/// Reads a JWKS file of at most [`MAX_JWKS_BYTES`].
pub async fn read_file_bounded(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if usize::try_from(len).map_or(true, |l| l > MAX_JWKS_BYTES) {
        return Err(format!(
            "{} is larger than {MAX_JWKS_BYTES} bytes",
            path.display()
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The kind of a public key, to match it with an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

struct VerifyKey {
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

fn fits(kind: KeyKind, alg: Algorithm) -> bool {
    use Algorithm::*;
    match kind {
        KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        KeyKind::P256 => alg == ES256,
        KeyKind::P384 => alg == ES384,
        KeyKind::Ed25519 => alg == EdDSA,
    }
}

/// The usable signature keys of a JWKS, by `kid`. Keys without `kid`, symmetric keys, keys
/// for encryption, short RSA keys and unsupported curves are left out.
pub fn parse_jwks(bytes: &[u8]) -> Result<usize, String> {
    keys_of(bytes).map(|k| k.len())
}

fn keys_of(bytes: &[u8]) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    // Key by key: a key of a kind or algorithm this library does not know is skipped, not
    // fatal to the whole set.
    let set: Value = serde_json::from_slice(bytes).map_err(|_| "not a JWK Set".to_owned())?;
    let list = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "not a JWK Set".to_owned())?;
    let mut out = HashMap::new();
    for jwk in list.iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(jwk.clone()) else {
            continue;
        };
        if let Some((kid, key)) = usable_key(&jwk) {
            out.entry(kid).or_insert_with(|| Arc::new(key));
        }
    }
    Ok(out)
}

fn usable_key(jwk: &Jwk) -> Option<(String, VerifyKey)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD.decode(&p.n).ok()?;
            let bits = n.iter().skip_while(|b| **b == 0).count().saturating_mul(8);
            if bits < MIN_RSA_BITS {
                return None;
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
        // `oct` (HMAC) keys and anything else are never loaded.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(key_algorithm(a)?),
    };
    if alg.is_some_and(|a| !fits(kind, a)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, VerifyKey { kind, alg, key }))
}

/// A JWK `alg` as a signature algorithm; `None` for HMAC, encryption and unknown ones.
fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<VerifyKey>>,
    /// When the JWKS was last read (successfully or not), in seconds since the epoch.
    last_read: Option<u64>,
}

/// One trusted issuer with its cached keys.
pub struct TrustedIssuer {
    settings: IssuerSettings,
    fetch: Arc<dyn JwksFetch>,
    cache: Mutex<KeyCache>,
    /// One JWKS read at a time per issuer.
    reading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

/// An external caller, verified and mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// Ward claims: namespaced `sub` and `client_id`, granted `scope`.
    pub claims: Claims,
    pub issuer: String,
    /// The token's own `sub`.
    pub subject: String,
    /// Ward roles the token's role values map to (sorted, at least one).
    pub roles: Vec<String>,
    /// `Practitioner/ID`, `Patient/ID`, ... from `fhir_user_claim`, when well-formed.
    pub fhir_user: Option<String>,
}

impl TrustedIssuer {
    pub fn new(settings: IssuerSettings, fetch: Arc<dyn JwksFetch>) -> Result<Self, ExternalConfigError> {
        settings.validate()?;
        Ok(TrustedIssuer {
            settings,
            fetch,
            cache: Mutex::new(KeyCache::default()),
            reading: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &IssuerSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the JWKS now (at start-up for files): an error when it cannot be read or holds no
    /// usable key.
    pub async fn load(&self, now: u64) -> Result<usize, String> {
        let _reading = self.reading.lock().await;
        self.read_keys(now).await
    }

    async fn read_keys(&self, now: u64) -> Result<usize, String> {
        self.lock().last_read = Some(now);
        let bytes = self.fetch.fetch(&self.settings.jwks).await?;
        let keys = keys_of(&bytes)?;
        if keys.is_empty() {
            return Err("the JWKS holds no usable signature key".into());
        }
        let n = keys.len();
        self.lock().keys = keys;
        Ok(n)
    }

    /// The key named `kid`, reading the JWKS again when it is unknown and the last read is at
    /// least `refresh_secs` old. A failed read keeps the keys known so far.
    async fn key(&self, kid: &str, now: u64) -> Option<Arc<VerifyKey>> {
        if let Some(k) = self.lock().keys.get(kid) {
            return Some(k.clone());
        }
        let _reading = self.reading.lock().await;
        let due = {
            let cache = self.lock();
            if let Some(k) = cache.keys.get(kid) {
                return Some(k.clone());
            }
            cache
                .last_read
                .is_none_or(|t| now >= t.saturating_add(self.settings.refresh_secs) || now < t)
        };
        if !due {
            return None;
        }
        if let Err(e) = self.read_keys(now).await {
            tracing::warn!(issuer = %self.settings.issuer, error = %e, "JWKS of a trusted issuer could not be read");
        }
        self.lock().keys.get(kid).cloned()
    }

    /// Verifies `token` as this issuer's and maps it (see the module documentation). `now` is
    /// seconds since the epoch.
    pub async fn verify(&self, token: &str, now: u64) -> Result<ExternalIdentity, TokenError> {
        let s = &self.settings;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !s.algorithms.contains(&header.alg) {
            return Err(reject("algorithm not allowed"));
        }
        let kid = header
            .kid
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| reject("no kid"))?;
        let key = self.key(kid, now).await.ok_or(TokenError::UnknownKey)?;
        if !fits(key.kind, header.alg) || key.alg.is_some_and(|a| a != header.alg) {
            return Err(reject("key does not fit the algorithm"));
        }
        let mut validation = Validation::new(header.alg);
        // Times, issuer and audience are checked below against `now`, exactly.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|e| TokenError::Rejected(crate::token::kind_name(e.kind())))?
            .claims;
        self.check_claims(&claims, now)?;
        self.map(&claims, now)
    }

    fn check_claims(&self, c: &Value, now: u64) -> Result<(), TokenError> {
        let s = &self.settings;
        if c.get("iss").and_then(Value::as_str) != Some(s.issuer.as_str()) {
            return Err(reject("issuer"));
        }
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => *a == s.audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(s.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(reject("audience"));
        }
        let exp = time_claim(c, "exp")?.ok_or_else(|| reject("no exp"))?;
        if now > exp.saturating_add(SKEW_SECS) {
            return Err(reject("expired"));
        }
        if time_claim(c, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(SKEW_SECS)) {
            return Err(reject("not yet valid"));
        }
        if time_claim(c, "iat")?.is_some_and(|iat| iat > now.saturating_add(SKEW_SECS)) {
            return Err(reject("issued in the future"));
        }
        Ok(())
    }

    fn map(&self, c: &Value, now: u64) -> Result<ExternalIdentity, TokenError> {
        let s = &self.settings;
        let subject = c
            .get("sub")
            .and_then(Value::as_str)
            .filter(|v| plain_id(v))
            .ok_or_else(|| reject("sub missing or not plain"))?;
        let mut roles: Vec<String> = strings_at(c, &s.role_claim)
            .iter()
            .filter_map(|v| s.roles.get(v).cloned())
            .collect();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err(reject("no mapped role"));
        }
        let mut ceiling = ScopeSet::default();
        for r in &roles {
            ceiling = union(&ceiling, &role_ceiling(r));
        }
        let asked = ScopeSet::parse_lenient(&strings_at(c, &s.scope_claim).join(" "));
        let granted = asked.intersect(&ceiling);
        let client = ["azp", "client_id"]
            .iter()
            .filter_map(|k| c.get(*k).and_then(Value::as_str))
            .find(|v| plain_id(v));
        let client_id = match client {
            Some(azp) => format!("{}#client:{azp}", s.issuer),
            None => format!("{}#client", s.issuer),
        };
        let fhir_user = s
            .fhir_user_claim
            .as_deref()
            .and_then(|k| c.get(k))
            .and_then(Value::as_str)
            .filter(|v| fhir_user_like(v))
            .map(str::to_owned);
        let exp = time_claim(c, "exp")?.unwrap_or(now);
        let iat = time_claim(c, "iat")?.unwrap_or(now);
        // Built through serde so that the optional claims of user tokens (`fhirUser`, ...)
        // take their defaults, and `fhirUser` its value where `Claims` has the field.
        let jti = c
            .get("jti")
            .and_then(Value::as_str)
            .filter(|v| plain_id(v))
            .unwrap_or_default();
        let mut ward = serde_json::json!({
            "iss": s.issuer,
            "sub": format!("{}#sub:{subject}", s.issuer),
            "aud": s.audience,
            "exp": exp,
            "iat": iat,
            "nbf": time_claim(c, "nbf")?.unwrap_or(iat),
            "jti": jti,
            "scope": granted.to_string(),
            "client_id": client_id,
        });
        if let (Some(f), Some(obj)) = (&fhir_user, ward.as_object_mut()) {
            obj.insert("fhirUser".into(), Value::String(f.clone()));
        }
        let claims: Claims = serde_json::from_value(ward).map_err(|_| reject("claims"))?;
        Ok(ExternalIdentity {
            claims,
            issuer: s.issuer.clone(),
            subject: subject.to_owned(),
            roles,
            fhir_user,
        })
    }
}

fn reject(why: &str) -> TokenError {
    TokenError::Rejected(why.to_owned())
}

/// A NumericDate claim: `None` when absent, an error when not a non-negative number.
fn time_claim(c: &Value, name: &str) -> Result<Option<u64>, TokenError> {
    match c.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
                    .map(|f| f.trunc() as u64)
            })
            .map(Some)
            .ok_or_else(|| reject("time claim is not a number")),
    }
}

/// Identifiers that go into Ward claims and the audit trail: visible ASCII, bounded.
fn plain_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic())
}

/// `Practitioner/ID`, `Patient/ID`, `RelatedPerson/ID`, `Person/ID` with a FHIR id.
fn fhir_user_like(v: &str) -> bool {
    let Some((rtype, id)) = v.split_once('/') else {
        return false;
    };
    matches!(rtype, "Practitioner" | "Patient" | "RelatedPerson" | "Person")
        && (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The strings at a dotted claim path: a string (split on spaces) or an array of strings.
fn strings_at(c: &Value, path: &str) -> Vec<String> {
    let mut v = Some(c);
    for part in path.split('.') {
        v = v.and_then(|x| x.get(part));
    }
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn union(a: &ScopeSet, b: &ScopeSet) -> ScopeSet {
    ScopeSet::parse_lenient(&format!("{a} {b}"))
}

/// The trusted issuers, by issuer.
#[derive(Debug, Default)]
pub struct TrustedIssuers {
    issuers: Vec<TrustedIssuer>,
}

impl TrustedIssuers {
    pub fn new(issuers: Vec<TrustedIssuer>) -> Result<Self, ExternalConfigError> {
        for (n, i) in issuers.iter().enumerate() {
            if issuers
                .iter()
                .skip(n.saturating_add(1))
                .any(|j| j.settings.issuer == i.settings.issuer)
            {
                return Err(ExternalConfigError(format!(
                    "issuer {:?} is configured twice",
                    i.settings.issuer
                )));
            }
        }
        Ok(TrustedIssuers { issuers })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.issuers.iter()
    }

    /// The trusted issuer a token claims to come from (its `iss`, read before any
    /// verification; the token is then verified against that issuer only).
    pub fn for_token(&self, token: &str) -> Option<&TrustedIssuer> {
        if self.issuers.is_empty() {
            return None;
        }
        let iss = unverified_issuer(token)?;
        self.issuers.iter().find(|i| i.settings.issuer == iss)
    }
}

/// The `iss` of a token's payload, unverified: only to choose which keys verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests;
