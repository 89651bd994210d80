//! Durability of a store opened on a directory: what a reopen restores, the directory
//! lock, expiry across restarts, compaction (alone, racing writers, automatic), and
//! recovery from torn tails, truncation at every byte, bit flips, missing segments,
//! newer format versions and garbage files.
//!
//! Public API only: the files are damaged with `std::fs`, the way a crash or a bad disk
//! would. What these tests know of the format is what `src/log/format.rs` and
//! `src/log/manifest.rs` document: `seg-%016x.log` / `base-%016x.log` files starting
//! with a 25-byte header (magic | u32 version | kind | u64 seq | crc32 of the first 21
//! bytes) and then frames (u32 length | crc32 | type u8 | payload), and a `MANIFEST`
//! naming them. A crash image is a copy of a store's files taken while it is open.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiondb::{
    BackendKind, Durability, Error, ManualClock, NewSession, Options, Session, SessionData,
    SessionId, Store, Timestamp, Token,
};

const T0: Timestamp = Timestamp(1_800_000_000_000);
/// The file header: magic (8) | version u32 | kind u8 | sequence u64 | crc32 u32.
const HEADER_LEN: usize = 25;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Options every test starts from: a manual clock, no reaper thread, no automatic
/// compaction (tests that want it turn it on).
fn opts(clock: &ManualClock, durability: Durability) -> Options {
    Options::default()
        .clock(clock.clone())
        .reaper_interval(None)
        .durability(durability)
        .compaction(false, 16 << 20, 2.0)
}

/// The storage backends the backend-independent tests run against.
fn backends() -> Vec<(BackendKind, &'static str)> {
    let mut v = vec![(BackendKind::Log, "log")];
    if cfg!(feature = "sled") {
        v.push((BackendKind::Sled, "sled"));
    }
    v
}

fn buffered() -> Durability {
    Durability::Buffered {
        flush_every: Duration::from_millis(20),
    }
}

/// Opens a store that must open, and checks its indexes agree.
fn open(dir: &Path, opts: Options) -> Store {
    let store = Store::open_with(dir, opts)
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", dir.display()));
    store.verify().expect("a freshly opened store verifies");
    store
}

/// Everything the public API shows of a session, comparable.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: SessionId,
    user: Option<String>,
    label: Option<String>,
    version: u64,
    created_at: Timestamp,
    authenticated_at: Option<Timestamp>,
    absolute_deadline: Timestamp,
    expires_at: Timestamp,
    last_seen: Timestamp,
    idle_timeout: Option<Duration>,
    data: BTreeMap<String, Vec<u8>>,
}

impl From<&Session> for Seen {
    fn from(s: &Session) -> Seen {
        Seen {
            id: s.id(),
            user: s.user().map(|u| u.as_str().to_owned()),
            label: s.label().map(str::to_owned),
            version: s.version(),
            created_at: s.created_at(),
            authenticated_at: s.authenticated_at(),
            absolute_deadline: s.absolute_deadline(),
            expires_at: s.expires_at(),
            last_seen: s.last_seen(),
            idle_timeout: s.idle_timeout(),
            data: s
                .data()
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
        }
    }
}

fn seen(store: &Store, token: &Token) -> Option<Seen> {
    store.peek(token).map(|s| Seen::from(&s))
}

fn n_of(s: &Session) -> Option<u64> {
    s.get::<u64>("n").expect("\"n\" always holds a u64")
}

fn ids_of(store: &Store, user: &str) -> Vec<SessionId> {
    store
        .sessions_of(user)
        .unwrap()
        .iter()
        .map(Session::id)
        .collect()
}

// ------------------------------------------------------------------------------------
// Files

/// The log files (`seg-*.log`, `base-*.log`) of `dir`, sorted by name (the sequence is
/// fixed-width hex, so this is sequence order within each kind).
fn log_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && name.ends_with(".log") && name.len() == prefix.len() + 20
        })
        .collect();
    v.sort();
    v
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    log_files(dir, "seg-")
}

fn bases(dir: &Path) -> Vec<PathBuf> {
    log_files(dir, "base-")
}

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir)
        .pop()
        .expect("a durable store has at least one segment")
}

/// Makes `to` an exact copy of the files of `from`.
fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(to).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Makes `to` what a crash of the open store in `from` would leave: its files as they
/// are, but the active (last) segment ending at its records, as if the last append
/// had extended the file (the preallocated zeros past them cut, so that every byte of
/// the file is a record's).
fn crash_image(from: &Path, to: &Path) {
    copy_dir(from, to);
    let seg = last_segment(to);
    let bytes = fs::read(&seg).unwrap();
    let records = *frame_boundaries(&bytes).last().unwrap();
    fs::write(&seg, &bytes[..records]).unwrap();
}

/// The offsets at which the frames of a log file start, and its end: every record
/// boundary. Stops at zeros (preallocated space).
fn frame_boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut at = HEADER_LEN;
    let mut out = vec![at];
    while at + 9 <= bytes.len() && bytes[at..at + 9].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 9 + len;
        assert!(at <= bytes.len(), "a frame runs past the end of the file");
        out.push(at);
    }
    out
}

