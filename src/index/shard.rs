//! One shard of the index: the map from token hash to session (or to a rotation alias),
//! and the timing wheel of that shard's deadlines, under one lock.
//!
//! Token hashes are uniformly random, so the map hashes them by taking their low 64
//! bits (no hashing work on the hot path), and the store picks the shard from bits
//! 64 and up — independent bits, so each shard's table stays evenly spread. Sessions
//! are boxed; see [`Shard`] for how the maps key by half the hash.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::index::entry::{Instances, SessionState};
use crate::index::tally::Tally;
use crate::index::usage::{Reservation, Usage, cost};
use crate::index::wheel::{TimerHandle, TimerWheel};
use crate::model::event::EndReason;
use crate::model::token::SessionId;
use crate::util::hash::{IdHasher, RandomKeyHasher, RandomKeyMap};

/// Public id → the session's place in its shard (the low half of its token hash;
/// [`shard_of`] picks the shard from it). A slot is 24 bytes: the id is stored 8-byte
/// aligned.
pub(crate) type IdMap = HashMap<SessionId, u64, BuildHasherDefault<IdHasher>>;

/// The shard (of `mask + 1`) that a token hash's low half belongs to: bits 32 and up,
/// independent of the bits a shard's map uses to place and tag its entries (the lowest
/// and the top seven).
pub(crate) fn shard_of(lo: u64, mask: usize) -> usize {
    ((lo >> 32) as usize) & mask
}

/// The id shard (of `mask + 1`) of a public id.
pub(crate) fn id_ix(id: SessionId, mask: usize) -> usize {
    ((id.as_u128() >> 64) as usize) & mask
}

/// The old token of a rotated session, resolving to it until `until`.
pub(crate) struct Alias {
    pub(crate) session: SessionId,
    pub(crate) until: Timestamp,
    pub(crate) timer: TimerHandle,
    /// The high half of the old token's hash (the map keys by the low half).
    hash_hi: u64,
}

/// What a token hash pointed at, taken out of a shard.
pub(crate) enum Slot {
    Live(Box<SessionState>),
    /// An alias (its timer is the caller's to cancel, as for a session).
    Alias,
}

/// What a token hash points at, inside a shard.
pub(crate) enum SlotRef<'a> {
    Live(&'a SessionState),
    Alias(&'a Alias),
}

/// What a token hash points at, inside a shard, to change.
pub(crate) enum SlotMut<'a> {
    Live(&'a mut SessionState),
    Alias(&'a mut Alias),
}

fn halves(hash: u128) -> (u64, u64) {
    (hash as u64, (hash >> 64) as u64)
}

pub(crate) fn join(lo: u64, hi: u64) -> u128 {
    u128::from(lo) | (u128::from(hi) << 64)
}

/// One shard: sessions and aliases keyed by token hash, and their timers.
///
/// It keeps the estimated resident bytes of its sessions ([`crate::index::usage`])
/// exactly: every method that puts a session in or takes one out counts it, and a
/// session changed through [`Shard::live_mut`] is counted again when the change is
/// done. With a budget, the store-wide [`Usage`] is counted the same way.
///
/// The maps key by the low 64 bits of the 128-bit hash and keep the high 64 bits in
/// the entry, checked on every lookup: a map slot is 16 bytes (key and box), half what
/// a `u128` key and a two-way enum would take, and a million sessions' maps fit in half
/// the memory. No two entries of a shard share a low half; a new token whose low half
/// is taken is drawn again (for a fresh token) or refused (a given one), which with
/// random hashes happens about once in 2^64 / (sessions per shard) draws. Aliases,
/// which live only through a rotation's grace period, have a map of their own.
pub(crate) struct Shard {
    sessions: HashMap<u64, Box<SessionState>, BuildHasherDefault<RandomKeyHasher>>,
    aliases: HashMap<u64, Alias, BuildHasherDefault<RandomKeyHasher>>,
    pub(crate) wheel: TimerWheel,
    /// Open instances (tabs) of this shard's sessions that have any — kept beside the
    /// sessions rather than in them, since most sessions never open one.
    pub(crate) instances: RandomKeyMap<Instances>,
    /// The estimated resident bytes of this shard's sessions.
    bytes: u64,
    /// How many of its sessions have a user.
    signed_in: u64,
    /// The store-wide count, when the store has a budget.
    usage: Option<Arc<Usage>>,
    /// Sessions created, rotated, ended... here since the store opened.
    pub(crate) tally: Tally,
}

/// A live session being changed in place ([`Shard::live_mut`]): when it is dropped, the
/// session's cost is counted again, so a change of its data or label keeps the
/// shard's bytes (and the store's) exact.
pub(crate) struct LiveMut<'a> {
    state: &'a mut SessionState,
    before: u64,
    signed_in_before: bool,
    bytes: &'a mut u64,
    signed_in: &'a mut u64,
    usage: Option<&'a Usage>,
}

impl Deref for LiveMut<'_> {
    type Target = SessionState;
    fn deref(&self) -> &SessionState {
        self.state
    }
}

