//! A per-user side index (user → that user's tokens, in 64 shards), for the in-memory
//! peers that have none: the HashMap ceiling and moka keep one next to their session
//! map (not atomically with it) for revoke-user and sessions-of-user.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

type UserMap = HashMap<Arc<str>, (Arc<str>, Vec<String>), ahash::RandomState>;

/// user → that user's tokens, in 64 shards. Kept next to the session map by the
/// HashMap ceiling and moka (not atomically with it).
pub struct UserIndex {
    hasher: ahash::RandomState,
    shards: Box<[RwLock<UserMap>]>,
}

impl UserIndex {
    pub fn new() -> UserIndex {
        UserIndex {
            hasher: ahash::RandomState::new(),
            shards: (0..64).map(|_| RwLock::new(UserMap::default())).collect(),
        }
    }

    fn shard(&self, user: &str) -> &RwLock<UserMap> {
        &self.shards[(self.hasher.hash_one(user) >> 58) as usize]
    }

    /// Adds `token` to `user`'s list; returns the shared user id.
    pub fn add(&self, user: &str, token: String) -> Arc<str> {
        let mut m = self.shard(user).write();
        if let Some((name, tokens)) = m.get_mut(user) {
            tokens.push(token);
            return name.clone();
        }
        let name: Arc<str> = Arc::from(user);
        m.insert(name.clone(), (name.clone(), vec![token]));
        name
    }

    pub fn remove(&self, user: &str, token: &str) {
        let mut m = self.shard(user).write();
        if let Some((_, tokens)) = m.get_mut(user) {
            if let Some(p) = tokens.iter().position(|t| t == token) {
                tokens.swap_remove(p);
            }
            if tokens.is_empty() {
                m.remove(user);
            }
        }
    }

    pub fn replace(&self, user: &str, old: &str, new: String) {
        let mut m = self.shard(user).write();
        if let Some((_, tokens)) = m.get_mut(user) {
            match tokens.iter_mut().find(|t| *t == old) {
                Some(t) => *t = new,
                None => tokens.push(new),
            }
        }
    }

    pub fn take(&self, user: &str) -> Vec<String> {
        self.shard(user)
            .write()
            .remove(user)
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    pub fn with<R>(&self, user: &str, f: impl FnOnce(&[String]) -> R) -> R {
        let m = self.shard(user).read();
        f(m.get(user).map_or(&[][..], |(_, t)| t.as_slice()))
    }
}