/// A scratch directory for the many short-lived copies of the every-byte tests: on
/// tmpfs where there is one (what they test is recovery's logic, not the disk, and
/// every open fsyncs a new segment), else in the usual temporary directory.
fn trial_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("sessiondb-trial")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// The same file name, in another directory.
fn same_file_in(dir: &Path, file: &Path) -> PathBuf {
    dir.join(file.file_name().unwrap())
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as the format uses.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small deterministic generator (xorshift64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------------------------
// Reopening restores everything

/// A store holding one of everything: data of several types, labels, users, a bound
/// and an unbound user, a moved user, rotations (whose old tokens live out their grace),
/// an extension, a touch, ended, ended-by-id and revoked sessions.
struct Fixture {
    /// Current tokens of the live sessions.
    live: Vec<Token>,
    /// Old tokens of rotations, still inside their grace period, and their session.
    retired: Vec<(Token, SessionId)>,
    /// Tokens of sessions that ended (by end, end_by_id, revoke).
    ended: Vec<Token>,
}

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

fn build_fixture(store: &Store, clock: &ManualClock) -> Fixture {
    let tick = || clock.advance(secs(1));
    let mut live = Vec::new();
    let mut retired = Vec::new();
    let mut ended = Vec::new();

    let (a, _) = store
        .create(NewSession::anonymous().label("Firefox on Linux"))
        .unwrap();
    tick();
    store.put(&a, "n", &1u64).unwrap();
    store.put(&a, "cart", &vec![1u32, 2, 3]).unwrap();
    store.put_raw(&a, "raw", &[0, 1, 2, 255]).unwrap();
    store.put(&a, "tmp", "gone soon").unwrap();
    store.remove(&a, "tmp").unwrap();
    live.push(a.clone());

    tick();
    let (b, _) = store
        .create(NewSession::for_user("alice").label("Phone"))
        .unwrap();
    store.put(&b, "n", &2u64).unwrap();
    live.push(b);

    tick();
    let (c0, c) = store.create(NewSession::for_user("alice")).unwrap();
    store.put(&c0, "n", &3u64).unwrap();
    tick();
    let c1 = store.rotate(&c0).unwrap();
    store.put(&c1, "n", &4u64).unwrap();
    retired.push((c0, c.id()));
    live.push(c1);

    let (d, _) = store.create(NewSession::for_user("bob")).unwrap();
    store.put(&d, "n", &5u64).unwrap();
    assert!(store.end(&d).unwrap());
    ended.push(d);

    let (e1, _) = store.create(NewSession::for_user("carol")).unwrap();
    let (e2, _) = store
        .create(NewSession::for_user("carol").label("Work laptop"))
        .unwrap();
    store.put(&e1, "n", &6u64).unwrap();
    assert_eq!(store.revoke_user("carol").unwrap(), 2);
    ended.extend([e1, e2]);

    tick();
    let (f0, f) = store.create(NewSession::anonymous()).unwrap();
    store.put(&f0, "cart", &vec![9u32]).unwrap();
    let f1 = store.login(&f0, "dave").unwrap();
    retired.push((f0, f.id()));
    live.push(f1);

    tick();
    let (g, _) = store.create(NewSession::for_user("erin")).unwrap();
    assert_eq!(
        store
            .unbind_user(&g)
            .unwrap()
            .map(|u| u.as_str().to_owned()),
        Some("erin".to_owned())
    );
    store.set_label(&g, Some("Tablet")).unwrap();
    store.extend(&g, secs(60 * 86_400)).unwrap();
    live.push(g);

    let (h, _) = store.create(NewSession::for_user("frank")).unwrap();
    tick();
    store.bind_user(&h, "alice").unwrap();
    live.push(h);

    let (k, _) = store
        .create(NewSession::anonymous().idle_timeout(Duration::ZERO))
        .unwrap();
    store.update(&k, |d| d.insert("counter", &7u32)).unwrap();
    let version = store.peek(&k).unwrap().version();
    let mut data = SessionData::new();
    data.insert("counter", &8u32).unwrap();
    data.insert("n", &9u64).unwrap();
    store.save(&k, version, &data).unwrap();
    live.push(k);

    let (m, ms) = store.create(NewSession::for_user("bob")).unwrap();
    assert!(store.end_by_id(ms.id()).unwrap());
    ended.push(m);

    tick();
    store.touch(&a).unwrap();

    Fixture {
        live,
        retired,
        ended,
    }
}

/// What the public API shows of a fixture's store.
#[derive(Debug, PartialEq)]
struct View {
    live: Vec<Option<Seen>>,
    retired: Vec<Option<SessionId>>,
    ended: Vec<Option<Seen>>,
    users: Vec<Vec<SessionId>>,
    sessions: usize,
    users_count: usize,
    aliases: usize,
}

fn view(store: &Store, fx: &Fixture) -> View {
    let st = store.stats();
    View {
        live: fx.live.iter().map(|t| seen(store, t)).collect(),
        retired: fx
            .retired
            .iter()
            .map(|(t, _)| store.peek(t).map(|s| s.id()))
            .collect(),
        ended: fx.ended.iter().map(|t| seen(store, t)).collect(),
        users: USERS.iter().map(|u| ids_of(store, u)).collect(),
        sessions: st.sessions,
        users_count: st.users,
        aliases: st.aliases,
    }
}

#[test]
fn reopen_restores_sessions_data_users_labels_versions_and_rotation_aliases() {
    let cases = backends()
        .into_iter()
        .flat_map(|b| [(b, Durability::Sync), (b, buffered())]);
    for ((backend, name), durability) in cases {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let o = || {
            opts(&clock, durability)
                .rotation_grace(secs(3600))
                .backend(backend)
        };

        let store = open(dir.path(), o());
        let fx = build_fixture(&store, &clock);
        let before = view(&store, &fx);
        // The fixture is what it claims to be.
        assert!(before.live.iter().all(Option::is_some), "{durability:?}");
        assert!(before.ended.iter().all(Option::is_none), "{durability:?}");
        for ((_, id), got) in fx.retired.iter().zip(&before.retired) {
            assert_eq!(got.as_ref(), Some(id), "{durability:?}");
        }
        assert_eq!(before.sessions, fx.live.len());
        assert_eq!(before.aliases, fx.retired.len());
        assert_eq!(
            before.users[0].len(),
            3,
            "alice: b, c, and h moved from frank"
        );
        assert!(before.users[2].is_empty(), "carol was revoked");
        store.verify().unwrap();
        drop(store);

        let store = open(dir.path(), o());
        assert_eq!(
            view(&store, &fx),
            before,
            "{durability:?}: reopen changed state"
        );
        let report = store.recovery_report();
        assert_eq!(report.backend, name);
        assert_eq!(report.sessions, fx.live.len(), "{report:?}");
        assert_eq!(report.bytes_truncated, 0, "{report:?}");
        assert_eq!(report.expired_dropped, 0, "{report:?}");
        assert!(report.skipped.is_empty(), "{report:?}");
        // An old token in its grace period still cannot mint a new one after reopen.
        assert!(matches!(
            store.rotate(&fx.retired[0].0),
            Err(Error::TokenRetired)
        ));
        // Ended sessions stay ended: no write brings them back, before or after reopen.
        for t in &fx.ended {
            assert!(matches!(store.put(t, "n", &0u64), Err(Error::Ended)));
        }

        // Writes after a reopen are durable too.
        clock.advance(secs(1));
        store.put(&fx.live[0], "n", &100u64).unwrap();
        let c2 = store.rotate(&fx.live[2]).unwrap();
        let before = view(&store, &fx);
        let c2_seen = seen(&store, &c2);
        drop(store);
        let store = open(dir.path(), o());
        assert_eq!(view(&store, &fx), before, "{durability:?}: second reopen");
        assert_eq!(seen(&store, &c2), c2_seen);
        drop(store);

        // Past the grace period, old tokens stop resolving after a reopen, and nothing
        // else changes.
        clock.advance(secs(2 * 3600));
        let store = open(dir.path(), o());
        for (t, _) in &fx.retired {
            assert!(
                store.peek(t).is_none(),
                "{durability:?}: alias outlived grace"
            );
        }
        assert!(
            store.peek(&fx.live[2]).is_none(),
            "rotated away before the last reopen"
        );
        assert_eq!(store.stats().aliases, 0);
        assert_eq!(seen(&store, &c2), c2_seen);
        assert_eq!(seen(&store, &fx.live[0]), before.live[0]);
        store.verify().unwrap();
    }
}

#[test]
fn clear_is_durable() {
    for (backend, _) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let o = || opts(&clock, Durability::Sync).backend(backend);
        let store = open(dir.path(), o());
        let (a, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.create(NewSession::anonymous()).unwrap();
        assert_eq!(store.clear().unwrap(), 2);
        let (b, _) = store.create(NewSession::anonymous()).unwrap();
        drop(store);
        let store = open(dir.path(), o());
        assert!(store.peek(&a).is_none());
        assert!(store.peek(&b).is_some());
        assert!(store.sessions_of("alice").unwrap().is_empty());
        assert_eq!(store.stats().sessions, 1);
    }
}

// ------------------------------------------------------------------------------------
// The directory lock

#[test]
fn second_open_of_an_open_directory_is_locked_naming_this_process() {
    for (backend, _) in backends() {
        second_open_is_locked(backend);
    }
}

fn second_open_is_locked(backend: BackendKind) {
    let opts = |clock: &ManualClock, d: Durability| opts(clock, d).backend(backend);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let first = open(dir.path(), opts(&clock, buffered()));
    let (t, _) = first.create(NewSession::anonymous()).unwrap();
    for durability in [buffered(), Durability::Sync] {
        match Store::open_with(dir.path(), opts(&clock, durability)) {
            Err(Error::Locked { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("a second store opened a directory that is in use"),
        }
    }
    // The refused open changed nothing.
    assert!(first.peek(&t).is_some());
    // A clone keeps the store (and the lock) alive; the last drop releases it.
    let clone = first.clone();
    drop(first);
    assert!(matches!(
        Store::open_with(dir.path(), opts(&clock, buffered())),
        Err(Error::Locked { .. })
    ));
    drop(clone);
    let again = open(dir.path(), opts(&clock, buffered()));
    assert!(again.peek(&t).is_some());
}

// ------------------------------------------------------------------------------------
// Expiry across restarts

#[test]
fn expired_sessions_are_not_resurrected_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || {
        opts(&clock, Durability::Sync)
            .lifetime(secs(3600))
            .idle_timeout(Duration::ZERO)
    };
    let store = open(dir.path(), o());
    let mut short = Vec::new();
    for i in 0..3 {
        let (t, _) = store.create(NewSession::for_user(format!("u{i}"))).unwrap();
        store.put(&t, "n", &(i as u64)).unwrap();
        short.push(t);
    }
    let (idle, _) = store
        .create(
            NewSession::for_user("u0")
                .lifetime(secs(10 * 86_400))
                .idle_timeout(secs(600)),
        )
        .unwrap();
    short.push(idle);
    let mut long = Vec::new();
    for i in 0..2 {
        let (t, _) = store
            .create(NewSession::for_user("u0").lifetime(secs(10 * 86_400)))
            .unwrap();
        store.put(&t, "n", &(100 + i as u64)).unwrap();
        long.push(t);
    }
    // Extended past the default lifetime: survives.
    let (ext, _) = store.create(NewSession::anonymous()).unwrap();
    store.extend(&ext, secs(86_400)).unwrap();
    long.push(ext);

    clock.advance(secs(2 * 3600));
    // Not reaped before the close: the log holds no end for the expired ones.
    drop(store);

    let store = open(dir.path(), o());
    let report = store.recovery_report();
    assert_eq!(report.expired_dropped, short.len(), "{report:?}");
    assert_eq!(report.sessions, long.len(), "{report:?}");
    for t in &short {
        assert!(store.peek(t).is_none(), "an expired session came back");
        assert!(matches!(store.put(t, "n", &0u64), Err(Error::Ended)));
    }
    for (i, t) in long.iter().enumerate().take(2) {
        assert_eq!(n_of(&store.peek(t).unwrap()), Some(100 + i as u64));
    }
    assert!(store.peek(&long[2]).is_some());
    assert_eq!(ids_of(&store, "u0").len(), 2, "only the long-lived ones");
    assert!(store.sessions_of("u1").unwrap().is_empty());
    assert_eq!(store.stats().sessions, long.len());
    assert_eq!(store.stats().users, 1);

    // Reaped before the close: their ends are logged, so they are not even counted as
    // expired next time (the first ones, never reaped, still are: the log holds no end
    // for them until a compaction rewrites it).
    clock.advance(secs(20 * 86_400));
    assert_eq!(store.reap_expired(), long.len());
    drop(store);
    let store = open(dir.path(), o());
    let report = store.recovery_report();
    assert_eq!(report.sessions, 0, "{report:?}");
    assert_eq!(report.expired_dropped, short.len(), "{report:?}");
    assert!(store.is_empty());
    store.compact().unwrap();
    drop(store);
    let store = open(dir.path(), o());
    let report = store.recovery_report();
    assert_eq!(
        (report.sessions, report.expired_dropped),
        (0, 0),
        "{report:?}"
    );
}

// ------------------------------------------------------------------------------------
// Compaction

/// Current token, id, last value of "n", and whether it is live, for a model check.
#[derive(Clone, Debug)]
struct Tracked {
    tokens: Vec<Token>,
    id: SessionId,
    n: Option<u64>,
    live: bool,
}

/// Checks `store` against the model: live sessions found by every token they have had
/// (old ones are aliases in their grace period), with their last value; ended ones by
/// none; and nothing else in the store.
fn check_model(store: &Store, model: &[Tracked], what: &str) {
    let mut live = 0;
    for t in model {
        if t.live {
            live += 1;
            for tok in &t.tokens {
                let s = store
                    .peek(tok)
                    .unwrap_or_else(|| panic!("{what}: acknowledged session {} lost", t.id));
                assert_eq!(s.id(), t.id, "{what}: token resolves to another session");
                assert_eq!(n_of(&s), t.n, "{what}: session {} has wrong data", t.id);
            }
        } else {
            for tok in &t.tokens {
                assert!(
                    store.peek(tok).is_none(),
                    "{what}: ended session {} is back",
                    t.id
                );
            }
            assert!(
                store.get_by_id(t.id).is_none(),
                "{what}: ended session is back"
            );
        }
    }
    assert_eq!(
        store.stats().sessions,
        live,
        "{what}: sessions nobody created"
    );
}

fn snapshot_all(store: &Store, tokens: &[Token]) -> Vec<Option<Seen>> {
    tokens.iter().map(|t| seen(store, t)).collect()
}

/// An application that opens its store at every start, often without writing, must not
/// leave a file behind each time: a close drops an active segment that holds no record
/// (and an open, one a crash left).
#[test]
fn reopening_without_writes_leaves_no_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (token, _) = {
        let store = open(dir.path(), opts(&clock, buffered()));
        store.create(NewSession::for_user("alice")).unwrap()
    };
    let files = || segments(dir.path());
    let after_first = files();
    assert_eq!(after_first.len(), 1);
    for _ in 0..5 {
        let store = open(dir.path(), opts(&clock, buffered()));
        assert!(store.get(&token).is_some());
        // While open, the store has its active segment.
        assert_eq!(files().len(), after_first.len() + 1);
    }
    assert_eq!(files(), after_first);
    // A crash image of a store opened without a write: its empty active segment is
    // dropped by the next open.
    let store = open(dir.path(), opts(&clock, buffered()));
    let image = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), image.path());
    drop(store);
    drop(open(image.path(), opts(&clock, buffered())));
    assert_eq!(segments(image.path()).len(), after_first.len());
    // A write after that still lands, and survives the next open.
    {
        let store = open(dir.path(), opts(&clock, Durability::Sync));
        store.put(&token, "n", &7u64).unwrap();
    }
    let store = open(dir.path(), opts(&clock, buffered()));
    assert_eq!(n_of(&store.get(&token).unwrap()), Some(7));
    drop(store);
    assert_eq!(files().len(), after_first.len() + 1);
}

