//! A session as the index holds it ([`SessionState`]): one 128-byte allocation per
//! session, with the atomic last-seen time a read advances under a shard's read lock,
//! and the rule that computes its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Timestamp, duration_ms};
use crate::index::wheel::TimerHandle;
use crate::model::data::SessionData;
use crate::model::session::{Session, UserId};
use crate::model::token::{InstanceId, SessionId};

/// Tabs or windows open inside a session (doors' instances). Not durable.
#[derive(Debug, Default)]
pub(crate) struct Instances {
    pub(crate) next: u32,
    pub(crate) open: Vec<InstanceId>,
}

/// An optional timestamp in 8 bytes (`u64::MAX`, a moment no clock reaches, is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MaybeTime(u64);

impl MaybeTime {
    pub(crate) const NONE: MaybeTime = MaybeTime(u64::MAX);

    pub(crate) fn get(self) -> Option<Timestamp> {
        (self.0 != u64::MAX).then_some(Timestamp(self.0))
    }
}

impl From<Option<Timestamp>> for MaybeTime {
    fn from(t: Option<Timestamp>) -> MaybeTime {
        MaybeTime(t.map_or(u64::MAX, |t| t.0.min(u64::MAX - 1)))
    }
}

/// A session as the index holds it.
pub(crate) struct SessionState {
    pub(crate) id: SessionId,
    pub(crate) user: Option<UserId>,
    pub(crate) label: Option<Arc<str>>,
    pub(crate) created: Timestamp,
    pub(crate) authenticated: MaybeTime,
    /// The absolute deadline (creation + lifetime, moved by `extend`).
    pub(crate) absolute: Timestamp,
    /// Idle timeout in ms; 0 = disabled.
    pub(crate) idle_ms: u64,
    /// Last activity; advanced under the shard's read lock, so atomic.
    pub(crate) last_seen: AtomicU64,
    pub(crate) version: u64,
    pub(crate) data: SessionData,
    pub(crate) timer: TimerHandle,
    /// The high half of the token hash the session is found by (its shard's map keys
    /// by the low half; see [`crate::index::shard::Shard`]). Set by the shard on insertion.
    pub(crate) hash_hi: u64,
}

impl SessionState {
    /// When this session ends, given the store's authentication lifetime (ms, 0 = none):
    /// the earliest of its absolute, idle and authentication deadlines.
    pub(crate) fn deadline(&self, auth_lifetime_ms: u64) -> Timestamp {
        let mut d = self.absolute.0;
        if self.idle_ms != 0 {
            d = d.min(
                self.last_seen
                    .load(Ordering::Relaxed)
                    .saturating_add(self.idle_ms),
            );
        }
        if auth_lifetime_ms != 0
            && let Some(auth) = self.authenticated.get()
        {
            d = d.min(auth.0.saturating_add(auth_lifetime_ms));
        }
        Timestamp(d)
    }

    pub(crate) fn last_seen(&self) -> Timestamp {
        Timestamp(self.last_seen.load(Ordering::Relaxed))
    }

    /// Records activity at `now` (never moves backwards).
    pub(crate) fn mark_seen(&self, now: Timestamp) {
        self.last_seen.fetch_max(now.0, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, auth_lifetime_ms: u64) -> Session {
        Session {
            id: self.id,
            user: self.user.clone(),
            label: self.label.clone(),
            created_at: self.created,
            last_seen: self.last_seen(),
            authenticated_at: self.authenticated.get(),
            expires_at: self.deadline(auth_lifetime_ms),
            absolute_deadline: self.absolute,
            idle_timeout: (self.idle_ms != 0).then(|| Duration::from_millis(self.idle_ms)),
            version: self.version,
            data: self.data.clone(),
        }
    }

    pub(crate) fn set_idle(&mut self, d: Duration) {
        self.idle_ms = duration_ms(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(absolute: u64, idle_ms: u64, last_seen: u64, auth: Option<u64>) -> SessionState {
        SessionState {
            id: SessionId(1),
            user: None,
            label: None,
            created: Timestamp(0),
            authenticated: auth.map(Timestamp).into(),
            absolute: Timestamp(absolute),
            idle_ms,
            last_seen: AtomicU64::new(last_seen),
            version: 0,
            data: SessionData::default(),
            timer: TimerHandle::detached(),
            hash_hi: 0,
        }
    }

    #[test]
    fn session_state_fits_a_128_byte_allocation() {
        // glibc rounds a request up to a multiple of 16 with 8 bytes of header: 120
        // bytes fit a 128-byte chunk, 121 take 144. One per session: the memory budget
        // (`docs/performance.md`) depends on it.
        assert!(std::mem::size_of::<SessionState>() <= 120);
        assert_eq!(std::mem::size_of::<Option<UserId>>(), 8);
    }

    #[test]
    fn deadline_is_the_earliest_enabled_one() {
        assert_eq!(state(1000, 0, 0, None).deadline(0), Timestamp(1000));
        assert_eq!(state(1000, 100, 50, None).deadline(0), Timestamp(150));
        assert_eq!(state(1000, 0, 0, Some(10)).deadline(20), Timestamp(30));
        assert_eq!(
            state(1000, 0, 0, Some(10)).deadline(0),
            Timestamp(1000),
            "auth lifetime disabled"
        );
        assert_eq!(
            state(1000, 0, 0, None).deadline(20),
            Timestamp(1000),
            "never authenticated"
        );
    }
}
