//! Side-by-side throughput of sessiondb and its peers on one session-shaped workload,
//! in one process run, printed as markdown tables.
//!
//! The workload: N sessions (default 1,000,000) over N/10 users, each holding ~200 bytes
//! of data (one key "profile" with a 180-character string, encoded as each engine
//! naturally would); then, for a fixed time each, on 1 and 2 threads (and on
//! `available_parallelism` threads if that differs): get-hit, get-miss, create, update,
//! touch, rotate, sessions-of-user, end, revoke-user and a 90/5/4/1 get/update/create/end
//! mix. Every operation starts from the 32-character cookie string, as a server's would
//! (so sessiondb pays `Token::parse` on every call, and peers key by the string).
//!
//! The engines: sessiondb (Memory, Buffered, Sync), moka 0.12, a 64-shard
//! `RwLock<HashMap>` (the in-memory ceiling), sled 0.34 (default, and flush after every
//! write), SQLite through rusqlite (WAL, synchronous=NORMAL and FULL), and Redis on
//! loopback (no persistence, and `appendfsync always`; skipped if `redis-server` is not
//! installed). Also: the disk's raw fdatasync rate, group commit under `Sync` with 64
//! writers against SQLite FULL and Redis `appendfsync always` with 50 clients, resident
//! memory per 1,000,000 sessions (each engine measured in a child process of its own),
//! and recovery / compaction of a sessiondb log of N sessions.
//!
//! `cargo bench --bench throughput`. Environment:
//! - `SESSIONDB_BENCH_SESSIONS`: sessions preloaded (default 1,000,000);
//! - `SESSIONDB_BENCH_SECS`: seconds per measured run (default 2, fractions allowed);
//! - `SESSIONDB_BENCH_ONLY`: comma-separated sections to run, of `sessiondb`, `moka`,
//!   `hashmap`, `sled`, `sqlite`, `redis`, `group`, `memory`, `recovery` (default: all);
//! - `SESSIONDB_BENCH_SPIN=0`: no `SCHED_IDLE` spinner threads (see [`Spinners`]).
//!
//! Progress goes to stderr; the tables go to stdout at the end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use sessiondb::{Durability, NewSession, Options, SessionData, Store, Token};

/// Idle timeout every engine is given (sessiondb's default).
const IDLE: Duration = Duration::from_secs(86_400);
const IDLE_MS: u64 = 86_400_000;
/// Absolute lifetime (sessiondb's default), where an engine keeps one.
const LIFETIME_MS: u64 = 30 * 86_400_000;
/// Like sessiondb's `touch_interval`: the HashMap ceiling re-arms on read at most this often.
const TOUCH_INTERVAL_MS: u64 = 60_000;
const SESSIONS_PER_USER: usize = 10;
/// Threads for untimed bulk work (preload, rebalancing): enough for group commit.
const BULK_THREADS: usize = 16;
const GROUP_SESSIONDB_WRITERS: usize = 64;
const GROUP_PEER_CLIENTS: usize = 50;
const CHILD_ENV: &str = "SESSIONDB_BENCH_CHILD";

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_token() -> String {
    Token::generate().expect("OS CSPRNG").as_string()
}

/// Prints the first few engine errors (later ones are only counted as failed ops).
fn note_err(engine: &str, e: impl std::fmt::Display) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 8 {
        eprintln!("  ! {engine}: {e}");
    }
}

// -------------------------------------------------------------------------------------
// The session data

struct Payload {
    /// The 180-character profile string, for sessiondb's typed `put`.
    profile_a: String,
    profile_b: String,
    /// `{"profile":"..."}`: the same data as the peers store it (194 bytes).
    json_a: Vec<u8>,
    json_b: Vec<u8>,
}

fn payload() -> &'static Payload {
    static P: OnceLock<Payload> = OnceLock::new();
    P.get_or_init(|| {
        let a: String = (0..180).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let b: String = (0..180).map(|i| (b'A' + (i % 26) as u8) as char).collect();
        let json = |p: &str| format!(r#"{{"profile":"{p}"}}"#).into_bytes();
        Payload {
            json_a: json(&a),
            json_b: json(&b),
            profile_a: a,
            profile_b: b,
        }
    })
}

// -------------------------------------------------------------------------------------
// Random numbers and latency histograms

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Log-bucketed latency histogram in nanoseconds: 16 buckets per power of two, so a
/// reported percentile is within ~3% of the true value.
#[derive(Clone)]
struct Hist {
    counts: Box<[u64]>,
    total: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }

    fn index(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let shift = msb - SUB_BITS;
        (shift as usize + 1) * SUB + ((ns >> shift) as usize & (SUB - 1))
    }

    fn bucket_mid(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i / SUB - 1) as u32;
        let low = ((SUB + i % SUB) as u64) << shift;
        low + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Hist::index(ns)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    fn percentile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Hist::bucket_mid(i);
            }
        }
        Hist::bucket_mid(BUCKETS - 1)
    }
}

/// Times single operations into a histogram until a deadline.
struct Meter {
    hist: Hist,
    ops: u64,
    failed: u64,
    deadline: Instant,
    last: Instant,
}

impl Meter {
    #[inline]
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t0 = Instant::now();
        let r = f();
        let t1 = Instant::now();
        self.hist.record(t1 - t0);
        self.ops += 1;
        self.last = t1;
        r
    }

    fn running(&self) -> bool {
        self.last < self.deadline
    }

    fn check(&mut self, ok: bool) {
        if !ok {
            self.failed += 1;
        }
    }
}

// -------------------------------------------------------------------------------------
// The engine interface

/// One session the harness knows: its cookie string and its user's number.
struct Entry {
    token: String,
    user: u32,
}

/// One thread's (or one connection's) handle on an engine. Every method starts from
/// the cookie string. `user` is what the request's context knows about the session (a
/// server has read the session before it rotates or ends it); only Redis needs it.
trait Worker {
    fn get(&mut self, token: &str) -> bool;
    fn create(&mut self, user: &str) -> Option<String>;
    fn update(&mut self, token: &str, user: &str) -> bool;
    fn touch(&mut self, token: &str) -> bool;
    fn rotate(&mut self, token: &str, user: &str) -> Option<String>;
    fn end(&mut self, token: &str, user: &str) -> bool;
    fn revoke_user(&mut self, user: &str) -> usize;
    fn sessions_of(&mut self, user: &str) -> usize;
}

trait Engine: Sync {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String>;

    /// Creates one session per entry of `users` (untimed: preload and rebalancing).
    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        par_create(self, ctx, users, BULK_THREADS)
    }

    /// Ends these sessions (untimed rebalancing).
    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        par_end(self, ctx, entries, BULK_THREADS)
    }

    /// `(fsyncs, records)` written so far, for engines that count them.
    fn sync_stats(&self) -> Option<(u64, u64)> {
        None
    }
}

fn par_create<E: Engine + ?Sized>(e: &E, ctx: &Ctx, users: &[u32], threads: usize) -> Vec<Entry> {
    if users.is_empty() {
        return Vec::new();
    }
    let chunk = users.len().div_ceil(threads.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut w = match e.worker() {
                        Ok(w) => w,
                        Err(err) => {
                            note_err("bulk create", err);
                            return Vec::new();
                        }
                    };
                    part.iter()
                        .filter_map(|&u| {
                            w.create(&ctx.users[u as usize])
                                .map(|token| Entry { token, user: u })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bulk create thread"))
            .collect()
    })
}

fn par_end<E: Engine + ?Sized>(e: &E, ctx: &Ctx, entries: &[Entry], threads: usize) {
    if entries.is_empty() {
        return;
    }
    let chunk = entries.len().div_ceil(threads.max(1));
    std::thread::scope(|s| {
        for part in entries.chunks(chunk) {
            s.spawn(move || match e.worker() {
                Ok(mut w) => {
                    for en in part {
                        w.end(&en.token, &ctx.users[en.user as usize]);
                    }
                }
                Err(err) => note_err("bulk end", err),
            });
        }
    });
}

// -------------------------------------------------------------------------------------
// sessiondb, through its public API only

struct SdbEngine {
    store: Store,
}

impl SdbEngine {
    fn memory() -> SdbEngine {
        SdbEngine {
            store: Store::in_memory_with(Options::default()).expect("in-memory store"),
        }
    }

    fn open(dir: &Path, d: Durability) -> SdbEngine {
        SdbEngine {
            store: Store::open_with(dir, Options::default().durability(d)).expect("open store"),
        }
    }
}

impl Engine for SdbEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(SdbWorker {
            store: &self.store,
            p: payload(),
        }))
    }

    fn sync_stats(&self) -> Option<(u64, u64)> {
        let s = self.store.stats();
        Some((s.log_syncs, s.log_records))
    }
}

struct SdbWorker<'a> {
    store: &'a Store,
    p: &'static Payload,
}

impl Worker for SdbWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        Token::parse(token)
            .ok()
            .and_then(|t| self.store.get(&t))
            .map(black_box)
            .is_some()
    }

    /// The session and its data in one step (one log record, one fsync under `Sync`).
    fn create(&mut self, user: &str) -> Option<String> {
        let mut data = SessionData::new();
        data.insert("profile", self.p.profile_a.as_str())
            .map_err(|e| note_err("sessiondb data", e))
            .ok()?;
        let (t, _) = self
            .store
            .create(NewSession::for_user(user).data(data))
            .map_err(|e| note_err("sessiondb create", e))
            .ok()?;
        Some(t.as_string())
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| {
            self.store
                .put(&t, "profile", self.p.profile_b.as_str())
                .is_ok()
        })
    }

    fn touch(&mut self, token: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.store.touch(&t).is_ok())
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let t = Token::parse(token).ok()?;
        self.store.rotate(&t).ok().map(|t| t.as_string())
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.store.end(&t).unwrap_or(false))
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.store.revoke_user(user).unwrap_or(0)
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        self.store
            .sessions_of(user)
            .map_or(0, |v| black_box(v).len())
    }
}

// -------------------------------------------------------------------------------------
// A per-user side index, for the in-memory peers that have none

type UserMap = HashMap<Arc<str>, (Arc<str>, Vec<String>), ahash::RandomState>;

/// user → that user's tokens, in 64 shards. Kept next to the session map by the
/// HashMap ceiling and moka (not atomically with it).
struct UserIndex {
    hasher: ahash::RandomState,
    shards: Box<[RwLock<UserMap>]>,
}

impl UserIndex {
    fn new() -> UserIndex {
        UserIndex {
            hasher: ahash::RandomState::new(),
            shards: (0..64).map(|_| RwLock::new(UserMap::default())).collect(),
        }
    }

    fn shard(&self, user: &str) -> &RwLock<UserMap> {
        &self.shards[(self.hasher.hash_one(user) >> 58) as usize]
    }

    /// Adds `token` to `user`'s list; returns the shared user id.
    fn add(&self, user: &str, token: String) -> Arc<str> {
        let mut m = self.shard(user).write();
        if let Some((name, tokens)) = m.get_mut(user) {
            tokens.push(token);
            return name.clone();
        }
        let name: Arc<str> = Arc::from(user);
        m.insert(name.clone(), (name.clone(), vec![token]));
        name
    }

    fn remove(&self, user: &str, token: &str) {
        let mut m = self.shard(user).write();
        if let Some((_, tokens)) = m.get_mut(user) {
            if let Some(p) = tokens.iter().position(|t| t == token) {
                tokens.swap_remove(p);
            }
            if tokens.is_empty() {
                m.remove(user);
            }
        }
    }

    fn replace(&self, user: &str, old: &str, new: String) {
        let mut m = self.shard(user).write();
        if let Some((_, tokens)) = m.get_mut(user) {
            match tokens.iter_mut().find(|t| *t == old) {
                Some(t) => *t = new,
                None => tokens.push(new),
            }
        }
    }

