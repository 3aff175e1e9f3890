//! People who sign in (SPEC AC-1, AC-5): the `ward_user` and `user_recovery_code` tables.
//!
//! What the database holds of a user's factors: the password as an argon2id PHC string (made
//! by ward-auth), the TOTP secret (and one waiting for enrollment) sealed with the data key
//! under an AAD naming the user and the purpose, so a sealed secret copied to another row does
//! not open, and recovery codes as HMAC-SHA-256 under the index key, bound to the user. Rows
//! are never deleted: a user id is never reused. The policy (lockout, code checks) lives in
//! `ward_auth::users`; here are the atomic steps it needs.

use std::fmt;

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use ward_crypto::{Aad, SecretBytes};

use crate::{Store, StoreError, error, format_instant};

/// AAD type labels of the sealed TOTP secrets.
const AAD_TOTP: &str = "ward_user.totp_secret";
const AAD_PENDING: &str = "ward_user.pending_secret";

/// A user row without its secrets. `Debug` redacts `password_hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    /// Normalized by ward-auth before it gets here (unique).
    pub username: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub password_hash: String,
    pub must_change_password: bool,
    /// A confirmed TOTP secret is stored.
    pub totp_enrolled: bool,
    pub disabled: bool,
    /// Consecutive failed sign-ins since the last success.
    pub failed_logins: i64,
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("fhir_user", &self.fhir_user)
            .field("password_hash", &"***")
            .field("must_change_password", &self.must_change_password)
            .field("totp_enrolled", &self.totp_enrolled)
            .field("disabled", &self.disabled)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .field("created_at", &self.created_at)
            .finish()
    }
}

const USER_COLUMNS: &str = "user_id, username, role, fhir_user, password_hash, must_change_password, \
     totp_secret IS NOT NULL AS totp_enrolled, disabled, failed_logins, locked_until_ms, created_at";

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn user_from_row(r: &AnyRow) -> Result<UserRecord, StoreError> {
    let created: String = r.try_get("created_at")?;
    let created_at = OffsetDateTime::parse(&created, &time::format_description::well_known::Rfc3339)
        .map_err(|_| StoreError::Corrupt("user created_at".into()))?;
    let locked_until = r
        .try_get::<Option<i64>, _>("locked_until_ms")?
        .map(crate::ms_to_instant)
        .transpose()?;
    // SQLite answers `IS NOT NULL` as an integer, PostgreSQL as a boolean.
    let totp_enrolled = match r.try_get::<bool, _>("totp_enrolled") {
        Ok(b) => b,
        Err(_) => r.try_get::<i64, _>("totp_enrolled")? != 0,
    };
    Ok(UserRecord {
        user_id: r.try_get("user_id")?,
        username: r.try_get("username")?,
        role: r.try_get("role")?,
        fhir_user: r.try_get("fhir_user")?,
        password_hash: r.try_get("password_hash")?,
        must_change_password: r.try_get::<i64, _>("must_change_password")? != 0,
        totp_enrolled,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        failed_logins: r.try_get("failed_logins")?,
        locked_until,
        created_at,
    })
}

