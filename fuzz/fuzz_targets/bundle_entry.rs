//! A transaction or batch Bundle as the Bundle processor parses it before authorization and
//! the store: strict JSON, kind, entry cap and shapes, each entry's method, URL, `ifMatch`,
//! `ifNoneExist` and resource type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_fhir::bundle::{EntryRequest, parse_bundle};
use ward_fhir::json::Limits;

const BASE: &str = "https://ward.example/fhir";

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_bundle(data, &Limits::default(), 100, BASE) else {
        return;
    };
    assert!(parsed.entries.len() <= 100);
    for entry in parsed.entries {
        match entry.request {
            Ok(
                EntryRequest::Create { rtype, resource, .. } | EntryRequest::Update { rtype, resource, .. },
            ) => {
                assert_eq!(
                    resource.get("resourceType").and_then(|t| t.as_str()),
                    Some(rtype.as_str())
                );
            }
            Ok(EntryRequest::Read { version, .. }) => assert!(version.is_none_or(|v| v >= 1)),
            Ok(EntryRequest::Delete { if_match, .. }) => assert!(if_match.is_none_or(|v| v >= 1)),
            Err(_) => {}
        }
    }
});
