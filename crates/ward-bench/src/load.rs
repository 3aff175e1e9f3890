//! The closed-loop load generator: C tasks, each with its own keep-alive connection, send
//! one request at a time for a warm-up and then for the measured duration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::client::{Conn, Reply};

/// A small deterministic PRNG (SplitMix64): picks ids and names without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What one scenario sends and how its answers are checked.
pub trait Workload: Send + Sync + 'static {
    /// The next request, with a tag that [`Workload::check`] gets back (e.g. which id).
    fn request(&self, rng: &mut Rng) -> (Request<Full<Bytes>>, usize);
    /// Whether a reply is right for the request `tag` stood for; the message says why not.
    fn check(&self, tag: usize, reply: &Reply) -> Result<(), String>;
}

/// How one scenario is driven.
#[derive(Clone, Debug)]
pub struct Drive {
    pub addr: SocketAddr,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Check the content of every n-th reply (1: every reply); status codes are always
    /// checked.
    pub check_every: u64,
    pub seed: u64,
}

/// The merged outcome of all connections.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latencies (µs) of the requests sent in the measured window.
    pub latencies_us: Vec<u32>,
    /// Requests sent in the measured window that got any HTTP answer or failed.
    pub requests: u64,
    /// Answers with a status outside 2xx, in the measured window.
    pub non_2xx: u64,
    /// Requests that got no answer (connection failure, timeout), in the window.
    pub transport_errors: u64,
    /// Replies (any time, warm-up included) that failed their content check.
    pub wrong: u64,
    /// Replies whose content was checked.
    pub checked: u64,
    /// Response body bytes received in the measured window.
    pub body_bytes: u64,
    pub status_counts: BTreeMap<u16, u64>,
    /// The first few problems, for the report.
    pub messages: Vec<String>,
    /// Wall-clock start and end of the measured window.
    pub window: Option<(Instant, Instant)>,
}

const MAX_MESSAGES: usize = 8;

impl Outcome {
    fn note(&mut self, msg: String) {
        if self.messages.len() < MAX_MESSAGES && !self.messages.contains(&msg) {
            self.messages.push(msg);
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.non_2xx += other.non_2xx;
        self.transport_errors += other.transport_errors;
        self.wrong += other.wrong;
        self.checked += other.checked;
        self.body_bytes += other.body_bytes;
        for (k, v) in other.status_counts {
            *self.status_counts.entry(k).or_default() += v;
        }
        for m in other.messages {
            self.note(m);
        }
    }
}

/// Opens the connections, then runs all tasks together. `on_start` and `on_end` are called
/// when the measured window starts and ends (to read CPU and memory counters).
pub async fn drive(
    workload: Arc<dyn Workload>,
    tls: Arc<rustls::ClientConfig>,
    cfg: &Drive,
    on_start: impl FnOnce() + Send + 'static,
    on_end: impl FnOnce() + Send + 'static,
) -> anyhow::Result<Outcome> {
    let mut conns = Vec::with_capacity(cfg.connections);
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..cfg.connections {
        let tls = tls.clone();
        let addr = cfg.addr;
        opening.spawn(async move { Conn::connect(addr, tls).await });
    }
    while let Some(c) = opening.join_next().await {
        conns.push(c?.context("opening the load connections")?);
    }

    // Every task starts on the same signal and shares one measured window.
    let (go, ready) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let workload = workload.clone();
        let mut ready = ready.clone();
        let tls = tls.clone();
        let cfg = cfg.clone();
        tasks.spawn(async move {
            let Ok(Some(start)) = ready.wait_for(Option::is_some).await.map(|s| *s) else {
                return Outcome::default();
            };
            let measure_from = start + cfg.warmup;
            let end = measure_from + cfg.duration;
            let mut rng = Rng::new(cfg.seed ^ (i as u64).wrapping_mul(0x1000_0000_01B3));
            worker(conn, &*workload, tls, &cfg, &mut rng, measure_from, end).await
        });
    }
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    go.send_replace(Some(start));
    let monitor = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        on_start();
        tokio::time::sleep_until(end.into()).await;
        on_end();
    });

    let mut total = Outcome::default();
    while let Some(part) = tasks.join_next().await {
        total.merge(part?);
    }
    monitor.await?;
    total.window = Some((measure_from, end));
    Ok(total)
}

async fn worker(
    mut conn: Conn,
    workload: &dyn Workload,
    tls: Arc<rustls::ClientConfig>,
    cfg: &Drive,
    rng: &mut Rng,
    measure_from: Instant,
    end: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let mut n: u64 = 0;
    let mut broken = false;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let measured = t0 >= measure_from;
        if broken {
            match Conn::connect(cfg.addr, tls.clone()).await {
                Ok(c) => {
                    conn = c;
                    broken = false;
                }
                Err(e) => {
                    out.note(format!("reconnect failed: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let (req, tag) = workload.request(rng);
        let result = conn.send(req).await;
        let elapsed = t0.elapsed();
        if measured {
            out.requests += 1;
            out.latencies_us
                .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        }
        match result {
            Ok(reply) => {
                let status = reply.status.as_u16();
                if measured {
                    *out.status_counts.entry(status).or_default() += 1;
                    out.body_bytes += reply.body.len() as u64;
                }
                if !reply.status.is_success() {
                    if measured {
                        out.non_2xx += 1;
                    }
                    let body = String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
                    out.note(format!("HTTP {status}: {body}"));
                } else if n.is_multiple_of(cfg.check_every) {
                    out.checked += 1;
                    if let Err(msg) = workload.check(tag, &reply) {
                        out.wrong += 1;
                        out.note(msg);
                    }
                }
                n += 1;
            }
            Err(e) => {
                if measured {
                    out.transport_errors += 1;
                }
                out.note(format!("no answer: {e:#}"));
                broken = true;
            }
        }
    }
    out
}

/// The `q`-quantile (0..=1) of sorted latencies, in milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(f64::from(sorted_us[rank - 1]) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&v, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&v, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&v, 1.0), Some(100.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
        assert_eq!(quantile_ms(&[7000], 0.99), Some(7.0));
    }

    #[test]
    fn rng_spreads() {
        let mut r = Rng::new(1);
        let mut seen = [false; 10];
        for _ in 0..200 {
            seen[r.below(10)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
