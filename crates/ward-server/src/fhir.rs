//! FHIR R4 REST interactions (SPEC F-1, IN-1, IN-2, SEC-1): create, read, vread, update,
//! delete and instance/type history. Every handler authenticates, authorizes, validates,
//! then calls the store through [`DataAccess`], which needs an [`Authorized`].

use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ward_auth::Interaction;
use ward_fhir::outcome::IssueType;
use ward_store::{StoreError, Stored, StoredJson, TxOp, TxOutcome};

use crate::audit::{own_compartment, patients_of};
use crate::auth::{Authenticated, Authorized, authorize};
use crate::error::{ApiError, FHIR_JSON};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", post(crate::bundle::bundle))
        .route("/metadata", get(crate::capability::metadata))
        .route("/_history", get(crate::search::history_system))
        .route("/{rtype}", get(crate::search::search_type).post(create))
        .route("/{rtype}/_search", post(crate::search::search_type_post))
        .route("/{rtype}/_history", get(history_type))
        .route("/{rtype}/{id}", get(read).put(update).delete(delete))
        .route("/{rtype}/{id}/_history", get(history_instance))
        .route("/{rtype}/{id}/_history/{vid}", get(vread))
        .route("/{rtype}/{id}/{ctype}", get(crate::search::search_compartment))
}

/// The store, reachable only with an authorization for the matching interaction. Every
/// call also fills in the request's audit record; writes commit an intent record first.
pub(crate) struct DataAccess<'a> {
    st: &'a AppState,
    authz: &'a Authorized,
}

impl<'a> DataAccess<'a> {
    pub(crate) fn new(st: &'a AppState, authz: &'a Authorized) -> Self {
        DataAccess { st, authz }
    }

