//! Touches on their way to the log: the latest per session, held in buffers picked by
//! the session's id until the writer drains them all — once per tick, before a request
//! (a flush, a compaction) and at close.
//!
//! A touch only moves an idle deadline, and the writer writes touches once per tick
//! anyway, so nothing is gained by sending each one to it: through the channel a
//! touch cost its thread the journal's sequence lock and a message, and the writer a
//! wake-up (on a quiet store, a futex wake per touch). Here it costs a short lock of
//! one of many buffers, which touches of other sessions rarely share.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use parking_lot::Mutex;

use crate::clock::Timestamp;
use crate::model::token::SessionId;
use crate::util::hash::IdHasher;
use crate::util::padded::Padded;

type Latest = HashMap<SessionId, Timestamp, BuildHasherDefault<IdHasher>>;

/// The touches not yet taken by the writer.
pub(crate) struct TouchBuffers {
    buffers: Box<[Padded<Mutex<Latest>>]>,
    mask: usize,
}

impl TouchBuffers {
    /// Four buffers per core (a power of two, 8 to 256): threads touching at once
    /// seldom meet on one.
    pub(crate) fn new() -> TouchBuffers {
        let n = (crate::util::cores() * 4).next_power_of_two().clamp(8, 256);
        TouchBuffers {
            buffers: (0..n)
                .map(|_| Padded(Mutex::new(Latest::default())))
                .collect(),
            mask: n - 1,
        }
    }

    /// Keeps `at` as the session's latest touch, unless a later one is there.
    pub(crate) fn put(&self, id: SessionId, at: Timestamp) {
        // The id is random: its low bits pick a buffer evenly.
        let mut latest = self.buffers[(id.0 as usize) & self.mask].lock();
        let t = latest.entry(id).or_insert(at);
        *t = (*t).max(at);
    }

    /// Moves every buffered touch into `into` (keeping the later of two for a session).
    pub(crate) fn drain_into<S: std::hash::BuildHasher>(
        &self,
        into: &mut HashMap<SessionId, Timestamp, S>,
    ) {
        for buffer in &self.buffers {
            let mut latest = buffer.lock();
            for (id, at) in latest.drain() {
                let t = into.entry(id).or_insert(at);
                *t = (*t).max(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_touch_of_each_session_is_drained_once() {
        let buffers = TouchBuffers::new();
        for i in 0..1000u128 {
            let id = SessionId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            buffers.put(id, Timestamp(5));
            buffers.put(id, Timestamp(9));
            buffers.put(id, Timestamp(7));
        }
        let mut into: HashMap<SessionId, Timestamp> = HashMap::new();
        into.insert(
            SessionId(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
            Timestamp(11),
        );
        buffers.drain_into(&mut into);
        assert_eq!(into.len(), 1000);
        assert_eq!(into[&SessionId(0)], Timestamp(9));
        assert_eq!(
            into[&SessionId(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)],
            Timestamp(11),
            "a later touch taken before stays"
        );
        assert!(into.values().all(|&t| t >= Timestamp(9)));
        let mut again: HashMap<SessionId, Timestamp> = HashMap::new();
        buffers.drain_into(&mut again);
        assert!(again.is_empty(), "drained once");
    }
}
