//! Values of identifying search parameters, to be stored as blind indexes (EN-4).
//!
//! Only the person-like types (Patient, Practitioner, RelatedPerson, Person) are covered for
//! now. The caller (ward-store) turns each value into keyed HMACs; nothing here is stored.

use serde_json::Value;

/// How an index value is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// FHIR string search: case- and accent-insensitive, "starts with" (value is normalized).
    Text,
    /// FHIR token search: exact (value trimmed; emails lowercased).
    Token,
    /// A date as given in the resource (e.g. `1970-03-14`), with its original precision.
    Date,
}

/// One index entry: search parameter code, kind and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexValue {
    pub param: &'static str,
    pub kind: IndexKind,
    pub value: String,
}

/// The resource types [`extract`] covers.
pub const PERSON_TYPES: &[&str] = &["Patient", "Practitioner", "RelatedPerson", "Person"];

/// Extracts the identifying search values of a person-like resource.
///
/// - Text: `family`, `given`, `name` (family, given, prefix, suffix, text), `address` (line,
///   city, district, state, postalCode, country, text) and `address-city`, `address-state`,
///   `address-postalcode`, `address-country`; values normalized with [`normalize_text`].
/// - Token: `identifier` as `{system}|{value}` when a system is present and always as
///   `{value}`; `telecom` (every value), `phone` (system phone), `email` (system email,
///   lowercased); values trimmed.
/// - Date: `birthdate` (birthDate as given), `death-date` (Patient.deceasedDateTime as given).
///
/// Duplicates are removed; the order is deterministic. Other types yield nothing.
pub fn extract(resource: &Value) -> Vec<IndexValue> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    if !PERSON_TYPES.contains(&resource_type) {
        return Vec::new();
    }
    let mut out = Out::default();

    for name in array(resource, "name") {
        if let Some(family) = string(name, "family") {
            out.text("family", family);
            out.text("name", family);
        }
        for given in strings(name, "given") {
            out.text("given", given);
            out.text("name", given);
        }
        for part in strings(name, "prefix").chain(strings(name, "suffix")) {
            out.text("name", part);
        }
        if let Some(text) = string(name, "text") {
            out.text("name", text);
        }
    }

    for address in array(resource, "address") {
        for line in strings(address, "line") {
            out.text("address", line);
        }
        for (field, param) in [
            ("city", Some("address-city")),
            ("district", None),
            ("state", Some("address-state")),
            ("postalCode", Some("address-postalcode")),
            ("country", Some("address-country")),
            ("text", None),
        ] {
            if let Some(value) = string(address, field) {
                out.text("address", value);
                if let Some(param) = param {
                    out.text(param, value);
                }
            }
        }
    }

    for identifier in array(resource, "identifier") {
        let Some(value) = string(identifier, "value").map(str::trim) else {
            continue;
        };
        if let Some(system) = string(identifier, "system").map(str::trim) {
            out.token("identifier", format!("{system}|{value}"));
        }
        out.token("identifier", value.to_string());
    }

    for telecom in array(resource, "telecom") {
        let Some(value) = string(telecom, "value").map(str::trim) else {
            continue;
        };
        match string(telecom, "system") {
            Some("email") => {
                let email = value.to_lowercase();
                out.token("telecom", email.clone());
                out.token("email", email);
            }
            Some("phone") => {
                out.token("telecom", value.to_string());
                out.token("phone", value.to_string());
            }
            _ => out.token("telecom", value.to_string()),
        }
    }

    if let Some(birth_date) = string(resource, "birthDate") {
        out.date("birthdate", birth_date);
    }
    if resource_type == "Patient"
        && let Some(death) = string(resource, "deceasedDateTime")
    {
        out.date("death-date", death);
    }
    out.values
}

#[derive(Default)]
struct Out {
    values: Vec<IndexValue>,
}

