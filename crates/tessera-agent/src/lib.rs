//! The BYOC environment agent: it runs in the customer's environment next to
//! the vendor's product and decides how much capacity (AKU) the product may
//! reserve.
//!
//! On first start it makes an install ID and starts the built-in trial (14
//! days, 14 AKU, once per install). A product key, signed by the vendor and
//! bound to the install ID and environment ID, replaces the trial; renewed
//! keys arrive through the ops bucket or from the vendor's server and apply
//! without a restart. State is one JSON file in the data directory, written
//! atomically before any change is acknowledged.

mod agent;
pub mod api;
pub mod client;
mod clock;
mod config;
mod error;
mod http;
mod license;
mod poll;
pub mod recall;
mod state;
mod timefmt;
mod trust;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

pub use agent::MAX_INSTANCE_AKU;
pub use clock::AgentClock;
pub use config::{AgentConfig, EnvironmentId, ServerConfig, MAX_BUCKET_POLL};
pub use error::AgentError;
pub use license::{RejectReason, TRIAL_AKU, TRIAL_DAYS};
pub use state::STATE_FILE;
pub use trust::JWKS_CACHE_FILE;

/// The bearer token file in the data directory.
pub const API_TOKEN_FILE: &str = "api-token";

/// The agent's HTTP API over its data directory, without pollers or a
/// listener, as if it listened on `addr` (loopback: no bearer token needed):
/// for driving the API in process, as the fuzz targets do.
pub async fn app(config: AgentConfig, addr: std::net::SocketAddr) -> Result<axum::Router, AgentError> {
    let agent = agent::Agent::open(config, addr).await?;
    Ok(http::router(agent))
}

/// Serves the agent on `listener` until `shutdown` completes, with its
/// background pollers; then writes the latest time seen and returns.
pub async fn serve(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let addr = listener.local_addr().map_err(AgentError::Serve)?;
    let agent = agent::Agent::open(config, addr).await?;
    tracing::info!(
        %addr,
        environment_id = %agent.config.environment_id,
        install_id = %agent.install_id,
        token_required = agent.require_token,
        ops_bucket = agent.config.ops_bucket.as_deref().unwrap_or("-"),
        server = agent.config.server.as_ref().map_or("-", |s| s.url.as_str()),
        "the environment agent is serving"
    );
    if agent.config.test_clock {
        tracing::warn!("the test clock is enabled: POST /_tessera/test/clock can move time forward");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = poll::spawn(agent.clone(), stop_rx);
    let limits = agent.config.http;
    let served = tessera_http::serve(listener, http::router(agent.clone()), limits, shutdown).await;
    let _ = stop_tx.send(true);
    for mut task in tasks {
        // A poller in the middle of a slow read is not waited for long.
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
    if let Err(e) = agent.save_time().await {
        tracing::warn!(error = %e, "cannot save the latest time seen");
    }
    served.map_err(AgentError::Serve)
}
