//! [`Store`]: the embedded engine and its public API — the engine (`Inner`) ties the
//! index shards, the id map, the user index, the timing wheels, the journal and the
//! event bus together. This file owns opening a store, `Inner` and its lock order, the
//! lookups every operation shares, and durability (`flush`, `deferred`, `close`); each
//! family of operations has a file of its own (create, read, write, users, end,
//! instances, expiry, compact, export, verify, stats).
//!
//! Index layout:
//! - session shards: token hash → session (or rotation alias) plus that shard's wheel
//!   (see [`crate::index::shard`] for how a shard keys by half the hash);
//! - id shards: public id → the session's place in its shard, the low half of its
//!   current token hash (public ids are stable, hashes rotate);
//! - the user index ([`crate::index::users`]): user → public ids.
//!
//! Lock order: user locks → rotation gates → session shards (ascending index) → id
//! shards. Id shard locks and the list of sessions moved during a compaction are
//! leaves; a rotation only tries its gate (never waits on it)
//! while it holds shards; no lock is held across a user callback, an event send, or a
//! wait for durability.

// The operations, one family a file, each an `impl Store` (the public methods) and an
// `impl Inner` (the engine's half); each opens with the trace of ARCHITECTURE.md it
// follows.
mod budget;
mod compact;
mod create;
mod device;
mod end;
mod expiry;
mod export;
mod instances;
mod metrics;
mod read;
mod signin;
mod stats;
mod users;
mod verify;
mod write;

// What the engine runs on besides the index: the event bus, the loader that builds
// the index on open, the background threads.
pub(crate) mod background;
pub(crate) mod events;
pub(crate) mod load;

pub use stats::{EndCounts, Stats};

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use parking_lot::{RwLock, RwLockWriteGuard};

use crate::backend::CompactionStats;
use crate::backend::RecoveryReport;
use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::index::entry::{Rules, SessionState};
use crate::index::shard::{IdMap, Shard, SlotRef, id_ix, shard_of};
use crate::index::usage::Usage;
use crate::index::users::UserIndex;
use crate::journal::Journal;
use crate::journal::commit;
use crate::journal::commit::{Commit, Settle};
use crate::journal::writer::Writer;
use crate::model::change::Ticket;
use crate::model::event::Event;
use crate::model::token::{SessionId, Token};
use crate::options::Durability;
use crate::options::Options;
use crate::store::background::{Background, spawn_on_request, spawn_periodic};
use crate::store::budget::Admission;
use crate::store::events::EventBus;
use crate::store::load::Loader;
use crate::util::entropy::Entropy;
use crate::util::fs;
use crate::util::lock;
use crate::util::padded::Padded;
use crate::util::trace;

/// Where a new session goes in the index.
enum Key {
    /// Under this freshly generated token, or another if its hash is taken.
    Fresh(Token),
    /// Under exactly this token hash.
    Given(u128),
}

/// How many races to a rotation of the same session a lookup by id loses before it
/// takes the session's rotation gate (see [`Inner::lock_by_id`]). Each lost race means
/// a rotation of that session completed meanwhile; more than a few in a row means it is
/// rotated back to back.
const MAX_HOPS: usize = 8;

/// Stripes of the rotation gates ([`Inner::gates`]), by session id.
const GATES: usize = 64;

/// An embedded session store.
///
/// `Store` is `Send + Sync` and cheap to clone: it is an `Arc` inside, so clone it into
/// every thread or handler rather than wrapping it in another `Arc`. The background
/// reaper stops (and its thread is joined) when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Shared by the handles only (background threads hold the inner part): when the
    /// last handle goes, the store shuts down at once, whatever a thread still holds.
    _life: Arc<Lifecycle>,
}

struct Lifecycle(Arc<Inner>);

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

