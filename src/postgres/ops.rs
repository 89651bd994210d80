//! The operations of a [`super::PostgresStore`], each one database transaction: the
//! rows it changes are locked (`SELECT … FOR UPDATE`) and judged on the database's
//! clock, then written back with their event, or nothing is written at all.
//!
//! Lock order, so that transactions never wait on each other in a circle: a user's row
//! (`users`, which serialises that user's creates, binds, logins, revocations and cap)
//! before any session row; the budget's advisory lock after the user's row. Deadlocks
//! and serialization failures the server reports anyway are retried a few times.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::row::{Row, key, time, uuid};
use super::{Inner, db, protocol};
use crate::error::{Error, Result};
use crate::model::data::SessionData;
use crate::model::session::{Session, next_version};
use crate::model::signin::{Criterion, Factor, SignIn};
use crate::model::token::SessionId;
use crate::options::{BudgetPolicy, LimitPolicy};

/// Why an operation's transaction stopped: an answer for the caller, a database error
/// (retried if the server says so), or a change that asks to start over.
pub(super) enum Fault {
    Refused(Error),
    Db(tokio_postgres::Error),
    Retry,
}

impl From<Error> for Fault {
    fn from(e: Error) -> Fault {
        Fault::Refused(e)
    }
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Fault {
        Fault::Db(e)
    }
}

type Step<T> = std::result::Result<T, Fault>;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Whether the server asks for the transaction to be tried again: a deadlock it broke,
/// a serialization failure, or a unique key taken by a transaction that committed
/// between our check and our insert of something else.
fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// What a failed attempt of a transaction comes to: the error to return, or `None` to
/// try again (a deadlock or serialization failure, or [`Fault::Retry`], up to 20 tries).
pub(super) fn settle(inner: &Inner, op: &str, f: Fault, tries: u32) -> Option<Error> {
    let again = match &f {
        Fault::Retry => tries < 20,
        Fault::Db(e) => retryable(e) && tries < 20,
        Fault::Refused(_) => false,
    };
    if again {
        inner.count("sessiondb_postgres_retries_total");
        return None;
    }
    Some(match f {
        Fault::Refused(e) => e,
        Fault::Retry => protocol(op, "a user's sessions kept changing"),
        Fault::Db(e) => db(op, e),
    })
}

