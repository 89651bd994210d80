//! What a store can say about itself: `Stats`, the recovery report, and its size.

use super::{Inner, Store};
use crate::backend::CompactionStats;
use crate::backend::RecoveryReport;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::index::tally::Tally;
use crate::journal::Journal;
use crate::model::event::EndReason;
use crate::options::Budget;
use std::sync::atomic::{AtomicU64, Ordering};

impl Store {
    /// Counters describing the store.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

impl Inner {
    pub(super) fn stats(&self) -> Stats {
        let inner = self;
        let mut st = Stats {
            users: inner.users.user_count(),
            events_dropped: inner.events.dropped(),
            ..Stats::default()
        };
        let mut tally = Tally::default();
        for shard in inner.shards.iter() {
            let s = shard.read();
            let live = s.live_count();
            tally.add(&s.tally);
            st.authenticated += s.signed_in() as usize;
            st.sessions += live;
            st.aliases += s.len() - live;
            st.timers += s.wheel.len();
            st.resident_bytes += s.bytes();
        }
        st.created = tally.created;
        st.imported = tally.imported;
        st.rotated = tally.rotated;
        st.logins = tally.logins;
        st.ended = EndCounts(tally.ended);
        st.user_limit_refusals = inner.refusals.user_limit.load(Ordering::Relaxed);
        st.bad_input_refusals = inner.refusals.bad_input.load(Ordering::Relaxed);
        if let Some(b) = &inner.budget {
            // One atomic reading each, never past the budget: a sum over the shards,
            // read one after another, could count a session created in one before
            // another's eviction reached it.
            st.sessions = b.usage.sessions() as usize;
            st.resident_bytes = b.usage.bytes();
            st.budget = Some(b.limits);
            st.evictions = b.evicted.load(Ordering::Relaxed);
            st.budget_refusals = b.refused.load(Ordering::Relaxed);
        }
        st.backend = inner.report.lock().backend;
        if let Journal::Disk(d) = &inner.journal {
            let c = d.counters();
            st.disk_bytes = c.disk_bytes;
            st.log_batches = c.batches;
            st.log_records = c.records;
            st.log_syncs = c.syncs;
            (st.journal_poisoned, st.disk_full) = d.health();
            let log = inner.compaction.lock();
            st.compactions = log.count;
            st.last_compaction.clone_from(&log.last);
            st.last_compaction_error.clone_from(&log.last_error);
            drop(log);
            st.estimated_live_bytes = inner.estimated_live_bytes(st.sessions);
            if st.disk_bytes > 0 {
                st.dead_ratio =
                    (1.0 - st.estimated_live_bytes as f64 / st.disk_bytes as f64).clamp(0.0, 1.0);
            }
        }
        st
    }
}

impl Store {
    /// What recovery found when the store was opened: records replayed, bytes cut off
    /// a torn tail, damage skipped in salvage mode, sessions live, time taken.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.report.lock().clone()
    }

    /// Number of sessions in the index (expired ones not yet reaped included).
    pub fn len(&self) -> usize {
        if let Some(b) = &self.inner.budget {
            return b.usage.sessions() as usize;
        }
        self.inner
            .shards
            .iter()
            .map(|s| s.read().live_count())
            .sum()
    }

    /// True when the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Calls refused for what they asked, counted on the refusal (rare) path: one relaxed
/// atomic add each, never on a call that succeeds.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// [`crate::Error::UserSessionLimit`].
    pub(crate) user_limit: AtomicU64,
    /// Bad input: an invalid user id, sign-in or option, data or a label past a limit.
    pub(crate) bad_input: AtomicU64,
}

impl Inner {
    /// `r`, counting an error as a refusal of bad input (for the checks of what a call
    /// is given, each made once on its call's path).
    #[inline]
    pub(super) fn checked<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.refusals.bad_input.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// Sessions ended since the store opened, by [`EndReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndCounts(pub(crate) [u64; EndReason::ALL.len()]);

impl EndCounts {
    /// How many ended for `reason`.
    pub fn get(&self, reason: EndReason) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count, in [`EndReason::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (EndReason, u64)> + '_ {
        EndReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Counters describing a store.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Sessions in the index (including expired ones the reaper has not reached).
    /// With a budget, the count it is enforced against: never above its
    /// `max_sessions`.
    pub sessions: usize,
    /// The estimated resident bytes of those sessions: each one's fixed cost (its
    /// state and its places in the maps and the wheel, calibrated against measured
    /// resident memory) plus its data and label. Kept exactly as sessions come, go and
    /// change, never by a scan.
    pub resident_bytes: u64,
    /// The budget the store enforces ([`crate::Options::budget`]), if any.
    pub budget: Option<Budget>,
    /// Anonymous sessions ended to make room under the budget
    /// ([`crate::EndReason::Evicted`]) since the store opened.
    pub evictions: u64,
    /// Creates refused at the budget ([`crate::Error::Full`]) since the store opened.
    pub budget_refusals: u64,
    /// Users with at least one session.
    pub users: usize,
    /// Old tokens still resolving after a rotation.
    pub aliases: usize,
    /// Timers in the wheels.
    pub timers: usize,
    /// Events dropped because a subscriber's buffer was full.
    pub events_dropped: u64,
    /// The storage backend: "log", "sled" or "memory".
    pub backend: &'static str,
    /// Bytes the store occupies on disk (0 in memory).
    pub disk_bytes: u64,
    /// Estimated bytes the live sessions would take in a freshly compacted base.
    pub estimated_live_bytes: u64,
    /// Estimated share of `disk_bytes` that is dead history (what compaction would
    /// reclaim), from 0.0 to 1.0.
    pub dead_ratio: f64,
    /// Compactions since the store was opened.
    pub compactions: u64,
    /// When the last compaction finished, and what it did.
    pub last_compaction: Option<(Timestamp, CompactionStats)>,
    /// The error of the last compaction, if it failed.
    pub last_compaction_error: Option<String>,
    /// Sessions with a user.
    pub authenticated: usize,
    /// Sessions created since the store opened (imports not counted).
    pub created: u64,
    /// Sessions imported since the store opened ([`Store::import`]).
    pub imported: u64,
    /// Token rotations since the store opened (logins and step-ups included).
    pub rotated: u64,
    /// Users bound to sessions (logins) since the store opened.
    pub logins: u64,
    /// Sessions ended since the store opened, by reason (recovery counts none).
    pub ended: EndCounts,
    /// Creates, logins and binds refused at the per-user limit
    /// ([`crate::Error::UserSessionLimit`]) since the store opened.
    pub user_limit_refusals: u64,
    /// Calls refused for bad input (an invalid user id, sign-in or option; data or a
    /// label past a limit) since the store opened.
    pub bad_input_refusals: u64,
    /// Write batches the log writer has written (each one `write`).
    pub log_batches: u64,
    /// Records the log writer has written.
    pub log_records: u64,
    /// fsyncs the log writer has issued.
    pub log_syncs: u64,
    /// Whether the journal is poisoned: a write or fsync failed for good, and every
    /// write fails until the store is reopened (`Error::Poisoned`).
    pub journal_poisoned: bool,
    /// Whether the disk is full: writes are refused (`Error::DiskFull`) until there is
    /// room.
    pub disk_full: bool,
}
