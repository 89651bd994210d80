//! The seam between the engine and its persistence: a [`Backend`] receives the ordered
//! stream of [`Change`]s from the writer thread and makes it durable; on open it gives
//! back the state it holds. Two implementations: the log-structured store
//! ([`crate::log`], the default) and sled ([`crate::sled_backend`], cargo feature
//! `sled`).

use crate::error::Result;
use crate::log::compaction::CompactionJob;
use crate::log::recovery::{Recovered, RecoveryReport};
use crate::model::change::Change;

/// Which storage backend a durable store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// sessiondb's own log-structured store: checksummed segments, group commit,
    /// background compaction. The default (see the README's benchmarks for why).
    #[default]
    Log,
    /// sled 0.34 (needs the cargo feature `sled`).
    Sled,
}

/// Persistence behind the writer thread. All calls come from that one thread.
pub(crate) trait Backend: Send + 'static {
    /// Writes `changes`, in order. They need not be durable until [`Backend::sync`].
    fn write(&mut self, changes: &[Change]) -> Result<()>;

    /// Makes everything written so far durable.
    fn sync(&mut self) -> Result<()>;

    /// A handle that, synced on another thread, makes everything written so far
    /// durable — so that under [`crate::Durability::Buffered`] the writer goes on
    /// handing batches to the OS while an fsync runs. `None`: this backend syncs only
    /// through [`Backend::sync`], on the writer thread.
    fn sync_handle(&mut self) -> Result<Option<Box<dyn SyncHandle>>> {
        Ok(None)
    }

    /// Tells the backend a handle's sync completed (the log records how far its
    /// active segment is fsynced in every batch it writes).
    fn note_synced(&mut self, _synced: Synced) {}

    /// Bytes the store occupies on disk.
    fn disk_bytes(&self) -> u64;

    /// Seals what has been written and returns the work of rewriting it as a compact
    /// base, to run off the writer thread; `None` if the backend compacts itself.
    fn begin_compaction(&mut self) -> Result<Option<CompactionJob>>;

    /// Whether the data has grown enough past what a compaction would leave to compact
    /// again: past the last compacted base or `floor` (the store's estimate of its live
    /// data when it last declined to compact), whichever is larger.
    fn wants_compaction(&self, floor: u64) -> bool;
}

/// What a [`SyncHandle`] made durable: everything up to `len` bytes of file `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Synced {
    pub(crate) file: u64,
    pub(crate) len: u64,
}

/// Makes what a backend had written when the handle was taken durable, from any
/// thread ([`Backend::sync_handle`]).
pub(crate) trait SyncHandle: Send {
    /// Fsyncs, and says what is now durable.
    fn sync(self: Box<Self>) -> Result<Synced>;
}

/// What opening a backend yields: the backend, ready to append, and the state it held.
pub(crate) struct Opened {
    pub(crate) backend: Box<dyn Backend>,
    /// The recovered state, when the backend does not replay into the sink itself.
    pub(crate) state: Recovered,
    pub(crate) report: RecoveryReport,
}

/// Opens the backend of `kind` in `dir`, recovering what it holds into `sink`.
pub(crate) fn open(
    kind: BackendKind,
    dir: &std::path::Path,
    opts: &crate::options::Options,
    sink: &crate::store::load::Loader,
) -> Result<Opened> {
    let mut opened = match kind {
        BackendKind::Log => crate::log::segment::LogBackend::open(dir, opts, sink),
        #[cfg(feature = "sled")]
        BackendKind::Sled => crate::sled_backend::SledBackend::open(dir, opts),
        #[cfg(not(feature = "sled"))]
        BackendKind::Sled => Err(crate::error::Error::InvalidOption {
            name: "backend",
            reason: "the sled backend needs sessiondb's cargo feature `sled`".into(),
        }),
    }?;
    // The log replays straight into the sink; sled hands over a replayed state.
    sink.load_recovered(std::mem::take(&mut opened.state));
    Ok(opened)
}
