//! The token endpoint's request parsing: content type, `Authorization` header and form body.
//! The input is split on its first two newlines into those three parts (a missing second
//! part means no `Authorization` header).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let content_type = parts.next().unwrap_or_default();
    let Ok(content_type) = std::str::from_utf8(content_type) else {
        return;
    };
    let authorization = parts.next().filter(|a| !a.is_empty());
    let body = parts.next().unwrap_or_default();
    let _ = ward_oauth::parse_token_request(content_type, authorization, body);
});
