//! Validation of FHIR R4 resources.
//!
//! Order of checks: JSON object, `resourceType`, `id`, content rules the schema does not
//! express (no `null`, no empty objects / arrays / strings, aligned primitive extension
//! arrays), the R4 JSON schema for the type, the FHIR rules of `rules.rs` (primitive formats,
//! narrative XHTML, invariants), then nested resources (contained resources,
//! `Bundle.entry.resource`, `Parameters.parameter.resource`) each against its own type, then
//! the container's rules for its contained resources (dom-3..dom-5).
//!
//! Error messages name elements, types and expectations only, never the offending value
//! (values can be PHI).

use std::fmt;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::{Location, LocationSegment};
use serde_json::{Map, Value};

use crate::id::is_valid_id;
use crate::outcome::{Issue, IssueType};
use crate::rules::{self, Container};
use crate::schema::{self, RESOURCE_LIST};
use crate::types::{RESOURCE_TYPES, type_index};

/// A validation failure: an issue code, a FHIRPath-like element path
/// (e.g. `Patient.name[0].given[1]`) and a message without any input value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationError {
    pub code: IssueType,
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: IssueType, path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            code,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The error as an `OperationOutcome` issue (severity error, expression = path).
    pub fn to_issue(&self) -> Issue {
        let issue = Issue::error(self.code, self.message.clone());
        if self.path.is_empty() {
            issue
        } else {
            issue.at(self.path.clone())
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ValidationError {}

impl From<&ValidationError> for Issue {
    fn from(e: &ValidationError) -> Issue {
        e.to_issue()
    }
}

/// Validates resources against the embedded FHIR R4 schema.
///
/// Cheap to create and to clone; the parsed schema and the compiled per-type validators are
/// process-wide, built lazily (each type once, on first use) and shared between threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Validator {
    _private: (),
}

impl Validator {
    pub fn new() -> Self {
        Validator { _private: () }
    }

    /// Compiles the validators for `types` now (e.g. at start-up) instead of on first use.
    pub fn warm_up(&self, types: &[&str]) -> Result<(), ValidationError> {
        for name in types {
            let index = type_index(name).ok_or_else(|| unknown_type("resourceType"))?;
            compiled(index)?;
        }
        Ok(())
    }

    /// Validates `resource` as a resource of `expected_type`.
    ///
    /// Returns the most specific error found, with a FHIRPath-like `path`.
    pub fn validate(&self, resource: &Value, expected_type: &str) -> Result<(), ValidationError> {
        let index = type_index(expected_type).ok_or_else(|| unknown_type("resourceType"))?;
        let Value::Object(object) = resource else {
            return Err(ValidationError::new(
                IssueType::Structure,
                "",
                "a resource must be a JSON object",
            ));
        };
        match object.get("resourceType") {
            None => {
                return Err(ValidationError::new(
                    IssueType::Required,
                    "resourceType",
                    "missing resourceType",
                ));
            }
            Some(Value::String(name)) if name == expected_type => {}
            Some(_) => {
                return Err(ValidationError::new(
                    IssueType::Invalid,
                    "resourceType",
                    format!("resourceType must be {expected_type}"),
                ));
            }
        }
        let mut path = String::from(expected_type);
        check_content(resource, &mut path)?;
        validate_resource(resource, index, &mut path, None)
    }
}

fn unknown_type(path: &str) -> ValidationError {
    ValidationError::new(IssueType::NotSupported, path, "not a FHIR R4 resource type")
}

fn compiled(index: usize) -> Result<&'static jsonschema::Validator, ValidationError> {
    schema::validator_for(index).map_err(|e| ValidationError::new(IssueType::Exception, "", e))
}

/// Validates one resource (top-level or nested) whose `resourceType` is already checked to be
/// `RESOURCE_TYPES[index]`. `path` is the resource's own path (e.g. `Patient` or
/// `Bundle.entry[0].resource`). `root` is the containing resource's context when this one is
/// contained.
fn validate_resource(
    resource: &Value,
    index: usize,
    path: &mut String,
    root: Option<&Container<'_>>,
) -> Result<(), ValidationError> {
    let Value::Object(object) = resource else {
        return Err(ValidationError::new(
            IssueType::Structure,
            path.clone(),
            "a resource must be a JSON object",
        ));
    };
    if let Some(id) = object.get("id")
        && !id.as_str().is_some_and(is_valid_id)
    {
        return Err(ValidationError::new(
            IssueType::Value,
            format!("{path}.id"),
            "id must be 1-64 characters from A-Z, a-z, 0-9, '-' and '.'",
        ));
    }
    if root.is_some() && object.contains_key("contained") {
        return Err(ValidationError::new(
            IssueType::Invariant,
            format!("{path}.contained"),
            "a contained resource must not contain resources (dom-2)",
        ));
    }
    let validator = compiled(index)?;
    if !validator.is_valid(resource) {
        return Err(schema_error(validator, resource, path));
    }
    let rtype = RESOURCE_TYPES.get(index).copied().unwrap_or_default();
    let container = match root {
        Some(root) => root.for_contained(),
        None => Container::root(object),
    };
    check_nested(object, rtype, path, &container)?;
    rules::check_resource(object, rtype, path, &container)?;
    if root.is_none() {
        rules::check_contained(object, path)?;
    }
    Ok(())
}

/// Walks the properties of `object` (an instance of `definition`) that can hold nested
/// resources and validates each nested resource against its own type.
fn check_nested(
    object: &Map<String, Value>,
    definition: &str,
    path: &mut String,
    root: &Container<'_>,
) -> Result<(), ValidationError> {
    let structure = schema::structure();
    for (key, value) in object {
        let Some(target) = structure.step(definition, key) else {
            continue;
        };
        let base = path.len();
        path.push('.');
        path.push_str(key);
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_base = path.len();
                    path.push('[');
                    path.push_str(&i.to_string());
                    path.push(']');
                    nested_element(item, target, key, path, root)?;
                    path.truncate(item_base);
                }
            }
            other => nested_element(other, target, key, path, root)?,
        }
        path.truncate(base);
    }
    Ok(())
}

