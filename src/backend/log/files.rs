//! The files that make up a log directory ([`LogFiles`]) and the one way to change
//! which they are ([`LogDir::change`]): the manifest first, then memory.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::log::format::{FileKind, HEADER_LEN, path_of};
use crate::backend::log::manifest::{self, Manifest};
use crate::error::Result;
use crate::util::vfs::{self, FileSystem, sync_dir};

/// The files that make up a log directory, shared by the writer and compaction.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogFiles {
    /// The compacted base in use: (sequence, bytes).
    pub(crate) base: Option<(u64, u64)>,
    /// Sealed segments after the base: (sequence, bytes).
    pub(crate) sealed: Vec<(u64, u64)>,
    /// The active segment: (sequence, bytes).
    pub(crate) active: (u64, u64),
}

impl LogFiles {
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.base.map_or(0, |b| b.1) + self.sealed.iter().map(|s| s.1).sum::<u64>() + self.active.1
    }

    /// The manifest stating these files, the active segment still open.
    pub(crate) fn manifest(&self) -> Manifest {
        Manifest {
            base: self.base,
            sealed: self.sealed.clone(),
            active: Some(self.active.0),
        }
    }
}

/// A log directory's files, and the one way to change which files they are.
pub(crate) struct LogDir {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) dir: PathBuf,
    pub(crate) files: Mutex<LogFiles>,
    /// Held while the manifest is rewritten, so that changes to the set of files (a
    /// roll on the writer thread, a compaction's switch on another) are written one at
    /// a time, each over the state the one before left. Taken before `files`, which
    /// the writer also takes, briefly, for every batch.
    pub(crate) manifest: Mutex<()>,
}

impl LogDir {
    /// The files as they are now.
    pub(crate) fn files(&self) -> LogFiles {
        self.files.lock().clone()
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.files.lock().disk_bytes()
    }

    /// Changes the set of files: the manifest of the changed set is written (durably)
    /// first, and only then does `edit` apply to the set in memory, so a failure leaves
    /// both as they were. `edit` is called twice, and must do the same both times.
    pub(crate) fn change(&self, edit: impl Fn(&mut LogFiles)) -> Result<()> {
        self.change_then(edit, || Ok(()))
    }

    /// As [`LogDir::change`], running `then` (deleting what the change replaced) after
    /// the manifest is written and before the set in memory changes, so the files the
    /// store counts are the files on disk throughout. The set changes even if `then`
    /// fails: it must follow the manifest, which names the new set already.
    pub(crate) fn change_then(
        &self,
        edit: impl Fn(&mut LogFiles),
        then: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let _one_at_a_time = self.manifest.lock();
        let mut next = self.files.lock().clone();
        edit(&mut next);
        manifest::write(&*self.fs, &self.dir, &next.manifest())?;
        let outcome = then();
        edit(&mut self.files.lock());
        outcome
    }

    /// Records the closing state: the active segment, cut to `len` bytes and fsynced,
    /// sealed at that length — or, holding no record, dropped and deleted — and no
    /// segment active. From here on every file's end is known.
    pub(crate) fn close(&self, len: u64) -> Result<()> {
        let _one_at_a_time = self.manifest.lock();
        let files = self.files.lock().clone();
        let (seq, _) = files.active;
        let mut m = files.manifest();
        m.active = None;
        let empty = len <= HEADER_LEN as u64;
        if !empty {
            m.sealed.push((seq, len));
        }
        manifest::write(&*self.fs, &self.dir, &m)?;
        if empty {
            vfs::remove(&*self.fs, &path_of(&self.dir, FileKind::Segment, seq))?;
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }
}
