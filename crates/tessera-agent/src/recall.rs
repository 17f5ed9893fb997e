//! What an install leaves outside its data directory, and how a new install
//! finds it: an environment whose data directory was wiped continues its
//! earlier install (its install ID and its trial's start) instead of starting
//! a new 14-day trial, wherever the agent can see a trace of it.
//!
//! The traces, strongest first:
//! - the vendor's server (`--server-url`): `Tessera.StartTrial` records the
//!   first install and trial of each environment of the customer's account,
//!   and answers every later call with them;
//! - the ops bucket: the agent writes an install record,
//!   `tessera/installs/<environment ID>.json`, and the vendor's product key
//!   for the environment there names the install it was issued for.
//!
//! A new install whose bucket or server does not answer starts its trial, and
//! asks again from its pollers: when the answer comes, an earlier trial found
//! there applies from then on (the install keeps its new ID).
//!
//! What this cannot do: an agent with neither a server nor a bucket, whose
//! data directory is wiped, has nothing to recall, and starts a new install
//! with a new trial. A customer who deletes the install record from its own
//! bucket removes that trace too; the server's record is out of its reach.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_bucket::{OpsBucket, PRODUCT_KEY_OBJECT};
use tessera_client::Client;
use time::OffsetDateTime;

use crate::trust::TrustedKeys;
use crate::{timefmt, AgentError};

/// The install record's object in the ops bucket.
pub fn record_object(environment_id: &str) -> String {
    format!("tessera/installs/{environment_id}.json")
}

/// Objects larger than this are not install records or product keys.
const MAX_OBJECT_BYTES: u64 = 64 * 1024;

/// How long the first start waits for the server's answer.
const SERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The install record the agent keeps in its ops bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallRecord {
    pub environment_id: String,
    pub install_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub trial_started_at: OffsetDateTime,
}

/// An earlier install of this environment, as far as it was found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Earlier {
    pub install_id: Option<String>,
    pub trial_started_at: Option<OffsetDateTime>,
    /// Where it was found, for the log.
    pub found_in: Vec<&'static str>,
}

impl Earlier {
    fn saw(&mut self, install_id: &str, started: Option<OffsetDateTime>, source: &'static str) {
        if self.install_id.is_none() {
            self.install_id = Some(install_id.to_owned());
        }
        if let Some(t) = started {
            self.trial_started_at = Some(self.trial_started_at.map_or(t, |have| have.min(t)));
        }
        if !self.found_in.contains(&source) {
            self.found_in.push(source);
        }
    }
}

/// Looks for an earlier install of `environment_id` in the ops bucket. An
/// unreadable bucket is an error: the caller looks again when it answers.
pub async fn in_bucket(bucket: &OpsBucket, trust: &TrustedKeys, environment_id: &str) -> Result<Earlier, AgentError> {
    let unreadable = |e: tessera_bucket::BucketError| {
        AgentError::Config(format!(
            "cannot read the ops bucket {} to look for an earlier install of environment {environment_id}: {e}",
            bucket.url()
        ))
    };
    let mut earlier = Earlier::default();
    if let Some(bytes) = bucket
        .get_bounded(&record_object(environment_id), MAX_OBJECT_BYTES)
        .await
        .map_err(unreadable)?
    {
        match serde_json::from_slice::<InstallRecord>(&bytes) {
            Ok(r) if r.environment_id == environment_id => earlier.saw(
                &r.install_id,
                Some(r.trial_started_at),
                "the ops bucket's install record",
            ),
            Ok(_) => tracing::warn!("the install record in the ops bucket names another environment; ignored"),
            Err(e) => tracing::warn!(error = %e, "the install record in the ops bucket is unreadable; ignored"),
        }
    }
    if let Some(bytes) = bucket
        .get_bounded(PRODUCT_KEY_OBJECT, MAX_OBJECT_BYTES)
        .await
        .map_err(unreadable)?
    {
        // A product key the vendor issued for this environment proves an install
        // existed when it was issued, so its trial had started by then.
        if let Ok(body) = trust.verify_refreshing(String::from_utf8_lossy(&bytes).trim()).await {
            if body.environment_id == environment_id {
                let issued = timefmt::parse(&body.issued_at);
                earlier.saw(&body.install_id, issued, "the product key in the ops bucket");
            }
        }
    }
    Ok(earlier)
}

/// Tells the vendor's server about this install and learns the environment's
/// first install and trial, which the server keeps whatever happens here.
pub async fn with_server(
    client: &Client,
    environment_id: &str,
    install_id: &str,
    trial_started_at: OffsetDateTime,
) -> Result<(String, OffsetDateTime), AgentError> {
    let ask = json!({
        "EnvironmentId": environment_id,
        "InstallId": install_id,
        "TrialStartedAt": timefmt::format(trial_started_at),
    });
    let unreachable = |why: String| {
        AgentError::Config(format!(
            "cannot record the new install of environment {environment_id} with the server: {why}"
        ))
    };
    let answer = tokio::time::timeout(SERVER_TIMEOUT, client.call_tessera("StartTrial", &ask))
        .await
        .map_err(|_| unreachable(format!("no answer within {} seconds", SERVER_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let first_install = answer
        .get("InstallId")
        .and_then(|v| v.as_str())
        .ok_or_else(|| unreachable("the answer has no InstallId".into()))?;
    let started = answer
        .get("TrialStartedAt")
        .and_then(|v| v.as_str())
        .and_then(timefmt::parse)
        .ok_or_else(|| unreachable("the answer has no TrialStartedAt".into()))?;
    Ok((first_install.to_owned(), started))
}

/// Writes the install record to the ops bucket unless it is there already.
/// Best effort: a bucket that cannot be written is logged and tried again at
/// the next start.
pub async fn remember(bucket: &OpsBucket, record: &InstallRecord) {
    let name = record_object(&record.environment_id);
    let have = bucket.get_bounded(&name, MAX_OBJECT_BYTES).await;
    if let Ok(Some(bytes)) = &have {
        if serde_json::from_slice::<InstallRecord>(bytes).is_ok_and(|r| &r == record) {
            return;
        }
    }
    let bytes = match serde_json::to_vec_pretty(record) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode the install record");
            return;
        }
    };
    match bucket.put(&name, bytes).await {
        Ok(()) => tracing::info!(object = %name, bucket = bucket.url(), "wrote the install record to the ops bucket"),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot write the install record to the ops bucket; a wiped data directory could then start a new trial. Will try again at the next start"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_earliest_trial_and_the_first_install_found_win() {
        let mut e = Earlier::default();
        e.saw("aaaa1111", Some(datetime!(2026-03-01 0:00 UTC)), "a");
        e.saw("bbbb2222", Some(datetime!(2026-02-01 0:00 UTC)), "b");
        e.saw("cccc3333", None, "b");
        assert_eq!(e.install_id.as_deref(), Some("aaaa1111"));
        assert_eq!(e.trial_started_at, Some(datetime!(2026-02-01 0:00 UTC)));
        assert_eq!(e.found_in, vec!["a", "b"]);
    }
}
