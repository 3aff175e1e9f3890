//! The Ward server under test: a deployment made by `ward init`, loaded with the demo data
//! set, served by `ward serve` in a subprocess (so its memory and CPU are its own).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::client::Conn;

/// What `ward init --json` prints.
#[derive(Deserialize)]
pub struct InitOutput {
    pub fhir_base: String,
    pub ca_cert: PathBuf,
    pub admin_client_id: String,
    pub admin_client_secret: String,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `ward init --dir DIR --listen ADDR --json`.
pub fn init(ward_bin: &Path, dir: &Path, addr: SocketAddr) -> anyhow::Result<InitOutput> {
    let out = Command::new(ward_bin)
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", ward_bin.display()))?;
    if !out.status.success() {
        bail!(
            "ward init failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("ward init --json output")
}

/// Loads the deterministic demo data set (`ward demo`'s) into the deployment's store,
/// before the server starts. Returns the number of resources stored.
pub async fn load_demo_data(dir: &Path, patients: usize, seed: u64) -> anyhow::Result<usize> {
    let config = ward_server::Config::load(Some(dir), None)?;
    ward::demo::load_synthetic(&config, patients, seed).await
}

/// A running `ward serve`; dropping it stops it (SIGTERM, then SIGKILL after 10 s).
pub struct WardProcess {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl WardProcess {
    /// Starts `ward serve --dir DIR` with its log (stderr) in `log`, and waits until
    /// `/readyz` answers 200.
    pub async fn start(
        ward_bin: &Path,
        dir: &Path,
        addr: SocketAddr,
        log: PathBuf,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<WardProcess> {
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(ward_bin)
            .arg("serve")
            .arg("--dir")
            .arg(dir)
            // The deployment's own address, whatever the caller's environment says.
            .env_remove("WARD_SERVER_LISTEN")
            .env_remove("WARD_SERVER_PUBLIC_URL")
            // The token scenarios measure the endpoint, not its per-client and per-IP limits.
            .env("WARD_SERVER_TOKEN_REQUESTS_PER_MINUTE_PER_IP", "100000000")
            .env("WARD_SERVER_TOKEN_REQUESTS_PER_MINUTE_PER_CLIENT", "100000000")
            .env("WARD_SERVER_TOKEN_BURST", "1000000")
            .env("WARD_SERVER_TOKEN_MAX_CONCURRENT_CHECKS", "256")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot run {}", ward_bin.display()))?;
        let mut ward = WardProcess {
            pid: child.id(),
            child,
            addr,
            log,
        };
        ward.wait_ready(tls).await?;
        Ok(ward)
    }

    async fn wait_ready(&mut self, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "ward serve exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(mut conn) = Conn::connect(self.addr, tls.clone()).await
                && let Ok(reply) = conn.get("/readyz", None).await
                && reply.status.is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("ward serve not ready after 60 s:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WardProcess {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        // SIGTERM lets Ward drain and close its store; `kill(1)` avoids unsafe libc calls.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