/// Records one operation's transaction (retries included) with the `metrics` facade:
/// its duration by operation, and a failure of the database.
pub(super) fn observe<T>(
    inner: &Inner,
    op: &'static str,
    started: std::time::Instant,
    result: &Result<T>,
) {
    #[cfg(feature = "metrics")]
    {
        let store = inner.opts.metrics_label.0.to_string();
        metrics::histogram!("sessiondb_postgres_transaction_seconds", "store" => store, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if matches!(result, Err(Error::Unavailable { .. })) {
            inner.count("sessiondb_postgres_errors_total");
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (inner, op, started, result);
}

/// Runs `$body` (an expression using the transaction `$tx`, of type `Step<T>`) in a
/// transaction of its own: committed if it succeeds, rolled back otherwise, and run
/// again from the start on a deadlock, a serialization failure or [`Fault::Retry`].
macro_rules! transaction {
    ($inner:expr, $op:expr, |$tx:ident| $body:expr) => {{
        use $crate::postgres::ops::Fault;
        let mut tries = 0u32;
        let started = ::std::time::Instant::now();
        let result = loop {
            tries += 1;
            let mut client = $inner.client($op).await?;
            let attempt = ::tokio::time::timeout($inner.patience(), async {
                let $tx = client.transaction().await.map_err(Fault::Db)?;
                let out: ::std::result::Result<_, Fault> = $body;
                let v = out?;
                $tx.commit().await.map_err(Fault::Db)?;
                Ok(v)
            })
            .await;
            let out = match attempt {
                Ok(out) => out,
                Err(_) => {
                    // The server stopped answering: this connection goes, not back to
                    // the pool (a reply may still be on its way).
                    drop(::deadpool_postgres::Object::take(client));
                    break Err($crate::postgres::ops::timed_out(&$inner, $op));
                }
            };
            match out {
                Ok(v) => {
                    // Committed: the subscribers may have events to read.
                    $inner.doorbell.notify_one();
                    break Ok(v);
                }
                Err(f) => match $crate::postgres::ops::settle(&$inner, $op, f, tries) {
                    Some(e) => break Err(e),
                    None => continue,
                },
            }
        };
        $crate::postgres::ops::observe(&$inner, $op, started, &result);
        result
    }};
}
pub(super) use transaction;

/// Runs `$body` (an expression using the pooled connection `$c`, of type
/// `Result<T>`) outside a transaction, within [`Inner::patience`]: a connection that
/// runs out of it is dropped, not returned to the pool.
macro_rules! timed {
    ($inner:expr, $op:expr, |$c:ident| $body:expr) => {{
        let $c = $inner.client($op).await?;
        match ::tokio::time::timeout($inner.patience(), async { $body }).await {
            Ok(out) => out,
            Err(_) => {
                drop(::deadpool_postgres::Object::take($c));
                Err($crate::postgres::ops::timed_out(&$inner, $op))
            }
        }
    }};
}

/// The error for an operation the server did not answer within [`Inner::patience`].
pub(super) fn timed_out(inner: &Inner, op: &str) -> Error {
    Error::Unavailable {
        backend: "postgres",
        context: op.into(),
        reason: format!(
            "no answer within {:?} (twice the response timeout): the server or the \
             network stopped answering",
            inner.patience()
        ),
    }
}

/// A session found by its token and locked, with the database's time.
pub(super) struct Found {
    pub(super) row: Row,
    pub(super) now: i64,
}

/// The fields of a session to admit (a create passes negative times: "now", and
/// `absolute` = -lifetime).
pub(super) struct Admit {
    pub(super) hash: u128,
    pub(super) id: SessionId,
    pub(super) user: Option<String>,
    pub(super) label: Option<String>,
    pub(super) created: i64,
    pub(super) last_seen: i64,
    /// `Some(-1)`: now (a create).
    pub(super) authenticated: Option<i64>,
    pub(super) absolute: i64,
    pub(super) idle_ms: i64,
    pub(super) version: i64,
    pub(super) data: SessionData,
    pub(super) factors: Vec<Factor>,
    /// Whether the factors are dated now (a create) rather than as given.
    pub(super) factors_now: bool,
    pub(super) user_agent: Option<String>,
    pub(super) address: Option<std::net::IpAddr>,
    /// When the device was recorded (-1: now).
    pub(super) device_at: i64,
}

async fn query(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Step<Vec<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, p).await?)
}

async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    p: Params<'_>,
) -> Step<Option<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, p).await?)
}

async fn execute(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Step<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, p).await?)
}

/// The event kinds and end reasons as the outbox keeps them (read back by
/// `events.rs`).
pub(super) mod kind {
    pub(crate) const CREATED: &str = "created";
    pub(crate) const ENDED: &str = "ended";
    pub(crate) const REVOKED: &str = "revoked";
    pub(crate) const ROTATED: &str = "rotated";
    pub(crate) const BOUND: &str = "bound";
    pub(crate) const UNBOUND: &str = "unbound";
    pub(crate) const CLEARED: &str = "cleared";
}

impl Inner {
    /// How long one attempt of an operation may take before its connection is given up
    /// (twice the response timeout: a transaction is several statements, each bounded
    /// by the server's `statement_timeout`).
    pub(super) fn patience(&self) -> std::time::Duration {
        self.popts.response_timeout.saturating_mul(2)
    }

    /// Tells the subscribers on every node to look at the outbox (`events.rs`).
    pub(super) async fn ring(&self) -> Result<()> {
        let channel = super::schema::channel(&self.popts.schema);
        timed!(self, "ring", |client| execute(
            &client,
            &self.sql.ring,
            &[&channel]
        )
        .await
        .map(|_| ())
        .map_err(|f| self.fault("ring", f)))
    }

