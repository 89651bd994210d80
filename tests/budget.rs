//! The memory budget and trial sessions (`Options::budget`, `Options::trial_lifetime`),
//! through the public API: a flood of anonymous creates never takes the count past the
//! budget nor ends a signed-in session; evictions take the least recently seen
//! anonymous sessions; a store full of signed-in sessions refuses creates and still
//! lets sessions log in; the count, the bytes and the eviction order survive a reopen;
//! a session on trial ends early unless it is used again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sessiondb::{
    Budget, BudgetPolicy, Durability, EndReason, Error, Event, ManualClock, NewSession, Options,
    SessionData, SessionId, Store, Timestamp, Token,
};

const T0: u64 = 1_800_000_000_000;

fn opts(clock: &ManualClock, budget: Budget) -> Options {
    Options::default()
        .clock(clock.clone())
        .reaper_interval(None)
        .touch_interval(Duration::ZERO)
        .budget(Some(budget))
}

fn anonymous(store: &Store) -> (Token, SessionId) {
    let (t, s) = store.create(NewSession::anonymous()).unwrap();
    (t, s.id())
}

/// The ids of the sessions `events` says were evicted, in order.
fn evicted(events: &crossbeam_channel::Receiver<Event>) -> Vec<SessionId> {
    events
        .try_iter()
        .filter_map(|e| match e {
            Event::Ended {
                session,
                user,
                reason: EndReason::Evicted,
            } => {
                assert!(user.is_none(), "a signed-in session was evicted");
                Some(session)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_flood_from_several_threads_never_passes_the_budget_nor_ends_a_signed_in_session() {
    const BUDGET: u64 = 200;
    let store = Store::in_memory_with(
        Options::default()
            .reaper_interval(None)
            // Room for every event of the flood: none is dropped.
            .event_capacity(1 << 16)
            .budget(Some(Budget::sessions(BUDGET))),
    )
    .unwrap();
    let events = store.subscribe();
    // 50 signed-in users first, 50 more in the middle of the flood...
    let mut signed_in: Vec<Token> = (0..50)
        .map(|i| {
            store
                .create(NewSession::for_user(format!("u{i}")))
                .unwrap()
                .0
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicU64::new(0));
    let poller = {
        let (store, done, most) = (store.clone(), done.clone(), most.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let seen = store.stats().sessions.max(store.len()) as u64;
                most.fetch_max(seen, Ordering::Relaxed);
            }
        })
    };
    let flooders: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    store.create(NewSession::anonymous()).unwrap();
                }
            })
        })
        .collect();
    // ...as visitors who sign in: queued as anonymous, then logged in.
    // (A visitor evicted before it signs in — it is the newest, so only if this
    // thread stalls for a few hundred creates — comes back as a new visitor.)
    for i in 50..100 {
        loop {
            let (visitor, _) = store.create(NewSession::anonymous()).unwrap();
            match store.login(&visitor, &format!("u{i}")) {
                Ok(t) => break signed_in.push(t),
                Err(Error::Ended) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
    for f in flooders {
        f.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    assert!(
        most.load(Ordering::Relaxed) <= BUDGET,
        "seen {} sessions",
        most.load(Ordering::Relaxed)
    );
    for t in &signed_in {
        assert!(store.get(t).is_some(), "a signed-in session ended");
    }
    let st = store.stats();
    assert_eq!(st.sessions as u64, BUDGET);
    assert_eq!(st.budget, Some(Budget::sessions(BUDGET)));
    // Every create past the budget evicted exactly one anonymous session, and said so.
    let all: Vec<Event> = events.try_iter().collect();
    let creates = all
        .iter()
        .filter(|e| matches!(e, Event::Created { .. }))
        .count() as u64;
    assert!(creates >= 100 + 3 * 5_000);
    assert_eq!(st.evictions, creates - BUDGET);
    let (tx, rx) = crossbeam_channel::unbounded();
    all.into_iter().for_each(|e| tx.send(e).unwrap());
    assert_eq!(evicted(&rx).len() as u64, st.evictions);
    assert_eq!(st.budget_refusals, 0);
    store.verify().unwrap();
}

#[test]
fn evictions_take_the_least_recently_seen_anonymous_sessions_first() {
    let clock = ManualClock::new(Timestamp(T0));
    let store = Store::in_memory_with(opts(&clock, Budget::sessions(5))).unwrap();
    let events = store.subscribe();
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(anonymous(&store));
        clock.advance(Duration::from_secs(1));
    }
    // a0 and a2 come back; a signed-in session never counts as a candidate.
    clock.advance(Duration::from_secs(10));
    assert!(store.get(&a[0].0).is_some());
    assert!(store.get(&a[2].0).is_some());
    let mut b = Vec::new();
    // One signed-in session takes the place of the least recently seen (a1).
    clock.advance(Duration::from_secs(1));
    let (alice, _) = store.create(NewSession::for_user("alice")).unwrap();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        b.push(anonymous(&store));
    }
    let ids = |v: &[(Token, SessionId)], ix: &[usize]| -> Vec<SessionId> {
        ix.iter().map(|&i| v[i].1).collect()
    };
    let mut want = ids(&a, &[1, 3, 4, 0, 2]);
    want.extend(ids(&b, &[0]));
    assert_eq!(evicted(&events), want);
    assert!(store.get(&alice).is_some());
    assert_eq!(store.len(), 5);
    store.verify().unwrap();
}

#[test]
fn a_store_full_of_signed_in_sessions_refuses_creates_and_still_lets_sessions_log_in() {
    let clock = ManualClock::new(Timestamp(T0));
    let store = Store::in_memory_with(opts(&clock, Budget::sessions(3))).unwrap();
    let events = store.subscribe();
    store.create(NewSession::for_user("ada")).unwrap();
    store.create(NewSession::for_user("bob")).unwrap();
    let (visitor, _) = anonymous(&store);
    // Logging in an existing session changes nothing in the budget.
    let visitor = store.login(&visitor, "carol").unwrap();
    for new in [NewSession::anonymous(), NewSession::for_user("dan")] {
        match store.create(new) {
            Err(Error::Full {
                sessions: 3,
                max_sessions: Some(3),
                ..
            }) => {}
            other => panic!("expected Error::Full, got {other:?}"),
        }
    }
    let st = store.stats();
    assert_eq!((st.sessions, st.evictions, st.budget_refusals), (3, 0, 2));
    assert!(evicted(&events).is_empty());
    // The signed-in sessions go on working, and a logout frees a place.
    store.put(&visitor, "k", &1u32).unwrap();
    store.end(&visitor).unwrap();
    store.create(NewSession::anonymous()).unwrap();
    store.verify().unwrap();
}

#[test]
fn under_the_refuse_policy_a_create_at_the_budget_changes_nothing() {
    let clock = ManualClock::new(Timestamp(T0));
    let budget = Budget::sessions(2).policy(BudgetPolicy::Refuse);
    let store = Store::in_memory_with(opts(&clock, budget)).unwrap();
    let (first, _) = anonymous(&store);
    anonymous(&store);
    let before = store.stats();
    let events = store.subscribe();
    let err = store.create(NewSession::anonymous()).unwrap_err();
    assert!(matches!(err, Error::Full { .. }), "{err:?}");
    assert!(err.to_string().contains("503"), "{err}");
    assert!(
        events.try_recv().is_err(),
        "a refused create raised an event"
    );
    let after = store.stats();
    assert_eq!(after.sessions, before.sessions);
    assert_eq!(after.resident_bytes, before.resident_bytes);
    assert_eq!(after.budget_refusals, 1);
    assert!(store.get(&first).is_some());
    store.end(&first).unwrap();
    anonymous(&store);
    store.verify().unwrap();
}

#[test]
fn a_byte_budget_admits_by_estimated_bytes_and_counts_data_as_it_changes() {
    let clock = ManualClock::new(Timestamp(T0));
    let store = Store::in_memory_with(opts(&clock, Budget::bytes(64 * 1024))).unwrap();
    let empty = store.stats().resident_bytes;
    assert_eq!(empty, 0);
    let (t, _) = anonymous(&store);
    let one = store.stats().resident_bytes;
    assert!(one > 0);
    // Data is counted as it is written and as it goes.
    store.put(&t, "blob", &vec![7u8; 4000]).unwrap();
    let grown = store.stats().resident_bytes;
    assert!(grown >= one + 4000, "{grown} after 4000 bytes on {one}");
    store.remove(&t, "blob").unwrap();
    assert_eq!(store.stats().resident_bytes, one);
    // Sessions of 8 KB each: the estimate stays within 64 KiB, the oldest make room.
    let mut data = SessionData::new();
    data.insert("blob", &vec![1u8; 8000]).unwrap();
    for _ in 0..40 {
        clock.advance(Duration::from_millis(10));
        store
            .create(NewSession::anonymous().data(data.clone()))
            .unwrap();
        assert!(store.stats().resident_bytes <= 64 * 1024);
    }
    let st = store.stats();
    assert!(st.evictions > 0 && st.sessions < 9, "{st:?}");
    // A session larger than the whole budget is refused outright.
    let mut huge = SessionData::new();
    huge.insert("blob", &vec![1u8; 65_400]).unwrap();
    let got = store.create(NewSession::anonymous().data(huge));
    assert!(matches!(got, Err(Error::Full { .. })), "{got:?}");
    store.verify().unwrap();
}

#[test]
fn rotation_and_a_logout_keep_the_count_and_a_logged_out_session_can_be_evicted() {
    let clock = ManualClock::new(Timestamp(T0));
    let store = Store::in_memory_with(opts(&clock, Budget::sessions(2))).unwrap();
    let events = store.subscribe();
    let (alice, alice_id) = {
        let (t, s) = store.create(NewSession::for_user("alice")).unwrap();
        (t, s.id())
    };
    let (visitor, _) = anonymous(&store);
    let visitor = store.rotate(&visitor).unwrap();
    assert_eq!(store.len(), 2);
    clock.advance(Duration::from_secs(1));
    store.unbind_user(&alice).unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(store.get(&visitor).is_some());
    // Alice, logged out, was seen before the visitor: she makes room.
    clock.advance(Duration::from_secs(1));
    anonymous(&store);
    assert_eq!(evicted(&events), vec![alice_id]);
    assert!(store.get(&visitor).is_some());
    store.verify().unwrap();
}

#[test]
fn the_count_the_bytes_and_the_eviction_order_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(T0));
    let o = || opts(&clock, Budget::sessions(5)).durability(Durability::Sync);
    let store = Store::open_with(dir.path(), o()).unwrap();
    let mut a = Vec::new();
    for _ in 0..5 {
        a.push(anonymous(&store));
        clock.advance(Duration::from_secs(1));
    }
    store.put(&a[2].0, "k", &1u32).unwrap(); // seen again, and written
    let before = store.stats();
    store.close().unwrap();

    let store = Store::open_with(dir.path(), o()).unwrap();
    let st = store.stats();
    assert_eq!(
        (st.sessions, st.resident_bytes),
        (before.sessions, before.resident_bytes)
    );
    store.verify().unwrap();
    let events = store.subscribe();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        anonymous(&store);
    }
    let want: Vec<_> = [0, 1, 3, 4, 2].iter().map(|&i| a[i].1).collect();
    assert_eq!(evicted(&events), want);
    store.close().unwrap();

    // Reopened under a smaller budget: everything is kept, and new sessions make room
    // until the count is back under it.
    let store = Store::open_with(
        dir.path(),
        opts(&clock, Budget::sessions(2)).durability(Durability::Sync),
    )
    .unwrap();
    assert_eq!(store.len(), 5);
    anonymous(&store);
    assert_eq!(store.len(), 2);
    assert_eq!(store.stats().evictions, 4);
    store.verify().unwrap();
}

