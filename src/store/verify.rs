//! `verify`: checks that the session shards, the id shards, the user index and the
//! timing wheels agree. A disagreement is a bug in sessiondb (`Error::Inconsistent`).

use std::collections::HashMap;

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::index::shard::{SlotRef, id_ix};
use crate::model::session::UserId;
use crate::model::token::SessionId;

impl Store {
    /// Checks that the index, the id map, the user index and the timing wheels agree,
    /// taking every lock for a consistent view (so not for a hot path). Fuzz targets and
    /// property tests call it after every step.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] describing the first disagreement found.
    pub fn verify(&self) -> Result<()> {
        self.inner.verify()
    }
}

impl Inner {
    pub(super) fn verify(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Inconsistent(msg));
        let users = self.users.lock_all();
        let shards: Vec<_> = self.shards.iter().map(|s| s.read()).collect();
        let ids: Vec<_> = self.ids.iter().map(|s| s.read()).collect();
        let id_of = |id: SessionId| ids[id_ix(id, self.mask)].get(&id).copied();
        let mut live_by_user: HashMap<UserId, Vec<SessionId>, ahash::RandomState> =
            HashMap::default();
        let mut live_total = 0usize;
        for (i, shard) in shards.iter().enumerate() {
            for key in shard.instances.keys() {
                if shard.live(*key).is_none() {
                    return bad(format!(
                        "shard {i}: instances of a session that is not there"
                    ));
                }
            }
            // Every slot is checked below to hold its own timer (found by its handle,
            // for its key); with as many timers in the wheel as slots, there is no
            // other (counted, not taken from the wheel's own count).
            let timers = shard.wheel.iter().count();
            if timers != shard.len() {
                return bad(format!(
                    "shard {i}: {timers} timers for {} slots",
                    shard.len()
                ));
            }
            for (key, slot) in shard.iter() {
                if self.shard_ix(key) != i {
                    return bad(format!("shard {i}: holds a key of another shard"));
                }
                match slot {
                    SlotRef::Live(s) => {
                        live_total += 1;
                        if id_of(s.id) != Some(key as u64) {
                            return bad(format!("session {} missing from the id map", s.id));
                        }
                        match shard.wheel.deadline(s.timer, key as u64) {
                            None => return bad(format!("session {} has no timer", s.id)),
                            Some(t) if t > s.deadline(self.auth_ms).0 => {
                                return bad(format!("session {} timer fires late", s.id));
                            }
                            Some(_) => {}
                        }
                        if let Some(u) = &s.user {
                            live_by_user.entry(u.clone()).or_default().push(s.id);
                        }
                        if s.data.encoded_len() > self.opts.limits.max_data_bytes {
                            return bad(format!("session {} data over the limit", s.id));
                        }
                    }
                    SlotRef::Alias(a) => {
                        if shard.wheel.deadline(a.timer, key as u64) != Some(a.until.0) {
                            return bad(format!("alias of {} has no timer", a.session));
                        }
                    }
                }
            }
        }
        let id_total: usize = ids.iter().map(|m| m.len()).sum();
        if id_total != live_total {
            return bad(format!(
                "id map has {id_total} entries for {live_total} sessions"
            ));
        }
        let mut listed = 0usize;
        for map in &users {
            for (user, list) in map.iter() {
                if list.is_empty() {
                    return bad(format!("user {user} has an empty list"));
                }
                let mut sorted = list.clone();
                sorted.sort_unstable();
                let mut want = live_by_user.remove(user).unwrap_or_default();
                want.sort_unstable();
                if sorted != want {
                    return bad(format!(
                        "user {user}: index lists {} sessions, index holds {}",
                        sorted.len(),
                        want.len()
                    ));
                }
                listed += list.len();
            }
        }
        // Every user with live sessions was listed (and taken out) above.
        let unlisted: usize = live_by_user.values().map(Vec::len).sum();
        if unlisted != 0 {
            return bad(format!(
                "{unlisted} sessions have users but the user index lists {listed} in all"
            ));
        }
        Ok(())
    }
}
