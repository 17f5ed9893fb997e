//! RegisterEnvironment, ListEnvironments, GetEnvironment, AllocateEnvironment,
//! IssueProductKey, PublishProductKey, GetEnvironmentLicense, ReportEnvironmentUsage.

use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::consumption::unavailable_reason;
use tessera_core::environment::{
    validate_aku, validate_environment_id, validate_install_id, validate_ops_bucket, Environment, DEFAULT_ENTITLEMENT,
};
use tessera_core::license::limits;
use tessera_core::{timefmt, validate, AccountId, Clock, LicenseArn};
use tessera_token::product_key::{self, ProductKeyBody};

use crate::aws::{parse, required};
use crate::error::{ApiError, ApiResult};
use crate::SharedState;

/// Product keys of licenses without an end date are valid until then.
const OPEN_ENDED: &str = "2999-12-31T00:00:00Z";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterInput {
    license_arn: Option<String>,
    environment_id: Option<String>,
    install_id: Option<String>,
    ops_bucket: Option<String>,
    cloud_provider: Option<String>,
    region: Option<String>,
    aku: Option<validate::Long>,
    entitlement: Option<String>,
}

/// The license must be the caller's own.
async fn own_license(state: &SharedState, caller: &AccountId, arn: &str) -> ApiResult<tessera_core::license::License> {
    let parsed = LicenseArn::parse("LicenseArn", arn)?;
    let license = state
        .store
        .get_license(arn, None)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("license {arn} does not exist")))?;
    if parsed.account() != caller {
        return Err(ApiError::AccessDenied(format!(
            "account {caller} may not allocate license {arn}: only its issuer may"
        )));
    }
    Ok(license)
}

