//! What a reopen restores: sessions, data, users, labels, versions, rotation aliases,
//! clears, imported sessions; a long history replayed in log order; every session many
//! `Sync` writers were told is durable; and no new file from a reopen that writes
//! nothing.

use std::time::Duration;

use sessiondb::{Durability, Error, ManualClock, NewSession, SessionData, SessionId, Store, Token};

use crate::helpers::{
    Seen, T0, backends, buffered, copy_dir, ids_of, n_of, open, open_when_released, opts, secs,
    seen, segments, snapshot_all,
};

/// A store holding one of everything: data of several types, labels, users, a bound
/// and an unbound user, a moved user, rotations (whose old tokens live out their grace),
/// an extension, a touch, ended, ended-by-id and revoked sessions.
struct Fixture {
    /// Current tokens of the live sessions.
    live: Vec<Token>,
    /// Old tokens of rotations, still inside their grace period, and their session.
    retired: Vec<(Token, SessionId)>,
    /// Tokens of sessions that ended (by end, end_by_id, revoke).
    ended: Vec<Token>,
}

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

fn build_fixture(store: &Store, clock: &ManualClock) -> Fixture {
    let tick = || clock.advance(secs(1));
    let mut live = Vec::new();
    let mut retired = Vec::new();
    let mut ended = Vec::new();

    let (a, _) = store
        .create(NewSession::anonymous().label("Firefox on Linux"))
        .unwrap();
    tick();
    store.put(&a, "n", &1u64).unwrap();
    store.put(&a, "cart", &vec![1u32, 2, 3]).unwrap();
    store.put_raw(&a, "raw", &[0, 1, 2, 255]).unwrap();
    store.put(&a, "tmp", "gone soon").unwrap();
    store.remove(&a, "tmp").unwrap();
    live.push(a.clone());

    tick();
    let (b, _) = store
        .create(NewSession::for_user("alice").label("Phone"))
        .unwrap();
    store.put(&b, "n", &2u64).unwrap();
    live.push(b);

    tick();
    let (c0, c) = store.create(NewSession::for_user("alice")).unwrap();
    store.put(&c0, "n", &3u64).unwrap();
    tick();
    let c1 = store.rotate(&c0).unwrap();
    store.put(&c1, "n", &4u64).unwrap();
    retired.push((c0, c.id()));
    live.push(c1);

    let (d, _) = store.create(NewSession::for_user("bob")).unwrap();
    store.put(&d, "n", &5u64).unwrap();
    assert!(store.end(&d).unwrap());
    ended.push(d);

    let (e1, _) = store.create(NewSession::for_user("carol")).unwrap();
    let (e2, _) = store
        .create(NewSession::for_user("carol").label("Work laptop"))
        .unwrap();
    store.put(&e1, "n", &6u64).unwrap();
    assert_eq!(store.revoke_user("carol").unwrap(), 2);
    ended.extend([e1, e2]);

    tick();
    let (f0, f) = store.create(NewSession::anonymous()).unwrap();
    store.put(&f0, "cart", &vec![9u32]).unwrap();
    let f1 = store.login(&f0, "dave").unwrap();
    retired.push((f0, f.id()));
    live.push(f1);

    tick();
    let (g, _) = store.create(NewSession::for_user("erin")).unwrap();
    assert_eq!(
        store
            .unbind_user(&g)
            .unwrap()
            .map(|u| u.as_str().to_owned()),
        Some("erin".to_owned())
    );
    store.set_label(&g, Some("Tablet")).unwrap();
    store.extend(&g, secs(60 * 86_400)).unwrap();
    live.push(g);

    let (h, _) = store.create(NewSession::for_user("frank")).unwrap();
    tick();
    store.bind_user(&h, "alice").unwrap();
    live.push(h);

    let (k, _) = store
        .create(NewSession::anonymous().idle_timeout(Duration::ZERO))
        .unwrap();
    store.update(&k, |d| d.insert("counter", &7u32)).unwrap();
    let version = store.peek(&k).unwrap().version();
    let mut data = SessionData::new();
    data.insert("counter", &8u32).unwrap();
    data.insert("n", &9u64).unwrap();
    store.save(&k, version, &data).unwrap();
    live.push(k);

    let (m, ms) = store.create(NewSession::for_user("bob")).unwrap();
    assert!(store.end_by_id(ms.id()).unwrap());
    ended.push(m);

    tick();
    store.touch(&a).unwrap();

    Fixture {
        live,
        retired,
        ended,
    }
}

