//! The simulation the `simulation` tests and the `faults` fuzz target share: histories
//! of operations on a store whose log sits on a simulated disk
//! ([`sessiondb::vfs::SimFs`]) that fails calls at random (EIO, ENOSPC, short writes,
//! EINTR) and loses power, each crash keeping any prefix of what was written but not
//! synced, torn or not. After every reopen the store is compared with a model of what
//! each session may be:
//!
//! - every acknowledged change is there with its latest acknowledged value (under
//!   `Sync`, a change is acknowledged when its call returns `Ok`; under `Buffered`,
//!   when a later `flush` or a clean close returns `Ok`);
//! - a change whose call failed, or was never acknowledged, may or may not be there;
//! - nothing else is: no session that was never created, no value never written;
//! - `verify()` is clean, after every failed call too, and an I/O error while
//!   reopening is `Error::Io`, never `Error::Corrupt`.
//!
//! Its choices come from a [`Choices`]: a seeded generator (the tests) or the fuzzer's
//! bytes (the fuzz target).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use sessiondb::vfs::{FaultKind, SimFs};
use sessiondb::{
    Durability, Error, ManualClock, NewSession, Options, SessionData, SessionId, Store, Timestamp,
    Token, TokenHash,
};

const DIR: &str = "/sim/store";
const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Operations per seed.
pub const STEPS: usize = 120;

/// Where the simulation's choices come from.
pub enum Choices {
    /// SplitMix64 from a seed, as the simulated disk uses.
    Seeded(u64),
    /// A fuzzer's bytes, 8 at a time; zeros once they run out.
    Bytes(Vec<u8>, usize),
}

impl Choices {
    fn next(&mut self) -> u64 {
        match self {
            Choices::Seeded(state) => {
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            }
            Choices::Bytes(bytes, at) => {
                let mut word = [0u8; 8];
                let take = bytes.len().saturating_sub(*at).min(8);
                word[..take].copy_from_slice(&bytes[*at..*at + take]);
                *at += take;
                u64::from_le_bytes(word)
            }
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Whether a fuzzer's bytes have run out (never, for a seed).
    fn exhausted(&self) -> bool {
        matches!(self, Choices::Bytes(b, at) if *at >= b.len())
    }
}

/// What the store shows of one session: `None` once it has ended.
type State = Option<Seen>;

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    user: Option<String>,
    v: Option<u32>,
    /// `None` in the model: a token that never reached the caller (its call failed).
    token: Option<TokenHash>,
}

/// Whether the store's `found` is what the model's `may` allows.
fn matches(may: &State, found: &State) -> bool {
    match (may, found) {
        (None, None) => true,
        (Some(m), Some(f)) => {
            m.user == f.user && m.v == f.v && (m.token.is_none() || m.token == f.token)
        }
        _ => false,
    }
}

/// One session in the model: every state it has been given, and from which of them on
/// it may be found after a crash (everything before was overwritten by an
/// acknowledged change).
struct Sess {
    history: Vec<State>,
    durable: usize,
    /// Every token ever issued for it (the one that works is found by its hash).
    tokens: Vec<Token>,
}

impl Sess {
    fn now(&self) -> &State {
        self.history.last().expect("never empty")
    }

    fn token(&self) -> Option<&Token> {
        let want = self.now().as_ref()?.token?;
        self.tokens.iter().find(|t| t.hash() == want)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Sync,
    Buffered,
}

/// Where the store's log is written: on the calling thread
/// ([`Options::deterministic`]: a seed replays exactly the same calls), or by the
/// writer thread, as in production (its timing varies from run to run).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Writer {
    Inline,
    Thread,
}

struct Sim {
    mode: Mode,
    writer: Writer,
    rng: Choices,
    disk: SimFs,
    clock: ManualClock,
    store: Option<Store>,
    sessions: BTreeMap<SessionId, Sess>,
    /// The sessions' ids in the order the model learnt them (ids are random: choices
    /// follow this order, so that a seed makes the same history every run).
    order: Vec<SessionId>,
    /// Sessions whose create failed since the last reopen: each may be there or not.
    failed_creates: Vec<Seen>,
    crashes: u64,
    failures: u64,
}

pub fn fail(seed: u64, mode: Mode, writer: Writer, why: String) -> String {
    format!(
        "seed {seed} ({mode:?}, {writer:?} writer): {why}\n  replay: SESSIONDB_SIM_SEED={seed} \
         cargo test --test simulation {} -- --nocapture",
        test_name(mode, writer)
    )
}

/// The test in `tests/simulation.rs` that runs `mode` with `writer`.
pub fn test_name(mode: Mode, writer: Writer) -> &'static str {
    match (mode, writer) {
        (Mode::Sync, Writer::Inline) => {
            "under_sync_every_acknowledged_change_survives_faults_and_crashes"
        }
        (Mode::Buffered, Writer::Inline) => {
            "under_buffered_every_flushed_change_survives_faults_and_crashes"
        }
        (Mode::Sync, Writer::Thread) => {
            "under_sync_on_the_writer_thread_every_acknowledged_change_survives"
        }
        (Mode::Buffered, Writer::Thread) => {
            "under_buffered_on_the_writer_thread_every_flushed_change_survives"
        }
    }
}

