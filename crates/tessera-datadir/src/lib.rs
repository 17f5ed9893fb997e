//! Data directories of the server and the agent: created readable by their
//! owner only, files in them replaced atomically, and a lock file that keeps a
//! second process out of a directory that is not meant to be shared.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A failure on a data directory, naming the path and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("{}", held_message(.dir, .pid.as_deref(), .hint))]
    Held {
        dir: PathBuf,
        pid: Option<String>,
        hint: String,
    },
}

fn held_message(dir: &Path, pid: Option<&str>, hint: &str) -> String {
    let who = match pid {
        Some(pids) if pids.contains(',') => format!("processes {pids}"),
        Some(pid) => format!("process {pid}"),
        None => "another process".to_owned(),
    };
    format!("{} is in use by {who}: {hint}", dir.display())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (and its parents) and makes it readable by its owner only.
pub fn create_private(dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io("create the data directory", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restrict the data directory", dir))?;
    }
    Ok(())
}

/// Replaces `path` in `dir` so that a crash leaves either the old content or
/// the new: a temporary file, flushed, renamed over it, the directory flushed.
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = create_with_mode(&tmp, mode).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("replace", path))?;
    sync_dir(dir)
}

fn create_with_mode(path: &Path, mode: u32) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// How a process holds a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Alone: any other holder is refused, and refuses this one.
    Exclusive,
    /// Together with other `Shared` holders, never with an `Exclusive` one.
    Shared,
}

/// A data directory's lock, held until dropped (or the process ends, however
/// it ends: the kernel releases it). The file names the holder's PID.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock file `name` in `dir`, or says who holds it; `hint` tells
    /// the reader what to do then.
    pub fn acquire(dir: &Path, name: &str, hold: Hold, hint: &str) -> Result<Self, DataDirError> {
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open the lock file", &path))?;
        let taken = match hold {
            Hold::Exclusive => file.try_lock(),
            Hold::Shared => file.try_lock_shared(),
        };
        match taken {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pids: Vec<&str> = pid.split_whitespace().collect();
                let pid = (!pids.is_empty()).then(|| pids.join(", "));
                return Err(DataDirError::Held {
                    dir: dir.to_owned(),
                    pid,
                    hint: hint.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
        // The holders' PIDs, for the message another process shows.
        let me = std::process::id().to_string();
        let mut held = String::new();
        let _ = file.read_to_string(&mut held);
        let pids: Vec<&str> = match hold {
            Hold::Exclusive => vec![me.as_str()],
            Hold::Shared => {
                // Holders that have ended are dropped from the list.
                let mut p: Vec<&str> = held.split_whitespace().filter(|pid| alive(pid)).collect();
                p.push(&me);
                p
            }
        };
        let text = format!("{}\n", pids.join(" "));
        file.set_len(0).map_err(io("write the lock file", &path))?;
        file.rewind().map_err(io("write the lock file", &path))?;
        file.write_all(text.as_bytes())
            .map_err(io("write the lock file", &path))?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether process `pid` runs (where the system says; assumed otherwise).
fn alive(pid: &str) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_keeps_everyone_else_out_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "lock", Hold::Exclusive, "stop it first").unwrap();
        let err = DirLock::acquire(dir.path(), "lock", Hold::Exclusive, "stop it first").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&std::process::id().to_string()) && msg.contains("stop it first"),
            "{msg}"
        );
        assert!(DirLock::acquire(dir.path(), "lock", Hold::Shared, "h").is_err());
        drop(first);
        DirLock::acquire(dir.path(), "lock", Hold::Exclusive, "h").unwrap();
    }

    #[test]
    fn shared_holders_share_and_keep_an_exclusive_one_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(dir.path(), "lock", Hold::Shared, "h").unwrap();
        let b = DirLock::acquire(dir.path(), "lock", Hold::Shared, "h").unwrap();
        assert!(DirLock::acquire(dir.path(), "lock", Hold::Exclusive, "h").is_err());
        drop((a, b));
        DirLock::acquire(dir.path(), "lock", Hold::Exclusive, "h").unwrap();
    }

    #[test]
    fn atomic_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(dir.path(), &path, b"one", 0o600).unwrap();
        write_atomic(dir.path(), &path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.path().join("state.tmp").exists());
    }
}
