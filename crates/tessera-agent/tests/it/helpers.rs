//! Starts agents in-process on real sockets over real data directories, and
//! mints product keys the way the vendor does.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tessera_agent::{AgentConfig, AgentError, EnvironmentId};
use tessera_token::product_key::{self, ProductKeyBody};
use tessera_token::{IssuerKey, Jwks};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ENV: &str = "env-test-1";
pub const DAY: i64 = 86_400;

/// The vendor: an issuer key and a JWKS file with its public half.
pub struct Vendor {
    pub key: IssuerKey,
    pub jwks_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vendor {
    pub fn new() -> Self {
        let key = IssuerKey::generate("111111111111");
        let dir = tempfile::tempdir().expect("temp dir");
        let jwks_path = dir.path().join("jwks.json");
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        std::fs::write(&jwks_path, serde_json::to_vec(&jwks).expect("jwks json")).expect("write jwks");
        Self {
            key,
            jwks_path,
            _dir: dir,
        }
    }

    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.key.public_jwk()],
        }
    }

    pub fn body(&self, install_id: &str, env: &str, aku: i64, valid_for_secs: i64) -> ProductKeyBody {
        let now = OffsetDateTime::now_utc();
        ProductKeyBody {
            install_id: install_id.into(),
            environment_id: env.into(),
            license_arn: "arn:aws:license-manager::111111111111:license:l-0123456789abcdef0123456789abcdef".into(),
            license_version: "1".into(),
            product_sku: "automq-byoc".into(),
            entitlement: "AKU".into(),
            aku,
            valid_from: fmt(now - time::Duration::days(1)),
            valid_until: fmt(now + time::Duration::seconds(valid_for_secs)),
            issued_at: fmt(now),
            key_fingerprint: "aws:111111111111:Self:issuer-fingerprint".into(),
            key_id: self.key.kid().into(),
        }
    }

    pub fn issue(&self, body: &ProductKeyBody) -> String {
        product_key::issue(body, &self.key)
    }

    /// A key for `install_id` in the test environment, valid for `days`.
    pub fn key(&self, install_id: &str, aku: i64, days: i64) -> String {
        self.issue(&self.body(install_id, ENV, aku, days * DAY))
    }
}

pub fn fmt(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// A key whose signed JSON was edited after signing.
pub fn tamper(key: &str, from: &str, to: &str) -> String {
    let text = String::from_utf8(STANDARD.decode(key).expect("base64")).expect("utf8");
    assert!(text.contains(from), "{text} has no {from}");
    STANDARD.encode(text.replace(from, to))
}

/// The configuration tests use: the test environment, the test clock, fast polls.
pub fn config(data_dir: &Path, vendor: Option<&Vendor>) -> AgentConfig {
    AgentConfig {
        trusted_jwks: vendor.map(|v| v.jwks_path.display().to_string()),
        test_clock: true,
        bucket_poll: Duration::from_secs(1),
        cloud_provider: Some("aws".into()),
        region: Some("us-east-1".into()),
        ..AgentConfig::new(data_dir, EnvironmentId::parse(ENV).expect("env id"))
    }
}

pub struct TestAgent {
    pub url: String,
    pub config: AgentConfig,
    pub token: Option<String>,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AgentError>>>,
}

impl TestAgent {
    pub async fn start(config: AgentConfig) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(config: AgentConfig, bind: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tessera_agent::serve(config.clone(), listener, async move {
            let _ = rx.await;
        }));
        let agent = Self {
            url: format!("http://127.0.0.1:{port}"),
            config,
            token: None,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        };
        agent.wait_ready().await;
        agent
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the agent at {} did not become ready", self.url);
    }

    /// Stops gracefully; returns what `serve` returned.
    pub async fn stop(&mut self) -> Result<(), AgentError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("agent task"),
            None => Ok(()),
        }
    }

    /// Stops and starts again on the same data directory, with `change` applied to the configuration.
    pub async fn restart(mut self, change: impl FnOnce(&mut AgentConfig)) -> Self {
        self.stop().await.expect("clean stop");
        let mut config = self.config.clone();
        change(&mut config);
        Self::start(config).await
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, v)
    }

    pub async fn settings(&self) -> Value {
        let (s, v) = self.request(Method::GET, "/v1/settings", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub async fn install_id(&self) -> String {
        self.settings().await["installId"]
            .as_str()
            .expect("installId")
            .to_owned()
    }

    pub async fn activate(&self, key: &str) -> (StatusCode, Value) {
        self.request(Method::POST, "/v1/license", Some(json!({ "productKey": key })))
            .await
    }

    pub async fn create(&self, id: &str, aku: i64) -> (StatusCode, Value) {
        self.request(
            Method::POST,
            "/v1/instances",
            Some(json!({"instanceId": id, "aku": aku})),
        )
        .await
    }

    pub async fn scale(&self, id: &str, aku: i64) -> (StatusCode, Value) {
        self.request(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            Some(json!({ "aku": aku })),
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, &format!("/v1/instances/{id}"), None).await
    }

    pub async fn advance(&self, secs: i64) -> Value {
        let (s, v) = self
            .request(
                Method::POST,
                "/_tessera/test/clock",
                Some(json!({ "AdvanceSeconds": secs })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Retries `check` until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts a refused reservation and its numbers.
pub fn assert_no_capacity(got: &(StatusCode, Value), requested: i64, used: i64, allowed: i64) {
    let (status, body) = got;
    assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "Instance.NoAvailableSubscription", "{body}");
    assert_eq!(body["requested"], requested, "{body}");
    assert_eq!(body["used"], used, "{body}");
    assert_eq!(body["allowed"], allowed, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

/// Asserts a refused product key and its reason.
pub fn assert_invalid_key(got: &(StatusCode, Value), reason: &str) {
    let (status, body) = got;
    assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "License.InvalidProductKey", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.len() > 20), "{body}");
}