impl Sim {
    fn opts(&self) -> Options {
        Options::default()
            .clock(self.clock.clone())
            .reaper_interval(None)
            .shards(4)
            .segment_bytes(4096)
            .compaction(false, u64::MAX, 2.0)
            .durability(match self.mode {
                Mode::Sync => Durability::Sync,
                Mode::Buffered => Durability::Buffered {
                    flush_every: Duration::from_secs(86_400),
                },
            })
            .file_system(self.disk.clone())
            .deterministic(self.writer == Writer::Inline)
    }

    fn learn(&mut self, id: SessionId, sess: Sess) {
        if self.sessions.insert(id, sess).is_none() {
            self.order.push(id);
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    /// Records that session `id` was given `state` by a call that returned `ok`.
    fn record(&mut self, id: SessionId, state: State, ok: bool) {
        let sync = self.mode == Mode::Sync;
        let s = self.sessions.get_mut(&id).expect("known");
        s.history.push(state);
        if ok && sync {
            s.durable = s.history.len() - 1;
        }
    }

    /// A flush (or clean close) returned `Ok`: everything acknowledged is durable.
    fn all_durable(&mut self) {
        for s in self.sessions.values_mut() {
            s.durable = s.history.len() - 1;
        }
    }

    /// A live session of the model, at random, with its working token.
    fn pick(&mut self) -> Option<(SessionId, Token, Seen)> {
        let live: Vec<SessionId> = self
            .order
            .iter()
            .filter(|id| self.sessions[*id].token().is_some())
            .copied()
            .collect();
        if live.is_empty() {
            return None;
        }
        let id = live[self.rng.below(live.len() as u64) as usize];
        let s = &self.sessions[&id];
        Some((id, s.token()?.clone(), s.now().clone()?))
    }

    /// One random operation. `Err` is a broken rule; a failed call is `Ok(false)`.
    fn step(&mut self) -> Result<bool, String> {
        let roll = self.rng.below(100);
        let ok = match roll {
            0..=24 => {
                let user = self.rng.below(4);
                let user = (user < 3).then(|| USERS[user as usize].to_owned());
                let v = self.rng.next() as u32;
                let new = match &user {
                    Some(u) => NewSession::for_user(u.clone()),
                    None => NewSession::anonymous(),
                };
                let mut data = SessionData::new();
                data.insert("v", &v).expect("small");
                match self.store().create(new.data(data)) {
                    Ok((token, s)) => {
                        let state = Some(Seen {
                            user,
                            v: Some(v),
                            token: Some(token.hash()),
                        });
                        self.learn(
                            s.id(),
                            Sess {
                                history: vec![None],
                                durable: 0,
                                tokens: vec![token],
                            },
                        );
                        self.record(s.id(), state, true);
                        true
                    }
                    // A create that failed has no id to follow: it may be found after
                    // reopen, as a session the model does not know (see `check`).
                    Err(e) => {
                        self.failed_creates.push(Seen {
                            user,
                            v: Some(v),
                            token: None,
                        });
                        return self.failed(e);
                    }
                }
            }
            25..=49 => {
                let Some((id, token, seen)) = self.pick() else {
                    return Ok(true);
                };
                let v = self.rng.next() as u32;
                let r = self.store().put(&token, "v", &v);
                let state = Some(Seen { v: Some(v), ..seen });
                let ok = r.is_ok();
                self.record(id, state, ok);
                if let Err(e) = r {
                    return self.failed(e);
                }
                true
            }
            50..=57 => {
                let Some((id, token, _)) = self.pick() else {
                    return Ok(true);
                };
                let r = self.store().end(&token);
                self.record(id, None, r.is_ok());
                if let Err(e) = r {
                    return self.failed(e);
                }
                true
            }
            58..=73 => {
                let Some((id, token, seen)) = self.pick() else {
                    return Ok(true);
                };
                let login = roll >= 66;
                let user = USERS[self.rng.below(3) as usize];
                let r = if login {
                    self.store().login(&token, user)
                } else {
                    self.store().rotate(&token)
                };
                match r {
                    Ok(new) => {
                        if login {
                            // A rotation, then a bind, each its own record: under
                            // Buffered a crash may keep the first alone.
                            let rotated = Some(Seen {
                                token: Some(new.hash()),
                                ..seen.clone()
                            });
                            self.record(id, rotated, false);
                        }
                        let state = Some(Seen {
                            user: if login { Some(user.into()) } else { seen.user },
                            token: Some(new.hash()),
                            ..seen
                        });
                        self.sessions.get_mut(&id).expect("known").tokens.push(new);
                        self.record(id, state, true);
                        true
                    }
                    Err(e) => {
                        // The new token never reached the caller: the session may have
                        // it (and is then out of reach) or keep the old one. A login is
                        // a rotation, then a bind, each its own record: a failed one
                        // may have rotated without binding.
                        let rotated = Some(Seen {
                            token: None,
                            ..seen.clone()
                        });
                        self.record(id, rotated, false);
                        if login {
                            let state = Some(Seen {
                                user: Some(user.into()),
                                token: None,
                                ..seen
                            });
                            self.record(id, state, false);
                        }
                        return self.failed(e);
                    }
                }
            }
            74..=77 => {
                let user = USERS[self.rng.below(3) as usize];
                let r = self.store().revoke_user(user);
                let ids: Vec<SessionId> = self
                    .order
                    .iter()
                    .filter(|id| {
                        let s = &self.sessions[*id];
                        s.now().as_ref().and_then(|x| x.user.as_deref()) == Some(user)
                    })
                    .copied()
                    .collect();
                for id in ids {
                    self.record(id, None, r.is_ok());
                }
                if let Err(e) = r {
                    return self.failed(e);
                }
                true
            }
            78..=85 => match self.store().flush() {
                Ok(()) => {
                    self.all_durable();
                    true
                }
                Err(e) => return self.failed(e),
            },
            86..=89 => match self.store().compact() {
                Ok(_) => true,
                Err(e) => return self.failed(e),
            },
            90..=93 => {
                // A clean close, then open again.
                let store = self.store.take().expect("open");
                let closed = store.close();
                if closed.is_ok() {
                    self.all_durable();
                }
                self.reopen()?;
                closed.is_ok()
            }
            _ => {
                self.crash()?;
                true
            }
        };
        Ok(ok)
    }

    /// A call failed: the error must be typed and say what happened; reads go on and
    /// the index is consistent; the store is then crashed or reopened (what it holds in memory is no longer the
    /// model's to predict).
    fn failed(&mut self, e: Error) -> Result<bool, String> {
        self.failures += 1;
        match &e {
            Error::Io { .. } | Error::Poisoned { .. } | Error::DiskFull { .. } => {}
            other => return Err(format!("a failed write gave {other:?}")),
        }
        if let Some((_, token, _)) = self.pick() {
            let _ = self.store().peek(&token);
        }
        let _ = self.store().stats();
        // A failed call leaves the index consistent (what it holds may be ahead of the
        // disk, but every index agrees with every other).
        self.store()
            .verify()
            .map_err(|v| format!("verify after the failed call ({e}): {v}"))?;
        if self.rng.below(2) == 0 {
            self.crash()?;
        } else {
            drop(self.store.take());
            self.reopen()?;
        }
        Ok(false)
    }

    fn crash(&mut self) -> Result<(), String> {
        self.crashes += 1;
        self.disk = self.disk.crash();
        // The dead process's store: every call it makes now fails.
        drop(self.store.take());
        self.reopen()
    }

    /// Opens the store (retrying while injected faults make it fail with `Io`, then
    /// without faults) and checks it against the model.
    fn reopen(&mut self) -> Result<(), String> {
        let mut tries = 0;
        let store = loop {
            match Store::open_with(DIR, self.opts()) {
                Ok(s) => break s,
                Err(Error::Io { .. } | Error::DiskFull { .. }) if tries < 20 => {
                    tries += 1;
                    if tries == 10 {
                        self.disk.heal();
                    }
                }
                Err(e) => return Err(format!("reopening gave {e:?}")),
            }
        };
        self.store = Some(store);
        self.check()
    }

    /// The reopened store against the model; the model then starts from what is there.
    fn check(&mut self) -> Result<(), String> {
        let store = self.store();
        store
            .verify()
            .map_err(|e| format!("verify after reopen: {e}"))?;
        let mut found: BTreeMap<SessionId, Seen> = BTreeMap::new();
        store
            .export(|r| {
                let v = r.data.get::<u32>("v").ok().flatten();
                found.insert(
                    r.id,
                    Seen {
                        user: r.user.map(|u| u.as_str().to_owned()),
                        v,
                        token: Some(r.token_hash),
                    },
                );
                Ok(())
            })
            .map_err(|e| format!("export: {e}"))?;
        let failed_creates = std::mem::take(&mut self.failed_creates);
        let mut unclaimed = failed_creates.clone();
        // Sessions the model did not know, in an order that does not depend on their
        // random ids.
        let mut unknown: Vec<(&SessionId, &Seen)> = found
            .iter()
            .filter(|(id, _)| !self.sessions.contains_key(id))
            .collect();
        unknown.sort_by(|a, b| (&a.1.user, a.1.v).cmp(&(&b.1.user, b.1.v)));
        let mut learnt = Vec::new();
        for (id, seen) in unknown {
            let Some(i) = unclaimed
                .iter()
                .position(|m| matches(&Some(m.clone()), &Some(seen.clone())))
            else {
                return Err(format!(
                    "session {id} ({seen:?}) is in the store but was never created \
                     (failed creates: {failed_creates:?})"
                ));
            };
            unclaimed.remove(i);
            learnt.push((
                *id,
                Sess {
                    history: vec![Some(seen.clone())],
                    durable: 0,
                    tokens: Vec::new(),
                },
            ));
        }
        for (id, sess) in learnt {
            self.learn(id, sess);
        }
        for (id, s) in &mut self.sessions {
            let seen = found.remove(id);
            let allowed = &s.history[s.durable..];
            if !allowed.iter().any(|m| matches(m, &seen)) {
                return Err(format!(
                    "session {id}: found {seen:?}, but only {allowed:?} may be there \
                     (history {:?}, durable from {})",
                    s.history, s.durable
                ));
            }
            s.history = vec![seen];
            s.durable = 0;
        }
        Ok(())
    }
}

/// What a run saw: crashes, failed calls, injected faults, calls to the disk.
pub type Totals = (u64, u64, u64, u64);

/// One seeded history of `steps` operations.
pub fn run_seed(seed: u64, mode: Mode, writer: Writer, steps: usize) -> Result<Totals, String> {
    run(seed, Choices::Seeded(seed ^ 0x5EED), mode, writer, steps)
        .map_err(|e| fail(seed, mode, writer, e))
}

/// One history driven by a fuzzer's bytes: the first 8 seed the disk, the next byte
/// picks the mode (its low bit) and the writer (the thread when its next two bits are
/// set: one input in four), the rest the operations (up to 200).
pub fn run_bytes(data: &[u8]) -> Result<Totals, String> {
    if data.len() < 9 {
        return Ok((0, 0, 0, 0));
    }
    let seed = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let mode = if data[8].is_multiple_of(2) {
        Mode::Sync
    } else {
        Mode::Buffered
    };
    let writer = if data[8] & 0b110 == 0b110 {
        Writer::Thread
    } else {
        Writer::Inline
    };
    run(
        seed,
        Choices::Bytes(data[9..].to_vec(), 0),
        mode,
        writer,
        200,
    )
}

fn run(
    seed: u64,
    mut rng: Choices,
    mode: Mode,
    writer: Writer,
    steps: usize,
) -> Result<Totals, String> {
    let disk = SimFs::new(seed);
    // A third of the histories run without faults (crashes only), the rest with a
    // fault in every 40 to 400 calls.
    let one_in = match rng.below(3) {
        0 => 0,
        _ => 40 + rng.below(360) as u32,
    };
    let mut sim = Sim {
        mode,
        writer,
        rng,
        disk,
        clock: ManualClock::new(Timestamp(1_800_000_000_000)),
        store: None,
        sessions: BTreeMap::new(),
        order: Vec::new(),
        failed_creates: Vec::new(),
        crashes: 0,
        failures: 0,
    };
    sim.reopen()?;
    sim.disk.random_faults(
        one_in,
        &[
            FaultKind::Io,
            FaultKind::NoSpace,
            FaultKind::ShortWrite,
            FaultKind::Interrupted,
        ],
    );
    for _ in 0..steps {
        if sim.rng.exhausted() {
            break;
        }
        sim.step()?;
        sim.clock.advance(Duration::from_millis(10));
    }
    sim.crash()?;
    let (calls, faults) = sim.disk.calls();
    Ok((sim.crashes, sim.failures, faults, calls))
}
