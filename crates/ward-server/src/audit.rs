//! Audit hooks of the request pipeline (SPEC AU-1, AU-2, §2 step 11).
//!
//! The [`layer`] wraps every audited route: it gives the request an [`AuditContext`], lets
//! the extractors and the data access fill it in (actor, resource, patients, count), and
//! after the handler commits one record through the group-commit writer *before* the
//! response leaves. If the record cannot be committed, routes that carry ePHI answer 503
//! instead: data never leaves unaudited. Writes additionally commit an intent record
//! before the store changes (see `fhir.rs`), so a change and its trail cannot diverge.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use ward_audit::{Actor, AuditRecord, Outcome, RecordKind, Source};
use ward_fhir::outcome::IssueType;

use crate::error::ApiError;
use crate::request_id;
use crate::serve::ClientAddr;
use crate::state::AppState;

/// A resource version naming more patients than this (a large Group) is recorded by reference
/// (`AuditRecord::patients_via`) rather than by listing them: the work per record stays
/// bounded, and `ward audit disclosures` resolves the reference when asked.
pub const MAX_PATIENTS_PER_RESOURCE: usize = 64;
/// Most patient ids one record lists; past it, further resources go by reference too. A
/// record thus holds at most this many ids plus one reference per resource it touched.
pub const MAX_LISTED_PATIENTS: usize = 1_000;

/// The outcome code of an error response, left by `ApiError` and the OAuth errors for the
/// audit record.
#[derive(Clone, Copy, Debug)]
pub struct OutcomeCode(pub &'static str);

/// Left on a response that must not get its own record: a repeated refusal inside one
/// rate-limit window, whose first refusal was recorded (SEC-2).
#[derive(Clone, Copy, Debug)]
pub struct Unaudited;

/// What the pipeline learns about a request while serving it.
#[derive(Clone)]
pub struct AuditContext {
    draft: Arc<Mutex<Draft>>,
    meta: Arc<RequestMeta>,
}

#[derive(Default, Clone)]
struct Draft {
    /// Set when the route alone does not tell (a Bundle's type is in its body).
    action: Option<String>,
    actor: Actor,
    resource_type: Option<String>,
    resource_id: Option<String>,
    resource_version: Option<i64>,
    patients: BTreeSet<String>,
    patients_via: BTreeSet<String>,
    returned: u32,
    query_hashes: Vec<String>,
    intent_seq: Option<i64>,
}

/// Prints no contents: the draft holds patient ids.
impl std::fmt::Debug for AuditContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditContext").finish_non_exhaustive()
    }
}

