//! Reads without `sessions.lua`: `get` and `peek` as a plain `GET`, `sessions_of` as
//! one call of the small read-only `read.lua`, both checked against the server's clock.
//!
//! A read needs no atomicity beyond reading one key, and every script call pays for the
//! script itself (its chunk runs from the top, building its functions, on every call).
//! A session is one string (`packed.rs`), and a rotated-away token's grace alias sits
//! at the same key, so a read is one `GET` and one value to decode. It is returned only
//! if its deadline (computed here exactly as the script's `deadline()` does) is
//! certainly after the server's clock at the moment of the read:
//!
//! - About once a second a read takes a sample of the server's clock. On one server it
//!   sends `TIME` after the `GET` in one pipeline; Redis runs a connection's commands
//!   in order, so the key was read at or before the instant `TIME` reports, and that
//!   read's check is the script's own. On a Cluster, `TIME` has no key to route it by,
//!   so it runs in a one-line script keyed by the registry (on the node that holds
//!   every key of the store), before the `GET`.
//! - Every other read checks against the latest the server's clock can read, from the
//!   last sample and this process's monotonic clock: the reply to `TIME` left the
//!   server after the request was sent, so at any later local instant the server's
//!   clock reads at most `TIME` plus the local time elapsed since the request was sent
//!   (plus 1,000 ppm for the two clocks' rates, far above what NTP allows). A session
//!   whose deadline is not after that bound, or a read that may be due as activity,
//!   goes to the script, which decides on the server's clock. So a session is never
//!   returned past its deadline unless the server's clock is stepped forward between
//!   two samples (on a Cluster: or a failover moves the store to a primary whose clock
//!   is ahead of the old one's), and then by at most the step, for at most a second; a
//!   step back costs only scripts. A step of this process's clock changes nothing (the
//!   monotonic clock does not step).
//!
//! What still goes to the script: a read that counts as activity and may be due (the
//! touch is throttled to once per [`crate::Options::touch_interval`], and a session on
//! trial is promoted by it), a token found only through its rotation alias, and a
//! session still stored as a hash by an earlier version (the script reads it; its next
//! write converts it). Revocation stays immediate: ending a session deletes its key in
//! the same script step, so no read finds it afterwards.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use redis::Value;

use parking_lot::Mutex;

use super::packed::{self, Packed};
use super::{Conn, Inner, deadline_of, parse_hex, protocol, unavailable};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::data::SessionData;
use crate::model::details::{Details, factors_of};
use crate::model::device::DeviceInfo;
use crate::model::session::{Session, UserId};
use crate::model::signin::{Factor, LevelLifetimes, factors_from_text, factors_to_text};
use crate::model::token::SessionId;

/// What a scriptless read found.
pub(super) enum Direct {
    /// The session, live when it was read.
    Live(Session),
    /// No live session answers to the token.
    Ended,
    /// The script must answer: the read is due to count as activity, or the token is
    /// a rotated-away one in its grace period.
    Script,
}

/// A session's fields as the script stores them (the key layout in `sessions.lua`),
/// borrowed from its key's value (`packed.rs`) or from a script's image (`reply.rs`):
/// a read copies each string once, into the [`Session`] it builds.
#[derive(Debug)]
pub(super) struct Stored<'a> {
    pub(super) id: u128,
    pub(super) user: Option<&'a str>,
    pub(super) label: Option<&'a str>,
    pub(super) created: u64,
    pub(super) last_seen: u64,
    pub(super) authenticated: Option<u64>,
    pub(super) absolute: u64,
    /// Ms; 0: no idle timeout.
    pub(super) idle: u64,
    pub(super) version: u64,
    /// The data entries in the order stored (a later repeat of a key wins).
    pub(super) data: Vec<(&'a str, &'a [u8])>,
    /// Its factors as the script keeps them: "method level at" joined by `;`.
    pub(super) factors: Option<&'a str>,
    pub(super) user_agent: Option<&'a str>,
    /// The address as text.
    pub(super) address: Option<&'a str>,
    /// When the device was recorded.
    pub(super) device_at: Option<u64>,
}

