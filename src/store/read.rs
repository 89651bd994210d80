//! Reading: `get`, `peek`, `user_of`, `get_by_id`, and the engine's lookups.
//!
//! A get: hash the token; take the shard's read lock; look the hash up (an alias
//! inside its grace resolves through the id shards); past the real deadline → `None`,
//! whether or not the reaper has run; if `touch_interval` has passed, advance
//! `last_seen` (an atomic, under the read lock) and hand a `Touch` to the journal —
//! the wheel is not touched; return a snapshot whose data is shared, not copied.
//! Lookups by id chunk 16 at a time (`read_chunk`), each shard locked once per chunk.

use super::{Inner, READ_CHUNK, Store, position, sorted_unique};
use crate::clock::Timestamp;
use crate::index::entry::SessionState;
use crate::index::shard::{SlotRef, id_ix, join, shard_of};
use crate::model::change::Change;
use crate::model::session::{Session, UserId};
use crate::model::token::{SessionId, Token};

impl Store {
    /// The live session `token` addresses, or `None` if it is unknown, ended or past
    /// its deadline (whether or not the reaper has removed it yet). Counts as activity:
    /// the idle deadline is re-armed, at most once per [`Options::touch_interval`](crate::Options::touch_interval)
    /// — and always for a session on trial ([`Options::trial_lifetime`](crate::Options::trial_lifetime)),
    /// which from then on lives its normal lifetime.
    pub fn get(&self, token: &Token) -> Option<Session> {
        let inner = &*self.inner;
        inner.read_live(token.hash().0, |s, now| {
            let seen = s.last_seen.load(std::sync::atomic::Ordering::Relaxed);
            if now.0.saturating_sub(seen) >= inner.touch_ms
                || (inner.rules.trial_ms != 0 && s.on_trial())
            {
                s.mark_seen(now);
                // Best effort: the touch is coalesced by the log, never a failure of a read.
                let _ = inner.journal.append(|| Change::Touch { id: s.id, at: now });
            }
            s.snapshot(inner.rules, &inner.opts.levels, now)
        })
    }

    /// Like [`Store::get`], but does not count as activity.
    pub fn peek(&self, token: &Token) -> Option<Session> {
        let inner = &*self.inner;
        inner.read_live(token.hash().0, |s, now| {
            s.snapshot(inner.rules, &inner.opts.levels, now)
        })
    }

    /// The user bound to the session `token` addresses, if it is live and has one.
    pub fn user_of(&self, token: &Token) -> Option<UserId> {
        self.inner
            .read_live(token.hash().0, |s, _| s.user.clone())?
    }

    /// The live session with public id `id` (for a devices page or an admin tool).
    /// Does not count as activity.
    pub fn get_by_id(&self, id: SessionId) -> Option<Session> {
        let inner = &*self.inner;
        let now = inner.now();
        inner.read_by_id(id, |s| s.snapshot(inner.rules, &inner.opts.levels, now))
    }
}

impl Inner {
    /// Runs `f` on the live session `hash` resolves to (following a rotation alias)
    /// under its shard's read lock. `None` if there is none, or it is past its deadline.
    pub(super) fn read_live<R>(
        &self,
        hash: u128,
        f: impl FnOnce(&SessionState, Timestamp) -> R,
    ) -> Option<R> {
        let shard = self.shard(hash).read();
        let now = self.now();
        let id = match shard.get(hash) {
            Some(SlotRef::Live(s)) => {
                if s.deadline(self.rules) <= now {
                    return None;
                }
                return Some(f(s, now));
            }
            Some(SlotRef::Alias(a)) if a.until > now => a.session,
            _ => return None,
        };
        drop(shard);
        // An old token inside its grace: the session, wherever rotations moved it.
        let (shard, key) = self.lock_by_id(id, |l| l.read())?;
        let now = self.now();
        let s = shard.live(key)?;
        if s.deadline(self.rules) <= now {
            return None;
        }
        Some(f(s, now))
    }

    /// Calls `f` with each of the sessions `ids` that is live, as [`Inner::read_by_id`]
    /// would one by one, but a chunk at a time (see [`Inner::read_chunk`]). A session
    /// moved by a concurrent rotation meanwhile is looked up again on its own.
    pub(super) fn read_batch(&self, ids: &[SessionId], mut f: impl FnMut(&SessionState)) {
        let mut moved = Vec::new();
        for chunk in ids.chunks(READ_CHUNK) {
            self.read_chunk(
                chunk,
                |live| live.iter().flatten().for_each(|&(_, s)| f(s)),
                &mut moved,
            );
        }
        for id in moved {
            self.read_by_id(id, &mut f);
        }
    }

    /// Calls `f` with the token hash and state of each live session of `chunk` (at most
    /// [`READ_CHUNK`] ids), under its shard's read lock: each id shard the chunk
    /// touches is read-locked once and all the chunk's places looked up, then each
    /// session shard likewise, so the chunk's cache misses overlap instead of queueing
    /// one session behind another. Ids whose session was not at the place the id map
    /// gave (moved by a concurrent rotation) go to `moved`, for the caller to look up
    /// on its own terms; ended and expired sessions are skipped.
    pub(super) fn read_chunk(
        &self,
        chunk: &[SessionId],
        f: impl FnOnce(&[Option<(u128, &SessionState)>]),
        moved: &mut Vec<SessionId>,
    ) {
        let mask = self.mask;
        let now = self.now();
        let mut places = [None::<u64>; READ_CHUNK];
        {
            let mut buf = [0usize; READ_CHUNK];
            let id_shards = sorted_unique(&mut buf, chunk.iter().map(|&id| id_ix(id, mask)));
            let held: [_; READ_CHUNK] =
                std::array::from_fn(|i| id_shards.get(i).map(|&s| self.ids[s].read()));
            for (place, &id) in places.iter_mut().zip(chunk) {
                let map = held[position(id_shards, id_ix(id, mask))].as_ref();
                *place = map.and_then(|m| m.get(&id).copied());
            }
        }
        let places = &places[..chunk.len()];
        let mut buf = [0usize; READ_CHUNK];
        let shards = sorted_unique(
            &mut buf,
            places.iter().flatten().map(|&lo| shard_of(lo, mask)),
        );
        let held: [_; READ_CHUNK] =
            std::array::from_fn(|i| shards.get(i).map(|&s| self.shards[s].read()));
        // Every place's session first, then each session's fields: the misses of each
        // step overlap.
        let found: [Option<&SessionState>; READ_CHUNK] = std::array::from_fn(|i| {
            let lo = places.get(i).copied().flatten()?;
            held[position(shards, shard_of(lo, mask))]
                .as_ref()?
                .state_at(lo)
        });
        let mut live = [None; READ_CHUNK];
        let mut n = 0;
        for ((&place, &id), found) in places.iter().zip(chunk).zip(found) {
            // Not in the id map: ended.
            let Some(lo) = place else { continue };
            match found {
                Some(s) if s.id == id => {
                    if s.deadline(self.rules) > now {
                        live[n] = Some((join(lo, s.hash_hi), s));
                        n += 1;
                    }
                }
                _ => moved.push(id),
            }
        }
        f(&live[..n]);
    }

    /// Runs `f` on the live session with public id `id` under its shard's read lock.
    pub(super) fn read_by_id<R>(
        &self,
        id: SessionId,
        f: impl FnOnce(&SessionState) -> R,
    ) -> Option<R> {
        let (shard, key) = self.lock_by_id(id, |l| l.read())?;
        let now = self.now();
        let s = shard.live(key)?;
        (s.deadline(self.rules) > now).then(|| f(s))
    }
}
