//! The fuzz targets' checks as plain tests: every seed the corpus generator makes, and
//! every input saved under `tests/fuzz_regressions/<target>/` (minimized inputs of past
//! fuzzer findings), goes through the same check the fuzz target runs.

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/crash_replay.rs"]
mod crash_replay;
#[path = "support/log_replay.rs"]
mod log_replay;
#[path = "support/model.rs"]
mod model;
#[path = "support/ops_input.rs"]
mod ops_input;
#[path = "support/simulation.rs"]
mod simulation;

use sessiondb::{SessionId, Token};

fn token_parse(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(t) = Token::parse(&s) {
        assert_eq!(t.to_string(), s);
    }
    if let Ok(id) = SessionId::parse(&s) {
        assert_eq!(id.to_string(), s.to_ascii_lowercase());
    }
}

fn run(target: &str, data: &[u8]) {
    match target {
        "log_replay" => log_replay::check(data),
        "token_parse" => token_parse(data),
        "ops_model" => {
            // The fuzz target's store (on the simulated disk), and the same on the
            // real one.
            for kind in [model::Kind::LogSimulated, model::Kind::LogBuffered] {
                let ops = ops_input::ops(data, 200);
                model::run(kind, ops)
                    .unwrap_or_else(|e| panic!("store and model disagree ({kind:?}): {e}"));
            }
        }
        "crash_replay" => crash_replay::check(data),
        "faults" => {
            simulation::run_bytes(data).unwrap_or_else(|e| panic!("{e}"));
        }
        other => panic!("unknown fuzz target {other}"),
    }
}

fn saved(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read a saved input"),
            )
        })
        .collect();
    out.sort();
    out
}

fn check_target(target: &str) {
    let seeds: Vec<(String, Vec<u8>)> = corpus::seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, name, bytes)| (name, bytes))
        .collect();
    assert!(!seeds.is_empty(), "the generator makes seeds for {target}");
    for (name, bytes) in seeds.iter().chain(saved(target).iter()) {
        eprintln!("{target}: {name}");
        run(target, bytes);
    }
}

#[test]
fn log_replay_seeds_and_saved_inputs_pass() {
    check_target("log_replay");
}

#[test]
fn token_parse_seeds_and_saved_inputs_pass() {
    check_target("token_parse");
}

#[test]
fn ops_model_seeds_and_saved_inputs_pass() {
    check_target("ops_model");
}

#[test]
fn crash_replay_seeds_and_saved_inputs_pass() {
    check_target("crash_replay");
}

#[test]
fn faults_seeds_and_saved_inputs_pass() {
    check_target("faults");
}
