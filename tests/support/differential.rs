//! The differential property test shared by `tests/redis_differential.rs` and
//! `tests/postgres_differential.rs`: random operation sequences ([`op`]) run against the
//! embedded store (itself checked against a plain model in `tests/model.rs`) and
//! against a remote backend, through the same public handle ([`agree`]; with the
//! events compared too, [`agree_with_events`]); every answer
//! must agree — values, versions, users, labels, error kinds, counts. Tokens and ids
//! are random on each side, so sessions are named by the order they were created in.
//!
//! Time is not driven here (the remote backends read their own clock): sessions live
//! an hour, and the per-user limit and the budget of 8 sessions refuse rather than end
//! the oldest (which session is "oldest" can tie within a millisecond and is broken by
//! the random id). Likewise for how sessions signed in and their devices: level 2
//! lasts an hour and level 3 not at all, so levels do not move within a case; factors'
//! and devices' times are compared only for being there; and a case runs well within
//! the touch interval (a minute), so `seen_from` writes a session's first device and
//! then only answers that a change must wait.
//!
//! The generator is the one the Redis test's saved regressions
//! (`tests/redis_differential.proptest-regressions`) were drawn from: change it and
//! those seeds replay different cases.

// Each test uses one of `agree` and `agree_with_events`.
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use proptest::prelude::*;
use sessiondb::{
    Criterion, Device, LimitPolicy, NewSession, Options, Session, Sessions, SignIn, Token,
};

#[derive(Clone, Debug)]
pub enum Op {
    /// User, label, sign-in (methods as indices into `METHODS`, level), device (user
    /// agent and address, indices into `USER_AGENTS` and `ADDRESSES`).
    Create(
        Option<usize>,
        Option<u8>,
        Option<(Vec<u8>, u8)>,
        Option<(u8, u8)>,
    ),
    Get(usize),
    Put(usize, u8, u32),
    Remove(usize, u8),
    Save(usize, bool),
    Rotate(usize),
    UseOldToken(usize),
    Login(usize, usize),
    Bind(usize, usize),
    Unbind(usize),
    SetLabel(usize, Option<u8>),
    End(usize),
    EndById(usize),
    Revoke(usize),
    RevokeOthers(usize),
    /// `revoke_user_before` now (a millisecond after the last login, so that every
    /// session of the user is older on both backends), or a day ahead (which counts as
    /// now).
    RevokeBefore(usize, bool),
    SessionsOf(usize),
    Len,
    LoginWith(usize, usize, Vec<u8>, u8),
    StepUp(usize, Vec<u8>, u8),
    /// `revoke_user_where` by `Criterion::Method` (an index past `METHODS`: a malformed
    /// name).
    RevokeWhereMethod(usize, u8),
    RevokeBelow(usize, u8),
    SeenFrom(usize, u8, u8),
}

/// Sign-in methods by index; an index past the end is not a method name.
const METHODS: [&str; 10] = [
    "password",
    "otp",
    "webauthn",
    "sms",
    "recovery-code",
    "oidc:google",
    "totp_app",
    "magic.link",
    "passkey",
    "push",
];

fn method(ix: u8) -> String {
    METHODS
        .get(usize::from(ix))
        .map_or_else(|| "not a method".to_owned(), |m| (*m).to_owned())
}

fn sign_in(methods: &[u8], level: u8) -> SignIn {
    let (first, rest) = methods.split_first().expect("at least one method");
    rest.iter()
        .fold(SignIn::with(method(*first)), |s, m| s.and(method(*m)))
        .level(level)
}

/// User agents a request may send: plain, one that cleans up to the first, nothing
/// left once cleaned (and, for index `u8::MAX`, one past the 512-byte cut).
const USER_AGENTS: [Option<&str>; 5] = [
    None,
    Some("Mozilla/5.0 Firefox/128"),
    Some("  Mozilla/5.0 Firefox/128\r\n"),
    Some("\t \r\n"),
    Some("Safari/17 (iPhone)"),
];

/// Addresses: two in one /24, the same inside IPv6, another network, two in one /48.
const ADDRESSES: [Option<&str>; 7] = [
    None,
    Some("203.0.113.7"),
    Some("203.0.113.200"),
    Some("::ffff:203.0.113.5"),
    Some("198.51.100.9"),
    Some("2001:db8:85a3:8d3:1319:8a2e:370:7348"),
    Some("2001:db8:85a3:ffff::1"),
];

