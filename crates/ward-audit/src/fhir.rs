//! Review (AU-5): records as FHIR R4 `AuditEvent`, search and the accounting of disclosures.

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::record::unix_ms;
use crate::store::AuditStore;
use crate::{AuditError, AuditRecord, RecordKind};

/// Base of the Ward-specific URIs (code systems, identifier systems, extensions).
pub(crate) const WARD_URN: &str = "urn:ward:audit";

const RESTFUL_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history",
    "history-instance",
    "history-type",
    "history-system",
    "create",
    "search",
    "search-type",
    "search-system",
    "capabilities",
    "transaction",
    "batch",
    "operation",
];

const READ_ACTIONS: &[&str] = &[
    "read",
    "vread",
    "history",
    "history-instance",
    "history-type",
    "history-system",
    "search",
    "search-type",
    "search-system",
    "capabilities",
    "disclosures",
    "audit-search",
    "audit-read",
];
const CREATE_ACTIONS: &[&str] = &["create", "client-create", "user-create"];
const UPDATE_ACTIONS: &[&str] = &[
    "update",
    "patch",
    "client-disable",
    "user-disable",
    "user-reset-mfa",
];
const DELETE_ACTIONS: &[&str] = &["delete"];

/// The AuditEvent.action code (C, R, U, D or E) of an action name.
pub fn action_code(action: &str) -> &'static str {
    if CREATE_ACTIONS.contains(&action) {
        "C"
    } else if READ_ACTIONS.contains(&action) {
        "R"
    } else if UPDATE_ACTIONS.contains(&action) {
        "U"
    } else if DELETE_ACTIONS.contains(&action) {
        "D"
    } else {
        "E"
    }
}

/// The AuditEvent.outcome code: 0 success (status < 400), 4 minor failure (4xx), 8 serious
/// failure (5xx), 12 major failure (a status outside HTTP's). None for status 0, an intent
/// record: written before the change, it claims neither success nor failure.
pub fn outcome_code(status: u16) -> Option<&'static str> {
    match status {
        0 => None,
        1..=399 => Some("0"),
        400..=499 => Some("4"),
        500..=599 => Some("8"),
        _ => Some("12"),
    }
}

fn is_token_action(action: &str) -> bool {
    matches!(
        action,
        "token" | "authorize" | "login" | "logout" | "mfa" | "introspect" | "revoke" | "userinfo"
    )
}

/// The `outcomeDesc` of an intent record, which has no `outcome`.
const INTENT_DESC: &str = "intent: recorded before a change; outcome unknown unless a final record names it";

