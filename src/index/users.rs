//! The per-user secondary index: user → that user's sessions, so listing and revoking a
//! user's sessions cost O(their count), not O(store).
//!
//! The index is sharded by user; a shard's mutex is "the user's lock". Every change
//! that adds a session to a user (create, bind) happens with that lock held from the
//! moment the session becomes readable until it is in the user's list, and revoke holds
//! the same lock while it ends the list. So a revoke racing creates for the same user
//! can never leave behind a readable session that is missing from the list.
//!
//! Each shard also keeps its users' *not-before* times ([`crate::Store::revoke_user_before`]):
//! a session of the user authenticated before it was revoked, and is never let back in.
//! They live under the same lock, so a revoke-before racing a create, bind or import
//! for the same user is ordered with it like any other change to the user's list.
//!
//! Lock order in the store: user locks (ascending shard) → session shards (ascending)
//! → id shards. Nothing takes a user lock while holding a session or id shard.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use parking_lot::{Mutex, MutexGuard};

use crate::clock::Timestamp;
use crate::model::session::UserId;
use crate::model::token::SessionId;

pub(crate) type UserMap = HashMap<UserId, Vec<SessionId>, ahash::RandomState>;

/// One shard: its users' session lists (what it derefs to) and their not-before times.
#[derive(Default)]
pub(crate) struct UserShard {
    lists: UserMap,
    /// Users with a not-before time, and it. Kept when the user has no sessions left
    /// (it is what refuses a late import) and across a clear.
    pub(crate) not_before: HashMap<UserId, Timestamp, ahash::RandomState>,
}

impl Deref for UserShard {
    type Target = UserMap;
    fn deref(&self) -> &UserMap {
        &self.lists
    }
}

impl DerefMut for UserShard {
    fn deref_mut(&mut self) -> &mut UserMap {
        &mut self.lists
    }
}

impl UserShard {
    /// Raises `user`'s not-before time to `at` (it never moves back).
    pub(crate) fn raise_not_before(&mut self, user: &UserId, at: Timestamp) {
        let t = self.not_before.entry(user.clone()).or_insert(at);
        *t = (*t).max(at);
    }
}

pub(crate) struct UserIndex {
    shards: Box<[Mutex<UserShard>]>,
    hasher: ahash::RandomState,
    mask: usize,
}

/// Held user locks (one or two shards); look users up through it.
pub(crate) struct UserGuards<'a> {
    index: &'a UserIndex,
    first: (usize, MutexGuard<'a, UserShard>),
    second: Option<(usize, MutexGuard<'a, UserShard>)>,
}

impl UserGuards<'_> {
    fn shard(&mut self, user: &str) -> &mut UserShard {
        let i = self.index.shard_of(user);
        match &mut self.second {
            Some((j, g)) if *j == i => g,
            _ => {
                debug_assert_eq!(self.first.0, i, "user lock taken before use");
                &mut self.first.1
            }
        }
    }

    pub(crate) fn map(&mut self, user: &str) -> &mut UserMap {
        &mut self.shard(user).lists
    }

    /// `user`'s not-before time, if one was set.
    pub(crate) fn not_before(&mut self, user: &str) -> Option<Timestamp> {
        self.shard(user).not_before.get(user).copied()
    }

    /// Raises `user`'s not-before time to `at`.
    pub(crate) fn raise_not_before(&mut self, user: &UserId, at: Timestamp) {
        self.shard(user.as_str()).raise_not_before(user, at);
    }

    /// The `UserId` the index already holds for `user` (so sessions of one user share
    /// one allocation), or `user` itself.
    pub(crate) fn canonical(&mut self, user: &UserId) -> UserId {
        self.map(user.as_str())
            .get_key_value(user)
            .map_or_else(|| user.clone(), |(k, _)| k.clone())
    }

    /// The `UserId` the index already holds for `user`, or a new one (`user` must have
    /// passed [`UserId::check`]): a user with sessions costs no allocation.
    pub(crate) fn canonical_str(&mut self, user: &str) -> UserId {
        self.map(user)
            .get_key_value(user)
            .map_or_else(|| UserId::trusted(user), |(k, _)| k.clone())
    }

    /// The sessions listed for `user` (a copy).
    pub(crate) fn sessions(&mut self, user: &str) -> Vec<SessionId> {
        self.map(user).get(user).cloned().unwrap_or_default()
    }

    pub(crate) fn add(&mut self, user: &UserId, id: SessionId) {
        self.map(user.as_str())
            .entry(user.clone())
            .or_default()
            .push(id);
    }

    pub(crate) fn remove(&mut self, user: &UserId, id: SessionId) {
        let map = self.map(user.as_str());
        if let Some(list) = map.get_mut(user) {
            if let Some(pos) = list.iter().position(|s| *s == id) {
                list.swap_remove(pos);
            }
            if list.is_empty() {
                map.remove(user);
            }
        }
    }

    /// Takes `user`'s list out of the index, with the index's own `UserId` for them.
    pub(crate) fn take(&mut self, user: &str) -> Option<(UserId, Vec<SessionId>)> {
        self.map(user).remove_entry(user)
    }
}