fn device(ua: u8, addr: u8) -> Device {
    let mut d = Device::new();
    if ua == u8::MAX {
        d = d.user_agent(format!("x{}", "é".repeat(300)));
    } else if let Some(u) = USER_AGENTS[usize::from(ua) % USER_AGENTS.len()] {
        d = d.user_agent(u);
    }
    if let Some(a) = ADDRESSES[usize::from(addr) % ADDRESSES.len()] {
        d = d.address(a.parse::<IpAddr>().unwrap());
    }
    d
}

/// A sign-in's methods: mostly one or two valid ones; sometimes up to eight distinct
/// ones in any order; sometimes up to ten, possibly repeated or malformed.
fn methods() -> impl Strategy<Value = Vec<u8>> {
    let n = METHODS.len() as u8;
    prop_oneof![
        6 => proptest::collection::vec(0u8..4, 1..3),
        2 => proptest::sample::subsequence((0..n).collect::<Vec<u8>>(), 1..=8).prop_shuffle(),
        1 => proptest::collection::vec(0..=n, 1..11),
    ]
}

/// A sign-in's level: level 2 has a lifetime (an hour) and level 3 one of zero.
fn level() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0u8..4, 1 => Just(u8::MAX)]
}

/// A method to revoke by: mostly a common one, sometimes any, now and then a malformed
/// name.
fn criterion_method() -> impl Strategy<Value = u8> {
    let n = METHODS.len() as u8;
    prop_oneof![8 => 0u8..4, 2 => 0..n, 1 => Just(n)]
}

fn device_choice() -> impl Strategy<Value = (u8, u8)> {
    (
        prop_oneof![5 => 0..USER_AGENTS.len() as u8, 1 => Just(u8::MAX)],
        0..ADDRESSES.len() as u8,
    )
}

/// One operation, with the weights the test draws them by.
pub fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..12;
    prop_oneof![
        4 => (
            proptest::option::of(0usize..3),
            proptest::option::of(0u8..3),
            proptest::option::weighted(0.4, (methods(), level())),
            proptest::bool::weighted(0.1),
            proptest::option::weighted(0.4, device_choice()),
        )
            .prop_map(|(u, l, how, anonymous_sign_in, d)| {
                // A sign-in on an anonymous session (refused) now and then.
                Op::Create(u, l, how.filter(|_| u.is_some() || anonymous_sign_in), d)
            }),
        3 => slot.clone().prop_map(Op::Get),
        3 => (slot.clone(), 0u8..3, any::<u32>()).prop_map(|(s, k, v)| Op::Put(s, k, v)),
        1 => (slot.clone(), 0u8..3).prop_map(|(s, k)| Op::Remove(s, k)),
        1 => (slot.clone(), any::<bool>()).prop_map(|(s, stale)| Op::Save(s, stale)),
        2 => slot.clone().prop_map(Op::Rotate),
        1 => slot.clone().prop_map(Op::UseOldToken),
        2 => (slot.clone(), 0usize..3).prop_map(|(s, u)| Op::Login(s, u)),
        3 => (slot.clone(), 0usize..3).prop_map(|(s, u)| Op::Bind(s, u)),
        1 => slot.clone().prop_map(Op::Unbind),
        1 => (slot.clone(), proptest::option::of(0u8..3)).prop_map(|(s, l)| Op::SetLabel(s, l)),
        1 => slot.clone().prop_map(Op::End),
        1 => slot.clone().prop_map(Op::EndById),
        1 => (0usize..3).prop_map(Op::Revoke),
        1 => slot.clone().prop_map(Op::RevokeOthers),
        1 => (0usize..3, any::<bool>()).prop_map(|(u, ahead)| Op::RevokeBefore(u, ahead)),
        1 => (0usize..3).prop_map(Op::SessionsOf),
        1 => Just(Op::Len),
        2 => (slot.clone(), 0usize..3, methods(), level())
            .prop_map(|(s, u, ms, l)| Op::LoginWith(s, u, ms, l)),
        2 => (slot.clone(), methods(), level()).prop_map(|(s, ms, l)| Op::StepUp(s, ms, l)),
        1 => (0usize..3, criterion_method()).prop_map(|(u, m)| Op::RevokeWhereMethod(u, m)),
        1 => (0usize..3, 0u8..5).prop_map(|(u, l)| Op::RevokeBelow(u, l)),
        2 => (slot.clone(), device_choice()).prop_map(|(s, (ua, a))| Op::SeenFrom(s, ua, a)),
    ]
}

