//! Transaction and batch Bundles: `POST /fhir` (SPEC F-1, IN-5).
//!
//! Both kinds go through the same steps before anything is written: content type and size
//! (`fhir::read_json_body`); strict JSON, the entry cap (`server.max_bundle_entries`, 413) and
//! each entry's shape and `request` (method and URL), parsed by `ward_fhir::bundle` (the
//! `bundle_entry` fuzz target's code); the Bundle's own schema; the caller's scopes for every
//! entry (`auth::authorize` with the entry's interaction); and each entry resource's schema.
//!
//! * **transaction**: any failing entry fails the whole Bundle (its status, an
//!   OperationOutcome naming `Bundle.entry[n]`) and nothing is written. POST entries get
//!   their ids up front; every `Reference.reference` naming a POST or PUT entry's
//!   `urn:uuid:`/`urn:oid:` `fullUrl` is rewritten to `Type/id` (an unresolved one is a
//!   400). The entries then run in FHIR order (DELETE, POST, PUT, GET) as ONE store
//!   transaction (`Store::transaction`): `ifNoneExist` and `ifMatch` are honoured inside it,
//!   and GET entries (read and vread only) run inside it too, after the writes and seeing
//!   them; a failing GET fails the transaction. A conditional create that matches an
//!   existing resource redirects the references to it. Deleting a resource that never
//!   existed is a `204` (FHIR allows it; the single DELETE answers 404).
//! * **batch**: each entry on its own, each write in its own store transaction; a failure of
//!   any kind (a refusal, a store or integrity error, a panic) gives that entry alone a status
//!   and an OperationOutcome in `response.outcome`, and the batch still answers 200. Batch entries must not
//!   reference each other (a `urn:uuid:` reference is a 400 for that entry).
//!
//! Not supported (400): search GETs, conditional update/delete URLs, PATCH and HEAD entries.
//! Responses list per entry `status`, `location`, `etag` and `lastModified`; resources only
//! with `Prefer: return=representation` (GET entries always carry theirs), as JSON bytes
//! (stored ones unparsed) up to `server.max_page_bytes` in all: past it a GET entry is a 413
//! with an OperationOutcome ("read it on its own"), and a write, still made, answers without
//! its representation and with a warning in `response.outcome`.
//!
//! Audit: one intent record before the first write; the request's record gets every patient
//! of every written, deleted or read resource and the number of resources touched. An entry
//! whose current version cannot be read fails (its patients would be missing from the intent).
//! A token that could authorize no entry is refused before the body is read.

use std::collections::{HashMap, HashSet};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use ward_auth::Interaction;
use ward_fhir::bundle::{Entry, EntryRequest, Kind, bundle_kind, parse_entries};
use ward_fhir::outcome::IssueType;
use ward_store::{StoreError, Stored, TxError, TxOp, TxOutcome};
use zeroize::Zeroizing;

use crate::auth::{Authenticated, Authorized, authorize, authorize_any};
use crate::error::ApiError;
use crate::fhir::{Prefer, read_json_body};
use crate::response::Resource;
use crate::state::AppState;

/// FHIR transaction processing order: DELETE, POST, PUT, GET.
fn rank(op: &TxOp) -> u8 {
    match op {
        TxOp::Delete { .. } => 0,
        TxOp::Create { .. } => 1,
        TxOp::Update { .. } => 2,
        TxOp::Read { .. } => 3,
    }
}

fn resource_mut(op: &mut TxOp) -> Option<&mut Value> {
    match op {
        TxOp::Create { resource, .. } | TxOp::Update { resource, .. } => Some(resource),
        _ => None,
    }
}

/// An entry whose request parsed, whose every needed interaction the caller's scopes allow
/// (the [`Authorized`]s are the proof), and whose resource validated.
struct Allowed {
    index: usize,
    full_url: Option<String>,
    action: TxOp,
    _authorized: Vec<Authorized>,
}

