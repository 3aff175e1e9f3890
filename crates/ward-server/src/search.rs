//! FHIR search (SPEC F-2, F-3, MN-1): `GET /fhir/{type}`, `POST /fhir/{type}/_search` (form
//! body, so PHI can stay out of URLs), the patient compartment search
//! `GET /fhir/Patient/{id}/{type}`, and the system history `GET /fhir/_history`.
//!
//! Every search is authorized for `Interaction::Search` on its type before the query is parsed;
//! the compartment restriction goes into the store's SQL. Paging links carry only an opaque,
//! sealed cursor (which holds the query), never search values. Errors name a parameter, never a
//! value, and nothing here logs a search value.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use ward_auth::Interaction;
use ward_fhir::outcome::{Issue, IssueType, Severity};
use ward_fhir::search::query::ParseOptions;
use ward_fhir::search::{SearchError, SearchQuery, Summary};
use ward_store::{SearchPage, StoreError, StoredJson};

use crate::auth::{Authenticated, Authorized, authorize};
use crate::error::ApiError;
use crate::fhir::{DataAccess, StoreType, store_type};
use crate::response::Resource;
use crate::state::AppState;

/// Default page size (MN-1).
const DEFAULT_COUNT: usize = 50;
/// Largest page size (MN-1), further capped by `server.max_page_size`.
const MAX_COUNT: usize = 1000;
/// Most resources `_include`/`_revinclude` add to one page.
const MAX_INCLUDED: usize = 1000;

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// `GET /fhir/{type}?...`
pub(crate) async fn search_type(
    State(st): State<AppState>,
    auth: Authenticated,
    StoreType(rtype): StoreType,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs = pairs_of(query.as_deref().unwrap_or(""));
    run(&st, &auth, rtype, None, pairs, &headers, Origin::Get).await
}

/// `POST /fhir/{type}/_search` with an `application/x-www-form-urlencoded` body.
pub(crate) async fn search_type_post(
    State(st): State<AppState>,
    auth: Authenticated,
    StoreType(rtype): StoreType,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Authorize before reading the body.
    authorize(&auth, rtype, Interaction::Search)?;
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime != "application/x-www-form-urlencoded" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "_search takes an application/x-www-form-urlencoded body",
        ));
    }
    let bytes = crate::framing::read_body(body, st.limits.max_bytes).await?;
    let mut pairs = pairs_of(query.as_deref().unwrap_or(""));
    pairs.extend(form_urlencoded::parse(&bytes).into_owned());
    run(&st, &auth, rtype, None, pairs, &headers, Origin::Post).await
}

/// `GET /fhir/Patient/{id}/{type}?...`: a search inside one patient's compartment.
pub(crate) async fn search_compartment(
    State(st): State<AppState>,
    auth: Authenticated,
    StoreType(ctype): StoreType,
    Path((_, id, rtype)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if ctype != "Patient" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            IssueType::NotSupported,
            "only the Patient compartment is supported",
        ));
    }
    if !ward_fhir::id::is_valid_id(&id) {
        return Err(ApiError::bad_request(IssueType::Value, "malformed resource id"));
    }
    let rtype = store_type(&rtype)?;
    if !ward_fhir::search::in_compartment_definition(rtype) {
        return Err(ApiError::bad_request(
            IssueType::NotSupported,
            "this resource type is not part of the Patient compartment",
        ));
    }
    let pairs = pairs_of(query.as_deref().unwrap_or(""));
    run(&st, &auth, rtype, Some(id), pairs, &headers, Origin::Get).await
}

/// `GET /fhir/_history`: needs the search permission on every resource type.
pub(crate) async fn history_system(
    State(st): State<AppState>,
    auth: Authenticated,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::fhir::check_accept(&headers)?;
    // Every type's history: only a scope covering `*` may ask (a list of per-type scopes could
    // still miss types created later).
    let authz = authorize(&auth, "*", Interaction::Search)?;
    let params = crate::fhir::HistoryParams::parse(query.as_deref(), st.config.server.max_page_size)?;
    let page = crate::fhir::DataAccess::new(&st, &authz)
        .history_all(&params)
        .await?;
    crate::fhir::history_bundle(&st, "_history", &params, &page)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Get,
    Post,
}

