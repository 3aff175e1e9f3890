//! OAuth 2.0 endpoints (SPEC AC-2): token (client_credentials with client_secret_basic or
//! client_secret_post), JWKS, and discovery metadata.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use ward_auth::OAuthError;

use crate::audit::{AuditContext, OutcomeCode, Unaudited};
use crate::ratelimit::{Decision, ip_key};
use crate::serve::ClientAddr;
use crate::state::AppState;

/// A token request is a few hundred bytes; refuse anything much larger early.
const MAX_TOKEN_REQUEST: usize = 16 * 1024;

pub(crate) fn oauth_error(err: &OAuthError, basic_used: bool) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (
        status,
        Json(json!({ "error": err.code(), "error_description": err.to_string() })),
    )
        .into_response();
    resp.extensions_mut().insert(OutcomeCode(err.code()));
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if basic_used {
            r#"Basic realm="ward""#
        } else {
            r#"Bearer realm="ward""#
        };
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A 429 (rate limit) or 503 (too many secret checks running) with `Retry-After`. Only the
/// first refusal of a window is audited: a flood must not become a flood of audit records.
pub(crate) fn try_later(status: StatusCode, retry_after_secs: u64, audited: bool) -> Response {
    let mut resp = (
        status,
        Json(json!({
            "error": "temporarily_unavailable",
            "error_description": "too many token requests; retry after the Retry-After delay",
        })),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let code = if status == StatusCode::TOO_MANY_REQUESTS {
        "rate-limited"
    } else {
        "busy"
    };
    resp.extensions_mut().insert(OutcomeCode(code));
    if !audited {
        resp.extensions_mut().insert(Unaudited);
    }
    resp
}

pub(crate) fn limited(decision: Decision) -> Option<Response> {
    match decision {
        Decision::Allow => None,
        Decision::Limited { retry_after, first } => Some(try_later(
            StatusCode::TOO_MANY_REQUESTS,
            retry_after.as_secs().max(1),
            first,
        )),
    }
}

/// Whether a 503 for busy secret checks should be audited: at most one a second per process.
pub(crate) fn first_busy_this_second() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static EPOCH: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
    static LAST: AtomicU64 = AtomicU64::new(u64::MAX);
    let now = EPOCH.elapsed().as_secs();
    LAST.swap(now, Ordering::Relaxed) != now
}

pub async fn token(
    State(st): State<AppState>,
    audit: AuditContext,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(axum::Extension(ClientAddr(addr))) = peer
        && let Some(resp) = limited(st.token_ip_limits.check(&ip_key(addr.ip())))
    {
        return resp;
    }
    let authorization = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    // A refusal's challenge names Basic when the client tried it.
    let basic_used = authorization.is_some();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let basic = match ward_oauth::check_headers(content_type, authorization) {
        Ok(b) => b,
        Err(e) => return oauth_error(&e, basic_used),
    };
    let bytes = match crate::framing::read_body(body, MAX_TOKEN_REQUEST).await {
        Ok(b) => b,
        Err(crate::framing::BodyError::TooLarge) => {
            return oauth_error(&OAuthError::InvalidRequest("request too large"), basic_used);
        }
        Err(crate::framing::BodyError::Malformed) => {
            return oauth_error(&OAuthError::InvalidRequest("malformed request body"), basic_used);
        }
    };
    // The grants of people (authorization code, refresh token) have their own form.
    if matches!(
        ward_oauth::people::grant_type_of(&bytes).as_deref(),
        Some("authorization_code" | "refresh_token")
    ) {
        let peer_ip = peer.map(|axum::Extension(ClientAddr(addr))| ip_key(addr.ip()));
        return crate::oauth_people::user_token(&st, &audit, basic, &bytes, basic_used, peer_ip).await;
    }
    let req = match ward_oauth::parse_form(basic, &bytes) {
        Ok(r) => r,
        Err(e) => return oauth_error(&e, basic_used),
    };
    let client_id = req.client_id.clone();
    audit.set_claimed_client(&client_id);
    // Keyed per (client id, IP group), charged before the secret is checked: a client id is
    // no secret, so one IP's wrong guesses must not lock the client out from another IP.
    let peer_ip = peer.map(|axum::Extension(ClientAddr(addr))| ip_key(addr.ip()));
    if ward_auth::is_plausible_client_id(&client_id)
        && let Some(resp) = limited(st.token_client_limits.check(&(client_id.clone(), peer_ip)))
    {
        return resp;
    }
    match ward_auth::client_credentials(&st.store, &st.tokens, &st.secrets, req).await {
        Ok(issued) => {
            audit.set_actor(&client_id, None, &issued.scope);
            let mut resp = Json(json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            }))
            .into_response();
            resp.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            resp
        }
        Err(OAuthError::TemporarilyUnavailable) => {
            try_later(StatusCode::SERVICE_UNAVAILABLE, 1, first_busy_this_second())
        }
        Err(e) => {
            tracing::info!(error = e.code(), "token request refused");
            oauth_error(&e, basic_used)
        }
    }
}

pub async fn jwks(State(st): State<AppState>) -> Response {
    Json(st.tokens.jwks().clone()).into_response()
}

/// RFC 8414 authorization server metadata: only what is implemented.
fn server_metadata(st: &AppState) -> serde_json::Value {
    let base = &st.config.server.public_url;
    json!({
        "issuer": st.tokens.issuer(),
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/oauth2/jwks"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["system/*.cruds", "system/*.read", "system/*.write"],
        "response_types_supported": [],
    })
}

pub async fn openid_configuration(State(st): State<AppState>) -> Response {
    Json(server_metadata(&st)).into_response()
}

pub async fn smart_configuration(State(st): State<AppState>) -> Response {
    let mut doc = server_metadata(&st);
    crate::set_field(&mut doc, "capabilities", json!(["client-confidential-symmetric"]));
    crate::set_field(&mut doc, "code_challenge_methods_supported", json!([]));
    Json(doc).into_response()
}
