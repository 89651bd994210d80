//! Property test: random operation sequences run against the store and against a plain
//! model (a map of sessions with explicit deadlines); every answer must agree, and the
//! store's own consistency check must pass after every step. Time is a manual clock,
//! so expiry is exercised without sleeping.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use sessiondb::{Durability, Error, ManualClock, NewSession, Options, Store, Timestamp, Token};

const T0: u64 = 1_800_000_000_000;
const LIFETIME_S: u64 = 3_600;
const IDLE_S: u64 = 600;
const AUTH_S: u64 = 1_800;
const TOUCH_S: u64 = 60;
const GRACE_S: u64 = 5;
const USERS: [&str; 3] = ["alice", "bob", "carol"];

#[derive(Clone, Debug)]
enum Op {
    Create { user: Option<usize>, idle: bool },
    Get(usize),
    Peek(usize),
    Put(usize, u8, u32),
    Remove(usize, u8),
    Update(usize),
    Save { tok: usize, stale: bool },
    Touch(usize),
    Extend(usize, u16),
    Rotate(usize),
    Bind(usize, usize),
    Unbind(usize),
    End(usize),
    EndById(usize),
    Revoke(usize),
    SessionsOf(usize),
    Advance(u16),
    Reap,
    Clear,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let tok = 0usize..64;
    prop_oneof![
        4 => (proptest::option::of(0usize..3), any::<bool>())
            .prop_map(|(user, idle)| Op::Create { user, idle }),
        4 => tok.clone().prop_map(Op::Get),
        1 => tok.clone().prop_map(Op::Peek),
        3 => (tok.clone(), 0u8..4, any::<u32>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        1 => (tok.clone(), 0u8..4).prop_map(|(t, k)| Op::Remove(t, k)),
        1 => tok.clone().prop_map(Op::Update),
        1 => (tok.clone(), any::<bool>()).prop_map(|(tok, stale)| Op::Save { tok, stale }),
        1 => tok.clone().prop_map(Op::Touch),
        1 => (tok.clone(), 0u16..4000).prop_map(|(t, s)| Op::Extend(t, s)),
        2 => tok.clone().prop_map(Op::Rotate),
        2 => (tok.clone(), 0usize..3).prop_map(|(t, u)| Op::Bind(t, u)),
        1 => tok.clone().prop_map(Op::Unbind),
        1 => tok.clone().prop_map(Op::End),
        1 => tok.clone().prop_map(Op::EndById),
        1 => (0usize..3).prop_map(Op::Revoke),
        1 => (0usize..3).prop_map(Op::SessionsOf),
        3 => prop_oneof![
            // The boundaries: touch interval, grace, idle, auth lifetime, lifetime.
            Just(1u16), Just(4), Just(5), Just(59), Just(60), Just(599), Just(600),
            Just(1799), Just(1800), 0u16..4000,
        ].prop_map(Op::Advance),
        1 => Just(Op::Reap),
        1 => Just(Op::Clear),
        2 => Just(Op::Reopen),
    ]
}

#[derive(Clone, Debug)]
struct MSession {
    id: sessiondb::SessionId,
    user: Option<usize>,
    created: u64,
    auth: Option<u64>,
    absolute: u64,
    idle: u64,
    last_seen: u64,
    version: u64,
    data: BTreeMap<u8, u32>,
}

impl MSession {
    fn deadline(&self) -> u64 {
        let mut d = self.absolute;
        if self.idle > 0 {
            d = d.min(self.last_seen + self.idle);
        }
        if let Some(a) = self.auth {
            d = d.min(a + AUTH_S * 1000);
        }
        d
    }
}

#[derive(Clone, Debug)]
enum MToken {
    Current(usize),
    Alias(usize, u64),
}

#[derive(Default)]
struct Model {
    now: u64,
    /// Sessions in the index (possibly expired but not yet reaped), by model key.
    sessions: BTreeMap<usize, MSession>,
    next_key: usize,
    tokens: Vec<(Token, MToken)>,
}

impl Model {
    /// The live session a token resolves to.
    fn resolve(&self, tok: usize) -> Option<usize> {
        let (_, t) = self.tokens.get(tok)?;
        let key = match *t {
            MToken::Current(k) => k,
            MToken::Alias(k, until) if until > self.now => k,
            MToken::Alias(..) => return None,
        };
        let s = self.sessions.get(&key)?;
        (s.deadline() > self.now).then_some(key)
    }