/// A segment is decoded on one thread and applied on another, handed over in batches:
/// a long history in which the same sessions change again and again — data, users,
/// ends, rotations, thousands of records in one segment — must still replay in log
/// order, to the same state the sequential (salvage) replay reaches.
#[test]
fn a_long_uncompacted_history_replays_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock, buffered()).compaction(false, u64::MAX, 2.0);
    let store = open(dir.path(), o());
    let mut tokens = Vec::new();
    for i in 0..300u64 {
        let (t, _) = store
            .create(NewSession::for_user(format!("user{}", i % 13)))
            .unwrap();
        tokens.push(t);
    }
    for round in 0..12u64 {
        clock.advance(secs(1));
        for (i, t) in tokens.iter().enumerate() {
            store.put(t, "n", &(round * 1000 + i as u64)).unwrap();
            match (i as u64 + round) % 7 {
                0 => store
                    .bind_user(t, &format!("user{}", (i as u64 + round) % 13))
                    .unwrap(),
                3 => {
                    store.unbind_user(t).unwrap();
                }
                _ => {}
            }
        }
    }
    for t in tokens.iter().step_by(5) {
        store.end(t).unwrap();
    }
    let rotated: Vec<Token> = tokens
        .iter()
        .skip(1)
        .step_by(10)
        .map(|t| store.rotate(t).unwrap())
        .collect();
    tokens.extend(rotated);
    store.flush().unwrap();
    let records = store.stats().log_records;
    assert!(records > 5_000, "{records} records");
    let state = snapshot_all(&store, &tokens);
    let users: Vec<Vec<SessionId>> = (0..13)
        .map(|u| ids_of(&store, &format!("user{u}")))
        .collect();
    drop(store);

    for salvage in [false, true] {
        let store = open(dir.path(), o().salvage(salvage));
        assert!(store.recovery_report().records > 5_000);
        assert_eq!(snapshot_all(&store, &tokens), state, "salvage {salvage}");
        for (u, ids) in users.iter().enumerate() {
            assert_eq!(
                &ids_of(&store, &format!("user{u}")),
                ids,
                "salvage {salvage}"
            );
        }
    }
}

#[test]
fn compaction_shrinks_the_log_and_reopen_equals_the_state_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock, buffered()).segment_bytes(64 << 10);
    let store = open(dir.path(), o());
    let mut tokens = Vec::new();
    for i in 0..200u64 {
        let user = format!("user{}", i % 17);
        let (t, _) = store
            .create(NewSession::for_user(user).label(format!("device {i}")))
            .unwrap();
        tokens.push(t);
    }
    let payload = "x".repeat(150);
    for round in 0..15u64 {
        clock.advance(secs(1));
        for t in &tokens {
            store.put(t, "n", &round).unwrap();
            store.put(t, "blob", &payload).unwrap();
        }
    }
    for t in tokens.iter().step_by(2) {
        store.end(t).unwrap();
    }
    let rotated: Vec<Token> = tokens
        .iter()
        .skip(1)
        .step_by(10)
        .map(|t| store.rotate(t).unwrap())
        .collect();
    tokens.extend(rotated);
    store.flush().unwrap();
    let st = store.stats();
    let before_bytes = st.disk_bytes;
    assert!(before_bytes > 500_000, "history written: {st:?}");
    assert!(st.dead_ratio > 0.5, "mostly dead history: {st:?}");
    assert_eq!(st.compactions, 0);
    assert!(st.last_compaction.is_none());
    let state = snapshot_all(&store, &tokens);
    let users: Vec<Vec<SessionId>> = (0..17)
        .map(|u| ids_of(&store, &format!("user{u}")))
        .collect();

    let result = store.compact().unwrap();
    assert_eq!(result.sessions, 100);
    assert!(result.bytes_before >= before_bytes, "{result:?}");
    assert!(
        result.bytes_after * 4 < result.bytes_before,
        "compaction reclaimed too little: {result:?}"
    );
    let st = store.stats();
    assert_eq!(st.compactions, 1);
    let (_, last) = st
        .last_compaction
        .clone()
        .expect("last compaction recorded");
    assert_eq!(last, result);
    assert!(st.last_compaction_error.is_none());
    store.flush().unwrap();
    let st = store.stats();
    assert!(
        st.disk_bytes * 4 < before_bytes,
        "stats().disk_bytes did not shrink: {} -> {}",
        before_bytes,
        st.disk_bytes
    );
    assert!(st.dead_ratio < 0.5, "{st:?}");
    assert_eq!(bases(dir.path()).len(), 1, "one base after compaction");
    // The state did not change.
    assert_eq!(snapshot_all(&store, &tokens), state);
    store.verify().unwrap();

    // More history on top of the base, then a second compaction, then reopen.
    clock.advance(secs(1));
    for t in tokens.iter().skip(1).step_by(2) {
        let _ = store.put(t, "n", &99u64);
    }
    let state_before_second = snapshot_all(&store, &tokens);
    store.compact().unwrap();
    assert_eq!(store.stats().compactions, 2);
    assert_eq!(bases(dir.path()).len(), 1, "the old base was deleted");
    drop(store);

    let store = open(dir.path(), o());
    assert_eq!(snapshot_all(&store, &tokens), state_before_second);
    for (u, ids) in users.iter().enumerate() {
        // The same sessions per user (their data changed, their membership did not).
        assert_eq!(&ids_of(&store, &format!("user{u}")), ids);
    }
    assert_eq!(store.stats().sessions, 100);
    assert_eq!(store.recovery_report().sessions, 100);
    assert_eq!(
        store.stats().compactions,
        0,
        "counts compactions since open"
    );
}

/// A compaction reads sessions a chunk at a time, and a session a rotation moves in
/// the middle of that read must still be in the base: a rotation record after the base
/// cannot bring back a session the base left out. Checked after every compaction, on a
/// copy of the directory opened while the rotations go on.
#[test]
fn compaction_racing_rotations_keeps_every_session_in_the_base() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    // No grace: under the manual clock an old token's alias would never expire, and
    // every round's compaction would write all the aliases of all rounds before.
    let o = || {
        opts(&clock, buffered())
            .compaction(false, u64::MAX, 2.0)
            .rotation_grace(Duration::ZERO)
    };
    let store = open(dir.path(), o());
    let mut tokens = Vec::new();
    for i in 0..24 {
        let (t, _) = store
            .create(NewSession::for_user(format!("user{}", i % 3)))
            .unwrap();
        tokens.push(t);
    }
    let ids: Vec<Vec<SessionId>> = (0..3)
        .map(|u| ids_of(&store, &format!("user{u}")))
        .collect();
    // Each round the rotators move their sessions for as long as the main thread's
    // compaction runs, then wait: the log stays small, so a round costs the same as
    // the first however many came before.
    const ROUNDS: usize = 60;
    let gate = Arc::new(std::sync::Barrier::new(3));
    let compacted = Arc::new(AtomicBool::new(false));
    let rotators: Vec<_> = tokens
        .chunks(12)
        .map(|mine| {
            let (s, gate, compacted) = (store.clone(), gate.clone(), compacted.clone());
            let mut mine = mine.to_vec();
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    gate.wait();
                    while !compacted.load(Ordering::Acquire) {
                        for t in &mut mine {
                            *t = s.rotate(t).unwrap();
                        }
                    }
                    gate.wait();
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        gate.wait();
        store.compact().unwrap();
        compacted.store(true, Ordering::Release);
        gate.wait();
        compacted.store(false, Ordering::Release);
        store.flush().unwrap();
        copy_dir(dir.path(), copy.path());
        let reopened = open(copy.path(), o());
        for (u, want) in ids.iter().enumerate() {
            assert_eq!(
                &ids_of(&reopened, &format!("user{u}")),
                want,
                "round {round}: user{u}'s sessions after reopening the copy"
            );
        }
    }
    for r in rotators {
        r.join().unwrap();
    }
}

/// Many `Sync` writers share each fsync, and each one's wait ends: the writer wakes a
/// few of a batch's waiters and they wake the rest (a relay), so none may be left
/// parked. Every acknowledged session is in the reopened store.
#[test]
fn many_sync_writers_all_return_and_every_acknowledged_session_survives() {
    const WRITERS: usize = 32;
    const EACH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for w in 0..WRITERS {
        let (store, done_tx) = (store.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let ids: Vec<SessionId> = (0..EACH)
                .map(|_| {
                    let new = NewSession::for_user(format!("writer{w}"));
                    store.create(new).unwrap().1.id()
                })
                .collect();
            done_tx.send(ids).unwrap();
        });
    }
    let mut acknowledged = Vec::new();
    for finished in 0..WRITERS {
        // A generous bound: a writer left parked never returns at all.
        match done_rx.recv_timeout(secs(60)) {
            Ok(ids) => acknowledged.extend(ids),
            Err(_) => panic!("{finished} of {WRITERS} Sync writers returned; the rest hang"),
        }
    }
    let st = store.stats();
    assert!(
        st.log_syncs >= 1 && st.log_records >= (WRITERS * EACH) as u64,
        "{st:?}"
    );
    drop(store);
    let store = open_when_released(dir.path(), || opts(&clock, Durability::Sync));
    for w in 0..WRITERS {
        assert_eq!(
            ids_of(&store, &format!("writer{w}")).len(),
            EACH,
            "writer{w}"
        );
    }
    for id in acknowledged {
        assert!(store.get_by_id(id).is_some(), "session {id:?} lost");
    }
}

