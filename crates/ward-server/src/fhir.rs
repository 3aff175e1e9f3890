//! FHIR R4 REST interactions (SPEC F-1, IN-1, IN-2, SEC-1): create, read, vread, update,
//! delete and instance/type history. Every handler authenticates, authorizes, validates,
//! then calls the store through [`DataAccess`], which needs an [`Authorized`].

use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, RawPathParams, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ward_auth::Interaction;
use ward_fhir::outcome::IssueType;
use ward_store::{
    HistoryPage, HistoryQuery, HistoryVersion, StoreError, Stored, StoredJson, TxOp, TxOutcome,
};

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

    /// The audit intent this request's write runs under (after `record_intent`).
    fn intent(&self) -> Option<ward_store::IntentRef> {
        self.authz.audit().intent_ref(self.st.audit.node())
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
    fn listed(&self, v: &HistoryVersion) -> Result<(), StoreError> {
        if let Some(json) = &v.json {
            let audit = self.authz.audit();
            audit.add_patients_of(
                &v.meta.rtype,
                &v.meta.id,
                v.meta.version,
                patients_of_bytes(&v.meta.rtype, &v.meta.id, json)?,
            );
            audit.add_returned(1);
        }
        Ok(())
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
    /// returns whether there is one, with the current version number (a tombstone's, or 0 when
    /// there is none). Any other failure (a version failing its integrity check, the store
    /// down) fails the change: its audit record must not lose whose compartment it leaves.
    async fn note_current_patients(&self, rtype: &str, id: &str) -> Result<(bool, i64), ApiError> {
        match self.st.store.read_json(rtype, id).await {
            Ok(current) => {
                let ids = patients_of_json(&current)?;
                self.authz
                    .audit()
                    .add_patients_of(rtype, id, current.version, ids);
                Ok((true, current.version))
            }
            Err(StoreError::NotFound) => Ok((false, 0)),
            Err(StoreError::Gone { version, .. }) => Ok((false, version)),
            Err(e) => Err(e.into()),
        }
    }

    /// Instance history needs Read, type history Search.
    /// A search of the authorized type. `_include` fetches (an `_id` search of the target
    /// type) run under a Read authorization, everything else under Search.
    pub(crate) async fn search(
        &self,
        q: &ward_fhir::search::SearchQuery,
        max_bytes: usize,
    ) -> Result<ward_store::SearchPage, StoreError> {
        let allowed = matches!(self.authz.interaction(), Interaction::Search | Interaction::Read);
        if !allowed || q.rtype != self.authz.rtype() {
            return Err(StoreError::Corrupt(
                "authorization does not match the search".into(),
            ));
        }
        self.st.store.search(q, max_bytes).await
    }

    /// Every type's history; needs an authorization for `*` (see `authorize`).
    pub(crate) async fn history_all(&self, params: &HistoryParams) -> Result<HistoryPage, ApiError> {
        if self.rtype_for(Interaction::Search)? != "*" {
            return Err(ApiError::internal(
                "system history needs an authorization for every type",
            ));
        }
        self.history_page(None, None, params).await
    }

    /// A page of history within `server.max_page_bytes`, each version noted in the audit record.
    async fn history_page(
        &self,
        rtype: Option<&str>,
        id: Option<&str>,
        params: &HistoryParams,
    ) -> Result<HistoryPage, ApiError> {
        let q = HistoryQuery {
            rtype,
            id,
            since: params.since,
            count: params.count,
            cursor: params.cursor.as_deref(),
            holder: Some(self.authz.client_id()),
        };
        let page = self
            .st
            .store
            .history_page(&q, self.st.config.server.max_page_bytes)
            .await
            .map_err(|e| match e {
                StoreError::InvalidCursor => {
                    ApiError::bad_request(IssueType::Value, "invalid or expired paging cursor").at("_cursor")
                }
                other => other.into(),
            })?;
        for v in &page.versions {
            self.listed(v)?;
        }
        Ok(page)
    }

    async fn history(&self, id: Option<&str>, params: &HistoryParams) -> Result<HistoryPage, ApiError> {
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
        self.history_page(Some(rtype), id, params).await
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
            .transaction_under(std::slice::from_ref(&op), usize::MAX, self.intent().as_ref())
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

    /// A new version of `id`. Without `may_create` (the caller lacks the create permission)
    /// only a live resource is updated: a new id, or a deleted one brought back (also with
    /// `If-Match` naming its tombstone), is a create and answers 403; the store decides it
    /// again inside its transaction, so a delete racing in cannot turn this into a revive.
    async fn update(
        &self,
        id: &str,
        resource: Value,
        if_match: Option<i64>,
        may_create: bool,
    ) -> Result<(Stored, bool), ApiError> {
        let rtype = self.rtype_for(Interaction::Update)?;
        let audit = self.authz.audit();
        audit.set_resource(rtype, Some(id), None);
        // A change can move a resource between compartments: both patients are touched.
        let (live, current) = self.note_current_patients(rtype, id).await?;
        if !live && !may_create {
            return Err(ApiError::forbidden());
        }
        // The version this update will make, as far as it can be known before it: the final
        // record names the version actually stored.
        let next = current.saturating_add(1);
        audit.add_patients_of(rtype, id, next, patients_of(rtype, id, &resource));
        crate::audit::record_intent(self.st, audit).await?;
        let op = TxOp::Update {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            resource,
            if_match,
            may_create,
        };
        let outcome = self
            .st
            .store
            .transaction_under(std::slice::from_ref(&op), usize::MAX, self.intent().as_ref())
            .await;
        let (stored, created) = match outcome.map_err(|e| e.error).map(|mut o| o.pop()) {
            Ok(Some(TxOutcome::Updated { stored, created })) => (stored, created),
            Err(StoreError::NotFound | StoreError::Gone { .. }) if !may_create => {
                return Err(ApiError::forbidden());
            }
            Err(e) => return Err(e.into()),
            Ok(_) => return Err(ApiError::internal("unexpected outcome of an update")),
        };
        self.touched(&stored);
        Ok((stored, created))
    }

    async fn delete(&self, id: &str, if_match: Option<i64>) -> Result<Option<Stored>, ApiError> {
        let rtype = self.rtype_for(Interaction::Delete)?;
        let audit = self.authz.audit();
        audit.set_resource(rtype, Some(id), None);
        self.note_current_patients(rtype, id).await?;
        crate::audit::record_intent(self.st, audit).await?;
        let op = TxOp::Delete {
            rtype: rtype.to_owned(),
            id: id.to_owned(),
            if_match,
        };
        let outcome = self
            .st
            .store
            .transaction_under(std::slice::from_ref(&op), usize::MAX, self.intent().as_ref())
            .await
            .map_err(|e| e.error)?;
        let tombstone = match outcome.into_iter().next() {
            Some(TxOutcome::Deleted(t)) => t,
            _ => return Err(ApiError::internal("unexpected outcome of a delete")),
        };
        if let Some(t) = &tombstone {
            audit.set_resource(rtype, Some(id), Some(t.version));
        }
        Ok(tombstone)
    }
}

async fn create(
    State(st): State<AppState>,
    auth: Authenticated,
    StoreType(rtype): StoreType,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
    StoreType(rtype): StoreType,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = resource_id(&id)?;
    check_accept(&headers)?;
    let authz = authorize(&auth, rtype, Interaction::Read)?;
    let stored = DataAccess::new(&st, &authz).read(id).await?;
    Ok(json_response(stored))
}

async fn vread(
    State(st): State<AppState>,
    auth: Authenticated,
    StoreType(rtype): StoreType,
    Path((_, id, vid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = resource_id(&id)?;
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
    StoreType(rtype): StoreType,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = resource_id(&id)?;
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
    let may_create = authorize(&auth, rtype, Interaction::Create).is_ok();
    let (stored, created) = DataAccess::new(&st, &authz)
        .update(id, resource, if_match, may_create)
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
    StoreType(rtype): StoreType,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = resource_id(&id)?;
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
    StoreType(rtype): StoreType,
    Path((_, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = resource_id(&id)?;
    check_accept(&headers)?;
    let authz = authorize(&auth, rtype, Interaction::Read)?;
    let params = HistoryParams::parse(query.as_deref(), st.config.server.max_page_size)?;
    let page = DataAccess::new(&st, &authz).history(Some(id), &params).await?;
    history_bundle(&st, &format!("{rtype}/{id}/_history"), &params, &page)
}

async fn history_type(
    State(st): State<AppState>,
    auth: Authenticated,
    StoreType(rtype): StoreType,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_accept(&headers)?;
    let authz = authorize(&auth, rtype, Interaction::Search)?;
    let params = HistoryParams::parse(query.as_deref(), st.config.server.max_page_size)?;
    let page = DataAccess::new(&st, &authz).history(None, &params).await?;
    history_bundle(&st, &format!("{rtype}/_history"), &params, &page)
}

/// The resource type of a FHIR path, decided once from the percent-decoded `{rtype}` segment
/// before the handler runs: a known R4 type, case-sensitive (else 404), that lives in the
/// resource store. A type Ward makes itself (`AuditEvent`) is 405 whatever the interaction:
/// its read-only routes are `audit_api.rs`, and a spelling such as `Audit%45vent` that
/// reached the generic routes must not act on it.
pub(crate) struct StoreType(pub(crate) &'static str);

impl<S: Send + Sync> FromRequestParts<S> for StoreType {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| unknown_type())?;
        let raw = params
            .iter()
            .find(|(k, _)| *k == "rtype")
            .map(|(_, v)| v)
            .ok_or_else(|| ApiError::internal("route without a resource type"))?;
        store_type(raw).map(StoreType)
    }
}

/// See [`StoreType`]; also for a type named elsewhere (the target of a compartment search).
pub(crate) fn store_type(s: &str) -> Result<&'static str, ApiError> {
    let rtype = ward_fhir::types::RESOURCE_TYPES
        .binary_search(&s)
        .ok()
        .and_then(|i| ward_fhir::types::RESOURCE_TYPES.get(i).copied())
        .ok_or_else(unknown_type)?;
    if ward_fhir::types::is_server_made(rtype) {
        return Err(ApiError::read_only_type());
    }
    Ok(rtype)
}

fn unknown_type() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        IssueType::NotSupported,
        "unknown resource type",
    )
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
    let bytes = read_json_body(st, headers, body).await?;
    Ok(ward_fhir::json::parse_strict(&bytes, &st.limits)?)
}

/// A JSON request body's bytes, after the `Accept`, `Content-Type` and size checks.
pub(crate) async fn read_json_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
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
    Ok(crate::framing::read_body(body, st.limits.max_bytes).await?)
}

pub(crate) fn parse_if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(IssueType::Value, "If-Match must be an ETag like W/\"3\"");
    let s = v.to_str().map_err(|_| bad())?;
    Ok(Some(ward_fhir::bundle::etag_version(s).ok_or_else(bad)?))
}

