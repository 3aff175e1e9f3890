//! FHIR R4 rules the JSON schema does not express, checked with the element types the schema
//! gives (see ARCHITECTURE.md, "Enforced FHIR rules", for the list and how to extend it).
//!
//! One walk over a resource's own elements (nested resources are walked on their own by
//! `validate.rs`) checks:
//! - primitive formats: `integer`/`positiveInt`/`unsignedInt` are 32-bit whole numbers written
//!   without fraction, exponent or `-0`; `date`/`dateTime`/`instant` name real calendar days;
//!   `xhtml` is the FHIR narrative subset (`txt-1`, `txt-2`, in `xhtml.rs`);
//! - `ele-1` (an element has a value or children besides `id`), `ext-1` (an extension has a
//!   value or extensions, not both), at most one type of a choice element (`value[x]`),
//!   no `modifierExtension` (Ward understands none, so it must refuse them);
//! - the per-type invariants in [`INVARIANTS`] and `ref-1` (a local reference names a
//!   contained resource);
//! - on a container, `dom-3`..`dom-5` for its contained resources (`dom-2` is in
//!   `validate.rs`).
//!
//! Every check is hand-written and exact for what it accepts: where the official FHIRPath
//! would give "empty" (unknown), the check accepts. Messages name the rule, never a value.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::outcome::IssueType;
use crate::schema::{self, RESOURCE_LIST};
use crate::validate::ValidationError;
use crate::xhtml;

/// A per-type invariant: `context` is a schema definition name (`Patient_Contact` for
/// `Patient.contact`); `holds` implements `expression` from the R4 definitions.
pub struct Invariant {
    pub key: &'static str,
    pub context: &'static str,
    pub human: &'static str,
    pub expression: &'static str,
    holds: fn(&Map<String, Value>) -> bool,
}

const UCUM: &str = "http://unitsofmeasure.org";
const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VER_STATUS: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";

