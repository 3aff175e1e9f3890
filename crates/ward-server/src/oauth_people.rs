//! The OAuth endpoints for people (issue 10): the `authorization_code` and `refresh_token`
//! grants of the token endpoint, `userinfo`, introspection (RFC 7662), revocation (RFC 7009)
//! and the SMART style sheet. The rules live in `ward_auth::people`; this is HTTP.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use ward_auth::OAuthError;
use ward_auth::people::{Grants, Refusal};
use ward_oauth::BasicCredentials;
use ward_oauth::people::TokenFormRequest;

use crate::audit::{AuditContext, OutcomeCode};
use crate::oauth::{first_busy_this_second, limited, oauth_error, try_later};
use crate::ratelimit::ip_key;
use crate::serve::ClientAddr;
use crate::state::AppState;

/// Introspection and revocation requests are small too.
const MAX_FORM: usize = 16 * 1024;

/// The grants as of now (the state's clock).
fn grants(st: &AppState) -> Grants<'_> {
    Grants {
        store: &st.store,
        tokens: &st.tokens,
        revocations: &st.revocations,
        policy: st.config.auth.refresh_policy(),
        fhir_base: &st.fhir_base,
        now: st.clock.now(),
    }
}

/// Where Ward serves its SMART style sheet: the `smart_style_url` an EHR launch hands out.
pub fn smart_style_url(public_url: &str) -> String {
    format!("{public_url}/oauth2/smart-style.json")
}

