//! Persistence — it knows no index, journal or store. A [`Backend`] receives the
//! ordered stream of [`Change`]s from the writer thread and makes it durable; on open
//! it feeds what it holds to a [`Replay`] sink (the engine's loader, which builds the
//! index straight from the files) and reports what it found ([`RecoveryReport`]); a
//! [`Compaction`] rewrites the live set, read through a [`Snapshot`]. Two
//! implementations: the log-structured store ([`log`], the default) and sled ([`sled`],
//! cargo feature `sled`).

pub(crate) mod interner;
pub(crate) mod log;
#[cfg(feature = "sled")]
pub(crate) mod sled;

/// Where the sled backend keeps its database, in the store directory.
pub(crate) const SLED_DIR: &str = "sled";
/// Where it builds a new one before swapping it in.
pub(crate) const SLED_NEW_DIR: &str = "sled.new";

/// Whether `name`, an entry of a store directory, is a backend's: log segments and
/// bases (and a base being written), the manifest (and its temporary), sled's
/// directory (and the one a new database is made in).
pub(crate) fn owns_file(name: &str) -> bool {
    matches!(
        name,
        log::manifest::MANIFEST | log::manifest::MANIFEST_TMP | SLED_DIR | SLED_NEW_DIR
    ) || log::format::parse_name(name.strip_suffix(".tmp").unwrap_or(name)).is_some()
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::change::{Change, Image, ImageRef, Record};
use crate::model::session::UserId;
use crate::model::token::{SessionId, TokenHash};
use crate::util::hash::RandomKeyMap;

/// How a backend that takes changes already encoded encodes one: appends the change's
/// bytes to the buffer (see [`Backend::encoder`]).
pub(crate) type Encoder = fn(&mut Vec<u8>, &Change);

/// Persistence behind the journal. Calls come from one thread at a time: the writer
/// thread, or (under `Buffered`) a request thread writing a batch in its stead.
pub(crate) trait Backend: Send + 'static {
    /// Writes `changes`, in order. They need not be durable until [`Backend::sync`].
    fn write(&mut self, changes: &[Change]) -> Result<()>;

    /// How this backend encodes a change, if it can take changes encoded beforehand
    /// ([`Backend::write_encoded`]): then request threads encode their own changes,
    /// and a batch reaches the backend as bytes. `None`: changes come as values.
    fn encoder(&self) -> Option<Encoder> {
        None
    }

    /// Writes `encoded` (changes encoded by [`Backend::encoder`], in order), then
    /// `changes`, as one batch. Only called with bytes on a backend that has an
    /// encoder.
    fn write_encoded(&mut self, encoded: &[u8], changes: &[Change]) -> Result<()> {
        if encoded.is_empty() {
            return self.write(changes);
        }
        Err(Error::Poisoned {
            reason: "encoded changes reached a backend that does not take them".into(),
        })
    }

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

    /// Tells the backend the journal is poisoned (a sync on another thread failed):
    /// nothing it holds may be made durable from here on, since what the failed sync
    /// could not write is gone from the disk while the page cache may still show it.
    fn poisoned(&mut self) {}

    /// Bytes the store occupies on disk.
    fn disk_bytes(&self) -> u64;

    /// Seals what has been written and returns the work of rewriting it as a compact
    /// base, to run off the writer thread; `None` if the backend compacts itself.
    fn begin_compaction(&mut self) -> Result<Option<Box<dyn Compaction>>>;

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

/// A compaction a backend has begun ([`Backend::begin_compaction`]): writes the live
/// set it reads from `snapshot` and switches to it, off the writer thread.
pub(crate) trait Compaction: Send {
    /// Runs it to the end.
    fn run(self: Box<Self>, snapshot: &dyn Snapshot) -> Result<CompactionStats>;
}

/// The live state, as a compaction reads it.
pub(crate) trait Snapshot {
    /// Hands every live session to `sink`: a few at a time under the index's read
    /// locks to [`ImageSink::image`], then [`ImageSink::flush`] with the locks
    /// released.
    fn each_image(&self, sink: &mut dyn ImageSink) -> Result<()>;
    /// Calls `f` with every rotation alias still in its grace period.
    fn each_alias(
        &self,
        f: &mut dyn FnMut(TokenHash, SessionId, Timestamp) -> Result<()>,
    ) -> Result<()>;
    /// Every user's not-before time.
    fn not_before(&self) -> Vec<(UserId, Timestamp)>;
}

/// Where a compaction's images go ([`Snapshot::each_image`]).
pub(crate) trait ImageSink {
    /// Takes one live session. Called under the index's read locks: it encodes into
    /// memory and does no I/O.
    fn image(&mut self, img: &ImageRef<'_>);
    /// Writes what the images taken since the last flush became; called with no lock
    /// held.
    fn flush(&mut self) -> Result<()>;
}

/// Where recovery puts what it reads: the engine's loader, which builds the index
/// straight from the files, implements it. Recovery is generic over it —
/// monomorphised, so the bulk load of a base pays no dynamic call per session, and its
/// decoding threads still build the very boxes the index keeps ([`Replay::entry`]).
pub(crate) trait Replay: Sync {
    /// A session as the sink keeps it, built on a decoding thread from its image.
    type Entry: Send;
    /// Pre-sizes for about `sessions` sessions.
    fn reserve(&self, sessions: usize);
    /// How many shards the sink sorts sessions into.
    fn shard_count(&self) -> usize;
    /// The shard a token hash belongs to.
    fn shard_of(&self, key: u128) -> usize;
    /// A session's entry from its image, and its key (token hash).
    fn entry(img: Image) -> (u128, Self::Entry);
    /// Loads a compacted base: its sessions, decoded per shard by several threads,
    /// and its aliases.
    fn load_base(
        &self,
        parts: Vec<BasePart<Self::Entry>>,
        aliases: Vec<(TokenHash, SessionId, Timestamp)>,
    );
    /// Applies one record, in log order.
    fn apply(&self, rec: Record);
}

/// One decoding thread's share of a base: its sessions sorted by shard, one list per
/// shard, each already an entry of the sink's (built by the decoding thread, so the
/// lists stay small: a key and a pointer, not a whole image), with its token hash, and
/// its user given as an index into `users` ([`interner::NO_USER`]: none) and its
/// own user unset. The sink fills the users in while it builds its shards, so decoding
/// never touches a user's shared allocation.
pub(crate) struct BasePart<E> {
    pub(crate) shards: Vec<Vec<(u128, E, u32)>>,
    pub(crate) users: interner::UserInterner,
}

/// A sink that keeps nothing, for tests that open a backend on an empty directory.
#[cfg(test)]
pub(crate) struct Discard;

#[cfg(test)]
impl Replay for Discard {
    type Entry = ();
    fn reserve(&self, _: usize) {}
    fn shard_count(&self) -> usize {
        1
    }
    fn shard_of(&self, _: u128) -> usize {
        0
    }
    fn entry(img: Image) -> (u128, ()) {
        (img.hash.0, ())
    }
    fn load_base(&self, _: Vec<BasePart<()>>, _: Vec<(TokenHash, SessionId, Timestamp)>) {}
    fn apply(&self, _: Record) {}
}

/// What opening a backend yields: the backend, ready to append, and the state it held.
pub(crate) struct Opened {
    pub(crate) backend: Box<dyn Backend>,
    /// The recovered state, when the backend does not replay into the sink itself.
    pub(crate) state: Recovered,
    pub(crate) report: RecoveryReport,
}

/// What recovery found and did, readable after open through
/// [`crate::Store::recovery_report`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Which storage backend was recovered ("log", "sled" or "memory").
    pub backend: &'static str,
    /// Files read.
    pub files: usize,
    /// Records replayed.
    pub records: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes cut off the torn tail of the last segment (0 after a clean shutdown).
    /// Zeros at the end are not counted: the writer zero-fills the active segment
    /// ahead of its records, so a crash leaves them behind even when nothing was torn.
    pub bytes_truncated: u64,
    /// Damaged ranges skipped in salvage mode (empty otherwise).
    pub skipped: Vec<SkippedRange>,
    /// Live sessions after recovery.
    pub sessions: usize,
    /// Sessions found but already past their deadline, dropped rather than resurrected.
    pub expired_dropped: usize,
    /// Time recovery took.
    pub duration: Duration,
}

/// A damaged byte range that salvage mode skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRange {
    /// The file.
    pub file: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// What was wrong.
    pub reason: String,
}

