//! The directory lock: one store per directory at a time, across processes.
//!
//! `LOCK` in the store directory is held with an exclusive advisory lock (`flock` on
//! Unix, through `std::fs::File::try_lock`) for as long as the store is open, and holds
//! the owner's process id so a second opener can say who has it. The operating system
//! releases the lock when the process dies, so a crash never leaves a stale lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::util::vfs::{FileHandle, FileSystem, OpenMode};

/// Name of the lock file inside a store directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// A held directory lock; released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: Arc<dyn FileHandle>,
}

/// Takes the lock of `dir` on `fs`, or reports who holds it.
pub(crate) fn lock(fs: &dyn FileSystem, dir: &Path) -> Result<DirLock> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = fs
        .open(&path, OpenMode::Create)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
    let held = file
        .try_lock()
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    if !held {
        let pid = file
            .read_all()
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok());
        return Err(Error::Locked {
            dir: dir.to_path_buf(),
            pid,
        });
    }
    let pid = std::process::id().to_string();
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::vfs::OsFs;

    #[test]
    fn second_lock_fails_naming_this_process_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(&OsFs, dir.path()).unwrap();
        match lock(&OsFs, dir.path()) {
            Err(Error::Locked { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        lock(&OsFs, dir.path()).unwrap();
    }
}
