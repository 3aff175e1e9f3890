//! OAuth 2.0 authorization server pieces and access-token verification (SPEC AC-1, AC-2, AC-4).
//!
//! Nothing here knows about HTTP: the server crate maps [`OAuthError`] and [`TokenError`]
//! to responses. Client secrets are keyed hashes (argon2id for passwords); access tokens are ES256 JWTs.

// Token requests and bearer tokens are parsed here: no panic and no overflow on client input
// (issue 15). Tests may unwrap.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod client_auth;
pub mod codes;
pub mod grant;
pub mod password;
pub mod people;
pub mod revocation;
pub mod scope;
pub mod secret;
pub mod token;
pub mod totp;
pub mod users;

pub use codes::{CodeGrant, LaunchContext, issue_code, take_launch};
pub use grant::{ClientCredentialsRequest, OAuthError, client_credentials, is_plausible_client_id};
pub use revocation::RevocationList;
pub use scope::{Context, Interaction, ScopeSet};
pub use secret::{SecretVerifier, Verdict};
pub use token::{Claims, IssuedToken, TokenError, TokenService, UserClaims};
pub use users::{
    LoginError, PasswordError, Role, SecondFactor, TotpEnrollment, UserError, UserIdentity, change_password,
    finish_totp_enrollment, get_user, login_password, start_totp_enrollment, verify_second_factor,
};
pub use ward_crypto::SecretString;