fn no_cache(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The error of a failed client authentication (503 when the secret checks are busy).
fn client_refused(e: &OAuthError, basic_used: bool) -> Response {
    match e {
        OAuthError::TemporarilyUnavailable => {
            try_later(StatusCode::SERVICE_UNAVAILABLE, 1, first_busy_this_second())
        }
        e => oauth_error(e, basic_used),
    }
}

/// Charges the per-(client, IP) bucket of the token endpoint for a claimed client id.
fn client_limited(
    st: &AppState,
    client_id: Option<&str>,
    peer_ip: Option<std::net::IpAddr>,
) -> Option<Response> {
    let id = client_id.filter(|id| ward_auth::is_plausible_client_id(id))?;
    limited(st.token_client_limits.check(&(id.to_owned(), peer_ip)))
}

/// `grant_type=authorization_code` or `refresh_token` (called by the token endpoint once
/// the headers and body are read).
pub(crate) async fn user_token(
    st: &AppState,
    audit: &AuditContext,
    basic: Option<BasicCredentials>,
    body: &[u8],
    basic_used: bool,
    peer_ip: Option<std::net::IpAddr>,
) -> Response {
    let req = match ward_oauth::people::parse_user_grant(basic, body) {
        Ok(r) => r,
        Err(e) => return oauth_error(&e, basic_used),
    };
    let claimed = req.client.claimed_id().map(str::to_owned);
    if let Some(id) = &claimed {
        audit.set_claimed_client(id);
    }
    if let Some(resp) = client_limited(st, claimed.as_deref(), peer_ip) {
        return resp;
    }
    let client =
        match ward_auth::client_auth::authenticate(&st.store, &st.secrets, &st.assertions, req.client, true)
            .await
        {
            Ok(c) => c,
            Err(e) => return client_refused(&e, basic_used),
        };
    match grants(st).exchange(&client, req.grant).await {
        Ok(tokens) => {
            audit.set_actor(&client.client_id, Some(&tokens.user_id), &tokens.scope);
            no_cache(Json(tokens.to_json()).into_response())
        }
        Err(Refusal { error, replay }) => {
            tracing::info!(error = error.code(), "token request refused");
            let mut resp = oauth_error(&error, basic_used);
            if let Some(code) = replay {
                resp.extensions_mut().insert(OutcomeCode(code));
            }
            resp
        }
    }
}

/// Reads an introspection or revocation form: rate limits, headers, body, parameters.
async fn read_token_form(
    st: &AppState,
    audit: &AuditContext,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(TokenFormRequest, bool), Response> {
    let peer_ip = peer.map(|axum::Extension(ClientAddr(addr))| ip_key(addr.ip()));
    if let Some(ip) = peer_ip
        && let Some(resp) = limited(st.token_ip_limits.check(&ip))
    {
        return Err(resp);
    }
    let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    let basic_used = authorization.is_some();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let basic =
        ward_oauth::check_headers(content_type, authorization).map_err(|e| oauth_error(&e, basic_used))?;
    let bytes = crate::framing::read_body(body, MAX_FORM).await.map_err(|_| {
        oauth_error(
            &OAuthError::InvalidRequest("request too large or malformed"),
            basic_used,
        )
    })?;
    let req = ward_oauth::people::parse_token_form(basic, &bytes).map_err(|e| oauth_error(&e, basic_used))?;
    let claimed = req.client.claimed_id().map(str::to_owned);
    if let Some(id) = &claimed {
        audit.set_claimed_client(id);
    }
    if let Some(resp) = client_limited(st, claimed.as_deref(), peer_ip) {
        return Err(resp);
    }
    Ok((req, basic_used))
}

/// The form of an introspection or revocation request and the client it authenticates
/// (`allow_public`: a public client may name itself by `client_id`), recorded as the actor.
async fn token_form_client(
    st: &AppState,
    audit: &AuditContext,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: &HeaderMap,
    body: Body,
    allow_public: bool,
) -> Result<(ward_store::ClientRecord, zeroize::Zeroizing<String>, bool), Response> {
    let (req, basic_used) = read_token_form(st, audit, peer, headers, body).await?;
    let client = ward_auth::client_auth::authenticate(
        &st.store,
        &st.secrets,
        &st.assertions,
        req.client,
        allow_public,
    )
    .await
    .map_err(|e| client_refused(&e, basic_used))?;
    audit.set_actor(&client.client_id, None, "");
    Ok((client, req.token, basic_used))
}

/// RFC 7662. The caller authenticates as a confidential client and learns about its own
/// tokens only; anything not live is `{"active": false}`.
pub async fn introspect(
    State(st): State<AppState>,
    audit: AuditContext,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (client, token, basic_used) = match token_form_client(&st, &audit, peer, &headers, body, false).await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match grants(&st).introspect(&client, &token).await {
        Ok(body) => no_cache(Json(body).into_response()),
        Err(e) => oauth_error(&e, basic_used),
    }
}

/// RFC 7009. Public clients name themselves by `client_id`; a client revokes only its own
/// tokens, and every token, known or not, gets 200.
pub async fn revoke(
    State(st): State<AppState>,
    audit: AuditContext,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (client, token, basic_used) = match token_form_client(&st, &audit, peer, &headers, body, true).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match grants(&st).revoke(&client, &token).await {
        Ok(()) => no_cache(StatusCode::OK.into_response()),
        Err(e) => oauth_error(&e, basic_used),
    }
}

/// An RFC 6750 refusal of a bearer token at `userinfo`.
fn bearer_refusal(status: StatusCode, challenge: &'static str, code: &'static str) -> Response {
    let mut resp = (status, Json(json!({ "error": code }))).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp.extensions_mut().insert(OutcomeCode(code));
    no_cache(resp)
}

/// OIDC Core §5.3 (GET and POST): the signed-in user behind a live access token with the
/// `openid` scope.
pub async fn userinfo(State(st): State<AppState>, audit: AuditContext, headers: HeaderMap) -> Response {
    let invalid = || {
        bearer_refusal(
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="ward", error="invalid_token""#,
            "invalid_token",
        )
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return bearer_refusal(
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="ward""#,
            "invalid_request",
        );
    };
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
    else {
        return invalid();
    };
    let Ok(claims) = st.tokens.verify(token) else {
        return invalid();
    };
    if st.revocations.is_revoked(&claims) {
        return invalid();
    }
    audit.set_actor(&claims.client_id, Some(&claims.sub), &claims.scope);
    let scopes = ward_auth::ScopeSet::parse(&claims.scope).unwrap_or_default();
    // A client's own token (no login behind it) has no user to describe.
    if !scopes.has("openid") || claims.fam.is_none() {
        return bearer_refusal(
            StatusCode::FORBIDDEN,
            r#"Bearer realm="ward", error="insufficient_scope", scope="openid""#,
            "insufficient_scope",
        );
    }
    let user = match ward_auth::people::user_facts(&st.store, &claims.sub).await {
        Ok(Some(u)) => u,
        Ok(None) => return invalid(),
        Err(e) => return oauth_error(&e, false),
    };
    let mut body = json!({ "sub": claims.sub });
    let fhir_user = user
        .fhir_user
        .as_deref()
        .map(|f| ward_auth::people::fhir_user_url(&st.fhir_base, f));
    if let Some(f) = fhir_user
        .as_ref()
        .filter(|_| scopes.has("fhirUser") || scopes.has("profile"))
    {
        crate::set_field(&mut body, "fhirUser", json!(f));
    }
    if scopes.has("profile") {
        crate::set_field(&mut body, "preferred_username", json!(user.username));
        if let Some(f) = fhir_user {
            crate::set_field(&mut body, "profile", json!(f));
        }
    }
    no_cache(Json(body).into_response())
}

/// The SMART style sheet an EHR launch points apps to (`smart_style_url`): colours, fonts
/// and sizes for an app to look at home beside Ward's own pages.
pub async fn smart_style() -> Response {
    Json(json!({
        "color_background": "#f7f7f5",
        "color_error": "#b00020",
        "color_highlight": "#1f5f8b",
        "color_modal_backdrop": "#00000066",
        "color_success": "#2e7d32",
        "color_text": "#1b1b1b",
        "dim_border_radius": "4px",
        "dim_font_size": "14px",
        "dim_spacing_size": "16px",
        "font_family_body": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        "font_family_heading": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    }))
    .into_response()
}
