//! Token buckets keyed by client IP or client id (SPEC SEC-2), for the token endpoint.
//!
//! The buckets live in this process: with several nodes each node limits on its own, so the
//! effective limit is the configured one times the number of nodes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked at once; beyond it, buckets that have refilled are forgotten (a full
/// bucket is what a new key gets anyway), and if that is not enough, all are.
const MAX_KEYS: usize = 100_000;

/// What a bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; `first` is true for the first refusal since the key was last allowed, so the
    /// audit trail gets one record per limited window instead of one per request.
    Limited {
        retry_after: Duration,
        first: bool,
    },
}

struct Bucket {
    tokens: f64,
    at: Instant,
    limited: bool,
}

/// `burst` requests at once, refilled at `per_minute`.
pub struct Buckets<K> {
    burst: f64,
    per_sec: f64,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Buckets {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket if it has one.
    pub fn check(&self, key: &K) -> Decision {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Decision {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            limited: false,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.limited = false;
            return Decision::Allow;
        }
        let first = !b.limited;
        b.limited = true;
        let wait = ((1.0 - b.tokens) / self.per_sec).ceil().max(1.0);
        Decision::Limited {
            retry_after: Duration::from_secs_f64(wait),
            first,
        }
    }
}

/// The key of a client address: an IPv6 client usually holds a whole /64, so it counts as
/// one. An IPv4 client seen on a dual-stack listener (`::ffff:a.b.c.d`) is keyed by its IPv4
/// address, not by the /64 that all IPv4 clients share.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            s[4..].fill(0);
            IpAddr::from(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_with_one_first_refusal_per_window() {
        let b = Buckets::new(60, 2);
        let t0 = Instant::now();
        assert_eq!(b.check_at(&1, t0), Decision::Allow);
        assert_eq!(b.check_at(&1, t0), Decision::Allow);
        let Decision::Limited { retry_after, first } = b.check_at(&1, t0) else {
            panic!("third request in the same instant is limited");
        };
        assert!(first);
        assert_eq!(retry_after, Duration::from_secs(1));
        assert!(matches!(
            b.check_at(&1, t0),
            Decision::Limited { first: false, .. }
        ));
        // another key is independent
        assert_eq!(b.check_at(&2, t0), Decision::Allow);
        // one token a second comes back
        assert_eq!(b.check_at(&1, t0 + Duration::from_secs(1)), Decision::Allow);
        assert!(matches!(
            b.check_at(&1, t0 + Duration::from_secs(1)),
            Decision::Limited { first: true, .. }
        ));
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
    }

    #[test]
    fn ipv4_mapped_clients_count_per_ipv4_address() {
        let a: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let b: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_ne!(ip_key(a), ip_key(b));
        assert_eq!(ip_key(a), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
