//! Deterministic synthetic data for demos, tests and benchmarks.
//!
//! Same seed, same output, byte for byte: a tiny built-in PRNG (splitmix64), fixed lists, no
//! clock. Every resource is tagged `urn:ward:synthetic|synthetic`; phone numbers are in the
//! fictional 555-01xx range and email addresses are at `example.org`.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    reason = "generates Ward's own test data from constants and a seeded counter: no client input"
)]

use serde_json::{Number, Value, json};

use crate::index::normalize_text;

/// `meta.tag` system and code marking synthetic resources.
pub const SYNTHETIC_TAG_SYSTEM: &str = "urn:ward:synthetic";
pub const SYNTHETIC_TAG_CODE: &str = "synthetic";
/// Identifier system of synthetic medical record numbers.
pub const MRN_SYSTEM: &str = "urn:ward:synthetic:mrn";

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, fully deterministic.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `lo..=hi` (modulo bias is irrelevant here).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    /// A random (version 4 format) UUID.
    fn uuid(&mut self) -> String {
        let hi = (self.next() & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let lo = (self.next() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }

    fn date(&mut self, from_year: u64, to_year: u64) -> String {
        format!(
            "{:04}-{:02}-{:02}",
            self.range(from_year, to_year),
            self.range(1, 12),
            self.range(1, 28)
        )
    }

    fn date_time(&mut self, from_year: u64, to_year: u64) -> String {
        let date = self.date(from_year, to_year);
        format!("{date}T{:02}:{:02}:00Z", self.range(6, 19), self.range(0, 59))
    }
}

const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "García",
    "Nguyen",
    "Müller",
    "O'Brien",
    "Kowalski",
    "Dubois",
    "Okafor",
    "Tanaka",
    "Haddad",
    "Larsen",
    "Rossi",
    "Novák",
    "Fernández",
    "Patel",
];
const GIVEN_FEMALE: &[&str] = &[
    "Mary", "Zoë", "Renée", "Aisha", "Ingrid", "Mei", "Lucía", "Hannah", "Olivia", "Amara",
];
const GIVEN_MALE: &[&str] = &[
    "James", "José", "Søren", "Łukasz", "Ahmed", "Kenji", "Émile", "Noah", "David", "Tomás",
];
const STREETS: &[&str] = &[
    "Maple Street",
    "Oak Avenue",
    "Cedar Lane",
    "Elm Drive",
    "Birch Road",
    "Willow Way",
    "Pine Court",
    "Aspen Boulevard",
];
/// (city, state, ZIP prefix): synthetic addresses, not real households.
const CITIES: &[(&str, &str, &str)] = &[
    ("Springfield", "IL", "627"),
    ("Riverton", "WY", "825"),
    ("Fairview", "TN", "370"),
    ("Greenville", "SC", "296"),
    ("Madison", "WI", "537"),
    ("Salem", "OR", "973"),
];

struct ObservationTemplate {
    loinc: &'static str,
    display: &'static str,
    category: &'static str,
    unit: &'static str,
    ucum: &'static str,
    /// Range in units of 10^-decimals.
    min: u64,
    max: u64,
    decimals: u32,
}

const OBSERVATIONS: &[ObservationTemplate] = &[
    ObservationTemplate {
        loinc: "8867-4",
        display: "Heart rate",
        category: "vital-signs",
        unit: "beats/minute",
        ucum: "/min",
        min: 52,
        max: 110,
        decimals: 0,
    },
    ObservationTemplate {
        loinc: "9279-1",
        display: "Respiratory rate",
        category: "vital-signs",
        unit: "breaths/minute",
        ucum: "/min",
        min: 12,
        max: 22,
        decimals: 0,
    },
    ObservationTemplate {
        loinc: "8310-5",
        display: "Body temperature",
        category: "vital-signs",
        unit: "Cel",
        ucum: "Cel",
        min: 360,
        max: 385,
        decimals: 1,
    },
    ObservationTemplate {
        loinc: "29463-7",
        display: "Body weight",
        category: "vital-signs",
        unit: "kg",
        ucum: "kg",
        min: 450,
        max: 1200,
        decimals: 1,
    },
    ObservationTemplate {
        loinc: "8302-2",
        display: "Body height",
        category: "vital-signs",
        unit: "cm",
        ucum: "cm",
        min: 1500,
        max: 1950,
        decimals: 1,
    },
    ObservationTemplate {
        loinc: "2339-0",
        display: "Glucose [Mass/volume] in Blood",
        category: "laboratory",
        unit: "mg/dL",
        ucum: "mg/dL",
        min: 70,
        max: 180,
        decimals: 0,
    },
    ObservationTemplate {
        loinc: "4548-4",
        display: "Hemoglobin A1c/Hemoglobin.total in Blood",
        category: "laboratory",
        unit: "%",
        ucum: "%",
        min: 45,
        max: 95,
        decimals: 1,
    },
    ObservationTemplate {
        loinc: "718-7",
        display: "Hemoglobin [Mass/volume] in Blood",
        category: "laboratory",
        unit: "g/dL",
        ucum: "g/dL",
        min: 110,
        max: 175,
        decimals: 1,
    },
    ObservationTemplate {
        loinc: "2160-0",
        display: "Creatinine [Mass/volume] in Serum or Plasma",
        category: "laboratory",
        unit: "mg/dL",
        ucum: "mg/dL",
        min: 60,
        max: 130,
        decimals: 2,
    },
];

