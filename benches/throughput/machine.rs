//! The machine under the figures: the disk's raw fdatasync rate, the `SCHED_IDLE`
//! spinner threads that keep idle vCPUs awake, the cost of the timer, and the header's
//! machine and command lines.

use std::fmt::Write as _;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::harness::Ctx;
use crate::report::fmt_bytes;

#[path = "../support/fdatasync.rs"]
mod fdatasync;

pub use fdatasync::raw_fdatasync_rate;

/// The probe's write size in this bench: 4 KiB, a page.
pub const PROBE_BYTES: usize = 4096;

/// Busy threads at `SCHED_IDLE` priority, one per core, for the length of the run: they
/// only get a CPU nobody else wants, and keep it from going idle. On a virtual machine an
/// idle vCPU takes ~100 µs to wake (a VM exit), which would otherwise be added to every
/// cross-thread or cross-process round trip (Redis on loopback, a group commit's wake-up)
/// and swamp what is being measured; bare metal wakes in a few µs.
pub struct Spinners {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    /// How many got `SCHED_IDLE` (the others exited at once).
    pub active: usize,
}

impl Spinners {
    pub fn start(n: usize) -> Spinners {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let handles = (0..n)
            .map(|_| {
                let (stop, tx) = (stop.clone(), tx.clone());
                std::thread::spawn(move || {
                    // `chrt -i -p 0 <tid>`: SCHED_IDLE for this thread only.
                    let ok = std::fs::read_link("/proc/thread-self")
                        .ok()
                        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()))
                        .is_some_and(|tid| {
                            Command::new("chrt")
                                .args(["-i", "-p", "0", &tid])
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .status()
                                .is_ok_and(|s| s.success())
                        });
                    let _ = tx.send(ok);
                    drop(tx);
                    if !ok {
                        return; // never spin at normal priority
                    }
                    if let Some(tid) = thread_id() {
                        SPINNER_TIDS.lock().push(tid);
                    }
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        drop(tx);
        let active = rx.iter().take(n).filter(|&ok| ok).count();
        Spinners {
            stop,
            handles,
            active,
        }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        SPINNER_TIDS.lock().clear();
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Cost of the two `Instant::now()` calls around every timed op.
pub fn timer_overhead_ns() -> f64 {
    let n = 1_000_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(Instant::now());
        black_box(Instant::now());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

pub fn machine_line(ctx: &Ctx) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(String::new, |kb| format!(", {} RAM", fmt_bytes(kb * 1024)));
    format!("{cpu}, {} cores{mem}, Linux {kernel}", ctx.parallelism)
}

pub fn command_line() -> String {
    let mut cmd = String::new();
    for var in [
        "SESSIONDB_BENCH_SESSIONS",
        "SESSIONDB_BENCH_SECS",
        "SESSIONDB_BENCH_ONLY",
        "SESSIONDB_BENCH_SPIN",
        "SESSIONDB_BENCH_GROUP_ROUNDS",
        "SESSIONDB_BENCH_PG_SESSIONS",
    ] {
        if let Ok(v) = std::env::var(var) {
            let _ = write!(cmd, "{var}={v} ");
        }
    }
    cmd.push_str("cargo bench -p sessiondb-bench --bench throughput");
    let features: Vec<&str> = [
        ("redis", cfg!(feature = "redis")),
        ("postgres", cfg!(feature = "postgres")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if !features.is_empty() {
        let _ = write!(cmd, " --features {}", features.join(","));
    }
    cmd
}

/// The spinners' thread ids, whose CPU time [`cpu_seconds`] leaves out.
static SPINNER_TIDS: parking_lot::Mutex<Vec<String>> = parking_lot::Mutex::new(Vec::new());

/// This thread's id (Linux), from `/proc/thread-self`.
fn thread_id() -> Option<String> {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()))
}

/// User + system CPU ticks in a `/proc/.../stat` file (fields 14 and 15, counted after
/// the command name's closing parenthesis).
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time this process has used, in seconds — every thread, running or already
/// gone (the store's writer and sync threads included), less the `SCHED_IDLE` spinners'
/// — from `/proc` (10 ms ticks: ±1% over a 2 s run on one core). `None` off Linux.
pub fn cpu_seconds() -> Option<f64> {
    let hz = ticks_per_sec();
    let all = stat_ticks("/proc/self/stat")?;
    let spinning: u64 = SPINNER_TIDS
        .lock()
        .iter()
        .filter_map(|tid| stat_ticks(&format!("/proc/self/task/{tid}/stat")))
        .sum();
    Some(all.saturating_sub(spinning) as f64 / hz)
}

/// The CPU time, in seconds, that the live sessiondb compactor threads of this process
/// (`sessiondb-compact`) have used: the part of [`cpu_seconds`] that rewrites the log.
/// `None` off Linux.
pub fn compactor_seconds() -> Option<f64> {
    let mut ticks = 0;
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = e.path().join("stat");
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue;
        };
        // The kernel keeps 15 bytes of a thread's name.
        if stat.contains("(sessiondb-compa)") {
            ticks += stat_ticks(&path.to_string_lossy()).unwrap_or(0);
        }
    }
    Some(ticks as f64 / ticks_per_sec())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 if unknown).
fn ticks_per_sec() -> f64 {
    static TICKS_PER_SEC: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS_PER_SEC.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The CPU time, in seconds, that a server process and its children (alive now) have
/// used: a PostgreSQL postmaster and its backends and workers, from `/proc`. A child
/// that exited in between takes its ticks with it, so read it around runs whose
/// connections stay open. `None` off Linux.
#[cfg(feature = "postgres")]
pub fn tree_cpu_seconds(pid: u32) -> Option<f64> {
    let mut ticks = stat_ticks(&format!("/proc/{pid}/stat"))?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let path = format!("/proc/{child}/stat");
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            ticks += stat_ticks(&path).unwrap_or(0);
        }
    }
    Some(ticks as f64 / ticks_per_sec())
}
