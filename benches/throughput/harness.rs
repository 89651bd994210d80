//! The workload and the measuring loop: the session shape every engine stores (N
//! sessions over N/10 users, ~200 bytes of data each), the run's settings from the
//! environment ([`Ctx`]), the operations ([`Op`]), and [`run_op`], which runs one
//! operation on some threads for a fixed time, timing every call into a log-bucketed
//! latency histogram, then restores the pool of sessions it used.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessiondb::Token;

use crate::engines::{Engine, Entry, Worker};
use crate::histogram::Hist;
use crate::machine::{compactor_seconds, cpu_seconds};
use crate::report::{fmt_count, fmt_cpu, fmt_ns};

/// Idle timeout every engine is given (sessiondb's default).
pub const IDLE: Duration = Duration::from_secs(86_400);
pub const IDLE_MS: u64 = 86_400_000;
/// Absolute lifetime (sessiondb's default), where an engine keeps one.
pub const LIFETIME_MS: u64 = 30 * 86_400_000;
pub const SESSIONS_PER_USER: usize = 10;
/// Set in a child process of the bench binary: what it is to do (see `main`).
pub const CHILD_ENV: &str = "SESSIONDB_BENCH_CHILD";

/// `SESSIONDB_BENCH_THREADS`: comma-separated thread counts, each 1 to 1,024.
pub fn thread_counts(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| match x.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "{x:?} is not a thread count from 1 to 1024 (write e.g. 1,2,4,8,16)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| match v.is_empty() {
            true => Err("no thread count given (write e.g. 1,2,4,8,16)".to_owned()),
            false => Ok(v),
        })
}

pub fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn new_token() -> String {
    Token::generate().expect("OS CSPRNG").as_string()
}

/// Prints the first few engine errors (later ones are only counted as failed ops).
pub fn note_err(engine: &str, e: impl std::fmt::Display) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 8 {
        eprintln!("  ! {engine}: {e}");
    }
}

/// The session data, as sessiondb stores it and as the peers do.
pub struct Payload {
    /// The 180-character profile string, for sessiondb's typed `put`.
    pub profile_a: String,
    pub profile_b: String,
    /// `{"profile":"..."}`: the same data as the peers store it (194 bytes).
    pub json_a: Vec<u8>,
    pub json_b: Vec<u8>,
}

pub fn payload() -> &'static Payload {
    static P: OnceLock<Payload> = OnceLock::new();
    P.get_or_init(|| {
        let a: String = (0..180).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let b: String = (0..180).map(|i| (b'A' + (i % 26) as u8) as char).collect();
        let json = |p: &str| format!(r#"{{"profile":"{p}"}}"#).into_bytes();
        Payload {
            json_a: json(&a),
            json_b: json(&b),
            profile_a: a,
            profile_b: b,
        }
    })
}

/// splitmix64: a fast, seedable generator for picking sessions and users.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Times single operations into a histogram until a deadline.
struct Meter {
    hist: Hist,
    ops: u64,
    failed: u64,
    deadline: Instant,
    last: Instant,
}

impl Meter {
    #[inline]
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t0 = Instant::now();
        let r = f();
        let t1 = Instant::now();
        self.hist.record(t1 - t0);
        self.ops += 1;
        self.last = t1;
        r
    }

    fn running(&self) -> bool {
        self.last < self.deadline
    }

    fn check(&mut self, ok: bool) {
        if !ok {
            self.failed += 1;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    GetHit,
    GetMiss,
    Create,
    Update,
    Touch,
    Rotate,
    SessionsOf,
    End,
    RevokeUser,
    Mixed,
}

pub const OPS: [Op; 10] = [
    Op::GetHit,
    Op::GetMiss,
    Op::Create,
    Op::Update,
    Op::Touch,
    Op::Rotate,
    Op::SessionsOf,
    Op::End,
    Op::RevokeUser,
    Op::Mixed,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::GetHit => "get-hit",
            Op::GetMiss => "get-miss",
            Op::Create => "create",
            Op::Update => "update",
            Op::Touch => "touch",
            Op::Rotate => "rotate",
            Op::SessionsOf => "sessions-of-user",
            Op::End => "end",
            Op::RevokeUser => "revoke-user",
            Op::Mixed => "mixed 90/5/4/1",
        }
    }
}

