//! Side-by-side throughput of sessiondb and its peers on one session-shaped workload,
//! in one process run, printed as markdown tables.
//!
//! The workload: N sessions (default 1,000,000) over N/10 users, each holding ~200 bytes
//! of data (one key "profile" with a 180-character string, encoded as each engine
//! naturally would); then, for a fixed time each, on 1 and 2 threads (and on
//! `available_parallelism` threads if that differs): get-hit, get-miss, create, update,
//! touch, rotate, sessions-of-user, end, revoke-user and a 90/5/4/1 get/update/create/end
//! mix. Every operation starts from the 32-character cookie string, as a server's would
//! (so sessiondb pays `Token::parse` on every call, and peers key by the string).
//!
//! The engines: sessiondb (Memory, Buffered, Sync), moka 0.12, a 64-shard
//! `RwLock<HashMap>` (the in-memory ceiling), sled 0.34 (default, and flush after every
//! write), SQLite through rusqlite (WAL, synchronous=NORMAL and FULL), and Redis on
//! loopback (no persistence, and `appendfsync always`; skipped if `redis-server` is not
//! installed); with `--features postgres`, sessiondb on PostgreSQL beside the raw
//! statements and tower-sessions' sqlx store on a server it starts (skipped if
//! PostgreSQL is not installed), at 1 and 50 clients (tokio tasks). Also: the disk's raw fdatasync rate, group commit under `Sync` with 64
//! writers against SQLite FULL and Redis `appendfsync always` with 50 clients, resident
//! memory per 1,000,000 sessions (each engine measured in a child process of its own),
//! recovery / compaction of a sessiondb log of N sessions, and the memory budget (a
//! flood of anonymous creates with a budget and without, and what the budget costs).
//!
//! `cargo bench -p sessiondb-bench --bench throughput`. Environment:
//! - `SESSIONDB_BENCH_SESSIONS`: sessions preloaded (default 1,000,000);
//! - `SESSIONDB_BENCH_SECS`: seconds per measured run (default 2, fractions allowed);
//! - `SESSIONDB_BENCH_ONLY`: comma-separated sections to run, of `sessiondb`,
//!   `buffered`, `moka`, `hashmap`, `sled`, `sqlite`, `redis`, `postgres`, `group`,
//!   `memory`, `recovery`, `budget` (default: all);
//! - `SESSIONDB_BENCH_BUFFERED_ROUNDS`: rounds of the `buffered` section (default 5);
//! - `SESSIONDB_BENCH_REDIS_ROUNDS`: rounds of the `redis` section's interleaved reads
//!   (default 5; with `--features redis`);
//! - `SESSIONDB_BENCH_PG_SESSIONS`: sessions preloaded into each engine of the
//!   `postgres` section (default 20,000, at most `SESSIONDB_BENCH_SESSIONS`);
//! - `SESSIONDB_BENCH_FLOOD`, `SESSIONDB_BENCH_FLOOD_BUDGET`: the budget section's
//!   flood (default 5,000,000 creates) and budget (default 1,000,000);
//! - `SESSIONDB_BENCH_SPIN=0`: no `SCHED_IDLE` spinner threads (see [`machine::Spinners`];
//!   they are stopped before the postgres, memory, recovery and budget sections).
//! - `SESSIONDB_BENCH_RECORDER=prometheus` (with `--features metrics`): a Prometheus
//!   recorder installed before any store opens, rendered once at the end;
//! - `SESSIONDB_BENCH_THREADS`: the thread counts every op runs at, comma-separated
//!   (default `1,2,<available cores>`; 1 is always added: the scaling table divides by
//!   it), e.g. `1,2,4,8,16` on a bigger machine.
//!
//! Progress goes to stderr; the tables go to stdout at the end.
//!
//! The files: `harness` (the workload, the settings, the timed loop), `histogram` (the
//! latency histogram it records into), `engines/` (one per engine, behind one
//! interface), `sections` (what each `SESSIONDB_BENCH_ONLY` section runs), `budget`,
//! `memory` and `recovery` (the child-process sections), `machine` (the disk, the
//! spinners, the timer), `report` (the tables).

mod budget;
mod engines;
mod harness;
mod histogram;
mod machine;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod recovery;
mod report;
mod sections;

