//! [`Sessions`]: one async handle over any backend — the embedded [`Store`], a
//! `RedisStore` (cargo feature `redis`) or a `PostgresStore` (feature `postgres`) — so
//! an app's session code does not change when its sessions move from one process to a
//! Redis or a database shared by several.
//!
//! This module owns the seam between the two calling styles. The embedded store is
//! synchronous and answers in microseconds, so calling it inside an async handler is
//! fine — except that a write under [`Durability::Sync`] then waits for an fsync. Those
//! writes are made directly too, inside [`Store::deferred`], and the task awaits their
//! [`crate::Commit`]: no runtime thread is held during the fsync, and every task writing
//! meanwhile shares it. ([`Sessions::offload_writes`] runs writes on tokio's blocking
//! pool instead, `spawn_blocking`, as earlier versions did.)
//! The Redis and PostgreSQL stores are network clients, so their methods are async
//! and never block a runtime thread. [`Sessions`] gives both the async shape; code that wants the
//! embedded store's synchronous API (a desktop app, a CLI) keeps using [`Store`].
//!
//! ```
//! use sessiondb::{NewSession, Options, Sessions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sessiondb::Error> {
//! // "memory:", a directory, "redis://host:port/" (feature `redis`) or
// "postgres://user@host/db" (feature `postgres`).
//! let sessions = Sessions::open("memory:", Options::default()).await?;
//! let (token, _) = sessions.create(NewSession::anonymous()).await?;
//! let token = sessions.login(&token, "alice").await?;
//! assert_eq!(sessions.sessions_of("alice").await?.len(), 1);
//! assert_eq!(sessions.revoke_user("alice").await?, 1);
//! assert!(sessions.get(&token).await?.is_none());
//! # Ok(()) }
//! ```

use std::time::Duration;

use crossbeam_channel::Receiver;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::data::SessionData;
use crate::model::device::Device;
use crate::model::event::Event;
use crate::model::portable::SessionRecord;
use crate::model::session::{NewSession, Session, UserId};
use crate::model::signin::{Criterion, SignIn};
use crate::model::token::{SessionId, Token};
use crate::options::{Durability, Options};
use crate::store::Store;

/// Sessions on whichever backend the configuration names, with one async API. Cheap to
/// clone. Build with [`Sessions::open`] (from a configuration string),
/// [`Sessions::embedded`], `Sessions::redis` or `Sessions::postgres`.
#[derive(Clone, Debug)]
pub struct Sessions {
    engine: Engine,
}

#[derive(Clone, Debug)]
enum Engine {
    Embedded {
        store: Store,
        /// Writes wait for an fsync (`Sync`): made inside [`Store::deferred`], and
        /// their commit awaited.
        sync: bool,
        /// Writes run on the blocking pool ([`Sessions::offload_writes`]).
        offload: bool,
    },
    #[cfg(feature = "redis")]
    Redis(crate::redis::RedisStore),
    #[cfg(feature = "postgres")]
    Postgres(crate::postgres::PostgresStore),
}

/// Calls the same method on whichever backend: `embedded` with the store (reads, and
/// writes that do not wait for the disk), `redis` awaited.
macro_rules! read {
    ($self:ident, |$s:ident| $embedded:expr, |$r:ident| $redis:expr) => {
        match &$self.engine {
            Engine::Embedded { store: $s, .. } => Ok($embedded),
            #[cfg(feature = "redis")]
            Engine::Redis($r) => $redis.await,
            #[cfg(feature = "postgres")]
            Engine::Postgres($r) => $redis.await,
        }
    };
}

