//! OAuth 2.0 token requests as they arrive (SPEC AC-2): the RFC 6749 errors and the parsing of
//! a `client_credentials` request (form body, `Authorization: Basic`, content type).
//!
//! Pure and I/O-free, so that the `token_request` fuzz target needs nothing else; `ward-auth`
//! re-exports both types and the server's token endpoint calls [`check_headers`] and
//! [`parse_form`] (or [`parse_token_request`], which is the two in order).

// Token requests are parsed here: no panic and no overflow on client input (issue 15).
// Tests may unwrap.
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

use base64::Engine;
use zeroize::Zeroizing;

pub mod people;

/// RFC 6749 §5.2 errors. The description is safe to show: it never says whether a client
/// exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("the requested scope is invalid, unknown, or exceeds what the client may have")]
    InvalidScope,
    #[error("the grant type is not supported")]
    UnsupportedGrantType,
    /// A code, refresh token or launch that is unknown, expired, used, revoked, or not this
    /// client's; the description never says which.
    #[error("the grant is invalid, expired, or revoked")]
    InvalidGrant,
    #[error("the client is not allowed to use this grant")]
    UnauthorizedClient,
    #[error("the authorization server encountered an error")]
    ServerError,
    /// Too many client authentications are running; the client should retry shortly.
    #[error("the authorization server is busy; retry later")]
    TemporarilyUnavailable,
}

impl OAuthError {
    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidGrant => "invalid_grant",
            OAuthError::UnauthorizedClient => "unauthorized_client",
            OAuthError::ServerError => "server_error",
            OAuthError::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// HTTP status per RFC 6749 §5.2.
    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient => 401,
            OAuthError::ServerError => 500,
            OAuthError::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// A client-credentials request with its client's claimed credentials (not yet checked).
pub struct ClientCredentialsRequest {
    pub client_id: String,
    pub client_secret: Zeroizing<String>,
    pub scope: Option<String>,
}

/// Client id and secret from an `Authorization: Basic` header.
pub type BasicCredentials = (String, Zeroizing<String>);

/// The whole request: [`check_headers`], then [`parse_form`] on the body.
pub fn parse_token_request(
    content_type: &str,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> Result<ClientCredentialsRequest, OAuthError> {
    let basic = check_headers(content_type, authorization)?;
    parse_form(basic, body)
}

/// The headers, checked before the body is read: the Basic credentials if any, and the
/// content type.
pub fn check_headers(
    content_type: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<BasicCredentials>, OAuthError> {
    let basic = basic_credentials(authorization)?;
    if !is_form_media_type(content_type) {
        return Err(OAuthError::InvalidRequest(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    Ok(basic)
}

/// `application/x-www-form-urlencoded`, exactly, with any parameters.
fn is_form_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// RFC 6749 §2.3.1: the Basic credentials are form-urlencoded before base64. Only visible
/// ASCII (and tab) is accepted in the header value, as `http::HeaderValue::to_str` does.
fn basic_credentials(value: Option<&[u8]>) -> Result<Option<BasicCredentials>, OAuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bad = OAuthError::InvalidClient;
    if !value.iter().all(|&b| (32..127).contains(&b) || b == b'\t') {
        return Err(bad);
    }
    let value = std::str::from_utf8(value).map_err(|_| bad.clone())?;
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(bad);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad);
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| bad.clone())?,
    );
    let decoded = std::str::from_utf8(&decoded).map_err(|_| bad.clone())?;
    let (id, secret) = decoded.split_once(':').ok_or(bad)?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(s.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), Zeroizing::new(unescape(secret)))))
}

