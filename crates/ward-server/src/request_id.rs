//! Request ids (SPEC §2 step 2): accept a well-formed `X-Request-ID`, otherwise make one;
//! echo it on the response and make it available to error bodies and log lines.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served by the current future, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A client-chosen id is kept only if it is short and plain, so it cannot smuggle PHI-sized
/// text or control characters into logs.
fn well_formed(v: &str) -> bool {
    (8..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The request id of a request, available as an extension to handlers.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = CURRENT.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn well_formed_ids() {
        assert!(super::well_formed("abc-123_DEF.456"));
        assert!(!super::well_formed("short"));
        assert!(!super::well_formed("has space in it"));
        assert!(!super::well_formed(&"x".repeat(65)));
    }
}