/// A session's factors from the script's text of them, checked.
pub(super) fn factors_of_text(text: &str) -> Result<Vec<Factor>> {
    factors_from_text(text)
        .ok_or_else(|| protocol("read", format!("a stored session's factors: {text:?}")))
}

/// The script's text of a list of factors.
pub(super) fn factors_text(factors: &[Factor]) -> String {
    factors_to_text(factors)
}

/// A number the script wrote (`%d`), read without copying the reply.
fn number(v: &Value, what: &str) -> Result<u64> {
    let bytes = match v {
        Value::BulkString(b) => b.as_slice(),
        Value::SimpleString(s) => s.as_bytes(),
        other => return Err(protocol("read", format!("{what}: {other:?}"))),
    };
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            protocol(
                "read",
                format!("{what}: {:?}", String::from_utf8_lossy(bytes)),
            )
        })
}

/// A session id as the script keeps it: 32 hex digits.
fn hex_id(v: &Value) -> Result<u128> {
    match v {
        Value::BulkString(b) => parse_hex(b)
            .ok_or_else(|| protocol("read", format!("id {:?}", String::from_utf8_lossy(b)))),
        other => Err(protocol("read", format!("id: {other:?}"))),
    }
}

/// The server's clock in microseconds from a `TIME` reply.
fn server_us(v: &Value) -> Result<u64> {
    let Value::Array(parts) = v else {
        return Err(protocol("read", format!("TIME: {v:?}")));
    };
    let [secs, micros, ..] = parts.as_slice() else {
        return Err(protocol("read", "TIME: fewer than two fields"));
    };
    time_us(secs, micros)
}

/// Microseconds from `TIME`'s two fields, seconds and microseconds.
fn time_us(secs: &Value, micros: &Value) -> Result<u64> {
    let secs = number(secs, "TIME")?;
    let micros = number(micros, "TIME")?;
    Ok(secs.saturating_mul(1_000_000).saturating_add(micros))
}

/// Milliseconds as the script computes them (`NOW`) from microseconds.
fn ms_of(us: u64) -> u64 {
    us / 1000
}

/// One reading of the server's clock (`TIME`), with when it was asked for and answered
/// on this process's monotonic clock.
#[derive(Clone, Copy, Debug)]
struct Sample {
    server_us: u64,
    sent: Instant,
    received: Instant,
}

impl Sample {
    /// How long a sample serves reads before one of them reads `TIME` again.
    const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

    /// The latest the server's clock can read, in ms, at local instant `at` (see the
    /// module doc): `TIME` was read after the request left at `sent`.
    fn latest_ms(&self, at: Instant) -> u64 {
        let since =
            u64::try_from(at.saturating_duration_since(self.sent).as_micros()).unwrap_or(u64::MAX);
        // The clocks' rates may differ: allow 1,000 ppm, and one microsecond more.
        let slack = since / 1000 + 1;
        ms_of(self.server_us.saturating_add(since).saturating_add(slack))
    }
}

/// The last reading of the server's clock a read took, shared by a store's reads.
#[derive(Default)]
pub(super) struct ServerClock(Mutex<Option<Sample>>);

impl ServerClock {
    /// The last sample, if it was answered less than [`Sample::FRESH`] before `now`.
    fn fresh(&self, now: Instant) -> Option<Sample> {
        let s = (*self.0.lock())?;
        (now.saturating_duration_since(s.received) < Sample::FRESH).then_some(s)
    }

    fn record(&self, s: Sample) {
        let mut last = self.0.lock();
        // Keep the later sample when reads race.
        if last.is_none_or(|l| l.received < s.received) {
            *last = Some(s);
        }
    }
}

