//! Revoked subjects, token families and token ids (SPEC AC-6): rows with a growing `seq`, so
//! every node learns of a new revocation by asking for the rows past the last one it saw.

use sqlx::Row;

use crate::{Backend, Store, StoreError};

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevokedKind {
    /// A user id or a client id: matched against a token's `sub` and `client_id`; tokens
    /// issued at or before the revocation are refused (a re-enabled subject's later ones work).
    Subject,
    /// A token's `fam` claim: one login or refresh-token family.
    Family,
    /// A token's `jti`.
    TokenId,
}

impl RevokedKind {
    fn as_str(self) -> &'static str {
        match self {
            RevokedKind::Subject => "subject",
            RevokedKind::Family => "family",
            RevokedKind::TokenId => "jti",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "subject" => Some(RevokedKind::Subject),
            "family" => Some(RevokedKind::Family),
            "jti" => Some(RevokedKind::TokenId),
            _ => None,
        }
    }
}

/// One stored revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub seq: i64,
    pub kind: RevokedKind,
    pub value: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// Unix seconds after which the row no longer matters (`None`: never).
    pub expires_at: Option<i64>,
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Store {
    /// Revokes `value` for good (see [`RevokedKind`]). Running nodes refuse matching tokens
    /// within a second.
    pub async fn revoke(&self, kind: RevokedKind, value: &str) -> Result<(), StoreError> {
        self.revoke_until(kind, value, None).await
    }

    /// [`Store::revoke`] with the unix time after which the row may be purged (the latest
    /// `exp` of the tokens it concerns).
    pub async fn revoke_until(
        &self,
        kind: RevokedKind,
        value: &str,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.inner.writer.begin().await?;
        if self.inner.backend == Backend::Postgres {
            // Serializes inserts so rows become visible in `seq` order: a poller that saw
            // seq N never misses a row N-1 committed later. Readers are not blocked.
            sqlx::query("LOCK TABLE revocation IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO revocation (kind, value, revoked_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(kind.as_str())
            .bind(value.to_owned())
            .bind(now_unix())
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revocations with `seq` greater than `after`, oldest first, at most `limit` (expired ones
    /// included: callers skip them). The poll of every node: one indexed range query.
    pub async fn revocations_since(&self, after: i64, limit: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, value, revoked_at, expires_at FROM revocation \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.inner.reader)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get("kind")?;
            let kind =
                RevokedKind::parse(&kind).ok_or_else(|| StoreError::Corrupt("revocation kind".into()))?;
            out.push(Revocation {
                seq: r.try_get("seq")?,
                kind,
                value: r.try_get("value")?,
                revoked_at: r.try_get("revoked_at")?,
                expires_at: r.try_get("expires_at")?,
            });
        }
        Ok(out)
    }

    /// Deletes revocations that expired before `now` (unix seconds); returns how many.
    pub async fn purge_revocations(&self, now: i64) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM revocation WHERE expires_at IS NOT NULL AND expires_at < $1")
            .bind(now)
            .execute(&self.inner.writer)
            .await?;
        Ok(res.rows_affected())
    }
}