pub(crate) struct Inner {
    opts: Options,
    rules: Rules,
    /// The memory budget, if the options set one.
    budget: Option<Admission>,
    touch_ms: u64,
    grace_ms: u64,
    mask: usize,
    shards: Box<[Padded<RwLock<Shard>>]>,
    ids: Box<[Padded<RwLock<IdMap>>]>,
    users: UserIndex,
    events: EventBus,
    journal: Journal,
    report: parking_lot::Mutex<RecoveryReport>,
    compaction: parking_lot::Mutex<CompactionLog>,
    compact_lock: parking_lot::Mutex<()>,
    /// The sessions rotations move while a compaction reads the shards.
    moves: compact::Moves,
    compactor: parking_lot::Mutex<Option<Background>>,
    reaper: parking_lot::Mutex<Option<Background>>,
    /// OS randomness for tokens and ids, read in bulk.
    entropy: Entropy,
    /// Set when the last handle is dropped: a running compaction stops early.
    closing: std::sync::atomic::AtomicBool,
    /// The rotation gates, striped by session id ([`Inner::gate`]): a rotation holds
    /// its session's stripe shared while it moves the session (taken with `try_read`,
    /// under its shard locks); a lookup that keeps losing races to rotations of one
    /// session takes the stripe exclusively, and the session cannot move under it.
    gates: Box<[Padded<RwLock<()>>]>,
    /// Calls refused, by cause (the budget counts its own).
    refusals: stats::Refusals,
    /// The histograms a store records itself (no-ops without the `metrics` feature).
    metrics: metrics::StoreMetrics,
}

/// Compactions so far.
#[derive(Default)]
struct CompactionLog {
    count: u64,
    last: Option<(Timestamp, CompactionStats)>,
    /// Bytes per session in the last base, to estimate the live set's size.
    bytes_per_session: Option<f64>,
    last_error: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

/// Result of a closure run on a locked session: `None` asks the caller to retry.
type Attempt<R> = Result<Option<R>>;

/// What one try of [`Inner::lock_by_id`] found.
enum ById<G> {
    /// The session, at this key, in this locked shard.
    Found(G, u128),
    /// Not in the index.
    Gone,
    /// Moved by a rotation meanwhile.
    Moved,
}

impl Store {
    /// A store that lives only in memory, with default options.
    ///
    /// # Errors
    /// [`Error::Io`] if the reaper thread cannot be started.
    pub fn in_memory() -> Result<Store> {
        Store::in_memory_with(Options::default())
    }

    /// A store that lives only in memory.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] if an option is out of range.
    pub fn in_memory_with(opts: Options) -> Result<Store> {
        Store::build(opts, Journal::Memory, None)
    }

    /// Opens (creating if needed) the durable store in directory `dir`, with default
    /// options: the log backend, [`Durability::Buffered`].
    ///
    /// # Errors
    /// See [`Store::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Opens (creating if needed) the store in directory `dir`, recovering what it
    /// holds. Read what recovery found with [`Store::recovery_report`].
    ///
    /// The store is private to its owner, whatever the umask (on Unix): a directory
    /// this creates (`dir`, and any missing parent) is created 0700, and every file the
    /// store writes in it 0600. An existing directory that the group or others can
    /// reach (as a store made by an earlier version is, under umask 022: 0755, files
    /// 0644) is made private on open: the group's and others' access is taken away
    /// from the directory and from each file and directory sessiondb keeps in it
    /// (`LOCK`, the log's files, `sled/`), as `chmod go-rwx` would; other files there
    /// are left alone. If that is not possible (this process is not the owner), the
    /// store is refused rather than opened readable by others. The sled backend's
    /// files are restricted once sled has opened; files sled adds later are inside
    /// directories only the owner can enter.
    ///
    /// # Errors
    /// [`Error::Permissions`] if the directory or one of its files is open to others
    /// and this process cannot change that (it is not the owner);
    /// [`Error::Locked`] if another store (in this or another process) has the
    /// directory open; [`Error::Corrupt`] if a file is damaged anywhere but its torn
    /// tail (see [`Options::salvage`]); [`Error::UnsupportedFormat`] if a newer
    /// sessiondb wrote it; [`Error::InvalidOption`]; [`Error::Io`].
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        if opts.durability == Durability::Memory {
            return Store::build(opts, Journal::Memory, None);
        }
        let dir = dir.as_ref();
        opts.fs
            .create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating store directory {}", dir.display()), e))?;
        if opts.fs.is_os() {
            fs::secure_store_dir(dir, is_store_file)?;
        }
        let _span = trace::span!("sessiondb.open", dir = %dir.display());
        let lock = lock::lock(&*opts.fs, dir)?;
        let loader = Loader::new(opts.shards, opts.clock.now(), Rules::of(&opts));
        let opened = open_backend(opts.backend, dir, &opts, &loader)?;
        let journal = if opts.deterministic {
            Writer::inline(opened.backend, opts.durability, lock)
        } else {
            Writer::start(opened.backend, opts.durability, lock, opts.auto_compact)?
        };
        #[cfg(feature = "metrics")]
        journal.set_metrics(crate::util::metrics::JournalMetrics::new(
            &opts.metrics_label,
        ));
        let store = Store::build(opts, Journal::Disk(journal), Some((loader, opened.report)))?;
        #[cfg(feature = "tracing")]
        trace_opened(dir, &store.recovery_report());
        #[cfg(feature = "metrics")]
        store
            .inner
            .metrics
            .recovery_seconds
            .record(store.recovery_report().duration.as_secs_f64());
        Ok(store)
    }

