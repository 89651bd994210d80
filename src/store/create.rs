//! Creating sessions: `create`, `create_with_token`, and the engine half every new
//! session goes through (`Inner::admit`, also behind `import`).
//!
//! A create: validate the input; with a user, take the user's lock and apply the
//! per-user cap; draw the public id and token from the store's entropy; under the
//! target shard's write lock, record id → hash in the id map, append
//! `Change::Create` to the journal (before memory changes, so a change the log
//! refuses is never visible), insert the session and schedule its deadline; add the
//! id to the user's list and release the user's lock; wait for durability, then emit
//! `Event::Created`.

use super::compact::image;
use super::{Inner, Key, Store};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::index::entry::SessionState;
use crate::index::usage::cost_of;
use crate::index::wheel::TimerHandle;
use crate::model::change::Change;
use crate::model::details::{Details, label_of};
use crate::model::event::Event;
use crate::model::session::{NewSession, Session, UserId, check_label, signed_in_before};
use crate::model::token::{self, SessionId, Token, TokenHash};
use std::sync::Arc;

impl Store {
    /// Creates a session and returns its token (for the client) and a snapshot.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`], [`Error::TooLarge`] for bad input;
    /// [`Error::UserSessionLimit`] if the user is at the limit and the policy refuses;
    /// [`Error::Full`] if the store is at its budget ([`crate::Options::budget`]) and
    /// no anonymous session could make room.
    pub fn create(&self, new: NewSession) -> Result<(Token, Session)> {
        self.create_inner(new, None)
    }

    pub(super) fn create_inner(
        &self,
        new: NewSession,
        fixed: Option<&Token>,
    ) -> Result<(Token, Session)> {
        let inner = &*self.inner;
        let limits = &inner.opts.limits;
        // Checked here, wrapped under the user's lock (no allocation if the user already
        // has sessions).
        let user = new.user.as_deref();
        if let Some(u) = user {
            inner.checked(UserId::check(u, limits))?;
        }
        if let Some(label) = &new.label {
            inner.checked(check_label(label, limits))?;
        }
        if let Some(how) = &new.sign_in {
            inner.checked(how.check())?;
            if user.is_none() {
                return inner.checked(Err(Error::InvalidSignIn {
                    reason: "an anonymous session has no sign-in; create it with \
                             NewSession::for_user"
                        .into(),
                }));
            }
        }
        let (lifetime, idle) = inner.checked(new.durations(&inner.opts))?;
        inner.check_data(&new.data)?;
        let data = new.data;
        let (id, first_token) = token::fresh_session(|b| inner.entropy.fill(b))?;
        // Built once, dated when the session is (inside `admit`, at its `now`): the
        // user agent is cleaned and the method names allocated here, not per attempt.
        let privacy = inner.opts.address_privacy;
        let proto = Details {
            label: new.label.map(Arc::from),
            factors: new
                .sign_in
                .as_ref()
                .map(|s| s.apply(&[], Timestamp(0)))
                .transpose()
                .expect("a checked sign-in fits an empty session")
                .unwrap_or_default()
                .into(),
            device: new
                .device
                .as_ref()
                .and_then(|d| d.stored(privacy, Timestamp(0)))
                .map(Box::new),
        };
        let details = |now: Timestamp| {
            let mut d = proto.clone();
            for f in d.factors.iter_mut() {
                f.at = now;
            }
            if let Some(device) = &mut d.device {
                device.at = now;
            }
            d.shared()
        };
        let key = match fixed {
            Some(token) => Key::Given(token.hash().0),
            None => Key::Fresh(first_token),
        };
        let bytes = cost_of(data.encoded_len(), Some(&proto).filter(|d| !d.is_empty()));
        let admitted = inner.admit(id, user, key, None, bytes, |now, user| {
            let mut state = Box::new(SessionState {
                id,
                user: user.clone(),
                details: details(now),
                created: now,
                authenticated: user.as_ref().map(|_| now).into(),
                absolute: now.saturating_add(lifetime),
                idle_ms: 0,
                last_seen: now.0.into(),
                version: 0,
                data: data.clone(),
                timer: TimerHandle::detached(),
                compacted: 0.into(),
                hash_hi: 0,
            });
            state.set_idle(idle);
            state
        })?;
        let (token, session) = admitted.expect("only an import is refused for its age");
        Ok((
            token
                .or_else(|| fixed.cloned())
                .expect("a fresh key yields its token"),
            session,
        ))
    }

    /// Creates a session addressed by a token the caller chose rather than a fresh one:
    /// for a framework that picks its own session ids (derive the token from the id with
    /// [`Token::from_bytes`]), or for moving existing cookies over from another store
    /// without logging anyone out. The token must carry as much entropy as a generated
    /// one; the store cannot check that.
    ///
    /// # Errors
    /// [`Error::Exists`] if the token already addresses a session (or a rotated-away
    /// token still in its grace period); otherwise as [`Store::create`].
    pub fn create_with_token(&self, token: &Token, new: NewSession) -> Result<Session> {
        self.create_inner(new, Some(token)).map(|(_, s)| s)
    }
}

