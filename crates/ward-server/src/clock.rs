//! The time that sessions, logins and authorization codes are judged by (SPEC AC-6).
//!
//! Production uses the system clock. Tests of expiry must not sleep, so a `Clock` can be
//! moved forward ([`Clock::advance`]). Only Rust code holding the `Clock` can do that: it
//! lives in `Config::clock`, which serde skips, so no configuration file, environment
//! variable or request can set it. `ward serve` never calls `advance`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// The system clock plus an offset (seconds) that only tests change. Clones share the offset.
#[derive(Clone, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("offset_secs", &self.offset_secs.load(Ordering::Relaxed))
            .finish()
    }
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        let offset = time::Duration::seconds(self.offset_secs.load(Ordering::Relaxed));
        now.checked_add(offset).unwrap_or(now)
    }

    /// Unix seconds of [`Clock::now`].
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Moves this clock (and its clones) forward by `secs` seconds. For tests.
    pub fn advance(&self, secs: i64) {
        let _ = self
            .offset_secs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_add(secs))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let c = Clock::default();
        let d = c.clone();
        let before = d.unix();
        c.advance(3600);
        assert!(d.unix() >= before + 3600);
    }
}