#[test]
fn compaction_racing_writer_threads_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock, Durability::Sync).segment_bytes(16 << 10);
    let store = open(dir.path(), o());
    let stop = Arc::new(AtomicBool::new(false));
    let models: Arc<Mutex<Vec<Tracked>>> = Arc::default();

    let compactor = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store.compact().expect("compaction while writing");
                n += 1;
            }
            n
        })
    };
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (store, stop, models) = (store.clone(), stop.clone(), models.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
                let mut mine: Vec<Tracked> = Vec::new();
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) || ops < 50 {
                    ops += 1;
                    let live: Vec<usize> = (0..mine.len()).filter(|&i| mine[i].live).collect();
                    let roll = rng.below(100);
                    if live.is_empty() || roll < 25 {
                        let new = if rng.below(2) == 0 {
                            NewSession::anonymous()
                        } else {
                            NewSession::for_user(format!("w{w}u{}", rng.below(3)))
                        };
                        let (t, s) = store.create(new).unwrap();
                        mine.push(Tracked {
                            tokens: vec![t],
                            id: s.id(),
                            n: None,
                            live: true,
                        });
                        continue;
                    }
                    let i = live[rng.below(live.len() as u64) as usize];
                    let cur = mine[i].tokens.last().unwrap().clone();
                    if roll < 80 {
                        let n = mine[i].n.map_or(0, |n| n + 1);
                        store.put(&cur, "n", &n).unwrap();
                        mine[i].n = Some(n);
                    } else if roll < 90 {
                        let t = store.rotate(&cur).unwrap();
                        mine[i].tokens.push(t);
                    } else {
                        assert!(store.end(&cur).unwrap());
                        mine[i].live = false;
                    }
                }
                models.lock().unwrap().extend(mine);
                ops
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let compactions = compactor.join().unwrap();
    let model = models.lock().unwrap().clone();
    assert!(compactions >= 2, "only {compactions} compactions ran");
    let st = store.stats();
    assert_eq!(st.compactions, compactions);
    assert!(st.last_compaction.is_some());
    assert!(st.last_compaction_error.is_none(), "{st:?}");
    check_model(&store, &model, "before reopen");
    store.verify().unwrap();
    drop(store);

    let store = open(dir.path(), o());
    check_model(&store, &model, "after reopen");
    assert_eq!(store.recovery_report().bytes_truncated, 0);
    eprintln!(
        "{ops} operations on {} sessions, {compactions} compactions, all acknowledged writes kept",
        model.len()
    );
}

#[test]
fn auto_compaction_triggers_and_bounds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || {
        opts(&clock, buffered())
            .segment_bytes(4096)
            .compaction(true, 16 << 10, 2.0)
    };
    let store = open(dir.path(), o());
    let mut model: Vec<Tracked> = (0..40)
        .map(|_| {
            let (t, s) = store.create(NewSession::for_user("someone")).unwrap();
            Tracked {
                tokens: vec![t],
                id: s.id(),
                n: None,
                live: true,
            }
        })
        .collect();
    let payload = "y".repeat(100);
    let started = Instant::now();
    let mut written = 0u64;
    let mut round = 0u64;
    while started.elapsed() < secs(20) {
        for t in &mut model {
            store.put(&t.tokens[0], "n", &round).unwrap();
            store.put(&t.tokens[0], "pad", &payload).unwrap();
            t.n = Some(round);
            written += 2 * 200;
        }
        round += 1;
        if written > 16 << 20 && store.stats().compactions >= 3 {
            break;
        }
    }
    let st = store.stats();
    assert!(
        st.compactions >= 3,
        "auto-compaction did not run: {st:?} after ~{written} bytes"
    );
    assert!(st.last_compaction.is_some());
    assert!(st.last_compaction_error.is_none(), "{st:?}");
    // Once the writes stop, background compaction brings the log back to about the
    // size of the live set (40 sessions of ~250 bytes), however much history there was.
    let settled = Instant::now();
    loop {
        store.flush().unwrap();
        let st = store.stats();
        if st.disk_bytes < 64 << 10 {
            break;
        }
        assert!(
            settled.elapsed() < secs(10),
            "the log stayed at {} bytes after ~{written} bytes of writes: {st:?}",
            st.disk_bytes
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        segments(dir.path()).len() <= 4,
        "{} segment files",
        segments(dir.path()).len()
    );
    check_model(&store, &model, "with auto-compaction");
    drop(store);
    // A background compaction still finishing holds the store (and its lock) for a
    // moment after the last handle is dropped: see
    // `dropping_the_last_handle_releases_the_directory_at_once`.
    let store = open_when_released(dir.path(), o);
    check_model(&store, &model, "after reopen");
}

/// A log that is nearly all live sessions has nothing to reclaim — a base of images
/// would even be larger than the create records — so auto-compaction leaves it alone
/// however much it grows, and compacts once overwrites make most of it history.
#[test]
fn auto_compaction_leaves_a_log_of_live_sessions_alone_until_history_dominates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = opts(&clock, buffered())
        .segment_bytes(64 << 10)
        .compaction(true, 16 << 10, 2.0);
    let store = open(dir.path(), o);
    let pad = "p".repeat(150);
    let tokens: Vec<Token> = (0..4000)
        .map(|i| {
            let mut d = SessionData::new();
            d.insert("pad", pad.as_str()).unwrap();
            let new = NewSession::for_user(format!("user{}", i % 400)).data(d);
            store.create(new).unwrap().0
        })
        .collect();
    store.flush().unwrap();
    // Give a compactor that was asked time to run: it would have been asked at 16 KiB,
    // 32 KiB, 64 KiB, ... of the ~1 MB written.
    std::thread::sleep(Duration::from_millis(300));
    let st = store.stats();
    assert!(st.disk_bytes > 32 * (16 << 10), "{st:?}");
    assert_eq!(
        st.compactions, 0,
        "a log of live sessions was rewritten: {st:?}"
    );
    // Overwrite every session's data a few times: most of the log becomes history.
    for round in 0..3 {
        for t in &tokens {
            store.put(t, "pad", &format!("{round}{pad}")).unwrap();
        }
    }
    store.flush().unwrap();
    let started = Instant::now();
    while store.stats().compactions == 0 {
        assert!(
            started.elapsed() < secs(10),
            "no compaction: {:?}",
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = store.stats();
    assert!(st.last_compaction_error.is_none(), "{st:?}");
    let (_, c) = st.last_compaction.clone().unwrap();
    assert_eq!(c.sessions, 4000);
    assert!(
        c.base_bytes * 3 < c.bytes_before * 2,
        "reclaimed little: {c:?}"
    );
    // The live estimate is the base's size (not the base plus what was written while
    // it was built).
    assert!(
        st.estimated_live_bytes.abs_diff(c.base_bytes) <= 1,
        "{st:?}"
    );
    for t in &tokens {
        let s = store.get(t).expect("every session kept");
        assert_eq!(s.get::<String>("pad").unwrap(), Some(format!("2{pad}")));
    }
}

/// Opens `dir`, waiting up to 2 s for a store being dropped to release its lock.
fn open_when_released(dir: &Path, opts: impl Fn() -> Options) -> Store {
    let started = Instant::now();
    loop {
        match Store::open_with(dir, opts()) {
            Err(Error::Locked { .. }) if started.elapsed() < secs(2) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
            Ok(store) => {
                store.verify().unwrap();
                return store;
            }
        }
    }
}

#[test]

fn stats_reflect_a_compaction_as_soon_as_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    for i in 0..300u64 {
        store.put(&t, "n", &i).unwrap();
    }
    let before = store.stats().disk_bytes;
    let result = store.compact().unwrap();
    assert!(result.bytes_after * 4 < before, "{result:?}");
    let st = store.stats();
    assert_eq!(st.compactions, 1);
    assert!(
        st.disk_bytes <= result.bytes_after,
        "compact() returned {result:?}, but stats().disk_bytes still says {}",
        st.disk_bytes
    );
}

#[test]

fn dropping_the_last_handle_releases_the_directory_at_once() {
    let o = || {
        Options::default()
            .reaper_interval(None)
            .durability(Durability::Buffered {
                flush_every: Duration::from_millis(5),
            })
            .segment_bytes(4096)
            .compaction(true, 4096, 1.0)
    };
    let mut locked = 0;
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), o());
        let tokens: Vec<Token> = (0..200)
            .map(|_| store.create(NewSession::anonymous()).unwrap().0)
            .collect();
        let pad = "x".repeat(200);
        for i in 0..2000 {
            store.put(&tokens[i % tokens.len()], "pad", &pad).unwrap();
        }
        drop(store);
        // The README: the lock is released when the last clone is dropped.
        match Store::open_with(dir.path(), o()) {
            Err(Error::Locked { .. }) => locked += 1,
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
    }
    assert_eq!(
        locked, 0,
        "{locked} of 10 reopens right after drop were Locked"
    );
}

// ------------------------------------------------------------------------------------
// Torn tails, truncation and corruption

/// A few sessions and values, written (Sync) and closed — or, given `crashed`, left
/// there as a crash image; returns the tokens and each session's last "n".
fn small_store(dir: &Path, clock: &ManualClock, crashed: Option<&Path>) -> Vec<(Token, u64)> {
    let store = open(dir, opts(clock, Durability::Sync));
    let mut out = Vec::new();
    for i in 0..4u64 {
        let new = if i % 2 == 0 {
            NewSession::anonymous()
        } else {
            NewSession::for_user("alice")
        };
        let (t, _) = store.create(new).unwrap();
        for n in 0..=i {
            store.put(&t, "n", &(10 * i + n)).unwrap();
        }
        out.push((t, 10 * i + i));
    }
    if let Some(image) = crashed {
        crash_image(dir, image);
    }
    out
}

