//! What a file must be before Tessera writes to it: its own SQLite database,
//! marked by SQLite's `application_id`, undamaged. A new database is made
//! under a temporary name and linked into place once complete, so that a
//! `tessera.db` that exists is always a whole Tessera database; an empty file,
//! another program's database or a damaged one is refused with what was
//! found and what to do.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::{Result, StoreError};

/// `PRAGMA application_id` of a Tessera database: "TSRA".
pub(crate) const APPLICATION_ID: i32 = 0x5453_5241;

/// Tables every Tessera database has had since its first version.
const OWN_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "accounts",
    "access_keys",
    "licenses",
    "consumptions",
];

/// Problems `quick_check` reports at most, in the refusal.
const PROBLEMS_SHOWN: usize = 5;

/// What was found at a database path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No file: a new database is to be made.
    Nothing,
    /// A Tessera database.
    Tessera,
}

/// How to restore a database, for messages.
pub(crate) fn restore_hint(path: &Path) -> String {
    format!(
        "stop every server using it, then restore {} from a backup (README: Backups), or salvage what is \
         readable with `sqlite3 {} .recover | sqlite3 recovered.db` and start on the recovered file",
        path.display(),
        path.display()
    )
}

/// Checks the file at `path`, marking a database that an earlier Tessera made
/// before databases were marked. `integrity`: also run `PRAGMA quick_check`.
pub(crate) fn inspect(path: &Path, integrity: bool) -> Result<Found> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(StoreError::Config(format!("cannot read {}: {e}", path.display()))),
    };
    if !meta.is_file() {
        return Err(StoreError::Config(format!(
            "{} is not a file; point --data-dir (or --database-url) at Tessera's own database",
            path.display()
        )));
    }
    let wal = sibling(path, "-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if meta.len() == 0 && wal_len == 0 {
        return Err(StoreError::Config(format!(
            "{} is an empty file (0 bytes), not a Tessera database. If this is a new installation, remove \
             the file and start again: Tessera creates its database where there is none. If your data should \
             be here, the file was truncated: restore it from a backup (README: Backups)",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| unreadable(path, &e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| unreadable(path, &e))?;
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| unreadable(path, &e))?;
    if app_id != APPLICATION_ID {
        let tables = tables(&conn).map_err(|e| unreadable(path, &e))?;
        let ours = OWN_TABLES.iter().all(|t| tables.iter().any(|have| have == t));
        if app_id != 0 || !ours {
            return Err(foreign(path, app_id, &tables));
        }
        // Made by a Tessera that did not mark its databases yet: mark it now.
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| unreadable(path, &e))?;
        tracing::info!(path = %path.display(), "marked the database as Tessera's (application_id)");
    }
    if integrity {
        check_integrity(&conn, path)?;
    }
    Ok(Found::Tessera)
}

/// `PRAGMA quick_check`: every page and index entry readable and consistent.
fn check_integrity(conn: &Connection, path: &Path) -> Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| damaged(path, &e.to_string()))?;
    let mut rows = stmt.query([]).map_err(|e| damaged(path, &e.to_string()))?;
    while let Some(row) = rows.next().map_err(|e| damaged(path, &e.to_string()))? {
        let line: String = row.get(0).map_err(|e| damaged(path, &e.to_string()))?;
        if line != "ok" {
            problems.push(line);
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let more = problems.len().saturating_sub(PROBLEMS_SHOWN);
    problems.truncate(PROBLEMS_SHOWN);
    let mut found = problems.join("; ");
    if more > 0 {
        found.push_str(&format!("; and {more} more"));
    }
    Err(damaged(path, &found))
}

fn damaged(path: &Path, found: &str) -> StoreError {
    StoreError::Config(format!(
        "the database {} is damaged (integrity check: {found}). Tessera will not serve from it: {}. \
         (--skip-integrity-check starts without this check, for a database too large to check at every start)",
        path.display(),
        restore_hint(path)
    ))
}

fn unreadable(path: &Path, e: &rusqlite::Error) -> StoreError {
    StoreError::Config(format!(
        "{} cannot be read as an SQLite database ({e}); it is not a Tessera database, or it is damaged: \
         point --data-dir at Tessera's data directory, or {}",
        path.display(),
        restore_hint(path)
    ))
}

fn foreign(path: &Path, app_id: i32, tables: &[String]) -> StoreError {
    let what = if tables.is_empty() {
        "an SQLite database with no tables".to_owned()
    } else {
        let mut shown: Vec<&str> = tables.iter().map(String::as_str).take(5).collect();
        if tables.len() > 5 {
            shown.push("...");
        }
        format!("another program's SQLite database (tables: {})", shown.join(", "))
    };
    let id = if app_id != 0 {
        format!(", application_id {app_id:#x}")
    } else {
        String::new()
    };
    StoreError::Config(format!(
        "{} is {what}{id}, not Tessera's. Tessera does not write into other databases: point --data-dir at \
         a directory of its own (it creates its database there), or move this file away",
        path.display()
    ))
}

fn tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal`, `-shm`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Where a new database is made before it is linked into place: a name of
/// this process's own, so that two processes creating at once do not meet.
pub(crate) fn staging(path: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    sibling(path, &format!(".new.{}.{nanos}", std::process::id()))
}

/// Removes what starts that were killed while making a database left behind
/// (an hour old or more: a start under way is never that slow).
pub(crate) fn remove_stale_staging(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.new", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= std::time::Duration::from_secs(3600));
        if stale && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Links the complete new database at `from` in as `path`, durably, unless
/// another process put a database there first (then false, and `from` is
/// removed): a link never replaces a file, where a rename would.
pub(crate) fn put_in_place(from: &Path, path: &Path) -> Result<bool> {
    // The staging database was closed with its log folded in; only the file remains.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sibling(from, suffix));
    }
    let io = |what: &str, e: std::io::Error| StoreError::Config(format!("cannot {what} {}: {e}", path.display()));
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync the new database", e))?;
    let placed = match std::fs::hard_link(from, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io("put in place the new database", e)),
    };
    let _ = std::fs::remove_file(from);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the directory of", e))?;
    }
    Ok(placed)
}