/// The run's settings (from the environment) and what every section shares.
pub struct Ctx {
    /// Sessions preloaded (`SESSIONDB_BENCH_SESSIONS`).
    pub n: usize,
    /// The user names, `SESSIONS_PER_USER` sessions each.
    pub users: Vec<String>,
    /// Well-formed tokens of no session, for get-miss.
    pub misses: Vec<String>,
    /// Length of each measured run (`SESSIONDB_BENCH_SECS`).
    pub run: Duration,
    /// Thread counts every op runs at: 1, 2 and `available_parallelism`.
    pub threads: Vec<usize>,
    pub parallelism: usize,
    /// The sections to run (`SESSIONDB_BENCH_ONLY`), or all.
    pub only: Option<Vec<String>>,
    pub started: Instant,
    /// An empty directory in the temp dir (where every durable engine here keeps its
    /// files), for the raw fdatasync probe.
    pub disk_probe: tempfile::TempDir,
}

impl Ctx {
    /// The settings from the environment (`cargo bench` passes `--bench`, and maybe a
    /// filter, on the command line: nothing to parse there).
    pub fn from_env() -> Ctx {
        let n: usize = env_parse("SESSIONDB_BENCH_SESSIONS")
            .unwrap_or(1_000_000)
            .max(SESSIONS_PER_USER);
        let secs: f64 = env_parse("SESSIONDB_BENCH_SECS")
            .filter(|s: &f64| *s > 0.0)
            .unwrap_or(2.0);
        let parallelism = std::thread::available_parallelism().map_or(1, |p| p.get());
        let mut threads = match std::env::var("SESSIONDB_BENCH_THREADS") {
            Ok(list) => thread_counts(&list).unwrap_or_else(|why| {
                panic!("SESSIONDB_BENCH_THREADS={list:?}: {why}");
            }),
            Err(_) => vec![1, 2, parallelism],
        };
        // One thread always runs: the scaling table divides by it.
        threads.push(1);
        threads.sort_unstable();
        threads.dedup();
        let only = std::env::var("SESSIONDB_BENCH_ONLY").ok().map(|s| {
            s.split(',')
                .map(|x| x.trim().to_lowercase())
                .filter(|x| !x.is_empty())
                .collect()
        });
        Ctx {
            n,
            users: (0..n / SESSIONS_PER_USER)
                .map(|u| format!("user-{u}"))
                .collect(),
            misses: (0..65_536).map(|_| new_token()).collect(),
            run: Duration::from_secs_f64(secs),
            threads,
            parallelism,
            only,
            started: Instant::now(),
            disk_probe: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }

    pub fn progress(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:>5.0}s] {msg}", self.started.elapsed().as_secs_f64());
    }
}

/// Which thread (or task) of how many; it owns the users `u % count == index`.
#[derive(Clone, Copy)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl Part {
    pub fn user(self, rng: &mut Rng, users: usize) -> u32 {
        if self.index >= users {
            return rng.below(users) as u32;
        }
        let span = (users - self.index).div_ceil(self.count);
        (self.index + self.count * rng.below(span)) as u32
    }
}

/// Sessions a thread removed (by user) and added during a run, to restore the pool's
/// size afterwards.
#[derive(Default)]
struct Drift {
    removed: Vec<u32>,
    appended: usize,
}

struct ThreadOut {
    local: Vec<Entry>,
    initial: usize,
    drift: Drift,
    hist: Hist,
    ops: u64,
    failed: u64,
    start: Instant,
    end: Instant,
    capped: bool,
}

