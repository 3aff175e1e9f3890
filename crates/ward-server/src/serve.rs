//! The HTTPS listener: TLS handshake, HTTP/1.1 and HTTP/2 over hyper, graceful shutdown
//! (SPEC TS-1, OPS-3).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::Config;
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
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server; dropping it does not stop it, call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The audit writer (its own thread on SQLite), awaited after it has been told to stop.
    audit_writer: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, drains in-flight requests (up to a limit), closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
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
    let keys = config.keys_dir();
    let kek = ward_crypto::keyfiles::load_kek(&keys)?;
    let signing = ward_crypto::keyfiles::load_signing_key(&keys)?;
    let tls = crate::tls::server_config(&config.path(&config.tls.cert), &config.path(&config.tls.key))?;
    let store = ward_store::Store::open(&config.store_url(), &kek).await?;
    drop(kek);
    let tokens = ward_auth::TokenService::new(
        &signing,
        &config.server.public_url,
        &config.fhir_base(),
        Duration::from_secs(config.server.token_lifetime_secs),
    )?;
    let audit_store = ward_audit::AuditStore::open(&config.audit_url()).await?;
    let signer = ward_audit::AuditSigner::load_for_writer(&keys, &audit_store).await?;
    let (audit, audit_writer) = ward_audit::start_writer(
        audit_store.clone(),
        config.audit.node.clone(),
        signer,
        config.audit.writer_config(),
    )
    .await?;
    crate::audit::record_admin(&audit, "config-load", None).await?;
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(&config.server.listen)
            .await
            .map_err(StartError::Listen)?,
    };
    let local_addr = listener.local_addr().map_err(StartError::Listen)?;
    let state = AppState::new(config, store, tokens, audit, audit_store);
    let (stop, stop_rx) = watch::channel(false);
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
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) {
    let router = crate::app::router(state);
    let graceful = GracefulShutdown::new();
    let builder = Arc::new({
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        b
    });
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
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // Refused handshakes (old protocol, weak suites, plain HTTP) end here.
                _ => return,
            };
            let service = router.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                req
            });
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open after the drain timeout");
    }
}
