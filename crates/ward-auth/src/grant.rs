//! The `client_credentials` grant (SPEC AC-2, SMART Backend Services with a client secret).

use ward_store::Store;
use zeroize::Zeroizing;

use crate::scope::ScopeSet;
use crate::secret::{SecretVerifier, Verdict};
use crate::token::{IssuedToken, TokenService};

/// RFC 6749 §5.2 errors. The description is safe to show: it never says whether a client
/// exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("the requested scope is invalid, unknown, or exceeds what the client may have")]
    InvalidScope,
    #[error("the grant type is not supported")]
    UnsupportedGrantType,
    #[error("the authorization server encountered an error")]
    ServerError,
    /// Too many client authentications are running; the client should retry shortly.
    #[error("the authorization server is busy; retry later")]
    TemporarilyUnavailable,
}

impl OAuthError {
    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::ServerError => "server_error",
            OAuthError::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// HTTP status per RFC 6749 §5.2.
    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient => 401,
            OAuthError::ServerError => 500,
            OAuthError::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// Whether `id` can be a client id at all (Ward issues UUIDs): short, plain ASCII. Anything
/// else is never looked up, logged or audited as given.
pub fn is_plausible_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An authenticated client-credentials request, as extracted by the HTTP layer.
pub struct ClientCredentialsRequest {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub scope: Option<String>,
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