    fn take(&self, user: &str) -> Vec<String> {
        self.shard(user)
            .write()
            .remove(user)
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    fn with<R>(&self, user: &str, f: impl FnOnce(&[String]) -> R) -> R {
        let m = self.shard(user).read();
        f(m.get(user).map_or(&[][..], |(_, t)| t.as_slice()))
    }
}

// -------------------------------------------------------------------------------------
// The in-memory ceiling: 64 × RwLock<HashMap<token, record>> + a user side index

struct MapRecord {
    user: Arc<str>,
    absolute: u64,
    last_seen: AtomicU64,
    data: Arc<[u8]>,
}

impl MapRecord {
    fn live(&self, now: u64) -> bool {
        now < self.absolute && now < self.last_seen.load(Ordering::Relaxed) + IDLE_MS
    }
}

type SessionMap = HashMap<String, MapRecord, ahash::RandomState>;

struct MapEngine {
    hasher: ahash::RandomState,
    shards: Box<[RwLock<SessionMap>]>,
    users: UserIndex,
}

impl MapEngine {
    fn new() -> MapEngine {
        MapEngine {
            hasher: ahash::RandomState::new(),
            shards: (0..64)
                .map(|_| RwLock::new(SessionMap::default()))
                .collect(),
            users: UserIndex::new(),
        }
    }

    fn shard(&self, token: &str) -> &RwLock<SessionMap> {
        &self.shards[(self.hasher.hash_one(token) >> 58) as usize]
    }
}

impl Engine for MapEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(self))
    }
}

impl Worker for &MapEngine {
    fn get(&mut self, token: &str) -> bool {
        let now = now_ms();
        let m = self.shard(token).read();
        match m.get(token) {
            Some(r) if r.live(now) => {
                if now.saturating_sub(r.last_seen.load(Ordering::Relaxed)) >= TOUCH_INTERVAL_MS {
                    r.last_seen.store(now, Ordering::Relaxed);
                }
                black_box((r.user.clone(), r.data.clone()));
                true
            }
            _ => false,
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let now = now_ms();
        let user = self.users.add(user, token.clone());
        let rec = MapRecord {
            user,
            absolute: now + LIFETIME_MS,
            last_seen: AtomicU64::new(now),
            data: Arc::from(&payload().json_a[..]),
        };
        self.shard(&token).write().insert(token.clone(), rec);
        Some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        let now = now_ms();
        let mut m = self.shard(token).write();
        match m.get_mut(token) {
            Some(r) if r.live(now) => {
                r.data = Arc::from(&payload().json_b[..]);
                true
            }
            _ => false,
        }
    }

    fn touch(&mut self, token: &str) -> bool {
        let now = now_ms();
        let m = self.shard(token).read();
        match m.get(token) {
            Some(r) if r.live(now) => {
                r.last_seen.store(now, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let now = now_ms();
        let rec = self.shard(token).write().remove(token)?;
        if !rec.live(now) {
            return None;
        }
        let new = new_token();
        let user = rec.user.clone();
        self.shard(&new).write().insert(new.clone(), rec);
        self.users.replace(&user, token, new.clone());
        Some(new)
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        let Some(rec) = self.shard(token).write().remove(token) else {
            return false;
        };
        self.users.remove(&rec.user, token);
        rec.live(now_ms())
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        let now = now_ms();
        self.users
            .take(user)
            .iter()
            .filter(|t| {
                self.shard(t)
                    .write()
                    .remove(t.as_str())
                    .is_some_and(|r| r.live(now))
            })
            .count()
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        let now = now_ms();
        self.users.with(user, |tokens| {
            tokens
                .iter()
                .filter(|t| {
                    let m = self.shard(t).read();
                    m.get(t.as_str())
                        .is_some_and(|r| r.live(now) && black_box(r.data.len()) > 0)
                })
                .count()
        })
    }
}

// -------------------------------------------------------------------------------------
// moka 0.12: sync::Cache with per-entry expiry + a user side index

struct MokaRecord {
    user: Arc<str>,
    absolute: u64,
    data: Arc<[u8]>,
}

/// Idle timeout re-armed on every read and write, capped by the absolute deadline.
struct SessionExpiry;

fn moka_ttl(v: &MokaRecord) -> Option<Duration> {
    let left = Duration::from_millis(v.absolute.saturating_sub(now_ms()));
    Some(left.min(IDLE))
}

impl moka::Expiry<String, Arc<MokaRecord>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        v: &Arc<MokaRecord>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        moka_ttl(v)
    }

    fn expire_after_read(
        &self,
        _: &String,
        v: &Arc<MokaRecord>,
        _: std::time::Instant,
        _: Option<Duration>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        moka_ttl(v)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<MokaRecord>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        moka_ttl(v)
    }
}

struct MokaEngine {
    cache: moka::sync::Cache<String, Arc<MokaRecord>>,
    users: Arc<UserIndex>,
}

impl MokaEngine {
    fn new() -> MokaEngine {
        let users = Arc::new(UserIndex::new());
        let idx = users.clone();
        let cache = moka::sync::Cache::builder()
            .expire_after(SessionExpiry)
            .eviction_listener(move |k: Arc<String>, v: Arc<MokaRecord>, cause| {
                use moka::notification::RemovalCause;
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                    idx.remove(&v.user, &k);
                }
            })
            .build();
        MokaEngine { cache, users }
    }
}

impl Engine for MokaEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(self))
    }
}

impl Worker for &MokaEngine {
    fn get(&mut self, token: &str) -> bool {
        self.cache
            .get(token)
            .map(|r| black_box((r.user.clone(), r.data.clone())))
            .is_some()
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let user = self.users.add(user, token.clone());
        let rec = MokaRecord {
            user,
            absolute: now_ms() + LIFETIME_MS,
            data: Arc::from(&payload().json_a[..]),
        };
        self.cache.insert(token.clone(), Arc::new(rec));
        Some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        let Some(old) = self.cache.get(token) else {
            return false;
        };
        let rec = MokaRecord {
            user: old.user.clone(),
            absolute: old.absolute,
            data: Arc::from(&payload().json_b[..]),
        };
        self.cache.insert(token.to_owned(), Arc::new(rec));
        true
    }

    /// A read re-arms the idle timeout (`expire_after_read`), so a touch is a read.
    fn touch(&mut self, token: &str) -> bool {
        self.cache.get(token).is_some()
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let rec = self.cache.get(token)?;
        let new = new_token();
        self.cache.insert(new.clone(), rec.clone());
        self.cache.invalidate(token);
        self.users.replace(&rec.user, token, new.clone());
        Some(new)
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        match self.cache.remove(token) {
            Some(rec) => {
                self.users.remove(&rec.user, token);
                true
            }
            None => false,
        }
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.users
            .take(user)
            .iter()
            .filter(|t| self.cache.remove(t.as_str()).is_some())
            .count()
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        self.users.with(user, |tokens| {
            tokens
                .iter()
                .filter(|t| self.cache.get(t.as_str()).map(black_box).is_some())
                .count()
        })
    }
}

// -------------------------------------------------------------------------------------
// sled 0.34: tree token → record, tree user\0token → (), optionally flush per write

/// `absolute u64 | last_seen u64 | user_len u8 | user | data`
fn sled_record(absolute: u64, last_seen: u64, user: &str, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(17 + user.len() + data.len());
    v.extend_from_slice(&absolute.to_le_bytes());
    v.extend_from_slice(&last_seen.to_le_bytes());
    v.push(user.len() as u8);
    v.extend_from_slice(user.as_bytes());
    v.extend_from_slice(data);
    v
}

fn sled_u64(r: &[u8], at: usize) -> u64 {
    r.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn sled_live(r: &[u8], now: u64) -> bool {
    now < sled_u64(r, 0) && now < sled_u64(r, 8) + IDLE_MS
}

fn sled_user(r: &[u8]) -> &[u8] {
    let len = r.get(16).copied().unwrap_or(0) as usize;
    r.get(17..17 + len).unwrap_or(&[])
}

fn sled_user_key(user: &[u8], token: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 1 + token.len());
    k.extend_from_slice(user);
    k.push(0);
    k.extend_from_slice(token.as_bytes());
    k
}

struct SledEngine {
    db: sled::Db,
    by_user: sled::Tree,
    flush_each: AtomicBool,
}

impl SledEngine {
    fn open(dir: &Path) -> SledEngine {
        let db = sled::open(dir).expect("sled open");
        let by_user = db.open_tree("by_user").expect("sled tree");
        SledEngine {
            db,
            by_user,
            flush_each: AtomicBool::new(false),
        }
    }

    fn written(&self) {
        if self.flush_each.load(Ordering::Relaxed)
            && let Err(e) = self.db.flush()
        {
            note_err("sled flush", e);
        }
    }

    /// Runs bulk work without a flush per write, then flushes once.
    fn quietly<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = self.flush_each.swap(false, Ordering::Relaxed);
        let r = f();
        if was {
            let _ = self.db.flush();
            self.flush_each.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl Engine for SledEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(self))
    }

    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        self.quietly(|| par_create(self, ctx, users, BULK_THREADS))
    }

    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        self.quietly(|| par_end(self, ctx, entries, BULK_THREADS))
    }
}

impl Worker for &SledEngine {
    fn get(&mut self, token: &str) -> bool {
        match self.db.get(token) {
            Ok(Some(r)) => sled_live(&r, now_ms()) && black_box(r).len() > 17,
            Ok(None) => false,
            Err(e) => {
                note_err("sled get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let now = now_ms();
        let rec = sled_record(now + LIFETIME_MS, now, user, &payload().json_a);
        self.db.insert(token.as_bytes(), rec).ok()?;
        self.by_user
            .insert(sled_user_key(user.as_bytes(), &token), &[] as &[u8])
            .ok()?;
        self.written();
        Some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        let now = now_ms();
        let prev = self.db.fetch_and_update(token, |old| {
            old.map(|o| {
                if !sled_live(o, now) {
                    return o.to_vec();
                }
                let head = 17 + sled_user(o).len();
                let mut v = o[..head].to_vec();
                v.extend_from_slice(&payload().json_b);
                v
            })
        });
        self.written();
        matches!(prev, Ok(Some(o)) if sled_live(&o, now))
    }

    fn touch(&mut self, token: &str) -> bool {
        let now = now_ms();
        let prev = self.db.fetch_and_update(token, |old| {
            old.map(|o| {
                let mut v = o.to_vec();
                if sled_live(o, now) {
                    v[8..16].copy_from_slice(&now.to_le_bytes());
                }
                v
            })
        });
        self.written();
        matches!(prev, Ok(Some(o)) if sled_live(&o, now))
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let now = now_ms();
        let rec = self.db.get(token).ok()??;
        if !sled_live(&rec, now) {
            return None;
        }
        let new = new_token();
        let user = sled_user(&rec).to_vec();
        self.db.insert(new.as_bytes(), rec).ok()?;
        self.by_user
            .insert(sled_user_key(&user, &new), &[] as &[u8])
            .ok()?;
        self.db.remove(token).ok()?;
        self.by_user.remove(sled_user_key(&user, token)).ok()?;
        self.written();
        Some(new)
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        let Ok(Some(rec)) = self.db.remove(token) else {
            return false;
        };
        let _ = self.by_user.remove(sled_user_key(sled_user(&rec), token));
        self.written();
        sled_live(&rec, now_ms())
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        let now = now_ms();
        let prefix = sled_user_key(user.as_bytes(), "");
        let mut n = 0;
        for item in self.by_user.scan_prefix(&prefix) {
            let Ok((key, _)) = item else { continue };
            if let Ok(Some(rec)) = self.db.remove(&key[prefix.len()..])
                && sled_live(&rec, now)
            {
                n += 1;
            }
            let _ = self.by_user.remove(key);
        }
        self.written();
        n
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        let now = now_ms();
        let prefix = sled_user_key(user.as_bytes(), "");
        self.by_user
            .scan_prefix(&prefix)
            .filter_map(|item| item.ok())
            .filter(|(key, _)| {
                matches!(self.db.get(&key[prefix.len()..]), Ok(Some(r)) if sled_live(&r, now) && black_box(&r).len() > 17)
            })
            .count()
    }
}

// -------------------------------------------------------------------------------------
// SQLite through rusqlite: WAL, one connection per thread, writes behind a mutex

struct SqliteEngine {
    path: PathBuf,
    synchronous: &'static str,
    /// Writers queue here instead of sleep-polling on SQLITE_BUSY (SQLite allows one
    /// writer at a time either way; this is the usual in-process arrangement).
    write_lock: Mutex<()>,
}

impl SqliteEngine {
    fn open(path: &Path, synchronous: &'static str) -> SqliteEngine {
        let e = SqliteEngine {
            path: path.to_owned(),
            synchronous,
            write_lock: Mutex::new(()),
        };
        let c = e.connect().expect("sqlite open");
        let mode: String = c
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("sqlite WAL");
        assert_eq!(mode.to_lowercase(), "wal");
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions(
                 token TEXT PRIMARY KEY,
                 user TEXT NOT NULL,
                 expires INTEGER NOT NULL,
                 data BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);",
        )
        .expect("sqlite schema");
        e
    }

    fn connect(&self) -> rusqlite::Result<rusqlite::Connection> {
        let c = rusqlite::Connection::open(&self.path)?;
        c.busy_timeout(Duration::from_secs(60))?;
        c.pragma_update(None, "synchronous", self.synchronous)?;
        c.set_prepared_statement_cache_capacity(32);
        Ok(c)
    }
}

impl Engine for SqliteEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        let conn = self.connect().map_err(|e| e.to_string())?;
        Ok(Box::new(SqliteWorker { conn, eng: self }))
    }