    fn rtype_for(&self, interaction: Interaction) -> Result<&'a str, ApiError> {
        if self.authz.interaction() == interaction {
            Ok(self.authz.rtype())
        } else {
            Err(ApiError::internal("authorization does not match the interaction"))
        }
    }

    /// Notes a version that is about to leave (or was changed) in the audit record.
    fn touched(&self, stored: &Stored) {
        let audit = self.authz.audit();
        audit.set_resource(&stored.rtype, Some(&stored.id), Some(stored.version));
        if let Some(r) = &stored.resource {
            audit.add_patients_of(
                &stored.rtype,
                &stored.id,
                stored.version,
                patients_of(&stored.rtype, &stored.id, r),
            );
            audit.add_returned(1);
        }
    }

    /// Notes one entry of a list (history): its patients and the count, not its id.
    fn listed(&self, stored: &Stored) {
        if let Some(r) = &stored.resource {
            let audit = self.authz.audit();
            audit.add_patients_of(
                &stored.rtype,
                &stored.id,
                stored.version,
                patients_of(&stored.rtype, &stored.id, r),
            );
            audit.add_returned(1);
        }
    }

    /// The current version as stored JSON: a read sends the verified bytes without parsing
    /// them again.
    async fn read(&self, id: &str) -> Result<StoredJson, ApiError> {
        let rtype = self.rtype_for(Interaction::Read)?;
        self.authz.audit().set_resource(rtype, Some(id), None);
        let stored = self.st.store.read_json(rtype, id).await?;
        self.touched_json(&stored)?;
        Ok(stored)
    }

    async fn vread(&self, id: &str, version: i64) -> Result<StoredJson, ApiError> {
        let rtype = self.rtype_for(Interaction::Read)?;
        self.authz.audit().set_resource(rtype, Some(id), Some(version));
        let stored = self.st.store.vread_json(rtype, id, version).await?;
        self.touched_json(&stored)?;
        Ok(stored)
    }

    /// [`DataAccess::touched`] for unparsed JSON.
    fn touched_json(&self, stored: &StoredJson) -> Result<(), ApiError> {
        let audit = self.authz.audit();
        audit.set_resource(&stored.rtype, Some(&stored.id), Some(stored.version));
        audit.add_patients_of(
            &stored.rtype,
            &stored.id,
            stored.version,
            patients_of_json(stored)?,
        );
        audit.add_returned(1);
        Ok(())
    }

    /// Notes the patients of the live current version (the "before" side of a change) and
    /// returns the current version number (a tombstone's, or 0 when there is none). Any other
    /// failure (a version failing its
    /// integrity check, the store down) fails the change: its audit record must not lose whose
    /// compartment it leaves.
    async fn note_current_patients(&self, rtype: &str, id: &str) -> Result<i64, ApiError> {
        match self.st.store.read_json(rtype, id).await {
            Ok(current) => {
                let ids = patients_of_json(&current)?;
                self.authz
                    .audit()
                    .add_patients_of(rtype, id, current.version, ids);
                Ok(current.version)
            }
            Err(StoreError::NotFound) => Ok(0),
            Err(StoreError::Gone { version, .. }) => Ok(version),
            Err(e) => Err(e.into()),
        }
    }

    /// Instance history needs Read, type history Search.
    /// A search of the authorized type. `_include` fetches (an `_id` search of the target
    /// type) run under a Read authorization, everything else under Search.
    pub(crate) async fn search(
        &self,
        q: &ward_fhir::search::SearchQuery,
    ) -> Result<ward_store::SearchPage, StoreError> {
        let allowed = matches!(self.authz.interaction(), Interaction::Search | Interaction::Read);
        if !allowed || q.rtype != self.authz.rtype() {
            return Err(StoreError::Corrupt(
                "authorization does not match the search".into(),
            ));
        }
        self.st.store.search(q).await
    }

    /// Every type's history; needs an authorization for `*` (see `authorize`).
    pub(crate) async fn history_all(&self, params: &HistoryParams) -> Result<Vec<Stored>, ApiError> {
        if self.rtype_for(Interaction::Search)? != "*" {
            return Err(ApiError::internal(
                "system history needs an authorization for every type",
            ));
        }
        let versions = self
            .st
            .store
            .history(None, None, params.since, params.count)
            .await?;
        versions.iter().for_each(|v| self.listed(v));
        Ok(versions)
    }

    async fn history(&self, id: Option<&str>, params: &HistoryParams) -> Result<Vec<Stored>, ApiError> {
        let rtype = self.rtype_for(if id.is_some() {
            Interaction::Read
        } else {
            Interaction::Search
        })?;
        if let Some(id) = id {
            // History of a resource that never existed is a 404, not an empty bundle.
            match self.st.store.read_json(rtype, id).await {
                Ok(_) | Err(StoreError::Gone { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let versions = self
            .st
            .store
            .history(Some(rtype), id, params.since, params.count)
            .await?;
        versions.iter().for_each(|v| self.listed(v));
        Ok(versions)
    }

    /// Creates with a server-assigned id, chosen before the intent record so the trail
    /// names the resource even if the process dies mid-write. With `if_none_exist` the
    /// search and the create run in one store transaction (no duplicate from a race); a
    /// single match is returned instead, with `created == false`.
    async fn create(
        &self,
        resource: Value,
        if_none_exist: Option<Vec<(String, String)>>,
    ) -> Result<(Stored, bool), ApiError> {
        let rtype = self.rtype_for(Interaction::Create)?;
        let id = uuid::Uuid::new_v4().to_string();
        let audit = self.authz.audit();
        audit.set_resource(rtype, Some(&id), Some(1));
        audit.add_patients_of(rtype, &id, 1, patients_of(rtype, &id, &resource));
        crate::audit::record_intent(self.st, audit).await?;
        let op = TxOp::Create {
            rtype: rtype.to_owned(),
            id,
            resource,
            if_none_exist,
        };
        let outcome = self
            .st
            .store
            .transaction(std::slice::from_ref(&op))
            .await
            .map_err(|e| e.error)?;
        let (stored, created) = match outcome.into_iter().next() {
            Some(TxOutcome::Created(s)) => (s, true),
            Some(TxOutcome::Matched(s)) => (s, false),
            _ => return Err(ApiError::internal("unexpected outcome of a create")),
        };
        self.touched(&stored);
        Ok((stored, created))
    }

    /// Whether a live (not deleted) resource has this id; touches nothing in the audit record.
    async fn is_live(&self, id: &str) -> Result<bool, ApiError> {
        let rtype = self.rtype_for(Interaction::Update)?;
        match self.st.store.read_json(rtype, id).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound | StoreError::Gone { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn update(
        &self,
        id: &str,
        resource: Value,
        if_match: Option<i64>,
    ) -> Result<(Stored, bool), ApiError> {
        let rtype = self.rtype_for(Interaction::Update)?;
        let audit = self.authz.audit();
        audit.set_resource(rtype, Some(id), None);
        // A change can move a resource between compartments: both patients are touched.
        let current = self.note_current_patients(rtype, id).await?;
        // The version this update will make, as far as it can be known before it: the final
        // record names the version actually stored.
        let next = current + 1;
        audit.add_patients_of(rtype, id, next, patients_of(rtype, id, &resource));
        crate::audit::record_intent(self.st, audit).await?;
        let (stored, created) = self.st.store.update(rtype, id, resource, if_match).await?;
        self.touched(&stored);
        Ok((stored, created))
    }

    async fn delete(&self, id: &str, if_match: Option<i64>) -> Result<Option<Stored>, ApiError> {
        let rtype = self.rtype_for(Interaction::Delete)?;
        let audit = self.authz.audit();
        audit.set_resource(rtype, Some(id), None);
        self.note_current_patients(rtype, id).await?;
        crate::audit::record_intent(self.st, audit).await?;
        let tombstone = self.st.store.delete(rtype, id, if_match).await?;
        if let Some(t) = &tombstone {
            audit.set_resource(rtype, Some(id), Some(t.version));
        }
        Ok(tombstone)
    }
}

async fn create(
    State(st): State<AppState>,
    auth: Authenticated,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rtype = resource_type(&rtype)?;
    let authz = authorize(&auth, rtype, Interaction::Create)?;
    let conditional = match headers.get("if-none-exist") {
        // A conditional create answers "does a match exist?": that is a search.
        Some(v) => {
            authorize(&auth, rtype, Interaction::Search)?;
            Some(parse_criteria(v)?)
        }
        None => None,
    };
    let prefer = Prefer::from_headers(&headers);
    let resource = read_resource(&st, &headers, body, rtype).await?;
    let (stored, created) = DataAccess::new(&st, &authz).create(resource, conditional).await?;
    if created {
        return Ok(resource_response(&st, StatusCode::CREATED, &stored, prefer, true));
    }
    // The criteria matched an existing resource: returning it is a read.
    authorize(&auth, rtype, Interaction::Read)?;
    Ok(resource_response(&st, StatusCode::OK, &stored, prefer, false))
}

async fn read(
    State(st): State<AppState>,
    auth: Authenticated,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (rtype, id) = (resource_type(&rtype)?, resource_id(&id)?);
    check_accept(&headers)?;
    let authz = authorize(&auth, rtype, Interaction::Read)?;
    let stored = DataAccess::new(&st, &authz).read(id).await?;
    Ok(json_response(stored))
}

async fn vread(
    State(st): State<AppState>,
    auth: Authenticated,
    Path((rtype, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (rtype, id) = (resource_type(&rtype)?, resource_id(&id)?);
    check_accept(&headers)?;
    let version =
        vid.parse::<i64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
            ApiError::bad_request(IssueType::Value, "version id must be a positive integer")
        })?;
    let authz = authorize(&auth, rtype, Interaction::Read)?;
    let stored = DataAccess::new(&st, &authz).vread(id, version).await?;
    Ok(json_response(stored))
}

async fn update(
    State(st): State<AppState>,
    auth: Authenticated,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (rtype, id) = (resource_type(&rtype)?, resource_id(&id)?);
    let authz = authorize(&auth, rtype, Interaction::Update)?;
    let if_match = parse_if_match(&headers)?;
    let prefer = Prefer::from_headers(&headers);
    let resource = read_resource(&st, &headers, body, rtype).await?;
    match resource.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                IssueType::Value,
                "resource id does not match the id in the URL",
            )
            .at(format!("{rtype}.id")));
        }
        None => {
            return Err(
                ApiError::bad_request(IssueType::Required, "resource id is required for update")
                    .at(format!("{rtype}.id")),
            );
        }
    }
    // Update-as-create also creates (a new resource, or one brought back after delete):
    // without the create permission only live resources may be updated.
    if if_match.is_none() && authorize(&auth, rtype, Interaction::Create).is_err() {
        let live = DataAccess::new(&st, &authz).is_live(id).await?;
        if !live {
            return Err(ApiError::forbidden());
        }
    }
    let (stored, created) = DataAccess::new(&st, &authz)
        .update(id, resource, if_match)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(resource_response(&st, status, &stored, prefer, created))
}

async fn delete(
    State(st): State<AppState>,
    auth: Authenticated,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (rtype, id) = (resource_type(&rtype)?, resource_id(&id)?);
    let authz = authorize(&auth, rtype, Interaction::Delete)?;
    let if_match = parse_if_match(&headers)?;
    match DataAccess::new(&st, &authz).delete(id, if_match).await? {
        Some(tombstone) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            version_headers(resp.headers_mut(), tombstone.version, tombstone.last_updated);
            Ok(resp)
        }
        None => Err(ApiError::not_found()),
    }
}

