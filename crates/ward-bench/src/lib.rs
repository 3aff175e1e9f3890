//! `ward-bench`: the load benchmark of SPEC §4 (P-1, P-2, P-4).
//!
//! One run starts Ward (`ward serve`, a subprocess, with N demo patients) and a bare
//! hyper + rustls baseline server (in this process) answering a fixed body the size of a
//! demo Patient read, drives both over TLS 1.3 with keep-alive from C connections for T
//! seconds per scenario, and reports requests per second, p50/p99 latency, errors, the ratio
//! to the baseline, CPU used by each side and Ward's resident memory idle and under load.
//!
//! `--smoke` runs the same thing tiny and checks every response; it fails on wrong
//! responses, never on speed.

pub mod audit_figures;
pub mod baseline;
pub mod client;
pub mod load;
pub mod procfs;
mod report;
pub mod token_workloads;
pub mod ward_proc;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http::StatusCode;

pub use report::{Report, ScenarioReport, Target};

use crate::load::{Drive, Workload};
use crate::procfs::{CpuSnapshot, RssSampler};
use crate::ward_proc::WardProcess;
use crate::workloads::{Create, DemoPatients, Fixed, Read, Search};

/// Thread-name prefix of the load generator's runtime: the CPU accounting tells the client's
/// share of this process from the baseline servers' by it.
pub const CLIENT_THREAD_NAME: &str = "bench-client";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `ward` binary to start (`ward init`, `ward serve`).
    pub ward_bin: PathBuf,
    /// Demo patients to load (each with its Observations and Conditions).
    pub patients: usize,
    /// Concurrent keep-alive connections, one client task each.
    pub connections: usize,
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured load before each scenario's measured window.
    pub warmup: Duration,
    pub seed: u64,
    /// Check every response's content (not a sample) and treat any non-2xx as a failure.
    pub smoke: bool,
    /// Size of the audit log `ward audit verify` is timed on.
    pub audit_records: usize,
    /// Run only the baseline and read scenarios (for profiling the read path).
    pub read_only: bool,
}

impl Options {
    /// The default full run: 1000 patients, 64 connections, 2 s warm-up + 10 s per scenario.
    pub fn full(ward_bin: PathBuf) -> Options {
        Options {
            ward_bin,
            patients: 1000,
            connections: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            seed: 42,
            smoke: false,
            audit_records: 500_000,
            read_only: false,
        }
    }

    /// The CI smoke run: 20 patients, 4 connections, 1 s per scenario, no warm-up.
    pub fn smoke(ward_bin: PathBuf) -> Options {
        Options {
            ward_bin,
            patients: 20,
            connections: 4,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            seed: 42,
            smoke: true,
            audit_records: 2_000,
            read_only: false,
        }
    }
}

/// The `ward` binary next to the running executable (`target/release/ward` beside
/// `target/release/ward-bench`).
pub fn ward_bin_beside_current_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable has no directory")?;
    Ok(dir.join("ward"))
}

