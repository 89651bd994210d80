//! Loading recovered state into the index on open.
//!
//! Recovery replays records straight into the structures the store will serve from —
//! session shards with their timing wheels, id shards, the user index — kept consistent
//! after every record, instead of into an intermediate map that is copied afterwards.
//!
//! A compacted base (images and aliases only, which commute) takes a bulk path: its
//! records are decoded on two threads straight into the sessions' boxes, one list per
//! shard — each session's user as an index into that thread's table of user ids, so
//! decoding touches no shared reference count — then each shard is built on its own
//! (its map and its wheel fit in a core's cache while it is built), each building
//! thread handing its sessions its own copy of a user's id, and the id shards and user
//! index after it, the same way. A million-session base costs a few sequential passes
//! rather than a million scattered inserts. The records of segments then apply one by
//! one, in log order. Last, [`Loader::finish`] advances each shard's
//! wheel to now — dropping exactly the sessions whose deadline passed, without scanning
//! the others — and restores the rotation aliases still in their grace period.
//!
//! Every record states its effect absolutely; the rules are exactly those of
//! [`crate::backend::Recovered::apply`] (a unit test below checks they agree).

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};

use crate::backend::interner::{NO_USER, UserInterner};
use crate::backend::{BasePart, Recovered, Replay};
use crate::clock::Timestamp;
use crate::index::entry::{MaybeTime, Rules, SessionState};
use crate::index::shard::{IdMap, Shard, Slot, id_ix, shard_of};
use crate::index::users::UserIndex;
use crate::index::wheel::TimerHandle;
use crate::model::change::Change;
use crate::model::change::{Image, Record};
use crate::model::details::Details;
use crate::model::session::{UserId, signed_in_before};
use crate::model::token::{SessionId, TokenHash};
use crate::util::padded::Padded;
use crate::util::parallel::map_on_threads;

/// The index under construction.
pub(crate) struct Loader {
    mask: usize,
    rules: Rules,
    now: Timestamp,
    pub(crate) shards: Box<[Padded<RwLock<Shard>>]>,
    pub(crate) ids: Box<[Padded<RwLock<IdMap>>]>,
    pub(crate) users: UserIndex,
    aliases: Mutex<HashMap<u128, (SessionId, Timestamp)>>,
}

/// What [`Loader::finish`] counted.
pub(crate) struct Loaded {
    pub(crate) live: usize,
    pub(crate) expired: usize,
}

/// Per shard, its sessions as (token hash, box, user index).
pub(crate) type ShardLists = Vec<Vec<(u128, Box<SessionState>, u32)>>;

/// Deals `items` round-robin to `workers`, each item with its index.
/// Below this many sessions a base is loaded on the opening thread alone.
const SMALL_LOAD: usize = 4096;

fn deal<T>(items: Vec<T>, workers: usize) -> Vec<Vec<(usize, T)>> {
    let mut out: Vec<Vec<(usize, T)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        out[i % workers].push((i, item));
    }
    out
}

pub(crate) fn state_of(img: Image) -> (u128, Box<SessionState>) {
    (
        img.hash.0,
        Box::new(SessionState {
            id: img.id,
            user: img.user,
            details: img.details,
            created: img.created,
            authenticated: img.authenticated.into(),
            absolute: img.absolute,
            idle_ms: img.idle_ms,
            last_seen: img.last_seen.0.into(),
            version: img.version,
            data: img.data,
            timer: TimerHandle::detached(),
            compacted: 0.into(),
            hash_hi: 0,
        }),
    )
}

impl Loader {
    pub(crate) fn new(shards: usize, now: Timestamp, rules: Rules) -> Loader {
        Loader {
            mask: shards - 1,
            rules,
            now,
            shards: (0..shards)
                .map(|_| Padded(RwLock::new(Shard::new(now))))
                .collect(),
            ids: (0..shards)
                .map(|_| Padded(RwLock::new(IdMap::default())))
                .collect(),
            users: UserIndex::new(shards),
            aliases: Mutex::new(HashMap::new()),
        }
    }

    /// Pre-sizes the maps for about `sessions` sessions.
    pub(crate) fn reserve(&self, sessions: usize) {
        let per = sessions / self.shards.len() + 1;
        for (s, i) in self.shards.iter().zip(self.ids.iter()) {
            s.write().reserve(per);
            i.write().reserve(per);
        }
    }

    /// The shard a token hash belongs to (the store's rule).
    pub(crate) fn shard_ix(&self, key: u128) -> usize {
        shard_of(key as u64, self.mask)
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, key: u128) -> &RwLock<Shard> {
        &self.shards[self.shard_ix(key)]
    }

