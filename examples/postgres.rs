//! Sessions on PostgreSQL (feature `postgres`), for an app on several nodes that
//! already runs a database: the same code as on the embedded store or Redis, the
//! backend picked by configuration.
//!
//! ```sh
//! # any PostgreSQL 13 or later, on a scratch database (the store creates its tables
//! # in the schema `sessiondb`); or a throwaway server:
//! bash -c 'source .ci/postgres; postgres_start;
//!   cargo run --example postgres --features postgres -- "$SESSIONDB_TEST_POSTGRES_URL";
//!   postgres_stop'
//! cargo run --example postgres --features postgres -- postgres://sessiondb@127.0.0.1:5432/sessiondb
//! ```
//!
//! (An embedded store belongs to one process, so the two "nodes" here need a database
//! URL; a single process uses `Sessions::open("memory:" or a directory, …)` with the
//! same calls.)

use std::time::Duration;

use sessiondb::{Event, NewSession, Options, Sessions};

#[tokio::main]
async fn main() -> Result<(), sessiondb::Error> {
    let config = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "postgres://sessiondb@127.0.0.1:5432/sessiondb".into());
    // "postgres://user@host/db" (or "redis://host:port/", or, in a single process,
    // "memory:" or a directory): the only line that changes between backends.
    let node_a = Sessions::open(&config, Options::default()).await?;
    let node_b = Sessions::open(&config, Options::default()).await?; // another process, in real life

    let events = node_b.subscribe().await?; // every node's events, through the database

    // A visitor logs in on node A (new token: the session-fixation defence)...
    let (visitor, _) = node_a
        .create(NewSession::anonymous().label("Firefox"))
        .await?;
    let token = node_a.login(&visitor, "alice").await?;

    // ...and their next request lands on node B: same session, same user.
    let session = node_b.get(&token).await?.expect("live on every node");
    assert_eq!(session.user().map(|u| u.as_str()), Some("alice"));
    node_b.put(&token, "theme", "dark").await?;

    // "Sign out everywhere" from node B ends it on node A too.
    assert_eq!(node_b.revoke_user("alice").await?, 1);
    assert!(node_a.get(&token).await?.is_none());

    // Node B's subscriber saw node A's changes too (read from the outbox table, woken
    // by LISTEN/NOTIFY), in commit order. The channel is a blocking one: wait for it
    // off the async workers.
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        while let Ok(ev) = events.recv_timeout(Duration::from_secs(5)) {
            let done = matches!(ev, Event::UserRevoked { .. });
            seen.push(ev);
            if done {
                break;
            }
        }
        seen
    })
    .await
    .expect("the event reader");
    assert!(
        matches!(seen.last(), Some(Event::UserRevoked { .. })),
        "node B saw the revocation: {seen:?}"
    );
    println!(
        "backend {}: logged in on A, read on B, revoked from B; B saw {} events: {:?}",
        node_a.backend_name(),
        seen.len(),
        seen.iter()
            .map(|e| format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or("")
                .to_owned())
            .collect::<Vec<_>>()
    );
    Ok(())
}
