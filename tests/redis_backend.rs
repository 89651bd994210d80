//! What only the Redis backend has to prove: what it writes into Redis (hashed tokens,
//! a TTL on every per-session key), how its user index repairs itself, two app nodes
//! sharing one server, and what survives a `redis-server` crash under each persistence
//! setting. Each test starts its own `redis-server` (tests/support/redis_server.rs);
//! skipped with a message if it is not installed, unless `SESSIONDB_REQUIRE_REDIS=1`.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use redis::AsyncCommands;
use redis_server::{AOF_ALWAYS, NO_PERSISTENCE, RedisServer};
use sessiondb::{EndReason, Error, Event, NewSession, Options, RedisOptions, RedisStore, Token};

async fn connect(server: &RedisServer, prefix: &str, opts: Options) -> RedisStore {
    RedisStore::connect_with(
        &server.url(),
        opts,
        RedisOptions::default()
            .prefix(prefix)
            .response_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every key and every stored byte string in the server.
async fn dump(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, Vec<Vec<u8>>)> {
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    let mut out = Vec::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(conn).await.unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![conn.get(&k).await.unwrap()],
            "hash" => {
                let all: Vec<Vec<u8>> = redis::cmd("HGETALL")
                    .arg(&k)
                    .query_async(conn)
                    .await
                    .unwrap();
                all
            }
            "zset" => conn.zrange(&k, 0, -1).await.unwrap(),
            "stream" => {
                let v: redis::Value = redis::cmd("XRANGE")
                    .arg(&k)
                    .arg("-")
                    .arg("+")
                    .query_async(conn)
                    .await
                    .unwrap();
                vec![format!("{v:?}").into_bytes()]
            }
            other => panic!("unexpected key type {other} for {k}"),
        };
        out.push((k, values));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reach_redis_only_as_their_hash() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        let (t, _) = store
            .create(NewSession::for_user(format!("u{i}")))
            .await
            .unwrap();
        let t = store.login(&t, "alice").await.unwrap();
        let rotated = store.rotate(&t).await.unwrap();
        tokens.push(t);
        tokens.push(rotated);
    }
    let chosen = Token::from_bytes([9u8; 24]);
    store
        .create_with_token(&chosen, NewSession::anonymous())
        .await
        .unwrap();
    tokens.push(chosen);
    let mut conn = raw(&server).await;
    let all = dump(&mut conn).await;
    assert!(all.len() > 10, "the store wrote its keys: {all:?}");
    for t in &tokens {
        let text = t.to_string();
        for (k, values) in &all {
            assert!(!k.contains(&text), "token in key {k}");
            for v in values {
                assert!(!contains(v, text.as_bytes()), "token text in {k}");
                assert!(!contains(v, t.as_bytes()), "token bytes in {k}");
            }
        }
        // What Redis has instead: the hash, as on disk.
        let h = format!("{:032x}", t.hash().as_u128());
        assert!(all.iter().any(|(k, _)| k.ends_with(&h)), "hash {h} keyed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_per_session_key_expires_so_nothing_can_leak() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    for i in 0..10 {
        let (t, _) = store
            .create(NewSession::for_user(format!("u{}", i % 3)).lifetime(Duration::from_secs(3600)))
            .await
            .unwrap();
        store.rotate(&t).await.unwrap();
    }
    let mut conn = raw(&server).await;
    let keys: Vec<String> = conn.keys("app:*").await.unwrap();
    for k in keys {
        let ttl: i64 = conn.pttl(&k).await.unwrap();
        if k == "app:x" || k == "app:e" {
            // The registry empties itself as sessions end; the stream is capped.
            continue;
        }
        assert!(ttl > 0, "{k} has no expiry (pttl {ttl})");
        // Deadline (at most 1 h: the idle timeout is 24 h, the lifetime 1 h) plus
        // the 10-minute retention.
        assert!(ttl <= 4_200_000, "{k} lives too long: {ttl} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_index_repairs_itself_when_a_session_vanishes_behind_its_back() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let (a, sa) = store.create(NewSession::for_user("alice")).await.unwrap();
    let (b, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    // An operator (or eviction under maxmemory) deletes one session's hash directly.
    let mut conn = raw(&server).await;
    let h = format!("{:032x}", a.hash().as_u128());
    let _: () = conn.del(format!("app:s:{h}")).await.unwrap();
    let listed = store.sessions_of("alice").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_ne!(listed[0].id(), sa.id());
    let members: Vec<String> = conn.zrange("app:u:alice", 0, -1).await.unwrap();
    assert_eq!(members.len(), 1, "the dangling entry was pruned");
    assert_eq!(store.revoke_user("alice").await.unwrap(), 1);
    assert!(store.get(&b).await.unwrap().is_none());
    let exists: bool = conn.exists("app:u:alice").await.unwrap();
    assert!(!exists, "a revoked user's index is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_sessions_revocation_and_events() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let node_a = connect(&server, "app", Options::default()).await;
    let node_b = connect(&server, "app", Options::default()).await;
    let events_on_b = node_b.subscribe().await.unwrap();
    let (visitor, _) = node_a.create(NewSession::anonymous()).await.unwrap();
    let token = node_a.login(&visitor, "alice").await.unwrap();
    // The load balancer sends the next request to node B.
    let seen = node_b.get(&token).await.unwrap().expect("logged in on B");
    assert_eq!(seen.user().map(|u| u.as_str()), Some("alice"));
    node_b.put(&token, "theme", &"dark").await.unwrap();
    let back = node_a.get(&token).await.unwrap().unwrap();
    assert_eq!(
        back.get::<String>("theme").unwrap().as_deref(),
        Some("dark")
    );
    // "Sign out everywhere" from B ends it for A.
    assert_eq!(node_b.revoke_user("alice").await.unwrap(), 1);
    assert!(node_a.get(&token).await.unwrap().is_none());
    // B heard A's events.
    let mut kinds = Vec::new();
    while let Ok(e) = events_on_b.recv_timeout(Duration::from_secs(5)) {
        let done = matches!(e, Event::UserRevoked { .. });
        kinds.push(e);
        if done {
            break;
        }
    }
    assert!(matches!(kinds[0], Event::Created { .. }), "{kinds:?}");
    assert!(kinds.iter().any(|e| matches!(e, Event::Rotated { .. })));
    assert!(kinds.iter().any(|e| matches!(e, Event::UserBound { .. })));
    assert!(kinds.iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::Revoked,
            ..
        }
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_with_different_prefixes_share_a_server_without_seeing_each_other() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let one = connect(&server, "one", Options::default()).await;
    let two = connect(&server, "two", Options::default()).await;
    let (t1, _) = one.create(NewSession::for_user("alice")).await.unwrap();
    let (t2, _) = two.create(NewSession::for_user("alice")).await.unwrap();
    assert!(two.get(&t1).await.unwrap().is_none());
    assert_eq!(one.sessions_of("alice").await.unwrap().len(), 1);
    assert_eq!(one.clear().await.unwrap(), 1);
    assert!(two.get(&t2).await.unwrap().is_some());
    assert_eq!(two.len().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_flushed_from_the_server_is_loaded_again() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let (t, _) = store.create(NewSession::anonymous()).await.unwrap();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(store.get(&t).await.unwrap().is_some());
}

/// Sessions, with data and users, created and acknowledged before a crash.
async fn populate(store: &RedisStore) -> Vec<(Token, sessiondb::SessionId)> {
    let mut out = Vec::new();
    for i in 0..50u32 {
        let (t, _) = store.create(NewSession::anonymous()).await.unwrap();
        let t = store.login(&t, &format!("user{}", i % 5)).await.unwrap();
        store.put(&t, "n", &i).await.unwrap();
        let s = store.get(&t).await.unwrap().unwrap();
        out.push((t, s.id()));
    }
    out
}

/// Waits until the store answers again after a restart (its connection reconnects).
async fn until_answering(store: &RedisStore) {
    for _ in 0..100 {
        if store.len().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the store did not reconnect within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aof_always_every_acknowledged_session_survives_a_redis_crash() {
    let Some(mut server) = RedisServer::start(AOF_ALWAYS) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let sessions = populate(&store).await;
    assert_eq!(store.revoke_user("user0").await.unwrap(), 10);
    server.kill(); // SIGKILL: no shutdown, no final fsync
    // While it is down, calls fail with a typed error, not a panic.
    match store.get(&sessions[1].0).await {
        Err(Error::Unavailable {
            backend: "redis", ..
        }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    server.restart();
    until_answering(&store).await;
    // Everything acknowledged is there: sessions, data, user indexes, the revocation.
    for (i, (t, id)) in sessions.iter().enumerate() {
        let got = store.get(t).await.unwrap();
        if i % 5 == 0 {
            assert!(got.is_none(), "a revoked session stays revoked");
            continue;
        }
        let got = got.expect("survived the crash");
        assert_eq!(got.id(), *id);
        assert_eq!(got.get::<u32>("n").unwrap(), Some(i as u32));
    }
    assert_eq!(store.len().await.unwrap(), 40);
    assert_eq!(store.sessions_of("user1").await.unwrap().len(), 10);
    assert_eq!(store.revoke_user("user1").await.unwrap(), 10);
    // And the same store keeps working.
    let (t, _) = store.create(NewSession::for_user("after")).await.unwrap();
    assert!(store.get(&t).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_a_redis_crash_logs_everyone_out_and_the_store_carries_on() {
    let Some(mut server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let sessions = populate(&store).await;
    server.kill();
    server.restart();
    until_answering(&store).await;
    for (t, _) in &sessions {
        assert!(store.get(t).await.unwrap().is_none(), "nothing survives");
        assert!(matches!(store.put(t, "n", &1).await, Err(Error::Ended)));
    }
    assert_eq!(store.len().await.unwrap(), 0);
    assert!(store.sessions_of("user1").await.unwrap().is_empty());
    let (t, _) = store.create(NewSession::for_user("after")).await.unwrap();
    assert!(store.get(&t).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_server_that_is_not_there_is_a_typed_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = RedisStore::connect_with(
        &format!("redis://app:s3cret@127.0.0.1:{port}/"),
        Options::default(),
        RedisOptions::default().response_timeout(Duration::from_millis(500)),
    )
    .await;
    match r {
        Err(e @ Error::Unavailable { .. }) => {
            let text = e.to_string();
            assert!(text.contains("reachable"), "{text}");
            // Errors get logged: the server's address, never the URL's password.
            assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
            assert!(!text.contains("s3cret") && !format!("{e:?}").contains("s3cret"));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        RedisStore::connect("not a url", Options::default()).await,
        Err(Error::InvalidOption { .. })
    ));
    // TLS needs the redis crate's TLS feature (an app can enable it on its own
    // dependency); without it, a clear error rather than a plaintext connection.
    match RedisStore::connect("rediss://127.0.0.1:1/", Options::default()).await {
        Err(e @ (Error::InvalidOption { .. } | Error::Unavailable { .. })) => {
            println!("rediss:// without TLS support: {e}");
        }
        other => panic!("expected a typed error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_open_picks_redis_for_a_unix_socket_url_too() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("redis.sock");
    let sock_arg = sock.to_str().unwrap().to_owned();
    let args = [
        "--save",
        "",
        "--unixsocket",
        &sock_arg,
        "--unixsocketperm",
        "700",
    ];
    let Some(_server) = RedisServer::start(&args) else {
        return;
    };
    let sessions =
        sessiondb::Sessions::open(&format!("redis+unix://{sock_arg}"), Options::default())
            .await
            .unwrap();
    assert_eq!(sessions.backend_name(), "redis");
    let (t, _) = sessions
        .create(NewSession::for_user("alice"))
        .await
        .unwrap();
    assert!(sessions.get(&t).await.unwrap().is_some());
}

/// Not a test: how long one call takes, the store's script next to a raw command on
/// the same server, interleaved so machine noise hits both alike.
/// `cargo test --release --features redis --test redis_backend measure -- --ignored --nocapture`
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn measure_call_latency() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let mut conn = raw(&server).await;
    let (t, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    store.put(&t, "profile", &"x".repeat(180)).await.unwrap();
    let _: () = conn.set("raw", "x".repeat(200)).await.unwrap();
    let n = 5_000;
    let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..4 {
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(store.get(&t).await.unwrap());
        }
        ours += t0.elapsed();
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            let v: Option<Vec<u8>> = conn.get("raw").await.unwrap();
            std::hint::black_box(v);
        }
        theirs += t0.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (4 * n) as f64;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    for line in stats
        .lines()
        .filter(|l| l.contains("evalsha") || l.contains("cmdstat_get:"))
    {
        println!("server side: {line}");
    }
    println!(
        "get: RedisStore {:.1} us, raw GET {:.1} us (ratio {:.2})",
        per(ours),
        per(theirs),
        per(ours) / per(theirs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_needs_a_hash_tag_prefix() {
    // Refused before connecting: without one tag, a session's keys would land in
    // different slots, which no script can change together.
    match RedisStore::connect_cluster(
        &["redis://127.0.0.1:1/"],
        Options::default(),
        RedisOptions::default().prefix("sessiondb"),
    )
    .await
    {
        Err(Error::InvalidOption { name, reason }) => {
            assert_eq!(name, "RedisOptions::prefix");
            assert!(reason.contains("hash tag"), "{reason}");
        }
        other => panic!("expected the prefix to be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_is_refused_rather_than_ignored_on_redis() {
    let opts = Options::default().budget(Some(sessiondb::Budget::bytes(1 << 20)));
    // Refused before connecting (nothing listens on port 1).
    match RedisStore::connect("redis://127.0.0.1:1/", opts).await {
        Err(Error::InvalidOption { name, reason }) => {
            assert_eq!(name, "budget.max_bytes");
            assert!(reason.contains("maxmemory"), "{reason}");
        }
        other => panic!(
            "expected max_bytes to be refused, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_deadline_keeps_none_through_redis() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let embedded = sessiondb::Store::in_memory().unwrap();
    let (token, _) = embedded
        .create(NewSession::for_user("alice").idle_timeout(Duration::ZERO))
        .unwrap();
    embedded
        .set_expiry(&token, sessiondb::Timestamp::MAX)
        .unwrap();
    let mut records = Vec::new();
    embedded
        .export(|r| {
            records.push(r);
            Ok(())
        })
        .unwrap();
    assert!(store.import(records.pop().unwrap()).await.unwrap());
    let got = store.get(&token).await.unwrap().expect("imported");
    assert_eq!(got.absolute_deadline(), sessiondb::Timestamp::MAX);
    assert_eq!(got.expires_at(), sessiondb::Timestamp::MAX);
    let mut back = Vec::new();
    store
        .export(|r| {
            back.push(r);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(back[0].absolute, sessiondb::Timestamp::MAX);
}

/// A short run of what a store does, on Redis: nothing may fail.
async fn workload(store: &RedisStore, what: &str) {
    let events = store.subscribe().await.unwrap();
    let (t, _) = store.create(NewSession::for_user("u")).await.unwrap();
    let (anon, _) = store.create(NewSession::anonymous()).await.unwrap();
    assert!(store.get(&t).await.unwrap().is_some(), "{what}");
    assert_eq!(store.put(&t, "k", &1u8).await.unwrap(), 1, "{what}");
    store.update(&t, |d| d.insert("k", &2u8)).await.unwrap();
    store.bind_user(&anon, "w").await.unwrap();
    let anon = store.rotate(&anon).await.unwrap();
    let anon = store.login(&anon, "w").await.unwrap();
    store.unbind_user(&anon).await.unwrap();
    store.extend(&t, Duration::from_secs(1)).await.unwrap();
    store.touch(&t).await.unwrap();
    assert_eq!(store.sessions_of("u").await.unwrap().len(), 1, "{what}");
    store.reap_expired().await.unwrap();
    assert!(store.end(&anon).await.unwrap(), "{what}");
    assert_eq!(store.len().await.unwrap(), 1, "{what}");
    let first = tokio::task::spawn_blocking(move || events.recv_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(first.is_ok(), "{what}: no event");
    assert_eq!(store.clear().await.unwrap(), 1, "{what}");
}

/// Issue 18: every `RedisOptions` setter, and the `Options` that reach the script, at the
/// extremes of their types: each either connects and runs the workload, or is refused
/// at connect with `Error::InvalidOption` naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_at_the_extremes_of_their_types_work_or_are_refused_by_name() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let r = || RedisOptions::default().response_timeout(Duration::from_secs(5));
    let o = Options::default;
    let (ns, ms, day) = (
        Duration::from_nanos(1),
        Duration::from_millis(1),
        Duration::from_secs(86_400),
    );
    let cases: Vec<(String, Options, RedisOptions, Option<&str>)> = vec![
        (
            "retention 0".into(),
            o(),
            r().retention(Duration::ZERO),
            Some("RedisOptions::retention"),
        ),
        (
            "retention 999 ms".into(),
            o(),
            r().retention(ms * 999),
            Some("RedisOptions::retention"),
        ),
        ("retention 1 s".into(), o(), r().retention(ms * 1000), None),
        (
            "retention 365 days".into(),
            o(),
            r().retention(day * 365),
            None,
        ),
        (
            "retention 365 days + 1 ms".into(),
            o(),
            r().retention(day * 365 + ms),
            Some("RedisOptions::retention"),
        ),
        (
            "retention MAX".into(),
            o(),
            r().retention(Duration::MAX),
            Some("RedisOptions::retention"),
        ),
        (
            "stream 0".into(),
            o(),
            r().event_stream_len(0),
            Some("RedisOptions::event_stream_len"),
        ),
        (
            "stream 99".into(),
            o(),
            r().event_stream_len(99),
            Some("RedisOptions::event_stream_len"),
        ),
        ("stream 100".into(), o(), r().event_stream_len(100), None),
        (
            "stream 10^9".into(),
            o(),
            r().event_stream_len(1_000_000_000),
            None,
        ),
        (
            "stream 10^9 + 1".into(),
            o(),
            r().event_stream_len(1_000_000_001),
            Some("RedisOptions::event_stream_len"),
        ),
        (
            "stream MAX".into(),
            o(),
            r().event_stream_len(usize::MAX),
            Some("RedisOptions::event_stream_len"),
        ),
        (
            "timeout 0".into(),
            o(),
            r().response_timeout(Duration::ZERO),
            Some("RedisOptions::response_timeout"),
        ),
        (
            "timeout 1 ns".into(),
            o(),
            r().response_timeout(ns),
            Some("RedisOptions::response_timeout"),
        ),
        ("timeout 1 day".into(), o(), r().response_timeout(day), None),
        (
            "timeout MAX".into(),
            o(),
            r().response_timeout(Duration::MAX),
            None,
        ),
        (
            "lifetime MAX".into(),
            o().lifetime(Duration::MAX),
            r(),
            None,
        ),
        (
            "lifetime 1 ns".into(),
            o().lifetime(ns),
            r(),
            Some("lifetime"),
        ),
        (
            "idle MAX".into(),
            o().idle_timeout(Duration::MAX),
            r(),
            None,
        ),
        (
            "auth MAX".into(),
            o().auth_lifetime(Some(Duration::MAX)),
            r(),
            None,
        ),
        (
            "touch 0".into(),
            o().touch_interval(Duration::ZERO),
            r(),
            None,
        ),
        (
            "touch MAX".into(),
            o().touch_interval(Duration::MAX),
            r(),
            None,
        ),
        (
            "grace MAX".into(),
            o().rotation_grace(Duration::MAX),
            r(),
            None,
        ),
        (
            "grace 0".into(),
            o().rotation_grace(Duration::ZERO),
            r(),
            None,
        ),
        (
            "per user MAX refuse".into(),
            o().max_sessions_per_user(Some(usize::MAX), sessiondb::LimitPolicy::Refuse),
            r(),
            None,
        ),
        (
            "per user MAX end oldest".into(),
            o().max_sessions_per_user(Some(usize::MAX), sessiondb::LimitPolicy::EndOldest),
            r(),
            None,
        ),
        (
            "per user 1".into(),
            o().max_sessions_per_user(Some(1), sessiondb::LimitPolicy::Refuse),
            r(),
            None,
        ),
        (
            "reaper MAX".into(),
            o().reaper_interval(Some(Duration::MAX)),
            r(),
            None,
        ),
        (
            "reaper 1 ms".into(),
            o().reaper_interval(Some(ms)),
            r(),
            None,
        ),
        ("events 1".into(), o().event_capacity(1), r(), None),
        ("events 2^20".into(), o().event_capacity(1 << 20), r(), None),
        (
            "events 2^46".into(),
            o().event_capacity(1 << 46),
            r(),
            Some("event_capacity"),
        ),
        (
            "events MAX".into(),
            o().event_capacity(usize::MAX),
            r(),
            Some("event_capacity"),
        ),
        (
            "data 1 GiB".into(),
            o().limits(sessiondb::Limits {
                max_data_bytes: 1 << 30,
                max_value_bytes: 1 << 30,
                ..Default::default()
            }),
            r(),
            None,
        ),
    ];
    for (i, (what, opts, ropts, refused)) in cases.into_iter().enumerate() {
        let ropts = ropts.prefix(format!("x{i}"));
        let connected = tokio::time::timeout(
            Duration::from_secs(30),
            RedisStore::connect_with(&server.url(), opts, ropts),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: connecting hung"));
        match (refused, connected) {
            (None, Ok(store)) => {
                tokio::time::timeout(Duration::from_secs(60), workload(&store, &what))
                    .await
                    .unwrap_or_else(|_| panic!("{what}: the workload hung"));
            }
            (Some(name), Err(Error::InvalidOption { name: got, reason })) => {
                assert_eq!(got, name, "{what}: {reason}");
            }
            (refused, other) => panic!("{what}: expected {refused:?}, got {:?}", other.err()),
        }
    }
    // The shortest timeout accepted, 1 ms, is shorter than a loaded machine may take to
    // answer: it is accepted, and each call either works or fails with a typed
    // `Unavailable` "timed out" — never another error, never a hang.
    let tight = |r: Result<(), Error>| match r {
        Ok(()) => {}
        Err(Error::Unavailable { reason, .. }) => assert!(reason.contains("timed out"), "{reason}"),
        Err(other) => panic!("timeout 1 ms: {other:?}"),
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        RedisStore::connect_with(&server.url(), o(), r().response_timeout(ms).prefix("tight")),
    )
    .await
    .expect("timeout 1 ms: connecting hung");
    match connected {
        Err(Error::InvalidOption { name, reason }) => panic!("1 ms refused as {name}: {reason}"),
        Err(e) => tight(Err(e)),
        Ok(store) => {
            for _ in 0..50 {
                let call = async {
                    let (t, _) = store.create(NewSession::for_user("u")).await?;
                    store.get(&t).await?;
                    store.end(&t).await.map(|_| ())
                };
                let done = tokio::time::timeout(Duration::from_secs(30), call).await;
                tight(done.expect("timeout 1 ms: a call hung"));
            }
        }
    }
}

/// Issue 18: what a Redis store is given per call, at the extremes: durations past what
/// the script's numbers hold saturate to "never", and an imported record with times at
/// the end of time is stored as "never" rather than as garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_and_times_at_the_extremes_work_on_redis() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let max = sessiondb::Timestamp::MAX;
    let (t, s) = store
        .create(
            NewSession::for_user("u")
                .lifetime(Duration::MAX)
                .idle_timeout(Duration::MAX),
        )
        .await
        .unwrap();
    assert!(s.idle_timeout().is_some());
    // Redis caps a lifetime at 100 years (its deadlines are Lua doubles).
    let century = Duration::from_secs(99 * 365 * 86_400);
    assert!(s.expires_at() > s.created_at().saturating_add(century));
    for d in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        assert!(matches!(
            store
                .create(NewSession::anonymous().lifetime(d.min(Duration::from_micros(999))))
                .await,
            Err(Error::InvalidOption {
                name: "NewSession::lifetime",
                ..
            })
        ));
        store.extend(&t, d).await.unwrap();
    }
    // The idle deadline (capped at 100 years too) is the earlier one; without it, the
    // session has none.
    assert!(store.set_expiry(&t, max).await.unwrap() < max);
    let (t, never) = store
        .create(NewSession::for_user("u").idle_timeout(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(store.set_expiry(&t, max).await.unwrap(), max);
    assert_eq!(store.extend(&t, Duration::MAX).await.unwrap(), max);
    assert_eq!(
        store.get(&t).await.unwrap().unwrap().absolute_deadline(),
        max
    );
    let mut records = Vec::new();
    store
        .export(|r| {
            records.push(r);
            Ok(())
        })
        .await
        .unwrap();
    let rec = records.into_iter().find(|r| r.id == never.id()).unwrap();
    assert!(store.end(&t).await.unwrap());
    let at_the_end = sessiondb::SessionRecord {
        created: max,
        last_seen: max,
        authenticated: Some(max),
        absolute: max,
        idle_timeout: Some(Duration::MAX),
        ..rec
    };
    // Stored as "never" (the latest time the script's doubles hold), not as garbage:
    // it reads, writes and exports back.
    assert!(store.import(at_the_end).await.unwrap());
    let got = store.get(&t).await.unwrap().expect("imported");
    assert_eq!(got.absolute_deadline(), max);
    assert_eq!(store.put(&t, "k", &1u8).await.unwrap(), 1);
    let mut back = Vec::new();
    store
        .export(|r| {
            back.push(r);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(back.len(), 2);
    assert!(store.len().await.is_ok());
    store.reap_expired().await.unwrap();
}

/// How many times the server ran a script (`EVALSHA` and `EVAL`), from `INFO
/// commandstats`.
async fn script_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    calls(conn, &["evalsha", "eval"]).await
}

/// How many times the server ran the named commands, from `INFO commandstats`.
async fn calls(conn: &mut redis::aio::MultiplexedConnection, commands: &[&str]) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| {
            commands
                .iter()
                .any(|c| l.starts_with(&format!("cmdstat_{c}:")))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_no_script_unless_a_touch_is_due_and_listing_runs_the_read_only_one() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let (t, s) = store.create(NewSession::for_user("alice")).await.unwrap();
    let (gone, _) = store.create(NewSession::anonymous()).await.unwrap();
    assert!(store.end(&gone).await.unwrap());
    let mut conn = raw(&server).await;
    let before = script_calls(&mut conn).await;
    let (times_before, started) = (calls(&mut conn, &["time"]).await, std::time::Instant::now());
    for _ in 0..20 {
        assert_eq!(store.get(&t).await.unwrap().unwrap().id(), s.id());
        assert_eq!(store.peek(&t).await.unwrap().unwrap().id(), s.id());
        assert!(store.get(&gone).await.unwrap().is_none());
    }
    assert_eq!(
        script_calls(&mut conn).await,
        before,
        "a read with no touch due, of a live or an ended session, runs no script"
    );
    // The server's clock is read about once a second, not once a read.
    let times = calls(&mut conn, &["time"]).await - times_before;
    let seconds = started.elapsed().as_secs();
    assert!(
        (1..=seconds + 1).contains(&times),
        "{times} TIME calls for 60 reads in {seconds} s"
    );
    assert_eq!(store.sessions_of("alice").await.unwrap().len(), 1);
    assert_eq!(
        script_calls(&mut conn).await,
        before + 1,
        "one read-only script"
    );
    // A rotated-away token within its grace resolves through the script.
    let t2 = store.rotate(&t).await.unwrap();
    let after_rotate = script_calls(&mut conn).await;
    assert_eq!(store.get(&t).await.unwrap().unwrap().id(), s.id());
    assert_eq!(script_calls(&mut conn).await, after_rotate + 1);
    assert_eq!(store.get(&t2).await.unwrap().unwrap().id(), s.id());
    assert_eq!(script_calls(&mut conn).await, after_rotate + 1);
}

/// Replaces the session at `t` with a hash of the layout sessiondb wrote before a
/// session became one string: the same session, version `v`, one data entry.
async fn store_as_an_earlier_version_did(
    conn: &mut redis::aio::MultiplexedConnection,
    t: &Token,
    s: &sessiondb::Session,
    v: u64,
) {
    let key = format!("app:s:{:032x}", t.hash().as_u128());
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    let ms = |ts: sessiondb::Timestamp| ts.as_millis().to_string();
    let id = s.id().to_string().replace('-', "");
    let _: () = conn.del(&key).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&[
            ("id", id.as_str()),
            ("u", s.user().unwrap().as_str()),
            ("c", &ms(s.created_at())),
            ("ls", &ms(s.last_seen())),
            ("a", &ms(s.authenticated_at().unwrap())),
            ("abs", &ms(s.absolute_deadline())),
            ("idle", "0"),
            ("v", &v.to_string()),
            ("dsz", "13"), // 6 + the key + the value, as the store counts it
            ("d:cart", "old"),
        ])
        .query_async(conn)
        .await
        .unwrap();
    let _: () = conn.pexpire(&key, ttl).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stored_as_hashes_by_an_earlier_version_are_read_and_converted_by_a_write() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let (t, s) = store
        .create(NewSession::for_user("alice").idle_timeout(Duration::ZERO))
        .await
        .unwrap();
    let (other, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    let mut conn = raw(&server).await;
    store_as_an_earlier_version_did(&mut conn, &t, &s, 5).await;
    let key = format!("app:s:{:032x}", t.hash().as_u128());
    let kind = |conn: &mut redis::aio::MultiplexedConnection| {
        let key = key.clone();
        let mut conn = conn.clone();
        async move {
            let k: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            k
        }
    };
    assert_eq!(kind(&mut conn).await, "hash");

    // Read through every path: the scriptless get and peek fall back to the script,
    // the listing to the main script.
    for _ in 0..3 {
        let got = store.get(&t).await.unwrap().expect("the old session reads");
        assert_eq!((got.id(), got.version()), (s.id(), 5));
        assert_eq!(got.data().get_raw("cart"), Some(&b"old"[..]));
        assert_eq!(got.user().unwrap().as_str(), "alice");
        assert_eq!(store.peek(&t).await.unwrap().unwrap().version(), 5, "peek");
    }
    let listed = store.sessions_of("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|x| x.id() == s.id() && x.version() == 5));
    assert_eq!(kind(&mut conn).await, "hash", "a read changes nothing");

    // A write converts it, keeping what it held.
    assert_eq!(store.put_raw(&t, "seen", b"1").await.unwrap(), 6);
    assert_eq!(kind(&mut conn).await, "string");
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 0, "the converted key keeps an expiry: {ttl}");
    let before = script_calls(&mut conn).await;
    let got = store.get(&t).await.unwrap().unwrap();
    assert_eq!(
        script_calls(&mut conn).await,
        before,
        "read without a script now"
    );
    assert_eq!(got.version(), 6);
    assert_eq!(got.data().get_raw("cart"), Some(&b"old"[..]));
    assert_eq!(got.data().get_raw("seen"), Some(&b"1"[..]));

    // Every kind of write converts: a rotation, a data removal, and revocation ends
    // old and new alike.
    store_as_an_earlier_version_did(&mut conn, &t, &s, 9).await;
    let t2 = store.rotate(&t).await.unwrap();
    let got = store.get(&t2).await.unwrap().unwrap();
    assert_eq!(
        (got.version(), got.data().get_raw("cart")),
        (9, Some(&b"old"[..]))
    );
    store_as_an_earlier_version_did(&mut conn, &t2, &s, 10).await;
    assert_eq!(store.remove(&t2, "cart").await.unwrap(), 11);
    assert!(
        store
            .get(&t2)
            .await
            .unwrap()
            .unwrap()
            .data()
            .get_raw("cart")
            .is_none()
    );
    store_as_an_earlier_version_did(&mut conn, &t2, &s, 12).await;
    assert_eq!(store.revoke_user("alice").await.unwrap(), 2);
    assert!(store.get(&t2).await.unwrap().is_none());
    assert!(store.get(&other).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_session_that_does_not_decode_is_an_error_not_a_panic_or_a_miss() {
    let Some(server) = RedisServer::start(NO_PERSISTENCE) else {
        return;
    };
    let store = connect(&server, "app", Options::default()).await;
    let (t, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    let mut conn = raw(&server).await;
    let key = format!("app:s:{:032x}", t.hash().as_u128());
    let _: () = conn.set(&key, b"\x9b\x02garbage").await.unwrap();
    for _ in 0..3 {
        // Twice through the scriptless read (with and without TIME), once more.
        let e = store.get(&t).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    }
    assert!(matches!(
        store.put_raw(&t, "k", b"v").await.unwrap_err(),
        Error::Unavailable { .. }
    ));
}
