//! ward-store: persistence of versioned, encrypted FHIR resources, their blind search index and
//! OAuth clients, on SQLite or PostgreSQL.
//!
//! One implementation serves both backends through sqlx's `Any` driver: all DML is written once
//! with `$n` placeholders; only the DDL migrations differ per backend (`migrations/sqlite`,
//! `migrations/postgres`).
//!
//! Safeguards implemented here:
//! * EN-1: every resource version is sealed with AES-256-GCM under the current data key with
//!   AAD = (tenant, type, id, version); no plaintext resource JSON reaches the database.
//! * EN-4: identifying search values are stored only as keyed HMACs (blind indexes); dates keep
//!   at most their plaintext year.
//! * IN-1: every change is a new version; delete writes a tombstone version.
//! * IN-2: optimistic concurrency; a lost race surfaces as [`StoreError::VersionConflict`].
//! * IN-3: each version stores a keyed SHA-256 (HMAC) of its plaintext; every read verifies the AEAD tag and
//!   the hash and fails with [`StoreError::Integrity`] (and an error log line) on mismatch.

mod error;
mod grants;
mod history;
mod index;
mod keys;
mod replay;
mod revocation;
mod search;
mod sessions;
pub mod testing;
mod tx;
mod users;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, SqlSafeStr, Transaction};
use time::OffsetDateTime;
use ward_crypto::{Aad, BlindIndexer, Envelope, Kek};
use zeroize::Zeroizing;

pub use error::StoreError;
pub use grants::{CodeRow, FamilyRow, LaunchRow, RefreshRow, Take};
pub use history::{HistoryPage, HistoryQuery, HistoryVersion};
pub use revocation::{Revocation, RevokedKind};
pub use search::SearchPage;
pub use sessions::SessionRecord;
use tx::WriteFail;
pub use tx::{IntentRef, TxError, TxOp, TxOutcome};
pub use users::UserRecord;
pub use ward_fhir::search::MAX_PREFIX_CHARS;

/// The single tenant used for now.
pub const DEFAULT_TENANT: &str = "default";

/// Maximum attempts of an update without `If-Match` that loses a race to a concurrent writer.
const UPDATE_ATTEMPTS: usize = 5;
/// Rows per multi-row INSERT into an index table (at most 9 parameters each).
const INDEX_ROWS_PER_INSERT: usize = 100;
/// Version of what the search index holds; `Store::open` re-indexes every current resource when
/// the stored version differs (a new table, parameter or normal form needs it).
const INDEX_VERSION: i64 = 1;
/// Resources per re-indexing transaction.
const REINDEX_BATCH: i64 = 200;

/// How [`Store::open_with`] sets up its connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    /// PostgreSQL: `statement_timeout` of every pooled session, so no statement outlives the
    /// request that started it by much (migrations run on a connection of their own, without
    /// it). `None`: the server's default. SQLite has no equivalent.
    pub statement_timeout: Option<Duration>,
    /// PostgreSQL: `lock_timeout` of every pooled session (a wait for a row or advisory lock
    /// ends with an error after it). `None`: the server's default.
    pub lock_timeout: Option<Duration>,
    /// PostgreSQL: most pooled connections (`None`: 16). SQLite has one writer and a small
    /// fixed set of readers.
    pub max_connections: Option<u32>,
}

/// How often a PostgreSQL (14+) session running a statement checks that its client is still
/// there: a search whose request was dropped closes its connection, and the server then stops
/// the statement within this interval.
const CLIENT_CHECK_INTERVAL_MS: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connection settings of the SQLite store (WAL, `synchronous=FULL`: see ward-sqlite).
const SQLITE_SETTINGS: ward_sqlite::Settings = ward_sqlite::Settings {
    foreign_keys: true,
    ..ward_sqlite::Settings::new(Duration::from_secs(10))
};
/// How long a point read on the calling thread waits for a lock. In WAL mode readers wait
/// only in rare cases (recovery after a crash); a tokio worker must not sit in one for long.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(250);
/// How often the WAL of a SQLite store is checkpointed in the background.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Migrations: (version, description, SQLite DDL, PostgreSQL DDL).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "search",
        include_str!("../migrations/sqlite/0002_search.sql"),
        include_str!("../migrations/postgres/0002_search.sql"),
    ),
    (
        3,
        "users",
        include_str!("../migrations/sqlite/0003_users.sql"),
        include_str!("../migrations/postgres/0003_users.sql"),
    ),
    (
        4,
        "clients_revocation",
        include_str!("../migrations/sqlite/0004_clients_revocation.sql"),
        include_str!("../migrations/postgres/0004_clients_revocation.sql"),
    ),
    (
        5,
        "people tokens",
        include_str!("../migrations/sqlite/0005_people_tokens.sql"),
        include_str!("../migrations/postgres/0005_people_tokens.sql"),
    ),
    (
        6,
        "sessions",
        include_str!("../migrations/sqlite/0006_sessions.sql"),
        include_str!("../migrations/postgres/0006_sessions.sql"),
    ),
    (
        7,
        "write_intent",
        include_str!("../migrations/sqlite/0007_write_intent.sql"),
        include_str!("../migrations/postgres/0007_write_intent.sql"),
    ),
];

/// Handle to the store. Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// All writes go through this pool (one connection for SQLite, so writers never hit BUSY).
    writer: AnyPool,
    /// Reads (for PostgreSQL the same pool as `writer`).
    reader: AnyPool,
    /// Point reads on a SQLite file, on the calling thread (see ward-sqlite); `None` on
    /// PostgreSQL.
    local: Option<ward_sqlite::ReadPool>,
    /// Keeps a SQLite file's WAL short, off the writer's commit path.
    _checkpointer: Option<ward_sqlite::Checkpointer>,
    tenant: String,
    envelope: Envelope,
    indexer: BlindIndexer,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("tenant", &self.inner.tenant)
            .finish_non_exhaustive()
    }
}

