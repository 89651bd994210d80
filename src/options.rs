//! [`Options`]: store-wide defaults and limits, checked once when a store opens.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::error::{Error, Result};
use crate::util::metrics::StoreLabel;
use crate::util::vfs::{FileSystem, OsFs};

/// The shortest positive duration a duration option takes: deadlines are whole
/// milliseconds, so anything shorter would silently mean zero.
const MIN_DURATION: Duration = Duration::from_millis(1);
/// The most index shards.
const MAX_SHARDS: usize = 1 << 16;
/// The largest per-subscriber event buffer. A subscriber's channel (crossbeam's
/// `bounded`) allocates every slot when it subscribes, 48 bytes an event: 2^20 events
/// is 48 MiB per subscriber, up front. A subscriber a million events behind is served
/// better by dropping and counting ([`crate::Stats::events_dropped`]) than by more.
const MAX_EVENT_CAPACITY: usize = 1 << 20;
/// The longest `Buffered` fsync interval: beyond a day, "bounded loss" means nothing.
const MAX_FLUSH_EVERY: Duration = Duration::from_secs(86_400);
/// The smallest byte budget.
const MIN_BUDGET_BYTES: u64 = 1024;
/// The smallest segment.
const MIN_SEGMENT_BYTES: u64 = 4096;
/// The largest `max_value_bytes` and `max_data_bytes`. A session's log record frames
/// its data, user id and label with a 32-bit length (under 4 GiB): 1 GiB of data plus
/// the largest user id and label stays far below it.
pub(crate) const MAX_DATA_LIMIT: usize = 1 << 30;
/// The largest `max_user_id_bytes` and `max_label_bytes`: names, not payloads (a user
/// id is part of every index entry and Redis key of its user).
const MAX_NAME_LIMIT: usize = 1 << 16;

/// The largest key a session's data map can hold (its encoding gives a key 16 bits of
/// length).
pub const MAX_KEY_BYTES: usize = u16::MAX as usize;
/// The largest value it can hold (32 bits of length).
pub const MAX_VALUE_BYTES: usize = u32::MAX as usize;

/// Which storage backend a durable store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// sessiondb's own log-structured store: checksummed segments, group commit,
    /// background compaction. The default (`docs/performance.md#the-log-against-sled` says
    /// why).
    #[default]
    Log,
    /// sled 0.34 (needs the cargo feature `sled`).
    Sled,
}

/// What happens when a user who already has the maximum number of sessions gets a new
/// one (see [`Options::max_sessions_per_user`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// The new session is refused with [`Error::UserSessionLimit`].
    Refuse,
    /// The user's oldest sessions are ended to make room (event reason
    /// [`crate::EndReason::LimitExceeded`]).
    #[default]
    EndOldest,
}

/// What a store at its [`Budget`] does with a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BudgetPolicy {
    /// The new session is refused with [`Error::Full`]; nothing changes.
    Refuse,
    /// The least recently seen *anonymous* sessions (no user bound) are ended to make
    /// room (event reason [`crate::EndReason::Evicted`]). A session with a user is never
    /// evicted: when only those are left, the new session is refused with
    /// [`Error::Full`]. The default.
    #[default]
    EvictAnonymous,
}

/// A limit on what the live sessions may cost in memory ([`Options::budget`]): their
/// number, their estimated resident bytes, or both, and what happens at the limit.
///
/// The count is exact and never passes `max_sessions`, however many threads create at
/// once. The bytes are an estimate ([`crate::Stats::resident_bytes`]: each session's
/// fixed cost, calibrated against measured resident memory, plus its data and label);
/// a new session is admitted only if the estimate stays within `max_bytes`, but a
/// write to a live session is never refused for the budget's sake, so sessions that
/// grow can take the estimate past it — new sessions then make room, or are refused,
/// until it is back under. Sessions expired but not yet reaped count (they hold
/// memory); sessions restored when a store opens are all kept, even past a budget that
/// was lowered meanwhile.
///
/// ```
/// use sessiondb::{Budget, Options};
///
/// // At most a million sessions and ~512 MiB; the least recently seen anonymous ones
/// // make room for new ones.
/// let opts = Options::default().budget(Some(Budget::sessions(1_000_000).max_bytes(512 << 20)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The most live sessions: `None` (no limit on the count), or at least 1.
    pub max_sessions: Option<u64>,
    /// The most estimated resident bytes: `None` (no limit on bytes), or at least 1 KiB.
    pub max_bytes: Option<u64>,
    /// What a create at the limit does. Default [`BudgetPolicy::EvictAnonymous`].
    pub policy: BudgetPolicy,
}

