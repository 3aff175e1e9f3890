//! FHIR date, dateTime and instant values as search values and as indexed values: prefix split,
//! range computation, widening, year extraction and range comparison must be total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_fhir::search::date::{Prefix, parse_range, range_matches, widen, year};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (left, right) = text.split_once('|').unwrap_or((text, "2020-01-01"));
    let (prefix, value) = Prefix::split(left);
    let _ = year(value);
    if let (Some(q), Some(v)) = (parse_range(value), parse_range(right)) {
        let _ = q.years();
        let _ = range_matches(prefix, q, v);
        let _ = range_matches(prefix, widen(q), v);
    }
});
