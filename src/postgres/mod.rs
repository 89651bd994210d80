//! [`PostgresStore`]: sessiondb's sessions kept in PostgreSQL (cargo feature
//! `postgres`), for an app on several nodes that already runs a database and not Redis.
//!
//! This module owns the public API and the connection pool; `schema.rs` the tables,
//! their migrations and every statement; `row.rs` a session's row; `ops.rs` the
//! operations, one transaction each; `events.rs` the outbox and its readers.
//!
//! # How it keeps the guarantees of the embedded store
//!
//! - **One transaction per operation, no upserts.** An operation locks what it changes
//!   (`SELECT … FOR UPDATE`), judges it, and writes it back with its event, or writes
//!   nothing. A write finds its session by the token's hash and updates that row: a
//!   write to an ended session finds no row and stores nothing, so a late save never
//!   brings a signed-out session back (an upsert would). Saves compare-and-swap on the
//!   version; a rotation moves the row to the new hash and writes the grace alias in
//!   the same transaction.
//! - **A user's row serialises that user.** Creates, binds and logins for a user, its
//!   cap, and `revoke_user` lock the user's row in `users` first, so a revocation racing
//!   a create for the same user runs wholly before or after it: nothing it should end
//!   stays readable.
//! - **The database's clock.** Deadlines are judged on the server's `clock_timestamp()`,
//!   in the statement that reads the row, so every node agrees; and every read checks
//!   the deadline itself, so a session is never returned past it, whatever cleanup has
//!   done. [`crate::Options::clock`] does not apply.
//! - **Tokens are hashed** (BLAKE3, [`Token::hash`]) before they reach the database.
//! - **Expiry without spikes.** The reaper (a task on every store: any node's will do)
//!   deletes expired sessions in batches of [`PostgresOptions::batch`], each batch
//!   picked with `FOR UPDATE SKIP LOCKED` from an index of `reap_at`, so nodes reaping
//!   at once share the work instead of waiting on each other, and reports each ended
//!   session with its user. `reap_at` is at or before the deadline and only moves when
//!   the deadline comes earlier: a touch, which every few requests makes, changes no
//!   indexed column, so PostgreSQL updates the row in place (a HOT update; the table
//!   leaves 20% of each page free for them).
//! - **Events** go through an outbox table in the same transaction, with
//!   `LISTEN/NOTIFY` to wake the readers, rung after the commit (see `events.rs`).

mod events;
mod ops;
mod row;
mod schema;
#[cfg(feature = "postgres-tls")]
mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::Receiver;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use parking_lot::Mutex;
#[cfg(not(feature = "postgres-tls"))]
use tokio_postgres::NoTls;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Socket};

use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::model::data::SessionData;
use crate::model::device::Device;
use crate::model::event::Event;
use crate::model::portable::SessionRecord;
use crate::model::session::{
    NewSession, Session, UserId, check_data, check_entry, check_label, check_new,
};
use crate::model::signin::{Criterion, SignIn};
use crate::model::token::{self, SessionId, Token};
use crate::options::Options;
use crate::util::entropy::EntropyPool;
use events::{Listen, Listener, Position};
use ops::{Admit, transaction};
use row::{Lifetimes, Row, ms_of, uuid};

/// The latest time kept: 2^52 ms (year 144,683), as on Redis; read back as
/// [`Timestamp::MAX`], no deadline.
const NEVER: i64 = 1 << 52;

/// The longest lifetime a session may be given.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Settings of the PostgreSQL backend itself (the session defaults and limits are the
/// crate's [`Options`]).
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    schema: String,
    pool_size: usize,
    event_table_len: i64,
    response_timeout: Duration,
    batch: i64,
    migrate: bool,
    #[cfg(feature = "postgres-tls")]
    root_certificates: Vec<tls::Pem>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "sessiondb".into(),
            pool_size: 16,
            event_table_len: 100_000,
            response_timeout: Duration::from_secs(10),
            batch: 1_000,
            migrate: true,
            #[cfg(feature = "postgres-tls")]
            root_certificates: Vec::new(),
        }
    }
}

impl PostgresOptions {
    /// The PostgreSQL schema the store keeps its tables in, created if missing. Stores
    /// with different schemas share a database without seeing each other. Default
    /// `sessiondb`; 1 to 48 of `a-z 0-9 _`, not starting with a digit or `pg_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections this store holds open (each operation takes one for its
    /// transaction). From 1 to 1,000; default 16. Mind the server's `max_connections`
    /// across every node, and one more per subscriber.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// About how many events the outbox keeps for subscribers that fall behind or
    /// reconnect (the reaper trims it). From 100 to 1,000,000,000. Default 100,000.
    pub fn event_table_len(mut self, n: usize) -> Self {
        self.event_table_len = i64::try_from(n).unwrap_or(i64::MAX);
        self
    }

