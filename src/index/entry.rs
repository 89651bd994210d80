//! A session as the index holds it ([`SessionState`]): one 128-byte allocation per
//! session, with the atomic last-seen time a read advances under a shard's read lock,
//! and the rule that computes its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Timestamp, duration_ms};
use crate::index::wheel::TimerHandle;
use crate::model::data::SessionData;
use crate::model::details::{Details, device_of, factors_of, label_of};
use crate::model::device::DeviceInfo;
use crate::model::session::{Session, UserId};
use crate::model::signin::{Assessed, Factor, LevelLifetimes};
use crate::model::token::{InstanceId, SessionId};
use crate::options::Options;

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
///
/// `repr(C)`, in this order: what a lookup and a touch read — the hash check, the
/// deadline's fields, `last_seen` and the `id` a touch hands to the log — lie together
/// in the first 80 bytes. In the compiler's order the id sat 80 bytes before
/// `last_seen`, on another cache line: a touch of a session out of cache missed once
/// more under `Buffered` than in memory (perf: a third of a touch's own time).
#[repr(C)]
pub(crate) struct SessionState {
    /// The high half of the token hash the session is found by (its shard's map keys
    /// by the low half; see [`crate::index::shard::Shard`]). Set by the shard on insertion.
    pub(crate) hash_hi: u64,
    /// The absolute deadline (creation + lifetime, moved by `extend`).
    pub(crate) absolute: Timestamp,
    /// Idle timeout in ms; 0 = disabled.
    pub(crate) idle_ms: u64,
    /// Last activity; advanced under the shard's read lock, so atomic.
    pub(crate) last_seen: AtomicU64,
    pub(crate) id: SessionId,
    pub(crate) created: Timestamp,
    pub(crate) version: u64,
    pub(crate) authenticated: MaybeTime,
    pub(crate) user: Option<UserId>,
    /// Label, sign-in factors and device; `None` when it has none of them.
    pub(crate) details: Option<Arc<Details>>,
    pub(crate) data: SessionData,
    pub(crate) timer: TimerHandle,
    /// The number of the last compaction that wrote this session to its base (0:
    /// none), so that a compaction writes each session once however rotations move it
    /// (see `store::compact`). Written under the shard's read lock, so atomic; it
    /// fills the padding after `timer`.
    pub(crate) compacted: AtomicU32,
}

/// The store-wide lifetimes a session's deadline depends on besides its own fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    /// How long an authentication lasts, in ms (0: for the session's life).
    pub(crate) auth_ms: u64,
    /// How long a session on trial lasts, in ms (0: no trial).
    pub(crate) trial_ms: u64,
}

impl Rules {
    /// The rules `opts` set.
    pub(crate) fn of(opts: &Options) -> Rules {
        Rules {
            auth_ms: opts.auth_lifetime.map_or(0, duration_ms),
            trial_ms: opts.trial_lifetime.map_or(0, duration_ms),
        }
    }
}

impl SessionState {
    /// Whether the session is on trial: anonymous, and never used since the call that
    /// created it (no data written, no user bound, not seen again). A session on trial
    /// ends `trial` after its creation unless it is used again first; nothing marks it,
    /// so the rule reads the same from the log after a restart.
    pub(crate) fn on_trial(&self) -> bool {
        self.version == 0 && self.user.is_none() && self.last_seen() == self.created
    }

    /// When this session ends under `rules`: the earliest of its absolute, idle and
    /// authentication deadlines, and, while it is on trial, its trial's end.
    pub(crate) fn deadline(&self, rules: Rules) -> Timestamp {
        let auth_lifetime_ms = rules.auth_ms;
        let mut d = self.absolute.0;
        if rules.trial_ms != 0 && self.on_trial() {
            d = d.min(self.created.0.saturating_add(rules.trial_ms));
        }
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

    /// The session as of `now`, its level under `levels`.
    pub(crate) fn snapshot(
        &self,
        rules: Rules,
        levels: &LevelLifetimes,
        now: Timestamp,
    ) -> Session {
        let assessed = match &self.details {
            Some(d) if !d.factors.is_empty() => levels.assess(&d.factors, now),
            _ => Assessed::default(),
        };
        Session {
            id: self.id,
            user: self.user.clone(),
            details: self.details.clone(),
            assessed,
            as_of: now,
            created_at: self.created,
            last_seen: self.last_seen(),
            authenticated_at: self.authenticated.get(),
            expires_at: self.deadline(rules),
            absolute_deadline: self.absolute,
            idle_timeout: (self.idle_ms != 0).then(|| Duration::from_millis(self.idle_ms)),
            version: self.version,
            data: self.data.clone(),
        }
    }

    pub(crate) fn label(&self) -> Option<&Arc<str>> {
        label_of(&self.details)
    }

    pub(crate) fn factors(&self) -> &[Factor] {
        factors_of(&self.details)
    }

    pub(crate) fn device(&self) -> Option<&DeviceInfo> {
        device_of(&self.details)
    }

    pub(crate) fn set_label(&mut self, label: Option<Arc<str>>) {
        if self.label() != label.as_ref() {
            self.details = Details::edit(&self.details, |d| d.label = label);
        }
    }

    pub(crate) fn set_factors(&mut self, factors: Vec<Factor>) {
        if self.factors() != factors.as_slice() {
            self.details = Details::edit(&self.details, |d| d.factors = factors.into());
        }
    }

    pub(crate) fn set_device(&mut self, device: DeviceInfo) {
        self.details = Details::edit(&self.details, |d| d.device = Some(Box::new(device)));
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
            details: None,
            created: Timestamp(0),
            authenticated: auth.map(Timestamp).into(),
            absolute: Timestamp(absolute),
            idle_ms,
            last_seen: AtomicU64::new(last_seen),
            version: 0,
            data: SessionData::default(),
            timer: TimerHandle::detached(),
            compacted: 0.into(),
            hash_hi: 0,
        }
    }

