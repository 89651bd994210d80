//! The sections of a run, one per engine family (`SESSIONDB_BENCH_ONLY` names them):
//! each preloads its engines and runs every operation at every thread count
//! ([`bench_engine`]), the durable ones also a create run under many writers; the
//! interleaved group-commit comparison (section `group`), every durable engine open at
//! once, in rounds; and `Buffered` against `Memory` in rounds (section `buffered`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use sessiondb::{Durability, NewSession, SessionData};

use crate::engines::hashmap::MapEngine;
use crate::engines::moka::MokaEngine;
#[cfg(feature = "redis")]
use crate::engines::redis::RedisAsyncEngine;
use crate::engines::redis::{AOF_ALWAYS, NO_PERSISTENCE, RedisEngine};
#[cfg(feature = "redis")]
use crate::engines::sessiondb::SdbRedisEngine;
use crate::engines::sessiondb::{
    SDB_BUFFERED, SDB_MEMORY, SDB_REDIS, SDB_SYNC, SDB_SYNC_ASYNC, SdbEngine,
};
use crate::engines::sled::SledEngine;
use crate::engines::sqlite::SqliteEngine;
use crate::engines::{Engine, Entry};
use crate::harness::{
    Ctx, OPS, Op, Rng, RunResult, cores_busy, cpu_per_op, env_parse, note_err, payload, run_op,
    sync_rates,
};
use crate::histogram::Hist;
use crate::machine::{PROBE_BYTES, cpu_seconds, raw_fdatasync_rate};
use crate::report::{GroupRounds, Info, MemRow, Report, Round, fmt_count, fmt_ns};

/// sessiondb's writer threads in the many-writers create runs.
pub const GROUP_SESSIONDB_WRITERS: usize = 64;
/// The peers' concurrent clients (threads, each with its own connection) in those runs.
pub const GROUP_PEER_CLIENTS: usize = 50;
/// Runtime worker threads under the async tasks of the interleaved group-commit run.
pub const GROUP_ASYNC_WORKERS: usize = 2;

/// Preloads (unless a pool is handed over) and runs every op at every thread count.
fn bench_engine(
    engine: &dyn Engine,
    mut info: Info,
    ctx: &Ctx,
    pool: Option<Vec<Entry>>,
    report: &mut Report,
) -> Vec<Entry> {
    let mut pool = match pool {
        Some(p) => p,
        None => {
            ctx.progress(format_args!("{}: preloading {} sessions", info.name, ctx.n));
            let t = Instant::now();
            let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
            let p = engine.bulk_create(ctx, &users);
            info.preload = format!("{:.1} s", t.elapsed().as_secs_f64());
            p
        }
    };
    info.sessions = pool.len();
    info.fsync = raw_fdatasync_rate(ctx.disk_probe.path(), 0.5, PROBE_BYTES, false);
    ctx.progress(format_args!(
        "{}: {} sessions, preload {}; raw fdatasync now {}/s",
        info.name,
        pool.len(),
        info.preload,
        fmt_count(info.fsync)
    ));
    for op in OPS {
        for &t in &ctx.threads {
            let r = run_op(engine, &info.name, ctx, &mut pool, op, t);
            report.runs.push(r);
        }
    }
    report.infos.push(info);
    pool
}

fn info(
    name: &str,
    durability: &'static str,
    baseline: &'static str,
    revoke: &'static str,
    listing: &'static str,
) -> Info {
    Info {
        name: name.to_owned(),
        durability,
        baseline,
        sessions: 0,
        preload: String::new(),
        revoke,
        listing,
        fsync: 0.0,
    }
}