/// What the public API shows of a fixture's store.
#[derive(Debug, PartialEq)]
struct View {
    live: Vec<Option<Seen>>,
    retired: Vec<Option<SessionId>>,
    ended: Vec<Option<Seen>>,
    users: Vec<Vec<SessionId>>,
    sessions: usize,
    users_count: usize,
    aliases: usize,
}

fn view(store: &Store, fx: &Fixture) -> View {
    let st = store.stats();
    View {
        live: fx.live.iter().map(|t| seen(store, t)).collect(),
        retired: fx
            .retired
            .iter()
            .map(|(t, _)| store.peek(t).map(|s| s.id()))
            .collect(),
        ended: fx.ended.iter().map(|t| seen(store, t)).collect(),
        users: USERS.iter().map(|u| ids_of(store, u)).collect(),
        sessions: st.sessions,
        users_count: st.users,
        aliases: st.aliases,
    }
}

#[test]
fn reopen_restores_sessions_data_users_labels_versions_and_rotation_aliases() {
    let cases = backends()
        .into_iter()
        .flat_map(|b| [(b, Durability::Sync), (b, buffered())]);
    for ((backend, name), durability) in cases {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let o = || {
            opts(&clock, durability)
                .rotation_grace(secs(3600))
                .backend(backend)
        };

        let store = open(dir.path(), o());
        let fx = build_fixture(&store, &clock);
        let before = view(&store, &fx);
        // The fixture is what it claims to be.
        assert!(before.live.iter().all(Option::is_some), "{durability:?}");
        assert!(before.ended.iter().all(Option::is_none), "{durability:?}");
        for ((_, id), got) in fx.retired.iter().zip(&before.retired) {
            assert_eq!(got.as_ref(), Some(id), "{durability:?}");
        }
        assert_eq!(before.sessions, fx.live.len());
        assert_eq!(before.aliases, fx.retired.len());
        assert_eq!(
            before.users[0].len(),
            3,
            "alice: b, c, and h moved from frank"
        );
        assert!(before.users[2].is_empty(), "carol was revoked");
        store.verify().unwrap();
        drop(store);

        let store = open(dir.path(), o());
        assert_eq!(
            view(&store, &fx),
            before,
            "{durability:?}: reopen changed state"
        );
        let report = store.recovery_report();
        assert_eq!(report.backend, name);
        assert_eq!(report.sessions, fx.live.len(), "{report:?}");
        assert_eq!(report.bytes_truncated, 0, "{report:?}");
        assert_eq!(report.expired_dropped, 0, "{report:?}");
        assert!(report.skipped.is_empty(), "{report:?}");
        // An old token in its grace period still cannot mint a new one after reopen.
        assert!(matches!(
            store.rotate(&fx.retired[0].0),
            Err(Error::TokenRetired)
        ));
        // Ended sessions stay ended: no write brings them back, before or after reopen.
        for t in &fx.ended {
            assert!(matches!(store.put(t, "n", &0u64), Err(Error::Ended)));
        }

        // Writes after a reopen are durable too.
        clock.advance(secs(1));
        store.put(&fx.live[0], "n", &100u64).unwrap();
        let c2 = store.rotate(&fx.live[2]).unwrap();
        let before = view(&store, &fx);
        let c2_seen = seen(&store, &c2);
        drop(store);
        let store = open(dir.path(), o());
        assert_eq!(view(&store, &fx), before, "{durability:?}: second reopen");
        assert_eq!(seen(&store, &c2), c2_seen);
        drop(store);

        // Past the grace period, old tokens stop resolving after a reopen, and nothing
        // else changes.
        clock.advance(secs(2 * 3600));
        let store = open(dir.path(), o());
        for (t, _) in &fx.retired {
            assert!(
                store.peek(t).is_none(),
                "{durability:?}: alias outlived grace"
            );
        }
        assert!(
            store.peek(&fx.live[2]).is_none(),
            "rotated away before the last reopen"
        );
        assert_eq!(store.stats().aliases, 0);
        assert_eq!(seen(&store, &c2), c2_seen);
        assert_eq!(seen(&store, &fx.live[0]), before.live[0]);
        store.verify().unwrap();
    }
}

#[test]
fn clear_is_durable() {
    for (backend, _) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let o = || opts(&clock, Durability::Sync).backend(backend);
        let store = open(dir.path(), o());
        let (a, _) = store.create(NewSession::for_user("alice")).unwrap();
        store.create(NewSession::anonymous()).unwrap();
        assert_eq!(store.clear().unwrap(), 2);
        let (b, _) = store.create(NewSession::anonymous()).unwrap();
        drop(store);
        let store = open(dir.path(), o());
        assert!(store.peek(&a).is_none());
        assert!(store.peek(&b).is_some());
        assert!(store.sessions_of("alice").unwrap().is_empty());
        assert_eq!(store.stats().sessions, 1);
    }
}