pub async fn register(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: RegisterInput = parse(v)?;
    let license_arn = required("LicenseArn", input.license_arn)?;
    let environment_id = required("EnvironmentId", input.environment_id)?;
    validate_environment_id("EnvironmentId", &environment_id)?;
    let install_id = required("InstallId", input.install_id)?;
    validate_install_id("InstallId", &install_id)?;
    let ops_bucket = required("OpsBucket", input.ops_bucket)?;
    validate_ops_bucket("OpsBucket", &ops_bucket)?;
    let cloud_provider = required("CloudProvider", input.cloud_provider)?;
    validate::text("CloudProvider", &cloud_provider, 64)?;
    let region = required("Region", input.region)?;
    validate::text("Region", &region, limits::REGION)?;
    let aku = validate_aku("Aku", required("Aku", input.aku)?)?;
    let entitlement = input.entitlement.unwrap_or_else(|| DEFAULT_ENTITLEMENT.to_owned());
    validate::text("Entitlement", &entitlement, limits::NAME)?;
    own_license(state, caller, &license_arn).await?;
    let now = state.clock.now();
    let env = Environment {
        environment_id,
        install_id,
        ops_bucket,
        cloud_provider,
        region,
        license_arn,
        entitlement,
        aku_allocated: aku,
        aku_in_use: 0,
        usage_reported_at: None,
        created_at: timefmt::format(now),
        updated_at: timefmt::format(now),
    };
    let env = state.store.register_environment(caller, env, now).await?;
    Ok(json!({ "Environment": env }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    license_arn: Option<String>,
}

pub async fn list(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: ListInput = parse(v)?;
    if let Some(a) = &input.license_arn {
        LicenseArn::parse("LicenseArn", a)?;
    }
    let envs = state
        .store
        .list_environments(Some(caller), None, input.license_arn.as_deref())
        .await?;
    let envs: Vec<Environment> = envs.into_iter().map(|(_, e)| e).collect();
    Ok(json!({ "Environments": envs }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnvInput {
    environment_id: Option<String>,
    install_id: Option<String>,
    aku: Option<validate::Long>,
    aku_in_use: Option<validate::Long>,
}

async fn own_environment(state: &SharedState, caller: &AccountId, id: Option<String>) -> ApiResult<Environment> {
    let id = required("EnvironmentId", id)?;
    validate_environment_id("EnvironmentId", &id)?;
    state
        .store
        .get_environment(caller, &id)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("environment {id} is not registered by account {caller}")))
}

pub async fn get(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: EnvInput = parse(v)?;
    let env = own_environment(state, caller, input.environment_id).await?;
    Ok(json!({ "Environment": env }))
}

pub async fn allocate(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: EnvInput = parse(v)?;
    let aku = validate_aku("Aku", required("Aku", input.aku)?)?;
    let env = own_environment(state, caller, input.environment_id).await?;
    let env = state
        .store
        .allocate_environment(caller, &env.environment_id, aku, state.clock.now())
        .await?;
    Ok(json!({ "Environment": env }))
}

/// Signs a new product key for the environment's current allocation and license version.
pub async fn product_key_for(
    state: &SharedState,
    vendor: &AccountId,
    env: &Environment,
) -> ApiResult<(String, ProductKeyBody)> {
    let license = state
        .store
        .get_license(&env.license_arn, None)
        .await?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("license {} does not exist", env.license_arn)))?;
    let now = state.clock.now();
    if let Some(why) = unavailable_reason(&license, now) {
        return Err(ApiError::Conflict(format!(
            "no product key can be issued for environment {}: {why}",
            env.environment_id
        )));
    }
    let key = state.keys.signing_key(vendor, now).await?;
    let body = ProductKeyBody {
        install_id: env.install_id.clone(),
        environment_id: env.environment_id.clone(),
        license_arn: env.license_arn.clone(),
        license_version: license.version.clone(),
        product_sku: license.product_sku.clone(),
        entitlement: env.entitlement.clone(),
        aku: env.aku_allocated,
        valid_from: license.validity.begin.clone(),
        valid_until: license.validity.end.clone().unwrap_or_else(|| OPEN_ENDED.to_owned()),
        issued_at: timefmt::format(now),
        key_fingerprint: license.issuer.key_fingerprint.clone(),
        key_id: key.kid().to_owned(),
    };
    Ok((product_key::issue(&body, &key), body))
}

pub async fn issue_product_key(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: EnvInput = parse(v)?;
    let env = own_environment(state, caller, input.environment_id).await?;
    let (key, body) = product_key_for(state, caller, &env).await?;
    Ok(json!({"ProductKey": key, "Contents": body}))
}

pub async fn publish_product_key(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: EnvInput = parse(v)?;
    let env = own_environment(state, caller, input.environment_id).await?;
    let (key, body) = product_key_for(state, caller, &env).await?;
    let bucket = tessera_bucket::OpsBucket::parse(&env.ops_bucket)
        .map_err(|e| ApiError::Validation(format!("OpsBucket: {e}")))?;
    bucket
        .put(tessera_bucket::PRODUCT_KEY_OBJECT, key.clone().into_bytes())
        .await
        .map_err(|e| {
            ApiError::Conflict(format!(
                "the product key could not be written to {}: {e}; check that the server can write to the ops bucket",
                env.ops_bucket
            ))
        })?;
    Ok(json!({
        "ProductKey": key,
        "Contents": body,
        "Object": format!("{}/{}", env.ops_bucket.trim_end_matches('/'), tessera_bucket::PRODUCT_KEY_OBJECT),
    }))
}

/// Finds the environment an agent names, and checks the caller may speak for it:
/// the vendor that registered it, or the license's beneficiary.
async fn agent_environment(
    state: &SharedState,
    caller: &AccountId,
    id: Option<String>,
    install: Option<String>,
) -> ApiResult<(AccountId, Environment)> {
    let id = required("EnvironmentId", id)?;
    validate_environment_id("EnvironmentId", &id)?;
    let install = required("InstallId", install)?;
    validate_install_id("InstallId", &install)?;
    let candidates = state.store.list_environments(None, Some(&id), None).await?;
    for (vendor, env) in candidates {
        if env.install_id != install {
            continue;
        }
        let allowed = &vendor == caller || {
            let license = state.store.get_license(&env.license_arn, None).await?;
            license.and_then(|l| l.beneficiary_account()).as_ref() == Some(caller)
        };
        if allowed {
            return Ok((vendor, env));
        }
    }
    Err(ApiError::ResourceNotFound(format!(
        "no environment {id} with install ID {install} is registered for account {caller}"
    )))
}

pub async fn get_environment_license(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: EnvInput = parse(v)?;
    let (vendor, env) = agent_environment(state, caller, input.environment_id, input.install_id).await?;
    let key = match product_key_for(state, &vendor, &env).await {
        Ok((key, _)) => Some(key),
        // An unusable license has no key to hand out; the agent keeps what it has.
        Err(ApiError::Conflict(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(json!({"ProductKey": key, "Environment": env}))
}

pub async fn report_usage(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: EnvInput = parse(v)?;
    let in_use = validate_aku("AkuInUse", required("AkuInUse", input.aku_in_use)?)?;
    let (vendor, env) = agent_environment(state, caller, input.environment_id, input.install_id).await?;
    let env = state
        .store
        .report_environment_usage(&vendor, &env.environment_id, in_use, state.clock.now())
        .await?;
    Ok(json!({ "Environment": env }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TrialInput {
    environment_id: Option<String>,
    install_id: Option<String>,
    trial_started_at: Option<String>,
}

/// An agent's new install: the server keeps the first install of each
/// environment of the caller's account and when its trial started, and
/// answers every later call with those, so a wiped agent continues them.
pub async fn start_trial(state: &SharedState, caller: &AccountId, v: Value) -> ApiResult<Value> {
    let input: TrialInput = parse(v)?;
    let environment_id = required("EnvironmentId", input.environment_id)?;
    validate_environment_id("EnvironmentId", &environment_id)?;
    let install_id = required("InstallId", input.install_id)?;
    validate_install_id("InstallId", &install_id)?;
    let now = state.clock.now();
    let started = match input.trial_started_at.as_deref() {
        Some(t) => timefmt::parse("TrialStartedAt", t)?,
        None => now,
    };
    let trial = state
        .store
        .start_trial(caller, &environment_id, &install_id, started, now)
        .await?;
    Ok(json!({
        "EnvironmentId": environment_id,
        "InstallId": trial.install_id,
        "TrialStartedAt": timefmt::format(trial.trial_started_at),
    }))
}