/// The per-type invariants enforced, from the R4 (4.0.1) StructureDefinitions.
pub const INVARIANTS: &[Invariant] = &[
    Invariant {
        key: "qty-3",
        context: "Quantity",
        human: "If a code for the unit is present, the system SHALL also be present",
        expression: "code.empty() or system.exists()",
        holds: qty_3,
    },
    Invariant {
        key: "qty-3",
        context: "Age",
        human: "If a code for the unit is present, the system SHALL also be present",
        expression: "code.empty() or system.exists()",
        holds: qty_3,
    },
    Invariant {
        key: "qty-3",
        context: "Count",
        human: "If a code for the unit is present, the system SHALL also be present",
        expression: "code.empty() or system.exists()",
        holds: qty_3,
    },
    Invariant {
        key: "qty-3",
        context: "Distance",
        human: "If a code for the unit is present, the system SHALL also be present",
        expression: "code.empty() or system.exists()",
        holds: qty_3,
    },
    Invariant {
        key: "qty-3",
        context: "Duration",
        human: "If a code for the unit is present, the system SHALL also be present",
        expression: "code.empty() or system.exists()",
        holds: qty_3,
    },
    Invariant {
        key: "drt-1",
        context: "Duration",
        human: "There SHALL be a code if there is a value and it SHALL be an expression of time. If system is present, it SHALL be UCUM.",
        expression: "code.exists() implies ((system = %ucum) and value.exists())",
        holds: |o| !has(o, "code") || (str_of(o, "system") == Some(UCUM) && has(o, "value")),
    },
    Invariant {
        key: "att-1",
        context: "Attachment",
        human: "If the Attachment has data, it SHALL have a contentType",
        expression: "data.empty() or contentType.exists()",
        holds: |o| !has(o, "data") || has(o, "contentType"),
    },
    Invariant {
        key: "cpt-2",
        context: "ContactPoint",
        human: "A system is required if a value is provided.",
        expression: "value.empty() or system.exists()",
        holds: |o| !has(o, "value") || has(o, "system"),
    },
    Invariant {
        key: "tim-1",
        context: "Timing_Repeat",
        human: "if there's a duration, there needs to be duration units",
        expression: "duration.empty() or durationUnit.exists()",
        holds: |o| !has(o, "duration") || has(o, "durationUnit"),
    },
    Invariant {
        key: "tim-2",
        context: "Timing_Repeat",
        human: "if there's a period, there needs to be period units",
        expression: "period.empty() or periodUnit.exists()",
        holds: |o| !has(o, "period") || has(o, "periodUnit"),
    },
    Invariant {
        key: "tim-4",
        context: "Timing_Repeat",
        human: "duration SHALL be a non-negative value",
        expression: "duration.exists() implies duration >= 0",
        holds: |o| !o.get("duration").is_some_and(is_negative),
    },
    Invariant {
        key: "tim-5",
        context: "Timing_Repeat",
        human: "period SHALL be a non-negative value",
        expression: "period.exists() implies period >= 0",
        holds: |o| !o.get("period").is_some_and(is_negative),
    },
    Invariant {
        key: "tim-6",
        context: "Timing_Repeat",
        human: "If there's a periodMax, there must be a period",
        expression: "periodMax.empty() or period.exists()",
        holds: |o| !has(o, "periodMax") || has(o, "period"),
    },
    Invariant {
        key: "tim-7",
        context: "Timing_Repeat",
        human: "If there's a durationMax, there must be a duration",
        expression: "durationMax.empty() or duration.exists()",
        holds: |o| !has(o, "durationMax") || has(o, "duration"),
    },
    Invariant {
        key: "tim-8",
        context: "Timing_Repeat",
        human: "If there's a countMax, there must be a count",
        expression: "countMax.empty() or count.exists()",
        holds: |o| !has(o, "countMax") || has(o, "count"),
    },
    Invariant {
        key: "tim-9",
        context: "Timing_Repeat",
        human: "If there's an offset, there must be a when (and not C, CM, CD, CV)",
        expression: "offset.empty() or (when.exists() and when.select($this in ('C' | 'CM' | 'CD' | 'CV')).allFalse())",
        holds: |o| {
            !has(o, "offset")
                || (has(o, "when") && !strings(o, "when").any(|w| matches!(w, "C" | "CM" | "CD" | "CV")))
        },
    },
    Invariant {
        key: "tim-10",
        context: "Timing_Repeat",
        human: "If there's a timeOfDay, there cannot be a when, or vice versa",
        expression: "timeOfDay.empty() or when.empty()",
        holds: |o| !has(o, "timeOfDay") || !has(o, "when"),
    },
    Invariant {
        key: "pat-1",
        context: "Patient_Contact",
        human: "SHALL at least contain a contact's details or a reference to an organization",
        expression: "name.exists() or telecom.exists() or address.exists() or organization.exists()",
        holds: |o| {
            ["name", "telecom", "address", "organization"]
                .iter()
                .any(|k| has(o, k))
        },
    },
    Invariant {
        key: "obs-3",
        context: "Observation_ReferenceRange",
        human: "Must have at least a low or a high or text",
        expression: "low.exists() or high.exists() or text.exists()",
        holds: |o| ["low", "high", "text"].iter().any(|k| has(o, k)),
    },
    Invariant {
        key: "obs-6",
        context: "Observation",
        human: "dataAbsentReason SHALL only be present if Observation.value[x] is not present",
        expression: "dataAbsentReason.empty() or value.empty()",
        holds: |o| !has(o, "dataAbsentReason") || !has_choice(o, "value"),
    },
    Invariant {
        key: "obs-7",
        context: "Observation",
        human: "If Observation.code is the same as an Observation.component.code then the value element associated with the code SHALL NOT be present",
        expression: "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()",
        holds: obs_7,
    },
    Invariant {
        key: "con-1",
        context: "Condition_Stage",
        human: "Stage SHALL have summary or assessment",
        expression: "summary.exists() or assessment.exists()",
        holds: |o| has(o, "summary") || has(o, "assessment"),
    },
    Invariant {
        key: "con-2",
        context: "Condition_Evidence",
        human: "evidence SHALL have code or details",
        expression: "code.exists() or detail.exists()",
        holds: |o| has(o, "code") || has(o, "detail"),
    },
    Invariant {
        key: "con-4",
        context: "Condition",
        human: "If condition is abated, then clinicalStatus must be either inactive, resolved, or remission",
        expression: "abatement.empty() or clinicalStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/condition-clinical' and (code='resolved' or code='remission' or code='inactive')).exists()",
        holds: |o| {
            !has_choice(o, "abatement")
                || has_coding(
                    o,
                    "clinicalStatus",
                    CONDITION_CLINICAL,
                    &["resolved", "remission", "inactive"],
                )
        },
    },
    Invariant {
        key: "con-5",
        context: "Condition",
        human: "Condition.clinicalStatus SHALL NOT be present if verification Status is entered-in-error",
        expression: "verificationStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/condition-ver-status' and code='entered-in-error').empty() or clinicalStatus.empty()",
        holds: |o| {
            !has_coding(
                o,
                "verificationStatus",
                CONDITION_VER_STATUS,
                &["entered-in-error"],
            ) || !has(o, "clinicalStatus")
        },
    },
    Invariant {
        key: "bdl-1",
        context: "Bundle",
        human: "total only when a search or history",
        expression: "total.empty() or (type = 'searchset') or (type = 'history')",
        holds: |o| !has(o, "total") || bundle_type_in(o, &["searchset", "history"]) != Some(false),
    },
    Invariant {
        key: "bdl-2",
        context: "Bundle",
        human: "entry.search only when a search",
        expression: "entry.search.empty() or (type = 'searchset')",
        holds: |o| !entries(o).any(|e| has(e, "search")) || bundle_type_in(o, &["searchset"]) != Some(false),
    },
    Invariant {
        key: "bdl-3",
        context: "Bundle",
        human: "entry.request mandatory for batch/transaction/history, otherwise prohibited",
        expression: "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or %resource.type = 'history'))",
        holds: |o| match bundle_type_in(o, &["batch", "transaction", "history"]) {
            Some(wanted) => entries(o).all(|e| has(e, "request") == wanted),
            None => true,
        },
    },
    Invariant {
        key: "bdl-4",
        context: "Bundle",
        human: "entry.response mandatory for batch-response/transaction-response/history, otherwise prohibited",
        expression: "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' or %resource.type = 'history'))",
        holds: |o| match bundle_type_in(o, &["batch-response", "transaction-response", "history"]) {
            Some(wanted) => entries(o).all(|e| has(e, "response") == wanted),
            None => true,
        },
    },
    Invariant {
        key: "bdl-5",
        context: "Bundle_Entry",
        human: "must be a resource unless there's a request or response",
        expression: "resource.exists() or request.exists() or response.exists()",
        holds: |o| ["resource", "request", "response"].iter().any(|k| has(o, k)),
    },
    Invariant {
        key: "bdl-8",
        context: "Bundle_Entry",
        human: "fullUrl cannot be a version specific reference",
        expression: "fullUrl.exists() implies fullUrl.contains('/_history/').not()",
        holds: |o| !str_of(o, "fullUrl").is_some_and(|u| u.contains("/_history/")),
    },
];

