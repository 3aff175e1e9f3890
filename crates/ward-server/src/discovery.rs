//! What Ward advertises about its authorization server, in ONE place: the OAuth endpoints,
//! grant types, SMART capabilities and algorithms below feed RFC 8414 / OIDC discovery
//! (`/.well-known/openid-configuration`), `/fhir/.well-known/smart-configuration` and the
//! CapabilityStatement's `oauth-uris` extension. Edit these lists when a feature lands or
//! goes; advertise only what works.

use serde_json::{Value, json};

use crate::Config;

/// OAuth endpoints, relative to `public_url`.
pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const JWKS_PATH: &str = "/oauth2/jwks";
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
pub const REVOKE_PATH: &str = "/oauth2/revoke";
pub const USERINFO_PATH: &str = "/oauth2/userinfo";

pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
pub const RESPONSE_TYPES: &[&str] = &["code"];
pub const CODE_CHALLENGE_METHODS: &[&str] = &["S256"];
/// Introspection answers confidential clients only (`ward_auth::people`): no `none`.
pub const INTROSPECTION_AUTH_METHODS: &[&str] =
    &["client_secret_basic", "client_secret_post", "private_key_jwt"];
pub const TOKEN_ENDPOINT_AUTH_METHODS: &[&str] = &[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];
/// Algorithms of `private_key_jwt` client assertions (`ward_auth::client_keys`).
pub const TOKEN_ENDPOINT_AUTH_SIGNING_ALGS: &[&str] = &["ES384", "RS384", "ES256", "RS256"];
/// id_tokens are RS256 (OIDC requires it); access tokens ES256.
pub const ID_TOKEN_SIGNING_ALGS: &[&str] = &["RS256"];
pub const SUBJECT_TYPES: &[&str] = &["public"];

/// SMART App Launch 2.x capabilities.
pub const SMART_CAPABILITIES: &[&str] = &[
    "launch-standalone",
    "launch-ehr",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-standalone-patient",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "authorize-post",
];

pub const SCOPES: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "user/*.cruds",
    "user/*.rs",
    "user/*.read",
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
    "system/*.write",
];

pub const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nonce",
    "auth_time",
    "amr",
    "acr",
    "fhirUser",
];

fn url(config: &Config, path: &str) -> String {
    format!("{}{path}", config.server.public_url.trim_end_matches('/'))
}

/// RFC 8414 authorization server metadata, also OpenID Connect Discovery 1.0.
pub fn server_metadata(config: &Config, issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": url(config, AUTHORIZE_PATH),
        "token_endpoint": url(config, TOKEN_PATH),
        "jwks_uri": url(config, JWKS_PATH),
        "userinfo_endpoint": url(config, USERINFO_PATH),
        "introspection_endpoint": url(config, INTROSPECT_PATH),
        "revocation_endpoint": url(config, REVOKE_PATH),
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": RESPONSE_TYPES,
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": CODE_CHALLENGE_METHODS,
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": TOKEN_ENDPOINT_AUTH_SIGNING_ALGS,
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "id_token_signing_alg_values_supported": ID_TOKEN_SIGNING_ALGS,
        "subject_types_supported": SUBJECT_TYPES,
        "scopes_supported": SCOPES,
        "claims_supported": CLAIMS,
    })
}

/// `/fhir/.well-known/smart-configuration` (SMART App Launch 2.x).
pub fn smart_configuration(config: &Config, issuer: &str) -> Value {
    let mut doc = server_metadata(config, issuer);
    crate::set_field(&mut doc, "capabilities", json!(SMART_CAPABILITIES));
    doc
}

/// The `oauth-uris` extension of the CapabilityStatement's `rest.security`.
pub fn oauth_uris_extension(public_url: &str) -> Value {
    let base = public_url.trim_end_matches('/');
    let uri = |name: &str, path: &str| json!({ "url": name, "valueUri": format!("{base}{path}") });
    json!({
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": [
            uri("authorize", AUTHORIZE_PATH),
            uri("token", TOKEN_PATH),
            uri("introspect", INTROSPECT_PATH),
            uri("revoke", REVOKE_PATH),
        ]
    })
}
