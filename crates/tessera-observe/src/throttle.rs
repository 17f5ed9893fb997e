//! Repeated identical errors, logged once and then at most once a period with
//! how often they recurred, so that a failing disk cannot flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages remembered at once; beyond this the oldest are forgotten.
const REMEMBERED: usize = 256;

/// Decides which occurrences of a repeated message are logged.
pub struct Throttle {
    period: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

/// Whether to log this occurrence, and how many were left out since the last one logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Log { suppressed: u64 },
    Skip,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one occurrence of `message` at `now`.
    pub fn check(&self, message: &str, now: Instant) -> Verdict {
        let Ok(mut seen) = self.seen.lock() else {
            return Verdict::Log { suppressed: 0 };
        };
        if let Some(s) = seen.get_mut(message) {
            if now.saturating_duration_since(s.logged_at) < self.period {
                s.suppressed = s.suppressed.saturating_add(1);
                return Verdict::Skip;
            }
            let suppressed = std::mem::take(&mut s.suppressed);
            s.logged_at = now;
            return Verdict::Log { suppressed };
        }
        if seen.len() >= REMEMBERED {
            if let Some(oldest) = seen.iter().min_by_key(|(_, s)| s.logged_at).map(|(k, _)| k.clone()) {
                seen.remove(&oldest);
            }
        }
        seen.insert(
            message.to_owned(),
            Seen {
                logged_at: now,
                suppressed: 0,
            },
        );
        Verdict::Log { suppressed: 0 }
    }
}

/// How long an error line holds back identical ones.
pub const PERIOD: Duration = Duration::from_secs(60);

static ERRORS: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(|| Throttle::new(PERIOD));

/// Whether to log this occurrence of the error `message` now, with how many
/// identical ones were left out since the last one logged. A left-out line is
/// counted in `tessera_log_errors_suppressed_total`.
pub fn admit(message: &str) -> Option<u64> {
    match ERRORS.check(message, Instant::now()) {
        Verdict::Log { suppressed } => Some(suppressed),
        Verdict::Skip => {
            metrics::counter!(crate::metrics::REPEATED_ERRORS).increment(1);
            None
        }
    }
}

/// Logs why the request `request_id` failed (a 500): at most one line per
/// request, and identical causes at most once a minute.
pub fn failure(request_id: &str, operation: &str, cause: &str) {
    if let Some(suppressed) = admit(cause) {
        tracing::error!(
            request_id,
            operation,
            error = cause,
            repeated = suppressed,
            "request failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_message_is_logged_once_a_period_with_its_count() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.check("disk I/O error", t0), Verdict::Log { suppressed: 0 });
        for i in 1..=9 {
            assert_eq!(t.check("disk I/O error", t0 + Duration::from_secs(i)), Verdict::Skip);
        }
        // Another message is not held back by the first.
        assert_eq!(t.check("database is locked", t0), Verdict::Log { suppressed: 0 });
        assert_eq!(
            t.check("disk I/O error", t0 + Duration::from_secs(61)),
            Verdict::Log { suppressed: 9 }
        );
        assert_eq!(t.check("disk I/O error", t0 + Duration::from_secs(62)), Verdict::Skip);
    }

    #[test]
    fn memory_stays_bounded_under_many_distinct_messages() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..10_000 {
            assert!(matches!(t.check(&format!("error {i}"), t0), Verdict::Log { .. }));
        }
        assert!(t.seen.lock().map(|s| s.len()).unwrap_or(0) <= REMEMBERED);
    }
}
