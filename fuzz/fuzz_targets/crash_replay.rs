//! An operation sequence written under `Durability::Sync`, the log then cut at an
//! arbitrary byte (a crash mid-write), reopened: the result equals the state after some
//! acknowledged prefix of the operations. See `tests/support/crash_replay.rs`.
#![no_main]

#[path = "../../tests/support/crash_replay.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
