//! The issuer public keys a product key must verify against: a JWKS file, a
//! JWKS URL, or the vendor server's `/.well-known/jwks.json`, cached in the
//! data directory so that a restart without the network keeps them.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tessera_token::product_key::{self, ProductKeyBody, ProductKeyError};
use tessera_token::Jwks;

use crate::state::write_atomic;
use crate::AgentError;

pub const JWKS_CACHE_FILE: &str = "trusted-jwks.json";

/// Fetching again sooner than this after an unknown `kid` is pointless.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// JWKS documents are small; anything bigger is not one.
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Url(String),
    None,
}

#[derive(Debug)]
pub struct TrustedKeys {
    source: Source,
    cache: PathBuf,
    dir: PathBuf,
    keys: RwLock<Jwks>,
    last_refresh: Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl TrustedKeys {
    /// `configured` is `--trusted-jwks`; `server_url` is the vendor server, used when it is absent.
    /// A configured file must be readable; a URL that cannot be fetched falls back to the cache.
    pub async fn load(configured: Option<&str>, server_url: Option<&str>, data_dir: &Path) -> Result<Self, AgentError> {
        let source = match (configured, server_url) {
            (Some(s), _) if s.starts_with("http://") || s.starts_with("https://") => Source::Url(s.to_owned()),
            (Some(s), _) => Source::File(PathBuf::from(s)),
            (None, Some(server)) => Source::Url(format!("{}/.well-known/jwks.json", server.trim_end_matches('/'))),
            (None, None) => Source::None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AgentError::Trust(e.to_string()))?;
        let this = Self {
            source,
            cache: data_dir.join(JWKS_CACHE_FILE),
            dir: data_dir.to_owned(),
            keys: RwLock::new(Jwks::default()),
            last_refresh: Mutex::new(None),
            http,
        };
        match &this.source {
            Source::File(path) => {
                let jwks = read_jwks_file(path)?;
                this.set(jwks);
            }
            Source::Url(url) => match this.fetch(url).await {
                Ok(jwks) => this.store(jwks),
                Err(e) => match read_jwks_file(&this.cache) {
                    Ok(cached) => {
                        tracing::warn!(%url, error = %e, "cannot fetch the trusted issuer keys; using the cached copy");
                        this.set(cached);
                    }
                    Err(_) => tracing::warn!(
                        %url, error = %e,
                        "cannot fetch the trusted issuer keys and none are cached: \
                         product keys are refused until they can be fetched"
                    ),
                },
            },
            Source::None => tracing::warn!(
                "no trusted issuer keys (--trusted-jwks or --server-url): \
                 the trial runs, but every product key is refused"
            ),
        }
        Ok(this)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().map(|k| k.keys.is_empty()).unwrap_or(true)
    }

    fn set(&self, jwks: Jwks) {
        if let Ok(mut k) = self.keys.write() {
            *k = jwks;
        }
    }

    /// Keeps fetched keys in memory and in the cache file.
    fn store(&self, jwks: Jwks) {
        match serde_json::to_vec_pretty(&jwks) {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&self.dir, &self.cache, &bytes, 0o600) {
                    tracing::warn!(error = %e, "cannot cache the trusted issuer keys");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot cache the trusted issuer keys"),
        }
        self.set(jwks);
    }

    async fn fetch(&self, url: &str) -> Result<Jwks, String> {
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("the answer is too large to be a JWKS".into());
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not a JWKS: {e}"))
    }

    /// Reads the source again (at most every 30 s). True when it was read.
    pub async fn refresh(&self) -> bool {
        {
            let Ok(mut last) = self.last_refresh.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match &self.source {
            Source::File(path) => match read_jwks_file(path) {
                Ok(jwks) => {
                    self.set(jwks);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the trusted issuer keys again; keeping the ones loaded");
                    false
                }
            },
            Source::Url(url) => match self.fetch(url).await {
                Ok(jwks) => {
                    self.store(jwks);
                    true
                }
                Err(e) => {
                    tracing::warn!(%url, error = %e, "cannot fetch the trusted issuer keys; keeping the ones loaded");
                    false
                }
            },
            Source::None => false,
        }
    }

    pub fn verify(&self, key: &str) -> Result<ProductKeyBody, ProductKeyError> {
        let keys = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        product_key::verify(key, &keys)
    }

    /// Verifies; a key signed by an unknown issuer key makes the keys be read
    /// again once, since the vendor may have rotated its key.
    pub async fn verify_refreshing(&self, key: &str) -> Result<ProductKeyBody, ProductKeyError> {
        match self.verify(key) {
            Err(ProductKeyError::UntrustedKey(_)) if self.refresh().await => self.verify(key),
            other => other,
        }
    }
}

fn read_jwks_file(path: &Path) -> Result<Jwks, AgentError> {
    let bytes = std::fs::read(path).map_err(AgentError::io("read the trusted issuer keys", path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        AgentError::Trust(format!(
            "{} is not a JWKS document ({{\"keys\": [...]}}): {e}",
            path.display()
        ))
    })
}