pub fn bench_sessiondb(ctx: &Ctx, report: &mut Report) {
    const REVOKE: &str = "`revoke_user` (per-user index)";
    const LIST: &str = "`sessions_of` (per-user index)";
    {
        let e = SdbEngine::memory();
        let i = info(SDB_MEMORY, "none (in process memory)", "—", REVOKE, LIST);
        bench_engine(&e, i, ctx, None, report);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = {
        let e = SdbEngine::open(dir.path(), Durability::default());
        let i = info(
            SDB_BUFFERED,
            "log, fsync every 100 ms (default)",
            "—",
            REVOKE,
            LIST,
        );
        let pool = bench_engine(&e, i, ctx, None, report);
        e.store.flush().expect("flush");
        pool
    };
    let t = Instant::now();
    let e = SdbEngine::open(dir.path(), Durability::Sync);
    let mut i = info(
        SDB_SYNC,
        "log, fsync before ack (group commit)",
        "—",
        REVOKE,
        LIST,
    );
    i.preload = format!(
        "the Buffered store, reopened as Sync in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut pool = bench_engine(&e, i, ctx, Some(pool), report);
    let r = run_op(
        &e,
        SDB_SYNC,
        ctx,
        &mut pool,
        Op::Create,
        GROUP_SESSIONDB_WRITERS,
    );
    report.group.push(r);
}

pub fn bench_memory_peers(ctx: &Ctx, report: &mut Report) {
    if ctx.wants("moka") {
        let e = MokaEngine::new();
        let i = info(
            "moka",
            "none (in process memory)",
            SDB_MEMORY,
            "side index user → tokens, `remove` each",
            "side index, `get` each",
        );
        bench_engine(&e, i, ctx, None, report);
    }
    if ctx.wants("hashmap") {
        let e = MapEngine::new();
        let i = info(
            "HashMap ceiling",
            "none (in process memory)",
            SDB_MEMORY,
            "side index user → tokens, `remove` each",
            "side index, lookup each",
        );
        bench_engine(&e, i, ctx, None, report);
    }
}

pub fn bench_sled(ctx: &Ctx, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = SledEngine::open(dir.path());
    const REVOKE: &str = "scan of prefix `user\\0` in a by-user tree, remove each";
    const LIST: &str = "scan of prefix `user\\0`, `get` each";
    let i = info(
        "sled",
        "default config (flush every 500 ms)",
        SDB_BUFFERED,
        REVOKE,
        LIST,
    );
    let pool = bench_engine(&e, i, ctx, None, report);
    e.flush_each.store(true, Ordering::Relaxed);
    let mut i = info(
        "sled flush/write",
        "`flush()` after every write",
        SDB_SYNC,
        REVOKE,
        LIST,
    );
    i.preload = "the sled store above".to_owned();
    let mut pool = bench_engine(&e, i, ctx, Some(pool), report);
    let r = run_op(
        &e,
        "sled flush/write",
        ctx,
        &mut pool,
        Op::Create,
        GROUP_PEER_CLIENTS,
    );
    report.group.push(r);
}

pub fn bench_sqlite(ctx: &Ctx, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    const REVOKE: &str = "`DELETE … WHERE user = ?` (index on user)";
    const LIST: &str = "`SELECT … WHERE user = ?` (index on user)";
    let pool = {
        let e = SqliteEngine::open(&path, "NORMAL");
        let i = info(
            "SQLite NORMAL",
            "WAL, synchronous=NORMAL",
            SDB_BUFFERED,
            REVOKE,
            LIST,
        );
        bench_engine(&e, i, ctx, None, report)
    };
    let e = SqliteEngine::open(&path, "FULL");
    let mut i = info(
        "SQLite FULL",
        "WAL, synchronous=FULL",
        SDB_SYNC,
        REVOKE,
        LIST,
    );
    i.preload = "the SQLite file above".to_owned();
    let mut pool = bench_engine(&e, i, ctx, Some(pool), report);
    let r = run_op(
        &e,
        "SQLite FULL",
        ctx,
        &mut pool,
        Op::Create,
        GROUP_PEER_CLIENTS,
    );
    report.group.push(r);
}

pub fn bench_redis(ctx: &Ctx, report: &mut Report) {
    const REVOKE: &str = "SET of tokens per user: SMEMBERS + DEL (2 round trips)";
    const LIST: &str = "SMEMBERS + MGET (2 round trips)";
    let variants: [(&str, &[&str], &str, &str); 2] = [
        (
            "Redis",
            NO_PERSISTENCE,
            "none (`--save \"\" --appendonly no`)",
            SDB_MEMORY,
        ),
        (
            "Redis AOF always",
            AOF_ALWAYS,
            "AOF, `appendfsync always`",
            SDB_SYNC,
        ),
    ];
    for (name, args, durability, baseline) in variants {
        let e = match RedisEngine::start(args) {
            Ok(e) => e,
            Err(err) => {
                let line = format!("redis: skipped ({err})");
                eprintln!("{line}");
                report.skipped.push(line);
                return;
            }
        };
        ctx.progress(format_args!(
            "{name}: started redis-server (pid {}, port {})",
            e.pid(),
            e.port()
        ));
        let rss0 = e.server_rss();
        let i = info(name, durability, baseline, REVOKE, LIST);
        let n = ctx.n;
        if name == "Redis" {
            // Server memory right after the preload, before any run adds to it.
            ctx.progress(format_args!("{name}: preloading {n} sessions"));
            let t = Instant::now();
            let users: Vec<u32> = (0..n).map(|i| (i % ctx.users.len()) as u32).collect();
            let pool = e.bulk_create(ctx, &users);
            let mut i = i;
            i.preload = format!("{:.1} s", t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (rss0, e.server_rss()) {
                report.redis_memory.push(MemRow {
                    engine: "Redis (server process, INFO used_memory_rss)".to_owned(),
                    sessions: pool.len(),
                    before: a,
                    after: b,
                });
            }
            bench_engine(&e, i, ctx, Some(pool), report);
            bench_sessiondb_on_redis(&e, ctx, report);
        } else {
            let mut pool = bench_engine(&e, i, ctx, None, report);
            let r = run_op(&e, name, ctx, &mut pool, Op::Create, GROUP_PEER_CLIENTS);
            report.group.push(r);
        }
        ctx.progress(format_args!(
            "{name}: stopping redis-server (pid {})",
            e.pid()
        ));
    }
}

/// sessiondb `Sync` creates from `tasks` async tasks on a tokio runtime of
/// [`GROUP_ASYNC_WORKERS`] threads, as an async server makes them: each write inside
/// `Store::deferred`, its `Commit` awaited, so no thread is blocked per writer. Timed
/// per op from the call to the commit's completion. The sessions it created are ended
/// afterwards, untimed, so every round starts from the same store.
fn run_async_creates(engine: &SdbEngine, ctx: &Ctx, tasks: usize) -> RunResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(GROUP_ASYNC_WORKERS)
        .build()
        .expect("tokio runtime");
    let store = &engine.store;
    // Shared, not copied per task: the timed window starts before the tasks do.
    let users: Arc<[String]> = ctx.users.clone().into();
    let before = engine.sync_stats();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let deadline = start + ctx.run;
    let outs: Vec<(Hist, u64, u64, Vec<Entry>, Instant)> = rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let store = store.clone();
                let users = Arc::clone(&users);
                let profile = payload().profile_a.as_str();
                tokio::spawn(async move {
                    let (mut hist, mut ops, mut failed) = (Hist::new(), 0u64, 0u64);
                    let mut made = Vec::new();
                    let mut rng = Rng(0x9e37_79b9 ^ t as u64);
                    let mut last = Instant::now();
                    while last < deadline {
                        let u = rng.below(users.len());
                        let t0 = Instant::now();
                        let (r, commit) = store.deferred(|s| {
                            let mut data = SessionData::new();
                            data.insert("profile", profile)?;
                            s.create(NewSession::for_user(&users[u]).data(data))
                        });
                        let durable = commit.await;
                        last = Instant::now();
                        hist.record(last - t0);
                        match (r, durable) {
                            (Ok((token, _)), Ok(())) => {
                                ops += 1;
                                made.push(Entry {
                                    token: token.as_string(),
                                    user: u as u32,
                                });
                            }
                            (r, d) => {
                                failed += 1;
                                if let Err(e) = r.map(|_| ()).and(d) {
                                    note_err(SDB_SYNC_ASYNC, e);
                                }
                            }
                        }
                    }
                    (hist, ops, failed, made, last)
                })
            })
            .collect();
        let mut outs = Vec::new();
        for h in handles {
            outs.push(h.await.expect("bench task"));
        }
        outs
    });
    let after = engine.sync_stats();
    let cpu = cpu_before.zip(cpu_seconds());
    let end = outs.iter().map(|o| o.4).max().unwrap_or(start);
    let secs = end.saturating_duration_since(start).as_secs_f64();
    let mut hist = Hist::new();
    let (mut ops, mut failed, mut made) = (0, 0, Vec::new());
    for (h, o, f, mut m, _) in outs {
        hist.merge(&h);
        ops += o;
        failed += f;
        made.append(&mut m);
    }
    let t = Instant::now();
    engine.bulk_end(ctx, &made);
    ctx.progress(format_args!(
        "  (rebalanced: +0 −{} sessions in {:.1} s)",
        made.len(),
        t.elapsed().as_secs_f64()
    ));
    let sync = before
        .zip(after)
        .map(|(before, after)| sync_rates(before, after, secs));
    let r = RunResult {
        engine: SDB_SYNC_ASYNC.to_owned(),
        op: Op::Create,
        threads: tasks,
        ops,
        failed,
        secs,
        hist,
        capped: false,
        sync,
        cpu_us: cpu_per_op(cpu, ops),
        compact_us: None,
        cores: cores_busy(cpu, secs),
    };
    ctx.progress(format_args!(
        "{SDB_SYNC_ASYNC:<22} {:<16} ×{tasks:<2} {:>12} ops/s  p50 {:>8}  p99 {:>8} ({GROUP_ASYNC_WORKERS} runtime threads)",
        Op::Create.name(),
        fmt_count(r.ops_per_sec()),
        fmt_ns(r.hist.percentile(0.50)),
        fmt_ns(r.hist.percentile(0.99)),
    ));
    r
}

