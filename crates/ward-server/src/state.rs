//! Shared application state: configuration, store, token service and validator, built once
//! at start-up and passed to every handler (no globals).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ward_auth::TokenService;
use ward_fhir::json::Limits;
use ward_fhir::validate::Validator;
use ward_store::Store;

use crate::config::Config;
use crate::ratelimit::Buckets;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    /// The group-commit writer of this node's audit chain.
    pub audit: ward_audit::AuditHandle,
    /// Read access to the audit trail, for AuditEvent search.
    pub audit_store: ward_audit::AuditStore,
    pub tokens: TokenService,
    pub validator: Validator,
    pub fhir_base: String,
    pub limits: Limits,
    /// The serialized CapabilityStatement, built once.
    pub capability: axum::body::Bytes,
    client_status: Mutex<HashMap<String, (bool, Instant)>>,
    /// Token endpoint: bounded client-secret checks and per-IP / per-client rate limits.
    pub secrets: ward_auth::SecretVerifier,
    pub token_ip_limits: Buckets<std::net::IpAddr>,
    /// Keyed by (client id, IP group of the peer).
    pub token_client_limits: Buckets<(String, Option<std::net::IpAddr>)>,
    /// Requests that may change data, each running to its end in a task of its own.
    pub writes: crate::writes::Writes,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// How long a client's enabled/disabled status is trusted before it is read again, so a
/// `ward client disable` takes effect on running servers within this delay.
const CLIENT_STATUS_TTL: Duration = Duration::from_secs(5);

impl AppState {
    pub fn new(
        config: Config,
        store: Store,
        tokens: TokenService,
        audit: ward_audit::AuditHandle,
        audit_store: ward_audit::AuditStore,
    ) -> Self {
        let limits = Limits {
            max_depth: config.server.max_json_depth,
            max_bytes: config.server.max_body_bytes,
        };
        let published = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let capability = crate::capability::capability_statement(
            &config.fhir_base(),
            &config.server.public_url,
            &published,
        );
        let s = &config.server;
        let secrets = ward_auth::SecretVerifier::new(s.token_max_concurrent_checks);
        let token_ip_limits = Buckets::new(s.token_requests_per_minute_per_ip, s.token_burst);
        let token_client_limits = Buckets::new(s.token_requests_per_minute_per_client, s.token_burst);
        AppState(Arc::new(Inner {
            secrets,
            token_ip_limits,
            token_client_limits,
            capability: serde_json::to_vec(&capability).unwrap_or_default().into(),
            fhir_base: config.fhir_base(),
            config,
            store,
            audit,
            audit_store,
            tokens,
            validator: Validator::new(),
            limits,
            client_status: Mutex::new(HashMap::new()),
            writes: crate::writes::Writes::default(),
        }))
    }

    /// Whether `client_id` exists and is enabled, cached briefly. A store error counts as
    /// "not active": fail closed.
    pub async fn client_active(&self, client_id: &str) -> bool {
        if let Some(&(active, at)) = self.lock_status().get(client_id)
            && at.elapsed() < CLIENT_STATUS_TTL
        {
            return active;
        }
        let active = match self.store.get_client(client_id).await {
            Ok(c) => c.is_some_and(|c| !c.disabled),
            Err(e) => {
                tracing::error!(error = %e, "client status lookup failed");
                return false;
            }
        };
        let mut cache = self.lock_status();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(client_id.to_owned(), (active, Instant::now()));
        active
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        self.client_status.lock().unwrap_or_else(|p| p.into_inner())
    }
}
