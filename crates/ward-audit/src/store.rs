//! The audit store: its own connection pool(s), migrations and the few statements the writer,
//! verifier and queries need. One SQL code path for SQLite and PostgreSQL (sqlx `Any`, `$n`
//! placeholders); only the DDL differs per backend.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row, SqlSafeStr};

use crate::AuditError;

/// Which database the audit store lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Migrations: (version, description, SQLite DDL, PostgreSQL DDL).
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "audit",
        include_str!("../migrations/sqlite/0001_audit.sql"),
        include_str!("../migrations/postgres/0001_audit.sql"),
    ),
    (
        2,
        "keyed",
        include_str!("../migrations/sqlite/0002_keyed.sql"),
        include_str!("../migrations/postgres/0002_keyed.sql"),
    ),
    (
        3,
        "intents",
        include_str!("../migrations/sqlite/0003_intents.sql"),
        include_str!("../migrations/postgres/0003_intents.sql"),
    ),
];

/// The migrations table of the audit schema (distinct from the resource store's).
pub const MIGRATIONS_TABLE: &str = "ward_audit_migrations";

/// Columns of an `audit_record` insert.
const RECORD_COLUMNS: usize = 16;
/// Rows per multi-row INSERT into `audit_record` (16 parameters each).
const RECORD_ROWS_PER_INSERT: usize = 50;
/// Rows per multi-row INSERT into `audit_patient` (3 parameters each).
const PATIENT_ROWS_PER_INSERT: usize = 200;

/// How often the WAL of a SQLite audit file is checkpointed in the background.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Connection settings of the audit store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// SQLite `busy_timeout`: how long a commit waits for a lock before the store is reported
    /// unavailable.
    pub busy_timeout: Duration,
    /// How long to wait for a pooled connection (PostgreSQL unreachable → unavailable).
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    /// WAL, and a synced WAL on every commit: an acknowledged record survives power loss (AU-2).
    fn sqlite(&self, read_only: bool) -> ward_sqlite::Settings {
        ward_sqlite::Settings {
            read_only,
            ..ward_sqlite::Settings::new(self.busy_timeout)
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle to the audit database. Cheap to clone.
#[derive(Clone)]
pub struct AuditStore {
    backend: Backend,
    /// The writer's pool (one connection for SQLite).
    pub(crate) writer: AnyPool,
    /// Reads: verification, export, queries (read-only connections on SQLite).
    pub(crate) reader: AnyPool,
    /// SQLite file: the direct connection records and checkpoints are inserted through (see
    /// [`AuditStore::insert_batch`]).
    direct: Option<Arc<Mutex<rusqlite::Connection>>>,
    /// Keeps the WAL of the direct connection short, off the writer's commit path.
    _checkpointer: Option<Arc<ward_sqlite::Checkpointer>>,
    /// The SQLite database file, if any.
    file: Option<std::path::PathBuf>,
}

impl fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A record ready to insert (already sequenced and hashed).
pub(crate) struct PreparedRow {
    pub node: String,
    pub seq: i64,
    pub at_ms: i64,
    pub action: String,
    pub status: i64,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub record: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    /// Seq of the chain's last checkpoint when the record was written.
    pub cp_seq: i64,
    /// The record's tag under the audit MAC key.
    pub mac: [u8; 32],
    pub patients: Vec<String>,
    pub patients_via: Vec<String>,
    /// The record's kind (`RecordKind::as_str`) and the intent it resolves: query aids.
    pub kind: &'static str,
    pub intent_seq: Option<i64>,
}

impl PreparedRow {
    /// The record's patient ids, each once (the `audit_patient` key).
    fn distinct_patients(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.patients.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A stored signed checkpoint. The one at seq 0 (hash all zeros, `prev_seq` -1) is the chain's
/// genesis: it registers the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub node: String,
    pub seq: i64,
    pub hash: Vec<u8>,
    pub key_id: String,
    pub signature: Vec<u8>,
    pub at: String,
    /// Seq of the chain's previous checkpoint (-1 for the genesis).
    pub prev_seq: i64,
    /// The chains known when it was signed, sorted, comma-separated.
    pub chains: String,
}

impl Checkpoint {
    /// The signed message (UTF-8):
    /// `ward-audit-checkpoint-v2|{node}|{seq}|{hash_hex}|{at}|{prev_seq}|{chains}`.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "ward-audit-checkpoint-v2|{}|{}|{}|{}|{}|{}",
            self.node,
            self.seq,
            hex::encode(&self.hash),
            self.at,
            self.prev_seq,
            self.chains
        )
        .into_bytes()
    }

    /// The chains it names.
    pub fn chain_list(&self) -> impl Iterator<Item = &str> {
        self.chains.split(',').filter(|c| !c.is_empty())
    }
}

/// The head of a chain: its last seq and hash (seq 0 and zero hash when empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: [0; 32],
    };
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
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m
}