/// Group commit against the peers' fsync-per-write modes, interleaved: every engine is
/// open at once (fresh, empty stores: the same for all), and each round runs each one's
/// concurrent creates back to back, in an order that rotates per round. On a shared VM
/// the disk's fsync rate swings several-fold within minutes, so the ratio is taken per
/// round, and the median of the rounds is the figure; the per-engine sections' group
/// rows, run minutes apart, move with the disk.
pub fn bench_group_interleaved(ctx: &Ctx, report: &mut Report) {
    let rounds: usize = env_parse("SESSIONDB_BENCH_GROUP_ROUNDS")
        .unwrap_or(5)
        .max(1);
    let sdb_dir = tempfile::tempdir().expect("tempdir");
    let sled_dir = tempfile::tempdir().expect("tempdir");
    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let sdb = SdbEngine::open(sdb_dir.path(), Durability::Sync);
    let async_dir = tempfile::tempdir().expect("tempdir");
    let sdb_async = SdbEngine::open(async_dir.path(), Durability::Sync);
    let sled = SledEngine::open(sled_dir.path());
    sled.flush_each.store(true, Ordering::Relaxed);
    let sqlite = SqliteEngine::open(&sqlite_dir.path().join("sessions.db"), "FULL");
    let redis = match RedisEngine::start(AOF_ALWAYS) {
        Ok(e) => Some(e),
        Err(err) => {
            report
                .skipped
                .push(format!("interleaved group commit: Redis skipped ({err})"));
            None
        }
    };
    let mut engines: Vec<(&str, &dyn Engine, usize)> = vec![
        (SDB_SYNC, &sdb, GROUP_SESSIONDB_WRITERS),
        ("sled flush/write", &sled, GROUP_PEER_CLIENTS),
        ("SQLite FULL", &sqlite, GROUP_PEER_CLIENTS),
    ];
    if let Some(r) = &redis {
        engines.push(("Redis AOF always", r, GROUP_PEER_CLIENTS));
    }
    // A preload: a thread creates at most its share of the pool in one run (the
    // harness's bound on growth). The peers get 256,000 (at 50 clients none comes near
    // using it up in a run; 1,000,000 would add ~25 s of sled and SQLite preloading).
    // sessiondb's two stores get four times as many: its 64 writer threads make
    // ~200,000 creates/s here, and with a 256,000 pool ran out ~1.2 s into a 2 s run.
    // The larger store only makes sessiondb's maps bigger, no help to it.
    let preload = ctx.n.clamp(64_000, 256_000);
    let sdb_preload = 4 * preload;
    let users = |n: usize| -> Vec<u32> { (0..n).map(|i| (i % ctx.users.len()) as u32).collect() };
    let mut pools: Vec<Vec<Entry>> = engines
        .iter()
        .map(|&(name, engine, _)| {
            let n = if name == SDB_SYNC {
                sdb_preload
            } else {
                preload
            };
            ctx.progress(format_args!(
                "interleaved group commit: preloading {name} with {n} sessions"
            ));
            engine.bulk_create(ctx, &users(n))
        })
        .collect();
    ctx.progress(format_args!(
        "interleaved group commit: preloading {SDB_SYNC_ASYNC} with {sdb_preload} sessions"
    ));
    drop(sdb_async.bulk_create(ctx, &users(sdb_preload)));
    // The async run is one more turn in each round, after the engines above.
    let turns = engines.len() + 1;
    let mut runs: Vec<Vec<RunResult>> = (0..turns).map(|_| Vec::new()).collect();
    let mut fsync = Vec::new();
    for round in 0..rounds {
        ctx.progress(format_args!(
            "interleaved group commit: round {}",
            round + 1
        ));
        fsync.push(raw_fdatasync_rate(
            ctx.disk_probe.path(),
            0.5,
            PROBE_BYTES,
            false,
        ));
        for k in 0..turns {
            let i = (k + round) % turns;
            let r = match engines.get(i) {
                Some(&(name, engine, threads)) => {
                    run_op(engine, name, ctx, &mut pools[i], Op::Create, threads)
                }
                None => run_async_creates(&sdb_async, ctx, GROUP_SESSIONDB_WRITERS),
            };
            runs[i].push(r);
        }
    }
    let names = engines
        .iter()
        .map(|&(name, _, threads)| (name, threads))
        .chain([(SDB_SYNC_ASYNC, GROUP_SESSIONDB_WRITERS)]);
    report.group_rounds = names
        .zip(runs)
        .map(|((name, threads), runs)| GroupRounds {
            engine: name.to_owned(),
            threads,
            ops: runs.iter().map(RunResult::ops_per_sec).collect(),
            sync: runs.iter().filter_map(|r| r.sync).collect(),
        })
        .collect();
    report.group_fsync = fsync;
    report.group_preload = (preload, sdb_preload);
}

