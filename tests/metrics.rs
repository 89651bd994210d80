//! The `metrics` feature through a real Prometheus recorder: what a store publishes
//! (gauges and counters by name and label, as `Stats` counts them) and the histograms
//! it records as it goes (fsync, batch size, the wait for durability under `Sync`,
//! compaction, recovery), each series labelled with the store's `metrics_label`. One
//! recorder per process: the checks run in one test, in order.

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use sessiondb::{
    Durability, LimitPolicy, ManualClock, NewSession, Options, SignIn, Store, Timestamp,
};

/// The value of the series `name{labels}` in `text` (labels as rendered, in order).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_store_publishes_its_counts_and_records_its_histograms_under_its_label() {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this process");
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let opts = || {
        Options::default()
            .clock(clock.clone())
            .reaper_interval(None)
            .durability(Durability::Sync)
            .idle_timeout(Duration::from_secs(60))
            .max_sessions_per_user(Some(1), LimitPolicy::Refuse)
            .metrics_label("web")
    };
    // Opened twice: the second open recovers what the first wrote.
    drop(Store::open_with(dir.path(), opts()).unwrap());
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let (v, _) = store.create(NewSession::anonymous()).unwrap();
    let t = store
        .login_with(&v, "alice", SignIn::with("password"))
        .unwrap();
    let (gone, _) = store.create(NewSession::anonymous()).unwrap();
    store.end(&gone).unwrap();
    assert!(
        store.create(NewSession::for_user("alice")).is_err(),
        "the limit"
    );
    assert!(store.create(NewSession::for_user("")).is_err(), "bad input");
    let (idle, _) = store.create(NewSession::anonymous()).unwrap();
    clock.advance(Duration::from_secs(30));
    store.touch(&t).unwrap();
    clock.advance(Duration::from_secs(31));
    assert_eq!(store.reap_expired(), 1);
    assert!(store.peek(&idle).is_none());
    store.compact().unwrap();

    store.publish_metrics();
    let text = handle.render();
    let w = "{store=\"web\"}";
    for (series, want) in [
        (format!("sessiondb_sessions_live{w}"), 1.0),
        (format!("sessiondb_sessions_authenticated{w}"), 1.0),
        (format!("sessiondb_users{w}"), 1.0),
        (format!("sessiondb_sessions_created_total{w}"), 3.0),
        (format!("sessiondb_sessions_rotated_total{w}"), 1.0),
        (format!("sessiondb_logins_total{w}"), 1.0),
        (format!("sessiondb_compactions_total{w}"), 1.0),
        (
            "sessiondb_sessions_ended_total{store=\"web\",reason=\"logout\"}".into(),
            1.0,
        ),
        (
            "sessiondb_sessions_ended_total{store=\"web\",reason=\"expired\"}".into(),
            1.0,
        ),
        (
            "sessiondb_sessions_ended_total{store=\"web\",reason=\"revoked\"}".into(),
            0.0,
        ),
        (
            "sessiondb_refusals_total{store=\"web\",cause=\"user_limit\"}".into(),
            1.0,
        ),
        (
            "sessiondb_refusals_total{store=\"web\",cause=\"bad_input\"}".into(),
            1.0,
        ),
        (format!("sessiondb_compaction_seconds_count{w}"), 1.0),
        (format!("sessiondb_compaction_bytes_count{w}"), 1.0),
        (format!("sessiondb_recovery_seconds_count{w}"), 2.0),
    ] {
        assert_eq!(value(&text, &series), Some(want), "{series} in\n{text}");
    }
    for series in [
        "sessiondb_log_fsync_seconds_count",
        "sessiondb_log_batch_records_count",
        "sessiondb_durability_wait_seconds_count",
        "sessiondb_log_disk_bytes",
        "sessiondb_resident_bytes",
    ] {
        let v = value(&text, &format!("{series}{w}")).unwrap_or(0.0);
        assert!(v > 0.0, "{series} is {v} in\n{text}");
    }
    // Every series of the store carries its label.
    for line in text.lines().filter(|l| l.starts_with("sessiondb_")) {
        assert!(line.contains("store=\"web\""), "{line}");
    }
    // A second publish moves counters to their new totals, never adds them twice.
    store.create(NewSession::anonymous()).unwrap();
    store.publish_metrics();
    let text = handle.render();
    assert_eq!(
        value(&text, &format!("sessiondb_sessions_created_total{w}")),
        Some(4.0)
    );
    #[cfg(feature = "redis")]
    redis_part(&handle);
    #[cfg(feature = "postgres")]
    postgres_part(&handle);
}

/// On PostgreSQL: the live sessions (a count), each operation's transaction timed by
/// operation, under the handle's own label.
#[cfg(feature = "postgres")]
fn postgres_part(handle: &metrics_exporter_prometheus::PrometheusHandle) {
    let Some(url) = postgres_server::shared_url() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let popts = sessiondb::PostgresOptions::default().schema(postgres_server::fresh_schema());
        let store = sessiondb::PostgresStore::connect_with(
            &url,
            Options::default().metrics_label("pg"),
            popts,
        )
        .await
        .unwrap();
        for _ in 0..3 {
            store.create(NewSession::anonymous()).await.unwrap();
        }
        store.publish_metrics().await.unwrap();
    });
    let text = handle.render();
    assert_eq!(
        value(&text, "sessiondb_sessions_live{store=\"pg\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "sessiondb_postgres_transaction_seconds_count{store=\"pg\",op=\"create\"}"
        ),
        Some(3.0),
        "{text}"
    );
}

/// On Redis: the live sessions from the registry, and each script call timed by
/// operation, under the handle's own label.
#[cfg(feature = "redis")]
fn redis_part(handle: &metrics_exporter_prometheus::PrometheusHandle) {
    let Some(server) = redis_server::RedisServer::start(redis_server::NO_PERSISTENCE) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = sessiondb::RedisStore::connect(
            &server.url(),
            Options::default().metrics_label("shared"),
        )
        .await
        .unwrap();
        let events = store.subscribe().await.unwrap();
        for _ in 0..3 {
            store.create(NewSession::anonymous()).await.unwrap();
        }
        // The subscriber reads them (and times how far behind it reads).
        for _ in 0..3 {
            events.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        store.publish_metrics().await.unwrap();
    });
    let text = handle.render();
    let s = "{store=\"shared\"}";
    assert_eq!(
        value(&text, &format!("sessiondb_sessions_live{s}")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "sessiondb_redis_script_seconds_count{store=\"shared\",op=\"admit\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("sessiondb_redis_event_lag_seconds_count{s}")
        ),
        Some(3.0),
        "{text}"
    );
}