/// The record as an R4 `AuditEvent` with id `{node}-{seq}`. The chain position and hash are in
/// the extension `urn:ward:audit:chain` (`node`, `seq`, `hash`).
pub fn to_audit_event(rec: &AuditRecord, hash_hex: &str) -> Value {
    let (type_coding, subtype_system) = if rec.kind == RecordKind::Admin {
        (
            json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100", "display": "Application Activity"}),
            format!("{WARD_URN}:action"),
        )
    } else if is_token_action(&rec.action) {
        (
            json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"}),
            format!("{WARD_URN}:action"),
        )
    } else if RESTFUL_INTERACTIONS.contains(&rec.action.as_str()) {
        (
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}),
            "http://hl7.org/fhir/restful-interaction".to_owned(),
        )
    } else {
        (
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}),
            format!("{WARD_URN}:action"),
        )
    };
    let mut ev = serde_json::Map::new();
    ev.insert("resourceType".into(), json!("AuditEvent"));
    ev.insert("id".into(), json!(format!("{}-{}", rec.node, rec.seq)));
    let mut ext = vec![json!({
        "url": format!("{WARD_URN}:chain"),
        "extension": [
            {"url": "node", "valueString": rec.node},
            {"url": "seq", "valueString": rec.seq.to_string()},
            {"url": "hash", "valueString": hash_hex},
        ]
    })];
    let mut details = vec![
        json!({"url": "request-id", "valueString": rec.request_id}),
        json!({"url": "kind", "valueCode": rec.kind.as_str()}),
        json!({"url": "status", "valueString": rec.outcome.status.to_string()}),
        json!({"url": "returned", "valueString": rec.returned.to_string()}),
    ];
    if !rec.server_request_id.is_empty() {
        details.push(json!({"url": "server-request-id", "valueString": rec.server_request_id}));
    }
    if let Some(code) = &rec.outcome.code {
        details.push(json!({"url": "outcome-code", "valueCode": code}));
    }
    if let Some(i) = rec.intent_seq {
        details.push(json!({"url": "intent-seq", "valueString": i.to_string()}));
        details.push(
            json!({"url": "intent", "valueReference": {"reference": format!("AuditEvent/{}-{i}", rec.node)}}),
        );
    }
    if rec.break_glass {
        details.push(json!({"url": "break-glass", "valueBoolean": true}));
    }
    ext.push(json!({"url": format!("{WARD_URN}:record"), "extension": details}));
    ev.insert("extension".into(), Value::Array(ext));
    ev.insert("type".into(), type_coding);
    ev.insert(
        "subtype".into(),
        json!([{"system": subtype_system, "code": rec.action}]),
    );
    ev.insert("action".into(), json!(action_code(&rec.action)));
    ev.insert("recorded".into(), json!(rec.at));
    match outcome_code(rec.outcome.status) {
        Some(code) => {
            ev.insert("outcome".into(), json!(code));
            let mut desc = format!("HTTP {}", rec.outcome.status);
            if let Some(code) = &rec.outcome.code {
                desc.push(' ');
                desc.push_str(code);
            }
            ev.insert("outcomeDesc".into(), json!(desc));
        }
        // An intent names no outcome: the final record that names it (intent-seq) does, and
        // without one the change may or may not have happened.
        None => {
            ev.insert("outcomeDesc".into(), json!(INTENT_DESC));
        }
    }
    let mut purposes = Vec::new();
    if let Some(p) = &rec.purpose_of_use {
        purposes.push(
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p}]}),
        );
    }
    if rec.break_glass {
        purposes.push(json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG", "display": "break the glass"}]}));
    }
    if !purposes.is_empty() {
        ev.insert("purposeOfEvent".into(), Value::Array(purposes));
    }

    // Agents: the user (if any) is the requestor, else the client; the network address goes on
    // the requestor.
    let mut agents = Vec::new();
    let roles: Vec<Value> = rec
        .actor
        .roles_or_scopes
        .iter()
        .map(|r| json!({"text": r}))
        .collect();
    let network = rec.source.ip.as_ref().map(|ip| {
        let addr = match rec.source.port {
            Some(p) => format!("{ip}:{p}"),
            None => ip.clone(),
        };
        json!({"address": addr, "type": "2"})
    });
    let ua_ext = rec
        .source
        .user_agent
        .as_ref()
        .map(|ua| json!([{"url": format!("{WARD_URN}:user-agent"), "valueString": ua}]));
    let push_agent = |system: &str, value: &str, requestor: bool, agents: &mut Vec<Value>| {
        let mut a = serde_json::Map::new();
        if requestor {
            if let Some(x) = &ua_ext {
                a.insert("extension".into(), x.clone());
            }
            if !roles.is_empty() {
                a.insert("role".into(), Value::Array(roles.clone()));
            }
        }
        a.insert(
            "who".into(),
            json!({"identifier": {"system": system, "value": value}}),
        );
        a.insert("requestor".into(), json!(requestor));
        if requestor && let Some(n) = &network {
            a.insert("network".into(), n.clone());
        }
        agents.push(Value::Object(a));
    };
    let user_sys = format!("{WARD_URN}:user");
    let client_sys = format!("{WARD_URN}:client");
    match (&rec.actor.user_id, &rec.actor.client_id) {
        (Some(u), c) => {
            push_agent(&user_sys, u, true, &mut agents);
            if let Some(c) = c {
                push_agent(&client_sys, c, false, &mut agents);
            }
        }
        (None, Some(c)) => push_agent(&client_sys, c, true, &mut agents),
        (None, None) => {
            let mut a = serde_json::Map::new();
            if let Some(x) = &ua_ext {
                a.insert("extension".into(), x.clone());
            }
            a.insert("who".into(), json!({"display": "anonymous"}));
            a.insert("requestor".into(), json!(true));
            if let Some(n) = &network {
                a.insert("network".into(), n.clone());
            }
            agents.push(Value::Object(a));
        }
    }
    ev.insert("agent".into(), Value::Array(agents));
    ev.insert(
        "source".into(),
        json!({
            "site": "ward",
            "observer": {"identifier": {"system": format!("{WARD_URN}:node"), "value": rec.node}, "display": rec.node},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]
        }),
    );

    let mut entities = Vec::new();
    if let Some(t) = &rec.resource_type {
        let what = match (&rec.resource_id, rec.resource_version) {
            (Some(id), Some(v)) => json!({"reference": format!("{t}/{id}/_history/{v}")}),
            (Some(id), None) => json!({"reference": format!("{t}/{id}")}),
            (None, _) => json!({"type": t}),
        };
        let mut e = serde_json::Map::new();
        e.insert("what".into(), what);
        e.insert(
            "type".into(),
            json!({"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}),
        );
        if !rec.query_hashes.is_empty() {
            let d: Vec<Value> = rec
                .query_hashes
                .iter()
                .map(|h| json!({"type": "query-hash", "valueString": h}))
                .collect();
            e.insert("detail".into(), Value::Array(d));
        }
        entities.push(Value::Object(e));
    } else if !rec.query_hashes.is_empty() {
        let d: Vec<Value> = rec
            .query_hashes
            .iter()
            .map(|h| json!({"type": "query-hash", "valueString": h}))
            .collect();
        entities.push(json!({"detail": d}));
    }
    for p in &rec.patients {
        entities.push(json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
        }));
    }
    if !entities.is_empty() {
        ev.insert("entity".into(), Value::Array(entities));
    }
    Value::Object(ev)
}

