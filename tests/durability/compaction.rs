//! Compaction: alone, racing rotations and writer threads, automatic, and what the
//! stats say after it; checked against a model of every acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiondb::{Durability, ManualClock, NewSession, SessionData, SessionId, Store, Token};

use crate::helpers::{
    Rng, T0, bases, buffered, copy_dir, ids_of, n_of, open, open_when_released, opts, secs,
    segments, snapshot_all,
};

/// Current token, id, last value of "n", and whether it is live, for a model check.
#[derive(Clone, Debug)]
struct Tracked {
    tokens: Vec<Token>,
    id: SessionId,
    n: Option<u64>,
    live: bool,
}

/// Checks `store` against the model: live sessions found by every token they have had
/// (old ones are aliases in their grace period), with their last value; ended ones by
/// none; and nothing else in the store.
fn check_model(store: &Store, model: &[Tracked], what: &str) {
    let mut live = 0;
    for t in model {
        if t.live {
            live += 1;
            for tok in &t.tokens {
                let s = store
                    .peek(tok)
                    .unwrap_or_else(|| panic!("{what}: acknowledged session {} lost", t.id));
                assert_eq!(s.id(), t.id, "{what}: token resolves to another session");
                assert_eq!(n_of(&s), t.n, "{what}: session {} has wrong data", t.id);
            }
        } else {
            for tok in &t.tokens {
                assert!(
                    store.peek(tok).is_none(),
                    "{what}: ended session {} is back",
                    t.id
                );
            }
            assert!(
                store.get_by_id(t.id).is_none(),
                "{what}: ended session is back"
            );
        }
    }
    assert_eq!(
        store.stats().sessions,
        live,
        "{what}: sessions nobody created"
    );
}

#[test]
fn compaction_shrinks_the_log_and_reopen_equals_the_state_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock, buffered()).segment_bytes(64 << 10);
    let store = open(dir.path(), o());
    let mut tokens = Vec::new();
    for i in 0..200u64 {
        let user = format!("user{}", i % 17);
        let (t, _) = store
            .create(NewSession::for_user(user).label(format!("device {i}")))
            .unwrap();
        tokens.push(t);
    }
    let payload = "x".repeat(150);
    for round in 0..15u64 {
        clock.advance(secs(1));
        for t in &tokens {
            store.put(t, "n", &round).unwrap();
            store.put(t, "blob", &payload).unwrap();
        }
    }
    for t in tokens.iter().step_by(2) {
        store.end(t).unwrap();
    }
    let rotated: Vec<Token> = tokens
        .iter()
        .skip(1)
        .step_by(10)
        .map(|t| store.rotate(t).unwrap())
        .collect();
    tokens.extend(rotated);
    store.flush().unwrap();
    let st = store.stats();
    let before_bytes = st.disk_bytes;
    assert!(before_bytes > 500_000, "history written: {st:?}");
    assert!(st.dead_ratio > 0.5, "mostly dead history: {st:?}");
    assert_eq!(st.compactions, 0);
    assert!(st.last_compaction.is_none());
    let state = snapshot_all(&store, &tokens);
    let users: Vec<Vec<SessionId>> = (0..17)
        .map(|u| ids_of(&store, &format!("user{u}")))
        .collect();

    let result = store.compact().unwrap();
    assert_eq!(result.sessions, 100);
    assert!(result.bytes_before >= before_bytes, "{result:?}");
    assert!(
        result.bytes_after * 4 < result.bytes_before,
        "compaction reclaimed too little: {result:?}"
    );
    let st = store.stats();
    assert_eq!(st.compactions, 1);
    let (_, last) = st
        .last_compaction
        .clone()
        .expect("last compaction recorded");
    assert_eq!(last, result);
    assert!(st.last_compaction_error.is_none());
    store.flush().unwrap();
    let st = store.stats();
    assert!(
        st.disk_bytes * 4 < before_bytes,
        "stats().disk_bytes did not shrink: {} -> {}",
        before_bytes,
        st.disk_bytes
    );
    assert!(st.dead_ratio < 0.5, "{st:?}");
    assert_eq!(bases(dir.path()).len(), 1, "one base after compaction");
    // The state did not change.
    assert_eq!(snapshot_all(&store, &tokens), state);
    store.verify().unwrap();

    // More history on top of the base, then a second compaction, then reopen.
    clock.advance(secs(1));
    for t in tokens.iter().skip(1).step_by(2) {
        let _ = store.put(t, "n", &99u64);
    }
    let state_before_second = snapshot_all(&store, &tokens);
    store.compact().unwrap();
    assert_eq!(store.stats().compactions, 2);
    assert_eq!(bases(dir.path()).len(), 1, "the old base was deleted");
    drop(store);

    let store = open(dir.path(), o());
    assert_eq!(snapshot_all(&store, &tokens), state_before_second);
    for (u, ids) in users.iter().enumerate() {
        // The same sessions per user (their data changed, their membership did not).
        assert_eq!(&ids_of(&store, &format!("user{u}")), ids);
    }
    assert_eq!(store.stats().sessions, 100);
    assert_eq!(store.recovery_report().sessions, 100);
    assert_eq!(
        store.stats().compactions,
        0,
        "counts compactions since open"
    );
}