    /// One connection, 10,000 rows per transaction.
    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        let mut conn = self.connect().expect("sqlite connect");
        let _g = self.write_lock.lock();
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(10_000) {
            let tx = conn.transaction().expect("sqlite tx");
            {
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO sessions(token, user, expires, data) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .expect("sqlite prepare");
                let expires = (now_ms() + IDLE_MS) as i64;
                for &u in chunk {
                    let token = new_token();
                    st.execute(rusqlite::params![
                        token,
                        ctx.users[u as usize],
                        expires,
                        payload().json_a
                    ])
                    .expect("sqlite insert");
                    out.push(Entry { token, user: u });
                }
            }
            tx.commit().expect("sqlite commit");
        }
        out
    }

    fn bulk_end(&self, _ctx: &Ctx, entries: &[Entry]) {
        let mut conn = self.connect().expect("sqlite connect");
        let _g = self.write_lock.lock();
        for chunk in entries.chunks(10_000) {
            let tx = conn.transaction().expect("sqlite tx");
            {
                let mut st = tx
                    .prepare_cached("DELETE FROM sessions WHERE token = ?1")
                    .expect("sqlite prepare");
                for e in chunk {
                    st.execute([&e.token]).expect("sqlite delete");
                }
            }
            tx.commit().expect("sqlite commit");
        }
    }
}

struct SqliteWorker<'a> {
    conn: rusqlite::Connection,
    eng: &'a SqliteEngine,
}

impl SqliteWorker<'_> {
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> usize {
        let _g = self.eng.write_lock.lock();
        match self
            .conn
            .prepare_cached(sql)
            .and_then(|mut st| st.execute(params))
        {
            Ok(n) => n,
            Err(e) => {
                note_err("sqlite", e);
                0
            }
        }
    }

    fn try_rotate(&mut self, token: &str) -> rusqlite::Result<Option<String>> {
        let new = new_token();
        let now = now_ms() as i64;
        let _g = self.eng.write_lock.lock();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached(
                "INSERT INTO sessions(token, user, expires, data)
                 SELECT ?2, user, expires, data FROM sessions WHERE token = ?1 AND expires > ?3",
            )?
            .execute(rusqlite::params![token, new, now])?;
        if n == 0 {
            return Ok(None);
        }
        tx.prepare_cached("DELETE FROM sessions WHERE token = ?1")?
            .execute([token])?;
        tx.commit()?;
        Ok(Some(new))
    }
}

impl Worker for SqliteWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        use rusqlite::OptionalExtension;
        let r = self
            .conn
            .prepare_cached("SELECT user, data FROM sessions WHERE token = ?1 AND expires > ?2")
            .and_then(|mut st| {
                st.query_row(rusqlite::params![token, now_ms() as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()
            });
        match r {
            Ok(row) => row.map(black_box).is_some(),
            Err(e) => {
                note_err("sqlite get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let n = self.exec(
            "INSERT INTO sessions(token, user, expires, data) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![token, user, (now_ms() + IDLE_MS) as i64, payload().json_a],
        );
        (n == 1).then_some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        self.exec(
            "UPDATE sessions SET data = ?2 WHERE token = ?1 AND expires > ?3",
            rusqlite::params![token, payload().json_b, now_ms() as i64],
        ) == 1
    }

    fn touch(&mut self, token: &str) -> bool {
        let now = now_ms();
        self.exec(
            "UPDATE sessions SET expires = ?2 WHERE token = ?1 AND expires > ?3",
            rusqlite::params![token, (now + IDLE_MS) as i64, now as i64],
        ) == 1
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        self.try_rotate(token)
            .map_err(|e| note_err("sqlite rotate", e))
            .ok()
            .flatten()
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        self.exec("DELETE FROM sessions WHERE token = ?1", [token]) == 1
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.exec("DELETE FROM sessions WHERE user = ?1", [user])
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        let r = self
            .conn
            .prepare_cached("SELECT token, expires FROM sessions WHERE user = ?1 AND expires > ?2")
            .and_then(|mut st| {
                st.query_map(rusqlite::params![user, now_ms() as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            });
        r.map_or(0, |v| black_box(v).len())
    }
}

// -------------------------------------------------------------------------------------
// Redis on loopback: SET token data EX ttl + SADD user:<u> token

fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A redis-server child on a free loopback port with a temporary dir; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(persistence: &[&str]) -> Result<RedisServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no", "--save", ""])
            .args(persistence)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning redis-server: {e}"))?;
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let client = server.client()?;
        for _ in 0..400 {
            if let Ok(mut c) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "redis-server did not answer on port {port}; see {}",
            log.display()
        ))
    }

    fn client(&self) -> Result<redis::Client, String> {
        use redis::IntoConnectionInfo;
        let info = format!("redis://127.0.0.1:{}/", self.port)
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        redis::Client::open(info).map_err(|e| e.to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct RedisEngine {
    server: RedisServer,
    client: redis::Client,
}

fn redis_value(user: &str, profile: &str) -> String {
    format!(r#"{{"user":"{user}","profile":"{profile}"}}"#)
}

fn redis_user_key(user: &str) -> String {
    format!("user:{user}")
}

impl RedisEngine {
    fn start(persistence: &[&str]) -> Result<RedisEngine, String> {
        let server = RedisServer::start(persistence)?;
        let client = server.client()?;
        Ok(RedisEngine { server, client })
    }

    /// The server's resident memory (`INFO memory` used_memory_rss), in bytes.
    fn server_rss(&self) -> Option<u64> {
        let mut c = self.client.get_connection().ok()?;
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory_rss:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Engine for RedisEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        let con = self.client.get_connection().map_err(|e| e.to_string())?;
        Ok(Box::new(RedisWorker { con }))
    }

    /// Pipelines of 1,000 sessions, one connection per bulk thread.
    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        if users.is_empty() {
            return Vec::new();
        }
        let threads = ctx.parallelism.max(2);
        let chunk = users.len().div_ceil(threads);
        let p = payload();
        std::thread::scope(|s| {
            let handles: Vec<_> = users
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut con = self.client.get_connection().expect("redis connect");
                        let mut out = Vec::with_capacity(part.len());
                        for batch in part.chunks(1000) {
                            let mut pipe = redis::pipe();
                            for &u in batch {
                                let user = &ctx.users[u as usize];
                                let token = new_token();
                                pipe.cmd("SET")
                                    .arg(&token)
                                    .arg(redis_value(user, &p.profile_a))
                                    .arg("EX")
                                    .arg(IDLE.as_secs())
                                    .ignore()
                                    .cmd("SADD")
                                    .arg(redis_user_key(user))
                                    .arg(&token)
                                    .ignore();
                                out.push(Entry { token, user: u });
                            }
                            pipe.query::<()>(&mut con).expect("redis preload");
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("redis bulk thread"))
                .collect()
        })
    }

    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        let mut con = self.client.get_connection().expect("redis connect");
        for batch in entries.chunks(1000) {
            let mut pipe = redis::pipe();
            for e in batch {
                pipe.cmd("DEL")
                    .arg(&e.token)
                    .ignore()
                    .cmd("SREM")
                    .arg(redis_user_key(&ctx.users[e.user as usize]))
                    .arg(&e.token)
                    .ignore();
            }
            pipe.query::<()>(&mut con).expect("redis bulk end");
        }
    }
}

struct RedisWorker {
    con: redis::Connection,
}

impl Worker for RedisWorker {
    fn get(&mut self, token: &str) -> bool {
        match redis::cmd("GET")
            .arg(token)
            .query::<Option<Vec<u8>>>(&mut self.con)
        {
            Ok(v) => v.map(black_box).is_some(),
            Err(e) => {
                note_err("redis get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&token)
            .arg(redis_value(user, &payload().profile_a))
            .arg("EX")
            .arg(IDLE.as_secs())
            .ignore()
            .cmd("SADD")
            .arg(redis_user_key(user))
            .arg(&token)
            .ignore()
            .query::<()>(&mut self.con)
            .map_err(|e| note_err("redis create", e))
            .ok()?;
        Some(token)
    }

    fn update(&mut self, token: &str, user: &str) -> bool {
        redis::cmd("SET")
            .arg(token)
            .arg(redis_value(user, &payload().profile_b))
            .arg("XX")
            .arg("KEEPTTL")
            .query::<Option<String>>(&mut self.con)
            .is_ok_and(|r| r.is_some())
    }

    fn touch(&mut self, token: &str) -> bool {
        redis::cmd("EXPIRE")
            .arg(token)
            .arg(IDLE.as_secs())
            .query::<i64>(&mut self.con)
            .is_ok_and(|n| n == 1)
    }

    /// RENAME keeps value and TTL; the user's set follows in the same MULTI.
    fn rotate(&mut self, token: &str, user: &str) -> Option<String> {
        let new = new_token();
        let key = redis_user_key(user);
        redis::pipe()
            .atomic()
            .cmd("RENAME")
            .arg(token)
            .arg(&new)
            .ignore()
            .cmd("SADD")
            .arg(&key)
            .arg(&new)
            .ignore()
            .cmd("SREM")
            .arg(&key)
            .arg(token)
            .ignore()
            .query::<()>(&mut self.con)
            .ok()?;
        Some(new)
    }

    fn end(&mut self, token: &str, user: &str) -> bool {
        redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(token)
            .cmd("SREM")
            .arg(redis_user_key(user))
            .arg(token)
            .ignore()
            .query::<(i64,)>(&mut self.con)
            .is_ok_and(|(n,)| n == 1)
    }

    /// SMEMBERS, then DEL of the tokens and the set: two round trips, not atomic.
    fn revoke_user(&mut self, user: &str) -> usize {
        let key = redis_user_key(user);
        let Ok(tokens) = redis::cmd("SMEMBERS")
            .arg(&key)
            .query::<Vec<String>>(&mut self.con)
        else {
            return 0;
        };
        if tokens.is_empty() {
            return 0;
        }
        redis::pipe()
            .cmd("DEL")
            .arg(&tokens)
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .query::<(usize,)>(&mut self.con)
            .map_or(0, |(n,)| n)
    }

    /// SMEMBERS, then MGET: two round trips.
    fn sessions_of(&mut self, user: &str) -> usize {
        let Ok(tokens) = redis::cmd("SMEMBERS")
            .arg(redis_user_key(user))
            .query::<Vec<String>>(&mut self.con)
        else {
            return 0;
        };
        if tokens.is_empty() {
            return 0;
        }
        redis::cmd("MGET")
            .arg(&tokens)
            .query::<Vec<Option<Vec<u8>>>>(&mut self.con)
            .map_or(0, |v| v.iter().filter(|x| x.is_some()).count())
    }
}

// -------------------------------------------------------------------------------------
// sessiondb on Redis (feature `redis`): the same API, every operation one Lua script

/// The Redis backend, driven from the harness's threads through a tokio runtime of its
/// own (each call is `block_on`, as a sync caller would).
#[cfg(feature = "redis")]
struct SdbRedisEngine {
    rt: tokio::runtime::Runtime,
    store: sessiondb::RedisStore,
}

#[cfg(feature = "redis")]
impl SdbRedisEngine {
    fn connect(url: &str) -> Result<SdbRedisEngine, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let store = rt
            .block_on(sessiondb::RedisStore::connect_with(
                url,
                Options::default(),
                sessiondb::RedisOptions::default().prefix("sdb"),
            ))
            .map_err(|e| e.to_string())?;
        Ok(SdbRedisEngine { rt, store })
    }
}

#[cfg(feature = "redis")]
impl Engine for SdbRedisEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(SdbRedisWorker {
            e: self,
            p: payload(),
        }))
    }
}

#[cfg(feature = "redis")]
struct SdbRedisWorker<'a> {
    e: &'a SdbRedisEngine,
    p: &'static Payload,
}

#[cfg(feature = "redis")]
impl Worker for SdbRedisWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        let Ok(t) = Token::parse(token) else {
            return false;
        };
        match self.e.rt.block_on(self.e.store.get(&t)) {
            Ok(s) => s.map(black_box).is_some(),
            Err(e) => {
                note_err("sessiondb on Redis get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let mut data = SessionData::new();
        data.insert("profile", self.p.profile_a.as_str()).ok()?;
        let (t, _) = self
            .e
            .rt
            .block_on(self.e.store.create(NewSession::for_user(user).data(data)))
            .map_err(|e| note_err("sessiondb on Redis create", e))
            .ok()?;
        Some(t.as_string())
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| {
            self.e
                .rt
                .block_on(self.e.store.put(&t, "profile", self.p.profile_b.as_str()))
                .is_ok()
        })
    }

    fn touch(&mut self, token: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.e.rt.block_on(self.e.store.touch(&t)).is_ok())
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let t = Token::parse(token).ok()?;
        let new = self.e.rt.block_on(self.e.store.rotate(&t)).ok()?;
        Some(new.as_string())
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.e.rt.block_on(self.e.store.end(&t)).unwrap_or(false))
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.e
            .rt
            .block_on(self.e.store.revoke_user(user))
            .unwrap_or(0)
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        self.e
            .rt
            .block_on(self.e.store.sessions_of(user))
            .map_or(0, |v| black_box(v).len())
    }
}

