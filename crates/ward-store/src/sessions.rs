//! Browser sessions (SPEC AC-6): stored under a keyed hash of their id, never the id itself,
//! so a database reader cannot take over a session.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

/// One browser session. A session without `user_id` is a pre-session: it carries an
/// authorization request and the CSRF binding of the login form, and grants nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: Option<String>,
    /// Unix seconds of creation (the absolute lifetime counts from here).
    pub created_at: i64,
    /// Unix seconds of the last request that used the session (the idle timeout).
    pub last_seen: i64,
    /// When the person last proved who they are (a password, then `amr` grows).
    pub auth_time: Option<i64>,
    /// Authentication methods (RFC 8176) since `auth_time`: `pwd`, then `otp`.
    pub amr: Vec<String>,
    pub acr: Option<String>,
    /// The authorization request being served, as its owner serialized it.
    pub pending: Option<String>,
}

const COLUMNS: &str = "user_id, created_at, last_seen, auth_time, amr, acr, pending";

impl Store {
    /// The stored key of a session id: HMAC-SHA-256 under the index key, hex.
    pub fn session_key(&self, session_id: &str) -> String {
        hex::encode(self.inner.indexer.mac("session-id-v1", session_id.as_bytes()))
    }

    /// A value bound to a session id for its forms (CSRF), under its own label.
    pub fn session_tag(&self, label: &str, session_id: &str) -> [u8; 32] {
        self.inner.indexer.mac(label, session_id.as_bytes())
    }

    pub async fn insert_session(&self, key: &str, s: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_session (id_hash, user_id, created_at, last_seen, auth_time, amr, acr, pending) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(key.to_owned())
        .bind(s.user_id.clone())
        .bind(s.created_at)
        .bind(s.last_seen)
        .bind(s.auth_time)
        .bind(s.amr.join(" "))
        .bind(s.acr.clone())
        .bind(s.pending.clone())
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    pub async fn get_session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM auth_session WHERE id_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.to_owned())
            .fetch_optional(&self.inner.reader)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Replaces what a session holds; false if it no longer exists.
    pub async fn update_session(&self, key: &str, s: &SessionRecord) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE auth_session SET user_id = $1, created_at = $2, last_seen = $3, auth_time = $4, \
             amr = $5, acr = $6, pending = $7 WHERE id_hash = $8",
        )
        .bind(s.user_id.clone())
        .bind(s.created_at)
        .bind(s.last_seen)
        .bind(s.auth_time)
        .bind(s.amr.join(" "))
        .bind(s.acr.clone())
        .bind(s.pending.clone())
        .bind(key.to_owned())
        .execute(&self.inner.writer)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Moves a session to a new id (at login: no fixation). The old id stops working in the
    /// same transaction the new one starts.
    pub async fn rotate_session(
        &self,
        old_key: &str,
        new_key: &str,
        s: &SessionRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.inner.writer.begin().await?;
        sqlx::query("DELETE FROM auth_session WHERE id_hash = $1")
            .bind(old_key.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO auth_session (id_hash, user_id, created_at, last_seen, auth_time, amr, acr, pending) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_key.to_owned())
        .bind(s.user_id.clone())
        .bind(s.created_at)
        .bind(s.last_seen)
        .bind(s.auth_time)
        .bind(s.amr.join(" "))
        .bind(s.acr.clone())
        .bind(s.pending.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_session(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM auth_session WHERE id_hash = $1")
            .bind(key.to_owned())
            .execute(&self.inner.writer)
            .await?;
        Ok(())
    }

    /// Ends every session of a user (disabled, or signed out everywhere); how many ended.
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM auth_session WHERE user_id = $1")
            .bind(user_id.to_owned())
            .execute(&self.inner.writer)
            .await?;
        Ok(res.rows_affected())
    }

    /// Forgets sessions unused since `idle_before` or created before `created_before`.
    pub async fn purge_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM auth_session WHERE last_seen < $1 OR created_at < $2")
            .bind(idle_before)
            .bind(created_before)
            .execute(&self.inner.writer)
            .await?;
        Ok(res.rows_affected())
    }
}

fn session_from_row(r: &AnyRow) -> Result<SessionRecord, StoreError> {
    let amr: String = r.try_get("amr")?;
    Ok(SessionRecord {
        user_id: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        last_seen: r.try_get("last_seen")?,
        auth_time: r.try_get("auth_time")?,
        amr: amr.split_whitespace().map(str::to_owned).collect(),
        acr: r.try_get("acr")?,
        pending: r.try_get("pending")?,
    })
}
