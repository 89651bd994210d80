//! Compaction, as the engine takes part in it: when it is worth doing, the snapshot
//! of the live set it writes (walking the session shards in place, 8 sessions per
//! shard-lock hold, and then the sessions rotations moved meanwhile), and the
//! bookkeeping of what it did.
//!
//! A compaction: asked by the writer, the compactor first estimates the live sessions'
//! size; if the log is under `growth` times that, it declines and sets that estimate as
//! the writer's floor. Otherwise the writer seals the active segment, and the backend
//! writes every live session as one image plus the live aliases, read through
//! `Snapshot`, then switches to it.
//!
//! Each session once, however rotations move it: the snapshot reads each shard's
//! sessions where they are, a few at a time, letting the shard's lock go in between. A
//! rotation meanwhile may move a session from a shard not yet read into one already
//! read (it would be missed) or the other way (it would be met twice). So while the
//! shards are read, every rotation notes its session's id ([`Moves`]), and the snapshot
//! writes the noted sessions at the end, found by id; and every session it writes is
//! marked with the compaction's number (`SessionState::compacted`), so that none is
//! written twice.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::{IMAGES_AT_ONCE, Inner, READ_CHUNK, Store};
use crate::backend::{CompactionStats, ImageSink, Snapshot};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::index::entry::SessionState;
use crate::index::shard::{SlotRef, join};
use crate::journal::Journal;
use crate::model::change::{Image, ImageRef};
use crate::model::session::UserId;
use crate::model::token::{SessionId, TokenHash};
use crate::util::trace;

/// Sessions a compaction reads per hold of their shard's read lock. Each is encoded
/// under it, so a hold lasts a few microseconds and blocks the shard's writers; 8 cost
/// no more CPU per session than 16 (whose misses overlap no better) and let concurrent
/// updates through more often (measured in `docs/performance.md`, "Compaction without
/// reference counts").
const COMPACT_CHUNK: usize = 8;
const _: () = assert!(COMPACT_CHUNK <= READ_CHUNK);

/// The sessions rotations moved while a compaction read the shards, for it to write
/// at the end (see the module's doc). A rotation notes its session under the write
/// locks of both shards it moves it between, so a snapshot that reads either shard
/// after the move also finds the note at the end.
#[derive(Default)]
pub(super) struct Moves {
    /// Set while a snapshot reads the shards: the only cost to a rotation otherwise is
    /// reading it.
    noting: AtomicBool,
    ids: Mutex<Vec<SessionId>>,
    /// The number of the last snapshot, held while one runs: snapshots take turns.
    snapshots: Mutex<u32>,
}

impl Moves {
    /// Notes that a rotation moved session `id` (called under the shards' write locks;
    /// the list's lock is a leaf).
    pub(super) fn note(&self, id: SessionId) {
        if self.noting.load(Ordering::Acquire) {
            let mut ids = self.ids.lock();
            if self.noting.load(Ordering::Relaxed) {
                ids.push(id);
            }
        }
    }

    fn start(&self) {
        let mut ids = self.ids.lock();
        ids.clear();
        self.noting.store(true, Ordering::Release);
    }

    fn finish(&self) -> Vec<SessionId> {
        let mut ids = self.ids.lock();
        self.noting.store(false, Ordering::Release);
        std::mem::take(&mut *ids)
    }
}

impl Store {
    /// Compacts the log now: rewrites the live sessions as one base file and deletes
    /// the history it replaces, while reads and writes go on. (The sled backend
    /// manages its own space; this is a no-op there.)
    ///
    /// # Errors
    /// [`Error::Io`] if the base cannot be written (the store keeps working on the old
    /// files); [`Error::Poisoned`] if the log writer has failed.
    pub fn compact(&self) -> Result<CompactionStats> {
        self.inner.compact()
    }
}

