//! FHIR search knowledge (SPEC F-2, F-3, EN-4): the search-parameter table, index-value
//! extraction, the patient compartment, query parsing and in-memory matching.
//!
//! The table is derived from the official R4 `search-parameters.json` (vendored as
//! `fhir-r4/search-parameters.trimmed.json`, produced by `fhir-r4/trim_search_parameters.py`):
//! every parameter of kind string, token, reference, date, quantity, uri or number of every
//! resource type, plus the `Resource` parameters (`_id`, `_lastUpdated`, `_tag`, `_profile`,
//! `_security`, `_source`). Composite and special parameters are left out (a search using one is
//! refused as unknown).
//!
//! # What may be stored in plaintext (EN-4)
//! Ward's store keeps **every** string, token and uri value only as keyed blind indexes (HMAC),
//! whether or not it identifies a person: a code or a free-text description can carry PHI just as
//! well, and blind hashes serve exact, token and starts-with search equally. [`SearchParam::identifying`]
//! additionally marks the values that identify a person (names, addresses, identifiers, telecom of
//! person types; birth and death dates), which matters for dates: an identifying date is stored as
//! a blind hash plus its plaintext year only, and range searches on it are answered by year, then
//! filtered after decryption. Non-identifying clinical dates (effective, onset, period, ...),
//! quantities and numbers are stored in plaintext so ranges can be searched in SQL; references are
//! stored as (type, id), ids being server-assigned random UUIDs. That is the documented threat
//! model: someone with the raw database sees when clinical events happened and measured values,
//! but no names, identifiers, contact details, addresses, birth dates or codes.

pub mod date;
mod matcher;
pub mod query;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde_json::Value;

use crate::fhirpath::{self, Expr, Item};
use crate::index::normalize_text;
pub use date::{DateRange, Prefix};
pub use matcher::matches;
pub use query::{
    Criterion, CriterionValue, Include, Modifier, SearchError, SearchQuery, SortKey, Summary, Target,
    TotalMode,
};

const TABLE_TEXT: &str = include_str!("../../fhir-r4/search-parameters.trimmed.json");
const COMPARTMENT_TEXT: &str = include_str!("../../fhir-r4/compartmentdefinition-patient.json");

/// Person-like resource types: every string parameter of these identifies a person.
pub const PERSON_TYPES: &[&str] = &["Patient", "Practitioner", "RelatedPerson", "Person"];

/// Maximum prefix length (in characters) indexed for string parameters; longer search values
/// match on their first [`MAX_PREFIX_CHARS`] characters and are then filtered after decryption.
pub const MAX_PREFIX_CHARS: usize = 16;

/// The type of a search parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    String,
    Token,
    Reference,
    Date,
    Quantity,
    Uri,
    Number,
}

impl ParamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamKind::String => "string",
            ParamKind::Token => "token",
            ParamKind::Reference => "reference",
            ParamKind::Date => "date",
            ParamKind::Quantity => "quantity",
            ParamKind::Uri => "uri",
            ParamKind::Number => "number",
        }
    }

    fn parse(s: &str) -> Option<ParamKind> {
        Some(match s {
            "string" => ParamKind::String,
            "token" => ParamKind::Token,
            "reference" => ParamKind::Reference,
            "date" => ParamKind::Date,
            "quantity" => ParamKind::Quantity,
            "uri" => ParamKind::Uri,
            "number" => ParamKind::Number,
            _ => return None,
        })
    }
}

/// One search parameter of one resource type (or of `Resource`, applying to every type).
#[derive(Debug)]
pub struct SearchParam {
    /// `Patient`, ..., or `Resource`.
    pub base: String,
    pub code: String,
    pub kind: ParamKind,
    /// The FHIRPath expression (the part of the official one rooted at `base`).
    pub expression: String,
    pub expr: Expr,
    /// Allowed target types of a reference parameter; empty = any.
    pub targets: Vec<String>,
    /// The official definition id (`http://hl7.org/fhir/SearchParameter/{id}`).
    pub definition: String,
    /// Whether its values identify a person (see the module docs).
    pub identifying: bool,
}

