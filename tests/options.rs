//! Every public `Options` setter, and every other public constructor or setter that
//! takes a number or a duration, at the extremes of its type: 0, 1, the largest value
//! its documented range allows and the next one past it, the type's maximum,
//! `Duration::ZERO` / `Duration::MAX`, NaN and the infinities. Each value either opens a
//! store (in memory, and on a directory) that survives a short workload — create, get,
//! put, update, bind, rotate, subscribe, flush, close and reopen — with no panic and no
//! hang, or is refused at open with `Error::InvalidOption` naming the option and
//! stating its allowed range. Nothing in the public API panics on input.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use sessiondb::{
    AddressPrivacy, BackendKind, Durability, Error, LimitPolicy, Limits, ManualClock, NewSession,
    Options, SessionData, Store, Timestamp,
};

/// Runs `f` on a thread of its own and fails the test if it panics or has not returned
/// within `secs` (a hang must fail the test, not stall the suite).
fn within<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(out) => out,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{what}: panicked: {msg}")
            }
        },
        Err(RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s (a hang)"),
    }
}

/// What a case must do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Open and survive the workload.
    Works,
    /// Be refused at open with `Error::InvalidOption` of this name.
    Refused(&'static str),
}

use Expect::{Refused, Works};

struct Case {
    what: String,
    opts: Options,
    /// In memory.
    memory: Expect,
    /// On a directory.
    durable: Expect,
    /// The data limit is below the smallest entry (6 bytes of framing plus a key):
    /// data writes are refused with `TooLarge`, which is the limit working.
    tiny_data: bool,
    /// The clock stands at the end of time: every deadline has passed, so a session is
    /// born expired (and an operation on it answers `Ended`).
    end_of_time: bool,
    /// `Durability::Memory`: a store opened on a directory keeps nothing.
    keeps_nothing: bool,
}

fn case(what: impl Into<String>, opts: Options, expect: Expect) -> Case {
    Case {
        what: what.into(),
        opts,
        memory: expect,
        durable: expect,
        tiny_data: false,
        end_of_time: false,
        keeps_nothing: false,
    }
}

const NS: Duration = Duration::from_nanos(1);
const MS: Duration = Duration::from_millis(1);
const DAY: Duration = Duration::from_secs(86_400);

/// Options with a clock that stands still (at a time like now), so that a session with
/// a 1 ms lifetime lives through the workload; the clock cases set their own.
fn o() -> Options {
    Options::default().clock(ManualClock::new(Timestamp(1_800_000_000_000)))
}