/// What a compaction writes: every live session, read a chunk at a time, and every
/// rotation alias still in its grace period.
impl Snapshot for Inner {
    fn each_image(&self, sink: &mut dyn ImageSink) -> Result<()> {
        let mut number = self.moves.snapshots.lock();
        *number = number.wrapping_add(1).max(1);
        let mark = *number;
        self.moves.start();
        let read = self.images_in_place(mark, sink);
        let moved = self.moves.finish();
        read?;
        let mut pending = 0;
        for id in moved {
            // Found by id wherever it is now; written unless it already was.
            let written = self.with_live_by_id(id, |key, s| {
                let first = first_time(s, mark);
                if first {
                    sink.image(&view(key, s));
                }
                first
            });
            pending += usize::from(written == Some(true));
            if pending == IMAGES_AT_ONCE {
                sink.flush()?;
                pending = 0;
            }
        }
        sink.flush()
    }

    fn each_alias(
        &self,
        f: &mut dyn FnMut(TokenHash, SessionId, Timestamp) -> Result<()>,
    ) -> Result<()> {
        let now = self.now();
        for shard in self.shards.iter() {
            let aliases: Vec<(u128, SessionId, Timestamp)> = shard
                .read()
                .iter()
                .filter_map(|(k, slot)| match slot {
                    SlotRef::Alias(a) if a.until > now => Some((k, a.session, a.until)),
                    _ => None,
                })
                .collect();
            for (k, id, until) in aliases {
                f(TokenHash(k), id, until)?;
            }
        }
        Ok(())
    }

    fn not_before(&self) -> Vec<(UserId, Timestamp)> {
        self.users.not_before_all()
    }
}

