//! What a store can say about itself: `Stats`, the recovery report, and its size.

use super::Store;
use crate::backend::CompactionStats;
use crate::backend::RecoveryReport;
use crate::clock::Timestamp;
use crate::journal::Journal;
use crate::options::Budget;
use std::sync::atomic::Ordering;

impl Store {
    /// Counters describing the store.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let mut st = Stats {
            users: inner.users.user_count(),
            events_dropped: inner.events.dropped(),
            ..Stats::default()
        };
        for shard in inner.shards.iter() {
            let s = shard.read();
            let live = s.live_count();
            st.sessions += live;
            st.aliases += s.len() - live;
            st.timers += s.wheel.len();
            st.resident_bytes += s.bytes();
        }
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
    /// Write batches the log writer has written (each one `write`).
    pub log_batches: u64,
    /// Records the log writer has written.
    pub log_records: u64,
    /// fsyncs the log writer has issued.
    pub log_syncs: u64,
}
