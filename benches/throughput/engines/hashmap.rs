//! The in-memory ceiling: 64 × `parking_lot::RwLock<HashMap<token, record>>` and a user
//! side index, with idle and absolute expiry checked on read: the least an in-process
//! session map can do, to measure the others against.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::engines::user_index::UserIndex;
use crate::engines::{Engine, Worker};
use crate::harness::{IDLE_MS, LIFETIME_MS, new_token, now_ms, payload};

/// Like sessiondb's `touch_interval`: the HashMap ceiling re-arms on read at most this often.
const TOUCH_INTERVAL_MS: u64 = 60_000;

struct MapRecord {
    user: Arc<str>,
    absolute: u64,
    last_seen: AtomicU64,
    data: Arc<[u8]>,
}

impl MapRecord {
    fn live(&self, now: u64) -> bool {
        now < self.absolute && now < self.last_seen.load(Ordering::Relaxed) + IDLE_MS
    }
}

type SessionMap = HashMap<String, MapRecord, ahash::RandomState>;

/// The 64 shards and the user index.
pub struct MapEngine {
    hasher: ahash::RandomState,
    shards: Box<[RwLock<SessionMap>]>,
    users: UserIndex,
}

impl MapEngine {
    pub fn new() -> MapEngine {
        MapEngine {
            hasher: ahash::RandomState::new(),
            shards: (0..64)
                .map(|_| RwLock::new(SessionMap::default()))
                .collect(),
            users: UserIndex::new(),
        }
    }

    fn shard(&self, token: &str) -> &RwLock<SessionMap> {
        &self.shards[(self.hasher.hash_one(token) >> 58) as usize]
    }
}

impl Engine for MapEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(self))
    }
}

impl Worker for &MapEngine {
    fn get(&mut self, token: &str) -> bool {
        let now = now_ms();
        let m = self.shard(token).read();
        match m.get(token) {
            Some(r) if r.live(now) => {
                if now.saturating_sub(r.last_seen.load(Ordering::Relaxed)) >= TOUCH_INTERVAL_MS {
                    r.last_seen.store(now, Ordering::Relaxed);
                }
                black_box((r.user.clone(), r.data.clone()));
                true
            }
            _ => false,
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let now = now_ms();
        let user = self.users.add(user, token.clone());
        let rec = MapRecord {
            user,
            absolute: now + LIFETIME_MS,
            last_seen: AtomicU64::new(now),
            data: Arc::from(&payload().json_a[..]),
        };
        self.shard(&token).write().insert(token.clone(), rec);
        Some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        let now = now_ms();
        let mut m = self.shard(token).write();
        match m.get_mut(token) {
            Some(r) if r.live(now) => {
                r.data = Arc::from(&payload().json_b[..]);
                true
            }
            _ => false,
        }
    }

    fn touch(&mut self, token: &str) -> bool {
        let now = now_ms();
        let m = self.shard(token).read();
        match m.get(token) {
            Some(r) if r.live(now) => {
                r.last_seen.store(now, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let now = now_ms();
        let rec = self.shard(token).write().remove(token)?;
        if !rec.live(now) {
            return None;
        }
        let new = new_token();
        let user = rec.user.clone();
        self.shard(&new).write().insert(new.clone(), rec);
        self.users.replace(&user, token, new.clone());
        Some(new)
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        let Some(rec) = self.shard(token).write().remove(token) else {
            return false;
        };
        self.users.remove(&rec.user, token);
        rec.live(now_ms())
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        let now = now_ms();
        self.users
            .take(user)
            .iter()
            .filter(|t| {
                self.shard(t)
                    .write()
                    .remove(t.as_str())
                    .is_some_and(|r| r.live(now))
            })
            .count()
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        let now = now_ms();
        self.users.with(user, |tokens| {
            tokens
                .iter()
                .filter(|t| {
                    let m = self.shard(t).read();
                    m.get(t.as_str())
                        .is_some_and(|r| r.live(now) && black_box(r.data.len()) > 0)
                })
                .count()
        })
    }
}
