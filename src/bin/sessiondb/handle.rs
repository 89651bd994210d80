//! [`Handle`]: an open store of any kind — the embedded [`Store`] or, with the `redis`
//! or `postgres` feature, a `RedisStore` or `PostgresStore` through `remote` — and the
//! operations the commands use on all of them.

use sessiondb::{Error, Session, SessionId, SessionRecord, Store, Timestamp, UserId};

#[cfg(feature = "postgres")]
use sessiondb::PostgresStore;
#[cfg(feature = "redis")]
use sessiondb::RedisStore;

#[cfg(any(feature = "redis", feature = "postgres"))]
use crate::remote::Remote;

/// An open store of any kind, with the operations the commands use on all of them.
/// Calls to a server run to completion one at a time on the command's own runtime.
pub enum Handle {
    Embedded(Store),
    #[cfg(feature = "redis")]
    Redis(Remote<RedisStore>),
    #[cfg(feature = "postgres")]
    Postgres(Remote<PostgresStore>),
}

/// `embedded` with the embedded store as `$s`; `remote` with the [`Remote`] of
/// whichever server as `$r` (the same code for Redis and PostgreSQL, whose stores
/// have the same async methods).
macro_rules! on {
    ($self:ident, |$s:ident| $embedded:expr, |$r:ident| $remote:expr) => {
        match $self {
            Handle::Embedded($s) => $embedded,
            #[cfg(feature = "redis")]
            Handle::Redis($r) => $remote,
            #[cfg(feature = "postgres")]
            Handle::Postgres($r) => $remote,
        }
    };
}

impl Handle {
    pub fn sessions_of(&self, user: &str) -> Result<Vec<Session>, Error> {
        on!(self, |s| s.sessions_of(user), |r| r
            .run(|s| s.sessions_of(user)))
    }

    pub fn get_by_id(&self, id: SessionId) -> Result<Option<Session>, Error> {
        on!(self, |s| Ok(s.get_by_id(id)), |r| r
            .run(|s| s.get_by_id(id)))
    }

    pub fn revoke_user(&self, user: &str) -> Result<usize, Error> {
        on!(self, |s| s.revoke_user(user), |r| r
            .run(|s| s.revoke_user(user)))
    }

    pub fn revoke_user_before(&self, user: &str, before: Timestamp) -> Result<usize, Error> {
        on!(self, |s| s.revoke_user_before(user, before), |r| r
            .run(|s| s.revoke_user_before(user, before)))
    }

    pub fn revoke_others_by_id(&self, id: SessionId) -> Result<usize, Error> {
        on!(self, |s| s.revoke_others_by_id(id), |r| r
            .run(|s| s.revoke_others_by_id(id)))
    }

    pub fn end_by_id(&self, id: SessionId) -> Result<bool, Error> {
        on!(self, |s| s.end_by_id(id), |r| r.run(|s| s.end_by_id(id)))
    }

    /// Which of `ids` are live sessions; `tick` after each.
    pub fn live(&self, ids: Vec<SessionId>, tick: impl Fn()) -> Result<Vec<bool>, Error> {
        on!(
            self,
            |s| Ok(ids
                .into_iter()
                .map(|id| {
                    tick();
                    s.get_by_id(id).is_some()
                })
                .collect()),
            |r| {
                let mut live = vec![false; ids.len()];
                let mut failed = None;
                r.each(
                    ids,
                    |store, id| async move { store.get_by_id(id).await },
                    |i, found| {
                        tick();
                        match found {
                            Ok(found) => live[i] = found.is_some(),
                            Err(e) => {
                                failed.get_or_insert(e);
                            }
                        }
                        failed.is_none()
                    },
                );
                failed.map_or(Ok(live), Err)
            }
        )
    }

    /// Imports each record, calling `done(index, result)` after each; stops starting
    /// new ones once `done` returns false (on a server, those already sent are still
    /// reported).
    pub fn import_each(
        &self,
        records: Vec<SessionRecord>,
        mut done: impl FnMut(usize, Result<bool, Error>) -> bool,
    ) {
        on!(
            self,
            |s| {
                for (i, rec) in records.into_iter().enumerate() {
                    if !done(i, s.import(rec)) {
                        return;
                    }
                }
            },
            |r| r.each(
                records,
                |store, rec| async move { store.import(rec).await },
                done,
            )
        )
    }

    pub fn export(
        &self,
        f: impl FnMut(SessionRecord) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        on!(self, |s| s.export(f), |r| r.run(|s| s.export(f)))
    }

    pub fn not_before_times(&self) -> Result<Vec<(UserId, Timestamp)>, Error> {
        on!(self, |s| Ok(s.not_before_times()), |r| r
            .run(|s| s.not_before_times()))
    }

    pub fn len(&self) -> Result<usize, Error> {
        on!(self, |s| Ok(s.len()), |r| r.run(|s| s.len()))
    }

    /// Makes every write so far durable. On a server each write is acknowledged as it
    /// is made (its durability is the server's: appendfsync on Redis,
    /// synchronous_commit on PostgreSQL).
    pub fn flush(&self) -> Result<(), Error> {
        on!(self, |s| s.flush(), |_r| Ok(()))
    }

    /// Closes the store, durably.
    pub fn close(self) -> Result<(), Error> {
        match self {
            Handle::Embedded(s) => s.close(),
            #[cfg(feature = "redis")]
            Handle::Redis(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Handle::Postgres(_) => Ok(()),
        }
    }
}
