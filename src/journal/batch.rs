//! One pass of the journal's writer: the changes, touches and requests it has taken
//! go to the backend as one batch, are made as durable as the mode promises, and
//! everyone waiting is answered. The writer thread runs a pass per wake-up; a journal
//! that writes on its callers' threads ([`crate::Options::deterministic`]) runs one at
//! the end of each operation. Both run this code, so what a test or a fuzzer checks on
//! one is what the other does.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::backend::{Backend, SyncHandle};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::journal::writer::{Msg, Shared, SyncRequest, Syncer, serve_sync, wake};
use crate::model::change::Change;
use crate::model::token::SessionId;
use crate::util::trace;

/// The largest buffer of encoded changes kept for the next batch once written: a burst
/// of large sessions does not hold its memory for good.
const MAX_KEPT_BUFFER: usize = 4 << 20;

/// Where a `Buffered` batch's fsync runs.
#[derive(Clone, Copy)]
pub(crate) enum Offload<'a> {
    /// Here, by the backend (`Sync`: the batch waits for it).
    None,
    /// On the sync thread, through a sync handle, while the writer goes on.
    Thread(&'a Syncer),
    /// Through a sync handle as the sync thread would, but here and at once.
    Here,
}

/// The writer's state between passes: the backend, and what it has taken and not yet
/// written.
pub(crate) struct Batcher {
    backend: Box<dyn Backend>,
    sync_mode: bool,
    touches: HashMap<SessionId, Timestamp>,
    changes: Vec<Change>,
    /// Changes their threads encoded (see [`Batcher::take_encoded`]), written before
    /// `changes`, and how many.
    encoded: Vec<u8>,
    encoded_count: usize,
    controls: Vec<Msg>,
    /// The number of the last change taken.
    last_seq: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// When a batch last went to the backend.
    pub(crate) last_write: Option<Instant>,
    /// Where to ask for a background compaction, if the store compacts on its own.
    compact: Option<Sender<()>>,
}

