//! Crash tests that really kill a process.
//!
//! The child is this test binary itself, running the ignored test `crash_child` (which
//! does nothing unless `SESSIONDB_CRASH_CHILD_DIR` is set): it opens a store with
//! `Durability::Sync`, small segments and eager compaction, and writes from several
//! threads forever, printing `INTENT …` before and `ACK …` after every call (half the
//! threads make each write inside `Store::deferred` and acknowledge it once its `Commit`,
//! polled as a future, completes: the async servers' path). The parent
//! kills it with SIGKILL (or lets it abort at a crash point, `SESSIONDB_FAILPOINT`),
//! reopens the store normally, and checks against the acknowledged history:
//!
//! - every acknowledged session that was not acknowledged-ended is there, found by the
//!   newest acknowledged token, with the last acknowledged value of "n" — or the next
//!   one, if that put was in flight — and never a value that was never written;
//! - every acknowledged end (and revoke) stays ended;
//! - the user index lists exactly the live sessions of each user (plus, at most,
//!   sessions whose create was in flight);
//! - `Store::verify` passes.
//!
//! What was in flight at the crash (an `INTENT` with no `ACK`) may have happened or
//! not; the parent accepts either and carries on with what it found.
//!
//! Environment: `SESSIONDB_CRASH_SECS` (kill-loop budget, default 60),
//! `SESSIONDB_CRASH_SEED` (reproduce a run's choices; timing still varies).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessiondb::{
    BackendKind, Durability, FAILPOINT_ENV, NewSession, Options, RecoveryReport, SessionId, Store,
    Token,
};

const CHILD_DIR_ENV: &str = "SESSIONDB_CRASH_CHILD_DIR";
const BACKEND_ENV: &str = "SESSIONDB_CRASH_BACKEND";
const MODE_ENV: &str = "SESSIONDB_CRASH_MODE";
const SEED_ENV: &str = "SESSIONDB_CRASH_SEED";
const SECS_ENV: &str = "SESSIONDB_CRASH_SECS";

/// Writer threads in the child: half of them block for their fsync, and six blocking
/// threads outnumber twice the cores of a 2-core machine, so waiters there also take
/// the path that yields before it parks.
const CHILD_THREADS: u64 = 12;

/// Every crash point of the log backend (`src/util/failpoint.rs`). The first two are
/// reached while the child opens its store (a manifest written, an empty segment not
/// yet dropped); the others while it writes and compacts.
const FAILPOINTS: [&str; 11] = [
    "manifest:before_rename",
    "open:after_manifest",
    "writer:mid_batch",
    "roll:before_manifest",
    "compaction:after_roll",
    "compaction:mid_base",
    "compaction:after_base_synced",
    "compaction:after_rename",
    "compaction:after_manifest",
    "compaction:mid_delete",
    "compaction:after_delete",
];

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

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
}

fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn backend_kind(name: &str) -> BackendKind {
    match name {
        "sled" => BackendKind::Sled,
        _ => BackendKind::Log,
    }
}

// ------------------------------------------------------------------------------------
// The child

/// Prints one whole line and flushes it. The stdout lock keeps lines from different
/// threads apart, and a line is one `write` to the pipe (shorter than `PIPE_BUF`), so
/// a kill never leaves half a line.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn child_fail(what: &str) -> ! {
    say(&format!("ERR {what}"));
    std::process::exit(2);
}