// ----- helpers for invariants ---------------------------------------------------------------

/// `name.exists()`: the element is there, as a value or only through its `_name` extension.
/// (Empty arrays, objects and `null` are refused before the rules run.)
fn has(o: &Map<String, Value>, name: &str) -> bool {
    o.contains_key(name) || o.keys().any(|k| k.strip_prefix('_') == Some(name))
}

/// `name.exists()` for a choice element `name[x]`.
fn has_choice(o: &Map<String, Value>, name: &str) -> bool {
    o.keys().any(|k| {
        let k = k.strip_prefix('_').unwrap_or(k);
        k.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
    })
}

fn str_of<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    o.get(name).and_then(Value::as_str)
}

/// The string values of a primitive (single or repeating) element.
fn strings<'a>(o: &'a Map<String, Value>, name: &str) -> impl Iterator<Item = &'a str> {
    let values: &[Value] = match o.get(name) {
        Some(Value::Array(items)) => items,
        Some(v) => std::slice::from_ref(v),
        None => &[],
    };
    values.iter().filter_map(Value::as_str)
}

fn objects(value: Option<&Value>) -> impl Iterator<Item = &Map<String, Value>> {
    let values: &[Value] = match value {
        Some(Value::Array(items)) => items,
        Some(v) => std::slice::from_ref(v),
        None => &[],
    };
    values.iter().filter_map(Value::as_object)
}

fn entries(o: &Map<String, Value>) -> impl Iterator<Item = &Map<String, Value>> {
    objects(o.get("entry"))
}

/// Whether `Bundle.type` is one of `types`; `None` when the type has no value (the
/// FHIRPath comparison is then empty and the invariant is not evaluated).
fn bundle_type_in(o: &Map<String, Value>, types: &[&str]) -> Option<bool> {
    str_of(o, "type").map(|t| types.contains(&t))
}