/// `If-None-Exist: identifier=sys|123&family=x` as (param, value) pairs.
pub(crate) fn parse_criteria(v: &HeaderValue) -> Result<Vec<(String, String)>, ApiError> {
    let s = v
        .to_str()
        .map_err(|_| ApiError::bad_request(IssueType::Value, "If-None-Exist must be a search query"))?;
    Ok(ward_fhir::bundle::if_none_exist(s)?)
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
pub(crate) fn patients_of_json(stored: &StoredJson) -> Result<Vec<String>, StoreError> {
    patients_of_bytes(&stored.rtype, &stored.id, &stored.json)
}

fn patients_of_bytes(rtype: &str, id: &str, json: &[u8]) -> Result<Vec<String>, StoreError> {
    match own_compartment(rtype, id) {
        Some(p) => Ok(p),
        None => {
            let r: Value = serde_json::from_slice(json)
                .map_err(|_| StoreError::Corrupt("stored resource is not valid JSON".into()))?;
            Ok(ward_fhir::search::patient_compartment(&r))
        }
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
    /// A paging cursor from a previous page's `next` link (it carries `_since`).
    pub(crate) cursor: Option<String>,
}

impl HistoryParams {
    const DEFAULT_COUNT: usize = 50;

    pub(crate) fn parse(query: Option<&str>, max: usize) -> Result<Self, ApiError> {
        let mut p = HistoryParams {
            count: Self::DEFAULT_COUNT.min(max),
            since: None,
            cursor: None,
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
                "_cursor" => p.cursor = Some(v.into_owned()),
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

pub(crate) fn history_bundle(
    st: &AppState,
    self_path: &str,
    params: &HistoryParams,
    page: &HistoryPage,
) -> Result<Response, ApiError> {
    let mut entry = Vec::with_capacity(page.versions.len());
    for v in &page.versions {
        let m = &v.meta;
        let (method, status) = if m.deleted {
            ("DELETE", "204 No Content")
        } else if m.version == 1 {
            ("POST", "201 Created")
        } else {
            ("PUT", "200 OK")
        };
        let url = if method == "POST" {
            m.rtype.clone()
        } else {
            format!("{}/{}", m.rtype, m.id)
        };
        let resource = match &v.json {
            Some(json) => Some(
                serde_json::from_slice::<&serde_json::value::RawValue>(json)
                    .map_err(|_| ApiError::internal("stored resource is not valid JSON"))?,
            ),
            None => None,
        };
        entry.push(HistoryEntry {
            full_url: format!("{}/{}/{}", st.fhir_base, m.rtype, m.id),
            resource,
            request: json!({ "method": method, "url": url }),
            response: json!({
                "status": status,
                "etag": format!("W/\"{}\"", m.version),
                "lastModified": ward_store::format_instant(m.last_updated),
            }),
        });
    }
    let base = format!("{}/{}", st.fhir_base, self_path);
    let mut link = vec![json!({ "relation": "self", "url": base })];
    if let Some(c) = &page.next {
        link.push(json!({
            "relation": "next",
            "url": format!("{base}?_count={}&_cursor={c}", params.count),
        }));
    }
    let bundle = HistoryBundle {
        resource_type: "Bundle",
        id: uuid::Uuid::new_v4().to_string(),
        meta: json!({ "lastUpdated": ward_store::format_instant(OffsetDateTime::now_utc()) }),
        kind: "history",
        link,
        entry,
    };
    let hint = page
        .versions
        .iter()
        .filter_map(|v| v.json.as_ref())
        .map(|j| j.len())
        .sum();
    Ok(crate::response::bundle_response(&bundle, hint))
}

/// A history Bundle, serialized in this field order with the stored bytes as they are.
#[derive(serde::Serialize)]
struct HistoryBundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: Value,
    #[serde(rename = "type")]
    kind: &'static str,
    link: Vec<Value>,
    entry: Vec<HistoryEntry<'a>>,
}

#[derive(serde::Serialize)]
struct HistoryEntry<'a> {
    #[serde(rename = "fullUrl")]
    full_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a serde_json::value::RawValue>,
    request: Value,
    response: Value,
}
