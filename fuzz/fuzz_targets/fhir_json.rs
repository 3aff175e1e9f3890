//! A request body as the write path sees it: strict parse, schema and rule validation, then
//! search-index extraction and the patient compartment of whatever was accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_fhir::json::{Limits, parse_strict};
use ward_fhir::validate::Validator;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_strict(data, &Limits::default()) else {
        return;
    };
    let Some(rtype) = value.get("resourceType").and_then(|t| t.as_str()) else {
        return;
    };
    if !ward_fhir::types::is_resource_type(rtype) {
        return;
    }
    let rtype = rtype.to_owned();
    if Validator::new().validate(&value, &rtype).is_ok() {
        let _ = ward_fhir::search::extract(&value);
        let _ = ward_fhir::search::patient_compartment(&value);
    }
});
