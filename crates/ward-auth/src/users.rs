//! People who sign in (SPEC AC-1, AC-5): roles, password sign-in with lockout, password
//! change, TOTP enrollment and second-factor checks, recovery codes, and the administrative
//! steps behind `ward user ...`.
//!
//! Safeguards here:
//! * One generic refusal ([`LoginError::Refused`]) for an unknown user, a wrong password, a
//!   locked or a disabled account, and the same work for each: argon2id always runs (against
//!   a dummy hash of the same parameters when there is no user) and so does one failure-count
//!   statement (on no row for an unknown user).
//! * Lockout: from the [`LOCKOUT_THRESHOLD`]th consecutive failure, sign-in is refused for
//!   [`lockout_duration`] (doubling with each further failure), even with the right password.
//!   Every attempt is charged before its check and refunded on success, so guesses sent in
//!   parallel cannot all be checked before the lock falls. Second-factor attempts count too,
//!   and a right password alone never clears the count of a user with TOTP (or guessing
//!   codes between password sign-ins would be free).
//! * A TOTP step is accepted once (the store keeps the last accepted step and refuses any not
//!   later, atomically); recovery codes are single-use and stored as keyed hashes.
//!
//! Time comes in as `now` parameters, so tests move it instead of sleeping.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use ward_crypto::SecretString;
use ward_store::{Store, StoreError, UserRecord};

use crate::password::{self, PasswordRule};
use crate::totp;

/// Consecutive failures after which sign-in is locked.
pub const LOCKOUT_THRESHOLD: i64 = 5;
/// The first lock; each further failure doubles it.
pub const LOCKOUT_BASE_SECS: i64 = 30;
/// The longest lock.
pub const LOCKOUT_MAX_SECS: i64 = 3600;
/// Recovery codes made at enrollment.
pub const RECOVERY_CODES: usize = 10;
/// Longest username.
pub const MAX_USERNAME_CHARS: usize = 64;

/// Roles (SPEC AC-7). Text form: lowercase, `front-desk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Clinician,
    Nurse,
    FrontDesk,
    Billing,
    Researcher,
    Auditor,
    Patient,
    Service,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::Admin,
        Role::Clinician,
        Role::Nurse,
        Role::FrontDesk,
        Role::Billing,
        Role::Researcher,
        Role::Auditor,
        Role::Patient,
        Role::Service,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::FrontDesk => "front-desk",
            Role::Billing => "billing",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
            Role::Service => "service",
        }
    }

    /// Whether a second factor is mandatory for this role (admin and auditor).
    pub fn mfa_required(self) -> bool {
        matches!(self, Role::Admin | Role::Auditor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Role, UserError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(UserError::InvalidRole)
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Who a user is, as the sign-in pages and tokens need it. No secret inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserIdentity {
    /// UUID v4, never reused.
    pub user_id: String,
    pub username: String,
    pub role: Role,
    /// `Practitioner/ID` or `Patient/ID`.
    pub fhir_user: Option<String>,
    pub must_change_password: bool,
    pub mfa_enrolled: bool,
    /// The role requires a second factor (enroll first if not enrolled).
    pub mfa_required: bool,
}

impl UserIdentity {
    fn from_record(r: &UserRecord) -> Result<UserIdentity, StoreError> {
        let role = Role::from_str(&r.role).map_err(|_| StoreError::Corrupt("user role".into()))?;
        Ok(UserIdentity {
            user_id: r.user_id.clone(),
            username: r.username.clone(),
            role,
            fhir_user: r.fhir_user.clone(),
            must_change_password: r.must_change_password,
            mfa_enrolled: r.totp_enrolled,
            mfa_required: role.mfa_required(),
        })
    }
}

/// The answer to a failed sign-in step. `Refused` is all a person ever learns.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password or code, locked, disabled: all alike.
    #[error("invalid credentials")]
    Refused,
    /// The store failed; nothing was decided.
    #[error("sign-in is unavailable")]
    Unavailable(#[source] StoreError),
}

/// Why a sign-in step was refused, for the audit trail only (never shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    UnknownUser,
    WrongPassword,
    WrongCode,
    /// Refused because of a lock (whatever the credentials).
    Locked,
    Disabled,
}

/// A refused sign-in step with what the audit trail may record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// The user, when the name was known.
    pub user_id: Option<String>,
    /// This failure started a lock (until then).
    pub locked_until: Option<OffsetDateTime>,
}

/// A detailed failure of a sign-in step ([`login_password_detailed`]).
#[derive(Debug)]
pub enum LoginFailure {
    Refused(Refusal),
    Unavailable(StoreError),
}

impl From<LoginFailure> for LoginError {
    fn from(f: LoginFailure) -> LoginError {
        match f {
            LoginFailure::Refused(_) => LoginError::Refused,
            LoginFailure::Unavailable(e) => LoginError::Unavailable(e),
        }
    }
}

impl From<StoreError> for LoginFailure {
    fn from(e: StoreError) -> LoginFailure {
        LoginFailure::Unavailable(e)
    }
}

/// A refused password change.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The new password breaks a rule (the message says which).
    #[error(transparent)]
    Rule(PasswordRule),
    /// Wrong current password, locked or disabled account, unknown user: all alike.
    #[error("invalid credentials")]
    Refused,
    #[error("password change is unavailable")]
    Unavailable(#[source] StoreError),
}

