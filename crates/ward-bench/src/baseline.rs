//! The baseline: a bare hyper + rustls (aws-lc-rs) HTTPS server that answers every request
//! with one fixed body. It uses the same certificate and key as the Ward deployment under
//! test and the same hyper connection builder as Ward (HTTP/1.1 and HTTP/2 by ALPN), so the
//! difference between the two is what Ward does per request.

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

/// Thread-name prefix of the baseline server's runtime; the CPU accounting finds the
/// server's share of this process by it.
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
    let acceptor = TlsAcceptor::from(tls_config(cert, key)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let listener = {
        let _guard = runtime.enter();
        TcpListener::from_std(std_listener)?
    };
    runtime.spawn(accept_loop(listener, acceptor, body));
    Ok(Baseline {
        addr,
        runtime: Some(runtime),
    })
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, body: Bytes) {
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
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move {
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
