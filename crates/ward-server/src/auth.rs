//! Authentication and authorization as types (SPEC §2 steps 4-7, AC-1, AC-4).
//!
//! A handler gets an [`Authenticated`] only from a verified bearer token of an active
//! client, and an [`Authorized`] only from [`authorize`], which checks the token's scopes
//! for the interaction and resource type. The FHIR operations in `fhir.rs` take an
//! `&Authorized`, so a handler cannot reach data without both steps.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use ward_auth::{Claims, Context, Interaction, ScopeSet};

use crate::audit::AuditContext;
use crate::error::ApiError;
use crate::state::AppState;

/// A caller whose access token verified and was not revoked.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub claims: Claims,
    pub scopes: ScopeSet,
    pub audit: AuditContext,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let audit = AuditContext::from_request_parts(parts, state).await?;
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(false));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| ApiError::unauthorized(false))?;
        let claims = state.tokens.verify(token).map_err(|e| {
            tracing::info!(reason = %e, "access token refused");
            ApiError::unauthorized(true)
        })?;
        // A disabled client or user, a revoked family or token id (on any node, within a
        // second: see `ward_auth::revocation`).
        if state.revocations.is_revoked(&claims) {
            tracing::info!("revoked access token refused");
            return Err(ApiError::unauthorized(true));
        }
        audit.set_actor(&claims.client_id, None, &claims.scope);
        let scopes = ScopeSet::parse(&claims.scope).map_err(|_| ApiError::unauthorized(true))?;
        Ok(Authenticated {
            claims,
            scopes,
            audit,
        })
    }
}

/// Proof that the caller may perform `interaction` on `rtype`. Only [`authorize`] makes one.
#[derive(Debug)]
pub struct Authorized {
    rtype: String,
    interaction: Interaction,
    audit: AuditContext,
    client_id: String,
}

impl Authorized {
    pub fn rtype(&self) -> &str {
        &self.rtype
    }

    pub fn interaction(&self) -> Interaction {
        self.interaction
    }

    /// The audit record of the request this authorization belongs to.
    pub fn audit(&self) -> &AuditContext {
        &self.audit
    }

    /// The authenticated client (paging cursors work only for it).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

/// Scope check. Only `system/` scopes are honoured until user and patient contexts exist
/// (a `patient/` scope without a patient context must not open every patient's data). A `*`
/// scope does not reach `AuditEvent` (see `ward_auth::scope::EXPLICIT_ONLY`).
pub fn authorize(
    auth: &Authenticated,
    rtype: &str,
    interaction: Interaction,
) -> Result<Authorized, ApiError> {
    auth.audit.set_resource(rtype, None, None);
    if auth.scopes.allows(Context::System, rtype, interaction) {
        Ok(Authorized {
            rtype: rtype.to_owned(),
            interaction,
            audit: auth.audit.clone(),
            client_id: auth.claims.client_id.clone(),
        })
    } else {
        Err(ApiError::forbidden())
    }
}

/// Whether the caller could be authorized for some Bundle entry: checked before parsing a
/// Bundle of up to `max_body_bytes`, whose entries are authorized one by one. Every entry
/// needs create, read, update or delete (bundles have no search entries; `ifNoneExist`
/// searches as part of a create), so a search-only token is refused here.
pub fn authorize_any(auth: &Authenticated) -> Result<(), ApiError> {
    use Interaction::{Create, Delete, Read, Update};
    if auth.scopes.allows_any_type_except(
        Context::System,
        ward_fhir::types::SERVER_MADE,
        &[Create, Read, Update, Delete],
    ) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}
