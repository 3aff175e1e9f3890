//! The load generator's HTTPS client: one TLS 1.3 connection speaking HTTP/1.1 with
//! keep-alive, straight on hyper's connection API so that the client costs as little CPU as
//! possible (it shares the machine with the server under test).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Upper bound for connecting (TCP + TLS + HTTP handshake) and for any one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS 1.3-only client configuration (aws-lc-rs) that trusts only the CA in `ca_pem`
/// and offers only HTTP/1.1 in ALPN.
pub fn tls_config(ca_pem: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca_pem).with_context(|| format!("cannot read {}", ca_pem.display()))?
    {
        roots.add(cert.context("CA certificate")?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A response with its body read in full.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> anyhow::Result<Conn> {
        tokio::time::timeout(REQUEST_TIMEOUT, Self::connect_inner(addr, tls))
            .await
            .context("connect timed out")?
    }

    async fn connect_inner(addr: SocketAddr, tls: Arc<ClientConfig>) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Sends one request (the `Host` header is added here) and reads the whole response.
    pub async fn send(&mut self, mut req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        req.headers_mut().insert(header::HOST, self.host.clone());
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
        .context("request timed out")?
    }

    /// A bodiless GET of `path`, with a bearer token when given.
    pub async fn get(&mut self, path: &str, bearer: Option<&HeaderValue>) -> anyhow::Result<Reply> {
        self.send(request(Method::GET, path, bearer, None)).await
    }
}

/// Builds a request with an origin-form URI.
pub fn request(
    method: Method,
    path: &str,
    bearer: Option<&HeaderValue>,
    fhir_body: Option<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(bearer) = bearer {
        b = b.header(header::AUTHORIZATION, bearer.clone());
    }
    let body = match fhir_body {
        Some(body) => {
            b = b.header(header::CONTENT_TYPE, "application/fhir+json");
            body
        }
        None => Bytes::new(),
    };
    b.header(header::ACCEPT, "application/fhir+json")
        .body(Full::new(body))
        .expect("a request from valid parts")
}

/// Fetches a client-credentials token (HTTP Basic client authentication).
pub async fn token(conn: &mut Conn, client_id: &str, secret: &str) -> anyhow::Result<HeaderValue> {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/oauth2/token")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"grant_type=client_credentials")))?;
    let reply = conn.send(req).await?;
    anyhow::ensure!(
        reply.status == StatusCode::OK,
        "token request answered {}",
        reply.status
    );
    let json: serde_json::Value = serde_json::from_slice(&reply.body).context("token response")?;
    let token = json["access_token"]
        .as_str()
        .context("token response without access_token")?;
    Ok(HeaderValue::from_str(&format!("Bearer {token}"))?)
}
