//! The benchmark's results: a table for people, JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::Options;
use crate::load::{Outcome, quantile_ms};
use crate::procfs::CpuSnapshot;

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// One scenario's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub available: bool,
    /// Why the scenario was not run.
    pub unavailable_reason: Option<String>,
    /// Requests sent in the measured window.
    pub requests: u64,
    pub rps: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Non-2xx answers plus requests without an answer.
    pub errors: u64,
    pub non_2xx: u64,
    pub transport_errors: u64,
    /// Replies whose content was checked, and how many of those were wrong.
    pub checked: u64,
    pub wrong: u64,
    pub mean_response_bytes: Option<u64>,
    pub status_counts: BTreeMap<u16, u64>,
    /// This scenario's rps divided by the baseline's.
    pub ratio_to_baseline: Option<f64>,
    /// CPU cores busy on average during the measured window: the load generator, and the
    /// server under test (Ward's process, or the baseline's threads).
    pub client_cpu_cores: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    /// Busy CPU not charged to the client or to either server: other processes on the
    /// machine, and kernel work (e.g. loopback networking in interrupts) charged to no one.
    pub other_cpu_cores: Option<f64>,
    /// Server CPU time per request (µs): the cost of one request, less dependent on how
    /// the machine is shared than rps.
    pub server_cpu_us_per_request: Option<f64>,
    /// Ward's peak resident memory during this scenario (sampled every 100 ms).
    pub ward_rss_peak_mib: Option<f64>,
    /// The first few problems seen.
    pub messages: Vec<String>,
}

impl ScenarioReport {
    pub fn not_available(name: &str, description: &str, reason: String) -> ScenarioReport {
        ScenarioReport {
            name: name.into(),
            description: description.into(),
            available: false,
            unavailable_reason: Some(reason),
            requests: 0,
            rps: None,
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
            errors: 0,
            non_2xx: 0,
            transport_errors: 0,
            checked: 0,
            wrong: 0,
            mean_response_bytes: None,
            status_counts: BTreeMap::new(),
            ratio_to_baseline: None,
            client_cpu_cores: None,
            server_cpu_cores: None,
            other_cpu_cores: None,
            server_cpu_us_per_request: None,
            ward_rss_peak_mib: None,
            messages: Vec::new(),
        }
    }

    pub(crate) fn from_outcome(
        name: &str,
        description: &str,
        is_ward: bool,
        mut o: Outcome,
        cpu: Option<(CpuSnapshot, CpuSnapshot)>,
        rss_peak_kib: Option<u64>,
    ) -> ScenarioReport {
        o.latencies_us.sort_unstable();
        let secs = o.window.map(|(a, b)| (b - a).as_secs_f64()).filter(|s| *s > 0.0);
        let (client, server, other) = match (cpu, secs) {
            (Some((a, b)), Some(secs)) => {
                let bench = b.bench_process - a.bench_process;
                let client = b.client_threads - a.client_threads;
                let base = bench - client;
                let ward = b.ward - a.ward;
                let server = if is_ward { ward } else { base };
                let other = (b.machine_busy - a.machine_busy - bench - ward).max(0.0);
                (
                    Some(round(client / secs, 2)),
                    Some(round(server / secs, 2)),
                    Some(round(other / secs, 2)),
                )
            }
            _ => (None, None, None),
        };
        let answered = o.requests - o.transport_errors;
        ScenarioReport {
            name: name.into(),
            description: description.into(),
            available: true,
            unavailable_reason: None,
            requests: o.requests,
            rps: secs.map(|s| round(o.requests as f64 / s, 1)),
            p50_ms: quantile_ms(&o.latencies_us, 0.50).map(|x| round(x, 3)),
            p99_ms: quantile_ms(&o.latencies_us, 0.99).map(|x| round(x, 3)),
            max_ms: quantile_ms(&o.latencies_us, 1.0).map(|x| round(x, 3)),
            errors: o.non_2xx + o.transport_errors,
            non_2xx: o.non_2xx,
            transport_errors: o.transport_errors,
            checked: o.checked,
            wrong: o.wrong,
            mean_response_bytes: (answered > 0).then(|| o.body_bytes / answered),
            status_counts: o.status_counts,
            ratio_to_baseline: None,
            client_cpu_cores: client,
            server_cpu_cores: server,
            other_cpu_cores: other,
            server_cpu_us_per_request: match (server, o.requests) {
                (Some(cores), n) if n > 0 => secs.map(|s| round(cores * s / n as f64 * 1e6, 1)),
                _ => None,
            },
            ward_rss_peak_mib: rss_peak_kib.map(mib),
            messages: o.messages,
        }
    }
}

