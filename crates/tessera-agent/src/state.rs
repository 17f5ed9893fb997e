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
    /// Where a new install could not yet look for an earlier install of its
    /// environment (the ops bucket or the server was unreachable): looked at
    /// as soon as it answers, and an earlier trial found there then applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recall_pending: Vec<KeySource>,
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

/// A new install ID: 32 lowercase hex characters.
pub fn new_install_id() -> String {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    hex::encode(id)
}

impl State {
    /// A new install at `now`: `install_id` and `trial_started_at` continue an
    /// earlier install of the environment when one was found.
    pub fn new_install(
        environment_id: &str,
        install_id: String,
        trial_started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        // Whole seconds, as the API shows times.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let trial_started_at = trial_started_at.replace_nanosecond(0).unwrap_or(trial_started_at);
        Self {
            format: FORMAT,
            install_id,
            environment_id: environment_id.to_owned(),
            trial_started_at,
            product_key: None,
            instances: BTreeMap::new(),
            latest_seen: now,
            last_bucket_check: None,
            last_server_check: None,
            recall_pending: Vec::new(),
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

    /// Loads the state; None when there is none (a new install, or a wiped one).
    pub fn load(&self, environment_id: &str) -> Result<Option<State>, AgentError> {
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
                Ok(Some(state))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
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
    fn a_new_install_is_saved_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StateFile::new(tmp.path());
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        assert_eq!(file.load("env-1").unwrap(), None);
        let s = State::new_install("env-1", new_install_id(), t0, t0);
        file.save(&s, 0).unwrap();
        assert_eq!(s.install_id.len(), 32);
        assert!(s
            .install_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(file.load("env-1").unwrap(), Some(s));
        assert!(!tmp.path().join("state.tmp").exists());
    }

    #[test]
    fn another_environment_or_a_corrupt_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StateFile::new(tmp.path());
        let t0 = datetime!(2026-01-01 00:00:00 UTC);
        file.save(&State::new_install("env-1", new_install_id(), t0, t0), 0)
            .unwrap();
        assert!(matches!(
            file.load("env-2"),
            Err(AgentError::EnvironmentMismatch { .. })
        ));
        std::fs::write(tmp.path().join(STATE_FILE), b"{not json").unwrap();
        let err = file.load("env-1").unwrap_err();
        assert!(matches!(err, AgentError::CorruptState { .. }), "{err}");
    }
}
