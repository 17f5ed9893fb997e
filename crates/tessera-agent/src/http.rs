//! The agent's HTTP API (JSON): settings, Update Product License, and AKU
//! reservations for the product's instances. Every error is a JSON body with a
//! `code` and a `message`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value};
use tower_http::catch_panic::CatchPanicLayer;

use crate::agent::{Agent, OpError};
use crate::api::{codes, ErrorBody};
use crate::timefmt;
use crate::MAX_INSTANCE_AKU;
use tessera_core::clock::MAX_OFFSET_SECS;
use tessera_core::validate::Long;
use tessera_observe::access::Answered;

/// Requests are small JSON documents; a product key is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

type Shared = State<Arc<Agent>>;

pub(crate) fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/settings", get(settings))
        .route("/v1/license", post(activate))
        .route("/v1/instances", get(list_instances).post(create_instance))
        .route(
            "/v1/instances/{id}",
            get(get_instance).patch(scale_instance).delete(delete_instance),
        )
        .route("/_tessera/test/clock", post(test_clock))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(agent.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn(access))
        .with_state(agent)
}

/// Probes and scrapes: their access lines are at debug.
const QUIET: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Gives the request an ID (`x-request-id` on the answer) and writes its access line.
async fn access(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let path = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let operation = label(req.method().as_str(), &path);
    let quiet = QUIET.contains(&path.as_str());
    let id = uuid::Uuid::new_v4().to_string();
    let mut response = next.run(req).await;
    let outcome = tessera_observe::Outcome {
        operation,
        error: response.extensions().get::<Answered>().map(|a| a.0),
        quiet,
        ..Default::default()
    };
    tessera_observe::access::record(&id, &outcome, response.status().as_u16(), started.elapsed());
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// The operation a request calls, as the access line and the metrics name
/// it (`METHOD route`), from a fixed list; `other` for anything else.
fn label(method: &str, path: &str) -> &'static str {
    macro_rules! labels {
        ($(($m:literal, $p:literal)),* $(,)?) => {
            match (method, path) {
                $(($m, $p) => concat!($m, " ", $p),)*
                _ => "other",
            }
        };
    }
    labels!(
        ("GET", "/v1/settings"),
        ("POST", "/v1/license"),
        ("GET", "/v1/instances"),
        ("POST", "/v1/instances"),
        ("GET", "/v1/instances/{id}"),
        ("PATCH", "/v1/instances/{id}"),
        ("DELETE", "/v1/instances/{id}"),
        ("POST", "/_tessera/test/clock"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    )
}

/// A handler's panic: logged, and answered as any internal error.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let why = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    tracing::error!(panic = %why, "a request handler panicked");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        codes::INTERNAL,
        "the agent failed to answer this request; see the agent's log",
    )
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let (status, code, body) = match self {
            OpError::Invalid(m) => (
                StatusCode::BAD_REQUEST,
                codes::INVALID_PARAMETER,
                ErrorBody::new(codes::INVALID_PARAMETER, m),
            ),
            OpError::NotFound(id) => (
                StatusCode::NOT_FOUND,
                codes::INSTANCE_NOT_FOUND,
                ErrorBody::new(
                    codes::INSTANCE_NOT_FOUND,
                    format!("instance {id} has no reservation in this environment"),
                ),
            ),
            OpError::Exists(m) => (
                StatusCode::CONFLICT,
                codes::INSTANCE_EXISTS,
                ErrorBody::new(codes::INSTANCE_EXISTS, m),
            ),
            OpError::NoCapacity(body) => {
                metrics::counter!(tessera_observe::metrics::AGENT_RESERVATIONS_REFUSED).increment(1);
                tracing::warn!(
                    requested = body.requested,
                    reserved = body.used,
                    allowed = body.allowed,
                    license_state = ?body.license_state,
                    "refused an AKU reservation: {}",
                    body.message
                );
                (StatusCode::FORBIDDEN, codes::NO_AVAILABLE_SUBSCRIPTION, *body)
            }
            OpError::InvalidKey(r) => {
                tracing::warn!(
                    reason = r.reason.as_str(),
                    "refused a product key offered through the API: {}; the license in force stays",
                    r.message
                );
                (
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_PRODUCT_KEY,
                    ErrorBody {
                        reason: Some(r.reason.as_str().to_owned()),
                        ..ErrorBody::new(codes::INVALID_PRODUCT_KEY, r.message)
                    },
                )
            }
            OpError::Internal(e) => {
                let cause = tessera_observe::error_chain(&e);
                if let Some(repeated) = tessera_observe::throttle::admit(&cause) {
                    tracing::error!(error = %cause, repeated, "request failed");
                }
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    codes::INTERNAL,
                    ErrorBody::new(
                        codes::INTERNAL,
                        "the agent could not save its state; nothing was changed. See the agent's log",
                    ),
                )
            }
        };
        let mut r = (status, Json(body)).into_response();
        r.extensions_mut().insert(Answered(code));
        r
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let mut r = (status, Json(ErrorBody::new(code, message))).into_response();
    r.extensions_mut().insert(Answered(code));
    r
}

