//! ES256 access tokens: issuing and strict verification (SPEC AC-2), and RS256 id_tokens.
//!
//! Verification pins the algorithm to ES256, requires a known `kid`, and checks `iss`,
//! `aud`, `exp`, `nbf` and `iat` with a small clock skew; `alg: none`, HMAC algorithms and
//! foreign keys therefore never verify. Several ES256 keys may be loaded (signing-key
//! rotation): the newest signs, all verify, the JWKS lists all of them and the RS256 id_token
//! key.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use ward_crypto::{RsaSigningKey, SigningKey};

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// SPEC AC-2: access tokens live 5 to 15 minutes.
pub const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);
pub const MIN_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The claims Ward puts in, and requires of, an access token. The optional ones are those of
/// a user's token (authorization code or refresh grant) and are left out when absent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// The client id for a client's own token, the user id for a user's.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    pub scope: String,
    pub client_id: String,
    // --- A user's token only (issue 10); left out when absent. ---
    /// `Practitioner/ID` or `Patient/ID`.
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// Launch context: the patient (and encounter) in context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    /// The token family (one code exchange and its refresh tokens): revoking it revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
    /// When the user authenticated (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// How (RFC 8176 values: `pwd`, `otp`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

/// The user's claims of an access token ([`TokenService::issue_with`]); see [`Claims`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserClaims {
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub fam: Option<String>,
    pub auth_time: Option<i64>,
    pub amr: Option<Vec<String>>,
    pub acr: Option<String>,
}

/// Why a token was refused. Shown to clients only as a generic `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token signing failed")]
    Signing,
}

/// The name of a verification failure without its payload: a JSON error quotes the
/// token's own (client-chosen) claim values, which must not reach a log line.
fn kind_name(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    let debug = format!("{kind:?}");
    debug.split('(').next().unwrap_or_default().to_owned()
}

/// A freshly issued access token.
#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// Issues and verifies this server's access tokens.
pub struct TokenService {
    /// The `kid` of the newest ES256 key, which signs.
    kid: String,
    encoding: EncodingKey,
    /// Every ES256 key by `kid`, the older ones only verifying.
    decoding: HashMap<String, DecodingKey>,
    /// The RS256 key of id_tokens, if the key directory has one.
    id_token_key: Option<RsaSigningKey>,
    jwks: serde_json::Value,
    issuer: String,
    audience: String,
    lifetime: Duration,
    /// Claims of tokens whose signature already verified, by SHA-256 of the token, so each
    /// token costs one ECDSA verification rather than one per request (DESIGN "token
    /// verification cost"). Entries are dropped at `exp`.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
}

