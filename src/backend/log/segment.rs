//! The log backend's write side: the active segment, appending write batches, rolling
//! to a new segment, and the bookkeeping of which files make up the log.
//!
//! The active segment is zero-filled ahead of the records, [`PREALLOC_BYTES`] at a
//! time: an fdatasync after a write that stays inside the file's allocated size has
//! only data to flush, while one after a write that extends the file must also commit
//! the new size and blocks through the filesystem journal, which costs about half again
//! as much (measured in `docs/performance.md#measurements-behind-design-decisions`).
//! `Buffered` zero-fills too: writes that extend the file instead cost the kernel as
//! much as the zeros did (`docs/performance.md`, "Zeros ahead of the records").
//! Recovery reads an all-zero remainder of the last segment as the end of the log
//! (see [`crate::backend::log::recovery`]); a segment is cut back to its records when it is
//! sealed and when the store closes, so only a crash leaves zeros behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::Recovered;
use crate::backend::log::compaction::CompactionJob;
use crate::backend::log::files::{LogDir, LogFiles};
use crate::backend::log::format::{
    FileKind, Frame, HEADER_LEN, encode_header, path_of, read_frame,
};
use crate::backend::log::manifest;
use crate::backend::log::record::{encode_batch, encode_change};
use crate::backend::log::recovery::recover_dir;
use crate::backend::{Backend, Compaction, Encoder, Opened, Replay, SyncHandle, Synced};
use crate::error::{Error, Result};
use crate::model::change::Change;
use crate::options::Options;
use crate::util::failpoint;
use crate::util::vfs::{self, FileHandle, FileSystem, OpenMode, sync_dir};

/// How far the active segment is zero-filled past its records at a time.
pub(crate) const PREALLOC_BYTES: u64 = 1 << 20;

/// How many times a failed log tries to cut its active segment back to its last fsync
/// (see `LogBackend::fail`).
const CUT_TRIES: usize = 4;

/// Zeros written per call while preallocating.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Creates segment `seq` with its header, durable (file and directory entry). A full
/// disk is [`Error::DiskFull`], and leaves no file behind (so that the next try can
/// create it).
fn create_segment(fs: &dyn FileSystem, dir: &Path, seq: u64) -> Result<Arc<dyn FileHandle>> {
    let path = path_of(dir, FileKind::Segment, seq);
    let f = fs.open(&path, OpenMode::CreateNew).map_err(|e| {
        Error::io(format!("creating segment {}", path.display()), e).or_disk_full(dir, 0)
    })?;
    let header = encode_header(FileKind::Segment, seq);
    let written = f
        .write_all_at(&header, 0)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("writing the header of {}", path.display()), e))
        .and_then(|()| sync_dir(fs, dir));
    if let Err(e) = written {
        drop(f);
        let _ = fs.remove_file(&path);
        return Err(e.or_disk_full(dir, header.len() as u64));
    }
    Ok(f)
}

/// The log-structured backend.
pub(crate) struct LogBackend {
    log: Arc<LogDir>,
    active: Arc<dyn FileHandle>,
    active_len: u64,
    /// How far the active file is written (records, then zeros): appends below it
    /// overwrite zeros instead of extending the file.
    allocated: u64,
    synced_len: u64,
    /// False once a write, fsync or roll failed: the active segment may then end in a
    /// partial batch, so a close must not seal it at its length (recovery judges its
    /// tail as after a crash instead).
    healthy: bool,
    buf: Vec<u8>,
    segment_bytes: u64,
    compact_min_bytes: u64,
    compact_growth: f64,
}

impl LogBackend {
    /// Recovers `dir` into `sink`, starts a fresh active segment after what is there,
    /// and writes the manifest naming them all.
    pub(crate) fn open<R: Replay>(dir: &Path, opts: &Options, sink: &R) -> Result<Opened> {
        let fs = &*opts.fs;
        let (report, mut layout) = recover_dir(fs, dir, opts.salvage, sink)?;
        let header = HEADER_LEN as u64;
        let seq = layout.next_seq();
        // A last segment without a record (the store was opened and closed with no
        // write since, then crashed) is dropped rather than sealed: an application that
        // opens its store at every start would otherwise keep one more file each time.
        let empty_last = layout
            .segments
            .last()
            .filter(|&&(_, size)| size <= header)
            .map(|&(seq, _)| seq);
        if empty_last.is_some() {
            layout.segments.pop();
        }
        // The new active segment exists, header and all, before the manifest names
        // it; what the manifest no longer names is deleted after it.
        let active = create_segment(fs, dir, seq)?;
        let files = LogFiles {
            base: layout.base,
            sealed: layout.segments.clone(),
            active: (seq, header),
        };
        manifest::write(fs, dir, &files.manifest())?;
        failpoint::hit("open:after_manifest");
        if let Some(empty) = empty_last {
            vfs::remove(fs, &path_of(dir, FileKind::Segment, empty))?;
            sync_dir(fs, dir)?;
        }
        Ok(Opened {
            backend: Box::new(LogBackend {
                log: Arc::new(LogDir {
                    fs: Arc::clone(&opts.fs),
                    dir: dir.to_path_buf(),
                    files: Mutex::new(files),
                    manifest: Mutex::new(()),
                }),
                active,
                active_len: header,
                allocated: header,
                synced_len: header,
                healthy: true,
                buf: Vec::with_capacity(64 * 1024),
                segment_bytes: opts.segment_bytes,
                compact_min_bytes: opts.compact_min_bytes,
                compact_growth: opts.compact_growth,
            }),
            state: Recovered::default(),
            report,
        })
    }