/// Errors of user administration and enrollment.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "usernames are 1 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidUsername,
    #[error(
        "unknown role (one of: admin, clinician, nurse, front-desk, billing, researcher, auditor, patient, service)"
    )]
    InvalidRole,
    #[error("the FHIR user must be Practitioner/ID or Patient/ID with a FHIR id")]
    InvalidFhirUser,
    #[error("a patient user needs a Patient/ID link, and only a patient user may have one")]
    RoleLinkMismatch,
    #[error(transparent)]
    Password(PasswordRule),
    #[error("a user with that username exists")]
    Duplicate,
    #[error("no such user")]
    NotFound,
    #[error("TOTP is already enrolled; reset it first")]
    AlreadyEnrolled,
    #[error("no TOTP enrollment is in progress")]
    NoPendingEnrollment,
    #[error("the code is not valid")]
    WrongCode,
    #[error("user store failure")]
    Store(#[source] StoreError),
    #[error("password hashing failed")]
    Hashing,
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> UserError {
        match e {
            StoreError::Duplicate => UserError::Duplicate,
            other => UserError::Store(other),
        }
    }
}

/// A started TOTP enrollment: what the enrollment page shows (once).
#[derive(Debug)]
pub struct TotpEnrollment {
    /// Base32, for typing into an authenticator by hand.
    pub secret_base32: SecretString,
    pub otpauth_uri: SecretString,
    /// The QR code of `otpauth_uri`, a standalone SVG document.
    pub qr_svg: String,
}

/// Which second factor passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
}

/// How long sign-in stays locked after `failures` consecutive failures (`None` below the
/// threshold): 30 s at the 5th, doubling, at most an hour.
pub fn lockout_duration(failures: i64) -> Option<Duration> {
    let extra = failures.checked_sub(LOCKOUT_THRESHOLD)?;
    if extra < 0 {
        return None;
    }
    let shift = u32::try_from(extra.min(20)).unwrap_or(20);
    let secs = LOCKOUT_BASE_SECS
        .checked_mul(1i64 << shift)
        .unwrap_or(LOCKOUT_MAX_SECS)
        .min(LOCKOUT_MAX_SECS);
    Some(Duration::seconds(secs))
}

/// The normal form of a username: trimmed, ASCII lowercase; refused unless it is 1 to 64 of
/// `[a-z0-9._-]` starting with a letter or digit (one spelling per person: no Unicode
/// look-alikes, no case variants).
pub fn normalize_username(input: &str) -> Result<String, UserError> {
    let name = input.trim().to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= MAX_USERNAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(UserError::InvalidUsername)
    }
}

/// Checks a FHIR user link: `Practitioner/ID` or `Patient/ID`, ID a FHIR id
/// (`[A-Za-z0-9-.]{1,64}`).
pub fn parse_fhir_user(input: &str) -> Result<String, UserError> {
    let (rtype, id) = input.split_once('/').ok_or(UserError::InvalidFhirUser)?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if matches!(rtype, "Practitioner" | "Patient") && id_ok {
        Ok(input.to_owned())
    } else {
        Err(UserError::InvalidFhirUser)
    }
}

/// A user id no row has: failure statements for unknown users run against it.
const NO_USER: &str = "00000000-0000-0000-0000-000000000000";

/// What [`reserve`] found.
enum Attempt {
    /// Charged; `locked_until` is set when this attempt started a lock.
    Charged { locked_until: Option<OffsetDateTime> },
    /// Locked (or no such user): nothing may be checked.
    Locked,
}

/// Charges an attempt to `user_id` before its check (or runs the same statements on no row
/// when `None`), locking the account once the count reaches the threshold.
async fn reserve(store: &Store, user_id: Option<&str>, now: OffsetDateTime) -> Result<Attempt, StoreError> {
    let lock_for = |failures| lockout_duration(failures).map(|d| now.checked_add(d).unwrap_or(now));
    match store
        .reserve_login_attempt(user_id.unwrap_or(NO_USER), now, lock_for)
        .await?
    {
        Some((failures, locked_until)) => {
            if locked_until.is_some() {
                tracing::warn!(user_id, failures, "user sign-in locked after repeated failures");
            }
            Ok(Attempt::Charged { locked_until })
        }
        None => Ok(Attempt::Locked),
    }
}

/// Password sign-in. On success the identity says what comes next (`must_change_password`,
/// a second factor if `mfa_enrolled`, enrollment if `mfa_required` and not enrolled).
pub async fn login_password(
    store: &Store,
    username: &str,
    password: &str,
    now: OffsetDateTime,
) -> Result<UserIdentity, LoginError> {
    login_password_detailed(store, username, password, now)
        .await
        .map_err(LoginError::from)
}

