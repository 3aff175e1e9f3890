//! Rows of the people-facing OAuth grants (issue 10): authorization codes, refresh-token
//! families and EHR launch contexts. Every secret value is stored as a keyed hash
//! ([`Store::grant_tag`]); the policy (lifetimes, PKCE, what reuse means) lives in `ward-auth`.
//! Taking a code, a refresh token or a launch is one conditional `UPDATE ... RETURNING`, so two
//! concurrent presentations can never both succeed, on either backend.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError};

/// What taking a single-use value found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take<T> {
    /// Unused until now; now marked used.
    Fresh(T),
    /// Already used: a replay. Carries the family issued from it, if any.
    Reused(Option<String>),
    /// No such value.
    Unknown,
}

/// A stored authorization code, as taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    pub client_id: String,
    pub grant_json: String,
    pub expires_at: i64,
}

/// A refresh-token family: one code exchange and every token rotated from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRow {
    pub family: String,
    pub client_id: String,
    pub user_id: String,
    pub grant_json: String,
    pub created_at: i64,
    /// Absolute end of its refresh tokens.
    pub expires_at: i64,
    pub revoked: bool,
}

/// A refresh token with its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub scope: String,
    pub issued_at: i64,
    pub idle_expires_at: i64,
    pub used: bool,
    pub family: FamilyRow,
}

/// A stored EHR launch, as taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRow {
    pub user_id: String,
    pub context_json: String,
    pub expires_at: i64,
}

/// The `family` of a code replayed before its first exchange recorded one.
const REPLAYED: &str = "(replayed)";

const FAMILY_COLUMNS: &str =
    "f.family, f.client_id, f.user_id, f.grant_json, f.created_at, f.expires_at, f.revoked";

fn family_from_row(r: &AnyRow) -> Result<FamilyRow, StoreError> {
    Ok(FamilyRow {
        family: r.try_get("family")?,
        client_id: r.try_get("client_id")?,
        user_id: r.try_get("user_id")?,
        grant_json: r.try_get("grant_json")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked: r.try_get::<i64, _>("revoked")? != 0,
    })
}

impl Store {
    /// The keyed hash under which a code, refresh token or launch value is stored: HMAC-SHA-256
    /// under the index key in a domain of its own, so a database reader learns nothing usable.
    pub fn grant_tag(&self, domain: &str, value: &str) -> Vec<u8> {
        self.inner.indexer.mac(domain, value.as_bytes()).to_vec()
    }

