//! The `client_credentials` grant (SPEC AC-2, SMART Backend Services with a client secret).

pub use ward_oauth::{ClientCredentialsRequest, OAuthError};
use ward_store::Store;

use crate::assertion::AssertionVerifier;
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
    let usable = client.filter(|c| !c.disabled && !c.public);
    let client = if let Some(assertion) = &req.client_assertion {
        let Some(client) = usable else {
            return Err(OAuthError::InvalidClient);
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assertions.authenticate(store, &client, assertion, now).await?;
        client
    } else {
        // A client without a secret (asymmetric) is checked like an unknown one.
        let usable = usable.filter(|c| !c.secret_hash.is_empty());
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
        client
    };
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
