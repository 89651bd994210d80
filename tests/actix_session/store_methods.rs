//! The `SessionStore` methods themselves, as actix-session's Redis and cookie stores
//! test theirs (missing keys, bad state, updates of gone sessions), plus what sessiondb
//! adds: ending is final, TTLs are exact, data is durable; and a measurement of their
//! throughput, written directly or offloaded.

use std::time::{Duration, Instant};

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time;
use sessiondb::actix_session::{KEY_ENTRY, SessionDbStore};
use sessiondb::{Durability, Limits, Options, Store, Token};

use crate::helpers::{fixture, fixture_with};

fn key(s: &str) -> SessionKey {
    s.to_owned().try_into().unwrap()
}

fn state(entries: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[actix_web::test]
async fn loading_a_missing_or_foreign_key_finds_no_session() {
    let f = fixture();
    let fresh = Token::generate().unwrap().as_string();
    assert!(f.store.load(&key(&fresh)).await.unwrap().is_none());
    // actix-session's own key format (64 alphanumerics), garbage, and a near-token.
    let actix_style = "a".repeat(64);
    assert!(f.store.load(&key(&actix_style)).await.unwrap().is_none());
    assert!(f.store.load(&key("")).await.unwrap().is_none());
    let mut near = fresh.clone();
    near.push('A');
    assert!(f.store.load(&key(&near)).await.unwrap().is_none());
}

#[actix_web::test]
async fn a_saved_state_loads_back_with_the_key_entry_added_and_nothing_else() {
    let f = fixture();
    let s = state(&[
        ("counter", "100"),
        ("user", "\"ferris\""),
        ("nested", "{\"a\":[1,null]}"),
    ]);
    let k = f
        .store
        .save(s.clone(), &time::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(k.as_ref().len(), sessiondb::TOKEN_STR_LEN);
    let token = Token::parse(k.as_ref()).unwrap();
    let mut loaded = f.store.load(&k).await.unwrap().unwrap();
    assert_eq!(
        loaded.remove(KEY_ENTRY),
        Some(format!("\"{}\"", k.as_ref()))
    );
    assert_eq!(loaded, s);
    // In the engine: one data key per entry, and never the key entry.
    let engine = f.store.engine().peek(&token).unwrap();
    let mut keys: Vec<&str> = engine.data().keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a:counter", "a:nested", "a:user"]);
    assert!(engine.user().is_none());
}

#[actix_web::test]
async fn a_state_that_is_not_text_is_a_deserialization_error() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("k", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    let token = Token::parse(k.as_ref()).unwrap();
    f.store
        .engine()
        .put_raw(&token, "a:k", b"\xff\xfe")
        .unwrap();
    assert!(matches!(
        f.store.load(&k).await.unwrap_err(),
        LoadError::Deserialization(_)
    ));
}

/// actix-session's Redis store test `loading_an_invalid_session_state_returns_
/// deserialization_error`, entry by entry: a value that is not JSON (written by another
/// program, or damaged) fails the load, never reaches the app as a string.
#[actix_web::test]
async fn a_state_entry_that_is_not_json_is_a_deserialization_error() {
    let f = fixture();
    let k = f
        .store
        .save(
            state(&[("user", "\"ferris\""), ("n", "1")]),
            &time::Duration::hours(1),
        )
        .await
        .unwrap();
    let token = Token::parse(k.as_ref()).unwrap();
    for foreign in [
        &b"random-thing-which-is-not-json"[..],
        b"",
        b"{\"a\":",
        b"1 2",
        b"\"unterminated",
    ] {
        f.store.engine().put_raw(&token, "a:n", foreign).unwrap();
        let e = f.store.load(&k).await.unwrap_err();
        assert!(
            matches!(e, LoadError::Deserialization(_)),
            "{:?}: {e:?}",
            String::from_utf8_lossy(foreign)
        );
    }
    // Every JSON value loads back as written, whitespace included.
    for json in [
        "null",
        "true",
        " 12.5e3 ",
        "[1,{\"x\":\"y\"}]",
        "\"\\u00e9\"",
    ] {
        f.store
            .engine()
            .put_raw(&token, "a:n", json.as_bytes())
            .unwrap();
        let loaded = f.store.load(&k).await.unwrap().unwrap();
        assert_eq!(loaded.get("n").map(String::as_str), Some(json));
    }
}

#[actix_web::test]
async fn an_update_replaces_the_whole_state_and_keeps_the_key() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1"), ("b", "2")]), &time::Duration::hours(1))
        .await
        .unwrap();
    let k2 = f
        .store
        .update(
            key(k.as_ref()),
            state(&[("b", "3"), ("c", "4")]),
            &time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(k2, k);
    let mut loaded = f.store.load(&k).await.unwrap().unwrap();
    loaded.remove(KEY_ENTRY);
    assert_eq!(loaded, state(&[("b", "3"), ("c", "4")]));
}

#[actix_web::test]
async fn deleting_is_final_a_later_update_or_ttl_refresh_does_not_resurrect() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    f.store.delete(&k).await.unwrap();
    assert!(f.store.load(&k).await.unwrap().is_none());
    let back = f
        .store
        .update(
            key(k.as_ref()),
            state(&[("a", "2")]),
            &time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(back, k, "nothing new is created for a gone session");
    f.store
        .update_ttl(&k, &time::Duration::hours(1))
        .await
        .unwrap();
    assert!(f.store.load(&k).await.unwrap().is_none());
    assert_eq!(f.store.engine().len(), 0);
    // Deleting twice, or a key that was never issued, is fine.
    f.store.delete(&k).await.unwrap();
    f.store.delete(&key("not a token")).await.unwrap();
}

#[actix_web::test]
async fn an_update_of_an_expired_session_is_handled_gracefully_and_stores_nothing() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::seconds(10))
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(10));
    let back = f
        .store
        .update(
            key(k.as_ref()),
            state(&[("a", "2")]),
            &time::Duration::seconds(10),
        )
        .await
        .unwrap();
    assert_eq!(back, k);
    assert!(f.store.load(&k).await.unwrap().is_none());
    assert_eq!(
        f.store.engine().reap_expired(),
        1,
        "still the expired one, unrevived"
    );
    assert_eq!(f.store.engine().len(), 0);
    let never = Token::generate().unwrap().as_string();
    let back = f
        .store
        .update(
            key(&never),
            state(&[("a", "1")]),
            &time::Duration::seconds(10),
        )
        .await
        .unwrap();
    assert_eq!(back.as_ref(), never);
    assert_eq!(f.store.engine().len(), 0);
}

