//! Shared by the tower-sessions tests: stores on each backend, an axum app over
//! `SessionManagerLayer`, served on 127.0.0.1:0, and the routes tower-sessions' own
//! route tests use (`tests/common/mod.rs` in its repository) plus routes for the
//! per-user helpers.
#![allow(dead_code)]

#[cfg(feature = "redis")]
#[path = "redis_server.rs"]
pub mod redis_server;

#[cfg(feature = "postgres")]
#[path = "postgres_server.rs"]
pub mod postgres_server;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
#[cfg(feature = "sled")]
use sessiondb::BackendKind;
use sessiondb::tower_sessions::SessionDbStore;
use sessiondb::{Durability, Options, SessionId, Sessions, Store};
use time::OffsetDateTime;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// Where a test's store keeps its sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `Store::in_memory`.
    Memory,
    /// The log, buffered (the default durability).
    Log,
    /// The log, every write fsynced (writes offloaded to `spawn_blocking`).
    LogSync,
    /// sled.
    #[cfg(feature = "sled")]
    Sled,
    /// Redis: a `redis-server` of the test's own (no persistence), through
    /// `Sessions::open("redis://…")`.
    #[cfg(feature = "redis")]
    Redis,
    /// PostgreSQL: a schema of the test's own on the process's shared cluster
    /// (`tests/support/postgres_server.rs`).
    #[cfg(feature = "postgres")]
    Postgres,
}

/// The options every test store is opened with: a quick reaper.
pub fn test_options() -> Options {
    Options::default().reaper_interval(Some(Duration::from_millis(50)))
}

/// Opens an embedded store on `backend`, in `dir` for the durable ones.
pub fn open(backend: Backend, dir: &Path) -> Store {
    open_with(backend, dir, test_options())
}

fn open_with(backend: Backend, dir: &Path, opts: Options) -> Store {
    match backend {
        Backend::Memory => Store::in_memory_with(opts),
        Backend::Log => Store::open_with(dir, opts),
        Backend::LogSync => Store::open_with(dir, opts.durability(Durability::Sync)),
        #[cfg(feature = "sled")]
        Backend::Sled => Store::open_with(dir, opts.backend(BackendKind::Sled)),
        #[cfg(feature = "redis")]
        Backend::Redis => panic!("Redis is not an embedded store: use `store_on`"),
        #[cfg(feature = "postgres")]
        Backend::Postgres => panic!("PostgreSQL is not an embedded store: use `store_on`"),
    }
    .expect("open the store")
}

/// What keeps a test's store alive: its directory, and its redis-server.
pub struct Held {
    pub dir: tempfile::TempDir,
    #[cfg(feature = "redis")]
    pub redis: Option<redis_server::RedisServer>,
}

impl Held {
    /// The configuration string a second node would open the same sessions with
    /// (the Redis URL), if the backend is shared.
    pub fn shared_config(&self) -> Option<String> {
        #[cfg(feature = "redis")]
        if let Some(server) = &self.redis {
            return Some(server.url());
        }
        None
    }
}

/// A `SessionDbStore` on `backend` with [`test_options`]; `None` (the test is skipped,
/// with a message) only for Redis when redis-server is not installed.
pub async fn store_on(backend: Backend) -> Option<(SessionDbStore, Held)> {
    store_on_with(backend, test_options()).await
}