// -------------------------------------------------------------------------------------
// Running one operation

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    GetHit,
    GetMiss,
    Create,
    Update,
    Touch,
    Rotate,
    SessionsOf,
    End,
    RevokeUser,
    Mixed,
}

const OPS: [Op; 10] = [
    Op::GetHit,
    Op::GetMiss,
    Op::Create,
    Op::Update,
    Op::Touch,
    Op::Rotate,
    Op::SessionsOf,
    Op::End,
    Op::RevokeUser,
    Op::Mixed,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetHit => "get-hit",
            Op::GetMiss => "get-miss",
            Op::Create => "create",
            Op::Update => "update",
            Op::Touch => "touch",
            Op::Rotate => "rotate",
            Op::SessionsOf => "sessions-of-user",
            Op::End => "end",
            Op::RevokeUser => "revoke-user",
            Op::Mixed => "mixed 90/5/4/1",
        }
    }
}

struct Ctx {
    n: usize,
    users: Vec<String>,
    misses: Vec<String>,
    run: Duration,
    threads: Vec<usize>,
    parallelism: usize,
    only: Option<Vec<String>>,
    started: Instant,
}

impl Ctx {
    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }

    fn progress(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:>5.0}s] {msg}", self.started.elapsed().as_secs_f64());
    }
}

/// Which thread of how many; a thread owns the users `u % count == index`.
#[derive(Clone, Copy)]
struct Part {
    index: usize,
    count: usize,
}

impl Part {
    fn user(self, rng: &mut Rng, users: usize) -> u32 {
        if self.index >= users {
            return rng.below(users) as u32;
        }
        let span = (users - self.index).div_ceil(self.count);
        (self.index + self.count * rng.below(span)) as u32
    }
}

/// Sessions a thread removed (by user) and added during a run, to restore the pool's
/// size afterwards.
#[derive(Default)]
struct Drift {
    removed: Vec<u32>,
    appended: usize,
}

struct ThreadOut {
    local: Vec<Entry>,
    initial: usize,
    drift: Drift,
    hist: Hist,
    ops: u64,
    failed: u64,
    start: Instant,
    end: Instant,
    capped: bool,
}

/// One thread's measured loop over `op` until the deadline, or until its share of the
/// pool is used up (end and revoke remove at most half of it, create adds at most as
/// many sessions as it had).
fn measure(
    w: &mut dyn Worker,
    ctx: &Ctx,
    op: Op,
    part: Part,
    mut local: Vec<Entry>,
    seed: u64,
) -> ThreadOut {
    let mut rng = Rng(seed);
    let users = ctx.users.len();
    let initial = local.len();
    let floor = initial / 2;
    let max_add = initial.max(1000);
    let mut drift = Drift::default();
    let mut capped = false;
    let mut owned: Vec<u32> = Vec::new();
    let mut revoked: Vec<bool> = Vec::new();
    if op == Op::RevokeUser {
        // Users that have sessions in this thread's share, half of them at most.
        revoked = vec![false; users];
        for e in &local {
            if !revoked[e.user as usize] {
                revoked[e.user as usize] = true;
                owned.push(e.user);
            }
        }
        revoked.fill(false);
        rng.shuffle(&mut owned);
        owned.truncate(owned.len().div_ceil(2));
    }
    let start = Instant::now();
    let mut m = Meter {
        hist: Hist::new(),
        ops: 0,
        failed: 0,
        deadline: start + ctx.run,
        last: start,
    };
    let create = |m: &mut Meter,
                  w: &mut dyn Worker,
                  rng: &mut Rng,
                  local: &mut Vec<Entry>,
                  drift: &mut Drift| {
        let u = part.user(rng, users);
        match m.time(|| w.create(&ctx.users[u as usize])) {
            Some(token) => {
                local.push(Entry { token, user: u });
                drift.appended += 1;
            }
            None => m.failed += 1,
        }
    };
    let end = |m: &mut Meter,
               w: &mut dyn Worker,
               rng: &mut Rng,
               local: &mut Vec<Entry>,
               drift: &mut Drift| {
        let e = local.swap_remove(rng.below(local.len()));
        let ok = m.time(|| w.end(&e.token, &ctx.users[e.user as usize]));
        m.check(ok);
        drift.removed.push(e.user);
    };
    while m.running() {
        if local.is_empty() && !matches!(op, Op::Create | Op::GetMiss | Op::SessionsOf) {
            capped = true;
            break;
        }
        match op {
            Op::GetHit => {
                let e = &local[rng.below(local.len())];
                let ok = m.time(|| w.get(&e.token));
                m.check(ok);
            }
            Op::GetMiss => {
                let t = &ctx.misses[rng.below(ctx.misses.len())];
                let found = m.time(|| w.get(t));
                m.check(!found);
            }
            Op::Create => {
                if drift.appended >= max_add {
                    capped = true;
                    break;
                }
                create(&mut m, w, &mut rng, &mut local, &mut drift);
            }
            Op::Update => {
                let e = &local[rng.below(local.len())];
                let ok = m.time(|| w.update(&e.token, &ctx.users[e.user as usize]));
                m.check(ok);
            }
            Op::Touch => {
                let e = &local[rng.below(local.len())];
                let ok = m.time(|| w.touch(&e.token));
                m.check(ok);
            }
            Op::Rotate => {
                let i = rng.below(local.len());
                let e = &local[i];
                match m.time(|| w.rotate(&e.token, &ctx.users[e.user as usize])) {
                    Some(t) => local[i].token = t,
                    None => m.failed += 1,
                }
            }
            Op::SessionsOf => {
                let u = rng.below(users);
                let n = m.time(|| w.sessions_of(&ctx.users[u]));
                black_box(n);
            }
            Op::End => {
                if local.len() <= floor {
                    capped = true;
                    break;
                }
                end(&mut m, w, &mut rng, &mut local, &mut drift);
            }
            Op::RevokeUser => {
                let Some(u) = owned.pop() else {
                    capped = true;
                    break;
                };
                let n = m.time(|| w.revoke_user(&ctx.users[u as usize]));
                m.check(n > 0);
                revoked[u as usize] = true;
            }
            Op::Mixed => {
                let r = rng.below(100);
                if r < 90 {
                    let e = &local[rng.below(local.len())];
                    let ok = m.time(|| w.get(&e.token));
                    m.check(ok);
                } else if r < 95 {
                    let e = &local[rng.below(local.len())];
                    let ok = m.time(|| w.update(&e.token, &ctx.users[e.user as usize]));
                    m.check(ok);
                } else if r < 99 {
                    create(&mut m, w, &mut rng, &mut local, &mut drift);
                } else if local.len() > floor {
                    end(&mut m, w, &mut rng, &mut local, &mut drift);
                }
            }
        }
    }
    let end_at = m.last;
    if op == Op::RevokeUser {
        local.retain(|e| {
            let gone = revoked[e.user as usize];
            if gone {
                drift.removed.push(e.user);
            }
            !gone
        });
    }
    ThreadOut {
        local,
        initial,
        drift,
        hist: m.hist,
        ops: m.ops,
        failed: m.failed,
        start,
        end: end_at,
        capped,
    }
}

/// What one run measured.
struct RunResult {
    engine: String,
    op: Op,
    threads: usize,
    ops: u64,
    failed: u64,
    secs: f64,
    hist: Hist,
    capped: bool,
    /// fsyncs per second and records per fsync, for engines that count them.
    sync: Option<(f64, f64)>,
}

impl RunResult {
    fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// (fsyncs per second, records per fsync) between two `(fsyncs, records)` readings
/// `secs` apart.
fn sync_rates((s0, r0): (u64, u64), (s1, r1): (u64, u64), secs: f64) -> (f64, f64) {
    let syncs = (s1 - s0) as f64;
    let recs = (r1 - r0) as f64;
    let per_sec = if secs > 0.0 { syncs / secs } else { 0.0 };
    (per_sec, if syncs > 0.0 { recs / syncs } else { 0.0 })
}

/// Runs `op` on `threads` threads over the pool, then restores the pool's size
/// (untimed) if the run moved it by more than 0.5%.
fn run_op(
    engine: &dyn Engine,
    name: &str,
    ctx: &Ctx,
    pool: &mut Vec<Entry>,
    op: Op,
    threads: usize,
) -> RunResult {
    let mut parts: Vec<Vec<Entry>> = (0..threads)
        .map(|_| Vec::with_capacity(pool.len() / threads + 16))
        .collect();
    for e in pool.drain(..) {
        parts[e.user as usize % threads].push(e);
    }
    let start_line = Barrier::new(threads + 1);
    let finish_line = Barrier::new(threads + 1);
    let seed = now_ms() ^ ((op as u64) << 32);
    let (outs, sync) = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(index, local)| {
                let (start_line, finish_line) = (&start_line, &finish_line);
                s.spawn(move || {
                    let part = Part {
                        index,
                        count: threads,
                    };
                    let mut w = engine.worker();
                    start_line.wait();
                    let out = match w.as_mut() {
                        Ok(w) => measure(
                            w.as_mut(),
                            ctx,
                            op,
                            part,
                            local,
                            seed.wrapping_add(index as u64 * 7919),
                        ),
                        Err(e) => {
                            note_err(name, e);
                            let now = Instant::now();
                            ThreadOut {
                                initial: local.len(),
                                local,
                                drift: Drift::default(),
                                hist: Hist::new(),
                                ops: 0,
                                failed: 1,
                                start: now,
                                end: now,
                                capped: false,
                            }
                        }
                    };
                    finish_line.wait();
                    out
                })
            })
            .collect();
        let before = engine.sync_stats();
        start_line.wait();
        finish_line.wait();
        let after = engine.sync_stats();
        let outs: Vec<ThreadOut> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect();
        (outs, before.zip(after))
    });

    let mut hist = Hist::new();
    let (mut ops, mut failed, mut capped) = (0, 0, false);
    let first = outs.iter().map(|o| o.start).min();
    let last = outs.iter().map(|o| o.end).max();
    let secs = match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let mut to_create = Vec::new();
    let mut to_end = Vec::new();
    for mut o in outs {
        hist.merge(&o.hist);
        ops += o.ops;
        failed += o.failed;
        capped |= o.capped;
        let net = o.drift.removed.len() as i64 - o.drift.appended as i64;
        let tolerance = (o.initial / 200).max(1) as i64;
        if net > tolerance {
            to_create.extend(o.drift.removed.iter().take(net as usize));
        } else if -net > tolerance {
            let keep = o.local.len().saturating_sub((-net) as usize);
            to_end.extend(o.local.drain(keep..));
        }
        pool.append(&mut o.local);
    }
    if !to_create.is_empty() || !to_end.is_empty() {
        let t = Instant::now();
        pool.extend(engine.bulk_create(ctx, &to_create));
        engine.bulk_end(ctx, &to_end);
        ctx.progress(format_args!(
            "  (rebalanced: +{} −{} sessions in {:.1} s)",
            to_create.len(),
            to_end.len(),
            t.elapsed().as_secs_f64()
        ));
    }
    let sync = sync.map(|(before, after)| sync_rates(before, after, secs));
    let r = RunResult {
        engine: name.to_owned(),
        op,
        threads,
        ops,
        failed,
        secs,
        hist,
        capped,
        sync,
    };
    ctx.progress(format_args!(
        "{name:<22} {:<16} ×{threads:<2} {:>12} ops/s  p50 {:>8}  p99 {:>8}{}{}",
        op.name(),
        fmt_count(r.ops_per_sec()),
        fmt_ns(r.hist.percentile(0.50)),
        fmt_ns(r.hist.percentile(0.99)),
        if capped { "  (pool cap)" } else { "" },
        if failed > 0 {
            format!("  ({failed} failed)")
        } else {
            String::new()
        },
    ));
    r
}

