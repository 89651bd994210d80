//! What the command-line tests share: the `sessiondb` binary with no store from the
//! environment, its output as text, the lock that runs them one at a time, and the
//! sessions their stores start with.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sessiondb::{NewSession, SessionData, SessionId, Store, Token};

/// Every test holds this for its whole run. A store's directory lock is an `flock` on
/// an open file; while one test thread spawns a process, the child holds a copy of
/// every open descriptor of this process until it execs, so a store another test just
/// closed can still look locked for that instant, to a reopen here or to the binary.
/// Run one at a time, the tests see exactly the locks they take.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The binary, with no store directory, Redis or PostgreSQL URL from the environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sessiondb"));
    c.env_remove("SESSIONDB_DIR")
        .env_remove("SESSIONDB_REDIS_URL")
        .env_remove("SESSIONDB_POSTGRES_URL")
        .stdin(Stdio::null());
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// What `fill` made.
pub struct Filled {
    pub alice: Vec<(Token, SessionId)>,
    pub bob: (Token, SessionId),
    pub anon: (Token, SessionId),
}

/// Two sessions of alice (labelled, one with data), one of bob, one anonymous with data
/// and a 48-hour idle timeout; `between` runs between alice's two (distinct creation
/// times).
pub fn fill(store: &Store, mut between: impl FnMut()) -> Filled {
    let mut alice = Vec::new();
    for label in ["Firefox on Linux", "Phone"] {
        let (t, s) = store
            .create(NewSession::for_user("alice").label(label))
            .unwrap();
        alice.push((t, s.id()));
        between();
    }
    store.put(&alice[0].0, "cart", &vec![42u32]).unwrap();
    store.put(&alice[0].0, "theme", "dark").unwrap();
    store.put_raw(&alice[0].0, "raw", b"plain text").unwrap();
    let (t, s) = store.create(NewSession::for_user("bob")).unwrap();
    let bob = (t, s.id());
    let mut data = SessionData::new();
    data.insert("visits", &3u64).unwrap();
    let (t, s) = store
        .create(
            NewSession::anonymous()
                .data(data)
                .idle_timeout(Duration::from_secs(48 * 3600)),
        )
        .unwrap();
    let anon = (t, s.id());
    Filled { alice, bob, anon }
}