impl UserIndex {
    pub(crate) fn new(shards: usize) -> UserIndex {
        UserIndex {
            shards: (0..shards)
                .map(|_| Mutex::new(UserShard::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
            mask: shards - 1,
        }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Adds many users' sessions to shard `i` under one lock (recovery's bulk path;
    /// every user must belong to that shard).
    pub(crate) fn extend_shard(
        &self,
        i: usize,
        users: impl IntoIterator<Item = (UserId, Vec<SessionId>)>,
    ) {
        let mut map = self.shards[i].lock();
        for (user, ids) in users {
            debug_assert_eq!(self.shard_of(user.as_str()), i);
            let list = map.entry(user).or_default();
            if list.is_empty() {
                *list = ids;
            } else {
                list.extend(ids);
            }
        }
    }

    pub(crate) fn shard_of(&self, user: &str) -> usize {
        (self.hasher.hash_one(user) as usize) & self.mask
    }

    /// Takes the lock of `user` (not yet checked and wrapped as a `UserId`).
    pub(crate) fn lock_str(&self, user: &str) -> UserGuards<'_> {
        let i = self.shard_of(user);
        UserGuards {
            index: self,
            first: (i, self.shards[i].lock()),
            second: None,
        }
    }

    /// Takes the lock of `user`, and of `also` if given, in shard order.
    pub(crate) fn lock<'a>(&'a self, user: &UserId, also: Option<&UserId>) -> UserGuards<'a> {
        let i = self.shard_of(user.as_str());
        match also.map(|u| self.shard_of(u.as_str())).filter(|&j| j != i) {
            None => UserGuards {
                index: self,
                first: (i, self.shards[i].lock()),
                second: None,
            },
            Some(j) => {
                let (lo, hi) = (i.min(j), i.max(j));
                let first = (lo, self.shards[lo].lock());
                let second = Some((hi, self.shards[hi].lock()));
                UserGuards {
                    index: self,
                    first,
                    second,
                }
            }
        }
    }

    /// Takes every user lock, in order (for `clear` and consistency checks).
    pub(crate) fn lock_all(&self) -> Vec<MutexGuard<'_, UserShard>> {
        self.shards.iter().map(|s| s.lock()).collect()
    }

    /// Every user's not-before time (for a compaction's base and for export).
    pub(crate) fn not_before_all(&self) -> Vec<(UserId, Timestamp)> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(s.lock().not_before.iter().map(|(u, &t)| (u.clone(), t)));
        }
        out
    }

    /// Raises `user`'s not-before time to `at` (recovery).
    pub(crate) fn raise_not_before(&self, user: &UserId, at: Timestamp) {
        self.shards[self.shard_of(user.as_str())]
            .lock()
            .raise_not_before(user, at);
    }

    /// Number of users with at least one listed session.
    pub(crate) fn user_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