async fn history_instance(
    State(st): State<AppState>,
    auth: Authenticated,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (rtype, id) = (resource_type(&rtype)?, resource_id(&id)?);
    check_accept(&headers)?;
    let authz = authorize(&auth, rtype, Interaction::Read)?;
    let params = HistoryParams::parse(query.as_deref(), st.config.server.max_page_size)?;
    let versions = DataAccess::new(&st, &authz).history(Some(id), &params).await?;
    Ok(history_bundle(&st, &format!("{rtype}/{id}/_history"), &versions))
}

async fn history_type(
    State(st): State<AppState>,
    auth: Authenticated,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rtype = resource_type(&rtype)?;
    check_accept(&headers)?;
    let authz = authorize(&auth, rtype, Interaction::Search)?;
    let params = HistoryParams::parse(query.as_deref(), st.config.server.max_page_size)?;
    let versions = DataAccess::new(&st, &authz).history(None, &params).await?;
    Ok(history_bundle(&st, &format!("{rtype}/_history"), &versions))
}

/// A known R4 resource type from the path, else 404 (an unknown type is no endpoint).
fn resource_type(s: &str) -> Result<&str, ApiError> {
    if ward_fhir::types::is_resource_type(s) {
        Ok(s)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            IssueType::NotSupported,
            "unknown resource type",
        ))
    }
}

