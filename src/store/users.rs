//! Users: binding one on login, `unbind_user`, listing a user's sessions, the
//! per-user cap, and revoking them all, or all but one.
//!
//! A revoke: take the user's lock and the user's id list; for each id find the current
//! hash through the id shards, remove the session under its shard's lock and append
//! `Change::End { Revoked }` — in chunks of up to 16, each step taking all the locks
//! it needs first (ascending), so the cache misses of ten sessions overlap; a session
//! that moved meanwhile (rotated) is looked up again alone. Creates and binds for the
//! same user add to the list under the same lock, so they complete before the revoke
//! (and are revoked) or start after.

use std::sync::atomic::Ordering;

use super::{Inner, Store};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::index::entry::{MaybeTime, SessionState};
use crate::index::users::UserGuards;
use crate::model::change::{Change, Ticket};
use crate::model::event::{EndReason, Event};
use crate::model::session::{Session, UserId, next_version, signed_in_before};
use crate::model::token::{SessionId, Token};
use crate::options::LimitPolicy;

impl Store {
    /// Binds `user` to the session (a login): an anonymous session becomes
    /// authenticated, and `authenticated_at` becomes now. Binding the same user again
    /// re-authenticates; binding another user moves the session to them. Consider
    /// [`Store::login`], which also rotates the token.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::VersionExhausted`] if it is
    /// at [`Session::MAX_VERSION`]; [`Error::InvalidUserId`] /
    /// [`Error::TooLarge`] for a bad user id; [`Error::UserSessionLimit`] if the user is
    /// at the limit and the policy refuses.
    pub fn bind_user(&self, token: &Token, user: &str) -> Result<()> {
        let inner = &*self.inner;
        let user = inner.checked(UserId::new(user, &inner.opts.limits))?;
        let hash = token.hash().0;
        loop {
            let (id, current, version) = inner
                .read_live(hash, |s, _| (s.id, s.user.clone(), s.version))
                .ok_or(Error::Ended)?;
            // Refused before the per-user limit can end anyone's session for it.
            next_version(version)?;
            let mut guards = inner.users.lock(&user, current.as_ref());
            let user = guards.canonical(&user);
            // A login is never dated before the user's not-before time, should the
            // clock have been set back past it (it happened after, in fact).
            let not_before = guards.not_before(user.as_str()).unwrap_or_default();
            let mut events = Vec::new();
            let mut tickets = Vec::new();
            if current.as_ref() != Some(&user) {
                inner.enforce_limit(&mut guards, &user, Some(id), &mut events, &mut tickets)?;
            }
            let ticket = inner.with_live(hash, |shard, key, now| {
                let now = now.max(not_before);
                let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
                if s.id != id || s.user != current {
                    return Ok(Some(None));
                }
                let version = next_version(s.version)?;
                let t = inner.journal.append(|| Change::Bind {
                    id,
                    user: user.clone(),
                    at: now,
                    version,
                })?;
                s.user = Some(user.clone());
                s.authenticated = Some(now).into();
                // A login says nothing of how (`login_with` records it next).
                s.set_factors(Vec::new());
                s.version = version;
                s.mark_seen(now);
                let deadline = s.deadline(inner.rules);
                drop(s);
                shard.tally.logins += 1;
                shard.reschedule_if_earlier(key, deadline);
                Ok(Some(Some(t)))
            })?;
            let Some(ticket) = ticket else { continue };
            if current.as_ref() != Some(&user) {
                if let Some(c) = &current {
                    guards.remove(c, id);
                }
                guards.add(&user, id);
            }
            drop(guards);
            tickets.push(ticket);
            inner.wait_all(&tickets)?;
            if inner.events.active() {
                if let Some(c) = current.filter(|c| *c != user) {
                    events.push(Event::UserUnbound {
                        session: id,
                        user: c,
                    });
                }
                events.push(Event::UserBound { session: id, user });
                inner.emit(events);
            }
            return Ok(());
        }
    }

