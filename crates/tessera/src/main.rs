//! The `tessera` binary: parses the command line and calls into the crates.

mod admin;
mod agent;
mod backup;
mod bench;
mod config;
mod env;
mod out;
mod profile;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
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
    /// Log lines as text (colour only on a terminal) or as JSON objects, one per line.
    #[arg(long, global = true, env = "TESSERA_LOG_FORMAT", default_value = "text",
          value_parser = |s: &str| s.parse::<tessera_observe::LogFormat>())]
    log_format: tessera_observe::LogFormat,
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
    /// Copy the embedded database to a file while the server keeps serving, and check the copy.
    Backup(backup::BackupArgs),
    /// Put a backup in place as a data directory's database (no server may be running on it).
    Restore(backup::RestoreArgs),
    /// The server's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective settings of `serve` with these flags, environment and
    /// config file, and where each came from (secrets not shown).
    Show {
        #[command(flatten)]
        serve: Box<ServeArgs>,
        #[command(flatten)]
        out: out::OutputArg,
    },
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

    /// Opens an existing database: a data directory without one is refused,
    /// not given an empty database (a mistyped --data-dir would otherwise
    /// look like a server with no accounts).
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        if let Some(path) = self.sqlite_path()? {
            anyhow::ensure!(
                path.exists(),
                "there is no Tessera database at {}: check --data-dir (or TESSERA_DATA_DIR). A new one is made \
                 by `tessera serve` or `tessera account create`",
                path.display()
            );
        }
        self.open_checked(false).await
    }

    /// Opens the database, making a new one where there is none.
    pub async fn open_or_create(&self) -> anyhow::Result<Arc<dyn Store>> {
        self.open_checked(false).await
    }

    /// Opens the store; with `integrity`, an SQLite database is checked page by page first.
    pub async fn open_checked(&self, integrity: bool) -> anyhow::Result<Arc<dyn Store>> {
        if self.database_url.is_none() {
            tessera_datadir::create_private(&self.data_dir)?;
        }
        let url = self.url();
        tessera_store::open_checked(&url, integrity).await.with_context(|| {
            format!(
                "cannot open the database at {}",
                tessera_store::PgStore::redact_url(&url)
            )
        })
    }

    /// The SQLite database file these arguments name, if they name one.
    pub fn sqlite_path(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(tessera_store::sqlite_path(&self.url())?)
    }
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("tessera.db")
}

pub use out::Output;

/// How long clients may take, and how many may connect at once (server and agent).
#[derive(Args, Clone, Debug)]
pub struct HttpArgs {
    /// Seconds a client has from the first byte of a request to the end of its headers.
    #[arg(long, env = "TESSERA_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout: u64,
    /// Seconds a client has from the end of a request's headers to the end of its body.
    #[arg(long, env = "TESSERA_BODY_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_read_timeout: u64,
    /// Seconds a connection without a request in flight may stay silent before it is closed.
    #[arg(long, env = "TESSERA_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout: u64,
    /// Connections open at once; by default 10,000, and never more than the
    /// file-descriptor limit minus 128.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,
    /// Seconds shutdown (SIGTERM, Ctrl-C) waits for requests in flight before it exits anyway.
    #[arg(long, env = "TESSERA_DRAIN_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_timeout: u64,
}