// -------------------------------------------------------------------------------------
// Engines in sequence

/// What the legend table says about an engine.
struct Info {
    name: String,
    durability: &'static str,
    baseline: &'static str,
    sessions: usize,
    preload: String,
    revoke: &'static str,
    listing: &'static str,
    /// The disk's raw fdatasync rate just before this engine's runs.
    fsync: f64,
}

/// One engine's create throughput in each round of the interleaved group-commit run.
struct GroupRounds {
    engine: String,
    threads: usize,
    ops: Vec<f64>,
    /// (fsyncs per second, records per fsync) per round, for engines that count them.
    sync: Vec<(f64, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[derive(Default)]
struct Report {
    infos: Vec<Info>,
    runs: Vec<RunResult>,
    group: Vec<RunResult>,
    group_rounds: Vec<GroupRounds>,
    /// Raw fdatasync rate (4 KiB appends) at the start of each interleaved round.
    group_fsync: Vec<f64>,
    /// Sessions preloaded into each peer, and into each sessiondb store.
    group_preload: (usize, usize),
    skipped: Vec<String>,
    memory: Vec<MemRow>,
    recovery: Vec<(String, String)>,
    fsync_rate: f64,
    fsync_in_place: f64,
    fsync_end: f64,
    spinners: String,
    redis_memory: Vec<MemRow>,
    timer_ns: f64,
}

const SDB_MEMORY: &str = "sessiondb Memory";
const SDB_BUFFERED: &str = "sessiondb Buffered";
const SDB_SYNC: &str = "sessiondb Sync";
const SDB_SYNC_ASYNC: &str = "sessiondb Sync, async tasks";
/// Runtime worker threads under the async tasks of the interleaved group-commit run.
const GROUP_ASYNC_WORKERS: usize = 2;
const SDB_REDIS: &str = "sessiondb on Redis";

/// Preloads (unless a pool is handed over) and runs every op at every thread count.
fn bench_engine(
    engine: &dyn Engine,
    mut info: Info,
    ctx: &Ctx,
    pool: Option<Vec<Entry>>,
    report: &mut Report,
) -> Vec<Entry> {
    let mut pool = match pool {
        Some(p) => p,
        None => {
            ctx.progress(format_args!("{}: preloading {} sessions", info.name, ctx.n));
            let t = Instant::now();
            let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
            let p = engine.bulk_create(ctx, &users);
            info.preload = format!("{:.1} s", t.elapsed().as_secs_f64());
            p
        }
    };
    info.sessions = pool.len();
    info.fsync = raw_fdatasync_rate(0.5, false);
    ctx.progress(format_args!(
        "{}: {} sessions, preload {}; raw fdatasync now {}/s",
        info.name,
        pool.len(),
        info.preload,
        fmt_count(info.fsync)
    ));
    for op in OPS {
        for &t in &ctx.threads {
            let r = run_op(engine, &info.name, ctx, &mut pool, op, t);
            report.runs.push(r);
        }
    }
    report.infos.push(info);
    pool
}

fn info(
    name: &str,
    durability: &'static str,
    baseline: &'static str,
    revoke: &'static str,
    listing: &'static str,
) -> Info {
    Info {
        name: name.to_owned(),
        durability,
        baseline,
        sessions: 0,
        preload: String::new(),
        revoke,
        listing,
        fsync: 0.0,
    }
}

fn bench_sessiondb(ctx: &Ctx, report: &mut Report) {
    const REVOKE: &str = "`revoke_user` (per-user index)";
    const LIST: &str = "`sessions_of` (per-user index)";
    {
        let e = SdbEngine::memory();
        let i = info(SDB_MEMORY, "none (in process memory)", "—", REVOKE, LIST);
        bench_engine(&e, i, ctx, None, report);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = {
        let e = SdbEngine::open(dir.path(), Durability::default());
        let i = info(
            SDB_BUFFERED,
            "log, fsync every 100 ms (default)",
            "—",
            REVOKE,
            LIST,
        );
        let pool = bench_engine(&e, i, ctx, None, report);
        e.store.flush().expect("flush");
        pool
    };
    let t = Instant::now();
    let e = SdbEngine::open(dir.path(), Durability::Sync);
    let mut i = info(
        SDB_SYNC,
        "log, fsync before ack (group commit)",
        "—",
        REVOKE,
        LIST,
    );
    i.preload = format!(
        "the Buffered store, reopened as Sync in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut pool = bench_engine(&e, i, ctx, Some(pool), report);
    let r = run_op(
        &e,
        SDB_SYNC,
        ctx,
        &mut pool,
        Op::Create,
        GROUP_SESSIONDB_WRITERS,
    );
    report.group.push(r);
}

fn bench_memory_peers(ctx: &Ctx, report: &mut Report) {
    if ctx.wants("moka") {
        let e = MokaEngine::new();
        let i = info(
            "moka",
            "none (in process memory)",
            SDB_MEMORY,
            "side index user → tokens, `remove` each",
            "side index, `get` each",
        );
        bench_engine(&e, i, ctx, None, report);
    }
    if ctx.wants("hashmap") {
        let e = MapEngine::new();
        let i = info(
            "HashMap ceiling",
            "none (in process memory)",
            SDB_MEMORY,
            "side index user → tokens, `remove` each",
            "side index, lookup each",
        );
        bench_engine(&e, i, ctx, None, report);
    }
}

fn bench_sled(ctx: &Ctx, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = SledEngine::open(dir.path());
    const REVOKE: &str = "scan of prefix `user\\0` in a by-user tree, remove each";
    const LIST: &str = "scan of prefix `user\\0`, `get` each";
    let i = info(
        "sled",
        "default config (flush every 500 ms)",
        SDB_BUFFERED,
        REVOKE,
        LIST,
    );
    let pool = bench_engine(&e, i, ctx, None, report);
    e.flush_each.store(true, Ordering::Relaxed);
    let mut i = info(
        "sled flush/write",
        "`flush()` after every write",
        SDB_SYNC,
        REVOKE,
        LIST,
    );
    i.preload = "the sled store above".to_owned();
    let mut pool = bench_engine(&e, i, ctx, Some(pool), report);
    let r = run_op(
        &e,
        "sled flush/write",
        ctx,
        &mut pool,
        Op::Create,
        GROUP_PEER_CLIENTS,
    );
    report.group.push(r);
}

fn bench_sqlite(ctx: &Ctx, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    const REVOKE: &str = "`DELETE … WHERE user = ?` (index on user)";
    const LIST: &str = "`SELECT … WHERE user = ?` (index on user)";
    let pool = {
        let e = SqliteEngine::open(&path, "NORMAL");
        let i = info(
            "SQLite NORMAL",
            "WAL, synchronous=NORMAL",
            SDB_BUFFERED,
            REVOKE,
            LIST,
        );
        bench_engine(&e, i, ctx, None, report)
    };
    let e = SqliteEngine::open(&path, "FULL");
    let mut i = info(
        "SQLite FULL",
        "WAL, synchronous=FULL",
        SDB_SYNC,
        REVOKE,
        LIST,
    );
    i.preload = "the SQLite file above".to_owned();
    let mut pool = bench_engine(&e, i, ctx, Some(pool), report);
    let r = run_op(
        &e,
        "SQLite FULL",
        ctx,
        &mut pool,
        Op::Create,
        GROUP_PEER_CLIENTS,
    );
    report.group.push(r);
}

fn bench_redis(ctx: &Ctx, report: &mut Report) {
    if !redis_installed() {
        let line = "redis: skipped (redis-server not installed)".to_owned();
        eprintln!("{line}");
        report.skipped.push(line);
        return;
    }
    const REVOKE: &str = "SET of tokens per user: SMEMBERS + DEL (2 round trips)";
    const LIST: &str = "SMEMBERS + MGET (2 round trips)";
    let variants: [(&str, &[&str], &str, &str); 2] = [
        (
            "Redis",
            &["--appendonly", "no"],
            "none (`--save \"\" --appendonly no`)",
            SDB_MEMORY,
        ),
        (
            "Redis AOF always",
            &["--appendonly", "yes", "--appendfsync", "always"],
            "AOF, `appendfsync always`",
            SDB_SYNC,
        ),
    ];
    for (name, args, durability, baseline) in variants {
        let e = match RedisEngine::start(args) {
            Ok(e) => e,
            Err(err) => {
                let line = format!("redis: skipped ({err})");
                eprintln!("{line}");
                report.skipped.push(line);
                return;
            }
        };
        ctx.progress(format_args!(
            "{name}: started redis-server (pid {}, port {})",
            e.server.child.id(),
            e.server.port
        ));
        let rss0 = e.server_rss();
        let i = info(name, durability, baseline, REVOKE, LIST);
        let n = ctx.n;
        if name == "Redis" {
            // Server memory right after the preload, before any run adds to it.
            ctx.progress(format_args!("{name}: preloading {n} sessions"));
            let t = Instant::now();
            let users: Vec<u32> = (0..n).map(|i| (i % ctx.users.len()) as u32).collect();
            let pool = e.bulk_create(ctx, &users);
            let mut i = i;
            i.preload = format!("{:.1} s", t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (rss0, e.server_rss()) {
                report.redis_memory.push(MemRow {
                    engine: "Redis (server process, INFO used_memory_rss)".to_owned(),
                    sessions: pool.len(),
                    before: a,
                    after: b,
                });
            }
            bench_engine(&e, i, ctx, Some(pool), report);
            bench_sessiondb_on_redis(&e, ctx, report);
        } else {
            let mut pool = bench_engine(&e, i, ctx, None, report);
            let r = run_op(&e, name, ctx, &mut pool, Op::Create, GROUP_PEER_CLIENTS);
            report.group.push(r);
        }
        ctx.progress(format_args!(
            "{name}: stopping redis-server (pid {})",
            e.server.child.id()
        ));
    }
}

/// sessiondb `Sync` creates from `tasks` async tasks on a tokio runtime of
/// [`GROUP_ASYNC_WORKERS`] threads, as an async server makes them: each write inside
/// `Store::deferred`, its `Commit` awaited, so no thread is blocked per writer. Timed
/// per op from the call to the commit's completion. The sessions it created are ended
/// afterwards, untimed, so every round starts from the same store.
fn run_async_creates(engine: &SdbEngine, ctx: &Ctx, tasks: usize) -> RunResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(GROUP_ASYNC_WORKERS)
        .build()
        .expect("tokio runtime");
    let store = &engine.store;
    // Shared, not copied per task: the timed window starts before the tasks do.
    let users: Arc<[String]> = ctx.users.clone().into();
    let before = engine.sync_stats();
    let start = Instant::now();
    let deadline = start + ctx.run;
    let outs: Vec<(Hist, u64, u64, Vec<Entry>, Instant)> = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let store = store.clone();
                let users = Arc::clone(&users);
                let profile = payload().profile_a.as_str();
                tokio::spawn(async move {
                    let (mut hist, mut ops, mut failed) = (Hist::new(), 0u64, 0u64);
                    let mut made = Vec::new();
                    let mut rng = Rng(0x9e37_79b9 ^ t as u64);
                    let mut last = Instant::now();
                    while last < deadline {
                        let u = rng.below(users.len());
                        let t0 = Instant::now();
                        let (r, commit) = store.deferred(|s| {
                            let mut data = SessionData::new();
                            data.insert("profile", profile)?;
                            s.create(NewSession::for_user(&users[u]).data(data))
                        });
                        let durable = commit.await;
                        last = Instant::now();
                        hist.record(last - t0);
                        match (r, durable) {
                            (Ok((token, _)), Ok(())) => {
                                ops += 1;
                                made.push(Entry {
                                    token: token.as_string(),
                                    user: u as u32,
                                });
                            }
                            (r, d) => {
                                failed += 1;
                                if let Err(e) = r.map(|_| ()).and(d) {
                                    note_err(SDB_SYNC_ASYNC, e);
                                }
                            }
                        }
                    }
                    (hist, ops, failed, made, last)
                })
            })
            .collect();
        let mut outs = Vec::new();
        for h in handles {
            outs.push(h.await.expect("bench task"));
        }
        outs
    });
    let after = engine.sync_stats();
    let end = outs.iter().map(|o| o.4).max().unwrap_or(start);
    let secs = end.saturating_duration_since(start).as_secs_f64();
    let mut hist = Hist::new();
    let (mut ops, mut failed, mut made) = (0, 0, Vec::new());
    for (h, o, f, mut m, _) in outs {
        hist.merge(&h);
        ops += o;
        failed += f;
        made.append(&mut m);
    }
    let t = Instant::now();
    engine.bulk_end(ctx, &made);
    ctx.progress(format_args!(
        "  (rebalanced: +0 −{} sessions in {:.1} s)",
        made.len(),
        t.elapsed().as_secs_f64()
    ));
    let sync = before
        .zip(after)
        .map(|(before, after)| sync_rates(before, after, secs));
    let r = RunResult {
        engine: SDB_SYNC_ASYNC.to_owned(),
        op: Op::Create,
        threads: tasks,
        ops,
        failed,
        secs,
        hist,
        capped: false,
        sync,
    };
    ctx.progress(format_args!(
        "{SDB_SYNC_ASYNC:<22} {:<16} ×{tasks:<2} {:>12} ops/s  p50 {:>8}  p99 {:>8} ({GROUP_ASYNC_WORKERS} runtime threads)",
        Op::Create.name(),
        fmt_count(r.ops_per_sec()),
        fmt_ns(r.hist.percentile(0.50)),
        fmt_ns(r.hist.percentile(0.99)),
    ));
    r
}

