//! How a session signed in: [`Store::login_with`] and [`Store::step_up`] record the
//! methods and the level ([`SignIn`]), each rotating the token first (a privilege
//! change, the session-fixation defence); [`Store::revoke_user_where`] ends a user's
//! sessions by how they signed in.
//!
//! Order in the log, so that any prefix a crash leaves is safe: the rotation, then
//! (for a login) the bind, which clears the factors, then the factors. A crash between
//! leaves the session at a *lower* level than asked, never the old token at a higher
//! one.

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::model::change::Change;
use crate::model::event::EndReason;
use crate::model::session::UserId;
use crate::model::signin::{Criterion, SignIn};
use crate::model::token::Token;

impl Store {
    /// [`Store::login`] that also records how the user proved who they are: the
    /// session's factors become `how`'s methods, at its level, now. Returns the new
    /// token.
    ///
    /// ```
    /// # use sessiondb::{NewSession, SignIn, Store};
    /// # let store = Store::in_memory()?;
    /// let (visitor, _) = store.create(NewSession::anonymous())?;
    /// let token = store.login_with(&visitor, "alice", SignIn::with("password"))?;
    /// let s = store.get(&token).unwrap();
    /// assert_eq!((s.level(), s.factors()[0].method()), (1, "password"));
    /// # Ok::<(), sessiondb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSignIn`] for a malformed `how` (nothing changed); otherwise as
    /// [`Store::login`].
    pub fn login_with(&self, token: &Token, user: &str, how: SignIn) -> Result<Token> {
        self.inner.checked(how.check())?;
        let fresh = self.login(token, user)?;
        let uid = UserId::new(user, &self.inner.opts.limits)?;
        self.inner.sign_in(&fresh, &uid, &how, true)?;
        Ok(fresh)
    }

    /// Records a step-up on a signed-in session ("sudo mode": the user proved their
    /// password again, or a second factor): rotates the token, then adds `how`'s
    /// methods at its level, now (a method the session already has is replaced, its
    /// time and level those of this step). Returns the new token. As after any
    /// rotation, the old token keeps resolving to the session (now stepped up) for
    /// [`crate::Options::rotation_grace`], so requests in flight are not signed out;
    /// set the grace to zero where that window matters more.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use sessiondb::{NewSession, SignIn, Store};
    /// # let store = Store::in_memory()?;
    /// # let (visitor, _) = store.create(NewSession::anonymous())?;
    /// let token = store.login_with(&visitor, "alice", SignIn::with("password"))?;
    /// let token = store.step_up(&token, SignIn::with("webauthn").level(2))?;
    /// let s = store.get(&token).unwrap();
    /// assert!(s.authenticated_within(2, Duration::from_secs(300)));
    /// # Ok::<(), sessiondb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NotSignedIn`] if no user is bound; [`Error::InvalidSignIn`] for a
    /// malformed `how`, or one that would leave the session more than
    /// [`SignIn::MAX_FACTORS`] methods (both before anything changes); otherwise as
    /// [`Store::rotate`].
    pub fn step_up(&self, token: &Token, how: SignIn) -> Result<Token> {
        self.inner.checked(how.check())?;
        let inner = &*self.inner;
        let (user, fits) = inner
            .read_live(token.hash().0, |s, now| {
                (s.user.clone(), how.apply(s.factors(), now).map(|_| ()))
            })
            .ok_or(Error::Ended)?;
        let user = user.ok_or(Error::NotSignedIn)?;
        fits?;
        let fresh = self.rotate(token)?;
        inner.sign_in(&fresh, &user, &how, false)?;
        Ok(fresh)
    }

    /// [`Store::bind_user`] that also records how the user signed in, without
    /// rotating the token: for a framework that rotates its session ids itself (as
    /// `bind_user` is to [`Store::login`]). Prefer [`Store::login_with`].
    ///
    /// # Errors
    /// [`Error::InvalidSignIn`] for a malformed `how` (nothing changed); otherwise as
    /// [`Store::bind_user`].
    pub fn bind_user_with(&self, token: &Token, user: &str, how: SignIn) -> Result<()> {
        self.inner.checked(how.check())?;
        self.bind_user(token, user)?;
        let uid = UserId::new(user, &self.inner.opts.limits)?;
        self.inner.sign_in(token, &uid, &how, true)
    }

    /// [`Store::step_up`] without rotating the token: for a framework that rotates
    /// its session ids itself, which must then rotate before calling this.
    ///
    /// # Errors
    /// As [`Store::step_up`].
    pub fn add_sign_in(&self, token: &Token, how: SignIn) -> Result<()> {
        self.inner.checked(how.check())?;
        let user = self
            .inner
            .read_live(token.hash().0, |s, _| s.user.clone())
            .ok_or(Error::Ended)?
            .ok_or(Error::NotSignedIn)?;
        self.inner.sign_in(token, &user, &how, false)
    }

    /// Ends the sessions of `user` that meet `criterion`: those that signed in with a
    /// method ([`Criterion::Method`], say after it proved weak), or whose level is
    /// below one ([`Criterion::BelowLevel`], after a policy now asks for a second
    /// factor). As [`Store::revoke_user`], under the user's lock: a create, login,
    /// bind or step-up for the same user racing it completes before (and is judged
    /// by what it recorded) or starts after. Each ended session is reported as
    /// [`EndReason::Revoked`]. Returns how many ended.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] / [`Error::TooLarge`] for a bad user id;
    /// [`Error::InvalidSignIn`] for a malformed method name.
    pub fn revoke_user_where(&self, user: &str, criterion: &Criterion) -> Result<usize> {
        let inner = &*self.inner;
        inner.checked(UserId::check(user, &inner.opts.limits))?;
        inner.checked(criterion.check())?;
        let mut guards = inner.users.lock_str(user);
        let Some((user, mut ids)) = guards.take(user) else {
            return Ok(0);
        };
        let now = inner.now();
        let mut kept = Vec::new();
        inner.read_batch(&ids, |s| {
            if !criterion.matches(s.factors(), now, &inner.opts.levels) {
                kept.push(s.id);
            }
        });
        kept.sort_unstable();
        ids.retain(|id| kept.binary_search(id).is_err());
        for &id in &kept {
            guards.add(&user, id);
        }
        inner.revoke_listed(guards, user, ids, EndReason::Revoked)
    }
}

impl Inner {
    /// Records `how` on the live session `token` addresses, if `user` is still its
    /// user: its factors become `how` applied to none (`reset`, a login) or to the
    /// ones it has (a step-up). Under the user's lock, so that a revocation by
    /// criterion sees it before or after, never between.
    fn sign_in(&self, token: &Token, user: &UserId, how: &SignIn, reset: bool) -> Result<()> {
        let guards = self.users.lock(user, None);
        let ticket = self.with_live(token.hash().0, |shard, key, now| {
            let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
            if s.user.as_ref() != Some(user) {
                // Logged out or moved to another user meanwhile: what was proved
                // was for that user.
                return Err(Error::Ended);
            }
            let factors = how.apply(if reset { &[] } else { s.factors() }, now)?;
            let id = s.id;
            let t = self.journal.append(|| Change::SignIn {
                id,
                factors: factors.clone(),
            })?;
            s.set_factors(factors);
            Ok(Some(t))
        })?;
        drop(guards);
        self.wait(ticket)
    }
}