/// One SPEC §4 figure checked against its target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub id: String,
    pub what: String,
    pub value: Option<f64>,
    pub limit: f64,
    /// `None` when the figure could not be measured.
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub patients: usize,
    pub connections: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub seed: u64,
    pub smoke: bool,
    pub ward_bin: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: String,
    pub arch: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct WardFigures {
    /// Resources stored by the demo loader (patients and their clinical resources).
    pub resources_loaded: usize,
    pub load_secs: f64,
    /// Bytes of one demo Patient read; the baseline serves a body of exactly this size.
    pub patient_read_bytes: usize,
    /// After start and `/readyz`, before any authenticated request.
    pub rss_idle_mib: f64,
    /// Highest `VmRSS` sampled every 100 ms during the scenarios.
    pub rss_peak_sampled_mib: f64,
    /// The kernel's own high-water mark (`VmHWM`) for the process at the end.
    pub rss_high_water_mib: f64,
    pub rss_after_mib: f64,
    /// How the audit writer batched this run's records (from Ward's shutdown log).
    pub audit_writer: Option<crate::audit_figures::WriterFigures>,
    /// `ward audit verify` over a freshly built log.
    pub audit_verify: Option<crate::audit_figures::VerifyFigures>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub machine: Machine,
    pub ward: WardFigures,
    pub scenarios: Vec<ScenarioReport>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    /// Wrong responses (and in smoke mode any non-2xx): a smoke run fails on these.
    pub failures: Vec<String>,
}

pub(crate) struct Inputs<'a> {
    pub opts: &'a Options,
    pub cpus: usize,
    pub loaded: usize,
    pub load_secs: f64,
    pub patient_read_bytes: usize,
    pub rss_idle_kib: u64,
    pub sampled_peak_kib: u64,
    pub vm_hwm_kib: u64,
    pub rss_after_kib: u64,
    pub ward_alive: bool,
    pub log_tail: String,
    pub audit_writer: Option<crate::audit_figures::WriterFigures>,
    pub audit_verify: Option<crate::audit_figures::VerifyFigures>,
}