/// [`store_on`] with `opts`.
pub async fn store_on_with(backend: Backend, opts: Options) -> Option<(SessionDbStore, Held)> {
    let dir = tempfile::tempdir().expect("tempdir");
    #[cfg(feature = "redis")]
    if backend == Backend::Redis {
        let server = redis_server::RedisServer::start(redis_server::NO_PERSISTENCE)?;
        let sessions = Sessions::open(&server.url(), opts)
            .await
            .expect("connect to redis");
        let held = Held {
            dir,
            redis: Some(server),
        };
        return Some((SessionDbStore::new(sessions), held));
    }
    #[cfg(feature = "postgres")]
    if backend == Backend::Postgres {
        let url = tokio::task::spawn_blocking(postgres_server::shared_url)
            .await
            .expect("the shared cluster")?;
        let popts = sessiondb::PostgresOptions::default()
            .schema(postgres_server::fresh_schema())
            .pool_size(8);
        let store = sessiondb::PostgresStore::connect_with(&url, opts, popts)
            .await
            .expect("connect to postgres");
        let held = Held {
            dir,
            #[cfg(feature = "redis")]
            redis: None,
        };
        return Some((SessionDbStore::new(Sessions::postgres(store)), held));
    }
    let store = SessionDbStore::new(Sessions::embedded(open_with(backend, dir.path(), opts)));
    Some((
        store,
        Held {
            dir,
            #[cfg(feature = "redis")]
            redis: None,
        },
    ))
}

/// Checks the embedded store's internal invariants (nothing to check on Redis).
pub fn verify(store: &SessionDbStore) {
    if let Some(engine) = store.sessions().as_embedded() {
        engine.verify().expect("the store's invariants hold");
    }
}

