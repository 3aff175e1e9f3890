//! Paged history (SPEC IN-1, MN-1, P-4): versions newest first, a page capped by count and by
//! stored bytes like a search page (at least one version), continued by a sealed cursor that
//! carries the scope, `_since` and the position.

use serde_json::Value;
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::index::Arg;
use crate::search::{
    CHUNK_ROWS, CURSOR_LIFETIME_SECS, CursorState, Sql, bind, row_size, sized_columns, unix_now,
};
use crate::{StoreError, Stored, VersionRow, ceil_ms};

/// What a history page asks for. `id` requires `rtype`; `rtype: None` is every type.
#[derive(Debug, Default)]
pub struct HistoryQuery<'a> {
    pub rtype: Option<&'a str>,
    pub id: Option<&'a str>,
    /// Versions last updated at or after this instant.
    pub since: Option<OffsetDateTime>,
    pub count: usize,
    /// A cursor from a previous page's `next` (it carries `since`).
    pub cursor: Option<&'a str>,
    /// Who may follow the cursors of this page (the authenticated client).
    pub holder: Option<&'a str>,
}

/// One version: `meta` (with `resource: None`) and its verified JSON, `None` for a tombstone.
/// No `Debug`: the JSON is PHI.
pub struct HistoryVersion {
    pub meta: Stored,
    pub json: Option<Zeroizing<Vec<u8>>>,
}

/// One page of history, newest first.
pub struct HistoryPage {
    pub versions: Vec<HistoryVersion>,
    /// Cursor of the next (older) page, if there are more versions.
    pub next: Option<String>,
}

/// The position after a version in history order: (last_updated_ms, type, id, version).
type Position = (i64, String, String, i64);

impl crate::Store {
    /// A page of versions, newest first, ending after `q.count` versions or before the one that
    /// would take its stored bytes past `max_bytes`.
    pub async fn history_page(
        &self,
        q: &HistoryQuery<'_>,
        max_bytes: usize,
    ) -> Result<HistoryPage, StoreError> {
        if q.id.is_some() && q.rtype.is_none() {
            return Err(StoreError::UnsupportedCriteria("_id without type".into()));
        }
        // Cursors are bound to the history they page through (AAD and contents).
        let kind = format!("{}/_history", q.rtype.unwrap_or("*"));
        let scope = vec![("id".to_owned(), q.id.unwrap_or_default().to_owned())];
        let mut since = q.since.map(ceil_ms);
        let mut after: Option<Position> = None;
        if let Some(c) = q.cursor {
            let state = self.open_cursor_state(&kind, q.holder, c)?;
            let (Some(ms), Some(rtype), Some(version)) = (
                state.keys.first().and_then(Value::as_i64),
                state.keys.get(1).and_then(Value::as_str),
                state.keys.get(2).and_then(Value::as_i64),
            ) else {
                return Err(StoreError::InvalidCursor);
            };
            if state.params.first() != scope.first() {
                return Err(StoreError::InvalidCursor);
            }
            since = match state.params.get(1) {
                Some((k, ms)) if k == "_since" => Some(ms.parse().map_err(|_| StoreError::InvalidCursor)?),
                _ => None,
            };
            after = Some((ms, rtype.to_owned(), state.id, version));
        }
        let mut versions = Vec::new();
        let mut more = false;
        if q.count > 0 {
            let mut conn = self.inner.reader.acquire().await?;
            let mut bytes = 0usize;
            'scan: loop {
                let limit = (q.count + 1).saturating_sub(versions.len()).min(CHUNK_ROWS);
                let rows = self
                    .history_rows(&mut conn, q, since, after.as_ref(), limit)
                    .await?;
                let n = rows.len();
                for (row, size) in rows {
                    after = Some((
                        row.last_updated_ms,
                        row.rtype.clone(),
                        row.id.clone(),
                        row.version,
                    ));
                    if versions.len() >= q.count
                        || (!versions.is_empty() && bytes.saturating_add(size) > max_bytes)
                    {
                        more = true;
                        break 'scan;
                    }
                    let row = self
                        .with_ciphertext(&mut conn, row)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                    let (meta, json) = self.unseal(row)?;
                    bytes = bytes.saturating_add(size);
                    versions.push(HistoryVersion { meta, json });
                }
                if n < limit {
                    break;
                }
            }
        }
        let mut params = scope;
        params.extend(since.map(|ms| ("_since".to_owned(), ms.to_string())));
        let next = match (more, versions.last()) {
            (true, Some(last)) => Some(self.seal_cursor(&CursorState {
                v: 1,
                rtype: kind,
                compartment: None,
                params,
                keys: vec![
                    Value::from(ms_of(&last.meta)),
                    Value::from(last.meta.rtype.clone()),
                    Value::from(last.meta.version),
                ],
                id: last.meta.id.clone(),
                forward: true,
                exp: unix_now() + CURSOR_LIFETIME_SECS,
                holder: q.holder.map(str::to_owned),
            })?),
            _ => None,
        };
        Ok(HistoryPage { versions, next })
    }

    /// Up to `limit` version rows after `after`, in history order, with their sizes.
    async fn history_rows(
        &self,
        conn: &mut sqlx::AnyConnection,
        q: &HistoryQuery<'_>,
        since: Option<i64>,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<(VersionRow, usize)>, StoreError> {
        let mut sql = Sql::new();
        let mut conds = vec![format!("v.tenant = {}", sql.s(self.tenant()))];
        if let Some(t) = q.rtype {
            conds.push(format!("v.rtype = {}", sql.s(t)));
        }
        if let Some(i) = q.id {
            conds.push(format!("v.id = {}", sql.s(i)));
        }
        if let Some(ms) = since {
            conds.push(format!("v.last_updated_ms >= {}", sql.i(ms)));
        }
        if let Some((ms, t, i, ver)) = after {
            // Lexicographic keyset on (last_updated_ms DESC, rtype, id, version DESC).
            let (m1, m2, m3, m4) = (sql.i(*ms), sql.i(*ms), sql.i(*ms), sql.i(*ms));
            let (t2, t3, t4) = (sql.s(t), sql.s(t), sql.s(t));
            let (i3, i4) = (sql.s(i), sql.s(i));
            let v4 = sql.i(*ver);
            conds.push(format!(
                "(v.last_updated_ms < {m1} OR (v.last_updated_ms = {m2} AND v.rtype > {t2}) \
                 OR (v.last_updated_ms = {m3} AND v.rtype = {t3} AND v.id > {i3}) \
                 OR (v.last_updated_ms = {m4} AND v.rtype = {t4} AND v.id = {i4} AND v.version < {v4}))"
            ));
        }
        let limit = sql.arg(Arg::I64(Some(i64::try_from(limit).unwrap_or(i64::MAX))));
        sql.text = format!(
            "SELECT {} FROM resource_version v WHERE {} \
             ORDER BY v.last_updated_ms DESC, v.rtype, v.id, v.version DESC LIMIT {limit}",
            sized_columns(),
            conds.join(" AND ")
        );
        // Only generated SQL and placeholders are interpolated; every value is bound.
        let rows = bind(sqlx::query(AssertSqlSafe(sql.text)), &sql.args)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| Ok((VersionRow::from_any(r)?, row_size(r)?)))
            .collect()
    }
}

