//! The fuzz targets' seed corpus, generated (never committed): written to disk by
//! `examples/fuzz_corpus.rs`, and replayed through every check by
//! `tests/fuzz_regressions.rs`.
//!
//! - `log_replay`: real store directories written through the public API — one segment,
//!   several segments, a compacted base with the segments after it, a rotation alias in
//!   a base, a clear — in the target's input layout;
//! - `token_parse`: tokens and ids, valid and one mutation away;
//! - `ops_model` and `crash_replay`: operation sequences from a fixed-seed generator;
//! - `faults`: a disk seed and a mode, then choices from the same generator.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use sessiondb::{Durability, NewSession, Options, SessionData, Store, Token};

use super::log_replay;

fn store_files(dir: &Path) -> Vec<(u8, u8, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "MANIFEST" {
            files.push((log_replay::MANIFEST, 0, std::fs::read(&path).expect("read")));
            continue;
        }
        let (kind, rest) = if let Some(r) = name.strip_prefix("seg-") {
            (log_replay::SEGMENT, r)
        } else if let Some(r) = name.strip_prefix("base-") {
            (log_replay::BASE, r)
        } else {
            continue;
        };
        let seq = u64::from_str_radix(rest.trim_end_matches(".log"), 16).unwrap_or(1);
        let seq = u8::try_from(seq.saturating_sub(1)).unwrap_or(u8::MAX);
        files.push((kind, seq, std::fs::read(&path).expect("read")));
    }
    files
}

/// A store written by `work`, as two `log_replay` inputs: after a clean close (every
/// file sealed in the manifest), and as a crash just before it would leave it (the last
/// segment still active, cut where its preallocated zeros begin).
fn recorded(segment_bytes: u64, work: impl FnOnce(&Store)) -> [Vec<u8>; 2] {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        dir.path(),
        Options::default()
            .durability(Durability::Sync)
            .segment_bytes(segment_bytes)
            .compaction(false, u64::MAX, 2.0)
            .reaper_interval(None)
            .rotation_grace(Duration::from_secs(3600)),
    )
    .expect("open");
    work(&store);
    let mut crashed = store_files(dir.path());
    drop(store);
    if let Some(active) = crashed
        .iter_mut()
        .filter(|f| f.0 == log_replay::SEGMENT)
        .max_by_key(|f| f.1)
    {
        let zeros = active.2.iter().rev().take_while(|&&b| b == 0).count();
        active.2.truncate(active.2.len() - zeros);
    }
    [
        log_replay::encode(&store_files(dir.path())),
        log_replay::encode(&crashed),
    ]
}

fn sessions(store: &Store, n: u32) -> Vec<Token> {
    (0..n)
        .map(|i| {
            let mut d = SessionData::new();
            d.insert("n", &i).unwrap();
            let new = if i % 3 == 0 {
                NewSession::anonymous()
            } else {
                NewSession::for_user(format!("user-{}", i % 4)).label("Firefox")
            };
            store.create(new.data(d)).expect("create").0
        })
        .collect()
}

/// A deterministic xorshift, so the corpus is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

/// Every seed: (target, name, bytes).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut write = |target: &'static str, name: &str, bytes: &[u8]| {
        out.push((target, name.to_owned(), bytes.to_vec()));
    };
    let mut stores: Vec<(&str, [Vec<u8>; 2])> = Vec::new();

    stores.push((
        "one-segment",
        recorded(1 << 20, |s| {
            let t = sessions(s, 6);
            s.put(&t[1], "k", "v").unwrap();
            s.end(&t[2]).unwrap();
        }),
    ));
    stores.push((
        "many-segments",
        recorded(4096, |s| {
            let t = sessions(s, 30);
            for (i, tok) in t.iter().enumerate() {
                s.put(tok, "pad", &"x".repeat(100 + i)).unwrap();
            }
            s.revoke_user("user-1").unwrap();
        }),
    ));
    stores.push((
        "base-and-segments",
        recorded(1 << 20, |s| {
            let t = sessions(s, 8);
            s.compact().unwrap();
            let new = s.rotate(&t[1]).unwrap();
            s.bind_user(&new, "user-9").unwrap();
            s.unbind_user(&t[4]).unwrap();
            s.extend(&t[5], Duration::from_secs(60)).unwrap();
            s.set_label(&t[7], Some("Safari")).unwrap();
        }),
    ));
    stores.push((
        "rotation-alias-in-base",
        recorded(1 << 20, |s| {
            let t = sessions(s, 3);
            s.rotate(&t[0]).unwrap();
            s.compact().unwrap();
        }),
    ));
    stores.push((
        "cleared",
        recorded(1 << 20, |s| {
            sessions(s, 4);
            s.clear().unwrap();
            sessions(s, 2);
        }),
    ));
    for (name, [closed, crashed]) in &stores {
        write("log_replay", &format!("{name}-closed"), closed);
        write("log_replay", &format!("{name}-crashed"), crashed);
    }
    write("log_replay", "empty", &[]);

    let token = Token::generate().unwrap().to_string();
    write("token_parse", "token", token.as_bytes());
    write("token_parse", "token-short", &token.as_bytes()[..31]);
    write(
        "token_parse",
        "token-bad-char",
        format!("{}+", &token[..31]).as_bytes(),
    );
    write(
        "token_parse",
        "session-id",
        b"5ce5d909-8aa1-4fdd-a965-c2fcb5ddec69",
    );
    write(
        "token_parse",
        "session-id-upper",
        b"5CE5D909-8AA1-4FDD-A965-C2FCB5DDEC69",
    );
    write(
        "token_parse",
        "session-id-simple",
        b"5ce5d9098aa14fdda965c2fcb5ddec69",
    );

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..16 {
        let len = 32 + 32 * i;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next()).collect();
        write("ops_model", &format!("random-{i}"), &bytes);
        write("crash_replay", &format!("random-{i}"), &bytes);
    }
    // A create-heavy sequence: the other operations need sessions to act on.
    let creates: Vec<u8> = (0..40u8).flat_map(|i| [0, i, 3, i, 9, i]).collect();
    write("ops_model", "creates", &creates);
    let mut crash = vec![0xff, 0xff, 0, 0];
    crash.extend((0..40u8).flat_map(|i| [7 * (i % 2), i, 1, i, 3, i]));
    write("crash_replay", "creates", &crash);
    // The same, with zeros after the cut (a crash in the preallocated part).
    crash[3] = 0x80;
    write("crash_replay", "creates-zero-filled", &crash);
    // faults: 8 bytes of disk seed, a mode byte (even: Sync), then the choices, 8 bytes
    // each (the first picks whether and how often calls fail).
    for i in 0..8u8 {
        let mut bytes: Vec<u8> = (0..8).map(|_| rng.next()).collect();
        bytes.push(i);
        bytes.extend((0..(64 + 64 * usize::from(i)) * 8).map(|_| rng.next()));
        write("faults", &format!("random-{i}"), &bytes);
    }
    out
}