/// Opens `dir` again, waiting for the previous owner's lock to go (its last handle may
/// be dropped by a server task that is still finishing).
pub async fn reopen(backend: Backend, dir: &Path) -> Store {
    for _ in 0..100 {
        let opts = Options::default();
        let opts = match backend {
            #[cfg(feature = "sled")]
            Backend::Sled => opts.backend(BackendKind::Sled),
            Backend::LogSync => opts.durability(Durability::Sync),
            _ => opts,
        };
        match Store::open_with(dir, opts) {
            Ok(s) => return s,
            Err(sessiondb::Error::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
    panic!("the store directory stayed locked");
}

/// A running server and what it serves from.
pub struct Server {
    pub addr: SocketAddr,
    pub store: SessionDbStore,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serves `app` on 127.0.0.1 at a free port.
    pub async fn start(app: Router, store: SessionDbStore) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Server {
            addr,
            store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops serving and waits until the server has let go of everything (drop the
    /// clients first, so their kept-alive connections close).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server stops within 10 s")
                .expect("the server task");
        }
    }
}

/// tower-sessions' own test routes (its `tests/common/mod.rs`), layered as its
/// `build_app` does.
pub fn tower_routes(
    store: SessionDbStore,
    max_age: Option<time::Duration>,
    domain: Option<String>,
) -> Router {
    let mut layer = SessionManagerLayer::new(store).with_secure(true);
    if let Some(max_age) = max_age {
        layer = layer.with_expiry(Expiry::OnInactivity(max_age));
    }
    if let Some(domain) = domain {
        layer = layer.with_domain(domain);
    }
    Router::new()
        .route("/", get(|_: Session| async move { "Hello, world!" }))
        .route(
            "/insert",
            get(|session: Session| async move {
                session.insert("foo", 42).await.unwrap();
            }),
        )
        .route(
            "/get",
            get(|session: Session| async move {
                format!("{}", session.get::<usize>("foo").await.unwrap().unwrap())
            }),
        )
        .route(
            "/get_value",
            get(|session: Session| async move {
                format!("{:?}", session.get_value("foo").await.unwrap())
            }),
        )
        .route(
            "/remove",
            get(|session: Session| async move {
                session.remove::<usize>("foo").await.unwrap();
            }),
        )
        .route(
            "/remove_value",
            get(|session: Session| async move {
                session.remove_value("foo").await.unwrap();
            }),
        )
        .route(
            "/cycle_id",
            get(|session: Session| async move {
                session.cycle_id().await.unwrap();
            }),
        )
        .route(
            "/flush",
            get(|session: Session| async move {
                session.flush().await.unwrap();
            }),
        )
        .route(
            "/set_expiry",
            get(|session: Session| async move {
                let expiry =
                    Expiry::AtDateTime(OffsetDateTime::now_utc() + time::Duration::days(1));
                session.set_expiry(Some(expiry));
            }),
        )
        .route(
            "/remove_expiry",
            get(|session: Session| async move {
                session.set_expiry(Some(Expiry::OnSessionEnd));
            }),
        )
        .layer(layer)
}

/// An app using the per-user helpers: what the README's example does, as routes a
/// test can drive.
pub fn helper_routes(store: SessionDbStore, expiry: Option<Expiry>) -> Router {
    let mut layer = SessionManagerLayer::new(store.clone()).with_secure(false);
    if let Some(expiry) = expiry {
        layer = layer.with_expiry(expiry);
    }
    type St = State<SessionDbStore>;
    Router::new()
        .route(
            "/put/{value}",
            get(
                |session: Session, UrlPath(value): UrlPath<String>| async move {
                    session.insert("value", value).await.unwrap();
                },
            ),
        )
        .route(
            "/get",
            get(|session: Session| async move {
                session
                    .get::<String>("value")
                    .await
                    .unwrap()
                    .unwrap_or_else(|| "none".into())
            }),
        )
        .route(
            "/slow_put/{value}/{ms}",
            get(
                |session: Session, UrlPath((value, ms)): UrlPath<(String, u64)>| async move {
                    // Load first, as a real handler would, then take a while.
                    let _ = session.get::<String>("value").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    session.insert("value", value).await.unwrap();
                },
            ),
        )
        .route(
            "/login/{user}",
            get(
                |State(store): St, session: Session, UrlPath(user): UrlPath<String>| async move {
                    match store.login(&session, &user).await {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => format!("error: {e}"),
                    }
                },
            ),
        )
        .route(
            "/whoami",
            get(|State(store): St, session: Session| async move {
                store
                    .user(&session)
                    .await
                    .unwrap()
                    .map_or_else(|| "anonymous".to_owned(), |u| u.to_string())
            }),
        )
        .route(
            "/sid",
            get(|State(store): St, session: Session| async move {
                store
                    .session_id(&session)
                    .await
                    .unwrap()
                    .map_or_else(|| "none".to_owned(), |id| id.to_string())
            }),
        )
        .route(
            "/rotate",
            get(|State(store): St, session: Session| async move {
                store.rotate(&session).await.unwrap();
            }),
        )
        .route(
            "/cycle_id",
            get(|session: Session| async move {
                session.cycle_id().await.unwrap();
            }),
        )
        .route(
            "/label/{label}",
            get(
                |State(store): St, session: Session, UrlPath(label): UrlPath<String>| async move {
                    store.set_label(&session, &label).await.unwrap();
                },
            ),
        )
        .route(
            "/devices",
            get(|State(store): St, session: Session| async move {
                match store.devices(&session).await {
                    // One line per device: "<id> <label or -> <current or other>".
                    Ok(list) => list
                        .iter()
                        .map(|d| {
                            format!(
                                "{} {} {}",
                                d.id,
                                d.label.as_deref().unwrap_or("-"),
                                if d.current { "current" } else { "other" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Err(e) => format!("error: {e}"),
                }
            }),
        )
        .route(
            "/end_device/{id}",
            get(
                |State(store): St, session: Session, UrlPath(id): UrlPath<String>| async move {
                    let id = SessionId::parse(&id).unwrap();
                    store.end_device(&session, id).await.unwrap().to_string()
                },
            ),
        )
        .route(
            "/logout",
            get(|State(store): St, session: Session| async move {
                store.logout(&session).await.unwrap();
            }),
        )
        .route(
            "/logout_everywhere",
            get(|State(store): St, session: Session| async move {
                match store.logout_everywhere(&session).await {
                    Ok(n) => n.to_string(),
                    Err(e) => format!("error: {e}"),
                }
            }),
        )
        .layer(layer)
        .with_state(store)
}

/// A client with its own cookie jar.
pub fn client() -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    (client_with(jar.clone()), jar)
}

/// A client using `jar`.
pub fn client_with(jar: Arc<reqwest::cookie::Jar>) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_provider(jar)
        .build()
        .expect("client")
}

/// GETs `url` and returns the body (panics on a non-success status).
pub async fn body(client: &reqwest::Client, url: &str) -> String {
    let res = client.get(url).send().await.expect("request");
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.text().await.expect("body")
}
