//! Redis on loopback: `SET token data EX ttl` and a SET of tokens per user, one
//! connection per thread. The server is the tests' own `redis-server` child
//! (tests/support/redis_server.rs): a free loopback port, a temporary directory,
//! killed by pid when the engine is dropped.

use std::hint::black_box;

use crate::engines::{Engine, Entry, Worker};
use crate::harness::{Ctx, IDLE, new_token, note_err, payload};

#[path = "../../../tests/support/redis_server.rs"]
mod server;

pub use server::{AOF_ALWAYS, NO_PERSISTENCE};

/// A redis-server of its own and a client of it (TCP_NODELAY on every connection).
pub struct RedisEngine {
    server: server::RedisServer,
    client: redis::Client,
}

fn redis_value(user: &str, profile: &str) -> String {
    format!(r#"{{"user":"{user}","profile":"{profile}"}}"#)
}

fn redis_user_key(user: &str) -> String {
    format!("user:{user}")
}

impl RedisEngine {
    /// Starts a redis-server with `persistence` ([`NO_PERSISTENCE`], [`AOF_ALWAYS`]) and
    /// connects to it, or says why it could not (not installed, did not start).
    pub fn start(persistence: &[&str]) -> Result<RedisEngine, String> {
        use redis::IntoConnectionInfo;
        let server = server::RedisServer::try_start(persistence)?;
        let info = server
            .url()
            .into_connection_info()
            .map_err(|e| e.to_string())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        Ok(RedisEngine { server, client })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.server.pid().unwrap_or(0)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The server's resident memory (`INFO memory` used_memory_rss), in bytes.
    pub fn server_rss(&self) -> Option<u64> {
        let mut c = self.client.get_connection().ok()?;
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory_rss:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Engine for RedisEngine {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        let con = self.client.get_connection().map_err(|e| e.to_string())?;
        Ok(Box::new(RedisWorker {
            con: Con::Sync(con),
        }))
    }

    /// Pipelines of 1,000 sessions, one connection per bulk thread.
    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        if users.is_empty() {
            return Vec::new();
        }
        let threads = ctx.parallelism.max(2);
        let chunk = users.len().div_ceil(threads);
        let p = payload();
        std::thread::scope(|s| {
            let handles: Vec<_> = users
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut con = self.client.get_connection().expect("redis connect");
                        let mut out = Vec::with_capacity(part.len());
                        for batch in part.chunks(1000) {
                            let mut pipe = redis::pipe();
                            for &u in batch {
                                let user = &ctx.users[u as usize];
                                let token = new_token();
                                pipe.cmd("SET")
                                    .arg(&token)
                                    .arg(redis_value(user, &p.profile_a))
                                    .arg("EX")
                                    .arg(IDLE.as_secs())
                                    .ignore()
                                    .cmd("SADD")
                                    .arg(redis_user_key(user))
                                    .arg(&token)
                                    .ignore();
                                out.push(Entry { token, user: u });
                            }
                            pipe.query::<()>(&mut con).expect("redis preload");
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("redis bulk thread"))
                .collect()
        })
    }

    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        let mut con = self.client.get_connection().expect("redis connect");
        for batch in entries.chunks(1000) {
            let mut pipe = redis::pipe();
            for e in batch {
                pipe.cmd("DEL")
                    .arg(&e.token)
                    .ignore()
                    .cmd("SREM")
                    .arg(redis_user_key(&ctx.users[e.user as usize]))
                    .arg(&e.token)
                    .ignore();
            }
            pipe.query::<()>(&mut con).expect("redis bulk end");
        }
    }
}

/// The raw commands of [`RedisEngine`] through redis-rs's async `ConnectionManager`, one
/// shared by every thread, each call `block_on` a 2-worker tokio runtime: exactly how
/// the "sessiondb on Redis" row reaches the same server, so the two rows differ only by
/// what sessiondb does (its script or its reads) and not by the client's plumbing. The
/// connection is set up as sessiondb sets up its own: `TCP_NODELAY` (redis-rs leaves
/// Nagle's algorithm on, which at 50 clients on one connection coalesces requests into
/// fewer segments: 1.6–1.8× the GETs/s on the 2-core VM), 10 s timeouts, 3 retries.
#[cfg(feature = "redis")]
pub struct RedisAsyncEngine<'a> {
    raw: &'a RedisEngine,
    rt: tokio::runtime::Runtime,
    conn: redis::aio::ConnectionManager,
}

#[cfg(feature = "redis")]
impl<'a> RedisAsyncEngine<'a> {
    pub fn connect(raw: &'a RedisEngine) -> Result<RedisAsyncEngine<'a>, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("redis://127.0.0.1:{}/", raw.port());
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
            .map_err(|e| e.to_string())?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let timeout = Some(std::time::Duration::from_secs(10));
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(timeout)
            .set_number_of_retries(3);
        let conn = rt
            .block_on(redis::aio::ConnectionManager::new_with_config(
                client, config,
            ))
            .map_err(|e| e.to_string())?;
        Ok(RedisAsyncEngine { raw, rt, conn })
    }
}

