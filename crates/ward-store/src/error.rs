/// Errors of the store. Display strings are short and generic: they never contain SQL text,
/// file paths, resource content or search values. The wrapped sources (`Crypto`, `Database`)
/// carry detail for operators; since no plaintext PHI is ever written to the database, database
/// errors cannot echo any.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StoreError {
    #[error("resource not found")]
    NotFound,
    #[error("resource deleted")]
    Gone {
        version: i64,
        last_updated: time::OffsetDateTime,
    },
    #[error("version conflict (current version {current})")]
    VersionConflict { current: i64 },
    #[error("already exists")]
    Duplicate,
    /// Conditional-create criteria that match more than one resource.
    #[error("criteria match more than one resource")]
    MultipleMatches,
    #[error("unsupported criteria parameter '{0}'")]
    UnsupportedCriteria(String),
    /// Criteria refused as a whole (too many parameters or values); the message names no value.
    #[error("{0}")]
    Search(ward_fhir::search::SearchError),
    /// A paging cursor that this store did not issue for this search (or that was altered).
    #[error("invalid paging cursor")]
    InvalidCursor,
    #[error("stored resource failed its integrity check")]
    Integrity { rtype: String, id: String, version: i64 },
    #[error("cryptographic failure in the store")]
    Crypto(#[source] ward_crypto::Error),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A failed direct SQLite read (see `local.rs`).
    #[error("database error")]
    Sqlite(#[source] rusqlite::Error),
    #[error("store I/O error")]
    Io(#[source] std::io::Error),
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The data keys in the database do not unwrap under the key-encryption key given.
    #[error(
        "this database was initialised with another key-encryption key: copy keys/ from the \
         deployment that created it (keys/kek.key does not unwrap its data keys)"
    )]
    OtherKek,
    /// A write of a type Ward makes itself (`AuditEvent`): never stored.
    #[error("resources of this type are not written to the resource store")]
    NotWritable,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::Database(e),
            other => StoreError::Database(sqlx::Error::Migrate(Box::new(other))),
        }
    }
}

impl From<ward_crypto::Error> for StoreError {
    fn from(e: ward_crypto::Error) -> Self {
        StoreError::Crypto(e)
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