use harness::{CHILD_ENV, Ctx};
use machine::{
    PROBE_BYTES, Spinners, command_line, machine_line, raw_fdatasync_rate, timer_overhead_ns,
};
use report::{Report, fmt_count, print_report};

fn main() {
    // A child process of this binary: one engine's memory, or one timed open.
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        if let Some(dir) = spec.strip_prefix("open:") {
            recovery::child_open(dir);
        } else if let Some(budget) = spec.strip_prefix("flood:") {
            budget::child_flood(budget);
        } else {
            memory::child_main(&spec);
        }
        return;
    }
    #[cfg(feature = "metrics")]
    let recorder =
        (std::env::var("SESSIONDB_BENCH_RECORDER").as_deref() == Ok("prometheus")).then(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("a Prometheus recorder")
        });
    let ctx = Ctx::from_env();
    let spin = std::env::var("SESSIONDB_BENCH_SPIN").map_or(true, |v| v.trim() != "0");
    let spinners = spin.then(|| Spinners::start(ctx.parallelism));
    let mut report = Report {
        timer_ns: timer_overhead_ns(),
        spinners: match &spinners {
            None => "off (`SESSIONDB_BENCH_SPIN=0`)".to_owned(),
            Some(s) if s.active == 0 => "off (could not set SCHED_IDLE with `chrt`)".to_owned(),
            Some(s) => format!("{} (`SESSIONDB_BENCH_SPIN=0` turns them off)", s.active),
        },
        ..Report::default()
    };
    ctx.progress(format_args!("{}", machine_line(&ctx)));
    ctx.progress(format_args!("{}", command_line()));
    let probe = ctx.disk_probe.path();
    report.fsync_rate = raw_fdatasync_rate(probe, 1.0, PROBE_BYTES, false);
    report.fsync_in_place = raw_fdatasync_rate(probe, 1.0, PROBE_BYTES, true);
    ctx.progress(format_args!(
        "raw fdatasync: {}/s (4 KiB appends), {}/s (4 KiB overwrites in place)",
        fmt_count(report.fsync_rate),
        fmt_count(report.fsync_in_place)
    ));

    if ctx.wants("sessiondb") {
        sections::bench_sessiondb(&ctx, &mut report);
    }
    sections::bench_memory_peers(&ctx, &mut report);
    if ctx.wants("buffered") {
        sections::bench_buffered_interleaved(&ctx, &mut report);
    }
    if ctx.wants("sled") {
        sections::bench_sled(&ctx, &mut report);
    }
    if ctx.wants("sqlite") {
        sections::bench_sqlite(&ctx, &mut report);
    }
    if ctx.wants("redis") {
        sections::bench_redis(&ctx, &mut report);
    }
    if ctx.wants("group") {
        sections::bench_group_interleaved(&ctx, &mut report);
    }
    report.fsync_end = raw_fdatasync_rate(probe, 1.0, PROBE_BYTES, false);
    // The memory and recovery sections run in child processes, CPU-bound on every
    // core, with no wake-up to speed along: there the spinners only take time from
    // them (opening 1,000,000 sessions ran 10-20% slower beside them).
    drop(spinners);
    // Without them too: beside them a single PostgreSQL client's write took ~4 ms (a
    // scheduler tick) instead of 0.2-0.4 ms (see postgres.rs).
    if ctx.wants("postgres") {
        #[cfg(feature = "postgres")]
        postgres::bench_postgres(&ctx, &mut report);
        #[cfg(not(feature = "postgres"))]
        report
            .skipped
            .push("sessiondb on PostgreSQL: skipped (run with `--features postgres`)".to_owned());
    }
    if ctx.wants("memory") {
        memory::measure_memory(&ctx, &mut report);
    }
    if ctx.wants("recovery") {
        recovery::measure_recovery(&ctx, &mut report);
    }
    if ctx.wants("budget") {
        budget::measure_budget(&ctx, &mut report);
    }
    ctx.progress(format_args!(
        "done in {:.0} s",
        ctx.started.elapsed().as_secs_f64()
    ));
    print_report(&ctx, &report);
    #[cfg(feature = "metrics")]
    if let Some(handle) = recorder {
        // What the recorder was handed, so the run shows it was live.
        let series = handle
            .render()
            .lines()
            .filter(|l| l.starts_with("sessiondb_"))
            .count();
        println!(
            "\nmetrics: a Prometheus recorder was installed; it held {series} sessiondb series"
        );
    }
}
