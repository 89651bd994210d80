//! Property test: random operation sequences run against the store and against a plain
//! model (a map of sessions with explicit deadlines); every answer must agree, and the
//! store's own consistency check must pass after every step. Time is a manual clock,
//! so expiry (and the end of level 2, which the model's options give a lifetime) is
//! exercised without sleeping. The model lives in `tests/support/model.rs`,
//! shared with the `ops_model` fuzz target.

#[path = "support/model.rs"]
mod model;

use model::{ADDRESSES, Kind, METHODS, Op, USER_AGENTS, run};
use proptest::prelude::*;

/// A sign-in's methods (indices into `model::METHODS`): mostly one or two valid ones;
/// sometimes up to eight distinct ones in any order (a step-up then often takes a
/// session past eight methods, refused); sometimes up to ten, possibly repeated or not
/// a method name (refused).
fn methods() -> impl Strategy<Value = Vec<u8>> {
    let n = METHODS.len() as u8;
    prop_oneof![
        6 => proptest::collection::vec(0u8..4, 1..3),
        2 => proptest::sample::subsequence((0..n).collect::<Vec<u8>>(), 1..=8).prop_shuffle(),
        1 => proptest::collection::vec(0..=n, 1..11),
    ]
}

fn level() -> impl Strategy<Value = u8> {
    // Level 2 has a lifetime (the model's options): the likeliest.
    prop_oneof![3 => Just(2u8), 4 => 0u8..4, 1 => Just(u8::MAX)]
}

fn create() -> impl Strategy<Value = Op> {
    (
        proptest::option::of(0usize..3),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
        proptest::option::weighted(0.4, (methods(), level())),
        // A sign-in on an anonymous session (refused) now and then.
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.4, (0..USER_AGENTS, 0..ADDRESSES)),
    )
        .prop_map(
            |(user, idle, with, sign_in, anonymous_sign_in, device)| Op::Create {
                user,
                idle,
                with,
                sign_in: sign_in.filter(|_| user.is_some() || anonymous_sign_in),
                device,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let tok = 0usize..64;
    let n = METHODS.len() as u8;
    prop_oneof![
        4 => create(),
        4 => tok.clone().prop_map(Op::Get),
        1 => tok.clone().prop_map(Op::Peek),
        3 => (tok.clone(), 0u8..4, any::<u32>()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        1 => (tok.clone(), 0u8..4).prop_map(|(t, k)| Op::Remove(t, k)),
        1 => tok.clone().prop_map(Op::Update),
        1 => (tok.clone(), any::<bool>()).prop_map(|(tok, stale)| Op::Save { tok, stale }),
        1 => tok.clone().prop_map(Op::Touch),
        1 => (tok.clone(), 0u16..4000).prop_map(|(t, s)| Op::Extend(t, s)),
        1 => (tok.clone(), -60i16..4000).prop_map(|(t, s)| Op::SetExpiry(t, s)),
        2 => tok.clone().prop_map(Op::Rotate),
        2 => (tok.clone(), 0usize..3).prop_map(|(t, u)| Op::Bind(t, u)),
        1 => tok.clone().prop_map(Op::Unbind),
        1 => tok.clone().prop_map(Op::End),
        1 => tok.clone().prop_map(Op::EndById),
        1 => (0usize..3).prop_map(Op::Revoke),
        1 => tok.clone().prop_map(Op::RevokeOthers),
        1 => (0usize..3, -4000i16..60).prop_map(|(u, s)| Op::RevokeBefore(u, s)),
        1 => (0usize..3).prop_map(Op::SessionsOf),
        1 => (tok.clone(), 0usize..3).prop_map(|(t, u)| Op::Login(t, u)),
        2 => (tok.clone(), 0usize..3, methods(), level())
            .prop_map(|(t, u, ms, l)| Op::LoginWith(t, u, ms, l)),
        2 => (tok.clone(), methods(), level()).prop_map(|(t, ms, l)| Op::StepUp(t, ms, l)),
        1 => (0usize..3, prop_oneof![8 => 0u8..4, 2 => 0..n, 1 => Just(n)])
            .prop_map(|(u, m)| Op::RevokeWhereMethod(u, m)),
        1 => (0usize..3, 0u8..5).prop_map(|(u, l)| Op::RevokeBelow(u, l)),
        2 => (tok.clone(), 0..USER_AGENTS, 0..ADDRESSES)
            .prop_map(|(t, ua, a)| Op::SeenFrom(t, ua, a)),
        3 => prop_oneof![
            // The boundaries: touch interval, grace, trial, idle, auth lifetime, lifetime.
            Just(1u16), Just(4), Just(5), Just(59), Just(60), Just(599), Just(600),
            Just(1799), Just(1800), Just(119), Just(120), 0u16..4000,
        ].prop_map(Op::Advance),
        // Level 2's lifetime.
        1 => prop_oneof![Just(299u16), Just(300)].prop_map(Op::Advance),
        1 => Just(Op::Reap),
        1 => Just(Op::Clear),
        2 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        2 => tok.clone().prop_map(Op::OpenInstance),
        2 => (tok.clone(), any::<u8>()).prop_map(|(t, w)| Op::EndInstance(t, w)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn in_memory_store_agrees_with_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(Kind::Memory, ops).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_store_agrees_with_model_across_reopens(ops in proptest::collection::vec(op(), 1..120)) {
        run(Kind::Log, ops).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_store_on_the_simulated_disk_agrees_with_model_across_reopens(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        run(Kind::LogSimulated, ops).map_err(TestCaseError::fail)?;
    }
}

#[cfg(feature = "sled")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn sled_store_agrees_with_model_across_reopens(ops in proptest::collection::vec(op(), 1..120)) {
        run(Kind::Sled, ops).map_err(TestCaseError::fail)?;
    }
}