/// As `read!`, but the embedded call may wait for an fsync: then it is made inside
/// [`Store::deferred`] and its commit awaited, or (offloaded) it runs on the blocking
/// pool ([`offload`]) with owned copies of the arguments; otherwise inline, on the
/// arguments as they are.
macro_rules! write {
    ($self:ident, ($($arg:ident),*), |$s:ident| $embedded:expr, |$r:ident| $redis:expr) => {
        match &$self.engine {
            Engine::Embedded { store, offload: true, .. } => {
                $(let $arg = $arg.to_owned();)*
                offload(store, move |$s| { $(let $arg = &$arg;)* $embedded }).await
            }
            Engine::Embedded { store, sync: true, .. } => {
                let (r, commit) = store.deferred(|$s| $embedded);
                commit.settle(r).await
            }
            Engine::Embedded { store: $s, .. } => $embedded,
            #[cfg(feature = "redis")]
            Engine::Redis($r) => $redis.await,
            #[cfg(feature = "postgres")]
            Engine::Postgres($r) => $redis.await,
        }
    };
}

/// Runs the embedded write `f` on tokio's blocking pool (it waits for an fsync, which
/// would stall an async worker), or directly when no runtime is there.
async fn offload<T, F>(store: &Store, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T> + Send + 'static,
{
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let store = store.clone();
        return match rt.spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Io {
                context: "the runtime shut down during a session write".into(),
                source: std::io::Error::from(std::io::ErrorKind::Interrupted),
            }),
        };
    }
    f(store)
}

