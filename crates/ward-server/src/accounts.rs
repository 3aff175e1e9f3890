//! What the sign-in pages need from users (ward-auth `users`), clients and authorization
//! codes (ward-auth `codes`), in the shapes the pages use. One place to adapt when those
//! interfaces change.

use time::OffsetDateTime;
use ward_auth::users::{
    self, LoginFailure, PasswordError, RefusalReason, SecondFactor, UserError, UserIdentity,
};
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
    /// Wrong credentials, locked, disabled, unknown: one answer for all. `audit` says which,
    /// for the audit trail only; `user_id` when the account is known.
    #[error("refused")]
    Refused {
        audit: &'static str,
        user_id: Option<String>,
    },
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

/// The redirect URIs the client registered; an authorization request must name one exactly.
pub fn redirect_uris(client: &ClientRecord) -> &[String] {
    &client.redirect_uris
}

impl From<UserIdentity> for Person {
    fn from(u: UserIdentity) -> Person {
        Person {
            user_id: u.user_id,
            username: u.username,
            role: u.role.as_str().to_owned(),
            fhir_user: u.fhir_user,
            must_change_password: u.must_change_password,
            mfa_enrolled: u.mfa_enrolled,
            mfa_required: u.mfa_required,
        }
    }
}

fn refused(failure: LoginFailure, what: &'static str) -> AccountError {
    match failure {
        LoginFailure::Refused(r) => {
            let audit = match (what, r.reason, r.locked_until.is_some()) {
                (_, _, true) => "lockout",
                (_, RefusalReason::Locked, _) => "locked",
                (_, RefusalReason::Disabled, _) => "disabled-user",
                (_, RefusalReason::UnknownUser, _) => "unknown-user",
                ("login", _, _) => "wrong-password",
                _ => "wrong-code",
            };
            AccountError::Refused {
                audit,
                user_id: r.user_id,
            }
        }
        LoginFailure::Unavailable(e) => {
            tracing::error!(error = %e, "user store failed");
            AccountError::Internal
        }
    }
}

fn internal(e: impl std::fmt::Display) -> AccountError {
    tracing::error!(error = %e, "user store failed");
    AccountError::Internal
}

pub async fn login(
    store: &Store,
    username: &str,
    password: &str,
    now: OffsetDateTime,
) -> Result<Person, AccountError> {
    users::login_password_detailed(store, username, password, now)
        .await
        .map(Person::from)
        .map_err(|f| refused(f, "login"))
}

pub async fn get(store: &Store, user_id: &str) -> Result<Option<Person>, AccountError> {
    users::get_user(store, user_id)
        .await
        .map(|u| u.map(Person::from))
        .map_err(internal)
}

pub async fn change_password(
    store: &Store,
    user_id: &str,
    current: &str,
    new: &str,
    now: OffsetDateTime,
) -> Result<(), AccountError> {
    match users::change_password_at(store, user_id, current, new, now).await {
        Ok(()) => Ok(()),
        Err(PasswordError::Rule(rule)) => Err(AccountError::Unacceptable(rule.to_string())),
        Err(PasswordError::Refused) => Err(AccountError::Refused {
            audit: "wrong-password",
            user_id: Some(user_id.to_owned()),
        }),
        Err(PasswordError::Unavailable(e)) => Err(internal(e)),
    }
}

pub async fn start_enrollment(store: &Store, user_id: &str) -> Result<Enrollment, AccountError> {
    let e = users::start_totp_enrollment(store, user_id)
        .await
        .map_err(internal)?;
    Ok(Enrollment {
        secret_base32: zeroize::Zeroizing::new(e.secret_base32.expose().to_owned()),
        qr_svg: e.qr_svg,
    })
}

pub async fn finish_enrollment(
    store: &Store,
    user_id: &str,
    code: &str,
    now: OffsetDateTime,
) -> Result<Vec<zeroize::Zeroizing<String>>, AccountError> {
    match users::finish_totp_enrollment(store, user_id, code, now).await {
        Ok(codes) => Ok(codes
            .iter()
            .map(|c| zeroize::Zeroizing::new(c.expose().to_owned()))
            .collect()),
        Err(UserError::WrongCode | UserError::NoPendingEnrollment | UserError::AlreadyEnrolled) => {
            Err(AccountError::Refused {
                audit: "wrong-code",
                user_id: Some(user_id.to_owned()),
            })
        }
        Err(e) => Err(internal(e)),
    }
}

/// A TOTP or recovery code; the `amr` value it adds.
pub async fn second_factor(
    store: &Store,
    user_id: &str,
    code: &str,
    now: OffsetDateTime,
) -> Result<&'static str, AccountError> {
    users::verify_second_factor_detailed(store, user_id, code, now)
        .await
        .map(|f| match f {
            SecondFactor::Totp | SecondFactor::RecoveryCode => "otp",
        })
        .map_err(|f| refused(f, "mfa"))
}

/// Takes an EHR launch (single use) for `client_id`.
pub async fn take_launch(
    store: &Store,
    launch: &str,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<LaunchContext, AccountError> {
    match ward_auth::take_launch(store, launch, client_id, now).await {
        Ok(ctx) => Ok(LaunchContext {
            user_id: Some(ctx.user_id),
            patient: Some(ctx.patient),
            encounter: ctx.encounter,
        }),
        Err(ward_auth::OAuthError::ServerError) => Err(AccountError::Internal),
        Err(_) => Err(AccountError::Refused {
            audit: "invalid-launch",
            user_id: None,
        }),
    }
}

pub async fn issue_code(store: &Store, g: Grant, now: OffsetDateTime) -> Result<String, AccountError> {
    let grant = ward_auth::CodeGrant {
        client_id: g.client_id,
        user_id: g.user_id,
        redirect_uri: g.redirect_uri,
        scope: g.scope,
        code_challenge: g.code_challenge,
        nonce: g.nonce,
        patient: g.patient,
        encounter: g.encounter,
        auth_time: g.auth_time,
        amr: g.amr,
        acr: g.acr,
        need_patient_banner: g.need_patient_banner,
        smart_style_url: g.smart_style_url,
    };
    ward_auth::issue_code(store, grant, now).await.map_err(|e| {
        tracing::error!(error = e.code(), "code not issued");
        AccountError::Internal
    })
}
