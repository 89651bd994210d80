//! sessiondb through its public API only: the embedded [`Store`] under each durability
//! ([`SdbEngine`]), and, with `--features redis`, the same API on a Redis server
//! ([`SdbRedisEngine`]). Every call parses the cookie string (`Token::parse`) first, as
//! a server's would.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sessiondb::{Device, Durability, NewSession, Options, SessionData, SignIn, Store, Token};

use crate::engines::{Engine, Worker};
use crate::harness::{Payload, note_err, payload};
use crate::machine::compactor_seconds;

/// The names of sessiondb's rows in the tables (a peer's ratio column names the one it
/// compares with).
pub const SDB_MEMORY: &str = "sessiondb Memory";
pub const SDB_MEMORY_DETAILS: &str = "sessiondb Memory, signed in with a device";
pub const SDB_BUFFERED: &str = "sessiondb Buffered";
pub const SDB_SYNC: &str = "sessiondb Sync";
pub const SDB_SYNC_ASYNC: &str = "sessiondb Sync, async tasks";
pub const SDB_REDIS: &str = "sessiondb on Redis";

/// The embedded store.
pub struct SdbEngine {
    pub store: Store,
    /// Whether each create says how it signed in and from what device (a browser's
    /// user agent and address): what a devices page costs per session.
    pub details: bool,
}

/// A browser's `User-Agent`, as the sessions with details record it.
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

impl SdbEngine {
    pub fn memory() -> SdbEngine {
        SdbEngine {
            store: Store::in_memory_with(Options::default()).expect("in-memory store"),
            details: false,
        }
    }

    /// In memory, every session created with a sign-in and a device.
    pub fn memory_with_details() -> SdbEngine {
        SdbEngine {
            details: true,
            ..SdbEngine::memory()
        }
    }

    pub fn open(dir: &Path, d: Durability) -> SdbEngine {
        SdbEngine {
            store: Store::open_with(dir, Options::default().durability(d)).expect("open store"),
            details: false,
        }
    }
}

impl Engine for SdbEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(SdbWorker {
            store: &self.store,
            p: payload(),
            details: self.details,
        }))
    }

    fn sync_stats(&self) -> Option<(u64, u64)> {
        let s = self.store.stats();
        Some((s.log_syncs, s.log_records))
    }

    /// Flushes the log, then waits until the compactor threads' CPU time stands still
    /// for 50 ms (at most 30 s): the compaction the writes set off has ended.
    fn settle(&self) {
        if let Err(e) = self.store.flush() {
            note_err("sessiondb flush", e);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = compactor_seconds();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = compactor_seconds();
            if now == last {
                break;
            }
            last = now;
        }
    }
}

struct SdbWorker<'a> {
    store: &'a Store,
    p: &'static Payload,
    details: bool,
}

impl Worker for SdbWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        Token::parse(token)
            .ok()
            .and_then(|t| self.store.get(&t))
            .map(black_box)
            .is_some()
    }

    /// The session and its data in one step (one log record, one fsync under `Sync`).
    fn create(&mut self, user: &str) -> Option<String> {
        let mut data = SessionData::new();
        data.insert("profile", self.p.profile_a.as_str())
            .map_err(|e| note_err("sessiondb data", e))
            .ok()?;
        let mut new = NewSession::for_user(user).data(data);
        if self.details {
            new = new.signed_in(SignIn::with("password")).device(
                Device::new()
                    .user_agent(USER_AGENT)
                    .address(IpAddr::from([203, 0, 113, 77])),
            );
        }
        let (t, _) = self
            .store
            .create(new)
            .map_err(|e| note_err("sessiondb create", e))
            .ok()?;
        Some(t.as_string())
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| {
            self.store
                .put(&t, "profile", self.p.profile_b.as_str())
                .is_ok()
        })
    }

    fn touch(&mut self, token: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.store.touch(&t).is_ok())
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let t = Token::parse(token).ok()?;
        self.store.rotate(&t).ok().map(|t| t.as_string())
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.store.end(&t).unwrap_or(false))
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.store.revoke_user(user).unwrap_or(0)
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        self.store
            .sessions_of(user)
            .map_or(0, |v| black_box(v).len())
    }
}

/// The Redis backend, driven from the harness's threads through a tokio runtime of its
/// own (each call is `block_on`, as a sync caller would).
#[cfg(feature = "redis")]
pub struct SdbRedisEngine {
    rt: tokio::runtime::Runtime,
    store: sessiondb::RedisStore,
}

#[cfg(feature = "redis")]
impl SdbRedisEngine {
    pub fn connect(url: &str) -> Result<SdbRedisEngine, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let store = rt
            .block_on(sessiondb::RedisStore::connect_with(
                url,
                Options::default(),
                sessiondb::RedisOptions::default().prefix("sdb"),
            ))
            .map_err(|e| e.to_string())?;
        Ok(SdbRedisEngine { rt, store })
    }
}

#[cfg(feature = "redis")]
impl Engine for SdbRedisEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(SdbRedisWorker {
            e: self,
            p: payload(),
        }))
    }
}

#[cfg(feature = "redis")]
struct SdbRedisWorker<'a> {
    e: &'a SdbRedisEngine,
    p: &'static Payload,
}

#[cfg(feature = "redis")]
impl Worker for SdbRedisWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        let Ok(t) = Token::parse(token) else {
            return false;
        };
        match self.e.rt.block_on(self.e.store.get(&t)) {
            Ok(s) => s.map(black_box).is_some(),
            Err(e) => {
                note_err("sessiondb on Redis get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let mut data = SessionData::new();
        data.insert("profile", self.p.profile_a.as_str()).ok()?;
        let (t, _) = self
            .e
            .rt
            .block_on(self.e.store.create(NewSession::for_user(user).data(data)))
            .map_err(|e| note_err("sessiondb on Redis create", e))
            .ok()?;
        Some(t.as_string())
    }

    fn update(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| {
            self.e
                .rt
                .block_on(self.e.store.put(&t, "profile", self.p.profile_b.as_str()))
                .is_ok()
        })
    }

    fn touch(&mut self, token: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.e.rt.block_on(self.e.store.touch(&t)).is_ok())
    }

    fn rotate(&mut self, token: &str, _user: &str) -> Option<String> {
        let t = Token::parse(token).ok()?;
        let new = self.e.rt.block_on(self.e.store.rotate(&t)).ok()?;
        Some(new.as_string())
    }

    fn end(&mut self, token: &str, _user: &str) -> bool {
        Token::parse(token).is_ok_and(|t| self.e.rt.block_on(self.e.store.end(&t)).unwrap_or(false))
    }

    fn revoke_user(&mut self, user: &str) -> usize {
        self.e
            .rt
            .block_on(self.e.store.revoke_user(user))
            .unwrap_or(0)
    }

    fn sessions_of(&mut self, user: &str) -> usize {
        self.e
            .rt
            .block_on(self.e.store.sessions_of(user))
            .map_or(0, |v| black_box(v).len())
    }
}