impl DerefMut for LiveMut<'_> {
    fn deref_mut(&mut self) -> &mut SessionState {
        self.state
    }
}

impl Drop for LiveMut<'_> {
    fn drop(&mut self) {
        let signed_in = self.state.user.is_some();
        if signed_in != self.signed_in_before {
            *self.signed_in = if signed_in {
                *self.signed_in + 1
            } else {
                *self.signed_in - 1
            };
        }
        let after = cost(self.state);
        if after != self.before {
            let delta = after as i64 - self.before as i64;
            *self.bytes = self.bytes.wrapping_add(delta as u64);
            if let Some(u) = self.usage {
                u.add(0, delta);
            }
        }
    }
}

impl Shard {
    pub(crate) fn new(now: Timestamp) -> Shard {
        Shard {
            sessions: HashMap::default(),
            aliases: HashMap::default(),
            wheel: TimerWheel::new(now.0),
            instances: RandomKeyMap::default(),
            bytes: 0,
            signed_in: 0,
            usage: None,
            tally: Tally::default(),
        }
    }

    /// Counts session `s` in (`sessions` 1) or out (-1): its bytes and whether it is
    /// signed in in this shard, and, when `global`, in the store-wide usage.
    fn count(&mut self, sessions: i64, s: &SessionState, global: bool) {
        let bytes = sessions * cost(s) as i64;
        if s.user.is_some() {
            self.signed_in = self.signed_in.wrapping_add(sessions as u64);
        }
        self.bytes = self.bytes.wrapping_add(bytes as u64);
        if global && let Some(u) = &self.usage {
            u.add(sessions, bytes);
        }
    }

    /// Counts this shard's sessions in the store-wide `usage` from now on (a store with
    /// a budget, once its index is built).
    pub(crate) fn attach(&mut self, usage: Arc<Usage>) {
        usage.add(self.sessions.len() as i64, self.bytes as i64);
        self.usage = Some(usage);
    }

    /// The estimated resident bytes of this shard's sessions.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// How many of this shard's sessions have a user.
    pub(crate) fn signed_in(&self) -> u64 {
        self.signed_in
    }

    /// Empties the shard (every session ended at once); its tally goes on, the
    /// sessions counted as cleared if `count`.
    pub(crate) fn clear(&mut self, now: Timestamp, count: bool) {
        let usage = self.usage.take();
        if let Some(u) = &usage {
            u.add(-(self.sessions.len() as i64), -(self.bytes as i64));
        }
        let mut tally = self.tally;
        if count {
            tally.ended[EndReason::Cleared.index()] += self.sessions.len() as u64;
        }
        *self = Shard::new(now);
        self.usage = usage;
        self.tally = tally;
    }

