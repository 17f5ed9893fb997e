//! The server's clock: system time plus an offset that only `--test-clock` can move.

use std::sync::atomic::{AtomicI64, Ordering};

use tessera_core::Clock;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Default)]
pub struct ServerClock {
    offset_secs: AtomicI64,
}

impl ServerClock {
    pub fn new(offset_secs: i64) -> Self {
        Self {
            offset_secs: AtomicI64::new(offset_secs),
        }
    }

    /// Moves business time forward; returns the total offset in seconds.
    pub fn advance(&self, secs: i64) -> i64 {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst) + secs
    }

    /// Real time, for SigV4 skew checks, which must not follow the test offset.
    pub fn wall(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl Clock for ServerClock {
    /// Whole seconds: the API writes times as `2026-11-22T01:02:03Z`, and an
    /// expiry must not be later than the time the response reports.
    fn now(&self) -> OffsetDateTime {
        let t = OffsetDateTime::now_utc() + Duration::seconds(self.offset_secs.load(Ordering::Relaxed));
        t.replace_nanosecond(0).unwrap_or(t)
    }
}