fn resource_id(s: &str) -> Result<&str, ApiError> {
    if ward_fhir::id::is_valid_id(s) {
        Ok(s)
    } else {
        Err(ApiError::bad_request(IssueType::Value, "malformed resource id"))
    }
}

/// Accept must allow JSON when it is given at all.
pub(crate) fn check_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|part| {
        let mime = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(
            mime.as_str(),
            "application/fhir+json" | "application/json" | "application/*" | "*/*" | ""
        )
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueType::NotSupported,
            "only application/fhir+json is offered",
        ))
    }
}

/// Content type, size, strict JSON parse and schema validation, in that order; nothing is
/// stored unless all pass.
async fn read_resource(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    rtype: &str,
) -> Result<Value, ApiError> {
    let value = read_json(st, headers, body).await?;
    st.validator.validate(&value, rtype)?;
    Ok(value)
}

/// The checks of [`read_resource`] before schema validation: Accept, content type, size and
/// strict JSON parse.
pub(crate) async fn read_json(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    check_accept(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = content_type.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset_ok = parts.all(|p| {
        let p = p.trim().to_ascii_lowercase();
        p.is_empty() || p == "charset=utf-8" || p.starts_with("fhirversion=4.0")
    });
    if !matches!(mime.as_str(), "application/fhir+json" | "application/json") || !charset_ok {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "Content-Type must be application/fhir+json or application/json (UTF-8)",
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            "request body exceeds the configured limit",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.limits.max_bytes) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, st.limits.max_bytes)
        .await
        .map_err(|_| too_large())?;
    Ok(ward_fhir::json::parse_strict(&bytes, &st.limits)?)
}

pub(crate) fn parse_if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(IssueType::Value, "If-Match must be an ETag like W/\"3\"");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let n = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(bad)?;
    Ok(Some(n))
}

/// `If-None-Exist: identifier=sys|123&family=x` as (param, value) pairs.
pub(crate) fn parse_criteria(v: &HeaderValue) -> Result<Vec<(String, String)>, ApiError> {
    let s = v
        .to_str()
        .map_err(|_| ApiError::bad_request(IssueType::Value, "If-None-Exist must be a search query"))?;
    let s = s.trim_start_matches('?');
    let criteria: Vec<(String, String)> = form_urlencoded::parse(s.as_bytes()).into_owned().collect();
    if criteria.is_empty() || criteria.iter().any(|(k, v)| k.is_empty() || v.is_empty()) {
        return Err(ApiError::bad_request(
            IssueType::Value,
            "If-None-Exist must be a non-empty search query",
        ));
    }
    Ok(criteria)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefer {
    Representation,
    Minimal,
    OperationOutcome,
}

impl Prefer {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer::Representation;
        for v in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
            for token in v.split(',').map(str::trim) {
                match token {
                    "return=minimal" => prefer = Prefer::Minimal,
                    "return=representation" => prefer = Prefer::Representation,
                    "return=OperationOutcome" => prefer = Prefer::OperationOutcome,
                    _ => {}
                }
            }
        }
        prefer
    }
}

