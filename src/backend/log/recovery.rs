//! Recovery: rebuilding the live state from a store directory on open.
//!
//! The newest base (if any) is read first, then every segment after it, in order, each
//! record checksummed and validated. Damage is handled by where it is:
//!
//! - in the **last segment**, past the last point that was fsynced (the torn tail a
//!   crash leaves): cut off, and reported in [`RecoveryReport::bytes_truncated`]; so is
//!   the zero-filled space the writer preallocates past the records (not counted);
//! - **anywhere else**: [`Error::Corrupt`] naming the file and offset — unless the
//!   store is opened with [`crate::Options::salvage`], which skips the damaged bytes to
//!   the next valid record and lists them in [`RecoveryReport::skipped`].
//!
//! Every write batch starts with a frame recording how far the segment had been fsynced
//! when the batch was written (see [`crate::backend::log::record::kind::BATCH`]); damage is a
//! torn tail exactly when no later batch proves it had already been made durable.
//!
//! Files are read a chunk at a time ([`ChunkedFrames`]), never whole, except in
//! salvage mode: a base's two halves are decoded on two threads, a segment's records
//! are decoded on one thread and applied, in order, on another.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::interner::UserInterner;
use crate::backend::log::format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, FileKind, Frame, HEADER_LEN, HeaderError, MANIFEST_SINCE,
    decode_header, parse_name, path_of, read_frame,
};
use crate::backend::log::manifest;
use crate::backend::log::manifest::{MANIFEST, MANIFEST_TMP, Manifest};
use crate::backend::log::record::{
    BaseRecord, decode_base_record, decode_batch, decode_record, kind,
};
use crate::backend::log::segment::PREALLOC_BYTES;
use crate::backend::{BasePart, RecoveryReport, Replay, SkippedRange};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::change::{Change, Record};
use crate::model::session::UserId;
use crate::model::token::{SessionId, TokenHash};
use crate::util::parallel::map_on_threads;
use crate::util::vfs::{FileHandle, FileSystem, OpenMode, remove};

/// The files of a recovered log directory, for the writer and compaction to go on from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layout {
    /// The base in use, if any.
    pub(crate) base: Option<(u64, u64)>,
    /// Segments after the base: (sequence, size in bytes), ascending.
    pub(crate) segments: Vec<(u64, u64)>,
}

impl Layout {
    pub(crate) fn next_seq(&self) -> u64 {
        let last_seg = self.segments.last().map(|s| s.0);
        let base = self.base.map(|b| b.0);
        last_seg.max(base).map_or(1, |s| s + 1)
    }
}

fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        segment: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// How recovery knows where a file ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Sealed: the manifest recorded its length, and it must be exactly that long.
    Sealed(u64),
    /// The segment the manifest names active: its header was durable before the
    /// manifest named it; past the header, damage after its last fsync is a torn tail.
    Active,
    /// A file of a format-1 store before the last: it must be whole.
    Inferred,
    /// The last segment of a format-1 store: a torn tail is cut, and a file shorter
    /// than its header (created just before a crash) is removed.
    InferredLast,
}

/// What recovery reads and removes, decided from the manifest (or, in a store of
/// format 1, from the files found) before any file is read.
#[derive(Default)]
struct Plan {
    /// The base to read.
    base: Option<(u64, End)>,
    /// The segments to read, ascending.
    segments: Vec<(u64, End)>,
    /// Files no longer part of the log — left by a compaction, roll, open or close
    /// that a crash interrupted — removed once the log has been read.
    leftovers: Vec<PathBuf>,
}

/// The log files found in a directory: (kind, sequence) and their lengths.
struct Found {
    bases: Vec<(u64, u64)>,
    segments: Vec<(u64, u64)>,
}

impl Found {
    fn has(list: &[(u64, u64)], seq: u64) -> bool {
        list.binary_search_by_key(&seq, |f| f.0).is_ok()
    }
}

/// Lists the log files of `dir` (with their lengths), removing what an unfinished
/// compaction or manifest write left behind (`*.tmp`: never part of the log).
fn list_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Found> {
    let mut found = Found {
        bases: Vec::new(),
        segments: Vec::new(),
    };
    let listing = |e| Error::io(format!("listing store directory {}", dir.display()), e);
    for entry in fs.list_dir(dir).map_err(listing)? {
        let name = entry.name.as_str();
        let unfinished_base = matches!(
            name.strip_suffix(".tmp").map(parse_name),
            Some(Some((FileKind::Base, _)))
        );
        if unfinished_base || name == MANIFEST_TMP {
            remove(fs, &dir.join(name))?;
            continue;
        }
        let Some((kind, seq)) = parse_name(name) else {
            continue;
        };
        let len = entry.len;
        match kind {
            FileKind::Base => found.bases.push((seq, len)),
            FileKind::Segment => found.segments.push((seq, len)),
        }
    }
    found.bases.sort_unstable();
    found.segments.sort_unstable();
    Ok(found)
}

/// Refuses (or, salvaging, reports) a problem with the log as a whole: a file the
/// manifest names that is missing, a file it does not name that holds records.
fn refuse(
    salvage: bool,
    report: &mut RecoveryReport,
    file: PathBuf,
    len: u64,
    reason: String,
) -> Result<()> {
    if !salvage {
        return Err(corrupt(&file, 0, reason));
    }
    report.skipped.push(SkippedRange {
        file,
        offset: 0,
        len,
        reason,
    });
    Ok(())
}

