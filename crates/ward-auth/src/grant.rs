//! The `client_credentials` grant (SPEC AC-2, SMART Backend Services with a client secret).

pub use ward_oauth::{ClientCredentialsRequest, OAuthError};
use ward_store::Store;

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

/// Authenticates the client and issues a token for the intersection of the requested and
/// allowed scopes (all allowed scopes when none are requested).
pub async fn client_credentials(
    store: &Store,
    tokens: &TokenService,
    verifier: &SecretVerifier,
    req: ClientCredentialsRequest,
) -> Result<IssuedToken, OAuthError> {
    let client =
        crate::client_auth::authenticate_secret(store, verifier, &req.client_id, req.client_secret).await?;
    let allowed = ScopeSet::parse(&client.scopes).map_err(|_| OAuthError::ServerError)?;
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