/// The start of a response body, for messages.
/// What an error response says: an OperationOutcome's first diagnostics, else the start of
/// the body.
fn snippet(body: &[u8]) -> String {
    let outcome: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(d) = outcome
        .as_ref()
        .and_then(|v| v["issue"][0]["diagnostics"].as_str())
    {
        return d.to_owned();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(160)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("ward-bench: {}", msg.as_ref());
}

/// Runs the benchmark. An `Err` means it could not run (set-up failed); wrong responses are
/// listed in [`Report::failures`].
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.patients > 0, "--patients must be at least 1");
    anyhow::ensure!(opts.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(!opts.duration.is_zero(), "--duration must be positive");
    if !opts.ward_bin.is_file() {
        bail!(
            "no ward binary at {}; build it first (`cargo build --release -p ward`) or pass --ward-bin",
            opts.ward_bin.display()
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .thread_name(CLIENT_THREAD_NAME)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(opts, cpus))
}

async fn run_async(opts: &Options, cpus: usize) -> anyhow::Result<Report> {
    let tmp = tempfile::Builder::new().prefix("ward-bench-").tempdir()?;
    let dir = tmp.path().join("deploy");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", ward_proc::free_port()?).parse()?;

    progress(format!("ward init --dir {} --listen {addr}", dir.display()));
    let init = ward_proc::init(&opts.ward_bin, &dir, addr)?;
    let demo = DemoPatients::generate(opts.seed, opts.patients)?;
    progress(format!(
        "loading {} demo patients (seed {})",
        opts.patients, opts.seed
    ));
    let t = Instant::now();
    let loaded = ward_proc::load_demo_data(&dir, opts.patients, opts.seed)
        .await
        .context("loading demo data")?;
    let load_secs = t.elapsed().as_secs_f64();
    // A private_key_jwt client for the token scenario, registered as an operator would.
    let jwt_key = token_workloads::TokenJwt::new_key()?;
    let jwks_file = tmp.path().join("bench-jwks.json");
    std::fs::write(&jwks_file, token_workloads::TokenJwt::jwks(&jwt_key).to_string())?;
    let jwt_client = {
        let config = ward_server::Config::load(Some(&dir), None)?;
        ward::clients::create(
            &config,
            ward::clients::NewClient {
                name: "bench-jwt".into(),
                scopes: "system/Patient.rs".into(),
                jwks_file: Some(jwks_file),
                ..Default::default()
            },
        )
        .await
        .context("registering the private_key_jwt client")?
        .client_id
    };

    let tls = client::tls_config(&init.ca_cert)?;
    progress("starting ward serve");
    let mut ward = WardProcess::start(
        &opts.ward_bin,
        &dir,
        addr,
        tmp.path().join("ward.log"),
        tls.clone(),
    )
    .await?;
    // Idle: started and ready, before any authenticated request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = procfs::status_kib(ward.pid, "VmRSS").context("reading Ward's VmRSS")?;
    let sampler = RssSampler::start(ward.pid);

    let mut probe = client::Conn::connect(addr, tls.clone()).await?;
    let bearer = client::token(&mut probe, &init.admin_client_id, &init.admin_client_secret).await?;
    let read = Read::new(&demo.ids, bearer.clone());
    let first = probe
        .send(client::request(
            http::Method::GET,
            &format!("/fhir/Patient/{}", demo.ids[0]),
            Some(&bearer),
            None,
        ))
        .await?;
    if let Err(e) = read.check(0, &first) {
        bail!("reading a demo patient failed: {e}");
    }
    let patient_body = first.body.clone();
    drop(probe);
    let patient_read_bytes = patient_body.len();

    let config = ward_server::Config::load(Some(&dir), None)?;
    let (cert, key) = (config.path(&config.tls.cert), config.path(&config.tls.key));
    let base = baseline::start(&cert, &key, patient_body.clone(), cpus)?;

    let drive = |addr| Drive {
        addr,
        connections: opts.connections,
        warmup: opts.warmup,
        duration: opts.duration,
        check_every: if opts.smoke { 1 } else { 16 },
        seed: opts.seed,
    };
    let ctx = Ctx {
        tls: tls.clone(),
        ward_pid: ward.pid,
        sampler: &sampler,
    };

    let mut scenarios = Vec::new();
    scenarios.push(
        ctx.scenario(
            "baseline",
            "bare hyper+rustls, fixed body of a Patient read's size",
            false,
            Arc::new(Fixed {
                len: patient_read_bytes,
            }),
            &drive(base.addr),
        )
        .await?,
    );
    let floor = baseline::start_audited(
        &cert,
        &key,
        patient_body,
        cpus,
        baseline::AuditFloor {
            url: format!(
                "sqlite://{}?mode=rwc",
                tmp.path().join("floor-audit.db").display()
            ),
            config: config.audit.writer_config(),
            record: audit_figures::read_record(),
        },
    )
    .await?;
    scenarios.push(
        ctx.scenario(
            "baseline+audit",
            "the baseline, answering after one durable audit record (Ward's writer, SQLite)",
            false,
            Arc::new(Fixed {
                len: patient_read_bytes,
            }),
            &drive(floor.addr),
        )
        .await?,
    );
    drop(floor);
    scenarios.push(
        ctx.scenario(
            "ward read",
            "GET /fhir/Patient/{id}, random loaded id",
            true,
            Arc::new(read),
            &drive(addr),
        )
        .await?,
    );

    scenarios.push(
        ctx.scenario(
            "ward token secret",
            "POST /oauth2/token, client_credentials with client_secret_basic",
            true,
            Arc::new(token_workloads::TokenSecret::new(
                &init.admin_client_id,
                &init.admin_client_secret,
            )?),
            &drive(addr),
        )
        .await?,
    );
    scenarios.push(
        ctx.scenario(
            "ward token private_key_jwt",
            "POST /oauth2/token, client_credentials with an ES384 client assertion (fresh jti, signed by the load generator)",
            true,
            Arc::new(token_workloads::TokenJwt::new(
                jwt_key,
                &jwt_client,
                &format!("https://{addr}/oauth2/token"),
            )),
            &drive(addr),
        )
        .await?,
    );

    if opts.read_only {
        progress("--read-only: skipping search and create");
    } else {
        let search = Search::new(&demo.families, bearer.clone());
        // A fresh connection: Ward may have closed an idle one meanwhile.
        let probe_reply = client::Conn::connect(addr, tls.clone())
            .await?
            .send(search.request_for(0))
            .await
            .context("search probe")?;
        let unavailable = [
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::NOT_IMPLEMENTED,
        ];
        if unavailable.contains(&probe_reply.status) {
            progress(format!(
                "search by family name answered {}: not available",
                probe_reply.status
            ));
            scenarios.push(ScenarioReport::not_available(
                "ward search",
                "GET /fhir/Patient?family=NAME",
                format!(
                    "the server answered HTTP {} to the probe: {}",
                    probe_reply.status.as_u16(),
                    snippet(&probe_reply.body)
                ),
            ));
        } else {
            scenarios.push(
                ctx.scenario(
                    "ward search",
                    "GET /fhir/Patient?family=NAME, default page size",
                    true,
                    Arc::new(search),
                    &drive(addr),
                )
                .await?,
            );
        }
        scenarios.push(
            ctx.scenario(
                "ward create",
                "POST /fhir/Patient, demo-like patient",
                true,
                Arc::new(Create::new(&demo, bearer.clone())?),
                &drive(addr),
            )
            .await?,
        );
    }
    drop(base);

    let rss_after_kib = procfs::status_kib(ward.pid, "VmRSS").unwrap_or(0);
    let vm_hwm_kib = procfs::status_kib(ward.pid, "VmHWM").unwrap_or(0);
    let sampled_peak_kib = sampler.overall_peak_kib();
    drop(sampler);
    let ward_alive = ward.alive();
    let log_tail = ward.log_tail();
    let log_path = ward.log.clone();
    drop(ward); // SIGTERM: Ward logs its audit writer totals as it stops
    let ward_secs: f64 = scenarios
        .iter()
        .filter(|s| s.available && s.name.starts_with("ward"))
        .map(|_| (opts.warmup + opts.duration).as_secs_f64())
        .sum();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let audit_writer = audit_figures::writer_figures(&log, ward_secs);
    let verify_n = opts.audit_records;
    progress(format!(
        "building and verifying an audit log of {verify_n} records"
    ));
    let audit_verify = Some(audit_figures::verify_speed(tmp.path(), verify_n).await?);

    let report = Report::build(
        report::Inputs {
            opts,
            cpus,
            loaded,
            load_secs,
            patient_read_bytes,
            rss_idle_kib,
            sampled_peak_kib,
            vm_hwm_kib,
            rss_after_kib,
            ward_alive,
            log_tail,
            audit_writer,
            audit_verify,
        },
        scenarios,
    );
    Ok(report)
}

struct Ctx<'a> {
    tls: Arc<rustls::ClientConfig>,
    ward_pid: u32,
    sampler: &'a RssSampler,
}

