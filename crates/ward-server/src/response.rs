//! Response bodies within bounded memory (SPEC P-4).
//!
//! Bundles of stored resources are serialized with each resource's verified bytes as they are
//! (no parsed tree, no copy per entry), and a large body reaches the connection in chunks: a
//! client that stops taking them (a zero HTTP/2 flow-control window, an unread socket) holds
//! at most one chunk in the channel and one in the connection's send buffer per response, and
//! after `server.response_stall_secs` without progress the rest is freed and the response
//! fails, which resets its HTTP/2 stream (or closes an HTTP/1.1 connection). All large bodies
//! not yet handed over share one budget (`server.max_pending_response_bytes`): past it, a new
//! large response is refused with 503 instead of being held.

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use ward_fhir::outcome::IssueType;
use ward_store::StoredJson;

use crate::error::{ApiError, FHIR_JSON};

/// Bytes handed to the connection at a time (and the HTTP/2 send buffer per stream).
pub(crate) const CHUNK: usize = 64 * 1024;

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
        Self::raw(&json.json)
    }

    /// JSON bytes (stored, or serialized once), checked to be one JSON value.
    pub(crate) fn raw(json: &'a [u8]) -> Result<Self, ApiError> {
        serde_json::from_slice::<&RawValue>(json)
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

/// What large response bodies may hold, shared by all connections.
#[derive(Clone)]
pub struct Pending {
    stall: Duration,
    /// Permits in KiB of bodies not yet handed over.
    budget: Arc<Semaphore>,
}

impl Pending {
    pub fn new(stall: Duration, max_bytes: usize) -> Pending {
        let kib = (max_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        Pending {
            stall,
            budget: Arc::new(Semaphore::new(kib)),
        }
    }
}

/// Middleware: a response body larger than one chunk takes its size from the budget (503 if
/// the budget is spent) and is handed over chunk by chunk, abandoned after the stall timeout.
pub async fn chunked(State(pending): State<Pending>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let size = match resp.body().size_hint().exact() {
        Some(n) if n > CHUNK as u64 => n,
        _ => return resp,
    };
    let kib = u32::try_from(size.div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(permit) = pending.budget.clone().try_acquire_many_owned(kib) else {
        // The body is dropped here, before anything is sent.
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            "too many large responses are waiting for their clients; retry later",
        )
        .into_response();
    };
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    Response::from_parts(parts, Body::new(Chunked::start(bytes, pending.stall, permit)))
}

/// A body fed by a task that copies one chunk at a time into a one-slot channel. The copies
/// do not share the original buffer, so abandoning the response frees all of it.
struct Chunked {
    rx: mpsc::Receiver<Bytes>,
    stalled: Arc<AtomicBool>,
    len: u64,
}

impl Chunked {
    /// `permit` is released when the last chunk is handed over or the response abandoned.
    fn start(bytes: Bytes, stall: Duration, permit: OwnedSemaphorePermit) -> Chunked {
        let (tx, rx) = mpsc::channel(1);
        let stalled = Arc::new(AtomicBool::new(false));
        let len = bytes.len() as u64;
        let flag = stalled.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