/// A compaction reads sessions a chunk at a time, and a session a rotation moves in
/// the middle of that read must still be in the base: a rotation record after the base
/// cannot bring back a session the base left out. Checked after every compaction, on a
/// copy of the directory opened while the rotations go on.
#[test]
fn compaction_racing_rotations_keeps_every_session_in_the_base() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    // No grace: under the manual clock an old token's alias would never expire, and
    // every round's compaction would write all the aliases of all rounds before.
    let o = || {
        opts(&clock, buffered())
            .compaction(false, u64::MAX, 2.0)
            .rotation_grace(Duration::ZERO)
    };
    let store = open(dir.path(), o());
    let mut tokens = Vec::new();
    for i in 0..24 {
        let (t, _) = store
            .create(NewSession::for_user(format!("user{}", i % 3)))
            .unwrap();
        tokens.push(t);
    }
    let ids: Vec<Vec<SessionId>> = (0..3)
        .map(|u| ids_of(&store, &format!("user{u}")))
        .collect();
    // Each round the rotators move their sessions for as long as the main thread's
    // compaction runs, then wait: the log stays small, so a round costs the same as
    // the first however many came before.
    const ROUNDS: usize = 60;
    let gate = Arc::new(std::sync::Barrier::new(3));
    let compacted = Arc::new(AtomicBool::new(false));
    let rotators: Vec<_> = tokens
        .chunks(12)
        .map(|mine| {
            let (s, gate, compacted) = (store.clone(), gate.clone(), compacted.clone());
            let mut mine = mine.to_vec();
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    gate.wait();
                    while !compacted.load(Ordering::Acquire) {
                        for t in &mut mine {
                            *t = s.rotate(t).unwrap();
                        }
                    }
                    gate.wait();
                }
            })
        })
        .collect();
    for round in 0..ROUNDS {
        gate.wait();
        store.compact().unwrap();
        compacted.store(true, Ordering::Release);
        gate.wait();
        compacted.store(false, Ordering::Release);
        store.flush().unwrap();
        copy_dir(dir.path(), copy.path());
        let reopened = open(copy.path(), o());
        for (u, want) in ids.iter().enumerate() {
            assert_eq!(
                &ids_of(&reopened, &format!("user{u}")),
                want,
                "round {round}: user{u}'s sessions after reopening the copy"
            );
        }
    }
    for r in rotators {
        r.join().unwrap();
    }
}

#[test]
fn compaction_racing_writer_threads_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock, Durability::Sync).segment_bytes(16 << 10);
    let store = open(dir.path(), o());
    let stop = Arc::new(AtomicBool::new(false));
    let models: Arc<Mutex<Vec<Tracked>>> = Arc::default();

    let compactor = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store.compact().expect("compaction while writing");
                n += 1;
            }
            n
        })
    };
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (store, stop, models) = (store.clone(), stop.clone(), models.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1));
                let mut mine: Vec<Tracked> = Vec::new();
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) || ops < 50 {
                    ops += 1;
                    let live: Vec<usize> = (0..mine.len()).filter(|&i| mine[i].live).collect();
                    let roll = rng.below(100);
                    if live.is_empty() || roll < 25 {
                        let new = if rng.below(2) == 0 {
                            NewSession::anonymous()
                        } else {
                            NewSession::for_user(format!("w{w}u{}", rng.below(3)))
                        };
                        let (t, s) = store.create(new).unwrap();
                        mine.push(Tracked {
                            tokens: vec![t],
                            id: s.id(),
                            n: None,
                            live: true,
                        });
                        continue;
                    }
                    let i = live[rng.below(live.len() as u64) as usize];
                    let cur = mine[i].tokens.last().unwrap().clone();
                    if roll < 80 {
                        let n = mine[i].n.map_or(0, |n| n + 1);
                        store.put(&cur, "n", &n).unwrap();
                        mine[i].n = Some(n);
                    } else if roll < 90 {
                        let t = store.rotate(&cur).unwrap();
                        mine[i].tokens.push(t);
                    } else {
                        assert!(store.end(&cur).unwrap());
                        mine[i].live = false;
                    }
                }
                models.lock().unwrap().extend(mine);
                ops
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let compactions = compactor.join().unwrap();
    let model = models.lock().unwrap().clone();
    assert!(compactions >= 2, "only {compactions} compactions ran");
    let st = store.stats();
    assert_eq!(st.compactions, compactions);
    assert!(st.last_compaction.is_some());
    assert!(st.last_compaction_error.is_none(), "{st:?}");
    check_model(&store, &model, "before reopen");
    store.verify().unwrap();
    drop(store);

    let store = open(dir.path(), o());
    check_model(&store, &model, "after reopen");
    assert_eq!(store.recovery_report().bytes_truncated, 0);
    eprintln!(
        "{ops} operations on {} sessions, {compactions} compactions, all acknowledged writes kept",
        model.len()
    );
}