fn limits(f: impl FnOnce(&mut Limits)) -> Options {
    let mut l = Limits::default();
    f(&mut l);
    o().limits(l)
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // lifetime: from 1 ms; anything longer than the clock can count is "never".
    // idle_timeout: 0 (off), or from 1 ms. auth_lifetime: None, or from 1 ms.
    for (d, in_range) in [
        (Duration::ZERO, false),
        (NS, false),
        (MS, true),
        (Duration::MAX, true),
    ] {
        let expect = |name| if in_range { Works } else { Refused(name) };
        v.push(case(
            format!("lifetime {d:?}"),
            o().lifetime(d),
            expect("lifetime"),
        ));
        v.push(case(
            format!("idle {d:?}"),
            o().idle_timeout(d),
            if d.is_zero() {
                Works
            } else {
                expect("idle_timeout")
            },
        ));
        v.push(case(
            format!("auth {d:?}"),
            o().auth_lifetime(Some(d)),
            expect("auth_lifetime"),
        ));
    }
    v.push(case("auth None", o().auth_lifetime(None), Works));
    // touch_interval and rotation_grace: any duration.
    for d in [Duration::ZERO, NS, MS, Duration::MAX] {
        v.push(case(format!("touch {d:?}"), o().touch_interval(d), Works));
        v.push(case(format!("grace {d:?}"), o().rotation_grace(d), Works));
    }
    // max_sessions_per_user: None, or from 1.
    for policy in [LimitPolicy::Refuse, LimitPolicy::EndOldest] {
        v.push(case(
            format!("per user 0 {policy:?}"),
            o().max_sessions_per_user(Some(0), policy),
            Refused("max_sessions_per_user"),
        ));
        for n in [None, Some(1), Some(usize::MAX)] {
            v.push(case(
                format!("per user {n:?} {policy:?}"),
                o().max_sessions_per_user(n, policy),
                Works,
            ));
        }
    }
    // limits: each field from 1 (labels from 0) to its cap.
    type Field = fn(&mut Limits) -> &mut usize;
    let fields: [(&str, Field, usize, usize); 5] = [
        ("limits.max_key_bytes", |l| &mut l.max_key_bytes, 1, 65_535),
        (
            "limits.max_value_bytes",
            |l| &mut l.max_value_bytes,
            1,
            1 << 30,
        ),
        (
            "limits.max_data_bytes",
            |l| &mut l.max_data_bytes,
            1,
            1 << 30,
        ),
        (
            "limits.max_user_id_bytes",
            |l| &mut l.max_user_id_bytes,
            1,
            1 << 16,
        ),
        (
            "limits.max_label_bytes",
            |l| &mut l.max_label_bytes,
            0,
            1 << 16,
        ),
    ];
    for (name, field, min, max) in fields {
        for n in [0, 1, max, max + 1, usize::MAX] {
            let opts = limits(|l| *field(l) = n);
            let expect = if (min..=max).contains(&n) {
                Works
            } else {
                Refused(name)
            };
            let mut c = case(format!("{name} {n}"), opts, expect);
            c.tiny_data = name == "limits.max_data_bytes" && n < 8;
            v.push(c);
        }
    }
    // shards: a power of two from 1 to 65,536.
    for (n, expect) in [
        (0, Refused("shards")),
        (1, Works),
        (3, Refused("shards")),
        (65_536, Works),
        (131_072, Refused("shards")),
        (usize::MAX, Refused("shards")),
    ] {
        v.push(case(format!("shards {n}"), o().shards(n), expect));
    }
    // reaper_interval: None, or from 1 ms.
    for (d, expect) in [
        (None, Works),
        (Some(Duration::ZERO), Refused("reaper_interval")),
        (Some(NS), Refused("reaper_interval")),
        (Some(MS), Works),
        (Some(Duration::MAX), Works),
    ] {
        v.push(case(
            format!("reaper {d:?}"),
            o().reaper_interval(d),
            expect,
        ));
    }
    // event_capacity: 1 to 2^20.
    for (n, expect) in [
        (0, Refused("event_capacity")),
        (1, Works),
        (1 << 20, Works),
        ((1 << 20) + 1, Refused("event_capacity")),
        (1 << 46, Refused("event_capacity")),
        (usize::MAX, Refused("event_capacity")),
    ] {
        v.push(case(format!("events {n}"), o().event_capacity(n), expect));
    }
    // clock: any time at all.
    for t in [Timestamp(0), Timestamp(1), Timestamp::MAX] {
        let mut c = case(
            format!("clock at {t:?}"),
            o().clock(ManualClock::new(t)),
            Works,
        );
        c.end_of_time = t == Timestamp::MAX;
        v.push(c);
    }
    // durability: Buffered flushes every 1 ms to 1 day.
    v.push(case("sync", o().durability(Durability::Sync), Works));
    let mut memory = case("memory", o().durability(Durability::Memory), Works);
    memory.keeps_nothing = true;
    v.push(memory);
    for (d, expect) in [
        (Duration::ZERO, Refused("durability.flush_every")),
        (NS, Refused("durability.flush_every")),
        (MS, Works),
        (DAY, Works),
        (DAY + NS, Refused("durability.flush_every")),
        (Duration::MAX, Refused("durability.flush_every")),
    ] {
        v.push(case(
            format!("buffered {d:?}"),
            o().durability(Durability::Buffered { flush_every: d }),
            expect,
        ));
    }
    // backend: sled needs its cargo feature (an in-memory store has no backend).
    v.push(case("log backend", o().backend(BackendKind::Log), Works));
    let mut sled = case("sled backend", o().backend(BackendKind::Sled), Works);
    if !cfg!(feature = "sled") {
        sled.durable = Refused("backend");
    }
    v.push(sled);
    v.push(case("salvage", o().salvage(true), Works));
    // segment_bytes: from 4096.
    for (n, expect) in [
        (0, Refused("segment_bytes")),
        (1, Refused("segment_bytes")),
        (4095, Refused("segment_bytes")),
        (4096, Works),
        (u64::MAX, Works),
    ] {
        v.push(case(format!("segment {n}"), o().segment_bytes(n), expect));
    }
    // compaction: any threshold; growth a finite number from 1.0.
    for auto in [true, false] {
        for min in [0, 1, u64::MAX] {
            v.push(case(
                format!("compaction {auto} {min}"),
                o().compaction(auto, min, 2.0),
                Works,
            ));
        }
        for (g, expect) in [
            (f64::NAN, Refused("compaction.growth")),
            (f64::INFINITY, Refused("compaction.growth")),
            (f64::NEG_INFINITY, Refused("compaction.growth")),
            (-0.0, Refused("compaction.growth")),
            (0.0, Refused("compaction.growth")),
            (f64::MIN_POSITIVE, Refused("compaction.growth")),
            (0.999, Refused("compaction.growth")),
            (1.0, Works),
            (f64::MAX, Works),
        ] {
            v.push(case(
                format!("compaction {auto} growth {g}"),
                o().compaction(auto, 0, g),
                expect,
            ));
        }
    }
    let long = "x".repeat(64);
    let too_long = "x".repeat(65);
    for (label, expect) in [
        ("", Refused("metrics_label")),
        ("web 1", Refused("metrics_label")),
        ("web\"", Refused("metrics_label")),
        ("été", Refused("metrics_label")),
        (too_long.as_str(), Refused("metrics_label")),
        (long.as_str(), Works),
        ("web-1.eu_west", Works),
    ] {
        v.push(case(
            format!("metrics_label {label:?}"),
            o().metrics_label(label),
            expect,
        ));
    }
    for level in [0, 1, u8::MAX] {
        for d in [Duration::ZERO, Duration::from_millis(1), Duration::MAX] {
            v.push(case(
                format!("level_lifetime {level} {d:?}"),
                o().level_lifetime(level, d),
                Works,
            ));
        }
    }
    for p in [
        AddressPrivacy::Truncated,
        AddressPrivacy::Full,
        AddressPrivacy::Omit,
    ] {
        v.push(case(format!("{p:?}"), o().address_privacy(p), Works));
    }
    v
}

