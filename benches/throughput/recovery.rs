//! Recovery and compaction of a sessiondb log of N sessions: the time to load it, to
//! `Store::open` it in a fresh process (this binary re-run with
//! `SESSIONDB_BENCH_CHILD=open:DIR`, as an application starting up), its size before and
//! after `compact()`, and the time to open the compacted base.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use sessiondb::{Options, Store};

use crate::engines::Engine;
use crate::engines::sessiondb::SdbEngine;
use crate::harness::{CHILD_ENV, Ctx};
use crate::report::{Report, fmt_bytes, fmt_count};

pub fn measure_recovery(ctx: &Ctx, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    ctx.progress(format_args!(
        "recovery: loading {} sessions (Buffered)",
        ctx.n
    ));
    let load = Instant::now();
    {
        let e = SdbEngine {
            store: Store::open_with(dir.path(), recovery_options()).expect("open"),
            details: false,
        };
        let users: Vec<u32> = (0..ctx.n).map(|i| (i % ctx.users.len()) as u32).collect();
        drop(e.bulk_create(ctx, &users));
        e.store.flush().expect("flush");
        e.store.close().expect("close");
    }
    let rows = &mut report.recovery;
    rows.push((
        format!("load {} sessions, Buffered, flush, close", ctx.n),
        format!("{:.2} s", load.elapsed().as_secs_f64()),
    ));
    ctx.progress(format_args!("recovery: opening the log in fresh processes"));
    match timed_opens(dir.path(), OPENS_OF_LOG) {
        Ok((open, o)) => rows.push((
            format!(
                "`Store::open` from the uncompacted log, in a fresh process (median of {OPENS_OF_LOG})"
            ),
            format!(
                "{open} ({} records, {} sessions, {} files, {} read)",
                fmt_count(o.records as f64),
                fmt_count(o.sessions as f64),
                o.files,
                fmt_bytes(o.bytes_read)
            ),
        )),
        Err(e) => rows.push(("`Store::open` from the uncompacted log".to_owned(), e)),
    }
    let store = Store::open_with(dir.path(), recovery_options()).expect("reopen");
    rows.push((
        "log size before compaction (`stats().disk_bytes`)".to_owned(),
        fmt_bytes(store.stats().disk_bytes),
    ));
    match store.compact() {
        Ok(c) => {
            rows.push((
                "`compact()`: bytes before → after".to_owned(),
                format!(
                    "{} → {} ({} sessions, {:.2} s)",
                    fmt_bytes(c.bytes_before),
                    fmt_bytes(c.bytes_after),
                    fmt_count(c.sessions as f64),
                    c.duration.as_secs_f64()
                ),
            ));
            rows.push((
                "log size after compaction (`stats().disk_bytes`)".to_owned(),
                fmt_bytes(store.stats().disk_bytes),
            ));
        }
        Err(e) => rows.push(("`compact()`".to_owned(), format!("failed: {e}"))),
    }
    store.close().expect("close");
    ctx.progress(format_args!(
        "recovery: opening the base in fresh processes"
    ));
    match timed_opens(dir.path(), OPENS_OF_BASE) {
        Ok((open, o)) => rows.push((
            format!(
                "`Store::open` from the compacted base, in a fresh process (median of {OPENS_OF_BASE})"
            ),
            format!("{open} ({} sessions)", fmt_count(o.sessions as f64)),
        )),
        Err(e) => rows.push(("`Store::open` from the compacted base".to_owned(), e)),
    }
}

/// Auto-compaction off, so the loaded log holds the whole history (a create record,
/// with its data, per session): the worst case recovery has to read.
fn recovery_options() -> Options {
    Options::default().compaction(false, u64::MAX, 2.0)
}

/// How many times each recovery is timed: one open on a shared machine can land on a
/// bad moment either way, so the table gives the median and the range.
const OPENS_OF_LOG: usize = 3;
const OPENS_OF_BASE: usize = 5;

/// What one open in a child process reported.
struct Opened {
    secs: f64,
    sessions: usize,
    records: u64,
    files: usize,
    bytes_read: u64,
}

/// In the child: opens the store at `dir` (as an application starting up: a fresh
/// process, nothing of the store in its memory) and prints how long it took.
pub fn child_open(dir: &str) {
    let t = Instant::now();
    let store = Store::open_with(dir, recovery_options()).expect("open");
    let secs = t.elapsed().as_secs_f64();
    let r = store.recovery_report();
    println!(
        "OPEN {secs} {} {} {} {}",
        r.sessions, r.records, r.files, r.bytes_read
    );
}

/// Opens the store at `dir` in `times` fresh processes, one after another; returns
/// "median s (min–max)" and the last open's report, or why it could not.
fn timed_opens(dir: &Path, times: usize) -> Result<(String, Opened), String> {
    let exe = std::env::current_exe().map_err(|e| format!("skipped (current_exe: {e})"))?;
    let mut opens = Vec::with_capacity(times);
    for _ in 0..times {
        let out = Command::new(&exe)
            .env(CHILD_ENV, format!("open:{}", dir.display()))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("child failed: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: Vec<f64> = stdout
            .lines()
            .find_map(|l| l.strip_prefix("OPEN "))
            .ok_or_else(|| format!("child failed ({})", out.status))?
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [secs, sessions, records, files, bytes_read] = v[..] else {
            return Err(format!("child printed {stdout:?}"));
        };
        opens.push(Opened {
            secs,
            sessions: sessions as usize,
            records: records as u64,
            files: files as usize,
            bytes_read: bytes_read as u64,
        });
    }
    let mut secs: Vec<f64> = opens.iter().map(|o| o.secs).collect();
    secs.sort_by(f64::total_cmp);
    let shown = format!(
        "{:.2} s ({:.2}–{:.2})",
        secs[secs.len() / 2],
        secs[0],
        secs[secs.len() - 1]
    );
    Ok((shown, opens.pop().ok_or("no opens")?))
}
