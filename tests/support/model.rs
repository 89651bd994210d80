//! The model the property tests and the `ops_model` fuzz target share: a plain map of
//! sessions with explicit deadlines (and each session's sign-in factors and device), and
//! `run`, which drives a store and the model with the same operations and checks that
//! every answer agrees and that `Store::verify` passes after every step. Included with `#[path]` by `tests/model.rs` and
//! `fuzz/fuzz_targets/ops_model.rs`; it uses only the public API.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use sessiondb::{
    Criterion, Device, Durability, Error, ManualClock, NewSession, Options, SignIn, Store,
    Timestamp, Token,
};

macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(format!(
                "check failed: {} (line {})",
                stringify!($cond),
                line!()
            ));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "check failed: {} == {}: {:?} != {:?} (line {})",
                stringify!($a),
                stringify!($b),
                a,
                b,
                line!()
            ));
        }
    }};
}

pub const T0: u64 = 1_800_000_000_000;
const LIFETIME_S: u64 = 3_600;
const IDLE_S: u64 = 600;
const AUTH_S: u64 = 1_800;
const TOUCH_S: u64 = 60;
const GRACE_S: u64 = 5;
/// Every anonymous session starts on trial: it ends this long after its creation
/// unless it is used again first (`Options::trial_lifetime`).
const TRIAL_S: u64 = 120;
pub const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Level 2 lasts this long after the step that reached it (`Options::level_lifetime`).
const LEVEL2_S: u64 = 300;
/// Level 3 has a lifetime of zero: it never counts.
const LEVEL3_S: u64 = 0;
/// The sign-in methods the operations name, by index; an index past the end names
/// something that is not a method name (refused with `Error::InvalidSignIn`).
pub const METHODS: [&str; 10] = [
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
/// How many user agents and addresses `SeenFrom` and a create's device choose from.
pub const USER_AGENTS: u8 = 8;
pub const ADDRESSES: u8 = 8;

/// One operation of a test sequence.
#[derive(Clone, Debug)]
pub enum Op {
    Create {
        user: Option<usize>,
        idle: bool,
        /// Initial data for key 0, given with `NewSession::data`.
        with: Option<u32>,
        /// `NewSession::signed_in` with these methods (indices into `METHODS`) at this
        /// level (refused for an anonymous session, or a malformed sign-in).
        sign_in: Option<(Vec<u8>, u8)>,
        /// `NewSession::device` with this user agent and address (see `device`).
        device: Option<(u8, u8)>,
    },
    Get(usize),
    Peek(usize),
    Put(usize, u8, u32),
    Remove(usize, u8),
    Update(usize),
    Save {
        tok: usize,
        stale: bool,
    },
    Touch(usize),
    Extend(usize, u16),
    /// `Store::set_expiry` to now plus this many seconds (zero or less ends it).
    SetExpiry(usize, i16),
    Rotate(usize),
    Bind(usize, usize),
    Unbind(usize),
    End(usize),
    EndById(usize),
    Revoke(usize),
    /// `Store::revoke_others` through this token.
    RevokeOthers(usize),
    /// `Store::revoke_user_before` with now plus this many seconds (later than now
    /// counts as now).
    RevokeBefore(usize, i16),
    SessionsOf(usize),
    /// `Store::login` (rotate, bind; the factors cleared).
    Login(usize, usize),
    /// `Store::login_with` this user, these methods (indices into `METHODS`, in order;
    /// duplicates, more than eight or an index past the end make it malformed), this
    /// level.
    LoginWith(usize, usize, Vec<u8>, u8),
    /// `Store::step_up` with these methods at this level.
    StepUp(usize, Vec<u8>, u8),
    /// `Store::revoke_user_where` with `Criterion::Method` of this index into `METHODS`.
    RevokeWhereMethod(usize, u8),
    /// `Store::revoke_user_where` with `Criterion::BelowLevel`.
    RevokeBelow(usize, u8),
    /// `Store::seen_from` with this user agent and address (see `device`).
    SeenFrom(usize, u8, u8),
    Advance(u16),
    Reap,
    Clear,
    Reopen,
    Compact,
    OpenInstance(usize),
    EndInstance(usize, u8),
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
    /// Open instances (not durable: a reopen forgets them) and the next instance id.
    instances: Vec<u32>,
    next_instance: u32,
    /// How its user signed in, in the order the methods were last used.
    factors: Vec<MFactor>,
    /// The device as kept (user agent, address) and when it was recorded.
    device: Option<MDevice>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MFactor {
    method: u8,
    level: u8,
    at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MDevice {
    user_agent: Option<String>,
    address: Option<IpAddr>,
    at: u64,
}

/// Whether `f` still counts at `now` under the model's level lifetimes.
fn counts(f: &MFactor, now: u64) -> bool {
    match f.level {
        2 => now < f.at + LEVEL2_S * 1000,
        3 => now < f.at + LEVEL3_S * 1000,
        _ => true,
    }
}

/// The level `factors` give at `now`: the highest among those still counting, 0 if none.
fn level_of(factors: &[MFactor], now: u64) -> u8 {
    factors
        .iter()
        .filter(|f| counts(f, now))
        .map(|f| f.level)
        .max()
        .unwrap_or(0)
}

/// A method name by index (past the end: not a valid name).
fn method(ix: u8) -> &'static str {
    METHODS
        .get(usize::from(ix))
        .copied()
        .unwrap_or("not a method")
}

/// The `SignIn` the operation names (`None` for no methods at all, which the API
/// cannot express).
fn sign_in(methods: &[u8], level: u8) -> Option<SignIn> {
    let (first, rest) = methods.split_first()?;
    Some(
        rest.iter()
            .fold(SignIn::with(method(*first)), |s, m| s.and(method(*m)))
            .level(level),
    )
}

/// Whether the store accepts the sign-in: one to eight distinct, well-formed methods.
fn valid_sign_in(methods: &[u8]) -> bool {
    !methods.is_empty()
        && methods.len() <= 8
        && methods.iter().all(|&m| usize::from(m) < METHODS.len())
        && methods
            .iter()
            .enumerate()
            .all(|(i, m)| !methods[..i].contains(m))
}

/// `before` after a step with `methods` at `level` at `now`: each method added or, if
/// already there, replaced (moved to the end, in the step's order).
fn apply_sign_in(before: &[MFactor], methods: &[u8], level: u8, now: u64) -> Vec<MFactor> {
    let mut out: Vec<MFactor> = before
        .iter()
        .filter(|f| !methods.contains(&f.method))
        .cloned()
        .collect();
    out.extend(methods.iter().map(|&method| MFactor {
        method,
        level,
        at: now,
    }));
    out
}

/// The user agent a request sends, by index, and what a session keeps of it (control
/// characters dropped, cut to 512 bytes at a character boundary, trimmed; nothing if
/// nothing is left).
fn user_agent(ix: u8) -> (Option<String>, Option<String>) {
    let s = |x: &str| Some(x.to_owned());
    match ix % USER_AGENTS {
        0 => (None, None),
        1 => (s("Mozilla/5.0 Firefox/128"), s("Mozilla/5.0 Firefox/128")),
        // The same as 1 once cleaned.
        2 => (
            s("  Mozilla/5.0 Firefox/128\r\n"),
            s("Mozilla/5.0 Firefox/128"),
        ),
        3 => (s("Safari/17 (iPhone)"), s("Safari/17 (iPhone)")),
        // Nothing left.
        4 => (s("\t \r\n"), None),
        5 => (s("curl\u{7}/8.5"), s("curl/8.5")),
        // 600 bytes of two-byte characters: 256 of them kept.
        6 => (Some("é".repeat(300)), Some("é".repeat(256))),
        // One byte, then two-byte characters: the cut falls before the 512th byte.
        _ => (
            Some(format!("x{}", "é".repeat(300))),
            Some(format!("x{}", "é".repeat(255))),
        ),
    }
}

/// The client address a request comes from, by index, and what a session keeps of it
/// under the default privacy (the /24 or /48 network; an IPv4 address inside IPv6 as
/// IPv4).
fn address(ix: u8) -> (Option<IpAddr>, Option<IpAddr>) {
    let (given, kept) = match ix % ADDRESSES {
        0 => return (None, None),
        1 => ("203.0.113.7", "203.0.113.0"),
        2 => ("203.0.113.200", "203.0.113.0"),
        3 => ("198.51.100.9", "198.51.100.0"),
        4 => ("::ffff:203.0.113.5", "203.0.113.0"),
        5 => ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        6 => ("2001:db8:85a3:ffff::1", "2001:db8:85a3::"),
        _ => ("2001:db8:1::1", "2001:db8:1::"),
    };
    (Some(given.parse().unwrap()), Some(kept.parse().unwrap()))
}

/// The `Device` a request reports, and what a session keeps of it at `now` (`None` if
/// nothing).
fn device(ua: u8, addr: u8, now: u64) -> (Device, Option<MDevice>) {
    let (ua_given, ua_kept) = user_agent(ua);
    let (addr_given, addr_kept) = address(addr);
    let mut d = Device::new();
    if let Some(u) = ua_given {
        d = d.user_agent(u);
    }
    if let Some(a) = addr_given {
        d = d.address(a);
    }
    let kept = (ua_kept.is_some() || addr_kept.is_some()).then_some(MDevice {
        user_agent: ua_kept,
        address: addr_kept,
        at: now,
    });
    (d, kept)
}

impl MSession {
    /// The promotion rule: anonymous, never written, bound or seen since its creation.
    fn on_trial(&self) -> bool {
        self.user.is_none() && self.version == 0 && self.last_seen == self.created
    }

    fn deadline(&self) -> u64 {
        let mut d = self.absolute;
        if self.on_trial() {
            d = d.min(self.created + TRIAL_S * 1000);
        }
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

    /// A rotation of session `sk` through token `i` (current) to `new`.
    fn rotate(&mut self, i: usize, sk: usize, new: Token) {
        let now = self.now;
        let ms = self.sessions.get_mut(&sk).unwrap();
        ms.last_seen = ms.last_seen.max(now);
        self.tokens[i].1 = MToken::Alias(sk, now + GRACE_S * 1000);
        self.tokens.push((new, MToken::Current(sk)));
    }

    /// A login of user `u` on session `sk` through token `i`: rotated to `new`, bound
    /// (which clears the factors), then the sign-in recorded if there is one.
    fn log_in(&mut self, i: usize, sk: usize, new: Token, u: usize, how: Option<(&[u8], u8)>) {
        self.rotate(i, sk, new);
        let now = self.now;
        let ms = self.sessions.get_mut(&sk).unwrap();
        ms.user = Some(u);
        ms.auth = Some(now);
        ms.version += 1;
        ms.last_seen = ms.last_seen.max(now);
        ms.factors = how.map_or_else(Vec::new, |(methods, level)| {
            apply_sign_in(&[], methods, level, now)
        });
    }

    /// Ends user `u`'s sessions that meet `criterion` at now, and those already past
    /// their deadline (as expired); returns how many live ones ended.
    fn revoke_where(&mut self, u: usize, criterion: impl Fn(&MSession, u64) -> bool) -> usize {
        let now = self.now;
        let gone: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.user == Some(u) && (s.deadline() <= now || criterion(s, now)))
            .map(|(k, _)| *k)
            .collect();
        let live = gone
            .iter()
            .filter(|k| self.sessions[*k].deadline() > now)
            .count();
        for k in gone {
            self.sessions.remove(&k);
        }
        live
    }
}

/// The data keys the operations use (`k` is below 4; anything above names the last).
fn key(k: u8) -> &'static str {
    ["k0", "k1", "k2", "k3"][usize::from(k.min(3))]
}

/// Checks a snapshot taken at `now` against the model's session.
fn check_snapshot(m: &MSession, s: &sessiondb::Session, now: u64) -> Result<(), String> {
    check_eq!(s.id(), m.id);
    check_eq!(s.user().map(|u| u.as_str()), m.user.map(|u| USERS[u]));
    check_eq!(s.version(), m.version);
    check_eq!(s.last_seen(), Timestamp(m.last_seen));
    check_eq!(s.created_at(), Timestamp(m.created));
    check_eq!(s.expires_at(), Timestamp(m.deadline()));
    // The entries there are, decoded (not a lookup of every key the model could hold).
    let mut data = BTreeMap::new();
    for (k, _) in s.data().iter() {
        let k = match k {
            "k0" => 0u8,
            "k1" => 1,
            "k2" => 2,
            "k3" => 3,
            other => return Err(format!("unexpected data key {other:?}")),
        };
        let v: u32 = s.get(key(k)).unwrap().expect("listed");
        data.insert(k, v);
    }
    check_eq!(&data, &m.data);
    let factors: Vec<(&str, u8, u64)> = s
        .factors()
        .iter()
        .map(|f| (f.method(), f.level(), f.at().0))
        .collect();
    let want: Vec<(&str, u8, u64)> = m
        .factors
        .iter()
        .map(|f| (method(f.method), f.level, f.at))
        .collect();
    check_eq!(factors, want);
    check_eq!(s.level(), level_of(&m.factors, now));
    // The "sudo mode" question, for every level and a few windows.
    for level in [0u8, 1, 2, 3, u8::MAX] {
        for secs in [0u64, 1, 60, 300, 3_600] {
            let since = now.saturating_sub(secs * 1000);
            let want = (level == 0 && m.auth.is_some_and(|a| a >= since))
                || m.factors
                    .iter()
                    .any(|f| counts(f, now) && f.level >= level && f.at >= since && f.at <= now);
            let got = s.authenticated_within(level, Duration::from_secs(secs));
            if got != want {
                return Err(format!(
                    "authenticated_within({level}, {secs} s) is {got}, the model says {want}"
                ));
            }
        }
    }
    check_eq!(
        s.user_agent(),
        m.device.as_ref().and_then(|d| d.user_agent.as_deref())
    );
    check_eq!(s.address(), m.device.as_ref().and_then(|d| d.address));
    check_eq!(
        s.device_seen_at(),
        m.device.as_ref().map(|d| Timestamp(d.at))
    );
    Ok(())
}

/// Where the store under test keeps its sessions.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Memory,
    /// The log under `Durability::Sync`.
    Log,
    /// The log under `Durability::Buffered` (a clean close still keeps everything).
    LogBuffered,
    /// As `LogBuffered`, on a simulated disk in memory (`sessiondb::vfs::SimFs`): the
    /// same store code, no file-system calls (the fuzz target's choice).
    LogSimulated,
    #[cfg(feature = "sled")]
    Sled,
}