impl AuditContext {
    fn with<R>(&self, f: impl FnOnce(&mut Draft) -> R) -> R {
        f(&mut self.draft.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_actor(&self, client_id: &str, user_id: Option<&str>, scopes: &str) {
        self.with(|d| {
            d.actor.client_id = Some(client_id.to_owned());
            d.actor.user_id = user_id.map(str::to_owned);
            d.actor.roles_or_scopes = scopes.split_whitespace().map(str::to_owned).collect();
        });
    }

    /// The signed-in person of a page request without a client (logout).
    pub fn set_user(&self, user_id: &str) {
        self.with(|d| d.actor.user_id = Some(user_id.to_owned()));
    }

    /// An actor that only claimed an identity (a failed token request). Client ids are
    /// UUIDs; anything else is recorded as `(malformed)` rather than as attacker-chosen text
    /// (a NUL byte, say, would make the whole audit batch fail on PostgreSQL).
    pub fn set_claimed_client(&self, client_id: &str) {
        let plain = ward_auth::is_plausible_client_id(client_id);
        let recorded = if plain { client_id } else { "(malformed)" };
        self.with(|d| d.actor.client_id = Some(recorded.to_owned()));
    }

    pub fn set_resource(&self, rtype: &str, id: Option<&str>, version: Option<i64>) {
        self.with(|d| {
            d.resource_type = Some(rtype.to_owned());
            if id.is_some() {
                d.resource_id = id.map(str::to_owned);
            }
            if version.is_some() {
                d.resource_version = version;
            }
        });
    }

    /// Patient ids come from references inside resources, i.e. from client text: only
    /// well-formed FHIR ids are recorded, so no submitted byte (a NUL, say) can make a whole
    /// audit batch fail.
    pub fn add_patients<I: IntoIterator<Item = String>>(&self, ids: I) {
        self.with(|d| {
            d.patients
                .extend(ids.into_iter().filter(|id| ward_fhir::id::is_valid_id(id)))
        });
    }

    /// Names version `version` of `rtype/id` for its patients, resolved when disclosures are
    /// asked for, instead of listing them now.
    pub fn add_patients_via(&self, rtype: &str, id: &str, version: i64) {
        self.with(|d| {
            d.patients_via.insert(version_reference(rtype, id, version));
        });
    }

    /// The patients of version `version` of `rtype/id`: listed, or when there are too many
    /// (see [`MAX_PATIENTS_PER_RESOURCE`], [`MAX_LISTED_PATIENTS`]) named by that version.
    pub fn add_patients_of(&self, rtype: &str, id: &str, version: i64, ids: Vec<String>) {
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| ward_fhir::id::is_valid_id(id))
            .collect();
        self.with(|d| {
            if ids.len() > MAX_PATIENTS_PER_RESOURCE
                || d.patients.len().saturating_add(ids.len()) > MAX_LISTED_PATIENTS
            {
                d.patients_via.insert(version_reference(rtype, id, version));
            } else {
                d.patients.extend(ids);
            }
        });
    }

    pub fn add_returned(&self, n: usize) {
        self.with(|d| d.returned = d.returned.saturating_add(u32::try_from(n).unwrap_or(u32::MAX)));
    }

    /// Keyed hashes of search values: never the values themselves (AU-1).
    pub fn set_query_hashes(&self, hashes: Vec<String>) {
        self.with(|d| d.query_hashes = hashes);
    }

    /// Names the action when the route does not (`transaction` or `batch` for `POST /fhir`).
    pub fn set_action(&self, action: &str) {
        self.with(|d| d.action = Some(action.to_owned()));
    }

    pub fn set_intent(&self, seq: i64) {
        self.with(|d| d.intent_seq = Some(seq));
    }

    /// Whether a write of this request has started (its intent record is committed): from
    /// then on the request runs to its end, past its deadline too (see `app.rs`).
    pub fn writing(&self) -> bool {
        self.with(|d| d.intent_seq.is_some())
    }

    /// The intent a write of this request runs under, for the store to tag its versions with.
    pub fn intent_ref(&self, node: &str) -> Option<ward_store::IntentRef> {
        self.with(|d| d.intent_seq).map(|seq| ward_store::IntentRef {
            node: node.to_owned(),
            seq,
        })
    }

    /// The record for this request as it stands, with the given kind and outcome.
    fn record(&self, kind: RecordKind, outcome: Outcome) -> AuditRecord {
        let d = self.with(|d| d.clone());
        let meta = &self.meta;
        AuditRecord {
            at: String::new(),
            node: String::new(),
            seq: 0,
            request_id: meta.request_id.clone(),
            server_request_id: meta.server_request_id.clone(),
            actor: d.actor,
            source: meta.source.clone(),
            action: d.action.unwrap_or_else(|| meta.action.clone()),
            kind,
            resource_type: d.resource_type.or_else(|| meta.rtype.clone()),
            resource_id: d.resource_id.or_else(|| meta.id.clone()),
            resource_version: d.resource_version,
            patients: d.patients.into_iter().collect(),
            patients_via: d.patients_via.into_iter().collect(),
            purpose_of_use: meta.purpose_of_use.clone(),
            break_glass: false,
            outcome,
            returned: d.returned,
            query_hashes: d.query_hashes,
            intent_seq: d.intent_seq,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = ApiError;

    /// Every data route runs inside the audit layer; a route without a context is a wiring
    /// bug and must fail closed.
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<AuditContext>()
            .cloned()
            .ok_or_else(|| ApiError::internal("request is not audited"))
    }
}

/// What the layer knows before the handler runs.
struct RequestMeta {
    request_id: String,
    server_request_id: String,
    source: Source,
    action: String,
    rtype: Option<String>,
    id: Option<String>,
    purpose_of_use: Option<String>,
}

/// Health and readiness probes are not audited (SPEC §1); everything else is.
fn audited(path: &str) -> bool {
    !matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Routes whose answers never hold ePHI keep working when the audit store is down.
fn public(path: &str) -> bool {
    matches!(
        path,
        "/fhir/metadata"
            | "/fhir/.well-known/smart-configuration"
            | "/.well-known/openid-configuration"
            | "/oauth2/jwks"
            | "/oauth2/smart-style.json"
    )
}

/// Gives `route` its audit action explicitly, instead of the one [`action_of`] infers from
/// the route template. The sign-in pages declare theirs with their routes (`app.rs`).
pub fn declare<S: Clone + Send + Sync + 'static>(
    action: &'static str,
    route: axum::routing::MethodRouter<S>,
) -> axum::routing::MethodRouter<S> {
    route.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            if let Some(ctx) = req.extensions().get::<AuditContext>() {
                ctx.set_action(action);
            }
            next.run(req).await
        },
    ))
}

