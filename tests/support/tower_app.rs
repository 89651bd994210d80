//! Shared by the tower-sessions tests: stores on each backend, an axum app over
//! `SessionManagerLayer`, served on 127.0.0.1:0, and the routes tower-sessions' own
//! route tests use (`tests/common/mod.rs` in its repository) plus routes for the
//! per-user helpers.
#![allow(dead_code)]

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
use sessiondb::{Durability, Options, SessionId, Store};
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
}

/// Opens a store on `backend`, in `dir` for the durable ones.
pub fn open(backend: Backend, dir: &Path) -> Store {
    let opts = Options::default().reaper_interval(Some(Duration::from_millis(50)));
    match backend {
        Backend::Memory => Store::in_memory_with(opts),
        Backend::Log => Store::open_with(dir, opts),
        Backend::LogSync => Store::open_with(dir, opts.durability(Durability::Sync)),
        #[cfg(feature = "sled")]
        Backend::Sled => Store::open_with(dir, opts.backend(BackendKind::Sled)),
    }
    .expect("open the store")
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
                    .map_or_else(|| "anonymous".to_owned(), |u| u.to_string())
            }),
        )
        .route(
            "/sid",
            get(|State(store): St, session: Session| async move {
                store
                    .session_id(&session)
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
                match store.devices(&session) {
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
