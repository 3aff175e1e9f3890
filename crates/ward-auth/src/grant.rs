//! The `client_credentials` grant (SPEC AC-2, SMART Backend Services with a client secret).

pub use ward_oauth::{ClientCredentialsRequest, OAuthError};
use ward_store::Store;

use crate::scope::ScopeSet;
use crate::secret::{SecretVerifier, Verdict};
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
    // Client ids are UUIDs: anything else is an unknown client, without asking the store
    // (a NUL byte, say, is an error in PostgreSQL text rather than a miss).
    let client = if is_plausible_client_id(&req.client_id) {
        store.get_client(&req.client_id).await.map_err(|e| {
            tracing::error!(error = %e, "client lookup failed");
            OAuthError::ServerError
        })?
    } else {
        None
    };
    let usable = client.filter(|c| !c.disabled);
    let hash = usable.as_ref().map(|c| c.secret_hash.as_str());
    match verifier
        .verify(store, &req.client_id, req.client_secret, hash)
        .await
    {
        Verdict::Valid => {}
        Verdict::Invalid => return Err(OAuthError::InvalidClient),
        Verdict::Busy => return Err(OAuthError::TemporarilyUnavailable),
    }
    let Some(client) = usable else {
        return Err(OAuthError::InvalidClient);
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