    /// Makes room for `n` more sessions.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.sessions.reserve(n);
    }

    /// What `hash` points at, if anything.
    pub(crate) fn get(&self, hash: u128) -> Option<SlotRef<'_>> {
        let (lo, hi) = halves(hash);
        if let Some(s) = self.sessions.get(&lo) {
            return (s.hash_hi == hi).then_some(SlotRef::Live(s));
        }
        match self.aliases.get(&lo) {
            Some(a) if a.hash_hi == hi => Some(SlotRef::Alias(a)),
            _ => None,
        }
    }

    /// What `hash` points at, to change.
    pub(crate) fn get_mut(&mut self, hash: u128) -> Option<SlotMut<'_>> {
        let (lo, hi) = halves(hash);
        if let Some(s) = self.sessions.get_mut(&lo) {
            return (s.hash_hi == hi).then_some(SlotMut::Live(s));
        }
        match self.aliases.get_mut(&lo) {
            Some(a) if a.hash_hi == hi => Some(SlotMut::Alias(a)),
            _ => None,
        }
    }

    /// The full hash of what sits at `lo` (the key a timer carries), if anything.
    pub(crate) fn hash_at(&self, lo: u64) -> Option<u128> {
        match self.sessions.get(&lo) {
            Some(s) => Some(join(lo, s.hash_hi)),
            None => self.aliases.get(&lo).map(|a| join(lo, a.hash_hi)),
        }
    }

    /// The live session at place `lo` (the low half of its token hash), with its full
    /// hash: one probe where `hash_at` then `live` would take two.
    pub(crate) fn live_at(&self, lo: u64) -> Option<(u128, &SessionState)> {
        self.sessions.get(&lo).map(|s| (join(lo, s.hash_hi), &**s))
    }

    /// The live session at place `lo`, found without reading it: a chunk's reads look
    /// up every place first and read the sessions after, so that the cache misses of
    /// each step overlap.
    pub(crate) fn state_at(&self, lo: u64) -> Option<&SessionState> {
        self.sessions.get(&lo).map(|s| &**s)
    }

    /// Takes out the live session at `hash` with its timer, for a caller that has just
    /// found it (by `live_at`) under the same lock.
    pub(crate) fn take_live(&mut self, hash: u128) -> Option<Box<SessionState>> {
        let s = self.sessions.remove(&(hash as u64))?;
        debug_assert_eq!(s.hash_hi, (hash >> 64) as u64);
        self.wheel.cancel(s.timer, hash as u64);
        if !self.instances.is_empty() {
            self.instances.remove(&hash);
        }
        self.count(-1, &s, true);
        Some(s)
    }

    /// Takes out what `hash` points at (its timer stays: the caller cancels it).
    pub(crate) fn remove(&mut self, hash: u128) -> Option<Slot> {
        match self.get(hash)? {
            SlotRef::Live(_) => {
                let s = self.sessions.remove(&(hash as u64))?;
                self.count(-1, &s, true);
                Some(Slot::Live(s))
            }
            SlotRef::Alias(_) => self.aliases.remove(&(hash as u64)).map(|_| Slot::Alias),
        }
    }

    /// Takes out the live session at `hash` to move it to another place (a rotation):
    /// its store-wide place stays taken for [`Shard::insert_moved`]. Its timer stays:
    /// the caller cancels it.
    pub(crate) fn remove_moving(&mut self, hash: u128) -> Option<Box<SessionState>> {
        self.live(hash)?;
        let s = self.sessions.remove(&(hash as u64))?;
        self.count(-1, &s, false);
        Some(s)
    }

    /// Inserts a session taken out by [`Shard::remove_moving`] at its new place (which
    /// the caller has checked is vacant) and schedules its deadline.
    pub(crate) fn insert_moved(
        &mut self,
        hash: u128,
        mut state: Box<SessionState>,
        deadline: Timestamp,
    ) {
        let (lo, hi) = halves(hash);
        debug_assert!(!self.occupied(hash));
        state.hash_hi = hi;
        state.timer = self.wheel.schedule(lo, deadline.0);
        self.count(1, &state, false);
        self.sessions.insert(lo, state);
    }

    /// True if nothing may be inserted at `hash`: an entry holds its low half.
    pub(crate) fn occupied(&self, hash: u128) -> bool {
        let lo = hash as u64;
        self.sessions.contains_key(&lo) || self.aliases.contains_key(&lo)
    }

    /// Inserts the session `make` builds at `hash` and schedules its deadline, with one
    /// probe of the map: `Ok(None)` (and `make` not called) if the place is taken.
    /// `reserved` is the store-wide place taken for it ahead (a store with a budget):
    /// taken from the caller if the session goes in, left with it otherwise.
    pub(crate) fn insert_vacant<R, E>(
        &mut self,
        hash: u128,
        reserved: &mut Option<Reservation<'_>>,
        make: impl FnOnce() -> Result<(Box<SessionState>, Timestamp, R), E>,
    ) -> Result<Option<R>, E> {
        let (lo, hi) = halves(hash);
        if self.aliases.contains_key(&lo) {
            return Ok(None);
        }
        let place = match self.sessions.entry(lo) {
            std::collections::hash_map::Entry::Occupied(_) => return Ok(None),
            std::collections::hash_map::Entry::Vacant(v) => v,
        };
        let (mut state, deadline, r) = make()?;
        state.hash_hi = hi;
        state.timer = self.wheel.schedule(hash as u64, deadline.0);
        let bytes = cost(&state);
        let signed_in = state.user.is_some();
        place.insert(state);
        // What the reservation took is what the session costs; counted here if none.
        let taken = reserved.take().map(Reservation::keep);
        self.signed_in += u64::from(signed_in);
        self.bytes += bytes;
        if taken.is_none()
            && let Some(u) = &self.usage
        {
            u.add(1, bytes as i64);
        }
        if let (Some(taken), Some(u)) = (taken, &self.usage) {
            u.add(0, bytes as i64 - taken as i64);
        }
        Ok(Some(r))
    }

    pub(crate) fn live(&self, hash: u128) -> Option<&SessionState> {
        match self.get(hash) {
            Some(SlotRef::Live(s)) => Some(s),
            _ => None,
        }
    }

    /// The live session at `hash`, to change in place; its cost is counted again when
    /// the guard is dropped.
    pub(crate) fn live_mut(&mut self, hash: u128) -> Option<LiveMut<'_>> {
        let (lo, hi) = halves(hash);
        let Shard {
            sessions,
            bytes,
            signed_in,
            usage,
            ..
        } = self;
        let state = sessions.get_mut(&lo).filter(|s| s.hash_hi == hi)?;
        Some(LiveMut {
            before: cost(state),
            signed_in_before: state.user.is_some(),
            state,
            bytes,
            signed_in,
            usage: usage.as_deref(),
        })
    }

    /// Inserts a session and schedules its deadline, replacing whatever held the place
    /// (recovery replays records in order; a later one wins).
    pub(crate) fn insert_live(
        &mut self,
        hash: u128,
        mut state: Box<SessionState>,
        deadline: Timestamp,
    ) {
        let (lo, hi) = halves(hash);
        if let Some(a) = self.aliases.remove(&lo) {
            self.wheel.cancel(a.timer, lo);
        }
        state.hash_hi = hi;
        state.timer = self.wheel.schedule(hash as u64, deadline.0);
        self.count(1, &state, true);
        if let Some(old) = self.sessions.insert(lo, state) {
            self.wheel.cancel(old.timer, lo);
            self.instances.remove(&join(lo, old.hash_hi));
            self.count(-1, &old, true);
        }
    }

    /// Removes the session at `hash` (if it is `id`'s) and cancels its timer.
    pub(crate) fn remove_live(&mut self, hash: u128, id: SessionId) -> Option<Box<SessionState>> {
        if self.live(hash)?.id != id {
            return None;
        }
        let s = self.sessions.remove(&(hash as u64))?;
        self.wheel.cancel(s.timer, hash as u64);
        self.instances.remove(&hash);
        self.count(-1, &s, true);
        Some(s)
    }

    /// Inserts an alias of `id` at `hash` until `until`, replacing whatever held the
    /// place.
    pub(crate) fn insert_alias(&mut self, hash: u128, id: SessionId, until: Timestamp) {
        let (lo, hi) = halves(hash);
        if let Some(old) = self.sessions.remove(&lo) {
            self.wheel.cancel(old.timer, lo);
            self.instances.remove(&join(lo, old.hash_hi));
            self.count(-1, &old, true);
        }
        let timer = self.wheel.schedule(hash as u64, until.0);
        let alias = Alias {
            session: id,
            until,
            timer,
            hash_hi: hi,
        };
        if let Some(old) = self.aliases.insert(lo, alias) {
            self.wheel.cancel(old.timer, lo);
        }
    }

    /// Schedules a new timer for what `hash` points at (its old one has fired).
    pub(crate) fn rearm(&mut self, hash: u128, deadline: Timestamp) {
        let timer = self.wheel.schedule(hash as u64, deadline.0);
        match self.get_mut(hash) {
            Some(SlotMut::Live(s)) => s.timer = timer,
            Some(SlotMut::Alias(a)) => a.timer = timer,
            None => {
                self.wheel.cancel(timer, hash as u64);
            }
        }
    }

    /// Moves the timer of the session at `hash` earlier if its deadline moved earlier.
    /// (Later deadlines need nothing: the timer fires and is rescheduled.)
    pub(crate) fn reschedule_if_earlier(&mut self, hash: u128, deadline: Timestamp) {
        let Some(timer) = self.live(hash).map(|s| s.timer) else {
            return;
        };
        let current = self.wheel.deadline(timer, hash as u64);
        if current.is_none_or(|c| deadline.0 < c) {
            let timer = self.wheel.reschedule(timer, hash as u64, deadline.0);
            // A timer is not part of a session's cost: no `live_mut` guard needed.
            if let Some(SlotMut::Live(s)) = self.get_mut(hash) {
                s.timer = timer;
            }
        }
    }

    /// Number of live sessions (not aliases).
    pub(crate) fn live_count(&self) -> usize {
        self.sessions.len()
    }

    /// Appends the places (low hash halves) of this shard's sessions to `out`, in the
    /// map's order: looked up again in that order, they walk its table from one end
    /// to the other.
    pub(crate) fn places(&self, out: &mut Vec<u64>) {
        out.extend(self.sessions.keys().copied());
    }

    /// Number of sessions and aliases.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len() + self.aliases.len()
    }

    /// Every session and alias with its full hash.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, SlotRef<'_>)> + '_ {
        let live = self
            .sessions
            .iter()
            .map(|(&lo, s)| (join(lo, s.hash_hi), SlotRef::Live(s)));
        let aliases = self
            .aliases
            .iter()
            .map(|(&lo, a)| (join(lo, a.hash_hi), SlotRef::Alias(a)));
        live.chain(aliases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::entry::MaybeTime;
    use crate::model::data::SessionData;

    fn session(id: u128) -> Box<SessionState> {
        Box::new(SessionState {
            id: SessionId(id),
            user: None,
            details: None,
            created: Timestamp(0),
            authenticated: MaybeTime::NONE,
            absolute: Timestamp(1_000_000),
            idle_ms: 0,
            last_seen: 0.into(),
            version: 0,
            data: SessionData::default(),
            timer: TimerHandle::detached(),
            compacted: 0.into(),
            hash_hi: 0,
        })
    }

    const A: u128 = 0x1111_2222_3333_4444_5555_6666_7777_8888;
    /// Shares A's low half (the map key), not its high half.
    const A_TWIN: u128 = 0x9999_2222_3333_4444_5555_6666_7777_8888;

    #[test]
    fn a_hash_sharing_only_the_low_half_finds_nothing() {
        let mut shard = Shard::new(Timestamp(0));
        shard.insert_live(A, session(1), Timestamp(1000));
        assert_eq!(shard.live(A).map(|s| s.id), Some(SessionId(1)));
        assert!(shard.get(A_TWIN).is_none());
        assert!(shard.live_mut(A_TWIN).is_none());
        assert!(shard.remove(A_TWIN).is_none());
        assert!(shard.remove_live(A_TWIN, SessionId(1)).is_none());
        assert_eq!(shard.live_count(), 1);
        // Yet its place is taken: nothing may be inserted there.
        assert!(shard.occupied(A_TWIN));
        let r: Result<Option<()>, ()> =
            shard.insert_vacant(A_TWIN, &mut None, || Ok((session(2), Timestamp(1000), ())));
        assert_eq!(r, Ok(None));
        assert_eq!(shard.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![A]);
    }

    #[test]
    fn aliases_are_found_by_their_full_hash_and_block_their_place() {
        let mut shard = Shard::new(Timestamp(0));
        shard.insert_alias(A, SessionId(5), Timestamp(500));
        assert!(matches!(shard.get(A), Some(SlotRef::Alias(a)) if a.session == SessionId(5)));
        assert!(shard.get(A_TWIN).is_none());
        assert!(shard.occupied(A_TWIN));
        let r: Result<Option<()>, ()> =
            shard.insert_vacant(A, &mut None, || Ok((session(2), Timestamp(1000), ())));
        assert_eq!(r, Ok(None));
        assert_eq!((shard.len(), shard.live_count()), (1, 0));
        assert_eq!(shard.wheel.len(), 1);
    }

    #[test]
    fn insert_vacant_stores_the_high_half_and_schedules_the_timer() {
        let mut shard = Shard::new(Timestamp(0));
        let r: Result<Option<u8>, ()> =
            shard.insert_vacant(A, &mut None, || Ok((session(3), Timestamp(2048), 7)));
        assert_eq!(r, Ok(Some(7)));
        let s = shard.live(A).unwrap();
        assert_eq!(shard.wheel.deadline(s.timer, A as u64), Some(2048));
        // A failing builder leaves the place empty.
        let r: Result<Option<u8>, &str> = shard.insert_vacant(A_TWIN ^ 1, &mut None, || Err("no"));
        assert_eq!(r, Err("no"));
        assert!(!shard.occupied(A_TWIN ^ 1));
    }

    #[test]
    fn every_way_in_and_out_counts_the_bytes_and_a_move_keeps_the_store_wide_place() {
        let usage = Arc::new(Usage::default());
        let mut shard = Shard::new(Timestamp(0));
        shard.attach(Arc::clone(&usage));
        let one = cost(&session(1));
        shard.insert_live(A, session(1), Timestamp(1000));
        assert_eq!(
            (shard.bytes(), usage.sessions(), usage.bytes()),
            (one, 1, one)
        );
        // Data written in place is counted when the guard drops.
        let mut data = SessionData::default();
        data.insert("k", &vec![0u8; 100]).unwrap();
        shard.live_mut(A).unwrap().data = data;
        let grown = cost(shard.live(A).unwrap());
        assert!(grown > one + 100);
        assert_eq!((shard.bytes(), usage.bytes()), (grown, grown));
        // A move takes the session out and back without giving up its place.
        let moved = shard.remove_moving(A).unwrap();
        shard.wheel.cancel(moved.timer, A as u64);
        assert_eq!(
            (shard.bytes(), usage.sessions(), usage.bytes()),
            (0, 1, grown)
        );
        shard.insert_moved(A_TWIN ^ 1, moved, Timestamp(1000));
        assert_eq!((shard.bytes(), usage.sessions()), (grown, 1));
        // A reserved create keeps its reservation; an occupied place gives it back.
        let mut reserved = usage.reserve(one, 10, u64::MAX);
        let r: Result<Option<()>, ()> =
            shard.insert_vacant(A_TWIN ^ 1, &mut reserved, || unreachable!("occupied"));
        assert_eq!(r, Ok(None));
        assert!(reserved.is_some());
        let r: Result<Option<()>, ()> =
            shard.insert_vacant(A, &mut reserved, || Ok((session(2), Timestamp(900), ())));
        assert_eq!(r, Ok(Some(())));
        assert!(reserved.is_none());
        assert_eq!((usage.sessions(), usage.bytes()), (2, grown + one));
        // An alias over a session, a removal and a clear each give back what they end.
        shard.insert_alias(A, SessionId(2), Timestamp(500));
        assert_eq!((usage.sessions(), usage.bytes()), (1, grown));
        shard.clear(Timestamp(0), true);
        assert_eq!((shard.bytes(), usage.sessions(), usage.bytes()), (0, 0, 0));
    }

    #[test]
    fn signed_in_sessions_are_counted_every_way_in_and_out_and_a_clear_is_tallied() {
        let mut shard = Shard::new(Timestamp(0));
        let signed = || {
            let mut s = session(1);
            s.user = Some(crate::model::session::UserId::trusted("u"));
            s
        };
        shard.insert_live(A, signed(), Timestamp(1000));
        assert_eq!(shard.signed_in(), 1);
        // A logout in place, then a login in place.
        shard.live_mut(A).unwrap().user = None;
        assert_eq!(shard.signed_in(), 0);
        shard.live_mut(A).unwrap().user = Some(crate::model::session::UserId::trusted("v"));
        assert_eq!(shard.signed_in(), 1);
        // Moved (a rotation) and back: still one.
        let moved = shard.remove_moving(A).unwrap();
        assert_eq!(shard.signed_in(), 0);
        shard.wheel.cancel(moved.timer, A as u64);
        shard.insert_moved(A_TWIN ^ 1, moved, Timestamp(1000));
        assert_eq!(shard.signed_in(), 1);
        // Replaced by a replay of an anonymous one, then an alias over it.
        shard.insert_live(A_TWIN ^ 1, session(1), Timestamp(1000));
        assert_eq!(shard.signed_in(), 0);
        shard.insert_live(A, signed(), Timestamp(1000));
        shard.insert_alias(A, SessionId(1), Timestamp(500));
        assert_eq!(shard.signed_in(), 0);
        shard.insert_live(A, signed(), Timestamp(1000));
        shard.tally.end(EndReason::Ended);
        shard.clear(Timestamp(0), true);
        assert_eq!(shard.signed_in(), 0);
        assert_eq!(shard.tally.ended[EndReason::Cleared.index()], 2);
        assert_eq!(
            shard.tally.ended[EndReason::Ended.index()],
            1,
            "the tally goes on"
        );
        shard.insert_live(A, signed(), Timestamp(1000));
        shard.clear(Timestamp(0), false);
        assert_eq!(
            shard.tally.ended[EndReason::Cleared.index()],
            2,
            "recovery counts none"
        );
    }

    #[test]
    fn replacing_a_session_or_alias_cancels_the_old_timer() {
        let mut shard = Shard::new(Timestamp(0));
        shard.insert_live(A, session(1), Timestamp(1000));
        shard.insert_alias(A, SessionId(1), Timestamp(500));
        assert_eq!(
            (shard.live_count(), shard.len(), shard.wheel.len()),
            (0, 1, 1)
        );
        shard.insert_live(A, session(2), Timestamp(1000));
        assert_eq!(
            (shard.live_count(), shard.len(), shard.wheel.len()),
            (1, 1, 1)
        );
    }
}