/// The plan for a store with a manifest: exactly the files it names, each ending where
/// it says; anything else is a leftover to remove, or — holding records the manifest
/// does not account for — corruption.
fn plan_listed(
    dir: &Path,
    m: &Manifest,
    found: &Found,
    salvage: bool,
    report: &mut RecoveryReport,
) -> Result<Plan> {
    let mut plan = Plan::default();
    let base_seq = m.base.map(|b| b.0);
    for &(seq, _) in &found.bases {
        if Some(seq) != base_seq {
            // Replaced by the base in use, or written by a compaction that a crash
            // stopped before the manifest named it (its inputs are all still named).
            plan.leftovers.push(path_of(dir, FileKind::Base, seq));
        }
    }
    if let Some((seq, len)) = m.base {
        if Found::has(&found.bases, seq) {
            plan.base = Some((seq, End::Sealed(len)));
        } else {
            let why = "the base the manifest names is missing".to_owned();
            refuse(salvage, report, path_of(dir, FileKind::Base, seq), len, why)?;
        }
    }
    let named = m
        .sealed
        .iter()
        .map(|&(seq, len)| (seq, End::Sealed(len)))
        .chain(m.active.map(|a| (a, End::Active)));
    for (seq, end) in named {
        if Found::has(&found.segments, seq) {
            plan.segments.push((seq, end));
        } else {
            let (len, why) = match end {
                End::Sealed(len) => (len, "a sealed segment the manifest names is missing"),
                _ => (0, "the active segment the manifest names is missing"),
            };
            let path = path_of(dir, FileKind::Segment, seq);
            refuse(salvage, report, path, len, why.to_owned())?;
        }
    }
    for &(seq, len) in &found.segments {
        if m.sealed_len(seq).is_some() || m.active == Some(seq) {
            continue;
        }
        let path = path_of(dir, FileKind::Segment, seq);
        if base_seq.is_some_and(|b| seq <= b) || len <= HEADER_LEN as u64 {
            // Covered by the base (a compaction stopped while deleting), or holding
            // no record: created by a roll or an open that a crash stopped before the
            // manifest named it, or dropped (empty) by an open or a close.
            plan.leftovers.push(path);
        } else if salvage {
            // Read in its place, for whatever it holds.
            report.skipped.push(SkippedRange {
                file: path,
                offset: 0,
                len: 0,
                reason: "a segment the manifest does not name".into(),
            });
            plan.segments.push((seq, End::Inferred));
        } else {
            return Err(corrupt(
                &path,
                0,
                format!(
                    "the segment holds records but the manifest does not name it (it names \
                     segments up to {})",
                    m.last_seq()
                ),
            ));
        }
    }
    plan.segments.sort_unstable_by_key(|s| s.0);
    Ok(plan)
}

/// The plan for a store without a manifest — one written by format 1, or new: the
/// newest base and every segment after it, the last one's end inferred from its
/// bytes. A file of a later format holding records means the manifest was lost.
fn plan_unlisted(
    fs: &dyn FileSystem,
    dir: &Path,
    found: &Found,
    salvage: bool,
    report: &mut RecoveryReport,
) -> Result<Plan> {
    let files = found
        .bases
        .iter()
        .map(|&(seq, len)| (FileKind::Base, seq, len))
        .chain(
            found
                .segments
                .iter()
                .map(|&(seq, len)| (FileKind::Segment, seq, len)),
        );
    for (kind, seq, len) in files {
        if len <= HEADER_LEN as u64 {
            continue;
        }
        let path = path_of(dir, kind, seq);
        let mut head = [0u8; HEADER_LEN];
        fs.open(&path, OpenMode::Read)
            .and_then(|f| f.read_exact_at(&mut head, 0))
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if decode_header(&head, kind).is_ok_and(|h| h.version >= MANIFEST_SINCE) {
            let why = format!(
                "the manifest is missing, but {} was written by a format that keeps one",
                path.display()
            );
            refuse(salvage, report, dir.join(MANIFEST), 0, why)?;
            break;
        }
    }
    let mut plan = Plan::default();
    let newest_base = found.bases.last().map(|b| b.0);
    if let Some(base) = newest_base {
        plan.base = Some((base, End::Inferred));
        // Leftovers of a compaction interrupted after its base was in place.
        for &(old, _) in &found.bases[..found.bases.len() - 1] {
            plan.leftovers.push(path_of(dir, FileKind::Base, old));
        }
    }
    let mut expected = newest_base.map(|b| b + 1);
    for &(seq, _) in &found.segments {
        if newest_base.is_some_and(|b| seq <= b) {
            plan.leftovers.push(path_of(dir, FileKind::Segment, seq));
            continue;
        }
        if let Some(e) = expected
            && seq != e
        {
            let missing = path_of(dir, FileKind::Segment, e);
            refuse(
                salvage,
                report,
                missing,
                0,
                "segment file is missing".into(),
            )?;
        }
        expected = Some(seq + 1);
        plan.segments.push((seq, End::Inferred));
    }
    if let Some(last) = plan.segments.last_mut() {
        last.1 = End::InferredLast;
    }
    Ok(plan)
}

