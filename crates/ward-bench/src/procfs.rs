//! Linux `/proc` readings: resident memory of the Ward process and CPU time of the client,
//! the in-process baseline server and Ward.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// A `VmRSS`/`VmHWM`-style field of `/proc/PID/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
fn stat_cpu_secs(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU seconds used so far by process `pid`.
pub fn process_cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat")).unwrap_or(0.0)
}

/// CPU seconds used so far by the threads of this process whose name starts with `prefix`
/// (at most 15 bytes: the kernel truncates thread names).
pub fn own_threads_cpu_secs(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .filter_map(|t| stat_cpu_secs(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// Samples a process's resident memory every 100 ms on its own thread, keeping the peak
/// since the last [`RssSampler::reset_peak`] and over the whole run.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    overall: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let overall = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak, overall) = (stop.clone(), peak.clone(), overall.clone());
            std::thread::Builder::new()
                .name("bench-rss".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(kib) = status_kib(pid, "VmRSS") {
                            peak.fetch_max(kib, Ordering::Relaxed);
                            overall.fetch_max(kib, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .expect("spawn the RSS sampler")
        };
        RssSampler {
            stop,
            peak,
            overall,
            thread: Some(thread),
        }
    }

    pub fn reset_peak(&self) {
        self.peak.store(0, Ordering::Relaxed);
    }

    /// Peak KiB since the last reset.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Peak KiB since the sampler started.
    pub fn overall_peak_kib(&self) -> u64 {
        self.overall.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU seconds of (whole bench process, its load generator's threads, Ward process) at one
/// moment; differences of two give each side's use over an interval. In the bench process,
/// whatever is not the load generator serves the baseline scenarios: the baseline's runtime
/// and the threads its audit writer starts (writer, syncer, checkpointer).
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    pub bench_process: f64,
    pub client_threads: f64,
    pub ward: f64,
    /// Busy (not idle, not iowait) CPU seconds of the whole machine.
    pub machine_busy: f64,
}

impl CpuSnapshot {
    pub fn take(ward_pid: u32) -> CpuSnapshot {
        CpuSnapshot {
            bench_process: process_cpu_secs(std::process::id()),
            client_threads: own_threads_cpu_secs(crate::CLIENT_THREAD_NAME),
            ward: process_cpu_secs(ward_pid),
            machine_busy: machine_busy_secs().unwrap_or(0.0),
        }
    }
}

/// Busy CPU seconds of all CPUs since boot, from the `cpu` line of `/proc/stat`.
fn machine_busy_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // already counted in user and nice.
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 8 {
        return None;
    }
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    Some(busy / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS").unwrap() > 0);
        assert!(process_cpu_secs(pid) >= 0.0);
        assert!(machine_busy_secs().unwrap() > 0.0);
    }
}