    /// Recovery alone, for the fuzzers: reads the log in `dir` (on
    /// [`Options::file_system`]) as [`Store::open_with`] does — cutting a torn tail,
    /// removing leftovers, failing on damage — into a store that keeps nothing further
    /// (as [`Store::in_memory_with`]): no lock, no writer, no manifest written, no
    /// thread started for a small log. Not a stable API.
    #[doc(hidden)]
    pub fn recover_in_memory(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let dir = dir.as_ref();
        opts.fs
            .create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating store directory {}", dir.display()), e))?;
        let loader = Loader::new(opts.shards, opts.clock.now(), Rules::of(&opts));
        let (report, _) =
            crate::backend::log::recovery::recover_dir(&*opts.fs, dir, opts.salvage, &loader)?;
        let opts = opts.durability(Durability::Memory).reaper_interval(None);
        Store::build(opts, Journal::Memory, Some((loader, report)))
    }

    fn build(
        opts: Options,
        journal: Journal,
        recovered: Option<(Loader, RecoveryReport)>,
    ) -> Result<Store> {
        opts.validate()?;
        let now = opts.clock.now();
        let n = opts.shards;
        let (shards, ids, users, report) = match recovered {
            Some((loader, mut report)) => {
                let started = std::time::Instant::now();
                let loaded = loader.finish(now);
                report.sessions = loaded.live;
                report.expired_dropped = loaded.expired;
                report.duration += started.elapsed();
                (loader.shards, loader.ids, loader.users, report)
            }
            None => (
                (0..n)
                    .map(|_| Padded(RwLock::new(Shard::new(now))))
                    .collect(),
                (0..n)
                    .map(|_| Padded(RwLock::new(IdMap::default())))
                    .collect(),
                UserIndex::new(n),
                RecoveryReport {
                    backend: "memory",
                    ..RecoveryReport::default()
                },
            ),
        };
        let budget = opts.budget.map(|limits| {
            let usage = Arc::new(Usage::default());
            for shard in shards.iter() {
                shard.write().attach(Arc::clone(&usage));
            }
            Admission::new(limits, usage)
        });
        if let Some(b) = budget.as_ref().filter(|b| b.evicts()) {
            let mut anonymous = Vec::new();
            for shard in shards.iter() {
                let shard = shard.read();
                anonymous.extend(shard.iter().filter_map(|(_, slot)| match slot {
                    SlotRef::Live(s) if s.user.is_none() => Some((s.id, s.last_seen().0)),
                    _ => None,
                }));
            }
            b.fill(anonymous);
        }
        let inner = Arc::new(Inner {
            rules: Rules::of(&opts),
            budget,
            touch_ms: duration_ms(opts.touch_interval),
            grace_ms: duration_ms(opts.rotation_grace),
            mask: n - 1,
            shards,
            ids,
            users,
            events: EventBus::new(opts.event_capacity),
            journal,
            report: parking_lot::Mutex::new(report),
            compaction: parking_lot::Mutex::new(CompactionLog::default()),
            compact_lock: parking_lot::Mutex::new(()),
            moves: compact::Moves::default(),
            compactor: parking_lot::Mutex::new(None),
            reaper: parking_lot::Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            gates: (0..GATES).map(|_| Padded(RwLock::new(()))).collect(),
            entropy: Entropy::new(),
            refusals: stats::Refusals::default(),
            metrics: metrics::StoreMetrics::new(&opts.metrics_label),
            opts,
        });
        let life = Arc::new(Lifecycle(Arc::clone(&inner)));
        // A salvaged store rewrites itself at once, so the damage it skipped is gone
        // and the next open (without salvage) succeeds.
        if inner.opts.salvage && !inner.report.lock().skipped.is_empty() {
            inner.compact()?;
        }
        if let Journal::Disk(d) = &inner.journal
            && let Some(requests) = d.compact_requests.lock().take()
        {
            let store = Arc::downgrade(&inner);
            // One compaction per request from the log writer, unless the log is mostly
            // live (see `Inner::compact_if_worthwhile`); a failure is recorded in the
            // store's stats, and the log goes on.
            let compact = move || {
                store
                    .upgrade()
                    .map(|store| drop(store.compact_if_worthwhile()))
                    .is_some()
            };
            *inner.compactor.lock() =
                Some(spawn_on_request("sessiondb-compact", requests, compact)?);
        }
        if let Some(every) = inner.opts.reaper_interval
            && !inner.opts.deterministic
        {
            let store = Arc::downgrade(&inner);
            let reap = move || {
                store
                    .upgrade()
                    .map(|store| {
                        store.reap();
                        #[cfg(feature = "metrics")]
                        store.publish_metrics();
                    })
                    .is_some()
            };
            *inner.reaper.lock() = Some(spawn_periodic("sessiondb-reap", every, reap)?);
        }
        Ok(Store { inner, _life: life })
    }

