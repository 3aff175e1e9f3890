//! `private_key_jwt` client authentication (SMART Backend Services, RFC 7523): the assertion's
//! claims (`ward_oauth::ClientAssertion`), its signature with the client's registered key
//! (`client_keys`), and its `jti`, accepted once across nodes and restarts (the store's replay
//! cache, kept until the assertion expires).

use ward_oauth::{ClientAssertion, OAuthError};
use ward_store::{ClientRecord, Store};

use crate::client_keys::{self, ClientKey, KeyRefusal, RemoteJwks};

/// What the token endpoint needs to check assertions.
#[derive(Debug)]
pub struct AssertionVerifier {
    /// The `aud` assertions must name: `public_url` + `/oauth2/token`.
    pub token_url: String,
    /// Fetcher and cache of `jwks_url` sets; `None`: such clients cannot authenticate.
    pub remote: Option<RemoteJwks>,
}

impl AssertionVerifier {
    pub fn new(token_url: String, remote: Option<RemoteJwks>) -> Self {
        AssertionVerifier { token_url, remote }
    }

    async fn keys(&self, client: &ClientRecord, kid: &str) -> Vec<ClientKey> {
        if let Some(text) = &client.jwks {
            return client_keys::parse_jwks(text).unwrap_or_default();
        }
        match (&client.jwks_url, &self.remote) {
            (Some(url), Some(remote)) => remote.keys(url, kid).await.as_ref().clone(),
            _ => Vec::new(),
        }
    }

    /// Authenticates `client` (already looked up by the assertion's `iss`, enabled) with
    /// `assertion` at `now` (unix seconds). Every refusal is `invalid_client`.
    pub async fn authenticate(
        &self,
        store: &Store,
        client: &ClientRecord,
        assertion: &ClientAssertion,
        now: i64,
    ) -> Result<(), OAuthError> {
        let refuse = |why: &'static str| {
            tracing::info!(reason = why, "client assertion refused");
            OAuthError::InvalidClient
        };
        if client.public || (client.jwks.is_none() && client.jwks_url.is_none()) {
            return Err(refuse("client has no registered keys"));
        }
        let keys = self.keys(client, &assertion.kid).await;
        match client_keys::verify_signature(&keys, &assertion.kid, &assertion.alg, &assertion.jwt) {
            Ok(()) => {}
            Err(KeyRefusal::UnknownKid) => return Err(refuse("unknown kid")),
            Err(KeyRefusal::AlgorithmNotAllowed) => return Err(refuse("algorithm not allowed")),
            Err(KeyRefusal::BadSignature) => return Err(refuse("bad signature")),
        }
        assertion
            .check_claims(&client.client_id, &self.token_url, now)
            .map_err(|_| refuse("claims"))?;
        let fresh = store
            .record_assertion_jti(&client.client_id, &assertion.jti, assertion.remember_until(), now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "assertion replay cache failed");
                OAuthError::ServerError
            })?;
        if !fresh {
            return Err(refuse("jti replayed"));
        }
        Ok(())
    }
}
