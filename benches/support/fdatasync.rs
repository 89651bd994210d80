//! The disk's raw fdatasync rate: the ceiling for one synchronous writer, next to which
//! the durable engines' figures are read. Shared by the `durability` and `throughput`
//! benches.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

/// Size of the file the in-place probe overwrites, over and over.
const SPAN_BYTES: u64 = 16 << 20;

/// fdatasyncs per second of `block`-byte writes to a file in `dir` (put it where the
/// stores being measured keep theirs) for `secs`: appends that grow the file (so each
/// sync also commits its new size through the filesystem journal), or, with
/// `in_place`, sequential overwrites of a 16 MiB file written out beforehand — what
/// sessiondb's zero-filled active log segment does. The file is removed afterwards.
pub fn raw_fdatasync_rate(dir: &Path, secs: f64, block: usize, in_place: bool) -> f64 {
    let path = dir.join("raw-fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("probe file");
    if in_place {
        f.write_all(&vec![0u8; SPAN_BYTES as usize])
            .expect("prefill");
        f.sync_all().expect("fsync");
        f.seek(SeekFrom::Start(0)).expect("seek");
    }
    let block = vec![7u8; block];
    let start = Instant::now();
    let (mut n, mut at) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs {
        if in_place && at + block.len() as u64 > SPAN_BYTES {
            f.seek(SeekFrom::Start(0)).expect("seek");
            at = 0;
        }
        f.write_all(&block).expect("write");
        at += block.len() as u64;
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).expect("remove the probe file");
    rate
}
