//! HTTP framing checks hyper leaves to the application (SPEC SEC-1, §2 step 3).
//!
//! hyper already refuses (400, connection closed) a `Transfer-Encoding` whose last coding
//! is not `chunked`, `Transfer-Encoding` on HTTP/1.0, an invalid or repeated differing
//! `Content-Length`, and malformed heads; a malformed chunk is an error while the body is
//! read ([`read_body`] makes it a 400). What it accepts and this layer refuses:
//! `Content-Length` together with `Transfer-Encoding` (hyper lets the latter win and closes
//! the connection afterwards, but serves the request; a proxy in front might have read the
//! length: request smuggling; hyper drops the length, so `conn::HeadScan` reports it), a `Transfer-Encoding` other than exactly `chunked`
//! (`gzip, chunked`), more than one `Host`, an absolute-form target for another authority,
//! and content-coded request bodies (415: Ward never decodes them, and must not store them
//! as if they were plain).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ward_fhir::outcome::IssueType;

use crate::conn::LengthAndChunked;
use crate::error::ApiError;
use crate::state::AppState;

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Longer than the limit (413).
    TooLarge,
    /// Broken framing, such as a malformed chunk size, or the client went away (400).
    Malformed,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooCostly,
                "request body exceeds the configured limit",
            ),
            BodyError::Malformed => {
                ApiError::bad_request(IssueType::Structure, "malformed request body framing")
            }
        }
    }
}

/// Reads a whole body of at most `limit` bytes, telling an over-long body from a broken one.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            BodyError::TooLarge
        } else {
            BodyError::Malformed
        }
    })
}

/// The authority (`host[:port]`) of `server.public_url`, lower-cased.
fn own_authority(public_url: &str) -> String {
    public_url
        .strip_prefix("https://")
        .unwrap_or(public_url)
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// What is wrong with the framing of a request, if anything.
fn framing_error(
    version: Version,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    own: &str,
    length_and_chunked: bool,
) -> Option<&'static str> {
    let te: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    // hyper removes Content-Length when Transfer-Encoding is present; `conn::HeadScan` saw it.
    if length_and_chunked || (!te.is_empty() && headers.contains_key(header::CONTENT_LENGTH)) {
        return Some("Content-Length and Transfer-Encoding together are refused");
    }
    if !te.is_empty() {
        let plain_chunked = te.len() == 1
            && te
                .first()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !plain_chunked {
            return Some("only Transfer-Encoding: chunked is accepted");
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host header");
    }
    if let Some(authority) = uri.authority() {
        let authority = authority.as_str().to_ascii_lowercase();
        // HTTP/1.x absolute-form: only for this server. HTTP/2 always carries :authority,
        // which a Host header, when sent too, must repeat.
        if version < Version::HTTP_2 && authority != own {
            return Some("the request target names another authority");
        }
        if host.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(authority.as_bytes())) {
            return Some("Host does not match the request target");
        }
    }
    None
}

/// Refuses requests whose framing a proxy and Ward could read differently, and content-coded
/// bodies. A framing refusal closes an HTTP/1.x connection: what follows on it cannot be
/// trusted to start a request.
pub async fn layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let own = own_authority(&st.config.server.public_url);
    let length_and_chunked = req.extensions().get::<LengthAndChunked>().is_some();
    if let Some(reason) = framing_error(req.version(), req.uri(), req.headers(), &own, length_and_chunked) {
        let mut resp = ApiError::bad_request(IssueType::Structure, reason).into_response();
        if req.version() < Version::HTTP_2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return resp;
    }
    let coded = req.headers().get_all(header::CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    });
    if coded {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "content-coded request bodies (Content-Encoding) are not accepted",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(version: Version, target: &str, headers: &[(&str, &str)]) -> Option<&'static str> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        framing_error(version, &target.parse().unwrap(), &h, "ward.test:8443", false)
    }

    #[test]
    fn framing_rules() {
        let h11 = Version::HTTP_11;
        assert_eq!(check(h11, "/fhir/metadata", &[("host", "ward.test:8443")]), None);
        assert_eq!(check(h11, "/x", &[("transfer-encoding", "Chunked")]), None);
        assert!(
            check(
                h11,
                "/x",
                &[("transfer-encoding", "chunked"), ("content-length", "3")]
            )
            .is_some()
        );
        assert!(check(h11, "/x", &[("transfer-encoding", "gzip, chunked")]).is_some());
        assert!(
            check(
                h11,
                "/x",
                &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")]
            )
            .is_some()
        );
        assert!(check(h11, "/x", &[("host", "a"), ("host", "a")]).is_some());
        assert_eq!(check(h11, "https://WARD.test:8443/fhir/metadata", &[]), None);
        assert!(check(h11, "https://evil.test/fhir/metadata", &[]).is_some());
        assert!(
            check(
                h11,
                "https://ward.test:8443/fhir/metadata",
                &[("host", "evil.test")]
            )
            .is_some()
        );
        let h2 = Version::HTTP_2;
        assert_eq!(check(h2, "https://other.name/fhir/metadata", &[]), None);
        assert!(check(h2, "https://other.name/fhir/metadata", &[("host", "evil.test")]).is_some());
    }
}