    /// Logs `user` in on the session: rotates the token (the session-fixation defence)
    /// and binds the user. Returns the new token to send to the client.
    ///
    /// # Errors
    /// As [`Store::rotate`] and [`Store::bind_user`]; a login the bind would refuse for
    /// the session's version or the per-user limit changes nothing (no rotation).
    pub fn login(&self, token: &Token, user: &str) -> Result<Token> {
        let inner = &*self.inner;
        let uid = inner.checked(UserId::new(user, &inner.opts.limits))?;
        // A login the bind would refuse must change nothing: refuse it before the
        // rotation, which would otherwise leave the caller holding a retired token —
        // for a version that cannot grow, and for the per-user limit. (A create for
        // the same user racing this login can still take the last place between this
        // check and the bind; the bind then refuses.)
        let (id, current, version) = inner
            .read_live(token.hash().0, |s, _| (s.id, s.user.clone(), s.version))
            .ok_or(Error::Ended)?;
        next_version(version)?;
        if let (Some(max), LimitPolicy::Refuse) =
            (inner.opts.max_sessions_per_user, inner.opts.limit_policy)
            && current.as_ref() != Some(&uid)
        {
            let others = inner.users.lock(&uid, None).sessions(uid.as_str());
            let mut live = 0usize;
            inner.read_batch(&others, |s| live += usize::from(s.id != id));
            if live >= max {
                inner.refusals.user_limit.fetch_add(1, Ordering::Relaxed);
                return Err(Error::UserSessionLimit {
                    user: uid.to_string(),
                    max,
                });
            }
        }
        let fresh = self.rotate(token)?;
        self.bind_user(&fresh, user)?;
        Ok(fresh)
    }

    /// Unbinds the session's user (a logout that keeps the session and its data).
    /// Returns the user that was bound, if any.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live; [`Error::VersionExhausted`] if a
    /// user is bound and the session is at [`Session::MAX_VERSION`].
    pub fn unbind_user(&self, token: &Token) -> Result<Option<UserId>> {
        let inner = &*self.inner;
        let hash = token.hash().0;
        loop {
            let (id, current) = inner
                .read_live(hash, |s, _| (s.id, s.user.clone()))
                .ok_or(Error::Ended)?;
            let Some(user) = current else {
                return Ok(None);
            };
            let mut guards = inner.users.lock(&user, None);
            let ticket = inner.with_live(hash, |shard, key, _| {
                let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
                if s.id != id || s.user.as_ref() != Some(&user) {
                    return Ok(Some(None));
                }
                let version = next_version(s.version)?;
                let t = inner.journal.append(|| Change::Unbind { id, version })?;
                s.user = None;
                s.authenticated = MaybeTime::NONE;
                s.set_factors(Vec::new());
                s.version = version;
                Ok(Some(Some((t, s.last_seen().0))))
            })?;
            let Some((ticket, seen)) = ticket else {
                continue;
            };
            guards.remove(&user, id);
            drop(guards);
            // Anonymous again: the budget may evict it.
            inner.queue_anonymous(id, seen);
            inner.wait(ticket)?;
            inner.emit_if(|| {
                vec![Event::UserUnbound {
                    session: id,
                    user: user.clone(),
                }]
            });
            return Ok(Some(user));
        }
    }