/// Reads a whole store directory. `salvage` skips damage instead of failing.
pub(crate) fn recover_dir<R: Replay>(
    fs: &dyn FileSystem,
    dir: &Path,
    salvage: bool,
    sink: &R,
) -> Result<(RecoveryReport, Layout)> {
    let started = Instant::now();
    let mut report = RecoveryReport {
        backend: "log",
        ..RecoveryReport::default()
    };
    let found = list_dir(fs, dir)?;
    let manifest = match manifest::read(fs, dir) {
        Ok(m) => m,
        Err(Error::Corrupt {
            segment, reason, ..
        }) if salvage => {
            // Without it, read what the files themselves say.
            report.skipped.push(SkippedRange {
                file: segment,
                offset: 0,
                len: 0,
                reason,
            });
            None
        }
        Err(e) => return Err(e),
    };
    let plan = match &manifest {
        Some(m) => plan_listed(dir, m, &found, salvage, &mut report)?,
        None => plan_unlisted(fs, dir, &found, salvage, &mut report)?,
    };

    // Pre-size for the sessions the files can hold (a session image is ~300 bytes), so
    // the map does not rehash a million entries while it grows.
    let len_of = |list: &[(u64, u64)], seq: u64| {
        list.binary_search_by_key(&seq, |f| f.0)
            .map_or(0, |i| list[i].1)
    };
    let bytes: u64 = plan.base.map_or(0, |(seq, _)| len_of(&found.bases, seq))
        + plan
            .segments
            .iter()
            .map(|&(seq, _)| len_of(&found.segments, seq))
            .sum::<u64>();
    sink.reserve(usize::try_from(bytes / 300).unwrap_or(0).min(1 << 26));
    let mut layout = Layout::default();
    if let Some((base, end)) = plan.base {
        let path = path_of(dir, FileKind::Base, base);
        let size = replay_file(
            fs,
            &path,
            FileKind::Base,
            base,
            end,
            salvage,
            sink,
            &mut report,
        )?;
        layout.base = Some((base, size));
    }
    for &(seq, end) in &plan.segments {
        let path = path_of(dir, FileKind::Segment, seq);
        let size = replay_file(
            fs,
            &path,
            FileKind::Segment,
            seq,
            end,
            salvage,
            sink,
            &mut report,
        )?;
        if size > 0 {
            layout.segments.push((seq, size));
        }
    }
    // The last segment is about to be named sealed at its length: that length must be
    // on disk, not only in the page cache of a process that died.
    if let Some(&(seq, _)) = layout.segments.last() {
        let path = path_of(dir, FileKind::Segment, seq);
        fs.open(&path, OpenMode::Read)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
    }
    for path in &plan.leftovers {
        remove(fs, path)?;
    }
    report.duration = started.elapsed();
    Ok((report, layout))
}

/// Segments from this size up are read by two threads, each into its half of the
/// buffer: the kernel's copy and the faulting-in of the fresh buffer's pages then run
/// on both cores. (A base is never read whole: see [`replay_base_in_parallel`].)
const PARALLEL_READ_BYTES: u64 = 8 << 20;

/// The whole file at `path` (the store's directory lock keeps its size fixed
/// meanwhile).
fn read_whole(fs: &dyn FileSystem, path: &Path) -> std::io::Result<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read)?;
    let len = file.len()?;
    if len < PARALLEL_READ_BYTES {
        return file.read_all();
    }
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    let (front, back) = buf.split_at_mut(len / 2);
    let file: &dyn FileHandle = &*file;
    std::thread::scope(|scope| {
        let other = scope.spawn(move || file.read_exact_at(back, (len / 2) as u64));
        let mine = file.read_exact_at(front, 0);
        other
            .join()
            .expect("a read thread does not panic")
            .and(mine)
    })?;
    Ok(buf)
}