impl Store {
    /// Adds a user; [`StoreError::Duplicate`] if the username (or id) is taken. The factors
    /// start empty.
    pub async fn insert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO ward_user (user_id, username, role, fhir_user, password_hash, \
             must_change_password, failed_logins, disabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8)",
        )
        .bind(u.user_id.clone())
        .bind(u.username.clone())
        .bind(u.role.clone())
        .bind(u.fhir_user.clone())
        .bind(u.password_hash.clone())
        .bind(i64::from(u.must_change_password))
        .bind(i64::from(u.disabled))
        .bind(format_instant(u.created_at))
        .execute(&self.inner.writer)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if error::is_unique_violation(&e) => Err(StoreError::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM ward_user WHERE user_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(&self.inner.writer)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// By normalized username.
    pub async fn get_user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM ward_user WHERE username = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(username)
            .fetch_optional(&self.inner.writer)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM ward_user ORDER BY username");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.inner.reader)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Replaces the password hash and the must-change flag; false if there is no such user.
    pub async fn set_user_password(
        &self,
        user_id: &str,
        password_hash: &str,
        must_change_password: bool,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE ward_user SET password_hash = $1, must_change_password = $2 WHERE user_id = $3",
        )
        .bind(password_hash.to_owned())
        .bind(i64::from(must_change_password))
        .bind(user_id.to_owned())
        .execute(&self.inner.writer)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Counts one failed sign-in and returns the new count (`None`: no such user; the same
    /// statement runs either way, so an unknown name costs what a known one does).
    pub async fn record_login_failure(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "UPDATE ward_user SET failed_logins = failed_logins + 1 WHERE user_id = $1 \
             RETURNING failed_logins",
        )
        .bind(user_id.to_owned())
        .fetch_optional(&self.inner.writer)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// Locks sign-in until `until` (never shortens a lock already set further out).
    pub async fn lock_user_until(&self, user_id: &str, until: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ward_user SET locked_until_ms = $1 WHERE user_id = $2 \
             AND (locked_until_ms IS NULL OR locked_until_ms < $1)",
        )
        .bind(ms(until))
        .bind(user_id.to_owned())
        .execute(&self.inner.writer)
        .await?;
        Ok(())
    }

    /// A successful sign-in: the failure count and any lock are cleared.
    pub async fn clear_login_failures(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE ward_user SET failed_logins = 0, locked_until_ms = NULL WHERE user_id = $1")
            .bind(user_id.to_owned())
            .execute(&self.inner.writer)
            .await?;
        Ok(())
    }

    /// Disables a user by username; the user id, or `None` if there is no such user.
    pub async fn disable_user(&self, username: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("UPDATE ward_user SET disabled = 1 WHERE username = $1 RETURNING user_id")
            .bind(username.to_owned())
            .fetch_optional(&self.inner.writer)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    fn seal_user_secret(
        &self,
        label: &str,
        user_id: &str,
        secret: &[u8],
    ) -> Result<(i64, Vec<u8>), StoreError> {
        let aad = Aad {
            tenant: self.tenant(),
            rtype: label,
            id: user_id,
            version: 0,
        };
        let (epoch, sealed) = self.inner.envelope.seal(&aad, secret)?;
        Ok((i64::from(epoch), sealed))
    }

    fn open_user_secret(
        &self,
        label: &str,
        user_id: &str,
        epoch: i64,
        sealed: &[u8],
    ) -> Result<SecretBytes, StoreError> {
        let aad = Aad {
            tenant: self.tenant(),
            rtype: label,
            id: user_id,
            version: 0,
        };
        let epoch = u32::try_from(epoch).map_err(|_| StoreError::Corrupt("key epoch out of range".into()))?;
        let plain = self
            .inner
            .envelope
            .open(epoch, &aad, sealed)
            .map_err(|_| StoreError::Corrupt("sealed user secret does not open".into()))?;
        Ok(SecretBytes::new(plain))
    }

    /// Stores a TOTP secret waiting for its first code (replacing an earlier one); false if
    /// there is no such user.
    pub async fn set_pending_totp(&self, user_id: &str, secret: &[u8]) -> Result<bool, StoreError> {
        let (epoch, sealed) = self.seal_user_secret(AAD_PENDING, user_id, secret)?;
        let res =
            sqlx::query("UPDATE ward_user SET pending_epoch = $1, pending_secret = $2 WHERE user_id = $3")
                .bind(epoch)
                .bind(sealed)
                .bind(user_id.to_owned())
                .execute(&self.inner.writer)
                .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn sealed_column(
        &self,
        user_id: &str,
        epoch_col: &str,
        secret_col: &str,
        label: &str,
    ) -> Result<Option<SecretBytes>, StoreError> {
        let sql = format!("SELECT {epoch_col}, {secret_col} FROM ward_user WHERE user_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id.to_owned())
            .fetch_optional(&self.inner.writer)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let epoch: Option<i64> = row.try_get(0)?;
        let sealed: Option<Vec<u8>> = row.try_get(1)?;
        match (epoch, sealed) {
            (Some(e), Some(s)) => Ok(Some(self.open_user_secret(label, user_id, e, &s)?)),
            _ => Ok(None),
        }
    }

    /// The TOTP secret waiting for enrollment, if any.
    pub async fn pending_totp(&self, user_id: &str) -> Result<Option<SecretBytes>, StoreError> {
        self.sealed_column(user_id, "pending_epoch", "pending_secret", AAD_PENDING)
            .await
    }

    /// The confirmed TOTP secret, if any.
    pub async fn totp_secret(&self, user_id: &str) -> Result<Option<SecretBytes>, StoreError> {
        self.sealed_column(user_id, "totp_epoch", "totp_secret", AAD_TOTP)
            .await
    }

    /// Completes enrollment in one transaction: `secret` (the pending one, checked by the
    /// caller against a code of `step`) becomes the TOTP secret, `step` the last accepted one,
    /// and `recovery_tags` (keyed hashes, [`Store::recovery_code_tag`]) replace any earlier
    /// codes. False if the pending secret changed or was confirmed meanwhile.
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        secret: &[u8],
        step: i64,
        recovery_tags: &[[u8; 32]],
    ) -> Result<bool, StoreError> {
        let (epoch, sealed) = self.seal_user_secret(AAD_TOTP, user_id, secret)?;
        let mut tx = self.inner.writer.begin().await?;
        let res = sqlx::query(
            "UPDATE ward_user SET totp_epoch = $1, totp_secret = $2, totp_last_step = $3, \
             pending_epoch = NULL, pending_secret = NULL WHERE user_id = $4 AND pending_secret IS NOT NULL \
             AND totp_secret IS NULL",
        )
        .bind(epoch)
        .bind(sealed)
        .bind(step)
        .bind(user_id.to_owned())
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_recovery_code WHERE user_id = $1")
            .bind(user_id.to_owned())
            .execute(&mut *tx)
            .await?;
        for tag in recovery_tags {
            sqlx::query("INSERT INTO user_recovery_code (user_id, code_hash) VALUES ($1, $2)")
                .bind(user_id.to_owned())
                .bind(tag.to_vec())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Accepts TOTP time step `step` if it is later than every step accepted before (atomic:
    /// two requests with one code cannot both pass). False otherwise.
    pub async fn accept_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE ward_user SET totp_last_step = $1 WHERE user_id = $2 AND totp_secret IS NOT NULL \
             AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id.to_owned())
        .execute(&self.inner.writer)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// The keyed hash of a recovery code (high-entropy, so no slow hash), bound to the user.
    pub fn recovery_code_tag(&self, user_id: &str, code: &[u8]) -> [u8; 32] {
        self.bound_tag("recovery-code-v1", user_id, code)
    }

    /// Marks an unused recovery code used; false if it is unknown or already used.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        tag: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE user_recovery_code SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 \
             AND used_at IS NULL",
        )
        .bind(format_instant(now))
        .bind(user_id.to_owned())
        .bind(tag.to_vec())
        .execute(&self.inner.writer)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Unused recovery codes left.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM user_recovery_code WHERE user_id = $1 AND used_at IS NULL")
                .bind(user_id.to_owned())
                .fetch_one(&self.inner.writer)
                .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Removes every second factor of a user (TOTP, pending enrollment, recovery codes), by
    /// username; the user id, or `None` if there is no such user.
    pub async fn reset_user_mfa(&self, username: &str) -> Result<Option<String>, StoreError> {
        let mut tx = self.inner.writer.begin().await?;
        let row = sqlx::query(
            "UPDATE ward_user SET totp_epoch = NULL, totp_secret = NULL, pending_epoch = NULL, \
             pending_secret = NULL, totp_last_step = NULL WHERE username = $1 RETURNING user_id",
        )
        .bind(username.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id: String = row.try_get(0)?;
        sqlx::query("DELETE FROM user_recovery_code WHERE user_id = $1")
            .bind(user_id.clone())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }
}
