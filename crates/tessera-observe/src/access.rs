//! The access line: one per request, with the same fields on every surface,
//! and the request counters and latency histogram that go with it.

use std::time::Duration;

use crate::metrics::{REQUESTS, REQUEST_DURATION};

/// What a handler tells the access line about its request; put into the
/// response's extensions. Every label value is from a fixed set.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The operation's name (`CheckoutLicense`, `GET /v1/settings`).
    pub operation: &'static str,
    /// The exception name or error code answered; None for a success.
    pub error: Option<&'static str>,
    pub account_id: Option<String>,
    pub access_key_id: Option<String>,
    /// Probes and scrapes: logged at debug, not info.
    pub quiet: bool,
}

/// The error code or exception name an answer carries, put into the
/// response's extensions where the error is rendered, so that the access line
/// of a request that never reached an operation still names its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Answered(pub &'static str);

/// Logs the request's access line and counts it.
pub fn record(request_id: &str, outcome: &Outcome, status: u16, elapsed: Duration) {
    let result = outcome.error.unwrap_or("ok");
    metrics::counter!(REQUESTS, "operation" => outcome.operation, "outcome" => result).increment(1);
    metrics::histogram!(REQUEST_DURATION, "operation" => outcome.operation).record(elapsed.as_secs_f64());
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    let account_id = outcome.account_id.as_deref().unwrap_or("-");
    let access_key_id = outcome.access_key_id.as_deref().unwrap_or("-");
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "tessera::access",
                request_id,
                operation = outcome.operation,
                status,
                outcome = result,
                latency_ms,
                account_id,
                access_key_id,
                "request"
            )
        };
    }
    if outcome.quiet {
        line!(debug);
    } else {
        line!(info);
    }
}
