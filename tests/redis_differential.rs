//! Differential property test: random operation sequences run against the embedded
//! store (itself checked against a plain model in `tests/model.rs`) and against the
//! Redis backend, through the same public handle; every answer must agree — values,
//! versions, users, labels, error kinds, counts. Tokens and ids are random on each
//! side, so sessions are named by the order they were created in.
//!
//! Time is not driven here (Redis reads its own clock): sessions live an hour, and
//! the per-user limit and the budget of 8 sessions refuse rather than end the oldest
//! (which session is "oldest" can tie within a millisecond and is broken by the random
//! id).

#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use proptest::prelude::*;
use redis_server::{NO_PERSISTENCE, RedisServer};
use sessiondb::{
    LimitPolicy, NewSession, Options, RedisOptions, RedisStore, Session, Sessions, Token,
};

#[derive(Clone, Debug)]
enum Op {
    Create(Option<usize>, Option<u8>),
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
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..12;
    prop_oneof![
        4 => (proptest::option::of(0usize..3), proptest::option::of(0u8..3))
            .prop_map(|(u, l)| Op::Create(u, l)),
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
/// out.
fn shape(s: &Session) -> String {
    let data: Vec<_> = s
        .data()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
    format!(
        "user={:?} label={:?} v={} auth={} data={data:?}",
        s.user().map(|u| u.as_str()),
        s.label(),
        s.version(),
        s.authenticated_at().is_some()
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
    async fn apply(&mut self, op: &Op) -> String {
        let n = self.current.len();
        let tok = |i: usize| if n == 0 { None } else { Some(i % n) };
        let s = self.s.clone();
        match *op {
            Op::Create(user, label) => {
                let mut new = match user {
                    Some(u) => NewSession::for_user(USERS[u]),
                    None => NewSession::anonymous(),
                };
                if let Some(l) = label {
                    new = new.label(format!("l{l}"));
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
        }
    }
}

fn options() -> Options {
    Options::default()
        .max_sessions_per_user(Some(2), LimitPolicy::Refuse)
        // A budget that refuses (which session eviction picks can tie within a
        // millisecond, as the oldest can): both sides count the same live sessions.
        .budget(Some(
            sessiondb::Budget::sessions(8).policy(sessiondb::BudgetPolicy::Refuse),
        ))
        .reaper_interval(None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn redis_answers_every_operation_as_the_embedded_store_does(ops in proptest::collection::vec(op(), 1..60)) {
        let Some(server) = RedisServer::start(NO_PERSISTENCE) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let redis = RedisStore::connect_with(&server.url(), options(), RedisOptions::default().prefix("diff")).await.unwrap();
            let mut embedded = Side { s: Sessions::open("memory:", options()).await.unwrap(), current: vec![], old: vec![], ids: vec![] };
            let mut remote = Side { s: Sessions::redis(redis), current: vec![], old: vec![], ids: vec![] };
            for (step, op) in ops.iter().enumerate() {
                let want = embedded.apply(op).await;
                let got = remote.apply(op).await;
                assert_eq!(got, want, "step {step}: {op:?}");
            }
        });
    }
}