/// Group commit against the peers' fsync-per-write modes, interleaved: every engine is
/// open at once (fresh, empty stores: the same for all), and each round runs each one's
/// concurrent creates back to back, in an order that rotates per round. On a shared VM
/// the disk's fsync rate swings several-fold within minutes, so the ratio is taken per
/// round, and the median of the rounds is the figure; the per-engine sections' group
/// rows, run minutes apart, move with the disk.
fn bench_group_interleaved(ctx: &Ctx, report: &mut Report) {
    let rounds: usize = env_parse("SESSIONDB_BENCH_GROUP_ROUNDS")
        .unwrap_or(5)
        .max(1);
    let sdb_dir = tempfile::tempdir().expect("tempdir");
    let sled_dir = tempfile::tempdir().expect("tempdir");
    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let sdb = SdbEngine::open(sdb_dir.path(), Durability::Sync);
    let async_dir = tempfile::tempdir().expect("tempdir");
    let sdb_async = SdbEngine::open(async_dir.path(), Durability::Sync);
    let sled = SledEngine::open(sled_dir.path());
    sled.flush_each.store(true, Ordering::Relaxed);
    let sqlite = SqliteEngine::open(&sqlite_dir.path().join("sessions.db"), "FULL");
    let redis = if !redis_installed() {
        report
            .skipped
            .push("interleaved group commit: Redis skipped (redis-server not installed)".into());
        None
    } else {
        match RedisEngine::start(&["--appendonly", "yes", "--appendfsync", "always"]) {
            Ok(e) => Some(e),
            Err(err) => {
                report
                    .skipped
                    .push(format!("interleaved group commit: Redis skipped ({err})"));
                None
            }
        }
    };
    let mut engines: Vec<(&str, &dyn Engine, usize)> = vec![
        (SDB_SYNC, &sdb, GROUP_SESSIONDB_WRITERS),
        ("sled flush/write", &sled, GROUP_PEER_CLIENTS),
        ("SQLite FULL", &sqlite, GROUP_PEER_CLIENTS),
    ];
    if let Some(r) = &redis {
        engines.push(("Redis AOF always", r, GROUP_PEER_CLIENTS));
    }
    // A preload: a thread creates at most its share of the pool in one run (the
    // harness's bound on growth). The peers get 256,000 (at 50 clients none comes near
    // using it up in a run; 1,000,000 would add ~25 s of sled and SQLite preloading).
    // sessiondb's two stores get four times as many: its 64 writer threads make
    // ~200,000 creates/s here, and with a 256,000 pool ran out ~1.2 s into a 2 s run.
    // The larger store only makes sessiondb's maps bigger, no help to it.
    let preload = ctx.n.clamp(64_000, 256_000);
    let sdb_preload = 4 * preload;
    let users = |n: usize| -> Vec<u32> { (0..n).map(|i| (i % ctx.users.len()) as u32).collect() };
    let mut pools: Vec<Vec<Entry>> = engines
        .iter()
        .map(|&(name, engine, _)| {
            let n = if name == SDB_SYNC {
                sdb_preload
            } else {
                preload
            };
            ctx.progress(format_args!(
                "interleaved group commit: preloading {name} with {n} sessions"
            ));
            engine.bulk_create(ctx, &users(n))
        })
        .collect();
    ctx.progress(format_args!(
        "interleaved group commit: preloading {SDB_SYNC_ASYNC} with {sdb_preload} sessions"
    ));
    drop(sdb_async.bulk_create(ctx, &users(sdb_preload)));
    // The async run is one more turn in each round, after the engines above.
    let turns = engines.len() + 1;
    let mut runs: Vec<Vec<RunResult>> = (0..turns).map(|_| Vec::new()).collect();
    let mut fsync = Vec::new();
    for round in 0..rounds {
        ctx.progress(format_args!(
            "interleaved group commit: round {}",
            round + 1
        ));
        fsync.push(raw_fdatasync_rate(0.5, false));
        for k in 0..turns {
            let i = (k + round) % turns;
            let r = match engines.get(i) {
                Some(&(name, engine, threads)) => {
                    run_op(engine, name, ctx, &mut pools[i], Op::Create, threads)
                }
                None => run_async_creates(&sdb_async, ctx, GROUP_SESSIONDB_WRITERS),
            };
            runs[i].push(r);
        }
    }
    let names = engines
        .iter()
        .map(|&(name, _, threads)| (name, threads))
        .chain([(SDB_SYNC_ASYNC, GROUP_SESSIONDB_WRITERS)]);
    report.group_rounds = names
        .zip(runs)
        .map(|((name, threads), runs)| GroupRounds {
            engine: name.to_owned(),
            threads,
            ops: runs.iter().map(RunResult::ops_per_sec).collect(),
            sync: runs.iter().filter_map(|r| r.sync).collect(),
        })
        .collect();
    report.group_fsync = fsync;
    report.group_preload = (preload, sdb_preload);
}

/// sessiondb's Redis backend on the same server as the raw "Redis" row (its own key
/// prefix), compared with the embedded store: what moving sessions off the process
/// costs. Needs `--features redis`.
#[cfg(feature = "redis")]
fn bench_sessiondb_on_redis(raw: &RedisEngine, ctx: &Ctx, report: &mut Report) {
    let url = format!("redis://127.0.0.1:{}/", raw.server.port);
    match SdbRedisEngine::connect(&url) {
        Ok(e) => {
            let i = info(
                SDB_REDIS,
                "the Redis server above (no persistence); one Lua script per operation",
                SDB_MEMORY,
                "`revoke_user`: one script over the user's sorted set",
                "`sessions_of`: one script, pruning the user's sorted set",
            );
            // The server's growth over our preload (its other sessions, the raw rows',
            // are already there): what a session costs in Redis with the user index.
            ctx.progress(format_args!("{SDB_REDIS}: preloading {} sessions", ctx.n));
            let rss0 = raw.server_rss();
            let t = Instant::now();
            let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
            let pool = e.bulk_create(ctx, &users);
            let mut i = i;
            i.preload = format!("{:.1} s", t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (rss0, raw.server_rss()) {
                report.redis_memory.push(MemRow {
                    engine: format!(
                        "{SDB_REDIS} (growth of the same server, INFO used_memory_rss)"
                    ),
                    sessions: pool.len(),
                    before: a,
                    after: b,
                });
            }
            bench_engine(&e, i, ctx, Some(pool), report);
        }
        Err(err) => {
            let line = format!("{SDB_REDIS}: skipped ({err})");
            eprintln!("{line}");
            report.skipped.push(line);
        }
    }
}

#[cfg(not(feature = "redis"))]
fn bench_sessiondb_on_redis(_raw: &RedisEngine, _ctx: &Ctx, report: &mut Report) {
    report.skipped.push(format!(
        "{SDB_REDIS}: skipped (run with `--features redis`)"
    ));
}

// -------------------------------------------------------------------------------------
// Memory: each in-memory engine preloaded in a child process of its own

struct MemRow {
    engine: String,
    sessions: usize,
    before: u64,
    after: u64,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// In the child: preload one engine on one thread, tokens discarded as they come, and
/// print the resident set size before and after.
fn child_main(spec: &str) {
    if let Some(dir) = spec.strip_prefix("open:") {
        child_open(dir);
        return;
    }
    let n: usize = env_parse("SESSIONDB_BENCH_SESSIONS").unwrap_or(1_000_000);
    let users: Vec<String> = (0..(n / SESSIONS_PER_USER).max(1))
        .map(|u| format!("user-{u}"))
        .collect();
    let _ = payload();
    let before = rss_bytes();
    fn fill<E: Engine>(e: &E, users: &[String], n: usize) -> usize {
        let mut w = e.worker().expect("worker");
        (0..n)
            .filter(|&i| w.create(&users[i % users.len()]).is_some())
            .count()
    }
    let (made, after) = match spec {
        "sessiondb" => {
            let e = SdbEngine::memory();
            let made = fill(&e, &users, n);
            (made, rss_bytes())
        }
        "moka" => {
            let e = MokaEngine::new();
            let made = fill(&e, &users, n);
            e.cache.run_pending_tasks();
            (made, rss_bytes())
        }
        "hashmap" => {
            let e = MapEngine::new();
            let made = fill(&e, &users, n);
            (made, rss_bytes())
        }
        other => panic!("unknown child engine {other}"),
    };
    println!("RSS {before} {after} {made}");
}

fn measure_memory(ctx: &Ctx, report: &mut Report) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            report
                .skipped
                .push(format!("memory: skipped (current_exe: {e})"));
            return;
        }
    };
    for (spec, name) in [
        ("sessiondb", SDB_MEMORY),
        ("moka", "moka"),
        ("hashmap", "HashMap ceiling"),
    ] {
        ctx.progress(format_args!("memory: {name} in a child process"));
        let out = Command::new(&exe)
            .env(CHILD_ENV, spec)
            .env("SESSIONDB_BENCH_SESSIONS", ctx.n.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        let parsed = out.ok().and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = s.lines().find(|l| l.starts_with("RSS "))?.to_owned();
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2] as usize))
        });
        match parsed {
            Some((before, after, sessions)) => report.memory.push(MemRow {
                engine: name.to_owned(),
                sessions,
                before,
                after,
            }),
            None => report.skipped.push(format!("memory: {name} child failed")),
        }
    }
}