/// One thread's measured loop over `op` until the deadline, or until its share of the
/// pool is used up (end and revoke remove at most half of it, create adds at most as
/// many sessions as it had).
fn measure(
    w: &mut dyn Worker,
    ctx: &Ctx,
    op: Op,
    part: Part,
    mut local: Vec<Entry>,
    seed: u64,
) -> ThreadOut {
    let mut rng = Rng(seed);
    let users = ctx.users.len();
    let initial = local.len();
    let floor = initial / 2;
    let max_add = initial.max(1000);
    let mut drift = Drift::default();
    let mut capped = false;
    let mut owned: Vec<u32> = Vec::new();
    let mut revoked: Vec<bool> = Vec::new();
    if op == Op::RevokeUser {
        // Users that have sessions in this thread's share, half of them at most.
        revoked = vec![false; users];
        for e in &local {
            if !revoked[e.user as usize] {
                revoked[e.user as usize] = true;
                owned.push(e.user);
            }
        }
        revoked.fill(false);
        rng.shuffle(&mut owned);
        owned.truncate(owned.len().div_ceil(2));
    }
    let start = Instant::now();
    let mut m = Meter {
        hist: Hist::new(),
        ops: 0,
        failed: 0,
        deadline: start + ctx.run,
        last: start,
    };
    let create = |m: &mut Meter,
                  w: &mut dyn Worker,
                  rng: &mut Rng,
                  local: &mut Vec<Entry>,
                  drift: &mut Drift| {
        let u = part.user(rng, users);
        match m.time(|| w.create(&ctx.users[u as usize])) {
            Some(token) => {
                local.push(Entry { token, user: u });
                drift.appended += 1;
            }
            None => m.failed += 1,
        }
    };
    let end = |m: &mut Meter,
               w: &mut dyn Worker,
               rng: &mut Rng,
               local: &mut Vec<Entry>,
               drift: &mut Drift| {
        let e = local.swap_remove(rng.below(local.len()));
        let ok = m.time(|| w.end(&e.token, &ctx.users[e.user as usize]));
        m.check(ok);
        drift.removed.push(e.user);
    };
    while m.running() {
        if local.is_empty() && !matches!(op, Op::Create | Op::GetMiss | Op::SessionsOf) {
            capped = true;
            break;
        }
        match op {
            Op::GetHit => {
                let e = &local[rng.below(local.len())];
                let ok = m.time(|| w.get(&e.token));
                m.check(ok);
            }
            Op::GetMiss => {
                let t = &ctx.misses[rng.below(ctx.misses.len())];
                let found = m.time(|| w.get(t));
                m.check(!found);
            }
            Op::Create => {
                if drift.appended >= max_add {
                    capped = true;
                    break;
                }
                create(&mut m, w, &mut rng, &mut local, &mut drift);
            }
            Op::Update => {
                let e = &local[rng.below(local.len())];
                let ok = m.time(|| w.update(&e.token, &ctx.users[e.user as usize]));
                m.check(ok);
            }
            Op::Touch => {
                let e = &local[rng.below(local.len())];
                let ok = m.time(|| w.touch(&e.token));
                m.check(ok);
            }
            Op::Rotate => {
                let i = rng.below(local.len());
                let e = &local[i];
                match m.time(|| w.rotate(&e.token, &ctx.users[e.user as usize])) {
                    Some(t) => local[i].token = t,
                    None => m.failed += 1,
                }
            }
            Op::SessionsOf => {
                let u = rng.below(users);
                let n = m.time(|| w.sessions_of(&ctx.users[u]));
                black_box(n);
            }
            Op::End => {
                if local.len() <= floor {
                    capped = true;
                    break;
                }
                end(&mut m, w, &mut rng, &mut local, &mut drift);
            }
            Op::RevokeUser => {
                let Some(u) = owned.pop() else {
                    capped = true;
                    break;
                };
                let n = m.time(|| w.revoke_user(&ctx.users[u as usize]));
                m.check(n > 0);
                revoked[u as usize] = true;
            }
            Op::Mixed => {
                let r = rng.below(100);
                if r < 90 {
                    let e = &local[rng.below(local.len())];
                    let ok = m.time(|| w.get(&e.token));
                    m.check(ok);
                } else if r < 95 {
                    let e = &local[rng.below(local.len())];
                    let ok = m.time(|| w.update(&e.token, &ctx.users[e.user as usize]));
                    m.check(ok);
                } else if r < 99 {
                    create(&mut m, w, &mut rng, &mut local, &mut drift);
                } else if local.len() > floor {
                    end(&mut m, w, &mut rng, &mut local, &mut drift);
                }
            }
        }
    }
    let end_at = m.last;
    if op == Op::RevokeUser {
        local.retain(|e| {
            let gone = revoked[e.user as usize];
            if gone {
                drift.removed.push(e.user);
            }
            !gone
        });
    }
    ThreadOut {
        local,
        initial,
        drift,
        hist: m.hist,
        ops: m.ops,
        failed: m.failed,
        start,
        end: end_at,
        capped,
    }
}

