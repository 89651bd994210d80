//! Compaction: rewriting the live set as one base file, so the log's size follows the
//! live data rather than its history.
//!
//! 1. The writer seals the active segment (synced) and opens the next one; new writes
//!    go there, so the store keeps serving reads and writes throughout.
//! 2. This job takes a snapshot of the live sessions — by walking the id shards, where a
//!    session's place never changes, so none is missed or seen twice while rotations
//!    run — and writes it to `base-<upto>.log.tmp`, then fsyncs it.
//! 3. It renames the file to `base-<upto>.log`, fsyncs the directory, and writes the
//!    manifest naming the base and only the segments after `upto`: from here on,
//!    recovery reads those.
//! 4. It deletes the sealed segments up to `upto` and the previous base, and fsyncs the
//!    directory again.
//!
//! Why the snapshot may be taken while writes continue: every record states its effect
//! absolutely (the whole data map, the new user, the new deadline), never as a delta,
//! and every change after the seal is in the segments after `upto`. Replaying those
//! records over a snapshot that already contains some of them yields the same state.
//!
//! A crash at any step leaves a directory recovery opens with every acknowledged write:
//! before the manifest names the base, the `.tmp` file or the unnamed base is deleted
//! and all inputs are still there; after it, the leftovers are deleted
//! (`tests/crash.rs` kills a process at each step).

use std::cell::Cell;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::log::files::{LogDir, LogFiles};
use crate::backend::log::format::{FileKind, base_name, encode_header, path_of};
use crate::backend::log::record::{encode_alias, encode_image, encode_not_before};
use crate::backend::{Compaction, CompactionStats, ImageSink, Snapshot};
use crate::error::{Error, Result};
use crate::model::change::ImageRef;
use crate::util::failpoint;
use crate::util::vfs::{self, Appender, OpenMode, sync_dir};

/// A base's images on their way to its file: encoded into `pending` under the index's
/// read locks, written out at each flush, with no lock held.
struct Images<'a, W: Write> {
    out: &'a mut W,
    pending: Vec<u8>,
    /// Images taken.
    sessions: usize,
    /// Bytes of the base written so far (how much room a full disk was asked for).
    reached: &'a Cell<u64>,
    /// The error of a failed write, naming the file.
    io: &'a dyn Fn(&str, std::io::Error) -> Error,
}

impl<W: Write> ImageSink for Images<'_, W> {
    fn image(&mut self, img: &ImageRef<'_>) {
        encode_image(&mut self.pending, img);
        self.sessions += 1;
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.reached.get() == 0 {
            failpoint::hit("compaction:mid_base");
        }
        self.reached
            .set(self.reached.get() + self.pending.len() as u64);
        self.out
            .write_all(&self.pending)
            .map_err(|e| (self.io)("writing", e))?;
        self.pending.clear();
        Ok(())
    }
}

/// A compaction of everything up to segment `upto`, ready to run.
pub(crate) struct CompactionJob {
    pub(crate) upto: u64,
    pub(crate) log: Arc<LogDir>,
}

impl Compaction for CompactionJob {
    /// Writes the base from `snapshot`, switches to it, deletes what it replaces.
    fn run(self: Box<Self>, snapshot: &dyn Snapshot) -> Result<CompactionStats> {
        let started = Instant::now();
        let (fs, dir) = (&*self.log.fs, &self.log.dir);
        let bytes_before = self.log.disk_bytes();
        let final_path = path_of(dir, FileKind::Base, self.upto);
        let tmp_path = dir.join(format!("{}.tmp", base_name(self.upto)));
        let io = |what: &str, e| Error::io(format!("{what} {}", tmp_path.display()), e);

        // Up to here a failure leaves the old files in use and the store working: the
        // half-written base goes (a full disk wants its space back) and a full disk is
        // said so.
        let reached = Cell::new(0u64);
        let full = |e: Error| e.or_disk_full(dir, reached.get().max(1));
        let written = (|| -> Result<(u64, usize)> {
            let file = fs
                .open(&tmp_path, OpenMode::Truncate)
                .map_err(|e| io("creating", e))?;
            let mut out = BufWriter::with_capacity(1 << 20, Appender { file, at: 0 });
            out.write_all(&encode_header(FileKind::Base, self.upto))
                .map_err(|e| io("writing", e))?;
            let mut images = Images {
                out: &mut out,
                pending: Vec::with_capacity(1 << 16),
                sessions: 0,
                reached: &reached,
                io: &io,
            };
            snapshot.each_image(&mut images)?;
            images.flush()?;
            let sessions = images.sessions;
            let mut scratch = Vec::with_capacity(4096);
            snapshot.each_alias(&mut |hash, id, until| {
                scratch.clear();
                encode_alias(&mut scratch, hash, id, until);
                reached.set(reached.get() + scratch.len() as u64);
                out.write_all(&scratch).map_err(|e| io("writing", e))
            })?;
            for (user, at) in snapshot.not_before() {
                scratch.clear();
                encode_not_before(&mut scratch, &user, at);
                reached.set(reached.get() + scratch.len() as u64);
                out.write_all(&scratch).map_err(|e| io("writing", e))?;
            }
            let Appender {
                file,
                at: base_bytes,
            } = out
                .into_inner()
                .map_err(|e| io("writing", e.into_error()))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
            Ok((base_bytes, sessions))
        })();
        let (base_bytes, sessions) = written.map_err(|e| {
            let _ = fs.remove_file(&tmp_path);
            full(e)
        })?;
        failpoint::hit("compaction:after_base_synced");

        fs.rename(&tmp_path, &final_path).map_err(|e| {
            let _ = fs.remove_file(&tmp_path);
            full(io("renaming", e))
        })?;
        failpoint::hit("compaction:after_rename");
        sync_dir(fs, dir)?;

        // The base is in place; once the manifest names it, what it replaces can go.
        let before = self.log.files();
        let upto = self.upto;
        let edit = |files: &mut LogFiles| {
            files.base = Some((upto, base_bytes));
            files.sealed.retain(|s| s.0 > upto);
        };
        self.log
            .change_then(edit, || {
                failpoint::hit("compaction:after_manifest");
                let replaced = before.sealed.iter().filter(|s| s.0 <= upto);
                for (i, &(seq, _)) in replaced.enumerate() {
                    vfs::remove(fs, &path_of(dir, FileKind::Segment, seq))?;
                    if i == 0 {
                        failpoint::hit("compaction:mid_delete");
                    }
                }
                if let Some((old, _)) = before.base.filter(|b| b.0 != upto) {
                    vfs::remove(fs, &path_of(dir, FileKind::Base, old))?;
                }
                sync_dir(fs, dir)
            })
            .inspect_err(|e| {
                if matches!(e, Error::DiskFull { .. }) {
                    // The manifest is as it was (a full disk stops its write before the
                    // rename): the new base is no part of the log, and its space is wanted.
                    let _ = fs.remove_file(&final_path);
                }
            })?;
        failpoint::hit("compaction:after_delete");
        let bytes_after = self.log.disk_bytes();
        Ok(CompactionStats {
            bytes_before,
            bytes_after,
            base_bytes,
            sessions,
            duration: started.elapsed(),
        })
    }
}