/// Checks the header at the start of `head` (the file's first bytes): its kind, its
/// format version and the sequence the file's name gives.
fn check_header(path: &Path, head: &[u8], kind_of_file: FileKind, seq: u64) -> Result<()> {
    match decode_header(head, kind_of_file).map(|h| h.seq) {
        Ok(s) if s == seq => Ok(()),
        Ok(s) => Err(corrupt(
            path,
            0,
            format!("header says sequence {s}, the name says {seq}"),
        )),
        Err(HeaderError::Short) => Err(corrupt(path, 0, "file shorter than its header")),
        Err(HeaderError::Newer(found)) => Err(Error::UnsupportedFormat {
            file: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(HeaderError::Damaged(why)) => Err(corrupt(path, 0, why)),
    }
}

/// Checks a sealed file's length against the one the manifest recorded: a file cut at
/// a record boundary reads as whole records, so only its length tells (salvaging, the
/// difference is reported and what the file holds is read). Bytes past the recorded
/// length are cut off.
fn check_sealed_len(
    fs: &dyn FileSystem,
    path: &Path,
    expected: u64,
    salvage: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    let len = fs
        .open(path, OpenMode::Read)
        .and_then(|f| f.len())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if len == expected {
        return Ok(());
    }
    if len > expected {
        // Bytes past the length the manifest sealed the file at are not part of the
        // log: a segment is synced to that length before the manifest records it, and
        // never appended to after. They are what a cut left on disk when its fsync
        // failed while the page cache (and so the manifest) saw the cut: preallocated
        // zeros, or records never acknowledged. Cut again, and counted unless zeros.
        let zeros = zeros_only(fs, path, expected, len)?;
        truncate(fs, path, expected)?;
        if !zeros {
            report.bytes_truncated += len - expected;
        }
        return Ok(());
    }
    let reason =
        format!("the file is {len} bytes long, the manifest recorded {expected}: it was cut short");
    if !salvage {
        return Err(corrupt(path, len.min(expected), reason));
    }
    report.skipped.push(SkippedRange {
        file: path.to_path_buf(),
        offset: len.min(expected),
        len: len.abs_diff(expected),
        reason,
    });
    Ok(())
}

/// Whether the bytes of `path` from `from` to `to` are all zeros.
fn zeros_only(fs: &dyn FileSystem, path: &Path, from: u64, to: u64) -> Result<bool> {
    let reading = |e| Error::io(format!("reading {}", path.display()), e);
    let file = fs.open(path, OpenMode::Read).map_err(reading)?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(CHUNK_BYTES, |l| l.min(CHUNK_BYTES));
        file.read_exact_at(&mut buf[..n], at).map_err(reading)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Replays one file into `state`. Returns its size after any truncation (0 if it was
/// removed as an empty torn file).
#[allow(clippy::too_many_arguments)]
fn replay_file<R: Replay>(
    fs: &dyn FileSystem,
    path: &Path,
    kind_of_file: FileKind,
    seq: u64,
    end: End,
    salvage: bool,
    sink: &R,
    report: &mut RecoveryReport,
) -> Result<u64> {
    let reading = |e| Error::io(format!("reading {}", path.display()), e);
    if let End::Sealed(expected) = end {
        check_sealed_len(fs, path, expected, salvage, report)?;
    }
    // Only the segment that was being appended to can end in a torn tail.
    let last = matches!(end, End::Active | End::InferredLast);
    if kind_of_file == FileKind::Base && !salvage {
        let file = fs.open(path, OpenMode::Read).map_err(reading)?;
        let len = file.len().map_err(reading)?;
        let mut head = [0u8; HEADER_LEN];
        let got = usize::try_from(len).map_or(HEADER_LEN, |l| l.min(HEADER_LEN));
        file.read_exact_at(&mut head[..got], 0).map_err(reading)?;
        report.files += 1;
        report.bytes_read += len;
        check_header(path, &head[..got], kind_of_file, seq)?;
        replay_base_in_parallel(path, &*file, len, sink, report)?;
        return Ok(len);
    }
    if !salvage {
        return replay_segment_pipelined(fs, path, seq, end, sink, report);
    }
    let buf = read_whole(fs, path).map_err(reading)?;
    report.files += 1;
    report.bytes_read += buf.len() as u64;
    if end == End::InferredLast && buf.len() < HEADER_LEN {
        // Created just before a crash, before its header reached the disk.
        report.bytes_truncated += buf.len() as u64;
        remove(fs, path)?;
        return Ok(0);
    }
    check_header(path, &buf, kind_of_file, seq)?;
    let mut users = UserInterner::default();
    let mut pos = HEADER_LEN;
    while pos < buf.len() {
        let problem = match read_frame(&buf, pos) {
            Frame::Ok {
                kind: kind::BATCH,
                payload,
                next,
            } => {
                if decode_batch(payload).is_none() {
                    "malformed batch frame".to_owned()
                } else {
                    pos = next;
                    continue;
                }
            }
            Frame::Ok {
                kind,
                payload,
                next,
            } => match decode_record(kind, payload, &mut users) {
                Ok(rec) => {
                    sink.apply(rec);
                    report.records += 1;
                    pos = next;
                    continue;
                }
                Err(why) => why,
            },
            Frame::Truncated => "record cut short".to_owned(),
            Frame::BadChecksum => "record checksum mismatch".to_owned(),
        };
        if last
            && kind_of_file == FileKind::Segment
            && cut_torn_tail(fs, path, &buf[pos..], pos as u64, report)?
        {
            return Ok(pos as u64);
        }
        if !salvage {
            return Err(corrupt(path, pos as u64, problem));
        }
        let next = find_next_frame(&buf, pos + 1).unwrap_or(buf.len());
        report.skipped.push(SkippedRange {
            file: path.to_path_buf(),
            offset: pos as u64,
            len: (next - pos) as u64,
            reason: problem,
        });
        pos = next;
    }
    Ok(buf.len() as u64)
}

/// The payload length of a batch frame (the `synced_through` offset).
const BATCH_PAYLOAD_LEN: u32 = 8;

/// Segments from this size up are decoded on one thread and applied on another: twice
/// the preallocation step, so that a freshly started active segment (a few records,
/// then a megabyte of zeros) is read on the opening thread alone.
const PIPELINE_BYTES: u64 = 2 * PREALLOC_BYTES;

/// Bases from this size up are decoded by two threads, a half each.
const PARALLEL_BASE_BYTES: u64 = 1 << 20;

/// Records handed from the decoding thread to the applying one at a time.
const RECORDS_PER_HANDOFF: usize = 256;

/// Replays a segment (not in salvage mode) on two threads: one reads it a chunk at a
/// time and checksums, decodes and validates its records, the other applies them to
/// the index in log order, so decoding and applying run on both cores. At the first
/// damage the decoder stops; what it decoded before is applied, then the damage is
/// judged as on the sequential path — a torn tail of the last segment is cut (its bytes
/// from the damage on read to decide), anything else is `Error::Corrupt`.
fn replay_segment_pipelined<R: Replay>(
    fs: &dyn FileSystem,
    path: &Path,
    seq: u64,
    end: End,
    sink: &R,
    report: &mut RecoveryReport,
) -> Result<u64> {
    let reading = |e| Error::io(format!("reading {}", path.display()), e);
    let file = fs.open(path, OpenMode::Read).map_err(reading)?;
    let len = file.len().map_err(reading)?;
    report.files += 1;
    report.bytes_read += len;
    if len < HEADER_LEN as u64 {
        if end == End::InferredLast {
            // Created just before a crash, before its header reached the disk.
            report.bytes_truncated += len;
            remove(fs, path)?;
            return Ok(0);
        }
        return Err(corrupt(path, 0, "file shorter than its header"));
    }
    let mut head = [0u8; HEADER_LEN];
    file.read_exact_at(&mut head, 0).map_err(reading)?;
    check_header(path, &head, FileKind::Segment, seq)?;

    let file_ref: &dyn FileHandle = &*file;
    let problem = if len < PIPELINE_BYTES {
        // A small segment is decoded and applied here: a second thread costs more to
        // start than it saves.
        let mut users = UserInterner::default();
        let mut records = 0u64;
        let problem = walk_frames(file_ref, HEADER_LEN as u64, len, |kind, payload| {
            if kind == kind::BATCH {
                return decode_batch(payload)
                    .map(drop)
                    .ok_or_else(|| "malformed batch frame".to_owned());
            }
            sink.apply(decode_record(kind, payload, &mut users)?);
            records += 1;
            Ok(())
        });
        report.records += records;
        problem.map_err(reading)?
    } else {
        replay_segment_on_two_threads(file_ref, len, sink, report).map_err(reading)?
    };
    let Some((at, why)) = problem else {
        return Ok(len);
    };
    if matches!(end, End::Active | End::InferredLast) {
        let tail_len = usize::try_from(len - at).map_err(|e| reading(std::io::Error::other(e)))?;
        let mut tail = vec![0u8; tail_len];
        file.read_exact_at(&mut tail, at).map_err(reading)?;
        drop(file);
        if cut_torn_tail(fs, path, &tail, at, report)? {
            return Ok(at);
        }
    }
    Err(corrupt(path, at, why))
}

/// Decodes a segment's records on one thread and applies them on this one (see
/// [`replay_segment_pipelined`]); returns the first damage.
fn replay_segment_on_two_threads<R: Replay>(
    file_ref: &dyn FileHandle,
    len: u64,
    sink: &R,
    report: &mut RecoveryReport,
) -> std::io::Result<Option<(u64, String)>> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Record>>(4);
    std::thread::scope(|scope| {
        let decoder = scope.spawn(move || -> std::io::Result<Option<(u64, String)>> {
            let mut users = UserInterner::default();
            let mut batch = Vec::with_capacity(RECORDS_PER_HANDOFF);
            let problem = walk_frames(file_ref, HEADER_LEN as u64, len, |kind, payload| {
                if kind == kind::BATCH {
                    return decode_batch(payload)
                        .map(drop)
                        .ok_or_else(|| "malformed batch frame".to_owned());
                }
                batch.push(decode_record(kind, payload, &mut users)?);
                if batch.len() == RECORDS_PER_HANDOFF {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(RECORDS_PER_HANDOFF));
                    // The receiver outlives this thread: a failed send only means it
                    // is gone.
                    let _ = tx.send(full);
                }
                Ok(())
            })?;
            let _ = tx.send(batch);
            Ok(problem)
        });
        for batch in &rx {
            report.records += batch.len() as u64;
            for rec in batch {
                sink.apply(rec);
            }
        }
        decoder.join().expect("the decoding thread does not panic")
    })
}

/// Replays a compacted base — images and aliases, which commute — on two threads, each
/// reading its half of the file a chunk at a time, so the file is never held whole (a
/// fresh buffer the size of the base costs more in page faults and page clearing than
/// its copy from the page cache). The frame boundary at the middle is found by
/// following the lengths from the start (a thread reading only lengths runs well
/// ahead of one decoding); each half is walked, checksummed and decoded, its users
/// interned to indices (see [`BasePart`]), and the whole is bulk-loaded. Any damage is
/// `Error::Corrupt` at the first damaged offset (salvage uses the sequential path).
fn replay_base_in_parallel<R: Replay>(
    path: &Path,
    file: &dyn FileHandle,
    len: u64,
    sink: &R,
    report: &mut RecoveryReport,
) -> Result<()> {
    // A small base is read here, whole: two threads cost more to start than it does.
    let halves = if len < PARALLEL_BASE_BYTES {
        vec![(HEADER_LEN as u64, len)]
    } else {
        let mid = middle_boundary(file, len)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        vec![(HEADER_LEN as u64, mid), (mid, len)]
    };
    // For pre-sizing, from the size of a typical image.
    let per_shard =
        usize::try_from(len / halves.len() as u64 / 320).unwrap_or(0) / sink.shard_count();
    let cap = per_shard + per_shard / 8 + 16;
    let decode = |(from, to): (u64, u64)| -> std::io::Result<Part<R::Entry>> {
        let mut users = UserInterner::default();
        let mut records = 0u64;
        // Growing these lists would copy every image again.
        let mut shards: Vec<Vec<(u128, R::Entry, u32)>> = (0..sink.shard_count())
            .map(|_| Vec::with_capacity(cap))
            .collect();
        let mut aliases = Vec::new();
        let mut not_before = Vec::new();
        let problem = walk_frames(file, from, to, |kind, payload| {
            match decode_base_record(kind, payload, &mut users)? {
                BaseRecord::Image(img, user) => {
                    let (key, entry) = R::entry(img);
                    shards[sink.shard_of(key)].push((key, entry, user));
                }
                BaseRecord::Alias { hash, id, until } => {
                    aliases.push((hash, id, until));
                }
                BaseRecord::NotBefore(user, at) => not_before.push((user, at)),
            }
            records += 1;
            Ok(())
        })?;
        let part = BasePart { shards, users };
        Ok((records, problem, part, aliases, not_before))
    };
    let outcomes: Vec<std::io::Result<Part<R::Entry>>> = map_on_threads(halves, decode);
    let mut first: Option<(u64, String)> = None;
    let mut parts = Vec::new();
    let mut all_aliases = Vec::new();
    let mut all_not_before = Vec::new();
    for outcome in outcomes {
        let (records, problem, part, aliases, not_before) =
            outcome.map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        report.records += records;
        if let Some(p) = problem
            && first.as_ref().is_none_or(|f| p.0 < f.0)
        {
            first = Some(p);
        }
        parts.push(part);
        all_aliases.extend(aliases);
        all_not_before.extend(not_before);
    }
    if let Some((at, why)) = first {
        return Err(corrupt(path, at, why));
    }
    sink.load_base(parts, all_aliases);
    for (user, at) in all_not_before {
        sink.apply(Record::Change(Change::NotBefore { user, at }));
    }
    Ok(())
}

/// What one thread decoded of a base: records, the first damage, its sessions, its
/// aliases and its users' not-before times.
type Part<E> = (
    u64,
    Option<(u64, String)>,
    BasePart<E>,
    Vec<(TokenHash, SessionId, Timestamp)>,
    Vec<(UserId, Timestamp)>,
);

/// How much of a base a replay thread reads at a time: small enough to stay in a
/// core's cache while its frames are decoded.
const CHUNK_BYTES: usize = 256 << 10;

/// The first frame boundary at or past the middle of a base of `len` bytes, found by
/// following the frames' lengths from the start (or the start of the first frame whose
/// length runs past the end: the half that starts there reports it).
fn middle_boundary(file: &dyn FileHandle, len: u64) -> std::io::Result<u64> {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    // The file's bytes `chunk_at..chunk_at + filled` are in `chunk`.
    let (mut chunk_at, mut filled) = (0u64, 0usize);
    let mut at = HEADER_LEN as u64;
    while at < len / 2 {
        if at < chunk_at || at + 4 > chunk_at + filled as u64 {
            let want = usize::try_from(len - at).map_or(CHUNK_BYTES, |r| r.min(CHUNK_BYTES));
            if want < 4 {
                break;
            }
            file.read_exact_at(&mut chunk[..want], at)?;
            (chunk_at, filled) = (at, want);
        }
        let i = (at - chunk_at) as usize;
        let frame_len = u32::from_le_bytes(chunk[i..i + 4].try_into().expect("4 bytes"));
        let end = at + FRAME_HEADER_LEN as u64 + u64::from(frame_len);
        if end > len {
            break;
        }
        at = end;
    }
    Ok(at)
}

/// Walks the frames of `file` from `from` to `to` (frame boundaries) a chunk at a
/// time, handing each whole frame's kind and payload to `f`. Returns where the first
/// damage is and what it is — a frame cut short, a checksum mismatch, or what `f` found
/// wrong with a payload — or `None` if every frame up to `to` was whole and accepted.
fn walk_frames(
    file: &dyn FileHandle,
    from: u64,
    to: u64,
    mut f: impl FnMut(u8, &[u8]) -> std::result::Result<(), String>,
) -> std::io::Result<Option<(u64, String)>> {
    let mut frames = ChunkedFrames::new(file, from, to);
    while let Some((at, frame)) = frames.next()? {
        let outcome = match frame {
            Frame::Ok { kind, payload, .. } => f(kind, payload),
            Frame::Truncated => Err("record cut short".to_owned()),
            Frame::BadChecksum => Err("record checksum mismatch".to_owned()),
        };
        if let Err(why) = outcome {
            return Ok(Some((at, why)));
        }
    }
    Ok(None)
}

/// The frames of a file between two frame boundaries `from` and `to`, read a chunk at
/// a time into one buffer (grown only for a frame larger than a chunk). A frame that
/// runs past `to` reads as [`Frame::Truncated`].
struct ChunkedFrames<'f> {
    file: &'f dyn FileHandle,
    buf: Vec<u8>,
    /// The file offset of `buf[0]`.
    buf_at: u64,
    /// How much of `buf` holds the file's bytes.
    filled: usize,
    /// The next frame's place in `buf`.
    pos: usize,
    to: u64,
}

impl<'f> ChunkedFrames<'f> {
    fn new(file: &'f dyn FileHandle, from: u64, to: u64) -> Self {
        ChunkedFrames {
            file,
            buf: Vec::new(),
            buf_at: from,
            filled: 0,
            pos: 0,
            to,
        }
    }

    /// The next frame and its file offset; `None` at `to`.
    fn next(&mut self) -> std::io::Result<Option<(u64, Frame<'_>)>> {
        let at = self.buf_at + self.pos as u64;
        if at >= self.to {
            return Ok(None);
        }
        // Bytes the frame at `pos` needs: its header, then its header and payload.
        let have = self.filled - self.pos;
        let need = match self.buf.get(self.pos..self.pos + 4) {
            Some(l) if have >= FRAME_HEADER_LEN => {
                FRAME_HEADER_LEN + u32::from_le_bytes(l.try_into().expect("4 bytes")) as usize
            }
            _ => FRAME_HEADER_LEN,
        };
        if have < need && self.buf_at + (self.filled as u64) < self.to {
            self.refill(need)?;
        }
        Ok(Some((at, self.frame())))
    }

    /// The frame at `pos`, stepping past it when it is whole.
    fn frame(&mut self) -> Frame<'_> {
        let frame = read_frame(&self.buf[..self.filled], self.pos);
        if let Frame::Ok { next, .. } = frame {
            self.pos = next;
        }
        frame
    }

    /// Moves the unread bytes to the front and reads after them, up to a chunk or
    /// `need` bytes from `pos`, whichever is more, but never past `to`.
    fn refill(&mut self, need: usize) -> std::io::Result<()> {
        self.buf.copy_within(self.pos..self.filled, 0);
        self.buf_at += self.pos as u64;
        self.filled -= self.pos;
        self.pos = 0;
        let left = self.to - self.buf_at;
        let want =
            usize::try_from(left).map_or(need.max(CHUNK_BYTES), |l| l.min(need.max(CHUNK_BYTES)));
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let from = self.buf_at + self.filled as u64;
        self.file
            .read_exact_at(&mut self.buf[self.filled..want], from)?;
        self.filled = want;
        Ok(())
    }
}

