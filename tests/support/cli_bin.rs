//! What the command-line tests share: the `sessiondb` binary with no store from the
//! environment, its output as text, and the lock that runs them one at a time.

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

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

/// The binary, with no store directory or Redis URL from the environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sessiondb"));
    c.env_remove("SESSIONDB_DIR")
        .env_remove("SESSIONDB_REDIS_URL")
        .stdin(Stdio::null());
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}
