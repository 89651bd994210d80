//! Writing to a live session: data (`put`, `remove`, `update`, `save`), its label,
//! and rotation.
//!
//! A write: `with_live` takes the write lock of the shard holding the live session the
//! token resolves to, checks the deadline, runs the change, appends the `Change` to
//! the journal and releases the lock; the caller then waits for durability. `update`
//! runs the caller's closure on a copy with no lock held and commits with a version
//! check, retrying on a conflict. Rotation locks the old and new shards in index
//! order, moves the session to the new hash, leaves an alias at the old one (with its
//! own timer) and updates the id map, all before the locks are released, holding the
//! session's rotation gate shared meanwhile.

use super::{Attempt, Inner, Store};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::index::shard::{Shard, SlotRef};
use crate::model::change::Change;
use crate::model::data::SessionData;
use crate::model::event::Event;
use crate::model::session::{check_label, next_version};
use crate::model::token::{self, Token, TokenHash};
use crate::util::codec;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

impl Store {
    /// Sets `key` to `value` in the session's data. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Ended`](crate::Error::Ended) if the session is not live; [`Error::TooLarge`](crate::Error::TooLarge) past a limit;
    /// [`Error::Codec`](crate::Error::Codec) if `value` cannot be serialized; [`Error::VersionExhausted`](crate::Error::VersionExhausted)
    /// if the session is at [`Session::MAX_VERSION`](crate::Session::MAX_VERSION).
    pub fn put<T: Serialize + ?Sized>(&self, token: &Token, key: &str, value: &T) -> Result<u64> {
        let bytes = codec::encode(value, Some(key))?;
        self.put_raw(token, key, &bytes)
    }

    /// Sets `key` to raw bytes (already encoded by the caller). Returns the new version.
    ///
    /// # Errors
    /// As [`Store::put`].
    pub fn put_raw(&self, token: &Token, key: &str, value: &[u8]) -> Result<u64> {
        self.inner.check_entry(key, value.len())?;
        self.inner.change_data(token.hash().0, None, |data| {
            data.insert_raw(key, value)?;
            Ok(true)
        })
    }

    /// Removes `key` from the session's data. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Ended`](crate::Error::Ended) if the session is not live; [`Error::VersionExhausted`](crate::Error::VersionExhausted) as for
    /// [`Store::put`].
    pub fn remove(&self, token: &Token, key: &str) -> Result<u64> {
        self.inner
            .change_data(token.hash().0, None, |data| Ok(data.remove(key)))
    }

