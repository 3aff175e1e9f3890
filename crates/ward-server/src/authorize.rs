//! The authorization request of `/oauth2/authorize` (RFC 6749 §4.1.1, RFC 7636, SMART App
//! Launch 2.x), checked before anyone is asked to sign in.
//!
//! Errors about the client or its redirect URI are shown on a page: redirecting to an
//! address that is not the client's would hand the browser to an attacker (RFC 6749
//! §4.1.2.1). Every later error goes back to the client with its `state`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ward_auth::ScopeSet;

use crate::accounts;
use crate::state::AppState;

/// Longest `state` and `nonce` accepted (they travel back in URLs and tokens).
const MAX_OPAQUE_CHARS: usize = 512;
/// `acr_values` that ask for a second factor.
pub const ACR_MFA_VALUES: [&str; 3] = [
    ACR_MFA,
    "mfa",
    "http://schemas.openid.net/pape/policies/2007/06/multi-factor",
];
/// The `acr` of a session signed in with a password alone, and with a second factor.
pub const ACR_PASSWORD: &str = "urn:ward:acr:password";
pub const ACR_MFA: &str = "urn:ward:acr:mfa";

/// Form or query parameters, each at most once (RFC 6749 §3.1).
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes; `Err(name)` names a repeated
    /// parameter.
    pub fn parse(bytes: &[u8]) -> Result<Params, String> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(bytes) {
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(k.into_owned());
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Why an authorization request is refused.
#[derive(Debug)]
pub enum Refusal {
    /// Shown to the person: the client or redirect URI cannot be trusted.
    Page(&'static str),
    /// Sent to the client's redirect URI.
    Redirect(ClientError),
}

/// An RFC 6749 §4.1.2.1 error for the client.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub error: &'static str,
    pub description: &'static str,
}

impl ClientError {
    /// The redirect URI with the error, its description and the state.
    pub fn location(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("error", self.error);
        q.append_pair("error_description", self.description);
        if let Some(s) = &self.state {
            q.append_pair("state", s);
        }
        with_query(&self.redirect_uri, &q.finish())
    }
}

/// `uri` with `query` appended to its own query, if any.
pub fn with_query(uri: &str, query: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{query}")
}

/// An EHR launch context taken from `launch`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LaunchContext {
    pub user_id: Option<String>,
    pub patient: Option<String>,
    pub encounter: Option<String>,
}

/// A checked authorization request, kept in the session while the person signs in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    /// The scopes the client may have of those asked for.
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub launch: Option<LaunchContext>,
    /// `prompt=none`: answer at once, never show a page.
    pub prompt_none: bool,
    /// The person must sign in (again) for this request, whatever their session
    /// (`prompt=login`, or a sign-in older than `max_age`); cleared by the sign-in.
    pub reauth: bool,
    /// `max_age` in seconds: an older sign-in must be repeated.
    pub max_age: Option<i64>,
    /// `acr_values` asked for a second factor.
    pub mfa_asked: bool,
    /// Unix seconds the request arrived.
    pub received: i64,
    /// The patient chosen in the picker (or the person's own record).
    pub patient: Option<String>,
}

impl Pending {
    pub fn error(&self, error: &'static str, description: &'static str) -> ClientError {
        ClientError {
            redirect_uri: self.redirect_uri.clone(),
            state: self.state.clone(),
            error,
            description,
        }
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_whitespace()
    }

    pub fn wants(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// Whether a sign-in at `auth_time` (Unix seconds) is too old for `max_age` at `now`
    /// (`max_age=0`: any sign-in is).
    pub fn too_old(&self, auth_time: i64, now: i64) -> bool {
        self.max_age
            .is_some_and(|a| a == 0 || now.saturating_sub(auth_time) > a)
    }

    /// The origin of the redirect URI, as a CSP source (for `form-action`), when it is a
    /// plain `scheme://host[:port]`.
    pub fn redirect_origin(&self) -> Option<String> {
        origin_of(&self.redirect_uri)
    }
}

pub fn origin_of(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    let origin = url.origin();
    if !origin.is_tuple() {
        // A private-use scheme (`com.example.app:/cb`): the scheme alone.
        let scheme = url.scheme();
        return scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            .then(|| format!("{scheme}:"));
    }
    let o = origin.ascii_serialization();
    o.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":/.-[]".contains(&b))
        .then_some(o)
}