    fn id_ix(&self, id: SessionId) -> usize {
        id_ix(id, self.mask)
    }

    /// The current token hash of the session `id`, if it is in the index.
    fn key_of(&self, id: SessionId) -> Option<u128> {
        let lo = self.ids[self.id_ix(id)].read().get(&id).copied()?;
        self.shards[shard_of(lo, self.mask)].read().hash_at(lo)
    }

    /// Bulk-loads the images of a base, given as one [`BasePart`] per decoding thread,
    /// and its aliases. The index must be empty.
    pub(crate) fn load_base(
        &self,
        parts: Vec<BasePart<Box<SessionState>>>,
        aliases: Vec<(TokenHash, SessionId, Timestamp)>,
    ) {
        let n = self.shards.len();
        // One table of every part's users: the first part's interner, which the others'
        // ids are added to (each part's indices remapped).
        let mut parts = parts.into_iter();
        // Per shard, each part's list with the remapping of its user indices (`None`:
        // the first part's, which need none).
        type Lists = Vec<(Option<Vec<u32>>, Vec<(u128, Box<SessionState>, u32)>)>;
        let mut per_shard: Vec<Lists> = (0..n).map(|_| Vec::new()).collect();
        let mut users = UserInterner::default();
        if let Some(first) = parts.next() {
            users = first.users;
            for (s, list) in first.shards.into_iter().enumerate() {
                per_shard[s].push((None, list));
            }
        }
        for part in parts {
            let remap: Vec<u32> = part
                .users
                .users()
                .iter()
                .map(|u| users.index(u.as_str()).expect("an id already validated"))
                .collect();
            for (s, list) in part.shards.into_iter().enumerate() {
                per_shard[s].push((Some(remap.clone()), list));
            }
        }
        let users = &users;
        let user_count = users.users().len();
        let total: usize = per_shard
            .iter()
            .flat_map(|lists| lists.iter().map(|(_, l)| l.len()))
            .sum();
        let workers = if total < SMALL_LOAD { 1 } else { 2.min(n) };
        let work = deal(per_shard, workers);
        type IdParts = Vec<Vec<(SessionId, u64)>>;
        // Per user (by index into `users`): this worker's copy of the id, shared by the
        // sessions it loads, and those sessions. A copy per worker keeps each reference
        // count on one core instead of bouncing between the two.
        type ByUser = Vec<Option<(UserId, Vec<SessionId>)>>;
        let build = move |mine: Vec<(usize, Lists)>| -> (IdParts, ByUser) {
            let count: usize = mine
                .iter()
                .flat_map(|(_, lists)| lists.iter().map(|(_, l)| l.len()))
                .sum();
            let cap = count / n + count / n / 8 + 16;
            let mut id_parts: IdParts = (0..n).map(|_| Vec::with_capacity(cap)).collect();
            let mut by_user: ByUser = (0..user_count).map(|_| None).collect();
            for (s, lists) in mine {
                let mut shard = self.shards[s].write();
                let shard = &mut *shard;
                shard.reserve(lists.iter().map(|(_, l)| l.len()).sum());
                for (remap, list) in lists {
                    for (key, mut state, user) in list {
                        if user != NO_USER {
                            let u = remap.as_ref().map_or(user, |r| r[user as usize]);
                            let (id, ids) = by_user[u as usize]
                                .get_or_insert_with(|| (users.get(u).separate_copy(), Vec::new()));
                            state.user = Some(id.clone());
                            ids.push(state.id);
                        }
                        let deadline = state.deadline(self.rules);
                        id_parts[self.id_ix(state.id)].push((state.id, key as u64));
                        // Two images at one place: only a damaged base could
                        // say so; the later one is kept.
                        shard.insert_live(key, state, deadline);
                    }
                }
            }
            (id_parts, by_user)
        };
        // One worker (a small load) runs here, on the opening thread.
        let built: Vec<(IdParts, ByUser)> = map_on_threads(work, build);
        let mut id_parts: Vec<Vec<Vec<(SessionId, u64)>>> = (0..n).map(|_| Vec::new()).collect();
        let mut by_user: ByUser = Vec::new();
        for (parts, mine) in built {
            for (i, p) in parts.into_iter().enumerate() {
                id_parts[i].push(p);
            }
            if by_user.is_empty() {
                by_user = mine;
            } else {
                for (all, more) in by_user.iter_mut().zip(mine) {
                    match (all.as_mut(), more) {
                        (Some((_, ids)), Some((_, more))) => ids.extend(more),
                        (None, more) => *all = more,
                        (Some(_), None) => {}
                    }
                }
            }
        }
        // Users, partitioned by user-index shard, so each shard's map is filled at once.
        let un = self.users.shard_count();
        let mut user_parts: Vec<Vec<(UserId, Vec<SessionId>)>> =
            (0..un).map(|_| Vec::new()).collect();
        for (user, ids) in by_user.into_iter().flatten() {
            user_parts[self.users.shard_of(user.as_str())].push((user, ids));
        }
        // Again one worker (a small load) here, on the opening thread.
        let work: Vec<_> = deal(id_parts, workers)
            .into_iter()
            .zip(deal(user_parts, workers))
            .collect();
        map_on_threads(work, |(mine, users)| {
            for (i, parts) in mine {
                let mut ids = self.ids[i].write();
                ids.reserve(parts.iter().map(Vec::len).sum());
                ids.extend(parts.into_iter().flatten());
            }
            for (i, list) in users {
                self.users.extend_shard(i, list);
            }
        });
        let mut held = self.aliases.lock();
        for (hash, id, until) in aliases {
            held.insert(hash.0, (id, until));
        }
    }

