//! The agent's operations on its state: settings, product keys and AKU
//! reservations. Each change holds the state mutex from its check to its
//! durable write, so concurrent reservations cannot overshoot.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tessera_bucket::OpsBucket;
use tessera_client::{Client, Credentials};
use tessera_core::Clock;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::api::{codes, ErrorBody, Instance, InstanceList, Settings};
use crate::clock::{AgentClock, TimeGuard};
use crate::license::{self, KeyRejection, LicenseState, LicenseView};
use crate::state::{
    create_data_dir, new_install_id, write_atomic, ActiveKey, CheckOutcome, CheckResult, KeySource, State, StateFile,
};
use crate::trust::TrustedKeys;
use crate::{recall, timefmt, AgentConfig, AgentError, API_TOKEN_FILE};

/// The lock file in the data directory, held while the agent runs.
pub const LOCK_FILE: &str = "agent.lock";

/// The largest reservation one instance may ask for.
pub const MAX_INSTANCE_AKU: i64 = 1_000_000;

pub(crate) struct Inner {
    pub state: State,
    guard: TimeGuard,
    /// Numbers the states handed to the state file, newest last.
    seq: u64,
    /// The last refused key per source, so that a bad object is reported once, not every minute.
    last_rejected: Vec<(KeySource, String)>,
}

pub(crate) struct Agent {
    pub config: AgentConfig,
    pub clock: Arc<AgentClock>,
    pub install_id: String,
    pub trust: TrustedKeys,
    pub bucket: Option<OpsBucket>,
    pub server: Option<Client>,
    pub api_token: String,
    /// Bound to a non-loopback address: every request needs the bearer token.
    pub require_token: bool,
    file: Arc<StateFile>,
    inner: Mutex<Inner>,
    /// Held for the agent's life: one agent per data directory.
    _lock: tessera_datadir::DirLock,
}

/// `GET /readyz`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Readiness {
    status: &'static str,
    pub ready: bool,
    reasons: Vec<String>,
    state_writable: bool,
    license: ReadyLicense,
    last_bucket_read: Option<crate::state::CheckResult>,
    last_server_read: Option<crate::state::CheckResult>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReadyLicense {
    state: LicenseState,
    valid: bool,
    expires_at: String,
}

/// Whether a file can be made in `dir` now (the state file is replaced by
/// one made beside it): a full or read-only disk says no.
fn probe_writable(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    let probe = dir.join(".ready-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .and_then(|mut f| f.write_all(b"ready\n"));
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| e.to_string())
}

