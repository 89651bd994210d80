//! Ending sessions: `end`, `end_by_id`, `clear`, and the engine's removal of one
//! session or a chunk of them (what the reaper and a revoke use too).

use super::{Inner, Store, position, sorted_unique};
use crate::error::{Error, Result};
use crate::index::entry::SessionState;
use crate::index::shard::{Shard, id_ix, shard_of};
use crate::model::change::{Change, Ticket};
use crate::model::event::{EndReason, Event};
use crate::model::token::{SessionId, Token};
use parking_lot::RwLockWriteGuard;

impl Store {
    /// Ends the session (a logout). Final: its token, and any old token in its grace
    /// period, stop resolving, and no later write brings it back. Returns false if it
    /// was not live.
    ///
    /// # Errors
    /// Only if the change cannot be made durable.
    pub fn end(&self, token: &Token) -> Result<bool> {
        let inner = &*self.inner;
        let removed = inner.with_live(token.hash().0, |shard, key, _| {
            let id = match shard.live(key) {
                Some(s) => s.id,
                None => return Err(Error::Ended),
            };
            let t = inner.journal.append(|| Change::End {
                id,
                reason: EndReason::Ended,
            })?;
            let Some(state) = shard.remove_live(key, id) else {
                return Err(Error::Ended);
            };
            shard.tally.end(EndReason::Ended);
            inner.ids_remove(id);
            Ok(Some((state, t)))
        });
        match removed {
            Ok((state, ticket)) => {
                inner.finish_end(&state, ticket, EndReason::Ended)?;
                Ok(true)
            }
            Err(Error::Ended) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends the session with public id `id` (e.g. "sign out this device"). Returns false
    /// if it was not live.
    ///
    /// # Errors
    /// Only if the change cannot be made durable.
    pub fn end_by_id(&self, id: SessionId) -> Result<bool> {
        let inner = &*self.inner;
        match inner.remove_by_id(id, EndReason::Ended)? {
            Some((state, ticket)) => {
                // An expired session the reaper had not reached yet is removed too, but
                // it was not live, so it is reported as expired.
                let live = inner.is_live(&state);
                let reason = if live {
                    EndReason::Ended
                } else {
                    EndReason::Expired
                };
                inner.finish_end(&state, ticket, reason)?;
                Ok(live)
            }
            None => Ok(false),
        }
    }

    /// Ends every session. Returns how many there were.
    ///
    /// # Errors
    /// Only if the change cannot be made durable.
    pub fn clear(&self) -> Result<usize> {
        let inner = &*self.inner;
        let mut users = inner.users.lock_all();
        let mut shards: Vec<RwLockWriteGuard<'_, Shard>> =
            inner.shards.iter().map(|s| s.write()).collect();
        let mut ids: Vec<_> = inner.ids.iter().map(|s| s.write()).collect();
        let now = inner.now();
        let ticket = inner.journal.append(|| Change::Clear)?;
        let mut count = 0;
        for shard in &mut shards {
            count += shard.live_count();
            shard.clear(now, true);
        }
        for m in &mut ids {
            m.clear();
        }
        for u in &mut users {
            u.clear();
        }
        drop(ids);
        drop(shards);
        drop(users);
        inner.wait(ticket)?;
        inner.emit_if(|| vec![Event::Cleared { sessions: count }]);
        Ok(count)
    }
}

impl Inner {
    /// Removes the session with public id `id`, wherever rotation has moved it, and
    /// logs its end. Does not touch the user index (the caller owns that).
    pub(super) fn remove_by_id(
        &self,
        id: SessionId,
        reason: EndReason,
    ) -> Result<Option<(Box<SessionState>, Ticket)>> {
        let removed = self.remove_by_id_if(id, |_| Some(reason))?;
        Ok(removed.map(|(state, t, _)| (state, t)))
    }

    /// As [`Inner::remove_by_id`], if `decide`, looking at the session under its
    /// shard's lock, gives a reason to end it (`None`: it stays, and so does `Ok(None)`).
    pub(super) fn remove_by_id_if(
        &self,
        id: SessionId,
        decide: impl FnOnce(&SessionState) -> Option<EndReason>,
    ) -> Result<Option<(Box<SessionState>, Ticket, EndReason)>> {
        // Found however often a client rotates it meanwhile (see `lock_by_id`): a
        // revoke must not leave a session behind.
        let Some((mut shard, key)) = self.lock_by_id(id, |l| l.write()) else {
            return Ok(None);
        };
        // `lock_by_id` found it live at `key`.
        let Some(reason) = shard.live(key).and_then(decide) else {
            return Ok(None);
        };
        let t = self.journal.append(|| Change::End { id, reason })?;
        let Some(state) = shard.remove_live(key, id) else {
            return Err(Error::Ended);
        };
        shard.tally.end(reason);
        self.ids_remove(id);
        Ok(Some((state, t, reason)))
    }

    /// Removes the sessions `ids` and logs their ends, as [`Inner::remove_by_id`] does
    /// one at a time, but in batches whose memory traffic overlaps: a revoke's sessions
    /// sit in unrelated cache lines across the id map, the shards and the wheels, and
    /// one by one each lookup waits out its cache misses behind a lock acquisition
    /// (a full barrier). Here each step takes all the locks it needs first (ascending,
    /// per the lock order), then touches every session's memory, then changes it.
    /// Sessions that moved meanwhile (a concurrent rotation) go the one-by-one way.
    pub(super) fn remove_batch(
        &self,
        ids: &[SessionId],
        reason: EndReason,
    ) -> Result<Vec<(Box<SessionState>, Ticket)>> {
        // A user's sessions are ended in chunks of up to BATCH, with the chunk's
        // bookkeeping in arrays on the stack: revoking a few sessions costs their cache
        // misses and little else, so nothing here allocates but the returned list.
        const BATCH: usize = 16;
        let mask = self.mask;
        let mut out = Vec::with_capacity(ids.len());
        let mut stragglers = Vec::new();
        for chunk in ids.chunks(BATCH) {
            // Where each session is now: its place in a shard, from the id shards. Each
            // session's lock is found once, as its position among the chunk's locks.
            let mut id_shards = [0usize; BATCH];
            let id_shards = sorted_unique(&mut id_shards, chunk.iter().map(|&id| id_ix(id, mask)));
            let id_pos: [usize; BATCH] = std::array::from_fn(|i| {
                chunk
                    .get(i)
                    .map_or(0, |&id| position(id_shards, id_ix(id, mask)))
            });
            let mut places = [None::<u64>; BATCH];
            {
                let held: [_; BATCH] =
                    std::array::from_fn(|i| id_shards.get(i).map(|&s| self.ids[s].read()));
                for ((place, &id), &p) in places.iter_mut().zip(chunk).zip(&id_pos) {
                    *place = held[p].as_ref().and_then(|m| m.get(&id).copied());
                }
            }
            let places = &places[..chunk.len()];
            let mut shards = [0usize; BATCH];
            let shards = sorted_unique(
                &mut shards,
                places.iter().flatten().map(|&lo| shard_of(lo, mask)),
            );
            let pos: [usize; BATCH] = std::array::from_fn(|i| {
                places
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or(0, |lo| position(shards, shard_of(lo, mask)))
            });
            let mut held: [_; BATCH] =
                std::array::from_fn(|i| shards.get(i).map(|&s| self.shards[s].write()));
            // Find each session at its place (still this id's?), and touch its timer and
            // data before changing anything, so their memory fetches overlap.
            let mut found = [None::<u128>; BATCH];
            let mut warm = 0u64;
            for (i, (&place, &id)) in places.iter().zip(chunk).enumerate() {
                let Some(lo) = place else { continue };
                if let Some(shard) = &held[pos[i]]
                    && let Some((key, s)) = shard.live_at(lo)
                    && s.id == id
                {
                    warm ^= shard.wheel.warm(s.timer);
                    warm ^= u64::from(s.data.as_bytes().first().copied().unwrap_or(0));
                    found[i] = Some(key);
                }
            }
            std::hint::black_box(warm);
            let mut removed = [false; BATCH];
            // A failed append (the journal is poisoned) stops the removals; those made
            // are finished below, so the index stays consistent, then it is returned.
            let mut failed = None;
            for (i, &id) in chunk.iter().enumerate() {
                // Not where the id map said (rotated meanwhile): looked up again below.
                let (Some(key), Some(shard)) = (found[i], held[pos[i]].as_mut()) else {
                    stragglers.push(id);
                    continue;
                };
                let t = match self.journal.append(|| Change::End { id, reason }) {
                    Ok(t) => t,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                let Some(state) = shard.take_live(key) else {
                    failed = Some(Error::Ended);
                    break;
                };
                shard.tally.end(reason);
                removed[i] = true;
                out.push((state, t));
            }
            // Out of the id map too, each id shard locked once (session shards are
            // still held: that is the lock order).
            let mut id_held: [_; BATCH] =
                std::array::from_fn(|i| id_shards.get(i).map(|&s| self.ids[s].write()));
            for (i, &id) in chunk.iter().enumerate() {
                if removed[i]
                    && let Some(map) = &mut id_held[id_pos[i]]
                {
                    map.remove(&id);
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        for id in stragglers {
            if let Some(done) = self.remove_by_id(id, reason)? {
                out.push(done);
            }
        }
        Ok(out)
    }

    /// After a session was removed from the index: drop it from its user's list, wait
    /// for durability, tell subscribers.
    pub(super) fn finish_end(
        &self,
        state: &SessionState,
        ticket: Ticket,
        reason: EndReason,
    ) -> Result<()> {
        if let Some(user) = &state.user {
            self.users.lock(user, None).remove(user, state.id);
        }
        self.wait(ticket)?;
        self.emit_if(|| {
            vec![Event::Ended {
                session: state.id,
                user: state.user.clone(),
                reason,
            }]
        });
        Ok(())
    }
}
