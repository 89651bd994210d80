//! The operations every backend shares, run against each through the public async
//! handle [`Sessions`]: the embedded store in memory, the embedded store on its log
//! with `Durability::Sync`, and Redis (a `redis-server` this test starts on a free
//! port; skipped with a message if it is not installed, unless
//! `SESSIONDB_REQUIRE_REDIS=1`). One scenario, three backends: a difference between
//! them is a failure.

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::{NO_PERSISTENCE, RedisServer};
use sessiondb::{Durability, NewSession, Options, RedisOptions, RedisStore, Sessions, Token};

/// A backend for one test, and what keeps it alive.
struct Backend {
    sessions: Sessions,
    _dir: Option<tempfile::TempDir>,
    _server: Option<RedisServer>,
}

impl std::ops::Deref for Backend {
    type Target = Sessions;
    fn deref(&self) -> &Sessions {
        &self.sessions
    }
}

async fn memory(opts: Options) -> Option<Backend> {
    let opts = opts.durability(Durability::Memory);
    Some(Backend {
        sessions: Sessions::open("memory:", opts).await.unwrap(),
        _dir: None,
        _server: None,
    })
}

async fn log(opts: Options) -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let opts = opts.durability(Durability::Sync);
    let sessions = Sessions::open(dir.path().to_str().unwrap(), opts)
        .await
        .unwrap();
    Some(Backend {
        sessions,
        _dir: Some(dir),
        _server: None,
    })
}

async fn redis(opts: Options) -> Option<Backend> {
    let server = RedisServer::start(NO_PERSISTENCE)?;
    let store = RedisStore::connect_with(
        &server.url(),
        opts,
        RedisOptions::default().prefix("{test}"),
    )
    .await
    .unwrap();
    Some(Backend {
        sessions: Sessions::redis(store),
        _dir: None,
        _server: Some(server),
    })
}

/// Generates, for each scenario `name(backend)`, one test per backend.
macro_rules! on_every_backend {
    ($($name:ident $(with $opts:expr)?;)*) => {
        mod embedded_memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = sessiondb::Options::default() $(; let opts = $opts)?;
                let b = super::memory(opts).await.unwrap();
                super::$name(&b).await;
            }
        )* }
        mod embedded_log { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = sessiondb::Options::default() $(; let opts = $opts)?;
                let b = super::log(opts).await.unwrap();
                super::$name(&b).await;
            }
        )* }
        mod redis { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = sessiondb::Options::default() $(; let opts = $opts)?;
                let Some(b) = super::redis(opts).await else { return };
                super::$name(&b).await;
            }
        )* }
    };
}

on_every_backend! {
    created_session_is_found_by_its_token_and_unknown_tokens_are_not;
}

async fn created_session_is_found_by_its_token_and_unknown_tokens_are_not(s: &Sessions) {
    let (token, created) = s
        .create(NewSession::for_user("alice").label("Firefox"))
        .await
        .unwrap();
    let got = s.get(&token).await.unwrap().expect("live");
    assert_eq!(got.id(), created.id());
    assert_eq!(got.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(got.label(), Some("Firefox"));
    assert_eq!(got.version(), 0);
    assert!(got.authenticated_at().is_some());
    assert!(s.get(&Token::generate().unwrap()).await.unwrap().is_none());
    assert_eq!(s.len().await.unwrap(), 1);
}
