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
