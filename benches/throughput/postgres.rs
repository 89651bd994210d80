//! The "sessiondb on PostgreSQL" section (`--features postgres`; `SESSIONDB_BENCH_ONLY`
//! name `postgres`): sessiondb's `PostgresStore` beside the raw statements doing the
//! same work and tower-sessions' sqlx store doing what it can of it (get, create,
//! update, end), on one PostgreSQL server the bench starts, with 1 and 50 clients.
//!
//! All three engines are async clients, so the clients here are tokio tasks on a runtime of
//! [`WORKERS`] threads (as an async server calls them), not the harness's threads:
//! [`run_pg_op`] is [`crate::harness::run_op`]'s loop for tasks (the same ops, the same
//! split of the sessions among clients, the same caps and rebalancing). Each engine in
//! turn: preload (untimed, through a second pool with `synchronous_commit=off`), then
//! every op of [`PG_OPS`] it has ([`PgEngine::lacks`]) at 1 and 50 clients, the reads
//! first ([`RUN_ORDER`]), then it is dropped, so each runs alone on the server.
//!
//! It runs after the `SCHED_IDLE` spinner threads have stopped (see
//! [`crate::machine::Spinners`]): beside them, on the project's 2-core VM, every
//! one-client write took ~4 ms at p50 (one 250 Hz scheduler tick), the raw `INSERT`
//! (0.18 ms without them) as much as sessiondb's create (0.39 ms without), and
//! pgbench's one-client `INSERT` fell from ~7,800 to ~2,200 transactions a second
//! beside two busy `SCHED_IDLE` loops, while `pg_test_fsync`'s fdatasync rate did not
//! move.
//!
//! tower-sessions' sqlx store: its newest release (0.15.0) implements tower-sessions-core
//! 0.14's trait, not the 0.15 this workspace uses; it is built next to 0.14 and called
//! through 0.14's trait (`crate::engines::tower_sqlx`, whose [`VERSIONS`] the section
//! prints).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engines::Entry;
use crate::engines::postgres::{
    POOL, PgEngine, PostgresServer, RAW_POSTGRES, RAW_STATEMENTS, RawPostgres, SDB_POSTGRES,
    SdbPostgres, bulk_url, psql,
};
use crate::engines::tower_sqlx::{SCHEMA as TOWER_SCHEMA, TOWER_SQLX, TowerSqlx, VERSIONS};
use crate::harness::{
    Ctx, Op, Part, Rng, RunResult, SESSIONS_PER_USER, cores_busy, cpu_per_op, env_parse, now_ms,
};
use crate::histogram::Hist;
use crate::machine::{cpu_seconds, tree_cpu_seconds};
use crate::report::{Report, fmt_count, fmt_cpu, fmt_ns};

/// Concurrent clients (tokio tasks) every op runs with.
pub const CLIENTS: [usize; 2] = [1, 50];
/// The runtime's worker threads: one per core of the project's 2-core VM, as in the
/// async group-commit run.
const WORKERS: usize = 2;
/// Sessions preloaded into each engine (`SESSIONDB_BENCH_PG_SESSIONS`, at most
/// `SESSIONDB_BENCH_SESSIONS`): sessiondb creates a few thousand a second here, so the
/// million of the other sections would take minutes.
const DEFAULT_SESSIONS: usize = 20_000;
/// Tasks for untimed bulk work (preload, rebalancing).
const BULK_TASKS: usize = 50;
/// sessiondb's default touch interval: a read of a session not seen for this long
/// also writes its `last_seen`.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// The ops of this section, in the table's order.
pub const PG_OPS: [Op; 7] = [
    Op::GetHit,
    Op::Create,
    Op::Update,
    Op::Rotate,
    Op::RevokeUser,
    Op::SessionsOf,
    Op::Mixed,
];

/// The order they run in: the reads first, right after the preload, so that they end
/// within sessiondb's touch interval of every session's creation (no read is due a
/// touch, a write, whatever the disk's speed), and on a table no run has updated yet.
const RUN_ORDER: [Op; 7] = [
    Op::GetHit,
    Op::SessionsOf,
    Op::Mixed,
    Op::Create,
    Op::Update,
    Op::Rotate,
    Op::RevokeUser,
];

/// What every run of the section shares.
struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    ctx: &'a Ctx,
    /// The users of the preloaded sessions (the first of `ctx.users`).
    users: Arc<[String]>,
    /// The postmaster, whose process tree's CPU time is the server's.
    server_pid: u32,
    url: String,
}

