//! Authorization codes and EHR launch contexts (SPEC AC-2, AC-4; issue 10).
//!
//! The authorize endpoint (browser side) calls [`issue_code`] once the user has approved, and
//! [`take_launch`] when an app passes an EHR `launch` value. Both values are random, stored
//! only as keyed hashes, short-lived and single-use; the token endpoint takes a code with
//! [`take_code`] and checks PKCE with [`pkce_matches`].

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
pub use ward_oauth::OAuthError;
use ward_store::{CodeRow, Store, Take};

/// How long a code may wait for its exchange.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// How long a launch created for an EHR launch may wait for the app's authorize request.
pub const LAUNCH_LIFETIME: Duration = Duration::from_secs(300);

/// Hash domains of the stored values (see `Store::grant_tag`).
pub(crate) const CODE_DOMAIN: &str = "oauth-code-v1";
pub(crate) const LAUNCH_DOMAIN: &str = "oauth-launch-v1";

/// What the user approved at the authorize endpoint, kept with the code until its exchange.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeGrant {
    pub client_id: String,
    pub user_id: String,
    /// Exactly as the authorize request gave it: the exchange must repeat it byte for byte.
    pub redirect_uri: String,
    /// The granted scopes (space-separated).
    pub scope: String,
    /// `BASE64URL(SHA-256(code_verifier))`: S256 is the only method.
    pub code_challenge: String,
    /// Echoed exactly in the id_token.
    pub nonce: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// When the user authenticated (Unix seconds), how (`amr`), at which level (`acr`).
    pub auth_time: i64,
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
}

/// An EHR launch: the user and the patient (and encounter) the EHR had open.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaunchContext {
    pub user_id: String,
    pub patient: String,
    pub encounter: Option<String>,
    /// The one client this launch is for, when the EHR named one.
    pub client_id: Option<String>,
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn later(now: OffsetDateTime, d: Duration) -> i64 {
    unix(now).saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn store_error(e: ward_store::StoreError) -> OAuthError {
    tracing::error!(error = %e, "grant store failed");
    OAuthError::ServerError
}

/// Whether `challenge` has the shape of an S256 challenge: 32 bytes in base64url, no padding.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && B64.decode(challenge).is_ok_and(|b| b.len() == 32)
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// PKCE S256 (RFC 7636 §4.6): `BASE64URL(SHA-256(verifier)) == challenge`, compared in
/// constant time. A missing-shaped, blank, short or long verifier never matches.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    if !is_valid_verifier(verifier) || !is_s256_challenge(challenge) {
        return false;
    }
    let computed = B64.encode(ward_crypto::sha256(verifier.as_bytes()));
    ward_crypto::ct_eq(computed.as_bytes(), challenge.as_bytes())
}

/// Stores `grant` under a fresh random code and returns the code (single use, valid for
/// [`CODE_LIFETIME`] from `now`). Refuses a grant whose challenge is not S256-shaped.
pub async fn issue_code(store: &Store, grant: CodeGrant, now: OffsetDateTime) -> Result<String, OAuthError> {
    if !is_s256_challenge(&grant.code_challenge) {
        return Err(OAuthError::InvalidRequest(
            "code_challenge must be an S256 challenge (code_challenge_method=S256)",
        ));
    }
    let json = serde_json::to_string(&grant).map_err(|_| OAuthError::ServerError)?;
    let code = ward_crypto::random_token(32);
    let hash = store.grant_tag(CODE_DOMAIN, &code);
    store
        .insert_code(&hash, &grant.client_id, &json, later(now, CODE_LIFETIME))
        .await
        .map_err(store_error)?;
    Ok(code)
}

/// A code as taken at the token endpoint: the grant, or a replay with the family issued from
/// the first exchange.
#[derive(Debug)]
pub enum TakenCode {
    Fresh { hash: Vec<u8>, grant: Box<CodeGrant> },
    Replayed { family: Option<String> },
}

/// Takes (uses up) a code issued to `client_id`. Unknown, expired and other clients' codes are
/// `invalid_grant` (another client's code stays usable by its own); a used one is
/// [`TakenCode::Replayed`] so the caller revokes what it produced.
pub async fn take_code(
    store: &Store,
    code: &str,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<TakenCode, OAuthError> {
    if code.is_empty() || code.len() > 128 {
        return Err(OAuthError::InvalidGrant);
    }
    let hash = store.grant_tag(CODE_DOMAIN, code);
    match store
        .take_code(&hash, client_id, unix(now))
        .await
        .map_err(store_error)?
    {
        Take::Fresh(CodeRow {
            grant_json,
            expires_at,
            ..
        }) => {
            if unix(now) >= expires_at {
                return Err(OAuthError::InvalidGrant);
            }
            let grant: CodeGrant = serde_json::from_str(&grant_json).map_err(|_| OAuthError::ServerError)?;
            Ok(TakenCode::Fresh {
                hash,
                grant: Box::new(grant),
            })
        }
        Take::Reused(family) => Ok(TakenCode::Replayed { family }),
        Take::Unknown => Err(OAuthError::InvalidGrant),
    }
}

/// Creates an EHR launch for `ctx` (`ward launch create`) and returns the `launch` value.
pub async fn create_launch(
    store: &Store,
    ctx: &LaunchContext,
    now: OffsetDateTime,
) -> Result<String, OAuthError> {
    let json = serde_json::to_string(ctx).map_err(|_| OAuthError::ServerError)?;
    let launch = ward_crypto::random_token(32);
    let hash = store.grant_tag(LAUNCH_DOMAIN, &launch);
    store
        .insert_launch(&hash, &ctx.user_id, &json, later(now, LAUNCH_LIFETIME))
        .await
        .map_err(store_error)?;
    Ok(launch)
}

/// Takes (uses up) an EHR `launch` value for `client_id`. Unknown, used, expired, or bound to
/// another client: `invalid_request` ("invalid launch"), saying no more. The caller must also
/// check that the signed-in user is the launch's `user_id`.
pub async fn take_launch(
    store: &Store,
    launch: &str,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<LaunchContext, OAuthError> {
    let invalid = OAuthError::InvalidRequest("invalid launch");
    if launch.is_empty() || launch.len() > 128 {
        return Err(invalid);
    }
    let hash = store.grant_tag(LAUNCH_DOMAIN, launch);
    let Take::Fresh(row) = store.take_launch(&hash, unix(now)).await.map_err(store_error)? else {
        return Err(invalid);
    };
    if unix(now) >= row.expires_at {
        return Err(invalid);
    }
    let ctx: LaunchContext = serde_json::from_str(&row.context_json).map_err(|_| OAuthError::ServerError)?;
    if ctx.client_id.as_deref().is_some_and(|c| c != client_id) {
        return Err(invalid);
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_only() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(challenge, challenge), "plain never matches");
        assert!(!pkce_matches("", challenge));
        assert!(!pkce_matches(&verifier[..42], challenge));
        assert!(!pkce_matches(&"a".repeat(129), challenge));
        assert!(!pkce_matches(verifier, &challenge[..42]));
        assert!(!pkce_matches(&verifier.replace('d', "e"), challenge));
        assert!(is_s256_challenge(challenge) && !is_s256_challenge("plain"));
    }
}
