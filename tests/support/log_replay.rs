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

pub fn check(data: &[u8]) {
    let disk = SimFs::new(0);
    let dir = Path::new(DIR);
    lay_out(&disk, dir, data);
    for salvage in [false, true] {
        match Store::open_with(dir, opts(&disk, salvage)) {
            Ok(store) => {
                store
                    .verify()
                    .unwrap_or_else(|e| panic!("opened but inconsistent: {e}"));
                let _ = store.stats();
                drop(store);
                // Recovery leaves a clean directory: it opens again without salvage.
                let again = Store::open_with(dir, opts(&disk, false)).unwrap_or_else(|e| {
                    panic!("opened once (salvage {salvage}) but not twice: {e}")
                });
                again
                    .verify()
                    .unwrap_or_else(|e| panic!("reopened but inconsistent: {e}"));
            }
            Err(Error::Corrupt { .. } | Error::UnsupportedFormat { .. }) => {}
            Err(e) => panic!("open failed with an unexpected error: {e}"),
        }
    }
}