/// Whether a command failed because the key holds another type: a session still
/// stored as a hash by an earlier version.
fn wrong_type(e: &redis::RedisError) -> bool {
    // A pipeline's error carries each failed command's (its `code()` is `None`).
    e.clone()
        .into_server_errors()
        .is_some_and(|errs| errs.iter().any(|(_, e)| e.code() == "WRONGTYPE"))
}

impl Stored<'_> {
    /// On trial: anonymous, version 0, not seen since its creation (the script's
    /// `on_trial`).
    fn on_trial(&self, trial_ms: u64) -> bool {
        trial_ms > 0 && self.user.is_none() && self.version == 0 && self.last_seen == self.created
    }

    /// When the session ends (the script's `deadline`).
    fn deadline(&self, auth_ms: u64, trial_ms: u64) -> u64 {
        let mut d = self.absolute;
        if self.on_trial(trial_ms) {
            d = d.min(self.created.saturating_add(trial_ms));
        }
        if self.idle > 0 {
            d = d.min(self.last_seen.saturating_add(self.idle));
        }
        if let (true, Some(a)) = (auth_ms > 0, self.authenticated) {
            d = d.min(a.saturating_add(auth_ms));
        }
        d
    }

    /// Whether a read at `now` with throttle `touch` (ms; negative: not activity)
    /// counts as activity (the script's `get`).
    fn due(&self, now: u64, touch: i64, trial_ms: u64) -> bool {
        if touch < 0 {
            return false;
        }
        let since = i128::from(now) - i128::from(self.last_seen);
        since >= i128::from(touch) || (self.on_trial(trial_ms) && since > 0)
    }

    /// Its label, factors and device.
    fn details(&self) -> Result<Option<Arc<Details>>> {
        let factors = match self.factors {
            Some(text) if self.user.is_some() => factors_of_text(text)?,
            Some(_) => return Err(protocol("read", "factors on a session without a user")),
            None => Vec::new(),
        };
        let address = match self.address {
            Some(a) => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| protocol("read", format!("a stored address: {a:?}")))?,
            ),
            None => None,
        };
        let device = match (
            self.user_agent.is_some() || address.is_some(),
            self.device_at,
        ) {
            (false, _) => None,
            (true, Some(at)) => Some(DeviceInfo {
                user_agent: self.user_agent.map(Arc::from),
                address,
                at: Timestamp(at),
            }),
            (true, None) => return Err(protocol("read", "a stored device without its time")),
        };
        Ok(Details {
            label: self.label.map(Arc::from),
            factors: factors.into(),
            device: device.map(Box::new),
        }
        .shared())
    }

    /// The session as of `now`, ending at `deadline` (as the script keeps it: see
    /// [`deadline_of`]), its level under `levels`.
    pub(super) fn into_session(
        self,
        deadline: u64,
        now: u64,
        levels: &LevelLifetimes,
    ) -> Result<Session> {
        let details = self.details()?;
        let now = Timestamp(now);
        let assessed = levels.assess(factors_of(&details), now);
        let data = SessionData::from_entries(self.data)
            .ok_or_else(|| protocol("read", "session data that does not encode"))?;
        Ok(Session::from_parts(
            SessionId(self.id),
            self.user.map(UserId::trusted),
            details,
            assessed,
            now,
            Timestamp(self.created),
            Timestamp(self.last_seen),
            self.authenticated.map(Timestamp),
            deadline_of(deadline),
            deadline_of(self.absolute),
            (self.idle != 0).then(|| Duration::from_millis(self.idle)),
            self.version,
            data,
        ))
    }
}

impl Inner {
    fn auth_ms(&self) -> u64 {
        self.opts.auth_lifetime.map_or(0, super::ms)
    }

    fn trial_ms(&self) -> u64 {
        self.opts.trial_lifetime.map_or(0, super::ms)
    }

