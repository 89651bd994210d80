//! Touches on their way to the log, held in buffers picked by the touching thread
//! until the writer drains them all — once per tick, before a request (a flush, a
//! compaction) and at close — and writes each touched session's latest touch once.
//!
//! A touch only moves an idle deadline, and the writer writes touches once per tick
//! anyway, so nothing is gained by sending each one to it: through the channel a
//! touch cost its thread the journal's sequence lock and a message, and the writer a
//! wake-up (on a quiet store, a futex wake per touch). Here it costs the lock of its
//! thread's buffer, which stays in its core's cache, and a push; the drain sorts all
//! buffers' touches by session and keeps the latest of each (a buffer that grows very
//! long settles itself the same way, so memory follows the sessions touched, not the
//! touches). Measured in `docs/performance.md` ("Touches sorted at the tick"): a map
//! from session to its latest touch cost a cache miss per touch and another for the
//! writer merging it; buffers picked by session moved every buffer's cache lines
//! between the cores of two touching threads.

use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::model::token::SessionId;
use crate::util::padded::Padded;

/// Touches as they came: a session touched again appears again until the buffer is
/// sorted ([`settle`]).
type Pending = Vec<(SessionId, Timestamp)>;

/// The entries all buffers together hold before a buffer is settled by the thread that
/// fills it: at a tick of 100 ms that is over 10 million touches a second, so only a long
/// tick (or a flood) meets it, and then a buffer holds about one entry per session
/// touched plus its share of this, however long the tick (24 MiB at most over that).
const SETTLE_TOTAL: usize = 1 << 20;

/// The touches not yet taken by the writer.
pub(crate) struct TouchBuffers {
    buffers: Box<[Padded<Mutex<Pending>>]>,
    mask: usize,
    /// A buffer this long is settled ([`SETTLE_TOTAL`] over the buffers, at least
    /// 4,096).
    settle_at: usize,
}

/// This thread's number, counted from 0 in the order threads first touch a session.
fn thread_slot() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

/// Sorts `pending` by session and keeps each session's latest touch only.
fn settle(pending: &mut Pending) {
    pending.sort_unstable_by_key(|&(id, _)| id);
    // `dedup_by` hands the entry it may drop first, and the one it keeps second.
    pending.dedup_by(|next, kept| {
        let same = next.0 == kept.0;
        if same {
            kept.1 = kept.1.max(next.1);
        }
        same
    });
}

impl TouchBuffers {
    /// Four buffers per core (a power of two, 8 to 256): threads touching at once
    /// share one only when there are more of them.
    pub(crate) fn new() -> TouchBuffers {
        let n = (crate::util::cores() * 4).next_power_of_two().clamp(8, 256);
        TouchBuffers {
            buffers: (0..n).map(|_| Padded(Mutex::new(Vec::new()))).collect(),
            mask: n - 1,
            settle_at: (SETTLE_TOTAL / n).max(1 << 12),
        }
    }

    /// Keeps `at` as a touch of the session (the latest of its touches is written).
    pub(crate) fn put(&self, id: SessionId, at: Timestamp) {
        // The thread picks the buffer: its lines stay in this core's cache (picked by
        // the session, two threads moved every buffer's lines between their cores).
        // The drain sorts all buffers together, wherever a session's touches went.
        let mut pending = self.buffers[thread_slot() & self.mask].lock();
        pending.push((id, at));
        if pending.len() >= self.settle_at && pending.len().is_power_of_two() {
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
    fn touches_of_one_session_from_many_threads_come_out_once_with_the_latest() {
        let buffers = TouchBuffers::new();
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let buffers = &buffers;
                s.spawn(move || {
                    for i in 0..500u128 {
                        buffers.put(id(i), Timestamp(t * 1000 + i as u64));
                    }
                });
            }
        });
        let out: Vec<_> = buffers.drain().collect();
        assert_eq!(out.len(), 500);
        for &(sid, at) in &out {
            let i = (0..500u128).find(|&i| id(i) == sid).unwrap();
            assert_eq!(
                at,
                Timestamp(5000 + i as u64),
                "session {i}: the latest thread's"
            );
        }
    }

    #[test]
    fn a_buffer_touched_past_its_settling_length_keeps_one_entry_per_session() {
        let buffers = TouchBuffers::new();
        // Every touch lands in this thread's buffer, 40 sessions over and over.
        let same = |i: u128| SessionId(i << 64);
        let settle_at = buffers.settle_at;
        for round in 0..(3 * settle_at as u64) {
            buffers.put(same(u128::from(round % 40)), Timestamp(round));
        }
        let len = buffers.buffers[thread_slot() & buffers.mask].lock().len();
        assert!(
            len <= 40 + settle_at,
            "bounded by sessions, not touches: {len}"
        );
        let out: Vec<_> = buffers.drain().collect();
        assert_eq!(out.len(), 40);
        let last = 3 * settle_at as u64 - 1;
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