    fn is_alias(&self, tok: usize) -> bool {
        matches!(self.tokens.get(tok), Some((_, MToken::Alias(..))))
    }

    fn live(&self, key: usize) -> Option<&MSession> {
        self.sessions.get(&key).filter(|s| s.deadline() > self.now)
    }
}

fn key(k: u8) -> String {
    format!("k{k}")
}

fn check_snapshot(m: &MSession, s: &sessiondb::Session) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.id(), m.id);
    prop_assert_eq!(s.user().map(|u| u.as_str()), m.user.map(|u| USERS[u]));
    prop_assert_eq!(s.version(), m.version);
    prop_assert_eq!(s.last_seen(), Timestamp(m.last_seen));
    prop_assert_eq!(s.created_at(), Timestamp(m.created));
    prop_assert_eq!(s.expires_at(), Timestamp(m.deadline()));
    let data: BTreeMap<u8, u32> = (0..4u8)
        .filter_map(|k| s.get::<u32>(&key(k)).unwrap().map(|v| (k, v)))
        .collect();
    prop_assert_eq!(&data, &m.data);
    Ok(())
}

/// Where the store under test keeps its sessions.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Log,
    #[cfg(feature = "sled")]
    Sled,
}

fn run(kind: Kind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(Timestamp(T0));
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .clock(clock.clone())
        .reaper_interval(None)
        .shards(4)
        .lifetime(Duration::from_secs(LIFETIME_S))
        .idle_timeout(Duration::from_secs(IDLE_S))
        .auth_lifetime(Some(Duration::from_secs(AUTH_S)))
        .touch_interval(Duration::from_secs(TOUCH_S))
        .rotation_grace(Duration::from_secs(GRACE_S));
    let open = || match kind {
        Kind::Memory => Store::in_memory_with(opts.clone()).unwrap(),
        Kind::Log => {
            Store::open_with(dir.path(), opts.clone().durability(Durability::Sync)).unwrap()
        }
        #[cfg(feature = "sled")]
        Kind::Sled => Store::open_with(
            dir.path(),
            opts.clone()
                .durability(Durability::Sync)
                .backend(sessiondb::BackendKind::Sled),
        )
        .unwrap(),
    };
    let mut store = open();
    let mut m = Model {
        now: T0,
        ..Model::default()
    };
    let tok_of = |m: &Model, i: usize| -> Option<(usize, Token)> {
        if m.tokens.is_empty() {
            None
        } else {
            let i = i % m.tokens.len();
            Some((i, m.tokens[i].0.clone()))
        }
    };
    for op in ops {
        match op {
            Op::Create { user, idle } => {
                let mut new = match user {
                    Some(u) => NewSession::for_user(USERS[u]),
                    None => NewSession::anonymous(),
                };
                if !idle {
                    new = new.idle_timeout(Duration::ZERO);
                }
                let (token, snap) = store.create(new).unwrap();
                let ms = MSession {
                    id: snap.id(),
                    user,
                    created: m.now,
                    auth: user.map(|_| m.now),
                    absolute: m.now + LIFETIME_S * 1000,
                    idle: if idle { IDLE_S * 1000 } else { 0 },
                    last_seen: m.now,
                    version: 0,
                    data: BTreeMap::new(),
                };
                check_snapshot(&ms, &snap)?;
                let k = m.next_key;
                m.next_key += 1;
                m.sessions.insert(k, ms);
                m.tokens.push((token, MToken::Current(k)));
            }
            Op::Get(i) | Op::Peek(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let touch = matches!(op, Op::Get(_));
                let got = if touch { store.get(&t) } else { store.peek(&t) };
                match m.resolve(i) {
                    None => prop_assert!(got.is_none()),
                    Some(k) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&k).unwrap();
                        if touch && now - ms.last_seen >= TOUCH_S * 1000 {
                            ms.last_seen = now;
                        }
                        check_snapshot(ms, &got.expect("live in the model"))?;
                    }
                }
            }
            Op::Put(i, k, v) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.put(&t, &key(k), &v);
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.data.insert(k, v);
                        ms.version += 1;
                        ms.last_seen = ms.last_seen.max(now);
                        prop_assert_eq!(got.unwrap(), ms.version);
                    }
                }
            }
            Op::Remove(i, k) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.remove(&t, &key(k));
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        if ms.data.remove(&k).is_some() {
                            ms.version += 1;
                            ms.last_seen = ms.last_seen.max(now);
                        }
                        prop_assert_eq!(got.unwrap(), ms.version);
                    }
                }
            }
            Op::Update(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.update(&t, |d| {
                    let n: u32 = d.get(&key(0))?.unwrap_or(0);
                    d.insert(&key(0), &n.wrapping_add(1))
                });
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        prop_assert!(got.is_ok());
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        let n = ms.data.get(&0).copied().unwrap_or(0);
                        ms.data.insert(0, n.wrapping_add(1));
                        ms.version += 1;
                        ms.last_seen = ms.last_seen.max(now);
                    }
                }
            }
            Op::Save { tok, stale } => {
                let Some((i, t)) = tok_of(&m, tok) else {
                    continue;
                };
                let Some(sk) = m.resolve(i) else {
                    let mut d = sessiondb::SessionData::new();
                    d.insert(&key(1), &7u32).unwrap();
                    prop_assert!(matches!(store.save(&t, 0, &d), Err(Error::Ended)));
                    continue;
                };
                let snap = store.peek(&t).unwrap();
                let mut d = snap.data().clone();
                d.insert(&key(1), &7u32).unwrap();
                let expected = if stale {
                    snap.version() + 1
                } else {
                    snap.version()
                };
                let got = store.save(&t, expected, &d);
                let now = m.now;
                let ms = m.sessions.get_mut(&sk).unwrap();
                if stale {
                    let conflict = matches!(got, Err(Error::VersionConflict { .. }));
                    prop_assert!(conflict);
                } else {
                    ms.data.insert(1, 7);
                    ms.version += 1;
                    ms.last_seen = ms.last_seen.max(now);
                    prop_assert_eq!(got.unwrap(), ms.version);
                }
            }
            Op::Touch(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.touch(&t);
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        prop_assert!(got.is_ok());
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.last_seen = ms.last_seen.max(now);
                    }
                }
            }
            Op::Extend(i, by) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.extend(&t, Duration::from_secs(u64::from(by)));
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.absolute = ms.absolute.max(now + u64::from(by) * 1000);
                        ms.last_seen = ms.last_seen.max(now);
                        prop_assert_eq!(got.unwrap(), Timestamp(ms.deadline()));
                    }
                }
            }
            Op::Rotate(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.rotate(&t);
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(_) if m.is_alias(i) => {
                        prop_assert!(matches!(got, Err(Error::TokenRetired)));
                    }
                    Some(sk) => {
                        let new = got.unwrap();
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.last_seen = ms.last_seen.max(now);
                        m.tokens[i].1 = MToken::Alias(sk, now + GRACE_S * 1000);
                        m.tokens.push((new, MToken::Current(sk)));
                    }
                }
            }
            Op::Bind(i, u) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.bind_user(&t, USERS[u]);
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        prop_assert!(got.is_ok());
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.user = Some(u);
                        ms.auth = Some(now);
                        ms.version += 1;
                        ms.last_seen = ms.last_seen.max(now);
                    }
                }
            }
            Op::Unbind(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.unbind_user(&t);
                match m.resolve(i) {
                    None => prop_assert!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        let was = ms.user.take();
                        prop_assert_eq!(
                            got.unwrap().map(|u| u.to_string()),
                            was.map(|u| USERS[u].to_string())
                        );
                        if was.is_some() {
                            ms.auth = None;
                            ms.version += 1;
                        }
                    }
                }
            }
            Op::End(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.end(&t).unwrap();
                match m.resolve(i) {
                    None => prop_assert!(!got),
                    Some(sk) => {
                        prop_assert!(got);
                        m.sessions.remove(&sk);
                    }
                }
            }
            Op::EndById(i) => {
                let Some((i, _)) = tok_of(&m, i) else {
                    continue;
                };
                let sk = match m.tokens[i].1 {
                    MToken::Current(k) | MToken::Alias(k, _) => k,
                };
                let Some(id) = m.sessions.get(&sk).map(|s| s.id) else {
                    continue;
                };
                let live = m.live(sk).is_some();
                prop_assert_eq!(store.end_by_id(id).unwrap(), live);
                m.sessions.remove(&sk);
            }
            Op::Revoke(u) => {
                let got = store.revoke_user(USERS[u]).unwrap();
                let now = m.now;
                let mine: Vec<usize> = m
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.user == Some(u))
                    .map(|(k, _)| *k)
                    .collect();
                let live = mine
                    .iter()
                    .filter(|k| m.sessions[*k].deadline() > now)
                    .count();
                prop_assert_eq!(got, live);
                for k in mine {
                    m.sessions.remove(&k);
                }
            }
            Op::SessionsOf(u) => {
                let got: Vec<_> = store
                    .sessions_of(USERS[u])
                    .unwrap()
                    .iter()
                    .map(|s| s.id())
                    .collect();
                let mut want: Vec<(u64, sessiondb::SessionId)> = m
                    .sessions
                    .keys()
                    .filter_map(|k| m.live(*k))
                    .filter(|s| s.user == Some(u))
                    .map(|s| (s.created, s.id))
                    .collect();
                want.sort();
                let want: Vec<_> = want.into_iter().map(|(_, id)| id).collect();
                prop_assert_eq!(got, want);
            }
            Op::Advance(s) => {
                clock.advance(Duration::from_secs(u64::from(s)));
                m.now += u64::from(s) * 1000;
            }
            Op::Reap => {
                let now = m.now;
                let before = m.sessions.len();
                m.sessions.retain(|_, s| s.deadline() > now);
                prop_assert_eq!(store.reap_expired(), before - m.sessions.len());
            }
            Op::Clear => {
                prop_assert_eq!(store.clear().unwrap(), m.sessions.len());
                m.sessions.clear();
            }
            Op::Reopen => {
                if matches!(kind, Kind::Memory) {
                    continue;
                }
                drop(store);
                store = open();
                // Recovery drops what expired rather than resurrecting it.
                let now = m.now;
                let before = m.sessions.len();
                m.sessions.retain(|_, s| s.deadline() > now);
                let report = store.recovery_report();
                prop_assert_eq!(report.sessions, m.sessions.len());
                // (Expired sessions stay in the log until a compaction, so a second
                // reopen counts them again.)
                prop_assert!(report.expired_dropped >= before - m.sessions.len());
                prop_assert_eq!(report.bytes_truncated, 0);
            }
        }
        prop_assert_eq!(store.len(), m.sessions.len());
        store
            .verify()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn in_memory_store_agrees_with_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(Kind::Memory, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_store_agrees_with_model_across_reopens(ops in proptest::collection::vec(op(), 1..120)) {
        run(Kind::Log, ops)?;
    }
}

#[cfg(feature = "sled")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn sled_store_agrees_with_model_across_reopens(ops in proptest::collection::vec(op(), 1..120)) {
        run(Kind::Sled, ops)?;
    }
}
