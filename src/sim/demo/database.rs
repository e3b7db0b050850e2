//! The demo's database: kept at `--database PATH`, or in a temporary
//! directory removed at the end (also when the demo fails).

use super::DemoError;
use std::path::{Path, PathBuf};
use tracing::warn;

/// The demo's database: at `--database PATH` (kept), or in a temporary
/// directory removed at the end (also when the demo fails).
pub(super) struct DemoDatabase {
    pub(super) path: PathBuf,
    temp_dir: Option<PathBuf>,
}

impl DemoDatabase {
    pub(super) fn new(keep_at: Option<&Path>, tag: &str) -> Result<DemoDatabase, DemoError> {
        if let Some(p) = keep_at {
            return Ok(DemoDatabase {
                path: p.to_owned(),
                temp_dir: None,
            });
        }
        let dir = std::env::temp_dir().join(format!("dosetrack-demo-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(DemoError::TempDir)?;
        Ok(DemoDatabase {
            path: dir.join("demo.db"),
            temp_dir: Some(dir),
        })
    }

    /// Remove the temporary directory; the kept path, if any.
    pub(super) fn finish(mut self) -> Option<PathBuf> {
        match self.temp_dir.take() {
            Some(dir) => {
                remove_dir(&dir);
                None
            }
            None => Some(self.path.clone()),
        }
    }
}

impl Drop for DemoDatabase {
    fn drop(&mut self) {
        if let Some(dir) = self.temp_dir.take() {
            remove_dir(&dir);
        }
    }
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        warn!(dir = %dir.display(), error = %e, "demo: temporary database not removed");
    }
}