impl Budget {
    /// At most `max` live sessions (the default policy: evict anonymous sessions).
    pub fn sessions(max: u64) -> Budget {
        Budget {
            max_sessions: Some(max),
            max_bytes: None,
            policy: BudgetPolicy::default(),
        }
    }

    /// At most `max` estimated resident bytes of live sessions (the default policy).
    pub fn bytes(max: u64) -> Budget {
        Budget {
            max_sessions: None,
            max_bytes: Some(max),
            policy: BudgetPolicy::default(),
        }
    }

    /// Also at most `max` estimated resident bytes.
    pub fn max_bytes(mut self, max: u64) -> Budget {
        self.max_bytes = Some(max);
        self
    }

    /// Also at most `max` live sessions.
    pub fn max_sessions(mut self, max: u64) -> Budget {
        self.max_sessions = Some(max);
        self
    }

    /// What a create at the limit does.
    pub fn policy(mut self, policy: BudgetPolicy) -> Budget {
        self.policy = policy;
        self
    }
}

/// How durable an acknowledged write is, and what each mode can lose on a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// A write returns after its record is fsynced (shared with every write in the same
    /// batch: group commit). Loses nothing acknowledged, on a process crash or a power
    /// failure.
    Sync,
    /// A write returns once its record is queued, to be handed to the OS at once on a
    /// quiet store, or on a busy one within a few tenths of a millisecond or once 64
    /// records wait (one `write` for dozens of records rather than one each: by the
    /// writer thread, or by the writing thread that finds them waiting), and fsynced
    /// every `flush_every` by a thread of its own (so an fsync, however slow, never
    /// holds up the writing). At most 1,024 changes wait (past that, a write waits
    /// until they are written), so a process crash loses at most the last 2,048
    /// acknowledged changes — what had not yet been handed to the OS: none on a quiet
    /// store, microseconds' worth on a busy one (8 threads creating: at most 57 per
    /// crash, `tests/crash_buffered.rs`). A power failure loses at most the last
    /// `flush_every` (plus the fsync's own time), and nothing older.
    /// [`crate::Store::flush`] makes everything before it durable.
    Buffered {
        /// The fsync interval: from 1 ms to 1 day (outside it the store refuses to
        /// open, [`Error::InvalidOption`] `durability.flush_every`).
        flush_every: Duration,
    },
    /// No files at all: the store lives and dies with the process.
    Memory,
}

impl Default for Durability {
    fn default() -> Self {
        Durability::Buffered {
            flush_every: Duration::from_millis(100),
        }
    }
}

/// Size limits on what callers put into a session. Everything past a limit is refused
/// with [`Error::TooLarge`] before anything changes. A store refuses to open with a
/// limit outside its range ([`Error::InvalidOption`] `limits.<field>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest data key, in bytes: from 1 to 65,535 (what the data encoding holds).
    /// Default 256.
    pub max_key_bytes: usize,
    /// Largest single encoded value, in bytes: from 1 to 1 GiB. Default 64 KiB.
    pub max_value_bytes: usize,
    /// Largest encoded data map of one session, in bytes (each entry counts 6 bytes
    /// besides its key and value): from 1 to 1 GiB, so that a session's log record
    /// (its data, user id and label together) stays under the log's 4 GiB frame
    /// limit. Default 256 KiB.
    pub max_data_bytes: usize,
    /// Longest user id, in bytes: from 1 to 64 KiB. Default 256.
    pub max_user_id_bytes: usize,
    /// Longest device label, in bytes: from 0 (no labels) to 64 KiB. Default 256.
    pub max_label_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
            max_data_bytes: 256 * 1024,
            max_user_id_bytes: 256,
            max_label_bytes: 256,
        }
    }
}