    /// Adds one to the counter `name` (feature `metrics`; nothing otherwise).
    pub(super) fn count(&self, name: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(name, "store" => self.opts.metrics_label.0.to_string()).increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    fn deadline(&self, r: &Row) -> i64 {
        r.deadline(self.lifetimes)
    }

    pub(super) fn session(&self, r: &Row, now: i64) -> Session {
        r.session(now, self.lifetimes, &self.opts.levels)
    }

    async fn now(&self, c: &impl GenericClient) -> Step<i64> {
        let r = query_opt(c, &self.sql.now, &[]).await?;
        r.map(|r| r.get(0))
            .ok_or_else(|| Fault::Refused(protocol("now", "no row")))
    }

    /// The live session `h` answers to, locked: directly, or as a rotated-away token in
    /// its grace period.
    pub(super) async fn resolve(&self, tx: &impl GenericClient, h: u128) -> Step<Option<Found>> {
        let k = key(h);
        let found = match query_opt(tx, &self.sql.lock_hash, &[&k]).await? {
            Some(r) => Some(Row::read(&r)?),
            None => match query_opt(tx, &self.sql.lock_alias, &[&k]).await? {
                Some(r) => Some(Row::read(&r)?),
                None => None,
            },
        };
        Ok(found
            .filter(|(row, now)| self.deadline(row) > *now)
            .map(|(row, now)| Found { row, now }))
    }

    async fn lock_id(&self, tx: &impl GenericClient, id: SessionId) -> Step<Option<Found>> {
        let row = query_opt(tx, &self.sql.lock_id, &[&uuid(id.0)]).await?;
        Ok(match row {
            Some(r) => {
                let (row, now) = Row::read(&r)?;
                (self.deadline(&row) > now).then_some(Found { row, now })
            }
            None => None,
        })
    }

    /// Locks `user`'s row (creating it if missing): returns their not-before time.
    async fn lock_user(&self, tx: &impl GenericClient, user: &str) -> Step<Option<i64>> {
        loop {
            if let Some(r) = query_opt(tx, &self.sql.lock_user, &[&user]).await? {
                return Ok(r.get(0));
            }
            execute(tx, &self.sql.add_user, &[&user]).await?;
        }
    }

    /// Writes the row back (its deadline recomputed).
    pub(super) async fn store(&self, tx: &impl GenericClient, row: &Row) -> Step<()> {
        let d = self.deadline(row);
        let st = tx.prepare_cached(&self.sql.update).await?;
        let n = row.write(d, tx, &st).await?;
        if n != 1 {
            return Err(Fault::Refused(protocol(
                "write",
                "a locked session vanished",
            )));
        }
        Ok(())
    }

    async fn event(
        &self,
        tx: &impl GenericClient,
        kind: &str,
        id: Option<u128>,
        user: Option<&str>,
        reason: Option<&str>,
    ) -> Step<()> {
        let ids: Option<Vec<uuid::Uuid>> = None;
        let n: Option<i64> = None;
        execute(
            tx,
            &self.sql.event,
            &[&kind, &id.map(uuid), &user, &reason, &ids, &n],
        )
        .await?;
        Ok(())
    }

    /// Deletes the rows and reports each as ended for `reason` (`None`: no event).
    async fn drop_rows(
        &self,
        tx: &impl GenericClient,
        rows: &[&Row],
        reason: Option<&str>,
    ) -> Step<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| uuid(r.id)).collect();
        let Some(reason) = reason else {
            execute(tx, &self.sql.delete_many, &[&ids]).await?;
            return Ok(());
        };
        let users: Vec<Option<&str>> = rows.iter().map(|r| r.user.as_deref()).collect();
        // The delete and the events in one round trip.
        futures_util::future::try_join(
            execute(tx, &self.sql.delete_many, &[&ids]),
            execute(tx, &self.sql.events_ended, &[&ids, &users, &reason]),
        )
        .await?;
        Ok(())
    }

    /// The user's sessions, locked, oldest first; and the database's time.
    async fn lock_sessions_of(&self, tx: &impl GenericClient, user: &str) -> Step<(Vec<Row>, i64)> {
        let rows = query(tx, &self.sql.lock_of_user, &[&user]).await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut now = None;
        for r in &rows {
            let (row, t) = Row::read(r)?;
            now = Some(t);
            out.push(row);
        }
        let now = match now {
            Some(t) => t,
            None => self.now(tx).await?,
        };
        out.sort_by_key(|r| (r.created, r.id));
        Ok((out, now))
    }

    /// Makes room for one more session of `user` (not counting session `except`):
    /// false if the policy refuses. The user's row must be locked.
    async fn make_room(
        &self,
        tx: &impl GenericClient,
        user: &str,
        except: Option<u128>,
    ) -> Step<bool> {
        let Some(max) = self.opts.max_sessions_per_user.filter(|&m| m > 0) else {
            return Ok(true);
        };
        let (rows, now) = self.lock_sessions_of(tx, user).await?;
        let live: Vec<&Row> = rows
            .iter()
            .filter(|r| Some(r.id) != except && self.deadline(r) > now)
            .collect();
        if live.len() < max {
            return Ok(true);
        }
        if self.opts.limit_policy == LimitPolicy::Refuse {
            return Ok(false);
        }
        self.drop_rows(tx, &live[..live.len() - max + 1], Some("limit"))
            .await?;
        Ok(true)
    }

    /// Makes room for one more session under the budget's count: ends the least
    /// recently seen anonymous sessions under `EvictAnonymous`, or refuses.
    async fn within_budget(&self, tx: &impl GenericClient, now: i64) -> Step<()> {
        let Some(b) = self.opts.budget else {
            return Ok(());
        };
        let Some(max) = b.max_sessions else {
            return Ok(());
        };
        loop {
            let live: i64 = query_opt(tx, &self.sql.live_count, &[&now])
                .await?
                .map_or(0, |r| r.get(0));
            if (live as u64) < max {
                return Ok(());
            }
            let full = || {
                Fault::Refused(Error::Full {
                    sessions: live as u64,
                    max_sessions: Some(max),
                    bytes: 0,
                    max_bytes: None,
                })
            };
            if b.policy != BudgetPolicy::EvictAnonymous {
                return Err(full());
            }
            let Some(r) = query_opt(tx, &self.sql.oldest_anonymous, &[&now]).await? else {
                return Err(full());
            };
            let (row, _) = Row::read(&r)?;
            self.drop_rows(tx, &[&row], Some("evicted")).await?;
        }
    }

    // ------------------------------------------------------------------------------
    // Creating and reading

    /// Creates or imports a session: `None` if it has ended already (its deadline
    /// passed, or it authenticated before its user's not-before time).
    pub(super) async fn admit(&self, a: &Admit) -> Result<Option<Session>> {
        transaction!(self, "create", |tx| self.admit_in(&tx, a).await)
    }

    async fn admit_in(&self, tx: &impl GenericClient, a: &Admit) -> Step<Option<Session>> {
        let not_before = match &a.user {
            Some(u) => self.lock_user(tx, u).await?,
            None => None,
        };
        if self.opts.budget.is_some_and(|b| b.max_sessions.is_some()) {
            let name = format!("sessiondb:budget:{}", self.popts.schema);
            execute(tx, &self.sql.budget_lock, &[&name]).await?;
        }
        let check = query_opt(tx, &self.sql.admit_check, &[&key(a.hash), &uuid(a.id.0)])
            .await?
            .ok_or_else(|| Fault::Refused(protocol("create", "no row")))?;
        let (now, token_taken, id_taken): (i64, bool, bool) =
            (check.get(0), check.get(1), check.get(2));
        if token_taken {
            return Err(Error::Exists { what: "token" }.into());
        }
        if id_taken {
            return Err(Error::Exists { what: "session id" }.into());
        }
        let at = |t: i64| if t < 0 { now } else { t };
        let user = a.user.clone();
        let mut row = Row {
            id: a.id.0,
            hash: a.hash,
            user: user.clone(),
            label: a.label.clone(),
            created: at(a.created),
            last_seen: at(a.last_seen),
            authenticated: None,
            absolute: if a.absolute < 0 {
                now.saturating_sub(a.absolute)
            } else {
                a.absolute
            },
            idle: a.idle_ms,
            version: a.version,
            data: a.data.clone(),
            factors: Vec::new(),
            user_agent: a.user_agent.clone(),
            address: a.address,
            device_at: None,
        };
        if user.is_some() {
            row.authenticated = a.authenticated.map(at);
            row.factors = if a.factors_now {
                a.factors
                    .iter()
                    .map(|f| Factor::new(f.method(), f.level(), time(now)))
                    .collect()
            } else {
                a.factors.clone()
            };
        }
        if row.user_agent.is_some() || row.address.is_some() {
            row.device_at = Some(at(a.device_at));
        }
        if let (true, Some(nb)) = (user.is_some(), not_before) {
            match a.authenticated {
                // A login after the revocation, on a clock set back past it.
                Some(t) if t < 0 => {
                    if row.authenticated.is_some_and(|a| a < nb) {
                        row.authenticated = Some(nb);
                    }
                }
                // An import authenticated before the user's not-before time: revoked.
                _ => {
                    if row.authenticated.is_none_or(|a| a < nb) {
                        return Ok(None);
                    }
                }
            }
        }
        if self.deadline(&row) <= now {
            return Ok(None);
        }
        if let Some(u) = &user
            && !self.make_room(tx, u, None).await?
        {
            return Err(self.limit(u).into());
        }
        self.within_budget(tx, now).await?;
        let d = self.deadline(&row);
        let st = tx.prepare_cached(&self.sql.insert).await?;
        // The insert and its event in one round trip (the client pipelines them).
        let (inserted, told) = futures_util::future::join(
            row.write(d, tx, &st),
            self.event(tx, kind::CREATED, Some(row.id), user.as_deref(), None),
        )
        .await;
        if let Err(e) = inserted {
            let constraint = e.as_db_error().and_then(|d| d.constraint());
            return Err(match constraint {
                Some(c) if c.ends_with("_pkey") => Error::Exists { what: "session id" }.into(),
                Some(c) if c.ends_with("_hash_key") => Error::Exists { what: "token" }.into(),
                _ => Fault::Db(e),
            });
        }
        told?;
        Ok(Some(self.session(&row, now)))
    }

    /// The live session `h` answers to; `touch` (ms, negative: never) is how long
    /// after its last activity a read counts as activity again.
    pub(super) async fn read(&self, h: u128, touch: i64) -> Result<Option<Session>> {
        let k = key(h);
        let found = timed!(self, "get", |client| query_opt(
            &client,
            &self.sql.read,
            &[&k]
        )
        .await
        .map_err(|f| self.fault("get", f)))?;
        let Some(r) = found else {
            return Ok(None);
        };
        let (row, now) = Row::read(&r)?;
        if self.deadline(&row) <= now {
            return Ok(None);
        }
        let due = touch >= 0
            && (now.saturating_sub(row.last_seen) >= touch
                || (row.on_trial(self.lifetimes) && now > row.last_seen));
        if !due {
            return Ok(Some(self.session(&row, now)));
        }
        transaction!(self, "get", |tx| async {
            let Some(mut f) = self.resolve(&tx, h).await? else {
                return Ok(None);
            };
            f.row.last_seen = f.now;
            self.store(&tx, &f.row).await?;
            Ok(Some(self.session(&f.row, f.now)))
        }
        .await)
    }

    pub(super) async fn get_by_id(&self, id: SessionId) -> Result<Option<Session>> {
        let id = uuid(id.0);
        let r = timed!(self, "get_by_id", |client| query_opt(
            &client,
            &self.sql.read_id,
            &[&id]
        )
        .await
        .map_err(|f| self.fault("get_by_id", f)))?;
        Ok(match r {
            Some(r) => {
                let (row, now) = Row::read(&r)?;
                (self.deadline(&row) > now).then(|| self.session(&row, now))
            }
            None => None,
        })
    }

    // ------------------------------------------------------------------------------
    // Changing one session

    /// Runs `change` on the live session `h` answers to, locked, and writes it back:
    /// [`Error::Ended`] if there is none.
    pub(super) async fn change<T>(
        &self,
        op: &'static str,
        h: u128,
        change: impl Fn(&mut Found) -> Result<T>,
    ) -> Result<T> {
        transaction!(self, op, |tx| async {
            let Some(mut f) = self.resolve(&tx, h).await? else {
                return Err(Error::Ended.into());
            };
            let out = change(&mut f)?;
            self.store(&tx, &f.row).await?;
            Ok(out)
        }
        .await)
    }

    pub(super) async fn put(&self, h: u128, k: &str, value: &[u8]) -> Result<u64> {
        let max = self.opts.limits.max_data_bytes;
        self.change("put", h, |f| {
            let mut data = f.row.data.clone();
            data.insert_raw(k, value)?;
            if data.encoded_len() > max {
                return Err(Error::TooLarge {
                    what: "session data",
                    len: data.encoded_len(),
                    max,
                });
            }
            let v = next_version(f.row.version as u64)?;
            f.row.data = data;
            f.row.version = v as i64;
            Ok(v)
        })
        .await
    }

    pub(super) async fn remove(&self, h: u128, k: &str) -> Result<u64> {
        self.change("remove", h, |f| {
            if !f.row.data.contains_key(k) {
                return Ok(f.row.version as u64);
            }
            let v = next_version(f.row.version as u64)?;
            f.row.data.remove(k);
            f.row.version = v as i64;
            Ok(v)
        })
        .await
    }

    pub(super) async fn save(&self, h: u128, expected: u64, data: &SessionData) -> Result<u64> {
        self.change("save", h, |f| {
            let actual = f.row.version as u64;
            if actual != expected {
                return Err(Error::VersionConflict { expected, actual });
            }
            let v = next_version(actual)?;
            f.row.data = data.clone();
            f.row.version = v as i64;
            Ok(v)
        })
        .await
    }

    /// Sets the absolute deadline to `at` (ms); a moment at or before now ends the
    /// session as expired. Returns the new deadline.
    pub(super) async fn set_expiry(&self, h: u128, at: i64) -> Result<i64> {
        transaction!(self, "set_expiry", |tx| async {
            let Some(mut f) = self.resolve(&tx, h).await? else {
                return Err(Error::Ended.into());
            };
            if at <= f.now {
                self.drop_rows(&tx, &[&f.row], Some("expired")).await?;
                return Ok(at);
            }
            f.row.absolute = at;
            f.row.last_seen = f.now;
            self.store(&tx, &f.row).await?;
            Ok(self.deadline(&f.row))
        }
        .await)
    }

    /// The extend of [`crate::Store::extend`]: never shortens. Returns the deadline.
    pub(super) async fn extend(&self, h: u128, by: i64) -> Result<i64> {
        let lifetimes = self.lifetimes;
        self.change("extend", h, |f| {
            f.row.absolute = f.row.absolute.max(f.now.saturating_add(by));
            f.row.last_seen = f.now;
            Ok(f.row.deadline(lifetimes))
        })
        .await
    }

    // ------------------------------------------------------------------------------
    // Users

    /// Binds `user` (a login without rotation), with how they signed in.
    pub(super) async fn bind(&self, h: u128, user: &str, how: Option<&SignIn>) -> Result<()> {
        transaction!(self, "bind_user", |tx| async {
            let not_before = self.lock_user(&tx, user).await?;
            let Some(mut f) = self.resolve(&tx, h).await? else {
                return Err(Error::Ended.into());
            };
            let old = self.bind_in(&tx, &mut f, user, not_before, how).await?;
            self.store(&tx, &f.row).await?;
            self.bound_events(&tx, &f, old, user).await
        }
        .await)
    }

    /// The binding itself (the user's row locked, the session found): checks the
    /// version and the user's cap, sets the user and how they signed in. Returns the
    /// user bound before.
    async fn bind_in(
        &self,
        tx: &impl GenericClient,
        f: &mut Found,
        user: &str,
        not_before: Option<i64>,
        how: Option<&SignIn>,
    ) -> Step<Option<String>> {
        let v = next_version(f.row.version as u64)?;
        if f.row.user.as_deref() != Some(user) && !self.make_room(tx, user, Some(f.row.id)).await? {
            return Err(self.limit(user).into());
        }
        let old = f.row.user.take();
        // Never dated before the user's not-before time (a clock set back past it).
        let at = f.now.max(not_before.unwrap_or(0));
        f.row.user = Some(user.to_owned());
        f.row.authenticated = Some(at);
        f.row.last_seen = f.now;
        f.row.version = v as i64;
        f.row.factors = match how {
            Some(how) => how.apply(&[], time(f.now))?,
            None => Vec::new(),
        };
        Ok(old)
    }

    async fn bound_events(
        &self,
        tx: &impl GenericClient,
        f: &Found,
        old: Option<String>,
        user: &str,
    ) -> Step<()> {
        if let Some(old) = old.filter(|o| o != user) {
            self.event(tx, kind::UNBOUND, Some(f.row.id), Some(&old), None)
                .await?;
        }
        self.event(tx, kind::BOUND, Some(f.row.id), Some(user), None)
            .await
    }

    /// The session `old` may be rotated from to `new`, locked; or the refusal.
    async fn rotatable(&self, tx: &impl GenericClient, old: u128, new: u128) -> Step<Found> {
        let k = key(old);
        let Some(r) = query_opt(tx, &self.sql.lock_hash, &[&k]).await? else {
            // An old token in its grace period may not mint a new one.
            if self.resolve(tx, old).await?.is_some() {
                return Err(Error::TokenRetired.into());
            }
            return Err(Error::Ended.into());
        };
        let (row, now) = Row::read(&r)?;
        if self.deadline(&row) <= now {
            return Err(Error::Ended.into());
        }
        let taken: bool = query_opt(tx, &self.sql.token_taken, &[&key(new)])
            .await?
            .is_some_and(|r| r.get(0));
        if old == new || taken {
            return Err(Error::Exists { what: "token" }.into());
        }
        Ok(Found { row, now })
    }

    /// Moves the session to token hash `new` and writes it; the old token resolves for
    /// `grace` ms (not past the session's end).
    async fn rotate_in(
        &self,
        tx: &impl GenericClient,
        f: &mut Found,
        new: u128,
        grace: i64,
    ) -> Step<()> {
        let old = f.row.hash;
        f.row.hash = new;
        f.row.last_seen = f.now;
        let grace = grace.min(self.deadline(&f.row) - f.now);
        let alias = async {
            if grace > 0 {
                let until = f.now + grace;
                execute(
                    tx,
                    &self.sql.put_alias,
                    &[&key(old), &uuid(f.row.id), &until],
                )
                .await?;
            }
            Ok(())
        };
        // The three in one round trip (the client pipelines them, in this order).
        futures_util::future::try_join3(
            self.store(tx, &f.row),
            alias,
            self.event(tx, kind::ROTATED, Some(f.row.id), None, None),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn rotate(&self, old: u128, new: u128, grace: i64) -> Result<()> {
        transaction!(self, "rotate", |tx| async {
            let mut f = self.rotatable(&tx, old, new).await?;
            self.rotate_in(&tx, &mut f, new, grace).await
        }
        .await)
    }

    /// Rotates and binds in one transaction; the cap is checked first, so a refused
    /// login changes nothing.
    pub(super) async fn login(
        &self,
        old: u128,
        new: u128,
        grace: i64,
        user: &str,
        how: Option<&SignIn>,
    ) -> Result<()> {
        transaction!(self, "login", |tx| async {
            let not_before = self.lock_user(&tx, user).await?;
            let mut f = self.rotatable(&tx, old, new).await?;
            let old = self.bind_in(&tx, &mut f, user, not_before, how).await?;
            self.rotate_in(&tx, &mut f, new, grace).await?;
            self.bound_events(&tx, &f, old, user).await
        }
        .await)
    }

    /// Adds `how`'s factors (dated now), rotating first if `new` is given.
    pub(super) async fn step_up(
        &self,
        old: u128,
        new: Option<u128>,
        grace: i64,
        how: &SignIn,
    ) -> Result<()> {
        transaction!(self, "step_up", |tx| async {
            let mut f = match new {
                Some(new) => self.rotatable(&tx, old, new).await?,
                None => match self.resolve(&tx, old).await? {
                    Some(f) => f,
                    None => return Err(Error::Ended.into()),
                },
            };
            if f.row.user.is_none() {
                return Err(Error::NotSignedIn.into());
            }
            f.row.factors = how.apply(&f.row.factors, time(f.now))?;
            match new {
                Some(new) => self.rotate_in(&tx, &mut f, new, grace).await,
                None => self.store(&tx, &f.row).await,
            }
        }
        .await)
    }

    pub(super) async fn unbind(&self, h: u128) -> Result<Option<String>> {
        transaction!(self, "unbind_user", |tx| async {
            let Some(mut f) = self.resolve(&tx, h).await? else {
                return Err(Error::Ended.into());
            };
            let Some(user) = f.row.user.clone() else {
                return Ok(None);
            };
            f.row.version = next_version(f.row.version as u64)? as i64;
            f.row.user = None;
            f.row.authenticated = None;
            f.row.factors = Vec::new();
            self.store(&tx, &f.row).await?;
            self.event(&tx, kind::UNBOUND, Some(f.row.id), Some(&user), None)
                .await?;
            Ok(Some(user))
        }
        .await)
    }

    /// Ends `user`'s sessions authenticated before `before` (all when `None`) that
    /// meet `criterion` (all when `None`): those past their deadline as expired, the
    /// rest as revoked, reported together. With `before`, first raises the user's
    /// not-before time to it (at most now).
    pub(super) async fn revoke(
        &self,
        user: &str,
        before: Option<i64>,
        criterion: Option<&Criterion>,
    ) -> Result<usize> {
        transaction!(self, "revoke_user", |tx| async {
            let before = match before {
                Some(at) => {
                    let now = self.now(&tx).await?;
                    let at = at.min(now);
                    execute(&tx, &self.sql.raise_not_before, &[&user, &at]).await?;
                    Some(at)
                }
                None => None,
            };
            // Serialises with the user's creates and logins (no row: no session of
            // theirs was ever created through a lock, so none can be racing).
            query_opt(&tx, &self.sql.lock_user, &[&user]).await?;
            let (rows, now) = self.lock_sessions_of(&tx, user).await?;
            if criterion.is_some() && rows.is_empty() {
                // As the embedded store: revoking by criterion a user with no sessions
                // ends nothing and reports nothing (no empty `UserRevoked`).
                return Ok(0);
            }
            let levels = &self.opts.levels;
            let (mut expired, mut revoked) = (Vec::new(), Vec::new());
            for r in &rows {
                if self.deadline(r) <= now {
                    expired.push(r);
                } else if before.is_none_or(|at| r.authenticated.is_none_or(|a| a < at))
                    && criterion.is_none_or(|c| c.matches(&r.factors, time(now), levels))
                {
                    revoked.push(r);
                }
            }
            self.drop_rows(&tx, &expired, Some("expired")).await?;
            self.drop_rows(&tx, &revoked, Some("revoked")).await?;
            let ids: Vec<uuid::Uuid> = revoked.iter().map(|r| uuid(r.id)).collect();
            let n: Option<i64> = None;
            let none: Option<uuid::Uuid> = None;
            let reason: Option<&str> = None;
            execute(
                &tx,
                &self.sql.event,
                &[&kind::REVOKED, &none, &user, &reason, &Some(ids), &n],
            )
            .await?;
            Ok(revoked.len())
        }
        .await)
    }

    /// Ends every other session of the user of the session `h` answers to (or, with
    /// `by_id`, of session `id`); keeps that one.
    pub(super) async fn revoke_others(&self, h: Option<u128>, id: SessionId) -> Result<usize> {
        // The user first, unlocked: their row is locked before any session (the lock
        // order); if the session changed user meanwhile, start over.
        let peeked = match h {
            Some(h) => self.read(h, -1).await?,
            None => self.get_by_id(id).await?,
        };
        let Some(peeked) = peeked else {
            return Err(Error::Ended);
        };
        let Some(user) = peeked.user().map(|u| u.as_str().to_owned()) else {
            return Ok(0);
        };
        transaction!(self, "revoke_others", |tx| async {
            self.lock_user(&tx, &user).await?;
            let f = match h {
                Some(h) => self.resolve(&tx, h).await?,
                None => self.lock_id(&tx, id).await?,
            };
            let Some(f) = f else {
                return Err(Error::Ended.into());
            };
            if f.row.user.as_deref() != Some(user.as_str()) {
                return Err(Fault::Retry);
            }
            let (rows, now) = self.lock_sessions_of(&tx, &user).await?;
            let others = rows.iter().filter(|r| r.id != f.row.id);
            let (live, expired): (Vec<&Row>, Vec<&Row>) =
                others.partition(|r| self.deadline(r) > now);
            self.drop_rows(&tx, &expired, Some("expired")).await?;
            self.drop_rows(&tx, &live, Some("revoked_others")).await?;
            Ok(live.len())
        }
        .await)
    }

    // ------------------------------------------------------------------------------
    // Ending

    /// Ends the session `h` answers to (or, with `h` `None`, session `id`).
    pub(super) async fn end(&self, h: Option<u128>, id: SessionId) -> Result<bool> {
        transaction!(self, "end", |tx| async {
            let f = match h {
                Some(h) => self.resolve(&tx, h).await?,
                None => self.lock_id(&tx, id).await?,
            };
            let Some(f) = f else {
                return Ok(false);
            };
            self.drop_rows(&tx, &[&f.row], Some("ended")).await?;
            Ok(true)
        }
        .await)
    }

    // ------------------------------------------------------------------------------
    // Helpers for the public methods

    pub(super) fn limit(&self, user: &str) -> Error {
        Error::UserSessionLimit {
            user: user.to_owned(),
            max: self.opts.max_sessions_per_user.unwrap_or(0),
        }
    }

    pub(super) fn fault(&self, op: &str, f: Fault) -> Error {
        match f {
            Fault::Refused(e) => e,
            Fault::Db(e) => db(op, e),
            Fault::Retry => protocol(op, "retry outside a transaction"),
        }
    }

    /// Runs a read outside any transaction.
    pub(super) async fn rows(
        &self,
        op: &'static str,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>> {
        timed!(self, op, |client| query(&client, sql, p)
            .await
            .map_err(|f| self.fault(op, f)))
    }

    /// Runs one statement in a transaction of its own, returning its rows.
    pub(super) async fn write_rows(
        &self,
        op: &'static str,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>> {
        transaction!(self, op, |tx| query(&tx, sql, p).await)
    }

    pub(super) async fn now_ms(&self) -> Result<i64> {
        timed!(self, "now", |client| self
            .now(&client)
            .await
            .map_err(|f| self.fault("now", f)))
    }
}
