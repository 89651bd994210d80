//! [`UserInterner`]: the user ids of decoded records, one allocation per user, each
//! known by an index — what a backend's decoding threads fill and the sink of a
//! recovery ([`crate::backend::Replay`]) reads, so a million sessions of a hundred
//! thousand users are grouped by index rather than by string.

use std::collections::HashMap;

use crate::model::session::UserId;

/// Interns user ids while records are decoded, so that the sessions of one user share
/// one allocation (and the bulk load of a base can group them by index instead of by
/// string).
///
/// Ids of up to 23 bytes — almost all — are keyed by their bytes held inline in the
/// table, so a lookup compares them without following a pointer to the shared string
/// (a cache miss per record when a million records name a hundred thousand users).
/// The table maps an id to its index in `users`: [`UserInterner::index`] (the bulk
/// load of a base) touches no user's shared allocation per record, only
/// [`UserInterner::intern`] clones one.
#[derive(Default)]
pub(crate) struct UserInterner {
    short: HashMap<(u8, [u8; 23]), u32, ahash::RandomState>,
    long: HashMap<Box<str>, u32, ahash::RandomState>,
    users: Vec<UserId>,
}

/// The user index of a session without a user.
pub(crate) const NO_USER: u32 = u32::MAX;

impl UserInterner {
    pub(crate) fn intern(&mut self, s: &str) -> Result<UserId, String> {
        let i = self.index(s)?;
        Ok(self.users[i as usize].clone())
    }

    /// The index of `s` in [`UserInterner::into_users`], validated and added on first
    /// sight.
    pub(crate) fn index(&mut self, s: &str) -> Result<u32, String> {
        if let Ok(len) = u8::try_from(s.len())
            && s.len() <= 23
        {
            let mut inline = [0u8; 23];
            inline[..s.len()].copy_from_slice(s.as_bytes());
            if let Some(&i) = self.short.get(&(len, inline)) {
                return Ok(i);
            }
            let i = self.push(s)?;
            self.short.insert((len, inline), i);
            return Ok(i);
        }
        if let Some(&i) = self.long.get(s) {
            return Ok(i);
        }
        let i = self.push(s)?;
        self.long.insert(Box::from(s), i);
        Ok(i)
    }

    fn push(&mut self, s: &str) -> Result<u32, String> {
        let i = u32::try_from(self.users.len())
            .ok()
            .filter(|&i| i != NO_USER)
            .ok_or_else(|| "too many distinct user ids".to_owned())?;
        self.users.push(UserId::stored(s)?);
        Ok(i)
    }

    /// The id at `index`.
    pub(crate) fn get(&self, index: u32) -> &UserId {
        &self.users[index as usize]
    }

    /// Every id interned, by index.
    pub(crate) fn users(&self) -> &[UserId] {
        &self.users
    }
}