fn control_free(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// The requested scopes this branch understands and the client may have. A token the
/// scope grammar does not parse is left out (not an error: a SMART app asks for more than
/// it strictly needs); nothing left is `invalid_scope`.
fn granted_scopes(requested: &str, client_scopes: &str) -> String {
    let allowed = client_scopes
        .split_whitespace()
        .filter_map(|t| ScopeSet::parse(t).ok())
        .fold(String::new(), |mut acc, s| {
            if !s.is_empty() {
                if !acc.is_empty() {
                    acc.push(' ');
                }
                acc.push_str(&s.to_string());
            }
            acc
        });
    let Ok(allowed) = ScopeSet::parse(&allowed) else {
        return String::new();
    };
    let understood: Vec<String> = requested
        .split_whitespace()
        .filter(|t| ScopeSet::parse(t).is_ok())
        .map(str::to_owned)
        .collect();
    ScopeSet::parse(&understood.join(" "))
        .map(|r| r.intersect(&allowed).to_string())
        .unwrap_or_default()
}

/// Checks an authorization request. `launch` is taken (single use) only once everything
/// else holds.
pub async fn check(st: &AppState, p: &Params, now: OffsetDateTime) -> Result<Pending, Refusal> {
    let client_id = p
        .get("client_id")
        .ok_or(Refusal::Page("The request names no application."))?;
    let client = match st.store.get_client(client_id).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => return Err(Refusal::Page("The application is not known, or it is disabled.")),
        Err(e) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(Refusal::Page(
                "The request cannot be handled now. Try again later.",
            ));
        }
    };
    let redirect_uri = p.get("redirect_uri").ok_or(Refusal::Page(
        "The request names no return address (redirect_uri).",
    ))?;
    if !accounts::redirect_uris(&client).iter().any(|r| r == redirect_uri) {
        return Err(Refusal::Page(
            "The return address (redirect_uri) is not one the application registered.",
        ));
    }
    let mut err = ClientError {
        redirect_uri: redirect_uri.to_owned(),
        state: None,
        error: "invalid_request",
        description: "",
    };
    let fail = |err: &ClientError, error: &'static str, description: &'static str| {
        Refusal::Redirect(ClientError {
            error,
            description,
            ..err.clone()
        })
    };
    if let Some(state) = p.get("state") {
        if state.chars().count() > MAX_OPAQUE_CHARS || !control_free(state) {
            return Err(fail(&err, "invalid_request", "state is too long or malformed"));
        }
        err.state = Some(state.to_owned());
    }
    if p.get("request").is_some() {
        return Err(fail(
            &err,
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if p.get("request_uri").is_some() {
        return Err(fail(
            &err,
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    match p.get("response_type") {
        Some("code") => {}
        None => return Err(fail(&err, "invalid_request", "response_type is required")),
        Some(_) => {
            return Err(fail(
                &err,
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    if p.get("response_mode").is_some_and(|m| m != "query") {
        return Err(fail(
            &err,
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    match p.get("code_challenge_method") {
        Some("S256") => {}
        None => {
            return Err(fail(
                &err,
                "invalid_request",
                "PKCE is required: code_challenge_method=S256",
            ));
        }
        Some(_) => {
            return Err(fail(
                &err,
                "invalid_request",
                "only code_challenge_method=S256 is supported",
            ));
        }
    }
    let code_challenge = p
        .get("code_challenge")
        .filter(|c| ward_auth::codes::is_s256_challenge(c))
        .ok_or_else(|| {
            fail(
                &err,
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            )
        })?;
    match p.get("aud") {
        Some(aud) if *aud == st.fhir_base => {}
        Some(_) => {
            return Err(fail(
                &err,
                "invalid_request",
                "aud is not this server's FHIR base URL",
            ));
        }
        None => {
            return Err(fail(
                &err,
                "invalid_request",
                "aud (the FHIR base URL) is required",
            ));
        }
    }
    let requested = p
        .get("scope")
        .filter(|s| control_free(s))
        .ok_or_else(|| fail(&err, "invalid_scope", "scope is required"))?;
    let scope = granted_scopes(requested, &client.scopes);
    if scope.is_empty() {
        return Err(fail(
            &err,
            "invalid_scope",
            "none of the requested scopes is available to this client",
        ));
    }
    let nonce = match p.get("nonce") {
        Some(n) if n.chars().count() > MAX_OPAQUE_CHARS || !control_free(n) => {
            return Err(fail(&err, "invalid_request", "nonce is too long or malformed"));
        }
        n => n.map(str::to_owned),
    };
    let max_age = match p.get("max_age") {
        None => None,
        Some(a) => Some(
            a.parse::<u32>()
                .map(i64::from)
                .map_err(|_| fail(&err, "invalid_request", "max_age must be a number of seconds"))?,
        ),
    };
    let prompts: Vec<&str> = p
        .get("prompt")
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    let prompt_none = prompts.contains(&"none");
    if prompt_none && prompts.len() > 1 {
        return Err(fail(&err, "invalid_request", "prompt=none cannot be combined"));
    }
    let mfa_asked = p
        .get("acr_values")
        .is_some_and(|v| v.split_whitespace().any(|a| ACR_MFA_VALUES.contains(&a)));
    let launch = match p.get("launch") {
        None => None,
        Some(l) => {
            let ctx = accounts::take_launch(&st.store, l, &client.client_id, now)
                .await
                .map_err(|_| {
                    fail(
                        &err,
                        "invalid_request",
                        "launch is unknown, expired or already used",
                    )
                })?;
            Some(ctx)
        }
    };
    Ok(Pending {
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state: err.state.clone(),
        code_challenge: code_challenge.to_owned(),
        nonce,
        launch,
        prompt_none,
        reauth: prompts.contains(&"login"),
        max_age,
        mfa_asked,
        received: now.unix_timestamp(),
        patient: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_filtered_to_what_parses_and_what_the_client_may_have() {
        let client = "patient/*.rs user/Observation.rs openid fhirUser launch/patient";
        assert_eq!(
            granted_scopes(
                "patient/Observation.rs patient/Patient.cruds openid launch/patient profile",
                client
            ),
            "patient/Observation.rs patient/Patient.rs openid launch/patient"
        );
        assert_eq!(granted_scopes("system/*.rs", client), "");
        // A granular scope within the registration is kept as it is (restricted), never widened.
        assert_eq!(
            granted_scopes("patient/Observation.rs?category=laboratory openid", client),
            "patient/Observation.rs?category=laboratory openid"
        );
        // An unknown word is left out, not an error.
        assert_eq!(
            granted_scopes("patient/Observation.rs offline-access", client),
            "patient/Observation.rs"
        );
    }

    #[test]
    fn errors_go_back_with_state() {
        let e = ClientError {
            redirect_uri: "https://app.example/cb?x=1".into(),
            state: Some("a b&c".into()),
            error: "invalid_request",
            description: "bad",
        };
        assert_eq!(
            e.location(),
            "https://app.example/cb?x=1&error=invalid_request&error_description=bad&state=a+b%26c"
        );
    }

    #[test]
    fn redirect_origins_are_csp_sources() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080/cb").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("https://app.example/a?b").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            origin_of("com.example.app:/cb").as_deref(),
            Some("com.example.app:")
        );
    }
}
