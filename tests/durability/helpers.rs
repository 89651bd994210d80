//! What the topics share: the options every test starts from and the backends to run
//! on, [`Seen`] (everything the public API shows of a session), the store's files
//! (listing, copying, crash images, record boundaries, CRC-32), a deterministic
//! [`Rng`], and the stores more than one topic damages: [`small_store`] and
//! [`Prefixes`] (a log, and the state after each of its operations).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessiondb::{
    BackendKind, Durability, Error, ManualClock, NewSession, Options, Session, SessionId, Store,
    Timestamp, Token,
};

pub const T0: Timestamp = Timestamp(1_800_000_000_000);

/// The file header: magic (8) | version u32 | kind u8 | sequence u64 | crc32 u32.
pub const HEADER_LEN: usize = 25;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Options every test starts from: a manual clock, no reaper thread, no automatic
/// compaction (tests that want it turn it on).
pub fn opts(clock: &ManualClock, durability: Durability) -> Options {
    Options::default()
        .clock(clock.clone())
        .reaper_interval(None)
        .durability(durability)
        .compaction(false, 16 << 20, 2.0)
}

/// The storage backends the backend-independent tests run against.
pub fn backends() -> Vec<(BackendKind, &'static str)> {
    let mut v = vec![(BackendKind::Log, "log")];
    if cfg!(feature = "sled") {
        v.push((BackendKind::Sled, "sled"));
    }
    v
}

pub fn buffered() -> Durability {
    Durability::Buffered {
        flush_every: Duration::from_millis(20),
    }
}

/// Opens a store that must open, and checks its indexes agree.
pub fn open(dir: &Path, opts: Options) -> Store {
    let store = Store::open_with(dir, opts)
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", dir.display()));
    store.verify().expect("a freshly opened store verifies");
    store
}

/// Opens `dir`, waiting up to 2 s for a store being dropped to release its lock.
pub fn open_when_released(dir: &Path, opts: impl Fn() -> Options) -> Store {
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

/// Everything the public API shows of a session, comparable.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
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

pub fn seen(store: &Store, token: &Token) -> Option<Seen> {
    store.peek(token).map(|s| Seen::from(&s))
}

pub fn n_of(s: &Session) -> Option<u64> {
    s.get::<u64>("n").expect("\"n\" always holds a u64")
}

pub fn ids_of(store: &Store, user: &str) -> Vec<SessionId> {
    store
        .sessions_of(user)
        .unwrap()
        .iter()
        .map(Session::id)
        .collect()
}

pub fn snapshot_all(store: &Store, tokens: &[Token]) -> Vec<Option<Seen>> {
    tokens.iter().map(|t| seen(store, t)).collect()
}

/// A small deterministic generator (xorshift64), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ------------------------------------------------------------------------------------
// Files

/// The log files (`seg-*.log`, `base-*.log`) of `dir`, sorted by name (the sequence is
/// fixed-width hex, so this is sequence order within each kind).
pub fn log_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
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

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    log_files(dir, "seg-")
}

pub fn bases(dir: &Path) -> Vec<PathBuf> {
    log_files(dir, "base-")
}

pub fn last_segment(dir: &Path) -> PathBuf {
    segments(dir)
        .pop()
        .expect("a durable store has at least one segment")
}

/// Makes `to` an exact copy of the files of `from`.
pub fn copy_dir(from: &Path, to: &Path) {
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
pub fn crash_image(from: &Path, to: &Path) {
    copy_dir(from, to);
    let seg = last_segment(to);
    let bytes = fs::read(&seg).unwrap();
    let records = *frame_boundaries(&bytes).last().unwrap();
    fs::write(&seg, &bytes[..records]).unwrap();
}

/// The offsets at which the frames of a log file start, and its end: every record
/// boundary. Stops at zeros (preallocated space).
pub fn frame_boundaries(bytes: &[u8]) -> Vec<usize> {
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
pub fn trial_dir() -> tempfile::TempDir {
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
pub fn same_file_in(dir: &Path, file: &Path) -> PathBuf {
    dir.join(file.file_name().unwrap())
}

pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as the format uses.
pub fn crc32(bytes: &[u8]) -> u32 {
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

// ------------------------------------------------------------------------------------
// Stores more than one topic damages

/// A few sessions and values, written (Sync) and closed — or, given `crashed`, left
/// there as a crash image; returns the tokens and each session's last "n".
pub fn small_store(dir: &Path, clock: &ManualClock, crashed: Option<&Path>) -> Vec<(Token, u64)> {
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

/// A log written one operation per batch (Sync, one thread), as a crash image, and what
/// the store showed after each operation, so a recovered state can be matched to a
/// prefix of the log.
pub struct Prefixes {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    /// Every token the log ever issued, in issue order.
    pub tokens: Vec<Token>,
    /// For each token, the values of "n" ever written to its session.
    pub written: Vec<Vec<Option<u64>>>,
    /// `states[k]`: the view after the first k operations.
    pub states: Vec<Observed>,
}

const PREFIX_USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Per token: (id, user, label, version, n); per user: the ids listed.
pub type Observed = (
    Vec<Option<(SessionId, Option<String>, Option<String>, u64, Option<u64>)>>,
    Vec<Vec<SessionId>>,
);

pub fn observe(store: &Store, tokens: &[Token]) -> Observed {
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

pub fn build_prefixes() -> Prefixes {
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
    pub fn prefix_of(&self, store: &Store) -> Option<usize> {
        let got = observe(store, &self.tokens);
        self.states.iter().position(|s| *s == got)
    }

    /// The weaker check for salvage: every session found is the one its token was
    /// issued for, holding a value that was written to it, and nothing else exists.
    pub fn check_plausible(&self, store: &Store, what: &str) {
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
