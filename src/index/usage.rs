//! What the live sessions cost: a session's estimated resident bytes ([`cost`]), and
//! [`Usage`], the store-wide count and bytes a memory budget is enforced against.
//!
//! Each shard keeps its own totals exactly, under its lock, as sessions come and go
//! and their data changes (see [`crate::index::shard::Shard`]). A store with a budget
//! also gives every shard the one [`Usage`] they share, which a create reserves its
//! place in before it inserts ([`Usage::reserve`]): so the count never passes the
//! budget, however many threads create at once, and no scan is ever needed.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::index::entry::SessionState;
use crate::model::details::Details;
use crate::model::device::DeviceInfo;
use crate::model::signin::Factor;

/// What a session costs besides its data and label: its 128-byte state, its slot in
/// its shard's map (16 bytes) and in the id map (24), its wheel node (32), its place
/// in its user's list (16), and the tables' spare capacity and the allocator's
/// headers — calibrated so that a million sessions with 200 bytes of data each come
/// to the ~540 MB `cargo bench --bench throughput` measures resident.
pub(crate) const SESSION_BYTES: u64 = 320;
/// What one more heap allocation costs besides its bytes (an `Arc`'s two counts and
/// the allocator's header).
const ALLOCATION_BYTES: u64 = 24;

/// The estimated resident bytes of a session with `data_len` bytes of encoded data
/// and `details` (label, factors, device).
pub(crate) fn cost_of(data_len: usize, details: Option<&Details>) -> u64 {
    let data = match data_len {
        0 => 0,
        n => n as u64 + ALLOCATION_BYTES,
    };
    SESSION_BYTES + data + details.map_or(0, details_cost)
}

/// What a session's details cost: their allocation, and each string's.
fn details_cost(d: &Details) -> u64 {
    let string = |n: usize| n as u64 + ALLOCATION_BYTES;
    let mut bytes = size_of::<Details>() as u64 + ALLOCATION_BYTES;
    bytes += d.label.as_ref().map_or(0, |l| string(l.len()));
    if !d.factors.is_empty() {
        bytes += ALLOCATION_BYTES
            + d.factors
                .iter()
                .map(|f| size_of::<Factor>() as u64 + string(f.method.len()))
                .sum::<u64>();
    }
    if let Some(device) = &d.device {
        bytes += size_of::<DeviceInfo>() as u64 + ALLOCATION_BYTES;
        bytes += device.user_agent.as_ref().map_or(0, |ua| string(ua.len()));
    }
    bytes
}

/// The estimated resident bytes of `s`.
pub(crate) fn cost(s: &SessionState) -> u64 {
    cost_of(s.data.encoded_len(), s.details.as_deref())
}

/// The store-wide count and estimated bytes of the live sessions (expired ones the
/// reaper has not removed yet included: they hold memory too).
#[derive(Debug, Default)]
pub(crate) struct Usage {
    sessions: AtomicU64,
    bytes: AtomicU64,
}

impl Usage {
    pub(crate) fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Takes a place for one more session of `bytes`, if the count stays at most
    /// `max_sessions` and the bytes at most `max_bytes`; `None` (and nothing taken)
    /// otherwise. Dropping the reservation unused gives the place back.
    pub(crate) fn reserve(
        &self,
        bytes: u64,
        max_sessions: u64,
        max_bytes: u64,
    ) -> Option<Reservation<'_>> {
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max_sessions).then_some(n + 1)
            })
            .ok()?;
        let taken = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                b.checked_add(bytes).filter(|&t| t <= max_bytes)
            });
        if taken.is_err() {
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Reservation { usage: self, bytes })
    }

    /// Counts a change of `sessions` sessions and `bytes` bytes.
    pub(crate) fn add(&self, sessions: i64, bytes: i64) {
        if sessions != 0 {
            self.sessions.fetch_add(sessions as u64, Ordering::AcqRel);
        }
        if bytes != 0 {
            self.bytes.fetch_add(bytes as u64, Ordering::AcqRel);
        }
    }
}

/// A place for one session taken in a [`Usage`] ahead of its insertion: the shard the
/// session goes into takes it over ([`Reservation::keep`]); dropped, it is given back.
#[must_use]
pub(crate) struct Reservation<'a> {
    usage: &'a Usage,
    bytes: u64,
}

impl Reservation<'_> {
    /// The session is in: the place stays taken. Returns the bytes it was taken for.
    pub(crate) fn keep(self) -> u64 {
        let bytes = self.bytes;
        std::mem::forget(self);
        bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.usage.add(-1, -(self.bytes as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_past_either_limit_takes_nothing() {
        let u = Usage::default();
        let a = u.reserve(400, 2, 1000).expect("room");
        assert_eq!((u.sessions(), u.bytes()), (1, 400));
        assert!(u.reserve(700, 2, 1000).is_none(), "bytes over");
        assert_eq!((u.sessions(), u.bytes()), (1, 400));
        let b = u.reserve(600, 2, 1000).expect("exactly at the limit");
        assert!(u.reserve(0, 2, u64::MAX).is_none(), "count over");
        assert_eq!((u.sessions(), u.bytes()), (2, 1000));
        assert_eq!(a.keep(), 400);
        drop(b);
        assert_eq!((u.sessions(), u.bytes()), (1, 400));
        u.add(-1, -400);
        assert_eq!((u.sessions(), u.bytes()), (0, 0));
    }

    #[test]
    fn concurrent_reservations_never_pass_the_count() {
        let u = Usage::default();
        let kept = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(r) = u.reserve(1, 100, u64::MAX) {
                            assert!(u.sessions() <= 100);
                            r.keep();
                            kept.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(kept.load(Ordering::Relaxed), 100);
        assert_eq!((u.sessions(), u.bytes()), (100, 100));
    }

    #[test]
    fn cost_grows_with_data_label_factors_and_device() {
        use crate::clock::Timestamp;
        assert_eq!(cost_of(0, None), SESSION_BYTES);
        assert_eq!(cost_of(200, None), SESSION_BYTES + 200 + ALLOCATION_BYTES);
        let details = size_of::<Details>() as u64 + ALLOCATION_BYTES;
        let mut d = Details {
            label: Some("0123456789".into()),
            ..Details::default()
        };
        let labelled = SESSION_BYTES + details + 10 + ALLOCATION_BYTES;
        assert_eq!(cost_of(0, Some(&d)), labelled);
        d.factors = vec![Factor::new("otp", 2, Timestamp(1))].into();
        let factor = ALLOCATION_BYTES + size_of::<Factor>() as u64 + 3 + ALLOCATION_BYTES;
        assert_eq!(cost_of(0, Some(&d)), labelled + factor);
        d.device = Some(Box::new(DeviceInfo {
            user_agent: Some("Firefox".into()),
            address: None,
            at: Timestamp(1),
        }));
        let device = size_of::<DeviceInfo>() as u64 + ALLOCATION_BYTES + 7 + ALLOCATION_BYTES;
        assert_eq!(cost_of(0, Some(&d)), labelled + factor + device);
    }
}