/// Damage at file offset `at` of the last segment, whose bytes from `at` on are
/// `tail`: if it lies past every point a later batch says was fsynced — the unsynced
/// tail a crash can tear — the file is cut at `at`, the cut bytes are counted, and the
/// answer is true.
///
/// The writer zero-fills the active segment ahead of its records, so a crash leaves
/// zeros after the last record (or after a torn one): they are cut but not counted, and
/// the search for a later batch frame stops where they begin (zeros cannot start a
/// frame: the checksum of an empty frame is not 0).
fn cut_torn_tail(
    fs: &dyn FileSystem,
    path: &Path,
    tail: &[u8],
    at: u64,
    report: &mut RecoveryReport,
) -> Result<bool> {
    let zeros_from = crate::util::zeros_from(tail);
    let torn = is_torn(tail, zeros_from, at);
    if torn {
        truncate(fs, path, at)?;
        report.bytes_truncated += zeros_from as u64;
    }
    Ok(torn)
}

/// Whether damage at offset `at`, followed by `tail`, is a torn tail: no batch frame
/// starting in `tail[1..upto]` (before the zeros that end it) says the file was fsynced
/// past `at`.
fn is_torn(tail: &[u8], upto: usize, at: u64) -> bool {
    // Only a batch frame (8-byte payload) can prove anything: its type and length are
    // checked before its checksum, so the search costs O(tail), not a checksum of the
    // rest of the file at every byte (a damaged byte early in a large active segment
    // would otherwise keep an open busy for hours). The type byte is looked for a word
    // at a time.
    let type_at = FRAME_HEADER_LEN - 1;
    let mut from = 1 + type_at;
    while let Some(q) = find_byte(tail, from, kind::BATCH) {
        let p = q - type_at;
        if p >= upto {
            break;
        }
        let proves_synced = tail[p..p + 4] == BATCH_PAYLOAD_LEN.to_le_bytes()
            && matches!(
                read_frame(tail, p),
                Frame::Ok { kind: kind::BATCH, payload, .. }
                    if decode_batch(payload).is_some_and(|synced| synced > at)
            );
        if proves_synced {
            return false;
        }
        from = q + 1;
    }
    true
}

