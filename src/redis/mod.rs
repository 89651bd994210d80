//! [`RedisStore`]: sessiondb's sessions kept in Redis or Valkey (cargo feature `redis`),
//! for an app that runs on several nodes behind a load balancer.
//!
//! This module owns the key layout in Redis, the one Lua script every change runs as
//! (`sessions.lua`, beside this file), the reads that need no script (`read.rs`), the
//! decoding of stored sessions (`packed.rs`) and of replies into the crate's types, the reaper task and the event
//! subscriptions.
//!
//! # How it keeps the guarantees of the embedded store
//!
//! - **One step per operation.** Every change is one call of the script, and Redis
//!   runs a script alone: the session's key, its id pointer, its user-index entry, the
//!   expiry registry and the event change together or not at all. Reads on one server
//!   skip the script when they can (`read.rs`: one `GET`, the deadline checked against
//!   the latest the server's clock can read, from a `TIME` read about once a second).
//!   `revoke_user` and a `create` for the same user are two scripts, so one runs
//!   wholly before the other; a write to an ended session finds no session and stores
//!   nothing (a late save never resurrects one); `login` rotates and binds in one step.
//! - **The per-user index cannot leak or drift.** A user's index is a sorted set of
//!   session ids scored by deadline. Every change that moves a deadline or a user
//!   updates it in the same script; reading it (`sessions_of`, the per-user cap)
//!   prunes entries whose deadline passed and, as a repair rule, any entry whose
//!   session is gone or belongs to someone else; and the set's key expires with the
//!   latest of its sessions. (Spring Session's Redis store kept its indexes with
//!   separate commands from the client, which is how its index keys leaked and drifted.)
//! - **Expiry.** Each session's keys carry a Redis expiry at its deadline plus
//!   [`RedisOptions::retention`], and every read checks the deadline itself, so an
//!   expired session is invisible at once. Within the retention the reaper (a task on
//!   every [`RedisStore`], any node's will do) removes it and reports
//!   [`crate::EndReason::Expired`] with its user; a session no node reaped in time is
//!   dropped by Redis and reported expired later, without its user.
//! - **Tokens are hashed** before they reach Redis, exactly as on disk: keys and the
//!   rotation alias use the token's BLAKE3 hash ([`Token::hash`]); Redis never sees a
//!   cookie value.
//! - **Times** are the Redis server's clock (the script and the reads use `TIME`), so
//!   every node agrees on deadlines; [`crate::Options::clock`] does not apply.
//! - **A Redis Cluster** ([`RedisStore::connect_cluster`]) runs a script only over keys
//!   of one hash slot, and the script names keys from what it reads (a session's user),
//!   so the prefix must be a hash tag: all of a store's keys share one slot.
//!
//! # Events across nodes
//!
//! The script appends every event to a Redis stream (`<prefix>:e`, capped at about
//! [`RedisOptions::event_stream_len`] entries) in the same step as the change, and
//! [`RedisStore::subscribe`] reads that stream from the moment it is called. Delivery:
//! every event committed after the subscription, in commit order, to every subscriber
//! on every node, surviving reconnects (the reader resumes after the last entry it
//! read) — unless the subscriber falls more than the stream's cap behind, or its
//! channel (capacity [`crate::Options::event_capacity`]) is full, in which case events
//! are dropped and counted ([`RedisStore::events_dropped`]). Keyspace notifications
//! were the alternative: fire-and-forget pub/sub (an event published while a node is
//! reconnecting is lost), with a key name but no session content (an expiry cannot say
//! whose session it was), and off by default on managed Redis.

mod events;
mod packed;
mod read;
mod reply;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use crate::clock::{Timestamp, duration_ms};
use crate::error::{Error, Result};
use crate::model::data::SessionData;
use crate::model::device::Device;
use crate::model::event::Event;
use crate::model::portable::SessionRecord;
use crate::model::session::{
    NewSession, Session, UserId, check_data, check_entry, check_label, check_new,
};
use crate::model::signin::{Criterion, Factor, SignIn};
use crate::model::token::{self, SessionId, Token, TokenHash};
use crate::options::{BudgetPolicy, LimitPolicy, Options};
use crate::util::entropy::EntropyPool;
use events::read_events;
use read::Direct;
use reply::Reply;

const SCRIPT: &str = include_str!("sessions.lua");

/// The read-only script of [`RedisStore::sessions_of`] (`read.rs`).
const READ_SCRIPT: &str = include_str!("read.lua");

/// The latest deadline kept in Redis: 2^52 ms (year 144,683), exact in Lua's doubles;
/// read back as [`Timestamp::MAX`], no deadline.
const NEVER: u64 = 1 << 52;

/// The longest lifetime a session may be given: deadlines are milliseconds in Lua's
/// doubles, exact to 2^53.
const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The longest [`RedisOptions::retention`]: a year of ended sessions' keys is more than
/// any reaper needs, and a deadline plus a far longer one (`Duration::MAX`, say) is past
/// what PEXPIREAT takes, which failed every write.
const MAX_RETENTION: Duration = Duration::from_secs(365 * 86_400);

/// The largest [`RedisOptions::event_stream_len`]: a billion events is ~100 GB of Redis
/// memory, and `usize::MAX` failed every write's XADD (MAXLEN is a signed 64-bit number).
const MAX_EVENT_STREAM_LEN: usize = 1_000_000_000;

/// Settings of the Redis backend itself (the session defaults and limits are the
/// crate's [`Options`]).
#[derive(Clone, Debug)]
pub struct RedisOptions {
    prefix: String,
    retention: Duration,
    event_stream_len: usize,
    response_timeout: Duration,
    batch: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "sessiondb".into(),
            retention: Duration::from_secs(600),
            event_stream_len: 100_000,
            response_timeout: Duration::from_secs(10),
            batch: 1_000,
        }
    }
}

impl RedisOptions {
    /// The prefix of every key this store writes (`<prefix>:s:…`, `<prefix>:u:…`).
    /// Stores with different prefixes share a server without seeing each other.
    /// Default `sessiondb`. At most 128 bytes, no whitespace or control characters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a session's keys stay in Redis after its deadline, so that a reaper
    /// can report its expiry with its user. An expired session is never readable
    /// during this time. From 1 second to 365 days (the keys of ended sessions take
    /// memory that long). Default 10 minutes.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// About how many events the stream keeps for subscribers that fall behind or
    /// reconnect (Redis trims it approximately). From 100 to 1,000,000,000 (about
    /// 100 GB of events in Redis). Default 100,000.
    pub fn event_stream_len(mut self, n: usize) -> Self {
        self.event_stream_len = n;
        self
    }

    /// How long a call waits for Redis before failing with [`Error::Unavailable`].
    /// From 1 ms to `Duration::MAX` (which waits as long as the connection lives).
    /// Default 10 seconds.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: &str| Error::InvalidOption {
            name: "RedisOptions::prefix",
            reason: reason.into(),
        };
        if self.prefix.is_empty() || self.prefix.len() > 128 {
            return Err(bad("must be 1 to 128 bytes long"));
        }
        if self
            .prefix
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(bad("must not contain whitespace or control characters"));
        }
        if !(Duration::from_secs(1)..=MAX_RETENTION).contains(&self.retention) {
            return Err(Error::InvalidOption {
                name: "RedisOptions::retention",
                reason: "must be from 1 second to 365 days".into(),
            });
        }
        if !(100..=MAX_EVENT_STREAM_LEN).contains(&self.event_stream_len) {
            return Err(Error::InvalidOption {
                name: "RedisOptions::event_stream_len",
                reason: "must be from 100 to 1000000000".into(),
            });
        }
        if self.response_timeout < Duration::from_millis(1) {
            return Err(Error::InvalidOption {
                name: "RedisOptions::response_timeout",
                reason: "must be from 1 ms to Duration::MAX".into(),
            });
        }
        Ok(())
    }
}