impl Inner {
    /// Puts a new session into the index, the id map, the user index, the wheel and the
    /// journal: what create, create-with-token and import share. `build` makes the
    /// session at `now` for the (canonical) user: never earlier than the user's
    /// not-before time, should the clock have been set back past it. A fresh key
    /// retries with new tokens on a collision; a given key is [`Error::Exists`]. Under
    /// the user's lock, the user's session limit is enforced first, then the store's
    /// budget (the session costing `bytes`). Returns the token when the key was fresh.
    ///
    /// `import`: the session is an import authenticated at this time (logged as an
    /// image). If that is before the user's not-before time it is refused: `Ok(None)`,
    /// nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        &self,
        id: SessionId,
        user: Option<&str>,
        key: Key,
        import: Option<Option<Timestamp>>,
        bytes: u64,
        mut build: impl FnMut(Timestamp, &Option<UserId>) -> Box<SessionState>,
    ) -> Result<Option<(Option<Token>, Session)>> {
        let as_image = import.is_some();
        let mut events = Vec::new();
        let mut tickets = Vec::new();
        let mut guards = user.map(|u| self.users.lock_str(u));
        // Sessions of one user share one allocation of its id.
        let user = match (guards.as_mut(), user) {
            (Some(g), Some(u)) => Some(g.canonical_str(u)),
            _ => None,
        };
        let not_before = match (guards.as_mut(), user.as_ref()) {
            (Some(g), Some(u)) => g.not_before(u.as_str()),
            _ => None,
        };
        if let (Some(nb), Some(authenticated)) = (not_before, import)
            && signed_in_before(authenticated, nb)
        {
            return Ok(None);
        }
        if let Key::Given(k) = key {
            // Checked before the limit can end anything for this session's sake.
            self.check_vacant(id, k)?;
        }
        if let (Some(g), Some(u)) = (guards.as_mut(), user.as_ref()) {
            self.enforce_limit(g, u, None, &mut events, &mut tickets)?;
        }
        let mut reserved = self.reserve(bytes, &mut events, &mut tickets)?;
        let (given, mut fresh) = match key {
            Key::Fresh(t) => (None, Some(t)),
            Key::Given(k) => (Some(k), None),
        };
        let (token, session) = loop {
            let (token, key) = match (given, fresh.take()) {
                (Some(k), _) => (None, k),
                (None, Some(t)) => {
                    let k = t.hash().0;
                    (Some(t), k)
                }
                (None, None) => {
                    let t = token::fresh_token(|b| self.entropy.fill(b))?;
                    let k = t.hash().0;
                    (Some(t), k)
                }
            };
            let mut shard = self.shard(key).write();
            // One probe both checks for a collision and keeps the place.
            let inserted = shard.insert_vacant(key, &mut reserved, || {
                let now = self.now().max(not_before.unwrap_or_default());
                let state = build(now, &user);
                let deadline = state.deadline(self.rules);
                // The id goes in first, while the shard lock is held: a compaction
                // snapshot finds a session in its shard or, if a rotation moved it,
                // by its id, and must not miss one whose Create record precedes its
                // seal (it then waits on this shard's lock).
                if !self.ids_try_insert(id, key) {
                    return Err(Error::Exists { what: "session id" });
                }
                // A session with factors or a device is logged whole, as an image: one
                // record, so no crash leaves it without them.
                let whole = as_image
                    || state
                        .details
                        .as_ref()
                        .is_some_and(|d| !d.factors.is_empty() || d.device.is_some());
                let appended = self.journal.append(|| {
                    if whole {
                        Change::Import(Box::new(image(key, &state)))
                    } else {
                        Change::Create {
                            id,
                            hash: TokenHash(key),
                            user: state.user.clone(),
                            label: label_of(&state.details).cloned(),
                            created: state.created,
                            absolute: state.absolute,
                            idle_ms: state.idle_ms,
                            data: state.data.clone(),
                        }
                    }
                });
                match appended {
                    Ok(t) => tickets.push(t),
                    Err(e) => {
                        self.ids_remove(id);
                        return Err(e);
                    }
                }
                let session = state.snapshot(self.rules, &self.opts.levels, now);
                Ok((state, deadline, session))
            })?;
            if inserted.is_some() {
                if as_image {
                    shard.tally.imported += 1;
                } else {
                    shard.tally.created += 1;
                }
            }
            drop(shard);
            let session = match inserted {
                Some(session) => session,
                None if token.is_some() => continue,
                None => return Err(Error::Exists { what: "token" }),
            };
            break (token, session);
        };
        if let (Some(g), Some(u)) = (guards.as_mut(), user.as_ref()) {
            g.add(u, id);
        }
        drop(guards);
        if user.is_none() {
            self.queue_anonymous(id, session.last_seen.0);
        }
        self.wait_all(&tickets)?;
        if self.events.active() {
            events.push(Event::Created { session: id, user });
            self.emit(events);
        }
        Ok(Some((token, session)))
    }

    /// [`Error::Exists`] if `key` addresses anything (a session or an alias) or `id` is
    /// a session's. A check ahead of the authoritative one under the locks.
    pub(super) fn check_vacant(&self, id: SessionId, key: u128) -> Result<()> {
        if self.shard(key).read().occupied(key) {
            return Err(Error::Exists { what: "token" });
        }
        if self.hash_of(id).is_some() {
            return Err(Error::Exists { what: "session id" });
        }
        Ok(())
    }
}