/// Methods are client-chosen tokens of any length: only this many characters are kept.
const METHOD_CHARS: usize = 16;

/// The FHIR interaction (or OAuth action) a route template stands for.
fn action_of(method: &Method, route: &str) -> String {
    // HEAD runs the GET handler.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let a = match (method, route) {
        ("POST", "/fhir/{rtype}") => "create",
        ("GET", "/fhir/{rtype}/{id}") => "read",
        ("PUT", "/fhir/{rtype}/{id}") => "update",
        ("DELETE", "/fhir/{rtype}/{id}") => "delete",
        ("GET", "/fhir/{rtype}/{id}/_history/{vid}") => "vread",
        ("GET", "/fhir/{rtype}/{id}/_history") => "history-instance",
        ("GET", "/fhir/{rtype}/_history") => "history-type",
        ("GET", "/fhir/_history") => "history-system",
        ("GET", "/fhir/{rtype}") | ("POST", "/fhir/{rtype}/_search") => "search-type",
        ("GET", "/fhir/AuditEvent") => "search-type",
        ("GET", "/fhir/{rtype}/{id}/{ctype}") => "search-compartment",
        ("GET", "/fhir/metadata") => "capabilities",
        // Transaction or batch: the route cannot tell which (the body's Bundle.type does).
        ("POST", "/fhir") => "bundle",
        ("POST", "/oauth2/token") => "token",
        ("POST", "/oauth2/introspect") => "introspect",
        ("POST", "/oauth2/revoke") => "revoke",
        ("GET" | "POST", "/oauth2/userinfo") => "userinfo",
        (_, r)
            if r.starts_with("/oauth2/")
                || r.starts_with("/.well-known/")
                || r.starts_with("/fhir/.well-known/") =>
        {
            "discovery"
        }
        _ => {
            return format!(
                "http-{}",
                crate::middleware::bounded(method, METHOD_CHARS).to_ascii_lowercase()
            );
        }
    };
    a.to_owned()
}

/// Purpose-of-use codes Ward understands (SPEC AC-7); anything else is not recorded as given.
const PURPOSES: [&str; 6] = ["TREAT", "HPAYMT", "HOPERAT", "ETREAT", "PUBHLTH", "HRESCH"];

