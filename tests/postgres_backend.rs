//! What only the PostgreSQL backend has to prove: what it writes into the database
//! (token hashes, never tokens), how it treats a schema a newer sessiondb migrated and
//! nodes migrating at once, two app nodes sharing one schema (reads, writes,
//! revocations, events, a late save, two reapers), that a touch is a HOT update, that a
//! subscriber outlives its connection, what survives a `kill -9` of the server with
//! `synchronous_commit` on, how a server that is down is reported and recovered from,
//! and which options and URLs are refused.
//!
//! Most tests take a schema of their own on one cluster shared by the process; those
//! that kill the server start their own (tests/support/postgres_server.rs). Skipped with
//! a message if PostgreSQL is not installed, unless `SESSIONDB_REQUIRE_POSTGRES=1`.
//! What a test learns from the database it reads with `psql`.

#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use postgres_server::{PostgresServer, fresh_schema, shared_url};
use sessiondb::{
    EndReason, Error, Event, NewSession, Options, PostgresOptions, PostgresStore, SessionId,
    SignIn, Token, UserId,
};

/// The shared cluster's URL (starting it blocks, so off the runtime's threads).
async fn url() -> Option<String> {
    tokio::task::spawn_blocking(shared_url).await.unwrap()
}

/// What `psql` prints for `sql` (trimmed); a failure is a panic.
async fn psql(url: &str, sql: &str) -> String {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || postgres_server::psql(&url, &sql))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_owned()
}

fn popts(schema: &str) -> PostgresOptions {
    PostgresOptions::default()
        .schema(schema)
        .pool_size(4)
        .response_timeout(Duration::from_secs(5))
}

async fn connect(url: &str, schema: &str, opts: Options) -> PostgresStore {
    PostgresStore::connect_with(url, opts, popts(schema))
        .await
        .unwrap()
}

fn no_reaper() -> Options {
    Options::default().reaper_interval(None)
}

/// The next event, waiting up to 10 s (a reader of the outbox delivers it).
fn next(rx: &Receiver<Event>) -> Event {
    tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(10)))
        .expect("an event within 10 s")
}

/// Polls `check` every 100 ms until it holds; a panic naming `what` after `limit`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token's hash as the `hash` columns hold it: 16 bytes, big-endian, in hex.
fn hash_hex(t: &Token) -> String {
    format!("{:032x}", t.hash().as_u128())
}

/// The schema's tables, by name.
async fn tables(url: &str, schema: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
             WHERE schemaname = '{schema}'"
        ),
    )
    .await
}

