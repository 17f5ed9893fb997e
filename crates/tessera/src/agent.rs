//! `tessera agent`: the environment agent and the commands that talk to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tessera_agent::api::{CheckResult, Settings};
use tessera_agent::client::{read_api_token, AgentClient, ClientError};
use tessera_agent::{AgentConfig, EnvironmentId, ServerConfig};

use crate::Output;

#[derive(Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Run the agent: install ID, trial, product keys and AKU reservations, over HTTP.
    Run(Box<RunArgs>),
    /// Show the environment's settings: IDs, ops bucket, license state and AKU.
    Info(ClientArgs),
    /// Update Product License: activate a product key ("-" reads it from standard input).
    Activate {
        /// The product key the vendor sent ("-": read it from standard input).
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reserve, scale and release the AKU of the product's instances.
    #[command(subcommand)]
    Instances(InstancesCommand),
    /// The agent's configuration.
    #[command(subcommand)]
    Config(AgentConfigCommand),
}

#[derive(Subcommand)]
enum AgentConfigCommand {
    /// Print the effective settings of `agent run` with these flags, environment
    /// and config file, and where each came from (secrets not shown).
    Show {
        #[command(flatten)]
        run: Box<RunArgs>,
        #[command(flatten)]
        out: crate::out::OutputArg,
    },
}

#[derive(Subcommand)]
enum InstancesCommand {
    /// List the reservations.
    List(ClientArgs),
    /// Reserve AKU for a new instance.
    Create {
        /// The instance's ID, as the product names it.
        instance_id: String,
        /// The AKU the instance is to hold.
        #[arg(long)]
        aku: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change an instance's reservation.
    Scale {
        /// The instance's ID, as the product names it.
        instance_id: String,
        /// The AKU the instance is to hold.
        #[arg(long)]
        aku: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Release an instance's reservation.
    Delete {
        /// The instance's ID, as the product names it.
        instance_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct RunArgs {
    /// A TOML file of settings, keyed by flag name (`listen = "127.0.0.1:7171"`);
    /// flags and environment variables override it.
    #[arg(long, env = "TESSERA_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    http: crate::HttpArgs,
    /// Data directory: the state file, the API token and cached issuer keys.
    #[arg(long, env = "TESSERA_AGENT_DATA_DIR", default_value = "./tessera-agent")]
    data_dir: PathBuf,
    /// Address to listen on. A non-loopback address requires the bearer token in `api-token`.
    #[arg(long, env = "TESSERA_AGENT_LISTEN", default_value = "127.0.0.1:7171")]
    listen: SocketAddr,
    /// The environment's ID: letters, digits and hyphens, starting with a letter, at most 32 characters.
    #[arg(long, env = "TESSERA_AGENT_ENVIRONMENT_ID", value_parser = EnvironmentId::parse)]
    environment_id: EnvironmentId,
    /// The ops bucket the vendor writes product keys to: file:///dir or s3://bucket[/prefix]
    /// (S3 settings come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    #[arg(long, env = "TESSERA_AGENT_OPS_BUCKET")]
    ops_bucket: Option<String>,
    /// The cloud provider the environment runs on (shown in the settings).
    #[arg(long, env = "TESSERA_AGENT_CLOUD_PROVIDER")]
    cloud_provider: Option<String>,
    /// The environment's region (shown in the settings).
    #[arg(long, env = "TESSERA_AGENT_REGION")]
    region: Option<String>,
    /// The vendor's Tessera server: the agent fetches its product key there and reports usage.
    #[arg(long, env = "TESSERA_AGENT_SERVER_URL", requires_all = ["access_key_id", "secret_access_key"])]
    server_url: Option<String>,
    /// SigV4 access key ID for the server.
    #[arg(long, env = "TESSERA_AGENT_ACCESS_KEY_ID", requires = "server_url")]
    access_key_id: Option<String>,
    /// SigV4 secret access key for the server.
    #[arg(
        long,
        env = "TESSERA_AGENT_SECRET_ACCESS_KEY",
        requires = "server_url",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,
    /// The issuer public keys (a JWKS file or URL); product keys must verify against them.
    /// Default with --server-url: the server's /.well-known/jwks.json, cached in the data directory.
    #[arg(long, env = "TESSERA_AGENT_TRUSTED_JWKS")]
    trusted_jwks: Option<String>,
    /// Seconds between reads of the ops bucket (1 to 60).
    #[arg(long, env = "TESSERA_AGENT_BUCKET_POLL_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    bucket_poll_seconds: u64,
    /// Seconds between calls to the server.
    #[arg(long, env = "TESSERA_AGENT_SERVER_POLL_SECONDS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..))]
    server_poll_seconds: u64,
    /// Let `POST /_tessera/test/clock` move business time forward. For tests only.
    #[arg(long, env = "TESSERA_AGENT_TEST_CLOCK", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    test_clock: bool,
    /// Seconds added to the system clock, possibly negative: simulates a clock set wrong. For tests only.
    #[arg(
        long,
        env = "TESSERA_AGENT_CLOCK_OFFSET_SECONDS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    clock_offset_seconds: i64,
    /// How far the system clock may fall behind the latest time seen before a warning is logged.
    #[arg(long, env = "TESSERA_AGENT_CLOCK_TOLERANCE_SECONDS", default_value_t = 300)]
    clock_tolerance_seconds: u64,
}

#[derive(Args)]
struct ClientArgs {
    /// The agent's address.
    #[arg(long, env = "TESSERA_AGENT_URL", default_value = "http://127.0.0.1:7171")]
    agent_url: String,
    /// The agent's bearer token (needed when it listens beyond loopback).
    #[arg(long, env = "TESSERA_AGENT_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// The agent's data directory, to read its `api-token` from.
    #[arg(long, env = "TESSERA_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How to print: a table for people, or one JSON document for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<AgentClient> {
        let token = match (&self.api_token, &self.data_dir) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(dir)) => {
                read_api_token(dir).with_context(|| format!("cannot read the API token in {}", dir.display()))?
            }
            (None, None) => None,
        };
        Ok(AgentClient::new(&self.agent_url, token))
    }
}

impl AgentArgs {
    /// Whether this runs the agent (a server), rather than a command that prints and ends.
    pub fn serves(&self) -> bool {
        matches!(self.command, AgentCommand::Run(_))
    }
}

pub async fn run(args: AgentArgs, layered: &crate::config::Layered) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Run(a) => run_agent(*a).await,
        AgentCommand::Config(AgentConfigCommand::Show { out, .. }) => {
            crate::config::show(layered, out.output, crate::config::Casing::Camel)
        }
        AgentCommand::Info(c) => {
            let s = refused(c.output, c.client()?.settings().await)?;
            print_settings(&s, c.output)
        }
        AgentCommand::Activate { key, client } => {
            let key = if key == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the product key from standard input")?
            } else {
                key
            };
            let s = refused(client.output, client.client()?.activate(key.trim()).await)?;
            if client.output == Output::Table {
                println!("Product key activated.");
            }
            print_settings(&s, client.output)
        }
        AgentCommand::Instances(cmd) => instances(cmd).await,
    }
}

