//! The `private_key_jwt` replay cache: a client assertion's `jti` is accepted once, on any
//! node and across restarts, until the assertion expires.

use crate::{Store, StoreError, error};

impl Store {
    /// Records `jti` of `client_id`'s assertion expiring at `expires_at` (unix seconds).
    /// Returns false if it was seen before (a replay). Expired rows are purged on the way.
    pub async fn record_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM client_assertion_jti WHERE expires_at < $1")
            .bind(now)
            .execute(&self.inner.writer)
            .await?;
        let res =
            sqlx::query("INSERT INTO client_assertion_jti (client_id, jti, expires_at) VALUES ($1, $2, $3)")
                .bind(client_id.to_owned())
                .bind(jti.to_owned())
                .bind(expires_at)
                .execute(&self.inner.writer)
                .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if error::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
