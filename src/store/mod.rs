//! [`Store`]: the public API, and the engine that ties the index shards, the id map,
//! the user index, the timing wheels, the journal and the event bus together.
//!
//! Index layout:
//! - session shards: token hash → session (or rotation alias) plus that shard's wheel
//!   (see [`crate::index::shard`] for how a shard keys by half the hash);
//! - id shards: public id → the session's place in its shard, the low half of its
//!   current token hash (public ids are stable, hashes rotate);
//! - the user index ([`crate::index::users`]): user → public ids.
//!
//! Lock order: user locks → rotation gates → session shards (ascending index) → id
//! shards. Id shard locks are leaves; a rotation only tries its gate (never waits on it)
//! while it holds shards; no lock is held across a user callback, an event send, or a
//! wait for durability.

pub(crate) mod background;
pub(crate) mod events;
pub(crate) mod load;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use parking_lot::{RwLock, RwLockWriteGuard};
use serde::Serialize;

use crate::backend::RecoveryReport;
use crate::backend::{CompactionStats, Snapshot};
use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::index::entry::{MaybeTime, SessionState};
use crate::index::shard::{IdMap, Shard, Slot, SlotRef, id_ix, shard_of};
use crate::index::users::{UserGuards, UserIndex};
use crate::index::wheel::TimerHandle;
use crate::journal::Journal;
use crate::journal::commit;
use crate::journal::commit::{Commit, Settle};
use crate::journal::writer::Writer;
use crate::model::change::Image;
use crate::model::change::{Change, Ticket};
use crate::model::data::SessionData;
use crate::model::event::{EndReason, Event};
use crate::model::portable::SessionRecord;
use crate::model::session::{NewSession, Session, UserId, check_label, next_version};
use crate::model::token::{self, InstanceId, SessionId, Token, TokenHash};
use crate::options::Durability;
use crate::options::{LimitPolicy, Options};
use crate::store::background::{Background, spawn_on_request, spawn_periodic};
use crate::store::events::EventBus;
use crate::store::load::Loader;
use crate::util::codec;
use crate::util::entropy::Entropy;
use crate::util::fs;
use crate::util::lock;
use crate::util::padded::Padded;

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

