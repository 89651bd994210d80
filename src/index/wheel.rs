//! A hierarchical timing wheel: O(1) schedule and cancel of deadlines, and an `advance`
//! that hands back what is due without scanning what is not.
//!
//! The design is Varghese & Lauck's hierarchical timing wheels ("Hashed and
//! Hierarchical Timing Wheels", SOSP 1987), in the cascading form of the classic Linux
//! kernel timer wheel. Time is cut into ticks of 1,024 ms; each level has 64 slots, and
//! each level's slot spans the whole of the level below:
//!
//! | level | one slot spans | the level spans   |
//! |-------|----------------|-------------------|
//! | 0     | 1.024 s        | ~65 seconds       |
//! | 1     | ~65 s          | ~70 minutes       |
//! | 2     | ~70 min        | ~3 days           |
//! | 3     | ~3 days        | ~6.5 months       |
//! | 4     | ~6.5 months    | ~34 years         |
//!
//! A timer goes into the lowest level whose span covers its distance from now. When the
//! level-0 hand reaches a slot boundary of a higher level, that higher slot is emptied
//! into the levels below ("cascade"); a timer is therefore moved at most once per level.
//! A deadline beyond 34 years is clamped: it fires early, and the owner reschedules it.
//! A hand moved further than that at once (a clock stepping decades ahead) takes every
//! timer out and places it again from the new hand, rather than walk there.
//!
//! Timers live in a slab of nodes linked into per-slot doubly linked lists, so cancel
//! is an O(1) unlink through the [`TimerHandle`]. Each store shard owns one wheel,
//! guarded by the shard's lock, so a touch (which only moves a deadline later, and only
//! under the shard's *read* lock) never takes a wheel lock: the timer fires at the old
//! deadline, the owner sees the real deadline is later, and reschedules (the trick
//! Caffeine's and moka's wheels use for variable expiry).

const TICK_BITS: u32 = 10;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = SLOTS as u64 - 1;
const LEVELS: usize = 5;
const NIL: u32 = u32::MAX;
/// The furthest a timer can be placed, in ticks.
const MAX_TICKS: u64 = 1 << (SLOT_BITS * LEVELS as u32);

/// Where a scheduled timer sits; pass it back to cancel or query the timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerHandle(u32);

impl TimerHandle {
    /// A handle that owns no timer (cancel and deadline queries on it do nothing).
    pub(crate) fn detached() -> TimerHandle {
        TimerHandle(NIL)
    }
}

/// A timer: 32 bytes, one per session. Its key is the session's place in its shard's
/// map (the low half of the token hash, unique within a shard).
#[derive(Clone, Debug)]
struct Node {
    key: u64,
    deadline: u64,
    prev: u32,
    next: u32,
    /// `LEVELS` when the node is free.
    level: u8,
    slot: u8,
}

/// A hierarchical timing wheel over millisecond deadlines, keyed by `u64`.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    heads: [[u32; SLOTS]; LEVELS],
    counts: [usize; LEVELS],
    nodes: Vec<Node>,
    free: u32,
    /// Ticks before this one are fully processed; this one may be partly processed.
    tick: u64,
    len: usize,
}