/// One run, with the server's CPU time per op.
struct PgRun {
    r: RunResult,
    server_us: Option<f64>,
}

/// An op an engine does not have (not run): the engine, the op, why.
type NotRun = (&'static str, Op, &'static str);

/// What one task did in a run.
struct TaskOut {
    local: Vec<Entry>,
    initial: usize,
    removed: Vec<u32>,
    appended: usize,
    hist: Hist,
    ops: u64,
    failed: u64,
    start: Instant,
    end: Instant,
    capped: bool,
}

/// One task's loop over `op` until `run` has passed, or until its share of the pool is
/// used up: [`crate::harness`]'s `measure`, awaited.
async fn measure<E: PgEngine>(
    e: Arc<E>,
    users: Arc<[String]>,
    op: Op,
    part: Part,
    mut local: Vec<Entry>,
    seed: u64,
    run: Duration,
) -> TaskOut {
    let mut rng = Rng(seed);
    let n_users = users.len();
    let initial = local.len();
    let floor = initial / 2;
    let max_add = initial.max(1000);
    let (mut removed, mut appended) = (Vec::new(), 0usize);
    let mut capped = false;
    let mut owned: Vec<u32> = Vec::new();
    let mut revoked: Vec<bool> = Vec::new();
    if op == Op::RevokeUser {
        // Users with sessions in this task's share, half of them at most.
        revoked = vec![false; n_users];
        for en in &local {
            if !revoked[en.user as usize] {
                revoked[en.user as usize] = true;
                owned.push(en.user);
            }
        }
        revoked.fill(false);
        rng.shuffle(&mut owned);
        owned.truncate(owned.len().div_ceil(2));
    }
    let start = Instant::now();
    let deadline = start + run;
    let mut hist = Hist::new();
    let (mut ops, mut failed) = (0u64, 0u64);
    let mut last = start;
    macro_rules! timed {
        ($call:expr) => {{
            let t0 = Instant::now();
            let r = $call.await;
            let t1 = Instant::now();
            hist.record(t1 - t0);
            ops += 1;
            last = t1;
            r
        }};
    }
    while last < deadline {
        if local.is_empty() && !matches!(op, Op::Create | Op::SessionsOf) {
            capped = true;
            break;
        }
        // The mix: 90% get, 5% update, 4% create, 1% end.
        let step = match op {
            Op::Mixed => match rng.below(100) {
                0..90 => Op::GetHit,
                90..95 => Op::Update,
                95..99 => Op::Create,
                _ => Op::End,
            },
            o => o,
        };
        match step {
            Op::GetHit => {
                let en = &local[rng.below(local.len())];
                if !timed!(e.get(&en.token)) {
                    failed += 1;
                }
            }
            Op::Create => {
                if op == Op::Create && appended >= max_add {
                    capped = true;
                    break;
                }
                let u = part.user(&mut rng, n_users);
                match timed!(e.create(&users[u as usize])) {
                    Some(token) => {
                        local.push(Entry { token, user: u });
                        appended += 1;
                    }
                    None => failed += 1,
                }
            }
            Op::Update => {
                let en = &local[rng.below(local.len())];
                if !timed!(e.update(&en.token)) {
                    failed += 1;
                }
            }
            Op::Rotate => {
                let i = rng.below(local.len());
                match timed!(e.rotate(&local[i].token)) {
                    Some(t) => local[i].token = t,
                    None => failed += 1,
                }
            }
            Op::SessionsOf => {
                let u = rng.below(n_users);
                black_box(timed!(e.sessions_of(&users[u])));
            }
            Op::End => {
                if local.len() > floor {
                    let en = local.swap_remove(rng.below(local.len()));
                    if !timed!(e.end(&en.token)) {
                        failed += 1;
                    }
                    removed.push(en.user);
                }
            }
            Op::RevokeUser => {
                let Some(u) = owned.pop() else {
                    capped = true;
                    break;
                };
                if timed!(e.revoke_user(&users[u as usize])) == 0 {
                    failed += 1;
                }
                revoked[u as usize] = true;
            }
            Op::GetMiss | Op::Touch | Op::Mixed => unreachable!("not an op of this section"),
        }
    }
    if op == Op::RevokeUser {
        local.retain(|en| {
            let gone = revoked[en.user as usize];
            if gone {
                removed.push(en.user);
            }
            !gone
        });
    }
    TaskOut {
        local,
        initial,
        removed,
        appended,
        hist,
        ops,
        failed,
        start,
        end: last,
        capped,
    }
}

