//! Touches on their way to the log, held in buffers picked by the session's id until
//! the writer drains them all — once per tick, before a request (a flush, a compaction)
//! and at close — and writes each touched session's latest touch once.
//!
//! A touch only moves an idle deadline, and the writer writes touches once per tick
//! anyway, so nothing is gained by sending each one to it: through the channel a
//! touch cost its thread the journal's sequence lock and a message, and the writer a
//! wake-up (on a quiet store, a futex wake per touch). Here it costs a short lock of
//! one of many buffers, which touches of other sessions rarely share, and a push: the
//! drain sorts by session and keeps the latest of each (a buffer that grows long
//! settles itself the same way, so it holds about one entry per session touched). A
//! map from session to its latest touch cost a cache miss per touch into a table of
//! every session touched in the tick, and another for the writer merging it (the sort
//! is ~15% less CPU per touch of 200,000 sessions at random: `docs/performance.md`).

use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::model::token::SessionId;
use crate::util::padded::Padded;

/// Touches as they came: a session touched again appears again until the buffer is
/// sorted ([`settle`]).
type Pending = Vec<(SessionId, Timestamp)>;

/// A buffer this long is settled by the thread that fills it, so a buffer holds about
/// one entry per session touched plus this many, however long the tick.
const SETTLE_AT: usize = 1 << 14;

/// The touches not yet taken by the writer.
pub(crate) struct TouchBuffers {
    buffers: Box<[Padded<Mutex<Pending>>]>,
    mask: usize,
}

/// Sorts `pending` by session and keeps each session's latest touch only.
fn settle(pending: &mut Pending) {
    pending.sort_unstable_by_key(|&(id, at)| (id, std::cmp::Reverse(at)));
    pending.dedup_by_key(|&mut (id, _)| id);
}

impl TouchBuffers {
    /// Four buffers per core (a power of two, 8 to 256): threads touching at once
    /// seldom meet on one.
    pub(crate) fn new() -> TouchBuffers {
        let n = (crate::util::cores() * 4).next_power_of_two().clamp(8, 256);
        TouchBuffers {
            buffers: (0..n).map(|_| Padded(Mutex::new(Vec::new()))).collect(),
            mask: n - 1,
        }
    }

    /// Keeps `at` as a touch of the session (the latest of its touches is written).
    pub(crate) fn put(&self, id: SessionId, at: Timestamp) {
        // The id is random: its low bits pick a buffer evenly.
        let mut pending = self.buffers[(id.0 as usize) & self.mask].lock();
        pending.push((id, at));
        if pending.len() >= SETTLE_AT && pending.len().is_power_of_two() {
            settle(&mut pending);
        }
    }

    /// Takes every buffered touch out: each session once, with its latest touch, in
    /// the order of their ids.
    pub(crate) fn drain(&self) -> impl Iterator<Item = (SessionId, Timestamp)> {
        let mut all = Vec::new();
        for buffer in &self.buffers {
            all.append(&mut buffer.lock());
        }
        settle(&mut all);
        all.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u128) -> SessionId {
        SessionId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    #[test]
    fn the_latest_touch_of_each_session_is_drained_once_in_id_order() {
        let buffers = TouchBuffers::new();
        for i in 0..1000u128 {
            buffers.put(id(i), Timestamp(5));
            buffers.put(id(i), Timestamp(9));
            buffers.put(id(i), Timestamp(7));
        }
        let out: Vec<_> = buffers.drain().collect();
        assert_eq!(out.len(), 1000, "each session once");
        assert!(out.iter().all(|&(_, at)| at == Timestamp(9)), "its latest");
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "in id order");
        assert_eq!(buffers.drain().count(), 0, "drained once");
    }

    #[test]
    fn a_buffer_touched_past_its_settling_length_keeps_one_entry_per_session() {
        let buffers = TouchBuffers::new();
        // Every touch lands in one buffer (same low bits), 40 sessions over and over.
        let same = |i: u128| SessionId(i << 64);
        for round in 0..(3 * SETTLE_AT as u64) {
            buffers.put(same(u128::from(round % 40)), Timestamp(round));
        }
        let len = buffers.buffers[0].lock().len();
        assert!(
            len <= 40 + SETTLE_AT,
            "bounded by sessions, not touches: {len}"
        );
        let out: Vec<_> = buffers.drain().collect();
        assert_eq!(out.len(), 40);
        let last = 3 * SETTLE_AT as u64 - 1;
        for (k, &(sid, at)) in out.iter().enumerate() {
            let i = (sid.0 >> 64) as u64;
            assert_eq!(i, k as u64);
            assert_eq!(
                at,
                Timestamp(last - (last - i) % 40),
                "session {i}: its latest"
            );
        }
    }
}