    fn active_path(&self) -> PathBuf {
        path_of(
            &self.log.dir,
            FileKind::Segment,
            self.log.files.lock().active.0,
        )
    }

    /// Zero-fills the active file so that it reaches at least `upto` bytes, a whole
    /// [`PREALLOC_BYTES`] step at a time (bounded by the segment size), then puts the
    /// write position back at the end of the records.
    fn preallocate(&mut self, upto: u64) -> Result<()> {
        if upto <= self.allocated {
            return Ok(());
        }
        let step = PREALLOC_BYTES.min(self.segment_bytes);
        let target = upto.max(self.allocated + step).next_multiple_of(4096);
        let file = &self.active;
        let mut at = self.allocated;
        let fill = (|| -> std::io::Result<()> {
            while at < target {
                let n = (target - at).min(ZEROS.len() as u64) as usize;
                file.write_all_at(&ZEROS[..n], at)?;
                at += n as u64;
            }
            Ok(())
        })();
        fill.map_err(|e| {
            Error::io(format!("preallocating {}", self.active_path().display()), e)
                .or_disk_full(&self.log.dir, target - self.allocated)
        })?;
        self.allocated = target;
        Ok(())
    }

    /// Cuts the zeros past the records off the active file and makes its size durable.
    fn trim(&mut self) -> Result<()> {
        if self.allocated == self.active_len {
            return Ok(());
        }
        self.active
            .set_len(self.active_len)
            .and_then(|()| self.active.sync_all())
            .map_err(|e| {
                Error::io(
                    format!(
                        "cutting the preallocated tail of {}",
                        self.active_path().display()
                    ),
                    e,
                )
            })?;
        self.allocated = self.active_len;
        Ok(())
    }

    /// Seals the active segment (synced, cut to its records) and starts the next one.
    /// The cut is durable before the next segment exists, and the next segment (with
    /// its header) before the manifest names it active and the sealed one at its
    /// length, so only the active segment can ever end in preallocated zeros, and a
    /// segment the manifest names active always has its header.
    fn roll(&mut self) -> Result<()> {
        self.sync_active()?;
        self.trim()?;
        let (seq, len) = (self.log.files.lock().active.0, self.active_len);
        let next = create_segment(&*self.log.fs, &self.log.dir, seq + 1)?;
        failpoint::hit("roll:before_manifest");
        let header = HEADER_LEN as u64;
        let changed = self.log.change(|files| {
            files.sealed.push((seq, len));
            files.active = (seq + 1, header);
        });
        if let Err(e) = changed {
            if matches!(e, Error::DiskFull { .. }) {
                // The manifest was not replaced: the new segment is no part of the log.
                drop(next);
                let _ =
                    self.log
                        .fs
                        .remove_file(&path_of(&self.log.dir, FileKind::Segment, seq + 1));
            }
            return Err(e);
        }
        self.active = next;
        self.active_len = header;
        self.allocated = header;
        self.synced_len = header;
        Ok(())
    }

    /// Marks the backend failed if `r` is an error (see [`LogBackend::fail`]).
    fn watch<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.fail();
        }
        r
    }

    /// After a failed write, fsync or roll: the active segment may end in a partial
    /// batch, and bytes past its last fsync may be in the page cache only — a failed
    /// fsync drops the pages it could not write, and a later one "succeeds" without
    /// them (fsyncgate). So the segment is cut back to its last fsync, which a process
    /// that opens the store again without a reboot would otherwise read, seal and
    /// build on as if it were on disk; and a close does not seal it. The cut is tried
    /// [`CUT_TRIES`] times: a transient error on it left the lost batch readable, and
    /// a reopen sealed it (simulation seed 5635: a failed fsync, a failed cut, a
    /// reopen, a power cut — and the sealed segment held zeros where the batch was).
    /// If every try fails, that window stays open (docs/durability.md).
    fn fail(&mut self) {
        if self.healthy {
            self.healthy = false;
            for _ in 0..CUT_TRIES {
                if self.active.set_len(self.synced_len).is_ok() {
                    break;
                }
            }
        }
    }
}

/// The active segment as it was when a sync was asked for, to fsync off the writer
/// thread (the same open file, shared: the fsync covers every byte written through
/// it).
struct ActiveSync {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    synced: Synced,
}

impl SyncHandle for ActiveSync {
    fn sync(self: Box<Self>) -> Result<Synced> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))?;
        Ok(self.synced)
    }
}

