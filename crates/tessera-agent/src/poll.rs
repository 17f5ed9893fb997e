//! Background work: reading the ops bucket for renewed product keys, asking
//! the vendor's server for the environment's key and reporting usage, and
//! writing the latest time seen now and then.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tessera_bucket::{OpsBucket, PRODUCT_KEY_OBJECT};
use tessera_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::{Agent, KeyOutcome};
use crate::recall;
use crate::state::{CheckOutcome, KeySource};

/// A product key is a few hundred bytes; a bigger object is not one.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// A server call that takes longer is abandoned until the next round.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn spawn(agent: Arc<Agent>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(bucket) = agent.bucket.clone() {
        tasks.push(tokio::spawn(bucket_loop(agent.clone(), bucket, stop.clone())));
    }
    if let Some(client) = agent.server.clone() {
        tasks.push(tokio::spawn(server_loop(agent.clone(), client, stop.clone())));
    }
    tasks.push(tokio::spawn(time_loop(agent, stop)));
    tasks
}

/// Sleeps for `d`; true when the agent is stopping instead.
async fn stopping(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.changed() => true,
    }
}

async fn bucket_loop(agent: Arc<Agent>, bucket: OpsBucket, mut stop: watch::Receiver<bool>) {
    loop {
        check_bucket(&agent, &bucket).await;
        if stopping(&mut stop, agent.config.bucket_poll).await {
            return;
        }
    }
}

async fn server_loop(agent: Arc<Agent>, client: Client, mut stop: watch::Receiver<bool>) {
    loop {
        check_server(&agent, &client).await;
        if stopping(&mut stop, agent.config.server_poll).await {
            return;
        }
    }
}

async fn time_loop(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    loop {
        if stopping(&mut stop, agent.config.bucket_poll).await {
            return;
        }
        if let Err(e) = agent.save_time().await {
            tracing::warn!(error = %e, "cannot save the latest time seen");
        }
    }
}

async fn check_bucket(agent: &Agent, bucket: &OpsBucket) {
    if agent.recall_pending(KeySource::OpsBucket).await {
        let env = agent.config.environment_id.as_str();
        if let Ok(earlier) = recall::in_bucket(bucket, &agent.trust, env).await {
            match agent.recall(KeySource::OpsBucket, earlier.trial_started_at).await {
                Ok(()) => recall::remember(bucket, &agent.install_record().await).await,
                Err(e) => tracing::warn!(error = %e, "cannot save what the ops bucket knows of an earlier install"),
            }
        }
    }
    let (outcome, detail) = match bucket.get_bounded(PRODUCT_KEY_OBJECT, MAX_KEY_BYTES).await {
        Err(e) => {
            tracing::warn!(bucket = bucket.url(), error = %e, "cannot read the ops bucket; the license in force stays");
            (CheckOutcome::Failed, e.to_string())
        }
        Ok(None) => (
            CheckOutcome::NoKey,
            format!("there is no {PRODUCT_KEY_OBJECT} object in the ops bucket"),
        ),
        Ok(Some(bytes)) => offer(agent, KeySource::OpsBucket, &String::from_utf8_lossy(&bytes)).await,
    };
    count_poll("bucket", outcome);
    agent.record_check(KeySource::OpsBucket, outcome, detail).await;
}

/// Counts a look at the ops bucket or the server, and when it last succeeded.
fn count_poll(source: &'static str, outcome: CheckOutcome) {
    use tessera_observe::metrics as m;
    let ok = outcome != CheckOutcome::Failed;
    metrics::counter!(m::AGENT_POLLS, "source" => source, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        metrics::gauge!(m::AGENT_LAST_POLL_SUCCESS, "source" => source).set(now);
    }
}

async fn check_server(agent: &Agent, client: &Client) {
    if agent.recall_pending(KeySource::Server).await {
        let r = agent.install_record().await;
        if let Ok((_, started)) =
            recall::with_server(client, &r.environment_id, &r.install_id, r.trial_started_at).await
        {
            if let Err(e) = agent.recall(KeySource::Server, Some(started)).await {
                tracing::warn!(error = %e, "cannot save what the server knows of an earlier install");
            }
        }
    }
    // The vendor may have rotated its issuer key; this is rate-limited.
    agent.trust.refresh().await;
    let env = agent.config.environment_id.as_str();
    let ask = json!({"EnvironmentId": env, "InstallId": agent.install_id});
    let (outcome, mut detail) = match call(client, "GetEnvironmentLicense", &ask).await {
        Err(e) => {
            tracing::warn!(error = %e, "cannot get the environment's license from the server; the license in force stays");
            (CheckOutcome::Failed, format!("GetEnvironmentLicense failed: {e}"))
        }
        Ok(v) => match v.get("ProductKey") {
            Some(Value::String(key)) => offer(agent, KeySource::Server, key).await,
            _ => (
                CheckOutcome::NoKey,
                "the server has no product key for this environment".to_owned(),
            ),
        },
    };
    let in_use = agent.aku_in_use().await;
    let report = json!({"EnvironmentId": env, "InstallId": agent.install_id, "AkuInUse": in_use});
    match call(client, "ReportEnvironmentUsage", &report).await {
        Ok(_) => detail.push_str(&format!("; reported {in_use} AKU in use")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot report usage to the server");
            detail.push_str(&format!("; ReportEnvironmentUsage failed: {e}"));
        }
    }
    count_poll("server", outcome);
    agent.record_check(KeySource::Server, outcome, detail).await;
}

async fn call(client: &Client, op: &str, body: &Value) -> Result<Value, String> {
    match tokio::time::timeout(SERVER_TIMEOUT, client.call_tessera(op, body)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} seconds", SERVER_TIMEOUT.as_secs())),
    }
}

async fn offer(agent: &Agent, source: KeySource, key: &str) -> (CheckOutcome, String) {
    match agent.offer_key(key, source).await {
        Ok(KeyOutcome::Applied(k)) => (
            CheckOutcome::Applied,
            format!(
                "applied license {} version {} ({} AKU, valid until {})",
                k.body.license_arn, k.body.license_version, k.body.aku, k.body.valid_until
            ),
        ),
        Ok(KeyOutcome::Unchanged(why)) => (CheckOutcome::Unchanged, why.to_owned()),
        Ok(KeyOutcome::Rejected(r)) => {
            agent.report_rejection(source, key.trim(), &r).await;
            (CheckOutcome::Rejected, r.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, from = %source, "cannot save a new product key");
            (CheckOutcome::Failed, e.to_string())
        }
    }
}