/// The form body: `grant_type=client_credentials`, each parameter at most once, and exactly
/// one client authentication (Basic, or `client_id` + `client_secret` in the form).
pub fn parse_form(
    basic: Option<BasicCredentials>,
    body: &[u8],
) -> Result<ClientCredentialsRequest, OAuthError> {
    let mut grant_type = None;
    let mut form_id = None;
    let mut form_secret: Option<Zeroizing<String>> = None;
    let mut scope = None;
    for (k, v) in form_urlencoded::parse(body) {
        let slot_taken = match k.as_ref() {
            "grant_type" => grant_type.replace(v.into_owned()).is_some(),
            "client_id" => form_id.replace(v.into_owned()).is_some(),
            "client_secret" => form_secret.replace(Zeroizing::new(v.into_owned())).is_some(),
            "scope" => scope.replace(v.into_owned()).is_some(),
            _ => false,
        };
        if slot_taken {
            return Err(OAuthError::InvalidRequest("repeated parameter"));
        }
    }
    match grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => return Err(OAuthError::UnsupportedGrantType),
        None => return Err(OAuthError::InvalidRequest("grant_type is required")),
    }
    let (client_id, client_secret) = match (basic, form_id, form_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::InvalidRequest("use one client authentication method"));
        }
        (Some((id, secret)), form_id, None) => {
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::InvalidRequest("client_id does not match"));
            }
            (id, secret)
        }
        (None, Some(id), Some(secret)) => (id, secret),
        _ => return Err(OAuthError::InvalidClient),
    };
    Ok(ClientCredentialsRequest {
        client_id,
        client_secret,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "application/x-www-form-urlencoded";

    fn parse(ct: &str, auth: Option<&str>, body: &str) -> Result<ClientCredentialsRequest, OAuthError> {
        parse_token_request(ct, auth.map(str::as_bytes), body.as_bytes())
    }

    #[test]
    fn basic_and_post_authentication() {
        // "a%3Ab:s%2B1" -> id "a:b", secret "s+1" (form-urlencoded before base64).
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("a%3Ab:s%2B1")
        );
        let r = parse(
            FORM,
            Some(&auth),
            "grant_type=client_credentials&scope=system%2F*.read",
        )
        .unwrap();
        assert_eq!((r.client_id.as_str(), r.client_secret.as_str()), ("a:b", "s+1"));
        assert_eq!(r.scope.as_deref(), Some("system/*.read"));
        let r = parse(
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            None,
            "grant_type=client_credentials&client_id=c&client_secret=s",
        )
        .unwrap();
        assert_eq!((r.client_id.as_str(), r.client_secret.as_str()), ("c", "s"));
    }

    #[test]
    fn refusals() {
        let post = "grant_type=client_credentials&client_id=c&client_secret=s";
        let err = |ct, auth, body| parse(ct, auth, body).err().unwrap();
        assert_eq!(
            err("application/x-www-form-urlencodedx", None, post).code(),
            "invalid_request"
        );
        assert_eq!(err(FORM, Some("Bearer x"), post), OAuthError::InvalidClient);
        assert_eq!(err(FORM, Some("Basic %%%"), post), OAuthError::InvalidClient);
        assert_eq!(err(FORM, Some("Basic \u{e9}"), post), OAuthError::InvalidClient);
        assert_eq!(
            err(FORM, None, "grant_type=client_credentials&scope=a&scope=b"),
            OAuthError::InvalidRequest("repeated parameter")
        );
        assert_eq!(
            err(FORM, None, "grant_type=password"),
            OAuthError::UnsupportedGrantType
        );
        assert_eq!(
            err(FORM, None, "client_id=c&client_secret=s").code(),
            "invalid_request"
        );
        assert_eq!(
            err(FORM, None, "grant_type=client_credentials&client_id=c"),
            OAuthError::InvalidClient
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("c:s")
        );
        assert_eq!(
            err(FORM, Some(&basic), post),
            OAuthError::InvalidRequest("use one client authentication method")
        );
        assert_eq!(
            err(FORM, Some(&basic), "grant_type=client_credentials&client_id=d"),
            OAuthError::InvalidRequest("client_id does not match")
        );
    }
}