/// How a store behaves. Build with [`Options::default`] and the setters; every setter
/// documents its default and its range. A store refuses to open with a value outside
/// the range: [`Error::InvalidOption`], naming the option and the range. Durations are
/// counted in whole milliseconds (rounded down); a deadline further away than the
/// clock can count ([`crate::Timestamp::MAX`]) is no deadline.
#[derive(Clone)]
pub struct Options {
    pub(crate) lifetime: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) auth_lifetime: Option<Duration>,
    pub(crate) touch_interval: Duration,
    pub(crate) rotation_grace: Duration,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) limit_policy: LimitPolicy,
    pub(crate) budget: Option<Budget>,
    pub(crate) trial_lifetime: Option<Duration>,
    pub(crate) limits: Limits,
    pub(crate) shards: usize,
    pub(crate) reaper_interval: Option<Duration>,
    pub(crate) event_capacity: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) durability: Durability,
    pub(crate) backend: BackendKind,
    pub(crate) salvage: bool,
    pub(crate) segment_bytes: u64,
    pub(crate) auto_compact: bool,
    pub(crate) compact_min_bytes: u64,
    pub(crate) compact_growth: f64,
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) deterministic: bool,
    pub(crate) levels: LevelLifetimes,
    pub(crate) address_privacy: AddressPrivacy,
    pub(crate) metrics_label: StoreLabel,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lifetime: Duration::from_secs(30 * 86_400),
            idle_timeout: Duration::from_secs(86_400),
            auth_lifetime: None,
            touch_interval: Duration::from_secs(60),
            rotation_grace: Duration::from_secs(5),
            max_sessions_per_user: None,
            limit_policy: LimitPolicy::EndOldest,
            budget: None,
            trial_lifetime: None,
            limits: Limits::default(),
            shards: 128,
            reaper_interval: Some(Duration::from_secs(1)),
            event_capacity: 4096,
            clock: Arc::new(SystemClock),
            durability: Durability::default(),
            backend: BackendKind::default(),
            salvage: false,
            segment_bytes: 64 << 20,
            auto_compact: true,
            compact_min_bytes: 16 << 20,
            compact_growth: 2.0,
            fs: Arc::new(OsFs),
            deterministic: false,
            levels: LevelLifetimes::default(),
            address_privacy: AddressPrivacy::default(),
            metrics_label: StoreLabel::default(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("lifetime", &self.lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("auth_lifetime", &self.auth_lifetime)
            .field("touch_interval", &self.touch_interval)
            .field("rotation_grace", &self.rotation_grace)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .field("limit_policy", &self.limit_policy)
            .field("budget", &self.budget)
            .field("trial_lifetime", &self.trial_lifetime)
            .field("limits", &self.limits)
            .field("shards", &self.shards)
            .field("reaper_interval", &self.reaper_interval)
            .field("event_capacity", &self.event_capacity)
            .field("durability", &self.durability)
            .field("backend", &self.backend)
            .field("salvage", &self.salvage)
            .field("segment_bytes", &self.segment_bytes)
            .field("auto_compact", &self.auto_compact)
            .field("compact_min_bytes", &self.compact_min_bytes)
            .field("compact_growth", &self.compact_growth)
            .field("file_system", &self.fs)
            .field("level_lifetimes", &self.levels)
            .field("address_privacy", &self.address_privacy)
            .field("metrics_label", &self.metrics_label.0)
            .field("deterministic", &self.deterministic)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Default absolute lifetime of a session, counted from its creation. From 1 ms to
    /// `Duration::MAX` (a lifetime past [`crate::Timestamp::MAX`] never ends; the Redis
    /// backend caps lifetimes at 100 years). Default 30 days. Override per session with
    /// [`crate::NewSession::lifetime`].
    pub fn lifetime(mut self, d: Duration) -> Self {
        self.lifetime = d;
        self
    }

    /// Default idle (sliding) timeout: a session not used for this long ends.
    /// `Duration::ZERO` disables it; otherwise from 1 ms to `Duration::MAX`. Default 24
    /// hours.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// If set, an authenticated session also ends this long after its user last
    /// authenticated ([`crate::Store::bind_user`]), like "3 months after last login".
    /// `None`, or from 1 ms to `Duration::MAX`. Default: not set.
    pub fn auth_lifetime(mut self, d: Option<Duration>) -> Self {
        self.auth_lifetime = d;
        self
    }

    /// A read ([`crate::Store::get`]) counts as activity, but re-arms the idle deadline
    /// at most once per this interval, so a busy session costs no write per request.
    /// The effective idle timeout is therefore between `idle_timeout - touch_interval`
    /// and `idle_timeout`. Any duration: zero makes every read count, and one longer
    /// than the clock can count (`Duration::MAX`) makes no read count (only writes and
    /// [`crate::Store::touch`] do). Default 60 seconds.
    pub fn touch_interval(mut self, d: Duration) -> Self {
        self.touch_interval = d;
        self
    }

    /// How long assurance level `level` lasts after the step that reached it
    /// ([`crate::SignIn::level`]): then the session falls back to the highest level
    /// whose factors still count (0 if none), and stays signed in. "Sudo mode": say
    /// level 2 lasts 15 minutes, and a sensitive action asks for
    /// [`crate::Session::level`] 2. Any duration (zero: the level never counts).
    /// Default: every level lasts as long as its session.
    pub fn level_lifetime(mut self, level: u8, d: Duration) -> Self {
        self.levels = self.levels.with(level, d);
        self
    }

    /// The value of the `store` label on every metric this store reports (cargo feature
    /// `metrics`), so an app with two stores tells them apart: 1 to 64 bytes of
    /// `A-Z a-z 0-9 _ - .`. Default `default`.
    pub fn metrics_label(mut self, name: impl Into<String>) -> Self {
        self.metrics_label = StoreLabel(name.into().into());
        self
    }

    /// How much of a client's address a session keeps ([`crate::Device::address`]).
    /// Default [`AddressPrivacy::Truncated`]: the /24 (IPv4) or /48 (IPv6) network.
    pub fn address_privacy(mut self, p: AddressPrivacy) -> Self {
        self.address_privacy = p;
        self
    }

    /// After [`crate::Store::rotate`], the old token keeps resolving to the session for
    /// this long, so parallel requests and other tabs are not logged out. Any duration:
    /// zero retires it at once, and it never outlives the session. Default 5 seconds.
    pub fn rotation_grace(mut self, d: Duration) -> Self {
        self.rotation_grace = d;
        self
    }

    /// At most this many live sessions per user, enforced atomically under the user's
    /// lock; `policy` says whether a new one is refused or the oldest ends. `None`
    /// (unlimited), or from 1 to `usize::MAX`. Default: unlimited.
    pub fn max_sessions_per_user(mut self, max: Option<usize>, policy: LimitPolicy) -> Self {
        self.max_sessions_per_user = max;
        self.limit_policy = policy;
        self
    }

    /// A limit on the live sessions' number and estimated memory, and what a create at
    /// the limit does ([`Budget`]). `None`: no limit, the default — an embedded store
    /// cannot know how much of the application's memory its sessions may take; a
    /// server that creates sessions for visitors it does not know should set one (see
    /// `docs/open-internet.md`). `Store::stats` shows the count and bytes either way.
    pub fn budget(mut self, budget: Option<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// If set, a new anonymous session (created without a user) is on trial: it ends
    /// this long after its creation unless it is used again first — read by a later
    /// [`crate::Store::get`] (which then always counts as activity), written, touched,
    /// rotated or logged in — and from then on lives its normal lifetime. A client
    /// that never sends its cookie back costs this long of memory, not a whole
    /// lifetime. Give a first request's data with [`crate::NewSession::data`]: a
    /// separate write right after the create is a second use. `None`, or from 1 ms to
    /// `Duration::MAX`. Default: not set.
    pub fn trial_lifetime(mut self, d: Option<Duration>) -> Self {
        self.trial_lifetime = d;
        self
    }

    /// Size limits on keys, values, data, user ids and labels; each field documents its
    /// range ([`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Number of index shards, a power of two from 1 to 65,536. More shards mean less
    /// contention between threads (and a little memory each). Default 128.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// How often the background reaper removes expired sessions. `None` runs no reaper
    /// thread: call [`crate::Store::reap_expired`] yourself (expired sessions are never
    /// returned either way). `None`, or from 1 ms to `Duration::MAX` (which never
    /// wakes). Default every second.
    pub fn reaper_interval(mut self, d: Option<Duration>) -> Self {
        self.reaper_interval = d;
        self
    }

    /// Events buffered per subscriber before further events to it are dropped (and
    /// counted in [`crate::Stats::events_dropped`]). From 1 to 2^20 (1,048,576): the
    /// buffer is allocated whole when a subscriber subscribes, about 48 bytes an event.
    /// Default 4096.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// The clock deadlines are measured by. Any clock, reading any time: at
    /// [`crate::Timestamp::MAX`] every deadline has passed. Default: the system clock.
    /// Tests use a [`crate::ManualClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How durable an acknowledged write is ([`Durability`]; `Buffered`'s `flush_every`
    /// from 1 ms to 1 day). Default: `Buffered`, fsync every 100 ms.
    /// [`crate::Store::in_memory`] always uses `Memory`.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// The storage backend of a store opened on a directory. [`BackendKind::Sled`] needs
    /// the cargo feature `sled` (without it, a store on a directory refuses to open).
    /// Default [`BackendKind::Log`].
    pub fn backend(mut self, b: BackendKind) -> Self {
        self.backend = b;
        self
    }

    /// On open, skip damaged records instead of failing with [`Error::Corrupt`], and
    /// list what was skipped in the [`crate::RecoveryReport`]. Default false: damage is
    /// an error, never silently dropped.
    pub fn salvage(mut self, on: bool) -> Self {
        self.salvage = on;
        self
    }

    /// Size at which the log starts a new segment file. From 4096 to `u64::MAX` (a
    /// segment that never fills is started anew only by a compaction). Default 64 MiB.
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n;
        self
    }

    /// Compact in the background when the log reaches `min_bytes` and `growth` times
    /// what a compaction would leave: the last compacted base, or the estimated size of
    /// the live sessions (`Stats::estimated_live_bytes`) if larger — so a log that is
    /// mostly live sessions, not history, is not rewritten for nothing, and rewriting
    /// costs O(1) per byte written, amortized. `auto = false` compacts only on
    /// [`crate::Store::compact`]. `min_bytes` takes any value (`u64::MAX`: never on its
    /// own); `growth` is a finite number from 1.0 to `f64::MAX`
    /// (`compaction.growth`). Default on, 16 MiB, 2.0. A larger `growth` trades disk,
    /// and the time to replay the log on open, for less rewriting (measured in
    /// `docs/performance.md`, "Measurements behind design decisions").
    pub fn compaction(mut self, auto: bool, min_bytes: u64, growth: f64) -> Self {
        self.auto_compact = auto;
        self.compact_min_bytes = min_bytes;
        self.compact_growth = growth;
        self
    }

    /// The file system the log backend and the directory lock use: the operating
    /// system's ([`crate::vfs::OsFs`], the default), a simulated disk that fails and
    /// crashes on demand ([`crate::vfs::SimFs`], for tests), or any
    /// [`crate::vfs::FileSystem`]. The sled backend does its own I/O and refuses any
    /// file system but the default (`backend`).
    pub fn file_system(mut self, fs: impl FileSystem) -> Self {
        self.fs = Arc::new(fs);
        self
    }

    /// A store that starts no thread of its own, so that what it does is a function
    /// of the calls made to it — for tests, simulations and fuzzers (off by default).
    /// The log is written on the calling thread: each operation's changes as one batch
    /// when it returns, under [`Durability::Sync`] with its fsync. Every 16th batch
    /// is a tick (the writer thread's, counted instead of timed): the coalesced
    /// touches go out, and under [`Durability::Buffered`] the log is fsynced, as it is
    /// at [`crate::Store::flush`] and at close. A full disk is tried again at the next
    /// write. No reaper runs (call [`crate::Store::reap_expired`]) and the log is
    /// never compacted on its own (call [`crate::Store::compact`]). Every guarantee
    /// holds as with the writer thread — the same code writes, syncs and answers — but
    /// threads writing at once take turns at the log instead of sharing its fsyncs.
    pub fn deterministic(mut self, on: bool) -> Self {
        self.deterministic = on;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(Error::InvalidOption {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.lifetime < MIN_DURATION {
            return bad("lifetime", "must be from 1 ms to Duration::MAX");
        }
        if !self.idle_timeout.is_zero() && self.idle_timeout < MIN_DURATION {
            return bad(
                "idle_timeout",
                "must be zero (no idle timeout) or from 1 ms to Duration::MAX",
            );
        }
        if self.auth_lifetime.is_some_and(|d| d < MIN_DURATION) {
            return bad(
                "auth_lifetime",
                "must be None or from 1 ms to Duration::MAX",
            );
        }
        if !self.shards.is_power_of_two() || self.shards > MAX_SHARDS {
            return bad("shards", "must be a power of two from 1 to 65536");
        }
        if self.reaper_interval.is_some_and(|d| d < MIN_DURATION) {
            return bad(
                "reaper_interval",
                "must be None or from 1 ms to Duration::MAX",
            );
        }
        if self.max_sessions_per_user == Some(0) {
            return bad(
                "max_sessions_per_user",
                "must be None or from 1 to usize::MAX",
            );
        }
        if let Some(b) = self.budget {
            if b.max_sessions.is_none() && b.max_bytes.is_none() {
                return bad("budget", "must limit max_sessions, max_bytes or both");
            }
            if b.max_sessions == Some(0) {
                return bad("budget.max_sessions", "must be None or from 1 to u64::MAX");
            }
            if b.max_bytes.is_some_and(|n| n < MIN_BUDGET_BYTES) {
                return bad(
                    "budget.max_bytes",
                    "must be None or from 1024 to u64::MAX (a session alone is estimated \
                     at a few hundred bytes)",
                );
            }
        }
        if self.trial_lifetime.is_some_and(|d| d < MIN_DURATION) {
            return bad(
                "trial_lifetime",
                "must be None or from 1 ms to Duration::MAX",
            );
        }
        if !(1..=MAX_EVENT_CAPACITY).contains(&self.event_capacity) {
            return bad("event_capacity", "must be from 1 to 1048576 (2^20)");
        }
        if let Durability::Buffered { flush_every } = self.durability
            && !(MIN_DURATION..=MAX_FLUSH_EVERY).contains(&flush_every)
        {
            return bad(
                "durability.flush_every",
                "Buffered flush_every must be from 1 ms to 1 day",
            );
        }
        if self.backend == BackendKind::Sled && !self.fs.is_os() {
            return bad(
                "backend",
                "sled does its own I/O: it runs on the operating system's file system \
                 only, not on the one given to Options::file_system",
            );
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return bad("segment_bytes", "must be from 4096 to u64::MAX");
        }
        if !self.compact_growth.is_finite() || self.compact_growth < 1.0 {
            return bad(
                "compaction.growth",
                "must be a finite number from 1.0 to f64::MAX",
            );
        }
        let l = &self.limits;
        let limits: [(&'static str, usize, usize, usize, &str); 5] = [
            (
                "limits.max_key_bytes",
                l.max_key_bytes,
                1,
                MAX_KEY_BYTES,
                "must be from 1 to 65535",
            ),
            (
                "limits.max_value_bytes",
                l.max_value_bytes,
                1,
                MAX_DATA_LIMIT,
                "must be from 1 to 1073741824 (1 GiB)",
            ),
            (
                "limits.max_data_bytes",
                l.max_data_bytes,
                1,
                MAX_DATA_LIMIT,
                "must be from 1 to 1073741824 (1 GiB)",
            ),
            (
                "limits.max_user_id_bytes",
                l.max_user_id_bytes,
                1,
                MAX_NAME_LIMIT,
                "must be from 1 to 65536 (64 KiB)",
            ),
            (
                "limits.max_label_bytes",
                l.max_label_bytes,
                0,
                MAX_NAME_LIMIT,
                "must be from 0 to 65536 (64 KiB)",
            ),
        ];
        for (name, value, min, max, reason) in limits {
            if !(min..=max).contains(&value) {
                return bad(name, reason);
            }
        }
        let label = &self.metrics_label.0;
        if label.is_empty()
            || label.len() > 64
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return bad(
                "metrics_label",
                "must be 1 to 64 bytes of A-Z a-z 0-9 _ - .",
            );
        }
        Ok(())
    }
}

/// How much of a client's address a session keeps
/// ([`crate::Options::address_privacy`]).
///
/// The default keeps the network, not the host: enough to tell "my phone at home"
/// from "somewhere else" on a devices page, not enough to single out a subscriber
/// line. An address is personal data under the GDPR, a session store is often
/// backed up and exported, and a devices page never needs the full one; keeping it
/// is the app's decision to make on purpose (django-user-sessions' users asked for
/// exactly this switch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressPrivacy {
    /// IPv4 cut to its /24 (the last byte zero), IPv6 to its /48. The default.
    #[default]
    Truncated,
    /// The whole address.
    Full,
    /// No address at all.
    Omit,
}

impl AddressPrivacy {
    /// What is kept of `addr` (an IPv4 address inside IPv6 is kept as IPv4).
    pub fn apply(self, addr: IpAddr) -> Option<IpAddr> {
        let addr = addr.to_canonical();
        match self {
            AddressPrivacy::Omit => None,
            AddressPrivacy::Full => Some(addr),
            AddressPrivacy::Truncated => Some(match addr {
                IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xFFFF_FF00)),
                IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
            }),
        }
    }
}

