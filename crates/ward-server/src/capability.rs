//! The CapabilityStatement (SPEC F-1): it lists exactly what this build implements.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::FHIR_JSON;
use crate::state::AppState;

/// Interactions every resource type supports today. Keep in step with `fhir::routes`.
const TYPE_INTERACTIONS: [&str; 8] = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// The search parameters of `rtype` exactly as `ward_fhir::search` implements them, plus the
/// `_include` values it accepts. (`_revinclude` works for every reference parameter that can
/// point at the type; listing them all would add ~12,000 entries, so `searchRevInclude` is
/// left out rather than listed partially.)
fn search_capabilities(rtype: &str) -> (Vec<Value>, Vec<String>) {
    let params = ward_fhir::search::params_for(rtype);
    let search_param = params
        .iter()
        .map(|p| {
            json!({
                "name": p.code,
                "definition": p.definition_url(),
                "type": p.kind.as_str(),
            })
        })
        .collect();
    let include = params
        .iter()
        .filter(|p| p.kind == ward_fhir::search::ParamKind::Reference && p.base != "Resource")
        .map(|p| format!("{rtype}:{}", p.code))
        .collect();
    (search_param, include)
}

pub fn capability_statement(fhir_base: &str, public_url: &str, published: &str) -> Value {
    let resources: Vec<Value> = ward_fhir::types::RESOURCE_TYPES
        .iter()
        .map(|t| {
            let (search_param, include) = search_capabilities(t);
            json!({
                "type": t,
                "interaction": TYPE_INTERACTIONS.iter().map(|i| json!({ "code": i })).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchInclude": include,
                "searchParam": search_param,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "Ward",
        "kind": "instance",
        "software": { "name": "Ward", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Ward FHIR server", "url": fhir_base },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "service": [{
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR"
                    }]
                }],
                "extension": [crate::discovery::oauth_uris_extension(public_url)],
                "description": "OAuth 2.0 bearer tokens (client_credentials) with SMART v2 system scopes"
            },
            "resource": resources,
            "interaction": [
                { "code": "transaction", "documentation": "POST [base] with a transaction Bundle: all entries or none; urn:uuid references resolved" },
                { "code": "batch", "documentation": "POST [base] with a batch Bundle: each entry on its own" },
                { "code": "history-system" },
            ],
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
        }],
    })
}

pub async fn metadata(State(st): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        st.capability.clone(),
    )
        .into_response()
}
