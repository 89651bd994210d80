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