impl Sessions {
    /// Opens the backend a configuration string names:
    /// - `memory:` — an embedded store in memory ([`Store::in_memory_with`]);
    /// - `redis://…`, `rediss://…`, `redis+unix://…` or `unix://…` — a Redis or Valkey
    ///   server (feature `redis`;
    ///   `RedisStore::connect`), with the default `RedisOptions`;
    /// - `postgres://…` or `postgresql://…` — a PostgreSQL database (feature
    ///   `postgres`; `PostgresStore::connect`), with the default `PostgresOptions`
    ///   (schema `sessiondb`); over TLS when the URL's `sslmode` asks for it (`prefer`,
    ///   the default, or `require`) with the feature `postgres-tls`, the server's
    ///   certificate checked against the platform's roots;
    /// - anything else — a directory for an embedded durable store ([`Store::open_with`]).
    ///
    /// # Errors
    /// As the backend's constructor; [`Error::InvalidOption`] for a Redis or PostgreSQL
    /// URL in a build without its feature.
    pub async fn open(config: &str, opts: Options) -> Result<Sessions> {
        if config == "memory:" {
            return Ok(Sessions::embedded(Store::in_memory_with(opts)?));
        }
        if ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| config.starts_with(scheme))
        {
            #[cfg(feature = "redis")]
            return Ok(Sessions::redis(
                crate::redis::RedisStore::connect(config, opts).await?,
            ));
            #[cfg(not(feature = "redis"))]
            return Err(Error::InvalidOption {
                name: "session backend",
                reason: "a redis:// backend needs sessiondb's `redis` cargo feature".into(),
            });
        }
        if ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| config.starts_with(scheme))
        {
            #[cfg(feature = "postgres")]
            return Ok(Sessions::postgres(
                crate::postgres::PostgresStore::connect(config, opts).await?,
            ));
            #[cfg(not(feature = "postgres"))]
            return Err(Error::InvalidOption {
                name: "session backend",
                reason: "a postgres:// backend needs sessiondb's `postgres` cargo feature".into(),
            });
        }
        let dir = config.strip_prefix("file:").unwrap_or(config).to_owned();
        let store = match tokio::runtime::Handle::try_current() {
            // Recovery reads the whole log: keep it off the async workers.
            Ok(rt) => rt
                .spawn_blocking(move || Store::open_with(dir, opts))
                .await
                .map_err(|e| Error::Io {
                    context: "opening the store".into(),
                    source: std::io::Error::other(e.to_string()),
                })??,
            Err(_) => Store::open_with(dir, opts)?,
        };
        Ok(Sessions::embedded(store))
    }

    /// The embedded `store`, behind the async API.
    pub fn embedded(store: Store) -> Sessions {
        let sync = matches!(store.options().durability, Durability::Sync);
        Sessions {
            engine: Engine::Embedded {
                store,
                sync,
                offload: false,
            },
        }
    }

    /// Overrides whether the embedded store's writes run on tokio's blocking pool
    /// (`true`) or directly on the calling task (`false`, the default: the in-memory
    /// part takes microseconds, and under [`Durability::Sync`] the task then awaits the
    /// fsync without holding a thread; see [`Store::deferred`]). Offloading costs a
    /// hand-off to another thread per write, more than the write itself. No effect on
    /// Redis.
    #[must_use]
    pub fn offload_writes(mut self, on: bool) -> Sessions {
        #[allow(irrefutable_let_patterns)] // without the `redis` or `postgres` feature
        if let Engine::Embedded { offload, .. } = &mut self.engine {
            *offload = on;
        }
        self
    }

    /// The Redis `store`, behind the async API.
    #[cfg(feature = "redis")]
    pub fn redis(store: crate::redis::RedisStore) -> Sessions {
        Sessions {
            engine: Engine::Redis(store),
        }
    }

    /// The embedded store, if that is the backend (for what only it has: instances,
    /// compaction, statistics, the synchronous API).
    pub fn as_embedded(&self) -> Option<&Store> {
        match &self.engine {
            Engine::Embedded { store, .. } => Some(store),
            #[cfg(feature = "redis")]
            Engine::Redis(_) => None,
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => None,
        }
    }

    /// The Redis store, if that is the backend.
    #[cfg(feature = "redis")]
    pub fn as_redis(&self) -> Option<&crate::redis::RedisStore> {
        match &self.engine {
            Engine::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// The PostgreSQL store, if that is the backend.
    #[cfg(feature = "postgres")]
    pub fn as_postgres(&self) -> Option<&crate::postgres::PostgresStore> {
        match &self.engine {
            Engine::Postgres(p) => Some(p),
            _ => None,
        }
    }

    /// The PostgreSQL `store`, behind the async API.
    #[cfg(feature = "postgres")]
    pub fn postgres(store: crate::postgres::PostgresStore) -> Sessions {
        Sessions {
            engine: Engine::Postgres(store),
        }
    }

    /// "embedded", "redis" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        match &self.engine {
            Engine::Embedded { .. } => "embedded",
            #[cfg(feature = "redis")]
            Engine::Redis(_) => "redis",
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => "postgres",
        }
    }

    /// The options the backend was opened with.
    pub fn options(&self) -> &Options {
        match &self.engine {
            Engine::Embedded { store, .. } => store.options(),
            #[cfg(feature = "redis")]
            Engine::Redis(r) => r.options(),

            #[cfg(feature = "postgres")]
            Engine::Postgres(r) => r.options(),
        }
    }

    /// Whether a write waits for the disk or the network (so a caller batching
    /// writes, such as a framework adapter, should not hold anything while it runs).
    pub fn writes_wait(&self) -> bool {
        match &self.engine {
            Engine::Embedded { sync, offload, .. } => *sync || *offload,
            #[cfg(feature = "redis")]
            Engine::Redis(_) => true,
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => true,
        }
    }

    // ----------------------------------------------------------------------------
    // Creating and reading

    /// Creates a session: [`Store::create`].
    ///
    /// # Errors
    /// As the backend's `create`.
    pub async fn create(&self, new: NewSession) -> Result<(Token, Session)> {
        write!(self, (new), |s| s.create(new.clone()), |r| r.create(new))
    }

    /// Creates a session under a token the caller chose: [`Store::create_with_token`].
    ///
    /// # Errors
    /// As the backend's `create_with_token`.
    pub async fn create_with_token(&self, token: &Token, new: NewSession) -> Result<Session> {
        write!(
            self,
            (token, new),
            |s| s.create_with_token(token, new.clone()),
            |r| r.create_with_token(token, new)
        )
    }

    /// Brings in an exported session: [`Store::import`].
    ///
    /// # Errors
    /// As the backend's `import`.
    pub async fn import(&self, rec: SessionRecord) -> Result<bool> {
        write!(self, (rec), |s| s.import(rec.clone()), |r| r.import(rec))
    }

    /// Calls `f` with every live session: [`Store::export`].
    ///
    /// # Errors
    /// Whatever `f` returns; the backend's errors.
    pub async fn export(&self, f: impl FnMut(SessionRecord) -> Result<()>) -> Result<usize> {
        match &self.engine {
            Engine::Embedded { store, .. } => store.export(f),
            #[cfg(feature = "redis")]
            Engine::Redis(r) => r.export(f).await,

            #[cfg(feature = "postgres")]
            Engine::Postgres(r) => r.export(f).await,
        }
    }

    /// The live session `token` addresses (counts as activity): [`Store::get`].
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn get(&self, token: &Token) -> Result<Option<Session>> {
        read!(self, |s| s.get(token), |r| r.get(token))
    }

    /// Like [`Sessions::get`], without counting as activity: [`Store::peek`].
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn peek(&self, token: &Token) -> Result<Option<Session>> {
        read!(self, |s| s.peek(token), |r| r.peek(token))
    }

    /// The user bound to the session: [`Store::user_of`].
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn user_of(&self, token: &Token) -> Result<Option<UserId>> {
        read!(self, |s| s.user_of(token), |r| r.user_of(token))
    }

    /// The live session with public id `id`: [`Store::get_by_id`].
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn get_by_id(&self, id: SessionId) -> Result<Option<Session>> {
        read!(self, |s| s.get_by_id(id), |r| r.get_by_id(id))
    }

    // ----------------------------------------------------------------------------
    // Data

    /// Sets `key` to `value`: [`Store::put`]. Returns the new version.
    ///
    /// # Errors
    /// As the backend's `put`.
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        token: &Token,
        key: &str,
        value: &T,
    ) -> Result<u64> {
        let bytes = crate::util::codec::encode(value, Some(key))?;
        self.put_raw(token, key, &bytes).await
    }

    /// Sets `key` to raw bytes: [`Store::put_raw`]. Returns the new version.
    ///
    /// # Errors
    /// As the backend's `put_raw`.
    pub async fn put_raw(&self, token: &Token, key: &str, value: &[u8]) -> Result<u64> {
        write!(
            self,
            (token, key, value),
            |s| s.put_raw(token, key, value),
            |r| r.put_raw(token, key, value)
        )
    }

    /// Removes `key`: [`Store::remove`]. Returns the new version.
    ///
    /// # Errors
    /// As the backend's `remove`.
    pub async fn remove(&self, token: &Token, key: &str) -> Result<u64> {
        write!(self, (token, key), |s| s.remove(token, key), |r| r
            .remove(token, key))
    }

    /// Atomic read-modify-write of the data: [`Store::update`] (`f` may run more
    /// than once).
    ///
    /// # Errors
    /// As the backend's `update`.
    pub async fn update<R, F>(&self, token: &Token, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut SessionData) -> Result<R> + Send + 'static,
    {
        let mut f = f;
        write!(self, (token), |s| s.update(token, &mut f), |r| r
            .update(token, f))
    }

    /// Compare-and-swap save of the whole data: [`Store::save`].
    ///
    /// # Errors
    /// As the backend's `save`.
    pub async fn save(
        &self,
        token: &Token,
        expected_version: u64,
        data: &SessionData,
    ) -> Result<u64> {
        write!(
            self,
            (token, data),
            |s| s.save(token, expected_version, data),
            |r| r.save(token, expected_version, data)
        )
    }

    // ----------------------------------------------------------------------------
    // Expiry

    /// Records activity now: [`Store::touch`].
    ///
    /// # Errors
    /// As the backend's `touch`.
    pub async fn touch(&self, token: &Token) -> Result<()> {
        write!(self, (token), |s| s.touch(token), |r| r.touch(token))
    }

    /// Extends the absolute deadline: [`Store::extend`].
    ///
    /// # Errors
    /// As the backend's `extend`.
    pub async fn extend(&self, token: &Token, by: Duration) -> Result<Timestamp> {
        write!(self, (token), |s| s.extend(token, by), |r| r
            .extend(token, by))
    }

    /// Sets the absolute deadline: [`Store::set_expiry`].
    ///
    /// # Errors
    /// As the backend's `set_expiry`.
    pub async fn set_expiry(&self, token: &Token, absolute: Timestamp) -> Result<Timestamp> {
        write!(self, (token), |s| s.set_expiry(token, absolute), |r| r
            .set_expiry(token, absolute))
    }

    /// Sets or clears the device label: [`Store::set_label`].
    ///
    /// # Errors
    /// As the backend's `set_label`.
    pub async fn set_label(&self, token: &Token, label: Option<&str>) -> Result<()> {
        let label = label.map(str::to_owned);
        write!(
            self,
            (token, label),
            |s| s.set_label(token, label.as_deref()),
            |r| r.set_label(token, label.as_deref())
        )
    }

    /// Removes every expired session now: [`Store::reap_expired`].
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn reap_expired(&self) -> Result<usize> {
        write!(self, (), |s| Ok(s.reap_expired()), |r| r.reap_expired())
    }

    // ----------------------------------------------------------------------------
    // Users

    /// Binds `user` to the session: [`Store::bind_user`].
    ///
    /// # Errors
    /// As the backend's `bind_user`.
    pub async fn bind_user(&self, token: &Token, user: &str) -> Result<()> {
        write!(self, (token, user), |s| s.bind_user(token, user), |r| r
            .bind_user(token, user))
    }

    /// Rotates the token and binds `user`: [`Store::login`]. Returns the new token.
    ///
    /// # Errors
    /// As the backend's `login`.
    pub async fn login(&self, token: &Token, user: &str) -> Result<Token> {
        write!(self, (token, user), |s| s.login(token, user), |r| r
            .login(token, user))
    }

    /// Logs `user` in and records how they signed in: [`Store::login_with`].
    ///
    /// # Errors
    /// As the backend's `login_with`.
    pub async fn login_with(&self, token: &Token, user: &str, how: SignIn) -> Result<Token> {
        write!(
            self,
            (token, user, how),
            |s| s.login_with(token, user, how.clone()),
            |r| r.login_with(token, user, how.clone())
        )
    }

    /// Records a step-up, rotating the token: [`Store::step_up`].
    ///
    /// # Errors
    /// As the backend's `step_up`.
    pub async fn step_up(&self, token: &Token, how: SignIn) -> Result<Token> {
        write!(self, (token, how), |s| s.step_up(token, how.clone()), |r| r
            .step_up(token, how.clone()))
    }

    /// Binds `user` and records how they signed in, without rotating the token (for a
    /// framework that rotates its ids itself): [`Store::bind_user_with`].
    ///
    /// # Errors
    /// As the backend's `bind_user_with`.
    pub async fn bind_user_with(&self, token: &Token, user: &str, how: SignIn) -> Result<()> {
        write!(
            self,
            (token, user, how),
            |s| s.bind_user_with(token, user, how.clone()),
            |r| r.bind_user_with(token, user, how.clone())
        )
    }

    /// Records a step-up without rotating the token (for a framework that rotates its
    /// ids itself): [`Store::add_sign_in`].
    ///
    /// # Errors
    /// As the backend's `add_sign_in`.
    pub async fn add_sign_in(&self, token: &Token, how: SignIn) -> Result<()> {
        write!(
            self,
            (token, how),
            |s| s.add_sign_in(token, how.clone()),
            |r| r.add_sign_in(token, how.clone())
        )
    }

    /// Records the client a request came from, when it changed, at most once per
    /// touch interval: [`Store::seen_from`]. Returns whether it wrote.
    ///
    /// # Errors
    /// As the backend's `seen_from`.
    pub async fn seen_from(&self, token: &Token, device: &Device) -> Result<bool> {
        write!(self, (token, device), |s| s.seen_from(token, device), |r| r
            .seen_from(token, device))
    }

    /// Records the client a request came from, checked first against the session the
    /// request already read: no lookup (no round trip on Redis) when that says there
    /// is nothing to record. [`Store::seen_from_if_changed`].
    ///
    /// # Errors
    /// As the backend's `seen_from`.
    pub async fn seen_from_if_changed(
        &self,
        token: &Token,
        session: &Session,
        device: &Device,
    ) -> Result<bool> {
        if !session.device_due(device, self.options()) {
            return Ok(false);
        }
        self.seen_from(token, device).await
    }

    /// Unbinds the session's user: [`Store::unbind_user`].
    ///
    /// # Errors
    /// As the backend's `unbind_user`.
    pub async fn unbind_user(&self, token: &Token) -> Result<Option<UserId>> {
        write!(self, (token), |s| s.unbind_user(token), |r| r
            .unbind_user(token))
    }

    /// The live sessions of `user`, oldest first: [`Store::sessions_of`].
    ///
    /// # Errors
    /// As the backend's `sessions_of`.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<Session>> {
        match &self.engine {
            Engine::Embedded { store, .. } => store.sessions_of(user),
            #[cfg(feature = "redis")]
            Engine::Redis(r) => r.sessions_of(user).await,

            #[cfg(feature = "postgres")]
            Engine::Postgres(r) => r.sessions_of(user).await,
        }
    }

    /// Ends every session of `user`: [`Store::revoke_user`].
    ///
    /// # Errors
    /// As the backend's `revoke_user`.
    pub async fn revoke_user(&self, user: &str) -> Result<usize> {
        write!(self, (user), |s| s.revoke_user(user), |r| r
            .revoke_user(user))
    }

    /// Ends every session of `user` authenticated before `before` and keeps any
    /// such session out from then on (a password change):
    /// [`Store::revoke_user_before`].
    ///
    /// # Errors
    /// As the backend's `revoke_user_before`.
    pub async fn revoke_user_before(&self, user: &str, before: Timestamp) -> Result<usize> {
        write!(self, (user), |s| s.revoke_user_before(user, before), |r| r
            .revoke_user_before(user, before))
    }

    /// Ends the sessions of `user` that meet `criterion` (signed in with a method,
    /// or below a level): [`Store::revoke_user_where`].
    ///
    /// # Errors
    /// As the backend's `revoke_user_where`.
    pub async fn revoke_user_where(&self, user: &str, criterion: &Criterion) -> Result<usize> {
        write!(
            self,
            (user, criterion),
            |s| s.revoke_user_where(user, criterion),
            |r| r.revoke_user_where(user, criterion)
        )
    }

    /// Hands the `metrics` facade the store's gauges and counters:
    /// [`Store::publish_metrics`] embedded, `RedisStore::publish_metrics` or
    /// `PostgresStore::publish_metrics` on a shared backend.
    ///
    /// # Errors
    /// On a shared backend, [`Error::Unavailable`].
    #[cfg(feature = "metrics")]
    pub async fn publish_metrics(&self) -> Result<()> {
        match &self.engine {
            Engine::Embedded { store, .. } => {
                store.publish_metrics();
                Ok(())
            }
            #[cfg(feature = "redis")]
            Engine::Redis(r) => r.publish_metrics().await,

            #[cfg(feature = "postgres")]
            Engine::Postgres(r) => r.publish_metrics().await,
        }
    }

    /// Every user's not-before time: [`Store::not_before_times`].
    ///
    /// # Errors
    /// As the backend's `not_before_times`.
    pub async fn not_before_times(&self) -> Result<Vec<(UserId, Timestamp)>> {
        match &self.engine {
            Engine::Embedded { store, .. } => Ok(store.not_before_times()),
            #[cfg(feature = "redis")]
            Engine::Redis(r) => r.not_before_times().await,

            #[cfg(feature = "postgres")]
            Engine::Postgres(r) => r.not_before_times().await,
        }
    }

    /// Ends every other session of the token's user and keeps this one ("sign out all
    /// other devices"): [`Store::revoke_others`].
    ///
    /// # Errors
    /// As the backend's `revoke_others`.
    pub async fn revoke_others(&self, token: &Token) -> Result<usize> {
        write!(self, (token), |s| s.revoke_others(token), |r| r
            .revoke_others(token))
    }

    /// Ends every other session of the user of the session with public id `id`:
    /// [`Store::revoke_others_by_id`].
    ///
    /// # Errors
    /// As the backend's `revoke_others_by_id`.
    pub async fn revoke_others_by_id(&self, id: SessionId) -> Result<usize> {
        write!(self, (), |s| s.revoke_others_by_id(id), |r| r
            .revoke_others_by_id(id))
    }

    // ----------------------------------------------------------------------------
    // Rotation and ending

    /// Replaces the token, with a grace period for the old one: [`Store::rotate`].
    ///
    /// # Errors
    /// As the backend's `rotate`.
    pub async fn rotate(&self, token: &Token) -> Result<Token> {
        write!(self, (token), |s| s.rotate(token), |r| r.rotate(token))
    }

    /// Rotates to a token the caller chose, with no grace: [`Store::rotate_to`].
    ///
    /// # Errors
    /// As the backend's `rotate_to`.
    pub async fn rotate_to(&self, token: &Token, new: &Token) -> Result<()> {
        write!(self, (token, new), |s| s.rotate_to(token, new), |r| r
            .rotate_to(token, new))
    }

    /// Ends the session: [`Store::end`]. Returns false if it was not live.
    ///
    /// # Errors
    /// As the backend's `end`.
    pub async fn end(&self, token: &Token) -> Result<bool> {
        write!(self, (token), |s| s.end(token), |r| r.end(token))
    }

    /// Ends the session with public id `id`: [`Store::end_by_id`].
    ///
    /// # Errors
    /// As the backend's `end_by_id`.
    pub async fn end_by_id(&self, id: SessionId) -> Result<bool> {
        write!(self, (), |s| s.end_by_id(id), |r| r.end_by_id(id))
    }

    /// Ends every session: [`Store::clear`].
    ///
    /// # Errors
    /// As the backend's `clear`.
    pub async fn clear(&self) -> Result<usize> {
        write!(self, (), |s| s.clear(), |r| r.clear())
    }

    /// How many sessions the backend holds: [`Store::len`].
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn len(&self) -> Result<usize> {
        read!(self, |s| s.len(), |r| r.len())
    }

    /// Whether the backend holds no session.
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Subscribes to the backend's events: [`Store::subscribe`] (this process's
    /// events) or `RedisStore::subscribe` (every node's).
    ///
    /// # Errors
    /// Only a shared backend's (Redis, PostgreSQL) [`Error::Unavailable`].
    pub async fn subscribe(&self) -> Result<Receiver<Event>> {
        read!(self, |s| s.subscribe(), |r| r.subscribe())
    }
}

impl From<Store> for Sessions {
    fn from(store: Store) -> Sessions {
        Sessions::embedded(store)
    }
}

#[cfg(feature = "redis")]
impl From<crate::redis::RedisStore> for Sessions {
    fn from(store: crate::redis::RedisStore) -> Sessions {
        Sessions::redis(store)
    }
}

#[cfg(feature = "postgres")]
impl From<crate::postgres::PostgresStore> for Sessions {
    fn from(store: crate::postgres::PostgresStore) -> Sessions {
        Sessions::postgres(store)
    }
}
