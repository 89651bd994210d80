//! Differential property test: random operation sequences run against the embedded
//! store (itself checked against a plain model in `tests/model.rs`) and against the
//! Redis backend, through the same public handle; every answer must agree — values,
//! versions, users, labels, error kinds, counts. Tokens and ids are random on each
//! side, so sessions are named by the order they were created in.
//!
//! The operations, their weights, the options and the comparison are shared with
//! `tests/postgres_differential.rs` (`tests/support/differential.rs`, which says why
//! time, limits, levels and devices are kept from moving within a case).

#[path = "support/differential.rs"]
mod differential;
#[path = "support/redis_server.rs"]
mod redis_server;

use differential::{agree, op, options};
use proptest::prelude::*;
use redis_server::{NO_PERSISTENCE, RedisServer};
use sessiondb::{RedisOptions, RedisStore, Sessions};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn redis_answers_every_operation_as_the_embedded_store_does(ops in proptest::collection::vec(op(), 1..60)) {
        let Some(server) = RedisServer::start(NO_PERSISTENCE) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let redis = RedisStore::connect_with(&server.url(), options(), RedisOptions::default().prefix("diff")).await.unwrap();
            agree(&ops, Sessions::redis(redis)).await;
        });
    }
}
