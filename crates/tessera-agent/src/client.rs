//! A client for the agent's HTTP API, used by `tessera agent info|activate|instances`.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::api::{ErrorBody, Instance, InstanceList, Settings};
use crate::API_TOKEN_FILE;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent refused the request.
    #[error("{} ({}, HTTP {status})", body.message, body.code)]
    Api { status: u16, body: Box<ErrorBody> },
    #[error("cannot reach the agent at {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("the agent's answer is not what was expected (HTTP {status}): {detail}")]
    Decode { status: u16, detail: String },
}

impl ClientError {
    /// The agent's error body, when it refused the request.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            Self::Api { body, .. } => Some(body),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Reads the API token from an agent's data directory, if it has one.
pub fn read_api_token(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(data_dir.join(API_TOKEN_FILE)) {
        Ok(t) => Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl AgentClient {
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method, &url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            detail: chain(&e),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport { url, detail: chain(&e) })?;
        if status >= 300 {
            let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| ClientError::Decode {
                status,
                detail: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            })?;
            return Err(ClientError::Api {
                status,
                body: Box::new(body),
            });
        }
        // DELETE answers 204 with no body.
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            status,
            detail: e.to_string(),
        })
    }

    pub async fn settings(&self) -> Result<Settings, ClientError> {
        self.send(Method::GET, "/v1/settings", None).await
    }

    /// Update Product License.
    pub async fn activate(&self, product_key: &str) -> Result<Settings, ClientError> {
        self.send(Method::POST, "/v1/license", Some(json!({"productKey": product_key})))
            .await
    }

    pub async fn instances(&self) -> Result<InstanceList, ClientError> {
        self.send(Method::GET, "/v1/instances", None).await
    }

    pub async fn create_instance(&self, id: &str, aku: i64) -> Result<Instance, ClientError> {
        self.send(
            Method::POST,
            "/v1/instances",
            Some(json!({"instanceId": id, "aku": aku})),
        )
        .await
    }

    pub async fn scale_instance(&self, id: &str, aku: i64) -> Result<Instance, ClientError> {
        self.send(
            Method::PATCH,
            &format!("/v1/instances/{}", encode(id)),
            Some(json!({"aku": aku})),
        )
        .await
    }

    pub async fn delete_instance(&self, id: &str) -> Result<(), ClientError> {
        let _: Value = self
            .send(Method::DELETE, &format!("/v1/instances/{}", encode(id)), None)
            .await?;
        Ok(())
    }
}

/// An error and its causes on one line, without the repetitions some libraries make.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Percent-encodes a path segment (instance IDs are plain, but input is input).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