    /// Inserts (or replaces) a session under token hash `key`, with its timer and in
    /// its user's list.
    fn insert(&self, key: u128, mut state: Box<SessionState>) {
        self.remove(state.id);
        let id = state.id;
        let user = state.user.as_ref().map(|u| {
            let mut g = self.users.lock(u, None);
            let u = g.canonical(u);
            g.add(&u, id);
            u
        });
        state.user = user;
        let deadline = state.deadline(self.rules);
        {
            self.shard(key).write().insert_live(key, state, deadline);
        }
        self.ids[self.id_ix(id)].write().insert(id, key as u64);
    }

    /// Removes the session `id`: its slot, timer, id entry and user-list entry.
    fn remove(&self, id: SessionId) -> Option<(u128, Box<SessionState>)> {
        let lo = self.ids[self.id_ix(id)].write().remove(&id)?;
        let (key, state) = {
            let mut shard = self.shards[shard_of(lo, self.mask)].write();
            let key = shard.hash_at(lo)?;
            (key, shard.remove_live(key, id)?)
        };
        if let Some(u) = &state.user {
            self.users.lock(u, None).remove(u, id);
        }
        Some((key, state))
    }

    /// Runs `f` on the session `id`, if there is one, and moves its timer earlier if
    /// its deadline moved earlier.
    fn with(&self, id: SessionId, f: impl FnOnce(&mut SessionState)) {
        let Some(key) = self.key_of(id) else { return };
        let mut shard = self.shard(key).write();
        let deadline = match shard.live_mut(key) {
            Some(mut s) => {
                f(&mut s);
                s.deadline(self.rules)
            }
            None => return,
        };
        shard.reschedule_if_earlier(key, deadline);
    }

    /// Feeds a fully replayed state (the sled backend's) into the index.
    pub(crate) fn load_recovered(&self, state: Recovered) {
        let mut shards: ShardLists = (0..self.shards.len()).map(|_| Vec::new()).collect();
        let mut users = UserInterner::default();
        for (_, mut img) in state.sessions {
            let user = match img.user.take() {
                Some(u) => users.index(u.as_str()).expect("an id already validated"),
                None => NO_USER,
            };
            let (key, state) = state_of(img);
            shards[self.shard_ix(key)].push((key, state, user));
        }
        let aliases = state
            .aliases
            .into_iter()
            .map(|(hash, (id, until))| (hash, id, until))
            .collect();
        self.load_base(vec![BasePart { shards, users }], aliases);
        for (user, at) in state.not_before {
            self.apply(Record::Change(Change::NotBefore { user, at }));
        }
    }

    /// Applies one record from a segment, in log order.
    pub(crate) fn apply(&self, rec: Record) {
        match rec {
            Record::Image(img) => {
                let (key, state) = state_of(img);
                self.insert(key, state);
            }
            Record::Alias { hash, id, until } => {
                self.aliases.lock().insert(hash.0, (id, until));
            }
            Record::Change(c) => self.apply_change(c),
        }
    }