pub async fn bundle(
    State(st): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A token that could authorize no entry is refused before its body is read and parsed.
    authorize_any(&auth)?;
    let body = read_json_body(&st, &headers, body).await?;
    let bundle = ward_fhir::json::parse_strict(&body, &st.limits)?;
    let kind = bundle_kind(&bundle)?;
    auth.audit.set_action(match kind {
        Kind::Transaction => "transaction",
        Kind::Batch => "batch",
    });
    let parsed = parse_entries(bundle, kind, st.config.server.max_bundle_entries, &st.fhir_base)?;
    st.validator.validate(&parsed.shell, "Bundle")?;
    let representation = asks_representation(&headers);

    let mut planned: Vec<Result<Allowed, ApiError>> = Vec::with_capacity(parsed.entries.len());
    for (index, entry) in parsed.entries.into_iter().enumerate() {
        planned.push(plan(&st, &auth, kind, index, entry, representation).await);
    }
    // `authorize` notes each entry's type; the record is about the Bundle.
    auth.audit.set_resource("Bundle", None, None);
    let response = match kind {
        Kind::Transaction => {
            let allowed = planned.into_iter().collect::<Result<Vec<_>, _>>()?;
            transaction(&st, &auth, allowed, representation).await?
        }
        Kind::Batch => batch(&st, &auth, planned, representation).await?,
    };
    Ok(response)
}

/// Whether the caller asked for `Prefer: return=representation` (without it, bundle
/// responses carry no written resources).
fn asks_representation(headers: &HeaderMap) -> bool {
    Prefer::from_headers(headers) == Prefer::Representation
        && headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim() == "return=representation"))
}

/// Parses, authorizes and validates one entry (in that order).
async fn plan(
    st: &AppState,
    auth: &Authenticated,
    kind: Kind,
    index: usize,
    entry: Entry,
    representation: bool,
) -> Result<Allowed, ApiError> {
    let at = format!("Bundle.entry[{index}]");
    let mut action = tx_op(entry.request?);
    let authorized = authorize_entry(st, auth, &mut action, representation)
        .await
        .map_err(|e| e.at(at.clone()))?;
    if let Some(resource) = resource_mut(&mut action) {
        let rtype = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        st.validator.validate(resource, &rtype).map_err(|e| {
            let path = e.path.strip_prefix(rtype.as_str()).unwrap_or(&e.path);
            ApiError::bad_request(e.code, e.message.clone()).at(format!("{at}.resource{path}"))
        })?;
        if kind == Kind::Batch && has_local_reference(resource) {
            return Err(ApiError::bad_request(
                IssueType::Invalid,
                "batch entries must not reference other entries (urn:uuid and urn:oid references resolve only in transactions)",
            )
            .at(format!("{at}.resource")));
        }
    }
    Ok(Allowed {
        index,
        full_url: entry.full_url,
        action,
        _authorized: authorized,
    })
}

/// An entry's request as a store operation. A create gets its id now, so `urn:uuid:`
/// references can be rewritten to it; an update may create only once `authorize_entry` says so.
fn tx_op(request: EntryRequest) -> TxOp {
    match request {
        EntryRequest::Create {
            rtype,
            resource,
            if_none_exist,
        } => TxOp::Create {
            rtype,
            id: uuid::Uuid::new_v4().to_string(),
            resource,
            if_none_exist,
        },
        EntryRequest::Update {
            rtype,
            id,
            resource,
            if_match,
        } => TxOp::Update {
            rtype,
            id,
            resource,
            if_match,
            may_create: false,
        },
        EntryRequest::Delete { rtype, id, if_match } => TxOp::Delete { rtype, id, if_match },
        EntryRequest::Read { rtype, id, version } => TxOp::Read { rtype, id, version },
    }
}

