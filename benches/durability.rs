//! Durability figures, in one run: write throughput under each durability mode, group
//! commit under `Sync` (fsyncs per second, records per fsync) with 1, 2 and 8 writer
//! threads next to the disk's raw fdatasync rate, recovery time of a large store, and
//! log size before and after compaction.
//!
//! `cargo bench -p sessiondb-bench --bench durability` (1,000,000 sessions for
//! recovery; set `SESSIONDB_BENCH_SESSIONS` for fewer, `SESSIONDB_BENCH_SECS` for the
//! length of each throughput run, default 3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sessiondb::{BackendKind, Durability, NewSession, Options, SessionData, Store, Token};

#[path = "support/fdatasync.rs"]
mod fdatasync;

use fdatasync::raw_fdatasync_rate;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    ops_per_sec: f64,
    syncs_per_sec: f64,
    records_per_sync: f64,
}

/// `threads` writers doing `op` for `secs` on a fresh store with durability `d`.
fn throughput(d: Durability, threads: usize, secs: f64, op: fn(&Store, &Token, u64) -> ()) -> Run {
    throughput_on(BackendKind::Log, d, threads, secs, op)
}

fn throughput_on(
    backend: BackendKind,
    d: Durability,
    threads: usize,
    secs: f64,
    op: fn(&Store, &Token, u64) -> (),
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Options::default()
            .durability(d)
            .backend(backend)
            .compaction(false, u64::MAX, 2.0)
            .reaper_interval(None),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = store.stats();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let (token, _) = store
                    .create(NewSession::for_user(format!("bench-{t}")))
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(&store, &token, i);
                    i += 1;
                }
                done.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.stats();
    let syncs = (after.log_syncs - before.log_syncs) as f64;
    let records = (after.log_records - before.log_records) as f64;
    Run {
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / elapsed,
        syncs_per_sec: syncs / elapsed,
        records_per_sync: if syncs > 0.0 { records / syncs } else { 0.0 },
    }
}

/// One `Sync` writer against the disk's raw fdatasync rate, interleaved: on a shared
/// VM the disk's rate swings several-fold within a minute, so each round measures both
/// back to back (in alternating order) and the ratio is taken per round; the median of
/// the rounds is the figure. The raw appends are 512 bytes, about one create record
/// (a session with a user and ~200 bytes of data, framed), so both write the same.
fn single_writer_vs_disk(probe: &std::path::Path) {
    let rounds = env("SESSIONDB_BENCH_ROUNDS", 7);
    println!(
        "\none `Sync` writer (create) against the disk, {rounds} interleaved rounds of 1 s each:\n"
    );
    println!(
        "| round | raw fdatasync/s, 512 B appends | raw, 512 B overwrites | sessiondb `Sync` creates/s | ÷ appends | ÷ overwrites |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let (mut vs_append, mut vs_overwrite) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let raw = |in_place| raw_fdatasync_rate(probe, 1.0, 512, in_place);
        let sdb = || throughput(Durability::Sync, 1, 1.0, op_create).ops_per_sec;
        let (append, overwrite, ours) = if round % 2 == 0 {
            let (a, o) = (raw(false), raw(true));
            (a, o, sdb())
        } else {
            let ours = sdb();
            let (o, a) = (raw(true), raw(false));
            (a, o, ours)
        };
        vs_append.push(ours / append);
        vs_overwrite.push(ours / overwrite);
        println!(
            "| {} | {append:.0} | {overwrite:.0} | {ours:.0} | {:.2} | {:.2} |",
            round + 1,
            ours / append,
            ours / overwrite
        );
    }
    vs_append.sort_by(f64::total_cmp);
    vs_overwrite.sort_by(f64::total_cmp);
    if let (Some(a), Some(o)) = (
        vs_append.get(vs_append.len() / 2),
        vs_overwrite.get(vs_overwrite.len() / 2),
    ) {
        println!(
            "\nmedian ratio, one `Sync` writer ÷ raw fdatasync: {a:.2} of 512 B appends, {o:.2} of 512 B overwrites"
        );
    }
}

fn op_create(store: &Store, _: &Token, i: u64) {
    // A session of the brief's shape: a user and ~200 bytes of data, in one step.
    let mut data = SessionData::new();
    data.insert("profile", PROFILE).unwrap();
    store
        .create(NewSession::for_user(format!("u{}", i % 100_000)).data(data))
        .unwrap();
}