    /// Atomic read-modify-write of the session's data: `f` gets a copy of the current
    /// data, and its changes are saved only if nobody changed the session meanwhile;
    /// otherwise `f` runs again on the fresh data. No lock is held while `f` runs, so
    /// it may be called more than once: keep side effects out of it. If `f` returns an
    /// error, nothing is saved.
    ///
    /// # Errors
    /// [`Error::Ended`](crate::Error::Ended) if the session is not live; whatever `f` returns; limits and
    /// [`Error::VersionExhausted`](crate::Error::VersionExhausted) as for [`Store::put`].
    pub fn update<R>(
        &self,
        token: &Token,
        mut f: impl FnMut(&mut SessionData) -> Result<R>,
    ) -> Result<R> {
        let inner = &*self.inner;
        let hash = token.hash().0;
        loop {
            let (version, current) = inner
                .read_live(hash, |s, _| (s.version, s.data.clone()))
                .ok_or(Error::Ended)?;
            let mut data = current.clone();
            let out = f(&mut data)?;
            if data == current {
                return Ok(out);
            }
            inner.check_data(&data)?;
            match inner.change_data(hash, Some(version), move |d| {
                *d = data.clone();
                Ok(true)
            }) {
                Ok(_) => return Ok(out),
                Err(Error::VersionConflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Compare-and-swap save: replaces the session's data with `data` only if its
    /// version is still `expected_version` (from [`Session::version`](crate::Session::version)). For code that
    /// loads a session, awaits something, and saves: a concurrent change is reported,
    /// never silently overwritten. Returns the new version.
    ///
    /// # Errors
    /// [`Error::VersionConflict`](crate::Error::VersionConflict) if the session changed; [`Error::Ended`](crate::Error::Ended) if it is not
    /// live (a late save never resurrects a session); limits and
    /// [`Error::VersionExhausted`](crate::Error::VersionExhausted) as for [`Store::put`].
    pub fn save(&self, token: &Token, expected_version: u64, data: &SessionData) -> Result<u64> {
        self.inner.check_data(data)?;
        self.inner
            .change_data(token.hash().0, Some(expected_version), |d| {
                d.clone_from(data);
                Ok(true)
            })
    }

    /// Sets (or clears) the session's device label.
    ///
    /// # Errors
    /// [`Error::Ended`](crate::Error::Ended) if the session is not live; [`Error::TooLarge`](crate::Error::TooLarge) past the limit.
    pub fn set_label(&self, token: &Token, label: Option<&str>) -> Result<()> {
        let inner = &*self.inner;
        if let Some(l) = label {
            inner.checked(check_label(l, &inner.opts.limits))?;
        }
        let label: Option<Arc<str>> = label.map(Arc::from);
        let ticket = inner.with_live(token.hash().0, |shard, key, _| {
            let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
            let id = s.id;
            let t = inner.journal.append(|| Change::Label {
                id,
                label: label.clone(),
            })?;
            s.set_label(label.clone());
            Ok(Some(t))
        })?;
        inner.wait(ticket)
    }

    /// Replaces the session's token with a fresh one, keeping its id, data and user
    /// (the session-fixation defence; call it at login and privilege changes). The new
    /// token exists before the old one is retired, and the old one keeps resolving to
    /// the session for [`Options::rotation_grace`](crate::Options::rotation_grace), so parallel requests are not
    /// logged out. Returns the new token.
    ///
    /// # Errors
    /// [`Error::Ended`](crate::Error::Ended) if the session is not live; [`Error::TokenRetired`](crate::Error::TokenRetired) if `token`
    /// is itself an old token in its grace period (it may be used, but not to mint a
    /// new token).
    pub fn rotate(&self, token: &Token) -> Result<Token> {
        self.rotate_with(token, None)
    }

    /// Like [`Store::rotate`], but to a token the caller chose (for a framework that
    /// picks its own session ids, as [`Store::create_with_token`]), and with no grace
    /// period: the old token stops resolving at once. Keeps the session's id, data,
    /// user and times; one atomic step, so a concurrent [`Store::revoke_user`] sees the
    /// session under one token or the other, never neither.
    ///
    /// # Errors
    /// [`Error::Exists`](crate::Error::Exists) if `new` already addresses a session (or an old token in its
    /// grace period), or is `token` itself; otherwise as [`Store::rotate`].
    pub fn rotate_to(&self, token: &Token, new: &Token) -> Result<()> {
        self.rotate_with(token, Some(new)).map(|_| ())
    }

    /// [`Store::rotate`] to a fresh token with the configured grace, or to `given` with
    /// none.
    pub(super) fn rotate_with(&self, token: &Token, given: Option<&Token>) -> Result<Token> {
        let inner = &*self.inner;
        let old = token.hash().0;
        loop {
            let fresh = match given {
                Some(t) => t.clone(),
                None => token::fresh_token(|b| inner.entropy.fill(b))?,
            };
            let new = fresh.hash().0;
            if new == old {
                if given.is_some() {
                    return Err(Error::Exists { what: "token" });
                }
                continue;
            }
            let (i, j) = (inner.shard_ix(old), inner.shard_ix(new));
            let (mut a, mut b) = inner.lock_pair(i, j);
            let now = inner.now();
            let live = match a.get(old) {
                Some(SlotRef::Live(s)) => s.deadline(inner.rules) > now,
                Some(SlotRef::Alias(al)) if al.until > now => {
                    drop(b);
                    drop(a);
                    // An old token in its grace period: refuse to mint from it, but
                    // say "ended" if its session is gone.
                    return Err(match inner.read_live(old, |_, _| ()) {
                        Some(()) => Error::TokenRetired,
                        None => Error::Ended,
                    });
                }
                _ => false,
            };
            if !live {
                return Err(Error::Ended);
            }
            let collides = match b.as_deref() {
                Some(other) => other.occupied(new),
                None => a.occupied(new),
            };
            if collides {
                if given.is_some() {
                    return Err(Error::Exists { what: "token" });
                }
                continue; // the new hash's low half is taken: draw again
            }
            let Some(id) = a.live(old).map(|s| s.id) else {
                return Err(Error::Ended);
            };
            // Held until the session has moved and the id map says where: a lookup
            // holding the gate exclusively (one that lost many races to rotations of
            // this session) sees it stay put. Never waited for with shards held (it
            // comes before them in the lock order): let that lookup finish, then
            // start over.
            let gate = inner.gate(id);
            let Some(moving) = gate.try_read() else {
                drop(b);
                drop(a);
                drop(gate.read());
                continue;
            };
            let grace_ms = if given.is_some() { 0 } else { inner.grace_ms };
            let grace_until = now.saturating_add(Duration::from_millis(grace_ms));
            let ticket = inner.journal.append(|| Change::Rotate {
                id,
                old: TokenHash(old),
                new: TokenHash(new),
                grace_until,
                at: now,
            })?;
            // Moved, not ended: its place in the budget stays taken throughout.
            let Some(state) = a.remove_moving(old) else {
                return Err(Error::Ended);
            };
            a.tally.rotated += 1;
            a.wheel.cancel(state.timer, old as u64);
            let instances = a.instances.remove(&old);
            if grace_ms > 0 {
                a.insert_alias(old, id, grace_until);
            }
            state.mark_seen(now);
            let deadline = state.deadline(inner.rules);
            let target = match b.as_deref_mut() {
                Some(other) => other,
                None => &mut *a,
            };
            target.insert_moved(new, state, deadline);
            if let Some(inst) = instances {
                target.instances.insert(new, inst);
            }
            inner.ids_insert(id, new);
            // Under both shards' locks: a compaction reading them after the move also
            // finds the note.
            inner.moves.note(id);
            drop(b);
            drop(a);
            drop(moving);
            inner.wait(ticket)?;
            inner.emit_if(|| vec![Event::Rotated { session: id }]);
            return Ok(fresh);
        }
    }
}

impl Inner {
    /// Runs `f` under the write lock of the shard holding the live session `hash`
    /// resolves to; `f` gets the shard, the session's key and the time. `f` returning
    /// `Ok(None)` means "the session changed under me": `with_live` looks again.
    pub(super) fn with_live<R>(
        &self,
        hash: u128,
        mut f: impl FnMut(&mut Shard, u128, Timestamp) -> Attempt<R>,
    ) -> Result<R> {
        loop {
            let mut shard = self.shard(hash).write();
            let mut now = self.now();
            let mut key = hash;
            match shard.get(hash) {
                Some(SlotRef::Live(s)) => {
                    if s.deadline(self.rules) <= now {
                        return Err(Error::Ended);
                    }
                }
                Some(SlotRef::Alias(a)) if a.until > now => {
                    // An old token inside its grace: the session, wherever rotations
                    // moved it.
                    let id = a.session;
                    drop(shard);
                    (shard, key) = self.lock_by_id(id, |l| l.write()).ok_or(Error::Ended)?;
                    now = self.now();
                    if shard
                        .live(key)
                        .is_none_or(|s| s.deadline(self.rules) <= now)
                    {
                        return Err(Error::Ended);
                    }
                }
                _ => return Err(Error::Ended),
            }
            if let Some(r) = f(&mut shard, key, now)? {
                return Ok(r);
            }
        }
    }

    /// Replaces the data of the session `hash` resolves to with what `change` makes of
    /// it; with `expected`, only if the version matches. Returns the new version.
    pub(super) fn change_data(
        &self,
        hash: u128,
        expected: Option<u64>,
        mut change: impl FnMut(&mut SessionData) -> Result<bool>,
    ) -> Result<u64> {
        let (version, ticket) = self.with_live(hash, |shard, key, now| {
            let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
            if let Some(expected) = expected
                && s.version != expected
            {
                return Err(Error::VersionConflict {
                    expected,
                    actual: s.version,
                });
            }
            let mut data = s.data.clone();
            if !change(&mut data)? {
                return Ok(Some((s.version, None)));
            }
            if data.encoded_len() > self.opts.limits.max_data_bytes {
                return Err(Error::TooLarge {
                    what: "session data",
                    len: data.encoded_len(),
                    max: self.opts.limits.max_data_bytes,
                });
            }
            let (id, version) = (s.id, next_version(s.version)?);
            let t = self.journal.append(|| Change::Data {
                id,
                version,
                at: now,
                data: data.clone(),
            })?;
            s.data = data;
            s.version = version;
            s.mark_seen(now);
            Ok(Some((version, Some(t))))
        })?;
        if let Some(t) = ticket {
            self.wait(t)?;
        }
        Ok(version)
    }

    pub(super) fn check_entry(&self, key: &str, value_len: usize) -> Result<()> {
        self.checked(crate::model::session::check_entry(
            key,
            value_len,
            &self.opts.limits,
        ))
    }

    pub(super) fn check_data(&self, data: &SessionData) -> Result<()> {
        self.checked(crate::model::session::check_data(data, &self.opts.limits))
    }
}