/// The writes the `buffered` section compares.
pub const BUFFERED_OPS: [Op; 4] = [Op::Create, Op::Update, Op::Touch, Op::Rotate];

/// The reads the `redis` section's rounds compare: what the targets name.
pub const REDIS_ROUND_OPS: [Op; 3] = [Op::GetHit, Op::GetMiss, Op::SessionsOf];

/// Sessions each engine of the `redis` section's rounds is given for them.
#[cfg(feature = "redis")]
const REDIS_ROUND_SESSIONS: usize = 20_000;

/// Each op of `ops` at each thread count, `rounds` times on both `engines` back to
/// back (which goes first alternates), `engines[0]` the one compared with.
fn run_rounds(
    engines: [(&str, &dyn Engine); 2],
    pools: &mut [Vec<Entry>],
    ops: &[Op],
    rounds: usize,
    label: &str,
    ctx: &Ctx,
) -> Vec<Round> {
    let mut out = Vec::new();
    for &op in ops {
        for &threads in &ctx.threads {
            ctx.progress(format_args!(
                "{label}: {} ×{threads}, {rounds} rounds",
                op.name()
            ));
            for round in 0..rounds {
                let mut pair: [Option<RunResult>; 2] = [None, None];
                for k in 0..2 {
                    let i = (k + round) % 2;
                    let (name, engine) = engines[i];
                    pair[i] = Some(run_op(engine, name, ctx, &mut pools[i], op, threads));
                }
                if let [Some(base), Some(tried)] = pair {
                    out.push(Round {
                        op,
                        threads,
                        base,
                        tried,
                    });
                }
            }
        }
    }
    out
}