impl Out {
    fn push(&mut self, param: &'static str, kind: IndexKind, value: String) {
        if value.is_empty() {
            return;
        }
        let entry = IndexValue { param, kind, value };
        if !self.values.contains(&entry) {
            self.values.push(entry);
        }
    }

    fn text(&mut self, param: &'static str, value: &str) {
        self.push(param, IndexKind::Text, normalize_text(value));
    }

    fn token(&mut self, param: &'static str, value: String) {
        self.push(param, IndexKind::Token, value);
    }

    fn date(&mut self, param: &'static str, value: &str) {
        self.push(param, IndexKind::Date, value.trim().to_string());
    }
}

fn array<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
}

fn string<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn strings<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    array(value, key).filter_map(Value::as_str)
}

/// Base letters for U+00C0..=U+00FF ("" = keep the character).
const LATIN1: [&str; 64] = [
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", // C0
    "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "ss", // D0
    "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i", "i", // E0
    "d", "n", "o", "o", "o", "o", "o", "", "o", "u", "u", "u", "u", "y", "th", "y", // F0
];

/// Base letters for Latin Extended-A, U+0100..=U+017F.
const LATIN_EXTENDED_A: [&str; 128] = [
    "a", "a", "a", "a", "a", "a", "c", "c", "c", "c", "c", "c", "c", "c", "d", "d", // 0100
    "d", "d", "e", "e", "e", "e", "e", "e", "e", "e", "e", "e", "g", "g", "g", "g", // 0110
    "g", "g", "g", "g", "h", "h", "h", "h", "i", "i", "i", "i", "i", "i", "i", "i", // 0120
    "i", "i", "ij", "ij", "j", "j", "k", "k", "k", "l", "l", "l", "l", "l", "l", "l", // 0130
    "l", "l", "l", "n", "n", "n", "n", "n", "n", "n", "n", "n", "o", "o", "o", "o", // 0140
    "o", "o", "oe", "oe", "r", "r", "r", "r", "r", "r", "s", "s", "s", "s", "s", "s", // 0150
    "s", "s", "t", "t", "t", "t", "t", "t", "u", "u", "u", "u", "u", "u", "u", "u", // 0160
    "u", "u", "u", "u", "w", "w", "y", "y", "y", "z", "z", "z", "z", "z", "z", "s", // 0170
];

fn fold(c: char) -> Option<&'static str> {
    let code = u32::from(c);
    let base = match code {
        0xC0..=0xFF => LATIN1[(code - 0xC0) as usize],
        0x100..=0x17F => LATIN_EXTENDED_A[(code - 0x100) as usize],
        _ => return None,
    };
    (!base.is_empty()).then_some(base)
}

fn is_combining_mark(c: char) -> bool {
    matches!(u32::from(c), 0x0300..=0x036F)
}