async fn run_agent(a: RunArgs) -> anyhow::Result<()> {
    let server = a.server_url.map(|url| ServerConfig {
        url,
        access_key_id: a.access_key_id.unwrap_or_default(),
        secret_access_key: a.secret_access_key.unwrap_or_default(),
    });
    let config = AgentConfig {
        ops_bucket: a.ops_bucket,
        cloud_provider: a.cloud_provider,
        region: a.region,
        server,
        trusted_jwks: a.trusted_jwks,
        bucket_poll: Duration::from_secs(a.bucket_poll_seconds),
        server_poll: Duration::from_secs(a.server_poll_seconds),
        test_clock: a.test_clock,
        clock_offset_seconds: a.clock_offset_seconds,
        clock_tolerance: Duration::from_secs(a.clock_tolerance_seconds),
        http: a.http.limits(),
        ..AgentConfig::new(a.data_dir, a.environment_id)
    };
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    tessera_observe::metrics::install();
    tessera_agent::serve(config, listener, crate::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn instances(cmd: InstancesCommand) -> anyhow::Result<()> {
    match cmd {
        InstancesCommand::List(c) => {
            let list = refused(c.output, c.client()?.instances().await)?;
            if c.output == Output::Json {
                return print_json(&list);
            }
            let mut t = table(&["Instance ID", "AKU"]);
            for i in &list.instances {
                t.add_row(vec![i.instance_id.clone(), i.aku.to_string()]);
            }
            println!("{t}");
            println!(
                "{} of {} AKU reserved; license {}",
                list.aku_in_use,
                list.aku_allocated,
                state_name(&list.license_state)
            );
            Ok(())
        }
        InstancesCommand::Create {
            instance_id,
            aku,
            client,
        } => {
            let i = refused(client.output, client.client()?.create_instance(&instance_id, aku).await)?;
            done(
                client.output,
                &i,
                &format!("Reserved {} AKU for instance {}.", i.aku, i.instance_id),
            )
        }
        InstancesCommand::Scale {
            instance_id,
            aku,
            client,
        } => {
            let i = refused(client.output, client.client()?.scale_instance(&instance_id, aku).await)?;
            done(
                client.output,
                &i,
                &format!("Instance {} now reserves {} AKU.", i.instance_id, i.aku),
            )
        }
        InstancesCommand::Delete { instance_id, client } => {
            refused(client.output, client.client()?.delete_instance(&instance_id).await)?;
            let body = serde_json::json!({"instanceId": instance_id, "deleted": true});
            done(client.output, &body, &format!("Released instance {instance_id}."))
        }
    }
}

/// On a refusal, scripts get the agent's error body on stdout; everyone gets the message and a failure exit.
fn refused<T>(output: Output, r: Result<T, ClientError>) -> anyhow::Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            if let (Output::Json, Some(body)) = (output, e.body()) {
                let _ = print_json(body);
            }
            Err(anyhow::anyhow!(e))
        }
    }
}

fn done<T: serde::Serialize>(output: Output, value: &T, text: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(value),
        Output::Table => {
            println!("{text}");
            Ok(())
        }
    }
}

use crate::out::{json as print_json, table};

fn state_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn check_text(c: &Option<CheckResult>) -> String {
    match c {
        Some(c) => format!(
            "{} at {}: {}",
            state_name(&c.outcome),
            c.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            c.detail
        ),
        None => "-".into(),
    }
}

fn print_settings(s: &Settings, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        return print_json(s);
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut t = table(&["Setting", "Value"]);
    for (k, v) in [
        ("Environment ID", s.environment_id.clone()),
        ("Install ID", s.install_id.clone()),
        ("Ops bucket", dash(&s.ops_bucket)),
        ("Cloud provider", dash(&s.cloud_provider)),
        ("Region", dash(&s.region)),
        ("License state", state_name(&s.license_state)),
        ("Expires at", s.expires_at.clone()),
        ("AKU allocated", s.aku_allocated.to_string()),
        ("AKU in use", s.aku_in_use.to_string()),
        ("License ARN", dash(&s.license_arn)),
        ("License version", dash(&s.license_version)),
        ("Last ops bucket check", check_text(&s.last_bucket_check)),
        ("Last server check", check_text(&s.last_server_check)),
    ] {
        t.add_row(vec![k.to_owned(), v]);
    }
    println!("{t}");
    Ok(())
}
