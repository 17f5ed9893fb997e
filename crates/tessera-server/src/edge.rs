//! What every request passes before an operation: a request ID (sent back as
//! `x-amzn-RequestId` on every answer), limits on the request head, refusals
//! of what is not an API call, a panic turned into a 500 in the AWS shape,
//! and after it the request's access line and metrics.

use std::any::Any;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use tessera_observe::access::Answered;
use tessera_observe::Outcome;

/// Requests larger than this are refused before they are read.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// `routes` behind the edge: the body limit, panics caught, request IDs and head limits.
pub fn layers(routes: Router) -> Router {
    routes
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(request_id))
}

/// The ID of one request, as the client sees it in `x-amzn-RequestId`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The most bytes a request's header lines may hold in all (the HTTP layer
/// refuses more than 100 lines, or 64 KiB, before this is reached).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A handler's panic, carried from the panic layer to the request's log line.
#[derive(Debug, Clone)]
struct Panicked(String);

/// Gives the request its ID, refuses oversized heads, logs a panic with the
/// ID, and writes the request's access line.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let path_label = path_label(req.method(), req.uri().path());
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let headers = req.headers();
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    let mut response = if bytes > MAX_HEADER_BYTES {
        let mut r = ApiError::Validation(format!(
            "the request's header lines hold {bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
        ))
        .into_response();
        *r.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        r
    } else {
        next.run(req).await
    };
    if let Some(Panicked(why)) = response.extensions().get::<Panicked>() {
        tracing::error!(request_id = %id, panic = %why, "a request handler panicked; the request was answered with a 500");
    }
    // The operation's own outcome, or one read off the answer.
    let outcome = response
        .extensions_mut()
        .remove::<Outcome>()
        .unwrap_or_else(|| Outcome {
            operation: path_label.0,
            error: response.extensions().get::<Answered>().map(|a| a.0),
            quiet: path_label.1,
            ..Outcome::default()
        });
    tessera_observe::access::record(&id, &outcome, response.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// The access line's operation for a request that is not an API call, and
/// whether it is a probe or a scrape (logged at debug).
fn path_label(method: &axum::http::Method, path: &str) -> (&'static str, bool) {
    if method != axum::http::Method::GET {
        return if path == "/" {
            ("unknown", false)
        } else {
            ("other", false)
        };
    }
    match path {
        "/healthz" => ("GET /healthz", true),
        "/readyz" => ("GET /readyz", true),
        "/metrics" => ("GET /metrics", true),
        "/.well-known/jwks.json" => ("GET /.well-known/jwks.json", false),
        _ => ("other", false),
    }
}

/// The answer to a handler that panicked: the request's outcome is unknown to the client, as with any 500.
pub fn panicked(payload: Box<dyn Any + Send + 'static>) -> Response {
    let why = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    let mut r =
        ApiError::Internal("An internal error occurred; the request may not have been applied. Retry it.".into())
            .into_response();
    r.extensions_mut().insert(Panicked(why));
    r
}

/// A method a path does not take (axum adds the `Allow` header).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut r = ApiError::UnknownOperation(format!(
        "{method} is not allowed on {}; the License Manager API is POST / with an X-Amz-Target header",
        uri.path()
    ))
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn answer(router: &Router) -> (StatusCode, Option<String>, serde_json::Value) {
        let req = Request::post("/").body(Body::empty()).expect("request");
        let r = router.clone().oneshot(req).await.expect("an answer");
        let status = r.status();
        let id = r
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        (status, id, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_panic_is_a_500_in_the_aws_shape_and_serving_goes_on() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let panicked = Arc::new(AtomicBool::new(false));
        let once = panicked.clone();
        let router = layers(Router::new().route(
            "/",
            post(move || {
                let once = once.clone();
                async move {
                    // A handler bug on an input path, the first time only.
                    assert!(once.swap(true, Ordering::SeqCst), "a value the handler wrongly assumed");
                    "fine"
                }
            }),
        ));
        let (status, id, body) = answer(&router).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(id.is_some_and(|id| id.len() == 36));
        assert_eq!(body["__type"], "ServerInternalException");
        assert!(
            body["Message"].as_str().is_some_and(|m| !m.contains("wrongly")),
            "{body}"
        );
        let (status, id, _) = answer(&router).await;
        assert_eq!(status, StatusCode::OK);
        assert!(id.is_some());
    }
}