/// What became of a product key offered to the agent.
#[derive(Debug)]
pub(crate) enum KeyOutcome {
    Applied(Box<ActiveKey>),
    Unchanged(&'static str),
    Rejected(KeyRejection),
}

/// A refused API request; `http.rs` turns it into a response.
#[derive(Debug)]
pub(crate) enum OpError {
    Invalid(String),
    NotFound(String),
    Exists(String),
    NoCapacity(Box<ErrorBody>),
    InvalidKey(KeyRejection),
    Internal(AgentError),
}

impl From<AgentError> for OpError {
    fn from(e: AgentError) -> Self {
        Self::Internal(e)
    }
}

impl Agent {
    /// Opens (or creates) the install in the data directory and loads the trusted keys.
    pub async fn open(config: AgentConfig, addr: SocketAddr) -> Result<Arc<Self>, AgentError> {
        config.validate()?;
        // A bad bucket URL or keys file stops the start before a new install is made.
        let bucket = config.ops_bucket.as_deref().map(OpsBucket::parse).transpose()?;
        create_data_dir(&config.data_dir)?;
        let lock = tessera_datadir::DirLock::acquire(
            &config.data_dir,
            LOCK_FILE,
            tessera_datadir::Hold::Exclusive,
            "an environment agent is already running on this data directory; stop it first \
             (one agent serves one environment, and two would each reserve the whole allocation)",
        )?;
        let trust = TrustedKeys::load(
            config.trusted_jwks.as_deref(),
            config.server.as_ref().map(|s| s.url.as_str()),
            &config.data_dir,
        )
        .await?;
        let clock = Arc::new(
            AgentClock::new(config.clock_offset_seconds)
                .map_err(|e| AgentError::Config(format!("--clock-offset-seconds: {e}")))?,
        );
        let server = config.server.as_ref().map(|s| {
            Client::new(
                &s.url,
                Credentials {
                    access_key_id: s.access_key_id.clone(),
                    secret_access_key: s.secret_access_key.clone(),
                },
            )
        });
        let file = Arc::new(StateFile::new(&config.data_dir));
        let env = config.environment_id.as_str();
        let state = match file.load(env)? {
            Some(state) => state,
            None => {
                let state = new_install(env, bucket.as_ref(), server.as_ref(), &trust, clock.now()).await?;
                file.save(&state, 0)?;
                state
            }
        };
        // Kept in the bucket for a wiped agent to find, unless the bucket has not
        // yet been searched for an earlier install (its record must not be
        // overwritten first): the poller writes it then. In the background, so
        // that a slow bucket does not hold the start.
        if let Some(bucket) = bucket
            .clone()
            .filter(|_| !state.recall_pending.contains(&KeySource::OpsBucket))
        {
            let record = recall::InstallRecord {
                environment_id: env.to_owned(),
                install_id: state.install_id.clone(),
                trial_started_at: state.trial_started_at,
            };
            tokio::spawn(async move { recall::remember(&bucket, &record).await });
        }
        let api_token = load_or_create_token(&config.data_dir)?;
        let guard = TimeGuard::new(state.latest_seen, config.clock_tolerance);
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => v6.to_canonical(),
            v4 => v4,
        };
        let agent = Arc::new(Self {
            install_id: state.install_id.clone(),
            require_token: !ip.is_loopback(),
            config,
            clock,
            trust,
            bucket,
            server,
            api_token,
            file,
            _lock: lock,
            inner: Mutex::new(Inner {
                state,
                guard,
                seq: 0,
                last_rejected: Vec::new(),
            }),
        });
        // Observe the clock once now, so that a clock set back is reported at start.
        {
            let mut inner = agent.inner.lock().await;
            agent.now(&mut inner);
        }
        Ok(agent)
    }

    fn now(&self, inner: &mut Inner) -> OffsetDateTime {
        inner.guard.observe(self.clock.now())
    }

    /// Makes `next` the state, durably. On error the state in memory stays as it was.
    async fn persist(&self, inner: &mut Inner, mut next: State) -> Result<(), AgentError> {
        next.latest_seen = inner.guard.latest();
        inner.seq += 1;
        let seq = inner.seq;
        let file = self.file.clone();
        let saved = tokio::task::spawn_blocking(move || file.save(&next, seq).map(|()| next))
            .await
            .map_err(|e| AgentError::Internal(format!("writing the state file: {e}")))??;
        inner.state = saved;
        Ok(())
    }

    /// Writes the latest time seen, so that a restart cannot go back before it.
    pub async fn save_time(&self) -> Result<(), AgentError> {
        let mut inner = self.inner.lock().await;
        self.now(&mut inner);
        if inner.guard.latest() > inner.state.latest_seen {
            let next = inner.state.clone();
            self.persist(&mut inner, next).await?;
        }
        Ok(())
    }

    /// Moves the test clock forward and makes the new time durable.
    pub async fn advance_clock(&self, secs: i64) -> Result<(OffsetDateTime, i64), OpError> {
        let total = self
            .clock
            .advance(secs)
            .map_err(|e| OpError::Invalid(format!("AdvanceSeconds: {e}")))?;
        self.save_time().await?;
        let mut inner = self.inner.lock().await;
        Ok((self.now(&mut inner), total))
    }

    pub async fn settings(&self) -> Settings {
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        self.settings_of(&inner.state, now)
    }

