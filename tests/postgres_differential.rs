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
            agree_with_events(&ops, Sessions::postgres(pg)).await;
        });
        drop(rt);
        psql(&url, &format!("DROP SCHEMA {schema} CASCADE")).unwrap();
    }
}