// -------------------------------------------------------------------------------------
// Recovery and compaction

fn measure_recovery(ctx: &Ctx, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    ctx.progress(format_args!(
        "recovery: loading {} sessions (Buffered)",
        ctx.n
    ));
    let load = Instant::now();
    {
        let e = SdbEngine {
            store: Store::open_with(dir.path(), recovery_options()).expect("open"),
        };
        let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
        drop(e.bulk_create(ctx, &users));
        e.store.flush().expect("flush");
        e.store.close().expect("close");
    }
    let rows = &mut report.recovery;
    rows.push((
        format!("load {} sessions, Buffered, flush, close", ctx.n),
        format!("{:.2} s", load.elapsed().as_secs_f64()),
    ));
    ctx.progress(format_args!("recovery: opening the log in fresh processes"));
    match timed_opens(dir.path(), OPENS_OF_LOG) {
        Ok((open, o)) => rows.push((
            format!(
                "`Store::open` from the uncompacted log, in a fresh process (median of {OPENS_OF_LOG})"
            ),
            format!(
                "{open} ({} records, {} sessions, {} files, {} read)",
                fmt_count(o.records as f64),
                fmt_count(o.sessions as f64),
                o.files,
                fmt_bytes(o.bytes_read)
            ),
        )),
        Err(e) => rows.push(("`Store::open` from the uncompacted log".to_owned(), e)),
    }
    let store = Store::open_with(dir.path(), recovery_options()).expect("reopen");
    rows.push((
        "log size before compaction (`stats().disk_bytes`)".to_owned(),
        fmt_bytes(store.stats().disk_bytes),
    ));
    match store.compact() {
        Ok(c) => {
            rows.push((
                "`compact()`: bytes before → after".to_owned(),
                format!(
                    "{} → {} ({} sessions, {:.2} s)",
                    fmt_bytes(c.bytes_before),
                    fmt_bytes(c.bytes_after),
                    fmt_count(c.sessions as f64),
                    c.duration.as_secs_f64()
                ),
            ));
            rows.push((
                "log size after compaction (`stats().disk_bytes`)".to_owned(),
                fmt_bytes(store.stats().disk_bytes),
            ));
        }
        Err(e) => rows.push(("`compact()`".to_owned(), format!("failed: {e}"))),
    }
    store.close().expect("close");
    ctx.progress(format_args!(
        "recovery: opening the base in fresh processes"
    ));
    match timed_opens(dir.path(), OPENS_OF_BASE) {
        Ok((open, o)) => rows.push((
            format!(
                "`Store::open` from the compacted base, in a fresh process (median of {OPENS_OF_BASE})"
            ),
            format!("{open} ({} sessions)", fmt_count(o.sessions as f64)),
        )),
        Err(e) => rows.push(("`Store::open` from the compacted base".to_owned(), e)),
    }
}

/// Auto-compaction off, so the loaded log holds the whole history (a create record,
/// with its data, per session): the worst case recovery has to read.
fn recovery_options() -> Options {
    Options::default().compaction(false, u64::MAX, 2.0)
}

/// How many times each recovery is timed: one open on a shared machine can land on a
/// bad moment either way, so the table gives the median and the range.
const OPENS_OF_LOG: usize = 3;
const OPENS_OF_BASE: usize = 5;

/// What one open in a child process reported.
struct Opened {
    secs: f64,
    sessions: usize,
    records: u64,
    files: usize,
    bytes_read: u64,
}

/// In the child: opens the store at `dir` (as an application starting up: a fresh
/// process, nothing of the store in its memory) and prints how long it took.
fn child_open(dir: &str) {
    let t = Instant::now();
    let store = Store::open_with(dir, recovery_options()).expect("open");
    let secs = t.elapsed().as_secs_f64();
    let r = store.recovery_report();
    println!(
        "OPEN {secs} {} {} {} {}",
        r.sessions, r.records, r.files, r.bytes_read
    );
}

