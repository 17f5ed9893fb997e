//! The BYOC ops bucket: a customer-owned bucket the vendor may write to.
//!
//! The vendor publishes an environment's current product key there as the
//! text object [`PRODUCT_KEY_OBJECT`]; the environment agent polls it and
//! applies renewals without a restart. The bucket is named by a URL:
//! `file:///abs/dir` (a local directory, for tests and single-host setups) or
//! `s3://bucket[/prefix]` (S3 or an S3-compatible server, configured from the
//! usual `AWS_*` environment variables).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};

/// The object holding an environment's product key (one key, as text).
pub const PRODUCT_KEY_OBJECT: &str = "tessera/product-key";

/// The URL schemes [`OpsBucket::parse`] accepts, for error messages.
pub const SUPPORTED_SCHEMES: &str = "file:///absolute/dir or s3://bucket[/prefix]";

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("ops bucket URL '{url}' is not supported: {reason}; use {SUPPORTED_SCHEMES}")]
    InvalidUrl { url: String, reason: String },
    #[error("object name '{0}' is not valid in a bucket")]
    InvalidName(String),
    // The cause is part of the message (and so not a `source`), for logs that print one line.
    #[error("ops bucket directory {path} cannot be used: {cause}")]
    Directory { path: String, cause: std::io::Error },
    #[error("object '{name}' is {size} bytes, more than the {max} this reader accepts")]
    TooLarge { name: String, size: u64, max: u64 },
    #[error("ops bucket {url}: {cause}")]
    Store { url: String, cause: object_store::Error },
}

/// One ops bucket, or a prefix inside one.
#[derive(Clone)]
pub struct OpsBucket {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
}

impl std::fmt::Debug for OpsBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsBucket")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl OpsBucket {
    /// Opens the bucket a URL names. Nothing is read yet, except that a
    /// `file://` directory is created when it is missing.
    pub fn parse(url: &str) -> Result<OpsBucket, BucketError> {
        let invalid = |reason: &str| BucketError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        match parsed.scheme() {
            "file" => Self::local(url, &parsed),
            "s3" => Self::s3(url, &parsed),
            other => Err(invalid(&format!("the scheme '{other}' is unknown"))),
        }
    }

    fn local(url: &str, parsed: &url::Url) -> Result<OpsBucket, BucketError> {
        if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
            return Err(BucketError::InvalidUrl {
                url: url.to_owned(),
                reason: "a file:// URL must name a local absolute path (file:///dir)".into(),
            });
        }
        let dir = parsed.to_file_path().map_err(|()| BucketError::InvalidUrl {
            url: url.to_owned(),
            reason: "a file:// URL must name a local absolute path (file:///dir)".into(),
        })?;
        let dir_err = |cause| BucketError::Directory {
            path: dir.display().to_string(),
            cause,
        };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|cause| BucketError::Store {
            url: url.to_owned(),
            cause,
        })?;
        Ok(OpsBucket {
            url: url.to_owned(),
            store: Arc::new(fs),
            prefix: None,
        })
    }

    fn s3(url: &str, parsed: &url::Url) -> Result<OpsBucket, BucketError> {
        let bucket = parsed.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(BucketError::InvalidUrl {
                url: url.to_owned(),
                reason: "an s3:// URL must name a bucket (s3://bucket[/prefix])".into(),
            });
        }
        let prefix = parsed.path().trim_matches('/');
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(Path::parse(prefix).map_err(|e| BucketError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("the prefix is not a valid object path: {e}"),
            })?)
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                // A poller runs again soon; a failed check should not take minutes.
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(20),
            });
        // A local S3-compatible server (moto, MinIO) usually speaks plain HTTP.
        if builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().map_err(|cause| BucketError::Store {
            url: url.to_owned(),
            cause,
        })?;
        Ok(OpsBucket {
            url: url.to_owned(),
            store: Arc::new(store),
            prefix,
        })
    }

    /// The URL this bucket was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> Result<Path, BucketError> {
        let rel = Path::parse(name).map_err(|_| BucketError::InvalidName(name.to_owned()))?;
        // Names are relative to the bucket (or its prefix) and name one object.
        if rel.as_ref().is_empty() || name.starts_with('/') || name.ends_with('/') {
            return Err(BucketError::InvalidName(name.to_owned()));
        }
        Ok(match &self.prefix {
            Some(p) => Path::from_iter(p.parts().chain(rel.parts())),
            None => rel,
        })
    }

    fn store_err(&self, cause: object_store::Error) -> BucketError {
        BucketError::Store {
            url: self.url.clone(),
            cause,
        }
    }

    /// Writes an object whole; readers see the old or the new content, never a mix.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), BucketError> {
        let path = self.path(name)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_err(e))?;
        Ok(())
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, BucketError> {
        self.get_bounded(name, u64::MAX).await
    }

    /// Reads an object of at most `max_bytes`; a larger one is an error, so that
    /// a stray object cannot make a poller read gigabytes.
    pub async fn get_bounded(&self, name: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, BucketError> {
        let path = self.path(name)?;
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_err(e)),
        };
        if got.meta.size > max_bytes {
            return Err(BucketError::TooLarge {
                name: name.to_owned(),
                size: got.meta.size,
                max: max_bytes,
            });
        }
        let bytes = got.bytes().await.map_err(|e| self.store_err(e))?;
        Ok(Some(bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests;
