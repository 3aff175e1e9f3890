//! Typed configuration, loaded once from `DIR/ward.toml` plus `WARD_<SECTION>_<KEY>`
//! environment overrides, validated before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// Why the configuration could not be used. Never carries secrets.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub tls: TlsSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub auth: AuthSection,
    /// The clock sessions and logins are judged by. Not configurable (serde skips it): only
    /// in-process tests move it forward (see `clock.rs`).
    #[serde(skip)]
    pub clock: crate::clock::Clock,
    /// The directory everything relative is resolved against (the config file's directory).
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: String,
    pub public_url: String,
    /// Largest accepted request body (SEC-1).
    pub max_body_bytes: usize,
    /// Deepest accepted JSON nesting (SEC-1).
    pub max_json_depth: usize,
    /// Access-token lifetime, clamped to 5-15 minutes (AC-2).
    pub token_lifetime_secs: u64,
    /// Largest `_count` a history request may ask for.
    pub max_page_size: usize,
    /// Most entries of a transaction or batch Bundle (413 above).
    pub max_bundle_entries: usize,
    // --- Connection and token-endpoint limits (SEC-2, SPEC §2 step 3) ---
    /// Open connections at once (TLS handshakes included); beyond it a new one is closed.
    pub max_connections: usize,
    /// Open connections at once from one IP address (one /64 for IPv6).
    pub max_connections_per_ip: usize,
    /// Seconds after the TLS handshake within which the first request must arrive.
    pub first_request_timeout_secs: u64,
    /// Seconds a connection may stay idle between requests; also the most time an
    /// HTTP/1.1 request head may take to arrive.
    pub idle_timeout_secs: u64,
    /// HTTP/2: streams (requests) open at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: seconds between keep-alive pings; an unanswered ping closes the connection
    /// after as long again.
    pub http2_keep_alive_secs: u64,
    /// Client-secret checks running at once; beyond it the token endpoint answers 503.
    pub token_max_concurrent_checks: usize,
    /// Token requests per minute from one IP address (429 beyond), after a burst of
    /// `token_burst`.
    pub token_requests_per_minute_per_ip: u32,
    /// Token requests per minute for one client id (429 beyond), same burst.
    pub token_requests_per_minute_per_client: u32,
    pub token_burst: u32,
    // Search bounds (issue 15 item 3, issue 9 item 4): what one search may cost.
    /// Most parameters of one search (400 above).
    pub max_search_params: usize,
    /// Most values of one search: comma-separated alternatives of all criteria plus sort keys
    /// (400 above).
    pub max_search_values: usize,
    /// `total` is counted up to this many matches and omitted beyond (also the most candidates
    /// one page decrypts to confirm birth-date or long-string criteria).
    pub max_search_total: usize,
    // -- Memory per response (SPEC P-4) --
    /// Most bytes of stored resource JSON one search or history page holds (at least one
    /// resource); the rest follows through the Bundle's `next` link. `_include`d resources get
    /// as much again. Also the most bytes of resources in a batch or transaction response.
    pub max_page_bytes: usize,
    /// Seconds a response body may wait for the client to take its next chunk before the
    /// response is abandoned (its stream reset) and its bytes freed.
    pub response_stall_secs: u64,
    /// Most bytes of large response bodies (over 64 KiB) waiting for their clients, over all
    /// connections; past it a large response is refused with 503.
    pub max_pending_response_bytes: usize,
}

/// Ceilings of the search bounds, tested on both backends.
const SEARCH_PARAMS_CEILING: usize = ward_fhir::search::query::ParseOptions::CEILING_PARAMS;
const SEARCH_VALUES_CEILING: usize = ward_fhir::search::query::ParseOptions::CEILING_VALUES;

