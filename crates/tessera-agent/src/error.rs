//! Why the agent could not start or save its state.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(String),
    // Causes are part of the messages (and so not `source`s), for logs that print one line.
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "the state file {} is unreadable ({detail}); restore it from a backup. Removing it would \
         create a new install: a new install ID, no product key, and no trial",
        path.display()
    )]
    CorruptState { path: PathBuf, detail: String },
    #[error(
        "the data directory {} belongs to environment {stored}, not {configured}; \
         use that environment ID or another data directory",
        data_dir.display()
    )]
    EnvironmentMismatch {
        data_dir: PathBuf,
        stored: String,
        configured: String,
    },
    #[error(transparent)]
    Bucket(#[from] tessera_bucket::BucketError),
    #[error("trusted issuer keys: {0}")]
    Trust(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    DataDir(#[from] tessera_datadir::DataDirError),
}

impl AgentError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { what, path, cause }
    }
}
