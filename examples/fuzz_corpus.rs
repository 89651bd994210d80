//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/` (run by
//! `.ci/run` before fuzzing; nothing generated is committed). The seeds themselves are
//! built by `tests/support/corpus.rs`.
//!
//! `cargo run --example fuzz_corpus [-- <output dir>]`

#[path = "../tests/support/corpus.rs"]
mod corpus;
#[path = "../tests/support/log_replay.rs"]
mod log_replay;

use std::path::PathBuf;

fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    for (target, name, bytes) in corpus::seeds() {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("seed corpus written to {}", out.display());
}