fn pairs_of(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn lenient(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|t| t.trim() == "handling=lenient")
}

fn search_error(e: SearchError) -> ApiError {
    let code = match e {
        SearchError::Invalid(_) => IssueType::Value,
        SearchError::TooManyParams(_) | SearchError::TooManyValues(_) => IssueType::TooCostly,
        _ => IssueType::NotSupported,
    };
    let param = e.param().to_owned();
    let err = ApiError::bad_request(code, e.to_string());
    if param.is_empty() { err } else { err.at(param) }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::InvalidCursor => {
            ApiError::bad_request(IssueType::Value, "invalid or expired paging cursor").at("_cursor")
        }
        other => other.into(),
    }
}

async fn run(
    st: &AppState,
    auth: &Authenticated,
    rtype: &str,
    compartment: Option<String>,
    mut pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    origin: Origin,
) -> Result<Response, ApiError> {
    crate::fhir::check_accept(headers)?;
    let authz = authorize(auth, rtype, Interaction::Search)?;
    // Paging cursors work only for the client they were issued to.
    let holder = auth.claims.client_id.clone();
    // A cursor carries the whole query: the next-page URL needs nothing else.
    if let Some((_, cursor)) = pairs.iter().find(|(k, _)| k == "_cursor").cloned() {
        let mut carried = st
            .store
            .cursor_params(rtype, Some(&holder), &cursor)
            .map_err(store_error)?;
        carried.push(("_cursor".into(), cursor));
        pairs = carried;
    }
    let opts = ParseOptions {
        lenient: lenient(headers),
        default_count: DEFAULT_COUNT,
        max_count: MAX_COUNT.min(st.config.server.max_page_size),
        ..st.config.server.search_options()
    };
    let mut q = SearchQuery::parse(rtype, &pairs, &opts).map_err(search_error)?;
    // AU-1: the audit trail gets keyed hashes of the search values, never the values.
    auth.audit.set_query_hashes(
        q.params
            .iter()
            .map(|(k, v)| format!("{k}={}", st.store.audit_hash(k, v)))
            .collect(),
    );
    q.compartment = compartment.clone();
    q.cursor_holder = Some(holder);
    if q.summary == Some(Summary::Count) {
        q.count = 0;
    }
    let max_bytes = st.config.server.max_page_bytes;
    let page = DataAccess::new(st, &authz)
        .search(&q, max_bytes)
        .await
        .map_err(store_error)?;
    let (included, includes_cut) = includes(st, auth, &q, &page, max_bytes).await?;
    // Following includes authorized other types; the request is about `rtype`.
    auth.audit.set_resource(rtype, None, None);
    if let Some(p) = &compartment {
        auth.audit.add_patients([p.clone()]);
    }
    for s in page.matches.iter().chain(&included) {
        auth.audit
            .add_patients_of(&s.rtype, &s.id, s.version, crate::fhir::patients_of_json(s)?);
        auth.audit.add_returned(1);
    }

    let path = match &compartment {
        Some(p) => format!("Patient/{p}/{rtype}"),
        None => rtype.to_owned(),
    };
    let mut links = vec![json!({
        "relation": "self",
        "url": self_url(st, &path, &q, origin),
    })];
    for (relation, cursor) in [("next", &page.next), ("previous", &page.prev)] {
        if let Some(c) = cursor {
            links.push(json!({
                "relation": relation,
                "url": format!("{}/{path}?_cursor={c}", st.fhir_base),
            }));
        }
    }
    let mut entry = Vec::with_capacity(
        page.matches
            .len()
            .saturating_add(included.len())
            .saturating_add(1),
    );
    for s in &page.matches {
        entry.push(Entry::of(st, s, "match", &q)?);
    }
    for s in &included {
        entry.push(Entry::of(st, s, "include", &q)?);
    }
    let mut issues: Vec<Issue> = q
        .ignored
        .iter()
        .map(|name| {
            Issue::new(
                Severity::Warning,
                IssueType::NotSupported,
                format!("unknown search parameter '{name}' was ignored"),
            )
            .at(name.clone())
        })
        .collect();
    if includes_cut {
        issues.push(Issue::new(
            Severity::Warning,
            IssueType::TooCostly,
            "some included resources were left out: they exceed the page's size limit; \
             ask for fewer matches per page (_count) to get them",
        ));
    }
    if !issues.is_empty() {
        let oo = ward_fhir::outcome::operation_outcome(&issues, crate::request_id::current().as_deref());
        entry.push(Entry {
            full_url: None,
            resource: Some(Resource::Built(oo)),
            search: Mode { mode: "outcome" },
        });
    }
    let bundle = SearchBundle {
        resource_type: "Bundle",
        id: uuid::Uuid::new_v4().to_string(),
        meta: json!({ "lastUpdated": ward_store::format_instant(OffsetDateTime::now_utc()) }),
        kind: "searchset",
        total: page.total,
        link: links,
        entry,
    };
    let hint = page.matches.iter().chain(&included).map(|s| s.json.len()).sum();
    Ok(crate::response::bundle_response(&bundle, hint))
}