/// One backend's view: the token of each created session (by creation order), the
/// token each had before its last rotation, and its public id.
struct Side {
    s: Sessions,
    current: Vec<Token>,
    old: Vec<Option<Token>>,
    ids: Vec<sessiondb::SessionId>,
}

/// What a session looks like with the backend-specific parts (id, token, times) left
/// out: of its factors, the methods and levels in order; its level and the answers to
/// "signed in at each level within the hour" (every step of a case is within the hour,
/// and level 3 never counts); of its device, what is kept and whether it has a time.
fn shape(s: &Session) -> String {
    let data: Vec<_> = s
        .data()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
    let factors: Vec<_> = s
        .factors()
        .iter()
        .map(|f| (f.method(), f.level()))
        .collect();
    let within: Vec<bool> = (0..=4)
        .map(|l| s.authenticated_within(l, Duration::from_secs(3600)))
        .collect();
    format!(
        "user={:?} label={:?} v={} auth={} data={data:?} factors={factors:?} level={} \
         within={within:?} ua={:?} addr={:?} device_seen={}",
        s.user().map(|u| u.as_str()),
        s.label(),
        s.version(),
        s.authenticated_at().is_some(),
        s.level(),
        s.user_agent(),
        s.address(),
        s.device_seen_at().is_some(),
    )
}

fn kind<T: std::fmt::Debug>(r: &sessiondb::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => {
            let d = format!("{e:?}");
            d.split([' ', '{', '(']).next().unwrap_or("").to_owned()
        }
    }
}

const USERS: [&str; 3] = ["ann", "bob", "cyd"];

impl Side {
    fn new(s: Sessions) -> Side {
        Side {
            s,
            current: vec![],
            old: vec![],
            ids: vec![],
        }
    }

