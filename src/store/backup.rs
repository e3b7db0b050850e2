//! Online backup (`dosetrack db backup`): a consistent copy of the store
//! made with SQLite's backup API, safe while the daemon writes.
//!
//! The whole database is copied in ONE backup step from a read-only
//! connection, so the copy is the snapshot of one read transaction: every
//! transaction committed before the step began is in it, none that
//! committed later is, and nothing half-written. With WAL the writer is
//! never blocked by that read (it only delays checkpoints meanwhile).
//!
//! The copy is written beside the destination as `FILE.partial`, switched
//! to the rollback journal (one self-contained file, no `-wal`), checked
//! with `PRAGMA integrity_check`, fsynced, and only then put in place: a
//! failed or interrupted backup never leaves a half-written `FILE`. The
//! file is created with mode 0600 (it holds patient data).

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to keep retrying while the source is locked (only WAL recovery
/// or a checkpoint in progress takes a lock a reader must wait for).
const BUSY_RETRY: Duration = Duration::from_millis(100);
const BUSY_RETRIES: u32 = 100;

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{0} already exists (use --force to replace it)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database stayed locked for {0:?}; try again")]
    Busy(Duration),
    #[error("the copy failed PRAGMA integrity_check: {0}")]
    Integrity(String),
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Pages copied.
    pub pages: u64,
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// The copy's schema version (`PRAGMA user_version`).
    pub schema_version: i64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copy the database at `source` to `dest`. An existing `dest` is an error
/// unless `overwrite`.
pub fn backup(source: &Path, dest: &Path, overwrite: bool) -> Result<BackupReport, BackupError> {
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source.to_owned()));
    }
    if dest.exists() && !overwrite {
        return Err(BackupError::Exists(dest.to_owned()));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    // A partial file is ours from an earlier failed attempt.
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial)(e)),
    }
    let result = copy_to(source, &partial).and_then(|report| {
        put_in_place(&partial, dest, overwrite)?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn copy_to(source: &Path, partial: &Path) -> Result<BackupReport, BackupError> {
    create_private(partial)?;
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(5))?;
    let mut dst = Connection::open(partial)?;
    let pages = {
        let b = Backup::new(&src, &mut dst)?;
        let mut tries = 0;
        loop {
            // -1: every page in one step, i.e. one read transaction.
            match b.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    tries += 1;
                    if tries > BUSY_RETRIES {
                        return Err(BackupError::Busy(BUSY_RETRY * BUSY_RETRIES));
                    }
                    std::thread::sleep(BUSY_RETRY);
                }
                // A future variant: treat like a transient lock.
                _ => std::thread::sleep(BUSY_RETRY),
            }
        }
        u64::try_from(b.progress().pagecount).unwrap_or(0)
    };
    drop(src);
    // One self-contained file: no -wal beside the copy.
    let mode: String = dst.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(BackupError::Integrity(format!(
            "journal_mode of the copy is {mode}"
        )));
    }
    let check: Vec<String> = dst
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if check != ["ok"] {
        return Err(BackupError::Integrity(check.join("; ")));
    }
    let schema_version: i64 = dst.pragma_query_value(None, "user_version", |r| r.get(0))?;
    dst.close().map_err(|(_, e)| BackupError::Sqlite(e))?;
    let file = std::fs::File::open(partial).map_err(io(partial))?;
    file.sync_all().map_err(io(partial))?;
    let bytes = file.metadata().map_err(io(partial))?.len();
    Ok(BackupReport {
        pages,
        bytes,
        schema_version,
    })
}

/// Create an empty file only the owner may read.
fn create_private(path: &Path) -> Result<(), BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(io(path))
}

/// Move the finished copy to `dest`: without `overwrite` by a hard link
/// (which fails if `dest` appeared meanwhile), else by a rename.
fn put_in_place(partial: &Path, dest: &Path, overwrite: bool) -> Result<(), BackupError> {
    if overwrite {
        std::fs::rename(partial, dest).map_err(io(dest))?;
    } else {
        std::fs::hard_link(partial, dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(dest.to_owned())
            } else {
                io(dest)(e)
            }
        })?;
        std::fs::remove_file(partial).map_err(io(partial))?;
    }
    // The directory entry too.
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_and_needs_a_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let dest = dir.path().join("copy.db");
        assert!(matches!(
            backup(&src, &dest, false),
            Err(BackupError::NoDatabase(_))
        ));
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        std::fs::write(&dest, b"keep me").unwrap();
        assert!(matches!(
            backup(&src, &dest, false),
            Err(BackupError::Exists(_))
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
        let report = backup(&src, &dest, true).unwrap();
        assert!(report.pages >= 2);
        let copy = Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let mode: String = copy
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        assert!(!dir.path().join("copy.db.partial").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the copy must not be readable by others");
        }
    }
}