#[test]
#[ignore = "the child process of the crash tests; does nothing unless SESSIONDB_CRASH_CHILD_DIR is set"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let backend = std::env::var(BACKEND_ENV).unwrap_or_default();
    let eager = std::env::var(MODE_ENV).as_deref() == Ok("failpoint");
    let seed = seed();
    let opts = Options::default()
        .durability(Durability::Sync)
        .segment_bytes(64 << 10)
        .compaction(true, 256 << 10, 2.0)
        .backend(backend_kind(&backend));
    let store = match Store::open_with(&dir, opts) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("OPEN_ERR {e}"));
            std::process::exit(3);
        }
    };
    // On a line of its own: the test harness has printed "test crash_child ... ".
    say("\nREADY");
    {
        // Compaction on demand too, so crashes meet compactions at every step.
        let store = store.clone();
        // At a crash point, compaction starts after a random pause, so that it meets
        // writes in flight rather than a store just opened.
        let pause = if eager { seed % 300 } else { 0 };
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(pause));
            loop {
                if let Err(e) = store.compact() {
                    child_fail(&format!("compact: {e}"));
                }
                let pause = if eager { 1 } else { 100 };
                std::thread::sleep(Duration::from_millis(pause));
            }
        });
    }
    for t in 0..CHILD_THREADS {
        let store = store.clone();
        std::thread::spawn(move || child_worker(t, &store, seed));
    }
    loop {
        std::thread::park();
    }
}

/// The store, written through directly or through `Store::deferred`.
struct Writer<'a> {
    store: &'a Store,
    deferred: bool,
}

impl Writer<'_> {
    fn write<R>(&self, f: impl FnOnce(&Store) -> sessiondb::Result<R>) -> sessiondb::Result<R> {
        if !self.deferred {
            return f(self.store);
        }
        let (r, commit) = self.store.deferred(f);
        let durable = block_on(commit);
        r.and_then(|v| durable.map(|()| v))
    }

    fn create(&self, new: NewSession) -> sessiondb::Result<(Token, sessiondb::Session)> {
        self.write(|s| s.create(new))
    }

    fn update<R>(
        &self,
        token: &Token,
        f: impl FnMut(&mut sessiondb::SessionData) -> sessiondb::Result<R>,
    ) -> sessiondb::Result<R> {
        self.write(|s| s.update(token, f))
    }

    fn get(&self, token: &Token) -> Option<sessiondb::Session> {
        self.store.get(token)
    }

    fn rotate(&self, token: &Token) -> sessiondb::Result<Token> {
        self.write(|s| s.rotate(token))
    }

    fn bind_user(&self, token: &Token, user: &str) -> sessiondb::Result<()> {
        self.write(|s| s.bind_user(token, user))
    }

    fn end(&self, token: &Token) -> sessiondb::Result<bool> {
        self.write(|s| s.end(token))
    }

    fn revoke_user(&self, user: &str) -> sessiondb::Result<usize> {
        self.write(|s| s.revoke_user(user))
    }
}

struct Mine {
    token: Token,
    n: u64,
    user: Option<String>,
}