impl Ctx<'_> {
    async fn scenario(
        &self,
        name: &str,
        description: &str,
        is_ward: bool,
        workload: Arc<dyn Workload>,
        drive: &Drive,
    ) -> anyhow::Result<ScenarioReport> {
        progress(format!(
            "{name}: {} connections, {:.0} s warm-up + {:.0} s",
            drive.connections,
            drive.warmup.as_secs_f64(),
            drive.duration.as_secs_f64()
        ));
        let snaps: Arc<Mutex<Vec<CpuSnapshot>>> = Arc::default();
        let pid = self.ward_pid;
        let (s1, s2) = (snaps.clone(), snaps.clone());
        self.sampler.reset_peak();
        let outcome = load::drive(
            workload,
            self.tls.clone(),
            drive,
            move || s1.lock().expect("lock").push(CpuSnapshot::take(pid)),
            move || s2.lock().expect("lock").push(CpuSnapshot::take(pid)),
        )
        .await
        .with_context(|| format!("scenario {name}"))?;
        let rss_peak_kib = self.sampler.peak_kib();
        let snaps = snaps.lock().expect("lock").clone();
        let cpu = match snaps.as_slice() {
            [a, b] => Some((*a, *b)),
            _ => None,
        };
        Ok(ScenarioReport::from_outcome(
            name,
            description,
            is_ward,
            outcome,
            cpu,
            is_ward.then_some(rss_peak_kib),
        ))
    }
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