pub async fn layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !audited(&path) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let params = RawPathParams::from_request_parts(&mut parts, &()).await.ok();
    let param = |name: &str| {
        params.as_ref().and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.chars().take(64).collect::<String>())
        })
    };
    let addr = parts.extensions.get::<ClientAddr>().map(|a| a.0);
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let route_rtype = route
        .strip_prefix("/fhir/")
        .and_then(|r| r.split('/').next())
        .filter(|s| !s.starts_with('{'));
    let meta = RequestMeta {
        request_id: request_id::current().unwrap_or_default(),
        server_request_id: request_id::server_id().unwrap_or_default(),
        source: Source {
            ip: addr.map(|a| a.ip().to_string()),
            port: addr.map(|a| a.port()),
            user_agent: header(header::USER_AGENT.as_str()).map(|u| u.chars().take(256).collect()),
        },
        action: action_of(&parts.method, &route),
        // Only well-formed names reach the trail: a path segment is attacker-chosen text.
        rtype: param("rtype")
            .or_else(|| route_rtype.map(str::to_owned))
            .filter(|t| ward_fhir::types::is_resource_type(t)),
        id: param("id").filter(|id| ward_fhir::id::is_valid_id(id)),
        purpose_of_use: header("x-purpose-of-use")
            .filter(|p| PURPOSES.contains(p))
            .map(str::to_owned),
    };
    let ctx = AuditContext {
        draft: Arc::default(),
        meta: Arc::new(meta),
    };
    parts.extensions.insert(ctx.clone());
    let fail_closed = !public(&path);
    let may_change = !matches!(parts.method, Method::GET | Method::HEAD);
    // A request that may change data runs in a task of its own (below), and those tasks are
    // bounded: when none is free it is refused (503, audited) before anything happens.
    let slot = if may_change { st.writes.slot() } else { None };
    let refuse = may_change && slot.is_none();
    let served = serve_audited(
        st.clone(),
        ctx,
        fail_closed,
        refuse,
        Request::from_parts(parts, body),
        next,
    );
    let Some(slot) = slot else {
        return served.await;
    };
    // If the client goes away, hyper drops this future but not the task, so a change once
    // started reaches its final audit record (AU-2).
    let task = st.writes.spawn(
        slot,
        request_id::carried(served).instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(panicked = e.is_panic(), "audited request task failed");
            ApiError::internal("request failed").into_response()
        }
    }
}

/// Runs the handler and commits the request's final record before the response may leave.
async fn serve_audited(
    st: AppState,
    ctx: AuditContext,
    fail_closed: bool,
    refuse: bool,
    req: Request,
    next: Next,
) -> Response {
    let resp = if refuse {
        tracing::warn!("too many write tasks running; request refused");
        busy()
    } else if fail_closed && !audit_ready(&st) {
        unavailable()
    } else {
        next.run(req).await
    };
    if resp.extensions().get::<Unaudited>().is_some() {
        return resp;
    }
    let code = resp.extensions().get::<OutcomeCode>().map(|c| c.0.to_owned());
    let record = ctx.record(
        RecordKind::Request,
        Outcome {
            status: resp.status().as_u16(),
            code,
        },
    );
    let intent = ctx.with(|d| d.intent_seq);
    let _in_flight = intent.map(|seq| InFlight::new(&st, seq));
    match st.audit.record(record.clone()).await {
        Ok(_) => resp,
        // A change that was stored is never reported as failed: its final record is retried
        // until it is durable, and the answer waits for it (see ARCHITECTURE.md, step 11).
        Err(e) if resp.status().is_success() && intent.is_some() => {
            tracing::error!(error = %e, "final audit record of a stored change not committed; retrying");
            let _held = st.writes.hold();
            match retry_final_record(&st, record, intent.unwrap_or_default()).await {
                Ok(()) => resp,
                Err(e) => {
                    tracing::error!(error = %e, "final audit record of a stored change left to reconciliation");
                    outcome_unknown()
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "audit record not committed");
            if fail_closed { unavailable() } else { resp }
        }
    }
}

/// Whether ePHI may be served: the audit writer commits, and no stored change waits for its
/// final record (until it is durable, the trail is behind the data).
pub fn audit_ready(st: &AppState) -> bool {
    st.audit.healthy() && !st.writes.holding()
}

/// Marks an intent as worked on by this process while it lives, so reconciliation leaves it
/// alone.
struct InFlight {
    st: AppState,
    seq: i64,
}

impl InFlight {
    fn new(st: &AppState, seq: i64) -> InFlight {
        st.writes.begin(seq);
        InFlight { st: st.clone(), seq }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.st.writes.end(self.seq);
    }
}

/// Longest pause between two attempts at a final record.
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Commits `record` (the final record of intent `intent_seq`) until it is durable. An
/// attempt that failed may still have committed (a lost connection during COMMIT), so the
/// chain is asked first: the intent gets exactly one final record. Gives up only when the
/// writer is closed (shutdown): reconciliation at the next start resolves the intent.
async fn retry_final_record(
    st: &AppState,
    record: AuditRecord,
    intent_seq: i64,
) -> Result<(), ward_audit::AuditError> {
    let mut pause = Duration::from_millis(50);
    loop {
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(RETRY_MAX_PAUSE);
        match st.audit_store.final_record_of(st.audit.node(), intent_seq).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "audit store unreadable; retrying");
                continue;
            }
        }
        match st.audit.record(record.clone()).await {
            Ok(_) => return Ok(()),
            Err(e @ ward_audit::AuditError::Closed) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "final audit record still not committed; retrying"),
        }
    }
}

