//! SMART Backend Services client assertions (`private_key_jwt`, RFC 7523 §3): the JWT's shape
//! and claims, checked without its signature (which `ward-auth` verifies with the client's
//! registered key). Pure: the caller supplies the time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::OAuthError;

/// The only `client_assertion_type` accepted.
pub const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// SMART: `exp` no more than five minutes in the future.
pub const MAX_AHEAD_SECS: i64 = 300;
/// Clock skew tolerated between the client and Ward.
pub const SKEW_SECS: i64 = 10;
/// Longest `jti`, `kid`, `iss` accepted.
const MAX_FIELD: usize = 255;

/// A client assertion, parsed but not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAssertion {
    /// The compact JWT, for signature verification.
    pub jwt: String,
    /// Header `alg` as given (the verifier maps it through an allowlist).
    pub alg: String,
    pub kid: String,
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub jti: String,
    pub nbf: Option<i64>,
}

fn invalid() -> OAuthError {
    OAuthError::InvalidClient
}

fn segment(part: &str) -> Result<serde_json::Map<String, Value>, OAuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| invalid())?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid()),
    }
}

fn short_string(map: &serde_json::Map<String, Value>, name: &str) -> Result<String, OAuthError> {
    match map.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_FIELD => Ok(s.clone()),
        _ => Err(invalid()),
    }
}

fn integer(v: Option<&Value>) -> Result<Option<i64>, OAuthError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
        Some(_) => Err(invalid()),
    }
}

impl ClientAssertion {
    /// Splits and decodes `jwt`: three segments, JSON objects, `alg`, `kid`, `iss`, `sub`,
    /// `aud`, `exp` and `jti` present with the right types. Anything else is `invalid_client`.
    pub fn parse(jwt: &str) -> Result<ClientAssertion, OAuthError> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let header = segment(h)?;
        let claims = segment(p)?;
        if header.contains_key("crit") {
            return Err(invalid());
        }
        let aud = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= 8 => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(invalid))
                .collect::<Result<_, _>>()?,
            _ => return Err(invalid()),
        };
        Ok(ClientAssertion {
            jwt: jwt.to_owned(),
            alg: short_string(&header, "alg")?,
            kid: short_string(&header, "kid")?,
            iss: short_string(&claims, "iss")?,
            sub: short_string(&claims, "sub")?,
            aud,
            exp: integer(claims.get("exp"))?.ok_or_else(invalid)?,
            jti: short_string(&claims, "jti")?,
            nbf: integer(claims.get("nbf"))?,
        })
    }

    /// The claims rules of SMART Backend Services: `iss` = `sub` = `client_id`, `aud` names
    /// `token_url`, not expired, `exp` at most five minutes ahead, not before `nbf`.
    pub fn check_claims(&self, client_id: &str, token_url: &str, now: i64) -> Result<(), OAuthError> {
        if self.iss != client_id || self.sub != client_id {
            return Err(invalid());
        }
        if !self.aud.iter().any(|a| a == token_url) {
            return Err(invalid());
        }
        if self.exp < now.saturating_sub(SKEW_SECS) {
            return Err(invalid());
        }
        if self.exp > now.saturating_add(MAX_AHEAD_SECS).saturating_add(SKEW_SECS) {
            return Err(invalid());
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(SKEW_SECS)) {
            return Err(invalid());
        }
        Ok(())
    }

    /// Until when the `jti` must be remembered (unix seconds): past it the assertion is
    /// refused as expired anyway.
    pub fn remember_until(&self) -> i64 {
        self.exp.saturating_add(SKEW_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn jwt(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    const URL: &str = "https://ward.test/oauth2/token";

    fn good(now: i64) -> Value {
        serde_json::json!({"iss": "c1", "sub": "c1", "aud": URL, "exp": now + 240, "jti": "j1"})
    }

    #[test]
    fn parses_and_checks() {
        let now = 1_700_000_000;
        let h = serde_json::json!({"alg": "ES384", "kid": "k1", "typ": "JWT"});
        let a = ClientAssertion::parse(&jwt(h.clone(), good(now))).unwrap();
        assert_eq!(
            (a.alg.as_str(), a.kid.as_str(), a.iss.as_str()),
            ("ES384", "k1", "c1")
        );
        a.check_claims("c1", URL, now).unwrap();
        assert!(a.check_claims("c2", URL, now).is_err(), "another client");
        assert!(
            a.check_claims("c1", "https://ward.test/other", now).is_err(),
            "aud"
        );
        assert!(a.check_claims("c1", URL, now + 300).is_err(), "expired");
        assert!(a.check_claims("c1", URL, now - 100).is_err(), "exp too far ahead");
        let mut c = good(now);
        c["sub"] = "c2".into();
        let a = ClientAssertion::parse(&jwt(h.clone(), c)).unwrap();
        assert!(a.check_claims("c1", URL, now).is_err(), "iss != sub");
        let mut c = good(now);
        c["aud"] = serde_json::json!(["x", URL]);
        ClientAssertion::parse(&jwt(h.clone(), c))
            .unwrap()
            .check_claims("c1", URL, now)
            .unwrap();
    }

    #[test]
    fn malformed_is_invalid_client() {
        let now = 1_700_000_000;
        let h = serde_json::json!({"alg": "ES384", "kid": "k1"});
        for bad in [
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            jwt(serde_json::json!({"alg": "ES384"}), good(now)),
            jwt(
                h.clone(),
                serde_json::json!({"iss": "c1", "sub": "c1", "aud": URL, "exp": now}),
            ),
            jwt(
                h.clone(),
                serde_json::json!({"iss": "c1", "sub": "c1", "aud": 5, "exp": now, "jti": "j"}),
            ),
            jwt(
                h.clone(),
                serde_json::json!({"iss": "c1", "sub": "c1", "aud": URL, "exp": "1", "jti": "j"}),
            ),
            jwt(
                serde_json::json!({"alg": "ES384", "kid": "k", "crit": ["x"]}),
                good(now),
            ),
        ] {
            assert_eq!(
                ClientAssertion::parse(&bad),
                Err(OAuthError::InvalidClient),
                "{bad}"
            );
        }
    }
}
