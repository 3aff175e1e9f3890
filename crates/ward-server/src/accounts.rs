//! What the sign-in pages need from users (ward-auth `users`), clients and authorization
//! codes (ward-auth `codes`), in the shapes the pages use. One place to adapt when those
//! interfaces change.

#![allow(dead_code, reason = "stubs until the users and codes interfaces are merged")]

use time::OffsetDateTime;
use ward_store::{ClientRecord, Store};

pub use crate::authorize::LaunchContext;

/// The signed-in person as the pages see them.
#[derive(Clone, Debug)]
pub struct Person {
    pub user_id: String,
    pub username: String,
    pub role: String,
    /// `Practitioner/ID` or `Patient/ID`.
    pub fhir_user: Option<String>,
    pub must_change_password: bool,
    pub mfa_enrolled: bool,
    pub mfa_required: bool,
}

impl Person {
    /// The patient this person is, when their `fhirUser` is a Patient.
    pub fn own_patient(&self) -> Option<&str> {
        self.fhir_user.as_deref().and_then(|f| f.strip_prefix("Patient/"))
    }

    /// Whether this person may choose a patient in the picker (staff roles that see many
    /// patients). A patient gets their own record; other roles get no patient context.
    pub fn may_pick_patient(&self) -> bool {
        matches!(self.role.as_str(), "admin" | "clinician" | "nurse" | "front-desk")
    }
}

/// Why a step failed, as much as the page may say.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Wrong credentials, locked, disabled, unknown: one answer for all.
    #[error("refused")]
    Refused,
    /// A new password the rules refuse; the text is shown to the person.
    #[error("{0}")]
    Unacceptable(String),
    #[error("internal error")]
    Internal,
}

pub struct Enrollment {
    pub secret_base32: zeroize::Zeroizing<String>,
    pub qr_svg: String,
}

/// What an authorization code stands for.
pub struct Grant {
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub auth_time: i64,
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
}

pub fn redirect_uris(_client: &ClientRecord) -> Vec<String> {
    Vec::new()
}

pub async fn login(
    _store: &Store,
    _username: &str,
    _password: &str,
    _now: OffsetDateTime,
) -> Result<Person, AccountError> {
    Err(AccountError::Refused)
}

pub async fn get(_store: &Store, _user_id: &str) -> Result<Option<Person>, AccountError> {
    Ok(None)
}

pub async fn change_password(
    _store: &Store,
    _user_id: &str,
    _current: &str,
    _new: &str,
) -> Result<(), AccountError> {
    Err(AccountError::Internal)
}

pub async fn start_enrollment(_store: &Store, _user_id: &str) -> Result<Enrollment, AccountError> {
    Err(AccountError::Internal)
}

pub async fn finish_enrollment(
    _store: &Store,
    _user_id: &str,
    _code: &str,
    _now: OffsetDateTime,
) -> Result<Vec<zeroize::Zeroizing<String>>, AccountError> {
    Err(AccountError::Refused)
}

/// A TOTP or recovery code; the `amr` value it adds.
pub async fn second_factor(
    _store: &Store,
    _user_id: &str,
    _code: &str,
    _now: OffsetDateTime,
) -> Result<&'static str, AccountError> {
    Err(AccountError::Refused)
}

pub async fn take_launch(
    _store: &Store,
    _launch: &str,
    _client_id: &str,
    _now: OffsetDateTime,
) -> Result<LaunchContext, AccountError> {
    Err(AccountError::Refused)
}

pub async fn issue_code(_store: &Store, _grant: Grant, _now: OffsetDateTime) -> Result<String, AccountError> {
    Err(AccountError::Internal)
}