    /// The options the store was opened with (for the integrations, e.g. to see
    /// whether writes wait for an fsync).
    #[cfg(any(
        feature = "tower-sessions",
        feature = "actix-session",
        feature = "redis",
        feature = "postgres"
    ))]
    pub(crate) fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Subscribes to session events. Each subscriber has its own buffer of
    /// [`Options::event_capacity`] events; when it is full, further events to that
    /// subscriber are dropped (and counted), so a slow subscriber never blocks the
    /// store. Drop the receiver to unsubscribe.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Writes pending touches and fsyncs everything acknowledged so far (useful under
    /// [`Durability::Buffered`] before a planned shutdown).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Poisoned`] if the log cannot be synced.
    pub fn flush(&self) -> Result<()> {
        match &self.inner.journal {
            Journal::Memory => Ok(()),
            Journal::Disk(d) => d.flush(),
        }
    }

    /// Runs `f` on this store without blocking for durability, and returns its result
    /// with a [`Commit`] that completes once everything `f` wrote is as durable as the
    /// store's [`Durability`] promises.
    ///
    /// For async servers under [`Durability::Sync`]: a write is made in memory in
    /// microseconds, and then blocks its thread until the log's fsync covers it. Inside
    /// `deferred` it returns at once instead, and the task awaits the [`Commit`] (a
    /// [`std::future::Future`], on any executor) without holding a thread, so any
    /// number of tasks on a few runtime workers share each fsync. [`Commit::wait`]
    /// blocks instead, for threads that want to batch several writes under one wait.
    ///
    /// Until the commit completes the writes are not acknowledged: other readers see
    /// them (as they see any `Sync` write before its fsync returns), and a crash may
    /// lose them. Events they raise are delivered when it completes. Writes to another
    /// store inside `f` wait as usual. Under `Memory` and `Buffered` the commit is ready
    /// at once (`Buffered` promises its interval, not an fsync per write).
    ///
    /// ```
    /// use sessiondb::{Durability, NewSession, Options, Store};
    ///
    /// # fn main() -> Result<(), sessiondb::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open_with(dir.path(), Options::default().durability(Durability::Sync))?;
    /// let (created, commit) = store.deferred(|s| s.create(NewSession::for_user("alice")));
    /// let (token, _) = created?;
    /// // In an async handler: `commit.await?`.
    /// commit.wait()?;
    /// assert!(store.get(&token).is_some());
    /// # Ok(()) }
    /// ```
    pub fn deferred<R>(&self, f: impl FnOnce(&Store) -> R) -> (R, Commit) {
        let inner = &self.inner;
        let deliver = |events| inner.events.deliver(events);
        let (r, ticket, stash) =
            commit::run(inner.journal.key(), inner.events.key(), &deliver, || {
                f(self)
            });
        let settle: Arc<dyn Settle> = Arc::clone(inner) as Arc<dyn Settle>;
        (r, Commit::new(settle, ticket, stash))
    }

    /// Flushes and drops this handle. The store closes — its threads stop and the
    /// directory lock is released — when the last clone is dropped.
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub fn close(self) -> Result<()> {
        self.flush()
    }
}

