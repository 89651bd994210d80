//! PostgreSQL on loopback (`--features postgres`): sessiondb's [`PostgresStore`]
//! ([`SdbPostgres`]) and the raw statements doing the same work through tokio-postgres
//! and a deadpool pool ([`RawPostgres`]: the database's own speed, a lower bound), on one
//! throwaway server the bench starts (the tests' own starter,
//! tests/support/postgres_server.rs: `initdb` into a temporary directory, a free
//! loopback port, `fsync` and `synchronous_commit` on; stopped by pid on drop).
//!
//! Both clients are async: the section (`crate::postgres`) drives them from tokio
//! tasks, so an engine here is a [`PgEngine`] (async methods), not a
//! [`crate::engines::Worker`]. Every call starts from the cookie string.

use std::future::Future;
use std::hint::black_box;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sessiondb::{NewSession, Options, PostgresOptions, PostgresStore, SessionData, Token};
use tokio_postgres::NoTls;

use crate::harness::{IDLE_MS, Op, Payload, new_token, note_err, now_ms, payload};

#[path = "../../../tests/support/postgres_server.rs"]
mod server;

pub use server::{PostgresServer, psql};

/// The rows' names in the table.
pub const SDB_POSTGRES: &str = "sessiondb on PostgreSQL";
pub const RAW_POSTGRES: &str = "raw statements, tokio-postgres";

/// Connections each engine's pool may open: sessiondb's default
/// (`PostgresOptions::pool_size`), given to the other rows too.
pub const POOL: usize = 16;

/// One engine of the section: each method is one session operation from the cookie
/// string, awaited by one of the section's tasks.
pub trait PgEngine: Send + Sync + 'static {
    /// Why the engine has no such operation (then the op is not run, and its method is
    /// never called), or `None`.
    fn lacks(_op: Op) -> Option<&'static str> {
        None
    }
    fn get(&self, token: &str) -> impl Future<Output = bool> + Send;
    fn create(&self, user: &str) -> impl Future<Output = Option<String>> + Send;
    fn update(&self, token: &str) -> impl Future<Output = bool> + Send;
    fn rotate(&self, token: &str) -> impl Future<Output = Option<String>> + Send;
    fn end(&self, token: &str) -> impl Future<Output = bool> + Send;
    fn revoke_user(&self, user: &str) -> impl Future<Output = usize> + Send;
    fn sessions_of(&self, user: &str) -> impl Future<Output = usize> + Send;
}

/// sessiondb's PostgreSQL backend with its defaults: `Options::default()` (touch
/// interval 60 s, rotation grace 5 s, reaper every second) and `PostgresOptions`'
/// (schema `sessiondb`, a pool of 16).
pub struct SdbPostgres {
    store: PostgresStore,
    p: &'static Payload,
}

/// `url` for untimed bulk work (preload, rebalancing): its connections commit without
/// waiting for the WAL flush (`synchronous_commit=off`), so the preload does not take
/// minutes on a slow disk. The timed runs use `url` itself (`synchronous_commit=on`).
pub fn bulk_url(url: &str) -> String {
    format!("{url}?options=-c%20synchronous_commit%3Doff")
}

impl SdbPostgres {
    /// Connects (and creates the schema); must run inside the section's runtime. A
    /// `bulk` store (for [`bulk_url`]) runs no reaper: the timed store's does that.
    pub async fn connect(url: &str, bulk: bool) -> Result<SdbPostgres, String> {
        let opts = match bulk {
            true => Options::default().reaper_interval(None),
            false => Options::default(),
        };
        let store = PostgresStore::connect_with(url, opts, PostgresOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(SdbPostgres {
            store,
            p: payload(),
        })
    }
}

impl PgEngine for SdbPostgres {
    async fn get(&self, token: &str) -> bool {
        let Ok(t) = Token::parse(token) else {
            return false;
        };
        match self.store.get(&t).await {
            Ok(s) => s.map(black_box).is_some(),
            Err(e) => {
                note_err(SDB_POSTGRES, e);
                false
            }
        }
    }

    /// The session and its data in one call (one transaction).
    async fn create(&self, user: &str) -> Option<String> {
        let mut data = SessionData::new();
        data.insert("profile", self.p.profile_a.as_str()).ok()?;
        let (t, _) = self
            .store
            .create(NewSession::for_user(user).data(data))
            .await
            .map_err(|e| note_err(SDB_POSTGRES, e))
            .ok()?;
        Some(t.as_string())
    }

    async fn update(&self, token: &str) -> bool {
        let Ok(t) = Token::parse(token) else {
            return false;
        };
        self.store
            .put(&t, "profile", self.p.profile_b.as_str())
            .await
            .map_err(|e| note_err(SDB_POSTGRES, e))
            .is_ok()
    }

    async fn rotate(&self, token: &str) -> Option<String> {
        let t = Token::parse(token).ok()?;
        let new = self
            .store
            .rotate(&t)
            .await
            .map_err(|e| note_err(SDB_POSTGRES, e))
            .ok()?;
        Some(new.as_string())
    }

    async fn end(&self, token: &str) -> bool {
        let Ok(t) = Token::parse(token) else {
            return false;
        };
        self.store
            .end(&t)
            .await
            .map_err(|e| note_err(SDB_POSTGRES, e))
            .unwrap_or(false)
    }

    async fn revoke_user(&self, user: &str) -> usize {
        self.store
            .revoke_user(user)
            .await
            .map_err(|e| note_err(SDB_POSTGRES, e))
            .unwrap_or(0)
    }

