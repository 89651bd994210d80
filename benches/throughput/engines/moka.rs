//! moka 0.12: a `sync::Cache` with per-entry expiry (the idle timeout re-armed on every
//! read and write, capped by the absolute lifetime) and a user side index, kept in step
//! by the cache's eviction listener.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use crate::engines::user_index::UserIndex;
use crate::engines::{Engine, Worker};
use crate::harness::{IDLE, LIFETIME_MS, new_token, now_ms, payload};

struct MokaRecord {
    user: Arc<str>,
    absolute: u64,
    data: Arc<[u8]>,
}

/// Idle timeout re-armed on every read and write, capped by the absolute deadline.
struct SessionExpiry;

fn moka_ttl(v: &MokaRecord) -> Option<Duration> {
    let left = Duration::from_millis(v.absolute.saturating_sub(now_ms()));
    Some(left.min(IDLE))
}

impl moka::Expiry<String, Arc<MokaRecord>> for SessionExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        v: &Arc<MokaRecord>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        moka_ttl(v)
    }

    fn expire_after_read(
        &self,
        _: &String,
        v: &Arc<MokaRecord>,
        _: std::time::Instant,
        _: Option<Duration>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        moka_ttl(v)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<MokaRecord>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        moka_ttl(v)
    }
}

/// The cache and the user index.
pub struct MokaEngine {
    cache: moka::sync::Cache<String, Arc<MokaRecord>>,
    users: Arc<UserIndex>,
}

impl MokaEngine {
    pub fn new() -> MokaEngine {
        let users = Arc::new(UserIndex::new());
        let idx = users.clone();
        let cache = moka::sync::Cache::builder()
            .expire_after(SessionExpiry)
            .eviction_listener(move |k: Arc<String>, v: Arc<MokaRecord>, cause| {
                use moka::notification::RemovalCause;
                if matches!(cause, RemovalCause::Expired | RemovalCause::Size) {
                    idx.remove(&v.user, &k);
                }
            })
            .build();
        MokaEngine { cache, users }
    }

    /// Runs the cache's pending maintenance, so its memory is read settled.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

impl Engine for MokaEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(self))
    }
}

impl Worker for &MokaEngine {
    fn get(&mut self, token: &str) -> bool {
        self.cache
            .get(token)
            .map(|r| black_box((r.user.clone(), r.data.clone())))
            .is_some()
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        let user = self.users.add(user, token.clone());
        let rec = MokaRecord {
            user,
            absolute: now_ms() + LIFETIME_MS,
            data: Arc::from(&payload().json_a[..]),
        };
        self.cache.insert(token.clone(), Arc::new(rec));
        Some(token)
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        let Some(old) = self.cache.get(token) else {
            return false;
        };
        let rec = MokaRecord {
            user: old.user.clone(),
            absolute: old.absolute,
            data: Arc::from(&payload().json_b[..]),
        };
        self.cache.insert(token.to_owned(), Arc::new(rec));
        true
    }

    /// A read re-arms the idle timeout (`expire_after_read`), so a touch is a read.
    fn touch(&mut self, token: &str) -> bool {
        self.cache.get(token).is_some()
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let rec = self.cache.get(token)?;
        let new = new_token();
        self.cache.insert(new.clone(), rec.clone());
        self.cache.invalidate(token);
        self.users.replace(&rec.user, token, new.clone());
        Some(new)
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        match self.cache.remove(token) {
            Some(rec) => {
                self.users.remove(&rec.user, token);
                true
            }
            None => false,
        }
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.users
            .take(user)
            .iter()
            .filter(|t| self.cache.remove(t.as_str()).is_some())
            .count()
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        self.users.with(user, |tokens| {
            tokens
                .iter()
                .filter(|t| self.cache.get(t.as_str()).map(black_box).is_some())
                .count()
        })
    }
}
