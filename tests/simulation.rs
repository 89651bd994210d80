//! Deterministic simulation: seeded histories of operations on a store over a
//! simulated disk with random I/O faults and crashes, each reopen checked against a
//! model (see `tests/support/simulation.rs` for the rules).
//!
//! Each durability mode runs twice: with the log written on the calling thread
//! (`Options::deterministic`: a seed replays the very same run; most seeds go here)
//! and by the writer thread, as in production (the same code writes, syncs and
//! answers, with real hand-offs and timing between threads).
//!
//! `SESSIONDB_SIM_SEEDS=N` runs N seeds per test (default 1,000 on the calling thread,
//! 100 on the writer thread); `SESSIONDB_SIM_SEED=S` replays one. A failure prints the
//! command that replays it.

use std::time::Instant;

#[path = "support/simulation.rs"]
mod simulation;

use simulation::{Mode, STEPS, Writer, fail, run_seed};

fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SESSIONDB_SIM_SEED") {
        return vec![s.parse().expect("SESSIONDB_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("SESSIONDB_SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("SESSIONDB_SIM_SEEDS is a number"))
        .unwrap_or(default);
    (0..n).collect()
}

fn run_mode(mode: Mode, writer: Writer) {
    let started = Instant::now();
    let seeds = seeds(match writer {
        Writer::Inline => 1000,
        Writer::Thread => 100,
    });
    let (mut crashes, mut failures, mut faults) = (0, 0, 0);
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed, mode, writer, STEPS))
            .unwrap_or_else(|_| Err(fail(seed, mode, writer, "panicked (above)".into())));
        match outcome {
            Ok((c, f, x, _)) => {
                crashes += c;
                failures += f;
                faults += x;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "simulation {mode:?}, {writer:?} writer: {} seeds in {secs:.1} s ({:.0} seeds/s), {crashes} crashes, \
         {faults} injected faults, {failures} failed calls",
        seeds.len(),
        seeds.len() as f64 / secs
    );
    assert!(crashes > 0, "the histories crashed");
}

/// On the calling thread (`Options::deterministic`), as every test below unless named.
#[test]
fn under_sync_every_acknowledged_change_survives_faults_and_crashes() {
    run_mode(Mode::Sync, Writer::Inline);
}

#[test]
fn under_buffered_every_flushed_change_survives_faults_and_crashes() {
    run_mode(Mode::Buffered, Writer::Inline);
}

#[test]
fn under_sync_on_the_writer_thread_every_acknowledged_change_survives() {
    run_mode(Mode::Sync, Writer::Thread);
}

#[test]
fn under_buffered_on_the_writer_thread_every_flushed_change_survives() {
    run_mode(Mode::Buffered, Writer::Thread);
}

/// A seed is a run: on the calling thread, the same seed makes the same history, the
/// same calls to the disk, the same faults and crashes, twice.
#[test]
fn a_seed_replays_the_same_run() {
    for seed in [3, 20, 109] {
        for mode in [Mode::Sync, Mode::Buffered] {
            let first = run_seed(seed, mode, Writer::Inline, STEPS);
            let second = run_seed(seed, mode, Writer::Inline, STEPS);
            assert_eq!(first, second, "seed {seed} {mode:?}");
        }
    }
}
