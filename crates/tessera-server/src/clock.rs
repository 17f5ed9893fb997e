//! The server's clock: system time plus an offset that only `--test-clock` can move.

use tessera_core::clock::{ClockOffset, OffsetOutOfRange};
use tessera_core::Clock;
use time::OffsetDateTime;

#[derive(Debug, Default)]
pub struct ServerClock {
    offset: ClockOffset,
}

impl ServerClock {
    /// The system clock; tests move it with [`ServerClock::advance`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves business time; returns the total offset in seconds.
    pub fn advance(&self, secs: i64) -> Result<i64, OffsetOutOfRange> {
        self.offset.advance(secs)
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
        let t = self.offset.apply(OffsetDateTime::now_utc());
        t.replace_nanosecond(0).unwrap_or(t)
    }
}