/// What one run measured.
pub struct RunResult {
    pub engine: String,
    pub op: Op,
    pub threads: usize,
    pub ops: u64,
    pub failed: u64,
    pub secs: f64,
    pub hist: Hist,
    pub capped: bool,
    /// fsyncs per second and records per fsync, for engines that count them.
    pub sync: Option<(f64, f64)>,
    /// Process CPU time (user + system, every thread but the spinners) per op, in µs:
    /// what an op costs whatever the number of cores (for an out-of-process peer, the
    /// client's share only).
    pub cpu_us: Option<f64>,
    /// The part of `cpu_us` spent by sessiondb's compactor threads (rewriting the log).
    pub compact_us: Option<f64>,
    /// Cores busy on average over the run: process CPU time (as for `cpu_us`) ÷ wall
    /// time — how much of the machine the threads actually got.
    pub cores: Option<f64>,
}

impl RunResult {
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Cores busy on average between two [`cpu_seconds`] readings `secs` apart.
pub fn cores_busy(cpu: Option<(f64, f64)>, secs: f64) -> Option<f64> {
    cpu.filter(|_| secs > 0.0)
        .map(|(before, after)| (after - before).max(0.0) / secs)
}

/// CPU µs per op between two [`cpu_seconds`] readings.
pub fn cpu_per_op(cpu: Option<(f64, f64)>, ops: u64) -> Option<f64> {
    cpu.filter(|_| ops > 0)
        .map(|(before, after)| (after - before).max(0.0) * 1e6 / ops as f64)
}

/// (fsyncs per second, records per fsync) between two `(fsyncs, records)` readings
/// `secs` apart.
pub fn sync_rates((s0, r0): (u64, u64), (s1, r1): (u64, u64), secs: f64) -> (f64, f64) {
    let syncs = (s1 - s0) as f64;
    let recs = (r1 - r0) as f64;
    let per_sec = if secs > 0.0 { syncs / secs } else { 0.0 };
    (per_sec, if syncs > 0.0 { recs / syncs } else { 0.0 })
}

/// Runs `op` on `threads` threads over the pool, then restores the pool's size
/// (untimed) if the run moved it by more than 0.5%.
pub fn run_op(
    engine: &dyn Engine,
    name: &str,
    ctx: &Ctx,
    pool: &mut Vec<Entry>,
    op: Op,
    threads: usize,
) -> RunResult {
    let mut parts: Vec<Vec<Entry>> = (0..threads)
        .map(|_| Vec::with_capacity(pool.len() / threads + 16))
        .collect();
    for e in pool.drain(..) {
        parts[e.user as usize % threads].push(e);
    }
    let start_line = Barrier::new(threads + 1);
    let finish_line = Barrier::new(threads + 1);
    let seed = now_ms() ^ ((op as u64) << 32);
    let (outs, sync, cpu) = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(index, local)| {
                let (start_line, finish_line) = (&start_line, &finish_line);
                s.spawn(move || {
                    let part = Part {
                        index,
                        count: threads,
                    };
                    let mut w = engine.worker();
                    start_line.wait();
                    let out = match w.as_mut() {
                        Ok(w) => measure(
                            w.as_mut(),
                            ctx,
                            op,
                            part,
                            local,
                            seed.wrapping_add(index as u64 * 7919),
                        ),
                        Err(e) => {
                            note_err(name, e);
                            let now = Instant::now();
                            ThreadOut {
                                initial: local.len(),
                                local,
                                drift: Drift::default(),
                                hist: Hist::new(),
                                ops: 0,
                                failed: 1,
                                start: now,
                                end: now,
                                capped: false,
                            }
                        }
                    };
                    finish_line.wait();
                    out
                })
            })
            .collect();
        let before = engine.sync_stats();
        start_line.wait();
        let cpu_before = cpu_seconds();
        let compact_before = compactor_seconds();
        finish_line.wait();
        let cpu_after = cpu_seconds();
        let compact_after = compactor_seconds();
        let after = engine.sync_stats();
        let outs: Vec<ThreadOut> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect();
        let cpu = (cpu_before.zip(cpu_after), compact_before.zip(compact_after));
        (outs, before.zip(after), cpu)
    });
    let (cpu, compact) = cpu;
    // What the run set going in the background is its cost too: the writer's queue and
    // a compaction its writes started run on after the last thread stops, and would
    // otherwise land in the next run, or (after the rebalancing below) be the
    // rebalancing's. The rate and the cores busy stay those of the measured span.
    engine.settle();
    let settled =
        |span: Option<(f64, f64)>, now: Option<f64>| span.zip(now).map(|((a, _), b)| (a, b));
    let charged = (
        settled(cpu, cpu_seconds()),
        settled(compact, compactor_seconds()),
    );

    let mut hist = Hist::new();
    let (mut ops, mut failed, mut capped) = (0, 0, false);
    let first = outs.iter().map(|o| o.start).min();
    let last = outs.iter().map(|o| o.end).max();
    let secs = match (first, last) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let mut to_create = Vec::new();
    let mut to_end = Vec::new();
    for mut o in outs {
        hist.merge(&o.hist);
        ops += o.ops;
        failed += o.failed;
        capped |= o.capped;
        let net = o.drift.removed.len() as i64 - o.drift.appended as i64;
        let tolerance = (o.initial / 200).max(1) as i64;
        if net > tolerance {
            to_create.extend(o.drift.removed.iter().take(net as usize));
        } else if -net > tolerance {
            let keep = o.local.len().saturating_sub((-net) as usize);
            to_end.extend(o.local.drain(keep..));
        }
        pool.append(&mut o.local);
    }
    if !to_create.is_empty() || !to_end.is_empty() {
        let t = Instant::now();
        pool.extend(engine.bulk_create(ctx, &to_create));
        engine.bulk_end(ctx, &to_end);
        engine.settle();
        ctx.progress(format_args!(
            "  (rebalanced: +{} −{} sessions in {:.1} s)",
            to_create.len(),
            to_end.len(),
            t.elapsed().as_secs_f64()
        ));
    }
    let sync = sync.map(|(before, after)| sync_rates(before, after, secs));
    let r = RunResult {
        engine: name.to_owned(),
        op,
        threads,
        ops,
        failed,
        secs,
        hist,
        capped,
        sync,
        cpu_us: cpu_per_op(charged.0, ops),
        compact_us: cpu_per_op(charged.1, ops).filter(|&us| us > 0.0),
        cores: cores_busy(cpu, secs),
    };
    ctx.progress(format_args!(
        "{name:<22} {:<16} ×{threads:<2} {:>12} ops/s  p50 {:>8}  p99 {:>8}  cpu {}{}{}{}",
        op.name(),
        fmt_count(r.ops_per_sec()),
        fmt_ns(r.hist.percentile(0.50)),
        fmt_ns(r.hist.percentile(0.99)),
        fmt_cpu(r.cpu_us),
        r.compact_us
            .map_or_else(String::new, |us| format!(" (compaction {us:.2} µs)")),
        if capped { "  (pool cap)" } else { "" },
        if failed > 0 {
            format!("  ({failed} failed)")
        } else {
            String::new()
        },
    ));
    r
}