impl Inner {
    /// Hands `sink` every live session not yet marked `mark`, shard by shard, where
    /// each is (the first half of [`Snapshot::each_image`]), marking each. A shard's
    /// places are listed first, then its sessions read [`COMPACT_CHUNK`] at a time
    /// under its read lock, in the order of its table: its lookups walk the table from
    /// one end to the other, and the only cache misses are the sessions' own.
    fn images_in_place(&self, mark: u32, sink: &mut dyn ImageSink) -> Result<()> {
        let mut places = Vec::new();
        for shard in self.shards.iter() {
            if self.closing.load(Ordering::Acquire) {
                return Err(Error::io(
                    "compacting",
                    std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "the store is closing; the old log stays in use",
                    ),
                ));
            }
            places.clear();
            shard.read().places(&mut places);
            for block in places.chunks(IMAGES_AT_ONCE) {
                for chunk in block.chunks(COMPACT_CHUNK) {
                    let held = shard.read();
                    let now = self.now();
                    let found: [Option<(u64, &SessionState)>; COMPACT_CHUNK] =
                        std::array::from_fn(|i| {
                            let lo = *chunk.get(i)?;
                            Some((lo, held.state_at(lo)?))
                        });
                    // Every session's parts are read first, so that their cache misses
                    // overlap; encoding each in turn would wait for each in turn.
                    let warmed = found.iter().flatten().fold(0, |a, (_, s)| a ^ warm(s));
                    std::hint::black_box(warmed);
                    for &(lo, s) in found.iter().flatten() {
                        // Gone meanwhile, expired, or moved here and written already.
                        if s.deadline(self.rules) > now && first_time(s, mark) {
                            sink.image(&view(join(lo, s.hash_hi), s));
                        }
                    }
                }
                // Written after the lock is released.
                sink.flush()?;
            }
        }
        Ok(())
    }

    /// Runs `f` on the token hash and state of the live session `id` under its shard's
    /// read lock.
    fn with_live_by_id<R>(
        &self,
        id: SessionId,
        f: impl FnOnce(u128, &SessionState) -> R,
    ) -> Option<R> {
        // Found however often it is rotated meanwhile (see `lock_by_id`): a compaction
        // must not drop a live session.
        let (shard, key) = self.lock_by_id(id, |l| l.read())?;
        let s = shard.live(key)?;
        if s.deadline(self.rules) <= self.now() {
            return None;
        }
        Some(f(key, s))
    }

    /// Runs `f` on the image of the live session `id` under its shard's read lock.
    fn with_view_of<R>(&self, id: SessionId, f: impl FnOnce(&ImageRef<'_>) -> R) -> Option<R> {
        self.with_live_by_id(id, |key, s| f(&view(key, s)))
    }

    /// Runs `f` on the images of the live sessions among `ids`, a chunk at a time
    /// under the chunk's read locks (see [`Inner::read_chunk`]); a session moved
    /// meanwhile is looked up again by [`Inner::with_view_of`], which does not give up
    /// on one that keeps moving.
    fn views_of(&self, ids: &[SessionId], mut f: impl FnMut(&ImageRef<'_>)) {
        let mut moved = Vec::new();
        for chunk in ids.chunks(COMPACT_CHUNK) {
            self.read_chunk(
                chunk,
                |live| {
                    // Every session's parts are read first, so that their cache misses
                    // overlap; encoding each in turn would wait for each in turn.
                    let warmed = live.iter().flatten().fold(0, |a, (_, s)| a ^ warm(s));
                    std::hint::black_box(warmed);
                    for &(key, s) in live.iter().flatten() {
                        f(&view(key, s));
                    }
                },
                &mut moved,
            );
        }
        for id in moved {
            self.with_view_of(id, &mut f);
        }
    }

    /// Appends the images of the live sessions among `ids` to `out`.
    pub(super) fn images_of(&self, ids: &[SessionId], out: &mut Vec<Image>) {
        self.views_of(ids, |img| out.push(img.to_image()));
    }

    /// Average encoded size of a session image, from a sample (for stats before the
    /// first compaction).
    pub(super) fn sample_image_bytes(&self) -> f64 {
        let mut ids = Vec::new();
        for shard in self.ids.iter() {
            ids.extend(shard.read().keys().take(64 - ids.len()).copied());
            if ids.len() >= 64 {
                break;
            }
        }
        let mut buf = Vec::new();
        let mut n = 0usize;
        for id in ids {
            let encoded = self.with_view_of(id, |img| {
                crate::backend::log::record::encode_image(&mut buf, img);
            });
            n += usize::from(encoded.is_some());
        }
        if n == 0 {
            0.0
        } else {
            buf.len() as f64 / n as f64
        }
    }

    /// Estimated size of a base holding `sessions` sessions: bytes per session in the
    /// last base, or in a sample of images before the first compaction.
    pub(super) fn estimated_live_bytes(&self, sessions: usize) -> u64 {
        let per_session = self.compaction.lock().bytes_per_session;
        let per_session = per_session.unwrap_or_else(|| self.sample_image_bytes());
        (per_session * sessions as f64) as u64
    }

    /// What the compactor runs when the log writer asks (the log reached
    /// `compact_min_bytes` and `growth` times the last base): a compaction — unless the
    /// live sessions alone would make a base more than `1 / growth` of the log. Then the
    /// history is mostly live and rewriting it would reclaim little (a log of creates
    /// only would even grow: an image carries more fields than a create record), so the
    /// writer is told not to ask again before the log is `growth` times that estimate.
    /// Checks stay amortized O(1) per byte written, like compactions.
    pub(crate) fn compact_if_worthwhile(&self) -> Result<()> {
        let Journal::Disk(d) = &self.journal else {
            return Ok(());
        };
        // The log's size first, then the sessions: writes go on meanwhile, and the
        // other order compares sessions counted earlier with a log grown since (a
        // store of live sessions then looked like one of history, and was rewritten).
        let disk_bytes = d.counters().disk_bytes;
        let sessions = self.ids.iter().map(|m| m.read().len()).sum();
        let live = self.estimated_live_bytes(sessions);
        if (disk_bytes as f64) < self.opts.compact_growth * live as f64 {
            d.set_compaction_floor(live);
            return Ok(());
        }
        self.compact().map(drop)
    }

    pub(crate) fn compact(&self) -> Result<CompactionStats> {
        let Journal::Disk(d) = &self.journal else {
            return Ok(CompactionStats::default());
        };
        let _one_at_a_time = self.compact_lock.lock();
        let _span = trace::span!("sessiondb.compact");
        let before = d.counters().disk_bytes;
        let result = match d.begin_compaction() {
            Ok(Some(job)) => job.run(self),
            Ok(None) => Ok(CompactionStats {
                bytes_before: before,
                bytes_after: before,
                sessions: self.ids.iter().map(|m| m.read().len()).sum(),
                ..CompactionStats::default()
            }),
            Err(e) => Err(e),
        };
        let mut log = self.compaction.lock();
        match &result {
            Ok(st) => {
                d.note_disk_bytes(st.bytes_after);
                // The base is now the measure of what a compaction leaves.
                d.set_compaction_floor(0);
                log.count += 1;
                self.metrics
                    .compaction_seconds
                    .record(st.duration.as_secs_f64());
                self.metrics.compaction_bytes.record(st.base_bytes as f64);
                log.last = Some((self.now(), st.clone()));
                log.last_error = None;
                if st.sessions > 0 && st.base_bytes > 0 {
                    log.bytes_per_session = Some(st.base_bytes as f64 / st.sessions as f64);
                }
                trace::event!(
                    info,
                    sessions = st.sessions,
                    bytes_before = st.bytes_before,
                    bytes_after = st.bytes_after,
                    base_bytes = st.base_bytes,
                    seconds = st.duration.as_secs_f64(),
                    "compacted"
                );
            }
            Err(e) => {
                trace::event!(warn, error = %e, "compaction failed; the old log stays in use");
                log.last_error = Some(e.to_string());
            }
        }
        result
    }
}

/// Marks `s` as written by snapshot `mark`; false if it already was. Only the snapshot
/// (one at a time) writes marks, so a load and a store do, without a locked
/// instruction.
fn first_time(s: &SessionState, mark: u32) -> bool {
    if s.compacted.load(Ordering::Relaxed) == mark {
        return false;
    }
    s.compacted.store(mark, Ordering::Relaxed);
    true
}

/// The image of live session `s`, whose token hash is `key`.
pub(super) fn image(key: u128, s: &SessionState) -> Image {
    view(key, s).to_image()
}

/// Live session `s`, whose token hash is `key`, as an image borrowing its parts.
fn view(key: u128, s: &SessionState) -> ImageRef<'_> {
    ImageRef {
        id: s.id,
        hash: TokenHash(key),
        user: &s.user,
        details: &s.details,
        created: s.created,
        authenticated: s.authenticated.get(),
        absolute: s.absolute,
        idle_ms: s.idle_ms,
        last_seen: s.last_seen(),
        version: s.version,
        data: &s.data,
    }
}

