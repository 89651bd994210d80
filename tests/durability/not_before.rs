//! A user's not-before time (`Store::revoke_user_before`) is durable like a session:
//! it survives a reopen, a compaction (it is in the new base) and a clear, on every
//! storage backend, and keeps refusing the import of a session authenticated before
//! it; a crash that kept the revocation's not-before record but lost some of its end
//! records still opens without those sessions.

use std::fs;

use sessiondb::{
    Clock, Durability, ManualClock, NewSession, SessionRecord, Store, Timestamp, Token,
};

use crate::helpers::{T0, backends, crash_image, frame_boundaries, last_segment, open, opts, secs};

/// Alice's session from before a password change, exported (a backup), with the
/// store it was in.
fn backup_then_revoke(store: &Store, clock: &ManualClock) -> (Token, SessionRecord) {
    let (old, _) = store.create(NewSession::for_user("alice")).unwrap();
    let mut backup = Vec::new();
    store
        .export(|r| {
            backup.push(r);
            Ok(())
        })
        .unwrap();
    clock.advance(secs(1));
    assert_eq!(store.revoke_user_before("alice", clock.now()).unwrap(), 1);
    let rec = backup.into_iter().find(|r| r.user.is_some()).unwrap();
    (old, rec)
}

#[test]
fn a_not_before_time_survives_reopen_compaction_and_clear_on_every_backend() {
    for (backend, name) in backends() {
        let clock = ManualClock::new(T0);
        let dir = tempfile::tempdir().unwrap();
        let o = || opts(&clock, Durability::Sync).backend(backend);
        let store = open(dir.path(), o());
        let (old, rec) = backup_then_revoke(&store, &clock);
        let (later, _) = store.create(NewSession::for_user("alice")).unwrap();
        drop(store);
        // Reopened: the revoked session stays gone, the later one stays, and the
        // backup's copy is refused.
        let store = open(dir.path(), o());
        assert!(store.peek(&old).is_none(), "{name}");
        assert!(store.peek(&later).is_some(), "{name}");
        assert!(
            !store.import(rec.clone()).unwrap(),
            "{name}: after a reopen"
        );
        // A compaction rewrites the log; a clear ends every session.
        if name == "log" {
            store.compact().unwrap();
        }
        store.clear().unwrap();
        drop(store);
        let store = open(dir.path(), o());
        assert!(
            !store.import(rec.clone()).unwrap(),
            "{name}: after a compaction, a clear and a reopen"
        );
        assert!(store.sessions_of("alice").unwrap().is_empty(), "{name}");
        // A later time only moves it on; an earlier one never moves it back.
        store
            .revoke_user_before("alice", Timestamp(T0.0 - 1))
            .unwrap();
        drop(store);
        let store = open(dir.path(), o());
        assert!(!store.import(rec).unwrap(), "{name}: moved back");
        store.verify().unwrap();
    }
}

/// A crash between the not-before record and the end records of the sessions it
/// revoked: the store opens without them all the same (and verifies: no session of
/// the user authenticated before the time).
#[test]
fn a_crash_after_the_not_before_record_but_before_its_ends_opens_without_the_sessions() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let old: Vec<Token> = (0..3)
        .map(|_| store.create(NewSession::for_user("alice")).unwrap().0)
        .collect();
    let (bob, _) = store.create(NewSession::for_user("bob")).unwrap();
    clock.advance(secs(1));
    assert_eq!(store.revoke_user_before("alice", clock.now()).unwrap(), 3);
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    drop(store);
    // Cut the log right after the not-before record (type 14).
    let seg = last_segment(image.path());
    let bytes = fs::read(&seg).unwrap();
    let cut = frame_boundaries(&bytes)
        .windows(2)
        .find(|w| bytes[w[0] + 8] == 14)
        .map(|w| w[1])
        .expect("a not-before record in the log");
    assert!(cut < bytes.len(), "end records follow it");
    fs::write(&seg, &bytes[..cut]).unwrap();
    let store = open(image.path(), opts(&clock, Durability::Sync));
    for t in &old {
        assert!(store.peek(t).is_none(), "a revoked session came back");
    }
    assert!(store.sessions_of("alice").unwrap().is_empty());
    assert!(store.peek(&bob).is_some());
    assert_eq!(store.len(), 1);
}