/// The first offset at or after `from` where `buf` holds `byte`, looked for eight
/// bytes at a time.
fn find_byte(buf: &[u8], from: usize, byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let mut i = from;
    while let Some(word) = buf.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ pattern;
        // The lowest byte flagged is the first that was `byte` (a zero after the xor).
        let zero = w.wrapping_sub(ONES) & !w & HIGHS;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    buf.get(i..)?.iter().position(|&b| b == byte).map(|p| i + p)
}

/// Which type bytes a frame of a known type has, as a table: the salvage search looks
/// at every byte of damage, and a lookup there costs less than a range test (in a
/// fuzzing build, where every comparison is traced, several times less).
const KNOWN_KIND: [bool; 256] = {
    let mut known = [false; 256];
    let mut k = kind::CREATE;
    while k <= kind::BATCH {
        known[k as usize] = true;
        k += 1;
    }
    known
};

/// The offset of the next checksummed frame of a known type at or after `from`.
fn find_next_frame(buf: &[u8], from: usize) -> Option<usize> {
    let type_at = FRAME_HEADER_LEN - 1;
    let mut p = from;
    loop {
        // The type byte first: a checksum only where a frame of a known type could be.
        let candidates = buf.get(p.checked_add(type_at)?..)?;
        p += candidates
            .iter()
            .position(|&k| KNOWN_KIND[usize::from(k)])?;
        if matches!(read_frame(buf, p), Frame::Ok { .. }) {
            return Some(p);
        }
        p += 1;
    }
}

