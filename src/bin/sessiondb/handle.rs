//! [`Handle`]: an open store of either kind — the embedded [`Store`] or, with the
//! `redis` feature, a `RedisStore` through `remote` — and the operations the commands
//! use on both.

use sessiondb::{Error, Session, SessionId, SessionRecord, Store, Timestamp, UserId};

#[cfg(feature = "redis")]
use crate::remote;

/// An open store of either kind, with the operations the commands use on both.
/// Redis calls run to completion one at a time on the command's own runtime.
pub enum Handle {
    Embedded(Store),
    #[cfg(feature = "redis")]
    Redis(remote::Remote),
}

impl Handle {
    pub fn sessions_of(&self, user: &str) -> Result<Vec<Session>, Error> {
        match self {
            Handle::Embedded(s) => s.sessions_of(user),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.sessions_of(user)),
        }
    }

    pub fn get_by_id(&self, id: SessionId) -> Result<Option<Session>, Error> {
        match self {
            Handle::Embedded(s) => Ok(s.get_by_id(id)),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.get_by_id(id)),
        }
    }

    pub fn revoke_user(&self, user: &str) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => s.revoke_user(user),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.revoke_user(user)),
        }
    }

    pub fn revoke_user_before(&self, user: &str, before: Timestamp) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => s.revoke_user_before(user, before),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.revoke_user_before(user, before)),
        }
    }

    pub fn revoke_others_by_id(&self, id: SessionId) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => s.revoke_others_by_id(id),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.revoke_others_by_id(id)),
        }
    }

    pub fn end_by_id(&self, id: SessionId) -> Result<bool, Error> {
        match self {
            Handle::Embedded(s) => s.end_by_id(id),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.end_by_id(id)),
        }
    }

    /// Which of `ids` are live sessions; `tick` after each.
    pub fn live(&self, ids: Vec<SessionId>, tick: impl Fn()) -> Result<Vec<bool>, Error> {
        match self {
            Handle::Embedded(s) => Ok(ids
                .into_iter()
                .map(|id| {
                    tick();
                    s.get_by_id(id).is_some()
                })
                .collect()),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => {
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
        }
    }

    /// Imports each record, calling `done(index, result)` after each; stops starting
    /// new ones once `done` returns false (on Redis, those already sent are still
    /// reported).
    pub fn import_each(
        &self,
        records: Vec<SessionRecord>,
        mut done: impl FnMut(usize, Result<bool, Error>) -> bool,
    ) {
        match self {
            Handle::Embedded(s) => {
                for (i, rec) in records.into_iter().enumerate() {
                    if !done(i, s.import(rec)) {
                        return;
                    }
                }
            }
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.each(
                records,
                |store, rec| async move { store.import(rec).await },
                done,
            ),
        }
    }

    pub fn export(
        &self,
        f: impl FnMut(SessionRecord) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => s.export(f),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.export(f)),
        }
    }

    pub fn not_before_times(&self) -> Result<Vec<(UserId, Timestamp)>, Error> {
        match self {
            Handle::Embedded(s) => Ok(s.not_before_times()),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.not_before_times()),
        }
    }

    pub fn len(&self) -> Result<usize, Error> {
        match self {
            Handle::Embedded(s) => Ok(s.len()),
            #[cfg(feature = "redis")]
            Handle::Redis(r) => r.run(|s| s.len()),
        }
    }

    /// Makes every write so far durable. On Redis each write is acknowledged by the
    /// server as it is made (its durability is the server's persistence setting).
    pub fn flush(&self) -> Result<(), Error> {
        match self {
            Handle::Embedded(s) => s.flush(),
            #[cfg(feature = "redis")]
            Handle::Redis(_) => Ok(()),
        }
    }

    /// Closes the store, durably.
    pub fn close(self) -> Result<(), Error> {
        match self {
            Handle::Embedded(s) => s.close(),
            #[cfg(feature = "redis")]
            Handle::Redis(_) => Ok(()),
        }
    }
}
