//! The agent's API: any method, path and body, through the real agent on a
//! real data directory. The agent never answers 500 or panics, and every
//! refusal is a JSON body with a `code` and a `message`; the AKU reserved
//! never passes the allocation.
//!
//! The first input byte picks the method and the path; the rest is the body.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tessera_agent::{AgentConfig, EnvironmentId};
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tessera_fuzz::runtime();
        let dir = tessera_fuzz::scratch_dir("agent");
        let env = EnvironmentId::parse("env-fuzz").expect("environment ID");
        let config = AgentConfig {
            test_clock: true,
            ..AgentConfig::new(&dir, env)
        };
        let router = rt
            .block_on(tessera_agent::app(config, "127.0.0.1:7171".parse().expect("address")))
            .expect("agent");
        Fixture { rt, router }
    })
}

const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "DELETE", "PUT"];
const PATHS: [&str; 8] = [
    "/v1/settings",
    "/v1/license",
    "/v1/instances",
    "/v1/instances/i-1",
    "/v1/instances/i-2",
    "/_tessera/test/clock",
    "/healthz",
    "/v1/instances/%ff%00",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let method = METHODS[usize::from(pick) % METHODS.len()];
    let path = PATHS[usize::from(pick >> 3) % PATHS.len()];
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request");
    let (status, answer, settings) = f.rt.block_on(async {
        let r = f.router.clone().oneshot(req).await.expect("infallible");
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let s = f
            .router
            .clone()
            .oneshot(Request::get("/v1/settings").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let s = axum::body::to_bytes(s.into_body(), 1 << 20).await.expect("body");
        (status, bytes, s)
    });
    assert_ne!(
        status.as_u16(),
        500,
        "{method} {path}: {}",
        String::from_utf8_lossy(&answer)
    );
    if status.is_client_error() {
        let v: serde_json::Value = serde_json::from_slice(&answer).expect("refusals are JSON");
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{method} {path}: {v}"
        );
    }
    let s: serde_json::Value = serde_json::from_slice(&settings).expect("settings");
    let (used, allowed) = (
        s["akuInUse"].as_i64().unwrap_or(0),
        s["akuAllocated"].as_i64().unwrap_or(0),
    );
    // An expired trial allows no growth; reservations never pass what was allowed when made.
    assert!(used <= allowed.max(14), "{used} AKU reserved of {allowed}");
});
