//! Fetching client JWK Sets from their registered https URLs (`private_key_jwt` clients
//! registered with `--jwks-url`): https only, no redirects, a size cap and a timeout. Caching
//! and the refetch rate limit live in `ward_auth::client_keys::RemoteJwks`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ward_auth::client_keys::{JwksFetcher, MAX_JWKS_BYTES};

/// Whole fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct HttpsJwksFetcher {
    client: reqwest::Client,
}

impl HttpsJwksFetcher {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(HttpsJwksFetcher { client })
    }

    async fn get(&self, url: &str) -> Result<String, String> {
        let mut resp = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(MAX_JWKS_BYTES).unwrap_or(u64::MAX))
        {
            return Err("JWK Set too large".into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("read failed: {}", e.without_url()))?
        {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err("JWK Set too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| "JWK Set is not UTF-8".into())
    }
}

impl JwksFetcher for HttpsJwksFetcher {
    fn fetch<'a>(
        &'a self,
        url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(self.get(url))
    }
}
