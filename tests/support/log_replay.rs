//! The `log_replay` check, shared by the fuzz target and the regression tests: any
//! bytes, laid out as a set of log files, must open to a consistent store or give a
//! typed error — never a panic, never a hang, never an allocation the input does not
//! justify — and a store that opened once must open again.
//!
//! Input layout, repeated up to 8 times: `[kind: u8 (modulo 3: 0 = segment, 1 = base,
//! 2 = the manifest)] [sequence: u8] [length: u32 LE] [length bytes]`; a short tail is
//! one last file.
//!
//! The files sit on a simulated disk in memory ([`sessiondb::vfs::SimFs`]): no file is
//! written to a real directory, so an input costs what decoding it costs.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use sessiondb::vfs::SimFs;
use sessiondb::{Durability, Error, Options, Store};

/// Where the store's files are on the simulated disk.
const DIR: &str = "/fuzz/store";

fn opts(disk: &SimFs, salvage: bool) -> Options {
    Options::default()
        .file_system(disk.clone())
        .reaper_interval(None)
        .shards(4)
        .compaction(false, u64::MAX, 2.0)
        .durability(Durability::Buffered {
            flush_every: Duration::from_secs(3600),
        })
        .salvage(salvage)
        .deterministic(true)
}

/// Writes the files the input describes into `dir` on `disk`.
pub fn lay_out(disk: &SimFs, dir: &Path, data: &[u8]) {
    let mut rest = data;
    let mut files = 0;
    while !rest.is_empty() && files < 8 {
        files += 1;
        if rest.len() < 6 {
            disk.put_file(&dir.join("seg-0000000000000001.log"), rest)
                .expect("write");
            return;
        }
        let kind = rest[0] % 3;
        let seq = u64::from(rest[1]) + 1;
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        rest = &rest[6..];
        let (content, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let name = match kind {
            0 => format!("seg-{seq:016x}.log"),
            1 => format!("base-{seq:016x}.log"),
            _ => "MANIFEST".to_owned(),
        };
        disk.put_file(&dir.join(name), content).expect("write");
    }
}

/// A file's kind in the input layout.
pub const SEGMENT: u8 = 0;
pub const BASE: u8 = 1;
pub const MANIFEST: u8 = 2;

/// Encodes files (kind, sequence - 1, bytes) into the input layout (for the corpus
/// generator).
pub fn encode(files: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, seq, content) in files {
        out.push(*kind);
        out.push(*seq);
        out.extend_from_slice(&(content.len() as u32).to_le_bytes());
        out.extend_from_slice(content);
    }
    out
}

/// The whole check: recovery alone, then the full open and reopen.
pub fn check(data: &[u8]) {
    check_with(data, true);
}

/// What the fuzz target runs: recovery alone on every input (it decodes everything a
/// full open does, without starting the writer), and the full open and reopen on one
/// input in 64 (chosen by the input's bytes, so a run is reproducible).
pub fn check_sampled(data: &[u8]) {
    // Hashed from the length and the last 16 bytes only: a loop over the whole input
    // costs the fuzzer a traced comparison per byte.
    let tail = &data[data.len().saturating_sub(16)..];
    let h = tail
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64 ^ data.len() as u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    check_with(data, h % 64 == 0);
}

fn check_with(data: &[u8], full: bool) {
    let dir = Path::new(DIR);
    // Recovery alone, each mode on its own copy of the files.
    let mut recovered = [None, None];
    for (i, salvage) in [false, true].into_iter().enumerate() {
        let disk = SimFs::new(0);
        lay_out(&disk, dir, data);
        match Store::recover_in_memory(dir, opts(&disk, salvage)) {
            Ok(store) => {
                store
                    .verify()
                    .unwrap_or_else(|e| panic!("recovered but inconsistent: {e}"));
                let _ = store.stats();
                recovered[i] = Some(store.len());
                drop(store);
                if !salvage {
                    // What recovery cut and removed leaves files it reads again whole.
                    let again = Store::recover_in_memory(dir, opts(&disk, false))
                        .unwrap_or_else(|e| panic!("recovered once but not twice: {e}"));
                    assert_eq!(again.len(), recovered[i].unwrap(), "the same sessions");
                }
            }
            Err(Error::Corrupt { .. } | Error::UnsupportedFormat { .. }) => {}
            Err(e) => panic!("recovery failed with an unexpected error: {e}"),
        }
    }
    if !full {
        return;
    }
    let disk = SimFs::new(0);
    lay_out(&disk, dir, data);
    for salvage in [false, true] {
        match Store::open_with(dir, opts(&disk, salvage)) {
            Ok(store) => {
                store
                    .verify()
                    .unwrap_or_else(|e| panic!("opened but inconsistent: {e}"));
                let _ = store.stats();
                if !salvage {
                    assert_eq!(
                        Some(store.len()),
                        recovered[0],
                        "a full open finds what recovery alone found"
                    );
                }
                drop(store);
                // Recovery leaves a clean directory: it opens again without salvage.
                let again = Store::open_with(dir, opts(&disk, false)).unwrap_or_else(|e| {
                    panic!("opened once (salvage {salvage}) but not twice: {e}")
                });
                again
                    .verify()
                    .unwrap_or_else(|e| panic!("reopened but inconsistent: {e}"));
            }
            Err(Error::Corrupt { .. } | Error::UnsupportedFormat { .. }) => {
                if !salvage {
                    assert_eq!(
                        recovered[0], None,
                        "recovery alone opened what a full open refused"
                    );
                }
            }
            Err(e) => panic!("open failed with an unexpected error: {e}"),
        }
    }
}
