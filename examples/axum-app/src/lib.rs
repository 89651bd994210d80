//! An example web app on sessiondb: sign up, log in with a password, see your signed-in
//! devices, sign one out or all of them.
//!
//! Build the router with [`app`] from a [`sessiondb::Sessions`] (or a
//! [`sessiondb::Store`], which converts), the [`Users`] and a [`Config`]. `main.rs`
//! opens the sessions where `--sessions` says: the durable embedded store in a data
//! directory by default, or Redis or PostgreSQL, where several processes of the app
//! share them (and the accounts, through one data directory). The handlers are the
//! same on each.
//!
//! What it shows of sessiondb:
//! - every visitor gets an anonymous session with their device: its User-Agent and
//!   address ([`sessiondb::NewSession::device`]) and a label made from the User-Agent
//!   ([`sessiondb::NewSession::label`]); it holds the CSRF token of the login form;
//! - every request with a session reports its device
//!   ([`sessiondb::Sessions::seen_from`], a write only when it changed, at most once
//!   per touch interval);
//! - login rotates the token, binds the user and records how they signed in
//!   ([`sessiondb::Sessions::login_with`] with [`sessiondb::SignIn`] "password"; the
//!   rotation is the session-fixation defence), and the absolute lifetime then counts
//!   from sign-in ([`sessiondb::Sessions::set_expiry`]);
//! - the devices page lists the user's sessions ([`sessiondb::Sessions::sessions_of`]):
//!   browser and system (parsed from the recorded User-Agent by [`device`]), the
//!   address as the store keeps it (its network), how and when each signed in
//!   ([`sessiondb::Session::factors`]), last seen; it signs one out by its public id
//!   ([`sessiondb::Sessions::end_by_id`]) or all of them
//!   ([`sessiondb::Sessions::revoke_user`]), or all the others
//!   ([`sessiondb::Sessions::revoke_others`]); signing out ends the session
//!   ([`sessiondb::Sessions::end`]);
//! - changing the password is a sensitive action: it asks for the password again
//!   unless the session proved it within [`Config::reauth_window`]
//!   ([`sessiondb::Session::authenticated_within`]); the password given there is a
//!   step-up ([`sessiondb::Sessions::step_up`], which rotates the token), and when
//!   the change is done it signs this session in afresh and ends every session that
//!   signed in before, for good ([`sessiondb::Sessions::revoke_user_before`]);
//! - with `--metrics` ([`Config::metrics`]), `GET /metrics` renders the store's gauges,
//!   counters and histograms for Prometheus, to loopback peers only
//!   ([`sessiondb::Sessions::publish_metrics`] just before each render; [`metrics`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
pub mod device;
pub mod metrics;
pub mod pages;
pub mod routes;
pub mod session;
pub mod users;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sessiondb::{Sessions, Timestamp};

pub use users::{Users, UsersError};