/// (SNOMED CT code, display)
const CONDITIONS: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder, systemic arterial"),
    ("195967001", "Asthma"),
    ("55822004", "Hyperlipidemia"),
    ("271737000", "Anemia"),
    ("40055000", "Chronic sinusitis"),
    ("35489007", "Depressive disorder"),
    ("69896004", "Rheumatoid arthritis"),
];

fn meta() -> Value {
    json!({ "tag": [{
        "system": SYNTHETIC_TAG_SYSTEM,
        "code": SYNTHETIC_TAG_CODE,
        "display": "Synthetic test data"
    }]})
}

/// A decimal with exactly `decimals` fraction digits (e.g. `0.90`), kept as written.
fn decimal(scaled: u64, decimals: u32) -> Value {
    let text = if decimals == 0 {
        scaled.to_string()
    } else {
        let factor = 10_u64.pow(decimals);
        format!(
            "{}.{:0width$}",
            scaled / factor,
            scaled % factor,
            width = decimals as usize
        )
    };
    // The text is a valid JSON number by construction.
    text.parse::<Number>().map(Value::Number).unwrap_or(Value::Null)
}

fn ascii_handle(s: &str) -> String {
    normalize_text(s)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// Generates `patients` synthetic patients, each followed by its 2–4 Observations and 1–2
/// Conditions. Deterministic for a given `seed`.
pub fn generate(seed: u64, patients: usize) -> Vec<Value> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(patients * 6);
    for n in 0..patients {
        let patient_id = rng.uuid();
        let (gender, given_names) = match rng.range(0, 99) {
            0..=47 => ("female", GIVEN_FEMALE),
            48..=95 => ("male", GIVEN_MALE),
            96..=97 => ("other", GIVEN_FEMALE),
            _ => ("unknown", GIVEN_MALE),
        };
        let family = *rng.pick(FAMILY);
        let given = *rng.pick(given_names);
        let middle = (rng.range(0, 2) == 0).then(|| *rng.pick(given_names));
        let birth_year = rng.range(1935, 2015);
        let birth_date = format!("{birth_year:04}-{:02}-{:02}", rng.range(1, 12), rng.range(1, 28));
        let (city, state, zip) = *rng.pick(CITIES);
        let street = *rng.pick(STREETS);
        let house = rng.range(1, 9999);
        let zip = format!("{zip}{:02}", rng.range(0, 99));
        let phone = format!("202-555-01{:02}", rng.range(0, 99));
        let email = format!(
            "{}.{}{}@example.org",
            ascii_handle(given),
            ascii_handle(family),
            n + 1
        );
        let mrn = format!("MRN-{:010}", rng.range(0, 9_999_999_999));

        let mut given_json = vec![Value::from(given)];
        if let Some(middle) = middle.filter(|m| *m != given) {
            given_json.push(middle.into());
        }
        out.push(json!({
            "resourceType": "Patient",
            "id": patient_id,
            "meta": meta(),
            "identifier": [{
                "use": "usual",
                "type": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "MR",
                    "display": "Medical record number"
                }]},
                "system": MRN_SYSTEM,
                "value": mrn
            }],
            "active": true,
            "name": [{ "use": "official", "family": family, "given": given_json }],
            "telecom": [
                { "system": "phone", "value": phone, "use": "home" },
                { "system": "email", "value": email }
            ],
            "gender": gender,
            "birthDate": birth_date,
            "address": [{
                "use": "home",
                "line": [format!("{house} {street}")],
                "city": city,
                "state": state,
                "postalCode": zip,
                "country": "US"
            }]
        }));

        let subject = json!({ "reference": format!("Patient/{patient_id}") });

        // 2–4 distinct observation kinds.
        let count = rng.range(2, 4) as usize;
        let mut kinds: Vec<usize> = Vec::with_capacity(count);
        while kinds.len() < count {
            let k = rng.range(0, OBSERVATIONS.len() as u64 - 1) as usize;
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        for k in kinds {
            let t = &OBSERVATIONS[k];
            let category_display = if t.category == "laboratory" {
                "Laboratory"
            } else {
                "Vital Signs"
            };
            out.push(json!({
                "resourceType": "Observation",
                "id": rng.uuid(),
                "meta": meta(),
                "status": "final",
                "category": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": t.category,
                    "display": category_display
                }]}],
                "code": {
                    "coding": [{ "system": "http://loinc.org", "code": t.loinc, "display": t.display }],
                    "text": t.display
                },
                "subject": subject,
                "effectiveDateTime": rng.date_time(2020, 2025),
                "valueQuantity": {
                    "value": decimal(rng.range(t.min, t.max), t.decimals),
                    "unit": t.unit,
                    "system": "http://unitsofmeasure.org",
                    "code": t.ucum
                }
            }));
        }

        // 1–2 distinct conditions.
        let first = rng.range(0, CONDITIONS.len() as u64 - 1) as usize;
        let mut conditions = vec![first];
        if rng.range(0, 1) == 1 {
            let second = (first + 1 + rng.range(0, CONDITIONS.len() as u64 - 2) as usize) % CONDITIONS.len();
            conditions.push(second);
        }
        for c in conditions {
            let (code, display) = CONDITIONS[c];
            let onset_year = rng.range(birth_year + 1, 2024.max(birth_year + 1));
            let onset = rng.date(onset_year, onset_year);
            let resolved = rng.range(0, 4) == 0;
            let mut condition = json!({
                "resourceType": "Condition",
                "id": rng.uuid(),
                "meta": meta(),
                "clinicalStatus": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": if resolved { "resolved" } else { "active" }
                }]},
                "verificationStatus": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed"
                }]},
                "category": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item",
                    "display": "Problem List Item"
                }]}],
                "code": {
                    "coding": [{ "system": "http://snomed.info/sct", "code": code, "display": display }],
                    "text": display
                },
                "subject": subject,
                "onsetDateTime": onset
            });
            if resolved && let Some(object) = condition.as_object_mut() {
                let year = rng.range(onset_year + 1, onset_year + 3);
                object.insert("abatementDateTime".into(), rng.date(year, year).into());
            }
            out.push(condition);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Validator;

    #[test]
    fn deterministic() {
        let a = serde_json::to_string(&generate(42, 20)).unwrap();
        let b = serde_json::to_string(&generate(42, 20)).unwrap();
        assert_eq!(a, b);
        let c = serde_json::to_string(&generate(43, 20)).unwrap();
        assert_ne!(a, c);
        assert!(generate(1, 0).is_empty());
    }

    #[test]
    fn shape_and_validity() {
        let validator = Validator::new();
        let resources = generate(7, 25);
        let mut patients = 0;
        let mut current_patient = String::new();
        let mut ids = std::collections::HashSet::new();
        for r in &resources {
            let rt = r["resourceType"].as_str().unwrap();
            validator
                .validate(r, rt)
                .unwrap_or_else(|e| panic!("{rt} invalid: {e}"));
            let id = r["id"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "duplicate id");
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4");
            assert_eq!(r["meta"]["tag"][0]["system"], SYNTHETIC_TAG_SYSTEM);
            assert_eq!(r["meta"]["tag"][0]["code"], SYNTHETIC_TAG_CODE);
            match rt {
                "Patient" => {
                    patients += 1;
                    current_patient = format!("Patient/{id}");
                    assert_eq!(r["identifier"][0]["system"], MRN_SYSTEM);
                    let phone = r["telecom"][0]["value"].as_str().unwrap();
                    assert!(phone.starts_with("202-555-01"));
                    let email = r["telecom"][1]["value"].as_str().unwrap();
                    assert!(email.ends_with("@example.org") && email.is_ascii());
                }
                "Observation" | "Condition" => {
                    assert_eq!(r["subject"]["reference"], current_patient.as_str());
                }
                other => panic!("unexpected type {other}"),
            }
        }
        assert_eq!(patients, 25);
        // Per-patient counts: 2-4 observations, 1-2 conditions.
        let mut i = 0;
        while i < resources.len() {
            assert_eq!(resources[i]["resourceType"], "Patient");
            let mut j = i + 1;
            let (mut obs, mut cond) = (0, 0);
            while j < resources.len() && resources[j]["resourceType"] != "Patient" {
                match resources[j]["resourceType"].as_str() {
                    Some("Observation") => obs += 1,
                    _ => cond += 1,
                }
                j += 1;
            }
            assert!((2..=4).contains(&obs), "{obs} observations");
            assert!((1..=2).contains(&cond), "{cond} conditions");
            i = j;
        }
    }

    #[test]
    fn decimals_keep_their_text() {
        assert_eq!(serde_json::to_string(&decimal(90, 2)).unwrap(), "0.90");
        assert_eq!(serde_json::to_string(&decimal(365, 1)).unwrap(), "36.5");
        assert_eq!(serde_json::to_string(&decimal(72, 0)).unwrap(), "72");
    }
}
