//! The report: what a run measured ([`Report`]) and its markdown tables on stdout
//! (engines, throughput and latency, group commit, resident memory, recovery), with
//! the number formats they use.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::engines::sessiondb::{SDB_BUFFERED, SDB_MEMORY, SDB_REDIS, SDB_SYNC, SDB_SYNC_ASYNC};
use crate::harness::{CHILD_ENV, Ctx, OPS, Op, RunResult, SESSIONS_PER_USER};
use crate::machine::{command_line, machine_line};
use crate::sections::{GROUP_ASYNC_WORKERS, GROUP_PEER_CLIENTS, GROUP_SESSIONDB_WRITERS};

/// What the legend table says about an engine.
pub struct Info {
    pub name: String,
    pub durability: &'static str,
    pub baseline: &'static str,
    pub sessions: usize,
    pub preload: String,
    pub revoke: &'static str,
    pub listing: &'static str,
    /// The disk's raw fdatasync rate just before this engine's runs.
    pub fsync: f64,
}

/// One engine's create throughput in each round of the interleaved group-commit run.
pub struct GroupRounds {
    pub engine: String,
    pub threads: usize,
    pub ops: Vec<f64>,
    /// (fsyncs per second, records per fsync) per round, for engines that count them.
    pub sync: Vec<(f64, f64)>,
}

/// One round of an interleaved comparison: the same op at the same thread count, run on
/// the engine compared with (`base`: `Memory`, or the raw Redis client) and on the one
/// measured (`tried`: `Buffered`, or sessiondb on Redis) back to back.
pub struct Round {
    pub op: Op,
    pub threads: usize,
    pub base: RunResult,
    pub tried: RunResult,
}