    async fn apply(&mut self, op: &Op) -> String {
        let n = self.current.len();
        let tok = |i: usize| if n == 0 { None } else { Some(i % n) };
        let s = self.s.clone();
        match *op {
            Op::Create(user, label, ref how, dev) => {
                let mut new = match user {
                    Some(u) => NewSession::for_user(USERS[u]),
                    None => NewSession::anonymous(),
                };
                if let Some(l) = label {
                    new = new.label(format!("l{l}"));
                }
                if let Some((methods, level)) = how {
                    new = new.signed_in(sign_in(methods, *level));
                }
                if let Some((ua, addr)) = dev {
                    new = new.device(device(ua, addr));
                }
                let r = s.create(new.lifetime(Duration::from_secs(3600))).await;
                if let Ok((t, created)) = &r {
                    self.current.push(t.clone());
                    self.old.push(None);
                    self.ids.push(created.id());
                }
                kind(&r.map(|(_, c)| shape(&c)))
            }
            _ if n == 0 => "no session yet".into(),
            Op::Get(i) => {
                let i = tok(i).unwrap();
                format!(
                    "{:?}",
                    s.get(&self.current[i]).await.map(|o| o.map(|x| shape(&x)))
                )
            }
            Op::Put(i, k, v) => {
                let i = tok(i).unwrap();
                kind(&s.put(&self.current[i], &format!("k{k}"), &v).await)
            }
            Op::Remove(i, k) => {
                let i = tok(i).unwrap();
                kind(&s.remove(&self.current[i], &format!("k{k}")).await)
            }
            Op::Save(i, stale) => {
                let i = tok(i).unwrap();
                let t = &self.current[i];
                let Ok(Some(read)) = s.peek(t).await else {
                    return "gone".into();
                };
                let mut data = read.data().clone();
                data.insert("saved", &true).unwrap();
                let v = if stale {
                    read.version().wrapping_sub(1)
                } else {
                    read.version()
                };
                kind(&s.save(t, v, &data).await)
            }
            Op::Rotate(i) => {
                let i = tok(i).unwrap();
                let r = s.rotate(&self.current[i]).await;
                if let Ok(new) = &r {
                    self.old[i] = Some(std::mem::replace(&mut self.current[i], new.clone()));
                }
                kind(&r.map(|_| ()))
            }
            Op::UseOldToken(i) => {
                let i = tok(i).unwrap();
                match self.old[i].clone() {
                    None => "no old token".into(),
                    Some(t) => format!(
                        "{:?} {}",
                        s.get(&t).await.map(|o| o.map(|x| shape(&x))),
                        kind(&s.rotate(&t).await.map(|_| ()))
                    ),
                }
            }
            Op::Login(i, u) => {
                let i = tok(i).unwrap();
                let r = s.login(&self.current[i], USERS[u]).await;
                if let Ok(new) = &r {
                    self.old[i] = Some(std::mem::replace(&mut self.current[i], new.clone()));
                }
                kind(&r.map(|_| ()))
            }
            Op::Bind(i, u) => {
                let i = tok(i).unwrap();
                kind(&s.bind_user(&self.current[i], USERS[u]).await)
            }
            Op::Unbind(i) => {
                let i = tok(i).unwrap();
                kind(
                    &s.unbind_user(&self.current[i])
                        .await
                        .map(|u| u.map(|u| u.to_string())),
                )
            }
            Op::SetLabel(i, l) => {
                let i = tok(i).unwrap();
                let label = l.map(|l| format!("l{l}"));
                kind(&s.set_label(&self.current[i], label.as_deref()).await)
            }
            Op::End(i) => {
                let i = tok(i).unwrap();
                kind(&s.end(&self.current[i]).await)
            }
            Op::EndById(i) => {
                let i = tok(i).unwrap();
                kind(&s.end_by_id(self.ids[i]).await)
            }
            Op::Revoke(u) => kind(&s.revoke_user(USERS[u]).await),
            Op::RevokeOthers(i) => {
                let i = tok(i).unwrap();
                kind(&s.revoke_others(&self.current[i]).await)
            }
            Op::RevokeBefore(u, ahead) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let at = sessiondb::Timestamp(now + if ahead { 86_400_000 } else { 0 });
                let r = s.revoke_user_before(USERS[u], at).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                kind(&r)
            }
            Op::SessionsOf(u) => {
                let list = s.sessions_of(USERS[u]).await.unwrap();
                // Which created sessions, in creation order (creation times can tie).
                let mut slots: Vec<usize> = list
                    .iter()
                    .map(|x| self.ids.iter().position(|id| *id == x.id()).unwrap())
                    .collect();
                slots.sort_unstable();
                format!("{slots:?}")
            }
            Op::Len => kind(&s.len().await),
            Op::LoginWith(i, u, ref methods, level) => {
                let i = tok(i).unwrap();
                let r = s
                    .login_with(&self.current[i], USERS[u], sign_in(methods, level))
                    .await;
                if let Ok(new) = &r {
                    self.old[i] = Some(std::mem::replace(&mut self.current[i], new.clone()));
                }
                kind(&r.map(|_| ()))
            }
            Op::StepUp(i, ref methods, level) => {
                let i = tok(i).unwrap();
                let r = s.step_up(&self.current[i], sign_in(methods, level)).await;
                if let Ok(new) = &r {
                    self.old[i] = Some(std::mem::replace(&mut self.current[i], new.clone()));
                }
                kind(&r.map(|_| ()))
            }
            Op::RevokeWhereMethod(u, m) => kind(
                &s.revoke_user_where(USERS[u], &Criterion::Method(method(m)))
                    .await,
            ),
            Op::RevokeBelow(u, level) => kind(
                &s.revoke_user_where(USERS[u], &Criterion::BelowLevel(level))
                    .await,
            ),
            Op::SeenFrom(i, ua, addr) => {
                let i = tok(i).unwrap();
                kind(&s.seen_from(&self.current[i], &device(ua, addr)).await)
            }
        }
    }
}

