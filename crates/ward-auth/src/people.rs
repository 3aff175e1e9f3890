//! Tokens for people (SPEC AC-2, AC-4, AC-6; issue 10): the `authorization_code` grant with
//! PKCE S256, refresh tokens in families with rotation and reuse detection, OIDC id_tokens,
//! introspection (RFC 7662) and revocation (RFC 7009).
//!
//! A code exchange starts a *family*: its id is the `fam` claim of every access token issued
//! from it, and its refresh tokens belong to it. Presenting a used code or a used refresh
//! token revokes the family: its refresh tokens here, its access tokens through the
//! revocation list (`revoke_family`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use ward_oauth::people::UserGrant;
use ward_store::{ClientRecord, FamilyRow, RefreshRow, RevokedKind, Store, Take};
use zeroize::Zeroizing;

use crate::codes::{TakenCode, pkce_matches, take_code};
use crate::grant::OAuthError;
use crate::revocation::RevocationList;
use crate::scope::ScopeSet;
use crate::token::{Claims, MAX_LIFETIME, TokenService, UserClaims};

/// Hash domain of stored refresh tokens.
const REFRESH_DOMAIN: &str = "oauth-refresh-v1";

/// Refresh-token lifetimes (seconds), from `[auth]` in ward.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// A refresh token unused this long expires (each rotation starts a new one).
    pub idle_secs: i64,
    /// No `offline_access` family outlives this, counted from the code exchange.
    pub max_secs: i64,
    /// No `online_access` family outlives this (the browser session's absolute lifetime).
    pub online_max_secs: i64,
}

/// What one call of the people grants needs.
pub struct Grants<'a> {
    pub store: &'a Store,
    pub tokens: &'a TokenService,
    /// This node's view of the revocations; refreshed at once after a revocation made here.
    pub revocations: &'a RevocationList,
    pub policy: RefreshPolicy,
    /// The FHIR base URL: `fhirUser` in id_tokens, userinfo and introspection is absolute.
    pub fhir_base: &'a str,
    pub now: OffsetDateTime,
}

/// The part of a code grant a family keeps for its refreshes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FamilyGrant {
    /// The scope granted at the exchange: no refresh gets more.
    scope: String,
    patient: Option<String>,
    encounter: Option<String>,
    auth_time: i64,
    amr: Vec<String>,
    acr: Option<String>,
    need_patient_banner: bool,
    smart_style_url: Option<String>,
    /// Whether the family has refresh tokens at all (`offline_access` or `online_access`).
    refreshable: bool,
}

/// A successful token response for a user.
#[derive(Debug)]
pub struct UserTokens {
    pub user_id: String,
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
    pub refresh_token: Option<Zeroizing<String>>,
    pub id_token: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
}

impl UserTokens {
    /// The JSON body of the token response (RFC 6749 §5.1 plus SMART's launch context).
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        });
        if let Some(map) = body.as_object_mut() {
            let mut put = |k: &str, v: Value| {
                map.insert(k.to_owned(), v);
            };
            if let Some(r) = &self.refresh_token {
                put("refresh_token", json!(r.as_str()));
            }
            if let Some(t) = &self.id_token {
                put("id_token", json!(t));
            }
            if let Some(p) = &self.patient {
                put("patient", json!(p));
            }
            if let Some(e) = &self.encounter {
                put("encounter", json!(e));
            }
            if self.patient.is_some() || self.need_patient_banner {
                put("need_patient_banner", json!(self.need_patient_banner));
            }
            if let Some(u) = &self.smart_style_url {
                put("smart_style_url", json!(u));
            }
        }
        body
    }
}

/// Why a grant failed, with what the audit record should say about it.
#[derive(Debug)]
pub struct Refusal {
    pub error: OAuthError,
    /// Set for a replayed code or a reused refresh token (the family was revoked).
    pub replay: Option<&'static str>,
}

impl From<OAuthError> for Refusal {
    fn from(error: OAuthError) -> Self {
        Refusal { error, replay: None }
    }
}

