//! Arbitrary sequences of API operations (create, get, put, update, save, touch,
//! extend, rotate, bind/unbind, login, login with a sign-in, step-up, end, revoke,
//! revoke by sign-in method or level, devices seen, instances, clock advances, reap,
//! clear, compact, close-and-reopen) against a durable store and a plain model: every answer
//! must agree, `Store::verify` must pass after every step, and after every reopen the
//! recovered state must equal the model's. (Buffered durability on a simulated disk in
//! memory: a clean close keeps everything, and neither fsync waits nor file-system
//! calls slow the search; `Sync` on the real disk is the property tests' job.) The
//! model is `tests/support/model.rs`.
#![no_main]

#[path = "../../tests/support/model.rs"]
mod model;
#[path = "../../tests/support/ops_input.rs"]
mod ops_input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ops = ops_input::ops(data, 200);
    if let Err(e) = model::run(model::Kind::LogSimulated, ops) {
        panic!("store and model disagree: {e}");
    }
});
