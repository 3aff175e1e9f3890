//! Request ids (SPEC §2 step 2): accept a well-formed `X-Request-ID`, otherwise make one;
//! echo it on the response and make it available to error bodies and log lines. Every request
//! also gets a server-made id of its own (a fresh UUID), which the audit record carries beside
//! the echoed one: a client reusing an id cannot make two records look like one.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

#[derive(Clone)]
struct Ids {
    /// The client's well-formed `X-Request-ID`, else `server`.
    echoed: String,
    server: String,
}

tokio::task_local! {
    static CURRENT: Ids;
}

/// The (echoed) id of the request being served by the current future, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|i| i.echoed.clone()).ok()
}

/// The server-made id of the request being served: unique whatever the client sent.
pub fn server_id() -> Option<String> {
    CURRENT.try_with(|i| i.server.clone()).ok()
}

/// `fut` with the current request's ids, for work spawned off the request's own task (a
/// write that must run to its end whatever happens to the connection).
pub fn carried<F: std::future::Future>(fut: F) -> impl std::future::Future<Output = F::Output> {
    let ids = CURRENT.try_with(Ids::clone).ok();
    async move {
        match ids {
            Some(ids) => CURRENT.scope(ids, fut).await,
            None => fut.await,
        }
    }
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
    let server = uuid::Uuid::new_v4().to_string();
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map_or_else(|| server.clone(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let ids = Ids {
        echoed: id.clone(),
        server,
    };
    let mut resp = CURRENT.scope(ids, next.run(req)).await;
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