/// How long each level lasts after the step that reached it
/// ([`crate::Options::level_lifetime`]): the level, not the session, ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LevelLifetimes(Arc<[(u8, u64)]>);

impl LevelLifetimes {
    /// With `level`'s lifetime set to `d` (replacing an earlier one).
    pub(crate) fn with(&self, level: u8, d: Duration) -> LevelLifetimes {
        let mut v: Vec<(u8, u64)> = self
            .0
            .iter()
            .copied()
            .filter(|(l, _)| *l != level)
            .collect();
        v.push((level, duration_ms(d)));
        v.sort_unstable();
        LevelLifetimes(v.into())
    }

    /// The lifetime of `level` in ms, if it has one.
    pub(crate) fn of(&self, level: u8) -> Option<u64> {
        self.0.iter().find(|(l, _)| *l == level).map(|(_, ms)| *ms)
    }

    /// Every level with a lifetime, and that lifetime in ms, by level.
    #[cfg(feature = "redis")]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.0.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Options::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let cases = [
            Options::default().shards(3),
            Options::default().lifetime(Duration::ZERO),
            Options::default().reaper_interval(Some(Duration::ZERO)),
            Options::default().max_sessions_per_user(Some(0), LimitPolicy::Refuse),
            Options::default().event_capacity(0),
            Options::default().budget(Some(Budget::sessions(0))),
            Options::default().budget(Some(Budget::bytes(1023))),
            Options::default().budget(Some(Budget {
                max_sessions: None,
                max_bytes: None,
                policy: BudgetPolicy::Refuse,
            })),
            Options::default().trial_lifetime(Some(Duration::ZERO)),
        ];
        for o in cases {
            assert!(matches!(o.validate(), Err(Error::InvalidOption { .. })));
        }
    }
}
