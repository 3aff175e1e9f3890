//! The embedded R4 JSON schema, patched where the HL7 schema is looser than FHIR, and the
//! per-type compiled validators built from it.
//!
//! Patches (applied in memory at first use; the vendored file stays byte-identical):
//! - every definition with `properties` gets `"type": "object"` (draft-06 `properties` alone
//!   accepts strings and numbers where an object is required), `xhtml` gets `"type": "string"`;
//! - `integer`, `positiveInt`, `unsignedInt` become JSON-schema integers with their 32-bit ranges;
//! - items of primitive arrays and of their `_x` extension arrays may be `null` (FHIR JSON uses
//!   `null` to keep the two arrays aligned); the validator checks the alignment itself;
//! - required primitive elements (which the HL7 schema leaves out, as they may be given as
//!   `_x` only) are required for the types in [`REQUIRED_PRIMITIVES`]: `x` or `_x` must be present;
//! - the FHIRVersion codes (`StructureDefinition.fhirVersion`, ...) gain `4.0.1`, missing from
//!   the schema's list though it is R4's own version;
//! - `ResourceList` (contained resources, `Bundle.entry.resource`, `Parameters.parameter.resource`)
//!   becomes "an object with a string `resourceType`": nested resources are validated one by one
//!   against their own type, which gives precise errors and keeps each compiled validator small.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::types::RESOURCE_TYPES;

const SCHEMA_TEXT: &str = include_str!("../fhir-r4/fhir.schema.json");

/// The `id` of the R4 schema document; `$ref`s resolve against it.
pub(crate) const SCHEMA_URI: &str = "http://hl7.org/fhir/json-schema/4.0";

/// The definition that stands for "any resource".
pub(crate) const RESOURCE_LIST: &str = "ResourceList";

/// Primitive elements with minimum cardinality 1 in R4 (a hand-made subset of the
/// StructureDefinitions, covering the types Ward handles most), as `(definition, elements)`.
pub(crate) const REQUIRED_PRIMITIVES: &[(&str, &[&str])] = &[
    ("AuditEvent", &["recorded"]),
    ("AuditEvent_Agent", &["requestor"]),
    ("Appointment", &["status"]),
    ("Binary", &["contentType"]),
    ("Bundle", &["type"]),
    ("Bundle_Link", &["relation", "url"]),
    ("Bundle_Request", &["method", "url"]),
    ("Bundle_Response", &["status"]),
    ("CarePlan", &["status", "intent"]),
    ("Claim", &["status", "use", "created"]),
    ("Communication", &["status"]),
    ("CommunicationRequest", &["status"]),
    ("Composition", &["status", "date", "title"]),
    ("Consent", &["status"]),
    ("Coverage", &["status"]),
    ("DeviceRequest", &["intent"]),
    ("DiagnosticReport", &["status"]),
    ("DocumentReference", &["status"]),
    ("Encounter", &["status"]),
    ("EpisodeOfCare", &["status"]),
    ("Extension", &["url"]),
    ("FamilyMemberHistory", &["status"]),
    ("Flag", &["status"]),
    ("Goal", &["lifecycleStatus"]),
    ("Group", &["type", "actual"]),
    ("Immunization", &["status"]),
    ("List", &["status", "mode"]),
    ("MedicationAdministration", &["status"]),
    ("MedicationRequest", &["status", "intent"]),
    ("MedicationStatement", &["status"]),
    ("Narrative", &["status"]),
    ("Observation", &["status"]),
    ("OperationOutcome_Issue", &["severity", "code"]),
    ("Parameters_Parameter", &["name"]),
    ("Patient_Link", &["type"]),
    ("Procedure", &["status"]),
    ("Provenance", &["recorded"]),
    ("ServiceRequest", &["status", "intent"]),
    ("Subscription", &["status", "reason", "criteria"]),
    ("Subscription_Channel", &["type"]),
    ("Task", &["status", "intent"]),
];

static SCHEMA: OnceLock<Value> = OnceLock::new();
static REGISTRY: OnceLock<Result<jsonschema::Registry<'static>, String>> = OnceLock::new();
static STRUCTURE: OnceLock<Structure> = OnceLock::new();
static VALIDATORS: [OnceLock<jsonschema::Validator>; RESOURCE_TYPES.len()] =
    [const { OnceLock::new() }; RESOURCE_TYPES.len()];