impl ServerSection {
    /// The search bounds as parse options (page sizes left at their defaults).
    pub fn search_options(&self) -> ward_fhir::search::query::ParseOptions {
        ward_fhir::search::query::ParseOptions {
            max_params: self.max_search_params,
            max_values: self.max_search_values,
            max_total: self.max_search_total,
            ..Default::default()
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8443".into(),
            public_url: "https://127.0.0.1:8443".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            token_lifetime_secs: 900,
            max_page_size: 1000,
            max_bundle_entries: 1000,
            max_connections: 512,
            max_connections_per_ip: 128,
            first_request_timeout_secs: 10,
            idle_timeout_secs: 30,
            http2_max_concurrent_streams: 32,
            http2_keep_alive_secs: 20,
            token_max_concurrent_checks: 2,
            token_requests_per_minute_per_ip: 60,
            token_requests_per_minute_per_client: 30,
            token_burst: 20,
            max_search_params: ward_fhir::search::query::ParseOptions::MAX_PARAMS,
            max_search_values: ward_fhir::search::query::ParseOptions::MAX_VALUES,
            max_search_total: ward_fhir::search::query::ParseOptions::MAX_TOTAL,
            max_page_bytes: 4 * 1024 * 1024,
            response_stall_secs: 30,
            max_pending_response_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite:ward.db` (relative to DIR) or `postgres://...`.
    pub url: String,
    /// Allow a `postgres://` store or audit URL on another host without `sslmode=verify-full`
    /// (refused at start otherwise: the database holds the audit trail and the ciphertexts).
    pub allow_insecure_postgres: bool,
    /// PostgreSQL: most connections of the store's pool.
    pub max_connections: u32,
    /// PostgreSQL: `statement_timeout` of the store's sessions, in seconds (a little above the
    /// 30 s request deadline by default, so no statement outlives its request by much).
    pub statement_timeout_secs: u64,
    /// PostgreSQL: `lock_timeout` of the store's sessions, in seconds.
    pub lock_timeout_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "sqlite:ward.db".into(),
            allow_insecure_postgres: false,
            max_connections: 16,
            statement_timeout_secs: 35,
            lock_timeout_secs: 30,
        }
    }
}

impl StoreSection {
    /// How the store opens its connections.
    pub fn options(&self) -> ward_store::StoreOptions {
        ward_store::StoreOptions {
            statement_timeout: Some(Duration::from_secs(self.statement_timeout_secs)),
            lock_timeout: Some(Duration::from_secs(self.lock_timeout_secs)),
            max_connections: Some(self.max_connections),
        }
    }
}

/// A PostgreSQL URL may carry a password: print only the scheme.
impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split(':').next().unwrap_or("");
        f.debug_struct("StoreSection")
            .field("url", &format_args!("{scheme}:***"))
            .field("allow_insecure_postgres", &self.allow_insecure_postgres)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// The audit trail (SPEC AU-1..AU-3). SQLite deployments keep it in its own file so it never
/// waits behind resource writes; with PostgreSQL it lives in the store's database.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// `sqlite:audit.db` (relative to DIR) or `postgres://...`; empty = beside the store.
    pub url: String,
    /// This node's chain id; every node writing to one database needs its own.
    pub node: String,
    /// Most records committed in one transaction.
    pub batch_max: usize,
    /// How long the writer waits to fill a batch, in microseconds (exact on SQLite; on
    /// PostgreSQL the runtime's timer rounds a non-zero wait up to about a millisecond).
    pub batch_wait_us: u64,
    /// A signed checkpoint every this many records...
    pub checkpoint_every: u64,
    /// ...or this many seconds, whichever comes first.
    pub checkpoint_secs: u64,
    /// How often intents without a final record are resolved against the store (besides at
    /// start-up), in seconds.
    pub reconcile_secs: u64,
}