    #[test]
    fn session_state_fits_a_128_byte_allocation() {
        // glibc rounds a request up to a multiple of 16 with 8 bytes of header: 120
        // bytes fit a 128-byte chunk, 121 take 144. One per session: the memory budget
        // (`docs/performance.md`) depends on it.
        assert!(std::mem::size_of::<SessionState>() <= 120);
        // A session's label, factors and device share one allocation, absent for a
        // visitor: with its two counts it fits a 64-byte chunk.
        assert!(std::mem::size_of::<Details>() <= 40);
        assert_eq!(std::mem::size_of::<Option<UserId>>(), 8);
    }

    #[test]
    fn what_a_lookup_and_a_touch_read_lies_in_the_first_80_bytes() {
        use std::mem::offset_of;
        let ends = [
            offset_of!(SessionState, hash_hi) + 8,
            offset_of!(SessionState, absolute) + 8,
            offset_of!(SessionState, idle_ms) + 8,
            offset_of!(SessionState, last_seen) + 8,
            offset_of!(SessionState, id) + 16,
            offset_of!(SessionState, created) + 8,
            offset_of!(SessionState, version) + 8,
            offset_of!(SessionState, authenticated) + 8,
            offset_of!(SessionState, user) + 8,
        ];
        assert!(ends.iter().all(|&end| end <= 80), "{ends:?}");
    }

    fn auth(ms: u64) -> Rules {
        Rules {
            auth_ms: ms,
            trial_ms: 0,
        }
    }

    #[test]
    fn deadline_is_the_earliest_enabled_one() {
        assert_eq!(state(1000, 0, 0, None).deadline(auth(0)), Timestamp(1000));
        assert_eq!(state(1000, 100, 50, None).deadline(auth(0)), Timestamp(150));
        assert_eq!(
            state(1000, 0, 0, Some(10)).deadline(auth(20)),
            Timestamp(30)
        );
        assert_eq!(
            state(1000, 0, 0, Some(10)).deadline(auth(0)),
            Timestamp(1000),
            "auth lifetime disabled"
        );
        assert_eq!(
            state(1000, 0, 0, None).deadline(auth(20)),
            Timestamp(1000),
            "never authenticated"
        );
    }

    #[test]
    fn a_trial_ends_early_until_the_session_is_used_again() {
        let trial = Rules {
            auth_ms: 0,
            trial_ms: 120,
        };
        let fresh = state(1000, 0, 0, None);
        assert!(fresh.on_trial());
        assert_eq!(fresh.deadline(trial), Timestamp(120));
        assert_eq!(
            fresh.deadline(auth(0)),
            Timestamp(1000),
            "no trial configured"
        );
        // Seen again: the session's own lifetime.
        let seen = state(1000, 0, 0, None);
        seen.mark_seen(Timestamp(60));
        assert!(!seen.on_trial());
        assert_eq!(seen.deadline(trial), Timestamp(1000));
        // Written to, or logged in: the same.
        let mut written = state(1000, 0, 0, None);
        written.version = 1;
        assert_eq!(written.deadline(trial), Timestamp(1000));
        let mut bound = state(1000, 0, 0, Some(0));
        bound.user = Some(UserId::trusted("u"));
        assert_eq!(bound.deadline(trial), Timestamp(1000));
        // A trial longer than the lifetime changes nothing.
        assert_eq!(state(100, 0, 0, None).deadline(trial), Timestamp(100));
    }
}
