//! One daemon per database: [`DatabaseLock`], an exclusive advisory lock
//! (`flock`) on `<database>.lock` beside the database file, taken before the
//! database is opened and held for the process's life (the kernel releases
//! it when the process ends, however it ends). A second `dosetrack run` on
//! the same database finds it taken and refuses to start.
//!
//! The lock file is created if absent and never deleted (deleting it would
//! let a third process lock a new file while the second still holds the
//! old one). Commands that only read the database do not take it.

use super::StoreError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Held while the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
    path: PathBuf,
}

impl DatabaseLock {
    /// The lock file of the database at `db`: `<db>.lock`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Take the lock of the database at `db`, or fail at once: the
    /// database's directory does not exist ([`StoreError::NoDirectory`]),
    /// another process holds the lock ([`StoreError::InUse`]).
    pub fn acquire(db: &Path) -> Result<DatabaseLock, StoreError> {
        check_directory(db)?;
        let path = Self::path_for(db);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Lock {
                path: path.clone(),
                source: e,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DatabaseLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(StoreError::InUse { lock: path }),
            Err(TryLockError::Error(e)) => Err(StoreError::Lock { path, source: e }),
        }
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> &Path {
        &self.path
    }
}

/// The database's directory must exist: the store creates the file, never
/// its directory.
pub fn check_directory(db: &Path) -> Result<(), StoreError> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StoreError::NoDirectory {
            db: db.to_owned(),
            dir: dir.to_owned(),
        })
    }
}
