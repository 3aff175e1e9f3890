//! Connection bounds (SPEC SEC-2, §2 step 3): caps on open connections, globally and per
//! IP address, and what a connection is doing, so idle ones can be closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::sync::Notify;

use crate::ratelimit::ip_key;

/// Open connections, counted against `server.max_connections(_per_ip)`.
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
    closed: Notify,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
            closed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`, or `None` if a cap is reached.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let ip = ip_key(ip);
        let mut open = self.lock();
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= self.max_total || from_ip >= self.max_per_ip {
            return None;
        }
        open.total = open.total.saturating_add(1);
        open.per_ip.insert(ip, from_ip.saturating_add(1));
        Some(ConnGuard {
            limits: self.clone(),
            ip,
        })
    }

    pub fn open_count(&self) -> usize {
        self.lock().total
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection; dropping it frees its place.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
        if open.total == 0 {
            self.limits.closed.notify_waiters();
        }
    }
}

/// What one connection is doing: requests in flight (until their response body is sent),
/// when each last made progress, and when the connection last became idle.
#[derive(Clone)]
pub struct Activity(Arc<ActivityInner>);

struct ActivityInner {
    since: Instant,
    /// How long a response may go without handing over data (`server.response_stall_secs`).
    stall: Duration,
    requests: Mutex<InFlight>,
    /// Milliseconds after `since` when the last request finished; `u64::MAX`: none yet.
    idle_from_ms: AtomicU64,
}

#[derive(Default)]
struct InFlight {
    next_id: u64,
    /// Per request in flight: milliseconds after `since` by which it must make progress.
    due_ms: HashMap<u64, u64>,
}

impl Activity {
    pub fn new(stall: Duration) -> Activity {
        Activity(Arc::new(ActivityInner {
            since: Instant::now(),
            stall,
            requests: Mutex::new(InFlight::default()),
            idle_from_ms: AtomicU64::new(u64::MAX),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.0.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn after_ms(&self, d: Duration) -> u64 {
        self.now_ms()
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// A request starts; it ends when the guard (moved into its response body) drops. Its
    /// handler has the request timeout, then its response the stall timeout, to progress.
    pub fn begin(&self) -> RequestGuard {
        let due = self.after_ms(crate::app::REQUEST_TIMEOUT.saturating_add(self.0.stall));
        let mut r = self.lock();
        let id = r.next_id;
        r.next_id = r.next_id.wrapping_add(1);
        r.due_ms.insert(id, due);
        RequestGuard {
            activity: self.clone(),
            id,
        }
    }

    /// Whether no request has come yet.
    pub fn no_request_yet(&self) -> bool {
        self.0.idle_from_ms.load(Ordering::Acquire) == u64::MAX && self.lock().due_ms.is_empty()
    }

    /// When the connection may be closed if nothing happens before: `first` after the
    /// handshake if no request came, `idle` after the last request; while requests are in
    /// flight, when the first of them is overdue. A response that the client never lets out
    /// (an HTTP/2 stream window kept at zero holds even a small body, which no stall timer
    /// sees) thus costs the whole connection.
    pub fn deadline(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if let Some(due) = self.lock().due_ms.values().min() {
            return self.0.since.checked_add(Duration::from_millis(*due));
        }
        match self.0.idle_from_ms.load(Ordering::Acquire) {
            u64::MAX => self.0.since.checked_add(first),
            ms => self
                .0
                .since
                .checked_add(Duration::from_millis(ms))
                .and_then(|t| t.checked_add(idle)),
        }
    }
}

pub struct RequestGuard {
    activity: Activity,
    id: u64,
}

impl RequestGuard {
    /// The request made progress (its response is ready, or a body frame was handed over):
    /// it has the stall timeout for the next.
    pub fn progress(&self) {
        let due = self.activity.after_ms(self.activity.0.stall);
        if let Some(d) = self.activity.lock().due_ms.get_mut(&self.id) {
            *d = due;
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ms = self.activity.now_ms();
        self.activity.0.idle_from_ms.store(ms, Ordering::Release);
        self.activity.lock().due_ms.remove(&self.id);
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it,
/// and counts each frame hyper takes as progress.
pub struct TrackedBody {
    inner: Body,
    guard: RequestGuard,
}

impl TrackedBody {
    pub fn wrap(inner: Body, guard: RequestGuard) -> Body {
        guard.progress();
        Body::new(TrackedBody { inner, guard })
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = polled {
            self.guard.progress();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Set on an HTTP/1.1 connection on which a request head carried both `Content-Length` and
/// `Transfer-Encoding`. hyper follows the chunked coding and closes the connection after the
/// response, but drops `Content-Length` before the application sees the request, so this
/// watches the bytes instead; `framing::layer` then refuses the request (400).
#[derive(Clone, Copy, Debug)]
pub struct LengthAndChunked;

/// Reads through to `inner`, scanning the request bytes line by line for a head (lines up to a
/// blank one) that names both `Content-Length` and `Transfer-Encoding`. Body bytes are scanned
/// too: a body that looks like such a head can only cause a false refusal, and no real head
/// escapes the scan.
pub struct HeadScan<I> {
    inner: I,
    /// The first bytes of the current line, enough to recognise the two names.
    prefix: [u8; 20],
    prefix_len: usize,
    line_len: usize,
    content_length: bool,
    transfer_encoding: bool,
    seen: Arc<std::sync::atomic::AtomicBool>,
}

impl<I> HeadScan<I> {
    pub fn new(inner: I) -> (HeadScan<I>, Arc<std::sync::atomic::AtomicBool>) {
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scan = HeadScan {
            inner,
            prefix: [0; 20],
            prefix_len: 0,
            line_len: 0,
            content_length: false,
            transfer_encoding: false,
            seen: seen.clone(),
        };
        (scan, seen)
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(i);
            self.push(line);
            self.end_line();
            bytes = rest.get(1..).unwrap_or_default();
        }
        self.push(bytes);
    }

    fn push(&mut self, part: &[u8]) {
        let room = self.prefix.len().saturating_sub(self.prefix_len);
        let take = part.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.prefix
                .get_mut(self.prefix_len..self.prefix_len.saturating_add(take)),
            part.get(..take),
        ) {
            dst.copy_from_slice(src);
        }
        self.prefix_len = self.prefix_len.saturating_add(take);
        self.line_len = self.line_len.saturating_add(part.len());
    }

    fn end_line(&mut self) {
        let line = self.prefix.get(..self.prefix_len).unwrap_or_default();
        let starts = |name: &[u8]| {
            line.get(..name.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(name))
        };
        if self.line_len == 0 || (self.line_len == 1 && line == b"\r") {
            if self.content_length && self.transfer_encoding {
                self.seen.store(true, Ordering::Release);
            }
            self.content_length = false;
            self.transfer_encoding = false;
        } else if starts(b"content-length:") {
            self.content_length = true;
        } else if starts(b"transfer-encoding:") {
            self.transfer_encoding = true;
        }
        self.prefix_len = 0;
        self.line_len = 0;
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for HeadScan<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res
            && let Some(new) = buf.filled().get(before..)
        {
            self.scan(new);
        }
        res
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HeadScan<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_scan_finds_length_and_chunked_in_one_head_across_reads() {
        let run = |parts: &[&[u8]]| {
            let (mut scan, seen) = HeadScan::new(());
            for p in parts {
                scan.scan(p);
            }
            seen.load(Ordering::Acquire)
        };
        assert!(run(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        ]));
        assert!(run(&[
            b"POST / HTTP/1.1\r\nconTENT-len",
            b"gth: 4\ntransfer-encoding: chunked\n\n"
        ]));
        // one in each of two requests is fine
        assert!(!run(&[
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ]));
        assert!(!run(&[
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn caps_per_ip_and_in_total() {
        let limits = ConnLimits::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = limits.try_open(a).unwrap();
        let _a2 = limits.try_open(a).unwrap();
        assert!(limits.try_open(a).is_none(), "per-IP cap");
        let _b1 = limits.try_open(b).unwrap();
        assert!(limits.try_open(b).is_none(), "global cap");
        drop(a1);
        assert!(limits.try_open(b).is_some());
    }

    #[test]
    fn deadlines_follow_requests() {
        let stall = Duration::from_secs(3);
        let act = Activity::new(stall);
        let (first, idle) = (Duration::from_secs(10), Duration::from_secs(30));
        let d0 = act.deadline(first, idle).unwrap();
        assert!(d0 <= Instant::now() + first);
        let g = act.begin();
        // in flight: the handler's timeout plus the stall timeout
        let running = act.deadline(first, idle).unwrap();
        assert!(running > Instant::now() + crate::app::REQUEST_TIMEOUT);
        // a response ready, or a frame handed over: the stall timeout from now
        g.progress();
        let waiting = act.deadline(first, idle).unwrap();
        assert!(waiting <= Instant::now() + stall && waiting > Instant::now() + stall / 2);
        // a second request does not extend the first's deadline
        let g2 = act.begin();
        assert_eq!(act.deadline(first, idle), Some(waiting));
        drop(g);
        assert!(act.deadline(first, idle).unwrap() >= running);
        drop(g2);
        let d1 = act.deadline(first, idle).unwrap();
        assert!(d1 > d0 + Duration::from_secs(19));
    }
}
