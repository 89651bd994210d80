//! Expiry across restarts: a session past its deadline stays ended after a reopen.

use std::time::Duration;

use sessiondb::{Durability, Error, ManualClock, NewSession};

use crate::helpers::{T0, ids_of, n_of, open, opts, secs};

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

/// Copies a store's files (as a crash would find them, less what the OS still holds:
/// these are all written) into a fresh directory.
fn copy_of(dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

/// A touch re-arms the idle deadline in memory at once; on disk it waits for the
/// writer (buffered per session, never a message per touch), and must be there after
/// `flush()`, after a tick, and after a close — whichever comes first.
#[test]
fn a_touch_reaches_the_log_by_a_flush_a_tick_or_the_close() {
    for (durability, by) in [
        (Durability::Sync, "flush"),
        (
            Durability::Buffered {
                flush_every: secs(3600),
            },
            "flush",
        ),
        (
            Durability::Buffered {
                flush_every: Duration::from_millis(20),
            },
            "tick",
        ),
        (Durability::Sync, "close"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let o = || {
            opts(&clock, durability)
                .lifetime(secs(86_400))
                .idle_timeout(secs(600))
                .touch_interval(Duration::ZERO)
        };
        let store = open(dir.path(), o());
        let (t, _) = store.create(NewSession::for_user("ada")).unwrap();
        let (untouched, _) = store.create(NewSession::for_user("bob")).unwrap();
        store.flush().unwrap();
        clock.advance(secs(500));
        store.touch(&t).unwrap();
        let copy = match by {
            "flush" => {
                store.flush().unwrap();
                Some(copy_of(dir.path()))
            }
            "tick" => {
                std::thread::sleep(Duration::from_millis(300));
                Some(copy_of(dir.path()))
            }
            _ => {
                drop(store);
                None
            }
        };
        // 700 s after the create, 200 s after the touch: only the touch keeps it.
        clock.advance(secs(200));
        let reopened = open(copy.as_ref().map_or(dir.path(), |c| c.path()), o());
        assert!(
            reopened.peek(&t).is_some(),
            "{durability:?}, by {by}: the touch was lost"
        );
        assert!(
            reopened.peek(&untouched).is_none(),
            "{durability:?}, by {by}: the untouched session outlived its idle timeout"
        );
    }
}
