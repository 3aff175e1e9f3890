//! The forms of the people-facing endpoints (issue 10): the `authorization_code` and
//! `refresh_token` grants at the token endpoint, and the `token` form of introspection
//! (RFC 7662) and revocation (RFC 7009). Same rules as `client_credentials`: each parameter at
//! most once, one client authentication.

use zeroize::Zeroizing;

use crate::{BasicCredentials, OAuthError};

/// The grant type a token request names, to pick its parser; `None` if absent or repeated
/// (the parser then gives the precise error).
pub fn grant_type_of(body: &[u8]) -> Option<String> {
    let mut found = None;
    for (k, v) in form_urlencoded::parse(body) {
        if k == "grant_type" && found.replace(v.into_owned()).is_some() {
            return None;
        }
    }
    found
}

/// How the client says who it is. Only the shape is known here; `ward-auth` checks it.
pub enum ClientAuth {
    /// `client_secret_basic` or `client_secret_post`.
    Secret {
        client_id: String,
        secret: Zeroizing<String>,
    },
    /// `private_key_jwt` (`client_id` optional: the assertion names the client).
    Assertion {
        client_id: Option<String>,
        assertion_type: String,
        assertion: Zeroizing<String>,
    },
    /// A public client: `client_id` alone.
    Public { client_id: String },
}

impl ClientAuth {
    /// The client id the request claims, if it names one outside an assertion.
    pub fn claimed_id(&self) -> Option<&str> {
        match self {
            ClientAuth::Secret { client_id, .. } | ClientAuth::Public { client_id } => Some(client_id),
            ClientAuth::Assertion { client_id, .. } => client_id.as_deref(),
        }
    }
}

/// A user's grant at the token endpoint.
pub enum UserGrant {
    AuthorizationCode {
        code: Zeroizing<String>,
        redirect_uri: Option<String>,
        code_verifier: Option<Zeroizing<String>>,
    },
    RefreshToken {
        refresh_token: Zeroizing<String>,
        scope: Option<String>,
    },
}

pub struct UserGrantRequest {
    pub client: ClientAuth,
    pub grant: UserGrant,
}

/// Introspection or revocation: the token and its (advisory) type hint.
pub struct TokenFormRequest {
    pub client: ClientAuth,
    pub token: Zeroizing<String>,
    pub token_type_hint: Option<String>,
}

/// The parameters of a form, each at most once (RFC 6749 §3.2).
#[derive(Default)]
struct Form {
    fields: Vec<(String, Zeroizing<String>)>,
}

impl Form {
    fn parse(body: &[u8], known: &[&str]) -> Result<Form, OAuthError> {
        let mut form = Form::default();
        for (k, v) in form_urlencoded::parse(body) {
            if !known.contains(&k.as_ref()) {
                continue;
            }
            if form.fields.iter().any(|(name, _)| *name == k) {
                return Err(OAuthError::InvalidRequest("repeated parameter"));
            }
            form.fields.push((k.into_owned(), Zeroizing::new(v.into_owned())));
        }
        Ok(form)
    }

    fn take(&mut self, name: &str) -> Option<Zeroizing<String>> {
        let at = self.fields.iter().position(|(k, _)| k == name)?;
        Some(self.fields.swap_remove(at).1)
    }

    fn take_plain(&mut self, name: &str) -> Option<String> {
        self.take(name).map(|v| v.to_string())
    }

    /// Exactly one client authentication.
    fn client_auth(&mut self, basic: Option<BasicCredentials>) -> Result<ClientAuth, OAuthError> {
        let form_id = self.take_plain("client_id");
        let form_secret = self.take("client_secret");
        let assertion_type = self.take_plain("client_assertion_type");
        let assertion = self.take("client_assertion");
        let one_method = || OAuthError::InvalidRequest("use one client authentication method");
        if assertion_type.is_some() || assertion.is_some() {
            if basic.is_some() || form_secret.is_some() {
                return Err(one_method());
            }
            let (Some(assertion_type), Some(assertion)) = (assertion_type, assertion) else {
                return Err(OAuthError::InvalidRequest(
                    "client_assertion_type and client_assertion go together",
                ));
            };
            return Ok(ClientAuth::Assertion {
                client_id: form_id,
                assertion_type,
                assertion,
            });
        }
        match (basic, form_id, form_secret) {
            (Some(_), _, Some(_)) => Err(one_method()),
            (Some((client_id, secret)), form_id, None) => {
                if form_id.is_some_and(|f| f != client_id) {
                    return Err(OAuthError::InvalidRequest("client_id does not match"));
                }
                Ok(ClientAuth::Secret { client_id, secret })
            }
            (None, Some(client_id), Some(secret)) => Ok(ClientAuth::Secret { client_id, secret }),
            (None, Some(client_id), None) => Ok(ClientAuth::Public { client_id }),
            (None, None, _) => Err(OAuthError::InvalidClient),
        }
    }
}

