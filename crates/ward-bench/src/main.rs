//! `ward-bench`: Ward against a bare hyper+rustls baseline (SPEC §4). Needs the `ward`
//! binary: `cargo build --release -p ward` puts it beside this one in `target/release`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ward_bench::Options;

#[derive(Parser)]
#[command(
    name = "ward-bench",
    about = "Load benchmark: Ward read/search/create against a bare hyper+rustls server, over TLS with keep-alive"
)]
struct Cli {
    /// Demo patients to load [default: 1000; 20 with --smoke]
    #[arg(long)]
    patients: Option<usize>,
    /// Concurrent keep-alive connections [default: 64; 4 with --smoke]
    #[arg(long)]
    connections: Option<usize>,
    /// Measured seconds per scenario [default: 10; 1 with --smoke]
    #[arg(long)]
    duration: Option<f64>,
    /// Unmeasured warm-up seconds before each scenario [default: 2; 0 with --smoke]
    #[arg(long)]
    warmup: Option<f64>,
    /// Seed of the synthetic data set and of the request mix
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the report as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Tiny run that checks every response and exits non-zero on a wrong one (never on speed)
    #[arg(long)]
    smoke: bool,
    /// Records in the audit log `ward audit verify` is timed on [default: 500000; 2000 with --smoke]
    #[arg(long)]
    audit_records: Option<usize>,
    /// Run only the baseline and read scenarios (e.g. while profiling the read path)
    #[arg(long)]
    read_only: bool,
    /// The ward binary [default: `ward` beside this executable]
    #[arg(long, value_name = "PATH")]
    ward_bin: Option<PathBuf>,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("--{what} must be a non-negative number of seconds"))
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    let ward_bin = match &cli.ward_bin {
        Some(p) => p.clone(),
        None => ward_bench::ward_bin_beside_current_exe()?,
    };
    let mut o = if cli.smoke {
        Options::smoke(ward_bin)
    } else {
        Options::full(ward_bin)
    };
    o.seed = cli.seed;
    o.read_only = cli.read_only;
    if let Some(n) = cli.patients {
        o.patients = n;
    }
    if let Some(n) = cli.connections {
        o.connections = n;
    }
    if let Some(s) = cli.duration {
        o.duration = secs(s, "duration")?;
    }
    if let Some(s) = cli.warmup {
        o.warmup = secs(s, "warmup")?;
    }
    if let Some(n) = cli.audit_records {
        o.audit_records = n;
    }
    Ok(o)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = options(&cli).and_then(|opts| {
        let report = ward_bench::run(&opts)?;
        print!("{}", report.table());
        if let Some(path) = &cli.json {
            ward_bench::write_json(&report, path)?;
            eprintln!("ward-bench: wrote {}", path.display());
        }
        Ok(report)
    });
    match result {
        Ok(report) if cli.smoke && !report.failures.is_empty() => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