/// Most cached verifications kept; beyond it expired entries go, then everything.
const VERIFIED_CACHE_MAX: usize = 10_000;

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// One ES256 key and no id_token key. `lifetime` is clamped to the 5-15 minute range of
    /// SPEC AC-2.
    pub fn new(
        signing: &SigningKey,
        issuer: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Self, TokenError> {
        TokenService::with_keys(std::slice::from_ref(signing), None, issuer, audience, lifetime)
    }

    /// `signing` oldest first: the last one signs, all verify. `id_token_key` signs id_tokens
    /// ([`TokenService::sign_id_token`]).
    pub fn with_keys(
        signing: &[SigningKey],
        id_token_key: Option<RsaSigningKey>,
        issuer: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Self, TokenError> {
        let newest = signing.last().ok_or(TokenError::Signing)?;
        let mut decoding = HashMap::new();
        let mut keys = Vec::new();
        for key in signing {
            let jwk = key.public_jwk();
            let coord = |name: &str| jwk.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            let (Some(x), Some(y)) = (coord("x"), coord("y")) else {
                return Err(TokenError::Signing);
            };
            let dec = DecodingKey::from_ec_components(&x, &y).map_err(|_| TokenError::Signing)?;
            if decoding.insert(key.kid(), dec).is_none() {
                keys.push(jwk);
            }
        }
        // Newest first in the JWKS.
        keys.reverse();
        if let Some(rsa) = &id_token_key {
            keys.push(rsa.public_jwk());
        }
        Ok(TokenService {
            encoding: EncodingKey::from_ec_der(newest.pkcs8_der()),
            decoding,
            id_token_key,
            jwks: serde_json::json!({ "keys": keys }),
            kid: newest.kid(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            lifetime: lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The `kid` new access tokens carry.
    pub fn signing_kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` (an OIDC id_token's payload, made by the caller) as an RS256 JWT with the
    /// id_token key's `kid`. [`TokenError::Signing`] without such a key.
    pub fn sign_id_token(&self, claims: &serde_json::Value) -> Result<String, TokenError> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let key = self.id_token_key.as_ref().ok_or(TokenError::Signing)?;
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": key.kid() });
        let header = serde_json::to_vec(&header).map_err(|_| TokenError::Signing)?;
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Signing)?;
        let mut jwt = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let sig = key.sign(jwt.as_bytes()).map_err(|_| TokenError::Signing)?;
        jwt.push('.');
        jwt.push_str(&B64.encode(sig));
        Ok(jwt)
    }

    /// The public JWK Set served at `/oauth2/jwks`.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs an access token for `sub` acting through `client_id` with `scope`.
    pub fn issue(&self, sub: &str, client_id: &str, scope: &str) -> Result<IssuedToken, TokenError> {
        self.issue_with(sub, client_id, scope, UserClaims::default())
    }

    /// [`TokenService::issue`] with a user's claims.
    pub fn issue_with(
        &self,
        sub: &str,
        client_id: &str,
        scope: &str,
        user: UserClaims,
    ) -> Result<IssuedToken, TokenError> {
        let now = now_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.audience.clone(),
            exp: now.saturating_add(self.lifetime.as_secs()),
            iat: now,
            nbf: now,
            jti: ward_crypto::random_token(16),
            scope: scope.to_owned(),
            client_id: client_id.to_owned(),
            fhir_user: user.fhir_user,
            patient: user.patient,
            encounter: user.encounter,
            fam: user.fam,
            auth_time: user.auth_time,
            amr: user.amr,
            acr: user.acr,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let access_token =
            jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|_| TokenError::Signing)?;
        Ok(IssuedToken {
            access_token,
            expires_in: self.lifetime.as_secs(),
            scope: scope.to_owned(),
        })
    }

    /// Verifies signature, algorithm, key id, issuer, audience and time claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let digest = ward_crypto::sha256(token.as_bytes());
        let now = now_secs();
        if let Some(claims) = self.cache().get(&digest)
            && claims.exp.saturating_add(LEEWAY_SECS) > now
        {
            return Ok(claims.clone());
        }
        let claims = self.verify_signed(token)?;
        let mut cache = self.cache();
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.retain(|_, c| c.exp.saturating_add(LEEWAY_SECS) > now);
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Claims>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Rejected("algorithm not allowed".into()));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| TokenError::Rejected(kind_name(e.kind())))?;
        let claims = data.claims;
        if claims.iat > now_secs().saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Rejected("issued in the future".into()));
        }
        if claims.exp.saturating_sub(claims.iat) > MAX_LIFETIME.as_secs() {
            return Err(TokenError::Rejected("lifetime too long".into()));
        }
        Ok(claims)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rejection_reasons_carry_no_token_content() {
        let err: serde_json::Error = serde_json::from_str::<u64>("\"Zyxwarfield\"").unwrap_err();
        let kind = jsonwebtoken::errors::ErrorKind::Json(std::sync::Arc::new(err));
        assert_eq!(super::kind_name(&kind), "Json");
    }

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn service() -> TokenService {
        let dir = tempfile_dir();
        ward_crypto::keyfiles::create_key_dir(&dir.join("keys")).unwrap();
        let key = ward_crypto::keyfiles::load_signing_key(&dir.join("keys")).unwrap();
        TokenService::new(&key, "https://ward.test", "https://ward.test/fhir", MAX_LIFETIME).unwrap()
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-auth-test-{}", ward_crypto::random_token(8)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn tamper_payload(token: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        f(&mut payload);
        let payload = B64.encode(serde_json::to_vec(&payload).unwrap());
        format!("{}.{}.{}", parts[0], payload, parts[2])
    }

    #[test]
    fn round_trip_and_attacks() {
        let svc = service();
        let t = svc.issue("client-1", "client-1", "system/Patient.rs").unwrap();
        let claims = svc.verify(&t.access_token).unwrap();
        assert_eq!(claims.scope, "system/Patient.rs");
        assert_eq!(claims.aud, "https://ward.test/fhir");
        assert!(claims.exp - claims.iat <= 900);

        // tampered payload
        let forged = tamper_payload(&t.access_token, |p| p["scope"] = "system/*.cruds".into());
        assert!(svc.verify(&forged).is_err());

        // alg none
        let parts: Vec<&str> = t.access_token.split('.').collect();
        let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(svc.verify(&format!("{none_header}.{}.", parts[1])).is_err());

        // HS256 with the public key as HMAC secret
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(svc.kid.clone());
        let hs = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(b"x")).unwrap();
        assert!(svc.verify(&hs).is_err());

        // another server's key, same kid
        let other = service();
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(svc.kid.clone());
        let foreign = jsonwebtoken::encode(&h, &claims, &other.encoding).unwrap();
        assert!(svc.verify(&foreign).is_err());

        // wrong audience / issuer via a service with other settings but the same key
        let mut c2 = claims.clone();
        c2.aud = "https://elsewhere/fhir".into();
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(svc.kid.clone());
        assert!(
            svc.verify(&jsonwebtoken::encode(&h, &c2, &svc.encoding).unwrap())
                .is_err()
        );
        let mut c3 = claims.clone();
        c3.iss = "https://elsewhere".into();
        assert!(
            svc.verify(&jsonwebtoken::encode(&h, &c3, &svc.encoding).unwrap())
                .is_err()
        );

        // expired and not yet valid
        let mut c4 = claims.clone();
        c4.exp = now_secs() - 120;
        c4.iat = c4.exp - 600;
        c4.nbf = c4.iat;
        assert!(
            svc.verify(&jsonwebtoken::encode(&h, &c4, &svc.encoding).unwrap())
                .is_err()
        );
        let mut c5 = claims.clone();
        c5.nbf = now_secs() + 600;
        c5.iat = c5.nbf;
        c5.exp = c5.nbf + 600;
        assert!(
            svc.verify(&jsonwebtoken::encode(&h, &c5, &svc.encoding).unwrap())
                .is_err()
        );

        // unknown kid
        let mut h2 = Header::new(Algorithm::ES256);
        h2.kid = Some("nope".into());
        assert_eq!(
            svc.verify(&jsonwebtoken::encode(&h2, &claims, &svc.encoding).unwrap()),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn cached_verification_still_expires_and_never_caches_failures() {
        let svc = service();
        let t = svc.issue("c", "c", "system/Patient.r").unwrap();
        assert!(svc.verify(&t.access_token).is_ok());
        assert!(svc.verify(&t.access_token).is_ok(), "cache hit");
        // a cached entry past its exp is not used: the token is verified afresh
        let digest = ward_crypto::sha256(t.access_token.as_bytes());
        let real_exp = svc.cache()[&digest].exp;
        svc.cache().get_mut(&digest).unwrap().exp = now_secs() - 2 * LEEWAY_SECS;
        svc.cache().get_mut(&digest).unwrap().scope = "system/*.cruds".into();
        let again = svc.verify(&t.access_token).unwrap();
        assert_eq!((again.exp, again.scope.as_str()), (real_exp, "system/Patient.r"));
        // a forged token is never cached as valid
        let forged = format!("{}x", t.access_token);
        assert!(svc.verify(&forged).is_err());
        assert!(svc.verify(&forged).is_err());
    }
}