    fn apply_change(&self, c: Change) {
        match c {
            Change::Create {
                id,
                hash,
                user,
                label,
                created,
                absolute,
                idle_ms,
                data,
            } => {
                let authenticated = user.as_ref().map(|_| created);
                let (key, state) = state_of(Image {
                    id,
                    hash,
                    user,
                    details: Details::labelled(label),
                    created,
                    authenticated,
                    absolute,
                    idle_ms,
                    last_seen: created,
                    version: 0,
                    data,
                });
                self.insert(key, state);
            }
            Change::Data {
                id,
                version,
                at,
                data,
            } => self.with(id, |s| {
                s.data = data;
                s.version = version;
                s.mark_seen(at);
            }),
            Change::Touch { id, at } => self.with(id, |s| s.mark_seen(at)),
            Change::Extend { id, absolute, at } => self.with(id, |s| {
                s.absolute = absolute;
                s.mark_seen(at);
            }),
            Change::Bind {
                id,
                user,
                at,
                version,
            } => {
                let Some((key, mut state)) = self.remove(id) else {
                    return;
                };
                state.user = Some(user);
                state.authenticated = Some(at).into();
                state.version = version;
                state.mark_seen(at);
                // A login says nothing of how until its sign-in record follows.
                state.set_factors(Vec::new());
                self.insert(key, state);
            }
            Change::Unbind { id, version } => {
                let Some((key, mut state)) = self.remove(id) else {
                    return;
                };
                state.user = None;
                state.authenticated = MaybeTime::NONE;
                state.version = version;
                state.set_factors(Vec::new());
                self.insert(key, state);
            }
            Change::Label { id, label } => self.with(id, |s| s.set_label(label)),
            Change::SignIn { id, factors } => self.with(id, |s| s.set_factors(factors)),
            Change::Device { id, device } => self.with(id, |s| s.set_device(device)),
            Change::Rotate {
                id,
                old,
                new,
                grace_until,
                at,
            } => {
                let Some((_, state)) = self.remove(id) else {
                    return;
                };
                state.mark_seen(at);
                self.insert(new.0, state);
                self.aliases.lock().insert(old.0, (id, grace_until));
            }
            Change::End { id, .. } => {
                self.remove(id);
            }
            Change::Clear => {
                for s in self.shards.iter() {
                    s.write().clear(self.now, false);
                }
                for i in self.ids.iter() {
                    i.write().clear();
                }
                for mut u in self.users.lock_all() {
                    u.clear();
                }
                self.aliases.lock().clear();
            }
            Change::Import(img) => {
                let (key, state) = state_of(*img);
                self.insert(key, state);
            }
            Change::NotBefore { user, at } => {
                self.users.raise_not_before(&user, at);
                // The revocation's End records follow; should a crash have kept this
                // record and lost some of them, its sessions end here all the same.
                let ids = self.users.lock(&user, None).sessions(user.as_str());
                for id in ids {
                    let older = self.key_of(id).and_then(|key| {
                        let shard = self.shard(key).read();
                        let s = shard.live(key)?;
                        Some(signed_in_before(s.authenticated.get(), at))
                    });
                    if older == Some(true) {
                        self.remove(id);
                    }
                }
            }
        }
    }

    /// Drops every session whose deadline passed by `now` — the due timers of each
    /// shard's wheel, nothing else is looked at — and restores the aliases still in
    /// their grace period.
    pub(crate) fn finish(&self, now: Timestamp) -> Loaded {
        let mut expired = 0;
        let mut due = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let shard = &mut *shard;
            due.clear();
            shard.wheel.advance(now.0, &mut due);
            for &(lo, _) in &due {
                let Some(key) = shard.hash_at(lo) else {
                    continue;
                };
                let Some(deadline) = shard.live(key).map(|s| s.deadline(self.rules)) else {
                    continue;
                };
                if deadline > now {
                    shard.rearm(key, deadline);
                    continue;
                }
                let Some(Slot::Live(s)) = shard.remove(key) else {
                    continue;
                };
                self.ids[self.id_ix(s.id)].write().remove(&s.id);
                if let Some(u) = &s.user {
                    self.users.lock(u, None).remove(u, s.id);
                }
                expired += 1;
            }
        }
        for (hash, (id, until)) in self.aliases.lock().drain() {
            if until > now && self.key_of(id).is_some() {
                let mut shard = self.shard(hash).write();
                if !shard.occupied(hash) {
                    shard.insert_alias(hash, id, until);
                }
            }
        }
        let live = self.shards.iter().map(|s| s.read().live_count()).sum();
        Loaded { live, expired }
    }
}

/// The loader is what recovery replays into.
impl Replay for Loader {
    type Entry = Box<SessionState>;

    fn reserve(&self, sessions: usize) {
        Loader::reserve(self, sessions);
    }

    fn shard_count(&self) -> usize {
        Loader::shard_count(self)
    }

    fn shard_of(&self, key: u128) -> usize {
        self.shard_ix(key)
    }