/// `r` is a success, or the refusal a deliberately tiny limit calls for.
fn fine<T>(what: &str, c: &Case, r: Result<T, Error>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Error::TooLarge { .. }) if c.tiny_data => None,
        Err(e) => panic!("{}: {what}: {e:?}", c.what),
    }
}

/// A short run of everything a store does, on a store opened with the case's options.
/// Returns how many sessions should survive a reopen.
fn workload(store: &Store, c: &Case, durable: bool) -> usize {
    let events = store.subscribe();
    let (token, _) = store.create(NewSession::for_user("u")).unwrap();
    let (anon, _) = store.create(NewSession::anonymous()).unwrap();
    let live = store.get(&token).is_some();
    assert_eq!(live, !c.end_of_time, "{}", c.what);
    if !live {
        assert!(matches!(store.put(&token, "k", &1u8), Err(Error::Ended)));
        assert!(matches!(store.touch(&token), Err(Error::Ended)));
        store.reap_expired();
        store.flush().unwrap();
        store.verify().unwrap();
        assert!(events.try_iter().count() > 0, "{}", c.what);
        return 0;
    }
    let v = fine("put", c, store.put_raw(&token, "k", b"v"));
    assert_eq!(v, (!c.tiny_data).then_some(1), "{}", c.what);
    fine(
        "update",
        c,
        store.update(&token, |d: &mut SessionData| d.insert_raw("k", b"w")),
    );
    let mut data = SessionData::new();
    data.insert_raw("x", b"y").unwrap();
    let version = store.peek(&token).unwrap().version();
    fine("save", c, store.save(&token, version, &data));
    store.bind_user(&anon, "w").unwrap();
    let anon = store.rotate(&anon).unwrap();
    assert_eq!(store.unbind_user(&anon).unwrap().unwrap().as_str(), "w");
    store.extend(&token, Duration::from_secs(1)).unwrap();
    store.touch(&token).unwrap();
    store.set_label(&token, Some("")).unwrap();
    store.open_instance(&token).unwrap();
    assert!(store.sessions_of("u").unwrap().len() == 1);
    store.reap_expired();
    store.flush().unwrap();
    if durable {
        store.compact().unwrap();
    }
    store.verify().unwrap();
    assert!(store.end(&anon).unwrap());
    assert!(events.try_iter().count() > 0, "{}", c.what);
    let _ = store.stats();
    store.len()
}

