//! Audit review (SPEC AU-5): `GET /fhir/AuditEvent` answers from the audit trail, as R4
//! AuditEvent resources. The trail is read-only through the API: every other method is 405.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ward_audit::AuditQuery;
use ward_auth::Interaction;
use ward_fhir::outcome::{Issue, IssueType, Severity, operation_outcome};

use crate::auth::{Authenticated, authorize};
use crate::error::{ApiError, FHIR_JSON};
use crate::middleware::method_not_allowed;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/AuditEvent", get(search).post(method_not_allowed))
        .route("/AuditEvent/_search", any(method_not_allowed))
        .route("/AuditEvent/_history", any(method_not_allowed))
        .route("/AuditEvent/{id}", any(method_not_allowed))
        .route("/AuditEvent/{id}/{*rest}", any(method_not_allowed))
}

const DEFAULT_COUNT: usize = 50;
/// Most records `_summary=count` counts: the work of one count is bounded, not the trail's size.
const MAX_TOTAL: u64 = 10_000;

async fn search(
    State(st): State<AppState>,
    auth: Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let authz = authorize(&auth, "AuditEvent", Interaction::Search)?;
    let (q, count_only) = parse_query(query.as_deref(), st.config.server.max_page_size)?;
    let audit_error = |e: ward_audit::AuditError| ApiError::internal(format!("audit search: {e}"));
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": { "lastUpdated": ward_store::format_instant(OffsetDateTime::now_utc()) },
        "type": "searchset",
        "link": [{ "relation": "self", "url": format!("{}/AuditEvent", st.fhir_base) }],
    });
    if count_only {
        let n = q
            .count_matches(&st.audit_store, MAX_TOTAL)
            .await
            .map_err(audit_error)?;
        if n <= MAX_TOTAL {
            crate::set_field(&mut bundle, "total", json!(n));
        } else {
            // Beyond the cap there is no total, and the answer says why.
            let issue = Issue {
                severity: Severity::Information,
                code: IssueType::TooCostly,
                diagnostics: format!(
                    "more than {MAX_TOTAL} records match: narrow the search (date, agent, patient, entity) for an exact total"
                ),
                expression: None,
            };
            crate::set_field(
                &mut bundle,
                "entry",
                json!([{
                    "resource": operation_outcome(&[issue], crate::request_id::current().as_deref()),
                    "search": { "mode": "outcome" },
                }]),
            );
        }
    } else {
        let found = ward_audit::search(&st.audit_store, &q)
            .await
            .map_err(audit_error)?;
        authz.audit().add_returned(found.len());
        let entries: Vec<Value> = found
            .iter()
            .map(|(rec, hash)| {
                let event = ward_audit::to_audit_event(rec, hash);
                let id = event
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                json!({
                    "fullUrl": format!("{}/AuditEvent/{id}", st.fhir_base),
                    "resource": event,
                    "search": { "mode": "match" },
                })
            })
            .collect();
        crate::set_field(&mut bundle, "entry", Value::Array(entries));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        serde_json::to_vec(&bundle).unwrap_or_default(),
    )
        .into_response())
}

/// The query, and whether only the count is asked for (`_summary=count` or `_count=0`).
/// The view is one AuditEvent per request (see [`AuditQuery::one_per_request`]).
fn parse_query(query: Option<&str>, max: usize) -> Result<(AuditQuery, bool), ApiError> {
    let mut q = AuditQuery {
        count: DEFAULT_COUNT.min(max),
        one_per_request: true,
        ..AuditQuery::default()
    };
    let mut count_only = false;
    let bad =
        |p: &str, why: &str| ApiError::bad_request(IssueType::Value, format!("{p}: {why}")).at(p.to_owned());
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "date" => {
                let (prefix, value) = split_prefix(&v);
                let at = parse_instant(value).ok_or_else(|| bad("date", "expected an instant or a date"))?;
                match prefix {
                    "ge" | "gt" => q.date_ge = Some(at),
                    "lt" | "le" => q.date_lt = Some(at),
                    _ => return Err(bad("date", "use the ge/gt/lt/le prefixes")),
                }
            }
            "agent" => q.agent = Some(v.into_owned()),
            "patient" => q.patient = Some(v.trim_start_matches("Patient/").to_owned()),
            "entity" => q.entity = Some(v.into_owned()),
            "action" => q.action = Some(v.into_owned()),
            "outcome" => {
                q.outcome = Some(
                    v.parse()
                        .map_err(|_| bad("outcome", "expected an HTTP status code"))?,
                )
            }
            "_count" => match v.parse::<usize>().ok().filter(|n| *n <= max) {
                Some(0) => count_only = true,
                Some(n) => q.count = n,
                None => return Err(bad("_count", "out of range")),
            },
            "_summary" => match v.as_ref() {
                "count" => count_only = true,
                "false" => {}
                _ => return Err(bad("_summary", "AuditEvent supports count and false")),
            },
            other => {
                return Err(ApiError::bad_request(
                    IssueType::NotSupported,
                    format!("search parameter '{other}' is not supported for AuditEvent"),
                ));
            }
        }
    }
    Ok((q, count_only))
}

fn split_prefix(v: &str) -> (&str, &str) {
    match v.get(..2) {
        Some(p @ ("ge" | "gt" | "lt" | "le" | "eq")) => (p, &v[2..]),
        _ => ("eq", v),
    }
}

fn parse_instant(v: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v, &Rfc3339).ok().or_else(|| {
        let d = time::Date::parse(v, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
        Some(d.midnight().assume_utc())
    })
}