/// Search criteria for `GET /fhir/AuditEvent` (all given criteria must match).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// `date=ge…`: records at or after.
    pub date_ge: Option<OffsetDateTime>,
    /// `date=lt…`: records before.
    pub date_lt: Option<OffsetDateTime>,
    /// Client id or user id of the actor.
    pub agent: Option<String>,
    /// Patient id (bare or `Patient/ID`) whose compartment was touched.
    pub patient: Option<String>,
    /// `Type/id`: the resource acted on (for `Patient/ID` also records touching that patient).
    pub entity: Option<String>,
    /// An AuditEvent.action code (`C`, `R`, `U`, `D`, `E`) or an action name (`read`,
    /// `search-type`, `token`, ...; the AuditEvent.subtype).
    pub action: Option<String>,
    /// An AuditEvent.outcome code (0, 4, 8, 12) or an HTTP status (100..=599).
    pub outcome: Option<u16>,
    /// Most records returned (0 means 100; at most 10,000).
    pub count: usize,
    /// One AuditEvent per request: a write's final record (which names its intent), not also
    /// its intent record; an intent with no final record is kept (its outcome is unknown).
    /// Without it, every record.
    pub one_per_request: bool,
}

const ALL_CODED: &[&[&str]] = &[READ_ACTIONS, CREATE_ACTIONS, UPDATE_ACTIONS, DELETE_ACTIONS];

fn query_matches(q: &AuditQuery, rec: &AuditRecord) -> bool {
    if let Some(a) = &q.agent
        && rec.actor.client_id.as_ref() != Some(a)
        && rec.actor.user_id.as_ref() != Some(a)
    {
        return false;
    }
    if let Some(p) = &q.patient {
        let p = p.strip_prefix("Patient/").unwrap_or(p);
        if !rec.patients.iter().any(|x| x == p) {
            return false;
        }
    }
    if let Some(e) = &q.entity {
        let (t, id) = e.split_once('/').unwrap_or(("", e));
        let resource = rec.resource_type.as_deref() == Some(t) && rec.resource_id.as_deref() == Some(id);
        let patient = t == "Patient" && rec.patients.iter().any(|x| x == id);
        if !resource && !patient {
            return false;
        }
    }
    if let Some(a) = &q.action {
        let ok = if matches!(a.as_str(), "C" | "R" | "U" | "D" | "E") {
            action_code(&rec.action) == a
        } else {
            &rec.action == a
        };
        if !ok {
            return false;
        }
    }
    if let Some(o) = q.outcome {
        let ok = if matches!(o, 0 | 4 | 8 | 12) {
            outcome_code(rec.outcome.status) == Some(o.to_string().as_str())
        } else {
            rec.outcome.status == o
        };
        if !ok {
            return false;
        }
    }
    if let Some(t) = rec.at_instant()
        && (q.date_ge.is_some_and(|g| t < g) || q.date_lt.is_some_and(|l| t >= l))
    {
        return false;
    }
    true
}