/// The median of `v` with its range, as "1.23 (1.01–1.45)"; "—" for none.
fn median_range(v: Vec<f64>) -> String {
    if v.is_empty() {
        return "—".to_owned();
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    format!("{:.2} ({lo:.2}–{hi:.2})", median(v))
}

/// Each round's `f` for `op` at `threads`.
fn of_rounds(
    rounds: &[Round],
    op: Op,
    threads: usize,
    f: &dyn Fn(&Round) -> Option<f64>,
) -> Vec<f64> {
    rounds
        .iter()
        .filter(|r| r.op == op && r.threads == threads)
        .filter_map(f)
        .collect()
}

/// How many rounds were run (of the first op, at the first thread count).
fn round_count(rounds: &[Round], ctx: &Ctx) -> usize {
    rounds
        .iter()
        .filter(|r| r.op == rounds[0].op && r.threads == ctx.threads[0])
        .count()
}

/// `tried`'s CPU per op ÷ `base`'s, less `less` µs per op of `tried`'s.
fn cpu_ratio(r: &Round, less: f64) -> Option<f64> {
    Some((r.tried.cpu_us? - less) / r.base.cpu_us.filter(|&m| m > 0.0)?)
}

/// `tried`'s ops/s ÷ `base`'s.
fn rate_ratio(r: &Round) -> Option<f64> {
    let b = r.base.ops_per_sec();
    (b > 0.0).then(|| r.tried.ops_per_sec() / b)
}

/// The median (the upper one of an even count); 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Everything a run measured, printed at the end.
#[derive(Default)]
pub struct Report {
    pub infos: Vec<Info>,
    pub runs: Vec<RunResult>,
    pub group: Vec<RunResult>,
    pub group_rounds: Vec<GroupRounds>,
    pub buffered_rounds: Vec<Round>,
    /// The `redis` section's rounds: the raw async client against sessiondb on Redis.
    pub redis_rounds: Vec<Round>,
    /// Raw fdatasync rate (4 KiB appends) at the start of each interleaved round.
    pub group_fsync: Vec<f64>,
    /// Sessions preloaded into each peer, and into each sessiondb store.
    pub group_preload: (usize, usize),
    pub skipped: Vec<String>,
    pub memory: Vec<MemRow>,
    pub recovery: Vec<(String, String)>,
    pub fsync_rate: f64,
    pub fsync_in_place: f64,
    pub fsync_end: f64,
    pub spinners: String,
    pub redis_memory: Vec<MemRow>,
    pub timer_ns: f64,
    /// The memory budget section's lines (markdown).
    pub budget: Vec<String>,
    /// The "sessiondb on PostgreSQL" section's lines (markdown; `--features postgres`).
    pub postgres: Vec<String>,
}

impl Report {
    /// The run of `op` by `engine` on `threads` threads, if it ran.
    pub fn run(&self, engine: &str, op: Op, threads: usize) -> Option<&RunResult> {
        self.runs
            .iter()
            .find(|r| r.engine == engine && r.op == op && r.threads == threads)
    }
}

/// One engine's resident memory before and after its preload.
pub struct MemRow {
    pub engine: String,
    pub sessions: usize,
    pub before: u64,
    pub after: u64,
}

pub fn fmt_count(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn fmt_ns(ns: u64) -> String {
    let x = ns as f64;
    if x < 1e3 {
        format!("{ns} ns")
    } else if x < 1e6 {
        format!("{:.1} µs", x / 1e3)
    } else if x < 1e9 {
        format!("{:.2} ms", x / 1e6)
    } else {
        format!("{:.2} s", x / 1e9)
    }
}

/// CPU µs per op, to three significant figures; "—" unmeasured.
pub fn fmt_cpu(us: Option<f64>) -> String {
    match us {
        None => "—".to_owned(),
        Some(x) if x < 10.0 => format!("{x:.2} µs"),
        Some(x) if x < 100.0 => format!("{x:.1} µs"),
        Some(x) => format!("{x:.0} µs"),
    }
}

pub fn fmt_bytes(b: u64) -> String {
    let x = b as f64;
    if x < 1e6 {
        format!("{:.1} kB", x / 1e3)
    } else if x < 1e9 {
        format!("{:.1} MB", x / 1e6)
    } else {
        format!("{:.2} GB", x / 1e9)
    }
}

pub fn print_report(ctx: &Ctx, report: &Report) {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "\n# sessiondb throughput: side by side with its peers\n");
    let _ = writeln!(o, "- machine: {}", machine_line(ctx));
    let _ = writeln!(o, "- command: `{}`", command_line());
    let _ = writeln!(
        o,
        "- workload: {} sessions preloaded over {} users (~{} each), ~200 B of data each \
         (key \"profile\", a 180-character string); {:.1} s per run; threads {:?}",
        fmt_count(ctx.n as f64),
        fmt_count(ctx.users.len() as f64),
        SESSIONS_PER_USER,
        ctx.run.as_secs_f64(),
        ctx.threads
    );
    let _ = writeln!(
        o,
        "- disk: raw fdatasync of 4 KiB appends: {}/s at the start, {}/s at the end; of \
         4 KiB overwrites in a preallocated file: {}/s (1 s loops, same filesystem as every \
         store; each engine's own 0.5 s probe is in the Engines table)",
        fmt_count(report.fsync_rate),
        fmt_count(report.fsync_end),
        fmt_count(report.fsync_in_place)
    );
    let _ = writeln!(
        o,
        "- latency is per op, timed with two `Instant::now()` calls ({:.0} ns per pair, \
         included), bucketed at ~3% resolution",
        report.timer_ns
    );
    let _ = writeln!(
        o,
        "- idle CPUs kept awake by SCHED_IDLE spinner threads: {} (on a VM an idle vCPU \
         takes ~100 µs to wake, which lands on every round trip between threads or \
         processes; the spinners only use CPU time nothing else wants; they are stopped \
         before the PostgreSQL, memory and recovery sections)",
        report.spinners
    );
    for s in &report.skipped {
        let _ = writeln!(o, "- {s}");
    }

    let _ = writeln!(o, "\n## Engines\n");
    let _ = writeln!(
        o,
        "| engine | durability | sessions preloaded | preload | raw fdatasync/s before its runs | ratio column compares with | revoke-user | sessions-of-user |"
    );
    let _ = writeln!(o, "|---|---|---:|---|---:|---|---|---|");
    for i in &report.infos {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i.name,
            i.durability,
            fmt_count(i.sessions as f64),
            i.preload,
            fmt_count(i.fsync),
            i.baseline,
            i.revoke,
            i.listing
        );
    }

    let _ = writeln!(o, "\n## Throughput and latency\n");
    let _ = writeln!(
        o,
        "ops/s over the whole run; p50 / p99 per op; `sdb/peer` = the sessiondb engine of \
         the same durability (see Engines) divided by the peer: above 1 means sessiondb is \
         faster. † = the run stopped early when its share of sessions was used up (end and \
         revoke remove at most half, create adds at most as many as were preloaded); the \
         pool is restored untimed after each run. CPU/op is the process's (`getrusage`), \
         for a sessiondb store with what the run's writes set off in the background (the \
         log writer's queue, a compaction) measured until it ended.\n"
    );
    let mut head = "| op | engine |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for t in &ctx.threads {
        let _ = write!(
            head,
            " ops/s ×{t} | p50 / p99 ×{t} | CPU/op ×{t} | sdb/peer ×{t} |"
        );
        rule.push_str("---:|---:|---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    let find = |engine: &str, op: Op, t: usize| report.run(engine, op, t);
    for op in OPS {
        for i in &report.infos {
            let mut row = format!("| {} | {} |", op.name(), i.name);
            for &t in &ctx.threads {
                match find(&i.name, op, t) {
                    Some(r) => {
                        let ratio = find(i.baseline, op, t)
                            .filter(|_| r.ops_per_sec() > 0.0)
                            .map_or_else(
                                || "—".to_owned(),
                                |b| format!("{:.2}", b.ops_per_sec() / r.ops_per_sec()),
                            );
                        let failed = if r.failed > 0 {
                            format!(
                                " ({:.1}% failed)",
                                100.0 * r.failed as f64 / r.ops.max(1) as f64
                            )
                        } else {
                            String::new()
                        };
                        let _ = write!(
                            row,
                            " {}{}{} | {} / {} | {} | {} |",
                            fmt_count(r.ops_per_sec()),
                            if r.capped { " †" } else { "" },
                            failed,
                            fmt_ns(r.hist.percentile(0.50)),
                            fmt_ns(r.hist.percentile(0.99)),
                            fmt_cpu(r.cpu_us),
                            ratio
                        );
                    }
                    None => row.push_str(" — | — | — | — |"),
                }
            }
            let _ = writeln!(o, "{row}");
        }
    }

    print_scaling(o, ctx, report);
    print_buffered_cost(o, ctx, report);
    print_buffered_rounds(o, ctx, report);
    print_redis_rounds(o, ctx, report);

    let sync_runs: Vec<&RunResult> = report
        .runs
        .iter()
        .chain(report.group.iter())
        .filter(|r| {
            r.engine == SDB_SYNC && !matches!(r.op, Op::GetHit | Op::GetMiss | Op::SessionsOf)
        })
        .collect();
    if !sync_runs.is_empty() {
        let _ = writeln!(o, "\n## sessiondb Sync: group commit\n");
        let _ = writeln!(
            o,
            "From `Store::stats()` (`log_syncs`, `log_records`) over each run (write ops \
             only); the disk does {}/s raw. `create` carries its data (`NewSession::data`): \
             one record, one wait. `touch` is logged but not waited for, even under `Sync` \
             (the peers' durable variants do wait for theirs).\n",
            fmt_count(report.fsync_rate)
        );
        let _ = writeln!(
            o,
            "| op | threads | ops/s | p50 / p99 | fsyncs/s | records per fsync |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for r in sync_runs {
            let (fs, rpf) = r.sync.unwrap_or((0.0, 0.0));
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} / {} | {} | {:.1} |",
                r.op.name(),
                r.threads,
                fmt_count(r.ops_per_sec()),
                fmt_ns(r.hist.percentile(0.50)),
                fmt_ns(r.hist.percentile(0.99)),
                fmt_count(fs),
                rpf
            );
        }
    }

    if !report.group.is_empty() {
        let _ = writeln!(
            o,
            "\n## Durable creates under many concurrent writers, each engine in its own section\n"
        );
        let _ = writeln!(
            o,
            "sessiondb Sync with {GROUP_SESSIONDB_WRITERS} writer threads; the peers with \
             {GROUP_PEER_CLIENTS} concurrent clients (threads, each with its own \
             connection). Raw fdatasync: {}/s.\n",
            fmt_count(report.fsync_rate)
        );
        let _ = writeln!(
            o,
            "| engine | writers | create ops/s | p50 / p99 | fsyncs/s | records per fsync | sdb/peer |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        let sdb = report.group.iter().find(|r| r.engine == SDB_SYNC);
        for r in &report.group {
            let (fs, rpf) = r.sync.map_or_else(
                || ("—".to_owned(), "—".to_owned()),
                |(a, b)| (fmt_count(a), format!("{b:.1}")),
            );
            let ratio = match sdb {
                Some(s) if r.engine != SDB_SYNC && r.ops_per_sec() > 0.0 => {
                    format!("{:.2}", s.ops_per_sec() / r.ops_per_sec())
                }
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} / {} | {} | {} | {} |",
                r.engine,
                r.threads,
                fmt_count(r.ops_per_sec()),
                if r.failed > 0 {
                    format!(" ({} failed)", r.failed)
                } else {
                    String::new()
                },
                fmt_ns(r.hist.percentile(0.50)),
                fmt_ns(r.hist.percentile(0.99)),
                fs,
                rpf,
                ratio
            );
        }
    }

    if let Some(sdb) = report.group_rounds.iter().find(|g| g.engine == SDB_SYNC) {
        let _ = writeln!(
            o,
            "\n## Durable creates under many concurrent writers, interleaved\n"
        );
        let _ = writeln!(
            o,
            "Every engine open at once, each peer preloaded with {} sessions and each \
             sessiondb store with {} (a bigger pool for the fastest writers, so they do \
             not run out of their share before the run ends); {} rounds, \
             each running every engine's creates for {:.1} s back to back, the order \
             rotating per round. \
             sessiondb Sync with {GROUP_SESSIONDB_WRITERS} writer threads, and again with \
             {GROUP_SESSIONDB_WRITERS} async tasks on {GROUP_ASYNC_WORKERS} runtime threads \
             (`Store::deferred`, each commit awaited), the peers with {GROUP_PEER_CLIENTS} \
             clients. sdb/peer and async/peer are the medians of the per-round ratios \
             (min–max). Raw fdatasync (4 KiB appends) at the start of each round: {}.\n",
            fmt_count(report.group_preload.0 as f64),
            fmt_count(report.group_preload.1 as f64),
            sdb.ops.len(),
            ctx.run.as_secs_f64(),
            report
                .group_fsync
                .iter()
                .map(|&f| format!("{}/s", fmt_count(f)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            o,
            "| engine | writers | create ops/s (median of rounds) | fsyncs/s | records per fsync | sdb/peer (min–max) | async/peer (min–max) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        let asynch = report
            .group_rounds
            .iter()
            .find(|g| g.engine == SDB_SYNC_ASYNC);
        let ratio = |ours: &GroupRounds, peer: &GroupRounds| {
            let ratios: Vec<f64> = ours
                .ops
                .iter()
                .zip(&peer.ops)
                .filter(|&(_, &p)| p > 0.0)
                .map(|(&s, &p)| s / p)
                .collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios))
        };
        for g in &report.group_rounds {
            let (fs, rpf) = if g.sync.is_empty() {
                ("—".to_owned(), "—".to_owned())
            } else {
                (
                    fmt_count(median(g.sync.iter().map(|s| s.0).collect())),
                    format!("{:.1}", median(g.sync.iter().map(|s| s.1).collect())),
                )
            };
            let ours = g.engine == SDB_SYNC || g.engine == SDB_SYNC_ASYNC;
            let (vs_sdb, vs_async) = if ours {
                ("—".to_owned(), "—".to_owned())
            } else {
                (
                    ratio(sdb, g),
                    asynch.map_or_else(|| "—".to_owned(), |a| ratio(a, g)),
                )
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {fs} | {rpf} | {vs_sdb} | {vs_async} |",
                g.engine,
                g.threads,
                fmt_count(median(g.ops.clone())),
            );
        }
    }

    if !report.postgres.is_empty() {
        let _ = writeln!(o, "\n## sessiondb on PostgreSQL\n");
        for line in &report.postgres {
            let _ = writeln!(o, "{line}");
        }
    }

    if !report.memory.is_empty() || !report.redis_memory.is_empty() {
        let _ = writeln!(o, "\n## Resident memory\n");
        let _ = writeln!(
            o,
            "Each in-process engine is preloaded on one thread in a child process of its own \
             (this binary, `{CHILD_ENV}`); VmRSS from /proc/self/status before the engine \
             exists and after the preload, tokens discarded as they come. Includes the \
             allocator's overhead and retention (glibc malloc), not just live bytes. Redis is \
             the server process, from `INFO memory`.\n"
        );
        let _ = writeln!(
            o,
            "| engine | sessions | RSS before | RSS after | bytes per session | per 1,000,000 sessions |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for m in report.memory.iter().chain(&report.redis_memory) {
            let per = m.after.saturating_sub(m.before) as f64 / m.sessions.max(1) as f64;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.0} | {} |",
                m.engine,
                fmt_count(m.sessions as f64),
                fmt_bytes(m.before),
                fmt_bytes(m.after),
                per,
                fmt_bytes((per * 1e6) as u64)
            );
        }
    }

    if !report.budget.is_empty() {
        let _ = writeln!(o, "\n## The memory budget\n");
        for line in &report.budget {
            let _ = writeln!(o, "{line}");
        }
    }

    if !report.recovery.is_empty() {
        let _ = writeln!(o, "\n## sessiondb recovery and compaction\n");
        let _ = writeln!(
            o,
            "A log store of {} sessions written under `Buffered` with auto-compaction off \
             (so the log holds one create record, with its data, per session), flushed and closed.\n",
            fmt_count(ctx.n as f64)
        );
        let _ = writeln!(o, "| step | result |");
        let _ = writeln!(o, "|---|---|");
        for (k, v) in &report.recovery {
            let _ = writeln!(o, "| {k} | {v} |");
        }
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(out.as_bytes());
    let _ = lock.flush();
}