/// An application that opens its store at every start, often without writing, must not
/// leave a file behind each time: a close drops an active segment that holds no record
/// (and an open, one a crash left).
#[test]
fn reopening_without_writes_leaves_no_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (token, _) = {
        let store = open(dir.path(), opts(&clock, buffered()));
        store.create(NewSession::for_user("alice")).unwrap()
    };
    let files = || segments(dir.path());
    let after_first = files();
    assert_eq!(after_first.len(), 1);
    for _ in 0..5 {
        let store = open(dir.path(), opts(&clock, buffered()));
        assert!(store.get(&token).is_some());
        // While open, the store has its active segment.
        assert_eq!(files().len(), after_first.len() + 1);
    }
    assert_eq!(files(), after_first);
    // A crash image of a store opened without a write: its empty active segment is
    // dropped by the next open.
    let store = open(dir.path(), opts(&clock, buffered()));
    let image = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), image.path());
    drop(store);
    drop(open(image.path(), opts(&clock, buffered())));
    assert_eq!(segments(image.path()).len(), after_first.len());
    // A write after that still lands, and survives the next open.
    {
        let store = open(dir.path(), opts(&clock, Durability::Sync));
        store.put(&token, "n", &7u64).unwrap();
    }
    let store = open(dir.path(), opts(&clock, buffered()));
    assert_eq!(n_of(&store.get(&token).unwrap()), Some(7));
    drop(store);
    assert_eq!(files().len(), after_first.len() + 1);
}

/// A segment is decoded on one thread and applied on another, handed over in batches:
/// a long history in which the same sessions change again and again — data, users,
/// ends, rotations, thousands of records in one segment — must still replay in log
/// order, to the same state the sequential (salvage) replay reaches.
#[test]
fn a_long_uncompacted_history_replays_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let o = || opts(&clock, buffered()).compaction(false, u64::MAX, 2.0);
    let store = open(dir.path(), o());
    let mut tokens = Vec::new();
    for i in 0..300u64 {
        let (t, _) = store
            .create(NewSession::for_user(format!("user{}", i % 13)))
            .unwrap();
        tokens.push(t);
    }
    for round in 0..12u64 {
        clock.advance(secs(1));
        for (i, t) in tokens.iter().enumerate() {
            store.put(t, "n", &(round * 1000 + i as u64)).unwrap();
            match (i as u64 + round) % 7 {
                0 => store
                    .bind_user(t, &format!("user{}", (i as u64 + round) % 13))
                    .unwrap(),
                3 => {
                    store.unbind_user(t).unwrap();
                }
                _ => {}
            }
        }
    }
    for t in tokens.iter().step_by(5) {
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
    let records = store.stats().log_records;
    assert!(records > 5_000, "{records} records");
    let state = snapshot_all(&store, &tokens);
    let users: Vec<Vec<SessionId>> = (0..13)
        .map(|u| ids_of(&store, &format!("user{u}")))
        .collect();
    drop(store);

    for salvage in [false, true] {
        let store = open(dir.path(), o().salvage(salvage));
        assert!(store.recovery_report().records > 5_000);
        assert_eq!(snapshot_all(&store, &tokens), state, "salvage {salvage}");
        for (u, ids) in users.iter().enumerate() {
            assert_eq!(
                &ids_of(&store, &format!("user{u}")),
                ids,
                "salvage {salvage}"
            );
        }
    }
}

/// Many `Sync` writers share each fsync, and each one's wait ends: the writer wakes a
/// few of a batch's waiters and they wake the rest (a relay), so none may be left
/// parked. Every acknowledged session is in the reopened store.
#[test]
fn many_sync_writers_all_return_and_every_acknowledged_session_survives() {
    const WRITERS: usize = 32;
    const EACH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = open(dir.path(), opts(&clock, Durability::Sync));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for w in 0..WRITERS {
        let (store, done_tx) = (store.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let ids: Vec<SessionId> = (0..EACH)
                .map(|_| {
                    let new = NewSession::for_user(format!("writer{w}"));
                    store.create(new).unwrap().1.id()
                })
                .collect();
            done_tx.send(ids).unwrap();
        });
    }
    let mut acknowledged = Vec::new();
    for finished in 0..WRITERS {
        // A generous bound: a writer left parked never returns at all.
        match done_rx.recv_timeout(secs(60)) {
            Ok(ids) => acknowledged.extend(ids),
            Err(_) => panic!("{finished} of {WRITERS} Sync writers returned; the rest hang"),
        }
    }
    let st = store.stats();
    assert!(
        st.log_syncs >= 1 && st.log_records >= (WRITERS * EACH) as u64,
        "{st:?}"
    );
    drop(store);
    let store = open_when_released(dir.path(), || opts(&clock, Durability::Sync));
    for w in 0..WRITERS {
        assert_eq!(
            ids_of(&store, &format!("writer{w}")).len(),
            EACH,
            "writer{w}"
        );
    }
    for id in acknowledged {
        assert!(store.get_by_id(id).is_some(), "session {id:?} lost");
    }
}

