//! Reads without `sessions.lua`: `get` and `peek` on one Redis server as plain
//! pipelined commands, `sessions_of` as one call of the small read-only `read.lua`,
//! both checked against the server's clock.
//!
//! A read needs no atomicity beyond reading one hash, and every script call pays for
//! the script itself (its chunk runs from the top, building its functions, on every
//! call). So a read sends `HGETALL <p>:s:<h>`, `EXISTS <p>:a:<h>` and then `TIME` in
//! one pipeline. Redis runs one connection's commands in order, so the hash was read
//! at or before the instant `TIME` reports: a session whose deadline (computed here
//! exactly as the script's `deadline()` does) is after that instant was live when it
//! was read. No clock offset is estimated and nothing is left to a bound — the check
//! is the script's own, on the server's clock, one command later.
//!
//! What still goes to the script: a read that counts as activity and is due (the touch
//! is throttled to once per [`crate::Options::touch_interval`], and a session on trial
//! is promoted by it), a token found only through its rotation alias, and every `get`
//! on a Redis Cluster (`TIME` has no key to route it to the node the session lives
//! on; `read.lua` takes its user's key, so `sessions_of` runs it on a Cluster too).
//! Revocation stays immediate: ending a session deletes its hash in the same script
//! step, so no read finds it afterwards.

use std::time::Duration;

use redis::Value;

use super::{Conn, Inner, deadline_of, protocol, unavailable};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::data::SessionData;
use crate::model::session::{Session, UserId};
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
/// read from its hash here or from a script's image (`reply.rs`).
pub(super) struct Stored {
    pub(super) id: u128,
    pub(super) user: Option<String>,
    pub(super) label: Option<String>,
    pub(super) created: u64,
    pub(super) last_seen: u64,
    pub(super) authenticated: Option<u64>,
    pub(super) absolute: u64,
    /// Ms; 0: no idle timeout.
    pub(super) idle: u64,
    pub(super) version: u64,
    pub(super) data: Vec<(String, Vec<u8>)>,
}

fn text(v: Value, what: &str) -> Result<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|e| protocol("read", format!("{what}: {e}")))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(protocol("read", format!("{what}: {other:?}"))),
    }
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
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| u128::from_str_radix(s, 16).ok())
            .ok_or_else(|| protocol("read", format!("id {:?}", String::from_utf8_lossy(b)))),
        other => Err(protocol("read", format!("id: {other:?}"))),
    }
}

/// The server's clock in milliseconds from a `TIME` reply, as the script computes it.
fn server_ms(v: Value) -> Result<u64> {
    let Value::Array(parts) = v else {
        return Err(protocol("read", format!("TIME: {v:?}")));
    };
    let [secs, micros, ..] = parts.as_slice() else {
        return Err(protocol("read", "TIME: fewer than two fields"));
    };
    time_ms(secs, micros)
}

/// Milliseconds from `TIME`'s two fields, seconds and microseconds.
fn time_ms(secs: &Value, micros: &Value) -> Result<u64> {
    let secs = number(secs, "TIME")?;
    let micros = number(micros, "TIME")?;
    Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
}

/// Calls `f` with each field/value pair of a hash reply (an array under RESP2, a map
/// under RESP3), taking them out of the reply.
fn each_pair(v: Value, mut f: impl FnMut(Value, Value) -> Result<()>) -> Result<()> {
    match v {
        Value::Map(m) => m.into_iter().try_for_each(|(k, v)| f(k, v)),
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                f(k, v)?;
            }
            Ok(())
        }
        Value::Nil => Ok(()),
        other => Err(protocol("read", format!("HGETALL: {other:?}"))),
    }
}

impl Stored {
    /// The session in a hash reply, or `None` for no hash (or one without an id, as
    /// the script's `load` reads it).
    fn parse(v: Value) -> Result<Option<Stored>> {
        let mut s = Stored {
            id: 0,
            user: None,
            label: None,
            created: 0,
            last_seen: 0,
            authenticated: None,
            absolute: 0,
            idle: 0,
            version: 0,
            data: Vec::new(),
        };
        let mut has_id = false;
        each_pair(v, |k, v| {
            let Value::BulkString(k) = k else {
                return Err(protocol("read", format!("a hash field: {k:?}")));
            };
            if let Some(key) = k.strip_prefix(b"d:") {
                let key = String::from_utf8(key.to_vec())
                    .map_err(|e| protocol("read", format!("a data key: {e}")))?;
                let Value::BulkString(value) = v else {
                    return Err(protocol("read", format!("data {key:?}: {v:?}")));
                };
                s.data.push((key, value));
                return Ok(());
            }
            match k.as_slice() {
                b"id" => {
                    s.id = hex_id(&v)?;
                    has_id = true;
                }
                b"u" => s.user = Some(text(v, "u")?),
                b"l" => s.label = Some(text(v, "l")?),
                b"c" => s.created = number(&v, "c")?,
                b"ls" => s.last_seen = number(&v, "ls")?,
                b"a" => s.authenticated = Some(number(&v, "a")?),
                b"abs" => s.absolute = number(&v, "abs")?,
                b"idle" => s.idle = number(&v, "idle")?,
                b"v" => s.version = number(&v, "v")?,
                _ => {} // dsz, and whatever a later version adds
            }
            Ok(())
        })?;
        Ok(has_id.then_some(s))
    }

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