    fn settings_of(&self, state: &State, now: OffsetDateTime) -> Settings {
        let view = LicenseView::of(state, now);
        Settings {
            environment_id: state.environment_id.clone(),
            ops_bucket: self.config.ops_bucket.clone(),
            cloud_provider: self.config.cloud_provider.clone(),
            region: self.config.region.clone(),
            aku_allocated: view.aku_allocated,
            aku_in_use: state.aku_in_use(),
            install_id: state.install_id.clone(),
            license_state: view.state,
            expires_at: timefmt::format(view.expires_at),
            license_arn: view.key.as_ref().map(|k| k.license_arn.clone()),
            license_version: view.key.as_ref().map(|k| k.license_version.clone()),
            license_source: state.product_key.as_ref().map(|k| k.source),
            now: timefmt::format(now),
            last_bucket_check: state.last_bucket_check.clone(),
            last_server_check: state.last_server_check.clone(),
        }
    }

    /// What `GET /readyz` answers: ready when the state file can be written.
    pub async fn readiness(&self) -> Readiness {
        let dir = self.config.data_dir.clone();
        let writable = tokio::task::spawn_blocking(move || probe_writable(&dir))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        let view = LicenseView::of(&inner.state, now);
        let mut reasons = Vec::new();
        if let Err(e) = &writable {
            reasons.push(format!(
                "the state file in {} cannot be written: {e}",
                self.config.data_dir.display()
            ));
        }
        Readiness {
            status: if reasons.is_empty() { "ready" } else { "not ready" },
            ready: reasons.is_empty(),
            reasons,
            state_writable: writable.is_ok(),
            license: ReadyLicense {
                state: view.state,
                valid: !view.expired(),
                expires_at: timefmt::format(view.expires_at),
            },
            last_bucket_read: inner.state.last_bucket_check.clone(),
            last_server_read: inner.state.last_server_check.clone(),
        }
    }

    /// Sets the gauges `GET /metrics` shows from the state now.
    pub async fn set_gauges(&self) {
        use tessera_observe::metrics as m;
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        let view = LicenseView::of(&inner.state, now);
        let reserved = inner.state.aku_in_use();
        metrics::gauge!(m::AGENT_AKU_ALLOWED).set(view.aku_allocated as f64);
        metrics::gauge!(m::AGENT_AKU_RESERVED).set(reserved as f64);
        metrics::gauge!(m::AGENT_AKU_AVAILABLE).set(view.aku_allocated.saturating_sub(reserved).max(0) as f64);
        metrics::gauge!(m::AGENT_INSTANCES).set(inner.state.instances.len() as f64);
        for s in [LicenseState::Trial, LicenseState::Active, LicenseState::Expired] {
            let on = if s == view.state { 1.0 } else { 0.0 };
            metrics::gauge!(m::AGENT_LICENSE_STATE, "state" => s.as_str()).set(on);
        }
        metrics::gauge!(m::AGENT_LICENSE_EXPIRY).set((view.expires_at - now).as_seconds_f64());
        metrics::gauge!(m::AGENT_TRIAL).set(if view.key.is_none() { 1.0 } else { 0.0 });
    }

    /// Whether a new install still has to look for an earlier one in `source`.
    pub async fn recall_pending(&self, source: KeySource) -> bool {
        self.inner.lock().await.state.recall_pending.contains(&source)
    }

    /// What `source` knows of an earlier install, learnt after this install
    /// began: its trial, if it started earlier, is this install's trial. The
    /// install ID stays (product keys may be bound to it by now).
    pub async fn recall(&self, source: KeySource, earlier_trial: Option<OffsetDateTime>) -> Result<(), AgentError> {
        let mut inner = self.inner.lock().await;
        let mut next = inner.state.clone();
        next.recall_pending.retain(|s| *s != source);
        if let Some(t) = earlier_trial.filter(|t| *t < next.trial_started_at && *t <= self.clock.now()) {
            tracing::warn!(
                from = %source,
                trial_started_at = %timefmt::format(t),
                "this environment was installed before: its trial, started earlier, continues; no new trial"
            );
            next.trial_started_at = t.replace_nanosecond(0).unwrap_or(t);
        }
        if next != inner.state {
            self.persist(&mut inner, next).await?;
        }
        Ok(())
    }

    /// The install record to keep in the ops bucket.
    pub async fn install_record(&self) -> recall::InstallRecord {
        let inner = self.inner.lock().await;
        recall::InstallRecord {
            environment_id: inner.state.environment_id.clone(),
            install_id: inner.state.install_id.clone(),
            trial_started_at: inner.state.trial_started_at,
        }
    }