impl Inner {
    /// Stops the background threads, then the log (which drains, syncs and releases the
    /// directory lock). Idempotent.
    fn shutdown(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        drop(self.compactor.lock().take());
        drop(self.reaper.lock().take());
        if let Journal::Disk(d) = &self.journal {
            d.shutdown();
        }
    }

    /// Returns once the change behind `ticket` is as durable as the store's mode
    /// promises. Call with no lock held. Inside [`Store::deferred`] it only records the
    /// ticket for the caller's [`Commit`] ([`commit::defer_wait`]).
    #[inline]
    fn wait(&self, ticket: Ticket) -> Result<()> {
        if matches!(self.journal, Journal::Disk(_))
            && commit::defer_wait(self.journal.key(), ticket)
        {
            return Ok(());
        }
        #[cfg(feature = "metrics")]
        if matches!(self.opts.durability, Durability::Sync)
            && matches!(self.journal, Journal::Disk(_))
        {
            let started = std::time::Instant::now();
            let r = self.journal.wait(ticket);
            self.metrics
                .durability_wait_seconds
                .record(started.elapsed().as_secs_f64());
            return r;
        }
        self.journal.wait(ticket)
    }

    /// Delivers `events` to every subscriber without blocking. Call with no lock held.
    /// Inside [`Store::deferred`] they are held back for its [`Commit`]
    /// ([`commit::defer_events`]).
    #[inline]
    fn emit(&self, events: Vec<Event>) {
        if events.is_empty() || !self.events.active() {
            return;
        }
        if let Some(events) = commit::defer_events(self.events.key(), events) {
            self.events.deliver(events);
        }
    }

    /// Builds and emits events only when someone is subscribed.
    #[inline]
    pub(crate) fn emit_if(&self, make: impl FnOnce() -> Vec<Event>) {
        if self.events.active() {
            self.emit(make());
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Timestamp {
        self.opts.clock.now()
    }

    #[inline]
    fn is_live(&self, state: &SessionState) -> bool {
        state.deadline(self.rules) > self.now()
    }

    #[inline]
    fn shard_ix(&self, key: u128) -> usize {
        shard_of(key as u64, self.mask)
    }

    #[inline]
    fn shard(&self, key: u128) -> &RwLock<Shard> {
        &self.shards[self.shard_ix(key)]
    }

    #[inline]
    fn id_shard(&self, id: SessionId) -> &RwLock<IdMap> {
        &self.ids[id_ix(id, self.mask)]
    }

    /// Where the id map says the session `id` is: its place in a shard (the low half of
    /// its current token hash).
    #[inline]
    fn place_of(&self, id: SessionId) -> Option<u64> {
        self.id_shard(id).read().get(&id).copied()
    }

    /// The current token hash of the session `id` (from the id map, completed by its
    /// shard), if it is in the index.
    #[inline]
    fn hash_of(&self, id: SessionId) -> Option<u128> {
        let lo = self.id_shard(id).read().get(&id).copied()?;
        self.shards[shard_of(lo, self.mask)].read().hash_at(lo)
    }

    #[inline]
    fn ids_insert(&self, id: SessionId, key: u128) {
        self.id_shard(id).write().insert(id, key as u64);
    }

    /// Maps `id` to `key` unless `id` is already mapped; false then.
    #[inline]
    fn ids_try_insert(&self, id: SessionId, key: u128) -> bool {
        match self.id_shard(id).write().entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(key as u64);
                true
            }
        }
    }