    /// How long a call waits for a connection, to connect, and for one statement
    /// (the server's `statement_timeout`, lock waits included, unless the URL sets
    /// `options`) before failing with [`Error::Unavailable`]. From 1 ms to 1 day.
    /// Default 10 seconds.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// How many sessions the reaper and `clear` end per transaction. From 1 to
    /// 100,000; default 1,000.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = i64::try_from(n).unwrap_or(i64::MAX);
        self
    }

    /// Whether connecting creates the schema or migrates it to this build's version
    /// (default `true`). With `false`, connecting changes nothing in the database and
    /// refuses a schema that is missing or at another version with
    /// [`Error::UnsupportedSchema`]: for a role that may not create tables (a read-only
    /// operator, a standby), or a deployment that migrates with one chosen node first.
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// A certificate authority to trust for the server's certificate, besides the
    /// platform's roots (cargo feature `postgres-tls`): PEM text holding one or more
    /// `CERTIFICATE` sections (other sections are skipped), such as the `root.crt` a
    /// private CA or a cloud provider hands out — what libpq's `sslrootcert` names, which
    /// tokio-postgres's URL does not read. Each call adds to the last. Used by
    /// [`PostgresStore::connect`] and [`PostgresStore::connect_with`];
    /// [`PostgresStore::connect_tls`] refuses it (its connector brings its own roots).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), sessiondb::Error> {
    /// use sessiondb::{Options, PostgresOptions, PostgresStore};
    ///
    /// let ca = std::fs::read("/etc/sessiondb/db-ca.pem").expect("the database's CA");
    /// let popts = PostgresOptions::default().root_certificate(ca);
    /// let url = "postgres://app@db.internal/app?sslmode=require";
    /// let store = PostgresStore::connect_with(url, Options::default(), popts).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A PEM with no certificate, or one that does not decode, makes
    /// [`PostgresOptions::validate`] and connecting fail with [`Error::InvalidOption`].
    #[cfg(feature = "postgres-tls")]
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(tls::Pem(pem.into()));
        self
    }

    /// Checks every setting: what connecting would refuse, refused now.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first setting out of its range.
    pub fn validate(&self) -> Result<()> {
        schema::check_name(&self.schema)?;
        let bad = |name: &'static str, reason: &str| {
            Err(Error::InvalidOption {
                name,
                reason: reason.into(),
            })
        };
        if !(1..=1_000).contains(&self.pool_size) {
            return bad("PostgresOptions::pool_size", "must be from 1 to 1000");
        }
        if !(100..=1_000_000_000).contains(&self.event_table_len) {
            return bad(
                "PostgresOptions::event_table_len",
                "must be from 100 to 1000000000",
            );
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(86_400))
            .contains(&self.response_timeout)
        {
            return bad(
                "PostgresOptions::response_timeout",
                "must be from 1 ms to 1 day",
            );
        }
        if !(1..=100_000).contains(&self.batch) {
            return bad("PostgresOptions::batch", "must be from 1 to 100000");
        }
        #[cfg(feature = "postgres-tls")]
        tls::custom_roots(&self.root_certificates)?;
        Ok(())
    }
}

/// Sessions kept in PostgreSQL: the operations of [`crate::Store`], as async methods,
/// for an app on several nodes sharing one database. Cheap to clone (one shared pool of
/// connections).
///
/// ```no_run
/// use sessiondb::{NewSession, Options, PostgresStore};
///
/// # async fn demo() -> Result<(), sessiondb::Error> {
/// let store = PostgresStore::connect("postgres://app@127.0.0.1/app", Options::default()).await?;
/// let (token, _) = store.create(NewSession::anonymous()).await?;
/// let token = store.login(&token, "alice").await?;
/// assert_eq!(store.sessions_of("alice").await?.len(), 1);
/// assert_eq!(store.revoke_user("alice").await?, 1);
/// assert!(store.get(&token).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    sql: schema::Sql,
    opts: Options,
    popts: PostgresOptions,
    lifetimes: Lifetimes,
    listen: Listen,
    entropy: Mutex<EntropyPool>,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Rung after each committed change; the ringer task notifies the subscribers.
    doorbell: Arc<tokio::sync::Notify>,
    ringer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in [self.reaper.lock().take(), self.ringer.lock().take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.popts.schema)
            .finish_non_exhaustive()
    }
}

/// A database error as the crate's: the server or the connection failed.
fn db(context: &str, e: tokio_postgres::Error) -> Error {
    let reason = match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => with_causes(&e),
    };
    Error::Unavailable {
        backend: "postgres",
        context: context.into(),
        reason,
    }
}

/// An error and the causes under it, as one line: tokio-postgres's own message names
/// only the kind of failure ("error connecting to server"), its source why ("Connection
/// refused (os error 111)", "invalid value for option `port`"). Neither repeats a
/// password.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn protocol(context: &str, what: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        backend: "postgres",
        context: context.into(),
        reason: format!("unexpected data: {what}"),
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(duration_ms(d)).unwrap_or(i64::MAX)
}

