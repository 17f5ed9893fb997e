//! The vendor's server: the agent fetches its key and the issuer keys there and reports usage.
//! A stand-in server records the calls; the real one is tested on its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tessera_agent::ServerConfig;

use crate::helpers::*;

#[derive(Default)]
struct StandIn {
    key: Option<String>,
    failing: bool,
    calls: Vec<(String, String, Value)>,
    jwks: Value,
    /// Environment ID -> (install ID, trial start), the first reported.
    trials: std::collections::HashMap<String, (Value, Value)>,
}

type Shared = Arc<Mutex<StandIn>>;

async fn api(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, Json<Value>) {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = s.lock().unwrap();
    s.calls.push((target.clone(), auth, input.clone()));
    if s.failing {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"__type": "ServerInternalException", "Message": "down"})),
        );
    }
    match target.as_str() {
        "Tessera.GetEnvironmentLicense" => (StatusCode::OK, Json(json!({"ProductKey": s.key, "Environment": {}}))),
        "Tessera.ReportEnvironmentUsage" => (StatusCode::OK, Json(json!({"Environment": {}}))),
        "Tessera.StartTrial" => {
            let env = input["EnvironmentId"].as_str().unwrap_or_default().to_owned();
            let (install, started) = s
                .trials
                .entry(env.clone())
                .or_insert((input["InstallId"].clone(), input["TrialStartedAt"].clone()))
                .clone();
            (
                StatusCode::OK,
                Json(json!({"EnvironmentId": env, "InstallId": install, "TrialStartedAt": started})),
            )
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"__type": "UnknownOperationException"})),
        ),
    }
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    Json(s.lock().unwrap().jwks.clone())
}

async fn stand_in(vendor: &Vendor) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(StandIn {
        jwks: serde_json::to_value(vendor.jwks()).unwrap(),
        ..Default::default()
    }));
    let app = Router::new()
        .route("/", post(api))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

fn server_config(dir: &std::path::Path, url: &str) -> tessera_agent::AgentConfig {
    let mut cfg = config(dir, None);
    cfg.server = Some(ServerConfig {
        url: url.to_owned(),
        access_key_id: "AKIDAGENTTEST".into(),
        secret_access_key: "secret".into(),
    });
    cfg.server_poll = Duration::from_secs(1);
    cfg
}

#[tokio::test]
async fn the_server_s_key_is_applied_with_its_jwks_and_usage_is_reported() {
    let vendor = Vendor::new();
    let (url, shared) = stand_in(&vendor).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(server_config(dir.path(), &url)).await;
    let install = agent.install_id().await;
    assert!(
        dir.path().join(tessera_agent::JWKS_CACHE_FILE).is_file(),
        "the server's JWKS is cached"
    );
    assert_eq!(agent.create("i-1", 3).await.0, reqwest::StatusCode::CREATED);

    shared.lock().unwrap().key = Some(vendor.key(&install, 25, 30));
    let s = eventually(Duration::from_secs(5), "the server's key", || async {
        let s = agent.settings().await;
        (s["licenseState"] == "ACTIVE").then_some(s)
    })
    .await;
    assert_eq!(s["akuAllocated"], 25);
    assert_eq!(s["licenseSource"], "SERVER");

    let calls = shared.lock().unwrap().calls.clone();
    let (_, auth, ask) = calls
        .iter()
        .find(|(t, _, _)| t == "Tessera.GetEnvironmentLicense")
        .expect("GetEnvironmentLicense was called");
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDAGENTTEST/"), "{auth}");
    assert_eq!(ask, &json!({"EnvironmentId": ENV, "InstallId": install}));
    let reports: Vec<&Value> = calls
        .iter()
        .filter(|(t, _, _)| t == "Tessera.ReportEnvironmentUsage")
        .map(|(_, _, b)| b)
        .collect();
    assert!(
        reports
            .iter()
            .any(|b| **b == json!({"EnvironmentId": ENV, "InstallId": install, "AkuInUse": 3})),
        "{reports:?}"
    );

    // The server goes down: the agent goes on with the last good key.
    shared.lock().unwrap().failing = true;
    let s = eventually(Duration::from_secs(5), "a failed server check", || async {
        let s = agent.settings().await;
        (s["lastServerCheck"]["outcome"] == "FAILED").then_some(s)
    })
    .await;
    assert_eq!(
        (s["licenseState"].as_str(), s["akuAllocated"].as_i64()),
        (Some("ACTIVE"), Some(25))
    );
    assert_eq!(agent.create("i-2", 20).await.0, reqwest::StatusCode::CREATED);
}

#[tokio::test]
async fn a_server_without_a_key_or_with_a_bad_one_changes_nothing() {
    let vendor = Vendor::new();
    let (url, shared) = stand_in(&vendor).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(server_config(dir.path(), &url)).await;
    let s = eventually(Duration::from_secs(5), "a server check", || async {
        let s = agent.settings().await;
        (s["lastServerCheck"]["outcome"] == "NO_KEY").then_some(s)
    })
    .await;
    assert_eq!(s["licenseState"], "TRIAL");
    shared.lock().unwrap().key = Some(vendor.key("0123456789abcdef0123456789abcdef", 25, 30));
    let s = eventually(Duration::from_secs(5), "a rejected key", || async {
        let s = agent.settings().await;
        (s["lastServerCheck"]["outcome"] == "REJECTED").then_some(s)
    })
    .await;
    assert!(
        s["lastServerCheck"]["detail"]
            .as_str()
            .unwrap()
            .contains("WRONG_INSTALL"),
        "{s}"
    );
    assert_eq!(s["licenseState"], "TRIAL");
}

#[tokio::test]
async fn an_unreachable_server_at_start_uses_the_cached_issuer_keys() {
    let vendor = Vendor::new();
    let (url, _shared) = stand_in(&vendor).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(server_config(dir.path(), &url)).await;
    let install = agent.install_id().await;
    // Restart pointing at a server that is not there: the cached JWKS still verifies keys.
    let agent = agent
        .restart(|c| {
            if let Some(s) = c.server.as_mut() {
                s.url = "http://127.0.0.1:9".into();
            }
        })
        .await;
    assert_eq!(
        agent.activate(&vendor.key(&install, 25, 30)).await.0,
        reqwest::StatusCode::OK
    );
}

/// With a server, a new install is recorded there first; a wiped agent gets
/// the environment's first install and trial back from it.
#[tokio::test]
async fn a_wiped_agent_gets_its_install_and_trial_back_from_the_server() {
    let vendor = Vendor::new();
    let (url, shared) = stand_in(&vendor).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = server_config(&dir.path().join("agent"), &url);
    let mut agent = TestAgent::start(cfg.clone()).await;
    let first = agent.settings().await;
    agent.stop().await.unwrap();
    std::fs::remove_dir_all(&cfg.data_dir).unwrap();
    let mut again = TestAgent::start(cfg).await;
    let s = again.settings().await;
    assert_eq!(s["installId"], first["installId"]);
    assert_eq!(s["expiresAt"], first["expiresAt"]);
    let starts = shared
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|(t, _, _)| t == "Tessera.StartTrial")
        .count();
    assert_eq!(starts, 2, "each new install asks the server");
    again.stop().await.unwrap();
}