    #[inline]
    fn ids_remove(&self, id: SessionId) {
        self.id_shard(id).write().remove(&id);
    }

    /// Locks shards `i` and `j` for writing in index order; the second guard is `None`
    /// when they are the same shard (then the first guards both).
    #[inline]
    fn lock_pair(
        &self,
        i: usize,
        j: usize,
    ) -> (
        RwLockWriteGuard<'_, Shard>,
        Option<RwLockWriteGuard<'_, Shard>>,
    ) {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match i.cmp(&j) {
            Equal => (self.shards[i].write(), None),
            Less => {
                let a = self.shards[i].write();
                let b = self.shards[j].write();
                (a, Some(b))
            }
            Greater => {
                let b = self.shards[j].write();
                let a = self.shards[i].write();
                (a, Some(b))
            }
        }
    }

    #[inline]
    fn wait_all(&self, tickets: &[Ticket]) -> Result<()> {
        // Tickets are handed out in log order: the last one covers the rest.
        match tickets.iter().max() {
            Some(&t) => self.wait(t),
            None => Ok(()),
        }
    }

    /// The session with public id `id`, wherever rotations have moved it, under its
    /// shard's lock (`lock` takes it, to read or to write): the guard and the session's
    /// token hash, the session staying there as long as the guard is held. `None` if
    /// `id` is not in the index (ended). Past its deadline or not: the caller judges.
    ///
    /// Why it always finds a session that is there, however fast it is rotated: every
    /// change to an id's entry in the id map is made under the write lock of the shard
    /// holding the session (a rotation holds both the old shard and the new), so with
    /// the shard of the entry's place locked, the entry is either that place, and the
    /// session is there, or it is not, and the lookup knows which
    /// ([`Inner::try_lock_by_id`]). When it is not, either the id is gone (ended), or
    /// the session moved between the unlocked read of the entry and the lock: a
    /// rotation of it completed meanwhile. So each retry is paid for by a rotation
    /// done, and none is a false "ended".
    ///
    /// Why it terminates even against a rotation loop: retrying alone guarantees that
    /// some thread progresses, not that this one does — a rotation that won every race
    /// would keep the lookup retrying for ever. So after [`MAX_HOPS`] lost races the
    /// lookup takes the session's rotation gate exclusively, holding no shard or id
    /// lock (at most user locks, which rotations never take). A rotation holds the
    /// gate shared from before it changes anything until the id map names the new
    /// place; it only *tries* the gate while it holds its shards, and on failure lets
    /// them go and waits for the gate holding nothing. So the lookup waits only for
    /// rotations already in flight, which wait for nothing it holds, and once it has
    /// the gate (new shared holders are refused while a writer waits) no rotation of
    /// the session can begin: the next try cannot find it moved. The gate is let go
    /// once the shard is locked, whose lock then holds the session in place.
    #[cold]
    fn lock_by_id<'a, G: std::ops::Deref<Target = Shard>>(
        &'a self,
        id: SessionId,
        lock: impl Fn(&'a RwLock<Shard>) -> G,
    ) -> Option<(G, u128)> {
        for _ in 0..MAX_HOPS {
            match self.try_lock_by_id(id, &lock) {
                ById::Found(shard, key) => return Some((shard, key)),
                ById::Gone => return None,
                ById::Moved => {}
            }
        }
        let _gate = self.gate(id).write();
        loop {
            match self.try_lock_by_id(id, &lock) {
                ById::Found(shard, key) => return Some((shard, key)),
                ById::Gone => return None,
                // Cannot happen (no rotation of the session runs now); looking again
                // would still be right.
                ById::Moved => debug_assert!(false, "a session moved under its gate"),
            }
        }
    }