    pub async fn aku_in_use(&self) -> i64 {
        self.inner.lock().await.state.aku_in_use()
    }

    /// Update Product License: accepts a key that verifies, is bound to this
    /// install and environment and has not expired; the current license stays otherwise.
    pub async fn activate(&self, key: &str) -> Result<Settings, OpError> {
        match self.offer_key(key, KeySource::Api).await? {
            KeyOutcome::Rejected(r) => Err(OpError::InvalidKey(r)),
            KeyOutcome::Applied(_) | KeyOutcome::Unchanged(_) => Ok(self.settings().await),
        }
    }

    /// Checks a key and puts it in force. A key found by polling must also be
    /// newer than the one in force; one given through the API need not be.
    pub async fn offer_key(&self, key: &str, source: KeySource) -> Result<KeyOutcome, AgentError> {
        let key = key.trim();
        if key.is_empty() {
            return Ok(KeyOutcome::Rejected(KeyRejection::from_verify(
                tessera_token::product_key::ProductKeyError::Malformed("it is empty".into()),
                false,
            )));
        }
        // Signature first, outside the lock: it may fetch the issuer keys again.
        let body = match self.trust.verify_refreshing(key).await {
            Ok(body) => body,
            Err(e) => {
                return Ok(KeyOutcome::Rejected(KeyRejection::from_verify(
                    e,
                    self.trust.is_empty(),
                )))
            }
        };
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        if let Err(r) = license::check_binding(&body, &self.install_id, self.config.environment_id.as_str(), now) {
            return Ok(KeyOutcome::Rejected(r));
        }
        let current = inner.state.product_key.as_ref();
        if current.is_some_and(|c| c.key == key) {
            return Ok(KeyOutcome::Unchanged("this product key is already in force"));
        }
        if source != KeySource::Api && !license::is_newer(&body, current.map(|c| &c.body)) {
            return Ok(KeyOutcome::Unchanged(
                "the key found is not newer than the one in force",
            ));
        }
        let active = ActiveKey {
            key: key.to_owned(),
            body,
            applied_at: now,
            source,
        };
        let mut next = inner.state.clone();
        next.product_key = Some(active.clone());
        self.persist(&mut inner, next).await?;
        tracing::info!(
            from = %source,
            license_arn = %active.body.license_arn,
            license_version = %active.body.license_version,
            aku = active.body.aku,
            valid_until = %active.body.valid_until,
            "product key applied"
        );
        Ok(KeyOutcome::Applied(Box::new(active)))
    }

    /// Logs a refused polled key: a warning the first time, quietly after.
    pub async fn report_rejection(&self, source: KeySource, key: &str, r: &KeyRejection) {
        let mut inner = self.inner.lock().await;
        let seen = inner.last_rejected.iter().any(|(s, k)| *s == source && k == key);
        if seen {
            tracing::debug!(from = %source, reason = r.reason.as_str(), "the same refused product key is still there");
            return;
        }
        inner.last_rejected.retain(|(s, _)| *s != source);
        inner.last_rejected.push((source, key.to_owned()));
        tracing::warn!(
            from = %source,
            reason = r.reason.as_str(),
            "ignored a product key: {}; the license in force stays",
            r.message
        );
    }

    /// Records the last bucket or server check; written only when its outcome changes.
    pub async fn record_check(&self, source: KeySource, outcome: CheckOutcome, detail: String) {
        let mut inner = self.inner.lock().await;
        let at = self.now(&mut inner);
        let result = CheckResult { at, outcome, detail };
        fn slot(s: &mut State, source: KeySource) -> &mut Option<CheckResult> {
            if source == KeySource::Server {
                &mut s.last_server_check
            } else {
                &mut s.last_bucket_check
            }
        }
        let changed = match slot(&mut inner.state, source) {
            Some(old) => old.outcome != result.outcome || old.detail != result.detail,
            None => true,
        };
        if changed {
            let mut next = inner.state.clone();
            *slot(&mut next, source) = Some(result);
            if let Err(e) = self.persist(&mut inner, next).await {
                tracing::warn!(error = %e, "cannot save the result of a check");
            }
        } else {
            *slot(&mut inner.state, source) = Some(result);
        }
    }