const PROFILE: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn op_update(store: &Store, token: &Token, i: u64) {
    store.put(token, "counter", &i).unwrap();
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let secs = env("SESSIONDB_BENCH_SECS", 3) as f64;
    let n = env("SESSIONDB_BENCH_SESSIONS", 1_000_000);
    let probe = tempfile::tempdir().unwrap();
    let raw = raw_fdatasync_rate(probe.path(), secs, 4096, false);
    println!("disk: raw fdatasync of 4 KiB appends: {raw:.0}/s\n");

    println!("| operation | durability | threads | ops/s | fsyncs/s | records/fsync |");
    println!("|---|---|---:|---:|---:|---:|");
    let buffered = Durability::Buffered {
        flush_every: Duration::from_millis(100),
    };
    let modes = [
        ("Memory", Durability::Memory),
        ("Buffered 100ms", buffered),
        ("Sync", Durability::Sync),
    ];
    for (opname, op) in [
        ("create", op_create as fn(&Store, &Token, u64)),
        ("update", op_update),
    ] {
        for (mname, mode) in modes {
            let threads: &[usize] = if mode == Durability::Sync {
                &[1, 2, 8]
            } else {
                &[1]
            };
            for &t in threads {
                let r = throughput(mode, t, secs, op);
                println!(
                    "| {opname} | {mname} | {t} | {:.0} | {:.0} | {:.1} |",
                    r.ops_per_sec, r.syncs_per_sec, r.records_per_sync
                );
            }
        }
    }

    single_writer_vs_disk(probe.path());

    backends(secs);

    // Recovery and compaction of a large store.
    let dir = tempfile::tempdir().unwrap();
    let payload = "x".repeat(180);
    let opts = || {
        Options::default()
            .compaction(false, u64::MAX, 2.0)
            .reaper_interval(None)
    };
    {
        let store = Store::open_with(dir.path(), opts()).unwrap();
        let start = Instant::now();
        let mut tokens = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (t, _) = store
                .create(NewSession::for_user(format!("user-{}", i % 100_000)))
                .unwrap();
            store.put(&t, "profile", &payload).unwrap();
            tokens.push(t);
        }
        store.flush().unwrap();
        println!(
            "\nloaded {n} sessions (~200 B of data each) in {:.2} s",
            start.elapsed().as_secs_f64()
        );
        // History for compaction to drop: every session's data rewritten twice, and
        // a tenth of the sessions ended.
        for round in 0..2u64 {
            for t in &tokens {
                store.put(t, "round", &round).unwrap();
            }
        }
        for t in tokens.iter().step_by(10) {
            store.end(t).unwrap();
        }
        store.flush().unwrap();
    }
    let start = Instant::now();
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let open_secs = start.elapsed().as_secs_f64();
    let report = store.recovery_report();
    let before = store.stats().disk_bytes;
    println!(
        "recovery from the log: {open_secs:.2} s to open ({} records, {} sessions, {:.0} MB)",
        report.records,
        report.sessions,
        before as f64 / 1e6
    );
    let c = store.compact().unwrap();
    println!(
        "compaction: {:.0} MB -> {:.0} MB in {:.2} s",
        c.bytes_before as f64 / 1e6,
        c.bytes_after as f64 / 1e6,
        c.duration.as_secs_f64()
    );
    drop(store);
    let start = Instant::now();
    let store = Store::open_with(dir.path(), opts()).unwrap();
    println!(
        "recovery from the compacted base: {:.2} s to open ({} sessions)",
        start.elapsed().as_secs_f64(),
        store.recovery_report().sessions
    );
}

/// The log backend next to sled (with `--features sled`): the figures that decide which
/// one is the default.
fn backends(secs: f64) {
    let mut kinds = vec![("log", BackendKind::Log)];
    if cfg!(feature = "sled") {
        kinds.push(("sled", BackendKind::Sled));
    } else {
        println!("\n(sled rows: run with `--features sled`)");
    }
    let buffered = Durability::Buffered {
        flush_every: Duration::from_millis(100),
    };
    println!(
        "\n| backend | create Buffered ×1 | update Buffered ×1 | create Sync ×8 | 100k sessions on disk | reopen 100k |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, kind) in kinds {
        let c = throughput_on(kind, buffered, 1, secs, op_create).ops_per_sec;
        let u = throughput_on(kind, buffered, 1, secs, op_update).ops_per_sec;
        let s = throughput_on(kind, Durability::Sync, 8, secs, op_create).ops_per_sec;
        let dir = tempfile::tempdir().unwrap();
        let opts = || {
            Options::default()
                .backend(kind)
                .compaction(false, u64::MAX, 2.0)
                .reaper_interval(None)
        };
        {
            let store = Store::open_with(dir.path(), opts()).unwrap();
            let payload = "x".repeat(180);
            for i in 0..100_000 {
                let (t, _) = store
                    .create(NewSession::for_user(format!("user-{}", i % 10_000)))
                    .unwrap();
                store.put(&t, "profile", &payload).unwrap();
            }
            store.flush().unwrap();
        }
        let start = Instant::now();
        let store = Store::open_with(dir.path(), opts()).unwrap();
        let reopen = start.elapsed().as_secs_f64();
        let bytes = store.stats().disk_bytes;
        println!(
            "| {name} | {c:.0}/s | {u:.0}/s | {s:.0}/s | {:.1} MB | {reopen:.2} s |",
            bytes as f64 / 1e6
        );
    }
}
