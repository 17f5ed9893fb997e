//! Prometheus metrics: the process-wide recorder, every family's name and
//! help text (one list, so that names stay consistent and every family has
//! `# HELP`), and rendering in the Prometheus text format.
//!
//! Code records through the `metrics` facade (`metrics::counter!` and so on,
//! with the names below); before [`install`] those calls cost next to nothing
//! and record nothing, which is what tests and CLI commands get.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

// The server.
pub const REQUESTS: &str = "tessera_requests_total";
pub const REQUEST_DURATION: &str = "tessera_request_duration_seconds";
pub const CHECKOUTS: &str = "tessera_checkouts_total";
pub const CONSUMPTIONS_LIVE: &str = "tessera_consumptions_live";
pub const EXPIRED_CONSUMPTIONS: &str = "tessera_expired_consumptions_total";
pub const COMMIT_BATCH_SIZE: &str = "tessera_store_commit_batch_size";
pub const COMMIT_DURATION: &str = "tessera_store_commit_duration_seconds";
pub const POOL_IN_USE: &str = "tessera_store_pool_connections_in_use";
pub const POOL_SIZE: &str = "tessera_store_pool_connections";
pub const ISSUER_KEYS: &str = "tessera_issuer_keys";
pub const READY: &str = "tessera_ready";
pub const BUILD_INFO: &str = "tessera_build_info";
pub const CONNECTIONS_OPEN: &str = "tessera_http_connections_open";
pub const CONNECTIONS_REFUSED: &str = "tessera_http_connections_refused_total";
pub const REPEATED_ERRORS: &str = "tessera_log_errors_suppressed_total";

// The environment agent.
pub const AGENT_AKU_ALLOWED: &str = "tessera_agent_aku_allowed";
pub const AGENT_AKU_RESERVED: &str = "tessera_agent_aku_reserved";
pub const AGENT_AKU_AVAILABLE: &str = "tessera_agent_aku_available";
pub const AGENT_INSTANCES: &str = "tessera_agent_instances";
pub const AGENT_LICENSE_STATE: &str = "tessera_agent_license_state";
pub const AGENT_LICENSE_EXPIRY: &str = "tessera_agent_license_expiry_seconds";
pub const AGENT_TRIAL: &str = "tessera_agent_trial";
pub const AGENT_POLLS: &str = "tessera_agent_polls_total";
pub const AGENT_LAST_POLL_SUCCESS: &str = "tessera_agent_last_poll_success_timestamp_seconds";
pub const AGENT_RESERVATIONS_REFUSED: &str = "tessera_agent_reservations_refused_total";

/// Latency buckets, in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Batch-size buckets: powers of two up to the largest batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// How often histogram samples are folded into their buckets, so that a
/// process nobody scrapes does not keep every sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle) and describes every family. None if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_SIZE.into()), BATCH_BUCKETS))
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .ok()?;
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The metrics in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(|h| h.render())
        .unwrap_or_default()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn describe() {
    describe_counter!(
        REQUESTS,
        "API requests answered, by operation and outcome (ok, or the error's exception name or code)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's head to its answer, by operation."
    );
    describe_counter!(
        CHECKOUTS,
        "Checkouts (CheckoutLicense, CheckoutBorrowLicense), by result (granted, refused) and reason of refusal."
    );
    describe_gauge!(
        CONSUMPTIONS_LIVE,
        "Consumptions not yet checked in or expired, across every license."
    );
    describe_counter!(
        EXPIRED_CONSUMPTIONS,
        "Consumptions returned to their pools because their token expired."
    );
    describe_histogram!(
        COMMIT_BATCH_SIZE,
        "Requests committed together in one transaction of the store's hot path."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time to commit one batch of the store's hot path, durably."
    );
    describe_gauge!(POOL_IN_USE, "Database connections in use, by pool.");
    describe_gauge!(POOL_SIZE, "Database connections open, by pool.");
    describe_gauge!(
        ISSUER_KEYS,
        "Signing keys of issuers, as published at /.well-known/jwks.json."
    );
    describe_gauge!(READY, "1 when the last readiness check passed, 0 when it failed.");
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build.");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Client connections closed at once because every connection slot held a request in flight."
    );
    describe_counter!(
        REPEATED_ERRORS,
        "Error lines left out of the log because the same error was logged less than a minute before."
    );
    describe_gauge!(
        AGENT_AKU_ALLOWED,
        "AKU the license in force allows in this environment."
    );
    describe_gauge!(AGENT_AKU_RESERVED, "AKU reserved by the product's instances.");
    describe_gauge!(
        AGENT_AKU_AVAILABLE,
        "AKU left to reserve (allowed minus reserved, never below 0)."
    );
    describe_gauge!(AGENT_INSTANCES, "Instances holding a reservation.");
    describe_gauge!(
        AGENT_LICENSE_STATE,
        "1 for the license state in force (TRIAL, ACTIVE, EXPIRED), 0 for the others."
    );
    describe_gauge!(
        AGENT_LICENSE_EXPIRY,
        Unit::Seconds,
        "Seconds until the license in force expires (negative once it has)."
    );
    describe_gauge!(AGENT_TRIAL, "1 while the environment runs on its built-in trial.");
    describe_counter!(
        AGENT_POLLS,
        "Looks at the ops bucket and the server, by source and outcome (ok, failed)."
    );
    describe_gauge!(
        AGENT_LAST_POLL_SUCCESS,
        Unit::Seconds,
        "Unix time of the last successful look at each source."
    );
    describe_counter!(
        AGENT_RESERVATIONS_REFUSED,
        "AKU reservations refused because the license allows no more."
    );
}