/// `Buffered` against `Memory` as a host whose speed moves by a fifth from one minute
/// to the next allows: two stores preloaded alike, and for each of create, update,
/// touch and rotate at each thread count, `SESSIONDB_BENCH_BUFFERED_ROUNDS` rounds in
/// which the two run the same op one after the other (which goes first alternates).
/// The report takes each round's ratios and gives their median: one run of each, as in
/// the `sessiondb` section, lands minutes apart and moves with the host. Each run is
/// charged the writer's and the compactor's work its writes set off, and nothing of the
/// rebalancing after it ([`Engine::settle`]).
pub fn bench_buffered_interleaved(ctx: &Ctx, report: &mut Report) {
    let rounds: usize = env_parse("SESSIONDB_BENCH_BUFFERED_ROUNDS")
        .unwrap_or(5)
        .max(1);
    let memory = SdbEngine::memory();
    let dir = tempfile::tempdir().expect("tempdir");
    let buffered = SdbEngine::open(dir.path(), Durability::default());
    let engines: [(&str, &dyn Engine); 2] = [(SDB_MEMORY, &memory), (SDB_BUFFERED, &buffered)];
    let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
    let mut pools: Vec<Vec<Entry>> = engines
        .iter()
        .map(|&(name, engine)| {
            ctx.progress(format_args!(
                "Buffered against Memory: preloading {name} with {} sessions",
                ctx.n
            ));
            engine.bulk_create(ctx, &users)
        })
        .collect();
    report.buffered_rounds = run_rounds(
        engines,
        &mut pools,
        &BUFFERED_OPS,
        rounds,
        "Buffered against Memory",
        ctx,
    );
}

/// The raw Redis row through the async client (see [`RedisAsyncEngine`]).
#[cfg(feature = "redis")]
const REDIS_ASYNC: &str = "Redis, async client";