impl Report {
    pub(crate) fn build(i: Inputs<'_>, mut scenarios: Vec<ScenarioReport>) -> Report {
        let baseline_rps = scenarios
            .iter()
            .find(|s| s.name == "baseline")
            .and_then(|s| s.rps)
            .filter(|r| *r > 0.0);
        for s in &mut scenarios {
            s.ratio_to_baseline = match (s.rps, baseline_rps) {
                (Some(r), Some(b)) => Some(round(r / b, 3)),
                _ => None,
            };
        }
        let read = scenarios.iter().find(|s| s.name == "ward read");
        let peak_kib = i.sampled_peak_kib.max(i.vm_hwm_kib);
        let target = |id: &str, what: &str, value: Option<f64>, limit: f64, at_least: bool| Target {
            id: id.into(),
            what: what.into(),
            value,
            limit,
            met: value.map(|v| if at_least { v >= limit } else { v < limit }),
        };
        let targets = vec![
            target(
                "P-1",
                "read rps / baseline rps, at least",
                read.and_then(|r| r.ratio_to_baseline),
                0.5,
                true,
            ),
            target(
                "P-1",
                "read p99 latency (ms), under",
                read.and_then(|r| r.p99_ms),
                10.0,
                false,
            ),
            target(
                "P-3",
                "audit verify records/s, at least",
                i.audit_verify.as_ref().map(|v| v.records_per_sec),
                500_000.0,
                true,
            ),
            target(
                "P-4",
                "RSS idle (MiB), under",
                Some(mib(i.rss_idle_kib)),
                100.0,
                false,
            ),
            target(
                "P-4",
                "RSS peak under load (MiB), under",
                Some(mib(peak_kib)),
                300.0,
                false,
            ),
        ];

        let mut failures = Vec::new();
        for s in scenarios.iter().filter(|s| s.available) {
            if s.requests == 0 {
                failures.push(format!("{}: no request completed", s.name));
            }
            if s.wrong > 0 {
                failures.push(format!(
                    "{}: {} of {} checked responses were wrong: {}",
                    s.name,
                    s.wrong,
                    s.checked,
                    s.messages.join(" | ")
                ));
            }
            if i.opts.smoke && s.errors > 0 {
                failures.push(format!(
                    "{}: {} errors ({} non-2xx, {} without answer): {}",
                    s.name,
                    s.errors,
                    s.non_2xx,
                    s.transport_errors,
                    s.messages.join(" | ")
                ));
            }
        }
        if !i.ward_alive {
            failures.push(format!("ward serve exited during the run:\n{}", i.log_tail));
        }

        let mut notes = Vec::new();
        let busy = |name: &str| {
            scenarios
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| Some((s.client_cpu_cores?, s.server_cpu_cores?)))
        };
        let mut cpu_note = format!(
            "Client and servers share this machine's {} CPU(s). The load generator's CPU cost grows with the request rate, so it takes more from the (fast) baseline than from Ward: the ratio to the baseline is, if anything, flattering to Ward, and a dedicated client machine would measure higher absolute rps for both. `srv µs/r` (server CPU per request) does not depend on that sharing.",
            i.cpus
        );
        if let Some((c, s)) = busy("baseline") {
            let _ = write!(cpu_note, " Baseline: client {c:.2} cores, server {s:.2}.");
        }
        if let Some((c, s)) = busy("ward read") {
            let _ = write!(cpu_note, " Ward read: client {c:.2} cores, Ward {s:.2}.");
        }
        notes.push(cpu_note);
        let disturbed: Vec<String> = scenarios
            .iter()
            .filter_map(|s| Some((s, s.other_cpu_cores?)))
            .filter(|(_, o)| *o >= 0.25)
            .map(|(s, o)| format!("{} {o:.2} cores", s.name))
            .collect();
        if !disturbed.is_empty() {
            notes.push(format!(
                "CPU busy outside the client and the servers (other processes, or kernel time charged to no process): {}. Other work on the machine lowers the figures; rerun on a quiet machine to compare runs.",
                disturbed.join(", ")
            ));
        }
        notes.push(
            "Closed loop: each connection sends its next request when the previous answer has arrived; latency is measured from send to the last body byte. TLS 1.3 (aws-lc-rs), HTTP/1.1 keep-alive, loopback.".into(),
        );
        notes.push(format!(
            "Ward runs as `ward serve` in a subprocess with its default configuration (all safeguards on, request log to a file, WARD_LOG={}) except the token endpoint's rate limits and concurrent-check cap, raised so the token scenarios measure the endpoint itself; demo data loaded before start with ward::demo::load_synthetic. Creates add patients during the create scenario.",
            std::env::var("WARD_LOG").unwrap_or_else(|_| "info (default)".into())
        ));
        if !i.opts.smoke {
            notes.push("Response content is checked on every 16th reply (every reply with --smoke); status codes on all.".into());
        }
        for s in scenarios.iter().filter(|s| !s.available) {
            notes.push(format!(
                "{}: not available ({}).",
                s.name,
                s.unavailable_reason.as_deref().unwrap_or("?")
            ));
        }

