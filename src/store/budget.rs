//! The memory budget ([`crate::Options::budget`]): admitting a new session against it,
//! and, under [`BudgetPolicy::EvictAnonymous`], the queue of anonymous sessions the
//! least recently seen of which is ended to make room.
//!
//! Admission: a create reserves its place in the store-wide [`Usage`] (count and
//! estimated bytes) before it inserts, so the count never passes the budget however
//! many threads create at once. At the limit it refuses ([`Error::Full`]) or ends the
//! least recently seen anonymous session and tries again; a session with a user is
//! never ended for the budget.
//!
//! The queue holds `(id, last seen)` of anonymous sessions in the order they became
//! anonymous (created, or logged out), which is the order of their last-seen times
//! but for the sessions seen again since: reads move `last_seen` under a shard's
//! *read* lock, where nothing can be reordered. So the queue is settled lazily, as
//! the CLOCK algorithm does: the session at the front is ended only if it has not been
//! seen since it was queued; otherwise it goes to the back with its new time. An entry
//! whose session ended, or got a user, is dropped when it comes up (a session that
//! loses its user again is queued again); when stale entries outnumber the sessions,
//! the queue is swept (amortised O(1) per push). Every step is O(1) amortised; nothing
//! scans the index.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::Inner;
use crate::error::{Error, Result};
use crate::index::usage::{Reservation, Usage};
use crate::model::change::Ticket;
use crate::model::event::{EndReason, Event};
use crate::model::token::SessionId;
use crate::options::{Budget, BudgetPolicy};

/// A budget's state in a store: its limits, the usage it is enforced against, the
/// eviction queue and what it did.
pub(super) struct Admission {
    pub(super) limits: Budget,
    pub(super) usage: Arc<Usage>,
    /// Anonymous sessions by when they were last seen (see the module doc); only under
    /// [`BudgetPolicy::EvictAnonymous`].
    queue: Option<Mutex<VecDeque<(SessionId, u64)>>>,
    pub(super) evicted: AtomicU64,
    pub(super) refused: AtomicU64,
}

/// Entries a queue may hold beyond twice the sessions before it is swept.
const QUEUE_SLACK: usize = 1024;

impl Admission {
    pub(super) fn new(limits: Budget, usage: Arc<Usage>) -> Admission {
        let queue = (limits.policy == BudgetPolicy::EvictAnonymous).then(Mutex::default);
        Admission {
            limits,
            usage,
            queue,
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Whether anonymous sessions are queued for eviction.
    pub(super) fn evicts(&self) -> bool {
        self.queue.is_some()
    }

    fn full(&self) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Error::Full {
            sessions: self.usage.sessions(),
            max_sessions: self.limits.max_sessions,
            bytes: self.usage.bytes(),
            max_bytes: self.limits.max_bytes,
        }
    }

    /// Fills the queue with the anonymous sessions a store opened with, given as
    /// `(id, last seen)` in any order.
    pub(super) fn fill(&self, mut anonymous: Vec<(SessionId, u64)>) {
        if let Some(q) = &self.queue {
            anonymous.sort_unstable_by_key(|&(id, seen)| (seen, id.as_u128()));
            q.lock().extend(anonymous);
        }
    }
}

impl Inner {
    /// Takes the place of a new session costing `bytes` in the budget, if the store has
    /// one: at the limit, ends the least recently seen anonymous sessions until there
    /// is room (their end records' tickets and events go to `tickets` and `events`), or
    /// refuses with [`Error::Full`].
    pub(super) fn reserve(
        &self,
        bytes: u64,
        events: &mut Vec<Event>,
        tickets: &mut Vec<Ticket>,
    ) -> Result<Option<Reservation<'_>>> {
        let Some(b) = &self.budget else {
            return Ok(None);
        };
        let max_sessions = b.limits.max_sessions.unwrap_or(u64::MAX);
        let max_bytes = b.limits.max_bytes.unwrap_or(u64::MAX);
        if bytes > max_bytes {
            return Err(b.full());
        }
        loop {
            if let Some(r) = b.usage.reserve(bytes, max_sessions, max_bytes) {
                return Ok(Some(r));
            }
            if !self.evict_one(b, events, tickets)? {
                return Err(b.full());
            }
        }
    }

    /// Queues the anonymous session `id`, last seen at `seen`, for eviction (when the
    /// budget evicts).
    pub(super) fn queue_anonymous(&self, id: SessionId, seen: u64) {
        let Some(q) = self.budget.as_ref().and_then(|b| b.queue.as_ref()) else {
            return;
        };
        let mut queue = q.lock();
        queue.push_back((id, seen));
        let live = self.budget.as_ref().map_or(0, |b| b.usage.sessions()) as usize;
        if queue.len() > live.saturating_mul(2) + QUEUE_SLACK {
            let all = std::mem::take(&mut *queue);
            drop(queue);
            let kept: VecDeque<_> = all
                .into_iter()
                .filter(|&(id, _)| self.read_by_id(id, |s| s.user.is_none()) == Some(true))
                .collect();
            let mut queue = q.lock();
            // Whatever was queued meanwhile is newer: it goes behind.
            let newer = std::mem::replace(&mut *queue, kept);
            queue.extend(newer);
        }
    }

    /// Ends the least recently seen anonymous session, if there is one: true if one
    /// ended.
    fn evict_one(
        &self,
        b: &Admission,
        events: &mut Vec<Event>,
        tickets: &mut Vec<Ticket>,
    ) -> Result<bool> {
        let Some(q) = &b.queue else {
            return Ok(false);
        };
        loop {
            let Some((id, stamp)) = q.lock().pop_front() else {
                return Ok(false);
            };
            let mut seen_since = None;
            let removed = self.remove_by_id_if(id, |s| {
                if s.user.is_some() {
                    return None; // logged in: queued again if it logs out
                }
                let seen = s.last_seen().0;
                if seen > stamp {
                    seen_since = Some(seen);
                    return None;
                }
                Some(if s.deadline(self.rules) <= self.now() {
                    EndReason::Expired
                } else {
                    EndReason::Evicted
                })
            })?;
            let Some((_, ticket, reason)) = removed else {
                // Seen since it was queued: a second chance, behind the others. (Ended
                // or logged in: its entry is dropped.)
                if let Some(seen) = seen_since {
                    q.lock().push_back((id, seen));
                }
                continue;
            };
            tickets.push(ticket);
            if reason == EndReason::Evicted {
                b.evicted.fetch_add(1, Ordering::Relaxed);
            }
            if self.events.active() {
                events.push(Event::Ended {
                    session: id,
                    user: None,
                    reason,
                });
            }
            return Ok(true);
        }
    }
}
