//! What one request's access line and request metrics cost, in CPU time:
//! `cargo run --release -p tessera-observe --example access_cost 2>/tmp/access.log`
//! (standard error to a file, as a server's log would be). Prints the time
//! per request with the line and metrics on, and the same loop with logging
//! filtered out as the baseline.

use std::time::{Duration, Instant};

use tessera_observe::access::{record, Outcome};

const N: u32 = 200_000;

fn run(outcome: &Outcome) -> Duration {
    let started = Instant::now();
    for i in 0..N {
        record(
            "0b8f3f5e-8a51-4c43-9a5e-3f1c2d4e5f60",
            outcome,
            200,
            Duration::from_micros(u64::from(i % 900)),
        );
    }
    started.elapsed()
}

fn main() {
    let format = std::env::args().nth(1).unwrap_or_else(|| "text".into());
    tessera_observe::logging::init(format.parse().unwrap_or_default());
    tessera_observe::metrics::install();
    let outcome = Outcome {
        operation: "CheckoutLicense",
        error: None,
        account_id: Some("123456789012".into()),
        access_key_id: Some("AKIAEXAMPLE000000000".into()),
        quiet: false,
    };
    let quiet = Outcome {
        quiet: true,
        ..outcome.clone()
    };
    // Warm up, then measure: info lines written, and debug lines filtered out (metrics only).
    run(&outcome);
    let logged = run(&outcome);
    let filtered = run(&quiet);
    let per = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(N);
    println!(
        "{format} log: {:.0} ns per request with the access line and metrics; {:.0} ns with metrics alone; the line costs {:.0} ns",
        per(logged),
        per(filtered),
        per(logged) - per(filtered)
    );
}