/// What the default durability costs against memory, per write op and thread count:
/// CPU per op (and the compactor's part of it) and the rate.
fn print_buffered_cost(o: &mut String, ctx: &Ctx, report: &Report) {
    let find = |engine: &str, op: Op, t: usize| report.run(engine, op, t);
    if !OPS.iter().any(|&op| find(SDB_BUFFERED, op, 1).is_some()) {
        return;
    }
    let _ = writeln!(o, "\n## The default durability against memory\n");
    let _ = writeln!(
        o,
        "`{SDB_BUFFERED}` ÷ `{SDB_MEMORY}`, same run: CPU per op (the whole process, \
         writer and compactor threads included), the same without the compactor's part \
         (rewriting the log: its share follows the log's growth policy, \
         `Options::compaction`), and ops/s.\n"
    );
    let mut head = "| op |".to_owned();
    let mut rule = "|---|".to_owned();
    for t in &ctx.threads {
        let _ = write!(
            head,
            " CPU/op ×{t} (compaction) | CPU ÷ Memory ×{t} | less compaction ×{t} | rate ÷ Memory ×{t} |"
        );
        rule.push_str("---:|---:|---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".to_owned(),
    };
    for op in [
        Op::Create,
        Op::Update,
        Op::Touch,
        Op::Rotate,
        Op::End,
        Op::Mixed,
    ] {
        let mut row = format!("| {} |", op.name());
        for &t in &ctx.threads {
            let (Some(b), Some(m)) = (find(SDB_BUFFERED, op, t), find(SDB_MEMORY, op, t)) else {
                row.push_str(" — | — | — | — |");
                continue;
            };
            let compact = b.compact_us.unwrap_or(0.0);
            let _ = write!(
                row,
                " {} ({compact:.2} µs) | {} | {} | {} |",
                fmt_cpu(b.cpu_us),
                ratio(b.cpu_us, m.cpu_us),
                ratio(b.cpu_us.map(|c| c - compact), m.cpu_us),
                ratio(Some(b.ops_per_sec()), Some(m.ops_per_sec())),
            );
        }
        let _ = writeln!(o, "{row}");
    }
}

/// The `buffered` section: per write op and thread count, the medians over the rounds
/// of each round's `Buffered` ÷ `Memory` (CPU per op, the same less the compactor's
/// part, ops/s), with their range.
fn print_buffered_rounds(o: &mut String, ctx: &Ctx, report: &Report) {
    let rounds = &report.buffered_rounds;
    if rounds.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## The default durability against memory, in rounds\n");
    let _ = writeln!(
        o,
        "`{SDB_BUFFERED}` ÷ `{SDB_MEMORY}`, two stores preloaded alike taking turns at the \
         same op, {} rounds (which goes first alternates): the median of the rounds' \
         ratios, and their range. CPU per op is the whole process's, with what a run's \
         writes set off in the background (the writer's queue, a compaction; waited for \
         after it) charged to that run; \"less compaction\" takes out the compactor \
         threads' part. Section `buffered`; \
         `SESSIONDB_BENCH_BUFFERED_ROUNDS` sets the rounds.\n",
        round_count(rounds, ctx)
    );
    let mut head = "| op |".to_owned();
    let mut rule = "|---|".to_owned();
    for t in &ctx.threads {
        let _ = write!(
            head,
            " CPU ÷ Memory ×{t} | less compaction ×{t} | rate ÷ Memory ×{t} |"
        );
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    for op in crate::sections::BUFFERED_OPS {
        let mut row = format!("| {} |", op.name());
        for &t in &ctx.threads {
            let cpu = of_rounds(rounds, op, t, &|r| cpu_ratio(r, 0.0));
            let less = of_rounds(rounds, op, t, &|r| {
                cpu_ratio(r, r.tried.compact_us.unwrap_or(0.0))
            });
            let rate = of_rounds(rounds, op, t, &rate_ratio);
            let _ = write!(
                row,
                " {} | {} | {} |",
                median_range(cpu),
                median_range(less),
                median_range(rate)
            );
        }
        let _ = writeln!(o, "{row}");
    }
}

/// The `redis` section's rounds: sessiondb on Redis ÷ the raw async client, by op.
fn print_redis_rounds(o: &mut String, ctx: &Ctx, report: &Report) {
    let rounds = &report.redis_rounds;
    if rounds.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## sessiondb on Redis against the raw client, in rounds\n"
    );
    let _ = writeln!(
        o,
        "`{SDB_REDIS}` ÷ `Redis, async client` (the same connection settings, the same \
         server), taking turns at the same op, {} rounds (which goes first alternates): \
         the median of the rounds' ratios, and their range. A rate above 1 is sessiondb \
         faster; the CPU is the bench process's (the client), not the server's. Section \
         `redis`; `SESSIONDB_BENCH_REDIS_ROUNDS` sets the rounds.\n",
        round_count(rounds, ctx)
    );
    let mut head = "| op |".to_owned();
    let mut rule = "|---|".to_owned();
    for t in &ctx.threads {
        let _ = write!(head, " rate ×{t} | client CPU ×{t} |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    for op in crate::sections::REDIS_ROUND_OPS {
        let mut row = format!("| {} |", op.name());
        for &t in &ctx.threads {
            let rate = of_rounds(rounds, op, t, &rate_ratio);
            let cpu = of_rounds(rounds, op, t, &|r| cpu_ratio(r, 0.0));
            let _ = write!(row, " {} | {} |", median_range(rate), median_range(cpu));
        }
        let _ = writeln!(o, "{row}");
    }
}

fn print_scaling(o: &mut String, ctx: &Ctx, report: &Report) {
    let counts: Vec<usize> = ctx.threads.iter().copied().filter(|&t| t > 1).collect();
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n## Scaling\n");
    let _ = writeln!(
        o,
        "ops/s at N threads ÷ ops/s at 1, and the cores busy on average (process CPU time ÷ \
         wall time; an out-of-process peer's server not counted), on {} available cores.\n",
        ctx.parallelism
    );
    let mut head = "| op | engine | cores ×1 |".to_owned();
    let mut rule = "|---|---|---:|".to_owned();
    for t in &counts {
        let _ = write!(head, " ×{t} ÷ ×1 | cores ×{t} |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    let find = |engine: &str, op: Op, t: usize| report.run(engine, op, t);
    let cores = |r: Option<&RunResult>| {
        r.and_then(|r| r.cores)
            .map_or_else(|| "—".to_owned(), |c| format!("{c:.2}"))
    };
    for op in [Op::GetHit, Op::Create, Op::Mixed] {
        for i in &report.infos {
            let Some(one) = find(&i.name, op, 1) else {
                continue;
            };
            let mut row = format!("| {} | {} | {} |", op.name(), i.name, cores(Some(one)));
            for &t in &counts {
                let r = find(&i.name, op, t);
                let ratio = r.filter(|_| one.ops_per_sec() > 0.0).map_or_else(
                    || "—".to_owned(),
                    |r| format!("{:.2}", r.ops_per_sec() / one.ops_per_sec()),
                );
                let _ = write!(row, " {ratio} | {} |", cores(r));
            }
            let _ = writeln!(o, "{row}");
        }
    }
}