    pub async fn list_instances(&self) -> InstanceList {
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        let view = LicenseView::of(&inner.state, now);
        InstanceList {
            instances: inner
                .state
                .instances
                .iter()
                .map(|(id, aku)| Instance {
                    instance_id: id.clone(),
                    aku: *aku,
                })
                .collect(),
            aku_in_use: inner.state.aku_in_use(),
            aku_allocated: view.aku_allocated,
            license_state: view.state,
        }
    }

    /// Reserves capacity for a new instance. Returns whether it was created
    /// (false: the same reservation already existed, as after a retried request).
    pub async fn create_instance(&self, id: &str, aku: i64) -> Result<(Instance, bool), OpError> {
        validate_instance_id(id)?;
        validate_aku(aku)?;
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        if let Some(&have) = inner.state.instances.get(id) {
            if have == aku {
                return Ok((Instance::new(id, aku), false));
            }
            return Err(OpError::Exists(format!(
                "instance {id} already has a reservation of {have} AKU: scale it with PATCH /v1/instances/{id}"
            )));
        }
        self.check_capacity(&inner.state, now, id, aku, None)?;
        let mut next = inner.state.clone();
        next.instances.insert(id.to_owned(), aku);
        self.persist(&mut inner, next).await?;
        tracing::info!(instance = id, aku, "reserved AKU for a new instance");
        Ok((Instance::new(id, aku), true))
    }

    /// Changes an instance's reservation. Scaling down is always allowed.
    pub async fn scale_instance(&self, id: &str, aku: i64) -> Result<Instance, OpError> {
        validate_aku(aku)?;
        let mut inner = self.inner.lock().await;
        let now = self.now(&mut inner);
        let Some(&have) = inner.state.instances.get(id) else {
            return Err(OpError::NotFound(id.to_owned()));
        };
        if aku == have {
            return Ok(Instance::new(id, aku));
        }
        if aku > have {
            self.check_capacity(&inner.state, now, id, aku - have, Some(have))?;
        }
        let mut next = inner.state.clone();
        next.instances.insert(id.to_owned(), aku);
        self.persist(&mut inner, next).await?;
        tracing::info!(
            instance = id,
            from = have,
            to = aku,
            "changed an instance's reservation"
        );
        Ok(Instance::new(id, aku))
    }

    pub async fn delete_instance(&self, id: &str) -> Result<(), OpError> {
        let mut inner = self.inner.lock().await;
        self.now(&mut inner);
        let Some(have) = inner.state.instances.get(id).copied() else {
            return Err(OpError::NotFound(id.to_owned()));
        };
        let mut next = inner.state.clone();
        next.instances.remove(id);
        self.persist(&mut inner, next).await?;
        tracing::info!(instance = id, aku = have, "released an instance's reservation");
        Ok(())
    }

    /// Refuses adding `requested` AKU when the license expired or the allocation would be exceeded.
    fn check_capacity(
        &self,
        state: &State,
        now: OffsetDateTime,
        id: &str,
        requested: i64,
        scaling_from: Option<i64>,
    ) -> Result<(), OpError> {
        let view = LicenseView::of(state, now);
        let used = state.aku_in_use();
        let allowed = view.aku_allocated;
        let what = match scaling_from {
            Some(from) => format!(
                "scale instance {id} from {from} to {} AKU",
                from.saturating_add(requested)
            ),
            None => format!("reserve {requested} AKU for new instance {id}"),
        };
        let message = if view.expired() {
            format!(
                "cannot {what}: {} for environment {}. Existing instances keep their reservations and may be \
                 scaled down or deleted, but none can be created or scaled up. To renew, get a new product key \
                 from the vendor for install ID {} and activate it (Update Product License, or \
                 `tessera agent activate KEY`), or have the vendor write it to the ops bucket",
                view.expiry_text(),
                state.environment_id,
                self.install_id
            )
        } else if used.checked_add(requested).is_none_or(|total| total > allowed) {
            format!(
                "cannot {what}: {used} of the {allowed} AKU allocated to environment {} are reserved, so {} \
                 more are available and {requested} were requested. Scale down or delete an instance, or buy \
                 more AKU and activate the new product key",
                state.environment_id,
                allowed.saturating_sub(used).max(0)
            )
        } else {
            return Ok(());
        };
        Err(OpError::NoCapacity(Box::new(ErrorBody {
            requested: Some(requested),
            used: Some(used),
            allowed: Some(allowed),
            license_state: Some(view.state),
            ..ErrorBody::new(codes::NO_AVAILABLE_SUBSCRIPTION, message)
        })))
    }
}