/// Sessions kept in Redis or Valkey: the operations of [`crate::Store`], as async
/// methods, for an app on several nodes sharing one server. Cheap to clone (one shared
/// connection, multiplexed and reconnecting).
///
/// ```no_run
/// use sessiondb::{NewSession, Options, RedisStore};
///
/// # async fn demo() -> Result<(), sessiondb::Error> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/", Options::default()).await?;
/// let (token, _) = store.create(NewSession::anonymous()).await?;
/// let token = store.login(&token, "alice").await?;
/// assert_eq!(store.sessions_of("alice").await?.len(), 1);
/// assert_eq!(store.revoke_user("alice").await?, 1);
/// assert!(store.get(&token).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    client: Client,
    script: redis::Script,
    read_script: redis::Script,
    /// The last reading of the server's clock a scriptless read took.
    clock: read::ServerClock,
    opts: Options,
    ropts: RedisOptions,
    registry: String,
    events_key: String,
    entropy: Mutex<EntropyPool>,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.reaper.lock().take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.ropts.prefix)
            .finish_non_exhaustive()
    }
}

/// The shared connection: one server (reconnecting), or a Redis Cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// What opens a subscriber's own connection.
enum Client {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl Conn {
    async fn query(&self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    async fn invoke(&self, inv: &redis::ScriptInvocation<'_>) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }
}

fn unavailable(context: impl Into<String>, e: &redis::RedisError) -> Error {
    Error::Unavailable {
        backend: "redis",
        context: context.into(),
        reason: e.to_string(),
    }
}

fn protocol(context: &str, what: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        backend: "redis",
        context: context.into(),
        reason: format!("unexpected reply: {what}"),
    }
}

/// Every connection's TCP settings: no Nagle delay. A request is one small write and
/// its reply is awaited; with Nagle's algorithm on, a request written while an earlier
/// one on the shared connection is unacknowledged waits for that ACK, which the server
/// may delay by up to 40 ms.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// What both ways of connecting check first: a tokio runtime to run on, and the options.
fn preflight(name: &'static str, opts: &Options, ropts: &RedisOptions) -> Result<()> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::InvalidOption {
            name,
            reason: "must be awaited inside a tokio runtime (its connection and reaper run \
                     as tokio tasks)"
                .into(),
        });
    }
    ropts.check()?;
    opts.validate()?;
    // Not silently ignored: an app that sets it expects it kept.
    if opts.budget.is_some_and(|b| b.max_bytes.is_some()) {
        return Err(Error::InvalidOption {
            name: "budget.max_bytes",
            reason: "the Redis backend enforces a budget's max_sessions only (it cannot \
                     see what Redis itself spends per session); bound Redis's memory with \
                     maxmemory and the noeviction policy (docs/open-internet.md)"
                .into(),
        });
    }
    Ok(())
}