fn assert_small_store_intact(store: &Store, sessions: &[(Token, u64)]) {
    for (t, n) in sessions {
        let s = store.peek(t).expect("session lost");
        assert_eq!(n_of(&s), Some(*n));
    }
    assert_eq!(store.stats().sessions, sessions.len());
    assert_eq!(ids_of(store, "alice").len(), 2);
}

#[test]
fn torn_tail_is_cut_off_and_reported() {
    let clock = ManualClock::new(T0);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // Random garbage, and a partial frame: a length claiming 200 bytes, a checksum, a
    // record type, and only 50 of the 200 bytes.
    let mut partial = Vec::new();
    partial.extend_from_slice(&200u32.to_le_bytes());
    partial.extend_from_slice(&rng.next().to_le_bytes()[..4]);
    partial.push(2);
    partial.extend(rng.bytes(50));
    // A torn record followed by zeros is what a crash inside the preallocated part of
    // the active segment leaves: only the record's bytes count as torn.
    let mut torn_then_zeros = partial.clone();
    let torn = torn_then_zeros.len() as u64;
    torn_then_zeros.extend(vec![0u8; 8192]);
    // Zeros alone are preallocated space the writer had not reached: nothing was torn.
    for (tail, counted) in [
        (rng.bytes(37), 37),
        (partial.clone(), partial.len() as u64),
        (vec![0u8; 4096], 0),
        (torn_then_zeros, torn),
        (rng.bytes(1), 1),
    ] {
        let written = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sessions = small_store(written.path(), &clock, Some(dir.path()));
        let seg = last_segment(dir.path());
        let len = file_len(&seg);
        append(&seg, &tail);

        let store = open(dir.path(), opts(&clock, Durability::Sync));
        let report = store.recovery_report();
        assert_eq!(report.bytes_truncated, counted, "{report:?}");
        assert!(report.skipped.is_empty());
        assert_eq!(file_len(&seg), len, "the tail was cut off the file");
        assert_small_store_intact(&store, &sessions);
        // The store goes on writing after the cut.
        store.put(&sessions[0].0, "n", &777u64).unwrap();
        drop(store);

        let store = open(dir.path(), opts(&clock, Durability::Sync));
        assert_eq!(store.recovery_report().bytes_truncated, 0);
        assert_eq!(n_of(&store.peek(&sessions[0].0).unwrap()), Some(777));
    }
}

#[test]
fn a_crash_image_ends_in_preallocated_zeros_that_recovery_cuts_and_a_close_leaves_none() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let mut tokens = Vec::new();
    for i in 0..50u64 {
        let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.put(&t, "n", &i).unwrap();
        tokens.push(t);
    }
    // What a crash now leaves: every record acknowledged, and the active segment
    // zero-filled past them.
    let image = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), image.path());
    let seg = same_file_in(image.path(), &last_segment(dir.path()));
    let bytes = fs::read(&seg).unwrap();
    let zeros = bytes.iter().rev().take_while(|&&b| b == 0).count();
    assert!(
        zeros >= 4096,
        "the active segment is preallocated ({} bytes, {zeros} trailing zeros)",
        bytes.len()
    );
    let recovered = open(image.path(), opts(&clock, Durability::Sync));
    let report = recovered.recovery_report();
    assert_eq!(
        report.bytes_truncated, 0,
        "zeros are not a torn tail: {report:?}"
    );
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(n_of(&recovered.peek(t).unwrap()), Some(i as u64));
    }
    let kept = file_len(&seg);
    assert!(kept < bytes.len() as u64, "the zeros were cut off");
    drop(recovered);

    // A close cuts them itself: the segment is exactly its records.
    let live_seg = last_segment(dir.path());
    drop(store);
    assert_eq!(file_len(&live_seg), kept);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert_eq!(store.recovery_report().bytes_truncated, 0);
    assert_eq!(store.sessions_of("alice").unwrap().len(), 50);
}

/// A log written one operation per batch (Sync, one thread), as a crash image, and what
/// the store showed after each operation, so a recovered state can be matched to a
/// prefix of the log.
struct Prefixes {
    dir: tempfile::TempDir,
    clock: ManualClock,
    /// Every token the log ever issued, in issue order.
    tokens: Vec<Token>,
    /// For each token, the values of "n" ever written to its session.
    written: Vec<Vec<Option<u64>>>,
    /// `states[k]`: the view after the first k operations.
    states: Vec<Observed>,
}

const PREFIX_USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Per token: (id, user, label, version, n); per user: the ids listed.
type Observed = (
    Vec<Option<(SessionId, Option<String>, Option<String>, u64, Option<u64>)>>,
    Vec<Vec<SessionId>>,
);

fn observe(store: &Store, tokens: &[Token]) -> Observed {
    let per_token = tokens
        .iter()
        .map(|t| {
            store.peek(t).map(|s| {
                (
                    s.id(),
                    s.user().map(|u| u.as_str().to_owned()),
                    s.label().map(str::to_owned),
                    s.version(),
                    n_of(&s),
                )
            })
        })
        .collect();
    let users = PREFIX_USERS.iter().map(|u| ids_of(store, u)).collect();
    (per_token, users)
}

fn build_prefixes() -> Prefixes {
    let written = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    // A long grace: old tokens must resolve in every later state, whatever the clock.
    let store = open(
        written.path(),
        opts(&clock, Durability::Sync).rotation_grace(secs(86_400)),
    );
    let mut tokens: Vec<Token> = Vec::new();
    let mut states = vec![observe(&store, &tokens)];
    let mut step = |store: &Store, tokens: &Vec<Token>| {
        clock.advance(secs(1));
        states.push(observe(store, tokens));
    };
    // Observations are extended to every token at the end (tokens issued later are
    // simply not found earlier).
    let (s1, _) = store.create(NewSession::anonymous()).unwrap();
    tokens.push(s1.clone());
    step(&store, &tokens);
    store.put(&s1, "n", &1u64).unwrap();
    step(&store, &tokens);
    let (s2, _) = store
        .create(NewSession::for_user("alice").label("Phone"))
        .unwrap();
    tokens.push(s2.clone());
    step(&store, &tokens);
    store.put(&s2, "n", &10u64).unwrap();
    step(&store, &tokens);
    store.put(&s1, "n", &2u64).unwrap();
    step(&store, &tokens);
    let s2b = store.rotate(&s2).unwrap();
    tokens.push(s2b.clone());
    step(&store, &tokens);
    store.put(&s2b, "n", &11u64).unwrap();
    step(&store, &tokens);
    let (s3, _) = store.create(NewSession::anonymous()).unwrap();
    tokens.push(s3.clone());
    step(&store, &tokens);
    store.put(&s3, "n", &100u64).unwrap();
    step(&store, &tokens);
    let (s4, _) = store.create(NewSession::for_user("bob")).unwrap();
    tokens.push(s4.clone());
    step(&store, &tokens);
    assert!(store.end(&s3).unwrap());
    step(&store, &tokens);
    store.put(&s4, "n", &1000u64).unwrap();
    step(&store, &tokens);
    store.bind_user(&s1, "carol").unwrap();
    step(&store, &tokens);
    store.set_label(&s4, Some("Desk")).unwrap();
    step(&store, &tokens);
    store.put(&s1, "n", &3u64).unwrap();
    step(&store, &tokens);
    // The log as a crash now would leave it: its one segment still active, so damage
    // after its last fsync is a torn tail (a store closed cleanly has sealed it, and
    // any cut of it is corruption).
    let dir = {
        let image = tempfile::tempdir().unwrap();
        crash_image(written.path(), image.path());
        image
    };
    drop(store);
    for s in &mut states {
        s.0.resize(tokens.len(), None);
    }
    // The sessions behind the tokens: s1; s2 and s2b (one session); s3; s4.
    let written = vec![
        vec![None, Some(1), Some(2), Some(3)],
        vec![None, Some(10), Some(11)],
        vec![None, Some(10), Some(11)],
        vec![None, Some(100)],
        vec![None, Some(1000)],
    ];
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "the small log is one segment"
    );
    Prefixes {
        dir,
        clock,
        tokens,
        written,
        states,
    }
}

impl Prefixes {
    /// Which prefix of the operations `store` shows, if any.
    fn prefix_of(&self, store: &Store) -> Option<usize> {
        let got = observe(store, &self.tokens);
        self.states.iter().position(|s| *s == got)
    }

    /// The weaker check for salvage: every session found is the one its token was
    /// issued for, holding a value that was written to it, and nothing else exists.
    fn check_plausible(&self, store: &Store, what: &str) {
        let (per_token, _) = observe(store, &self.tokens);
        let full = &self.states.last().unwrap().0;
        let ids_of_tokens: Vec<SessionId> = full
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(s) => s.0,
                // s3 ended in the full log: its id from the state where it lived.
                None => {
                    self.states
                        .iter()
                        .find_map(|st| st.0[i].as_ref())
                        .unwrap()
                        .0
                }
            })
            .collect();
        let mut distinct = Vec::new();
        for (i, got) in per_token.iter().enumerate() {
            if let Some((id, _, _, _, n)) = got {
                assert_eq!(
                    *id, ids_of_tokens[i],
                    "{what}: token {i} found another session"
                );
                assert!(
                    self.written[i].contains(n),
                    "{what}: token {i} holds {n:?}, never written"
                );
                if !distinct.contains(id) {
                    distinct.push(*id);
                }
            }
        }
        assert_eq!(
            store.stats().sessions,
            distinct.len(),
            "{what}: sessions that were never created"
        );
    }
}

