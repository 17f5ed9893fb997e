//! The agent's durable state: one JSON file in the data directory, replaced
//! atomically (temporary file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tessera_token::product_key::ProductKeyBody;
use time::OffsetDateTime;

use crate::AgentError;

pub const STATE_FILE: &str = "state.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// 32 lowercase hex characters, made once; product keys are bound to it.
    pub install_id: String,
    pub environment_id: String,
    /// The built-in trial starts with the install and never again.
    #[serde(with = "time::serde::rfc3339")]
    pub trial_started_at: OffsetDateTime,
    pub product_key: Option<ActiveKey>,
    /// Instance ID → reserved AKU.
    pub instances: BTreeMap<String, i64>,
    /// Business time never goes back past this, across restarts too.
    #[serde(with = "time::serde::rfc3339")]
    pub latest_seen: OffsetDateTime,
    pub last_bucket_check: Option<CheckResult>,
    pub last_server_check: Option<CheckResult>,
}

/// The product key in force, with its decoded (verified) body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveKey {
    pub key: String,
    pub body: ProductKeyBody,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    pub source: KeySource,
}

/// Where a product key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeySource {
    /// `POST /v1/license` (Update Product License).
    Api,
    OpsBucket,
    Server,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Api => "the API",
            Self::OpsBucket => "the ops bucket",
            Self::Server => "the server",
        })
    }
}

/// What the last look at the ops bucket or the server found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub outcome: CheckOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckOutcome {
    /// A new key was found and is now in force.
    Applied,
    /// The key found is the one in force (or not newer than it).
    Unchanged,
    /// There is no key to find.
    NoKey,
    /// A key was found but refused; the one in force stays.
    Rejected,
    /// The bucket or server could not be read.
    Failed,
    /// Usage was reported (server only, when no key was offered).
    Ok,
}

impl State {
    fn fresh(environment_id: &str, now: OffsetDateTime) -> Self {
        // Whole seconds, as the API shows times.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self {
            format: FORMAT,
            install_id: hex::encode(id),
            environment_id: environment_id.to_owned(),
            trial_started_at: now,
            product_key: None,
            instances: BTreeMap::new(),
            latest_seen: now,
            last_bucket_check: None,
            last_server_check: None,
        }
    }

    pub fn aku_in_use(&self) -> i64 {
        // Each reservation is at most MAX_INSTANCE_AKU; saturating all the same,
        // since the file could have been edited.
        self.instances.values().fold(0i64, |sum, aku| sum.saturating_add(*aku))
    }
}

/// The state file of one data directory.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
    /// The sequence number of the state on disk: writes are serialized here, and
    /// a write that lost a race to a newer state is dropped instead of undoing it.
    written: Mutex<u64>,
}

impl StateFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.to_owned(),
            path: data_dir.join(STATE_FILE),
            written: Mutex::new(0),
        }
    }

    /// Loads the state, or creates a new install (and starts its trial) when there is none.
    /// Returns whether the install is new.
    pub fn load_or_create(&self, environment_id: &str, now: OffsetDateTime) -> Result<(State, bool), AgentError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).map_err(|e| AgentError::CorruptState {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })?;
                if state.format != FORMAT {
                    return Err(AgentError::CorruptState {
                        path: self.path.clone(),
                        detail: format!("format {} is not the supported {FORMAT}", state.format),
                    });
                }
                if state.environment_id != environment_id {
                    return Err(AgentError::EnvironmentMismatch {
                        data_dir: self.dir.clone(),
                        stored: state.environment_id,
                        configured: environment_id.to_owned(),
                    });
                }
                Ok((state, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = State::fresh(environment_id, now);
                self.save(&state, 0)?;
                Ok((state, true))
            }
            Err(e) => Err(AgentError::io("read the state file", &self.path)(e)),
        }
    }

    /// Replaces the state file with state number `seq`; when this returns, the
    /// new state (or a newer one) survives a crash.
    pub fn save(&self, state: &State, seq: u64) -> Result<(), AgentError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if seq < *written {
            return Ok(());
        }
        let bytes =
            serde_json::to_vec_pretty(state).map_err(|e| AgentError::Internal(format!("encoding the state: {e}")))?;
        write_atomic(&self.dir, &self.path, &bytes, 0o600)?;
        *written = seq;
        Ok(())
    }
}

/// Writes `path` so that a crash leaves either the old or the new content.
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    tessera_datadir::write_atomic(dir, path, bytes, mode).map_err(AgentError::from)
}

/// Creates the data directory, readable by its owner only.
pub fn create_data_dir(dir: &Path) -> Result<(), AgentError> {
    tessera_datadir::create_private(dir).map_err(AgentError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_new_install_is_created_once_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StateFile::new(tmp.path());
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        let (s, new) = file.load_or_create("env-1", t0).unwrap();
        assert!(new);
        assert_eq!(s.install_id.len(), 32);
        assert!(s
            .install_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let (again, new) = file.load_or_create("env-1", t0 + time::Duration::days(3)).unwrap();
        assert!(!new);
        assert_eq!(again, s);
        assert!(!tmp.path().join("state.tmp").exists());
    }

    #[test]
    fn another_environment_or_a_corrupt_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StateFile::new(tmp.path());
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        file.load_or_create("env-1", t0).unwrap();
        assert!(matches!(
            file.load_or_create("env-2", t0),
            Err(AgentError::EnvironmentMismatch { .. })
        ));
        std::fs::write(tmp.path().join(STATE_FILE), b"{not json").unwrap();
        let err = file.load_or_create("env-1", t0).unwrap_err();
        assert!(matches!(err, AgentError::CorruptState { .. }), "{err}");
    }
}
