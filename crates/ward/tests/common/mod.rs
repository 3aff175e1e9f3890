//! Test harness: a real Ward server on 127.0.0.1:0 over real TLS, made by `ward init`, and
//! a real HTTPS client that trusts only the deployment's own CA.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use reqwest::{Client, RequestBuilder};
use serde_json::Value;
use tempfile::TempDir;
use ward_server::{Config, RunningServer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub backend: Backend,
    pub url: String,
    pub fhir: String,
    pub client: Client,
    pub dir: PathBuf,
    pub config: Config,
    pub admin_id: String,
    pub admin_secret: String,
    pub port: u16,
    server: Option<RunningServer>,
    _tmp: TempDir,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, |_| {}).await
    }

    /// Starts a server whose configuration `adjust` changed after `ward init`.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deploy");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(ward_store::testing::fresh_postgres_url().await),
        };
        let out = ward::init::init(&ward::init::InitOptions {
            dir: dir.clone(),
            listen: Some(addr.to_string()),
            store_url,
        })
        .await
        .expect("ward init");
        let mut config = Config::load(Some(&dir), None).unwrap();
        adjust(&mut config);
        let server = ward_server::start(config.clone(), Some(listener))
            .await
            .expect("server start");
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&out.ca_cert).unwrap()).unwrap();
        let client = Client::builder()
            .tls_certs_only([ca])
            .https_only(true)
            .build()
            .unwrap();
        TestServer {
            backend,
            url: config.server.public_url.clone(),
            fhir: config.fhir_base(),
            client,
            dir,
            config,
            admin_id: out.admin_client_id.clone(),
            admin_secret: out.admin_client_secret.to_string(),
            port: addr.port(),
            server: Some(server),
            _tmp: tmp,
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// [`TestServer::stop`], keeping the deployment's files until the returned guard drops.
    pub async fn stop_keeping_files(mut self) -> TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self._tmp
    }

    /// Registers a client the way `ward client create` does.
    pub async fn new_client(&self, scopes: &str) -> (String, String) {
        let c = ward::clients::create(
            &self.config,
            ward::clients::NewClient {
                name: "test".into(),
                scopes: scopes.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        (c.client_id, c.client_secret.to_string())
    }

    /// A client-credentials token for (id, secret), asking for `scope` if given.
    pub async fn token_for(&self, id: &str, secret: &str, scope: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let resp = self
            .client
            .post(format!("{}/oauth2/token", self.url))
            .basic_auth(id, Some(secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "token request failed");
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A token of the admin client (system/*.cruds).
    pub async fn admin_token(&self) -> String {
        self.token_for(&self.admin_id, &self.admin_secret, None).await
    }

    pub fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.client
            .get(format!("{}/{}", self.fhir, path))
            .bearer_auth(token)
    }

    /// The status of a GET of a full URL (a link Ward returned, or a non-FHIR route), with
    /// or without a bearer token.
    pub async fn status_of(&self, url: &str, token: Option<&str>) -> u16 {
        let mut req = self.client.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    pub fn post_json(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.client
            .post(format!("{}/{}", self.fhir, path))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).unwrap())
    }

    pub fn put_json(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.client
            .put(format!("{}/{}", self.fhir, path))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(body).unwrap())
    }

    pub fn delete(&self, path: &str, token: &str) -> RequestBuilder {
        self.client
            .delete(format!("{}/{}", self.fhir, path))
            .bearer_auth(token)
    }

    /// Creates a resource and returns the stored body.
    pub async fn create(&self, token: &str, body: &Value) -> Value {
        let rtype = body["resourceType"].as_str().unwrap();
        let resp = self.post_json(rtype, token, body).send().await.unwrap();
        assert_eq!(resp.status(), 201, "create {rtype}");
        resp.json().await.unwrap()
    }
}

/// Generates `#[tokio::test]`s running the given async fns on both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A Patient full of distinctive, greppable identifying values.
pub fn distinctive_patient(tag: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{ "system": "urn:oid:1.2.36.146.595.217.0.1", "value": format!("MRN{tag}77421") }],
        "name": [{ "family": format!("Zyxwarfield{tag}"), "given": [format!("Quillonia{tag}")] }],
        "telecom": [{ "system": "phone", "value": format!("+1-555-01{tag}-8841") }],
        "birthDate": "1937-04-19",
        "_birthDate": { "extension": [{ "url": "http://example.org/birth-time", "valueDateTime": "1937-04-19T05:12:00Z" }] },
        "address": [{ "line": [format!("{tag}77 Marrowgate Lane")], "city": "Quabbleton", "postalCode": "99501" }],
    })
}

/// Every byte the store holds at rest: the SQLite database, WAL and SHM files, or every
/// PostgreSQL table as text (with the table names), for plaintext scans.
pub async fn store_dump(s: &TestServer) -> (Vec<u8>, Vec<String>) {
    store_dump_at(s.backend, &s.dir, &s.config).await
}

/// [`store_dump`] of the deployment in `dir` with configuration `config`.
pub async fn store_dump_at(backend: Backend, dir: &Path, config: &Config) -> (Vec<u8>, Vec<String>) {
    match backend {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("ward.db") {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            assert!(bytes.len() > 4096, "the database files were found");
            (bytes, Vec::new())
        }
        Backend::Postgres => {
            use sqlx::Row;
            let pool = sqlx::PgPool::connect(&config.store.url).await.unwrap();
            let tables: Vec<String> =
                sqlx::query("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect();
            let mut text = String::new();
            for table in &tables {
                let sql = format!("SELECT t::text FROM \"{table}\" t");
                for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap()
                {
                    text.push_str(&r.get::<String, _>(0));
                    text.push('\n');
                }
            }
            pool.close().await;
            (text.into_bytes(), tables)
        }
    }
}

// ---- the `ward` binary as a separate process (its memory and exit are its own) ----

pub struct Proc {
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub url: String,
    pub client: reqwest::Client,
    pub admin: (String, String),
    pub log: PathBuf,
    pub port: u16,
    /// Environment overrides (`WARD_<SECTION>_<KEY>`) for `ward serve`.
    pub env: Vec<(String, String)>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proc {
    pub fn init(tmp: &Path) -> Proc {
        Proc::init_with(tmp, None)
    }

    /// `ward init`, on SQLite or on the given store URL (the audit trail follows the store).
    pub fn init_with(tmp: &Path, store_url: Option<&str>) -> Proc {
        let dir = tmp.join("deploy");
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
        cmd.args([
            "init",
            "--json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--dir",
        ])
        .arg(&dir);
        if let Some(url) = store_url {
            cmd.args(["--store-url", url]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("tls/ca.pem")).unwrap()).unwrap();
        Proc {
            url: format!("https://127.0.0.1:{port}"),
            client: reqwest::Client::builder().tls_certs_only([ca]).build().unwrap(),
            admin: (
                v["admin_client_id"].as_str().unwrap().into(),
                v["admin_client_secret"].as_str().unwrap().into(),
            ),
            log: tmp.join("ward.log"),
            dir,
            child: None,
            port,
            env: Vec::new(),
        }
    }

    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["serve", "--dir"])
            .arg(&self.dir)
            .env(
                "WARD_LOG",
                "info,ward=debug,ward_server=debug,ward_store=debug,ward_audit=debug",
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(r) = self.client.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ward serve did not become ready");
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .unwrap();
            c.wait().unwrap();
        }
    }

    pub fn get_fhir(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}/fhir/{path}", self.url))
            .bearer_auth(token)
    }

    pub fn post_fhir(&self, rtype: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/fhir/{rtype}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
    }

    pub async fn token(&self) -> String {
        let r: Value = self
            .client
            .post(format!("{}/oauth2/token", self.url))
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap().to_owned()
    }

    pub fn ward(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A raw TLS connection (HTTP/1.1 by ALPN) to a server of the deployment in `dir`, for tests
/// that must control the bytes or drop the connection at a chosen moment.
pub async fn raw_tls(dir: &Path, port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(dir.join("tls/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}