/// Commits the intent record of a write before the store changes; the request's final
/// record later points at it.
pub async fn record_intent(st: &AppState, ctx: &AuditContext) -> Result<(), ApiError> {
    let record = ctx.record(
        RecordKind::Intent,
        Outcome {
            status: 0,
            code: None,
        },
    );
    let _recording = st.writes.recording().await;
    match st.audit.record(record).await {
        Ok(seq) => {
            st.writes.begin(seq);
            ctx.set_intent(seq);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "audit intent not committed");
            Err(audit_unavailable())
        }
    }
}

fn audit_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        IssueType::Transient,
        "audit trail unavailable; try again later",
    )
}

/// The answer when a change was stored but its final audit record could not be made durable
/// before this process stopped: 202, since the change is in (it must not look failed, and a
/// retry would repeat it), with no resource content, which may not leave unaudited.
fn outcome_unknown() -> Response {
    ApiError::new(
        StatusCode::ACCEPTED,
        IssueType::Incomplete,
        "the change was stored; its audit record is completed when the server restarts",
    )
    .into_response()
}

/// Every write task is taken (see `writes.rs`).
fn busy() -> Response {
    let mut resp = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        IssueType::Transient,
        "too many changes in progress; try again later",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    resp
}

fn unavailable() -> Response {
    let mut resp = audit_unavailable().into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
    resp
}

/// The patients whose compartment `resource` (stored as `rtype/id`) belongs to, per the R4
/// patient CompartmentDefinition. The id is passed because a resource being created does not
/// carry its server-assigned id yet.
pub fn patients_of(rtype: &str, id: &str, resource: &serde_json::Value) -> Vec<String> {
    own_compartment(rtype, id).unwrap_or_else(|| ward_fhir::search::patient_compartment(resource))
}

/// The compartment a resource names without its content being read: a Patient's is itself.
pub fn own_compartment(rtype: &str, id: &str) -> Option<Vec<String>> {
    (rtype == "Patient").then(|| vec![id.to_owned()])
}

/// Records an administrative action (CLI commands, configuration load) on `handle`'s chain.
pub async fn record_admin(
    handle: &ward_audit::AuditHandle,
    action: &str,
    subject: Option<(&str, &str)>,
) -> Result<i64, ward_audit::AuditError> {
    let operator = std::env::var("USER").ok();
    let id = uuid::Uuid::new_v4().to_string();
    handle
        .record(AuditRecord {
            at: String::new(),
            node: String::new(),
            seq: 0,
            request_id: id.clone(),
            server_request_id: id,
            actor: Actor {
                client_id: None,
                user_id: operator.map(|u| format!("os:{u}")),
                roles_or_scopes: vec!["admin-cli".into()],
            },
            source: Source::default(),
            action: action.to_owned(),
            kind: RecordKind::Admin,
            resource_type: subject.map(|(t, _)| t.to_owned()),
            resource_id: subject.map(|(_, id)| id.to_owned()),
            resource_version: None,
            patients: Vec::new(),
            patients_via: Vec::new(),
            purpose_of_use: None,
            break_glass: false,
            outcome: Outcome {
                status: 200,
                code: None,
            },
            returned: 0,
            query_hashes: Vec::new(),
            intent_seq: None,
        })
        .await
}

/// How an audit record names a resource version whose patients it does not list.
fn version_reference(rtype: &str, id: &str, version: i64) -> String {
    format!("{rtype}/{id}/_history/{version}")
}