fn check_refusal(c: &Case, r: Result<Store, Error>, name: &'static str, where_: &str) {
    match r {
        Err(Error::InvalidOption { name: got, reason }) => {
            assert_eq!(
                got, name,
                "{} ({where_}): refused as {got}: {reason}",
                c.what
            );
            assert!(!reason.is_empty(), "{}: no reason", c.what);
            let message = Error::InvalidOption { name: got, reason }.to_string();
            assert!(message.contains(name), "{message}");
        }
        Err(e) => panic!(
            "{} ({where_}): expected InvalidOption {name}, got {e:?}",
            c.what
        ),
        Ok(_) => panic!(
            "{} ({where_}): expected InvalidOption {name}, but it opened",
            c.what
        ),
    }
}

fn run(c: Case) {
    let what = c.what.clone();
    within(&what, 60, move || {
        match c.memory {
            Works => {
                let store = Store::in_memory_with(c.opts.clone())
                    .unwrap_or_else(|e| panic!("{}: in memory: {e:?}", c.what));
                workload(&store, &c, false);
                store.close().unwrap();
            }
            Refused(name) => {
                check_refusal(&c, Store::in_memory_with(c.opts.clone()), name, "memory")
            }
        }
        let dir = tempfile::tempdir().unwrap();
        match c.durable {
            Works => {
                let store = Store::open_with(dir.path(), c.opts.clone())
                    .unwrap_or_else(|e| panic!("{}: on a directory: {e:?}", c.what));
                let left = workload(&store, &c, !c.keeps_nothing);
                store.close().unwrap();
                let store = Store::open_with(dir.path(), c.opts.clone())
                    .unwrap_or_else(|e| panic!("{}: reopening: {e:?}", c.what));
                if !c.keeps_nothing {
                    assert_eq!(store.len(), left, "{}: after a reopen", c.what);
                }
                store.verify().unwrap();
                store.close().unwrap();
            }
            Refused(name) => check_refusal(
                &c,
                Store::open_with(dir.path(), c.opts.clone()),
                name,
                "directory",
            ),
        }
    });
}

#[test]
fn every_option_at_the_extremes_of_its_type_works_or_is_refused_by_name() {
    for c in cases() {
        run(c);
    }
}

#[test]
fn defaults_are_inside_every_range() {
    run(case("defaults", Options::default(), Works));
}

/// Issue 18, defect 6: `flush_every: Duration::MAX` was accepted, the writer thread
/// panicked computing its next tick, and the next flush hung.
#[test]
fn buffered_flush_every_max_is_refused_or_flushes() {
    within("flush_every MAX", 30, || {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options::default().durability(Durability::Buffered {
            flush_every: Duration::MAX,
        });
        match Store::open_with(dir.path(), opts) {
            Err(Error::InvalidOption { name, .. }) => assert_eq!(name, "durability.flush_every"),
            Err(e) => panic!("{e:?}"),
            Ok(store) => {
                store.create(NewSession::anonymous()).unwrap();
                store.flush().unwrap();
                store.close().unwrap();
            }
        }
    });
}

/// Issue 18, defect 7: `event_capacity(usize::MAX)` was accepted and `subscribe`
/// panicked ("bounded channel capacity is too large").
#[test]
fn event_capacity_max_is_refused_or_subscribes() {
    within("event_capacity MAX", 30, || {
        match Store::in_memory_with(Options::default().event_capacity(usize::MAX)) {
            Err(Error::InvalidOption { name, .. }) => assert_eq!(name, "event_capacity"),
            Err(e) => panic!("{e:?}"),
            Ok(store) => drop(store.subscribe()),
        }
    });
}