/// A searchset Bundle, serialized in this field order.
#[derive(Serialize)]
struct SearchBundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    meta: Value,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    link: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<Resource<'a>>,
    search: Mode,
}

#[derive(Serialize)]
struct Mode {
    mode: &'static str,
}

impl<'a> Entry<'a> {
    /// The stored bytes as they are, unless `_summary`/`_elements` ask for a subset.
    fn of(st: &AppState, s: &'a StoredJson, mode: &'static str, q: &SearchQuery) -> Result<Self, ApiError> {
        let resource = if subsetted(q) {
            Resource::Built(minimize(s.value()?, q))
        } else {
            Resource::stored(s)?
        };
        Ok(Entry {
            full_url: Some(format!("{}/{}/{}", st.fhir_base, s.rtype, s.id)),
            resource: Some(resource),
            search: Mode { mode },
        })
    }
}

/// The self link. It never repeats search values, GET or POST: values can be PHI, and
/// Ward puts no PHI in URLs it generates (the next/previous links carry sealed cursors).
fn self_url(st: &AppState, path: &str, q: &SearchQuery, origin: Origin) -> String {
    let base = format!("{}/{path}", st.fhir_base);
    if let Some(c) = &q.cursor {
        return format!("{base}?_cursor={c}");
    }
    match origin {
        Origin::Post => format!("{}/{}/_search", st.fhir_base, q.rtype),
        Origin::Get => base,
    }
}

fn subsetted(q: &SearchQuery) -> bool {
    !q.elements.is_empty() || matches!(q.summary, Some(Summary::True | Summary::Text | Summary::Data))
}

/// `_summary` and `_elements` (MN-1). `_summary=true` keeps every element except the
/// narrative, contained resources and extensions (Ward has no isSummary table yet; this errs
/// on the side of returning less); modifier extensions are always kept.
fn minimize(r: Value, q: &SearchQuery) -> Value {
    let Value::Object(obj) = r else {
        return r;
    };
    let always = ["resourceType", "id", "meta", "implicitRules", "modifierExtension"];
    let keep = |k: &str| -> bool {
        if always.contains(&k) {
            return true;
        }
        if !q.elements.is_empty() {
            return q.elements.iter().any(|e| {
                e == k
                    || k.strip_prefix(e.as_str())
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            });
        }
        match q.summary {
            Some(Summary::True) => !matches!(k, "text" | "contained" | "extension"),
            Some(Summary::Text) => k == "text",
            Some(Summary::Data) => k != "text",
            _ => true,
        }
    };
    let mut out: Map<String, Value> = obj.into_iter().filter(|(k, _)| keep(k)).collect();
    let meta = out.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(t) = tags {
            t.push(json!({ "system": SUBSETTED, "code": "SUBSETTED" }));
        }
    }
    Value::Object(out)
}