/// `concept.coding.where(system = S and code in codes).exists()`.
fn has_coding(o: &Map<String, Value>, concept: &str, system: &str, codes: &[&str]) -> bool {
    objects(o.get(concept))
        .flat_map(|c| objects(c.get("coding")))
        .any(|c| str_of(c, "system") == Some(system) && str_of(c, "code").is_some_and(|k| codes.contains(&k)))
}

fn qty_3(o: &Map<String, Value>) -> bool {
    !has(o, "code") || has(o, "system")
}

fn obs_7(o: &Map<String, Value>) -> bool {
    if !has_choice(o, "value") {
        return true;
    }
    let codings: Vec<&Value> = objects(o.get("code"))
        .flat_map(|c| match c.get("coding") {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    !objects(o.get("component"))
        .flat_map(|c| objects(c.get("code")))
        .flat_map(|c| match c.get("coding") {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => Vec::new(),
        })
        .any(|coding| codings.contains(&coding))
}

/// A decimal below zero (`-0` and `-0.0` are not).
fn is_negative(v: &Value) -> bool {
    let Value::Number(n) = v else {
        return false;
    };
    let text = n.to_string();
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    mantissa.starts_with('-') && mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'))
}

// ----- element types ------------------------------------------------------------------------

struct Property {
    /// The schema definition of the element's type (`string`, `HumanName`, `Patient_Contact`,
    /// `ResourceList`), or `code` for inline enumerations.
    ty: &'static str,
    /// For a type of a choice element (`valueString`), the element's name (`value`).
    choice: Option<&'static str>,
}

/// FNV-1a: the tables are fixed (built from the schema, never from input), so a fast
/// non-keyed hash is safe, and it halves the cost of the walk compared with SipHash.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type FixedMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

struct Types {
    definitions: FixedMap<&'static str, FixedMap<&'static str, Property>>,
    invariants: FixedMap<&'static str, Vec<&'static Invariant>>,
}

static TYPES: OnceLock<Types> = OnceLock::new();

fn types() -> &'static Types {
    TYPES.get_or_init(|| Types::build(schema::schema()))
}

fn reference_target(property: &'static Value) -> Option<&'static str> {
    let target = property.get("$ref").or_else(|| {
        let items = property.get("items")?;
        items
            .get("$ref")
            .or_else(|| items.get("anyOf")?.as_array()?.iter().find_map(|b| b.get("$ref")))
    })?;
    target.as_str()?.strip_prefix("#/definitions/")
}

impl Types {
    fn build(schema: &'static Value) -> Types {
        let mut definitions = FixedMap::default();
        let all = schema.get("definitions").and_then(Value::as_object);
        for (name, definition) in all.into_iter().flatten() {
            let Some(properties) = definition.get("properties").and_then(Value::as_object) else {
                continue;
            };
            let mut map: FixedMap<&'static str, Property> = FixedMap::default();
            for (property, property_schema) in properties {
                if property.starts_with('_') {
                    continue;
                }
                let ty = match reference_target(property_schema) {
                    Some(t) => t,
                    None if property_schema.get("enum").is_some()
                        || property_schema.get("items").and_then(|i| i.get("enum")).is_some() =>
                    {
                        "code"
                    }
                    // The schema inlines the primitive types of choice elements
                    // (`multipleBirthInteger` is a "number" with a pattern): the name says the type.
                    None => match type_suffix(property, all) {
                        Some((_, ty)) => ty,
                        None => continue,
                    },
                };
                map.insert(property.as_str(), Property { ty, choice: None });
            }
            mark_choices(&mut map, properties, all);
            definitions.insert(name.as_str(), map);
        }
        let mut invariants: FixedMap<&'static str, Vec<&'static Invariant>> = FixedMap::default();
        for invariant in INVARIANTS {
            invariants.entry(invariant.context).or_default().push(invariant);
        }
        Types {
            definitions,
            invariants,
        }
    }
}

/// Splits `valueDateTime` into `value` and the schema definition `dateTime` (or
/// `valueQuantity` into `value` and `Quantity`), at the first capital that starts a type name.
fn type_suffix(
    property: &'static str,
    all: Option<&'static Map<String, Value>>,
) -> Option<(&'static str, &'static str)> {
    let all = all?;
    property.char_indices().skip(1).find_map(|(i, c)| {
        if !c.is_ascii_uppercase() {
            return None;
        }
        let suffix = property.get(i..)?;
        let lower = format!("{}{}", c.to_ascii_lowercase(), suffix.get(1..)?);
        let ty = all
            .get_key_value(suffix)
            .or_else(|| all.get_key_value(lower.as_str()))
            .map(|(k, _)| k.as_str())?;
        Some((property.get(..i)?, ty))
    })
}

/// Finds the choice elements of one definition. The JSON schema has one property per type
/// (`valueString`, `valueQuantity`); the types of one choice element are the single-valued
/// properties named `<element><Type>` for a FHIR type, sharing one description, at least two.
/// (Checked against the R4 StructureDefinitions' `[x]` elements; `reasonCode` and
/// `reasonReference` are separate repeating elements, not a choice.)
fn mark_choices(
    map: &mut FixedMap<&'static str, Property>,
    properties: &'static Map<String, Value>,
    all: Option<&'static Map<String, Value>>,
) {
    let mut groups: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
    for (property, property_schema) in properties {
        if property.starts_with('_') || property_schema.get("items").is_some() {
            continue;
        }
        if let Some((element, _)) = type_suffix(property, all) {
            groups.entry(element).or_default().push(property.as_str());
        }
    }
    for (element, members) in groups {
        let description = |p: &str| properties.get(p).and_then(|s| s.get("description"));
        let same = members
            .iter()
            .all(|m| description(m) == members.first().and_then(|f| description(f)));
        if members.len() < 2 || !same {
            continue;
        }
        for member in members {
            if let Some(p) = map.get_mut(member) {
                p.choice = Some(element);
            }
        }
    }
}

// ----- the walk -----------------------------------------------------------------------------

/// What the checks of one resource need from its container.
pub(crate) struct Container<'a> {
    /// The ids of the root resource's contained resources (`%rootResource.contained.id`).
    pub contained_ids: Vec<&'a str>,
    /// Whether the resource being checked is itself contained.
    pub inside_contained: bool,
}

impl<'a> Container<'a> {
    pub(crate) fn root(resource: &'a Map<String, Value>) -> Self {
        Container {
            contained_ids: objects(resource.get("contained"))
                .filter_map(|c| str_of(c, "id"))
                .collect(),
            inside_contained: false,
        }
    }

    /// The context of a resource contained in this one.
    pub(crate) fn for_contained(&self) -> Container<'a> {
        Container {
            contained_ids: self.contained_ids.clone(),
            inside_contained: true,
        }
    }
}

