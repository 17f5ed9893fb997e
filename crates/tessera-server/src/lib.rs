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
    /// What readiness and the metrics report beyond the store's own answer.
    pub health: Health,
    /// How often the reaper looks for expired consumptions.
    pub reaper_interval: Duration,
}

/// How often the reaper runs unless told otherwise.
pub const DEFAULT_REAPER_INTERVAL: Duration = Duration::from_secs(1);

/// The server's own signs of life, for readiness and the metrics.
#[derive(Default)]
pub struct Health {
    /// When the reaper last finished a pass, in milliseconds since `born`.
    reaped_at_ms: std::sync::atomic::AtomicU64,
    born: std::sync::OnceLock<std::time::Instant>,
    /// What the start-up check of the database found (set once by the binary).
    pub startup_check: std::sync::OnceLock<String>,
    /// The store's counts for the metrics, read at most every [`COUNTS_TTL`].
    counts: tokio::sync::Mutex<Option<(std::time::Instant, Counts)>>,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    live: Option<i64>,
    issuer_keys: Option<i64>,
}

/// How long the store's counts shown in the metrics may be old: counting live
/// consumptions reads the table, which a scrape every few seconds must not repeat.
const COUNTS_TTL: Duration = Duration::from_secs(30);

/// This long without a reaper pass (or ten intervals, if longer) is a fault.
const REAPER_STALL: Duration = Duration::from_secs(30);

impl Health {
    fn now_ms(&self) -> u64 {
        let born = self.born.get_or_init(std::time::Instant::now);
        u64::try_from(born.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn reaped(&self) {
        let now = self.now_ms();
        self.reaped_at_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// Why the reaper is not running, if it is not.
    fn reaper(&self, interval: Duration) -> Result<(), String> {
        let at = self.reaped_at_ms.load(std::sync::atomic::Ordering::Relaxed);
        if at == 0 {
            return Err("the reaper of expired consumptions has not finished a pass yet".into());
        }
        let ago = Duration::from_millis(self.now_ms().saturating_sub(at));
        if ago > REAPER_STALL.max(interval.saturating_mul(10)) {
            return Err(format!(
                "the reaper of expired consumptions last finished a pass {} s ago",
                ago.as_secs()
            ));
        }
        Ok(())
    }
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(store: Arc<dyn Store>, clock: Arc<ServerClock>, test_clock: bool) -> SharedState {
        Self::with_reaper_interval(store, clock, test_clock, DEFAULT_REAPER_INTERVAL)
    }

    /// [`AppState::new`] with the reaper running every `reaper_interval`.
    pub fn with_reaper_interval(
        store: Arc<dyn Store>,
        clock: Arc<ServerClock>,
        test_clock: bool,
        reaper_interval: Duration,
    ) -> SharedState {
        Arc::new(Self {
            reaper_interval,
            keys: keys::KeyRing::new(store.clone()),
            keys_seen: aws::AccessKeys::default(),
            store,
            clock,
            test_clock,
            health: Health::default(),
        })
    }
}

pub fn router(state: SharedState) -> Router {
    let routes = Router::new()
        .route("/", post(aws::handle))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
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
            Ok(n) => {
                state.health.reaped();
                metrics::counter!(tessera_observe::metrics::EXPIRED_CONSUMPTIONS).increment(n);
                // A full batch: there may be more due right now.
                if n >= 1000 {
                    continue;
                }
                if n > 0 {
                    tracing::info!(expired = n, "returned expired consumptions to their pools");
                }
            }
            Err(e) => {
                let damage = e.is_damage();
                let e = e.to_string();
                if damage {
                    state.store.report_damage(&e);
                }
                if let Some(repeated) = tessera_observe::throttle::admit(&e) {
                    tracing::warn!(error = %e, repeated, "expiring consumptions failed; will retry");
                }
            }
        }
        tokio::time::sleep(state.reaper_interval).await;
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

/// Readiness: the store answers a query within [`READY_TIMEOUT`], its
/// migrations are applied, its writer runs and it has shown no damage; the
/// reaper runs; the database passed its start-up check. 503 names what is not.
async fn ready(State(state): State<SharedState>) -> Response {
    let store = tokio::time::timeout(READY_TIMEOUT, state.store.ready())
        .await
        .unwrap_or_else(|_| Err(format!("the store did not answer within {} s", READY_TIMEOUT.as_secs())));
    let reaper = state.health.reaper(state.reaper_interval);
    let reasons: Vec<&String> = [&store, &reaper].into_iter().filter_map(|r| r.as_ref().err()).collect();
    let show = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "failing" };
    let checks = serde_json::json!({
        "store": show(&store),
        "reaper": show(&reaper),
        "startupCheck": state.health.startup_check.get().map(String::as_str).unwrap_or("none"),
    });
    metrics::gauge!(tessera_observe::metrics::READY).set(if reasons.is_empty() { 1.0 } else { 0.0 });
    if reasons.is_empty() {
        Json(serde_json::json!({"status": "ready", "checks": checks})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not ready", "reasons": reasons, "checks": checks})),
        )
            .into_response()
    }
}

/// `GET /metrics`: the Prometheus text format, with the store's gauges read now.
async fn metrics(State(state): State<SharedState>) -> Response {
    use tessera_observe::metrics as m;
    for p in state.store.pools() {
        metrics::gauge!(m::POOL_SIZE, "pool" => p.pool).set(f64::from(p.open));
        metrics::gauge!(m::POOL_IN_USE, "pool" => p.pool).set(f64::from(p.in_use));
    }
    let counts = {
        let mut cached = state.health.counts.lock().await;
        match *cached {
            Some((at, counts)) if at.elapsed() < COUNTS_TTL => counts,
            _ => {
                let within = |f| async move { tokio::time::timeout(READY_TIMEOUT, f).await.ok().and_then(Result::ok) };
                let counts = Counts {
                    live: within(state.store.live_consumptions()).await,
                    issuer_keys: within(state.store.issuer_key_count()).await,
                };
                *cached = Some((std::time::Instant::now(), counts));
                counts
            }
        }
    };
    if let Some(n) = counts.live {
        metrics::gauge!(m::CONSUMPTIONS_LIVE).set(n as f64);
    }
    if let Some(n) = counts.issuer_keys {
        metrics::gauge!(m::ISSUER_KEYS).set(n as f64);
    }
    ([(axum::http::header::CONTENT_TYPE, m::CONTENT_TYPE)], m::render()).into_response()
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
