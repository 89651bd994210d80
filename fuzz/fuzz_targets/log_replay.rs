//! Arbitrary bytes as a store directory's log files: open returns a consistent store or
//! a typed error, never a panic, a hang or an unbounded allocation. See
//! `tests/support/log_replay.rs` for the input layout and the checks.
#![no_main]

#[path = "../../tests/support/log_replay.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check_sampled(data));