#[test]
fn a_trial_session_ends_at_its_trial_unless_used_again() {
    let clock = ManualClock::new(Timestamp(T0));
    let store = Store::in_memory_with(
        Options::default()
            .clock(clock.clone())
            .reaper_interval(None)
            .lifetime(Duration::from_secs(3600))
            .idle_timeout(Duration::ZERO)
            .trial_lifetime(Some(Duration::from_secs(120))),
    )
    .unwrap();
    let events = store.subscribe();
    let mut csrf = SessionData::new();
    csrf.insert("csrf", &"x").unwrap();
    let (never, never_s) = store.create(NewSession::anonymous().data(csrf)).unwrap();
    assert_eq!(never_s.expires_at(), Timestamp(T0 + 120_000));
    let (read, _) = anonymous(&store);
    let (written, _) = anonymous(&store);
    let (bound, _) = anonymous(&store);
    let (user, user_s) = store.create(NewSession::for_user("ada")).unwrap();
    assert_eq!(
        user_s.expires_at(),
        Timestamp(T0 + 3_600_000),
        "never on trial"
    );
    clock.advance(Duration::from_secs(60));
    // A later request: each way of using the session promotes it.
    let promoted = store.get(&read).unwrap();
    assert_eq!(promoted.expires_at(), Timestamp(T0 + 3_600_000));
    store.put(&written, "k", &1u32).unwrap();
    store.bind_user(&bound, "bob").unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(store.get(&never).is_none(), "past its trial");
    for t in [&read, &written, &bound, &user] {
        assert!(store.get(t).is_some());
    }
    assert_eq!(store.reap_expired(), 1);
    let expired: HashSet<_> = events
        .try_iter()
        .filter_map(|e| match e {
            Event::Ended {
                session,
                reason: EndReason::Expired,
                ..
            } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(expired, HashSet::from([never_s.id()]));
    store.verify().unwrap();
}

#[test]
fn a_trial_survives_a_reopen_as_a_trial_and_a_promotion_as_a_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(T0));
    let o = || {
        Options::default()
            .clock(clock.clone())
            .reaper_interval(None)
            .touch_interval(Duration::from_secs(60))
            .trial_lifetime(Some(Duration::from_secs(120)))
    };
    let store = Store::open_with(dir.path(), o()).unwrap();
    let (trial, _) = anonymous(&store);
    let (kept, _) = anonymous(&store);
    clock.advance(Duration::from_secs(10));
    // Promoted by a get even inside the touch interval.
    assert!(store.get(&kept).is_some());
    store.close().unwrap();
    clock.advance(Duration::from_secs(200));
    let store = Store::open_with(dir.path(), o()).unwrap();
    assert!(store.get(&trial).is_none());
    assert!(store.get(&kept).is_some());
    assert_eq!(store.recovery_report().expired_dropped, 1);
    store.verify().unwrap();
}