    pub async fn insert_code(
        &self,
        code_hash: &[u8],
        client_id: &str,
        grant_json: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_code (code_hash, client_id, grant_json, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(code_hash.to_vec())
        .bind(client_id.to_owned())
        .bind(grant_json.to_owned())
        .bind(expires_at)
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    /// Marks a code of `client_id` used and returns it, unless it was used before (then the
    /// family issued from it, for revocation). Another client's code is `Unknown` and left as
    /// it was: a client that got hold of it can neither use it up nor revoke what it produced.
    /// Expiry is the caller's to check.
    pub async fn take_code(
        &self,
        code_hash: &[u8],
        client_id: &str,
        now: i64,
    ) -> Result<Take<CodeRow>, StoreError> {
        let row = sqlx::query(
            "UPDATE oauth_code SET used_at = $2 WHERE code_hash = $1 AND client_id = $3 \
             AND used_at IS NULL RETURNING client_id, grant_json, expires_at",
        )
        .bind(code_hash.to_vec())
        .bind(now)
        .bind(client_id.to_owned())
        .fetch_optional(&self.inner.writer)
        .await?;
        if let Some(r) = row {
            return Ok(Take::Fresh(CodeRow {
                client_id: r.try_get("client_id")?,
                grant_json: r.try_get("grant_json")?,
                expires_at: r.try_get("expires_at")?,
            }));
        }
        // A replay while the first exchange is still running (no family yet) leaves a mark,
        // so that exchange fails too ([`Store::set_code_family`]).
        sqlx::query(
            "UPDATE oauth_code SET family = $2 WHERE code_hash = $1 AND client_id = $3 AND family IS NULL",
        )
        .bind(code_hash.to_vec())
        .bind(REPLAYED.to_owned())
        .bind(client_id.to_owned())
        .execute(&self.inner.writer)
        .await?;
        let used = sqlx::query("SELECT family FROM oauth_code WHERE code_hash = $1 AND client_id = $2")
            .bind(code_hash.to_vec())
            .bind(client_id.to_owned())
            .fetch_optional(&self.inner.writer)
            .await?;
        match used {
            Some(r) => {
                let family: Option<String> = r.try_get("family")?;
                Ok(Take::Reused(family.filter(|f| f != REPLAYED)))
            }
            None => Ok(Take::Unknown),
        }
    }

    /// Records the family issued from a code, before its tokens are handed out. False when
    /// the code was replayed meanwhile: the caller must then revoke the family and refuse.
    pub async fn set_code_family(&self, code_hash: &[u8], family: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("UPDATE oauth_code SET family = $2 WHERE code_hash = $1 AND family IS NULL")
            .bind(code_hash.to_vec())
            .bind(family.to_owned())
            .execute(&self.inner.writer)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn insert_family(&self, f: &FamilyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_family (family, client_id, user_id, grant_json, created_at, expires_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(f.family.clone())
        .bind(f.client_id.clone())
        .bind(f.user_id.clone())
        .bind(f.grant_json.clone())
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(i64::from(f.revoked))
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    pub async fn get_family(&self, family: &str) -> Result<Option<FamilyRow>, StoreError> {
        let sql = format!("SELECT {FAMILY_COLUMNS} FROM oauth_family f WHERE f.family = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(family.to_owned())
            .fetch_optional(&self.inner.writer)
            .await?;
        row.as_ref().map(family_from_row).transpose()
    }

    /// Marks a family revoked: none of its refresh tokens works any more. True if it existed.
    pub async fn revoke_family_grants(&self, family: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("UPDATE oauth_family SET revoked = 1 WHERE family = $1")
            .bind(family.to_owned())
            .execute(&self.inner.writer)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The live families of a user or a client (`ward user disable` and the like revoke them).
    pub async fn families_of(
        &self,
        user_id: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT family FROM oauth_family WHERE revoked = 0 AND (user_id = $1 OR client_id = $2)",
        )
        .bind(user_id.unwrap_or("").to_owned())
        .bind(client_id.unwrap_or("").to_owned())
        .fetch_all(&self.inner.writer)
        .await?;
        rows.iter()
            .map(|r| r.try_get("family").map_err(StoreError::from))
            .collect()
    }

    pub async fn insert_refresh(
        &self,
        token_hash: &[u8],
        family: &str,
        scope: &str,
        issued_at: i64,
        idle_expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_refresh_token (token_hash, family, scope, issued_at, idle_expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash.to_vec())
        .bind(family.to_owned())
        .bind(scope.to_owned())
        .bind(issued_at)
        .bind(idle_expires_at)
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    /// A refresh token and its family, without using it (introspection, revocation).
    pub async fn get_refresh(&self, token_hash: &[u8]) -> Result<Option<RefreshRow>, StoreError> {
        let sql = format!(
            "SELECT t.scope, t.issued_at, t.idle_expires_at, t.used_at, {FAMILY_COLUMNS} \
             FROM oauth_refresh_token t JOIN oauth_family f ON f.family = t.family WHERE t.token_hash = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash.to_vec())
            .fetch_optional(&self.inner.writer)
            .await?;
        row.as_ref()
            .map(|r| {
                Ok(RefreshRow {
                    scope: r.try_get("scope")?,
                    issued_at: r.try_get("issued_at")?,
                    idle_expires_at: r.try_get("idle_expires_at")?,
                    used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
                    family: family_from_row(r)?,
                })
            })
            .transpose()
    }

    /// Marks a refresh token used (rotation) and returns it with its family; a token used
    /// before is `Reused` with its family, for revocation.
    pub async fn take_refresh(&self, token_hash: &[u8], now: i64) -> Result<Take<RefreshRow>, StoreError> {
        let taken = sqlx::query(
            "UPDATE oauth_refresh_token SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
             RETURNING family",
        )
        .bind(token_hash.to_vec())
        .bind(now)
        .fetch_optional(&self.inner.writer)
        .await?;
        let Some(row) = self.get_refresh(token_hash).await? else {
            return Ok(Take::Unknown);
        };
        if taken.is_some() {
            Ok(Take::Fresh(row))
        } else {
            Ok(Take::Reused(Some(row.family.family)))
        }
    }

    pub async fn insert_launch(
        &self,
        launch_hash: &[u8],
        user_id: &str,
        context_json: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oauth_launch (launch_hash, user_id, context_json, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(launch_hash.to_vec())
        .bind(user_id.to_owned())
        .bind(context_json.to_owned())
        .bind(expires_at)
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    /// Marks a launch used and returns it; `Reused`/`Unknown` otherwise. Expiry is the
    /// caller's to check.
    pub async fn take_launch(&self, launch_hash: &[u8], now: i64) -> Result<Take<LaunchRow>, StoreError> {
        let row = sqlx::query(
            "UPDATE oauth_launch SET used_at = $2 WHERE launch_hash = $1 AND used_at IS NULL \
             RETURNING user_id, context_json, expires_at",
        )
        .bind(launch_hash.to_vec())
        .bind(now)
        .fetch_optional(&self.inner.writer)
        .await?;
        if let Some(r) = row {
            return Ok(Take::Fresh(LaunchRow {
                user_id: r.try_get("user_id")?,
                context_json: r.try_get("context_json")?,
                expires_at: r.try_get("expires_at")?,
            }));
        }
        let used = sqlx::query("SELECT 1 AS one FROM oauth_launch WHERE launch_hash = $1")
            .bind(launch_hash.to_vec())
            .fetch_optional(&self.inner.writer)
            .await?;
        Ok(if used.is_some() {
            Take::Reused(None)
        } else {
            Take::Unknown
        })
    }

    /// Deletes codes and launches expired before `before`, and families whose absolute end
    /// passed (with their refresh tokens). Returns the rows removed.
    pub async fn purge_expired_grants(&self, before: i64) -> Result<u64, StoreError> {
        let mut tx = self.inner.writer.begin().await?;
        let mut n = 0u64;
        for sql in [
            "DELETE FROM oauth_code WHERE expires_at < $1",
            "DELETE FROM oauth_launch WHERE expires_at < $1",
            "DELETE FROM oauth_refresh_token WHERE family IN (SELECT family FROM oauth_family WHERE expires_at < $1)",
            "DELETE FROM oauth_family WHERE expires_at < $1",
        ] {
            let res = sqlx::query(sql).bind(before).execute(&mut *tx).await?;
            n = n.saturating_add(res.rows_affected());
        }
        tx.commit().await?;
        Ok(n)
    }
}
