//! Patients named through a resource version (`AuditRecord::patients_via`): a record bounds
//! the patient ids it lists, and names a large Group by its version instead. The accounting of
//! disclosures stays complete by resolving those versions when it is asked for (which needs
//! the resource store, so the caller does it): [`patient_sources`] lists them, [`records_via`]
//! gives the records naming one.

use sqlx::Row;
use time::OffsetDateTime;

use crate::record::unix_ms;
use crate::store::AuditStore;
use crate::{AuditError, AuditRecord};

/// Every versioned reference some record names in `patients_via`.
pub async fn patient_sources(store: &AuditStore) -> Result<Vec<String>, AuditError> {
    let rows = sqlx::query("SELECT DISTINCT reference FROM audit_patient_via ORDER BY reference")
        .fetch_all(&store.reader)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(AuditError::from))
        .collect()
}

/// The records naming `reference` in `patients_via`, oldest first, optionally from `since` on.
pub async fn records_via(
    store: &AuditStore,
    reference: &str,
    since: Option<OffsetDateTime>,
) -> Result<Vec<AuditRecord>, AuditError> {
    let rows = sqlx::query(
        "SELECT r.record FROM audit_patient_via v JOIN audit_record r ON r.node = v.node AND r.seq = v.seq \
         WHERE v.reference = $1 AND r.at_ms >= $2 ORDER BY r.at_ms, r.node, r.seq",
    )
    .bind(reference)
    .bind(since.map_or(i64::MIN, unix_ms))
    .fetch_all(&store.reader)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let rec = AuditRecord::from_canonical(r.try_get::<&str, _>(0)?.as_bytes())?;
        // The query columns are aids: the canonical record decides.
        if rec.patients_via.iter().any(|v| v == reference) {
            out.push(rec);
        }
    }
    Ok(out)
}