    /// Reads the server's clock with `TIME` in a one-line script keyed by the registry,
    /// so that on a Cluster it runs on the node that holds every key of the store.
    async fn sample_clock(&self) -> Result<Sample> {
        let script = redis::Script::new("return redis.call('TIME')");
        let sent = Instant::now();
        let reply = self
            .conn
            .invoke(&script.key(&self.registry))
            .await
            .map_err(|e| unavailable("get", &e))?;
        let sample = Sample {
            server_us: server_us(&reply)?,
            sent,
            received: Instant::now(),
        };
        self.clock.record(sample);
        Ok(sample)
    }

    /// Reads the session at token hash `h` without the script (see the module doc).
    /// `touch`: the throttle in ms, negative for a read that is not activity.
    pub(super) async fn read_direct(&self, h: &str, touch: i64) -> Result<Direct> {
        let prefix = &self.ropts.prefix;
        let mut key = String::with_capacity(prefix.len() + 3 + h.len());
        key.push_str(prefix);
        key.push_str(":s:");
        key.push_str(h);
        let sent = Instant::now();
        // `exact`: checked against `TIME` itself, so a deadline at or before it is
        // certainly past; against a bound, the script decides that.
        let (value, now, exact) = match (self.clock.fresh(sent), &self.conn) {
            (None, Conn::Single(conn)) => {
                let (value, time): (Value, Value) = match redis::pipe()
                    .cmd("GET")
                    .arg(key)
                    .cmd("TIME")
                    .query_async(&mut conn.clone())
                    .await
                {
                    Err(e) if wrong_type(&e) => return Ok(Direct::Script),
                    Err(e) => return Err(unavailable("get", &e)),
                    Ok(r) => r,
                };
                let received = Instant::now();
                let server_us = server_us(&time)?;
                self.clock.record(Sample {
                    server_us,
                    sent,
                    received,
                });
                (value, ms_of(server_us), true)
            }
            (fresh, _) => {
                let sample = match fresh {
                    Some(sample) => sample,
                    // A Cluster's `TIME` cannot share a pipeline with the `GET` (it has
                    // no key to route it by): it is read on its own, first.
                    None => self.sample_clock().await?,
                };
                let value = match self.conn.query(redis::cmd("GET").arg(key)).await {
                    Err(e) if wrong_type(&e) => return Ok(Direct::Script),
                    Err(e) => return Err(unavailable("get", &e)),
                    Ok(v) => v,
                };
                (value, sample.latest_ms(Instant::now()), false)
            }
        };
        let value = match value {
            Value::BulkString(b) => b,
            Value::Nil => return Ok(Direct::Ended),
            other => return Err(protocol("get", format!("GET: {other:?}"))),
        };
        let s = match packed::unpack(&value)? {
            Packed::Session(s) => s,
            // A rotated-away token in its grace period: the script resolves it.
            Packed::Alias => return Ok(Direct::Script),
        };
        let (auth, trial) = (self.auth_ms(), self.trial_ms());
        let deadline = s.deadline(auth, trial);
        if deadline <= now {
            return Ok(if exact { Direct::Ended } else { Direct::Script });
        }
        // `due` only grows with the clock: not due at the latest the clock can read is
        // not due at the read.
        if s.due(now, touch, trial) {
            return Ok(Direct::Script);
        }
        Ok(Direct::Live(s.into_session(
            deadline,
            now,
            &self.opts.levels,
        )?))
    }