/// Counters describing a store.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Sessions in the index (including expired ones the reaper has not reached).
    pub sessions: usize,
    /// Users with at least one session.
    pub users: usize,
    /// Old tokens still resolving after a rotation.
    pub aliases: usize,
    /// Timers in the wheels.
    pub timers: usize,
    /// Events dropped because a subscriber's buffer was full.
    pub events_dropped: u64,
    /// The storage backend: "log", "sled" or "memory".
    pub backend: &'static str,
    /// Bytes the store occupies on disk (0 in memory).
    pub disk_bytes: u64,
    /// Estimated bytes the live sessions would take in a freshly compacted base.
    pub estimated_live_bytes: u64,
    /// Estimated share of `disk_bytes` that is dead history (what compaction would
    /// reclaim), from 0.0 to 1.0.
    pub dead_ratio: f64,
    /// Compactions since the store was opened.
    pub compactions: u64,
    /// When the last compaction finished, and what it did.
    pub last_compaction: Option<(Timestamp, CompactionStats)>,
    /// The error of the last compaction, if it failed.
    pub last_compaction_error: Option<String>,
    /// Write batches the log writer has written (each one `write`).
    pub log_batches: u64,
    /// Records the log writer has written.
    pub log_records: u64,
    /// fsyncs the log writer has issued.
    pub log_syncs: u64,
}

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
    auth_ms: u64,
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
        fs::create_private_dir(dir)
            .map_err(|e| Error::io(format!("creating store directory {}", dir.display()), e))?;
        fs::secure_store_dir(dir, is_store_file)?;
        let lock = lock::lock(dir)?;
        let loader = Loader::new(
            opts.shards,
            opts.clock.now(),
            opts.auth_lifetime.map_or(0, duration_ms),
        );
        let opened = open_backend(opts.backend, dir, &opts, &loader)?;
        let journal = Writer::start(opened.backend, opts.durability, lock, opts.auto_compact)?;
        Store::build(opts, Journal::Disk(journal), Some((loader, opened.report)))
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
        let inner = Arc::new(Inner {
            auth_ms: opts.auth_lifetime.map_or(0, duration_ms),
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
            compactor: parking_lot::Mutex::new(None),
            reaper: parking_lot::Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            gates: (0..GATES).map(|_| Padded(RwLock::new(()))).collect(),
            entropy: Entropy::new(),
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
        if let Some(every) = inner.opts.reaper_interval {
            let store = Arc::downgrade(&inner);
            let reap = move || store.upgrade().map(|store| store.reap()).is_some();
            *inner.reaper.lock() = Some(spawn_periodic("sessiondb-reap", every, reap)?);
        }
        Ok(Store { inner, _life: life })
    }

    // ----------------------------------------------------------------------------
    // Creating and reading

    /// Creates a session and returns its token (for the client) and a snapshot.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`], [`Error::TooLarge`] for bad input;
    /// [`Error::UserSessionLimit`] if the user is at the limit and the policy refuses.
    pub fn create(&self, new: NewSession) -> Result<(Token, Session)> {
        self.create_inner(new, None)
    }

    fn create_inner(&self, new: NewSession, fixed: Option<&Token>) -> Result<(Token, Session)> {
        let inner = &*self.inner;
        let limits = &inner.opts.limits;
        // Checked here, wrapped under the user's lock (no allocation if the user already
        // has sessions).
        let user = new.user.as_deref();
        if let Some(u) = user {
            UserId::check(u, limits)?;
        }
        if let Some(label) = &new.label {
            check_label(label, limits)?;
        }
        let (lifetime, idle) = new.durations(&inner.opts)?;
        inner.check_data(&new.data)?;
        let data = new.data;
        let (id, first_token) = token::fresh_session(|b| inner.entropy.fill(b))?;
        let label: Option<Arc<str>> = new.label.map(Arc::from);
        let key = match fixed {
            Some(token) => Key::Given(token.hash().0),
            None => Key::Fresh(first_token),
        };
        let (token, session) = inner.admit(id, user, key, false, |now, user| {
            let mut state = Box::new(SessionState {
                id,
                user: user.clone(),
                label: label.clone(),
                created: now,
                authenticated: user.as_ref().map(|_| now).into(),
                absolute: now.saturating_add(lifetime),
                idle_ms: 0,
                last_seen: now.0.into(),
                version: 0,
                data: data.clone(),
                timer: TimerHandle::detached(),
                hash_hi: 0,
            });
            state.set_idle(idle);
            state
        })?;
        Ok((
            token
                .or_else(|| fixed.cloned())
                .expect("a fresh key yields its token"),
            session,
        ))
    }

    /// Creates a session addressed by a token the caller chose rather than a fresh one:
    /// for a framework that picks its own session ids (derive the token from the id with
    /// [`Token::from_bytes`]), or for moving existing cookies over from another store
    /// without logging anyone out. The token must carry as much entropy as a generated
    /// one; the store cannot check that.
    ///
    /// # Errors
    /// [`Error::Exists`] if the token already addresses a session (or a rotated-away
    /// token still in its grace period); otherwise as [`Store::create`].
    pub fn create_with_token(&self, token: &Token, new: NewSession) -> Result<Session> {
        self.create_inner(new, Some(token)).map(|(_, s)| s)
    }

    /// Calls `f` with every live session, one at a time (a consistent view of each
    /// session, not a point-in-time view of the whole store: sessions created or ended
    /// during the walk may or may not be seen). Returns how many were passed to `f`.
    /// Reads only: it counts as no session's activity.
    ///
    /// # Errors
    /// Whatever `f` returns stops the walk and is returned.
    pub fn export(&self, mut f: impl FnMut(SessionRecord) -> Result<()>) -> Result<usize> {
        let inner = &*self.inner;
        let mut n = 0usize;
        for ids in inner.ids.iter() {
            let batch: Vec<SessionId> = ids.read().keys().copied().collect();
            let mut images = Vec::with_capacity(IMAGES_AT_ONCE);
            for ids in batch.chunks(IMAGES_AT_ONCE) {
                inner.images_of(ids, &mut images);
                for img in images.drain(..) {
                    f(SessionRecord::from_image(img))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Brings in a session exported from a store ([`Store::export`]), with its id, token
    /// hash, user, times, version and data as they were: it answers to the same token.
    /// Durable like a create. Returns false, and changes nothing, if the session's
    /// deadline has already passed.
    ///
    /// # Errors
    /// [`Error::Exists`] if its token hash or its public id is already in this store;
    /// [`Error::TooLarge`] and [`Error::InvalidOption`] for a record this store's limits
    /// refuse, that contradicts itself (last seen before created) or whose version
    /// could not grow (`SessionRecord::version`, from [`Session::MAX_VERSION`] on);
    /// [`Error::UserSessionLimit`] as for a create.
    pub fn import(&self, rec: SessionRecord) -> Result<bool> {
        let inner = &*self.inner;
        rec.check(&inner.opts.limits)?;
        let (id, key) = (rec.id, rec.token_hash.0);
        let user = rec.user.clone();
        let (state_key, state) = crate::store::load::state_of(rec.into_image());
        debug_assert_eq!(state_key, key);
        if state.deadline(inner.auth_ms) <= inner.now() {
            return Ok(false);
        }
        let mut state = Some(state);
        inner.admit(
            id,
            user.as_ref().map(UserId::as_str),
            Key::Given(key),
            true,
            |_, user| {
                // A given key is tried once, so the state is built once.
                let mut s = state
                    .take()
                    .unwrap_or_else(|| unreachable!("admit builds once"));
                s.user = user.clone();
                s
            },
        )?;
        Ok(true)
    }

    /// The live session `token` addresses, or `None` if it is unknown, ended or past
    /// its deadline (whether or not the reaper has removed it yet). Counts as activity:
    /// the idle deadline is re-armed, at most once per [`Options::touch_interval`].
    pub fn get(&self, token: &Token) -> Option<Session> {
        let inner = &*self.inner;
        inner.read_live(token.hash().0, |s, now| {
            if now
                .0
                .saturating_sub(s.last_seen.load(std::sync::atomic::Ordering::Relaxed))
                >= inner.touch_ms
            {
                s.mark_seen(now);
                // Best effort: the touch is coalesced by the log, never a failure of a read.
                let _ = inner.journal.append(|| Change::Touch { id: s.id, at: now });
            }
            s.snapshot(inner.auth_ms)
        })
    }

    /// Like [`Store::get`], but does not count as activity.
    pub fn peek(&self, token: &Token) -> Option<Session> {
        let inner = &*self.inner;
        inner.read_live(token.hash().0, |s, _| s.snapshot(inner.auth_ms))
    }

    /// The user bound to the session `token` addresses, if it is live and has one.
    pub fn user_of(&self, token: &Token) -> Option<UserId> {
        self.inner
            .read_live(token.hash().0, |s, _| s.user.clone())?
    }

    /// The live session with public id `id` (for a devices page or an admin tool).
    /// Does not count as activity.
    pub fn get_by_id(&self, id: SessionId) -> Option<Session> {
        let inner = &*self.inner;
        inner.read_by_id(id, |s| s.snapshot(inner.auth_ms))
    }

    // ----------------------------------------------------------------------------
    // Data

    /// Sets `key` to `value` in the session's data. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::TooLarge`] past a limit;
    /// [`Error::Codec`] if `value` cannot be serialized; [`Error::VersionExhausted`]
    /// if the session is at [`Session::MAX_VERSION`].
    pub fn put<T: Serialize + ?Sized>(&self, token: &Token, key: &str, value: &T) -> Result<u64> {
        let bytes = codec::encode(value, Some(key))?;
        self.put_raw(token, key, &bytes)
    }

    /// Sets `key` to raw bytes (already encoded by the caller). Returns the new version.
    ///
    /// # Errors
    /// As [`Store::put`].
    pub fn put_raw(&self, token: &Token, key: &str, value: &[u8]) -> Result<u64> {
        self.inner.check_entry(key, value.len())?;
        self.inner.change_data(token.hash().0, None, |data| {
            data.insert_raw(key, value)?;
            Ok(true)
        })
    }

    /// Removes `key` from the session's data. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::VersionExhausted`] as for
    /// [`Store::put`].
    pub fn remove(&self, token: &Token, key: &str) -> Result<u64> {
        self.inner
            .change_data(token.hash().0, None, |data| Ok(data.remove(key)))
    }

    /// Atomic read-modify-write of the session's data: `f` gets a copy of the current
    /// data, and its changes are saved only if nobody changed the session meanwhile;
    /// otherwise `f` runs again on the fresh data. No lock is held while `f` runs, so
    /// it may be called more than once: keep side effects out of it. If `f` returns an
    /// error, nothing is saved.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; whatever `f` returns; limits and
    /// [`Error::VersionExhausted`] as for [`Store::put`].
    pub fn update<R>(
        &self,
        token: &Token,
        mut f: impl FnMut(&mut SessionData) -> Result<R>,
    ) -> Result<R> {
        let inner = &*self.inner;
        let hash = token.hash().0;
        loop {
            let (version, current) = inner
                .read_live(hash, |s, _| (s.version, s.data.clone()))
                .ok_or(Error::Ended)?;
            let mut data = current.clone();
            let out = f(&mut data)?;
            if data == current {
                return Ok(out);
            }
            inner.check_data(&data)?;
            match inner.change_data(hash, Some(version), move |d| {
                *d = data.clone();
                Ok(true)
            }) {
                Ok(_) => return Ok(out),
                Err(Error::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Compare-and-swap save: replaces the session's data with `data` only if its
    /// version is still `expected_version` (from [`Session::version`]). For code that
    /// loads a session, awaits something, and saves: a concurrent change is reported,
    /// never silently overwritten. Returns the new version.
    ///
    /// # Errors
    /// [`Error::VersionConflict`] if the session changed; [`Error::Ended`] if it is not
    /// live (a late save never resurrects a session); limits and
    /// [`Error::VersionExhausted`] as for [`Store::put`].
    pub fn save(&self, token: &Token, expected_version: u64, data: &SessionData) -> Result<u64> {
        self.inner.check_data(data)?;
        self.inner
            .change_data(token.hash().0, Some(expected_version), |d| {
                d.clone_from(data);
                Ok(true)
            })
    }

    // ----------------------------------------------------------------------------
    // Expiry

    /// Records activity now: the idle deadline counts from this moment.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live (a touch never resurrects one).
    pub fn touch(&self, token: &Token) -> Result<()> {
        let inner = &*self.inner;
        inner
            .read_live(token.hash().0, |s, now| {
                s.mark_seen(now);
                let _ = inner.journal.append(|| Change::Touch { id: s.id, at: now });
            })
            .ok_or(Error::Ended)
    }

    /// Extends the session's absolute deadline to at least `now + by` (never shortens
    /// it). Returns the session's new effective deadline.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn extend(&self, token: &Token, by: Duration) -> Result<Timestamp> {
        let inner = &*self.inner;
        let (deadline, ticket) = inner.with_live(token.hash().0, |shard, key, now| {
            let s = shard.live_mut(key).ok_or(Error::Ended)?;
            let (id, absolute) = (s.id, s.absolute.max(now.saturating_add(by)));
            // Logged first: a change the log refused is not applied either.
            let t = inner.journal.append(|| Change::Extend {
                id,
                absolute,
                at: now,
            })?;
            s.absolute = absolute;
            s.mark_seen(now);
            Ok(Some((s.deadline(inner.auth_ms), t)))
        })?;
        inner.wait(ticket)?;
        Ok(deadline)
    }

    /// Sets the session's absolute deadline to exactly `absolute`, earlier or later
    /// than it was (for a framework that manages expiry itself, such as tower-sessions'
    /// `expiry_date`). Counts as activity. A deadline at or before now ends the session
    /// as expired. Returns the session's new effective deadline (the idle and
    /// authentication deadlines still apply).
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn set_expiry(&self, token: &Token, absolute: Timestamp) -> Result<Timestamp> {
        let inner = &*self.inner;
        enum Done {
            Moved(Timestamp, Ticket),
            Expired(Box<SessionState>, Ticket),
        }
        let done = inner.with_live(token.hash().0, |shard, key, now| {
            let id = shard.live(key).ok_or(Error::Ended)?.id;
            if absolute <= now {
                let t = inner.journal.append(|| Change::End {
                    id,
                    reason: EndReason::Expired,
                })?;
                let Some(state) = shard.remove_live(key, id) else {
                    return Err(Error::Ended);
                };
                inner.ids_remove(id);
                return Ok(Some(Done::Expired(state, t)));
            }
            let t = inner.journal.append(|| Change::Extend {
                id,
                absolute,
                at: now,
            })?;
            let s = shard.live_mut(key).ok_or(Error::Ended)?;
            s.absolute = absolute;
            s.mark_seen(now);
            let deadline = s.deadline(inner.auth_ms);
            // A later deadline is found when the old timer fires; an earlier one
            // needs the timer moved.
            shard.reschedule_if_earlier(key, deadline);
            Ok(Some(Done::Moved(deadline, t)))
        })?;
        match done {
            Done::Moved(deadline, ticket) => {
                inner.wait(ticket)?;
                Ok(deadline)
            }
            Done::Expired(state, ticket) => {
                inner.finish_end(&state, ticket, EndReason::Expired)?;
                Ok(absolute)
            }
        }
    }

    /// Sets (or clears) the session's device label.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::TooLarge`] past the limit.
    pub fn set_label(&self, token: &Token, label: Option<&str>) -> Result<()> {
        let inner = &*self.inner;
        if let Some(l) = label {
            check_label(l, &inner.opts.limits)?;
        }
        let label: Option<Arc<str>> = label.map(Arc::from);
        let ticket = inner.with_live(token.hash().0, |shard, key, _| {
            let s = shard.live_mut(key).ok_or(Error::Ended)?;
            let id = s.id;
            let t = inner.journal.append(|| Change::Label {
                id,
                label: label.clone(),
            })?;
            s.label.clone_from(&label);
            Ok(Some(t))
        })?;
        inner.wait(ticket)
    }

    /// Removes every session past its deadline now, instead of waiting for the
    /// background reaper (which calls this). Returns how many were removed.
    pub fn reap_expired(&self) -> usize {
        self.inner.reap()
    }

    // ----------------------------------------------------------------------------
    // Users

    /// Binds `user` to the session (a login): an anonymous session becomes
    /// authenticated, and `authenticated_at` becomes now. Binding the same user again
    /// re-authenticates; binding another user moves the session to them. Consider
    /// [`Store::login`], which also rotates the token.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::VersionExhausted`] if it is
    /// at [`Session::MAX_VERSION`]; [`Error::InvalidUserId`] /
    /// [`Error::TooLarge`] for a bad user id; [`Error::UserSessionLimit`] if the user is
    /// at the limit and the policy refuses.
    pub fn bind_user(&self, token: &Token, user: &str) -> Result<()> {
        let inner = &*self.inner;
        let user = UserId::new(user, &inner.opts.limits)?;
        let hash = token.hash().0;
        loop {
            let (id, current, version) = inner
                .read_live(hash, |s, _| (s.id, s.user.clone(), s.version))
                .ok_or(Error::Ended)?;
            // Refused before the per-user limit can end anyone's session for it.
            next_version(version)?;
            let mut guards = inner.users.lock(&user, current.as_ref());
            let user = guards.canonical(&user);
            let mut events = Vec::new();
            let mut tickets = Vec::new();
            if current.as_ref() != Some(&user) {
                inner.enforce_limit(&mut guards, &user, Some(id), &mut events, &mut tickets)?;
            }
            let ticket = inner.with_live(hash, |shard, key, now| {
                let s = shard.live_mut(key).ok_or(Error::Ended)?;
                if s.id != id || s.user != current {
                    return Ok(Some(None));
                }
                let version = next_version(s.version)?;
                let t = inner.journal.append(|| Change::Bind {
                    id,
                    user: user.clone(),
                    at: now,
                    version,
                })?;
                s.user = Some(user.clone());
                s.authenticated = Some(now).into();
                s.version = version;
                s.mark_seen(now);
                let deadline = s.deadline(inner.auth_ms);
                shard.reschedule_if_earlier(key, deadline);
                Ok(Some(Some(t)))
            })?;
            let Some(ticket) = ticket else { continue };
            if current.as_ref() != Some(&user) {
                if let Some(c) = &current {
                    guards.remove(c, id);
                }
                guards.add(&user, id);
            }
            drop(guards);
            tickets.push(ticket);
            inner.wait_all(&tickets)?;
            if inner.events.active() {
                if let Some(c) = current.filter(|c| *c != user) {
                    events.push(Event::UserUnbound {
                        session: id,
                        user: c,
                    });
                }
                events.push(Event::UserBound { session: id, user });
                inner.emit(events);
            }
            return Ok(());
        }
    }

    /// Logs `user` in on the session: rotates the token (the session-fixation defence)
    /// and binds the user. Returns the new token to send to the client.
    ///
    /// # Errors
    /// As [`Store::rotate`] and [`Store::bind_user`]; a login the bind would refuse for
    /// the session's version or the per-user limit changes nothing (no rotation).
    pub fn login(&self, token: &Token, user: &str) -> Result<Token> {
        let inner = &*self.inner;
        let uid = UserId::new(user, &inner.opts.limits)?;
        // A login the bind would refuse must change nothing: refuse it before the
        // rotation, which would otherwise leave the caller holding a retired token —
        // for a version that cannot grow, and for the per-user limit. (A create for
        // the same user racing this login can still take the last place between this
        // check and the bind; the bind then refuses.)
        let (id, current, version) = inner
            .read_live(token.hash().0, |s, _| (s.id, s.user.clone(), s.version))
            .ok_or(Error::Ended)?;
        next_version(version)?;
        if let (Some(max), LimitPolicy::Refuse) =
            (inner.opts.max_sessions_per_user, inner.opts.limit_policy)
            && current.as_ref() != Some(&uid)
        {
            let others = inner.users.lock(&uid, None).sessions(uid.as_str());
            let mut live = 0usize;
            inner.read_batch(&others, |s| live += usize::from(s.id != id));
            if live >= max {
                return Err(Error::UserSessionLimit {
                    user: uid.to_string(),
                    max,
                });
            }
        }
        let fresh = self.rotate(token)?;
        self.bind_user(&fresh, user)?;
        Ok(fresh)
    }

    /// Unbinds the session's user (a logout that keeps the session and its data).
    /// Returns the user that was bound, if any.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::VersionExhausted`] if a
    /// user is bound and the session is at [`Session::MAX_VERSION`].
    pub fn unbind_user(&self, token: &Token) -> Result<Option<UserId>> {
        let inner = &*self.inner;
        let hash = token.hash().0;
        loop {
            let (id, current) = inner
                .read_live(hash, |s, _| (s.id, s.user.clone()))
                .ok_or(Error::Ended)?;
            let Some(user) = current else {
                return Ok(None);
            };
            let mut guards = inner.users.lock(&user, None);
            let ticket = inner.with_live(hash, |shard, key, _| {
                let s = shard.live_mut(key).ok_or(Error::Ended)?;
                if s.id != id || s.user.as_ref() != Some(&user) {
                    return Ok(Some(None));
                }
                let version = next_version(s.version)?;
                let t = inner.journal.append(|| Change::Unbind { id, version })?;
                s.user = None;
                s.authenticated = MaybeTime::NONE;
                s.version = version;
                Ok(Some(Some(t)))
            })?;
            let Some(ticket) = ticket else { continue };
            guards.remove(&user, id);
            drop(guards);
            inner.wait(ticket)?;
            inner.emit_if(|| {
                vec![Event::UserUnbound {
                    session: id,
                    user: user.clone(),
                }]
            });
            return Ok(Some(user));
        }
    }

    /// The live sessions of `user`, oldest first: for a "your devices" page. O(that
    /// user's sessions).
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`] for a bad user id.
    pub fn sessions_of(&self, user: &str) -> Result<Vec<Session>> {
        let inner = &*self.inner;
        UserId::check(user, &inner.opts.limits)?;
        let ids = inner.users.lock_str(user).sessions(user);
        let mut out: Vec<Session> = Vec::with_capacity(ids.len());
        inner.read_batch(&ids, |s| out.push(s.snapshot(inner.auth_ms)));
        out.sort_by_key(|s| (s.created_at(), s.id()));
        Ok(out)
    }

    /// Ends every session of `user` ("log out everywhere"). O(that user's sessions).
    /// Concurrent creates for the same user either finish before (and are ended) or
    /// start after. Returns how many sessions ended.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`] for a bad user id.
    pub fn revoke_user(&self, user: &str) -> Result<usize> {
        let inner = &*self.inner;
        let limits = &inner.opts.limits;
        UserId::check(user, limits)?;
        let mut guards = inner.users.lock_str(user);
        // The index's own UserId (no allocation) when the user has sessions.
        let (user, ids) = match guards.take(user) {
            Some(listed) => listed,
            None => (UserId::new(user, limits)?, Vec::new()),
        };
        let removed = inner.remove_batch(&ids, EndReason::Revoked)?;
        drop(guards);
        let now = inner.now();
        let live = |s: &SessionState| s.deadline(inner.auth_ms) > now;
        let count = removed.iter().filter(|(s, _)| live(s)).count();
        // Tickets are handed out in log order: the last one covers the rest.
        if let Some(last) = removed.iter().map(|&(_, t)| t).max() {
            inner.wait(last)?;
        }
        inner.emit_if(|| {
            let ev = |session, reason| Event::Ended {
                session,
                user: Some(user.clone()),
                reason,
            };
            let (ended, expired): (Vec<_>, Vec<_>) = removed.iter().partition(|(s, _)| live(s));
            let mut evs: Vec<Event> = expired
                .iter()
                .map(|(s, _)| ev(s.id, EndReason::Expired))
                .chain(ended.iter().map(|(s, _)| ev(s.id, EndReason::Revoked)))
                .collect();
            evs.push(Event::UserRevoked {
                user: user.clone(),
                sessions: ended.iter().map(|(s, _)| s.id).collect(),
            });
            evs
        });
        Ok(count)
    }

    // ----------------------------------------------------------------------------
    // Rotation and ending

    /// Replaces the session's token with a fresh one, keeping its id, data and user
    /// (the session-fixation defence; call it at login and privilege changes). The new
    /// token exists before the old one is retired, and the old one keeps resolving to
    /// the session for [`Options::rotation_grace`], so parallel requests are not
    /// logged out. Returns the new token.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::TokenRetired`] if `token`
    /// is itself an old token in its grace period (it may be used, but not to mint a
    /// new token).
    pub fn rotate(&self, token: &Token) -> Result<Token> {
        self.rotate_with(token, None)
    }

    /// Like [`Store::rotate`], but to a token the caller chose (for a framework that
    /// picks its own session ids, as [`Store::create_with_token`]), and with no grace
    /// period: the old token stops resolving at once. Keeps the session's id, data,
    /// user and times; one atomic step, so a concurrent [`Store::revoke_user`] sees the
    /// session under one token or the other, never neither.
    ///
    /// # Errors
    /// [`Error::Exists`] if `new` already addresses a session (or an old token in its
    /// grace period), or is `token` itself; otherwise as [`Store::rotate`].
    pub fn rotate_to(&self, token: &Token, new: &Token) -> Result<()> {
        self.rotate_with(token, Some(new)).map(|_| ())
    }

    /// [`Store::rotate`] to a fresh token with the configured grace, or to `given` with
    /// none.
    fn rotate_with(&self, token: &Token, given: Option<&Token>) -> Result<Token> {
        let inner = &*self.inner;
        let old = token.hash().0;
        loop {
            let fresh = match given {
                Some(t) => t.clone(),
                None => token::fresh_token(|b| inner.entropy.fill(b))?,
            };
            let new = fresh.hash().0;
            if new == old {
                if given.is_some() {
                    return Err(Error::Exists { what: "token" });
                }
                continue;
            }
            let (i, j) = (inner.shard_ix(old), inner.shard_ix(new));
            let (mut a, mut b) = inner.lock_pair(i, j);
            let now = inner.now();
            let live = match a.get(old) {
                Some(SlotRef::Live(s)) => s.deadline(inner.auth_ms) > now,
                Some(SlotRef::Alias(al)) if al.until > now => {
                    drop(b);
                    drop(a);
                    // An old token in its grace period: refuse to mint from it, but
                    // say "ended" if its session is gone.
                    return Err(match inner.read_live(old, |_, _| ()) {
                        Some(()) => Error::TokenRetired,
                        None => Error::Ended,
                    });
                }
                _ => false,
            };
            if !live {
                return Err(Error::Ended);
            }
            let collides = match b.as_deref() {
                Some(other) => other.occupied(new),
                None => a.occupied(new),
            };
            if collides {
                if given.is_some() {
                    return Err(Error::Exists { what: "token" });
                }
                continue; // the new hash's low half is taken: draw again
            }
            let Some(id) = a.live(old).map(|s| s.id) else {
                return Err(Error::Ended);
            };
            // Held until the session has moved and the id map says where: a lookup
            // holding the gate exclusively (one that lost many races to rotations of
            // this session) sees it stay put. Never waited for with shards held (it
            // comes before them in the lock order): let that lookup finish, then
            // start over.
            let gate = inner.gate(id);
            let Some(moving) = gate.try_read() else {
                drop(b);
                drop(a);
                drop(gate.read());
                continue;
            };
            let grace_ms = if given.is_some() { 0 } else { inner.grace_ms };
            let grace_until = now.saturating_add(Duration::from_millis(grace_ms));
            let ticket = inner.journal.append(|| Change::Rotate {
                id,
                old: TokenHash(old),
                new: TokenHash(new),
                grace_until,
                at: now,
            })?;
            let Some(Slot::Live(state)) = a.remove(old) else {
                return Err(Error::Ended);
            };
            a.wheel.cancel(state.timer, old as u64);
            let instances = a.instances.remove(&old);
            if grace_ms > 0 {
                a.insert_alias(old, id, grace_until);
            }
            state.mark_seen(now);
            let deadline = state.deadline(inner.auth_ms);
            let target = match b.as_deref_mut() {
                Some(other) => other,
                None => &mut *a,
            };
            target.insert_live(new, state, deadline);
            if let Some(inst) = instances {
                target.instances.insert(new, inst);
            }
            inner.ids_insert(id, new);
            drop(b);
            drop(a);
            drop(moving);
            inner.wait(ticket)?;
            inner.emit_if(|| vec![Event::Rotated { session: id }]);
            return Ok(fresh);
        }
    }

    /// The options the store was opened with (for the integrations, e.g. to see
    /// whether writes wait for an fsync).
    #[cfg(any(
        feature = "tower-sessions",
        feature = "actix-session",
        feature = "redis"
    ))]
    pub(crate) fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Ends the session (a logout). Final: its token, and any old token in its grace
    /// period, stop resolving, and no later write brings it back. Returns false if it
    /// was not live.
    ///
    /// # Errors
    /// Only if the change cannot be made durable.
    pub fn end(&self, token: &Token) -> Result<bool> {
        let inner = &*self.inner;
        let removed = inner.with_live(token.hash().0, |shard, key, _| {
            let id = match shard.live(key) {
                Some(s) => s.id,
                None => return Err(Error::Ended),
            };
            let t = inner.journal.append(|| Change::End {
                id,
                reason: EndReason::Ended,
            })?;
            let Some(state) = shard.remove_live(key, id) else {
                return Err(Error::Ended);
            };
            inner.ids_remove(id);
            Ok(Some((state, t)))
        });
        match removed {
            Ok((state, ticket)) => {
                inner.finish_end(&state, ticket, EndReason::Ended)?;
                Ok(true)
            }
            Err(Error::Ended) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends the session with public id `id` (e.g. "sign out this device"). Returns false
    /// if it was not live.
    ///
    /// # Errors
    /// Only if the change cannot be made durable.
    pub fn end_by_id(&self, id: SessionId) -> Result<bool> {
        let inner = &*self.inner;
        match inner.remove_by_id(id, EndReason::Ended)? {
            Some((state, ticket)) => {
                // An expired session the reaper had not reached yet is removed too, but
                // it was not live, so it is reported as expired.
                let live = inner.is_live(&state);
                let reason = if live {
                    EndReason::Ended
                } else {
                    EndReason::Expired
                };
                inner.finish_end(&state, ticket, reason)?;
                Ok(live)
            }
            None => Ok(false),
        }
    }

    /// Ends every session. Returns how many there were.
    ///
    /// # Errors
    /// Only if the change cannot be made durable.
    pub fn clear(&self) -> Result<usize> {
        let inner = &*self.inner;
        let mut users = inner.users.lock_all();
        let mut shards: Vec<RwLockWriteGuard<'_, Shard>> =
            inner.shards.iter().map(|s| s.write()).collect();
        let mut ids: Vec<_> = inner.ids.iter().map(|s| s.write()).collect();
        let now = inner.now();
        let ticket = inner.journal.append(|| Change::Clear)?;
        let mut count = 0;
        for shard in &mut shards {
            count += shard.live_count();
            **shard = Shard::new(now);
        }
        for m in &mut ids {
            m.clear();
        }
        for u in &mut users {
            u.clear();
        }
        drop(ids);
        drop(shards);
        drop(users);
        inner.wait(ticket)?;
        inner.emit_if(|| vec![Event::Cleared { sessions: count }]);
        Ok(count)
    }

    // ----------------------------------------------------------------------------
    // Instances

    /// Opens an instance (a tab or window) inside the session and returns its id.
    /// Instances are not durable.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn open_instance(&self, token: &Token) -> Result<InstanceId> {
        let inner = &*self.inner;
        inner.with_live(token.hash().0, |shard, key, now| {
            let s = shard.live_mut(key).ok_or(Error::Ended)?;
            // Opening a tab is activity: recorded as a (coalesced) touch.
            let id = s.id;
            let _coalesced = inner.journal.append(|| Change::Touch { id, at: now })?;
            s.mark_seen(now);
            let inst = shard.instances.entry(key).or_default();
            let id = InstanceId(inst.next);
            inst.next = inst.next.wrapping_add(1);
            inst.open.push(id);
            Ok(Some(id))
        })
    }

    /// The open instances of the session.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn instances(&self, token: &Token) -> Result<Vec<InstanceId>> {
        self.inner.with_live(token.hash().0, |shard, key, _| {
            Ok(Some(
                shard
                    .instances
                    .get(&key)
                    .map(|i| i.open.clone())
                    .unwrap_or_default(),
            ))
        })
    }

    /// Ends one instance, keeping the session and its other instances. If the session's
    /// idle timeout is disabled and this was its last instance, the session ends too.
    /// Returns false if there was no such instance.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn end_instance(&self, token: &Token, instance: InstanceId) -> Result<bool> {
        let inner = &*self.inner;
        let (id, found, ended) = inner.with_live(token.hash().0, |shard, key, _| {
            let (id, idle_ms) = match shard.live(key) {
                Some(s) => (s.id, s.idle_ms),
                None => return Err(Error::Ended),
            };
            let Some(inst) = shard.instances.get_mut(&key) else {
                return Ok(Some((id, false, None)));
            };
            let Some(pos) = inst.open.iter().position(|i| *i == instance) else {
                return Ok(Some((id, false, None)));
            };
            inst.open.remove(pos);
            if !inst.open.is_empty() || idle_ms != 0 {
                return Ok(Some((id, true, None)));
            }
            let t = inner.journal.append(|| Change::End {
                id,
                reason: EndReason::LastInstanceEnded,
            })?;
            let Some(state) = shard.remove_live(key, id) else {
                return Err(Error::Ended);
            };
            inner.ids_remove(id);
            Ok(Some((id, true, Some((state, t)))))
        })?;
        if found {
            inner.emit_if(|| {
                vec![Event::InstanceEnded {
                    session: id,
                    instance,
                }]
            });
        }
        if let Some((state, ticket)) = ended {
            inner.finish_end(&state, ticket, EndReason::LastInstanceEnded)?;
        }
        Ok(found)
    }

    // ----------------------------------------------------------------------------
    // Observing

    /// Subscribes to session events. Each subscriber has its own buffer of
    /// [`Options::event_capacity`] events; when it is full, further events to that
    /// subscriber are dropped (and counted), so a slow subscriber never blocks the
    /// store. Drop the receiver to unsubscribe.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Counters describing the store.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let mut st = Stats {
            users: inner.users.user_count(),
            events_dropped: inner.events.dropped(),
            ..Stats::default()
        };
        for shard in inner.shards.iter() {
            let s = shard.read();
            let live = s.live_count();
            st.sessions += live;
            st.aliases += s.len() - live;
            st.timers += s.wheel.len();
        }
        st.backend = inner.report.lock().backend;
        if let Journal::Disk(d) = &inner.journal {
            let c = d.counters();
            st.disk_bytes = c.disk_bytes;
            st.log_batches = c.batches;
            st.log_records = c.records;
            st.log_syncs = c.syncs;
            let log = inner.compaction.lock();
            st.compactions = log.count;
            st.last_compaction.clone_from(&log.last);
            st.last_compaction_error.clone_from(&log.last_error);
            drop(log);
            st.estimated_live_bytes = inner.estimated_live_bytes(st.sessions);
            if st.disk_bytes > 0 {
                st.dead_ratio =
                    (1.0 - st.estimated_live_bytes as f64 / st.disk_bytes as f64).clamp(0.0, 1.0);
            }
        }
        st
    }

    /// What recovery found when the store was opened: records replayed, bytes cut off
    /// a torn tail, damage skipped in salvage mode, sessions live, time taken.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.report.lock().clone()
    }

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

    /// Number of sessions in the index (expired ones not yet reaped included).
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.read().live_count())
            .sum()
    }

    /// True when the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks that the index, the id map, the user index and the timing wheels agree,
    /// taking every lock for a consistent view (so not for a hot path). Fuzz targets and
    /// property tests call it after every step.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] describing the first disagreement found.
    pub fn verify(&self) -> Result<()> {
        self.inner.verify()
    }
}