/// Polls `fut` to completion on this thread, parked between polls until woken.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// One writer thread of the child: random operations on its own sessions and users
/// (users are named after the thread, so no other thread touches them). Odd threads
/// make every write inside `Store::deferred` and await its commit before the ACK.
fn child_worker(t: u64, store: &Store, seed: u64) -> ! {
    let deferred = t % 2 == 1;
    let store = &Writer { store, deferred };
    let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut mine: Vec<Mine> = Vec::new();
    let user_name = |k: u64| format!("t{t}u{k}");
    loop {
        let r = rng.below(100);
        if mine.len() < 3 || r < 15 {
            let user = (rng.below(2) == 0).then(|| user_name(rng.below(3)));
            let new = match &user {
                Some(u) => NewSession::for_user(u.clone()),
                None => NewSession::anonymous(),
            };
            say(&format!("INTENT {t} CREATE"));
            let (token, s) = store
                .create(new.label(format!("thread {t}")))
                .unwrap_or_else(|e| child_fail(&format!("{t} create: {e}")));
            say(&format!(
                "ACK {t} CREATE {token} {} {}",
                s.id(),
                user.as_deref().unwrap_or("-")
            ));
            mine.push(Mine { token, n: 0, user });
            continue;
        }
        let i = rng.below(mine.len() as u64) as usize;
        let token = mine[i].token.clone();
        if r < 60 {
            let n = mine[i].n + 1;
            let pad = "p".repeat(rng.below(400) as usize);
            say(&format!("INTENT {t} PUT {token} {n}"));
            store
                .update(&token, |d| {
                    d.insert("n", &n)?;
                    d.insert("pad", pad.as_str())
                })
                .unwrap_or_else(|e| child_fail(&format!("{t} put: {e}")));
            say(&format!("ACK {t} PUT {token} {n}"));
            mine[i].n = n;
        } else if r < 68 {
            // A read (which also touches): the child's own view must match.
            let got = store
                .get(&token)
                .unwrap_or_else(|| child_fail(&format!("{t} get: own session vanished")));
            let n = got.get::<u64>("n").ok().flatten().unwrap_or(0);
            if n != mine[i].n {
                child_fail(&format!("{t} get: n is {n}, wrote {}", mine[i].n));
            }
        } else if r < 76 {
            say(&format!("INTENT {t} ROTATE {token}"));
            let new = store
                .rotate(&token)
                .unwrap_or_else(|e| child_fail(&format!("{t} rotate: {e}")));
            say(&format!("ACK {t} ROTATE {token} {new}"));
            mine[i].token = new;
        } else if r < 83 {
            let user = user_name(rng.below(3));
            say(&format!("INTENT {t} BIND {token} {user}"));
            store
                .bind_user(&token, &user)
                .unwrap_or_else(|e| child_fail(&format!("{t} bind: {e}")));
            say(&format!("ACK {t} BIND {token} {user}"));
            mine[i].user = Some(user);
        } else if r < 97 {
            say(&format!("INTENT {t} END {token}"));
            match store.end(&token) {
                Ok(true) => {}
                Ok(false) => child_fail(&format!("{t} end: own session was not live")),
                Err(e) => child_fail(&format!("{t} end: {e}")),
            }
            say(&format!("ACK {t} END {token}"));
            mine.swap_remove(i);
        } else {
            let user = user_name(rng.below(3));
            say(&format!("INTENT {t} REVOKE {user}"));
            let n = store
                .revoke_user(&user)
                .unwrap_or_else(|e| child_fail(&format!("{t} revoke: {e}")));
            say(&format!("ACK {t} REVOKE {user} {n}"));
            mine.retain(|m| m.user.as_deref() != Some(user.as_str()));
        }
    }
}

// ------------------------------------------------------------------------------------
// Running a child

struct Outcome {
    lines: Vec<String>,
    status: ExitStatus,
    stderr: String,
    /// Whether the child had printed READY (opened its store) when it died.
    was_ready: bool,
}

fn is_ready(line: &str) -> bool {
    line.ends_with("READY")
}

/// The last lines of a child's output, for a failure message.
fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(12)..].join("\n")
}

struct Running {
    child: Child,
    lines: Receiver<String>,
    stderr: JoinHandle<String>,
}

fn start_child(dir: &Path, backend: &str, failpoint: Option<&str>, seed: u64) -> Running {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "crash_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_DIR_ENV, dir)
    .env(BACKEND_ENV, backend)
    .env(SEED_ENV, seed.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match failpoint {
        Some(p) => cmd.env(FAILPOINT_ENV, p).env(MODE_ENV, "failpoint"),
        None => cmd.env_remove(FAILPOINT_ENV).env(MODE_ENV, "kill"),
    };
    let mut child = cmd.spawn().expect("spawning the crash child");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines: rx,
        stderr,
    }
}

