//! The `client_credentials` grant (SPEC AC-2, SMART Backend Services with a client secret).

pub use ward_oauth::{ClientCredentialsRequest, OAuthError};
use ward_store::Store;

use crate::assertion::AssertionVerifier;
use crate::scope::ScopeSet;
use crate::secret::SecretVerifier;
use crate::token::{IssuedToken, TokenService};

/// Whether `id` can be a client id at all (Ward issues UUIDs): short, plain ASCII. Anything
/// else is never looked up, logged or audited as given.
pub fn is_plausible_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Authenticates the client (secret, or `private_key_jwt` assertion checked by `assertions`)
/// and issues a token for the intersection of the requested and allowed scopes (all allowed
/// scopes when none are requested). Public clients never get one here.
pub async fn client_credentials(
    store: &Store,
    tokens: &TokenService,
    verifier: &SecretVerifier,
    assertions: &AssertionVerifier,
    req: ClientCredentialsRequest,
) -> Result<IssuedToken, OAuthError> {
    let client = match &req.client_assertion {
        Some(assertion) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            crate::client_auth::authenticate_assertion(store, assertions, &req.client_id, assertion, now)
                .await?
        }
        None => {
            crate::client_auth::authenticate_secret(store, verifier, &req.client_id, req.client_secret)
                .await?
        }
    };
    // Registered scopes were checked by `ward client create`; a word an earlier version let
    // through is dropped (it never granted anything). A request is held to the grammar: an
    // unknown or malformed scope is `invalid_scope` (RFC 6749 §5.2), never silently ignored.
    let allowed = ScopeSet::parse_lenient(&client.scopes);
    let granted = match req.scope.as_deref() {
        None | Some("") => allowed,
        Some(requested) => ScopeSet::parse(requested)
            .map_err(|_| OAuthError::InvalidScope)?
            .intersect(&allowed),
    };
    if granted.is_empty() {
        return Err(OAuthError::InvalidScope);
    }
    tokens
        .issue(&client.client_id, &client.client_id, &granted.to_string())
        .map_err(|_| OAuthError::ServerError)
}