/// Parameters are identified by (base, code).
impl PartialEq for SearchParam {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base && self.code == other.code
    }
}

impl SearchParam {
    /// Whether values must be kept blind as a year + keyed hash (birth and death dates).
    pub fn is_identifying_date(&self) -> bool {
        self.kind == ParamKind::Date && self.identifying
    }

    pub fn definition_url(&self) -> String {
        format!("http://hl7.org/fhir/SearchParameter/{}", self.definition)
    }
}

fn identifying(base: &str, code: &str, kind: ParamKind) -> bool {
    let person = PERSON_TYPES.contains(&base);
    match kind {
        ParamKind::String => person,
        ParamKind::Token => {
            matches!(code, "identifier" | "telecom" | "phone" | "email")
                && (person || base == "PractitionerRole")
        }
        ParamKind::Date => person && matches!(code, "birthdate" | "death-date"),
        _ => false,
    }
}

struct Table {
    by_key: HashMap<(String, String), SearchParam>,
    /// codes per base, sorted
    by_type: BTreeMap<String, Vec<String>>,
    /// resource type -> compartment parameter codes
    compartment: HashMap<String, Vec<String>>,
}

#[allow(
    clippy::expect_used,
    reason = "compile-time constants (vendored table and definition), loaded by the tests"
)]
fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let rows: Vec<(String, String, String, String, Vec<String>, String)> =
            serde_json::from_str(TABLE_TEXT).expect("vendored search-parameter table is valid JSON");
        let mut by_key = HashMap::new();
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (base, code, kind, expression, targets, definition) in rows {
            let kind = ParamKind::parse(&kind).expect("table kinds are supported kinds");
            let expr = fhirpath::parse(&expression).expect("table expressions parse (tested)");
            by_type.entry(base.clone()).or_default().push(code.clone());
            by_key.insert(
                (base.clone(), code.clone()),
                SearchParam {
                    identifying: identifying(&base, &code, kind),
                    base,
                    code,
                    kind,
                    expression,
                    expr,
                    targets,
                    definition,
                },
            );
        }
        for codes in by_type.values_mut() {
            codes.sort();
        }
        let def: Value =
            serde_json::from_str(COMPARTMENT_TEXT).expect("vendored compartment definition is valid JSON");
        let mut compartment = HashMap::new();
        for r in def
            .get("resource")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(code), Some(params)) = (r["code"].as_str(), r["param"].as_array()) else {
                continue;
            };
            compartment.insert(
                code.to_owned(),
                params
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect(),
            );
        }
        Table {
            by_key,
            by_type,
            compartment,
        }
    })
}

/// The parameter `code` of `rtype` (its own, or a `Resource` parameter).
pub fn param(rtype: &str, code: &str) -> Option<&'static SearchParam> {
    let t = table();
    t.by_key
        .get(&(rtype.to_owned(), code.to_owned()))
        .or_else(|| t.by_key.get(&("Resource".to_owned(), code.to_owned())))
}

/// Every parameter searchable on `rtype`, `Resource` ones first, then the type's own by code.
pub fn params_for(rtype: &str) -> Vec<&'static SearchParam> {
    let t = table();
    let mut out = Vec::new();
    for base in ["Resource", rtype] {
        for code in t.by_type.get(base).into_iter().flatten() {
            if let Some(p) = t.by_key.get(&(base.to_owned(), code.clone())) {
                if base == rtype && out.iter().any(|o: &&SearchParam| o.code == p.code) {
                    continue;
                }
                out.push(p);
            }
        }
    }
    out
}

/// Every parameter of the table (for tests and the CapabilityStatement).
pub fn all_params() -> impl Iterator<Item = &'static SearchParam> {
    table().by_key.values()
}

/// One value to index for a resource.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexValue {
    /// A string: `normalized` ([`normalize_text`]) for the default starts-with search, `exact`
    /// (as written) for `:exact`.
    String {
        normalized: String,
        exact: String,
    },
    /// A token: `system` is `None` when the element has no system.
    Token {
        system: Option<String>,
        code: String,
    },
    Reference {
        rtype: String,
        id: String,
    },
    /// A non-identifying date as a range.
    Date(DateRange),
    /// An identifying date: the value as written (to blind) and its year.
    BlindDate {
        value: String,
        year: i32,
    },
    /// A quantity or number (`lo == hi` for a single value; a Range gives its bounds).
    Quantity {
        lo: Option<f64>,
        hi: Option<f64>,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    Uri(String),
}

