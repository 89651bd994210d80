//! [`Row`]: one session as its table row holds it, read out of a query, judged (its
//! deadline), changed and written back, and turned into the crate's [`Session`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{NEVER, protocol};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::model::data::SessionData;
use crate::model::details::{Details, factors_of};
use crate::model::device::DeviceInfo;
use crate::model::portable::SessionRecord;
use crate::model::session::{Session, UserId};
use crate::model::signin::{Factor, LevelLifetimes, factors_from_text, factors_to_text};
use crate::model::token::{SessionId, TokenHash};

/// A session's row (times in ms on the database's clock).
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) id: u128,
    pub(super) hash: u128,
    pub(super) user: Option<String>,
    pub(super) label: Option<String>,
    pub(super) created: i64,
    pub(super) last_seen: i64,
    pub(super) authenticated: Option<i64>,
    pub(super) absolute: i64,
    /// Ms; 0: no idle timeout.
    pub(super) idle: i64,
    pub(super) version: i64,
    pub(super) data: SessionData,
    pub(super) factors: Vec<Factor>,
    pub(super) user_agent: Option<String>,
    pub(super) address: Option<IpAddr>,
    pub(super) device_at: Option<i64>,
}

/// What a deadline depends on besides the row: the store's authentication and trial
/// lifetimes (ms, 0 = none).
#[derive(Clone, Copy, Debug)]
pub(super) struct Lifetimes {
    pub(super) auth: i64,
    pub(super) trial: i64,
}

/// A token hash or session id as the table keeps it.
pub(super) fn key(v: u128) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub(super) fn uuid(v: u128) -> Uuid {
    Uuid::from_u128(v)
}

impl Row {
    /// The row of a query that selected [`super::schema::COLS`], then the database's
    /// time; and that time.
    pub(super) fn read(r: &tokio_postgres::Row) -> Result<(Row, i64)> {
        let bad = |what: &str| protocol("read", format!("a stored session's {what}"));
        let get = |i: usize| -> Result<i64> { r.try_get(i).map_err(|e| protocol("read", e)) };
        let opt_i64 =
            |i: usize| -> Result<Option<i64>> { r.try_get(i).map_err(|e| protocol("read", e)) };
        let opt_text =
            |i: usize| -> Result<Option<String>> { r.try_get(i).map_err(|e| protocol("read", e)) };
        let id: Uuid = r.try_get(0).map_err(|e| protocol("read", e))?;
        let hash: &[u8] = r.try_get(1).map_err(|e| protocol("read", e))?;
        let hash: [u8; 16] = hash.try_into().map_err(|_| bad("token hash"))?;
        let data: &[u8] = r.try_get(10).map_err(|e| protocol("read", e))?;
        let factors = match opt_text(11)? {
            Some(t) => factors_from_text(&t).ok_or_else(|| bad("factors"))?,
            None => Vec::new(),
        };
        let row = Row {
            id: id.as_u128(),
            hash: u128::from_be_bytes(hash),
            user: opt_text(2)?,
            label: opt_text(3)?,
            created: get(4)?,
            last_seen: get(5)?,
            authenticated: opt_i64(6)?,
            absolute: get(7)?,
            idle: get(8)?,
            version: get(9)?,
            data: SessionData::from_slice(data).ok_or_else(|| bad("data"))?,
            factors,
            user_agent: opt_text(12)?,
            address: r.try_get(13).map_err(|e| protocol("read", e))?,
            device_at: opt_i64(14)?,
        };
        Ok((row, get(15)?))
    }

    /// On trial: anonymous, version 0, not seen since its creation
    /// ([`crate::Options::trial_lifetime`]).
    pub(super) fn on_trial(&self, l: Lifetimes) -> bool {
        l.trial > 0 && self.user.is_none() && self.version == 0 && self.last_seen == self.created
    }

    /// When the session ends: the earliest of its absolute deadline, its trial, its
    /// idle timeout after the last activity, and its authentication lifetime.
    pub(super) fn deadline(&self, l: Lifetimes) -> i64 {
        let mut d = self.absolute;
        if self.on_trial(l) {
            d = d.min(self.created.saturating_add(l.trial));
        }
        if self.idle > 0 {
            d = d.min(self.last_seen.saturating_add(self.idle));
        }
        if let (true, Some(a)) = (l.auth > 0, self.authenticated) {
            d = d.min(a.saturating_add(l.auth));
        }
        d
    }

