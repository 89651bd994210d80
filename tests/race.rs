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

/// Pins the calling thread to the `nth` CPU it may run on (best effort: where that
/// cannot be done the test runs unpinned, and relies on its iteration count). Two
/// threads on two cores race far more often than two threads sharing one, which is
/// what the rotation tests below need to be sure of finding a lost race.
fn pin_to_nth_cpu(nth: usize) {
    #[cfg(target_os = "linux")]
    {
        // glibc's cpu_set_t: 1024 bits. Declared here rather than adding a dependency
        // for one call; std links the C library this comes from.
        unsafe extern "C" {
            fn sched_getaffinity(pid: i32, size: usize, mask: *mut u64) -> i32;
            fn sched_setaffinity(pid: i32, size: usize, mask: *const u64) -> i32;
        }
        let mut allowed = [0u64; 16];
        let size = std::mem::size_of_val(&allowed);
        // SAFETY: `allowed` is a writable buffer of `size` bytes; pid 0 is this thread.
        if unsafe { sched_getaffinity(0, size, allowed.as_mut_ptr()) } != 0 {
            return;
        }
        let Some(cpu) = (0..1024)
            .filter(|&c| allowed[c / 64] & (1 << (c % 64)) != 0)
            .nth(nth)
        else {
            return;
        };
        let mut mask = [0u64; 16];
        mask[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: `mask` is a readable buffer of `size` bytes; pid 0 is this thread.
        let _ = unsafe { sched_setaffinity(0, size, mask.as_ptr()) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nth;
}

/// A store whose clock stands still, so every token a session ever had stays inside
/// its (long) grace period however often it is rotated.
fn still_store() -> Store {
    let clock = sessiondb::ManualClock::new(sessiondb::Timestamp(1_000_000));
    Store::in_memory_with(
        Options::default()
            .clock(clock)
            .reaper_interval(None)
            .rotation_grace(std::time::Duration::from_secs(3600))
            .shards(8),
    )
    .unwrap()
}

/// One thread rotating a session back to back (`t = rotate(&t)`), on a core of its
/// own; `probe` runs `rounds` times on another core, given the first token and the
/// newest one the rotator has published. Returns how many rotations raced the probes.
fn against_a_rotation_loop(
    store: &Store,
    first: Token,
    rounds: usize,
    mut probe: impl FnMut(&Token, &Token) + Send,
) -> u64 {
    let newest = Arc::new(Mutex::new(first.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let rotations = Arc::new(std::sync::atomic::AtomicU64::new(0));
    thread::scope(|scope| {
        let rotator = {
            let (s, newest, done, rotations) = (store, &newest, &done, &rotations);
            let mut t = first.clone();
            scope.spawn(move || {
                pin_to_nth_cpu(0);
                while !done.load(Ordering::Relaxed) {
                    match s.rotate(&t) {
                        Ok(fresh) => t = fresh,
                        // The probe ended the session (the by-id test's last step).
                        Err(sessiondb::Error::Ended) => break,
                        Err(e) => panic!("rotate: {e}"),
                    }
                    *newest.lock() = t.clone();
                    rotations.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let prober = scope.spawn(|| {
            pin_to_nth_cpu(1);
            // Start once the rotator is going, so every probe races it.
            while rotations.load(Ordering::Relaxed) == 0 {
                thread::yield_now();
            }
            for _ in 0..rounds {
                let t = newest.lock().clone();
                probe(&first, &t);
            }
        });
        let probed = prober.join();
        done.store(true, Ordering::Relaxed);
        rotator.join().unwrap();
        if let Err(panic) = probed {
            std::panic::resume_unwind(panic);
        }
    });
    rotations.load(Ordering::Relaxed)
}

/// Issue 18, defect 5: a request holding any token of a live session, inside its
/// grace, finds the session however fast it is rotated — reads through the newest
/// token and through the very first one, and writes through the newest.
#[test]
fn reads_and_puts_through_any_token_of_a_session_rotating_in_a_loop_find_it() {
    let store = still_store();
    let (first, s) = store.create(NewSession::anonymous()).unwrap();
    let id = s.id();
    let mut misses = Vec::new();
    let rotations = against_a_rotation_loop(&store, first, 20_000, |first, newest| {
        if store.get(newest).map(|s| s.id()) != Some(id) {
            misses.push("get(newest)");
        }
        if store.get(first).map(|s| s.id()) != Some(id) {
            misses.push("get(first)");
        }
        if let Err(e) = store.put(newest, "k", &1u32) {
            misses.push(if matches!(e, sessiondb::Error::Ended) {
                "put(newest): Ended"
            } else {
                "put(newest): another error"
            });
        }
    });
    assert!(rotations > 0);
    assert!(
        misses.is_empty(),
        "{} of 60000 calls missed the live session ({rotations} rotations), first: {:?}",
        misses.len(),
        &misses[..misses.len().min(5)]
    );
    store.verify().unwrap();
}

/// As above for the other writes and reads that resolve a token: each, through the
/// first token or the newest, reaches the session however fast it is rotated.
#[test]
fn writes_through_any_token_of_a_session_rotating_in_a_loop_reach_it() {
    let store = still_store();
    let (first, s) = store.create(NewSession::anonymous()).unwrap();
    let id = s.id();
    store.bind_user(&first, "owner").unwrap();
    let mut misses: Vec<String> = Vec::new();
    let mut round = 0u32;
    let rotations = against_a_rotation_loop(&store, first, 4_000, |first, newest| {
        round += 1;
        let mut check = |what: &str, found: bool| {
            if !found {
                misses.push(format!("{what} (round {round})"));
            }
        };
        for (which, t) in [("first", first), ("newest", newest)] {
            let updated = store.update(t, |d| d.insert("n", &round));
            check(&format!("update({which}): {updated:?}"), updated.is_ok());
            let bound = store.bind_user(t, "owner");
            check(&format!("bind_user({which}): {bound:?}"), bound.is_ok());
            let labelled = store.set_label(t, Some("phone"));
            check(
                &format!("set_label({which}): {labelled:?}"),
                labelled.is_ok(),
            );
            let extended = store.extend(t, std::time::Duration::from_secs(60));
            check(&format!("extend({which}): {extended:?}"), extended.is_ok());
            let touched = store.touch(t);
            check(&format!("touch({which}): {touched:?}"), touched.is_ok());
            let instances = store.instances(t);
            check(
                &format!("instances({which}): {instances:?}"),
                instances.is_ok(),
            );
            let peeked = store.peek(t).map(|s| s.id());
            check(&format!("peek({which})"), peeked == Some(id));
            let user = store.user_of(t);
            check(
                &format!("user_of({which}): {user:?}"),
                user.as_ref().map(|u| u.as_str()) == Some("owner"),
            );
        }
    });
    assert!(rotations > 0);
    assert!(
        misses.is_empty(),
        "{} of 64000 calls missed the live session ({rotations} rotations), first: {:?}",
        misses.len(),
        &misses[..misses.len().min(5)]
    );
    store.verify().unwrap();
}

/// Lookups by public id (a devices page, an admin's "sign out this device") find a
/// session however fast it is rotated, and ending it by id ends it.
#[test]
fn lookups_by_id_of_a_session_rotating_in_a_loop_find_it() {
    let store = still_store();
    let (first, s) = store.create(NewSession::for_user("owner")).unwrap();
    let id = s.id();
    let mut misses = Vec::new();
    let mut ended = None;
    let mut round = 0;
    let rotations = against_a_rotation_loop(&store, first.clone(), 20_000, |_, _| {
        round += 1;
        if store.get_by_id(id).map(|s| s.id()) != Some(id) {
            misses.push("get_by_id");
        }
        let listed = store.sessions_of("owner").unwrap();
        if listed.iter().map(|s| s.id()).ne([id]) {
            misses.push("sessions_of");
        }
        if round % 64 == 0 {
            let mut exported = Vec::new();
            store
                .export(|rec| {
                    exported.push(rec.id);
                    Ok(())
                })
                .unwrap();
            if exported != [id] {
                misses.push("export");
            }
        }
        if round == 20_000 {
            // Last: ended by id while it rotates, it is gone under every token.
            ended = Some(store.end_by_id(id));
        }
    });
    assert!(rotations > 0);
    assert!(
        misses.is_empty(),
        "{} of ~40000 lookups missed the live session ({rotations} rotations), first: {:?}",
        misses.len(),
        &misses[..misses.len().min(5)]
    );
    assert!(matches!(ended, Some(Ok(true))), "end_by_id: {ended:?}");
    assert!(store.get(&first).is_none());
    assert!(store.get_by_id(id).is_none());
    assert!(store.sessions_of("owner").unwrap().is_empty());
    store.verify().unwrap();
}