/// A byte of every cache line of `s`'s data and of its user's name, read so that they
/// are on their way in before they are encoded.
fn warm(s: &SessionState) -> u8 {
    let data = s.data.as_bytes().iter().step_by(64).fold(0, |a, &b| a ^ b);
    let user = s
        .user
        .as_ref()
        .and_then(|u| u.as_str().as_bytes().first().copied());
    data ^ user.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::model::data::SessionData;
    use crate::model::session::NewSession;
    use crate::options::Options;

    /// Records what a compaction hands it, and checks at each flush that no index lock
    /// is held (a flush writes a file: under a lock it would stall every writer of the
    /// shard).
    struct Recorder<'a> {
        inner: &'a Inner,
        pending: Vec<(SessionId, Vec<u8>)>,
        written: Vec<(SessionId, Vec<u8>)>,
        flushes: usize,
    }

    impl ImageSink for Recorder<'_> {
        fn image(&mut self, img: &ImageRef<'_>) {
            self.pending.push((img.id, img.data.as_bytes().to_vec()));
        }

        fn flush(&mut self) -> Result<()> {
            for lock in self.inner.shards.iter() {
                assert!(
                    lock.try_write().is_some(),
                    "a session shard is still locked"
                );
            }
            for lock in self.inner.ids.iter() {
                assert!(lock.try_write().is_some(), "an id shard is still locked");
            }
            self.written.append(&mut self.pending);
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn a_snapshot_hands_over_every_live_session_once_and_flushes_with_no_lock_held() {
        let opts = Options::default().reaper_interval(None).shards(4);
        let store = Store::in_memory_with(opts).unwrap();
        let mut want = BTreeSet::new();
        let mut tokens = Vec::new();
        for i in 0..(3 * IMAGES_AT_ONCE + 7) {
            let mut data = SessionData::new();
            data.insert("n", i.to_string().as_str()).unwrap();
            let (t, s) = store.create(NewSession::anonymous().data(data)).unwrap();
            tokens.push((t, s.id()));
        }
        // Ended and rotated sessions: the first gone, the second found at its new place.
        for (i, (t, id)) in tokens.iter().enumerate() {
            match i % 3 {
                0 => assert!(store.end(t).unwrap()),
                1 => {
                    store.rotate(t).unwrap();
                    want.insert(*id);
                }
                _ => {
                    want.insert(*id);
                }
            }
        }
        let mut sink = Recorder {
            inner: &store.inner,
            pending: Vec::new(),
            written: Vec::new(),
            flushes: 0,
        };
        store.inner.each_image(&mut sink).unwrap();
        assert!(sink.pending.is_empty(), "images left unflushed");
        assert!(sink.flushes >= 2, "{} flushes", sink.flushes);
        let got: BTreeSet<SessionId> = sink.written.iter().map(|(id, _)| *id).collect();
        assert_eq!(got.len(), sink.written.len(), "a session handed over twice");
        assert_eq!(got, want);
        for (id, bytes) in &sink.written {
            let now = store
                .inner
                .with_view_of(*id, |img| img.data.as_bytes().to_vec());
            assert_eq!(now.as_deref(), Some(&bytes[..]));
        }
    }

    /// Rotates every session at each of the first `rounds` flushes of a compaction —
    /// between two shards' reads, with no lock held — moving sessions from shards not
    /// yet read into ones already read and back.
    struct Rotating<'a> {
        store: &'a Store,
        tokens: Vec<crate::model::token::Token>,
        rounds: usize,
        written: Vec<SessionId>,
    }

    impl ImageSink for Rotating<'_> {
        fn image(&mut self, img: &ImageRef<'_>) {
            self.written.push(img.id);
        }

        fn flush(&mut self) -> Result<()> {
            if self.rounds > 0 {
                self.rounds -= 1;
                for t in &mut self.tokens {
                    *t = self.store.rotate(t)?;
                }
            }
            Ok(())
        }
    }

    #[test]
    fn a_snapshot_writes_each_session_once_however_rotations_move_it_between_shards() {
        let opts = Options::default()
            .reaper_interval(None)
            .shards(8)
            .rotation_grace(std::time::Duration::ZERO);
        let store = Store::in_memory_with(opts).unwrap();
        let mut want = BTreeSet::new();
        let mut tokens = Vec::new();
        for _ in 0..400 {
            let (t, s) = store.create(NewSession::anonymous()).unwrap();
            want.insert(s.id());
            tokens.push(t);
        }
        let mut sink = Rotating {
            store: &store,
            tokens,
            rounds: 6,
            written: Vec::new(),
        };
        store.inner.each_image(&mut sink).unwrap();
        assert_eq!(sink.rounds, 0, "fewer flushes than rounds");
        let got: BTreeSet<SessionId> = sink.written.iter().copied().collect();
        assert_eq!(got.len(), sink.written.len(), "a session written twice");
        assert_eq!(got.len(), want.len(), "a session left out");
        assert_eq!(got, want);
    }
}