fn nested_element(
    value: &Value,
    target: &str,
    property: &str,
    path: &mut String,
    root: &Container<'_>,
) -> Result<(), ValidationError> {
    let Value::Object(object) = value else {
        // The schema already refused non-objects here.
        return Ok(());
    };
    if target != RESOURCE_LIST {
        return check_nested(object, target, path, root);
    }
    let index = object
        .get("resourceType")
        .and_then(Value::as_str)
        .and_then(type_index)
        .ok_or_else(|| unknown_type(&format!("{path}.resourceType")))?;
    let parent = (property == "contained").then_some(root);
    validate_resource(value, index, path, parent)
}

/// Rules FHIR has and the schema does not express: no `null` (except to align primitive
/// arrays with their `_x` extension arrays), no empty objects, arrays or strings, no control
/// characters in strings.
fn check_content(value: &Value, path: &mut String) -> Result<(), ValidationError> {
    match value {
        Value::Null => Err(ValidationError::new(
            IssueType::Structure,
            path.clone(),
            "null is not allowed",
        )),
        Value::String(s) if s.trim().is_empty() => Err(ValidationError::new(
            IssueType::Value,
            path.clone(),
            "empty or whitespace-only strings are not allowed",
        )),
        // FHIR strings carry no control characters but tab, CR and LF; a NUL would also be
        // refused by PostgreSQL text columns further down.
        Value::String(s)
            if s.chars()
                .any(|c| u32::from(c) < 0x20 && !matches!(c, '\t' | '\r' | '\n')) =>
        {
            Err(ValidationError::new(
                IssueType::Value,
                path.clone(),
                "control characters are not allowed in strings",
            ))
        }
        Value::Array(items) if items.is_empty() => Err(ValidationError::new(
            IssueType::Structure,
            path.clone(),
            "empty arrays are not allowed",
        )),
        Value::Object(object) if object.is_empty() => Err(ValidationError::new(
            IssueType::Structure,
            path.clone(),
            "empty objects are not allowed",
        )),
        Value::Object(object) => {
            for (key, child) in object {
                let base = path.len();
                path.push('.');
                path.push_str(key);
                match child {
                    Value::Array(items) if !items.is_empty() => {
                        check_array(object, key, items, path)?;
                    }
                    other => check_content(other, path)?,
                }
                path.truncate(base);
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let base = path.len();
                path.push('[');
                path.push_str(&i.to_string());
                path.push(']');
                check_content(item, path)?;
                path.truncate(base);
            }
            Ok(())
        }
        Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
    }
}

/// Checks an array property `key` of `parent`. A primitive array and its `_key` extension
/// array must have the same length, and may use `null` where the other one has a value.
fn check_array(
    parent: &Map<String, Value>,
    key: &str,
    items: &[Value],
    path: &mut String,
) -> Result<(), ValidationError> {
    let partner_key = match key.strip_prefix('_') {
        Some(base) => base.to_string(),
        None => format!("_{key}"),
    };
    let partner = parent.get(&partner_key).and_then(Value::as_array);
    if let Some(partner) = partner
        && partner.len() != items.len()
        && key.starts_with('_')
    {
        return Err(ValidationError::new(
            IssueType::Structure,
            path.clone(),
            "a primitive array and its extension array must have the same length",
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let base = path.len();
        path.push('[');
        path.push_str(&i.to_string());
        path.push(']');
        if item.is_null() {
            let aligned = partner
                .filter(|p| p.len() == items.len())
                .and_then(|p| p.get(i))
                .is_some_and(|other| !other.is_null());
            if !aligned {
                return Err(ValidationError::new(
                    IssueType::Structure,
                    path.clone(),
                    "null is only allowed to align a primitive array with its extension array",
                ));
            }
        } else {
            check_content(item, path)?;
        }
        path.truncate(base);
    }
    Ok(())
}

/// Picks the most specific schema error (deepest element) and describes it without values.
fn schema_error(validator: &jsonschema::Validator, instance: &Value, prefix: &str) -> ValidationError {
    let mut best: Option<(usize, ValidationError)> = None;
    for error in validator.iter_errors(instance) {
        consider(&error, prefix, &mut best);
    }
    best.map(|(_, e)| e).unwrap_or_else(|| {
        ValidationError::new(
            IssueType::Invalid,
            prefix,
            "resource does not conform to the FHIR R4 schema",
        )
    })
}

fn consider(
    error: &jsonschema::ValidationError<'_>,
    prefix: &str,
    best: &mut Option<(usize, ValidationError)>,
) {
    let kind = error.kind();
    if let ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } = kind {
        // `anyOf: [null, X]` (primitive arrays): report why the item is not an X.
        let mut found = false;
        for branch in context {
            for inner in branch {
                if !is_null_type_error(inner) {
                    found = true;
                    consider(inner, prefix, best);
                }
            }
        }
        if found {
            return;
        }
    }
    let mut path = element_path(prefix, error.instance_path());
    let mut depth = error.instance_path().segments().count();
    let fhir_type = error
        .absolute_keyword_location()
        .and_then(|uri| schema::definition_of_location(uri.as_str()).map(str::to_string));
    let described = |t: &Option<String>| match t {
        Some(t) if schema_type_is_primitive(t) => format!("FHIR {t}"),
        Some(t) => t.clone(),
        None => "the element".to_string(),
    };
    let (code, message) = match kind {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            if let Some(first) = unexpected.first() {
                path.push('.');
                path.push_str(&truncate(first, 64));
                depth = depth.saturating_add(1);
            }
            let message = match unexpected.len() {
                0 | 1 => "unknown element".to_string(),
                n => format!("unknown element (and {} more)", n.saturating_sub(1)),
            };
            (IssueType::Structure, message)
        }
        ValidationErrorKind::Required { property } => {
            if let Some(name) = property.as_str() {
                path.push('.');
                path.push_str(name);
                depth = depth.saturating_add(1);
            }
            (IssueType::Required, "missing required element".to_string())
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
            };
            (
                IssueType::Structure,
                format!(
                    "wrong type: expected a JSON {expected} for {}",
                    described(&fhir_type)
                ),
            )
        }
        ValidationErrorKind::Pattern { .. } => (
            IssueType::Value,
            format!("invalid value for {}", described(&fhir_type)),
        ),
        ValidationErrorKind::Enum { options } => {
            let codes: Vec<String> = options
                .as_array()
                .map(|o| o.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            let message = if codes.is_empty() || codes.len() > 20 {
                "value is not one of the allowed codes".to_string()
            } else {
                format!("value is not one of the allowed codes: {}", codes.join(", "))
            };
            (IssueType::Value, message)
        }
        ValidationErrorKind::Constant { expected_value } => {
            let message = match expected_value.as_str() {
                Some(s) => format!("value must be {s}"),
                None => "value is not the required constant".to_string(),
            };
            (IssueType::Value, message)
        }
        ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. } => (
            IssueType::Value,
            format!("number out of range for {}", described(&fhir_type)),
        ),
        other => (
            IssueType::Invalid,
            format!("does not conform to the FHIR R4 schema ({})", other.keyword()),
        ),
    };
    if best.as_ref().is_none_or(|(d, _)| depth > *d) {
        *best = Some((depth, ValidationError::new(code, path, message)));
    }
}

