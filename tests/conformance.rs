//! The conformance suite (`sessiondb::conformance`) against sessiondb's store on every
//! backend (with the `redis` feature, Redis too: a redis-server of the test's own; with
//! `postgres`, PostgreSQL: a schema of its own on a throwaway cluster), and
//! against tower-sessions' own `MemoryStore`.

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::time::Duration;

use sessiondb::conformance::{self, Area, Outcome};
use sessiondb::tower_sessions::SessionDbStore;
use sessiondb::{Durability, Options, Store};

fn quick_reaper() -> Options {
    Options::default().reaper_interval(Some(Duration::from_millis(50)))
}

// The README's example: how a store's own tests run the suite (swap in your store).
// README snippet start
#[tokio::test(flavor = "multi_thread")]
async fn store_passes_the_conformance_suite() {
    let engine = sessiondb::Store::in_memory().unwrap();
    let store = sessiondb::tower_sessions::SessionDbStore::new(engine); // your store here
    let report = sessiondb::conformance::run_all(store).await;
    println!("{report}"); // one line per check: pass / FAIL, area, name, what was seen
    report.assert_passes(); // or report.assert_fails_only(&["known_failure", ...])
}
// README snippet end

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessiondb_in_memory_passes_every_check() {
    let store = SessionDbStore::new(Store::in_memory_with(quick_reaper()).unwrap());
    let report = conformance::run_all(store.clone()).await;
    println!("{report}");
    report.assert_passes();
    store.sessions().as_embedded().unwrap().verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessiondb_on_the_log_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionDbStore::new(Store::open_with(dir.path(), quick_reaper()).unwrap());
    let report = conformance::run_all(store.clone()).await;
    println!("{report}");
    report.assert_passes();
    store.sessions().as_embedded().unwrap().verify().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessiondb_on_the_log_with_every_write_fsynced_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let opts = quick_reaper().durability(Durability::Sync);
    let store = SessionDbStore::new(Store::open_with(dir.path(), opts).unwrap());
    let report = conformance::run_all(store).await;
    println!("{report}");
    report.assert_passes();
}

#[cfg(feature = "sled")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessiondb_on_sled_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let opts = quick_reaper().backend(sessiondb::BackendKind::Sled);
    let store = SessionDbStore::new(Store::open_with(dir.path(), opts).unwrap());
    let report = conformance::run_all(store).await;
    println!("{report}");
    report.assert_passes();
}

/// The same store over Redis passes the same checks: ending is final there too (the
/// Redis scripts refuse a write to a session that is not live), and so on.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessiondb_on_redis_passes_every_check() {
    let Some(server) = redis_server::RedisServer::start(redis_server::NO_PERSISTENCE) else {
        return;
    };
    let sessions = sessiondb::Sessions::open(&server.url(), quick_reaper())
        .await
        .unwrap();
    let store = SessionDbStore::new(sessions);
    let report = conformance::run_all(store.clone()).await;
    println!("{report}");
    report.assert_passes();
    assert_eq!(store.sessions().backend_name(), "redis");
}

/// And over PostgreSQL: a save finds its row by the token's hash and updates it, never
/// inserts one, so a late save cannot bring an ended session back.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessiondb_on_postgres_passes_every_check() {
    let Some(url) = tokio::task::spawn_blocking(postgres_server::shared_url)
        .await
        .unwrap()
    else {
        return;
    };
    let popts = sessiondb::PostgresOptions::default().schema(postgres_server::fresh_schema());
    let pg = sessiondb::PostgresStore::connect_with(&url, quick_reaper(), popts)
        .await
        .unwrap();
    let store = SessionDbStore::new(sessiondb::Sessions::postgres(pg));
    let report = conformance::run_all(store.clone()).await;
    println!("{report}");
    report.assert_passes();
    assert_eq!(store.sessions().backend_name(), "postgres");
}

/// What the suite finds in tower-sessions' `MemoryStore` (0.15): its `save` is a plain
/// upsert, so every record that ended — deleted, expired, or rotated away by
/// `cycle_id` — comes back when a request that loaded it before saves it after. The
/// rotation case undoes the session-fixation defence: the id an attacker planted is
/// live again. Everything else passes. These are asserted as the *exact* failures, so a
/// fix upstream (or a new failure) makes this test say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tower_sessions_memory_store_fails_exactly_the_finality_checks() {
    let report = conformance::run_all(tower_sessions::MemoryStore::default()).await;
    println!("{report}");
    let expected = [
        "late_save_does_not_resurrect_a_deleted_record",
        "late_save_does_not_resurrect_an_expired_record",
        "rotated_id_stays_dead_against_a_late_save",
        "delete_racing_saves_stays_deleted",
    ];
    report.assert_fails_only(&expected);
    for name in expected {
        let check = report.check(name).unwrap();
        assert!(matches!(
            check.area,
            Area::Finality | Area::Rotation | Area::Concurrency
        ));
        assert!(
            matches!(&check.outcome, Outcome::Fail(why) if why.contains("brought")),
            "{name}: {:?}",
            check.outcome
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_area_runs_alone_and_reports_its_checks() {
    let store = SessionDbStore::new(Store::in_memory_with(quick_reaper()).unwrap());
    let areas = [
        (conformance::expiry(store.clone()).await, Area::Expiry, 5),
        (
            conformance::rotation(store.clone()).await,
            Area::Rotation,
            2,
        ),
        (
            conformance::finality(store.clone()).await,
            Area::Finality,
            3,
        ),
        (
            conformance::concurrency(store.clone()).await,
            Area::Concurrency,
            3,
        ),
        (conformance::input(store.clone()).await, Area::Input, 7),
    ];
    for (report, area, n) in areas {
        assert_eq!(report.checks.len(), n, "{report}");
        assert!(report.checks.iter().all(|c| c.area == area));
        report.assert_passes();
    }
}

/// A store that forgets everything: the suite must catch it (a suite that cannot fail
/// proves nothing).
#[derive(Clone, Debug, Default)]
struct Forgetful;

#[async_trait::async_trait]
impl tower_sessions::SessionStore for Forgetful {
    async fn save(
        &self,
        _: &tower_sessions::session::Record,
    ) -> tower_sessions::session_store::Result<()> {
        Ok(())
    }
    async fn load(
        &self,
        _: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<Option<tower_sessions::session::Record>> {
        Ok(None)
    }
    async fn delete(
        &self,
        _: &tower_sessions::session::Id,
    ) -> tower_sessions::session_store::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_nothing_fails_every_check_that_needs_a_record_back() {
    let report = conformance::run_all(Forgetful).await;
    println!("{report}");
    assert!(!report.passed());
    let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
    for name in [
        "expired_record_never_loads",
        "extended_expiry_keeps_it",
        "cycle_id_moves_the_data",
        "concurrent_saves_never_tear_a_record",
        "record_loads_exactly_as_saved",
        "create_collision_gets_a_new_id",
    ] {
        assert!(failed.contains(&name), "{name} should fail:\n{report}");
    }
    // It keeps nothing, so nothing comes back either: the finality checks pass.
    assert!(
        report
            .check("late_save_does_not_resurrect_a_deleted_record")
            .unwrap()
            .passed()
    );
}
