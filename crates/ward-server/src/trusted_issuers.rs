//! External identity providers (SPEC AC-3): the `[[auth.trusted_issuers]]` of the
//! configuration made into `ward_auth::TrustedIssuers`, and the HTTPS reads of their JWKS.
//!
//! A `jwks_uri` is read over HTTPS only, without following redirects, within
//! [`FETCH_TIMEOUT`] and [`ward_auth::external::MAX_JWKS_BYTES`]; its server certificate is
//! checked against the system roots, or only against `jwks_ca_file` when one is given.
//! Verification itself, the key cache and its refresh limit live in `ward_auth::external`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ward_auth::TrustedIssuers;
use ward_auth::external::{FileFetch, JwksFetch, JwksFuture, JwksSource, MAX_JWKS_BYTES, TrustedIssuer};

use crate::config::{Config, ConfigError};

/// The whole of one JWKS read over HTTPS, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `jwks_uri` sources over HTTPS (and `jwks_file` ones from disk).
pub struct HttpsJwks {
    client: reqwest::Client,
}

impl HttpsJwks {
    /// `ca_file`: PEM certificates to trust instead of the system roots.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| format!("{} holds no PEM certificate", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| format!("HTTPS client: {e}"))?;
        Ok(HttpsJwks { client })
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut resp = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| format!("JWKS request failed: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("JWKS request answered {}", resp.status()));
        }
        let too_big = || format!("JWKS larger than {MAX_JWKS_BYTES} bytes");
        if resp
            .content_length()
            .is_some_and(|l| usize::try_from(l).map_or(true, |l| l > MAX_JWKS_BYTES))
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("JWKS read failed: {}", e.without_url()))?
        {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl JwksFetch for HttpsJwks {
    fn fetch<'a>(&'a self, source: &'a JwksSource) -> JwksFuture<'a> {
        match source {
            JwksSource::Uri(url) => Box::pin(self.get(url)),
            JwksSource::File(_) => FileFetch.fetch(source),
        }
    }
}

/// The trusted issuers of `config` (already validated by `Config::load`). A `jwks_file` is
/// read now, so a missing or unusable file stops the start; a `jwks_uri` is read when first
/// needed (the provider being down must not stop Ward).
pub async fn build(config: &Config) -> Result<TrustedIssuers, ConfigError> {
    let mut issuers = Vec::new();
    for (n, t) in config.auth.trusted_issuers.iter().enumerate() {
        let invalid =
            |m: String| ConfigError::Invalid(format!("auth.trusted_issuers[{n}] ({}): {m}", t.issuer));
        let settings = t.settings(&config.dir).map_err(invalid)?;
        let fetch: Arc<dyn JwksFetch> = match &settings.jwks {
            JwksSource::File(_) => Arc::new(FileFetch),
            JwksSource::Uri(_) => {
                let ca = t.jwks_ca_file.as_deref().map(|p| config.path(p));
                Arc::new(HttpsJwks::new(ca.as_deref()).map_err(invalid)?)
            }
        };
        let issuer = TrustedIssuer::new(settings, fetch).map_err(|e| invalid(e.0))?;
        if matches!(issuer.settings().jwks, JwksSource::File(_)) {
            issuer.load(now_secs()).await.map_err(invalid)?;
        }
        issuers.push(issuer);
    }
    TrustedIssuers::new(issuers).map_err(|e| ConfigError::Invalid(format!("auth.trusted_issuers: {}", e.0)))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