impl AuditSection {
    /// The group-commit writer's settings.
    pub fn writer_config(&self) -> ward_audit::AuditConfig {
        ward_audit::AuditConfig {
            batch_max: self.batch_max,
            batch_wait: Duration::from_micros(self.batch_wait_us),
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: Duration::from_secs(self.checkpoint_secs),
        }
    }
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            url: String::new(),
            node: "node-1".into(),
            batch_max: 256,
            batch_wait_us: 250,
            checkpoint_every: 10_000,
            checkpoint_secs: 60,
            reconcile_secs: 60,
        }
    }
}

impl std::fmt::Debug for AuditSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split(':').next().unwrap_or("");
        f.debug_struct("AuditSection")
            .field("url", &format_args!("{scheme}:***"))
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// People signing in (SPEC AC-1, AC-5, AC-6): sessions, the login form, MFA for scopes;
/// refresh tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// External identity providers whose access tokens Ward accepts (SPEC AC-3).
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    /// A browser session unused this long ends (automatic logoff).
    pub session_idle_secs: u64,
    /// A browser session ends this long after sign-in, used or not.
    pub session_max_secs: u64,
    /// Scopes that need a second factor whoever asks for them: a requested scope needs MFA
    /// when it equals one of these, or when one of these ends in `*` and is its prefix
    /// (`user/*` covers `user/Patient.rs`).
    pub privileged_scopes: Vec<String>,
    /// Login form posts per minute from one IP address (one /64 for IPv6), after a burst of
    /// `login_burst`; beyond it 429.
    pub login_requests_per_minute_per_ip: u32,
    pub login_burst: u32,
    /// A refresh token unused this long expires; every refresh hands out a new one (AC-6).
    pub refresh_idle_secs: u64,
    /// An `offline_access` refresh-token family ends this long after the code exchange,
    /// used or not: the user must sign in again.
    pub refresh_max_secs: u64,
    /// An `online_access` family ends this long after the code exchange (by default the
    /// browser session's absolute lifetime; signing out does not end it earlier).
    pub refresh_online_max_secs: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            trusted_issuers: Vec::new(),
            session_idle_secs: 15 * 60,
            session_max_secs: 12 * 3600,
            privileged_scopes: Vec::new(),
            login_requests_per_minute_per_ip: 30,
            login_burst: 10,
            refresh_idle_secs: 24 * 3600,
            refresh_max_secs: 30 * 24 * 3600,
            refresh_online_max_secs: 12 * 3600,
        }
    }
}

impl AuthSection {
    /// The refresh-token lifetimes as `ward-auth` takes them.
    pub fn refresh_policy(&self) -> ward_auth::people::RefreshPolicy {
        let secs = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        ward_auth::people::RefreshPolicy {
            idle_secs: secs(self.refresh_idle_secs),
            max_secs: secs(self.refresh_max_secs),
            online_max_secs: secs(self.refresh_online_max_secs),
        }
    }
}

/// One `[[auth.trusted_issuers]]` entry (see `ward_auth::external`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// The exact `iss` of its tokens (`https://`, no trailing decoration).
    pub issuer: String,
    /// The value its tokens' `aud` must be or contain.
    pub audience: String,
    /// The issuer's JWK Set in a file (relative to DIR) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// ... or at an `https://` URL (read when first needed, again on an unknown `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// PEM certificates that alone are trusted for `jwks_uri` (default: the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_file: Option<PathBuf>,
    /// Least seconds between two reads of the JWKS (an unknown `kid` reads it again).
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Accepted signature algorithms: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA.
    pub algorithms: Vec<String>,
    /// Claim with the role values (string or array; dots descend: `realm_access.roles`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Role value in the token → Ward role. A token with no mapped value is refused.
    pub roles: std::collections::BTreeMap<String, String>,
    /// Claim with the user's FHIR resource (`Practitioner/ID`, `Patient/ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user_claim: Option<String>,
    /// Claim with the SMART scopes (space-separated string or array).
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
}

fn default_jwks_refresh_secs() -> u64 {
    60
}

fn default_role_claim() -> String {
    "roles".into()
}