/// [`login_password`] with the reason of a refusal, for the audit trail (never for the
/// person signing in).
pub async fn login_password_detailed(
    store: &Store,
    username: &str,
    password: &str,
    now: OffsetDateTime,
) -> Result<UserIdentity, LoginFailure> {
    let record = match normalize_username(username) {
        Ok(name) => store.get_user_by_name(&name).await?,
        Err(_) => None,
    };
    // The dummy hash is made on first use: every sign-in touches it, so that first cost does
    // not single out an unknown user.
    let dummy = password::DUMMY_HASH.clone();
    let phc = record.as_ref().map_or(dummy, |r| r.password_hash.clone());
    // Bounded input: a longer "password" is checked as wrong, at the usual cost.
    let candidate = if password.len() <= password::MAX_PASSWORD_BYTES {
        password
    } else {
        ""
    };
    let refuse = |reason, user_id: Option<&str>, locked_until| {
        LoginFailure::Refused(Refusal {
            reason,
            user_id: user_id.map(str::to_owned),
            locked_until,
        })
    };
    let Some(record) = record else {
        reserve(store, None, now).await?;
        let _ = password::verify(phc, SecretString::new(candidate.to_owned())).await;
        return Err(refuse(RefusalReason::UnknownUser, None, None));
    };
    let id = record.user_id.as_str();
    // Charged before the check, so parallel guesses cannot outrun the lock.
    let attempt = if record.disabled {
        reserve(store, None, now).await?
    } else {
        reserve(store, Some(id), now).await?
    };
    let matches = password::verify(phc, SecretString::new(candidate.to_owned())).await;
    if record.disabled {
        return Err(refuse(RefusalReason::Disabled, Some(id), None));
    }
    let Attempt::Charged { locked_until } = attempt else {
        return Err(refuse(RefusalReason::Locked, Some(id), None));
    };
    if !matches {
        return Err(refuse(RefusalReason::WrongPassword, Some(id), locked_until));
    }
    // A user with TOTP keeps the charge until the second factor passes: a right password
    // alone must not reset the count that bounds guessing codes.
    if !record.totp_enrolled {
        store.clear_login_failures(id).await?;
    }
    Ok(UserIdentity::from_record(&record)?)
}

/// The user, or `None` if unknown or disabled.
pub async fn get_user(store: &Store, user_id: &str) -> Result<Option<UserIdentity>, UserError> {
    match store.get_user(user_id).await? {
        Some(r) if !r.disabled => Ok(Some(UserIdentity::from_record(&r)?)),
        _ => Ok(None),
    }
}

/// Changes a user's password after checking the current one (a wrong one counts as a failed
/// sign-in). The new password must meet the rules and differ from the current one; the
/// must-change flag is cleared.
pub async fn change_password(
    store: &Store,
    user_id: &str,
    current: &str,
    new: &str,
) -> Result<(), PasswordError> {
    change_password_at(store, user_id, current, new, OffsetDateTime::now_utc()).await
}

/// [`change_password`] at `now` (for the lockout).
pub async fn change_password_at(
    store: &Store,
    user_id: &str,
    current: &str,
    new: &str,
    now: OffsetDateTime,
) -> Result<(), PasswordError> {
    let record = store
        .get_user(user_id)
        .await
        .map_err(PasswordError::Unavailable)?;
    // The dummy hash is made on first use: every sign-in touches it, so that first cost does
    // not single out an unknown user.
    let dummy = password::DUMMY_HASH.clone();
    let phc = record.as_ref().map_or(dummy, |r| r.password_hash.clone());
    let current = if current.len() <= password::MAX_PASSWORD_BYTES {
        current
    } else {
        ""
    };
    let usable = record
        .as_ref()
        .filter(|r| !r.disabled)
        .map(|r| r.user_id.as_str());
    let attempt = reserve(store, usable, now)
        .await
        .map_err(PasswordError::Unavailable)?;
    let matches = password::verify(phc, SecretString::new(current.to_owned())).await;
    let (Some(record), Attempt::Charged { .. }) = (record.filter(|r| !r.disabled), attempt) else {
        return Err(PasswordError::Refused);
    };
    if !matches {
        return Err(PasswordError::Refused);
    }
    if !record.totp_enrolled {
        store
            .clear_login_failures(&record.user_id)
            .await
            .map_err(PasswordError::Unavailable)?;
    }
    password::check_new_password(new, &record.username).map_err(PasswordError::Rule)?;
    if new == current {
        return Err(PasswordError::Rule(PasswordRule::SameAsCurrent));
    }
    let hash = password::hash(SecretString::new(new.to_owned()))
        .await
        .map_err(|_| PasswordError::Unavailable(StoreError::Corrupt("password hashing failed".into())))?;
    store
        .set_user_password(&record.user_id, &hash, false)
        .await
        .map_err(PasswordError::Unavailable)?;
    Ok(())
}

/// Starts (or restarts) TOTP enrollment: a new secret waits, sealed, for its first code.
/// Refused once TOTP is enrolled (an administrator resets it with `ward user reset-mfa`).
pub async fn start_totp_enrollment(store: &Store, user_id: &str) -> Result<TotpEnrollment, UserError> {
    let record = store
        .get_user(user_id)
        .await?
        .filter(|r| !r.disabled)
        .ok_or(UserError::NotFound)?;
    if record.totp_enrolled {
        return Err(UserError::AlreadyEnrolled);
    }
    let secret = totp::generate_secret();
    if !store.set_pending_totp(user_id, secret.expose()).await? {
        return Err(UserError::NotFound);
    }
    let otpauth_uri = totp::otpauth_uri(secret.expose(), &record.username);
    let qr_svg = totp::qr_svg(otpauth_uri.expose()).ok_or(UserError::Hashing)?;
    Ok(TotpEnrollment {
        secret_base32: totp::secret_base32(secret.expose()),
        otpauth_uri,
        qr_svg,
    })
}

/// A fresh recovery code: 80 random bits as 16 base32 letters and digits in four groups.
fn generate_recovery_code() -> SecretString {
    let raw = ward_crypto::SecretBytes::new(ward_crypto::random_bytes(10));
    let b32 = SecretString::new(data_encoding::BASE32_NOPAD.encode(raw.expose()));
    let mut out = String::with_capacity(19);
    for (i, c) in b32.expose().chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    SecretString::new(out)
}

/// The form a recovery code is hashed in: separators and spaces dropped, uppercase.
fn normalize_recovery_code(input: &str) -> SecretString {
    SecretString::new(
        input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    )
}