fn invariant_error(path: &str, key: &str, message: &str) -> ValidationError {
    ValidationError::new(IssueType::Invariant, path, format!("{message} ({key})"))
}

/// Checks the elements of one resource of type `resource_type` (already schema-valid), not
/// descending into nested resources. `path` is the resource's own path.
pub(crate) fn check_resource(
    resource: &Map<String, Value>,
    resource_type: &str,
    path: &mut String,
    container: &Container<'_>,
) -> Result<(), ValidationError> {
    let walk = Walk {
        types: types(),
        container,
    };
    walk.object(resource, resource_type, path, false)
}

struct Walk<'a> {
    types: &'static Types,
    container: &'a Container<'a>,
}

impl Walk<'_> {
    /// Checks an object of schema definition `definition`; `element` is false for a resource.
    fn object(
        &self,
        object: &Map<String, Value>,
        definition: &str,
        path: &mut String,
        element: bool,
    ) -> Result<(), ValidationError> {
        if element && object.len() == 1 && object.contains_key("id") {
            return Err(invariant_error(
                path,
                "ele-1",
                "an element must have a value or children besides its id",
            ));
        }
        let Some(properties) = self.types.definitions.get(definition) else {
            return Ok(());
        };
        let mut chosen: Vec<(&str, &str)> = Vec::new();
        for (key, value) in object {
            let base = path.len();
            path.push('.');
            path.push_str(key);
            if key == "modifierExtension" {
                return Err(ValidationError::new(
                    IssueType::NotSupported,
                    path.clone(),
                    "modifier extensions are not supported: Ward understands none, so it must refuse a resource carrying one",
                ));
            }
            let (name, is_extension_part) = match key.strip_prefix('_') {
                Some(name) => (name, true),
                None => (key.as_str(), false),
            };
            let Some(property) = properties.get(name) else {
                path.truncate(base);
                continue;
            };
            if let Some(choice) = property.choice {
                match chosen.iter().find(|(c, _)| *c == choice) {
                    Some((_, other)) if *other != name => {
                        path.truncate(base);
                        path.push('.');
                        path.push_str(choice);
                        path.push_str("[x]");
                        return Err(ValidationError::new(
                            IssueType::Structure,
                            path.clone(),
                            "a choice element may have only one of its types",
                        ));
                    }
                    Some(_) => {}
                    None => chosen.push((choice, name)),
                }
            }
            if is_extension_part {
                self.primitive_elements(object, name, value, path)?;
            } else if property.ty != RESOURCE_LIST {
                self.values(value, property.ty, path)?;
            }
            path.truncate(base);
        }
        if definition == "Extension" && has_choice(object, "value") == has(object, "extension") {
            return Err(invariant_error(
                path,
                "ext-1",
                "an extension must have either a value or nested extensions (one, not both)",
            ));
        }
        if definition == "Reference" {
            self.check_local_reference(object, path)?;
        }
        if let Some(invariants) = self.types.invariants.get(definition) {
            for invariant in invariants {
                if !(invariant.holds)(object) {
                    return Err(invariant_error(path, invariant.key, invariant.human));
                }
            }
        }
        Ok(())
    }

    /// Checks a single value or an array of values of type `ty`.
    fn values(&self, value: &Value, ty: &str, path: &mut String) -> Result<(), ValidationError> {
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let base = path.len();
                    let _ = write!(path, "[{i}]");
                    self.value(item, ty, path)?;
                    path.truncate(base);
                }
                Ok(())
            }
            other => self.value(other, ty, path),
        }
    }

    fn value(&self, value: &Value, ty: &str, path: &mut String) -> Result<(), ValidationError> {
        match value {
            Value::Object(object) => self.object(object, ty, path, true),
            Value::Number(number) if matches!(ty, "integer" | "unsignedInt" | "positiveInt") => {
                check_number(&number.to_string(), ty, path)
            }
            Value::String(text) => check_string(text, ty, path),
            Value::Number(_) | Value::Null | Value::Bool(_) | Value::Array(_) => Ok(()),
        }
    }

    /// Checks `_name`: the `Element` part(s) of a primitive. `ele-1`: an `_name` holding only an
    /// `id` needs the primitive's value beside it.
    fn primitive_elements(
        &self,
        parent: &Map<String, Value>,
        name: &str,
        value: &Value,
        path: &mut String,
    ) -> Result<(), ValidationError> {
        let primitive = parent.get(name);
        let check = |element: &Value, has_value: bool, path: &mut String| {
            let Value::Object(object) = element else {
                return Ok(());
            };
            if !has_value && object.len() == 1 && object.contains_key("id") {
                return Err(invariant_error(
                    path,
                    "ele-1",
                    "an element must have a value or children besides its id",
                ));
            }
            self.object(object, "Element", path, false)
        };
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let base = path.len();
                    let _ = write!(path, "[{i}]");
                    let has_value = primitive
                        .and_then(Value::as_array)
                        .and_then(|p| p.get(i))
                        .is_some_and(|v| !v.is_null());
                    check(item, has_value, path)?;
                    path.truncate(base);
                }
                Ok(())
            }
            other => check(other, primitive.is_some(), path),
        }
    }

    /// `ref-1`: a local reference (`#id`) names a contained resource of the root resource.
    /// A bare `#` (a contained resource pointing at its container) is accepted inside a
    /// contained resource.
    fn check_local_reference(&self, object: &Map<String, Value>, path: &str) -> Result<(), ValidationError> {
        let Some(local) = str_of(object, "reference").and_then(|r| r.strip_prefix('#')) else {
            return Ok(());
        };
        let found = if local.is_empty() {
            self.container.inside_contained
        } else {
            self.container.contained_ids.contains(&local)
        };
        if found {
            Ok(())
        } else {
            Err(invariant_error(
                &format!("{path}.reference"),
                "ref-1",
                "a local reference must name a contained resource",
            ))
        }
    }
}