fn default_scope_claim() -> String {
    "scope".into()
}

impl TrustedIssuerConfig {
    /// The checked settings; `dir` resolves a relative `jwks_file`.
    pub fn settings(&self, dir: &Path) -> Result<ward_auth::external::IssuerSettings, String> {
        use ward_auth::external::{JwksSource, parse_algorithm};
        let jwks = match (&self.jwks_file, &self.jwks_uri) {
            (Some(f), None) => JwksSource::File(if f.is_absolute() { f.clone() } else { dir.join(f) }),
            (None, Some(u)) => JwksSource::Uri(u.clone()),
            _ => return Err("give exactly one of jwks_file and jwks_uri".into()),
        };
        if self.jwks_ca_file.is_some() && self.jwks_uri.is_none() {
            return Err("jwks_ca_file applies only to jwks_uri".into());
        }
        let algorithms = self
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a).map_err(|e| e.0))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = ward_auth::external::IssuerSettings {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            jwks,
            algorithms,
            role_claim: self.role_claim.clone(),
            roles: self.roles.clone(),
            fhir_user_claim: self.fhir_user_claim.clone(),
            scope_claim: self.scope_claim.clone(),
            refresh_secs: self.jwks_refresh_secs,
        };
        settings.validate().map_err(|e| e.0)?;
        Ok(settings)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert: "tls/server.pem".into(),
            key: "tls/server.key".into(),
            ca: "tls/ca.pem".into(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("store", &self.store)
            .field("tls", &self.tls)
            .field("audit", &self.audit)
            .field("auth", &self.auth)
            .field("dir", &self.dir)
            .finish()
    }
}

/// The sections environment variables may override (`WARD_SERVER_LISTEN`, ...).
const SECTIONS: [&str; 5] = ["server", "store", "tls", "audit", "auth"];