/// One stored version of a resource. `resource` is `None` for a tombstone.
#[derive(Clone, PartialEq)]
pub struct Stored {
    pub rtype: String,
    pub id: String,
    pub version: i64,
    pub last_updated: OffsetDateTime,
    pub deleted: bool,
    pub resource: Option<Value>,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("rtype", &self.rtype)
            .field("id", &self.id)
            .field("version", &self.version)
            .field("last_updated", &self.last_updated)
            .field("deleted", &self.deleted)
            .field("resource", &self.resource.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A live version as its verified JSON bytes, unparsed: what a read by id sends as it is.
/// `Debug` redacts the content; the bytes are zeroized on drop.
#[derive(Clone)]
pub struct StoredJson {
    pub rtype: String,
    pub id: String,
    pub version: i64,
    pub last_updated: OffsetDateTime,
    pub json: Zeroizing<Vec<u8>>,
}

impl StoredJson {
    /// The parsed resource.
    pub fn value(&self) -> Result<Value, StoreError> {
        parse_stored(&self.json)
    }

    pub fn parse(self) -> Result<Stored, StoreError> {
        Ok(Stored {
            resource: Some(self.value()?),
            rtype: self.rtype,
            id: self.id,
            version: self.version,
            last_updated: self.last_updated,
            deleted: false,
        })
    }
}

impl fmt::Debug for StoredJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredJson")
            .field("rtype", &self.rtype)
            .field("id", &self.id)
            .field("version", &self.version)
            .field("last_updated", &self.last_updated)
            .field("json", &"<redacted>")
            .finish()
    }
}

/// A version's decrypted JSON, wiped on drop.
type PlainJson = Zeroizing<Vec<u8>>;

fn parse_stored(json: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(json).map_err(|_| StoreError::Corrupt("stored resource is not valid JSON".into()))
}

/// A registered OAuth client. `Debug` redacts `secret_hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub name: String,
    /// Empty for a client without a secret (public, or authenticating with `private_key_jwt`).
    pub secret_hash: String,
    pub scopes: String,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
    /// Registered redirect URIs (exact match at authorize), validated at registration.
    pub redirect_uris: Vec<String>,
    /// A public client: no secret, PKCE required, no `client_credentials`.
    pub public: bool,
    /// The client's public JWK Set (JSON text) for `private_key_jwt`.
    pub jwks: Option<String>,
    /// Or the https URL Ward fetches that JWK Set from.
    pub jwks_url: Option<String>,
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("secret_hash", &"***")
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("redirect_uris", &self.redirect_uris)
            .field("public", &self.public)
            .field("jwks", &self.jwks.as_ref().map(|_| "<jwks>"))
            .field("jwks_url", &self.jwks_url)
            .finish()
    }
}

/// What a write of a new version may do to `rtype/id` ([`Store::put_in`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// A create: the id must be new.
    Create,
    /// An update that may also create: a new id, or a deleted resource brought back.
    Upsert,
    /// An update of a live resource only (the caller may not create).
    Update,
}

/// The current pointer of a resource as seen inside a write transaction.
struct Current {
    version: i64,
    deleted: bool,
    last_updated_ms: i64,
}

// PostgreSQL locks the current pointer row (FOR UPDATE) so concurrent writers of one resource
// queue up instead of failing. The lock query must not join: under READ COMMITTED a join would
// be re-evaluated against the stale joined row after the wait and return nothing.
const SELECT_CURRENT_FOR_WRITE_SQLITE: &str = "SELECT version, deleted FROM resource_current \
     WHERE tenant = $1 AND rtype = $2 AND id = $3";
const SELECT_CURRENT_FOR_WRITE_PG: &str = "SELECT version, deleted FROM resource_current \
     WHERE tenant = $1 AND rtype = $2 AND id = $3 FOR UPDATE";
macro_rules! version_columns {
    () => {
        "v.rtype, v.id, v.version, v.last_updated_ms, v.deleted, v.key_epoch, v.ciphertext, v.content_hash"
    };
}
pub(crate) const VERSION_COLUMNS: &str = version_columns!();

/// The current version of (tenant $1, type $2, id $3).
const READ_CURRENT: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM resource_current c JOIN resource_version v \
     ON v.tenant = c.tenant AND v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
     WHERE c.tenant = $1 AND c.rtype = $2 AND c.id = $3"
);
/// Version $4 of (tenant $1, type $2, id $3).
const READ_VERSION: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM resource_version v \
     WHERE v.tenant = $1 AND v.rtype = $2 AND v.id = $3 AND v.version = $4"
);

/// The row `sql` selects by key, read on this thread through a direct connection: a lookup by
/// key touches a few cached pages, far less than the hand-off to a sqlx worker thread would cost.
fn local_row(
    local: &ward_sqlite::ReadPool,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<VersionRow>, StoreError> {
    use rusqlite::OptionalExtension;
    local
        .with(|c| {
            c.prepare_cached(sql)?
                .query_row(params, VersionRow::from_sqlite)
                .optional()
        })
        .map_err(StoreError::Sqlite)
}

/// One `resource_version` row as selected by [`VERSION_COLUMNS`], still sealed.
pub(crate) struct VersionRow {
    rtype: String,
    id: String,
    version: i64,
    last_updated_ms: i64,
    deleted: bool,
    key_epoch: Option<i64>,
    ciphertext: Option<Vec<u8>>,
    content_hash: Option<Vec<u8>>,
}

impl VersionRow {
    fn from_any(row: &AnyRow) -> Result<VersionRow, sqlx::Error> {
        Ok(VersionRow {
            rtype: row.try_get("rtype")?,
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            last_updated_ms: row.try_get("last_updated_ms")?,
            deleted: row.try_get::<i64, _>("deleted")? != 0,
            key_epoch: row.try_get("key_epoch")?,
            ciphertext: row.try_get("ciphertext")?,
            content_hash: row.try_get("content_hash")?,
        })
    }

    fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
        Ok(VersionRow {
            rtype: row.get(0)?,
            id: row.get(1)?,
            version: row.get(2)?,
            last_updated_ms: row.get(3)?,
            deleted: row.get::<_, i64>(4)? != 0,
            key_epoch: row.get(5)?,
            ciphertext: row.get(6)?,
            content_hash: row.get(7)?,
        })
    }
}