/// How the app runs: cookie security and session lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Mark the session cookie `Secure` (sent over HTTPS only) and name it with the
    /// `__Host-` prefix (which browsers accept only from a secure origin, with
    /// `Path=/` and no `Domain`). `false` only for plain HTTP on a developer's machine
    /// (`--insecure-http`). Default true.
    pub secure_cookies: bool,
    /// How long a signed-in session lasts at most, counted from sign-in. Default 30
    /// days.
    pub lifetime: Duration,
    /// A session unused for this long ends; zero disables it. Default 24 hours.
    pub idle_timeout: Duration,
    /// How long a visitor's session (before login: it holds the login form's CSRF
    /// token) lasts at most. Default 1 hour.
    pub visitor_lifetime: Duration,
    /// How long a visitor's new session lasts unless the
    /// visitor comes back with its cookie (a crawler or a bot never does): the store's
    /// trial lifetime ([`sessiondb::Options::trial_lifetime`]). Zero: none. Default
    /// 5 minutes.
    pub visitor_trial: Duration,
    /// The most live sessions: past it the least recently seen
    /// visitors' sessions make room, and a signed-in session is never ended
    /// ([`sessiondb::Options::budget`]). Zero: no limit. Default 1,000,000 (about
    /// 540 MB).
    pub max_sessions: u64,
    /// A sensitive action (changing the password) asks for the password again unless
    /// the session proved it this recently ("sudo mode": signed in or confirmed with
    /// it, [`sessiondb::Session::authenticated_within`]). Default 10 minutes; zero
    /// asks every time.
    pub reauth_window: Duration,
    /// Take a request's address, as recorded for the devices page, from the first
    /// `X-Forwarded-For` address (behind a reverse proxy that sets it) instead of the
    /// connection's peer (`--trust-forwarded-for`). Off by default: without such a
    /// proxy any client could name any address. It is only ever shown, never used to
    /// decide anything.
    pub trust_forwarded_for: bool,
    /// Serve `GET /metrics`: the store's gauges, counters and histograms in
    /// Prometheus's text format (`--metrics`), to loopback peers only unless
    /// [`Config::metrics_public`]. Install the recorder ([`metrics::recorder`]) before
    /// opening the store, as `main.rs` does. Off by default: no route, a 404.
    pub metrics: bool,
    /// Serve `/metrics` to any peer, not only loopback (`--metrics-public`, which
    /// implies `--metrics`): for a Prometheus on another machine, with the port
    /// firewalled from everyone else. Default false.
    pub metrics_public: bool,
    /// The `store` label on every series this app's store reports
    /// ([`sessiondb::Options::metrics_label`], `--metrics-label`): 1 to 64 bytes of
    /// `A-Z a-z 0-9 _ - .`. Default `default`.
    pub metrics_label: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secure_cookies: true,
            lifetime: Duration::from_secs(30 * 86_400),
            idle_timeout: Duration::from_secs(86_400),
            visitor_lifetime: Duration::from_secs(3_600),
            visitor_trial: Duration::from_secs(300),
            max_sessions: 1_000_000,
            reauth_window: Duration::from_secs(600),
            trust_forwarded_for: false,
            metrics: false,
            metrics_public: false,
            metrics_label: "default".into(),
        }
    }
}

impl Config {
    /// The store options: the visitors' trial and the budget (kept by the embedded
    /// store and on Redis alike), and the metrics' `store` label.
    pub fn store_options(&self) -> sessiondb::Options {
        sessiondb::Options::default()
            .trial_lifetime((!self.visitor_trial.is_zero()).then_some(self.visitor_trial))
            .budget((self.max_sessions > 0).then(|| sessiondb::Budget::sessions(self.max_sessions)))
            .metrics_label(self.metrics_label.clone())
    }

    /// The session cookie's name: `__Host-sid` with secure cookies, `sid` without
    /// (browsers refuse `__Host-` cookies that are not `Secure`).
    pub fn cookie_name(&self) -> &'static str {
        if self.secure_cookies {
            "__Host-sid"
        } else {
            "sid"
        }
    }

    /// Checks the lifetimes and the metrics label.
    ///
    /// # Errors
    /// A message naming the setting if a lifetime is zero or the label is not 1 to 64
    /// bytes of `A-Z a-z 0-9 _ - .`.
    pub fn validate(&self) -> Result<(), String> {
        if self.lifetime.is_zero() {
            return Err("the session lifetime must be longer than zero".into());
        }
        if self.visitor_lifetime.is_zero() {
            return Err("the visitor session lifetime must be longer than zero".into());
        }
        let label = &self.metrics_label;
        if label.is_empty()
            || label.len() > 64
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!(
                "the metrics label {label:?} must be 1 to 64 bytes of A-Z a-z 0-9 _ - ."
            ));
        }
        Ok(())
    }
}