impl HttpArgs {
    pub fn limits(&self) -> tessera_http::Limits {
        use std::time::Duration;
        tessera_http::Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            body_read_timeout: Duration::from_secs(self.body_read_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            max_connections: self.max_connections.and_then(|n| usize::try_from(n).ok()),
            drain_timeout: Duration::from_secs(self.drain_timeout),
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML file of settings, keyed by flag name (`listen = "0.0.0.0:7070"`);
    /// flags and environment variables override it.
    #[arg(long, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    http: HttpArgs,
    /// Address to listen on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Start without checking every page of the SQLite database (`PRAGMA quick_check`):
    /// for a database too large to check at every start.
    #[arg(long, env = "TESSERA_SKIP_INTEGRITY_CHECK", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    skip_integrity_check: bool,
    /// Let several `tessera serve` processes share one SQLite file (on one
    /// machine; each takes its turn at the file's write lock). Without it a
    /// second server on the same file refuses to start. Every server sharing
    /// the file must be started with it.
    #[arg(long, env = "TESSERA_SHARED_SQLITE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    shared_sqlite: bool,
    /// Milliseconds between the reaper's passes, which return expired
    /// PROVISIONAL consumptions to their pools (each pass takes at most 1,000 at a time).
    #[arg(long, env = "TESSERA_REAPER_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    reaper_interval_ms: u64,
    /// PostgreSQL connections each server opens for its pool (the URL's
    /// `pool_max_connections` says the same; this wins). Default 16.
    #[arg(long, env = "TESSERA_DB_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..=1000))]
    db_pool_size: Option<u32>,
    /// Let `POST /_tessera/test/clock` move the business clock forward. For tests only:
    /// anyone who can reach the server could then expire consumptions early.
    #[arg(long, env = "TESSERA_TEST_CLOCK", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    test_clock: bool,
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _lock = match args.store.sqlite_path()? {
        Some(db) => Some(lock_database(&db, args.shared_sqlite)?),
        None => None,
    };
    tessera_observe::metrics::install();
    let mut store_args = args.store.clone();
    if let (Some(n), None) = (args.db_pool_size, args.store.sqlite_path()?) {
        store_args.database_url = Some(tessera_store::PgStore::with_pool_size(&args.store.url(), n));
    }
    let store = store_args.open_checked(!args.skip_integrity_check).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if args.test_clock {
        tracing::warn!("the test clock is enabled: POST /_tessera/test/clock can move time forward");
    }
    let state = AppState::with_reaper_interval(
        store,
        Arc::new(ServerClock::default()),
        args.test_clock,
        std::time::Duration::from_millis(args.reaper_interval_ms),
    );
    let startup_check = match (args.store.sqlite_path()?, args.skip_integrity_check) {
        (None, _) => "PostgreSQL: checked by its server",
        (Some(_), false) => "passed (PRAGMA quick_check)",
        (Some(_), true) => "skipped (--skip-integrity-check)",
    };
    let _ = state.health.startup_check.set(startup_check.into());
    let limits = args.http.limits();
    tracing::info!(
        %addr,
        database = %tessera_store::PgStore::redact_url(&args.store.url()),
        max_connections = limits.connection_cap(),
        "tessera is serving the License Manager API"
    );
    tessera_server::serve(listener, state, limits, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The lock that keeps a second server off an SQLite file, unless every
/// server sharing it says so.
pub(crate) fn lock_database(db: &Path, shared: bool) -> anyhow::Result<tessera_datadir::DirLock> {
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tessera_datadir::create_private(dir)?;
    let name = format!(
        "{}.lock",
        db.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tessera.db".into())
    );
    let (hold, hint) = if shared {
        (
            tessera_datadir::Hold::Shared,
            "a `tessera serve` without --shared-sqlite is using this SQLite database alone; stop it, or restart it with --shared-sqlite",
        )
    } else {
        (
            tessera_datadir::Hold::Exclusive,
            "another `tessera serve` is using this SQLite database; stop it first, or start every server on the \
             file with --shared-sqlite to share it on purpose (to run several servers, PostgreSQL is the way)",
        )
    };
    Ok(tessera_datadir::DirLock::acquire(dir, &name, hold, hint)?)
}

/// A flag people often try that Tessera names differently, and what to use.
fn near_miss(e: &clap::Error) -> Option<&'static str> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let name = given.trim_start_matches('-').split('=').next().unwrap_or_default();
    Some(match name {
        "port" | "host" | "bind" | "address" | "addr" | "listen-address" => {
            "the address to listen on is --listen HOST:PORT (for example --listen 127.0.0.1:7070)"
        }
        "db" | "database" | "db-url" | "dsn" | "postgres" => {
            "the database is --database-url sqlite://PATH or postgres://USER@HOST/DB"
        }
        "data" | "datadir" | "dir" | "data-directory" => "the data directory is --data-dir DIR",
        "format" | "json" | "out" => "output is chosen with -o/--output table|json",
        "log" | "log-level" | "verbose" => {
            "log lines are chosen with --log-format text|json; the level with TESSERA_LOG=debug"
        }
        "conf" | "config-file" | "cfg" => "a config file is --config FILE (TOML)",
        _ => return None,
    })
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
    let layered = match config::layer(std::env::args_os().collect()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse_from(&layered.argv) {
        Ok(cli) => cli,
        Err(e) => {
            let tip = near_miss(&e);
            let _ = e.print();
            if let Some(tip) = tip {
                eprintln!("\n  tip: {tip}");
            }
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let serves = match &cli.command {
        Command::Serve(_) | Command::Bench(_) => true,
        Command::Agent(a) => a.serves(),
        _ => false,
    };
    if !serves {
        // A command whose output is piped into `head` ends quietly, as Unix tools do.
        #[cfg(unix)]
        unsafe {
            // SAFETY: restoring the default disposition of SIGPIPE before any thread writes.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tessera_observe::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Account(c) => admin::account(c).await,
        Command::Key(c) => admin::key(c).await,
        Command::Token(c) => verify::run(c).await,
        Command::Bench(c) => bench::run(c).await,
        Command::Env(c) => env::run_env(c).await,
        Command::ProductKey(c) => env::run_product_key(c).await,
        Command::Agent(a) => agent::run(a, &layered).await,
        Command::Config(ConfigCommand::Show { out, .. }) => config::show(&layered, out.output, config::Casing::Pascal),
        Command::Backup(a) => backup::backup(a).await,
        Command::Restore(a) => backup::restore(a).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cli = super::Cli::command();
        cli.build();
        walk(&cli, "tessera", &mut missing);
        assert!(missing.is_empty(), "options without help text:\n{}", missing.join("\n"));
    }
}
