//! Shared by the HTTP and browser tests: the app served on a loopback port, its users
//! file in a temporary directory and its sessions in a real durable store there or in a
//! real redis-server ([`Backend`]).
#![allow(dead_code)] // each test file uses a different part

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::serve::ListenerExt;
use sessiondb::{Options, RedisOptions, RedisStore, Sessions, Store};
use sessiondb_axum_app::{Config, Users, app};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The app as the tests run it: plain HTTP on loopback, so cookies without `Secure`
/// unless a test asks for the production setting.
pub fn test_config() -> Config {
    Config {
        secure_cookies: false,
        ..Config::default()
    }
}

/// Store options for tests: a rotated-away token stops working at once (no grace), so
/// "the old cookie no longer works" can be checked without waiting.
pub fn test_options() -> Options {
    Options::default().rotation_grace(Duration::ZERO)
}

/// Where a test app keeps its sessions.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded durable store in `DIR/sessions` (what `main.rs` defaults to).
    Embedded,
    /// A Redis server at this URL, under this key prefix.
    Redis {
        /// `redis://127.0.0.1:PORT/`.
        url: String,
        /// The key prefix, so tests could share one server.
        prefix: String,
    },
}

/// A running app.
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The same sessions the app uses (a clone of the handle).
    pub store: Sessions,
    /// The data directory.
    pub dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Running {
    /// Serves the app from the store in `dir/sessions` and the users in
    /// `dir/users.json`, on a free loopback port.
    pub async fn start(dir: &Path, config: Config) -> Running {
        Running::start_on(&Backend::Embedded, dir, config).await
    }

    /// As [`Running::start`], with the sessions on `backend` (the users file is in
    /// `dir` either way).
    pub async fn start_on(backend: &Backend, dir: &Path, config: Config) -> Running {
        Running::start_seen_from(backend, dir, config, None).await
    }

    /// As [`Running::start_on`], but every connection's peer address, as the app sees
    /// it, is `peer`'s (with the real port) instead of loopback's: a client
    /// elsewhere, while the test still connects over loopback. `None`: the real one.
    pub async fn start_seen_from(
        backend: &Backend,
        dir: &Path,
        config: Config,
        peer: Option<IpAddr>,
    ) -> Running {
        // As main.rs: with --metrics the process's recorder goes in before the store
        // opens (once per process: every later app shares it).
        if config.metrics {
            sessiondb_axum_app::metrics::recorder().expect("the metrics recorder");
        }
        let store = match backend {
            // The options the app's main gives the store (its trial and budget), with
            // the tests' rotation grace; the same on Redis.
            Backend::Embedded => Sessions::embedded(
                Store::open_with(
                    dir.join("sessions"),
                    config.store_options().rotation_grace(Duration::ZERO),
                )
                .expect("open store"),
            ),
            Backend::Redis { url, prefix } => Sessions::redis(
                RedisStore::connect_with(
                    url,
                    config.store_options().rotation_grace(Duration::ZERO),
                    RedisOptions::default().prefix(prefix.clone()),
                )
                .await
                .expect("connect to redis"),
            ),
        };
        let users = Users::open(dir.join("users.json")).expect("open users");
        let router = app(store.clone(), users, config).expect("valid config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        // As main.rs: with each connection's peer address.
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let server = match peer {
            None => tokio::spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(stopped)
                    .await
                    .expect("serve");
            }),
            Some(ip) => tokio::spawn(async move {
                // `tap_io` (doing nothing) makes the listener's own address type the
                // connect info axum hands the app.
                let listener = SeenFrom { listener, ip }.tap_io(|_| {});
                axum::serve(listener, service)
                    .with_graceful_shutdown(stopped)
                    .await
                    .expect("serve");
            }),
        };
        Running {
            base: format!("http://{addr}"),
            addr,
            store,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops serving (after open connections finish) and closes the store, releasing
    /// the directory for a restart.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
        if let Some(embedded) = self.store.as_embedded() {
            embedded.clone().close().expect("close store");
        }
    }
}

/// A loopback listener that reports every connection as coming from `ip`.
struct SeenFrom {
    listener: tokio::net::TcpListener,
    ip: IpAddr,
}

impl axum::serve::Listener for SeenFrom {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, real) = axum::serve::Listener::accept(&mut self.listener).await;
        (io, SocketAddr::new(self.ip, real.port()))
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The value of the first `name="csrf"` hidden field in `html`.
pub fn csrf_in(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field in page:\n{html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}