/// What every handler shares: the store, the accounts and the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The sessions: the embedded store or Redis, as configured.
    pub store: Sessions,
    /// The accounts.
    pub users: Arc<Users>,
    /// How the app runs.
    pub config: Arc<Config>,
    /// The process's Prometheus recorder, with [`Config::metrics`].
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The app's router, ready for `axum::serve` (with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the devices page shows each
/// peer's address, and `/metrics` answers loopback peers only).
///
/// With [`Config::metrics`] it installs the process's Prometheus recorder if it is not
/// yet ([`metrics::recorder`]); install it before opening the store instead, or the
/// store's histograms are not recorded.
///
/// # Errors
/// A message if `config` does not validate ([`Config::validate`]), or if the metrics
/// recorder cannot be installed.
pub fn app(store: impl Into<Sessions>, users: Users, config: Config) -> Result<Router, String> {
    config.validate()?;
    let metrics = if config.metrics {
        Some(metrics::recorder()?)
    } else {
        None
    };
    let state = AppState {
        store: store.into(),
        users: Arc::new(users),
        config: Arc::new(config),
        metrics,
    };
    let router = if state.metrics.is_some() {
        Router::new().route("/metrics", get(metrics::serve))
    } else {
        Router::new()
    };
    Ok(router
        .route("/", get(routes::home))
        .route("/app.css", get(routes::stylesheet))
        .route("/login", get(routes::login_page).post(routes::login))
        .route("/signup", get(routes::signup_page).post(routes::signup))
        .route("/devices", get(routes::devices))
        .route("/devices/{id}/sign-out", post(routes::sign_out_device))
        .route("/sign-out", post(routes::sign_out))
        .route("/sign-out-everywhere", post(routes::sign_out_everywhere))
        .route("/sign-out-others", post(routes::sign_out_others))
        .route(
            "/password",
            get(routes::password_page).post(routes::change_password),
        )
        .fallback(routes::not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state))
}

/// Headers on every response: pages carry CSRF tokens and personal data, so nothing
/// is cached; no framing (the sign-out buttons cannot be clickjacked); scripts of any
/// origin cannot run; forms post only to this origin.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    res
}

/// Now, on the same clock as the store's default ([`sessiondb::SystemClock`]).
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

/// A failure that is not the visitor's doing: answered with a plain 500 page, and
/// printed to stderr with the detail.
#[derive(Debug)]
pub enum AppError {
    /// The session store failed (e.g. the disk).
    Store(sessiondb::Error),
    /// The accounts file or hashing failed.
    Users(UsersError),
    /// The OS random generator failed.
    Random(getrandom::Error),
    /// A blocking task (password hashing) panicked or was cancelled.
    Task(tokio::task::JoinError),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Store(e) => write!(f, "session store: {e}"),
            AppError::Users(e) => write!(f, "accounts: {e}"),
            AppError::Random(e) => write!(f, "random generator: {e}"),
            AppError::Task(e) => write!(f, "background task: {e}"),
        }
    }
}

impl std::error::Error for AppError {}

impl From<sessiondb::Error> for AppError {
    fn from(e: sessiondb::Error) -> Self {
        AppError::Store(e)
    }
}

impl From<UsersError> for AppError {
    fn from(e: UsersError) -> Self {
        AppError::Users(e)
    }
}

impl From<getrandom::Error> for AppError {
    fn from(e: getrandom::Error) -> Self {
        AppError::Random(e)
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::Task(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Store(sessiondb::Error::Full { .. }) = self {
            // At the budget with only signed-in sessions left: protect them, and ask
            // the visitor to come back.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "30")],
                pages::message(
                    "Busy",
                    "The server has as many sessions as it can keep. Try again in a minute.",
                ),
            )
                .into_response();
        }
        eprintln!("sessiondb-axum-app: error: {self}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::message(
                "Something went wrong",
                "The server could not finish this request. Try again in a moment.",
            ),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_refuses_zero_lifetimes_but_allows_no_idle_timeout() {
        assert!(Config::default().validate().is_ok());
        let no_idle = Config {
            idle_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert!(no_idle.validate().is_ok());
        let zero = Config {
            lifetime: Duration::ZERO,
            ..Config::default()
        };
        assert!(zero.validate().unwrap_err().contains("lifetime"));
        let zero_visitor = Config {
            visitor_lifetime: Duration::ZERO,
            ..Config::default()
        };
        assert!(zero_visitor.validate().unwrap_err().contains("visitor"));
        for bad in ["", "has space", "caf\u{e9}", &"x".repeat(65), "a\"b"] {
            let c = Config {
                metrics_label: bad.into(),
                ..Config::default()
            };
            assert!(
                c.validate().unwrap_err().contains("metrics label"),
                "{bad:?}"
            );
            // The store refuses the same labels.
            assert!(sessiondb::Store::in_memory_with(c.store_options()).is_err());
        }
        for good in ["default", "web-1.eu_west", &"x".repeat(64)] {
            let c = Config {
                metrics_label: good.into(),
                ..Config::default()
            };
            assert!(c.validate().is_ok(), "{good:?}");
            assert!(sessiondb::Store::in_memory_with(c.store_options()).is_ok());
        }
    }
}