impl Snapshot for Inner {
    fn each_image(&self, f: &mut dyn FnMut(&Image) -> Result<()>) -> Result<()> {
        for ids in self.ids.iter() {
            let batch: Vec<SessionId> = ids.read().keys().copied().collect();
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Error::io(
                    "compacting",
                    std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "the store is closing; the old log stays in use",
                    ),
                ));
            }
            let mut images = Vec::with_capacity(IMAGES_AT_ONCE);
            for ids in batch.chunks(IMAGES_AT_ONCE) {
                // Built under the shards' read locks, written after they are released.
                self.images_of(ids, &mut images);
                for img in images.drain(..) {
                    f(&img)?;
                }
            }
        }
        Ok(())
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
}

impl Inner {
    /// Puts a new session into the index, the id map, the user index, the wheel and the
    /// journal: what create, create-with-token and import share. `build` makes the
    /// session at `now` for the (canonical) user. A fresh key retries with new tokens on
    /// a collision; a given key is [`Error::Exists`]. Under the user's lock, the user's
    /// session limit is enforced first. Returns the token when the key was fresh.
    fn admit(
        &self,
        id: SessionId,
        user: Option<&str>,
        key: Key,
        as_image: bool,
        mut build: impl FnMut(Timestamp, &Option<UserId>) -> Box<SessionState>,
    ) -> Result<(Option<Token>, Session)> {
        let mut events = Vec::new();
        let mut tickets = Vec::new();
        let mut guards = user.map(|u| self.users.lock_str(u));
        // Sessions of one user share one allocation of its id.
        let user = match (guards.as_mut(), user) {
            (Some(g), Some(u)) => Some(g.canonical_str(u)),
            _ => None,
        };
        if let Key::Given(k) = key {
            // Checked before the limit can end anything for this session's sake.
            self.check_vacant(id, k)?;
        }
        if let (Some(g), Some(u)) = (guards.as_mut(), user.as_ref()) {
            self.enforce_limit(g, u, None, &mut events, &mut tickets)?;
        }
        let (given, mut fresh) = match key {
            Key::Fresh(t) => (None, Some(t)),
            Key::Given(k) => (Some(k), None),
        };
        let (token, session) = loop {
            let (token, key) = match (given, fresh.take()) {
                (Some(k), _) => (None, k),
                (None, Some(t)) => {
                    let k = t.hash().0;
                    (Some(t), k)
                }
                (None, None) => {
                    let t = token::fresh_token(|b| self.entropy.fill(b))?;
                    let k = t.hash().0;
                    (Some(t), k)
                }
            };
            let mut shard = self.shard(key).write();
            // One probe both checks for a collision and keeps the place.
            let inserted = shard.insert_vacant(key, || {
                let now = self.now();
                let state = build(now, &user);
                let deadline = state.deadline(self.auth_ms);
                // The id goes in first, while the shard lock is held: a compaction
                // snapshot walks the id map, and must not miss a session whose Create
                // record precedes its seal (it then waits on this shard's lock).
                if !self.ids_try_insert(id, key) {
                    return Err(Error::Exists { what: "session id" });
                }
                let appended = self.journal.append(|| {
                    if as_image {
                        Change::Import(Box::new(Image {
                            id,
                            hash: TokenHash(key),
                            user: state.user.clone(),
                            label: state.label.clone(),
                            created: state.created,
                            authenticated: state.authenticated.get(),
                            absolute: state.absolute,
                            idle_ms: state.idle_ms,
                            last_seen: state.last_seen(),
                            version: state.version,
                            data: state.data.clone(),
                        }))
                    } else {
                        Change::Create {
                            id,
                            hash: TokenHash(key),
                            user: state.user.clone(),
                            label: state.label.clone(),
                            created: state.created,
                            absolute: state.absolute,
                            idle_ms: state.idle_ms,
                            data: state.data.clone(),
                        }
                    }
                });
                match appended {
                    Ok(t) => tickets.push(t),
                    Err(e) => {
                        self.ids_remove(id);
                        return Err(e);
                    }
                }
                let session = state.snapshot(self.auth_ms);
                Ok((state, deadline, session))
            })?;
            drop(shard);
            let session = match inserted {
                Some(session) => session,
                None if token.is_some() => continue,
                None => return Err(Error::Exists { what: "token" }),
            };
            break (token, session);
        };
        if let (Some(g), Some(u)) = (guards.as_mut(), user.as_ref()) {
            g.add(u, id);
        }
        drop(guards);
        self.wait_all(&tickets)?;
        if self.events.active() {
            events.push(Event::Created { session: id, user });
            self.emit(events);
        }
        Ok((token, session))
    }

