//! The `tessera` binary: parses the command line and calls into the crates.

mod admin;
mod agent;
mod bench;
mod env;
mod profile;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tessera_server::{AppState, ServerClock};
use tessera_store::Store;

// Request handling makes many small, short-lived allocations across threads;
// mimalloc serves them with less contention than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: a self-hosted license and entitlement manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the license server (AWS License Manager API).
    Serve(ServeArgs),
    /// Manage accounts (tenants).
    #[command(subcommand)]
    Account(admin::AccountCommand),
    /// Manage SigV4 access keys.
    #[command(subcommand)]
    Key(admin::KeyCommand),
    /// Work with signed tokens.
    #[command(subcommand)]
    Token(verify::TokenCommand),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Vendor side of BYOC: register environments and split a license's AKU across them.
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// Vendor side of BYOC: issue, publish and inspect product keys.
    #[command(subcommand)]
    ProductKey(env::ProductKeyCommand),
    /// Customer side of BYOC: the environment agent and its commands.
    Agent(agent::AgentArgs),
}

/// Where the data lives: the data directory, or an explicit database URL.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Data directory; the embedded database is `tessera.db` inside it.
    #[arg(long, env = "TESSERA_DATA_DIR", default_value = "./tessera-data")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`; overrides --data-dir.
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", db_path(&self.data_dir).display()))
    }

    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        if self.database_url.is_none() {
            std::fs::create_dir_all(&self.data_dir)
                .with_context(|| format!("cannot create data directory {}", self.data_dir.display()))?;
            restrict_dir(&self.data_dir);
        }
        let url = self.url();
        tessera_store::open(&url).await.with_context(|| {
            format!(
                "cannot open the database at {}",
                tessera_store::PgStore::redact_url(&url)
            )
        })
    }
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("tessera.db")
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) {}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    #[default]
    Table,
    /// One JSON document, for scripts.
    Json,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Let `POST /_tessera/test/clock` move the business clock forward. For tests only:
    /// anyone who can reach the server could then expire consumptions early.
    #[arg(long, env = "TESSERA_TEST_CLOCK", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    test_clock: bool,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if args.test_clock {
        tracing::warn!("the test clock is enabled: POST /_tessera/test/clock can move time forward");
    }
    let state = AppState::new(store, Arc::new(ServerClock::default()), args.test_clock);
    tracing::info!(%addr, database = %args.store.url(), "tessera is serving the License Manager API");
    tessera_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Account(c) => admin::account(c).await,
        Command::Key(c) => admin::key(c).await,
        Command::Token(c) => verify::run(c).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Env(c) => env::run_env(c).await,
        Command::ProductKey(c) => env::run_product_key(c).await,
        Command::Agent(a) => agent::run(a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