        Report {
            settings: Settings {
                patients: i.opts.patients,
                connections: i.opts.connections,
                duration_secs: i.opts.duration.as_secs_f64(),
                warmup_secs: i.opts.warmup.as_secs_f64(),
                seed: i.opts.seed,
                smoke: i.opts.smoke,
                ward_bin: i.opts.ward_bin.display().to_string(),
            },
            machine: Machine {
                cpus: i.cpus,
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
            },
            ward: WardFigures {
                resources_loaded: i.loaded,
                load_secs: round(i.load_secs, 2),
                patient_read_bytes: i.patient_read_bytes,
                rss_idle_mib: mib(i.rss_idle_kib),
                rss_peak_sampled_mib: mib(i.sampled_peak_kib),
                rss_high_water_mib: mib(i.vm_hwm_kib),
                rss_after_mib: mib(i.rss_after_kib),
                audit_writer: i.audit_writer.clone(),
                audit_verify: i.audit_verify.clone(),
            },
            scenarios,
            targets,
            notes,
            failures,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let st = &self.settings;
        let _ = writeln!(
            t,
            "ward-bench: {} patients, {} connections, {:.0} s warm-up + {:.0} s per scenario, {} CPU(s){}",
            st.patients,
            st.connections,
            st.warmup_secs,
            st.duration_secs,
            self.machine.cpus,
            if st.smoke { ", smoke" } else { "" }
        );
        let _ = writeln!(
            t,
            "Patient read body: {} bytes; {} resources loaded in {:.1} s",
            self.ward.patient_read_bytes, self.ward.resources_loaded, self.ward.load_secs
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<12} {:>10} {:>8} {:>8} {:>8} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}",
            "scenario",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "ratio",
            "resp B",
            "cli CPU",
            "srv CPU",
            "oth CPU",
            "srv µs/r",
            "RSS MiB"
        );
        let opt = |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_owned(), |x| format!("{x:.p$}"));
        for s in &self.scenarios {
            if !s.available {
                let _ = writeln!(
                    t,
                    "{:<12} not available ({})",
                    s.name,
                    s.unavailable_reason.as_deref().unwrap_or("?")
                );
                continue;
            }
            let _ = writeln!(
                t,
                "{:<12} {:>10} {:>8} {:>8} {:>8} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8}",
                s.name,
                opt(s.rps, 1),
                opt(s.p50_ms, 2),
                opt(s.p99_ms, 2),
                opt(s.max_ms, 1),
                s.errors,
                opt(s.ratio_to_baseline, 3),
                s.mean_response_bytes
                    .map_or_else(|| "-".into(), |b| b.to_string()),
                opt(s.client_cpu_cores, 2),
                opt(s.server_cpu_cores, 2),
                opt(s.other_cpu_cores, 2),
                opt(s.server_cpu_us_per_request, 0),
                opt(s.ward_rss_peak_mib, 1),
            );
        }
        let _ = writeln!(
            t,
            "(ratio: req/s over the baseline's; resp B: mean response body; cli/srv CPU: cores busy on average, \
             load generator / server under test / anything else; srv µs/r: server CPU time per request; RSS: Ward's peak)"
        );
        let w = &self.ward;
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "Ward RSS: idle {:.1} MiB, peak {:.1} MiB sampled (VmHWM {:.1} MiB), {:.1} MiB after the run",
            w.rss_idle_mib, w.rss_peak_sampled_mib, w.rss_high_water_mib, w.rss_after_mib
        );
        if let Some(a) = &w.audit_writer {
            let _ = writeln!(
                t,
                "Audit writer: {} records committed durably in {} group commits (mean batch {:.1}), {:.0} records/s over the Ward scenarios",
                a.records, a.batches, a.mean_batch, a.records_per_sec
            );
        }
        if let Some(v) = &w.audit_verify {
            let _ = writeln!(
                t,
                "Audit verify: {} records (built in {:.1} s) verified in {:.2} s: {:.0} records/s",
                v.records, v.build_secs, v.verify_secs, v.records_per_sec
            );
        }
        let _ = writeln!(t, "SPEC §4 targets:");
        for g in &self.targets {
            let verdict = match g.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            let _ = writeln!(
                t,
                "  {} {:<36} {:>9} (limit {}) {}",
                g.id,
                g.what,
                opt(g.value, 2),
                g.limit,
                verdict
            );
        }
        let _ = writeln!(t, "Notes:");
        for n in &self.notes {
            let _ = writeln!(t, "  - {n}");
        }
        for s in self.scenarios.iter().filter(|s| s.errors > 0 || s.wrong > 0) {
            let _ = writeln!(
                t,
                "{}: statuses {:?}; first problems: {}",
                s.name,
                s.status_counts,
                s.messages.join(" | ")
            );
        }
        if self.failures.is_empty() {
            let _ = writeln!(t, "Responses: all checked responses were correct.");
        } else {
            let _ = writeln!(t, "FAILURES:");
            for f in &self.failures {
                let _ = writeln!(t, "  - {f}");
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn outcome(requests: u64, non_2xx: u64, wrong: u64) -> Outcome {
        let now = Instant::now();
        Outcome {
            latencies_us: vec![1000; requests as usize],
            requests,
            non_2xx,
            wrong,
            checked: requests,
            window: Some((now, now + Duration::from_secs(1))),
            ..Outcome::default()
        }
    }

    fn inputs(opts: &Options) -> Inputs<'_> {
        Inputs {
            opts,
            cpus: 2,
            loaded: 10,
            load_secs: 0.1,
            patient_read_bytes: 800,
            rss_idle_kib: 20 * 1024,
            sampled_peak_kib: 40 * 1024,
            vm_hwm_kib: 41 * 1024,
            rss_after_kib: 39 * 1024,
            ward_alive: true,
            log_tail: String::new(),
            audit_writer: None,
            audit_verify: None,
        }
    }

    fn scenarios(read_non_2xx: u64, read_wrong: u64) -> Vec<ScenarioReport> {
        vec![
            ScenarioReport::from_outcome("baseline", "", false, outcome(1000, 0, 0), None, None),
            ScenarioReport::from_outcome(
                "ward read",
                "",
                true,
                outcome(600, read_non_2xx, read_wrong),
                None,
                Some(30 * 1024),
            ),
            ScenarioReport::not_available("ward search", "", "HTTP 405".into()),
        ]
    }

    #[test]
    fn ratios_targets_and_table() {
        let opts = Options::full("ward".into());
        let r = Report::build(inputs(&opts), scenarios(0, 0));
        assert_eq!(r.scenarios[1].ratio_to_baseline, Some(0.6));
        assert_eq!(r.scenarios[1].rps, Some(600.0));
        assert_eq!(r.targets[0].met, Some(true));
        assert_eq!(r.targets[4].value, Some(41.0));
        assert!(r.failures.is_empty());
        let table = r.table();
        assert!(table.contains("ward search  not available (HTTP 405)"), "{table}");
        serde_json::to_string(&r).unwrap();
    }

    #[test]
    fn wrong_responses_always_fail_errors_only_in_smoke() {
        let full = Options::full("ward".into());
        assert_eq!(Report::build(inputs(&full), scenarios(0, 1)).failures.len(), 1);
        assert!(Report::build(inputs(&full), scenarios(3, 0)).failures.is_empty());
        let smoke = Options::smoke("ward".into());
        assert_eq!(Report::build(inputs(&smoke), scenarios(3, 0)).failures.len(), 1);
    }
}