    /// [`Error::Exists`] if `key` addresses anything (a session or an alias) or `id` is
    /// a session's. A check ahead of the authoritative one under the locks.
    fn check_vacant(&self, id: SessionId, key: u128) -> Result<()> {
        if self.shard(key).read().occupied(key) {
            return Err(Error::Exists { what: "token" });
        }
        if self.hash_of(id).is_some() {
            return Err(Error::Exists { what: "session id" });
        }
        Ok(())
    }

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

    /// The image of the live session `id`, as compaction writes it.
    fn image_of(&self, id: SessionId) -> Option<Image> {
        // Found however often it is rotated meanwhile (see `lock_by_id`): a compaction
        // must not drop a live session.
        let (shard, key) = self.lock_by_id(id, |l| l.read())?;
        let s = shard.live(key)?;
        if s.deadline(self.auth_ms) <= self.now() {
            return None;
        }
        Some(image(key, s))
    }

    /// Appends the images of the live sessions among `ids` to `out`, a chunk at a time
    /// (see [`Inner::read_chunk`]); a session moved meanwhile is looked up again by
    /// [`Inner::image_of`], which does not give up on one that keeps moving.
    fn images_of(&self, ids: &[SessionId], out: &mut Vec<Image>) {
        let mut moved = Vec::new();
        for chunk in ids.chunks(READ_CHUNK) {
            self.read_chunk(chunk, |key, s| out.push(image(key, s)), &mut moved);
        }
        out.extend(moved.into_iter().filter_map(|id| self.image_of(id)));
    }

