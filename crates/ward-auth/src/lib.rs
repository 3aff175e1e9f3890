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

pub mod assertion;
pub mod client_keys;
pub mod grant;
pub mod registration;
pub mod revocation;
pub mod scope;
pub mod secret;
pub mod token;

pub use assertion::AssertionVerifier;
pub use grant::{ClientCredentialsRequest, OAuthError, client_credentials, is_plausible_client_id};
pub use revocation::RevocationList;
pub use scope::{Context, Interaction, ScopeSet};
pub use secret::{SecretVerifier, Verdict};
pub use token::{Claims, IssuedToken, TokenError, TokenService};