/// A scratch directory, in memory where the machine has one (fsync is then free).
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

pub fn run(kind: Kind, ops: Vec<Op>) -> Result<(), String> {
    let clock = ManualClock::new(Timestamp(T0));
    // Only the kinds on the real disk need a directory (a fuzzer runs LogSimulated
    // thousands of times a second).
    let dir = match kind {
        Kind::Memory | Kind::LogSimulated => None,
        _ => Some(scratch_dir()),
    };
    let path = || dir.as_ref().expect("a real directory").path();
    let disk = sessiondb::vfs::SimFs::new(0);
    let opts = Options::default()
        .clock(clock.clone())
        .reaper_interval(None)
        .shards(4)
        .lifetime(Duration::from_secs(LIFETIME_S))
        .idle_timeout(Duration::from_secs(IDLE_S))
        .auth_lifetime(Some(Duration::from_secs(AUTH_S)))
        .touch_interval(Duration::from_secs(TOUCH_S))
        .trial_lifetime(Some(Duration::from_secs(TRIAL_S)))
        .rotation_grace(Duration::from_secs(GRACE_S))
        .level_lifetime(2, Duration::from_secs(LEVEL2_S))
        .level_lifetime(3, Duration::from_secs(LEVEL3_S));
    let open = || match kind {
        Kind::Memory => Store::in_memory_with(opts.clone()).unwrap(),
        Kind::Log => Store::open_with(path(), opts.clone().durability(Durability::Sync)).unwrap(),
        Kind::LogBuffered => Store::open_with(
            path(),
            opts.clone().durability(Durability::Buffered {
                flush_every: Duration::from_millis(20),
            }),
        )
        .unwrap(),
        Kind::LogSimulated => Store::open_with(
            "/model/store",
            opts.clone()
                .durability(Durability::Buffered {
                    flush_every: Duration::from_millis(20),
                })
                // Small segments: rolls are exercised, and preallocation stays cheap.
                .segment_bytes(64 << 10)
                .file_system(disk.clone())
                // The log written on this thread: no hand-offs, and a failing input
                // replays exactly.
                .deterministic(true),
        )
        .unwrap(),
        #[cfg(feature = "sled")]
        Kind::Sled => Store::open_with(
            path(),
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
            Op::Create {
                user,
                idle,
                with,
                ref sign_in,
                device: dev,
            } => {
                let mut new = match user {
                    Some(u) => NewSession::for_user(USERS[u]),
                    None => NewSession::anonymous(),
                };
                if !idle {
                    new = new.idle_timeout(Duration::ZERO);
                }
                if let Some(v) = with {
                    let mut d = sessiondb::SessionData::new();
                    d.insert(key(0), &v).unwrap();
                    new = new.data(d);
                }
                let mut factors = Vec::new();
                if let Some((methods, level)) = sign_in {
                    let Some(how) = self::sign_in(methods, *level) else {
                        continue;
                    };
                    new = new.signed_in(how);
                    if user.is_none() || !valid_sign_in(methods) {
                        // Refused, nothing created: a malformed sign-in, or one for an
                        // anonymous session.
                        let got = store.create(new);
                        check!(matches!(got, Err(Error::InvalidSignIn { .. })));
                        check_eq!(store.len(), m.sessions.len());
                        store.verify().map_err(|e| e.to_string())?;
                        continue;
                    }
                    factors = apply_sign_in(&[], methods, *level, m.now);
                }
                let mut kept_device = None;
                if let Some((ua, addr)) = dev {
                    let (d, kept) = device(ua, addr, m.now);
                    new = new.device(d);
                    kept_device = kept;
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
                    data: with.map(|v| (0u8, v)).into_iter().collect(),
                    instances: Vec::new(),
                    next_instance: 0,
                    factors,
                    device: kept_device,
                };
                check_snapshot(&ms, &snap, m.now)?;
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
                    None => check!(got.is_none()),
                    Some(k) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&k).unwrap();
                        // A get always counts for a session on trial: it promotes it.
                        if touch && (now - ms.last_seen >= TOUCH_S * 1000 || ms.on_trial()) {
                            ms.last_seen = now;
                        }
                        check_snapshot(ms, &got.expect("live in the model"), now)?;
                    }
                }
            }
            Op::Put(i, k, v) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.put(&t, key(k), &v);
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.data.insert(k, v);
                        ms.version += 1;
                        ms.last_seen = ms.last_seen.max(now);
                        check_eq!(got.unwrap(), ms.version);
                    }
                }
            }
            Op::Remove(i, k) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.remove(&t, key(k));
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        if ms.data.remove(&k).is_some() {
                            ms.version += 1;
                            ms.last_seen = ms.last_seen.max(now);
                        }
                        check_eq!(got.unwrap(), ms.version);
                    }
                }
            }
            Op::Update(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.update(&t, |d| {
                    let n: u32 = d.get(key(0))?.unwrap_or(0);
                    d.insert(key(0), &n.wrapping_add(1))
                });
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        check!(got.is_ok());
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
                    d.insert(key(1), &7u32).unwrap();
                    check!(matches!(store.save(&t, 0, &d), Err(Error::Ended)));
                    continue;
                };
                let snap = store.peek(&t).unwrap();
                let mut d = snap.data().clone();
                d.insert(key(1), &7u32).unwrap();
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
                    check!(conflict);
                } else {
                    ms.data.insert(1, 7);
                    ms.version += 1;
                    ms.last_seen = ms.last_seen.max(now);
                    check_eq!(got.unwrap(), ms.version);
                }
            }
            Op::Touch(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.touch(&t);
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        check!(got.is_ok());
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
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.absolute = ms.absolute.max(now + u64::from(by) * 1000);
                        ms.last_seen = ms.last_seen.max(now);
                        check_eq!(got.unwrap(), Timestamp(ms.deadline()));
                    }
                }
            }
            Op::SetExpiry(i, secs) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let now = m.now;
                let at = now.saturating_add_signed(i64::from(secs) * 1000);
                let got = store.set_expiry(&t, Timestamp(at));
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) if at <= now => {
                        check_eq!(got.unwrap(), Timestamp(at));
                        m.sessions.remove(&sk);
                    }
                    Some(sk) => {
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.absolute = at;
                        ms.last_seen = ms.last_seen.max(now);
                        check_eq!(got.unwrap(), Timestamp(ms.deadline()));
                    }
                }
            }
            Op::Rotate(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.rotate(&t);
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(_) if m.is_alias(i) => {
                        check!(matches!(got, Err(Error::TokenRetired)));
                    }
                    Some(sk) => m.rotate(i, sk, got.unwrap()),
                }
            }
            Op::Bind(i, u) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.bind_user(&t, USERS[u]);
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        check!(got.is_ok());
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        ms.user = Some(u);
                        ms.auth = Some(now);
                        ms.factors.clear();
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
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        let was = ms.user.take();
                        check_eq!(
                            got.unwrap().map(|u| u.to_string()),
                            was.map(|u| USERS[u].to_string())
                        );
                        if was.is_some() {
                            ms.auth = None;
                            ms.factors.clear();
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
                    None => check!(!got),
                    Some(sk) => {
                        check!(got);
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
                check_eq!(store.end_by_id(id).unwrap(), live);
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
                check_eq!(got, live);
                for k in mine {
                    m.sessions.remove(&k);
                }
            }
            Op::RevokeOthers(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.revoke_others(&t);
                let Some(sk) = m.resolve(i) else {
                    check!(matches!(got, Err(sessiondb::Error::Ended)));
                    continue;
                };
                let Some(u) = m.sessions[&sk].user else {
                    check_eq!(got.unwrap(), 0);
                    continue;
                };
                let now = m.now;
                let others: Vec<usize> = m
                    .sessions
                    .iter()
                    .filter(|(k, s)| **k != sk && s.user == Some(u))
                    .map(|(k, _)| *k)
                    .collect();
                let live = others
                    .iter()
                    .filter(|k| m.sessions[*k].deadline() > now)
                    .count();
                check_eq!(got.unwrap(), live);
                for k in others {
                    m.sessions.remove(&k);
                }
            }
            Op::RevokeBefore(u, secs) => {
                let before = (m.now as i64 + i64::from(secs) * 1000).max(0) as u64;
                let got = store
                    .revoke_user_before(USERS[u], Timestamp(before))
                    .unwrap();
                let (now, at) = (m.now, before.min(m.now));
                let older: Vec<usize> = m
                    .sessions
                    .iter()
                    // Sessions already past their deadline go too (as expired).
                    .filter(|(_, s)| {
                        s.user == Some(u) && (s.auth.is_none_or(|a| a < at) || s.deadline() <= now)
                    })
                    .map(|(k, _)| *k)
                    .collect();
                let live = older
                    .iter()
                    .filter(|k| m.sessions[*k].deadline() > now)
                    .count();
                check_eq!(got, live);
                for k in older {
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
                check_eq!(got, want);
            }
            Op::Login(i, u) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.login(&t, USERS[u]);
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(_) if m.is_alias(i) => {
                        check!(matches!(got, Err(Error::TokenRetired)));
                    }
                    Some(sk) => {
                        let new = got.map_err(|e| format!("login: {e}"))?;
                        m.log_in(i, sk, new, u, None);
                    }
                }
            }
            Op::LoginWith(i, u, ref methods, level) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let Some(how) = sign_in(methods, level) else {
                    continue;
                };
                let got = store.login_with(&t, USERS[u], how);
                if !valid_sign_in(methods) {
                    // Refused before anything else is looked at.
                    check!(matches!(got, Err(Error::InvalidSignIn { .. })));
                } else {
                    match m.resolve(i) {
                        None => check!(matches!(got, Err(Error::Ended))),
                        Some(_) if m.is_alias(i) => {
                            check!(matches!(got, Err(Error::TokenRetired)));
                        }
                        Some(sk) => {
                            let new = got.map_err(|e| format!("login_with: {e}"))?;
                            m.log_in(i, sk, new, u, Some((methods, level)));
                        }
                    }
                }
            }
            Op::StepUp(i, ref methods, level) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let Some(how) = sign_in(methods, level) else {
                    continue;
                };
                let got = store.step_up(&t, how);
                let now = m.now;
                if !valid_sign_in(methods) {
                    check!(matches!(got, Err(Error::InvalidSignIn { .. })));
                    continue;
                }
                let Some(sk) = m.resolve(i) else {
                    check!(matches!(got, Err(Error::Ended)));
                    continue;
                };
                let ms = &m.sessions[&sk];
                let after = apply_sign_in(&ms.factors, methods, level, now);
                if ms.user.is_none() {
                    check!(matches!(got, Err(Error::NotSignedIn)));
                } else if after.len() > 8 {
                    check!(matches!(got, Err(Error::InvalidSignIn { .. })));
                } else if m.is_alias(i) {
                    check!(matches!(got, Err(Error::TokenRetired)));
                } else {
                    let new = got.map_err(|e| format!("step_up: {e}"))?;
                    m.rotate(i, sk, new);
                    m.sessions.get_mut(&sk).unwrap().factors = after;
                }
            }
            Op::RevokeWhereMethod(u, ix) => {
                let got = store.revoke_user_where(USERS[u], &Criterion::Method(method(ix).into()));
                if usize::from(ix) >= METHODS.len() {
                    check!(matches!(got, Err(Error::InvalidSignIn { .. })));
                    continue;
                }
                let want = m.revoke_where(u, |s, _| s.factors.iter().any(|f| f.method == ix));
                check_eq!(got.map_err(|e| e.to_string())?, want);
            }
            Op::RevokeBelow(u, level) => {
                let got = store
                    .revoke_user_where(USERS[u], &Criterion::BelowLevel(level))
                    .map_err(|e| e.to_string())?;
                let want = m.revoke_where(u, |s, now| level_of(&s.factors, now) < level);
                check_eq!(got, want);
            }
            Op::SeenFrom(i, ua, addr) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let now = m.now;
                let (d, kept) = device(ua, addr, now);
                let got = store.seen_from(&t, &d);
                let Some(sk) = m.resolve(i) else {
                    check!(matches!(got, Err(Error::Ended)));
                    continue;
                };
                let ms = m.sessions.get_mut(&sk).unwrap();
                // Written when something is kept, it differs from what the session has,
                // and the last write is at least a touch interval old.
                let write = match (&kept, &ms.device) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(k), Some(c)) => {
                        (k.user_agent != c.user_agent || k.address != c.address)
                            && now - c.at >= TOUCH_S * 1000
                    }
                };
                check_eq!(got.map_err(|e| e.to_string())?, write);
                if write {
                    ms.device = kept;
                }
            }
            Op::Advance(s) => {
                clock.advance(Duration::from_secs(u64::from(s)));
                m.now += u64::from(s) * 1000;
            }
            Op::Reap => {
                let now = m.now;
                let before = m.sessions.len();
                m.sessions.retain(|_, s| s.deadline() > now);
                check_eq!(store.reap_expired(), before - m.sessions.len());
            }
            Op::Clear => {
                check_eq!(store.clear().unwrap(), m.sessions.len());
                m.sessions.clear();
            }
            Op::Compact => {
                let stats = store.compact();
                check!(stats.is_ok());
            }
            Op::OpenInstance(i) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let got = store.open_instance(&t);
                match m.resolve(i) {
                    None => check!(matches!(got, Err(Error::Ended))),
                    Some(sk) => {
                        let now = m.now;
                        let ms = m.sessions.get_mut(&sk).unwrap();
                        check_eq!(got.map(|x| x.as_u32()).ok(), Some(ms.next_instance));
                        ms.instances.push(ms.next_instance);
                        ms.next_instance += 1;
                        ms.last_seen = ms.last_seen.max(now);
                    }
                }
            }
            Op::EndInstance(i, which) => {
                let Some((i, t)) = tok_of(&m, i) else {
                    continue;
                };
                let listed = store.instances(&t);
                let Some(sk) = m.resolve(i) else {
                    check!(matches!(listed, Err(Error::Ended)));
                    continue;
                };
                let listed = listed.map_err(|e| e.to_string())?;
                let ms = m.sessions.get_mut(&sk).unwrap();
                check_eq!(
                    listed.iter().map(|x| x.as_u32()).collect::<Vec<_>>(),
                    ms.instances
                );
                if listed.is_empty() {
                    continue;
                }
                let pos = usize::from(which) % listed.len();
                check_eq!(store.end_instance(&t, listed[pos]).ok(), Some(true));
                ms.instances.remove(pos);
                if ms.instances.is_empty() && ms.idle == 0 {
                    // Idle expiry disabled and the last instance gone: the session ends.
                    m.sessions.remove(&sk);
                }
            }
            Op::Reopen => {
                if matches!(kind, Kind::Memory) {
                    continue;
                }
                drop(store);
                store = open();
                for s in m.sessions.values_mut() {
                    s.instances.clear();
                    s.next_instance = 0;
                }
                // Recovery drops what expired rather than resurrecting it.
                // (How many expired sessions recovery meets depends on whether a
                // compaction already dropped them, so only the live count is exact.)
                let now = m.now;
                m.sessions.retain(|_, s| s.deadline() > now);
                let report = store.recovery_report();
                check_eq!(report.sessions, m.sessions.len());
                check_eq!(report.bytes_truncated, 0);
                // The whole durable state equals the model's: every token resolves (or
                // not) exactly as before the close, to the same session and data.
                for i in 0..m.tokens.len() {
                    let got = store.peek(&m.tokens[i].0);
                    match m.resolve(i) {
                        None => check!(got.is_none()),
                        Some(k) => check_snapshot(
                            &m.sessions[&k],
                            &got.ok_or_else(|| "lost in the reopen".to_owned())?,
                            now,
                        )?,
                    }
                }
            }
        }
        check_eq!(store.len(), m.sessions.len());
        store.verify().map_err(|e| e.to_string())?;
    }
    Ok(())
}
