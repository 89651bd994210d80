//! How a session signed in and what device it is are durable like the rest of a
//! session: they survive a reopen and a compaction on every storage backend, a login or
//! logout that clears them is replayed as such, and a crash in the middle of a
//! `login_with` or `step_up` never leaves the old token at a higher level than it had —
//! only the new one at a lower level than asked.

use std::fs;
use std::net::IpAddr;

use sessiondb::{Device, Durability, ManualClock, NewSession, Session, SignIn, Store, Token};

use crate::helpers::{T0, backends, crash_image, frame_boundaries, last_segment, open, opts, secs};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What a test compares of a session: its factors (method, level, ms), level, user
/// agent and address.
type How = (Vec<(String, u8, u64)>, u8, Option<String>, Option<IpAddr>);

fn how(s: &Session) -> How {
    (
        s.factors()
            .iter()
            .map(|f| (f.method().to_owned(), f.level(), f.at().as_millis()))
            .collect(),
        s.level(),
        s.user_agent().map(str::to_owned),
        s.address(),
    )
}

/// [`how`] of each of `tokens`' sessions (all live).
fn how_all(store: &Store, tokens: &[Token]) -> Vec<How> {
    tokens
        .iter()
        .map(|t| how(&store.peek(t).unwrap()))
        .collect()
}

/// Sessions in every state the new records put them in, with what each should read.
fn sessions(store: &Store, clock: &ManualClock) -> Vec<Token> {
    let firefox = Device::new().user_agent("Firefox").address(ip("192.0.2.7"));
    // Created with both (one IMAGE_X record).
    let (a, _) = store
        .create(
            NewSession::for_user("alice")
                .label("laptop")
                .signed_in(SignIn::with("password").and("otp").level(2))
                .device(firefox.clone()),
        )
        .unwrap();
    clock.advance(secs(1));
    // Logged in with a method, stepped up, seen from elsewhere.
    let (v, _) = store.create(NewSession::anonymous()).unwrap();
    let b = store
        .login_with(&v, "bob", SignIn::with("password"))
        .unwrap();
    clock.advance(secs(1));
    let b = store
        .step_up(&b, SignIn::with("webauthn").level(3))
        .unwrap();
    assert!(store.seen_from(&b, &firefox).unwrap());
    // Logged in with a method, then plainly: no factors.
    let (v, _) = store.create(NewSession::anonymous()).unwrap();
    let c = store.login_with(&v, "carol", SignIn::with("sms")).unwrap();
    let c = store.login(&c, "carol").unwrap();
    // Logged in with a method, then logged out: no factors, the device kept.
    let (v, _) = store
        .create(NewSession::anonymous().device(Device::new().user_agent("curl/8")))
        .unwrap();
    let d = store.login_with(&v, "dave", SignIn::with("otp")).unwrap();
    store.unbind_user(&d).unwrap();
    vec![a, b, c, d]
}

#[test]
fn factors_and_devices_survive_reopen_and_compaction_on_every_backend() {
    for (backend, name) in backends() {
        let clock = ManualClock::new(T0);
        let dir = tempfile::tempdir().unwrap();
        let o = || opts(&clock, Durability::Sync).backend(backend);
        let store = open(dir.path(), o());
        let tokens = sessions(&store, &clock);
        let before = how_all(&store, &tokens);
        assert_eq!(before[0].0.len(), 2, "{name}");
        assert_eq!((before[1].1, before[1].0.len()), (3, 2), "{name}");
        assert!(before[2].0.is_empty() && before[3].0.is_empty(), "{name}");
        assert_eq!(before[3].2.as_deref(), Some("curl/8"), "{name}");
        drop(store);
        let store = open(dir.path(), o());
        let after = how_all(&store, &tokens);
        assert_eq!(after, before, "{name}: reopened");
        assert_eq!(store.peek(&tokens[0]).unwrap().label(), Some("laptop"));
        store.verify().unwrap();
        if name == "log" {
            store.compact().unwrap();
            drop(store);
            let store = open(dir.path(), o());
            let compacted = how_all(&store, &tokens);
            assert_eq!(compacted, before, "{name}: compacted");
            store.verify().unwrap();
        }
    }
}

/// Cuts the last segment of the crash image in `image` right after its last record of
/// type `kind` (if `after`), or right before it.
fn cut_at(image: &std::path::Path, kind: u8, after: bool) {
    let seg = last_segment(image);
    let bytes = fs::read(&seg).unwrap();
    let frames = frame_boundaries(&bytes);
    let w = frames
        .windows(2)
        .rev()
        .find(|w| bytes[w[0] + 8] == kind)
        .unwrap_or_else(|| panic!("no record of type {kind}"));
    fs::write(&seg, &bytes[..if after { w[1] } else { w[0] }]).unwrap();
}

/// `login_with` writes ROTATE, BIND, SIGN_IN; `step_up` ROTATE, SIGN_IN. Cut after
/// each prefix: the new token (if it exists) is never at a higher level than asked, and
/// the old token is never at a higher level than it had.
#[test]
fn a_crash_inside_a_login_or_step_up_never_elevates_the_old_token() {
    const ROTATE: u8 = 8;
    const BIND: u8 = 5;
    const SIGN_IN: u8 = 15;
    let clock = ManualClock::new(T0);
    // Login: visitor → alice at level 2.
    for (cut, after) in [(ROTATE, true), (BIND, true), (SIGN_IN, false)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), opts(&clock, Durability::Sync));
        let (v, _) = store.create(NewSession::anonymous()).unwrap();
        let t = store
            .login_with(&v, "alice", SignIn::with("otp").level(2))
            .unwrap();
        let image = tempfile::tempdir().unwrap();
        crash_image(dir.path(), image.path());
        drop(store);
        cut_at(image.path(), cut, after);
        let store = open(image.path(), opts(&clock, Durability::Sync));
        for token in [&v, &t] {
            if let Some(s) = store.peek(token) {
                assert_eq!(s.level(), 0, "cut at {cut}: elevated before its sign-in");
                assert!(s.factors().is_empty());
            }
        }
        store.verify().unwrap();
    }
    // Step-up: alice at level 1 → level 3.
    for (cut, after) in [(ROTATE, false), (ROTATE, true)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), opts(&clock, Durability::Sync));
        let (t, _) = store
            .create(NewSession::for_user("alice").signed_in(SignIn::with("password")))
            .unwrap();
        let up = store
            .step_up(&t, SignIn::with("webauthn").level(3))
            .unwrap();
        let image = tempfile::tempdir().unwrap();
        crash_image(dir.path(), image.path());
        drop(store);
        cut_at(image.path(), cut, after);
        let store = open(image.path(), opts(&clock, Durability::Sync));
        let old = store.peek(&t);
        let new = store.peek(&up);
        if after {
            // Rotated, not yet stepped up: the new token at the old level.
            assert_eq!(new.unwrap().level(), 1);
        } else {
            assert!(new.is_none());
            assert_eq!(old.unwrap().level(), 1);
        }
        store.verify().unwrap();
    }
}
