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
/// failure (5xx), 12 major failure (no status: the request never completed).
pub fn outcome_code(status: u16) -> &'static str {
    match status {
        1..=399 => "0",
        400..=499 => "4",
        500..=599 => "8",
        _ => "12",
    }
}

fn is_token_action(action: &str) -> bool {
    matches!(
        action,
        "token" | "authorize" | "login" | "logout" | "mfa" | "introspect" | "revoke" | "userinfo"
    )
}

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
    ev.insert("outcome".into(), json!(outcome_code(rec.outcome.status)));
    let mut desc = format!("HTTP {}", rec.outcome.status);
    if let Some(code) = &rec.outcome.code {
        desc.push(' ');
        desc.push_str(code);
    }
    ev.insert("outcomeDesc".into(), json!(desc));
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
            outcome_code(rec.outcome.status) == o.to_string()
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

/// Records matching `q`, newest first, each with its hash (hex). The SQL columns narrow the
/// search; every match is then re-checked against the parsed canonical record.
pub async fn search(store: &AuditStore, q: &AuditQuery) -> Result<Vec<(AuditRecord, String)>, AuditError> {
    let count = match q.count {
        0 => 100,
        n => n.min(10_000),
    };
    let mut sql = String::from("SELECT r.record, r.hash FROM audit_record r WHERE 1 = 1");
    let mut texts: Vec<String> = Vec::new();
    let mut ints: Vec<i64> = Vec::new();
    // Parameters are bound in the order they are pushed; `binds` records which list and index.
    enum B {
        T(usize),
        I(usize),
    }
    let mut binds: Vec<B> = Vec::new();
    let mut n = 0usize;
    let mut next = |sql: &mut String, b: B, binds: &mut Vec<B>| {
        n += 1;
        binds.push(b);
        sql.push_str(&format!("${n}"));
    };
    if let Some(g) = q.date_ge {
        sql.push_str(" AND r.at_ms >= ");
        ints.push(unix_ms(g));
        next(&mut sql, B::I(ints.len() - 1), &mut binds);
    }
    if let Some(l) = q.date_lt {
        sql.push_str(" AND r.at_ms < ");
        // at_ms is truncated to ms: a record at 12:00:00.0005 has at_ms of 12:00:00.000.
        ints.push(unix_ms(l) + 1);
        next(&mut sql, B::I(ints.len() - 1), &mut binds);
    }
    if let Some(a) = &q.agent {
        texts.push(a.clone());
        let i = texts.len() - 1;
        sql.push_str(" AND (r.client_id = ");
        next(&mut sql, B::T(i), &mut binds);
        sql.push_str(" OR r.user_id = ");
        next(&mut sql, B::T(i), &mut binds);
        sql.push(')');
    }
    let patient_exists = |sql: &mut String,
                          i: usize,
                          binds: &mut Vec<B>,
                          next: &mut dyn FnMut(&mut String, B, &mut Vec<B>)| {
        sql.push_str(
            "EXISTS (SELECT 1 FROM audit_patient p WHERE p.node = r.node AND p.seq = r.seq AND p.patient_id = ",
        );
        next(sql, B::T(i), binds);
        sql.push(')');
    };
    if let Some(p) = &q.patient {
        texts.push(p.strip_prefix("Patient/").unwrap_or(p).to_owned());
        let i = texts.len() - 1;
        sql.push_str(" AND ");
        patient_exists(&mut sql, i, &mut binds, &mut next);
    }
    if let Some(e) = &q.entity {
        let (t, id) = e.split_once('/').unwrap_or(("", e));
        texts.push(t.to_owned());
        texts.push(id.to_owned());
        let (ti, ii) = (texts.len() - 2, texts.len() - 1);
        sql.push_str(" AND ((r.resource_type = ");
        next(&mut sql, B::T(ti), &mut binds);
        sql.push_str(" AND r.resource_id = ");
        next(&mut sql, B::T(ii), &mut binds);
        sql.push(')');
        if t == "Patient" {
            sql.push_str(" OR ");
            patient_exists(&mut sql, ii, &mut binds, &mut next);
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
            texts.push((*name).to_owned());
            next(&mut sql, B::T(texts.len() - 1), &mut binds);
        }
        sql.push(')');
    }
    if let Some(o) = q.outcome {
        match o {
            0 => sql.push_str(" AND r.status >= 1 AND r.status < 400"),
            4 => sql.push_str(" AND r.status >= 400 AND r.status < 500"),
            8 => sql.push_str(" AND r.status >= 500 AND r.status < 600"),
            12 => sql.push_str(" AND (r.status < 1 OR r.status >= 600)"),
            s => {
                sql.push_str(" AND r.status = ");
                ints.push(i64::from(s));
                next(&mut sql, B::I(ints.len() - 1), &mut binds);
            }
        }
    }
    sql.push_str(" ORDER BY r.at_ms DESC, r.node, r.seq DESC LIMIT ");
    ints.push(count as i64);
    next(&mut sql, B::I(ints.len() - 1), &mut binds);

    // Only placeholders and fixed SQL are generated above; every value is bound.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for b in &binds {
        query = match b {
            B::T(i) => query.bind(texts[*i].as_str()),
            B::I(i) => query.bind(ints[*i]),
        };
    }
    let rows = query.fetch_all(&store.reader).await?;
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