/// How long after its intent record a write's final record is looked for (the request
/// deadline is 30 s; the final record is committed as the response leaves). An intent with no
/// final record within it is shown on its own, as an intent whose outcome is unknown.
const FINAL_WITHIN_MS: i64 = 60_000;

/// Bound values of a generated WHERE clause, in placeholder order.
enum Bind {
    Text(String),
    Int(i64),
}

/// The WHERE clause (over `audit_record r`) of `q`, with its values. Only placeholders and
/// fixed SQL are generated; every value is bound.
fn criteria(q: &AuditQuery) -> (String, Vec<Bind>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    let next = |sql: &mut String, binds: &mut Vec<Bind>, b: Bind| {
        binds.push(b);
        sql.push_str(&format!("${}", binds.len()));
    };
    if let Some(g) = q.date_ge {
        sql.push_str(" AND r.at_ms >= ");
        next(&mut sql, &mut binds, Bind::Int(unix_ms(g)));
    }
    if let Some(l) = q.date_lt {
        sql.push_str(" AND r.at_ms < ");
        // at_ms is truncated to ms: a record at 12:00:00.0005 has at_ms of 12:00:00.000.
        next(&mut sql, &mut binds, Bind::Int(unix_ms(l) + 1));
    }
    if let Some(a) = &q.agent {
        sql.push_str(" AND (r.client_id = ");
        next(&mut sql, &mut binds, Bind::Text(a.clone()));
        sql.push_str(" OR r.user_id = ");
        next(&mut sql, &mut binds, Bind::Text(a.clone()));
        sql.push(')');
    }
    let patient_exists = |sql: &mut String, binds: &mut Vec<Bind>, id: &str| {
        sql.push_str(
            "EXISTS (SELECT 1 FROM audit_patient p WHERE p.node = r.node AND p.seq = r.seq AND p.patient_id = ",
        );
        next(sql, binds, Bind::Text(id.to_owned()));
        sql.push(')');
    };
    if let Some(p) = &q.patient {
        sql.push_str(" AND ");
        patient_exists(&mut sql, &mut binds, p.strip_prefix("Patient/").unwrap_or(p));
    }
    if let Some(e) = &q.entity {
        let (t, id) = e.split_once('/').unwrap_or(("", e));
        sql.push_str(" AND ((r.resource_type = ");
        next(&mut sql, &mut binds, Bind::Text(t.to_owned()));
        sql.push_str(" AND r.resource_id = ");
        next(&mut sql, &mut binds, Bind::Text(id.to_owned()));
        sql.push(')');
        if t == "Patient" {
            sql.push_str(" OR ");
            patient_exists(&mut sql, &mut binds, id);
        }
        sql.push(')');
    }
    if let Some(a) = &q.action {
        let list: Option<&[&str]> = match a.as_str() {
            "C" => Some(CREATE_ACTIONS),
            "R" => Some(READ_ACTIONS),
            "U" => Some(UPDATE_ACTIONS),
            "D" => Some(DELETE_ACTIONS),
            _ => None,
        };
        let (op, names): (&str, Vec<&str>) = match (a.as_str(), list) {
            (_, Some(l)) => ("IN", l.to_vec()),
            ("E", None) => (
                "NOT IN",
                ALL_CODED.iter().flat_map(|l| l.iter().copied()).collect(),
            ),
            (name, None) => ("IN", vec![name]),
        };
        sql.push_str(&format!(" AND r.action {op} ("));
        for (k, name) in names.iter().enumerate() {
            if k > 0 {
                sql.push(',');
            }
            next(&mut sql, &mut binds, Bind::Text((*name).to_owned()));
        }
        sql.push(')');
    }
    if let Some(o) = q.outcome {
        // An intent (status 0) claims no outcome: no outcome criterion matches it.
        match o {
            0 => sql.push_str(" AND r.status >= 1 AND r.status < 400"),
            4 => sql.push_str(" AND r.status >= 400 AND r.status < 500"),
            8 => sql.push_str(" AND r.status >= 500 AND r.status < 600"),
            12 => sql.push_str(" AND (r.status < 0 OR r.status >= 600)"),
            s => {
                sql.push_str(" AND r.status = ");
                next(&mut sql, &mut binds, Bind::Int(i64::from(s)));
            }
        }
    }
    if q.one_per_request {
        // A write's intent record (status 0) is shown only when no final record names it:
        // the final record of the same chain and action, within FINAL_WITHIN_MS after it,
        // whose `intent_seq` is its seq. (`node || ''` keeps SQLite on the time index for the
        // window; the cheap column tests run before the text match.)
        sql.push_str(&format!(
            " AND (r.status <> 0 OR NOT EXISTS (SELECT 1 FROM audit_record f \
             WHERE f.at_ms >= r.at_ms AND f.at_ms <= r.at_ms + {FINAL_WITHIN_MS} \
             AND f.node || '' = r.node AND f.action = r.action AND f.seq > r.seq AND f.status <> 0 \
             AND (f.record LIKE '%\"intent_seq\":' || r.seq || '}}' \
             OR f.record LIKE '%\"intent_seq\":' || r.seq || ',%')))"
        ));
    }
    (sql, binds)
}

