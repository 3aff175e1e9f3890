//! The HTTPS listener: TLS handshake, HTTP/1.1 and HTTP/2 over hyper, graceful shutdown
//! (SPEC TS-1, OPS-3).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::Config;
use crate::conn::{Activity, ConnLimits, HeadScan, LengthAndChunked, TrackedBody};
use crate::state::AppState;

/// The address of the client on the other end of the TLS connection.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("key files: {0}")]
    Keys(#[from] ward_crypto::Error),
    #[error("store: {0}")]
    Store(#[from] ward_store::StoreError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("token service: {0}")]
    Tokens(#[from] ward_auth::TokenError),
    #[error("audit trail: {0}")]
    Audit(#[from] ward_audit::AuditError),
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server; dropping it does not stop it, call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The audit writer (its own thread on SQLite), awaited after it has been told to stop.
    audit_writer: tokio::task::JoinHandle<()>,
    /// Periodic reconciliation (`reconcile.rs`), stopped before the writer.
    reconciler: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, drains in-flight requests (up to a limit), closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // Writes whose clients went away still run; each ends with its final record.
        if !self.state.writes.drain(DRAIN_TIMEOUT).await {
            tracing::warn!(
                "shutdown: writes still running after the drain timeout; reconciled at the next start"
            );
        }
        self.reconciler.abort();
        // Every drained request has its record; flush and seal the chain with a checkpoint.
        let (records, batches) = self.state.audit.stats();
        tracing::info!(
            audit_records = records,
            audit_batches = batches,
            "audit writer totals"
        );
        self.state.audit.clone().shutdown().await;
        let _ = self.audit_writer.await;
        self.state.store.close().await;
    }

    /// Waits until the server stops by itself (it does not, short of a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Opens keys, store and TLS from `config`, then serves on `listener` (or binds
/// `server.listen`).
pub async fn start(config: Config, listener: Option<TcpListener>) -> Result<RunningServer, StartError> {
    check_data_permissions(&config)?;
    let keys = config.keys_dir();
    let kek = ward_crypto::keyfiles::load_kek(&keys)?;
    let signing = ward_crypto::keyfiles::load_signing_keys(&keys)?;
    // Key directories made before id_tokens existed get their RS256 key now; one that cannot
    // be written (mounted read-only) serves without id_tokens rather than not at all.
    let id_token_key = match ward_crypto::keyfiles::ensure_id_token_key(&keys)
        .and_then(|_| ward_crypto::keyfiles::load_id_token_key(&keys))
    {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "no RS256 id_token key: id_tokens cannot be signed");
            None
        }
    };
    let tls = crate::tls::server_config(&config.path(&config.tls.cert), &config.path(&config.tls.key))?;
    let store_options = config.store.options();
    let store = ward_store::Store::open_with(&config.store_url(), &kek, &store_options).await?;
    drop(kek);
    let tokens = ward_auth::TokenService::with_keys(
        &signing,
        id_token_key,
        &config.server.public_url,
        &config.fhir_base(),
        Duration::from_secs(config.server.token_lifetime_secs),
    )?;
    let trusted_issuers = crate::trusted_issuers::build(&config).await?;
    let audit_store = ward_audit::AuditStore::open(&config.audit_url()).await?;
    let signer = ward_audit::AuditSigner::load_for_writer(&keys, &audit_store).await?;
    // One process per chain: a second node with this id refuses to start here.
    let lease = audit_store.lease_node(&config.audit.node).await?;
    let (audit, audit_writer) =
        ward_audit::start_leased_writer(audit_store.clone(), lease, signer, config.audit.writer_config())
            .await?;
    crate::audit::record_admin(&audit, "config-load", None).await?;
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(&config.server.listen)
            .await
            .map_err(StartError::Listen)?,
    };
    let local_addr = listener.local_addr().map_err(StartError::Listen)?;
    let reconcile_every = Duration::from_secs(config.audit.reconcile_secs);
    let state = AppState::new(config, store, tokens, trusted_issuers, audit, audit_store);
    let watermark = crate::reconcile::at_startup(&state).await;
    let reconciler = tokio::spawn(crate::reconcile::periodically(
        state.clone(),
        watermark,
        reconcile_every,
    ));
    let (stop, stop_rx) = watch::channel(false);
    // The revocation list is complete before the first request is served.
    state.revocations.refresh(&state.store).await?;
    tokio::spawn(state.clone().watch_revocations(stop_rx.clone()));
    let task = tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        state.clone(),
        stop_rx,
    ));
    tracing::info!(%local_addr, "ward listening (HTTPS)");
    Ok(RunningServer {
        local_addr,
        state,
        stop,
        task,
        audit_writer,
        reconciler,
    })
}