/// Case- and accent-insensitive normal form for FHIR string search.
///
/// Accented Latin-1 and Latin Extended-A letters become their base letters (`É` → `e`,
/// `ß` → `ss`, `Ł` → `l`), combining diacritical marks are dropped (so decomposed input folds
/// the same way), everything is lowercased, and whitespace runs become one space, trimmed.
pub fn normalize_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if is_combining_mark(c) {
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        match fold(c) {
            Some(base) => out.push_str(base),
            None => out.extend(c.to_lowercase().filter(|l| !is_combining_mark(*l))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalizes_text() {
        assert_eq!(normalize_text("  Émile  ZOLA "), "emile zola");
        assert_eq!(normalize_text("Ærøskøbing\tStraße"), "aeroskobing strasse");
        assert_eq!(normalize_text("Łódź Žižek Œuvre"), "lodz zizek oeuvre");
        // Decomposed input (e + U+0301) folds the same as precomposed.
        assert_eq!(normalize_text("E\u{301}mile"), "emile");
        assert_eq!(normalize_text("İstanbul"), "istanbul");
        assert_eq!(normalize_text("O'Brien-Smith"), "o'brien-smith");
        assert_eq!(normalize_text("Ωmega"), "ωmega");
        assert_eq!(normalize_text(" \n "), "");
        assert_eq!(normalize_text("a\u{a0}b"), "a b");
    }

    #[test]
    fn extracts_patient_values() {
        let patient = json!({
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [
                {"system": "urn:ward:synthetic:mrn", "value": " MRN-001 "},
                {"value": "X9"}
            ],
            "name": [{
                "use": "official",
                "family": "Zola",
                "given": ["Émile", "Édouard"],
                "prefix": ["Mr."]
            }],
            "telecom": [
                {"system": "phone", "value": "202-555-0142"},
                {"system": "email", "value": "Emile.Zola@Example.org"},
                {"system": "fax", "value": "202-555-0199"}
            ],
            "gender": "male",
            "birthDate": "1970-03-14",
            "deceasedDateTime": "2020-01-02T03:04:05Z",
            "address": [{
                "line": ["12 Rue  de Médan"],
                "city": "Paris",
                "state": "IDF",
                "postalCode": "75001",
                "country": "FR"
            }]
        });
        let values = extract(&patient);
        let has = |param: &str, kind: IndexKind, value: &str| {
            values
                .iter()
                .any(|v| v.param == param && v.kind == kind && v.value == value)
        };
        assert!(has("family", IndexKind::Text, "zola"));
        assert!(has("given", IndexKind::Text, "emile"));
        assert!(has("given", IndexKind::Text, "edouard"));
        assert!(has("name", IndexKind::Text, "zola"));
        assert!(has("name", IndexKind::Text, "emile"));
        assert!(has("name", IndexKind::Text, "mr."));
        assert!(has("address", IndexKind::Text, "12 rue de medan"));
        assert!(has("address", IndexKind::Text, "paris"));
        assert!(has("address-city", IndexKind::Text, "paris"));
        assert!(has("address-postalcode", IndexKind::Text, "75001"));
        assert!(has(
            "identifier",
            IndexKind::Token,
            "urn:ward:synthetic:mrn|MRN-001"
        ));
        assert!(has("identifier", IndexKind::Token, "MRN-001"));
        assert!(has("identifier", IndexKind::Token, "X9"));
        assert!(!values.iter().any(|v| v.value.starts_with('|')));
        assert!(has("telecom", IndexKind::Token, "202-555-0142"));
        assert!(has("phone", IndexKind::Token, "202-555-0142"));
        assert!(has("email", IndexKind::Token, "emile.zola@example.org"));
        assert!(has("telecom", IndexKind::Token, "emile.zola@example.org"));
        assert!(has("telecom", IndexKind::Token, "202-555-0199"));
        assert!(!has("phone", IndexKind::Token, "202-555-0199"));
        assert!(has("birthdate", IndexKind::Date, "1970-03-14"));
        assert!(has("death-date", IndexKind::Date, "2020-01-02T03:04:05Z"));
        // No duplicates.
        for (i, v) in values.iter().enumerate() {
            assert!(!values[i + 1..].contains(v), "duplicate {v:?}");
        }
        // Deterministic.
        assert_eq!(values, extract(&patient));
    }

    #[test]
    fn other_person_types_and_non_person_types() {
        let practitioner = json!({
            "resourceType": "Practitioner",
            "name": [{"family": "House", "given": ["Gregory"]}],
            "birthDate": "1959-06-11",
            "deceasedDateTime": "2000-01-01"
        });
        let values = extract(&practitioner);
        assert!(values.iter().any(|v| v.param == "family" && v.value == "house"));
        assert!(values.iter().any(|v| v.param == "birthdate"));
        assert!(!values.iter().any(|v| v.param == "death-date"));

        let observation = json!({"resourceType": "Observation", "status": "final"});
        assert!(extract(&observation).is_empty());
        assert!(extract(&json!("Patient")).is_empty());
        assert!(extract(&json!({"resourceType": "Patient"})).is_empty());
    }
}
