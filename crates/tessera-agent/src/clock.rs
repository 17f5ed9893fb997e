//! Time for the agent: the system clock (plus test offsets) behind
//! [`tessera_core::Clock`], and a guard that keeps business time from running
//! backwards when the system clock is set back.

use std::time::{Duration, Instant};

use tessera_core::clock::{ClockOffset, OffsetOutOfRange};
use tessera_core::Clock;
use time::OffsetDateTime;

/// The system clock plus an offset: the configured `--clock-offset-seconds`,
/// and whatever the test clock endpoint has added.
#[derive(Debug, Default)]
pub struct AgentClock {
    offset: ClockOffset,
}

impl AgentClock {
    pub fn new(offset_secs: i64) -> Result<Self, OffsetOutOfRange> {
        Ok(Self {
            offset: ClockOffset::new(offset_secs)?,
        })
    }

    /// Moves this clock by `secs`; returns the total offset in seconds.
    pub fn advance(&self, secs: i64) -> Result<i64, OffsetOutOfRange> {
        self.offset.advance(secs)
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset.get()
    }
}

impl Clock for AgentClock {
    fn now(&self) -> OffsetDateTime {
        self.offset.apply(OffsetDateTime::now_utc())
    }
}

/// Business time that never runs backwards.
///
/// It is the later of the clock and the latest time seen, where the latest
/// time seen keeps running on the monotonic clock while the process lives.
/// So setting the system clock back neither revives an expired license nor
/// freezes time (a trial still runs out); across a restart, time resumes from
/// the persisted latest time seen.
#[derive(Debug)]
pub(crate) struct TimeGuard {
    latest: OffsetDateTime,
    mark: Instant,
    tolerance: Duration,
    warned: bool,
}

impl TimeGuard {
    pub fn new(latest_seen: OffsetDateTime, tolerance: Duration) -> Self {
        Self {
            latest: latest_seen,
            mark: Instant::now(),
            tolerance,
            warned: false,
        }
    }

    /// Business time now, given the clock's reading. Whole seconds, like the API shows.
    pub fn observe(&mut self, clock_now: OffsetDateTime) -> OffsetDateTime {
        let mark = Instant::now();
        // A latest time near the end of the calendar (a tampered state file) stops here rather than overflowing.
        let elapsed =
            time::Duration::try_from(mark.saturating_duration_since(self.mark)).unwrap_or(time::Duration::ZERO);
        let carried = self.latest.checked_add(elapsed).unwrap_or(self.latest);
        let behind = carried - clock_now;
        if behind > self.tolerance {
            if !self.warned {
                tracing::warn!(
                    behind_seconds = behind.whole_seconds(),
                    latest_seen = %crate::timefmt::format(carried),
                    "the system clock is behind the latest time this agent has seen; \
                     business time continues from the latest time seen"
                );
                self.warned = true;
            }
        } else {
            self.warned = false;
        }
        self.latest = carried.max(clock_now);
        self.mark = mark;
        truncate(self.latest)
    }

    /// The latest time seen, for persisting.
    pub fn latest(&self) -> OffsetDateTime {
        truncate(self.latest)
    }
}

fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn time_never_goes_back() {
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        let mut g = TimeGuard::new(t0, Duration::from_secs(300));
        assert_eq!(g.observe(t0 + time::Duration::hours(1)), t0 + time::Duration::hours(1));
        // The clock is set back a day: business time stays at (or after) the latest seen.
        let got = g.observe(t0 - time::Duration::days(1));
        assert!(got >= t0 + time::Duration::hours(1), "{got}");
        assert!(g.warned);
        // The clock is fixed again.
        assert_eq!(g.observe(t0 + time::Duration::hours(2)), t0 + time::Duration::hours(2));
        assert!(!g.warned);
    }

    #[test]
    fn small_steps_back_within_tolerance_are_not_reported() {
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        let mut g = TimeGuard::new(t0, Duration::from_secs(300));
        g.observe(t0 - time::Duration::seconds(100));
        assert!(!g.warned);
    }

    #[test]
    fn the_clock_offset_moves_time() {
        let c = AgentClock::new(-60).unwrap();
        assert_eq!(c.advance(120), Ok(60));
        assert!(c.advance(i64::MAX).is_err());
        assert!(AgentClock::new(i64::MIN).is_err());
        let d = c.now() - OffsetDateTime::now_utc();
        assert!((d.whole_seconds() - 60).abs() <= 1, "{d}");
    }
}
