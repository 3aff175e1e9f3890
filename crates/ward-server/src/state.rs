//! Shared application state: configuration, store, token service and validator, built once
//! at start-up and passed to every handler (no globals).

use std::sync::Arc;

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
    /// External identity providers whose tokens are accepted (SPEC AC-3).
    pub trusted_issuers: ward_auth::TrustedIssuers,
    pub validator: Validator,
    pub fhir_base: String,
    pub limits: Limits,
    /// The serialized CapabilityStatement, built once.
    pub capability: axum::body::Bytes,
    /// Revoked subjects (disabled clients and users), families and token ids, refreshed from
    /// the store by [`AppState::watch_revocations`].
    pub revocations: ward_auth::RevocationList,
    /// Token endpoint: bounded client-secret checks and per-IP / per-client rate limits.
    pub secrets: ward_auth::SecretVerifier,
    /// `private_key_jwt` client assertions (keys, `aud`, replay cache).
    pub assertions: ward_auth::AssertionVerifier,
    pub token_ip_limits: Buckets<std::net::IpAddr>,
    /// Keyed by (client id, IP group of the peer).
    pub token_client_limits: Buckets<(String, Option<std::net::IpAddr>)>,
    /// Login form posts per IP group (SPEC AC-1: a limit apart from the per-account lockout).
    pub login_ip_limits: Buckets<std::net::IpAddr>,
    /// The time sessions and sign-ins are judged by (`Config::clock`).
    pub clock: crate::clock::Clock,
    /// Requests that may change data, each running to its end in a task of its own.
    pub writes: crate::writes::Writes,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: Config,
        store: Store,
        tokens: TokenService,
        trusted_issuers: ward_auth::TrustedIssuers,
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
        let remote = match crate::jwks_fetch::HttpsJwksFetcher::new() {
            Ok(f) => Some(ward_auth::client_keys::RemoteJwks::new(Box::new(f))),
            Err(e) => {
                tracing::error!(error = %e, "no JWKS fetcher: clients with a jwks_url cannot authenticate");
                None
            }
        };
        let assertions = ward_auth::AssertionVerifier::new(crate::oauth::token_url(&config), remote);
        let login_ip_limits = Buckets::new(
            config.auth.login_requests_per_minute_per_ip,
            config.auth.login_burst,
        );
        AppState(Arc::new(Inner {
            login_ip_limits,
            clock: config.clock.clone(),
            secrets,
            assertions,
            token_ip_limits,
            token_client_limits,
            capability: serde_json::to_vec(&capability).unwrap_or_default().into(),
            fhir_base: config.fhir_base(),
            writes: crate::writes::Writes::new(config.server.max_connections),
            config,
            store,
            audit,
            audit_store,
            tokens,
            trusted_issuers,
            validator: Validator::new(),
            limits,
            revocations: ward_auth::RevocationList::new(),
        }))
    }

    /// Polls the store for new revocations every [`ward_auth::revocation::POLL_EVERY`] until
    /// `stop` turns true. A failed poll is logged; past `STALE_AFTER` without success the
    /// list refuses every token.
    pub async fn watch_revocations(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(ward_auth::revocation::POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut polls: u32 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            polls = polls.wrapping_add(1);
            // About once a minute, drop rows past their expiry (any node may; it is idempotent).
            if polls.is_multiple_of(240)
                && let Err(e) = self
                    .store
                    .purge_revocations(time::OffsetDateTime::now_utc().unix_timestamp())
                    .await
            {
                tracing::warn!(error = %e, "revocation purge failed");
            }
            match self.revocations.refresh(&self.store).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(count = n, "revocations received");
                    }
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::error!(error = %e, "revocation poll failed");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