/// Whether every key `<prefix>:…` hashes to one Cluster slot: the prefix holds a
/// non-empty `{tag}` (Redis hashes only the first such tag).
fn is_hash_tag(prefix: &str) -> bool {
    prefix
        .find('{')
        .and_then(|open| prefix[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// `v` as 32 lowercase hex digits (what `format!("{v:032x}")` writes, without the
/// formatting machinery: every read hashes its token into a key this way).
fn hex(v: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in v.to_be_bytes() {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The id or hash [`hex`] wrote: exactly 32 hex digits (either case), nothing else —
/// no sign, no space. Every read of a stored session parses its id this way.
fn parse_hex(text: &[u8]) -> Option<u128> {
    if text.len() != 32 {
        return None;
    }
    text.iter().try_fold(0u128, |acc, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some((acc << 4) | u128::from(digit))
    })
}

fn hash_hex(token: &Token) -> String {
    hex(token.hash().as_u128())
}

fn ms(d: Duration) -> u64 {
    duration_ms(d)
}

/// A deadline as the script keeps it (at most [`NEVER`], Lua's doubles), as a
/// timestamp: [`NEVER`] and later is [`Timestamp::MAX`], no deadline.
fn deadline_of(t: u64) -> Timestamp {
    if t >= NEVER {
        Timestamp::MAX
    } else {
        Timestamp(t)
    }
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://[user:password@]host:port[/db]`,
    /// `redis+unix:///path/to/socket`, or `rediss://` for TLS — which needs the `redis`
    /// crate's TLS support: add `redis = { version = "1.8", features =
    /// ["tokio-rustls-comp"] }` to your app's dependencies; sessiondb does not enable
    /// it, and without it `rediss://` is refused, never downgraded) with the default
    /// [`RedisOptions`], loads the script and starts the reaper task on the current
    /// tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad URL or option, or when not awaited inside a
    /// tokio runtime; [`Error::Unavailable`] if the server cannot be reached.
    pub async fn connect(url: &str, opts: Options) -> Result<RedisStore> {
        RedisStore::connect_with(url, opts, RedisOptions::default()).await
    }

    /// [`RedisStore::connect`] with backend settings.
    ///
    /// # Errors
    /// As [`RedisStore::connect`].
    pub async fn connect_with(url: &str, opts: Options, ropts: RedisOptions) -> Result<RedisStore> {
        preflight("RedisStore::connect", &opts, &ropts)?;
        let bad_url = |e: redis::RedisError| Error::InvalidOption {
            name: "redis url",
            reason: e.to_string(),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(bad_url)?
            .set_tcp_settings(tcp_settings());
        let client = redis::Client::open(info).map_err(bad_url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(ropts.response_timeout))
            .set_connection_timeout(Some(ropts.response_timeout))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            // The address only: the URL may carry a password, and errors get logged.
            .map_err(|e| {
                let addr = client.get_connection_info().addr();
                unavailable(format!("connecting to {addr}"), &e)
            })?;
        RedisStore::start(Conn::Single(conn), Client::Single(client), opts, ropts).await
    }

    /// Connects to a Redis Cluster through any of its nodes (`seeds`: `redis://host:port`
    /// URLs). Every key of a store must live in one hash slot, so the prefix must be a
    /// hash tag (`RedisOptions::default().prefix("{sessiondb}")`): the store's sessions
    /// live on the one shard that owns that slot (and move with it on a resharding or a
    /// failover), so a Cluster gives them its availability, not more capacity than one
    /// primary. Several stores (apps, tenants) with different tags spread over shards.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a prefix that is not a hash tag, or as
    /// [`RedisStore::connect`].
    pub async fn connect_cluster(
        seeds: &[&str],
        opts: Options,
        ropts: RedisOptions,
    ) -> Result<RedisStore> {
        preflight("RedisStore::connect_cluster", &opts, &ropts)?;
        if !is_hash_tag(&ropts.prefix) {
            return Err(Error::InvalidOption {
                name: "RedisOptions::prefix",
                reason: format!(
                    "in a Redis Cluster the prefix must be a hash tag such as \"{{sessiondb}}\" \
                     (so that every key of the store is in one slot); got {:?}",
                    ropts.prefix
                ),
            });
        }
        let client = ClusterClient::builder(seeds.iter().copied())
            .tcp_settings(tcp_settings())
            .response_timeout(ropts.response_timeout)
            .connection_timeout(ropts.response_timeout)
            .build()
            .map_err(|e| Error::InvalidOption {
                name: "redis cluster seeds",
                reason: e.to_string(),
            })?;
        let conn = client.get_async_connection().await.map_err(|e| {
            unavailable(
                format!("connecting to a cluster of {} seeds", seeds.len()),
                &e,
            )
        })?;
        RedisStore::start(
            Conn::Cluster(conn),
            Client::Cluster(Box::new(client)),
            opts,
            ropts,
        )
        .await
    }

    /// Loads the script and starts the reaper.
    async fn start(
        conn: Conn,
        client: Client,
        opts: Options,
        ropts: RedisOptions,
    ) -> Result<RedisStore> {
        let script = redis::Script::new(SCRIPT);
        let prefix = ropts.prefix.clone();
        let registry = format!("{prefix}:x");
        // Loaded now where the call is routed by a key (a Cluster loads it on the
        // shard that first runs it: invoking reloads on NOSCRIPT).
        if let Conn::Single(_) = &conn {
            for text in [SCRIPT, READ_SCRIPT] {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(text);
                conn.query(&load)
                    .await
                    .map_err(|e| unavailable("loading the scripts", &e))?;
            }
        }
        let inner = Arc::new(Inner {
            conn,
            client,
            script,
            read_script: redis::Script::new(READ_SCRIPT),
            clock: read::ServerClock::default(),
            registry,
            events_key: format!("{prefix}:e"),
            opts,
            ropts,
            entropy: Mutex::new(EntropyPool::new()),
            reaper: Mutex::new(None),
            dropped: Arc::new(AtomicU64::new(0)),
        });
        // One call now: it fails here, not at the first request, if the server cannot
        // run the script (too old, scripting disabled).
        inner.call("len", |_| {}).await?;
        if let Some(every) = inner.opts.reaper_interval {
            let weak = Arc::downgrade(&inner);
            let task = tokio::spawn(reap_loop(weak, every));
            *inner.reaper.lock() = Some(task);
        }
        Ok(RedisStore { inner })
    }

    /// The options the store was connected with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// The backend settings the store was connected with.
    pub fn redis_options(&self) -> &RedisOptions {
        &self.inner.ropts
    }

    // ----------------------------------------------------------------------------
    // Creating and reading

    /// Creates a session and returns its token and a snapshot, as
    /// [`crate::Store::create`].
    ///
    /// # Errors
    /// As [`crate::Store::create`], and [`Error::Unavailable`].
    pub async fn create(&self, new: NewSession) -> Result<(Token, Session)> {
        loop {
            let (id, token) = token::fresh_session(|b| self.inner.entropy.lock().fill(b))?;
            match self.admit_new(id, &token, &new).await {
                Err(Error::Exists { .. }) => continue, // a fresh draw collided: draw again
                Err(e) => return Err(e),
                Ok(s) => return Ok((token, s)),
            }
        }
    }

    /// Creates a session addressed by a token the caller chose, as
    /// [`crate::Store::create_with_token`].
    ///
    /// # Errors
    /// [`Error::Exists`] if the token already addresses a session (or an old token in
    /// its grace period); otherwise as [`RedisStore::create`].
    pub async fn create_with_token(&self, token: &Token, new: NewSession) -> Result<Session> {
        loop {
            let (id, _) = token::fresh_session(|b| self.inner.entropy.lock().fill(b))?;
            match self.admit_new(id, token, &new).await {
                Err(Error::Exists { what: "session id" }) => continue,
                other => return other,
            }
        }
    }

    async fn admit_new(&self, id: SessionId, token: &Token, new: &NewSession) -> Result<Session> {
        let o = &self.inner.opts;
        let (user, lifetime, idle) = check_new(new, o)?;
        let (lifetime, idle) = (lifetime.min(MAX_LIFETIME), idle.min(MAX_LIFETIME));
        let device = new
            .device
            .as_ref()
            .and_then(|d| d.stored(o.address_privacy, Timestamp(0)));
        let fields = Admit {
            hash: hash_hex(token),
            id,
            user: user.as_ref().map(|u| u.as_str().to_owned()),
            label: new.label.clone(),
            created: -1,
            last_seen: -1,
            authenticated: user.as_ref().map(|_| -1),
            absolute: -(ms(lifetime) as i64),
            idle_ms: ms(idle),
            version: 0,
            data: new.data.clone(),
            factors: new.sign_in.as_ref().map(sign_in_text).unwrap_or_default(),
            factors_now: true,
            user_agent: device
                .as_ref()
                .and_then(|d| d.user_agent.as_deref().map(str::to_owned)),
            address: device.as_ref().and_then(|d| d.address),
            device_at: -1,
        };
        match self.admit(fields).await? {
            Some(s) => Ok(s),
            None => Err(protocol("create", "a new session expired at once")),
        }
    }

    async fn admit(&self, a: Admit) -> Result<Option<Session>> {
        let user = a.user.clone();
        let reply = self
            .call("admit", |inv| {
                inv.arg(&a.hash)
                    .arg(hex(a.id.0))
                    .arg(a.user.as_deref().unwrap_or(""))
                    .arg(a.label.as_deref().unwrap_or(""))
                    .arg(a.created)
                    .arg(a.last_seen)
                    .arg(a.authenticated.map(|t| t.to_string()).unwrap_or_default())
                    .arg(a.absolute)
                    .arg(a.idle_ms)
                    .arg(a.version)
                    .arg(a.data.encoded_len());
                self.limit_args(inv);
                self.budget_args(inv);
                inv.arg(&a.factors)
                    .arg(if a.factors_now { "1" } else { "0" })
                    .arg(a.user_agent.as_deref().unwrap_or(""))
                    .arg(a.address.map(|a| a.to_string()).unwrap_or_default())
                    .arg(a.device_at);
                for (k, v) in a.data.iter() {
                    inv.arg(k).arg(v);
                }
            })
            .await?;
        match reply.status() {
            "ok" => Ok(Some(reply.session(1, &self.inner.opts.levels)?)),
            "expired" => Ok(None),
            "exists" => Err(Error::Exists {
                what: if reply.str(1)? == "token" {
                    "token"
                } else {
                    "session id"
                },
            }),
            _ => Err(self.refusal(&reply, user.as_deref(), "create")),
        }
    }

    /// Brings in a session exported from any sessiondb store (embedded or Redis), as
    /// [`crate::Store::import`]: it answers to the same token. Returns false, and
    /// changes nothing, if it has ended: its deadline passed, or it authenticated
    /// before its user's not-before time ([`RedisStore::revoke_user_before`]).
    ///
    /// # Errors
    /// As [`crate::Store::import`], and [`Error::Unavailable`].
    pub async fn import(&self, mut rec: SessionRecord) -> Result<bool> {
        rec.check(&self.inner.opts.limits)?;
        rec.keep_address_as(self.inner.opts.address_privacy);
        // Times past NEVER (year 144,683) are NEVER: the script's numbers are doubles,
        // which print a larger time as something that no longer parses back.
        let clamp = |t: Timestamp| t.0.min(NEVER) as i64;
        let fields = Admit {
            hash: hex(rec.token_hash.as_u128()),
            id: rec.id,
            user: rec.user.as_ref().map(|u| u.as_str().to_owned()),
            label: rec.label.clone(),
            created: clamp(rec.created),
            last_seen: clamp(rec.last_seen),
            authenticated: rec.authenticated.map(clamp),
            absolute: clamp(rec.absolute),
            idle_ms: rec.idle_timeout.map_or(0, |d| ms(d.min(MAX_LIFETIME))),
            version: rec.version,
            data: rec.data,
            factors: read::factors_text(&rec.factors),
            factors_now: false,
            user_agent: rec.user_agent,
            address: rec.address,
            device_at: rec.device_seen_at.map_or(-1, clamp),
        };
        Ok(self.admit(fields).await?.is_some())
    }

    /// Calls `f` with every live session, as [`crate::Store::export`]: in batches,
    /// so other clients are served in between (sessions created or ended during the
    /// walk may or may not be seen; none is seen twice). Returns how many were passed.
    ///
    /// # Errors
    /// Whatever `f` returns stops the walk and is returned; [`Error::Unavailable`].
    pub async fn export(&self, mut f: impl FnMut(SessionRecord) -> Result<()>) -> Result<usize> {
        let mut cursor = "0".to_owned();
        let mut seen = std::collections::HashSet::new();
        loop {
            let batch = self.inner.ropts.batch;
            let reply = self
                .call("export", |inv| {
                    inv.arg(&cursor).arg(batch);
                })
                .await?;
            cursor = reply.str(1)?.to_owned();
            for img in reply.into_nested(2)? {
                let s = img.session(0, &self.inner.opts.levels)?;
                let h = img.str(img.len() - 1)?;
                let hash = u128::from_str_radix(h, 16).map_err(|e| protocol("export", e))?;
                if !seen.insert(s.id()) {
                    continue;
                }
                f(SessionRecord::of_session(&s, TokenHash::from_u128(hash)))?;
            }
            if cursor == "0" {
                return Ok(seen.len());
            }
        }
    }

    /// The live session `token` addresses, as [`crate::Store::get`]: counts as
    /// activity (at most once per [`Options::touch_interval`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn get(&self, token: &Token) -> Result<Option<Session>> {
        // Any interval fits: past i64::MAX ms no read is activity, as no read could be
        // that long after the last.
        let touch = i64::try_from(ms(self.inner.opts.touch_interval)).unwrap_or(i64::MAX);
        self.read(token, touch).await
    }

    /// Like [`RedisStore::get`], but does not count as activity.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn peek(&self, token: &Token) -> Result<Option<Session>> {
        self.read(token, -1).await
    }

    async fn read(&self, token: &Token, touch: i64) -> Result<Option<Session>> {
        let h = hash_hex(token);
        match self.inner.read_direct(&h, touch).await? {
            Direct::Live(s) => return Ok(Some(s)),
            Direct::Ended => return Ok(None),
            Direct::Script => {}
        }
        let reply = self
            .call("get", |inv| {
                inv.arg(&h).arg(touch);
            })
            .await?;
        match reply.status() {
            "ok" => Ok(Some(reply.session(1, &self.inner.opts.levels)?)),
            "ended" => Ok(None),
            other => Err(protocol("get", other)),
        }
    }

    /// The user bound to the live session `token` addresses, if any.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn user_of(&self, token: &Token) -> Result<Option<UserId>> {
        Ok(self.peek(token).await?.and_then(|s| s.user().cloned()))
    }

    /// The live session with public id `id`. Does not count as activity.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn get_by_id(&self, id: SessionId) -> Result<Option<Session>> {
        let reply = self
            .call("get_by_id", |inv| {
                inv.arg(hex(id.0));
            })
            .await?;
        match reply.status() {
            "ok" => Ok(Some(reply.session(1, &self.inner.opts.levels)?)),
            "ended" => Ok(None),
            other => Err(protocol("get_by_id", other)),
        }
    }

    // ----------------------------------------------------------------------------
    // Data

    /// Sets `key` to `value`, as [`crate::Store::put`]. Returns the new version.
    ///
    /// # Errors
    /// As [`crate::Store::put`], and [`Error::Unavailable`].
    pub async fn put<T: serde::Serialize + ?Sized>(
        &self,
        token: &Token,
        key: &str,
        value: &T,
    ) -> Result<u64> {
        let bytes = crate::util::codec::encode(value, Some(key))?;
        self.put_raw(token, key, &bytes).await
    }

    /// Sets `key` to raw bytes, as [`crate::Store::put_raw`]. Returns the new version.
    ///
    /// # Errors
    /// As [`crate::Store::put`], and [`Error::Unavailable`].
    pub async fn put_raw(&self, token: &Token, key: &str, value: &[u8]) -> Result<u64> {
        let limits = self.inner.opts.limits;
        check_entry(key, value.len(), &limits)?;
        let h = hash_hex(token);
        let reply = self
            .call("put", |inv| {
                inv.arg(&h)
                    .arg(key)
                    .arg(value)
                    .arg(6 + key.len() + value.len())
                    .arg(limits.max_data_bytes);
            })
            .await?;
        match reply.status() {
            "ok" => reply.u64(1),
            "too_large" => Err(Error::TooLarge {
                what: "session data",
                len: reply.u64(1)? as usize,
                max: limits.max_data_bytes,
            }),
            _ => Err(self.refusal(&reply, None, "put")),
        }
    }

    /// Removes `key` from the session's data. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn remove(&self, token: &Token, key: &str) -> Result<u64> {
        let h = hash_hex(token);
        let reply = self
            .call("remove", |inv| {
                inv.arg(&h).arg(key);
            })
            .await?;
        match reply.status() {
            "ok" => reply.u64(1),
            _ => Err(self.refusal(&reply, None, "remove")),
        }
    }

    /// Atomic read-modify-write of the session's data, as [`crate::Store::update`]:
    /// `f` may run more than once (optimistic: a compare-and-swap save, retried on a
    /// concurrent change).
    ///
    /// # Errors
    /// As [`crate::Store::update`], and [`Error::Unavailable`].
    pub async fn update<R>(
        &self,
        token: &Token,
        mut f: impl FnMut(&mut SessionData) -> Result<R>,
    ) -> Result<R> {
        loop {
            let s = self.peek(token).await?.ok_or(Error::Ended)?;
            let mut data = s.data().clone();
            let out = f(&mut data)?;
            if &data == s.data() {
                return Ok(out);
            }
            match self.save(token, s.version(), &data).await {
                Ok(_) => return Ok(out),
                Err(Error::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Compare-and-swap save of the whole data map, as [`crate::Store::save`].
    ///
    /// # Errors
    /// As [`crate::Store::save`], and [`Error::Unavailable`].
    pub async fn save(
        &self,
        token: &Token,
        expected_version: u64,
        data: &SessionData,
    ) -> Result<u64> {
        check_data(data, &self.inner.opts.limits)?;
        let h = hash_hex(token);
        let reply = self
            .call("save", |inv| {
                inv.arg(&h).arg(expected_version).arg(data.encoded_len());
                for (k, v) in data.iter() {
                    inv.arg(k).arg(v);
                }
            })
            .await?;
        match reply.status() {
            "ok" => reply.u64(1),
            "conflict" => Err(Error::VersionConflict {
                expected: expected_version,
                actual: reply.u64(1)?,
            }),
            _ => Err(self.refusal(&reply, None, "save")),
        }
    }

    // ----------------------------------------------------------------------------
    // Expiry

    /// Records activity now, as [`crate::Store::touch`].
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn touch(&self, token: &Token) -> Result<()> {
        let h = hash_hex(token);
        let reply = self.call("touch", |inv| {
            inv.arg(&h);
        });
        self.unit(reply.await?, "touch")
    }

    /// Extends the absolute deadline to at least now + `by`, as
    /// [`crate::Store::extend`]. Returns the new effective deadline.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn extend(&self, token: &Token, by: Duration) -> Result<Timestamp> {
        let h = hash_hex(token);
        let reply = self
            .call("extend", |inv| {
                inv.arg(&h).arg(ms(by.min(MAX_LIFETIME)));
            })
            .await?;
        match reply.status() {
            "ok" => Ok(deadline_of(reply.u64(1)?)),
            _ => Err(self.refusal(&reply, None, "extend")),
        }
    }

    /// Sets the absolute deadline to exactly `absolute`, as
    /// [`crate::Store::set_expiry`] (a moment at or before now ends the session as
    /// expired). Returns the new effective deadline.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn set_expiry(&self, token: &Token, absolute: Timestamp) -> Result<Timestamp> {
        let h = hash_hex(token);
        let at = absolute.0.min(NEVER);
        let reply = self
            .call("set_expiry", |inv| {
                inv.arg(&h).arg(at);
            })
            .await?;
        match reply.status() {
            "ok" => Ok(deadline_of(reply.u64(1)?)),
            _ => Err(self.refusal(&reply, None, "set_expiry")),
        }
    }

    /// Sets (or clears) the device label.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::TooLarge`];
    /// [`Error::Unavailable`].
    pub async fn set_label(&self, token: &Token, label: Option<&str>) -> Result<()> {
        if let Some(l) = label {
            check_label(l, &self.inner.opts.limits)?;
        }
        let h = hash_hex(token);
        let reply = self.call("set_label", |inv| {
            inv.arg(&h)
                .arg(if label.is_some() { "1" } else { "0" })
                .arg(label.unwrap_or(""));
        });
        self.unit(reply.await?, "set_label")
    }

    /// Removes every session past its deadline now (the reaper task does this every
    /// [`Options::reaper_interval`]). Returns how many were removed.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn reap_expired(&self) -> Result<usize> {
        self.inner.reap().await
    }

    // ----------------------------------------------------------------------------
    // Users

    /// Binds `user` to the session, as [`crate::Store::bind_user`] (the per-user cap
    /// applies).
    ///
    /// # Errors
    /// As [`crate::Store::bind_user`], and [`Error::Unavailable`].
    pub async fn bind_user(&self, token: &Token, user: &str) -> Result<()> {
        self.bind_inner(token, user, "").await
    }

    /// Binds `user` and records how they signed in, without rotating the token, as
    /// [`crate::Store::bind_user_with`].
    ///
    /// # Errors
    /// As [`crate::Store::bind_user_with`], and [`Error::Unavailable`].
    pub async fn bind_user_with(&self, token: &Token, user: &str, how: SignIn) -> Result<()> {
        how.check()?;
        self.bind_inner(token, user, &sign_in_text(&how)).await
    }

    async fn bind_inner(&self, token: &Token, user: &str, factors: &str) -> Result<()> {
        UserId::new(user, &self.inner.opts.limits)?;
        let h = hash_hex(token);
        let reply = self.call("bind", |inv| {
            inv.arg(&h).arg(user);
            self.limit_args(inv);
            inv.arg(factors);
        });
        match reply.await? {
            r if r.status() == "ok" => Ok(()),
            r => Err(self.refusal(&r, Some(user), "bind_user")),
        }
    }

    /// Logs `user` in: rotates the token and binds the user, in one step. Returns the
    /// new token.
    ///
    /// # Errors
    /// As [`crate::Store::login`], and [`Error::Unavailable`].
    pub async fn login(&self, token: &Token, user: &str) -> Result<Token> {
        self.login_inner(token, user, "").await
    }

    /// Logs `user` in and records how they proved who they are, as
    /// [`crate::Store::login_with`], in one step.
    ///
    /// # Errors
    /// As [`crate::Store::login_with`], and [`Error::Unavailable`].
    pub async fn login_with(&self, token: &Token, user: &str, how: SignIn) -> Result<Token> {
        how.check()?;
        self.login_inner(token, user, &sign_in_text(&how)).await
    }

    /// Records a step-up, as [`crate::Store::step_up`]: rotates the token and adds
    /// `how`'s factors, in one step. Returns the new token.
    ///
    /// # Errors
    /// As [`crate::Store::step_up`], and [`Error::Unavailable`].
    pub async fn step_up(&self, token: &Token, how: SignIn) -> Result<Token> {
        how.check()?;
        loop {
            let fresh = token::fresh_token(|b| self.inner.entropy.lock().fill(b))?;
            match self.step_up_inner(token, Some(&fresh), &how).await {
                Err(Error::Exists { .. }) => continue, // a fresh draw collided
                other => return other.map(|()| fresh),
            }
        }
    }

    /// Records a step-up without rotating the token, as
    /// [`crate::Store::add_sign_in`].
    ///
    /// # Errors
    /// As [`crate::Store::add_sign_in`], and [`Error::Unavailable`].
    pub async fn add_sign_in(&self, token: &Token, how: SignIn) -> Result<()> {
        how.check()?;
        self.step_up_inner(token, None, &how).await
    }

    async fn step_up_inner(
        &self,
        token: &Token,
        fresh: Option<&Token>,
        how: &SignIn,
    ) -> Result<()> {
        let old = hash_hex(token);
        let grace = ms(self.inner.opts.rotation_grace);
        let new = fresh.map(hash_hex).unwrap_or_default();
        let reply = self
            .call("step_up", |inv| {
                inv.arg(&old)
                    .arg(&new)
                    .arg(grace)
                    .arg(sign_in_text(how))
                    .arg(SignIn::MAX_FACTORS);
            })
            .await?;
        match reply.status() {
            "ok" => Ok(()),
            "exists" if new != old => Err(Error::Exists { what: "token" }),
            "not_signed_in" => Err(Error::NotSignedIn),
            "too_many" => Err(Error::InvalidSignIn {
                reason: format!(
                    "the session would hold {} methods, more than {}",
                    reply.str(1)?,
                    SignIn::MAX_FACTORS
                ),
            }),
            _ => Err(self.refusal(&reply, None, "step_up")),
        }
    }

    /// Records the client a request came from, as [`crate::Store::seen_from`]: a
    /// write only when it changed, at most once per touch interval. Returns whether
    /// it wrote.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn seen_from(&self, token: &Token, device: &Device) -> Result<bool> {
        let o = &self.inner.opts;
        let Some(d) = device.stored(o.address_privacy, Timestamp(0)) else {
            // Nothing to keep; the session must still be live.
            return match self.peek(token).await? {
                Some(_) => Ok(false),
                None => Err(Error::Ended),
            };
        };
        let h = hash_hex(token);
        let touch = i64::try_from(ms(o.touch_interval)).unwrap_or(i64::MAX);
        let reply = self
            .call("seen_from", |inv| {
                inv.arg(&h)
                    .arg(d.user_agent.as_deref().unwrap_or(""))
                    .arg(d.address.map(|a| a.to_string()).unwrap_or_default())
                    .arg(touch);
            })
            .await?;
        match reply.status() {
            "ok" => Ok(reply.str(1)? == "1"),
            _ => Err(self.refusal(&reply, None, "seen_from")),
        }
    }

    /// [`RedisStore::seen_from`] for a request that has already read its session: no
    /// round trip when that snapshot says there is nothing to record, as
    /// [`crate::Store::seen_from_if_changed`].
    ///
    /// # Errors
    /// As [`RedisStore::seen_from`].
    pub async fn seen_from_if_changed(
        &self,
        token: &Token,
        session: &Session,
        device: &Device,
    ) -> Result<bool> {
        if !session.device_due(device, &self.inner.opts) {
            return Ok(false);
        }
        self.seen_from(token, device).await
    }

    /// Ends the sessions of `user` that meet `criterion`, as
    /// [`crate::Store::revoke_user_where`], in one step. Returns how many ended.
    ///
    /// # Errors
    /// As [`crate::Store::revoke_user_where`], and [`Error::Unavailable`].
    pub async fn revoke_user_where(&self, user: &str, criterion: &Criterion) -> Result<usize> {
        UserId::new(user, &self.inner.opts.limits)?;
        criterion.check()?;
        let (kind, value) = match criterion {
            Criterion::Method(m) => ("m", m.clone()),
            Criterion::BelowLevel(l) => ("l", l.to_string()),
        };
        let lifetimes: Vec<String> = self
            .inner
            .opts
            .levels
            .iter()
            .map(|(l, ms)| format!("{l} {ms}"))
            .collect();
        let reply = self
            .call("revoke_where", |inv| {
                inv.arg(user).arg(kind).arg(&value).arg(lifetimes.join(";"));
            })
            .await?;
        match reply.status() {
            "ok" => Ok(usize::try_from(reply.u64(1)?).unwrap_or(usize::MAX)),
            _ => Err(self.refusal(&reply, Some(user), "revoke_user_where")),
        }
    }

    async fn login_inner(&self, token: &Token, user: &str, factors: &str) -> Result<Token> {
        UserId::new(user, &self.inner.opts.limits)?;
        let old = hash_hex(token);
        let grace = ms(self.inner.opts.rotation_grace);
        loop {
            let fresh = token::fresh_token(|b| self.inner.entropy.lock().fill(b))?;
            let new = hash_hex(&fresh);
            let reply = self
                .call("login", |inv| {
                    inv.arg(&old).arg(&new).arg(grace).arg(user);
                    self.limit_args(inv);
                    inv.arg(factors);
                })
                .await?;
            match reply.status() {
                "ok" => return Ok(fresh),
                "exists" if new != old => continue,
                _ => return Err(self.refusal(&reply, Some(user), "login")),
            }
        }
    }

    /// Unbinds the session's user, as [`crate::Store::unbind_user`]. Returns the user
    /// that was bound, if any.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::Unavailable`].
    pub async fn unbind_user(&self, token: &Token) -> Result<Option<UserId>> {
        let h = hash_hex(token);
        let reply = self
            .call("unbind", |inv| {
                inv.arg(&h);
            })
            .await?;
        match reply.status() {
            "ok" if reply.str(1)? == "1" => Ok(Some(UserId::trusted(reply.str(2)?))),
            "ok" => Ok(None),
            _ => Err(self.refusal(&reply, None, "unbind_user")),
        }
    }

    /// The live sessions of `user`, oldest first, as [`crate::Store::sessions_of`].
    /// One call of a small read-only script while the user's index holds only live
    /// sessions; otherwise the main script, which prunes the index as it reads.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`]; [`Error::Unavailable`].
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<Session>> {
        UserId::new(user, &self.inner.opts.limits)?;
        if let Some(live) = self.inner.sessions_of_direct(user).await? {
            return Ok(live);
        }
        let reply = self
            .call("sessions_of", |inv| {
                inv.arg(user);
            })
            .await?;
        if reply.status() != "ok" {
            return Err(protocol("sessions_of", reply.status()));
        }
        reply
            .into_nested(1)?
            .iter()
            .map(|img| img.session(0, &self.inner.opts.levels))
            .collect()
    }

    /// Ends every session of `user`, as [`crate::Store::revoke_user`], in one step: a
    /// concurrent create for the same user lands wholly before (and is ended) or after.
    /// Returns how many sessions ended.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`]; [`Error::Unavailable`].
    pub async fn revoke_user(&self, user: &str) -> Result<usize> {
        UserId::new(user, &self.inner.opts.limits)?;
        let reply = self
            .call("revoke", |inv| {
                inv.arg(user);
            })
            .await?;
        Ok(reply.u64(1)? as usize)
    }

    /// Ends every session of `user` authenticated before `before` and makes it the
    /// user's not-before time, in one script step: [`crate::Store::revoke_user_before`].
    /// The time is kept at `<prefix>:b:<user>`, without expiry, and judged on the Redis
    /// server's clock (`before` past the server's now counts as now).
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`]; [`Error::Unavailable`].
    pub async fn revoke_user_before(&self, user: &str, before: Timestamp) -> Result<usize> {
        UserId::new(user, &self.inner.opts.limits)?;
        let reply = self
            .call("revoke_before", |inv| {
                inv.arg(user).arg(before.0.min(NEVER));
            })
            .await?;
        Ok(reply.u64(1)? as usize)
    }

    /// Every user's not-before time: [`crate::Store::not_before_times`]. Read a page
    /// at a time (other clients are served in between).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn not_before_times(&self) -> Result<Vec<(UserId, Timestamp)>> {
        let mut out = std::collections::BTreeMap::new();
        let mut cursor = "0".to_owned();
        loop {
            let reply = self
                .call("not_before_list", |inv| {
                    inv.arg(&cursor);
                })
                .await?;
            cursor = reply.str(1)?.to_owned();
            for i in (2..reply.len()).step_by(2) {
                let user =
                    UserId::stored(reply.str(i)?).map_err(|e| protocol("not_before_list", e))?;
                out.insert(user, Timestamp(reply.u64(i + 1)?));
            }
            if cursor == "0" {
                return Ok(out.into_iter().collect());
            }
        }
    }

    /// Ends every other session of the token's user and keeps this one, in one script
    /// step: [`crate::Store::revoke_others`].
    ///
    /// # Errors
    /// [`Error::Ended`] if the token's session is not live; [`Error::Unavailable`] if
    /// Redis cannot be reached.
    pub async fn revoke_others(&self, token: &Token) -> Result<usize> {
        let h = hash_hex(token);
        let reply = self
            .call("revoke_others", |inv| {
                inv.arg(&h);
            })
            .await?;
        match reply.status() {
            "ok" => Ok(reply.u64(1)? as usize),
            _ => Err(self.refusal(&reply, None, "revoke_others")),
        }
    }

    /// [`RedisStore::revoke_others`] for the session with public id `id`:
    /// [`crate::Store::revoke_others_by_id`].
    ///
    /// # Errors
    /// [`Error::Ended`] if no live session has that id; [`Error::Unavailable`].
    pub async fn revoke_others_by_id(&self, id: SessionId) -> Result<usize> {
        let reply = self
            .call("revoke_others_by_id", |inv| {
                inv.arg(hex(id.0));
            })
            .await?;
        match reply.status() {
            "ok" => Ok(reply.u64(1)? as usize),
            _ => Err(self.refusal(&reply, None, "revoke_others_by_id")),
        }
    }

    // ----------------------------------------------------------------------------
    // Rotation and ending

    /// Replaces the token with a fresh one, as [`crate::Store::rotate`]: the old one
    /// resolves for [`Options::rotation_grace`].
    ///
    /// # Errors
    /// As [`crate::Store::rotate`], and [`Error::Unavailable`].
    pub async fn rotate(&self, token: &Token) -> Result<Token> {
        let grace = ms(self.inner.opts.rotation_grace);
        loop {
            let fresh = token::fresh_token(|b| self.inner.entropy.lock().fill(b))?;
            match self.rotate_with(token, &fresh, grace).await {
                Err(Error::Exists { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(fresh),
            }
        }
    }

    /// Rotates to a token the caller chose, with no grace, as
    /// [`crate::Store::rotate_to`].
    ///
    /// # Errors
    /// As [`crate::Store::rotate_to`], and [`Error::Unavailable`].
    pub async fn rotate_to(&self, token: &Token, new: &Token) -> Result<()> {
        self.rotate_with(token, new, 0).await
    }

    async fn rotate_with(&self, token: &Token, new: &Token, grace: u64) -> Result<()> {
        let (old, new) = (hash_hex(token), hash_hex(new));
        let reply = self.call("rotate", |inv| {
            inv.arg(&old).arg(&new).arg(grace);
        });
        self.unit(reply.await?, "rotate")
    }

    /// Ends the session, as [`crate::Store::end`]. Returns false if it was not live.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn end(&self, token: &Token) -> Result<bool> {
        let h = hash_hex(token);
        let reply = self
            .call("end", |inv| {
                inv.arg(&h);
            })
            .await?;
        Ok(reply.str(1)? == "1")
    }

    /// Ends the session with public id `id`. Returns false if it was not live.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn end_by_id(&self, id: SessionId) -> Result<bool> {
        let reply = self
            .call("end_by_id", |inv| {
                inv.arg(hex(id.0));
            })
            .await?;
        Ok(reply.str(1)? == "1")
    }

    /// Ends every session of this store (this prefix), as [`crate::Store::clear`], in
    /// batches (a session created meanwhile may survive). Returns how many live
    /// sessions ended.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn clear(&self) -> Result<usize> {
        let mut ended = 0usize;
        loop {
            let batch = self.inner.ropts.batch;
            let reply = self
                .call("clear", |inv| {
                    inv.arg(batch);
                })
                .await?;
            ended += reply.u64(1)? as usize;
            if reply.u64(2)? == 0 {
                break;
            }
        }
        self.call("clear_done", |inv| {
            inv.arg(ended);
        })
        .await?;
        Ok(ended)
    }

    /// How many live sessions the store holds.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn len(&self) -> Result<usize> {
        let reply = self.call("len", |_| {}).await?;
        Ok(reply.u64(1)? as usize)
    }

    /// Whether the store holds no live session.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    // ----------------------------------------------------------------------------
    // Events

    /// Subscribes to the events of every node sharing this store (see the module
    /// documentation for the delivery guarantee): every event committed after this
    /// call returns. A task on the current tokio runtime reads the stream; it stops
    /// at the first event after the receiver is dropped, or within a second of the
    /// store being dropped.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub async fn subscribe(&self) -> Result<Receiver<Event>> {
        let inner = &self.inner;
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&inner.events_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let last = inner
            .conn
            .query(&cmd)
            .await
            .map_err(|e| unavailable("subscribe", &e))?;
        let from = match &last {
            Value::Array(entries) => match entries.first() {
                Some(Value::Array(entry)) => match entry.first() {
                    Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                    _ => return Err(protocol("subscribe", "an entry without an id")),
                },
                _ => "0-0".to_owned(),
            },
            other => return Err(protocol("subscribe", format!("{other:?}"))),
        };
        let (tx, rx) = crossbeam_channel::bounded(inner.opts.event_capacity);
        tokio::spawn(read_events(Arc::downgrade(inner), tx, from));
        Ok(rx)
    }

    /// Events a subscriber's full channel could not take (see
    /// [`RedisStore::subscribe`]).
    pub fn events_dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Hands the `metrics` facade what Redis knows of the store: the live sessions
    /// (from the expiry registry, one round trip) as `sessiondb_sessions_live` and this
    /// handle's dropped events as `sessiondb_events_dropped_total`, labelled with
    /// [`Options::metrics_label`]. Call it before rendering `/metrics`. Each script call
    /// is timed as it happens (`sessiondb_redis_script_seconds{op}`), and a failed one
    /// counted (`sessiondb_redis_errors_total`).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    #[cfg(feature = "metrics")]
    pub async fn publish_metrics(&self) -> Result<()> {
        let label = &self.inner.opts.metrics_label;
        let live = self.len().await?;
        crate::util::metrics::gauge("sessiondb_sessions_live", label, live as f64);
        crate::util::metrics::counter(
            "sessiondb_events_dropped_total",
            label,
            &[],
            self.events_dropped(),
        );
        Ok(())
    }

    // ----------------------------------------------------------------------------
    // Plumbing

    async fn call(
        &self,
        op: &'static str,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Reply> {
        self.inner.call(op, args).await
    }

    /// The budget's count and policy, as `admit` takes them (0: no budget).
    fn budget_args(&self, inv: &mut redis::ScriptInvocation<'_>) {
        let b = self.inner.opts.budget;
        inv.arg(b.and_then(|b| b.max_sessions).unwrap_or(0))
            .arg(match b.map(|b| b.policy) {
                Some(BudgetPolicy::EvictAnonymous) => "evict",
                _ => "refuse",
            });
    }

    fn limit_args(&self, inv: &mut redis::ScriptInvocation<'_>) {
        let o = &self.inner.opts;
        inv.arg(o.max_sessions_per_user.unwrap_or(0))
            .arg(match o.limit_policy {
                LimitPolicy::Refuse => "refuse",
                LimitPolicy::EndOldest => "end_oldest",
            });
    }

    fn unit(&self, reply: Reply, op: &'static str) -> Result<()> {
        match reply.status() {
            "ok" => Ok(()),
            _ => Err(self.refusal(&reply, None, op)),
        }
    }

    /// The error for a refusal the script answered with.
    fn refusal(&self, reply: &Reply, user: Option<&str>, op: &'static str) -> Error {
        match reply.status() {
            "ended" => Error::Ended,
            "retired" => Error::TokenRetired,
            "exists" => Error::Exists { what: "token" },
            "exhausted" => Error::VersionExhausted {
                version: reply.u64(1).unwrap_or(Session::MAX_VERSION),
            },
            "limit" => Error::UserSessionLimit {
                user: user.unwrap_or_default().to_owned(),
                max: self.inner.opts.max_sessions_per_user.unwrap_or(0),
            },
            "full" => Error::Full {
                sessions: reply.u64(1).unwrap_or(0),
                max_sessions: self.inner.opts.budget.and_then(|b| b.max_sessions),
                bytes: 0,
                max_bytes: None,
            },
            other => protocol(op, other),
        }
    }
}

/// The fields of a session to admit (a create passes negative times: "now", and
/// `absolute` = -lifetime).
/// The script's text of a sign-in's factors (dated 0: the script dates them now).
fn sign_in_text(how: &SignIn) -> String {
    let factors: Vec<Factor> = how
        .methods
        .iter()
        .map(|m| Factor::new(m, how.level, Timestamp(0)))
        .collect();
    read::factors_text(&factors)
}

struct Admit {
    hash: String,
    id: SessionId,
    user: Option<String>,
    label: Option<String>,
    created: i64,
    last_seen: i64,
    authenticated: Option<i64>,
    absolute: i64,
    idle_ms: u64,
    version: u64,
    data: SessionData,
    /// The script's text of the factors ('' none).
    factors: String,
    /// Whether the factors are dated now (a create) rather than as given.
    factors_now: bool,
    user_agent: Option<String>,
    address: Option<IpAddr>,
    /// When the device was recorded (-1: now).
    device_at: i64,
}

impl Inner {
    /// Whether a budget evicts anonymous sessions (the script then keeps their
    /// last-seen order, `<prefix>:n`). Give every node the same budget.
    fn evicts(&self) -> bool {
        self.opts
            .budget
            .is_some_and(|b| b.max_sessions.is_some() && b.policy == BudgetPolicy::EvictAnonymous)
    }

    async fn call(
        &self,
        op: &'static str,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Reply> {
        let mut inv = self.script.key(&self.registry);
        inv.arg(&self.ropts.prefix)
            .arg(op)
            .arg(self.opts.auth_lifetime.map_or(0, ms))
            .arg(ms(self.ropts.retention))
            .arg(self.ropts.event_stream_len)
            .arg(self.opts.trial_lifetime.map_or(0, ms))
            .arg(if self.evicts() { "1" } else { "0" });
        args(&mut inv);
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let value = self.conn.invoke(&inv).await;
        #[cfg(feature = "metrics")]
        {
            let store = self.opts.metrics_label.0.to_string();
            metrics::histogram!("sessiondb_redis_script_seconds", "store" => store.clone(), "op" => op)
                .record(started.elapsed().as_secs_f64());
            if value.is_err() {
                metrics::counter!("sessiondb_redis_errors_total", "store" => store).increment(1);
            }
        }
        let value = value.map_err(|e| unavailable(op, &e))?;
        match value {
            Value::Array(items) => Ok(Reply(items)),
            other => Err(protocol(op, format!("{other:?}"))),
        }
    }

    async fn reap(&self) -> Result<usize> {
        let mut n = 0;
        loop {
            let batch = self.ropts.batch;
            let reply = self
                .call("reap", |inv| {
                    inv.arg(batch);
                })
                .await?;
            let k = reply.u64(1)? as usize;
            n += k;
            if k < batch {
                return Ok(n);
            }
        }
    }
}

async fn reap_loop(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        // A failed pass (server away) is retried at the next tick.
        let _ = inner.reap().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::EndReason;
    use events::decode_event;

    #[test]
    fn hex_writes_what_the_format_macro_writes() {
        let mut v: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;
        for probe in [
            0,
            1,
            0xf,
            0x10,
            u128::MAX,
            u128::MAX - 1,
            1 << 127,
            0xabc << 60,
        ] {
            assert_eq!(hex(probe), format!("{probe:032x}"));
        }
        for _ in 0..1000 {
            v = v.rotate_left(7).wrapping_mul(0x2545_f491_4f6c_dd1d);
            assert_eq!(hex(v), format!("{v:032x}"));
        }
    }

    #[test]
    fn parse_hex_reads_back_what_hex_writes_and_nothing_else() {
        let mut v: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for probe in [0, 1, u128::MAX, 1 << 127] {
            assert_eq!(parse_hex(hex(probe).as_bytes()), Some(probe));
        }
        for _ in 0..1000 {
            v = v.rotate_left(11).wrapping_mul(0x2545_f491_4f6c_dd1d);
            assert_eq!(parse_hex(hex(v).as_bytes()), Some(v));
            let upper = hex(v).to_ascii_uppercase();
            assert_eq!(parse_hex(upper.as_bytes()), Some(v));
        }
        let good = hex(u128::MAX - 5);
        for bad in [
            String::new(),
            good[1..].to_owned(),
            format!("{good}0"),
            format!("+{}", &good[1..]),
            format!("-{}", &good[1..]),
            format!(" {}", &good[1..]),
            format!("{}g", &good[1..]),
            format!("0x{}", &good[2..]),
            format!("{}\u{e9}", &good[2..]),
        ] {
            assert_eq!(parse_hex(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn events_decode_from_their_stream_fields() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let id = "000000000000000000000000000000ff";
        assert_eq!(
            decode_event(&f(&[
                ("k", "ended"),
                ("id", id),
                ("u", "bob"),
                ("r", "revoked")
            ])),
            Some(Event::Ended {
                session: SessionId(255),
                user: Some(UserId::trusted("bob")),
                reason: EndReason::Revoked
            })
        );
        assert_eq!(
            decode_event(&f(&[("k", "created"), ("id", id), ("u", "")])),
            Some(Event::Created {
                session: SessionId(255),
                user: None
            })
        );
        assert_eq!(
            decode_event(&f(&[("k", "revoked"), ("u", "bob"), ("ids", "")])),
            Some(Event::UserRevoked {
                user: UserId::trusted("bob"),
                sessions: vec![]
            })
        );
        assert_eq!(decode_event(&f(&[("k", "ended"), ("id", "zz")])), None);
        assert_eq!(decode_event(&f(&[("k", "unknown")])), None);
    }

    #[test]
    fn connecting_outside_a_tokio_runtime_is_a_typed_error_not_a_panic() {
        let fut = RedisStore::connect("redis://127.0.0.1:1/", Options::default());
        // A minimal executor that is not tokio: poll once with a no-op waker.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Err(Error::InvalidOption { name, .. })) => {
                assert_eq!(name, "RedisStore::connect");
            }
            other => panic!("expected a typed error at once, got {:?}", other.is_ready()),
        }
    }

    #[test]
    fn a_cluster_prefix_must_be_a_hash_tag() {
        assert!(is_hash_tag("{sessiondb}"));
        assert!(is_hash_tag("app:{tenant-1}"));
        assert!(!is_hash_tag("sessiondb"));
        assert!(!is_hash_tag("{}"));
        assert!(!is_hash_tag("{open"));
        assert!(!is_hash_tag("close}{"));
    }

    #[test]
    fn options_refuse_an_unusable_prefix() {
        assert!(RedisOptions::default().prefix("").check().is_err());
        assert!(RedisOptions::default().prefix("a b").check().is_err());
        assert!(
            RedisOptions::default()
                .prefix("x".repeat(129))
                .check()
                .is_err()
        );
        assert!(RedisOptions::default().prefix("{app}").check().is_ok());
        assert!(
            RedisOptions::default()
                .retention(Duration::from_millis(10))
                .check()
                .is_err()
        );
    }
}
