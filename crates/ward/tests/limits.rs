//! Abuse limits (SPEC SEC-2, SEC-1, §2 step 3), tried as an attacker would over real TLS:
//! idle and surplus connections, token-endpoint floods and rate limits, HTTP framing that
//! HTTP clients would normalise (hence raw tokio-rustls sockets).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Proc, TestServer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use ward_audit::{AuditQuery, AuditStore};
use ward_bench::procfs::status_kib;

on_both_backends!(
    token_rate_limits_answer_429_and_audit_once_per_window,
    busy_secret_checks_answer_503_and_argon2id_secrets_migrate,
    http_framing_is_refused
);

// ----- raw TLS ------------------------------------------------------------------------------

fn connector(dir: &Path, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("tls/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

/// A TLS connection to the server at `port`, from the loopback address `local`.
async fn tls_from(dir: &Path, port: u16, local: &str, alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(local.parse().unwrap(), 0))?;
    let tcp = sock.connect(([127, 0, 0, 1], port).into()).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector(dir, alpn).connect(name, tcp).await
}

async fn tls(s: &TestServer) -> TlsStream<TcpStream> {
    tls_from(&s.dir, s.port, "127.0.0.1", b"http/1.1").await.unwrap()
}

/// Reads one HTTP/1.1 response (Ward's have a Content-Length): status, head, body.
async fn read_response(conn: &mut TlsStream<TcpStream>) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        body.extend_from_slice(&chunk[..n]);
    }
    (status, head, body)
}

/// How long until the server closes `conn` (reads until EOF or error), at most `limit`.
async fn closed_within(conn: &mut TlsStream<TcpStream>, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

async fn exchange(conn: &mut TlsStream<TcpStream>, request: &[u8]) -> (u16, String, Vec<u8>) {
    conn.write_all(request).await.unwrap();
    read_response(conn).await
}

fn get_healthz(port: u16) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").into_bytes()
}

// ----- connections --------------------------------------------------------------------------

/// Before: a connection that completed the handshake and sent nothing was held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_are_closed() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.server.first_request_timeout_secs = 1;
        c.server.idle_timeout_secs = 2;
    })
    .await;
    let limit = Duration::from_secs(8);
    let opened = Instant::now();
    // silent after the handshake, HTTP/1.1 and HTTP/2
    let mut h1 = tls(&s).await;
    let mut h2 = tls_from(&s.dir, s.port, "127.0.0.1", b"h2").await.unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // idle after one request on a keep-alive connection
    let mut kept = tls(&s).await;
    let (status, _, _) = exchange(&mut kept, &get_healthz(s.port)).await;
    assert_eq!(status, 200);
    closed_within(&mut h1, limit)
        .await
        .expect("silent HTTP/1.1 connection closed");
    let t1 = opened.elapsed();
    closed_within(&mut h2, limit)
        .await
        .expect("silent HTTP/2 connection closed");
    let t2 = opened.elapsed();
    closed_within(&mut kept, limit)
        .await
        .expect("idle keep-alive connection closed");
    let t3 = opened.elapsed();
    assert!(
        t1 >= Duration::from_millis(800),
        "not before the deadline: {t1:?}"
    );
    assert!(t2 < Duration::from_secs(3), "{t2:?}");
    assert!(
        t3 >= Duration::from_millis(1800) && t3 < Duration::from_secs(5),
        "{t3:?}"
    );
    println!("closed after: silent h1 {t1:?}, silent h2 {t2:?}, idle keep-alive {t3:?}");
    s.stop().await;
}

/// Before: there was no cap; every connection was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_the_extra_connection_at_once() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.server.max_connections = 4;
        c.server.max_connections_per_ip = 2;
    })
    .await;
    let (dir, port) = (&s.dir, s.port);
    let mut a1 = tls_from(dir, port, "127.0.0.1", b"http/1.1").await.unwrap();
    let a2 = tls_from(dir, port, "127.0.0.1", b"http/1.1").await.unwrap();
    assert_eq!(exchange(&mut a1, &get_healthz(port)).await.0, 200);
    let refused_at_once = |r: std::io::Result<TlsStream<TcpStream>>, started: Instant| {
        assert!(r.is_err(), "the connection over the cap was served");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    };
    // per IP
    let t = Instant::now();
    refused_at_once(tls_from(dir, port, "127.0.0.1", b"http/1.1").await, t);
    // global: two more from other addresses fill it
    let _b = tls_from(dir, port, "127.0.0.2", b"http/1.1").await.unwrap();
    let _c = tls_from(dir, port, "127.0.0.3", b"h2").await.unwrap();
    let t = Instant::now();
    refused_at_once(tls_from(dir, port, "127.0.0.4", b"http/1.1").await, t);
    // the existing client keeps working
    assert_eq!(exchange(&mut a1, &get_healthz(port)).await.0, 200);
    // a closed connection frees its place
    drop(a2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tls_from(dir, port, "127.0.0.1", b"http/1.1").await.unwrap();
    assert_eq!(exchange(&mut again, &get_healthz(port)).await.0, 200);
    s.stop().await;
}

