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
//!   Second-factor failures count too, and a right password alone never clears the count of
//!   a user with TOTP (or guessing codes between password sign-ins would be free).
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

fn is_locked(r: &UserRecord, now: OffsetDateTime) -> bool {
    r.locked_until.is_some_and(|until| now < until)
}

/// A user id no row has: failure statements for unknown users run against it.
const NO_USER: &str = "00000000-0000-0000-0000-000000000000";

/// Counts a failure of `user_id` (or runs the same statement on no row), and locks the
/// account when the count reaches the threshold. Returns the lock's end if one started.
async fn count_failure(
    store: &Store,
    user_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, StoreError> {
    let failures = store.record_login_failure(user_id.unwrap_or(NO_USER)).await?;
    let (Some(user_id), Some(failures)) = (user_id, failures) else {
        return Ok(None);
    };
    let Some(lock) = lockout_duration(failures) else {
        return Ok(None);
    };
    let until = now.checked_add(lock).unwrap_or(now);
    store.lock_user_until(user_id, until).await?;
    tracing::warn!(user_id, failures, "user sign-in locked after repeated failures");
    Ok(Some(until))
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
    let phc = record
        .as_ref()
        .map_or_else(|| password::DUMMY_HASH.clone(), |r| r.password_hash.clone());
    // Bounded input: a longer "password" is checked as wrong, at the usual cost.
    let candidate = if password.len() <= password::MAX_PASSWORD_BYTES {
        password
    } else {
        ""
    };
    let matches = password::verify(phc, SecretString::new(candidate.to_owned())).await;
    let refuse = |reason, user_id: Option<&str>, locked_until| {
        LoginFailure::Refused(Refusal {
            reason,
            user_id: user_id.map(str::to_owned),
            locked_until,
        })
    };
    let Some(record) = record else {
        count_failure(store, None, now).await?;
        return Err(refuse(RefusalReason::UnknownUser, None, None));
    };
    let id = record.user_id.as_str();
    if record.disabled {
        count_failure(store, None, now).await?;
        return Err(refuse(RefusalReason::Disabled, Some(id), None));
    }
    if is_locked(&record, now) {
        // Not counted: attempts during the window neither extend it nor reach the password.
        count_failure(store, None, now).await?;
        return Err(refuse(RefusalReason::Locked, Some(id), None));
    }
    if !matches {
        let locked = count_failure(store, Some(id), now).await?;
        return Err(refuse(RefusalReason::WrongPassword, Some(id), locked));
    }
    if !record.totp_enrolled && (record.failed_logins > 0 || record.locked_until.is_some()) {
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
    let phc = record
        .as_ref()
        .map_or_else(|| password::DUMMY_HASH.clone(), |r| r.password_hash.clone());
    let current = if current.len() <= password::MAX_PASSWORD_BYTES {
        current
    } else {
        ""
    };
    let matches = password::verify(phc, SecretString::new(current.to_owned())).await;
    let Some(record) = record.filter(|r| !r.disabled && !is_locked(r, now)) else {
        return Err(PasswordError::Refused);
    };
    if !matches {
        count_failure(store, Some(&record.user_id), now)
            .await
            .map_err(PasswordError::Unavailable)?;
        return Err(PasswordError::Refused);
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
    if is_locked(&record, now) {
        return Err(refuse(RefusalReason::Locked, None));
    }
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
        None => {
            let locked = count_failure(store, Some(user_id), now).await?;
            Err(refuse(RefusalReason::WrongCode, locked))
        }
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
    // MERGE: revoke Subject(user_id) here
    Ok(user_id)
}

/// Removes a user's TOTP secret and recovery codes (lost device); the next sign-in enrolls
/// again. Returns the user id.
pub async fn reset_mfa(store: &Store, username: &str) -> Result<String, UserError> {
    let username = normalize_username(username)?;
    store.reset_user_mfa(&username).await?.ok_or(UserError::NotFound)
}
