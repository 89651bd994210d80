//! A base, read in two halves: damage in either is still caught.

use std::collections::BTreeMap;
use std::fs;

use sessiondb::{Durability, Error, ManualClock, NewSession, SessionData, SessionId, Store};

use crate::helpers::{T0, bases, open, opts};

/// A base is decoded on two threads, split at the frame nearest its middle: damage in
/// either half, or a base cut short, is still `Error::Corrupt` at or before the damaged
/// byte, and an undamaged base brings back every session and every user's list.
#[test]
fn damage_in_either_half_of_a_base_is_corrupt() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut by_user: BTreeMap<String, Vec<SessionId>> = BTreeMap::new();
    // Over 8 MiB, so the base is also read by two threads.
    let filler = "x".repeat(1500);
    {
        let store = open(dir.path(), opts(&clock, Durability::default()));
        for i in 0..6000 {
            let user = format!("user-{}", i % 37);
            let mut data = SessionData::new();
            data.insert("filler", filler.as_str()).unwrap();
            let (_, s) = store
                .create(NewSession::for_user(user.clone()).data(data))
                .unwrap();
            by_user.entry(user).or_default().push(s.id());
        }
        store.create(NewSession::anonymous()).unwrap();
        store.compact().unwrap();
    }
    let base = bases(dir.path())[0].clone();
    let clean = fs::read(&base).unwrap();
    {
        let store = open(dir.path(), opts(&clock, Durability::Sync));
        assert_eq!(store.recovery_report().sessions, 6001);
        assert!(clean.len() > 8 << 20, "a base of {} bytes", clean.len());
        for (user, ids) in &by_user {
            let mut found: Vec<String> = store
                .sessions_of(user)
                .unwrap()
                .iter()
                .map(|s| s.id().to_string())
                .collect();
            let mut want: Vec<String> = ids.iter().map(ToString::to_string).collect();
            found.sort();
            want.sort();
            assert_eq!(found, want, "{user}");
        }
    }
    for at in [clean.len() / 4, clean.len() / 2 + 7, clean.len() * 3 / 4] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x55;
        fs::write(&base, &bytes).unwrap();
        match Store::open_with(dir.path(), opts(&clock, Durability::Sync)) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment, base);
                assert!(
                    offset <= at as u64,
                    "offset {offset} past the damage at {at}"
                );
                assert!(at as u64 - offset < 4096, "offset {offset} far before {at}");
            }
            Err(e) => panic!("damage at {at}: expected Corrupt, got {e}"),
            Ok(_) => panic!("damage at {at}: a damaged base was opened"),
        }
    }
    fs::write(&base, &clean[..clean.len() - 10]).unwrap();
    assert!(matches!(
        Store::open_with(dir.path(), opts(&clock, Durability::Sync)),
        Err(Error::Corrupt { .. })
    ));
}
