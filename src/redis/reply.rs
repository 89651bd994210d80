//! [`Reply`]: a script's answer — a status word, then the operation's values — and
//! reading typed values out of it.

use redis::Value;

use super::read::Stored;
use super::{parse_hex, protocol};
use crate::error::Result;
use crate::model::session::Session;
use crate::model::signin::LevelLifetimes;

/// A script's reply: a status word, then the operation's values.
pub(super) struct Reply(pub(super) Vec<Value>);

impl Reply {
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn status(&self) -> &str {
        match self.0.first() {
            Some(Value::BulkString(b)) => std::str::from_utf8(b).unwrap_or("?"),
            Some(Value::SimpleString(s)) => s,
            _ => "?",
        }
    }

    pub(super) fn bytes(&self, i: usize) -> Result<&[u8]> {
        match self.0.get(i) {
            Some(Value::BulkString(b)) => Ok(b),
            Some(Value::SimpleString(s)) => Ok(s.as_bytes()),
            other => Err(protocol("reply", format!("field {i}: {other:?}"))),
        }
    }

    pub(super) fn str(&self, i: usize) -> Result<&str> {
        std::str::from_utf8(self.bytes(i)?).map_err(|e| protocol("reply", e))
    }

    pub(super) fn u64(&self, i: usize) -> Result<u64> {
        match self.0.get(i) {
            Some(Value::Int(n)) => u64::try_from(*n).map_err(|e| protocol("reply", e)),
            _ => self.str(i)?.parse().map_err(|e| protocol("reply", e)),
        }
    }

    pub(super) fn i64(&self, i: usize) -> Result<i64> {
        self.str(i)?.parse().map_err(|e| protocol("reply", e))
    }

    /// The arrays from field `from` on, each as a reply of its own (taken, not copied:
    /// a session's data can be large).
    pub(super) fn into_nested(self, from: usize) -> Result<Vec<Reply>> {
        self.0
            .into_iter()
            .skip(from)
            .map(|v| match v {
                Value::Array(items) => Ok(Reply(items)),
                other => Err(protocol("reply", format!("an array expected: {other:?}"))),
            })
            .collect()
    }

    /// The session image starting at field `at`: id, user, has-user, label, has-label,
    /// created, last seen, authenticated (-1: none), absolute, idle, version,
    /// deadline, the script's time, factors, user agent, address, device time (-1:
    /// none; '' for the texts), then key/value pairs. Its level under `levels`.
    pub(super) fn session(&self, at: usize, levels: &LevelLifetimes) -> Result<Session> {
        let raw_id = self.bytes(at)?;
        let id = parse_hex(raw_id).ok_or_else(|| {
            protocol(
                "reply",
                format!("a session id: {:?}", String::from_utf8_lossy(raw_id)),
            )
        })?;
        let text = |i: usize, has: usize| -> Result<Option<&str>> {
            (self.str(has)? == "1").then(|| self.str(i)).transpose()
        };
        let nonempty = |i: usize| -> Result<Option<&str>> {
            let s = self.str(i)?;
            Ok((!s.is_empty()).then_some(s))
        };
        let auth = self.i64(at + 7)?;
        let mut data = Vec::new();
        let mut i = at + 17;
        while i + 1 < self.len() {
            data.push((self.str(i)?, self.bytes(i + 1)?));
            i += 2;
        }
        Stored {
            id,
            user: text(at + 1, at + 2)?,
            label: text(at + 3, at + 4)?,
            created: self.u64(at + 5)?,
            last_seen: self.u64(at + 6)?,
            authenticated: u64::try_from(auth).ok(),
            absolute: self.u64(at + 8)?,
            idle: self.u64(at + 9)?,
            version: self.u64(at + 10)?,
            data,
            factors: nonempty(at + 13)?,
            user_agent: nonempty(at + 14)?,
            address: nonempty(at + 15)?,
            device_at: u64::try_from(self.i64(at + 16)?).ok(),
        }
        .into_session(self.u64(at + 11)?, self.u64(at + 12)?, levels)
    }
}