/// sessiondb's Redis backend on the same server as the raw "Redis" row (its own key
/// prefix), after the raw commands through the same async client: what moving
/// sessions off the process costs, and what sessiondb adds to a Redis call. Needs
/// `--features redis`.
#[cfg(feature = "redis")]
fn bench_sessiondb_on_redis(raw: &RedisEngine, ctx: &Ctx, report: &mut Report) {
    // The raw commands through the async client sessiondb uses, driven the same way:
    // the row sessiondb on Redis is compared with.
    let raw_async = match RedisAsyncEngine::connect(raw) {
        Ok(e) => {
            let i = info(
                REDIS_ASYNC,
                "none; redis-rs `ConnectionManager`, `block_on` a 2-worker tokio runtime",
                SDB_REDIS,
                "SMEMBERS + DEL (2 round trips)",
                "SMEMBERS + MGET (2 round trips)",
            );
            bench_engine(&e, i, ctx, None, report);
            Some(e)
        }
        Err(err) => {
            report
                .skipped
                .push(format!("{REDIS_ASYNC}: skipped ({err})"));
            None
        }
    };
    let url = format!("redis://127.0.0.1:{}/", raw.port());
    let sdb = match SdbRedisEngine::connect(&url) {
        Ok(e) => {
            let i = info(
                SDB_REDIS,
                "the Redis server above (no persistence); a Lua script per change, \
                 reads pipelined",
                SDB_MEMORY,
                "`revoke_user`: one script over the user's sorted set",
                "`sessions_of`: one read-only script (the pruning one if needed)",
            );
            // The server's growth over our preload (its other sessions, the raw rows',
            // are already there): what a session costs in Redis with the user index.
            ctx.progress(format_args!("{SDB_REDIS}: preloading {} sessions", ctx.n));
            let rss0 = raw.server_rss();
            let t = Instant::now();
            let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
            let pool = e.bulk_create(ctx, &users);
            let mut i = i;
            i.preload = format!("{:.1} s", t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (rss0, raw.server_rss()) {
                report.redis_memory.push(MemRow {
                    engine: format!(
                        "{SDB_REDIS} (growth of the same server, INFO used_memory_rss)"
                    ),
                    sessions: pool.len(),
                    before: a,
                    after: b,
                });
            }
            bench_engine(&e, i, ctx, Some(pool), report);
            Some(e)
        }
        Err(err) => {
            let line = format!("{SDB_REDIS}: skipped ({err})");
            eprintln!("{line}");
            report.skipped.push(line);
            None
        }
    };
    if let (Some(raw_async), Some(sdb)) = (&raw_async, &sdb) {
        redis_rounds(raw_async, sdb, ctx, report);
    }
}

/// The reads of [`REDIS_ROUND_OPS`] on the raw async client and on sessiondb on Redis,
/// back to back at each thread count, `SESSIONDB_BENCH_REDIS_ROUNDS` rounds (which goes
/// first alternates): the two rows above run about a minute apart, and on a VM a minute
/// moves a loopback round trip by more than the gap being measured.
#[cfg(feature = "redis")]
fn redis_rounds(
    raw_async: &RedisAsyncEngine<'_>,
    sdb: &SdbRedisEngine,
    ctx: &Ctx,
    report: &mut Report,
) {
    let rounds: usize = env_parse("SESSIONDB_BENCH_REDIS_ROUNDS")
        .unwrap_or(5)
        .max(1);
    let engines: [(&str, &dyn Engine); 2] = [(REDIS_ASYNC, raw_async), (SDB_REDIS, sdb)];
    let m = ctx.n.clamp(1, REDIS_ROUND_SESSIONS);
    let users: Vec<u32> = (0..m).map(|i| (i % ctx.users.len()) as u32).collect();
    let mut pools: Vec<Vec<Entry>> = engines
        .iter()
        .map(|&(name, engine)| {
            ctx.progress(format_args!("{name}: {m} sessions for the rounds"));
            engine.bulk_create(ctx, &users)
        })
        .collect();
    report.redis_rounds = run_rounds(
        engines,
        &mut pools,
        &REDIS_ROUND_OPS,
        rounds,
        "Redis rounds",
        ctx,
    );
}

#[cfg(not(feature = "redis"))]
fn bench_sessiondb_on_redis(_raw: &RedisEngine, _ctx: &Ctx, report: &mut Report) {
    report.skipped.push(format!(
        "{SDB_REDIS}: skipped (run with `--features redis`)"
    ));
}