    /// One try of [`Inner::lock_by_id`]: the id map's entry for `id`, then that place's
    /// shard locked, then — if the session is not at that place — the entry read again
    /// under the lock, which no rotation of the session can change meanwhile.
    fn try_lock_by_id<'a, G: std::ops::Deref<Target = Shard>>(
        &'a self,
        id: SessionId,
        lock: &impl Fn(&'a RwLock<Shard>) -> G,
    ) -> ById<G> {
        let Some(lo) = self.place_of(id) else {
            return ById::Gone;
        };
        let shard = lock(&self.shards[shard_of(lo, self.mask)]);
        if let Some((key, s)) = shard.live_at(lo)
            && s.id == id
        {
            return ById::Found(shard, key);
        }
        match self.place_of(id) {
            // Ended (before or while the shard was locked).
            None => ById::Gone,
            // Moved by a rotation that completed before the shard was locked.
            Some(now) if now != lo => ById::Moved,
            // The entry names this place, locked, with no such session there: the
            // invariant above says this cannot be; not found is the safe answer.
            Some(_) => {
                debug_assert!(false, "the id map names a place without its session");
                ById::Gone
            }
        }
    }

    /// The stripe of the rotation gates that session `id`'s rotations hold.
    #[inline]
    fn gate(&self, id: SessionId) -> &RwLock<()> {
        &self.gates[((id.as_u128() >> 64) as usize) & (GATES - 1)]
    }
}

/// What a [`Commit`] waits on: this store's journal, and its subscribers for the
/// events it held back.
impl Settle for Inner {
    fn wait(&self, ticket: Ticket) -> Result<()> {
        self.journal.wait(ticket)
    }

    fn poll(
        &self,
        ticket: Ticket,
        cx: &std::task::Context<'_>,
        registered: &mut Option<std::task::Waker>,
    ) -> std::task::Poll<Result<()>> {
        self.journal.poll_wait(ticket, cx, registered)
    }

    fn deliver(&self, events: Vec<Event>) {
        self.events.deliver(events);
    }
}

/// Sessions a compaction or an export reads before writing them out.
const IMAGES_AT_ONCE: usize = 256;

/// Sessions looked up together by [`Inner::read_chunk`].
const READ_CHUNK: usize = 16;

/// Where `item` is in `sorted` (which holds it).
fn position(sorted: &[usize], item: usize) -> usize {
    sorted.binary_search(&item).unwrap_or(0)
}

/// Writes `items` (at most `buf.len()`) into `buf`, sorted and without repeats; returns
/// that prefix.
fn sorted_unique(buf: &mut [usize], items: impl Iterator<Item = usize>) -> &[usize] {
    let mut n = 0;
    for (slot, item) in buf.iter_mut().zip(items) {
        *slot = item;
        n += 1;
    }
    let buf = &mut buf[..n];
    buf.sort_unstable();
    let mut k = 0;
    for i in 0..n {
        if i == 0 || buf[i] != buf[k - 1] {
            buf[k] = buf[i];
            k += 1;
        }
    }
    &buf[..k]
}

/// Whether `name`, an entry of a store directory, is sessiondb's: the lock file and
/// whatever a backend keeps there.
fn is_store_file(name: &str) -> bool {
    name == crate::util::lock::LOCK_FILE || crate::backend::owns_file(name)
}

/// Opens the backend of `kind` in `dir`, recovering what it holds into `sink`.
pub(crate) fn open_backend(
    kind: crate::options::BackendKind,
    dir: &std::path::Path,
    opts: &crate::options::Options,
    sink: &crate::store::load::Loader,
) -> Result<crate::backend::Opened> {
    let mut opened = match kind {
        crate::options::BackendKind::Log => {
            crate::backend::log::segment::LogBackend::open(dir, opts, sink)
        }
        #[cfg(feature = "sled")]
        crate::options::BackendKind::Sled => crate::backend::sled::SledBackend::open(dir, opts),
        #[cfg(not(feature = "sled"))]
        crate::options::BackendKind::Sled => Err(crate::error::Error::InvalidOption {
            name: "backend",
            reason: "the sled backend needs sessiondb's cargo feature `sled`".into(),
        }),
    }?;
    // The log replays straight into the sink; sled hands over a replayed state.
    sink.load_recovered(std::mem::take(&mut opened.state));
    Ok(opened)
}