// ----- token endpoint -----------------------------------------------------------------------

/// A client whose stored secret hash is argon2id, as written by earlier versions.
async fn insert_argon2id_client(config: &ward_server::Config, secret: &str) -> String {
    let store = ward::clients::open_store(config).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    let hash = ward_auth::secret::hash_password(zeroize::Zeroizing::new(secret.to_owned()))
        .await
        .unwrap();
    store
        .insert_client(&ward_store::ClientRecord {
            client_id: id.clone(),
            name: "legacy".into(),
            secret_hash: hash,
            scopes: "system/*.read".into(),
            disabled: false,
            created_at: time::OffsetDateTime::now_utc(),
            redirect_uris: Vec::new(),
            public: false,
            jwks: None,
            jwks_url: None,
        })
        .await
        .unwrap();
    store.close().await;
    id
}

fn client_from(s: &TestServer, local: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(s.dir.join("tls/ca.pem")).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .local_address(local.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn token_request(client: &reqwest::Client, url: &str, id: &str, secret: &str) -> reqwest::Response {
    client
        .post(format!("{url}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

async fn token_rate_limits_answer_429_and_audit_once_per_window(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.server.token_burst = 3;
        c.server.token_requests_per_minute_per_ip = 6;
        c.server.token_requests_per_minute_per_client = 6;
    })
    .await;
    // per IP: a burst of 3, then 429 for anyone from that address
    let from1 = client_from(&s, "127.0.0.1");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let id = format!("no-such-client-{i}");
        let resp = token_request(&from1, &s.url, &id, "wrong").await;
        if resp.status() == 429 {
            let secs = retry_after(&resp);
            assert!((1..=60).contains(&secs), "Retry-After {secs}");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429]);
    // per client id and address: the fourth request for one client from one address is
    // refused although that address's own bucket has refilled (fast refill below)...
    let s2 = TestServer::start_with(backend, |c| {
        c.server.token_burst = 3;
        c.server.token_requests_per_minute_per_ip = 6000;
        c.server.token_requests_per_minute_per_client = 6;
    })
    .await;
    let attacker = client_from(&s2, "127.0.0.2");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = token_request(&attacker, &s2.url, &s2.admin_id, "wrong").await;
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // ...but another address's wrong guesses do not lock the client out (review finding 3)
    let resp = token_request(
        &client_from(&s2, "127.0.0.3"),
        &s2.url,
        &s2.admin_id,
        &s2.admin_secret,
    )
    .await;
    assert_eq!(resp.status(), 200);
    s2.stop().await;
    // one audit record per limited window, not per request
    let store = AuditStore::open(&s.config.audit_url()).await.unwrap();
    let q = AuditQuery {
        action: Some("token".into()),
        count: 1000,
        ..AuditQuery::default()
    };
    let records = ward_audit::search(&store, &q).await.unwrap();
    let limited = records.iter().filter(|(r, _)| r.outcome.status == 429).count();
    let refused = records.iter().filter(|(r, _)| r.outcome.status == 401).count();
    assert_eq!((limited, refused), (1, 3));
    store.close().await;
    s.stop().await;
}

async fn busy_secret_checks_answer_503_and_argon2id_secrets_migrate(backend: Backend) {
    let s = TestServer::start_with(backend, |c| {
        c.server.token_max_concurrent_checks = 1;
        c.server.token_burst = 10_000;
    })
    .await;
    // An argon2id hash makes every unknown client cost argon2id too (no timing oracle).
    let legacy = insert_argon2id_client(&s.config, "legacy-secret").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (client, url) = (s.client.clone(), s.url.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let resp = token_request(&client, &url, &format!("unknown-{i}"), "wrong").await;
            let after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (resp.status().as_u16(), after, started.elapsed())
        }));
    }
    let mut busy = 0;
    for t in tasks {
        let (status, after, took) = t.await.unwrap();
        match status {
            503 => {
                busy += 1;
                assert_eq!(after.as_deref(), Some("1"));
                assert!(
                    took < Duration::from_secs(2),
                    "503 at once, not after queueing: {took:?}"
                );
            }
            401 => {}
            other => panic!("status {other}"),
        }
    }
    assert!(
        busy > 0,
        "24 concurrent argon2id checks with a bound of 1 gave no 503"
    );
    // the old hash still verifies, and is replaced by the keyed one on success
    let token = s.token_for(&legacy, "legacy-secret", None).await;
    assert!(!token.is_empty());
    let store = ward::clients::open_store(&s.config).await.unwrap();
    let hash = store.get_client(&legacy).await.unwrap().unwrap().secret_hash;
    assert!(hash.starts_with("$ward-hmac-sha256$"), "migrated");
    store.close().await;
    s.token_for(&legacy, "legacy-secret", None).await;
    let resp = token_request(&s.client, &s.url, &legacy, "wrong").await;
    assert_eq!(resp.status(), 401);
    s.stop().await;
}