#[test]
fn a_cut_at_every_byte_of_a_crashed_stores_active_segment_is_a_torn_tail_of_a_prefix() {
    let p = build_prefixes();
    let seg = last_segment(p.dir.path());
    let full = fs::read(&seg).unwrap();
    let trial = trial_dir();
    let mut last_prefix = 0;
    let mut plain = (0, 0);
    // Each cut twice: as a file that ends there (an append that extended the file),
    // and followed by zeros (a crash inside the zero-filled, preallocated part of the
    // active segment). Both must recover the same prefix.
    // (The writer zero-fills only after the header is durable, so a cut inside the
    // header never has zeros after it.)
    let cuts = (0..=full.len()).flat_map(|c| [(c, 0), (c, 4096 - c % 4096)]);
    for (cut, zeros) in cuts.filter(|&(c, z)| z == 0 || c >= HEADER_LEN) {
        copy_dir(p.dir.path(), trial.path());
        let copy = same_file_in(trial.path(), &seg);
        let mut bytes = full[..cut].to_vec();
        bytes.resize(cut + zeros, 0);
        fs::write(&copy, &bytes).unwrap();
        let opened = Store::open_with(trial.path(), opts(&p.clock, Durability::Sync));
        if cut < HEADER_LEN {
            // The manifest names the segment active only once its header is durable:
            // no crash leaves it shorter.
            match opened {
                Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, copy),
                other => panic!("cut at {cut}, inside the active segment's header: {other:?}"),
            }
            continue;
        }
        let store =
            opened.unwrap_or_else(|e| panic!("cut at {cut} of {}: open failed: {e}", full.len()));
        store.verify().unwrap();
        let k = p.prefix_of(&store).unwrap_or_else(|| {
            panic!(
                "cut at {cut}: the recovered state is no prefix of the log: {:?}",
                observe(&store, &p.tokens)
            )
        });
        // (A zero-padded file may hold more than the plain cut, never less.)
        assert!(
            k >= last_prefix,
            "cut at {cut} (+{zeros} zeros): a longer file recovered less ({k} < {last_prefix} operations)"
        );
        let truncated = store.recovery_report().bytes_truncated;
        if cut >= HEADER_LEN {
            // The file keeps exactly the recovered records; what was cut is counted,
            // except zeros at its end (preallocated space, indistinguishable from the
            // zero bytes a torn record may end in).
            // (A segment left with no record is dropped: it kept its header only.)
            let kept = if copy.exists() {
                file_len(&copy) as usize
            } else {
                HEADER_LEN
            };
            let counted = kept + truncated as usize;
            assert!(
                counted <= bytes.len() && bytes[counted..].iter().all(|&b| b == 0),
                "cut at {cut} (+{zeros} zeros): kept {kept} bytes, {truncated} counted as torn"
            );
        }
        if zeros == 0 {
            plain = (k, truncated);
            last_prefix = k;
        } else if full.get(cut) != Some(&0) {
            // (Unless the file itself had a zero there: then the padding completes
            // more of it.)
            assert_eq!(
                (k, truncated),
                plain,
                "cut at {cut}: zeros after it changed what recovered"
            );
        }
        let report = store.recovery_report();
        assert!(
            report.bytes_truncated <= cut as u64,
            "cut at {cut} (+{zeros} zeros): {report:?}"
        );
        if cut == full.len() {
            assert_eq!(k, p.states.len() - 1, "the whole file recovers everything");
            assert_eq!(report.bytes_truncated, 0);
        }
        if cut == HEADER_LEN {
            assert_eq!(k, 0);
        }
        drop(store);
        if cut % 16 == 0 || cut == full.len() {
            let store = open(trial.path(), opts(&p.clock, Durability::Sync));
            assert_eq!(store.recovery_report().bytes_truncated, 0, "cut at {cut}");
            assert_eq!(p.prefix_of(&store), Some(k), "cut at {cut}: second reopen");
        }
    }
}

/// A store with a base, sealed segments after it and an active segment (Sync, 4 KiB
/// segments): the directory after a clean close, a crash image of it taken just before
/// the close, and every session's token and last "n".
struct Layered {
    closed: tempfile::TempDir,
    crashed: tempfile::TempDir,
    sessions: Vec<(Token, u64)>,
}

fn layered_store(clock: &ManualClock) -> Layered {
    let closed = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let store = open(
        closed.path(),
        opts(clock, Durability::Sync).segment_bytes(4096),
    );
    let mut sessions = Vec::new();
    for i in 0..40u64 {
        if i == 12 {
            store.compact().unwrap();
        }
        let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.put(&t, "pad", &"z".repeat(200)).unwrap();
        store.put(&t, "n", &i).unwrap();
        sessions.push((t, i));
    }
    crash_image(closed.path(), crashed.path());
    drop(store);
    for dir in [closed.path(), crashed.path()] {
        assert_eq!(bases(dir).len(), 1);
        assert!(segments(dir).len() >= 3, "{:?}", segments(dir));
    }
    Layered {
        closed,
        crashed,
        sessions,
    }
}

/// Opens `dir` expecting `Error::Corrupt` naming `file`.
fn assert_corrupt_naming(dir: &Path, clock: &ManualClock, file: &Path, what: &str) {
    match Store::open_with(dir, opts(clock, Durability::Sync)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, file, "{what}"),
        Err(e) => panic!(
            "{what}: expected Corrupt naming {}, got {e}",
            file.display()
        ),
        Ok(s) => panic!(
            "{what}: opened with {} of 40 sessions, the damage unnoticed: {:?}",
            s.len(),
            s.recovery_report()
        ),
    }
}

/// Where a file ends is recorded, not inferred: a base or sealed segment cut exactly at
/// a record boundary reads as whole records, and only the manifest's length for it
/// tells that some are gone. After a clean close every file is sealed, the last
/// segment too; after a crash only the active segment may end early (a torn tail).
#[test]
fn a_cut_at_any_record_boundary_of_any_file_is_corruption_but_a_crashed_active_tail() {
    let clock = ManualClock::new(T0);
    let l = layered_store(&clock);
    let trial = trial_dir();
    let mut cuts = 0;
    for (image, crashed) in [(l.closed.path(), false), (l.crashed.path(), true)] {
        let active = crashed.then(|| last_segment(image));
        for file in bases(image).into_iter().chain(segments(image)) {
            let bytes = fs::read(&file).unwrap();
            let boundaries = frame_boundaries(&bytes);
            assert!(boundaries.len() > 3, "{}", file.display());
            for &cut in boundaries.iter().filter(|&&b| b < bytes.len()) {
                let what = format!(
                    "{} cut at {cut} of {} ({})",
                    file.display(),
                    bytes.len(),
                    if crashed { "crash image" } else { "closed" }
                );
                copy_dir(image, trial.path());
                let copy = same_file_in(trial.path(), &file);
                fs::write(&copy, &bytes[..cut]).unwrap();
                cuts += 1;
                if active.as_ref() == Some(&file) {
                    let store = open(trial.path(), opts(&clock, Durability::Sync));
                    // The sessions written before the active segment are all there.
                    assert!(store.len() >= 12, "{what}: {}", store.len());
                    continue;
                }
                assert_corrupt_naming(trial.path(), &clock, &copy, &what);
                // Salvage reads what is there, says what is missing, and leaves a
                // store that opens cleanly.
                let store = open(trial.path(), opts(&clock, Durability::Sync).salvage(true));
                let report = store.recovery_report();
                assert!(
                    report.skipped.iter().any(|r| r.file == copy),
                    "{what}: {report:?}"
                );
                drop(store);
                drop(open(trial.path(), opts(&clock, Durability::Sync)));
            }
        }
    }
    assert!(cuts > 50, "only {cuts} cuts");
    // Undamaged, both open with everything.
    for image in [l.closed.path(), l.crashed.path()] {
        copy_dir(image, trial.path());
        let store = open(trial.path(), opts(&clock, Durability::Sync));
        for (t, n) in &l.sessions {
            assert_eq!(n_of(&store.peek(t).expect("session lost")), Some(*n));
        }
    }
}

/// The set of files is recorded too: a missing or emptied base or segment — the newest
/// one included, which alone used to read as a shorter log — or a lost manifest is
/// `Error::Corrupt` naming it, after a clean close and after a crash alike.
#[test]
fn a_deleted_or_emptied_log_file_or_manifest_is_corruption_naming_it() {
    let clock = ManualClock::new(T0);
    let l = layered_store(&clock);
    let trial = trial_dir();
    for (image, kind) in [
        (l.closed.path(), "closed"),
        (l.crashed.path(), "crash image"),
    ] {
        let files: Vec<PathBuf> = bases(image)
            .into_iter()
            .chain(segments(image))
            .chain([image.join("MANIFEST")])
            .collect();
        for file in &files {
            for emptied in [false, true] {
                let what = format!(
                    "{} {} ({kind})",
                    file.display(),
                    if emptied { "emptied" } else { "deleted" }
                );
                copy_dir(image, trial.path());
                let copy = same_file_in(trial.path(), file);
                if emptied {
                    fs::write(&copy, b"").unwrap();
                } else {
                    fs::remove_file(&copy).unwrap();
                }
                assert_corrupt_naming(trial.path(), &clock, &copy, &what);
                // A refused open changes nothing: refused again.
                assert_corrupt_naming(trial.path(), &clock, &copy, &what);
                if !emptied {
                    // Salvage opens what is left and says what was missing.
                    let store = open(trial.path(), opts(&clock, Durability::Sync).salvage(true));
                    let report = store.recovery_report();
                    assert!(!report.skipped.is_empty(), "{what}: {report:?}");
                    drop(store);
                    drop(open(trial.path(), opts(&clock, Durability::Sync)));
                }
            }
        }
    }
}

