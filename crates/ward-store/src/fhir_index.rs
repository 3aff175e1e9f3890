//! Glue to `ward_fhir::index`: the extractor and normalizer come from ward-fhir; this module adds
//! the (type, parameter) -> kind table that conditional-create criteria need, mirroring what
//! `extract` emits (a test checks the two agree).

pub use ward_fhir::index::{IndexKind, PERSON_TYPES, extract, normalize_text};

const PERSON_PARAMS: &[(&str, IndexKind)] = &[
    ("family", IndexKind::Text),
    ("given", IndexKind::Text),
    ("name", IndexKind::Text),
    ("address", IndexKind::Text),
    ("address-city", IndexKind::Text),
    ("address-state", IndexKind::Text),
    ("address-postalcode", IndexKind::Text),
    ("address-country", IndexKind::Text),
    ("identifier", IndexKind::Token),
    ("telecom", IndexKind::Token),
    ("phone", IndexKind::Token),
    ("email", IndexKind::Token),
    ("birthdate", IndexKind::Date),
];

/// The kind of a blind-indexed parameter of `rtype`, or `None` if it is not indexed.
pub fn param_kind(rtype: &str, param: &str) -> Option<IndexKind> {
    if !PERSON_TYPES.contains(&rtype) {
        return None;
    }
    if rtype == "Patient" && param == "death-date" {
        return Some(IndexKind::Date);
    }
    PERSON_PARAMS
        .iter()
        .find(|(p, _)| *p == param)
        .map(|(_, k)| k.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_matches_extract() {
        for rtype in PERSON_TYPES {
            let r = json!({
                "resourceType": rtype,
                "identifier": [{"system": "urn:s", "value": "1"}],
                "name": [{"family": "F", "given": ["G"], "prefix": ["P"], "text": "T"}],
                "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"},
                            {"system": "fax", "value": "2"}],
                "address": [{"line": ["L"], "city": "C", "district": "D", "state": "S",
                             "postalCode": "P", "country": "X", "text": "T"}],
                "birthDate": "2000-01-01",
                "deceasedDateTime": "2020-01-01"
            });
            let values = extract(&r);
            assert!(!values.is_empty());
            for v in values {
                assert_eq!(
                    param_kind(rtype, v.param),
                    Some(v.kind.clone()),
                    "{rtype}.{}",
                    v.param
                );
            }
        }
        assert_eq!(param_kind("Observation", "identifier"), None);
        assert_eq!(param_kind("Practitioner", "death-date"), None);
        assert_eq!(param_kind("Patient", "gender"), None);
    }
}