/// How many rows of the schema's sessions table match `filter`.
async fn count_sessions(url: &str, schema: &str, filter: &str) -> u64 {
    psql(
        url,
        &format!("SELECT count(*) FROM {schema}.sessions WHERE {filter}"),
    )
    .await
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reach_postgres_only_as_their_hash() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    // No reaper and a long grace: every alias is still there to be looked at.
    let opts = no_reaper().rotation_grace(Duration::from_secs(3600));
    let store = connect(&url, &schema, opts).await;
    let (mut live, mut retired) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let (t, _) = store.create(NewSession::anonymous()).await.unwrap();
        store.put(&t, "k", &format!("v{i}")).await.unwrap();
        let t2 = store.rotate(&t).await.unwrap();
        let t3 = store.login(&t2, &format!("u{i}")).await.unwrap();
        retired.extend([t, t2]);
        live.push(t3);
    }
    let chosen = Token::from_bytes([9u8; 24]);
    store
        .create_with_token(&chosen, NewSession::for_user("alice"))
        .await
        .unwrap();
    let stepped = store
        .step_up(&chosen, SignIn::with("password").level(2))
        .await
        .unwrap();
    let logged_in = store
        .login_with(&stepped, "bob", SignIn::with("webauthn"))
        .await
        .unwrap();
    retired.extend([chosen, stepped]);
    live.push(logged_in);
    let all: Vec<&Token> = live.iter().chain(&retired).collect();

    let names = tables(&url, &schema).await;
    assert_eq!(names, "aliases,events,meta,sessions,users");
    let mut dump = String::new();
    for table in names.split(',') {
        let rows = psql(&url, &format!("COPY {schema}.{table} TO STDOUT")).await;
        dump.push_str(&format!("-- {table}\n{rows}\n"));
    }
    assert!(dump.contains("\\x"), "bytea columns dump as hex: {dump}");
    // Not the token, nor any 8 of its bytes in a row (a bytea dumps as hex), nor any 11
    // characters of its text (as text, or as the bytes of a bytea).
    for t in &all {
        let text = t.to_string();
        for w in t.as_bytes().windows(8) {
            assert!(!dump.contains(&hex(w)), "a token's bytes in the database");
        }
        for w in text.as_bytes().windows(11) {
            let part = std::str::from_utf8(w).unwrap();
            assert!(!dump.contains(part), "a token's text in the database");
            assert!(
                !dump.contains(&hex(w)),
                "a token's text as bytes in the database"
            );
        }
    }
    // What the database holds instead: each live token's 16-byte hash keys its session,
    // each rotated-away token's its alias.
    let hashes = |table: &'static str| {
        let url = url.clone();
        let schema = schema.clone();
        async move {
            let out = psql(
                &url,
                &format!(
                    "SELECT encode(hash, 'hex') || ' ' || octet_length(hash) \
                     FROM {schema}.{table}"
                ),
            )
            .await;
            out.lines().map(str::to_owned).collect::<BTreeSet<String>>()
        }
    };
    let with_len = |ts: &[Token]| {
        ts.iter()
            .map(|t| format!("{} 16", hash_hex(t)))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(hashes("sessions").await, with_len(&live));
    assert_eq!(hashes("aliases").await, with_len(&retired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_migrated_by_a_newer_sessiondb_is_refused_and_left_as_it_is() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    let store = connect(&url, &schema, no_reaper()).await;
    let (t, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    drop(store);
    psql(&url, &format!("UPDATE {schema}.meta SET version = 99")).await;
    let before = (
        tables(&url, &schema).await,
        count_sessions(&url, &schema, "true").await,
    );
    for _ in 0..2 {
        match PostgresStore::connect_with(&url, no_reaper(), popts(&schema)).await {
            Err(Error::UnsupportedSchema {
                backend: "postgres",
                found: 99,
                supported,
            }) => assert!(supported < 99, "{supported}"),
            other => panic!("expected UnsupportedSchema, got {other:?}"),
        }
    }
    let after = (
        tables(&url, &schema).await,
        count_sessions(&url, &schema, "true").await,
    );
    assert_eq!(after, before);
    assert_eq!(before.1, 1);
    assert_eq!(
        psql(&url, &format!("SELECT version FROM {schema}.meta")).await,
        "99"
    );
    let hash = psql(
        &url,
        &format!("SELECT encode(hash, 'hex') FROM {schema}.sessions"),
    )
    .await;
    assert_eq!(hash, hash_hex(&t), "the session row is untouched");

    // A schema holding nothing but a newer version: no table is created in it.
    let bare = fresh_schema();
    psql(
        &url,
        &format!(
            "CREATE SCHEMA {bare};
             CREATE TABLE {bare}.meta (singleton boolean PRIMARY KEY DEFAULT true,
                                       version integer NOT NULL);
             INSERT INTO {bare}.meta (version) VALUES (2)"
        ),
    )
    .await;
    assert!(matches!(
        PostgresStore::connect_with(&url, no_reaper(), popts(&bare)).await,
        Err(Error::UnsupportedSchema { found: 2, .. })
    ));
    assert_eq!(tables(&url, &bare).await, "meta");
    assert_eq!(
        psql(
            &url,
            &format!("SELECT count(*), max(version) FROM {bare}.meta")
        )
        .await,
        "1|2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connecting_at_once_to_a_fresh_schema_all_succeed_and_it_is_migrated_once() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    let nodes = 8;
    let start = Arc::new(tokio::sync::Barrier::new(nodes));
    let mut tasks = Vec::new();
    for _ in 0..nodes {
        let (url, schema, start) = (url.clone(), schema.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            PostgresStore::connect_with(&url, no_reaper(), popts(&schema)).await
        }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().expect("every node connects"));
    }
    assert_eq!(
        psql(
            &url,
            &format!("SELECT count(*), min(version) FROM {schema}.meta")
        )
        .await,
        "1|1"
    );
    assert_eq!(
        tables(&url, &schema).await,
        "aliases,events,meta,sessions,users"
    );
    let objects = psql(
        &url,
        &format!(
            "SELECT (SELECT string_agg(p.proname, ',') FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = '{schema}'),
                    (SELECT string_agg(t.tgname, ',') FROM pg_trigger t
                     JOIN pg_class c ON c.oid = t.tgrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = '{schema}' AND NOT t.tgisinternal),
                    (SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes
                     WHERE schemaname = '{schema}')"
        ),
    )
    .await;
    assert_eq!(
        objects,
        "||aliases_pkey,aliases_until,events_pkey,events_xid,\
         meta_pkey,sessions_hash_key,sessions_pkey,sessions_reap,sessions_user,users_pkey"
    );
    // Every node works, on the same sessions.
    for (i, s) in stores.iter().enumerate() {
        s.create(NewSession::for_user(format!("u{i}")))
            .await
            .unwrap();
    }
    for s in &stores {
        assert_eq!(s.len().await.unwrap(), nodes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_sessions_revocations_and_events() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    let node_a = connect(&url, &schema, no_reaper()).await;
    let node_b = connect(&url, &schema, no_reaper()).await;
    let (events_on_a, events_on_b) = (
        node_a.subscribe().await.unwrap(),
        node_b.subscribe().await.unwrap(),
    );
    let (visitor, created) = node_a.create(NewSession::anonymous()).await.unwrap();
    let id = created.id();
    // The load balancer sends the next request to node B: it reads and writes.
    let seen = node_b.get(&visitor).await.unwrap().expect("created on A");
    assert_eq!(seen.id(), id);
    assert_eq!(node_b.put(&visitor, "cart", &3u32).await.unwrap(), 1);
    let back = node_a.get(&visitor).await.unwrap().unwrap();
    assert_eq!(
        (back.version(), back.get::<u32>("cart").unwrap()),
        (1, Some(3))
    );
    let rotated = node_a.rotate(&visitor).await.unwrap();
    let token = node_a.login(&rotated, "alice").await.unwrap();
    let on_b = node_b.get(&token).await.unwrap().expect("logged in on B");
    assert_eq!(on_b.user().map(UserId::as_str), Some("alice"));
    // "Sign out everywhere" from B ends it for A at once.
    assert_eq!(node_b.revoke_user("alice").await.unwrap(), 1);
    assert!(node_a.get(&token).await.unwrap().is_none());
    assert!(matches!(
        node_a.put(&token, "cart", &4u32).await,
        Err(Error::Ended)
    ));
    assert!(node_a.sessions_of("alice").await.unwrap().is_empty());
    let alice = UserId::new("alice", &Default::default()).unwrap();
    let want = vec![
        Event::Created {
            session: id,
            user: None,
        },
        Event::Rotated { session: id },
        Event::Rotated { session: id },
        Event::UserBound {
            session: id,
            user: alice.clone(),
        },
        Event::Ended {
            session: id,
            user: Some(alice.clone()),
            reason: EndReason::Revoked,
        },
        Event::UserRevoked {
            user: alice,
            sessions: vec![id],
        },
    ];
    // Both nodes hear every node's events, in the order they happened.
    for rx in [&events_on_a, &events_on_b] {
        let got: Vec<Event> = want.iter().map(|_| next(rx)).collect();
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_save_on_another_node_never_brings_an_ended_session_back() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    let node_a = connect(&url, &schema, no_reaper()).await;
    let node_b = connect(&url, &schema, no_reaper()).await;
    let (t0, s) = node_a.create(NewSession::for_user("alice")).await.unwrap();
    node_a.put(&t0, "cart", &1u32).await.unwrap();
    // B read the session (with the token it was sent); A rotates it and signs out.
    let read = node_b.peek(&t0).await.unwrap().unwrap();
    let t1 = node_a.rotate(&t0).await.unwrap();
    assert!(node_a.end(&t1).await.unwrap());
    let mut data = read.data().clone();
    data.insert("cart", &2u32).unwrap();
    // B's request finishes: through the old token (in its grace period) or the new.
    for t in [&t0, &t1] {
        assert!(matches!(
            node_b.save(t, read.version(), &data).await,
            Err(Error::Ended)
        ));
        assert!(matches!(
            node_b.put(t, "cart", &2u32).await,
            Err(Error::Ended)
        ));
        assert!(matches!(node_b.touch(t).await, Err(Error::Ended)));
        assert!(matches!(
            node_b.extend(t, Duration::from_secs(60)).await,
            Err(Error::Ended)
        ));
        assert!(matches!(
            node_b.set_label(t, Some("x")).await,
            Err(Error::Ended)
        ));
        assert!(matches!(
            node_b.bind_user(t, "bob").await,
            Err(Error::Ended)
        ));
        assert!(matches!(node_b.rotate(t).await, Err(Error::Ended)));
        assert!(node_b.get(t).await.unwrap().is_none());
    }
    assert_eq!(
        count_sessions(&url, &schema, &format!("id = '{}'", s.id())).await,
        0
    );

    // And racing: B saves while A ends, over and over; whichever commits first, the
    // session is gone afterwards.
    for round in 0..20u32 {
        let (t, s) = node_a.create(NewSession::for_user("alice")).await.unwrap();
        let read = node_b.peek(&t).await.unwrap().unwrap();
        let mut data = read.data().clone();
        data.insert("round", &round).unwrap();
        let (a, b) = (node_a.clone(), node_b.clone());
        let (t_a, t_b) = (t.clone(), t.clone());
        let ended = tokio::spawn(async move { a.end(&t_a).await });
        let saved = tokio::spawn(async move {
            let saved = b.save(&t_b, read.version(), &data).await;
            let put = b.put(&t_b, "late", &round).await;
            (saved, put)
        });
        assert!(ended.await.unwrap().unwrap(), "round {round}: it was live");
        let (saved, put) = saved.await.unwrap();
        for r in [saved, put] {
            assert!(
                matches!(r, Ok(_) | Err(Error::Ended)),
                "round {round}: {r:?}"
            );
        }
        assert!(node_b.get(&t).await.unwrap().is_none(), "round {round}");
        assert_eq!(
            count_sessions(&url, &schema, &format!("id = '{}'", s.id())).await,
            0,
            "round {round}"
        );
    }
    assert_eq!(count_sessions(&url, &schema, "true").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reapers_at_once_report_each_expired_session_exactly_once() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    // Small batches, so the two nodes' passes interleave.
    let small = |schema: &str| popts(schema).batch(3);
    let node_a = PostgresStore::connect_with(&url, no_reaper(), small(&schema))
        .await
        .unwrap();
    let node_b = PostgresStore::connect_with(&url, no_reaper(), small(&schema))
        .await
        .unwrap();
    let events = node_a.subscribe().await.unwrap();
    let n = 40;
    let mut short = BTreeMap::new();
    for i in 0..n {
        let new = match i % 3 {
            0 => NewSession::anonymous(),
            u => NewSession::for_user(format!("u{u}")),
        };
        let (_, s) = node_a
            .create(new.lifetime(Duration::from_millis(200)))
            .await
            .unwrap();
        short.insert(s.id(), s.user().cloned());
    }
    let mut long = BTreeSet::new();
    for _ in 0..3 {
        let (_, s) = node_b.create(NewSession::for_user("u1")).await.unwrap();
        long.insert(s.id());
    }
    until(
        "the short sessions' deadlines",
        Duration::from_secs(30),
        || {
            let a = node_a.clone();
            async move { a.len().await.unwrap() == 3 }
        },
    )
    .await;
    let (reaped_a, reaped_b) = tokio::join!(node_a.reap_expired(), node_b.reap_expired());
    let (reaped_a, reaped_b) = (reaped_a.unwrap(), reaped_b.unwrap());
    assert_eq!(reaped_a + reaped_b, n, "{reaped_a} + {reaped_b}");
    let (again_a, again_b) = tokio::join!(node_a.reap_expired(), node_b.reap_expired());
    assert_eq!((again_a.unwrap(), again_b.unwrap()), (0, 0));
    assert_eq!(count_sessions(&url, &schema, "true").await, 3);

    // A session created after both passes: its event comes after all of theirs.
    let (_, marker) = node_a.create(NewSession::anonymous()).await.unwrap();
    let mut ended: HashMap<SessionId, u32> = HashMap::new();
    loop {
        match next(&events) {
            Event::Created { session, .. } if session == marker.id() => break,
            Event::Created { .. } => {}
            Event::Ended {
                session,
                user,
                reason: EndReason::Expired,
            } => {
                assert_eq!(Some(&user), short.get(&session), "{session}");
                *ended.entry(session).or_default() += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let twice: Vec<_> = ended.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reported more than once: {twice:?}");
    let missing: Vec<_> = short.keys().filter(|id| !ended.contains_key(id)).collect();
    assert!(missing.is_empty(), "never reported: {missing:?}");
    assert_eq!(ended.len(), n);
    for id in long {
        assert!(node_b.get_by_id(id).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_is_a_hot_update() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    let opts = no_reaper().touch_interval(Duration::ZERO);
    let store = connect(&url, &schema, opts).await;
    let (t, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    // Each a transaction that updates the row: 30 row versions fit one page even if
    // none could be pruned yet, so nothing but an indexed column can stop HOT.
    let touches = 15;
    for _ in 0..touches {
        store.touch(&t).await.unwrap();
        assert!(store.get(&t).await.unwrap().is_some());
    }
    // The counts reach the statistics when each pooled backend flushes them (within
    // about ten seconds of going idle).
    let stats = || async {
        let out = psql(
            &url,
            &format!(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                 WHERE schemaname = '{schema}' AND relname = 'sessions'"
            ),
        )
        .await;
        let (upd, hot) = out.split_once('|').unwrap();
        (upd.parse::<u64>().unwrap(), hot.parse::<u64>().unwrap())
    };
    let until_updates = |n: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (upd, hot) = stats().await;
            if upd >= n || Instant::now() > deadline {
                return (upd, hot);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let n = 2 * touches;
    assert_eq!(until_updates(n).await, (n, n), "(updates, HOT updates)");
    // The measure tells them apart: a rotation changes the indexed hash.
    store.rotate(&t).await.unwrap();
    assert_eq!(until_updates(n + 1).await, (n + 1, n), "after a rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_survives_the_server_dropping_its_connection() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    let store = connect(&url, &schema, no_reaper()).await;
    let events = store.subscribe().await.unwrap();
    let created = |e: Event| match e {
        Event::Created { session, .. } => session,
        other => panic!("expected Created, got {other:?}"),
    };
    let (_, s) = store.create(NewSession::anonymous()).await.unwrap();
    assert_eq!(created(next(&events)), s.id(), "the subscriber reads");
    // The subscriber's own connection names itself (application_name).
    let listener = format!(
        "FROM pg_stat_activity WHERE application_name = 'sessiondb-events:{schema}'
           AND datname = current_database()"
    );
    for round in 0..3 {
        let killed = psql(
            &url,
            &format!("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) {listener}"),
        )
        .await;
        assert_eq!(killed, "1", "round {round}: one listener terminated");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (_, s) = store.create(NewSession::anonymous()).await.unwrap();
            ids.push(s.id());
        }
        let got: Vec<SessionId> = ids.iter().map(|_| created(next(&events))).collect();
        assert_eq!(got, ids, "round {round}: every event, in order, once");
    }
    assert_eq!(store.events_dropped(), 0);
}

/// A session a writer created, and the last version it was told was written.
type Acked = Arc<Mutex<Vec<(Token, u64)>>>;

/// Creates sessions and puts `v` = 1, 2, … (so each version holds its own number) until
/// `stop`; records what was acknowledged; counts failures, which must be `Unavailable`.
async fn write_until_stopped(
    store: PostgresStore,
    user: String,
    acked: Acked,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let fail = |e: Error| {
        assert!(
            matches!(
                e,
                Error::Unavailable {
                    backend: "postgres",
                    ..
                }
            ),
            "{e:?}"
        );
        failed.fetch_add(1, Ordering::SeqCst);
    };
    while !stop.load(Ordering::SeqCst) {
        let t = match store.create(NewSession::for_user(user.as_str())).await {
            Ok((t, _)) => t,
            Err(e) => {
                fail(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let slot = {
            let mut acked = acked.lock().unwrap();
            acked.push((t.clone(), 0));
            acked.len() - 1
        };
        for v in 1..=5u64 {
            match store.put(&t, "v", &v).await {
                Ok(version) => {
                    assert_eq!(version, v);
                    acked.lock().unwrap()[slot].1 = version;
                }
                Err(e) => {
                    fail(e);
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_commit_a_kill_9_loses_no_acknowledged_write() {
    let Some(mut server) = PostgresServer::start() else {
        return;
    };
    assert_eq!(server.psql("SHOW synchronous_commit").unwrap().trim(), "on");
    assert_eq!(server.psql("SHOW fsync").unwrap().trim(), "on");
    let url = server.url();
    let opts = no_reaper();
    let popts = PostgresOptions::default()
        .schema("app")
        .pool_size(8)
        .response_timeout(Duration::from_secs(2));
    let store = PostgresStore::connect_with(&url, opts.clone(), popts.clone())
        .await
        .unwrap();
    let acked: Acked = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(write_until_stopped(
                store.clone(),
                format!("w{w}"),
                acked.clone(),
                failed.clone(),
                stop.clone(),
            ))
        })
        .collect();
    until("writes acknowledged", Duration::from_secs(60), || {
        let n = acked.lock().unwrap().len();
        async move { n >= 40 }
    })
    .await;
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "nothing failed before the kill"
    );
    // Mid-stream: SIGKILL, no shutdown checkpoint.
    tokio::task::block_in_place(|| server.kill9());
    until(
        "the writers see the server gone",
        Duration::from_secs(60),
        || {
            let n = failed.load(Ordering::SeqCst);
            async move { n >= 8 }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    tokio::task::block_in_place(|| server.restart());
    // A new node on the same schema finds every acknowledged write (a write that failed
    // may have committed all the same: at least the acknowledged version).
    let after = PostgresStore::connect_with(&url, opts, popts)
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    for (i, (t, v)) in acked.iter().enumerate() {
        let s = after
            .peek(t)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged session {i} lost"));
        assert!(
            s.version() >= *v,
            "session {i}: v{} < acked v{v}",
            s.version()
        );
        let stored = s.get::<u64>("v").unwrap();
        assert_eq!(
            stored,
            (s.version() > 0).then_some(s.version()),
            "session {i}"
        );
    }
    assert!(after.len().await.unwrap() >= acked.len());
    println!(
        "{} sessions acknowledged before the kill, {} failed calls",
        acked.len(),
        failed.load(Ordering::SeqCst)
    );
}

/// Runs `call` with a hang guard well under the default response timeout (10 s): it
/// must end, with a typed `Unavailable` from the PostgreSQL backend.
async fn unavailable<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = sessiondb::Result<T>>,
) {
    match tokio::time::timeout(Duration::from_secs(9), call).await {
        Ok(Err(Error::Unavailable {
            backend: "postgres",
            ..
        })) => {}
        Ok(other) => panic!("{what}: expected Unavailable, got {other:?}"),
        Err(_) => panic!("{what}: no answer within 9 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_unavailable_at_once_and_the_pool_reconnects_after_it() {
    let Some(mut server) = PostgresServer::start() else {
        return;
    };
    let url = server.url();
    let popts = PostgresOptions::default()
        .schema("app")
        .pool_size(4)
        .response_timeout(Duration::from_secs(1));
    let store = PostgresStore::connect_with(&url, no_reaper(), popts.clone())
        .await
        .unwrap();
    let (t, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    store.put(&t, "cart", &1u32).await.unwrap();
    let events = store.subscribe().await.unwrap();
    tokio::task::block_in_place(|| server.kill9());
    for _ in 0..3 {
        unavailable("get", store.get(&t)).await;
        unavailable("put", store.put(&t, "cart", &2u32)).await;
        unavailable("create", store.create(NewSession::anonymous())).await;
        unavailable("sessions_of", store.sessions_of("alice")).await;
        unavailable("revoke_user", store.revoke_user("alice")).await;
        unavailable("subscribe", store.subscribe()).await;
    }
    unavailable(
        "connect",
        PostgresStore::connect_with(&url, no_reaper(), popts),
    )
    .await;

    tokio::task::block_in_place(|| server.restart());
    until("the store answers again", Duration::from_secs(30), || {
        let store = store.clone();
        async move { store.len().await.is_ok() }
    })
    .await;
    let s = store
        .get(&t)
        .await
        .unwrap()
        .expect("kept through the crash");
    assert_eq!(s.get::<u32>("cart").unwrap(), Some(1));
    assert_eq!(store.put(&t, "cart", &2u32).await.unwrap(), 2);
    let (t2, s2) = store.create(NewSession::for_user("alice")).await.unwrap();
    assert_eq!(store.sessions_of("alice").await.unwrap().len(), 2);
    // The subscription from before the crash resumes, and hears what came after.
    assert!(matches!(
        next(&events),
        Event::Created { session, .. } if session == s2.id()
    ));
    assert!(store.end(&t2).await.unwrap());
    assert!(matches!(
        next(&events),
        Event::Ended { session, reason: EndReason::Ended, .. } if session == s2.id()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_and_urls_are_refused_by_name_before_connecting() {
    // Nothing listens on port 1: what is refused is refused before a connection.
    let nowhere = "postgres://app@127.0.0.1:1/app";
    let p = PostgresOptions::default;
    let day = Duration::from_secs(86_400);
    let cases: Vec<(&str, &str, Options, PostgresOptions, &str)> = vec![
        (
            "a-b",
            nowhere,
            Options::default(),
            p().schema("a-b"),
            "PostgresOptions::schema",
        ),
        (
            "Pg_x",
            nowhere,
            Options::default(),
            p().schema("Pg_x"),
            "PostgresOptions::schema",
        ),
        (
            "pg_x",
            nowhere,
            Options::default(),
            p().schema("pg_x"),
            "PostgresOptions::schema",
        ),
        (
            "Upper",
            nowhere,
            Options::default(),
            p().schema("Sessions"),
            "PostgresOptions::schema",
        ),
        (
            "empty",
            nowhere,
            Options::default(),
            p().schema(""),
            "PostgresOptions::schema",
        ),
        (
            "digit",
            nowhere,
            Options::default(),
            p().schema("1x"),
            "PostgresOptions::schema",
        ),
        (
            "quote",
            nowhere,
            Options::default(),
            p().schema("x\";drop"),
            "PostgresOptions::schema",
        ),
        (
            "49",
            nowhere,
            Options::default(),
            p().schema("a".repeat(49)),
            "PostgresOptions::schema",
        ),
        (
            "pool 0",
            nowhere,
            Options::default(),
            p().pool_size(0),
            "PostgresOptions::pool_size",
        ),
        (
            "pool 1001",
            nowhere,
            Options::default(),
            p().pool_size(1001),
            "PostgresOptions::pool_size",
        ),
        (
            "events 99",
            nowhere,
            Options::default(),
            p().event_table_len(99),
            "PostgresOptions::event_table_len",
        ),
        (
            "events MAX",
            nowhere,
            Options::default(),
            p().event_table_len(usize::MAX),
            "PostgresOptions::event_table_len",
        ),
        (
            "timeout 0",
            nowhere,
            Options::default(),
            p().response_timeout(Duration::ZERO),
            "PostgresOptions::response_timeout",
        ),
        (
            "timeout 1 day + 1 ms",
            nowhere,
            Options::default(),
            p().response_timeout(day + Duration::from_millis(1)),
            "PostgresOptions::response_timeout",
        ),
        (
            "batch 0",
            nowhere,
            Options::default(),
            p().batch(0),
            "PostgresOptions::batch",
        ),
        (
            "batch 100001",
            nowhere,
            Options::default(),
            p().batch(100_001),
            "PostgresOptions::batch",
        ),
        (
            "bytes budget",
            nowhere,
            Options::default().budget(Some(sessiondb::Budget::bytes(1 << 20))),
            p(),
            "budget.max_bytes",
        ),
        (
            "lifetime 1 ns",
            nowhere,
            Options::default().lifetime(Duration::from_nanos(1)),
            p(),
            "lifetime",
        ),
        (
            "not a url",
            "not a url",
            Options::default(),
            p(),
            "postgres url",
        ),
        (
            "bad port",
            "postgres://app@127.0.0.1:notaport/app",
            Options::default(),
            p(),
            "postgres url",
        ),
        (
            "bad scheme",
            "mysql://app@127.0.0.1/app",
            Options::default(),
            p(),
            "postgres url",
        ),
    ];
    for (what, url, opts, popts, name) in cases {
        match PostgresStore::connect_with(url, opts, popts).await {
            Err(Error::InvalidOption { name: got, reason }) => {
                assert_eq!(got, name, "{what}: {reason}");
            }
            other => panic!("{what}: expected InvalidOption {name}, got {other:?}"),
        }
    }
    // A server that is not there: typed, and the URL's password is not in the message.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let with_password = format!("postgres://app:s3cret@127.0.0.1:{port}/app");
    match PostgresStore::connect_with(
        &with_password,
        Options::default(),
        p().response_timeout(Duration::from_secs(1)),
    )
    .await
    {
        Err(e @ Error::Unavailable { .. }) => {
            let (text, debug) = (e.to_string(), format!("{e:?}"));
            assert!(text.contains("refused"), "says why: {text}");
            assert!(
                !text.contains("s3cret") && !debug.contains("s3cret"),
                "{debug}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Why a URL is refused says which part, again without its password.
    let bad_port = "postgres://app:s3cret@127.0.0.1:notaport/app";
    match PostgresStore::connect(bad_port, Options::default()).await {
        Err(Error::InvalidOption { reason, .. }) => {
            assert!(reason.contains("port"), "says which part: {reason}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_at_the_edges_of_their_ranges_connect() {
    let Some(url) = url().await else { return };
    // The longest schema name: its channel (`<schema>_events`) is still an identifier.
    let own = fresh_schema();
    let longest = format!("{}_{own}", "s".repeat(47 - own.len()));
    assert_eq!(longest.len(), 48);
    let edges = [
        PostgresOptions::default().schema(longest),
        popts(&fresh_schema())
            .pool_size(1)
            .batch(1)
            .event_table_len(100),
        popts(&fresh_schema())
            .pool_size(1000)
            .batch(100_000)
            .event_table_len(1_000_000_000)
            .response_timeout(Duration::from_secs(86_400)),
    ];
    for popts in edges {
        let what = format!("{popts:?}");
        let store = PostgresStore::connect_with(&url, no_reaper(), popts)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let events = store.subscribe().await.unwrap();
        let (t, s) = store.create(NewSession::for_user("u")).await.unwrap();
        let t = store.rotate(&t).await.unwrap();
        assert_eq!(store.reap_expired().await.unwrap(), 0, "{what}");
        assert!(store.end(&t).await.unwrap(), "{what}");
        assert_eq!(store.clear().await.unwrap(), 0, "{what}");
        assert!(matches!(next(&events), Event::Created { session, .. } if session == s.id()));
    }
}

#[test]
fn connecting_outside_a_tokio_runtime_is_a_typed_error_not_a_panic() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let url = "postgres://app@127.0.0.1:1/app";
    let connect = std::pin::pin!(PostgresStore::connect(url, Options::default()));
    match connect.poll(&mut cx) {
        Poll::Ready(Err(Error::InvalidOption { name, reason })) => {
            assert_eq!(name, "PostgresStore::connect");
            assert!(reason.contains("tokio"), "{reason}");
        }
        other => panic!("expected InvalidOption at once, got {other:?}"),
    }
    let open = std::pin::pin!(sessiondb::Sessions::open(url, Options::default()));
    match open.poll(&mut cx) {
        Poll::Ready(Err(Error::InvalidOption { name, .. })) => {
            assert_eq!(name, "PostgresStore::connect");
        }
        other => panic!(
            "expected InvalidOption at once, got {:?}",
            other.map(|r| r.err())
        ),
    }
}

/// Events of one session arrive in the order its changes committed, even when the
/// transactions' ids say otherwise: a revocation locks the user's row (taking its
/// transaction id), then waits for a session of the user another transaction holds;
/// meanwhile a rotation of the user's other session, with a larger id, commits. The
/// subscriber must hear that session rotate and then end (an event's number is taken
/// once its row is locked; ordering by transaction id delivered the end first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_session_arrive_in_commit_order_under_contention() {
    let Some(url) = url().await else { return };
    let schema = fresh_schema();
    // The revocation waits out a 5 s hold: its statements get longer than that.
    let patient = popts(&schema).response_timeout(Duration::from_secs(60));
    let node_a = PostgresStore::connect_with(&url, no_reaper(), patient)
        .await
        .unwrap();
    let node_b = connect(&url, &schema, no_reaper()).await;
    let events = node_a.subscribe().await.unwrap();
    let (t1, s1) = node_a.create(NewSession::for_user("alice")).await.unwrap();
    let (t2, s2) = node_a.create(NewSession::for_user("alice")).await.unwrap();
    // The revocation locks the user's sessions in id order: hold the first.
    let (first, (second_token, second)) = if s1.id() < s2.id() {
        (s1.id(), (t2, s2.id()))
    } else {
        (s2.id(), (t1, s1.id()))
    };
    let hold = format!(
        "BEGIN; SELECT 1 FROM {schema}.sessions WHERE id = '{first}' FOR UPDATE;
         SELECT pg_sleep(5); COMMIT"
    );
    let holder = tokio::spawn({
        let url = url.clone();
        async move { psql(&url, &hold).await }
    });
    let activity = |filter: String| {
        let url = url.clone();
        async move {
            psql(
                &url,
                &format!("SELECT count(*) FROM pg_stat_activity WHERE {filter}"),
            )
            .await
                != "0"
        }
    };
    until("the row is held", Duration::from_secs(30), || {
        activity(format!(
            "wait_event = 'PgSleep' AND position('{schema}.sessions' in query) > 0"
        ))
    })
    .await;
    let revoke = tokio::spawn({
        let a = node_a.clone();
        async move { a.revoke_user("alice").await }
    });
    until("the revocation waits", Duration::from_secs(30), || {
        activity(format!(
            "application_name = 'sessiondb' AND wait_event_type = 'Lock'
             AND position('{schema}.sessions' in query) > 0"
        ))
    })
    .await;
    // Commits first: the second session is not locked yet.
    node_b.rotate(&second_token).await.unwrap();
    assert_eq!(revoke.await.unwrap().unwrap(), 2);
    holder.await.unwrap();
    let (_, marker) = node_a.create(NewSession::anonymous()).await.unwrap();
    let mut of_second = Vec::new();
    loop {
        match next(&events) {
            Event::Created { session, .. } if session == marker.id() => break,
            Event::Created { session, .. } if session == second => of_second.push("created"),
            Event::Rotated { session } if session == second => of_second.push("rotated"),
            Event::Ended { session, .. } if session == second => of_second.push("ended"),
            _ => {}
        }
    }
    assert_eq!(of_second, ["created", "rotated", "ended"], "commit order");
}

/// The children of `postmaster` (its backends), from /proc.
fn children(postmaster: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

/// Sends `SIGCONT` to the processes when dropped, so a failed test leaves no server
/// stopped.
struct Stopped(Vec<u32>);

impl Stopped {
    /// Stops the postmaster first, so it forks no new backend, then its children until
    /// a pass finds none left running: a backend forked while the list was being read
    /// (a pool opening a connection in the background) is stopped too.
    fn server(postmaster: u32) -> Stopped {
        let mut stopped = vec![postmaster];
        // SAFETY: kill has no memory preconditions; these are our server's processes.
        unsafe { libc::kill(postmaster as libc::pid_t, libc::SIGSTOP) };
        loop {
            let new: Vec<u32> = children(postmaster)
                .into_iter()
                .filter(|p| !stopped.contains(p))
                .collect();
            if new.is_empty() {
                return Stopped(stopped);
            }
            for p in new {
                // SAFETY: as above.
                unsafe { libc::kill(p as libc::pid_t, libc::SIGSTOP) };
                stopped.push(p);
            }
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &p in &self.0 {
            // SAFETY: as above.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGCONT) };
        }
    }
}

/// A server that stops answering (frozen, or a network partition that keeps the TCP
/// connection open) fails a call within twice `PostgresOptions::response_timeout`, on a
/// pooled connection too (which is then dropped, not reused), and the store works again
/// once the server answers. Here the server's processes are `SIGSTOP`ped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_unavailable_within_the_response_timeout() {
    let Some(server) = PostgresServer::start() else {
        return;
    };
    let popts = PostgresOptions::default()
        .schema("app")
        .pool_size(2)
        .response_timeout(Duration::from_secs(1));
    let store = PostgresStore::connect_with(&server.url(), no_reaper(), popts.clone())
        .await
        .unwrap();
    let (t, _) = store.create(NewSession::anonymous()).await.unwrap();
    let stopped = Stopped::server(server.pid());
    // A new connection is bounded (its connect timeout); a pooled one is not.
    unavailable(
        "connect",
        PostgresStore::connect_with(&server.url(), no_reaper(), popts),
    )
    .await;
    unavailable("get", store.get(&t)).await;
    unavailable("put", store.put(&t, "k", &1u8)).await;
    drop(stopped);
    until("the store answers again", Duration::from_secs(30), || {
        let (store, t) = (store.clone(), t.clone());
        async move { store.get(&t).await.is_ok() }
    })
    .await;
}