fn schema_type_is_primitive(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
}

fn is_null_type_error(error: &jsonschema::ValidationError<'_>) -> bool {
    matches!(
        error.kind(),
        ValidationErrorKind::Type { kind: TypeKind::Single(t) } if t.to_string() == "null"
    )
}

fn element_path(prefix: &str, location: &Location) -> String {
    let mut path = String::from(prefix);
    for segment in location.segments() {
        match segment {
            LocationSegment::Property(name) => {
                path.push('.');
                path.push_str(&name);
            }
            LocationSegment::Index(i) => {
                path.push('[');
                path.push_str(&i.to_string());
                path.push(']');
            }
        }
    }
    path
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{Limits, parse_strict};
    use serde_json::json;

    fn patient() -> Value {
        json!({
            "resourceType": "Patient",
            "id": "example-1",
            "meta": {"tag": [{"system": "urn:ward:synthetic", "code": "synthetic"}]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter</div>"},
            "identifier": [{"system": "urn:ward:synthetic:mrn", "value": "MRN-1"}],
            "active": true,
            "name": [
                {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
                {"use": "usual", "given": ["Jim"]}
            ],
            "telecom": [{"system": "phone", "value": "202-555-0100", "use": "work", "rank": 1}],
            "gender": "male",
            "birthDate": "1974-12-25",
            "_birthDate": {"extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1974-12-25T14:35:45-05:00"
            }]},
            "deceasedBoolean": false,
            "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}],
            "extension": [{"url": "urn:example:weight", "valueDecimal": 1.5}]
        })
    }

    fn validate(v: &Value, t: &str) -> Result<(), ValidationError> {
        Validator::new().validate(v, t)
    }

    fn err(v: &Value, t: &str) -> ValidationError {
        validate(v, t).expect_err("should be invalid")
    }

    #[test]
    fn valid_patient_passes_and_keeps_decimals() {
        let text = serde_json::to_string(&patient())
            .unwrap()
            .replace("\"valueDecimal\":1.5", "\"valueDecimal\":1.50");
        assert!(text.contains("1.50"));
        let parsed = parse_strict(text.as_bytes(), &Limits::default()).unwrap();
        validate(&parsed, "Patient").unwrap();
        assert!(
            serde_json::to_string(&parsed)
                .unwrap()
                .contains("\"valueDecimal\":1.50")
        );
    }

    #[test]
    fn unknown_element_named_in_path() {
        let mut p = patient();
        p["foo"] = json!("secret-value");
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.foo");
        assert_eq!(e.code, IssueType::Structure);
        assert!(!e.message.contains("secret-value"));

        let mut p = patient();
        p["name"][1]["nickname"] = json!("Jimbo");
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.name[1].nickname");
    }

    #[test]
    fn wrong_types() {
        let mut p = patient();
        p["active"] = json!("yes");
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.active");
        assert_eq!(e.code, IssueType::Structure);
        assert!(!e.message.contains("yes"));

        let mut p = patient();
        p["name"][0]["given"][1] = json!(42);
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.name[0].given[1]");

        // A string where a complex type (HumanName) is required.
        let mut p = patient();
        p["name"] = json!(["Peter Chalmers"]);
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.name[0]");
        assert!(!e.message.contains("Chalmers"));

        // A single value where an array is required.
        let mut p = patient();
        p["name"] = json!({"family": "Chalmers"});
        assert_eq!(err(&p, "Patient").path, "Patient.name");

        // Integers must be integers in range.
        let mut p = patient();
        p["telecom"][0]["rank"] = json!(1.5);
        assert_eq!(err(&p, "Patient").path, "Patient.telecom[0].rank");
        p["telecom"][0]["rank"] = json!(0);
        assert_eq!(err(&p, "Patient").path, "Patient.telecom[0].rank");
        p["telecom"][0]["rank"] = json!(3_000_000_000_u64);
        assert_eq!(err(&p, "Patient").path, "Patient.telecom[0].rank");
    }

    #[test]
    fn bad_formats_and_codes() {
        let mut p = patient();
        p["birthDate"] = json!("25/12/1974");
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.birthDate");
        assert_eq!(e.code, IssueType::Value);
        assert!(e.message.contains("date") && !e.message.contains("1974"));

        let mut p = patient();
        p["gender"] = json!("robot");
        let e = err(&p, "Patient");
        assert_eq!(e.path, "Patient.gender");
        assert!(e.message.contains("female") && !e.message.contains("robot"));
    }

    #[test]
    fn resource_type_checks() {
        let p = patient();
        let e = err(&p, "Observation");
        assert_eq!(e.path, "resourceType");
        let mut p = patient();
        p.as_object_mut().unwrap().remove("resourceType");
        let e = err(&p, "Patient");
        assert_eq!((e.path.as_str(), e.code), ("resourceType", IssueType::Required));
        let e = err(&patient(), "Patientx");
        assert_eq!(e.code, IssueType::NotSupported);
        let e = err(&json!(["Patient"]), "Patient");
        assert_eq!(e.code, IssueType::Structure);
        let mut p = patient();
        p["resourceType"] = json!(7);
        assert_eq!(err(&p, "Patient").path, "resourceType");
    }

    #[test]
    fn bad_id() {
        for bad in [json!("a b"), json!("x".repeat(65)), json!("a/b"), json!(5)] {
            let mut p = patient();
            p["id"] = bad;
            let e = err(&p, "Patient");
            assert_eq!(e.path, "Patient.id");
            assert_eq!(e.code, IssueType::Value);
        }
        let mut p = patient();
        p.as_object_mut().unwrap().remove("id");
        validate(&p, "Patient").unwrap();
    }

    #[test]
    fn empty_values_rejected() {
        let cases = [
            (
                "/name/0/family",
                json!("Smi\u{0}th"),
                "Patient.name[0].family",
                IssueType::Value,
            ),
            (
                "/name/0/family",
                json!("Smi\u{1b}th"),
                "Patient.name[0].family",
                IssueType::Value,
            ),
            (
                "/name/0/family",
                json!(""),
                "Patient.name[0].family",
                IssueType::Value,
            ),
            (
                "/name/0/family",
                json!("   "),
                "Patient.name[0].family",
                IssueType::Value,
            ),
            (
                "/name/0/given",
                json!([]),
                "Patient.name[0].given",
                IssueType::Structure,
            ),
            ("/name/1", json!({}), "Patient.name[1]", IssueType::Structure),
            ("/gender", Value::Null, "Patient.gender", IssueType::Structure),
            (
                "/name/0/given/0",
                Value::Null,
                "Patient.name[0].given[0]",
                IssueType::Structure,
            ),
            ("/text/div", json!("\n"), "Patient.text.div", IssueType::Value),
        ];
        for (pointer, value, path, code) in cases {
            let mut p = patient();
            *p.pointer_mut(pointer).unwrap() = value;
            let e = err(&p, "Patient");
            assert_eq!((e.path.as_str(), e.code), (path, code), "{pointer}");
        }
    }

    #[test]
    fn primitive_extension_arrays_align() {
        let mut p = patient();
        p["name"][0]["given"] = json!(["Peter", null]);
        p["name"][0]["_given"] = json!([null, {"extension": [{"url": "urn:x", "valueString": "y"}]}]);
        validate(&p, "Patient").unwrap();

        p["name"][0]["_given"] = json!([null]);
        assert_eq!(err(&p, "Patient").path, "Patient.name[0].given[1]");

        p["name"][0]["given"] = json!(["Peter", "James"]);
        p["name"][0]["_given"] = json!([null, {"id": "g2"}]);
        validate(&p, "Patient").unwrap();
        p["name"][0]["_given"] = json!([null, {"foo": 1}]);
        assert_eq!(err(&p, "Patient").path, "Patient.name[0]._given[1].foo");
    }

    #[test]
    fn required_elements() {
        let obs = json!({"resourceType": "Observation", "code": {"text": "x"}});
        let e = err(&obs, "Observation");
        assert_eq!(
            (e.path.as_str(), e.code),
            ("Observation.status", IssueType::Required)
        );
        // A primitive given only through its extension satisfies the cardinality.
        let obs = json!({"resourceType": "Observation", "code": {"text": "x"},
            "_status": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                       "valueCode": "unknown"}]}});
        validate(&obs, "Observation").unwrap();
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "extension": [{"valueString": "no url"}]});
        assert_eq!(err(&obs, "Observation").path, "Observation.extension[0].url");
        let bundle = json!({"resourceType": "Bundle"});
        assert_eq!(err(&bundle, "Bundle").path, "Bundle.type");
    }

    #[test]
    fn contained_and_bundle_resources() {
        let mut p = patient();
        p["contained"] = json!([{"resourceType": "Organization", "id": "org1", "name": "Acme"}]);
        p["managingOrganization"] = json!({"reference": "#org1"});
        validate(&p, "Patient").unwrap();

        p["contained"][0]["bogus"] = json!(1);
        assert_eq!(err(&p, "Patient").path, "Patient.contained[0].bogus");

        p["contained"] = json!([{"resourceType": "Nope", "id": "x"}]);
        assert_eq!(err(&p, "Patient").path, "Patient.contained[0].resourceType");

        p["contained"] = json!([{"resourceType": "Patient", "id": "x",
            "contained": [{"resourceType": "Organization", "id": "o"}]}]);
        assert_eq!(err(&p, "Patient").code, IssueType::Invariant);

        let mut bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                              "valueQuantity": {"value": 72.0, "unit": "/min"}},
                 "request": {"method": "POST", "url": "Observation"}}
            ]
        });
        validate(&bundle, "Bundle").unwrap();
        bundle["entry"][1]["resource"]["status"] = json!("done");
        let e = err(&bundle, "Bundle");
        assert_eq!(e.path, "Bundle.entry[1].resource.status");
        bundle["entry"][1]["resource"]["status"] = json!("final");
        bundle["entry"][0]["resource"]["id"] = json!("bad id");
        assert_eq!(err(&bundle, "Bundle").path, "Bundle.entry[0].resource.id");
    }

    #[test]
    fn validator_is_send_sync_and_fast() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Validator>();
        let v = Validator::new();
        v.warm_up(&["Patient"]).unwrap();
        let p = patient();
        let start = std::time::Instant::now();
        for _ in 0..100 {
            v.validate(&p, "Patient").unwrap();
        }
        let per = start.elapsed() / 100;
        eprintln!("Patient validation: {per:?} per resource");
        // Generous bound: debug builds and a loaded CI machine.
        assert!(per < std::time::Duration::from_millis(20));
    }

    #[test]
    fn threads_share_the_cache() {
        let handles: Vec<_> = ["Patient", "Observation", "Patient", "Condition"]
            .into_iter()
            .map(|t| {
                std::thread::spawn(move || {
                    let r = json!({"resourceType": t, "id": "x"});
                    Validator::new().validate(&r, t)
                })
            })
            .collect();
        for h in handles {
            // Observation/Condition lack required elements; Patient passes.
            let _ = h.join().expect("no panic");
        }
        validate(&json!({"resourceType": "Patient", "id": "x"}), "Patient").unwrap();
    }

    #[test]
    fn every_type_compiles() {
        let v = Validator::new();
        v.warm_up(RESOURCE_TYPES).unwrap();
        assert!(v.warm_up(&["NotAType"]).is_err());
    }

    #[test]
    fn errors_never_contain_values() {
        const PHI: &str = "SECRET PHI/1234";
        let cases = [
            ("/birthDate", json!(PHI)),
            ("/gender", json!(PHI)),
            ("/active", json!(PHI)),
            ("/id", json!(PHI)),
            ("/name", json!(PHI)),
            ("/name/0", json!(PHI)),
            ("/telecom/0/rank", json!(PHI)),
            ("/resourceType", json!(PHI)),
            ("/text/status", json!(PHI)),
            ("/address/0/use", json!(PHI)),
            ("/meta/tag/0/system", json!(5)),
        ];
        for (pointer, value) in cases {
            let mut p = patient();
            *p.pointer_mut(pointer).unwrap() = value;
            let e = validate(&p, "Patient").expect_err(pointer);
            let shown = format!("{e} {:?}", e.to_issue());
            assert!(!shown.contains(PHI), "{pointer}: {shown}");
        }
    }

    #[test]
    fn display_and_issue() {
        let e = ValidationError::new(IssueType::Structure, "Patient.foo", "unknown element");
        assert_eq!(e.to_string(), "Patient.foo: unknown element");
        let issue = e.to_issue();
        assert_eq!(issue.expression.as_deref(), Some("Patient.foo"));
        assert_eq!(issue.code, IssueType::Structure);
    }

    fn observation() -> Value {
        json!({
            "resourceType": "Observation",
            "id": "bp-1",
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
            "subject": {"reference": "Patient/example-1"},
            "effectiveDateTime": "2024-02-29T08:30:00+01:00",
            "issued": "2024-02-29T08:31:00.000Z",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
            ],
            "referenceRange": [{"low": {"value": 60}, "text": "normal"}]
        })
    }

    fn number(text: &str) -> Value {
        parse_strict(text.as_bytes(), &Limits::default()).unwrap()
    }

    fn with(base: fn() -> Value, change: impl FnOnce(&mut Value)) -> Value {
        let mut v = base();
        change(&mut v);
        v
    }

    const XHTML: &str = "http://www.w3.org/1999/xhtml";

    fn div(inner: &str) -> Value {
        json!({"status": "generated", "div": format!("<div xmlns=\"{XHTML}\">{inner}</div>")})
    }

    fn timing(repeat: Value) -> Value {
        with(observation, |o| {
            o.as_object_mut().unwrap().remove("effectiveDateTime");
            o["effectiveTiming"] = json!({ "repeat": repeat });
        })
    }

    fn condition(extra: Value) -> Value {
        let mut c = json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// Each bad input is refused with a message (or path) naming the rule it breaks.
    #[test]
    fn fhir_rules_refuse() {
        let contained_org = || json!({"resourceType": "Organization", "id": "org1", "name": "Acme"});
        let cases: Vec<(&str, Value, &str)> = vec![
            // Primitive formats.
            (
                "integer too big",
                with(patient, |p| p["multipleBirthInteger"] = number("2147483648")),
                "FHIR integer",
            ),
            (
                "integer too small",
                with(patient, |p| p["multipleBirthInteger"] = number("-2147483649")),
                "FHIR integer",
            ),
            (
                "integer exponent",
                with(patient, |p| p["multipleBirthInteger"] = number("1e999")),
                "FHIR integer",
            ),
            (
                "integer fraction",
                with(patient, |p| p["multipleBirthInteger"] = number("1.0")),
                "FHIR integer",
            ),
            (
                "integer minus zero",
                with(patient, |p| p["multipleBirthInteger"] = number("-0")),
                "FHIR integer",
            ),
            (
                "positiveInt zero",
                with(patient, |p| p["telecom"][0]["rank"] = number("0")),
                "positiveInt",
            ),
            (
                "extension integer",
                with(patient, |p| {
                    p["extension"][0] = json!({"url": "urn:x", "valueInteger": number("3e2")})
                }),
                "FHIR integer",
            ),
            (
                "Feb 30",
                with(patient, |p| p["birthDate"] = json!("2020-02-30")),
                "no such day",
            ),
            (
                "Feb 29 common year",
                with(patient, |p| p["birthDate"] = json!("2021-02-29")),
                "no such day",
            ),
            (
                "Feb 29 1900",
                with(patient, |p| p["birthDate"] = json!("1900-02-29")),
                "no such day",
            ),
            (
                "April 31",
                with(patient, |p| p["birthDate"] = json!("2020-04-31")),
                "no such day",
            ),
            (
                "dateTime",
                with(patient, |p| {
                    p.as_object_mut().unwrap().remove("deceasedBoolean");
                    p["deceasedDateTime"] = json!("2020-02-30T10:00:00Z");
                }),
                "FHIR dateTime: no such day",
            ),
            (
                "primitive extension dateTime",
                with(patient, |p| {
                    p["_birthDate"]["extension"][0]["valueDateTime"] = json!("2019-02-29T14:35:45-05:00")
                }),
                "no such day",
            ),
            (
                "instant",
                with(patient, |p| {
                    p["meta"]["lastUpdated"] = json!("2023-06-31T00:00:00Z")
                }),
                "FHIR instant: no such day",
            ),
            // Narrative (txt-1, txt-2).
            (
                "script",
                with(patient, |p| p["text"] = div("<script>alert(1)</script>")),
                "txt-1",
            ),
            (
                "event handler",
                with(patient, |p| {
                    p["text"] = div("<img src=\"x\" onerror=\"alert(1)\"/>")
                }),
                "txt-1",
            ),
            (
                "javascript url",
                with(patient, |p| {
                    p["text"] = div("<a href=\"javascript:alert(1)\">x</a>")
                }),
                "txt-1",
            ),
            (
                "not xhtml",
                with(patient, |p| p["text"]["div"] = json!("Peter <b>Chalmers")),
                "txt-1",
            ),
            (
                "no namespace",
                with(patient, |p| p["text"]["div"] = json!("<div>Peter</div>")),
                "txt-1",
            ),
            (
                "iframe",
                with(patient, |p| p["text"] = div("<iframe src=\"http://x\"></iframe>")),
                "txt-1",
            ),
            (
                "empty narrative",
                with(patient, |p| p["text"] = div(" <p> </p> ")),
                "txt-2",
            ),
            (
                "contained narrative",
                with(patient, |p| {
                    p["contained"] = json!([contained_org()]);
                    p["contained"][0]["text"] = div("<script>x</script>");
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "txt-1",
            ),
            // ext-1, ele-1, choices, modifier extensions.
            (
                "extension without value",
                with(patient, |p| p["extension"][0] = json!({"url": "urn:x"})),
                "ext-1",
            ),
            (
                "extension with both",
                with(patient, |p| {
                    p["extension"][0] = json!({"url": "urn:x", "valueString": "a",
                "extension": [{"url": "urn:y", "valueString": "b"}]})
                }),
                "ext-1",
            ),
            (
                "primitive extension without value",
                with(patient, |p| {
                    p["_birthDate"]["extension"][0] = json!({"url": "urn:x"})
                }),
                "ext-1",
            ),
            (
                "element with only id",
                with(patient, |p| p["name"][1] = json!({"id": "n2"})),
                "ele-1",
            ),
            (
                "primitive with only id",
                with(patient, |p| {
                    p.as_object_mut().unwrap().remove("gender");
                    p["_gender"] = json!({"id": "g"});
                }),
                "ele-1",
            ),
            (
                "two choices",
                with(patient, |p| p["deceasedDateTime"] = json!("2020-01-01")),
                "Patient.deceased[x]",
            ),
            (
                "two choices via extension",
                with(patient, |p| {
                    p["_deceasedDateTime"] = json!({"extension": [{"url": "urn:x", "valueString": "y"}]})
                }),
                "Patient.deceased[x]",
            ),
            (
                "two extension values",
                with(patient, |p| p["extension"][0]["valueString"] = json!("x")),
                "Patient.extension[0].value[x]",
            ),
            (
                "modifierExtension",
                with(patient, |p| {
                    p["modifierExtension"] = json!([{"url": "urn:x", "valueBoolean": true}])
                }),
                "modifier extensions",
            ),
            (
                "nested modifierExtension",
                with(patient, |p| {
                    p["contact"] = json!([{"name": {"text": "x"},
                "modifierExtension": [{"url": "urn:x", "valueBoolean": true}]}])
                }),
                "Patient.contact[0].modifierExtension: modifier extensions",
            ),
            (
                "contained modifierExtension",
                with(patient, |p| {
                    p["contained"] = json!([contained_org()]);
                    p["contained"][0]["modifierExtension"] = json!([{"url": "urn:x", "valueBoolean": true}]);
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "Patient.contained[0].modifierExtension",
            ),
            // Contained resources (dom-2..dom-5) and local references (ref-1).
            (
                "contained without id",
                with(patient, |p| {
                    p["contained"] = json!([{"resourceType": "Organization", "name": "Acme"}])
                }),
                "dom-3",
            ),
            (
                "contained not referenced",
                with(patient, |p| p["contained"] = json!([contained_org()])),
                "dom-3",
            ),
            (
                "contained duplicate ids",
                with(patient, |p| {
                    p["contained"] = json!([contained_org(), contained_org()]);
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "distinct ids (dom-3)",
            ),
            (
                "contained versionId",
                with(patient, |p| {
                    p["contained"] = json!([contained_org()]);
                    p["contained"][0]["meta"] = json!({"versionId": "1"});
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "dom-4",
            ),
            (
                "contained lastUpdated",
                with(patient, |p| {
                    p["contained"] = json!([contained_org()]);
                    p["contained"][0]["meta"] = json!({"lastUpdated": "2020-01-01T00:00:00Z"});
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "dom-4",
            ),
            (
                "contained security label",
                with(patient, |p| {
                    p["contained"] = json!([contained_org()]);
                    p["contained"][0]["meta"] = json!({"security": [{"code": "R"}]});
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "dom-5",
            ),
            (
                "contained contains",
                with(patient, |p| {
                    p["contained"] = json!([contained_org()]);
                    p["contained"][0]["contained"] =
                        json!([{"resourceType": "Organization", "id": "o2", "name": "x"}]);
                    p["managingOrganization"] = json!({"reference": "#org1"});
                }),
                "dom-2",
            ),
            (
                "dangling local reference",
                with(patient, |p| {
                    p["managingOrganization"] = json!({"reference": "#nope"})
                }),
                "ref-1",
            ),
            // Per-type invariants.
            (
                "pat-1",
                with(patient, |p| {
                    p["contact"] = json!([{"relationship": [{"text": "friend"}]}])
                }),
                "pat-1",
            ),
            (
                "cpt-2",
                with(patient, |p| p["telecom"] = json!([{"value": "555-0100"}])),
                "cpt-2",
            ),
            (
                "att-1",
                with(patient, |p| p["photo"] = json!([{"data": "aGk="}])),
                "att-1",
            ),
            (
                "obs-6",
                with(observation, |o| {
                    o["valueString"] = json!("x");
                    o["dataAbsentReason"] = json!({"text": "n/a"});
                }),
                "obs-6",
            ),
            (
                "obs-7",
                with(observation, |o| {
                    o["valueString"] = json!("x");
                    o["component"][0]["code"] = o["code"].clone();
                }),
                "obs-7",
            ),
            (
                "obs-3",
                with(observation, |o| {
                    o["referenceRange"] = json!([{"type": {"text": "x"}}])
                }),
                "obs-3",
            ),
            (
                "qty-3",
                with(observation, |o| {
                    o["component"][0]["valueQuantity"] = json!({"value": 1, "code": "mm[Hg]"})
                }),
                "qty-3",
            ),
            (
                "tim-1",
                with(observation, |o| {
                    o.as_object_mut().unwrap().remove("effectiveDateTime");
                    o["effectiveTiming"] = json!({"repeat": {"duration": 5}});
                }),
                "tim-1",
            ),
            (
                "tim-4",
                with(observation, |o| {
                    o.as_object_mut().unwrap().remove("effectiveDateTime");
                    o["effectiveTiming"] =
                        json!({"repeat": {"duration": number("-0.5"), "durationUnit": "h"}});
                }),
                "tim-4",
            ),
            (
                "drt-1",
                with(observation, |o| {
                    o.as_object_mut().unwrap().remove("effectiveDateTime");
                    o["effectiveTiming"] =
                        json!({"repeat": {"boundsDuration": {"value": 1, "code": "d", "system": "urn:x"}}});
                }),
                "drt-1",
            ),
            ("tim-2", timing(json!({"period": 1})), "tim-2"),
            (
                "tim-5",
                timing(json!({"period": number("-1"), "periodUnit": "d"})),
                "tim-5",
            ),
            ("tim-6", timing(json!({"periodMax": 2})), "tim-6"),
            ("tim-7", timing(json!({"durationMax": 2})), "tim-7"),
            ("tim-8", timing(json!({"countMax": 2})), "tim-8"),
            ("tim-9 without when", timing(json!({"offset": 30})), "tim-9"),
            (
                "tim-9 meal code",
                timing(json!({"offset": 30, "when": ["MORN", "CM"]})),
                "tim-9",
            ),
            (
                "tim-10",
                timing(json!({"timeOfDay": ["08:00:00"], "when": ["MORN"]})),
                "tim-10",
            ),
            (
                "con-1",
                condition(json!({"stage": [{"type": {"text": "x"}}]})),
                "con-1",
            ),
            (
                "con-2",
                condition(json!({"evidence": [{"extension": [{"url": "urn:x", "valueString": "y"}]}]})),
                "con-2",
            ),
            (
                "con-5",
                condition(json!({
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]}})),
                "con-5",
            ),
            (
                "bdl-2",
                json!({"resourceType": "Bundle", "type": "collection",
                    "entry": [{"resource": patient(), "search": {"mode": "match"}}]}),
                "bdl-2",
            ),
            (
                "bdl-4",
                json!({"resourceType": "Bundle", "type": "batch-response", "entry": [{"resource": patient()}]}),
                "bdl-4",
            ),
            (
                "bdl-5",
                json!({"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:x"}]}),
                "bdl-5",
            ),
            (
                "con-4",
                json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "abatementDateTime": "2020-01-01"}),
                "con-4",
            ),
            (
                "bdl-3",
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]}),
                "bdl-3",
            ),
            (
                "bdl-1",
                json!({"resourceType": "Bundle", "type": "collection", "total": 1}),
                "bdl-1",
            ),
            (
                "bdl-8",
                json!({"resourceType": "Bundle", "type": "collection",
                "entry": [{"fullUrl": "http://x/Patient/1/_history/1", "resource": patient()}]}),
                "bdl-8",
            ),
            (
                "bundle entry modifierExtension",
                json!({"resourceType": "Bundle", "type": "collection",
                "entry": [{"resource": with(patient, |p| p["modifierExtension"] = json!([{"url": "urn:x", "valueBoolean": true}]))}]}),
                "Bundle.entry[0].resource.modifierExtension",
            ),
        ];
        for (label, resource, needle) in cases {
            let t = resource["resourceType"].as_str().unwrap().to_string();
            let e = validate(&resource, &t).expect_err(label);
            let shown = e.to_string();
            assert!(shown.contains(needle), "{label}: {shown}");
            assert!(
                !shown.contains("alert") && !shown.contains("Acme"),
                "{label}: {shown}"
            );
        }
    }

    /// Valid variants of the same rules are accepted.
    #[test]
    fn fhir_rules_accept() {
        let cases: Vec<(&str, Value)> = vec![
            ("patient", patient()),
            ("observation", observation()),
            (
                "leap days",
                with(patient, |p| {
                    p["birthDate"] = json!("2000-02-29");
                    p["meta"]["lastUpdated"] = json!("2024-02-29T23:59:59.999+14:00");
                }),
            ),
            (
                "partial dates",
                with(patient, |p| p["birthDate"] = json!("1974-12")),
            ),
            (
                "integer bounds",
                with(patient, |p| {
                    p.as_object_mut().unwrap().remove("deceasedBoolean");
                    p["multipleBirthInteger"] = number("2147483647");
                    p["extension"][0] = json!({"url": "urn:x", "valueInteger": number("-2147483648")});
                }),
            ),
            (
                "decimal exponent",
                with(patient, |p| {
                    p["extension"][0] = json!({"url": "urn:x", "valueDecimal": number("1.5e3")})
                }),
            ),
            (
                "complex extension",
                with(patient, |p| {
                    p["extension"][0] = json!({"url": "urn:x",
                "extension": [{"url": "a", "valueString": "b"}, {"url": "c", "valueCode": "d"}]})
                }),
            ),
            (
                "choice with its extension",
                with(patient, |p| {
                    p.as_object_mut().unwrap().remove("deceasedBoolean");
                    p["deceasedDateTime"] = json!("2020-01-01");
                    p["_deceasedDateTime"] = json!({"extension": [{"url": "urn:x", "valueString": "y"}]});
                }),
            ),
            (
                "primitive id beside value",
                with(patient, |p| p["_gender"] = json!({"id": "g"})),
            ),
            (
                "referenced contained",
                with(patient, |p| {
                    p["contained"] = json!([{"resourceType": "Organization", "id": "org1", "name": "Acme"},
                    {"resourceType": "Organization", "id": "org2", "name": "B", "partOf": {"reference": "#"}}]);
                    p["managingOrganization"] = json!({"reference": "#org1"});
                    p["contained"][0]["text"] = div("<p>Acme</p>");
                }),
            ),
            (
                "contained referring to a sibling",
                with(patient, |p| {
                    p["contained"] = json!([{"resourceType": "Organization", "id": "org1", "name": "Acme"},
                    {"resourceType": "Organization", "id": "org2", "name": "B", "partOf": {"reference": "#org1"}}]);
                    p["generalPractitioner"] = json!([{"reference": "#org2"}]);
                }),
            ),
            (
                "rich narrative",
                with(patient, |p| {
                    p["text"] = div(
                        "<table><tbody><tr><td>Name</td><td>Peter James <b>Chalmers</b> (&quot;Jim&quot;)</td></tr></tbody></table>\
                 <p style=\"color: gray\"><a href=\"https://example.org/x?a=1&amp;b=2\">more</a> &#169; <img src=\"#photo\" alt=\"p\"/></p>",
                    )
                }),
            ),
            (
                "contact with organization",
                with(patient, |p| {
                    p["contact"] = json!([{"organization": {"reference": "Organization/1"}}])
                }),
            ),
            (
                "data absent, no value",
                with(observation, |o| o["dataAbsentReason"] = json!({"text": "n/a"})),
            ),
            (
                "value with other component codes",
                with(observation, |o| o["valueString"] = json!("x")),
            ),
            (
                "timing",
                with(observation, |o| {
                    o.as_object_mut().unwrap().remove("effectiveDateTime");
                    o["effectiveTiming"] = json!({"repeat": {"duration": number("-0.0"), "durationUnit": "h", "when": ["MORN"], "offset": 5}});
                }),
            ),
            (
                "abated and resolved",
                json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]},
                "abatementDateTime": "2020-01-01"}),
            ),
            (
                "searchset",
                json!({"resourceType": "Bundle", "type": "searchset", "total": 1,
                "entry": [{"fullUrl": "http://x/Patient/1", "resource": patient(), "search": {"mode": "match"}}]}),
            ),
        ];
        for (label, resource) in cases {
            let t = resource["resourceType"].as_str().unwrap().to_string();
            if let Err(e) = validate(&resource, &t) {
                panic!("{label}: {e}");
            }
        }
    }

    #[test]
    fn decimals_keep_their_digits() {
        for digits in [
            "1.50",
            "0.000000000000000000001",
            "100.000",
            "-0.0",
            "12345678901234567890.5",
        ] {
            let text = format!(
                r#"{{"resourceType":"Observation","status":"final","code":{{"text":"x"}},"valueQuantity":{{"value":{digits}}}}}"#
            );
            let parsed = parse_strict(text.as_bytes(), &Limits::default()).unwrap();
            validate(&parsed, "Observation").unwrap();
            assert_eq!(serde_json::to_string(&parsed).unwrap(), text);
        }
    }

    #[test]
    fn synthetic_data_is_valid() {
        for seed in [1, 7, 42] {
            for resource in &crate::synthetic::generate(seed, 30) {
                let t = resource["resourceType"].as_str().unwrap();
                if let Err(e) = validate(resource, t) {
                    panic!("seed {seed}, {t}: {e}");
                }
            }
        }
    }

    /// Validation time of a typical Patient and Observation, and the share of it spent in the
    /// FHIR rules (`rules.rs`). Run with `--release --ignored --nocapture`; the minimum over
    /// batches filters out a shared machine's noise.
    #[test]
    #[ignore = "timing: run with --release"]
    fn validation_timing() {
        let v = Validator::new();
        v.warm_up(&["Patient", "Observation"]).unwrap();
        for (name, resource) in [("Patient", patient()), ("Observation", observation())] {
            let object = resource.as_object().unwrap();
            let (mut full, mut rules_only) = (std::time::Duration::MAX, std::time::Duration::MAX);
            for _ in 0..50 {
                let start = std::time::Instant::now();
                for _ in 0..1000 {
                    v.validate(&resource, name).unwrap();
                }
                full = full.min(start.elapsed() / 1000);
                let start = std::time::Instant::now();
                for _ in 0..1000 {
                    let container = Container::root(object);
                    let mut path = String::from(name);
                    rules::check_resource(object, name, &mut path, &container).unwrap();
                    rules::check_contained(object, &path).unwrap();
                }
                rules_only = rules_only.min(start.elapsed() / 1000);
            }
            let without = full.saturating_sub(rules_only);
            eprintln!(
                "{name}: {full:?} per validation, of which rules {rules_only:?}; without rules {without:?}; ratio {:.2}",
                full.as_secs_f64() / without.as_secs_f64()
            );
        }
    }
}