/// Every interaction the entry needs, as for the single interaction: create (plus search for
/// `ifNoneExist`, plus read when a matched resource would be returned), update (plus create,
/// unless the resource is live), delete, read.
async fn authorize_entry(
    st: &AppState,
    auth: &Authenticated,
    action: &mut TxOp,
    representation: bool,
) -> Result<Vec<Authorized>, ApiError> {
    Ok(match action {
        TxOp::Create {
            rtype, if_none_exist, ..
        } => {
            let mut a = vec![authorize(auth, rtype, Interaction::Create)?];
            if if_none_exist.is_some() {
                a.push(authorize(auth, rtype, Interaction::Search)?);
                if representation {
                    a.push(authorize(auth, rtype, Interaction::Read)?);
                }
            }
            a
        }
        TxOp::Update {
            rtype,
            id,
            may_create,
            ..
        } => {
            let a = vec![authorize(auth, rtype, Interaction::Update)?];
            // Update-as-create also creates (a new resource, or one brought back after
            // delete, with or without `ifMatch`): without the create permission only live
            // resources may be updated, which the store checks again when it writes.
            *may_create = authorize(auth, rtype, Interaction::Create).is_ok();
            if !*may_create {
                match st.store.read_json(rtype, id).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound | StoreError::Gone { .. }) => return Err(ApiError::forbidden()),
                    Err(e) => return Err(e.into()),
                }
            }
            a
        }
        TxOp::Delete { rtype, .. } => vec![authorize(auth, rtype, Interaction::Delete)?],
        TxOp::Read { rtype, .. } => vec![authorize(auth, rtype, Interaction::Read)?],
    })
}

/// Whether any `reference` in `v` is an entry-local `urn:uuid:` / `urn:oid:` reference.
fn has_local_reference(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.iter().any(|(k, c)| match c {
            Value::String(s) if k == "reference" => is_local(s),
            _ => has_local_reference(c),
        }),
        Value::Array(a) => a.iter().any(has_local_reference),
        _ => false,
    }
}

fn is_local(s: &str) -> bool {
    s.starts_with("urn:uuid:") || s.starts_with("urn:oid:")
}

