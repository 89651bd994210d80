//! Revocation racing with concurrent creates, binds and rotations for the same user:
//! afterwards, no session of that user that existed before the revoke began is
//! readable, and the user index still agrees with the sessions. And listing a user's
//! sessions while they are rotated never misses one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use parking_lot::Mutex;
use sessiondb::{NewSession, Options, Store, Token};

#[test]
fn revoke_racing_creates_binds_and_rotations_leaves_nothing_readable() {
    let store = Store::in_memory_with(Options::default().reaper_interval(None).shards(4)).unwrap();
    for _round in 0..10 {
        let done = Arc::new(AtomicBool::new(false));
        // Tokens whose create / bind / rotate call has returned, in completion order.
        let issued: Arc<Mutex<Vec<Token>>> = Arc::default();
        let mut workers = Vec::new();
        for w in 0..3 {
            let (s, done, issued) = (store.clone(), done.clone(), issued.clone());
            workers.push(thread::spawn(move || {
                let mut i = 0u64;
                while !done.load(Ordering::Relaxed) {
                    i += 1;
                    let token = match (w + i) % 3 {
                        0 => s.create(NewSession::for_user("victim")).unwrap().0,
                        1 => {
                            let (t, _) = s.create(NewSession::anonymous()).unwrap();
                            if s.bind_user(&t, "victim").is_err() {
                                continue;
                            }
                            t
                        }
                        _ => {
                            let last = issued.lock().last().cloned();
                            match last.map(|t| s.rotate(&t)) {
                                Some(Ok(t)) => t,
                                _ => continue,
                            }
                        }
                    };
                    issued.lock().push(token);
                }
            }));
        }
        let revoker = {
            let (s, issued) = (store.clone(), issued.clone());
            thread::spawn(move || {
                // Tokens before `checked` were verified unreadable by an earlier revoke
                // (a revoked session never comes back), so each revoke checks the rest.
                let mut checked = 0;
                for _ in 0..50 {
                    // Let creates, binds and rotations pile up between revokes (bounded,
                    // so a slow machine still finishes).
                    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(50);
                    while issued.lock().len() < checked + 100
                        && std::time::Instant::now() < deadline
                    {
                        thread::yield_now();
                    }
                    let before = issued.lock().len();
                    s.revoke_user("victim").unwrap();
                    let snapshot: Vec<Token> = issued.lock()[checked..before].to_vec();
                    checked = before;
                    for t in &snapshot {
                        assert!(
                            s.get(t).is_none(),
                            "a session issued before the revoke began is still readable"
                        );
                    }
                    thread::yield_now();
                }
            })
        };
        revoker.join().unwrap();
        done.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        store.verify().unwrap();
        // Every readable session of the victim is in the index, so one more revoke
        // reaches all of them.
        let listed = store.sessions_of("victim").unwrap().len();
        assert_eq!(store.revoke_user("victim").unwrap(), listed);
        for t in issued.lock().iter() {
            assert!(store.get(t).is_none());
        }
        assert!(store.sessions_of("victim").unwrap().is_empty());
        store.verify().unwrap();
    }
}

/// A rotation moves a session to its new token's place while `sessions_of` looks it up
/// by id (a chunk of ids at a time): a session caught mid-move must be looked up again,
/// never left out of the list.
#[test]
fn listing_a_users_sessions_while_they_rotate_never_misses_one() {
    let store = Store::in_memory_with(Options::default().reaper_interval(None).shards(4)).unwrap();
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..40 {
        let (t, s) = store.create(NewSession::for_user("busy")).unwrap();
        ids.push(s.id());
        tokens.push(t);
    }
    ids.sort();
    let done = Arc::new(AtomicBool::new(false));
    let rotators: Vec<_> = tokens
        .chunks(20)
        .map(|mine| {
            let (s, done, mut mine) = (store.clone(), done.clone(), mine.to_vec());
            thread::spawn(move || {
                let mut rotations = 0u64;
                while !done.load(Ordering::Relaxed) {
                    for t in &mut mine {
                        *t = s.rotate(t).unwrap();
                        rotations += 1;
                    }
                }
                rotations
            })
        })
        .collect();
    for _ in 0..3_000 {
        let mut listed: Vec<_> = store
            .sessions_of("busy")
            .unwrap()
            .iter()
            .map(|s| s.id())
            .collect();
        listed.sort();
        assert_eq!(listed, ids);
    }
    done.store(true, Ordering::Relaxed);
    let rotations: u64 = rotators.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(
        rotations > 1_000,
        "{rotations} rotations raced the listings"
    );
}
