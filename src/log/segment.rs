//! The log backend's write side: the active segment, appending write batches, rolling
//! to a new segment, and the bookkeeping of which files make up the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::failpoint;
use crate::journal::Change;
use crate::load::Loader;
use crate::log::compaction::CompactionJob;
use crate::log::format::{FileKind, encode_header, path_of};
use crate::log::record::{encode_batch, encode_change};
use crate::log::recovery::{Recovered, recover_dir};
use crate::options::Options;
use crate::storage::{Backend, Opened};

/// The files that make up a log directory, shared by the writer and compaction.
#[derive(Debug, Default)]
pub(crate) struct LogFiles {
    /// The compacted base in use: (sequence, bytes).
    pub(crate) base: Option<(u64, u64)>,
    /// Sealed segments after the base: (sequence, bytes).
    pub(crate) sealed: Vec<(u64, u64)>,
    /// The active segment: (sequence, bytes).
    pub(crate) active: (u64, u64),
}

impl LogFiles {
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.base.map_or(0, |b| b.1) + self.sealed.iter().map(|s| s.1).sum::<u64>() + self.active.1
    }
}

/// Syncs a directory, so that files created, renamed or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Creates segment `seq` with its header, durable (file and directory entry).
fn create_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = path_of(dir, FileKind::Segment, seq);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(format!("creating segment {}", path.display()), e))?;
    f.write_all(&encode_header(FileKind::Segment, seq))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("writing the header of {}", path.display()), e))?;
    sync_dir(dir)?;
    Ok(f)
}

/// The log-structured backend.
pub(crate) struct LogBackend {
    dir: PathBuf,
    files: Arc<Mutex<LogFiles>>,
    active: File,
    active_len: u64,
    synced_len: u64,
    buf: Vec<u8>,
    segment_bytes: u64,
    compact_min_bytes: u64,
    compact_growth: f64,
}

impl LogBackend {
    /// Recovers `dir` into `sink` and starts a fresh active segment after what is there.
    pub(crate) fn open(dir: &Path, opts: &Options, sink: &Loader) -> Result<Opened> {
        let (report, layout) = recover_dir(dir, opts.salvage, sink)?;
        let seq = layout.next_seq();
        let active = create_segment(dir, seq)?;
        let header = crate::log::format::HEADER_LEN as u64;
        let files = LogFiles {
            base: layout.base,
            sealed: layout.segments.clone(),
            active: (seq, header),
        };
        Ok(Opened {
            backend: Box::new(LogBackend {
                dir: dir.to_path_buf(),
                files: Arc::new(Mutex::new(files)),
                active,
                active_len: header,
                synced_len: header,
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
        path_of(&self.dir, FileKind::Segment, self.files.lock().active.0)
    }

    /// Seals the active segment (synced) and starts the next one.
    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        let mut files = self.files.lock();
        let (seq, len) = files.active;
        let next = create_segment(&self.dir, seq + 1)?;
        files.sealed.push((seq, len));
        let header = crate::log::format::HEADER_LEN as u64;
        files.active = (seq + 1, header);
        drop(files);
        self.active = next;
        self.active_len = header;
        self.synced_len = header;
        Ok(())
    }
}

impl Backend for LogBackend {
    fn write(&mut self, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        encode_batch(&mut self.buf, self.synced_len);
        for c in changes {
            encode_change(&mut self.buf, c);
        }
        if failpoint::armed("writer:mid_batch") {
            // A torn write: half the batch reaches the file, then the process dies.
            let half = self.buf.len() / 2;
            let _ = self.active.write_all(&self.buf[..half]);
            let _ = self.active.sync_data();
            failpoint::hit("writer:mid_batch");
        }
        self.active
            .write_all(&self.buf)
            .map_err(|e| Error::io(format!("appending to {}", self.active_path().display()), e))?;
        self.active_len += self.buf.len() as u64;
        self.files.lock().active.1 = self.active_len;
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::with_capacity(64 * 1024);
        }
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.synced_len == self.active_len {
            return Ok(());
        }
        self.active
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.active_path().display()), e))?;
        self.synced_len = self.active_len;
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        self.files.lock().disk_bytes()
    }

    fn begin_compaction(&mut self) -> Result<Option<CompactionJob>> {
        self.roll()?;
        let upto = self.files.lock().active.0 - 1;
        failpoint::hit("compaction:after_roll");
        Ok(Some(CompactionJob {
            dir: self.dir.clone(),
            upto,
            files: Arc::clone(&self.files),
        }))
    }

    fn wants_compaction(&self) -> bool {
        let files = self.files.lock();
        let total = files.disk_bytes();
        let base = files.base.map_or(0, |b| b.1);
        total >= self.compact_min_bytes && total as f64 >= self.compact_growth * base as f64
    }
}