// ----- subprocess server (for its RSS and its log) -------------------------------------------

/// `ward init`, an argon2id client from an earlier version if asked, then `ward serve` with
/// the `env` overrides.
async fn serve_proc(tmp: &Path, env: &[(&str, &str)], legacy_secret: Option<&str>) -> Proc {
    let mut w = Proc::init(tmp);
    if let Some(secret) = legacy_secret {
        let config = ward_server::Config::load(Some(&w.dir), None).unwrap();
        insert_argon2id_client(&config, secret).await;
    }
    w.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    w.start().await;
    w
}

/// Before: every token request ran argon2id (19 MiB) on an unbounded blocking pool. The
/// deployment here keeps an argon2id hash from an earlier version, so unknown clients cost
/// argon2id too (the worst case), and the rate limits are lifted so only the bound on
/// concurrent checks stands between the flood and the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_flood_leaves_the_server_responsive_and_small() {
    let tmp = tempfile::tempdir().unwrap();
    let w = serve_proc(
        tmp.path(),
        &[
            ("WARD_SERVER_TOKEN_BURST", "1000000"),
            ("WARD_SERVER_TOKEN_REQUESTS_PER_MINUTE_PER_IP", "1000000"),
            ("WARD_SERVER_TOKEN_REQUESTS_PER_MINUTE_PER_CLIENT", "1000000"),
        ],
        Some("legacy-secret"),
    )
    .await;
    let token: Value = token_request(&w.client, &w.url, &w.admin.0, &w.admin.1)
        .await
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let created: Value = w
        .client
        .post(format!("{}/fhir/Patient", w.url))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "gender": "other"}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_url = format!("{}/fhir/Patient/{}", w.url, created["id"].as_str().unwrap());

    let flood_for = Duration::from_secs(20);
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    let ca = std::fs::read(w.dir.join("tls/ca.pem")).unwrap();
    for i in 0..48u8 {
        let local: IpAddr = format!("127.0.0.{}", 2 + i % 8).parse().unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .local_address(local)
            .build()
            .unwrap();
        let (url, sent, busy) = (w.url.clone(), sent.clone(), busy.clone());
        flood.push(tokio::spawn(async move {
            while started.elapsed() < flood_for {
                let id = uuid::Uuid::new_v4().to_string();
                if let Ok(r) = client
                    .post(format!("{url}/oauth2/token"))
                    .basic_auth(&id, Some("wrong"))
                    .form(&[("grant_type", "client_credentials")])
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if r.status() == 503 {
                        busy.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut worst = Duration::ZERO;
    let mut reads = 0;
    while started.elapsed() < flood_for {
        let t = Instant::now();
        let resp = w
            .client
            .get(&read_url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        worst = worst.max(t.elapsed());
        reads += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for f in flood {
        f.await.unwrap();
    }
    let ready = w.client.get(format!("{}/readyz", w.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "server alive after the flood");
    let peak_mib = status_kib(w.pid().unwrap(), "VmHWM").unwrap() / 1024;
    println!(
        "token flood: {} requests ({} answered 503) in {:?}; {reads} reads, slowest {worst:?}; peak RSS {peak_mib} MiB",
        sent.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(
        worst < Duration::from_secs(1),
        "a read took {worst:?} during the flood"
    );
    assert!(peak_mib < 300, "peak RSS {peak_mib} MiB");
}

/// Before: the access log printed the method as sent, whatever its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_methods_are_truncated_in_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let w = serve_proc(tmp.path(), &[], None).await;
    let method = "QZ".repeat(2000);
    let mut conn = tls_from(&w.dir, w.port, "127.0.0.1", b"http/1.1").await.unwrap();
    let req = format!(
        "{method} /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        w.port
    );
    let (status, _, _) = exchange(&mut conn, req.as_bytes()).await;
    assert!((400..500).contains(&status), "{status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("QZQZ"), "the request was logged");
    assert!(
        !log.contains(&"QZ".repeat(10)),
        "a 20-character run of the method reached the log"
    );
}

// ----- HTTP framing -------------------------------------------------------------------------

/// Whether a Patient with this family name was stored.
async fn stored(s: &TestServer, token: &str, family: &str) -> bool {
    let b: Value = s
        .get(&format!("Patient?family={family}"), token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    b["entry"].as_array().is_some_and(|e| !e.is_empty())
}

/// A request refused for its framing: 400, and the connection closed after it.
async fn refused_and_closed(s: &TestServer, request: String, what: &str) {
    let mut conn = tls(s).await;
    let (status, _, body) = exchange(&mut conn, request.as_bytes()).await;
    assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&body));
    assert!(
        closed_within(&mut conn, Duration::from_secs(3)).await.is_some(),
        "{what}: connection left open"
    );
}

async fn http_framing_is_refused(backend: Backend) {
    let s = TestServer::start(backend).await;
    let t = s.admin_token().await;
    let host = format!("127.0.0.1:{}", s.port);
    let patient = |family: &str| json!({"resourceType": "Patient", "name": [{"family": family}]}).to_string();
    let post = |extra: &str, body: &str| {
        format!(
            "POST /fhir/Patient HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {t}\r\n\
             Content-Type: application/fhir+json\r\n{extra}\r\n{body}"
        )
    };
    let chunked = |body: &str| format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());

    // Content-Length with Transfer-Encoding: chunked (request smuggling behind a proxy)
    let body = patient("Smugglecl");
    let req = post(
        &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", body.len()),
        &chunked(&body),
    );
    refused_and_closed(&s, req, "CL+TE").await;
    assert!(!stored(&s, &t, "Smugglecl").await);
    // Transfer-Encoding other than chunked (hyper refuses "gzip" alone; this layer the rest)
    for te in ["gzip, chunked", "gzip", "chunked, chunked"] {
        let req = post(
            &format!("Transfer-Encoding: {te}\r\n"),
            &chunked(&patient("Smugglete")),
        );
        refused_and_closed(&s, req, te).await;
    }
    assert!(!stored(&s, &t, "Smugglete").await);
    // malformed chunk sizes: 400, not 413
    for size in ["zz", "-1", "1x", "ffffffffffffffffff"] {
        let req = post(
            "Transfer-Encoding: chunked\r\n",
            &format!("{size}\r\n{{}}\r\n0\r\n\r\n"),
        );
        refused_and_closed(&s, req, size).await;
    }
    // a second Host
    let req = format!("GET /fhir/metadata HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n");
    refused_and_closed(&s, req, "two Host headers").await;
    // absolute-form target for another authority; for this one it is served
    let req = "GET https://evil.example/fhir/metadata HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned();
    refused_and_closed(&s, req, "absolute-form for another authority").await;
    let req = format!("GET https://{host}/fhir/metadata HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    refused_and_closed(&s, req, "absolute-form with another Host").await;
    let mut conn = tls(&s).await;
    let req = format!("GET https://{host}/fhir/metadata HTTP/1.1\r\nHost: {host}\r\n\r\n");
    assert_eq!(exchange(&mut conn, req.as_bytes()).await.0, 200);
    // a content-coded body is refused, never stored as if it were plain
    let body = patient("Deflated");
    let req = post(
        &format!("Content-Encoding: deflate\r\nContent-Length: {}\r\n", body.len()),
        &body,
    );
    let (status, _, _) = exchange(&mut conn, req.as_bytes()).await;
    assert_eq!(status, 415);
    assert!(!stored(&s, &t, "Deflated").await);
    // the token endpoint's media type must be exactly application/x-www-form-urlencoded
    for (ct, want) in [
        ("application/x-www-form-urlencodedjunk", 400),
        ("application/x-www-form-urlencoded-evil; charset=utf-8", 400),
        ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", 200),
    ] {
        let resp = s
            .client
            .post(format!("{}/oauth2/token", s.url))
            .basic_auth(&s.admin_id, Some(&s.admin_secret))
            .header("content-type", ct)
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{ct}");
    }
    s.stop().await;
}