fn ms_of(s: &Stored) -> i64 {
    i64::try_from(s.last_updated.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_by_bytes_and_cursors_stay_with_their_history_and_holder() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
        let store = crate::Store::open(&url, &ward_crypto::Kek::generate().unwrap())
            .await
            .unwrap();
        for family in ["a", "b", "c"] {
            let p = serde_json::json!({ "resourceType": "Patient", "name": [{ "family": family }] });
            store.create("Patient", p).await.unwrap();
        }
        let first = HistoryQuery {
            rtype: Some("Patient"),
            count: 100,
            holder: Some("client-a"),
            ..HistoryQuery::default()
        };
        // One byte per page still gives one version per page.
        let mut ids = Vec::new();
        let mut page = store.history_page(&first, 1).await.unwrap();
        loop {
            assert_eq!(page.versions.len(), 1);
            ids.push(page.versions[0].meta.id.clone());
            let Some(next) = page.next.clone() else { break };
            let q = HistoryQuery {
                cursor: Some(&next),
                ..first
            };
            for (rtype, holder) in [(None, Some("client-a")), (Some("Patient"), Some("client-b"))] {
                let other = HistoryQuery {
                    rtype,
                    holder,
                    cursor: Some(&next),
                    count: 100,
                    ..HistoryQuery::default()
                };
                assert!(matches!(
                    store.history_page(&other, 1).await,
                    Err(StoreError::InvalidCursor)
                ));
            }
            page = store.history_page(&q, 1).await.unwrap();
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "every version once");
        let all = store.history_page(&first, usize::MAX).await.unwrap();
        assert_eq!(all.versions.len(), 3);
        assert!(all.next.is_none());
        store.close().await;
    }
}