#[test]
fn budget_and_trial_options_out_of_range_are_refused_by_name() {
    let bad = [
        (
            Options::default().budget(Some(Budget::sessions(0))),
            "budget.max_sessions",
        ),
        (
            Options::default().budget(Some(Budget::bytes(10))),
            "budget.max_bytes",
        ),
        (
            Options::default().trial_lifetime(Some(Duration::from_micros(10))),
            "trial_lifetime",
        ),
    ];
    // The extremes of each range work.
    for o in [
        Options::default().budget(Some(Budget::sessions(u64::MAX).max_bytes(u64::MAX))),
        Options::default().budget(Some(Budget::sessions(1).max_bytes(1024))),
        Options::default().trial_lifetime(Some(Duration::MAX)),
        Options::default().trial_lifetime(Some(Duration::from_millis(1))),
    ] {
        let store = Store::in_memory_with(o).unwrap();
        let (t, _) = anonymous(&store);
        assert!(store.get(&t).is_some() || store.stats().sessions == 1);
        store.verify().unwrap();
    }
    for (o, want) in bad {
        match Store::in_memory_with(o) {
            Err(Error::InvalidOption { name, .. }) => assert_eq!(name, want),
            other => panic!("expected InvalidOption {want}, got {:?}", other.map(|_| ())),
        }
    }
}
