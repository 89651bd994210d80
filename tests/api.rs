//! Behaviour of the public API, on an in-memory store with a manual clock.

use std::collections::HashSet;
use std::time::Duration;

use sessiondb::{
    Clock, EndReason, Error, Event, LimitPolicy, Limits, ManualClock, NewSession, Options, Session,
    SessionData, SessionId, SessionRecord, Store, Timestamp, Token,
};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn store_with(opts: Options) -> (Store, ManualClock) {
    let clock = ManualClock::new(T0);
    let store = Store::in_memory_with(opts.clock(clock.clone()).reaper_interval(None)).unwrap();
    (store, clock)
}

fn store() -> (Store, ManualClock) {
    store_with(Options::default())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn store_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Store>();
}

#[test]
fn created_session_is_found_by_its_token_and_unknown_tokens_are_not() {
    let (s, _) = store();
    let (token, created) = s.create(NewSession::anonymous()).unwrap();
    let got = s.get(&token).unwrap();
    assert_eq!(got.id(), created.id());
    assert_eq!(got.user(), None);
    assert_eq!(got.created_at(), T0);
    assert!(s.get(&Token::generate().unwrap()).is_none());
    let reparsed = Token::parse(&token.to_string()).unwrap();
    assert_eq!(s.get(&reparsed).unwrap().id(), created.id());
    s.verify().unwrap();
}