fn store_error(e: ward_store::StoreError) -> OAuthError {
    tracing::error!(error = %e, "grant store failed");
    OAuthError::ServerError
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// The facts about a user a token needs; `None` when the user is unknown or disabled.
#[derive(Debug, Clone)]
pub struct UserFacts {
    pub username: String,
    /// `Practitioner/ID` or `Patient/ID`.
    pub fhir_user: Option<String>,
}

pub async fn user_facts(store: &Store, user_id: &str) -> Result<Option<UserFacts>, OAuthError> {
    let user = crate::users::get_user(store, user_id).await.map_err(|e| {
        tracing::error!(error = %e, "user lookup failed");
        OAuthError::ServerError
    })?;
    Ok(user.map(|u| UserFacts {
        username: u.username,
        fhir_user: u.fhir_user,
    }))
}

/// `Practitioner/ID` → `{fhir_base}/Practitioner/ID` (SMART: `fhirUser` is a URL).
pub fn fhir_user_url(fhir_base: &str, fhir_user: &str) -> String {
    format!("{}/{fhir_user}", fhir_base.trim_end_matches('/'))
}

/// Seconds an access token of a family may outlive the family's last refresh.
fn access_lifetime_secs() -> i64 {
    i64::try_from(MAX_LIFETIME.as_secs()).unwrap_or(i64::MAX)
}

impl Grants<'_> {
    /// Revokes a family: its refresh tokens stop working here, and its access tokens (by
    /// `fam`) through the revocation list every node polls.
    pub async fn revoke_family(&self, family: &str) -> Result<(), OAuthError> {
        let found = self.store.get_family(family).await.map_err(store_error)?;
        self.store
            .revoke_family_grants(family)
            .await
            .map_err(store_error)?;
        // No access token of the family outlives its absolute end by more than a lifetime.
        let until = found.map(|f| f.expires_at.saturating_add(access_lifetime_secs()));
        self.store
            .revoke_until(RevokedKind::Family, family, until)
            .await
            .map_err(store_error)?;
        self.refresh_revocations().await;
        Ok(())
    }

    /// Revokes one access token by its `jti` (until its `exp`).
    async fn revoke_access_token(&self, claims: &Claims) -> Result<(), OAuthError> {
        let until = i64::try_from(claims.exp).ok();
        self.store
            .revoke_until(RevokedKind::TokenId, &claims.jti, until)
            .await
            .map_err(store_error)?;
        self.refresh_revocations().await;
        Ok(())
    }

    /// This node sees its own revocations at once (others within the poll interval).
    async fn refresh_revocations(&self) {
        if let Err(e) = self.revocations.refresh(self.store).await {
            tracing::warn!(error = %e, "revocation list refresh failed");
        }
    }

    /// A token request with the `authorization_code` or `refresh_token` grant, from an
    /// authenticated `client`.
    pub async fn exchange(&self, client: &ClientRecord, grant: UserGrant) -> Result<UserTokens, Refusal> {
        match grant {
            UserGrant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                self.authorization_code(
                    client,
                    &code,
                    redirect_uri.as_deref(),
                    code_verifier.as_deref().map(|v| v.as_str()),
                )
                .await
            }
            UserGrant::RefreshToken { refresh_token, scope } => {
                self.refresh(client, &refresh_token, scope.as_deref()).await
            }
        }
    }

    async fn authorization_code(
        &self,
        client: &ClientRecord,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<UserTokens, Refusal> {
        let (code_hash, grant) = match take_code(self.store, code, &client.client_id, self.now).await? {
            TakenCode::Fresh { hash, grant } => (hash, grant),
            TakenCode::Replayed { family } => {
                // RFC 6749 §4.1.2: a code used twice was stolen or leaked; what it produced goes.
                if let Some(f) = family {
                    self.revoke_family(&f).await?;
                }
                tracing::warn!("authorization code replayed; its tokens are revoked");
                return Err(Refusal {
                    error: OAuthError::InvalidGrant,
                    replay: Some("code-replay"),
                });
            }
        };
        if grant.client_id != client.client_id {
            return Err(OAuthError::InvalidGrant.into());
        }
        if redirect_uri != Some(grant.redirect_uri.as_str()) {
            return Err(OAuthError::InvalidGrant.into());
        }
        let Some(verifier) = verifier else {
            return Err(OAuthError::InvalidRequest("code_verifier is required").into());
        };
        if !pkce_matches(verifier, &grant.code_challenge) {
            return Err(OAuthError::InvalidGrant.into());
        }
        let Some(user) = user_facts(self.store, &grant.user_id).await? else {
            return Err(OAuthError::InvalidGrant.into());
        };
        // Never more than the client is registered for, whatever the code says.
        let allowed = ScopeSet::parse(&client.scopes).map_err(|_| OAuthError::ServerError)?;
        let scopes = ScopeSet::parse(&grant.scope)
            .map_err(|_| OAuthError::InvalidScope)?
            .intersect(&allowed);
        if scopes.is_empty() {
            return Err(OAuthError::InvalidScope.into());
        }
        let online = !scopes.has("offline_access") && scopes.has("online_access");
        let refreshable = scopes.has("offline_access") || scopes.has("online_access");
        // A patient user's own record is the patient context when none was chosen.
        let patient = grant.patient.clone().or_else(|| {
            user.fhir_user
                .as_deref()
                .and_then(|f| f.strip_prefix("Patient/"))
                .filter(|_| scopes.has("launch/patient"))
                .map(str::to_owned)
        });
        let fam = FamilyGrant {
            scope: scopes.to_string(),
            patient,
            encounter: grant.encounter.clone(),
            auth_time: grant.auth_time,
            amr: grant.amr.clone(),
            acr: grant.acr.clone(),
            need_patient_banner: grant.need_patient_banner,
            smart_style_url: grant.smart_style_url.clone(),
            refreshable,
        };
        let family = uuid::Uuid::new_v4().to_string();
        let max = if online {
            self.policy.online_max_secs
        } else {
            self.policy.max_secs
        };
        let row = FamilyRow {
            family: family.clone(),
            client_id: client.client_id.clone(),
            user_id: grant.user_id.clone(),
            grant_json: serde_json::to_string(&fam).map_err(|_| OAuthError::ServerError)?,
            created_at: unix(self.now),
            expires_at: unix(self.now).saturating_add(max),
            revoked: false,
        };
        self.store.insert_family(&row).await.map_err(store_error)?;
        // Recorded before any token leaves: a replay from now on finds the family.
        let first = self
            .store
            .set_code_family(&code_hash, &family)
            .await
            .map_err(store_error)?;
        if !first {
            // Replayed while this exchange ran: neither presentation gets tokens.
            self.revoke_family(&family).await?;
            return Err(Refusal {
                error: OAuthError::InvalidGrant,
                replay: Some("code-replay"),
            });
        }
        let refresh_token = if refreshable {
            Some(self.new_refresh_token(&row, &fam.scope).await?)
        } else {
            None
        };
        let mut tokens = self.tokens_for(&row, &fam, &user, &scopes, refresh_token)?;
        if scopes.has("openid") {
            tokens.id_token = Some(self.id_token(&row, &fam, &user, &scopes, grant.nonce.as_deref())?);
        }
        Ok(tokens)
    }

    async fn new_refresh_token(
        &self,
        family: &FamilyRow,
        scope: &str,
    ) -> Result<Zeroizing<String>, OAuthError> {
        let token = Zeroizing::new(ward_crypto::random_token(32));
        let hash = self.store.grant_tag(REFRESH_DOMAIN, &token);
        let idle_end = unix(self.now)
            .saturating_add(self.policy.idle_secs)
            .min(family.expires_at);
        self.store
            .insert_refresh(&hash, &family.family, scope, unix(self.now), idle_end)
            .await
            .map_err(store_error)?;
        Ok(token)
    }

    fn tokens_for(
        &self,
        family: &FamilyRow,
        fam: &FamilyGrant,
        user: &UserFacts,
        scopes: &ScopeSet,
        refresh_token: Option<Zeroizing<String>>,
    ) -> Result<UserTokens, OAuthError> {
        let scope = scopes.to_string();
        let issued = self
            .tokens
            .issue_with(
                &family.user_id,
                &family.client_id,
                &scope,
                UserClaims {
                    fhir_user: user.fhir_user.clone(),
                    patient: fam.patient.clone(),
                    encounter: fam.encounter.clone(),
                    fam: Some(family.family.clone()),
                    auth_time: Some(fam.auth_time),
                    amr: Some(fam.amr.clone()).filter(|a| !a.is_empty()),
                    acr: fam.acr.clone(),
                },
            )
            .map_err(|_| OAuthError::ServerError)?;
        Ok(UserTokens {
            user_id: family.user_id.clone(),
            access_token: issued.access_token,
            expires_in: issued.expires_in,
            scope,
            refresh_token,
            id_token: None,
            patient: fam.patient.clone(),
            encounter: fam.encounter.clone(),
            need_patient_banner: fam.need_patient_banner,
            smart_style_url: fam.smart_style_url.clone(),
        })
    }

    /// OIDC Core §2 claims; `fhirUser` (SMART) with the `fhirUser` scope.
    fn id_token(
        &self,
        family: &FamilyRow,
        fam: &FamilyGrant,
        user: &UserFacts,
        scopes: &ScopeSet,
        nonce: Option<&str>,
    ) -> Result<String, OAuthError> {
        let now = unix(self.now);
        let lifetime = i64::try_from(crate::token::MIN_LIFETIME.as_secs()).unwrap_or(300);
        let mut claims = json!({
            "iss": self.tokens.issuer(),
            "sub": family.user_id,
            "aud": family.client_id,
            "iat": now,
            "exp": now.saturating_add(lifetime),
            "auth_time": fam.auth_time,
        });
        if let Some(map) = claims.as_object_mut() {
            if let Some(n) = nonce {
                map.insert("nonce".into(), json!(n));
            }
            if !fam.amr.is_empty() {
                map.insert("amr".into(), json!(fam.amr));
            }
            if let Some(acr) = &fam.acr {
                map.insert("acr".into(), json!(acr));
            }
            if let Some(f) = user.fhir_user.as_deref().filter(|_| scopes.has("fhirUser")) {
                map.insert("fhirUser".into(), json!(fhir_user_url(self.fhir_base, f)));
            }
        }
        self.tokens
            .sign_id_token(&claims)
            .map_err(|_| OAuthError::ServerError)
    }

    async fn refresh(
        &self,
        client: &ClientRecord,
        token: &str,
        scope: Option<&str>,
    ) -> Result<UserTokens, Refusal> {
        if token.is_empty() || token.len() > 128 {
            return Err(OAuthError::InvalidGrant.into());
        }
        let hash = self.store.grant_tag(REFRESH_DOMAIN, token);
        // Another client's token is refused without using it up.
        let Some(found) = self.store.get_refresh(&hash).await.map_err(store_error)? else {
            return Err(OAuthError::InvalidGrant.into());
        };
        if found.family.client_id != client.client_id {
            return Err(OAuthError::InvalidGrant.into());
        }
        // RFC 6749 §6: a narrower scope is allowed, a wider one refused (before the token is
        // used up: a refused scope is no reason to lose the grant).
        let held = ScopeSet::parse(&found.scope).map_err(|_| OAuthError::ServerError)?;
        let scopes = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => held,
            Some(asked) => {
                let asked = ScopeSet::parse(asked).map_err(|_| OAuthError::InvalidScope)?;
                if asked.is_empty() || !asked.is_within(&held) {
                    return Err(OAuthError::InvalidScope.into());
                }
                asked
            }
        };
        let row = match self
            .store
            .take_refresh(&hash, unix(self.now))
            .await
            .map_err(store_error)?
        {
            Take::Fresh(row) => row,
            Take::Reused(family) => {
                if let Some(f) = family {
                    self.revoke_family(&f).await?;
                }
                tracing::warn!("refresh token reused; its family is revoked");
                return Err(Refusal {
                    error: OAuthError::InvalidGrant,
                    replay: Some("refresh-reuse"),
                });
            }
            Take::Unknown => return Err(OAuthError::InvalidGrant.into()),
        };
        if !self.is_live(&row) {
            return Err(OAuthError::InvalidGrant.into());
        }
        let Some(user) = user_facts(self.store, &row.family.user_id).await? else {
            self.revoke_family(&row.family.family).await?;
            return Err(OAuthError::InvalidGrant.into());
        };
        let fam: FamilyGrant =
            serde_json::from_str(&row.family.grant_json).map_err(|_| OAuthError::ServerError)?;
        // The new refresh token keeps the scope of the one it replaces (RFC 6749 §6).
        let next = self.new_refresh_token(&row.family, &row.scope).await?;
        Ok(self.tokens_for(&row.family, &fam, &user, &scopes, Some(next))?)
    }

    /// Unused, family not revoked, within idle and absolute lifetimes.
    fn is_live(&self, row: &RefreshRow) -> bool {
        let now = unix(self.now);
        !row.family.revoked && now < row.idle_expires_at && now < row.family.expires_at
    }

    /// RFC 7662 for a token of `client`: the claims of a live access or refresh token of
    /// this client, else `{"active": false}`. A client sees only its own tokens.
    pub async fn introspect(&self, client: &ClientRecord, token: &str) -> Result<Value, OAuthError> {
        let inactive = json!({ "active": false });
        if token.is_empty() || token.len() > 8192 {
            return Ok(inactive);
        }
        if token.contains('.') {
            let Ok(claims) = self.tokens.verify(token) else {
                return Ok(inactive);
            };
            if claims.client_id != client.client_id || self.revocations.is_revoked(&claims) {
                return Ok(inactive);
            }
            if claims.fam.is_some() && user_facts(self.store, &claims.sub).await?.is_none() {
                return Ok(inactive);
            }
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "scope": claims.scope,
                "client_id": claims.client_id,
                "sub": claims.sub,
                "exp": claims.exp,
                "iat": claims.iat,
                "iss": claims.iss,
                "aud": claims.aud,
            });
            self.add_context(&mut body, claims.patient, claims.encounter, claims.fhir_user);
            return Ok(body);
        }
        let hash = self.store.grant_tag(REFRESH_DOMAIN, token);
        let Some(row) = self.store.get_refresh(&hash).await.map_err(store_error)? else {
            return Ok(inactive);
        };
        if row.used || !self.is_live(&row) || row.family.client_id != client.client_id {
            return Ok(inactive);
        }
        let Some(user) = user_facts(self.store, &row.family.user_id).await? else {
            return Ok(inactive);
        };
        let fam: FamilyGrant =
            serde_json::from_str(&row.family.grant_json).map_err(|_| OAuthError::ServerError)?;
        let mut body = json!({
            "active": true,
            "token_type": "refresh_token",
            "scope": row.scope,
            "client_id": row.family.client_id,
            "sub": row.family.user_id,
            "exp": row.idle_expires_at.min(row.family.expires_at),
            "iat": row.issued_at,
            "iss": self.tokens.issuer(),
        });
        self.add_context(&mut body, fam.patient, fam.encounter, user.fhir_user);
        Ok(body)
    }

    fn add_context(
        &self,
        body: &mut Value,
        patient: Option<String>,
        encounter: Option<String>,
        fhir_user: Option<String>,
    ) {
        if let Some(map) = body.as_object_mut() {
            if let Some(p) = patient {
                map.insert("patient".into(), json!(p));
            }
            if let Some(e) = encounter {
                map.insert("encounter".into(), json!(e));
            }
            if let Some(f) = fhir_user {
                map.insert("fhirUser".into(), json!(fhir_user_url(self.fhir_base, &f)));
            }
        }
    }

    /// RFC 7009 for `client`: a refresh token revokes its family, an access token its `jti`.
    /// Another client's token, an unknown or an invalid one: nothing happens (the caller
    /// answers 200 all the same).
    pub async fn revoke(&self, client: &ClientRecord, token: &str) -> Result<(), OAuthError> {
        if token.is_empty() || token.len() > 8192 {
            return Ok(());
        }
        if token.contains('.') {
            if let Ok(claims) = self.tokens.verify(token)
                && claims.client_id == client.client_id
            {
                self.revoke_access_token(&claims).await?;
            }
            return Ok(());
        }
        let hash = self.store.grant_tag(REFRESH_DOMAIN, token);
        if let Some(row) = self.store.get_refresh(&hash).await.map_err(store_error)?
            && row.family.client_id == client.client_id
        {
            self.revoke_family(&row.family.family).await?;
        }
        Ok(())
    }
}