#[actix_web::test]
async fn the_ttl_is_the_exact_deadline_and_update_ttl_extends_it() {
    let f = fixture();
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::seconds(10))
        .await
        .unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert!(f.store.load(&k).await.unwrap().is_some());
    f.store
        .update_ttl(&k, &time::Duration::seconds(10))
        .await
        .unwrap();
    f.clock.advance(Duration::from_millis(9_999));
    assert!(
        f.store.load(&k).await.unwrap().is_some(),
        "extended to now + 10 s"
    );
    f.clock.advance(Duration::from_millis(1));
    assert!(
        f.store.load(&k).await.unwrap().is_none(),
        "gone at the deadline"
    );
    // An update may also shorten it, as Redis' EX would.
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    f.store
        .update(
            key(k.as_ref()),
            state(&[("a", "2")]),
            &time::Duration::seconds(1),
        )
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(f.store.load(&k).await.unwrap().is_none());
}

#[actix_web::test]
async fn a_ttl_of_zero_or_less_is_refused() {
    let f = fixture();
    assert!(matches!(
        f.store
            .save(state(&[("a", "1")]), &time::Duration::ZERO)
            .await,
        Err(SaveError::Other(_))
    ));
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .update(key(k.as_ref()), state(&[]), &time::Duration::seconds(-1))
            .await,
        Err(UpdateError::Other(_))
    ));
    assert!(f.store.update_ttl(&k, &time::Duration::ZERO).await.is_err());
    assert_eq!(f.store.engine().len(), 1);
    assert!(
        f.store.load(&k).await.unwrap().is_some(),
        "unchanged by the refusals"
    );
}

#[actix_web::test]
async fn a_state_past_the_limits_is_a_serialization_error() {
    let f = fixture_with(|o| {
        o.limits(Limits {
            max_value_bytes: 64,
            ..Limits::default()
        })
    });
    let big = "x".repeat(100);
    assert!(matches!(
        f.store
            .save(state(&[("big", &big)]), &time::Duration::hours(1))
            .await,
        Err(SaveError::Serialization(_))
    ));
    let k = f
        .store
        .save(state(&[("a", "1")]), &time::Duration::hours(1))
        .await
        .unwrap();
    assert!(matches!(
        f.store
            .update(
                key(k.as_ref()),
                state(&[("big", &big)]),
                &time::Duration::hours(1)
            )
            .await,
        Err(UpdateError::Serialization(_))
    ));
    let mut loaded = f.store.load(&k).await.unwrap().unwrap();
    loaded.remove(KEY_ENTRY);
    assert_eq!(loaded, state(&[("a", "1")]));
}

#[actix_web::test]
async fn sessions_survive_a_reopen_under_sync_durability() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().durability(Durability::Sync);
    let k = {
        let store = SessionDbStore::new(Store::open_with(dir.path(), opts()).unwrap());
        let k = store
            .save(state(&[("a", "1")]), &time::Duration::hours(1))
            .await
            .unwrap();
        store
            .update(
                key(k.as_ref()),
                state(&[("a", "2")]),
                &time::Duration::hours(1),
            )
            .await
            .unwrap();
        drop(store);
        k
    };
    let store = SessionDbStore::new(Store::open_with(dir.path(), opts()).unwrap());
    let mut loaded = store.load(&k).await.unwrap().unwrap();
    loaded.remove(KEY_ENTRY);
    assert_eq!(loaded, state(&[("a", "2")]));
}

/// Throughput of the store under the middleware's pattern (save, then update) on one
/// actix worker, writes called directly vs offloaded. Prints; asserts nothing but that
/// the work was done. Run: `cargo test --release --features actix-session --test
/// actix_session measure_offload -- --ignored --nocapture`.
#[actix_web::test]
#[ignore = "a measurement, not a check"]
async fn measure_offload() {
    for durability in [Durability::Memory, Durability::Sync] {
        for offload in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let engine =
                Store::open_with(dir.path(), Options::default().durability(durability)).unwrap();
            let store = SessionDbStore::new(engine).offload_writes(offload);
            let per_task = if matches!(durability, Durability::Sync) {
                1_000
            } else {
                2_000
            };
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..64 {
                let store = store.clone();
                tasks.push(actix_web::rt::spawn(async move {
                    for i in 0..per_task {
                        let k = store
                            .save(state(&[("n", "1")]), &time::Duration::hours(1))
                            .await
                            .unwrap();
                        let n = i.to_string();
                        store
                            .update(k, state(&[("n", &n)]), &time::Duration::hours(1))
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let ops = 64 * per_task * 2;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{durability:?} offload={offload}: {ops} store calls in {secs:.2} s = {:.0}/s",
                f64::from(ops) / secs
            );
            assert_eq!(store.engine().len(), 64 * per_task as usize);
        }
    }
}