/// A valid segment header for `seq` (version 2), as `src/log/format.rs` lays it out.
fn segment_header(seq: u64) -> Vec<u8> {
    let mut h = b"SESSNDB\0".to_vec();
    h.extend_from_slice(&2u32.to_le_bytes());
    h.push(0);
    h.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// What a crash leaves between a file's creation and the manifest that names it — a
/// segment after the active one holding only its header (a roll), a base the manifest
/// does not name yet (a compaction) — is removed on open; a file the manifest does not
/// name that holds records is corruption, never silently read or dropped.
#[test]
fn a_file_the_manifest_does_not_name_is_removed_if_empty_and_corruption_if_not() {
    let clock = ManualClock::new(T0);
    let l = layered_store(&clock);
    let trial = trial_dir();
    for image in [l.closed.path(), l.crashed.path()] {
        let last = segments(image).len() as u64;
        let next_seq = u64::from_str_radix(
            &last_segment(image).file_name().unwrap().to_str().unwrap()[4..20],
            16,
        )
        .unwrap()
            + 1;
        assert!(next_seq > last);
        let stray_seg = trial.path().join(format!("seg-{next_seq:016x}.log"));
        let stray_base = trial.path().join(format!("base-{:016x}.log", next_seq + 3));

        copy_dir(image, trial.path());
        fs::write(&stray_seg, segment_header(next_seq)).unwrap();
        fs::copy(&bases(image)[0], &stray_base).unwrap();
        let store = open(trial.path(), opts(&clock, Durability::Sync));
        for (t, n) in &l.sessions {
            assert_eq!(n_of(&store.peek(t).expect("session lost")), Some(*n));
        }
        assert!(
            !stray_base.exists(),
            "an unfinished compaction's base stayed"
        );
        drop(store);
        assert!(!stray_seg.exists(), "an interrupted roll's segment stayed");

        copy_dir(image, trial.path());
        fs::copy(&segments(image)[0], &stray_seg).unwrap();
        assert_corrupt_naming(
            trial.path(),
            &clock,
            &stray_seg,
            "a stray segment of records",
        );
    }
}

/// A store written before the manifest existed (`tests/fixtures/v1`) opens with every
/// session, is given a manifest, and from then on is checked like any other.
#[test]
fn a_store_written_by_format_1_opens_with_everything_and_is_upgraded() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let expected = fs::read_to_string(fixture.join("EXPECTED.tsv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("store"), dir.path());
    assert!(!dir.path().join("MANIFEST").exists());
    let clock = ManualClock::new(Timestamp(T0.0 + 60_000));
    let check = |store: &Store| {
        let mut rows = 0;
        for line in expected.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split('\t').collect();
            let token = Token::parse(f[0]).unwrap();
            let found = store.peek(&token);
            match f[1] {
                "live" => {
                    let s = found.unwrap_or_else(|| panic!("{line}: lost"));
                    let user = s.user().map_or("-".to_owned(), |u| u.as_str().to_owned());
                    assert_eq!(user, f[2], "{line}");
                    let n = n_of(&s).map_or("-".to_owned(), |n| n.to_string());
                    assert_eq!(n, f[3], "{line}");
                }
                _ => assert!(found.is_none(), "{line}: ended, yet found"),
            }
            rows += 1;
        }
        assert_eq!(rows, 53);
        store.verify().unwrap();
    };
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    drop(store);
    assert!(dir.path().join("MANIFEST").exists(), "not upgraded");
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    check(&store);
    drop(store);
    // Upgraded: a sealed file cut at a record boundary is now caught.
    let first = segments(dir.path())[0].clone();
    let bytes = fs::read(&first).unwrap();
    let boundaries = frame_boundaries(&bytes);
    fs::write(&first, &bytes[..boundaries[boundaries.len() - 2]]).unwrap();
    assert_corrupt_naming(dir.path(), &clock, &first, "upgraded store, sealed cut");
}

#[test]
fn flipping_any_byte_of_a_small_log_is_detected_never_a_panic_or_wrong_data() {
    let p = build_prefixes();
    let seg = last_segment(p.dir.path());
    let full = fs::read(&seg).unwrap();
    let all = p.states.len() - 1;
    let trial = trial_dir();
    let (mut ok, mut corrupt) = (0, 0);
    for i in 0..full.len() {
        let mut bytes = full.clone();
        bytes[i] ^= 1 << (i % 8);
        for salvage in [false, true] {
            let what = format!("flip of byte {i} (salvage {salvage})");
            copy_dir(p.dir.path(), trial.path());
            fs::write(same_file_in(trial.path(), &seg), &bytes).unwrap();
            let result = Store::open_with(
                trial.path(),
                opts(&p.clock, Durability::Sync).salvage(salvage),
            );
            match result {
                Ok(store) => {
                    ok += 1;
                    store.verify().unwrap();
                    let report = store.recovery_report();
                    assert!(
                        report.bytes_truncated > 0 || !report.skipped.is_empty(),
                        "{what}: the damage went unnoticed: {report:?}"
                    );
                    if salvage {
                        p.check_plausible(&store, &what);
                    } else {
                        // Without salvage, only the unsynced tail (the last batch) may
                        // be dropped: anything earlier is proven durable by later batches.
                        let k = p.prefix_of(&store).unwrap_or_else(|| {
                            panic!("{what}: the recovered state is no prefix of the log")
                        });
                        assert!(k + 1 >= all, "{what}: lost {} operations", all - k);
                        assert!(report.skipped.is_empty());
                    }
                }
                Err(Error::Corrupt {
                    segment, offset, ..
                }) => {
                    corrupt += 1;
                    assert_eq!(segment.file_name(), seg.file_name(), "{what}");
                    assert!(offset <= i as u64, "{what}: damage reported at {offset}");
                    if salvage {
                        assert!(i < HEADER_LEN, "{what}: salvage refused a damaged record");
                    }
                }
                Err(Error::UnsupportedFormat { file, .. }) => {
                    assert_eq!(file.file_name(), seg.file_name(), "{what}");
                }
                Err(e) => panic!("{what}: untyped failure: {e:?}"),
            }
        }
    }
    assert!(ok > 0 && corrupt > 0, "ok {ok}, corrupt {corrupt}");
}

#[test]
fn damage_before_a_later_batch_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sessions = small_store(dir.path(), &clock, None);
    let seg = last_segment(dir.path());
    // Inside the second frame after the header: the first record of the first batch.
    let flipped = HEADER_LEN + 30;
    let mut bytes = fs::read(&seg).unwrap();
    assert!(bytes.len() > flipped + 200, "later batches follow");
    bytes[flipped] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();

    match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, seg);
            assert!(
                (HEADER_LEN as u64..=flipped as u64).contains(&offset),
                "offset {offset} for a flip at {flipped}"
            );
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("damaged durable data was silently accepted"),
    }
    // The refused open changed nothing: it fails the same way again.
    assert!(matches!(
        Store::open_with(dir.path(), opts(&clock, Durability::Sync)),
        Err(Error::Corrupt { .. })
    ));

    let store = open(dir.path(), opts(&clock, Durability::Sync).salvage(true));
    let report = store.recovery_report();
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    let skip = &report.skipped[0];
    assert_eq!(skip.file, seg);
    assert!(skip.offset <= flipped as u64 && (flipped as u64) < skip.offset + skip.len);
    assert!(!skip.reason.is_empty());
    // Every other session is intact; the damaged one is gone or intact, never wrong.
    for (t, n) in &sessions {
        if let Some(s) = store.peek(t) {
            assert_eq!(n_of(&s), Some(*n));
        }
    }
    for (t, n) in &sessions[1..] {
        assert_eq!(
            n_of(&store.peek(t).expect("undamaged session lost")),
            Some(*n)
        );
    }
    // A salvage open rewrites the live set at once: the directory then opens cleanly
    // without salvage.
    assert_eq!(store.stats().compactions, 1);
    let kept: Vec<Option<Seen>> = sessions.iter().map(|(t, _)| seen(&store, t)).collect();
    drop(store);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert!(store.recovery_report().skipped.is_empty());
    let again: Vec<Option<Seen>> = sessions.iter().map(|(t, _)| seen(&store, t)).collect();
    assert_eq!(again, kept);
}

/// A store (Sync, 4 KiB segments) with enough history for several segments.
fn multi_segment_store(dir: &Path, clock: &ManualClock) -> Vec<(Token, u64)> {
    let store = open(dir, opts(clock, Durability::Sync).segment_bytes(4096));
    let mut out = Vec::new();
    for i in 0..24u64 {
        let (t, _) = store.create(NewSession::anonymous()).unwrap();
        store.put(&t, "pad", &"z".repeat(200)).unwrap();
        store.put(&t, "n", &i).unwrap();
        out.push((t, i));
    }
    drop(store);
    assert!(segments(dir).len() >= 3, "{:?}", segments(dir));
    out
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_and_salvage_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sessions = multi_segment_store(dir.path(), &clock);
    let first = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    let flipped = bytes.len() / 2;
    bytes[flipped] ^= 0x01;
    fs::write(&first, &bytes).unwrap();
    match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, first);
            assert!(offset <= flipped as u64);
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("damage in a sealed segment was accepted"),
    }
    let store = open(dir.path(), opts(&clock, Durability::Sync).salvage(true));
    let report = store.recovery_report();
    assert!(report.skipped.iter().any(|s| s.file == first), "{report:?}");
    for (t, n) in &sessions {
        if let Some(s) = store.peek(t) {
            assert!(n_of(&s).is_none_or(|v| v == *n), "wrong data after salvage");
        }
    }
    // Sessions written entirely after the damaged segment are intact.
    let last = sessions.last().unwrap();
    assert_eq!(n_of(&store.peek(&last.0).unwrap()), Some(last.1));
}

#[test]
fn a_missing_middle_segment_is_corruption_and_salvage_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let sessions = multi_segment_store(dir.path(), &clock);
    let segs = segments(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, segs[1]),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("a missing segment went unnoticed"),
    }
    let store = open(dir.path(), opts(&clock, Durability::Sync).salvage(true));
    let report = store.recovery_report();
    assert!(
        report.skipped.iter().any(|s| s.file == segs[1]),
        "{report:?}"
    );
    let last = sessions.last().unwrap();
    assert_eq!(n_of(&store.peek(&last.0).unwrap()), Some(last.1));
}

/// Rewrites the header's format version to one more than it says, with a valid CRC.
fn bump_format_version(path: &Path) -> u32 {
    let mut bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"SESSNDB\0");
    assert_eq!(
        u32::from_le_bytes(bytes[21..25].try_into().unwrap()),
        crc32(&bytes[..21]),
        "the header CRC is CRC-32 of the first 21 bytes"
    );
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    bytes[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    let crc = crc32(&bytes[..21]);
    bytes[21..25].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, &bytes).unwrap();
    version + 1
}