    /// The live sessions of `user`, oldest first: for a "your devices" page. O(that
    /// user's sessions).
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`] for a bad user id.
    pub fn sessions_of(&self, user: &str) -> Result<Vec<Session>> {
        let inner = &*self.inner;
        inner.checked(UserId::check(user, &inner.opts.limits))?;
        let ids = inner.users.lock_str(user).sessions(user);
        let mut out: Vec<Session> = Vec::with_capacity(ids.len());
        let now = inner.now();
        inner.read_batch(&ids, |s| {
            out.push(s.snapshot(inner.rules, &inner.opts.levels, now));
        });
        out.sort_by_key(|s| (s.created_at(), s.id()));
        Ok(out)
    }

    /// Ends every session of `user` ("log out everywhere"). O(that user's sessions).
    /// Concurrent creates for the same user either finish before (and are ended) or
    /// start after. Returns how many sessions ended.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`] for a bad user id.
    pub fn revoke_user(&self, user: &str) -> Result<usize> {
        let inner = &*self.inner;
        let limits = &inner.opts.limits;
        inner.checked(UserId::check(user, limits))?;
        let mut guards = inner.users.lock_str(user);
        // The index's own UserId (no allocation) when the user has sessions.
        let (user, ids) = match guards.take(user) {
            Some(listed) => listed,
            None => (UserId::new(user, limits)?, Vec::new()),
        };
        inner.revoke_listed(guards, user, ids, EndReason::Revoked)
    }

    /// Ends every session of `user` that authenticated before `before` and makes
    /// `before` the user's *not-before* time: a password change in one call. A session
    /// of the user authenticated earlier is never let in again — an import of one (an
    /// export or backup taken before the change) is refused ([`Store::import`] returns
    /// false) — and the time persists across restarts, compactions and
    /// [`Store::clear`]. A user's not-before time only moves forward.
    ///
    /// `before` later than now counts as now: this ends sessions, it does not hold
    /// future logins back. To keep the session that made the change, log it in again
    /// first and pass its new [`Session::authenticated_at`] (sessions that
    /// authenticated in the same millisecond are kept too):
    ///
    /// ```
    /// # use sessiondb::{NewSession, Store};
    /// # let store = Store::in_memory()?;
    /// # let (old, _) = store.create(NewSession::for_user("alice"))?;
    /// # let (token, _) = store.create(NewSession::anonymous())?;
    /// # std::thread::sleep(std::time::Duration::from_millis(2));
    /// // The user changed their password on `token`'s device:
    /// let token = store.login(&token, "alice")?;
    /// let at = store.get(&token).unwrap().authenticated_at().unwrap();
    /// assert_eq!(store.revoke_user_before("alice", at)?, 1);
    /// assert!(store.get(&old).is_none() && store.get(&token).is_some());
    /// # Ok::<(), sessiondb::Error>(())
    /// ```
    ///
    /// As [`Store::revoke_user`], it holds the user's lock: a create, login or bind for
    /// the same user racing it completes before (and is judged by its time) or starts
    /// after. Each ended session is reported as [`EndReason::Revoked`], and all of them
    /// in one [`Event::UserRevoked`]. Returns how many ended.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`] for a bad user id.
    pub fn revoke_user_before(&self, user: &str, before: Timestamp) -> Result<usize> {
        let inner = &*self.inner;
        inner.checked(UserId::check(user, &inner.opts.limits))?;
        let mut guards = inner.users.lock_str(user);
        let at = before.min(inner.now());
        let user = guards.canonical_str(user);
        // In memory before the log: a compaction whose snapshot misses it has sealed
        // the log before this record (see `Snapshot::not_before`).
        guards.raise_not_before(&user, at);
        let ticket = inner.journal.append(|| Change::NotBefore {
            user: user.clone(),
            at,
        })?;
        let (user, mut ids) = guards.take(user.as_str()).unwrap_or((user, Vec::new()));
        // The live sessions authenticated since stay listed; the rest end (those
        // already past their deadline are reported as expired, as by `revoke_user`).
        let mut later = Vec::new();
        inner.read_batch(&ids, |s| {
            if !signed_in_before(s.authenticated.get(), at) {
                later.push(s.id);
            }
        });
        later.sort_unstable();
        ids.retain(|id| later.binary_search(id).is_err());
        for &id in &later {
            guards.add(&user, id);
        }
        let count = inner.revoke_listed(guards, user, ids, EndReason::Revoked)?;
        inner.wait(ticket)?;
        Ok(count)
    }

    /// Every user's not-before time ([`Store::revoke_user_before`]), by user id: what
    /// an export carries besides the sessions, so that a store the export is imported
    /// into keeps refusing the sessions they revoked.
    pub fn not_before_times(&self) -> Vec<(UserId, Timestamp)> {
        let mut all = self.inner.users.not_before_all();
        all.sort();
        all
    }

    /// Ends every *other* session of the token's user ("sign out all other devices",
    /// after a password change or a "that's not me") and keeps this one. As
    /// [`Store::revoke_user`], it holds the user's lock: a create, login or bind for
    /// the same user racing it completes before (and is ended) or starts after, so no
    /// session that should be gone is readable afterwards. Each ended session is
    /// reported as [`EndReason::RevokedByOtherSession`]. Returns how many ended; 0 for
    /// an anonymous session (it has no user, so no others).
    ///
    /// # Errors
    /// [`Error::Ended`] if the token's session is not live (a token rotated away and
    /// still in its grace period counts as its session's).
    pub fn revoke_others(&self, token: &Token) -> Result<usize> {
        let hash = token.hash().0;
        self.inner.revoke_others_of(|| Some(hash))
    }

    /// [`Store::revoke_others`] for the session with public id `id` (an operator's
    /// "sign out every device of this user but that one", from a devices list).
    ///
    /// # Errors
    /// [`Error::Ended`] if no live session has that id.
    pub fn revoke_others_by_id(&self, id: SessionId) -> Result<usize> {
        self.inner.revoke_others_of(|| self.inner.hash_of(id))
    }
}

impl Inner {
    /// `revoke_others` for the session whose current token hash `hash` gives (looked
    /// up again whenever the session moved).
    fn revoke_others_of(&self, hash: impl Fn() -> Option<u128>) -> Result<usize> {
        let inner = self;
        loop {
            let hash = hash().ok_or(Error::Ended)?;
            let (id, user) = inner
                .read_live(hash, |s, _| (s.id, s.user.clone()))
                .ok_or(Error::Ended)?;
            let Some(user) = user else {
                return Ok(0);
            };
            let mut guards = inner.users.lock(&user, None);
            // Under the user's lock the session cannot move to another user; if it
            // moved (or ended) before, look again.
            let same = inner.read_live(hash, |s, _| s.id == id && s.user.as_ref() == Some(&user));
            if same != Some(true) {
                continue;
            }
            let (user, mut ids) = guards.take(user.as_str()).unwrap_or((user, Vec::new()));
            ids.retain(|&other| other != id);
            guards.add(&user, id);
            return inner.revoke_listed(guards, user, ids, EndReason::RevokedByOtherSession);
        }
    }
}