/// Creates a session for each of `which` (user numbers), from [`BULK_TASKS`] tasks.
fn bulk_create<E: PgEngine>(
    rt: &tokio::runtime::Runtime,
    e: &Arc<E>,
    users: &Arc<[String]>,
    which: &[u32],
) -> Vec<Entry> {
    if which.is_empty() {
        return Vec::new();
    }
    let chunk = which.len().div_ceil(BULK_TASKS);
    rt.block_on(async {
        let handles: Vec<_> = which
            .chunks(chunk)
            .map(|part| {
                let (e, users, part) = (Arc::clone(e), Arc::clone(users), part.to_vec());
                tokio::spawn(async move {
                    let mut made = Vec::with_capacity(part.len());
                    for u in part {
                        if let Some(token) = e.create(&users[u as usize]).await {
                            made.push(Entry { token, user: u });
                        }
                    }
                    made
                })
            })
            .collect();
        let mut all = Vec::with_capacity(which.len());
        for h in handles {
            all.extend(h.await.expect("bulk create task"));
        }
        all
    })
}

/// Ends these sessions, from [`BULK_TASKS`] tasks.
fn bulk_end<E: PgEngine>(rt: &tokio::runtime::Runtime, e: &Arc<E>, entries: Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let chunk = entries.len().div_ceil(BULK_TASKS);
    rt.block_on(async {
        let mut entries = entries;
        let mut handles = Vec::new();
        while !entries.is_empty() {
            let part = entries.split_off(entries.len().saturating_sub(chunk));
            let e = Arc::clone(e);
            handles.push(tokio::spawn(async move {
                for en in part {
                    e.end(&en.token).await;
                }
            }));
        }
        for h in handles {
            h.await.expect("bulk end task");
        }
    });
}

/// Runs `op` from `clients` tasks over the pool (each owning the users
/// `u % clients == index`), then restores the pool's size (untimed) if the run moved
/// it by more than 0.5%.
fn run_pg_op<E: PgEngine>(
    b: &Bench,
    e: &Arc<E>,
    bulk: &Arc<E>,
    name: &str,
    pool: &mut Vec<Entry>,
    op: Op,
    clients: usize,
) -> PgRun {
    let (rt, ctx, users) = (b.rt, b.ctx, &b.users);
    let mut parts: Vec<Vec<Entry>> = (0..clients)
        .map(|_| Vec::with_capacity(pool.len() / clients + 16))
        .collect();
    for en in pool.drain(..) {
        parts[en.user as usize % clients].push(en);
    }
    let seed = now_ms() ^ ((op as u64) << 32);
    let cpu_before = cpu_seconds();
    let server_before = tree_cpu_seconds(b.server_pid);
    let outs: Vec<TaskOut> = rt.block_on(async {
        let handles: Vec<_> = parts
            .into_iter()
            .enumerate()
            .map(|(index, local)| {
                tokio::spawn(measure(
                    Arc::clone(e),
                    Arc::clone(users),
                    op,
                    Part {
                        index,
                        count: clients,
                    },
                    local,
                    seed.wrapping_add(index as u64 * 7919),
                    ctx.run,
                ))
            })
            .collect();
        let mut outs = Vec::with_capacity(clients);
        for h in handles {
            outs.push(h.await.expect("bench task"));
        }
        outs
    });
    let cpu = cpu_before.zip(cpu_seconds());
    let server = server_before.zip(tree_cpu_seconds(b.server_pid));
    let secs = match (
        outs.iter().map(|o| o.start).min(),
        outs.iter().map(|o| o.end).max(),
    ) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let mut hist = Hist::new();
    let (mut ops, mut failed, mut capped) = (0, 0, false);
    let (mut to_create, mut to_end) = (Vec::new(), Vec::new());
    for mut o in outs {
        hist.merge(&o.hist);
        ops += o.ops;
        failed += o.failed;
        capped |= o.capped;
        let net = o.removed.len() as i64 - o.appended as i64;
        let tolerance = (o.initial / 200).max(1) as i64;
        if net > tolerance {
            to_create.extend(o.removed.iter().take(net as usize));
        } else if -net > tolerance {
            let keep = o.local.len().saturating_sub((-net) as usize);
            to_end.extend(o.local.drain(keep..));
        }
        pool.append(&mut o.local);
    }
    if !to_create.is_empty() || !to_end.is_empty() {
        let t = Instant::now();
        let (created, ended) = (to_create.len(), to_end.len());
        pool.extend(bulk_create(rt, bulk, users, &to_create));
        bulk_end(rt, bulk, to_end);
        ctx.progress(format_args!(
            "  (rebalanced: +{created} −{ended} sessions in {:.1} s)",
            t.elapsed().as_secs_f64()
        ));
    }
    let r = RunResult {
        engine: name.to_owned(),
        op,
        threads: clients,
        ops,
        failed,
        secs,
        hist,
        capped,
        sync: None,
        cpu_us: cpu_per_op(cpu, ops),
        compact_us: None,
        cores: cores_busy(cpu, secs),
    };
    let server_us = cpu_per_op(server, ops);
    ctx.progress(format_args!(
        "{name:<31} {:<16} ×{clients:<2} {:>9} ops/s  p50 {:>8}  p99 {:>8}  cpu {}  server cpu {}{}{}",
        op.name(),
        fmt_count(r.ops_per_sec()),
        fmt_ns(r.hist.percentile(0.50)),
        fmt_ns(r.hist.percentile(0.99)),
        fmt_cpu(r.cpu_us),
        fmt_cpu(server_us),
        if capped { "  (pool cap)" } else { "" },
        if failed > 0 {
            format!("  ({failed} failed)")
        } else {
            String::new()
        },
    ));
    PgRun { r, server_us }
}

