//! Search-query parsing as a GET query string or a POST form body: the first byte picks the
//! resource type, the rest is the query. Parsed criteria are then matched against a resource,
//! as the post-filter does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_fhir::search::SearchQuery;
use ward_fhir::search::query::ParseOptions;

const TYPES: [&str; 8] = [
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "AuditEvent",
    "Group",
    "DocumentReference",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, query)) = data.split_first() else {
        return;
    };
    let rtype = TYPES[usize::from(pick) % TYPES.len()];
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    for lenient in [false, true] {
        let opts = ParseOptions {
            lenient,
            ..ParseOptions::default()
        };
        if let Ok(q) = SearchQuery::parse(rtype, &pairs, &opts) {
            let resource = serde_json::json!({
                "resourceType": rtype,
                "id": "x",
                "birthDate": "1970-01-01",
                "effectiveDateTime": "9999-12-31T23:59:59+14:00",
                "name": [{"family": "Example", "given": ["Synthetic"]}],
            });
            for c in &q.criteria {
                let _ = ward_fhir::search::matches(&resource, c);
            }
        }
    }
});
