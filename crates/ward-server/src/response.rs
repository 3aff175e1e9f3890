//! Response bodies within bounded memory (SPEC P-4).
//!
//! Bundles of stored resources are serialized with each resource's verified bytes as they are
//! (no parsed tree, no copy per entry), and a large body reaches the connection in chunks: a
//! client that stops taking them (a zero HTTP/2 flow-control window, an unread socket) holds
//! at most one chunk in the channel and one in the connection's send buffer per response, and
//! after `server.response_stall_secs` without progress the rest is freed and the response
//! fails, which resets its HTTP/2 stream (or closes an HTTP/1.1 connection).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Frame, SizeHint};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use ward_store::StoredJson;

use crate::error::{ApiError, FHIR_JSON};

/// Bytes handed to the connection at a time.
const CHUNK: usize = 64 * 1024;

/// A resource inside a Bundle entry: its stored bytes as they are, or a value built for this
/// response (a `_summary`/`_elements` subset, an OperationOutcome).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Resource<'a> {
    Stored(&'a RawValue),
    Built(Value),
}

impl<'a> Resource<'a> {
    /// The stored JSON, checked to be one JSON value (without building it).
    pub(crate) fn stored(json: &'a StoredJson) -> Result<Self, ApiError> {
        serde_json::from_slice::<&RawValue>(&json.json)
            .map(Resource::Stored)
            .map_err(|_| ApiError::internal("stored resource is not valid JSON"))
    }
}

/// 200 with `bundle` serialized once into a buffer sized for `hint` bytes of resources.
pub(crate) fn bundle_response(bundle: &impl Serialize, hint: usize) -> Response {
    let mut body = Vec::with_capacity(hint.saturating_add(4096));
    if serde_json::to_writer(&mut body, bundle).is_err() {
        return ApiError::internal("bundle serialization failed").into_response();
    }
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, FHIR_JSON)],
        body,
    )
        .into_response()
}

/// Middleware: a response body larger than one chunk is handed over chunk by chunk, and
/// abandoned after `stall` without the client taking one.
pub async fn chunked(State(stall): State<Duration>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.body().size_hint().exact().is_none_or(|n| n <= CHUNK as u64) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    Response::from_parts(parts, Body::new(Chunked::start(bytes, stall)))
}

/// A body fed by a task that copies one chunk at a time into a one-slot channel. The copies
/// do not share the original buffer, so abandoning the response frees all of it.
struct Chunked {
    rx: mpsc::Receiver<Bytes>,
    stalled: Arc<AtomicBool>,
    len: u64,
}

impl Chunked {
    fn start(bytes: Bytes, stall: Duration) -> Chunked {
        let (tx, rx) = mpsc::channel(1);
        let stalled = Arc::new(AtomicBool::new(false));
        let len = bytes.len() as u64;
        let flag = stalled.clone();
        tokio::spawn(async move {
            for chunk in bytes.chunks(CHUNK) {
                match tokio::time::timeout(stall, tx.send(Bytes::copy_from_slice(chunk))).await {
                    Ok(Ok(())) => {}
                    // The response was dropped (the client went away).
                    Ok(Err(_)) => return,
                    Err(_) => {
                        flag.store(true, Ordering::Release);
                        tracing::warn!(
                            "response abandoned: the client took no data within the stall timeout"
                        );
                        return;
                    }
                }
            }
        });
        Chunked { rx, stalled, len }
    }
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(None) if self.stalled.load(Ordering::Acquire) => Poll::Ready(Some(Err(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "response stalled"),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