/// One engine's preload (through `bulk`, then `VACUUM ANALYZE` and `CHECKPOINT`) and
/// runs (through `e`) of the ops it has (those it lacks go to `not_run`): the preload's
/// time, and when its last read run ended, measured from the preload's start.
fn bench_pg_engine<E: PgEngine>(
    b: &Bench,
    e: E,
    bulk: E,
    name: &'static str,
    sessions: usize,
    runs: &mut Vec<PgRun>,
    not_run: &mut Vec<NotRun>,
) -> (f64, f64) {
    let (e, bulk) = (Arc::new(e), Arc::new(bulk));
    b.ctx
        .progress(format_args!("{name}: preloading {sessions} sessions"));
    let t = Instant::now();
    let which: Vec<u32> = (0..sessions).map(|i| (i % b.users.len()) as u32).collect();
    let mut pool = bulk_create(b.rt, &bulk, &b.users, &which);
    let preload = t.elapsed().as_secs_f64();
    // Every engine's runs start alike: the planner's statistics taken, the dead rows
    // of the preload gone, its dirty pages written out.
    for sql in ["VACUUM ANALYZE", "CHECKPOINT"] {
        if let Err(e) = psql(&b.url, sql) {
            b.ctx.progress(format_args!("{name}: {sql} failed: {e}"));
        }
    }
    b.ctx.progress(format_args!(
        "{name}: {} sessions in {preload:.1} s; then VACUUM ANALYZE and CHECKPOINT in {:.1} s",
        pool.len(),
        t.elapsed().as_secs_f64() - preload
    ));
    let mut reads_end = 0.0;
    for op in RUN_ORDER {
        if let Some(why) = E::lacks(op) {
            b.ctx
                .progress(format_args!("{name}: {} not run ({why})", op.name()));
            not_run.push((name, op, why));
            continue;
        }
        for clients in CLIENTS {
            runs.push(run_pg_op(b, &e, &bulk, name, &mut pool, op, clients));
        }
        if matches!(op, Op::GetHit | Op::SessionsOf | Op::Mixed) {
            reads_end = t.elapsed().as_secs_f64();
        }
    }
    (preload, reads_end)
}