/// A replayed state held apart from the index: what the sled backend reads, and the
/// reference the log's replay into the index ([`crate::store::load::Loader`]) must agree with.
#[derive(Default)]
pub(crate) struct Recovered {
    pub(crate) sessions: RandomKeyMap<Image>,
    pub(crate) aliases: HashMap<TokenHash, (SessionId, Timestamp)>,
    pub(crate) not_before: HashMap<UserId, Timestamp>,
}

#[cfg(test)]
impl Recovered {
    /// Applies one record. Records naming a session that is not there (it ended, or
    /// was cleared, before a coalesced touch was written) are ignored.
    pub(crate) fn apply(&mut self, rec: crate::model::change::Record) {
        match rec {
            crate::model::change::Record::Image(img) => {
                self.sessions.insert(img.id.0, img);
            }
            crate::model::change::Record::Alias { hash, id, until } => {
                self.aliases.insert(hash, (id, until));
            }
            crate::model::change::Record::Change(c) => self.apply_change(c),
        }
    }

    fn apply_change(&mut self, c: crate::model::change::Change) {
        match c {
            crate::model::change::Change::Create {
                id,
                hash,
                user,
                label,
                created,
                absolute,
                idle_ms,
                data,
            } => {
                let authenticated = user.as_ref().map(|_| created);
                self.sessions.insert(
                    id.0,
                    Image {
                        id,
                        hash,
                        user,
                        details: crate::model::details::Details::labelled(label),
                        created,
                        authenticated,
                        absolute,
                        idle_ms,
                        last_seen: created,
                        version: 0,
                        data,
                    },
                );
            }
            crate::model::change::Change::Data {
                id,
                version,
                at,
                data,
            } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.data = data;
                    s.version = version;
                    s.last_seen = s.last_seen.max(at);
                }
            }
            crate::model::change::Change::Touch { id, at } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.last_seen = s.last_seen.max(at);
                }
            }
            crate::model::change::Change::Extend { id, absolute, at } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.absolute = absolute;
                    s.last_seen = s.last_seen.max(at);
                }
            }
            crate::model::change::Change::Bind {
                id,
                user,
                at,
                version,
            } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.user = Some(user);
                    s.authenticated = Some(at);
                    s.version = version;
                    s.last_seen = s.last_seen.max(at);
                    s.edit_details(|d| d.factors = Box::default());
                }
            }
            crate::model::change::Change::Unbind { id, version } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.user = None;
                    s.authenticated = None;
                    s.version = version;
                    s.edit_details(|d| d.factors = Box::default());
                }
            }
            crate::model::change::Change::Label { id, label } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.edit_details(|d| d.label = label);
                }
            }
            crate::model::change::Change::SignIn { id, factors } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.edit_details(|d| d.factors = factors.into());
                }
            }
            crate::model::change::Change::Device { id, device } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.edit_details(|d| d.device = Some(Box::new(device)));
                }
            }
            crate::model::change::Change::Rotate {
                id,
                old,
                new,
                grace_until,
                at,
            } => {
                if let Some(s) = self.sessions.get_mut(&id.as_u128()) {
                    s.hash = new;
                    s.last_seen = s.last_seen.max(at);
                    self.aliases.insert(old, (id, grace_until));
                }
            }
            crate::model::change::Change::End { id, .. } => {
                self.sessions.remove(&id.as_u128());
            }
            crate::model::change::Change::Clear => {
                self.sessions.clear();
                self.aliases.clear();
            }
            crate::model::change::Change::Import(img) => {
                self.sessions.insert(img.id.0, *img);
            }
            crate::model::change::Change::NotBefore { user, at } => {
                self.sessions.retain(|_, s| {
                    s.user.as_ref() != Some(&user)
                        || !crate::model::session::signed_in_before(s.authenticated, at)
                });
                let t = self.not_before.entry(user).or_insert(at);
                *t = (*t).max(at);
            }
        }
    }
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionStats {
    /// Bytes on disk before.
    pub bytes_before: u64,
    /// Bytes on disk after: the new base, and the segments written while it was built.
    pub bytes_after: u64,
    /// Bytes of the new base alone: the size of the live sessions and aliases.
    pub base_bytes: u64,
    /// Sessions written to the new base.
    pub sessions: usize,
    /// Time it took.
    pub duration: Duration,
}