#[test]
fn auto_compaction_triggers_and_bounds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || {
        opts(&clock, buffered())
            .segment_bytes(4096)
            .compaction(true, 16 << 10, 2.0)
    };
    let store = open(dir.path(), o());
    let mut model: Vec<Tracked> = (0..40)
        .map(|_| {
            let (t, s) = store.create(NewSession::for_user("someone")).unwrap();
            Tracked {
                tokens: vec![t],
                id: s.id(),
                n: None,
                live: true,
            }
        })
        .collect();
    let payload = "y".repeat(100);
    let started = Instant::now();
    let mut written = 0u64;
    let mut round = 0u64;
    while started.elapsed() < secs(20) {
        for t in &mut model {
            store.put(&t.tokens[0], "n", &round).unwrap();
            store.put(&t.tokens[0], "pad", &payload).unwrap();
            t.n = Some(round);
            written += 2 * 200;
        }
        round += 1;
        if written > 16 << 20 && store.stats().compactions >= 3 {
            break;
        }
    }
    let st = store.stats();
    assert!(
        st.compactions >= 3,
        "auto-compaction did not run: {st:?} after ~{written} bytes"
    );
    assert!(st.last_compaction.is_some());
    assert!(st.last_compaction_error.is_none(), "{st:?}");
    // Once the writes stop, background compaction brings the log back to about the
    // size of the live set (40 sessions of ~250 bytes), however much history there was.
    let settled = Instant::now();
    loop {
        store.flush().unwrap();
        let st = store.stats();
        if st.disk_bytes < 64 << 10 {
            break;
        }
        assert!(
            settled.elapsed() < secs(10),
            "the log stayed at {} bytes after ~{written} bytes of writes: {st:?}",
            st.disk_bytes
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        segments(dir.path()).len() <= 4,
        "{} segment files",
        segments(dir.path()).len()
    );
    check_model(&store, &model, "with auto-compaction");
    drop(store);
    // A background compaction still finishing holds the store (and its lock) for a
    // moment after the last handle is dropped: see
    // `dropping_the_last_handle_releases_the_directory_at_once`.
    let store = open_when_released(dir.path(), o);
    check_model(&store, &model, "after reopen");
}

/// A log that is nearly all live sessions has nothing to reclaim — a base of images
/// would even be larger than the create records — so auto-compaction leaves it alone
/// however much it grows, and compacts once overwrites make most of it history.
#[test]
fn auto_compaction_leaves_a_log_of_live_sessions_alone_until_history_dominates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = opts(&clock, buffered())
        .segment_bytes(64 << 10)
        .compaction(true, 16 << 10, 2.0);
    let store = open(dir.path(), o);
    let pad = "p".repeat(150);
    let tokens: Vec<Token> = (0..4000)
        .map(|i| {
            let mut d = SessionData::new();
            d.insert("pad", pad.as_str()).unwrap();
            let new = NewSession::for_user(format!("user{}", i % 400)).data(d);
            store.create(new).unwrap().0
        })
        .collect();
    store.flush().unwrap();
    // Give a compactor that was asked time to run: it would have been asked at 16 KiB,
    // 32 KiB, 64 KiB, ... of the ~1 MB written.
    std::thread::sleep(Duration::from_millis(300));
    let st = store.stats();
    assert!(st.disk_bytes > 32 * (16 << 10), "{st:?}");
    assert_eq!(
        st.compactions, 0,
        "a log of live sessions was rewritten: {st:?}"
    );
    // Overwrite every session's data a few times: most of the log becomes history.
    for round in 0..3 {
        for t in &tokens {
            store.put(t, "pad", &format!("{round}{pad}")).unwrap();
        }
    }
    store.flush().unwrap();
    let started = Instant::now();
    while store.stats().compactions == 0 {
        assert!(
            started.elapsed() < secs(10),
            "no compaction: {:?}",
            store.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = store.stats();
    assert!(st.last_compaction_error.is_none(), "{st:?}");
    let (_, c) = st.last_compaction.clone().unwrap();
    assert_eq!(c.sessions, 4000);
    assert!(
        c.base_bytes * 3 < c.bytes_before * 2,
        "reclaimed little: {c:?}"
    );
    // The live estimate is the base's size (not the base plus what was written while
    // it was built).
    assert!(
        st.estimated_live_bytes.abs_diff(c.base_bytes) <= 1,
        "{st:?}"
    );
    for t in &tokens {
        let s = store.get(t).expect("every session kept");
        assert_eq!(s.get::<String>("pad").unwrap(), Some(format!("2{pad}")));
    }
}

#[test]

fn stats_reflect_a_compaction_as_soon_as_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    for i in 0..300u64 {
        store.put(&t, "n", &i).unwrap();
    }
    let before = store.stats().disk_bytes;
    let result = store.compact().unwrap();
    assert!(result.bytes_after * 4 < before, "{result:?}");
    let st = store.stats();
    assert_eq!(st.compactions, 1);
    assert!(
        st.disk_bytes <= result.bytes_after,
        "compact() returned {result:?}, but stats().disk_bytes still says {}",
        st.disk_bytes
    );
}
