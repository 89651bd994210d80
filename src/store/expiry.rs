//! Deadlines: activity (`touch`), moving the absolute deadline (`extend`,
//! `set_expiry`), and the reaper's pass.
//!
//! An expiry: every `reaper_interval` the reaper advances each shard's wheel to now
//! under the shard's write lock. Each due timer's real deadline is checked again: later
//! (a touch or an extend happened) → re-armed there; past → the session and its id are
//! removed and `Change::End { Expired }` appended. After the shard locks are released
//! the ids leave their users' lists and `Event::Ended { Expired }` is emitted.

use super::{Inner, Store};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::index::entry::SessionState;
use crate::index::shard::{Slot, SlotRef};
use crate::model::change::{Change, Ticket};
use crate::model::event::{EndReason, Event};
use crate::model::session::UserId;
use crate::model::token::{SessionId, Token};
use std::time::Duration;

impl Store {
    /// Records activity now: the idle deadline counts from this moment.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live (a touch never resurrects one).
    pub fn touch(&self, token: &Token) -> Result<()> {
        let inner = &*self.inner;
        inner
            .read_live(token.hash().0, |s, now| {
                s.mark_seen(now);
                let _ = inner.journal.append(|| Change::Touch { id: s.id, at: now });
            })
            .ok_or(Error::Ended)
    }

    /// Extends the session's absolute deadline to at least `now + by` (never shortens
    /// it). Returns the session's new effective deadline.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn extend(&self, token: &Token, by: Duration) -> Result<Timestamp> {
        let inner = &*self.inner;
        let (deadline, ticket) = inner.with_live(token.hash().0, |shard, key, now| {
            let s = shard.live(key).ok_or(Error::Ended)?;
            let (id, absolute) = (s.id, s.absolute.max(now.saturating_add(by)));
            // Logged first: a change the log refused is not applied either.
            let t = inner.journal.append(|| Change::Extend {
                id,
                absolute,
                at: now,
            })?;
            let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
            s.absolute = absolute;
            s.mark_seen(now);
            Ok(Some((s.deadline(inner.rules), t)))
        })?;
        inner.wait(ticket)?;
        Ok(deadline)
    }

    /// Sets the session's absolute deadline to exactly `absolute`, earlier or later
    /// than it was (for a framework that manages expiry itself, such as tower-sessions'
    /// `expiry_date`). Counts as activity. A deadline at or before now ends the session
    /// as expired. Returns the session's new effective deadline (the idle and
    /// authentication deadlines still apply).
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn set_expiry(&self, token: &Token, absolute: Timestamp) -> Result<Timestamp> {
        let inner = &*self.inner;
        enum Done {
            Moved(Timestamp, Ticket),
            Expired(Box<SessionState>, Ticket),
        }
        let done = inner.with_live(token.hash().0, |shard, key, now| {
            let id = shard.live(key).ok_or(Error::Ended)?.id;
            if absolute <= now {
                let t = inner.journal.append(|| Change::End {
                    id,
                    reason: EndReason::Expired,
                })?;
                let Some(state) = shard.remove_live(key, id) else {
                    return Err(Error::Ended);
                };
                shard.tally.end(EndReason::Expired);
                inner.ids_remove(id);
                return Ok(Some(Done::Expired(state, t)));
            }
            let t = inner.journal.append(|| Change::Extend {
                id,
                absolute,
                at: now,
            })?;
            let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
            s.absolute = absolute;
            s.mark_seen(now);
            let deadline = s.deadline(inner.rules);
            drop(s);
            // A later deadline is found when the old timer fires; an earlier one
            // needs the timer moved.
            shard.reschedule_if_earlier(key, deadline);
            Ok(Some(Done::Moved(deadline, t)))
        })?;
        match done {
            Done::Moved(deadline, ticket) => {
                inner.wait(ticket)?;
                Ok(deadline)
            }
            Done::Expired(state, ticket) => {
                inner.finish_end(&state, ticket, EndReason::Expired)?;
                Ok(absolute)
            }
        }
    }

    /// Removes every session past its deadline now, instead of waiting for the
    /// background reaper (which calls this). Returns how many were removed.
    pub fn reap_expired(&self) -> usize {
        self.inner.reap()
    }
}

impl Inner {
    /// One pass of the reaper over every shard. Returns how many sessions expired.
    pub(crate) fn reap(&self) -> usize {
        let mut due = Vec::new();
        let mut expired: Vec<(SessionId, Option<UserId>)> = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let now = self.now();
            due.clear();
            shard.wheel.advance(now.0, &mut due);
            for &(lo, _) in &due {
                let shard = &mut *shard;
                let Some(key) = shard.hash_at(lo) else {
                    continue;
                };
                let expired_now = match shard.get(key) {
                    Some(SlotRef::Live(s)) => {
                        let deadline = s.deadline(self.rules);
                        if deadline > now {
                            // Touched or extended since scheduled: re-arm at the real one.
                            shard.rearm(key, deadline);
                            continue;
                        }
                        true
                    }
                    Some(SlotRef::Alias(a)) => {
                        let until = a.until;
                        if until > now {
                            shard.rearm(key, until);
                        } else {
                            shard.remove(key);
                        }
                        false
                    }
                    None => false,
                };
                if !expired_now {
                    continue;
                }
                let Some(Slot::Live(s)) = shard.remove(key) else {
                    continue;
                };
                shard.instances.remove(&key);
                self.ids_remove(s.id);
                let _ = self.journal.append(|| Change::End {
                    id: s.id,
                    reason: EndReason::Expired,
                });
                shard.tally.end(EndReason::Expired);
                expired.push((s.id, s.user.clone()));
            }
        }
        for (id, user) in &expired {
            if let Some(u) = user {
                self.users.lock(u, None).remove(u, *id);
            }
        }
        let n = expired.len();
        self.emit_if(|| {
            expired
                .into_iter()
                .map(|(session, user)| Event::Ended {
                    session,
                    user,
                    reason: EndReason::Expired,
                })
                .collect()
        });
        n
    }
}