/// The patched schema document, parsed once.
pub(crate) fn schema() -> &'static Value {
    SCHEMA.get_or_init(|| {
        // The embedded file is fixed at compile time and covered by tests: a failure here is a
        // build defect, not an input error.
        #[allow(clippy::expect_used, reason = "compile-time constant, parsed by the tests")]
        let mut schema: Value =
            serde_json::from_str(SCHEMA_TEXT).expect("embedded FHIR R4 schema is valid JSON");
        patch(&mut schema);
        schema
    })
}

fn definition_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/definitions/")
}

fn is_primitive(definition: &str) -> bool {
    definition.starts_with(|c: char| c.is_ascii_lowercase())
}

fn patch(schema: &mut Value) {
    let Some(definitions) = schema.get_mut("definitions").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, definition) in definitions.iter_mut() {
        let Some(definition) = definition.as_object_mut() else {
            continue;
        };
        if let Some(properties) = definition.get_mut("properties").and_then(Value::as_object_mut) {
            for (property, property_schema) in properties.iter_mut() {
                add_fhir_version_401(property_schema);
                allow_null_items(property, property_schema);
            }
            definition.entry("type").or_insert_with(|| Value::from("object"));
        }
        let range = match name.as_str() {
            "integer" => Some(-2_147_483_648_i64),
            "positiveInt" => Some(1),
            "unsignedInt" => Some(0),
            _ => None,
        };
        if let Some(minimum) = range {
            definition.insert("type".into(), "integer".into());
            definition.insert("minimum".into(), minimum.into());
            definition.insert("maximum".into(), 2_147_483_647_i64.into());
        }
        if name == "xhtml" {
            definition.insert("type".into(), "string".into());
        }
    }
    for (name, elements) in REQUIRED_PRIMITIVES {
        let Some(definition) = definitions.get_mut(*name).and_then(Value::as_object_mut) else {
            continue;
        };
        let rules: Vec<Value> = elements
            .iter()
            .map(|e| json!({ "anyOf": [ { "required": [e] }, { "required": [format!("_{e}")] } ] }))
            .collect();
        definition.insert("allOf".into(), Value::Array(rules));
    }
    definitions.insert(
        RESOURCE_LIST.into(),
        json!({
            "type": "object",
            "required": ["resourceType"],
            "properties": { "resourceType": { "type": "string" } }
        }),
    );
}

/// The schema's FHIRVersion codes stop at 4.0.0, so `fhirVersion: "4.0.1"` (this very
/// release, used by every official R4 StructureDefinition) would be refused: add it.
fn add_fhir_version_401(property_schema: &mut Value) {
    let codes = match property_schema.get_mut("items") {
        Some(items) => items.get_mut("enum"),
        None => property_schema.get_mut("enum"),
    };
    if let Some(Value::Array(codes)) = codes
        && codes.iter().any(|c| c == "4.0.0")
        && !codes.iter().any(|c| c == "4.0.1")
    {
        codes.push(Value::from("4.0.1"));
    }
}

/// Lets the items of primitive arrays (and of `_x` arrays) be `null`.
fn allow_null_items(property: &str, property_schema: &mut Value) {
    let Some(items) = property_schema.get_mut("items") else {
        return;
    };
    let complex = items
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(definition_name)
        .is_some_and(|d| !is_primitive(d));
    if complex && !property.starts_with('_') {
        return;
    }
    let original = items.take();
    *items = json!({ "anyOf": [ { "type": "null" }, original ] });
}

