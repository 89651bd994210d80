//! `verify`: checks that the session shards, the id shards, the user index, the
//! timing wheels and the memory accounting agree. A disagreement is a bug in sessiondb (`Error::Inconsistent`).

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::index::shard::{SlotRef, id_ix, shard_of};
use crate::index::usage::cost;
use crate::model::session::signed_in_before;
use crate::model::signin::check_factors;
use crate::model::token::SessionId;
use crate::util::hash::IdHasher;

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
        let mut owned = 0usize;
        let mut live_total = 0usize;
        let mut bytes_total = 0u64;
        for (i, shard) in shards.iter().enumerate() {
            let bytes: u64 = shard
                .iter()
                .filter_map(|(_, slot)| match slot {
                    SlotRef::Live(s) => Some(cost(s)),
                    SlotRef::Alias(_) => None,
                })
                .sum();
            if bytes != shard.bytes() {
                return bad(format!(
                    "shard {i}: counts {} bytes for sessions costing {bytes}",
                    shard.bytes()
                ));
            }
            bytes_total += bytes;
            let signed_in = shard
                .iter()
                .filter(|(_, slot)| matches!(slot, SlotRef::Live(s) if s.user.is_some()))
                .count() as u64;
            if signed_in != shard.signed_in() {
                return bad(format!(
                    "shard {i}: counts {} signed-in sessions for {signed_in}",
                    shard.signed_in()
                ));
            }
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
                            Some(t) if t > s.deadline(self.rules).0 => {
                                return bad(format!("session {} timer fires late", s.id));
                            }
                            Some(_) => {}
                        }
                        owned += usize::from(s.user.is_some());
                        if s.data.encoded_len() > self.opts.limits.max_data_bytes {
                            return bad(format!("session {} data over the limit", s.id));
                        }
                        if let Some(d) = &s.details {
                            if d.is_empty() {
                                return bad(format!("session {} holds empty details", s.id));
                            }
                            if check_factors(&d.factors).is_err() {
                                return bad(format!("session {} has malformed factors", s.id));
                            }
                            if !d.factors.is_empty() && s.user.is_none() {
                                return bad(format!("session {} has factors but no user", s.id));
                            }
                            if let Some(Err(why)) = d.device.as_ref().map(|d| d.check()) {
                                return bad(format!("session {}: {why}", s.id));
                            }
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
        // With a budget, the store-wide count agrees (no create is between its
        // reservation and its insertion while every shard is locked — unless one is in
        // flight: `verify` is for a quiet store).
        if let Some(b) = &self.budget
            && (b.usage.sessions(), b.usage.bytes()) != (live_total as u64, bytes_total)
        {
            return bad(format!(
                "the budget counts {} sessions and {} bytes for {live_total} costing \
                 {bytes_total}",
                b.usage.sessions(),
                b.usage.bytes()
            ));
        }
        let id_total: usize = ids.iter().map(|m| m.len()).sum();
        if id_total != live_total {
            return bad(format!(
                "id map has {id_total} entries for {live_total} sessions"
            ));
        }
        // Every listed session is a live session of the user listing it, none is listed
        // twice, and as many are listed as live sessions have a user: so each of those
        // is listed, once, under its own user.
        let mut seen: HashSet<SessionId, BuildHasherDefault<IdHasher>> =
            HashSet::with_capacity_and_hasher(owned, BuildHasherDefault::default());
        let mut listed = 0usize;
        for (i, map) in users.iter().enumerate() {
            for user in map.not_before.keys() {
                if self.users.shard_of(user.as_str()) != i {
                    return bad(format!("user {user}: not-before time in another shard"));
                }
            }
            for (user, list) in map.iter() {
                let not_before = map.not_before.get(user).copied().unwrap_or_default();
                if list.is_empty() {
                    return bad(format!("user {user} has an empty list"));
                }
                for &id in list {
                    let session = id_of(id)
                        .and_then(|lo| shards[shard_of(lo, self.mask)].live_at(lo))
                        .map(|(_, s)| s);
                    let owner = session.and_then(|s| s.user.as_ref());
                    if owner != Some(user) {
                        return bad(format!(
                            "user {user}: lists session {id}, which is {}",
                            owner.map_or("not there or anonymous".to_owned(), |o| format!("{o}'s"))
                        ));
                    }
                    if session.is_some_and(|s| signed_in_before(s.authenticated.get(), not_before))
                    {
                        return bad(format!(
                            "user {user}: session {id} authenticated before the user's \
                             not-before time {not_before}"
                        ));
                    }
                    if !seen.insert(id) {
                        return bad(format!("session {id} is listed twice"));
                    }
                }
                listed += list.len();
            }
        }
        if listed != owned {
            return bad(format!(
                "{owned} sessions have users but the user index lists {listed}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::model::session::{NewSession, UserId};
    use crate::model::token::SessionId;
    use crate::options::Options;
    use crate::store::Store;

    /// A store with two sessions of "ada", one of "bob" and one anonymous.
    fn store() -> (Store, Vec<SessionId>) {
        let store =
            Store::in_memory_with(Options::default().reaper_interval(None).shards(4)).unwrap();
        let ids = ["ada", "ada", "bob"]
            .into_iter()
            .map(|u| store.create(NewSession::for_user(u)).unwrap().1.id())
            .chain([store.create(NewSession::anonymous()).unwrap().1.id()])
            .collect();
        store.verify().unwrap();
        (store, ids)
    }

    fn inconsistent(store: &Store, what: &str) {
        match store.verify() {
            Err(Error::Inconsistent(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("expected Inconsistent ({what}), got {other:?}"),
        }
    }

    /// Changes the user index's list of `user` directly (what a bug would do).
    fn edit(store: &Store, user: &str, f: impl FnOnce(&mut Vec<SessionId>)) {
        let uid = UserId::new(user, &crate::options::Limits::default()).unwrap();
        let mut maps = store.inner.users.lock_all();
        let shard = store.inner.users.shard_of(user);
        f(maps[shard].entry(uid).or_default());
    }

    #[test]
    fn a_session_listed_under_another_user_is_found() {
        let (store, ids) = store();
        edit(&store, "bob", |l| l.push(ids[0]));
        edit(&store, "ada", |l| l.retain(|&i| i != ids[0]));
        inconsistent(&store, "which is ada's");
    }

    #[test]
    fn a_session_listed_twice_in_place_of_another_is_found() {
        let (store, ids) = store();
        edit(&store, "ada", |l| {
            l.retain(|&i| i != ids[1]);
            l.push(ids[0]);
        });
        inconsistent(&store, "listed twice");
    }

    #[test]
    fn a_session_with_a_user_but_in_no_list_is_found() {
        let (store, ids) = store();
        edit(&store, "ada", |l| l.retain(|&i| i != ids[1]));
        inconsistent(&store, "sessions have users but the user index lists");
    }

    #[test]
    fn a_listed_session_that_is_not_there_or_anonymous_is_found() {
        let (store, ids) = store();
        edit(&store, "carol", |l| l.push(ids[3]));
        inconsistent(&store, "which is not there");
    }

    #[test]
    fn a_session_authenticated_before_its_users_not_before_time_is_found() {
        let (store, _) = store();
        let uid = UserId::new("bob", &crate::options::Limits::default()).unwrap();
        let shard = store.inner.users.shard_of("bob");
        store.inner.users.lock_all()[shard]
            .not_before
            .insert(uid, crate::clock::Timestamp::MAX);
        inconsistent(&store, "authenticated before the user's not-before time");
    }

    #[test]
    fn a_session_without_its_timer_is_found() {
        let (store, ids) = store();
        let lo =
            store.inner.ids[crate::index::shard::id_ix(ids[2], store.inner.mask)].read()[&ids[2]];
        let mut shard =
            store.inner.shards[crate::index::shard::shard_of(lo, store.inner.mask)].write();
        let (hash, timer) = {
            let (hash, s) = shard.live_at(lo).unwrap();
            (hash, s.timer)
        };
        assert!(shard.wheel.cancel(timer, hash as u64));
        drop(shard);
        inconsistent(&store, " timers for ");
    }
}