/// Requires `Authorization: Bearer <api-token>` when the agent listens beyond loopback.
async fn authenticate(State(agent): Shared, req: Request, next: Next) -> Response {
    // Liveness probes carry no token and learn nothing.
    if !agent.require_token || req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), agent.api_token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                codes::UNAUTHORIZED,
                "this agent listens on a non-loopback address: send `Authorization: Bearer <token>` with the \
                 token in the api-token file of its data directory",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request body as a JSON object; the messages name what is wrong.
fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, OpError> {
    let bytes = body.map_err(|e| OpError::Invalid(format!("the request body cannot be read: {e}")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(OpError::Invalid("the request body must be a JSON object".into())),
        Err(e) => Err(OpError::Invalid(format!("the request body is not valid JSON: {e}"))),
    }
}

fn string_field(obj: &Map<String, Value>, field: &str) -> Result<String, OpError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(OpError::Invalid(format!("{field} is required"))),
        Some(_) => Err(OpError::Invalid(format!("{field} must be a string"))),
    }
}

/// A whole number within `lo..=hi`; the message names the field and the range.
fn int_field(obj: &Map<String, Value>, field: &str, lo: i64, hi: i64) -> Result<i64, OpError> {
    let n = match obj.get(field) {
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Long::Int(i),
            (None, Some(u)) => Long::Big(u),
            (None, None) => Long::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        None | Some(Value::Null) => return Err(OpError::Invalid(format!("{field} is required"))),
        Some(_) => {
            return Err(OpError::Invalid(format!(
                "{field} must be a whole number between {lo} and {hi}"
            )))
        }
    };
    n.within(field, lo, hi).map_err(|e| OpError::Invalid(e.to_string()))
}

/// Runs a change to completion even if the client hangs up: a change that was
/// checked is also written, whether or not anyone hears about it.
async fn detached<T, F>(f: F) -> Result<T, OpError>
where
    F: std::future::Future<Output = Result<T, OpError>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(f)
        .await
        .unwrap_or_else(|e| Err(OpError::Internal(crate::AgentError::Internal(e.to_string()))))
}

async fn settings(State(agent): Shared) -> Response {
    Json(agent.settings().await).into_response()
}

async fn activate(State(agent): Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, OpError> {
    let obj = object(body)?;
    let key = string_field(&obj, "productKey")?;
    let settings = detached(async move { agent.activate(&key).await }).await?;
    Ok(Json(settings).into_response())
}

async fn list_instances(State(agent): Shared) -> Response {
    Json(agent.list_instances().await).into_response()
}

/// An instance ID from the path; one that is not UTF-8 once decoded is refused in JSON.
fn instance_id(path: Result<Path<String>, PathRejection>) -> Result<String, OpError> {
    path.map(|Path(id)| id)
        .map_err(|e| OpError::Invalid(format!("the instance ID in the path cannot be read: {e}")))
}

async fn get_instance(State(agent): Shared, path: Result<Path<String>, PathRejection>) -> Result<Response, OpError> {
    let id = instance_id(path)?;
    let list = agent.list_instances().await;
    list.instances
        .into_iter()
        .find(|i| i.instance_id == id)
        .map(|i| Json(i).into_response())
        .ok_or(OpError::NotFound(id))
}

async fn create_instance(State(agent): Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, OpError> {
    let obj = object(body)?;
    let id = string_field(&obj, "instanceId")?;
    let aku = int_field(&obj, "aku", 1, MAX_INSTANCE_AKU)?;
    let (instance, created) = detached(async move { agent.create_instance(&id, aku).await }).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(instance)).into_response())
}

async fn scale_instance(
    State(agent): Shared,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpError> {
    let id = instance_id(path)?;
    let obj = object(body)?;
    let aku = int_field(&obj, "aku", 1, MAX_INSTANCE_AKU)?;
    let instance = detached(async move { agent.scale_instance(&id, aku).await }).await?;
    Ok(Json(instance).into_response())
}

async fn delete_instance(State(agent): Shared, path: Result<Path<String>, PathRejection>) -> Result<Response, OpError> {
    let id = instance_id(path)?;
    detached(async move { agent.delete_instance(&id).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn test_clock(State(agent): Shared, body: Result<Bytes, BytesRejection>) -> Result<Response, OpError> {
    if !agent.config.test_clock {
        return Ok(not_found().await);
    }
    let obj = object(body)?;
    // The test clock only moves forward.
    let secs = int_field(&obj, "AdvanceSeconds", 0, MAX_OFFSET_SECS)?;
    let (now, total) = detached(async move { agent.advance_clock(secs).await }).await?;
    Ok(Json(serde_json::json!({"Now": timefmt::format(now), "OffsetSeconds": total})).into_response())
}

async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Readiness: the agent can serve when it can save its state. The body also
/// says whether it holds a valid license and when it last read its ops
/// bucket and the server (an expired license is a fact to alert on, not a
/// reason to stop answering: the product still needs the refusals).
async fn ready(State(agent): Shared) -> Response {
    let r = agent.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

/// `GET /metrics`: the Prometheus text format, with the license and AKU read now.
async fn metrics(State(agent): Shared) -> Response {
    agent.set_gauges().await;
    use tessera_observe::metrics as m;
    ([(header::CONTENT_TYPE, m::CONTENT_TYPE)], m::render()).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        "no such resource: the agent serves /v1/settings, /v1/license and /v1/instances",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this method is not allowed on this resource",
    )
}