    /// The session, ending at `deadline` (as the script keeps it: see
    /// [`deadline_of`]).
    pub(super) fn into_session(self, deadline: u64) -> Result<Session> {
        let data = SessionData::from_entries(self.data)
            .ok_or_else(|| protocol("read", "session data that does not encode"))?;
        Ok(Session::from_parts(
            SessionId(self.id),
            self.user.as_deref().map(UserId::trusted),
            self.label.as_deref(),
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

    /// The connection for scriptless reads: a single server's, not a Cluster's.
    fn direct_conn(&self) -> Option<redis::aio::ConnectionManager> {
        match &self.conn {
            Conn::Single(c) => Some(c.clone()),
            Conn::Cluster(_) => None,
        }
    }

    /// Reads the session at token hash `h` without the script (see the module doc).
    /// `touch`: the throttle in ms, negative for a read that is not activity.
    pub(super) async fn read_direct(&self, h: &str, touch: i64) -> Result<Direct> {
        let Some(mut conn) = self.direct_conn() else {
            return Ok(Direct::Script);
        };
        let p = &self.ropts.prefix;
        let replies: Vec<Value> = redis::pipe()
            .cmd("HGETALL")
            .arg(format!("{p}:s:{h}"))
            .cmd("EXISTS")
            .arg(format!("{p}:a:{h}"))
            .cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("get", &e))?;
        let [hash, alias, time]: [Value; 3] = replies
            .try_into()
            .map_err(|r: Vec<Value>| protocol("get", format!("{} replies, not 3", r.len())))?;
        let now = server_ms(time)?;
        let Some(s) = Stored::parse(hash)? else {
            // No session at this token, or a rotated-away one in its grace period (the
            // script resolves it).
            return Ok(match alias {
                Value::Int(0) => Direct::Ended,
                Value::Int(_) => Direct::Script,
                other => return Err(protocol("get", format!("EXISTS: {other:?}"))),
            });
        };
        let (auth, trial) = (self.auth_ms(), self.trial_ms());
        let deadline = s.deadline(auth, trial);
        if deadline <= now {
            return Ok(Direct::Ended);
        }
        if s.due(now, touch, trial) {
            return Ok(Direct::Script);
        }
        Ok(Direct::Live(s.into_session(deadline)?))
    }

    /// The live sessions of `user`, oldest first, from one call of the read-only
    /// `read.lua`: the user's index, each session's hash, then `TIME`. `None` when
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
        let now = time_ms(&secs, &micros)?;
        let (auth, trial) = (self.auth_ms(), self.trial_ms());
        let mut live = Vec::with_capacity(items.len() / 2);
        while let (Some(id), Some(hash)) = (items.next(), items.next()) {
            let id = hex_id(&id)?;
            let Some(s) = Stored::parse(hash)? else {
                return Ok(None);
            };
            let deadline = s.deadline(auth, trial);
            // What the script's live_of prunes: a pointer to another session, a
            // session of another user, one past its deadline.
            if id != s.id || s.user.as_deref() != Some(user) || deadline <= now {
                return Ok(None);
            }
            live.push((s.created, s.id, s.into_session(deadline)?));
        }
        live.sort_by_key(|(c, id, _)| (*c, *id));
        Ok(Some(live.into_iter().map(|(_, _, s)| s).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn hash(fields: &[(&str, &str)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(k, v)| [bulk(k), bulk(v)])
                .collect(),
        )
    }

    fn stored(fields: &[(&str, &str)]) -> Stored {
        Stored::parse(hash(fields)).unwrap().unwrap()
    }

    const BASE: [(&str, &str); 6] = [
        ("id", "000000000000000000000000000000ff"),
        ("c", "1000"),
        ("ls", "1000"),
        ("abs", "100000"),
        ("idle", "0"),
        ("v", "0"),
    ];

    #[test]
    fn a_hash_without_an_id_is_no_session_and_data_keys_lose_their_prefix() {
        assert!(Stored::parse(hash(&[("c", "1")])).unwrap().is_none());
        assert!(Stored::parse(Value::Array(vec![])).unwrap().is_none());
        let mut f = BASE.to_vec();
        f.push(("d:profile", "x"));
        f.push(("dsz", "1"));
        let s = stored(&f);
        assert_eq!(s.id, 0xff);
        assert_eq!(s.data, vec![("profile".to_owned(), b"x".to_vec())]);
        let m = Value::Map(vec![(bulk("id"), bulk("01")), (bulk("u"), bulk("al"))]);
        let s = Stored::parse(m).unwrap().unwrap();
        assert_eq!((s.id, s.user.as_deref()), (1, Some("al")));
    }

    #[test]
    fn the_deadline_is_the_earliest_of_absolute_trial_idle_and_authentication() {
        let s = stored(&BASE);
        assert_eq!(s.deadline(0, 0), 100_000);
        assert_eq!(
            s.deadline(0, 500),
            1_500,
            "anonymous, version 0, unseen: on trial"
        );
        let mut f = BASE.to_vec();
        f[2] = ("ls", "1001");
        assert_eq!(stored(&f).deadline(0, 500), 100_000, "seen again: promoted");
        f.push(("idle", "2000"));
        assert_eq!(stored(&f).deadline(0, 0), 3_001);
        let mut f = BASE.to_vec();
        f.push(("u", "alice"));
        f.push(("a", "1200"));
        assert_eq!(
            stored(&f).deadline(0, 500),
            100_000,
            "a user's session: no trial"
        );
        assert_eq!(stored(&f).deadline(300, 500), 1_500);
    }

    #[test]
    fn a_read_is_due_as_activity_past_the_throttle_or_on_trial() {
        let s = stored(&BASE);
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
    fn time_replies_become_milliseconds_and_bad_ones_are_errors() {
        let t = Value::Array(vec![bulk("1700000000"), bulk("123999")]);
        assert_eq!(server_ms(t).unwrap(), 1_700_000_000_123);
        assert!(server_ms(Value::Array(vec![bulk("1")])).is_err());
        assert!(server_ms(Value::Array(vec![bulk("x"), bulk("1")])).is_err());
        assert!(server_ms(Value::Nil).is_err());
    }
}