    fn entry(img: Image) -> (u128, Box<SessionState>) {
        state_of(img)
    }

    fn load_base(
        &self,
        parts: Vec<BasePart<Box<SessionState>>>,
        aliases: Vec<(TokenHash, SessionId, Timestamp)>,
    ) {
        Loader::load_base(self, parts, aliases);
    }

    fn apply(&self, rec: Record) {
        Loader::apply(self, rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::data::SessionData;
    use crate::model::event::EndReason;
    use crate::options::Limits;
    use std::sync::Arc;

    /// A comparable view of an index or of a replayed state.
    type View = Vec<(u128, u128, Option<String>, u64, u64, Vec<u8>)>;

    fn view_loader(l: &Loader) -> View {
        let mut v = Vec::new();
        for s in l.shards.iter() {
            for (k, slot) in s.read().iter() {
                if let crate::index::shard::SlotRef::Live(st) = slot {
                    v.push((
                        st.id.0,
                        k,
                        st.user.as_ref().map(|u| u.to_string()),
                        st.version,
                        st.last_seen().0,
                        st.data.as_bytes().to_vec(),
                    ));
                }
            }
        }
        v.sort();
        v
    }

    fn view_recovered(r: &Recovered) -> View {
        let mut v: Vec<_> = r
            .sessions
            .values()
            .map(|i| {
                (
                    i.id.0,
                    i.hash.0,
                    i.user.as_ref().map(|u| u.to_string()),
                    i.version,
                    i.last_seen.0,
                    i.data.as_bytes().to_vec(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replay_into_the_index_agrees_with_the_reference_replay() {
        let user = |s: &str| UserId::new(s, &Limits::default()).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _round in 0..50 {
            let loader = Loader::new(4, Timestamp(0), Rules::default());
            let mut reference = Recovered::default();
            let mut hashes: HashMap<u128, u128> = HashMap::new();
            for step in 0..300u64 {
                let id = SessionId(u128::from(next() % 12) << 64 | 1);
                let r = next() % 11;
                let change = match r {
                    0 | 1 => {
                        let h = u128::from(next()) << 64 | u128::from(next());
                        hashes.insert(id.0, h);
                        Change::Create {
                            id,
                            hash: TokenHash(h),
                            user: (next() % 2 == 0)
                                .then(|| user(["a", "b", "c"][(next() % 3) as usize])),
                            label: None,
                            created: Timestamp(1000 + step),
                            absolute: Timestamp(1_000_000),
                            idle_ms: 0,
                            data: SessionData::new(),
                        }
                    }
                    2 => {
                        let mut d = SessionData::new();
                        d.insert("k", &next()).unwrap();
                        Change::Data {
                            id,
                            version: step,
                            at: Timestamp(2000 + step),
                            data: d,
                        }
                    }
                    3 => Change::Touch {
                        id,
                        at: Timestamp(next() % 5000),
                    },
                    4 => Change::Bind {
                        id,
                        user: user(["a", "b", "c"][(next() % 3) as usize]),
                        at: Timestamp(3000 + step),
                        version: step,
                    },
                    5 => Change::Unbind { id, version: step },
                    6 => {
                        let new = u128::from(next()) << 64 | u128::from(next());
                        let old = hashes.insert(id.0, new).unwrap_or(0);
                        Change::Rotate {
                            id,
                            old: TokenHash(old),
                            new: TokenHash(new),
                            grace_until: Timestamp(5000),
                            at: Timestamp(4000 + step),
                        }
                    }
                    7 => Change::End {
                        id,
                        reason: EndReason::Ended,
                    },
                    8 if next() % 20 == 0 => Change::Clear,
                    8 if next() % 3 == 0 => Change::NotBefore {
                        user: user(["a", "b", "c"][(next() % 3) as usize]),
                        at: Timestamp(1000 + step * 2),
                    },
                    9 => Change::Label {
                        id,
                        label: Some(Arc::from("x")),
                    },
                    _ => Change::Extend {
                        id,
                        absolute: Timestamp(900_000),
                        at: Timestamp(step),
                    },
                };
                reference.apply(Record::Change(change.clone()));
                loader.apply(Record::Change(change));
                assert_eq!(view_loader(&loader), view_recovered(&reference));
            }
            let mut not_before = loader.users.not_before_all();
            not_before.sort();
            let mut want: Vec<_> = reference.not_before.clone().into_iter().collect();
            want.sort();
            assert_eq!(not_before, want);
            let live = loader.finish(Timestamp(0)).live;
            assert_eq!(live, reference.sessions.len());
        }
    }
}