async fn sqlite_pool(
    url: &str,
    max: u32,
    read_only: bool,
    opts: &StoreOptions,
) -> Result<AnyPool, AuditError> {
    Ok(ward_sqlite::pool(url, max, opts.acquire_timeout, opts.sqlite(read_only)).await?)
}

/// [`AuditStore::insert_batch`] on a direct SQLite connection. `IMMEDIATE`: take the write
/// lock at BEGIN, so a busy database is waited for (busy timeout) rather than failing mid-batch.
fn insert_batch_direct(conn: &mut rusqlite::Connection, rows: &[PreparedRow]) -> Result<(), AuditError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut record = tx.prepare_cached(
            "INSERT INTO audit_record (node, seq, at_ms, action, status, client_id, user_id, \
             resource_type, resource_id, record, prev_hash, hash, cp_seq, mac, kind, intent_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        let mut patient =
            tx.prepare_cached("INSERT INTO audit_patient (node, seq, patient_id) VALUES (?1, ?2, ?3)")?;
        let mut via =
            tx.prepare_cached("INSERT INTO audit_patient_via (node, seq, reference) VALUES (?1, ?2, ?3)")?;
        for r in rows {
            record.execute(rusqlite::params![
                r.node,
                r.seq,
                r.at_ms,
                r.action,
                r.status,
                r.client_id,
                r.user_id,
                r.resource_type,
                r.resource_id,
                r.record,
                &r.prev_hash[..],
                &r.hash[..],
                r.cp_seq,
                &r.mac[..],
                r.kind,
                r.intent_seq,
            ])?;
            for p in r.distinct_patients() {
                patient.execute(rusqlite::params![r.node, r.seq, p])?;
            }
            for v in &r.patients_via {
                via.execute(rusqlite::params![r.node, r.seq, v])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn hash32(v: &[u8]) -> Result<[u8; 32], AuditError> {
    v.try_into()
        .map_err(|_| AuditError::Corrupt("stored hash has the wrong length".into()))
}

impl AuditStore {
    /// Opens (creating if needed) the audit database at `url` and applies the audit migrations.
    /// SQLite: pass a file of its own, e.g. `sqlite://DIR/audit.db?mode=rwc`. PostgreSQL: the
    /// same database as the resources is fine (the audit tables are separate).
    pub async fn open(url: &str) -> Result<AuditStore, AuditError> {
        AuditStore::open_with(url, &StoreOptions::default()).await
    }

    /// [`AuditStore::open`] with explicit connection settings.
    pub async fn open_with(url: &str, opts: &StoreOptions) -> Result<AuditStore, AuditError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(AuditError::Database(sqlx::Error::Configuration(
                "unsupported database URL scheme (expected sqlite: or postgres:)".into(),
            )));
        };
        let (writer, reader, direct, _checkpointer) = match backend {
            Backend::Sqlite => {
                let writer = sqlite_pool(url, 1, false, opts).await?;
                migrate(&writer, backend).await?;
                let reader = sqlite_pool(url, 2, true, opts).await?;
                let (direct, checkpointer) = match ward_sqlite::file_of_url(url) {
                    Some(path) => {
                        let settings = ward_sqlite::Settings {
                            background_checkpoints: true,
                            ..opts.sqlite(false)
                        };
                        let conn = ward_sqlite::connect(&path, settings)?;
                        let cp =
                            ward_sqlite::Checkpointer::start(&path, CHECKPOINT_EVERY, opts.busy_timeout)?;
                        (Some(Arc::new(Mutex::new(conn))), Some(Arc::new(cp)))
                    }
                    None => (None, None),
                };
                (writer, reader, direct, checkpointer)
            }
            Backend::Postgres => {
                // Notices and warnings (the migration table's "already exists", a rollback of an
                // ended transaction) only fill the log; errors still come back as errors.
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(opts.acquire_timeout)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            sqlx::query("SET client_min_messages = error")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                migrate(&pool, backend).await?;
                (pool.clone(), pool, None, None)
            }
        };
        Ok(AuditStore {
            backend,
            writer,
            reader,
            direct,
            _checkpointer,
            file: ward_sqlite::file_of_url(url).filter(|_| backend == Backend::Sqlite),
        })
    }

    /// The SQLite database file (none for PostgreSQL or an in-memory database).
    pub(crate) fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// The last record of `node`'s chain.
    pub(crate) async fn head(&self, node: &str) -> Result<Head, AuditError> {
        const SQL: &str = "SELECT seq, hash FROM audit_record WHERE node = $1 ORDER BY seq DESC LIMIT 1";
        let row: Option<(i64, Vec<u8>)> = match &self.direct {
            Some(conn) => Self::with_direct(conn, |c| {
                use rusqlite::OptionalExtension;
                Ok(c.prepare_cached(SQL)?
                    .query_row([node], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?)
            })?,
            None => match sqlx::query(SQL).bind(node).fetch_optional(&self.writer).await? {
                Some(r) => Some((r.try_get("seq")?, r.try_get("hash")?)),
                None => None,
            },
        };
        match row {
            None => Ok(Head::EMPTY),
            Some((seq, hash)) => Ok(Head {
                seq,
                hash: hash32(&hash)?,
            }),
        }
    }

    /// The hash stored for (node, seq), if that record exists.
    pub(crate) async fn hash_at(&self, node: &str, seq: i64) -> Result<Option<Vec<u8>>, AuditError> {
        let row = sqlx::query("SELECT hash FROM audit_record WHERE node = $1 AND seq = $2")
            .bind(node)
            .bind(seq)
            .fetch_optional(&self.writer)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("hash")?),
            None => None,
        })
    }

    /// Whether inserts go through a direct SQLite connection, blocking the calling thread: the
    /// writer then runs on a thread of its own ([`crate::start_writer`]).
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Runs `f` on the direct connection, on this thread. A transaction left open (a failed
    /// rollback, a panic mid-batch) is rolled back first: every batch starts clean.
    fn with_direct<T>(
        conn: &Mutex<rusqlite::Connection>,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let mut conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        f(&mut conn)
    }

    /// Inserts sequenced, hashed records (and their patient index rows) in ONE transaction, and
    /// gives the rows back.
    ///
    /// On a SQLite file this runs on the calling thread through the direct connection, with
    /// prepared single-row inserts: sqlx would hand every statement to its worker thread and
    /// back, and the writer's latency is every waiting request's latency.
    pub(crate) async fn insert_batch(&self, rows: Vec<PreparedRow>) -> Result<Vec<PreparedRow>, AuditError> {
        match &self.direct {
            Some(conn) => Self::with_direct(conn, |c| insert_batch_direct(c, &rows))?,
            None => self.insert_batch_sqlx(&rows).await?,
        }
        Ok(rows)
    }

    async fn insert_batch_sqlx(&self, rows: &[PreparedRow]) -> Result<(), AuditError> {
        let mut tx = self.writer.begin().await?;
        for chunk in rows.chunks(RECORD_ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO audit_record (node, seq, at_ms, action, status, client_id, user_id, \
                 resource_type, resource_id, record, prev_hash, hash, cp_seq, mac, kind, intent_seq) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for j in 0..RECORD_COLUMNS {
                    if j > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", i * RECORD_COLUMNS + j + 1));
                }
                sql.push(')');
            }
            // Only placeholders are generated here; every value is bound.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.node.as_str())
                    .bind(r.seq)
                    .bind(r.at_ms)
                    .bind(r.action.as_str())
                    .bind(r.status)
                    .bind(r.client_id.as_deref())
                    .bind(r.user_id.as_deref())
                    .bind(r.resource_type.as_deref())
                    .bind(r.resource_id.as_deref())
                    .bind(r.record.as_str())
                    .bind(r.prev_hash.to_vec())
                    .bind(r.hash.to_vec())
                    .bind(r.cp_seq)
                    .bind(r.mac.to_vec())
                    .bind(r.kind)
                    .bind(r.intent_seq);
            }
            q.execute(&mut *tx).await?;
        }
        let patients: Vec<(&str, i64, &str)> = rows
            .iter()
            .flat_map(|r| {
                r.distinct_patients()
                    .into_iter()
                    .map(move |p| (r.node.as_str(), r.seq, p))
            })
            .collect();
        for chunk in patients.chunks(PATIENT_ROWS_PER_INSERT) {
            let mut sql = String::from("INSERT INTO audit_patient (node, seq, patient_id) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("(${},${},${})", i * 3 + 1, i * 3 + 2, i * 3 + 3));
            }
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (node, seq, p) in chunk {
                q = q.bind(*node).bind(*seq).bind(*p);
            }
            q.execute(&mut *tx).await?;
        }
        for r in rows {
            for v in &r.patients_via {
                sqlx::query("INSERT INTO audit_patient_via (node, seq, reference) VALUES ($1, $2, $3)")
                    .bind(r.node.as_str())
                    .bind(r.seq)
                    .bind(v.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn insert_checkpoint(&self, cp: &Checkpoint) -> Result<(), AuditError> {
        const SQL: &str = "INSERT INTO audit_checkpoint (node, seq, hash, key_id, signature, at, \
             prev_seq, chains) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        if let Some(conn) = &self.direct {
            return Self::with_direct(conn, |c| {
                c.prepare_cached(SQL)?.execute(rusqlite::params![
                    cp.node,
                    cp.seq,
                    cp.hash,
                    cp.key_id,
                    cp.signature,
                    cp.at,
                    cp.prev_seq,
                    cp.chains
                ])?;
                Ok(())
            });
        }
        sqlx::query(SQL)
            .bind(cp.node.as_str())
            .bind(cp.seq)
            .bind(cp.hash.clone())
            .bind(cp.key_id.as_str())
            .bind(cp.signature.clone())
            .bind(cp.at.as_str())
            .bind(cp.prev_seq)
            .bind(cp.chains.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Every node that has records or checkpoints, sorted.
    pub async fn nodes(&self) -> Result<Vec<String>, AuditError> {
        let rows = sqlx::query(
            "SELECT node FROM audit_record GROUP BY node \
             UNION SELECT node FROM audit_checkpoint GROUP BY node ORDER BY node",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("node").map_err(AuditError::from))
            .collect()
    }

    /// The checkpoints of `node` in seq order.
    pub async fn checkpoints(&self, node: &str) -> Result<Vec<Checkpoint>, AuditError> {
        let rows = sqlx::query(
            "SELECT node, seq, hash, key_id, signature, at, prev_seq, chains FROM audit_checkpoint \
             WHERE node = $1 ORDER BY seq",
        )
        .bind(node)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// The last checkpoint of `node` (read through the writer's pool).
    pub(crate) async fn last_checkpoint(&self, node: &str) -> Result<Option<Checkpoint>, AuditError> {
        let row = sqlx::query(
            "SELECT node, seq, hash, key_id, signature, at, prev_seq, chains FROM audit_checkpoint \
             WHERE node = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(node)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// Every genesis checkpoint (seq 0), i.e. every registered chain; read through the writer's
    /// pool. Their signatures are for the caller to check.
    /// On a SQLite file this runs on the direct connection: the writer calls it from a thread
    /// of its own, where sqlx's pool (made on another runtime) must not be used.
    pub(crate) async fn genesis_checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        const SQL: &str = "SELECT node, seq, hash, key_id, signature, at, prev_seq, chains \
             FROM audit_checkpoint WHERE seq = 0 ORDER BY node";
        if let Some(conn) = &self.direct {
            return Self::with_direct(conn, |c| {
                let mut stmt = c.prepare_cached(SQL)?;
                let rows = stmt.query_map([], |r| {
                    Ok(Checkpoint {
                        node: r.get(0)?,
                        seq: r.get(1)?,
                        hash: r.get(2)?,
                        key_id: r.get(3)?,
                        signature: r.get(4)?,
                        at: r.get(5)?,
                        prev_seq: r.get(6)?,
                        chains: r.get(7)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            });
        }
        let rows = sqlx::query(SQL).fetch_all(&self.writer).await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// The seal of the record at (node, seq): its `cp_seq` and `mac`.
    pub(crate) async fn seal_at(&self, node: &str, seq: i64) -> Result<Option<(i64, Vec<u8>)>, AuditError> {
        let row = sqlx::query("SELECT cp_seq, mac FROM audit_record WHERE node = $1 AND seq = $2")
            .bind(node)
            .bind(seq)
            .fetch_optional(&self.writer)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("cp_seq")?, r.try_get("mac")?)),
            None => None,
        })
    }

    /// Whether the audit trail holds any record at all.
    pub async fn has_records(&self) -> Result<bool, AuditError> {
        Ok(sqlx::query("SELECT 1 FROM audit_record LIMIT 1")
            .fetch_optional(&self.reader)
            .await?
            .is_some())
    }

    /// Up to `limit` chain rows of `node` with seq > `after`, in seq order:
    /// (seq, canonical bytes, prev_hash, hash).
    pub(crate) async fn chain_page(
        &self,
        node: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AnyRow>, AuditError> {
        Ok(sqlx::query(
            "SELECT seq, record, prev_hash, hash FROM audit_record \
             WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(node)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }
}

/// A page of a chain packed into one row by the database (see [`AuditStore::chain_page_packed`]).
pub(crate) struct PackedPage {
    pub count: i64,
    pub min_seq: i64,
    pub max_seq: i64,
    /// Canonical records concatenated.
    pub records: String,
    /// Byte length of each record, decimal, comma-separated.
    pub lengths: String,
    /// prev_hash of each row, hex, concatenated.
    pub prev_hashes: String,
    /// hash of each row, hex, concatenated.
    pub hashes: String,
    /// cp_seq of each row, decimal, comma-separated.
    pub cp_seqs: String,
    /// mac of each row, hex, concatenated.
    pub macs: String,
}

// SQLite: no ORDER BY inside the aggregates (it would copy every page through a sorter); the
// aggregates follow the ordered subquery's scan. Should they ever not, the fast path sees
// hashes that do not chain and re-reads the page row by row (correct, only slower).
const PACKED_PAGE_SQLITE: &str = "SELECT COUNT(*), MIN(seq), MAX(seq), \
     group_concat(record, ''), group_concat(octet_length(record), ','), \
     group_concat(hex(prev_hash), ''), group_concat(hex(hash), ''), \
     group_concat(cp_seq, ','), group_concat(hex(mac), '') \
     FROM (SELECT seq, record, prev_hash, hash, cp_seq, mac FROM audit_record \
           WHERE node = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq) page";
const PACKED_PAGE_PG: &str = "SELECT COUNT(*), MIN(seq), MAX(seq), \
     string_agg(record, '' ORDER BY seq), string_agg(CAST(octet_length(record) AS TEXT), ',' ORDER BY seq), \
     string_agg(encode(prev_hash, 'hex'), '' ORDER BY seq), string_agg(encode(hash, 'hex'), '' ORDER BY seq), \
     string_agg(CAST(cp_seq AS TEXT), ',' ORDER BY seq), string_agg(encode(mac, 'hex'), '' ORDER BY seq) \
     FROM (SELECT seq, record, prev_hash, hash, cp_seq, mac FROM audit_record \
           WHERE node = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq) page";

impl AuditStore {
    /// The chain rows of `node` with `from <= seq <= to`, concatenated by the database into
    /// one result row: one round trip and one value per column instead of per-row decoding,
    /// which is what lets verification run at several hundred thousand records per second. The
    /// only backend-specific DML (hex encoding of bytes differs).
    pub(crate) async fn chain_page_packed(
        &self,
        node: &str,
        from: i64,
        to: i64,
    ) -> Result<PackedPage, AuditError> {
        let sql = match self.backend {
            Backend::Sqlite => PACKED_PAGE_SQLITE,
            Backend::Postgres => PACKED_PAGE_PG,
        };
        let r = sqlx::query(sql)
            .bind(node)
            .bind(from)
            .bind(to)
            .fetch_one(&self.reader)
            .await?;
        let count: i64 = r.try_get(0)?;
        if count == 0 {
            return Ok(PackedPage {
                count,
                min_seq: 0,
                max_seq: 0,
                records: String::new(),
                lengths: String::new(),
                prev_hashes: String::new(),
                hashes: String::new(),
                cp_seqs: String::new(),
                macs: String::new(),
            });
        }
        Ok(PackedPage {
            count,
            min_seq: r.try_get(1)?,
            max_seq: r.try_get(2)?,
            records: r.try_get(3)?,
            lengths: r.try_get(4)?,
            prev_hashes: r.try_get(5)?,
            hashes: r.try_get(6)?,
            cp_seqs: r.try_get(7)?,
            macs: r.try_get(8)?,
        })
    }
}

impl AuditStore {
    /// The lowest and highest seq stored for `node`, read as verification reads.
    pub(crate) async fn seq_bounds(&self, node: &str) -> Result<Option<(i64, i64)>, AuditError> {
        let r = sqlx::query("SELECT MIN(seq), MAX(seq) FROM audit_record WHERE node = $1")
            .bind(node)
            .fetch_one(&self.reader)
            .await?;
        Ok(r.try_get::<Option<i64>, _>(0)?
            .zip(r.try_get::<Option<i64>, _>(1)?))
    }

    /// The lowest seq stored for `node` above `after`.
    pub(crate) async fn next_seq(&self, node: &str, after: i64) -> Result<Option<i64>, AuditError> {
        let r = sqlx::query("SELECT MIN(seq) FROM audit_record WHERE node = $1 AND seq > $2")
            .bind(node)
            .bind(after)
            .fetch_one(&self.reader)
            .await?;
        Ok(r.try_get(0)?)
    }

    /// The chain rows of `node` with `from <= seq <= to`, in seq order:
    /// (seq, canonical bytes, prev_hash, hash, cp_seq, mac).
    pub(crate) async fn chain_range(
        &self,
        node: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<AnyRow>, AuditError> {
        Ok(sqlx::query(
            "SELECT seq, record, prev_hash, hash, cp_seq, mac FROM audit_record \
             WHERE node = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(node)
        .bind(from)
        .bind(to)
        .fetch_all(&self.reader)
        .await?)
    }
}

fn checkpoint_from_row(r: &AnyRow) -> Result<Checkpoint, AuditError> {
    Ok(Checkpoint {
        node: r.try_get("node")?,
        seq: r.try_get("seq")?,
        hash: r.try_get("hash")?,
        key_id: r.try_get("key_id")?,
        signature: r.try_get("signature")?,
        at: r.try_get("at")?,
        prev_seq: r.try_get("prev_seq")?,
        chains: r.try_get("chains")?,
    })
}

/// True when every migration is already recorded as applied. Ward's runtime role (SELECT and
/// INSERT only, see the crate docs) cannot run the migrator, which creates its table: it only
/// checks here that the owner has migrated.
async fn migrations_current(pool: &AnyPool) -> bool {
    let Ok(rows) = sqlx::query(AssertSqlSafe(format!(
        "SELECT version FROM {MIGRATIONS_TABLE} WHERE success = TRUE"
    )))
    .fetch_all(pool)
    .await
    else {
        return false;
    };
    let applied: Vec<i64> = rows.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()).collect();
    MIGRATIONS.iter().all(|(v, ..)| applied.contains(v))
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), AuditError> {
    if migrations_current(pool).await {
        return Ok(());
    }
    migrator(backend).run(pool).await.map_err(migrate_err)
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> AuditError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => AuditError::Database(e),
        other => AuditError::Database(sqlx::Error::Migrate(Box::new(other))),
    }
}
