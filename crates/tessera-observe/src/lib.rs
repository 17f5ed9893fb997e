//! What operators see of a running Tessera: log set-up (text or JSON lines),
//! one access line per request, Prometheus metrics, and repeated errors
//! logged once a minute instead of once per occurrence. The server, the
//! agent and the CLI all set up their logs and metrics here.

pub mod access;
pub mod logging;
pub mod metrics;
pub mod throttle;

pub use access::Outcome;
pub use logging::LogFormat;
pub use throttle::Throttle;

/// An error with every cause under it (`request failed: error sending
/// request: connection refused`), as one line: the root cause is what the
/// operator needs, and libraries often keep it out of their own message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        // Some errors repeat their source's message in their own.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_the_root_cause_once() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(super::error_chain(&e), "request failed: connection refused");
    }
}