    /// Average encoded size of a session image, from a sample (for stats before the
    /// first compaction).
    fn sample_image_bytes(&self) -> f64 {
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
            if let Some(img) = self.image_of(id) {
                crate::backend::log::record::encode_image(&mut buf, &img);
                n += 1;
            }
        }
        if n == 0 {
            0.0
        } else {
            buf.len() as f64 / n as f64
        }
    }

    /// Estimated size of a base holding `sessions` sessions: bytes per session in the
    /// last base, or in a sample of images before the first compaction.
    fn estimated_live_bytes(&self, sessions: usize) -> u64 {
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
        let sessions = self.ids.iter().map(|m| m.read().len()).sum();
        let live = self.estimated_live_bytes(sessions);
        if (d.counters().disk_bytes as f64) < self.opts.compact_growth * live as f64 {
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
                log.last = Some((self.now(), st.clone()));
                log.last_error = None;
                if st.sessions > 0 && st.base_bytes > 0 {
                    log.bytes_per_session = Some(st.base_bytes as f64 / st.sessions as f64);
                }
            }
            Err(e) => log.last_error = Some(e.to_string()),
        }
        result
    }

    /// Returns once the change behind `ticket` is as durable as the store's mode
    /// promises. Call with no lock held. Inside [`Store::deferred`] it only records the
    /// ticket for the caller's [`Commit`] ([`commit::defer_wait`]).
    fn wait(&self, ticket: Ticket) -> Result<()> {
        if matches!(self.journal, Journal::Disk(_))
            && commit::defer_wait(self.journal.key(), ticket)
        {
            return Ok(());
        }
        self.journal.wait(ticket)
    }

    /// Delivers `events` to every subscriber without blocking. Call with no lock held.
    /// Inside [`Store::deferred`] they are held back for its [`Commit`]
    /// ([`commit::defer_events`]).
    fn emit(&self, events: Vec<Event>) {
        if events.is_empty() || !self.events.active() {
            return;
        }
        if let Some(events) = commit::defer_events(self.events.key(), events) {
            self.events.deliver(events);
        }
    }

    /// Builds and emits events only when someone is subscribed.
    pub(crate) fn emit_if(&self, make: impl FnOnce() -> Vec<Event>) {
        if self.events.active() {
            self.emit(make());
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.opts.clock.now()
    }

    fn is_live(&self, state: &SessionState) -> bool {
        state.deadline(self.auth_ms) > self.now()
    }

    fn shard_ix(&self, key: u128) -> usize {
        shard_of(key as u64, self.mask)
    }

    fn shard(&self, key: u128) -> &RwLock<Shard> {
        &self.shards[self.shard_ix(key)]
    }

    fn id_shard(&self, id: SessionId) -> &RwLock<IdMap> {
        &self.ids[id_ix(id, self.mask)]
    }

    /// Where the id map says the session `id` is: its place in a shard (the low half of
    /// its current token hash).
    fn place_of(&self, id: SessionId) -> Option<u64> {
        self.id_shard(id).read().get(&id).copied()
    }

    /// The current token hash of the session `id` (from the id map, completed by its
    /// shard), if it is in the index.
    fn hash_of(&self, id: SessionId) -> Option<u128> {
        let lo = self.id_shard(id).read().get(&id).copied()?;
        self.shards[shard_of(lo, self.mask)].read().hash_at(lo)
    }

    fn ids_insert(&self, id: SessionId, key: u128) {
        self.id_shard(id).write().insert(id, key as u64);
    }

    /// Maps `id` to `key` unless `id` is already mapped; false then.
    fn ids_try_insert(&self, id: SessionId, key: u128) -> bool {
        match self.id_shard(id).write().entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(key as u64);
                true
            }
        }
    }

    fn ids_remove(&self, id: SessionId) {
        self.id_shard(id).write().remove(&id);
    }

    /// Locks shards `i` and `j` for writing in index order; the second guard is `None`
    /// when they are the same shard (then the first guards both).
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

    fn wait_all(&self, tickets: &[Ticket]) -> Result<()> {
        // Tickets are handed out in log order: the last one covers the rest.
        match tickets.iter().max() {
            Some(&t) => self.wait(t),
            None => Ok(()),
        }
    }

    /// Runs `f` on the live session `hash` resolves to (following a rotation alias)
    /// under its shard's read lock. `None` if there is none, or it is past its deadline.
    fn read_live<R>(&self, hash: u128, f: impl FnOnce(&SessionState, Timestamp) -> R) -> Option<R> {
        let shard = self.shard(hash).read();
        let now = self.now();
        let id = match shard.get(hash) {
            Some(SlotRef::Live(s)) => {
                if s.deadline(self.auth_ms) <= now {
                    return None;
                }
                return Some(f(s, now));
            }
            Some(SlotRef::Alias(a)) if a.until > now => a.session,
            _ => return None,
        };
        drop(shard);
        // An old token inside its grace: the session, wherever rotations moved it.
        let (shard, key) = self.lock_by_id(id, |l| l.read())?;
        let now = self.now();
        let s = shard.live(key)?;
        if s.deadline(self.auth_ms) <= now {
            return None;
        }
        Some(f(s, now))
    }

    /// Calls `f` with each of the sessions `ids` that is live, as [`Inner::read_by_id`]
    /// would one by one, but a chunk at a time (see [`Inner::read_chunk`]). A session
    /// moved by a concurrent rotation meanwhile is looked up again on its own.
    fn read_batch(&self, ids: &[SessionId], mut f: impl FnMut(&SessionState)) {
        let mut moved = Vec::new();
        for chunk in ids.chunks(READ_CHUNK) {
            self.read_chunk(chunk, |_, s| f(s), &mut moved);
        }
        for id in moved {
            self.read_by_id(id, &mut f);
        }
    }

    /// Calls `f` with the token hash and state of each live session of `chunk` (at most
    /// [`READ_CHUNK`] ids), under its shard's read lock: each id shard the chunk
    /// touches is read-locked once and all the chunk's places looked up, then each
    /// session shard likewise, so the chunk's cache misses overlap instead of queueing
    /// one session behind another. Ids whose session was not at the place the id map
    /// gave (moved by a concurrent rotation) go to `moved`, for the caller to look up
    /// on its own terms; ended and expired sessions are skipped.
    fn read_chunk(
        &self,
        chunk: &[SessionId],
        mut f: impl FnMut(u128, &SessionState),
        moved: &mut Vec<SessionId>,
    ) {
        let mask = self.mask;
        let now = self.now();
        let mut places = [None::<u64>; READ_CHUNK];
        {
            let mut buf = [0usize; READ_CHUNK];
            let id_shards = sorted_unique(&mut buf, chunk.iter().map(|&id| id_ix(id, mask)));
            let held: [_; READ_CHUNK] =
                std::array::from_fn(|i| id_shards.get(i).map(|&s| self.ids[s].read()));
            for (place, &id) in places.iter_mut().zip(chunk) {
                let map = held[position(id_shards, id_ix(id, mask))].as_ref();
                *place = map.and_then(|m| m.get(&id).copied());
            }
        }
        let places = &places[..chunk.len()];
        let mut buf = [0usize; READ_CHUNK];
        let shards = sorted_unique(
            &mut buf,
            places.iter().flatten().map(|&lo| shard_of(lo, mask)),
        );
        let held: [_; READ_CHUNK] =
            std::array::from_fn(|i| shards.get(i).map(|&s| self.shards[s].read()));
        for (&place, &id) in places.iter().zip(chunk) {
            // Not in the id map: ended.
            let Some(lo) = place else { continue };
            let shard = held[position(shards, shard_of(lo, mask))].as_ref();
            match shard.and_then(|m| m.live_at(lo)) {
                Some((key, s)) if s.id == id => {
                    if s.deadline(self.auth_ms) > now {
                        f(key, s);
                    }
                }
                _ => moved.push(id),
            }
        }
    }

    /// Runs `f` on the live session with public id `id` under its shard's read lock.
    fn read_by_id<R>(&self, id: SessionId, f: impl FnOnce(&SessionState) -> R) -> Option<R> {
        let (shard, key) = self.lock_by_id(id, |l| l.read())?;
        let now = self.now();
        let s = shard.live(key)?;
        (s.deadline(self.auth_ms) > now).then(|| f(s))
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
    fn gate(&self, id: SessionId) -> &RwLock<()> {
        &self.gates[((id.as_u128() >> 64) as usize) & (GATES - 1)]
    }

    /// Runs `f` under the write lock of the shard holding the live session `hash`
    /// resolves to; `f` gets the shard, the session's key and the time. `f` returning
    /// `Ok(None)` means "the session changed under me": `with_live` looks again.
    fn with_live<R>(
        &self,
        hash: u128,
        mut f: impl FnMut(&mut Shard, u128, Timestamp) -> Attempt<R>,
    ) -> Result<R> {
        loop {
            let mut shard = self.shard(hash).write();
            let mut now = self.now();
            let mut key = hash;
            match shard.get(hash) {
                Some(SlotRef::Live(s)) => {
                    if s.deadline(self.auth_ms) <= now {
                        return Err(Error::Ended);
                    }
                }
                Some(SlotRef::Alias(a)) if a.until > now => {
                    // An old token inside its grace: the session, wherever rotations
                    // moved it.
                    let id = a.session;
                    drop(shard);
                    (shard, key) = self.lock_by_id(id, |l| l.write()).ok_or(Error::Ended)?;
                    now = self.now();
                    if shard
                        .live(key)
                        .is_none_or(|s| s.deadline(self.auth_ms) <= now)
                    {
                        return Err(Error::Ended);
                    }
                }
                _ => return Err(Error::Ended),
            }
            if let Some(r) = f(&mut shard, key, now)? {
                return Ok(r);
            }
        }
    }

    /// Replaces the data of the session `hash` resolves to with what `change` makes of
    /// it; with `expected`, only if the version matches. Returns the new version.
    fn change_data(
        &self,
        hash: u128,
        expected: Option<u64>,
        mut change: impl FnMut(&mut SessionData) -> Result<bool>,
    ) -> Result<u64> {
        let (version, ticket) = self.with_live(hash, |shard, key, now| {
            let s = shard.live_mut(key).ok_or(Error::Ended)?;
            if let Some(expected) = expected
                && s.version != expected
            {
                return Err(Error::VersionConflict {
                    expected,
                    actual: s.version,
                });
            }
            let mut data = s.data.clone();
            if !change(&mut data)? {
                return Ok(Some((s.version, None)));
            }
            if data.encoded_len() > self.opts.limits.max_data_bytes {
                return Err(Error::TooLarge {
                    what: "session data",
                    len: data.encoded_len(),
                    max: self.opts.limits.max_data_bytes,
                });
            }
            let (id, version) = (s.id, next_version(s.version)?);
            let t = self.journal.append(|| Change::Data {
                id,
                version,
                at: now,
                data: data.clone(),
            })?;
            s.data = data;
            s.version = version;
            s.mark_seen(now);
            Ok(Some((version, Some(t))))
        })?;
        if let Some(t) = ticket {
            self.wait(t)?;
        }
        Ok(version)
    }

    fn check_entry(&self, key: &str, value_len: usize) -> Result<()> {
        crate::model::session::check_entry(key, value_len, &self.opts.limits)
    }

    fn check_data(&self, data: &SessionData) -> Result<()> {
        crate::model::session::check_data(data, &self.opts.limits)
    }

    /// Removes the session with public id `id`, wherever rotation has moved it, and
    /// logs its end. Does not touch the user index (the caller owns that).
    fn remove_by_id(
        &self,
        id: SessionId,
        reason: EndReason,
    ) -> Result<Option<(Box<SessionState>, Ticket)>> {
        // Found however often a client rotates it meanwhile (see `lock_by_id`): a
        // revoke must not leave a session behind.
        let Some((mut shard, key)) = self.lock_by_id(id, |l| l.write()) else {
            return Ok(None);
        };
        let t = self.journal.append(|| Change::End { id, reason })?;
        let Some(state) = shard.remove_live(key, id) else {
            return Err(Error::Ended);
        };
        self.ids_remove(id);
        Ok(Some((state, t)))
    }

    /// Removes the sessions `ids` and logs their ends, as [`Inner::remove_by_id`] does
    /// one at a time, but in batches whose memory traffic overlaps: a revoke's sessions
    /// sit in unrelated cache lines across the id map, the shards and the wheels, and
    /// one by one each lookup waits out its cache misses behind a lock acquisition
    /// (a full barrier). Here each step takes all the locks it needs first (ascending,
    /// per the lock order), then touches every session's memory, then changes it.
    /// Sessions that moved meanwhile (a concurrent rotation) go the one-by-one way.
    fn remove_batch(
        &self,
        ids: &[SessionId],
        reason: EndReason,
    ) -> Result<Vec<(Box<SessionState>, Ticket)>> {
        // A user's sessions are ended in chunks of up to BATCH, with the chunk's
        // bookkeeping in arrays on the stack: revoking a few sessions costs their cache
        // misses and little else, so nothing here allocates but the returned list.
        const BATCH: usize = 16;
        let mask = self.mask;
        let mut out = Vec::with_capacity(ids.len());
        let mut stragglers = Vec::new();
        for chunk in ids.chunks(BATCH) {
            // Where each session is now: its place in a shard, from the id shards. Each
            // session's lock is found once, as its position among the chunk's locks.
            let mut id_shards = [0usize; BATCH];
            let id_shards = sorted_unique(&mut id_shards, chunk.iter().map(|&id| id_ix(id, mask)));
            let id_pos: [usize; BATCH] = std::array::from_fn(|i| {
                chunk
                    .get(i)
                    .map_or(0, |&id| position(id_shards, id_ix(id, mask)))
            });
            let mut places = [None::<u64>; BATCH];
            {
                let held: [_; BATCH] =
                    std::array::from_fn(|i| id_shards.get(i).map(|&s| self.ids[s].read()));
                for ((place, &id), &p) in places.iter_mut().zip(chunk).zip(&id_pos) {
                    *place = held[p].as_ref().and_then(|m| m.get(&id).copied());
                }
            }
            let places = &places[..chunk.len()];
            let mut shards = [0usize; BATCH];
            let shards = sorted_unique(
                &mut shards,
                places.iter().flatten().map(|&lo| shard_of(lo, mask)),
            );
            let pos: [usize; BATCH] = std::array::from_fn(|i| {
                places
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or(0, |lo| position(shards, shard_of(lo, mask)))
            });
            let mut held: [_; BATCH] =
                std::array::from_fn(|i| shards.get(i).map(|&s| self.shards[s].write()));
            // Find each session at its place (still this id's?), and touch its timer and
            // data before changing anything, so their memory fetches overlap.
            let mut found = [None::<u128>; BATCH];
            let mut warm = 0u64;
            for (i, (&place, &id)) in places.iter().zip(chunk).enumerate() {
                let Some(lo) = place else { continue };
                if let Some(shard) = &held[pos[i]]
                    && let Some((key, s)) = shard.live_at(lo)
                    && s.id == id
                {
                    warm ^= shard.wheel.warm(s.timer);
                    warm ^= u64::from(s.data.as_bytes().first().copied().unwrap_or(0));
                    found[i] = Some(key);
                }
            }
            std::hint::black_box(warm);
            let mut removed = [false; BATCH];
            for (i, &id) in chunk.iter().enumerate() {
                // Not where the id map said (rotated meanwhile): looked up again below.
                let (Some(key), Some(shard)) = (found[i], held[pos[i]].as_mut()) else {
                    stragglers.push(id);
                    continue;
                };
                let t = self.journal.append(|| Change::End { id, reason })?;
                let Some(state) = shard.take_live(key) else {
                    return Err(Error::Ended);
                };
                removed[i] = true;
                out.push((state, t));
            }
            // Out of the id map too, each id shard locked once (session shards are
            // still held: that is the lock order).
            let mut id_held: [_; BATCH] =
                std::array::from_fn(|i| id_shards.get(i).map(|&s| self.ids[s].write()));
            for (i, &id) in chunk.iter().enumerate() {
                if removed[i]
                    && let Some(map) = &mut id_held[id_pos[i]]
                {
                    map.remove(&id);
                }
            }
        }
        for id in stragglers {
            if let Some(done) = self.remove_by_id(id, reason)? {
                out.push(done);
            }
        }
        Ok(out)
    }

    /// After a session was removed from the index: drop it from its user's list, wait
    /// for durability, tell subscribers.
    fn finish_end(&self, state: &SessionState, ticket: Ticket, reason: EndReason) -> Result<()> {
        if let Some(user) = &state.user {
            self.users.lock(user, None).remove(user, state.id);
        }
        self.wait(ticket)?;
        self.emit_if(|| {
            vec![Event::Ended {
                session: state.id,
                user: state.user.clone(),
                reason,
            }]
        });
        Ok(())
    }

    /// With `user`'s lock held: makes room for one more session under
    /// [`Options::max_sessions_per_user`], or refuses. `exclude` is a session already
    /// counted as the user's new one (a bind). Also prunes stale entries.
    fn enforce_limit(
        &self,
        guards: &mut UserGuards<'_>,
        user: &UserId,
        exclude: Option<SessionId>,
        events: &mut Vec<Event>,
        tickets: &mut Vec<Ticket>,
    ) -> Result<()> {
        let Some(max) = self.opts.max_sessions_per_user else {
            return Ok(());
        };
        let mut live: Vec<(Timestamp, SessionId)> = Vec::new();
        self.read_batch(&guards.sessions(user.as_str()), |s| {
            if Some(s.id) != exclude {
                live.push((s.created, s.id));
            }
        });
        if live.len() < max {
            return Ok(());
        }
        if self.opts.limit_policy == LimitPolicy::Refuse {
            return Err(Error::UserSessionLimit {
                user: user.to_string(),
                max,
            });
        }
        live.sort();
        for &(_, id) in &live[..live.len() + 1 - max] {
            if let Some((_, t)) = self.remove_by_id(id, EndReason::LimitExceeded)? {
                guards.remove(user, id);
                tickets.push(t);
                events.push(Event::Ended {
                    session: id,
                    user: Some(user.clone()),
                    reason: EndReason::LimitExceeded,
                });
            }
        }
        Ok(())
    }

    /// One pass of the reaper over every shard. Returns how many sessions expired.
    pub(crate) fn reap(&self) -> usize {
        let mut due = Vec::new();
        let mut expired: Vec<(SessionId, Option<UserId>)> = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let now = self.now();
            due.clear();
            shard.wheel.advance(now.0, &mut due);
            for &(lo, _) in &due {
                let shard = &mut *shard;
                let Some(key) = shard.hash_at(lo) else {
                    continue;
                };
                let expired_now = match shard.get(key) {
                    Some(SlotRef::Live(s)) => {
                        let deadline = s.deadline(self.auth_ms);
                        if deadline > now {
                            // Touched or extended since scheduled: re-arm at the real one.
                            shard.rearm(key, deadline);
                            continue;
                        }
                        true
                    }
                    Some(SlotRef::Alias(a)) => {
                        let until = a.until;
                        if until > now {
                            shard.rearm(key, until);
                        } else {
                            shard.remove(key);
                        }
                        false
                    }
                    None => false,
                };
                if !expired_now {
                    continue;
                }
                let Some(Slot::Live(s)) = shard.remove(key) else {
                    continue;
                };
                shard.instances.remove(&key);
                self.ids_remove(s.id);
                let _ = self.journal.append(|| Change::End {
                    id: s.id,
                    reason: EndReason::Expired,
                });
                expired.push((s.id, s.user.clone()));
            }
        }
        for (id, user) in &expired {
            if let Some(u) = user {
                self.users.lock(u, None).remove(u, *id);
            }
        }
        let n = expired.len();
        self.emit_if(|| {
            expired
                .into_iter()
                .map(|(session, user)| Event::Ended {
                    session,
                    user,
                    reason: EndReason::Expired,
                })
                .collect()
        });
        n
    }

    fn verify(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Inconsistent(msg));
        let users = self.users.lock_all();
        let shards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        let ids: Vec<_> = self.ids.iter().map(|s| s.read()).collect();
        let id_of = |id: SessionId| ids[id_ix(id, self.mask)].get(&id).copied();
        let mut live_by_user: std::collections::HashMap<UserId, Vec<SessionId>> =
            std::collections::HashMap::new();
        let mut live_total = 0usize;
        for (i, shard) in shards.iter().enumerate() {
            let mut timers: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
            for (key, deadline, _) in shard.wheel.iter() {
                if timers.insert(key, deadline).is_some() {
                    return bad(format!("shard {i}: two timers for one key"));
                }
            }
            for key in shard.instances.keys() {
                if shard.live(*key).is_none() {
                    return bad(format!(
                        "shard {i}: instances of a session that is not there"
                    ));
                }
            }
            if timers.len() != shard.len() {
                return bad(format!(
                    "shard {i}: {} timers for {} slots",
                    timers.len(),
                    shard.len()
                ));
            }
            for (key, slot) in shard.iter() {
                if self.shard_ix(key) != i {
                    return bad(format!("shard {i}: holds a key of another shard"));
                }
                match slot {
                    SlotRef::Live(s) => {
                        live_total += 1;
                        if id_of(s.id) != Some(key as u64) {
                            return bad(format!("session {} missing from the id map", s.id));
                        }
                        match shard.wheel.deadline(s.timer, key as u64) {
                            None => return bad(format!("session {} has no timer", s.id)),
                            Some(t) if t > s.deadline(self.auth_ms).0 => {
                                return bad(format!("session {} timer fires late", s.id));
                            }
                            Some(_) => {}
                        }
                        if let Some(u) = &s.user {
                            live_by_user.entry(u.clone()).or_default().push(s.id);
                        }
                        if s.data.encoded_len() > self.opts.limits.max_data_bytes {
                            return bad(format!("session {} data over the limit", s.id));
                        }
                    }
                    SlotRef::Alias(a) => {
                        if shard.wheel.deadline(a.timer, key as u64) != Some(a.until.0) {
                            return bad(format!("alias of {} has no timer", a.session));
                        }
                    }
                }
            }
        }
        let id_total: usize = ids.iter().map(|m| m.len()).sum();
        if id_total != live_total {
            return bad(format!(
                "id map has {id_total} entries for {live_total} sessions"
            ));
        }
        let mut listed = 0usize;
        for map in &users {
            for (user, list) in map.iter() {
                if list.is_empty() {
                    return bad(format!("user {user} has an empty list"));
                }
                let mut sorted = list.clone();
                sorted.sort();
                let mut want = live_by_user.get(user).cloned().unwrap_or_default();
                want.sort();
                if sorted != want {
                    return bad(format!(
                        "user {user}: index lists {} sessions, index holds {}",
                        sorted.len(),
                        want.len()
                    ));
                }
                listed += list.len();
            }
        }
        let owned: usize = live_by_user.values().map(Vec::len).sum();
        if listed != owned {
            return bad(format!(
                "{owned} sessions have users but the user index lists {listed}"
            ));
        }
        Ok(())
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

/// Where `item` is in `sorted` (which holds it).
/// The image of live session `s`, whose token hash is `key`.
fn image(key: u128, s: &SessionState) -> Image {
    Image {
        id: s.id,
        hash: TokenHash(key),
        user: s.user.clone(),
        label: s.label.clone(),
        created: s.created,
        authenticated: s.authenticated.get(),
        absolute: s.absolute,
        idle_ms: s.idle_ms,
        last_seen: s.last_seen(),
        version: s.version,
        data: s.data.clone(),
    }
}

/// Images a compaction or an export builds before writing them out.
const IMAGES_AT_ONCE: usize = 256;

/// Sessions looked up together by [`Inner::read_chunk`].
const READ_CHUNK: usize = 16;

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

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
