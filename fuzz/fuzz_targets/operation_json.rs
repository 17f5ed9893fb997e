//! Every operation's request decoding, through the real server: a request
//! body of any bytes for any operation, correctly signed, sent through the
//! router onto a real SQLite store. The server never answers 500 or panics,
//! every answer carries a request ID, and every error is one the service
//! model lists for the operation (or one AWS's front end sends for any).
//!
//! The first input byte picks the operation and the account that signs
//! (vendor or customer); the rest is the body. `fuzz/dict/operation_json.dict`
//! holds the model's member names and values, for libFuzzer's `-dict`.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tessera_server::aws::operation::{Operation, FRONT_END};
use tessera_server::{AppState, ServerClock};
use tessera_sigv4::{sha256_hex, RequestParts, Signer};
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    keys: Vec<(String, String)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tessera_fuzz::runtime();
        let dir = tessera_fuzz::scratch_dir("ops");
        let (router, keys) = rt.block_on(async {
            let store = tessera_store::open(&format!("sqlite://{}", dir.join("tessera.db").display()))
                .await
                .expect("store");
            let now = time::OffsetDateTime::now_utc();
            let mut keys = Vec::new();
            for name in ["vendor", "customer"] {
                let (_, key) = store.create_account(name, now).await.expect("account");
                keys.push((key.access_key_id, key.secret));
            }
            let state = AppState::new(store, Arc::new(ServerClock::new()), false);
            (tessera_server::router(state), keys)
        });
        Fixture { rt, router, keys }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let op = Operation::ALL[usize::from(pick & 0x7f) % Operation::ALL.len()];
    let (akid, secret) = &f.keys[usize::from(pick >> 7)];
    let target = format!("AWSLicenseManager.{}", op.name());
    let hash = sha256_hex(body);
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("host", "localhost"),
        ("x-amz-target", target.as_str()),
    ];
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        payload_hash: &hash,
    };
    let (amz_date, authorization) =
        Signer::new(akid, secret, "us-east-1").sign(&parts, time::OffsetDateTime::now_utc());
    let mut req = Request::post("/");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .header("x-amz-date", amz_date)
        .header("x-amz-content-sha256", hash.as_str())
        .header("authorization", authorization)
        .body(Body::from(body.to_vec()))
        .expect("request");
    let (status, id, answer) = f.rt.block_on(async {
        let r = f.router.clone().oneshot(req).await.expect("infallible");
        let status = r.status();
        let id = r.headers().contains_key("x-amzn-requestid");
        let bytes = axum::body::to_bytes(r.into_body(), 16 << 20).await.expect("body");
        (status, id, bytes)
    });
    assert!(id, "{op:?}: an answer without x-amzn-RequestId");
    assert_ne!(
        status.as_u16(),
        500,
        "{op:?} answered 500: {}",
        String::from_utf8_lossy(&answer)
    );
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&answer).expect("errors are JSON");
        let name = v["__type"].as_str().expect("errors have a __type");
        let listed = op.errors().iter().any(|e| e.name() == name) || FRONT_END.contains(&name);
        assert!(listed, "{op:?} answered {name}, which the model does not list: {v}");
        assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()), "no Message: {v}");
    }
});