/// Finishes enrollment with a code from the authenticator: the pending secret becomes the
/// user's TOTP secret (the code's step counts as used) and ten recovery codes are made,
/// returned once and stored only as keyed hashes.
pub async fn finish_totp_enrollment(
    store: &Store,
    user_id: &str,
    code: &str,
    now: OffsetDateTime,
) -> Result<Vec<SecretString>, UserError> {
    let record = store
        .get_user(user_id)
        .await?
        .filter(|r| !r.disabled)
        .ok_or(UserError::NotFound)?;
    if record.totp_enrolled {
        return Err(UserError::AlreadyEnrolled);
    }
    let secret = store
        .pending_totp(user_id)
        .await?
        .ok_or(UserError::NoPendingEnrollment)?;
    let step = totp::matching_step(secret.expose(), code, now).ok_or(UserError::WrongCode)?;
    let codes: Vec<SecretString> = (0..RECOVERY_CODES).map(|_| generate_recovery_code()).collect();
    let tags: Vec<[u8; 32]> = codes
        .iter()
        .map(|c| store.recovery_code_tag(user_id, normalize_recovery_code(c.expose()).expose().as_bytes()))
        .collect();
    if !store.confirm_totp(user_id, secret.expose(), step, &tags).await? {
        return Err(UserError::NoPendingEnrollment);
    }
    store.clear_login_failures(user_id).await?;
    Ok(codes)
}

/// Checks a second factor: a TOTP code (six digits; each step accepted once) or an unused
/// recovery code (then used up). Failures count toward the lockout; a lock refuses even a
/// right code. Success clears the failure count.
pub async fn verify_second_factor(
    store: &Store,
    user_id: &str,
    code: &str,
    now: OffsetDateTime,
) -> Result<SecondFactor, LoginError> {
    verify_second_factor_detailed(store, user_id, code, now)
        .await
        .map_err(LoginError::from)
}

/// [`verify_second_factor`] with the reason of a refusal, for the audit trail.
pub async fn verify_second_factor_detailed(
    store: &Store,
    user_id: &str,
    code: &str,
    now: OffsetDateTime,
) -> Result<SecondFactor, LoginFailure> {
    let refuse = |reason, locked_until| {
        LoginFailure::Refused(Refusal {
            reason,
            user_id: Some(user_id.to_owned()),
            locked_until,
        })
    };
    let Some(record) = store.get_user(user_id).await? else {
        return Err(refuse(RefusalReason::UnknownUser, None));
    };
    if record.disabled {
        return Err(refuse(RefusalReason::Disabled, None));
    }
    let Attempt::Charged { locked_until } = reserve(store, Some(user_id), now).await? else {
        return Err(refuse(RefusalReason::Locked, None));
    };
    let passed = if totp::looks_like_code(code) {
        match store.totp_secret(user_id).await? {
            Some(secret) => match totp::matching_step(secret.expose(), code, now) {
                Some(step) => store
                    .accept_totp_step(user_id, step)
                    .await?
                    .then_some(SecondFactor::Totp),
                None => None,
            },
            None => None,
        }
    } else if code.len() <= 64 && record.totp_enrolled {
        let normal = normalize_recovery_code(code);
        let tag = store.recovery_code_tag(user_id, normal.expose().as_bytes());
        store
            .use_recovery_code(user_id, &tag, now)
            .await?
            .then_some(SecondFactor::RecoveryCode)
    } else {
        None
    };
    match passed {
        Some(factor) => {
            store.clear_login_failures(user_id).await?;
            Ok(factor)
        }
        None => Err(refuse(RefusalReason::WrongCode, locked_until)),
    }
}

// ----- administration (`ward user ...`) ----------------------------------------------------------

/// A user to create. Without `password`, a one-time password is generated, to be changed at
/// first sign-in.
#[derive(Debug)]
pub struct NewUser {
    pub username: String,
    pub role: Role,
    pub fhir_user: Option<String>,
    pub password: Option<SecretString>,
}

/// A created user; `one_time_password` is set when Ward generated it (shown once).
#[derive(Debug, Serialize)]
pub struct CreatedUser {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub fhir_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<SecretString>,
    pub must_change_password: bool,
}

/// Creates a user with a fresh UUID v4 (never reused: user rows are never deleted).
pub async fn create_user(store: &Store, new: NewUser, now: OffsetDateTime) -> Result<CreatedUser, UserError> {
    let username = normalize_username(&new.username)?;
    let fhir_user = new.fhir_user.as_deref().map(parse_fhir_user).transpose()?;
    let patient_link = fhir_user.as_deref().is_some_and(|f| f.starts_with("Patient/"));
    if (new.role == Role::Patient) != patient_link {
        return Err(UserError::RoleLinkMismatch);
    }
    let (password, one_time) = match new.password {
        Some(p) => {
            password::check_new_password(p.expose(), &username).map_err(UserError::Password)?;
            (p, false)
        }
        None => (password::generate_one_time(), true),
    };
    let hash = password::hash(password.clone())
        .await
        .map_err(|_| UserError::Hashing)?;
    let record = UserRecord {
        user_id: uuid::Uuid::new_v4().to_string(),
        username,
        role: new.role.as_str().to_owned(),
        fhir_user,
        password_hash: hash,
        must_change_password: one_time,
        totp_enrolled: false,
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        created_at: now,
    };
    store.insert_user(&record).await?;
    Ok(CreatedUser {
        user_id: record.user_id,
        username: record.username,
        role: new.role,
        fhir_user: record.fhir_user,
        one_time_password: one_time.then_some(password),
        must_change_password: one_time,
    })
}

