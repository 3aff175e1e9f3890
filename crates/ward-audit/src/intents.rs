//! Intent records that no final record names yet (AU-2): what reconciliation resolves and
//! what `ward audit verify` reports.
//!
//! Every write commits an intent record before the store changes and a final record naming
//! it (`intent_seq`) after. An intent left alone means the process died (or its audit store
//! failed) in between; the change may or may not be stored. The node that owns the chain
//! resolves it at its next start-up and periodically: see `ward-server/src/reconcile.rs`.

use std::collections::BTreeSet;

use sqlx::Row;

use crate::store::AuditStore;
use crate::{AuditError, AuditRecord, RecordKind};

/// How many seqs of unresolved intents a report names.
const NAMED: usize = 5;

/// The intents of one chain without a final record.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnresolvedIntents {
    pub count: u64,
    /// The first few seqs, oldest first.
    pub first: Vec<i64>,
}

// Rows written before the `intents` migration have no `kind`/`intent_seq` columns filled in;
// their canonical records are matched by text (compact JSON: a key is preceded by a quote,
// never by a backslash, so no client-chosen string inside a record can fake one) and parsed.
const LEGACY_SQL: &str = "SELECT seq, record FROM audit_record WHERE node = $1 AND kind IS NULL \
     AND (record LIKE '%\"kind\":\"intent\"%' \
          OR (record LIKE '%\"intent_seq\":%' AND record NOT LIKE '%\"intent_seq\":null%'))";

impl AuditStore {
    /// The intent records of `node` with seq above `after` that no record of the chain names
    /// as its intent, oldest first, at most `limit`. With `legacy`, rows written before the
    /// `intents` migration are read too (a scan of those rows: at start-up, not periodically).
    pub async fn unresolved_intents(
        &self,
        node: &str,
        after: i64,
        limit: i64,
        legacy: bool,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = sqlx::query(
            "SELECT i.record FROM audit_record i WHERE i.node = $1 AND i.kind = 'intent' AND i.seq > $2 \
             AND NOT EXISTS (SELECT 1 FROM audit_record f WHERE f.node = $1 AND f.intent_seq = i.seq) \
             ORDER BY i.seq LIMIT $3",
        )
        .bind(node)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let text: String = r.try_get(0)?;
            out.push(AuditRecord::from_canonical(text.as_bytes())?);
        }
        if legacy {
            let old = self.legacy_unresolved(node, after).await?;
            out.extend(old);
            out.sort_by_key(|r| r.seq);
            out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(out)
    }

    async fn legacy_unresolved(&self, node: &str, after: i64) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = sqlx::query(LEGACY_SQL).bind(node).fetch_all(&self.reader).await?;
        let mut intents = Vec::new();
        let mut named = BTreeSet::new();
        for r in &rows {
            let text: String = r.try_get(1)?;
            let rec = AuditRecord::from_canonical(text.as_bytes())?;
            if let Some(i) = rec.intent_seq {
                named.insert(i);
            }
            if rec.kind == RecordKind::Intent && rec.seq > after {
                intents.push(rec);
            }
        }
        if intents.is_empty() {
            return Ok(intents);
        }
        // Final records written after the migration name old intents by column.
        let newer = sqlx::query(
            "SELECT intent_seq FROM audit_record WHERE node = $1 AND intent_seq IS NOT NULL AND intent_seq <= $2",
        )
        .bind(node)
        .bind(intents.iter().map(|r| r.seq).max().unwrap_or(0))
        .fetch_all(&self.reader)
        .await?;
        for r in &newer {
            named.insert(r.try_get::<i64, _>(0)?);
        }
        intents.retain(|r| !named.contains(&r.seq));
        Ok(intents)
    }

    /// The seq of a record of `node` naming `intent_seq` as its intent, if there is one.
    pub async fn final_record_of(&self, node: &str, intent_seq: i64) -> Result<Option<i64>, AuditError> {
        let row = sqlx::query("SELECT seq FROM audit_record WHERE node = $1 AND intent_seq = $2 LIMIT 1")
            .bind(node)
            .bind(intent_seq)
            .fetch_optional(&self.reader)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// The intents of `node` without a final record, counted (all of them, old rows included)
    /// with the first few named.
    pub async fn unresolved_summary(&self, node: &str) -> Result<UnresolvedIntents, AuditError> {
        let all = self.unresolved_intents(node, i64::MIN, i64::MAX, true).await?;
        Ok(UnresolvedIntents {
            count: all.len() as u64,
            first: all.iter().take(NAMED).map(|r| r.seq).collect(),
        })
    }
}