#[test]
fn imported_sessions_caller_chosen_tokens_and_exact_expiry_survive_reopen() {
    for (backend, name) in backends() {
        let clock = ManualClock::new(T0);
        let o = || opts(&clock, Durability::Sync).backend(backend);
        // A source store, exported.
        let src = Store::in_memory_with(opts(&clock, Durability::Memory)).unwrap();
        let (a, _) = src.create(NewSession::for_user("alice")).unwrap();
        src.put(&a, "k", &5u8).unwrap();
        clock.advance(secs(3));
        src.touch(&a).unwrap();
        let mut records = Vec::new();
        src.export(|r| {
            records.push(r);
            Ok(())
        })
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), o());
        for r in records {
            assert!(store.import(r).unwrap(), "{name}");
        }
        let chosen = Token::from_bytes([42u8; 24]);
        store
            .create_with_token(&chosen, NewSession::for_user("bob"))
            .unwrap();
        let deadline = T0.saturating_add(secs(600));
        store.set_expiry(&chosen, deadline).unwrap();
        let before = (store.peek(&a).unwrap(), store.peek(&chosen).unwrap());
        drop(store);

        let store = open(dir.path(), o());
        let after = (store.peek(&a).unwrap(), store.peek(&chosen).unwrap());
        for (x, y) in [(&before.0, &after.0), (&before.1, &after.1)] {
            assert_eq!(x.id(), y.id(), "{name}");
            assert_eq!(x.user(), y.user(), "{name}");
            assert_eq!(x.created_at(), y.created_at(), "{name}");
            assert_eq!(x.last_seen(), y.last_seen(), "{name}");
            assert_eq!(x.authenticated_at(), y.authenticated_at(), "{name}");
            assert_eq!(x.absolute_deadline(), y.absolute_deadline(), "{name}");
            assert_eq!(x.version(), y.version(), "{name}");
        }
        assert_eq!(after.0.get::<u8>("k").unwrap(), Some(5), "{name}");
        assert_eq!(after.1.absolute_deadline(), deadline, "{name}");
        assert_eq!(store.sessions_of("alice").unwrap().len(), 1, "{name}");
        // And through a compaction (the image goes into a base).
        store.compact().unwrap();
        drop(store);
        let store = open(dir.path(), o());
        assert_eq!(store.peek(&a).unwrap().id(), before.0.id(), "{name}");
        assert_eq!(store.peek(&chosen).unwrap().absolute_deadline(), deadline);
    }
}

/// A log large enough for recovery's parallel paths — a segment over 2 MiB decoded on
/// one thread and applied on another, a base over 1 MiB decoded in two halves and over
/// 4,096 sessions loaded by two threads — restores what the small-log path restores.
#[test]
fn a_large_segment_and_a_large_base_recover_through_the_parallel_paths() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let o = || opts(&clock, Durability::Sync).segment_bytes(64 << 20);
    let store = open(dir.path(), o());
    let sessions: Vec<(Token, u64)> = (0..6_000u64)
        .map(|i| {
            let mut d = SessionData::new();
            d.insert("n", &i).unwrap();
            d.insert("pad", &"p".repeat(500)).unwrap();
            let user = format!("user{}", i % 50);
            (
                store.create(NewSession::for_user(user).data(d)).unwrap().0,
                i,
            )
        })
        .collect();
    drop(store);
    let seg = segments(dir.path()).into_iter().max().unwrap();
    assert!(
        std::fs::metadata(&seg).unwrap().len() > 2 << 20,
        "a segment over 2 MiB"
    );
    let check = |store: &Store| {
        assert_eq!(store.len(), sessions.len());
        for (t, n) in &sessions {
            assert_eq!(n_of(&store.get(t).expect("live")), Some(*n));
        }
        assert_eq!(store.sessions_of("user7").unwrap().len(), 120);
        store.verify().unwrap();
    };
    let store = open(dir.path(), o());
    check(&store);
    store.compact().unwrap();
    drop(store);
    let base = crate::helpers::bases(dir.path()).pop().unwrap();
    assert!(
        std::fs::metadata(&base).unwrap().len() > 1 << 20,
        "a base over 1 MiB"
    );
    let store = open(dir.path(), o());
    check(&store);
}