fn version_headers(headers: &mut HeaderMap, version: i64, last_updated: OffsetDateTime) {
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        headers.insert(header::ETAG, v);
    }
    let modified = httpdate::fmt_http_date(SystemTime::from(last_updated));
    if let Ok(v) = HeaderValue::from_str(&modified) {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

/// The patients whose compartment a stored version is in, parsing it only when its type
/// does not say (see [`own_compartment`]).
fn patients_of_json(stored: &StoredJson) -> Result<Vec<String>, StoreError> {
    match own_compartment(&stored.rtype, &stored.id) {
        Some(p) => Ok(p),
        None => Ok(ward_fhir::search::patient_compartment(&stored.value()?)),
    }
}

/// 200 with a version's stored JSON as the body. The bytes move into the body rather than
/// being copied: no second plaintext copy is left behind.
fn json_response(mut stored: StoredJson) -> Response {
    let body = std::mem::take(&mut *stored.json);
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, FHIR_JSON)], body).into_response();
    version_headers(resp.headers_mut(), stored.version, stored.last_updated);
    resp
}

fn resource_response(
    st: &AppState,
    status: StatusCode,
    stored: &Stored,
    prefer: Prefer,
    location: bool,
) -> Response {
    let body = match prefer {
        Prefer::Representation => stored
            .resource
            .as_ref()
            .map(|r| serde_json::to_vec(r).unwrap_or_default()),
        Prefer::Minimal => None,
        Prefer::OperationOutcome => Some(
            serde_json::to_vec(&ward_fhir::outcome::operation_outcome(
                &[ward_fhir::outcome::Issue {
                    severity: ward_fhir::outcome::Severity::Information,
                    code: IssueType::Informational,
                    diagnostics: "ok".into(),
                    expression: None,
                }],
                crate::request_id::current().as_deref(),
            ))
            .unwrap_or_default(),
        ),
    };
    let mut resp = match body {
        Some(b) => (status, [(header::CONTENT_TYPE, FHIR_JSON)], b).into_response(),
        None => status.into_response(),
    };
    version_headers(resp.headers_mut(), stored.version, stored.last_updated);
    if location {
        let url = format!(
            "{}/{}/{}/_history/{}",
            st.fhir_base, stored.rtype, stored.id, stored.version
        );
        if let Ok(v) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    resp
}

pub(crate) struct HistoryParams {
    pub(crate) count: usize,
    pub(crate) since: Option<OffsetDateTime>,
}

impl HistoryParams {
    const DEFAULT_COUNT: usize = 50;

    pub(crate) fn parse(query: Option<&str>, max: usize) -> Result<Self, ApiError> {
        let mut p = HistoryParams {
            count: Self::DEFAULT_COUNT.min(max),
            since: None,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "_count" => {
                    p.count = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                IssueType::Value,
                                format!("_count must be between 1 and {max}"),
                            )
                            .at("_count")
                        })?;
                }
                "_since" => {
                    p.since = Some(OffsetDateTime::parse(&v, &Rfc3339).map_err(|_| {
                        ApiError::bad_request(
                            IssueType::Value,
                            "_since must be an instant like 2026-01-01T00:00:00Z",
                        )
                        .at("_since")
                    })?);
                }
                "_format" if matches!(v.as_ref(), "json" | "application/fhir+json" | "application/json") => {}
                other => {
                    return Err(ApiError::bad_request(
                        IssueType::NotSupported,
                        format!("parameter '{other}' is not supported for history"),
                    ));
                }
            }
        }
        Ok(p)
    }
}

pub(crate) fn history_bundle(st: &AppState, self_path: &str, versions: &[Stored]) -> Response {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| {
            let (method, status) = if v.deleted {
                ("DELETE", "204 No Content")
            } else if v.version == 1 {
                ("POST", "201 Created")
            } else {
                ("PUT", "200 OK")
            };
            let url = if method == "POST" {
                v.rtype.clone()
            } else {
                format!("{}/{}", v.rtype, v.id)
            };
            let mut entry = json!({
                "fullUrl": format!("{}/{}/{}", st.fhir_base, v.rtype, v.id),
                "request": { "method": method, "url": url },
                "response": {
                    "status": status,
                    "etag": format!("W/\"{}\"", v.version),
                    "lastModified": ward_store::format_instant(v.last_updated),
                },
            });
            if let Some(r) = &v.resource {
                entry["resource"] = r.clone();
            }
            entry
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": { "lastUpdated": ward_store::format_instant(OffsetDateTime::now_utc()) },
        "type": "history",
        "link": [{ "relation": "self", "url": format!("{}/{}", st.fhir_base, self_path) }],
        "entry": entries,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        serde_json::to_vec(&bundle).unwrap_or_default(),
    )
        .into_response()
}
