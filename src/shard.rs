//! One shard of the index: the map from token hash to session (or to a rotation alias),
//! and the timing wheel of that shard's deadlines, under one lock.
//!
//! Token hashes are uniformly random, so the map hashes them by taking their low 64
//! bits (no hashing work on the hot path), and the store picks the shard from bits
//! 64 and up — independent bits, so each shard's table stays evenly spread. Sessions
//! and aliases are boxed: a map slot is 32 bytes however large the session.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Deref;

use crate::clock::Timestamp;
use crate::session::{Instances, SessionState};
use crate::token::SessionId;
use crate::wheel::{TimerHandle, TimerWheel};

/// Keeps a lock on its own cache line, so threads on neighbouring shards do not
/// contend through false sharing.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A `Hasher` for keys that are already uniformly random `u128`s.
#[derive(Default, Clone, Copy)]
pub(crate) struct RandomKeyHasher(u64);

impl Hasher for RandomKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys that are not u128; fold the bytes in (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// The map type for random `u128` keys.
pub(crate) type RandomKeyMap<V> = HashMap<u128, V, BuildHasherDefault<RandomKeyHasher>>;

/// The old token of a rotated session, resolving to it until `until`.
pub(crate) struct Alias {
    pub(crate) session: SessionId,
    pub(crate) until: Timestamp,
    pub(crate) timer: TimerHandle,
}

/// What a token hash points at.
pub(crate) enum Slot {
    Live(Box<SessionState>),
    Alias(Box<Alias>),
}

/// One shard: sessions and aliases keyed by token hash, and their timers.
pub(crate) struct Shard {
    pub(crate) map: RandomKeyMap<Slot>,
    pub(crate) wheel: TimerWheel,
    /// Open instances (tabs) of this shard's sessions that have any — kept beside the
    /// sessions rather than in them, since most sessions never open one.
    pub(crate) instances: RandomKeyMap<Instances>,
}

impl Shard {
    pub(crate) fn new(now: Timestamp) -> Shard {
        Shard {
            map: RandomKeyMap::default(),
            wheel: TimerWheel::new(now.0),
            instances: RandomKeyMap::default(),
        }
    }

    pub(crate) fn live(&self, key: u128) -> Option<&SessionState> {
        match self.map.get(&key) {
            Some(Slot::Live(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn live_mut(&mut self, key: u128) -> Option<&mut SessionState> {
        match self.map.get_mut(&key) {
            Some(Slot::Live(s)) => Some(s),
            _ => None,
        }
    }

    /// Inserts a session and schedules its deadline.
    pub(crate) fn insert_live(
        &mut self,
        key: u128,
        mut state: Box<SessionState>,
        deadline: Timestamp,
    ) {
        state.timer = self.wheel.schedule(key, deadline.0);
        if let Some(Slot::Live(old)) = self.map.insert(key, Slot::Live(state)) {
            // Unreachable with random 128-bit keys; keep the wheel consistent anyway.
            self.wheel.cancel(old.timer, key);
        }
    }

    /// Removes the session at `key` (if it is `id`'s) and cancels its timer.
    pub(crate) fn remove_live(&mut self, key: u128, id: SessionId) -> Option<Box<SessionState>> {
        match self.map.get(&key) {
            Some(Slot::Live(s)) if s.id == id => {}
            _ => return None,
        }
        let Some(Slot::Live(s)) = self.map.remove(&key) else {
            return None;
        };
        self.wheel.cancel(s.timer, key);
        self.instances.remove(&key);
        Some(s)
    }

    /// Inserts an alias of `id` at `key` until `until`.
    pub(crate) fn insert_alias(&mut self, key: u128, id: SessionId, until: Timestamp) {
        let timer = self.wheel.schedule(key, until.0);
        self.map.insert(
            key,
            Slot::Alias(Box::new(Alias {
                session: id,
                until,
                timer,
            })),
        );
    }

    /// Moves the timer of the session at `key` earlier if its deadline moved earlier.
    /// (Later deadlines need nothing: the timer fires and is rescheduled.)
    pub(crate) fn reschedule_if_earlier(&mut self, key: u128, deadline: Timestamp) {
        let Some(Slot::Live(s)) = self.map.get_mut(&key) else {
            return;
        };
        let current = self.wheel.deadline(s.timer, key);
        if current.is_none_or(|c| deadline.0 < c) {
            s.timer = self.wheel.reschedule(s.timer, key, deadline.0);
        }
    }

    /// Number of live sessions (not aliases).
    pub(crate) fn live_count(&self) -> usize {
        self.map
            .values()
            .filter(|s| matches!(s, Slot::Live(_)))
            .count()
    }
}
