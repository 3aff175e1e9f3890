//! The baseline: a bare hyper + rustls (aws-lc-rs) HTTPS server that answers every request
//! with one fixed body. It uses the same certificate and key as the Ward deployment under
//! test and the same hyper connection builder as Ward (HTTP/1.1 and HTTP/2 by ALPN), so the
//! difference between the two is what Ward does per request.
//!
//! The audited baseline is the same server committing one audit record per request through
//! Ward's own group-commit writer (SQLite, Ward's default writer settings) before it answers:
//! the floor that AU-2 alone puts under any read, whatever else the server does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;
use ward_audit::{AuditConfig, AuditHandle, AuditRecord, AuditSigner, AuditStore};

/// Thread-name prefix of the baseline server's runtime.
pub const THREAD_NAME: &str = "bench-baseline";

/// A baseline server on its own runtime (so its CPU time can be told apart from the
/// client's); dropping it stops it.
pub struct Baseline {
    pub addr: SocketAddr,
    runtime: Option<Runtime>,
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// TLS 1.3 only, ALPN h2 and http/1.1, aws-lc-rs.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .with_context(|| format!("cannot read {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Starts the baseline on 127.0.0.1 (a free port) with `workers` runtime threads.
pub fn start(cert: &Path, key: &Path, body: Bytes, workers: usize) -> anyhow::Result<Baseline> {
    serve(cert, key, body, Baseline::new(workers)?, None)
}

/// The durable audit a server answering `record` owes before each answer.
pub struct AuditFloor {
    /// The audit database, e.g. `sqlite:///tmp/x/floor-audit.db?mode=rwc`.
    pub url: String,
    pub config: AuditConfig,
    /// What each request records (a read, as Ward records one).
    pub record: AuditRecord,
}

/// Starts the audited baseline: [`start`]'s server, answering each request only after its
/// audit record has committed (503 if it could not be). Its writer runs on the server's
/// runtime, so its CPU counts as the server's.
pub async fn start_audited(
    cert: &Path,
    key: &Path,
    body: Bytes,
    workers: usize,
    floor: AuditFloor,
) -> anyhow::Result<Baseline> {
    // On an error below, dropping `base` shuts its runtime down in the background (dropping a
    // bare runtime inside this async caller would panic).
    let base = Baseline::new(workers)?;
    let AuditFloor { url, config, record } = floor;
    let handle = base
        .runtime()
        .spawn(async move {
            let store = AuditStore::open(&url).await?;
            let signer = AuditSigner::generate()?;
            let (handle, _writer) = ward_audit::start_writer(store, "floor".into(), signer, config).await?;
            anyhow::Ok(handle)
        })
        .await
        .context("starting the audit writer")??;
    serve(cert, key, body, base, Some((handle, record)))
}

impl Baseline {
    /// A runtime of `workers` threads, not serving yet.
    fn new(workers: usize) -> anyhow::Result<Baseline> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        Ok(Baseline {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the baseline is dropped")
    }
}

type Audit = Option<(AuditHandle, AuditRecord)>;

fn serve(cert: &Path, key: &Path, body: Bytes, mut base: Baseline, audit: Audit) -> anyhow::Result<Baseline> {
    let acceptor = TlsAcceptor::from(tls_config(cert, key)?);
    let runtime = base.runtime();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let listener = {
        let _guard = runtime.enter();
        TcpListener::from_std(std_listener)?
    };
    runtime.spawn(accept_loop(listener, acceptor, body, Arc::new(audit)));
    base.addr = addr;
    Ok(base)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, body: Bytes, audit: Arc<Audit>) {
    let builder = Arc::new({
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1().timer(TokioTimer::new());
        b
    });
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let body = body.clone();
        let audit = audit.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |_req| {
                let body = body.clone();
                let audit = audit.clone();
                async move {
                    if let Some((handle, record)) = audit.as_ref()
                        && handle.record(record.clone()).await.is_err()
                    {
                        let unavailable = Response::builder()
                            .status(http::StatusCode::SERVICE_UNAVAILABLE)
                            .body(Full::new(Bytes::new()))
                            .expect("a response from valid parts");
                        return Ok::<_, Infallible>(unavailable);
                    }
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CONTENT_TYPE, "application/fhir+json")
                            .body(Full::new(body))
                            .expect("a response from valid parts"),
                    )
                }
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}