pub fn bench_postgres(ctx: &Ctx, report: &mut Report) {
    let skip = |report: &mut Report, line: String| {
        eprintln!("{line}");
        report.skipped.push(line);
    };
    let server = match PostgresServer::try_start() {
        Ok(s) => s,
        Err(why) => {
            skip(report, format!("{SDB_POSTGRES}: skipped ({why})"));
            return;
        }
    };
    ctx.progress(format_args!(
        "postgres: started a throwaway cluster (pid {}, port {})",
        server.pid(),
        server.port()
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = server.url();
    let sessions: usize = env_parse("SESSIONDB_BENCH_PG_SESSIONS")
        .unwrap_or(DEFAULT_SESSIONS)
        .min(ctx.n)
        .max(SESSIONS_PER_USER);
    let users: Arc<[String]> = ctx.users[..(sessions / SESSIONS_PER_USER).min(ctx.users.len())]
        .to_vec()
        .into();
    let settings = server
        .psql(
            "SELECT current_setting('server_version') || ', synchronous_commit=' || \
             current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync') \
             || ', shared_buffers=' || current_setting('shared_buffers')",
        )
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("(settings unknown: {e})"));
    let b = Bench {
        rt: &rt,
        ctx,
        users,
        server_pid: server.pid(),
        url: url.clone(),
    };
    let mut runs = Vec::new();
    let mut not_run = Vec::new();
    let mut legend = Vec::new();
    let bulk = bulk_url(&url);
    let sdb = rt.block_on(async {
        let e = SdbPostgres::connect(&url, false).await?;
        Ok::<_, String>((e, SdbPostgres::connect(&bulk, true).await?))
    });
    match sdb {
        Ok((e, bulk)) => {
            let (preload, span) =
                bench_pg_engine(&b, e, bulk, SDB_POSTGRES, sessions, &mut runs, &mut not_run);
            let touch = if span < TOUCH_INTERVAL.as_secs_f64() {
                format!(
                    "the reads (get-hit, sessions-of-user, mixed; run first) ended {span:.0} s \
                     after its preload began, within the {} s touch interval: no get was \
                     due a touch (a write)",
                    TOUCH_INTERVAL.as_secs()
                )
            } else {
                format!(
                    "the reads (get-hit, sessions-of-user, mixed; run first) ended {span:.0} s \
                     after its preload began, past the {} s touch interval: late gets may \
                     each have written a touch",
                    TOUCH_INTERVAL.as_secs()
                )
            };
            legend.push(format!(
                "| {SDB_POSTGRES} | `PostgresStore`, `Options::default()`, \
                 `PostgresOptions::default()` (pool of {POOL}); a write is one transaction \
                 that locks, checks and writes its rows and an event; {touch} | {preload:.1} s |"
            ));
        }
        Err(why) => skip(report, format!("{SDB_POSTGRES}: skipped ({why})")),
    }
    let raw = rt.block_on(async {
        let e = RawPostgres::connect(&url).await?;
        e.create_table().await?;
        Ok::<_, String>((e, RawPostgres::connect(&bulk).await?))
    });
    match raw {
        Ok((e, bulk)) => {
            let (preload, _) =
                bench_pg_engine(&b, e, bulk, RAW_POSTGRES, sessions, &mut runs, &mut not_run);
            let statements = RAW_STATEMENTS
                .iter()
                .map(|(op, sql)| format!("{op}: `{sql}`"))
                .collect::<Vec<_>>()
                .join("; ");
            legend.push(format!(
                "| {RAW_POSTGRES} | deadpool pool of {POOL}, one prepared statement per op, \
                 autocommit: {statements} | {preload:.1} s |"
            ));
        }
        Err(why) => skip(report, format!("{RAW_POSTGRES}: skipped ({why})")),
    }
    ctx.progress(format_args!("{TOWER_SQLX}: {VERSIONS}"));
    let tower = rt.block_on(async {
        Ok::<_, String>((
            TowerSqlx::connect(&url).await?,
            TowerSqlx::connect(&bulk).await?,
        ))
    });
    match tower {
        Ok((e, bulk)) => {
            let (preload, _) =
                bench_pg_engine(&b, e, bulk, TOWER_SQLX, sessions, &mut runs, &mut not_run);
            legend.push(format!(
                "| {TOWER_SQLX} | `PostgresStore::new(pool).with_schema_name(\"{TOWER_SCHEMA}\")`, \
                 `migrate()`, called through tower-sessions-core 0.14's `SessionStore`; a sqlx \
                 `PgPool` of {POOL} (`test_before_acquire(false)`: sqlx's default pings each \
                 connection it hands out, the other pools do not); a record is a row (id \
                 text, the whole record in MessagePack, expiry), no user: get `load` (one \
                 `SELECT`), create `create` (a transaction: `SELECT exists(…)` for a fresh \
                 id, then an upsert), update `save` of the existing record with new data \
                 (one upsert, `INSERT … ON CONFLICT (id) DO UPDATE`), end (in mixed) \
                 `delete`; rotate, revoke-user and sessions-of-user are not run (below) | \
                 {preload:.1} s |"
            ));
        }
        Err(why) => skip(report, format!("{TOWER_SQLX}: skipped ({why})")),
    }
    let n_users = b.users.len();
    drop(b);
    drop(rt);
    ctx.progress(format_args!(
        "postgres: stopping the cluster (pid {})",
        server.pid()
    ));
    drop(server);
    report.postgres = table(ctx, &settings, sessions, n_users, &legend, &runs, &not_run);
}

/// The section's markdown: the setup, the engines, and ops/s, latency and CPU per op
/// at each client count, with sessiondb ÷ each of the others (the raw statements,
/// tower-sessions' sqlx store); n/a, and why, for an op an engine does not have.
fn table(
    ctx: &Ctx,
    settings: &str,
    sessions: usize,
    users: usize,
    legend: &[String],
    runs: &[PgRun],
    not_run: &[NotRun],
) -> Vec<String> {
    let mut o = vec![
        format!(
            "PostgreSQL {settings} (`max_connections=300`), on loopback, started by the \
             bench (`initdb` into a temporary directory), one server for every row. Each \
             engine alone on it in turn: {} sessions preloaded over {} users (~{} each), \
             ~200 B of data each (untimed, through a second pool whose connections set \
             `synchronous_commit=off`, as is the rebalancing after a run), then `VACUUM \
             ANALYZE` and `CHECKPOINT`; {:.1} s per run, the reads first; the clients are \
             tokio tasks on a {WORKERS}-thread runtime. `sdb ÷ peer` = sessiondb's ops/s ÷ the peer's (below \
             1: sessiondb is slower). CPU/op: this process's CPU time (the client); server \
             CPU/op: the postmaster's and its backends'. † = the run stopped early when its \
             share of sessions ran out (the pool is restored untimed after each run). Run \
             with the spinner threads stopped: beside them one client's write took ~4 ms.\n",
            fmt_count(sessions as f64),
            fmt_count(users as f64),
            SESSIONS_PER_USER,
            ctx.run.as_secs_f64()
        ),
        "| engine | what it runs | preload |".to_owned(),
        "|---|---|---:|".to_owned(),
    ];
    o.extend(legend.iter().cloned());
    o.push(String::new());
    o.push(format!("{VERSIONS}.\n"));
    let mut head = "| op | engine |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for c in CLIENTS {
        head.push_str(&format!(
            " ops/s ×{c} | p50 / p99 ×{c} | CPU/op ×{c} | server CPU/op ×{c} | sdb ÷ peer ×{c} |"
        ));
        rule.push_str("---:|---:|---:|---:|---:|");
    }
    o.push(head);
    o.push(rule);
    let find = |engine: &str, op: Op, c: usize| {
        runs.iter()
            .find(|p| p.r.engine == engine && p.r.op == op && p.r.threads == c)
    };
    for op in PG_OPS {
        for engine in [SDB_POSTGRES, RAW_POSTGRES, TOWER_SQLX] {
            if !runs.iter().any(|p| p.r.engine == engine) {
                continue;
            }
            let mut row = format!("| {} | {engine} |", op.name());
            if let Some((_, _, why)) = not_run.iter().find(|n| n.0 == engine && n.1 == op) {
                row.push_str(&format!(" n/a: {why} | — | — | — | — |"));
                row.push_str(&" n/a | — | — | — | — |".repeat(CLIENTS.len() - 1));
                o.push(row);
                continue;
            }
            for c in CLIENTS {
                let Some(p) = find(engine, op, c) else {
                    row.push_str(" — | — | — | — | — |");
                    continue;
                };
                let r = &p.r;
                let ratio = match find(SDB_POSTGRES, op, c) {
                    Some(s) if engine != SDB_POSTGRES && r.ops_per_sec() > 0.0 => {
                        format!("{:.2}", s.r.ops_per_sec() / r.ops_per_sec())
                    }
                    _ => "—".to_owned(),
                };
                let failed = if r.failed > 0 {
                    format!(
                        " ({:.1}% failed)",
                        100.0 * r.failed as f64 / r.ops.max(1) as f64
                    )
                } else {
                    String::new()
                };
                row.push_str(&format!(
                    " {}{}{} | {} / {} | {} | {} | {} |",
                    fmt_count(r.ops_per_sec()),
                    if r.capped { " †" } else { "" },
                    failed,
                    fmt_ns(r.hist.percentile(0.50)),
                    fmt_ns(r.hist.percentile(0.99)),
                    fmt_cpu(r.cpu_us),
                    fmt_cpu(p.server_us),
                    ratio
                ));
            }
            o.push(row);
        }
    }
    o
}
