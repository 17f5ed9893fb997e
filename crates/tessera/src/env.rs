//! `tessera env` and `tessera product-key`: the vendor side of BYOC.
//!
//! These act on the data directory directly (like `tessera account`) and call
//! the same operations the server offers as `Tessera.<Operation>`, as the
//! license's issuing account.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tessera_core::{AccountId, LicenseArn};
use tessera_server::native::environments;
use tessera_server::{AppState, ServerClock, SharedState};

use crate::{Output, StoreArgs};

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Register a customer's environment and allocate it AKU from a license.
    Register {
        /// The customer's license to allocate from (the vendor issued it).
        #[arg(long)]
        license_arn: String,
        /// The environment's ID, as the customer's agent runs with it.
        #[arg(long)]
        environment_id: String,
        /// The install ID the environment's agent shows (`tessera agent info`).
        #[arg(long)]
        install_id: String,
        /// Where the environment reads license updates: file:///dir or s3://bucket[/prefix].
        #[arg(long)]
        ops_bucket: String,
        /// The cloud provider the environment runs on (shown in its settings).
        #[arg(long, alias = "cloud-provider")]
        cloud: String,
        /// The environment's region (shown in its settings).
        #[arg(long)]
        region: String,
        /// AKU to allocate to the environment from the license.
        #[arg(long)]
        aku: i64,
        /// The license's counted entitlement to allocate from.
        #[arg(long, default_value = "AKU")]
        entitlement: String,
        #[command(flatten)]
        store: StoreArgs,
        /// How to print: a table for people, or one JSON document for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// List environments.
    List {
        /// Only the environments this vendor account registered.
        #[arg(long)]
        account: Option<String>,
        /// Only the environments allocated from this license.
        #[arg(long)]
        license_arn: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// How to print: a table for people, or one JSON document for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one environment: its install, bucket, allocation, usage and license.
    Get(EnvTarget),
    /// Change an environment's AKU allocation (then issue or publish a new product key).
    Allocate {
        /// The environment's new AKU allocation.
        #[arg(long)]
        aku: i64,
        #[command(flatten)]
        target: EnvTarget,
    },
}

/// One environment, named by its ID (and its vendor, where several have it).
#[derive(Args)]
pub struct EnvTarget {
    /// The environment's ID.
    environment_id: String,
    /// The vendor account, when several have an environment with this ID.
    #[arg(long)]
    account: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// How to print: a table for people, or one JSON document for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Subcommand)]
pub enum ProductKeyCommand {
    /// Sign a product key for an environment's current allocation and print it.
    Issue(EnvTarget),
    /// Sign a product key and write it to the environment's ops bucket, where its agent picks it up.
    Publish(EnvTarget),
    /// Decode a product key, verify it against the issuer's public key, print its fields.
    Inspect {
        /// The product key (base64).
        key: String,
        /// A JWKS file or URL (the server's /.well-known/jwks.json); default: the keys in the data directory.
        #[arg(long)]
        jwks: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        /// How to print: a table for people, or one JSON document for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

async fn state(store: &StoreArgs) -> anyhow::Result<SharedState> {
    Ok(AppState::new(
        store.open().await?,
        Arc::new(ServerClock::default()),
        false,
    ))
}

fn account_arg(a: &Option<String>) -> anyhow::Result<Option<AccountId>> {
    a.as_deref()
        .map(|s| AccountId::parse(s).map_err(|e| anyhow::anyhow!("--account: {}", e.message)))
        .transpose()
}

/// The vendor account that registered `id`; ambiguous IDs need --account.
async fn owner(state: &SharedState, id: &str, account: &Option<String>) -> anyhow::Result<AccountId> {
    let account = account_arg(account)?;
    let found = state.store.list_environments(account.as_ref(), Some(id), None).await?;
    match found.as_slice() {
        [] => bail!("environment {id} is not registered; register it with `tessera env register`"),
        [(a, _)] => Ok(a.clone()),
        _ => bail!("several accounts registered an environment {id}; name the vendor with --account"),
    }
}

fn api<T>(r: Result<T, tessera_server::ApiError>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::anyhow!("{}: {e}", e.name()))
}

fn print_envs(output: Output, envs: &[Value]) {
    match output {
        Output::Json => println!("{}", Value::Array(envs.to_vec())),
        Output::Table => {
            let mut t = crate::out::table(&[
                "EnvironmentId",
                "InstallId",
                "Cloud",
                "Region",
                "AKU allocated",
                "AKU in use",
                "License",
                "Ops bucket",
            ]);
            for e in envs {
                let s = |k: &str| e[k].as_str().map(str::to_owned).unwrap_or_else(|| e[k].to_string());
                t.add_row(vec![
                    s("EnvironmentId"),
                    s("InstallId"),
                    s("CloudProvider"),
                    s("Region"),
                    format!("{} {}", s("AkuAllocated"), s("Entitlement")),
                    s("AkuInUse"),
                    s("LicenseArn"),
                    s("OpsBucket"),
                ]);
            }
            println!("{t}");
        }
    }
}

fn print_key(output: Output, v: &Value) {
    match output {
        Output::Json => println!("{v}"),
        Output::Table => {
            println!("{}", v["ProductKey"].as_str().unwrap_or_default());
            if let Some(o) = v["Object"].as_str() {
                eprintln!("written to {o}");
            }
        }
    }
}

pub async fn run_env(cmd: EnvCommand) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::Register {
            license_arn,
            environment_id,
            install_id,
            ops_bucket,
            cloud,
            region,
            aku,
            entitlement,
            store,
            output,
        } => {
            let vendor = LicenseArn::parse("--license-arn", &license_arn)
                .map_err(|e| anyhow::anyhow!("--license-arn: {}", e.message))?
                .account()
                .clone();
            let state = state(&store).await?;
            let body = json!({
                "LicenseArn": license_arn, "EnvironmentId": environment_id, "InstallId": install_id,
                "OpsBucket": ops_bucket, "CloudProvider": cloud, "Region": region, "Aku": aku, "Entitlement": entitlement,
            });
            let r = api(environments::register(&state, &vendor, body).await)?;
            print_envs(output, &[r["Environment"].clone()]);
        }
        EnvCommand::List {
            account,
            license_arn,
            store,
            output,
        } => {
            let state = state(&store).await?;
            let account = account_arg(&account)?;
            let envs = state
                .store
                .list_environments(account.as_ref(), None, license_arn.as_deref())
                .await?;
            let envs: Vec<Value> = envs.iter().map(|(_, e)| json!(e)).collect();
            print_envs(output, &envs);
        }
        EnvCommand::Get(EnvTarget {
            environment_id,
            account,
            store,
            output,
        }) => {
            let state = state(&store).await?;
            let vendor = owner(&state, &environment_id, &account).await?;
            let r = api(environments::get(&state, &vendor, json!({"EnvironmentId": environment_id})).await)?;
            print_envs(output, &[r["Environment"].clone()]);
        }
        EnvCommand::Allocate {
            aku,
            target:
                EnvTarget {
                    environment_id,
                    account,
                    store,
                    output,
                },
        } => {
            let state = state(&store).await?;
            let vendor = owner(&state, &environment_id, &account).await?;
            let r = api(
                environments::allocate(&state, &vendor, json!({"EnvironmentId": environment_id, "Aku": aku})).await,
            )?;
            print_envs(output, &[r["Environment"].clone()]);
        }
    }
    Ok(())
}

pub async fn run_product_key(cmd: ProductKeyCommand) -> anyhow::Result<()> {
    match cmd {
        ProductKeyCommand::Issue(EnvTarget {
            environment_id,
            account,
            store,
            output,
        }) => {
            let state = state(&store).await?;
            let vendor = owner(&state, &environment_id, &account).await?;
            let r =
                api(environments::issue_product_key(&state, &vendor, json!({"EnvironmentId": environment_id})).await)?;
            print_key(output, &r);
        }
        ProductKeyCommand::Publish(EnvTarget {
            environment_id,
            account,
            store,
            output,
        }) => {
            let state = state(&store).await?;
            let vendor = owner(&state, &environment_id, &account).await?;
            let r = api(
                environments::publish_product_key(&state, &vendor, json!({"EnvironmentId": environment_id})).await,
            )?;
            print_key(output, &r);
        }
        ProductKeyCommand::Inspect {
            key,
            jwks,
            store,
            output,
        } => {
            let trusted = match jwks {
                Some(src) => crate::verify::load_jwks(&src).await?,
                None => state(&store)
                    .await?
                    .keys
                    .jwks()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .as_ref()
                    .clone(),
            };
            let (raw, _) = tessera_token::product_key::decode(&key).context("cannot read the product key")?;
            let verdict = tessera_token::product_key::verify(&key, &trusted);
            let now = tessera_core::timefmt::format(time::OffsetDateTime::now_utc());
            let expired = raw.valid_until.as_str() <= now.as_str();
            let status = match (&verdict, expired) {
                (Err(e), _) => format!("INVALID: {e}"),
                (Ok(_), true) => format!("EXPIRED at {}", raw.valid_until),
                (Ok(_), false) => format!("VALID until {}", raw.valid_until),
            };
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"Status": status, "Verified": verdict.is_ok(), "Contents": raw})
                ),
                Output::Table => {
                    let mut t = crate::out::table(&["Field", "Value"]);
                    let v = json!(raw);
                    if let Some(o) = v.as_object() {
                        for (k, v) in o {
                            t.add_row(vec![
                                k.clone(),
                                v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                            ]);
                        }
                    }
                    t.add_row(vec!["status".to_owned(), status.clone()]);
                    println!("{t}");
                }
            }
            if verdict.is_err() {
                bail!("the product key does not verify");
            }
        }
    }
    Ok(())
}