/// Disables a user by username; returns the user id.
pub async fn disable_user(store: &Store, username: &str) -> Result<String, UserError> {
    let username = normalize_username(username)?;
    let user_id = store.disable_user(&username).await?.ok_or(UserError::NotFound)?;
    // Every token issued to the user until now stops working on every node within a second
    // (`Authenticated` checks the revocation list), and every browser session ends.
    store.revoke(ward_store::RevokedKind::Subject, &user_id).await?;
    store.delete_user_sessions(&user_id).await?;
    Ok(user_id)
}

/// Removes a user's TOTP secret and recovery codes (lost device); the next sign-in enrolls
/// again. Returns the user id.
pub async fn reset_mfa(store: &Store, username: &str) -> Result<String, UserError> {
    let username = normalize_username(username)?;
    store.reset_user_mfa(&username).await?.ok_or(UserError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-05 12:00:00 UTC);
    const PW: &str = "correct horse battery";

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = Store::open(&url, &ward_crypto::Kek::generate().unwrap())
            .await
            .unwrap();
        (dir, store)
    }

    async fn user(store: &Store, name: &str, role: Role) -> CreatedUser {
        create_user(
            store,
            NewUser {
                username: name.into(),
                role,
                fhir_user: None,
                password: Some(SecretString::new(PW.into())),
            },
            T0,
        )
        .await
        .unwrap()
    }

    fn refusal(r: Result<UserIdentity, LoginFailure>) -> Refusal {
        match r {
            Err(LoginFailure::Refused(r)) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Enrolls TOTP at `at`; returns the secret and the recovery codes.
    async fn enroll(store: &Store, user_id: &str, at: OffsetDateTime) -> (Vec<u8>, Vec<SecretString>) {
        let e = start_totp_enrollment(store, user_id).await.unwrap();
        let secret = data_encoding::BASE32_NOPAD
            .decode(e.secret_base32.expose().as_bytes())
            .unwrap();
        assert!(e.otpauth_uri.expose().contains(e.secret_base32.expose()));
        assert!(e.qr_svg.starts_with("<svg"));
        let code = totp::code(&secret, totp::step_at(at)).unwrap();
        let codes = finish_totp_enrollment(store, user_id, code.expose(), at)
            .await
            .unwrap();
        (secret, codes)
    }

    fn code_at(secret: &[u8], at: OffsetDateTime) -> String {
        totp::code(secret, totp::step_at(at)).unwrap().expose().to_owned()
    }

    #[test]
    fn lockout_backoff_table() {
        let cases = [
            (0, None),
            (4, None),
            (5, Some(30)),
            (6, Some(60)),
            (7, Some(120)),
            (11, Some(1920)),
            (12, Some(3600)),
            (1000, Some(3600)),
            (i64::MAX, Some(3600)),
            (i64::MIN, None),
        ];
        for (failures, secs) in cases {
            assert_eq!(
                lockout_duration(failures),
                secs.map(Duration::seconds),
                "{failures}"
            );
        }
    }

    #[test]
    fn usernames_links_and_roles() {
        for (input, want) in [
            ("alice", Some("alice")),
            ("  Alice.Smith ", Some("alice.smith")),
            ("dr_who-2", Some("dr_who-2")),
            ("", None),
            ("-alice", None),
            (".alice", None),
            ("al ice", None),
            ("alíce", None),
            ("аlice", None), // Cyrillic а
            ("a/b", None),
        ] {
            assert_eq!(normalize_username(input).ok().as_deref(), want, "{input:?}");
        }
        assert!(normalize_username(&"a".repeat(64)).is_ok());
        assert!(normalize_username(&"a".repeat(65)).is_err());
        for (input, ok) in [
            ("Practitioner/abc-1.2", true),
            ("Patient/123", true),
            ("Patient/", false),
            ("Patient", false),
            ("Organization/1", false),
            ("patient/1", false),
            ("Patient/1/_history/2", false),
            ("Patient/a b", false),
            ("https://x/Patient/1", false),
        ] {
            assert_eq!(parse_fhir_user(input).is_ok(), ok, "{input:?}");
        }
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.mfa_required(), matches!(role, Role::Admin | Role::Auditor));
        }
        assert_eq!(Role::FrontDesk.to_string(), "front-desk");
        assert!("Admin".parse::<Role>().is_err());
        assert!("frontdesk".parse::<Role>().is_err());
    }

    #[tokio::test]
    async fn create_user_rules() {
        let (_d, s) = store().await;
        let made = create_user(
            &s,
            NewUser {
                username: "Nora".into(),
                role: Role::Nurse,
                fhir_user: Some("Practitioner/n1".into()),
                password: None,
            },
            T0,
        )
        .await
        .unwrap();
        assert_eq!(made.username, "nora");
        assert!(made.must_change_password);
        let otp = made.one_time_password.clone().unwrap();
        assert_eq!(uuid::Uuid::parse_str(&made.user_id).unwrap().get_version_num(), 4);
        // The one-time password signs in, and says it must be changed.
        let id = login_password(&s, "NORA", otp.expose(), T0).await.unwrap();
        assert!(id.must_change_password);
        assert_eq!(id.fhir_user.as_deref(), Some("Practitioner/n1"));
        // One username per person, whatever the case.
        let dup = create_user(
            &s,
            NewUser {
                username: "nORA".into(),
                role: Role::Nurse,
                fhir_user: None,
                password: None,
            },
            T0,
        )
        .await;
        assert!(matches!(dup, Err(UserError::Duplicate)), "{dup:?}");
        let bad = |role, link: Option<&str>, pw: Option<&str>| NewUser {
            username: "x1".into(),
            role,
            fhir_user: link.map(str::to_owned),
            password: pw.map(|p| SecretString::new(p.into())),
        };
        for (new, want) in [
            (bad(Role::Patient, None, None), "RoleLinkMismatch"),
            (
                bad(Role::Patient, Some("Practitioner/1"), None),
                "RoleLinkMismatch",
            ),
            (bad(Role::Clinician, Some("Patient/1"), None), "RoleLinkMismatch"),
            (bad(Role::Clinician, Some("Group/1"), None), "InvalidFhirUser"),
            (bad(Role::Clinician, None, Some("short")), "Password(TooShort)"),
            (
                bad(Role::Clinician, None, Some("qwertyuiop123")),
                "Password(Common)",
            ),
        ] {
            let got = create_user(&s, new, T0).await.unwrap_err();
            assert_eq!(format!("{got:?}"), want);
        }
        let p = create_user(&s, bad(Role::Patient, Some("Patient/p1"), None), T0)
            .await
            .unwrap();
        assert_eq!(p.fhir_user.as_deref(), Some("Patient/p1"));
    }

    #[tokio::test]
    async fn unknown_user_and_wrong_password_look_and_cost_the_same() {
        let (_d, s) = store().await;
        let u = user(&s, "alice", Role::Clinician).await;
        let real = s.get_user(&u.user_id).await.unwrap().unwrap().password_hash;
        for (name, pw, reason) in [
            ("alice", "wrong password!!", RefusalReason::WrongPassword),
            ("nobody", PW, RefusalReason::UnknownUser),
            ("not a valid name!", PW, RefusalReason::UnknownUser),
        ] {
            let (answer, verified) = password::VERIFIED
                .scope(std::cell::RefCell::new(Vec::new()), async {
                    let detailed = login_password_detailed(&s, name, pw, T0).await;
                    assert_eq!(refusal(detailed).reason, reason);
                    let plain = login_password(&s, name, pw, T0).await;
                    (plain, password::VERIFIED.with(|v| v.borrow().clone()))
                })
                .await;
            let err = answer.unwrap_err();
            assert!(matches!(err, LoginError::Refused));
            assert_eq!(err.to_string(), "invalid credentials");
            // One argon2id check per attempt, with the parameters of real hashes.
            assert_eq!(verified, vec![password::phc_params(&real); 2], "{name}");
        }
        assert!(login_password(&s, "alice", PW, T0).await.is_ok());
    }

    #[tokio::test]
    async fn lockout_with_backoff_refuses_even_the_right_password() {
        let (_d, s) = store().await;
        let u = user(&s, "bob", Role::Clinician).await;
        let sec = Duration::seconds;
        for i in 1..=4 {
            let r = refusal(login_password_detailed(&s, "bob", "wrong password!!", T0).await);
            assert_eq!(
                (r.reason, r.locked_until),
                (RefusalReason::WrongPassword, None),
                "{i}"
            );
        }
        let r = refusal(login_password_detailed(&s, "bob", "wrong password!!", T0).await);
        assert_eq!(r.locked_until, Some(T0 + sec(30)));
        // During the window: the right password gets the generic refusal.
        for t in [T0, T0 + sec(29)] {
            let r = refusal(login_password_detailed(&s, "bob", PW, t).await);
            assert_eq!(r.reason, RefusalReason::Locked);
            assert!(matches!(
                login_password(&s, "bob", PW, t).await,
                Err(LoginError::Refused)
            ));
        }
        // Attempts in the window do not extend it; after it, one more failure doubles it.
        let r = refusal(login_password_detailed(&s, "bob", "wrong password!!", T0 + sec(30)).await);
        assert_eq!(r.locked_until, Some(T0 + sec(90)));
        assert!(login_password(&s, "bob", PW, T0 + sec(89)).await.is_err());
        // A change of password is locked out too.
        assert!(matches!(
            change_password_at(&s, &u.user_id, PW, "another good passphrase", T0 + sec(89)).await,
            Err(PasswordError::Refused)
        ));
        // After the window the right password works and clears the count.
        assert!(login_password(&s, "bob", PW, T0 + sec(90)).await.is_ok());
        let rec = s.get_user(&u.user_id).await.unwrap().unwrap();
        assert_eq!((rec.failed_logins, rec.locked_until), (0, None));
        // The counter is per account: bob's failures never locked carol.
        user(&s, "carol", Role::Nurse).await;
        assert!(login_password(&s, "carol", PW, T0).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_guesses_cannot_outrun_the_lock() {
        let (_d, s) = store().await;
        let u = user(&s, "pam", Role::Clinician).await;
        let tries: Vec<_> = (0..16)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    login_password_detailed(&s, "pam", &format!("wrong guess {i:04}"), T0).await
                })
            })
            .collect();
        let mut checked = 0;
        for t in tries {
            match t.await.unwrap() {
                Err(LoginFailure::Refused(r)) if r.reason == RefusalReason::WrongPassword => checked += 1,
                Err(LoginFailure::Refused(r)) => assert_eq!(r.reason, RefusalReason::Locked),
                other => panic!("{other:?}"),
            }
        }
        // Exactly the threshold's worth of guesses reached the password; the rest met the lock.
        assert_eq!(checked, LOCKOUT_THRESHOLD);
        let rec = s.get_user(&u.user_id).await.unwrap().unwrap();
        assert_eq!(rec.failed_logins, LOCKOUT_THRESHOLD);
        assert!(login_password(&s, "pam", PW, T0).await.is_err());
        // The same holds for second-factor guesses.
        let v = user(&s, "quin", Role::Clinician).await;
        enroll(&s, &v.user_id, T0).await;
        let t = T0 + Duration::seconds(600);
        let tries: Vec<_> = (0..16)
            .map(|i| {
                let s = s.clone();
                let id = v.user_id.clone();
                tokio::spawn(async move {
                    verify_second_factor_detailed(&s, &id, &format!("{:06}", 100_000 + i), t).await
                })
            })
            .collect();
        let mut wrong = 0;
        for t in tries {
            match t.await.unwrap() {
                Err(LoginFailure::Refused(r)) if r.reason == RefusalReason::WrongCode => wrong += 1,
                Err(LoginFailure::Refused(r)) => assert_eq!(r.reason, RefusalReason::Locked),
                // A guess may be right by chance (1 in 10^6 per step): then it is not wrong.
                Ok(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(wrong <= LOCKOUT_THRESHOLD, "{wrong} codes checked");
    }

    #[tokio::test]
    async fn disabled_users_are_refused_and_hidden() {
        let (_d, s) = store().await;
        let u = user(&s, "dave", Role::Clinician).await;
        assert!(get_user(&s, &u.user_id).await.unwrap().is_some());
        assert_eq!(disable_user(&s, "Dave").await.unwrap(), u.user_id);
        let r = refusal(login_password_detailed(&s, "dave", PW, T0).await);
        assert_eq!(r.reason, RefusalReason::Disabled);
        assert!(matches!(
            login_password(&s, "dave", PW, T0).await,
            Err(LoginError::Refused)
        ));
        assert!(get_user(&s, &u.user_id).await.unwrap().is_none());
        assert!(matches!(
            disable_user(&s, "nobody").await,
            Err(UserError::NotFound)
        ));
        assert!(matches!(
            start_totp_enrollment(&s, &u.user_id).await,
            Err(UserError::NotFound)
        ));
    }

    #[tokio::test]
    async fn change_password_rules() {
        let (_d, s) = store().await;
        let u = user(&s, "erin", Role::Clinician).await;
        let err = change_password(&s, &u.user_id, "wrong password!!", "a brand new passphrase")
            .await
            .unwrap_err();
        assert!(matches!(err, PasswordError::Refused));
        for (new, rule) in [
            ("short", PasswordRule::TooShort),
            ("1qaz2wsx3edc", PasswordRule::Common),
            (PW, PasswordRule::SameAsCurrent),
        ] {
            let err = change_password(&s, &u.user_id, PW, new).await.unwrap_err();
            assert!(matches!(err, PasswordError::Rule(r) if r == rule), "{new}");
        }
        change_password(&s, &u.user_id, PW, "a brand new passphrase")
            .await
            .unwrap();
        assert!(login_password(&s, "erin", PW, T0).await.is_err());
        let id = login_password(&s, "erin", "a brand new passphrase", T0)
            .await
            .unwrap();
        assert!(!id.must_change_password);
        assert!(matches!(
            change_password(&s, "no-such-id", PW, "a brand new passphrase").await,
            Err(PasswordError::Refused)
        ));
    }

    #[tokio::test]
    async fn totp_steps_are_accepted_once() {
        let (_d, s) = store().await;
        let u = user(&s, "fay", Role::Admin).await;
        let before = login_password(&s, "fay", PW, T0).await.unwrap();
        assert!(before.mfa_required && !before.mfa_enrolled);
        let (secret, _) = enroll(&s, &u.user_id, T0).await;
        assert!(get_user(&s, &u.user_id).await.unwrap().unwrap().mfa_enrolled);
        // The code used to enroll is used up.
        assert!(
            verify_second_factor(&s, &u.user_id, &code_at(&secret, T0), T0)
                .await
                .is_err()
        );
        let t1 = T0 + Duration::seconds(60);
        let c1 = code_at(&secret, t1);
        assert_eq!(
            verify_second_factor(&s, &u.user_id, &c1, t1).await.unwrap(),
            SecondFactor::Totp
        );
        // Replay, in the same step and in the next (still within the drift window).
        for t in [t1, t1 + Duration::seconds(30)] {
            assert!(matches!(
                verify_second_factor(&s, &u.user_id, &c1, t).await,
                Err(LoginError::Refused)
            ));
        }
        // A code from the future step is accepted once; the present one is then stale.
        let t2 = t1 + Duration::seconds(120);
        let next = totp::code(&secret, totp::step_at(t2) + 1).unwrap();
        assert!(
            verify_second_factor(&s, &u.user_id, next.expose(), t2)
                .await
                .is_ok()
        );
        assert!(
            verify_second_factor(&s, &u.user_id, &code_at(&secret, t2), t2)
                .await
                .is_err()
        );
        // Another user's code does not pass.
        let v = user(&s, "gus", Role::Auditor).await;
        let (other, _) = enroll(&s, &v.user_id, T0).await;
        let t3 = t2 + Duration::seconds(300);
        assert!(
            verify_second_factor(&s, &u.user_id, &code_at(&other, t3), t3)
                .await
                .is_err()
        );
        assert!(
            verify_second_factor(&s, &u.user_id, &code_at(&secret, t3), t3)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn totp_drift_of_one_step_either_way() {
        let (_d, s) = store().await;
        let step = Duration::seconds(30);
        for (delta, ok) in [(-2, false), (-1, true), (1, true), (2, false)] {
            let name = format!("drift{}", delta + 2);
            let u = user(&s, &name, Role::Clinician).await;
            let (secret, _) = enroll(&s, &u.user_id, T0).await;
            let now = T0 + step * 10;
            let c = totp::code(&secret, totp::step_at(now) + delta).unwrap();
            let got = verify_second_factor(&s, &u.user_id, c.expose(), now).await;
            assert_eq!(got.is_ok(), ok, "delta {delta}");
        }
    }

    #[tokio::test]
    async fn recovery_codes_are_single_use() {
        let (_d, s) = store().await;
        let u = user(&s, "hal", Role::Clinician).await;
        let (_, codes) = enroll(&s, &u.user_id, T0).await;
        assert_eq!(codes.len(), 10);
        let distinct: std::collections::HashSet<&str> = codes.iter().map(|c| c.expose()).collect();
        assert_eq!(distinct.len(), 10);
        assert_eq!(codes[0].expose().len(), 19);
        let c0 = codes[0].expose();
        assert_eq!(
            verify_second_factor(&s, &u.user_id, c0, T0).await.unwrap(),
            SecondFactor::RecoveryCode
        );
        assert!(verify_second_factor(&s, &u.user_id, c0, T0).await.is_err());
        // Typed lowercase, without dashes: the same code.
        let typed = codes[1].expose().replace('-', " ").to_lowercase();
        assert!(verify_second_factor(&s, &u.user_id, &typed, T0).await.is_ok());
        assert!(
            verify_second_factor(&s, &u.user_id, codes[1].expose(), T0)
                .await
                .is_err()
        );
        assert_eq!(s.recovery_codes_left(&u.user_id).await.unwrap(), 8);
        // Bound to the user: hal's code does not pass for ivy.
        let v = user(&s, "ivy", Role::Clinician).await;
        enroll(&s, &v.user_id, T0).await;
        assert!(
            verify_second_factor(&s, &v.user_id, codes[2].expose(), T0)
                .await
                .is_err()
        );
        assert!(
            verify_second_factor(&s, &u.user_id, codes[2].expose(), T0)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn second_factor_failures_lock_and_a_password_does_not_reset_them() {
        let (_d, s) = store().await;
        let u = user(&s, "jo", Role::Admin).await;
        let (secret, codes) = enroll(&s, &u.user_id, T0).await;
        let t = T0 + Duration::seconds(300);
        for _ in 0..4 {
            assert!(verify_second_factor(&s, &u.user_id, "000000", t).await.is_err());
        }
        // The right password does not clear the count of an enrolled user.
        assert!(login_password(&s, "jo", PW, t).await.is_ok());
        assert!(verify_second_factor(&s, &u.user_id, "999999", t).await.is_err());
        // Locked: the right code and an unused recovery code are refused, as is the password.
        assert!(
            verify_second_factor(&s, &u.user_id, &code_at(&secret, t), t)
                .await
                .is_err()
        );
        assert!(
            verify_second_factor(&s, &u.user_id, codes[0].expose(), t)
                .await
                .is_err()
        );
        assert!(login_password(&s, "jo", PW, t).await.is_err());
        // After the window a right code passes (the refusals above did not use it up).
        let later = t + Duration::seconds(31);
        assert!(
            verify_second_factor(&s, &u.user_id, codes[0].expose(), later)
                .await
                .is_ok()
        );
        assert_eq!(s.get_user(&u.user_id).await.unwrap().unwrap().failed_logins, 0);
    }

    #[tokio::test]
    async fn enrollment_needs_the_right_code_and_reset_starts_over() {
        let (_d, s) = store().await;
        let u = user(&s, "kim", Role::Auditor).await;
        assert!(matches!(
            finish_totp_enrollment(&s, &u.user_id, "123456", T0).await,
            Err(UserError::NoPendingEnrollment)
        ));
        let e = start_totp_enrollment(&s, &u.user_id).await.unwrap();
        let secret = data_encoding::BASE32_NOPAD
            .decode(e.secret_base32.expose().as_bytes())
            .unwrap();
        let wrong = totp::code(&secret, totp::step_at(T0) + 5).unwrap();
        assert!(matches!(
            finish_totp_enrollment(&s, &u.user_id, wrong.expose(), T0).await,
            Err(UserError::WrongCode)
        ));
        assert!(!get_user(&s, &u.user_id).await.unwrap().unwrap().mfa_enrolled);
        let right = code_at(&secret, T0);
        let codes = finish_totp_enrollment(&s, &u.user_id, &right, T0).await.unwrap();
        assert!(matches!(
            start_totp_enrollment(&s, &u.user_id).await,
            Err(UserError::AlreadyEnrolled)
        ));
        assert_eq!(reset_mfa(&s, "kim").await.unwrap(), u.user_id);
        assert!(!get_user(&s, &u.user_id).await.unwrap().unwrap().mfa_enrolled);
        // Old factors are gone.
        assert!(
            verify_second_factor(&s, &u.user_id, codes[0].expose(), T0)
                .await
                .is_err()
        );
        let t = T0 + Duration::seconds(90);
        assert!(
            verify_second_factor(&s, &u.user_id, &code_at(&secret, t), t)
                .await
                .is_err()
        );
        let (fresh, _) = enroll(&s, &u.user_id, t).await;
        assert_ne!(fresh, secret);
        assert!(matches!(reset_mfa(&s, "nobody").await, Err(UserError::NotFound)));
    }
}