fn truncate(fs: &dyn FileSystem, path: &Path, len: u64) -> Result<()> {
    let f = fs.open(path, OpenMode::Write).map_err(|e| {
        Error::io(
            format!("opening {} to cut its torn tail", path.display()),
            e,
        )
    })?;
    f.set_len(len)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("cutting the torn tail of {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn find_byte_finds_the_first_occurrence_as_a_byte_loop_does() {
        let mut state = 9u64;
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 64, 100] {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1);
                        // Few distinct values, so that the byte looked for is common.
                        [0u8, 5, 6, 0x80, 0xff][(state >> 60) as usize % 5]
                    })
                    .collect();
                for from in 0..=len + 1 {
                    for byte in [0u8, 5, 6, 0x80, 0xff, 7] {
                        let naive = buf
                            .get(from..)
                            .and_then(|b| b.iter().position(|&x| x == byte))
                            .map(|p| from + p);
                        assert_eq!(
                            super::find_byte(&buf, from, byte),
                            naive,
                            "{buf:?} from {from} byte {byte}"
                        );
                    }
                }
            }
        }
    }

    use super::*;
    use crate::backend::log::format::encode_frame;

    #[test]
    fn find_next_frame_finds_what_a_check_at_every_offset_finds() {
        let frame = |kind: u8, payload: &[u8]| {
            let mut out = Vec::new();
            encode_frame(&mut out, kind, payload);
            out
        };
        let mut state = 5u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    // Mostly bytes that look like a type, so candidates are common.
                    [0u8, 1, 9, 13, 14, 0xff][(state >> 60) as usize % 6]
                })
                .collect()
        };
        for round in 0..200 {
            let mut buf = noise(round % 23);
            buf.extend(frame(kind::TOUCH, &noise(round % 7)));
            buf.extend(noise(round % 5));
            buf.extend(frame(0x42, b"unknown kind"));
            buf.extend(frame(kind::BATCH, &noise(8)));
            buf.extend(noise(round % 11));
            let naive = |from: usize| {
                (from..buf.len()).find(|&p| {
                    matches!(read_frame(&buf, p), Frame::Ok { kind, .. }
                        if (kind::CREATE..=kind::BATCH).contains(&kind))
                })
            };
            for from in 0..=buf.len() + 2 {
                assert_eq!(
                    find_next_frame(&buf, from),
                    naive(from),
                    "{buf:?} from {from}"
                );
            }
        }
        assert_eq!(find_next_frame(&[], usize::MAX), None);
    }

    /// A file of a header's worth of bytes and then frames of the given payload sizes
    /// (payload bytes vary so every frame's checksum differs); returns it with the
    /// frames' offsets and its length.
    fn file_of_frames(sizes: &[usize]) -> (tempfile::NamedTempFile, Vec<u64>, Vec<u8>) {
        let mut bytes = vec![7u8; HEADER_LEN];
        let mut starts = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            starts.push(bytes.len() as u64);
            let payload: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            encode_frame(&mut bytes, kind::IMAGE, &payload);
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        (file, starts, bytes)
    }

    fn handle(file: &tempfile::NamedTempFile) -> std::sync::Arc<dyn FileHandle> {
        crate::util::vfs::OsFs
            .open(file.path(), OpenMode::Read)
            .unwrap()
    }

    /// Every frame `ChunkedFrames` reads between `from` and `to`: offset, and payload
    /// or what was wrong.
    fn chunked(file: &dyn FileHandle, from: u64, to: u64) -> Vec<(u64, Result<Vec<u8>, String>)> {
        let mut frames = ChunkedFrames::new(file, from, to);
        let mut out = Vec::new();
        while let Some((at, frame)) = frames.next().unwrap() {
            match frame {
                Frame::Ok { payload, .. } => out.push((at, Ok(payload.to_vec()))),
                other => {
                    out.push((at, Err(format!("{other:?}"))));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn chunked_reading_yields_the_frames_a_whole_buffer_does_across_chunk_edges() {
        // Frames that straddle chunk edges, one larger than two chunks, empty ones.
        let sizes = [
            100,
            CHUNK_BYTES - 50,
            0,
            3,
            CHUNK_BYTES * 2 + 17,
            5000,
            0,
            CHUNK_BYTES - 9,
            1,
        ];
        let (file, starts, bytes) = file_of_frames(&sizes);
        let len = bytes.len() as u64;
        let got = chunked(&*handle(&file), HEADER_LEN as u64, len);
        let want: Vec<(u64, Result<Vec<u8>, String>)> = starts
            .iter()
            .map(|&at| match read_frame(&bytes, at as usize) {
                Frame::Ok { payload, .. } => (at, Ok(payload.to_vec())),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, want);
        // The two halves a base is split into read the same frames between them.
        let mid = middle_boundary(&*handle(&file), len).unwrap();
        assert!(starts.contains(&mid) && mid >= len / 2, "mid {mid}");
        let mut halves = chunked(&*handle(&file), HEADER_LEN as u64, mid);
        halves.extend(chunked(&*handle(&file), mid, len));
        assert_eq!(halves, want);
    }

    #[test]
    fn a_frame_running_past_its_range_or_the_file_reads_as_truncated_at_its_start() {
        let (file, starts, mut bytes) = file_of_frames(&[10, CHUNK_BYTES, 20, 30]);
        let len = bytes.len() as u64;
        // A range ending inside the third frame.
        let got = chunked(&*handle(&file), HEADER_LEN as u64, starts[2] + 5);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (starts[2], Err("Truncated".into())));
        // A length field damaged to claim more than the file holds: the frame is cut
        // short where it starts, and the middle search stops there too.
        bytes[starts[1] as usize + 3] = 0x7f;
        std::fs::write(file.path(), &bytes).unwrap();
        let got = chunked(&*handle(&file), HEADER_LEN as u64, len);
        assert_eq!(got.last().unwrap(), &(starts[1], Err("Truncated".into())));
        assert_eq!(middle_boundary(&*handle(&file), len).unwrap(), starts[1]);
        // A damaged payload byte is a checksum mismatch at the frame's start.
        bytes[starts[1] as usize + 3] = 0;
        bytes[starts[2] as usize + FRAME_HEADER_LEN + 4] ^= 1;
        std::fs::write(file.path(), &bytes).unwrap();
        let got = chunked(&*handle(&file), HEADER_LEN as u64, len);
        assert_eq!(got.last().unwrap(), &(starts[2], Err("BadChecksum".into())));
    }

    /// A later batch frame saying the file was fsynced past the damage makes it
    /// corruption, not a torn tail; one saying less, or none, or one damaged, leaves it
    /// torn.
    #[test]
    fn a_tail_is_torn_unless_a_later_batch_proves_a_sync_past_the_damage() {
        let mut tail = vec![0xAB; 40];
        crate::backend::log::record::encode_batch(&mut tail, 1_000);
        tail.extend_from_slice(&[0x11; 30]);
        let n = tail.len();
        assert!(!is_torn(&tail, n, 999), "synced through 1,000 > 999");
        assert!(
            is_torn(&tail, n, 1_000),
            "synced through 1,000, not past it"
        );
        assert!(is_torn(&tail, 40, 999), "the frame starts past upto");
        tail[45] ^= 1;
        assert!(
            is_torn(&tail, n, 999),
            "a damaged batch frame proves nothing"
        );
    }

    /// The search for a later batch frame checks a frame's length and type before its
    /// checksum: a large tail whose every 4-byte window reads as a length reaching far
    /// into it (here 32 MiB of such bytes, which checksummed at every offset would be
    /// ~10^15 bytes of CRC) is judged in one pass. A hang fails the test.
    #[test]
    fn judging_a_large_damaged_tail_is_linear() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let tail: Vec<u8> = [0x00, 0x00, 0xF0, 0x01].repeat(8 << 20);
            let _ = tx.send(is_torn(&tail, tail.len(), 0));
        });
        let torn = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("judged within two minutes, not hours");
        assert!(torn);
    }
}