fn registry() -> Result<&'static jsonschema::Registry<'static>, String> {
    REGISTRY
        .get_or_init(|| {
            jsonschema::Registry::new()
                .draft(jsonschema::Draft::Draft6)
                .add(SCHEMA_URI, schema())
                .and_then(|builder| builder.prepare())
                .map_err(|e| format!("FHIR schema registry: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The compiled validator for a resource type (compiled on first use, then shared).
pub(crate) fn validator_for(type_index: usize) -> Result<&'static jsonschema::Validator, String> {
    let slot = VALIDATORS
        .get(type_index)
        .ok_or_else(|| "unknown resource type".to_string())?;
    if let Some(validator) = slot.get() {
        return Ok(validator);
    }
    let name = RESOURCE_TYPES
        .get(type_index)
        .ok_or_else(|| "unknown resource type".to_string())?;
    let root = json!({ "$ref": format!("{SCHEMA_URI}#/definitions/{name}") });
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft6)
        .with_registry(registry()?)
        .should_validate_formats(false)
        .build(&root)
        .map_err(|e| format!("compiling the FHIR schema for {name}: {e}"))?;
    // Another thread may have won the race; either compiled validator is equivalent.
    let _ = slot.set(validator);
    slot.get().ok_or_else(|| "validator cache is empty".to_string())
}

/// The element structure needed to find nested resources: for each definition, the
/// properties that lead (directly or transitively) to a `ResourceList`.
pub(crate) struct Structure {
    /// definition -> property -> target definition, only for properties whose target is
    /// `ResourceList` or reaches it.
    paths: HashMap<String, HashMap<String, String>>,
}

impl Structure {
    fn build(schema: &Value) -> Structure {
        let empty = Map::new();
        let definitions = schema
            .get("definitions")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut edges: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
        for (name, definition) in definitions {
            let Some(properties) = definition.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for (property, property_schema) in properties {
                let direct = property_schema.get("$ref");
                let item = property_schema
                    .get("items")
                    .and_then(|i| i.get("$ref").or_else(|| i.get("anyOf")?.get(1)?.get("$ref")));
                if let Some(target) = direct
                    .or(item)
                    .and_then(Value::as_str)
                    .and_then(definition_name)
                    .filter(|t| !is_primitive(t))
                {
                    edges
                        .entry(name.as_str())
                        .or_default()
                        .push((property.as_str(), target));
                }
            }
        }
        let mut reaches: HashSet<&str> = HashSet::from([RESOURCE_LIST]);
        loop {
            let before = reaches.len();
            for (name, targets) in &edges {
                if targets.iter().any(|(_, t)| reaches.contains(t)) {
                    reaches.insert(name);
                }
            }
            if reaches.len() == before {
                break;
            }
        }
        let mut paths: HashMap<String, HashMap<String, String>> = HashMap::new();
        for (name, targets) in &edges {
            for (property, target) in targets {
                if reaches.contains(target) {
                    paths
                        .entry((*name).to_string())
                        .or_default()
                        .insert((*property).to_string(), (*target).to_string());
                }
            }
        }
        Structure { paths }
    }

    /// The target definition of `property` in `definition`, if it can hold a nested resource.
    pub(crate) fn step(&self, definition: &str, property: &str) -> Option<&str> {
        self.paths.get(definition)?.get(property).map(String::as_str)
    }
}

pub(crate) fn structure() -> &'static Structure {
    STRUCTURE.get_or_init(|| Structure::build(schema()))
}

/// The FHIR definition name a schema keyword location belongs to, e.g. `date` for
/// `http://hl7.org/fhir/json-schema/4.0#/definitions/date/pattern`.
pub(crate) fn definition_of_location(location: &str) -> Option<&str> {
    let fragment = location.split_once('#')?.1;
    let rest = fragment.strip_prefix("/definitions/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_finds_nested_resources() {
        let s = structure();
        assert_eq!(s.step("Patient", "contained"), Some(RESOURCE_LIST));
        assert_eq!(s.step("Bundle", "entry"), Some("Bundle_Entry"));
        assert_eq!(s.step("Bundle_Entry", "resource"), Some(RESOURCE_LIST));
        assert_eq!(s.step("Bundle_Entry", "response"), Some("Bundle_Response"));
        assert_eq!(
            s.step("Parameters_Parameter", "part"),
            Some("Parameters_Parameter")
        );
        assert_eq!(s.step("Patient", "name"), None);
    }

    #[test]
    fn required_primitives_exist_in_schema() {
        let definitions = &schema()["definitions"];
        for (name, elements) in REQUIRED_PRIMITIVES {
            for e in *elements {
                assert!(definitions[name]["properties"].get(e).is_some(), "{name}.{e}");
                assert!(
                    definitions[name]["properties"].get(format!("_{e}")).is_some(),
                    "{name}._{e}"
                );
            }
        }
    }

    #[test]
    fn fhir_version_401_is_a_code() {
        let definitions = &schema()["definitions"];
        for (definition, pointer) in [
            ("StructureDefinition", "/properties/fhirVersion/enum"),
            ("CapabilityStatement", "/properties/fhirVersion/enum"),
            ("ImplementationGuide", "/properties/fhirVersion/items/enum"),
        ] {
            let codes = definitions[definition]
                .pointer(pointer)
                .or_else(|| definitions[definition].pointer(&pointer.replace("items/", "items/anyOf/1/")))
                .and_then(Value::as_array)
                .unwrap();
            assert!(codes.contains(&Value::from("4.0.1")), "{definition}");
        }
    }

    #[test]
    fn keyword_location() {
        assert_eq!(
            definition_of_location("http://hl7.org/fhir/json-schema/4.0#/definitions/date/pattern"),
            Some("date")
        );
        assert_eq!(definition_of_location("http://x/#/items"), None);
    }
}