    async fn sessions_of(&self, user: &str) -> usize {
        self.store
            .sessions_of(user)
            .await
            .map_err(|e| note_err(SDB_POSTGRES, e))
            .map_or(0, |v| black_box(v).len())
    }
}

/// The raw row's table: a session is its token's hash (BLAKE3, 16 bytes, as
/// sessiondb keys it), its user, its data (the peers' JSON, 194 bytes) and an idle
/// deadline, with an index on the user.
const RAW_SCHEMA: &str = "
    CREATE SCHEMA IF NOT EXISTS raw;
    DROP TABLE IF EXISTS raw.sessions;
    CREATE TABLE raw.sessions (
        hash     bytea PRIMARY KEY,
        user_id  text NOT NULL,
        data     bytea NOT NULL,
        deadline bigint NOT NULL
    );
    CREATE INDEX sessions_user ON raw.sessions (user_id);";

/// One statement per operation, each its own transaction (autocommit), prepared once
/// per connection.
const GET: &str = "SELECT data FROM raw.sessions WHERE hash = $1 AND deadline > $2";
const CREATE: &str =
    "INSERT INTO raw.sessions (hash, user_id, data, deadline) VALUES ($1, $2, $3, $4)";
const UPDATE: &str = "UPDATE raw.sessions SET data = $2 WHERE hash = $1 AND deadline > $3";
const ROTATE: &str = "UPDATE raw.sessions SET hash = $2 WHERE hash = $1 AND deadline > $3";
const END: &str = "DELETE FROM raw.sessions WHERE hash = $1";
const REVOKE: &str = "DELETE FROM raw.sessions WHERE user_id = $1";
const OF_USER: &str =
    "SELECT hash, data, deadline FROM raw.sessions WHERE user_id = $1 AND deadline > $2";

/// The statements the raw row runs, for the section's legend.
pub const RAW_STATEMENTS: &[(&str, &str)] = &[
    ("get-hit", GET),
    ("create", CREATE),
    ("update", UPDATE),
    ("rotate", ROTATE),
    ("end (in mixed)", END),
    ("revoke-user", REVOKE),
    ("sessions-of-user", OF_USER),
];

/// The raw statements through tokio-postgres and a deadpool pool of [`POOL`]
/// connections (fast recycling, as sessiondb's), each statement prepared once per
/// connection (`prepare_cached`).
pub struct RawPostgres {
    pool: Pool,
    p: &'static Payload,
}

/// The token's 16-byte hash, as the raw table keys sessions.
fn raw_key(token: &str) -> Option<Vec<u8>> {
    Token::parse(token)
        .ok()
        .map(|t| t.hash().as_u128().to_be_bytes().to_vec())
}

impl RawPostgres {
    /// Connects; must run inside the section's runtime.
    pub async fn connect(url: &str) -> Result<RawPostgres, String> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RawPostgres { pool, p: payload() })
    }

    /// (Re)creates the table, empty.
    pub async fn create_table(&self) -> Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        client
            .batch_execute(RAW_SCHEMA)
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `sql` with `params` on a pooled connection: the rows it returned, or the
    /// rows it changed as a count.
    async fn run(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        rows: bool,
    ) -> Option<usize> {
        let out = async {
            let c = self.pool.get().await.map_err(|e| e.to_string())?;
            let st = c.prepare_cached(sql).await.map_err(|e| e.to_string())?;
            if rows {
                let r = c.query(&st, params).await.map_err(|e| e.to_string())?;
                Ok::<usize, String>(black_box(r).len())
            } else {
                let n = c.execute(&st, params).await.map_err(|e| e.to_string())?;
                Ok(n as usize)
            }
        }
        .await;
        out.map_err(|e| note_err(RAW_POSTGRES, e)).ok()
    }
}

impl PgEngine for RawPostgres {
    async fn get(&self, token: &str) -> bool {
        let Some(k) = raw_key(token) else {
            return false;
        };
        self.run(GET, &[&k, &(now_ms() as i64)], true).await == Some(1)
    }

    async fn create(&self, user: &str) -> Option<String> {
        let token = new_token();
        let k = raw_key(&token)?;
        let deadline = (now_ms() + IDLE_MS) as i64;
        let n = self
            .run(CREATE, &[&k, &user, &self.p.json_a, &deadline], false)
            .await?;
        (n == 1).then_some(token)
    }

    async fn update(&self, token: &str) -> bool {
        let Some(k) = raw_key(token) else {
            return false;
        };
        let now = now_ms() as i64;
        self.run(UPDATE, &[&k, &self.p.json_b, &now], false).await == Some(1)
    }

    async fn rotate(&self, token: &str) -> Option<String> {
        let k = raw_key(token)?;
        let fresh = new_token();
        let new = raw_key(&fresh)?;
        let now = now_ms() as i64;
        let n = self.run(ROTATE, &[&k, &new, &now], false).await?;
        (n == 1).then_some(fresh)
    }

    async fn end(&self, token: &str) -> bool {
        let Some(k) = raw_key(token) else {
            return false;
        };
        self.run(END, &[&k], false).await == Some(1)
    }

    async fn revoke_user(&self, user: &str) -> usize {
        self.run(REVOKE, &[&user], false).await.unwrap_or(0)
    }

    async fn sessions_of(&self, user: &str) -> usize {
        let now = now_ms() as i64;
        self.run(OF_USER, &[&user, &now], true).await.unwrap_or(0)
    }
}
