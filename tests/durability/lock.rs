//! The directory lock: a second open of an open directory is refused, naming the process,
//! and dropping the last handle releases it at once.

use std::time::Duration;

use sessiondb::{BackendKind, Durability, Error, ManualClock, NewSession, Options, Store, Token};

use crate::helpers::{T0, backends, buffered, open, opts};

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