/// Formats an instant as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T12:00:00.123Z`.
pub fn format_instant(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn ms_to_instant(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt("timestamp out of range".into()))
}

/// Milliseconds since the epoch, never earlier than `not_before` (keeps a resource's versions in
/// time order even if the clock steps back).
fn now_ms(not_before: Option<i64>) -> i64 {
    let ms = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    not_before.map_or(ms, |nb| ms.max(nb))
}

/// Smallest whole millisecond at or after `t`.
fn ceil_ms(t: OffsetDateTime) -> i64 {
    let ns = t.unix_timestamp_nanos();
    let ms = ns.div_euclid(1_000_000) + i128::from(ns.rem_euclid(1_000_000) > 0);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated`, keeping every other field and key order.
fn stamp(
    resource: &mut Value,
    rtype: &str,
    id: &str,
    version: i64,
    last_updated: &str,
) -> Result<(), StoreError> {
    let obj = resource
        .as_object_mut()
        .ok_or_else(|| StoreError::Corrupt("resource is not a JSON object".into()))?;
    match obj.get("resourceType") {
        Some(Value::String(t)) if t == rtype => {}
        None => {
            obj.shift_insert(0, "resourceType".into(), Value::String(rtype.into()));
        }
        Some(_) => return Err(StoreError::Corrupt("resourceType does not match the type".into())),
    }
    if let Some(v) = obj.get_mut("id") {
        *v = Value::String(id.into());
    } else {
        let at = obj.keys().position(|k| k == "resourceType").map_or(0, |i| i + 1);
        obj.shift_insert(at, "id".into(), Value::String(id.into()));
    }
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let meta = match meta {
        Value::Object(m) => m,
        other => {
            *other = Value::Object(serde_json::Map::new());
            other
                .as_object_mut()
                .ok_or_else(|| StoreError::Corrupt("meta".into()))?
        }
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(last_updated.into()));
    Ok(())
}

fn migrator(backend: Backend) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, desc, sqlite, pg)| {
            let sql = match backend {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *pg,
            };
            Migration::new(
                *version,
                (*desc).into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name("ward_schema_migrations");
    m
}

async fn sqlite_pool(url: &str, max: u32, read_only: bool) -> Result<AnyPool, StoreError> {
    let settings = ward_sqlite::Settings {
        read_only,
        ..SQLITE_SETTINGS
    };
    Ok(ward_sqlite::pool(url, max, Duration::from_secs(30), settings).await?)
}

/// How a PostgreSQL URL reaches its server, as sqlx will connect (its environment defaults,
/// `PGSSLMODE` and the like, included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostgresTransport {
    /// A Unix socket, `localhost` or a loopback address: the connection never leaves the host.
    pub local: bool,
    /// `sslmode=verify-full`: TLS with the server's certificate and name verified.
    pub verified: bool,
}

/// [`PostgresTransport`] of `url`; an error if it is not a PostgreSQL URL sqlx accepts.
pub fn postgres_transport(url: &str) -> Result<PostgresTransport, StoreError> {
    use std::str::FromStr;
    let opts = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let host = opts.get_host().trim_start_matches('[').trim_end_matches(']');
    let local = opts.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let verified = matches!(opts.get_ssl_mode(), sqlx::postgres::PgSslMode::VerifyFull);
    Ok(PostgresTransport { local, verified })
}

/// The statements that set up each pooled PostgreSQL session (generated from numbers only).
fn postgres_session(opts: &StoreOptions) -> Vec<String> {
    // Warnings such as "there is no transaction in progress" (a rollback after the server
    // already ended the transaction) only fill the log: errors still reach Ward as errors.
    let mut out = vec!["SET client_min_messages = error".to_owned()];
    if let Some(t) = opts.statement_timeout {
        out.push(format!("SET statement_timeout = {}", t.as_millis().max(1)));
    }
    if let Some(t) = opts.lock_timeout {
        out.push(format!("SET lock_timeout = {}", t.as_millis().max(1)));
    }
    // PostgreSQL 13 and older do not know the setting; the WHERE keeps them from reading it.
    out.push(format!(
        "SELECT set_config('client_connection_check_interval', '{CLIENT_CHECK_INTERVAL_MS}', false) \
         WHERE current_setting('server_version_num')::int >= 140000"
    ));
    out
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH?mode=rwc` or
    /// `postgres://...`), applies migrations and loads (or creates) the wrapped data and index
    /// keys, unwrapping them with `kek`. A wrong KEK fails here with [`StoreError::OtherKek`].
    pub async fn open(url: &str, kek: &Kek) -> Result<Store, StoreError> {
        Store::open_with(url, kek, &StoreOptions::default()).await
    }

    /// [`Store::open`] with `opts`.
    pub async fn open_with(url: &str, kek: &Kek, opts: &StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "unsupported database URL scheme (expected sqlite: or postgres:)".into(),
            )));
        };
        let (writer, reader, local, checkpointer) = match backend {
            Backend::Sqlite => {
                // The one writer leaves WAL checkpoints to the background (`checkpointer`).
                let writer = ward_sqlite::pool(
                    url,
                    1,
                    Duration::from_secs(30),
                    ward_sqlite::Settings {
                        background_checkpoints: true,
                        ..SQLITE_SETTINGS
                    },
                )
                .await?;
                migrator(backend).run(&writer).await?;
                let reader = sqlite_pool(url, 4, true).await?;
                let (local, checkpointer) = match ward_sqlite::file_of_url(url) {
                    Some(path) => (
                        Some(
                            ward_sqlite::ReadPool::open(&path, READ_BUSY_TIMEOUT)
                                .map_err(StoreError::Sqlite)?,
                        ),
                        Some(
                            ward_sqlite::Checkpointer::start(
                                &path,
                                CHECKPOINT_EVERY,
                                SQLITE_SETTINGS.busy_timeout,
                            )
                            .map_err(StoreError::Io)?,
                        ),
                    ),
                    None => (None, None),
                };
                (writer, reader, local, checkpointer)
            }
            Backend::Postgres => {
                // A migration may take longer than any request: its own connection, no timeout.
                // Quiet: the migrations table's "already exists, skipping" notice on every start.
                let plain = AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            sqlx::query("SET client_min_messages = warning")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                migrator(backend).run(&plain).await?;
                plain.close().await;
                let session = postgres_session(opts);
                let pool = AnyPoolOptions::new()
                    .max_connections(opts.max_connections.unwrap_or(16).max(1))
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |conn, _meta| {
                        let session = session.clone();
                        Box::pin(async move {
                            for statement in session {
                                sqlx::query(AssertSqlSafe(statement)).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                (pool.clone(), pool, None, None)
            }
        };
        let (envelope, indexer) = keys::load_or_create(&writer, kek).await?;
        let store = Store {
            inner: Arc::new(Inner {
                backend,
                writer,
                reader,
                local,
                _checkpointer: checkpointer,
                tenant: DEFAULT_TENANT.to_owned(),
                envelope,
                indexer,
            }),
        };
        store.reindex_if_needed().await?;
        Ok(store)
    }

    /// Rebuilds the search index of every current resource when it was built by another index
    /// version (or before the typed index existed). Idempotent; safe with several nodes.
    async fn reindex_if_needed(&self) -> Result<(), StoreError> {
        let stored: Option<i64> = sqlx::query("SELECT version FROM search_index_state WHERE tenant = $1")
            .bind(self.tenant())
            .fetch_optional(&self.inner.writer)
            .await?
            .map(|r| r.try_get("version"))
            .transpose()?;
        if stored == Some(INDEX_VERSION) {
            return Ok(());
        }
        let mut after: (String, String) = (String::new(), String::new());
        let mut done = 0u64;
        loop {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM resource_current c JOIN resource_version v \
                   ON v.tenant = c.tenant AND v.rtype = c.rtype AND v.id = c.id AND v.version = c.version \
                 WHERE c.tenant = $1 AND c.deleted = 0 AND (c.rtype > $2 OR (c.rtype = $2 AND c.id > $3)) \
                 ORDER BY c.rtype, c.id LIMIT $4"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(self.tenant())
                .bind(after.0.clone())
                .bind(after.1.clone())
                .bind(REINDEX_BATCH)
                .fetch_all(&self.inner.writer)
                .await?;
            if rows.is_empty() {
                break;
            }
            let mut tx = self.inner.writer.begin().await?;
            for row in &rows {
                let s = self.decode(row)?;
                if let Some(r) = &s.resource {
                    let index_rows = index::rows_for(&self.inner.indexer, r);
                    self.replace_index(&mut tx, &s.rtype, &s.id, &index_rows).await?;
                }
                after = (s.rtype, s.id);
                done += 1;
            }
            tx.commit().await?;
        }
        sqlx::query("DELETE FROM search_index_state WHERE tenant = $1")
            .bind(self.tenant())
            .execute(&self.inner.writer)
            .await?;
        sqlx::query("INSERT INTO search_index_state (tenant, version) VALUES ($1, $2) ON CONFLICT (tenant) DO NOTHING")
            .bind(self.tenant())
            .bind(INDEX_VERSION)
            .execute(&self.inner.writer)
            .await?;
        if done > 0 {
            tracing::info!(resources = done, "search index rebuilt");
        }
        Ok(())
    }

    /// The integrity hash of a tombstone, which has no content: a MAC over where it lives and
    /// when, so that setting `deleted` on a live version (or clearing it on a tombstone) is
    /// detected on read like any other tampering.
    fn tombstone_hash(&self, rtype: &str, id: &str, version: i64, last_updated_ms: i64) -> [u8; 32] {
        let place = format!("{}\0{rtype}\0{id}\0{version}\0{last_updated_ms}", self.tenant());
        self.inner.indexer.mac("tombstone-v1", place.as_bytes())
    }

    /// IN-3: the integrity hash stored beside each version, HMAC-SHA-256 of the exact
    /// plaintext under the index key (domain `content-v1`). Keyed, so that someone who can
    /// read the database cannot test guesses of a small resource against it.
    fn content_hash(&self, plaintext: &[u8]) -> [u8; 32] {
        self.inner.indexer.mac("content-v1", plaintext)
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.reader).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.reader.close().await;
    }

    // ----- resources -------------------------------------------------------------------------

    /// Creates a resource with a server-assigned id (UUID v4) as version 1.
    pub async fn create(&self, rtype: &str, resource: Value) -> Result<Stored, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.create_with_id(rtype, &id, resource).await
    }

    /// Creates version 1 of a resource with the given id. [`StoreError::Duplicate`] if a resource
    /// (live or deleted) with this id exists.
    pub async fn create_with_id(&self, rtype: &str, id: &str, resource: Value) -> Result<Stored, StoreError> {
        let op = TxOp::Create {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            resource,
            if_none_exist: None,
        };
        match self.single(op).await? {
            TxOutcome::Created(s) => Ok(s),
            _ => Err(StoreError::Corrupt("unexpected outcome of a create".into())),
        }
    }

    /// The current version. [`StoreError::NotFound`] if it never existed,
    /// [`StoreError::Gone`] if the current version is a tombstone.
    pub async fn read(&self, rtype: &str, id: &str) -> Result<Stored, StoreError> {
        self.read_json(rtype, id).await?.parse()
    }

    /// A specific version. A tombstone version gives [`StoreError::Gone`].
    pub async fn vread(&self, rtype: &str, id: &str, version: i64) -> Result<Stored, StoreError> {
        self.vread_json(rtype, id, version).await?.parse()
    }

    /// [`Store::read`] without parsing: the verified JSON exactly as stored.
    pub async fn read_json(&self, rtype: &str, id: &str) -> Result<StoredJson, StoreError> {
        self.live_json(self.version_row(rtype, id, None).await?)
    }

    /// [`Store::vread`] without parsing: the verified JSON exactly as stored.
    pub async fn vread_json(&self, rtype: &str, id: &str, version: i64) -> Result<StoredJson, StoreError> {
        self.live_json(self.version_row(rtype, id, Some(version)).await?)
    }

    /// The stored row of `rtype/id`'s current version, or of `version`: on a SQLite file
    /// through a direct connection on this thread, else through the reader pool.
    async fn version_row(
        &self,
        rtype: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<VersionRow>, StoreError> {
        let Some(local) = &self.inner.local else {
            let row = self
                .point_query(rtype, id, version)
                .fetch_optional(&self.inner.reader)
                .await?;
            return Ok(row.map(|r| VersionRow::from_any(&r)).transpose()?);
        };
        let tenant = self.tenant();
        match version {
            Some(v) => local_row(local, READ_VERSION, (tenant, rtype, id, v)),
            None => local_row(local, READ_CURRENT, (tenant, rtype, id)),
        }
    }

    /// [`READ_CURRENT`] (or [`READ_VERSION`] when `version` is given) with its values bound.
    fn point_query<'q>(
        &'q self,
        rtype: &'q str,
        id: &'q str,
        version: Option<i64>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
        let sql = if version.is_some() {
            READ_VERSION
        } else {
            READ_CURRENT
        };
        let q = sqlx::query(sql).bind(self.tenant()).bind(rtype).bind(id);
        match version {
            Some(v) => q.bind(v),
            None => q,
        }
    }

    fn live_json(&self, row: Option<VersionRow>) -> Result<StoredJson, StoreError> {
        let (meta, json) = self.unseal(row.ok_or(StoreError::NotFound)?)?;
        let meta = self.gone_or_live(meta)?;
        let json = json.ok_or_else(|| StoreError::Corrupt("live version without content".into()))?;
        Ok(StoredJson {
            rtype: meta.rtype,
            id: meta.id,
            version: meta.version,
            last_updated: meta.last_updated,
            json,
        })
    }

    fn gone_or_live(&self, s: Stored) -> Result<Stored, StoreError> {
        if s.deleted {
            Err(StoreError::Gone {
                version: s.version,
                last_updated: s.last_updated,
            })
        } else {
            Ok(s)
        }
    }

    /// Writes a new version. With `if_match`, the current version must equal it
    /// ([`StoreError::VersionConflict`] otherwise). A missing resource is created with this id
    /// (`created = true`) unless `if_match` is given ([`StoreError::NotFound`]). Updating a deleted
    /// resource revives it as a new version (`created = true`).
    pub async fn update(
        &self,
        rtype: &str,
        id: &str,
        resource: Value,
        if_match: Option<i64>,
    ) -> Result<(Stored, bool), StoreError> {
        let op = TxOp::Update {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            resource,
            if_match,
            may_create: true,
        };
        match self.single(op).await? {
            TxOutcome::Updated { stored, created } => Ok((stored, created)),
            _ => Err(StoreError::Corrupt("unexpected outcome of an update".into())),
        }
    }

    /// Writes a tombstone version. `None` if the resource never existed; deleting a deleted
    /// resource returns the existing tombstone (after the `if_match` check).
    pub async fn delete(
        &self,
        rtype: &str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<Stored>, StoreError> {
        let op = TxOp::Delete {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            if_match,
        };
        match self.single(op).await? {
            TxOutcome::Deleted(tombstone) => Ok(tombstone),
            _ => Err(StoreError::Corrupt("unexpected outcome of a delete".into())),
        }
    }

    /// Versions, newest first, parsed. `rtype: None` covers all types; `id` requires `rtype`.
    /// `since` keeps versions last updated at or after that instant. See
    /// [`Store::history_page`] for pages bounded by bytes.
    pub async fn history(
        &self,
        rtype: Option<&str>,
        id: Option<&str>,
        since: Option<OffsetDateTime>,
        count: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let q = HistoryQuery {
            rtype,
            id,
            since,
            count,
            ..HistoryQuery::default()
        };
        let page = self.history_page(&q, usize::MAX).await?;
        page.versions
            .into_iter()
            .map(|v| {
                let mut s = v.meta;
                if let Some(json) = v.json {
                    s.resource = Some(parse_stored(&json)?);
                }
                Ok(s)
            })
            .collect()
    }

    // ----- write internals ---------------------------------------------------------------------

    async fn current_for_write(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
    ) -> Result<Option<Current>, StoreError> {
        let sql = match self.inner.backend {
            Backend::Sqlite => SELECT_CURRENT_FOR_WRITE_SQLITE,
            Backend::Postgres => SELECT_CURRENT_FOR_WRITE_PG,
        };
        let row = sqlx::query(sql)
            .bind(self.tenant())
            .bind(rtype)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let version: i64 = row.try_get("version")?;
        let deleted = row.try_get::<i64, _>("deleted")? != 0;
        let last_updated_ms: i64 = sqlx::query(
            "SELECT last_updated_ms FROM resource_version \
             WHERE tenant = $1 AND rtype = $2 AND id = $3 AND version = $4",
        )
        .bind(self.tenant())
        .bind(rtype)
        .bind(id)
        .bind(version)
        .fetch_one(&mut **tx)
        .await?
        .try_get("last_updated_ms")?;
        Ok(Some(Current {
            version,
            deleted,
            last_updated_ms,
        }))
    }

    /// The error for a write that lost a race: the current version as now committed.
    async fn conflict(&self, rtype: &str, id: &str) -> StoreError {
        let current =
            sqlx::query("SELECT version FROM resource_current WHERE tenant = $1 AND rtype = $2 AND id = $3")
                .bind(self.tenant())
                .bind(rtype)
                .bind(id)
                .fetch_optional(&self.inner.writer)
                .await;
        match current {
            Ok(Some(r)) => match r.try_get::<i64, _>("version") {
                Ok(v) => StoreError::VersionConflict { current: v },
                Err(e) => e.into(),
            },
            Ok(None) => StoreError::VersionConflict { current: 0 },
            Err(e) => e.into(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_version(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
        version: i64,
        last_updated: OffsetDateTime,
        sealed: Option<(u32, Vec<u8>, [u8; 32])>,
    ) -> Result<(), sqlx::Error> {
        let last_updated_ms = ceil_ms(last_updated);
        let last_updated = format_instant(last_updated);
        let (deleted, epoch, ct, hash) = match sealed {
            Some((e, ct, h)) => (0i64, Some(i64::from(e)), Some(ct), Some(h.to_vec())),
            None => (
                1i64,
                None,
                None,
                Some(self.tombstone_hash(rtype, id, version, last_updated_ms).to_vec()),
            ),
        };
        sqlx::query(
            "INSERT INTO resource_version (tenant, rtype, id, version, last_updated, last_updated_ms, \
             deleted, key_epoch, ciphertext, content_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(self.tenant())
        .bind(rtype)
        .bind(id)
        .bind(version)
        .bind(last_updated)
        .bind(last_updated_ms)
        .bind(deleted)
        .bind(epoch)
        .bind(ct)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Moves the current pointer; returns false if another writer moved it first.
    async fn set_current(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
        prev: Option<i64>,
        version: i64,
        deleted: bool,
    ) -> Result<bool, sqlx::Error> {
        let deleted = i64::from(deleted);
        let res = match prev {
            None => {
                sqlx::query(
                    "INSERT INTO resource_current (tenant, rtype, id, version, deleted) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(self.tenant())
                .bind(rtype)
                .bind(id)
                .bind(version)
                .bind(deleted)
                .execute(&mut **tx)
                .await
            }
            Some(prev) => {
                sqlx::query(
                    "UPDATE resource_current SET version = $1, deleted = $2 \
                     WHERE tenant = $3 AND rtype = $4 AND id = $5 AND version = $6",
                )
                .bind(version)
                .bind(deleted)
                .bind(self.tenant())
                .bind(rtype)
                .bind(id)
                .bind(prev)
                .execute(&mut **tx)
                .await
            }
        };
        match res {
            Ok(r) => Ok(r.rows_affected() == 1),
            Err(e) if error::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces the index rows of a resource (only the current version is indexed).
    async fn replace_index(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
        rows: &index::IndexRows,
    ) -> Result<(), sqlx::Error> {
        for table in index::TABLES.iter().map(|(t, _)| *t).chain(["compartment"]) {
            // Table names are constants of this crate.
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE tenant = $1 AND rtype = $2 AND id = $3"
            )))
            .bind(self.tenant())
            .bind(rtype)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        let compartment: Vec<Vec<index::Arg>> = rows
            .compartment
            .iter()
            .map(|p| vec![index::Arg::Str(p.clone())])
            .collect();
        let tables = index::TABLES
            .iter()
            .zip([&rows.blind, &rows.dates, &rows.refs, &rows.quantities])
            .map(|((t, cols), r)| (*t, *cols, r))
            .chain([("compartment", &["patient_id"][..], &compartment)]);
        for (table, cols, table_rows) in tables {
            for chunk in table_rows.chunks(INDEX_ROWS_PER_INSERT) {
                let width = 3 + cols.len();
                let mut sql = format!(
                    "INSERT INTO {table} (tenant, rtype, id, {}) VALUES ",
                    cols.join(", ")
                );
                for i in 0..chunk.len() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    let ph: Vec<String> = (1..=width).map(|k| format!("${}", i * width + k)).collect();
                    sql.push('(');
                    sql.push_str(&ph.join(", "));
                    sql.push(')');
                }
                // Only constant names and generated placeholders are interpolated; values are bound.
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for row in chunk {
                    q = q.bind(self.tenant()).bind(rtype).bind(id);
                    for a in row {
                        q = match a {
                            index::Arg::Str(s) => q.bind(s.clone()),
                            index::Arg::OptStr(s) => q.bind(s.clone()),
                            index::Arg::I64(v) => q.bind(*v),
                            index::Arg::F64(v) => q.bind(*v),
                            index::Arg::Bytes(b) => q.bind(b.clone()),
                        };
                    }
                }
                q.execute(&mut **tx).await?;
            }
        }
        Ok(())
    }

    /// Writes a new version of `rtype/id` inside `tx`, as `mode` allows (the one write path of creates, updates
    /// and transaction bundles). With `if_match`, the current version must equal it. A lost
    /// race (a concurrent writer moved the current pointer or took the id) is
    /// [`WriteFail::Lost`]: the transaction must then be rolled back.
    async fn put_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
        resource: &Value,
        if_match: Option<i64>,
        mode: Put,
    ) -> Result<(Stored, bool), WriteFail> {
        let create_only = mode == Put::Create;
        let current = self.current_for_write(tx, rtype, id).await?;
        let (version, created) = match &current {
            None if if_match.is_some() || mode == Put::Update => return Err(StoreError::NotFound.into()),
            None => (1, true),
            Some(_) if create_only => return Err(StoreError::Duplicate.into()),
            Some(c) if c.deleted && mode == Put::Update => {
                return Err(StoreError::Gone {
                    version: c.version,
                    last_updated: ms_to_instant(c.last_updated_ms)?,
                }
                .into());
            }
            Some(c) => {
                if let Some(expected) = if_match
                    && expected != c.version
                {
                    return Err(StoreError::VersionConflict { current: c.version }.into());
                }
                (c.version + 1, c.deleted)
            }
        };
        let lost = WriteFail::Lost { create_only };
        let last_updated_ms = now_ms(current.as_ref().map(|c| c.last_updated_ms));
        let last_updated = ms_to_instant(last_updated_ms)?;

        let mut resource = resource.clone();
        stamp(&mut resource, rtype, id, version, &format_instant(last_updated))?;
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&resource)
                .map_err(|_| StoreError::Corrupt("resource does not serialize".into()))?,
        );
        let hash = self.content_hash(&plaintext);
        let aad = Aad {
            tenant: self.tenant(),
            rtype,
            id,
            version,
        };
        let (epoch, sealed) = self.inner.envelope.seal(&aad, &plaintext)?;
        let index_rows = index::rows_for(&self.inner.indexer, &resource);

        match self
            .insert_version(tx, rtype, id, version, last_updated, Some((epoch, sealed, hash)))
            .await
        {
            Ok(()) => {}
            Err(e) if error::is_unique_violation(&e) => return Err(lost),
            Err(e) => return Err(StoreError::from(e).into()),
        }
        if !self
            .set_current(tx, rtype, id, current.as_ref().map(|c| c.version), version, false)
            .await?
        {
            return Err(lost);
        }
        self.replace_index(tx, rtype, id, &index_rows).await?;
        Ok((
            Stored {
                rtype: rtype.to_owned(),
                id: id.to_owned(),
                version,
                last_updated,
                deleted: false,
                resource: Some(resource),
            },
            created,
        ))
    }

    /// Writes a tombstone version of `rtype/id` inside `tx`; `None` if it never existed.
    /// Deleting a deleted resource returns the existing tombstone (after the `if_match` check).
    async fn delete_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<Stored>, WriteFail> {
        let Some(current) = self.current_for_write(tx, rtype, id).await? else {
            return Ok(None);
        };
        if let Some(expected) = if_match
            && expected != current.version
        {
            return Err(StoreError::VersionConflict {
                current: current.version,
            }
            .into());
        }
        if current.deleted {
            return Ok(Some(Stored {
                rtype: rtype.to_owned(),
                id: id.to_owned(),
                version: current.version,
                last_updated: ms_to_instant(current.last_updated_ms)?,
                deleted: true,
                resource: None,
            }));
        }
        let lost = WriteFail::Lost { create_only: false };
        let version = current.version + 1;
        let last_updated = ms_to_instant(now_ms(Some(current.last_updated_ms)))?;
        match self
            .insert_version(tx, rtype, id, version, last_updated, None)
            .await
        {
            Ok(()) => {}
            Err(e) if error::is_unique_violation(&e) => return Err(lost),
            Err(e) => return Err(StoreError::from(e).into()),
        }
        if !self
            .set_current(tx, rtype, id, Some(current.version), version, true)
            .await?
        {
            return Err(lost);
        }
        self.replace_index(tx, rtype, id, &index::IndexRows::default())
            .await?;
        Ok(Some(Stored {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            version,
            last_updated,
            deleted: true,
            resource: None,
        }))
    }

    /// The current version (or `version`) of `rtype/id` as seen inside `tx`, including the
    /// transaction's own earlier writes. Errors as [`Store::read`] / [`Store::vread`].
    async fn read_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        rtype: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<StoredJson, StoreError> {
        let row = self
            .point_query(rtype, id, version)
            .fetch_optional(&mut **tx)
            .await?;
        self.live_json(row.map(|r| VersionRow::from_any(&r)).transpose()?)
    }

    // ----- read internals ----------------------------------------------------------------------

    /// Decodes a `resource_version` row fetched through sqlx; see [`Store::open_version`].
    fn decode(&self, row: &AnyRow) -> Result<Stored, StoreError> {
        self.open_version(VersionRow::from_any(row)?)
    }

    /// Opens and parses a stored version; see [`Store::unseal`].
    fn open_version(&self, row: VersionRow) -> Result<Stored, StoreError> {
        let (mut stored, json) = self.unseal(row)?;
        if let Some(json) = json {
            stored.resource = Some(parse_stored(&json)?);
        }
        Ok(stored)
    }

    /// Opens a stored version, verifying the AEAD tag (with AAD bound to the row's own
    /// tenant/type/id/version) and the keyed content hash, or a tombstone's MAC. Gives the
    /// version (with `resource: None`) and its JSON (`None` for a tombstone).
    fn unseal(&self, row: VersionRow) -> Result<(Stored, Option<PlainJson>), StoreError> {
        let VersionRow {
            rtype,
            id,
            version,
            last_updated_ms,
            deleted,
            key_epoch,
            ciphertext,
            content_hash,
        } = row;
        let last_updated = ms_to_instant(last_updated_ms)?;
        if deleted {
            let expected = self.tombstone_hash(&rtype, &id, version, last_updated_ms);
            if content_hash.as_deref() != Some(&expected[..]) {
                tracing::error!(rtype = %rtype, id = %id, version, "tombstone failed its integrity check");
                return Err(StoreError::Integrity { rtype, id, version });
            }
            let stored = Stored {
                rtype,
                id,
                version,
                last_updated,
                deleted,
                resource: None,
            };
            return Ok((stored, None));
        }
        let integrity = |rtype: String, id: String| {
            tracing::error!(
                rtype = %rtype,
                id = %id,
                version,
                "stored resource version failed its integrity check (AEAD tag or content hash)"
            );
            StoreError::Integrity { rtype, id, version }
        };
        let (Some(epoch), Some(ciphertext), Some(content_hash)) = (key_epoch, ciphertext, content_hash)
        else {
            return Err(integrity(rtype, id));
        };
        let Ok(epoch) = u32::try_from(epoch) else {
            return Err(integrity(rtype, id));
        };
        let aad = Aad {
            tenant: self.tenant(),
            rtype: &rtype,
            id: &id,
            version,
        };
        let plaintext = match self.inner.envelope.open(epoch, &aad, &ciphertext) {
            Ok(p) => Zeroizing::new(p),
            Err(ward_crypto::Error::UnknownEpoch(e)) => {
                tracing::error!(rtype = %rtype, id = %id, version, epoch = e, "no data key for the stored key epoch");
                return Err(StoreError::Crypto(ward_crypto::Error::UnknownEpoch(e)));
            }
            Err(_) => return Err(integrity(rtype, id)),
        };
        if self.content_hash(&plaintext)[..] != content_hash[..] {
            return Err(integrity(rtype, id));
        }
        let stored = Stored {
            rtype,
            id,
            version,
            last_updated,
            deleted,
            resource: None,
        };
        Ok((stored, Some(plaintext)))
    }

    // ----- OAuth clients -----------------------------------------------------------------------

    /// Registers a client; [`StoreError::Duplicate`] if the client id is taken.
    pub async fn insert_client(&self, c: &ClientRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO oauth_client (client_id, name, secret_hash, scopes, disabled, created_at, \
             redirect_uris, is_public, jwks, jwks_url) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(c.client_id.clone())
        .bind(c.name.clone())
        .bind(c.secret_hash.clone())
        .bind(c.scopes.clone())
        .bind(i64::from(c.disabled))
        .bind(format_instant(c.created_at))
        .bind(
            serde_json::to_string(&c.redirect_uris)
                .map_err(|_| StoreError::Corrupt("redirect uris".into()))?,
        )
        .bind(i64::from(c.public))
        .bind(c.jwks.clone())
        .bind(c.jwks_url.clone())
        .execute(&self.inner.writer)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if error::is_unique_violation(&e) => Err(StoreError::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT client_id, name, secret_hash, scopes, disabled, created_at, redirect_uris, \
             is_public, jwks, jwks_url FROM oauth_client \
             WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.inner.reader)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    pub async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, name, secret_hash, scopes, disabled, created_at, redirect_uris, \
             is_public, jwks, jwks_url FROM oauth_client \
             ORDER BY client_id",
        )
        .fetch_all(&self.inner.reader)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// The keyed hash of a client secret Ward generated (256 random bits need no slow hash):
    /// HMAC-SHA-256 under the index key, in its own domain, bound to the client id so a row's
    /// hash is worth nothing for another client.
    pub fn client_secret_tag(&self, client_id: &str, secret: &[u8]) -> [u8; 32] {
        self.bound_tag("client-secret-v1", client_id, secret)
    }

    /// HMAC-SHA-256 under the index key in domain `label` of (length of `id`, `id`, `secret`).
    fn bound_tag(&self, label: &str, id: &str, secret: &[u8]) -> [u8; 32] {
        let id_len = u64::try_from(id.len()).unwrap_or(u64::MAX);
        let mut msg = zeroize::Zeroizing::new(Vec::with_capacity(8 + id.len() + secret.len()));
        msg.extend_from_slice(&id_len.to_be_bytes());
        msg.extend_from_slice(id.as_bytes());
        msg.extend_from_slice(secret);
        self.inner.indexer.mac(label, &msg)
    }

    /// Replaces a client's stored secret hash if it is still `old` (a migration after a
    /// successful check); false if it had changed meanwhile.
    pub async fn replace_client_secret_hash(
        &self,
        client_id: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let res =
            sqlx::query("UPDATE oauth_client SET secret_hash = $1 WHERE client_id = $2 AND secret_hash = $3")
                .bind(new.to_owned())
                .bind(client_id.to_owned())
                .bind(old.to_owned())
                .execute(&self.inner.writer)
                .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Disables a client and revokes it as a subject, so every node refuses its tokens
    /// within a second; false if there is no such client.
    pub async fn disable_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("UPDATE oauth_client SET disabled = 1 WHERE client_id = $1")
            .bind(client_id)
            .execute(&self.inner.writer)
            .await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        self.revoke(RevokedKind::Subject, client_id).await?;
        Ok(true)
    }
}

fn client_from_row(r: &AnyRow) -> Result<ClientRecord, StoreError> {
    let created: String = r.try_get("created_at")?;
    let created_at = OffsetDateTime::parse(&created, &time::format_description::well_known::Rfc3339)
        .map_err(|_| StoreError::Corrupt("client created_at".into()))?;
    Ok(ClientRecord {
        client_id: r.try_get("client_id")?,
        name: r.try_get("name")?,
        secret_hash: r.try_get("secret_hash")?,
        scopes: r.try_get("scopes")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at,
        redirect_uris: serde_json::from_str(&r.try_get::<String, _>("redirect_uris")?)
            .map_err(|_| StoreError::Corrupt("client redirect_uris".into()))?,
        public: r.try_get::<i64, _>("is_public")? != 0,
        jwks: r.try_get("jwks")?,
        jwks_url: r.try_get("jwks_url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_connection_settings() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        let store = Store::open(&url, &Kek::generate().unwrap()).await.unwrap();
        let one = |pool: AnyPool, pragma: &'static str| async move {
            let row = sqlx::query(pragma).fetch_one(&pool).await.unwrap();
            match row.try_get::<String, _>(0) {
                Ok(s) => s,
                Err(_) => row.try_get::<i64, _>(0).unwrap().to_string(),
            }
        };
        let w = store.inner.writer.clone();
        let r = store.inner.reader.clone();
        assert_eq!(w.options().get_max_connections(), 1);
        assert_eq!(one(w.clone(), "PRAGMA journal_mode").await, "wal");
        assert_eq!(one(w.clone(), "PRAGMA synchronous").await, "2"); // FULL
        assert_eq!(one(w.clone(), "PRAGMA foreign_keys").await, "1");
        assert_eq!(one(w.clone(), "PRAGMA query_only").await, "0");
        assert_eq!(one(r.clone(), "PRAGMA synchronous").await, "2");
        assert_eq!(one(r.clone(), "PRAGMA query_only").await, "1");
        assert!(sqlx::query("DELETE FROM oauth_client").execute(&r).await.is_err());
        store.close().await;
    }

    #[test]
    fn instant_format() {
        let t = time::macros::datetime!(2026-11-23 12:00:00.123456 UTC);
        assert_eq!(format_instant(t), "2026-11-23T12:00:00.123Z");
        let t = time::macros::datetime!(2026-11-23 13:00:00.5 +01:00);
        assert_eq!(format_instant(t), "2026-11-23T12:00:00.500Z");
    }

    #[test]
    fn ceil_to_ms() {
        let t = time::macros::datetime!(2026-11-23 12:00:00.123 UTC);
        let base = ceil_ms(t);
        assert_eq!(ceil_ms(t + time::Duration::nanoseconds(1)), base + 1);
        assert_eq!(ms_to_instant(base).unwrap(), t);
    }

    #[test]
    fn stamp_keeps_order_and_meta() {
        let mut v: Value = serde_json::from_str(
            r#"{"resourceType":"Patient","meta":{"profile":["x"],"versionId":"9"},"active":true}"#,
        )
        .unwrap();
        stamp(&mut v, "Patient", "abc", 2, "2026-11-23T12:00:00.123Z").unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"resourceType":"Patient","id":"abc","meta":{"profile":["x"],"versionId":"2","lastUpdated":"2026-11-23T12:00:00.123Z"},"active":true}"#
        );
        let mut wrong: Value = serde_json::json!({"resourceType": "Observation"});
        assert!(stamp(&mut wrong, "Patient", "a", 1, "x").is_err());
        assert!(stamp(&mut Value::Null, "Patient", "a", 1, "x").is_err());
    }
}
