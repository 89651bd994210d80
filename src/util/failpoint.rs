//! Crash points for tests: when the environment variable `SESSIONDB_FAILPOINT` names a
//! point, the process aborts there, as abruptly as `kill -9`. The crash tests use this
//! to stop a child process at each step of a compaction and of a batch write, then
//! reopen the store and check that nothing acknowledged was lost.
//!
//! Reading the variable happens once; an unset variable costs one atomic load per
//! point, and the points sit on the write path only (never on reads).

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const FAILPOINT_ENV: &str = "SESSIONDB_FAILPOINT";

fn active() -> Option<&'static str> {
    static ACTIVE: OnceLock<Option<String>> = OnceLock::new();
    ACTIVE
        .get_or_init(|| std::env::var(FAILPOINT_ENV).ok())
        .as_deref()
}

/// Aborts the process if `name` is the active crash point.
pub(crate) fn hit(name: &str) {
    if active() == Some(name) {
        eprintln!("sessiondb: crash point {name} reached, aborting");
        std::process::abort();
    }
}

/// Whether `name` is the active crash point (for points that first do half the work).
pub(crate) fn armed(name: &str) -> bool {
    active() == Some(name)
}
