//! Operations with injected I/O errors (EIO, ENOSPC, short writes, EINTR) and power
//! cuts on a simulated disk, against a model of what each session may be after every
//! reopen: every acknowledged change there, nothing never written, `verify()` clean,
//! I/O errors never reported as corruption. The bytes choose the disk's seed, the
//! durability mode and every operation; see `tests/support/simulation.rs`.
#![no_main]

#[path = "../../tests/support/simulation.rs"]
mod simulation;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = simulation::run_bytes(data) {
        panic!("{e}");
    }
});
