//! The one way Tessera reads the time, so that expiry is testable without sleeping.

use time::OffsetDateTime;

/// A source of "now". Production uses the system clock; tests may shift it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// A clock fixed at one instant, for unit tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// The most a clock offset may reach either way: a century, far inside the
/// dates `time` represents, so adding it to the time cannot overflow.
pub const MAX_OFFSET_SECS: i64 = 100 * 366 * 86_400;

/// Seconds added to the system clock: a test clock moved forward, or an
/// agent told its clock is set wrong. Every change is checked against
/// [`MAX_OFFSET_SECS`], so applying it cannot overflow.
#[derive(Debug, Default)]
pub struct ClockOffset(std::sync::atomic::AtomicI64);

/// An offset that would leave the range a clock may be moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetOutOfRange;

impl std::fmt::Display for OffsetOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a clock may be moved at most {MAX_OFFSET_SECS} seconds (a century) either way"
        )
    }
}

impl ClockOffset {
    pub fn new(secs: i64) -> Result<Self, OffsetOutOfRange> {
        if secs.checked_abs().is_some_and(|a| a <= MAX_OFFSET_SECS) {
            Ok(Self(secs.into()))
        } else {
            Err(OffsetOutOfRange)
        }
    }

    /// Moves the offset by `secs`; returns the new total, or refuses and keeps the old one.
    pub fn advance(&self, secs: i64) -> Result<i64, OffsetOutOfRange> {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                old.checked_add(secs)
                    .filter(|t| t.checked_abs().is_some_and(|a| a <= MAX_OFFSET_SECS))
            })
            .map(|old| old + secs)
            .map_err(|_| OffsetOutOfRange)
    }

    pub fn get(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `t` moved by the offset.
    pub fn apply(&self, t: OffsetDateTime) -> OffsetDateTime {
        t.checked_add(time::Duration::seconds(self.get())).unwrap_or(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_within_a_century() {
        let o = ClockOffset::new(10).unwrap();
        assert_eq!(o.advance(5), Ok(15));
        assert_eq!(o.advance(i64::MAX), Err(OffsetOutOfRange));
        assert_eq!(o.advance(MAX_OFFSET_SECS), Err(OffsetOutOfRange));
        assert_eq!(o.get(), 15);
        assert_eq!(o.advance(-15 - MAX_OFFSET_SECS), Ok(-MAX_OFFSET_SECS));
        assert!(ClockOffset::new(i64::MIN).is_err());
        let t = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(o.apply(t), t - time::Duration::seconds(MAX_OFFSET_SECS));
    }
}