    /// The text the row keeps its factors as (`None`: none).
    fn factors_text(&self) -> Option<String> {
        (!self.factors.is_empty()).then(|| factors_to_text(&self.factors))
    }

    /// Runs the `insert` or `update` statement `st` with the row's columns in order,
    /// then its deadline.
    pub(super) async fn write(
        &self,
        deadline: i64,
        c: &impl GenericClient,
        st: &Statement,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let id = uuid(self.id);
        let hash = key(self.hash);
        let factors = self.factors_text();
        let data = self.data.as_bytes();
        let params: [&(dyn ToSql + Sync); 16] = [
            &id,
            &hash,
            &self.user,
            &self.label,
            &self.created,
            &self.last_seen,
            &self.authenticated,
            &self.absolute,
            &self.idle,
            &self.version,
            &data,
            &factors,
            &self.user_agent,
            &self.address,
            &self.device_at,
            &deadline,
        ];
        c.execute(st, &params).await
    }

    /// The session as of `now`, its level under `levels`.
    pub(super) fn session(&self, now: i64, l: Lifetimes, levels: &LevelLifetimes) -> Session {
        let details = Details {
            label: self.label.as_deref().map(Arc::from),
            factors: self.factors.clone().into(),
            device: self.device_at.and_then(|at| {
                (self.user_agent.is_some() || self.address.is_some()).then(|| {
                    Box::new(DeviceInfo {
                        user_agent: self.user_agent.as_deref().map(Arc::from),
                        address: self.address,
                        at: time(at),
                    })
                })
            }),
        }
        .shared();
        let now = time(now);
        let assessed = levels.assess(factors_of(&details), now);
        Session::from_parts(
            SessionId(self.id),
            self.user.as_deref().map(UserId::trusted),
            details,
            assessed,
            now,
            time(self.created),
            time(self.last_seen),
            self.authenticated.map(time),
            time(self.deadline(l)),
            time(self.absolute),
            (self.idle > 0).then(|| Duration::from_millis(self.idle as u64)),
            self.version as u64,
            self.data.clone(),
        )
    }

    /// The portable record of the session.
    pub(super) fn record(&self, now: i64, l: Lifetimes, levels: &LevelLifetimes) -> SessionRecord {
        SessionRecord::of_session(
            &self.session(now, l, levels),
            TokenHash::from_u128(self.hash),
        )
    }
}

/// A time the table keeps, as a timestamp: [`NEVER`] and later is [`Timestamp::MAX`],
/// no deadline; before the epoch (never written) is the epoch.
pub(super) fn time(t: i64) -> Timestamp {
    if t >= NEVER {
        Timestamp::MAX
    } else {
        Timestamp(u64::try_from(t).unwrap_or(0))
    }
}

/// A timestamp as the table keeps it: at most [`NEVER`].
pub(super) fn ms_of(t: Timestamp) -> i64 {
    t.0.min(NEVER as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            id: 1,
            hash: 2,
            user: None,
            label: None,
            created: 1_000,
            last_seen: 1_000,
            authenticated: None,
            absolute: 100_000,
            idle: 0,
            version: 0,
            data: SessionData::new(),
            factors: Vec::new(),
            user_agent: None,
            address: None,
            device_at: None,
        }
    }

    #[test]
    fn the_deadline_is_the_earliest_of_every_limit() {
        let none = Lifetimes { auth: 0, trial: 0 };
        let mut r = row();
        assert_eq!(r.deadline(none), 100_000);
        r.idle = 5_000;
        assert_eq!(r.deadline(none), 6_000);
        // On trial: anonymous, unwritten, unseen since created.
        let trial = Lifetimes {
            auth: 0,
            trial: 2_000,
        };
        assert_eq!(r.deadline(trial), 3_000);
        r.last_seen = 1_500;
        assert_eq!(r.deadline(trial), 6_500, "seen again: off trial");
        r.user = Some("u".into());
        r.authenticated = Some(1_200);
        let auth = Lifetimes {
            auth: 1_000,
            trial: 0,
        };
        assert_eq!(r.deadline(auth), 2_200);
    }

    #[test]
    fn times_past_never_read_as_no_deadline_and_negative_ones_as_the_epoch() {
        assert_eq!(time(NEVER), Timestamp::MAX);
        assert_eq!(time(i64::MAX), Timestamp::MAX);
        assert_eq!(time(-5), Timestamp(0));
        assert_eq!(ms_of(Timestamp::MAX), NEVER);
        assert_eq!(time(ms_of(Timestamp(42))), Timestamp(42));
    }
}
