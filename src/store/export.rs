//! Moving sessions out and in whole: `export` streams every live session as a
//! `SessionRecord`, `import` admits one (times, version and authentication kept) as
//! `Change::Import`, the same image record a compacted base holds.

use super::{IMAGES_AT_ONCE, Key, Store};
use crate::error::Result;
use crate::model::portable::SessionRecord;
use crate::model::session::UserId;
use crate::model::token::SessionId;

impl Store {
    /// Calls `f` with every live session, one at a time (a consistent view of each
    /// session, not a point-in-time view of the whole store: sessions created or ended
    /// during the walk may or may not be seen). Returns how many were passed to `f`.
    /// Reads only: it counts as no session's activity.
    ///
    /// # Errors
    /// Whatever `f` returns stops the walk and is returned.
    pub fn export(&self, mut f: impl FnMut(SessionRecord) -> Result<()>) -> Result<usize> {
        let inner = &*self.inner;
        let mut n = 0usize;
        for ids in inner.ids.iter() {
            let batch: Vec<SessionId> = ids.read().keys().copied().collect();
            let mut images = Vec::with_capacity(IMAGES_AT_ONCE);
            for ids in batch.chunks(IMAGES_AT_ONCE) {
                inner.images_of(ids, &mut images);
                for img in images.drain(..) {
                    f(SessionRecord::from_image(img))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Brings in a session exported from a store ([`Store::export`]), with its id, token
    /// hash, user, times, version, data, factors and device as they were (its address
    /// cut further if this store's [`crate::Options::address_privacy`] keeps less):
    /// it answers to the same token.
    /// Durable like a create. Returns false, and changes nothing, if the session has
    /// already ended: its deadline passed, or its user authenticated before the user's
    /// not-before time ([`Store::revoke_user_before`]) — an export taken before a
    /// password change brings back none of the sessions the change ended.
    ///
    /// # Errors
    /// [`Error::Exists`](crate::Error::Exists) if its token hash or its public id is already in this store;
    /// [`Error::TooLarge`](crate::Error::TooLarge) and [`Error::InvalidOption`](crate::Error::InvalidOption) for a record this store's limits
    /// refuse, that contradicts itself (last seen before created) or whose version
    /// could not grow (`SessionRecord::version`, from [`Session::MAX_VERSION`](crate::Session::MAX_VERSION) on);
    /// [`Error::UserSessionLimit`](crate::Error::UserSessionLimit) and [`Error::Full`](crate::Error::Full) as for a create.
    pub fn import(&self, mut rec: SessionRecord) -> Result<bool> {
        let inner = &*self.inner;
        inner.checked(rec.check(&inner.opts.limits))?;
        rec.keep_address_as(inner.opts.address_privacy);
        let (id, key) = (rec.id, rec.token_hash.0);
        let user = rec.user.clone();
        let authenticated = rec.authenticated;
        let (state_key, state) = crate::store::load::state_of(rec.into_image());
        debug_assert_eq!(state_key, key);
        if state.deadline(inner.rules) <= inner.now() {
            return Ok(false);
        }
        let bytes = crate::index::usage::cost(&state);
        let mut state = Some(state);
        let admitted = inner.admit(
            id,
            user.as_ref().map(UserId::as_str),
            Key::Given(key),
            Some(authenticated),
            bytes,
            |_, user| {
                // A given key is tried once, so the state is built once.
                let mut s = state
                    .take()
                    .unwrap_or_else(|| unreachable!("admit builds once"));
                s.user = user.clone();
                s
            },
        )?;
        Ok(admitted.is_some())
    }
}