impl Config {
    /// Loads `file` (default `DIR/ward.toml`) and the environment overrides.
    pub fn load(dir: Option<&Path>, file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match (file, dir) {
            (Some(f), _) => f.to_path_buf(),
            (None, Some(d)) => d.join("ward.toml"),
            (None, None) => return Err(ConfigError::Load("give --dir or --config".into())),
        };
        if !file.is_file() {
            return Err(ConfigError::Load(format!("{} does not exist", file.display())));
        }
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        // `UncasedStr::starts_with` ignores case: operators write `WARD_SERVER_LISTEN`.
        let env = Env::prefixed("WARD_")
            .filter(|k| SECTIONS.iter().any(|s| k.starts_with(&format!("{s}_"))))
            .map(|k| k.as_str().replacen('_', ".", 1).into());
        let mut config: Config = Figment::new()
            .merge(Toml::file_exact(&file))
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        s.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|_| ConfigError::Invalid("server.listen must be HOST:PORT with an IP address".into()))?;
        if !s.public_url.starts_with("https://") || s.public_url.ends_with('/') {
            return Err(ConfigError::Invalid(
                "server.public_url must start with https:// and have no trailing slash".into(),
            ));
        }
        if s.max_body_bytes < 1024
            || s.max_json_depth < 8
            || s.max_page_size == 0
            || s.max_bundle_entries == 0
            || s.max_page_bytes == 0
            || s.http2_max_concurrent_streams == 0
            || s.response_stall_secs == 0
            || s.max_pending_response_bytes < s.max_page_bytes
        {
            return Err(ConfigError::Invalid("server limits are too small".into()));
        }
        let st = &self.store;
        if st.max_connections == 0 || st.statement_timeout_secs == 0 || st.lock_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "store.max_connections and the store timeouts must be at least 1".into(),
            ));
        }
        if s.max_connections == 0
            || s.max_connections_per_ip == 0
            || s.first_request_timeout_secs == 0
            || s.idle_timeout_secs == 0
            || s.http2_max_concurrent_streams == 0
            || s.http2_keep_alive_secs == 0
            || s.token_max_concurrent_checks == 0
            || s.token_requests_per_minute_per_ip == 0
            || s.token_requests_per_minute_per_client == 0
            || s.token_burst == 0
        {
            return Err(ConfigError::Invalid(
                "server connection and token limits must be at least 1".into(),
            ));
        }
        let a = &self.auth;
        if a.session_idle_secs == 0
            || a.session_max_secs < a.session_idle_secs
            || a.login_requests_per_minute_per_ip == 0
            || a.login_burst == 0
        {
            return Err(ConfigError::Invalid(
                "auth.session_idle_secs must be at least 1 and at most auth.session_max_secs; \
                 login limits at least 1"
                    .into(),
            ));
        }
        if a.refresh_idle_secs == 0 || a.refresh_max_secs == 0 || a.refresh_online_max_secs == 0 {
            return Err(ConfigError::Invalid(
                "auth.refresh_idle_secs, auth.refresh_max_secs and auth.refresh_online_max_secs must be at least 1"
                    .into(),
            ));
        }
        if !(1..=SEARCH_PARAMS_CEILING).contains(&s.max_search_params)
            || !(1..=SEARCH_VALUES_CEILING).contains(&s.max_search_values)
        {
            return Err(ConfigError::Invalid(format!(
                "server.max_search_params must be 1..={SEARCH_PARAMS_CEILING} and \
                 server.max_search_values 1..={SEARCH_VALUES_CEILING}"
            )));
        }
        if !(self.store.url.starts_with("sqlite:")
            || self.store.url.starts_with("postgres://")
            || self.store.url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(
                "store.url must be sqlite:PATH or postgres://...".into(),
            ));
        }
        for (key, url) in [("store.url", &self.store.url), ("audit.url", &self.audit.url)] {
            self.check_postgres_transport(key, url)?;
        }
        self.check_trusted_issuers()
    }

    /// Every `[[auth.trusted_issuers]]` entry is usable, none twice, none Ward itself.
    fn check_trusted_issuers(&self) -> Result<(), ConfigError> {
        let issuers = &self.auth.trusted_issuers;
        for (n, t) in issuers.iter().enumerate() {
            let invalid =
                |m: String| ConfigError::Invalid(format!("auth.trusted_issuers[{n}] ({}): {m}", t.issuer));
            t.settings(&self.dir).map_err(invalid)?;
            if t.issuer == self.server.public_url {
                return Err(invalid("is Ward's own issuer (server.public_url)".into()));
            }
            if issuers.iter().take(n).any(|o| o.issuer == t.issuer) {
                return Err(invalid("is configured twice".into()));
            }
        }
        Ok(())
    }

    /// A PostgreSQL server on another host must be reached with its certificate verified
    /// (`sslmode=verify-full`) unless `store.allow_insecure_postgres` says otherwise.
    fn check_postgres_transport(&self, key: &str, url: &str) -> Result<(), ConfigError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Ok(());
        }
        let t = ward_store::postgres_transport(url)
            .map_err(|_| ConfigError::Invalid(format!("{key} is not a valid PostgreSQL URL")))?;
        if !t.local && !t.verified && !self.store.allow_insecure_postgres {
            return Err(ConfigError::Invalid(format!(
                "{key} reaches a PostgreSQL server on another host without verifying its \
                 certificate: add sslmode=verify-full (and sslrootcert=...), or set \
                 store.allow_insecure_postgres = true"
            )));
        }
        Ok(())
    }

    /// `public_url + "/fhir"`: the FHIR base and the access-token audience.
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.server.public_url)
    }

    /// The store URL with a relative SQLite path resolved against DIR.
    pub fn store_url(&self) -> String {
        self.resolve_url(&self.store.url)
    }

    /// The audit URL: its own SQLite file beside a SQLite store, else the store's database.
    pub fn audit_url(&self) -> String {
        if !self.audit.url.is_empty() {
            self.resolve_url(&self.audit.url)
        } else if self.store.url.starts_with("sqlite:") {
            self.resolve_url("sqlite:audit.db")
        } else {
            self.store.url.clone()
        }
    }

    fn resolve_url(&self, url: &str) -> String {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return url.to_owned();
        };
        let rest = rest.trim_start_matches("//");
        let path = rest.split('?').next().unwrap_or(rest);
        let path = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            self.dir.join(path)
        };
        format!("sqlite://{}?mode=rwc", path.display())
    }

    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// Renders the file `ward init` writes.
    pub fn to_toml(&self) -> String {
        let s = &self.server;
        format!(
            "# Ward configuration. Environment variables WARD_<SECTION>_<KEY> override these.\n\
             [server]\nlisten = {:?}\npublic_url = {:?}\nmax_body_bytes = {}\nmax_json_depth = {}\n\
             token_lifetime_secs = {}\nmax_page_size = {}\nmax_bundle_entries = {}\n\n[store]\nurl = {:?}\n\n[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n\n\
             [audit]\n# empty: audit.db beside a SQLite store, else the store's database\nurl = {:?}\nnode = {:?}\n",
            s.listen,
            s.public_url,
            s.max_body_bytes,
            s.max_json_depth,
            s.token_lifetime_secs,
            s.max_page_size,
            s.max_bundle_entries,
            self.store.url,
            self.tls.cert.display().to_string(),
            self.tls.key.display().to_string(),
            self.tls.ca.display().to_string(),
            self.audit.url,
            self.audit.node,
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSection::default(),
            store: StoreSection::default(),
            tls: TlsSection::default(),
            audit: AuditSection::default(),
            auth: AuthSection::default(),
            clock: crate::clock::Clock::default(),
            dir: PathBuf::from("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_store(url: &str, allow: bool) -> Config {
        let mut c = Config::default();
        c.store.url = url.into();
        c.store.allow_insecure_postgres = allow;
        c
    }

    /// Issue 9 item 6: a PostgreSQL server on another host is reached with its certificate
    /// verified, or only when the configuration says so explicitly.
    #[test]
    fn remote_postgres_needs_verify_full_or_an_explicit_allowance() {
        for url in [
            "postgres://ward@db.internal.test:5432/ward",
            "postgres://ward@10.1.2.3/ward?sslmode=require",
            "postgresql://ward@db.internal.test/ward?sslmode=verify-ca",
            "postgres://ward@[2001:db8::1]/ward?sslmode=prefer",
        ] {
            let err = with_store(url, false).validate().unwrap_err().to_string();
            assert!(err.contains("sslmode=verify-full"), "{url}: {err}");
            assert!(!err.contains("ward@"), "no URL in the message: {err}");
            with_store(url, true).validate().unwrap();
        }
        for url in [
            "postgres://ward@db.internal.test/ward?sslmode=verify-full&sslrootcert=/etc/ward/db-ca.pem",
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://ward@localhost/ward",
            "postgres://ward@[::1]:5432/ward",
            "postgres://ward@%2Fvar%2Frun%2Fpostgresql/ward",
            "postgres:///ward?host=/var/run/postgresql",
            "sqlite:ward.db",
        ] {
            with_store(url, false)
                .validate()
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        // The audit trail's own database is held to the same rule.
        let mut c = Config::default();
        c.audit.url = "postgres://audit@db.internal.test/audit".into();
        assert!(c.validate().is_err());
        c.store.allow_insecure_postgres = true;
        c.validate().unwrap();
    }

    #[test]
    fn search_bounds_have_ceilings() {
        let mut c = Config::default();
        c.server.max_search_params = SEARCH_PARAMS_CEILING + 1;
        assert!(c.validate().is_err());
        c.server.max_search_params = SEARCH_PARAMS_CEILING;
        c.server.max_search_values = 0;
        assert!(c.validate().is_err());
        c.server.max_search_values = SEARCH_VALUES_CEILING;
        c.validate().unwrap();
    }

    fn with_issuer(extra: &str) -> Result<Config, String> {
        let toml = String::from(
            "[[auth.trusted_issuers]]\nissuer = \"https://idp.test/realms/ward\"\n\
             audience = \"https://127.0.0.1:8443/fhir\"\nrole_claim = \"realm_access.roles\"\n\
             [auth.trusted_issuers.roles]\n\"ward-clinician\" = \"clinician\"\n\
             \"ward-service\" = \"service\"\n",
        );
        // `extra` keys go into the issuer table, before its `roles` sub-table.
        let toml = toml.replacen("role_claim", &format!("{extra}\nrole_claim"), 1);
        let config: Config = Figment::new()
            .merge(Toml::string(&toml))
            .extract()
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// AC-3: an unusable trusted issuer stops the start with a message naming the entry.
    #[test]
    fn trusted_issuers_are_checked_at_start() {
        let ok = with_issuer("jwks_file = \"idp.jwks\"\nalgorithms = [\"RS256\", \"ES256\"]").unwrap();
        let t = &ok.auth.trusted_issuers[0];
        assert_eq!((t.jwks_refresh_secs, t.scope_claim.as_str()), (60, "scope"));
        with_issuer(
            "jwks_uri = \"https://idp.test/certs\"\njwks_ca_file = \"ca.pem\"\nalgorithms = [\"PS256\"]",
        )
        .unwrap();
        for (extra, says) in [
            ("jwks_file = \"k\"\nalgorithms = [\"none\"]", "never allowed"),
            ("jwks_file = \"k\"\nalgorithms = [\"RS256\", \"HS256\"]", "HMAC"),
            ("jwks_file = \"k\"\nalgorithms = [\"HS512\"]", "HMAC"),
            ("jwks_file = \"k\"\nalgorithms = [\"XS1\"]", "unknown algorithm"),
            ("jwks_file = \"k\"\nalgorithms = []", "at least one algorithm"),
            (
                "jwks_uri = \"http://idp.test/certs\"\nalgorithms = [\"RS256\"]",
                "https",
            ),
            (
                "algorithms = [\"RS256\"]",
                "exactly one of jwks_file and jwks_uri",
            ),
            (
                "jwks_file = \"k\"\njwks_uri = \"https://idp.test/certs\"\nalgorithms = [\"RS256\"]",
                "exactly one",
            ),
            (
                "jwks_file = \"k\"\njwks_ca_file = \"ca.pem\"\nalgorithms = [\"RS256\"]",
                "jwks_ca_file",
            ),
            (
                "jwks_file = \"k\"\nalgorithms = [\"RS256\"]\njwks_refresh_secs = 0",
                "at least 1",
            ),
            (
                "jwks_file = \"k\"\nalgorithms = [\"RS256\"]\nunknown_key = 1",
                "unknown field",
            ),
        ] {
            let err = with_issuer(extra).unwrap_err();
            assert!(err.contains(says), "{extra}: {err}");
            if !says.contains("unknown field") {
                assert!(
                    err.contains("auth.trusted_issuers[0] (https://idp.test/realms/ward)"),
                    "{err}"
                );
            }
        }
        let mut c = ok.clone();
        c.auth.trusted_issuers[0].roles.insert("x".into(), "root".into());
        assert!(c.validate().unwrap_err().to_string().contains("not a Ward role"));
        let mut c = ok.clone();
        c.auth.trusted_issuers[0].issuer = c.server.public_url.clone();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("Ward's own issuer")
        );
        let mut c = ok.clone();
        c.auth.trusted_issuers.push(c.auth.trusted_issuers[0].clone());
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let mut c = ok;
        c.auth.trusted_issuers[0].issuer = "http://idp.test".into();
        assert!(c.validate().is_err());
    }
}
