//! The server side of the command line (cargo feature `cli` with `redis` or
//! `postgres`): connecting a [`RedisStore`] or a [`PostgresStore`] for an operator — a
//! tokio current-thread runtime owned by the command, no reaper, limits as wide as the
//! format — and running its async operations to completion, one at a time
//! ([`Remote::run`]) or, for import's per-session calls, many in flight at once
//! ([`Remote::each`]), so the commands stay sequential code.

use std::future::Future;

use sessiondb::{Error, Options};
#[cfg(feature = "postgres")]
use sessiondb::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
use sessiondb::{RedisOptions, RedisStore};
use tokio::task::JoinSet;

/// How many calls [`Remote::each`] keeps in flight on Redis. The connection is
/// multiplexed: the calls travel pipelined, so a migration is not one network round
/// trip per session.
#[cfg(feature = "redis")]
const REDIS_IN_FLIGHT: usize = 64;

/// The connections the tool opens to PostgreSQL, and so the calls [`Remote::each`]
/// keeps in flight there (each is a transaction on a connection of its own): a few,
/// beside the application's own pools on a server that is serving it.
#[cfg(feature = "postgres")]
const POSTGRES_CONNECTIONS: usize = 8;

/// A connected store and the runtime its connections live on.
pub struct Remote<S> {
    rt: tokio::runtime::Runtime,
    store: S,
    in_flight: usize,
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            context: "starting the tokio runtime".into(),
            source,
        })
}

#[cfg(feature = "redis")]
impl Remote<RedisStore> {
    /// Connects to Redis at `url` with keys under `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad URL or prefix; [`Error::Unavailable`] if the
    /// server cannot be reached; [`Error::Io`] if no runtime can be started.
    pub fn redis(url: &str, prefix: &str, opts: Options) -> Result<Remote<RedisStore>, Error> {
        let rt = runtime()?;
        let ropts = RedisOptions::default().prefix(prefix);
        let store = rt.block_on(RedisStore::connect_with(url, opts, ropts))?;
        Ok(Remote {
            rt,
            store,
            in_flight: REDIS_IN_FLIGHT,
        })
    }
}

#[cfg(feature = "postgres")]
impl Remote<PostgresStore> {
    /// Connects to the PostgreSQL database at `url` with the store's tables in
    /// `schema`. With `create`, connecting creates (or migrates) the schema; without,
    /// it changes nothing, and answers `None` if the schema holds no store.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad URL or schema; [`Error::Unavailable`] if the
    /// server cannot be reached; [`Error::UnsupportedSchema`] if a newer sessiondb
    /// migrated the schema; [`Error::Io`] if no runtime can be started.
    pub fn postgres(
        url: &str,
        schema: &str,
        opts: Options,
        create: bool,
    ) -> Result<Option<Remote<PostgresStore>>, Error> {
        let rt = runtime()?;
        let popts = PostgresOptions::default()
            .schema(schema)
            .pool_size(POSTGRES_CONNECTIONS)
            .migrate(create);
        let store = match rt.block_on(PostgresStore::connect_with(url, opts, popts)) {
            Ok(store) => store,
            // Not migrating, and no schema there: no store, and nothing created.
            Err(Error::UnsupportedSchema { found: 0, .. }) if !create => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Remote {
            rt,
            store,
            in_flight: POSTGRES_CONNECTIONS,
        }))
    }
}

impl<S: Clone> Remote<S> {
    /// Runs `f(store)` to completion.
    pub fn run<'a, F, T>(&'a self, f: impl FnOnce(&'a S) -> F) -> T
    where
        F: Future<Output = T> + 'a,
    {
        self.rt.block_on(f(&self.store))
    }

    /// Runs `op(store, item)` for every item, a few at once (many on Redis, one per
    /// connection on PostgreSQL), and calls `done(index, result)` as each finishes (in
    /// any order). Once `done` returns false no further item is started, but every
    /// call already started is waited for and passed to `done`: the caller learns the
    /// outcome of everything sent.
    pub fn each<T, R, Fut>(
        &self,
        items: Vec<T>,
        op: impl Fn(S, T) -> Fut,
        mut done: impl FnMut(usize, Result<R, Error>) -> bool,
    ) where
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
        R: Send + 'static,
    {
        self.rt.block_on(async {
            let mut tasks = JoinSet::new();
            let mut items = items.into_iter().enumerate();
            let mut go_on = true;
            loop {
                while go_on && tasks.len() < self.in_flight {
                    let Some((i, item)) = items.next() else { break };
                    let call = op(self.store.clone(), item);
                    tasks.spawn(async move { (i, call.await) });
                }
                let Some(joined) = tasks.join_next().await else {
                    return;
                };
                match joined {
                    Ok((i, result)) => go_on &= done(i, result),
                    // A task panicked: a bug in the client; let it surface as one.
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
        });
    }
}