/// The options both sides run with.
pub fn options() -> Options {
    Options::default()
        .max_sessions_per_user(Some(2), LimitPolicy::Refuse)
        // A budget that refuses (which session eviction picks can tie within a
        // millisecond, as the oldest can): both sides count the same live sessions.
        .budget(Some(
            sessiondb::Budget::sessions(8).policy(sessiondb::BudgetPolicy::Refuse),
        ))
        .reaper_interval(None)
        // Level 2 lasts longer than a case runs; level 3 never counts.
        .level_lifetime(2, Duration::from_secs(3600))
        .level_lifetime(3, Duration::ZERO)
}

/// Runs `ops` against a fresh in-memory embedded store and against `remote` (fresh,
/// opened with [`options`]), step by step: a panic names the first step whose answers
/// differ.
pub async fn agree(ops: &[Op], remote: Sessions) {
    let embedded = Sessions::open("memory:", options()).await.unwrap();
    let (mut want_side, mut got_side) = (Side::new(embedded), Side::new(remote));
    run(ops, &mut want_side, &mut got_side).await;
}

/// [`agree`], and then the events each side reported must agree too: the same events
/// in the same order, sessions named by creation order (the sessions one revocation
/// ends in any order). If the remote side's events stop coming, the failure includes
/// what `diagnose` says of the backend then (its outbox, the transactions running).
pub async fn agree_with_events(ops: &[Op], remote: Sessions, diagnose: &dyn Fn() -> String) {
    let embedded = Sessions::open("memory:", options()).await.unwrap();
    let (want_events, got_events) = (
        embedded.subscribe().await.unwrap(),
        remote.subscribe().await.unwrap(),
    );
    let (mut want_side, mut got_side) = (Side::new(embedded), Side::new(remote));
    run(ops, &mut want_side, &mut got_side).await;
    let want = want_side.events(&want_events, &String::new).await;
    let got = got_side.events(&got_events, diagnose).await;
    assert_eq!(got, want, "the events of {ops:?}");
}

async fn run(ops: &[Op], want_side: &mut Side, got_side: &mut Side) {
    for (step, op) in ops.iter().enumerate() {
        let want = want_side.apply(op).await;
        let got = got_side.apply(op).await;
        assert_eq!(got, want, "step {step}: {op:?}");
    }
}

impl Side {
    /// Every event the side reported, sessions named by creation order. Clears the
    /// store first: its event comes after all the others, so once it is in, all are (a
    /// remote backend delivers them from a task of its own on the test's runtime, so
    /// the channel is polled, not waited on).
    async fn events(
        &self,
        rx: &crossbeam_channel::Receiver<sessiondb::Event>,
        diagnose: &dyn Fn() -> String,
    ) -> Vec<String> {
        use sessiondb::Event;
        self.s.clear().await.unwrap();
        let slot = |id: &sessiondb::SessionId| match self.ids.iter().position(|x| x == id) {
            Some(i) => i.to_string(),
            None => format!("{id}?"),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut out: Vec<String> = Vec::new();
        loop {
            let Ok(e) = rx.try_recv() else {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no clear event within 10 s; so far {out:?}; {}",
                    diagnose()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let user = |u: &Option<sessiondb::UserId>| u.as_ref().map(|u| u.to_string());
            out.push(match &e {
                Event::Cleared { sessions } => {
                    out.push(format!("cleared {sessions}"));
                    break;
                }
                Event::Created { session, user: u } => {
                    format!("created {} {:?}", slot(session), user(u))
                }
                Event::Ended {
                    session,
                    user: u,
                    reason,
                } => {
                    format!("ended {} {:?} {reason:?}", slot(session), user(u))
                }
                Event::UserRevoked { user, sessions } => {
                    let mut slots: Vec<String> = sessions.iter().map(slot).collect();
                    slots.sort();
                    format!("revoked {user} {slots:?}")
                }
                Event::Rotated { session } => format!("rotated {}", slot(session)),
                Event::UserBound { session, user } => format!("bound {} {user}", slot(session)),
                Event::UserUnbound { session, user } => format!("unbound {} {user}", slot(session)),
                other => format!("{other:?}"),
            });
        }
        // The sessions one operation ends are reported in the order each backend keeps
        // them in: sort each run of ends.
        let mut i = 0;
        while i < out.len() {
            let run = out[i..]
                .iter()
                .take_while(|e| e.starts_with("ended "))
                .count();
            out[i..i + run].sort();
            i += run.max(1);
        }
        out
    }
}
