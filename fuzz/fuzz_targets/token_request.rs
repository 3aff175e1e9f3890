//! The token endpoint's request parsing: content type, `Authorization` header and form body.
//! The input is split on its first two newlines into those three parts (a missing second
//! part means no `Authorization` header). A `private_key_jwt` assertion that parses also goes
//! through the claims checks.
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
    // A client assertion that parses is checked too (claims rules, pure).
    if let Ok(req) = ward_oauth::parse_token_request(content_type, authorization, body)
        && let Some(a) = req.client_assertion
    {
        let _ = a.check_claims(&req.client_id, "https://ward.test/oauth2/token", 1_700_000_000);
        let _ = a.remember_until();
    }
});