impl TimerWheel {
    /// An empty wheel whose hand stands at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> TimerWheel {
        TimerWheel {
            heads: [[NIL; SLOTS]; LEVELS],
            counts: [0; LEVELS],
            nodes: Vec::new(),
            free: NIL,
            tick: now_ms >> TICK_BITS,
            len: 0,
        }
    }

    /// Number of scheduled timers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Schedules `key` to fire at `deadline_ms`. O(1).
    pub(crate) fn schedule(&mut self, key: u64, deadline_ms: u64) -> TimerHandle {
        let idx = if self.free == NIL {
            self.nodes.push(Node {
                key,
                deadline: deadline_ms,
                prev: NIL,
                next: NIL,
                level: LEVELS as u8,
                slot: 0,
            });
            (self.nodes.len() - 1) as u32
        } else {
            let idx = self.free;
            self.free = self.nodes[idx as usize].next;
            let n = &mut self.nodes[idx as usize];
            n.key = key;
            n.deadline = deadline_ms;
            idx
        };
        self.place(idx);
        self.len += 1;
        TimerHandle(idx)
    }

    /// Cancels the timer at `handle` if it is still `key`'s. O(1). True if it was.
    pub(crate) fn cancel(&mut self, handle: TimerHandle, key: u64) -> bool {
        if !self.owns(handle, key) {
            return false;
        }
        self.unlink(handle.0);
        self.release(handle.0);
        true
    }

    /// Reads the node at `handle` and its list neighbours, so a cancel that follows
    /// finds them in cache: a batch warms all its timers first and their memory
    /// fetches overlap instead of queueing behind each other. Returns a value only so
    /// the reads are not optimised away.
    pub(crate) fn warm(&self, handle: TimerHandle) -> u64 {
        let Some(n) = self.nodes.get(handle.0 as usize) else {
            return 0;
        };
        let near = |i: u32| self.nodes.get(i as usize).map_or(0, |m| m.deadline);
        n.deadline ^ near(n.prev) ^ near(n.next)
    }

    /// The deadline of the timer at `handle`, if it is still `key`'s.
    pub(crate) fn deadline(&self, handle: TimerHandle, key: u64) -> Option<u64> {
        self.owns(handle, key)
            .then(|| self.nodes[handle.0 as usize].deadline)
    }

    /// Moves `key`'s timer to `deadline_ms` (or schedules a new one if `handle` is no
    /// longer `key`'s). O(1).
    pub(crate) fn reschedule(
        &mut self,
        handle: TimerHandle,
        key: u64,
        deadline_ms: u64,
    ) -> TimerHandle {
        if self.owns(handle, key) {
            self.unlink(handle.0);
            self.nodes[handle.0 as usize].deadline = deadline_ms;
            self.place(handle.0);
            handle
        } else {
            self.schedule(key, deadline_ms)
        }
    }

    /// Moves the hand to `now_ms` and appends `(key, deadline)` of every timer whose
    /// deadline is at or before `now_ms` to `due`, removing them from the wheel. Timers
    /// due later stay. Moving backwards (a wall clock stepping back) does nothing.
    pub(crate) fn advance(&mut self, now_ms: u64, due: &mut Vec<(u64, u64)>) {
        let target = now_ms >> TICK_BITS;
        if target < self.tick {
            return;
        }
        if target - self.tick >= MAX_TICKS {
            self.leap(target, now_ms, due);
            return;
        }
        let mut t = self.tick;
        loop {
            // Entering tick t: the cascade of every level whose slot boundary is at t,
            // highest first, so that its timers can fall through to level 0.
            self.tick = t;
            if t & SLOT_MASK == 0 {
                for level in (1..LEVELS).rev() {
                    let span_bits = SLOT_BITS * level as u32;
                    if t & ((1u64 << span_bits) - 1) == 0 {
                        self.cascade(level, ((t >> span_bits) & SLOT_MASK) as usize);
                    }
                }
            }
            self.fire(t, now_ms, due);
            if t == target {
                break;
            }
            t += 1;
            // Skip stretches where nothing can happen: if the lowest non-empty level is
            // `l`, nothing fires or cascades before the next multiple of 64^l ticks.
            if self.counts[0] == 0 {
                match (1..LEVELS).find(|&l| self.counts[l] > 0) {
                    None => t = target,
                    Some(l) => {
                        let span = 1u64 << (SLOT_BITS * l as u32);
                        let next = t.div_ceil(span).saturating_mul(span);
                        t = next.min(target);
                    }
                }
            }
        }
        self.tick = target;
    }

    /// Moves the hand more than the whole wheel's span ahead at once (a clock stepping
    /// decades forward): takes every timer out, hands back the due ones and places the
    /// rest from the new hand. O(timers), where walking there would cascade the timers
    /// clamped to the far edge once per top-level slot (billions of times on the way to
    /// the end of time).
    fn leap(&mut self, target: u64, now_ms: u64, due: &mut Vec<(u64, u64)>) {
        let mut later = Vec::new();
        for level in 0..LEVELS {
            for slot in 0..SLOTS {
                let mut idx = std::mem::replace(&mut self.heads[level][slot], NIL);
                while idx != NIL {
                    let n = &self.nodes[idx as usize];
                    let next = n.next;
                    if n.deadline <= now_ms {
                        due.push((n.key, n.deadline));
                        self.release(idx);
                    } else {
                        later.push(idx);
                    }
                    idx = next;
                }
            }
            self.counts[level] = 0;
        }
        self.tick = target;
        for idx in later {
            self.place(idx);
        }
    }

    /// Every timer as `(key, deadline)`, for consistency checks.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64, TimerHandle)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| (n.level as usize) < LEVELS)
            .map(|(i, n)| (n.key, n.deadline, TimerHandle(i as u32)))
    }

    fn owns(&self, handle: TimerHandle, key: u64) -> bool {
        self.nodes
            .get(handle.0 as usize)
            .is_some_and(|n| (n.level as usize) < LEVELS && n.key == key)
    }

    /// Links node `idx` into the slot its deadline belongs to, relative to the hand.
    fn place(&mut self, idx: u32) {
        let deadline_tick = self.nodes[idx as usize].deadline >> TICK_BITS;
        let mut at = deadline_tick.max(self.tick);
        if at - self.tick >= MAX_TICKS {
            at = self.tick + MAX_TICKS - 1;
        }
        let delta = at - self.tick;
        let mut level = 0;
        while level + 1 < LEVELS && delta >= 1u64 << (SLOT_BITS * (level as u32 + 1)) {
            level += 1;
        }
        let slot = ((at >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize;
        let head = self.heads[level][slot];
        {
            let n = &mut self.nodes[idx as usize];
            n.level = level as u8;
            n.slot = slot as u8;
            n.prev = NIL;
            n.next = head;
        }
        if head != NIL {
            self.nodes[head as usize].prev = idx;
        }
        self.heads[level][slot] = idx;
        self.counts[level] += 1;
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next, level, slot) = {
            let n = &self.nodes[idx as usize];
            (n.prev, n.next, n.level as usize, n.slot as usize)
        };
        if prev == NIL {
            self.heads[level][slot] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        self.counts[level] -= 1;
    }

    fn release(&mut self, idx: u32) {
        let n = &mut self.nodes[idx as usize];
        n.level = LEVELS as u8;
        n.prev = NIL;
        n.next = self.free;
        self.free = idx;
        self.len -= 1;
    }

    fn cascade(&mut self, level: usize, slot: usize) {
        let mut idx = std::mem::replace(&mut self.heads[level][slot], NIL);
        while idx != NIL {
            let next = self.nodes[idx as usize].next;
            self.counts[level] -= 1;
            self.place(idx);
            idx = next;
        }
    }

    fn fire(&mut self, t: u64, now_ms: u64, due: &mut Vec<(u64, u64)>) {
        let slot = (t & SLOT_MASK) as usize;
        let mut idx = self.heads[0][slot];
        while idx != NIL {
            let next = self.nodes[idx as usize].next;
            let n = &self.nodes[idx as usize];
            if n.deadline <= now_ms {
                due.push((n.key, n.deadline));
                self.unlink(idx);
                self.release(idx);
            }
            idx = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn drain(w: &mut TimerWheel, now: u64) -> Vec<(u64, u64)> {
        let mut due = Vec::new();
        w.advance(now, &mut due);
        due.sort();
        due
    }

    #[test]
    fn a_timer_node_is_32_bytes() {
        // One per session; part of the memory budget.
        assert_eq!(std::mem::size_of::<Node>(), 32);
    }

    #[test]
    fn timer_fires_exactly_when_its_deadline_passes() {
        let mut w = TimerWheel::new(0);
        w.schedule(1, 5_000);
        assert!(drain(&mut w, 4_999).is_empty());
        assert_eq!(drain(&mut w, 5_000), vec![(1, 5_000)]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn cancelled_timer_never_fires_and_its_node_is_reused() {
        let mut w = TimerWheel::new(0);
        let h = w.schedule(7, 10_000);
        assert!(w.cancel(h, 7));
        assert!(!w.cancel(h, 7));
        let h2 = w.schedule(8, 20_000);
        assert_eq!(h, h2, "freed node is reused");
        assert!(
            !w.cancel(h, 7),
            "a reused node is not cancelled by its old owner"
        );
        assert_eq!(drain(&mut w, 100_000), vec![(8, 20_000)]);
    }

    #[test]
    fn far_deadlines_cascade_down_and_fire_on_time() {
        let day = 86_400_000u64;
        let mut w = TimerWheel::new(1_700_000_000_000);
        let base = 1_700_000_000_000u64;
        let deadlines = [
            base + 3_000,
            base + 90_000,
            base + 2 * 3_600_000,
            base + 5 * day,
            base + 200 * day,
        ];
        for (i, d) in deadlines.iter().enumerate() {
            w.schedule(i as u64, *d);
        }
        for (i, d) in deadlines.iter().enumerate() {
            assert!(drain(&mut w, d - 1).is_empty(), "timer {i} fired early");
            assert_eq!(drain(&mut w, *d), vec![(i as u64, *d)], "timer {i}");
        }
    }

    #[test]
    fn huge_jump_fires_everything_due_at_once() {
        let mut w = TimerWheel::new(0);
        for i in 0..1000u64 {
            w.schedule(i, i * 7_919_000);
        }
        let due = drain(&mut w, 1000 * 7_919_000);
        assert_eq!(due.len(), 1000);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_deadline_fires_at_next_advance() {
        let mut w = TimerWheel::new(1_000_000);
        w.schedule(1, 10);
        assert_eq!(drain(&mut w, 1_000_000), vec![(1, 10)]);
    }

    #[test]
    fn deadline_beyond_the_top_level_is_clamped_not_lost() {
        let mut w = TimerWheel::new(0);
        w.schedule(1, u64::MAX);
        let far = MAX_TICKS << TICK_BITS;
        let due = drain(&mut w, far);
        assert_eq!(due, vec![]);
        assert_eq!(
            w.len(),
            1,
            "a clamped timer stays until the owner reschedules"
        );
        // It sits in the furthest slot; the node is still there to cancel.
        let (key, deadline, h) = w.iter().next().unwrap();
        assert_eq!((key, deadline), (1, u64::MAX));
        assert!(w.cancel(h, 1));
    }

    #[test]
    fn a_leap_to_the_end_of_time_is_one_step_that_fires_what_is_due() {
        let mut w = TimerWheel::new(0);
        w.schedule(1, 5_000);
        w.schedule(2, 1 << 50);
        w.schedule(3, u64::MAX);
        // Walked a top-level slot at a time, this took 2^30 steps, cascading timer 3
        // (clamped to the far edge) at each.
        assert_eq!(drain(&mut w, 1 << 51), vec![(1, 5_000), (2, 1 << 50)]);
        assert!(drain(&mut w, u64::MAX - 1).is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, u64::MAX), vec![(3, u64::MAX)]);
        w.schedule(4, 7);
        assert_eq!(drain(&mut w, u64::MAX), vec![(4, 7)]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn reschedule_moves_a_timer() {
        let mut w = TimerWheel::new(0);
        let h = w.schedule(3, 1_000);
        let h = w.reschedule(h, 3, 60_000);
        assert_eq!(w.deadline(h, 3), Some(60_000));
        assert!(drain(&mut w, 59_999).is_empty());
        assert_eq!(drain(&mut w, 60_000), vec![(3, 60_000)]);
    }

    /// Random schedules, cancels and advances against a `BTreeMap` model.
    #[test]
    fn wheel_agrees_with_a_sorted_map_model() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let op = prop_oneof![
            (0u64..64, 0u64..20_000_000).prop_map(|(k, d)| (0u8, k, d)),
            (0u64..64, 0u64..1).prop_map(|(k, d)| (1u8, k, d)),
            (0u64..1, 0u64..5_000_000).prop_map(|(k, d)| (2u8, k, d)),
        ];
        runner
            .run(&proptest::collection::vec(op, 1..200), |ops| {
                let mut w = TimerWheel::new(0);
                let mut now = 0u64;
                let mut model: BTreeMap<u64, (u64, TimerHandle)> = BTreeMap::new();
                for (kind, key, x) in ops {
                    match kind {
                        0 => {
                            let deadline = now + x;
                            let h = match model.get(&key) {
                                Some(&(_, h)) => w.reschedule(h, key, deadline),
                                None => w.schedule(key, deadline),
                            };
                            model.insert(key, (deadline, h));
                        }
                        1 => {
                            if let Some((_, h)) = model.remove(&key) {
                                prop_assert!(w.cancel(h, key));
                            }
                        }
                        _ => {
                            now += x;
                            let got = drain(&mut w, now);
                            let mut want: Vec<(u64, u64)> = model
                                .iter()
                                .filter(|(_, (d, _))| *d <= now)
                                .map(|(k, (d, _))| (*k, *d))
                                .collect();
                            want.sort();
                            for (k, _) in &want {
                                model.remove(k);
                            }
                            prop_assert_eq!(got, want);
                        }
                    }
                    prop_assert_eq!(w.len(), model.len());
                }
                Ok(())
            })
            .unwrap();
    }
}