const CLIENT_FIELDS: [&str; 4] = [
    "client_id",
    "client_secret",
    "client_assertion_type",
    "client_assertion",
];

/// Parses an `authorization_code` or `refresh_token` request (after `check_headers`).
pub fn parse_user_grant(
    basic: Option<BasicCredentials>,
    body: &[u8],
) -> Result<UserGrantRequest, OAuthError> {
    let mut known = vec![
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
    ];
    known.extend(CLIENT_FIELDS);
    let mut form = Form::parse(body, &known)?;
    let grant = match form.take_plain("grant_type").as_deref() {
        Some("authorization_code") => UserGrant::AuthorizationCode {
            code: form
                .take("code")
                .ok_or(OAuthError::InvalidRequest("code is required"))?,
            redirect_uri: form.take_plain("redirect_uri"),
            code_verifier: form.take("code_verifier"),
        },
        Some("refresh_token") => UserGrant::RefreshToken {
            refresh_token: form
                .take("refresh_token")
                .ok_or(OAuthError::InvalidRequest("refresh_token is required"))?,
            scope: form.take_plain("scope"),
        },
        Some(_) => return Err(OAuthError::UnsupportedGrantType),
        None => return Err(OAuthError::InvalidRequest("grant_type is required")),
    };
    let client = form.client_auth(basic)?;
    Ok(UserGrantRequest { client, grant })
}

/// Parses an introspection or revocation request (after `check_headers`).
pub fn parse_token_form(
    basic: Option<BasicCredentials>,
    body: &[u8],
) -> Result<TokenFormRequest, OAuthError> {
    let mut known = vec!["token", "token_type_hint"];
    known.extend(CLIENT_FIELDS);
    let mut form = Form::parse(body, &known)?;
    let token = form
        .take("token")
        .ok_or(OAuthError::InvalidRequest("token is required"))?;
    let token_type_hint = form.take_plain("token_type_hint");
    let client = form.client_auth(basic)?;
    Ok(TokenFormRequest {
        client,
        token,
        token_type_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_refresh_forms() {
        let r = parse_user_grant(
            None,
            b"grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Fapp%2Fcb&code_verifier=v&client_id=pub",
        )
        .unwrap();
        assert!(matches!(r.client, ClientAuth::Public { ref client_id } if client_id == "pub"));
        let UserGrant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } = r.grant
        else {
            panic!("code grant")
        };
        assert_eq!(
            (
                code.as_str(),
                redirect_uri.as_deref(),
                code_verifier.as_deref().map(String::as_str)
            ),
            ("abc", Some("https://app/cb"), Some("v"))
        );
        let r = parse_user_grant(
            Some(("c".into(), Zeroizing::new("s".into()))),
            b"grant_type=refresh_token&refresh_token=rt&scope=openid",
        )
        .unwrap();
        assert!(matches!(r.client, ClientAuth::Secret { ref client_id, .. } if client_id == "c"));
        assert!(
            matches!(r.grant, UserGrant::RefreshToken { ref scope, .. } if scope.as_deref() == Some("openid"))
        );
    }

    #[test]
    fn refusals() {
        let err = |basic: Option<BasicCredentials>, body: &str| {
            parse_user_grant(basic, body.as_bytes()).err().unwrap()
        };
        assert_eq!(
            err(None, "grant_type=authorization_code&code=a&code=b&client_id=c"),
            OAuthError::InvalidRequest("repeated parameter")
        );
        assert_eq!(
            err(None, "grant_type=authorization_code&client_id=c"),
            OAuthError::InvalidRequest("code is required")
        );
        assert_eq!(
            err(None, "grant_type=authorization_code&code=a"),
            OAuthError::InvalidClient
        );
        assert_eq!(
            err(None, "grant_type=password&client_id=c"),
            OAuthError::UnsupportedGrantType
        );
        assert_eq!(
            err(
                Some(("c".into(), Zeroizing::new("s".into()))),
                "grant_type=refresh_token&refresh_token=r&client_secret=s"
            ),
            OAuthError::InvalidRequest("use one client authentication method")
        );
        assert_eq!(
            err(
                None,
                "grant_type=refresh_token&refresh_token=r&client_assertion=x"
            ),
            OAuthError::InvalidRequest("client_assertion_type and client_assertion go together")
        );
        assert!(parse_token_form(None, b"client_id=c").is_err());
        let t = parse_token_form(
            None,
            b"token=t&token_type_hint=refresh_token&client_id=c&client_secret=s",
        )
        .unwrap();
        assert_eq!(
            (t.token.as_str(), t.token_type_hint.as_deref()),
            ("t", Some("refresh_token"))
        );
        assert_eq!(grant_type_of(b"grant_type=a&grant_type=b"), None);
        assert_eq!(
            grant_type_of(b"x=1&grant_type=refresh_token").as_deref(),
            Some("refresh_token")
        );
    }
}
