//! What the agent is told at start: its environment, where keys come from, how often to look.

use std::path::PathBuf;
use std::time::Duration;

use crate::AgentError;

/// The longest allowed pause between two reads of the ops bucket.
pub const MAX_BUCKET_POLL: Duration = Duration::from_secs(60);

/// An environment ID: letters, digits and hyphens, starting with a letter, at most 32 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentId(String);

impl EnvironmentId {
    pub fn parse(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 32
            && id.starts_with(|c: char| c.is_ascii_alphabetic())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(format!(
                "'{id}' is not an environment ID: use letters, digits and hyphens, start with a letter, \
                 at most 32 characters"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EnvironmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The vendor's Tessera server and the SigV4 credentials the agent calls it with.
#[derive(Clone)]
pub struct ServerConfig {
    pub url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ServerConfig")
            .field("url", &self.url)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Holds `state.json`, `api-token` and the cached trusted keys.
    pub data_dir: PathBuf,
    pub environment_id: EnvironmentId,
    /// `file:///dir` or `s3://bucket[/prefix]`; the agent reads product keys from it.
    pub ops_bucket: Option<String>,
    pub cloud_provider: Option<String>,
    pub region: Option<String>,
    pub server: Option<ServerConfig>,
    /// A JWKS file or an http(s) URL. Without it the server's JWKS is used, if a server is set.
    pub trusted_jwks: Option<String>,
    pub bucket_poll: Duration,
    pub server_poll: Duration,
    /// Lets `POST /_tessera/test/clock` move business time forward.
    pub test_clock: bool,
    /// Added to the system clock: simulates a clock that is set wrong (tests only).
    pub clock_offset_seconds: i64,
    /// How far the system clock may fall behind the latest time seen before it is reported.
    pub clock_tolerance: Duration,
    /// Timeouts, the connection cap and the drain deadline of the HTTP API.
    pub http: tessera_http::Limits,
}

impl AgentConfig {
    /// A configuration with the defaults of `tessera agent run`.
    pub fn new(data_dir: impl Into<PathBuf>, environment_id: EnvironmentId) -> Self {
        Self {
            data_dir: data_dir.into(),
            environment_id,
            ops_bucket: None,
            cloud_provider: None,
            region: None,
            server: None,
            trusted_jwks: None,
            bucket_poll: MAX_BUCKET_POLL,
            server_poll: Duration::from_secs(900),
            test_clock: false,
            clock_offset_seconds: 0,
            clock_tolerance: Duration::from_secs(300),
            http: tessera_http::Limits::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: &str| Err(AgentError::Config(m.to_owned()));
        if self.bucket_poll.is_zero() || self.bucket_poll > MAX_BUCKET_POLL {
            return bad("the bucket poll interval must be between 1 and 60 seconds");
        }
        if self.server_poll.is_zero() {
            return bad("the server poll interval must be at least 1 second");
        }
        if let Some(s) = &self.server {
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                return bad("the server URL must start with http:// or https://");
            }
            if s.access_key_id.is_empty() || s.secret_access_key.is_empty() {
                return bad("calling the server needs an access key ID and a secret access key");
            }
        }
        Ok(())
    }
}