fn hash_of(token: &Token) -> u128 {
    token.hash().as_u128()
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or
    /// any connection string `tokio-postgres` reads) with the default
    /// [`PostgresOptions`]; creates or migrates the schema; starts the reaper task on
    /// the current tokio runtime.
    ///
    /// TLS: with the cargo feature `postgres-tls`, the connection speaks TLS when the
    /// URL's `sslmode` asks for it — `prefer` (the default: TLS if the server offers it,
    /// else plain text) or `require` (TLS or no connection) — through rustls, and the
    /// server's certificate must chain to the platform's root certificates or one added
    /// with `PostgresOptions::root_certificate` and name the URL's host (what libpq's
    /// `verify-full` checks). A certificate that does not fails the connection, under
    /// `prefer` too: it never falls back to plain text. (`prefer` does accept a server
    /// that offers no TLS at all: where the network may be tampered with, say
    /// `require`.) `sslmode=disable` never asks. Without the feature, no TLS: a URL that
    /// requires it is refused by the connection, never downgraded; use
    /// [`PostgresStore::connect_tls`] with the app's own connector.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad URL or option, or when not awaited inside a
    /// tokio runtime; [`Error::UnsupportedSchema`] if a newer sessiondb migrated the
    /// schema; [`Error::Unavailable`] if the server cannot be reached, does not speak
    /// TLS when the URL requires it, or presents a certificate that is not trusted.
    pub async fn connect(url: &str, opts: Options) -> Result<PostgresStore> {
        PostgresStore::connect_with(url, opts, PostgresOptions::default()).await
    }

    /// [`PostgresStore::connect`] with backend settings.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(
        url: &str,
        opts: Options,
        popts: PostgresOptions,
    ) -> Result<PostgresStore> {
        #[cfg(feature = "postgres-tls")]
        {
            in_runtime()?;
            popts.validate()?;
            let tls = tls::connector(&popts.root_certificates).await?;
            PostgresStore::open(url, opts, popts, tls).await
        }
        #[cfg(not(feature = "postgres-tls"))]
        PostgresStore::open(url, opts, popts, NoTls).await
    }

    /// [`PostgresStore::connect_with`] over TLS, with the connector the app already
    /// uses for PostgreSQL: `postgres_native_tls::MakeTlsConnector` or
    /// `tokio_postgres_rustls::MakeRustlsConnect` (with the feature `postgres-tls`,
    /// `connect` needs neither). `sslmode` in the URL says whether TLS is asked for
    /// (`prefer`, the default) or required (`require`); the connector decides which
    /// certificates it trusts, so `PostgresOptions::root_certificate` is refused here.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`]; [`Error::InvalidOption`] for options with a
    /// `root_certificate`.
    pub async fn connect_tls<T>(
        url: &str,
        opts: Options,
        popts: PostgresOptions,
        tls: T,
    ) -> Result<PostgresStore>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        #[cfg(feature = "postgres-tls")]
        if !popts.root_certificates.is_empty() {
            return Err(Error::InvalidOption {
                name: "PostgresOptions::root_certificate",
                reason: "applies to connect and connect_with: connect_tls's connector brings \
                         its own roots"
                    .into(),
            });
        }
        PostgresStore::open(url, opts, popts, tls).await
    }

    /// Connects with `tls` as the connector: [`PostgresStore::connect_tls`] without its
    /// check of the options' roots.
    async fn open<T>(
        url: &str,
        opts: Options,
        popts: PostgresOptions,
        tls: T,
    ) -> Result<PostgresStore>
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        in_runtime()?;
        popts.validate()?;
        opts.validate()?;
        if opts.budget.is_some_and(|b| b.max_bytes.is_some()) {
            return Err(Error::InvalidOption {
                name: "budget.max_bytes",
                reason: "the PostgreSQL backend enforces a budget's max_sessions only (it \
                         cannot see what the database spends per session)"
                    .into(),
            });
        }
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| Error::InvalidOption {
                    name: "postgres url",
                    reason: with_causes(&e),
                })?;
        config.connect_timeout(popts.response_timeout);
        if config.get_options().is_none() {
            config.options(format!(
                "-c statement_timeout={}",
                ms(popts.response_timeout)
            ));
        }
        config.application_name("sessiondb");
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(popts.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(popts.response_timeout))
            .create_timeout(Some(popts.response_timeout))
            .recycle_timeout(Some(popts.response_timeout))
            .build()
            .map_err(|e| Error::InvalidOption {
                name: "PostgresOptions::pool_size",
                reason: e.to_string(),
            })?;
        let place = where_to(&config);
        let mut client = pool
            .get()
            .await
            .map_err(|e| pool_error(&format!("connecting to {place}"), e))?;
        if popts.migrate {
            schema::migrate(&mut client, &popts.schema).await?;
        } else {
            schema::expect_current(&client, &popts.schema).await?;
        }
        drop(client);
        let channel = schema::channel(&popts.schema);
        // The subscribers' connections say what they are, for pg_stat_activity.
        let mut listen_config = config.clone();
        listen_config.application_name(format!("sessiondb-events:{}", popts.schema));
        let listen: Listen = Box::new(move || {
            let (config, tls, channel) = (listen_config.clone(), tls.clone(), channel.clone());
            Box::pin(async move { listen(config, tls, channel).await })
        });
        let lifetimes = Lifetimes {
            auth: opts.auth_lifetime.map_or(0, ms),
            trial: opts.trial_lifetime.map_or(0, ms),
        };
        let inner = Arc::new(Inner {
            pool,
            sql: schema::Sql::new(&popts.schema),
            opts,
            popts,
            lifetimes,
            listen,
            entropy: Mutex::new(EntropyPool::new()),
            reaper: Mutex::new(None),
            doorbell: Arc::new(tokio::sync::Notify::new()),
            ringer: Mutex::new(None),
            dropped: AtomicU64::new(0),
        });
        let ringer = tokio::spawn(events::ring_loop(
            Arc::downgrade(&inner),
            Arc::clone(&inner.doorbell),
        ));
        *inner.ringer.lock() = Some(ringer);
        if let Some(every) = inner.opts.reaper_interval {
            let task = tokio::spawn(reap_loop(Arc::downgrade(&inner), every));
            *inner.reaper.lock() = Some(task);
        }
        Ok(PostgresStore { inner })
    }

    /// The options the store was connected with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// The backend settings the store was connected with.
    pub fn postgres_options(&self) -> &PostgresOptions {
        &self.inner.popts
    }

    // ----------------------------------------------------------------------------
    // Creating and reading

    /// Creates a session and returns its token and a snapshot, as
    /// [`crate::Store::create`].
    ///
    /// # Errors
    /// As [`crate::Store::create`], and [`Error::Unavailable`].
    pub async fn create(&self, new: NewSession) -> Result<(Token, Session)> {
        loop {
            let (id, token) = token::fresh_session(|b| self.inner.entropy.lock().fill(b))?;
            match self.admit_new(id, &token, &new).await {
                Err(Error::Exists { .. }) => continue, // a fresh draw collided: draw again
                Err(e) => return Err(e),
                Ok(s) => return Ok((token, s)),
            }
        }
    }

    /// Creates a session addressed by a token the caller chose, as
    /// [`crate::Store::create_with_token`].
    ///
    /// # Errors
    /// [`Error::Exists`] if the token already addresses a session (or an old token in
    /// its grace period); otherwise as [`PostgresStore::create`].
    pub async fn create_with_token(&self, token: &Token, new: NewSession) -> Result<Session> {
        loop {
            let (id, _) = token::fresh_session(|b| self.inner.entropy.lock().fill(b))?;
            match self.admit_new(id, token, &new).await {
                Err(Error::Exists { what: "session id" }) => continue,
                other => return other,
            }
        }
    }

    async fn admit_new(&self, id: SessionId, token: &Token, new: &NewSession) -> Result<Session> {
        let o = &self.inner.opts;
        let (user, lifetime, idle) = check_new(new, o)?;
        let (lifetime, idle) = (lifetime.min(MAX_LIFETIME), idle.min(MAX_LIFETIME));
        let factors = match &new.sign_in {
            Some(how) => how.apply(&[], Timestamp(0))?,
            None => Vec::new(),
        };
        let device = new
            .device
            .as_ref()
            .and_then(|d| d.stored(o.address_privacy, Timestamp(0)));
        let a = Admit {
            hash: hash_of(token),
            id,
            user: user.as_ref().map(|u| u.as_str().to_owned()),
            label: new.label.clone(),
            created: -1,
            last_seen: -1,
            authenticated: user.as_ref().map(|_| -1),
            absolute: -ms(lifetime),
            idle_ms: ms(idle),
            version: 0,
            data: new.data.clone(),
            factors,
            factors_now: true,
            user_agent: device
                .as_ref()
                .and_then(|d| d.user_agent.as_deref().map(str::to_owned)),
            address: device.as_ref().and_then(|d| d.address),
            device_at: -1,
        };
        self.inner
            .admit(&a)
            .await?
            .ok_or_else(|| protocol("create", "a new session expired at once"))
    }

    /// Brings in a session exported from any sessiondb store (embedded, Redis or
    /// PostgreSQL), as [`crate::Store::import`]: it answers to the same token. Returns
    /// false, and changes nothing, if it has ended: its deadline passed, or it
    /// authenticated before its user's not-before time.
    ///
    /// # Errors
    /// As [`crate::Store::import`], and [`Error::Unavailable`].
    pub async fn import(&self, mut rec: SessionRecord) -> Result<bool> {
        rec.check(&self.inner.opts.limits)?;
        rec.keep_address_as(self.inner.opts.address_privacy);
        let a = Admit {
            hash: rec.token_hash.as_u128(),
            id: rec.id,
            user: rec.user.as_ref().map(|u| u.as_str().to_owned()),
            label: rec.label.clone(),
            created: ms_of(rec.created),
            last_seen: ms_of(rec.last_seen),
            authenticated: rec.authenticated.map(ms_of),
            absolute: ms_of(rec.absolute),
            idle_ms: rec.idle_timeout.map_or(0, |d| ms(d.min(MAX_LIFETIME))),
            version: i64::try_from(rec.version).unwrap_or(i64::MAX),
            data: rec.data,
            factors: rec.factors,
            factors_now: false,
            user_agent: rec.user_agent,
            address: rec.address,
            device_at: rec.device_seen_at.map_or(-1, ms_of),
        };
        Ok(self.inner.admit(&a).await?.is_some())
    }

    /// Calls `f` with every live session, as [`crate::Store::export`]: in batches by
    /// id, so other clients are served in between (sessions created or ended during
    /// the walk may or may not be seen; none is seen twice). Returns how many were
    /// passed.
    ///
    /// # Errors
    /// Whatever `f` returns stops the walk and is returned; [`Error::Unavailable`].
    pub async fn export(&self, mut f: impl FnMut(SessionRecord) -> Result<()>) -> Result<usize> {
        let inner = &self.inner;
        let mut after = uuid(0);
        let mut n = 0;
        loop {
            let rows = inner
                .rows("export", &inner.sql.export, &[&after, &inner.popts.batch])
                .await?;
            for r in &rows {
                let (row, now) = Row::read(r)?;
                after = uuid(row.id);
                if row.deadline(inner.lifetimes) > now {
                    f(row.record(now, inner.lifetimes, &inner.opts.levels))?;
                    n += 1;
                }
            }
            if (rows.len() as i64) < inner.popts.batch {
                return Ok(n);
            }
        }
    }

    /// The live session `token` addresses, as [`crate::Store::get`]: counts as
    /// activity (at most once per [`Options::touch_interval`]). One statement, unless
    /// the read counts as activity.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn get(&self, token: &Token) -> Result<Option<Session>> {
        let touch = ms(self.inner.opts.touch_interval);
        self.inner.read(hash_of(token), touch).await
    }

    /// Like [`PostgresStore::get`], but does not count as activity.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn peek(&self, token: &Token) -> Result<Option<Session>> {
        self.inner.read(hash_of(token), -1).await
    }

    /// The user bound to the live session `token` addresses, if any.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn user_of(&self, token: &Token) -> Result<Option<UserId>> {
        Ok(self.peek(token).await?.and_then(|s| s.user().cloned()))
    }

    /// The live session with public id `id`. Does not count as activity.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn get_by_id(&self, id: SessionId) -> Result<Option<Session>> {
        self.inner.get_by_id(id).await
    }

    // ----------------------------------------------------------------------------
    // Data

    /// Sets `key` to `value`, as [`crate::Store::put`]. Returns the new version.
    ///
    /// # Errors
    /// As [`crate::Store::put`], and [`Error::Unavailable`].
    pub async fn put<T: serde::Serialize + ?Sized>(
        &self,
        token: &Token,
        key: &str,
        value: &T,
    ) -> Result<u64> {
        let bytes = crate::util::codec::encode(value, Some(key))?;
        self.put_raw(token, key, &bytes).await
    }

    /// Sets `key` to raw bytes, as [`crate::Store::put_raw`]. Returns the new version.
    ///
    /// # Errors
    /// As [`crate::Store::put`], and [`Error::Unavailable`].
    pub async fn put_raw(&self, token: &Token, key: &str, value: &[u8]) -> Result<u64> {
        check_entry(key, value.len(), &self.inner.opts.limits)?;
        self.inner.put(hash_of(token), key, value).await
    }

    /// Removes `key` from the session's data. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn remove(&self, token: &Token, key: &str) -> Result<u64> {
        self.inner.remove(hash_of(token), key).await
    }

    /// Atomic read-modify-write of the session's data, as [`crate::Store::update`]:
    /// `f` may run more than once (optimistic: a compare-and-swap save, retried on a
    /// concurrent change).
    ///
    /// # Errors
    /// As [`crate::Store::update`], and [`Error::Unavailable`].
    pub async fn update<R>(
        &self,
        token: &Token,
        mut f: impl FnMut(&mut SessionData) -> Result<R>,
    ) -> Result<R> {
        loop {
            let s = self.peek(token).await?.ok_or(Error::Ended)?;
            let mut data = s.data().clone();
            let out = f(&mut data)?;
            if &data == s.data() {
                return Ok(out);
            }
            match self.save(token, s.version(), &data).await {
                Ok(_) => return Ok(out),
                Err(Error::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Compare-and-swap save of the whole data map, as [`crate::Store::save`].
    ///
    /// # Errors
    /// As [`crate::Store::save`], and [`Error::Unavailable`].
    pub async fn save(
        &self,
        token: &Token,
        expected_version: u64,
        data: &SessionData,
    ) -> Result<u64> {
        check_data(data, &self.inner.opts.limits)?;
        self.inner
            .save(hash_of(token), expected_version, data)
            .await
    }

    // ----------------------------------------------------------------------------
    // Expiry

    /// Records activity now, as [`crate::Store::touch`].
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn touch(&self, token: &Token) -> Result<()> {
        self.inner
            .change("touch", hash_of(token), |f| {
                f.row.last_seen = f.now;
                Ok(())
            })
            .await
    }

    /// Extends the absolute deadline to at least now + `by`, as
    /// [`crate::Store::extend`]. Returns the new effective deadline.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn extend(&self, token: &Token, by: Duration) -> Result<Timestamp> {
        let d = self
            .inner
            .extend(hash_of(token), ms(by.min(MAX_LIFETIME)))
            .await?;
        Ok(row::time(d))
    }

    /// Sets the absolute deadline to exactly `absolute`, as
    /// [`crate::Store::set_expiry`] (a moment at or before now ends the session as
    /// expired). Returns the new effective deadline.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn set_expiry(&self, token: &Token, absolute: Timestamp) -> Result<Timestamp> {
        let d = self
            .inner
            .set_expiry(hash_of(token), ms_of(absolute))
            .await?;
        Ok(row::time(d))
    }

    /// Sets (or clears) the device label.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::TooLarge`];
    /// [`Error::Unavailable`].
    pub async fn set_label(&self, token: &Token, label: Option<&str>) -> Result<()> {
        if let Some(l) = label {
            check_label(l, &self.inner.opts.limits)?;
        }
        self.inner
            .change("set_label", hash_of(token), |f| {
                f.row.label = label.map(str::to_owned);
                Ok(())
            })
            .await
    }

    /// Removes every session past its deadline now, in batches (the reaper task does
    /// this every [`Options::reaper_interval`]), and trims the expired grace aliases
    /// and the outbox. Returns how many sessions were removed.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn reap_expired(&self) -> Result<usize> {
        self.inner.reap().await
    }

    // ----------------------------------------------------------------------------
    // Users

    /// Binds `user` to the session, as [`crate::Store::bind_user`] (the per-user cap
    /// applies).
    ///
    /// # Errors
    /// As [`crate::Store::bind_user`], and [`Error::Unavailable`].
    pub async fn bind_user(&self, token: &Token, user: &str) -> Result<()> {
        UserId::new(user, &self.inner.opts.limits)?;
        self.inner.bind(hash_of(token), user, None).await
    }

    /// Binds `user` and records how they signed in, without rotating the token, as
    /// [`crate::Store::bind_user_with`].
    ///
    /// # Errors
    /// As [`crate::Store::bind_user_with`], and [`Error::Unavailable`].
    pub async fn bind_user_with(&self, token: &Token, user: &str, how: SignIn) -> Result<()> {
        UserId::new(user, &self.inner.opts.limits)?;
        how.check()?;
        self.inner.bind(hash_of(token), user, Some(&how)).await
    }

    /// Logs `user` in: rotates the token and binds the user, in one transaction.
    /// Returns the new token.
    ///
    /// # Errors
    /// As [`crate::Store::login`], and [`Error::Unavailable`].
    pub async fn login(&self, token: &Token, user: &str) -> Result<Token> {
        self.login_inner(token, user, None).await
    }

    /// Logs `user` in and records how they proved who they are, as
    /// [`crate::Store::login_with`], in one transaction.
    ///
    /// # Errors
    /// As [`crate::Store::login_with`], and [`Error::Unavailable`].
    pub async fn login_with(&self, token: &Token, user: &str, how: SignIn) -> Result<Token> {
        how.check()?;
        self.login_inner(token, user, Some(&how)).await
    }

    async fn login_inner(&self, token: &Token, user: &str, how: Option<&SignIn>) -> Result<Token> {
        UserId::new(user, &self.inner.opts.limits)?;
        let grace = ms(self.inner.opts.rotation_grace);
        loop {
            let fresh = token::fresh_token(|b| self.inner.entropy.lock().fill(b))?;
            let new = hash_of(&fresh);
            match self
                .inner
                .login(hash_of(token), new, grace, user, how)
                .await
            {
                Ok(()) => return Ok(fresh),
                Err(Error::Exists { .. }) if new != hash_of(token) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Records a step-up, as [`crate::Store::step_up`]: rotates the token and adds
    /// `how`'s factors, in one transaction. Returns the new token.
    ///
    /// # Errors
    /// As [`crate::Store::step_up`], and [`Error::Unavailable`].
    pub async fn step_up(&self, token: &Token, how: SignIn) -> Result<Token> {
        how.check()?;
        let grace = ms(self.inner.opts.rotation_grace);
        loop {
            let fresh = token::fresh_token(|b| self.inner.entropy.lock().fill(b))?;
            match self
                .inner
                .step_up(hash_of(token), Some(hash_of(&fresh)), grace, &how)
                .await
            {
                Err(Error::Exists { .. }) => continue, // a fresh draw collided
                other => return other.map(|()| fresh),
            }
        }
    }

    /// Records a step-up without rotating the token, as
    /// [`crate::Store::add_sign_in`].
    ///
    /// # Errors
    /// As [`crate::Store::add_sign_in`], and [`Error::Unavailable`].
    pub async fn add_sign_in(&self, token: &Token, how: SignIn) -> Result<()> {
        how.check()?;
        self.inner.step_up(hash_of(token), None, 0, &how).await
    }

    /// Records the client a request came from, as [`crate::Store::seen_from`]: a
    /// write only when it changed, at most once per touch interval. Returns whether
    /// it wrote.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn seen_from(&self, token: &Token, device: &Device) -> Result<bool> {
        let o = &self.inner.opts;
        let Some(d) = device.stored(o.address_privacy, Timestamp(0)) else {
            // Nothing to keep; the session must still be live.
            return match self.peek(token).await? {
                Some(_) => Ok(false),
                None => Err(Error::Ended),
            };
        };
        let ua = d.user_agent.as_deref().map(str::to_owned);
        let touch = ms(o.touch_interval);
        let h = hash_of(token);
        let inner = &self.inner;
        transaction!(inner, "seen_from", |tx| async {
            let Some(mut f) = inner.resolve(&tx, h).await? else {
                return Err(Error::Ended.into());
            };
            let r = &mut f.row;
            if r.device_at.is_some() && r.user_agent == ua && r.address == d.address {
                return Ok(false);
            }
            if r.device_at
                .is_some_and(|at| f.now.saturating_sub(at) < touch)
            {
                return Ok(false);
            }
            r.user_agent.clone_from(&ua);
            r.address = d.address;
            r.device_at = Some(f.now);
            inner.store(&tx, &f.row).await?;
            Ok(true)
        }
        .await)
    }

    /// [`PostgresStore::seen_from`] for a request that has already read its session:
    /// no round trip when that snapshot says there is nothing to record, as
    /// [`crate::Store::seen_from_if_changed`].
    ///
    /// # Errors
    /// As [`PostgresStore::seen_from`].
    pub async fn seen_from_if_changed(
        &self,
        token: &Token,
        session: &Session,
        device: &Device,
    ) -> Result<bool> {
        if !session.device_due(device, &self.inner.opts) {
            return Ok(false);
        }
        self.seen_from(token, device).await
    }

    /// Ends the sessions of `user` that meet `criterion`, as
    /// [`crate::Store::revoke_user_where`], in one transaction. Returns how many ended.
    ///
    /// # Errors
    /// As [`crate::Store::revoke_user_where`], and [`Error::Unavailable`].
    pub async fn revoke_user_where(&self, user: &str, criterion: &Criterion) -> Result<usize> {
        UserId::new(user, &self.inner.opts.limits)?;
        criterion.check()?;
        self.inner.revoke(user, None, Some(criterion)).await
    }

    /// Unbinds the session's user, as [`crate::Store::unbind_user`]. Returns the user
    /// that was bound, if any.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn unbind_user(&self, token: &Token) -> Result<Option<UserId>> {
        let user = self.inner.unbind(hash_of(token)).await?;
        Ok(user.as_deref().map(UserId::trusted))
    }

    /// The live sessions of `user`, oldest first, as [`crate::Store::sessions_of`]: one
    /// statement on the index of users.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`]; [`Error::Unavailable`].
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<Session>> {
        UserId::new(user, &self.inner.opts.limits)?;
        let inner = &self.inner;
        let rows = inner
            .rows("sessions_of", &inner.sql.of_user, &[&user])
            .await?;
        let mut live = Vec::with_capacity(rows.len());
        for r in &rows {
            let (row, now) = Row::read(r)?;
            if row.deadline(inner.lifetimes) > now {
                live.push((row.created, row.id, inner.session(&row, now)));
            }
        }
        live.sort_by_key(|(c, id, _)| (*c, *id));
        Ok(live.into_iter().map(|(_, _, s)| s).collect())
    }

    /// Ends every session of `user`, as [`crate::Store::revoke_user`], in one
    /// transaction that holds the user's row: a concurrent create for the same user
    /// lands wholly before (and is ended) or after. Returns how many sessions ended.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`]; [`Error::Unavailable`].
    pub async fn revoke_user(&self, user: &str) -> Result<usize> {
        UserId::new(user, &self.inner.opts.limits)?;
        self.inner.revoke(user, None, None).await
    }

    /// Ends every session of `user` authenticated before `before` and makes it the
    /// user's not-before time, in one transaction: [`crate::Store::revoke_user_before`].
    /// Judged on the database's clock (`before` past its now counts as now).
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`]; [`Error::Unavailable`].
    pub async fn revoke_user_before(&self, user: &str, before: Timestamp) -> Result<usize> {
        UserId::new(user, &self.inner.opts.limits)?;
        self.inner.revoke(user, Some(ms_of(before)), None).await
    }

    /// Every user's not-before time: [`crate::Store::not_before_times`].
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn not_before_times(&self) -> Result<Vec<(UserId, Timestamp)>> {
        let inner = &self.inner;
        let rows = inner
            .rows("not_before_times", &inner.sql.not_before_list, &[])
            .await?;
        rows.iter()
            .map(|r| {
                let user: &str = r.get(0);
                let at: i64 = r.get(1);
                let user = UserId::stored(user).map_err(|e| protocol("not_before_times", e))?;
                Ok((user, row::time(at)))
            })
            .collect()
    }

    /// Ends every other session of the token's user and keeps this one, in one
    /// transaction: [`crate::Store::revoke_others`].
    ///
    /// # Errors
    /// [`Error::Ended`] if the token's session is not live; [`Error::Unavailable`].
    pub async fn revoke_others(&self, token: &Token) -> Result<usize> {
        let h = hash_of(token);
        self.inner.revoke_others(Some(h), SessionId(0)).await
    }

    /// [`PostgresStore::revoke_others`] for the session with public id `id`:
    /// [`crate::Store::revoke_others_by_id`].
    ///
    /// # Errors
    /// [`Error::Ended`] if no live session has that id; [`Error::Unavailable`].
    pub async fn revoke_others_by_id(&self, id: SessionId) -> Result<usize> {
        self.inner.revoke_others(None, id).await
    }

    // ----------------------------------------------------------------------------
    // Rotation and ending

    /// Replaces the token with a fresh one, as [`crate::Store::rotate`]: the old one
    /// resolves for [`Options::rotation_grace`].
    ///
    /// # Errors
    /// As [`crate::Store::rotate`], and [`Error::Unavailable`].
    pub async fn rotate(&self, token: &Token) -> Result<Token> {
        let grace = ms(self.inner.opts.rotation_grace);
        loop {
            let fresh = token::fresh_token(|b| self.inner.entropy.lock().fill(b))?;
            match self
                .inner
                .rotate(hash_of(token), hash_of(&fresh), grace)
                .await
            {
                Err(Error::Exists { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(fresh),
            }
        }
    }

    /// Rotates to a token the caller chose, with no grace, as
    /// [`crate::Store::rotate_to`].
    ///
    /// # Errors
    /// As [`crate::Store::rotate_to`], and [`Error::Unavailable`].
    pub async fn rotate_to(&self, token: &Token, new: &Token) -> Result<()> {
        self.inner.rotate(hash_of(token), hash_of(new), 0).await
    }

    /// Ends the session, as [`crate::Store::end`]. Returns false if it was not live.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn end(&self, token: &Token) -> Result<bool> {
        self.inner.end(Some(hash_of(token)), SessionId(0)).await
    }

    /// Ends the session with public id `id`. Returns false if it was not live.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn end_by_id(&self, id: SessionId) -> Result<bool> {
        self.inner.end(None, id).await
    }

    /// Ends every session of this store (this schema), as [`crate::Store::clear`], in
    /// batches (a session created meanwhile may survive). Returns how many live
    /// sessions ended.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn clear(&self) -> Result<usize> {
        let inner = &self.inner;
        let mut ended = 0usize;
        loop {
            let now = inner.now_ms().await?;
            let rows = inner
                .write_rows("clear", &inner.sql.clear, &[&inner.popts.batch])
                .await?;
            ended += rows.iter().filter(|r| r.get::<_, i64>(0) > now).count();
            if (rows.len() as i64) < inner.popts.batch {
                break;
            }
        }
        let n = i64::try_from(ended).unwrap_or(i64::MAX);
        transaction!(inner, "clear", |tx| async {
            tx.execute(inner.sql.clear_aliases.as_str(), &[]).await?;
            let none: Option<uuid::Uuid> = None;
            let text: Option<&str> = None;
            let ids: Option<Vec<uuid::Uuid>> = None;
            tx.execute(
                inner.sql.event.as_str(),
                &[&ops::kind::CLEARED, &none, &text, &text, &ids, &Some(n)],
            )
            .await?;
            Ok(())
        }
        .await)?;
        Ok(ended)
    }

    /// How many live sessions the store holds (a count over the table).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn len(&self) -> Result<usize> {
        let inner = &self.inner;
        let rows = inner.rows("len", &inner.sql.live_now, &[]).await?;
        let n: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Whether the store holds no live session.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    // ----------------------------------------------------------------------------
    // Events

    /// Subscribes to the events of every node sharing this store: every event whose
    /// transaction commits after this call returns, in commit order for any two
    /// changes to one session or one user (see `events.rs` for how), to
    /// every subscriber on every node, surviving reconnects — unless the subscriber
    /// falls more than [`PostgresOptions::event_table_len`] behind, or its channel
    /// (capacity [`Options::event_capacity`]) is full, in which case events are
    /// dropped and counted ([`PostgresStore::events_dropped`]). A task on the current
    /// tokio runtime reads the outbox on a connection of its own; it stops at the first
    /// event after the receiver is dropped, or soon after the store is dropped.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn subscribe(&self) -> Result<Receiver<Event>> {
        let inner = &self.inner;
        // The last number, then (a later snapshot) the running transactions: their
        // events may be numbered before this and commit after; the reader delivers
        // them first.
        let last = inner
            .rows("subscribe", &inner.sql.event_numbers, &[])
            .await?;
        let last: i64 = last
            .first()
            .ok_or_else(|| protocol("subscribe", "no event number"))?
            .get(0);
        let running = inner.rows("subscribe", &inner.sql.running, &[]).await?;
        let r = running
            .first()
            .ok_or_else(|| protocol("subscribe", "no snapshot"))?;
        let pos = Position {
            after: last,
            horizon: 0,
            pending: std::collections::VecDeque::new(),
            in_flight: Some((r.get(0), r.get(1), last)),
        };
        let (tx, rx) = crossbeam_channel::bounded(inner.opts.event_capacity);
        tokio::spawn(events::read_events(Arc::downgrade(inner), tx, pos));
        Ok(rx)
    }

    /// Events a subscriber's full channel could not take (see
    /// [`PostgresStore::subscribe`]).
    pub fn events_dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Hands the `metrics` facade what the database knows of the store: the live
    /// sessions (a count) as `sessiondb_sessions_live` and this handle's dropped events
    /// as `sessiondb_events_dropped_total`, labelled with [`Options::metrics_label`].
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    #[cfg(feature = "metrics")]
    pub async fn publish_metrics(&self) -> Result<()> {
        let label = &self.inner.opts.metrics_label;
        let live = self.len().await?;
        crate::util::metrics::gauge("sessiondb_sessions_live", label, live as f64);
        crate::util::metrics::counter(
            "sessiondb_events_dropped_total",
            label,
            &[],
            self.events_dropped(),
        );
        Ok(())
    }
}

/// The server a configuration names, for messages: its hosts and ports (never the
/// password).
fn where_to(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        "the default server".into()
    } else {
        hosts.join(",")
    }
}

/// [`Error::InvalidOption`] unless called inside a tokio runtime.
fn in_runtime() -> Result<()> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::InvalidOption {
            name: "PostgresStore::connect",
            reason: "must be awaited inside a tokio runtime (its pool and reaper run as tokio \
                     tasks)"
                .into(),
        });
    }
    Ok(())
}

fn pool_error(context: &str, e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(context, e),
        other => Error::Unavailable {
            backend: "postgres",
            context: context.into(),
            reason: other.to_string(),
        },
    }
}

impl Inner {
    async fn client(&self, op: &str) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| pool_error(op, e))
    }

    /// One pass of the reaper: expired sessions in batches, then expired aliases and
    /// the outbox beyond its length.
    async fn reap(&self) -> Result<usize> {
        let mut n = 0usize;
        loop {
            let now = self.now_ms().await?;
            let rows = self
                .write_rows("reap", &self.sql.reap, &[&now, &self.popts.batch])
                .await?;
            let (gone, due): (i64, i64) = rows.first().map_or((0, 0), |r| (r.get(0), r.get(1)));
            n += usize::try_from(gone).unwrap_or(0);
            if due < self.popts.batch {
                break;
            }
        }
        let now = self.now_ms().await?;
        self.write_rows("reap", &self.sql.reap_aliases, &[&now, &self.popts.batch])
            .await?;
        self.write_rows(
            "reap",
            &self.sql.trim_events,
            &[&self.popts.event_table_len],
        )
        .await?;
        Ok(n)
    }
}

async fn reap_loop(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        // A failed pass (server away) is retried at the next tick.
        let _ = inner.reap().await;
    }
}

/// Opens a connection that `LISTEN`s on `channel`: its messages are driven by a task
/// that turns each notification into a wake-up.
async fn listen<T>(config: tokio_postgres::Config, tls: T, channel: String) -> Result<Listener>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut conn) = config
        .connect(tls)
        .await
        .map_err(|e| db("subscribing", e))?;
    let (wake_tx, wake) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
            match m {
                Ok(AsyncMessage::Notification(_)) => {
                    if wake_tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(|e| db("subscribing", e))?;
    Ok(Listener { client, wake })
}