/// Issue 18, defect 8: `event_capacity(1 << 46)` was accepted and `subscribe` aborted
/// the process, allocating the channel's ~3 PB up front.
#[test]
fn event_capacity_in_the_petabytes_is_refused_or_subscribes() {
    within("event_capacity 2^46", 30, || {
        match Store::in_memory_with(Options::default().event_capacity(1 << 46)) {
            Err(Error::InvalidOption { name, .. }) => assert_eq!(name, "event_capacity"),
            Err(e) => panic!("{e:?}"),
            Ok(store) => drop(store.subscribe()),
        }
    });
}

/// `NewSession`'s durations and the deadline setters of a live session, at the
/// extremes: a typed refusal or a deadline that saturates at "never".
#[test]
fn session_durations_and_deadlines_at_the_extremes_work_or_are_refused() {
    within("session durations", 60, || {
        let clock = ManualClock::new(Timestamp(1_800_000_000_000));
        let store = Store::in_memory_with(
            Options::default()
                .clock(clock.clone())
                .reaper_interval(None),
        )
        .unwrap();
        for (d, ok) in [
            (Duration::ZERO, false),
            (NS, false),
            (Duration::from_micros(999), false),
            (MS, true),
            (Duration::MAX, true),
        ] {
            let r = store.create(NewSession::anonymous().lifetime(d));
            match (ok, r) {
                (true, Ok((t, s))) => {
                    assert!(store.get(&t).is_some(), "lifetime {d:?}");
                    if d == Duration::MAX {
                        assert_eq!(s.absolute_deadline(), Timestamp::MAX);
                    }
                }
                (false, Err(Error::InvalidOption { name, .. })) => {
                    assert_eq!(name, "NewSession::lifetime");
                }
                (_, r) => panic!("lifetime {d:?}: {:?}", r.map(|(_, s)| s)),
            }
            let r = store.create(NewSession::anonymous().idle_timeout(d));
            match (ok || d.is_zero(), r) {
                (true, Ok((t, s))) => {
                    assert!(store.get(&t).is_some(), "idle {d:?}");
                    assert_eq!(
                        s.idle_timeout(),
                        (!d.is_zero()).then(|| {
                            Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                        })
                    );
                }
                (false, Err(Error::InvalidOption { name, .. })) => {
                    assert_eq!(name, "NewSession::idle_timeout");
                }
                (_, r) => panic!("idle {d:?}: {:?}", r.map(|(_, s)| s)),
            }
        }
        let (t, _) = store.create(NewSession::anonymous()).unwrap();
        for by in [Duration::ZERO, NS, MS, Duration::MAX] {
            store.extend(&t, by).unwrap();
        }
        assert_eq!(store.peek(&t).unwrap().absolute_deadline(), Timestamp::MAX);
        for at in [
            Timestamp::MAX,
            Timestamp(u64::MAX - 1),
            Timestamp(1_900_000_000_000),
        ] {
            assert_eq!(
                store.set_expiry(&t, at).unwrap(),
                store.peek(&t).unwrap().expires_at()
            );
        }
        assert_eq!(store.set_expiry(&t, Timestamp(0)).unwrap(), Timestamp(0));
        assert!(store.get(&t).is_none());
        store.verify().unwrap();
    });
}