/// Connection settings from `[server]`.
#[derive(Clone, Copy)]
struct ConnTimes {
    first_request: Duration,
    idle: Duration,
}

/// `d` from now; a duration too long to represent (a huge configured timeout) is a day.
fn later(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// How long a connection told to close (idle, or shutting down) may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

fn builders(config: &Config) -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let s = &config.server;
    let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    // hyper starts this timer whenever it waits for a request head, idle keep-alive included.
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(s.idle_timeout_secs));
    let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    let ping = Duration::from_secs(s.http2_keep_alive_secs);
    // P-4: what each stream may buffer beyond the one chunk its response body hands over at a
    // time (`response.rs`).
    h2.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(s.http2_max_concurrent_streams)
        .max_send_buf_size(crate::response::CHUNK)
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping);
    (h1, h2)
}

/// The data directory and the SQLite database files (with their WAL and shared-memory files)
/// must have no group/other permission bits, as the key directory (`ward-crypto` keyfiles).
/// A file that does not exist yet is created private by the store.
fn check_data_permissions(config: &Config) -> Result<(), StartError> {
    ward_crypto::keyfiles::check_private(&config.dir, "data directory")?;
    for url in [config.store_url(), config.audit_url()] {
        let Some(db) = ward_sqlite::file_of_url(&url) else {
            continue;
        };
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            let path = std::path::PathBuf::from(name);
            if path.exists() {
                let label = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                ward_crypto::keyfiles::check_private(&path, &label)?;
            }
        }
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) {
    let s = &state.config.server;
    let limits = ConnLimits::new(s.max_connections, s.max_connections_per_ip);
    let times = ConnTimes {
        first_request: Duration::from_secs(s.first_request_timeout_secs),
        idle: Duration::from_secs(s.idle_timeout_secs),
    };
    let stall = Duration::from_secs(s.response_stall_secs);
    let (h1, h2) = builders(&state.config);
    let builders = Arc::new((h1, h2));
    let router = crate::app::router(state);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Over a cap, the connection is closed at once, before any TLS work.
        let Some(guard) = limits.try_open(peer.ip()) else {
            tracing::debug!("connection refused: connection cap reached");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builders = builders.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // Refused handshakes (old protocol, weak suites, plain HTTP) end here.
                _ => return,
            };
            // ALPN decided the protocol: no waiting to sniff it from the first bytes.
            let activity = Activity::new(stall);
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                let service = service(router, peer, activity.clone(), None);
                let conn = builders.1.serve_connection(TokioIo::new(tls), service);
                serve_until_idle(conn, &activity, times, stop).await;
            } else {
                let (io, length_and_chunked) = HeadScan::new(tls);
                let service = service(router, peer, activity.clone(), Some(length_and_chunked));
                let conn = builders
                    .0
                    .serve_connection_with_upgrades(TokioIo::new(io), service);
                serve_until_idle(conn, &activity, times, stop).await;
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, limits.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after the drain timeout");
    }
}

/// The router as a hyper service for one connection: each request carries the client's
/// address (and the framing finding of [`HeadScan`]), and counts as in flight until its
/// response body is done.
fn service(
    router: axum::Router,
    peer: SocketAddr,
    activity: Activity,
    length_and_chunked: Option<Arc<AtomicBool>>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<axum::body::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<axum::body::Body>, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone {
    let service = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let request = activity.begin();
        req.extensions_mut().insert(ClientAddr(peer));
        if length_and_chunked
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            req.extensions_mut().insert(LengthAndChunked);
        }
        async move {
            let resp = router.oneshot(req).await?;
            Ok(resp.map(|b| TrackedBody::wrap(b, request)))
        }
    });
    TowerToHyperService::new(service)
}

/// Drives a connection until it ends, closing it gracefully when it has had no request for
/// too long or the server stops; one that does not close within a grace period is dropped.
async fn serve_until_idle<C>(conn: C, activity: &Activity, times: ConnTimes, mut stop: watch::Receiver<bool>)
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(conn);
    // Set once the connection was told to close: the moment it is dropped regardless.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let wake = match closing {
            Some(at) => at,
            None => activity
                .deadline(times.first_request, times.idle)
                .map_or_else(|| later(times.idle), Into::into),
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stop.changed(), if closing.is_none() => {
                if changed.is_ok() && !*stop.borrow() {
                    continue;
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(later(DRAIN_TIMEOUT));
            }
            _ = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    return;
                }
                let expired = activity
                    .deadline(times.first_request, times.idle)
                    .is_some_and(|d| d <= Instant::now());
                // A connection that never sent a request is owed no goodbye.
                if expired && activity.no_request_yet() {
                    return;
                }
                if expired {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(later(CLOSE_GRACE));
                }
            }
        }
    }
}
