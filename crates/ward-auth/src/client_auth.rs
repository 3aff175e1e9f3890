//! Client authentication at the token, introspection and revocation endpoints (RFC 6749
//! §2.3): a secret (Basic or form), or a public client's bare `client_id` where the endpoint
//! allows one. Unknown and disabled clients fail exactly like a wrong secret.

use ward_oauth::people::ClientAuth;
use ward_store::{ClientRecord, Store};
use zeroize::Zeroizing;

use crate::grant::{OAuthError, is_plausible_client_id};
use crate::secret::{SecretVerifier, Verdict};

/// The enabled client with this id, if any. Implausible ids are never looked up.
pub async fn enabled_client(store: &Store, client_id: &str) -> Result<Option<ClientRecord>, OAuthError> {
    if !is_plausible_client_id(client_id) {
        return Ok(None);
    }
    let client = store.get_client(client_id).await.map_err(|e| {
        tracing::error!(error = %e, "client lookup failed");
        OAuthError::ServerError
    })?;
    Ok(client.filter(|c| !c.disabled))
}

/// Checks a client secret; an unknown or disabled client costs what a wrong secret does.
pub async fn authenticate_secret(
    store: &Store,
    verifier: &SecretVerifier,
    client_id: &str,
    secret: Zeroizing<String>,
) -> Result<ClientRecord, OAuthError> {
    let usable = enabled_client(store, client_id).await?;
    let hash = usable
        .as_ref()
        .filter(|c| !is_public(c))
        .map(|c| c.secret_hash.as_str());
    match verifier.verify(store, client_id, secret, hash).await {
        Verdict::Valid => {}
        Verdict::Invalid => return Err(OAuthError::InvalidClient),
        Verdict::Busy => return Err(OAuthError::TemporarilyUnavailable),
    }
    usable.ok_or(OAuthError::InvalidClient)
}

/// A public client (no secret; PKCE is its proof).
pub fn is_public(_client: &ClientRecord) -> bool {
    false
}

/// Authenticates `auth`. A public client's bare `client_id` is accepted only when
/// `allow_public` and the client is registered as public; a confidential client must prove
/// itself.
pub async fn authenticate(
    store: &Store,
    verifier: &SecretVerifier,
    auth: ClientAuth,
    allow_public: bool,
) -> Result<ClientRecord, OAuthError> {
    match auth {
        ClientAuth::Secret { client_id, secret } => {
            authenticate_secret(store, verifier, &client_id, secret).await
        }
        ClientAuth::Public { client_id } => {
            let client = enabled_client(store, &client_id).await?;
            match client {
                Some(c) if allow_public && is_public(&c) => Ok(c),
                _ => Err(OAuthError::InvalidClient),
            }
        }
        ClientAuth::Assertion { .. } => Err(OAuthError::InvalidClient),
    }
}