#[cfg(feature = "redis")]
impl Engine for RedisAsyncEngine<'_> {
    fn worker(&self) -> Result<Box<dyn Worker + '_>, String> {
        Ok(Box::new(RedisWorker {
            con: Con::Async(&self.rt, self.conn.clone()),
        }))
    }

    fn bulk_create(&self, ctx: &Ctx, users: &[u32]) -> Vec<Entry> {
        self.raw.bulk_create(ctx, users)
    }

    fn bulk_end(&self, ctx: &Ctx, entries: &[Entry]) {
        self.raw.bulk_end(ctx, entries);
    }
}

struct RedisWorker<'a> {
    con: Con<'a>,
}

/// How a worker reaches the server: its own blocking connection, or (the "Redis, async
/// client" row) the shared async connection, each call `block_on` its runtime.
enum Con<'a> {
    Sync(redis::Connection),
    #[cfg(feature = "redis")]
    Async(&'a tokio::runtime::Runtime, redis::aio::ConnectionManager),
    /// Without the feature, no async variant: this one cannot be built.
    #[cfg(not(feature = "redis"))]
    #[allow(dead_code)]
    Never(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

impl Con<'_> {
    fn cmd<T: redis::FromRedisValue>(&mut self, c: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Con::Sync(con) => c.query(con),
            #[cfg(feature = "redis")]
            Con::Async(rt, con) => rt.block_on(c.query_async(con)),
            #[cfg(not(feature = "redis"))]
            Con::Never(never, _) => match *never {},
        }
    }

    fn pipe<T: redis::FromRedisValue>(&mut self, p: &redis::Pipeline) -> redis::RedisResult<T> {
        match self {
            Con::Sync(con) => p.query(con),
            #[cfg(feature = "redis")]
            Con::Async(rt, con) => rt.block_on(p.query_async(con)),
            #[cfg(not(feature = "redis"))]
            Con::Never(never, _) => match *never {},
        }
    }
}

impl Worker for RedisWorker<'_> {
    fn get(&mut self, token: &str) -> bool {
        match self
            .con
            .cmd::<Option<Vec<u8>>>(redis::cmd("GET").arg(token))
        {
            Ok(v) => v.map(black_box).is_some(),
            Err(e) => {
                note_err("redis get", e);
                false
            }
        }
    }

    fn create(&mut self, user: &str) -> Option<String> {
        let token = new_token();
        self.con
            .pipe::<()>(
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(&token)
                    .arg(redis_value(user, &payload().profile_a))
                    .arg("EX")
                    .arg(IDLE.as_secs())
                    .ignore()
                    .cmd("SADD")
                    .arg(redis_user_key(user))
                    .arg(&token)
                    .ignore(),
            )
            .map_err(|e| note_err("redis create", e))
            .ok()?;
        Some(token)
    }

    fn update(&mut self, token: &str, user: &str) -> bool {
        self.con
            .cmd::<Option<String>>(
                redis::cmd("SET")
                    .arg(token)
                    .arg(redis_value(user, &payload().profile_b))
                    .arg("XX")
                    .arg("KEEPTTL"),
            )
            .is_ok_and(|r| r.is_some())
    }

    fn touch(&mut self, token: &str) -> bool {
        self.con
            .cmd::<i64>(redis::cmd("EXPIRE").arg(token).arg(IDLE.as_secs()))
            .is_ok_and(|n| n == 1)
    }

    /// RENAME keeps value and TTL; the user's set follows in the same MULTI.
    fn rotate(&mut self, token: &str, user: &str) -> Option<String> {
        let new = new_token();
        let key = redis_user_key(user);
        self.con
            .pipe::<()>(
                redis::pipe()
                    .atomic()
                    .cmd("RENAME")
                    .arg(token)
                    .arg(&new)
                    .ignore()
                    .cmd("SADD")
                    .arg(&key)
                    .arg(&new)
                    .ignore()
                    .cmd("SREM")
                    .arg(&key)
                    .arg(token)
                    .ignore(),
            )
            .ok()?;
        Some(new)
    }

    fn end(&mut self, token: &str, user: &str) -> bool {
        self.con
            .pipe::<(i64,)>(
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(token)
                    .cmd("SREM")
                    .arg(redis_user_key(user))
                    .arg(token)
                    .ignore(),
            )
            .is_ok_and(|(n,)| n == 1)
    }

    /// SMEMBERS, then DEL of the tokens and the set: two round trips, not atomic.
    fn revoke_user(&mut self, user: &str) -> usize {
        let key = redis_user_key(user);
        let Ok(tokens) = self
            .con
            .cmd::<Vec<String>>(redis::cmd("SMEMBERS").arg(&key))
        else {
            return 0;
        };
        if tokens.is_empty() {
            return 0;
        }
        self.con
            .pipe::<(usize,)>(
                redis::pipe()
                    .cmd("DEL")
                    .arg(&tokens)
                    .cmd("DEL")
                    .arg(&key)
                    .ignore(),
            )
            .map_or(0, |(n,)| n)
    }

    /// SMEMBERS, then MGET: two round trips.
    fn sessions_of(&mut self, user: &str) -> usize {
        let Ok(tokens) = self
            .con
            .cmd::<Vec<String>>(redis::cmd("SMEMBERS").arg(redis_user_key(user)))
        else {
            return 0;
        };
        if tokens.is_empty() {
            return 0;
        }
        self.con
            .cmd::<Vec<Option<Vec<u8>>>>(redis::cmd("MGET").arg(&tokens))
            .map_or(0, |v| v.iter().filter(|x| x.is_some()).count())
    }
}