/// The events of an open: each range salvage skipped, then what recovery found.
#[cfg(feature = "tracing")]
fn trace_opened(dir: &Path, r: &RecoveryReport) {
    for skipped in &r.skipped {
        trace::event!(
            warn,
            file = %skipped.file.display(),
            offset = skipped.offset,
            len = skipped.len,
            reason = %skipped.reason,
            "salvage skipped damaged data"
        );
    }
    trace::event!(
        info,
        dir = %dir.display(),
        backend = r.backend,
        files = r.files,
        records = r.records,
        bytes_read = r.bytes_read,
        bytes_truncated = r.bytes_truncated,
        skipped = r.skipped.len(),
        sessions = r.sessions,
        expired_dropped = r.expired_dropped,
        seconds = r.duration.as_secs_f64(),
        "store opened"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::model::session::NewSession;

    #[test]
    fn ours_are_the_lock_the_log_the_manifest_and_sled() {
        for name in [
            "LOCK",
            "MANIFEST",
            "MANIFEST.tmp",
            "sled",
            "sled.new",
            "seg-0000000000000001.log",
            "base-00000000000000ff.log",
            "base-00000000000000ff.log.tmp",
        ] {
            assert!(is_store_file(name), "{name}");
        }
        for name in [
            "notes.txt",
            "users.json",
            "seg-1.log",
            "LOCK.bak",
            "sled2",
            ".tmp",
        ] {
            assert!(!is_store_file(name), "{name}");
        }
    }

    fn store() -> Store {
        Store::in_memory_with(Options::default().reaper_interval(None).shards(4)).unwrap()
    }

    #[test]
    fn lock_by_id_finds_a_session_wherever_rotations_moved_it_and_nothing_once_it_ended() {
        let store = store();
        let inner = &*store.inner;
        let (mut t, s) = store.create(NewSession::anonymous()).unwrap();
        let id = s.id();
        for _ in 0..20 {
            t = store.rotate(&t).unwrap();
            let (shard, key) = inner.lock_by_id(id, |l| l.read()).unwrap();
            assert_eq!(key, t.hash().0);
            assert_eq!(shard.live(key).map(|s| s.id), Some(id));
        }
        let (shard, key) = inner.lock_by_id(id, |l| l.write()).unwrap();
        assert_eq!(shard.live(key).map(|s| s.id), Some(id));
        drop(shard);
        // The gate is taken only by a lookup that keeps losing races, and given back.
        assert!(inner.gate(id).try_write().is_some());
        assert!(store.end(&t).unwrap());
        assert!(inner.lock_by_id(id, |l| l.read()).is_none());
        assert!(inner.lock_by_id(id, |l| l.write()).is_none());
    }

    /// What a lookup that lost too many races relies on: holding the session's gate,
    /// no rotation of it moves it; the rotation waits, and completes once let go.
    #[test]
    fn a_rotation_waits_while_its_sessions_gate_is_held_then_completes() {
        let store = store();
        let inner = &*store.inner;
        let (t, s) = store.create(NewSession::anonymous()).unwrap();
        let id = s.id();
        let place = Some(t.hash().0 as u64);
        let gate = inner.gate(id).write();
        let started = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let rotation = scope.spawn(|| {
                started.store(true, Ordering::Release);
                store.rotate(&t)
            });
            while !started.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            for _ in 0..2_000 {
                std::thread::yield_now();
                assert_eq!(inner.place_of(id), place, "moved with its gate held");
                assert_eq!(store.peek(&t).map(|s| s.id()), Some(id));
            }
            // Other sessions' rotations, in other stripes, do not wait.
            let other = loop {
                let (o, os) = store.create(NewSession::anonymous()).unwrap();
                if !std::ptr::eq(inner.gate(os.id()), inner.gate(id)) {
                    break o;
                }
            };
            store.rotate(&other).unwrap();
            drop(gate);
            let fresh = rotation.join().unwrap().unwrap();
            assert_eq!(inner.place_of(id), Some(fresh.hash().0 as u64));
            // The old token is now an alias inside its grace.
            assert_eq!(store.get(&t).map(|s| s.id()), Some(id));
            assert!(matches!(store.rotate(&t), Err(Error::TokenRetired)));
        });
        store.verify().unwrap();
    }
}