/// An index entry: parameter and value.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    pub param: &'static SearchParam,
    pub value: IndexValue,
}

/// The index values of `resource` for every parameter of its type except `_id` and
/// `_lastUpdated` (which the store keeps as columns). Duplicates are removed; the order is
/// deterministic.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out: Vec<IndexEntry> = Vec::new();
    for p in params_for(rtype) {
        if p.code == "_id" || p.code == "_lastUpdated" {
            continue;
        }
        for value in param_values(p, resource) {
            let e = IndexEntry { param: p, value };
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    out
}

/// The values of one parameter in `resource`.
pub fn param_values(p: &SearchParam, resource: &Value) -> Vec<IndexValue> {
    let mut out = Vec::new();
    for item in fhirpath::evaluate(&p.expr, resource) {
        values_of(p, &item, &mut out);
    }
    out
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn strs<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a str> {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn values_of(p: &SearchParam, item: &Item<'_>, out: &mut Vec<IndexValue>) {
    let node = match item {
        Item::Bool(b) if p.kind == ParamKind::Token => {
            out.push(IndexValue::Token {
                system: None,
                code: b.to_string(),
            });
            return;
        }
        Item::Node { value, .. } => *value,
        _ => return,
    };
    match p.kind {
        ParamKind::String => {
            let mut push = |v: &str| {
                let normalized = normalize_text(v);
                if !normalized.is_empty() {
                    out.push(IndexValue::String {
                        normalized,
                        exact: v.to_owned(),
                    });
                }
            };
            match node {
                Value::String(v) => push(v),
                Value::Object(_) => {
                    // HumanName, Address, or a CodeableConcept/Coding's text/display.
                    for k in [
                        "family",
                        "text",
                        "city",
                        "district",
                        "state",
                        "postalCode",
                        "country",
                        "display",
                    ] {
                        if let Some(v) = s(node, k) {
                            push(v);
                        }
                    }
                    for k in ["given", "prefix", "suffix", "line"] {
                        for v in strs(node, k) {
                            push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        ParamKind::Token => {
            let email = p.code == "email";
            let mut push = |system: Option<&str>, code: &str| {
                let code = code.trim();
                if code.is_empty() {
                    return;
                }
                let code = if email {
                    code.to_lowercase()
                } else {
                    code.to_owned()
                };
                out.push(IndexValue::Token {
                    system: system.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
                    code,
                });
            };
            match node {
                Value::String(v) => push(None, v),
                Value::Bool(b) => push(None, &b.to_string()),
                Value::Object(o) => {
                    if let Some(codings) = o.get("coding").and_then(Value::as_array) {
                        // CodeableConcept
                        for c in codings {
                            if let Some(code) = s(c, "code") {
                                push(s(c, "system"), code);
                            }
                        }
                    } else if o.contains_key("value") && !o.contains_key("code") {
                        // Identifier or ContactPoint
                        if let Some(v) = s(node, "value") {
                            let contact = matches!(
                                s(node, "system"),
                                Some("phone" | "fax" | "email" | "pager" | "url" | "sms" | "other")
                            );
                            if contact {
                                let lower = s(node, "system") == Some("email");
                                push(None, &if lower { v.to_lowercase() } else { v.to_owned() });
                            } else {
                                push(s(node, "system"), v);
                            }
                        }
                    } else if let Some(code) = s(node, "code") {
                        // Coding (or a Quantity used as a token)
                        push(s(node, "system"), code);
                    }
                }
                _ => {}
            }
        }
        ParamKind::Reference => {
            let r = match node {
                Value::Object(o) => o.get("reference").and_then(Value::as_str),
                Value::String(v) => Some(v.as_str()),
                _ => None,
            };
            if let Some((t, id)) = r.and_then(fhirpath::parse_reference)
                && (p.targets.is_empty() || p.targets.iter().any(|x| x == t))
            {
                out.push(IndexValue::Reference {
                    rtype: t.to_owned(),
                    id: id.to_owned(),
                });
            }
        }
        ParamKind::Date => {
            let mut push_str = |v: &str| {
                if p.identifying {
                    if let (Some(year), Some(_)) = (date::year(v), date::parse_range(v)) {
                        out.push(IndexValue::BlindDate {
                            value: v.trim().to_owned(),
                            year,
                        });
                    }
                } else if let Some(r) = date::parse_range(v) {
                    out.push(IndexValue::Date(r));
                }
            };
            match node {
                Value::String(v) => push_str(v),
                Value::Object(o) if o.contains_key("start") || o.contains_key("end") => {
                    // Period
                    let lo = s(node, "start").and_then(date::parse_range).map(|r| r.lo);
                    let hi = s(node, "end").and_then(date::parse_range).map(|r| r.hi);
                    if (lo.is_some() || hi.is_some()) && !p.identifying {
                        out.push(IndexValue::Date(DateRange {
                            lo: lo.unwrap_or(i64::MIN),
                            hi: hi.unwrap_or(i64::MAX),
                        }));
                    }
                }
                Value::Object(o) if o.contains_key("event") => {
                    // Timing
                    for e in strs(node, "event") {
                        push_str(e);
                    }
                }
                _ => {}
            }
        }
        ParamKind::Quantity | ParamKind::Number => match node {
            Value::Number(_) => {
                let v = number(node);
                out.push(IndexValue::Quantity {
                    lo: v,
                    hi: v,
                    system: None,
                    code: None,
                    unit: None,
                });
            }
            Value::Object(o) if o.contains_key("low") || o.contains_key("high") => {
                // Range
                let low = o.get("low");
                let high = o.get("high");
                let any = low.or(high).unwrap_or(&Value::Null);
                out.push(IndexValue::Quantity {
                    lo: low.and_then(|l| l.get("value")).and_then(number),
                    hi: high.and_then(|h| h.get("value")).and_then(number),
                    system: s(any, "system").map(str::to_owned),
                    code: s(any, "code").map(str::to_owned),
                    unit: s(any, "unit").map(str::to_owned),
                });
            }
            Value::Object(o) if o.contains_key("value") => {
                let v = o.get("value").and_then(number);
                if v.is_some() {
                    out.push(IndexValue::Quantity {
                        lo: v,
                        hi: v,
                        system: s(node, "system").map(str::to_owned),
                        // Money: the currency is the code.
                        code: s(node, "code").or_else(|| s(node, "currency")).map(str::to_owned),
                        unit: s(node, "unit").map(str::to_owned),
                    });
                }
            }
            _ => {}
        },
        ParamKind::Uri => {
            if let Value::String(v) = node
                && !v.trim().is_empty()
            {
                out.push(IndexValue::Uri(v.trim().to_owned()));
            }
        }
    }
}

/// The resource types that have a patient compartment membership rule, sorted.
pub fn compartment_types() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = table().compartment.keys().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// Whether resources of `rtype` can belong to a patient compartment.
pub fn in_compartment_definition(rtype: &str) -> bool {
    table().compartment.contains_key(rtype)
}

/// The ids of the patients whose compartment `resource` belongs to, from the official
/// `CompartmentDefinition/patient`: the Patient references in its compartment parameters. A
/// Patient belongs to its own compartment (and to those of the patients it links to).
/// Sorted, without duplicates.
pub fn patient_compartment(resource: &Value) -> Vec<String> {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    if rtype == "Patient"
        && let Some(id) = resource.get("id").and_then(Value::as_str)
    {
        ids.push(id.to_owned());
    }
    for code in table().compartment.get(rtype).into_iter().flatten() {
        let Some(p) = param(rtype, code) else { continue };
        for v in param_values(p, resource) {
            if let IndexValue::Reference { rtype, id } = v
                && rtype == "Patient"
            {
                ids.push(id);
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const US_CORE: &[&str] = &[
        "Patient",
        "Practitioner",
        "Organization",
        "Encounter",
        "Observation",
        "Condition",
        "MedicationRequest",
        "AllergyIntolerance",
        "Procedure",
        "Immunization",
        "DiagnosticReport",
        "DocumentReference",
        "CareTeam",
        "Consent",
        "AuditEvent",
    ];

    #[test]
    fn every_expression_parses_and_evaluates() {
        let mut n = 0;
        for p in all_params() {
            // Re-parse to be sure the parse is stable, then evaluate on an empty and a typed resource.
            assert_eq!(
                fhirpath::parse(&p.expression).unwrap(),
                p.expr,
                "{}",
                p.expression
            );
            let base = if p.base == "Resource" { "Basic" } else { &p.base };
            let empty = param_values(p, &json!({"resourceType": base}));
            assert!(empty.is_empty() || p.code == "deceased", "{}", p.expression);
            // A resource populated along the expression's path yields a value.
            let r = synth(p, base).unwrap_or_else(|| panic!("cannot synthesize {}", p.expression));
            assert!(!param_values(p, &r).is_empty(), "{} on {r}", p.expression);
            n += 1;
        }
        assert!(n > 1500, "{n}");
        for t in US_CORE {
            let ps = params_for(t);
            assert!(ps.iter().any(|p| p.code == "_id"), "{t}");
            assert!(ps.iter().any(|p| p.code == "_lastUpdated"), "{t}");
            assert!(ps.len() > 6, "{t}");
        }
        for t in crate::types::RESOURCE_TYPES {
            assert!(param(t, "_id").is_some());
        }
    }

    #[derive(Debug)]
    enum Step {
        Key(String),
        Choice(String, String),
        WhereEq(String, String),
        Resolve(String),
    }

    fn steps(e: &Expr, out: &mut Vec<Step>) -> bool {
        match e {
            Expr::Union(a, _) => steps(a, out),
            Expr::Child(b, name) if **b == Expr::This => {
                // the type root
                let _ = name;
                true
            }
            Expr::Child(b, name) => {
                steps(b, out) && {
                    out.push(Step::Key(name.clone()));
                    true
                }
            }
            Expr::Index(b, _) => steps(b, out),
            Expr::As(b, t) => {
                if !steps(b, out) {
                    return false;
                }
                match out.pop() {
                    Some(Step::Key(k)) => {
                        out.push(Step::Choice(k, t.clone()));
                        true
                    }
                    _ => false,
                }
            }
            Expr::Call(b, f, args) if f == "where" => {
                if !steps(b, out) {
                    return false;
                }
                match &args[0] {
                    Expr::Eq(l, r, false) => match (&**l, &**r) {
                        (Expr::Child(t, field), Expr::Str(v)) if **t == Expr::This => {
                            out.push(Step::WhereEq(field.clone(), v.clone()));
                            true
                        }
                        _ => false,
                    },
                    Expr::Is(inner, t) if matches!(&**inner, Expr::Call(_, f, _) if f == "resolve") => {
                        out.push(Step::Resolve(t.clone()));
                        true
                    }
                    _ => false,
                }
            }
            Expr::And(a, _) => steps(a, out),
            Expr::Call(b, f, _) if f == "exists" => steps(b, out),
            _ => false,
        }
    }

    fn leaf(p: &SearchParam, choice: Option<&str>, resolve: Option<&str>) -> Value {
        let target = resolve
            .map(str::to_owned)
            .or_else(|| p.targets.first().cloned())
            .unwrap_or_else(|| "Patient".into());
        match choice {
            Some("Quantity" | "Age" | "Duration" | "Money" | "SampledData")
                if p.kind == ParamKind::Quantity =>
            {
                json!({"value": 1})
            }
            Some("Range") => json!({"low": {"value": 1}}),
            Some("Period") => json!({"start": "2020-01-01"}),
            Some("CodeableConcept") if p.kind == ParamKind::String => json!({"text": "x"}),
            Some("CodeableConcept") => json!({"coding": [{"system": "s", "code": "c"}]}),
            Some("Reference") => json!({"reference": format!("{target}/1")}),
            _ => match p.kind {
                ParamKind::String => json!("Xyz"),
                ParamKind::Token => json!("c"),
                ParamKind::Reference => json!({"reference": format!("{target}/1")}),
                ParamKind::Date => json!("2020-01-01"),
                ParamKind::Quantity => json!({"value": 1}),
                ParamKind::Number => json!(1),
                ParamKind::Uri => json!("http://x"),
            },
        }
    }

    /// A resource of `base` populated along `p`'s expression, with a leaf of the right kind.
    fn synth(p: &SearchParam, base: &str) -> Option<Value> {
        let mut path = Vec::new();
        if !steps(&p.expr, &mut path) {
            return None;
        }
        let resolve = path.iter().find_map(|s| match s {
            Step::Resolve(t) => Some(t.as_str()),
            _ => None,
        });
        let choice = path.iter().rev().find_map(|s| match s {
            Step::Choice(_, t) => Some(t.as_str()),
            _ => None,
        });
        let mut value = leaf(p, choice, resolve);
        for step in path.iter().rev() {
            value = match step {
                Step::Key(k) => json!({ k: value }),
                Step::Choice(k, t) => {
                    let mut c = t.chars();
                    let t: String = c
                        .next()
                        .map(|f| f.to_ascii_uppercase())
                        .into_iter()
                        .chain(c)
                        .collect();
                    json!({ format!("{k}{t}"): value })
                }
                Step::WhereEq(f, v) => {
                    let mut o = if value.is_object() {
                        value
                    } else {
                        json!({ "value": value })
                    };
                    o[f] = json!(v);
                    o
                }
                Step::Resolve(_) => value,
            };
        }
        value["resourceType"] = json!(base);
        Some(value)
    }

    #[test]
    fn kinds_and_identifying_flags() {
        let k = |t: &str, c: &str| param(t, c).map(|p| (p.kind, p.identifying));
        assert_eq!(k("Patient", "family"), Some((ParamKind::String, true)));
        assert_eq!(k("Patient", "identifier"), Some((ParamKind::Token, true)));
        assert_eq!(k("Patient", "phone"), Some((ParamKind::Token, true)));
        assert_eq!(k("Patient", "birthdate"), Some((ParamKind::Date, true)));
        assert_eq!(k("Patient", "death-date"), Some((ParamKind::Date, true)));
        assert_eq!(k("Patient", "gender"), Some((ParamKind::Token, false)));
        assert_eq!(k("Practitioner", "name"), Some((ParamKind::String, true)));
        assert_eq!(k("RelatedPerson", "birthdate"), Some((ParamKind::Date, true)));
        assert_eq!(k("Observation", "date"), Some((ParamKind::Date, false)));
        assert_eq!(
            k("Observation", "value-quantity"),
            Some((ParamKind::Quantity, false))
        );
        assert_eq!(k("Observation", "subject"), Some((ParamKind::Reference, false)));
        assert_eq!(k("Resource", "_profile"), Some((ParamKind::Uri, false)));
        assert_eq!(
            k("RiskAssessment", "probability"),
            Some((ParamKind::Number, false))
        );
        assert_eq!(
            k("Observation", "code-value-quantity"),
            None,
            "composite left out"
        );
        assert_eq!(k("Patient", "nope"), None);
        // every string parameter of a person type is identifying
        for t in PERSON_TYPES {
            for p in params_for(t) {
                if p.kind == ParamKind::String {
                    assert!(p.identifying, "{t}.{}", p.code);
                }
            }
        }
    }

    fn has(values: &[IndexEntry], code: &str, v: &IndexValue) -> bool {
        values.iter().any(|e| e.param.code == code && &e.value == v)
    }

    fn st(v: &str) -> IndexValue {
        IndexValue::String {
            normalized: normalize_text(v),
            exact: v.to_owned(),
        }
    }

    fn tok(system: Option<&str>, code: &str) -> IndexValue {
        IndexValue::Token {
            system: system.map(str::to_owned),
            code: code.to_owned(),
        }
    }

    #[test]
    fn extracts_patient_values() {
        let p = json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:mrn", "value": " MRN-1 "}, {"value": "X9"}],
            "name": [{"family": "Zola", "given": ["Émile"], "prefix": ["Mr."], "text": "Émile Zola"}],
            "telecom": [{"system": "phone", "value": "202-555-0142"}, {"system": "email", "value": "E@X.org"}],
            "gender": "male", "birthDate": "1970-03-14", "deceasedDateTime": "2020-01-02T03:04:05Z",
            "address": [{"line": ["12 Rue"], "city": "Paris", "postalCode": "75001"}],
            "generalPractitioner": [{"reference": "Practitioner/d1"}],
            "meta": {"tag": [{"system": "urn:t", "code": "vip"}]}
        });
        let v = extract(&p);
        assert!(has(&v, "family", &st("Zola")));
        assert!(has(&v, "given", &st("Émile")));
        assert!(has(&v, "name", &st("Émile Zola")));
        assert!(has(&v, "name", &st("Mr.")));
        assert!(has(&v, "address", &st("12 Rue")));
        assert!(has(&v, "address-city", &st("Paris")));
        assert!(has(&v, "address-postalcode", &st("75001")));
        assert!(has(&v, "identifier", &tok(Some("urn:mrn"), "MRN-1")));
        assert!(has(&v, "identifier", &tok(None, "X9")));
        assert!(has(&v, "phone", &tok(None, "202-555-0142")));
        assert!(has(&v, "email", &tok(None, "e@x.org")));
        assert!(has(&v, "telecom", &tok(None, "e@x.org")));
        assert!(has(&v, "gender", &tok(None, "male")));
        assert!(has(&v, "deceased", &tok(None, "true")));
        assert!(has(
            &v,
            "birthdate",
            &IndexValue::BlindDate {
                value: "1970-03-14".into(),
                year: 1970
            }
        ));
        assert!(
            v.iter().any(|e| e.param.code == "death-date"
                && matches!(&e.value, IndexValue::BlindDate { year: 2020, .. }))
        );
        assert!(has(
            &v,
            "general-practitioner",
            &IndexValue::Reference {
                rtype: "Practitioner".into(),
                id: "d1".into()
            }
        ));
        assert!(has(&v, "_tag", &tok(Some("urn:t"), "vip")));
        assert_eq!(v, extract(&p));
        assert_eq!(patient_compartment(&p), vec!["p1"]);
    }

    #[test]
    fn extracts_clinical_values_and_compartments() {
        let o = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
            "subject": {"reference": "Patient/p1"},
            "performer": [{"reference": "Patient/p2"}, {"reference": "Practitioner/d1"}],
            "effectivePeriod": {"start": "2021-01-01T10:00:00Z"},
            "valueQuantity": {"value": 72.5, "unit": "beats/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        });
        let v = extract(&o);
        assert!(has(&v, "code", &tok(Some("http://loinc.org"), "8867-4")));
        assert!(has(&v, "status", &tok(None, "final")));
        assert!(has(
            &v,
            "subject",
            &IndexValue::Reference {
                rtype: "Patient".into(),
                id: "p1".into()
            }
        ));
        assert!(has(
            &v,
            "patient",
            &IndexValue::Reference {
                rtype: "Patient".into(),
                id: "p1".into()
            }
        ));
        let start = date::parse_range("2021-01-01T10:00:00Z").unwrap().lo;
        assert!(has(
            &v,
            "date",
            &IndexValue::Date(DateRange {
                lo: start,
                hi: i64::MAX
            })
        ));
        assert!(has(
            &v,
            "value-quantity",
            &IndexValue::Quantity {
                lo: Some(72.5),
                hi: Some(72.5),
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("/min".into()),
                unit: Some("beats/min".into())
            }
        ));
        assert_eq!(patient_compartment(&o), vec!["p1", "p2"]);

        let enc = json!({"resourceType": "Encounter", "subject": {"reference": "Group/g"}});
        assert!(patient_compartment(&enc).is_empty());
        let basic = json!({"resourceType": "Basic", "subject": {"reference": "Patient/p9"}});
        assert_eq!(patient_compartment(&basic), vec!["p9"]);
        assert!(patient_compartment(&json!({"resourceType": "Organization"})).is_empty());
        assert!(in_compartment_definition("Observation"));
        assert!(!in_compartment_definition("Organization"));
    }
}