/// The clock and `Timestamp`: a clock moved to the end of time, and every public
/// `Timestamp` method at its extremes.
#[test]
fn the_clock_and_timestamps_at_the_extremes_never_panic() {
    within("clock extremes", 60, || {
        let clock = ManualClock::new(Timestamp(0));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), Options::default().clock(clock.clone())).unwrap();
        let (t, _) = store.create(NewSession::for_user("u")).unwrap();
        let (forever, _) = store
            .create(
                NewSession::anonymous()
                    .lifetime(Duration::MAX)
                    .idle_timeout(Duration::ZERO),
            )
            .unwrap();
        clock.advance(Duration::MAX);
        assert_eq!(
            sessiondb::Clock::now(&clock),
            Timestamp::MAX,
            "advance saturates"
        );
        assert!(store.get(&t).is_none());
        assert!(
            store.get(&forever).is_none(),
            "the end of time is past every deadline"
        );
        store.reap_expired();
        let (late, _) = store.create(NewSession::anonymous()).unwrap();
        assert!(store.get(&late).is_none());
        // A clock stepping back: `late` (deadline Timestamp::MAX, not reaped yet) is
        // before its deadline again; the others were reaped.
        clock.set(Timestamp(u64::MAX - 1));
        store.reap_expired();
        assert!(store.peek(&late).is_some());
        store.flush().unwrap();
        store.verify().unwrap();
        store.close().unwrap();
        let store = Store::open_with(dir.path(), Options::default().clock(clock.clone())).unwrap();
        assert_eq!(store.len(), 1);
        store.close().unwrap();

        for t in [
            Timestamp(0),
            Timestamp(1),
            Timestamp(u64::MAX - 1),
            Timestamp::MAX,
        ] {
            let _ = t.to_system_time();
            let _ = t.to_string();
            let _ = format!("{t:?}");
            let _ = t.as_millis();
            for d in [Duration::ZERO, NS, MS, Duration::MAX] {
                assert!(t.saturating_add(d) >= t);
            }
            for e in [Timestamp(0), Timestamp::MAX] {
                let _ = t.saturating_since(e);
            }
        }
        assert_eq!(Timestamp(5).saturating_add(Duration::MAX), Timestamp::MAX);
    });
}

/// A `SessionRecord` (public fields, so any values) with every time at the end of time
/// and the longest idle timeout: imported, written to the log, read back after a reopen.
#[test]
fn a_record_at_the_end_of_time_imports_and_survives_a_reopen() {
    within("end-of-time import", 60, || {
        let dir = tempfile::tempdir().unwrap();
        let opts = || o().reaper_interval(None);
        let store = Store::open_with(dir.path(), opts()).unwrap();
        let (t, s) = store.create(NewSession::for_user("u")).unwrap();
        let mut rec = None;
        store
            .export(|r| {
                rec = Some(r);
                Ok(())
            })
            .unwrap();
        assert!(store.end(&t).unwrap());
        let max = Timestamp::MAX;
        let rec = sessiondb::SessionRecord {
            created: max,
            last_seen: max,
            authenticated: Some(max),
            absolute: max,
            idle_timeout: Some(Duration::MAX),
            ..rec.unwrap()
        };
        assert!(store.import(rec).unwrap());
        let got = store
            .get(&t)
            .expect("live: its deadlines are all at the end of time");
        assert_eq!((got.id(), got.expires_at()), (s.id(), max));
        store.put(&t, "k", &1u8).unwrap();
        store.reap_expired();
        store.close().unwrap();
        let store = Store::open_with(dir.path(), opts()).unwrap();
        assert_eq!(store.get(&t).unwrap().get::<u8>("k").unwrap(), Some(1));
        store.verify().unwrap();
        store.close().unwrap();
    });
}

#[test]
fn sled_refuses_a_file_system_other_than_the_operating_systems() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .backend(BackendKind::Sled)
        .file_system(sessiondb::vfs::SimFs::new(1));
    match Store::open_with(dir.path(), opts) {
        Err(Error::InvalidOption { name, reason }) => {
            assert_eq!(name, "backend");
            assert!(reason.contains("Options::file_system"), "{reason}");
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    // The log on the same simulated disk opens, and holds what it is given.
    let disk = sessiondb::vfs::SimFs::new(1);
    let store = Store::open_with("/sim", Options::default().file_system(disk.clone())).unwrap();
    let (t, _) = store.create(NewSession::anonymous()).unwrap();
    store.close().unwrap();
    let store = Store::open_with("/sim", Options::default().file_system(disk)).unwrap();
    assert!(store.get(&t).is_some());
    assert!(
        !std::path::Path::new("/sim").exists(),
        "nothing on the real disk"
    );
}
