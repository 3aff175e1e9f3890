//! Response hardening and the operational access log (SPEC SEC-4, AU-8, SEC-3).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ward_fhir::outcome::IssueType;

use crate::error::ApiError;
use crate::request_id;

/// Headers every response carries, overriding anything a handler set.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-frame-options", "DENY"),
];

/// Sets [`SECURITY_HEADERS`]; a sign-in page (marked with `pages::PageCsp`) gets its own
/// policy instead of the API's, which forbids forms.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let page_policy = resp.extensions_mut().remove::<crate::pages::PageCsp>();
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    if let Some(policy) = page_policy {
        headers.insert(axum::http::header::CONTENT_SECURITY_POLICY, policy.0);
    }
    resp
}

/// A client-chosen string as it may appear in a log line or record: at most `max`
/// characters, control characters replaced, a cut marked with `…`.
pub fn bounded(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Longest method name written to the log (extension methods are any-length tokens).
const LOGGED_METHOD_CHARS: usize = 16;

/// One log line per request: request id, method (bounded), route template (never the query
/// string, which can carry PHI), status and latency.
pub async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = bounded(req.method().as_str(), LOGGED_METHOD_CHARS);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".into());
    let resp = next.run(req).await;
    tracing::info!(
        request_id = request_id::current().as_deref().unwrap_or("-"),
        %method,
        route,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// A handler panic becomes a generic 500; the panic payload (which might hold data) is
/// neither logged nor sent.
pub fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(
        request_id = request_id::current().as_deref().unwrap_or("-"),
        "handler panicked"
    );
    ApiError::internal("handler panicked").into_response()
}

pub async fn not_found_fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, IssueType::NotFound, "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueType::NotSupported,
        "method not allowed on this endpoint",
    )
}
