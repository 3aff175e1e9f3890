/// Errors of the audit trail. Display strings never contain record contents, SQL or paths.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum AuditError {
    /// The audit store could not commit: ePHI requests must fail closed (503).
    #[error("audit store unavailable")]
    Unavailable,
    /// The writer has shut down.
    #[error("audit writer closed")]
    Closed,
    /// Stored or exported audit data is malformed or inconsistent.
    #[error("corrupt audit data: {0}")]
    Corrupt(String),
    /// Another running process holds this node's chain (two nodes with one `audit.node`).
    #[error(
        "audit node {0:?} is already running: another Ward process holds its audit chain; every \
         node needs its own `audit.node` (or leave it unset in a new data directory to have one \
         assigned)"
    )]
    NodeInUse(String),
    /// No checkpoint of the trail is signed by the audit key given: it is another
    /// deployment's trail, or these are another deployment's keys.
    #[error(
        "this audit trail was signed with another audit key (key id {found}; keys/ holds key id \
         {ours}): use the keys/ directory of the deployment that wrote it"
    )]
    OtherKey { found: String, ours: String },
    /// A node id outside `[A-Za-z0-9.-]{1,48}`.
    #[error("invalid audit node id")]
    InvalidNode,
    #[error("audit database error")]
    Database(#[source] sqlx::Error),
    /// A failed statement on a direct SQLite connection (the batch inserts).
    #[error("audit database error")]
    Sqlite(#[source] rusqlite::Error),
    #[error("audit key error")]
    Crypto(#[source] ward_crypto::Error),
    #[error("audit I/O error")]
    Io(#[source] std::io::Error),
}

impl AuditError {
    /// Whether the database refused this data (a constraint, a value it cannot store) rather
    /// than being unable to commit at all (locked, unreachable, read-only, full). Only the first
    /// kind is worth retrying record by record.
    ///
    /// A duplicate key is neither: it means another writer took this chain position (two
    /// writers on one node), and the writer must re-read its head rather than retry.
    pub(crate) fn is_refused_data(&self) -> bool {
        match self {
            AuditError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::ConstraintViolation
                        | rusqlite::ErrorCode::TooBig
                        | rusqlite::ErrorCode::TypeMismatch
                ) && e.extended_code != rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    && e.extended_code != rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation),
            // except 23505 (unique violation).
            AuditError::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| (c.starts_with("22") || c.starts_with("23")) && c != "23505"),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Database(e)
    }
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        AuditError::Sqlite(e)
    }
}

impl From<ward_crypto::Error> for AuditError {
    fn from(e: ward_crypto::Error) -> Self {
        AuditError::Crypto(e)
    }
}

impl From<std::io::Error> for AuditError {
    fn from(e: std::io::Error) -> Self {
        AuditError::Io(e)
    }
}