impl Drop for LogBackend {
    /// A closing store leaves its last segment without a preallocated tail, sealed in
    /// the manifest at its length (best effort: if this fails, or if the backend failed
    /// before, the segment stays active, and recovery cuts what a crash may have torn).
    fn drop(&mut self) {
        if !self.healthy || self.sync_active().is_err() || self.trim().is_err() {
            return;
        }
        let _ = self.log.close(self.active_len);
    }
}

impl LogBackend {
    /// Appends one batch (see [`Backend::write_encoded`]): `encoded` (frames made by
    /// [`encode_change`]), then `changes`, behind the batch's header.
    fn append_batch(&mut self, encoded: &[u8], changes: &[Change]) -> Result<()> {
        if encoded.is_empty() && changes.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        encode_batch(&mut self.buf, self.synced_len);
        self.buf.extend_from_slice(encoded);
        for c in changes {
            encode_change(&mut self.buf, c);
        }
        self.preallocate(self.active_len + self.buf.len() as u64)?;
        if failpoint::armed("writer:mid_batch") {
            // A torn write: about half the batch reaches the file, then the process
            // dies. The cut falls one byte into the frame that reaches the middle, so
            // the bytes lost include its type byte (never 0): over the zero-filled
            // file a cut elsewhere may lose only zeros, which is no tear at all.
            let mut half = 0;
            while let Frame::Ok { next, .. } = read_frame(&self.buf, half)
                && next <= self.buf.len() / 2
            {
                half = next;
            }
            let half = half + 1;
            let _ = self.active.write_all_at(&self.buf[..half], self.active_len);
            let _ = self.active.sync_data();
            failpoint::hit("writer:mid_batch");
        }
        self.active
            .write_all_at(&self.buf, self.active_len)
            .map_err(|e| {
                Error::io(format!("appending to {}", self.active_path().display()), e)
                    .or_disk_full(&self.log.dir, self.buf.len() as u64)
            })?;
        self.active_len += self.buf.len() as u64;
        self.log.files.lock().active.1 = self.active_len;
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::with_capacity(64 * 1024);
        }
        if self.active_len >= self.segment_bytes {
            match self.roll() {
                // No room for the next segment: this one grows past its size until a
                // later batch finds room to roll. The batch itself is written.
                Err(Error::DiskFull { .. }) => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Makes everything appended durable (see [`Backend::sync`]).
    fn sync_active(&mut self) -> Result<()> {
        if self.synced_len == self.active_len {
            return Ok(());
        }
        self.active
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.active_path().display()), e))?;
        self.synced_len = self.active_len;
        Ok(())
    }
}

impl Backend for LogBackend {
    fn write(&mut self, changes: &[Change]) -> Result<()> {
        self.write_encoded(&[], changes)
    }

    fn encoder(&self) -> Option<Encoder> {
        Some(encode_change)
    }

    fn write_encoded(&mut self, encoded: &[u8], changes: &[Change]) -> Result<()> {
        let r = self.append_batch(encoded, changes);
        if let Err(Error::DiskFull { .. }) = &r {
            // The disk is full, and none of the batch counts: what of it (or of the
            // zeros before it) reached the file is cut off again, which frees that
            // space, and the writer tries the same batch again later at the same
            // offset. The backend stays healthy: nothing acknowledged is at risk.
            let _ = self.active.set_len(self.active_len);
            self.allocated = self.active_len;
            return r;
        }
        self.watch(r)
    }

    fn sync(&mut self) -> Result<()> {
        let r = self.sync_active();
        self.watch(r)
    }

    fn sync_handle(&mut self) -> Result<Option<Box<dyn SyncHandle>>> {
        Ok(Some(Box::new(ActiveSync {
            file: Arc::clone(&self.active),
            path: self.active_path(),
            synced: Synced {
                file: self.log.files.lock().active.0,
                len: self.active_len,
            },
        })))
    }

    fn poisoned(&mut self) {
        self.fail();
    }

    fn note_synced(&mut self, synced: Synced) {
        if synced.file == self.log.files.lock().active.0 && synced.len <= self.active_len {
            self.synced_len = self.synced_len.max(synced.len);
        }
    }

    fn disk_bytes(&self) -> u64 {
        self.log.disk_bytes()
    }

    fn begin_compaction(&mut self) -> Result<Option<Box<dyn Compaction>>> {
        match self.roll() {
            // No room for the next segment: no compaction now; the log goes on.
            Err(e @ Error::DiskFull { .. }) => return Err(e),
            r => self.watch(r)?,
        }
        let upto = self.log.files.lock().active.0 - 1;
        failpoint::hit("compaction:after_roll");
        Ok(Some(Box::new(CompactionJob {
            upto,
            log: Arc::clone(&self.log),
        })))
    }

    fn wants_compaction(&self, floor: u64) -> bool {
        let files = self.log.files.lock();
        let total = files.disk_bytes();
        let base = files.base.map_or(0, |b| b.1).max(floor);
        total >= self.compact_min_bytes && total as f64 >= self.compact_growth * base as f64
    }
}
