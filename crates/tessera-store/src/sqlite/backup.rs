//! Backups of the embedded database: a consistent, compact copy made while
//! servers keep writing (`VACUUM INTO` reads one snapshot), checked page by
//! page before it is given its name; and the restore of such a copy, which
//! refuses what is not a whole Tessera database this build can migrate.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::file::{put_in_place, sibling, APPLICATION_ID};
use super::MIGRATOR;
use crate::{Result, StoreError};

/// What a backup holds, as its check found it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    pub path: PathBuf,
    pub bytes: u64,
    /// The newest migration applied to it.
    pub schema_version: i64,
    pub accounts: i64,
    pub licenses: i64,
    pub live_consumptions: i64,
}

fn err(what: String) -> StoreError {
    StoreError::Config(what)
}

/// Copies the database `db` to `to` (a file that must not exist), checks the
/// copy with `PRAGMA integrity_check`, and only then gives it its name.
pub fn backup(db: &Path, to: &Path) -> Result<Summary> {
    if !db.is_file() {
        return Err(err(format!(
            "there is no database at {}: point --data-dir (or --database-url) at the data directory to back up",
            db.display()
        )));
    }
    if to.exists() {
        return Err(err(format!(
            "{} already exists; a backup never overwrites a file: choose another name or remove it",
            to.display()
        )));
    }
    let source = open(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    marked(&source, db)?;
    let partial = sibling(to, &format!(".partial.{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let target = partial
        .to_str()
        .ok_or_else(|| err(format!("{} is not a UTF-8 path; choose another name", to.display())))?;
    let copied = source.execute("VACUUM INTO ?1", [target]);
    drop(source);
    let checked = copied
        .map_err(|e| err(format!("copying {} to {} failed: {e}", db.display(), to.display())))
        .and_then(|_| verify(&partial));
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    place(&partial, to, summary, "made")
}

/// Links the checked file `from` in as `to` (never over a file) and says what it holds.
fn place(from: &Path, to: &Path, summary: Summary, doing: &str) -> Result<Summary> {
    if !put_in_place(from, to)? {
        return Err(err(format!(
            "{} appeared while the backup was {doing}; it was left as it is",
            to.display()
        )));
    }
    Ok(Summary {
        path: to.to_owned(),
        ..summary
    })
}

/// Checks that `path` is a whole Tessera database (marked as Tessera's,
/// `integrity_check` clean) that this build can migrate, and says what it holds.
pub fn verify(path: &Path) -> Result<Summary> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?
        .len();
    let conn = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    marked(&conn, path)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| err(format!("{} cannot be checked: {e}", path.display())))?;
    if problems.iter().any(|p| p != "ok") {
        let shown: Vec<&str> = problems.iter().map(String::as_str).take(5).collect();
        return Err(err(format!(
            "{} is damaged (integrity check: {}); it cannot be used as a backup",
            path.display(),
            shown.join("; ")
        )));
    }
    let count = |sql: &str| {
        conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(Option::unwrap_or_default)
            .map_err(|e| err(format!("{} cannot be read as a Tessera database: {e}", path.display())))
    };
    let schema_version = count(crate::APPLIED_MIGRATION)?;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if schema_version > latest {
        return Err(err(format!(
            "{} was written by a newer Tessera (schema version {schema_version}; this build knows up to \
             {latest}): restore it with that version or a later one",
            path.display()
        )));
    }
    Ok(Summary {
        path: path.to_owned(),
        bytes,
        schema_version,
        accounts: count("SELECT count(*) FROM accounts")?,
        licenses: count("SELECT count(*) FROM licenses")?,
        live_consumptions: count(crate::LIVE_CONSUMPTIONS)?,
    })
}

/// Puts the backup `from` in place as the database `db`. A database already
/// there is kept beside it (`<db>.before-restore-<unix time>`, with its log)
/// when `replace`, and refused otherwise. No server may be using `db`: the
/// caller holds its lock.
pub fn restore(from: &Path, db: &Path, replace: bool) -> Result<Summary> {
    let summary = verify(from)?;
    let io = |what: &str, e: std::io::Error| err(format!("cannot {what}: {e}"));
    if db.exists() {
        if !replace {
            return Err(err(format!(
                "{} already holds a database; pass --replace to put the backup in its place (the current \
                 database is then kept beside it, renamed), or restore into an empty data directory",
                db.display()
            )));
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let kept = sibling(db, &format!(".before-restore-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let (old, new) = (sibling(db, suffix), sibling(&kept, suffix));
            match std::fs::rename(&old, &new) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&format!("move {} aside", old.display()), e)),
            }
        }
    }
    // A log left without its database would be replayed into the restored one.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(db, suffix));
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(&format!("create {}", dir.display()), e))?;
    }
    let staging = sibling(db, &format!(".restore.{}", std::process::id()));
    if let Err(e) = std::fs::copy(from, &staging) {
        let _ = std::fs::remove_file(&staging);
        return Err(io(&format!("copy {} into place", from.display()), e));
    }
    place(&staging, db, summary, "restored")
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| {
        err(format!(
            "{} cannot be opened as an SQLite database: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| err(e.to_string()))?;
    Ok(conn)
}

/// Refuses a file that is not marked as a Tessera database.
fn marked(conn: &Connection, path: &Path) -> Result<()> {
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| err(format!("{} is not an SQLite database: {e}", path.display())))?;
    if id != APPLICATION_ID {
        return Err(err(format!(
            "{} is not a Tessera database (application_id {id:#x}); only a file made by `tessera backup` \
             or a Tessera data directory's tessera.db can be restored",
            path.display()
        )));
    }
    Ok(())
}