#[test]
fn garbage_token_strings_are_typed_errors() {
    for bad in [
        "",
        "short",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        &"A".repeat(33),
    ] {
        assert!(
            matches!(Token::parse(bad), Err(Error::InvalidToken { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        SessionId::parse("not-an-id"),
        Err(Error::InvalidSessionId { .. })
    ));
}

#[test]
fn session_is_never_returned_past_its_absolute_deadline_even_unreaped() {
    let (s, clock) = store_with(
        Options::default()
            .lifetime(secs(100))
            .idle_timeout(Duration::ZERO),
    );
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    clock.advance(secs(99));
    assert!(s.get(&t).is_some());
    clock.advance(secs(1));
    assert!(s.get(&t).is_none(), "returned at its deadline");
    assert!(s.peek(&t).is_none());
    assert!(s.user_of(&t).is_none());
    assert_eq!(s.len(), 1, "not reaped yet, but invisible");
    assert_eq!(s.reap_expired(), 1);
    assert_eq!(s.len(), 0);
    s.verify().unwrap();
}

#[test]
fn idle_timeout_slides_with_activity_and_zero_disables_it() {
    let (s, clock) = store_with(
        Options::default()
            .idle_timeout(secs(60))
            .touch_interval(Duration::ZERO),
    );
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    for _ in 0..10 {
        clock.advance(secs(50));
        assert!(s.get(&t).is_some(), "activity keeps it alive");
    }
    clock.advance(secs(60));
    assert!(s.get(&t).is_none(), "idle for the whole timeout");

    let (t2, _) = s
        .create(NewSession::anonymous().idle_timeout(Duration::ZERO))
        .unwrap();
    clock.advance(secs(86_400));
    assert!(s.get(&t2).is_some(), "idle 0 means no idle expiry");
    assert_eq!(s.get(&t2).unwrap().idle_timeout(), None);
}

#[test]
fn reads_rearm_the_idle_deadline_at_most_once_per_touch_interval() {
    let (s, clock) = store_with(
        Options::default()
            .idle_timeout(secs(600))
            .touch_interval(secs(60)),
    );
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    clock.advance(secs(30));
    assert_eq!(
        s.get(&t).unwrap().last_seen(),
        T0,
        "within the interval: no re-arm"
    );
    clock.advance(secs(30));
    let seen = s.get(&t).unwrap().last_seen();
    assert_eq!(
        seen,
        T0.saturating_add(secs(60)),
        "interval passed: re-armed"
    );
    assert_eq!(
        s.get(&t).unwrap().expires_at(),
        seen.saturating_add(secs(600))
    );
    // peek never counts as activity.
    clock.advance(secs(120));
    assert_eq!(s.peek(&t).unwrap().last_seen(), seen);
}

#[test]
fn explicit_touch_and_extend_move_deadlines() {
    let (s, clock) = store_with(
        Options::default()
            .lifetime(secs(100))
            .idle_timeout(secs(50))
            .touch_interval(secs(3600)),
    );
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    clock.advance(secs(40));
    s.touch(&t).unwrap();
    clock.advance(secs(40));
    assert!(s.get(&t).is_some(), "touch re-armed the idle deadline");
    let deadline = s.extend(&t, secs(1000)).unwrap();
    assert_eq!(
        deadline,
        clock_now(&clock).saturating_add(secs(50)),
        "idle still binds"
    );
    clock.advance(secs(45));
    s.touch(&t).unwrap();
    clock.advance(secs(45));
    assert!(
        s.get(&t).is_some(),
        "past the original 100 s lifetime after extend"
    );
    let before = s.peek(&t).unwrap().absolute_deadline();
    s.extend(&t, secs(1)).unwrap();
    assert_eq!(
        s.peek(&t).unwrap().absolute_deadline(),
        before,
        "extend never shortens"
    );
}

fn clock_now(c: &ManualClock) -> Timestamp {
    use sessiondb::Clock;
    c.now()
}

#[test]
fn auth_lifetime_counts_from_last_authentication() {
    let (s, clock) = store_with(
        Options::default()
            .lifetime(secs(10_000))
            .idle_timeout(Duration::ZERO)
            .auth_lifetime(Some(secs(100))),
    );
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    clock.advance(secs(500));
    assert!(
        s.get(&t).is_some(),
        "anonymous: only the absolute lifetime applies"
    );
    s.bind_user(&t, "alice").unwrap();
    assert_eq!(
        s.get(&t).unwrap().authenticated_at(),
        Some(clock_now(&clock))
    );
    clock.advance(secs(90));
    s.bind_user(&t, "alice").unwrap(); // re-authentication
    clock.advance(secs(90));
    assert!(s.get(&t).is_some());
    clock.advance(secs(10));
    assert!(s.get(&t).is_none(), "100 s after the last authentication");
    assert_eq!(s.reap_expired(), 1, "the wheel was moved earlier at bind");
}

#[test]
fn session_created_with_data_has_it_at_version_zero() {
    let (s, _) = store();
    let mut d = SessionData::new();
    d.insert("csrf", "abc").unwrap();
    let (t, created) = s.create(NewSession::for_user("alice").data(d)).unwrap();
    assert_eq!(created.version(), 0);
    assert_eq!(
        s.get(&t).unwrap().get::<String>("csrf").unwrap().as_deref(),
        Some("abc")
    );
    let mut big = SessionData::new();
    big.insert_raw("x", &vec![0u8; 100_000]).unwrap();
    assert!(matches!(
        s.create(NewSession::anonymous().data(big)),
        Err(Error::TooLarge { what: "value", .. })
    ));
}

#[test]
fn typed_data_put_get_remove_and_versions() {
    let (s, _) = store();
    let (t, created) = s.create(NewSession::anonymous()).unwrap();
    assert_eq!(created.version(), 0);
    assert_eq!(s.put(&t, "cart", &vec![1u32, 2]).unwrap(), 1);
    assert_eq!(s.put(&t, "name", "alice").unwrap(), 2);
    let got = s.get(&t).unwrap();
    assert_eq!(got.get::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2]));
    assert_eq!(got.get::<String>("name").unwrap().as_deref(), Some("alice"));
    assert_eq!(got.get::<u8>("missing").unwrap(), None);
    assert!(matches!(
        got.get::<String>("cart"),
        Err(Error::Codec { .. })
    ));
    assert_eq!(s.remove(&t, "cart").unwrap(), 3);
    assert_eq!(
        s.remove(&t, "cart").unwrap(),
        3,
        "removing nothing changes nothing"
    );
    assert_eq!(
        s.get(&t).unwrap().data().keys().collect::<Vec<_>>(),
        ["name"]
    );
}

#[test]
fn compare_and_swap_save_refuses_a_stale_version() {
    let (s, _) = store();
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    let a = s.get(&t).unwrap();
    let b = s.get(&t).unwrap();
    let mut da = a.data().clone();
    da.insert("from", "a").unwrap();
    let v = s.save(&t, a.version(), &da).unwrap();
    assert_eq!(v, a.version() + 1);
    let mut db = b.data().clone();
    db.insert("from", "b").unwrap();
    match s.save(&t, b.version(), &db) {
        Err(Error::VersionConflict { expected, actual }) => {
            assert_eq!((expected, actual), (b.version(), v));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        s.get(&t).unwrap().get::<String>("from").unwrap().as_deref(),
        Some("a")
    );
}

#[test]
fn concurrent_updates_never_lose_each_other() {
    let (s, _) = store();
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    s.put(&t, "n", &0u64).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (s, t) = (s.clone(), t.clone());
            std::thread::spawn(move || {
                for _ in 0..250 {
                    s.update(&t, |d| {
                        let n: u64 = d.get("n")?.unwrap_or(0);
                        d.insert("n", &(n + 1))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(s.get(&t).unwrap().get::<u64>("n").unwrap(), Some(1000));
}

#[test]
fn update_that_fails_saves_nothing() {
    let (s, _) = store();
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    let r: Result<(), Error> = s.update(&t, |d| {
        d.insert("x", &1u8)?;
        Err(Error::Ended)
    });
    assert!(r.is_err());
    assert!(!s.get(&t).unwrap().data().contains_key("x"));
    assert_eq!(s.get(&t).unwrap().version(), 0);
}

#[test]
fn ending_is_final_no_write_or_touch_resurrects() {
    let (s, _) = store();
    let (t, _) = s.create(NewSession::for_user("alice")).unwrap();
    let snap = s.get(&t).unwrap();
    assert!(s.end(&t).unwrap());
    assert!(!s.end(&t).unwrap(), "second logout is a no-op");
    assert!(s.get(&t).is_none());
    assert!(matches!(s.put(&t, "k", &1), Err(Error::Ended)));
    assert!(matches!(s.touch(&t), Err(Error::Ended)));
    assert!(matches!(s.extend(&t, secs(10)), Err(Error::Ended)));
    assert!(matches!(
        s.save(&t, snap.version(), snap.data()),
        Err(Error::Ended)
    ));
    assert!(matches!(s.bind_user(&t, "bob"), Err(Error::Ended)));
    assert!(matches!(s.rotate(&t), Err(Error::Ended)));
    assert!(matches!(s.open_instance(&t), Err(Error::Ended)));
    assert!(s.get(&t).is_none());
    assert!(s.sessions_of("alice").unwrap().is_empty());
    s.verify().unwrap();
}

#[test]
fn expired_session_rejects_writes_and_stays_expired() {
    let (s, clock) = store_with(Options::default().lifetime(secs(10)));
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    clock.advance(secs(10));
    assert!(matches!(s.put(&t, "k", &1), Err(Error::Ended)));
    assert!(matches!(s.touch(&t), Err(Error::Ended)));
    assert!(s.get(&t).is_none());
}

#[test]
fn rotation_keeps_id_data_and_user_and_old_token_lives_out_its_grace() {
    let (s, clock) = store_with(Options::default().rotation_grace(secs(5)));
    let (old, created) = s.create(NewSession::for_user("alice")).unwrap();
    s.put(&old, "k", "v").unwrap();
    let new = s.rotate(&old).unwrap();
    assert_ne!(new, old);
    let via_new = s.get(&new).unwrap();
    assert_eq!(via_new.id(), created.id(), "public id is stable");
    assert_eq!(via_new.user().unwrap().as_str(), "alice");
    assert_eq!(via_new.get::<String>("k").unwrap().as_deref(), Some("v"));
    // Parallel requests with the old token still work during the grace period.
    assert_eq!(s.get(&old).unwrap().id(), created.id());
    s.put(&old, "k2", &2u8).unwrap();
    assert_eq!(s.get(&new).unwrap().get::<u8>("k2").unwrap(), Some(2));
    // ...but cannot mint another token.
    assert!(matches!(s.rotate(&old), Err(Error::TokenRetired)));
    clock.advance(secs(5));
    assert!(s.get(&old).is_none(), "grace over");
    assert!(s.get(&new).is_some());
    s.reap_expired();
    assert_eq!(s.stats().aliases, 0, "the alias is reaped");
    s.verify().unwrap();
}

#[test]
fn rotation_with_zero_grace_retires_the_old_token_at_once() {
    let (s, _) = store_with(Options::default().rotation_grace(Duration::ZERO));
    let (old, _) = s.create(NewSession::anonymous()).unwrap();
    let new = s.rotate(&old).unwrap();
    assert!(s.get(&old).is_none());
    assert!(s.get(&new).is_some());
    assert_eq!(s.stats().aliases, 0);
}

#[test]
fn ending_through_an_old_token_in_grace_ends_the_session() {
    let (s, _) = store();
    let (old, _) = s.create(NewSession::anonymous()).unwrap();
    let new = s.rotate(&old).unwrap();
    assert!(s.end(&old).unwrap());
    assert!(s.get(&new).is_none());
    assert!(s.get(&old).is_none());
    s.verify().unwrap();
}

#[test]
fn login_rotates_and_binds() {
    let (s, _) = store();
    let (anon, _) = s.create(NewSession::anonymous()).unwrap();
    let t = s.login(&anon, "alice").unwrap();
    assert_ne!(t, anon);
    assert_eq!(s.user_of(&t).unwrap().as_str(), "alice");
    assert_eq!(s.sessions_of("alice").unwrap().len(), 1);
    assert_eq!(s.unbind_user(&t).unwrap().unwrap().as_str(), "alice");
    assert!(s.user_of(&t).is_none());
    assert!(s.get(&t).unwrap().authenticated_at().is_none());
    assert!(s.sessions_of("alice").unwrap().is_empty());
    assert_eq!(s.unbind_user(&t).unwrap(), None);
    s.verify().unwrap();
}

#[test]
fn binding_another_user_moves_the_session_between_user_indexes() {
    let (s, _) = store();
    let (t, _) = s.create(NewSession::for_user("alice")).unwrap();
    s.bind_user(&t, "bob").unwrap();
    assert!(s.sessions_of("alice").unwrap().is_empty());
    assert_eq!(s.sessions_of("bob").unwrap().len(), 1);
    s.verify().unwrap();
}

#[test]
fn sessions_of_user_lists_devices_oldest_first() {
    let (s, clock) = store();
    let (_a, a) = s
        .create(NewSession::for_user("alice").label("Firefox on Linux"))
        .unwrap();
    clock.advance(secs(1));
    let (_b, b) = s
        .create(NewSession::for_user("alice").label("Safari on iPhone"))
        .unwrap();
    s.create(NewSession::for_user("bob")).unwrap();
    let list = s.sessions_of("alice").unwrap();
    assert_eq!(
        list.iter().map(|x| x.id()).collect::<Vec<_>>(),
        vec![a.id(), b.id()]
    );
    assert_eq!(list[0].label(), Some("Firefox on Linux"));
    assert_eq!(list[1].label(), Some("Safari on iPhone"));
    assert!(s.sessions_of("carol").unwrap().is_empty());
    assert_eq!(
        s.get_by_id(b.id()).unwrap().label(),
        Some("Safari on iPhone")
    );
}

#[test]
fn revoke_user_ends_all_and_only_that_users_sessions() {
    let (s, _) = store();
    let alice: Vec<Token> = (0..10)
        .map(|_| s.create(NewSession::for_user("alice")).unwrap().0)
        .collect();
    let (bob, _) = s.create(NewSession::for_user("bob")).unwrap();
    let (anon, _) = s.create(NewSession::anonymous()).unwrap();
    assert_eq!(s.revoke_user("alice").unwrap(), 10);
    assert!(alice.iter().all(|t| s.get(t).is_none()));
    assert!(s.get(&bob).is_some());
    assert!(s.get(&anon).is_some());
    assert_eq!(s.revoke_user("alice").unwrap(), 0);
    assert_eq!(s.stats().users, 1);
    s.verify().unwrap();
}

#[test]
fn end_by_public_id_signs_out_one_device() {
    let (s, _) = store();
    let (t1, a) = s.create(NewSession::for_user("alice")).unwrap();
    let (t2, _) = s.create(NewSession::for_user("alice")).unwrap();
    assert!(s.end_by_id(a.id()).unwrap());
    assert!(!s.end_by_id(a.id()).unwrap());
    assert!(s.get(&t1).is_none());
    assert!(s.get(&t2).is_some());
    assert_eq!(s.sessions_of("alice").unwrap().len(), 1);
}

#[test]
fn per_user_limit_refuses_when_configured() {
    let (s, _) = store_with(Options::default().max_sessions_per_user(Some(2), LimitPolicy::Refuse));
    s.create(NewSession::for_user("alice")).unwrap();
    s.create(NewSession::for_user("alice")).unwrap();
    match s.create(NewSession::for_user("alice")) {
        Err(Error::UserSessionLimit { user, max }) => {
            assert_eq!((user.as_str(), max), ("alice", 2))
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    let (anon, _) = s.create(NewSession::anonymous()).unwrap();
    assert!(matches!(
        s.bind_user(&anon, "alice"),
        Err(Error::UserSessionLimit { .. })
    ));
    assert_eq!(s.sessions_of("alice").unwrap().len(), 2);
}

#[test]
fn per_user_limit_ends_the_oldest_when_configured() {
    let (s, clock) =
        store_with(Options::default().max_sessions_per_user(Some(2), LimitPolicy::EndOldest));
    let events = s.subscribe();
    let (first, a) = s.create(NewSession::for_user("alice")).unwrap();
    clock.advance(secs(1));
    let (second, _) = s.create(NewSession::for_user("alice")).unwrap();
    clock.advance(secs(1));
    let (third, _) = s.create(NewSession::for_user("alice")).unwrap();
    assert!(s.get(&first).is_none(), "oldest ended");
    assert!(s.get(&second).is_some() && s.get(&third).is_some());
    let evicted: Vec<Event> = events
        .try_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Ended {
                    reason: EndReason::LimitExceeded,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(evicted.len(), 1);
    assert!(matches!(&evicted[0], Event::Ended { session, .. } if *session == a.id()));
    s.verify().unwrap();
}

#[test]
fn expired_sessions_do_not_count_against_the_user_limit() {
    let (s, clock) = store_with(
        Options::default()
            .lifetime(secs(10))
            .max_sessions_per_user(Some(1), LimitPolicy::Refuse),
    );
    s.create(NewSession::for_user("alice")).unwrap();
    clock.advance(secs(10));
    s.create(NewSession::for_user("alice")).unwrap();
}

#[test]
fn instances_open_list_end_and_last_one_ends_a_session_without_idle_expiry() {
    let (s, _) = store();
    let events = s.subscribe();
    let (t, created) = s
        .create(NewSession::anonymous().idle_timeout(Duration::ZERO))
        .unwrap();
    let i1 = s.open_instance(&t).unwrap();
    let i2 = s.open_instance(&t).unwrap();
    assert_ne!(i1, i2);
    assert_eq!(s.instances(&t).unwrap(), vec![i1, i2]);
    assert!(s.end_instance(&t, i1).unwrap());
    assert!(!s.end_instance(&t, i1).unwrap());
    assert!(s.get(&t).is_some(), "one instance left");
    assert!(s.end_instance(&t, i2).unwrap());
    assert!(
        s.get(&t).is_none(),
        "idle disabled + last instance gone = ended"
    );
    let got: Vec<Event> = events.try_iter().collect();
    assert!(got.contains(&Event::InstanceEnded {
        session: created.id(),
        instance: i2
    }));
    assert!(got.contains(&Event::Ended {
        session: created.id(),
        user: None,
        reason: EndReason::LastInstanceEnded
    }));
    // With an idle timeout, the session outlives its instances.
    let (t2, _) = s.create(NewSession::anonymous()).unwrap();
    let i = s.open_instance(&t2).unwrap();
    s.end_instance(&t2, i).unwrap();
    assert!(s.get(&t2).is_some());
    s.verify().unwrap();
}

#[test]
fn events_report_lifecycle_by_public_id() {
    let (s, clock) = store_with(Options::default().lifetime(secs(60)));
    let rx = s.subscribe();
    let (t, created) = s.create(NewSession::anonymous()).unwrap();
    let id = created.id();
    let t = s.login(&t, "alice").unwrap();
    let (t2, c2) = s.create(NewSession::for_user("alice")).unwrap();
    s.revoke_user("alice").unwrap();
    let (_t3, c3) = s.create(NewSession::anonymous()).unwrap();
    clock.advance(secs(60));
    s.reap_expired();
    let got: Vec<Event> = rx.try_iter().collect();
    let alice = s.sessions_of("alice").unwrap();
    assert!(alice.is_empty());
    let _ = (&t, &t2);
    assert_eq!(
        got[0],
        Event::Created {
            session: id,
            user: None
        }
    );
    assert_eq!(got[1], Event::Rotated { session: id });
    assert!(
        matches!(&got[2], Event::UserBound { session, user } if *session == id && user.as_str() == "alice")
    );
    assert!(matches!(&got[3], Event::Created { session, .. } if *session == c2.id()));
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::UserRevoked { sessions, .. } if sessions.len() == 2))
    );
    assert!(got.contains(&Event::Ended {
        session: c3.id(),
        user: None,
        reason: EndReason::Expired
    }));
}

#[test]
fn slow_subscriber_never_blocks_and_drops_are_counted() {
    let (s, _) = store_with(Options::default().event_capacity(1));
    let _slow = s.subscribe();
    for _ in 0..100 {
        s.create(NewSession::anonymous()).unwrap();
    }
    assert_eq!(s.stats().events_dropped, 99);
    // A dropped subscriber is forgotten.
    let rx = s.subscribe();
    drop(rx);
    s.create(NewSession::anonymous()).unwrap();
}

#[test]
fn bad_input_is_refused_with_typed_errors_and_changes_nothing() {
    let limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_data_bytes: 40,
        max_user_id_bytes: 10,
        max_label_bytes: 5,
    };
    let (s, _) = store_with(Options::default().limits(limits));
    assert!(matches!(
        s.create(NewSession::for_user("")),
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.create(NewSession::for_user("a-very-long-user")),
        Err(Error::TooLarge {
            what: "user id",
            ..
        })
    ));
    assert!(matches!(
        s.create(NewSession::anonymous().label("too long label")),
        Err(Error::TooLarge { what: "label", .. })
    ));
    assert!(matches!(
        s.create(NewSession::anonymous().lifetime(Duration::ZERO)),
        Err(Error::InvalidOption { .. })
    ));
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    assert!(matches!(
        s.put(&t, "a-long-key", &1u8),
        Err(Error::TooLarge { what: "key", .. })
    ));
    assert!(matches!(
        s.put_raw(&t, "k", &[0u8; 17]),
        Err(Error::TooLarge { what: "value", .. })
    ));
    s.put_raw(&t, "a", &[0u8; 16]).unwrap();
    assert!(matches!(
        s.put_raw(&t, "b", &[0u8; 16]),
        Err(Error::TooLarge {
            what: "session data",
            ..
        })
    ));
    let mut big = SessionData::new();
    big.insert_raw("x", &[0u8; 100]).unwrap();
    assert!(matches!(s.save(&t, 1, &big), Err(Error::TooLarge { .. })));
    assert!(matches!(
        s.bind_user(&t, ""),
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.revoke_user(""),
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.sessions_of(""),
        Err(Error::InvalidUserId { .. })
    ));
    let got = s.get(&t).unwrap();
    assert_eq!(got.version(), 1);
    assert_eq!(got.data().keys().collect::<Vec<_>>(), ["a"]);
    for e in [Error::Ended, Error::TokenRetired] {
        assert!(!e.to_string().is_empty());
    }
}

/// Issue 18, defect 9: an import took `version: u64::MAX`, and the next write wrapped
/// it to 0, after which a compare-and-swap against a stale version could succeed.
#[test]
fn a_version_never_wraps_an_import_must_leave_room_and_the_last_change_is_refused() {
    let (s, _) = store_with(Options::default().rotation_grace(Duration::ZERO));
    let (t, _) = s.create(NewSession::for_user("alice")).unwrap();
    let mut rec = None;
    s.export(|r| {
        rec = Some(r);
        Ok(())
    })
    .unwrap();
    let rec = rec.unwrap();
    assert!(s.end(&t).unwrap());
    let at = |version| SessionRecord {
        version,
        ..rec.clone()
    };
    for v in [
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        1 << 53,
        Session::MAX_VERSION,
    ] {
        match s.import(at(v)) {
            Err(Error::InvalidOption {
                name: "SessionRecord::version",
                reason,
            }) => assert!(reason.contains(&(Session::MAX_VERSION - 1).to_string())),
            other => panic!("version {v}: {other:?}"),
        }
    }
    assert!(s.is_empty());
    assert!(s.import(at(Session::MAX_VERSION - 1)).unwrap());
    assert_eq!(s.put(&t, "k", &1u8).unwrap(), Session::MAX_VERSION);
    // At the last version every change is refused, whatever the path, and none wraps.
    let exhausted = |r: Result<(), Error>| match r {
        Err(Error::VersionExhausted { version }) => assert_eq!(version, Session::MAX_VERSION),
        other => panic!("{other:?}"),
    };
    exhausted(s.put(&t, "k", &2u8).map(drop));
    exhausted(s.remove(&t, "k").map(drop));
    exhausted(
        s.save(&t, Session::MAX_VERSION, &SessionData::new())
            .map(drop),
    );
    exhausted(s.update(&t, |d| d.insert("k", &3u8)));
    exhausted(s.bind_user(&t, "bob"));
    exhausted(s.login(&t, "bob").map(drop));
    exhausted(s.unbind_user(&t).map(drop));
    assert!(matches!(
        s.save(&t, 0, &SessionData::new()),
        Err(Error::VersionConflict { expected: 0, .. })
    ));
    // Nothing changed: not the data, not the user, not the token (no grace: a
    // rotation would have retired it).
    let got = s.get(&t).expect("still live");
    assert_eq!(got.version(), Session::MAX_VERSION);
    assert_eq!(got.get::<u8>("k").unwrap(), Some(1));
    assert_eq!(got.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(s.sessions_of("alice").unwrap().len(), 1);
    // What changes nothing still answers, and the session can be ended.
    assert_eq!(s.remove(&t, "absent").unwrap(), Session::MAX_VERSION);
    s.touch(&t).unwrap();
    assert!(
        !Error::VersionExhausted { version: 1 }
            .to_string()
            .is_empty()
    );
    s.verify().unwrap();
    assert!(s.end(&t).unwrap());
}

#[test]
fn invalid_options_are_refused() {
    assert!(matches!(
        Store::in_memory_with(Options::default().shards(100)),
        Err(Error::InvalidOption { name: "shards", .. })
    ));
}

#[test]
fn clear_ends_everything() {
    let (s, _) = store();
    let rx = s.subscribe();
    let tokens: Vec<Token> = (0..20)
        .map(|i| {
            s.create(if i % 2 == 0 {
                NewSession::for_user(format!("u{i}"))
            } else {
                NewSession::anonymous()
            })
            .unwrap()
            .0
        })
        .collect();
    assert_eq!(s.clear().unwrap(), 20);
    assert!(tokens.iter().all(|t| s.get(t).is_none()));
    assert!(s.is_empty());
    assert_eq!(s.stats().users, 0);
    assert!(rx.try_iter().any(|e| e == Event::Cleared { sessions: 20 }));
    s.verify().unwrap();
    s.create(NewSession::for_user("u0")).unwrap();
    s.verify().unwrap();
}

#[test]
fn background_reaper_expires_sessions_and_stops_with_the_store() {
    fn reaper_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        std::fs::read_to_string(e.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "sessiondb-reap")
                    })
                    .count()
            })
            .unwrap_or(0)
    }
    let before = reaper_threads();
    let s = Store::in_memory_with(
        Options::default()
            .lifetime(Duration::from_millis(50))
            .reaper_interval(Some(Duration::from_millis(10))),
    )
    .unwrap();
    let rx = s.subscribe();
    let (_t, created) = s.create(NewSession::anonymous()).unwrap();
    // Liveness bound only (no timing assertion): fail rather than hang.
    let ev = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok())
        .find(|e| matches!(e, Event::Ended { .. }))
        .expect("the reaper expired the session");
    assert_eq!(
        ev,
        Event::Ended {
            session: created.id(),
            user: None,
            reason: EndReason::Expired
        }
    );
    assert!(s.is_empty());
    assert!(reaper_threads() > before);
    drop(s);
    assert_eq!(
        reaper_threads(),
        before,
        "the reaper thread is joined on drop"
    );
}

#[test]
fn ids_and_tokens_are_unique_and_unrelated() {
    let (s, _) = store();
    let mut ids = HashSet::new();
    let mut toks = HashSet::new();
    for _ in 0..1000 {
        let (t, sess) = s.create(NewSession::anonymous()).unwrap();
        let ts = t.to_string();
        assert!(!ts.contains(&sess.id().to_string()));
        assert!(ids.insert(sess.id()));
        assert!(toks.insert(ts));
    }
}

// ------------------------------------------------------------------------------------
// Caller-chosen tokens, export and import, exact expiry

#[test]
fn create_with_token_addresses_the_session_by_that_token_and_refuses_a_taken_one() {
    let (s, _) = store();
    let token = Token::from_bytes([7u8; 24]);
    let created = s
        .create_with_token(&token, NewSession::for_user("alice").label("tower"))
        .unwrap();
    assert_eq!(s.get(&token).unwrap().id(), created.id());
    assert_eq!(s.sessions_of("alice").unwrap().len(), 1);
    assert!(matches!(
        s.create_with_token(&token, NewSession::anonymous()),
        Err(Error::Exists { what: "token" })
    ));
    // A rotated-away token still in its grace period is taken too.
    let (old, _) = s.create(NewSession::anonymous()).unwrap();
    s.rotate(&old).unwrap();
    assert!(matches!(
        s.create_with_token(&old, NewSession::anonymous()),
        Err(Error::Exists { .. })
    ));
    // Bad input is refused as by create.
    assert!(matches!(
        s.create_with_token(&Token::from_bytes([8u8; 24]), NewSession::for_user("")),
        Err(Error::InvalidUserId { .. })
    ));
    assert_eq!(s.len(), 2);
    s.verify().unwrap();
}

#[test]
fn export_then_import_moves_sessions_that_answer_to_the_same_tokens() {
    let (from, clock) = store_with(Options::default().idle_timeout(secs(3600)));
    let (a, _) = from
        .create(NewSession::for_user("alice").label("Firefox"))
        .unwrap();
    from.put(&a, "cart", &vec![1u32, 2]).unwrap();
    clock.advance(secs(5));
    let (b, _) = from.create(NewSession::anonymous()).unwrap();
    from.touch(&b).unwrap();
    let mut records = Vec::new();
    assert_eq!(
        from.export(|r| {
            records.push(r);
            Ok(())
        })
        .unwrap(),
        2
    );

    let (to, _clock2) = store_with(Options::default());
    _clock2.set(clock.now());
    for r in records.clone() {
        assert!(to.import(r).unwrap());
    }
    for token in [&a, &b] {
        let (x, y) = (from.peek(token).unwrap(), to.peek(token).unwrap());
        assert_eq!(
            (x.id(), x.user(), x.label(), x.created_at(), x.last_seen()),
            (y.id(), y.user(), y.label(), y.created_at(), y.last_seen())
        );
        assert_eq!(
            (
                x.authenticated_at(),
                x.expires_at(),
                x.idle_timeout(),
                x.version()
            ),
            (
                y.authenticated_at(),
                y.expires_at(),
                y.idle_timeout(),
                y.version()
            )
        );
    }
    assert_eq!(
        to.peek(&a).unwrap().get::<Vec<u32>>("cart").unwrap(),
        Some(vec![1, 2])
    );
    assert_eq!(to.sessions_of("alice").unwrap().len(), 1);
    to.verify().unwrap();

    // Importing again is refused, record by record, and changes nothing.
    for r in records {
        assert!(matches!(to.import(r), Err(Error::Exists { .. })));
    }
    assert_eq!(to.len(), 2);
    to.verify().unwrap();
}

#[test]
fn import_skips_a_session_already_past_its_deadline_and_refuses_a_contradictory_one() {
    let (from, clock) = store();
    let (t, _) = from
        .create(NewSession::anonymous().lifetime(secs(10)))
        .unwrap();
    let mut records = Vec::new();
    from.export(|r| {
        records.push(r);
        Ok(())
    })
    .unwrap();
    let (to, clock2) = store();
    clock2.set(clock.now());
    clock2.advance(secs(11));
    assert!(!to.import(records[0].clone()).unwrap());
    assert!(to.is_empty());

    let (to, _) = store();
    let mut bad = records[0].clone();
    bad.last_seen = Timestamp(bad.created.0 - 1);
    assert!(matches!(to.import(bad), Err(Error::InvalidOption { .. })));
    let mut huge = records[0].clone();
    huge.label = Some("x".repeat(10_000));
    assert!(matches!(to.import(huge), Err(Error::TooLarge { .. })));
    assert!(to.is_empty());
    assert!(from.peek(&t).is_some());
}

#[test]
fn set_expiry_moves_the_deadline_both_ways_and_a_past_one_ends_the_session_as_expired() {
    let (s, clock) = store();
    let events = s.subscribe();
    let (t, _) = s.create(NewSession::anonymous()).unwrap();
    let later = T0.saturating_add(secs(7 * 24 * 3600));
    // The effective deadline is still the earlier of that and the idle deadline.
    let effective = s.set_expiry(&t, later).unwrap();
    assert_eq!(s.peek(&t).unwrap().absolute_deadline(), later);
    assert_eq!(s.peek(&t).unwrap().expires_at(), effective);
    assert!(effective < later);
    let sooner = T0.saturating_add(secs(30));
    s.set_expiry(&t, sooner).unwrap();
    clock.advance(secs(31));
    assert!(s.get(&t).is_none());
    // The timer moved with the deadline: the reaper finds it now.
    assert_eq!(s.reap_expired(), 1);

    let (u, created) = s.create(NewSession::anonymous()).unwrap();
    s.set_expiry(&u, clock.now()).unwrap();
    assert!(s.peek(&u).is_none());
    assert!(matches!(s.set_expiry(&u, later), Err(Error::Ended)));
    let ended: Vec<Event> = events.try_iter().collect();
    assert!(ended.iter().any(|e| matches!(
        e,
        Event::Ended { session, reason: EndReason::Expired, .. } if *session == created.id()
    )));
    s.verify().unwrap();
}

#[test]
fn revoking_a_user_with_hundreds_of_sessions_some_rotated_ends_every_one() {
    let (s, _) = store();
    let mut tokens = Vec::new();
    for i in 0..300 {
        let (t, _) = s.create(NewSession::for_user("many")).unwrap();
        // Every third one rotated: found through the id map at its new token.
        tokens.push(if i % 3 == 0 { s.rotate(&t).unwrap() } else { t });
    }
    let (other, _) = s.create(NewSession::for_user("other")).unwrap();
    assert_eq!(s.revoke_user("many").unwrap(), 300);
    assert!(tokens.iter().all(|t| s.peek(t).is_none()));
    assert!(s.sessions_of("many").unwrap().is_empty());
    assert!(s.peek(&other).is_some());
    assert_eq!(s.len(), 1);
    s.verify().unwrap();
}

#[test]
fn a_login_the_user_limit_refuses_changes_nothing_and_keeps_the_token() {
    let (store, _) =
        store_with(Options::default().max_sessions_per_user(Some(1), LimitPolicy::Refuse));
    store.create(NewSession::for_user("alice")).unwrap();
    let (visitor, _) = store.create(NewSession::anonymous()).unwrap();
    assert!(matches!(
        store.login(&visitor, "alice"),
        Err(Error::UserSessionLimit { max: 1, .. })
    ));
    // The visitor's token is still its current one: it can mint a new token (an old
    // token in its grace period could not).
    let s = store.get(&visitor).expect("still live");
    assert!(s.user().is_none());
    store.rotate(&visitor).unwrap();
}

#[test]
fn stats_count_creates_rotations_logins_ends_by_reason_and_refusals_exactly() {
    let (s, clock) = store_with(
        Options::default()
            .max_sessions_per_user(Some(2), LimitPolicy::Refuse)
            .idle_timeout(secs(60)),
    );
    let st = s.stats();
    assert_eq!(
        (st.created, st.rotated, st.logins, st.ended.total()),
        (0, 0, 0, 0)
    );
    let (a, _) = s.create(NewSession::anonymous()).unwrap();
    let a = s.login(&a, "alice").unwrap(); // a rotation and a login
    let (b, _) = s.create(NewSession::for_user("alice")).unwrap();
    let (c, _) = s.create(NewSession::anonymous()).unwrap();
    let c = s.rotate(&c).unwrap();
    assert_eq!(s.stats().authenticated, 2);
    // Refused: a third session for alice, a bad user id, data past a limit.
    assert!(s.create(NewSession::for_user("alice")).is_err());
    assert!(s.create(NewSession::for_user("")).is_err());
    assert!(s.bind_user(&c, "a\nb").is_err());
    assert!(s.put_raw(&c, "k", &vec![0u8; 1 << 20]).is_err());
    assert!(s.set_label(&c, Some(&"x".repeat(10_000))).is_err());
    // Ended: one logout, one revoke (alice's other), one expiry.
    assert!(s.end(&a).unwrap());
    assert_eq!(s.revoke_user("alice").unwrap(), 1);
    assert!(s.peek(&b).is_none());
    clock.advance(secs(61));
    assert_eq!(s.reap_expired(), 1);
    let st = s.stats();
    assert_eq!(
        (st.created, st.imported, st.rotated, st.logins),
        (3, 0, 2, 1)
    );
    assert_eq!(st.ended.get(EndReason::Ended), 1);
    assert_eq!(st.ended.get(EndReason::Revoked), 1);
    assert_eq!(st.ended.get(EndReason::Expired), 1);
    assert_eq!(st.ended.total(), 3);
    assert_eq!((st.user_limit_refusals, st.bad_input_refusals), (1, 4));
    assert_eq!((st.sessions, st.authenticated), (0, 0));
    // A clear counts what it ended as cleared.
    s.create(NewSession::for_user("bob")).unwrap();
    s.create(NewSession::anonymous()).unwrap();
    assert_eq!(s.clear().unwrap(), 2);
    assert_eq!(s.stats().ended.get(EndReason::Cleared), 2);
    s.verify().unwrap();
    // The Prometheus text carries every one of them.
    let text = s.stats().to_prometheus("test");
    assert!(
        text.contains("sessiondb_sessions_created_total{store=\"test\"} 5\n"),
        "{text}"
    );
    assert!(text.contains("sessiondb_sessions_ended_total{store=\"test\",reason=\"expired\"} 1\n"));
    assert!(text.contains("sessiondb_refusals_total{store=\"test\",cause=\"bad_input\"} 4\n"));
}
