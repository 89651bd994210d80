//! `Store::rotate_to`: rotation to a token the caller chose, with no grace period (what
//! the tower-sessions store builds on to rotate without losing the user binding).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sessiondb::{Error, NewSession, Options, Store, Token};

fn token(n: u8) -> Token {
    let mut b = [n; 24];
    b[0] = 0xA5; // anything: these tests choose their tokens
    Token::from_bytes(b)
}

#[test]
fn rotate_to_keeps_id_data_user_and_times_and_retires_the_old_token_at_once() {
    // A grace period is configured: rotate_to must not use it.
    let store =
        Store::in_memory_with(Options::default().rotation_grace(Duration::from_secs(60))).unwrap();
    let (old, before) = store
        .create(NewSession::for_user("alice").label("laptop"))
        .unwrap();
    store.put(&old, "cart", &vec![1u32, 2]).unwrap();
    let before = store.get_by_id(before.id()).unwrap();
    let new = token(1);
    store.rotate_to(&old, &new).unwrap();
    assert!(
        store.get(&old).is_none(),
        "the old token stops resolving at once"
    );
    let after = store.peek(&new).expect("the new token resolves");
    assert_eq!(after.id(), before.id());
    assert_eq!(after.user(), before.user());
    assert_eq!(after.label(), Some("laptop"));
    assert_eq!(after.created_at(), before.created_at());
    assert_eq!(after.authenticated_at(), before.authenticated_at());
    assert_eq!(after.version(), before.version());
    assert_eq!(after.get::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2]));
    assert_eq!(store.stats().aliases, 0);
    assert_eq!(store.sessions_of("alice").unwrap().len(), 1);
    // The old token is free again, and the new one does not mint from the old.
    assert!(matches!(store.rotate(&old), Err(Error::Ended)));
    store.verify().unwrap();
}

#[test]
fn rotate_to_refuses_a_token_in_use_or_itself_and_changes_nothing() {
    let store = Store::in_memory().unwrap();
    let (a, _) = store.create(NewSession::anonymous()).unwrap();
    let (b, _) = store.create(NewSession::anonymous()).unwrap();
    store.put(&a, "k", "a").unwrap();
    assert!(matches!(
        store.rotate_to(&a, &b),
        Err(Error::Exists { what: "token" })
    ));
    assert!(matches!(
        store.rotate_to(&a, &a),
        Err(Error::Exists { what: "token" })
    ));
    // A token in its grace period after an ordinary rotation is taken too.
    let b2 = store.rotate(&b).unwrap();
    assert!(matches!(store.rotate_to(&a, &b), Err(Error::Exists { .. })));
    assert_eq!(
        store
            .get(&a)
            .unwrap()
            .get::<String>("k")
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert!(store.get(&b2).is_some());
    store.verify().unwrap();
}

#[test]
fn rotate_to_of_an_ended_session_or_from_a_retired_token_fails() {
    let store = Store::in_memory().unwrap();
    let (a, _) = store.create(NewSession::anonymous()).unwrap();
    store.end(&a).unwrap();
    assert!(matches!(store.rotate_to(&a, &token(2)), Err(Error::Ended)));
    assert!(store.get(&token(2)).is_none());
    let (b, _) = store.create(NewSession::anonymous()).unwrap();
    let _b2 = store.rotate(&b).unwrap(); // b is now an old token in its grace period
    assert!(matches!(
        store.rotate_to(&b, &token(3)),
        Err(Error::TokenRetired)
    ));
    store.verify().unwrap();
}

#[test]
fn rotate_to_is_durable_and_leaves_no_alias_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let new = token(4);
    let (old, id) = {
        let store = Store::open(dir.path()).unwrap();
        let (old, s) = store.create(NewSession::for_user("bob")).unwrap();
        store.rotate_to(&old, &new).unwrap();
        store.close().unwrap();
        (old, s.id())
    };
    let store = Store::open(dir.path()).unwrap();
    assert!(store.get(&old).is_none());
    let s = store.get(&new).expect("the rotated session survives");
    assert_eq!(s.id(), id);
    assert_eq!(s.user().map(|u| u.as_str()), Some("bob"));
    assert_eq!(store.stats().aliases, 0);
    store.verify().unwrap();
}

/// Four sessions of one user, each rotated over and over by its own thread (`pause`
/// between rotations), while `revoke_user` runs. Returns how many the revoke counted
/// and how many are readable after it, over `rounds` rounds.
fn revoke_racing_rotations(rounds: u8, pause: Duration, plain_rotate: bool) -> (usize, usize) {
    let (mut counted, mut readable) = (0, 0);
    for round in 0..rounds {
        let store = Store::in_memory().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4u8)
            .map(|w| {
                let (store, stop) = (store.clone(), stop.clone());
                let (first, _) = store.create(NewSession::for_user("u")).unwrap();
                std::thread::spawn(move || {
                    let mut current = first;
                    let mut n: u32 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let mut bytes = [0u8; 24];
                        bytes[..4].copy_from_slice(&n.to_le_bytes());
                        bytes[4] = w;
                        bytes[5] = round;
                        bytes[6] = 0x5A;
                        let next = Token::from_bytes(bytes);
                        let moved = if plain_rotate {
                            store.rotate(&current).map(|t| current = t)
                        } else {
                            store.rotate_to(&current, &next).map(|()| current = next)
                        };
                        match moved {
                            Ok(()) => {}
                            Err(Error::Ended) => break,
                            Err(e) => panic!("rotate: {e}"),
                        }
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                    current
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        counted += store.revoke_user("u").unwrap();
        stop.store(true, Ordering::Relaxed);
        let last: Vec<Token> = workers.into_iter().map(|h| h.join().unwrap()).collect();
        readable += last.iter().filter(|t| store.get(t).is_some()).count();
        store.verify().unwrap();
    }
    (counted, readable)
}

#[test]
fn revoke_racing_rotate_to_finds_each_session_under_one_token_or_the_other() {
    // Rotations at a request-like pace (one per ~50 µs per session): each session is
    // found and ended, none is readable afterwards.
    let (counted, readable) = revoke_racing_rotations(20, Duration::from_micros(20), false);
    assert_eq!((counted, readable), (80, 0));
}

/// Found while writing the test above: `revoke_user` used to give up after 8 moves of a
/// session rotated back to back by another thread during the revoke, leaving it
/// readable and off its user's list. It now retries for as long as the session keeps
/// moving. `Store::rotate` and `rotate_to` both.
#[test]
fn revoke_racing_back_to_back_rotations_leaves_nothing_readable() {
    for plain_rotate in [false, true] {
        let (counted, readable) = revoke_racing_rotations(40, Duration::ZERO, plain_rotate);
        assert_eq!(
            (counted, readable),
            (160, 0),
            "plain rotate: {plain_rotate}"
        );
    }
}
