//! A SigV4-signing client for the License Manager JSON API, used by the CLI,
//! the benchmark and the integration tests.

pub mod wire;

use serde_json::Value;
use tessera_sigv4::{sha256_hex, RequestParts, Signer};
use time::OffsetDateTime;

/// The awsJson1_1 content type of every request.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Signs `POST /` of a JSON `body` for `X-Amz-Target: target` on `host`
/// (content-type, host and x-amz-target signed); returns the `x-amz-date` and
/// `authorization` header values.
pub(crate) fn sign_json_post(signer: &mut Signer, host: &str, target: &str, body: &[u8]) -> (String, String) {
    let headers = [
        ("content-type", JSON_CONTENT_TYPE),
        ("host", host),
        ("x-amz-target", target),
    ];
    let hash = sha256_hex(body);
    let req = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        payload_hash: &hash,
    };
    signer.sign(&req, OffsetDateTime::now_utc())
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an AWS error (`__type` + `Message`).
    #[error("{kind} (HTTP {status}): {message}")]
    Api { kind: String, message: String, status: u16 },
    /// With its causes: reqwest's own message leaves out "connection refused".
    #[error("request failed: {}", tessera_observe::error_chain(.0))]
    Transport(reqwest::Error),
    #[error("the server's answer is not JSON: {0}")]
    Decode(String),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server's answer is not valid HTTP/1.1: {0}")]
    Protocol(String),
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        Self::Transport(e)
    }
}

impl ClientError {
    /// The AWS error name, such as `NoEntitlementsAllowedException`.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Self::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The AWS error of a non-2xx answer: its `__type` (without a namespace) and `Message`.
    pub fn from_answer(status: u16, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        Self::Api {
            kind: v["__type"]
                .as_str()
                .unwrap_or("Unknown")
                .rsplit('#')
                .next()
                .unwrap_or("")
                .to_owned(),
            message: v["Message"].as_str().or(v["message"].as_str()).unwrap_or("").to_owned(),
            status,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    creds: Credentials,
    region: String,
}

impl Client {
    pub fn new(endpoint: &str, creds: Credentials) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let host = endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&endpoint)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .unwrap_or_default(),
            endpoint,
            host,
            creds,
            region: "us-east-1".into(),
        }
    }

    /// Calls `AWSLicenseManager.<op>` with a JSON body.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, ClientError> {
        self.call_raw(op, body.to_string()).await
    }

    /// Calls one of Tessera's own operations (`X-Amz-Target: Tessera.<op>`),
    /// such as `RegisterEnvironment`, with the same signing and error shapes.
    pub async fn call_tessera(&self, op: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(format!("Tessera.{op}"), body.to_string()).await
    }

    /// Calls an operation with a body sent as is, even if it is not JSON.
    pub async fn call_raw(&self, op: &str, payload: String) -> Result<Value, ClientError> {
        self.send(format!("AWSLicenseManager.{op}"), payload).await
    }

    async fn send(&self, target: String, payload: String) -> Result<Value, ClientError> {
        let mut signer = Signer::new(&self.creds.access_key_id, &self.creds.secret_access_key, &self.region);
        let (date, authorization) = sign_json_post(&mut signer, &self.host, &target, payload.as_bytes());
        let rb = self
            .http
            .post(format!("{}/", self.endpoint))
            .body(payload)
            .header("content-type", JSON_CONTENT_TYPE)
            .header("x-amz-target", target)
            .header("x-amz-date", date)
            .header("authorization", authorization);
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let v: Value = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?
        };
        if status >= 300 {
            return Err(ClientError::from_answer(status, &bytes));
        }
        Ok(v)
    }
}
