//! `tessera backup` and `tessera restore`: the embedded database copied while
//! the server serves, and put back into a data directory no server holds.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tessera_store::backup::{self, Summary};

use crate::out::{self, Output, OutputArg};
use crate::StoreArgs;

#[derive(Args)]
pub struct BackupArgs {
    /// The file to write; it must not exist.
    #[arg(long)]
    to: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    out: OutputArg,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A file written by `tessera backup`.
    #[arg(long)]
    from: PathBuf,
    /// Put the backup in place of a database the data directory already holds
    /// (kept beside it as tessera.db.before-restore-<unix time>).
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    out: OutputArg,
}

const POSTGRES: &str = "this database is PostgreSQL: back it up with pg_dump and restore it with pg_restore \
                        (README: Backups); `tessera backup` copies the embedded SQLite database";

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let db = args.store.sqlite_path()?.context(POSTGRES)?;
    let to = args.to.clone();
    let progress = spinner(format!("copying {} to {}", db.display(), to.display()));
    let started = std::time::Instant::now();
    let summary = tokio::task::spawn_blocking(move || backup::backup(&db, &to)).await??;
    progress.finish_and_clear();
    print(
        &summary,
        args.out.output,
        "Backup written and checked",
        started.elapsed(),
    )
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let db = args.store.sqlite_path()?.context(POSTGRES)?;
    // Held while the file is replaced: no server may be using the database.
    let _lock = crate::lock_database(&db, false)
        .context("a `tessera serve` is using this data directory; stop it before restoring into it")?;
    let from = args.from.clone();
    let progress = spinner(format!(
        "checking {} and restoring it to {}",
        from.display(),
        db.display()
    ));
    let started = std::time::Instant::now();
    let replace = args.replace;
    let summary = tokio::task::spawn_blocking(move || backup::restore(&from, &db, replace)).await??;
    progress.finish_and_clear();
    print(
        &summary,
        args.out.output,
        "Restored; start the server on it",
        started.elapsed(),
    )
}

fn spinner(message: String) -> indicatif::ProgressBar {
    let p = indicatif::ProgressBar::new_spinner().with_message(message);
    p.enable_steady_tick(std::time::Duration::from_millis(120));
    p
}

fn print(s: &Summary, output: Output, done: &str, took: std::time::Duration) -> anyhow::Result<()> {
    if output == Output::Json {
        return out::json(s);
    }
    println!(
        "{}",
        out::fields([
            ("File", s.path.display().to_string()),
            ("Bytes", s.bytes.to_string()),
            ("Schema version", s.schema_version.to_string()),
            ("Accounts", s.accounts.to_string()),
            ("Licenses", s.licenses.to_string()),
            ("Live consumptions", s.live_consumptions.to_string()),
            ("Took", format!("{:.1} s", took.as_secs_f64())),
        ])
    );
    println!("{done}.");
    Ok(())
}