impl Running {
    /// Collects lines until READY (or the child's death, or the timeout).
    fn wait_ready(&mut self, lines: &mut Vec<String>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let ready = is_ready(&l);
                    lines.push(l);
                    if ready {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn finish(mut self, mut lines: Vec<String>) -> Outcome {
        let status = self.child.wait().expect("waiting for the crash child");
        lines.extend(self.lines.iter());
        let stderr = self.stderr.join().unwrap_or_default();
        let was_ready = lines.iter().any(|l| is_ready(l));
        Outcome {
            lines,
            status,
            stderr,
            was_ready,
        }
    }
}

/// Runs a child and SIGKILLs it after a random delay: usually counted from READY,
/// sometimes from the spawn (so the kill can land inside recovery).
fn run_killed(dir: &Path, backend: &str, rng: &mut Rng) -> (Outcome, Duration) {
    let mut run = start_child(dir, backend, None, rng.next());
    let mut lines = Vec::new();
    // One time in eight, counted from the spawn with a short delay: the kill may land
    // while the child is still recovering (cutting a tail, deleting leftovers).
    let from_spawn = rng.below(8) == 0;
    let delay = Duration::from_millis(if from_spawn {
        rng.below(60)
    } else {
        50 + rng.below(351)
    });
    if !from_spawn && !run.wait_ready(&mut lines, Duration::from_secs(60)) {
        let _ = run.child.kill();
        let out = run.finish(lines);
        panic!(
            "the child did not open its store ({:?}); output:\n{}\nstderr:\n{}",
            out.status,
            tail(&out.lines),
            out.stderr
        );
    }
    std::thread::sleep(delay);
    run.child.kill().expect("SIGKILL the child");
    (run.finish(lines), delay)
}

/// Runs a child with a crash point armed and waits for it to abort there.
fn run_to_failpoint(dir: &Path, backend: &str, point: &str, seed: u64) -> Outcome {
    let mut run = start_child(dir, backend, Some(point), seed);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if run.child.try_wait().expect("polling the child").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = run.child.kill();
            let out = run.finish(Vec::new());
            panic!(
                "crash point {point} was not reached within 30 s; child stderr:\n{}",
                out.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = run.finish(Vec::new());
    assert!(!out.status.success(), "the child exited cleanly at {point}");
    assert!(
        out.stderr.contains(&format!("crash point {point} reached")),
        "the child died, but not at {point} ({:?}); stderr:\n{}",
        out.status,
        out.stderr
    );
    out
}

// ------------------------------------------------------------------------------------
// The parent's model of what was acknowledged

#[derive(Clone, Debug)]
struct Tracked {
    /// The newest token known to be issued; `None` once a rotation was in flight at a
    /// crash (the new token was never acknowledged, so it is unknown).
    token: Option<String>,
    user: Option<String>,
    n: Option<u64>,
    live: bool,
}

#[derive(Debug)]
enum Intent {
    Create,
    Put { token: String, n: u64 },
    Rotate { token: String },
    Bind { token: String, user: String },
    End { token: String },
    Revoke { user: String },
}

#[derive(Default)]
struct Model {
    /// By session id.
    sessions: BTreeMap<String, Tracked>,
    /// Every token ever acknowledged → its session id.
    by_token: HashMap<String, String>,
    users: HashSet<String>,
    acks: u64,
}

impl Model {
    fn id_of(&self, token: &str) -> Result<String, String> {
        self.by_token
            .get(token)
            .cloned()
            .ok_or_else(|| format!("a line names token {token}, never acknowledged"))
    }

    /// Applies a child's acknowledgements; returns what was in flight when it died.
    fn absorb(&mut self, lines: &[String]) -> Result<Vec<Intent>, String> {
        let mut pending: BTreeMap<u64, Intent> = BTreeMap::new();
        for line in lines {
            let w: Vec<&str> = line.split_whitespace().collect();
            let Some((&kind, rest)) = w.split_first() else {
                continue;
            };
            match kind {
                "ERR" | "OPEN_ERR" => return Err(format!("the child reported: {line}")),
                "INTENT" | "ACK" => {}
                _ => continue,
            }
            let bad = || format!("malformed line {line:?}");
            let t: u64 = rest.first().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
            let args = &rest[1..];
            if kind == "INTENT" {
                let intent = match args {
                    ["CREATE"] => Intent::Create,
                    ["PUT", token, n] => Intent::Put {
                        token: (*token).to_owned(),
                        n: n.parse().map_err(|_| bad())?,
                    },
                    ["ROTATE", token] => Intent::Rotate {
                        token: (*token).to_owned(),
                    },
                    ["BIND", token, user] => Intent::Bind {
                        token: (*token).to_owned(),
                        user: (*user).to_owned(),
                    },
                    ["END", token] => Intent::End {
                        token: (*token).to_owned(),
                    },
                    ["REVOKE", user] => Intent::Revoke {
                        user: (*user).to_owned(),
                    },
                    _ => return Err(bad()),
                };
                pending.insert(t, intent);
                continue;
            }
            pending.remove(&t);
            self.acks += 1;
            match args {
                ["CREATE", token, id, user] => {
                    let user = (*user != "-").then(|| (*user).to_owned());
                    if let Some(u) = &user {
                        self.users.insert(u.clone());
                    }
                    self.by_token.insert((*token).to_owned(), (*id).to_owned());
                    self.sessions.insert(
                        (*id).to_owned(),
                        Tracked {
                            token: Some((*token).to_owned()),
                            user,
                            n: None,
                            live: true,
                        },
                    );
                }
                ["PUT", token, n] => {
                    let id = self.id_of(token)?;
                    self.sessions.get_mut(&id).unwrap().n = Some(n.parse().map_err(|_| bad())?);
                }
                ["ROTATE", old, new] => {
                    let id = self.id_of(old)?;
                    self.by_token.insert((*new).to_owned(), id.clone());
                    self.sessions.get_mut(&id).unwrap().token = Some((*new).to_owned());
                }
                ["BIND", token, user] => {
                    let id = self.id_of(token)?;
                    self.users.insert((*user).to_owned());
                    self.sessions.get_mut(&id).unwrap().user = Some((*user).to_owned());
                }
                ["END", token] => {
                    let id = self.id_of(token)?;
                    self.sessions.get_mut(&id).unwrap().live = false;
                }
                ["REVOKE", user, count] => {
                    let count: usize = count.parse().map_err(|_| bad())?;
                    let mut known = 0;
                    for s in self.sessions.values_mut() {
                        if s.live && s.user.as_deref() == Some(*user) {
                            s.live = false;
                            known += 1;
                        }
                    }
                    // Sessions whose create was in flight at an earlier crash may be
                    // revoked too; acknowledged ones must all be.
                    if count < known {
                        return Err(format!(
                            "revoke of {user} ended {count} sessions, {known} were acknowledged live"
                        ));
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(pending.into_values().collect())
    }

    /// Checks a reopened store against the model, settling what was in flight by what
    /// the store shows. Returns how many sessions were checked.
    fn check(&mut self, store: &Store, in_flight: &[Intent]) -> Result<usize, String> {
        let mut maybe_n: HashMap<String, u64> = HashMap::new();
        let mut maybe_user: HashMap<String, String> = HashMap::new();
        let mut maybe_ended: HashSet<String> = HashSet::new();
        let mut rotating: HashSet<String> = HashSet::new();
        for intent in in_flight {
            match intent {
                Intent::Create => {}
                Intent::Put { token, n } => {
                    maybe_n.insert(self.id_of(token)?, *n);
                }
                Intent::Rotate { token } => {
                    rotating.insert(self.id_of(token)?);
                }
                Intent::Bind { token, user } => {
                    maybe_user.insert(self.id_of(token)?, user.clone());
                }
                Intent::End { token } => {
                    maybe_ended.insert(self.id_of(token)?);
                }
                Intent::Revoke { user } => {
                    for (id, s) in &self.sessions {
                        if s.live && s.user.as_deref() == Some(user.as_str()) {
                            maybe_ended.insert(id.clone());
                        }
                    }
                }
            }
        }
        let mut checked = 0;
        for (id, s) in &mut self.sessions {
            let sid = SessionId::parse(id).map_err(|e| format!("session id {id}: {e}"))?;
            let by_token = |token: &Option<String>| -> Result<Option<SessionId>, String> {
                match token {
                    Some(t) => {
                        let t = Token::parse(t).map_err(|e| format!("token {t}: {e}"))?;
                        Ok(store.peek(&t).map(|s| s.id()))
                    }
                    None => Ok(None),
                }
            };
            match store.get_by_id(sid) {
                None if !s.live => {
                    if by_token(&s.token)?.is_some() {
                        return Err(format!("ended session {id}: its token resolves again"));
                    }
                }
                Some(_) if !s.live => {
                    return Err(format!("session {id} was acknowledged ended, and is back"));
                }
                None if maybe_ended.contains(id) => s.live = false,
                None => {
                    return Err(format!(
                        "acknowledged session {id} was lost (last state {s:?})"
                    ));
                }
                Some(got) => {
                    checked += 1;
                    let n = got
                        .get::<u64>("n")
                        .map_err(|e| format!("session {id}: \"n\" unreadable: {e}"))?;
                    if n != s.n {
                        if n.is_some() && n == maybe_n.get(id).copied() {
                            s.n = n;
                        } else {
                            return Err(format!(
                                "session {id}: n is {n:?}; acknowledged {:?}, in flight {:?}",
                                s.n,
                                maybe_n.get(id)
                            ));
                        }
                    }
                    let user = got.user().map(|u| u.as_str().to_owned());
                    if user != s.user {
                        if user.is_some() && user.as_ref() == maybe_user.get(id) {
                            s.user = user;
                        } else {
                            return Err(format!(
                                "session {id}: user is {user:?}; acknowledged {:?}",
                                s.user
                            ));
                        }
                    }
                    let found = by_token(&s.token)?;
                    if rotating.contains(id) {
                        // Rotated or not: the old token resolves to it (in its grace
                        // period) or to nothing; the new one was never acknowledged.
                        if found.is_some_and(|f| f != sid) {
                            return Err(format!("session {id}: token resolves elsewhere"));
                        }
                        s.token = None;
                    } else if s.token.is_some() && found != Some(sid) {
                        return Err(format!(
                            "session {id}: its newest token resolves to {found:?}"
                        ));
                    }
                }
            }
        }
        for user in &self.users {
            let listed: HashSet<SessionId> = store
                .sessions_of(user)
                .map_err(|e| format!("sessions_of({user}): {e}"))?
                .iter()
                .map(|s| s.id())
                .collect();
            for (id, s) in &self.sessions {
                let sid = SessionId::parse(id).unwrap();
                let should = s.live && s.user.as_deref() == Some(user.as_str());
                if should && !listed.contains(&sid) {
                    return Err(format!("user {user}: live session {id} is not listed"));
                }
                if !should && listed.contains(&sid) {
                    return Err(format!("user {user}: lists session {id}, which is {s:?}"));
                }
            }
        }
        Ok(checked)
    }

    fn live(&self) -> usize {
        self.sessions.values().filter(|s| s.live).count()
    }
}

/// Reopens the store the way an application would (no salvage) and checks it.
/// Opens the store, waiting out a lock still held for a moment by a process that is
/// not the killed child: the two kill loops run in parallel threads of this process,
/// and a child forked by one inherits, until its `exec`, the descriptor (and so the
/// `flock`) of a store the other thread has open — closing ours does not release a
/// lock a forked copy still shares. The killed child itself has been reaped by now.
fn open_when_released(dir: &Path, opts: Options) -> sessiondb::Result<Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_with(dir, opts.clone()) {
            Err(sessiondb::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn reopen_and_check(
    dir: &Path,
    backend: &str,
    model: &mut Model,
    in_flight: &[Intent],
    what: &str,
) -> (RecoveryReport, usize) {
    let opts = Options::default()
        .backend(backend_kind(backend))
        .reaper_interval(None)
        .compaction(false, 16 << 20, 2.0);
    let store = open_when_released(dir, opts)
        .unwrap_or_else(|e| panic!("{what}: reopening after the crash failed: {e}"));
    store
        .verify()
        .unwrap_or_else(|e| panic!("{what}: verify: {e}"));
    let checked = model
        .check(&store, in_flight)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (store.recovery_report(), checked)
}

fn base_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("base-") && name.ends_with(".log")
        })
        .count()
}

fn absorb(model: &mut Model, out: &Outcome, what: &str) -> Vec<Intent> {
    model.absorb(&out.lines).unwrap_or_else(|e| {
        panic!(
            "{what}: {e}\nchild status {:?}, last output:\n{}\nstderr:\n{}",
            out.status,
            tail(&out.lines),
            out.stderr
        )
    })
}

// ------------------------------------------------------------------------------------
// The tests

fn kill_loop(backend: &str) {
    let budget = Duration::from_secs(
        std::env::var(SECS_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let seed = seed();
    eprintln!("kill -9 loop ({backend}): seed {seed} ({SEED_ENV}), budget {budget:?} ({SECS_ENV})");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let started = Instant::now();
    let (mut iterations, mut checked, mut truncated, mut torn, mut early, mut with_base) =
        (0u64, 0usize, 0u64, 0u64, 0u64, 0u64);
    while iterations < 3 || started.elapsed() < budget {
        iterations += 1;
        let (out, delay) = run_killed(dir.path(), backend, &mut rng);
        let what =
            format!("{backend} iteration {iterations} (seed {seed}, killed after {delay:?})");
        let in_flight = absorb(&mut model, &out, &what);
        if !out.was_ready {
            early += 1;
        }
        let (report, n) = reopen_and_check(dir.path(), backend, &mut model, &in_flight, &what);
        checked += n;
        truncated += report.bytes_truncated;
        torn += u64::from(report.bytes_truncated > 0);
        with_base += u64::from(base_files(dir.path()) > 0);
        assert!(report.skipped.is_empty(), "{what}: {report:?}");
    }
    // Everything settled: a last reopen finds exactly the model, nothing in flight.
    let (report, _) = reopen_and_check(dir.path(), backend, &mut model, &[], "final reopen");
    assert_eq!(report.bytes_truncated, 0);
    eprintln!(
        "kill -9 loop ({backend}): {iterations} crashes in {:?} ({early} during open), \
         {} acknowledgements, {checked} session checks, {} sessions tracked ({} live), \
         {truncated} bytes truncated over {torn} torn tails, a base present after {with_base}",
        started.elapsed(),
        model.acks,
        model.sessions.len(),
        model.live(),
    );
    assert!(model.acks > 0, "the children acknowledged nothing");
    if backend == "log" {
        assert!(
            with_base > 0,
            "no compaction ever completed during the loop"
        );
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    kill_loop("log");
}

#[cfg(feature = "sled")]
#[test]
fn acknowledged_writes_survive_kill_9_sled() {
    kill_loop("sled");
}

#[test]
fn a_crash_at_every_step_of_a_write_roll_compaction_or_open_loses_nothing() {
    let seed = seed();
    eprintln!("crash points: seed {seed} ({SEED_ENV})");
    let mut rng = Rng::new(seed);
    for (round, point) in (0..3).flat_map(|r| FAILPOINTS.map(|p| (r, p))) {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        // First some history (and a crash), so the crash point meets real data.
        let (out, delay) = run_killed(dir.path(), "log", &mut rng);
        let what = format!("{point}: the run before (killed after {delay:?}, seed {seed})");
        let in_flight = absorb(&mut model, &out, &what);
        reopen_and_check(dir.path(), "log", &mut model, &in_flight, &what);

        let before = model.acks;
        let out = run_to_failpoint(dir.path(), "log", point, rng.next());
        let what = format!("crash at {point} (seed {seed})");
        let in_flight = absorb(&mut model, &out, &what);
        let (report, checked) = reopen_and_check(dir.path(), "log", &mut model, &in_flight, &what);
        if point == "writer:mid_batch" {
            assert!(
                report.bytes_truncated > 0,
                "{what}: half a batch was written, none was cut off: {report:?}"
            );
        }
        assert!(report.skipped.is_empty(), "{what}: {report:?}");
        // Recovery finished the job: a second reopen finds the same, with nothing to cut.
        let (again, _) = reopen_and_check(dir.path(), "log", &mut model, &[], &what);
        assert_eq!(again.bytes_truncated, 0, "{what}: {again:?}");
        assert!(
            base_files(dir.path()) <= 1,
            "{what}: leftover bases were not cleaned up"
        );
        eprintln!(
            "{point} (round {round}): {before} + {} acknowledgements (before, up to the crash \
             point), {checked} sessions checked, {} bytes truncated",
            model.acks - before,
            report.bytes_truncated
        );
    }
}
