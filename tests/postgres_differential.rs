//! Differential property test: random operation sequences run against the embedded
//! store (itself checked against a plain model in `tests/model.rs`) and against the
//! PostgreSQL backend, through the same public handle; every answer must agree —
//! values, versions, users, labels, error kinds, counts — and so must the events each
//! reported (PostgreSQL's come through its outbox, written by each operation's own
//! SQL). The same operations, weights, options and comparison as
//! `tests/redis_differential.rs` (`tests/support/differential.rs`, which says why time,
//! limits, levels and devices are kept from moving within a case).
//!
//! Each case gets a schema of its own (a fresh migration, users with no not-before
//! time) on the cluster shared by the process (tests/support/postgres_server.rs),
//! dropped when the case passes; skipped with a message if PostgreSQL is not installed,
//! unless `SESSIONDB_REQUIRE_POSTGRES=1`.

#[path = "support/differential.rs"]
mod differential;
#[path = "support/postgres_server.rs"]
mod postgres_server;

use differential::{agree_with_events, op, options};
use postgres_server::{fresh_schema, psql, shared_url};
use proptest::prelude::*;
use sessiondb::{PostgresOptions, PostgresStore, Sessions};

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn postgres_answers_every_operation_as_the_embedded_store_does(ops in proptest::collection::vec(op(), 1..60)) {
        let Some(url) = shared_url() else { return Ok(()) };
        let schema = fresh_schema();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let popts = PostgresOptions::default().schema(&schema).pool_size(2);
            let pg = PostgresStore::connect_with(&url, options(), popts).await.unwrap();
            let handle = pg.clone();
            let diagnose = || {
                format!(
                    "events dropped: {}; {}",
                    handle.events_dropped(),
                    outbox_and_transactions(&url, &schema)
                )
            };
            agree_with_events(&ops, Sessions::postgres(pg), &diagnose).await;
        });
        drop(rt);
        psql(&url, &format!("DROP SCHEMA {schema} CASCADE")).unwrap();
    }
}

/// What the server holds when a subscriber's events stop coming: the case's outbox
/// (number, kind, transaction id) and every transaction in the cluster that has an id
/// or holds back the snapshot horizon, with its age, state and query — a reader
/// delivers an event only once every transaction older than its own id has finished
/// (`src/postgres/events.rs`).
fn outbox_and_transactions(url: &str, schema: &str) -> String {
    let outbox = psql(
        url,
        &format!("SELECT seq, kind, xid FROM {schema}.events ORDER BY seq"),
    );
    let running = psql(
        url,
        "SELECT pid, backend_type, backend_xid, backend_xmin, state, \
         now() - xact_start, left(query, 120) FROM pg_stat_activity \
         WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL",
    );
    let horizon = psql(url, "SELECT pg_current_snapshot()");
    let show = |r: Result<String, String>| r.unwrap_or_else(|e| e);
    format!(
        "outbox (seq|kind|xid):\n{}\ntransactions (pid|type|xid|xmin|state|age|query):\n{}\nsnapshot: {}",
        show(outbox),
        show(running),
        show(horizon)
    )
}