    /// The live sessions of `user`, oldest first, from one call of the read-only
    /// `read.lua`: the user's index, each session, then `TIME`. `None` when
    /// `sessions.lua` must answer: the index holds an entry that is not a live session
    /// of the user (ended, gone behind the store's back, moved to another user) —
    /// that script prunes it as it reads.
    pub(super) async fn sessions_of_direct(&self, user: &str) -> Result<Option<Vec<Session>>> {
        let p = &self.ropts.prefix;
        let mut inv = self.read_script.key(format!("{p}:u:{user}"));
        inv.arg(p);
        let reply = self
            .conn
            .invoke(&inv)
            .await
            .map_err(|e| unavailable("sessions_of", &e))?;
        let Value::Array(items) = reply else {
            return Err(protocol("sessions_of", format!("{reply:?}")));
        };
        let mut items = items.into_iter();
        let (Some(secs), Some(micros)) = (items.next(), items.next()) else {
            return Err(protocol("sessions_of", "no TIME in the reply"));
        };
        let now = ms_of(time_us(&secs, &micros)?);
        let (auth, trial) = (self.auth_ms(), self.trial_ms());
        let mut live = Vec::with_capacity(items.len() / 2);
        while let (Some(id), Some(stored)) = (items.next(), items.next()) {
            let id = hex_id(&id)?;
            let stored = match stored {
                Value::BulkString(b) => b,
                // Gone, or a hash of the earlier layout.
                Value::Nil => return Ok(None),
                other => return Err(protocol("sessions_of", format!("{other:?}"))),
            };
            let s = match packed::unpack(&stored)? {
                Packed::Session(s) => s,
                Packed::Alias => return Ok(None),
            };
            let deadline = s.deadline(auth, trial);
            // What the script's live_of prunes: a pointer to another session, a
            // session of another user, one past its deadline.
            if id != s.id || s.user != Some(user) || deadline <= now {
                return Ok(None);
            }
            live.push((
                s.created,
                s.id,
                s.into_session(deadline, now, &self.opts.levels)?,
            ));
        }
        live.sort_by_key(|(c, id, _)| (*c, *id));
        Ok(Some(live.into_iter().map(|(_, _, s)| s).collect()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// Anonymous, version 0, created and last seen at 1,000 ms, absolute deadline
    /// 100,000 ms, no idle timeout.
    fn base() -> Stored<'static> {
        Stored {
            id: 0xff,
            user: None,
            label: None,
            created: 1_000,
            last_seen: 1_000,
            authenticated: None,
            absolute: 100_000,
            idle: 0,
            version: 0,
            data: Vec::new(),
            factors: None,
            user_agent: None,
            address: None,
            device_at: None,
        }
    }

    #[test]
    fn stored_factors_and_devices_read_back_and_bad_ones_are_errors() {
        let levels = LevelLifetimes::default().with(2, Duration::from_millis(500));
        let mut s = base();
        s.user = Some("alice");
        s.factors = Some("password 1 1000;otp 2 1200");
        s.user_agent = Some("Firefox");
        s.address = Some("2001:db8::");
        s.device_at = Some(1_100);
        let session = s.into_session(100_000, 1_600, &levels).unwrap();
        assert_eq!(session.factors().len(), 2);
        assert_eq!(session.level(), 2);
        assert_eq!(session.address(), Some("2001:db8::".parse().unwrap()));
        let mut s = base();
        s.user = Some("alice");
        s.factors = Some("password 1 1000;otp 2 1200");
        assert_eq!(s.into_session(100_000, 1_700, &levels).unwrap().level(), 1);
        for (factors, ua, addr, at, user) in [
            (Some("pass word 1 5"), None, None, None, true),
            (Some("otp 1"), None, None, None, true),
            (Some("otp 1 5;otp 2 6"), None, None, None, true),
            (Some("otp 1 5"), None, None, None, false),
            (None, Some("Firefox"), None, None, true),
            (None, None, Some("not an address"), Some(5), true),
        ] {
            let mut s = base();
            s.user = user.then_some("alice");
            s.factors = factors;
            s.user_agent = ua;
            s.address = addr;
            s.device_at = at;
            assert!(
                s.into_session(100_000, 1_000, &levels).is_err(),
                "{factors:?} {ua:?} {addr:?}"
            );
        }
        assert_eq!(
            factors_of_text(&factors_text(&[Factor::new("a:b", 3, Timestamp(9))])).unwrap(),
            [Factor::new("a:b", 3, Timestamp(9))]
        );
    }

    #[test]
    fn the_deadline_is_the_earliest_of_absolute_trial_idle_and_authentication() {
        let s = base();
        assert_eq!(s.deadline(0, 0), 100_000);
        assert_eq!(
            s.deadline(0, 500),
            1_500,
            "anonymous, version 0, unseen: on trial"
        );
        let mut s = base();
        s.last_seen = 1_001;
        assert_eq!(s.deadline(0, 500), 100_000, "seen again: promoted");
        s.idle = 2_000;
        assert_eq!(s.deadline(0, 0), 3_001);
        let mut s = base();
        s.user = Some("alice");
        s.authenticated = Some(1_200);
        assert_eq!(s.deadline(0, 500), 100_000, "a user's session: no trial");
        assert_eq!(s.deadline(300, 500), 1_500);
    }

    #[test]
    fn a_read_is_due_as_activity_past_the_throttle_or_on_trial() {
        let s = base();
        assert!(!s.due(1_000_000, -1, 0), "a peek never is");
        assert!(!s.due(1_500, 1_000, 0));
        assert!(s.due(2_000, 1_000, 0));
        assert!(
            s.due(1_001, 1_000, 500),
            "a trial is promoted by any later read"
        );
        assert!(
            !s.due(1_000, 1_000, 500),
            "not by one in the same millisecond"
        );
        assert!(!s.due(999, 0, 0), "a server clock behind last seen");
        assert!(s.due(1_000, 0, 0), "a throttle of 0: every read");
    }

    #[test]
    fn time_replies_become_microseconds_and_bad_ones_are_errors() {
        let t = Value::Array(vec![bulk("1700000000"), bulk("123999")]);
        assert_eq!(server_us(&t).unwrap(), 1_700_000_000_123_999);
        assert_eq!(ms_of(server_us(&t).unwrap()), 1_700_000_000_123);
        assert!(server_us(&Value::Array(vec![bulk("1")])).is_err());
        assert!(server_us(&Value::Array(vec![bulk("x"), bulk("1")])).is_err());
        assert!(server_us(&Value::Nil).is_err());
    }

    #[test]
    fn the_server_clock_bound_counts_from_when_time_was_asked_with_slack_for_the_rates() {
        let sent = Instant::now();
        let s = Sample {
            server_us: 5_000_000_400,
            sent,
            received: sent + Duration::from_millis(3),
        };
        // At the send itself: TIME plus one microsecond of slack.
        assert_eq!(s.latest_ms(sent), 5_000_000);
        // 10 ms after the send (so 7 ms after the answer): 10 ms + 10 µs of rate slack.
        assert_eq!(
            s.latest_ms(sent + Duration::from_millis(10)),
            (5_000_000_400 + 10_000 + 11) / 1000
        );
        // An instant before the send (a racing reader) counts as the send.
        assert_eq!(s.latest_ms(sent - Duration::from_millis(1)), 5_000_000);
        assert_eq!(
            s.latest_ms(sent + Duration::from_secs(1)),
            (5_000_000_400 + 1_000_000 + 1_001) / 1000
        );
    }

    #[test]
    fn a_clock_sample_serves_for_a_second_and_the_latest_one_wins() {
        let c = ServerClock::default();
        let t0 = Instant::now();
        assert!(c.fresh(t0).is_none());
        let first = Sample {
            server_us: 1,
            sent: t0,
            received: t0,
        };
        c.record(first);
        assert_eq!(c.fresh(t0).unwrap().server_us, 1);
        assert!(c.fresh(t0 + Duration::from_millis(999)).is_some());
        assert!(c.fresh(t0 + Duration::from_secs(1)).is_none());
        let later = Sample {
            server_us: 2,
            sent: t0,
            received: t0 + Duration::from_millis(5),
        };
        c.record(later);
        c.record(first);
        assert_eq!(
            c.fresh(t0).unwrap().server_us,
            2,
            "an older sample is ignored"
        );
    }
}
