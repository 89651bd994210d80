//! The Redis side of the command line (cargo features `cli` and `redis`): connecting a
//! [`RedisStore`] for an operator — a tokio current-thread runtime owned by the
//! command, no reaper, limits as wide as the format — and running its async operations
//! to completion one at a time, so the commands stay plain sequential code.

use std::future::Future;

use sessiondb::{Error, Options, RedisOptions, RedisStore};

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
}