/// `integer`, `positiveInt`, `unsignedInt`: the JSON number text must be a 32-bit whole
/// number as FHIR writes it (no fraction, exponent or `-0`, which JSON schema's "integer"
/// lets through).
fn check_number(text: &str, ty: &str, path: &str) -> Result<(), ValidationError> {
    let minimum: i64 = match ty {
        "integer" => -2_147_483_648,
        "unsignedInt" => 0,
        "positiveInt" => 1,
        _ => return Ok(()),
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    let in_range = canonical
        && text
            .parse::<i64>()
            .is_ok_and(|n| (minimum..=2_147_483_647).contains(&n));
    if in_range {
        Ok(())
    } else {
        Err(ValidationError::new(
            IssueType::Value,
            path,
            format!(
                "invalid value for FHIR {ty}: a whole number from {minimum} to 2147483647, without fraction or exponent"
            ),
        ))
    }
}

fn check_string(text: &str, ty: &str, path: &str) -> Result<(), ValidationError> {
    match ty {
        "date" | "dateTime" | "instant" if !real_day(text) => Err(ValidationError::new(
            IssueType::Value,
            path,
            format!("invalid value for FHIR {ty}: no such day in the calendar"),
        )),
        "xhtml" => xhtml::check(text).map_err(|e| invariant_error(path, e.key, &e.message)),
        _ => Ok(()),
    }
}

/// Whether the `YYYY-MM-DD` at the start of a date (the schema has checked the pattern) is a
/// day of the proleptic Gregorian calendar. Shorter dates (`YYYY`, `YYYY-MM`) always are.
fn real_day(text: &str) -> bool {
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if text.len() < 10 {
        return true;
    }
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// `dom-3`..`dom-5` for the contained resources of a (non-contained) resource, with the
/// unique, present ids that `#id` references need. (`dom-2` is checked in `validate.rs`
/// before a contained resource is validated.)
pub(crate) fn check_contained(resource: &Map<String, Value>, path: &str) -> Result<(), ValidationError> {
    let Some(Value::Array(contained)) = resource.get("contained") else {
        return Ok(());
    };
    let mut local_refs: Vec<&str> = Vec::new();
    collect_local_refs(resource, &mut local_refs);
    let mut ids: Vec<&str> = Vec::new();
    for (i, item) in contained.iter().enumerate() {
        let Value::Object(c) = item else {
            continue;
        };
        let at = format!("{path}.contained[{i}]");
        let Some(id) = str_of(c, "id") else {
            return Err(invariant_error(
                &format!("{at}.id"),
                "dom-3",
                "a contained resource needs an id, referenced from elsewhere in the resource",
            ));
        };
        if ids.contains(&id) {
            return Err(invariant_error(
                &format!("{at}.id"),
                "dom-3",
                "contained resources must have distinct ids",
            ));
        }
        ids.push(id);
        let referenced = local_refs
            .iter()
            .any(|r| r.strip_prefix('#') == Some(id))
            // A contained resource that refers to its container (`#`) needs no reference.
            || {
                let mut own = Vec::new();
                collect_local_refs(c, &mut own);
                own.contains(&"#")
            };
        if !referenced {
            return Err(invariant_error(
                &format!("{at}.id"),
                "dom-3",
                "a contained resource must be referenced from elsewhere in the resource",
            ));
        }
        let meta = c.get("meta").and_then(Value::as_object);
        if meta.is_some_and(|m| has(m, "versionId") || has(m, "lastUpdated")) {
            return Err(invariant_error(
                &format!("{at}.meta"),
                "dom-4",
                "a contained resource must not have meta.versionId or meta.lastUpdated",
            ));
        }
        if meta.is_some_and(|m| m.contains_key("security")) {
            return Err(invariant_error(
                &format!("{at}.meta.security"),
                "dom-5",
                "a contained resource must not have a security label",
            ));
        }
    }
    Ok(())
}

/// Every string starting with `#` anywhere below `value` (references, canonicals, uris, urls):
/// a superset of what dom-3 counts, so dom-3 never refuses a resource the official rule
/// accepts.
fn collect_local_refs<'a>(object: &'a Map<String, Value>, out: &mut Vec<&'a str>) {
    fn visit<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::String(s) if s.starts_with('#') => out.push(s),
            Value::Array(items) => items.iter().for_each(|v| visit(v, out)),
            Value::Object(o) => o.values().for_each(|v| visit(v, out)),
            _ => {}
        }
    }
    object.values().for_each(|v| visit(v, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invariant_context_is_a_schema_definition() {
        let t = types();
        for invariant in INVARIANTS {
            assert!(
                t.definitions.contains_key(invariant.context),
                "{} on {}",
                invariant.key,
                invariant.context
            );
        }
    }

    #[test]
    fn choice_elements_found() {
        let t = types();
        let choice = |d: &str, p: &str| t.definitions.get(d).and_then(|m| m.get(p)).and_then(|p| p.choice);
        assert_eq!(choice("Patient", "deceasedBoolean"), Some("deceased"));
        assert_eq!(choice("Patient", "deceasedDateTime"), Some("deceased"));
        assert_eq!(choice("Patient", "multipleBirthInteger"), Some("multipleBirth"));
        assert_eq!(choice("Observation", "valueCodeableConcept"), Some("value"));
        assert_eq!(choice("Observation", "effectiveDateTime"), Some("effective"));
        assert_eq!(choice("Observation_Component", "valueQuantity"), Some("value"));
        assert_eq!(choice("Extension", "valueString"), Some("value"));
        assert_eq!(choice("Condition", "abatementAge"), Some("abatement"));
        // Not choices: separate elements whose names end in a type name.
        assert_eq!(choice("Patient", "birthDate"), None);
        assert_eq!(choice("Encounter", "reasonCode"), None);
        assert_eq!(choice("Encounter", "reasonReference"), None);
        assert_eq!(choice("Appointment", "reasonCode"), None);
        assert_eq!(choice("Observation", "code"), None);
        let groups: usize = t
            .definitions
            .values()
            .map(|m| {
                let mut g: Vec<_> = m.values().filter_map(|p| p.choice).collect();
                g.sort_unstable();
                g.dedup();
                g.len()
            })
            .sum();
        // 186 choice elements in the R4 schema's definitions (StructureDefinitions count
        // nested backbone elements the same way).
        assert_eq!(groups, 186);
    }

    #[test]
    fn integers() {
        for ok in ["0", "1", "-1", "2147483647", "-2147483648", "42"] {
            assert!(check_number(ok, "integer", "x").is_ok(), "{ok}");
        }
        for bad in [
            "2147483648",
            "-2147483649",
            "1e999",
            "1E2",
            "1.0",
            "-0",
            "01",
            "1.5",
            "99999999999999999999",
        ] {
            let e = check_number(bad, "integer", "x").expect_err(bad);
            assert!(e.message.contains("FHIR integer"), "{bad}");
        }
        assert!(check_number("0", "positiveInt", "x").is_err());
        assert!(check_number("0", "unsignedInt", "x").is_ok());
        assert!(check_number("-1", "unsignedInt", "x").is_err());
        assert!(check_number("1.0", "decimal", "x").is_ok());
        assert!(check_number("1e999", "decimal", "x").is_ok());
    }

    #[test]
    fn calendar_days() {
        for ok in [
            "2020",
            "2020-02",
            "2020-02-29",
            "2000-02-29",
            "1999-12-31",
            "0001-01-01",
            "9999-12-31",
            "2020-02-29T23:59:59Z",
            "2021-04-30T00:00:00.000+14:00",
            "2024-02-29T12:00:00-12:00",
        ] {
            assert!(real_day(ok), "{ok}");
        }
        for bad in [
            "2020-02-30",
            "2021-02-29",
            "1900-02-29",
            "2100-02-29",
            "2020-04-31",
            "2020-06-31",
            "2020-09-31",
            "2020-11-31",
            "2020-01-32",
            "2020-01-00",
            "2020-13-01",
            "2020-00-10",
            "2020-02-30T10:00:00Z",
            "2019-02-29T00:00:00.000+01:00",
        ] {
            assert!(!real_day(bad), "{bad}");
        }
    }

    #[test]
    fn negative_decimals() {
        let n = |t: &str| serde_json::from_str::<Value>(t).unwrap();
        assert!(is_negative(&n("-1")));
        assert!(is_negative(&n("-0.001")));
        assert!(is_negative(&n("-1e-5")));
        assert!(!is_negative(&n("-0")));
        assert!(!is_negative(&n("-0.0")));
        assert!(!is_negative(&n("-0e5")));
        assert!(!is_negative(&n("3")));
    }
}