impl Inner {
    /// Ends the sessions `ids`, taken from `user`'s list while `guards` holds the
    /// user's lock, with `reason`; reports each (an expired one as expired) and, for a
    /// revocation of the whole user, [`Event::UserRevoked`]. Returns how many were live.
    pub(super) fn revoke_listed(
        &self,
        mut guards: UserGuards<'_>,
        user: UserId,
        ids: Vec<SessionId>,
        reason: EndReason,
    ) -> Result<usize> {
        let removed = match self.remove_batch(&ids, reason) {
            Ok(removed) => removed,
            Err(e) => {
                // The journal failed partway: the sessions not ended stay listed.
                for &id in &ids {
                    if self.place_of(id).is_some() {
                        guards.add(&user, id);
                    }
                }
                return Err(e);
            }
        };
        drop(guards);
        let now = self.now();
        let live = |s: &SessionState| s.deadline(self.rules) > now;
        let count = removed.iter().filter(|(s, _)| live(s)).count();
        // Tickets are handed out in log order: the last one covers the rest.
        if let Some(last) = removed.iter().map(|&(_, t)| t).max() {
            self.wait(last)?;
        }
        self.emit_if(|| {
            let ev = |session, reason| Event::Ended {
                session,
                user: Some(user.clone()),
                reason,
            };
            let (ended, expired): (Vec<_>, Vec<_>) = removed.iter().partition(|(s, _)| live(s));
            let mut evs: Vec<Event> = expired
                .iter()
                .map(|(s, _)| ev(s.id, EndReason::Expired))
                .chain(ended.iter().map(|(s, _)| ev(s.id, reason)))
                .collect();
            if reason == EndReason::Revoked {
                evs.push(Event::UserRevoked {
                    user: user.clone(),
                    sessions: ended.iter().map(|(s, _)| s.id).collect(),
                });
            }
            evs
        });
        Ok(count)
    }
}

impl Inner {
    /// With `user`'s lock held: makes room for one more session under
    /// [`Options::max_sessions_per_user`], or refuses. `exclude` is a session already
    /// counted as the user's new one (a bind). Also prunes stale entries.
    pub(super) fn enforce_limit(
        &self,
        guards: &mut UserGuards<'_>,
        user: &UserId,
        exclude: Option<SessionId>,
        events: &mut Vec<Event>,
        tickets: &mut Vec<Ticket>,
    ) -> Result<()> {
        let Some(max) = self.opts.max_sessions_per_user else {
            return Ok(());
        };
        let mut live: Vec<(Timestamp, SessionId)> = Vec::new();
        self.read_batch(&guards.sessions(user.as_str()), |s| {
            if Some(s.id) != exclude {
                live.push((s.created, s.id));
            }
        });
        if live.len() < max {
            return Ok(());
        }
        if self.opts.limit_policy == LimitPolicy::Refuse {
            self.refusals.user_limit.fetch_add(1, Ordering::Relaxed);
            return Err(Error::UserSessionLimit {
                user: user.to_string(),
                max,
            });
        }
        live.sort();
        for &(_, id) in &live[..live.len() + 1 - max] {
            if let Some((_, t)) = self.remove_by_id(id, EndReason::LimitExceeded)? {
                guards.remove(user, id);
                tickets.push(t);
                events.push(Event::Ended {
                    session: id,
                    user: Some(user.clone()),
                    reason: EndReason::LimitExceeded,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::journal::tests::fail_appends_after;
    use crate::model::session::NewSession;
    use crate::store::Store;

    /// A revoke whose journal fails partway (here after two of five End records) ends
    /// what it ended, keeps listing the rest under their user, and leaves every index
    /// agreeing with every other — so reads, and `verify`, go on.
    #[test]
    fn a_revoke_that_fails_partway_leaves_the_index_consistent() {
        let store = Store::in_memory().unwrap();
        let tokens: Vec<_> = (0..5)
            .map(|_| store.create(NewSession::for_user("alice")).unwrap().0)
            .collect();
        fail_appends_after(Some(2));
        let r = store.revoke_user("alice");
        fail_appends_after(None);
        assert!(
            matches!(r, Err(crate::error::Error::Poisoned { .. })),
            "{r:?}"
        );
        store.verify().unwrap();
        let live = tokens.iter().filter(|t| store.get(t).is_some()).count();
        assert_eq!(live, 3, "two ended before the failure");
        assert_eq!(store.sessions_of("alice").unwrap().len(), 3);
        assert_eq!(store.revoke_user("alice").unwrap(), 3);
        store.verify().unwrap();
    }
}