/// Opens the store at `dir` in `times` fresh processes, one after another; returns
/// "median s (min–max)" and the last open's report, or why it could not.
fn timed_opens(dir: &Path, times: usize) -> Result<(String, Opened), String> {
    let exe = std::env::current_exe().map_err(|e| format!("skipped (current_exe: {e})"))?;
    let mut opens = Vec::with_capacity(times);
    for _ in 0..times {
        let out = Command::new(&exe)
            .env(CHILD_ENV, format!("open:{}", dir.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("child failed: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: Vec<f64> = stdout
            .lines()
            .find_map(|l| l.strip_prefix("OPEN "))
            .ok_or_else(|| format!("child failed ({})", out.status))?
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [secs, sessions, records, files, bytes_read] = v[..] else {
            return Err(format!("child printed {stdout:?}"));
        };
        opens.push(Opened {
            secs,
            sessions: sessions as usize,
            records: records as u64,
            files: files as usize,
            bytes_read: bytes_read as u64,
        });
    }
    let mut secs: Vec<f64> = opens.iter().map(|o| o.secs).collect();
    secs.sort_by(f64::total_cmp);
    let shown = format!(
        "{:.2} s ({:.2}–{:.2})",
        secs[secs.len() / 2],
        secs[0],
        secs[secs.len() - 1]
    );
    Ok((shown, opens.pop().ok_or("no opens")?))
}

// -------------------------------------------------------------------------------------
// The machine, the disk, the timer

/// fdatasyncs per second of 4 KiB writes to a file in the temp dir (where every durable
/// engine here keeps its files): appends that grow the file (so each sync also commits
/// the new size), or, with `in_place`, overwrites inside a preallocated 4 MiB file.
fn raw_fdatasync_rate(secs: f64, in_place: bool) -> f64 {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(!in_place)
        .write(in_place)
        .open(dir.path().join("probe"))
        .expect("probe file");
    let block = [7u8; 4096];
    if in_place {
        for i in 0..1024u64 {
            f.write_all_at(&block, i * 4096).expect("prefill");
        }
        f.sync_all().expect("fsync");
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        if in_place {
            f.write_all_at(&block, (n % 1024) * 4096).expect("write");
        } else {
            f.write_all(&block).expect("write");
        }
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Busy threads at `SCHED_IDLE` priority, one per core, for the length of the run: they
/// only get a CPU nobody else wants, and keep it from going idle. On a virtual machine an
/// idle vCPU takes ~100 µs to wake (a VM exit), which would otherwise be added to every
/// cross-thread or cross-process round trip (Redis on loopback, a group commit's wake-up)
/// and swamp what is being measured; bare metal wakes in a few µs.
struct Spinners {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    active: usize,
}

impl Spinners {
    fn start(n: usize) -> Spinners {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let handles = (0..n)
            .map(|_| {
                let (stop, tx) = (stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    // `chrt -i -p 0 <tid>`: SCHED_IDLE for this thread only.
                    let ok = std::fs::read_link("/proc/thread-self")
                        .ok()
                        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()))
                        .is_some_and(|tid| {
                            Command::new("chrt")
                                .args(["-i", "-p", "0", &tid])
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .status()
                                .is_ok_and(|s| s.success())
                        });
                    let _ = tx.send(ok);
                    drop(tx);
                    if !ok {
                        return; // never spin at normal priority
                    }
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        drop(tx);
        let active = rx.iter().take(n).filter(|&ok| ok).count();
        Spinners {
            stop,
            handles,
            active,
        }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Cost of the two `Instant::now()` calls around every timed op.
fn timer_overhead_ns() -> f64 {
    let n = 1_000_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(Instant::now());
        black_box(Instant::now());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn machine_line(ctx: &Ctx) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| format!(", {} RAM", fmt_bytes(kb * 1024)));
    format!("{cpu}, {} cores{mem}, Linux {kernel}", ctx.parallelism)
}

fn command_line() -> String {
    let mut cmd = String::new();
    for var in [
        "SESSIONDB_BENCH_SESSIONS",
        "SESSIONDB_BENCH_SECS",
        "SESSIONDB_BENCH_ONLY",
        "SESSIONDB_BENCH_SPIN",
        "SESSIONDB_BENCH_GROUP_ROUNDS",
    ] {
        if let Ok(v) = std::env::var(var) {
            let _ = write!(cmd, "{var}={v} ");
        }
    }
    cmd.push_str("cargo bench --bench throughput");
    if cfg!(feature = "redis") {
        cmd.push_str(" --features redis");
    }
    cmd
}

// -------------------------------------------------------------------------------------
// Formatting

fn fmt_count(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_ns(ns: u64) -> String {
    let x = ns as f64;
    if x < 1e3 {
        format!("{ns} ns")
    } else if x < 1e6 {
        format!("{:.1} µs", x / 1e3)
    } else if x < 1e9 {
        format!("{:.2} ms", x / 1e6)
    } else {
        format!("{:.2} s", x / 1e9)
    }
}

fn fmt_bytes(b: u64) -> String {
    let x = b as f64;
    if x < 1e6 {
        format!("{:.1} kB", x / 1e3)
    } else if x < 1e9 {
        format!("{:.1} MB", x / 1e6)
    } else {
        format!("{:.2} GB", x / 1e9)
    }
}

fn print_report(ctx: &Ctx, report: &Report) {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "\n# sessiondb throughput: side by side with its peers\n");
    let _ = writeln!(o, "- machine: {}", machine_line(ctx));
    let _ = writeln!(o, "- command: `{}`", command_line());
    let _ = writeln!(
        o,
        "- workload: {} sessions preloaded over {} users (~{} each), ~200 B of data each \
         (key \"profile\", a 180-character string); {:.1} s per run; threads {:?}",
        fmt_count(ctx.n as f64),
        fmt_count(ctx.users.len() as f64),
        SESSIONS_PER_USER,
        ctx.run.as_secs_f64(),
        ctx.threads
    );
    let _ = writeln!(
        o,
        "- disk: raw fdatasync of 4 KiB appends: {}/s at the start, {}/s at the end; of \
         4 KiB overwrites in a preallocated file: {}/s (1 s loops, same filesystem as every \
         store; each engine's own 0.5 s probe is in the Engines table)",
        fmt_count(report.fsync_rate),
        fmt_count(report.fsync_end),
        fmt_count(report.fsync_in_place)
    );
    let _ = writeln!(
        o,
        "- latency is per op, timed with two `Instant::now()` calls ({:.0} ns per pair, \
         included), bucketed at ~3% resolution",
        report.timer_ns
    );
    let _ = writeln!(
        o,
        "- idle CPUs kept awake by SCHED_IDLE spinner threads: {} (on a VM an idle vCPU \
         takes ~100 µs to wake, which lands on every round trip between threads or \
         processes; the spinners only use CPU time nothing else wants; they are stopped \
         before the memory and recovery sections)",
        report.spinners
    );
    for s in &report.skipped {
        let _ = writeln!(o, "- {s}");
    }

    let _ = writeln!(o, "\n## Engines\n");
    let _ = writeln!(
        o,
        "| engine | durability | sessions preloaded | preload | raw fdatasync/s before its runs | ratio column compares with | revoke-user | sessions-of-user |"
    );
    let _ = writeln!(o, "|---|---|---:|---|---:|---|---|---|");
    for i in &report.infos {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i.name,
            i.durability,
            fmt_count(i.sessions as f64),
            i.preload,
            fmt_count(i.fsync),
            i.baseline,
            i.revoke,
            i.listing
        );
    }

    let _ = writeln!(o, "\n## Throughput and latency\n");
    let _ = writeln!(
        o,
        "ops/s over the whole run; p50 / p99 per op; `sdb/peer` = the sessiondb engine of \
         the same durability (see Engines) divided by the peer: above 1 means sessiondb is \
         faster. † = the run stopped early when its share of sessions was used up (end and \
         revoke remove at most half, create adds at most as many as were preloaded); the \
         pool is restored untimed after each run.\n"
    );
    let mut head = "| op | engine |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for t in &ctx.threads {
        let _ = write!(head, " ops/s ×{t} | p50 / p99 ×{t} | sdb/peer ×{t} |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    let find = |engine: &str, op: Op, t: usize| {
        report
            .runs
            .iter()
            .find(|r| r.engine == engine && r.op == op && r.threads == t)
    };
    for op in OPS {
        for i in &report.infos {
            let mut row = format!("| {} | {} |", op.name(), i.name);
            for &t in &ctx.threads {
                match find(&i.name, op, t) {
                    Some(r) => {
                        let ratio = find(i.baseline, op, t)
                            .filter(|_| r.ops_per_sec() > 0.0)
                            .map_or_else(
                                || "—".to_owned(),
                                |b| format!("{:.2}", b.ops_per_sec() / r.ops_per_sec()),
                            );
                        let failed = if r.failed > 0 {
                            format!(
                                " ({:.1}% failed)",
                                100.0 * r.failed as f64 / r.ops.max(1) as f64
                            )
                        } else {
                            String::new()
                        };
                        let _ = write!(
                            row,
                            " {}{}{} | {} / {} | {} |",
                            fmt_count(r.ops_per_sec()),
                            if r.capped { " †" } else { "" },
                            failed,
                            fmt_ns(r.hist.percentile(0.50)),
                            fmt_ns(r.hist.percentile(0.99)),
                            ratio
                        );
                    }
                    None => row.push_str(" — | — | — |"),
                }
            }
            let _ = writeln!(o, "{row}");
        }
    }

    let sync_runs: Vec<&RunResult> = report
        .runs
        .iter()
        .chain(report.group.iter())
        .filter(|r| {
            r.engine == SDB_SYNC && !matches!(r.op, Op::GetHit | Op::GetMiss | Op::SessionsOf)
        })
        .collect();
    if !sync_runs.is_empty() {
        let _ = writeln!(o, "\n## sessiondb Sync: group commit\n");
        let _ = writeln!(
            o,
            "From `Store::stats()` (`log_syncs`, `log_records`) over each run (write ops \
             only); the disk does {}/s raw. `create` carries its data (`NewSession::data`): \
             one record, one wait. `touch` is logged but not waited for, even under `Sync` \
             (the peers' durable variants do wait for theirs).\n",
            fmt_count(report.fsync_rate)
        );
        let _ = writeln!(
            o,
            "| op | threads | ops/s | p50 / p99 | fsyncs/s | records per fsync |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for r in sync_runs {
            let (fs, rpf) = r.sync.unwrap_or((0.0, 0.0));
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} / {} | {} | {:.1} |",
                r.op.name(),
                r.threads,
                fmt_count(r.ops_per_sec()),
                fmt_ns(r.hist.percentile(0.50)),
                fmt_ns(r.hist.percentile(0.99)),
                fmt_count(fs),
                rpf
            );
        }
    }

    if !report.group.is_empty() {
        let _ = writeln!(
            o,
            "\n## Durable creates under many concurrent writers, each engine in its own section\n"
        );
        let _ = writeln!(
            o,
            "sessiondb Sync with {GROUP_SESSIONDB_WRITERS} writer threads; the peers with \
             {GROUP_PEER_CLIENTS} concurrent clients (threads, each with its own \
             connection). Raw fdatasync: {}/s.\n",
            fmt_count(report.fsync_rate)
        );
        let _ = writeln!(
            o,
            "| engine | writers | create ops/s | p50 / p99 | fsyncs/s | records per fsync | sdb/peer |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        let sdb = report.group.iter().find(|r| r.engine == SDB_SYNC);
        for r in &report.group {
            let (fs, rpf) = r.sync.map_or_else(
                || ("—".to_owned(), "—".to_owned()),
                |(a, b)| (fmt_count(a), format!("{b:.1}")),
            );
            let ratio = match sdb {
                Some(s) if r.engine != SDB_SYNC && r.ops_per_sec() > 0.0 => {
                    format!("{:.2}", s.ops_per_sec() / r.ops_per_sec())
                }
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} / {} | {} | {} | {} |",
                r.engine,
                r.threads,
                fmt_count(r.ops_per_sec()),
                if r.failed > 0 {
                    format!(" ({} failed)", r.failed)
                } else {
                    String::new()
                },
                fmt_ns(r.hist.percentile(0.50)),
                fmt_ns(r.hist.percentile(0.99)),
                fs,
                rpf,
                ratio
            );
        }
    }

    if let Some(sdb) = report.group_rounds.iter().find(|g| g.engine == SDB_SYNC) {
        let _ = writeln!(
            o,
            "\n## Durable creates under many concurrent writers, interleaved\n"
        );
        let _ = writeln!(
            o,
            "Every engine open at once, each peer preloaded with {} sessions and each \
             sessiondb store with {} (a bigger pool for the fastest writers, so they do \
             not run out of their share before the run ends); {} rounds, \
             each running every engine's creates for {:.1} s back to back, the order \
             rotating per round. \
             sessiondb Sync with {GROUP_SESSIONDB_WRITERS} writer threads, and again with \
             {GROUP_SESSIONDB_WRITERS} async tasks on {GROUP_ASYNC_WORKERS} runtime threads \
             (`Store::deferred`, each commit awaited), the peers with {GROUP_PEER_CLIENTS} \
             clients. sdb/peer and async/peer are the medians of the per-round ratios \
             (min–max). Raw fdatasync (4 KiB appends) at the start of each round: {}.\n",
            fmt_count(report.group_preload.0 as f64),
            fmt_count(report.group_preload.1 as f64),
            sdb.ops.len(),
            ctx.run.as_secs_f64(),
            report
                .group_fsync
                .iter()
                .map(|&f| format!("{}/s", fmt_count(f)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            o,
            "| engine | writers | create ops/s (median of rounds) | fsyncs/s | records per fsync | sdb/peer (min–max) | async/peer (min–max) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        let asynch = report
            .group_rounds
            .iter()
            .find(|g| g.engine == SDB_SYNC_ASYNC);
        let ratio = |ours: &GroupRounds, peer: &GroupRounds| {
            let ratios: Vec<f64> = ours
                .ops
                .iter()
                .zip(&peer.ops)
                .filter(|&(_, &p)| p > 0.0)
                .map(|(&s, &p)| s / p)
                .collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios))
        };
        for g in &report.group_rounds {
            let (fs, rpf) = if g.sync.is_empty() {
                ("—".to_owned(), "—".to_owned())
            } else {
                (
                    fmt_count(median(g.sync.iter().map(|s| s.0).collect())),
                    format!("{:.1}", median(g.sync.iter().map(|s| s.1).collect())),
                )
            };
            let ours = g.engine == SDB_SYNC || g.engine == SDB_SYNC_ASYNC;
            let (vs_sdb, vs_async) = if ours {
                ("—".to_owned(), "—".to_owned())
            } else {
                (
                    ratio(sdb, g),
                    asynch.map_or_else(|| "—".to_owned(), |a| ratio(a, g)),
                )
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {fs} | {rpf} | {vs_sdb} | {vs_async} |",
                g.engine,
                g.threads,
                fmt_count(median(g.ops.clone())),
            );
        }
    }

    if !report.memory.is_empty() || !report.redis_memory.is_empty() {
        let _ = writeln!(o, "\n## Resident memory\n");
        let _ = writeln!(
            o,
            "Each in-process engine is preloaded on one thread in a child process of its own \
             (this binary, `{CHILD_ENV}`); VmRSS from /proc/self/status before the engine \
             exists and after the preload, tokens discarded as they come. Includes the \
             allocator's overhead and retention (glibc malloc), not just live bytes. Redis is \
             the server process, from `INFO memory`.\n"
        );
        let _ = writeln!(
            o,
            "| engine | sessions | RSS before | RSS after | bytes per session | per 1,000,000 sessions |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for m in report.memory.iter().chain(&report.redis_memory) {
            let per = m.after.saturating_sub(m.before) as f64 / m.sessions.max(1) as f64;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.0} | {} |",
                m.engine,
                fmt_count(m.sessions as f64),
                fmt_bytes(m.before),
                fmt_bytes(m.after),
                per,
                fmt_bytes((per * 1e6) as u64)
            );
        }
    }

    if !report.recovery.is_empty() {
        let _ = writeln!(o, "\n## sessiondb recovery and compaction\n");
        let _ = writeln!(
            o,
            "A log store of {} sessions written under `Buffered` with auto-compaction off \
             (so the log holds one create record, with its data, per session), flushed and closed.\n",
            fmt_count(ctx.n as f64)
        );
        let _ = writeln!(o, "| step | result |");
        let _ = writeln!(o, "|---|---|");
        for (k, v) in &report.recovery {
            let _ = writeln!(o, "| {k} | {v} |");
        }
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(out.as_bytes());
    let _ = lock.flush();
}

// -------------------------------------------------------------------------------------

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    // `cargo bench` passes `--bench` (and maybe a filter); nothing to parse.
    let n: usize = env_parse("SESSIONDB_BENCH_SESSIONS")
        .unwrap_or(1_000_000)
        .max(SESSIONS_PER_USER);
    let secs: f64 = env_parse("SESSIONDB_BENCH_SECS")
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(2.0);
    let parallelism = std::thread::available_parallelism().map_or(1, |p| p.get());
    let mut threads = vec![1, 2, parallelism];
    threads.sort_unstable();
    threads.dedup();
    let only = std::env::var("SESSIONDB_BENCH_ONLY").ok().map(|s| {
        s.split(',')
            .map(|x| x.trim().to_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let ctx = Ctx {
        n,
        users: (0..n / SESSIONS_PER_USER)
            .map(|u| format!("user-{u}"))
            .collect(),
        misses: (0..65_536).map(|_| new_token()).collect(),
        run: Duration::from_secs_f64(secs),
        threads,
        parallelism,
        only,
        started: Instant::now(),
    };
    let spin = std::env::var("SESSIONDB_BENCH_SPIN").map_or(true, |v| v.trim() != "0");
    let spinners = spin.then(|| Spinners::start(parallelism));
    let mut report = Report {
        timer_ns: timer_overhead_ns(),
        spinners: match &spinners {
            None => "off (`SESSIONDB_BENCH_SPIN=0`)".to_owned(),
            Some(s) if s.active == 0 => "off (could not set SCHED_IDLE with `chrt`)".to_owned(),
            Some(s) => format!("{} (`SESSIONDB_BENCH_SPIN=0` turns them off)", s.active),
        },
        ..Report::default()
    };
    ctx.progress(format_args!("{}", machine_line(&ctx)));
    ctx.progress(format_args!("{}", command_line()));
    report.fsync_rate = raw_fdatasync_rate(1.0, false);
    report.fsync_in_place = raw_fdatasync_rate(1.0, true);
    ctx.progress(format_args!(
        "raw fdatasync: {}/s (4 KiB appends), {}/s (4 KiB overwrites in place)",
        fmt_count(report.fsync_rate),
        fmt_count(report.fsync_in_place)
    ));

    if ctx.wants("sessiondb") {
        bench_sessiondb(&ctx, &mut report);
    }
    bench_memory_peers(&ctx, &mut report);
    if ctx.wants("sled") {
        bench_sled(&ctx, &mut report);
    }
    if ctx.wants("sqlite") {
        bench_sqlite(&ctx, &mut report);
    }
    if ctx.wants("redis") {
        bench_redis(&ctx, &mut report);
    }
    if ctx.wants("group") {
        bench_group_interleaved(&ctx, &mut report);
    }
    report.fsync_end = raw_fdatasync_rate(1.0, false);
    // The memory and recovery sections run in child processes, CPU-bound on every
    // core, with no wake-up to speed along: there the spinners only take time from
    // them (opening 1,000,000 sessions ran 10-20% slower beside them).
    drop(spinners);
    if ctx.wants("memory") {
        measure_memory(&ctx, &mut report);
    }
    if ctx.wants("recovery") {
        measure_recovery(&ctx, &mut report);
    }
    ctx.progress(format_args!(
        "done in {:.0} s",
        ctx.started.elapsed().as_secs_f64()
    ));
    print_report(&ctx, &report);
}
