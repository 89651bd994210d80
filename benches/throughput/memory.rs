//! Resident memory per session of the in-memory engines (sessiondb `Memory`, moka, the
//! HashMap ceiling): each preloaded on one thread in a child process of its own (this
//! binary re-run with `SESSIONDB_BENCH_CHILD` set to the engine), which prints its
//! resident set size before and after.

use std::process::{Command, Stdio};

use crate::engines::Engine;
use crate::engines::hashmap::MapEngine;
use crate::engines::moka::MokaEngine;
use crate::engines::sessiondb::{SDB_MEMORY, SDB_MEMORY_DETAILS, SdbEngine};
use crate::harness::{CHILD_ENV, Ctx, SESSIONS_PER_USER, env_parse, payload};
use crate::report::{MemRow, Report};

pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// In the child: preload one engine on one thread, tokens discarded as they come, and
/// print the resident set size before and after.
pub fn child_main(spec: &str) {
    let n: usize = env_parse("SESSIONDB_BENCH_SESSIONS").unwrap_or(1_000_000);
    let users: Vec<String> = (0..(n / SESSIONS_PER_USER).max(1))
        .map(|u| format!("user-{u}"))
        .collect();
    let _ = payload();
    let before = rss_bytes();
    fn fill<E: Engine>(e: &E, users: &[String], n: usize) -> usize {
        let mut w = e.worker().expect("worker");
        (0..n)
            .filter(|&i| w.create(&users[i % users.len()]).is_some())
            .count()
    }
    let (made, after) = match spec {
        "sessiondb" => {
            let e = SdbEngine::memory();
            let made = fill(&e, &users, n);
            (made, rss_bytes())
        }
        "sessiondb-details" => {
            let e = SdbEngine::memory_with_details();
            let made = fill(&e, &users, n);
            (made, rss_bytes())
        }
        "moka" => {
            let e = MokaEngine::new();
            let made = fill(&e, &users, n);
            e.run_pending_tasks();
            (made, rss_bytes())
        }
        "hashmap" => {
            let e = MapEngine::new();
            let made = fill(&e, &users, n);
            (made, rss_bytes())
        }
        other => panic!("unknown child engine {other}"),
    };
    println!("RSS {before} {after} {made}");
}

pub fn measure_memory(ctx: &Ctx, report: &mut Report) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            report
                .skipped
                .push(format!("memory: skipped (current_exe: {e})"));
            return;
        }
    };
    for (spec, name) in [
        ("sessiondb", SDB_MEMORY),
        ("sessiondb-details", SDB_MEMORY_DETAILS),
        ("moka", "moka"),
        ("hashmap", "HashMap ceiling"),
    ] {
        ctx.progress(format_args!("memory: {name} in a child process"));
        let out = Command::new(&exe)
            .env(CHILD_ENV, spec)
            .env("SESSIONDB_BENCH_SESSIONS", ctx.n.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        let parsed = out.ok().and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let line = s.lines().find(|l| l.starts_with("RSS "))?.to_owned();
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2] as usize))
        });
        match parsed {
            Some((before, after, sessions)) => report.memory.push(MemRow {
                engine: name.to_owned(),
                sessions,
                before,
                after,
            }),
            None => report.skipped.push(format!("memory: {name} child failed")),
        }
    }
}