/// `_include` and `_revinclude`, one level. Only types the caller may read (include) or search
/// (revinclude) are followed, and a compartment search only includes resources of that
/// compartment when their type belongs to compartments. Included resources are capped at
/// `max_bytes` of stored JSON (and `MAX_INCLUDED`); `true` when some were left out.
async fn includes(
    st: &AppState,
    auth: &Authenticated,
    q: &SearchQuery,
    page: &SearchPage,
    max_bytes: usize,
) -> Result<(Vec<StoredJson>, bool), ApiError> {
    let mut acc = Included {
        out: Vec::new(),
        bytes: 0,
        max_bytes,
        cut: false,
    };
    if !q.include.is_empty() {
        let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for s in &page.matches {
            // Parsed one at a time, only to find its references.
            let r = s.value()?;
            for inc in &q.include {
                for v in ward_fhir::search::param_values(inc.param, &r) {
                    if let ward_fhir::search::IndexValue::Reference { rtype, id } = v
                        && inc.target.as_ref().is_none_or(|t| *t == rtype)
                    {
                        let ids = by_type.entry(rtype).or_default();
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
            }
        }
        for (t, ids) in by_type {
            let Ok(authz) = authorize(auth, &t, Interaction::Read) else {
                continue;
            };
            let pairs = vec![("_id".to_owned(), ids.join(","))];
            acc.fetch(st, &authz, pairs, q, page).await?;
        }
    }
    if !page.matches.is_empty() {
        for inc in &q.revinclude {
            let Ok(authz) = authorize(auth, &inc.source, Interaction::Search) else {
                continue;
            };
            let refs: Vec<String> = page
                .matches
                .iter()
                .map(|s| format!("{}/{}", s.rtype, s.id))
                .collect();
            let pairs = vec![(inc.param.code.clone(), refs.join(","))];
            acc.fetch(st, &authz, pairs, q, page).await?;
        }
    }
    Ok((acc.out, acc.cut))
}

/// The included resources gathered so far, within their byte and count limits.
struct Included {
    out: Vec<StoredJson>,
    bytes: usize,
    max_bytes: usize,
    cut: bool,
}

impl Included {
    async fn fetch(
        &mut self,
        st: &AppState,
        authz: &Authorized,
        pairs: Vec<(String, String)>,
        q: &SearchQuery,
        page: &SearchPage,
    ) -> Result<(), ApiError> {
        let room = self.max_bytes.saturating_sub(self.bytes);
        if self.out.len() >= MAX_INCLUDED || room == 0 {
            self.cut = true;
            return Ok(());
        }
        let rtype = authz.rtype();
        // One value per page match: up to MAX_INCLUDED, whatever bounds a client's own search.
        let opts = ParseOptions {
            max_values: MAX_INCLUDED,
            ..ParseOptions::default()
        };
        let mut sub = SearchQuery::parse(rtype, &pairs, &opts).map_err(search_error)?;
        sub.count = MAX_INCLUDED.saturating_sub(self.out.len());
        sub.total = ward_fhir::search::TotalMode::None;
        sub.cursor_holder = q.cursor_holder.clone();
        if ward_fhir::search::in_compartment_definition(rtype) {
            sub.compartment = q.compartment.clone();
        }
        let found = DataAccess::new(st, authz)
            .search(&sub, room)
            .await
            .map_err(store_error)?;
        self.cut |= found.next.is_some();
        for s in found.matches {
            let seen = |m: &StoredJson| m.rtype == s.rtype && m.id == s.id;
            if self.out.iter().any(seen) || page.matches.iter().any(seen) {
                continue;
            }
            // The store gives at least one resource: keep within the limit all the same.
            if !self.out.is_empty() && self.bytes.saturating_add(s.json.len()) > self.max_bytes {
                self.cut = true;
                continue;
            }
            self.bytes = self.bytes.saturating_add(s.json.len());
            self.out.push(s);
        }
        Ok(())
    }
}
