//! Deterministic simulation: seeded histories of operations on a store over a
//! simulated disk with random I/O faults and crashes, each reopen checked against a
//! model (see `tests/support/simulation.rs` for the rules).
//!
//! `SESSIONDB_SIM_SEEDS=N` runs more seeds (default 300 per durability mode);
//! `SESSIONDB_SIM_SEED=S` replays one. A failure prints the command that replays it.

use std::time::Instant;

#[path = "support/simulation.rs"]
mod simulation;

use simulation::{Mode, STEPS, fail, run_seed};

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SESSIONDB_SIM_SEED") {
        return vec![s.parse().expect("SESSIONDB_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("SESSIONDB_SIM_SEEDS")
        .ok()
        .map(|s| s.parse().expect("SESSIONDB_SIM_SEEDS is a number"))
        .unwrap_or(300);
    (0..n).collect()
}

fn run_mode(mode: Mode) {
    let started = Instant::now();
    let seeds = seeds();
    let (mut crashes, mut failures, mut faults) = (0, 0, 0);
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed, mode, STEPS))
            .unwrap_or_else(|_| Err(fail(seed, mode, "panicked (above)".into())));
        match outcome {
            Ok((c, f, x)) => {
                crashes += c;
                failures += f;
                faults += x;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "simulation {mode:?}: {} seeds in {secs:.1} s ({:.0} seeds/s), {crashes} crashes, \
         {faults} injected faults, {failures} failed calls",
        seeds.len(),
        seeds.len() as f64 / secs
    );
    assert!(crashes > 0, "the histories crashed");
}

#[test]
fn under_sync_every_acknowledged_change_survives_faults_and_crashes() {
    run_mode(Mode::Sync);
}

#[test]
fn under_buffered_every_flushed_change_survives_faults_and_crashes() {
    run_mode(Mode::Buffered);
}
