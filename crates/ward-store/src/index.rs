//! Search-index rows for a resource version (SPEC F-2, F-3, EN-4).
//!
//! Values come from `ward_fhir::search::extract`; this module turns them into rows of the typed
//! index tables:
//! * `search_blind`: keyed HMACs only. Strings: the value as written under `"<param>:exact"`, and
//!   its normalized prefixes (1..=16 characters) under `"<param>:prefix"` (case- and
//!   accent-insensitive starts-with). Tokens under `"<param>"` in the forms [`token_any`]
//!   (`code`), [`token_system_code`] (`system|code`), [`token_system`] (`system|`) and
//!   [`token_no_system`] (`|code`). Uris under `"<param>"` as [`uri_form`].
//! * `search_date`: clinical dates as plaintext `[lo_ms, hi_ms]`; identifying dates (birth, death)
//!   as a blind hash of the value plus the plaintext year only.
//! * `search_reference`: (target type, target id).
//! * `search_quantity`: plaintext numbers with system, code and unit.
//! * `compartment`: the patients whose compartment the resource belongs to.

use serde_json::Value;
use ward_crypto::BlindIndexer;
use ward_fhir::search::{IndexValue, MAX_PREFIX_CHARS};

/// A bound SQL argument of an index row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Str(String),
    OptStr(Option<String>),
    I64(Option<i64>),
    F64(Option<f64>),
    Bytes(Option<Vec<u8>>),
}

/// The rows of one resource, per table (columns after tenant, rtype, id).
#[derive(Default, Debug)]
pub(crate) struct IndexRows {
    pub blind: Vec<Vec<Arg>>,
    pub dates: Vec<Vec<Arg>>,
    pub refs: Vec<Vec<Arg>>,
    pub quantities: Vec<Vec<Arg>>,
    pub compartment: Vec<String>,
}

/// (table, columns after tenant/rtype/id) of the index tables, in [`IndexRows`] order.
pub(crate) const TABLES: [(&str, &[&str]); 4] = [
    ("search_blind", &["param", "hash"]),
    ("search_date", &["param", "lo_ms", "hi_ms", "year", "hash"]),
    ("search_reference", &["param", "target_type", "target_id"]),
    (
        "search_quantity",
        &["param", "lo", "hi", "system", "code", "unit"],
    ),
];

pub(crate) fn exact_label(code: &str) -> String {
    format!("{code}:exact")
}

pub(crate) fn prefix_label(code: &str) -> String {
    format!("{code}:prefix")
}

/// Token form matching `code` in any (or no) system.
pub(crate) fn token_any(code: &str) -> String {
    format!("c|{code}")
}

/// Token form matching `system|code`. The system length makes the form unambiguous.
pub(crate) fn token_system_code(system: &str, code: &str) -> String {
    format!("sc|{}|{system}|{code}", system.len())
}

/// Token form matching `system|` (any code in the system).
pub(crate) fn token_system(system: &str) -> String {
    format!("s|{system}")
}

/// Token form matching `|code` (the code without a system).
pub(crate) fn token_no_system(code: &str) -> String {
    format!("n|{code}")
}

pub(crate) fn uri_form(uri: &str) -> String {
    format!("u|{uri}")
}

/// The normalized prefix used to look a string search value up (at most 16 characters).
pub(crate) fn lookup_prefix(normalized: &str) -> String {
    normalized.chars().take(MAX_PREFIX_CHARS).collect()
}

pub(crate) fn rows_for(indexer: &BlindIndexer, resource: &Value) -> IndexRows {
    let mut rows = IndexRows::default();
    let blind = |label: &str, form: &str, rows: &mut IndexRows| {
        let row = vec![
            Arg::Str(label.to_owned()),
            Arg::Bytes(Some(indexer.blind(label, form).to_vec())),
        ];
        if !rows.blind.contains(&row) {
            rows.blind.push(row);
        }
    };
    for e in ward_fhir::search::extract(resource) {
        let code = e.param.code.as_str();
        match e.value {
            IndexValue::String { normalized, exact } => {
                blind(&exact_label(code), &exact, &mut rows);
                let label = prefix_label(code);
                let mut prefix = String::new();
                for c in normalized.chars().take(MAX_PREFIX_CHARS) {
                    prefix.push(c);
                    blind(&label, &prefix, &mut rows);
                }
            }
            IndexValue::Token { system, code: value } => {
                blind(code, &token_any(&value), &mut rows);
                match system {
                    Some(s) => {
                        blind(code, &token_system_code(&s, &value), &mut rows);
                        blind(code, &token_system(&s), &mut rows);
                    }
                    None => blind(code, &token_no_system(&value), &mut rows),
                }
            }
            IndexValue::Uri(u) => blind(code, &uri_form(&u), &mut rows),
            IndexValue::Reference { rtype, id } => {
                let row = vec![Arg::Str(code.to_owned()), Arg::Str(rtype), Arg::Str(id)];
                if !rows.refs.contains(&row) {
                    rows.refs.push(row);
                }
            }
            IndexValue::Date(r) => rows.dates.push(vec![
                Arg::Str(code.to_owned()),
                Arg::I64(Some(r.lo)),
                Arg::I64(Some(r.hi)),
                Arg::I64(None),
                Arg::Bytes(None),
            ]),
            IndexValue::BlindDate { value, year } => rows.dates.push(vec![
                Arg::Str(code.to_owned()),
                Arg::I64(None),
                Arg::I64(None),
                Arg::I64(Some(i64::from(year))),
                Arg::Bytes(Some(indexer.blind(code, &value).to_vec())),
            ]),
            IndexValue::Quantity {
                lo,
                hi,
                system,
                code: qcode,
                unit,
            } => rows.quantities.push(vec![
                Arg::Str(code.to_owned()),
                Arg::F64(lo),
                Arg::F64(hi),
                Arg::OptStr(system),
                Arg::OptStr(qcode),
                Arg::OptStr(unit),
            ]),
        }
    }
    rows.compartment = ward_fhir::search::patient_compartment(resource);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_forms_are_unambiguous() {
        assert_ne!(token_system_code("a|b", "c"), token_system_code("a", "b|c"));
        assert_ne!(token_any("x"), token_no_system("x"));
        assert_eq!(lookup_prefix("abcdefghijklmnopqrstuvwxyz"), "abcdefghijklmnop");
    }

    #[test]
    fn rows_hold_no_plaintext_strings() {
        let key = ward_crypto::DataKey::generate().unwrap();
        let indexer = BlindIndexer::new(key);
        let p = serde_json::json!({"resourceType": "Patient", "id": "p1",
            "name": [{"family": "Zyxwarfield"}], "birthDate": "1937-04-19",
            "identifier": [{"system": "urn:x", "value": "MRN123"}]});
        let rows = rows_for(&indexer, &p);
        let dump = format!("{rows:?}");
        for secret in ["Zyxwarfield", "zyxwarfield", "1937-04-19", "MRN123"] {
            assert!(!dump.contains(secret), "{secret}");
        }
        assert!(rows.dates.iter().any(|r| r[3] == Arg::I64(Some(1937))));
        assert_eq!(rows.compartment, vec!["p1"]);
    }
}
