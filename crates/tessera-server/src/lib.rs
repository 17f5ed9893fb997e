//! The Tessera HTTP server.
//!
//! `POST /` speaks the AWS License Manager JSON protocol (awsJson1_1, routed by
//! `X-Amz-Target`, SigV4-verified); `GET /.well-known/jwks.json` publishes the
//! issuers' public keys. This is the only crate that knows HTTP.

pub mod aws;
pub mod clock;
pub mod edge;
pub mod error;
pub mod keys;
pub mod native;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tessera_core::{timefmt, Clock};
use tessera_store::Store;
use tokio::net::TcpListener;

pub use clock::ServerClock;
pub use error::ApiError;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<ServerClock>,
    pub keys: keys::KeyRing,
    /// Access keys seen, with their secrets and derived signing keys.
    pub keys_seen: aws::AccessKeys,
    /// Whether `POST /_tessera/test/clock` may shift the business clock.
    pub test_clock: bool,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(store: Arc<dyn Store>, clock: Arc<ServerClock>, test_clock: bool) -> SharedState {
        Arc::new(Self {
            keys: keys::KeyRing::new(store.clone()),
            keys_seen: aws::AccessKeys::default(),
            store,
            clock,
            test_clock,
        })
    }
}

pub fn router(state: SharedState) -> Router {
    let routes = Router::new()
        .route("/", post(aws::handle))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/_tessera/test/clock", post(test_clock))
        .fallback(not_found)
        .method_not_allowed_fallback(edge::method_not_allowed)
        .with_state(state);
    edge::layers(routes)
}

/// Serves until `shutdown` completes, then answers the requests in flight
/// (for at most `limits.drain_timeout`) and closes the store. A background
/// task returns expired PROVISIONAL consumptions to their pools meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    limits: tessera_http::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reaper = tokio::spawn(reap(state.clone()));
    let result = tessera_http::serve(listener, router(state.clone()), limits, shutdown).await;
    reaper.abort();
    let _ = reaper.await;
    state.store.close().await;
    result
}

async fn reap(state: SharedState) {
    loop {
        match state.store.expire_due(state.clock.now()).await {
            // A full batch: there may be more due right now.
            Ok(n) if n >= 1000 => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::info!(expired = n, "returned expired consumptions to their pools");
                }
            }
            Err(e) => {
                if e.is_damage() {
                    state.store.report_damage(&e.to_string());
                }
                tracing::warn!(error = %e, "expiring consumptions failed; will retry")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn jwks(State(state): State<SharedState>) -> Response {
    match state.keys.jwks().await {
        Ok(set) => Json(set.as_ref().clone()).into_response(),
        Err(e) => {
            if let ApiError::StoreDamaged(detail) = &e {
                state.store.report_damage(detail);
            }
            e.into_response()
        }
    }
}

/// Liveness: the process answers.
async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// How long readiness waits for the store, which a probe must not wait on for long.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Readiness: the store answers a query, within [`READY_TIMEOUT`], and has shown no damage.
async fn ready(State(state): State<SharedState>) -> Response {
    let answered = tokio::time::timeout(READY_TIMEOUT, state.store.ready())
        .await
        .unwrap_or_else(|_| Err(format!("the store did not answer within {} s", READY_TIMEOUT.as_secs())));
    match answered {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reasons": [why]})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClockShift {
    advance_seconds: i64,
}

async fn test_clock(State(state): State<SharedState>, body: Option<Json<ClockShift>>) -> Response {
    if !state.test_clock {
        return not_found().await;
    }
    let Some(Json(shift)) = body else {
        return ApiError::Serialization("expected {\"AdvanceSeconds\": N}".into()).into_response();
    };
    let total = match state.clock.advance(shift.advance_seconds) {
        Ok(t) => t,
        Err(e) => return ApiError::Validation(format!("AdvanceSeconds: {e}")).into_response(),
    };
    Json(serde_json::json!({"Now": timefmt::format(state.clock.now()), "OffsetSeconds": total})).into_response()
}

async fn not_found() -> Response {
    let mut r = ApiError::UnknownOperation(
        "no such resource: the License Manager API is POST / with an X-Amz-Target header".into(),
    )
    .into_response();
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}