#[test]
fn a_newer_format_version_is_refused_as_unsupported() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "CRC-32 check value");
    let clock = ManualClock::new(T0);
    for which in ["last segment", "first segment", "base"] {
        let dir = tempfile::tempdir().unwrap();
        multi_segment_store(dir.path(), &clock);
        if which == "base" {
            let store = open(dir.path(), opts(&clock, Durability::Sync));
            store.compact().unwrap();
        }
        let target = match which {
            "last segment" => last_segment(dir.path()),
            "first segment" => segments(dir.path())[0].clone(),
            _ => bases(dir.path())[0].clone(),
        };
        let found_version = bump_format_version(&target);
        for salvage in [false, true] {
            match Store::open_with(dir.path(), opts(&clock, Durability::Sync).salvage(salvage)) {
                Err(Error::UnsupportedFormat {
                    file,
                    found,
                    supported,
                }) => {
                    assert_eq!(file, target, "{which}");
                    assert_eq!(found, found_version);
                    assert_eq!(supported, found_version - 1);
                }
                Err(e) => panic!("{which}: expected UnsupportedFormat, got {e}"),
                Ok(_) => panic!("{which}: a newer format was opened"),
            }
        }
        assert_eq!(
            fs::read(&target).unwrap()[8],
            found_version as u8,
            "left as found"
        );
    }
}

// ------------------------------------------------------------------------------------
// Garbage and stray files

#[test]
fn random_garbage_named_like_a_log_file_is_a_typed_error() {
    let clock = ManualClock::new(T0);
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for name in [
        "seg-0000000000000001.log",
        "base-0000000000000001.log",
        "seg-00000000000000ff.log",
    ] {
        for len in [HEADER_LEN, 100, 4096, 70_000] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(name), rng.bytes(len)).unwrap();
            for salvage in [false, true] {
                match Store::open_with(dir.path(), opts(&clock, buffered()).salvage(salvage)) {
                    Err(Error::Corrupt { segment, .. }) => {
                        assert_eq!(segment, dir.path().join(name));
                    }
                    Err(Error::UnsupportedFormat { file, .. }) => {
                        assert_eq!(file, dir.path().join(name));
                    }
                    Err(e) => panic!("{name} ({len} bytes): untyped error {e:?}"),
                    Ok(_) => panic!("{name} ({len} bytes) of garbage opened as a store"),
                }
            }
        }
    }
}

#[test]
fn stray_unrelated_files_do_not_disturb_a_store() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let strays: [(&str, &[u8]); 7] = [
        ("notes.txt", b"hello"),
        ("seg-1.log", b"not a segment: wrong name"),
        ("seg-000000000000000g.log", b"not hex"),
        ("base-0000000000000001.log.bak", b"a backup"),
        ("SEG-0000000000000001.LOG", b"upper case"),
        ("seg-0000000000000001.log~", b"editor backup"),
        ("00000001.log", b"someone else's log"),
    ];
    for (name, content) in strays {
        fs::write(dir.path().join(name), content).unwrap();
    }
    fs::create_dir(dir.path().join("archive")).unwrap();
    fs::write(
        dir.path().join("archive").join("seg-0000000000000001.log"),
        b"garbage in a subdirectory",
    )
    .unwrap();

    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert!(store.is_empty());
    let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
    store.put(&t, "n", &5u64).unwrap();
    store.compact().unwrap();
    drop(store);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert_eq!(n_of(&store.peek(&t).unwrap()), Some(5));
    drop(store);
    for (name, content) in strays {
        assert_eq!(
            fs::read(dir.path().join(name)).unwrap(),
            content,
            "{name} was touched"
        );
    }
    assert!(dir.path().join("archive/seg-0000000000000001.log").exists());
}

#[test]

fn unrelated_tmp_files_in_the_store_directory_are_not_deleted() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.tmp"), b"mine").unwrap();
    drop(open(dir.path(), opts(&clock, Durability::Sync)));
    assert_eq!(fs::read(dir.path().join("notes.tmp")).unwrap(), b"mine");
}

// ------------------------------------------------------------------------------------
// Memory durability

#[test]
fn memory_durability_on_a_directory_creates_no_files() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-created");
    for path in [dir.path(), missing.as_path()] {
        let store = open(path, opts(&clock, Durability::Memory));
        let (t, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.put(&t, "n", &1u64).unwrap();
        store.rotate(&t).unwrap();
        store.compact().unwrap();
        store.flush().unwrap();
        let st = store.stats();
        assert_eq!(st.backend, "memory");
        assert_eq!(st.disk_bytes, 0);
        // No lock either: a second memory store on the same path opens.
        let other = open(path, opts(&clock, Durability::Memory));
        assert!(other.is_empty(), "memory stores share nothing");
        drop(other);
        drop(store);
    }
    assert!(!missing.exists(), "the directory was created");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "files were created"
    );
    // And a durable store there afterwards starts empty.
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    assert!(store.is_empty());
}

// Keep the helper types honest about what they compare.
#[test]
fn observed_state_distinguishes_every_prefix() {
    let p = build_prefixes();
    let mut distinct: HashMap<String, usize> = HashMap::new();
    for (k, s) in p.states.iter().enumerate() {
        if let Some(prev) = distinct.insert(format!("{s:?}"), k) {
            panic!("operations {prev} and {k} look the same; the prefix check would be weak");
        }
    }
}

#[test]
fn imported_sessions_caller_chosen_tokens_and_exact_expiry_survive_reopen() {
    for (backend, name) in backends() {
        let clock = ManualClock::new(T0);
        let o = || opts(&clock, Durability::Sync).backend(backend);
        // A source store, exported.
        let src = Store::in_memory_with(opts(&clock, Durability::Memory)).unwrap();
        let (a, _) = src.create(NewSession::for_user("alice")).unwrap();
        src.put(&a, "k", &5u8).unwrap();
        clock.advance(secs(3));
        src.touch(&a).unwrap();
        let mut records = Vec::new();
        src.export(|r| {
            records.push(r);
            Ok(())
        })
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), o());
        for r in records {
            assert!(store.import(r).unwrap(), "{name}");
        }
        let chosen = Token::from_bytes([42u8; 24]);
        store
            .create_with_token(&chosen, NewSession::for_user("bob"))
            .unwrap();
        let deadline = T0.saturating_add(secs(600));
        store.set_expiry(&chosen, deadline).unwrap();
        let before = (store.peek(&a).unwrap(), store.peek(&chosen).unwrap());
        drop(store);

        let store = open(dir.path(), o());
        let after = (store.peek(&a).unwrap(), store.peek(&chosen).unwrap());
        for (x, y) in [(&before.0, &after.0), (&before.1, &after.1)] {
            assert_eq!(x.id(), y.id(), "{name}");
            assert_eq!(x.user(), y.user(), "{name}");
            assert_eq!(x.created_at(), y.created_at(), "{name}");
            assert_eq!(x.last_seen(), y.last_seen(), "{name}");
            assert_eq!(x.authenticated_at(), y.authenticated_at(), "{name}");
            assert_eq!(x.absolute_deadline(), y.absolute_deadline(), "{name}");
            assert_eq!(x.version(), y.version(), "{name}");
        }
        assert_eq!(after.0.get::<u8>("k").unwrap(), Some(5), "{name}");
        assert_eq!(after.1.absolute_deadline(), deadline, "{name}");
        assert_eq!(store.sessions_of("alice").unwrap().len(), 1, "{name}");
        // And through a compaction (the image goes into a base).
        store.compact().unwrap();
        drop(store);
        let store = open(dir.path(), o());
        assert_eq!(store.peek(&a).unwrap().id(), before.0.id(), "{name}");
        assert_eq!(store.peek(&chosen).unwrap().absolute_deadline(), deadline);
    }
}

// ------------------------------------------------------------------------------------
// A base, read in two halves

/// A base is decoded on two threads, split at the frame nearest its middle: damage in
/// either half, or a base cut short, is still `Error::Corrupt` at or before the damaged
/// byte, and an undamaged base brings back every session and every user's list.
#[test]
fn damage_in_either_half_of_a_base_is_corrupt() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut by_user: BTreeMap<String, Vec<SessionId>> = BTreeMap::new();
    // Over 8 MiB, so the base is also read by two threads.
    let filler = "x".repeat(1500);
    {
        let store = open(dir.path(), opts(&clock, Durability::default()));
        for i in 0..6000 {
            let user = format!("user-{}", i % 37);
            let mut data = SessionData::new();
            data.insert("filler", filler.as_str()).unwrap();
            let (_, s) = store
                .create(NewSession::for_user(user.clone()).data(data))
                .unwrap();
            by_user.entry(user).or_default().push(s.id());
        }
        store.create(NewSession::anonymous()).unwrap();
        store.compact().unwrap();
    }
    let base = bases(dir.path())[0].clone();
    let clean = fs::read(&base).unwrap();
    {
        let store = open(dir.path(), opts(&clock, Durability::Sync));
        assert_eq!(store.recovery_report().sessions, 6001);
        assert!(clean.len() > 8 << 20, "a base of {} bytes", clean.len());
        for (user, ids) in &by_user {
            let mut found: Vec<String> = store
                .sessions_of(user)
                .unwrap()
                .iter()
                .map(|s| s.id().to_string())
                .collect();
            let mut want: Vec<String> = ids.iter().map(ToString::to_string).collect();
            found.sort();
            want.sort();
            assert_eq!(found, want, "{user}");
        }
    }
    for at in [clean.len() / 4, clean.len() / 2 + 7, clean.len() * 3 / 4] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x55;
        fs::write(&base, &bytes).unwrap();
        match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, base);
                assert!(
                    offset <= at as u64,
                    "offset {offset} past the damage at {at}"
                );
                assert!(at as u64 - offset < 4096, "offset {offset} far before {at}");
            }
            Err(e) => panic!("damage at {at}: expected Corrupt, got {e}"),
            Ok(_) => panic!("damage at {at}: a damaged base was opened"),
        }
    }
    fs::write(&base, &clean[..clean.len() - 10]).unwrap();
    assert!(matches!(
        Store::open_with(dir.path(), opts(&clock, Durability::Sync)),
        Err(Error::Corrupt { .. })
    ));
}