/// Rewrites every `reference` found in `map`; an unresolved local reference is an error.
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) -> Result<(), ()> {
    match v {
        Value::Object(o) => {
            for (k, c) in o.iter_mut() {
                match c {
                    Value::String(s) if k == "reference" => {
                        if let Some(to) = map.get(s.as_str()) {
                            *s = to.clone();
                        } else if is_local(s) {
                            return Err(());
                        }
                    }
                    _ => rewrite_references(c, map)?,
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|c| rewrite_references(c, map)),
        _ => Ok(()),
    }
}

/// The patients an operation is about to touch, for the intent record: those of the new
/// content and, for updates and deletes, those of the current version (a change can move a
/// resource between compartments). A current version that cannot be read (an integrity
/// failure, the store down) fails the operation, as for a single write: its record must not
/// lose whose compartment it leaves.
async fn intended_patients(st: &AppState, op: &TxOp) -> Result<Vec<String>, ApiError> {
    let current = |rtype: &str, id: &str| {
        let (rtype, id) = (rtype.to_owned(), id.to_owned());
        async move {
            match st.store.read(&rtype, &id).await {
                Ok(Stored {
                    resource: Some(r), ..
                }) => Ok(crate::audit::patients_of(&rtype, &id, &r)),
                Ok(_) | Err(StoreError::NotFound | StoreError::Gone { .. }) => Ok(Vec::new()),
                Err(e) => Err(ApiError::from(e)),
            }
        }
    };
    Ok(match op {
        TxOp::Create {
            rtype, id, resource, ..
        } => crate::audit::patients_of(rtype, id, resource),
        TxOp::Update {
            rtype, id, resource, ..
        } => {
            let mut p = crate::audit::patients_of(rtype, id, resource);
            p.extend(current(rtype, id).await?);
            p
        }
        TxOp::Delete { rtype, id, .. } => current(rtype, id).await?,
        TxOp::Read { .. } => Vec::new(),
    })
}

/// Commits the intent record naming every patient the writes are about to touch (when there
/// is a write).
async fn record_intent(st: &AppState, auth: &Authenticated, ops: &[&TxOp]) -> Result<(), ApiError> {
    if ops.iter().all(|op| matches!(op, TxOp::Read { .. })) {
        return Ok(());
    }
    crate::audit::record_intent(st, &auth.audit).await
}

async fn transaction(
    st: &AppState,
    auth: &Authenticated,
    mut allowed: Vec<Allowed>,
    representation: bool,
) -> Result<Response, ApiError> {
    let entry_at = |i: usize| format!("Bundle.entry[{i}]");
    // One entry per resource: two writes (or a write and a delete) of one resource are an error.
    let mut targets = HashSet::new();
    for a in &allowed {
        if let TxOp::Update { rtype, id, .. } | TxOp::Delete { rtype, id, .. } = &a.action
            && !targets.insert((rtype.clone(), id.clone()))
        {
            return Err(ApiError::bad_request(
                IssueType::BusinessRule,
                "a transaction may change each resource only once",
            )
            .at(entry_at(a.index)));
        }
    }
    // The local references that name POST or PUT entries.
    let mut local: HashMap<String, String> = HashMap::new();
    for a in &allowed {
        let target = match &a.action {
            TxOp::Create { rtype, id, .. } | TxOp::Update { rtype, id, .. } => format!("{rtype}/{id}"),
            _ => continue,
        };
        if let Some(full_url) = a.full_url.as_deref().filter(|u| is_local(u))
            && local.insert(full_url.to_owned(), target).is_some()
        {
            return Err(
                ApiError::bad_request(IssueType::Duplicate, "two entries have the same fullUrl")
                    .at(format!("{}.fullUrl", entry_at(a.index))),
            );
        }
    }
    for a in &mut allowed {
        let index = a.index;
        if let Some(resource) = resource_mut(&mut a.action) {
            rewrite_references(resource, &local).map_err(|()| {
                ApiError::bad_request(
                    IssueType::NotFound,
                    "a urn:uuid or urn:oid reference names no entry of this transaction",
                )
                .at(format!("{}.resource", entry_at(index)))
            })?;
        }
    }
    allowed.sort_by_key(|a| rank(&a.action));
    let order: Vec<usize> = allowed.iter().map(|a| a.index).collect();
    let ops: Vec<TxOp> = allowed.into_iter().map(|a| a.action).collect();

    for (k, op) in ops.iter().enumerate() {
        let patients = intended_patients(st, op).await.map_err(|e| match order.get(k) {
            Some(&i) => e.at(entry_at(i)),
            None => e,
        })?;
        auth.audit.add_patients(patients);
    }
    record_intent(st, auth, &ops.iter().collect::<Vec<_>>()).await?;
    // Reads hold at most one response's worth of stored bytes; the rest are withheld.
    let mut budget = st.config.server.max_page_bytes;
    let intent = auth.audit.intent_ref(st.audit.node());
    let outcomes = match st.store.transaction_under(&ops, budget, intent.as_ref()).await {
        Ok(o) => o,
        Err(TxError { index, error }) => {
            let err = entry_error(error);
            return Err(match index {
                Some(k) => match order.get(k) {
                    Some(&i) => err.at(entry_at(i)),
                    None => err,
                },
                None => err,
            });
        }
    };
    let mut outcomes: Vec<(usize, TxOutcome)> = order.into_iter().zip(outcomes).collect();
    outcomes.sort_by_key(|(i, _)| *i);
    let mut entries = Vec::with_capacity(outcomes.len());
    for (i, o) in outcomes {
        entries.push(success_entry(st, auth, o, representation, &mut budget).map_err(|e| e.at(entry_at(i)))?);
    }
    Ok(bundle_response("transaction-response", &entries))
}

/// Each entry on its own: whatever goes wrong with one (a refusal, a store or integrity
/// error, a panic) becomes that entry's response, and the batch answers 200 with every
/// entry's own status. Only the intent record, before anything is written, fails it whole.
async fn batch(
    st: &AppState,
    auth: &Authenticated,
    planned: Vec<Result<Allowed, ApiError>>,
    representation: bool,
) -> Result<Response, ApiError> {
    let mut ops: Vec<Result<TxOp, ApiError>> = Vec::with_capacity(planned.len());
    for p in planned {
        let op = match p {
            Ok(a) => match intended_patients(st, &a.action).await {
                Ok(patients) => {
                    auth.audit.add_patients(patients);
                    Ok(a.action)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        ops.push(op);
    }
    record_intent(
        st,
        auth,
        &ops.iter().filter_map(|o| o.as_ref().ok()).collect::<Vec<_>>(),
    )
    .await?;
    let mut budget = st.config.server.max_page_bytes;
    let mut entries = Vec::with_capacity(ops.len());
    for (index, op) in ops.into_iter().enumerate() {
        let result = match op {
            Err(e) => Err(e),
            Ok(op) => isolated(run_batch_entry(st, auth, op, representation, &mut budget)).await,
        };
        entries.push(result.unwrap_or_else(|e| {
            if e.status.is_server_error() {
                tracing::error!(entry = index, status = e.status.as_u16(), "batch entry failed");
            }
            failure_entry(e)
        }));
    }
    Ok(bundle_response("batch-response", &entries))
}

/// Runs `entry`, turning a panic inside it into a 500 of that entry alone (the panic hook has
/// logged where; a store transaction it held rolls back when dropped).
async fn isolated<T, F>(entry: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<T, ApiError>>,
{
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(entry)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("a batch entry panicked")))
}

/// One batch entry, in its own store transaction (a read needs none and is not parsed).
async fn run_batch_entry(
    st: &AppState,
    auth: &Authenticated,
    op: TxOp,
    representation: bool,
    budget: &mut usize,
) -> Result<EntryOut, ApiError> {
    let outcome = match &op {
        TxOp::Read { rtype, id, version } => match version {
            Some(v) => st.store.vread_json(rtype, id, *v).await,
            None => st.store.read_json(rtype, id).await,
        }
        .map(TxOutcome::Read)
        .map_err(entry_error)?,
        _ => st
            .store
            .transaction_under(
                std::slice::from_ref(&op),
                usize::MAX,
                auth.audit.intent_ref(st.audit.node()).as_ref(),
            )
            .await
            .map_err(|e| entry_error(e.error))?
            .pop()
            .ok_or_else(|| ApiError::internal("a transaction returned no outcome"))?,
    };
    match outcome {
        // As the single DELETE: a resource that never existed is a 404.
        TxOutcome::Deleted(None) => Err(ApiError::not_found()),
        outcome => success_entry(st, auth, outcome, representation, budget),
    }
}

/// The answer to a store error of an entry.
fn entry_error(e: StoreError) -> ApiError {
    match e {
        StoreError::MultipleMatches => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            IssueType::MultipleMatches,
            "ifNoneExist criteria match more than one resource",
        ),
        other => ApiError::from(other),
    }
}

fn status_line(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

/// One entry of a batch or transaction response. Its resource is JSON bytes: stored ones as
/// they are (never parsed), a representation serialized once.
struct EntryOut {
    full_url: Option<String>,
    resource: Option<Zeroizing<Vec<u8>>>,
    response: Value,
}

fn failure_entry(e: ApiError) -> EntryOut {
    EntryOut {
        full_url: None,
        resource: None,
        response: json!({
            "status": status_line(e.status),
            "outcome": ward_fhir::outcome::operation_outcome(&[e.issue], crate::request_id::current().as_deref()),
        }),
    }
}

/// Why a resource is not in its entry: the response already carries `server.max_page_bytes`
/// of resources.
const TOO_LARGE: &str =
    "the Bundle response has no room left for this resource (server.max_page_bytes); read it on its own";

/// Takes `len` bytes from what the response may still carry, if they fit.
fn take(budget: &mut usize, len: usize) -> bool {
    match budget.checked_sub(len) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

/// The response entry of a successful operation; notes the resource in the audit record.
/// Resources (reads and representations) are carried while `budget` lasts: past it a read
/// entry is a 413 with an OperationOutcome, and a write answers without its representation
/// (as `return=minimal`) and says why in `response.outcome`.
fn success_entry(
    st: &AppState,
    auth: &Authenticated,
    outcome: TxOutcome,
    representation: bool,
    budget: &mut usize,
) -> Result<EntryOut, ApiError> {
    let (status, stored, location) = match outcome {
        TxOutcome::Created(s) => (StatusCode::CREATED, s, true),
        TxOutcome::Matched(s) => (StatusCode::OK, s, true),
        TxOutcome::Updated { stored, created } => (
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            stored,
            true,
        ),
        TxOutcome::Deleted(Some(s)) => (StatusCode::NO_CONTENT, s, false),
        TxOutcome::Deleted(None) => {
            // Deleting what never existed: nothing to undo, nothing to report (FHIR allows 204).
            return Ok(EntryOut {
                full_url: None,
                resource: None,
                response: json!({ "status": status_line(StatusCode::NO_CONTENT) }),
            });
        }
        TxOutcome::Read(mut s) => {
            if !take(budget, s.json.len()) {
                return Ok(too_large());
            }
            match crate::fhir::patients_of_json(&s) {
                Ok(ids) => auth.audit.add_patients_of(&s.rtype, &s.id, s.version, ids),
                // A transaction's reads are answered after its commit: an error here would
                // report committed writes as failed. The record names the version instead.
                Err(_) => auth.audit.add_patients_via(&s.rtype, &s.id, s.version),
            }
            auth.audit.add_returned(1);
            // The bytes move into the entry: no second plaintext copy.
            let json = Zeroizing::new(std::mem::take(&mut *s.json));
            let response = version_response(StatusCode::OK, s.version, s.last_updated);
            return Ok(EntryOut {
                full_url: Some(format!("{}/{}/{}", st.fhir_base, s.rtype, s.id)),
                resource: Some(json),
                response,
            });
        }
        TxOutcome::ReadWithheld { .. } => return Ok(too_large()),
    };
    if let Some(r) = &stored.resource {
        auth.audit.add_patients_of(
            &stored.rtype,
            &stored.id,
            stored.version,
            crate::audit::patients_of(&stored.rtype, &stored.id, r),
        );
        auth.audit.add_returned(1);
    }
    let mut response = version_response(status, stored.version, stored.last_updated);
    if location {
        crate::set_field(
            &mut response,
            "location",
            json!(format!(
                "{}/{}/{}/_history/{}",
                st.fhir_base, stored.rtype, stored.id, stored.version
            )),
        );
    }
    let mut resource = None;
    if representation && let Some(r) = &stored.resource {
        let json = Zeroizing::new(
            serde_json::to_vec(r).map_err(|_| ApiError::internal("resource serialization failed"))?,
        );
        if take(budget, json.len()) {
            resource = Some(json);
        } else {
            crate::set_field(
                &mut response,
                "outcome",
                ward_fhir::outcome::operation_outcome(
                    &[ward_fhir::outcome::Issue {
                        severity: ward_fhir::outcome::Severity::Warning,
                        code: IssueType::TooCostly,
                        diagnostics: TOO_LARGE.into(),
                        expression: None,
                    }],
                    crate::request_id::current().as_deref(),
                ),
            );
        }
    }
    Ok(EntryOut {
        full_url: Some(format!("{}/{}/{}", st.fhir_base, stored.rtype, stored.id)),
        resource,
        response,
    })
}

fn version_response(status: StatusCode, version: i64, last_updated: OffsetDateTime) -> Value {
    json!({
        "status": status_line(status),
        "etag": format!("W/\"{version}\""),
        "lastModified": ward_store::format_instant(last_updated),
    })
}

/// A read entry whose resource does not fit the response.
fn too_large() -> EntryOut {
    failure_entry(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        IssueType::TooCostly,
        TOO_LARGE,
    ))
}

/// A batch or transaction response, serialized in this field order.
#[derive(Serialize)]
struct ResponseBundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: Value,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<ResponseEntry<'a>>,
}

#[derive(Serialize)]
struct ResponseEntry<'a> {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    full_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<Resource<'a>>,
    response: &'a Value,
}

/// 200 with the response Bundle, each resource's bytes written as they are
/// ([`crate::response::bundle_response`]).
fn bundle_response(kind: &'static str, entries: &[EntryOut]) -> Response {
    let mut entry = Vec::with_capacity(entries.len());
    for e in entries {
        let resource = match &e.resource {
            Some(json) => match Resource::raw(json) {
                Ok(r) => Some(r),
                Err(e) => return e.into_response(),
            },
            None => None,
        };
        entry.push(ResponseEntry {
            full_url: e.full_url.as_deref(),
            resource,
            response: &e.response,
        });
    }
    let bundle = ResponseBundle {
        resource_type: "Bundle",
        id: uuid::Uuid::new_v4().to_string(),
        meta: json!({ "lastUpdated": ward_store::format_instant(OffsetDateTime::now_utc()) }),
        kind,
        entry,
    };
    let hint = entries
        .iter()
        .filter_map(|e| e.resource.as_ref())
        .map(|j| j.len())
        .sum();
    crate::response::bundle_response(&bundle, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_nested_local_references() {
        let map = HashMap::from([("urn:uuid:a".to_owned(), "Patient/1".to_owned())]);
        let mut v = json!({
            "subject": {"reference": "urn:uuid:a"},
            "hasMember": [{"reference": "urn:uuid:a"}, {"reference": "Observation/x"}],
            "identifier": [{"value": "urn:uuid:a"}],
            "extension": [{"url": "u", "valueReference": {"reference": "urn:uuid:a"}}]
        });
        rewrite_references(&mut v, &map).unwrap();
        assert_eq!(v["subject"]["reference"], "Patient/1");
        assert_eq!(v["hasMember"][0]["reference"], "Patient/1");
        assert_eq!(v["hasMember"][1]["reference"], "Observation/x");
        assert_eq!(
            v["identifier"][0]["value"], "urn:uuid:a",
            "only references are rewritten"
        );
        assert_eq!(v["extension"][0]["valueReference"]["reference"], "Patient/1");
        assert!(!has_local_reference(&v));
        let mut unresolved = json!({"subject": {"reference": "urn:uuid:b"}});
        assert!(has_local_reference(&unresolved));
        assert!(rewrite_references(&mut unresolved, &map).is_err());
    }

    /// Any failure of one batch entry, a panic included, is that entry's error: the others
    /// still run and the batch still answers.
    #[tokio::test]
    async fn a_panicking_batch_entry_fails_alone() {
        let ok = isolated(async { Ok(json!({"response": {"status": "201 Created"}})) }).await;
        assert_eq!(ok.unwrap()["response"]["status"], "201 Created");
        let failed = isolated::<Value, _>(async { Err(ApiError::not_found()) }).await;
        assert_eq!(failed.unwrap_err().status, StatusCode::NOT_FOUND);
        let panicked = isolated(async {
            if true {
                panic!("entry blew up");
            }
            Ok(Value::Null)
        })
        .await;
        let e = panicked.unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(failure_entry(e).response["status"], "500 Internal Server Error");
    }
}