/// `sql` with `binds` bound in order.
fn bound(sql: String, binds: &[Bind]) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Int(i) => query.bind(*i),
        };
    }
    query
}

/// Records matching `q`, newest first, each with its hash (hex). The SQL columns narrow the
/// search; every match is then re-checked against the parsed canonical record.
pub async fn search(store: &AuditStore, q: &AuditQuery) -> Result<Vec<(AuditRecord, String)>, AuditError> {
    let count = match q.count {
        0 => 100,
        n => n.min(10_000),
    };
    let (mut sql, binds) = criteria(q);
    sql.insert_str(0, "SELECT r.record, r.hash FROM audit_record r");
    sql.push_str(&format!(
        " ORDER BY r.at_ms DESC, r.node, r.seq DESC LIMIT {count}"
    ));
    let rows = bound(sql, &binds).fetch_all(&store.reader).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bytes: &str = r.try_get(0)?;
        let hash: &[u8] = r.try_get(1)?;
        let rec = AuditRecord::from_canonical(bytes.as_bytes())?;
        if query_matches(q, &rec) {
            out.push((rec, hex::encode(hash)));
        }
    }
    Ok(out)
}

impl AuditQuery {
    /// How many records match (`count` aside), counting at most `cap + 1`: the `total` of
    /// `_summary=count`, with the work bounded by the cap.
    pub async fn count_matches(&self, store: &AuditStore, cap: u64) -> Result<u64, AuditError> {
        let (mut sql, binds) = criteria(self);
        sql.insert_str(0, "SELECT COUNT(*) FROM (SELECT 1 FROM audit_record r");
        sql.push_str(&format!(" LIMIT {}) c", cap.saturating_add(1)));
        let row = bound(sql, &binds).fetch_one(&store.reader).await?;
        let n: i64 = row.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The accounting of disclosures of a patient: every record whose patient list names
/// `patient_id` (bare or `Patient/ID`), oldest first, optionally from `since` on. Includes intent
/// records of writes (their outcome record follows with `intent_seq` set).
pub async fn disclosures(
    store: &AuditStore,
    patient_id: &str,
    since: Option<OffsetDateTime>,
) -> Result<Vec<AuditRecord>, AuditError> {
    let pid = patient_id.strip_prefix("Patient/").unwrap_or(patient_id);
    let since_ms = since.map_or(i64::MIN, unix_ms);
    let rows = sqlx::query(
        "SELECT r.record FROM audit_patient p JOIN audit_record r ON r.node = p.node AND r.seq = p.seq \
         WHERE p.patient_id = $1 AND r.at_ms >= $2 ORDER BY r.at_ms, r.node, r.seq",
    )
    .bind(pid)
    .bind(since_ms)
    .fetch_all(&store.reader)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let bytes: &str = r.try_get(0)?;
        let rec = AuditRecord::from_canonical(bytes.as_bytes())?;
        let in_range = match (since, rec.at_instant()) {
            (Some(s), Some(t)) => t >= s,
            _ => true,
        };
        if in_range && rec.patients.iter().any(|p| p == pid) {
            out.push(rec);
        }
    }
    Ok(out)
}
