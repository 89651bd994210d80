//! The Redis side of the command line (cargo features `cli` and `redis`): connecting a
//! [`RedisStore`] for an operator — a tokio current-thread runtime owned by the
//! command, no reaper, limits as wide as the format — and running its async operations
//! to completion, one at a time ([`Remote::run`]) or, for import's per-session calls,
//! many in flight at once ([`Remote::each`]), so the commands stay sequential code.

use std::future::Future;

use sessiondb::{Error, Options, RedisOptions, RedisStore};
use tokio::task::JoinSet;

/// How many calls [`Remote::each`] keeps in flight. The connection is multiplexed: the
/// calls travel pipelined, so a migration is not one network round trip per session.
const IN_FLIGHT: usize = 64;

/// A connected Redis store and the runtime its connection lives on.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    store: RedisStore,
}

impl Remote {
    /// Connects to `url` with keys under `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad URL or prefix; [`Error::Unavailable`] if the
    /// server cannot be reached; [`Error::Io`] if no runtime can be started.
    pub fn connect(url: &str, prefix: &str, opts: Options) -> Result<Remote, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "starting the tokio runtime".into(),
                source,
            })?;
        let ropts = RedisOptions::default().prefix(prefix);
        let store = rt.block_on(RedisStore::connect_with(url, opts, ropts))?;
        Ok(Remote { rt, store })
    }

    /// Runs `f(store)` to completion.
    pub fn run<'a, F, T>(&'a self, f: impl FnOnce(&'a RedisStore) -> F) -> T
    where
        F: Future<Output = T> + 'a,
    {
        self.rt.block_on(f(&self.store))
    }

    /// Runs `op(store, item)` for every item, up to [`IN_FLIGHT`] at once, and calls
    /// `done(index, result)` as each finishes (in any order). Once `done` returns
    /// false no further item is started, but every call already started is waited
    /// for and passed to `done`: the caller learns the outcome of everything sent.
    pub fn each<T, R, Fut>(
        &self,
        items: Vec<T>,
        op: impl Fn(RedisStore, T) -> Fut,
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
                while go_on && tasks.len() < IN_FLIGHT {
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