/// A new install of `env`: it continues the environment's earlier install
/// (its install ID and trial) when the ops bucket or the server knows one,
/// and starts the built-in trial otherwise. A bucket or server that does not
/// answer is asked again by its poller, and an earlier trial found then still
/// applies (see [`Agent::recall`]).
async fn new_install(
    env: &str,
    bucket: Option<&OpsBucket>,
    server: Option<&Client>,
    trust: &TrustedKeys,
    now: OffsetDateTime,
) -> Result<State, AgentError> {
    let mut pending = Vec::new();
    let mut earlier = match bucket {
        Some(b) => match recall::in_bucket(b, trust, env).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "will look for an earlier install when the ops bucket answers");
                pending.push(KeySource::OpsBucket);
                recall::Earlier::default()
            }
        },
        None => recall::Earlier::default(),
    };
    // Whole seconds, as the server records them; a start in the future (an
    // edited record) is now.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut install_id = earlier.install_id.clone().unwrap_or_else(new_install_id);
    let mut trial_started_at = earlier.trial_started_at.map_or(now, |t| t.min(now));
    if let Some(client) = server {
        match recall::with_server(client, env, &install_id, trial_started_at).await {
            Ok((first, started)) => {
                if first != install_id || started < trial_started_at {
                    earlier.found_in.push("the server");
                }
                (install_id, trial_started_at) = (first, started);
            }
            Err(e) => {
                tracing::warn!(error = %e, "will record the install with the server when it answers");
                pending.push(KeySource::Server);
            }
        }
    }
    let mut state = State::new_install(env, install_id, trial_started_at, now);
    state.recall_pending = pending;
    if earlier.found_in.is_empty() {
        tracing::info!(
            install_id = %state.install_id,
            trial_ends_at = %timefmt::format(license::trial_end(&state)),
            "new install: the {}-day, {}-AKU trial has started",
            license::TRIAL_DAYS,
            license::TRIAL_AKU
        );
    } else {
        tracing::warn!(
            install_id = %state.install_id,
            trial_started_at = %timefmt::format(state.trial_started_at),
            found_in = %earlier.found_in.join(", "),
            "the data directory is new, but this environment was installed before: the new data directory \
             continues that install (its install ID and its trial); no new trial starts"
        );
    }
    Ok(state)
}

impl Instance {
    fn new(id: &str, aku: i64) -> Self {
        Self {
            instance_id: id.to_owned(),
            aku,
        }
    }
}

fn validate_instance_id(id: &str) -> Result<(), OpError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(OpError::Invalid(format!(
            "instanceId '{id}' is not valid: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn validate_aku(aku: i64) -> Result<(), OpError> {
    tessera_core::validate::Long::Int(aku)
        .within("aku", 1, MAX_INSTANCE_AKU)
        .map(drop)
        .map_err(|e| OpError::Invalid(e.to_string()))
}

/// The bearer token for non-loopback listeners: made once, readable by the owner only.
fn load_or_create_token(dir: &Path) -> Result<String, AgentError> {
    use rand::RngCore;
    let path = dir.join(API_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        Ok(_) => Err(AgentError::Config(format!(
            "{} is empty: remove it and a new token is made at start",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let token = hex::encode(raw);
            write_atomic(dir, &path, format!("{token}\n").as_bytes(), 0o600)?;
            Ok(token)
        }
        Err(e) => Err(AgentError::io("read the API token", &path)(e)),
    }
}