impl Batcher {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        sync_mode: bool,
        compact: Option<Sender<()>>,
    ) -> Batcher {
        Batcher {
            backend,
            sync_mode,
            touches: HashMap::new(),
            changes: Vec::new(),
            encoded: Vec::new(),
            encoded_count: 0,
            controls: Vec::new(),
            last_seq: 0,
            dirty: false,
            last_write: None,
            compact,
        }
    }

    /// Takes a message into the next batch.
    pub(crate) fn take(&mut self, m: Msg) {
        match m {
            Msg::Change(seq, c) => {
                self.last_seq = seq;
                self.changes.push(c);
            }
            Msg::Touch(id, at) => {
                let t = self.touches.entry(id).or_insert(at);
                *t = (*t).max(at);
            }
            Msg::Nudge => {}
            other => self.controls.push(other),
        }
    }

    /// Takes `count` changes their threads encoded, numbered up to `last_seq`, into the
    /// next batch, after any taken before; leaves `bytes` empty (with the capacity of
    /// a buffer written before, for the next ones).
    pub(crate) fn take_encoded(&mut self, bytes: &mut Vec<u8>, count: usize, last_seq: u64) {
        if count == 0 {
            return;
        }
        if self.encoded.is_empty() {
            std::mem::swap(&mut self.encoded, bytes);
        } else {
            self.encoded.extend_from_slice(bytes);
            bytes.clear();
        }
        self.encoded_count += count;
        self.last_seq = last_seq;
    }

    /// Changes taken and not yet written (held ones too, while the disk is full).
    pub(crate) fn pending(&self) -> usize {
        self.changes.len() + self.encoded_count
    }

    /// The journal failed elsewhere (the sync thread): tells the backend, answers the
    /// requests taken with the failure and returns it.
    pub(crate) fn stop_poisoned(&mut self, shared: &Shared) -> Error {
        self.backend.poisoned();
        let reason = shared.progress.lock().failed.clone().unwrap_or_default();
        for c in self.controls.drain(..) {
            reply_failed(c, &reason);
        }
        Error::Poisoned { reason }
    }

    /// One pass: writes what has been taken (with the touches if `ticked`, a request
    /// is among it or the journal is closing), fsyncs as the mode asks, then answers
    /// the waiters and requests. A full disk keeps the batch for the next pass and
    /// answers with [`Error::DiskFull`]; any other failure poisons the journal,
    /// answers everyone with it, and is returned (the writer then stops writing).
    pub(crate) fn run(
        &mut self,
        shared: &Shared,
        ticked: bool,
        open: bool,
        offload: Offload<'_>,
    ) -> Result<()> {
        if shared.poisoned.load(Ordering::Acquire) {
            // The sync thread failed: nothing more is written, or made durable.
            return Err(self.stop_poisoned(shared));
        }
        if ticked || !self.controls.is_empty() || !open {
            // Those taken from the channel, then the buffers' (a session in both is
            // written twice: replaying a touch keeps the later time).
            self.changes.extend(
                self.touches
                    .drain()
                    .map(|(id, at)| Change::Touch { id, at }),
            );
            self.changes.extend(
                shared
                    .touches
                    .drain()
                    .map(|(id, at)| Change::Touch { id, at }),
            );
        }
        if let Some(synced) = shared.synced.lock().take() {
            self.backend.note_synced(synced);
        }
        let outcome = self.write_and_sync(shared, ticked, open, offload);
        shared.counters.lock().disk_bytes = self.backend.disk_bytes();
        // The sync thread may have failed meanwhile, and an fsync here then "succeeds"
        // over the pages it lost (fsyncgate): nothing is acknowledged after a failure.
        let outcome = outcome.and_then(|()| match shared.poisoned.load(Ordering::Acquire) {
            false => Ok(()),
            true => Err(self.stop_poisoned(shared)),
        });
        match outcome {
            Ok(()) => {
                let ready = {
                    let mut progress = shared.progress.lock();
                    if progress.full.take().is_some() {
                        shared.full.store(false, Ordering::Release);
                        trace::event!(info, "the disk has room again: writes go on");
                    }
                    shared.durable.store(self.last_seq, Ordering::Release);
                    progress.ready(self.last_seq)
                };
                shared.wake_relayed(ready);
            }
            Err(Error::DiskFull { dir, needed }) => {
                // The batch is kept (`changes`) and tried again; its waiters, and
                // every append from now on, are told.
                let ready = {
                    let mut progress = shared.progress.lock();
                    if progress.full.is_none() {
                        trace::event!(
                            warn,
                            dir = %dir.display(),
                            needed,
                            "the disk is full: writes are refused (Error::DiskFull) until \
                             there is room"
                        );
                    }
                    progress.full = Some((self.last_seq, dir.clone(), needed));
                    shared.full.store(true, Ordering::Release);
                    progress.ready(self.last_seq)
                };
                wake(ready);
                for c in self.controls.drain(..) {
                    reply_err(c, || Error::DiskFull {
                        dir: dir.clone(),
                        needed,
                    });
                }
                return Ok(());
            }
            Err(e) => {
                let reason = e.to_string();
                wake(shared.fail(reason.clone()));
                for c in self.controls.drain(..) {
                    reply_failed(c, &reason);
                }
                return Err(e);
            }
        }
        for c in std::mem::take(&mut self.controls) {
            match c {
                Msg::Flush(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Msg::BeginCompaction(reply) => {
                    let r = self.backend.begin_compaction();
                    if let Err(e) = &r
                        && !matches!(e, Error::DiskFull { .. })
                    {
                        let reason = e.to_string();
                        wake(shared.fail(reason.clone()));
                        let _ = reply.send(r);
                        return Err(Error::Poisoned { reason });
                    }
                    let _ = reply.send(r);
                }
                Msg::Change(..) | Msg::Touch(..) | Msg::Nudge => {}
            }
        }
        if let Some(tx) = &self.compact
            && self
                .backend
                .wants_compaction(shared.compaction_floor.load(Ordering::Relaxed))
        {
            // At most one request pending; the compactor clears it when done.
            let _ = tx.try_send(());
        }
        Ok(())
    }

    /// Writes the batch and fsyncs it as the mode asks.
    fn write_and_sync(
        &mut self,
        shared: &Shared,
        ticked: bool,
        open: bool,
        offload: Offload<'_>,
    ) -> Result<()> {
        if !self.changes.is_empty() || self.encoded_count > 0 {
            self.backend.write_encoded(&self.encoded, &self.changes)?;
            self.last_write = Some(Instant::now());
            self.dirty = true;
            let records = self.changes.len() + self.encoded_count;
            let mut c = shared.counters.lock();
            c.batches += 1;
            c.records += records as u64;
            drop(c);
            if let Some(m) = shared.metrics.get() {
                m.batch_records.record(records as f64);
            }
            self.changes.clear();
            self.encoded.clear();
            self.encoded_count = 0;
            if self.encoded.capacity() > MAX_KEPT_BUFFER {
                self.encoded = Vec::new();
            }
        }
        let flushing = self.controls.iter().any(|c| matches!(c, Msg::Flush(_)));
        let off_thread =
            !matches!(offload, Offload::None) && open && ((self.dirty && ticked) || flushing);
        if off_thread {
            // Buffered: the fsync goes through a sync handle, with the flushes that
            // wait for it; on the sync thread the writer goes on meanwhile. (A closing
            // store syncs here.)
            if let Some(handle) = self.backend.sync_handle()? {
                let replies = take_flush_replies(&mut self.controls);
                self.dirty = false;
                offload_sync(shared, offload, handle, replies);
                return Ok(());
            }
        }
        let must_sync = self.dirty && (self.sync_mode || ticked || flushing || !open);
        if must_sync {
            shared.timed_sync(|| self.backend.sync())?;
            self.dirty = false;
            shared.counters.lock().syncs += 1;
        }
        Ok(())
    }
}

fn offload_sync(
    shared: &Shared,
    offload: Offload<'_>,
    handle: Box<dyn SyncHandle>,
    replies: Vec<Sender<Result<()>>>,
) {
    match offload {
        Offload::Thread(syncer) => syncer.request(SyncRequest { handle, replies }),
        Offload::Here | Offload::None => serve_sync(shared, handle, replies),
    }
}

/// Takes the flush requests out of `controls`, for the sync thread to answer.
fn take_flush_replies(controls: &mut Vec<Msg>) -> Vec<Sender<Result<()>>> {
    let mut replies = Vec::new();
    controls.retain_mut(
        |c| match std::mem::replace(c, Msg::Touch(SessionId(0), Timestamp(0))) {
            Msg::Flush(r) => {
                replies.push(r);
                false
            }
            other => {
                *c = other;
                true
            }
        },
    );
    replies
}

/// Answers a request with the journal's failure.
pub(crate) fn reply_failed(msg: Msg, reason: &str) {
    reply_err(msg, || Error::Poisoned {
        reason: reason.to_owned(),
    });
}

/// Answers a request with the error `err` makes.
fn reply_err(msg: Msg, err: impl Fn() -> Error) {
    match msg {
        Msg::Flush(r) => drop(r.send(Err(err()))),
        Msg::BeginCompaction(r) => drop(r.send(Err(err()))),
        Msg::Change(..) | Msg::Touch(..) | Msg::Nudge => {}
    }
}
